"""Few-shot and transfer linear evaluation of frozen representations (paper section 5.5.3, Table 5.2).

* **Few-shot** (k-shot): exactly ``k`` training samples per class are drawn
  (without replacement, a pure function of ``(seed, episode)``), the fixed
  linear probe of :mod:`replens.evaluate.probe` is fitted on them, and top-1
  is measured on the whole test set; the mean and standard deviation over
  several episodes are reported. The paper uses 5-shot and 10-shot ImageNet.
* **Transfer** linear evaluation: the same fixed probe trained on the full
  training split of a dataset the encoder never saw (the paper: iNaturalist,
  DomainNet Painting, Food101, Places365), scored on its test split.

Both reuse the library's probe protocol (standardised features, multinomial
logistic regression by L-BFGS), so their numbers compare with every other
linear-probe number the library reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replens.evaluate.probe import accuracy_report, fit_linear_probe
from replens.models import extract_features, load_embeddings

__all__ = ["few_shot_accuracy", "sample_k_shot", "transfer_evaluation"]


def sample_k_shot(labels: np.ndarray | Sequence[int], k: int, *, seed: int = 0, episode: int = 0) -> np.ndarray:
    """Positions of exactly ``k`` samples of every class in ``labels`` (labels < 0 are never drawn).

    Args:
        labels: (N,) integer class ids.
        k: Shots per class (>= 1).
        seed: Seed of the draw.
        episode: Episode index; each ``(seed, episode)`` gives its own draw.

    Returns:
        Sorted int64 positions, ``k`` per class present in ``labels``.

    Raises:
        ValueError: ``k < 1``, or a class with fewer than ``k`` samples (named).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    labels = np.asarray(labels)
    rng = np.random.default_rng([int(seed), int(episode), int(k)])
    picks = []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        if len(members) < k:
            raise ValueError(f"class {int(c)} has {len(members)} samples, fewer than k={k}")
        picks.append(rng.choice(members, size=k, replace=False))
    if not picks:
        raise ValueError("no labelled samples to draw shots from")
    return np.sort(np.concatenate(picks)).astype(np.int64)


def few_shot_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    shots: Sequence[int] = (5, 10),
    episodes: int = 5,
    seed: int = 0,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, Any]]:
    """k-shot linear-probe top-1 (percent) for each ``k`` in ``shots`` (paper Table 5.2, 5- and 10-shot).

    Args:
        train_features, train_labels: The pool the shots are drawn from.
        test_features, test_labels: Every test sample is scored.
        shots: The k values.
        episodes: Draws per k (the mean and the standard deviation are reported).
        seed: Seed of the draws.
        weight_decay: Probe L2 penalty.
        max_iter: L-BFGS iterations.
        device: Where probes are fitted.

    Returns:
        ``{"5-shot": {"mean", "std", "episodes": [top-1 per episode], "k", "train_count"}, ...}``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    train_features, train_labels = np.asarray(train_features), np.asarray(train_labels)
    test_features, test_labels = np.asarray(test_features), np.asarray(test_labels)
    out: dict[str, dict[str, Any]] = {}
    for k in shots:
        accs = []
        for e in range(episodes):
            idx = sample_k_shot(train_labels, k, seed=seed, episode=e)
            probe = fit_linear_probe(train_features[idx], train_labels[idx], weight_decay=weight_decay,
                                     max_iter=max_iter, device=device)
            accs.append(accuracy_report(probe.predict(test_features), test_labels).overall)
        out[f"{k}-shot"] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "episodes": accs,
                            "k": int(k), "train_count": int(len(idx))}
    return out


def transfer_evaluation(
    backbone: torch.nn.Module,
    targets: Mapping[str, tuple[Any, Any]],
    folder: str | Path,
    *,
    shots: Sequence[int] = (),
    episodes: int = 5,
    seed: int = 0,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Linear evaluation of a frozen encoder on transfer datasets (and optionally k-shot on each).

    Args:
        backbone: The frozen encoder (``replens.models`` backbone).
        targets: ``{name: (train_source, test_source)}`` image sources.
        folder: Embeddings go to ``folder/<name>/embeddings-{train,test}``.
        shots: Also report k-shot accuracy on each target for these k.
        episodes: k-shot draws.
        seed: Seed of the draws.
        weight_decay: Probe L2 penalty.
        batch_size: Extraction batch size.
        device: Where features are extracted and probes fitted.
        progress: Progress bars.

    Returns:
        ``{name: {"linear": top-1, "train_count", "test_count", "classes", "few_shot": {...}}}``.
    """
    backbone = backbone.eval()
    out: dict[str, dict[str, Any]] = {}
    for name, (train_source, test_source) in targets.items():
        embs = []
        for split, src in (("train", train_source), ("test", test_source)):
            path = extract_features(backbone, src, Path(folder) / name / f"embeddings-{split}", batch_size=batch_size,
                                    device=device, progress=progress, overwrite=True)
            embs.append(load_embeddings(path, mmap=False))
        tr, te = embs
        probe = fit_linear_probe(tr.features, tr.labels, weight_decay=weight_decay, device=device)
        res: dict[str, Any] = {
            "linear": accuracy_report(probe.predict(te.features), te.labels).overall,
            "train_count": int(len(tr.labels)),
            "test_count": int(len(te.labels)),
            "classes": int(len(np.unique(tr.labels[tr.labels >= 0]))),
        }
        if shots:
            res["few_shot"] = few_shot_accuracy(tr.features, tr.labels, te.features, te.labels, shots=shots,
                                                episodes=episodes, seed=seed, weight_decay=weight_decay,
                                                device=device)
        out[name] = res
    return out
