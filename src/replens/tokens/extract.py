"""Token extraction (paper section 6.4.1): scene graphs in, :class:`VisualTokens` out.

Every extractor reduces an image to a :class:`SceneGraph` (object boxes, masks,
names and ``(subject, object, predicate)`` relations) and then to tokens the
same way (:class:`GraphTokenizer`):

* ``I``: each chosen backbone layer 2-D average pooled, concatenated (the paper
  pools every layer of its segmenter and concatenates);
* ``V``: mask embeddings, the backbone's feature maps averaged under each
  object's mask (weighted by the fraction of each feature cell the mask
  covers), layers concatenated. SEEM's X-Decoder mask embeddings are not
  available offline; mask pooling of a backbone's feature map is the
  substitute, and the box of every object is kept alongside (``boxes``);
* ``U``: the text embedding of each relation's predicate from the VL model's
  text encoder (one token per relation, as the authors' code does);
* ``E``: the triplets, ``N``: 4 nearest neighbours by box-centre distance.

Graph sources: (a) the embedded world's ground truth (:func:`world_scene_graph`),
(b) torchvision Mask R-CNN with geometric predicates
(:mod:`replens.tokens.maskrcnn`), (c) Visual Genome / PSG scene-graph JSON
(:mod:`replens.tokens.scene_graph`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from replens.tokens.sample import CONTEXT_LENGTH, N_NEIGHBOURS, VisualTokens, nearest_neighbours

__all__ = [
    "GraphTokenizer",
    "RelationEmbedder",
    "SceneGraph",
    "build_batch_tokens",
    "build_tokens",
    "default_pool_layers",
    "mask_pool",
    "world_scene_graph",
]


@dataclass
class SceneGraph:
    """Objects and relations of one image, before embedding.

    Attributes:
        boxes: (n, 4) float pixel boxes ``x0, y0, x1, y1`` (x1/y1 exclusive).
        relations: ``(subject, object, predicate)`` with object indices and a predicate word.
        image_size: ``(height, width)`` of the image the boxes refer to.
        masks: Optional (n, H, W) bool instance masks; boxes are rasterised when absent.
        names: Object names (class or description).
    """

    boxes: np.ndarray
    relations: list[tuple[int, int, str]]
    image_size: tuple[int, int]
    masks: np.ndarray | None = None
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            if self.masks.ndim != 3 or self.masks.shape[0] != n:
                raise ValueError(f"scene graph: {n} boxes but masks of shape {self.masks.shape}")
        for s, o, p in self.relations:
            if not (0 <= s < n and 0 <= o < n):
                raise ValueError(f"scene graph: relation ({s}, {o}, {p!r}) names an object outside 0..{n - 1}")
        if self.names and len(self.names) != n:
            raise ValueError(f"scene graph: {len(self.names)} names for {n} boxes")

    def object_masks(self, height: int, width: int) -> np.ndarray:
        """(n, height, width) bool masks: the given masks resized, else the rasterised boxes."""
        n = len(self.boxes)
        if self.masks is not None:
            if self.masks.shape[1:] == (height, width):
                return self.masks
            m = torch.from_numpy(self.masks).float()[:, None]
            return (F.interpolate(m, size=(height, width), mode="nearest")[:, 0] > 0.5).numpy()
        out = np.zeros((n, height, width), dtype=bool)
        sy, sx = height / self.image_size[0], width / self.image_size[1]
        for k, (x0, y0, x1, y1) in enumerate(self.boxes):
            r0, r1 = int(np.floor(y0 * sy)), max(int(np.floor(y0 * sy)) + 1, int(np.ceil(y1 * sy)))
            c0, c1 = int(np.floor(x0 * sx)), max(int(np.floor(x0 * sx)) + 1, int(np.ceil(x1 * sx)))
            out[k, max(r0, 0) : min(r1, height), max(c0, 0) : min(c1, width)] = True
        return out


def world_scene_graph(world: Any, index: int) -> SceneGraph:
    """Extractor (a): the embedded world's ground truth for image ``index``.

    Masks come from :meth:`~replens.world.WorldDataset.masks`, boxes and
    relations from :meth:`~replens.world.WorldDataset.record`. Objects hidden
    completely by others (empty mask) are dropped with their relations.
    """
    rec = world.record(index)
    masks = world.masks(index)
    height, width = masks.shape[1:]
    stored = int(world.config.size)
    scale_y, scale_x = height / stored, width / stored
    keep = [k for k in range(len(rec["objects"])) if k < len(masks) and masks[k].any()]
    new = {old: i for i, old in enumerate(keep)}
    boxes = np.array(
        [[o["box"][0] * scale_x, o["box"][1] * scale_y, o["box"][2] * scale_x, o["box"][3] * scale_y]
         for o in (rec["objects"][k] for k in keep)],
        dtype=np.float32,
    ).reshape(-1, 4)
    names = []
    for k in keep:
        obj = rec["objects"][k]
        texture = "" if obj["texture"] == "solid" else f" {obj['texture']}"
        names.append(f"{obj['size']} {obj['colour']}{texture} {obj['shape']}")
    relations = [
        (new[r["subject"]], new[r["object"]], str(r["relation"]))
        for r in rec["relations"]
        if r["subject"] in new and r["object"] in new
    ]
    return SceneGraph(boxes, relations, (height, width), masks=masks[keep], names=names)


def default_pool_layers(backbone: Any) -> list[str]:
    """The top-level stages of a backbone (its layer names without a dot)."""
    names = [n for n in backbone.layer_names() if "." not in n]
    return names or list(backbone.layer_names())[-1:]


def _as_maps(output: torch.Tensor, prefix: int, layer: str) -> torch.Tensor:
    """(B, C, h, w) feature maps from a conv output or transformer tokens (prefix tokens dropped)."""
    if output.ndim == 4:
        return output
    if output.ndim == 3:
        tokens = output[:, prefix:]
        side = int(round(tokens.shape[1] ** 0.5))
        if side * side != tokens.shape[1]:
            raise ValueError(f"layer {layer!r}: {tokens.shape[1]} tokens do not form a square grid")
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
    raise ValueError(f"layer {layer!r}: cannot pool an output of shape {tuple(output.shape)}")


def mask_pool(maps: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Average feature vectors under soft masks.

    Each mask is area-pooled to the map's resolution (the fraction of each
    feature cell it covers) and used as weights: ``sum(w * f) / sum(w)``. A
    mask too small to cover any cell falls back to its nearest cells (the
    mask is dilated to one cell).

    Args:
        maps: (C, h, w) features of one image.
        masks: (n, H, W) bool/float masks of its objects.

    Returns:
        (n, C) pooled features.
    """
    if masks.shape[0] == 0:
        return maps.new_zeros(0, maps.shape[0])
    h, w = maps.shape[-2:]
    weights = F.adaptive_avg_pool2d(masks.float()[:, None], (h, w))[:, 0]
    empty = weights.flatten(1).sum(1) <= eps
    if bool(empty.any()):
        weights[empty] = F.adaptive_max_pool2d(masks[empty].float()[:, None], (h, w))[:, 0]
    weights = weights.to(maps.dtype)
    pooled = torch.einsum("nhw,chw->nc", weights, maps)
    return pooled / weights.flatten(1).sum(1, keepdim=True).clamp_min(eps)


