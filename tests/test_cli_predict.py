"""`forecaster predict`: the forecast CSV (SPEC §7), --as-of, freshness, exit codes 0-3 and 75.

The shared tiny run reads the CSV sample folder (both tickers end 2024-12-31). The yahoo-source
tests fill a store under a scratch data dir and replace the network fetch with a fake.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from support import (
    FORECASTER,
    ROOT,
    UNPRIVILEGED_ROOT,
    assert_one_line_error,
    assert_stopped_with_one_line,
    error_lines,
    hold_lock,
    memory_capped,
    python_env,
    record_blocks,
    run_meta,
    run_script,
    start_forecaster,
    stop,
    stopped_in_a_worker,
    tiny_overrides,
)

import forecaster.store
from forecaster import fsio
from forecaster.errors import ConfigError, NetworkError, TickerError
from forecaster.prediction import REPLACED, predict
from forecaster.sources import read_csv_bars
from forecaster.store import save_store

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FORECAST_COLUMNS = ["ticker", "as_of", "step", "date", "last_close", "p10", "p50", "p90", "model", "run"]


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"as_of": str, "date": str})


def _close_on(sample_dir, sym, day) -> float:
    bars = pd.read_csv(sample_dir / f"{sym}.csv", parse_dates=["Date"]).set_index("Date")
    return float(bars.loc[pd.Timestamp(day), "Close"])


def _check_forecast(df: pd.DataFrame, tickers, horizon, run_name):
    assert list(df.columns) == FORECAST_COLUMNS
    assert len(df) == len(tickers) * horizon
    assert list(df["ticker"]) == [t for t in tickers for _ in range(horizon)]
    assert list(df["step"]) == list(range(1, horizon + 1)) * len(tickers)
    assert (df["model"] == "gru").all()
    assert (df["run"] == run_name).all()
    assert (df["p10"] <= df["p50"]).all() and (df["p50"] <= df["p90"]).all()
    assert (df[["last_close", "p10", "p50", "p90"]] > 0).all().all()


# ---------------------------------------------------------------------------- exit 0


def test_predict_writes_dated_and_latest_csv(cli, trained_run, sample_dir, tmp_path):
    out = tmp_path / "fc"
    res = cli("predict", "--run", trained_run, "--out", out)
    assert res.exit_code == 0, res.stderr
    name = trained_run.name
    folder = out / name
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["2024-12-31.csv", "latest.csv"]
    dated = folder / "2024-12-31.csv"
    assert (folder / "latest.csv").read_bytes() == dated.read_bytes()
    df = _read(dated)
    _check_forecast(df, ["STOCKA", "STOCKB"], 3, name)
    assert (df["as_of"] == "2024-12-31").all()
    # New Year's Day and the weekend are not sessions
    assert list(df["date"][:3]) == ["2025-01-02", "2025-01-03", "2025-01-06"]
    for sym in ("STOCKA", "STOCKB"):
        assert df.loc[df["ticker"] == sym, "last_close"].to_numpy() == pytest.approx(
            _close_on(sample_dir, sym, "2024-12-31")
        )
    # the table and the paths of what was written
    assert "STOCKA" in res.stdout and "STOCKB" in res.stdout
    assert str(dated) in res.stdout


def test_predict_json(cli, trained_run, tmp_path):
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) == {"run", "as_of", "failed", "warnings", "notes", "recalibrated", "files", "forecasts"}
    assert doc["recalibrated"] == {}  # forecast from the run's last bar: nothing to catch up on
    assert doc["run"] == trained_run.name
    assert doc["as_of"] == "2024-12-31"
    assert doc["failed"] == {}
    assert set(doc["files"]) == {"forecast", "latest"}
    assert len(doc["forecasts"]) == 6
    assert all(list(r) == FORECAST_COLUMNS for r in doc["forecasts"])
    on_disk = _read(doc["files"]["forecast"])
    assert [r["p50"] for r in doc["forecasts"]] == pytest.approx(list(on_disk["p50"]))


def test_predict_quiet_prints_nothing(cli, trained_run, tmp_path):
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--quiet")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == ""
    assert (tmp_path / "fc" / trained_run.name / "latest.csv").is_file()


def test_predict_default_out_is_forecasts_in_cwd(cli, trained_run):
    res = cli("predict", "--run", trained_run, "-q")
    assert res.exit_code == 0, res.stderr
    assert os.path.isfile(f"forecasts/{trained_run.name}/latest.csv")


def test_predict_one_ticker(cli, trained_run, tmp_path):
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "-t", "stockb", "-q")
    assert res.exit_code == 0, res.stderr
    df = _read(tmp_path / "fc" / trained_run.name / "latest.csv")
    _check_forecast(df, ["STOCKB"], 3, trained_run.name)


def test_predict_tickers_option_given_twice_forecasts_both(cli, trained_run, tmp_path):
    # `-t A -t B` is how many tools take a list: the first ticker must not be dropped silently
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "-t", "STOCKA", "-t", "stockb", "-q")
    assert res.exit_code == 0, res.stderr
    df = _read(tmp_path / "fc" / trained_run.name / "latest.csv")
    _check_forecast(df, ["STOCKA", "STOCKB"], 3, trained_run.name)


@pytest.mark.parametrize(
    "as_of,dates",
    [
        ("2024-07-03", ["2024-07-05", "2024-07-08", "2024-07-09"]),  # Independence Day, weekend
        ("2024-03-28", ["2024-04-01", "2024-04-02", "2024-04-03"]),  # Good Friday, weekend
        ("2023-11-22", ["2023-11-24", "2023-11-27", "2023-11-28"]),  # Thanksgiving, weekend
    ],
)
def test_predict_as_of_skips_weekends_and_holidays(cli, trained_run, sample_dir, tmp_path, as_of, dates):
    out = tmp_path / "fc"
    res = cli("predict", "--run", trained_run, "--out", out, "--as-of", as_of, "-q")
    assert res.exit_code == 0, res.stderr
    folder = out / trained_run.name
    dated = folder / f"{as_of}.csv"
    assert (folder / "latest.csv").read_bytes() == dated.read_bytes()
    df = _read(dated)
    _check_forecast(df, ["STOCKA", "STOCKB"], 3, trained_run.name)
    assert (df["as_of"] == as_of).all()
    for sym in ("STOCKA", "STOCKB"):
        mine = df[df["ticker"] == sym]
        assert list(mine["date"]) == dates
        assert mine["last_close"].to_numpy() == pytest.approx(_close_on(sample_dir, sym, as_of))


@pytest.mark.parametrize(
    "as_of,session",
    [
        ("2024-07-06", "2024-07-05"),  # a Saturday
        ("2024-07-07", "2024-07-05"),  # a Sunday
        ("2024-07-04", "2024-07-03"),  # Independence Day
        ("2024-03-29", "2024-03-28"),  # Good Friday
        ("2024-12-25", "2024-12-24"),  # Christmas
    ],
)
def test_predict_as_of_a_closed_day_is_dated_by_the_session_before(
    cli, trained_run, sample_dir, tmp_path, as_of, session
):
    """The file name, the rows and --json all give the last session on or before --as-of."""
    out = tmp_path / "fc"
    res = cli("predict", "--run", trained_run, "--out", out, "--as-of", as_of, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["as_of"] == session
    assert {r["as_of"] for r in doc["forecasts"]} == {session}
    folder = out / trained_run.name
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [f"{session}.csv", "latest.csv"]
    df = _read(folder / f"{session}.csv")
    assert (df["as_of"] == session).all()
    for sym in ("STOCKA", "STOCKB"):
        mine = df[df["ticker"] == sym]
        assert mine["last_close"].to_numpy() == pytest.approx(_close_on(sample_dir, sym, session))
    # the same forecast as one asked for that session by its own date
    same = tmp_path / "same"
    assert cli("predict", "--run", trained_run, "--out", same, "--as-of", session, "-q").exit_code == 0
    assert (same / trained_run.name / f"{session}.csv").read_bytes() == (folder / f"{session}.csv").read_bytes()


def test_predict_as_of_uses_only_bars_up_to_it(cli, trained_run, sample_dir, tmp_path):
    """--as-of on the full data == no --as-of on data cut at that date; later bars don't matter."""
    as_of = "2024-07-03"
    cut = tmp_path / "cut"
    changed = tmp_path / "changed"
    for d in (cut, changed):
        d.mkdir()
    for sym in ("STOCKA", "STOCKB"):
        text = (sample_dir / f"{sym}.csv").read_text().splitlines(keepends=True)
        keep = [ln for ln in text[1:] if ln[:10] <= as_of]
        later = [ln for ln in text[1:] if ln[:10] > as_of]
        (cut / f"{sym}.csv").write_text(text[0] + "".join(keep))
        # different prices after the as-of date (halved: still valid bars)
        halved = []
        for ln in later:
            date, *nums, vol = ln.strip().split(",")
            halved.append(",".join([date, *(f"{float(x) / 2:.4f}" for x in nums), vol]) + "\n")
        (changed / f"{sym}.csv").write_text(text[0] + "".join(keep) + "".join(halved))

    results = {}
    for label, data, extra in (
        ("full", sample_dir, ["--as-of", as_of]),
        ("changed", changed, ["--as-of", as_of]),
        ("cut", cut, []),
    ):
        out = tmp_path / f"out-{label}"
        res = cli("predict", "--run", trained_run, "--data-dir", data, "--out", out, "-q", *extra)
        assert res.exit_code == 0, (label, res.stderr)
        results[label] = (out / trained_run.name / f"{as_of}.csv").read_bytes()
    assert results["full"] == results["cut"]
    assert results["changed"] == results["cut"]


def test_predict_as_of_warns_of_a_gap_only_in_the_bars_it_reads(cli, trained_run, sample_dir, tmp_path):
    """A gap of months after --as-of is in bars predict does not read: no warning that they are
    read as if consecutive. One before it is in the bars read, and is warned of."""
    data = tmp_path / "holed"
    data.mkdir()
    for sym in ("STOCKA", "STOCKB"):
        lines = (sample_dir / f"{sym}.csv").read_text().splitlines(keepends=True)
        # two months of 2024 missing; the bars on both sides as they are
        kept = [ln for ln in lines[1:] if not "2024-09-01" <= ln[:10] <= "2024-10-31"]
        (data / f"{sym}.csv").write_text(lines[0] + "".join(kept))
    before = cli("predict", "--run", trained_run, "--data-dir", data, "--out", tmp_path / "o1", "--as-of", "2024-07-03")
    assert before.exit_code == 0, before.stderr
    assert "gap" not in before.stderr
    after = cli("predict", "--run", trained_run, "--data-dir", data, "--out", tmp_path / "o2", "--as-of", "2024-12-31")
    assert after.exit_code == 0, after.stderr
    assert "STOCKA: 1 gap(s) of more than 14 days" in after.stderr
    assert "from 2024-08-30 to 2024-11-01" in after.stderr
    # --json lists it among the warnings, as every other warning of the run; stderr says it once
    args = ("predict", "--run", trained_run, "--data-dir", data, "--out", tmp_path / "o3", "--as-of", "2024-12-31")
    res = cli(*args, "--json")
    warned = json.loads(res.stdout)["warnings"]
    said = [ln.removeprefix("WARNING: ") for ln in res.stderr.splitlines() if "gap(s)" in ln]
    assert [w for w in warned if "gap(s)" in w] == said != []
    assert {w[:6] for w in warned if "gap(s)" in w} == {"STOCKA", "STOCKB"}
    assert all(res.stderr.count(w) == 1 for w in warned)


def test_predict_as_of_today_before_the_close_is_not_stale(trained_run, tmp_path):
    """--as-of today in the morning: the last bar is yesterday's, as fresh as bars can be."""
    # 2025-01-02 is the first session after 2024-12-31 (New Year's Day); 12:00 UTC is before its close
    morning = pd.Timestamp("2025-01-02 12:00", tz="UTC")
    rep = predict(trained_run, as_of="2025-01-02", out=tmp_path / "fc", now=morning)
    assert rep.exit_code == 0
    assert rep.warnings == []
    assert "STOCKA: last bar 2024-12-31, the latest completed session" in rep.notes
    # after the close the session of 2025-01-02 is missing, and that is said
    evening = pd.Timestamp("2025-01-02 22:00", tz="UTC")
    rep = predict(trained_run, as_of="2025-01-02", out=tmp_path / "fc", now=evening)
    assert len(rep.warnings) == 2
    assert all("1 session(s) before --as-of 2025-01-02" in w for w in rep.warnings)


