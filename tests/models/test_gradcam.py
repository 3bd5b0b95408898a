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


def test_grad_cam_of_a_ddm_wrapped_encoder_is_the_encoders_on_the_invariant_features():
    """The DDM plug-in hands recipes a DomainSplitBackbone (h^p = h[:, k:]); Grad-CAM must work on it unchanged."""
    from replens.ddm.plugin import DDMPlugin

    torch.manual_seed(0)
    encoder = create_backbone("small_cnn").eval()
    wrapped = DDMPlugin(prefix_dim=16).wrap_backbone(encoder)
    k = wrapped.prefix_dim
    assert wrapped.feature_dim == encoder.feature_dim - k
    # the layer lookup is the encoder's: the same modules, by default and by name, and the same errors
    assert wrapped.find_layer() == encoder.find_layer()
    name = encoder.layer_names()[0]
    assert wrapped.find_layer(name) == encoder.find_layer(name)
    assert cam_layers(wrapped) == cam_layers(encoder) and cam_layers(wrapped, blocks=False) == cam_layers(
        encoder, blocks=False)
    with pytest.raises(KeyError, match="unknown layers"):
        cam_layers(wrapped, "nosuch")
    assert wrapped.name == encoder.name and wrapped.num_prefix_tokens == 0

    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    # a feature group of h^p is the same group of h shifted by k
    group = [0, 5, 17]
    on_wrapper = grad_cam(wrapped, images, FeatureGroupTarget(group))
    on_encoder = grad_cam(encoder, images, FeatureGroupTarget([f + k for f in group]))
    assert on_wrapper.shape == (3, 32, 32) and np.isfinite(on_wrapper).all()
    assert all(np.ptp(m) > 0.5 for m in on_wrapper)  # min-max scaled, not a constant map
    np.testing.assert_allclose(on_wrapper, on_encoder, atol=1e-5)
    # the discriminative set of h^p: per sample, the encoder's map of the same features
    target = DiscriminativeSetTarget(np.arange(wrapped.feature_dim), eps=0.5)
    maps = grad_cam(wrapped, images, target)
    with torch.no_grad():
        hp = wrapped(wrapped.preprocess(images))
    for i in range(len(images)):
        chosen = target.features(hp[i]).tolist()
        assert chosen
        same = grad_cam(encoder, images[i : i + 1], FeatureGroupTarget([f + k for f in chosen]))[0]
        np.testing.assert_allclose(maps[i], same, atol=1e-5)
    assert all(not m._forward_hooks and not m._backward_hooks for m in wrapped.modules())
    assert all(p.grad is None for p in wrapped.parameters())
    assert not any(m.training for m in wrapped.modules())  # wrapping an eval encoder, then Grad-CAM: still eval
    # mixed modes (a training wrapper around frozen batch norms) come back as they were, module by module
    wrapped.train()
    frozen = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in frozen:
        m.eval()
    grad_cam(wrapped, images[:1], FeatureGroupTarget(group))
    assert wrapped.training and encoder.training and not any(m.training for m in frozen)
