"""Verdicts on the paper's claims: repeated runs, paired tests, mean +- std cells.

A recipe states the paper's claim as a direction (:class:`Claim`, e.g. "FDA
raises SimCLR's linear top-1": the treatment's number is larger than the
control's). Each run of the recipe (one per seed) gives one
``(control, treatment)`` pair; :func:`judge` tests the paired differences and
returns a :class:`Verdict`:

* ``holds``: the difference is significant at ``alpha`` and has the claimed sign;
* ``reversed``: significant with the opposite sign;
* ``not significant``: otherwise (including a single run without per-sample arrays, where no test exists);
* ``no result``: no finite pair at all.

Tests (two-sided, ``alpha = 0.05`` unless a claim says otherwise):

* ``"paired t-test"`` (default): one-sample t-test of the differences against 0
  (``scipy.stats.ttest_1samp``); when every difference is identical the t
  statistic is undefined and the exact sign test decides;
* ``"sign test"``: exact binomial test of positive vs negative differences (ties dropped);
* :func:`resampled_verdict` (``"bootstrap over test samples"``): for one run only
  (e.g. a pretrained checkpoint, which has no seeds), when the recipe stored
  per-sample arrays (``RecipeResult.samples``) and its claim has a ``resample``
  function: the test samples are drawn with replacement and ``resample``
  recomputes ``(control, treatment)`` on each draw (e.g. 50 and the AUROC of the
  drawn Q-Scores against the drawn correctness). :func:`judge` uses it where
  exactly one run exists and samples are given; several runs keep the paired test.

:func:`row_of`, :func:`cell`, :func:`mean_cell` and :func:`between` read a claim's numbers out of a run's rows by
their labels (not their positions, so added control rows do not shift them).

:func:`aggregate_rows` turns the rows of several runs into mean rows and std
rows (numbers, and ``"a / b"`` pair cells part by part).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

HOLDS = "holds"
REVERSED = "reversed"
NOT_SIGNIFICANT = "not significant"
NO_RESULT = "no result"
#: Every verdict, in the order the report counts them.
VERDICTS: tuple[str, ...] = (HOLDS, REVERSED, NOT_SIGNIFICANT, NO_RESULT)
TESTS: tuple[str, ...] = ("paired t-test", "sign test")


@dataclass(frozen=True)
class Verdict:
    """The outcome of testing one claim.

    Attributes:
        verdict: One of :data:`VERDICTS`.
        test: The test that decided (``"paired t-test"``, ``"sign test"``, ``"paired bootstrap"``,
            ``"bootstrap over test samples (B resamples of n)"`` or ``"none"``).
        n: Pairs (runs) or test samples that entered the test.
        control_mean: Mean of the control's numbers.
        treatment_mean: Mean of the treatment's numbers.
        difference_mean: Mean of ``treatment - control``.
        difference_std: Sample standard deviation of the differences (ddof 1; NaN for fewer than 2); for
            ``bootstrap over test samples`` the std of the resampled differences (the bootstrap standard error).
        p_value: Two-sided p-value (NaN when no test ran).
        alpha: Significance level.
        direction: ``+1``: the claim says treatment > control; ``-1``: treatment < control.
        reason: Why the verdict is what it is, in words.
    """

    verdict: str
    test: str
    n: int
    control_mean: float
    treatment_mean: float
    difference_mean: float
    difference_std: float
    p_value: float
    alpha: float
    direction: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN kept as float NaN)."""
        return asdict(self)


