"""The HTML report of ``replens audit``: one offline page built from the audit's summary dict.

:func:`write_report` writes, into the report folder,

* ``figures/*.png``: every figure of :mod:`replens.report.figures`;
* ``summary.json``: the input summary plus ``"figures": {name: relative path}``;
* ``index.html``: a self-contained page (inline CSS, no scripts, no fonts or
  anything else from the network; images by relative path, all text
  HTML-escaped) with the sections Overview, Accuracy per domain, Q-Score
  (paper section 3.4), Likely failures (section 4.4), Explained feature groups
  (chapter 4, Figure 4.2), Compression curve (section 3.3, Figure 3.2) and
  Configuration.

Every key of the summary but ``overview`` is optional: a missing (or ``None``)
section renders a short "not run" line. A section of the wrong type raises
``ValueError`` naming the key, before anything is written. The same summary
always gives the same files (the only time on the page is ``summary["created"]``).
Every file is written atomically.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from replens.pages import html_page
from replens.report.figures import (
    accuracy_figure,
    compression_figure,
    failure_gallery_figure,
    failure_report,
    group_grid_figure,
    pr_figure,
    qscore_histogram_figure,
    roc_figure,
)
from replens.runs import atomic_write_text

__all__ = ["SECTIONS", "render_html", "write_report"]

SECTIONS: dict[str, str] = {
    "overview": "Overview",
    "accuracy": "Accuracy per domain",
    "qscore": "Q-Score",
    "encoding": "What single features encode",
    "failures": "Likely failures",
    "groups": "Explained feature groups",
    "compression": "Compression curve",
    "config": "Configuration",
}
"""Section key of the summary -> heading, in page order (the key is also the section's HTML id)."""

_KINDS: dict[str, type | tuple[type, ...]] = {
    "overview": dict,
    "accuracy": dict,
    "qscore": dict,
    "encoding": dict,
    "failures": list,
    "groups": list,
    "compression": dict,
    "config": dict,
}

_STYLE = """
:root{--fg:#1d2330;--muted:#5d6675;--line:#dfe3ea;--bg:#f6f7f9;--card:#fff;--accent:#2f5fd0;--bad:#b3261e}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:var(--fg);
background:var(--bg);line-height:1.45}
header{background:#1d2330;color:#fff;padding:20px 32px}
header h1{margin:0 0 4px 0;font-size:24px}header .meta{color:#c5cbd6;font-size:13px}
nav{padding:8px 32px;background:#fff;border-bottom:1px solid var(--line);font-size:13px}
nav a{color:var(--accent);margin-right:14px;text-decoration:none}
main{padding:8px 32px 40px 32px;max-width:1400px}
section{margin-top:28px}h2{font-size:19px;border-bottom:2px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:0 0 6px 0}
.headline{font-size:16px;background:#eef3ff;border-left:4px solid var(--accent);padding:10px 14px;margin:12px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .k{font-size:12px;color:var(--muted)}.card .v{font-size:20px;font-weight:600;word-break:break-word}
.card .v.text{font-size:14px;font-weight:500}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px}
.grid.wide{grid-template-columns:repeat(auto-fill,minmax(420px,1fr))}
.figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px}
.figs figure{flex:1 1 380px;max-width:640px}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:12px;color:var(--muted);margin-top:4px}
table{border-collapse:collapse;font-size:13px;background:#fff;margin:8px 0}
td,th{border:1px solid var(--line);padding:4px 8px;text-align:right}
th{background:#f0f2f5}td.l,th.l{text-align:left}
.not-run{color:var(--muted);font-style:italic}
.note{color:var(--muted);font-size:13px}
.missing{color:var(--bad);font-size:12px}
.chips{display:flex;flex-wrap:wrap;gap:4px;margin:4px 0}
.chip{font-size:12px;background:#eef3ff;border-radius:4px;padding:1px 6px}
.pred{font-weight:600}.pred .arrow{color:var(--muted);margin:0 4px}.pred .wrong{color:var(--bad)}
.failure img{width:100%;max-width:200px;image-rendering:pixelated;border:1px solid var(--line);border-radius:4px}
.strip{display:flex;flex-wrap:wrap;gap:3px;margin:4px 0 8px 0}
.strip img{width:64px;height:64px;image-rendering:pixelated;border:1px solid var(--line);object-fit:cover}
.label{font-size:12px;color:var(--muted);margin-top:6px}
details{background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px 12px}
summary{cursor:pointer;font-weight:600}
pre{font-size:12px;overflow-x:auto;margin:8px 0 0 0}
footer{color:var(--muted);font-size:12px;padding:0 32px 24px 32px}
"""


# --------------------------------------------------------------------------- formatting


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any, unit: str = "") -> str:
    """Escaped display text of a value: n/a for None/NaN, thousands separators, 4 significant digits."""
    if _is_missing(value):
        return "n/a"
    if isinstance(value, bool):
        return _esc(value)
    if isinstance(value, int):
        return f"{value:,}{_esc(unit)}"
    if isinstance(value, float):
        if math.isinf(value):
            return ("-" if value < 0 else "") + "inf"
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
        return f"{text}{_esc(unit)}"
    if isinstance(value, list | tuple):
        return _esc(", ".join(str(v) for v in value)) or "none"
    return _esc(value) + _esc(unit)


