"""Weight loading and checkpoint writing: safe, wrapper-tolerant, precise errors, offline-aware."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from replens.hub import DownloadError
from replens.models import (
    WeightsError,
    create_backbone,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)


class NotATensor:
    """A custom class: pickling it into a checkpoint must not be loadable."""

    def __init__(self) -> None:
        self.value = 1


def assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("wrapper", ["plain", "state_dict", "model", "module", "nested"])
def test_unwraps_nesting_and_module_prefix(wrapper: str, tmp_path: Path) -> None:
    source = Tiny()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    obj = {
        "plain": state,
        "state_dict": {"epoch": 3, "state_dict": state},
        "model": {"model": state, "optimizer": {"lr": 0.1}},
        "module": {"module": state},
        "nested": {"best_prec1": 90.0, "state_dict": {"model": state}},
    }[wrapper]
    torch.save(obj, tmp_path / "w.pt")
    target = Tiny()
    result = load_weights(target, tmp_path / "w.pt")
    assert result.missing == [] and result.unexpected == []
    assert_same(target, source)


def test_reports_missing_and_unexpected_keys_by_name(tmp_path: Path) -> None:
    state = Tiny().state_dict()
    del state["fc.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError) as info:
        load_weights(Tiny(), tmp_path / "w.pt")
    message = str(info.value)
    assert "missing keys (1): fc.weight" in message
    assert "unexpected keys (1): extra.weight" in message
    result = load_weights(Tiny(), tmp_path / "w.pt", strict=False)
    assert result.missing == ["fc.weight"] and result.unexpected == ["extra.weight"]


def test_shape_mismatch_names_the_key_even_when_not_strict(tmp_path: Path) -> None:
    state = Tiny().state_dict()
    state["fc.weight"] = torch.zeros(5, 4)
    torch.save(state, tmp_path / "w.pt")
    for strict in (True, False):
        with pytest.raises(WeightsError, match=r"fc\.weight: file \(5, 4\) vs model \(2, 4\)"):
            load_weights(Tiny(), tmp_path / "w.pt", strict=strict)


def test_refuses_to_unpickle_arbitrary_objects(tmp_path: Path) -> None:
    torch.save({"state_dict": Tiny().state_dict(), "config": NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match=r"refusing to unpickle .*NotATensor") as info:
        load_weights(Tiny(), tmp_path / "evil.pt")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unreadable_and_non_state_dict_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_weights(Tiny(), tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_weights(Tiny(), tmp_path / "junk.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(WeightsError, match="not a state dict"):
        load_weights(Tiny(), tmp_path / "meta.pt")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_checkpoint_round_trip(suffix: str, tmp_path: Path) -> None:
    source = Tiny()
    source.fc.weight = source.fc.weight  # nothing shared, but clone() must also handle views
    path = save_checkpoint(tmp_path / "sub" / f"ckpt{suffix}", source, {"epoch": 7, "model": "tiny"})
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    state, meta = read_checkpoint(path)
    assert meta == {"epoch": 7, "model": "tiny"}
    target = Tiny()
    load_weights(target, path)
    assert_same(target, source)


def test_safetensors_is_detected_without_its_suffix(tmp_path: Path) -> None:
    source = Tiny()
    save_checkpoint(tmp_path / "w.safetensors", source)
    (tmp_path / "w.safetensors").rename(tmp_path / "w.bin")
    target = Tiny()
    load_weights(target, tmp_path / "w.bin")
    assert_same(target, source)


def test_save_checkpoint_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "ckpt.pt", Tiny(), {"v": 1})
    before = path.read_bytes()

    def broken_save(obj: object, f: str) -> None:
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, Tiny(), {"v": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "x.pt", Tiny(), {"bad": object()})


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the torch-hub and Hugging Face caches at an empty folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # open_clip's ~/.cache/clip
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("resnet18", "resnet18-f37072fd.pth"),
        ("timm:test_vit", "models--timm--test_vit.r160_in1k"),
        ("open_clip:ViT-B-32:openai", "models--timm--vit_base_patch32_clip_224.openai"),
    ],
)
@pytest.mark.parametrize("how", ["offline-variable", "unreachable-host"])
def test_pretrained_without_cache_or_network_fails_fast_and_clearly(
    spec: str, needle: str, how: str, empty_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "offline-variable":
        monkeypatch.setenv("REPLENS_OFFLINE", "1")
    else:
        monkeypatch.delenv("REPLENS_OFFLINE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("REPLENS_HUB_URL", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(DownloadError) as info:
        create_backbone(spec, pretrained=True)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert needle in message  # where it looked
    assert str(empty_caches) in message
    assert "weights=PATH" in message or "weights=..." in message  # how to provide a file
    assert info.value.__cause__ is None


def test_backbones_without_hub_weights_say_so() -> None:
    for name in ("small_cnn", "resnet_tiny"):
        with pytest.raises(WeightsError, match="weights=PATH"):
            create_backbone(name, pretrained=True)
    with pytest.raises(ValueError, match="stem='imagenet'"):
        create_backbone("resnet18", pretrained=True, stem="cifar")


def test_pretrained_reads_the_torchvision_cache(empty_caches: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLENS_OFFLINE", "1")  # must not need the network when cached
    reference = create_backbone("resnet18")
    cached = empty_caches / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    model = create_backbone("resnet18", pretrained=True)
    assert_same(model, reference)


def test_pretrained_reads_the_hugging_face_cache(empty_caches: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLENS_OFFLINE", "1")
    reference = create_backbone("timm:test_vit")
    snapshot = empty_caches / "hf" / "models--timm--test_vit.r160_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    raw = {k.removeprefix("model."): v for k, v in reference.state_dict().items()}
    save_checkpoint(snapshot / "model.safetensors", raw)
    model = create_backbone("timm:test_vit", pretrained=True)
    assert_same(model, reference)


def test_wrappers_accept_their_libraries_checkpoints(tmp_path: Path) -> None:
    """A raw timm state dict (no ``model.`` prefix) and a full CLIP state dict (text tower included)."""
    import open_clip

    vit = create_backbone("timm:test_vit", img_size=32)
    save_checkpoint(tmp_path / "timm.pt", vit.model)
    assert_same(create_backbone("timm:test_vit", img_size=32, weights=tmp_path / "timm.pt"), vit)

    tiny = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    }
    clip = open_clip.create_model("ViT-B-32", **tiny)
    assert any(not k.startswith("visual.") for k in clip.state_dict())
    save_checkpoint(tmp_path / "clip.safetensors", clip)
    tower = create_backbone("open_clip:ViT-B-32", weights=tmp_path / "clip.safetensors", **tiny)
    for key, value in tower.state_dict().items():
        assert torch.equal(value, clip.state_dict()[key])


def test_checkpoint_backbone_args_reads_the_header_and_names_a_bad_one(tmp_path):
    from safetensors.torch import save_file

    from replens.models.weights import checkpoint_backbone_args

    good, bad, plain = tmp_path / "good.safetensors", tmp_path / "bad.safetensors", tmp_path / "plain.pt"
    save_file({"w": torch.zeros(1)}, str(good), metadata={"backbone": "small_cnn", "backbone_args": '{"widths": [1]}'})
    save_file({"w": torch.zeros(1)}, str(bad), metadata={"backbone_args": "[1, 2"})
    torch.save({"w": torch.zeros(1)}, plain)
    assert checkpoint_backbone_args(good) == {"widths": [1]}
    assert checkpoint_backbone_args(plain) == {}  # torch files record no architecture
    with pytest.raises(WeightsError, match="bad.safetensors: header key backbone_args is not JSON"):
        checkpoint_backbone_args(bad)
