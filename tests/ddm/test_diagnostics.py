"""Chapter 2's evaluation helpers: splits, per-domain probes, the table layout, Figures 2.3/2.4, Colored data."""

import numpy as np
import pytest

from replens.data.arrays import ArraySource
from replens.ddm import TINTS, TintedSource, tint_image
from replens.ddm.diagnostics import (
    domain_variance_fraction,
    format_domain_table,
    part_probes,
    per_domain_accuracy,
    plot_part_tsne,
    plot_top_feature_heatmap,
    stratified_split,
    top_activating_features,
)


def disentangled(n=240, k=4, r=24, seed=0):
    """Features whose first k columns say the domain and the rest the class (the structure DDM aims for)."""
    rng = np.random.default_rng(seed)
    labels, domains = rng.integers(0, 3, n), rng.integers(0, 2, n)
    x = rng.normal(scale=0.3, size=(n, r))
    x[np.arange(n), domains] += 3.0
    x[np.arange(n), k + labels] += 3.0
    return x, labels, domains


def test_stratified_split_is_disjoint_and_per_group():
    labels, domains = np.repeat([0, 1, 0, 1], 10), np.repeat([0, 0, 1, 1], 10)
    tr, te = stratified_split(labels, domains, 0.3, seed=0)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 40
    for d in (0, 1):
        for c in (0, 1):
            assert ((labels[te] == c) & (domains[te] == d)).sum() == 3


def test_probes_find_domain_in_the_prefix_and_class_in_the_invariant_part():
    x, y, d = disentangled()
    tr, te = stratified_split(y, d, 0.3)
    parts = part_probes(x[tr], y[tr], d[tr], x[te], y[te], d[te], 4, max_iter=50)
    assert parts["prefix"]["domain"] == 100.0 and parts["invariant"]["class"] == 100.0
    assert parts["prefix"]["class"] < 60 and parts["invariant"]["domain"] < 75
    assert parts["prefix"]["domain_variance"] > 0.4 and parts["invariant"]["domain_variance"] < 0.05
    acc = per_domain_accuracy(x[tr], y[tr], d[tr], x[te], y[te], d[te], ["red", "green"], max_iter=50)
    joint = per_domain_accuracy(x[tr], y[tr], d[tr], x[te], y[te], d[te], ["red", "green"], protocol="joint",
                                max_iter=50)
    assert acc == {"red": 100.0, "green": 100.0} and joint == acc


def test_domain_variance_fraction_is_between_over_total_variance():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [12.0, 0.0]])
    d = np.array([0, 0, 1, 1])
    # means 1 and 11 around 6: between = 25; total = mean of (36, 16, 16, 36) = 26
    assert domain_variance_fraction(x, d) == pytest.approx(25 / 26)
    assert domain_variance_fraction(x, np.array([0, 1, 0, 1])) == pytest.approx(1 / 26)
    assert np.isnan(domain_variance_fraction(x, np.zeros(4)))


def test_table_has_the_seed_layout():
    results = {"base": {"photo": 90.0, "sketch": 80.0, "art": 50.0}, "ddm": {"photo": 91.0, "sketch": 79.0,
                                                                            "art": 60.0}}
    table = format_domain_table(results, ["photo", "sketch"], ["art"], compare=[("SimCLR", "base", "ddm")])
    lines = table.strip().splitlines()
    assert lines[0] == "| Model | photo | sketch | art (Unseen) | Average |"
    assert lines[2] == "| SimCLR | 90.00 / **91.00** | **80.00** / 79.00 | 50.00 / **60.00** | 73.33 / **76.67** |"
    plain = format_domain_table(results, ["photo", "sketch"], ["art"])
    assert "| ddm | 91.00 | 79.00 | 60.00 | 76.67 |" in plain


def test_top_activating_features_and_figures(tmp_path):
    x, y, d = disentangled(n=90)
    matrix = np.zeros((4, 10))
    matrix[1, 7], matrix[2, 2] = 5.0, -5.0
    assert top_activating_features(matrix, z=2.0).tolist() == [2, 7]
    heat = plot_top_feature_heatmap(x, y, d, tmp_path / "heat.png", prefix_dim=4, domain_names=["r", "g"])
    assert (tmp_path / "heat.png").stat().st_size > 1000
    assert heat["prefix_selected"] == 2 and set(heat["features"]) >= {0, 1, 4, 5, 6}
    tsne = plot_part_tsne(x, y, d, 4, tmp_path / "tsne.png", max_points=60)
    assert tsne["points"] == 60 and (tmp_path / "tsne.png").stat().st_size > 1000


def test_tinted_source_colours_each_image_by_its_domain():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    base = ArraySource(images, rng.integers(0, 3, 50), classes=["a", "b", "c"])
    tinted = TintedSource(base, ("red", "green"), seed=3)
    assert tinted.domain_names == ["tint_red", "tint_green"] and 10 < tinted.domains.sum() < 40
    assert np.array_equal(tinted.domains, TintedSource(base, ("red", "green"), seed=3).domains)
    for i in range(5):
        tint = TINTS["red" if tinted.domains[i] == 0 else "green"]
        lum = images[i].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        expected = np.clip(np.rint(lum[..., None] * np.array(tint, dtype=np.float32)), 0, 255)
        assert np.array_equal(tinted.read(i), expected.astype(np.uint8))
        item = tinted[i]
        assert item["domain"] == tinted.domains[i] and item["label"] == base.labels[i]
    assert tint_image(np.full((2, 2, 3), 255, np.uint8), (1.0, 0.22, 0.22))[0, 0].tolist() == [255, 56, 56]
    with pytest.raises(Exception, match="unknown tint"):
        TintedSource(base, ("red", "purple"))
