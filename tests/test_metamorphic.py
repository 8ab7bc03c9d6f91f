"""Relations between the forecasts of transformed inputs, checked on the whole loop (train,
evaluate, predict, score) and on the baselines: whatever the data, prices in other units give
forecasts in those units, other ticker names or orders give the same forecasts under those
names, bars that come later change no forecast made earlier, the same prices on other dates
give the same values, and every interval holds its median.

The data files here keep every digit of the prices (``write_exact``): ``write_csv`` rounds them
to 4 decimals (5 significant digits below 1), a rounding that does not scale with the prices."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import tiny_overrides

import forecaster as fc
from forecaster.baselines import GarchParams, drift, ewma, garch, hist, mean, naive
from forecaster.metrics import METRIC_COLUMNS
from forecaster.store import load_store, update_ticker
from forecaster.synthetic import generate_bars

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PRICES = ["open", "high", "low", "close"]
TICKERS = ["STOCKA", "STOCKB"]
QUANTILE_COLUMNS = ["p10", "p50", "p90"]
BASELINE_COLUMNS = [
    "naive",
    "drift",
    "mean",
    *(f"{name}_{q}" for name in ("hist", "ewma", "garch") for q in QUANTILE_COLUMNS),
]
PRICE_COLUMNS = ["actual", "last_close", *QUANTILE_COLUMNS, *BASELINE_COLUMNS]
IN_PRICE_UNITS = ["mae", "rmse", "width", "pinball"]
"""The metrics in the prices' units; every other one is a ratio, a share or a p-value."""
SCALE_FREE = [c for c in METRIC_COLUMNS[3:] if c not in (*IN_PRICE_UNITS, "best_vol")]
"""A ratio, a share or a p-value (and the count ``n``): the same in any price units."""
RTOL = 1e-6
"""Prices in other units round differently in their last bits (log(7 x) is not log 7 + log x to
the bit), and the garch baseline's fits of returns so rounded land within about 1e-7 of each
other; a floor or a tolerance in price units is off by far more."""


def write_exact(df: pd.DataFrame, path: Path) -> None:
    out = df.rename(columns=str.capitalize).rename_axis("Date")
    out.to_csv(path, float_format="%.17g")


def bars_a() -> pd.DataFrame:
    return generate_bars("2019-01-02", "2024-12-31", seed=11)


def bars_b() -> pd.DataFrame:
    return generate_bars("2022-01-03", "2024-12-31", seed=12)


def times(df: pd.DataFrame, k: float, columns=PRICES) -> pd.DataFrame:
    out = df.copy()
    out[columns] = out[columns] * k
    return out


def folder(path: Path, frames: dict[str, pd.DataFrame]) -> Path:
    path.mkdir(parents=True)
    for sym, df in frames.items():
        write_exact(df, path / f"{sym}.csv")
    return path


def trained(path: Path, frames: dict[str, pd.DataFrame], **overrides) -> tuple[Path, Path]:
    """(run, data folder): a tiny run trained on ``frames``, the tickers in the given order."""
    data = folder(path / "data", frames)
    cfg = fc.load_config(None, tiny_overrides(data, **{"data.tickers": list(frames), **overrides}))
    return fc.train(cfg, run_dir=path / "run").run_dir, data


