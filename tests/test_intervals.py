"""Calibrated intervals: the split-conformal scale, its online tracking (no look-ahead, the nominal
long-run miss rate under a regime change; each step alone or the steps sharing the one-step
misses), and the same scales in training, evaluate and predict."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.intervals import (
    apply_scales,
    calibrated,
    forecast_scales,
    median_weights,
    scale_scores,
    track_scales,
    track_shared_scales,
    tracked_scales,
    walk_forward_scales,
    with_median,
)
from forecaster.metrics import coverage
from forecaster.windows import Splits, build_windows

RATE = 0.05
NAN = float("nan")
Z90 = 1.2816  # the standard normal's 90 % quantile


def miss_rate(scores, scales):
    known = np.isfinite(scores)
    return float((scores[known] > scales[:-1][known]).mean())


# ------------------------------------------------------------------ scores and scales


def test_scale_scores_and_apply_scales_are_inverse():
    rng = np.random.default_rng(0)
    mid = rng.normal(size=200)
    lo, hi = mid - rng.uniform(0.5, 1, 200), mid + rng.uniform(0.5, 2, 200)
    vol = rng.uniform(0.5, 2, 200)
    y = mid + rng.normal(scale=2, size=200)
    s = scale_scores(y, lo, mid, hi, vol)
    # with its own score as the scale, each actual lies exactly on the interval's edge
    a, b = apply_scales(lo, mid, hi, s, vol)
    edge = np.where(y < mid, a, b)
    np.testing.assert_allclose(edge, y, atol=1e-9)


# ------------------------------------------------------------------------- online tracking


def test_start_holds_until_the_first_actual_is_known():
    scores = np.full((6, 3), 10.0)  # every origin a miss
    out = track_scales(scores, [1.0, 1.0, 1.0], lags=[1, 2, 5], rate=RATE)
    assert out.shape == (7, 3)
    for c, lag in enumerate([1, 2, 5]):
        assert np.all(out[:lag, c] == 1.0)  # nothing realised yet
        assert out[lag, c] == pytest.approx(np.exp(RATE * 0.8))  # one miss known


def test_hits_narrow_and_misses_widen():
    out = track_scales(np.zeros((50, 1)), [2.0], lags=[1], rate=RATE)  # every actual on the median
    assert np.all(np.diff(out[:, 0]) < 0)
    out = track_scales(np.full((50, 1), 1e6), [2.0], lags=[1], rate=RATE)
    assert np.all(np.diff(out[:, 0]) > 0)


def test_unknown_actuals_and_a_zero_rate_do_not_move_the_scale():
    np.testing.assert_array_equal(track_scales(np.full((10, 1), NAN), [1.5], lags=[1], rate=RATE)[:, 0], 1.5)
    np.testing.assert_array_equal(track_scales(np.full((10, 1), 9.0), [1.5], lags=[1], rate=0.0)[:, 0], 1.5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 5), st.integers(0, 39))
def test_no_look_ahead(seed, lag, cut):
    """The scale at origin i never depends on what is realised after it: changing every score
    from origin i - lag + 1 on leaves the scales up to i unchanged."""
    rng = np.random.default_rng(seed)
    scores = rng.exponential(size=(40, 1))
    base = track_scales(scores, [1.0], lags=[lag], rate=RATE)
    changed = scores.copy()
    first_unknown = max(cut - lag + 1, 0)
    changed[first_unknown:] = rng.exponential(10, size=(40 - first_unknown, 1))
    again = track_scales(changed, [1.0], lags=[lag], rate=RATE)
    np.testing.assert_array_equal(again[: cut + 1], base[: cut + 1])


@pytest.mark.parametrize("lag", [1, 5])
def test_long_run_miss_rate_is_nominal_after_a_regime_change(lag):
    """Calibrated on a calm year, then volatility halves and doubles: split-conformal alone is
    far off, the tracked scale brings the miss rate back to 20 %."""
    rng = np.random.default_rng(lag)
    start = np.quantile(np.abs(rng.normal(size=2000)), 0.8)
    regime = np.concatenate([np.full(1500, 0.5), np.full(1500, 2.0)])
    scores = np.abs(rng.normal(size=3000) * regime)[:, None]
    out = track_scales(scores, [start], lags=[lag], rate=RATE)
    assert miss_rate(scores, out) == pytest.approx(0.2, abs=0.02)
    for half in (slice(0, 1500), slice(1500, 3000)):  # within each regime too
        static_miss = float((scores[half, 0] > start).mean())
        assert abs(static_miss - 0.2) > 0.15  # 1 % and 52 % with the validation scale alone
        assert miss_rate(scores[half], out[half.start : half.stop + 1]) == pytest.approx(0.2, abs=0.04)


def test_lags_must_be_positive():
    with pytest.raises(ValueError):
        track_scales(np.zeros((3, 1)), [1.0], lags=[0], rate=RATE)


# ------------------------------------------------- the steps sharing the one-step misses


def _walk(n, tickers, horizon, seed, jump_at=None):
    """Scores of the h-step outcomes of a Gaussian random walk measured against intervals of
    half-width z(0.9) * sqrt(h) (right at unit volatility), (n, tickers, horizon): consecutive
    steps share sessions, as real h-step outcomes do. The volatility is 0.5 before ``jump_at``
    and 2 from there on (1 throughout without one)."""
    rng = np.random.default_rng(seed)
    vol = np.ones(n + horizon)
    if jump_at is not None:
        vol[:jump_at], vol[jump_at:] = 0.5, 2.0
    path = np.concatenate(
        [np.zeros((1, tickers)), np.cumsum(rng.normal(size=(n + horizon, tickers)) * vol[:, None], 0)]
    )
    h = np.arange(1, horizon + 1)
    ahead = path[np.arange(n)[:, None] + h].transpose(0, 2, 1) - path[:n, :, None]  # (n, tickers, H)
    return np.abs(ahead) / (Z90 * np.sqrt(h))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.5, 2.0), st.floats(0.0, 0.3))
def test_shared_tracking_of_one_step_is_tracking_it_alone(seed, start, unknown):
    rng = np.random.default_rng(seed)
    scores = rng.exponential(size=(60, 3))
    scores[rng.random((60, 3)) < unknown] = NAN
    shared = track_shared_scales(scores[:, :, None], np.full((3, 1), start), RATE)[:, :, 0]
    alone = track_scales(scores, [start] * 3, lags=[1, 1, 1], rate=RATE)
    np.testing.assert_allclose(shared, alone)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 5), st.integers(0, 39))
def test_shared_tracking_has_no_look_ahead(seed, step, cut):
    """Step h's outcome of origin j is known at origin j + h: changing every step-h score from
    origin i - h + 1 on leaves every step's scales up to origin i unchanged."""
    rng = np.random.default_rng(seed)
    scores = rng.exponential(size=(40, 2, 5))
    base = track_shared_scales(scores, np.ones((2, 5)), RATE)
    changed = scores.copy()
    first_unknown = max(cut - step + 1, 0)
    changed[first_unknown:, :, step - 1] = rng.exponential(10, size=(40 - first_unknown, 2))
    again = track_shared_scales(changed, np.ones((2, 5)), RATE)
    np.testing.assert_array_equal(again[: cut + 1], base[: cut + 1])
    assert again.shape == (41, 2, 5)


