"""Probing a trained encoder: embed a train and a test source, then linear probe + kNN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from replens.data.base import ImageSource
from replens.evaluate import evaluate_representations
from replens.models import extract_features, load_embeddings


def probe_backbone(
    backbone: torch.nn.Module,
    train_source: ImageSource,
    test_source: ImageSource,
    folder: str | Path,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Embed both sources into ``folder/embeddings-{train,test}`` and run the fixed probe protocol.

    Returns:
        ``replens.evaluate.evaluate_representations`` output (linear and kNN
        accuracy overall, per domain and per class of the test source).
    """
    folder = Path(folder)
    embs = {}
    for split, src in (("train", train_source), ("test", test_source)):
        out = extract_features(backbone, src, folder / f"embeddings-{split}", device=device, progress=progress,
                               overwrite=True)
        embs[split] = load_embeddings(out)
    tr, te = embs["train"], embs["test"]
    return evaluate_representations(
        tr.features, tr.labels, te.features, te.labels, test_domains=te.domains,
        domain_names=list(test_source.domain_names), class_names=list(test_source.classes), device=device,
    )