def _with_bars(sample_dir, dest: Path, rows: dict[str, list[str]]) -> Path:
    """A copy of the sample's CSV files with ``rows`` (dates) appended to the tickers named,
    each a bar at the ticker's last close."""
    dest.mkdir()
    for sym in ("STOCKA", "STOCKB"):
        text = (sample_dir / f"{sym}.csv").read_text()
        close = text.splitlines()[-1].split(",")[4]
        added = "".join(f"{day},{close},{close},{close},{close},1000\n" for day in rows.get(sym, []))
        (dest / f"{sym}.csv").write_text(text + added)
    return dest


def test_a_bar_on_a_day_the_calendar_does_not_trade_is_warned_of(trained_run, sample_dir, tmp_path):
    """A Saturday bar (dates stamped in UTC, a bad export): predict forecast from it and dated
    the forecast by it without a word, and its age note called it the latest completed session."""
    data = _with_bars(sample_dir, tmp_path / "data", {"STOCKA": ["2025-01-02", "2025-01-03", "2025-01-04"]})
    monday = pd.Timestamp("2025-01-06 15:00", tz="UTC")  # before the close: Friday's is the latest
    rep = predict(trained_run, data_dir=data, out=tmp_path / "fc", now=monday, offline=True)
    assert rep.exit_code == 0
    [off] = [w for w in rep.warnings if "not XNYS sessions" in w]
    assert off.startswith("STOCKA: 1 of its bars since the run's last fall on days that are not XNYS sessions")
    assert "its last bar on 2025-01-04 (Saturday)" in off
    assert (
        "STOCKA: last bar 2025-01-04 is after the latest completed session (2025-01-03): a day XNYS does not trade"
        in (rep.warnings)
    )
    # forecast as of the Sunday after: as fresh as the day allows, but not called a session
    tuesday = pd.Timestamp("2025-01-07 15:00", tz="UTC")
    rep = predict(trained_run, data_dir=data, out=tmp_path / "fc2", now=tuesday, offline=True, as_of="2025-01-05")
    assert "STOCKA: last bar 2025-01-04, a day XNYS does not trade" in rep.notes
    assert not [w for w in rep.warnings if w.startswith("STOCKB") and "not XNYS" in w]


def test_a_bar_of_a_session_still_trading_is_not_called_the_latest_completed(trained_run, sample_dir, tmp_path):
    """A CSV holding today's bar before the close: its close is the price of the moment. The
    note said "last bar 2025-01-02, the latest completed session" (an info line), where the
    latest completed session was 2024-12-31."""
    data = _with_bars(sample_dir, tmp_path / "data", {"STOCKA": ["2025-01-02"]})
    morning = pd.Timestamp("2025-01-02 15:00", tz="UTC")  # 10:00 in New York
    rep = predict(trained_run, data_dir=data, out=tmp_path / "fc", now=morning, offline=True)
    assert (
        "STOCKA: last bar 2025-01-02 is after the latest completed session (2024-12-31): a bar of a session "
        "still trading (its close not final)"
    ) in rep.warnings
    assert "STOCKB: last bar 2024-12-31, the latest completed session" in rep.notes
    assert not [w for w in rep.warnings if "not XNYS sessions" in w]  # 2025-01-02 is a session


def test_predict_as_of_an_earlier_day_keeps_the_newer_latest(cli, trained_run, tmp_path):
    """latest.csv is the newest forecast: a forecast for an earlier day writes its dated file
    only, and says so; one for the same day or a later one replaces latest.csv."""
    out = tmp_path / "fc"
    folder = out / trained_run.name
    assert cli("predict", "--run", trained_run, "--out", out, "--as-of", "2024-10-01", "-q").exit_code == 0
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    newest = (folder / "2024-12-31.csv").read_bytes()
    assert (folder / "latest.csv").read_bytes() == newest
    res = cli("predict", "--run", trained_run, "--out", out, "--as-of", "2024-07-03", "--json")
    assert res.exit_code == 0, res.stderr
    assert (folder / "2024-07-03.csv").is_file()
    assert (folder / "latest.csv").read_bytes() == newest
    doc = json.loads(res.stdout)
    assert doc["files"] == {"forecast": str(folder / "2024-07-03.csv")}
    kept = f"{folder / 'latest.csv'} kept: it holds the forecast of 2024-12-31, newer than 2024-07-03"
    assert kept in res.stderr
    assert doc["notes"][0] == kept  # the same note, for a consumer that reads stdout only
    res = cli("predict", "--run", trained_run, "--out", out, "--as-of", "2024-07-03")
    assert "latest: " not in res.stdout and "kept" in res.stderr
    res = cli("predict", "--run", trained_run, "--out", out, "-q")
    assert res.exit_code == 0 and "kept" not in res.stderr
    assert (folder / "latest.csv").read_bytes() == newest


def test_predict_as_of_an_earlier_day_keeps_a_newer_latest_with_a_column_added(cli, trained_run, tmp_path):
    """latest.csv with a column added by hand still holds the newest forecast: an earlier
    day's forecast leaves it as it is (it was replaced by the older forecast)."""
    out = tmp_path / "fc"
    latest = out / trained_run.name / "latest.csv"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    pd.read_csv(latest, dtype=str, keep_default_na=False).assign(note="seen").to_csv(latest, index=False)
    edited = latest.read_bytes()
    res = cli("predict", "--run", trained_run, "--out", out, "--as-of", "2024-07-03")
    assert res.exit_code == 0, res.stderr
    assert latest.read_bytes() == edited
    assert "kept: it holds the forecast of 2024-12-31, newer than 2024-07-03" in res.stderr


def test_predict_for_a_ticker_whose_bars_end_earlier_keeps_the_newer_latest(cli, trained_run, sample_dir, tmp_path):
    """`predict -t STALE` for a ticker whose bars end days before the others' writes that older
    day's file; latest.csv keeps the newer forecast of the others."""
    data, out = tmp_path / "data", tmp_path / "fc"
    shutil.copytree(sample_dir, data)
    lines = (data / "STOCKB.csv").read_text().splitlines(keepends=True)
    (data / "STOCKB.csv").write_text("".join(lines[:-3]))  # ends 2024-12-26
    assert cli("predict", "--run", trained_run, "--data-dir", data, "--out", out, "-q").exit_code == 0
    folder = out / trained_run.name
    newest = (folder / "2024-12-31.csv").read_bytes()
    assert (folder / "latest.csv").read_bytes() == newest
    res = cli("predict", "--run", trained_run, "--data-dir", data, "--out", out, "-t", "STOCKB")
    assert res.exit_code == 0, res.stderr
    _check_forecast(_read(folder / "2024-12-26.csv"), ["STOCKB"], 3, trained_run.name)
    assert (folder / "latest.csv").read_bytes() == newest
    assert "newer than 2024-12-26" in res.stderr