def test_one_step_misses_widen_every_step():
    """Every one-step actual outside, every longer one on the median: the longer steps widen
    with the one-step misses (tracked alone they would narrow), and their own hits, each
    counting 1 / h, hold them below the one-step scale."""
    scores = np.zeros((50, 1, 3))
    scores[:, :, 0] = 1e6
    out = track_shared_scales(scores, np.ones((1, 3)), RATE)[:, 0]
    assert np.all(np.diff(out, axis=0) > 0)
    i = np.arange(51)
    for h in (1, 2, 3):
        own = 0.0 if h == 1 else -RATE / h * 0.2 * np.maximum(i - h + 1, 0)
        np.testing.assert_allclose(out[:, h - 1], np.exp(RATE * 0.8 * i + own))
    assert np.all(out[5:, 1:] < out[5:, :1])
    alone = track_scales(scores[:, 0], [1.0] * 3, lags=[1, 2, 3], rate=RATE)
    assert np.all(np.diff(alone[3:, 1:], axis=0) < 0)


def test_shared_tracking_misses_20_percent_at_every_step():
    """Intervals that are right for step 1 but a third too wide at the longer steps: each step's
    own correction brings every step's long-run miss rate to the nominal 20 %."""
    scores = _walk(4000, 4, 5, seed=1)
    scores[:, :, 1:] *= 0.75  # the longer steps' intervals a third too wide
    out = track_shared_scales(scores, np.ones((4, 5)), RATE)
    for h in range(5):
        assert miss_rate(scores[:, :, h], out[:, :, h]) == pytest.approx(0.2, abs=0.02), h


