"""Cross-model statistics of FALCON explanations (paper appendices B.1 and B.3, Table B.1, Figures B.1 and B.2).

* :func:`group_concepts`: the concept words of one explained group;
* :func:`concept_statistics`: interpretable groups, unique concepts and the
  most frequent concepts of one model (a row of Table B.1);
* :func:`shared_concepts`: concepts shared by every pair of models (Figure B.1),
  and :func:`unshared_concepts`, those of each model no other model has;
* :func:`group_size_distribution`: how many feature groups (Algorithm 1) and
  interpretable groups there are of each size (Figure B.2);
* :func:`highly_activating_feature_share`: the percentage of features with
  more than ``min_samples`` highly activating samples at ``alpha`` (Table B.3);
* plots of the shared-concept matrix and the group sizes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from replens.explain.activations import activation_threshold, normalize_rows, single_feature_sets
from replens.explain.falcon import GroupExplanation
from replens.plotting import new_figure, save_figure

__all__ = [
    "concept_statistics",
    "group_concepts",
    "group_size_distribution",
    "highly_activating_feature_share",
    "plot_group_sizes",
    "plot_shared_concepts",
    "shared_concepts",
    "unshared_concepts",
]


def group_concepts(group: GroupExplanation, k: int | None = None) -> list[str]:
    """The top ``k`` concept words of an explained group (all when None), best first."""
    return [term for term, _ in group.words[:k]]


def concept_statistics(groups: Sequence[GroupExplanation], *, top: int = 5, k: int | None = None) -> dict[str, Any]:
    """One row of Table B.1: interpretable groups, unique concepts and the most frequent concepts.

    Only interpretable groups count. A concept's frequency is the number of
    interpretable groups whose explanation (top ``k`` words) contains it; ties
    are broken alphabetically.

    Args:
        groups: Every group FALCON examined for one model.
        top: Most frequent concepts reported.
        k: Concept words per explanation (None: all reported words).

    Returns:
        ``{"interpretable_groups", "explained_groups", "unique_concepts", "most_frequent", "concepts",
        "frequency"}`` where ``concepts`` is the sorted set and ``frequency`` maps each concept to its count.
    """
    interpretable = [g for g in groups if g.interpretable]
    counts: Counter[str] = Counter()
    explained = 0
    for g in interpretable:
        words = set(group_concepts(g, k))
        explained += bool(words)
        counts.update(words)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "interpretable_groups": len(interpretable),
        "explained_groups": explained,
        "unique_concepts": len(counts),
        "most_frequent": [w for w, _ in ranked[:top]],
        "concepts": sorted(counts),
        "frequency": dict(ranked),
    }


def shared_concepts(concepts: Mapping[str, Iterable[str]]) -> tuple[list[str], np.ndarray]:
    """Number of concepts every pair of models shares (Figure B.1).

    Args:
        concepts: ``{model: its unique concepts}``.

    Returns:
        ``(names, matrix)``: ``matrix[a, b] = |C_a & C_b|`` (symmetric, int64); the diagonal is ``|C_a|``.
    """
    names = list(concepts)
    sets = [set(concepts[n]) for n in names]
    matrix = np.array([[len(a & b) for b in sets] for a in sets], dtype=np.int64).reshape(len(names), len(names))
    return names, matrix


def unshared_concepts(concepts: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """The concepts of each model that no other model has (appendix B.1: "truly unique" concepts)."""
    sets = {n: set(c) for n, c in concepts.items()}
    out = {}
    for name, own in sets.items():
        others = set().union(*(s for n, s in sets.items() if n != name)) if len(sets) > 1 else set()
        out[name] = sorted(own - others)
    return out


def group_size_distribution(
    groups: Iterable[Sequence[int]], interpretable: Iterable[Sequence[int]] = ()
) -> dict[int, dict[str, int]]:
    """Feature groups by size, and how many of each size are interpretable (Figure B.2).

    Args:
        groups: Every feature group (tuples of feature indices) of Algorithm 1.
        interpretable: The interpretable ones (a subset of ``groups``).

    Returns:
        ``{size: {"groups": n, "interpretable": m}}`` sorted by size; the
        ``groups`` counts sum to the number of groups.

    Raises:
        ValueError: An interpretable group is not among ``groups``.
    """
    keys = [tuple(int(f) for f in g) for g in groups]
    known = set(keys)
    chosen = {tuple(int(f) for f in g) for g in interpretable}
    missing = chosen - known
    if missing:
        raise ValueError(f"interpretable groups {sorted(missing)[:5]} are not among the feature groups")
    sizes = Counter(len(g) for g in keys)
    good = Counter(len(g) for g in chosen)
    return {s: {"groups": int(sizes[s]), "interpretable": int(good.get(s, 0))} for s in sorted(sizes)}


def highly_activating_feature_share(
    features: np.ndarray, multiplier: float = 16.0, min_samples: int = 10
) -> dict[str, float]:
    """Percentage of features with more than ``min_samples`` samples above ``alpha`` (Table B.3).

    ``alpha = mean(H) + multiplier * std(H)`` over the L2-normalised matrix
    (appendix B.3 uses 16).

    Returns:
        ``{"percent": %, "features": count, "dim": r, "alpha": alpha}``.
    """
    h = normalize_rows(features)
    alpha = activation_threshold(h, multiplier)
    sets = single_feature_sets(h, alpha, min_samples)
    return {"percent": float(100 * len(sets) / h.shape[1]), "features": len(sets), "dim": int(h.shape[1]),
            "alpha": float(alpha)}


def plot_shared_concepts(names: Sequence[str], matrix: np.ndarray, path: str | Path) -> Path:
    """Heatmap of shared concepts between models, counts written in the cells (Figure B.1)."""
    fig = new_figure(1.0 * len(names) + 2.5, 0.9 * len(names) + 2.0)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(np.arange(len(names)))
    ax.set_yticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    top = matrix.max() if matrix.size else 0
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if matrix[i, j] > 0.6 * top else "black", fontsize=8)
    ax.set_title("concepts shared between models")
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)


def plot_group_sizes(distributions: Mapping[str, Mapping[int, Mapping[str, int]]], path: str | Path) -> Path:
    """Number of feature groups per size (left) and groups vs interpretable groups per model (right) (Figure B.2)."""
    fig = new_figure(10.0, 4.0)
    left = fig.add_subplot(1, 2, 1)
    right = fig.add_subplot(1, 2, 2)
    names = list(distributions)
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        dist = distributions[name]
        sizes = np.array(sorted(dist), dtype=float)
        left.bar(sizes + (k - (len(names) - 1) / 2) * width, [dist[int(s)]["groups"] for s in sizes], width,
                 label=name)
    left.set_xlabel("features per group")
    left.set_ylabel("feature groups")
    left.legend(fontsize=7)
    totals = [sum(d["groups"] for d in distributions[n].values()) for n in names]
    good = [sum(d["interpretable"] for d in distributions[n].values()) for n in names]
    x = np.arange(len(names))
    right.bar(x - 0.2, totals, 0.4, label="feature groups")
    right.bar(x + 0.2, good, 0.4, label="interpretable groups")
    right.set_xticks(x)
    right.set_xticklabels(names, rotation=30, ha="right")
    right.legend(fontsize=7)
    return save_figure(fig, path)
