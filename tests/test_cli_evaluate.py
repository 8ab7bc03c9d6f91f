"""`forecaster evaluate`: the eval files (SPEC §8 columns), the report, exit codes 0, 1, 2."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import (
    ROOT,
    assert_one_line_error,
    assert_stopped_with_one_line,
    axes_drawn,
    csv_folder_with_a_bar_on,
    error_lines,
    hold_lock,
    run_forecaster_minding_file_modes,
    run_meta,
    run_script,
    stocka_plot_fails,
    stop,
    stopped_in_a_worker,
    tiny_overrides,
)

import forecaster.evaluation

pytestmark = pytest.mark.usefixtures("torch_one_thread")

METRIC_COLUMNS = [
    "ticker",
    "model",
    "step",
    "n",
    "mae",
    "rmse",
    "mape",
    "smape",
    "mase",
    "directional_accuracy",
    "skill",
    "dm_pvalue",
    "coverage",
    "width",
    "pinball",
    "kupiec_pvalue",
    "christoffersen_pvalue",
    "dm_pinball_pvalue",
    "best_vol",
    "pinball_ratio",
]
PREDICTION_COLUMNS = ["ticker", "origin", "step", "date", "actual", "p10", "p50", "p90", "naive"]
MODELS = {"gru", "naive", "drift", "mean", "hist", "ewma", "garch"}


# ---------------------------------------------------------------------------- exit 0


def test_evaluate_writes_metrics_and_predictions(cli, run_copy, sample_dir):
    res = cli("evaluate", "--run", run_copy)
    assert res.exit_code == 0, res.stderr
    meta = run_meta(run_copy)
    H = meta["config"]["window"]["horizon"]
    test_start = pd.Timestamp(meta["splits"]["test_start"])

    pred = pd.read_csv(run_copy / "eval" / "predictions.csv")
    assert list(pred.columns) == PREDICTION_COLUMNS
    assert not pred.duplicated(["ticker", "origin", "step"]).any()
    assert set(pred["ticker"]) == {"STOCKA", "STOCKB"}
    assert sorted(pred["step"].unique()) == list(range(1, H + 1))
    for sym in ("STOCKA", "STOCKB"):
        bars = pd.read_csv(sample_dir / f"{sym}.csv", parse_dates=["Date"])
        test_sessions = bars.loc[bars["Date"] >= test_start, "Date"]
        mine = pred[pred["ticker"] == sym]
        # walk-forward: every test session is the first target of exactly one origin ...
        first = mine[mine["step"] == 1]
        assert list(pd.to_datetime(first["date"])) == list(test_sessions)
        # ... whose inputs end the session before, and the actuals are the real closes
        closes = bars.set_index("Date")["Close"]
        assert list(pd.to_datetime(first["origin"])) == list(
            bars["Date"].iloc[bars.index[bars["Date"] >= test_start] - 1]
        )
        assert mine["actual"].to_numpy() == pytest.approx(closes.loc[pd.to_datetime(mine["date"])].to_numpy())
        assert first["naive"].to_numpy() == pytest.approx(closes.loc[pd.to_datetime(first["origin"])].to_numpy())
    assert (pd.to_datetime(pred["origin"]) < pd.to_datetime(pred["date"])).all()
    assert (pd.to_datetime(pred["date"]) >= test_start).all()
    assert (pred["p10"] <= pred["p50"]).all() and (pred["p50"] <= pred["p90"]).all()

    metrics = pd.read_csv(run_copy / "eval" / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert set(metrics["model"]) == MODELS
    assert set(metrics["ticker"]) == {"STOCKA", "STOCKB", "ALL"}
    assert len(metrics) == 3 * len(MODELS) * H
    assert not metrics.duplicated(["ticker", "model", "step"]).any()
    counts = pred.groupby(["ticker", "step"]).size()
    for _, r in metrics.iterrows():
        if r["ticker"] == "ALL":
            assert r["n"] == (pred["step"] == r["step"]).sum()
        else:
            assert r["n"] == counts[(r["ticker"], r["step"])]
    # skill vs naive does not apply to naive itself: empty, not 0
    assert metrics.loc[metrics["model"] == "naive", "skill"].isna().all()
    assert metrics.loc[metrics["model"] == "gru", "coverage"].between(0, 1).all()
    # the volatility baselines: their median is the last close, their intervals are their own
    for vol in ("hist", "ewma", "garch"):
        mine, naive = (metrics[metrics["model"] == m].set_index(["ticker", "step"]) for m in (vol, "naive"))
        assert mine["mae"].to_numpy() == pytest.approx(naive.loc[mine.index, "mae"].to_numpy())
        assert mine["coverage"].between(0.5, 1).all() and mine["pinball"].gt(0).all()
        assert mine["dm_pinball_pvalue"].isna().all()
    gru = metrics[metrics["model"] == "gru"]
    assert gru["dm_pinball_pvalue"].between(0, 1).all() and gru["kupiec_pvalue"].between(0, 1).all()
    assert gru.loc[gru["step"] == 1, "christoffersen_pvalue"].between(0, 1).all()
    assert gru.loc[gru["step"] > 1, "christoffersen_pvalue"].isna().all()

    out = res.stdout
    assert "walk-forward test metrics" in out
    assert "naive" in out  # the verdict talks about the naive forecast
    assert "best volatility baseline" in out  # ... and the intervals about hist / ewma / garch
    assert str(run_copy / "eval" / "metrics.csv") in out
    assert str(run_copy / "eval" / "predictions.csv") in out


def test_evaluate_quiet_with_a_log_file_logs_its_verdicts(cli, run_copy, tmp_path):
    """With `-q --log-file` the verdicts reach the log as the command's result (stdout stays
    empty), so a scheduled evaluation leaves a record of whether the model beat naive."""
    log = tmp_path / "evaluate.log"
    res = cli("evaluate", "--run", run_copy, "--no-plot", "-q", "--log-file", log)
    assert res.exit_code == 0 and res.stdout == "", res.stdout
    [line] = [ln for ln in log.read_text().splitlines() if " INFO evaluated run " in ln]
    doc = json.loads(cli("evaluate", "--run", run_copy, "--no-plot", "--json").stdout)
    assert line.split(" INFO ", 1)[1] == f"evaluated run {doc['run']}: {doc['verdict']} {doc['interval_verdict']}"
    assert "evaluated run" not in res.stderr


def test_evaluate_json(cli, run_copy):
    res = cli("evaluate", "--run", run_copy, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) == {
        "run",
        "beats_naive",
        "verdict",
        "beats_volatility_baselines",
        "interval_verdict",
        "missing",
        "files",
        "metrics",
        "lag",
    }
    assert isinstance(doc["beats_volatility_baselines"], bool) and "volatility baseline" in doc["interval_verdict"]
    assert doc["missing"] == {}
    assert doc["run"] == run_meta(run_copy)["name"]
    assert isinstance(doc["beats_naive"], bool)
    assert isinstance(doc["verdict"], str) and doc["verdict"]
    assert set(doc["files"]) >= {"metrics", "predictions"}
    rows = doc["metrics"]
    assert rows and all(list(r) == METRIC_COLUMNS for r in rows)
    on_disk = pd.read_csv(run_copy / "eval" / "metrics.csv")
    assert len(rows) == len(on_disk)


def test_evaluate_json_keys_are_documented_in_the_readme(cli, run_copy):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    doc = json.loads(cli("evaluate", "--run", run_copy, "--json").stdout)
    keys = set(doc) | set(doc["lag"][0])
    assert not [k for k in sorted(keys) if f"`{k}`" not in section]


def test_evaluate_names_a_ticker_whose_data_end_before_the_test_split(cli, run_copy, sample_dir, tmp_path):
    """A delisted ticker (or a stale file) is named with its last date, never dropped silently."""
    data = tmp_path / "data"
    data.mkdir()
    test_start = run_meta(run_copy)["splits"]["test_start"]
    (data / "STOCKA.csv").write_text((sample_dir / "STOCKA.csv").read_text())
    b = pd.read_csv(sample_dir / "STOCKB.csv")
    b[b["Date"] < "2024-03-01"].to_csv(data / "STOCKB.csv", index=False)
    last = b.loc[b["Date"] < "2024-03-01", "Date"].iloc[-1]
    assert last < test_start
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "--json")
    assert res.exit_code == 0, res.stderr
    assert f"STOCKB: no test windows: its bars end {last}, before the test split starts ({test_start})" in res.stderr
    doc = json.loads(res.stdout)
    assert doc["missing"] == {
        "STOCKB": {"reason": "ended_before_test_split", "last_date": last, "split_start": test_start}
    }
    assert {r["ticker"] for r in doc["metrics"]} == {"STOCKA", "ALL"}
    # when no ticker is left, it is an error that names them
    b[b["Date"] < "2024-03-01"].to_csv(data / "STOCKA.csv", index=False)
    res = cli("evaluate", "--run", run_copy, "--data-dir", data)
    assert res.exit_code == 1 and "end before the run's test split" in res.stderr


def test_evaluate_forecasts_a_ticker_whose_last_bar_is_the_test_splits_first_session(
    cli, run_copy, sample_dir, tmp_path
):
    """STOCKB's bars end on the test split's first session: the origin the session before has
    an actual for its first step, so STOCKB is evaluated (one forecast) and not named as missing:
    only bars that end before the split have no test window."""
    data = tmp_path / "data"
    data.mkdir()
    test_start = run_meta(run_copy)["splits"]["test_start"]
    (data / "STOCKA.csv").write_text((sample_dir / "STOCKA.csv").read_text())
    b = pd.read_csv(sample_dir / "STOCKB.csv")
    b[b["Date"] <= test_start].to_csv(data / "STOCKB.csv", index=False)
    assert b.loc[b["Date"] <= test_start, "Date"].iloc[-1] == test_start
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "--json")
    assert res.exit_code == 0, res.stderr
    assert "no test windows" not in res.stderr
    doc = json.loads(res.stdout)
    assert doc["missing"] == {}
    assert {r["ticker"] for r in doc["metrics"]} >= {"STOCKA", "STOCKB"}
    pred = pd.read_csv(run_copy / "eval" / "predictions.csv")
    b_rows = pred[pred["ticker"] == "STOCKB"]
    assert len(b_rows) == 1 and b_rows["step"].iloc[0] == 1 and b_rows["date"].iloc[0] == test_start


def test_evaluate_names_the_ticker_and_date_of_a_garch_baseline_without_a_fit(cli, sample_dir, tmp_path):
    """A ticker listed a year before the test split has too few returns for the garch fit:
    the warning names it and its first origin, not an index into its bars."""
    from forecaster.config import load_config
    from forecaster.training import train

    data = tmp_path / "data"
    data.mkdir()
    (data / "STOCKA.csv").write_text((sample_dir / "STOCKA.csv").read_text())
    b = pd.read_csv(sample_dir / "STOCKB.csv")
    b.tail(320).to_csv(data / "STOCKB.csv", index=False)
    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(data, **{"train.epochs": 1})), run_dir=run)
    res = cli("evaluate", "--run", run, "-q")
    assert res.exit_code == 0, res.stderr
    pred = pd.read_csv(run / "eval" / "predictions.csv")
    first = pred.loc[pred["ticker"] == "STOCKB", "origin"].min()
    warned = [ln for ln in res.stderr.splitlines() if "GARCH" in ln]
    assert len(warned) == 1 and f"before origin {first} of STOCKB are too few for a fit" in warned[0], res.stderr


@pytest.mark.parametrize("bars", [22, 45])
def test_evaluate_a_ticker_with_too_little_history_for_some_volatility_baselines(
    cli, run_copy, sample_dir, tmp_path, bars
):
    """Bars listed a few weeks before their end (lookback 20): 22 leave one origin, before any
    volatility baseline has the returns it needs; 45 leave hist without its 50 returns, but not
    ewma. The report compares with the baselines that forecast, and says when none did."""
    data = tmp_path / "data"
    data.mkdir()
    pd.read_csv(sample_dir / "STOCKA.csv").tail(bars).to_csv(data / "STOCKA.csv", index=False)
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "STOCKA")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr and "nan" not in res.stdout
    verdict = next(ln for ln in res.stdout.splitlines() if ln.startswith("The intervals"))
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("| STOCKA")]
    if bars == 22:
        assert "h=1: no volatility baseline could be scored (too little history), coverage" in verdict
        assert [cell.strip() for cell in rows[0].split("|")][11] == ""  # pinball / best vol: none to name
    else:
        assert "h=1: pinball" in verdict and "hist's" not in verdict
        for row in rows:  # pinball / best vol: a ratio to ewma or garch (fitted as ewma without its 250 returns)
            ratio, best = row.split("|")[11].split()
            assert float(ratio) > 0 and best in ("ewma", "garch"), rows


def test_evaluate_a_ticker_asked_for_by_name_without_test_windows_is_an_error_exit_3(
    cli, run_copy, sample_dir, tmp_path
):
    """``evaluate STOCKA STOCKB`` (or -t) when STOCKB's bars end before the test split: an
    error naming it, STOCKA evaluated, exit 3, as SPEC §1 asks of a ticker asked for explicitly;
    it was a warning and exit 0, which a wrapper took for every ticker evaluated. Of the run's
    tickers evaluated by default it stays a warning."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "STOCKA.csv").write_text((sample_dir / "STOCKA.csv").read_text())
    b = pd.read_csv(sample_dir / "STOCKB.csv")
    b[b["Date"] < "2024-03-01"].to_csv(data / "STOCKB.csv", index=False)
    for named in (["STOCKA", "STOCKB"], ["-t", "STOCKA,STOCKB"]):
        res = cli("evaluate", "--run", run_copy, "--data-dir", data, "-q", *named)
        assert_one_line_error(res, 3, "STOCKB: no test windows: its bars end")
        assert set(pd.read_csv(run_copy / "eval" / "predictions.csv")["ticker"]) == {"STOCKA"}
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "-q")
    assert res.exit_code == 0 and error_lines(res) == [], res.stderr
    assert "WARNING: STOCKB: no test windows" in res.stderr