@dataclass(frozen=True)
class Claim:
    """The paper's claim of a recipe, as a direction between two numbers of its rows.

    Attributes:
        text: The claim in words, e.g. ``"FDA raises SimCLR's linear top-1 (Table 5.1)"``.
        pairs: ``pairs(rows) -> (control, treatment)``: the two numbers of one run's rows.
        direction: ``+1`` (treatment above control) or ``-1`` (below).
        test: ``"paired t-test"`` or ``"sign test"`` (over runs).
        alpha: Significance level of the two-sided test.
        quantity: What the numbers are, for the report (e.g. ``"linear top-1 %"``).
        resample: ``resample(samples) -> (control, treatment)`` from a run's per-sample arrays (all
            sharing their first axis, one entry per test sample), or None. With one run only,
            :func:`judge` bootstraps the test samples through it (:func:`resampled_verdict`).
        resamples: Bootstrap draws of :func:`resampled_verdict`.
    """

    text: str
    pairs: Callable[[list[dict[str, Any]]], tuple[float, float]]
    direction: int = 1
    test: str = "paired t-test"
    alpha: float = 0.05
    quantity: str = ""
    resample: Callable[[dict[str, np.ndarray]], tuple[float, float]] | None = None
    resamples: int = 2000

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ValueError(f"Claim.direction must be +1 or -1, got {self.direction}")
        if self.test not in TESTS:
            raise ValueError(f"Claim.test must be one of {TESTS}, got {self.test!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"Claim.alpha must be in (0, 1), got {self.alpha}")
        if self.resamples < 1:
            raise ValueError(f"Claim.resamples must be >= 1, got {self.resamples}")

    def describe(self, samples: int | None = None) -> str:
        """The test in words: ``"paired t-test over seeds, two-sided, alpha 0.05"``, or with ``samples``
        (one run judged by :func:`resampled_verdict`) ``"bootstrap over test samples (2000 resamples of
        1000), two-sided, alpha 0.05"``."""
        if samples is not None:
            return f"{bootstrap_test_name(self.resamples, samples)}, two-sided, alpha {self.alpha:g}"
        return f"{self.test} over seeds, two-sided, alpha {self.alpha:g}"


def bootstrap_test_name(resamples: int, samples: int) -> str:
    """``"bootstrap over test samples (2000 resamples of 1000)"``: the ``test`` of :func:`resampled_verdict`."""
    return f"bootstrap over test samples ({resamples} resamples of {samples})"


def sign_test_p(differences: Sequence[float]) -> float:
    """Two-sided exact sign test of ``differences`` against 0 (ties dropped; 1.0 when all are ties)."""
    d = np.asarray(differences, dtype=np.float64)
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    n = pos + neg
    if n == 0:
        return 1.0
    k = min(pos, neg)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return float(min(1.0, 2.0 * tail))


def _bootstrap_p(differences: np.ndarray, resamples: int) -> float:
    """Two-sided bootstrap p-value: twice the smaller share of resampled differences on either side of 0,
    at least ``1 / resamples`` (1.0 without any difference)."""
    if differences.size == 0:
        return 1.0
    tail = min(float((differences <= 0).mean()), float((differences >= 0).mean()))
    return float(min(1.0, max(2.0 * tail, 1.0 / resamples)))


def _decide(diff_mean: float, p: float, alpha: float, direction: int) -> str:
    if not math.isfinite(p) or p >= alpha or diff_mean == 0:
        return NOT_SIGNIFICANT
    return HOLDS if np.sign(diff_mean) == direction else REVERSED


def paired_verdict(control: Sequence[float], treatment: Sequence[float], *, direction: int = 1,
                   alpha: float = 0.05, test: str = "paired t-test") -> Verdict:
    """Test paired numbers of several runs (e.g. one pair per seed).

    Args:
        control: The control's number per run.
        treatment: The treatment's number per run (same order).
        direction: ``+1``: the claim is treatment > control; ``-1``: treatment < control.
        alpha: Two-sided significance level.
        test: ``"paired t-test"`` or ``"sign test"``.

    Returns:
        The verdict; pairs with a non-finite member are dropped (counted out of ``n``).

    Raises:
        ValueError: Different lengths, or an unknown test.
    """
    from scipy import stats

    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    c, t = np.asarray(control, dtype=np.float64), np.asarray(treatment, dtype=np.float64)
    if c.shape != t.shape or c.ndim != 1:
        raise ValueError(f"control and treatment must be 1-D of one length, got {c.shape} and {t.shape}")
    keep = np.isfinite(c) & np.isfinite(t)
    c, t = c[keep], t[keep]
    n = int(keep.sum())
    nan = float("nan")
    if n == 0:
        return Verdict(NO_RESULT, "none", 0, nan, nan, nan, nan, nan, alpha, direction,
                       "no run gave finite numbers for both sides")
    d = t - c
    d_mean = float(d.mean())
    d_std = float(d.std(ddof=1)) if n > 1 else nan
    base = dict(n=n, control_mean=float(c.mean()), treatment_mean=float(t.mean()), difference_mean=d_mean,
                difference_std=d_std, alpha=alpha, direction=direction)
    if n < 2:
        return Verdict(NOT_SIGNIFICANT, "none", p_value=nan, reason="one run: no paired test is possible", **base)
    used = test
    if test == "sign test":
        p = sign_test_p(d)
    elif np.all(d == d[0]):
        used, p = "sign test", sign_test_p(d)  # zero variance: the t statistic is undefined
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
    verdict = _decide(d_mean, p, alpha, direction)
    reason = f"mean difference {d_mean:+.3g} over {n} runs, p = {p:.3g} ({used}, two-sided) vs alpha {alpha:g}"
    return Verdict(verdict, used, p_value=p, reason=reason, **base)


def sample_count(samples: dict[str, Any]) -> int:
    """Test samples in per-sample arrays (their shared first axis).

    Raises:
        ValueError: No arrays, a 0-d array, or arrays of different first-axis lengths (named).
    """
    lengths = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in samples.items()}
    if not lengths or None in lengths.values() or len(set(lengths.values())) != 1:
        raise ValueError(f"per-sample arrays must share their first axis, got lengths {lengths}")
    return int(next(iter(lengths.values())))


