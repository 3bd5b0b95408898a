"""Transferring concepts to a new representation space (paper section 4.6, Eq. 4.3, Figure 4.7).

A linear map ``Z`` (r_target x r_source) is learned on one probe set so that
``Z^T h_target ~ h_source`` (Eq. 4.3): by least squares (default), or as the
paper does, a bias-free linear head trained with SGD, learning rate 1, for 10
epochs (``method="sgd"``). A source feature ``i``
maps to the target features ``j`` whose weight ``Z[j, i]`` exceeds
``mean(Z) + 4 std(Z)`` (over the whole weight distribution), and the concepts
of an explained source group are carried to the union of its features' maps.

The transfer is checked the way the paper does it: the target's own highly
activating images of the mapped features should show the transferred
concepts (:func:`carry_rate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from replens.explain.falcon import GroupExplanation

__all__ = [
    "TransferredGroup",
    "carry_rate",
    "learn_transfer",
    "map_features",
    "target_highly_activating",
    "transfer_concepts",
]


def learn_transfer(
    target: np.ndarray,
    source: np.ndarray,
    *,
    method: str = "lstsq",
    epochs: int = 10,
    lr: float = 1.0,
    batch_size: int = 256,
    seed: int = 0,
) -> np.ndarray:
    """Learn ``Z`` minimising ``||Z^T H_target - H_source||`` (Eq. 4.3).

    Args:
        target: (N, r_t) target-model representations of the probe set.
        source: (N, r_s) source-model representations of the same images.
        method: ``"lstsq"`` (the exact minimiser of Eq. 4.3) or ``"sgd"``
            (the paper's recipe: mini-batch SGD on the mean squared error of a
            bias-free linear head, from zero). On small probe sets of
            L2-normalised representations the paper's 10 epochs at learning
            rate 1 are far from converged (a few hundred steps on gradients of
            size ~1e-3), so least squares is the default.
        epochs: SGD epochs (10).
        lr: SGD learning rate (1).
        batch_size: SGD mini-batch size.
        seed: Seed of the initialisation and data order.

    Returns:
        ``Z`` as a (r_t, r_s) float32 array.
    """
    ht = torch.as_tensor(np.asarray(target), dtype=torch.float32)
    hs = torch.as_tensor(np.asarray(source), dtype=torch.float32)
    if ht.ndim != 2 or hs.ndim != 2 or len(ht) != len(hs):
        raise ValueError(f"target {tuple(ht.shape)} and source {tuple(hs.shape)} must be (N, r) with the same N")
    if method == "lstsq":
        return torch.linalg.lstsq(ht.double(), hs.double()).solution.float().numpy()
    if method != "sgd":
        raise ValueError(f"method must be 'sgd' or 'lstsq', got {method!r}")
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(ht.shape[1], hs.shape[1], bias=False)
    with torch.no_grad():  # zero start: whatever weight Z holds was learned, not left from the initialisation
        head.weight.zero_()
    opt = torch.optim.SGD(head.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(ht), generator=gen)
        for lo in range(0, len(ht), batch_size):
            idx = perm[lo : lo + batch_size]
            loss = torch.nn.functional.mse_loss(head(ht[idx]), hs[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.weight.detach().T.contiguous().numpy()


def map_features(z: np.ndarray, source_features: Sequence[int], std_multiplier: float = 4.0) -> list[int]:
    """Target features whose weight to any of ``source_features`` exceeds ``mean(Z) + m std(Z)``."""
    z = np.asarray(z)
    threshold = float(z.mean() + std_multiplier * z.std())
    mapped = set()
    for i in source_features:
        mapped.update(int(j) for j in np.flatnonzero(z[:, int(i)] > threshold))
    return sorted(mapped)


def target_highly_activating(
    features: np.ndarray, mapped: Sequence[int], alpha: float, *, min_samples: int = 10, fallback: int = 20
) -> np.ndarray:
    """The target's highly activating images of a mapped feature set.

    Samples whose mapped features are all at or above ``alpha``; when there
    are no more than ``min_samples`` of them, the ``fallback`` samples with
    the largest mean activation over the mapped features.
    """
    h = np.asarray(features)
    idx = list(mapped)
    if not idx:
        return np.zeros(0, dtype=np.int64)
    rows = np.flatnonzero((h[:, idx] >= alpha).all(axis=1))
    if len(rows) > min_samples:
        return rows
    strength = h[:, idx].mean(axis=1)
    return np.argsort(-strength, kind="stable")[:fallback]


def carry_rate(concepts: Sequence[str], image_terms: Sequence[set[str]]) -> float:
    """Mean over concepts and images of whether an image carries a concept.

    Args:
        concepts: Transferred concepts.
        image_terms: Per image, the set of terms it carries (from its
            captions, or from ground truth).

    Returns:
        A fraction in [0, 1] (NaN when there is nothing to count).
    """
    if not concepts or not image_terms:
        return float("nan")
    hits = [[c in terms for c in concepts] for terms in image_terms]
    return float(np.mean(hits))


@dataclass
class TransferredGroup:
    """Concepts of one source group carried to the target space.

    Attributes:
        source_group: The source group's name.
        source_features: Its features.
        target_features: The mapped target features.
        words: Transferred words ``(term, source Word Score)``.
        phrases: Transferred phrases.
        target_highly: Target rows that highly activate the mapped features.
        carry: Fraction of (concept, target image) pairs where the image carries the concept.
        carry_random: The same for as many random target features (a baseline).
    """

    source_group: str
    source_features: tuple[int, ...]
    target_features: list[int]
    words: list[tuple[str, float]]
    phrases: list[tuple[str, float]]
    target_highly: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    carry: float = float("nan")
    carry_random: float = float("nan")

    def to_dict(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready record."""
        rows = [names[int(i)] if names is not None else int(i) for i in self.target_highly]
        return {
            "source_group": self.source_group,
            "source_features": list(self.source_features),
            "target_features": list(self.target_features),
            "words": [{"term": t, "score": float(s)} for t, s in self.words],
            "phrases": [{"term": t, "score": float(s)} for t, s in self.phrases],
            "target_highly": rows,
            "carry": self.carry,
            "carry_random": self.carry_random,
        }


