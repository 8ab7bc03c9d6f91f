"""Extreme but legal price series: halted stocks, prices that never move, penny and BRK.A-like
prices, wild jumps. Each test builds the bars and calls the library where the behaviour lives."""

import numpy as np
import pandas as pd
from support import make_bars

from forecaster.baselines import GarchParams, drift, fit_garch, garch, garch_volatility, mean, naive
from forecaster.features import FEATURES, MIN_VOL, make_arrays
from forecaster.intervals import tracked_scales
from forecaster.store import load_csv
from forecaster.synthetic import generate_bars, write_csv
from forecaster.windows import Splits, build_windows

RATE = 0.05


def halted(bars: pd.DataFrame, start: int, stop: int) -> pd.DataFrame:
    """``bars`` with the sessions ``start`` to ``stop - 1`` halted: no trade, every price the
    close before, no volume."""
    out = bars.copy()
    last = float(out["close"].iloc[start - 1])
    out.iloc[start:stop, :4] = last
    out.iloc[start:stop, 4] = 0.0
    # the prices after the halt move on from where it stopped
    out.iloc[stop:, :4] = out.iloc[stop:, :4].to_numpy() * (last / float(bars["close"].iloc[stop - 1]))
    return out


def test_a_halt_keeps_the_local_volatility_it_had_before_it():
    plain = make_bars("2015-01-01", 700, seed=3)
    bars = halted(plain, 200, 500)  # 300 sessions without a trade
    a = make_arrays(bars)
    before = a.local_vol[198]  # row t is bar t + 1: the last bar before the halt
    during = a.local_vol[199:499]
    np.testing.assert_allclose(during, before)  # carried over, not decayed towards the floor
    assert before > 10 * MIN_VOL
    # after it, the first session's return reads in units of the volatility it traded at
    zret = a.features[:, FEATURES.index("zret")]
    assert np.abs(zret[499:]).max() < 10
    # a stock that never moved from its first bar still sits at the floor
    flat = plain.copy()
    flat[["open", "high", "low", "close"]] = 25.0
    f = make_arrays(flat)
    assert (f.local_vol == MIN_VOL).all() and np.isfinite(f.features).all()


def test_a_halt_in_adjusted_prices_keeps_the_local_volatility(tmp_path):
    """Prices with an Adj Close (Yahoo's): open, high and low are scaled by adj close / close,
    and a halted bar's high of 40.1 became 24.500000000000004 beside its close of 24.5. The
    halt was not seen as one, and its sessions brought the local volatility down."""
    bars = halted(make_bars("2015-01-01", 700, seed=3), 200, 500)
    bars[["open", "high", "low", "close"]] *= 40.1 / bars["close"].iloc[199]
    raw = bars.round(4)
    assert (raw.iloc[200:500, :4] == 40.1).all().all()
    adj = (raw["close"] * 24.5 / 40.1).round(6)
    frame = raw.rename(columns=str.title).assign(**{"Adj Close": adj}).rename_axis("Date")
    frame.to_csv(tmp_path / "HALT.csv")
    a = make_arrays(load_csv(tmp_path, "HALT"))
    assert a.still[199:499].all()
    np.testing.assert_allclose(a.local_vol[199:499], a.local_vol[198])
    # a session whose only move is its gap (high = low = close, away from the close before)
    # moved: it is no halt
    gap = raw.copy()
    gap.iloc[300:500, :4] = 40.2
    assert not make_arrays(gap).still[299] and make_arrays(gap).still[300:499].all()


def test_a_halt_does_not_shrink_the_tracked_interval_scale():
    bars = {"HALT": halted(make_bars("2015-01-01", 900, seed=5), 500, 800)}
    dates = bars["HALT"].index
    ws = build_windows(bars, 20, 3, Splits(val_start=dates[-500], test_start=dates[-450]))
    ends = ws.origins("test")
    # intervals of +-1 local volatility around no move: a normal session is outside one about a
    # third of the time, a halted one inside whatever the scale
    q = np.zeros((len(ends), 3, 3), np.float32)
    q[:, :, 0], q[:, :, 2] = -1.0, 1.0
    scale, _ = tracked_scales(q, ws, ends, {"HALT": [1.0, 1.0, 1.0]}, RATE)
    day = ws.dates[ends]
    first_halted = np.searchsorted(day, dates[500].to_datetime64())
    after = np.searchsorted(day, dates[800].to_datetime64())
    # from the origin whose every outcome is halted to the last one before trading starts again,
    # the scale stays where the outcomes before the halt left it
    during = scale[first_halted + 3 : after]
    np.testing.assert_allclose(during, np.broadcast_to(during[0], during.shape), rtol=1e-12)
    assert 0.5 < scale[after - 1, 0] < 2


