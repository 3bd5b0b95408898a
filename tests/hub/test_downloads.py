"""The real download code (replens.hub) against a local server on 127.0.0.1.

Covers a first download, the cached second run (no request reaches the
server), a corrupt file (checksum error, nothing left in the cache), a
connection closed mid-file (resumed with a Range request) and offline mode,
for plain URLs (torch hub, datasets), the Hugging Face hub (timm, open_clip)
and a CIFAR-10 archive in its real layout.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from local_hub import LocalHub
from replens import hub as hub_module
from replens.hub import DownloadError, fetch_url
from replens.models import create_backbone, save_checkpoint
from replens.models.cifar_resnet import AKAMASTER_FILES
from support import TINY_VIT_CLIP

TORCH_URL = "https://download.pytorch.org/models/{}"


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _payload(n: int = 300_000) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


def _torch_name(data: bytes) -> str:
    return f"tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # torch hub's naming: sha256 prefix in the name


# ----------------------------------------------------------------------------- plain URLs
def test_first_download_then_cached_without_any_request(hub: LocalHub, caches: Path) -> None:
    data = _payload()
    name = _torch_name(data)
    hub.add(f"/models/{name}", data)
    dest = caches / "torch" / "hub" / "checkpoints" / name
    assert fetch_url(TORCH_URL.format(name), dest, progress=False) == dest
    assert dest.read_bytes() == data
    assert [r[:2] for r in hub.requests] == [("GET", f"/models/{name}")]
    assert _files_under(dest.parent) == [dest]  # no temporary file left beside it

    fetch_url(TORCH_URL.format(name), dest, progress=False)
    assert len(hub.requests) == 1  # second run: from the cache


def test_corrupt_file_fails_its_checksum_and_leaves_nothing(hub: LocalHub, caches: Path) -> None:
    data = _payload()
    name = _torch_name(data)
    hub.add(f"/models/{name}", data[:-1] + b"\x00")  # one byte differs from what the name publishes
    dest = caches / "torch" / "hub" / "checkpoints" / name
    with pytest.raises(DownloadError, match=f"checksum mismatch for {name}") as info:
        fetch_url(TORCH_URL.format(name), dest, progress=False)
    assert "\n" not in str(info.value)
    assert _files_under(caches / "torch") == []
    with pytest.raises(DownloadError, match="md5"):
        fetch_url(TORCH_URL.format(name), dest, md5="0" * 32, progress=False)
    assert _files_under(caches / "torch") == []


def test_connection_closed_mid_file_resumes_with_a_range_request(hub: LocalHub, caches: Path) -> None:
    data = _payload()
    name = _torch_name(data)
    hub.add(f"/models/{name}", data)
    hub.cut_once[f"/models/{name}"] = 100_000
    dest = caches / "torch" / "hub" / "checkpoints" / name
    fetch_url(TORCH_URL.format(name), dest, progress=False)
    assert dest.read_bytes() == data
    assert [r[2] for r in hub.requests] == [None, "bytes=100000-"]


def test_failures_leave_nothing_half_written(hub: LocalHub, caches: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module.time, "sleep", lambda s: None)
    dest = caches / "xdg" / "replens" / "file.bin"
    with pytest.raises(DownloadError, match="does not exist"):
        fetch_url("https://example.org/missing.bin", dest, kind="banks", progress=False)
    data = _payload()
    hub.add("/flaky.bin", data)
    hub.cut_always["/flaky.bin"] = 10  # every attempt is cut: the retries run out
    with pytest.raises(DownloadError, match="after 2 tries: connection closed"):
        fetch_url("https://example.org/flaky.bin", dest, kind="banks", progress=False, retries=1)
    assert [r[2] for r in hub.hits("flaky")] == [None, "bytes=10-"]
    assert _files_under(caches / "xdg") == []


def test_offline_mode_names_the_file_and_where_it_was_looked_for(
    hub: LocalHub, caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLENS_OFFLINE", "1")
    dest = caches / "torch" / "hub" / "checkpoints" / "x-0123abcd.pth"
    with pytest.raises(DownloadError) as info:
        fetch_url(TORCH_URL.format(dest.name), dest, progress=False)
    message = str(info.value)
    assert "\n" not in message and str(dest) in message and "offline" in message
    assert hub.requests == []


def test_per_kind_base_url_overrides_the_global_one(caches: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLENS_HUB_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("REPLENS_HUB_URL_DATASETS", "http://127.0.0.1:2/mirror/")
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert hub_module.mirror_url(url, "weights") == "http://127.0.0.1:1/~kriz/cifar-10-python.tar.gz"
    assert hub_module.mirror_url(url, "datasets") == "http://127.0.0.1:2/mirror/~kriz/cifar-10-python.tar.gz"
    assert hub_module.hf_endpoint() == "http://127.0.0.1:1"
    with pytest.raises(ValueError, match="unknown download kind"):
        hub_module.mirror_url(url, "nope")


# ----------------------------------------------------------------------------- backbones
def test_tiny_backbone_checkpoint_downloads_into_the_torch_hub_cache(hub: LocalHub, caches: Path) -> None:
    """cifar_resnet20's published akamaster checkpoint layout: {'state_dict': {'module.*': ...}, 'best_prec1'}."""
    reference = create_backbone("cifar_resnet20")
    buffer = io.BytesIO()
    torch.save({"best_prec1": 91.7, "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}},
               buffer)
    name = AKAMASTER_FILES[20]
    hub.add(f"/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{name}", buffer.getvalue())
    model = create_backbone("cifar_resnet20", pretrained=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert (caches / "torch" / "hub" / "checkpoints" / name).is_file()
    create_backbone("cifar_resnet20", pretrained=True)
    assert len(hub.requests) == 1


def _serve_timm_test_vit(hub: LocalHub, tmp_path: Path, *, etag: str | None = None) -> dict[str, torch.Tensor]:
    reference = create_backbone("timm:test_vit")
    raw = {k.removeprefix("model."): v for k, v in reference.state_dict().items()}
    save_checkpoint(tmp_path / "model.safetensors", raw)
    hub.add_hf("timm/test_vit.r160_in1k", "model.safetensors", (tmp_path / "model.safetensors").read_bytes(),
               etag=etag)
    return reference.state_dict()


def test_timm_weights_download_into_the_hugging_face_cache(hub: LocalHub, caches: Path, tmp_path: Path) -> None:
    reference = _serve_timm_test_vit(hub, tmp_path)
    hub.cut_once["/timm/test_vit.r160_in1k/resolve/main/model.safetensors"] = 5_000
    model = create_backbone("timm:test_vit", pretrained=True)
    for key, value in reference.items():
        assert torch.equal(model.state_dict()[key], value), key
    repo = caches / "hf" / "hub" / "models--timm--test_vit.r160_in1k"
    assert (repo / "refs" / "main").is_file() and not list(repo.rglob("*.incomplete"))
    # huggingface_hub retried the cut download (resuming from what its HTTP client had handed over: none here)
    assert len([r for r in hub.requests if r[0] == "GET"]) == 2
    seen = len(hub.requests)
    create_backbone("timm:test_vit", pretrained=True)
    assert len(hub.requests) == seen  # cached


def test_corrupt_hub_file_is_discarded(hub: LocalHub, caches: Path, tmp_path: Path) -> None:
    _serve_timm_test_vit(hub, tmp_path, etag="f" * 64)  # the published sha256 does not match the bytes
    with pytest.raises(DownloadError, match="checksum mismatch for timm/test_vit.r160_in1k/model.safetensors"):
        create_backbone("timm:test_vit", pretrained=True)
    assert [p for p in _files_under(caches / "hf") if "blobs" in p.parts or "snapshots" in p.parts] == []


def test_hub_offline_and_unreachable_errors_are_one_line(
    caches: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLENS_HUB_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(DownloadError) as info:
        create_backbone("timm:test_vit", pretrained=True)
    assert "127.0.0.1:9" in str(info.value) and "weights=PATH" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("REPLENS_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"not cached \(looked in .*models--timm--test_vit.r160_in1k"):
        create_backbone("timm:test_vit", pretrained=True)


# ----------------------------------------------------------------------------- VL models
def test_tiny_clip_in_open_clip_format_downloads_from_the_hub(hub: LocalHub, caches: Path, tmp_path: Path) -> None:
    from replens.vl import build_tiny_clip, load_vl_model

    tiny = build_tiny_clip(TINY_VIT_CLIP, seed=3)
    folder = tiny.save_open_clip(tmp_path / "tiny-clip")
    for f in folder.iterdir():
        hub.add_hf("replens/tiny-clip", f.name, f.read_bytes())
    vl = load_vl_model("hf-hub:replens/tiny-clip")
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(vl.embed_images(images), tiny.embed_images(images), atol=1e-6)
    assert torch.allclose(vl.embed_texts(["a red circle"]), tiny.embed_texts(["a red circle"]), atol=1e-6)
    assert vl.fingerprint.startswith("hf-hub:replens/tiny-clip@")
    seen = len(hub.requests)
    load_vl_model("hf-hub:replens/tiny-clip")
    assert len(hub.requests) == seen
    local = load_vl_model(str(folder))  # the same folder read locally
    assert torch.allclose(local.embed_texts(["a red circle"]), tiny.embed_texts(["a red circle"]), atol=1e-6)


# ----------------------------------------------------------------------------- datasets
def _cifar_archive(n: int = 20) -> tuple[bytes, dict[str, str]]:
    """A cifar-10-python.tar.gz in CIFAR's real layout (pickled batches in cifar-10-batches-py/) and their md5s."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    md5s: dict[str, str] = {}
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, obj: object) -> None:
            blob = pickle.dumps(obj)
            md5s[name] = hashlib.md5(blob).hexdigest()
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            # Python 2 pickles whose str keys read back as str with encoding="latin1", as torchvision reads them
            add(name, {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                       "labels": rng.integers(0, 10, n).tolist(), "batch_label": name})
        add("batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": n})
    return buffer.getvalue(), md5s


def test_cifar10_archive_downloads_and_opens_as_a_source(
    hub: LocalHub, caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets as tvd

    from replens.data import open_source

    archive, md5s = _cifar_archive()
    # the published checksums are of the real files: publish ours instead
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f, md5s[f]] for f, _ in tvd.CIFAR10.train_list])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [[f, md5s[f]] for f, _ in tvd.CIFAR10.test_list])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5s["batches.meta"]})
    hub.add("/~kriz/cifar-10-python.tar.gz", archive)
    hub.cut_once["/~kriz/cifar-10-python.tar.gz"] = 1000
    train = open_source("tv:CIFAR10?limit=7")
    test = open_source("tv:CIFAR10?train=0")
    assert len(train) == 7 and len(test) == 20
    assert train[0]["image"].shape == (3, 32, 32) and train.classes[0] == "class0"
    root = caches / "xdg" / "replens" / "datasets"
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert [r[2] for r in hub.requests] == [None, "bytes=1000-"]

    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", "0" * 32)
    other = caches / "other"
    with pytest.raises(DownloadError, match="checksum mismatch.*md5"):
        open_source(f"tv:CIFAR10:{other}?download=1")
    assert _files_under(other) == []


def test_dataset_download_offline(caches: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from replens.data import open_source

    monkeypatch.setenv("REPLENS_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"cifar-100-python.tar.gz\) is not cached \(looked for .*datasets"):
        open_source("tv:CIFAR100")


# ----------------------------------------------------------------------------- command line
def test_list_pretrained_and_the_global_offline_flag(
    hub: LocalHub, caches: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from replens.cli import main

    name = AKAMASTER_FILES[20]
    dest = caches / "torch" / "hub" / "checkpoints" / name
    dest.parent.mkdir(parents=True)
    save_checkpoint(dest, create_backbone("cifar_resnet20"))
    assert main(["list", "--pretrained"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "cached" in rows["cifar_resnet20"] and str(dest) in rows["cifar_resnet20"]
    assert "on demand" in rows["resnet50"] and "resnet50-11ad3fa6.pth" in rows["resnet50"]
    assert "on demand" in rows["ViT-B-32:openai"] and "on demand" in rows["tv:CIFAR10"]
    assert "laion400m:0" in out and "downloads are on" in out

    assert main(["--offline", "embed", "--model", "resnet18", "--pretrained", "--data", "tv:CIFAR10",
                 "--out", str(caches / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cifar-10-python.tar.gz" in err and "offline" in err
    assert hub.requests == []  # (monkeypatch's undo of REPLENS_OFFLINE also removes what --offline set)