@pytest.mark.parametrize("bars", [1, 10, 21])
def test_evaluate_names_a_ticker_whose_bars_are_too_few_for_one_test_origin(cli, run_copy, sample_dir, tmp_path, bars):
    """Bars that start inside the test split, too few for a forecast with an actual (lookback
    20 + 2; 21 is one too few, 10 or 1 not even a window): named like a ticker whose bars end
    before the split, never dropped silently, and the other tickers evaluated."""
    data = tmp_path / "data"
    data.mkdir()
    a = pd.read_csv(sample_dir / "STOCKA.csv").tail(bars)
    a.to_csv(data / "STOCKA.csv", index=False)
    (data / "STOCKB.csv").write_text((sample_dir / "STOCKB.csv").read_text())
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "--json")
    assert res.exit_code == 0, res.stderr
    last = a["Date"].iloc[-1]
    assert f"STOCKA: no test windows: its bars (to {last}) are too few for one forecast" in res.stderr
    assert "at least 22 bars" in res.stderr
    doc = json.loads(res.stdout)
    split_start = run_meta(run_copy)["splits"]["test_start"]
    assert doc["missing"] == {"STOCKA": {"reason": "too_few_bars", "last_date": last, "split_start": split_start}}
    assert {r["ticker"] for r in doc["metrics"]} == {"STOCKB", "ALL"}
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "STOCKA")
    line = assert_one_line_error(res, 1, "no test windows: STOCKA: its bars", "too few")
    assert "end before" not in line


