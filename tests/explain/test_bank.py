"""Caption banks: building, importing LAION-style shards, exact streamed search, faiss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from replens.explain.bank import (
    BankError,
    build_bank,
    import_embedding_shards,
    open_bank,
    world_caption_texts,
)


def random_shards(tmp: Path, counts: list[int], dim: int = 24, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(seed)
    files, parts = [], []
    for k, n in enumerate(counts):
        emb = rng.standard_normal((n, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb.astype(np.float16)
        path = tmp / f"text_emb_{k}.npy"
        np.save(path, emb)
        files.append(path)
        parts.append(emb)
    return files, np.concatenate(parts)


def brute_force(queries: torch.Tensor, emb: np.ndarray, k: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Global softmax over every caption, then top-k."""
    q = torch.nn.functional.normalize(queries.double(), dim=1)
    probs = (scale * q @ torch.from_numpy(emb.astype(np.float64)).T).softmax(dim=1)
    return probs.topk(k, dim=1)


@pytest.fixture
def laion_bank(tmp_path: Path):
    files, emb = random_shards(tmp_path, [37, 50, 13])
    captions = [f"caption number {i}" for i in range(len(emb))]
    (tmp_path / "captions.txt").write_text("\n".join(captions) + "\n")
    bank = import_embedding_shards([str(f) for f in reversed(files)], tmp_path / "captions.txt", tmp_path / "bank")
    return bank, emb, captions


@pytest.mark.parametrize("chunk_rows,query_block", [(65536, 1024), (16, 3), (7, 64)])
def test_search_equals_brute_force(laion_bank, chunk_rows, query_block):
    bank, emb, captions = laion_bank
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(11, emb.shape[1], generator=g)
    queries[3] = torch.from_numpy(emb[77].astype(np.float32)) * 2  # a query on a caption (logit 100: reshift path)
    for scale in (100.0, 7.0):
        result = bank.search(queries, 5, logit_scale=scale, chunk_rows=chunk_rows, query_block=query_block)
        probs, idx = brute_force(queries, emb, 5, scale)
        np.testing.assert_array_equal(result.indices.numpy(), idx.numpy())
        np.testing.assert_allclose(result.probs.numpy(), probs.numpy(), rtol=2e-4, atol=1e-7)
        lse = torch.logsumexp(
            scale * torch.nn.functional.normalize(queries.double(), dim=1) @ torch.from_numpy(emb.astype(np.float64)).T,
            dim=1,
        )
        np.testing.assert_allclose(result.log_normalizer.numpy(), lse.numpy(), rtol=1e-5, atol=1e-3)
    caps, confs = bank.caption_images(queries[3:4], 5)
    assert caps[0][0] == captions[77] == "caption number 77"
    assert confs[0][0] == pytest.approx(float(result.probs[3, 0]) if scale == 100.0 else confs[0][0])


def test_import_checks_shards_and_captions(tmp_path: Path):
    files, emb = random_shards(tmp_path, [10, 6])
    parquet = []
    for k, n in enumerate([10, 6]):
        path = tmp_path / f"metadata_{k}.parquet"
        pq.write_table(pa.table({"caption": [f"s{k} c{i}" for i in range(n)]}), path)
        parquet.append(path)
    bank = import_embedding_shards(files, parquet, tmp_path / "b1")
    assert len(bank) == 16 and bank.captions([0, 10, 15]) == ["s0 c0", "s1 c0", "s1 c5"]
    with pytest.raises(BankError, match="text_emb_1.npy: 6 embedding rows but 3 captions"):
        pq.write_table(pa.table({"caption": ["a", "b", "c"]}), parquet[1])
        import_embedding_shards(files, parquet, tmp_path / "b2")
    np.save(tmp_path / "bad.npy", np.ones((4, 24), dtype=np.float16))
    with pytest.raises(BankError, match="bad.npy: rows are not L2-normalised"):
        import_embedding_shards([tmp_path / "bad.npy"], ["a", "b", "c", "d"], tmp_path / "b3")
    with pytest.raises(BankError, match="missing bank.json"):
        open_bank(tmp_path / "nowhere")


def test_build_bank_encodes_with_the_vl_text_encoder(tiny_clip_path: Path, tmp_path: Path):
    from replens.vl import load_vl_model

    vl = load_vl_model(tiny_clip_path)
    texts = ["a red circle", "  a  blue square ", "", "a sketch of a star", "a crimson patch"]
    bank = build_bank(texts, vl, tmp_path / "bank", shard_size=2)
    assert len(bank.manifest["shards"]) == 2 and len(bank) == 4 and bank.model == vl.fingerprint
    assert bank.captions(range(4)) == ["a red circle", "a blue square", "a sketch of a star", "a crimson patch"]
    expected = vl.embed_texts(bank.captions(range(4))).numpy()
    np.testing.assert_allclose(bank.embeddings().astype(np.float32), expected, atol=2e-3)
    with pytest.raises(BankError, match="queries must be"):
        bank.search(torch.zeros(2, vl.embed_dim + 1))


def test_faiss_flat_index_has_full_recall(laion_bank):
    bank, emb, _ = laion_bank
    entry = bank.build_faiss_index("flat", candidates=100)
    assert entry["recall_at_5"] == pytest.approx(1.0)
    queries = torch.randn(6, emb.shape[1], generator=torch.Generator().manual_seed(3))
    exact = bank.search(queries, 5)
    approx = open_bank(bank.root).approximate_search(queries, 5)
    np.testing.assert_array_equal(approx.indices.numpy(), exact.indices.numpy())
    # 100 candidates = the whole bank: the truncated softmax is the exact one
    np.testing.assert_allclose(approx.probs.numpy(), exact.probs.numpy(), rtol=1e-3, atol=1e-6)
    ivf = bank.build_faiss_index("ivf", nprobe=1)
    assert 0.0 <= ivf["recall_at_5"] <= 1.0 and ivf["recall_queries"] == 100


def test_world_caption_grammar_covers_the_vocabulary():
    from replens.world.vocab import COLOURS, MARKERS, SHAPES, TEXTURES

    texts = world_caption_texts()
    assert len(texts) == len(set(texts)) > 10_000
    words = {w for t in texts for w in t.split()}
    assert set(SHAPES) | set(COLOURS) | set(MARKERS) | (set(TEXTURES) - {"solid"}) <= words
    assert any("dog" in t for t in texts) and any("pentagon" in t for t in texts)  # distractors
    assert world_caption_texts() == texts  # deterministic
