import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.features import FEATURES, MIN_VOL, Scaler, make_arrays, range_variance
from forecaster.store import validate_bars


def bars(n=30, seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    idx = pd.bdate_range("2024-01-01", periods=n, name="date")
    return pd.DataFrame(
        {
            "open": close * 1.001,
            "high": close * 1.02,
            "low": close * 0.98,
            "close": close,
            "volume": rng.integers(1000, 5000, n).astype(float),
        },
        index=idx,
    )


def test_features_use_only_the_past_and_present():
    df = bars()
    a = make_arrays(df)
    assert a.features.shape == (len(df) - 1, len(FEATURES))
    np.testing.assert_allclose(a.features[:, 0], np.diff(np.log(df["close"])))
    np.testing.assert_allclose(a.features[:, 1], np.log(1.02 / 0.98))
    # changing a future bar never changes an earlier feature row, nor the local volatility
    df2 = df.copy()
    df2.iloc[20, df2.columns.get_loc("close")] *= 1.5
    b = make_arrays(df2)
    np.testing.assert_array_equal(a.features[:19], b.features[:19])
    np.testing.assert_array_equal(a.local_vol[:19], b.local_vol[:19])
    assert not np.allclose(a.local_vol[19:], b.local_vol[19:])


def test_day_of_week_features_distinguish_weekdays():
    a = make_arrays(bars(11))
    assert FEATURES[-2:] == ["dow_sin", "dow_cos"]
    dows = {tuple(np.round(r, 6)) for r in a.features[:, -2:]}
    assert len(dows) == 5


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.integers(10, 200))
def test_scaler_round_trip(seed, n):
    a = make_arrays(bars(n, seed))
    sc = Scaler.fit(a.features)
    z = sc.transform(a.features)
    k = len(FEATURES) - 2
    assert len(sc.mean) == len(sc.std) == k
    back = z[:, :k] * np.asarray(sc.std) + np.asarray(sc.mean)  # standardised, nothing lost
    np.testing.assert_allclose(back, a.features[:, :k], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(z[:, k:], a.features[:, k:].astype(np.float32))  # calendar: as it is
    z = sc.transform(a.features)[:, :k]
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
    assert Scaler.from_dict(sc.to_dict()) == sc


def test_scaler_constant_column_does_not_divide_by_zero():
    f = np.ones((10, len(FEATURES)))
    sc = Scaler.fit(f)
    assert np.isfinite(sc.transform(f)).all()


def test_local_volatility_is_the_ewma_of_the_range_variance():
    df = bars(60)
    o, h, lo, c = (df[k].to_numpy() for k in ("open", "high", "low", "close"))
    # Garman-Klass plus the overnight gap, by hand, for one session
    t = 10
    gk = (
        (np.log(o[t] / c[t - 1])) ** 2
        + 0.5 * np.log(h[t] / lo[t]) ** 2
        - (2 * np.log(2) - 1) * np.log(c[t] / o[t]) ** 2
    )
    assert range_variance(o, h, lo, c)[t - 1] == pytest.approx(gk)
    a = make_arrays(df, halflife=5)
    want = np.sqrt(pd.Series(range_variance(o, h, lo, c)).ewm(halflife=5, min_periods=1).mean().to_numpy())
    np.testing.assert_allclose(a.local_vol, want)
    np.testing.assert_allclose(a.features[:, FEATURES.index("rvol")], np.log(want))
    # a range of +-2 % a day is about 1.3 % of daily volatility
    assert 0.005 < np.median(a.local_vol) < 0.03


def test_flat_bars_have_a_floor_volatility():
    df = bars(20)
    for k in ("open", "high", "low"):
        df[k] = df["close"]
    df["close"] = 100.0
    df["open"] = df["high"] = df["low"] = 100.0
    a = make_arrays(df)
    assert (a.local_vol == MIN_VOL).all() and np.isfinite(a.features).all()


def test_older_feature_lists_are_computed_as_recorded():
    old = ["ret", "range", "body", "dvol", "dow_sin", "dow_cos"]
    a, b = make_arrays(bars(), old), make_arrays(bars())
    newer = [FEATURES.index("rvol"), FEATURES.index("zret")]
    np.testing.assert_array_equal(a.features, np.delete(b.features, newer, axis=1))
    zret = b.features[:, FEATURES.index("zret")]
    np.testing.assert_allclose(zret, b.features[:, 0] / b.local_vol)  # the return in units of sigma_t


def test_zero_volume_is_finite():
    df = bars()
    df["volume"] = 0.0
    assert np.isfinite(make_arrays(df).features).all()


@pytest.mark.parametrize("n", [2, 3])
def test_tiny_frames(n):
    assert make_arrays(bars(n)).features.shape == (n - 1, len(FEATURES))


@pytest.mark.parametrize("last", ["2024-01-05", "2024-01-06", "2024-01-07"])  # Friday, Saturday, Sunday
def test_the_weekdays_after_a_weekend_bar_start_on_monday(last):
    # a bar dated on a weekend (a crypto pair, a Saturday session) is followed by Monday, Tuesday...
    from forecaster.features import dow_features, next_weekday_features

    got = next_weekday_features(np.array([last], dtype="datetime64[ns]"), 3)[0]
    want = dow_features(pd.bdate_range("2024-01-08", periods=3).to_numpy())
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize(("at", "factor", "edge"), [(12, 100.0, "high"), (12, 0.01, "low"), (5, 1.5, "high")])
def test_an_open_off_the_days_range_is_read_at_its_edge(at, factor, edge):
    # a bad print of the open (100x the high) would otherwise inflate the local volatility, and
    # so the intervals, for months after it; read at the range's edge it is an ordinary bar
    df = bars(60)
    bad = df.copy()
    bad.iloc[at, bad.columns.get_loc("open")] = df[edge].iloc[at] * factor
    at_edge = df.copy()
    at_edge.iloc[at, at_edge.columns.get_loc("open")] = df[edge].iloc[at]
    a, b = make_arrays(bad), make_arrays(at_edge)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.local_vol, b.local_vol)
    assert a.local_vol.max() < 0.05
    # an open inside the range is read as it is
    np.testing.assert_allclose(make_arrays(df).features[:, FEATURES.index("body")], np.log(1 / 1.001))


