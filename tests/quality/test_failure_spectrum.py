"""Failure prediction (AUROC/AUPRC), RankMe and alpha-ReQ against their definitions written out."""

from __future__ import annotations

import numpy as np
import pytest

from replens.quality import (
    alpha_req,
    compression_curve,
    failure_prediction,
    probe_correctness,
    rank_failures,
    rankme,
    spectrum_metrics,
)
from replens.quality.compression import band_for_fraction

from .conftest import sparse_representations


def _auroc(scores, positive):
    """Probability that a random positive outranks a random negative (ties count one half)."""
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def _average_precision(scores, positive):
    """sum_k (R_k - R_{k-1}) P_k over the distinct thresholds, highest score first."""
    ap, prev_recall = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        sel = scores >= t
        tp = (positive & sel).sum()
        recall = tp / positive.sum()
        ap += (recall - prev_recall) * tp / sel.sum()
        prev_recall = recall
    return ap


def test_failure_prediction_matches_the_definitions():
    rng = np.random.default_rng(0)
    correct = rng.random(300) < 0.7
    scores = np.round(rng.normal(correct * 0.8, 1.0), 1)  # rounded: ties exercised
    report = failure_prediction(scores, correct)
    assert report.auroc == pytest.approx(_auroc(scores, correct), abs=1e-12)
    assert report.auprc == pytest.approx(_average_precision(scores, correct), abs=1e-12)
    assert report.auprc_failure == pytest.approx(_average_precision(-scores, ~correct), abs=1e-12)
    assert report.correct_rate == pytest.approx(correct.mean())
    assert report.auroc > 0.6  # the scores do separate the outcomes


def test_failure_prediction_edge_cases():
    one_outcome = failure_prediction(np.arange(5.0), np.ones(5, bool))
    assert np.isnan(one_outcome.auroc) and one_outcome.correct_rate == 1.0
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        failure_prediction(np.array([1.0, 2.0, np.nan]), np.array([True, False, True]))
    with pytest.raises(ValueError, match="equal-length"):
        failure_prediction(np.zeros(3), np.zeros(4, bool))


def test_probe_correctness_and_ranking():
    x, y = sparse_representations(200, 20, seed=2)
    correct, pred = probe_correctness(x[:150], y[:150], x[150:], y[150:])
    assert correct.dtype == bool and (pred[correct] == y[150:][correct]).all() and correct.mean() > 0.5
    ranked = rank_failures(np.array([0.3, 0.1, 0.1, 0.9]), ["a", "b", "c", "d"], top=3)
    assert [r["name"] for r in ranked] == ["b", "c", "a"] and ranked[0]["rank"] == 1


def test_rankme_definition():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((200, 12)) @ np.diag(np.linspace(3, 0.1, 12))
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert rankme(z) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    # k equal singular values and the rest zero: RankMe ~ k (the epsilon adds a hair)
    q, _ = np.linalg.qr(rng.standard_normal((100, 100)))
    low = q[:, :5] @ np.eye(5, 16) * 2.0
    assert rankme(low) == pytest.approx(5.0, abs=1e-3)
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        rankme(np.array([[1.0, 2.0], [np.nan, 0.0]]))


def test_alpha_req_recovers_a_power_law():
    rng = np.random.default_rng(2)
    dim, alpha = 40, 1.3
    scales = np.arange(1, dim + 1) ** (-alpha / 2)  # covariance eigenvalues ~ k^-alpha
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    z = (rng.standard_normal((20000, dim)) * scales) @ q.T
    est, r2 = alpha_req(z)
    assert est == pytest.approx(alpha, abs=0.05) and r2 > 0.99
    # the fit itself: OLS slope of log eigenvalue on log index over the given range
    c = np.cov(z, rowvar=False)
    eig = np.sort(np.linalg.eigvalsh(c))[::-1]
    k = np.arange(3, 21)
    slope = np.polyfit(np.log(k), np.log(eig[2:20]), 1)[0]
    assert alpha_req(z, fit_range=(3, 20))[0] == pytest.approx(-slope, rel=1e-6)
    out = spectrum_metrics(z, max_samples=500)
    assert out["samples"] == 500 and "definitions" in out


def test_compression_bands_and_matched_sizes():
    assert band_for_fraction(0.45) == pytest.approx((50.0, 95.0))
    assert band_for_fraction(1.0) == pytest.approx((0.0, 100.0))
    assert band_for_fraction(0.5, (10, 90)) == pytest.approx((25.0, 75.0))
    x, y = sparse_representations(160, 24, seed=4)
    from replens.quality import qscore_array

    res = qscore_array(x[:100])
    curve = compression_curve(x[:100], y[:100], x[100:], y[100:], res.percentages, fractions=(0.25, 0.5), seeds=2)
    assert [p["size"] for p in curve["points"]] == [6, 12]
    for point in curve["points"]:
        assert len(point["random"]) == 2 and point["random_mean"] == pytest.approx(np.mean(point["random"]))
        for key in ("discriminative", "pca", "lower_tail", "upper_tail"):
            assert 0.0 <= point[key] <= 100.0
    assert curve["full"] > 50.0
    again = compression_curve(x[:100], y[:100], x[100:], y[100:], res.percentages, fractions=(0.25, 0.5), seeds=2,
                              per_sample=True)  # the accuracies are the per-sample correctness averaged
    for point, same in zip(curve["points"], again["points"], strict=True):
        assert same["discriminative_correct"].shape == (60,) and same["random_correct"].shape == (60, 2)
        assert 100 * same["discriminative_correct"].mean() == pytest.approx(point["discriminative"])
        assert 100 * same["random_correct"].mean(axis=0) == pytest.approx(point["random"])
