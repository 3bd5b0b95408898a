"""Shared helpers for the model tests: a tiny in-memory image source."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from replens.data.base import DataError, ImageSource


class RandomSource(ImageSource):
    """``n`` random (size, size) RGB images with labels, domains and read accounting.

    Args:
        n: Number of samples.
        size: Image side.
        seed: Seed of the pixels and labels.
        bad: Indices whose image is unreadable (``DataError``, skipped by the loader).
        crash_at: First index whose read raises ``RuntimeError`` (a simulated
            interruption); set to ``None`` to stop crashing.
    """

    def __init__(
        self, n: int = 40, size: int = 16, seed: int = 0, bad: tuple[int, ...] = (), crash_at: int | None = None
    ) -> None:
        super().__init__(image_size=None)
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        self.labels = rng.integers(0, 3, size=n).astype(np.int64)
        self.domains = (np.arange(n) % 2).astype(np.int64)
        self.classes = ["a", "b", "c"]
        self.domain_names = ["even", "odd"]
        self.bad = set(bad)
        self.crash_at = crash_at
        self.reads: list[int] = []
        self.max_bad_fraction = 0.5

    def read(self, index: int) -> np.ndarray:
        self.reads.append(index)
        if self.crash_at is not None and index >= self.crash_at:
            raise RuntimeError(f"simulated interruption at sample {index}")
        if index in self.bad:
            raise DataError(f"sample {index} is unreadable")
        return self.images[index]

    def name(self, index: int) -> str:
        return f"img-{index:04d}.png"

    def batch(self, indices: list[int] | None = None) -> torch.Tensor:
        """The uint8 (B, 3, H, W) images at ``indices`` (all by default)."""
        chosen = self.images if indices is None else self.images[indices]
        return torch.from_numpy(np.ascontiguousarray(chosen.transpose(0, 3, 1, 2)))


@pytest.fixture
def random_source() -> Callable[..., RandomSource]:
    """Factory of :class:`RandomSource` objects."""
    return RandomSource


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