def _data_without(sample_dir, folder, *gone: str):
    """A copy of the sample's CSV folder at ``folder`` without the files of ``gone``."""
    folder.mkdir()
    for path in sample_dir.glob("*.csv"):
        if path.stem not in gone:
            (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_evaluate_a_ticker_whose_file_is_missing_evaluates_the_others_and_exits_3(cli, run_copy, sample_dir, tmp_path):
    """STOCKB.csv deleted after training: STOCKB is named with the file on stderr and in
    --json's ``missing``, STOCKA is evaluated and written, exit 3 (partial). It was exit 1,
    nothing evaluated."""
    data = _data_without(sample_dir, tmp_path / "data", "STOCKB")
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "--json")
    assert res.exit_code == 3, res.stderr
    assert error_lines(res) == [f"ERROR: STOCKB not evaluated: no CSV file at {data / 'STOCKB.csv'}"]
    doc = json.loads(res.stdout)
    assert doc["missing"] == {
        "STOCKB": {
            "reason": "unreadable",
            "file": str(data / "STOCKB.csv"),
            "error": f"no CSV file at {data / 'STOCKB.csv'}",
        }
    }
    assert {r["ticker"] for r in doc["metrics"]} == {"STOCKA", "ALL"}
    assert set(pd.read_csv(run_copy / "eval" / "predictions.csv")["ticker"]) == {"STOCKA"}
    # the table too, and the same exit code without --json
    res = cli("evaluate", "--run", run_copy, "--data-dir", data)
    assert res.exit_code == 3 and "walk-forward test metrics" in res.stdout, res.stderr
    assert error_lines(res) == [f"ERROR: STOCKB not evaluated: no CSV file at {data / 'STOCKB.csv'}"]


def test_evaluate_with_no_ticker_left_is_an_error_naming_each_and_keeps_the_earlier_evaluation(
    cli, run_copy, sample_dir, tmp_path
):
    """STOCKA's file gone and STOCKB's bars ending before the test split: exit 1, one line that
    names both, and eval/ as it was."""
    assert cli("evaluate", "--run", run_copy, "-q", "--no-plot").exit_code == 0
    before = {p.name: p.read_bytes() for p in (run_copy / "eval").iterdir()}
    data = _data_without(sample_dir, tmp_path / "data", "STOCKA")
    b = pd.read_csv(data / "STOCKB.csv")
    b[b["Date"] < "2024-03-01"].to_csv(data / "STOCKB.csv", index=False)
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "--json")
    line = assert_one_line_error(res, 1, f"STOCKA: no CSV file at {data / 'STOCKA.csv'}", "no test windows")
    assert "the bars of STOCKB end before the run's test split starts" in line
    assert {p.name: p.read_bytes() for p in (run_copy / "eval").iterdir()} == before


