"""WebDataset shards (``wds:``) and PACS (``pacs:``): labels, pixels, errors, bad images."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from replens.data import (
    BadImageWarning,
    DataError,
    WebDatasetSource,
    iterate_batches,
    make_loader,
    open_source,
)


def pixels(item: dict) -> np.ndarray:
    return item["image"].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_shard_labels_pixels_and_names(shards, suffix: str) -> None:
    labels = [3, 0, 2, 1, 2]
    path, images = shards.shard(f"train-0{suffix}", labels)
    source = open_source(f"wds:{path}")
    assert len(source) == 5
    np.testing.assert_array_equal(source.labels, labels)
    assert source.classes == ["0", "1", "2", "3"]  # no classes.txt: from the max label
    assert source.domain_names == [path.parent.name]
    np.testing.assert_array_equal(source.domains, 0)
    for i in range(5):
        item = source[i]
        assert item["label"] == labels[i] and item["index"] == i
        assert item["name"] == f"train-0{suffix}/{i:06d}"
        np.testing.assert_array_equal(pixels(item), images[i])  # PNG is lossless


def test_brace_expansion_over_mixed_shards_and_classes_txt(shards) -> None:
    _, first = shards.shard("train-0.tar", [0, 1, 2])
    _, second = shards.shard("train-1.tar.gz", [2, 1], start=3)
    (shards.root / "classes.txt").write_text("cat\ndog\nfox\nowl\n")
    source = open_source(f"wds:{shards.root}/{{train-0.tar,train-1.tar.gz}}")
    assert source.classes == ["cat", "dog", "fox", "owl"]
    np.testing.assert_array_equal(source.labels, [0, 1, 2, 2, 1])
    assert [source.name(i) for i in (0, 3)] == ["train-0.tar/000000", "train-1.tar.gz/000003"]
    for i, image in enumerate(first + second):
        np.testing.assert_array_equal(pixels(source[i]), image)
    # comma list and glob give the same samples
    listed = open_source(f"wds:{shards.root}/train-0.tar,{shards.root}/train-1.tar.gz")
    globbed = open_source(f"wds:{shards.root}/train-*")
    assert [listed.name(i) for i in range(5)] == [globbed.name(i) for i in range(5)]


def test_json_class_names_domains_and_domain_filter(shards) -> None:
    meta = [
        {"class": "dog", "domain": "sketch"},
        {"class": "cat", "domain": "photo"},
        {"class": "dog", "domain": "photo"},
        {"class": "cat", "domain": "cartoon"},
    ]
    path, images = shards.shard("mixed.tar", [1, 0, 1, 0], meta=meta)
    source = open_source(f"wds:{path}")
    assert source.classes == ["cat", "dog"]  # named from the .json classes
    assert source.domain_names == ["cartoon", "photo", "sketch"]  # sorted
    np.testing.assert_array_equal(source.domains, [2, 1, 1, 0])
    only = open_source(f"wds:{path}?domains=sketch,photo")
    assert only.domain_names == ["sketch", "photo"]
    np.testing.assert_array_equal(only.domains, [0, 1, 1])
    np.testing.assert_array_equal(pixels(only[2]), images[2])
    single = open_source(f"wds:{path}?domain=all")
    assert single.domain_names == ["all"] and len(single) == 4
    # labels may come from the .json alone
    json_only, _ = shards.shard("json-only.tar", [None, None], meta=meta[:2])
    assert open_source(f"wds:{json_only}").labels.tolist() == [1, 0]


def test_image_size_option_resizes(shards) -> None:
    path, _ = shards.shard("big.tar", [0, 1], size=12)
    source = open_source(f"wds:{path}?size=6")
    assert source[0]["image"].shape == (3, 6, 6)
    assert open_source(f"wds:{path}", image_size=4)[1]["image"].shape == (3, 4, 4)


def test_missing_shard_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="shard not found: .*nope-0.tar"):
        open_source(f"wds:{tmp_path}/nope-{{0..0}}.tar")


def test_empty_tar_is_an_error(tmp_path: Path, tar_writer) -> None:
    path = tar_writer(tmp_path / "empty.tar", [])
    with pytest.raises(DataError, match="empty.tar"):
        open_source(f"wds:{path}")
    (tmp_path / "zero.tar").write_bytes(b"")
    with pytest.raises(DataError, match="zero.tar"):
        open_source(f"wds:{tmp_path / 'zero.tar'}")
    notes = tar_writer(tmp_path / "notes.tar.gz", [("README.txt", b"hello")])
    with pytest.raises(DataError, match="notes.tar.gz' holds no samples"):
        open_source(f"wds:{notes}")


def test_images_without_labels(shards) -> None:
    path, _ = shards.shard("nolabels.tar", [None, None, None])
    with pytest.raises(DataError, match="nolabels.tar' has images but no labels .*000000.png"):
        open_source(f"wds:{path}")
    source = open_source(f"wds:{path}?unlabeled=1")
    assert source.labels.tolist() == [-1, -1, -1] and source.classes == []
    partial, _ = shards.shard("partial.tar.gz", [0, None, 1])
    with pytest.raises(DataError, match="image '000001.png' has no label"):
        open_source(f"wds:{partial}")


def test_malformed_cls_names_the_member(tmp_path: Path, tar_writer, png) -> None:
    image = png(np.zeros((4, 4, 3), np.uint8))
    members = [("a.png", image), ("a.cls", b"1"), ("b.png", image), ("b.cls", b"cat\n")]
    path = tar_writer(tmp_path / "bad-cls.tar.gz", members)
    with pytest.raises(DataError, match="member 'b.cls' is not an integer class label"):
        open_source(f"wds:{path}")


def test_label_outside_classes_txt_and_contradicting_json(shards) -> None:
    path, _ = shards.shard("s.tar", [0, 5])
    (shards.root / "classes.txt").write_text("a\nb\nc\n")
    with pytest.raises(DataError, match="sample '000001' has label 5, outside 0..2"):
        open_source(f"wds:{path}")
    meta = [{"class": "b"}, {"class": "b"}]
    path, _ = shards.shard("t.tar", [1, 2], meta=meta)
    with pytest.raises(DataError, match="'000001.cls' says class 2 but '000001.json' says 'b'"):
        open_source(f"wds:{path}")


def test_sample_without_image_and_bad_json(tmp_path: Path, tar_writer, png) -> None:
    image = png(np.zeros((4, 4, 3), np.uint8))
    path = tar_writer(tmp_path / "orphan.tar", [("a.png", image), ("a.cls", b"0"), ("b.cls", b"1")])
    with pytest.raises(DataError, match="sample 'b' has no image member"):
        open_source(f"wds:{path}")
    path = tar_writer(tmp_path / "json.tar", [("a.png", image), ("a.cls", b"0"), ("a.json", b"{")])
    with pytest.raises(DataError, match="member 'a.json' is not valid JSON"):
        open_source(f"wds:{path}")


def test_corrupt_and_truncated_archives(shards, tmp_path: Path) -> None:
    path, _ = shards.shard("whole.tar.gz", [0, 1, 2, 3])
    data = path.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.tar.gz' is a corrupt or truncated compressed file"):
        open_source(f"wds:{cut}")
    plain = tmp_path / "plain.tar"
    plain.write_bytes(gzip.decompress(data))
    short = tmp_path / "short.tar"
    short.write_bytes(plain.read_bytes()[:600])  # ends inside the first image
    with pytest.raises(DataError, match="short.tar' is truncated: member '000000.png'"):
        open_source(f"wds:{short}")
    short.write_bytes(plain.read_bytes()[:1300])  # ends inside the header of 000000.cls
    with pytest.raises(DataError, match="short.tar' is corrupt or truncated at byte 1024"):
        open_source(f"wds:{short}")
    damaged = bytearray(plain.read_bytes())
    damaged[1024:1100] = b"x" * 76  # garbage in place of the second header
    short.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match="after member '000000.png'"):
        open_source(f"wds:{short}")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 40)
    with pytest.raises(DataError, match="garbage.tar' is not a readable tar file"):
        open_source(f"wds:{garbage}")


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_member_names_in_every_tar_format(tmp_path: Path, png, fmt: int) -> None:
    folder = "d" * 60 + "/" + "e" * 60  # > 100 characters: prefix field, GNU or pax header
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    members = [
        (f"{folder}/k{i}.{ext}", data)
        for i in range(2)
        for ext, data in (("png", png(image + i)), ("cls", str(i).encode()))
    ]
    path = tmp_path / "long.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    source = open_source(f"wds:{path}")
    assert source.labels.tolist() == [0, 1]
    assert source.name(1) == f"long.tar/{folder}/k1"
    np.testing.assert_array_equal(source.read(1), image + 1)


def corrupt_shard(root: Path, name: str, n: int, bad: int) -> Path:
    """n JPEG samples, sample ``bad`` truncated to a few bytes."""
    members = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(buffer, format="JPEG")
        data = buffer.getvalue()
        members += [(f"{i:04d}.jpg", data[:20] if i == bad else data), (f"{i:04d}.cls", b"0")]
    path = root / name
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_corrupt_jpeg_with_two_workers_warns_and_respects_the_limit(tmp_path: Path) -> None:
    path = corrupt_shard(tmp_path, "corrupt.tar", n=24, bad=5)
    source = open_source(f"wds:{path}")
    assert source[5]["image"] is None and source[5]["name"] == "corrupt.tar/0005"
    with pytest.raises(DataError, match=r"cannot decode image '.*corrupt.tar/0005.jpg'"):
        source.read(5)
    tolerant = open_source(f"wds:{path}?max_bad=0.1")
    tolerant[0]  # opens a descriptor in the parent: the forked workers must open their own
    loader = make_loader(tolerant, batch_size=5, shuffle=True, num_workers=2, seed=1)
    with pytest.warns(BadImageWarning, match="corrupt.tar/0005"):
        batches = list(iterate_batches(loader))
    seen = sorted(int(i) for b in batches for i in b["index"])
    assert seen == [i for i in range(24) if i != 5]
    for batch in batches:
        for image, index in zip(batch["image"], batch["index"], strict=True):
            assert abs(int(image.float().mean()) - int(index) * 10) <= 2

    strict = make_loader(source, batch_size=5, num_workers=2)  # default limit 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        with pytest.raises(DataError, match=r"1 of 24 images were unreadable .*corrupt.tar/0005"):
            list(iterate_batches(strict))


def test_pickled_source_reopens_its_files(shards) -> None:
    path, images = shards.shard("p.tar", [0, 1])
    source = WebDatasetSource(str(path))
    source.read(0)
    clone = pickle.loads(pickle.dumps(source))
    assert clone._fds == {}
    np.testing.assert_array_equal(clone.read(1), images[1])
    source.close()
    np.testing.assert_array_equal(source.read(0), images[0])  # reopens after close


def make_pacs(root: Path, shards, counts: dict[str, int]) -> None:
    classes = ["dog", "elephant", "giraffe"]
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for domain, n in counts.items():
        labels = [i % 3 for i in range(n)]
        meta = [{"class": classes[c], "domain": domain} for c in labels]
        shards.shard(f"{domain}.tar", labels, meta=meta)


def test_pacs_domains_follow_the_given_order(shards) -> None:
    make_pacs(shards.root, shards, {"photo": 4, "sketch": 3, "cartoon": 2})
    source = open_source(f"pacs:{shards.root}?domains=sketch,photo")
    assert source.domain_names == ["sketch", "photo"]
    assert source.classes == ["dog", "elephant", "giraffe"]
    np.testing.assert_array_equal(source.domains, [0, 0, 0, 1, 1, 1, 1])
    assert source.name(3) == "photo.tar/000000"
    assert [source[i]["domain"] for i in (2, 3)] == [0, 1]
    everything = open_source(f"pacs:{shards.root}")
    assert everything.domain_names == ["photo", "cartoon", "sketch"]  # PACS order
    with pytest.raises(DataError, match=r"domain\(s\) \['art'\] not found .*present: "):
        open_source(f"pacs:{shards.root}?domains=photo,art")


def test_pacs_domain_contradicting_json_is_an_error(shards) -> None:
    shards.shard("photo.tar", [0], meta=[{"class": "0", "domain": "sketch"}])
    (shards.root / "classes.txt").write_text("0\n")
    with pytest.raises(DataError, match="says domain 'sketch', but the shard was given as"):
        open_source(f"pacs:{shards.root}")


def test_json_members_are_parsed_once(shards) -> None:
    meta = [{"class": "x", "domain": "d", "extra": [1, 2]}]
    path, _ = shards.shard("one.tar", [0], meta=meta)
    with tarfile.open(path) as tar:
        assert json.loads(tar.extractfile("000000.json").read())["extra"] == [1, 2]
    assert open_source(f"wds:{path}").classes == ["x"]
