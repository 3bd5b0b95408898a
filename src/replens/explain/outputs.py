"""FALCON outputs: concepts as JSON and CSV, and an offline HTML page (the layout of Figure 4.2).

Every group gets a card with its concepts (Word Scores as bars), the terms
contrastive filtering removed, a strip of its highly activating crops and a
strip of its lowly activating images. Images are PNG files next to the page
(``images/``), referenced relatively; the page has no scripts and loads
nothing from the network. All files are written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from replens.explain.failures import FailureExplanation
from replens.explain.falcon import FalconResult, GroupExplanation
from replens.explain.transfer import TransferredGroup
from replens.pages import write_html_page
from replens.runs import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "group_image_stem", "image_strip", "write_concepts_csv", "write_failures", "write_falcon_outputs",
    "write_html_report",
]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:16px}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px}
.card h3{margin:0 0 6px 0;font-size:15px}.meta{color:#666;font-size:12px;margin-bottom:8px}
.label{font-size:12px;color:#444;margin:6px 0 2px 0}
.strip{max-width:100%;image-rendering:pixelated;border:1px solid #eee}
.terms{display:flex;flex-wrap:wrap;gap:4px}
.term{font-size:12px;background:#eef4ff;border-radius:4px;padding:2px 6px;position:relative;overflow:hidden}
.term span.bar{position:absolute;left:0;bottom:0;height:3px;background:#3b6fd8}
.removed{font-size:12px;color:#a33;text-decoration:line-through}
table{border-collapse:collapse;font-size:13px;background:#fff}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
.summary td:first-child{color:#555}
"""


def group_image_stem(name: str) -> str:
    """The file-name stem of a feature group's images (``group-<stem>-high.png``).

    The group's feature indices joined by ``_``; a name longer than 80 characters
    (a group of dozens of features) keeps its first 60 and a hash of the whole,
    so the file name stays within every file system's 255-byte limit and unique.
    """
    stem = name.replace(",", "_")
    if len(stem) <= 80:
        return stem
    return f"{stem[:60]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def _to_pil(image: torch.Tensor | np.ndarray, size: int) -> Image.Image:
    arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3:
        arr = arr.transpose(1, 2, 0)
    pil = Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8)))
    return pil.resize((size, size), Image.NEAREST if max(pil.size) < size else Image.BILINEAR)