def outputs(run: Path, out: Path, **kw) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(evaluate's predictions, its metrics, predict's forecasts) of ``run``."""
    report = fc.evaluate(run, **kw)
    forecasts = fc.predict(run, offline=True, out=str(out), max_staleness=10_000, **kw).forecasts
    return report.predictions, report.metrics, forecasts


def rows(df: pd.DataFrame, ticker: str) -> pd.DataFrame:
    return df[df["ticker"] == ticker].reset_index(drop=True)


def same(a: pd.DataFrame, b: pd.DataFrame, columns, rtol: float = 0.0, k: float = 1.0) -> None:
    """``b``'s ``columns`` are ``a``'s times ``k`` (to ``rtol``), with NaN at the same places."""
    assert len(a) == len(b) and len(a)
    for c in columns:
        np.testing.assert_allclose(b[c].to_numpy(float), k * a[c].to_numpy(float), rtol=rtol, atol=0, err_msg=c)


def ordered(df: pd.DataFrame, lo: str, mid: str, hi: str) -> bool:
    known = df[[lo, mid, hi]].dropna()
    return bool(((known[lo] <= known[mid]) & (known[mid] <= known[hi])).all())


def assert_intervals_hold_their_medians(pred: pd.DataFrame, forecasts: pd.DataFrame) -> None:
    assert ordered(forecasts, *QUANTILE_COLUMNS) and ordered(pred, *QUANTILE_COLUMNS)
    for name in ("hist", "ewma", "garch"):
        assert ordered(pred, *(f"{name}_{q}" for q in QUANTILE_COLUMNS)), name


@pytest.fixture(scope="module")
def unscaled(tmp_path_factory):
    """The run of the two tickers as generated, and its outputs."""
    path = tmp_path_factory.mktemp("unscaled")
    run, data = trained(path, {"STOCKA": bars_a(), "STOCKB": bars_b()})
    return run, data, outputs(run, path / "forecasts")


# ------------------------------------------------------------------------------- price units


@pytest.mark.parametrize("k", [0.01, 7.0, 1000.0])
def test_prices_in_other_units_give_every_forecast_and_metric_in_those_units(unscaled, tmp_path, k):
    """The network reads returns and ratios, every baseline log returns, and each metric is a
    ratio or in price units: STOCKA's prices times k give its forecasts, baselines, errors,
    widths and losses times k and the same ratios and p-values; STOCKB's are unchanged."""
    _, _, (pred0, metrics0, forecasts0) = unscaled
    run, _ = trained(tmp_path, {"STOCKA": times(bars_a(), k), "STOCKB": bars_b()})
    pred, metrics, forecasts = outputs(run, tmp_path / "forecasts")

    same(rows(pred0, "STOCKA"), rows(pred, "STOCKA"), PRICE_COLUMNS, RTOL, k)
    same(rows(forecasts0, "STOCKA"), rows(forecasts, "STOCKA"), ["last_close", *QUANTILE_COLUMNS], RTOL, k)
    a0, a = rows(metrics0, "STOCKA"), rows(metrics, "STOCKA")
    assert a["model"].tolist() == a0["model"].tolist() and a["best_vol"].tolist() == a0["best_vol"].tolist()
    same(a0, a, IN_PRICE_UNITS, RTOL, k)
    same(a0, a, SCALE_FREE, 1e-6)  # p-values of differentials that round apart in their last bits
    same(rows(pred0, "STOCKB"), rows(pred, "STOCKB"), PRICE_COLUMNS)
    same(rows(metrics0, "STOCKB"), rows(metrics, "STOCKB"), IN_PRICE_UNITS + SCALE_FREE)
    assert_intervals_hold_their_medians(pred, forecasts)


def test_volume_in_other_units_changes_the_forecasts_by_the_one_share_in_its_change_at_most(unscaled, tmp_path):
    """The volume enters as log((v + 1) / (v_before + 1)): in lots of 7 shares, the added share
    moves that change by 1e-6 of itself on volumes near a million, and nothing else changes."""
    _, _, (pred0, _, forecasts0) = unscaled
    run, _ = trained(tmp_path, {"STOCKA": times(bars_a(), 7.0, ["volume"]), "STOCKB": bars_b()})
    pred, _, forecasts = outputs(run, tmp_path / "forecasts")
    same(pred0, pred, ["actual", "last_close", *BASELINE_COLUMNS])
    same(pred0, pred, QUANTILE_COLUMNS, 1e-6)
    same(forecasts0, forecasts, QUANTILE_COLUMNS, 1e-6)


def test_a_revised_history_refits_the_garch_baseline_at_any_price_scale(unscaled, tmp_path):
    """Bars revised before the test split (two years moved by half, the first test origin's
    close by 0.1 %) are not the bars the run's garch fit was made on, so evaluate fits the
    baseline again, whatever the prices' units. Read with an absolute tolerance of 1e-8, closes
    of a few ten-millionths (a token's price) took the revised close for the same one and kept
    the fit: its bounds were 0.9 % off those of the same bars in dollars."""
    k = 1e-9
    run1, _, _ = unscaled
    runk, _ = trained(tmp_path / "tiny", {"STOCKA": times(bars_a(), k), "STOCKB": bars_b()})
    first = pd.Timestamp(fc.load_run(run1).manifest.tickers["STOCKA"].garch.origin)
    revised = bars_a()
    revised.loc["2021-03-01":first, PRICES] *= 1.5
    revised.loc["2022-09-01":first, PRICES] *= 1.001 / 1.5
    got = {}
    for scale, run in ((1.0, run1), (k, runk)):
        data = folder(tmp_path / f"revised-{scale:g}", {"STOCKA": times(revised, scale)})
        got[scale] = fc.evaluate(run, data_dir=data).predictions
    same(got[1.0], got[k], [f"garch_{q}" for q in QUANTILE_COLUMNS], RTOL, k)


