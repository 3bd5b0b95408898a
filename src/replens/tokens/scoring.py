"""Evaluate token models: retrieval (paper section 6.5.2) and compositional sets (section 6.5.3).

Works for every image side of :class:`~replens.tokens.model.DualEncoder`:
token encoders read visual tokens (a token cache, or tokens made on the fly
for new images by a :class:`~replens.tokens.extract.GraphTokenizer`), image
encoders read the images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from replens.data import open_source
from replens.data.base import resize_center_crop
from replens.evaluate.compositional import caption_choice_accuracy, winoground_scores
from replens.evaluate.retrieval import caption_positives, retrieval_recall, similarity_contrast
from replens.tokens.cache import TokenDataset, collate_tokens
from replens.tokens.model import DualEncoder

__all__ = [
    "PairData",
    "compositional_metrics",
    "embed_captions",
    "embed_items",
    "image_embedder",
    "retrieval_metrics",
    "text_embedder",
]

#: Names of the world's sets in the paper's benchmark terms.
SET_NAMES = {
    "relation_swap": "VG-Relation-like",
    "attribute_swap": "VG-Attribution-like",
    "word_order": "COCO-Order-like",
    "groups": "Winoground-like",
}


class PairData:
    """Image-caption pairs: a token cache and (for image encoders) the images it was made from.

    Args:
        tokens: The token cache.
        source: The image source the cache was extracted from (opened from the
            cache's ``meta["source"]`` when None and images are needed).

    Raises:
        ValueError: Images are needed but the cache names no source.
    """

    def __init__(self, tokens: TokenDataset, source: Any | None = None) -> None:
        self.tokens = tokens
        self._source = source

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def captions(self) -> list[list[str]]:
        """Captions of every image."""
        return self.tokens.captions

    @property
    def source(self) -> Any:
        """The image source (opened on first use)."""
        if self._source is None:
            spec = self.tokens.meta.get("source")
            if not spec:
                raise ValueError(f"token cache {self.tokens.root} names no image source; image encoders need one")
            self._source = open_source(spec)
        return self._source

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        """(B, 3, H, W) uint8 images of cache items ``indices``."""
        src = self.source
        out = []
        for i in indices:
            sample = src[self.tokens.indices[int(i)]]
            if sample["image"] is None:
                raise ValueError(f"image {sample['name']!r} of {src.describe()} is unreadable")
            out.append(sample["image"])
        return torch.stack(out)

    def inputs(self, model: DualEncoder | bool, indices: Sequence[int], context_length: int) -> dict[str, Any]:
        """``encode_image`` keyword arguments for items ``indices``.

        Args:
            model: The model, or whether it reads tokens (``model.uses_tokens``).
            indices: Cache items.
            context_length: Token context length.
        """
        uses_tokens = model if isinstance(model, bool) else model.uses_tokens
        if uses_tokens:
            return {"tokens": collate_tokens([self.tokens[int(i)] for i in indices], context_length)}
        return {"images": self.images(indices)}


def _context(model: DualEncoder) -> int:
    enc = model.image_encoder
    return int(getattr(getattr(enc, "config", None), "context_length", 77))


@torch.no_grad()
def embed_items(model: DualEncoder, data: PairData, indices: Sequence[int] | None = None,
                batch_size: int = 256) -> torch.Tensor:
    """L2-normalised image embeddings of cache items (all by default), float32 on the CPU."""
    indices = list(range(len(data))) if indices is None else list(indices)
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    parts = []
    try:
        for start in range(0, len(indices), batch_size):
            inputs = data.inputs(model, indices[start : start + batch_size], _context(model))
            inputs = {k: v.to(device) for k, v in inputs.items()}
            parts.append(model.encode_image(**inputs).float().cpu())
    finally:
        model.train(was)
    return torch.cat(parts) if parts else torch.zeros(0, model.vl.embed_dim)


@torch.no_grad()
def embed_captions(model: DualEncoder, captions: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """L2-normalised text embeddings, float32 on the CPU (each distinct caption encoded once)."""
    distinct = sorted(set(captions))
    where = {c: k for k, c in enumerate(distinct)}
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    parts = []
    try:
        for start in range(0, len(distinct), batch_size):
            tokens = model.vl.tokenize(distinct[start : start + batch_size]).to(device)
            parts.append(model.encode_text(tokens).float().cpu())
    finally:
        model.train(was)
    table = torch.cat(parts) if parts else torch.zeros(0, model.vl.embed_dim)
    return table[torch.tensor([where[c] for c in captions], dtype=torch.long)]


def retrieval_metrics(
    model: DualEncoder,
    data: PairData,
    *,
    caption_index: int | None = 0,
    max_items: int | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K both ways and the diagonal/off-diagonal similarity on cache items.

    Args:
        model: The trained model.
        data: Held-out pairs.
        caption_index: Which caption of each image is the query (None: all of
            them, COCO style); images whose captions include the query string
            count as correct (see :func:`~replens.evaluate.retrieval.caption_positives`).
        max_items: Use the first ``max_items`` images only.
        ks: Recall cut-offs.
    """
    n = len(data) if max_items is None else min(len(data), max_items)
    if n < 2:
        raise ValueError("retrieval needs at least two images")
    image_captions = data.captions[:n]
    if caption_index is None:
        texts = [c for caps in image_captions for c in caps]
        matched = [caps[0] for caps in image_captions]
    else:
        if any(len(caps) <= caption_index for caps in image_captions):
            raise ValueError(f"some images have no caption {caption_index}")
        texts = [caps[caption_index] for caps in image_captions]
        matched = texts
    img = embed_items(model, data, range(n))
    txt = embed_captions(model, texts)
    out = retrieval_recall(img, txt, caption_positives(texts, image_captions), ks)
    out.update(similarity_contrast(img, embed_captions(model, matched) if matched is not texts else txt))
    return out


def _set_inputs(model: DualEncoder, images: np.ndarray, graphs: Sequence[Any], tokenizer: Any | None,
                batch_size: int) -> torch.Tensor:
    """Normalised embeddings of (N, H, W, 3) images with their scene graphs."""
    device = next(model.parameters()).device
    parts = []
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
                if model.uses_tokens:
                    if tokenizer is None:
                        raise ValueError(f"encoder {model.kind!r} needs a tokenizer for new images")
                    toks = tokenizer.tokenize(chunk, graphs[start : start + batch_size])
                    emb = model.encode_image(tokens=collate_tokens(toks, _context(model)).to(device))
                else:
                    emb = model.encode_image(images=chunk.to(device))
                parts.append(emb.float().cpu())
    finally:
        model.train(was)
    return torch.cat(parts)


def compositional_metrics(
    model: DualEncoder, sets: dict[str, Any], tokenizer: Any | None = None, batch_size: int = 128
) -> dict[str, Any]:
    """ARO-like accuracies and Winoground-like scores on the world's compositional sets.

    Args:
        model: The trained model.
        sets: ``{kind: CompositionalSet}`` from :func:`replens.tokens.world.world_compositional_sets`.
        tokenizer: Makes tokens of the sets' images (token encoders only): the
            extractor the training cache was made with.
        batch_size: Images per forward.

    Returns:
        ``{"relation_swap": acc, "attribute_swap": acc, "word_order": acc,
        "aro_mean": mean of the three, "groups": {"text", "image", "group"}}``
        (percentages; only the sets given).
    """
    out: dict[str, Any] = {}
    for kind, cset in sets.items():
        if kind == "groups":
            images = cset.images.reshape(-1, *cset.images.shape[2:])
            graphs = [g for pair in cset.graphs for g in pair]
            img = _set_inputs(model, images, graphs, tokenizer, batch_size).reshape(len(cset), 2, -1)
            txt = embed_captions(model, [c for caps in cset.captions for c in caps]).reshape(len(cset), 2, -1)
            scores = torch.einsum("nck,nik->nci", txt, img).numpy()
            out[kind] = winoground_scores(scores)
        else:
            img = _set_inputs(model, cset.images, cset.graphs, tokenizer, batch_size)
            n_opts = len(cset.captions[0])
            txt = embed_captions(model, [c for caps in cset.captions for c in caps]).reshape(len(cset), n_opts, -1)
            out[kind] = caption_choice_accuracy(torch.einsum("nk,nck->nc", img, txt).numpy())
    aro = [out[k] for k in ("relation_swap", "attribute_swap", "word_order") if k in out]
    if aro:
        out["aro_mean"] = float(np.mean(aro))
    return out


def image_embedder(model: DualEncoder, tokenizer: Any | None = None) -> Any:
    """A callable mapping a list of (H, W, 3) uint8 images of any sizes to (n, k) normalised embeddings.

    For the loaders of :mod:`replens.evaluate.compositional` (ARO, Winoground,
    SugarCrepe on real images). Token encoders need a tokenizer that works on
    images alone, i.e. :class:`~replens.tokens.maskrcnn.MaskRCNNTokenizer`;
    image encoders get each image resized (shorter side, centre crop) to
    their input side.
    """
    device = next(model.parameters()).device
    if model.uses_tokens and tokenizer is None:
        raise ValueError(f"encoder {model.kind!r} needs a tokenizer that makes tokens from images alone")
    side = int(model.image_encoder.image_size) if model.kind == "vit" else int(model.vl.image_size)

    @torch.no_grad()
    def embed(images: list[np.ndarray]) -> np.ndarray:
        was = model.training
        model.eval()
        try:
            if model.uses_tokens:
                tensors = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images]
                batch = collate_tokens(tokenizer.tokenize(tensors), _context(model)).to(device)
                out = model.encode_image(tokens=batch)
            else:
                stacked = np.stack([resize_center_crop(np.asarray(im), side) for im in images])
                out = model.encode_image(images=torch.from_numpy(stacked).permute(0, 3, 1, 2).to(device))
        finally:
            model.train(was)
        return out.float().cpu().numpy()

    return embed


def text_embedder(model: DualEncoder) -> Any:
    """A callable mapping a list of captions to (n, k) normalised embeddings (numpy)."""

    def embed(texts: list[str]) -> np.ndarray:
        return embed_captions(model, texts).numpy()

    return embed
