"""Analyses of chapter 3 / appendix A (``replens.quality.analysis``) and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from replens.quality import band_features, qscore_array
from replens.quality.analysis import (
    ProjectedRepresentation,
    activation_bands,
    assess_quality,
    class_activation_share,
    class_feature_means,
    highly_activating_matrix,
    normalized,
    prediction_confidence,
    representation_sparsity,
)

from .conftest import TinySource, direct_qscore, sparse_representations


@pytest.fixture(scope="module")
def reps() -> tuple[np.ndarray, np.ndarray]:
    return sparse_representations(300, 64, seed=4, classes=5)


def test_activation_bands_partition_and_band_is_the_discriminative_selection(reps):
    x, _ = reps
    result = qscore_array(x, eps=2.0)
    bands = activation_bands(result.percentages, (50.0, 95.0))
    np.testing.assert_array_equal(bands["discriminative"], band_features(result.percentages, 50.0, 95.0))
    np.testing.assert_array_equal(bands["discriminative"], result.discriminative)
    together = np.concatenate(list(bands.values()))
    np.testing.assert_array_equal(np.sort(together), np.arange(x.shape[1]))  # a partition of the features
    a = result.percentages
    assert a[bands["lower"]].max() <= a[bands["discriminative"]].min()
    assert a[bands["discriminative"]].max() <= a[bands["upper"]].min()
    sets = result.feature_sets()  # the same tails as QScoreResult.feature_sets
    assert sets["lower_tail"] == bands["lower"].tolist() and sets["upper_tail"] == bands["upper"].tolist()


def test_highly_activating_matrix_matches_the_definition_and_the_stream(reps):
    x, _ = reps
    ref = direct_qscore(x, 2.0, 50.0, 95.0)
    active = highly_activating_matrix(x, 2.0)
    assert [set(np.flatnonzero(row)) for row in active] == ref["L"]
    np.testing.assert_array_equal(active.sum(axis=1), qscore_array(x, eps=2.0).n_highly)


def test_class_activation_share_against_a_loop(reps):
    x, y = reps
    share = class_activation_share(x, y, 2.0, num_classes=6)  # class 5 is empty
    ref = direct_qscore(x, 2.0, 50.0, 95.0)["L"]
    for j in (0, 7, 31):
        for c in range(5):
            members = np.flatnonzero(y == c)
            assert share[j, c] == pytest.approx(100 * np.mean([j in ref[i] for i in members]))
    assert (share[:, 5] == 0).all() and share.shape == (64, 6)


def test_class_feature_means_against_direct_means(reps):
    x, y = reps
    correct = np.random.default_rng(0).random(len(y)) < 0.6
    feats = [3, 10, 40]
    out = class_feature_means(x, y, correct, feats, [0, 2])
    h = normalized(x)
    for row, c in enumerate((0, 2)):
        np.testing.assert_allclose(out["correct"][row], h[(y == c) & correct][:, feats].mean(0), rtol=1e-6)
        np.testing.assert_allclose(out["misclassified"][row], h[(y == c) & ~correct][:, feats].mean(0), rtol=1e-6)
        assert out["n_correct"][row] == ((y == c) & correct).sum()


def test_prediction_confidence_is_the_largest_softmax_probability(reps):
    from replens.evaluate import fit_linear_probe

    x, y = reps
    probe = fit_linear_probe(x[:200], y[:200])
    preds, conf = prediction_confidence(probe, x[200:], batch=37)
    np.testing.assert_array_equal(preds, probe.predict(x[200:]))
    np.testing.assert_allclose(conf, torch.softmax(probe.logits(x[200:]), 1).max(1).values.numpy(), rtol=1e-9)
    assert ((conf >= 1 / 5) & (conf <= 1)).all()


def test_representation_sparsity_of_one_hot_rows():
    x = np.zeros((10, 20))
    x[np.arange(10), np.arange(10)] = 3.0
    s = representation_sparsity(x, eps=2.0)
    assert s["near_zero_pct"] == pytest.approx(95.0) and s["exact_zero_pct"] == pytest.approx(95.0)
    assert s["mean_highly"] == 1.0 and s["highly_pct"] == pytest.approx(5.0)
    dense = representation_sparsity(np.ones((5, 20)) + np.arange(20) * 1e-3, eps=2.0)
    assert dense["near_zero_pct"] == 0.0 and dense["kurtosis"] < s["kurtosis"]


def test_assess_quality_matches_its_pieces(tmp_path: Path):
    from replens.evaluate import fit_linear_probe
    from replens.models import create_backbone, extract_features, load_embeddings
    from replens.quality import failure_prediction

    backbone = create_backbone("small_cnn", widths=(8, 8, 16, 32)).eval()
    dirs = [extract_features(backbone, TinySource(48, seed=s), tmp_path / f"e{s}", progress=False) for s in (0, 1)]
    qa = assess_quality(*dirs, eps=1.5, probe_samples=40, seed=3)
    train, test = load_embeddings(dirs[0]), load_embeddings(dirs[1])
    ref_train = qscore_array(np.asarray(train.features), eps=1.5)
    np.testing.assert_array_equal(qa.discriminative, ref_train.discriminative)
    ref_test = qscore_array(np.asarray(test.features), eps=1.5, discriminative=ref_train.discriminative)
    np.testing.assert_allclose(qa.test.scores, ref_test.scores, rtol=1e-6)
    assert len(qa.fit_rows) == 40 and len(np.unique(qa.fit_rows)) == 40
    probe = fit_linear_probe(np.asarray(train.features)[qa.fit_rows], np.asarray(train.labels)[qa.fit_rows])
    np.testing.assert_array_equal(qa.predictions, probe.predict(np.asarray(test.features)))
    np.testing.assert_array_equal(qa.correct, qa.predictions == np.asarray(test.labels))
    assert qa.report.auroc == failure_prediction(qa.test.scores, qa.correct).auroc or qa.correct.all()
    s = qa.summary()
    assert s["top1"] == pytest.approx(100 * qa.correct.mean()) and s["dim"] == 32 and s["test_samples"] == 48


def test_projected_representation_is_the_pca_projection():
    from replens.models import create_backbone

    torch.manual_seed(0)
    backbone = create_backbone("small_cnn", widths=(8, 8, 16, 32)).eval()
    mean, comps = np.random.default_rng(0).random(32), np.random.default_rng(1).standard_normal((5, 32))
    proj = ProjectedRepresentation(backbone, mean, comps).eval()
    x = backbone.preprocess(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8))
    with torch.no_grad():
        h = torch.nn.functional.normalize(backbone(x), dim=1).numpy()
        np.testing.assert_allclose(proj(x).numpy(), (h - mean) @ comps.T, rtol=1e-5, atol=1e-6)
    assert proj.layer_names() == backbone.layer_names() and proj.feature_dim == 5


def test_plots_write_png_files(tmp_path: Path, reps):
    from replens.quality.plots import (
        cam_overlay,
        plot_activation_bands,
        plot_cam_grid,
        plot_class_heatmaps,
        plot_grouped_bars,
        plot_representation_overview,
    )

    x, y = reps
    result = qscore_array(x, eps=2.0)
    bands = activation_bands(result.percentages)
    share = class_activation_share(x, y, 2.0)
    paths = [
        plot_activation_bands(result.percentages, bands, tmp_path / "a.png", class_share={3: share[3]}),
        plot_class_heatmaps({"base": class_feature_means(x, y, y % 2 == 0, [1, 2], [0, 1])}, tmp_path / "h.png"),
        plot_cam_grid([{"label": "r", "panels": [("t", cam_overlay(np.zeros((3, 8, 8), np.uint8),
                                                                   np.eye(8)))]}], tmp_path / "g.png"),
        plot_grouped_bars(["a", "b"], {"s": [1.0, float("nan")]}, tmp_path / "b.png", panels={"p": {"s": [2, 3]}}),
        plot_representation_overview({"m": x, "n": x[::-1]}, tmp_path / "o.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    overlay = cam_overlay(np.full((8, 8, 3), 255, np.uint8), np.zeros((8, 8)))
    assert overlay.shape == (8, 8, 3) and overlay.dtype == np.uint8
