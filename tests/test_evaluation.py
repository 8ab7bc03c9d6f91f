import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import python_env, record_blocks

from forecaster.checkpoint import load_run
from forecaster.evaluation import evaluate, lag_report, walk_forward
from forecaster.store import load_bars


def _pred(p50_fn, n=300, seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n + 1)))
    last, actual = close[:-1], close[1:]
    return pd.DataFrame(
        {
            "ticker": "X",
            "origin": pd.bdate_range("2024-01-01", periods=n).astype(str),
            "step": 1,
            "last_close": last,
            "actual": actual,
            "p50": p50_fn(last, actual),
        }
    )


def test_lag_detector_flags_a_copy_of_the_last_close():
    lag = lag_report(_pred(lambda last, actual: last * 1.0001))
    assert bool(lag.loc[0, "copies_last_value"])
    assert lag.loc[0, "r2"] > 0.99 and lag.loc[0, "slope"] == pytest.approx(1.0001, abs=1e-3)


def test_lag_detector_does_not_flag_a_forecast_with_information():
    lag = lag_report(_pred(lambda last, actual: actual))  # an oracle
    assert not bool(lag.loc[0, "copies_last_value"])
    assert lag.loc[0, "r2"] < 0.5


def test_lag_report_reads_each_tickers_rows_in_origin_order_whatever_the_rows_order():
    """Two tickers' rows shuffled together, steps 1 and 2 mixed: each ticker's report is that of
    its own step-1 rows in origin order, the tickers in the order they first appear."""
    copy = _pred(lambda last, actual: last * 1.0001).assign(ticker="COPY")
    oracle = _pred(lambda last, actual: actual, seed=1).assign(ticker="ORACLE")
    later = _pred(lambda last, actual: actual * 2, seed=2).assign(ticker="COPY", step=2)  # step 2: not read
    rows = pd.concat([oracle, copy, later], ignore_index=True)
    alone = pd.concat([lag_report(oracle), lag_report(copy)], ignore_index=True)
    shuffled = rows.sample(frac=1.0, random_state=3)
    first = list(dict.fromkeys(shuffled.loc[shuffled["step"] == 1, "ticker"]))
    got = lag_report(shuffled)
    assert got["ticker"].tolist() == first
    pd.testing.assert_frame_equal(got.set_index("ticker").loc[["ORACLE", "COPY"]], alone.set_index("ticker"))
    assert got.set_index("ticker").loc["COPY", "copies_last_value"]