def test_evaluate_with_no_readable_ticker_names_a_few_of_them_on_one_line(cli, run_copy, tmp_path, monkeypatch):
    """A universe of tickers evaluated from a folder that is not there: the one error line names
    the first few and counts the others, rather than one clause per ticker."""
    monkeypatch.setattr(forecaster.evaluation, "NAMED_FAILURES", 1)  # two tickers stand for thousands
    res = cli("evaluate", "--run", run_copy, "--data-dir", tmp_path / "nowhere")
    line = assert_one_line_error(res, 1, "STOCKA: no CSV file at", "and 1 more tickers whose bars could not be read")
    assert "STOCKB" not in line
    assert not (run_copy / "eval").exists()


def test_evaluate_json_files_are_named_as_the_run_is_for_a_promoted_name_too(cli, trained_run):
    """``--run runs/NAME`` (a link that evaluate resolves once) gave absolute paths in
    ``files``, ``--run runs/DIR`` relative ones: both are relative now, as the run was named,
    as predict and score give theirs."""
    shutil.copytree(trained_run, Path("runs") / "tiny")
    assert cli("promote", "runs/tiny", "--name", "prod").exit_code == 0
    expected = {name: f"runs/tiny/eval/{name}.csv" for name in ("metrics", "predictions", "lag")}
    expected["plots"] = "runs/tiny/eval/plots"  # drawn by default for a run of a few tickers
    for run in ("runs/tiny", "runs/prod"):
        res = cli("evaluate", "--run", run, "--json")
        assert res.exit_code == 0, res.stderr
        assert json.loads(res.stdout)["files"] == expected, run
    res = cli("evaluate", "--run", Path("runs/prod").absolute(), "--json")
    assert json.loads(res.stdout)["files"] == {k: str(Path(v).absolute()) for k, v in expected.items()}


def test_evaluate_refuses_a_log_file_inside_the_evaluation_folder_it_replaces(cli, trained_run):
    """`--log-file RUN/eval/evaluate.log`: evaluate replaces eval/ whole, and the log went with
    it, exit 0, without a word. A usage error now, as train's log inside its run directory is,
    through a promoted name too; beside eval/, the log is kept."""
    shutil.copytree(trained_run, Path("runs") / "tiny")
    assert cli("evaluate", "--run", "runs/tiny", "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in Path("runs/tiny/eval").glob("*.csv")}
    assert cli("promote", "runs/tiny", "--name", "prod").exit_code == 0
    for run in ("runs/tiny", "runs/prod"):
        res = cli("evaluate", "--run", run, "--log-file", "runs/tiny/eval/logs/evaluate.log")
        assert res.exit_code == 2, res.stderr
        assert "Usage" in res.stderr and f"inside the evaluation folder {Path(run) / 'eval'}," in res.stderr
        assert "write the log elsewhere" in res.stderr
        assert {p.name: p.read_bytes() for p in Path("runs/tiny/eval").glob("*.csv")} == before
        assert not Path("runs/tiny/eval/logs").exists()
    res = cli("evaluate", "--run", "runs/prod", "-q", "--no-plot", "--log-file", "runs/tiny/evaluate.log")
    assert res.exit_code == 0, res.stderr
    assert Path("runs/tiny/evaluate.log").is_file() and Path("runs/tiny/eval/metrics.csv").is_file()
    res = cli("evaluate", "--run", "runs/nothing", "--log-file", "x.log")  # no run: said as before
    assert res.exit_code == 1 and "no run directory at runs/nothing" in res.stderr, res.stderr


def test_evaluate_quiet_prints_no_table(cli, run_copy):
    res = cli("evaluate", "--run", run_copy, "--quiet")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == ""
    assert (run_copy / "eval" / "metrics.csv").is_file()


def test_evaluate_one_ticker(cli, run_copy):
    res = cli("evaluate", "--run", run_copy, "STOCKB", "-q")
    assert res.exit_code == 0, res.stderr
    metrics = pd.read_csv(run_copy / "eval" / "metrics.csv")
    assert set(metrics["ticker"]) == {"STOCKB", "ALL"}
    pred = pd.read_csv(run_copy / "eval" / "predictions.csv")
    assert set(pred["ticker"]) == {"STOCKB"}


def test_evaluate_plot_writes_one_png_per_ticker(cli, run_copy):
    res = cli("evaluate", "--run", run_copy, "--plot", "-q")
    assert res.exit_code == 0, res.stderr
    plots = run_copy / "eval" / "plots"
    for sym in ("STOCKA", "STOCKB"):
        png = plots / f"{sym}.png"
        assert png.is_file()
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_draws_the_plots_of_a_small_run_unless_told_not_to_and_names_the_plots_it_leaves_out(
    cli, run_copy, monkeypatch
):
    """SPEC: evaluate writes eval/plots/<TICKER>.png. They were drawn only with --plot; now by
    default for a run of at most 20 tickers (a universe's would take minutes), --no-plot for none."""
    from forecaster import evaluation

    plots = run_copy / "eval" / "plots"
    res = cli("evaluate", "--run", run_copy, "-q")
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in plots.iterdir()) == ["STOCKA.png", "STOCKB.png", "training.png"]
    assert cli("evaluate", "--run", run_copy, "--no-plot", "-q").exit_code == 0
    assert not plots.exists()
    monkeypatch.setattr(evaluation, "PLOT_TICKERS", 1)
    res = cli("evaluate", "--run", run_copy)
    assert res.exit_code == 0 and not plots.exists(), res.stderr
    assert "plots not drawn for 2 tickers (more than 1): --plot draws them" in res.stderr, res.stderr
    assert cli("evaluate", "--run", run_copy, "--plot", "-q").exit_code == 0
    assert sorted(p.name for p in plots.iterdir()) == ["STOCKA.png", "STOCKB.png", "training.png"]


