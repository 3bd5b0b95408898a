"""Few-shot / transfer linear evaluation (Table 5.2) and nearest-neighbour image retrieval (Figure 5.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replens.evaluate import few_shot_accuracy, fit_linear_probe, sample_k_shot, transfer_evaluation
from replens.evaluate.retrieval import nearest_neighbours, neighbour_precision, plot_retrieval_grid
from replens.models.backbone import Backbone


def _labels(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


def test_k_shot_picks_exactly_k_per_class_without_repeats() -> None:
    labels = _labels([7, 12, 30, 5])
    labels = np.concatenate([labels, [-1, -1, -1]])  # unlabelled rows are never drawn
    for k in (1, 3, 5):
        idx = sample_k_shot(labels, k, seed=3)
        assert len(np.unique(idx)) == len(idx) == 4 * k
        assert np.array_equal(np.bincount(labels[idx]), np.full(4, k))
        assert (labels[idx] >= 0).all()


def test_k_shot_is_deterministic_per_seed_and_episode() -> None:
    labels = _labels([50, 50, 50])
    a = sample_k_shot(labels, 5, seed=1, episode=0)
    assert np.array_equal(a, sample_k_shot(labels, 5, seed=1, episode=0))
    assert not np.array_equal(a, sample_k_shot(labels, 5, seed=2, episode=0))
    assert not np.array_equal(a, sample_k_shot(labels, 5, seed=1, episode=1))


def test_k_shot_rejects_small_classes_and_bad_k() -> None:
    with pytest.raises(ValueError, match="class 1 has 3 samples"):
        sample_k_shot(_labels([10, 3]), 5)
    with pytest.raises(ValueError, match="k must be"):
        sample_k_shot(_labels([10, 10]), 0)


def test_separable_features_give_100_percent_and_noise_gives_chance() -> None:
    rng = np.random.default_rng(0)
    n_cls, dim = 5, 16
    centres = rng.normal(size=(n_cls, dim)) * 10
    ytr, yte = _labels([40] * n_cls), _labels([30] * n_cls)
    xtr = centres[ytr] + rng.normal(size=(len(ytr), dim)) * 0.1
    xte = centres[yte] + rng.normal(size=(len(yte), dim)) * 0.1
    res = few_shot_accuracy(xtr, ytr, xte, yte, shots=(1, 5), episodes=3, seed=0)
    assert set(res) == {"1-shot", "5-shot"}
    for key, k in (("1-shot", 1), ("5-shot", 5)):
        assert res[key]["mean"] == 100.0 and res[key]["std"] == 0.0
        assert res[key]["train_count"] == n_cls * k and len(res[key]["episodes"]) == 3
    # features independent of the labels: near chance (20 %), far from perfect
    noise = few_shot_accuracy(rng.normal(size=xtr.shape), ytr, rng.normal(size=xte.shape), yte, shots=(5,),
                              episodes=4, seed=0)
    assert 5.0 < noise["5-shot"]["mean"] < 45.0


def test_few_shot_equals_the_fixed_probe_on_the_drawn_shots() -> None:
    rng = np.random.default_rng(1)
    ytr, yte = _labels([20, 20, 20]), _labels([10, 10, 10])
    xtr, xte = rng.normal(size=(60, 8)) + ytr[:, None], rng.normal(size=(30, 8)) + yte[:, None]
    res = few_shot_accuracy(xtr, ytr, xte, yte, shots=(4,), episodes=2, seed=7)
    for e in range(2):
        idx = sample_k_shot(ytr, 4, seed=7, episode=e)
        probe = fit_linear_probe(xtr[idx], ytr[idx])
        assert res["4-shot"]["episodes"][e] == pytest.approx(100.0 * (probe.predict(xte) == yte).mean())


class _MeanColour(Backbone):
    """A fixed 'encoder': the mean of each colour channel."""

    def __init__(self) -> None:
        super().__init__(feature_dim=3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def layer_names(self) -> list[str]:
        return []


def _colour_source(n_per_class: int, seed: int):
    from replens.data.arrays import ArraySource

    rng = np.random.default_rng(seed)
    colours = np.array([[220, 20, 20], [20, 220, 20], [20, 20, 220]], dtype=np.float64)
    labels = _labels([n_per_class] * 3)
    images = colours[labels][:, None, None, :] + rng.normal(0, 8, size=(len(labels), 8, 8, 3))
    return ArraySource(np.clip(images, 0, 255).astype(np.uint8), labels, classes=["r", "g", "b"])


def test_transfer_evaluation_on_a_colour_task(tmp_path) -> None:
    targets = {"colours": (_colour_source(12, 0), _colour_source(6, 1))}
    res = transfer_evaluation(_MeanColour(), targets, tmp_path, shots=(2,), episodes=2, progress=False)
    assert res["colours"]["linear"] == 100.0
    assert res["colours"]["classes"] == 3 and res["colours"]["train_count"] == 36 and res["colours"]["test_count"] == 18
    assert res["colours"]["few_shot"]["2-shot"]["mean"] == 100.0


def test_nearest_neighbours_match_brute_force_cosine() -> None:
    rng = np.random.default_rng(2)
    bank, queries = rng.normal(size=(50, 6)), rng.normal(size=(7, 6))
    idx, sims = nearest_neighbours(queries, bank, k=4)
    cos = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        bank / np.linalg.norm(bank, axis=1, keepdims=True)).T
    assert np.array_equal(idx, np.argsort(-cos, axis=1)[:, :4])
    np.testing.assert_allclose(sims, np.take_along_axis(cos, idx, 1), atol=1e-5)
    # a query that is a bank row retrieves itself first, unless excluded
    self_idx, _ = nearest_neighbours(bank[:3], bank, k=2)
    assert self_idx[:, 0].tolist() == [0, 1, 2]
    excl_idx, _ = nearest_neighbours(bank[:3], bank, k=2, exclude=[0, 1, 2])
    assert all(i not in row for i, row in zip(range(3), excl_idx, strict=True))
    with pytest.raises(ValueError, match="k=60"):
        nearest_neighbours(queries, bank, k=60)


def test_neighbour_precision_and_grid(tmp_path) -> None:
    assert neighbour_precision(np.array([[1, 1, 0, 1], [2, 2, 2, 2]]), np.array([1, 2])) == pytest.approx(87.5)
    q = np.random.default_rng(0).integers(0, 255, size=(3, 3, 8, 8), dtype=np.uint8)
    nb = np.repeat(q[:, None], 4, axis=1)
    out = plot_retrieval_grid(q, {"a": (nb, np.zeros((3, 4), int)), "b": (nb, None)}, tmp_path / "grid.png",
                              query_labels=np.zeros(3, int), title="t")
    assert (tmp_path / "grid.png").stat().st_size > 1000
    assert out["queries"] == 3 and out["k"] == 4 and out["models"] == ["a", "b"]
