"""Thresholds, feature groups (Algorithm 1) and lowly activating images (Eq. 4.2)."""

from __future__ import annotations

import numpy as np
import pytest

from replens.explain.activations import (
    activation_threshold,
    feature_groups,
    highly_activating,
    lowly_activating,
    normalize_rows,
    single_feature_sets,
)


def planted(seed: int = 0) -> tuple[np.ndarray, dict[tuple[int, ...], np.ndarray]]:
    """Representations with three planted groups over a low-level background."""
    rng = np.random.default_rng(seed)
    n, r = 200, 32
    h = rng.uniform(0.0, 0.1, size=(n, r)).astype(np.float32)
    truth = {(3, 7): np.arange(0, 20), (5,): np.arange(20, 35), (1, 2, 30): np.arange(35, 50)}
    for feats, rows in truth.items():
        h[np.ix_(rows, feats)] = rng.uniform(2.0, 3.0, size=(len(rows), len(feats)))
    h[50:55, 9] = 2.5  # a group with too few samples (5 <= 10)
    return h, truth


def test_feature_groups_recover_planted_groups():
    h, truth = planted()
    hn = normalize_rows(h)
    alpha = activation_threshold(hn, 2.0)
    assert alpha == pytest.approx(float(hn.mean() + 2.0 * hn.std()), rel=1e-6)
    groups = feature_groups(hn, alpha, min_samples=10)
    assert set(groups) == set(truth)
    for feats, rows in truth.items():
        np.testing.assert_array_equal(groups[feats], rows)
    assert list(groups)[0] == (3, 7)  # largest first


def test_feature_groups_match_algorithm_1_loop():
    rng = np.random.default_rng(1)
    h = normalize_rows(rng.exponential(size=(300, 16)) ** 3)
    alpha = activation_threshold(h, 1.0)
    expected: dict[tuple[int, ...], list[int]] = {}
    for j in range(len(h)):  # the pseudo-code of Algorithm 1
        group = tuple(int(i) for i in np.flatnonzero(h[j] >= alpha))
        if group:
            expected.setdefault(group, []).append(j)
    expected = {g: v for g, v in expected.items() if len(v) > 10}
    got = feature_groups(h, alpha, min_samples=10)
    assert {g: v.tolist() for g, v in got.items()} == expected
    single = single_feature_sets(h, alpha, 10)
    for (i,), rows in single.items():
        np.testing.assert_array_equal(rows, np.flatnonzero(h[:, i] > alpha))


def test_highly_activating_exact_and_inclusive():
    h, _ = planted()
    hn = normalize_rows(h)
    alpha = activation_threshold(hn, 2.0)
    np.testing.assert_array_equal(highly_activating(hn, (3,), alpha), np.arange(20))
    np.testing.assert_array_equal(highly_activating(hn, (1, 2), alpha), np.arange(35, 50))
    assert highly_activating(hn, (1, 2), alpha, exact=True).size == 0  # their exact group is (1, 2, 30)


def direct_lowly(h, group, highly, epsilon, beta, max_images):
    """Eq. 4.2 with the authors' ranking, one sample at a time."""
    rest = [i for i in range(h.shape[1]) if i not in group]
    mu = h[highly][:, rest].mean(axis=0)
    scored = []
    for j in range(len(h)):
        if all(h[j, i] < epsilon for i in group):
            score = float(h[j, rest] @ mu)
            if score >= beta:
                scored.append((score, j))
    scored.sort(key=lambda s: -s[0])
    return [j for _, j in scored[:max_images]]


@pytest.mark.parametrize("epsilon", ["global", "feature", 0.05])
def test_lowly_activating_matches_equation_4_2(epsilon):
    rng = np.random.default_rng(2)
    h = normalize_rows(rng.random((150, 12)) ** 2)
    group = (2, 5)
    highly = np.flatnonzero(h[:, 2] + h[:, 5] > np.quantile(h[:, 2] + h[:, 5], 0.9))
    rows, scores = lowly_activating(h, group, highly, epsilon=epsilon, beta=0.3, max_images=10)
    if epsilon == "global":
        eps = float(h.mean())
        expected = direct_lowly(h, group, highly, eps, 0.3, 10)
    elif epsilon == "feature":
        means = h[:, list(group)].mean(axis=0)
        rest = [i for i in range(12) if i not in group]
        mu = h[highly][:, rest].mean(axis=0)
        cand = [(float(h[j, rest] @ mu), j) for j in range(len(h)) if h[j, 2] < means[0] and h[j, 5] < means[1]]
        expected = [j for s, j in sorted(cand, key=lambda s: -s[0]) if s >= 0.3][:10]
    else:
        expected = direct_lowly(h, group, highly, 0.05, 0.3, 10)
    assert rows.tolist() == expected
    assert np.all(np.diff(scores) <= 1e-7) and np.all(scores >= 0.3)
    assert not set(rows.tolist()) & set(highly.tolist())


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="non-finite representations in rows \\[1\\]"):
        normalize_rows(np.array([[1.0, 0.0], [np.nan, 1.0]]))
    with pytest.raises(ValueError, match="no highly activating"):
        lowly_activating(np.ones((4, 3)), (0,), [])


def test_lowly_activating_defaults_are_the_seeds_eq_4_2_settings():
    """Section 4.2.2: epsilon is each feature's mean and beta is 0.7 (the authors' code: global mean, 0.3)."""
    rng = np.random.default_rng(3)
    h = normalize_rows(rng.random((200, 10)) ** 2)
    group = (1, 4)
    highly = np.flatnonzero(h[:, 1] + h[:, 4] > np.quantile(h[:, 1] + h[:, 4], 0.9))
    rows, scores = lowly_activating(h, group, highly)
    explicit, _ = lowly_activating(h, group, highly, epsilon="feature", beta=0.7)
    code, _ = lowly_activating(h, group, highly, epsilon="global", beta=0.3)
    assert rows.tolist() == explicit.tolist() and np.all(scores >= 0.7)
    assert rows.tolist() != code.tolist()  # the two settings pick different counterfactuals here