@pytest.mark.parametrize(
    ("history", "why"),
    [
        (None, "No such file or directory"),
        ("", "No columns to parse from file"),
        ("epoch,train_loss,val_loss,grad_norm,lr,seconds,samples\n", "no epoch with a validation loss"),
        ("epoch,train_loss,lr\n1,0.5,0.001\n", "no column val_loss, grad_norm"),
    ],
    ids=["missing", "empty", "header-only", "columns-missing"],
)
def test_evaluate_plot_of_a_run_without_a_readable_history_warns_and_writes_the_rest(cli, run_copy, history, why):
    """history.csv gone or damaged (a run copied with its weights and run.json only): the
    training plot is left out with a warning naming the file; the evaluation and the tickers'
    plots are written. It was an 'unexpected error' after the whole backtest, nothing written."""
    path = run_copy / "history.csv"
    path.unlink()
    if history is not None:
        path.write_text(history)
    res = cli("evaluate", "--run", run_copy, "--plot", "-q")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.splitlines() == [f"WARNING: training.png not drawn: {path}: {why}"]
    plots = run_copy / "eval" / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["STOCKA.png", "STOCKB.png"]
    assert (run_copy / "eval" / "metrics.csv").is_file()


def test_a_plot_that_cannot_be_drawn_costs_that_plot_not_the_evaluation(cli, run_copy, monkeypatch):
    """One ticker's plot raising (a matplotlib edge case) threw away the whole backtest's files
    with an 'unexpected error'; so did a matplotlib that cannot be used at all."""
    from forecaster import plots

    stocka_plot_fails(monkeypatch)
    res = cli("evaluate", "--run", run_copy, "--plot", "-q")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.splitlines() == ["WARNING: STOCKA.png not drawn: ValueError: cannot draw this one"]
    assert sorted(p.name for p in (run_copy / "eval" / "plots").iterdir()) == ["STOCKB.png", "training.png"]
    assert (run_copy / "eval" / "metrics.csv").is_file() and (run_copy / "eval" / "predictions.csv").is_file()

    def broken():
        raise ImportError("no backend")

    monkeypatch.setattr(plots, "_figure", broken)
    res = cli("evaluate", "--run", run_copy, "--plot", "-q")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.splitlines() == ["WARNING: plots not drawn: matplotlib cannot be used (ImportError: no backend)"]
    assert (run_copy / "eval" / "metrics.csv").is_file() and not (run_copy / "eval" / "plots").exists()


def test_a_full_disk_while_plotting_fails_the_evaluation_and_another_file_error_costs_the_plot(
    cli, run_copy, monkeypatch
):
    import errno

    from forecaster import plots

    def failing(code):
        def plot(pred, history, sym, path, steps):
            raise OSError(code, os.strerror(code))

        return plot

    monkeypatch.setattr(plots, "plot_ticker", failing(errno.ENOSPC))
    res = cli("evaluate", "--run", run_copy, "--plot", "-q")
    assert res.exit_code == 1 and not (run_copy / "eval").exists()  # nothing of it could be written either
    monkeypatch.setattr(plots, "plot_ticker", failing(errno.ENOENT))  # a stale font cache, say
    res = cli("evaluate", "--run", run_copy, "--plot", "-q")
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in (run_copy / "eval" / "plots").iterdir()) == ["training.png"]


def test_evaluate_says_plainly_when_naive_is_not_beaten(cli, run_copy):
    # A 2-epoch model with 8 hidden units has no significant skill at every step.
    doc = json.loads(cli("evaluate", "--run", run_copy, "--json").stdout)
    assert doc["beats_naive"] is False
    assert "does NOT beat the naive" in doc["verdict"]


# ---------------------------------------------------------------------------- exit 1


def test_evaluate_fail_if_no_skill(cli, run_copy):
    res = cli("evaluate", "--run", run_copy, "--fail-if-no-skill")
    assert res.exit_code == 1
    assert "no skill" in res.stderr
    # the report itself is still written and shown
    assert (run_copy / "eval" / "metrics.csv").is_file()
    assert "walk-forward test metrics" in res.stdout


def test_evaluate_fail_if_no_skill_passes_a_model_with_skill(cli, run_copy, monkeypatch):
    monkeypatch.setattr(forecaster.evaluation.EvalReport, "verdict", lambda self, alpha=0.05: (True, "beats naive"))
    res = cli("evaluate", "--run", run_copy, "--fail-if-no-skill", "-q")
    assert res.exit_code == 0, res.stderr


def test_evaluate_missing_run_dir(cli, tmp_path):
    res = cli("evaluate", "--run", tmp_path / "no-such-run")
    assert res.exit_code == 1
    assert "no-such-run" in res.stderr
    assert not (tmp_path / "no-such-run").exists()


