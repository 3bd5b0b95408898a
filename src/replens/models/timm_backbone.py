"""Any timm model as a :class:`~replens.models.backbone.Backbone` (``timm:<name>``).

The representation is timm's pre-logits output
(``forward_head(forward_features(x), pre_logits=True)``): the globally pooled
features of CNNs, the class token (or the model's configured pooling) of ViTs.
Layer names are timm's ``feature_info`` modules (``blocks.0`` .. ``blocks.11``
for a ViT, ``act1``, ``layer1`` .. ``layer4`` for a ResNet), relative to the
wrapped model. Preprocessing (mean, std, input size) comes from timm's data
config of the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from replens.hub import RemoteFileMissing, checkpoints_dir, fetch_hf_any, fetch_url
from replens.models.backbone import Backbone, register_alias, register_backbone
from replens.models.weights import WeightsError

__all__ = ["TimmBackbone", "create_timm_model", "timm_weights_file"]


class TimmBackbone(Backbone):
    """Wrap a timm model; its modules live under ``model``.

    Args:
        model: A model from ``timm.create_model``.

    Shape:
        - Input: (B, 3, H, W), normalised
        - Output: (B, feature_dim) with feature_dim = the model's pre-logits size
    """

    def __init__(self, model: nn.Module) -> None:
        import timm.data

        data_cfg = timm.data.resolve_model_data_config(model)
        feature_dim = getattr(model, "head_hidden_size", None) or model.num_features
        input_size = data_cfg["input_size"][-1]
        patch_embed_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
        if patch_embed_size:  # a ViT built with img_size=... (the data config keeps the default)
            input_size = patch_embed_size[-1] if isinstance(patch_embed_size, tuple | list) else patch_embed_size
        super().__init__(
            feature_dim=int(feature_dim),
            mean=data_cfg["mean"],
            std=data_cfg["std"],
            input_size=int(input_size),
        )
        self.model = model
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)

    @property
    def classifier(self) -> nn.Module | None:
        head = self.model.get_classifier() if hasattr(self.model, "get_classifier") else None
        if head is None or isinstance(head, nn.Identity):
            return None
        return head

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def layer_root(self) -> nn.Module:
        return self.model

    def layer_names(self) -> list[str]:
        info = getattr(self.model, "feature_info", None)
        if info:
            return [str(entry["module"]) for entry in info]
        return [name for name, _ in self.model.named_children()]

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept raw timm checkpoints (no ``model.`` prefix) as well as our own."""
        if state and not any(k.startswith("model.") for k in state):
            return {f"model.{k}": v for k, v in state.items()}
        return state


def timm_weights_file(model_name: str) -> Path:
    """The cached weights file of a pretrained timm model, downloaded on first use (:mod:`replens.hub`).

    The model's Hugging Face hub files (``model.safetensors`` before
    ``pytorch_model.bin``) go to the hub cache, URL weights to the torch-hub cache.

    Raises:
        WeightsError: The model has no pretrained weights.
        replens.hub.DownloadError: Not cached and not downloadable (offline, unreachable, corrupt).
    """
    import timm.models

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.file or cfg.hf_hub_id or cfg.url):
        raise WeightsError(f"timm model {model_name!r} has no pretrained weights; pass weights=PATH")
    if cfg.file and Path(cfg.file).is_file():
        return Path(cfg.file)
    what, hint = f"timm:{model_name} weights", f"or pass create_backbone('timm:{model_name}', weights=PATH)"
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        try:
            return fetch_hf_any(repo, names, revision=revision or None, what=what, hint=hint)
        except RemoteFileMissing:
            if not cfg.url:
                raise
    return fetch_url(cfg.url, checkpoints_dir() / os.path.basename(cfg.url), kind="weights", what=what, hint=hint)


def create_timm_model(model_name: str, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with pretrained weights fetched through :mod:`replens.hub`."""
    import timm

    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('.')[0][:12]}*")[:5]
        raise KeyError(f"unknown timm model {model_name!r}" + (f"; similar: {', '.join(close)}" if close else
                                                                 "; see timm.list_models()"))
    if not pretrained:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    overlay = {"file": str(timm_weights_file(model_name)), "source": None}
    return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


@register_backbone("timm", help="any timm model, e.g. timm:resnet50, timm:vit_small_patch16_224", family=True)
def timm_backbone(model_name: str, *, pretrained: bool = False, **kwargs: Any) -> TimmBackbone:
    """A timm model; ``kwargs`` go to ``timm.create_model`` (e.g. ``img_size=64``)."""
    return TimmBackbone(create_timm_model(model_name, pretrained=pretrained, **kwargs))


register_alias("vit_s16", "timm:vit_small_patch16_224")