def test_predict_again_after_a_tickers_bars_went_back_a_day_keeps_its_forecast_of_that_day(
    cli, trained_run, sample_dir, tmp_path
):
    """Both tickers forecast as of 2024-12-31, then STOCKA's last bar gone (a revision, an older
    copy of its file) and predict run again: the day's file lost STOCKA's forecast as of
    2024-12-31 to one as of 2024-12-30, with exit 0 and no word, and score with it. Now the
    day's file keeps it, with a warning."""
    data, out = tmp_path / "data", tmp_path / "fc"
    shutil.copytree(sample_dir, data)
    assert cli("predict", "--run", trained_run, "--data-dir", data, "--out", out, "-q").exit_code == 0
    dated = out / trained_run.name / "2024-12-31.csv"
    first = dated.read_bytes()
    lines = (data / "STOCKA.csv").read_text().splitlines(keepends=True)
    (data / "STOCKA.csv").write_text("".join(lines[:-1]))  # ends 2024-12-30
    res = cli("predict", "--run", trained_run, "--data-dir", data, "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    assert dated.read_bytes() == first
    assert _read(out / trained_run.name / "latest.csv").equals(_read(dated))
    [warned] = [w for w in json.loads(res.stdout)["warnings"] if "went back" in w]
    assert "(STOCKA as of 2024-12-31, now 2024-12-30)" in warned, warned


def test_predict_rerun_same_as_of_is_byte_identical(cli, trained_run, tmp_path):
    out = tmp_path / "fc"
    dated = out / trained_run.name / "2024-10-01.csv"
    assert cli("predict", "--run", trained_run, "--out", out, "--as-of", "2024-10-01", "-q").exit_code == 0
    first = dated.read_bytes()
    assert cli("predict", "--run", trained_run, "--out", out, "--as-of", "2024-10-01", "-q").exit_code == 0
    assert dated.read_bytes() == first


def test_predict_offline_yahoo_store(cli, trained_run, sample_dir, tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("--offline must not touch the network")

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", no_network)
    data = tmp_path / "data"
    for sym in ("STOCKA", "STOCKB"):
        save_store(data, sym, read_csv_bars(sample_dir, sym))
    out = tmp_path / "fc"
    res = cli("predict", "--run", trained_run, "--source", "yahoo", "--data-dir", data, "--offline", "--out", out, "-q")
    assert res.exit_code == 0, res.stderr
    from_store = (out / trained_run.name / "2024-12-31.csv").read_bytes()
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc2", "-q")
    assert res.exit_code == 0
    assert (tmp_path / "fc2" / trained_run.name / "2024-12-31.csv").read_bytes() == from_store


def test_predict_table_shows_a_price_under_a_dollar_to_its_significant_digits(cli, trained_run, sample_dir, tmp_path):
    # a penny stock, an exchange rate or a coin: two decimals would print 0.01 for every
    # quantile, an interval that cannot be seen
    data = tmp_path / "data"
    bars = read_csv_bars(sample_dir, "STOCKA")
    bars[["open", "high", "low", "close"]] /= 10_000
    save_store(data, "STOCKA", bars)
    out = tmp_path / "fc"
    args = ["--source", "yahoo", "--data-dir", data, "--offline", "--out", out, "-t", "STOCKA"]
    res = cli("predict", "--run", trained_run, *args)
    assert res.exit_code == 0, res.stderr
    written = _read(out / trained_run.name / "latest.csv")
    rows = [ln.replace("|", " ").split() for ln in res.stdout.splitlines() if " STOCKA " in ln]
    assert len(rows) == len(written) == 3
    for cells, (_, row) in zip(rows, written.iterrows(), strict=True):
        shown = [float(c) for c in cells[4:8]]
        assert shown == pytest.approx([row["last_close"], row["p10"], row["p50"], row["p90"]], rel=1e-3)
    assert rows[0][5] != rows[0][7]  # p10 and p90 read apart
    # four significant digits of the last close (0.06520, not 0.0652), its quantiles to as many decimals
    digits = {len(c.split(".")[1]) for cells in rows for c in cells[4:8]}
    assert [len(c.replace(".", "").lstrip("0")) for cells in rows for c in cells[4:5]] == [4, 4, 4]
    assert len(digits) == 1, rows


def test_predict_offline_says_how_old_the_last_bar_is(cli, trained_run, sample_dir, tmp_path):
    """SPEC §6: with --offline it uses the store as it is and says how old the last bar is."""
    data = tmp_path / "data"
    for sym in ("STOCKA", "STOCKB"):
        save_store(data, sym, read_csv_bars(sample_dir, sym))
    res = cli(
        "predict", "--run", trained_run, "--source", "yahoo", "--data-dir", data, "--offline", "--out", tmp_path / "fc"
    )
    assert res.exit_code == 0, res.stderr
    # both stores end 2024-12-31, long before today: the operator must be told
    assert "2024-12-31" in res.stderr


def test_predict_online_says_when_yahoo_gives_only_old_bars(cli, trained_run, sample_dir, tmp_path, monkeypatch):
    """The refresh works but Yahoo's newest bar is old (a delisted or suspended symbol, or a
    bar not published yet): the forecast is made from it, and the operator is told."""
    sample = {sym: read_csv_bars(sample_dir, sym) for sym in ("STOCKA", "STOCKB")}  # both end 2024-12-31

    def fetch(ticker, start=None, end=None, **_):
        bars = sample[ticker]
        return bars if start is None else bars[bars.index >= pd.Timestamp(start)]

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", fetch)
    out = tmp_path / "fc"
    res = cli("predict", "--run", trained_run, "--source", "yahoo", "--data-dir", tmp_path / "data", "--out", out)
    assert res.exit_code == 0, res.stderr
    for sym in ("STOCKA", "STOCKB"):
        line = next(ln for ln in res.stderr.splitlines() if f"{sym}: last bar 2024-12-31" in ln)
        assert "before the latest completed session" in line and "refresh failed" not in line
    assert (out / trained_run.name / "2024-12-31.csv").is_file()


@pytest.fixture
def yahoo_down(monkeypatch):
    """Every Yahoo request fails as with the network down."""

    def down(ticker, *a, **k):
        raise NetworkError(f"{ticker}: cannot reach Yahoo (ConnectionError)")

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", down)


@pytest.fixture
def stored_sample(sample_dir, tmp_path):
    """A store (``tmp_path / "data"``) holding the sample's bars, which end 2024-12-31."""
    data = tmp_path / "data"
    for sym in ("STOCKA", "STOCKB"):
        save_store(data, sym, read_csv_bars(sample_dir, sym))
    return data


def test_predict_yahoo_server_errors_with_nothing_stored_is_tempfail(
    cli, trained_run, tmp_path, monkeypatch, offline_yfinance
):
    """Yahoo answering 503 to every try (which yfinance gives as an unknown symbol) and no
    stored bars: 75, naming the server error, not 1 for unknown symbols."""
    from yf_fixtures import FakeYahoo

    from forecaster import sources

    yahoo = FakeYahoo({"STOCKA": 503, "STOCKB": 503})
    real = sources.fetch_with_retry

    def via_fake(ticker, start=None, end=None, *, session=None, **_):
        return real(ticker, start, end, session=yahoo.session(), sleep=lambda s: None)

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", via_fake)
    args = ["--run", trained_run, "--source", "yahoo", "--data-dir", tmp_path / "data", "--out", tmp_path / "fc"]
    res = cli("predict", *args)
    assert res.exit_code == 75, res.stderr
    assert "STOCKA: refresh failed (Yahoo server error (HTTP 503); retry later)" in res.stderr
    assert "unknown or delisted" not in res.stderr
    assert not (tmp_path / "fc").exists()


def test_predict_refresh_fails_but_stored_bars_are_recent_enough(cli, trained_run, tmp_path, yahoo_down, stored_sample):
    data = stored_sample
    res = cli(
        "predict",
        "--run",
        trained_run,
        "--source",
        "yahoo",
        "--data-dir",
        data,
        "--out",
        tmp_path / "fc",
        "--max-staleness",
        "100000",
    )
    assert res.exit_code == 0, res.stderr
    assert "STOCKA" in res.stderr and "refresh failed" in res.stderr
    assert (tmp_path / "fc" / trained_run.name / "2024-12-31.csv").is_file()


def test_predict_from_the_wrong_directory_names_it_and_makes_no_store_there(cli, run_copy, tmp_path, yahoo_down):
    """A cron job started outside the folder its run's relative data folder is in: exit 75
    ("retry later", forever) with nothing named, and a new store begun in the wrong place.
    Now one line naming the directory, exit 1, nothing made. A new folder named by --data-dir
    is a new store to start, as before."""
    meta = run_meta(run_copy)
    meta["config"]["data"] |= {"source": "yahoo", "data_dir": "data"}
    (run_copy / "run.json").write_text(json.dumps(meta))
    cwd = tmp_path / "cwd"
    res = cli("predict", "--run", run_copy, "--out", tmp_path / "fc")
    assert_one_line_error(
        res, 1, f"no store to refresh (the data folder data is relative to the current directory, {cwd}, and is not"
    )
    assert not (cwd / "data").exists() and not (tmp_path / "fc").exists()
    res = cli("predict", "--run", run_copy, "--data-dir", "new", "--out", tmp_path / "fc")
    assert res.exit_code == 75 and "refresh failed" in res.stderr  # Yahoo is down here: retry later
    # an absolute folder that is gone (a disk not mounted): the same, and nothing made there
    gone = tmp_path / "mnt" / "store-disk"
    meta["config"]["data"]["data_dir"] = str(gone)
    (run_copy / "run.json").write_text(json.dumps(meta))
    res = cli("predict", "--run", run_copy, "--out", tmp_path / "fc2")
    assert_one_line_error(res, 1, f"no store to refresh (the data folder {gone} is not there")
    assert not (tmp_path / "mnt").exists() and not (tmp_path / "fc2").exists()


# ---------------------------------------------------------------------------- exit 1


def test_predict_as_of_in_the_future(cli, trained_run, tmp_path):
    future = (pd.Timestamp.now() + pd.Timedelta(days=30)).strftime("%Y-%m-%d")
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--as-of", future)
    assert res.exit_code == 1
    assert "future" in res.stderr
    assert not (tmp_path / "fc").exists()


def test_predict_as_of_today_east_of_utc_is_not_the_future(trained_run, tmp_path):
    """In Sydney at 10:00 on 2025-01-03 it is still 2025-01-02 in UTC: `--as-of $(date +%F)`
    names today there, not a future day. A day that has begun nowhere on Earth still is one."""
    sydney_morning = pd.Timestamp("2025-01-03 10:00", tz="Australia/Sydney")  # 2025-01-02 23:00 UTC
    rep = predict(trained_run, as_of="2025-01-03", out=tmp_path / "fc", now=sydney_morning)
    assert rep.exit_code == 0 and rep.as_of == "2024-12-31"  # the data's last bar before it
    assert (tmp_path / "fc" / trained_run.name / "2024-12-31.csv").is_file()
    with pytest.raises(ConfigError, match="--as-of 2025-01-04 is in the future: give 2025-01-03 or an earlier day$"):
        predict(trained_run, as_of="2025-01-04", out=tmp_path / "fc", now=sydney_morning)


def test_predict_as_of_not_a_date(cli, trained_run, tmp_path):
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--as-of", "someday")
    assert res.exit_code == 1
    assert "someday" in res.stderr
    assert not (tmp_path / "fc").exists()


def test_predict_as_of_before_any_bar(cli, trained_run, tmp_path):
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--as-of", "2010-01-04")
    assert res.exit_code == 1
    assert "STOCKA" in res.stderr and "STOCKB" in res.stderr
    assert not list((tmp_path / "fc").glob("*/*.csv"))


def test_predict_unwritable_log_file_is_one_line(cli, trained_run, tmp_path):
    (tmp_path / "logs").write_text("a file where the cron job expects a folder\n")
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--log-file", tmp_path / "logs" / "p.log")
    line = assert_one_line_error(res, 1, "cannot write the log file", "p.log")
    assert line.endswith(f"p.log: {tmp_path / 'logs'} is a file, not a folder")  # not "File exists"
    assert not (tmp_path / "fc").exists()


def test_predict_unwritable_log_file_with_json_prints_the_error_object(cli, trained_run, tmp_path):
    """A log file that cannot be opened fails the command as a whole: with --json, stdout holds
    the error object a wrapper parses, as for any other failure before a result."""
    (tmp_path / "logs").write_text("a file where the cron job expects a folder\n")
    res = cli(
        "predict", "--run", trained_run, "--out", tmp_path / "fc", "--log-file", tmp_path / "logs" / "p.log", "--json"
    )
    line = assert_one_line_error(res, 1, "cannot write the log file", "p.log")
    assert json.loads(res.stdout) == {"error": line.removeprefix("ERROR: "), "exit_code": 1}
    assert not (tmp_path / "fc").exists()


def test_predict_log_file_on_a_full_disk_is_one_warning_not_a_traceback_per_line(cli, trained_run, tmp_path):
    # /dev/full opens like any file and fails every write with ENOSPC, as a log on a full disk does
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--log-file", "/dev/full")
    assert res.exit_code == 0, res.stderr
    assert "Traceback" not in res.stderr and "Logging error" not in res.stderr
    [warning] = [ln for ln in res.stderr.splitlines() if "/dev/full" in ln]
    assert warning.startswith("WARNING: cannot write the log file /dev/full: No space left on device")
    assert (tmp_path / "fc" / trained_run.name / "latest.csv").is_file()


def test_predict_missing_run_dir(cli, tmp_path):
    res = cli("predict", "--run", tmp_path / "nope", "--out", tmp_path / "fc")
    assert res.exit_code == 1
    assert "nope" in res.stderr
    assert not (tmp_path / "fc").exists()


def test_predict_ticker_unknown_to_the_run(cli, trained_run, tmp_path):
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "STOCKA", "ZZZZ")
    assert res.exit_code == 1
    assert "ZZZZ" in res.stderr
    assert not (tmp_path / "fc").exists()


def test_predict_damaged_run_json(cli, run_copy, tmp_path):
    (run_copy / "run.json").write_text("{ not json")
    res = cli("predict", "--run", run_copy, "--out", tmp_path / "fc")
    assert res.exit_code == 1
    assert "run.json" in res.stderr
    assert not (tmp_path / "fc").exists()


def test_predict_writes_no_zero_price_of_a_lower_quantile_that_overflows(cli, run_copy, tmp_path):
    """Finite weights whose lower interval ends overflow to a price of 0 (which score refuses as
    no price): every ticker fails, nothing is written, the forecasts made before are kept."""
    from safetensors.numpy import load_file, save_file

    out = tmp_path / "fc"
    assert cli("predict", "--run", run_copy, "--out", out, "--as-of", "2024-12-02").exit_code == 0
    [folder] = out.iterdir()  # named after the run
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    weights = load_file(str(run_copy / "model.safetensors"))
    bias = weights["head.bias"].copy()
    bias[0::3] = 1e30  # each step's gap below the median (quantiles 0.1, 0.5, 0.9)
    weights["head.bias"] = bias
    save_file(weights, str(run_copy / "model.safetensors"))
    res = cli("predict", "--run", run_copy, "--out", out, "--as-of", "2024-12-03")
    assert_one_line_error(res, 1, "no forecast written", "STOCKA", "STOCKB", "not a finite positive price")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_predict_writes_no_median_that_score_refuses(cli, trained_run, tmp_path, monkeypatch):
    """A median more than 100x away from its last close (weights gone wrong, inputs far
    outside the training's) was written, and score then skipped the whole day's file as
    malformed, every ticker's forecasts with it. That ticker fails now (exit 3), the others
    are written, and score reads the file."""
    import forecaster.prediction as prediction

    real = prediction.calibrated

    def far(q, ws, ends, scale):
        lo, med, hi = real(q, ws, ends, scale)
        first = ws.ticker_id[ends] == ws.names.index("STOCKA")
        return lo + 5.0 * first[:, None], med + 5.0 * first[:, None], hi + 5.0 * first[:, None]  # e**5: 148x

    monkeypatch.setattr(prediction, "calibrated", far)
    out = tmp_path / "fc"
    res = cli("predict", "--run", trained_run, "--out", out, "-q")
    assert res.exit_code == 3, res.stderr
    assert "STOCKA" in res.stderr and "more than 100x away from its last close" in res.stderr
    latest = out / trained_run.name / "latest.csv"
    assert set(pd.read_csv(latest)["ticker"]) == {"STOCKB"}
    res = cli("score", "--run", trained_run, "--out", out, "-q")
    assert "not a valid forecast" not in res.stderr and "skipped" not in res.stderr, res.stderr


def test_predict_no_data_for_any_ticker_is_an_error(cli, trained_run, tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli("predict", "--run", trained_run, "--data-dir", tmp_path / "empty", "--out", tmp_path / "fc")
    assert res.exit_code == 1
    assert "STOCKA" in res.stderr and "STOCKB" in res.stderr
    assert not (tmp_path / "fc").exists()  # no forecast folder, and no lock file in one


@pytest.mark.parametrize("offline", [True, False])
def test_predict_that_writes_nothing_leaves_no_trace(cli, trained_run, tmp_path, yahoo_down, offline):
    """Every ticker failed (offline with no stored bars: 1; the network down with none: 75):
    neither the forecast folder nor its lock file is left behind; an existing folder is kept."""
    out = tmp_path / "fc"
    args = ["--run", trained_run, "--source", "yahoo", "--data-dir", tmp_path / "data", "--out", out]
    res = cli("predict", *args, *(["--offline"] if offline else []))
    assert res.exit_code == (1 if offline else 75), res.stderr
    assert "no forecast written" in res.stderr
    assert not out.exists()
    (out / trained_run.name).mkdir(parents=True)
    res = cli("predict", *args, *(["--offline"] if offline else []))
    assert res.exit_code == (1 if offline else 75), res.stderr
    assert (out / trained_run.name).is_dir() and not list((out / trained_run.name).glob("*.csv"))


def test_predict_into_a_new_folder_waits_for_a_run_that_took_it_meanwhile(cli, trained_run, tmp_path, monkeypatch):
    """A forecast folder that does not exist yet is made and locked only once there is a
    forecast to write: a run that locked it meanwhile is waited for, and then exits 75 naming it."""
    import forecaster.prediction as prediction

    out = tmp_path / "fc"
    holders = []
    real = prediction._forecast

    def forecast_while_another_run_takes_the_folder(*a, **k):
        assert not out.exists()  # nothing is made before there is a forecast to write
        holders.append(hold_lock(out / trained_run.name / ".lock", 120))
        return real(*a, **k)

    monkeypatch.setattr(prediction, "_forecast", forecast_while_another_run_takes_the_folder)
    try:
        res = cli("predict", "--run", trained_run, "--out", out)
    finally:
        for h in holders:
            stop(h)
    assert res.exit_code == 75, res.stderr
    assert f"pid {holders[0].pid}" in res.stderr
    assert not list((out / trained_run.name).glob("*.csv"))


def test_predict_into_a_new_folder_a_file_took_meanwhile_says_so_in_one_line(cli, trained_run, tmp_path, monkeypatch):
    """The --out folder, not there when predict began (so checked and made only once there is
    a forecast to write), replaced by a file while the bars are read: one line naming it."""
    import forecaster.prediction as prediction

    out = tmp_path / "fc"
    real = prediction._forecast

    def forecast_while_a_file_takes_the_folder(*a, **k):
        out.write_text("not a folder\n")
        return real(*a, **k)

    monkeypatch.setattr(prediction, "_forecast", forecast_while_a_file_takes_the_folder)
    res = cli("predict", "--run", trained_run, "--out", out)
    assert_one_line_error(res, 1, f"cannot write forecasts to {out / trained_run.name}: {out} is a file, not a folder")
    assert out.read_text() == "not a folder\n"


_MADE_READ_ONLY_MEANWHILE = """
import os, sys
from forecaster import prediction
from forecaster.cli import main

out, run = sys.argv[1:3]
real = prediction._forecast

def forecast_while_the_folder_is_made_read_only(*a, **k):
    os.chmod(out, 0o555)
    return real(*a, **k)

prediction._forecast = forecast_while_the_folder_is_made_read_only
sys.argv = ["forecaster", "predict", "--run", run, "--out", out, "--offline"]
main()
"""


def test_predict_into_a_new_folder_below_one_made_read_only_meanwhile_says_nothing_was_written(trained_run, tmp_path):
    """The --out folder made read-only while the bars are read, so that the run's forecast
    folder, not there yet, cannot be made in it: one line, exit 1, which said that earlier
    forecast files were unchanged, of a folder that holds none."""
    out = tmp_path / "fc"
    out.mkdir()
    cmd = [sys.executable, "-c", _MADE_READ_ONLY_MEANWHILE, str(out), str(trained_run)]
    if os.geteuid() == 0:  # as root, without the capability that writes into any folder
        cmd = [*UNPRIVILEGED_ROOT, *cmd]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=python_env(NO_COLOR="1"), timeout=120)
    finally:
        out.chmod(0o755)
    assert res.returncode == 1, res.stderr
    assert res.stderr.splitlines() == [
        f"ERROR: cannot write forecasts to {out / trained_run.name}: Permission denied; no forecast file was written"
    ]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("offline", [False, True])
def test_predict_from_a_store_that_is_a_file_says_so_in_one_line(cli, trained_run, tmp_path, monkeypatch, offline):
    def no_network(*a, **k):
        raise AssertionError("a store that cannot be written is not refreshed")

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", no_network)
    data, out = tmp_path / "data", tmp_path / "fc"
    data.mkdir()
    (data / "store").write_text("not a folder\n")
    args = ["--run", trained_run, "--source", "yahoo", "--data-dir", data, "--out", out]
    res = cli("predict", *args, *(["--offline"] if offline else []))
    line = assert_one_line_error(res, 1, f"{data / 'store'} is a file, not a folder")
    assert "exists" not in line.lower() and "download" not in line
    assert not list(out.glob("*/*.csv"))


def test_predict_out_that_is_a_file_below_the_folder_says_so(cli, trained_run, tmp_path):
    (tmp_path / "fc").write_text("not a folder\n")
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc" / "daily")
    line = assert_one_line_error(res, 1, f"{tmp_path / 'fc'} is a file, not a folder")
    assert "Not a directory" not in line


@pytest.mark.parametrize("flag", ["--out", "--data-dir"])
def test_predict_an_empty_folder_option_is_refused_not_taken_for_the_current_folder(cli, trained_run, flag):
    res = cli("predict", "--run", trained_run, flag, "")
    assert_one_line_error(res, 1, f'{flag} "" names no folder')
    assert list(Path.cwd().iterdir()) == []


def test_predict_out_starting_with_a_tilde_is_in_the_home_folder(cli, trained_run, tmp_path, monkeypatch):
    """`--out=~/fc`, which no shell expands (the ~ follows an =): the forecasts go to the home
    folder's fc, not to a folder named ~ in the current directory."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    res = cli("predict", "--run", trained_run, "--offline", "--out=~/fc")
    assert res.exit_code == 0, res.stderr
    assert (home / "fc" / trained_run.name / "latest.csv").is_file()
    assert not (Path.cwd() / "~").exists()


# ---------------------------------------------------------------------------- exit 2


@pytest.mark.parametrize(
    "args",
    [
        [],  # --run is required
        ["--bogus"],
        ["--max-staleness", "-1"],
        ["--source", "ftp"],
        ["--lock-timeout", "soon"],
    ],
)
def test_predict_usage_errors(cli, trained_run, tmp_path, args):
    full = ["predict", "--out", str(tmp_path / "fc"), *args]
    if args:
        full += ["--run", str(trained_run)]
    res = cli(*full)
    assert res.exit_code == 2
    assert "Error" in res.stderr
    assert res.stdout == ""
    assert not (tmp_path / "fc").exists()


# ---------------------------------------------------------------------------- exit 3


def test_predict_one_of_two_tickers_failing_csv(cli, trained_run, sample_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sample_dir / "STOCKA.csv", data / "STOCKA.csv")  # STOCKB has no file
    out = tmp_path / "fc"
    res = cli("predict", "--run", trained_run, "--data-dir", data, "--out", out)
    assert res.exit_code == 3
    assert "STOCKB" in res.stderr
    df = _read(out / trained_run.name / "2024-12-31.csv")
    _check_forecast(df, ["STOCKA"], 3, trained_run.name)
    assert (out / trained_run.name / "latest.csv").read_bytes() == (
        out / trained_run.name / "2024-12-31.csv"
    ).read_bytes()


def test_a_relative_data_folder_missing_here_is_named_with_the_current_directory(cli, run_copy, sample_dir, tmp_path):
    """A run keeps a relative data folder as given: started from another directory (cron),
    the error says the folder is relative to that directory, which it names; from the folder
    the data are in, the same run forecasts."""
    meta = json.loads((run_copy / "run.json").read_text())
    meta["config"]["data"]["data_dir"] = "csv"
    (run_copy / "run.json").write_text(json.dumps(meta))
    res = cli("predict", "--run", run_copy, "--out", tmp_path / "fc", "--offline")
    assert res.exit_code == 1, res.stderr
    here = Path.cwd()
    assert f"no CSV file at {Path('csv') / 'STOCKA.csv'} (the data folder csv is relative" in res.stderr
    assert f"current directory, {here}, and is not there" in res.stderr
    shutil.copytree(sample_dir, here / "csv")
    res = cli("predict", "--run", run_copy, "--out", tmp_path / "fc", "--offline")
    assert res.exit_code == 0, res.stderr
    # a relative folder that is there but lacks the file: no such note
    (here / "csv" / "STOCKA.csv").unlink()
    res = cli("predict", "--run", run_copy, "--out", tmp_path / "fc", "--offline")
    assert res.exit_code == 3 and "relative" not in res.stderr, res.stderr


def test_predict_one_of_two_tickers_failing_json(cli, trained_run, sample_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sample_dir / "STOCKB.csv", data / "STOCKB.csv")
    res = cli("predict", "--run", trained_run, "--data-dir", data, "--out", tmp_path / "fc", "--json")
    assert res.exit_code == 3
    doc = json.loads(res.stdout)
    assert set(doc["failed"]) == {"STOCKA"}
    assert doc["failed"]["STOCKA"].startswith("no CSV file at ")  # the key names the ticker
    assert {r["ticker"] for r in doc["forecasts"]} == {"STOCKB"}
    assert "ERROR: STOCKA failed: no CSV file at " in res.stderr


def test_predict_bar_dated_in_the_future_fails_that_ticker(cli, trained_run, sample_dir, tmp_path):
    """A typo'd year in a CSV is not a forecast origin: the ticker fails, named with the date."""
    data, out = tmp_path / "data", tmp_path / "fc"
    shutil.copytree(sample_dir, data)
    ahead = (pd.Timestamp.now() + pd.Timedelta(days=400)).strftime("%Y-%m-%d")
    with open(data / "STOCKA.csv", "a") as f:
        f.write(f"{ahead},50,51,49,50.5,1000\n")
    res = cli("predict", "--run", trained_run, "--data-dir", data, "--out", out, "-q")
    assert res.exit_code == 3
    assert "STOCKA" in res.stderr and ahead in res.stderr and "after today" in res.stderr
    assert "gap" not in res.stderr  # the months up to that bar are not a gap in the bars to warn of
    df = _read(out / trained_run.name / "2024-12-31.csv")
    _check_forecast(df, ["STOCKB"], 3, trained_run.name)
    # --as-of leaves the bad bar out, so the ticker can still be forecast from before it
    res = cli("predict", "--run", trained_run, "--data-dir", data, "--out", out, "-q", "--as-of", "2024-12-31")
    assert res.exit_code == 0, res.stderr


def test_predict_quiet_still_tells_errors_from_warnings(cli, trained_run, sample_dir, tmp_path):
    """--quiet (as in the cron examples) drops the info lines, not the level of the lines it keeps."""
    data, out = tmp_path / "data", tmp_path / "fc"
    shutil.copytree(sample_dir, data)
    (data / "STOCKA.csv").write_text("Date,Open,High,Low,Close,Volume\n")
    res = cli("predict", "--run", trained_run, "--data-dir", data, "--out", out, "-q")
    assert res.exit_code == 3
    lines = res.stderr.splitlines()
    assert [ln for ln in lines if "STOCKA" in ln] == [
        f"ERROR: STOCKA failed: {data / 'STOCKA.csv'}: has a header but no rows"
    ]
    [stale] = [ln for ln in lines if "STOCKB" in ln]
    assert stale.startswith("WARNING: STOCKB: last bar 2024-12-31, "), stale
    assert all(ln.startswith(("ERROR: ", "WARNING: ")) for ln in lines), lines
    assert res.stdout == ""


def test_predict_csv_cut_off_mid_line_forecasts_from_the_bar_before(cli, trained_run, sample_dir, tmp_path):
    """A CSV whose last line was cut off while it was written (no volume, the close's last
    digits lost, no line end) is not forecast from that torn bar: the line is left out, named
    in a warning, and the ticker forecast from the bar before it."""
    data, out = tmp_path / "data", tmp_path / "fc"
    shutil.copytree(sample_dir, data)
    text = (data / "STOCKA.csv").read_bytes()
    (data / "STOCKA.csv").write_bytes(text[: text.rindex(b",") - 3])
    lines = text.count(b"\n")
    res = cli("predict", "--run", trained_run, "--data-dir", data, "--out", out, "-q")
    assert res.exit_code == 0, res.stderr
    assert f"{data / 'STOCKA.csv'}: line {lines}, the last, has no line end" in res.stderr
    rows = _read(out / trained_run.name / "2024-12-31.csv")
    assert dict(rows.groupby("ticker")["as_of"].first()) == {"STOCKA": "2024-12-30", "STOCKB": "2024-12-31"}


def test_predict_retrying_the_failed_ticker_keeps_the_others_forecasts(cli, trained_run, sample_dir, tmp_path):
    """Exit 3, then `predict -t` for the ticker that failed: the day's file ends up whole."""
    data, out = tmp_path / "data", tmp_path / "fc"
    data.mkdir()
    shutil.copy(sample_dir / "STOCKB.csv", data / "STOCKB.csv")  # STOCKA's file is late
    assert cli("predict", "--run", trained_run, "--data-dir", data, "--out", out, "-q").exit_code == 3
    dated = out / trained_run.name / "2024-12-31.csv"
    first = _read(dated)
    shutil.copy(sample_dir / "STOCKA.csv", data / "STOCKA.csv")
    res = cli("predict", "--run", trained_run, "--data-dir", data, "--out", out, "-q", "-t", "STOCKA")
    assert res.exit_code == 0, res.stderr
    df = _read(dated)
    _check_forecast(df, ["STOCKA", "STOCKB"], 3, trained_run.name)  # in the run's order
    pd.testing.assert_frame_equal(df[df["ticker"] == "STOCKB"].reset_index(drop=True), first)
    assert (out / trained_run.name / "latest.csv").read_bytes() == dated.read_bytes()


def test_predict_retrying_one_ticker_keeps_the_others_rows_of_a_file_with_a_column_added(cli, trained_run, tmp_path):
    """A column added by hand to the day's file (a note), or its columns reordered: `predict -t`
    still keeps the other tickers' rows, as score still reads them; they were dropped without a
    word. The file is written back in the forecast columns, as a run for every ticker writes it."""
    out = tmp_path / "fc"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    dated = out / trained_run.name / "2024-12-31.csv"
    whole = dated.read_bytes()
    edited = pd.read_csv(dated, dtype=str, keep_default_na=False)
    edited.insert(0, "note", "checked")
    edited[edited.columns[::-1]].to_csv(dated, index=False)
    res = cli("predict", "--run", trained_run, "--out", out, "-q", "-t", "STOCKB")
    assert res.exit_code == 0, res.stderr
    assert dated.read_bytes() == whole
    assert (out / trained_run.name / "latest.csv").read_bytes() == whole
    edited.drop(columns=["model", "note"]).to_csv(dated, index=False)  # no longer a forecast file: said
    res = cli("predict", "--run", trained_run, "--out", out, "-q", "-t", "STOCKB")
    assert res.exit_code == 0, res.stderr
    assert f"{dated} is not a forecast file (no column model): replaced by this forecast alone" in res.stderr
    assert set(pd.read_csv(dated)["ticker"]) == {"STOCKB"}


def test_predict_over_a_forecast_file_with_a_header_of_a_million_fields_replaces_it_in_seconds(
    cli, trained_run, tmp_path
):
    """The day's file (or latest.csv) with a million commas after its header, a 1 MB file, was
    read by pandas as a million columns of each row: 11.7 GB and four minutes before predict
    wrote; it is no forecast file, replaced by the forecast as an unreadable one is."""
    import time

    out = tmp_path / "fc"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    dated, latest = out / trained_run.name / "2024-12-31.csv", out / trained_run.name / "latest.csv"
    whole = dated.read_bytes()
    header, rows = whole.split(b"\n", 1)
    for path in (dated, latest):
        path.write_bytes(header + b"," * 1_000_000 + b"\n" + rows)
    started = time.monotonic()
    res = cli("predict", "--run", trained_run, "--out", out, "-q")
    assert time.monotonic() - started < 60
    assert res.exit_code == 0, res.stderr
    assert f"{dated} is unreadable (ValueError): replaced by this forecast alone" in res.stderr
    assert dated.read_bytes() == latest.read_bytes() == whole


def test_predict_over_a_days_file_that_is_a_link_to_dev_zero_replaces_it(cli, trained_run, tmp_path):
    """The day's file a link to /dev/zero (in a forecast folder unpacked from elsewhere): its
    header was read until memory ran out; it is no forecast file, replaced as an unreadable one."""

    out = tmp_path / "fc"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    dated = out / trained_run.name / "2024-12-31.csv"
    whole = dated.read_bytes()
    dated.unlink()
    dated.symlink_to("/dev/zero")
    with memory_capped():  # a failure, not the machine's memory
        res = cli("predict", "--run", trained_run, "--out", out, "-q")
    assert res.exit_code == 0, res.stderr
    assert f"{dated} is unreadable (ValueError): replaced by this forecast alone" in res.stderr
    assert not dated.is_symlink() and dated.read_bytes() == whole


def test_predict_retrying_a_ticker_whose_rows_hold_a_bad_cell_keeps_the_others_rows(cli, trained_run, tmp_path):
    """A cell that is not a number in the rows of the ticker forecast again: those rows are
    replaced anyway, so the other tickers' rows stay (the whole file was called unreadable)."""
    out = tmp_path / "fc"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    dated = out / trained_run.name / "2024-12-31.csv"
    whole = dated.read_bytes()
    edited = pd.read_csv(dated, dtype=str, keep_default_na=False)
    edited.loc[edited["ticker"] == "STOCKB", "p10"] = "n/a"
    edited.to_csv(dated, index=False)
    res = cli("predict", "--run", trained_run, "--out", out, "-t", "STOCKB")
    assert res.exit_code == 0 and "unreadable" not in res.stderr, res.stderr
    assert dated.read_bytes() == whole


@pytest.mark.parametrize(
    "column, cell, why",
    [
        ("p10", "n/a", "p10 'n/a' is not a price"),
        ("p10", "", "p10 '' is not a price"),
        ("last_close", "nan", "last_close 'nan' is not a price"),
        ("p90", "inf", "p90 'inf' is not a price"),
        ("p10", "0", "p10 '0' is not a price"),
        ("p50", "-1.5", "p50 '-1.5' is not a price"),
        ("p10", "1e6", "p10, p50 and p90 are not in order"),
        ("as_of", "2024-13-31", "as_of '2024-13-31' is not a YYYY-MM-DD date of the years 1678-2261"),
        ("as_of", "", "as_of '' is not a YYYY-MM-DD date of the years 1678-2261"),
        ("date", "someday", "date 'someday' is not a YYYY-MM-DD date of the years 1678-2261"),
        ("date", "9999-12-31", "date '9999-12-31' is not a YYYY-MM-DD date of the years 1678-2261"),
        ("date", "2024-12-30", "date 2024-12-30 is not after its as_of"),
        ("step", "0", "step 0 is not a step of a forecast"),
        ("ticker", "STOCK A", "not a ticker"),
        ("ticker", "STOCKC", "not one of the run's tickers"),
        ("last_close", "1e-308", "p50 is more than 100x away from last_close"),
        ("last_close", "1e9", "p50 is more than 100x away from last_close"),
    ],
)
def test_predict_retrying_one_ticker_replaces_a_file_whose_kept_rows_are_no_forecasts(
    cli, trained_run, tmp_path, column, cell, why
):
    """A cell edited by hand in the rows `predict -t STOCKB` keeps (STOCKA's): the file is
    replaced by STOCKB's forecast, with a warning naming the row and the cell. Before, a cell
    that is no number was only called unreadable (ValueError), and one that reads as a number
    but is no price (nan, inf, 0, below 0, p10 above p90, a last close far from the median), a
    date, a step or a ticker that score refuses, was kept without a word, in a file that score
    then refused whole, STOCKB's new forecast with it."""
    out = tmp_path / "fc"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    dated = out / trained_run.name / "2024-12-31.csv"
    edited = pd.read_csv(dated, dtype=str, keep_default_na=False)
    stocka = edited["ticker"] == "STOCKA"
    whole = column in ("as_of", "ticker")  # the cells a forecast has once, repeated at every step
    edited.loc[stocka if whole else stocka & (edited["step"] == "2"), column] = cell
    edited.to_csv(dated, index=False)
    res = cli("predict", "--run", trained_run, "--out", out, "-q", "-t", "STOCKB", "--json")
    assert res.exit_code == 0, res.stderr
    ticker = cell if column == "ticker" else "STOCKA"
    as_of = cell if column == "as_of" else "2024-12-31"
    step = "1" if whole else cell if column == "step" else "2"
    said = f"{dated} is unreadable ({ticker}'s forecast as of {as_of}, step {step}: {why}): {REPLACED}"
    assert f"WARNING: {said}" in res.stderr.splitlines() and said in json.loads(res.stdout)["warnings"]
    _check_forecast(_read(dated), ["STOCKB"], 3, trained_run.name)
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0


@pytest.mark.parametrize(
    "edit, why",
    [
        (lambda df: df.assign(model="lstm"), "lstm, the run's is gru"),
        (lambda df: df[df["step"] != "3"], "STOCKA's forecast has 2 steps, the run forecasts 3"),
    ],
)
def test_predict_retrying_one_ticker_does_not_keep_another_models_rows(cli, trained_run, tmp_path, edit, why):
    """The day's file made by another model trained under the run's name (another cell, another
    horizon): `predict -t` replaces it with a warning, where it kept that model's rows beside
    the run's, a file that score then skipped whole."""
    out = tmp_path / "fc"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    dated = out / trained_run.name / "2024-12-31.csv"
    edit(pd.read_csv(dated, dtype=str, keep_default_na=False)).to_csv(dated, index=False)
    res = cli("predict", "--run", trained_run, "--out", out, "-q", "-t", "STOCKB", "--json")
    assert res.exit_code == 0, res.stderr
    said = f"{dated} holds forecasts of another model named {trained_run.name} ({why};"
    assert said in res.stderr
    assert any(w.startswith(said) for w in json.loads(res.stdout)["warnings"])  # for a consumer of stdout too
    df = _read(dated)
    _check_forecast(df, ["STOCKB"], 3, trained_run.name)
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0


def _cut_in_the_last_field(path):
    path.write_bytes(path.read_bytes()[:-3])  # the last row ends inside the run's name


def _cut_at_a_line_end(path):
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))  # STOCKB without its last step


