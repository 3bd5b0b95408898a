"""Analyses of chapter 3 and appendix A over one encoder's representations.

* :func:`activation_bands`: the three parts of ``A`` in Figure 3.1 (lower
  tail, discriminative band, upper tail);
* :func:`highly_activating_matrix`: ``L_i`` of every row as a bool matrix
  (section 3.3), for in-memory analyses;
* :func:`class_activation_share`: for every feature, the percentage of each
  class's samples in which it is highly activating (the bars of Figure 3.1:
  discriminative features "activate more than 80% of particular classes");
* :func:`class_feature_means`: class-averaged normalised representations of
  correctly and wrongly classified samples on chosen features (Figures 3.3, A.3);
* :func:`prediction_confidence`: the linear probe's softmax confidence (Figure A.10);
* :func:`representation_sparsity`: how close to sparse the normalised
  representations are (appendix A.1, Figure A.1);
* :func:`assess_quality`: Q-Score of a training and a test split (``D`` from
  the training split, section 3.4.1), a linear probe fitted on the training
  split and its per-sample correctness and confidence on the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replens.evaluate import fit_linear_probe
from replens.quality.failure import FailureReport, failure_prediction
from replens.quality.qscore import (
    DEFAULT_BAND,
    DEFAULT_EPS,
    EmbeddingChunks,
    QScoreResult,
    band_features,
    qscore_embeddings,
)
from replens.quality.qscore import feature_order as _order
from replens.quality.regularizer import highly_activating_mask

__all__ = [
    "ProjectedRepresentation",
    "QualityAssessment",
    "activation_bands",
    "assess_quality",
    "class_activation_share",
    "class_feature_means",
    "highly_activating_matrix",
    "normalized",
    "prediction_confidence",
    "representation_sparsity",
]


def normalized(features: np.ndarray) -> np.ndarray:
    """Row-wise L2-normalised float32 copy (the chapter's convention; zero rows stay zero)."""
    x = np.asarray(features, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def activation_bands(percentages: np.ndarray, band: tuple[float, float] = DEFAULT_BAND) -> dict[str, np.ndarray]:
    """Split the features by the percentile rank of ``A_j`` (Figure 3.1).

    Args:
        percentages: (r,) activation percentages ``A``.
        band: ``(lower, upper)`` percentiles of the discriminative band.

    Returns:
        ``{"lower": ..., "discriminative": ..., "upper": ...}`` sorted feature
        indices: the band is exactly :func:`~replens.quality.qscore.band_features`,
        the tails are the features ranked below and above it. The three sets
        partition ``range(r)``.
    """
    percentages = np.asarray(percentages)
    order = _order(percentages)
    disc = band_features(percentages, *band)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    if len(disc):
        lo, hi = int(rank[disc].min()), int(rank[disc].max())
        lower, upper = order[:lo], order[hi + 1 :]
    else:  # an empty band: split the ranks at the band's lower percentile
        cut = int(np.ceil(band[0] * len(order) / 100.0 - 1e-9))
        lower, upper = order[:cut], order[cut:]
    return {"lower": np.sort(lower).astype(np.int64), "discriminative": disc,
            "upper": np.sort(upper).astype(np.int64)}


def highly_activating_matrix(features: np.ndarray, eps: float = DEFAULT_EPS) -> np.ndarray:
    """``L_i`` of every row as an (N, r) bool matrix: ``h_ij > mu_i + eps sigma_i`` on normalised rows.

    The same rule as :func:`replens.quality.regularizer.highly_activating_mask`
    (population std), in numpy.
    """
    return highly_activating_mask(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)), eps).numpy()


def class_activation_share(features: np.ndarray, labels: np.ndarray, eps: float = DEFAULT_EPS,
                           num_classes: int | None = None) -> np.ndarray:
    """Percentage of each class's samples in which each feature is highly activating.

    Args:
        features: (N, r) raw representations.
        labels: (N,) class ids (negative ids are ignored).
        eps: ``epsilon`` of ``L_i``.
        num_classes: Number of classes (default ``max(labels) + 1``).

    Returns:
        (r, C) float64: ``100 * #{i in class c : j in L_i} / #{i in class c}``
        (0 for an empty class).
    """
    labels = np.asarray(labels, dtype=np.int64)
    keep = labels >= 0
    active = highly_activating_matrix(np.asarray(features)[keep], eps)
    labels = labels[keep]
    c = int(num_classes if num_classes is not None else (labels.max() + 1 if len(labels) else 0))
    onehot = np.zeros((len(labels), c), dtype=np.float64)
    onehot[np.arange(len(labels)), labels] = 1.0
    counts = onehot.sum(axis=0)
    hits = active.T.astype(np.float64) @ onehot
    return np.divide(100.0 * hits, counts[None, :], out=np.zeros_like(hits), where=counts[None, :] > 0)


