"""What single features encode: the correlation ratio of every feature with a labelled factor of the data.

Q-Score (paper section 3.3) and FALCON (chapter 4) read single features: a
discriminative feature is one that activates strongly on few samples, a
feature group is named from its highly activating images. Both assume that
single features carry the factor of interest (the class), as the paper finds
for ImageNet encoders. Whether they do is measurable wherever the data
label more than the class (the embedded world labels the render domain and
the planted cue too): for a feature ``x`` and a factor ``g`` with levels ``k``,
the correlation ratio

    eta^2 = sum_k n_k (mean_k(x) - mean(x))^2 / sum_i (x_i - mean(x))^2

is the share of the feature's variance that the factor explains (one-way
ANOVA's between-group over total sum of squares; the R^2 of regressing ``x``
on the factor's one-hot code). 0: the feature ignores the factor; 1: it is a
function of it. Features are read on L2-normalised rows, as Q-Score reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FactorEncoding", "correlation_ratio", "factor_encoding"]


def correlation_ratio(features: np.ndarray, labels: np.ndarray | Sequence[int]) -> np.ndarray:
    """``eta^2`` of every feature (column) with a factor.

    Args:
        features: (N, r) values.
        labels: (N,) integer levels of the factor; negative levels (unknown) are left out.

    Returns:
        (r,) float64 in [0, 1]; 0 for a constant feature.

    Raises:
        ValueError: Mismatched lengths, or fewer than two samples with a known level.
    """
    x = np.asarray(features, dtype=np.float64)
    g = np.asarray(labels).astype(np.int64, copy=False)
    if x.ndim != 2 or g.shape != (x.shape[0],):
        raise ValueError(f"features must be (N, r) and labels (N,); got {x.shape} and {g.shape}")
    known = g >= 0
    x, g = x[known], g[known]
    if len(g) < 2:
        raise ValueError("a correlation ratio needs at least two samples with a known level")
    centred = x - x.mean(axis=0)
    total = (centred**2).sum(axis=0)
    _, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), x.shape[1]))
    np.add.at(sums, inverse, centred)
    between = ((sums**2) / counts[:, None]).sum(axis=0)
    out = np.zeros(x.shape[1])
    np.divide(between, total, out=out, where=total > 1e-12 * max(float(total.max()), 1e-300))
    return np.clip(out, 0.0, 1.0)


@dataclass
class FactorEncoding:
    """How strongly single features encode one factor.

    Attributes:
        factor: The factor's name.
        levels: Distinct known levels.
        best: Largest ``eta^2`` over features.
        median: Median ``eta^2`` over features.
        top_features: Feature ids by decreasing ``eta^2`` (at most 5).
        median_in: Median ``eta^2`` within named feature sets (e.g. Q-Score's discriminative features).
    """

    factor: str
    levels: int
    best: float
    median: float
    top_features: list[int]
    median_in: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"factor": self.factor, "levels": self.levels, "best": self.best, "median": self.median,
                "top_features": self.top_features, "median_in": self.median_in}


def factor_encoding(
    features: np.ndarray,
    factors: Mapping[str, np.ndarray | Sequence[int]],
    *,
    feature_sets: Mapping[str, np.ndarray | Sequence[int]] | None = None,
    normalize: bool = True,
) -> list[FactorEncoding]:
    """The correlation ratio of every feature with each factor, summarised.

    Args:
        features: (N, r) representations.
        factors: ``{name: (N,) levels}``, e.g. class, render domain, planted cue.
        feature_sets: ``{name: feature ids}`` whose median is reported too.
        normalize: L2-normalise rows first (as Q-Score does).

    Returns:
        One :class:`FactorEncoding` per factor, in the order given.
    """
    x = np.asarray(features, dtype=np.float64)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = []
    for name, labels in factors.items():
        eta = correlation_ratio(x, np.asarray(labels))
        order = np.argsort(-eta, kind="stable")
        inside = {}
        for set_name, ids in (feature_sets or {}).items():
            ids = np.asarray(ids, dtype=np.int64)
            if len(ids):
                inside[set_name] = float(np.median(eta[ids]))
        levels = np.asarray(labels)
        out.append(FactorEncoding(factor=name, levels=int(len(np.unique(levels[levels >= 0]))), best=float(eta.max()),
                                  median=float(np.median(eta)), top_features=[int(i) for i in order[:5]],
                                  median_in=inside))
    return out
