"""The probabilistic baselines hist, ewma and garch (SPEC §8): definitions, causality, arch parity,
fallbacks, and calibration on a series whose true conditional distribution is known."""

import logging
import math
from statistics import NormalDist

import numpy as np
import pytest
from arch.univariate import StudentsT, arch_model
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster import baselines
from forecaster.baselines import (
    EWMA_LAMBDA,
    HIST_MIN_RETURNS,
    PROBABILISTIC_BASELINES,
    GarchParams,
    ewma,
    fit_garch,
    garch,
    garch_filter,
    garch_volatility,
    hist,
    naive,
    unit_t_quantile,
)
from forecaster.metrics import coverage, pinball

Z90 = NormalDist().inv_cdf(0.9)


def _prices(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50.0 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, n)))


def _gjr_series(n: int, seed: int, omega=0.02, alpha=0.02, gamma=0.15, beta=0.9, nu=5.0):
    """Closes driven by a GJR-GARCH(1,1)-t in percent, and the true variance of each return."""
    rng = np.random.default_rng(seed)
    z = rng.standard_t(nu, n) * math.sqrt((nu - 2) / nu)
    returns, variance = np.empty(n), np.empty(n)
    s2 = omega / (1 - alpha - gamma / 2 - beta)
    for t in range(n):
        variance[t] = s2  # of returns[t], the return ending at session t + 1
        returns[t] = math.sqrt(s2) * z[t]
        s2 = omega + (alpha + gamma * (returns[t] < 0)) * returns[t] ** 2 + beta * s2
    close = 50.0 * np.exp(np.concatenate(([0.0], np.cumsum(returns / 100))))
    return close, variance


def _pinball(actual, q):
    return pinball(actual, {0.1: q[:, 0], 0.5: q[:, 1], 0.9: q[:, 2]})


# ---------------------------------------------------------------- shared shape


@pytest.mark.parametrize("name", ["hist", "ewma", "garch"])
def test_shape_median_and_order(name):
    close = _prices(700)
    origins = np.arange(300, 700, 7)
    out = PROBABILISTIC_BASELINES[name](close, origins, 4)
    assert out.shape == (len(origins), 4, 3)
    # the median is the naive forecast, to the last bit: their point metrics are the same
    np.testing.assert_array_equal(out[:, :, 1], naive(close, origins, 4))
    assert np.all(np.isfinite(out))
    assert np.all(out[:, :, 0] < out[:, :, 1]) and np.all(out[:, :, 1] < out[:, :, 2])
    # the interval widens with the step
    assert np.all(np.diff(out[:, :, 2] - out[:, :, 0], axis=1) > 0)


@pytest.mark.parametrize("name", ["hist", "ewma", "garch"])
def test_forecasts_ignore_bars_after_the_origin(name):
    close = _prices(800, seed=3)
    changed = close.copy()
    changed[601:] *= np.exp(np.random.default_rng(4).normal(0, 0.1, 199))
    origins = np.array([600, 350, 500, 420])  # unsorted on purpose
    fn = PROBABILISTIC_BASELINES[name]
    np.testing.assert_array_equal(fn(close, origins, 3), fn(changed, origins, 3))


@pytest.mark.parametrize("name", ["hist", "ewma", "garch"])
def test_bad_inputs_are_rejected(name):
    fn = PROBABILISTIC_BASELINES[name]
    with pytest.raises(ValueError):
        fn(np.array([1.0, -2.0, 3.0]), np.array([1]), 1)
    with pytest.raises(ValueError):
        fn(_prices(10), np.array([10]), 1)
    with pytest.raises(ValueError):
        fn(_prices(10), np.array([5]), 0)


# ---------------------------------------------------------------- hist


def _hist_reference(close, origins, horizon, window):
    out = np.full((len(origins), horizon, 3), np.nan)
    logc = np.log(close)
    for i, o in enumerate(origins):
        out[i, :, 1] = close[o]
        for h in range(1, horizon + 1):
            ends = [t for t in range(o - window + 1, o + 1) if t >= h]
            sample = [logc[t] - logc[t - h] for t in ends]
            if len(sample) >= HIST_MIN_RETURNS:
                lo, hi = np.quantile(sample, [0.1, 0.9])
                out[i, h - 1, 0] = close[o] * math.exp(min(lo, 0.0))
                out[i, h - 1, 2] = close[o] * math.exp(max(hi, 0.0))
    return out


