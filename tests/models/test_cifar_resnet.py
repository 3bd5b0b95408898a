"""The CIFAR ResNet matches an independent functional re-implementation of He et al.'s design."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from replens.models import CifarResNet, create_backbone
from replens.models.cifar_resnet import OptionAShortcut


def randomise_batch_norm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN layer random affine parameters and running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


def reference_forward(
    state: dict[str, torch.Tensor], x: torch.Tensor, blocks: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """He et al. CIFAR ResNet written with F.conv2d; option A = subsample + concat zeros."""

    def bn(h: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.batch_norm(
            h,
            state[f"{prefix}.running_mean"],
            state[f"{prefix}.running_var"],
            state[f"{prefix}.weight"],
            state[f"{prefix}.bias"],
            training=False,
            eps=1e-5,
        )

    out = F.relu(bn(F.conv2d(x, state["conv1.weight"], padding=1), "bn1"))
    for stage in (1, 2, 3):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            h = F.conv2d(out, state[f"{prefix}.conv1.weight"], stride=stride, padding=1)
            h = F.relu(bn(h, f"{prefix}.bn1"))
            h = bn(F.conv2d(h, state[f"{prefix}.conv2.weight"], padding=1), f"{prefix}.bn2")
            if stride == 2:
                sub = out[:, :, ::2, ::2]
                pad = (h.shape[1] - sub.shape[1]) // 2
                zeros = sub.new_zeros(sub.shape[0], pad, sub.shape[2], sub.shape[3])
                shortcut = torch.cat([zeros, sub, zeros], dim=1)
            else:
                shortcut = out
            out = F.relu(h + shortcut)
    features = out.sum(dim=(2, 3)) / (out.shape[2] * out.shape[3])
    return features, features @ state["linear.weight"].T + state["linear.bias"]


@pytest.mark.parametrize(("name", "blocks", "params"), [("cifar_resnet20", 3, 269_722), ("cifar_resnet56", 9, 853_018)])
def test_matches_reference_implementation(name: str, blocks: int, params: int) -> None:
    model = create_backbone(name)
    randomise_batch_norm(model)
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == params  # 0.27 M / 0.85 M
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features = model(x)
        logits = model.logits(x)
    ref_features, ref_logits = reference_forward(model.state_dict(), x, blocks)
    assert features.shape == (3, 64)
    torch.testing.assert_close(features, ref_features, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)


def test_state_dict_keys_follow_the_akamaster_layout() -> None:
    keys = set(CifarResNet(depth=20).state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer3.2.bn2.bias", "linear.weight"):
        assert key in keys
    assert not any("shortcut" in key for key in keys)  # option A has no parameters
    assert len([k for k in keys if not k.endswith("num_batches_tracked")]) == 97


def test_loads_an_akamaster_style_checkpoint(tmp_path: Path) -> None:
    source = CifarResNet(depth=20)
    randomise_batch_norm(source, seed=1)
    source.eval()
    # like the published files: DataParallel prefix, nested, no num_batches_tracked
    state = {f"module.{k}": v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    torch.save({"best_prec1": 91.73, "state_dict": state}, tmp_path / "resnet20.th")
    model = create_backbone("cifar_resnet20", weights=tmp_path / "resnet20.th").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.logits(x), source.logits(x))


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = OptionAShortcut(32)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()
    assert list(OptionAShortcut(32).parameters()) == []


def test_layer_outputs_and_head() -> None:
    model = create_backbone("cifar_resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outputs = model.forward_layers(x, ["layer1", "layer2.0", "layer3"])
        features = model(x)
    assert outputs["layer1"].shape == (2, 16, 32, 32)
    assert outputs["layer2.0"].shape == (2, 32, 16, 16)
    torch.testing.assert_close(outputs["layer3"].mean(dim=(2, 3)), features)
    assert model.classifier is model.linear
    assert create_backbone("cifar_resnet20", num_classes=0).classifier is None
    with pytest.raises(ValueError, match="6n"):
        CifarResNet(depth=21)
