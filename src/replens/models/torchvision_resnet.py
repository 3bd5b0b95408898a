"""torchvision ResNet-18/50 as :class:`~replens.models.backbone.Backbone` s.

The torchvision modules are adopted as direct children (``conv1``, ``bn1``,
``layer1``..``layer4``, ``fc``) so state-dict keys equal torchvision's and its
checkpoints load unchanged. ``stem="cifar"`` replaces the 7x7 stride-2 stem
and max-pool by a 3x3 stride-1 convolution (the usual 32 px variant).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from replens.hub import checkpoints_dir, fetch_url
from replens.models.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone, register_backbone
from replens.models.weights import read_state_dict

__all__ = ["TorchvisionResNet", "torchvision_weights_file"]

Stem = Literal["imagenet", "cifar"]


class TorchvisionResNet(Backbone):
    """A torchvision ResNet without its classifier in the forward.

    Args:
        arch: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ... (a torchvision builder).
        stem: ``"imagenet"`` (7x7/2 conv + max-pool) or ``"cifar"`` (3x3/1 conv, no pool).
        num_classes: ``fc`` size (0: no head).
        state_dict: Optional torchvision weights (1000-class) loaded before the
            head is resized.

    Shape:
        - Input: (B, 3, H, W), normalised
        - Output: (B, 512) for resnet18/34, (B, 2048) for resnet50+
    """

    classifier_name = "fc"

    def __init__(
        self,
        arch: str = "resnet18",
        *,
        stem: Stem = "imagenet",
        num_classes: int = 1000,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> None:
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        import torchvision  # imported on use: it costs seconds at `replens` start-up

        model = getattr(torchvision.models, arch)(weights=None)
        if state_dict is not None:
            model.load_state_dict(state_dict)
        feature_dim = model.fc.in_features
        super().__init__(
            feature_dim=feature_dim,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            input_size=224 if stem == "imagenet" else 32,
        )
        self.stem = stem
        self.conv1 = model.conv1
        self.bn1 = model.bn1
        self.relu = model.relu
        self.maxpool: nn.Module = model.maxpool
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            model.layer1,
            model.layer2,
            model.layer3,
            model.layer4,
        )
        if num_classes == model.fc.out_features:
            self.fc = model.fc
        elif num_classes > 0:
            self.fc = nn.Linear(feature_dim, num_classes)
        else:
            self.classifier_name = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))

    def layer_names(self) -> list[str]:
        names = ["relu"]
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            names += [f"{stage}.{i}" for i in range(len(getattr(self, stage)))] + [stage]
        return names


def torchvision_weights_file(weights_name: str) -> tuple[str, Path]:
    """The download URL and torch-hub cache path of a torchvision weights enum.

    Args:
        weights_name: e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``.
    """
    import torchvision

    url = torchvision.models.get_weight(weights_name).url
    return url, checkpoints_dir() / os.path.basename(url)


def _pretrained_state(arch: str, weights_name: str) -> dict[str, torch.Tensor]:
    url, cached = torchvision_weights_file(weights_name)
    # the sha256 prefix in the file name (resnet18-f37072fd.pth) is checked, as torch.hub does
    hint = f"or pass a file: create_backbone('{arch}', weights=PATH)"
    fetch_url(url, cached, kind="weights", what=f"torchvision {weights_name} ({cached.name})", hint=hint)
    return read_state_dict(cached)


def _make(arch: str, weights_name: str, pretrained: bool, stem: Stem, num_classes: int) -> TorchvisionResNet:
    state = None
    if pretrained:
        if stem != "imagenet":
            raise ValueError(f"pretrained {arch} weights need stem='imagenet' (got {stem!r})")
        state = _pretrained_state(arch, weights_name)
    return TorchvisionResNet(arch, stem=stem, num_classes=num_classes, state_dict=state)


@register_backbone("resnet18", help="torchvision ResNet-18 (stem='imagenet'|'cifar'), r=512")
def resnet18(*, pretrained: bool = False, stem: Stem = "imagenet", num_classes: int = 1000) -> TorchvisionResNet:
    """torchvision ResNet-18; ``pretrained`` uses ImageNet IMAGENET1K_V1 weights."""
    return _make("resnet18", "ResNet18_Weights.IMAGENET1K_V1", pretrained, stem, num_classes)


@register_backbone("resnet50", help="torchvision ResNet-50 (stem='imagenet'|'cifar'), r=2048")
def resnet50(*, pretrained: bool = False, stem: Stem = "imagenet", num_classes: int = 1000) -> TorchvisionResNet:
    """torchvision ResNet-50; ``pretrained`` uses ImageNet IMAGENET1K_V2 weights."""
    return _make("resnet50", "ResNet50_Weights.IMAGENET1K_V2", pretrained, stem, num_classes)
