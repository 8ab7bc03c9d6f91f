import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.intervals import (
    apply_offsets,
    calibrate,
    conformal_offsets,
    conformity_scores,
)
from forecaster.metrics import coverage

NAN = float("nan")


def test_scores_sign():
    scores = conformity_scores([0.0, 5.0, -3.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(scores, [-1.0, 4.0, 2.0])
    assert conformity_scores([NAN, 1.0], [0.0, NAN], [1.0, 2.0]).size == 0


def test_offset_is_the_corrected_order_statistic():
    zeros = np.zeros(9)
    # scores are y itself (lo = hi = 0, y > 0); k = ceil(10 * 0.8) = 8 -> 8th smallest
    y = np.array([9.0, 1.0, 5.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0])
    assert conformal_offsets(y, zeros, zeros) == 8.0
    # k = ceil(10 * 0.5) = 5
    assert conformal_offsets(y, zeros, zeros, coverage=0.5) == 5.0
    # n = 99: k = ceil(100 * 0.8) = 80 exactly, not 81
    y = np.arange(1.0, 100.0)
    assert conformal_offsets(y, np.zeros(99), np.zeros(99)) == 80.0


def test_offset_level_above_one_takes_the_max():
    # n = 3: ceil(4 * 0.8) = 4 > 3
    assert conformal_offsets([1.0, 3.0, 2.0], [0.0] * 3, [0.0] * 3) == 3.0


def test_offset_nan_aware_and_empty():
    y = [1.0, 2.0, NAN, 3.0, 4.0]
    assert conformal_offsets(y, [0.0] * 5, [0.0] * 5) == 4.0  # n = 4 -> max
    assert conformal_offsets([], [], []) == 0.0
    assert conformal_offsets([NAN], [0.0], [1.0]) == 0.0
    with pytest.raises(ValueError):
        conformal_offsets([1.0], [0.0], [2.0], coverage=1.0)


def test_too_wide_intervals_get_a_negative_offset():
    rng = np.random.default_rng(0)
    y = rng.normal(size=1000)
    q = conformal_offsets(y, np.full(1000, -5.0), np.full(1000, 5.0))
    assert q < -3.0
    lo, hi = apply_offsets(np.full(1000, -5.0), np.full(1000, 5.0), q)
    assert coverage(y, lo, hi) == pytest.approx(0.8, abs=0.01)


def test_apply_offsets_widens_and_never_inverts():
    lo, hi = apply_offsets(np.array([1.0, 2.0]), np.array([3.0, 4.0]), 0.5)
    np.testing.assert_allclose(lo, [0.5, 1.5])
    np.testing.assert_allclose(hi, [3.5, 4.5])
    # a large negative offset: both ends stop at the median
    lo, hi = apply_offsets([1.0, 2.0], [3.0, 4.0], -5.0, mid=[2.5, 2.2])
    np.testing.assert_allclose(lo, [2.5, 2.2])
    np.testing.assert_allclose(hi, [2.5, 2.2])
    # a small one narrows but keeps lo <= mid <= hi
    lo, hi = apply_offsets([1.0], [3.0], -0.5, mid=[1.2])
    np.testing.assert_allclose(lo, [1.2])
    np.testing.assert_allclose(hi, [2.5])
    # without a median: the ends meet at the centre
    lo, hi = apply_offsets([1.0, 0.0], [3.0, 10.0], -2.0)
    np.testing.assert_allclose(lo, [2.0, 2.0])
    np.testing.assert_allclose(hi, [2.0, 8.0])


def test_apply_offsets_broadcasts_per_step():
    lo = np.zeros((3, 2))
    hi = np.ones((3, 2))
    new_lo, new_hi = apply_offsets(lo, hi, [0.1, 0.2])
    np.testing.assert_allclose(new_lo, np.tile([-0.1, -0.2], (3, 1)))
    np.testing.assert_allclose(new_hi, np.tile([1.1, 1.2], (3, 1)))


def _frame(ticker: str, step: int, n: int, scale: float, rng) -> pd.DataFrame:
    """Too-narrow intervals: the true 80 % interval is +-1.28 sigma, these are +-0.5 sigma."""
    sigma = scale * rng.uniform(0.5, 1.5, n)
    y = sigma * rng.standard_normal(n)
    return pd.DataFrame({"ticker": ticker, "step": step, "actual": y, "p10": -0.5 * sigma, "p90": 0.5 * sigma})


def test_calibrate_per_ticker_and_step_with_pooled_fallback():
    rng = np.random.default_rng(1)
    frame = pd.concat(
        [
            _frame("AAA", 1, 300, 1.0, rng),
            _frame("AAA", 2, 300, 3.0, rng),
            _frame("BBB", 1, 10, 1.0, rng),  # too few rows: pooled
            _frame("BBB", 2, 300, 0.2, rng),
        ],
        ignore_index=True,
    )
    frame.loc[0, "actual"] = NAN
    offsets = calibrate(frame)
    assert set(offsets) == {"AAA", "BBB"}
    assert all(len(v) == 2 for v in offsets.values())
    assert json.loads(json.dumps(offsets)) == offsets
    assert all(type(v) is float for values in offsets.values() for v in values)

    aaa1 = frame[(frame.ticker == "AAA") & (frame.step == 1)]
    assert offsets["AAA"][0] == conformal_offsets(aaa1.actual, aaa1.p10, aaa1.p90)
    step1 = frame[frame.step == 1]
    assert offsets["BBB"][0] == conformal_offsets(step1.actual, step1.p10, step1.p90)
    bbb2 = frame[(frame.ticker == "BBB") & (frame.step == 2)]
    assert offsets["BBB"][1] == conformal_offsets(bbb2.actual, bbb2.p10, bbb2.p90)
    # wider errors at step 2 for AAA, much narrower for BBB
    assert offsets["AAA"][1] > offsets["AAA"][0] > offsets["BBB"][1] > 0


def test_calibrate_missing_step_uses_pooled_and_empty_frame():
    # A has only step 1 rows (actual on the lower end: score 0), B only step 2 rows
    # (actual 2 above the upper end: score 2); each borrows the other step's pooled offset
    frame = pd.DataFrame(
        {
            "ticker": ["A"] * 25 + ["B"] * 25,
            "step": [1] * 25 + [2] * 25,
            "actual": np.r_[np.arange(25.0), np.arange(25.0) + 3],
            "p10": np.arange(50.0) % 25,
            "p90": np.arange(50.0) % 25 + 1,
        }
    )
    offsets = calibrate(frame)
    assert offsets == {"A": [0.0, 2.0], "B": [0.0, 2.0]}
    assert calibrate(frame.iloc[0:0]) == {}
    with pytest.raises(ValueError):
        calibrate(frame.drop(columns="p90"))


def test_calibrated_intervals_reach_nominal_coverage_on_a_fresh_sample():
    rng = np.random.default_rng(7)
    validation = pd.concat([_frame("AAA", 1, 2000, 1.0, rng), _frame("AAA", 2, 2000, 2.0, rng)], ignore_index=True)
    offsets = calibrate(validation)
    for step, scale in ((1, 1.0), (2, 2.0)):
        fresh = _frame("AAA", step, 5000, scale, rng)
        raw = coverage(fresh.actual, fresh.p10, fresh.p90)
        assert raw < 0.5  # the raw intervals really are too narrow
        lo, hi = apply_offsets(fresh.p10, fresh.p90, offsets["AAA"][step - 1], mid=np.zeros(5000))
        assert coverage(fresh.actual, lo, hi) == pytest.approx(0.8, abs=0.03)


_QUARTERS = st.integers(-400, 400).map(lambda i: i / 4)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(_QUARTERS, _QUARTERS, st.integers(0, 40).map(lambda i: i / 4)), min_size=1),
    st.sampled_from([0.5, 0.8, 0.9]),
)
def test_in_sample_coverage_is_at_least_nominal(rows, level):
    y = np.array([r[0] for r in rows])
    centre = np.array([r[1] for r in rows])
    half = np.array([r[2] for r in rows])
    q = conformal_offsets(y, centre - half, centre + half, coverage=level)
    lo, hi = apply_offsets(centre - half, centre + half, q, mid=centre)
    assert coverage(y, lo, hi) >= level


