"""Compressing representations with discriminative features (seed Figures 3.2, A.5, A.7).

For each kept fraction ``f`` of the ``r`` features, a linear probe (the fixed
protocol of ``replens.evaluate``) is trained on the training split and scored
on the test split, using:

* **discriminative** features: a percentile band of ``A`` whose limits move
  together from ``(0, 100)`` (``f = 1``) towards the middle, in the proportion
  of the reference band (by default ``(50, 95)``, so ``f = 0.45`` gives exactly
  the default band): ``lower = (1 - f) * 100 * b`` and
  ``upper = 100 - (1 - f) * 100 * (1 - b)`` with ``b = L / (L + 100 - U)``
  (section 3.3.1: "gradually increase the lower limits and decrease the upper
  limits");
* **random** subsets of the same size, one per seed (4 seeds, mean and std);
* **PCA**: the same number of principal components of the training features;
* the **lower** and **upper tails** of ``A`` at the same size (Figure A.7).

All methods use the L2-normalised representations, like the rest of the
chapter's analysis; the probe standardises its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from replens.quality.qscore import DEFAULT_BAND, band_features, tail_features

__all__ = ["DEFAULT_FRACTIONS", "band_for_fraction", "compression_curve"]

DEFAULT_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9)


def band_for_fraction(fraction: float, reference: tuple[float, float] = DEFAULT_BAND) -> tuple[float, float]:
    """Percentile band keeping ``fraction`` of the features, shrunk in the reference band's proportions."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    lower, upper = reference
    removed = lower + (100.0 - upper)
    share = 0.5 if removed <= 0 else lower / removed
    cut = (1.0 - fraction) * 100.0
    return cut * share, 100.0 - cut * (1.0 - share)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def compression_curve(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    percentages: np.ndarray,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    reference_band: tuple[float, float] = DEFAULT_BAND,
    seeds: int = 4,
    weight_decay: float = 1e-4,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Probe accuracy (percent) of each feature-selection method at matched sizes.

    Args:
        train_features: (N, r) training representations (raw; normalised here).
        train_labels: (N,) class ids.
        test_features: (M, r) test representations.
        test_labels: (M,) class ids.
        percentages: (r,) ``A`` of the training split.
        fractions: Kept fractions of ``r``.
        reference_band: Band whose proportions the discriminative bands keep.
        seeds: Random subsets per size.
        weight_decay: Probe L2 penalty.
        device: Where probes are fitted.
        progress: Progress bar.

    Returns:
        ``{"full": acc, "points": [{"fraction", "size", "band", "discriminative",
        "random", "random_mean", "random_std", "pca", "lower_tail", "upper_tail"}]}``.
    """
    from sklearn.decomposition import PCA

    from replens.evaluate import fit_linear_probe

    train_x, test_x = _normalise(train_features), _normalise(test_features)
    train_y, test_y = np.asarray(train_labels), np.asarray(test_labels)
    dim = train_x.shape[1]
    if len(percentages) != dim:
        raise ValueError(f"{len(percentages)} activation percentages for {dim} features")

    def accuracy(make: Callable[[np.ndarray], np.ndarray]) -> float:
        probe = fit_linear_probe(make(train_x), train_y, weight_decay=weight_decay, device=device)
        return float(100.0 * (probe.predict(make(test_x)) == test_y).mean())

    def columns(sel: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        return lambda x: x[:, sel]

    points = []
    bar = tqdm(fractions, desc="compression", unit="size", disable=not progress)
    for fraction in bar:
        band = band_for_fraction(fraction, reference_band)
        disc = band_features(percentages, *band)
        size = len(disc)
        if size == 0:
            continue
        rng = np.random.default_rng(int(round(fraction * 1e6)))
        random = [accuracy(columns(np.sort(rng.choice(dim, size=size, replace=False)))) for _ in range(seeds)]
        n_components = min(size, train_x.shape[0], dim)
        pca = PCA(n_components=n_components, svd_solver="full").fit(train_x)
        points.append({
            "fraction": float(fraction),
            "size": int(size),
            "band": [float(band[0]), float(band[1])],
            "discriminative": accuracy(columns(disc)),
            "random": random,
            "random_mean": float(np.mean(random)),
            "random_std": float(np.std(random)),
            "pca": accuracy(lambda x, pca=pca: pca.transform(x).astype(np.float32)),
            "lower_tail": accuracy(columns(tail_features(percentages, size, "lower"))),
            "upper_tail": accuracy(columns(tail_features(percentages, size, "upper"))),
        })
    return {"full": accuracy(lambda x: x), "dim": dim, "points": points, "reference_band": list(reference_band),
            "seeds": seeds}
