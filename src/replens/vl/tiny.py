"""The embedded tiny CLIP: an open_clip model small enough to train on a CPU.

No pretrained CLIP can be downloaded at run time, so replens ships an open_clip
custom configuration (a small image tower, open_clip's ModifiedResNet by
default or a ViT, and a small text transformer with open_clip's BPE tokenizer)
and trains it on the embedded world's captions with open_clip's ``ClipLoss``
(``replens vl train``). It is the default vision-language model of FALCON
(paper section 4.2.1, where CLIP ViT-B/32 plays this role) when no other is
given.

Training pairs come from the world's ground truth (:func:`world_training_items`):

* whole images with each of their template captions (plus two captions naming
  the corner marker patch, which the world's templates leave out);
* object crops (the object's box, padded) with captions of that object
  without its size word (a crop loses the object's size relative to the image);
* marker-patch crops with ``"a <colour> patch"``.

The crops matter: FALCON captions Grad-CAM crops, not whole images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from replens.engine.loop import clip_update, due, set_learning_rate
from replens.vl.model import VLModel, _open_clip_tokenizer, load_vl_checkpoint
from replens.world import GENERATOR_VERSION, WorldConfig, cached_world, load_world
from replens.world.annotate import object_phrase
from replens.world.render import MARKER_LABEL
from replens.world.vocab import COLOURLESS_DOMAINS, DOMAIN_NOUN, article

__all__ = [
    "TinyClipConfig",
    "TinyClipTrainConfig",
    "TrainingItem",
    "build_tiny_clip",
    "default_tiny_clip",
    "tiny_clip_cache_path",
    "train_tiny_clip",
    "world_training_items",
]

log = logging.getLogger(__name__)

#: Registered name of the tiny CLIP (``load_vl_model("tiny-clip")``).
TINY_CLIP_NAME = "tiny-clip"


@dataclass(frozen=True)
class TinyClipConfig:
    """Architecture of the tiny CLIP (an open_clip ``CLIP`` custom config).

    Attributes:
        embed_dim: Joint embedding size ``k``.
        vision_tower: ``"vit"`` (a ViT) or ``"resnet"`` (open_clip's
            ModifiedResNet, one bottleneck per stage, stem width ``vision_width``).
        image_size: Input side of the image tower.
        patch_size: ViT patch side (``(image_size / patch_size)^2`` tokens).
        vision_width: Stem width of the ResNet (16: a 1.4 M parameter tower
            that fits 32 px on a CPU), or the ViT width (e.g. 128).
        vision_layers: ViT blocks.
        vision_head_width: Width of one attention head of the ViT.
        text_width: Text transformer width.
        text_layers: Text transformer blocks.
        text_heads: Text attention heads.
        context_length: Token context length (world captions use at most ~30
            BPE tokens).
        mlp_ratio: MLP hidden size over width, both towers.
    """

    embed_dim: int = 128
    vision_tower: str = "resnet"
    image_size: int = 32
    patch_size: int = 8
    vision_width: int = 16
    vision_layers: int = 3
    vision_head_width: int = 32
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    context_length: int = 32
    mlp_ratio: float = 2.0

    def open_clip_config(self) -> dict[str, Any]:
        """The dict ``open_clip.CLIP(**config)`` takes (the format of open_clip's model JSONs)."""
        if self.vision_tower == "vit":
            vision: dict[str, Any] = {
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "width": self.vision_width,
                "layers": self.vision_layers,
                "head_width": self.vision_head_width,
                "mlp_ratio": self.mlp_ratio,
            }
        elif self.vision_tower == "resnet":
            vision = {"image_size": self.image_size, "layers": [1, 1, 1, 1], "width": self.vision_width}
        else:
            raise ValueError(f"vision_tower must be 'vit' or 'resnet', got {self.vision_tower!r}")
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": vision,
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,  # open_clip's BPE vocabulary
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
                "mlp_ratio": self.mlp_ratio,
            },
        }


def build_tiny_clip(config: TinyClipConfig | None = None, seed: int = 0) -> VLModel:
    """A randomly initialised tiny CLIP as a :class:`~replens.vl.model.VLModel`."""
    import open_clip

    config = config or TinyClipConfig()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.CLIP(**config.open_clip_config())
    return VLModel(
        model,
        _open_clip_tokenizer(config.context_length),
        image_size=config.image_size,
        mean=open_clip.OPENAI_DATASET_MEAN,
        std=open_clip.OPENAI_DATASET_STD,
        name=TINY_CLIP_NAME,
        config=config.open_clip_config(),
    )


