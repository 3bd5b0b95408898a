"""DataLoaders over sources, with deterministic shuffling."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from replens.data.arrays import ArraySource
from replens.data.base import BadImageGuard, DataError, ImageSource, collate_samples, iterate_batches


def make_loader(
    source: ImageSource,
    *,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader of collated batches (see :func:`replens.data.collate_samples`).

    The order is a function of ``seed`` alone: the sampler draws from a
    ``torch.Generator`` seeded with it, so two loaders with the same seed yield
    the same batches, epoch after epoch (each epoch a new permutation). Worker
    processes are persistent; each opens its own shard file handles after the
    fork. Unreadable images arrive as names in ``batch["bad"]``; iterate with
    :func:`replens.data.iterate_batches` to warn and enforce the source's
    ``max_bad_fraction``.

    Args:
        source: The dataset.
        batch_size: Samples per batch (>= 1).
        shuffle: Draw a new seeded permutation each epoch.
        num_workers: Worker processes (0 reads in the main process).
        seed: Seed of the shuffling (and of the workers' base seed).
        drop_last: Drop the last incomplete batch.
        pin_memory: Pin batch tensors (for asynchronous host-to-device copies).

    Returns:
        The loader.

    Raises:
        ValueError: ``batch_size < 1`` or ``num_workers < 0``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        source,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_samples,
        generator=generator,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


def materialize(
    source: ImageSource,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    guard: BadImageGuard | None = None,
) -> ArraySource:
    """Decode every image once into an in-memory :class:`ArraySource`.

    For small datasets read many times (CIFAR-10 at 32 px is 150 MB decoded),
    this moves JPEG decoding out of the training loop. Unreadable images are
    dropped (with a :class:`BadImageWarning` each, and :class:`DataError` past
    the source's ``max_bad_fraction``); names, labels, domains, class and
    domain names are kept.

    Args:
        source: Any source whose images all have one size (set ``image_size``
            otherwise).
        batch_size: Decoding batch size.
        num_workers: Decoding worker processes.
        guard: Bad-image accounting (default from the source's limit).

    Returns:
        An ``ArraySource`` with uint8 (N, H, W, 3) images and ``image_size``
        None (images are already at their final size).

    Raises:
        DataError: Images of different sizes, or too many unreadable ones.
    """
    loader = make_loader(source, batch_size=batch_size, num_workers=num_workers)
    images: list[np.ndarray] = []
    indices: list[np.ndarray] = []
    names: list[str] = []
    for batch in iterate_batches(loader, guard):
        if images and batch["image"].shape[1:] != images[0].shape[1:]:
            raise DataError(
                f"cannot materialize {source.describe()}: images of sizes "
                f"{tuple(images[0].shape[2:])} and {tuple(batch['image'].shape[2:])}; set image_size"
            )
        images.append(batch["image"].numpy())
        indices.append(batch["index"].numpy())
        names.extend(batch["name"])
    if not images:
        raise DataError(f"no readable image in {source.describe()}")
    kept = np.concatenate(indices)
    stack = np.ascontiguousarray(np.concatenate(images).transpose(0, 2, 3, 1))
    result = ArraySource(
        stack,
        np.asarray(source.labels)[kept],
        domains=np.asarray(source.domains)[kept],
        classes=source.classes if len(source.classes) else None,
        domain_names=source.domain_names,
        names=names,
    )
    result.max_bad_fraction = source.max_bad_fraction
    result.spec = source.spec
    return result