def test_after_a_volatility_jump_the_longer_steps_catch_up_sooner_when_shared():
    """Volatility quadruples: tracked alone, a step-h scale hears of it only h sessions after
    each origin, and its misses, which overlap, widen it in fits; sharing the one-step misses
    widens every step from the next session on. Over the 100 origins after the jump (8
    tickers), each longer step misses less often, and both rules reach 20 % in the long run."""
    jump = 1500
    scores = _walk(3000, 8, 5, seed=2, jump_at=jump)
    start = np.full((8, 5), 0.5)  # right for the calm regime
    shared = track_shared_scales(scores, start, RATE)
    alone = track_scales(scores.reshape(3000, -1), start.ravel(), np.tile(np.arange(1, 6), 8), RATE).reshape(3001, 8, 5)
    after = slice(jump, jump + 100)
    for h in range(1, 5):
        soon_shared = miss_rate(scores[after, :, h], shared[jump : jump + 101, :, h])
        soon_alone = miss_rate(scores[after, :, h], alone[jump : jump + 101, :, h])
        assert soon_shared < soon_alone - 0.03, (h, soon_shared, soon_alone)
    for out in (shared, alone):
        for h in range(5):
            assert miss_rate(scores[:, :, h], out[:, :, h]) == pytest.approx(0.2, abs=0.02)


# -------------------------------------------------------------- over the forecasts of windows


def _windows(n_a=400, n_b=300, horizon=3, cut=0):
    """Two tickers' windows; ``cut``: their last sessions left out (as a run trained that many
    sessions ago saw them), the splits where they are with all the sessions."""
    rng = np.random.default_rng(3)
    bars = {}
    for sym, n in (("AAA", n_a), ("BBB", n_b)):
        idx = pd.bdate_range(end="2024-12-31", periods=n)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        bars[sym] = pd.DataFrame(
            {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1e6}, index=idx
        )
    dates = bars["AAA"].index
    bars = {sym: df.iloc[: len(df) - cut] for sym, df in bars.items()}
    return build_windows(bars, 20, horizon, Splits(val_start=dates[-200], test_start=dates[-100]))


def _forecasts(ws, ends, half=1.0, seed=4):
    med = np.random.default_rng(seed).normal(0, 0.3, (len(ends), ws.horizon))
    return np.stack([med - half, med, med + half], -1)


