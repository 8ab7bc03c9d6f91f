import math

import numpy as np
import pytest

from forecaster.baselines import BASELINES, drift, mean, naive, naive_scale


def _prices(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50.0 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, n)))


def _reference(close, origins, horizon, window):
    """Plain per-origin loops, written straight from the definitions."""
    naive_ref = np.empty((len(origins), horizon))
    drift_ref = np.empty((len(origins), horizon))
    mean_ref = np.empty((len(origins), horizon))
    for i, o in enumerate(origins):
        history = close[: o + 1]
        returns = [math.log(history[t] / history[t - 1]) for t in range(1, len(history))]
        recent = returns[-window:] if returns else []
        m = sum(recent) / len(recent) if recent else 0.0
        slope = (math.log(history[-1]) - math.log(history[0])) / o if o > 0 else 0.0
        for j in range(horizon):
            h = j + 1
            naive_ref[i, j] = history[-1]
            drift_ref[i, j] = math.exp(math.log(history[-1]) + h * slope)
            mean_ref[i, j] = history[-1] * math.exp(h * m)
    return naive_ref, drift_ref, mean_ref


@pytest.mark.parametrize("window", [1, 7, 250])
def test_baselines_match_loop_reference(window):
    close = _prices()
    rng = np.random.default_rng(window)
    origins = np.concatenate(([0, 1, 2, 6, 7, 8, 399], rng.integers(0, 400, 40)))
    horizon = 5
    naive_ref, drift_ref, mean_ref = _reference(close, origins, horizon, window)
    np.testing.assert_allclose(naive(close, origins, horizon), naive_ref, rtol=1e-12)
    np.testing.assert_allclose(drift(close, origins, horizon), drift_ref, rtol=1e-10)
    np.testing.assert_allclose(mean(close, origins, horizon, window=window), mean_ref, rtol=1e-10)


def test_shapes_and_registry():
    close = _prices(30)
    origins = np.arange(10, 20)
    for name, fn in BASELINES.items():
        out = fn(close, origins, 4)
        assert out.shape == (10, 4), name
        assert np.all(np.isfinite(out)) and np.all(out > 0), name
    assert naive(close, np.array([], dtype=int), 3).shape == (0, 3)


def test_drift_on_a_geometric_series_continues_it():
    close = 10.0 * 1.01 ** np.arange(20)
    out = drift(close, np.array([5, 19]), 3)
    np.testing.assert_allclose(out[0], 10.0 * 1.01 ** np.array([6, 7, 8]), rtol=1e-12)
    np.testing.assert_allclose(out[1], 10.0 * 1.01 ** np.array([20, 21, 22]), rtol=1e-12)
    # the mean-return baseline sees the same constant return
    np.testing.assert_allclose(mean(close, np.array([5, 19]), 3), out, rtol=1e-12)


def test_mean_uses_only_the_last_window_returns():
    # flat for 10 bars, then +10 % a bar: with window 3 at origin 12 only the rising bars count
    close = np.concatenate((np.full(10, 100.0), 100.0 * 1.1 ** np.arange(1, 4)))
    out = mean(close, np.array([12]), 2, window=3)
    np.testing.assert_allclose(out[0], close[12] * 1.1 ** np.array([1, 2]), rtol=1e-12)
    longer = mean(close, np.array([12]), 1, window=6)
    np.testing.assert_allclose(longer[0, 0], close[12] * math.exp(3 * math.log(1.1) / 6))


def test_forecasts_ignore_bars_after_the_origin():
    close = _prices(100)
    changed = close.copy()
    changed[51:] *= 3.0
    origins = np.array([10, 30, 50])
    for fn in BASELINES.values():
        np.testing.assert_array_equal(fn(close, origins, 4), fn(changed, origins, 4))


def test_origin_zero_falls_back_to_naive():
    close = _prices(10)
    for fn in BASELINES.values():
        np.testing.assert_allclose(fn(close, np.array([0]), 3), np.full((1, 3), close[0]))


@pytest.mark.parametrize(
    "close, origins, horizon",
    [
        (np.array([1.0, 2.0, 3.0]), np.array([3]), 1),
        (np.array([1.0, 2.0, 3.0]), np.array([-1]), 1),
        (np.array([1.0, 2.0, 3.0]), np.array([1.5]), 1),
        (np.array([1.0, 0.0, 3.0]), np.array([1]), 1),
        (np.array([1.0, np.nan, 3.0]), np.array([1]), 1),
        (np.array([1.0, 2.0, 3.0]), np.array([1]), 0),
        (np.array([]), np.array([0]), 1),
    ],
)
def test_bad_inputs_are_rejected(close, origins, horizon):
    for fn in BASELINES.values():
        with pytest.raises(ValueError):
            fn(close, origins, horizon)


def test_mean_rejects_bad_window():
    with pytest.raises(ValueError):
        mean(_prices(10), np.array([5]), 2, window=0)


def test_naive_scale():
    assert naive_scale([1.0, 3.0, 2.0, 2.0]) == pytest.approx(1.0)
    assert naive_scale(np.array([5.0, np.nan, 6.0, 8.0])) == pytest.approx(2.0)
    assert math.isnan(naive_scale([1.0]))
    close = _prices(50)
    assert naive_scale(close) == pytest.approx(np.mean(np.abs(np.diff(close))))


def test_naive_is_the_close_to_the_bit_so_a_dm_test_against_it_sees_no_difference():
    """A median that is the last close (the gate shut) must give the same errors as naive, to
    the bit: a DM test on rounding noise reported 'p = 0.03' for two identical forecasts."""
    from forecaster.metrics import diebold_mariano

    close = _prices(600, seed=3)
    origins = np.arange(100, 590)
    fc = naive(close, origins, 5)
    assert np.array_equal(fc, np.repeat(close[origins, None], 5, axis=1))
    actual = close[np.minimum(origins[:, None] + np.arange(1, 6), 599)]
    gate_shut = close[origins, None] * np.exp(np.zeros((len(origins), 5)))  # how evaluate prices it
    assert all(math.isnan(p) for p in diebold_mariano((actual - gate_shut)[:, 4], (actual - fc)[:, 4], h=5))


@pytest.mark.parametrize(("back", "counted"), [(250, True), (251, False)])
def test_mean_by_default_averages_the_last_250_returns(back, counted):
    """The README's mean baseline: the mean log return of the last 250 sessions. A single +10 %
    day 250 returns before the origin moves the forecast; one 251 returns back does not."""
    close = np.full(401, 100.0)
    close[401 - back :] = 110.0  # the return ending at session 401 - back is the jump
    out = mean(close, np.array([400]), 2)
    drift_per_step = math.log(1.1) / 250 if counted else 0.0
    np.testing.assert_allclose(out[0], 110.0 * np.exp(drift_per_step * np.array([1, 2])), rtol=1e-12)