@pytest.mark.parametrize("window", [60, 500])
def test_hist_matches_loop_reference(window):
    close = _prices(900, seed=window)
    origins = np.array([0, 30, 52, 53, 60, 61, 200, 899, *range(700, 720)])
    got = hist(close, origins, 5, window=window)
    np.testing.assert_allclose(got, _hist_reference(close, origins, 5, window), rtol=1e-12)
    # too little history: NaN bounds, but always the median
    assert np.isnan(got[0, :, [0, 2]]).all() and np.isnan(got[1, :, [0, 2]]).all()
    assert np.all(np.isfinite(got[:, :, 1]))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 700),
    window=st.sampled_from([1, 2, 37, 60, 500]),
    ends=st.lists(st.integers(-5, 699), min_size=1, max_size=40),
    decimals=st.sampled_from([None, 2]),
    seed=st.integers(0, 2**16),
)
def test_window_quantiles_are_each_windows_own_to_the_last_bit(n, window, ends, decimals, seed):
    """Each end's quantiles are those of its own sorted window (numpy's linear method, the
    same arithmetic), to the last bit: with ties, scattered ends and windows cut by the start."""
    values = np.random.default_rng(seed).standard_t(3, n)
    if decimals is not None:
        values = np.round(values, decimals)  # ties
    ends = np.array([e for e in ends if e < n], dtype=np.int64)
    got = baselines._window_quantiles(values, ends, window, (0.1, 0.9))
    for i, e in enumerate(ends):
        sample = np.sort(values[max(0, e - window + 1) : e + 1]) if e >= 0 else []  # e < 0: no value yet
        for k, q in enumerate((0.1, 0.9)):
            if len(sample) < baselines.HIST_MIN_RETURNS:
                assert np.isnan(got[k, i])
                continue
            position = (len(sample) - 1) * q
            below = math.floor(position)
            low, high = sample[below], sample[min(below + 1, len(sample) - 1)]
            assert got[k, i] == low + (position - below) * (high - low)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 700),
    window=st.sampled_from([1, 60, 500]),
    starts=st.lists(st.integers(0, 120), min_size=1, max_size=6),
    ends=st.lists(st.integers(-5, 699), min_size=1, max_size=40),
    seed=st.integers(0, 2**16),
)
def test_window_quantiles_of_columns_starting_later_are_each_columns_own(n, window, starts, ends, seed):
    """A column that starts later (NaN before, as hist's longer steps do) gets, to the last bit,
    the quantiles of its own values alone: a NaN is never in a window, nor counted in it."""
    values = np.random.default_rng(seed).standard_t(3, (n, len(starts)))
    for j, start in enumerate(starts):
        values[:start, j] = np.nan
    ends = np.array([e for e in ends if e < n], dtype=np.int64)
    got = baselines._window_quantiles(values, ends, window, (0.1, 0.9))
    assert got.shape == (2, len(ends), len(starts))
    for j, start in enumerate(starts):
        alone = baselines._window_quantiles(values[start:, j], ends - start, window, (0.1, 0.9))
        # a window cut by the column's start holds fewer values: the same rule of at least
        # HIST_MIN_RETURNS values applies to what is there
        np.testing.assert_array_equal(got[:, :, j], alone)


def test_hist_uses_only_the_last_window_sessions():
    # calm for 600 sessions, then 100 wild ones: a 100-session window sees only the wild part
    rng = np.random.default_rng(5)
    returns = np.concatenate((rng.normal(0, 0.001, 600), rng.normal(0, 0.05, 100)))
    close = 100 * np.exp(np.concatenate(([0.0], np.cumsum(returns))))
    short = hist(close, np.array([700]), 1, window=100)[0, 0]
    long = hist(close, np.array([700]), 1, window=500)[0, 0]
    expected = np.quantile(returns[-100:], [0.1, 0.9])
    np.testing.assert_allclose(np.log(short[[0, 2]] / close[700]), expected, rtol=1e-12)
    assert long[2] - long[0] < short[2] - short[0]