def test_training_calibration_starts_at_one_and_reaches_nominal_through_validation():
    """Intervals twice too narrow: tracked from 1 through the validation split, the scale at the
    test split's start has widened them, and the test split is covered at about 80 %."""
    ws = _windows(n_a=1500, n_b=1500)
    val, test = ws.origins("val"), ws.origins("test")
    right = np.nanquantile(np.abs(ws.realised(val)), 0.8)  # the half-width that covers 80 %
    half = 0.5 * right

    def q(ends):
        zero = np.zeros((len(ends), ws.horizon))
        return np.stack([zero - half, zero, zero + half], -1)

    start, final, pending = walk_forward_scales(q(val), val, q(test), test, ws, rate=0.05)
    assert set(start) == set(final) == set(pending) == {"AAA", "BBB"}
    for sym in ("AAA", "BBB"):
        assert all(1.4 < s < 2.6 for s in start[sym])  # widened from 1 by the misses of validation
    scale, _ = tracked_scales(q(test), ws, test, start, 0.05)
    lo, _, hi = calibrated(q(test), ws, test, scale)
    actual = ws.realised(test) * ws.target_scale(test)
    assert coverage(actual.ravel(), lo.ravel(), hi.ravel()) == pytest.approx(0.8, abs=0.04)
    # with no test origin, only the start comes back
    assert walk_forward_scales(q(val), val, q(test[:0]), test[:0], ws, rate=0.05) == (start, {}, {})


@pytest.mark.parametrize("steps", ["shared", "separate"])
def test_tracked_scales_match_tracking_each_ticker_alone(steps):
    ws = _windows()
    H = ws.horizon
    ends = ws.origins("test")
    q = _forecasts(ws, ends)
    start = {"AAA": [1.2, 1.1, 1.0], "BBB": [0.9, 1.0, 1.3]}
    scale, final = tracked_scales(q, ws, ends, start, RATE, steps=steps)
    assert scale.shape == (len(ends), H) and set(final) == {"AAA", "BBB"}
    for k, sym in enumerate(ws.names):
        sel = np.nonzero(ws.ticker_id[ends] == k)[0]
        e = ends[sel]
        last = ws.offsets[k + 1] - 1
        fut = e[:, None] + np.arange(1, H + 1)
        actual = np.where(fut <= last, ws.log_close[np.minimum(fut, last)] - ws.log_close[e][:, None], np.nan)
        actual = actual / ws.target_scale(e)
        s = scale_scores(actual, q[sel, :, 0], q[sel, :, 1], q[sel, :, 2], ws.vol[e][:, None])
        if steps == "separate":
            alone = track_scales(s, start[sym], lags=np.arange(1, H + 1), rate=RATE)
        else:
            alone = track_shared_scales(s[:, None, :], np.array([start[sym]]), RATE)[:, 0]
        np.testing.assert_allclose(scale[sel], alone[:-1])
        np.testing.assert_allclose(final[sym], alone[-1])
        np.testing.assert_allclose(scale[sel[0]], start[sym])  # the first origin: validation
    with pytest.raises(ValueError, match="steps"):
        tracked_scales(q, ws, ends, start, RATE, steps="each")


def test_forecast_scales_use_online_only_from_the_last_bar_on():
    ws = _windows()
    at_end = ws.offsets[1:] - 1
    last = {s: pd.Timestamp(ws.dates[at_end[k]]).date() for k, s in enumerate(ws.names)}

    def entry(conformal, online=None, day=None, sym="AAA"):
        return SimpleNamespace(
            conformal=conformal, conformal_online=online, conformal_pending=None, last_date=day or last[sym]
        )

    def forecast(origins):
        return _forecasts(ws, origins)

    tickers = {s: entry([1.0, 1.0, 1.0], [2.0, 3.0, 4.0], sym=s) for s in ws.names}
    scale, caught_up = forecast_scales(tickers, ws, at_end, forecast, RATE)
    np.testing.assert_array_equal(scale, [[2, 3, 4], [2, 3, 4]])
    assert caught_up == {}  # the forecast is made from the run's last bar: nothing to catch up on
    earlier = at_end - 10  # an --as-of inside the run's data: no later knowledge
    np.testing.assert_array_equal(forecast_scales(tickers, ws, earlier, forecast, RATE)[0], np.ones((2, 3)))
    old_run = {s: entry([1.5, 1.5, 1.5], None, sym=s) for s in ws.names}  # runs made before tracking
    np.testing.assert_array_equal(forecast_scales(old_run, ws, at_end, forecast, RATE)[0], np.full((2, 3), 1.5))


