"""The audit report: sections, "not run", escaping, image links, figure values, atomic writes, NaN and empty data."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from matplotlib.figure import Figure

from replens.quality import plots
from replens.report import (
    SECTIONS,
    accuracy_figure,
    compression_figure,
    failure_gallery_figure,
    group_grid_figure,
    pr_figure,
    qscore_histogram_figure,
    render_html,
    roc_figure,
    write_report,
)

Factory = Callable[[Path], dict[str, Any]]


class _Page(HTMLParser):
    """Collects section ids with their text, and every img src / a href."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.current: str | None = None
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.current = a["id"]
            self.sections[self.current] = ""
        if tag == "img":
            self.srcs.append(a["src"] or "")
        if tag == "a":
            self.hrefs.append(a["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.current:
            self.sections[self.current] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_full_summary_has_every_section_and_figure(tmp_path: Path, summary_factory: Factory) -> None:
    summary = summary_factory(tmp_path)
    index = write_report(summary, tmp_path)
    assert index == tmp_path / "index.html"
    page = _parse(index)
    assert list(page.sections) == list(SECTIONS)
    for key, text in page.sections.items():
        assert "not run" not in text, key
    assert "The SSL encoder beats random init by 28 points." in page.sections["overview"]
    assert "41.2%" in page.sections["overview"] and "4,800" in page.sections["overview"]
    assert "66%" in page.sections["qscore"] and "89%" in page.sections["qscore"] and "28.5" in page.sections["qscore"]
    assert "0.88" in page.sections["encoding"] and "domain" in page.sections["encoding"]
    assert "thin outline" in page.sections["failures"] and "red" in page.sections["groups"]
    assert "details" in page.tags  # configuration collapsed
    written = json.loads((tmp_path / "summary.json").read_text())
    assert set(written["figures"]) == {"accuracy", "qscore_histogram", "roc", "pr", "failures", "groups", "compression"}
    for rel in written["figures"].values():
        assert (tmp_path / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{rel}"' in index.read_text() or f'href="{rel}"' in index.read_text()
    assert {k: v for k, v in written.items() if k != "figures"} == json.loads(json.dumps(summary))
    # Nothing refers to the network: no scheme, no protocol-relative URL, no script.
    text = index.read_text()
    assert not re.search(r"(src|href)=\"(https?:|//)", text)
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text


@pytest.mark.parametrize("missing", [k for k in SECTIONS if k != "overview"])
def test_missing_section_says_not_run(tmp_path: Path, summary_factory: Factory, missing: str) -> None:
    summary = summary_factory(tmp_path)
    del summary[missing]
    page = _Page()
    page.feed(render_html(summary, tmp_path))  # the page alone: write_report of partial summaries is tested below
    for key, text in page.sections.items():
        assert ("not run" in text) == (key == missing), key


def test_overview_only_renders_and_draws_nothing(tmp_path: Path) -> None:
    page = _parse(write_report({"overview": {"linear_top1": 12.5}}, tmp_path))
    assert all("not run" in page.sections[k] for k in SECTIONS if k != "overview")
    assert "12.5%" in page.sections["overview"]
    assert json.loads((tmp_path / "summary.json").read_text())["figures"] == {}
    assert not (tmp_path / "figures").exists()


def test_overview_required_and_wrong_types_name_the_key(tmp_path: Path, summary_factory: Factory) -> None:
    with pytest.raises(ValueError, match="'overview'"):
        write_report({"accuracy": {}}, tmp_path / "a")
    summary = summary_factory(tmp_path / "b")
    summary["failures"] = "oops"
    before = _files(tmp_path / "b")
    with pytest.raises(ValueError, match="'failures'"):
        write_report(summary, tmp_path / "b")
    assert _files(tmp_path / "b") == before  # nothing written, not even figures of valid sections
    summary["failures"] = []
    summary["accuracy"]["rows"].append("row")
    with pytest.raises(ValueError, match=r"accuracy\.rows\[4\]"):
        write_report(summary, tmp_path / "b")
    summary["accuracy"]["rows"].pop()
    summary["failures"] = [{"index": 1}, 3]
    with pytest.raises(ValueError, match=r"failures\[1\]"):
        write_report(summary, tmp_path / "b")
    assert _files(tmp_path / "b") == before


def test_text_is_html_escaped(tmp_path: Path, summary_factory: Factory) -> None:
    summary = summary_factory(tmp_path)
    summary["title"] = 'audit "x" & <y>'
    summary["groups"][0]["concepts"] = ["<img src=x onerror=alert(1)>"]
    text = write_report(summary, tmp_path).read_text()
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "<b>not bold</b>" not in text and "&lt;b&gt;not bold&lt;/b&gt;" in text
    assert "<title>audit &quot;x&quot; &amp; &lt;y&gt;</title>" in text
    page = _parse(tmp_path / "index.html")
    assert "<script>alert(1)</script>" in page.sections["failures"]  # shown as text


def test_every_image_source_exists(tmp_path: Path, summary_factory: Factory) -> None:
    summary = summary_factory(tmp_path)
    (tmp_path / "assets" / "failure-3.png").rename(tmp_path / "assets" / "x y#1.png")  # needs URL quoting
    summary["failures"][3]["image"] = "assets/x y#1.png"
    page = _parse(write_report(summary, tmp_path))
    assert len(page.srcs) == 5 + 5 + 3 * (4 + 2)  # figures, failures, group crops
    for src in page.srcs + page.hrefs:
        if src.startswith("#"):
            continue
        assert not Path(unquote(src)).is_absolute()
        assert (tmp_path / unquote(src)).is_file(), src


def test_missing_image_is_reported_not_linked(tmp_path: Path, summary_factory: Factory) -> None:
    summary = summary_factory(tmp_path)
    summary["failures"][0]["image"] = "assets/gone.png"
    summary["failures"][1].pop("image")
    summary["groups"][0]["crops"][1] = "assets/gone-crop.png"
    page = _parse(write_report(summary, tmp_path))
    assert "image missing: assets/gone.png" in page.sections["failures"]
    assert "no image" in page.sections["failures"]
    assert "image missing: assets/gone-crop.png" in page.sections["groups"]
    assert all((tmp_path / unquote(s)).is_file() for s in page.srcs)
    gallery = failure_gallery_figure(summary["failures"], tmp_path, tmp_path / "g.png")
    assert gallery.values["missing"] == ["assets/gone.png", "None"]


def test_roc_figure_shows_the_given_auroc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[Figure] = []
    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: (drawn.append(fig), save(fig, path, **kw))[1])
    qscore = {
        "auroc": 66.0,
        "auprc": 89.0,
        "roc": {"fpr": [0, 0.5, 1], "tpr": [0, 0.8, 1]},
        "pr": {"recall": [0, 1], "precision": [1, 0.7]},
        "correct": [1.0] * 7,
        "wrong": [0.0] * 3,
    }
    roc = roc_figure(qscore, tmp_path / "roc.png")
    assert roc.values["auroc"] == pytest.approx(66.0) and roc.path == tmp_path / "roc.png"
    assert Path(roc).read_bytes()[:4] == b"\x89PNG"
    legend = [t.get_text() for t in drawn[-1].axes[0].get_legend().get_texts()]
    assert legend == ["Q-Score (AUROC 66.00)"]
    lines = drawn[-1].axes[0].get_lines()
    assert list(lines[0].get_xdata()) == [0, 0.5, 1]
    assert list(lines[1].get_xdata()) == [0, 1] and lines[1].get_linestyle() == "--"  # chance diagonal
    pr = pr_figure(qscore, tmp_path / "pr.png")
    assert pr.values["auprc"] == pytest.approx(89.0) and pr.values["chance"] == pytest.approx(0.7)
    ax = drawn[-1].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Q-Score (AUPRC 89.00)"]
    assert list(ax.get_lines()[1].get_ydata()) == pytest.approx([0.7, 0.7])  # chance level


def test_curves_derived_from_scores_match_mann_whitney(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    correct, wrong = rng.normal(1, 1, 40), rng.normal(0, 1, 17)
    roc = roc_figure({"correct": correct.tolist(), "wrong": wrong.tolist()}, tmp_path / "roc.png")
    greater = (correct[:, None] > wrong[None, :]).mean() + 0.5 * (correct[:, None] == wrong[None, :]).mean()
    assert roc.values["auroc"] == pytest.approx(100 * greater)
    assert roc.values["points"] > 2


def test_histogram_counts_equal_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    correct, wrong = rng.normal(1, 0.3, 123), rng.normal(0, 0.3, 45)
    fig = qscore_histogram_figure(correct.tolist(), [*wrong.tolist(), math.nan, None], tmp_path / "h.png", bins=12)
    counts, edges = fig.values["counts"], np.array(fig.values["edges"])
    assert sum(counts["correct"]) == 123 and sum(counts["wrong"]) == 45
    assert fig.values["dropped"] == {"correct": 0, "wrong": 2}
    assert (
        len(edges) == 13
        and edges[0] == min(correct.min(), wrong.min())
        and edges[-1] == max(correct.max(), wrong.max())
    )
    assert counts["correct"] == np.histogram(correct, edges)[0].tolist()
    assert counts["wrong"] == np.histogram(wrong, edges)[0].tolist()


def test_accuracy_and_compression_figures_draw_the_input(tmp_path: Path, summary_factory: Factory) -> None:
    summary = summary_factory(tmp_path)
    acc = accuracy_figure(summary["accuracy"], tmp_path / "acc.png")
    assert acc.values["groups"] == ["all", "photo", "cartoon", "sketch", "painting"]
    for row in summary["accuracy"]["rows"]:
        expected = [row["all"], *(row["per_domain"][d] for d in summary["accuracy"]["domains"])]
        assert acc.values["series"][f"{row['encoder']} / {row['probe']}"] == expected
    comp = compression_figure(summary["compression"], tmp_path / "comp.png")
    assert comp.values["curves"] == {k: [float(v) for v in c] for k, c in summary["compression"]["curves"].items()}
    assert comp.values["k"] == [1, 2, 4, 8, 16] and comp.values["full"] == 41.2
    with pytest.raises(ValueError, match=r"compression\.curves\.pca"):
        compression_figure({"k": [1, 2], "curves": {"pca": [1.0]}}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_image_grids_caption_every_item(tmp_path: Path, summary_factory: Factory) -> None:
    summary = summary_factory(tmp_path)
    gallery = failure_gallery_figure(summary["failures"], tmp_path, tmp_path / "f.png", columns=2)
    assert len(gallery.values["captions"]) == 5 and gallery.values["missing"] == []
    assert gallery.values["captions"][1] == "star -> circle\nQ = 0.1"
    grid = group_grid_figure(summary["groups"], tmp_path, tmp_path / "g.png", max_crops=3)
    assert grid.values["crops"] == [3, 3, 3] and grid.values["low_crops"] == [2, 2, 2]
    assert grid.values["captions"][0] == "group 0 [3, 17, 40] score 0.31\nred, star"


def test_atomic_writes_leave_no_partial_files(tmp_path: Path, summary_factory: Factory, monkeypatch) -> None:
    summary = summary_factory(tmp_path)
    write_report(summary, tmp_path)
    before = {p: (tmp_path / p).read_bytes() for p in _files(tmp_path)}

    def broken_savefig(self: Figure, fname: Any, **kwargs: Any) -> None:
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    summary["title"] = "second run"
    with pytest.raises(OSError, match="disk full"):
        write_report(summary, tmp_path)
    assert {p: (tmp_path / p).read_bytes() for p in _files(tmp_path)} == before  # old report intact, no temp files
    with pytest.raises(OSError):
        roc_figure(summary["qscore"], tmp_path / "new" / "roc.png")
    assert _files(tmp_path / "new") == set()


def test_nan_and_empty_lists_render(tmp_path: Path) -> None:
    nan = math.nan
    summary = {
        "overview": {"linear_top1": nan, "auroc": None, "plugins": [], "headline": ""},
        "accuracy": {
            "domains": ["photo"],
            "rows": [{"encoder": "SSL", "probe": "linear", "all": nan, "per_domain": {}}],
        },
        "qscore": {"auroc": nan, "auprc": nan, "correct": [nan, 0.5], "wrong": [], "roc": {}, "pr": {}, "rankme": nan},
        "failures": [],
        "groups": [{"id": 0, "features": [], "concepts": [], "crops": [], "low_crops": []}],
        "compression": {"k": [1, 2], "curves": {"random": [nan, 3.0]}, "full": nan},
        "encoding": {"factors": []},
        "config": {},
    }
    page = _parse(write_report(summary, tmp_path))
    assert "No labelled factors recorded." in page.sections["encoding"]
    assert all("not run" not in text for text in page.sections.values())
    assert "n/a" in page.sections["overview"] and "n/a" in page.sections["accuracy"]
    assert "No likely failures listed." in page.sections["failures"]
    figures = json.loads((tmp_path / "summary.json").read_text())["figures"]
    assert set(figures) == {"accuracy", "qscore_histogram", "groups", "compression"}  # no curves: one outcome only
    empty = write_report(
        {"overview": {}, "accuracy": {"rows": []}, "qscore": {}, "groups": [], "compression": {"k": [], "curves": {}}},
        tmp_path / "empty",
    )
    assert "No probe results recorded." in empty.read_text()


def test_same_input_same_output(tmp_path: Path, summary_factory: Factory) -> None:
    """Same summary, same bytes; numpy values and tuples give the same report as plain lists."""
    a, b = tmp_path / "a", tmp_path / "b"
    write_report(summary_factory(a), a)
    summary = summary_factory(b)
    summary["qscore"]["correct"] = np.array(summary["qscore"]["correct"])
    summary["qscore"]["wrong"] = tuple(np.array(summary["qscore"]["wrong"]))
    summary["qscore"]["auroc"] = np.float64(66.0)
    summary["compression"]["k"] = np.array(summary["compression"]["k"])
    summary["groups"][0]["features"] = np.array([3, 17, 40])
    summary["overview"]["steps"] = np.int64(280)
    write_report(summary, b)
    assert _files(a) == _files(b)
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # Re-rendering from the written summary.json gives the same page.
    page = (a / "index.html").read_text()
    write_report(json.loads((a / "summary.json").read_text()), a)
    assert (a / "index.html").read_text() == page
    assert render_html(json.loads((a / "summary.json").read_text()), a) != page  # without figures: no figure links
    with pytest.raises(ValueError, match="object"):
        write_report({"overview": {"x": object()}}, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
