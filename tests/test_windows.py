"""Invariants of the window index, checked over random ticker histories with Hypothesis."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import make_bars

from forecaster.errors import DataError
from forecaster.features import Scaler, make_arrays
from forecaster.windows import Splits, build_windows, make_splits

SESSIONS = pd.bdate_range("2020-01-01", periods=400)


def frame(start: int, end: int, seed: int = 0) -> pd.DataFrame:
    """Bars on SESSIONS[start:end]: tickers built from the same SESSIONS share their dates."""
    return make_bars(str(SESSIONS[start].date()), end - start, seed=seed)


histories = st.lists(st.integers(0, 300), min_size=1, max_size=4)  # listing offsets
params = st.tuples(st.integers(2, 15), st.integers(1, 5), st.integers(5, 40), st.integers(5, 40))


def windows_for(starts, L, H, val, test):
    """Bars, splits and windows. An example where no ticker has the training sessions for one
    window is discarded, once the refusal is checked (``test_every_ticker_too_short_is_an_error``
    pins that case)."""
    bars = {f"T{i}": frame(s, 400, seed=i) for i, s in enumerate(starts)}
    splits = make_splits(bars, val, test)
    try:
        ws = build_windows(bars, L, H, splits)
    except DataError as e:
        assert "no ticker has enough history" in str(e), e
        ws = None
    assume(ws is not None)
    return bars, splits, ws


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories, params)
def test_window_invariants(starts, p):
    L, H, val, test = p
    bars, splits, ws = windows_for(starts, L, H, val, test)
    all_ends = ws.ends()
    per_split = {s: ws.ends(s) for s in ("train", "val", "test")}
    assert sum(len(e) for e in per_split.values()) == len(all_ends)
    # every kept ticker has a training window and runs to the last session, and val_days and
    # test_days are at least the horizon: no split is empty, so the checks below always run
    assert all(len(e) > 0 for e in per_split.values()), {k: len(e) for k, e in per_split.items()}
    for name, ends in per_split.items():
        code = ("train", "val", "test").index(name)
        for t in ends:
            k = int(np.searchsorted(ws.offsets, t, side="right") - 1)
            lo, hi = ws.offsets[k], ws.offsets[k + 1]
            # inputs and targets inside one ticker
            assert lo <= t - L + 1 and t + H < hi
            # targets strictly after inputs
            assert ws.dates[t + 1] > ws.dates[t]
            # all targets in the window's split: no window crosses a split boundary
            assert (ws.split[t + 1 : t + H + 1] == code).all()
            # the split is that of the first target date
            assert splits.code(ws.dates[t + 1 : t + 2])[0] == code


@settings(max_examples=25, deadline=None)
@given(histories, params)
def test_window_count_formula(starts, p):
    L, H, val, test = p
    _, splits, ws = windows_for(starts, L, H, val, test)
    expected = 0
    for k in range(len(ws.tickers)):
        codes = ws.split[ws.offsets[k] : ws.offsets[k + 1]]
        for c in range(3):
            n_c = int((codes == c).sum())
            # a split of n_c rows holds n_c - H + 1 target blocks; the ticker's first window
            # also needs L input rows, so a split starting at row `first` loses max(0, L - first)
            first = int(np.argmax(codes == c)) if n_c else 0
            usable = n_c - H + 1 - max(0, L - first)
            expected += max(0, usable) if n_c else 0
    assert len(ws.ends()) == expected


@settings(max_examples=25, deadline=None)
@given(histories, params)
def test_scaler_sees_training_rows_only(starts, p):
    L, H, val, test = p
    bars, splits, ws = windows_for(starts, L, H, val, test)
    for sym in ws.tickers:
        a = make_arrays(bars[sym])
        train = a.features[pd.DatetimeIndex(a.dates) < splits.val_start]
        assert ws.scalers[sym] == Scaler.fit(train)
        # wrecking every non-training bar leaves the scaler unchanged
        wrecked = bars[sym].copy()
        wrecked.loc[wrecked.index >= splits.val_start, ["close", "high", "open", "low"]] *= 7.0
        again = build_windows({sym: wrecked}, L, H, splits)
        assert again.scalers[sym] == ws.scalers[sym]


def test_short_ticker_is_skipped_with_its_reason():
    bars = {"LONG": frame(0, 400), "SHORT": frame(330, 400)}
    splits = make_splits(bars, 30, 30)
    ws = build_windows(bars, 20, 5, splits)
    assert ws.tickers == ["LONG"]
    assert ws.skipped["SHORT"].startswith("10 bars in the training split, need at least 26")


@pytest.mark.parametrize(("start", "kept"), [(314, True), (315, False)])
def test_a_ticker_with_just_enough_training_bars_for_one_window_is_trained(start, kept):
    """Lookback 20 + horizon 5, and the bar before them for the first return: 26 bars before
    the validation split are one training window; 25 are too few, skipped with the reason."""
    bars = {"LONG": frame(0, 400), "EDGE": frame(start, 400, seed=1)}
    splits = make_splits(bars, 30, 30)
    assert (bars["EDGE"].index < splits.val_start).sum() == 340 - start  # 26 or 25
    ws = build_windows(bars, 20, 5, splits)
    if kept:
        assert ws.tickers == ["EDGE", "LONG"] and ws.skipped == {}
        edge = ws.ends("train")[ws.ticker_id[ws.ends("train")] == ws.names.index("EDGE")]
        assert len(edge) == 1
    else:
        assert ws.tickers == ["LONG"]
        reason = (
            "25 bars in the training split, need at least 26 "
            "(lookback 20 + horizon 5, plus the bar before them for the first return)"
        )
        assert ws.skipped == {"EDGE": reason}


def test_every_ticker_too_short_is_an_error():
    bars = {"A": frame(340, 400)}
    with pytest.raises(DataError, match="A"):
        build_windows(bars, 50, 5, make_splits(bars, 20, 20))


def test_a_universe_too_short_names_ten_tickers_and_counts_the_rest():
    bars = {f"T{i:02d}": frame(340, 400, seed=i) for i in range(25)}
    with pytest.raises(DataError) as e:
        build_windows(bars, 50, 5, make_splits(bars, 20, 20))
    msg = str(e.value)
    assert msg.startswith("no ticker has enough history: T00: ")
    assert msg.count("bars in the training split") == 9 and "T08: " in msg and "T09" not in msg
    assert msg.endswith("; and 16 more tickers")


def test_a_ticker_with_one_bar_too_few_for_a_window_is_an_error_naming_it_when_forecasting():
    """With the run's scalers (evaluate, predict): lookback 10 takes 11 bars, the first one for
    the first return. A ticker with only 10 is refused with a DataError that names it and says
    how many it has and needs, rather than kept without a window; 11 make one window."""
    bars = {"A": frame(0, 400, 1), "B": frame(0, 400, 2)}
    splits = make_splits(bars, 50, 50)
    trained = build_windows(bars, 10, 3, splits)
    for n, refused in ((10, True), (11, False)):
        short = {"A": bars["A"], "B": bars["B"].iloc[-n:]}
        if refused:
            with pytest.raises(DataError) as e:
                build_windows(short, 10, 3, splits, trained.scalers, trained.tickers)
            assert str(e.value) == "B: only 10 bars, need at least 11 for lookback 10"
        else:
            ws = build_windows(short, 10, 3, splits, trained.scalers, trained.tickers)
            b = ws.names.index("B")
            assert ws.offsets[b + 1] - ws.offsets[b] == 10  # 10 rows: one window of 10


def test_the_interval_widening_of_a_short_ticker_is_finite_from_its_first_row():
    """target_scale "ticker": the intervals are widened by an EWMA volatility whose half-life
    (30) is longer than the ticker's history (a ticker listed 15 sessions ago, lookback 10).
    Every row has a widening (the EWMA of the returns so far), so its forecasts have intervals,
    not NaN quantiles."""
    bars = {"A": frame(0, 400, 1), "B": frame(0, 400, 2)}
    splits = make_splits(bars, 50, 50)
    trained = build_windows(bars, 10, 3, splits, target_scale="ticker", vol_halflife=30)
    short = {"A": bars["A"], "B": bars["B"].iloc[-15:]}
    ws = build_windows(short, 10, 3, splits, trained.scalers, trained.tickers, target_scale="ticker", vol_halflife=30)
    b = ws.names.index("B")
    vol = ws.vol[ws.offsets[b] : ws.offsets[b + 1]]
    assert len(vol) == 14 and np.isfinite(vol).all() and (vol > 0).all()
    first_return = np.log(bars["B"]["close"].iloc[-14] / bars["B"]["close"].iloc[-15])
    assert vol[0] == pytest.approx(abs(first_return) / ws.scalers["B"].ret_std)  # the EWMA of one return


def test_batches_are_gathered_from_the_stacked_rows():
    bars = {"A": frame(0, 400, 1), "B": frame(200, 400, 2)}
    splits = make_splits(bars, 50, 50)
    ws = build_windows(bars, 10, 3, splits)
    ends = ws.ends("train")[[0, -1]]
    x, tid = ws.inputs(ends)
    assert x.shape == (2, 10, ws.x.shape[1])
    np.testing.assert_array_equal(x[1], ws.x[ends[1] - 9 : ends[1] + 1])
    y = ws.targets(ends)
    expected = (ws.log_close[ends[0] + 2] - ws.log_close[ends[0]]) / (ws.scale[ends[0]] * np.sqrt(2))
    assert y[0, 1] == pytest.approx(expected, rel=1e-5)
    # the stacked arrays are the only copy: a window is an index, not an array
    assert ws.x.shape[0] == sum(len(b) - 1 for b in bars.values())


def test_inputs_equal_a_row_by_row_gather_for_every_window():
    bars = {"A": frame(0, 400, 1), "B": frame(200, 400, 2)}
    ws = build_windows(bars, 10, 3, make_splits(bars, 50, 50))
    ends = np.random.default_rng(0).permutation(np.concatenate([ws.ends(), ws.origins("test")]))
    x, tid = ws.inputs(ends)
    np.testing.assert_array_equal(x, ws.x[ends[:, None] + np.arange(-9, 1)])
    np.testing.assert_array_equal(tid, ws.ticker_id[ends])
    x[:] = 0  # a copy: the stacked rows are untouched
    assert np.abs(ws.x).sum() > 0


@pytest.mark.parametrize("target_scale", ["local", "ticker"])
def test_targets_are_divided_by_the_scale_at_the_origin(target_scale):
    """local: the range-based volatility at the window's last row (nothing after it), so the
    targets are returns in units of the volatility known when the forecast is made; ticker: one
    training volatility per ticker, with the intervals widened by the recent volatility instead."""
    bars = {"A": frame(0, 400, 1), "B": frame(200, 400, 2)}
    splits = make_splits(bars, 50, 50)
    ws = build_windows(bars, 10, 3, splits, target_scale=target_scale)
    ends = ws.ends("train")
    np.testing.assert_allclose(ws.target_scale(ends), ws.scale[ends][:, None] * np.sqrt([1, 2, 3]))
    if target_scale == "local":
        a = make_arrays(bars["B"])
        np.testing.assert_allclose(ws.scale[ws.offsets[1] :], a.local_vol)
        assert (ws.vol == 1).all()
        # a window's scale ignores every bar after its last row
        later = bars["B"].copy()
        later.iloc[300:, :4] *= 3.0
        again = build_windows({"A": bars["A"], "B": later}, 10, 3, splits, target_scale=target_scale)
        cut = ws.offsets[1] + 298  # the row of bar 299 (the first bar has no row)
        np.testing.assert_array_equal(again.scale[:cut], ws.scale[:cut])
    else:
        for k, sym in enumerate(ws.tickers):
            rows = ws.scale[ws.offsets[k] : ws.offsets[k + 1]]
            assert (rows == ws.scalers[sym].ret_std).all()
        assert not (ws.vol == 1).all()
    with pytest.raises(ValueError, match="target scale"):
        build_windows(bars, 10, 3, splits, target_scale="daily")


def test_walk_forward_origins_cover_each_test_session_once():
    bars = {"A": frame(0, 400), "B": frame(100, 400)}
    splits = make_splits(bars, 40, 30)
    ws = build_windows(bars, 10, 5, splits)
    o = ws.origins("test")
    assert len(o) == 2 * 30
    first_targets = ws.dates[o + 1]
    assert (pd.DatetimeIndex(first_targets) >= splits.test_start).all()
    assert len(ws.ends("test")) == 2 * (30 - 5 + 1)


def test_splits_round_trip_and_count_from_the_latest_date():
    bars = {"A": frame(0, 300), "B": frame(0, 400)}
    s = make_splits(bars, 40, 30)
    assert s.test_start == SESSIONS[370] and s.val_start == SESSIONS[330]
    assert Splits.from_dict(s.to_dict()) == s


def test_not_enough_sessions_for_the_splits():
    with pytest.raises(DataError, match="not enough"):
        make_splits({"A": frame(0, 50)}, 30, 30)


@pytest.mark.parametrize(("n", "said"), [(1, "only 1 session in the data"), (3, "only 3 sessions in the data")])
def test_splits_of_too_few_sessions_say_how_many(n, said):
    with pytest.raises(DataError) as e:
        make_splits({"AAA": make_bars("2024-01-02", n)}, 2, 2)
    assert str(e.value).startswith(f"{said}: not enough for val_days=2 + test_days=2 plus training")
