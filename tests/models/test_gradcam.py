"""The one Grad-CAM: pluggable targets, its layer choice and released hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replens.explain.layers import LayerRepresentation
from replens.models import create_backbone
from replens.models.gradcam import DiscriminativeSetTarget, FeatureGroupTarget, cam_layers, grad_cam
from replens.quality.analysis import ProjectedRepresentation


def test_both_targets_sum_their_features():
    out = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0])  # feature 7 alone is highly activating
    assert FeatureGroupTarget([0, 7])(out).item() == 10.0
    assert DiscriminativeSetTarget([7], eps=1.0).features(out).tolist() == [7]
    assert DiscriminativeSetTarget([6], eps=1.0)(out).item() == 0.0  # 7 is active but not discriminative


def test_cam_layers_are_the_blocks_or_the_stage_found_by_the_backbone():
    model = create_backbone("resnet_tiny").eval()
    name, stage = model.find_layer()
    assert cam_layers(model) == list(stage.children()) and cam_layers(model, blocks=False) == [stage]
    early = LayerRepresentation(model, model.layer_names()[0])
    assert early.find_layer() == model.find_layer(model.layer_names()[0])
    projected = ProjectedRepresentation(model, np.zeros(model.feature_dim), np.eye(model.feature_dim)[:2])
    assert projected.find_layer() == (name, stage)
    with pytest.raises(KeyError, match="unknown layers"):
        cam_layers(model, "nosuch")


def test_grad_cam_is_batch_size_invariant_and_releases_hooks():
    torch.manual_seed(0)
    model = create_backbone("small_cnn").eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    whole = grad_cam(model, images, FeatureGroupTarget([1, 2]))
    halves = grad_cam(model, images, FeatureGroupTarget([1, 2]), batch_size=2)
    assert whole.shape == (4, 32, 32) and np.allclose(whole, halves, atol=1e-5)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert grad_cam(model, images[:0], FeatureGroupTarget([0])).shape == (0, 32, 32)