def test_evaluate_directory_that_is_not_a_run(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli("evaluate", "--run", tmp_path / "empty")
    assert res.exit_code == 1
    assert "run.json" in res.stderr
    assert list((tmp_path / "empty").iterdir()) == []


def test_evaluate_ticker_unknown_to_the_run(cli, run_copy):
    res = cli("evaluate", "--run", run_copy, "ZZZZ")
    assert res.exit_code == 1
    assert "ZZZZ" in res.stderr
    assert not (run_copy / "eval").exists()


def test_evaluate_run_of_another_format_version(cli, run_copy):
    meta = run_meta(run_copy)
    meta["format_version"] = 99
    (run_copy / "run.json").write_text(json.dumps(meta))
    res = cli("evaluate", "--run", run_copy)
    assert res.exit_code == 1
    assert "99" in res.stderr and "format" in res.stderr
    assert not (run_copy / "eval").exists()


def test_evaluate_truncated_weights(cli, run_copy):
    weights = run_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    res = cli("evaluate", "--run", run_copy)
    assert res.exit_code == 1
    assert "model.safetensors" in res.stderr
    assert not (run_copy / "eval").exists()


def _overflowing_scales(run: Path, *tickers: str) -> None:
    """Give ``tickers`` an interval scale that run.json accepts (finite, positive) but whose
    intervals overflow to infinite prices."""
    meta = run_meta(run)
    for sym in tickers:
        meta["tickers"][sym]["conformal"] = [1e300] * len(meta["tickers"][sym]["conformal"])
    (run / "run.json").write_text(json.dumps(meta))


def test_evaluate_fails_a_ticker_whose_forecasts_are_not_finite_prices(cli, run_copy):
    """No infinite or zero price is written to predictions.csv: that ticker fails (exit 3)."""
    _overflowing_scales(run_copy, "STOCKA")
    res = cli("evaluate", "--run", run_copy, "--no-plot")
    assert_one_line_error(res, 3, "STOCKA", "not a finite positive price")
    pred = pd.read_csv(run_copy / "eval" / "predictions.csv")
    assert set(pred["ticker"]) == {"STOCKB"}
    prices = pred[["p10", "p50", "p90"]].to_numpy()
    assert np.isfinite(prices).all() and (prices > 0).all()
    metrics = pd.read_csv(run_copy / "eval" / "metrics.csv")
    assert "STOCKA" not in set(metrics["ticker"])


def test_evaluate_of_no_finite_forecast_fails_and_keeps_the_earlier_report(cli, run_copy):
    assert cli("evaluate", "--run", run_copy, "--no-plot").exit_code == 0
    before = (run_copy / "eval" / "predictions.csv").read_bytes()
    _overflowing_scales(run_copy, "STOCKA", "STOCKB")
    res = cli("evaluate", "--run", run_copy, "--no-plot")
    assert_one_line_error(res, 1, "STOCKA", "STOCKB", "not a finite positive price")
    assert "RuntimeWarning" not in res.stderr
    assert (run_copy / "eval" / "predictions.csv").read_bytes() == before


def test_evaluate_data_missing_for_the_run(cli, run_copy, tmp_path):
    (tmp_path / "nodata").mkdir()
    res = cli("evaluate", "--run", run_copy, "--data-dir", tmp_path / "nodata")
    assert res.exit_code == 1
    assert "STOCKA" in res.stderr
    assert not (run_copy / "eval").exists()


def test_evaluate_refuses_a_ticker_with_a_bar_dated_after_today(cli, run_copy, sample_dir, tmp_path):
    """A mistyped year (2204-07-01) after the last bar: refused as train refuses it, naming the
    ticker, the date and the file (it was backtested as if it were a bar); the other ticker is
    evaluated (exit 3), and with that ticker alone nothing is written (exit 1)."""
    data = csv_folder_with_a_bar_on("2204-07-01", sample_dir, tmp_path / "data", "STOCKA")
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "STOCKA")
    assert_one_line_error(res, 1, "STOCKA: 1 bar(s) dated after today, from 2204-07-01", f"in {data / 'STOCKA.csv'}")
    assert not (run_copy / "eval").exists()
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "-q")
    line = assert_one_line_error(res, 3, "STOCKA not evaluated: 1 bar(s) dated after today, from 2204-07-01")
    assert f"in {data / 'STOCKA.csv'}" in line
    assert set(pd.read_csv(run_copy / "eval" / "predictions.csv")["ticker"]) == {"STOCKB"}


def test_evaluate_fails_only_the_ticker_with_a_year_no_date_can_take(cli, run_copy, sample_dir, tmp_path):
    """2925 for 2025: the other ticker is evaluated (exit 3); it was an unexpected error, exit 1."""
    data = csv_folder_with_a_bar_on("2925-07-01", sample_dir, tmp_path / "data", "STOCKA")
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "-q")
    line = assert_one_line_error(res, 3, "STOCKA not evaluated", f"{data / 'STOCKA.csv'}: date '2925-07-01'")
    assert "outside the years 1678-2261" in line
    assert set(pd.read_csv(run_copy / "eval" / "predictions.csv")["ticker"]) == {"STOCKB"}


