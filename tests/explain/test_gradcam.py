"""Grad-CAM crops: the group target, the largest region, and hooks that are always released."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from replens.explain.gradcam import (
    FeatureGroupTarget,
    cam_boxes,
    crop_images,
    group_cams,
    largest_region_box,
    last_stage_blocks,
    resize_crops,
)
from replens.models import Backbone, create_backbone


class Block(nn.Module):
    """A 1x1 convolution initialised to the identity, then ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        self.act = nn.ReLU()
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class ChannelNet(Backbone):
    """Feature c is the mean of colour channel c: its Grad-CAM is that channel's map."""

    def __init__(self) -> None:
        super().__init__(feature_dim=3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.stage = nn.Sequential(Block(), Block())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(x).mean(dim=(2, 3))

    def layer_names(self) -> list[str]:
        return ["stage"]


def scene() -> torch.Tensor:
    """Two red squares (4x4 at the top left, 6x5 at the bottom right) and a green bar."""
    img = torch.zeros(1, 3, 24, 24, dtype=torch.uint8)
    img[0, 0, 2:6, 2:6] = 255
    img[0, 0, 15:20, 12:18] = 255
    img[0, 1, 10:12, :] = 255
    return img


def no_hooks(module: nn.Module) -> bool:
    return all(
        not m._forward_hooks
        and not m._forward_pre_hooks
        and not m._backward_hooks
        and not getattr(m, "_backward_pre_hooks", {})
        for m in module.modules()
    )


def test_cam_of_a_feature_group_highlights_its_regions_and_crops_the_largest():
    net = ChannelNet()
    assert last_stage_blocks(net) == list(net.stage)  # every block of the last stage
    cams = group_cams(net, scene(), [0])
    red = scene()[0, 0].numpy() > 0
    assert cams.shape == (1, 24, 24)
    assert cams[0][red].min() > 0.99 and cams[0][~red].max() < 1e-6
    assert cam_boxes(cams, 0.6) == [(12, 15, 18, 20)]  # the larger red square
    (crop,) = crop_images(scene(), cam_boxes(cams, 0.6))
    assert crop.shape == (3, 5, 6) and bool((crop[0] == 255).all())
    # a group target is the sum of its features: red + green
    both = group_cams(net, scene(), [0, 1])[0]
    green = scene()[0, 1].numpy() > 0
    assert both[green].min() > 0.9 and both[red].min() > 0.9 and both[~(red | green)].max() < 1e-6
    assert FeatureGroupTarget([0, 2])(torch.tensor([[1.0, 2.0, 4.0]])).item() == 5.0


def test_hooks_are_released_also_on_errors():
    net = ChannelNet()
    group_cams(net, scene(), [1])
    assert no_hooks(net)
    with pytest.raises(IndexError):
        group_cams(net, scene(), [7])  # no feature 7
    assert no_hooks(net)
    model = create_backbone("resnet_tiny").eval()
    cams = group_cams(model, torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8), [4, 9], batch_size=2)
    assert cams.shape == (3, 32, 32) and np.isfinite(cams).all() and no_hooks(model)
    assert not any(p.grad is not None for p in model.parameters())


def test_largest_region_box_direct():
    mask = np.zeros((10, 10), dtype=bool)
    assert largest_region_box(mask) is None
    mask[1, 1] = True
    mask[5:9, 2:4] = True  # 4x2 box area 8
    mask[0, 6:9] = True  # 1x3 box area 3
    mask[3, 8] = mask[4, 9] = True  # diagonal pair: one region (8-connectivity), box 2x2
    assert largest_region_box(mask) == (2, 5, 4, 9)
    resized = resize_crops([torch.full((3, 2, 5), 200, dtype=torch.uint8)], 8)
    assert resized.shape == (1, 3, 8, 8) and bool((resized == 200).all())
