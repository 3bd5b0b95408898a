"""Explaining failures of a downstream linear head with FALCON concepts (paper section 4.5, Figure 4.6).

For a linear head ``U`` (o x r) on representations ``h``, the most
contributing features of a sample ``x_j`` with prediction ``y_j`` are
``argmax(h_j * U_{y_j})``; their concepts (from the explained feature groups
that contain them) explain what the model looked at when it made the mistake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from replens.explain.falcon import GroupExplanation

__all__ = ["FailureExplanation", "contributions", "explain_failures", "linear_head_from_probe"]


def linear_head_from_probe(probe: Any) -> tuple[np.ndarray, np.ndarray]:
    """The head ``(U, b)`` acting on raw features that a standardised linear probe defines.

    A :class:`~replens.evaluate.LinearProbe` computes ``W (h - mu) / sigma + c``,
    i.e. ``U h + b`` with ``U = W / sigma`` and ``b = c - U mu``; ``U`` is the
    head of section 4.5.

    Returns:
        ``(U (C, D), b (C,))`` as float64 numpy arrays.
    """
    weight = probe.weight.detach().cpu().double().numpy()
    std = probe.std.detach().cpu().double().numpy()
    mean = probe.mean.detach().cpu().double().numpy()
    u = weight / std[None, :]
    return u, probe.bias.detach().cpu().double().numpy() - u @ mean


def contributions(features: np.ndarray, weight: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``h_j * U_{c_j}`` for every sample (the terms of the logit of class ``c_j``).

    Shape:
        - features: (N, r); weight: (C, r); classes: (N,) column indices of ``weight``
        - Output: (N, r)
    """
    h = np.asarray(features, dtype=np.float64)
    u = np.asarray(weight, dtype=np.float64)
    c = np.asarray(classes, dtype=np.int64)
    if h.shape[1] != u.shape[1]:
        raise ValueError(f"features have {h.shape[1]} dimensions but the head has {u.shape[1]}")
    return h * u[c]


