"""Retrieval recall@K and diagonal/off-diagonal similarity (paper section 6.5.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replens.evaluate.retrieval import caption_positives, retrieval_recall, similarity_contrast


def _reference_recall(sim: np.ndarray, positives: np.ndarray, k: int) -> tuple[float, float]:
    """Sort-based recall@K: a query is a hit when a correct item is among its K best (no ties here)."""
    t2i = np.mean([positives[t, np.argsort(-sim[t])[:k]].any() for t in range(sim.shape[0])]) * 100
    has = positives.any(axis=0)
    i2t = np.mean([positives[np.argsort(-sim[:, i])[:k], i].any() for i in np.nonzero(has)[0]]) * 100
    return float(t2i), float(i2t)


def test_recall_matches_a_sort_based_reference() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(30, 8))
    # 45 captions: 30 near their image, 15 extra captions of the first 15 images
    owner = np.concatenate([np.arange(30), np.arange(15)])
    txt = img[owner] + rng.normal(scale=1.5, size=(45, 8))
    pos = np.zeros((45, 30), dtype=bool)
    pos[np.arange(45), owner] = True
    got = retrieval_recall(img, txt, owner, ks=(1, 5, 10))
    sim = (txt / np.linalg.norm(txt, axis=1, keepdims=True)) @ (img / np.linalg.norm(img, axis=1, keepdims=True)).T
    for k in (1, 5, 10):
        t2i, i2t = _reference_recall(sim, pos, k)
        assert got[f"t2i_r{k}"] == pytest.approx(t2i) and got[f"i2t_r{k}"] == pytest.approx(i2t)
    assert got["n_images"] == 30 and got["n_texts"] == 45


def test_perfect_and_collapsed_embeddings() -> None:
    eye = torch.eye(6)
    perfect = retrieval_recall(eye, eye, list(range(6)), ks=(1,))
    assert perfect["t2i_r1"] == 100 and perfect["i2t_r1"] == 100
    same = torch.ones(6, 4)  # every image identical: ties count against the model
    texts = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    collapsed = retrieval_recall(same, texts, list(range(6)), ks=(1, 5))
    assert collapsed["t2i_r1"] == 0 and collapsed["t2i_r5"] == 0
    # the same with every text draw of 200 seeds: last-bit differences of equal dot products are still ties
    for seed in range(200):
        texts = torch.randn(6, 4, generator=torch.Generator().manual_seed(seed))
        assert retrieval_recall(same, texts, list(range(6)), ks=(5,))["t2i_r5"] == 0, seed


def test_duplicate_captions_count_every_carrier_as_correct() -> None:
    texts = ["a red circle", "a blue square"]
    captions = [["a red circle", "x"], ["a red circle"], ["a blue square"]]
    pos = caption_positives(texts, captions)
    assert pos.tolist() == [[True, True, False], [False, False, True]]
    img = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    txt = torch.tensor([[0.95, 0.05], [0.0, 1.0]])
    # the first caption's nearest image is image 1 (it also carries the caption): a hit
    assert retrieval_recall(img, txt, pos, ks=(1,))["t2i_r1"] == 100
    with pytest.raises(ValueError, match="no correct image"):
        retrieval_recall(img, txt, caption_positives(["unknown", "a blue square"], captions))


def test_similarity_contrast_is_the_mean_diagonal_and_off_diagonal() -> None:
    rng = np.random.default_rng(1)
    img, txt = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    a = img / np.linalg.norm(img, axis=1, keepdims=True)
    b = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sim = a @ b.T
    got = similarity_contrast(img, txt)
    assert got["diag_sim"] == pytest.approx(np.trace(sim) / 5, rel=1e-5)
    assert got["off_diag_sim"] == pytest.approx((sim.sum() - np.trace(sim)) / 20, rel=1e-5)
    assert got["contrast"] == pytest.approx(got["diag_sim"] - got["off_diag_sim"])
