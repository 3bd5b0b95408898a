"""Cross-model concept statistics (``replens.explain.stats``) and intermediate-layer encoders (``layers``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from replens.explain import GroupExplanation, feature_groups
from replens.explain.activations import activation_threshold, normalize_rows
from replens.explain.stats import (
    concept_statistics,
    group_size_distribution,
    highly_activating_feature_share,
    plot_group_sizes,
    plot_shared_concepts,
    shared_concepts,
    unshared_concepts,
)


def _group(features, words, interpretable=True) -> GroupExplanation:
    return GroupExplanation(features=tuple(features), highly=np.arange(12), interpretable=interpretable,
                            words=[(w, 0.5 - 0.01 * k) for k, w in enumerate(words)])


def test_concept_statistics_counts_interpretable_groups_only():
    groups = [
        _group([1], ["red", "circle"]),
        _group([2, 3], ["red", "star", "striped"]),
        _group([4], ["blue", "red"]),
        _group([5], ["green", "red"], interpretable=False),
        _group([6], []),
    ]
    s = concept_statistics(groups, top=3)
    assert s["interpretable_groups"] == 4 and s["explained_groups"] == 3
    assert s["concepts"] == ["blue", "circle", "red", "star", "striped"] and s["unique_concepts"] == 5
    assert s["frequency"]["red"] == 3 and "green" not in s["frequency"]
    assert s["most_frequent"] == ["red", "blue", "circle"]  # ties broken alphabetically
    assert concept_statistics(groups, k=1)["concepts"] == ["blue", "red"]


def test_shared_concepts_is_symmetric_and_bounded():
    rng = np.random.default_rng(0)
    vocab = [f"w{k}" for k in range(40)]
    concepts = {m: set(rng.choice(vocab, size=n, replace=False)) for m, n in (("a", 12), ("b", 20), ("c", 5))}
    names, matrix = shared_concepts(concepts)
    assert names == ["a", "b", "c"]
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_array_equal(np.diag(matrix), [12, 20, 5])
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            assert matrix[i, j] == len(concepts[a] & concepts[b]) <= min(matrix[i, i], matrix[j, j])
    unshared = unshared_concepts(concepts)
    for name, own in unshared.items():
        others = set().union(*(concepts[n] for n in concepts if n != name))
        assert set(own) == concepts[name] - others
        i = names.index(name)
        assert len(own) <= matrix[i, i] - max(matrix[i, k] for k in range(3) if k != i)
    assert unshared_concepts({"only": {"x"}}) == {"only": ["x"]}


def test_group_size_distribution_sums_to_the_number_of_groups():
    rng = np.random.default_rng(1)
    h = normalize_rows(np.maximum(rng.standard_normal((400, 16)), 0) ** 3)
    groups = feature_groups(h, activation_threshold(h, 1.0), min_samples=3)
    keys = list(groups)
    chosen = keys[::2]
    dist = group_size_distribution(keys, chosen)
    assert sum(d["groups"] for d in dist.values()) == len(keys)
    assert sum(d["interpretable"] for d in dist.values()) == len(chosen)
    assert all(0 <= d["interpretable"] <= d["groups"] for d in dist.values())
    for size, d in dist.items():
        assert d["groups"] == sum(len(k) == size for k in keys)
    assert list(dist) == sorted(dist)
    with pytest.raises(ValueError, match="not among"):
        group_size_distribution(keys[:1], [(99, 100)])


def test_highly_activating_feature_share_against_a_direct_count():
    rng = np.random.default_rng(2)
    x = np.maximum(rng.standard_normal((300, 32)), 0) * rng.gamma(2.0, 1.0, 32)
    h = x / np.linalg.norm(x, axis=1, keepdims=True)
    for m in (1.0, 3.0, 16.0):
        alpha = h.mean() + m * h.std()
        expected = sum((h[:, j] > alpha).sum() > 10 for j in range(32))
        s = highly_activating_feature_share(x, m, 10)
        assert s["features"] == expected and s["percent"] == pytest.approx(100 * expected / 32)
        assert s["alpha"] == pytest.approx(alpha, rel=1e-5)


def test_layer_representation_pools_the_layer_and_its_last_stage_is_the_backbone():
    from replens.explain.gradcam import group_cams, last_stage_blocks
    from replens.explain.layers import LayerRepresentation
    from replens.models import create_backbone

    torch.manual_seed(0)
    backbone = create_backbone("small_cnn", widths=(8, 8, 16, 32)).eval()
    x = backbone.preprocess(torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8))
    early = LayerRepresentation(backbone, "block2")
    with torch.no_grad():
        expected = backbone.forward_layers(x, ["block2"])["block2"].mean(dim=(2, 3))
        torch.testing.assert_close(early(x), expected)
        torch.testing.assert_close(LayerRepresentation(backbone, "block4")(x), backbone(x))
    assert early.feature_dim == 8 and early.layer_names() == ["block1", "block2"]
    assert last_stage_blocks(early) == [backbone.block2]
    cams = group_cams(early, torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8), [0, 3])
    assert cams.shape == (2, 16, 16) and np.isfinite(cams).all()
    with pytest.raises(KeyError, match="unknown layer"):
        LayerRepresentation(backbone, "block9")


def test_stat_plots_write_png(tmp_path: Path):
    names, matrix = shared_concepts({"a": {"x", "y"}, "b": {"y"}})
    p1 = plot_shared_concepts(names, matrix, tmp_path / "s.png")
    p2 = plot_group_sizes({"a": {1: {"groups": 3, "interpretable": 1}, 2: {"groups": 1, "interpretable": 1}}},
                          tmp_path / "g.png")
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in (p1, p2))
