"""The image tower of an open_clip model (``open_clip:<model>[:<pretrained tag>]``).

The representation is the tower's output: the projected image embedding of
size ``embed_dim`` (not L2-normalised), i.e. what CLIP compares with text.
Only ``model.visual`` is kept; the text tower is discarded. Layer names are
relative to the tower: ``transformer.resblocks.<i>`` for ViTs (batch-first
tokens (B, N, D), one class token), ``layer1`` .. ``layer4`` for the modified
ResNets.

A pretrained tag names the weights, so ``open_clip:ViT-B-32:openai`` loads them
(like ``pretrained=True``); ``pretrained=True`` without a tag uses the model's
first listed tag. Weights are read from open_clip's caches (the Hugging Face
hub cache, or ``~/.cache/clip`` for URL weights) and downloaded there on first
use by :mod:`replens.hub` (``REPLENS_OFFLINE=1`` turns that off).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from replens.hub import RemoteFileMissing, fetch_hf_any, fetch_url
from replens.models.backbone import Backbone, register_backbone
from replens.models.weights import WeightsError

__all__ = ["OpenClipBackbone", "open_clip_pretrained", "open_clip_weights_file", "require_open_clip_model"]


class OpenClipBackbone(Backbone):
    """Wrap ``clip_model.visual``; its modules live under ``visual``.

    Args:
        visual: The image tower of an open_clip model.
        mean: Normalisation mean of the weights (open_clip's preprocess config).
        std: Normalisation std.

    Shape:
        - Input: (B, 3, S, S), normalised, S = the tower's image size
        - Output: (B, embed_dim)
    """

    def __init__(self, visual: nn.Module, mean: Any, std: Any) -> None:
        size = getattr(visual, "image_size", None)
        if isinstance(size, tuple | list):
            size = size[-1]
        super().__init__(
            feature_dim=int(visual.output_dim),
            mean=tuple(mean),
            std=tuple(std),
            input_size=int(size) if size else None,
        )
        self.visual = visual
        self.num_prefix_tokens = 1 if getattr(visual, "class_embedding", None) is not None else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual(x)
        return out[0] if isinstance(out, tuple) else out

    def layer_root(self) -> nn.Module:
        return self.visual

    def layer_names(self) -> list[str]:
        transformer = getattr(self.visual, "transformer", None)
        if transformer is not None and hasattr(transformer, "resblocks"):
            return [f"transformer.resblocks.{i}" for i in range(len(transformer.resblocks))]
        if all(hasattr(self.visual, f"layer{i}") for i in range(1, 5)):
            return ["layer1", "layer2", "layer3", "layer4"]
        return [name for name, _ in self.visual.named_children()]

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keep the ``visual.`` part of a full CLIP state dict; accept bare tower keys."""
        if any(k.startswith("visual.") for k in state):
            return {k: v for k, v in state.items() if k.startswith("visual.")}
        return {f"visual.{k}": v for k, v in state.items()}


def open_clip_weights_file(model: str, tag: str, cfg: dict[str, Any]) -> str:
    """The cached weights of an open_clip (model, tag), downloaded on first use (:mod:`replens.hub`).

    Hub weights (``cfg["hf_hub"]``, a ``.safetensors`` twin first) go to the
    Hugging Face cache, URL weights to open_clip's ``~/.cache/clip``.

    Raises:
        replens.hub.DownloadError: Not cached and not downloadable (offline, unreachable, corrupt).
    """
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return str(cfg["file"])
    what = f"open_clip:{model}:{tag} weights"
    hint = f"or pass a file: create_backbone('open_clip:{model}', weights=PATH) / --vl-weights PATH"
    if cfg.get("hf_hub"):
        # open_clip writes 'org/repo/' (default file names) or 'org/repo/file.bin'
        repo, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        try:
            return str(fetch_hf_any(repo, names, what=what, hint=hint))
        except RemoteFileMissing:
            if not cfg.get("url"):
                raise
    if not cfg.get("url"):
        raise WeightsError(f"open_clip {model}:{tag} names no weights file, hub repository or URL")
    dest = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
    return str(fetch_url(cfg["url"], dest, kind="weights", what=what, hint=hint))


def require_open_clip_model(model_name: str) -> None:
    """Raise ``KeyError`` unless open_clip knows ``model_name``."""
    import open_clip

    if model_name not in open_clip.list_models():
        raise KeyError(f"unknown open_clip model {model_name!r}; see open_clip.list_models()")


def open_clip_pretrained(model_name: str, tag: str) -> tuple[Any, Any, str, bool]:
    """``(mean, std, weights file, quick_gelu)`` of an open_clip pretrained tag.

    The mean and std default to OpenAI's where the tag's config names none; the
    weights file is fetched on first use (:func:`open_clip_weights_file`).

    Raises:
        WeightsError: ``tag`` is not a pretrained tag of ``model_name`` (the known ones are listed).
        replens.hub.DownloadError: The weights are not cached and cannot be downloaded.
    """
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise WeightsError(f"unknown pretrained tag {tag!r} for open_clip {model_name}; known: {tags}")
    mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
    return mean, std, open_clip_weights_file(model_name, tag, cfg), bool(cfg.get("quick_gelu", False))


@register_backbone(
    "open_clip",
    help="open_clip image tower, e.g. open_clip:ViT-B-32:openai (a tag loads its weights)",
    family=True,
    placeholder="<model>[:<pretrained tag>]",
)
def open_clip_backbone(spec: str, *, pretrained: bool = False, **kwargs: Any) -> OpenClipBackbone:
    """Build ``open_clip:<model>[:<tag>]``; ``kwargs`` go to ``open_clip.create_model``.

    Args:
        spec: ``<model>`` or ``<model>:<pretrained tag>``.
        pretrained: Load weights (the tag's, or the first listed tag's).
        **kwargs: e.g. ``embed_dim=32, vision_cfg={...}`` for a custom tiny model.
    """
    import open_clip

    model_name, _, tag = spec.partition(":")
    require_open_clip_model(model_name)
    if pretrained and not tag:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if not tags:
            raise WeightsError(f"open_clip model {model_name!r} has no pretrained tags; pass weights=PATH")
        tag = tags[0]
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    checkpoint = None
    if tag:
        mean, std, checkpoint, quick_gelu = open_clip_pretrained(model_name, tag)
        kwargs.setdefault("force_quick_gelu", quick_gelu)
    model = open_clip.create_model(model_name, pretrained=checkpoint, **kwargs)
    visual = model.visual
    del model
    return OpenClipBackbone(visual, mean=mean, std=std)