def test_hist_bounds_never_cross_the_median():
    close = 10.0 * 1.01 ** np.arange(300)  # every return is +1 %: all quantiles above zero
    out = hist(close, np.array([299]), 2)
    assert out[0, 0, 0] == pytest.approx(close[299])
    assert out[0, 1, 2] == pytest.approx(close[299] * 1.01**2)


@pytest.mark.parametrize("name", ["hist", "ewma", "garch"])
@pytest.mark.parametrize("price", [10.0, 20.0, 156.743])
def test_a_price_that_never_moved_gets_bounds_at_the_close_to_the_bit(name, price):
    """exp(log 10) is 10.000000000000002: bounds built as exp(log close + 0) put p10 above a
    close that never moves, so every actual was a miss and the pinball ratio to it ~3e10."""
    flat = np.full(300, price)
    out = PROBABILISTIC_BASELINES[name](flat, np.arange(100, 299), 3)
    assert not np.isnan(out).any()
    assert (out == price).all()  # p10, p50 and p90 the close itself
    assert coverage(flat[101:], out[:, 0, 0], out[:, 0, 2]) == 1.0


@pytest.mark.parametrize("name", ["hist", "ewma", "garch"])
def test_bounds_never_cross_the_last_close_even_by_a_rounding_error(name):
    """Prices on a one-cent grid that rarely move: spreads of 0 or next to it."""
    rng = np.random.default_rng(4)
    close = 10.0 + 0.01 * np.cumsum(rng.random(600) < 0.02)
    out = PROBABILISTIC_BASELINES[name](close, np.arange(200, 599), 3)
    known = ~np.isnan(out[:, :, 0])
    assert known.any()
    assert (out[:, :, 0][known] <= out[:, :, 1][known]).all()
    assert (out[:, :, 2][known] >= out[:, :, 1][known]).all()
    assert (out[:, :, 1] == close[200:599, None]).all()


# ---------------------------------------------------------------- ewma


def test_ewma_is_the_riskmetrics_recursion():
    close = _prices(800, seed=7)
    returns = np.diff(np.log(close))
    # the RiskMetrics recursion, started at the first squared return; its start is forgotten
    # after a few hundred sessions (0.94**500 ~ 4e-14)
    s = returns[0] ** 2
    variance_after = {1: s}  # after the return ending at session t
    for t in range(2, len(close)):
        s = EWMA_LAMBDA * s + (1 - EWMA_LAMBDA) * returns[t - 1] ** 2
        variance_after[t] = s
    origins = np.array([600, 650, 799])
    got = ewma(close, origins, 3)
    for i, o in enumerate(origins):
        sd = math.sqrt(variance_after[o])
        for h in (1, 2, 3):
            assert got[i, h - 1, 2] == pytest.approx(close[o] * math.exp(Z90 * sd * math.sqrt(h)), rel=1e-10)
            assert got[i, h - 1, 0] == pytest.approx(close[o] * math.exp(-Z90 * sd * math.sqrt(h)), rel=1e-10)


def test_ewma_short_history_normalises_its_weights():
    close = np.array([100.0, 101.0, 99.0, *([100.0] * 30)])
    r = np.diff(np.log(close))
    # at origin 25: 25 returns, weights 0.94**k for the return k sessions back
    weights = EWMA_LAMBDA ** np.arange(25)
    expected = np.sum(weights * r[:25][::-1] ** 2) / weights.sum()
    got = ewma(close, np.array([25, 5]), 1)
    assert math.log(got[0, 0, 2] / close[25]) == pytest.approx(Z90 * math.sqrt(expected), rel=1e-10)
    assert np.isnan(got[1, 0, [0, 2]]).all()  # 5 returns are too few


# ---------------------------------------------------------------- garch


