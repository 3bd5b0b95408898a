"""Small CPU-friendly encoders for 32-64 px images: a 4-conv CNN and narrow ResNets.

These train in minutes on a laptop CPU on the embedded world
(:mod:`replens.world`), so that every method runs end to end in tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from replens.models.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone, register_backbone
from replens.models.weights import WeightsError

__all__ = ["NarrowResNet", "SmallCNN"]


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _finish(model: Backbone, num_classes: int) -> None:
    """Add the linear head ``fc`` (``num_classes > 0``) and initialise every layer."""
    if num_classes > 0:
        model.fc = nn.Linear(model.feature_dim, num_classes)
        model.classifier_name = "fc"
    _init(model)


class SmallCNN(Backbone):
    """Four 3x3 conv-BN-ReLU blocks (stride 1, 2, 2, 2) and global average pooling.

    Args:
        widths: Channels of the four blocks; the last is ``feature_dim``.
        num_classes: Linear head size (0: no head).
        mean: Input normalisation mean.
        std: Input normalisation std.

    Shape:
        - Input: (B, 3, H, W), normalised
        - Output: (B, widths[-1])
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128, 256),
        num_classes: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if len(widths) != 4:
            raise ValueError(f"SmallCNN has 4 blocks, got widths {widths}")
        super().__init__(feature_dim=widths[-1], mean=mean, std=std)
        in_channels = 3
        for index, (width, stride) in enumerate(zip(widths, (1, 2, 2, 2), strict=True)):
            self.add_module(f"block{index + 1}", _conv_bn_relu(in_channels, width, stride))
            in_channels = width
        _finish(self, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return x.mean(dim=(2, 3))

    def layer_names(self) -> list[str]:
        return ["block1", "block2", "block3", "block4"]


class BasicBlock(nn.Module):
    """ResNet basic block with a 1x1 conv projection shortcut ("option B")."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class NarrowResNet(Backbone):
    """A ResNet with basic blocks, few channels and a 3x3 stride-1 stem.

    Args:
        widths: Channels of each stage (stride 2 at the start of every stage
            after the first); the last is ``feature_dim``.
        blocks: Basic blocks per stage.
        stem_stride: Stride of the 3x3 stem; 2 halves the cost at 64 px
            (the feature maps then match a stride-1 stem at 32 px).
        num_classes: Linear head size (0: no head).
        mean: Input normalisation mean.
        std: Input normalisation std.

    Shape:
        - Input: (B, 3, H, W), normalised
        - Output: (B, widths[-1])
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64, 128),
        blocks: Sequence[int] = (1, 1, 1, 1),
        stem_stride: int = 1,
        num_classes: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if len(widths) != len(blocks):
            raise ValueError(f"widths {widths} and blocks {blocks} differ in length")
        super().__init__(feature_dim=widths[-1], mean=mean, std=std)
        self.stem = _conv_bn_relu(3, widths[0], stem_stride)
        in_channels = widths[0]
        self.stage_names = []
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(in_channels, width, stride))
                in_channels = width
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layers))
            self.stage_names.append(f"layer{stage + 1}")
        _finish(self, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))

    def layer_names(self) -> list[str]:
        names = ["stem"]
        for stage in self.stage_names:
            names += [f"{stage}.{i}" for i in range(len(getattr(self, stage)))] + [stage]
        return names


def _no_hub(name: str) -> WeightsError:
    return WeightsError(f"{name} has no published weights; train it or pass weights=PATH")


@register_backbone("small_cnn", help="4-conv CNN (32-64-128-256), fast on CPU at 32-64 px, r=256")
def small_cnn(*, pretrained: bool = False, **kwargs: object) -> SmallCNN:
    """The 4-conv CNN; ``kwargs`` go to :class:`SmallCNN`."""
    if pretrained:
        raise _no_hub("small_cnn")
    return SmallCNN(**kwargs)  # type: ignore[arg-type]


@register_backbone("resnet_tiny", help="narrow ResNet, 4 stages x 1 block, 16-128 channels (0.31 M params), r=128")
def resnet_tiny(*, pretrained: bool = False, **kwargs: object) -> NarrowResNet:
    """Narrow ResNet with one basic block per stage, widths 16-32-64-128."""
    if pretrained:
        raise _no_hub("resnet_tiny")
    kwargs = {"widths": (16, 32, 64, 128), "blocks": (1, 1, 1, 1), **kwargs}
    return NarrowResNet(**kwargs)  # type: ignore[arg-type]


@register_backbone("resnet_small", help="narrow ResNet, 4 stages x 1 block, 32-256 channels (1.2 M params), r=256")
def resnet_small(*, pretrained: bool = False, **kwargs: object) -> NarrowResNet:
    """ResNet-10 layout at half width (32-64-128-256), one basic block per stage.

    Two blocks per stage (ResNet-18 at half width) cost 2.2x more compute; pass
    ``blocks=(2, 2, 2, 2)`` for that.
    """
    if pretrained:
        raise _no_hub("resnet_small")
    kwargs = {"widths": (32, 64, 128, 256), "blocks": (1, 1, 1, 1), **kwargs}
    return NarrowResNet(**kwargs)  # type: ignore[arg-type]
