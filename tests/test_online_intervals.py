"""Online tracking of the interval scales: no look-ahead, the nominal long-run miss rate under a
regime change, and the same scales in evaluate, in the run and in predict."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import run_meta

from forecaster.evaluation import forecast_scales, online_scales
from forecaster.features import Scaler
from forecaster.intervals import TRACKING_RATE, apply_scales, calibrate_scales, scale_scores, track_scales
from forecaster.windows import Splits, build_windows


def miss_rate(scores, scales):
    known = np.isfinite(scores)
    return float((scores[known] > scales[:-1][known]).mean())


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


def test_calibrate_scales_reaches_nominal_in_sample():
    rng = np.random.default_rng(1)
    n = 400
    frame = pd.DataFrame(
        {
            "ticker": "A",
            "step": np.tile([1, 2], n // 2),
            "actual": rng.normal(0, 3, n),
            "lo": -1.0,
            "mid": 0.0,
            "hi": 1.0,
            "vol": 1.0,
        }
    )
    scales = calibrate_scales(frame, coverage=0.8)["A"]
    assert len(scales) == 2 and all(2.5 < s < 5.5 for s in scales)  # N(0, 3): 80 % within 3.84
    for step, s in enumerate(scales, 1):
        g = frame[frame.step == step]
        assert (np.abs(g.actual) <= s).mean() >= 0.8


def test_start_holds_until_the_first_actual_is_known():
    scores = np.full((6, 3), 10.0)  # every origin a miss
    out = track_scales(scores, [1.0, 1.0, 1.0], lags=[1, 2, 5])
    assert out.shape == (7, 3)
    for c, lag in enumerate([1, 2, 5]):
        assert np.all(out[:lag, c] == 1.0)  # nothing realised yet
        assert out[lag, c] == pytest.approx(np.exp(TRACKING_RATE * 0.8))  # one miss known


def test_hits_narrow_and_misses_widen():
    out = track_scales(np.zeros((50, 1)), [2.0], lags=[1])  # every actual on the median
    assert np.all(np.diff(out[:, 0]) < 0)
    out = track_scales(np.full((50, 1), 1e6), [2.0], lags=[1])
    assert np.all(np.diff(out[:, 0]) > 0)


def test_unknown_actuals_do_not_move_the_scale():
    scores = np.full((10, 1), np.nan)
    np.testing.assert_array_equal(track_scales(scores, [1.5], lags=[1])[:, 0], 1.5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 5), st.integers(0, 39))
def test_no_look_ahead(seed, lag, cut):
    """The scale at origin i never depends on what is realised after it: changing every score
    from origin i - lag + 1 on leaves the scales up to i unchanged."""
    rng = np.random.default_rng(seed)
    scores = rng.exponential(size=(40, 1))
    base = track_scales(scores, [1.0], lags=[lag])
    changed = scores.copy()
    first_unknown = max(cut - lag + 1, 0)
    changed[first_unknown:] = rng.exponential(10, size=(40 - first_unknown, 1))
    again = track_scales(changed, [1.0], lags=[lag])
    np.testing.assert_array_equal(again[: cut + 1], base[: cut + 1])


@pytest.mark.parametrize("lag", [1, 5])
def test_long_run_miss_rate_is_nominal_after_a_regime_change(lag):
    """Calibrated on a calm year, then volatility halves and doubles: split-conformal alone is
    far off, the tracked scale brings the miss rate back to 20 %."""
    rng = np.random.default_rng(lag)
    val = np.abs(rng.normal(size=2000))
    start = np.quantile(val, 0.8)
    regime = np.concatenate([np.full(1500, 0.5), np.full(1500, 2.0)])
    scores = np.abs(rng.normal(size=3000) * regime)[:, None]
    out = track_scales(scores, [start], lags=[lag])
    assert miss_rate(scores, out) == pytest.approx(0.2, abs=0.02)
    for half in (slice(0, 1500), slice(1500, 3000)):  # within each regime too
        static_miss = float((scores[half, 0] > start).mean())
        assert abs(static_miss - 0.2) > 0.15  # 1 % and 52 % with the validation scale alone
        assert miss_rate(scores[half], out[half.start : half.stop + 1]) == pytest.approx(0.2, abs=0.04)


def test_lags_must_be_positive():
    with pytest.raises(ValueError):
        track_scales(np.zeros((3, 1)), [1.0], lags=[0])


def _windows(n_a=400, n_b=300, horizon=3):
    rng = np.random.default_rng(3)
    bars = {}
    for sym, n in (("AAA", n_a), ("BBB", n_b)):
        idx = pd.bdate_range(end="2024-12-31", periods=n)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        bars[sym] = pd.DataFrame(
            {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1e6}, index=idx
        )
    dates = bars["AAA"].index
    splits = Splits(val_start=dates[-200], test_start=dates[-100])
    ws = build_windows(bars, 20, horizon, splits)
    return ws


def test_online_scales_match_tracking_each_ticker_alone():
    ws = _windows()
    H = ws.horizon
    ends = ws.origins("test")
    rng = np.random.default_rng(4)
    med = rng.normal(0, 0.3, (len(ends), H))
    scaled = np.stack([med - 1, med, med + 1], -1)
    conformal = {"AAA": [1.2, 1.1, 1.0], "BBB": [0.9, 1.0, 1.3]}
    scale, final = online_scales(scaled, ws, ends, conformal, 1, coverage=0.8)
    assert scale.shape == (len(ends), H) and set(final) == {"AAA", "BBB"}
    for k, sym in enumerate(ws.names):
        sel = np.nonzero(ws.ticker_id[ends] == k)[0]
        e = ends[sel]
        last = ws.offsets[k + 1] - 1
        fut = e[:, None] + np.arange(1, H + 1)
        actual = np.where(fut <= last, ws.log_close[np.minimum(fut, last)] - ws.log_close[e][:, None], np.nan)
        actual = actual / ws.tscale[k]
        s = scale_scores(
            actual, scaled[sel, :, 0], scaled[sel, :, 1], scaled[sel, :, 2], np.repeat(ws.vol[e], H)
        ).reshape(-1, H)
        alone = track_scales(s, conformal[sym], lags=np.arange(1, H + 1))
        np.testing.assert_allclose(scale[sel], alone[:-1])
        np.testing.assert_allclose(final[sym], alone[-1])
        np.testing.assert_allclose(scale[sel[0]], conformal[sym])  # the first origin: validation


def test_forecast_scales_use_online_only_from_the_last_bar_on():
    ws = _windows()
    last = {s: str(pd.Timestamp(ws.dates[ws.offsets[k + 1] - 1]).date()) for k, s in enumerate(ws.names)}
    tickers = {
        s: {"conformal": [1.0, 1.0, 1.0], "conformal_online": [2.0, 3.0, 4.0], "last_date": last[s]} for s in ws.names
    }
    at_end = ws.offsets[1:] - 1
    np.testing.assert_array_equal(forecast_scales(tickers, ws, at_end), [[2, 3, 4], [2, 3, 4]])
    earlier = at_end - 10  # an --as-of inside the run's data: no later knowledge
    np.testing.assert_array_equal(forecast_scales(tickers, ws, earlier), np.ones((2, 3)))
    old_run = {s: {"conformal": [1.5, 1.5, 1.5]} for s in ws.names}  # runs made before tracking
    np.testing.assert_array_equal(forecast_scales(old_run, ws, at_end), np.full((2, 3), 1.5))


def test_trained_run_stores_the_scales_evaluate_ends_with(trained_run):
    """run.json's online scales are the ones evaluate's walk-forward reaches at the last bar."""
    from forecaster.checkpoint import load_run
    from forecaster.evaluation import online_scales as walk
    from forecaster.inference import predict_scaled
    from forecaster.store import load_bars

    meta = run_meta(trained_run)
    run = load_run(trained_run)
    cfg = run.config
    bars = load_bars(cfg.data.source, cfg.data.data_dir, run.names)
    ws = build_windows(
        bars, cfg.window.lookback, cfg.window.horizon, run.splits(), scalers=run.scalers(), tickers=run.names
    )
    ends = ws.origins("test")
    q = predict_scaled(run.model, ws, ends, cfg.model.strategy)
    _, final = walk(q, ws, ends, run.conformal(), run.model.median_index, coverage=0.8)
    assert set(meta["tickers"]) == set(final) == {"STOCKA", "STOCKB"}
    for sym, t in meta["tickers"].items():
        assert len(t["conformal_online"]) == cfg.window.horizon
        np.testing.assert_allclose(t["conformal_online"], final[sym], rtol=1e-6)
        assert Scaler.from_dict(t["scaler"]).to_dict() == t["scaler"]  # stored without loss


def _expected_forecast(run_dir, cut, which):
    """p10/p90 rebuilt with torch from the full history, with the run's validation scales
    (``which="conformal"``) or its tracked ones (``"conformal_online"``)."""
    from forecaster.checkpoint import load_run
    from forecaster.evaluation import interval
    from forecaster.inference import predict_scaled
    from forecaster.store import load_bars

    run = load_run(run_dir)
    cfg = run.config
    bars = {
        s: (df[df.index <= cut] if cut is not None else df)
        for s, df in load_bars(cfg.data.source, cfg.data.data_dir, run.names).items()
    }
    ws = build_windows(
        bars, cfg.window.lookback, cfg.window.horizon, run.splits(), scalers=run.scalers(), tickers=run.names
    )
    ends = ws.offsets[1:] - 1
    q = predict_scaled(run.model, ws, ends, cfg.model.strategy)
    scale = np.array([run.meta["tickers"][ws.names[t]][which] for t in ws.ticker_id[ends]])
    lo, _, hi = interval(q, ws, ends, {}, run.model.median_index, scale)
    close = ws.close[ends][:, None]
    return {"p10": (close * np.exp(lo)).ravel(), "p90": (close * np.exp(hi)).ravel()}


@pytest.mark.parametrize("as_of", [None, -20])
def test_predict_uses_the_tracked_scale_from_the_last_bar_and_the_validation_one_before(trained_run, tmp_path, as_of):
    from forecaster.prediction import predict

    meta = run_meta(trained_run)
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