def test_the_weekdays_after_a_friday_before_a_holiday_skip_the_holiday_on_the_calendar():
    """The recursive strategy's later steps read the weekdays of the calendar's next sessions:
    after Friday 2025-01-17 New York is closed on Monday (Martin Luther King Day), so the next
    three sessions are Tuesday to Thursday; the plain next weekdays would say Monday to Wednesday."""
    from forecaster.features import dow_features, next_weekday_features

    friday = np.array(["2025-01-17", "2025-01-10"], dtype="datetime64[ns]")
    got = next_weekday_features(friday, 3, "XNYS")
    np.testing.assert_allclose(got[0], dow_features(pd.bdate_range("2025-01-21", periods=3).to_numpy()), atol=1e-12)
    np.testing.assert_allclose(got[1], dow_features(pd.bdate_range("2025-01-13", periods=3).to_numpy()), atol=1e-12)
    plain = next_weekday_features(friday, 3)
    np.testing.assert_allclose(plain[0], dow_features(pd.bdate_range("2025-01-20", periods=3).to_numpy()), atol=1e-12)
    # a day before a calendar's holiday data keeps the plain weekdays rather than failing
    before = np.array(["1985-01-04"], dtype="datetime64[ns]")
    np.testing.assert_allclose(next_weekday_features(before, 3, "XTKS"), next_weekday_features(before, 3), atol=1e-12)


@pytest.mark.parametrize(
    ("days", "calendar"),
    [
        (["2025-01-08", "2025-01-09", "2025-01-17"], "XNYS"),  # 01-09: New York closed (a day of mourning)
        (["2025-01-09"], "XNYS"),
        (["1996-12-27", "1997-01-02", "1997-01-03"], "XTKS"),  # XTKS's holiday data start in 1997
        (["2026-12-21", "2026-12-24", "2026-12-31"], "XSHG"),  # XSHG's end on 2026-12-31
    ],
)
def test_each_dates_next_sessions_are_the_calendars_whatever_dates_share_its_pass(days, calendar):
    """One look-up serves a pass: a date must get the same steps alone as beside others, the
    calendar's next sessions where it holds them (a day that is not a session included), else
    the next weekdays."""
    from forecaster.errors import ConfigError
    from forecaster.features import dow_features, next_weekday_features
    from forecaster.sessions import next_sessions

    dates = np.array(days, dtype="datetime64[ns]")
    together = next_weekday_features(dates, 8, calendar)
    for k, day in enumerate(dates):
        alone = next_weekday_features(dates[k : k + 1], 8, calendar)[0]
        np.testing.assert_allclose(together[k], alone, atol=1e-12)
        try:
            want = dow_features(next_sessions(day, 8, calendar).to_numpy())
        except ConfigError:  # beyond the calendar's data: the next weekdays
            want = next_weekday_features(dates[k : k + 1], 8)[0]
        np.testing.assert_allclose(alone, want, atol=1e-12, err_msg=str(day))