def test_garch_filter_and_forecast_match_arch():
    close, _ = _gjr_series(1600, seed=1)
    returns = 100 * np.diff(np.log(close))
    origin, window = 1500, 1200
    sample = returns[origin - window : origin]
    res = arch_model(sample, mean="Zero", vol="GARCH", p=1, o=1, q=1, dist="t", rescale=False).fit(disp="off")
    params = fit_garch(sample)
    np.testing.assert_allclose(
        [params.omega, params.alpha, params.gamma, params.beta, params.nu], res.params.to_numpy(), rtol=1e-10
    )
    path = garch_filter(sample, params)
    np.testing.assert_allclose(np.sqrt(path[:-1]), res.conditional_volatility, rtol=1e-10)

    horizon = 5
    variance = np.cumsum(res.forecast(horizon=horizon, reindex=False).variance.to_numpy()[-1])
    z = StudentsT().ppf(0.9, [params.nu])
    expected_hi = close[origin] * np.exp(z * np.sqrt(variance) / 100)
    expected_lo = close[origin] * np.exp(-z * np.sqrt(variance) / 100)
    got = garch(close, np.array([origin]), horizon, max_window=window)[0]
    np.testing.assert_allclose(got[:, 2], expected_hi, rtol=1e-9)
    np.testing.assert_allclose(got[:, 0], expected_lo, rtol=1e-9)
    vol = garch_volatility(close, np.array([origin]), max_window=window)
    assert vol[0] == pytest.approx(math.sqrt(variance[0]) / 100, rel=1e-9)


@pytest.mark.parametrize("level", [0.1, 0.5, 0.9])
def test_unit_t_quantile_is_archs_student_t_quantile(level):
    """The garch bounds' Student-t quantile, to the last bit, over arch's whole range of nu."""
    for nu in np.concatenate([np.linspace(2.05, 500.0, 997), [2.5, 4.0, 5.0, 30.0]]):
        assert unit_t_quantile(level, float(nu)) == float(StudentsT().ppf(level, [nu])), nu
    # scaled to unit variance: a t(5) quantile shrinks by sqrt(3/5), and far out it nears the normal's
    assert unit_t_quantile(0.9, 5.0) == pytest.approx(1.475884 * math.sqrt(3 / 5), rel=1e-6)
    assert unit_t_quantile(0.9, 500.0) == pytest.approx(Z90, rel=1e-3)


def test_garch_blocks_filter_forward_with_the_block_parameters(monkeypatch):
    close, _ = _gjr_series(1000, seed=2)
    returns = 100 * np.diff(np.log(close))
    fits = []
    real_fit = baselines.fit_garch

    def recording_fit(sample, start=None):
        fits.append((len(sample), start))
        return real_fit(sample, start)

    monkeypatch.setattr(baselines, "fit_garch", recording_fit)
    origins = np.arange(700, 1000)
    vol = garch_volatility(close, origins, refit_every=100, max_window=600)
    # three blocks, each fitted on the 600 returns up to its first origin, warm-started
    assert [n for n, _ in fits] == [600, 600, 600]
    assert fits[0][1] is None and isinstance(fits[1][1], GarchParams)
    # origin 750 belongs to the block fitted at 700: filter from the block's sample start
    params = real_fit(returns[100:700])
    path = garch_filter(returns[100:750], params)
    assert vol[50] == pytest.approx(math.sqrt(path[-1]) / 100, rel=1e-10)


def test_garch_falls_back_to_ewma_without_a_fit(monkeypatch, caplog):
    close = _prices(700, seed=8)
    monkeypatch.setattr(baselines, "fit_garch", lambda sample, start=None: None)
    origins = np.array([400, 500, 650])
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        got = garch(close, origins, 3, refit_every=1000)
    np.testing.assert_allclose(got, ewma(close, origins, 3), rtol=1e-12)
    assert "GARCH fit at origin 400 failed; using EWMA" in caplog.text


def test_garch_failed_refit_keeps_the_previous_parameters(monkeypatch, caplog):
    close, _ = _gjr_series(900, seed=3)
    real_fit = baselines.fit_garch
    calls = []

    def second_fails(sample, start=None):
        calls.append(start)
        return None if len(calls) == 2 else real_fit(sample, start)

    origins = np.arange(600, 800)
    reference = garch(close, origins, 2, refit_every=1000)  # one fit at 600 for every origin
    monkeypatch.setattr(baselines, "fit_garch", second_fails)
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        got = garch(close, origins, 2, refit_every=100)
    assert "GARCH fit at origin 700 failed; using the previous fit" in caplog.text
    np.testing.assert_allclose(got, reference, rtol=1e-12)


