"""One protocol test for every registered source scheme, each opened from a tiny local fixture.

``CASES`` holds, per scheme of ``replens.data.SOURCES``, the fixtures that write
a tiny dataset in the scheme's real layout under ``tmp_path`` and say what it
holds. The tests are parametrised over the registry, so a newly registered
scheme without a fixture here fails them. The protocol (``replens.data.base``):
``len``; items ``{"image": uint8 (3, H, W), "label": int in range(len(classes)),
"domain": int in range(len(domain_names)), "index": i, "name": str}`` that agree
with the ``labels`` / ``domains`` arrays; the same order and pixels every time
the spec is opened; ``size=``, ``limit=`` and ``limit=&subset_seed=`` as
documented in ``replens.data.sources``; an IndexError past the end.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from replens.data import SOURCES, ImageSource, SubsetSource, open_source, parse_spec


@dataclass
class Ctx:
    """What a fixture builder may use: its folder, a monkeypatch and the shard writer of ``conftest.py``."""

    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    shards: object  # conftest.ShardMaker writing into tmp_path


@dataclass
class Fixture:
    """A written dataset: its spec and what opening it must give (None: only checked for consistency)."""

    spec: str
    classes: list[str] | None
    labels: list[int] | None
    domain_names: list[str] | None
    pixels: list[np.ndarray] | None = None  # (H, W, 3) uint8 per sample, when the storage is lossless
    domains: list[int] | None = None  # default: all 0


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _png_folder(root: Path, classes: list[str], per_class: int, seed: int) -> list[np.ndarray]:
    """ROOT/CLASS/i.png (ImageFolder layout); the images in the source's order (class, then file name)."""
    rng, images = _rng(seed), []
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / name / f"{i}.png")
            images.append(image)
    return images


def folder(ctx: Ctx) -> Fixture:
    tmp_path = ctx.tmp_path
    images = _png_folder(tmp_path / "photo", ["cat", "dog"], per_class=3, seed=0)
    return Fixture(f"folder:{tmp_path / 'photo'}", ["cat", "dog"], [0, 0, 0, 1, 1, 1], ["photo"], images)


def folder_domains(ctx: Ctx) -> Fixture:
    tmp_path = ctx.tmp_path
    sketch = _png_folder(tmp_path / "pacs" / "sketch", ["a", "b"], per_class=1, seed=1)
    photo = _png_folder(tmp_path / "pacs" / "photo", ["a", "b"], per_class=2, seed=2)
    return Fixture(f"folder:{tmp_path / 'pacs'}?domains=sketch,photo", ["a", "b"], [0, 1, 0, 0, 1, 1],
                   ["sketch", "photo"], sketch + photo, domains=[0, 0, 1, 1, 1, 1])


def wds(ctx: Ctx) -> Fixture:
    tmp_path = ctx.tmp_path
    shards = ctx.shards
    labels = [2, 0, 1, 2, 0, 1, 1]
    _, first = shards.shard("train-0.tar", labels[:4])
    _, second = shards.shard("train-1.tar.gz", labels[4:], start=4)
    (tmp_path / "classes.txt").write_text("cat\ndog\nfox\n")
    return Fixture(f"wds:{tmp_path}/train-{{0..1}}.tar*", ["cat", "dog", "fox"], labels, [tmp_path.name],
                   first + second)


