"""The correlation ratio against the R^2 of a one-hot regression and scipy's one-way ANOVA."""

import numpy as np
import pytest
from scipy.stats import f_oneway
from sklearn.linear_model import LinearRegression

from replens.evaluate.factors import correlation_ratio, factor_encoding


def test_eta_squared_is_the_r2_of_a_one_hot_regression_and_matches_anova():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    x = rng.normal(size=(300, 6)) + np.array([0.0, 0.3, 1.0, 3.0, 0.0, 0.0])[None] * labels[:, None]
    eta = correlation_ratio(x, labels)
    onehot = np.eye(4)[labels]
    for j in range(6):
        r2 = LinearRegression().fit(onehot, x[:, j]).score(onehot, x[:, j])
        assert eta[j] == pytest.approx(r2, abs=1e-9)
        f = f_oneway(*[x[labels == k, j] for k in range(4)]).statistic
        assert eta[j] == pytest.approx(f * 3 / (f * 3 + 300 - 4), rel=1e-9)
    assert eta[3] > 0.8 and eta[0] < 0.05


def test_a_function_of_the_factor_scores_one_and_unknown_levels_are_left_out():
    labels = np.array([0, 0, 1, 1, 2, 2, -1])
    x = np.array([[5.0, 1.0], [5.0, 2.0], [1.0, 1.0], [1.0, 2.0], [3.0, 1.0], [3.0, 2.0], [100.0, 7.0]])
    eta = correlation_ratio(x, labels)
    assert eta[0] == pytest.approx(1.0) and eta[1] == pytest.approx(0.0)
    assert correlation_ratio(np.ones((4, 1)), [0, 1, 0, 1])[0] == 0.0  # constant feature
    with pytest.raises(ValueError, match="at least two"):
        correlation_ratio(x[:1], [0])


def test_factor_encoding_ranks_features_and_reads_normalised_rows():
    rng = np.random.default_rng(1)
    domain, cls = rng.integers(0, 4, 400), rng.integers(0, 10, 400)
    x = np.abs(rng.normal(size=(400, 8))) + 0.05
    x[:, 2] += 2.0 * domain  # a domain feature
    x[:, 5] += 0.15 * cls  # a weaker class feature
    enc = {e.factor: e for e in factor_encoding(x, {"class": cls, "domain": domain}, feature_sets={"D": [2, 5]})}
    assert enc["domain"].top_features[0] == 2 and enc["domain"].best > enc["class"].best > 0.1
    assert enc["class"].top_features[0] == 5 and enc["domain"].levels == 4 and enc["class"].levels == 10
    assert set(enc["domain"].median_in) == {"D"}
    raw = factor_encoding(3.0 * x, {"domain": domain})[0]  # a positive rescaling of rows changes nothing
    assert raw.best == pytest.approx(enc["domain"].best)