@pytest.mark.parametrize("cut", [_cut_in_the_last_field, _cut_at_a_line_end])
def test_predict_retrying_a_ticker_in_a_file_cut_short_keeps_the_whole_forecasts_and_says_so(
    cli, trained_run, tmp_path, cut
):
    """The day's file cut short (a copy or a disk that stopped midway): `predict -t` dropped
    every other ticker's rows without a word when the last row was torn, and blamed another
    model when the file ended at a line break. Now the whole forecasts are kept and the
    incomplete one is left out, with a warning."""
    out = tmp_path / "fc"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    dated = out / trained_run.name / "2024-12-31.csv"
    whole = dated.read_bytes()
    said = f"{dated} was cut short: its last forecast was incomplete and is left out, the others kept"
    cut(dated)
    res = cli("predict", "--run", trained_run, "--out", out, "-q", "-t", "STOCKB", "--json")
    assert res.exit_code == 0, res.stderr
    assert said in res.stderr and said in json.loads(res.stdout)["warnings"]
    assert "another model" not in res.stderr
    assert dated.read_bytes() == whole  # STOCKA's rows kept, STOCKB's made again
    cut(dated)
    res = cli("predict", "--run", trained_run, "--out", out, "-q", "-t", "STOCKA")
    assert res.exit_code == 0 and said in res.stderr, res.stderr
    df = _read(dated)
    _check_forecast(df, ["STOCKA"], 3, trained_run.name)  # STOCKB's forecast was incomplete: not kept
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0


