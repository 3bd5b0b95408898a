"""Shared helpers of the quality tests: single-threaded torch, sparse ResNet-like representations."""

from __future__ import annotations

import numpy as np

from replens.data.base import ImageSource


def sparse_representations(n: int, dim: int, seed: int = 0, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative, mostly small activations plus a few class-specific strong features per row."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = np.maximum(rng.standard_normal((n, dim)) - 0.7, 0.0) * rng.gamma(2.0, 0.3, dim)
    prototypes = rng.integers(0, dim, size=(classes, 4))
    for i in range(n):
        strong = prototypes[labels[i]][rng.random(4) < 0.8]
        x[i, strong] += rng.gamma(5.0, 1.0, len(strong))
    return x, labels


def direct_qscore(features: np.ndarray, eps: float, lower: float, upper: float):
    """Eq. 3.1 written out in float64 on L2-normalised rows, loop by loop (the reference)."""
    h = features.astype(np.float64)
    norms = np.linalg.norm(h, axis=1, keepdims=True)
    h = np.divide(h, norms, out=np.zeros_like(h), where=norms > 0)
    n, r = h.shape
    mu = h.mean(axis=1)
    sigma = h.std(axis=1)  # population std
    L = [set(np.flatnonzero(h[i] > mu[i] + eps * sigma[i])) for i in range(n)]
    A = np.array([100.0 * sum(j in L[i] for i in range(n)) / n for j in range(r)])
    order = sorted(range(r), key=lambda j: (A[j], j))
    D = sorted(order[k] for k in range(r) if lower <= 100.0 * k / r < upper or (upper == 100 and k == r - 1))
    Q = np.zeros(n)
    for i in range(n):
        chosen = [j for j in L[i] if j in set(D)]
        if chosen:
            Q[i] = sum(h[i, j] - mu[i] for j in chosen) / len(chosen)
    margin = min((abs(h[i] - mu[i] - eps * sigma[i]).min() for i in range(n) if sigma[i] > 0), default=np.inf)
    return {"L": L, "A": A, "D": np.array(D), "Q": Q, "margin": margin, "sigma": sigma}


class TinySource(ImageSource):
    """``n`` random RGB images, labels in ``range(classes)``, one domain."""

    def __init__(self, n: int = 32, size: int = 16, seed: int = 0, classes: int = 3) -> None:
        super().__init__(image_size=None)
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        self.labels = rng.integers(0, classes, n).astype(np.int64)
        for i, y in enumerate(self.labels):  # a class-coloured square, so features carry the label
            self.images[i, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = [(80 * y) % 256, 255 - 70 * y, 90]
        self.domains = np.zeros(n, dtype=np.int64)
        self.classes = [f"c{k}" for k in range(classes)]
        self.domain_names = ["only"]

    def read(self, index: int) -> np.ndarray:
        return self.images[index]