# --------------------------------------------------------------------------- ticker names


def test_tickers_in_another_order_or_renamed_in_the_same_order_give_the_same_forecasts(unscaled, tmp_path):
    """The run's tickers are trained in the order of their names, whatever the order given: the
    config's list reversed, or both renamed so that they sort as before, change nothing but
    the names in any forecast or metric."""
    _, _, (pred0, metrics0, forecasts0) = unscaled
    reversed_run, _ = trained(tmp_path / "reversed", {"STOCKB": bars_b(), "STOCKA": bars_a()})
    renamed_run, _ = trained(tmp_path / "renamed", {"ALPHA": bars_a(), "BETA": bars_b()})
    names = {"ALPHA": "STOCKA", "BETA": "STOCKB"}
    for run, out in ((reversed_run, "reversed"), (renamed_run, "renamed")):
        pred, metrics, forecasts = (df.replace({"ticker": names}) for df in outputs(run, tmp_path / out / "fc"))
        pd.testing.assert_frame_equal(pred, pred0, check_exact=True)
        pd.testing.assert_frame_equal(metrics, metrics0, check_exact=True)
        pd.testing.assert_frame_equal(forecasts.drop(columns="run"), forecasts0.drop(columns="run"), check_exact=True)


def test_other_names_or_another_ticker_leave_every_baseline_as_it_was(unscaled, tmp_path):
    """A name that sorts elsewhere gives the ticker another place in the network's embedding, and
    a third ticker another network; neither changes a baseline's forecast or metric of the
    others, which read each ticker's own bars."""
    _, _, (pred0, metrics0, _) = unscaled
    baselines0 = metrics0[metrics0["ticker"].isin(TICKERS) & (metrics0["model"] != "gru")].reset_index(drop=True)
    third = generate_bars("2020-01-02", "2024-12-31", seed=13)
    cases = {
        "renamed": ({"ZULU": bars_a(), "ALPHA": bars_b()}, {"ZULU": "STOCKA", "ALPHA": "STOCKB"}),
        "added": ({"STOCKA": bars_a(), "STOCKB": bars_b(), "STOCKC": third}, {}),
    }
    for case, (frames, names) in cases.items():
        run, _ = trained(tmp_path / case, frames)
        report = fc.evaluate(run)
        pred = report.predictions.replace({"ticker": names})
        pred = pred[pred["ticker"].isin(TICKERS)].sort_values(["ticker", "origin", "step"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(pred[BASELINE_COLUMNS], pred0[BASELINE_COLUMNS], check_exact=True)
        metrics = report.metrics.replace({"ticker": names})
        metrics = metrics[metrics["ticker"].isin(TICKERS) & (metrics["model"] != "gru")]
        metrics = metrics.sort_values(["ticker", "model", "step"], key=_in_order_of(baselines0)).reset_index(drop=True)
        pd.testing.assert_frame_equal(metrics, baselines0, check_exact=True)


def _in_order_of(table: pd.DataFrame):
    """A sort key putting rows in the order of ``table``'s tickers and models."""
    order = {c: {v: i for i, v in enumerate(dict.fromkeys(table[c]))} for c in ("ticker", "model")}
    return lambda col: col.map(order[col.name]) if col.name in order else col


# ------------------------------------------------------------------------------- causality


def test_bars_that_come_later_change_no_forecast_made_before_them(tmp_path):
    """The run trained on bars to March evaluated on bars to December forecasts each origin of
    its test split as it did on bars to March; and predict as of a day (a Friday, the Saturday
    after it, a holiday) on the longer bars gives what it gives on the bars cut there, with
    the intervals brought up to date with the outcomes to that day and none after, and what
    evaluate's walk forward forecast at that day."""
    frames = {"STOCKA": bars_a(), "STOCKB": bars_b()}
    run, short = trained(tmp_path, {s: df.loc[:"2024-03-28"] for s, df in frames.items()})
    full = folder(tmp_path / "full", frames)
    before = fc.evaluate(run).predictions
    after = fc.evaluate(run, data_dir=full).predictions
    assert len(after) > len(before)
    pd.testing.assert_frame_equal(after.merge(before[["ticker", "origin", "step"]]), before, check_exact=True)
    late_on = {}
    for day in ("2024-06-28", "2024-06-29", "2024-07-04"):
        cut = folder(tmp_path / day, {s: df.loc[:day] for s, df in frames.items()})
        late = fc.predict(run, as_of=day, data_dir=full, out=str(tmp_path / "late" / day), max_staleness=10_000)
        late_on[day] = late.forecasts
        now = fc.predict(run, data_dir=cut, out=str(tmp_path / "now" / day), max_staleness=10_000)
        assert late.recalibrated == now.recalibrated and late.recalibrated["STOCKA"] > 0
        pd.testing.assert_frame_equal(late.forecasts, now.forecasts, check_exact=True)
    # the forecast of a day is the one evaluate's walk forward made at that origin (to the
    # rounding of the local volatility's start, 2**-50 of it: predict reads the recent bars only)
    walked = after[after["origin"] == "2024-06-28"].reset_index(drop=True)
    same(walked, late_on["2024-06-28"], ["last_close", *QUANTILE_COLUMNS], 1e-12)
    assert walked["date"].tolist() == late_on["2024-06-28"]["date"].tolist()


# ------------------------------------------------------------------------------ time shift


def test_the_same_prices_weeks_earlier_give_the_same_forecasts_on_dates_as_many_weeks_earlier(tmp_path):
    """On a calendar that trades every day, the same bars 288 weeks earlier (same weekdays) give
    the same forecast values and metrics, each date 288 weeks earlier."""
    shift = pd.Timedelta(weeks=288)
    frames = {"STOCKA": generate_bars("2021-01-04", "2024-12-31", seed=11, calendar="24/7")}
    frames["STOCKB"] = generate_bars("2022-06-01", "2024-12-31", seed=12, calendar="24/7")
    earlier = {s: df.set_axis(df.index - shift) for s, df in frames.items()}
    got = []
    for case, bars in (("now", frames), ("earlier", earlier)):
        run, _ = trained(tmp_path / case, bars, **{"data.calendar": "24/7"})
        got.append(outputs(run, tmp_path / case / "fc"))
    (pred0, metrics0, forecasts0), (pred, metrics, forecasts) = got
    for column in ("origin", "date"):
        pred[column] = (pd.to_datetime(pred[column]) + shift).dt.strftime("%Y-%m-%d")
    for column in ("as_of", "date"):
        forecasts[column] = (pd.to_datetime(forecasts[column]) + shift).dt.strftime("%Y-%m-%d")
    pd.testing.assert_frame_equal(pred, pred0, check_exact=True)
    pd.testing.assert_frame_equal(metrics, metrics0, check_exact=True)
    pd.testing.assert_frame_equal(forecasts, forecasts0, check_exact=True)


# ---------------------------------------------------------------------------- idempotence


def _bytes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_evaluate_and_score_run_again_write_the_same_bytes(tmp_path):
    frames = {"STOCKA": bars_a(), "STOCKB": bars_b()}
    run, _ = trained(tmp_path, {s: df.loc[:"2024-09-30"] for s, df in frames.items()})
    full = folder(tmp_path / "full", frames)
    out = tmp_path / "forecasts"
    for day in ("2024-10-15", "2024-11-01"):
        fc.predict(run, as_of=day, data_dir=full, out=str(out), max_staleness=10_000)
    written = []
    for _ in range(2):
        fc.evaluate(run, data_dir=full)
        fc.score(run, out=str(out), data_dir=full)
        written.append((_bytes(run / "eval"), _bytes(out)))
    assert written[0] == written[1] and "score.csv" in str(written[0][1])


def test_the_same_bars_downloaded_again_leave_the_store_as_it_was(tmp_path):
    bars = bars_a()
    fetch = lambda sym, start, end: bars.loc[start:end]  # noqa: E731
    update_ticker(tmp_path, "STOCKA", fetch)
    stored = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = update_ticker(tmp_path, "STOCKA", fetch)
    assert again.added == 0 and not again.refetched
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == stored
    pd.testing.assert_frame_equal(load_store(tmp_path, "STOCKA"), bars, check_freq=False, check_exact=True)


# ------------------------------------------------------------------------------- baselines

FIXED_GARCH = GarchParams(omega=0.02, alpha=0.05, gamma=0.05, beta=0.9, nu=6.0)
BASELINES = {
    "naive": naive,
    "drift": drift,
    "mean": mean,
    "hist": hist,
    "ewma": ewma,
    "garch": lambda close, origins, h: garch(close, origins, h, params=FIXED_GARCH),
}


@st.composite
def closes(draw) -> np.ndarray:
    """Closes of a random walk, a trending one, one that often does not move, or one that never does."""
    n = draw(st.integers(60, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    returns = rng.normal(0.0, 0.02, n)
    kind = draw(st.sampled_from(["walk", "trend", "halts", "flat"]))
    if kind == "trend":
        returns += 0.01
    elif kind == "halts":
        returns[rng.random(n) < 0.5] = 0.0
    elif kind == "flat":
        returns[:] = 0.0
    return np.round(draw(st.floats(0.5, 500.0)) * np.exp(np.cumsum(returns)), 4)


@settings(max_examples=40)
@given(closes(), st.sampled_from([1e-6, 0.01, 7.0, 1000.0]), st.integers(1, 6), st.data())
def test_baselines_scale_with_the_prices_ignore_later_bars_and_hold_their_medians(close, k, horizon, data):
    """Every baseline reads log returns: closes times k give forecasts times k; the closes after
    an origin change none of its forecasts (to the bit); p10 <= p50 <= p90; and the ewma and
    garch intervals, of a variance that adds up step by step, widen with the step (hist's need
    not: the spread of h-step returns of a series that reverts, or of a sample, may shrink)."""
    origins = np.arange(len(close) // 2, len(close))
    cut = data.draw(st.integers(int(origins[0]), len(close) - 1), label="cut")
    for name, baseline in BASELINES.items():
        got = baseline(close, origins, horizon)
        np.testing.assert_allclose(baseline(k * close, origins, horizon), k * got, rtol=1e-9, err_msg=name)
        early = origins[origins <= cut]
        np.testing.assert_array_equal(baseline(close[: cut + 1], early, horizon), got[: len(early)], err_msg=name)
        if got.ndim == 3:
            assert ordered(pd.DataFrame(got.reshape(-1, 3), columns=QUANTILE_COLUMNS), *QUANTILE_COLUMNS), name
        if name in ("ewma", "garch"):
            steps = np.diff(np.log(got[:, :, 2]) - np.log(got[:, :, 0]), axis=1)
            assert (steps[np.isfinite(steps)] >= -1e-12).all(), name


def test_the_ewma_and_garch_baselines_read_no_return_after_an_origin_to_the_last_bit():
    """Parameters fitted beforehand skip the garch fit, not the causality: the recursion's
    starting variance, from the first 75 returns of the bars filtered, read the returns after an
    origin among them, so the bars that came later changed that origin's bounds; and the first
    bar, with no return before it, has no bounds (as ewma's and hist's). The ewma variance, a
    matrix product, changed in its last bit with the number of origins."""
    close = 100 * np.exp(np.cumsum(np.random.default_rng(5).normal(0.0, 0.02, 1000)))
    origins = np.arange(0, 1000)
    for name in ("ewma", "garch"):
        got = BASELINES[name](close, origins, 3)
        for cut in (1, 10, 27, 40, 74, 153, 200, 333, 640, 997):
            early = BASELINES[name](close[: cut + 1], origins[: cut + 1], 3)
            np.testing.assert_array_equal(early, got[: cut + 1], err_msg=f"{name} cut at {cut}")
        if name == "garch":
            assert np.isnan(got[0, :, [0, 2]]).all() and np.isfinite(got[1:]).all()
    # ewma's origins are each their own (garch's are filtered from the first origin asked for)
    got = ewma(close, origins, 3)
    for cut in (151, 445, 566, 597, 640, 997):
        np.testing.assert_array_equal(ewma(close[: cut + 1], [cut], 3)[0], got[cut], err_msg=f"ewma at {cut} alone")
