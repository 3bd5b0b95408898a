"""Q-Score as a zero-shot predictor of linear-probe failures (paper section 3.4, Figure 3.4).

A linear probe (``replens.evaluate.fit_linear_probe``, the fixed protocol) is
fitted on a training split; each test sample is *correct* or *mis-classified*.
The Q-Score is then scored as a predictor of correctness with scikit-learn:

* ``auroc``: ``roc_auc_score(correct, Q)``;
* ``auprc``: ``average_precision_score(correct, Q)``: correct samples are
  the positive class, as in the paper (its AUPRC of up to 91 reflects probes
  that are right on most samples; ``correct_rate`` is the chance level);
* ``auprc_failure``: ``average_precision_score(1 - correct, -Q)``, the same
  question from the side of the failures (chance level ``1 - correct_rate``).

Without labels, :func:`rank_failures` lists the samples by ascending Q-Score,
the most likely failures first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from replens.evaluate import fit_linear_probe

__all__ = ["FailureReport", "failure_prediction", "probe_correctness", "rank_failures"]


@dataclass
class FailureReport:
    """Scores of the Q-Score as a predictor of probe correctness.

    Attributes:
        auroc: Area under the ROC curve (NaN when only one outcome occurs).
        auprc: Average precision with correct samples as positives.
        auprc_failure: Average precision with mis-classified samples as positives (score ``-Q``).
        correct_rate: Fraction of correct samples (the chance level of ``auprc``).
        count: Samples scored.
        roc: ``{"fpr", "tpr"}`` arrays.
        pr: ``{"precision", "recall"}`` arrays (correct = positive).
    """

    auroc: float
    auprc: float
    auprc_failure: float
    correct_rate: float
    count: int
    roc: dict[str, np.ndarray] = field(default_factory=dict)
    pr: dict[str, np.ndarray] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "auroc": self.auroc,
            "auprc": self.auprc,
            "auprc_failure": self.auprc_failure,
            "correct_rate": self.correct_rate,
            "count": self.count,
        }


def probe_correctness(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    weight_decay: float = 1e-4,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Fit the linear probe on the training split; per-sample correctness on the test split.

    Returns:
        ``(correct bool (M,), predictions (M,))``. Test samples with label < 0
        count as mis-classified only if you keep them; filter them first.
    """
    probe = fit_linear_probe(train_features, train_labels, weight_decay=weight_decay, device=device)
    predictions = probe.predict(test_features)
    return predictions == np.asarray(test_labels), predictions


def failure_prediction(scores: np.ndarray, correct: np.ndarray) -> FailureReport:
    """AUROC / AUPRC of ``scores`` (Q-Scores) as a predictor of ``correct``.

    Raises:
        ValueError: Lengths differ, or the scores hold NaN (rows named).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if scores.shape != correct.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and correctness {correct.shape} must be equal-length vectors")
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise ValueError(f"non-finite Q-Scores in rows {bad[:10].tolist()}")
    if len(scores) == 0:
        raise ValueError("no samples to score")
    rate = float(correct.mean())
    if correct.all() or not correct.any():  # one outcome only: ranking metrics undefined
        nan = float("nan")
        return FailureReport(nan, rate, 1.0 - rate, rate, len(scores))
    fpr, tpr, _ = roc_curve(correct, scores)
    precision, recall, _ = precision_recall_curve(correct, scores)
    return FailureReport(
        auroc=float(roc_auc_score(correct, scores)),
        auprc=float(average_precision_score(correct, scores)),
        auprc_failure=float(average_precision_score(~correct, -scores)),
        correct_rate=rate,
        count=int(len(scores)),
        roc={"fpr": fpr, "tpr": tpr},
        pr={"precision": precision, "recall": recall},
    )


def rank_failures(scores: np.ndarray, names: list[str] | None = None, top: int | None = None) -> list[dict[str, Any]]:
    """Samples by ascending Q-Score (most likely failures first; ties by row).

    Returns:
        ``[{"rank", "row", "name", "qscore"}, ...]`` (``top`` entries, default all).
    """
    scores = np.asarray(scores)
    order = np.argsort(scores, kind="stable")
    if top is not None:
        order = order[:top]
    return [
        {"rank": k + 1, "row": int(i), "name": names[i] if names is not None else str(i), "qscore": float(scores[i])}
        for k, i in enumerate(order)
    ]