@dataclass(frozen=True)
class TrainingItem:
    """One image region and the captions that describe it.

    Attributes:
        image: Index of the image in its split.
        box: ``(x0, y0, x1, y1)`` pixel box (x1/y1 exclusive) or None for the whole image.
        captions: Captions true of that region.
        kind: ``"image"``, ``"object"`` or ``"marker"``.
    """

    image: int
    box: tuple[int, int, int, int] | None
    captions: tuple[str, ...]
    kind: str


def _pad_box(box: list[int], side: int, pad: float) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    least = 1 if pad > 0 else 0
    px, py = max(least, round((x1 - x0) * pad)), max(least, round((y1 - y0) * pad))
    return max(0, x0 - px), max(0, y0 - py), min(side, x1 + px), min(side, y1 + py)


def world_training_items(world: Any, pad: float = 0.15) -> list[TrainingItem]:
    """Image-caption training pairs from a world split's ground truth.

    Args:
        world: A :class:`~replens.world.WorldDataset`.
        pad: Object boxes are padded by this fraction of their side on each side.

    Returns:
        Whole images, object crops and marker crops with their captions (see
        the module docstring).
    """
    side = int(world.config.size)
    items: list[TrainingItem] = []
    patterned = world.config.patterned
    for i, rec in enumerate(world.records):
        main = rec["objects"][0]
        noun = DOMAIN_NOUN[rec["domain"]]
        captions = list(rec["captions"])
        # a domain that draws no colour shows a coloured marker as a grey level: no colour word is true of it
        # (a patterned marker is black and white: every domain shows it)
        marker = rec.get("marker") if patterned or rec["domain"] not in COLOURLESS_DOMAINS else None
        if marker:
            captions += [
                f"{article(noun)} {noun} of {article(main['shape'])} {main['shape']} with {article(marker)} "
                f"{marker} patch",
                f"{article(main['colour'])} {main['colour']} {main['shape']} with {article(marker)} {marker} patch",
            ]
        items.append(TrainingItem(i, None, tuple(captions), "image"))
        for obj in rec["objects"]:
            # "a red striped circle" / "a sketch of a red circle": colour and texture only where drawn
            items.append(
                TrainingItem(
                    i,
                    _pad_box(obj["box"], side, pad),
                    (
                        object_phrase(obj, "look", rec["domain"]),
                        f"{article(noun)} {noun} of {object_phrase(obj, 'colour', rec['domain'])}",
                    ),
                    "object",
                )
            )
        if marker:
            seg = world.segmentation(i)
            ys, xs = np.nonzero(seg == MARKER_LABEL)
            if len(ys):
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                items.append(TrainingItem(i, box, (f"{article(marker)} {marker} patch",), "marker"))
    return items