def test_garch_short_history_and_degenerate_series_do_not_crash():
    flat = np.full(400, 20.0)
    out = garch(flat, np.array([300, 399]), 2)
    np.testing.assert_allclose(out, np.full((2, 2, 3), 20.0), rtol=1e-15)
    close = _prices(300, seed=9)
    short = garch(close, np.array([100]), 2)  # fewer returns than a fit needs: EWMA
    np.testing.assert_allclose(short, ewma(close, np.array([100]), 2), rtol=1e-12)
    assert fit_garch(np.zeros(500)) is None


def test_garch_is_calibrated_on_a_garch_series_and_beats_ewma_and_hist():
    close, variance = _gjr_series(2750, seed=1)
    origins = np.arange(2000, 2750)
    actual = close[origins + 1]
    got = {name: fn(close, origins, 1)[:, 0] for name, fn in PROBABILISTIC_BASELINES.items()}
    # the truth: the true one-step variance, Student-t(5) quantiles scaled to unit variance
    sd = np.sqrt(variance[origins]) / 100
    z = StudentsT().ppf(0.9, [5.0])
    last = close[origins]
    oracle = np.stack((last * np.exp(-z * sd), last, last * np.exp(z * sd)), axis=1)

    g = got["garch"]
    assert coverage(actual, g[:, 0], g[:, 2]) == pytest.approx(0.8, abs=0.03)
    loss = {name: _pinball(actual, q) for name, q in got.items()}
    assert loss["garch"] < 1.005 * _pinball(actual, oracle)
    assert loss["garch"] * 1.005 < loss["ewma"]
    assert loss["garch"] * 1.005 < loss["hist"]


def test_garch_with_given_parameters_fits_nothing(monkeypatch):
    close, _ = _gjr_series(900, seed=4)
    returns = 100 * np.diff(np.log(close))
    origins = np.arange(600, 900)
    params = fit_garch(returns[:600])  # fitted on the returns up to the first origin
    expected = garch(close, origins, 3, refit_every=1000)

    def no_fit(sample, start=None):
        raise AssertionError("fit_garch called")

    monkeypatch.setattr(baselines, "fit_garch", no_fit)
    np.testing.assert_allclose(garch(close, origins, 3, params=params), expected, rtol=1e-12)
    vol = garch_volatility(close, origins, params=params)
    np.testing.assert_allclose(vol, np.sqrt(garch_filter(returns[:899], params)[600:]) / 100, rtol=1e-12)
    with pytest.raises(ValueError):
        garch_volatility(close, origins, refit_every=0)


def test_an_mplbackend_matplotlib_does_not_know_stops_neither_the_garch_fit_nor_the_plots(tmp_path):
    """matplotlib refuses to be imported at all under such an MPLBACKEND, and arch imports it:
    train lost a finished training at its garch fits, and tune its results at their plot."""
    import subprocess
    import sys

    from support import python_env

    code = """
import os, sys
import numpy as np
import pandas as pd
from pathlib import Path
from forecaster.baselines import fit_garch
from forecaster.plots import plot_training
r = np.random.default_rng(0).standard_t(5, 1500)
fit = fit_garch(r)
assert fit is not None and 0 < fit.persistence < 1, fit
h = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.3, 0.2], "val_loss": [0.31, 0.25], "grad_norm": [1.0, 0.5]})
path = plot_training(h, Path(sys.argv[1]))
assert open(path, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
assert os.environ["MPLBACKEND"] == "bogus"  # left as it was
print("ok")
"""
    env = python_env(MPLBACKEND="bogus", OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "t.png")], capture_output=True, text=True, env=env, timeout=240
    )
    assert res.returncode == 0 and res.stdout == "ok\n", res.stderr[-2000:]


