"""The HTML report of ``replens audit`` and its figures.

``write_report(summary, folder)`` turns the audit's summary dict into
``folder/index.html`` (offline, self-contained), ``folder/figures/*.png`` and
``folder/summary.json``. Only ``overview`` is required; every other section
renders "not run" when absent. Percentages are in percent (0 to 100); image
paths are relative to the report folder::

    summary = {
      "title": "replens audit", "created": "2026-11-27T06:00:00Z", "seconds": 412.3, "replens_version": "0.1.0",
      "overview": {"world": "runs/cache/world-abc", "encoder": "small_cnn", "method": "simclr",
                   "plugins": ["ddm", "fda"], "train_samples": 4800, "test_samples": 1200, "steps": 280,
                   "final_loss": 4.1, "images_per_s": 300.0, "linear_top1": 41.2, "random_linear_top1": 13.0,
                   "auroc": 66.0, "headline": "one sentence"},
      "accuracy": {"domains": ["photo", ...],
                   "rows": [{"encoder": "SSL (simclr+ddm+fda)", "probe": "linear", "all": 41.2,
                             "per_domain": {"photo": 50.1, ...}}, ...]},
      "qscore": {"eps": 2.0, "n": 1200, "auroc": 66.0, "auprc": 89.0,
                 "correct": [Q-Scores of correctly classified samples], "wrong": [...],
                 "roc": {"fpr": [...], "tpr": [...]}, "pr": {"recall": [...], "precision": [...]},
                 "rankme": 28.5, "alpha_req": 1.9},
      "failures": [{"index": 17, "image": "assets/failure-17.png", "label": "star", "predicted": "circle",
                    "qscore": 0.12, "domain": "sketch", "explanation": "...", "concepts": ["sketch", ...]}, ...],
      "groups": [{"id": 0, "features": [3, 17, 40], "concepts": ["red", "star"], "score": 0.31,
                  "crops": ["assets/group-0-crop-0.png", ...], "low_crops": [...]}, ...],
      "compression": {"k": [1, 2, 4, ...], "curves": {"discriminative": [...], "random": [...], "pca": [...]},
                      "full": 41.2},
      "config": {...the resolved audit config...},
    }

When ``qscore`` lacks ``roc`` / ``pr`` the curves are computed from ``correct``
and ``wrong``.
"""

from replens.report.figures import (
    RenderedFigure,
    accuracy_figure,
    compression_figure,
    failure_gallery_figure,
    failure_report,
    group_grid_figure,
    pr_figure,
    qscore_histogram_figure,
    roc_figure,
)
from replens.report.html import SECTIONS, render_html, write_report

__all__ = [
    "SECTIONS",
    "RenderedFigure",
    "accuracy_figure",
    "compression_figure",
    "failure_gallery_figure",
    "failure_report",
    "group_grid_figure",
    "pr_figure",
    "qscore_histogram_figure",
    "render_html",
    "roc_figure",
    "write_report",
]
