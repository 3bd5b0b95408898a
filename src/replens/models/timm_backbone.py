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

from replens.models.backbone import Backbone, register_alias, register_backbone
from replens.models.weights import WeightsError, require_network

__all__ = ["TimmBackbone"]


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


def _cached_timm_file(model_name: str) -> tuple[str | None, list[str], str]:
    """Find cached weights of a timm model: (path or None, places looked, download url/host)."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        raise WeightsError(f"timm model {model_name!r} has no pretrained weights; pass weights=PATH")
    looked: list[str] = []
    source = ""
    if cfg.file:
        looked.append(str(cfg.file))
        if Path(cfg.file).is_file():
            return str(cfg.file), looked, source
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and os.path.isfile(found):
                return found, looked, source
        looked.append(f"{HF_HUB_CACHE}/models--{repo.replace('/', '--')} ({', '.join(names)})")
        source = f"https://huggingface.co/{repo}"
    if cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        looked.append(str(cached))
        if cached.is_file():
            return str(cached), looked, source
        source = source or cfg.url
    return None, looked, source


def create_timm_model(model_name: str, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` that reads weights from the cache and fails clearly offline."""
    import timm

    if not pretrained:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    found, looked, source = _cached_timm_file(model_name)
    if found is not None:
        overlay = {"file": found, "source": None}
        return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    how = (
        f"Download the weights on a connected machine (timm.create_model('{model_name}', "
        "pretrained=True) fills the cache) and copy the cache, or pass "
        f"create_backbone('timm:{model_name}', weights=PATH)."
    )
    require_network(source or "huggingface.co", f"timm:{model_name}", looked, how)
    try:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    except Exception as exc:  # network/hub errors: re-raised as one clear error
        raise WeightsError(f"downloading weights of timm:{model_name} failed: {exc}. {how}") from None


@register_backbone("timm", help="any timm model, e.g. timm:resnet50, timm:vit_small_patch16_224", family=True)
def timm_backbone(model_name: str, *, pretrained: bool = False, **kwargs: Any) -> TimmBackbone:
    """A timm model; ``kwargs`` go to ``timm.create_model`` (e.g. ``img_size=64``)."""
    return TimmBackbone(create_timm_model(model_name, pretrained=pretrained, **kwargs))


register_alias("vit_s16", "timm:vit_small_patch16_224")