@dataclass(frozen=True)
class TinyClipTrainConfig:
    """How ``replens vl train`` trains the tiny CLIP.

    Attributes:
        model: The architecture.
        steps: Optimiser steps.
        batch_size: Image-caption pairs per step.
        lr: Peak AdamW learning rate (linear warm-up, then cosine decay to 0).
        weight_decay: AdamW weight decay (matrices only).
        warmup_fraction: Fraction of ``steps`` spent warming up.
        kind_weights: Sampling weights of whole images, object crops and marker crops.
        seed: Seed of initialisation and sampling.
        world_n: Scenes of the default world (when no world is given).
        world_size: Image side of the default world.
        world_domains: Render domains of the default world.
        world_spurious: Spurious-cue strength of the default world (the audit's world plants one).
        world_spurious_cue: What carries that cue (``"marker"``: the corner patch's colour, ``"pattern"``:
            its pattern; see :class:`~replens.world.WorldConfig`).
    """

    model: TinyClipConfig = field(default_factory=TinyClipConfig)
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    kind_weights: tuple[float, float, float] = (0.5, 0.35, 0.15)
    seed: int = 0
    world_n: int = 6000
    world_size: int = 32
    world_domains: tuple[str, ...] = ("photo", "cartoon", "sketch", "painting")
    world_spurious: float = 0.0
    world_spurious_cue: str = "marker"

    def key(self) -> str:
        """A short hash of the configuration (the cache key of the default model)."""
        fields = asdict(self)
        if fields["world_spurious_cue"] == "marker":  # the default: the keys of models cached before the field
            del fields["world_spurious_cue"]
        blob = json.dumps({**fields, "world_generator": GENERATOR_VERSION}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _crop_batch(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop boxes from uint8 images and resize them to ``size`` (float in [0, 1]).

    Shape:
        - images: (B, 3, H, W) uint8; boxes: (B, 4) float x0, y0, x1, y1
        - Output: (B, 3, size, size)
    """
    from torchvision.ops import roi_align

    x = images.float() / 255.0
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes.float()], dim=1)
    return roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


def _distinct_batch(
    items: list[TrainingItem], weights: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """Sample items and one caption each, keeping captions distinct within the batch.

    ``ClipLoss`` treats every other caption of the batch as a negative; two
    images drawn with the same template caption ("a sketch of a star") would
    be pushed apart from a caption that is true of both. Drawing without
    repeated captions keeps the contrastive targets exact.
    """
    picks: list[int] = []
    captions: list[str] = []
    seen: set[str] = set()
    while len(picks) < size:
        for k in rng.choice(len(items), size=2 * size, p=weights):
            caption = items[k].captions[rng.integers(len(items[k].captions))]
            if caption not in seen:
                seen.add(caption)
                picks.append(int(k))
                captions.append(caption)
                if len(picks) == size:
                    break
    return np.asarray(picks), captions


@dataclass
class _Pairs:
    """A world split's training items ready for sampling.

    Attributes:
        items: The items (:func:`world_training_items`).
        images: (N, 3, H, W) uint8 images of the split.
        item_image: (M,) image index of each item.
        item_box: (M, 4) float pixel box of each item (the whole image for whole-image items).
        kinds: (M,) index of each item's kind in :data:`_KINDS`.
        weights: (M,) sampling probability of each item.
    """

    items: list[TrainingItem]
    images: torch.Tensor
    item_image: torch.Tensor
    item_box: torch.Tensor
    kinds: np.ndarray
    weights: np.ndarray


_KINDS = ("image", "object", "marker")


def _sampling_weights(kinds: np.ndarray, kind_weights: tuple[float, float, float]) -> np.ndarray:
    """Item probabilities: each kind present gets its share of ``kind_weights``, split evenly among its items."""
    weights = np.asarray(kind_weights, dtype=np.float64)[kinds]
    present = [k for k in range(3) if (kinds == k).any()]
    for k in present:  # each kind gets its share regardless of how many items it has
        weights[kinds == k] /= (kinds == k).sum()
    return weights / weights.sum()


def _world_pairs(world_dir: str | Path, kind_weights: tuple[float, float, float]) -> _Pairs:
    """The training items of a world's train split, its images and the items' sampling weights."""
    world = load_world(world_dir, "train")
    items = world_training_items(world)
    if not items:
        raise ValueError(f"world {world_dir} has no training images")
    images = torch.from_numpy(np.stack([world.read(i) for i in range(len(world))])).permute(0, 3, 1, 2).contiguous()
    side = images.shape[-1]
    kinds = np.array([_KINDS.index(it.kind) for it in items])
    return _Pairs(
        items=items,
        images=images,
        item_image=torch.tensor([it.image for it in items]),
        item_box=torch.tensor([it.box if it.box is not None else (0, 0, side, side) for it in items],
                              dtype=torch.float32),
        kinds=kinds,
        weights=_sampling_weights(kinds, kind_weights),
    )


def _caption_tokens(vl: VLModel, items: list[TrainingItem]) -> tuple[torch.Tensor, dict[str, int]]:
    """Every distinct caption tokenised once and its row; warns about captions cut at the context length."""
    captions = sorted({c for it in items for c in it.captions})
    tokens = vl.tokenize(captions)
    too_long = [c for c, t in zip(captions, tokens, strict=True) if int(t[-1]) != 0]
    if too_long:
        log.warning(
            "%d captions are longer than %d tokens and are truncated, e.g. %r",
            len(too_long),
            vl.context_length,
            too_long[0],
        )
    return tokens, {c: k for k, c in enumerate(captions)}


def _adamw(vl: VLModel, config: TinyClipTrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only."""
    decay = [p for p in vl.model.parameters() if p.ndim >= 2]
    no_decay = [p for p in vl.model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def _clip_loss(
    vl: VLModel, loss_fn: Any, pairs: _Pairs, pick: np.ndarray, text_tokens: torch.Tensor, device: str
) -> torch.Tensor:
    """CLIP loss of the picked items' crops against their drawn captions' tokens."""
    pick_t = torch.from_numpy(pick)
    crops = _crop_batch(pairs.images[pairs.item_image[pick_t]], pairs.item_box[pick_t], vl.image_size)
    image_features = vl.encode_image(crops.to(device), normalize=True)
    text_features = vl.encode_text(text_tokens.to(device), normalize=True)
    return loss_fn(image_features, text_features, vl.model.logit_scale.exp())


def train_tiny_clip(
    world_dir: str | Path,
    out_path: str | Path,
    config: TinyClipTrainConfig | None = None,
    *,
    device: str = "cpu",
    progress: bool = True,
    log_every: int = 50,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> tuple[VLModel, dict[str, Any]]:
    """Train the tiny CLIP on a world's train split with open_clip's ``ClipLoss``.

    Args:
        world_dir: A generated world (:func:`replens.world.generate_world`).
        out_path: Where to write the safetensors weights (atomically).
        config: Training configuration.
        device: Training device.
        progress: Show a tqdm bar.
        log_every: Steps between loss records.
        on_log: Called with every loss record.

    Returns:
        ``(model, summary)``: the trained model (eval mode) and a summary with
        ``steps``, ``final_loss``, ``seconds``, ``pairs_per_s``, ``items`` and
        ``loss_curve``.
    """
    from open_clip import ClipLoss  # open_clip is a heavy import, paid only when training

    config = config or TinyClipTrainConfig()
    pairs = _world_pairs(world_dir, config.kind_weights)
    vl = build_tiny_clip(config.model, seed=config.seed).to(device)
    vl.train()
    tokens, caption_id = _caption_tokens(vl, pairs.items)
    opt, loss_fn = _adamw(vl, config), ClipLoss()
    rng = np.random.default_rng(config.seed)
    warmup = int(config.warmup_fraction * config.steps)
    curve: list[dict[str, float]] = []
    t0 = time.perf_counter()
    loss_value = float("nan")
    bar = tqdm(range(config.steps), desc="tiny CLIP", unit="step", disable=not progress)
    for step in bar:
        set_learning_rate(opt, step, config.steps, warmup, config.lr)
        pick, chosen = _distinct_batch(pairs.items, pairs.weights, config.batch_size, rng)
        loss = _clip_loss(vl, loss_fn, pairs, pick, tokens[[caption_id[c] for c in chosen]], device)
        loss_value = clip_update(opt, loss, vl.model.logit_scale, step, "tiny CLIP loss")
        if due(step, log_every, config.steps - 1):
            record = {"step": step, "loss": loss_value, "logit_scale": vl.logit_scale}
            curve.append(record)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if on_log is not None:
                on_log(record)
    seconds = time.perf_counter() - t0
    vl.eval()
    out_path = Path(out_path)
    vl.save(out_path, {"train_config": asdict(config), "world": str(world_dir)})
    summary = {
        "steps": config.steps,
        "final_loss": loss_value,
        "seconds": seconds,
        "pairs_per_s": config.steps * config.batch_size / max(seconds, 1e-9),
        "items": {kind: int((pairs.kinds == k).sum()) for k, kind in enumerate(_KINDS)},
        "unique_captions": len(caption_id),
        "loss_curve": curve,
        "weights": str(out_path),
    }
    return load_vl_checkpoint(out_path, device=device), summary


def tiny_clip_cache_path(config: TinyClipTrainConfig | None = None, cache_dir: str | Path = "runs/cache") -> Path:
    """Where the default tiny CLIP of ``config`` is cached."""
    config = config or TinyClipTrainConfig()
    return Path(cache_dir) / "vl" / f"{TINY_CLIP_NAME}-{config.key()}" / "model.safetensors"


def default_world(config: TinyClipTrainConfig, cache_dir: str | Path = "runs/cache", progress: bool = True) -> Path:
    """Generate (or reuse) the world the default tiny CLIP trains on."""
    wcfg = WorldConfig(n=config.world_n, size=config.world_size, domains=config.world_domains, seed=config.seed,
                       spurious=config.world_spurious, spurious_cue=config.world_spurious_cue)
    return cached_world(wcfg, cache_dir, progress)


def default_tiny_clip(
    cache_dir: str | Path = "runs/cache",
    *,
    config: TinyClipTrainConfig | None = None,
    train_if_missing: bool = True,
    device: str = "cpu",
    progress: bool = True,
) -> VLModel:
    """The default tiny CLIP, trained on demand into ``cache_dir`` (keyed by its config).

    Raises:
        FileNotFoundError: Not cached and ``train_if_missing`` is False.
    """
    config = config or TinyClipTrainConfig()
    path = tiny_clip_cache_path(config, cache_dir)
    if not path.is_file():
        if not train_if_missing:
            raise FileNotFoundError(f"the default tiny CLIP is not cached at {path}; run `replens vl train`")
        log.warning("training the default tiny CLIP into %s (once; a few minutes on a CPU)", path)
        world = default_world(config, cache_dir, progress)
        train_tiny_clip(world, path, config, device=device, progress=progress)
    return load_vl_checkpoint(path, device=device)
