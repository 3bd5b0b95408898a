"""The original CIFAR ResNets of He et al. (2016), with option-A shortcuts.

3x3 stem convolution with 16 channels, three stages of ``n`` basic blocks with
16, 32 and 64 channels (``n = (depth - 2) / 6``), stride 2 at the start of
stages 2 and 3 where the shortcut is "option A": subsample by 2 and zero-pad
the channels (no parameters), global average pooling and a linear head.
Module names match the akamaster/pytorch_resnet_cifar10 checkpoints
(``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``linear``), so those files
load with strict key matching (their ``module.`` prefix is stripped by
:func:`~replens.models.weights.load_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from replens.hub import checkpoints_dir, fetch_url
from replens.models.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone, register_backbone
from replens.models.weights import load_weights

__all__ = ["CifarResNet", "OptionAShortcut", "CifarBasicBlock"]


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: take every second pixel, zero-pad the channels.

    Args:
        out_channels: Channels after padding (input channels + 2 * pad, pad = out // 4).

    Shape:
        - Input: (B, C, H, W)
        - Output: (B, C + 2 * (out_channels // 4), ceil(H / 2), ceil(W / 2))
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.pad = out_channels // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class CifarBasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus an identity or option-A shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = OptionAShortcut(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Backbone):
    """He et al. CIFAR ResNet (depth 6n + 2) with option-A shortcuts.

    Args:
        depth: 20, 32, 44, 56, 110, ... (must be 6n + 2).
        num_classes: Size of the ``linear`` head (0: no head).
        widths: Channels of the three stages.
        mean: Input normalisation mean (the checkpoints use ImageNet's).
        std: Input normalisation std.

    Shape:
        - Input: (B, 3, H, W), normalised; 32 x 32 for the published weights
        - Output: (B, widths[-1])
    """

    classifier_name = "linear"

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        super().__init__(feature_dim=widths[-1], mean=mean, std=std, input_size=32)
        blocks = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_channels = widths[0]
        stages = []
        for stage, width in enumerate(widths):
            layers = []
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(CifarBasicBlock(in_channels, width, stride))
                in_channels = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        if num_classes > 0:
            self.linear = nn.Linear(widths[-1], num_classes)
        else:
            self.classifier_name = None
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return out.mean(dim=(2, 3))

    def layer_names(self) -> list[str]:
        names = ["bn1"]
        for stage in ("layer1", "layer2", "layer3"):
            names += [f"{stage}.{i}" for i in range(len(getattr(self, stage)))] + [stage]
        return names


#: akamaster's published CIFAR-10 checkpoints (github.com/akamaster/pytorch_resnet_cifar10); the hex in
#: their names is not a documented checksum, so none is checked.
AKAMASTER_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{}"
AKAMASTER_FILES = {20: "resnet20-12fca82f.th", 56: "resnet56-4bfd9763.th"}


def _make(depth: int, pretrained: bool, num_classes: int) -> CifarResNet:
    model = CifarResNet(depth=depth, num_classes=num_classes)
    if pretrained:
        name = AKAMASTER_FILES[depth]
        path = fetch_url(AKAMASTER_URL.format(name), checkpoints_dir() / name, kind="weights", sha256="",
                         what=f"cifar_resnet{depth} CIFAR-10 weights ({name})",
                         hint=f"or pass a file: create_backbone('cifar_resnet{depth}', weights=PATH)")
        load_weights(model, path, strict=num_classes == 10)
    return model


@register_backbone("cifar_resnet20", help="He et al. CIFAR ResNet-20, option-A shortcuts (0.27 M params, r=64)")
def cifar_resnet20(*, pretrained: bool = False, num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-20; ``pretrained`` fetches akamaster's CIFAR-10 checkpoint."""
    return _make(20, pretrained, num_classes)


@register_backbone("cifar_resnet56", help="He et al. CIFAR ResNet-56, option-A shortcuts (0.85 M params, r=64)")
def cifar_resnet56(*, pretrained: bool = False, num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-56; ``pretrained`` fetches akamaster's CIFAR-10 checkpoint."""
    return _make(56, pretrained, num_classes)
