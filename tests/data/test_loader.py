"""make_loader: seeded shuffling, workers, batches, bad-image accounting."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from replens.data import (
    ArraySource,
    BadImageGuard,
    BadImageWarning,
    DataError,
    iterate_batches,
    make_loader,
    materialize,
)


def numbered(n: int) -> ArraySource:
    """Images whose pixels equal their index; float images > 1 are unreadable."""
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 3, 3, 3), np.uint8)
    return ArraySource(images, np.arange(n) % 3, classes=["a", "b", "c"])


def order(loader: torch.utils.data.DataLoader) -> list[int]:
    return [int(i) for batch in loader for i in batch["index"]]


def test_shuffle_is_a_function_of_the_seed() -> None:
    source = numbered(30)
    a = make_loader(source, batch_size=4, shuffle=True, seed=7)
    b = make_loader(source, batch_size=4, shuffle=True, seed=7)
    c = make_loader(source, batch_size=4, shuffle=True, seed=8)
    first_a, first_b, first_c = order(a), order(b), order(c)
    assert first_a == first_b != first_c
    assert sorted(first_a) == list(range(30)) and first_a != list(range(30))
    assert order(a) == order(b) != first_a  # the next epoch is a new, equally seeded permutation
    assert order(make_loader(source, batch_size=4)) == list(range(30))


def test_batches_carry_pixels_labels_and_names() -> None:
    loader = make_loader(numbered(10), batch_size=4, drop_last=True)
    batches = list(loader)
    assert len(batches) == 2
    batch = batches[1]
    assert batch["image"].shape == (4, 3, 3, 3) and batch["image"].dtype == torch.uint8
    assert batch["index"].tolist() == [4, 5, 6, 7] and batch["label"].tolist() == [1, 2, 0, 1]
    assert batch["image"][:, 0, 0, 0].tolist() == [4, 5, 6, 7]
    assert batch["name"][0] == "array[4]" and batch["bad"] == [] and batch["seen"] == 4


def test_workers_are_persistent_and_seeded_like_the_main_process() -> None:
    source = numbered(24)
    loader = make_loader(source, batch_size=5, shuffle=True, num_workers=2, seed=3)
    assert loader.persistent_workers and loader.num_workers == 2
    single = make_loader(source, batch_size=5, shuffle=True, num_workers=0, seed=3)
    assert order(loader) == order(single)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(source, batch_size=0)


def test_iterate_batches_uses_the_source_limit() -> None:
    images = np.zeros((10, 2, 2, 3), np.float32)
    images[3] = 2.0  # out of [0, 1]: unreadable
    source = ArraySource(images, np.zeros(10, np.int64))
    loader = make_loader(source, batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        with pytest.raises(DataError, match=r"1 of 10 images were unreadable .*array\[3\]"):
            list(iterate_batches(loader))
    source.max_bad_fraction = 0.2
    with pytest.warns(BadImageWarning, match=r"array\[3\]"):
        batches = list(iterate_batches(loader))
    assert sum(b["image"].shape[0] for b in batches) == 9
    guard = BadImageGuard(max_bad_fraction=0.0)
    with pytest.warns(BadImageWarning), pytest.raises(DataError):
        list(iterate_batches(loader, guard))


def test_materialize_decodes_once_and_drops_bad_images() -> None:
    images = np.random.default_rng(0).random((6, 3, 3, 3)).astype(np.float32)
    images[2] = -1.0  # unreadable
    source = ArraySource(images, [0, 1, 2, 0, 1, 2], classes=["a", "b", "c"], name_prefix="f")
    source.max_bad_fraction = 0.5
    with pytest.warns(BadImageWarning, match=r"f\[2\]"):
        decoded = materialize(source, batch_size=4)
    assert len(decoded) == 5 and decoded.labels.tolist() == [0, 1, 0, 1, 2]
    assert decoded.classes == ["a", "b", "c"] and decoded.name(2) == "f[3]"
    np.testing.assert_array_equal(decoded.read(2), np.rint(images[3] * 255).astype(np.uint8))
    assert decoded._images.dtype == np.uint8 and decoded.max_bad_fraction == 0.5