def class_feature_means(features: np.ndarray, labels: np.ndarray, correct: np.ndarray,
                        feature_ids: Sequence[int] | np.ndarray, classes: Sequence[int]) -> dict[str, np.ndarray]:
    """Class-averaged normalised representations on ``feature_ids``, split by probe correctness (Figure 3.3).

    Args:
        features: (N, r) raw representations.
        labels: (N,) class ids.
        correct: (N,) whether the probe classified each sample correctly.
        feature_ids: The features shown (columns).
        classes: The classes shown (rows).

    Returns:
        ``{"correct": (C, k), "misclassified": (C, k), "n_correct": (C,), "n_misclassified": (C,)}``;
        a class without samples of one outcome has a row of NaN there.
    """
    h = normalized(features)[:, np.asarray(feature_ids, dtype=np.int64)]
    labels, correct = np.asarray(labels), np.asarray(correct, dtype=bool)
    out: dict[str, list] = {"correct": [], "misclassified": [], "n_correct": [], "n_misclassified": []}
    for c in classes:
        for key, sel in (("correct", (labels == c) & correct), ("misclassified", (labels == c) & ~correct)):
            out[key].append(h[sel].mean(axis=0) if sel.any() else np.full(h.shape[1], np.nan))
            out[f"n_{key}"].append(int(sel.sum()))
    return {k: np.asarray(v) for k, v in out.items()}