def test_evaluate_names_the_file_of_a_ticker_with_a_bad_bar(cli, run_copy, sample_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    df = pd.read_csv(data / "STOCKA.csv")
    df.loc[len(df) // 2, "Close"] = -1.0
    df.to_csv(data / "STOCKA.csv", index=False)
    day = df.loc[len(df) // 2, "Date"]
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "-q")
    assert_one_line_error(res, 3, f"STOCKA not evaluated: close -1 on {day}", f"in {data / 'STOCKA.csv'}")


def test_evaluate_in_a_run_folder_it_cannot_write_says_so_before_the_backtest(run_copy, tmp_path):
    """A run folder without write permission (a shared run): one line naming eval/ and why,
    the previous evaluation kept, before any bar is read; it named a temporary folder
    (.eval.<random>.tmp) and came after the whole backtest."""
    forecaster.evaluation.evaluate(run_copy, jobs=1)
    before = {p.name: p.read_bytes() for p in (run_copy / "eval").iterdir()}
    run_copy.chmod(0o555)
    try:
        res = run_forecaster_minding_file_modes(
            "evaluate", "--run", run_copy, "--data-dir", tmp_path / "nowhere", cwd=tmp_path
        )
    finally:
        run_copy.chmod(0o755)
    assert res.returncode == 1, res.stderr
    assert res.stderr.splitlines() == [
        f"ERROR: cannot write the evaluation to {run_copy / 'eval'}: Permission denied; "
        "the previous evaluation is kept as it was"
    ]
    assert {p.name: p.read_bytes() for p in (run_copy / "eval").iterdir()} == before
    assert sorted(p.name for p in run_copy.iterdir()) == ["eval", "history.csv", "model.safetensors", "run.json"]


def test_evaluate_refuses_a_run_with_a_ticker_named_like_the_pooled_rows(cli, run_copy, sample_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for src, dst in (("STOCKA", "STOCKA"), ("STOCKB", "ALL")):
        (data / f"{dst}.csv").write_bytes((sample_dir / f"{src}.csv").read_bytes())
    meta = run_meta(run_copy)  # a run made when training still took the name
    meta["tickers"]["ALL"] = meta["tickers"].pop("STOCKB")
    (run_copy / "run.json").write_text(json.dumps(meta))
    res = cli("evaluate", "--run", run_copy, "--data-dir", data)
    assert_one_line_error(res, 1, "named ALL")
    assert not (run_copy / "eval").exists()
    res = cli("evaluate", "--run", run_copy, "--data-dir", data, "STOCKA")
    assert res.exit_code == 0, res.stderr
    assert set(pd.read_csv(run_copy / "eval" / "metrics.csv")["ticker"]) == {"STOCKA", "ALL"}


# ---------------------------------------------------------------------------- exit 2


@pytest.mark.parametrize(
    "args",
    [
        [],  # --run is required
        ["--run"],
        ["--bogus"],
        ["--alpha", "2"],
        ["--source", "ftp"],
    ],
)
def test_evaluate_usage_errors(cli, run_copy, args):
    full = ["evaluate", *args]
    if args and args[0] not in ("--run",):
        full += ["--run", str(run_copy)]
    res = cli(*full)
    assert res.exit_code == 2
    assert "Error" in res.stderr
    assert res.stdout == ""
    assert not (run_copy / "eval").exists()


def test_the_table_shows_large_price_errors_without_an_exponent(capsys):
    """A ticker priced in the hundred thousands (BRK-A) has an MAE in the thousands: 12346, as
    score's table shows it, not 1.235e+04."""
    from types import SimpleNamespace

    from forecaster.cli import _print_metrics

    nan = float("nan")
    rows = [
        ("lstm", 12345.6, -0.01, 0.5, 0.8, 0.6, 2718.28, 0.4, "garch", 2718.28 / 2700.0),
        ("drift", 12300.0, 0.002, 0.4, nan, nan, nan, nan, nan, nan),
        ("mean", 12400.0, -0.0045, 0.7, nan, nan, nan, nan, nan, nan),
        ("garch", 12222.2, 0.0, nan, 0.81, 0.7, 2700.0, nan, nan, nan),
    ]
    cols = ["model", "mae", "skill", "dm_pvalue", "coverage", "kupiec_pvalue", "pinball", "dm_pinball_pvalue"]
    cols += ["best_vol", "pinball_ratio"]
    metrics = pd.DataFrame(rows, columns=cols).assign(ticker="BRK-A", step=1, n=250)
    rep = SimpleNamespace(model="lstm", run="r", metrics=metrics, median_weight=[1.0], lag=pd.DataFrame())
    _print_metrics(rep)
    table = [[c.strip() for c in ln.split("|")[1:-1]] for ln in capsys.readouterr().out.splitlines()]
    [cells] = [cells for cells in table if cells and cells[0] == "BRK-A"]
    assert cells[3] == "12346" and cells[10] == "1.007 garch", cells
    assert cells[6:8] == ["+0.20%", "-0.45%"], cells  # the skill of drift, then of mean


@pytest.mark.parametrize("median_weight", [[0.0], [1.0]])
def test_the_report_names_a_median_that_copies_the_last_close_and_says_when_the_gate_chose_it(capsys, median_weight):
    """A median that moves with the last close is named with the slope and R^2 that show it;
    when the gate shut the network's median off at the first step, the line says that is by
    design rather than a flaw of the model."""
    from types import SimpleNamespace

    from forecaster.cli import _print_metrics

    metrics = pd.DataFrame(
        {"model": ["lstm", "drift", "mean"], "mae": 1.0, "skill": 0.0, "dm_pvalue": 0.5, "coverage": 0.8}
    ).assign(ticker="STOCKA", step=1, n=100, kupiec_pvalue=0.5, dm_pinball_pvalue=0.5, best_vol="hist")
    metrics = metrics.assign(pinball_ratio=1.0)
    lag = pd.DataFrame(
        {"ticker": ["STOCKA", "STOCKB"], "slope": [1.013, 0.4], "r2": [0.991, 0.2], "copies_last_value": [True, False]}
    )
    rep = SimpleNamespace(model="lstm", run="r", metrics=metrics, median_weight=median_weight, lag=lag)
    _print_metrics(rep)
    said = [ln for ln in capsys.readouterr().out.splitlines() if "median forecast moves" in ln]
    line = "STOCKA: the median forecast moves with the last close (slope 1.01, R^2 0.99): it is essentially the last"
    line += " value shifted forward"
    gated = " (by design: its one-step median is the last close, see below)"
    assert said == [line + gated if median_weight == [0.0] else line]


_STOPPED_IN_A_WORKER = stopped_in_a_worker("evaluation", "_backtest_block", "evaluate", "--run", "{0}", "--jobs", "2")


@pytest.mark.slow
def test_sigterm_to_evaluate_and_its_worker_processes_is_one_line_exit_130(run_copy):
    """SIGTERM to the command and the processes it shares the tickers with: exit 130 with one
    line, no traceback from a worker, the earlier evaluation kept and no temporary folder left,
    rather than a process killed by the signal (143) that says nothing."""
    forecaster.evaluation.evaluate(run_copy, jobs=1)
    names = sorted(os.listdir(run_copy))
    before = {p.name: p.read_bytes() for p in (run_copy / "eval").iterdir()}
    res = run_script(_STOPPED_IN_A_WORKER, run_copy, own_group=True)
    assert_stopped_with_one_line(res, "evaluate")
    assert {p.name: p.read_bytes() for p in (run_copy / "eval").iterdir()} == before
    assert sorted(os.listdir(run_copy)) == names  # no temporary folder beside eval/


def test_a_ticker_without_forecasts_at_the_last_step_gets_a_panel_that_says_so(tmp_path, monkeypatch):
    """Its bars end fewer sessions into the test split than the horizon: the last step's panel
    was empty, with an axis of meaningless hours."""
    from forecaster import plots

    days = pd.bdate_range("2024-06-03", periods=3)
    pred = pd.DataFrame(
        {
            "ticker": "SHORT",
            "step": 1,
            "date": days.strftime("%Y-%m-%d"),
            "actual": [10.0, 10.2, 10.1],
            "p10": 9.5,
            "p50": 10.0,
            "p90": 10.5,
            "naive": 10.0,
        }
    )
    history = pd.Series(10.0, index=pd.bdate_range("2024-01-02", "2024-05-31"))
    drawn = []
    real = plots._save

    def spy(fig, path):
        drawn.extend((ax.get_title(), ax.axison, [t.get_text() for t in ax.texts]) for ax in fig.axes)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    path = plots.plot_ticker(pred, history, "SHORT", tmp_path / "SHORT.png", [1, 3])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (first, on1, said1), (last, on3, said3) = drawn
    assert "1 session(s) ahead" in first and on1 and said1 == []
    assert "3 session(s) ahead" in last and not on3
    assert said3 == ["no forecast 3 session(s) ahead: the bars end too soon"]


def test_one_forecast_is_drawn_and_a_median_that_is_the_last_close_is_one_labelled_line(tmp_path, monkeypatch):
    """A series of one forecast was a line and a band of one point, which matplotlib draws as
    nothing; and a median equal to naive at every origin hid under naive's dashed line."""
    from forecaster import plots

    pred = pd.DataFrame(
        {
            "ticker": "T",
            "step": [1, 1, 3],
            "date": ["2024-06-03", "2024-06-04", "2024-06-05"],
            "actual": [10.0, 10.2, 10.1],
            "p10": 9.5,
            "p50": [10.0, 10.1, 10.05],
            "p90": 10.5,
            "naive": [10.0, 10.0, 10.05],
        }
    )
    history = pd.Series(10.0, index=pd.bdate_range("2024-01-02", "2024-05-31"))
    axes = axes_drawn(monkeypatch)
    plots.plot_ticker(pred, history, "T", tmp_path / "T.png", [1, 3])
    one, three = axes
    assert one.get_ylabel() == three.get_ylabel() == "price"
    labels = {ln.get_label(): ln for ln in three.get_lines()}
    assert set(labels) == {"history", "actual close", "median forecast, h=3 = naive (last close)"}
    assert all(ln.get_marker() == "o" for name, ln in labels.items() if name != "history")
    from matplotlib.collections import LineCollection
    from matplotlib.dates import date2num

    bars = [c.get_segments() for c in three.collections if isinstance(c, LineCollection)]
    day = date2num(pd.Timestamp("2024-06-05"))
    assert [[seg.tolist() for seg in b] for b in bars] == [[[[day, 9.5], [day, 10.5]]]]  # the interval, as a bar
    # one step ahead the median moved off the last close once: both lines, the median's drawn last
    assert [ln.get_label() for ln in one.get_lines()][-2:] == ["naive (last close)", "median forecast, h=1"]


def test_the_training_plot_marks_the_epoch_the_run_kept(tmp_path, monkeypatch):
    """Not merely the lowest validation loss: a gain under 1e-6 keeps the earlier epoch."""
    from forecaster import plots

    hist = pd.DataFrame(
        {"epoch": [1, 2, 3], "train_loss": [0.3, 0.2, 0.2], "val_loss": [0.25, 0.2, 0.2 - 5e-7], "grad_norm": 0.1}
    )
    axes = axes_drawn(monkeypatch)
    plots.plot_training(hist, tmp_path / "a.png", kept=2)
    plots.plot_training(hist, tmp_path / "b.png")
    kept = [ln for ax in axes for ln in ax.get_lines() if ln.get_label().startswith("kept")]
    assert [(ln.get_label(), ln.get_xdata()[0]) for ln in kept] == [("kept: epoch 2", 2), ("kept: epoch 3", 3)]
    assert [(ax.get_title(), ax.get_xlabel()) for ax in axes[:2]] == [
        ("pinball loss", "epoch"),
        ("mean gradient norm before clipping", "epoch"),
    ]
    assert axes[1].get_yscale() == "log"


def test_evaluate_holds_the_runs_lock_and_clears_what_a_killed_evaluation_left(cli, run_copy):
    """evaluate took no lock: a training that replaced the run meanwhile (or a retrain that
    deleted it) got this evaluation's files, an old model's, in the new run, or a run folder
    back with eval/ alone in it; and an evaluation killed outright left its temporary folder
    in the run for ever."""
    from forecaster.checkpoint import run_lock_path

    holder = hold_lock(run_lock_path(run_copy), 60)  # a training of that run under way
    try:
        res = cli("evaluate", "--run", run_copy, "--no-plot")
        assert_one_line_error(res, 75, "another forecaster run holds", run_lock_path(run_copy).name)
        assert not (run_copy / "eval").exists()
    finally:
        stop(holder)
    left = run_copy / ".eval.k1ll3d00.tmp"  # an evaluation killed with SIGKILL
    left.mkdir()
    (left / "predictions.csv").write_text("ticker,origin\n")
    res = cli("evaluate", "--run", run_copy, "--no-plot", "-q")
    assert res.exit_code == 0, res.stderr
    assert not left.exists() and (run_copy / "eval" / "metrics.csv").is_file()


def test_evaluate_plot_reads_a_history_with_a_header_of_a_million_fields_in_seconds(tmp_path):
    """history.csv with a million commas after its header (a 1 MB file) was read as a million
    columns of each row: 40 s and 1.4 GB before training.png; only its columns are read."""
    import time

    from forecaster.plots import _training_history

    path = tmp_path / "history.csv"
    header = "epoch,train_loss,val_loss,grad_norm,lr,seconds,samples"
    path.write_text(header + "," * 1_000_000 + "\n1,0.5,0.4,1.0,0.001,1.0,100\n2,0.45,0.41,1.0,0.001,1.0,100\n")
    started = time.monotonic()
    hist = _training_history(path)
    assert time.monotonic() - started < 8  # 1.5 s; 18 s and more before
    assert hist is not None and hist["val_loss"].tolist() == [0.4, 0.41]
