"""The ``hf:`` source on local datasets written with Hugging Face ``datasets`` (save_to_disk and parquet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from replens.data import open_source
from replens.data.base import DataError

datasets = pytest.importorskip("datasets")


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 12, 10, 3), dtype=np.uint8)


def _dataset(n: int, seed: int) -> tuple[object, np.ndarray, np.ndarray]:
    from PIL import Image

    pixels = _images(n, seed)
    labels = np.arange(n) % 3
    features = datasets.Features({"img": datasets.Image(), "fine": datasets.ClassLabel(names=["cat", "dog", "emu"]),
                                  "coarse": datasets.Value("int64")})
    data = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(p) for p in pixels], "fine": labels.tolist(), "coarse": (labels % 2).tolist()},
        features=features,
    )
    return data, pixels, labels


def test_saved_dataset_dict_opens_by_split_with_its_class_names(tmp_path: Path) -> None:
    train, train_pixels, train_labels = _dataset(7, 0)
    test, test_pixels, test_labels = _dataset(5, 1)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "saved"))
    source = open_source(f"hf:{tmp_path / 'saved'}?split=test")
    assert len(source) == 5 and source.classes == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(source.labels, test_labels)
    for i in range(5):
        np.testing.assert_array_equal(source.read(i), test_pixels[i])  # PNG round trip is lossless
    assert source.domain_names == ["saved"] and source[2]["name"] == "saved[2]"
    default = open_source(f"hf:{tmp_path / 'saved'}?size=8")  # train split by default, resized
    assert len(default) == 7 and default[0]["image"].shape == (3, 8, 8)
    np.testing.assert_array_equal(default.labels, train_labels)
    other = open_source(f"hf:{tmp_path / 'saved'}?split=train&label=coarse&domain=photo")
    np.testing.assert_array_equal(other.labels, train_labels % 2)
    assert other.classes == ["0", "1"] and other.domain_names == ["photo"]
    np.testing.assert_array_equal(other.read(3), train_pixels[3])
    with pytest.raises(DataError, match="has splits train, test, not 'val'"):
        open_source(f"hf:{tmp_path / 'saved'}?split=val")
    with pytest.raises(DataError, match=r"no label column 'nope'; columns: \['img', 'fine', 'coarse'\]"):
        open_source(f"hf:{tmp_path / 'saved'}?label=nope")


def test_parquet_files_and_unlabelled_data(tmp_path: Path) -> None:
    from replens.data.loader import make_loader

    data, pixels, labels = _dataset(9, 2)
    (tmp_path / "pq").mkdir()
    data.select(range(5)).to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    data.select(range(5, 9)).to_parquet(str(tmp_path / "pq" / "part-1.parquet"))
    source = open_source(f"hf:{tmp_path / 'pq'}?image=img&label=fine")
    assert len(source) == 9
    np.testing.assert_array_equal(source.labels, labels)
    np.testing.assert_array_equal(source.read(6), pixels[6])
    batches = list(make_loader(source, batch_size=4, shuffle=False))
    assert sum(b["image"].shape[0] for b in batches) == 9
    unlabelled = open_source(f"hf:{tmp_path / 'pq' / 'part-1.parquet'}?label=")
    assert (unlabelled.labels == -1).all() and len(unlabelled) == 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("no dataset here")
    with pytest.raises(DataError, match="not a saved dataset"):
        open_source(f"hf:{tmp_path / 'other'}")