def test_forecast_scales_ignore_a_validation_scale_list_of_the_wrong_length():
    """A run.json whose ``conformal`` list has fewer (or more) values than the run has steps,
    edited by hand or written by another version: a forecast inside the run's data uses 1.0 at
    every step for that ticker, not its one value spread over every step, nor an error; the
    other ticker's list of the right length is used."""
    ws = _windows()
    at_end = ws.offsets[1:] - 1
    earlier = at_end - 10  # an --as-of inside the run's data: the validation scales

    def entry(conformal):
        return SimpleNamespace(conformal=conformal, conformal_online=None, conformal_pending=None, last_date=None)

    for wrong in ([2.0], [2.0, 2.0, 2.0, 2.0]):
        tickers = {"AAA": entry(wrong), "BBB": entry([1.5, 1.6, 1.7])}
        scale, _ = forecast_scales(tickers, ws, earlier, lambda o: _forecasts(ws, o), RATE)
        np.testing.assert_array_equal(scale, [[1.0, 1.0, 1.0], [1.5, 1.6, 1.7]])


def _forecast_of(ws, origins):
    """Forecasts that depend on the origin's ticker and session alone, whichever windows hold it:
    intervals narrow enough to miss often."""
    day = ws.dates[origins].astype("datetime64[D]").astype(np.int64)
    med = 0.3 * np.sin(day * 1.3 + ws.ticker_id[origins])[:, None] * np.ones(ws.horizon)
    return np.stack([med - 0.4, med, med + 0.4], -1)


@pytest.mark.parametrize("steps", ["shared", "separate"])
def test_forecast_scales_catch_up_to_the_scales_evaluate_tracks_on_the_same_bars(steps):
    """A run trained 30 sessions ago, then forecasting now: its scale moves on through every
    outcome realised since its last bar, those of its last test origins included (their longer
    steps ended after it), exactly as evaluate's tracking through the test split reaches it."""
    run_ws, ws = _windows(cut=30), _windows()
    assert run_ws.names == ws.names and len(ws.dates) == len(run_ws.dates) + 60
    f = _forecast_of
    val, test = run_ws.origins("val"), run_ws.origins("test")
    start, online, pending = walk_forward_scales(f(run_ws, val), val, f(run_ws, test), test, run_ws, RATE, steps)
    assert all(len(pending[s]) == ws.horizon - 1 for s in ws.names)
    last = {s: pd.Timestamp(run_ws.dates[run_ws.offsets[k + 1] - 1]).date() for k, s in enumerate(ws.names)}

    def entries(with_pending):
        return {
            s: SimpleNamespace(
                conformal=start[s],
                conformal_online=online[s],
                conformal_pending=pending[s] if with_pending else None,
                last_date=last[s],
            )
            for s in ws.names
        }

    at_end = ws.offsets[1:] - 1
    scale, caught_up = forecast_scales(entries(True), ws, at_end, lambda o: f(ws, o), RATE, steps)
    assert caught_up == {"AAA": 30, "BBB": 30}
    now_test = ws.origins("test")
    _, evaluated = tracked_scales(f(ws, now_test), ws, now_test, start, RATE, steps=steps)
    np.testing.assert_allclose(scale, [evaluated["AAA"], evaluated["BBB"]], rtol=1e-12)
    assert (scale > 1.5).all()  # intervals far too narrow: the scale widened
    # a run that did not keep its pending scales: the one-step scale is the same, the longer
    # steps miss the outcomes that ended after its last bar
    older, _ = forecast_scales(entries(False), ws, at_end, lambda o: f(ws, o), RATE, steps)
    np.testing.assert_allclose(older[:, 0], scale[:, 0], rtol=1e-12)
    assert not np.allclose(older[:, 1:], scale[:, 1:], rtol=1e-3)