def resampled_verdict(samples: dict[str, Any], resample: Callable[[dict[str, np.ndarray]], tuple[float, float]],
                      *, direction: int = 1, alpha: float = 0.05, resamples: int = 2000, seed: int = 0) -> Verdict:
    """Bootstrap over test samples, for a claim backed by one run (e.g. a pretrained checkpoint).

    ``resample(samples)`` gives ``(control, treatment)``; it is evaluated on the
    arrays as given (the point estimate) and on ``resamples`` draws of the test
    samples with replacement (every array indexed by the same draw along its
    first axis). Draws with a non-finite number are dropped; the two-sided
    p-value is twice the smaller share of drawn differences on either side of 0
    (at least ``1 / resamples``). ``difference_std`` is the std of the drawn
    differences (the bootstrap standard error).

    Raises:
        ValueError: Arrays of different first-axis lengths, or fewer than 1 resample. (``resample`` raising
            ``KeyError``, ``IndexError``, ``ValueError`` or ``TypeError`` on the given arrays: ``no result``.)
    """
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    arrays = {k: np.asarray(v) for k, v in samples.items()}
    n = sample_count(arrays)
    test = bootstrap_test_name(resamples, n)
    nan = float("nan")
    try:
        c0, t0 = (float(x) for x in resample(arrays)) if n else (nan, nan)
    except (KeyError, IndexError, ValueError, TypeError):  # arrays without the claim's numbers: like judge's rows
        c0 = t0 = nan
    if not (math.isfinite(c0) and math.isfinite(t0)):
        return Verdict(NO_RESULT, test, n, c0, t0, nan, nan, nan, alpha, direction,
                       f"the claim's numbers are not finite on the {n} test samples")
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for b in range(resamples):
        draw = rng.integers(0, n, size=n)
        c, t = resample({k: v[draw] for k, v in arrays.items()})
        diffs[b] = float(t) - float(c)
    diffs = diffs[np.isfinite(diffs)]
    p = _bootstrap_p(diffs, resamples) if diffs.size else nan
    d = t0 - c0
    se = float(diffs.std(ddof=1)) if diffs.size > 1 else nan
    reason = (f"difference {d:+.3g} on {n} test samples, p = {p:.3g} from {diffs.size} bootstrap resamples "
              f"(two-sided) vs alpha {alpha:g}")
    return Verdict(_decide(d, p, alpha, direction), test, n, c0, t0, d, se, p, alpha, direction, reason)


def judge(claim: Claim, runs: Sequence[list[dict[str, Any]]], samples: dict[str, Any] | None = None) -> Verdict:
    """The verdict on ``claim`` from the rows of each run (one run per seed).

    With exactly one run, per-sample arrays ``samples`` (non-empty) and a claim
    with a ``resample`` function, the test samples are bootstrapped
    (:func:`resampled_verdict`); otherwise the paired test over runs decides
    (one run without samples: ``not significant``). A run whose rows do not
    give the claim's numbers (``claim.pairs`` raises ``KeyError``,
    ``IndexError``, ``ValueError`` or ``TypeError``) counts as a non-finite pair.
    """
    if len(runs) == 1 and samples and claim.resample is not None:
        return resampled_verdict(samples, claim.resample, direction=claim.direction, alpha=claim.alpha,
                                 resamples=claim.resamples)
    control, treatment = [], []
    for rows in runs:
        try:
            c, t = claim.pairs(rows)
            c, t = float(c), float(t)
        except (KeyError, IndexError, ValueError, TypeError):
            c = t = float("nan")
        control.append(c)
        treatment.append(t)
    return paired_verdict(control, treatment, direction=claim.direction, alpha=claim.alpha, test=claim.test)


# --------------------------------------------------------------------------- claim numbers from rows
def row_of(rows: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any]:
    """The first row whose cells equal every ``match`` (e.g. ``model="SimCLR"``).

    Raises:
        KeyError: No such row (``judge`` then counts the run as a non-finite pair).
    """
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    raise KeyError(f"no row with {match}")


