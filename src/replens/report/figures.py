"""Figures of the ``replens audit`` report, drawn from the audit's summary dict.

Every function writes one PNG atomically (matplotlib's object API on the Agg
canvas, no pyplot, no display) and returns a :class:`RenderedFigure`: the
path (it is ``os.PathLike``) plus the numbers the figure actually shows, read
back from the drawn artists, so a test can check a figure against its input.

The ROC and PR curves are ``replens.quality.plots.plot_roc`` / ``plot_pr``
(paper section 3.4, Figure 3.4) fed with a :class:`replens.quality.FailureReport`
built from the summary; image strips of feature groups are
``replens.explain.outputs.image_strip`` (the layout of Figure 4.2). Percentages
(accuracies, AUROC, AUPRC) are in percent, 0 to 100, as in the summary.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from replens.explain.outputs import image_strip
from replens.plotting import new_figure, save_figure
from replens.quality.compression import float_values as _floats
from replens.quality.failure import FailureReport, failure_prediction
from replens.quality.plots import draw_compression, plot_pr, plot_roc

__all__ = [
    "RenderedFigure",
    "accuracy_figure",
    "compression_figure",
    "failure_gallery_figure",
    "failure_report",
    "group_grid_figure",
    "load_image",
    "pr_figure",
    "qscore_histogram_figure",
    "roc_figure",
]

_MISSING_RGB = 200  # grey placeholder for an image file that is not there


@dataclass(frozen=True)
class RenderedFigure:
    """A PNG written by one of this module's functions.

    Attributes:
        path: Where the PNG is.
        values: What the figure shows (bar heights, histogram counts, legend
            texts, captions...), read back from the drawn artists.
    """

    path: Path
    values: dict[str, Any] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def _plain(text: Any) -> str:
    """``text`` shown literally by matplotlib (no mathtext on ``$...$``)."""
    return str(text).replace("$", r"\$")


def _seq(values: Any) -> list[Any]:
    """``values`` (a list, tuple or array) as a list; ``None`` is empty."""
    return [] if values is None else list(values)


def _number(value: Any) -> float:
    """``value`` as float; ``None`` and non-numbers are NaN."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def load_image(path: str | Path) -> np.ndarray | None:
    """An image file as uint8 ``(H, W, 3)``, or ``None`` when the file is absent or unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (FileNotFoundError, IsADirectoryError, UnidentifiedImageError, OSError):
        return None


def _resolve(root: Path, rel: str | None) -> Path | None:
    return None if not rel else (root / rel)


# --------------------------------------------------------------------------- accuracy


def accuracy_figure(accuracy: Mapping[str, Any], path: str | Path) -> RenderedFigure:
    """Probe top-1 per domain as grouped bars: one bar per (encoder, probe) row, groups = all + domains.

    Rows whose encoder starts with ``random`` are drawn in grey tones (the
    random-init baseline of the audit), kNN rows hatched.

    Args:
        accuracy: ``{"domains": [...], "rows": [{"encoder", "probe", "all", "per_domain": {...}}]}``.
        path: The PNG to write.

    Returns:
        The figure; ``values = {"groups": [...], "series": {"encoder / probe": [heights]}}`` (NaN where
        a row has no value).
    """
    domains = [str(d) for d in _seq(accuracy.get("domains"))]
    rows = _seq(accuracy.get("rows"))
    groups = ["all", *domains]
    fig = new_figure(max(6.0, 1.1 * len(groups) + 0.35 * len(groups) * max(1, len(rows))), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(groups))
    ssl_colors = ["tab:blue", "tab:cyan", "tab:purple", "tab:green", "tab:olive"]
    random_colors = ["0.55", "0.75", "0.4"]
    series: dict[str, list[float]] = {}
    n_ssl = n_random = 0
    for k, row in enumerate(rows):
        per_domain = row.get("per_domain") or {}
        heights = [_number(row.get("all"))] + [_number(per_domain.get(d)) for d in domains]
        encoder, probe = str(row.get("encoder", "?")), str(row.get("probe", "?"))
        if encoder.lower().startswith("random"):
            color, n_random = random_colors[n_random % len(random_colors)], n_random + 1
        else:
            color, n_ssl = ssl_colors[n_ssl % len(ssl_colors)], n_ssl + 1
        label = f"{encoder} / {probe}"
        bars = ax.bar(
            x - 0.4 + width * (k + 0.5),
            heights,
            width=width,
            color=color,
            hatch="//" if probe.lower() == "knn" else None,
            edgecolor="white",
            label=_plain(label),
        )
        series[label] = [float(b.get_height()) for b in bars]
    ax.set_xticks(x, [_plain(g) for g in groups])
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Probe accuracy per domain")
    ax.grid(axis="y", alpha=0.3)
    if rows:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    else:
        ax.text(0.5, 0.5, "no accuracy rows", ha="center", va="center", transform=ax.transAxes)
    return RenderedFigure(save_figure(fig, path), {"groups": groups, "series": series})


# --------------------------------------------------------------------------- Q-Score


def qscore_histogram_figure(
    correct: Sequence[float], wrong: Sequence[float], path: str | Path, bins: int = 30
) -> RenderedFigure:
    """Overlaid Q-Score histograms of correctly and wrongly classified test samples (paper section 3.4).

    Both histograms share the bin edges (``bins`` equal bins over the finite
    values of both); non-finite scores are dropped and counted.

    Returns:
        The figure; ``values = {"edges": [...], "counts": {"correct": [...], "wrong": [...]},
        "dropped": {"correct": n, "wrong": n}}``, counts read from the drawn bars.
    """
    data = {"correct": _floats(correct, "qscore.correct"), "wrong": _floats(wrong, "qscore.wrong")}
    finite = {name: v[np.isfinite(v)] for name, v in data.items()}
    dropped = {name: int(len(data[name]) - len(finite[name])) for name in data}
    both = np.concatenate(list(finite.values()))
    lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
    if hi <= lo:  # one distinct value: a unit-wide bin around it
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    counts: dict[str, list[int]] = {}
    for name, color in (("correct", "tab:green"), ("wrong", "tab:red")):
        n, _, _ = ax.hist(finite[name], bins=edges, alpha=0.55, color=color, label=f"{name} ({len(finite[name])})")
        counts[name] = [int(c) for c in n]
    ax.set_xlabel("Q-Score")
    ax.set_ylabel("test samples")
    ax.set_title("Q-Score of correctly vs wrongly classified samples")
    if len(both):
        ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, "no finite Q-Scores", ha="center", va="center", transform=ax.transAxes)
    return RenderedFigure(save_figure(fig, path), {"edges": edges.tolist(), "counts": counts, "dropped": dropped})


def failure_report(qscore: Mapping[str, Any]) -> FailureReport:
    """A :class:`FailureReport` (fractions) from the summary's ``qscore`` section (percentages).

    The ROC / PR arrays are taken from ``qscore["roc"]`` / ``qscore["pr"]``; when
    absent they are computed from the ``correct`` and ``wrong`` score lists with
    :func:`replens.quality.failure_prediction` (and so are AUROC / AUPRC when
    the summary lacks them). The chance level of the PR curve is the fraction of
    correct samples.
    """
    correct = _floats(qscore.get("correct"), "qscore.correct")
    wrong = _floats(qscore.get("wrong"), "qscore.wrong")
    correct, wrong = correct[np.isfinite(correct)], wrong[np.isfinite(wrong)]
    count = len(correct) + len(wrong)
    derived: FailureReport | None = None
    if len(correct) and len(wrong) and (not qscore.get("roc") or not qscore.get("pr")):
        scores = np.concatenate([correct, wrong])
        derived = failure_prediction(scores, np.arange(count) < len(correct))
    rate = _number(qscore.get("correct_rate"))
    if math.isnan(rate) and count:
        rate = len(correct) / count

    def curve(key: str, names: tuple[str, str]) -> dict[str, np.ndarray]:
        given = qscore.get(key)
        if given:
            return {n: _floats(given.get(n), f"qscore.{key}.{n}") for n in names}
        return getattr(derived, key) if derived is not None else {}

    def percent(key: str, fallback: float) -> float:
        value = _number(qscore.get(key))
        return value / 100.0 if not math.isnan(value) else fallback

    return FailureReport(
        auroc=percent("auroc", derived.auroc if derived else math.nan),
        auprc=percent("auprc", derived.auprc if derived else math.nan),
        auprc_failure=derived.auprc_failure if derived else math.nan,
        correct_rate=rate,
        count=int(qscore.get("n") or count),
        roc=curve("roc", ("fpr", "tpr")),
        pr=curve("pr", ("precision", "recall")),
    )


def roc_figure(qscore: Mapping[str, Any], path: str | Path, name: str = "Q-Score") -> RenderedFigure:
    """The ROC curve of Q-Score predicting correct classification, AUROC in the legend, chance diagonal.

    Drawn by ``replens.quality.plots.plot_roc``.

    Returns:
        The figure; ``values = {"auroc": percent, "points": len(fpr)}``.
    """
    report = failure_report(qscore)
    out = plot_roc({name: report}, path)
    return RenderedFigure(out, {"auroc": 100.0 * report.auroc, "points": len(report.roc.get("fpr", []))})


def pr_figure(qscore: Mapping[str, Any], path: str | Path, name: str = "Q-Score") -> RenderedFigure:
    """The precision-recall curve (correct samples positive), AUPRC in the legend, chance level dashed.

    Drawn by ``replens.quality.plots.plot_pr``.

    Returns:
        The figure; ``values = {"auprc": percent, "chance": fraction correct, "points": len(recall)}``.
    """
    report = failure_report(qscore)
    out = plot_pr({name: report}, path)
    return RenderedFigure(
        out,
        {"auprc": 100.0 * report.auprc, "chance": report.correct_rate, "points": len(report.pr.get("recall", []))},
    )


# --------------------------------------------------------------------------- compression


def compression_figure(compression: Mapping[str, Any], path: str | Path) -> RenderedFigure:
    """Probe accuracy vs features kept, one line per selection, the full representation dashed (paper Fig. 3.2).

    The one compression plot, :func:`replens.quality.plots.draw_compression`.

    Args:
        compression: ``{"k": [...], "curves": {selection: [accuracy per k]}, "full": accuracy}``
            (:func:`replens.quality.compression.compression_series`).
        path: The PNG to write.

    Returns:
        The figure; ``values = {"k": [...], "curves": {selection: [...]}, "full": value}`` read from the lines.

    Raises:
        ValueError: A curve's length differs from ``k`` (the selection is named).
    """
    return RenderedFigure(*draw_compression(compression, path))


# --------------------------------------------------------------------------- image grids


def _placeholder(size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), _MISSING_RGB, dtype=np.uint8)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width=width, max_lines=3, placeholder="...")) if text else ""


def failure_gallery_figure(
    failures: Sequence[Mapping[str, Any]],
    root: str | Path,
    path: str | Path,
    columns: int = 6,
    max_items: int = 24,
) -> RenderedFigure:
    """The likely failures as a grid of images, each captioned ``label -> predicted`` and its Q-Score.

    Args:
        failures: The summary's ``failures`` entries (``image`` relative to ``root``).
        root: The report folder.
        path: The PNG to write.
        columns: Images per row.
        max_items: Most failures shown (in the given order: lowest Q-Score first in the audit).

    Returns:
        The figure; ``values = {"captions": [...], "missing": [image paths not found]}``.
    """
    root = Path(root)
    shown = list(failures)[:max_items]
    n = max(1, len(shown))
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig = new_figure(1.9 * cols, 2.3 * rows)
    captions: list[str] = []
    missing: list[str] = []
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_axis_off()
        if k >= len(shown):
            if not shown:
                ax.text(0.5, 0.5, "no failures", ha="center", va="center", transform=ax.transAxes)
            continue
        item = shown[k]
        image_path = _resolve(root, item.get("image"))
        image = load_image(image_path) if image_path is not None else None
        if image is None:
            missing.append(str(item.get("image")))
            image = _placeholder()
        ax.imshow(image, interpolation="nearest")
        q = _number(item.get("qscore"))
        caption = _wrap(f"{item.get('label', '?')} -> {item.get('predicted', '?')}", 24)
        caption += f"\nQ = {'n/a' if math.isnan(q) else f'{q:.3g}'}"
        captions.append(caption)
        ax.set_title(_plain(caption), fontsize=8)
    return RenderedFigure(save_figure(fig, path), {"captions": captions, "missing": missing})


def _strip(paths: Sequence[str], root: Path, size: int, max_images: int, missing: list[str]) -> np.ndarray:
    from PIL import Image

    images = []
    for rel in list(paths)[:max_images]:
        image = load_image(root / rel)
        if image is None:
            missing.append(str(rel))
            image = _placeholder(size)
        images.append(image)
    with Image.open(io.BytesIO(image_strip(images, size=size, max_images=max_images))) as strip:
        return np.asarray(strip.convert("RGB"))


def group_grid_figure(
    groups: Sequence[Mapping[str, Any]],
    root: str | Path,
    path: str | Path,
    max_groups: int = 12,
    max_crops: int = 8,
    size: int = 64,
) -> RenderedFigure:
    """Explained feature groups: per group a row of highly activating crops and one of lowly activating ones.

    The strips are ``replens.explain.outputs.image_strip`` (paper Figure 4.2); each row is captioned with the
    group's features, score and concepts.

    Returns:
        The figure; ``values = {"captions": [...], "crops": [shown per group], "low_crops": [...],
        "missing": [image paths not found]}``.
    """
    root = Path(root)
    shown = list(groups)[:max_groups]
    n = max(1, len(shown))
    fig = new_figure(11.0, 1.9 * n)
    captions: list[str] = []
    crops_shown: list[int] = []
    low_shown: list[int] = []
    missing: list[str] = []
    if not shown:
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no feature groups", ha="center", va="center", transform=ax.transAxes)
    for k, group in enumerate(shown):
        features = ", ".join(str(f) for f in _seq(group.get("features")))
        concepts = ", ".join(str(c) for c in _seq(group.get("concepts"))) or "no concepts"
        score = _number(group.get("score"))
        caption = f"group {group.get('id', k)} [{features}] score {'n/a' if math.isnan(score) else f'{score:.2f}'}"
        caption += f"\n{concepts}"
        captions.append(caption)
        for j, (key, title) in enumerate((("crops", "highly activating"), ("low_crops", "lowly activating"))):
            paths = _seq(group.get(key))[:max_crops]
            (crops_shown if key == "crops" else low_shown).append(len(paths))
            ax = fig.add_subplot(n, 2, 2 * k + j + 1)
            ax.set_axis_off()
            if paths:
                ax.imshow(_strip(paths, root, size, max_crops, missing), interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes, color="0.5")
            label = f"{_wrap(caption.replace(chr(10), ': '), 70)}\n{title}" if j == 0 else f"\n{title}"
            ax.set_title(_plain(label), fontsize=8, loc="left")
    return RenderedFigure(
        save_figure(fig, path), {"captions": captions, "crops": crops_shown, "low_crops": low_shown, "missing": missing}
    )