def test_a_home_matplotlib_cannot_write_into_prints_nothing(tmp_path):
    """A service's user whose HOME (or XDG_CACHE_HOME) cannot be written: matplotlib, which
    train's garch fits import through arch and evaluate --plot draws with, said in two lines
    on stderr (not marked WARNING:, with --quiet too) that it made a temporary folder instead,
    each time cron ran the command. It does so in silence, and still draws."""
    import subprocess
    import sys

    from support import python_env

    code = """
import sys
import pandas as pd
from pathlib import Path
from forecaster.plots import import_matplotlib, plot_training
import_matplotlib()
h = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.3, 0.2], "val_loss": [0.31, 0.25], "grad_norm": [1.0, 0.5]})
path = plot_training(h, Path(sys.argv[1]))
assert open(path, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
print("ok")
"""
    (tmp_path / "not-a-folder").write_text("")
    home = str(tmp_path / "not-a-folder")  # no folder can be made under it, not even by root
    env = python_env(HOME=home, XDG_CONFIG_HOME=home, XDG_CACHE_HOME=home, OMP_NUM_THREADS="1")
    env.pop("MPLCONFIGDIR", None)
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "t.png")], capture_output=True, text=True, env=env, timeout=240
    )
    assert res.returncode == 0 and res.stdout == "ok\n", res.stderr[-2000:]
    assert res.stderr == ""


def test_hist_by_default_reads_the_h_step_returns_of_the_last_500_sessions():
    """The README's hist: the quantiles of the returns of the last 500 sessions. Wild returns
    300 to 450 sessions before the origin widen the bounds; the calm ones before them do not."""
    rng = np.random.default_rng(11)
    returns = rng.normal(0, 0.002, 1000)
    returns[550:700] = rng.normal(0, 0.05, 150)  # sessions 551 to 700
    close = 100 * np.exp(np.concatenate(([0.0], np.cumsum(returns))))
    got = hist(close, np.array([1000]), 1)[0, 0]
    expected = np.quantile(returns[-500:], [0.1, 0.9])  # the returns ending at sessions 501 .. 1000
    np.testing.assert_allclose(np.log(got[[0, 2]] / close[1000]), expected, rtol=1e-12)


@pytest.mark.parametrize(("name", "needs"), [("hist", HIST_MIN_RETURNS), ("ewma", 20)])
def test_hist_needs_50_returns_before_an_origin_and_ewma_20(name, needs):
    """The README: hist needs 50 returns before an origin and ewma 20; with one fewer the
    bounds are empty (NaN), while the median is always the last close."""
    assert HIST_MIN_RETURNS == 50
    close = _prices(200, seed=12)
    out = PROBABILISTIC_BASELINES[name](close, np.array([needs - 1, needs]), 2)  # origin o: o returns
    assert np.isnan(out[0, :, [0, 2]]).all()
    assert np.isfinite(out[1, 0]).all() and out[1, 0, 0] < out[1, 0, 1] < out[1, 0, 2]
    np.testing.assert_array_equal(out[:, :, 1], naive(close, np.array([needs - 1, needs]), 2))


def test_garch_by_default_fits_at_most_2000_returns_and_refits_every_250_origins(monkeypatch, caplog):
    """The README's garch: fitted at the first origin on at most the 2,000 returns before it,
    and fitted again every 250 origins; with fewer than 250 returns before an origin, no fit."""
    fits = []

    def recording_fit(sample, start=None):
        fits.append(len(sample))
        return None  # no fit: the EWMA variance, which is all this test needs

    monkeypatch.setattr(baselines, "fit_garch", recording_fit)
    close = _prices(2900, seed=13)
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        garch(close, np.arange(2300, 2800), 1)  # blocks from origins 2300 and 2550
        assert fits == [2000, 2000]
        fits.clear()
        garch(close, np.array([1200]), 1)
        assert fits == [1200]
        fits.clear()
        garch(close, np.array([249, 250]), 1)  # 249 returns: too few; the block's first origin decides
        assert fits == []
        garch(close, np.array([250]), 1)
        assert fits == [250]
    assert "GARCH: 249 returns before origin 249 are too few for a fit (it needs 250); using EWMA" in caplog.text