_DISTRIBUTIONS = {
    "normal": lambda rng, n: rng.standard_normal(n),
    "student3": lambda rng, n: rng.standard_t(3, n),
    "uniform": lambda rng, n: rng.uniform(-1.0, 1.0, n),
    "skewed": lambda rng, n: rng.exponential(1.0, n) - 1.0,
}


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_cal=st.integers(1000, 2000),
    dist=st.sampled_from(sorted(_DISTRIBUTIONS)),
    raw_half=st.floats(0.05, 5.0),
    bias=st.floats(-1.0, 1.0),
)
def test_coverage_on_exchangeable_data(seed, n_cal, dist, raw_half, bias):
    rng = np.random.default_rng(seed)
    draw = _DISTRIBUTIONS[dist]
    n_test = 4000
    y = draw(rng, n_cal + n_test)
    centre = np.full(n_cal + n_test, bias)
    lo, hi = centre - raw_half, centre + raw_half
    frame = pd.DataFrame({"ticker": "X", "step": 1, "actual": y[:n_cal], "p10": lo[:n_cal], "p90": hi[:n_cal]})
    offset = calibrate(frame)["X"][0]
    new_lo, new_hi = apply_offsets(lo[n_cal:], hi[n_cal:], offset, mid=centre[n_cal:])
    assert np.all(new_lo <= new_hi)
    # marginal guarantee >= 0.8; the tolerance covers the sampling noise of both samples
    assert coverage(y[n_cal:], new_lo, new_hi) >= 0.8 - 0.06
    assert math.isfinite(offset)
