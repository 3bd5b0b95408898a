"""One compression schema and one plot: the curve, its plotted series, and the figure that draws both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from replens.apps.audit import _compression_section
from replens.quality.compression import check_series, compression_series
from replens.quality.plots import draw_compression, plot_compression
from replens.report import compression_figure

CURVE = {
    "full": 41.2,
    "dim": 64,
    "seeds": 2,
    "reference_band": [50.0, 95.0],
    "points": [
        {"fraction": f, "size": s, "band": [0.0, 100.0], "discriminative": d, "random": [r - 1, r + 1],
         "random_mean": r, "random_std": 1.0, "pca": p, "lower_tail": lo, "upper_tail": up}
        for f, s, d, r, p, lo, up in [(0.25, 16, 30.0, 20.0, 28.0, 10.0, 15.0), (0.5, 32, 38.0, 30.0, 36.0, 20.0, 25.0)]
    ],
}


def test_the_series_is_the_audit_summary_section_and_the_curve_keeps_every_selection():
    assert compression_series(CURVE, ("discriminative", "random", "pca")) == _compression_section({"compression": CURVE})
    series = compression_series(CURVE, spread=True)
    assert list(series["curves"]) == ["discriminative", "random", "pca", "lower_tail", "upper_tail"]
    assert series["curves"]["random"] == [20.0, 30.0] and series["std"] == {"random": [1.0, 1.0]}
    with pytest.raises(KeyError, match="unknown compression selections"):
        compression_series(CURVE, ("nosuch",))
    with pytest.raises(ValueError, match=r"compression\.std\.random"):
        check_series({"k": [1, 2], "curves": {}, "std": {"random": [1.0]}})


def test_one_plot_draws_a_curve_a_series_and_the_report_figure(tmp_path: Path):
    path = plot_compression(CURVE, tmp_path / "curve.png")
    assert path.is_file()
    _, drawn = draw_compression(compression_series(CURVE, spread=True), tmp_path / "again.png")
    assert drawn["k"] == [16.0, 32.0] and drawn["full"] == 41.2
    assert drawn["curves"]["upper_tail"] == [15.0, 25.0] and drawn["curves"]["random"] == [20.0, 30.0]
    figure = compression_figure(compression_series(CURVE, ("pca",)), tmp_path / "report.png")
    assert figure.values["curves"] == {"pca": [28.0, 36.0]} and np.isclose(figure.values["full"], 41.2)
