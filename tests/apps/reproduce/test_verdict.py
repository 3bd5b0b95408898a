"""Verdict logic on hand-made cases: a clear gain, a clear loss, noise, one run, nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from replens.apps.reproduce.verdict import (
    HOLDS,
    NO_RESULT,
    NOT_SIGNIFICANT,
    REVERSED,
    Claim,
    aggregate_rows,
    format_mean_std,
    judge,
    paired_verdict,
    resampled_verdict,
    sign_test_p,
)


def test_a_clear_gain_holds_and_a_clear_loss_is_reversed():
    control = [50.0, 52.0, 51.0, 49.5]
    gain = [55.1, 57.3, 55.9, 54.8]
    v = paired_verdict(control, gain)
    assert v.verdict == HOLDS and v.test == "paired t-test" and v.n == 4
    assert v.difference_mean == pytest.approx(np.mean(np.subtract(gain, control)))
    assert v.p_value == pytest.approx(stats.ttest_rel(gain, control).pvalue)
    assert paired_verdict(gain, control).verdict == REVERSED  # treatment below control, claim says above
    # a claim of a decrease (direction -1) holds on the loss
    assert paired_verdict(gain, control, direction=-1).verdict == HOLDS


def test_noise_is_not_significant():
    rng = np.random.default_rng(0)
    control = 60 + rng.normal(0, 2, size=5)
    noise = control + rng.normal(0, 2, size=5)
    v = paired_verdict(control, noise)
    assert v.verdict == NOT_SIGNIFICANT and v.p_value >= 0.05
    assert paired_verdict([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).verdict == NOT_SIGNIFICANT  # no difference at all


def test_one_run_has_no_paired_test_and_nan_runs_are_no_result():
    v = paired_verdict([50.0], [70.0])
    assert v.verdict == NOT_SIGNIFICANT and v.test == "none" and "one run" in v.reason
    nothing = paired_verdict([float("nan")] * 3, [1.0, 2.0, 3.0])
    assert nothing.verdict == NO_RESULT and nothing.n == 0
    partial = paired_verdict([1.0, float("nan"), 1.1, 0.9], [2.0, 5.0, 2.1, 1.95])
    assert partial.n == 3 and partial.verdict == HOLDS


def test_identical_differences_fall_back_to_the_sign_test():
    v = paired_verdict([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert v.test == "sign test" and v.p_value == pytest.approx(0.25)  # 3 of 3 positive: 2 * 1/8
    assert v.verdict == NOT_SIGNIFICANT  # three runs cannot reach 0.05 with a sign test
    assert sign_test_p([1, 1, 1, 1, 1, 1]) == pytest.approx(2 / 64)
    assert sign_test_p([1, -1, 0]) == pytest.approx(1.0)
    assert sign_test_p([0, 0]) == 1.0
    assert paired_verdict([0.0] * 6, [1.0] * 6, test="sign test").verdict == HOLDS


def test_bootstrap_over_test_samples_for_a_single_run():
    rng = np.random.default_rng(1)
    control = (rng.random(600) < 0.5).astype(float)
    better = np.where(rng.random(600) < 0.3, 1.0, control)  # fixes 30 % of the samples

    def means(samples: dict[str, np.ndarray]) -> tuple[float, float]:  # paired per-sample outcomes
        return float(samples["c"].mean()), float(samples["t"].mean())

    v = resampled_verdict({"c": control, "t": better}, means)
    assert v.verdict == HOLDS and v.difference_mean == pytest.approx(better.mean() - control.mean())
    assert resampled_verdict({"c": better, "t": control}, means).verdict == REVERSED
    same = np.where(rng.random(600) < 0.05, 1.0 - control, control)  # flips both ways
    assert resampled_verdict({"c": control, "t": same}, means).verdict == NOT_SIGNIFICANT
    assert resampled_verdict({"c": np.zeros(0), "t": np.zeros(0)}, means).verdict == NO_RESULT
    with pytest.raises(ValueError):
        resampled_verdict({"c": np.ones(1), "t": np.ones(2)}, means)


def test_judge_reads_each_runs_rows():
    claim = Claim("FDA raises SimCLR's top-1", pairs=lambda rows: (rows[0]["top1"], rows[1]["top1"]))
    runs = [[{"top1": 40.0 + s}, {"top1": 45.0 + 1.1 * s}] for s in range(3)]
    assert judge(claim, runs).verdict == HOLDS
    assert judge(claim, [[{"top1": 1.0}]] * 3).verdict == NO_RESULT  # rows without the claim's numbers
    assert "paired t-test over seeds" in claim.describe()
    with pytest.raises(ValueError):
        Claim("x", pairs=lambda rows: (0, 0), direction=0)


def test_aggregate_rows_mean_and_std_over_runs():
    runs = [[{"model": "SimCLR", "top1": 10.0, "cell": "1.00 / 3.00", "n": 5}],
            [{"model": "SimCLR", "top1": 14.0, "cell": "3.00 / 5.00", "n": 5}]]
    means, stds = aggregate_rows(runs)
    assert means == [{"model": "SimCLR", "top1": 12.0, "cell": "2.00 / 4.00", "n": 5}]
    assert stds[0]["top1"] == pytest.approx(math.sqrt(8)) and stds[0]["cell"] == "1.41 / 1.41"
    assert format_mean_std(means[0]["top1"], stds[0]["top1"]) == "12.00 ± 2.83"
    assert format_mean_std(means[0]["cell"], stds[0]["cell"]) == "2.00 ± 1.41 / 4.00 ± 1.41"
    # different layouts (e.g. rows listing each run's own mis-classified samples): the first run, no stds
    ragged = [[{"sample": 3}], [{"sample": 3}, {"sample": 7}]]
    assert aggregate_rows(ragged) == ([{"sample": 3}], [])
    assert aggregate_rows([[{"label": "a"}], [{"label": "b"}]]) == ([{"label": "a"}], [])


def test_claim_numbers_are_read_by_label_not_position():
    from replens.apps.reproduce.verdict import cell, mean_cell, row_of

    rows = [{"model": "Random init (control)", "top1": 10.0, "avg": 10.0},
            {"model": "SimCLR", "top1": 50.0, "avg": "40.00 / 45.50"},
            {"model": "SimCLR", "top1": float("nan"), "avg": "1 / 2"},
            {"model": "BYOL", "top1": 70.0, "avg": ""}]
    assert row_of(rows, model="SimCLR")["top1"] == 50.0  # the first match
    assert cell(rows, "avg", 0, model="SimCLR") == 40.0 and cell(rows, "avg", 1, model="SimCLR") == 45.5
    assert mean_cell(rows, "top1", model="SimCLR") == 50.0  # NaN cells left out
    assert mean_cell(rows, "top1") == pytest.approx(130.0 / 3)
    assert math.isnan(mean_cell([{"m": "a", "x": float("nan")}], "x", m="a"))
    with pytest.raises(KeyError):
        row_of(rows, model="MoCo")
    with pytest.raises(ValueError):
        cell(rows, "avg", 0, model="BYOL")  # not an "a / b" cell
    # judge turns missing rows into a non-finite pair: a claim on a missing model is no result
    claim = Claim("x", pairs=lambda r: (cell(r, "top1", model="MoCo"), cell(r, "top1", model="SimCLR")))
    assert judge(claim, [rows, rows]).verdict == NO_RESULT
    gain = Claim("y", pairs=lambda r: (cell(r, "avg", 0, model="SimCLR"), cell(r, "avg", 1, model="SimCLR")))
    runs = [[{"model": "SimCLR", "avg": f"{40 + s:.2f} / {45 + 1.1 * s:.2f}"}] for s in range(4)]
    assert judge(gain, runs).verdict == HOLDS
