"""Folder, array, torchvision and world sources; multi-domain composition; subsets."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from replens.data import (
    ArraySource,
    DataError,
    FolderSource,
    ImageSource,
    MultiDomainSource,
    SubsetSource,
    limit_source,
    make_loader,
    open_source,
)


def pixels(item: dict) -> np.ndarray:
    return item["image"].permute(1, 2, 0).numpy()


def make_folder(root: Path, classes: list[str], per_class: int, seed: int = 0) -> dict[str, np.ndarray]:
    """ROOT/CLASS/i.png with random pixels; returns relative path -> image."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / name / f"{i}.png")
            written[f"{root.name}/{name}/{i}.png"] = image
    return written


# -- folder ----------------------------------------------------------------------


def test_folder_labels_pixels_names_and_domain(tmp_path: Path) -> None:
    written = make_folder(tmp_path / "photo", ["cat", "dog"], per_class=3)
    source = open_source(f"folder:{tmp_path / 'photo'}")
    assert source.classes == ["cat", "dog"] and source.domain_names == ["photo"]
    assert source.labels.tolist() == [0, 0, 0, 1, 1, 1]
    for i in range(len(source)):
        item = source[i]
        assert item["name"] == source.name(i)
        np.testing.assert_array_equal(pixels(item), written[item["name"]])
    assert open_source(f"folder:{tmp_path / 'photo'}?domain=real").domain_names == ["real"]


def test_folder_domains_option_makes_one_domain_per_subfolder(tmp_path: Path) -> None:
    make_folder(tmp_path / "pacs" / "photo", ["a", "b"], per_class=2)
    make_folder(tmp_path / "pacs" / "sketch", ["a", "b"], per_class=1, seed=1)
    source = open_source(f"folder:{tmp_path / 'pacs'}?domains=sketch,photo")
    assert source.domain_names == ["sketch", "photo"]
    assert source.domains.tolist() == [0, 0, 1, 1, 1, 1]
    assert [source[i]["domain"] for i in range(6)] == source.domains.tolist()
    assert source.name(0) == "sketch/a/0.png"


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image folder not found: .*missing"):
        open_source(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match="has no class sub-folders"):
        FolderSource(str(tmp_path / "flat"))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("no images")
    with pytest.raises(DataError, match="holds no images"):
        FolderSource(str(tmp_path / "empty"))


def test_folder_corrupt_file_reads_as_none(tmp_path: Path) -> None:
    make_folder(tmp_path / "d", ["a"], per_class=2)
    (tmp_path / "d" / "a" / "1.png").write_bytes(b"\x89PNG broken")
    source = FolderSource(str(tmp_path / "d"))
    assert source[0]["image"] is not None and source[1]["image"] is None
    with pytest.raises(DataError, match=r"cannot decode image '.*d/a/1.png'"):
        source.read(1)


# -- arrays ----------------------------------------------------------------------


def test_npz_layouts_and_dtypes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    labels = np.array([0, 2, 1, 2, 0])
    np.savez(tmp_path / "nhwc.npz", images=nhwc, labels=labels)
    np.savez(
        tmp_path / "nchw.npz",
        images=nhwc.transpose(0, 3, 1, 2).astype(np.float32) / 255.0,
        labels=labels,
        classes=np.array(["a", "b", "c"]),
    )
    np.savez(tmp_path / "grey.npz", images=nhwc[..., 0], labels=labels)
    a = open_source(f"npz:{tmp_path / 'nhwc.npz'}")
    b = open_source(f"npz:{tmp_path / 'nchw.npz'}")
    g = open_source(f"npz:{tmp_path / 'grey.npz'}")
    assert a.classes == ["0", "1", "2"] and b.classes == ["a", "b", "c"]
    assert a.domain_names == ["nhwc"] and a.name(3) == "nhwc.npz[3]"
    for i in range(5):
        np.testing.assert_array_equal(pixels(a[i]), nhwc[i])
        np.testing.assert_array_equal(pixels(b[i]), nhwc[i])  # float -> uint8 is exact here
        np.testing.assert_array_equal(pixels(g[i]), np.repeat(nhwc[i, ..., :1], 3, axis=2))
        assert a[i]["label"] == b[i]["label"] == labels[i]