def test_the_outcomes_over_a_halt_are_those_of_its_sessions_alone():
    """An origin's h-step outcome is left out of the tracking exactly when the h sessions after
    it are all halted: the last origin before the halt has every outcome halted, the last
    origin of the halt none, and an origin inside it those that end before trading resumes."""
    bars = {"HALT": halted(make_bars("2015-01-01", 80, seed=2), 30, 40)}  # bars 30 to 39: rows 29 to 38
    dates = bars["HALT"].index
    ws = build_windows(bars, 5, 3, Splits(dates[-20], dates[-10]))
    np.testing.assert_array_equal(np.flatnonzero(ws.still), np.arange(29, 39))
    unmoved = ws.unmoved(np.array([27, 28, 36, 37, 38, 39]))
    expected = [[0, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]]
    np.testing.assert_array_equal(unmoved, np.array(expected, bool))


def test_a_halt_keeps_the_interval_widening_of_a_run_scaled_by_the_tickers_volatility():
    """model.target_scale = "ticker" (runs made before the local scale): the EWMA volatility
    that widens the intervals counted a halt's sessions as returns of 0, and 300 of them
    brought it, and every interval, to half a percent of its width."""
    bars = {"HALT": halted(make_bars("2015-01-01", 900, seed=5), 500, 800)}
    dates = bars["HALT"].index
    ws = build_windows(bars, 20, 3, Splits(dates[-500], dates[-450]), target_scale="ticker")
    before, during = ws.vol[498], ws.vol[499:799]  # row t is bar t + 1
    np.testing.assert_allclose(during, before)
    assert 0.5 < before < 2


def test_generated_penny_stock_prices_keep_their_moves(tmp_path):
    bars = generate_bars("2020-01-01", "2020-12-31", seed=1, start_price=1e-4)
    close = bars["close"].to_numpy()
    assert (bars[["open", "high", "low", "close"]] > 0).all().all()
    assert np.count_nonzero(np.diff(close)) > 0.9 * (len(close) - 1)  # not a price that never moves
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    # the file holds the frame's numbers, and reads back as valid bars
    path = write_csv(bars, tmp_path / "PENNY.csv")
    back = pd.read_csv(path)
    np.testing.assert_array_equal(back["Close"].to_numpy(), close)
    np.testing.assert_array_equal(back["Low"].to_numpy(), bars["low"].to_numpy())
    assert path.read_text().splitlines()[1].startswith("2020-01-02,0.0000")


def test_point_baselines_of_a_price_that_never_moved_are_that_price():
    close = np.full(400, 10.0)  # exp(log 10) is 10.000000000000002
    origins = np.arange(1, 397)
    for baseline in (naive, drift, mean):
        np.testing.assert_array_equal(baseline(close, origins, 3), 10.0)
    # a stretch that stopped moving: the mean of its last returns is 0 there too
    moving = np.r_[10.0 * np.exp(np.cumsum(np.full(100, 0.01))), np.full(300, 12.0)]
    np.testing.assert_array_equal(mean(moving, [399], 2, window=250), 12.0)


# arch meets alpha >= 0 and alpha + gamma >= 0 only to its optimiser's tolerance: this fit was
# found on a calm price that fell 19-fold in one day (a -294 % return in arch's percent units)
EDGE_FIT = GarchParams(omega=0.0028413, alpha=0.0, gamma=-6.4257e-07, beta=0.0, nu=2.05)


def crashed_closes() -> np.ndarray:
    rng = np.random.default_rng(11)
    returns = 8e-4 * rng.standard_normal(600)
    returns[550] = np.log(1 / 19)  # legal: a close at most 20 times away from the one before
    return 4e5 * np.exp(np.cumsum(returns))


def test_garch_bounds_after_a_crash_are_finite_with_a_fit_at_arch_tolerance():
    close = crashed_closes()
    origins = np.arange(500, 599)
    q = garch(close, origins, 3, params=EDGE_FIT)
    assert np.isfinite(q).all()
    assert (q[:, :, 0] > 0).all() and (q[:, :, 0] <= q[:, :, 1]).all() and (q[:, :, 1] <= q[:, :, 2]).all()
    assert (garch_volatility(close, origins, params=EDGE_FIT) >= 0).all()


def test_a_garch_fit_is_kept_within_arch_constraints(monkeypatch):
    import arch.univariate

    class Fitted:
        params = np.array([EDGE_FIT.omega, EDGE_FIT.alpha, EDGE_FIT.gamma, EDGE_FIT.beta, EDGE_FIT.nu])
        convergence_flag = 0

    class Model:
        def fit(self, **_):
            return Fitted()

    monkeypatch.setattr(arch.univariate, "arch_model", lambda *a, **k: Model())
    fit = fit_garch(np.diff(np.log(crashed_closes())) * 100)
    assert fit.alpha >= 0 and fit.alpha + fit.gamma >= 0 and fit.beta >= 0
    assert (fit.omega, fit.nu) == (EDGE_FIT.omega, EDGE_FIT.nu)