def cell(rows: Sequence[dict[str, Any]], column: str, part: int | None = None, **match: Any) -> float:
    """The number in ``column`` of :func:`row_of` ``(rows, **match)``; ``part`` 0 or 1 of an ``"a / b"`` cell."""
    value = row_of(rows, **match)[column]
    if part is not None:
        pair = _pair(value)
        if pair is None:
            raise ValueError(f"{column}: {value!r} is not an 'a / b' cell")
        return pair[part]
    return float(value)


def between(column: str, control: dict[str, Any], treatment: dict[str, Any]
            ) -> Callable[[list[dict[str, Any]]], tuple[float, float]]:
    """A :class:`Claim`'s ``pairs``: the number in ``column`` of the row matching ``control`` and of the row
    matching ``treatment`` (e.g. ``between("top1", {"model": "baseline"}, {"model": "Q-Score"})``)."""
    return lambda rows: (cell(rows, column, **control), cell(rows, column, **treatment))


def mean_cell(rows: Sequence[dict[str, Any]], column: str, **match: Any) -> float:
    """Mean of the finite numbers in ``column`` over every row matching ``match`` (NaN when none is finite).

    Raises:
        KeyError: No row matches.
    """
    values = [r.get(column) for r in rows if all(r.get(k) == v for k, v in match.items())]
    if not values:
        raise KeyError(f"no row with {match}")
    finite = [float(v) for v in values if _number(v) and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


# --------------------------------------------------------------------------- mean +- std over runs
def _number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _pair(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, str) or value.count("/") != 1:
        return None
    a, b = value.split("/")
    try:
        return float(a), float(b)
    except ValueError:
        return None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return float("nan"), float("nan")
    return float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else 0.0


def aggregate_rows(runs: Sequence[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Mean rows and std rows (ddof 1) over runs with the same layout.

    Runs have the same layout when they have as many rows with the same keys
    and equal non-numeric cells; numbers are averaged cell by cell (NaN cells
    ignored), ``"a / b"`` pair cells part by part (written back as
    ``"mean_a / mean_b"`` with two decimals). Integer cells stay integers when
    they agree across runs.

    Returns:
        ``(mean_rows, std_rows)``: ``std_rows`` holds, per row, the std of
        each averaged cell (floats, or ``"sa / sb"`` for pair cells). With one
        run, or runs of different layouts, the first run's rows and no stds.
    """
    if not runs:
        return [], []
    first = runs[0]
    if len(runs) == 1 or any(len(r) != len(first) for r in runs):
        return [dict(row) for row in first], []
    means: list[dict[str, Any]] = []
    stds: list[dict[str, Any]] = []
    for i, row in enumerate(first):
        others = [r[i] for r in runs]
        if any(list(o) != list(row) for o in others):
            return [dict(r) for r in first], []
        mean_row: dict[str, Any] = {}
        std_row: dict[str, Any] = {}
        for key, value in row.items():
            cells = [o[key] for o in others]
            if _number(value) and all(_number(c) for c in cells):
                if all(c == value for c in cells):
                    mean_row[key], std_row[key] = value, 0.0
                else:
                    mean_row[key], std_row[key] = _mean_std(cells)
            elif _pair(value) is not None and all(_pair(c) is not None for c in cells):
                parts = [_pair(c) for c in cells]
                ma, sa = _mean_std([p[0] for p in parts])  # type: ignore[index]
                mb, sb = _mean_std([p[1] for p in parts])  # type: ignore[index]
                mean_row[key], std_row[key] = f"{ma:.2f} / {mb:.2f}", f"{sa:.2f} / {sb:.2f}"
            elif all(c == value for c in cells):
                mean_row[key] = value
            else:
                return [dict(r) for r in first], []
        means.append(mean_row)
        stds.append(std_row)
    return means, stds


def format_mean_std(mean: Any, std: Any) -> str:
    """``"12.34 +- 0.56"`` (pairs: ``"12.34 +- 0.56 / 13.00 +- 0.20"``); the mean alone without a std."""
    if isinstance(mean, str) and isinstance(std, str) and _pair(mean) and _pair(std):
        (ma, mb), (sa, sb) = _pair(mean), _pair(std)  # type: ignore[misc]
        return f"{ma:.2f} ± {sa:.2f} / {mb:.2f} ± {sb:.2f}"
    if _number(mean) and _number(std):
        return f"{float(mean):.2f} ± {float(std):.2f}"
    return str(mean)
