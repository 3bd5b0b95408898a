"""Extracted tokens on disk, in shards, and their padded batches.

A token cache is a folder::

    tokens.json                  manifest: meta (extractor, source, dims), shards, complete flag
    shard-00000.safetensors      ragged tensors of up to ``shard_size`` images (+ names, captions in the header)
    ...
    backbone.safetensors         the backbone the mask embeddings came from (written by the extractor)
    relations.safetensors        the predicate embeddings used for ``U`` (one tensor per word)

Every file is written atomically and the manifest is rewritten after each
shard, so an interrupted extraction resumes at the first missing shard.

:func:`collate_tokens` packs samples into a :class:`TokenBatch`: sample ``i``
occupies positions ``0..|T_i|-1`` of the sequence in the order ``I, V, U``
(section 6.4.2) and the rest is padding, with its rank matrix (Eq. 6.1) in the
same positions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replens.data.base import DataError
from replens.models.weights import WeightsError, read_checkpoint, save_checkpoint
from replens.runs import atomic_write_json
from replens.tokens.sample import CONTEXT_LENGTH, VisualTokens

__all__ = ["TokenBatch", "TokenCacheError", "TokenCacheWriter", "TokenDataset", "collate_tokens"]

MANIFEST = "tokens.json"
FORMAT = "replens-tokens-1"


class TokenCacheError(DataError):
    """A token cache is missing, incomplete or inconsistent (a :class:`~replens.data.base.DataError`)."""


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


class TokenCacheWriter:
    """Write :class:`VisualTokens` to a cache folder in shards.

    Args:
        root: The cache folder.
        meta: What produced the tokens (extractor, source spec, ...); stored in the manifest.
        shard_size: Images per shard.
        resume: Keep the complete shards of an unfinished cache with the same
            ``meta`` (:attr:`done` tells how many images they hold).

    Raises:
        TokenCacheError: ``resume`` over a cache made with other ``meta``.
    """

    def __init__(self, root: str | Path, meta: dict[str, Any], shard_size: int = 1024, resume: bool = True) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.meta = json.loads(json.dumps(meta))
        self.shard_size = int(shard_size)
        self.shards: list[dict[str, Any]] = []
        manifest = self.root / MANIFEST
        if resume and manifest.is_file():
            old = json.loads(manifest.read_text())
            if old.get("meta") != self.meta or old.get("shard_size") != self.shard_size:
                raise TokenCacheError(
                    f"{self.root} holds tokens made with other settings; use another folder or delete it"
                )
            self.shards = [s for s in old["shards"] if (self.root / s["path"]).is_file()]
        self._pending: list[tuple[VisualTokens, str, int, list[str]]] = []

    @property
    def done(self) -> int:
        """Images already written."""
        return sum(int(s["count"]) for s in self.shards)

    def add(self, tokens: VisualTokens, name: str, index: int, captions: Sequence[str] = ()) -> None:
        """Queue one image's tokens (a shard is written every ``shard_size`` images)."""
        tokens.validate(f"tokens of {name!r}")
        self._pending.append((tokens, str(name), int(index), [str(c) for c in captions]))
        if len(self._pending) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        items = self._pending
        k = len(self.shards)
        tensors = {
            "image_features": torch.from_numpy(np.stack([t.image_features for t, *_ in items])),
            "tangible": torch.from_numpy(np.concatenate([t.tangible for t, *_ in items])),
            "intangible": torch.from_numpy(np.concatenate([t.intangible for t, *_ in items])),
            "boxes": torch.from_numpy(np.concatenate([t.boxes for t, *_ in items])),
            "neighbours": torch.from_numpy(np.concatenate([t.neighbours for t, *_ in items])),
            "triplets": torch.from_numpy(np.concatenate([t.triplets for t, *_ in items])),
            "counts": torch.tensor([[t.n_objects, t.n_relations, len(t.triplets)] for t, *_ in items]),
        }
        header = {
            "names": [n for _, n, _, _ in items],
            "indices": [i for _, _, i, _ in items],
            "captions": [c for *_, c in items],
            "object_names": [t.object_names for t, *_ in items],
            "relation_names": [t.relation_names for t, *_ in items],
        }
        path = self.root / _shard_name(k)
        save_checkpoint(path, tensors, header)
        self.shards.append({"path": path.name, "count": len(items)})
        self._pending = []
        self._write_manifest(complete=False)

    def _write_manifest(self, complete: bool) -> None:
        atomic_write_json(
            self.root / MANIFEST,
            {
                "format": FORMAT,
                "meta": self.meta,
                "shard_size": self.shard_size,
                "shards": self.shards,
                "count": self.done,
                "complete": complete,
            },
        )

    def close(self) -> Path:
        """Write the last shard and mark the cache complete."""
        self._flush()
        self._write_manifest(complete=True)
        return self.root


