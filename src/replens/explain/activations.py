"""Highly and lowly activating images, feature groups (paper sections 4.2-4.3, Algorithm 1).

Facts from the authors' code that these functions follow:

* representations are L2-normalised per sample before anything else;
* the activation threshold ``alpha`` is global: ``mean(H) + m * std(H)`` over
  the whole N x r matrix (``m = 5`` in their code; appendix B.3 states 16 for
  single features, so ``m`` is a parameter);
* a sample's feature group is exactly its set of features at or above
  ``alpha`` (Algorithm 1), and a group needs more than 10 samples;
* lowly activating candidates (Eq. 4.2) have every group feature below
  ``epsilon`` (the paper's text, default: each feature's own mean,
  ``epsilon="feature"``; their code: the global mean of ``H``,
  ``epsilon="global"``), ranked by the dot product of their remaining features
  with the mean highly activating representation, kept at score >= ``beta``
  (default the text's 0.7; 0.3 in their code), at most 10.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "activation_threshold",
    "feature_groups",
    "highly_activating",
    "lowly_activating",
    "normalize_rows",
    "single_feature_sets",
]


def normalize_rows(features: np.ndarray) -> np.ndarray:
    """L2-normalise each row (float32); zero rows stay zero.

    Shape:
        - Input: (N, r)
        - Output: (N, r)
    """
    h = np.asarray(features, dtype=np.float32)
    if h.ndim != 2:
        raise ValueError(f"representations must be (N, r), got shape {h.shape}")
    if not np.isfinite(h).all():
        bad = np.flatnonzero(~np.isfinite(h).all(axis=1))
        raise ValueError(f"non-finite representations in rows {bad[:10].tolist()}")
    norms = np.linalg.norm(h, axis=1, keepdims=True)
    return h / np.maximum(norms, 1e-12)


def activation_threshold(features: np.ndarray, multiplier: float = 5.0) -> float:
    """``alpha = mean(H) + multiplier * std(H)`` over every entry of the (normalised) matrix."""
    h = np.asarray(features, dtype=np.float64)
    return float(h.mean() + multiplier * h.std())


def feature_groups(features: np.ndarray, alpha: float, min_samples: int = 10) -> dict[tuple[int, ...], np.ndarray]:
    """All feature groups of Algorithm 1.

    Each sample's group is the tuple of its features with ``h_ji >= alpha``;
    samples with the same tuple share the group. Groups with more than
    ``min_samples`` samples are kept.

    Args:
        features: (N, r) normalised representations.
        alpha: Activation threshold.
        min_samples: Keep groups with strictly more samples than this.

    Returns:
        ``{features tuple: sample indices}``, largest groups first (ties by tuple).
    """
    active = np.asarray(features) >= alpha
    rows = np.flatnonzero(active.any(axis=1))
    if rows.size == 0:
        return {}
    keys, inverse = np.unique(active[rows], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    groups: dict[tuple[int, ...], np.ndarray] = {}
    for k in range(len(keys)):
        members = rows[inverse == k]
        if len(members) > min_samples:
            groups[tuple(int(i) for i in np.flatnonzero(keys[k]))] = members
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def single_feature_sets(features: np.ndarray, alpha: float, min_samples: int = 10) -> dict[tuple[int, ...], np.ndarray]:
    """``T_i = {j : h_ji > alpha}`` for every feature ``i`` with ``|T_i| > min_samples`` (section 4.3).

    Returns:
        ``{(i,): sample indices}``, largest sets first.
    """
    h = np.asarray(features)
    out = {(int(i),): np.flatnonzero(h[:, i] > alpha) for i in range(h.shape[1])}
    out = {k: v for k, v in out.items() if len(v) > min_samples}
    return dict(sorted(out.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def highly_activating(features: np.ndarray, group: Sequence[int], alpha: float, exact: bool = False) -> np.ndarray:
    """Samples whose every feature of ``group`` is at or above ``alpha``.

    Args:
        features: (N, r) normalised representations.
        group: Feature indices.
        alpha: Threshold.
        exact: Also require that no other feature is above ``alpha`` (the
            sample's group is exactly ``group``, as in Algorithm 1).
    """
    h = np.asarray(features)
    idx = list(group)
    mask = (h[:, idx] >= alpha).all(axis=1)
    if exact:
        others = np.ones(h.shape[1], dtype=bool)
        others[idx] = False
        mask &= ~(h[:, others] >= alpha).any(axis=1)
    return np.flatnonzero(mask)


def lowly_activating(
    features: np.ndarray,
    group: Sequence[int],
    highly: Sequence[int] | np.ndarray,
    *,
    epsilon: float | str = "feature",
    beta: float = 0.7,
    max_images: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Lowly activating counterfactual images ``L_I`` of a feature group (Eq. 4.2).

    ``L_I = {j : h_ji < epsilon for all i in I, h_{j,V_I} . h^mu >= beta}``
    where ``h^mu`` is the mean highly activating representation without the
    group's features, ranked by that dot product (best first).

    Args:
        features: (N, r) normalised representations.
        group: The feature group ``I``.
        highly: Indices of the highly activating samples ``T_I``.
        epsilon: ``"feature"`` (each feature's own mean, the paper's text, section 4.2.2),
            ``"global"`` (mean of the whole matrix, the authors' code) or a number.
        beta: Smallest dot product kept (the paper's 0.7; the authors' code 0.3).
        max_images: Most images returned.

    Returns:
        ``(indices, scores)``, best first.
    """
    h = np.asarray(features, dtype=np.float32)
    idx = np.asarray(list(group), dtype=np.int64)
    highly = np.asarray(highly, dtype=np.int64)
    if highly.size == 0:
        raise ValueError(f"feature group {tuple(idx.tolist())} has no highly activating samples")
    if epsilon == "global":
        eps: np.ndarray | float = float(h.mean())
    elif epsilon == "feature":
        eps = h[:, idx].mean(axis=0)
    elif isinstance(epsilon, int | float):
        eps = float(epsilon)
    else:
        raise ValueError(f"epsilon must be 'global', 'feature' or a number, got {epsilon!r}")
    rest = np.ones(h.shape[1], dtype=bool)
    rest[idx] = False
    mean_high = h[highly][:, rest].mean(axis=0)
    candidates = np.flatnonzero((h[:, idx] < eps).all(axis=1))
    scores = h[candidates][:, rest] @ mean_high
    order = np.argsort(-scores, kind="stable")
    keep = order[scores[order] >= beta][:max_images]
    return candidates[keep], scores[keep]