def pacs(ctx: Ctx) -> Fixture:
    tmp_path = ctx.tmp_path
    shards, classes = ctx.shards, ["dog", "elephant", "giraffe"]
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    images, labels, domains = [], [], []
    for d, (domain, n) in enumerate((("sketch", 3), ("photo", 4))):
        ids = [i % 3 for i in range(n)]
        _, written = shards.shard(f"{domain}.tar", ids, meta=[{"class": classes[c], "domain": domain} for c in ids])
        images, labels, domains = images + written, labels + ids, domains + [d] * n
    return Fixture(f"pacs:{tmp_path}?domains=sketch,photo", classes, labels, ["sketch", "photo"], images, domains)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's idx format: magic (0, 0, 0x08 ubyte, ndim), big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def tv_mnist(ctx: Ctx) -> Fixture:
    tmp_path = ctx.tmp_path
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    grey, labels = _rng(3).integers(0, 256, (6, 28, 28), dtype=np.uint8), [7, 1, 0, 9, 1, 3]
    _write_idx(raw / "t10k-images-idx3-ubyte", grey)
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.array(labels))
    _write_idx(raw / "train-images-idx3-ubyte", grey[:1])
    _write_idx(raw / "train-labels-idx1-ubyte", np.array([3]))
    rgb = [np.repeat(g[..., None], 3, axis=2) for g in grey]
    return Fixture(f"tv:MNIST:{tmp_path}?train=0", None, labels, ["mnist"], rgb)


def tv_cifar10(ctx: Ctx) -> Fixture:
    """CIFAR-10 as extracted from cifar-10-python.tar.gz: pickled batches in ROOT/cifar-10-batches-py."""
    tmp_path = ctx.tmp_path
    import torchvision.datasets as tvd

    folder_path, rng, md5 = tmp_path / "cifar-10-batches-py", _rng(4), {}
    folder_path.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, 3).tolist(), "batch_label": name}
    batches["batches.meta"] = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 3}
    for name, obj in batches.items():
        blob = pickle.dumps(obj)
        (folder_path / name).write_bytes(blob)
        md5[name] = hashlib.md5(blob).hexdigest()
    # torchvision checks the published md5 of each file: publish those of these files
    ctx.monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f, md5[f]] for f, _ in tvd.CIFAR10.train_list])
    ctx.monkeypatch.setattr(tvd.CIFAR10, "test_list", [[f, md5[f]] for f, _ in tvd.CIFAR10.test_list])
    ctx.monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5["batches.meta"]})
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    pixels = [row.reshape(3, 32, 32).transpose(1, 2, 0) for b in train for row in b["data"]]
    labels = [y for b in train for y in b["labels"]]
    return Fixture(f"tv:CIFAR10:{tmp_path}", [f"class{i}" for i in range(10)], labels, ["cifar10"], pixels)