class TokenDataset(torch.utils.data.Dataset):
    """A complete token cache, in memory.

    Args:
        root: The cache folder.

    Attributes:
        meta: The extractor's metadata.
        names: Image names; ``indices``: their index in the source; ``captions``: per image.

    Raises:
        TokenCacheError: Missing or incomplete cache, or a shard that does not
            match the manifest (named in the message).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise TokenCacheError(f"no token cache in {self.root} (missing {MANIFEST}); run `replens tokens extract`")
        info = json.loads(manifest.read_text())
        if info.get("format") != FORMAT:
            raise TokenCacheError(f"{manifest}: unknown format {info.get('format')!r} (expected {FORMAT!r})")
        if not info.get("complete"):
            raise TokenCacheError(f"{self.root}: extraction did not finish; rerun `replens tokens extract` to resume")
        self.meta: dict[str, Any] = info["meta"]
        self.samples: list[VisualTokens] = []
        self.names: list[str] = []
        self.indices: list[int] = []
        self.captions: list[list[str]] = []
        for shard in info["shards"]:
            path = self.root / shard["path"]
            try:
                tensors, header = read_checkpoint(path)
            except WeightsError as exc:
                raise TokenCacheError(f"token shard {path}: {exc}") from None
            counts = tensors["counts"].numpy()
            if len(counts) != int(shard["count"]):
                raise TokenCacheError(f"token shard {path}: {len(counts)} images, manifest says {shard['count']}")
            ends = np.cumsum(counts, axis=0)
            starts = ends - counts
            for j in range(len(counts)):
                (n0, m0, k0), (n1, m1, k1) = starts[j], ends[j]
                self.samples.append(
                    VisualTokens(
                        image_features=tensors["image_features"][j].numpy(),
                        tangible=tensors["tangible"][n0:n1].numpy(),
                        intangible=tensors["intangible"][m0:m1].numpy(),
                        triplets=tensors["triplets"][k0:k1].numpy(),
                        neighbours=tensors["neighbours"][n0:n1].numpy(),
                        boxes=tensors["boxes"][n0:n1].numpy(),
                        object_names=list(header["object_names"][j]),
                        relation_names=list(header["relation_names"][j]),
                    )
                )
            self.names += list(header["names"])
            self.indices += [int(i) for i in header["indices"]]
            self.captions += [list(c) for c in header["captions"]]
        if len(self.samples) != int(info["count"]):
            raise TokenCacheError(f"{self.root}: {len(self.samples)} images in shards, manifest says {info['count']}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> VisualTokens:
        return self.samples[index]

    @property
    def dims(self) -> dict[str, int]:
        """Feature sizes ``{"image": d_i, "tangible": d_v, "intangible": d_u}``."""
        if not self.samples:
            raise TokenCacheError(f"{self.root} holds no images")
        s = self.samples[0]
        return {
            "image": s.image_features.shape[0],
            "tangible": s.tangible.shape[1],
            "intangible": s.intangible.shape[1],
        }

    def read_relation_table(self) -> dict[str, torch.Tensor]:
        """The predicate embeddings the cache was built with (``relations.safetensors``)."""
        from safetensors.torch import load_file

        path = self.root / "relations.safetensors"
        if not path.is_file():
            raise TokenCacheError(f"{path} is missing")
        return dict(load_file(str(path)))


@dataclass
class TokenBatch:
    """Padded token sequences of a batch (section 6.4.2).

    Sample ``i`` holds ``I`` at position 0, its ``n_i`` objects at ``1..n_i``
    and its ``m_i`` relations at ``n_i+1..n_i+m_i``; the rest is padding.

    Attributes:
        image_features: (B, d_i).
        tangible: (B, n_max, d_v), zero-padded.
        intangible: (B, m_max, d_u), zero-padded.
        boxes: (B, n_max, 4) normalised boxes.
        gather_index: (B, L) position of each sequence slot in the concatenation
            ``[I, tangible (n_max), intangible (m_max)]`` (0 for padding).
        token_type: (B, L) 0 image, 1 tangible, 2 intangible, -1 padding.
        ranks: (B, L, L) int64 rank matrices ``A_i`` (Eq. 6.1), 0 on padding.
        padding: (B, L) bool, True at padding positions.
    """

    image_features: torch.Tensor
    tangible: torch.Tensor
    intangible: torch.Tensor
    boxes: torch.Tensor
    gather_index: torch.Tensor
    token_type: torch.Tensor
    ranks: torch.Tensor
    padding: torch.Tensor

    def to(self, device: str | torch.device, non_blocking: bool = False) -> TokenBatch:
        """The batch on ``device``."""
        return TokenBatch(**{k: v.to(device, non_blocking=non_blocking) for k, v in self.__dict__.items()})

    def pin_memory(self) -> TokenBatch:
        """The batch in page-locked memory (called by ``DataLoader(pin_memory=True)``)."""
        return TokenBatch(**{k: v.pin_memory() for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return int(self.image_features.shape[0])

    @property
    def length(self) -> int:
        """Sequence length ``L`` (the longest sample)."""
        return int(self.padding.shape[1])


def collate_tokens(samples: Sequence[VisualTokens], context_length: int = CONTEXT_LENGTH) -> TokenBatch:
    """Pad samples into a :class:`TokenBatch` (samples longer than ``context_length`` are trimmed).

    Raises:
        ValueError: Empty batch or samples with different feature sizes.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    samples = [s.fit_context(context_length) for s in samples]
    dims = {(s.image_features.shape[0], s.tangible.shape[1], s.intangible.shape[1]) for s in samples}
    if len(dims) != 1:
        raise ValueError(f"samples have different feature sizes (d_i, d_v, d_u): {sorted(dims)}")
    d_i, d_v, d_u = dims.pop()
    b = len(samples)
    n_max = max(s.n_objects for s in samples)
    m_max = max(s.n_relations for s in samples)
    length = max(s.length for s in samples)
    image_features = torch.from_numpy(np.stack([s.image_features for s in samples]))
    tangible = torch.zeros(b, n_max, d_v)
    intangible = torch.zeros(b, m_max, d_u)
    boxes = torch.zeros(b, n_max, 4)
    gather_index = torch.zeros(b, length, dtype=torch.long)
    token_type = torch.full((b, length), -1, dtype=torch.long)
    ranks = torch.zeros(b, length, length, dtype=torch.long)
    for i, s in enumerate(samples):
        n, m = s.n_objects, s.n_relations
        tangible[i, :n] = torch.from_numpy(s.tangible)
        intangible[i, :m] = torch.from_numpy(s.intangible)
        boxes[i, :n] = torch.from_numpy(s.boxes)
        gather_index[i, 1 : 1 + n] = torch.arange(1, 1 + n)
        gather_index[i, 1 + n : 1 + n + m] = torch.arange(1 + n_max, 1 + n_max + m)
        token_type[i, 0] = 0
        token_type[i, 1 : 1 + n] = 1
        token_type[i, 1 + n : 1 + n + m] = 2
        size = s.length
        ranks[i, :size, :size] = torch.from_numpy(s.rank_matrix())
    return TokenBatch(
        image_features=image_features,
        tangible=tangible,
        intangible=intangible,
        boxes=boxes,
        gather_index=gather_index,
        token_type=token_type,
        ranks=ranks,
        padding=token_type < 0,
    )