def _src(rel: str | Path) -> str:
    """A relative path as an escaped URL attribute value (``/`` kept, spaces and ``#`` quoted)."""
    return _esc(quote(Path(rel).as_posix(), safe="/"))


def _rel_image(folder: Path, path: Any) -> str | None:
    """``path`` relative to the report folder (as the summary gives it), or None when empty."""
    if not path:
        return None
    p = Path(str(path))
    return os.path.relpath(p, folder) if p.is_absolute() else p.as_posix()


def _img(folder: Path, path: Any, alt: str, cls: str = "") -> str:
    rel = _rel_image(folder, path)
    if rel is None:
        return '<div class="missing">no image</div>'
    if not (folder / rel).is_file():
        return f'<div class="missing">image missing: {_esc(rel)}</div>'
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} src="{_src(rel)}" alt="{_esc(alt)}">'


def _figure(rel: str | None, caption: str) -> str:
    if rel is None:
        return ""
    return f'<figure><img src="{_src(rel)}" alt="{_esc(caption)}"><figcaption>{_esc(caption)}</figcaption></figure>'


def _chips(terms: Sequence[Any] | None) -> str:
    if not terms:
        return '<span class="note">none</span>'
    return '<div class="chips">' + "".join(f'<span class="chip">{_esc(t)}</span>' for t in terms) + "</div>"


def _card(key: str, value: str, text: bool = False) -> str:
    return (
        f'<div class="card"><div class="k">{_esc(key)}</div><div class="v{" text" if text else ""}">{value}</div></div>'
    )


def _not_run(name: str) -> str:
    return f'<p class="not-run">{_esc(SECTIONS[name])}: not run.</p>'


# --------------------------------------------------------------------------- sections


_OVERVIEW_NUMBERS = (
    ("linear_top1", "linear probe top-1", "%"),
    ("random_linear_top1", "random init linear top-1", "%"),
    ("auroc", "Q-Score AUROC", "%"),
    ("train_samples", "train samples", ""),
    ("test_samples", "test samples", ""),
    ("steps", "training steps", ""),
    ("final_loss", "final loss", ""),
    ("images_per_s", "images / s", ""),
)
_OVERVIEW_TEXTS = (("encoder", "encoder"), ("method", "method"), ("plugins", "plugins"), ("world", "world"))


