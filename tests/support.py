"""Constants shared by the test packages (importable as ``support``: pyproject sets pytest's pythonpath)."""

from __future__ import annotations

from replens.vl import TinyClipConfig

#: The smallest CLIP the tests train or build: a one-block ViT image tower and a one-layer text tower.
TINY_VIT_CLIP = TinyClipConfig(embed_dim=32, vision_tower="vit", vision_width=32, vision_layers=1,
                               vision_head_width=16, text_width=32, text_layers=1, text_heads=2)
#: The same with the default (ModifiedResNet) image tower.
TINY_RESNET_CLIP = TinyClipConfig(embed_dim=32, vision_width=32, vision_layers=1, vision_head_width=16,
                                  text_width=32, text_layers=1, text_heads=2)
