"""Extract a token cache from a data source with one of the three extractors (section 6.4.1).

:func:`extract_tokens` is what ``replens tokens extract`` runs::

    from replens.tokens import ExtractConfig, extract_tokens

    extract_tokens(ExtractConfig(data="world:runs/world?split=train"), "runs/tokens-train")
    extract_tokens(ExtractConfig(extractor="maskrcnn", data="folder:photos", captions="captions.json"), "runs/tok")
    extract_tokens(ExtractConfig(extractor="scene-graph", scene_graphs="vg/scene_graphs.json",
                                 images="vg/images", graph_format="vg"), "runs/tok-vg")

The cache keeps what is needed to tokenise new images the same way later
(:func:`tokenizer_from_cache`): the backbone's weights, the layers pooled and
the predicate embeddings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from replens.data import open_source
from replens.models import create_backbone
from replens.models.weights import save_checkpoint
from replens.tokens.cache import TokenCacheWriter, TokenDataset
from replens.tokens.extract import GraphTokenizer, RelationEmbedder, SceneGraph, world_scene_graph
from replens.tokens.maskrcnn import MaskRCNNTokenizer
from replens.tokens.sample import CONTEXT_LENGTH, N_NEIGHBOURS
from replens.tokens.scene_graph import load_psg, load_visual_genome
from replens.vl import load_vl_model

__all__ = ["EXTRACTORS", "ExtractConfig", "extract_tokens", "maskrcnn_tokenizer_from_cache", "tokenizer_from_cache"]

EXTRACTORS: dict[str, str] = {
    "world": "(a) the embedded world's ground-truth masks and relations, mask-pooled backbone features",
    "maskrcnn": "(b) torchvision Mask R-CNN detections with geometric predicates (local weights)",
    "scene-graph": "(c) Visual Genome or PSG scene-graph JSON, mask-pooled backbone features",
}


@dataclass
class ExtractConfig:
    """What to extract and how.

    Attributes:
        extractor: One of :data:`EXTRACTORS`.
        data: Source spec (``world:DIR?split=train``, ``folder:DIR``, ...) for
            the world and Mask R-CNN extractors.
        backbone: Registered backbone whose feature maps are mask pooled (world, scene-graph).
        backbone_weights: Its weights file (None: random initialisation from ``seed``).
        layers: Backbone layers to pool (None: its top-level stages).
        vl: VL model for the predicate embeddings (``load_vl_model`` spec; None: the tiny CLIP).
        maskrcnn_weights: Mask R-CNN weights file (None: torch's hub cache).
        score_threshold: Mask R-CNN detection threshold (the paper: 0.9).
        max_objects: Mask R-CNN detections kept per image.
        scene_graphs: Scene-graph JSON file (scene-graph extractor).
        graph_format: ``vg`` (Visual Genome) or ``psg``.
        images: Image folder of the scene graphs.
        captions: JSON ``{image name: [captions]}`` (sources without captions of their own).
        n_neighbours: Nearest neighbours per object.
        context_length: Token context length.
        batch_size: Images per backbone forward.
        shard_size: Images per cache shard.
        limit: Extract only the first ``limit`` images.
        seed: Seed of the random backbone initialisation.
        device: Where the networks run.
    """

    extractor: str = "world"
    data: str | None = None
    backbone: str = "small_cnn"
    backbone_weights: str | None = None
    layers: list[str] | None = None
    vl: str | None = None
    maskrcnn_weights: str | None = None
    score_threshold: float = 0.9
    max_objects: int = 16
    scene_graphs: str | None = None
    graph_format: str = "vg"
    images: str | None = None
    captions: str | None = None
    n_neighbours: int = N_NEIGHBOURS
    context_length: int = CONTEXT_LENGTH
    batch_size: int = 64
    shard_size: int = 1024
    limit: int | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.extractor not in EXTRACTORS:
            raise ValueError(f"unknown extractor {self.extractor!r}; choose from {sorted(EXTRACTORS)}")
        if self.extractor in ("world", "maskrcnn") and not self.data:
            raise ValueError(f"the {self.extractor} extractor needs a data source (data=SPEC)")
        if self.extractor == "scene-graph" and not (self.scene_graphs and self.images):
            raise ValueError("the scene-graph extractor needs scene_graphs=FILE and images=DIR")
        if self.graph_format not in ("vg", "psg"):
            raise ValueError(f"graph_format must be 'vg' or 'psg', got {self.graph_format!r}")


def _read_captions(path: str | None) -> dict[str, list[str]]:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"captions file not found: {p}")
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object {{image name: [captions]}}")
    return {str(k): [v] if isinstance(v, str) else [str(c) for c in v] for k, v in data.items()}


def _backbone(config: ExtractConfig, weights: str | Path | None) -> Any:
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return create_backbone(config.backbone, weights=weights)


def _vl(config: ExtractConfig, progress: bool) -> Any:
    return load_vl_model(config.vl, device=config.device, progress=progress)


def _items(config: ExtractConfig, captions: dict[str, list[str]]) -> tuple[int, Iterator[tuple[Any, ...]], Any]:
    """(count, iterator of (name, index, image (3,H,W) uint8, graph | None, captions), source)."""
    if config.extractor == "scene-graph":
        loader = load_visual_genome if config.graph_format == "vg" else load_psg
        records = loader(config.scene_graphs, config.images, limit=config.limit)

        def gen_sg() -> Iterator[tuple[Any, ...]]:
            for k, rec in enumerate(records):
                image = rec.load_image()
                graph = rec.graph(*image.shape[:2])
                yield rec.name, k, torch.from_numpy(image).permute(2, 0, 1).contiguous(), graph, captions.get(
                    rec.name, []
                )

        return len(records), gen_sg(), None
    source = open_source(str(config.data))
    n = len(source) if config.limit is None else min(len(source), config.limit)
    world = config.extractor == "world"
    if world and not hasattr(source, "record"):
        raise ValueError(f"the world extractor needs a world source (world:DIR?split=...), got {config.data!r}")

    def gen() -> Iterator[tuple[Any, ...]]:
        for i in range(n):
            sample = source[i]
            if sample["image"] is None:
                raise ValueError(f"image {sample['name']!r} of {source.describe()} is unreadable")
            name = sample["name"]
            if world:
                graph: SceneGraph | None = world_scene_graph(source, i)
                caps = list(source.record(i)["captions"])
            else:
                graph, caps = None, captions.get(name, [])
            yield name, i, sample["image"], graph, caps

    return n, gen(), source


def extract_tokens(
    config: ExtractConfig, out_dir: str | Path, *, vl: Any | None = None, progress: bool = True, resume: bool = True
) -> Path:
    """Extract tokens of every image into a token cache.

    Args:
        config: What and how.
        out_dir: The cache folder (see :mod:`replens.tokens.cache`).
        vl: A loaded VL model (default: load ``config.vl``).
        progress: Show a tqdm bar.
        resume: Keep the complete shards of an interrupted extraction.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vl = vl if vl is not None else _vl(config, progress)
    captions = _read_captions(config.captions)
    embedder = RelationEmbedder(vl)
    table_path = out_dir / "relations.safetensors"
    if table_path.is_file():
        embedder.table.update(load_file(str(table_path)))
    meta: dict[str, Any] = {
        "extractor": config.extractor,
        "source": config.data if config.extractor != "scene-graph" else None,
        "config": {k: v for k, v in asdict(config).items() if k not in ("device", "batch_size", "limit")},
        "vl": {"spec": config.vl, "name": vl.name, "fingerprint": getattr(vl, "fingerprint", vl.name)},
    }
    tokenizer = _tokenizer(config, embedder, out_dir, meta)
    writer = TokenCacheWriter(out_dir, meta, shard_size=config.shard_size, resume=resume)
    total, items, _ = _items(config, captions)
    done = writer.done
    bar = tqdm(total=total, initial=done, desc=f"extract tokens ({config.extractor})", unit="img",
               disable=not progress)

    def flush(batch: list[tuple[Any, ...]]) -> None:
        for (name, index, _, _, caps), tok in zip(batch, _tokenize(config, tokenizer, batch), strict=True):
            writer.add(tok, name, index, caps)
        bar.update(len(batch))

    pending: list[tuple[Any, ...]] = []
    for k, item in enumerate(items):
        if k < done:
            continue
        pending.append(item)
        if len(pending) >= config.batch_size:
            flush(pending)
            pending = []
            save_checkpoint(table_path, dict(embedder.table), {"vl": meta["vl"]})
    if pending:
        flush(pending)
    bar.close()
    save_checkpoint(table_path, dict(embedder.table), {"vl": meta["vl"]})
    writer.close()
    return out_dir


def _tokenizer(config: ExtractConfig, embedder: RelationEmbedder, out_dir: Path, meta: dict[str, Any]) -> Any:
    """The extractor's tokenizer; a backbone's is saved in ``out_dir`` (or reloaded from it) and noted in ``meta``."""
    if config.extractor == "maskrcnn":
        return MaskRCNNTokenizer(
            embedder,
            weights=config.maskrcnn_weights,
            score_threshold=config.score_threshold,
            max_objects=config.max_objects,
            n_neighbours=config.n_neighbours,
            context_length=config.context_length,
            device=config.device,
        )
    backbone_path = out_dir / "backbone.safetensors"
    backbone = _backbone(config, backbone_path if backbone_path.is_file() else config.backbone_weights)
    if not backbone_path.is_file():
        save_checkpoint(backbone_path, backbone, {"backbone": config.backbone})
    tokenizer = GraphTokenizer(
        backbone,
        embedder,
        layers=config.layers,
        n_neighbours=config.n_neighbours,
        context_length=config.context_length,
        device=config.device,
    )
    meta["backbone"] = {"name": config.backbone, "layers": tokenizer.layers, "file": backbone_path.name}
    return tokenizer


def _tokenize(config: ExtractConfig, tokenizer: Any, batch: list[tuple[Any, ...]]) -> list[Any]:
    """Tokens of a batch of ``(name, index, image, graph, captions)`` items."""
    if config.extractor == "maskrcnn":
        return tokenizer.tokenize([b[2] for b in batch])
    if len({tuple(b[2].shape) for b in batch}) == 1:
        return tokenizer.tokenize(torch.stack([b[2] for b in batch]), [b[3] for b in batch])
    return [tokenizer.tokenize(b[2][None], [b[3]])[0] for b in batch]  # images of different sizes: one at a time


def tokenizer_from_cache(
    cache: TokenDataset | str | Path, *, vl: Any | None = None, device: str = "cpu"
) -> GraphTokenizer:
    """A :class:`GraphTokenizer` that makes tokens exactly as ``cache`` was made (world / scene-graph caches).

    Uses the cache's saved backbone weights, layers and predicate embeddings;
    ``vl`` is only needed for predicate words the cache has never seen.

    Raises:
        ValueError: The cache was made by Mask R-CNN (use
            :class:`~replens.tokens.maskrcnn.MaskRCNNTokenizer` instead).
    """
    data = cache if isinstance(cache, TokenDataset) else TokenDataset(cache)
    meta = data.meta
    if "backbone" not in meta:
        raise ValueError(f"token cache {data.root} was made by {meta.get('extractor')!r}, not from a backbone")
    cfg = meta["config"]
    backbone = create_backbone(meta["backbone"]["name"], weights=data.root / meta["backbone"]["file"])
    embedder = RelationEmbedder(vl, table=data.read_relation_table())
    return GraphTokenizer(
        backbone,
        embedder,
        layers=meta["backbone"]["layers"],
        n_neighbours=int(cfg.get("n_neighbours", N_NEIGHBOURS)),
        context_length=int(cfg.get("context_length", CONTEXT_LENGTH)),
        device=device,
    )


def maskrcnn_tokenizer_from_cache(
    cache: TokenDataset | str | Path, *, vl: Any | None = None, device: str = "cpu"
) -> Any:
    """A :class:`~replens.tokens.maskrcnn.MaskRCNNTokenizer` set up as a Mask R-CNN cache was made.

    Raises:
        ValueError: The cache was not made by the Mask R-CNN extractor.
        WeightsError: Its Mask R-CNN weights are no longer where they were.
    """
    data = cache if isinstance(cache, TokenDataset) else TokenDataset(cache)
    if data.meta.get("extractor") != "maskrcnn":
        raise ValueError(f"token cache {data.root} was made by {data.meta.get('extractor')!r}, not 'maskrcnn'")
    cfg = data.meta["config"]
    return MaskRCNNTokenizer(
        RelationEmbedder(vl, table=data.read_relation_table()),
        weights=cfg.get("maskrcnn_weights"),
        score_threshold=float(cfg.get("score_threshold", 0.9)),
        max_objects=int(cfg.get("max_objects", 16)),
        n_neighbours=int(cfg.get("n_neighbours", N_NEIGHBOURS)),
        context_length=int(cfg.get("context_length", CONTEXT_LENGTH)),
        device=device,
    )