def test_predict_retrying_a_ticker_in_a_file_of_another_run_says_it_replaces_it(cli, trained_run, tmp_path):
    """A day's file whose rows name another run (copied into this run's folder by hand) was
    replaced without a word."""
    out = tmp_path / "fc"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    dated = out / trained_run.name / "2024-12-31.csv"
    pd.read_csv(dated, dtype=str, keep_default_na=False).assign(run="elsewhere").to_csv(dated, index=False)
    res = cli("predict", "--run", trained_run, "--out", out, "-q", "-t", "STOCKB")
    assert res.exit_code == 0, res.stderr
    said = f"{dated} holds forecasts of run 'elsewhere', not {trained_run.name}: replaced by this forecast alone"
    assert said in res.stderr
    _check_forecast(_read(dated), ["STOCKB"], 3, trained_run.name)


def test_predict_yahoo_refresh_fails_for_one_ticker(cli, trained_run, sample_dir, tmp_path, monkeypatch):
    good = read_csv_bars(sample_dir, "STOCKA")

    def fetch(ticker, start=None, end=None, **_):
        if ticker == "STOCKA":
            return good if start is None else good[good.index >= pd.Timestamp(start)]
        raise NetworkError(f"{ticker}: cannot reach Yahoo")

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", fetch)
    data, out = tmp_path / "data", tmp_path / "fc"
    res = cli("predict", "--run", trained_run, "--source", "yahoo", "--data-dir", data, "--out", out)
    assert res.exit_code == 3
    assert "STOCKB" in res.stderr
    assert (data / "store" / "STOCKA.parquet").is_file()
    df = _read(out / trained_run.name / "latest.csv")
    _check_forecast(df, ["STOCKA"], 3, trained_run.name)