def _overview(ov: Mapping[str, Any]) -> str:
    parts = []
    if ov.get("headline"):
        parts.append(f'<p class="headline">{_esc(ov["headline"])}</p>')
    if ov.get("verdicts"):
        parts.append('<ul class="verdicts">' + "".join(f"<li>{_esc(v)}</li>" for v in ov["verdicts"]) + "</ul>")
    if ov.get("planted_cause"):
        parts.append(f'<p class="note">Protocol: {_esc(ov["planted_cause"])}.</p>')
    cards = [_card(name, _fmt(_as_number(ov.get(key)), unit)) for key, name, unit in _OVERVIEW_NUMBERS if key in ov]
    cards += [_card(name, _fmt(ov.get(key)), text=True) for key, name in _OVERVIEW_TEXTS if key in ov]
    known = {"headline", "verdicts", "classes", "planted_cause", *(k for k, _, _ in _OVERVIEW_NUMBERS), *(k for k, _ in _OVERVIEW_TEXTS)}
    extra = sorted((str(k), v) for k, v in ov.items() if k not in known)
    cards += [
        _card(k, _fmt(_as_number(v) if not isinstance(v, list) else v), text=not isinstance(v, int | float))
        for k, v in extra
    ]
    parts.append('<div class="cards">' + "".join(cards) + "</div>" if cards else '<p class="note">No numbers.</p>')
    return "\n".join(parts)


def _entries(items: Sequence[Any], key: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """``enumerate(items)``, raising ValueError at the first item that is not a dict (named ``key[k]``)."""
    for k, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"summary key '{key}[{k}]' must be a dict, got {type(item).__name__}")
        yield k, item


def _accuracy(acc: Mapping[str, Any], figure: str | None) -> str:
    domains = [str(d) for d in acc.get("domains") or []]
    rows = list(acc.get("rows") or [])
    if not rows:
        return '<p class="note">No probe results recorded.</p>'
    head = "".join(f"<th>{_esc(d)}</th>" for d in ["all", *domains])
    body = []
    for _, row in _entries(rows, "accuracy.rows"):
        per = row.get("per_domain") or {}
        cells = [row.get("all")] + [per.get(d) for d in domains]
        body.append(
            f'<tr><td class="l">{_esc(row.get("encoder", "?"))}</td><td class="l">{_esc(row.get("probe", "?"))}</td>'
            + "".join(f"<td>{_fmt(_as_number(c))}</td>" for c in cells)
            + "</tr>"
        )
    table = (
        f'<table><tr><th class="l">encoder</th><th class="l">probe</th>{head}</tr>{"".join(body)}</table>'
        '<p class="note">Top-1 accuracy (%) on the test split, overall and per render domain.</p>'
    )
    return table + _figure(figure, "Probe top-1 per domain: SSL encoder vs random init, linear and kNN probes")


def _as_number(value: Any) -> Any:
    return value if isinstance(value, int | float) or value is None else str(value)


def _qscore(q: Mapping[str, Any], figures: Mapping[str, str]) -> str:
    correct = q.get("correct") or []
    wrong = q.get("wrong") or []
    cards = [
        _card("AUROC", _fmt(_as_number(q.get("auroc")), "%")),
        _card("AUPRC", _fmt(_as_number(q.get("auprc")), "%")),
        _card("RankMe", _fmt(_as_number(q.get("rankme")))),
        _card("alpha-ReQ", _fmt(_as_number(q.get("alpha_req")))),
        _card("eps", _fmt(_as_number(q.get("eps")))),
        _card("test samples scored", _fmt(_as_number(q.get("n")))),
        _card("correct / wrong", f"{len(correct):,} / {len(wrong):,}"),
    ]
    note = (
        '<p class="note">Q-Score (paper Eq. 3.1) of each test sample as a label-free predictor of whether the '
        "linear probe classifies it correctly (section 3.4): AUROC and AUPRC with correct samples positive; "
        "RankMe and alpha-ReQ describe the representation's spectrum.</p>"
    )
    shown = "".join(
        _figure(figures.get(name), caption)
        for name, caption in (
            ("qscore_histogram", "Q-Score distributions of correctly and wrongly classified samples"),
            ("roc", "ROC: Q-Score predicting correct classification (dashed: chance)"),
            ("pr", "Precision-recall, correct samples positive (dashed: chance level)"),
        )
    )
    if not shown:
        shown = '<p class="note">No per-sample scores or curves recorded.</p>'
    return f'<div class="cards">{"".join(cards)}</div>{note}<div class="figs">{shown}</div>'