def image_strip(
    images: Sequence[torch.Tensor | np.ndarray], size: int = 72, max_images: int = 12, gap: int = 2
) -> bytes:
    """PNG bytes of up to ``max_images`` images side by side, each ``size`` px square."""
    shown = list(images)[:max_images]
    width = max(1, len(shown) * (size + gap) - gap)
    canvas = Image.new("RGB", (width, size), (255, 255, 255))
    for k, img in enumerate(shown):
        canvas.paste(_to_pil(img, size), (k * (size + gap), 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def _write_png(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def write_concepts_csv(path: str | Path, result: FalconResult) -> Path:
    """One row per (group, kind, rank): group, features, kind (word/phrase/removed), rank, term, score, low score."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        [
            "group",
            "features",
            "n_highly",
            "avg_similarity",
            "interpretable",
            "kind",
            "rank",
            "term",
            "score",
            "low_score",
        ]
    )
    for g in result.groups:
        base = [g.name, " ".join(map(str, g.features)), len(g.highly), f"{g.avg_similarity:.4f}", int(g.interpretable)]
        for kind, terms in (("word", g.words), ("phrase", g.phrases)):
            for rank, (term, score) in enumerate(terms, 1):
                writer.writerow([*base, kind, rank, term, f"{score:.4f}", ""])
        for rank, (term, (high, low)) in enumerate(sorted(g.removed.items()), 1):
            writer.writerow([*base, "removed", rank, term, f"{high:.4f}", f"{low:.4f}"])
    return atomic_write_text(path, buf.getvalue())


def write_failures(
    path_json: str | Path,
    failures: Sequence[FailureExplanation],
    classes: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Failure explanations as JSON (and a CSV next to it)."""
    return write_failure_records(path_json, [f.to_dict(classes) for f in failures], extra)


def write_failure_records(
    path_json: str | Path, records: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None
) -> Path:
    """Failure records (:meth:`FailureExplanation.to_dict`) as JSON, ``{**extra, "failures": records}``, and CSV."""
    path_json = Path(path_json)
    atomic_write_json(path_json, {**(extra or {}), "failures": list(records)})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["sample", "label", "prediction", "top_features", "groups", "concepts"])
    for d in records:
        writer.writerow(
            [
                d["sample"],
                d["label"],
                d["prediction"],
                " ".join(str(t["feature"]) for t in d["top_features"]),
                " | ".join(d["groups"]),
                " ".join(t["term"] for t in d["words"]),
            ]
        )
    atomic_write_text(path_json.with_suffix(".csv"), buf.getvalue())
    return path_json


def _terms_html(terms: Sequence[tuple[str, float]]) -> str:
    if not terms:
        return '<div class="meta">none</div>'
    top = max(s for _, s in terms) or 1.0
    chips = "".join(
        f'<span class="term" title="Word Score {s:.3f}">{html.escape(t)} {s:.2f}'
        f'<span class="bar" style="width:{100 * s / top:.0f}%"></span></span>'
        for t, s in terms
    )
    return f'<div class="terms">{chips}</div>'


def _group_card(g: GroupExplanation, images_dir: str) -> str:
    removed = ", ".join(
        f'<span class="removed" title="high {h:.2f} / low {lo:.2f}">{html.escape(t)}</span>'
        for t, (h, lo) in sorted(g.removed.items(), key=lambda kv: -kv[1][0])[:12]
    )
    parts = [
        f'<div class="card" id="group-{html.escape(g.name)}">',
        f"<h3>Feature{'s' if len(g.features) > 1 else ''} {html.escape(g.name)}</h3>",
        f'<div class="meta">{len(g.highly)} highly activating images &middot; mean CLIP similarity '
        f"{g.avg_similarity:.3f} &middot; {'interpretable' if g.interpretable else 'not interpretable'} &middot; "
        f"{len(g.lowly)} lowly activating</div>",
        '<div class="label">Concepts (words)</div>',
        _terms_html(g.words),
        '<div class="label">Concepts (phrases)</div>',
        _terms_html(g.phrases),
    ]
    if removed:
        parts += ['<div class="label">Removed by contrastive interpretation</div>', f"<div>{removed}</div>"]
    parts += [
        '<div class="label">Highly activating (Grad-CAM crops)</div>',
        f'<img class="strip" alt="highly activating crops of {html.escape(g.name)}" '
        f'src="{images_dir}/group-{group_image_stem(g.name)}-high.png">',
        '<div class="label">Lowly activating</div>',
        (
            f'<img class="strip" alt="lowly activating images of {html.escape(g.name)}" '
            f'src="{images_dir}/group-{group_image_stem(g.name)}-low.png">'
            if len(g.lowly)
            else '<div class="meta">none found</div>'
        ),
        "</div>",
    ]
    return "\n".join(parts)


def write_html_report(
    out_dir: str | Path,
    result: FalconResult,
    load_images: Any,
    *,
    title: str = "FALCON explanations",
    summary: dict[str, Any] | None = None,
    failures: Sequence[FailureExplanation] = (),
    classes: Sequence[str] | None = None,
    transfers: Sequence[TransferredGroup] = (),
    max_groups: int = 200,
    failure_images: Any = None,
) -> Path:
    """Write ``report.html`` and its ``images/`` (offline; no scripts, no CDN).

    Args:
        out_dir: The run folder.
        result: FALCON's result.
        load_images: ``rows -> uint8 (B, 3, H, W)`` images (e.g. ``Falcon.images``).
        title: Page title.
        summary: Key/value pairs shown at the top.
        failures: Failure explanations to list.
        classes: Class names for failures.
        transfers: Transferred groups to list.
        max_groups: Most group cards shown (explained groups first).
        failure_images: ``rows -> images`` of the failures' rows when they come from other data than the
            groups (default: ``load_images``).
    """
    out = Path(out_dir)
    images_dir = "images"
    shown = sorted(result.groups, key=lambda g: (not g.explained, not g.interpretable, -len(g.highly)))[:max_groups]
    for g in shown:
        stem = group_image_stem(g.name)
        crops = g.crops if g.crops else list(load_images(g.highly[:12]))
        _write_png(out / images_dir / f"group-{stem}-high.png", image_strip(crops))
        if len(g.lowly):
            _write_png(out / images_dir / f"group-{stem}-low.png", image_strip(list(load_images(g.lowly))))
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in {**result.summary(), **(summary or {})}.items()
    )
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<table class="summary">{rows}</table>',
        f"<h2>Feature groups ({len(result.explained)} explained, {len(result.interpretable)} interpretable of "
        f"{len(result.groups)} examined)</h2>",
        '<div class="grid">',
        *(_group_card(g, images_dir) for g in shown),
        "</div>",
    ]
    if failures:
        body.append(f"<h2>Failure explanations ({len(failures)} mis-classified samples)</h2>")
        table = [
            "<table><tr><th>image</th><th>label</th><th>prediction</th><th>most contributing features</th>"
            "<th>groups</th><th>concepts</th></tr>"
        ]
        for k, f in enumerate(failures[:100]):
            _write_png(out / images_dir / f"failure-{k}.png",
                       image_strip(list((failure_images or load_images)([f.row])), size=64))
            d = f.to_dict(classes)
            feats = ", ".join(f"{t['feature']} ({t['contribution']:.2f})" for t in d["top_features"])
            table.append(
                f'<tr><td><img alt="sample {html.escape(f.name)}" src="{images_dir}/failure-{k}.png"></td>'
                f"<td>{html.escape(str(d['label']))}</td><td>{html.escape(str(d['prediction']))}</td>"
                f"<td>{html.escape(feats)}</td><td>{html.escape(' | '.join(d['groups']))}</td>"
                f"<td>{html.escape(', '.join(t['term'] for t in d['words']))}</td></tr>"
            )
        table.append("</table>")
        body += table
    if transfers:
        body.append(f"<h2>Concept transfer ({len(transfers)} source groups mapped)</h2>")
        table = [
            "<table><tr><th>source group</th><th>target features</th><th>concepts</th>"
            "<th>carried by target images</th><th>random features</th></tr>"
        ]
        for t in transfers:
            table.append(
                f"<tr><td>{html.escape(t.source_group)}</td><td>{html.escape(', '.join(map(str, t.target_features)))}"
                f"</td><td>{html.escape(', '.join(w for w, _ in t.words[:5]))}</td><td>{_fmt(t.carry)}</td>"
                f"<td>{_fmt(t.carry_random)}</td></tr>"
            )
        table.append("</table>")
        body += table
    return write_html_page(out / "report.html", title, "\n".join(body) + "\n", style=_STYLE)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}"
    return str(value)


def write_falcon_outputs(
    out_dir: str | Path, result: FalconResult, extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """``concepts.json`` and ``concepts.csv`` of a FALCON result."""
    out = Path(out_dir)
    data = result.to_dict()
    data.update(extra or {})
    return {
        "json": atomic_write_json(out / "concepts.json", data),
        "csv": write_concepts_csv(out / "concepts.csv", result),
    }
