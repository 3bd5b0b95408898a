"""Read a generated world: a memory-mapped :class:`~replens.data.base.ImageSource`
with accessors for every piece of ground truth."""

from __future__ import annotations

import copy
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from replens.data.base import DataError, ImageSource
from replens.world.config import SPLITS, WorldConfig
from replens.world.generate import read_manifest, verify_world, verify_world_once
from replens.world.render import MARKER_LABEL
from replens.world.scene import SceneBatch
from replens.world.vocab import PATCH_CUES


class WorldDataset(ImageSource):
    """One split of a generated world, following the sample protocol of
    :mod:`replens.data.base`.

    Images, segmentations and boxes are memory-mapped (opened lazily, so the
    dataset pickles cheaply into DataLoader workers); labels, domains and the
    per-image records are small and read eagerly or on first use.

    Masks (:meth:`masks`, :meth:`core_mask`, :meth:`spurious_mask`) are returned
    at the resolution of the images ``__getitem__`` returns (nearest-neighbour
    resized when ``image_size`` is set); boxes and records are in stored pixels.

    Args:
        root: The world directory (see :mod:`replens.world.generate`).
        split: ``"train"`` or ``"test"``.
        image_size: Side of the returned images; ``None`` keeps the stored size.
    """

    def __init__(self, root: str | Path, split: str = "train", image_size: int | None = None) -> None:
        super().__init__(image_size)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.manifest = read_manifest(self.root)
        self.config = WorldConfig.from_dict(self.manifest["config"])
        self.classes: list[str] = list(self.manifest["classes"])
        self.domain_names: list[str] = list(self.manifest["domains"])
        self._shards = [s for s in self.manifest["shards"] if s["split"] == split]
        self._starts = np.array([s["start"] for s in self._shards], dtype=np.int64)
        self.labels = self._concat("labels.npy", np.int64, ())
        self.domains = self._concat("domains.npy", np.int64, ())
        self.n_objects = self._concat("scene/n_objects.npy", np.int8, ()).astype(np.int64)
        self.spurious_aligned = self._concat("scene/spurious_aligned.npy", np.bool_, ())
        cue = "scene/marker.npy" if self.config.spurious_cue in PATCH_CUES else "scene/background.npy"
        #: (n,) int64 value of the spurious cue (marker or background index, one per class).
        self.spurious_cues = self._concat(cue, np.int8, ()).astype(np.int64)
        self._mmaps: dict[str, list[np.ndarray]] | None = None
        self._records: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ storage
    def _load(self, shard: dict[str, Any], name: str, mmap: bool) -> np.ndarray:
        path = self.root / shard["path"] / name
        if not path.is_file():
            raise DataError(f"world file missing: {path}")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)

    def _concat(self, name: str, dtype: type, tail: tuple[int, ...]) -> np.ndarray:
        parts = [self._load(s, name, mmap=False) for s in self._shards]
        if not parts:
            return np.zeros((0, *tail), dtype=dtype)
        return np.concatenate(parts)

    def _arrays(self, name: str) -> list[np.ndarray]:
        if self._mmaps is None:
            self._mmaps = {}
        if name not in self._mmaps:
            self._mmaps[name] = [self._load(s, name, mmap=True) for s in self._shards]
        return self._mmaps[name]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mmaps"] = None  # reopened lazily in the receiving process
        return state

    def _locate(self, index: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index = int(index) % n
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        return shard, index - int(self._starts[shard])

    def _row(self, name: str, index: int) -> np.ndarray:
        shard, local = self._locate(index)
        return np.array(self._arrays(name)[shard][local])

    # ----------------------------------------------------------- sample protocol
    def read(self, index: int) -> np.ndarray:
        """Image ``index`` as stored: (H, W, 3) uint8."""
        return self._row("images.npy", index)

    def name(self, index: int) -> str:
        """``world/<split>/<index:06d>``."""
        return f"world/{self.split}/{int(index) % max(len(self), 1):06d}"

    # --------------------------------------------------------------- ground truth
    @property
    def records(self) -> list[dict[str, Any]]:
        """Per-image records (parsed once from the shards' ``records.jsonl``)."""
        if self._records is None:
            records: list[dict[str, Any]] = []
            for shard in self._shards:
                path = self.root / shard["path"] / "records.jsonl"
                with open(path, encoding="utf-8") as fh:
                    records.extend(json.loads(line) for line in fh)
            self._records = records
        return self._records

    def record(self, index: int) -> dict[str, Any]:
        """Everything known about image ``index``.

        Returns:
            A dict with ``index``, ``name``, ``label``, ``class``, ``domain``,
            ``objects`` (each with ``shape``, ``colour``, ``texture``, ``size``
            and ``box`` ``[x0, y0, x1, y1]``, x1/y1 exclusive, stored pixels),
            ``relations`` (``{"subject", "relation", "object"}`` with object
            positions in ``objects``), ``captions``, ``concepts``,
            ``background``, ``marker`` and ``spurious_aligned``.
        """
        self._locate(index)
        index = int(index) % len(self)
        out = copy.deepcopy(self.records[index])
        out.update(index=index, name=self.name(index), label=int(self.labels[index]))
        return out

    @property
    def captions(self) -> list[list[str]]:
        """Template captions of every image (list per image)."""
        return [r["captions"] for r in self.records]

    @property
    def concepts(self) -> list[list[str]]:
        """True concepts of every image (list per image)."""
        return [r["concepts"] for r in self.records]

    @property
    def boxes(self) -> np.ndarray:
        """(n, K, 4) int16 boxes in stored pixels, -1 for empty slots."""
        return self._concat("boxes.npy", np.int16, (self.config.max_objects, 4))

    def segmentation(self, index: int) -> np.ndarray:
        """(H, W) uint8 stored segmentation: 0 background, k + 1 object k, 255 marker."""
        return self._row("segmentation.npy", index)

    def _resize(self, masks: np.ndarray) -> np.ndarray:
        if self.image_size is None or masks.shape[-1] == self.image_size:
            return masks
        size = (self.image_size, self.image_size)
        return np.stack(
            [np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127 for m in masks]
        )

    def masks(self, index: int) -> np.ndarray:
        """(n_objects, H, W) bool instance masks, in object order (main object first)."""
        seg = self.segmentation(index)
        k = int(self.n_objects[int(index) % len(self)])
        return self._resize(seg[None] == np.arange(1, k + 1, dtype=np.uint8)[:, None, None])

    def core_mask(self, index: int) -> np.ndarray:
        """(H, W) bool pixels of the main object (paper section 3.5: the core region)."""
        return self._resize((self.segmentation(index) == 1)[None])[0]

    def spurious_mask(self, index: int) -> np.ndarray:
        """(H, W) bool pixels of the spurious cue: the marker patch or the background."""
        seg = self.segmentation(index)
        region = seg == MARKER_LABEL if self.config.spurious_cue in PATCH_CUES else seg == 0
        return self._resize(region[None])[0]

    def scenes(self) -> SceneBatch:
        """The scene specifications of the split (re-render them at any size)."""
        data = {f.name: self._concat(f"scene/{f.name}.npy", np.float32, ()) for f in fields(SceneBatch)}
        return SceneBatch(**data)

    def __repr__(self) -> str:
        return (
            f"WorldDataset(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
            f"size={self.config.size}, domains={self.domain_names})"
        )


def load_world(
    path: str | Path, split: str = "train", image_size: int | None = None, *, verify: bool = False
) -> WorldDataset:
    """Open one split of a generated world.

    Args:
        path: The directory :func:`~replens.world.generate.generate_world` wrote.
        split: ``"train"`` or ``"test"``.
        image_size: Side of the images ``__getitem__`` returns (``None``: stored size).
        verify: Re-hash every file against the manifest now; otherwise the files are checked once
            per world state (:func:`~replens.world.generate.verify_world_once`).

    Returns:
        The :class:`WorldDataset`.
    """
    if verify:
        verify_world(path)
    else:
        verify_world_once(path)
    return WorldDataset(path, split=split, image_size=image_size)
