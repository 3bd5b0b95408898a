"""Plots of chapter 3 with matplotlib's object API on the Agg canvas (no pyplot, no global backend).

Every file is written atomically (``replens.runs.atomic_write``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from replens.plotting import new_figure, save_figure
from replens.quality.compression import check_series, compression_series
from replens.quality.failure import FailureReport
from replens.quality.qscore import QScoreResult, feature_order

__all__ = [
    "cam_overlay",
    "plot_activation_bands",
    "plot_activation_percentages",
    "plot_cam_grid",
    "plot_class_heatmaps",
    "draw_compression",
    "plot_compression",
    "plot_grouped_bars",
    "plot_pr",
    "plot_representation_overview",
    "plot_roc",
]


def _legend_or_note(ax: Any, loc: str) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc)
    else:  # every sample correct (or none): the curves are undefined
        ax.text(0.5, 0.5, "undefined: only one outcome", ha="center", va="center", transform=ax.transAxes)


def plot_activation_percentages(result: QScoreResult, path: str | Path, title: str = "") -> Path:
    """``A_j`` in ascending order with the discriminative band shaded (Figure 3.1, top)."""
    fig = new_figure()
    ax = fig.add_subplot()
    order = feature_order(result.percentages)
    values = result.percentages[order]
    is_disc = np.isin(order, result.discriminative)
    x = np.arange(len(values))
    ax.bar(x[~is_disc], values[~is_disc], width=1.0, color="0.7", label="non-discriminative")
    ax.bar(x[is_disc], values[is_disc], width=1.0, color="tab:blue", label="discriminative")
    ax.set_xlabel("features, ascending A_j")
    ax.set_ylabel("highly activating samples A_j (%)")
    ax.set_title(title or f"eps = {result.eps:g}, |D| = {len(result.discriminative)} of {result.dim}")
    ax.legend(loc="upper left")
    return save_figure(fig, path)


def plot_roc(reports: dict[str, FailureReport], path: str | Path) -> Path:
    """ROC curves of Q-Score predicting correct classification (Figure 3.4)."""
    fig = new_figure(5.0, 4.5)
    ax = fig.add_subplot()
    for name, report in reports.items():
        if report.roc:
            ax.plot(report.roc["fpr"], report.roc["tpr"], label=f"{name} (AUROC {100 * report.auroc:.2f})")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Q-Score: correct vs mis-classified (ROC)")
    _legend_or_note(ax, "lower right")
    return save_figure(fig, path)


def plot_pr(reports: dict[str, FailureReport], path: str | Path) -> Path:
    """Precision-recall curves, correct samples positive (Figure 3.4)."""
    fig = new_figure(5.0, 4.5)
    ax = fig.add_subplot()
    for name, report in reports.items():
        if report.pr:
            ax.plot(report.pr["recall"], report.pr["precision"], label=f"{name} (AUPRC {100 * report.auprc:.2f})")
            ax.axhline(report.correct_rate, color="0.6", linestyle="--", linewidth=1)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.set_title("Q-Score: correct vs mis-classified (PR)")
    _legend_or_note(ax, "lower left")
    return save_figure(fig, path)


def plot_compression(curve: Mapping[str, Any], path: str | Path) -> Path:
    """Probe accuracy vs kept features for every selection method (Figures 3.2, A.5, A.7).

    The one compression plot (the audit report's figure too, see :func:`draw_compression`).

    Args:
        curve: A :func:`~replens.quality.compression_curve` result (every selection, the random
            subsets' std as error bars) or a :func:`~replens.quality.compression.compression_series`.
        path: The PNG to write.
    """
    series = compression_series(curve, spread=True) if "points" in curve else curve
    return draw_compression(series, path)[0]


def draw_compression(series: Mapping[str, Any], path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Draw a compression series: one line per selection, the full representation dashed.

    The x axis is log2 when the sizes span more than a factor 8; a selection
    with a ``std`` entry gets error bars.

    Returns:
        ``(path, values)``; ``values = {"k": [...], "curves": {selection: [...]}, "full": value}``
        read back from the drawn lines.

    Raises:
        ValueError: See :func:`~replens.quality.compression.check_series`.
    """
    k, curves, spread, full = check_series(series)
    fig = new_figure(6.5, 4.5)
    ax = fig.add_subplot()
    markers = "os^vdP*X"
    drawn: dict[str, list[float]] = {}
    for j, (selection, y) in enumerate(curves.items()):
        label = _COMPRESSION_LABELS.get(selection, selection).replace("$", r"\$")
        style = {"marker": markers[j % len(markers)], "label": label, "linewidth": 2 if j == 0 else 1.5}
        if selection in spread:
            container = ax.errorbar(k, y, yerr=spread[selection], capsize=3, **style)
            line = container.lines[0]
        else:
            (line,) = ax.plot(k, y, **style)
        drawn[selection] = [float(v) for v in line.get_ydata()]
    if not math.isnan(full):
        ax.axhline(full, color="0.35", linestyle="--", linewidth=1, label=f"full representation ({full:.1f})")
    finite_k = k[np.isfinite(k)]
    if len(finite_k) and finite_k.min() > 0 and finite_k.max() / finite_k.min() > 8:
        ax.set_xscale("log", base=2)
        if len(finite_k) <= 12:
            ax.set_xticks(finite_k, [f"{v:g}" for v in finite_k])
            ax.minorticks_off()
    ax.set_xlabel("features kept (k)")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.set_title("Compression: accuracy vs number of features")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    if not drawn:
        ax.text(0.5, 0.5, "no curves", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path), {"k": k.tolist(), "curves": drawn, "full": full}


_COMPRESSION_LABELS = {
    "discriminative": "discriminative (A band)",
    "random": "random subsets",
    "pca": "PCA",
    "lower_tail": "lower tail of A",
    "upper_tail": "upper tail of A",
}


_BAND_COLOURS = {"lower": "tab:orange", "discriminative": "tab:blue", "upper": "tab:red"}


def plot_activation_bands(
    percentages: np.ndarray,
    bands: dict[str, np.ndarray],
    path: str | Path,
    *,
    class_share: dict[int, np.ndarray] | None = None,
    class_names: list[str] | None = None,
    title: str = "",
) -> Path:
    """``A_j`` in ascending order with its lower tail, discriminative band and upper tail (Figure 3.1).

    Args:
        percentages: (r,) ``A``.
        bands: :func:`~replens.quality.analysis.activation_bands` output.
        path: PNG file.
        class_share: Optional ``{feature: (C,) % of each class's samples activating it}`` for example
            features, drawn as bar plots under the curve (the bars of Figure 3.1).
        class_names: Names of the classes in ``class_share``.
        title: Figure title.
    """
    examples = dict(class_share or {})
    fig = new_figure(7.0, 4.0 if not examples else 6.5)
    grid = fig.add_gridspec(2 if examples else 1, max(1, len(examples)), height_ratios=[1.6, 1] if examples else [1])
    ax = fig.add_subplot(grid[0, :])
    order = feature_order(percentages)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    values = np.asarray(percentages)[order]
    for name, feats in bands.items():
        if len(feats):
            ax.bar(rank[feats], values[rank[feats]], width=1.0, color=_BAND_COLOURS.get(name, "0.6"),
                   label=f"{name} ({len(feats)})")
    for name, feats in bands.items():
        if name == "discriminative" and len(feats):
            ax.axvline(rank[feats].min() - 0.5, color="0.3", linestyle="--", linewidth=1)
            ax.axvline(rank[feats].max() + 0.5, color="0.3", linestyle="--", linewidth=1)
    for feature in examples:
        ax.annotate(str(feature), (rank[feature], values[rank[feature]]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlabel("features, ascending A_j")
    ax.set_ylabel("highly activating samples A_j (%)")
    ax.set_title(title or f"{len(order)} features")
    ax.legend(loc="upper left", fontsize=8)
    for k, (feature, share) in enumerate(examples.items()):
        sub = fig.add_subplot(grid[1, k])
        which = next((n for n, f in bands.items() if feature in set(np.asarray(f).tolist())), "")
        sub.bar(np.arange(len(share)), share, color=_BAND_COLOURS.get(which, "0.6"))
        sub.set_ylim(0, 100)
        sub.set_title(f"feature {feature} ({which})", fontsize=8)
        sub.set_xticks(np.arange(len(share)))
        sub.set_xticklabels(class_names or [str(c) for c in range(len(share))], rotation=90, fontsize=6)
        if k == 0:
            sub.set_ylabel("% of class", fontsize=8)
    return save_figure(fig, path)


def plot_class_heatmaps(
    panels: dict[str, dict[str, np.ndarray]],
    path: str | Path,
    *,
    feature_ids: np.ndarray | None = None,
    class_names: list[str] | None = None,
) -> Path:
    """Class-averaged discriminative features, correct (left) vs mis-classified (right) (Figures 3.3, A.3).

    Args:
        panels: ``{"baseline": class_feature_means(...), "Q-Score": ...}``: one row of two heatmaps each
            (classes without samples of an outcome are grey).
        path: PNG file.
        feature_ids: The features of the columns (axis label).
        class_names: Row labels.
    """
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="0.85")  # grey: no sample of that outcome in the class
    fig = new_figure(8.0, 2.6 * len(panels) + 0.6)
    vmax = max(float(np.nanmax(np.r_[p["correct"].ravel(), p["misclassified"].ravel(), 1e-9]))
               for p in panels.values())
    image = None
    for r, (name, panel) in enumerate(panels.items()):
        for c, key in enumerate(("correct", "misclassified")):
            ax = fig.add_subplot(len(panels), 2, 2 * r + c + 1)
            image = ax.imshow(np.ma.masked_invalid(panel[key]), aspect="auto", cmap=cmap, vmin=0, vmax=vmax)
            ax.set_title(f"{name}: {key}", fontsize=9)
            names = class_names or [str(k) for k in range(panel[key].shape[0])]
            ax.set_yticks(np.arange(len(names)))
            ax.set_yticklabels(names if c == 0 else [], fontsize=7)
            ax.set_xlabel(f"discriminative features ({panel[key].shape[1]})" if feature_ids is None
                          else f"{len(feature_ids)} discriminative features", fontsize=8)
            ax.set_xticks([])
    if image is not None:
        fig.colorbar(image, ax=fig.axes, shrink=0.8, label="mean normalised activation")
    return save_figure(fig, path, tight=False)


def cam_overlay(image: np.ndarray, cam: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """A heatmap over an image with pytorch-grad-cam's ``show_cam_on_image`` (uint8 (H, W, 3)).

    Args:
        image: (3, H, W) or (H, W, 3) uint8 image.
        cam: (H, W) heatmap in [0, 1].
        weight: Share of the image in the blend.
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    return show_cam_on_image(img.astype(np.float32) / 255.0, np.clip(cam, 0, 1).astype(np.float32),
                             use_rgb=True, image_weight=weight)


def plot_cam_grid(
    rows: list[dict[str, Any]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """A grid of images and Grad-CAM overlays (Figures 3.5, 3.6, A.2, A.6, A.11-A.14).

    Args:
        rows: One dict per grid row: ``{"label": str, "panels": [(title, image (H, W, 3) uint8), ...]}``;
            overlays come from :func:`cam_overlay`, masks can be drawn as images.
        path: PNG file.
        title: Figure title.
    """
    n_cols = max((len(r["panels"]) for r in rows), default=1)
    fig = new_figure(1.6 * n_cols + 1.2, 1.7 * max(1, len(rows)) + 0.4)
    for r, row in enumerate(rows):
        for c, (name, img) in enumerate(row["panels"]):
            ax = fig.add_subplot(max(1, len(rows)), n_cols, r * n_cols + c + 1)
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name, fontsize=6)
            if c == 0:
                ax.set_ylabel(row["label"], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_grouped_bars(
    groups: list[str],
    series: dict[str, list[float]],
    path: str | Path,
    *,
    ylabel: str = "",
    title: str = "",
    panels: dict[str, dict[str, list[float]]] | None = None,
) -> Path:
    """Grouped bar chart: one group per entry of ``groups``, one bar per series (Figures 3.7, A.8, A.10).

    Args:
        groups: Group labels (x-axis).
        series: ``{series name: one value per group}``.
        path: PNG file.
        ylabel: Y-axis label.
        title: Title.
        panels: Extra side-by-side panels ``{panel title: series}`` sharing ``groups``
            (the first panel is ``series`` with ``title``).
    """
    all_panels = {title or "": series, **(panels or {})}
    fig = new_figure(4.2 * len(all_panels) + 0.5, 3.8)
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(all_panels.items()):
        ax = fig.add_subplot(1, len(all_panels), k + 1)
        width = 0.8 / max(1, len(values))
        for s, (label, ys) in enumerate(values.items()):
            ax.bar(x + (s - (len(values) - 1) / 2) * width, np.nan_to_num(np.asarray(ys, dtype=float)), width,
                   label=label)
        ax.set_xticks(x)
        ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
        ax.set_title(name, fontsize=9)
        if k == 0 and ylabel:
            ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_representation_overview(features: dict[str, np.ndarray], path: str | Path, *, rows: int = 32) -> Path:
    """Heatmap of normalised representations of the first model, and the value distribution per model (Figure A.1).

    Args:
        features: ``{model: (N, r) raw representations}``.
        path: PNG file.
        rows: Samples shown in the heatmap.
    """
    fig = new_figure(9.0, 6.0)
    names = list(features)
    first = np.asarray(features[names[0]], dtype=np.float32)
    h = first / np.maximum(np.linalg.norm(first, axis=1, keepdims=True), 1e-12)
    ax = fig.add_subplot(2, 1, 1)
    image = ax.imshow(h[:rows], aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_title(f"{names[0]}: {min(rows, len(h))} representations x {h.shape[1]} features (L2-normalised)",
                 fontsize=9)
    ax.set_xlabel("feature")
    ax.set_ylabel("sample")
    fig.colorbar(image, ax=ax)
    ax2 = fig.add_subplot(2, 2, 3)
    ax3 = fig.add_subplot(2, 2, 4)
    for name in names:
        x = np.asarray(features[name], dtype=np.float32)
        x = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).ravel()
        ax2.hist(x, bins=80, histtype="step", label=name, density=True)
        ax3.hist(x[x > np.quantile(x, 0.95)], bins=40, histtype="step", label=name, density=True)
    ax2.set_yscale("log")
    ax2.set_title("feature values (all)", fontsize=9)
    ax3.set_title("feature values (top 5%, zoomed)", fontsize=9)
    ax2.legend(fontsize=7)
    return save_figure(fig, path)