def _card_grid(intro: str, cards: Sequence[str], grid_class: str, figure_label: str, figure: str | None) -> str:
    """A card section: ``intro`` as a note, the cards in a ``grid_class`` div, then a link to ``figure`` if any."""
    link = f'<p class="note">{figure_label}: <a href="{_src(figure)}">{_esc(figure)}</a></p>' if figure else ""
    return f'<p class="note">{intro}</p><div class="{grid_class}">' + "".join(cards) + "</div>" + link


def _failures(folder: Path, failures: Sequence[Mapping[str, Any]], figure: str | None) -> str:
    if not failures:
        return '<p class="note">No likely failures listed.</p>'
    cards = []
    for k, f in _entries(failures, "failures"):
        label, predicted = f.get("label", "?"), f.get("predicted", "?")
        cls = "wrong" if str(label) != str(predicted) else ""
        meta = [f"sample {_fmt(f.get('index'))}", f"Q-Score {_fmt(_as_number(f.get('qscore')))}"]
        if f.get("domain") is not None:
            meta.append(f"domain {_esc(f.get('domain'))}")
        cards.append(
            '<div class="card failure">'
            + _img(folder, f.get("image"), f"sample {f.get('index', k)}: {label} predicted as {predicted}")
            + f'<div class="pred">{_esc(label)}<span class="arrow">&rarr;</span>'
            f'<span class="{cls}">{_esc(predicted)}</span></div>'
            + f'<div class="note">{" &middot; ".join(meta)}</div>'
            + (f"<div>{_esc(f['explanation'])}</div>" if f.get("explanation") else "")
            + _chips(f.get("concepts"))
            + "</div>"
        )
    intro = (
        "Test samples with the lowest Q-Score, the most likely mis-classifications without labels "
        "(paper section 3.4), with the probe's prediction and FALCON's explanation (section 4.4)."
    )
    return _card_grid(intro, cards, "grid", "Gallery figure", figure)


def _groups(folder: Path, groups: Sequence[Mapping[str, Any]], figure: str | None) -> str:
    if not groups:
        return '<p class="note">No feature groups explained.</p>'
    cards = []
    for k, g in _entries(groups, "groups"):
        gid = g.get("id", k)
        features = g.get("features") or []

        def strip(key: str, what: str, g: Mapping[str, Any] = g, gid: Any = gid) -> str:
            paths = list(g.get(key) or [])
            if not paths:
                return '<div class="note">none</div>'
            return (
                '<div class="strip">'
                + "".join(_img(folder, p, f"group {gid} {what} {j}") for j, p in enumerate(paths))
                + "</div>"
            )

        cards.append(
            '<div class="card">'
            f"<h3>Group {_esc(gid)}</h3>"
            f'<div class="note">features {_fmt(list(features))} &middot; score {_fmt(_as_number(g.get("score")))}</div>'
            '<div class="label">Concepts</div>'
            + _chips(g.get("concepts"))
            + '<div class="label">Highly activating (Grad-CAM crops)</div>'
            + strip("crops", "crop")
            + '<div class="label">Lowly activating</div>'
            + strip("low_crops", "lowly activating image")
            + "</div>"
        )
    intro = (
        "FALCON (paper chapter 4): groups of features that fire together, the concepts shared by "
        "their highly activating crops and absent from lowly activating images."
    )
    return _card_grid(intro, cards, "grid wide", "Grid figure", figure)