# ------------------------------------------------------------- the same scales in every command


def _run_windows(run_dir, cut=None):
    from forecaster.checkpoint import load_run
    from forecaster.store import load_bars

    run = load_run(run_dir)
    cfg = run.config
    bars = {
        s: (df[df.index <= cut] if cut is not None else df)
        for s, df in load_bars(cfg.data.source, cfg.data.data_dir, run.names).items()
    }
    return run, run.windows(bars)


def test_trained_run_stores_the_scales_evaluate_ends_with(trained_run):
    """run.json's online scales are the ones evaluate's walk-forward reaches at the last bar."""
    from forecaster.npinfer import predict_scaled

    meta = json.loads((trained_run / "run.json").read_text())
    run, ws = _run_windows(trained_run)
    ends = ws.origins("test")
    q = with_median(predict_scaled(run.model, ws, ends, run.config.model.strategy), run.manifest.median_weights())
    cfg = run.config
    assert meta["config"]["intervals"]["step_tracking"] == cfg.intervals.step_tracking == "shared"
    _, final = tracked_scales(q, ws, ends, run.manifest.conformal(), cfg.intervals.tracking_rate, steps="shared")
    for sym, t in meta["tickers"].items():
        assert len(t["conformal_online"]) == run.config.window.horizon
        np.testing.assert_allclose(t["conformal_online"], final[sym], rtol=1e-6)


@pytest.mark.parametrize(
    "section, key, then, now",
    [
        # before the steps shared the one-step misses: evaluate and predict keep tracking each
        # step alone, the way the run was calibrated
        ("intervals", "step_tracking", "separate", "shared"),
        # before the burn-in went without gradient: a resumed or retrained run keeps training
        # through it, the way it was trained
        ("train", "burn_in_grad", True, False),
        # before the burn-in went without dropout: kept with it, the way the run was trained
        ("train", "burn_in_dropout", True, False),
        # before the burn-in was made a step ahead: made in turn, as it was trained
        ("train", "burn_in_ahead", False, True),
        # before window batches were cut into halves: resumed or retrained whole, as it was trained
        ("train", "halves", False, True),
    ],
)
def test_a_run_that_records_no_setting_reads_as_it_was_made(trained_run, run_copy, section, key, then, now):
    from forecaster.checkpoint import load_run

    old = run_copy
    meta = json.loads((old / "run.json").read_text())
    del meta["config"][section][key]
    (old / "run.json").write_text(json.dumps(meta))
    assert getattr(getattr(load_run(old).config, section), key) == then
    assert getattr(getattr(load_run(trained_run).config, section), key) == now


def _expected_forecast(run_dir, cut, which):
    """p10/p90 rebuilt from the full history with the run's validation scales
    (``which="conformal"``) or its tracked ones (``"conformal_online"``)."""
    from forecaster.npinfer import predict_scaled

    run, ws = _run_windows(run_dir, cut)
    ends = ws.offsets[1:] - 1
    q = with_median(predict_scaled(run.model, ws, ends, run.config.model.strategy), run.manifest.median_weights())
    scale = np.array([getattr(run.manifest.tickers[ws.names[t]], which) for t in ws.ticker_id[ends]])
    lo, _, hi = calibrated(q, ws, ends, scale)
    close = ws.close[ends][:, None]
    return {"p10": (close * np.exp(lo)).ravel(), "p90": (close * np.exp(hi)).ravel()}