def test_predict_yahoo_damaged_store_file_gives_its_reason_once(cli, trained_run, sample_dir, tmp_path, monkeypatch):
    good = read_csv_bars(sample_dir, "STOCKA")

    def fetch(ticker, start=None, end=None, **_):
        return good if start is None else good[good.index >= pd.Timestamp(start)]

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", fetch)
    data, out = tmp_path / "data", tmp_path / "fc"
    damaged = save_store(data, "STOCKB", read_csv_bars(sample_dir, "STOCKB"))
    damaged.write_bytes(damaged.read_bytes()[:200])
    res = cli("predict", "--run", trained_run, "--source", "yahoo", "--data-dir", data, "--out", out)
    assert res.exit_code == 3, res.stderr
    [line] = [ln for ln in res.stderr.splitlines() if "STOCKB" in ln]
    assert line.startswith("ERROR: STOCKB failed:")
    assert line.count(f"cannot read {damaged}") == 1 and line.count("delete it") == 1, line
    assert line.count("STOCKB:") == 0, line
    _check_forecast(_read(out / trained_run.name / "latest.csv"), ["STOCKA"], 3, trained_run.name)


def test_predict_yahoo_store_file_with_a_bad_bar_says_to_delete_it_once(
    cli, trained_run, sample_dir, tmp_path, monkeypatch
):
    """A stored close of -1 (an older version, an edit by hand) fails the refresh and the
    stored bars alike: one reason, naming the stored file and what to do, said once."""

    def fetch(ticker, start=None, end=None, **_):
        good = read_csv_bars(sample_dir, ticker)
        return good if start is None else good[good.index >= pd.Timestamp(start)]

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", fetch)
    data, out = tmp_path / "data", tmp_path / "fc"
    bad = read_csv_bars(sample_dir, "STOCKB")
    bad.loc["2024-06-03", "close"] = -1.0
    path = save_store(data, "STOCKB", bad)
    save_store(data, "STOCKA", read_csv_bars(sample_dir, "STOCKA"))
    res = cli("predict", "--run", trained_run, "--source", "yahoo", "--data-dir", data, "--out", out)
    assert res.exit_code == 3, res.stderr
    [line] = [ln for ln in res.stderr.splitlines() if "STOCKB" in ln]
    assert line == (
        "ERROR: STOCKB failed: refresh failed: the stored file holds bad bars (close -1 on 2024-06-03 is not a "
        f"finite positive price); delete {path} and run `forecaster download --data-dir {data} STOCKB`"
    ), line
    _check_forecast(_read(out / trained_run.name / "latest.csv"), ["STOCKA"], 3, trained_run.name)


def test_predict_yahoo_stale_store_and_refresh_failing_for_one(cli, trained_run, sample_dir, tmp_path, monkeypatch):
    """Stored bars far behind the latest session are not used when the refresh fails."""
    good = read_csv_bars(sample_dir, "STOCKA")

    def fetch(ticker, start=None, end=None, **_):
        if ticker == "STOCKA":
            return good if start is None else good[good.index >= pd.Timestamp(start)]
        raise TickerError(f"no data for {ticker}")

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", fetch)
    data = tmp_path / "data"
    save_store(data, "STOCKB", read_csv_bars(sample_dir, "STOCKB"))  # ends 2024-12-31
    res = cli(
        "predict",
        "--run",
        trained_run,
        "--source",
        "yahoo",
        "--data-dir",
        data,
        "--out",
        tmp_path / "fc",
        "--max-staleness",
        "3",
    )
    assert res.exit_code == 3
    assert "STOCKB" in res.stderr and "behind" in res.stderr


# ---------------------------------------------------------------------------- exit 75


def test_predict_yahoo_network_down_and_nothing_stored(cli, trained_run, tmp_path, yahoo_down):
    out = tmp_path / "fc"
    res = cli("predict", "--run", trained_run, "--source", "yahoo", "--data-dir", tmp_path / "data", "--out", out)
    assert res.exit_code == 75
    assert "STOCKA" in res.stderr and "STOCKB" in res.stderr
    assert not list(out.glob("*/*.csv"))
    # --json: the line, the code and every ticker's reason on stdout, for a reader that parses it
    res = cli("predict", "--run", trained_run, "--source", "yahoo", "--data-dir", tmp_path / "data", "--json")
    line = assert_one_line_error(res, 75, "STOCKA", "STOCKB")
    why = "refresh failed (cannot reach Yahoo (ConnectionError)) and nothing is stored"
    failed = {"STOCKA": why, "STOCKB": why}
    assert json.loads(res.stdout) == {"error": line.removeprefix("ERROR: "), "exit_code": 75, "failed": failed}


def test_predict_quiet_with_a_log_file_logs_what_was_forecast(cli, trained_run, tmp_path):
    """From cron (`-q --log-file`, the README's line) each forecast leaves its result in the log:
    how many tickers, the day, the files written; stdout and stderr do not get it."""
    log, out = tmp_path / "predict.log", tmp_path / "fc"
    res = cli("predict", "--run", trained_run, "--offline", "--out", out, "-q", "--log-file", log)
    assert res.exit_code == 0 and res.stdout == "", res.stderr
    [line] = [ln for ln in log.read_text().splitlines() if " INFO forecast " in ln]
    folder = out / trained_run.name
    assert f"forecast 2 tickers of run {trained_run.name} as of 2024-12-31: " in line, line
    assert f"forecast {folder / '2024-12-31.csv'}, latest {folder / 'latest.csv'}" in line, line
    assert "forecast 2 tickers" not in res.stderr
    res = cli("predict", "--run", trained_run, "--offline", "--out", out, "--json", "--log-file", log)
    assert json.loads(res.stdout)["as_of"] == "2024-12-31"  # the document alone on stdout
    assert len([ln for ln in log.read_text().splitlines() if " INFO forecast " in ln]) == 2


def test_a_log_file_whose_last_line_was_cut_short_gets_the_next_line_on_a_line_of_its_own(cli, trained_run, tmp_path):
    """An earlier run that filled the disk left half a line in the log: this run's first line
    does not run on from it."""
    log, out = tmp_path / "predict.log", tmp_path / "fc"
    log.write_text("2026-12-05 09:07:02,625 INFO epoch 1: train 0.")
    res = cli("predict", "--run", trained_run, "--offline", "--out", out, "-q", "--log-file", log)
    assert res.exit_code == 0, res.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "2026-12-05 09:07:02,625 INFO epoch 1: train 0."
    assert len(lines) >= 2 and all(ln[:4].isdigit() for ln in lines[1:]), lines
    res = cli("predict", "--run", trained_run, "--offline", "--out", out, "-q", "--log-file", log)
    assert "\n\n" not in log.read_text()  # a whole last line: nothing added before the next


def test_a_log_file_that_cannot_be_read_back_is_written_to_as_it_is(trained_run, tmp_path):
    """A log file this user may write but not read (mode -w-------, a shared log) was refused
    by the parser (exit 2, "is not readable"), where the README says a log file that can be
    opened is appended to. Whether its last line was cut short cannot be told: nothing is added
    before this run's lines."""
    from support import run_forecaster_minding_file_modes

    log, out = tmp_path / "predict.log", tmp_path / "fc"
    log.write_text("2026-12-05 09:07:02,625 INFO earlier\n")
    log.chmod(0o200)
    try:
        res = run_forecaster_minding_file_modes(
            "predict", "--run", trained_run, "--offline", "--out", out, "-q", "--log-file", log, cwd=tmp_path
        )
    finally:
        log.chmod(0o644)
    assert res.returncode == 0, res.stderr
    assert "log file" not in res.stderr, res.stderr
    text = log.read_text()
    lines = text.splitlines()
    assert lines[0] == "2026-12-05 09:07:02,625 INFO earlier" and "\n\n" not in text
    assert any(f" INFO forecast 2 tickers of run {trained_run.name} " in ln for ln in lines[1:]), lines
    assert all(ln[:4].isdigit() for ln in lines), lines
    log.chmod(0)  # nor written: one line, exit 1, as the README has it, not the parser's usage error
    try:
        res = run_forecaster_minding_file_modes(
            "predict", "--run", trained_run, "--offline", "--out", out, "--log-file", log, cwd=tmp_path
        )
    finally:
        log.chmod(0o644)
    assert res.returncode == 1, res.stderr
    assert res.stderr.splitlines() == [f"ERROR: cannot write the log file {log}: Permission denied"]
    assert log.read_text() == text


def test_a_log_call_whose_arguments_do_not_format_leaves_the_log_file_in_use(tmp_path, capsys):
    """Only a write that fails (a full disk) stops the log file: a line whose arguments do not
    fit its format is reported as logging reports it, and the next lines are still written."""
    import logging

    from support import forecaster_logger_kept

    from forecaster.cli import setup_logging

    path = tmp_path / "run.log"
    log = logging.getLogger("forecaster")
    with forecaster_logger_kept():
        setup_logging(True, path)
        log.warning("%d tickers", "several")
        log.warning("after it")
        for handler in log.handlers:
            handler.flush()
        kept = [type(h).__name__ for h in log.handlers]
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err and "cannot write the log file" not in err, err
    assert "_LogFileHandler" in kept, kept
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" WARNING after it"), lines


def test_debug_adds_the_traceback_and_keeps_the_line_the_document_and_the_exit_code(
    cli, trained_run, tmp_path, yahoo_down, monkeypatch
):
    """--debug shows where an error came from, and changes nothing else: a cron job run with it
    is still told 75 ("try again later"), with the error's line and --json's document, where a
    traceback alone used to end the command with 1 and nothing on stdout."""
    args = ["predict", "--run", trained_run, "--source", "yahoo", "--data-dir", tmp_path / "data", "--json"]
    plain = cli(*args)
    res = cli(*args, "--debug")
    assert res.exit_code == 75 and json.loads(res.stdout) == json.loads(plain.stdout)
    assert "Traceback (most recent call last)" in res.stderr and "TemporaryFailure" in res.stderr
    assert res.stderr.rstrip().splitlines()[-1] == plain.stderr.rstrip().splitlines()[-1]  # the same ERROR line
    # an unexpected error: its traceback, then the one line, without the advice to run with --debug
    monkeypatch.setattr("forecaster.prediction.load_run", lambda *a, **k: 1 / 0)
    res = cli("predict", "--run", trained_run, "--offline", "--debug")
    assert res.exit_code == 1 and "ZeroDivisionError" in res.stderr and "Traceback" in res.stderr
    last = res.stderr.rstrip().splitlines()[-1]
    assert last.startswith("ERROR: unexpected error: ZeroDivisionError") and "--debug" not in last