def test_npz_domains_and_errors(tmp_path: Path) -> None:
    images = np.zeros((4, 2, 2, 3), np.uint8)
    np.savez(
        tmp_path / "dom.npz",
        images=images,
        labels=np.array([0, 1, 0, 1]),
        domains=np.array([0, 1, 1, 0]),
        domain_names=np.array(["day", "night"]),
    )
    source = open_source(f"npz:{tmp_path / 'dom.npz'}")
    assert source.domain_names == ["day", "night"] and source[2]["domain"] == 1
    np.savez(tmp_path / "nolabels.npz", images=images)
    with pytest.raises(DataError, match="has no 'labels' array .*unlabeled=1"):
        open_source(f"npz:{tmp_path / 'nolabels.npz'}")
    assert open_source(f"npz:{tmp_path / 'nolabels.npz'}?unlabeled=1").labels.tolist() == [-1] * 4
    np.savez(tmp_path / "shape.npz", images=np.zeros((4, 5, 5, 5), np.uint8), labels=np.zeros(4))
    with pytest.raises(DataError, match=r"has shape \(4, 5, 5, 5\)"):
        open_source(f"npz:{tmp_path / 'shape.npz'}")
    np.savez(tmp_path / "count.npz", images=images, labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match=r"labels have shape \(3,\), expected \(4,\)"):
        open_source(f"npz:{tmp_path / 'count.npz'}")
    with pytest.raises(DataError, match="not found"):
        open_source(f"npz:{tmp_path / 'nope.npz'}")
    hot = ArraySource(np.full((2, 2, 2, 3), 1.5, np.float32), [0, 1])
    assert hot[0]["image"] is None
    with pytest.raises(DataError, match=r"values span \[1.5, 1.5\]"):
        hot.read(0)


def test_npy_directory_is_memory_mapped(tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
    (tmp_path / "arr").mkdir()
    np.save(tmp_path / "arr" / "images.npy", images)
    np.save(tmp_path / "arr" / "labels.npy", np.array([1, 0, 1]))
    (tmp_path / "arr" / "classes.txt").write_text("no\nyes\n")
    source = open_source(f"npy:{tmp_path / 'arr'}")
    assert isinstance(source._images, np.memmap)
    assert source.classes == ["no", "yes"] and source.labels.tolist() == [1, 0, 1]
    np.testing.assert_array_equal(pixels(source[2]), images[2])


# -- torchvision -----------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's idx format: magic (0, 0, 0x08 ubyte, ndim), big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_from_local_files_becomes_rgb(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(2).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    write_idx(raw / "t10k-images-idx3-ubyte", images)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array([7, 1, 0, 7]))
    write_idx(raw / "train-images-idx3-ubyte", images[:1])
    write_idx(raw / "train-labels-idx1-ubyte", np.array([3]))
    source = open_source(f"tv:mnist:{tmp_path}?train=0")
    assert len(source) == 4 and source.labels.tolist() == [7, 1, 0, 7]
    assert len(source.classes) == 10 and source.classes[7].startswith("7")
    np.testing.assert_array_equal(pixels(source[1]), np.repeat(images[1][..., None], 3, axis=2))
    assert source.name(1) == "MNIST[1]"
    assert open_source(f"tv:MNIST:{tmp_path}", split="train").labels.tolist() == [3]


def test_torchvision_missing_root_says_where_files_were_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"expects the files under '.*cifar-10-batches-py'"):
        open_source(f"tv:CIFAR10:{tmp_path}")
    with pytest.raises(DataError, match="does not exist; .*MNIST/raw"):
        open_source(f"tv:MNIST:{tmp_path / 'nowhere'}")
    with pytest.raises(DataError, match="torchvision has no dataset class 'Nope'"):
        open_source(f"tv:Nope:{tmp_path}")
    with pytest.raises(DataError, match="write tv:NAME:ROOT"):
        open_source("tv:CIFAR10:")


# -- composition -----------------------------------------------------------------


def arrays(n: int, value: int, classes: list[str] | None = None, **kwargs) -> ArraySource:
    images = np.full((n, 4, 4, 3), value, np.uint8)
    return ArraySource(images, np.arange(n) % 2, classes=classes or ["a", "b"], **kwargs)


def test_multi_domain_source_ids_names_and_items() -> None:
    photo, sketch = arrays(3, 10, domain="photo"), arrays(2, 20, domain="sketch")
    multi = MultiDomainSource([photo, sketch])
    assert multi.domain_names == ["photo", "sketch"] and multi.classes == ["a", "b"]
    assert multi.domains.tolist() == [0, 0, 0, 1, 1]
    assert multi.labels.tolist() == [0, 1, 0, 0, 1]
    item = multi[4]
    assert (item["domain"], item["label"], item["index"]) == (1, 1, 4)
    assert int(item["image"][0, 0, 0]) == 20 and item["name"] == "array[1]"
    renamed = MultiDomainSource([photo, sketch], domain_names=["P", "S"])
    assert renamed.domain_names == ["P", "S"]
    twice = MultiDomainSource([photo, photo])
    assert twice.domain_names == ["photo", "photo#2"]
    with pytest.raises(DataError, match="1 domain names given for 2 domains"):
        MultiDomainSource([photo, sketch], domain_names=["x"])


