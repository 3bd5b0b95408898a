"""Failure explanations (section 4.5), concept transfer (section 4.6, Eq. 4.3) and ground-truth metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replens.evaluate.probe import LinearProbe
from replens.explain.failures import contributions, explain_failures, linear_head_from_probe
from replens.explain.falcon import GroupExplanation
from replens.explain.ground_truth import contrastive_filter_report, ground_truth_terms, precision_recall_at_k
from replens.explain.transfer import carry_rate, learn_transfer, map_features, transfer_concepts


def group(features, words, highly=(0, 1), lowly=(), word_scores=None, removed=None):
    return GroupExplanation(
        features=tuple(features),
        highly=np.asarray(highly),
        lowly=np.asarray(lowly, dtype=int),
        words=list(words),
        word_scores=word_scores or dict(words),
        removed=removed or {},
    )


def test_failure_explanations_follow_argmax_of_h_times_u():
    rng = np.random.default_rng(0)
    h = rng.random((30, 6))
    u = rng.normal(size=(3, 6))
    pred = (h @ u.T).argmax(1)
    labels = (pred + (np.arange(30) % 3 == 0)) % 3  # every third sample is a failure
    groups = [
        group([0, 1], [("red", 0.5)]),
        group([2], [("star", 0.4)]),
        group([3, 4], [("sketch", 0.3)]),
        group([5], [("crimson", 0.6), ("patch", 0.2)]),
    ]
    out = explain_failures(h, u, pred, labels, groups, top_features=1)
    assert [f.row for f in out] == list(range(0, 30, 3))
    contrib = contributions(h, u, pred)
    np.testing.assert_allclose(contrib, h * u[pred])
    owner = {0: "red", 1: "red", 2: "star", 3: "sketch", 4: "sketch", 5: "crimson"}
    for f in out:
        top = int(np.argmax(h[f.row] * u[pred[f.row]]))  # the paper's argmax(h_j * U_{y_j})
        assert f.top_features[0][0] == top and f.prediction == pred[f.row] and f.label == labels[f.row]
        assert f.concepts(1) == [owner[top]]
    # a feature no group explains is explained on demand (and cached)
    calls = []

    def on_demand(feats):
        calls.append(feats)
        return group(feats, [("dotted", 0.7)])

    out = explain_failures(h, u, pred, labels, groups[:1], explain_feature=on_demand, top_features=2)
    assert all(f.words for f in out) and len(calls) == len(set(calls))
    # unexplainable contributing features are skipped: the best-ranked explained one with a positive term is used
    out = explain_failures(h, u, pred, labels, groups[3:], search_depth=6)
    for f in out:
        terms = h[f.row] * u[pred[f.row]]
        if terms[5] > 0:
            assert f.top_features == [(5, pytest.approx(terms[5]))] and f.concepts() == ["crimson", "patch"]
        else:
            assert not f.words and f.top_features[0][0] == int(np.argmax(terms))
    # below search_depth, explained groups are still looked up (no on-demand explanations there): a failure
    # whose only explained contributing feature ranks last still names that feature's concepts
    calls.clear()
    out = explain_failures(h, u, pred, labels, groups[3:], search_depth=1, explain_feature=on_demand)
    for f in out:
        terms = h[f.row] * u[pred[f.row]]
        first = int(np.argmax(terms))
        if first == 5:
            assert f.concepts() == ["crimson", "patch"]
        else:  # the top feature is explained on demand, nothing deeper is
            assert f.top_features[0][0] == first and f.concepts(1) == ["dotted"]
    assert all(len(c) == 1 for c in calls)
    out = explain_failures(h, u, pred, labels, groups[3:], search_depth=1)
    for f in out:
        terms = h[f.row] * u[pred[f.row]]
        assert (f.concepts() == ["crimson", "patch"]) == (terms[5] > 0)


def test_probe_head_acts_on_raw_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 5))
    t = torch.from_numpy
    probe = LinearProbe(
        mean=t(rng.normal(size=5)),
        std=t(rng.random(5) + 0.5),
        weight=t(rng.normal(size=(3, 5))),
        bias=t(rng.normal(size=3)),
        classes=np.arange(3),
    )
    u, b = linear_head_from_probe(probe)
    np.testing.assert_allclose(x @ u.T + b, probe.logits(x).numpy(), rtol=1e-8, atol=1e-8)


def test_transfer_recovers_a_planted_feature_map():
    rng = np.random.default_rng(2)
    target = rng.random((400, 8)).astype(np.float32)
    perm = np.array([3, 0, 6, 1, 7, 2, 5, 4])  # source feature i = target feature perm[i]
    source = target[:, perm]
    for method in ("lstsq", "sgd"):
        z = learn_transfer(target, source, method=method, epochs=60 if method == "sgd" else 10)
        assert z.shape == (8, 8)
        for i in range(8):
            assert map_features(z, [i], std_multiplier=1.0) == [int(perm[i])], method
    z = learn_transfer(target, source, method="lstsq")
    groups = [group([0], [("red", 0.5), ("circle", 0.4)], highly=range(20)), group([4], [])]
    terms = [{"red", "circle"} if t[3] > 0.5 else {"blue"} for t in target]
    out = transfer_concepts(
        z,
        groups,
        target,
        target_alpha=0.5,
        std_multiplier=1.0,
        top_concepts=2,
        min_samples=5,
        image_terms=lambda rows, feats: [terms[int(r)] for r in rows],
    )
    assert len(out) == 1 and out[0].target_features == [3]
    assert out[0].carry == pytest.approx(1.0)  # target feature 3's images all show red circles
    assert carry_rate(["red", "blue"], [{"red"}, {"red", "blue"}]) == pytest.approx(0.75)


def test_ground_truth_precision_recall_and_filter_report():
    concepts = [
        ["circle", "red", "solid", "small", "photo", "left of", "crimson patch"],
        ["circle", "red", "striped", "large", "sketch", "crimson patch"],
        ["square", "blue", "solid", "small", "photo", "crimson patch"],
    ]
    assert {"crimson", "patch", "left", "left of"} <= ground_truth_terms(concepts[0])
    g = group(
        [0],
        [("circle", 0.5), ("square", 0.4), ("red", 0.3), ("crimson", 0.2)],
        highly=[0, 1],
        lowly=[2],
        word_scores={"circle": 0.5, "square": 0.4, "red": 0.3, "crimson": 0.25, "patch": 0.2, "crimson patch": 0},
        removed={"patch": (0.2, 0.3)},
    )
    result = precision_recall_at_k([g], concepts, ks=(1, 2, 4))
    # circle, red: discriminative; square: absent from group A; crimson: also in group B
    assert result["precision"] == {1: 100.0, 2: 50.0, 4: 50.0}
    assert result["recall"] == {1: 50.0, 2: 50.0, 4: 100.0}
    related_only = precision_recall_at_k([g], concepts, ks=(4,), discriminative=False)
    assert related_only["precision"][4] == 75.0
    report = contrastive_filter_report([g], concepts, top=5)
    # top-5 before filtering: circle, square, red, crimson, patch; spurious: square, crimson, patch
    assert report["spurious"] == 3 and report["spurious_removed"] == 1 and report["discriminative_removed"] == 0