def test_walk_forward_uses_only_data_up_to_each_origin(trained_run, sample_dir):
    run = load_run(trained_run)
    bars = load_bars("csv", sample_dir, run.names)
    base = walk_forward(run, bars)
    origin = sorted(base["origin"].unique())[len(base["origin"].unique()) // 2]
    # wreck every bar after the origin: the forecast made at the origin must not change
    cut = pd.Timestamp(origin)
    wrecked = {}
    for sym, df in bars.items():
        df = df.copy()
        after = df.index > cut
        df.loc[after, ["open", "high", "low", "close"]] *= np.linspace(0.5, 2.0, after.sum())[:, None]
        wrecked[sym] = df
    again = walk_forward(run, wrecked)
    cols = ["ticker", "origin", "step", "last_close", "p10", "p50", "p90", "naive", "drift", "mean"]
    a = base[base["origin"] == origin][cols].reset_index(drop=True)
    b = again[again["origin"] == origin][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    # ... while the actuals after it did change
    assert not np.allclose(base[base["origin"] == origin]["actual"], again[again["origin"] == origin]["actual"])


def test_every_test_session_is_forecast_once_per_step(run_copy):
    rep = evaluate(run_copy)  # a copy: evaluate writes eval/ into the run, which others share
    p = rep.predictions
    test_days = load_run(run_copy).config.window.test_days
    assert set(p["ticker"]) == {"STOCKA", "STOCKB"}
    for _sym, g in p.groupby("ticker"):
        assert (g["step"] == 1).sum() == test_days
        assert not g.duplicated(["origin", "step"]).any()
    # baselines: naive is the last close, and the model's intervals bracket its median
    assert np.allclose(p["naive"], p["last_close"])
    assert (p["p10"] <= p["p50"]).all() and (p["p50"] <= p["p90"]).all()
    assert set(rep.lag["ticker"]) == set(p["ticker"])


def test_the_garch_fit_made_at_training_is_the_one_evaluate_would_make(run_copy):
    """Training fits the garch baseline once at the first test origin; evaluate's baseline with
    that fit equals the one it fits itself, and a run without it still gets the baseline."""
    import json

    meta = json.loads((run_copy / "run.json").read_text())
    assert all(t["garch"] is not None for t in meta["tickers"].values())
    with_fit = evaluate(run_copy).metrics
    for t in meta["tickers"].values():
        t["garch"] = None
    (run_copy / "run.json").write_text(json.dumps(meta))
    fitted_here = evaluate(run_copy).metrics
    garch = [m[m["model"] == "garch"].reset_index(drop=True) for m in (with_fit, fitted_here)]
    pd.testing.assert_frame_equal(garch[0], garch[1], rtol=1e-9)
    assert garch[0]["pinball"].gt(0).all()


def test_evaluate_with_the_fits_made_at_training_does_not_load_arch(run_copy):
    """arch takes seconds to import: evaluate loads it only for a ticker it must fit itself."""
    import json
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from forecaster.evaluation import evaluate; "
        f"evaluate(Path({str(run_copy)!r}), jobs=1); print('arch' in sys.modules)"
    )

    def loads_arch() -> bool:
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=python_env(), timeout=120
        )
        assert res.returncode == 0, res.stderr
        return res.stdout.strip().splitlines()[-1] == "True"

    assert not loads_arch()
    meta = json.loads((run_copy / "run.json").read_text())
    for t in meta["tickers"].values():
        t["garch"] = None  # no fit in the run: the baseline fits, with arch
    (run_copy / "run.json").write_text(json.dumps(meta))
    assert loads_arch()


def test_backtest_in_processes_equals_the_backtest_in_one(run_copy, monkeypatch):
    """Tickers shared among processes, each block backtested apart: the same predictions and
    metrics (pooled rows included), the same files byte for byte."""
    from forecaster import evaluation

    serial = evaluate(run_copy, jobs=1)
    files = {name: path.read_bytes() for name, path in serial.files.items()}
    pools = record_blocks(monkeypatch, evaluation, "_backtest_block")  # two tickers: a process each
    shared = evaluate(run_copy, jobs=2)
    assert pools == [(2, [["STOCKA"], ["STOCKB"]])]
    pd.testing.assert_frame_equal(shared.predictions, serial.predictions)
    pd.testing.assert_frame_equal(shared.metrics, serial.metrics)
    assert {name: path.read_bytes() for name, path in shared.files.items()} == files
    assert set(shared.metrics["ticker"]) == {"STOCKA", "STOCKB", "ALL"}
    # the tickers named in another order: the same blocks, the same files
    pools.clear()
    named = evaluate(run_copy, jobs=2, tickers=["STOCKB", "STOCKA"])
    assert pools == [(2, [["STOCKA"], ["STOCKB"]])]
    assert {name: path.read_bytes() for name, path in named.files.items()} == files