def test_an_unexpected_error_is_one_line_that_says_how_to_see_its_traceback(cli, trained_run, monkeypatch):
    """Without --debug a bug is one line, exit 1, naming the exception and pointing at --debug;
    --json gives that line as the error object."""
    monkeypatch.setattr("forecaster.prediction.load_run", lambda *a, **k: 1 / 0)
    res = cli("predict", "--run", trained_run, "--offline", "--json")
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    line = "unexpected error: ZeroDivisionError: division by zero (run with --debug for the traceback)"
    assert res.stderr.splitlines() == [f"ERROR: {line}"]
    assert json.loads(res.stdout) == {"error": line, "exit_code": 1}


def test_predict_yahoo_network_down_and_store_too_stale(cli, trained_run, tmp_path, yahoo_down, stored_sample):
    data = stored_sample
    res = cli(
        "predict",
        "--run",
        trained_run,
        "--source",
        "yahoo",
        "--data-dir",
        data,
        "--out",
        tmp_path / "fc",
        "--max-staleness",
        "0",
    )
    assert res.exit_code == 75
    assert not list((tmp_path / "fc").glob("*/*.csv"))


def test_predict_as_of_with_network_down_counts_staleness_to_that_day(
    cli, trained_run, tmp_path, yahoo_down, stored_sample
):
    """A backfill while Yahoo is down: the store reaches the --as-of day, so nothing is stale."""

    data, out = stored_sample, tmp_path / "fc"
    args = ["--run", trained_run, "--source", "yahoo", "--data-dir", data, "--out", out, "--max-staleness", "0"]
    res = cli("predict", *args, "--as-of", "2024-12-20")
    assert res.exit_code == 0, res.stderr
    assert "refresh failed" in res.stderr  # the fallback is still said
    _check_forecast(_read(out / trained_run.name / "2024-12-20.csv"), ["STOCKA", "STOCKB"], 3, trained_run.name)


def test_predict_as_of_a_weekend_with_network_down_names_the_bars_it_uses(
    cli, trained_run, tmp_path, yahoo_down, stored_sample
):
    """A backfill for a Saturday while Yahoo is down: the fallback warning names the last bar
    the forecast is made from (Friday's), not the store's last bar, which --as-of leaves out."""

    data, out = stored_sample, tmp_path / "fc"
    args = ["--run", trained_run, "--source", "yahoo", "--data-dir", data, "--out", out, "--max-staleness", "0"]
    res = cli("predict", *args, "--as-of", "2024-12-28")
    assert res.exit_code == 0, res.stderr
    for sym in ("STOCKA", "STOCKB"):
        line = next(ln for ln in res.stderr.splitlines() if ln.startswith(f"WARNING: {sym}: refresh failed"))
        assert "using stored bars up to 2024-12-27 (--as-of 2024-12-28)" in line and "2024-12-31" not in line, line
    assert set(_read(out / trained_run.name / "2024-12-27.csv")["as_of"]) == {"2024-12-27"}


@pytest.fixture
def calendar_data_end(monkeypatch):
    """``end(day)``: the run's calendar (XNYS) holds sessions up to ``day`` only, as Shanghai's,
    Singapore's and Bombay's do in exchange_calendars 4.13 (up to 2026-12-31)."""
    from forecaster import sessions

    real = sessions._bounds

    def end(day: str) -> None:
        monkeypatch.setattr(sessions, "_bounds", lambda name: (real(name)[0], pd.Timestamp(day)))
        sessions._build.cache_clear()
        sessions.get_calendar.cache_clear()

    yield end
    sessions._build.cache_clear()  # no span built to the false end is left for the next test
    sessions.get_calendar.cache_clear()


def test_predict_after_the_end_of_the_calendars_data_forecasts_as_of_a_day_it_holds_and_says_what_to_do(
    cli, trained_run, tmp_path, yahoo_down, stored_sample, calendar_data_end
):
    """A run on a calendar whose holiday data end before today: the latest completed session
    cannot be found, so a forecast of today fails in one line saying that a newer
    exchange_calendars may hold later years, and a backfill with --as-of counts staleness to
    that day; one too close to the data's end for the forecast's sessions says the same."""
    data, out = stored_sample, tmp_path / "fc"
    args = ["--run", trained_run, "--source", "yahoo", "--data-dir", data, "--max-staleness", "0"]
    newer = "a newer version may hold later years, pip install -U exchange-calendars)"
    calendar_data_end("2025-06-30")
    before = str(pd.Timestamp.now(tz="UTC").date())
    res = cli("predict", *args, "--out", out)
    today = {before, str(pd.Timestamp.now(tz="UTC").date())}
    line = assert_one_line_error(res, 1, "exchange calendar 'XNYS' only has sessions up to 2025-06-30; cannot answer")
    assert line.endswith(newer) and line.split("cannot answer for ")[1][:10] in today, line
    assert not out.exists()
    res = cli("predict", *args, "--out", out, "--as-of", "2024-12-31")
    assert res.exit_code == 0, res.stderr
    for sym in ("STOCKA", "STOCKB"):
        assert (
            f"WARNING: {sym}: refresh failed (cannot reach Yahoo (ConnectionError)); using stored bars up to "
            "2024-12-31 (0 session(s) behind)"
        ) in res.stderr.splitlines()
    _check_forecast(_read(out / trained_run.name / "2024-12-31.csv"), ["STOCKA", "STOCKB"], 3, trained_run.name)
    calendar_data_end("2025-01-03")  # two sessions after the last bar, for a forecast of three
    res = cli("predict", *args, "--out", tmp_path / "fc2", "--as-of", "2024-12-31")
    line = assert_one_line_error(res, 1, "only has sessions up to 2025-01-03: 2 after 2024-12-31, cannot give 3")
    assert line.endswith(newer)
    assert not (tmp_path / "fc2").exists()


def test_predict_lock_held_on_the_output(cli, trained_run, tmp_path):
    folder = tmp_path / "fc" / trained_run.name
    with fsio.file_lock(folder / ".lock"):
        res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc")
    assert res.exit_code == 75
    assert f"pid {os.getpid()}" in res.stderr
    assert not list(folder.glob("*.csv"))


@pytest.mark.parametrize(("count", "shown"), [(10, 10), (12, 9)])
def test_many_warnings_and_notes_are_cut_short_alike_and_say_how_many_more(caplog, count, shown):
    """A universe of tickers can give a note or a warning each: both are cut to the first nine
    past ten, with a line saying how many more there are; --json has them all."""
    import logging
    from types import SimpleNamespace

    from forecaster.prediction import _log_messages

    rep = SimpleNamespace(
        warnings=[f"T{i}: last bar 2 sessions behind" for i in range(count)],
        notes=[f"T{i}: last bar 2025-12-31" for i in range(count)],
    )
    with caplog.at_level(logging.INFO, logger="forecaster"):
        _log_messages(rep)
    for level, what, messages in ((logging.WARNING, "warnings", rep.warnings), (logging.INFO, "notes", rep.notes)):
        lines = [r.getMessage() for r in caplog.records if r.levelno == level]
        assert lines[:shown] == messages[:shown]
        if shown < count:
            assert lines[shown:] == [f"and {count - shown} more {what} (the --json output lists them all)"]
        else:
            assert len(lines) == count


def test_predict_json_recalibrated_counts_the_sessions_of_each_ticker_as_the_readme_says(cli, sample_dir, tmp_path):
    """A run trained on bars up to 2024-12-20 forecasting from bars up to 2024-12-31 catches up
    on the six sessions between, for each ticker: `recalibrated` maps ticker to that count."""
    from forecaster.config import load_config
    from forecaster.training import train

    cut = tmp_path / "cut"
    cut.mkdir()
    for sym in ("STOCKA", "STOCKB"):
        lines = (sample_dir / f"{sym}.csv").read_text(encoding="utf-8").splitlines(keepends=True)
        (cut / f"{sym}.csv").write_text(
            "".join(lines[:1] + [ln for ln in lines[1:] if ln[:10] <= "2024-12-20"]), encoding="utf-8"
        )
    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(cut, **{"train.epochs": 1})), run_dir=run)
    res = cli("predict", "--run", run, "--data-dir", sample_dir, "--out", tmp_path / "fc", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["as_of"] == "2024-12-31"
    assert doc["recalibrated"] == {"STOCKA": 6, "STOCKB": 6}  # Dec 23, 24, 26, 27, 30, 31
    said = "INFO: interval scales brought up to date with the outcomes of up to 6 session(s) since the run's last bar"
    assert said in res.stderr.splitlines(), res.stderr
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    said = readme[readme.index("`--json` says how many sessions it caught up on") :].split(". ", 1)[0]
    assert "per ticker" in said and "`recalibrated`" in said


def test_predict_shared_among_processes_writes_the_same_forecasts_and_report(sample_dir, tmp_path, monkeypatch):
    """`--jobs 2` forecasts each ticker in a process of its own (here one ticker a process) and
    writes the same files byte for byte, with the same report (failures, warnings, notes,
    recalibrations, as-of date), as one process does: a ticker is forecast alone either way."""
    from forecaster import prediction
    from forecaster.config import load_config
    from forecaster.training import train

    cut = tmp_path / "cut"
    cut.mkdir()
    for sym in ("STOCKA", "STOCKB"):  # the run ends on 2024-12-20: predict catches up on six sessions
        lines = (sample_dir / f"{sym}.csv").read_text(encoding="utf-8").splitlines(keepends=True)
        (cut / f"{sym}.csv").write_text(
            "".join(lines[:1] + [ln for ln in lines[1:] if ln[:10] <= "2024-12-20"]), encoding="utf-8"
        )
    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(cut, **{"train.epochs": 1})), run_dir=run)
    pools = record_blocks(monkeypatch, prediction, "_forecast_block")  # two tickers: a process each
    one_ticker = tmp_path / "one"  # STOCKB has no file: it fails in its own process
    one_ticker.mkdir()
    shutil.copy(sample_dir / "STOCKA.csv", one_ticker / "STOCKA.csv")
    for data, failed in ((sample_dir, set()), (one_ticker, {"STOCKB"})):
        reports, files = [], []
        for jobs in (1, 2):
            out = tmp_path / f"fc-{data.name}-{jobs}"
            rep = predict(run, data_dir=data, out=out, jobs=jobs)
            reports.append(rep)
            files.append({p.name: p.read_bytes() for p in sorted((out / "run").glob("*.csv"))})
        assert pools == [(2, [["STOCKA"], ["STOCKB"]])]
        pools.clear()
        serial, shared = reports
        assert set(shared.failed) == failed and shared.exit_code == (3 if failed else 0)
        assert files[0] == files[1] and set(files[1]) == {"2024-12-31.csv", "latest.csv"}
        pd.testing.assert_frame_equal(shared.forecasts, serial.forecasts)
        for key in ("as_of", "failed", "warnings", "notes", "recalibrated"):
            assert getattr(shared, key) == getattr(serial, key), key
        assert shared.recalibrated == {s: 6 for s in ("STOCKA", "STOCKB") if s not in failed}


_STOPPED_IN_A_WORKER = stopped_in_a_worker(
    "prediction", "_forecast_block", "predict", "--run", "{0}", "--out", "{1}", "--jobs", "2"
)


@pytest.mark.slow
def test_sigterm_to_predict_and_its_worker_processes_is_one_line_exit_130(trained_run, tmp_path):
    """SIGTERM to a predict shared among processes, the way `systemctl stop` sends it to all of
    them: exit 130 with one line and no traceback from a worker; the earlier forecast files are
    kept as they were, and nothing half-written is left beside them."""
    out = tmp_path / "fc"
    predict(trained_run, out=out, jobs=1)
    folder = out / trained_run.name
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    res = run_script(_STOPPED_IN_A_WORKER, trained_run, out, own_group=True)
    assert_stopped_with_one_line(res, "predict")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


