import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from replens.evaluate import accuracy_report, evaluate_representations, fit_linear_probe, knn_predict


def _blobs(n=300, d=8, c=3, seed=0, spread=1.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (c, d))
    y = rng.integers(0, c, n)
    x = centres[y] + rng.normal(0, spread, (n, d))
    return x.astype(np.float32), y


def test_linear_probe_matches_sklearn_objective():
    x, y = _blobs()
    wd = 1e-2
    probe = fit_linear_probe(x, y, weight_decay=wd)
    xs = (x - x.mean(0)) / x.std(0, ddof=1)
    ref = LogisticRegression(C=1.0 / (wd * len(x)), max_iter=5000, tol=1e-10).fit(xs, y)
    # same convex objective -> same minimiser
    np.testing.assert_allclose(
        probe.weight.numpy() - probe.weight.numpy().mean(0), ref.coef_ - ref.coef_.mean(0), atol=2e-3
    )
    assert (probe.predict(x) == ref.predict(xs)).mean() == 1.0


def test_linear_probe_ignores_unknown_labels_and_keeps_class_ids():
    x, y = _blobs()
    y = y * 10 + 5  # non-contiguous ids
    y[:7] = -1
    probe = fit_linear_probe(x, y)
    assert set(np.unique(probe.predict(x))) <= {5, 15, 25}
    assert (probe.predict(x[7:]) == y[7:]).mean() > 0.9


def test_probe_rejects_nan_rows_by_index():
    x, y = _blobs()
    x[[3, 11]] = np.nan
    with pytest.raises(ValueError, match=r"\[3, 11\]"):
        fit_linear_probe(x, y)


def test_knn_uniform_matches_sklearn_cosine():
    x, y = _blobs(spread=3.0)
    q, _ = _blobs(n=100, seed=1, spread=3.0)
    ours = knn_predict(x, y, q, k=5, temperature=0)
    ref = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute").fit(x, y).predict(q)
    assert (ours == ref).mean() >= 0.97  # ties may break differently


def test_knn_weighted_vote_follows_closest_neighbour_at_low_temperature():
    bank = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 1.0], [-0.2, 1]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    # majority of 5 neighbours is class 1, but the weighted vote at tiny temperature picks the nearest
    assert knn_predict(bank, labels, np.array([[1.0, 0.05]]), k=5, temperature=0)[0] == 1
    assert knn_predict(bank, labels, np.array([[1.0, 0.05]]), k=5, temperature=0.01)[0] == 0


def test_accuracy_report_per_domain_and_class():
    pred = np.array([0, 1, 1, 0, 2, 2])
    true = np.array([0, 1, 0, 0, 2, 1])
    dom = np.array([0, 0, 0, 1, 1, 1])
    rep = accuracy_report(pred, true, dom, ["photo", "sketch"], ["a", "b", "c"])
    assert rep.overall == pytest.approx(100 * 4 / 6)
    assert rep.per_domain == pytest.approx({"photo": 100 * 2 / 3, "sketch": 100 * 2 / 3})
    assert rep.per_class == pytest.approx({"a": 100 * 2 / 3, "b": 50.0, "c": 100.0})


def test_evaluate_representations_reports_both_probes():
    x, y = _blobs(n=400)
    out = evaluate_representations(
        x[:300], y[:300], x[300:], y[300:], test_domains=np.zeros(100, int), domain_names=["d0"]
    )
    assert out["linear"]["top1"] > 90 and out["knn"]["top1"] > 90
    assert out["linear"]["per_domain"]["d0"] == out["linear"]["top1"]