@given(st.integers(1, 3000), st.integers(2, 16))
def test_blocks_cover_the_tickers_in_order_and_shrink_to_a_floor(n, processes):
    """Large blocks first, then smaller ones: never below the floor (or an even share, for few
    tickers), so no process idles long behind another's last block."""
    from forecaster.pool import BLOCK_SHARE, MIN_TICKERS_PER_BLOCK
    from forecaster.pool import blocks as _blocks

    names = [f"T{i}" for i in range(n)]
    blocks = _blocks(names, processes)
    assert [s for b in blocks for s in b] == names
    sizes = [len(b) for b in blocks]
    floor = min(MIN_TICKERS_PER_BLOCK, -(-n // processes))
    assert min(sizes) >= floor
    assert sizes[:-1] == sorted(sizes[:-1], reverse=True)  # the last may take the few left over
    left = n
    for size in sizes[:-1]:
        assert size == max(floor, -(-left // (BLOCK_SHARE * processes)))
        left -= size
    assert sizes[-1] == left < max(floor, -(-left // (BLOCK_SHARE * processes))) + floor  # the rest joins the last
    if n >= 4 * BLOCK_SHARE * processes * MIN_TICKERS_PER_BLOCK:  # a large universe: the last blocks are small
        assert sizes[-1] < 2 * MIN_TICKERS_PER_BLOCK and sizes[0] >= n // (BLOCK_SHARE * processes)


def test_bad_bars_read_in_a_process_fail_as_they_do_in_one(run_copy, sample_dir, tmp_path, monkeypatch):
    """Each process reads its own tickers' bars: a bad file fails its ticker with the same
    error in either case (the other is evaluated), and when every file is bad the evaluation
    fails with the same error, leaving no eval/ folder behind."""
    from forecaster import evaluation
    from forecaster.errors import DataError

    bad = tmp_path / "bad"
    shutil.copytree(sample_dir, bad)
    monkeypatch.setattr(evaluation, "MIN_TICKERS_PER_JOB", 1)  # two tickers: a process each

    def spoil(sym):
        lines = (bad / f"{sym}.csv").read_text().splitlines()
        cells = lines[40].split(",")
        lines[40] = ",".join([cells[0], "abc", *cells[2:]])
        (bad / f"{sym}.csv").write_text("\n".join(lines) + "\n")

    spoil("STOCKB")
    failed = []
    for jobs in (1, 2):
        rep = evaluate(run_copy, data_dir=bad, jobs=jobs)
        assert rep.exit_code == 3 and set(rep.predictions["ticker"]) == {"STOCKA"}
        failed.append(rep.failed)
    assert failed[0] == failed[1] and list(failed[0]) == ["STOCKB"]
    assert failed[0]["STOCKB"]["file"] == str(bad / "STOCKB.csv") and "'abc'" in failed[0]["STOCKB"]["error"]
    shutil.rmtree(run_copy / "eval")
    spoil("STOCKA")
    errors = []
    for jobs in (1, 2):
        with pytest.raises(DataError) as caught:
            evaluate(run_copy, data_dir=bad, jobs=jobs)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert "STOCKA.csv" in errors[0] and "STOCKB.csv" in errors[0] and "'abc'" in errors[0]
    assert not (run_copy / "eval").exists()


def test_verdict_calls_a_skill_of_zero_no_better_and_only_a_negative_one_worse():
    """A median equal to the last close has skill exactly 0: it is no better than naive, not
    worse (``score --fail-if-no-skill`` reads the verdict without the run's median gate)."""
    from forecaster.evaluation import EvalReport

    rows = pd.DataFrame(
        {
            "ticker": "ALL",
            "model": "lstm",
            "step": [1, 2, 3, 4],
            "skill": [0.0, -0.0125, 0.02, 0.9325],
            "dm_pvalue": [np.nan, 0.9, 0.3, np.nan],
        }
    )
    report = EvalReport(run="r", model="lstm", metrics=rows, predictions=pd.DataFrame(), out_dir=Path("."))
    ok, sentence = report.verdict(0.05)
    assert not ok
    assert "h=1: no better than naive (skill +0.00%)" in sentence
    assert "h=2: worse than naive (skill -1.25%)" in sentence
    assert "h=3: not significantly better than naive (skill +2.00%, DM p=0.300)" in sentence
    # two forecasts scored: no test to read, said so rather than "DM p=nan"
    assert "h=4: not significantly better than naive (skill +93.25%, DM p n/a: too few forecasts)" in sentence


def test_verdict_says_why_the_median_is_the_last_close():
    """Gate shut by the validation test, or by ``model.median_alpha = 0`` at every step: the
    latter read "the network's did not beat it on validation" though no test was made."""
    from forecaster.evaluation import EvalReport

    rows = pd.DataFrame({"ticker": "ALL", "model": "lstm", "step": [1, 2], "skill": 0.0, "dm_pvalue": np.nan})
    said = {}
    for alpha in (0.05, 0.0):
        report = EvalReport(
            run="r", model="lstm", metrics=rows, predictions=pd.DataFrame(), out_dir=Path("."), median_weight=[0.0, 0.0]
        )
        report.median_alpha = alpha
        said[alpha] = report.verdict(0.05)[1]
    assert "h=2: the median is the last close (the network's did not beat it on validation)" in said[0.05]
    assert "h=1: the median is the last close (model.median_alpha = 0 never uses the network's)" in said[0.0]
    assert "did not beat it" not in said[0.0]


def test_interval_verdict_says_a_baseline_with_a_loss_of_zero_leaves_no_ratio():
    """A price that never moved: the best baseline hit every actual, its pinball loss 0 and the
    ratio empty. The verdict says so instead of quoting "pinball nanx" (or 3e10x, before)."""
    from forecaster.evaluation import EvalReport

    rows = pd.DataFrame(
        {
            "ticker": "ALL",
            "model": ["lstm", "hist", "lstm", "hist"],
            "step": [1, 1, 2, 2],
            "coverage": [1.0, 1.0, 0.8, 0.8],
            "kupiec_pvalue": [0.0, 0.0, 0.5, 0.5],
            "dm_pinball_pvalue": [1.0, np.nan, 0.01, np.nan],
            "best_vol": ["hist", np.nan, "hist", np.nan],
            "pinball_ratio": [np.nan, np.nan, 0.9, np.nan],
        }
    )
    report = EvalReport(run="r", model="lstm", metrics=rows, predictions=pd.DataFrame(), out_dir=Path("."))
    ok, sentence = report.interval_verdict(0.05)
    assert not ok
    assert "h=1: hist's pinball loss is 0 (its bounds held every actual: the price did not move)" in sentence
    assert "nan" not in sentence
    assert "h=2: pinball 0.900x hist's (DM p=0.010)" in sentence


@pytest.mark.parametrize(("slope", "flagged"), [(1.03, True), (1.3, False), (0.7, False)])
def test_lag_detector_flags_only_a_slope_within_005_of_one(slope, flagged):
    """A median whose moves are exactly 1.3 (or 0.7) times the last close's is fully explained by
    it (R^2 = 1) but is no copy of it: it extrapolates (or damps) the move. Only a slope within
    0.05 of 1 is the last value shifted forward."""
    lag = lag_report(_pred(lambda last, actual: slope * last - (slope - 1) * 100.0))
    assert lag.loc[0, "slope"] == pytest.approx(slope, rel=1e-9) and lag.loc[0, "r2"] == pytest.approx(1.0)
    assert bool(lag.loc[0, "copies_last_value"]) is flagged


def test_mase_divides_by_the_naive_error_over_the_training_split(trained_run, sample_dir):
    """MASE's denominator is each ticker's one-step naive MAE over its training split (bars
    before the validation split), not over the validation split too."""
    from forecaster.baselines import naive_scale
    from forecaster.evaluation import DataSource, backtest

    run = load_run(trained_run)
    done = backtest(run, run.names, DataSource("csv", sample_dir), None)
    bars = load_bars("csv", sample_dir, run.names)
    val_start = pd.Timestamp(run.splits().val_start)
    for sym, df in bars.items():
        train = df["close"][df.index < val_start].to_numpy()
        assert done.mase_scale[sym] == pytest.approx(naive_scale(train), rel=1e-12)
        assert done.mase_scale[sym] != pytest.approx(
            naive_scale(df["close"][df.index < pd.Timestamp(run.splits().test_start)].to_numpy()), rel=1e-9
        )
        p = done.predictions[(done.predictions["ticker"] == sym) & (done.predictions["step"] == 1)]
        m = done.metrics.set_index(["ticker", "model", "step"]).loc[(sym, "naive", 1)]
        assert m["mase"] == pytest.approx(np.mean(np.abs(p["actual"] - p["naive"])) / naive_scale(train), rel=1e-9)


def test_a_ticker_whose_bars_end_on_the_split_start_is_called_too_few_not_ended():
    """Bars that end on the test split's first session reach into it: the message says they are
    too few for one forecast with an actual, not that they end before the split."""
    from types import SimpleNamespace

    from forecaster.evaluation import TOO_FEW, _no_origin

    run = SimpleNamespace(config=SimpleNamespace(window=SimpleNamespace(lookback=20)))
    why = {"reason": TOO_FEW, "last_date": "2024-07-01", "split_start": "2024-07-01"}
    said = _no_origin("X", why, run)
    assert said.startswith("its bars (to 2024-07-01) are too few for one forecast with an actual")
    assert "22 bars" in said
    why["last_date"] = "2024-06-28"
    assert _no_origin("X", why, run) == "its bars end 2024-06-28, before the test split starts (2024-07-01)"


def test_the_runs_garch_fit_serves_only_origins_it_would_have_been_made_for(trained_run, sample_dir):
    """The fit made at training is used for the test origins when it was made at the first one,
    on its close, and no refit falls due among them (250 origins); otherwise the baseline fits
    itself, as it would without the run's fit."""
    from forecaster.baselines import GARCH_REFIT_EVERY, GarchParams
    from forecaster.evaluation import _same_fit

    run = load_run(trained_run)
    ws = run.windows(load_bars("csv", sample_dir, run.names))
    ends = ws.origins("test")
    sym = ws.tickers[0]
    mine = ends[ws.ticker_id[ends] == ws.names.index(sym)]
    fit = run.manifest.tickers[sym].garch
    got = _same_fit(fit, ws, mine)
    assert got == GarchParams(fit.omega, fit.alpha, fit.gamma, fit.beta, fit.nu)
    longer = int(mine.min()) + np.arange(GARCH_REFIT_EVERY + 1)
    assert _same_fit(fit, ws, longer[:GARCH_REFIT_EVERY]) == got
    assert _same_fit(fit, ws, longer) is None  # a refit due at the 251st origin
    assert _same_fit(fit, ws, mine[1:]) is None  # made at another origin
    assert _same_fit(fit.model_copy(update={"close": fit.close * 1.01}), ws, mine) is None  # on other bars


def test_lag_detector_does_not_flag_a_median_with_moves_of_its_own():
    """A median that moves one for one with the last close on average (slope 1) but has moves
    of its own as large as half the close's variance (R^2 = 2/3) carries information beyond
    the last value: only R^2 > 0.95 with a slope near 1 is called a copy."""

    def own_moves(last, actual):
        d = np.diff(last)
        e = np.random.default_rng(5).normal(0, 1, d.size)
        x = np.column_stack((np.ones_like(d), d))
        e -= x @ np.linalg.lstsq(x, e, rcond=None)[0]  # uncorrelated with the close's moves
        e *= np.sqrt(0.5 * d.var() / e.var())
        return last[0] + np.concatenate(([0.0], np.cumsum(d + e)))

    lag = lag_report(_pred(own_moves))
    assert lag.loc[0, "slope"] == pytest.approx(1.0, rel=1e-9)
    assert lag.loc[0, "r2"] == pytest.approx(2 / 3, rel=1e-9)
    assert not bool(lag.loc[0, "copies_last_value"])