def _npz_arrays(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    return _rng(seed).integers(0, 256, (n, 5, 7, 3), dtype=np.uint8), np.arange(n) % 3


def npz(ctx: Ctx) -> Fixture:
    tmp_path = ctx.tmp_path
    images, labels = _npz_arrays(5, 7)
    np.savez(tmp_path / "digits.npz", images=images, labels=labels, classes=np.array(["x", "y", "z"]))
    return Fixture(f"npz:{tmp_path / 'digits.npz'}", ["x", "y", "z"], labels.tolist(), ["digits"], list(images))


def npy(ctx: Ctx) -> Fixture:
    tmp_path = ctx.tmp_path
    images, labels = _npz_arrays(6, 6)
    (tmp_path / "arr").mkdir()
    np.save(tmp_path / "arr" / "images.npy", images)
    np.save(tmp_path / "arr" / "labels.npy", labels)
    (tmp_path / "arr" / "classes.txt").write_text("no\nyes\nmaybe\n")
    return Fixture(f"npy:{tmp_path / 'arr'}", ["no", "yes", "maybe"], labels.tolist(), ["arr"], list(images))


def hf(ctx: Ctx) -> Fixture:
    tmp_path = ctx.tmp_path
    datasets = pytest.importorskip("datasets")
    images, labels = _npz_arrays(7, 6)
    features = datasets.Features({"img": datasets.Image(), "fine": datasets.ClassLabel(names=["cat", "dog", "emu"])})
    data = datasets.Dataset.from_dict({"img": [Image.fromarray(p) for p in images], "fine": labels.tolist()},
                                      features=features)
    datasets.DatasetDict({"train": data.select(range(1)), "test": data}).save_to_disk(str(tmp_path / "saved"))
    return Fixture(f"hf:{tmp_path / 'saved'}?split=test", ["cat", "dog", "emu"], labels.tolist(), ["saved"],
                   list(images))


def world(ctx: Ctx) -> Fixture:
    tmp_path = ctx.tmp_path
    from replens.world import WorldConfig, generate_world

    path = generate_world(WorldConfig(n=16, size=16, seed=0), tmp_path / "world", progress=False, workers=1)
    return Fixture(f"world:{path}?split=train", None, None, None)


def multi(ctx: Ctx) -> Fixture:
    tmp_path = ctx.tmp_path
    photo = _png_folder(tmp_path / "photo", ["a", "b"], per_class=2, seed=8)
    images, labels = _npz_arrays(9, 5)
    np.savez(tmp_path / "s.npz", images=images, labels=labels % 2, classes=np.array(["a", "b"]))
    spec = f"multi:folder:{tmp_path / 'photo'}|npz:{tmp_path / 's.npz'}?limit=3|?domain_names=p,s"
    return Fixture(spec, ["a", "b"], [0, 0, 1, 1] + (labels[:3] % 2).tolist(), ["p", "s"], photo + list(images[:3]),
                   domains=[0] * 4 + [1] * 3)


#: scheme -> the fixtures that open it (every registered scheme needs at least one)
CASES: dict[str, list[Callable[[Ctx], Fixture]]] = {
    "folder": [folder, folder_domains],
    "hf": [hf],
    "multi": [multi],
    "npy": [npy],
    "npz": [npz],
    "pacs": [pacs],
    "tv": [tv_cifar10, tv_mnist],
    "wds": [wds],
    "world": [world],
}

PARAMS = [
    pytest.param(scheme, builder, id=f"{scheme}-{builder.__name__}" if builder else f"{scheme}-MISSING")
    for scheme in SOURCES.names()
    for builder in CASES.get(scheme) or [None]
]


def _with(spec: str, **options: object) -> str:
    """``spec`` with more options (after ``|?`` for a composite scheme)."""
    parsed = parse_spec(spec)
    parsed.options.update({k: str(v) for k, v in options.items()})
    return str(parsed)


def _build(scheme: str, builder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards) -> tuple[Fixture, ImageSource]:
    if builder is None:
        pytest.fail(f"source scheme {scheme!r} is registered but has no fixture in CASES of {__name__}")
    fixture = builder(Ctx(tmp_path, monkeypatch, shards))
    assert parse_spec(fixture.spec).scheme == scheme
    return fixture, open_source(fixture.spec)


def _hwc(item: dict) -> np.ndarray:
    return item["image"].permute(1, 2, 0).numpy()


def test_every_registered_scheme_has_a_fixture() -> None:
    missing = [name for name in SOURCES.names() if not CASES.get(name)]
    assert not missing, f"registered source schemes without a fixture in CASES: {missing}"
    assert not set(CASES) - set(SOURCES.names()), "CASES names a scheme that is not registered"


@pytest.mark.parametrize(("scheme", "builder"), PARAMS)
def test_items_follow_the_sample_protocol(scheme, builder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards) -> None:
    fixture, source = _build(scheme, builder, tmp_path, monkeypatch, shards)
    n = len(source)
    assert isinstance(source, ImageSource) and n > 0 and source.spec == str(parse_spec(fixture.spec))
    assert all(isinstance(c, str) for c in source.classes) and len(set(source.classes)) == len(source.classes)
    assert all(isinstance(d, str) for d in source.domain_names) and len(source.domain_names) >= 1
    assert source.labels.dtype == source.domains.dtype == np.int64
    assert source.labels.shape == source.domains.shape == (n,)
    if fixture.classes is not None:
        assert source.classes == fixture.classes
    if fixture.labels is not None:
        assert source.labels.tolist() == fixture.labels
    if fixture.domain_names is not None:
        assert source.domain_names == fixture.domain_names
        assert source.domains.tolist() == (fixture.domains or [0] * n)
    names = []
    for i in range(n):
        item = source[i]
        assert set(item) == {"image", "label", "domain", "index", "name"}
        image = item["image"]
        assert isinstance(image, torch.Tensor) and image.dtype == torch.uint8
        assert image.ndim == 3 and image.shape[0] == 3 and min(image.shape[1:]) > 0
        assert type(item["label"]) is int and item["label"] in range(len(source.classes))
        assert type(item["domain"]) is int and item["domain"] in range(len(source.domain_names))
        assert (item["label"], item["domain"]) == (source.labels[i], source.domains[i])
        assert item["index"] == i and isinstance(item["name"], str) and item["name"] == source.name(i)
        if fixture.pixels is not None:
            np.testing.assert_array_equal(_hwc(item), fixture.pixels[i])
        names.append(item["name"])
    assert len(set(names)) == n, "sample names must be unique"


@pytest.mark.parametrize(("scheme", "builder"), PARAMS)
def test_order_is_deterministic_and_size_resizes(
    scheme, builder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards
) -> None:
    fixture, first = _build(scheme, builder, tmp_path, monkeypatch, shards)
    again = open_source(fixture.spec)
    assert [first.name(i) for i in range(len(first))] == [again.name(i) for i in range(len(again))]
    assert first.labels.tolist() == again.labels.tolist() and first.domains.tolist() == again.domains.tolist()
    assert first.classes == again.classes and first.domain_names == again.domain_names
    for i in range(len(first)):
        assert torch.equal(first[i]["image"], again[i]["image"]) and torch.equal(first[i]["image"], first[i]["image"])
    small = open_source(_with(fixture.spec, size=4))
    assert len(small) == len(first) and all(small[i]["image"].shape == (3, 4, 4) for i in range(len(small)))
    assert open_source(fixture.spec, image_size=3)[0]["image"].shape == (3, 3, 3)


@pytest.mark.parametrize(("scheme", "builder"), PARAMS)
def test_limit_and_seeded_subset(scheme, builder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards) -> None:
    fixture, whole = _build(scheme, builder, tmp_path, monkeypatch, shards)
    n, k = len(whole), min(3, len(whole) - 1)

    def same_sample(part, i: int, j: int) -> None:
        a, b = part[i], whole[j]
        assert (a["name"], a["label"], a["domain"], a["index"]) == (b["name"], b["label"], b["domain"], i)
        assert torch.equal(a["image"], b["image"])

    first = open_source(_with(fixture.spec, limit=k))
    assert len(first) == k and first.classes == whole.classes and first.domain_names == whole.domain_names
    for i in range(k):
        same_sample(first, i, i)
    subset = open_source(_with(fixture.spec, limit=k, subset_seed=1))
    assert isinstance(subset, SubsetSource) and len(subset) == k
    chosen = subset.indices.tolist()
    assert chosen == sorted(set(chosen)) and all(0 <= j < n for j in chosen)  # source order, no repeats
    assert open_source(_with(fixture.spec, limit=k, subset_seed=1)).indices.tolist() == chosen
    assert subset.labels.tolist() == whole.labels[chosen].tolist()
    for i, j in enumerate(chosen):
        same_sample(subset, i, j)
    assert len(open_source(_with(fixture.spec, limit=n + 5))) == n  # a limit past the end keeps everything


@pytest.mark.parametrize(("scheme", "builder"), PARAMS)
def test_index_past_the_end_is_an_index_error(
    scheme, builder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards
) -> None:
    fixture, source = _build(scheme, builder, tmp_path, monkeypatch, shards)
    n = len(source)
    for index in (n, n + 100, -n - 1):
        with pytest.raises(IndexError, match=rf"index {index} out of range for .*\({n} samples\)"):
            source[index]
    last = source[-1]  # negative indices count from the end, as for a list, and report the position
    assert last["index"] == n - 1 and last["name"] == source[n - 1]["name"]
    limited = open_source(_with(fixture.spec, limit=2))
    with pytest.raises(IndexError):
        limited[2]
