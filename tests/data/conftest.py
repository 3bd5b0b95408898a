"""Tiny generated data for the data-source tests (nothing is read from disk outside tmp_path)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode an (H, W, 3) uint8 array (PNG is lossless, so pixels round-trip)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write members to a tar, gzip-compressed when the name ends in .gz / .tgz."""
    mode = "w:gz" if path.name.endswith((".gz", ".tgz")) else "w"
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class ShardMaker:
    """Writes WebDataset shards of random PNG images and remembers what it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rng = np.random.default_rng(0)

    def images(self, n: int, size: int = 8) -> list[np.ndarray]:
        return [self.rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]

    def shard(
        self,
        name: str,
        labels: list[int | None],
        *,
        start: int = 0,
        meta: list[dict | None] | None = None,
        size: int = 8,
    ) -> tuple[Path, list[np.ndarray]]:
        """A shard with one PNG per label (None: no .cls member) and optional .json."""
        images = self.images(len(labels), size)
        members: list[tuple[str, bytes]] = []
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            key = f"{start + i:06d}"
            members.append((f"{key}.png", encode(image)))
            if label is not None:
                members.append((f"{key}.cls", str(label).encode()))
            if meta is not None and meta[i] is not None:
                members.append((f"{key}.json", json.dumps(meta[i]).encode()))
        path = write_tar(self.root / name, members)
        return path, images


@pytest.fixture
def shards(tmp_path: Path) -> ShardMaker:
    """Factory of WebDataset shards in tmp_path."""
    return ShardMaker(tmp_path)


@pytest.fixture
def tar_writer() -> Callable[[Path, list[tuple[str, bytes]]], Path]:
    """``write_tar(path, [(member, bytes), ...])``."""
    return write_tar


@pytest.fixture
def png() -> Callable[..., bytes]:
    """``encode(image, fmt="PNG")``."""
    return encode