def _encoding(enc: Mapping[str, Any]) -> str:
    factors = list(enc.get("factors") or [])
    if not factors:
        return '<p class="note">No labelled factors recorded.</p>'
    body = []
    for _, e in _entries(factors, "encoding.factors"):
        top = (e.get("top_features") or ["?"])[0]
        inside = (e.get("median_in") or {}).get("discriminative")
        body.append(f'<tr><td class="l">{_esc(e.get("factor", "?"))}</td><td>{_fmt(_as_number(e.get("levels")))}</td>'
                    f"<td>{_esc(top)}</td>" + "".join(f"<td>{'' if v is None else f'{float(v):.2f}'}</td>"
                                                     for v in (e.get("best"), e.get("median"), inside)) + "</tr>")
    return ('<table><tr><th class="l">factor</th><th>levels</th><th>best feature</th><th>eta&sup2; best</th>'
            "<th>eta&sup2; median</th><th>median in Q-Score's D</th></tr>" + "".join(body) + "</table>"
            f'<p class="note">{_esc(enc.get("measure", ""))}.</p>')


def _compression(c: Mapping[str, Any], figure: str | None) -> str:
    k = list(c.get("k") or [])
    curves = c.get("curves") or {}
    if not k or not curves:
        return '<p class="note">No compression curve recorded.</p>'
    head = "".join(f"<th>{_fmt(_as_number(v))}</th>" for v in k)
    body = "".join(
        f'<tr><td class="l">{_esc(name)}</td>' + "".join(f"<td>{_fmt(_as_number(v))}</td>" for v in values) + "</tr>"
        for name, values in curves.items()
    )
    table = f'<table><tr><th class="l">selection \\ k</th>{head}</tr>{body}</table>'
    full = f'<p class="note">Full representation: {_fmt(_as_number(c.get("full")), "%")} top-1.</p>'
    return table + full + _figure(figure, "Probe top-1 vs features kept (dashed: full representation)")


def _config(config: Mapping[str, Any]) -> str:
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    return f"<details><summary>Resolved audit configuration</summary><pre>{_esc(text)}</pre></details>"


# --------------------------------------------------------------------------- page


def _check(summary: Mapping[str, Any]) -> None:
    if summary.get("overview") is None:
        raise ValueError("summary is missing its required key 'overview'")
    for key, kind in _KINDS.items():
        value = summary.get(key)
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"summary key {key!r} must be a {kind.__name__}, got {type(value).__name__}")