@pytest.mark.parametrize("as_of", [None, -20])
def test_predict_uses_the_tracked_scale_from_the_last_bar_and_the_validation_one_before(trained_run, tmp_path, as_of):
    from forecaster.prediction import predict

    meta = json.loads((trained_run / "run.json").read_text())
    assert any(not np.allclose(t["conformal"], t["conformal_online"]) for t in meta["tickers"].values())
    cut = None
    if as_of is not None:  # a session inside the run's data
        last = min(pd.Timestamp(t["last_date"]) for t in meta["tickers"].values())
        cut = pd.bdate_range(end=last, periods=-as_of)[0]
    report = predict(trained_run, offline=True, out=tmp_path, as_of=None if cut is None else str(cut.date()))
    got = report.forecasts.sort_values(["ticker", "step"])
    want = _expected_forecast(trained_run, cut, "conformal" if cut is not None else "conformal_online")
    other = _expected_forecast(trained_run, cut, "conformal_online" if cut is not None else "conformal")
    for col in ("p10", "p90"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col], rtol=1e-5)
        assert not np.allclose(got[col].to_numpy(float), other[col], rtol=1e-5)


# ------------------------------------------------------------------------------ the median's gate


def test_with_median_keeps_the_half_widths_around_whichever_median():
    rng = np.random.default_rng(5)
    med = rng.normal(0, 0.3, (20, 3))
    q = np.stack([med - 1.0, med, med + 2.0], -1)
    np.testing.assert_array_equal(with_median(q, [1.0, 1.0, 1.0]), q)
    naive = with_median(q, [0.0, 1.0, 0.0])
    np.testing.assert_allclose(naive[:, [0, 2], 1], 0.0, atol=1e-7)  # the last close
    np.testing.assert_allclose(naive[:, 1], q[:, 1])
    np.testing.assert_allclose(naive[:, :, 1] - naive[:, :, 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(naive[:, :, 2] - naive[:, :, 1], 2.0, rtol=1e-6)


def test_median_weights_keep_the_network_only_where_validation_shows_it_beats_naive():
    ws = _windows(n_a=600, n_b=600)
    ends = ws.ends("val")
    y = ws.realised(ends)
    informed = np.stack([y - 1, y * 0.5, y + 1], -1)  # knows half of every move: far better than naive
    noise = _forecasts(ws, ends, seed=9)  # unrelated to what happens: worse than naive
    assert median_weights(informed, ws, ends, alpha=0.05) == [1.0, 1.0, 1.0]
    assert median_weights(noise, ws, ends, alpha=0.05) == [0.0, 0.0, 0.0]
    assert median_weights(noise, ws, ends, alpha=1.0) == [1.0, 1.0, 1.0]  # always the network's
    assert median_weights(informed, ws, ends, alpha=0.0) == [0.0, 0.0, 0.0]  # always the last close


def _scaled_errors(ws, ends, r):
    """Medians whose errors are the naive forecast's (the realised move) times ``r``: the
    model's error over naive's is ``r`` at each window and step."""
    y = ws.realised(ends)
    m = y * (1 - r)
    return np.stack([m - 1, m, m + 1], -1)


def test_a_median_worse_than_naive_is_never_kept_whatever_alpha():
    """A median a little worse than the last close at every step (its errors 1 % larger on
    average): the one-sided DM p-values are under 0.9 by chance, yet with alpha 0.9 the gate
    keeps the last close at every step, never a median that did worse on validation."""
    from forecaster.metrics import diebold_mariano

    ws = _windows()
    ends = ws.ends("val")
    every_other = np.where(np.arange(len(ends)) % 2 == 0, 1.0, -1.0)[:, None]
    q = _scaled_errors(ws, ends, 1.01 + 0.5 * every_other)
    y = ws.realised(ends) * ws.target_scale(ends)
    e_model = y - q[:, :, 1] * ws.target_scale(ends)
    for h in range(ws.horizon):
        assert np.mean(np.abs(e_model[:, h])) > np.mean(np.abs(y[:, h]))  # worse than naive
        assert 0.5 < diebold_mariano(e_model[:, h], y[:, h], h=h + 1)[1] < 0.9
    assert median_weights(q, ws, ends, alpha=0.9) == [0.0, 0.0, 0.0]


def test_the_median_gate_at_step_h_allows_for_the_overlap_of_h_step_errors():
    """Five-step forecasts whose advantage over naive comes and goes in runs of five origins,
    as h-step errors of consecutive origins do (they share h - 1 sessions): read as independent
    errors the step-5 advantage is significant at 0.5 %, read with the overlap it is not, so
    the gate keeps the last close at step 5. Steps 1 to 4, far better than naive, keep theirs.
    (Both tickers' runs fall on the same days; the test reads each day's mean over them.)"""
    from forecaster.metrics import diebold_mariano_differential

    ws = _windows(horizon=5)
    ends = ws.ends("val")
    _, day = np.unique(ws.dates[ends], return_inverse=True)
    runs = np.where(day // 5 % 2 == 0, 1.0, -1.0)
    r = np.full((len(ends), 5), 0.5)  # half the naive error: far better
    r[:, 4] = 0.92 + 0.2 * runs  # 8 % better on average, in runs of five origins
    q = _scaled_errors(ws, ends, r)
    y = np.abs(ws.realised(ends)[:, 4] * ws.target_scale(ends)[:, 4])
    d = np.bincount(day, weights=y * r[:, 4] - y) / np.bincount(day)  # each day's mean over the tickers
    alpha = 0.005
    assert diebold_mariano_differential(d, h=1)[1] < alpha < diebold_mariano_differential(d, h=5)[1]
    assert median_weights(q, ws, ends, alpha=alpha) == [1.0, 1.0, 1.0, 1.0, 0.0]


def test_a_run_trained_weeks_ago_forecasts_with_the_intervals_evaluate_gives_that_day(sample_dir, tmp_path):
    """Trained on bars that end 30 sessions ago, then the store caught up: predict's forecast
    from a day since holds, at every step, the interval evaluate's walk forward gives that day.
    The run's last test origins' longer steps ended after its last bar: they count too."""
    import shutil

    from support import tiny_overrides

    from forecaster.config import load_config
    from forecaster.evaluation import evaluate
    from forecaster.prediction import predict
    from forecaster.training import train

    data = tmp_path / "data"
    data.mkdir()
    for f in sorted(sample_dir.glob("*.csv")):
        rows = f.read_text().splitlines(keepends=True)
        (data / f.name).write_text("".join(rows[:-30]))  # bars up to 30 sessions ago
    run = tmp_path / "runs" / "weeks-ago"
    train(load_config(None, tiny_overrides(data, **{"train.epochs": 1})), run_dir=run)
    meta = json.loads((run / "run.json").read_text())
    assert all(len(t["conformal_pending"]) == 2 for t in meta["tickers"].values())
    for f in sorted(sample_dir.glob("*.csv")):
        shutil.copy(f, data / f.name)  # the store has the sessions since
    walked = evaluate(run).predictions
    day = sorted(walked["origin"].astype(str).unique())[-12]
    got = predict(run, offline=True, out=tmp_path / "fc", as_of=day).forecasts
    assert set(got["as_of"].astype(str)) == {day}
    want = walked[walked["origin"].astype(str) == day]
    both = got.merge(want, on=["ticker", "step"], suffixes=("", "_eval"))
    assert len(both) == 2 * 3
    for col in ("p10", "p50", "p90"):
        np.testing.assert_allclose(both[col].to_numpy(float), both[f"{col}_eval"].to_numpy(float), rtol=1e-6)


def test_a_run_of_the_format_before_the_pending_scales_still_forecasts(run_copy, tmp_path):
    """Format 2 kept no pending scales: its forecasts catch up on the outcomes since its last bar."""
    from forecaster.checkpoint import load_run
    from forecaster.prediction import predict

    meta = json.loads((run_copy / "run.json").read_text())
    assert meta["format_version"] == 3
    meta["format_version"] = 2
    for t in meta["tickers"].values():
        del t["conformal_pending"]
    (run_copy / "run.json").write_text(json.dumps(meta))
    assert all(t.conformal_pending is None for t in load_run(run_copy).manifest.tickers.values())
    report = predict(run_copy, offline=True, out=tmp_path / "fc")
    assert report.exit_code == 0 and len(report.forecasts) == 2 * 3