class RelationEmbedder:
    """Text embeddings of predicate words from a VL model's text encoder (the ``U`` tokens).

    Embeddings are L2-normalised (CLIP-style) and cached per word. A table of
    known words can be given instead of (or besides) a model, which is how a
    token cache re-embeds the relations of new images with the exact vectors
    it was built with.

    Args:
        vl: A :class:`~replens.vl.VLModel` (or None when ``table`` covers every word).
        table: Known ``{word: (d_u,) tensor}``.
    """

    def __init__(self, vl: Any | None = None, table: dict[str, torch.Tensor] | None = None) -> None:
        if vl is None and not table:
            raise ValueError("RelationEmbedder needs a VL model or a table of word embeddings")
        self.vl = vl
        self.table: dict[str, torch.Tensor] = {k: v.float().cpu() for k, v in (table or {}).items()}
        self.dim = int(vl.embed_dim) if vl is not None else int(next(iter(self.table.values())).shape[-1])

    def __call__(self, words: Sequence[str]) -> torch.Tensor:
        """(len(words), d_u) embeddings."""
        missing = sorted({w for w in words if w not in self.table})
        if missing:
            if self.vl is None:
                raise KeyError(f"no embedding for relation words {missing} and no VL model to embed them")
            for word, emb in zip(missing, self.vl.embed_texts(missing), strict=True):
                self.table[word] = emb.float().cpu()
        if not words:
            return torch.zeros(0, self.dim)
        return torch.stack([self.table[w] for w in words])