def test_multi_keeps_the_domains_of_a_multi_domain_part() -> None:
    two = ArraySource(
        np.zeros((4, 2, 2, 3), np.uint8),
        [0, 1, 0, 1],
        domains=[0, 1, 1, 0],
        classes=["a", "b"],
        domain_names=["day", "night"],
    )
    multi = MultiDomainSource([arrays(2, 5, domain="fog"), two])
    assert multi.domain_names == ["fog", "day", "night"]
    assert multi.domains.tolist() == [0, 0, 1, 2, 2, 1]
    assert [multi[i]["domain"] for i in range(6)] == multi.domains.tolist()


def test_multi_class_mismatch_names_the_source(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 2, 2, 3), np.uint8), labels=[0, 1])
    np.savez(tmp_path / "b.npz", images=np.zeros((2, 2, 2, 3), np.uint8), labels=[0, 2])
    with pytest.raises(DataError, match=r"class lists disagree: npz:.*b.npz has 3 classes"):
        open_source(f"multi:npz:{tmp_path / 'a.npz'}|npz:{tmp_path / 'b.npz'}")
    unlabeled = ArraySource(np.zeros((1, 2, 2, 3), np.uint8))  # no labels: fits any class list
    assert MultiDomainSource([arrays(2, 1), unlabeled]).classes == ["a", "b"]


def test_multi_spec_with_part_options_and_its_own(tmp_path: Path) -> None:
    make_folder(tmp_path / "photo", ["a", "b"], per_class=2)
    np.savez(
        tmp_path / "s.npz",
        images=np.zeros((5, 6, 6, 3), np.uint8),
        labels=[0, 1, 0, 1, 0],
        classes=["a", "b"],
    )
    spec = f"multi:folder:{tmp_path / 'photo'}|npz:{tmp_path / 's.npz'}?limit=2|?domain_names=p,s"
    source = open_source(spec, image_size=3)
    assert len(source) == 6 and source.domain_names == ["p", "s"]
    assert source.domains.tolist() == [0, 0, 0, 0, 1, 1]
    assert source[5]["image"].shape == (3, 3, 3)
    assert source.spec == spec


# -- subsets ---------------------------------------------------------------------


def test_limit_first_n_and_seeded_subset(tmp_path: Path) -> None:
    images = np.arange(20, dtype=np.uint8)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3)
    np.savez(tmp_path / "n.npz", images=images, labels=np.arange(20) % 4)
    first = open_source(f"npz:{tmp_path / 'n.npz'}?limit=5")
    assert isinstance(first, SubsetSource) and len(first) == 5
    assert [first[i]["name"] for i in range(5)] == [f"n.npz[{i}]" for i in range(5)]
    a = open_source(f"npz:{tmp_path / 'n.npz'}?limit=6&subset_seed=1")
    b = open_source(f"npz:{tmp_path / 'n.npz'}?limit=6&subset_seed=1")
    c = open_source(f"npz:{tmp_path / 'n.npz'}?limit=6&subset_seed=2")
    assert a.indices.tolist() == b.indices.tolist() != c.indices.tolist()
    assert a.indices.tolist() == sorted(set(a.indices.tolist()))
    for i in range(6):
        item = a[i]
        assert item["index"] == i and item["label"] == a.labels[i] == a.indices[i] % 4
        assert int(item["image"][0, 0, 0]) == a.indices[i]
    whole = open_source(f"npz:{tmp_path / 'n.npz'}?limit=100&max_bad=0.5")
    assert len(whole) == 20 and whole.max_bad_fraction == 0.5
    sub = limit_source(whole, 3)
    assert sub.max_bad_fraction == 0.5 and sub.classes == whole.classes


# -- world -----------------------------------------------------------------------


def test_world_source_through_the_registry(tmp_path: Path) -> None:
    world = pytest.importorskip("replens.world")
    if not hasattr(world, "generate_world"):
        pytest.skip("replens.world.generate_world is not written yet")
    path = world.generate_world(world.WorldConfig(n=32, size=32), tmp_path / "world", progress=False, workers=1)
    train = open_source(f"world:{path}?split=train")
    test = open_source(f"world:{path}", split="test")
    assert isinstance(train, ImageSource) and len(train) + len(test) == 32
    item = train[0]
    assert item["image"].shape == (3, 32, 32) and 0 <= item["label"] < len(train.classes)
    assert train.domains.max() < len(train.domain_names)
    assert open_source(f"world:{path}?size=16&limit=4")[3]["image"].shape == (3, 16, 16)
    batch = next(iter(make_loader(train, batch_size=8)))
    assert batch["label"].tolist() == train.labels[:8].tolist()
    with pytest.raises(DataError, match="cannot open the world in .*nowhere"):
        open_source(f"world:{tmp_path / 'nowhere'}")