def prediction_confidence(probe: Any, features: np.ndarray, batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and softmax confidence (the largest class probability) of a linear probe.

    Returns:
        ``(predictions (N,), confidence (N,) float64)``.
    """
    preds, conf = [], []
    for lo in range(0, len(features), batch):
        prob = torch.softmax(probe.logits(features[lo : lo + batch]), dim=1)
        p, k = prob.max(dim=1)
        preds.append(probe.classes[k.cpu().numpy()])
        conf.append(p.cpu().numpy())
    if not preds:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(preds), np.concatenate(conf).astype(np.float64)


def representation_sparsity(features: np.ndarray, eps: float = DEFAULT_EPS, tol: float = 0.05) -> dict[str, float]:
    """How nearly sparse the normalised representations are (appendix A.1).

    Args:
        features: (N, r) raw representations.
        eps: ``epsilon`` of ``L_i``.
        tol: An entry is near zero when ``|h_ij| <= tol * max_j |h_ij|`` (per row).

    Returns:
        ``near_zero_pct`` (entries near zero, %), ``exact_zero_pct`` (entries == 0, %),
        ``mean_highly`` (mean ``|L_i|``), ``highly_pct`` (mean ``|L_i| / r``, %) and
        ``kurtosis`` (excess kurtosis of all normalised entries; large for sparse, heavy-tailed rows).
    """
    h = normalized(features).astype(np.float64)
    peak = np.abs(h).max(axis=1, keepdims=True)
    near = np.abs(h) <= tol * np.maximum(peak, 1e-12)
    active = highly_activating_matrix(h.astype(np.float32), eps)
    flat = h.ravel()
    sd = flat.std()
    kurt = float(((flat - flat.mean()) ** 4).mean() / sd**4 - 3.0) if sd > 0 else float("nan")
    return {
        "near_zero_pct": float(100 * near.mean()),
        "exact_zero_pct": float(100 * (h == 0).mean()),
        "mean_highly": float(active.sum(axis=1).mean()),
        "highly_pct": float(100 * active.mean()),
        "kurtosis": kurt,
    }


@dataclass
class QualityAssessment:
    """Q-Score and linear-probe outcome of one encoder (sections 3.3-3.4).

    Attributes:
        train: Q-Score result of the training split (defines ``D``).
        test: Q-Score result of the test split, scored with the training split's ``D``.
        train_chunks: The training embeddings.
        test_chunks: The test embeddings.
        probe: Linear probe fitted on ``fit_rows`` of the training split.
        fit_rows: Training rows the probe saw.
        predictions: (M,) probe predictions on the test split.
        correct: (M,) whether each test prediction is right.
        confidence: (M,) softmax confidence of each test prediction.
        report: Q-Score as a predictor of ``correct`` (AUROC, AUPRC, curves).
    """

    train: QScoreResult
    test: QScoreResult
    train_chunks: EmbeddingChunks
    test_chunks: EmbeddingChunks
    probe: Any
    fit_rows: np.ndarray
    predictions: np.ndarray
    correct: np.ndarray
    confidence: np.ndarray
    report: FailureReport

    @property
    def discriminative(self) -> np.ndarray:
        """``D`` (from the training split)."""
        return self.train.discriminative

    def test_features(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(M, r) raw test representations (``rows`` of them when given)."""
        rows = np.arange(len(self.test_chunks)) if rows is None else np.asarray(rows)
        return self.test_chunks.rows(rows)

    def summary(self) -> dict[str, Any]:
        """Numbers of the assessment, percentages in percent."""
        return {
            "top1": float(100 * self.correct.mean()) if len(self.correct) else float("nan"),
            "auroc": float(100 * self.report.auroc),
            "auprc": float(100 * self.report.auprc),
            "auprc_chance": float(100 * self.report.correct_rate),
            "mean_highly": float(self.test.n_highly.mean()),
            "mean_confidence": float(self.confidence.mean()) if len(self.confidence) else float("nan"),
            "mean_qscore": float(self.test.scores.mean()),
            "discriminative_features": int(len(self.discriminative)),
            "dim": int(self.train.dim),
            "test_samples": int(len(self.correct)),
            "without_discriminative": int((self.test.n_discriminative == 0).sum()),
        }


def assess_quality(
    train_dir: str | Path,
    test_dir: str | Path,
    *,
    eps: float = DEFAULT_EPS,
    band: tuple[float, float] = DEFAULT_BAND,
    probe_samples: int = 50_000,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str = "cpu",
    spill_dir: str | Path | None = None,
) -> QualityAssessment:
    """Q-Score both splits, fit the linear probe on the training split and judge the test split.

    Args:
        train_dir: ``replens embed`` folder of the training split (defines ``D``).
        test_dir: ``replens embed`` folder of the test split.
        eps: ``epsilon`` of ``L_i`` (4 for r = 2048; about 2 suits r = 64-256).
        band: Percentile band of ``D``.
        probe_samples: Largest number of training rows the probe is fitted on (seeded subset).
        weight_decay: Probe L2 penalty.
        seed: Seed of the subset.
        device: Where the probe is fitted.
        spill_dir: Folder for Q-Score's temporary spill.

    Raises:
        ValueError: Unlabelled samples, or splits of different widths.
    """
    train, train_chunks = qscore_embeddings(train_dir, eps=eps, band=band, spill_dir=spill_dir)
    test, test_chunks = qscore_embeddings(test_dir, eps=eps, discriminative=train.discriminative, spill_dir=spill_dir)
    if train_chunks.dim != test_chunks.dim:
        raise ValueError(f"{train_dir} has {train_chunks.dim} features but {test_dir} has {test_chunks.dim}")
    for chunks in (train_chunks, test_chunks):
        if (chunks.labels < 0).any():
            raise ValueError(f"{chunks.path}: {int((chunks.labels < 0).sum())} samples have no label")
    rng = np.random.default_rng(seed)
    fit_rows = np.arange(len(train_chunks))
    if len(fit_rows) > probe_samples:
        fit_rows = np.sort(rng.choice(fit_rows, size=probe_samples, replace=False))
    probe = fit_linear_probe(train_chunks.rows(fit_rows), train_chunks.labels[fit_rows],
                             weight_decay=weight_decay, device=device)
    preds, conf = [], []
    for lo in range(0, len(test_chunks), 8192):
        p, c = prediction_confidence(probe, test_chunks.rows(np.arange(lo, min(lo + 8192, len(test_chunks)))))
        preds.append(p)
        conf.append(c)
    predictions = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    confidence = np.concatenate(conf) if conf else np.zeros(0)
    correct = predictions == test_chunks.labels
    report = failure_prediction(test.scores, correct)
    return QualityAssessment(train, test, train_chunks, test_chunks, probe, fit_rows, predictions, correct,
                             confidence, report)


class ProjectedRepresentation(torch.nn.Module):
    """A backbone whose output is the projection of its L2-normalised representation on given directions.

    Grad-CAM of a principal component (appendix A.4, Figure A.6) is Grad-CAM of
    one output of this module: ``(h / ||h|| - mean) @ components.T``. It keeps
    the backbone interface Grad-CAM helpers use (``preprocess``, ``layer_names``,
    ``layer_root``, ``find_layer``).

    Args:
        backbone: A :class:`~replens.models.Backbone`.
        mean: (r,) centre (e.g. ``PCA.mean_``).
        components: (k, r) directions (e.g. ``PCA.components_``).

    Shape:
        - Input: (B, 3, H, W) normalised images
        - Output: (B, k)
    """

    def __init__(self, backbone: Any, mean: np.ndarray, components: np.ndarray) -> None:
        super().__init__()
        self.backbone = backbone
        self.name = f"{getattr(backbone, 'name', 'backbone')}:projected"
        self.num_prefix_tokens = int(getattr(backbone, "num_prefix_tokens", 0))
        self.register_buffer("centre", torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.register_buffer("directions", torch.as_tensor(np.asarray(components), dtype=torch.float32))
        self.feature_dim = int(self.directions.shape[0])

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.preprocess(images)

    def layer_names(self) -> list[str]:
        return self.backbone.layer_names()

    def layer_root(self) -> torch.nn.Module:
        return self.backbone.layer_root()

    def find_layer(self, name: str | None = None) -> tuple[str, torch.nn.Module]:
        """The backbone's :meth:`~replens.models.Backbone.find_layer`."""
        return self.backbone.find_layer(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.normalize(self.backbone(x).float(), dim=1)
        return (h - self.centre) @ self.directions.T