def build_tokens(
    graph: SceneGraph,
    image_features: torch.Tensor | np.ndarray,
    tangible: torch.Tensor | np.ndarray,
    relation_embedder: RelationEmbedder,
    *,
    n_neighbours: int = N_NEIGHBOURS,
    context_length: int = CONTEXT_LENGTH,
) -> VisualTokens:
    """Assemble ``I, V, U, E, N`` for one image (section 6.4.1) and fit the context length.

    Args:
        graph: The image's scene graph.
        image_features: (d_i,) ``I``.
        tangible: (n, d_v) mask embeddings, in ``graph`` object order.
        relation_embedder: Embeds the predicate words.
        n_neighbours: Nearest neighbours per object (at most 4).
        context_length: Largest ``1 + |V| + |U|`` (see :meth:`VisualTokens.fit_context`).
    """
    if not 0 <= n_neighbours <= N_NEIGHBOURS:
        raise ValueError(f"n_neighbours must be in 0..{N_NEIGHBOURS}, got {n_neighbours}")
    words = [p for _, _, p in graph.relations]
    intangible = relation_embedder(words)
    triplets = np.array([[s, o, c] for c, (s, o, _) in enumerate(graph.relations)], dtype=np.int64).reshape(-1, 3)
    neighbours = np.full((len(graph.boxes), N_NEIGHBOURS), -1, dtype=np.int64)
    if n_neighbours:
        neighbours[:, :n_neighbours] = nearest_neighbours(graph.boxes, n_neighbours)
    height, width = graph.image_size
    boxes = graph.boxes / np.array([width, height, width, height], dtype=np.float32)
    tokens = VisualTokens(
        image_features=np.asarray(torch.as_tensor(image_features).float().cpu()),
        tangible=np.asarray(torch.as_tensor(tangible).float().cpu()),
        intangible=intangible.numpy(),
        triplets=triplets,
        neighbours=neighbours,
        boxes=np.clip(boxes, 0.0, 1.0),
        object_names=list(graph.names),
        relation_names=words,
    )
    return tokens.fit_context(context_length)


def build_batch_tokens(
    graphs: Sequence[SceneGraph],
    image_features: torch.Tensor | Sequence[torch.Tensor],
    tangible: Sequence[torch.Tensor],
    relation_embedder: RelationEmbedder,
    n_neighbours: int = N_NEIGHBOURS,
    context_length: int = CONTEXT_LENGTH,
) -> list[VisualTokens]:
    """:func:`build_tokens` of each image of a batch: ``graphs[b]`` with ``image_features[b]`` and ``tangible[b]``."""
    return [
        build_tokens(
            g,
            image_features[b],
            tangible[b],
            relation_embedder,
            n_neighbours=n_neighbours,
            context_length=context_length,
        )
        for b, g in enumerate(graphs)
    ]


class GraphTokenizer:
    """Scene graphs + images -> :class:`VisualTokens` with a backbone and a VL text encoder.

    Args:
        backbone: A :class:`~replens.models.Backbone` (put in eval mode here).
        relation_embedder: Embeds predicate words (``U``).
        layers: Backbone layers to pool (default: its top-level stages).
        n_neighbours: Nearest neighbours per object.
        context_length: Token context length.
        device: Where the backbone runs.
    """

    def __init__(
        self,
        backbone: Any,
        relation_embedder: RelationEmbedder,
        *,
        layers: Sequence[str] | None = None,
        n_neighbours: int = N_NEIGHBOURS,
        context_length: int = CONTEXT_LENGTH,
        device: str | torch.device = "cpu",
    ) -> None:
        self.backbone = backbone.to(device).eval()
        self.relation_embedder = relation_embedder
        self.layers = list(layers) if layers else default_pool_layers(backbone)
        self.n_neighbours = n_neighbours
        self.context_length = context_length
        self.device = torch.device(device)

    @torch.no_grad()
    def features(
        self, images: torch.Tensor, masks: Sequence[np.ndarray | torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Image features ``I`` and mask embeddings ``V`` of a batch.

        Args:
            images: (B, 3, H, W) uint8 or float in [0, 1].
            masks: B bool arrays (n_i, H, W).

        Returns:
            ``(I, [V_i])``: (B, d_i) and B tensors (n_i, d_v), on the CPU.
        """
        if len(masks) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(masks)} mask sets")
        x = self.backbone.preprocess(images.to(self.device))
        outputs = self.backbone.forward_layers(x, self.layers)
        prefix = int(getattr(self.backbone, "num_prefix_tokens", 0))
        maps = [_as_maps(outputs[name], prefix, name).float() for name in self.layers]
        image_features = torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1)
        tangible = []
        for b, mask in enumerate(masks):
            mask_t = torch.as_tensor(np.asarray(mask), device=self.device)
            tangible.append(torch.cat([mask_pool(m[b], mask_t) for m in maps], dim=1).cpu())
        return image_features.cpu(), tangible

    def tokenize(self, images: torch.Tensor, graphs: Sequence[SceneGraph]) -> list[VisualTokens]:
        """Tokens of a batch of images with their scene graphs.

        Args:
            images: (B, 3, H, W) uint8.
            graphs: One scene graph per image (boxes in the image's pixels).
        """
        height, width = images.shape[-2:]
        masks = [g.object_masks(height, width) for g in graphs]
        image_features, tangible = self.features(images, masks)
        return build_batch_tokens(
            graphs, image_features, tangible, self.relation_embedder, self.n_neighbours, self.context_length
        )
