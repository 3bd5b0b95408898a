"""Token caches on disk (shards, resume, errors) and padded batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from replens.tokens import (
    TokenCacheError,
    TokenCacheWriter,
    TokenDataset,
    VisualTokens,
    collate_tokens,
    nearest_neighbours,
)


def _sample(rng: np.random.Generator, n: int, m: int) -> VisualTokens:
    xy = rng.uniform(0, 0.7, size=(n, 2))
    boxes = np.concatenate([xy, xy + 0.2], axis=1)
    return VisualTokens(
        image_features=rng.normal(size=3),
        tangible=rng.normal(size=(n, 2)),
        intangible=rng.normal(size=(m, 4)),
        triplets=[(int(rng.integers(n)), int(rng.integers(n)), c) for c in range(m)] if n else [],
        neighbours=nearest_neighbours(boxes),
        boxes=boxes,
        object_names=[f"obj{a}" for a in range(n)],
        relation_names=[f"rel{c}" for c in range(m)],
    )


def _samples(k: int, seed: int = 0) -> list[VisualTokens]:
    rng = np.random.default_rng(seed)
    return [_sample(rng, int(rng.integers(1, 5)), int(rng.integers(0, 6))) for _ in range(k)]


def test_roundtrip_through_shards(tmp_path: Path) -> None:
    samples = _samples(11)
    writer = TokenCacheWriter(tmp_path / "c", {"extractor": "test"}, shard_size=4)
    for i, s in enumerate(samples):
        writer.add(s, f"img{i}", 100 + i, [f"caption {i}", "shared"])
    writer.close()
    assert sorted(p.name for p in (tmp_path / "c").glob("shard-*")) == [f"shard-0000{k}.safetensors" for k in range(3)]
    data = TokenDataset(tmp_path / "c")
    assert len(data) == 11 and data.names[3] == "img3" and data.indices[3] == 103
    assert data.captions[5] == ["caption 5", "shared"]
    for a, b in zip(samples, data.samples, strict=True):
        for field in ("image_features", "tangible", "intangible", "triplets", "neighbours", "boxes"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert a.object_names == b.object_names and a.relation_names == b.relation_names


def test_interrupted_extraction_resumes_and_incomplete_caches_are_refused(tmp_path: Path) -> None:
    samples = _samples(10, seed=1)
    writer = TokenCacheWriter(tmp_path, {"extractor": "test"}, shard_size=3)
    for i, s in enumerate(samples[:7]):
        writer.add(s, f"img{i}", i)
    # killed here: two shards (6 images) are on disk, one image was pending
    with pytest.raises(TokenCacheError, match="did not finish"):
        TokenDataset(tmp_path)
    again = TokenCacheWriter(tmp_path, {"extractor": "test"}, shard_size=3)
    assert again.done == 6
    for i, s in enumerate(samples[6:], start=6):
        again.add(s, f"img{i}", i)
    again.close()
    data = TokenDataset(tmp_path)
    assert data.names == [f"img{i}" for i in range(10)]
    np.testing.assert_array_equal(data[9].tangible, samples[9].tangible)
    with pytest.raises(TokenCacheError, match="other settings"):
        TokenCacheWriter(tmp_path, {"extractor": "other"}, shard_size=3)


def test_corrupt_manifest_is_named(tmp_path: Path) -> None:
    writer = TokenCacheWriter(tmp_path, {"extractor": "test"}, shard_size=2)
    for i, s in enumerate(_samples(3)):
        writer.add(s, f"img{i}", i)
    writer.close()
    manifest = json.loads((tmp_path / "tokens.json").read_text())
    manifest["shards"][0]["count"] = 5
    (tmp_path / "tokens.json").write_text(json.dumps(manifest))
    with pytest.raises(TokenCacheError, match="shard-00000"):
        TokenDataset(tmp_path)
    with pytest.raises(TokenCacheError, match="no token cache"):
        TokenDataset(tmp_path / "missing")


def test_collate_packs_each_sample_contiguously() -> None:
    samples = _samples(4, seed=2)
    batch = collate_tokens(samples)
    assert batch.length == max(s.length for s in samples)
    for i, s in enumerate(samples):
        n, m = s.n_objects, s.n_relations
        assert batch.token_type[i].tolist() == [0] + [1] * n + [2] * m + [-1] * (batch.length - s.length)
        np.testing.assert_array_equal(batch.ranks[i, : s.length, : s.length].numpy(), s.rank_matrix())
        assert batch.ranks[i, s.length :].sum() == 0 and batch.ranks[i, :, s.length :].sum() == 0
        # the gather index picks I, then this sample's objects, then its relations
        idx = batch.gather_index[i, : s.length].tolist()
        assert idx == [0] + list(range(1, 1 + n)) + list(range(1 + batch.tangible.shape[1],
                                                               1 + batch.tangible.shape[1] + m))
        np.testing.assert_array_equal(batch.tangible[i, :n].numpy(), s.tangible)
        np.testing.assert_array_equal(batch.intangible[i, :m].numpy(), s.intangible)
    with pytest.raises(ValueError, match="different feature sizes"):
        odd = _sample(np.random.default_rng(9), 2, 1)
        odd.image_features = np.zeros(7, dtype=np.float32)
        collate_tokens([samples[0], odd])