def transfer_concepts(
    z: np.ndarray,
    groups: Sequence[GroupExplanation],
    target_features: np.ndarray,
    target_alpha: float,
    *,
    image_terms: Callable[[np.ndarray, list[int]], list[set[str]]] | None = None,
    top_concepts: int = 3,
    std_multiplier: float = 4.0,
    min_samples: int = 10,
    seed: int = 0,
) -> list[TransferredGroup]:
    """Carry the concepts of explained source groups to target features and check them.

    Args:
        z: (r_t, r_s) map from :func:`learn_transfer`.
        groups: Explained source groups.
        target_features: (N, r_t) normalised target representations.
        target_alpha: The target's activation threshold.
        image_terms: ``(rows, target features) -> per-image term sets`` (e.g.
            captions of the target's Grad-CAM crops); without it no carry
            rate is computed.
        top_concepts: Transferred words checked for the carry rate.
        std_multiplier: Mapping threshold ``mean(Z) + m std(Z)``.
        min_samples: See :func:`target_highly_activating`.
        seed: Seed of the random baseline.

    Returns:
        One :class:`TransferredGroup` per source group with concepts and a
        non-empty map.
    """
    rng = np.random.default_rng(seed)
    r_t = np.asarray(target_features).shape[1]
    out = []
    for g in groups:
        if not (g.words or g.phrases):
            continue
        mapped = map_features(z, g.features, std_multiplier)
        if not mapped:
            continue
        rows = target_highly_activating(
            target_features, mapped, target_alpha, min_samples=min_samples, fallback=max(min_samples + 1, len(g.highly))
        )
        item = TransferredGroup(g.name, g.features, mapped, list(g.words), list(g.phrases), rows)
        if image_terms is not None:
            concepts = [t for t, _ in g.words[:top_concepts]]
            item.carry = carry_rate(concepts, image_terms(rows, mapped))
            random_feats = sorted(int(f) for f in rng.choice(r_t, size=len(mapped), replace=False))
            random_rows = target_highly_activating(
                target_features,
                random_feats,
                target_alpha,
                min_samples=min_samples,
                fallback=max(min_samples + 1, len(g.highly)),
            )
            item.carry_random = carry_rate(concepts, image_terms(random_rows, random_feats))
        out.append(item)
    return out
