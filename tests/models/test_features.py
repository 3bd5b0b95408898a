"""Feature extraction streams exact representations to chunked files and resumes after a crash."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from replens.data.base import BadImageWarning
from replens.models import (
    EmbeddingsError,
    create_backbone,
    extract_features,
    load_embeddings,
    pool_features,
)


def direct_features(model: torch.nn.Module, images: torch.Tensor, layer: str | None = None) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        x = model.preprocess(images)
        out = model(x) if layer is None else model.forward_layers(x, [layer])[layer]
    return pool_features(out, num_prefix_tokens=model.num_prefix_tokens).numpy()


def test_features_equal_a_direct_forward(random_source: Callable, tmp_path: Path) -> None:
    source = random_source(n=40, size=16)
    model = create_backbone("small_cnn")
    model.train()
    out = extract_features(model, source, tmp_path / "emb", batch_size=8, chunk_size=16, progress=True)
    assert model.training  # mode restored
    emb = load_embeddings(out)
    assert sorted(p.name for p in out.glob("chunk-*.npy") if p.name.count(".") == 1) == [
        "chunk-00000.npy",
        "chunk-00001.npy",
        "chunk-00002.npy",
    ]
    assert emb.features.shape == (40, 256) and emb.features.dtype == np.float32 and emb.dim == 256
    np.testing.assert_allclose(emb.features, direct_features(model, source.batch()), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(emb.labels, source.labels)
    np.testing.assert_array_equal(emb.domains, source.domains)
    np.testing.assert_array_equal(emb.index, np.arange(40))
    assert emb.names == [f"img-{i:04d}.png" for i in range(40)]
    assert emb.classes == ["a", "b", "c"] and emb.domain_names == ["even", "odd"]
    meta = emb.meta
    assert meta["complete"] and meta["count"] == 40 and meta["dim"] == 256
    assert meta["model"] == "small_cnn" and meta["layer"] is None and meta["normalize"] is False
    assert [c["count"] for c in meta["chunks"]] == [16, 16, 8]


def test_normalize_gives_unit_rows(random_source: Callable, tmp_path: Path) -> None:
    source = random_source(n=12)
    model = create_backbone("resnet_tiny")
    emb = load_embeddings(extract_features(model, source, tmp_path, normalize=True, progress=False))
    np.testing.assert_allclose(np.linalg.norm(emb.features, axis=1), 1.0, rtol=1e-5)
    direct = direct_features(model, source.batch())
    np.testing.assert_allclose(
        emb.features, direct / np.linalg.norm(direct, axis=1, keepdims=True), rtol=1e-5, atol=1e-6
    )


def test_layer_maps_are_average_pooled(random_source: Callable, tmp_path: Path) -> None:
    source = random_source(n=10)
    model = create_backbone("cifar_resnet20")
    emb = load_embeddings(extract_features(model, source, tmp_path, layer="layer2", dtype="float16", progress=False))
    assert emb.features.dtype == np.float16 and emb.features.shape == (10, 32)
    assert emb.meta["layer"] == "layer2" and emb.meta["dim"] == 32
    np.testing.assert_allclose(
        emb.features.astype(np.float32), direct_features(model, source.batch(), "layer2"), rtol=2e-3, atol=2e-3
    )


def test_transformer_tokens_mean_or_cls(random_source: Callable, tmp_path: Path) -> None:
    source = random_source(n=6, size=32)
    model = create_backbone("timm:test_vit", img_size=32).eval()
    with torch.no_grad():
        tokens = model.forward_layers(model.preprocess(source.batch()), ["blocks.1"])["blocks.1"]
    assert tokens.shape[1] == 5  # one class token + 4 patches
    for pool, expected in (("mean", tokens[:, 1:].mean(1)), ("cls", tokens[:, 0])):
        emb = load_embeddings(
            extract_features(model, source, tmp_path / pool, layer="blocks.1", token_pool=pool, progress=False)
        )
        np.testing.assert_allclose(emb.features, expected.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="class token"):
        pool_features(torch.zeros(2, 4, 8), token_pool="cls", num_prefix_tokens=0)
    with pytest.raises(ValueError, match="cannot pool"):
        pool_features(torch.zeros(2, 3, 4, 5, 6))


def test_resume_after_interruption_matches_an_uninterrupted_run(random_source: Callable, tmp_path: Path) -> None:
    model = create_backbone("small_cnn")
    kwargs = {"batch_size": 8, "chunk_size": 16, "progress": False}
    with pytest.warns(BadImageWarning, match="img-0021"):
        reference = extract_features(model, random_source(n=40, bad=(21,)), tmp_path / "ref", **kwargs)
    reference = load_embeddings(reference)

    source = random_source(n=40, bad=(21,), crash_at=16)  # dies in the first batch of chunk 1
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated interruption"):
        extract_features(model, source, out, **kwargs)
    meta = json.loads((out / "meta.json").read_text())
    assert not meta["complete"] and [c["file"] for c in meta["chunks"]] == ["chunk-00000"]
    with pytest.raises(EmbeddingsError, match="incomplete: 1 of 3 chunks"):
        load_embeddings(out)
    finished = (out / "chunk-00000.npy").stat().st_mtime_ns

    source.crash_at = None
    source.reads.clear()
    with pytest.warns(BadImageWarning, match="img-0021"):
        extract_features(model, source, out, **kwargs)
    assert min(source.reads) == 16 and len(source.reads) == 24  # chunk 0 was not recomputed
    assert (out / "chunk-00000.npy").stat().st_mtime_ns == finished
    resumed = load_embeddings(out)
    np.testing.assert_array_equal(resumed.features, reference.features)
    np.testing.assert_array_equal(resumed.labels, reference.labels)
    np.testing.assert_array_equal(resumed.index, reference.index)
    assert resumed.names == reference.names
    assert resumed.meta == reference.meta
    assert resumed.meta["bad"] == ["img-0021.png"] and len(resumed) == 39
    assert 21 not in resumed.index

    source.reads.clear()
    extract_features(model, source, out, **kwargs)  # complete: nothing to do
    assert source.reads == []


def test_different_arguments_do_not_mix(random_source: Callable, tmp_path: Path) -> None:
    model = create_backbone("small_cnn")
    source = random_source(n=8)
    extract_features(model, source, tmp_path, progress=False)
    with pytest.raises(EmbeddingsError, match="normalize"):
        extract_features(model, source, tmp_path, normalize=True, progress=False)
    extract_features(model, source, tmp_path, normalize=True, overwrite=True, progress=False)
    assert load_embeddings(tmp_path).meta["normalize"] is True


def test_reader_rejects_corrupt_or_missing_files(random_source: Callable, tmp_path: Path) -> None:
    model = create_backbone("small_cnn")
    source = random_source(n=20)
    out = extract_features(model, source, tmp_path / "emb", chunk_size=8, progress=False)
    expected = load_embeddings(out, mmap=False).features.copy()
    with pytest.raises(EmbeddingsError, match="no meta.json"):
        load_embeddings(tmp_path)

    chunk = out / "chunk-00001.npy"
    chunk.write_bytes(chunk.read_bytes()[:100])  # truncated
    with pytest.raises(EmbeddingsError, match="chunk-00001"):
        load_embeddings(out)
    # a rerun repairs the damaged chunk (and recomputes the ones after it) only
    source.reads.clear()
    extract_features(model, source, out, chunk_size=8, progress=False)
    assert min(source.reads) == 8
    np.testing.assert_array_equal(load_embeddings(out).features, expected)

    (out / "chunk-00002.names.json").unlink()
    with pytest.raises(EmbeddingsError, match="chunk-00002"):
        load_embeddings(out)
    (out / "meta.json").write_text("{not json")
    with pytest.raises(EmbeddingsError, match="unreadable"):
        load_embeddings(out)


def test_single_chunk_is_memory_mapped(random_source: Callable, tmp_path: Path) -> None:
    out = extract_features(create_backbone("small_cnn"), random_source(n=5), tmp_path, progress=False)
    assert isinstance(load_embeddings(out).features, np.memmap)
    assert not isinstance(load_embeddings(out, mmap=False).features, np.memmap)