_STOPPED_AS_THE_PROCESSES_START = """
import os, signal, sys
from forecaster import pool, prediction
from forecaster.cli import main

prediction.MIN_TICKERS_PER_JOB = 1  # two tickers: a process each
submit = pool.ProcessPoolExecutor.submit

def submit_then_stop(self, *args, **kwargs):  # the processes are forked at the first task
    future = submit(self, *args, **kwargs)
    os.killpg(0, signal.SIGTERM)  # while they are still starting
    return future

pool.ProcessPoolExecutor.submit = submit_then_stop
sys.argv = ["forecaster", "predict", "--run", sys.argv[1], "--out", sys.argv[2], "--jobs", "2"]
main()
"""


@pytest.mark.slow
def test_sigterm_while_the_worker_processes_start_is_one_line_exit_130(trained_run, tmp_path):
    """SIGTERM to the whole command just as its processes are forked, before they have taken
    their own signal handlers: none of them takes it for the command's Ctrl-C (a traceback per
    process); one line, exit 130, nothing written."""
    out = tmp_path / "fc"
    res = run_script(_STOPPED_AS_THE_PROCESSES_START, trained_run, out, own_group=True)
    assert_stopped_with_one_line(res, "predict")
    assert not out.exists()


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_reader_that_goes_away_costs_the_table_not_the_exit_code(trained_run, run_copy, tmp_path, command):
    """`forecaster predict ... | head -1`: the table's first write found the pipe closed, and
    rich ended the command with exit 1 and no line, after the forecasts were written."""
    out = tmp_path / "fc"
    args = {
        "predict": ("predict", "--run", trained_run, "--offline", "--out", out),
        "evaluate": ("evaluate", "--run", run_copy, "--no-plot"),
    }[command]
    proc = start_forecaster(*args)
    proc.stdout.close()  # the reader is gone before the command prints
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "ERROR" not in err and "Traceback" not in err
    if command == "predict":
        assert (out / trained_run.name / "latest.csv").is_file()
    if command == "evaluate":
        assert (run_copy / "eval" / "metrics.csv").is_file()


def test_a_path_the_output_encoding_lacks_is_written_escaped(trained_run, tmp_path):
    """With PYTHONIOENCODING=ascii, a forecast folder named with an accent made predict fail
    with an 'unexpected error: UnicodeEncodeError' (exit 1) after writing the forecasts."""
    from support import cli_env

    out = tmp_path / "fc_\u00e9"
    proc = start_forecaster(
        "predict", "--run", trained_run, "--offline", "--out", out, env=cli_env(PYTHONIOENCODING="ascii")
    )
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "fc_\\xe9" in stdout + stderr and "Error" not in stderr
    assert (out / trained_run.name / "latest.csv").is_file()


def test_the_files_written_are_named_as_a_shell_reads_them_back(cli, trained_run, tmp_path):
    """`latest: PATH` printed the folder as it was: one with a space or a quote could not be
    pasted back into a shell, and one with a newline or an escape (ESC[31m turned the terminal
    red) broke the line or moved the cursor."""
    import shlex

    out = tmp_path / "fc f $x 'q\""
    res = cli("predict", "--run", trained_run, "--offline", "--out", out)
    assert res.exit_code == 0, res.stderr
    forecast, latest = res.stdout.splitlines()[-2:]
    assert shlex.split(latest.removeprefix("latest: ")) == [str(out / trained_run.name / "latest.csv")], latest
    assert shlex.split(forecast.removeprefix("forecast: "))[0].startswith(str(out / trained_run.name) + "/")
    res = cli("predict", "--run", trained_run, "--offline", "--out", tmp_path / "fc\nx\x1b[31m")
    assert res.exit_code == 0, res.stderr
    assert "\x1b" not in res.stdout
    assert res.stdout.splitlines()[-1] == f"latest: $'{tmp_path}/fc\\nx\\x1b[31m/{trained_run.name}/latest.csv'"


def test_no_style_codes_in_a_pipe_with_force_color_nor_on_a_terminal_with_no_color(trained_run, tmp_path):
    """FORCE_COLOR (set by some CI runners and wrappers) made the table in a pipe or a log file
    carry bold and italic codes, and NO_COLOR on a terminal left them in: the README's plain
    output, with no escape codes, is what a reader gets without a terminal or with NO_COLOR."""
    from support import cli_env, on_a_terminal

    args = ("predict", "--run", trained_run, "--offline", "--out", tmp_path / "fc")
    env = {k: v for k, v in cli_env(FORCE_COLOR="1", TERM="xterm").items() if k != "NO_COLOR"}
    proc = start_forecaster(*args, env=env)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "| ticker" in stdout and "\x1b" not in stdout + stderr, stdout
    code, shown = on_a_terminal(args, cli_env(TERM="xterm"))  # stdout on a terminal, NO_COLOR=1
    assert code == 0
    assert b"ticker" in shown and b"\x1b" not in shown, shown


@pytest.mark.parametrize("command", ["predict", "info"])
def test_a_reader_that_goes_away_leaves_the_commands_own_exit_code(
    trained_run, sample_dir, run_copy, tmp_path, command
):
    """The first write that found the pipe closed ended the command with exit 0: a forecast
    with a failed ticker (3) or an unusable run (1) read as done to the wrapper."""
    import shutil

    if command == "predict":  # one of the two tickers has no bars: exit 3
        partial = tmp_path / "partial"
        partial.mkdir()
        shutil.copy(sample_dir / "STOCKA.csv", partial / "STOCKA.csv")
        args, code = ("predict", "--run", trained_run, "--offline", "--source", "csv", "--data-dir", partial), 3
        args += ("--out", tmp_path / "fc")
    else:  # its weights gone: info shows what it can, then exits 1
        (run_copy / "model.safetensors").unlink()
        args, code = ("info", run_copy), 1
    proc = start_forecaster(*args)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == code, err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_a_last_bar_without_its_volume_does_not_move_the_forecast(trained_run, sample_dir, tmp_path):
    """Some sources give the latest day without its volume. Read as 0, its log-volume change
    was about -14 (standard deviations beyond anything trained on) and moved the forecast; it
    now takes the volume of the bar before, as if the volume had not changed."""
    from forecaster.prediction import predict

    forecasts = {}
    for case in ("empty", "same"):
        data = tmp_path / case
        data.mkdir()
        shutil.copy(sample_dir / "STOCKB.csv", data / "STOCKB.csv")
        lines = (sample_dir / "STOCKA.csv").read_text().splitlines()
        before = lines[-2].rsplit(",", 1)[1]
        lines[-1] = lines[-1].rsplit(",", 1)[0] + "," + ("" if case == "empty" else before)
        (data / "STOCKA.csv").write_text("\n".join(lines) + "\n")
        report = predict(trained_run, offline=True, data_dir=data, out=tmp_path / f"fc-{case}")
        forecasts[case] = report.forecasts.set_index(["ticker", "step"])[["p10", "p50", "p90"]]
    pd.testing.assert_frame_equal(forecasts["empty"], forecasts["same"], check_exact=True)


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_stdout_that_cannot_be_written_fails_the_command_in_one_line(trained_run, tmp_path, unbuffered):
    """`forecaster predict --json > /dev/full` (stdout on a full disk): with stdout buffered,
    as under cron, the document was lost and the command exited 0; unbuffered, it printed two
    tracebacks. The forecast is written, one line says that stdout could not be, exit 1."""
    import subprocess

    from support import cli_env

    out = tmp_path / "fc"
    env = cli_env(PYTHONUNBUFFERED=unbuffered)
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [FORECASTER, "predict", "--run", trained_run, "--offline", "--out", out, "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=120,
        )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert error_lines(proc) == [
        "ERROR: cannot write to stdout: No space left on device; what the command printed there is incomplete"
    ]
    assert (out / trained_run.name / "latest.csv").is_file()
    # a wrapper reading 1 as "nothing partial was written" is told of this exception where it looks
    table = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Exit codes\n", 1)[1]
    [row] = [line for line in table.splitlines() if line.startswith("| 1 |")]
    assert "cannot write to stdout" in row, row


def test_a_closed_standard_stream_leaves_its_number_to_the_null_device(trained_run, tmp_path):
    """Started with stdin, stdout and stderr closed (`<&- >&- 2>&-`), the command opened the null
    device for stdout and stderr as numbers 0 and 1, and its log file took number 2: whatever a
    library or a worker process writes to its stderr went into the log (a pool's pipe took a
    free number as well). The null device now holds each closed number, as it would the stream,
    and is inherited as a stream is (it was closed on exec: a worker started anew, as train's
    garch fits are, began with those numbers closed, and its pool's pipe took one)."""
    import subprocess
    import time

    from support import TESTS, python_env

    paused = tmp_path / "paused"  # written as predict is about to put latest.csv in place
    hooks = f"{TESTS / 'fault_hooks'}{os.pathsep}{TESTS}"
    env = python_env(PYTHONPATH=hooks, FORECASTER_TEST_PAUSE=f"latest.csv:{paused}")
    args = ["predict", "--run", trained_run, "--offline", "--out", tmp_path / "fc", "--log-file", tmp_path / "log"]
    proc = subprocess.Popen(["sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh", FORECASTER, *args], env=env)
    try:
        while not paused.exists():
            assert proc.poll() is None, proc.returncode
            time.sleep(0.1)
        numbers = {fd: os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in (0, 1, 2)}
        flags = {fd: _fd_flags(proc.pid, fd) for fd in (0, 1, 2)}
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert numbers == {0: os.devnull, 1: os.devnull, 2: os.devnull}
    assert {fd: bool(f & os.O_CLOEXEC) for fd, f in flags.items()} == {0: False, 1: False, 2: False}


def _fd_flags(pid: int, fd: int) -> int:
    """The open flags of a process's file descriptor (``O_CLOEXEC``: closed in a program it execs)."""
    info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    return int(next(line.split()[1] for line in info.splitlines() if line.startswith("flags:")), 8)


@pytest.mark.parametrize(("as_of", "said"), [("2020-12-31", "no bars on or before"), ("2021-01-15", "need")])
def test_as_of_before_a_ticker_has_a_window_of_bars_says_the_first_that_has(
    cli, trained_run, sample_dir, tmp_path, as_of, said
):
    """--as-of before STOCKB's first bars, or before its lookback's worth of them, said only how
    few there were: it names the first --as-of with enough, and that one forecasts."""
    lookback = run_meta(trained_run)["config"]["window"]["lookback"]
    first = pd.read_csv(sample_dir / "STOCKB.csv")["Date"].iloc[lookback]
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--as-of", as_of, "-t", "STOCKB")
    assert_one_line_error(res, 1, "STOCKB", said, f"; give --as-of {first} or later")
    assert not (tmp_path / "fc").exists()
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--as-of", first, "-t", "STOCKB")
    assert res.exit_code == 0, res.stderr


def test_a_mistyped_run_beside_runs_names_the_command_that_lists_them(cli, run_copy, tmp_path):
    """`predict --run runs/prdo` said only that no run directory was there; where runs are
    beside it, it says how to list them, and that lists the one meant."""
    res = cli("predict", "--run", tmp_path / "rnu", "--offline", "--out", tmp_path / "fc")
    line = assert_one_line_error(res, 1, f"no run directory at {tmp_path / 'rnu'}")
    command = f"forecaster info {shlex.quote(str(tmp_path))}"
    assert line.endswith(f" (`{command}` lists the runs there)"), line
    listed = cli(*shlex.split(command)[1:])
    assert listed.exit_code == 0 and run_copy.name in listed.stdout, listed.stderr
    res = cli("predict", "--run", tmp_path / "none" / "rnu", "--offline", "--out", tmp_path / "fc")
    assert assert_one_line_error(res, 1).endswith(f"no run directory at {tmp_path / 'none' / 'rnu'}")
    assert not (tmp_path / "fc").exists()