def _plain_data(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``summary`` as plain JSON data (numpy values and tuples converted, NaN kept), as ``summary.json`` holds it.

    Raises:
        ValueError: ``summary`` is not a dict, or holds a value JSON cannot represent.
    """
    if not isinstance(summary, Mapping):
        raise ValueError(f"summary must be a dict, got {type(summary).__name__}")
    try:
        return json.loads(json.dumps(summary, default=_json_default))
    except (TypeError, ValueError) as err:
        raise ValueError(f"summary cannot be written as JSON: {err}") from None


def render_html(summary: Mapping[str, Any], folder: str | Path, figures: Mapping[str, str] | None = None) -> str:
    """The page of ``summary`` (images relative to ``folder``; ``figures``: name -> relative PNG path).

    Raises:
        ValueError: ``overview`` is missing, or a section has the wrong type (the key is named).
    """
    summary = _plain_data(summary)
    _check(summary)
    folder = Path(folder)
    figures = dict(figures or {})
    title = str(summary.get("title") or "replens audit")
    meta = []
    if summary.get("created"):
        meta.append(f"created {_esc(summary['created'])}")
    if summary.get("seconds") is not None:
        meta.append(f"took {_fmt(_as_number(summary['seconds']))} s")
    if summary.get("replens_version"):
        meta.append(f"replens {_esc(summary['replens_version'])}")
    renderers: dict[str, Callable[[Any], str]] = {
        "overview": _overview,
        "accuracy": lambda v: _accuracy(v, figures.get("accuracy")),
        "qscore": lambda v: _qscore(v, figures),
        "encoding": _encoding,
        "failures": lambda v: _failures(folder, v, figures.get("failures")),
        "groups": lambda v: _groups(folder, v, figures.get("groups")),
        "compression": lambda v: _compression(v, figures.get("compression")),
        "config": _config,
    }
    sections = []
    for key, heading in SECTIONS.items():
        value = summary.get(key)
        content = _not_run(key) if value is None else renderers[key](value)
        sections.append(f'<section id="{key}">\n<h2>{_esc(heading)}</h2>\n{content}\n</section>')
    nav = "".join(f'<a href="#{key}">{_esc(heading)}</a>' for key, heading in SECTIONS.items())
    body = (
        f'<header><h1>{_esc(title)}</h1><div class="meta">{" &middot; ".join(meta)}</div></header>\n'
        f"<nav>{nav}</nav>\n<main>\n" + "\n".join(sections) + "\n</main>\n"
        "<footer>Written by replens.report; offline page, figures under figures/, data in summary.json.</footer>\n"
    )
    return html_page(title, body, style=_STYLE)


def _make_figures(summary: Mapping[str, Any], folder: Path) -> dict[str, str]:
    """Write every figure the summary has data for; name -> path relative to ``folder``."""
    out: dict[str, str] = {}

    def rel(name: str) -> Path:
        return folder / "figures" / f"{name}.png"

    acc = summary.get("accuracy")
    if acc and acc.get("rows"):
        accuracy_figure(acc, rel("accuracy"))
        out["accuracy"] = "figures/accuracy.png"
    q = summary.get("qscore")
    if q is not None:
        if q.get("correct") or q.get("wrong"):
            qscore_histogram_figure(q.get("correct") or [], q.get("wrong") or [], rel("qscore_histogram"))
            out["qscore_histogram"] = "figures/qscore_histogram.png"
        report = failure_report(q)
        if report.roc:
            roc_figure(q, rel("roc"))
            out["roc"] = "figures/roc.png"
        if report.pr:
            pr_figure(q, rel("pr"))
            out["pr"] = "figures/pr.png"
    if summary.get("failures"):
        failure_gallery_figure(summary["failures"], folder, rel("failures"))
        out["failures"] = "figures/failures.png"
    if summary.get("groups"):
        group_grid_figure(summary["groups"], folder, rel("groups"))
        out["groups"] = "figures/groups.png"
    comp = summary.get("compression")
    if comp and comp.get("k") and comp.get("curves"):
        compression_figure(comp, rel("compression"))
        out["compression"] = "figures/compression.png"
    return out


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays, paths: the JSON of ``summary.json`` (anything else is an error naming its type)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"summary holds a {type(value).__name__}, which cannot be written to summary.json")


def write_report(summary: dict[str, Any], folder: Path) -> Path:
    """Write the audit report into ``folder``: ``figures/*.png``, ``summary.json`` and ``index.html``.

    Args:
        summary: The audit's summary (schema in the docstring of :mod:`replens.report`; only
            ``overview`` is required). Image paths in it are relative to ``folder``.
        folder: The report folder (created if needed).

    Returns:
        The path of ``index.html``.

    Raises:
        ValueError: ``overview`` is missing, or a section has the wrong type (nothing is written then).
    """
    folder = Path(folder)
    summary = _plain_data(summary)
    _check(summary)
    # Render once without figures first: a malformed section fails here, before any file is written.
    render_html(summary, folder)
    figures = _make_figures(summary, folder)
    page = render_html(summary, folder, figures)
    # Keys keep their order (curves and rows are drawn in it), so a page re-rendered from summary.json is the same.
    text = json.dumps({**summary, "figures": figures}, indent=2) + "\n"
    atomic_write_text(folder / "summary.json", text)
    return atomic_write_text(folder / "index.html", page)