@dataclass
class FailureExplanation:
    """Why one sample was mis-classified.

    Attributes:
        row: The sample's row in the representation matrix.
        name: Its name.
        label: True class index.
        prediction: Predicted class index.
        top_features: ``(feature, contribution)`` of the explained most
            contributing features, best first (the plain argmax when none is explainable).
        groups: Names of the explained groups the concepts come from.
        words: Concepts ``(term, Word Score)`` of those groups, merged
            (a term keeps its best score), best first.
        phrases: Noun phrases, merged the same way.
    """

    row: int
    name: str
    label: int
    prediction: int
    top_features: list[tuple[int, float]]
    groups: list[str] = field(default_factory=list)
    words: list[tuple[str, float]] = field(default_factory=list)
    phrases: list[tuple[str, float]] = field(default_factory=list)

    def concepts(self, k: int | None = None) -> list[str]:
        """The top ``k`` words."""
        return [t for t, _ in self.words[:k]]

    def to_dict(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready record (class names when given)."""

        def cls(c: int) -> Any:
            return classes[c] if classes is not None and 0 <= c < len(classes) else int(c)

        return {
            "sample": self.name,
            "row": int(self.row),
            "label": cls(self.label),
            "prediction": cls(self.prediction),
            "top_features": [{"feature": int(f), "contribution": float(v)} for f, v in self.top_features],
            "groups": list(self.groups),
            "words": [{"term": t, "score": float(s)} for t, s in self.words],
            "phrases": [{"term": t, "score": float(s)} for t, s in self.phrases],
        }


def _merge(lists: Sequence[Sequence[tuple[str, float]]], top: int) -> list[tuple[str, float]]:
    best: dict[str, float] = {}
    for terms in lists:
        for term, score in terms:
            best[term] = max(best.get(term, 0.0), float(score))
    return sorted(best.items(), key=lambda ts: (-ts[1], ts[0]))[:top]


def explain_failures(
    features: np.ndarray,
    weight: np.ndarray,
    predictions: np.ndarray,
    labels: np.ndarray,
    groups: Sequence[GroupExplanation],
    *,
    names: Sequence[str] | None = None,
    top_features: int = 1,
    top_terms: int = 8,
    explain_feature: Callable[[tuple[int, ...]], GroupExplanation | None] | None = None,
    max_samples: int | None = None,
    search_depth: int = 10,
) -> list[FailureExplanation]:
    """Concepts of the most contributing features of every mis-classified sample.

    Args:
        features: (N, r) representations the head acts on.
        weight: (C, r) head ``U``; predictions index its rows.
        predictions: (N,) predicted row of ``U``.
        labels: (N,) true classes (same indexing); samples with
            ``label == prediction`` or ``label < 0`` are skipped.
        groups: Explained feature groups (with concepts).
        names: Sample names.
        top_features: How many of the most contributing features to explain
            (1 is the paper's ``argmax``).
        search_depth: When a contributing feature has no explanation (no
            group contains it and it has too few highly activating images),
            the next most contributing ones are explained on demand
            (``explain_feature``) down to this rank; below it, every other
            positively contributing feature is still looked up in the explained
            groups, so a failure never reads "no explained concept" while an
            explained feature contributes to it.
        top_terms: Concepts kept per sample.
        explain_feature: Called with ``(feature,)`` when no explained group
            contains a contributing feature (e.g. ``Falcon.explain_group``);
            results are cached.
        max_samples: Explain at most this many failures (in row order).

    Returns:
        One :class:`FailureExplanation` per explained failure.
    """
    h = np.asarray(features, dtype=np.float64)
    pred = np.asarray(predictions, dtype=np.int64)
    lab = np.asarray(labels, dtype=np.int64)
    if not (len(h) == len(pred) == len(lab)):
        raise ValueError(f"{len(h)} features, {len(pred)} predictions and {len(lab)} labels")
    contrib = contributions(h, weight, pred)
    by_feature = _groups_by_feature(groups)
    cache: dict[tuple[int, ...], GroupExplanation | None] = {}
    failures = np.flatnonzero((pred != lab) & (lab >= 0))
    if max_samples is not None:
        failures = failures[:max_samples]
    out = []
    for j in failures:
        tops, chosen = _explained_features(contrib[j], by_feature, explain_feature, cache, top_features,
                                           search_depth)
        out.append(
            FailureExplanation(
                row=int(j),
                name=names[int(j)] if names is not None else str(int(j)),
                label=int(lab[j]),
                prediction=int(pred[j]),
                top_features=tops,
                groups=[g.name for g in chosen],
                words=_merge([g.words for g in chosen], top_terms),
                phrases=_merge([g.phrases for g in chosen], top_terms),
            )
        )
    return out


def _groups_by_feature(groups: Sequence[GroupExplanation]) -> dict[int, list[GroupExplanation]]:
    """``{feature: the explained groups (with words or phrases) that contain it}``."""
    by_feature: dict[int, list[GroupExplanation]] = {}
    for g in groups:
        if g.words or g.phrases:
            for f in g.features:
                by_feature.setdefault(int(f), []).append(g)
    return by_feature


def _explained_features(
    contrib: np.ndarray,
    by_feature: dict[int, list[GroupExplanation]],
    explain_feature: Callable[[tuple[int, ...]], GroupExplanation | None] | None,
    cache: dict[tuple[int, ...], GroupExplanation | None],
    top_features: int,
    search_depth: int,
) -> tuple[list[tuple[int, float]], list[GroupExplanation]]:
    """One failure's ``(feature, contribution)`` of its explained top features and the groups explaining them.

    ``contrib`` is the sample's (r,) ``h * U_pred``; see :func:`explain_failures` for the search.
    """
    order = np.argsort(-contrib, kind="stable")
    tops: list[tuple[int, float]] = []
    chosen: list[GroupExplanation] = []
    for rank, f in enumerate(int(i) for i in order):
        if contrib[f] <= 0 or len(tops) == top_features:
            break
        candidates = by_feature.get(f, [])
        if candidates:
            best = max(candidates, key=lambda g: (float(contrib[list(g.features)].sum()), len(g.highly)))
        elif explain_feature is not None and rank < max(top_features, search_depth):
            if (f,) not in cache:
                cache[(f,)] = explain_feature((f,))
            best = cache[(f,)]
        else:
            best = None
        if best is None or not (best.words or best.phrases):
            continue
        tops.append((f, float(contrib[f])))
        if best not in chosen:
            chosen.append(best)
    if not tops:  # nothing explainable: still report the paper's argmax
        tops = [(int(order[0]), float(contrib[order[0]]))]
    return tops, chosen
