"""Colored-CIFAR (paper section 2.3): any source with each image tinted red or green at random.

The tint is the domain: each sample's luminance (ITU-R BT.601 weights) is
multiplied by one RGB tint, the same tints the embedded world uses for its
``tint_red`` / ``tint_green`` render domains, so the two Colored settings are
comparable. The draw is a pure function of ``seed``, so the train and test
sources of an experiment are reproducible (use different seeds for them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from replens.data.base import DataError, ImageSource

#: RGB multipliers of the tints (as the world's ``tint_red`` / ``tint_green`` domains).
TINTS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.22, 0.22),
    "green": (0.22, 1.0, 0.22),
    "blue": (0.22, 0.22, 1.0),
}


def tint_image(image: np.ndarray, tint: Sequence[float]) -> np.ndarray:
    """Luminance of ``image`` times the RGB ``tint``.

    Shape:
        image: (H, W, 3) uint8 -> (H, W, 3) uint8.
    """
    x = image.astype(np.float32)
    luminance = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = luminance[..., None] * np.asarray(tint, dtype=np.float32)[None, None, :]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class TintedSource(ImageSource):
    """``source`` with every image tinted by one of ``tints``, drawn uniformly; the tint is the domain.

    Args:
        source: Any image source (its own domains are replaced).
        tints: Tint names (keys of :data:`TINTS`) or a mapping name -> RGB multipliers.
        seed: Seed of the per-sample draw.

    Attributes:
        domains: (N,) int64 tint index of each sample; ``domain_names`` are
            ``tint_<name>``.
    """

    def __init__(self, source: ImageSource, tints: Sequence[str] | dict[str, Sequence[float]] = ("red", "green"),
                 seed: int = 0) -> None:
        super().__init__(source.image_size)
        if isinstance(tints, dict):
            table = {str(k): tuple(float(c) for c in v) for k, v in tints.items()}
        else:
            unknown = [t for t in tints if t not in TINTS]
            if unknown:
                raise DataError(f"unknown tint(s) {unknown}; known: {sorted(TINTS)} (or pass name -> RGB)")
            table = {t: TINTS[t] for t in tints}
        if len(table) < 1 or any(len(v) != 3 for v in table.values()):
            raise DataError(f"tints must be one or more RGB triples, got {table}")
        self.source = source
        self.tints = [np.asarray(v, dtype=np.float32) for v in table.values()]
        self.classes = source.classes
        self.domain_names = [f"tint_{name}" for name in table]
        self.labels = np.asarray(source.labels)
        self.domains = np.random.default_rng(seed).integers(0, len(table), len(source)).astype(np.int64)
        self.max_bad_fraction = source.max_bad_fraction
        self.spec = None

    def __len__(self) -> int:
        return len(self.source)

    def read(self, index: int) -> np.ndarray:
        """Image ``index`` of the wrapped source, tinted with its domain's tint."""
        return tint_image(self.source.read(index), self.tints[int(self.domains[index])])

    def name(self, index: int) -> str:
        return self.source.name(index)

    def describe(self) -> str:
        return f"TintedSource({self.source.describe()}, {self.domain_names})"
