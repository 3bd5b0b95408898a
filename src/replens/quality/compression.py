"""Compressing representations with discriminative features (paper Figures 3.2, A.5, A.7).

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

One schema: :func:`compression_curve` returns the curve (one record per kept
size, ``metrics.json``'s ``compression``); :func:`compression_series` is its
only plotted form, ``{"k", "curves", "full"}`` (the audit summary's
``compression`` section), which :func:`replens.quality.plots.plot_compression`
draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from replens.evaluate import fit_linear_probe
from replens.quality.qscore import DEFAULT_BAND, band_features, tail_features

__all__ = [
    "DEFAULT_FRACTIONS",
    "SELECTIONS",
    "band_for_fraction",
    "check_series",
    "compression_curve",
    "compression_series",
    "float_values",
]

DEFAULT_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9)

#: The selection methods of a curve, in plotting order: series name -> key of a curve point (random: the mean).
SELECTIONS: dict[str, str] = {
    "discriminative": "discriminative",
    "random": "random_mean",
    "pca": "pca",
    "lower_tail": "lower_tail",
    "upper_tail": "upper_tail",
}


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
    per_sample: bool = False,
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
        per_sample: Also return each test sample's correctness (for a bootstrap over test samples):
            every point gets ``"discriminative_correct"`` ((M,) bool) and ``"random_correct"``
            ((M, seeds) bool), numpy arrays (not JSON).

    Returns:
        ``{"full": acc, "points": [{"fraction", "size", "band", "discriminative",
        "random", "random_mean", "random_std", "pca", "lower_tail", "upper_tail"}]}``.
    """
    from sklearn.decomposition import PCA

    train_x, test_x = _normalise(train_features), _normalise(test_features)
    train_y, test_y = np.asarray(train_labels), np.asarray(test_labels)
    dim = train_x.shape[1]
    if len(percentages) != dim:
        raise ValueError(f"{len(percentages)} activation percentages for {dim} features")

    def hits(make: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        probe = fit_linear_probe(make(train_x), train_y, weight_decay=weight_decay, device=device)
        return np.asarray(probe.predict(make(test_x)) == test_y)

    def accuracy(make: Callable[[np.ndarray], np.ndarray]) -> float:
        return float(100.0 * hits(make).mean())

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
        random_hits = np.stack([hits(columns(np.sort(rng.choice(dim, size=size, replace=False))))
                                for _ in range(seeds)], axis=1)
        disc_hits = hits(columns(disc))
        random = [float(100.0 * h) for h in random_hits.mean(axis=0)]
        n_components = min(size, train_x.shape[0], dim)
        pca = PCA(n_components=n_components, svd_solver="full").fit(train_x)
        point = {
            "fraction": float(fraction),
            "size": int(size),
            "band": [float(band[0]), float(band[1])],
            "discriminative": float(100.0 * disc_hits.mean()),
            "random": random,
            "random_mean": float(np.mean(random)),
            "random_std": float(np.std(random)),
            "pca": accuracy(lambda x, pca=pca: pca.transform(x).astype(np.float32)),
            "lower_tail": accuracy(columns(tail_features(percentages, size, "lower"))),
            "upper_tail": accuracy(columns(tail_features(percentages, size, "upper"))),
        }
        if per_sample:
            point.update(discriminative_correct=disc_hits, random_correct=random_hits)
        points.append(point)
    return {"full": accuracy(lambda x: x), "dim": dim, "points": points, "reference_band": list(reference_band),
            "seeds": seeds}


def compression_series(
    curve: Mapping[str, Any], selections: Sequence[str] = tuple(SELECTIONS), *, spread: bool = False
) -> dict[str, Any]:
    """The plotted form of a :func:`compression_curve` result.

    Args:
        curve: ``compression_curve``'s output (``points``, ``full``).
        selections: Series to keep, names of :data:`SELECTIONS`.
        spread: Also give the random subsets' std under ``"std"``.

    Returns:
        ``{"k": [size per point], "curves": {selection: [accuracy per point]}, "full": accuracy}``
        (plus ``"std": {"random": [...]}`` with ``spread``); accuracies in percent.
    """
    unknown = [name for name in selections if name not in SELECTIONS]
    if unknown:
        raise KeyError(f"unknown compression selections {unknown}; known: {list(SELECTIONS)}")
    points = list(curve.get("points") or [])
    series: dict[str, Any] = {
        "k": [p["size"] for p in points],
        "curves": {name: [p[SELECTIONS[name]] for p in points] for name in selections},
        "full": curve["full"],
    }
    if spread and "random" in selections:
        series["std"] = {"random": [p["random_std"] for p in points]}
    return series


def float_values(values: Any, key: str) -> np.ndarray:
    """A 1-D float array of ``values`` (e.g. a list read from a JSON summary); ``None`` entries become NaN.

    Raises:
        ValueError: ``values`` is not a flat list of numbers (``key`` names it).
    """
    if values is None:
        return np.zeros(0)
    try:
        arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"summary key {key!r} must be a list of numbers: {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"summary key {key!r} must be a flat list of numbers, got shape {arr.shape}")
    return arr


def check_series(series: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """Validate a :func:`compression_series` dict (e.g. read back from a summary).

    Returns:
        ``(k, curves, std, full)`` as float arrays (``None`` entries NaN; ``full`` NaN when absent).

    Raises:
        ValueError: A value is not a list of numbers, or a series' length differs from ``k``
            (the key, e.g. ``compression.curves.pca``, is named).
    """
    k = float_values(series.get("k"), "compression.k")
    parsed: dict[str, dict[str, np.ndarray]] = {"curves": {}, "std": {}}
    for part in parsed:
        for name, values in (series.get(part) or {}).items():
            y = float_values(values, f"compression.{part}.{name}")
            if len(y) != len(k):
                raise ValueError(f"summary key 'compression.{part}.{name}' has {len(y)} values for {len(k)} k")
            parsed[part][str(name)] = y
    full = series.get("full")
    try:
        full_value = math.nan if isinstance(full, bool) or full is None else float(full)
    except (TypeError, ValueError):
        full_value = math.nan
    return k, parsed["curves"], parsed["std"], full_value
