"""Every registered backbone honours the common interface (timm-style registry tests).

Each registered name maps to a CPU-cheap case below (families and aliases to a
tiny concrete model). A name listed in ``HEAVY`` is exempt from the
parametrised tests (``vit_s16``: a 22 M parameter ViT whose random init alone
takes seconds on CPU; its family is covered by ``timm:test_vit`` and the alias
by ``test_vit_s16_alias_resolves``). A new registration without a case here
fails ``test_every_registered_backbone_has_a_case``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import replens.models.backbone as backbone_module
from replens.models import (
    Backbone,
    SmallCNN,
    create_backbone,
    list_backbones,
    register_backbone,
    save_checkpoint,
)

TINY_CLIP: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
}

#: registry key -> (spec to build, factory kwargs, image side)
CASES: dict[str, tuple[str, dict[str, Any], int]] = {
    "small_cnn": ("small_cnn", {}, 32),
    "resnet_tiny": ("resnet_tiny", {}, 32),
    "resnet_small": ("resnet_small", {}, 32),
    "resnet18": ("resnet18", {"stem": "cifar", "num_classes": 10}, 32),
    "resnet50": ("resnet50", {}, 64),
    "cifar_resnet20": ("cifar_resnet20", {}, 32),
    "cifar_resnet56": ("cifar_resnet56", {}, 32),
    "timm:<model>": ("timm:test_vit", {"img_size": 32}, 32),
    "open_clip:<model>[:<pretrained tag>]": ("open_clip:ViT-B-32", TINY_CLIP, 32),
    "vit_s16": ("vit_s16", {"img_size": 32}, 32),
}
#: extra cases beyond one per registry key (a timm CNN, the ImageNet stem)
EXTRA: dict[str, tuple[str, dict[str, Any], int]] = {
    "timm-cnn": ("timm:resnet10t", {}, 32),
    "resnet18-imagenet-stem": ("resnet18", {}, 64),
}
#: registry keys too expensive for CPU tests (documented exemption, see the module docstring)
HEAVY: set[str] = {"vit_s16"}

ALL = {**{k: v for k, v in CASES.items() if k not in HEAVY}, **EXTRA}


def build(case: str) -> tuple[Backbone, torch.Tensor]:
    spec, kwargs, size = ALL[case]
    model = create_backbone(spec, **kwargs).eval()
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    return model, images


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_every_registered_backbone_has_a_case() -> None:
    assert set(list_backbones()) <= set(CASES) | HEAVY
    assert all(isinstance(h, str) and h and "\n" not in h for h in list_backbones().values())


@pytest.mark.parametrize("case", sorted(ALL))
def test_forward_gives_one_vector_per_image(case: str) -> None:
    model, images = build(case)
    with torch.no_grad():
        x = model.preprocess(images)
        features = model(x)
    assert features.shape == (2, model.feature_dim)
    assert torch.isfinite(features).all()
    # float images in [0, 1] are preprocessed like uint8 ones
    assert torch.allclose(model.preprocess(images.float() / 255), x, atol=1e-6)
    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.std).view(1, 3, 1, 1)
    assert torch.allclose(x, (images.float() / 255 - mean) / std, atol=1e-6)


@pytest.mark.parametrize("case", sorted(ALL))
def test_forward_layers_returns_requested_layers_and_removes_hooks(case: str) -> None:
    model, images = build(case)
    layers = model.layer_names()
    assert layers and len(set(layers)) == len(layers)
    before = hook_count(model)
    with torch.no_grad():
        outputs = model.forward_layers(model.preprocess(images), layers[::-1])
    assert list(outputs) == layers[::-1]
    assert all(out.shape[0] == 2 for out in outputs.values())
    assert hook_count(model) == before == 0
    # hooks are removed when the forward fails too
    with pytest.raises(RuntimeError):
        model.forward_layers(torch.zeros(2, 5, 32, 32), layers[:1])
    assert hook_count(model) == 0
    with pytest.raises(KeyError, match="unknown layers"):
        model.forward_layers(model.preprocess(images), ["no_such_layer"])
    # the one layer lookup: the last stage by default, any listed layer by name
    name, module = model.find_layer()
    assert name == layers[-1] and module is dict(model.layer_root().named_modules())[name]
    assert model.find_layer(layers[0])[0] == layers[0]
    with pytest.raises(KeyError, match="unknown layers"):
        model.find_layer("no_such_layer")


@pytest.mark.parametrize("case", sorted(ALL))
def test_weights_round_trip_through_create_backbone(case: str, tmp_path: Path) -> None:
    model, images = build(case)
    path = save_checkpoint(tmp_path / "w.safetensors", model, {"case": case})
    spec, kwargs, _ = ALL[case]
    torch.manual_seed(123)  # a different random init
    loaded = create_backbone(spec, weights=path, **kwargs).eval()
    with torch.no_grad():
        assert torch.equal(loaded(loaded.preprocess(images)), model(model.preprocess(images)))
    if model.classifier is not None:
        with torch.no_grad():
            logits = model.logits(model.preprocess(images))
        assert logits.shape[0] == 2 and logits.ndim == 2


def test_cifar_stem_differs_from_imagenet_stem() -> None:
    cifar = create_backbone("resnet18", stem="cifar")
    imagenet = create_backbone("resnet18")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, nn.Identity)
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, nn.MaxPool2d)
    with torch.no_grad():
        x = cifar.preprocess(torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8))
        maps = cifar.forward_layers(x, ["layer4"])["layer4"]
    assert maps.shape[-1] == 4  # 32 / 8: no stride in the stem
    with pytest.raises(ValueError, match="stem"):
        create_backbone("resnet18", stem="tiny")


def test_preprocess_follows_module_dtype() -> None:
    model = create_backbone("small_cnn").double().eval()
    x = model.preprocess(torch.zeros(3, 8, 8, dtype=torch.uint8))
    assert x.dtype == torch.float64 and x.shape == (1, 3, 8, 8)
    assert model(x).dtype == torch.float64
    with pytest.raises(ValueError, match="shape"):
        model.preprocess(torch.zeros(2, 1, 8, 8))


def test_timm_and_open_clip_keep_their_preprocessing() -> None:
    vit = create_backbone("timm:test_vit", img_size=32)
    assert vit.mean == (0.5, 0.5, 0.5) and vit.input_size == 32 and vit.num_prefix_tokens == 1
    clip = create_backbone("open_clip:ViT-B-32", **TINY_CLIP)
    assert clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert clip.feature_dim == 32 and clip.input_size == 32 and clip.classifier is None
    assert all(name.startswith("visual.") for name in clip.state_dict())


def test_create_backbone_rejects_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown backbone"):
        create_backbone("resnet19")
    with pytest.raises(KeyError, match="unknown backbone"):
        create_backbone("timm")
    with pytest.raises(KeyError, match="unknown backbone"):
        create_backbone("small_cnn:x")
    with pytest.raises(ValueError, match="not both"):
        create_backbone("small_cnn", pretrained=True, weights=tmp_path / "x.pt")


def test_register_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbone_module, "BACKBONES", backbone_module.BACKBONES.copy())

    @register_backbone("test_cnn", help="a SmallCNN with 8 channels\nsecond line is dropped")
    def test_cnn(*, pretrained: bool = False) -> Backbone:
        return SmallCNN(widths=(8, 8, 8, 8))

    assert list_backbones()["test_cnn"] == "a SmallCNN with 8 channels"
    model = create_backbone("test_cnn")
    assert model.name == "test_cnn" and model.feature_dim == 8
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("test_cnn", help="again")(test_cnn)
    with pytest.raises(ValueError, match="':'"):
        register_backbone("a:b", help="bad")


def test_vit_s16_alias_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_timm(model_name: str, **kwargs: Any) -> Backbone:
        calls.append((model_name, kwargs))
        return SmallCNN(widths=(4, 4, 4, 4))

    monkeypatch.setattr(backbone_module, "BACKBONES", backbone_module.BACKBONES.copy())
    backbone_module.BACKBONES.replace("timm", fake_timm)
    model = create_backbone("vit_s16", img_size=32)
    assert calls == [("vit_small_patch16_224", {"pretrained": False, "img_size": 32})]
    assert model.name == "vit_s16"
    assert list_backbones()["vit_s16"] == "alias of timm:vit_small_patch16_224"