def test_a_missing_volume_reads_as_no_change_in_volume():
    """A missing volume was set to 0, so the log-volume change was about -8 and +8 (+-16
    standard deviations) on the two sides of each gap, and a last bar without one moved the
    forecast. It now takes the last known volume (the first known one at the start): no change."""
    raw = bars(30)
    holed = raw.copy()
    missing = [0, 1, 10, 11, 12, 29]  # at the start, a gap, the last bar
    holed.iloc[missing, holed.columns.get_loc("volume")] = np.nan
    clean = validate_bars(holed, "AAA")
    assert clean["volume"].iloc[[0, 1]].tolist() == [raw["volume"].iloc[2]] * 2
    assert clean["volume"].iloc[10:13].tolist() == [raw["volume"].iloc[9]] * 3
    assert clean["volume"].iloc[29] == raw["volume"].iloc[28]
    dvol = make_arrays(clean).features[:, FEATURES.index("dvol")]  # row t - 1 is bar t's change
    assert dvol[[0, 9, 10, 11, 28]].tolist() == [0.0] * 5
    assert np.abs(dvol).max() <= np.log(5000 / 1000) + 1e-9  # no more than the file's own volumes move


def test_each_rows_range_and_prices_are_its_own_sessions():
    """Row t - 1 of the arrays is bar t: its range is that day's high over low (not the day
    before's), and its close and log close are that day's, the ones the forecasts start from."""
    df = bars(30)
    df.iloc[10, df.columns.get_loc("high")] = df["close"].iloc[10] * 1.10  # one wide day
    a = make_arrays(df)
    want = np.log(df["high"].to_numpy()[1:] / df["low"].to_numpy()[1:])
    np.testing.assert_allclose(a.features[:, FEATURES.index("range")], want, rtol=1e-12)
    assert a.features[9, FEATURES.index("range")] == pytest.approx(np.log(1.10 / 0.98))
    np.testing.assert_array_equal(a.dates, df.index.to_numpy()[1:])
    np.testing.assert_array_equal(a.close, df["close"].to_numpy()[1:])
    np.testing.assert_allclose(a.log_close, np.log(df["close"].to_numpy()[1:]), rtol=1e-15)


def test_the_weekday_is_on_a_five_day_circle_friday_next_to_monday():
    """Monday is (sin 0, cos 1), and Friday lies as close to Monday as Tuesday does: the
    network sees the weekend as one step, as a 7-day circle would not have it."""
    from forecaster.features import dow_features

    week = dow_features(pd.bdate_range("2024-01-08", periods=5).to_numpy())  # Monday to Friday
    np.testing.assert_allclose(week[0], [0.0, 1.0], atol=1e-15)
    step = np.linalg.norm(np.diff(week, axis=0), axis=1)
    np.testing.assert_allclose(step, np.linalg.norm(week[4] - week[0]), rtol=1e-12)
    np.testing.assert_allclose(week[2], [np.sin(4 * np.pi / 5), np.cos(4 * np.pi / 5)], rtol=1e-12)


def test_the_scaler_records_the_return_std_and_leaves_a_constant_column_unscaled():
    """ret_std, the unit of the network's targets, is the std of the one-session returns (the
    first feature). A column constant in training (volume never changed) keeps std 1, so a
    later move of it enters as it is instead of as a 1e12-sigma input."""
    f = make_arrays(bars(200)).features.copy()
    f[:, FEATURES.index("dvol")] = 0.0
    sc = Scaler.fit(f)
    assert sc.ret_std == pytest.approx(f[:, 0].std(), rel=1e-12)
    assert sc.std[FEATURES.index("dvol")] == 1.0
    later = f[:3].copy()
    later[:, FEATURES.index("dvol")] = 0.5
    np.testing.assert_allclose(sc.transform(later)[:, FEATURES.index("dvol")], 0.5)


def test_the_volume_change_is_the_log_ratio_of_volumes_plus_one():
    df = bars(30)
    df.iloc[5, df.columns.get_loc("volume")] = 0.0  # no trade at all: still finite
    v = df["volume"].to_numpy()
    dvol = make_arrays(df).features[:, FEATURES.index("dvol")]
    np.testing.assert_allclose(dvol, np.log((v[1:] + 1) / (v[:-1] + 1)), rtol=1e-12)


def test_a_quiet_tickers_small_returns_are_standardised_not_left_as_constant():
    """Only a column that does not move (std under 1e-12) is left unscaled: a quiet ticker (a
    money-market fund, 0.01 % a day) still has its returns standardised, and their std is the
    unit of its targets."""
    df = bars(200)
    close = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 1e-4, len(df))))
    df["close"], df["open"], df["high"], df["low"] = close, close, close * 1.0001, close * 0.9999
    f = make_arrays(df).features
    sc = Scaler.fit(f)
    assert sc.ret_std == pytest.approx(f[:, 0].std(), rel=1e-12) and sc.ret_std < 2e-4
    z = sc.transform(f)[:, : len(sc.mean)]
    np.testing.assert_allclose(z[:, FEATURES.index("ret")].std(), 1.0, rtol=1e-4)


def test_no_dates_have_no_next_weekdays_on_a_calendar_either():
    from forecaster.features import next_weekday_features

    for calendar in (None, "XNYS"):
        assert next_weekday_features(np.array([], dtype="datetime64[ns]"), 3, calendar).shape == (0, 3, 2)
