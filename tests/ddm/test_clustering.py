"""Robust clustering (paper section 2.5): the Eq. 2.2 outlier rule, the epsilon schedule, planted domains."""

import itertools

import numpy as np
import pytest
import torch

from replens.ddm import RobustClustering, centroid_ratio, clustering_purity, is_inlier, robust_assign


def eq_2_2_reference(h: np.ndarray, c: np.ndarray, eps: float) -> list[bool]:
    """Not an outlier iff max over all (m, n) of ||h - c_m||^2 / ||h - c_n||^2 > 1 + eps."""
    out = []
    for x in h:
        d = [float(((x - cm) ** 2).sum()) for cm in c]
        out.append(max(d[m] / d[n] for m, n in itertools.product(range(len(c)), repeat=2)) > 1 + eps)
    return out


@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0, 3.0])
def test_outlier_rule_is_eq_2_2(eps):
    rng = np.random.default_rng(0)
    h, c = rng.normal(size=(200, 3)), rng.normal(size=(3, 3))
    assert is_inlier(h, c, eps).tolist() == eq_2_2_reference(h, c, eps)


def test_outlier_rule_on_hand_made_points():
    c = np.array([[0.0, 0.0], [4.0, 0.0]])
    h = np.array([[2.0, 0.0],   # equidistant: ratio 1, an outlier for every epsilon >= 0
                  [1.0, 0.0],   # d = 1 and 9: ratio 9
                  [1.8, 0.0],   # d = 3.24 and 4.84: ratio ~1.49
                  [0.0, 0.0]])  # on a centroid: ratio inf
    assert centroid_ratio(h, c).numpy() == pytest.approx([1.0, 9.0, 4.84 / 3.24, np.inf])
    assert is_inlier(h, c, 1.0).tolist() == [False, True, False, True]
    assert is_inlier(h, c, 0.4).tolist() == [False, True, True, True]
    assert robust_assign(h, c, 1.0).tolist() == [-1, 0, -1, 0]
    with pytest.raises(ValueError, match="epsilon"):
        is_inlier(h, c, -0.1)


def test_second_nearest_rule_is_stricter_for_more_than_two_centroids():
    c = np.array([[0.0, 0.0], [2.0, 0.0], [100.0, 0.0]])
    h = np.array([[1.0, 0.0]])  # equidistant from the first two, far from the third
    assert bool(is_inlier(h, c, 1.0, "eq2.2")[0])  # Eq. 2.2 as printed: the farthest centroid decides
    assert not bool(is_inlier(h, c, 1.0, "second_nearest")[0])


def test_purity():
    pseudo = np.array([0, 0, 0, 1, 1, -1, 1])
    true = np.array([2, 2, 1, 0, 0, 1, 1])
    # cluster 0: majority 2 (2 of 3); cluster 1: majority 0 (2 of 3); the outlier is not counted
    assert clustering_purity(pseudo, true) == pytest.approx(4 / 6)
    assert np.isnan(clustering_purity(np.full(3, -1), np.zeros(3, dtype=int)))


def planted(n_per=150, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[sep, 0, 0, 0], [0, sep, 0, 0], [0, 0, sep, 0]])
    h = np.concatenate([rng.normal(size=(n_per, 4)) + c for c in centres])
    return h, np.repeat(np.arange(3), n_per)


def test_robust_clustering_recovers_planted_domains_and_rejects_in_between_points():
    h, true = planted()
    rng = np.random.default_rng(1)
    # points half-way between two domains: the ones Eq. 2.2 is there to reject
    between = 0.5 * (h[true == 0][:20] + h[true == 1][:20]) + rng.normal(scale=0.05, size=(20, 4))
    x = np.concatenate([h, between])
    rc = RobustClustering(3, epsilon_start=1.0, epsilon_decay=0.5, rule="second_nearest", seed=0)
    labels = rc.fit(x)
    assert rc.last_epsilon == 1.0 and rc.epsilon == 0.5
    assert clustering_purity(labels[: len(h)], true) == 1.0
    assert (labels[: len(h)] >= 0).mean() > 0.9
    assert (labels[len(h):] < 0).mean() > 0.8
    # label ids are a permutation of the planted domains
    mapping = {int(true[i]): int(labels[i]) for i in range(len(h)) if labels[i] >= 0}
    assert sorted(mapping.values()) == [0, 1, 2]
    # Eq. 2.2 as printed compares with the farthest centroid: with M = 3 it keeps those in-between points
    as_printed = RobustClustering(3, seed=0).fit(x)
    assert clustering_purity(as_printed[: len(h)], true) == 1.0
    assert (as_printed[len(h):] >= 0).mean() > 0.8


def test_two_planted_domains_reject_the_points_in_between():
    h, true = planted(n_per=200)
    h, true = h[true < 2], true[true < 2]
    rng = np.random.default_rng(1)
    between = np.array([3.0, 3.0, 0, 0]) + rng.normal(scale=0.1, size=(20, 4))  # half-way between the centres
    labels = RobustClustering(2, seed=0).fit(np.concatenate([h, between]))
    assert clustering_purity(labels[: len(h)], true) == 1.0 and (labels[: len(h)] >= 0).mean() > 0.9
    assert (labels[len(h):] < 0).all()


def test_epsilon_decays_and_ids_persist_across_reclusterings():
    h, true = planted(sep=3.0, seed=2)
    rc = RobustClustering(3, epsilon_start=1.0, epsilon_decay=0.5, seed=3)
    first = rc.fit(h)
    outliers = [(first < 0).mean()]
    for round_ in range(1, 4):
        previous = rc.centroids.copy()
        labels = rc.fit(h + np.random.default_rng(round_).normal(scale=0.05, size=h.shape))
        # Hungarian matching keeps each pseudo-domain's id: centroid m stays near centroid m
        assert (np.linalg.norm(rc.centroids - previous, axis=1) < 0.5).all()
        both = (labels >= 0) & (first >= 0)
        assert (labels[both] == first[both]).mean() > 0.95
        outliers.append((labels < 0).mean())
        assert rc.last_epsilon == pytest.approx(0.5**round_)
    assert outliers == sorted(outliers, reverse=True) and outliers[-1] < outliers[0]
    state = rc.state_dict()
    again = RobustClustering(3, seed=3)
    again.load_state_dict(state)
    assert again.rounds == 4 and torch.equal(again.assign(torch.as_tensor(h)), rc.assign(torch.as_tensor(h)))
