"""Plots of chapter 3 with matplotlib's object API on the Agg canvas (no pyplot, no global backend).

Every file is written atomically (``replens.runs.atomic_write``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from replens.quality.failure import FailureReport
from replens.quality.qscore import QScoreResult, feature_order
from replens.runs import atomic_write

__all__ = ["plot_activation_percentages", "plot_compression", "plot_pr", "plot_roc"]


def _figure(width: float = 6.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _legend_or_note(ax: Any, loc: str) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc)
    else:  # every sample correct (or none): the curves are undefined
        ax.text(0.5, 0.5, "undefined: only one outcome", ha="center", va="center", transform=ax.transAxes)


def plot_activation_percentages(result: QScoreResult, path: str | Path, title: str = "") -> Path:
    """``A_j`` in ascending order with the discriminative band shaded (Figure 3.1, top)."""
    fig = _figure()
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
    return _save(fig, path)


def plot_roc(reports: dict[str, FailureReport], path: str | Path) -> Path:
    """ROC curves of Q-Score predicting correct classification (Figure 3.4)."""
    fig = _figure(5.0, 4.5)
    ax = fig.add_subplot()
    for name, report in reports.items():
        if report.roc:
            ax.plot(report.roc["fpr"], report.roc["tpr"], label=f"{name} (AUROC {100 * report.auroc:.2f})")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Q-Score: correct vs mis-classified (ROC)")
    _legend_or_note(ax, "lower right")
    return _save(fig, path)


def plot_pr(reports: dict[str, FailureReport], path: str | Path) -> Path:
    """Precision-recall curves, correct samples positive (Figure 3.4)."""
    fig = _figure(5.0, 4.5)
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
    return _save(fig, path)


def plot_compression(curve: dict[str, Any], path: str | Path) -> Path:
    """Probe accuracy vs kept features for every selection method (Figures 3.2, A.5, A.7)."""
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot()
    points = curve["points"]
    sizes = np.array([p["size"] for p in points])
    ax.plot(sizes, [p["discriminative"] for p in points], "o-", label="discriminative (A band)", linewidth=2)
    mean = np.array([p["random_mean"] for p in points])
    std = np.array([p["random_std"] for p in points])
    ax.errorbar(sizes, mean, yerr=std, fmt="s--", capsize=3, label=f"random ({curve['seeds']} seeds)")
    ax.plot(sizes, [p["pca"] for p in points], "^-", label="PCA")
    ax.plot(sizes, [p["lower_tail"] for p in points], "v:", label="lower tail of A")
    ax.plot(sizes, [p["upper_tail"] for p in points], "d:", label="upper tail of A")
    ax.axhline(curve["full"], color="0.4", linestyle="--", linewidth=1, label=f"all {curve['dim']} features")
    ax.set_xlabel("features kept")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.set_title("Compression with discriminative features")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
