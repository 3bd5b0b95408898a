"""Explaining features of intermediate layers with FALCON (paper appendix B.6, Figure B.8).

:class:`LayerRepresentation` turns a backbone into the encoder of one of its
intermediate layers: its output is that layer's globally average-pooled
activation, one value per channel, and Grad-CAM hooks the layer's own blocks.
FALCON runs on it unchanged::

    enc = LayerRepresentation(backbone, "layer2")
    falcon = Falcon(enc, source, vl, bank, FalconConfig(mode="features"))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from replens.models.features import pool_features

__all__ = ["LayerRepresentation"]


class LayerRepresentation(nn.Module):
    """The pooled activations of one layer of a backbone, with the backbone interface FALCON uses.

    Args:
        backbone: A :class:`~replens.models.Backbone`.
        layer: One of ``backbone.layer_names()`` (or any module name of its ``layer_root()``).

    Shape:
        - Input: (B, 3, H, W) normalised images
        - Output: (B, C) channel means of the layer's output (patch-token means for transformers)
    """

    def __init__(self, backbone: Any, layer: str) -> None:
        super().__init__()
        backbone.find_layer(layer)
        self.backbone = backbone
        self.layer = layer
        self.name = f"{backbone.name}:{layer}"
        self.num_prefix_tokens = int(getattr(backbone, "num_prefix_tokens", 0))
        names = backbone.layer_names()
        self._names = names[: names.index(layer) + 1] if layer in names else [layer]
        with torch.no_grad():
            was = backbone.training
            backbone.eval()
            size = int(getattr(backbone, "input_size", None) or 32)
            probe = torch.zeros(1, 3, size, size, device=next(backbone.parameters()).device)
            self.feature_dim = int(self.forward(probe).shape[1])
            backbone.train(was)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's preprocessing."""
        return self.backbone.preprocess(images)

    def layer_names(self) -> list[str]:
        """The backbone's layers up to and including this one (the last is the Grad-CAM stage)."""
        return list(self._names)

    def layer_root(self) -> nn.Module:
        return self.backbone.layer_root()

    def find_layer(self, name: str | None = None) -> tuple[str, nn.Module]:
        """The backbone's :meth:`~replens.models.Backbone.find_layer`, defaulting to this layer."""
        return self.backbone.find_layer(self.layer if name is None else name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone.forward_layers(x, [self.layer])[self.layer]
        return pool_features(out, token_pool="mean", num_prefix_tokens=self.num_prefix_tokens)
