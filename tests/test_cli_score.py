"""`forecaster score`: every forecast of a run joined with the realised closes (SPEC §9).

The tiny run of this module was trained on the CSV sample's bars up to 2024-12-19; its data
folder has received the rest since, to 2024-12-31, as a live one does. Forecasts are written
by `predict --as-of` at four origins after its data ended, in the last days of 2024, so some
of their sessions have closes (scored) and some lie in 2025 (pending). The expected figures
are computed here from the forecast files and the sample's closes, row by row.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import FORECASTER, ROOT, cli_env, log_lines, memory_capped, on_a_terminal, tiny_overrides

from forecaster.metrics import diebold_mariano, diebold_mariano_differential
from forecaster.prediction import predict
from forecaster.scoring import SCORE_COLUMNS, ScoreReport, coverage_pvalue
from forecaster.sources import read_csv_bars
from forecaster.synthetic import write_csv

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ORIGINS = ["2024-12-20", "2024-12-24", "2024-12-27", "2024-12-31"]
LEVELS = (0.1, 0.5, 0.9)
TRAINED_TO = "2024-12-19"


LIVE_NOW = pd.Timestamp("2025-01-01 12:00", tz="UTC")
"""The clock of this module's scores: the evening after the data's last session (2024-12-31), so
the forecasts still pending are not overdue."""


@pytest.fixture(autouse=True)
def _live_clock(monkeypatch):
    """``score`` reads the time of LIVE_NOW, not the real one (then every pending forecast of
    these 2024 data would be long overdue)."""
    from forecaster import scoring

    real = scoring.last_completed_session
    monkeypatch.setattr(scoring, "last_completed_session", lambda now, cal: real(LIVE_NOW if now is None else now, cal))


@pytest.fixture(scope="module")
def trained_run(sample_dir, tmp_path_factory) -> Path:
    """A tiny run trained on the sample's bars up to TRAINED_TO, whose data folder then got the
    sample's later bars: the forecasts at ORIGINS are made after its data ended (live)."""
    run_dir = tmp_path_factory.mktemp("live-runs") / "tiny"
    _train_live(sample_dir, tmp_path_factory.mktemp("live-data"), run_dir)
    return run_dir


def _train_live(sample_dir: Path, data: Path, run_dir: Path, **overrides) -> None:
    """Train a tiny run at ``run_dir`` on the sample's bars up to TRAINED_TO, copied to
    ``data``, then give ``data`` the later bars, as the days after training do."""
    from forecaster.config import load_config
    from forecaster.training import train

    for path in sample_dir.glob("*.csv"):
        bars = read_csv_bars(sample_dir, path.stem)
        write_csv(bars[bars.index <= TRAINED_TO], data / path.name)
    train(load_config(None, tiny_overrides(data, **overrides)), run_dir=run_dir)
    for path in sample_dir.glob("*.csv"):  # the bars that came in since
        shutil.copy(path, data / path.name)


@pytest.fixture(scope="module")
def written(trained_run, tmp_path_factory) -> Path:
    """The forecast folder (OUT) after predict ran at every origin."""
    out = tmp_path_factory.mktemp("forecasts")
    for day in ORIGINS:
        predict(trained_run, as_of=day, out=out, offline=True)
    return out


@pytest.fixture
def out(written, tmp_path) -> Path:
    """A private copy of the forecast folder, safe to change."""
    dst = tmp_path / "fc"
    shutil.copytree(written, dst)
    return dst


def _expected(folder: Path, data_dir: Path) -> pd.DataFrame:
    """Per ticker and step, and pooled: the figures of SPEC §9 computed row by row."""
    rows = pd.concat([pd.read_csv(folder / f"{d}.csv", dtype={"as_of": str, "date": str}) for d in ORIGINS])
    closes = {s: read_csv_bars(data_dir, s)["close"] for s in rows["ticker"].unique()}
    rows["actual"] = [closes[t].get(pd.Timestamp(d), np.nan) for t, d in zip(rows["ticker"], rows["date"])]
    rows = rows.sort_values(["ticker", "step", "as_of"], kind="mergesort")
    out = []
    groups = [((t, s), g) for (t, s), g in rows.groupby(["ticker", "step"])]
    groups += [(("ALL", s), g) for s, g in rows.groupby("step")]
    for (ticker, step), g in groups:
        done = g[g["actual"].notna()]
        a = done["actual"].to_numpy()
        e, e_naive = a - done["p50"].to_numpy(), a - done["last_close"].to_numpy()
        loss = [np.maximum(q * (a - done[c]), (q - 1) * (a - done[c])) for q, c in zip(LEVELS, ("p10", "p50", "p90"))]
        out.append(
            {
                "ticker": ticker,
                "step": step,
                "n": len(done),
                "pending": int(g["actual"].isna().sum()),
                "mae": np.abs(e).mean(),
                "mae_naive": np.abs(e_naive).mean(),
                "skill": 1 - np.abs(e).mean() / np.abs(e_naive).mean(),
                # pooled: the test of the mean difference of each origin, in origin order
                "dm_pvalue": diebold_mariano(e, e_naive, h=step)[1]
                if ticker != "ALL"
                else diebold_mariano_differential(
                    pd.Series(np.abs(e) - np.abs(e_naive)).groupby(done["as_of"].to_numpy()).mean().sort_index(),
                    h=step,
                )[1],
                "coverage": ((done["p10"] <= a) & (a <= done["p90"])).mean(),
                "width": (done["p90"] - done["p10"]).mean(),
                "pinball": np.mean(np.mean(loss, axis=0)),
            }
        )
    return pd.DataFrame(out)


def _score_csv(out: Path, run: Path) -> pd.DataFrame:
    return pd.read_csv(out / run.name / "score.csv")


def test_score_joins_every_forecast_file_with_the_realised_closes(cli, trained_run, sample_dir, out):
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 0, res.stderr
    got = _score_csv(out, trained_run)
    assert list(got.columns) == SCORE_COLUMNS
    want = _expected(out / trained_run.name, sample_dir)
    assert list(zip(got["ticker"], got["step"])) == list(zip(want["ticker"], want["step"]))
    # sessions after 2024-12-31 are pending: the 12-27 origin's third step, the 12-31 origin's three
    assert list(got["n"]) == [3, 3, 2] * 2 + [6, 6, 4]
    assert list(got["pending"]) == [1, 1, 2] * 2 + [2, 2, 4]
    for col in SCORE_COLUMNS[4:]:
        np.testing.assert_allclose(got[col], want[col], rtol=1e-6, err_msg=col)
    # latest.csv (a copy of the 12-31 file) is not counted a second time
    assert (out / trained_run.name / "latest.csv").is_file()
    assert "ALL" in res.stdout and str(out / trained_run.name / "score.csv") in res.stdout


def test_scoring_twice_gives_the_same_numbers(cli, trained_run, out):
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    first = (out / trained_run.name / "score.csv").read_bytes()
    # a second copy of one forecast under another date is the same forecast: scored once
    folder = out / trained_run.name
    shutil.copy(folder / "2024-12-20.csv", folder / "2024-12-21.csv")
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    assert (out / trained_run.name / "score.csv").read_bytes() == first


def test_a_forecast_found_in_two_files_is_scored_from_the_later_file(cli, trained_run, out, tmp_path):
    """The 2024-12-20 forecasts copied into a file of a later day, STOCKA's one-step median
    edited there: the forecast is scored once, with the later file's median, exactly as if
    the edit had been made in the 2024-12-20 file itself; copied into a file of an earlier
    day, the 2024-12-20 file's own median is scored."""
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    clean = (folder / "score.csv").read_bytes()
    original = (folder / "2024-12-20.csv").read_bytes()
    edited = pd.read_csv(folder / "2024-12-20.csv", dtype=str)
    row = (edited["ticker"] == "STOCKA") & (edited["step"] == "1")
    edited.loc[row, "p50"] = edited.loc[row, "p90"]  # still a valid forecast: p10 <= p50 <= p90
    edited.to_csv(folder / "2024-12-20.csv", index=False)
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    with_edit = (folder / "score.csv").read_bytes()
    assert with_edit != clean  # the edit shows in the score
    (folder / "2024-12-20.csv").write_bytes(original)
    edited.to_csv(folder / "2024-12-23.csv", index=False)  # a later file: its copy is the one scored
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    assert (folder / "score.csv").read_bytes() == with_edit
    assert "2024-12-23.csv" in json.loads(res.stdout)["read"]
    (folder / "2024-12-23.csv").rename(folder / "2024-12-19.csv")  # an earlier file: the 2024-12-20 one's
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    assert (folder / "score.csv").read_bytes() == clean


def _copy_data(sample_dir: Path, dst: Path) -> Path:
    shutil.copytree(sample_dir, dst)
    return dst


def test_a_revised_bar_is_scored_with_its_latest_value(cli, trained_run, sample_dir, out, tmp_path):
    data = _copy_data(sample_dir, tmp_path / "data")
    bars = read_csv_bars(data, "STOCKA")
    bars.loc[pd.Timestamp("2024-12-23"), ["high", "close"]] *= 1.05  # a corrected close, after the forecasts
    write_csv(bars, data / "STOCKA.csv")
    res = cli("score", "--run", trained_run, "--out", out, "--data-dir", data, "-q")
    assert res.exit_code == 0, res.stderr
    got, want = _score_csv(out, trained_run), _expected(out / trained_run.name, data)
    np.testing.assert_allclose(got["mae"], want["mae"], rtol=1e-6)
    before = _expected(out / trained_run.name, sample_dir)
    assert got["mae"].iloc[0] != pytest.approx(before["mae"].iloc[0])  # STOCKA step 1 saw the revision


def test_history_readjusted_after_a_split_is_scored_in_the_new_units(cli, trained_run, sample_dir, out, tmp_path):
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    before = _score_csv(out, trained_run)
    data = tmp_path / "split"
    data.mkdir()
    for sym in ("STOCKA", "STOCKB"):  # a 2-for-1 split after the last bar: all history halves
        bars = read_csv_bars(sample_dir, sym)
        bars[["open", "high", "low", "close"]] /= 2
        write_csv(bars, data / f"{sym}.csv")
    res = cli("score", "--run", trained_run, "--out", out, "--data-dir", data, "-q")
    assert res.exit_code == 0, res.stderr
    after = _score_csv(out, trained_run)
    assert list(after["n"]) == list(before["n"]) and list(after["pending"]) == list(before["pending"])
    for col in ("mae", "mae_naive", "width", "pinball"):
        np.testing.assert_allclose(after[col], before[col] / 2, rtol=1e-4, err_msg=col)
    for col in ("skill", "coverage"):
        np.testing.assert_allclose(after[col], before[col], rtol=1e-3, atol=1e-9, err_msg=col)


def test_a_forecast_whose_as_of_bar_is_gone_from_the_data_is_still_scored(cli, trained_run, sample_dir, out, tmp_path):
    """STOCKA's bar of 2024-12-24 removed from the data since its forecast was made (a revised
    history): the forecast as of that day cannot be checked against a re-adjustment and is
    scored in the prices it was made in, not dropped from n, MAE and coverage without a word."""
    data = _copy_data(sample_dir, tmp_path / "data")
    bars = read_csv_bars(data, "STOCKA")
    write_csv(bars.drop(pd.Timestamp("2024-12-24")), data / "STOCKA.csv")
    res = cli("score", "--run", trained_run, "--out", out, "--data-dir", data, "--since", "2024-12-24", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert not [w for w in doc["warnings"] if w.startswith("STOCKA:")], doc["warnings"]
    got = pd.DataFrame(doc["scores"]).set_index(["ticker", "step"])
    rows = pd.concat([pd.read_csv(out / trained_run.name / f"{d}.csv", dtype=str) for d in ORIGINS[1:]])
    a = rows[rows["ticker"] == "STOCKA"].copy()
    closes = read_csv_bars(data, "STOCKA")["close"]
    a["actual"] = [closes.get(pd.Timestamp(d), np.nan) for d in a["date"]]
    done = a[a["actual"].notna()]
    assert (done["as_of"] == "2024-12-24").sum() == 3  # its sessions, 12-26 to 12-30, have closes
    for step, g in done.groupby("step"):
        e = g["actual"] - g["p50"].astype(float)
        inside = (g["p10"].astype(float) <= g["actual"]) & (g["actual"] <= g["p90"].astype(float))
        row = got.loc[("STOCKA", int(step))]
        assert row["n"] == len(g)
        assert row["mae"] == pytest.approx(e.abs().mean(), rel=1e-6)
        assert row["coverage"] == pytest.approx(inside.mean())


def test_other_runs_and_malformed_files_are_named_and_skipped(cli, trained_run, out):
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    clean = _score_csv(out, trained_run)
    other = pd.read_csv(folder / "2024-12-24.csv")
    other["run"] = "another-run"
    other.to_csv(folder / "2024-12-10.csv", index=False)
    (folder / "2024-12-11.csv").write_bytes(b"\x00\x01 not a csv \xff\n")
    (folder / "2024-12-12.csv").write_text("ticker,as_of,step\nSTOCKA,2024-12-12,1\n")
    bad = pd.read_csv(folder / "2024-12-24.csv", dtype=str)
    bad.loc[1, "p50"] = "n/a"
    bad.to_csv(folder / "2024-12-13.csv", index=False)
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 3, res.stderr
    for name, why in [
        ("2024-12-10.csv", "another-run"),
        ("2024-12-11.csv", "skipped"),
        ("2024-12-12.csv", "no column date"),
        ("2024-12-13.csv", "line 3"),
    ]:
        assert any(name in ln and why in ln for ln in res.stderr.splitlines()), (name, res.stderr)
    assert "unexpected error" not in res.stderr
    pd.testing.assert_frame_equal(_score_csv(out, trained_run), clean)  # the others, exactly as before


def test_a_file_of_a_million_columns_or_a_link_to_an_endless_one_is_skipped_at_once(cli, trained_run, out):
    """Someone else's forecast folder: a file whose header is a million commas (1 MB) was read
    by pandas as a million columns of every row (11.7 GB and minutes), and one that links to
    /dev/zero was read until memory ran out."""

    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    clean = _score_csv(out, trained_run)
    (folder / "2024-12-10.csv").write_text("," * 1_000_000 + "\n1\n")
    (folder / "2024-12-11.csv").symlink_to("/dev/zero")
    (folder / "2024-12-12.csv").symlink_to(folder / "gone.csv")  # a link to nothing
    with memory_capped():  # a failure, not the machine's memory
        res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 3, res.stderr
    skipped = json.loads(res.stdout)["skipped"]
    assert skipped["2024-12-10.csv"] == (
        "not a readable CSV file (its header has 64001 fields or more, not a forecast file's ten)"
    )
    assert skipped["2024-12-11.csv"] == "not a readable CSV file (not a regular file)"
    assert skipped["2024-12-12.csv"] == "cannot be read (No such file or directory)"
    pd.testing.assert_frame_equal(_score_csv(out, trained_run), clean)  # the others, exactly as before


def test_forecasts_of_a_model_trained_earlier_under_the_same_name_are_kept_apart(
    cli, trained_run, sample_dir, out, tmp_path
):
    """`train --run-dir runs/tiny` again, with an LSTM this time: the forecasts the GRU made
    under that name are named as another model's and skipped, the new model's are scored
    alone (they were scored together, as one model's)."""
    run = tmp_path / "runs" / trained_run.name  # the folder a GRU was trained in, and forecast from
    (tmp_path / "data").mkdir()
    _train_live(sample_dir, tmp_path / "data", run, **{"model.cell": "lstm"})
    folder = out / run.name
    alone = tmp_path / "alone"
    predict(run, as_of="2024-12-30", out=alone, offline=True)
    assert cli("score", "--run", run, "--out", alone, "-q").exit_code == 0
    predict(run, as_of="2024-12-30", out=out, offline=True)
    res = cli("score", "--run", run, "--out", out, "--json")
    assert res.exit_code == 3, res.stderr
    doc = json.loads(res.stdout)
    assert doc["read"] == ["2024-12-30.csv"]
    why = f"written by another model named {run.name} (gru, the run's is lstm; trained again under that name?)"
    assert doc["skipped"] == {f"{d}.csv": why for d in ORIGINS}
    assert f"2024-12-20.csv skipped: {why}" in res.stderr, res.stderr
    assert (folder / "score.csv").read_bytes() == (alone / run.name / "score.csv").read_bytes()


def test_forecasts_made_inside_the_runs_data_are_left_out_of_the_live_scores(cli, trained_run, out):
    """`predict --as-of` days the run was trained and tested on: backfilled, in-sample forecasts,
    named in one warning and not mixed into the live record."""
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    live = (folder / "score.csv").read_bytes()
    for day in ("2024-12-10", "2024-12-18"):
        predict(trained_run, as_of=day, out=out, offline=True)
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    assert (folder / "score.csv").read_bytes() == live
    doc = json.loads(res.stdout)
    said = (
        "4 forecasts made as of 2024-12-10 to 2024-12-18, before the end of the run's data (its last bar "
        f"{TRAINED_TO}), are in-sample"
    )
    assert [w for w in doc["warnings"] if "in-sample" in w] == [doc["warnings"][-1]]
    assert doc["warnings"][-1].startswith(said) and res.stderr.count("in-sample") == 1
    assert doc["read"] == [f"{d}.csv" for d in ORIGINS]
    # with nothing live left, nothing is scored, and the line says why
    only = out / "only"
    predict(trained_run, as_of="2024-12-18", out=only, offline=True)
    res = cli("score", "--run", trained_run, "--out", only)
    assert res.exit_code == 1 and "nothing to score" in res.stderr and "in-sample" in res.stderr, res.stderr
    # a forecast made since that day there is: the line says why it is not scored, not that there is none
    res = cli("score", "--run", trained_run, "--out", only, "--since", "2024-12-01")
    assert res.exit_code == 1 and "in-sample" in res.stderr, res.stderr
    assert "no forecast made on or after" not in res.stderr, res.stderr


def test_score_looks_at_each_forecast_a_few_times_however_many_files_hold_them(trained_run, out, monkeypatch):
    """A daily job's score reads every forecast file of the run, so its work must grow with the
    forecasts, not with their number times the number of files: the files still scored were
    once found by gathering every forecast's file again for each file, which made a score of
    five years of 84 tickers' daily forecasts take minutes. Counted as the values of pandas
    columns walked one by one, over a forecast of every session since the run's data ended."""
    from forecaster.scoring import score

    for day in ("2024-12-19", "2024-12-23", "2024-12-26", "2024-12-30"):  # with ORIGINS: every live session
        predict(trained_run, as_of=day, out=out, offline=True)
    folder = out / trained_run.name
    files = sorted(folder.glob("2024-*.csv"))
    rows = sum(len(pd.read_csv(f)) for f in files)
    walked = [0]
    walk = pd.Series.__iter__

    def counted(series):
        for value in walk(series):
            walked[0] += 1
            yield value

    monkeypatch.setattr(pd.Series, "__iter__", counted)
    report = score(trained_run, out=out)
    assert report.read == [f.name for f in files] and len(files) == 8
    pooled = report.scores[report.scores["ticker"] == "ALL"]
    assert int(pooled["n"].sum() + pooled["pending"].sum()) == rows  # every forecast scored or pending
    assert walked[0] <= 4 * rows, f"{walked[0]} values walked for {rows} forecast rows in {len(files)} files"
    walked[0] = 0  # --since keeps the files of its days the same way
    assert score(trained_run, out=out, since="2024-12-23").read == [f.name for f in files[2:]]
    assert walked[0] <= 4 * rows, f"{walked[0]} values walked for {rows} forecast rows with --since"


def test_in_sample_forecasts_of_tickers_whose_data_end_apart_are_told_in_one_short_line():
    """Each ticker's forecasts are in-sample up to its own last bar in the run; the warning
    gives the range of those bars, not one per ticker (a universe has thousands)."""
    from forecaster.scoring import _live_only

    day = pd.Timestamp
    forecasts = pd.DataFrame(
        {
            "ticker": ["A", "A", "B", "B", "C"],
            "as_of": [day("2024-12-10"), day("2024-12-20"), day("2024-12-10"), day("2024-12-20"), day("2024-12-20")],
            "step": [1] * 5,
        }
    )
    ends = {"A": day("2024-12-19"), "B": day("2024-12-10"), "C": day("2024-12-31")}
    said: list[str] = []
    live = _live_only(forecasts, ends, said)
    assert list(zip(live["ticker"], live["as_of"].dt.strftime("%Y-%m-%d"))) == [
        ("A", "2024-12-20"),
        ("B", "2024-12-10"),  # as of its last bar: live
        ("B", "2024-12-20"),
    ]
    assert len(said) == 1 and said[0].startswith(
        "2 forecasts made as of 2024-12-10 to 2024-12-20, before the end of the run's data "
        "(its tickers' last bars, 2024-12-10 to 2024-12-31), are in-sample"
    )


def test_a_forecast_as_of_the_runs_last_bar_is_live(cli, trained_run, out):
    """`predict` right after `train`: every session it forecasts is after the run's data."""
    predict(trained_run, as_of=TRAINED_TO, out=out, offline=True)
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["read"] == [f"{d}.csv" for d in [TRAINED_TO, *ORIGINS]]
    assert not [w for w in doc["warnings"] if "in-sample" in w]
    pooled = {r["step"]: r["n"] for r in doc["scores"] if r["ticker"] == "ALL"}
    assert pooled == {1: 8, 2: 8, 3: 6}  # two tickers' three steps more than the four origins' 6, 6, 4


def _steps(path: Path, steps: list[int]) -> None:
    """Rewrite the forecast file ``path`` as a model of ``steps`` would have written it: each
    ticker's forecast cut to those steps, or lengthened with a step 4 a session after step 3."""
    df = pd.read_csv(path, dtype=str)
    later = (pd.to_datetime(df["date"]) + pd.offsets.BDay(1)).dt.strftime("%Y-%m-%d")
    extra = df.assign(step="4", date=later)[df["step"] == "3"]
    df = pd.concat([df, extra]).sort_values(["ticker", "step"], kind="stable")
    df[df["step"].astype(int).isin(steps)].to_csv(path, index=False)


@pytest.mark.parametrize("steps", [[1, 2], [1, 2, 3, 4]])
def test_forecasts_of_another_horizon_are_named_as_another_models(cli, trained_run, out, steps):
    """Every forecast of a file having 2 (or 4) steps where the run forecasts 3: a model of
    another horizon trained under the run's name wrote it, not a cut or a bad row."""
    folder = out / trained_run.name
    clean = cli("score", "--run", trained_run, "--out", out, "--since", "2024-12-24", "--json")
    assert clean.exit_code == 0, clean.stderr
    _steps(folder / "2024-12-20.csv", steps)
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 3, res.stderr
    why = f"({len(steps)} steps, the run forecasts 3; trained again under that name?)"
    named = f"written by another model named {trained_run.name} {why}"
    assert json.loads(res.stdout)["skipped"] == {"2024-12-20.csv": named}
    assert json.loads(res.stdout)["scores"] == json.loads(clean.stdout)["scores"]


def test_forecasts_of_another_model_are_kept_apart_when_the_run_is_gone(cli, trained_run, sample_dir, out, tmp_path):
    """With the run deleted, its model is the one its latest forecasts name: a file another
    model wrote under the name is named and skipped."""
    folder = out / trained_run.name
    gone = tmp_path / "runs" / trained_run.name
    args = ["score", "--run", gone, "--out", out, "--source", "csv", "--data-dir", sample_dir, "--json"]
    clean = cli(*args, "--since", "2024-12-24")
    assert clean.exit_code == 0, clean.stderr
    df = pd.read_csv(folder / "2024-12-20.csv", dtype=str)
    df.assign(model="lstm").to_csv(folder / "2024-12-20.csv", index=False)
    res = cli(*args)
    assert res.exit_code == 3, res.stderr
    why = "(lstm, the latest forecasts are gru's; trained again under that name?)"
    named = f"written by another model named {trained_run.name} {why}"
    assert json.loads(res.stdout)["skipped"] == {"2024-12-20.csv": named}
    assert json.loads(res.stdout)["scores"] == json.loads(clean.stdout)["scores"]


@pytest.mark.parametrize("steps", [[1, 2], [1, 2, 3, 4]])
def test_forecasts_of_another_horizon_are_kept_apart_when_the_run_is_gone(
    cli, trained_run, sample_dir, out, tmp_path, steps
):
    """With the run deleted, its horizon is that of its latest forecasts: a file of another
    horizon was scored with them, its extra steps as rows of their own, exit 0."""
    folder = out / trained_run.name
    gone = tmp_path / "runs" / trained_run.name
    args = ["score", "--run", gone, "--out", out, "--source", "csv", "--data-dir", sample_dir, "--json"]
    clean = cli(*args, "--since", "2024-12-24")
    assert clean.exit_code == 0, clean.stderr
    _steps(folder / "2024-12-20.csv", steps)
    res = cli(*args)
    assert res.exit_code == 3, res.stderr
    why = f"({len(steps)} steps, the latest forecasts have 3; trained again under that name?)"
    named = f"written by another model named {trained_run.name} {why}"
    assert json.loads(res.stdout)["skipped"] == {"2024-12-20.csv": named}
    assert json.loads(res.stdout)["scores"] == json.loads(clean.stdout)["scores"]


def _scored_then_edited(cli, trained_run, out) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """The run's forecast folder, its score.csv before any edit, and 2024-12-20.csv's rows as
    text to edit, a copy of that file left as 2024-12-19.csv (the same forecasts, scored once)."""
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    clean = _score_csv(out, trained_run)
    shutil.copy(folder / "2024-12-20.csv", folder / "2024-12-19.csv")
    return folder, clean, pd.read_csv(folder / "2024-12-20.csv", dtype=str)


@pytest.mark.parametrize("col, typo", [("date", "3024-12-23"), ("as_of", "1024-12-20"), ("date", "9999-12-31")])
def test_a_date_with_a_year_out_of_range_is_a_bad_row_not_an_unexpected_error(cli, trained_run, out, col, typo):
    """A forecast file edited by hand with a mistyped year (3024 for 2024): that file is named
    and skipped, the others scored, as for any other bad row."""
    folder, clean, edited = _scored_then_edited(cli, trained_run, out)
    edited.loc[0, col] = typo
    edited.to_csv(folder / "2024-12-20.csv", index=False)
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 3, res.stderr
    assert "2024-12-20.csv skipped: line 2 is not a valid forecast" in res.stderr, res.stderr
    assert "unexpected error" not in res.stderr
    pd.testing.assert_frame_equal(_score_csv(out, trained_run), clean)


@pytest.mark.parametrize("col, typo", [("last_close", "1e-308"), ("last_close", "1e300"), ("p50", "1.2")])
def test_a_median_far_from_its_last_close_is_a_bad_row_not_scaled_to_infinity(cli, trained_run, out, col, typo):
    """A last close edited by hand to 1e-308: score took the data's close over it for a
    re-adjustment of the history, scaled the forecast by 1e310, and wrote inf into score.csv
    (a blank skill). A median more than 100x away from its last close is no forecast: that
    file is named and skipped, the others scored."""
    folder, clean, edited = _scored_then_edited(cli, trained_run, out)
    edited.loc[1, col] = typo
    if col == "p50":
        edited.loc[1, "p10"] = "1.1"
    edited.to_csv(folder / "2024-12-20.csv", index=False)
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 3, res.stderr
    said = "2024-12-20.csv skipped: line 3 is not a valid forecast (p50 is more than 100x away from last_close)"
    assert said in res.stderr, res.stderr
    assert "inf" not in (folder / "score.csv").read_text()
    pd.testing.assert_frame_equal(_score_csv(out, trained_run), clean)


@pytest.mark.parametrize("typo", ["9", "4", "0", "-1"])
def test_a_step_the_run_does_not_forecast_is_a_bad_row(cli, trained_run, out, typo):
    """A forecast file edited by hand (or written by another tool) with a step outside the run's
    horizon of 3 (9, 4, 0): that file is named and skipped with the row, the others scored, as
    for any other bad row; before, step 9 was scored as a step of its own."""
    folder, clean, edited = _scored_then_edited(cli, trained_run, out)
    edited.loc[2, "step"] = typo  # STOCKA's step 3
    edited.to_csv(folder / "2024-12-20.csv", index=False)
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 3, res.stderr
    want = f"line 4 is not a valid forecast (step {typo}; run {trained_run.name} forecasts steps 1 to 3)"
    want = f"2024-12-20.csv skipped: {want}"
    assert want in res.stderr, res.stderr
    pd.testing.assert_frame_equal(_score_csv(out, trained_run), clean)


def _dated_on_its_as_of_day(edited: pd.DataFrame) -> None:
    """STOCKA's one-step forecast dated on its as_of day: a forecast of a session already
    closed when it was made."""
    assert list(edited.loc[0, ["ticker", "as_of", "step"]]) == ["STOCKA", "2024-12-20", "1"]
    edited.loc[0, "date"] = "2024-12-20"


def _month_day_year(edited: pd.DataFrame) -> None:
    """Every date as a spreadsheet may save it, 12/20/2024: a date is read as YYYY-MM-DD only
    (03/04/2025 is March or April by the locale), never guessed."""
    for col in ("as_of", "date"):
        edited[col] = pd.to_datetime(edited[col]).dt.strftime("%m/%d/%Y")


@pytest.mark.parametrize("edit", [_dated_on_its_as_of_day, _month_day_year])
def test_dates_edited_by_hand_into_no_forecast_make_a_bad_row(cli, trained_run, out, edit):
    """A forecast file edited by hand into dates no forecast has: that file is named as not a
    valid forecast and skipped, the others scored, as for any other bad row."""
    folder, clean, edited = _scored_then_edited(cli, trained_run, out)
    edit(edited)
    edited.to_csv(folder / "2024-12-20.csv", index=False)
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 3, res.stderr
    assert json.loads(res.stdout)["skipped"] == {
        "2024-12-20.csv": "line 2 is not a valid forecast (dates, step or prices)"
    }
    pd.testing.assert_frame_equal(_score_csv(out, trained_run), clean)


@pytest.mark.parametrize(
    "edit, valid",
    [
        ({"p10": "p50", "p90": "p50"}, True),  # one price for all three quantiles: a forecast sure of it
        ({"p90": "p10"}, False),  # a median above the p90
        ({"p10": "p90"}, False),  # a p10 above the median
        ({"p90": "inf"}, False),
        ({"last_close": "inf"}, False),
    ],
)
def test_quantiles_in_order_are_a_forecast_and_others_a_bad_row(cli, trained_run, sample_dir, out, edit, valid):
    """STOCKA's one-step forecast as of 2024-12-20 edited by hand: quantiles that meet (p10 =
    p50 = p90) are a forecast, scored with the others; a median outside its interval, or an
    infinite price, is a bad row, its file named and skipped."""
    folder = out / trained_run.name
    shutil.copy(folder / "2024-12-20.csv", folder / "2024-12-19.csv")  # the same forecasts: scored once
    edited = pd.read_csv(folder / "2024-12-20.csv", dtype=str)
    assert list(edited.loc[0, ["ticker", "as_of", "step"]]) == ["STOCKA", "2024-12-20", "1"]
    for col, value in edit.items():
        edited.loc[0, col] = edited.loc[0, value] if value in edited.columns else value
    edited.to_csv(folder / "2024-12-20.csv", index=False)
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    doc = json.loads(res.stdout)
    if not valid:
        assert res.exit_code == 3, res.stderr
        assert doc["skipped"] == {"2024-12-20.csv": "line 2 is not a valid forecast (dates, step or prices)"}
        return
    assert res.exit_code == 0, res.stderr
    assert doc["skipped"] == {} and "2024-12-20.csv" in doc["read"], res.stderr  # its copy in 2024-12-19.csv is older
    got, want = _score_csv(out, trained_run), _expected(folder, sample_dir)
    for col in ("n", "mae", "coverage", "width", "pinball"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-6, err_msg=col)


def test_a_bad_row_in_a_file_of_another_horizon_is_named_as_a_bad_row(cli, trained_run, out):
    """A file whose forecasts have 2 steps where the run forecasts 3, one of its medians
    unreadable: the file is named for its bad row, as any file with one is, not as another
    model's (which a file of whole forecasts of 2 steps is)."""
    folder = out / trained_run.name
    _steps(folder / "2024-12-20.csv", [1, 2])
    edited = pd.read_csv(folder / "2024-12-20.csv", dtype=str)
    assert list(edited.loc[1, ["ticker", "step"]]) == ["STOCKA", "2"]
    edited.loc[1, "p50"] = "n/a"
    edited.to_csv(folder / "2024-12-20.csv", index=False)
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 3, res.stderr
    assert json.loads(res.stdout)["skipped"] == {
        "2024-12-20.csv": "line 3 is not a valid forecast (dates, step or prices)"
    }


@pytest.mark.parametrize("blank", ["\n", "\n\n", "   \n"])
def test_a_bad_row_below_blank_lines_is_named_by_the_line_an_editor_shows(cli, trained_run, out, blank):
    """A forecast file edited by hand, a blank line (or two, or one of spaces) left after its
    second line and a last_close of -1 on its STOCKA step 3 below them: the message names the
    line that row is on, as the messages about a bars CSV file do (it named the row as if the
    blank lines were not there: row 4 for line 5)."""
    folder = out / trained_run.name
    lines = (folder / "2024-12-20.csv").read_text().splitlines(keepends=True)
    fields = lines[3].split(",")
    assert fields[:3] == ["STOCKA", "2024-12-20", "3"]
    fields[4] = "-1"  # last_close
    lines[3] = ",".join(fields)
    lines.insert(2, blank)
    (folder / "2024-12-20.csv").write_text("".join(lines))
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 3, res.stderr
    line = 4 + blank.count("\n")
    assert f"2024-12-20.csv skipped: line {line} is not a valid forecast (dates, step or prices)" in res.stderr


def test_a_step_beyond_the_files_forecasts_is_a_bad_row_when_the_run_is_gone(
    cli, trained_run, sample_dir, out, tmp_path
):
    """With the run directory deleted, the horizon is read from the file: its tickers'
    forecasts have 3 steps, so a step 9 in place of one of them is a bad row."""
    folder = out / trained_run.name
    gone = tmp_path / "runs" / trained_run.name
    args = ["score", "--run", gone, "--out", out, "--source", "csv", "--data-dir", sample_dir]
    assert cli(*args, "-q").exit_code == 0
    clean = _score_csv(out, trained_run)
    shutil.copy(folder / "2024-12-20.csv", folder / "2024-12-19.csv")
    edited = pd.read_csv(folder / "2024-12-20.csv", dtype=str)
    edited.loc[5, "step"] = "9"  # STOCKB's step 3, the file's last row
    edited.to_csv(folder / "2024-12-20.csv", index=False)
    res = cli(*args)
    assert res.exit_code == 3, res.stderr
    want = "2024-12-20.csv skipped: line 7 is not a valid forecast (step 9; the file's forecasts have steps 1 to 3)"
    assert want in res.stderr, res.stderr
    pd.testing.assert_frame_equal(_score_csv(out, trained_run), clean)


def test_a_ticker_spelt_two_ways_in_a_file_is_one_forecast_when_the_run_is_gone(
    cli, trained_run, sample_dir, out, tmp_path
):
    """A ticker is read upper-cased: a file that writes a forecast's first steps as stocka and
    its last as STOCKA holds one forecast of 3 steps, not two short ones. With the run gone the
    horizon is read from the file's longest forecast, so two short ones would make every step
    3 a step too many."""
    folder = out / trained_run.name
    gone = tmp_path / "runs" / trained_run.name
    args = ["score", "--run", gone, "--out", out, "--source", "csv", "--data-dir", sample_dir]
    assert cli(*args, "-q").exit_code == 0
    clean = _score_csv(out, trained_run)
    for day in ORIGINS:
        edited = pd.read_csv(folder / f"{day}.csv", dtype=str)
        for ticker in ("STOCKA", "STOCKB"):
            rows = edited.index[edited["ticker"] == ticker]
            assert edited.loc[rows, "step"].tolist() == ["1", "2", "3"]
            edited.loc[rows[:2], "ticker"] = ticker.lower()
        edited.to_csv(folder / f"{day}.csv", index=False)
    res = cli(*args)
    assert res.exit_code == 0, res.stderr
    pd.testing.assert_frame_equal(_score_csv(out, trained_run), clean)


def test_an_origin_written_two_ways_in_a_file_is_one_forecast_when_the_run_is_gone(
    cli, trained_run, sample_dir, tmp_path
):
    """A date is read as YYYY-MM-DD, which takes 2024-12-5 for 2024-12-05: a file that writes a
    forecast's first steps as of 2024-12-05 and its last as of 2024-12-5 holds one forecast of 3
    steps, as the ticker spelt two ways does. Each spelling was counted as a forecast of its
    own, so with the run gone (the horizon read from the file's longest forecast, 2 steps) every
    step 3 was a step too many and the file was skipped."""
    out = tmp_path / "fc"
    predict(trained_run, as_of="2024-12-05", out=out, offline=True)
    folder = out / trained_run.name
    gone = tmp_path / "runs" / trained_run.name
    args = ["score", "--run", gone, "--out", out, "--source", "csv", "--data-dir", sample_dir]
    assert cli(*args, "-q").exit_code == 0
    clean = _score_csv(out, trained_run)
    edited = pd.read_csv(folder / "2024-12-05.csv", dtype=str)
    for ticker in ("STOCKA", "STOCKB"):
        rows = edited.index[edited["ticker"] == ticker]
        assert edited.loc[rows, "step"].tolist() == ["1", "2", "3"]
        edited.loc[rows[2:], "as_of"] = "2024-12-5"
    edited.to_csv(folder / "2024-12-05.csv", index=False)
    res = cli(*args)
    assert res.exit_code == 0, res.stderr
    pd.testing.assert_frame_equal(_score_csv(out, trained_run), clean)


def test_score_with_corrupt_forecast_files_reports_the_others_and_exits_3(cli, trained_run, out):
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    clean = (folder / "score.csv").read_text()
    text = (folder / "2024-12-31.csv").read_bytes()
    (folder / "2024-12-23.csv").write_bytes(text[: len(text) // 2])  # torn mid-row
    (folder / "2024-12-26.csv").write_bytes(os.urandom(512))
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 3, res.stderr
    assert "2024-12-23.csv skipped" in res.stderr and "2024-12-26.csv skipped" in res.stderr
    assert "unexpected error" not in res.stderr
    assert (folder / "score.csv").read_text() == clean


@pytest.mark.parametrize("cut", ["in p90", "run name 1", "run name 2", "run name 3"])
def test_a_file_cut_short_is_named_as_such_not_as_another_runs(cli, trained_run, out, cut):
    """The last row ends inside its p90, or inside the run's name (1 to 3 of its letters kept,
    which read as another run's name): the file is named as cut short."""
    folder = out / trained_run.name
    text = (folder / "2024-12-31.csv").read_bytes()
    assert text.endswith(b"," + trained_run.name.encode() + b"\n")
    end = len(text) - 20 if cut == "in p90" else len(text) - 1 - len(trained_run.name) + int(cut[-1])
    (folder / "2024-12-23.csv").write_bytes(text[:end])
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 3, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if "2024-12-23.csv skipped" in ln)
    assert "line 7 is incomplete" in line and "written by run" not in line, line


@pytest.mark.parametrize(
    "gone, kept, why",
    [
        (False, 2, "line 2, step 1 of STOCKA's 3"),
        (False, 6, "line 6, step 2 of STOCKB's 3"),
        (True, 6, "line 6, step 2 of STOCKB's 3"),  # STOCKA's forecast in the file has 3 steps
    ],
)
def test_a_file_cut_at_a_line_end_inside_a_tickers_steps_is_named_as_cut_short(
    cli, trained_run, sample_dir, out, tmp_path, gone, kept, why
):
    """A copy that stopped right after a line break, inside a ticker's steps (2 of its 3): the
    file is named as cut short and skipped, as one cut inside a line is, not scored as a partial
    forecast without a word. With the run deleted, the file's other forecasts give the steps."""
    folder = out / trained_run.name
    run = tmp_path / "runs" / trained_run.name if gone else trained_run
    args = ["score", "--run", run, "--out", out] + (["--source", "csv", "--data-dir", sample_dir] if gone else [])
    lines = (folder / "2024-12-31.csv").read_text().splitlines(keepends=True)
    (folder / "2024-12-31.csv").write_text("".join(lines[:kept]))
    res = cli(*args, "--json")
    assert res.exit_code == 3, res.stderr
    assert json.loads(res.stdout)["skipped"] == {"2024-12-31.csv": f"it ends at {why} (the file was cut short?)"}
    assert f"2024-12-31.csv skipped: it ends at {why} (the file was cut short?)" in res.stderr, res.stderr
    # scored as if the file were not there
    (folder / "2024-12-31.csv").unlink()
    assert json.loads(cli(*args, "--json").stdout)["scores"] == json.loads(res.stdout)["scores"]


def _joined(folder: Path, first: str, second: str) -> list[str]:
    """The lines of a file holding ``first``'s forecasts and then ``second``'s, as a file the
    two were joined into by hand (the second header left out)."""
    lines = (folder / f"{first}.csv").read_text().splitlines(keepends=True)
    return lines + (folder / f"{second}.csv").read_text().splitlines(keepends=True)[1:]


def test_a_file_of_two_days_cut_inside_its_last_forecast_is_named_as_cut_short(cli, trained_run, out):
    """A file holding the forecasts as of 2024-12-20 and then those as of 2024-12-24, cut at a
    line end after STOCKB's step 2 of the second: its last forecast lacks a step, so the file is
    named as cut short, though STOCKB's forecast as of 2024-12-20 above it has all 3."""
    folder = out / trained_run.name
    lines = _joined(folder, "2024-12-20", "2024-12-24")
    assert len(lines) == 13 and lines[-2].startswith("STOCKB,2024-12-24,2,")
    (folder / "2024-12-24.csv").write_text("".join(lines[:-1]))
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 3, res.stderr
    why = "it ends at line 12, step 2 of STOCKB's 3 (the file was cut short?)"
    assert json.loads(res.stdout)["skipped"] == {"2024-12-24.csv": why}


def test_rows_without_a_readable_as_of_are_no_forecast_when_the_run_is_gone(
    cli, trained_run, sample_dir, out, tmp_path
):
    """With the run deleted, the steps are those of the file's longest forecast; rows whose
    as_of cannot be read belong to no forecast, however many there are: STOCKB's 6 rows of a
    two-day file with unreadable as_of fields do not make a forecast of 6 steps, so the step 4
    typed over STOCKA's step 3 is still named as beyond the file's 3."""
    folder = out / trained_run.name
    gone = tmp_path / "runs" / trained_run.name
    lines = _joined(folder, "2024-12-20", "2024-12-24")
    assert lines[3].startswith("STOCKA,2024-12-20,3,")
    lines[3] = lines[3].replace("STOCKA,2024-12-20,3,", "STOCKA,2024-12-20,4,")
    lines = [ln.replace(",2024-12-2", ",2024-12-x", 1) if ln.startswith("STOCKB,") else ln for ln in lines]
    (folder / "2024-12-24.csv").write_text("".join(lines))
    args = ["score", "--run", gone, "--out", out, "--source", "csv", "--data-dir", sample_dir, "--json"]
    res = cli(*args)
    assert res.exit_code == 3, res.stderr
    why = "line 4 is not a valid forecast (step 4; the file's forecasts have steps 1 to 3)"
    assert json.loads(res.stdout)["skipped"] == {"2024-12-24.csv": why}


@pytest.mark.parametrize(
    "rows, why",
    [
        ("every", "some rows have more fields than the header"),  # a spreadsheet's trailing commas
        ("fourth", "line 5 has more fields than the header (11 of 10)"),  # a value pasted into one row
    ],
)
def test_a_file_with_rows_longer_than_its_header_is_named_as_such(cli, trained_run, out, rows, why):
    """A forecast file edited by hand whose rows have a field more than its header: named for
    that, not as cut short, nor with the CSV parser's own words."""
    folder = out / trained_run.name
    lines = (folder / "2024-12-31.csv").read_text().splitlines(keepends=True)
    edit = range(1, len(lines)) if rows == "every" else [4]
    for i in edit:
        lines[i] = lines[i].rstrip("\n") + ",x\n"
    (folder / "2024-12-23.csv").write_text("".join(lines))
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 3, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if "2024-12-23.csv skipped" in ln)
    assert line.endswith(f"2024-12-23.csv skipped: {why}"), line


def test_two_forecast_files_joined_into_one_are_named_as_such_not_as_another_runs(cli, trained_run, out):
    """`cat 2024-12-20.csv 2024-12-24.csv > 2024-12-23.csv`: the second header is a row whose
    run column reads "run"; the file is named for the repeated header, not as run 'run''s."""
    folder = out / trained_run.name
    joined = (folder / "2024-12-20.csv").read_bytes() + (folder / "2024-12-24.csv").read_bytes()
    (folder / "2024-12-23.csv").write_bytes(joined)
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 3, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if "2024-12-23.csv skipped" in ln)
    assert line.endswith("skipped: line 8 repeats the header line (two files joined into one?)"), line


@pytest.mark.parametrize("kept", [10, 30, 52])
def test_a_file_cut_inside_its_header_is_named_as_cut_short(cli, trained_run, out, kept):
    folder = out / trained_run.name
    (folder / "2024-12-23.csv").write_bytes((folder / "2024-12-31.csv").read_bytes()[:kept])
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 3, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if "2024-12-23.csv skipped" in ln)
    assert "cut short" in line and "not a forecast file" not in line, line


def test_a_whole_last_row_without_a_line_break_is_scored(cli, trained_run, out):
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    before = (folder / "score.csv").read_bytes()
    path = folder / "2024-12-31.csv"
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # saved by an editor that drops the last line break
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    assert (folder / "score.csv").read_bytes() == before


@pytest.mark.parametrize("tail", [",,,,,,\n", ",,,,,,,,,\n\n\n", ",,,,,,,,,", '"","",,,,,,,,\n,,,\n'])
def test_trailing_rows_of_empty_fields_are_ignored_not_taken_for_a_cut(cli, trained_run, out, tail):
    """A forecast file saved by a spreadsheet with an empty last row (`,,,,,,`), blank lines
    after it: the file is scored as it was, and the score is the same."""
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    before = (folder / "score.csv").read_bytes()
    with open(folder / "2024-12-24.csv", "a", encoding="utf-8") as fh:
        fh.write(tail)
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["skipped"] == {} and doc["read"] == [f"{d}.csv" for d in ORIGINS], res.stderr
    assert (folder / "score.csv").read_bytes() == before


@pytest.mark.parametrize("empty", [",,,,,,,,,\n", ",,,,,,\n", ',,,,,,,,,\n\n"","",,,\n'])
def test_rows_of_empty_fields_between_the_forecasts_are_ignored_not_taken_for_a_cut(cli, trained_run, out, empty):
    """A forecast file saved by a spreadsheet with an empty row between two of its forecasts
    (`,,,,,,`): it holds no forecast and nothing was cut, so the file is scored as it was, as
    with a blank line there (it was skipped: 'row 4 is incomplete (the file was cut short?)')."""
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    before = (folder / "score.csv").read_bytes()
    lines = (folder / "2024-12-24.csv").read_text().splitlines(keepends=True)
    lines.insert(4, empty)  # between STOCKA's forecast and STOCKB's
    lines.insert(2, empty)  # inside STOCKA's
    (folder / "2024-12-24.csv").write_text("".join(lines))
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["skipped"] == {} and doc["read"] == [f"{d}.csv" for d in ORIGINS], res.stderr
    assert (folder / "score.csv").read_bytes() == before


def test_a_bad_row_below_rows_of_empty_fields_is_named_by_its_line(cli, trained_run, out):
    folder = out / trained_run.name
    lines = (folder / "2024-12-20.csv").read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace(",gru,", ",,")  # STOCKB's step 2 without its model
    lines[2:2] = [",,,,,,,,,\n", "\n", ",,,\n"]
    (folder / "2024-12-20.csv").write_text("".join(lines))
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 3, res.stderr
    assert "2024-12-20.csv skipped: line 9 is incomplete: no model" in res.stderr, res.stderr
    assert "cut short" not in res.stderr  # rows follow it: nothing was cut


def test_a_forecast_for_a_session_missing_from_the_data_is_named(cli, trained_run, out):
    folder = out / trained_run.name
    df = pd.read_csv(folder / "2024-12-20.csv", dtype=str)
    df.loc[(df["ticker"] == "STOCKA") & (df["step"] == "3"), "date"] = "2024-12-25"  # Christmas: no bar
    df.to_csv(folder / "2024-12-20.csv", index=False)
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 0, res.stderr
    assert "STOCKA" in res.stderr and "2024-12-25" in res.stderr
    got = _score_csv(out, trained_run).set_index(["ticker", "step"])
    assert got.loc[("STOCKA", 3), "n"] == 1 and got.loc[("STOCKA", 3), "pending"] == 2  # neither


def test_since_scores_only_later_forecasts(cli, trained_run, out):
    res = cli("score", "--run", trained_run, "--out", out, "--since", "2024-12-24", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    got = pd.DataFrame(doc["scores"]).set_index(["ticker", "step"])
    assert list(got.loc["ALL", "n"]) == [4, 4, 2] and list(got.loc["ALL", "pending"]) == [2, 2, 4]
    assert doc["read"] == [f"{d}.csv" for d in ORIGINS[1:]]  # the files scored, not the earlier one
    assert cli("score", "--run", trained_run, "--out", out, "--since", "24.12.2024").exit_code == 1


def test_since_does_not_read_the_files_of_earlier_days(cli, trained_run, out):
    """`score --since` judging a recent stretch from cron: a torn file of a day before it holds
    none of the forecasts asked for, so it neither makes the job exit 3 nor is named; a torn
    file of a day on or after it still is."""
    folder = out / trained_run.name
    text = (folder / "2024-12-20.csv").read_bytes()
    (folder / "2024-12-19.csv").write_bytes(text[: len(text) // 2])
    res = cli("score", "--run", trained_run, "--out", out, "--since", "2024-12-24", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["skipped"] == {} and "2024-12-19" not in res.stderr
    assert doc["read"] == [f"{d}.csv" for d in ORIGINS[1:]]
    (folder / "2024-12-26.csv").write_bytes(text[: len(text) // 2])
    res = cli("score", "--run", trained_run, "--out", out, "--since", "2024-12-24", "--json")
    assert res.exit_code == 3, res.stderr
    assert list(json.loads(res.stdout)["skipped"]) == ["2024-12-26.csv"]
    res = cli("score", "--run", trained_run, "--out", out)  # every day: both named
    assert res.exit_code == 3 and "2024-12-19.csv skipped" in res.stderr and "2024-12-26.csv skipped" in res.stderr


def test_score_json(cli, trained_run, out):
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) == {"run", "read", "skipped", "failed", "warnings", "alerts", "files", "scores"}
    assert doc["run"] == trained_run.name and doc["read"] == [f"{d}.csv" for d in ORIGINS]
    assert doc["skipped"] == {} and doc["alerts"] == []
    assert [r["ticker"] for r in doc["scores"]] == ["STOCKA"] * 3 + ["STOCKB"] * 3 + ["ALL"] * 3


def test_score_json_warnings_hold_those_of_the_bars_read(cli, trained_run, out, sample_dir, tmp_path):
    """A warning about the bars score reads (here a gap of two months in STOCKB's) is in
    --json's ``warnings`` as the others are, and said once on stderr."""
    data = tmp_path / "holed"
    shutil.copytree(json.loads((trained_run / "run.json").read_text())["config"]["data"]["data_dir"], data)
    lines = (data / "STOCKB.csv").read_text().splitlines(keepends=True)
    kept = [ln for ln in lines[1:] if not "2024-06-01" <= ln[:10] <= "2024-07-31"]
    (data / "STOCKB.csv").write_text(lines[0] + "".join(kept))
    res = cli("score", "--run", trained_run, "--out", out, "--data-dir", data, "--json")
    assert res.exit_code == 0, res.stderr
    warned = [w for w in json.loads(res.stdout)["warnings"] if "gap(s)" in w]
    assert len(warned) == 1 and warned[0].startswith("STOCKB: 1 gap(s) of more than 14 days"), res.stdout
    assert res.stderr.count("gap(s)") == 1 and warned[0] in res.stderr


def test_score_json_keys_are_documented_in_the_readme(cli, trained_run, out):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Live scoring", 1)[1].split("\n## ", 1)[0]
    doc = json.loads(cli("score", "--run", trained_run, "--out", out, "--json").stdout)
    assert not [k for k in sorted(doc) if f"`{k}`" not in section]


def test_forecasts_of_a_deleted_run_are_scored_with_the_source_named(cli, trained_run, sample_dir, out, tmp_path):
    """`retrain --keep` deletes old run directories; their forecasts stay in OUT/<run>/ and
    can still be scored when the source is given (the run that named it is gone)."""
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    folder = out / trained_run.name
    scored = (folder / "score.csv").read_bytes()
    (folder / "score.csv").unlink()
    gone = tmp_path / "runs" / trained_run.name
    shutil.copytree(trained_run, gone)
    shutil.rmtree(gone)
    res = cli("score", "--run", gone, "--out", out, "--source", "csv", "--data-dir", sample_dir, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["run"] == trained_run.name and doc["read"] == [f"{d}.csv" for d in ORIGINS]
    assert (folder / "score.csv").read_bytes() == scored
    # the source is the run's to say: without --source the user is told to name it
    res = cli("score", "--run", gone, "--out", out)
    assert res.exit_code == 1
    assert f"no run directory at {gone}" in res.stderr and "--source" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    # a name with no forecasts either (a typo) says both
    typo = tmp_path / "runs" / "tinyy"
    res = cli("score", "--run", typo, "--out", out, "--source", "csv", "--data-dir", sample_dir)
    assert res.exit_code == 1
    assert f"no run directory at {typo}" in res.stderr and "no forecast files" in res.stderr, res.stderr


def test_alerts_for_cron_exit_1_with_one_line(cli, trained_run, out):
    ok = cli("score", "--run", trained_run, "--out", out, "-q", "--fail-if-coverage-outside", "0,1")
    assert ok.exit_code == 0, ok.stderr
    res = cli("score", "--run", trained_run, "--out", out, "-q", "--fail-if-coverage-outside", "0.99,1")
    assert res.exit_code == 1
    lines = [ln for ln in res.stderr.splitlines() if "coverage" in ln]
    assert len(lines) == 1 and "h=1" in lines[0], res.stderr
    assert (out / trained_run.name / "score.csv").is_file()  # the report is written all the same
    # six forecasts per step cannot show significant skill
    res = cli("score", "--run", trained_run, "--out", out, "-q", "--fail-if-no-skill")
    assert res.exit_code == 1 and "no skill" in res.stderr
    # a step whose median the gate shut says so, as evaluate's verdict does, not "skill +0.00%"
    gate = json.loads((trained_run / "run.json").read_text())["median_weight"]
    assert 0.0 in gate, gate
    for step, w in enumerate(gate, 1):
        said = f"h={step}: the median is the last close (the network's did not beat it on validation)"
        assert (said in res.stderr) == (w == 0), res.stderr
    assert cli("score", "--run", trained_run, "--out", out, "--fail-if-coverage-outside", "0.9,0.8").exit_code == 2


@pytest.mark.parametrize("bounds", ["0.8,0.8", "0.9,0.8", "-0.1,0.9", "0.7,1.1", "0.8", "a,b"])
def test_coverage_bounds_that_are_no_interval_of_fractions_are_a_usage_error(cli, trained_run, out, bounds):
    """LO must lie below HI (0.8,0.8 is no interval), both between 0 and 1: otherwise a usage
    error (exit 2) naming the value given, before any score is written."""
    res = cli("score", "--run", trained_run, "--out", out, "--fail-if-coverage-outside", bounds)
    assert res.exit_code == 2, res.stderr
    assert repr(bounds) in res.stderr and res.stdout == ""
    assert not (out / trained_run.name / "score.csv").exists()


def test_an_alert_wins_over_skipped_files_as_the_readme_says(cli, trained_run, out):
    """A malformed file alone is exit 3; with an alert firing too, exit 1, both named."""
    (out / trained_run.name / "2025-10-02.csv").write_text("garbage,,\n")
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 3, res.stderr
    res = cli("score", "--run", trained_run, "--out", out, "--json", "--fail-if-coverage-outside", "0.99,1")
    assert res.exit_code == 1, res.stderr
    doc = json.loads(res.stdout)
    assert "2025-10-02.csv" in doc["skipped"] and doc["alerts"]


def test_a_step_whose_forecasts_are_all_pending_does_not_fire_the_skill_alert(cli, trained_run, out):
    """Every step with a scored forecast beats naive significantly and step 3's forecasts all
    wait for their sessions (n 0): --fail-if-no-skill has nothing against the model, so it does
    not fire; once step 3 has forecasts that are not significantly better, it does. Forecasts
    all still pending (the latest file alone): nothing is judged, exit 0."""
    nan = float("nan")
    scores = pd.DataFrame(
        {
            "ticker": ["ALL"] * 3,
            "step": [1, 2, 3],
            "n": [250, 248, 0],
            "pending": [0, 2, 250],
            "skill": [0.1, 0.08, nan],
            "dm_pvalue": [0.001, 0.002, nan],
        }
    )
    rep = ScoreReport(run="r", model="lstm", folder=Path("f"), scores=scores)
    assert rep.skill_alert(0.05) is None
    rep.scores = scores.assign(n=[250, 248, 240], skill=[0.1, 0.08, 0.01], dm_pvalue=[0.001, 0.002, 0.3])
    said = rep.skill_alert(0.05)
    assert said is not None and "h=3: not significantly better than naive" in said and "h=1" not in said, said
    res = cli("score", "--run", trained_run, "--out", out, "--since", "2024-12-31", "--json", "--fail-if-no-skill")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["alerts"] == [] and "no skill" not in res.stderr, res.stderr
    assert all(r["n"] == 0 for r in doc["scores"]) and all(r["pending"] > 0 for r in doc["scores"])


def _alert_report(rows: list[tuple[str, int, int, bool]]) -> ScoreReport:
    """A report of forecasts (ticker, origin number, step, inside its interval?): the actual
    is 100, the interval [99, 101] or [101, 102]; its pooled rows as score computes them."""
    f = pd.DataFrame(rows, columns=["ticker", "at", "step", "inside"])  # at: the origin's bar
    f = f.assign(actual=100.0, p10=np.where(f["inside"], 99.0, 101.0), p90=np.where(f["inside"], 101.0, 102.0))
    pooled = f.groupby("step")["inside"].agg(["size", "mean"]).reset_index()
    scores = pd.DataFrame({"ticker": "ALL", "step": pooled["step"], "n": pooled["size"], "coverage": pooled["mean"]})
    return ScoreReport(run="r", model="lstm", folder=Path("f"), scores=scores, forecasts=f)


def test_coverage_alert_shows_the_bounds_as_given_and_a_coverage_that_reads_outside_them():
    """A bound of 0.705 is 70.5% in the line (not a rounded 70% or 71%), and a coverage just
    under it gets the decimals that show it under (70.49%, not 70.5%)."""
    rep = _alert_report([("A", i, 1, i < 7049) for i in range(10000)])
    p = coverage_pvalue(7049, 10000, 0.705)  # 70.49 % inside: chance, at any usual level
    assert 0.4 < p < 0.6 and rep.coverage_alert(0.705, 0.9) is None
    assert rep.coverage_alert(0.705, 0.9, alpha=0.6) == (
        f"interval coverage outside 70.5%-90% in live forecasts: h=1 70.49% (n=10000, p={p:.2g})"
    )
    # two steps ahead every other forecast is tested: 800 of the 1,000 whose origins are 2 apart
    rep = _alert_report([("A", i, 2, i % 10 < 8) for i in range(2000)])
    p = coverage_pvalue(800, 1000, 0.75)
    assert p < 0.05 and rep.coverage_alert(0.7, 0.75) == (
        f"interval coverage outside 70%-75% in live forecasts: h=2 80.0% (n=2000, p={p:.2g} over the 1000 that do "
        "not overlap)"
    )
    rep = _alert_report([("A", i, 1, True) for i in range(200)] + [("B", i, 1, False) for i in range(60)])
    rep.scores = pd.concat([rep.scores, pd.DataFrame({"ticker": ["B"], "step": [1], "n": [60], "coverage": [0.0]})])
    assert rep.coverage_alert(0.7, 0.9) is None  # the one ticker's row is not the pooled figure (76.9 %)


def test_the_coverage_alert_counts_an_actual_on_a_bound_as_inside_as_the_coverage_does():
    """Twenty one-step forecasts: 4 with the actual strictly inside the interval, 8 with it
    exactly on p10 or p90, 8 outside. The coverage counts those on a bound as inside (60 %),
    and so does the alert's test: 12 of 20 against 70 % is chance (p 0.23), no alert; counted
    outside, 4 of 20 would have fired."""
    from forecaster.metrics import coverage

    lo = [99.0] * 4 + [100.0] * 4 + [99.0] * 4 + [101.0] * 8
    hi = [101.0] * 4 + [101.0] * 4 + [100.0] * 4 + [102.0] * 8
    f = pd.DataFrame({"ticker": "A", "at": range(20), "step": 1, "actual": 100.0, "p10": lo, "p90": hi})
    share = coverage(f["actual"], f["p10"], f["p90"])
    assert share == pytest.approx(0.6)
    scores = pd.DataFrame({"ticker": ["ALL"], "step": [1], "n": [20], "coverage": [share]})
    rep = ScoreReport(run="r", model="lstm", folder=Path("f"), scores=scores, forecasts=f)
    p = coverage_pvalue(12, 20, 0.7)
    assert 0.2 < p < 0.3 and rep.coverage_alert(0.7, 0.9) is None
    assert rep.coverage_alert(0.7, 0.9, alpha=0.5) == (
        f"interval coverage outside 70%-90% in live forecasts: h=1 60.0% (n=20, p={p:.2g})"
    )


def test_coverage_pvalue_is_the_exact_binomial_tail_beyond_the_bound():
    """Two forecasts both outside (0 of 2 inside) against a coverage of 70 %: 0.3 ** 2 = 9 %,
    no alert at 5 %; 0 of 3: 2.7 %, an alert. Above the upper bound, the upper tail."""
    assert coverage_pvalue(0, 2, 0.7) == pytest.approx(0.09, rel=1e-12)
    assert coverage_pvalue(0, 3, 0.7) == pytest.approx(0.027, rel=1e-12)
    assert coverage_pvalue(2, 2, 0.9) == pytest.approx(0.81, rel=1e-12)
    assert coverage_pvalue(10, 10, 0.7) == pytest.approx(0.7**10, rel=1e-12)
    assert coverage_pvalue(9, 10, 0.7, below=True) == pytest.approx(1 - 0.7**10, rel=1e-12)
    assert coverage_pvalue(0, 0, 0.7) == 1.0
    n, k = 40, 22
    lower = sum(math.comb(n, i) * 0.7**i * 0.3 ** (n - i) for i in range(k + 1))
    assert coverage_pvalue(k, n, 0.7) == pytest.approx(lower, rel=1e-10)
    rep = _alert_report([("A", i, 1, False) for i in range(2)] + [("A", i, 3, False) for i in range(3)])
    assert rep.coverage_alert(0.7, 0.9) is None  # three overlapping 3-step misses: one that does not overlap, p 0.3
    rep = _alert_report([("A", i, 1, False) for i in range(3)])
    said = rep.coverage_alert(0.7, 0.9)
    assert said == "interval coverage outside 70%-90% in live forecasts: h=1 0.0% (n=3, p=0.027)"


def test_the_coverage_alert_tests_the_side_it_names_and_keeps_forecasts_that_do_not_overlap():
    """Above the upper bound over all forecasts while the ones that do not overlap are below it:
    the lower tail was read (p 0.0067, an alert of coverage too high). Weekly 5-step forecasts
    share no session: every one is tested, not every fifth."""
    rows = [("A", i, 5, not (i % 5 == 0 and i < 20)) for i in range(25)]  # 84 % inside; the kept: 1 of 5
    assert _alert_report(rows).coverage_alert(0.6, 0.8) is None
    weekly = [("A", 5 * i, 5, i % 2 == 1) for i in range(30)]  # 50 % inside, none overlapping
    p = coverage_pvalue(15, 30, 0.7)
    assert p < 0.05 and _alert_report(weekly).coverage_alert(0.7, 0.9) == (
        f"interval coverage outside 70%-90% in live forecasts: h=5 50.0% (n=30, p={p:.2g})"
    )
    # a missed day: origins 0, 1, 2, 7, 8 at step 2 keep 0, 2, 7 (1 and 8 share sessions with those)
    rep = _alert_report([("A", at, 2, False) for at in (0, 1, 2, 7, 8)])
    assert rep.coverage_alert(0.7, 0.9).endswith("(n=5, p=0.027 over the 3 that do not overlap)")


def test_overlapping_forecasts_of_a_right_interval_seldom_alert():
    """A random walk forecast with its true 10 % and 90 % quantiles, one ticker, five steps
    ahead, scored after 20 sessions: consecutive 5-step forecasts share 4 of their 5 returns,
    so their misses come in runs. Counted as independent forecasts, 8.2 % of 2,000 such months
    alerted (20.7 % of 300 when scored on each of the 20 days, as cron does); read every h-th,
    1.7 % (5.0 %)."""
    rng = np.random.default_rng(7)
    z = 1.2815515655446004  # the normal's 90 % quantile
    fired, months = 0, 400
    for _ in range(months):
        walk = np.concatenate([[0.0], np.cumsum(rng.standard_normal(25))])
        rows = []
        for origin in range(20):
            for h in range(1, 6):
                if origin + h <= 20:  # its session has closed
                    move = walk[origin + h] - walk[origin]
                    rows.append(("A", origin, h, abs(move) <= z * math.sqrt(h)))
        fired += _alert_report(rows).coverage_alert(0.7, 0.9) is not None
    assert fired / months < 0.04, fired


def test_forecasts_waiting_on_a_feed_that_stopped_are_named(cli, trained_run, out):
    """Forecasts for sessions long closed, still pending because the data end on 2024-12-31:
    score names each such ticker (its data are not refreshed), where it used to say nothing
    and exit 0 for ever; within predict's staleness allowance (3 sessions) nothing is said."""
    from forecaster.scoring import score

    assert not [w for w in score(trained_run, out=out).warnings if "not being refreshed" in w]
    late = score(trained_run, out=out, now=pd.Timestamp("2025-01-06 22:00", tz="UTC")).warnings  # 3 sessions on
    assert not [w for w in late if "not being refreshed" in w]
    later = score(trained_run, out=out, now=pd.Timestamp("2025-01-07 22:00", tz="UTC")).warnings  # 4
    assert len([w for w in later if "4 sessions before the latest completed one (2025-01-07)" in w]) == 2, later
    rep = score(trained_run, out=out, now=pd.Timestamp("2025-03-03 22:00", tz="UTC"))
    said = [w for w in rep.warnings if "not being refreshed" in w]
    assert [w.split(":")[0] for w in said] == ["STOCKA", "STOCKB"], rep.warnings
    assert "its bars end 2024-12-31, 40 sessions before the latest completed one (2025-03-03)" in said[0]
    pending = pd.read_csv(out / trained_run.name / "score.csv").query("ticker == 'STOCKA'")["pending"].sum()
    assert f"STOCKA: {pending} forecasts for sessions that have closed (2025-01-02 to " in said[0]
    assert rep.exit_code == 0  # nothing skipped: the forecasts wait, they are not lost
    res = cli("score", "--run", trained_run, "--out", out, "-q")  # this module's clock: the evening of 2024-12-31
    assert res.exit_code == 0 and "not being refreshed" not in res.stderr


def test_score_goes_on_when_the_runs_calendar_has_no_data_for_today(cli, trained_run, out, monkeypatch):
    """The check above reads the calendar: one whose data end before today (exchange_calendars
    4.13 ends Shanghai's on 2026-12-31) made every score fail, where it never read one before."""
    from forecaster import scoring
    from forecaster.errors import ConfigError

    def ended(now, calendar):
        raise ConfigError(f"exchange calendar {calendar!r} only has sessions up to 2026-12-31")

    monkeypatch.setattr(scoring, "last_completed_session", ended)
    res = cli("score", "--run", trained_run, "--out", out, "-q")
    assert res.exit_code == 0 and res.stderr == "", res.stderr


def test_score_without_forecast_files_is_an_error(cli, trained_run, tmp_path):
    res = cli("score", "--run", trained_run, "--out", tmp_path / "nothing")
    assert res.exit_code == 1 and "no forecast files" in res.stderr


def test_score_where_the_runs_forecast_folder_is_a_file_says_so(cli, trained_run, tmp_path):
    """Not "no forecast files (predict writes them there)": predict could not write there either."""
    (tmp_path / "fc").mkdir()
    (tmp_path / "fc" / trained_run.name).write_text("not a folder\n")
    res = cli("score", "--run", trained_run, "--out", tmp_path / "fc")
    assert res.exit_code == 1, res.stderr
    assert f"{tmp_path / 'fc' / trained_run.name} is a file, not a folder" in res.stderr
    assert "no forecast files" not in res.stderr


@pytest.mark.parametrize(
    ("content", "why"), [(b"", "it is empty (0 bytes)"), (b"\n\n", "it holds only blank lines, no header")]
)
def test_an_empty_forecast_file_is_named_as_empty(cli, trained_run, out, content, why):
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    clean = (folder / "score.csv").read_text()
    (folder / "2024-12-23.csv").write_bytes(content)  # a write that never happened (a full disk)
    res = cli("score", "--run", trained_run, "--out", out, "-q")
    assert res.exit_code == 3, res.stderr
    [line] = [ln for ln in res.stderr.splitlines() if "2024-12-23.csv" in ln]
    assert line.endswith(f"2024-12-23.csv skipped: {why}"), line
    assert "No columns to parse" not in res.stderr and "not a readable CSV" not in res.stderr
    assert (folder / "score.csv").read_text() == clean


def test_no_actuals_for_any_ticker_is_an_error_and_keeps_the_earlier_score(cli, trained_run, out, tmp_path):
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    before = (folder / "score.csv").read_bytes()
    (tmp_path / "empty").mkdir()
    res = cli("score", "--run", trained_run, "--out", out, "--data-dir", tmp_path / "empty", "--json")
    assert res.exit_code == 1, res.stderr
    assert "STOCKA" in res.stderr and "STOCKB" in res.stderr and "nothing" in res.stderr
    assert "STOCKA: no actuals: no CSV file at " in res.stderr, res.stderr  # the ticker named once
    assert (folder / "score.csv").read_bytes() == before


def test_a_ticker_without_actuals_is_named_once_and_the_others_scored(cli, trained_run, sample_dir, out, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sample_dir / "STOCKB.csv", data / "STOCKB.csv")
    res = cli("score", "--run", trained_run, "--out", out, "--data-dir", data, "--json")
    assert res.exit_code == 3, res.stderr
    missing = data / "STOCKA.csv"
    assert json.loads(res.stdout)["failed"] == {"STOCKA": f"no actuals: no CSV file at {missing}"}
    assert f"ERROR: STOCKA failed: no actuals: no CSV file at {missing}" in res.stderr


def test_a_ticker_with_bars_dated_after_today_fails_and_its_pending_forecasts_are_not_called_missing(
    cli, trained_run, sample_dir, out, tmp_path
):
    """A bar with a typo'd year (2204 for 2024) after the last real one: the ticker fails, named
    with that bar, as in predict; its forecasts for sessions still to come are not reported as
    forecasts for sessions the data lacks."""
    data = _copy_data(sample_dir, tmp_path / "data")
    with open(data / "STOCKA.csv", "a", encoding="utf-8") as fh:
        fh.write("2204-12-31,652.0,657.0,639.0,652.0,849064\n")
    res = cli("score", "--run", trained_run, "--out", out, "--data-dir", data, "--json")
    assert res.exit_code == 3, res.stderr
    doc = json.loads(res.stdout)
    assert doc["failed"] == {
        "STOCKA": "no actuals: 1 bar(s) dated after today, from 2204-12-31 to 2204-12-31; fix the data"
    }
    assert doc["warnings"] == [] and "does not have" not in res.stderr, res.stderr
    assert {r["ticker"] for r in doc["scores"]} == {"STOCKB", "ALL"}


def test_every_forecast_file_skipped_is_an_error_and_keeps_the_earlier_score(cli, trained_run, out):
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    before = (folder / "score.csv").read_bytes()
    for day in ORIGINS:
        other = pd.read_csv(folder / f"{day}.csv")
        other["run"] = "another-run"
        other.to_csv(folder / f"{day}.csv", index=False)
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 1, res.stderr
    assert all(f"{day}.csv" in res.stderr for day in ORIGINS) and "another-run" in res.stderr
    assert (folder / "score.csv").read_bytes() == before


def test_since_after_every_forecast_is_an_error_and_keeps_the_earlier_score(cli, trained_run, out):
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    before = (folder / "score.csv").read_bytes()
    res = cli("score", "--run", trained_run, "--out", out, "--since", "2025-06-30")
    assert res.exit_code == 1, res.stdout
    assert "nothing to score" in res.stderr and "no forecast made on or after 2025-06-30" in res.stderr
    assert (folder / "score.csv").read_bytes() == before


def test_since_in_the_future_is_refused_as_such_and_keeps_the_earlier_score(cli, trained_run, out):
    folder = out / trained_run.name
    assert cli("score", "--run", trained_run, "--out", out, "-q").exit_code == 0
    before = (folder / "score.csv").read_bytes()
    ahead = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=3)).strftime("%Y-%m-%d")
    res = cli("score", "--run", trained_run, "--out", out, "--since", ahead)
    assert res.exit_code == 1, res.stdout
    assert res.stderr.strip().startswith(f"ERROR: --since {ahead} is in the future: give "), res.stderr
    assert (folder / "score.csv").read_bytes() == before
    today = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")  # not the future: nothing made since, said so
    res = cli("score", "--run", trained_run, "--out", out, "--since", today)
    assert res.exit_code == 1 and f"no forecast made on or after {today}" in res.stderr, res.stderr


def _on_a_terminal(args, columns: int) -> tuple[int, str]:
    """Run the installed command with its stdout on a terminal ``columns`` wide; its exit code
    and what the terminal showed, without the style codes."""
    code, shown = on_a_terminal(args, cli_env(COLUMNS=str(columns)), timeout=60)
    return code, re.sub(r"\x1b\[[0-9;]*m", "", shown.decode())


def test_the_table_on_an_80_column_terminal_shows_every_figure_whole(trained_run, out):
    code, shown = _on_a_terminal(["score", "--run", trained_run, "--out", out], 80)
    assert code == 0, shown
    assert "…" not in shown
    scores = pd.read_csv(out / trained_run.name / "score.csv")
    rows = {}
    for ln in shown.splitlines():  # on a terminal: rich's box lines
        cells = [c.strip() for c in ln.split("│")[1:-1]]
        if len(cells) == 11:
            rows[(cells[0], cells[1])] = cells
    for r in scores.itertuples(index=False):
        cells = rows[(r.ticker, str(r.step))]
        assert [cells[4], cells[6], cells[10]] == [f"{r.mae:.4g}", f"{r.skill:+.2%}", f"{r.pinball:.4g}"], cells


def test_predict_and_score_with_stdout_or_stderr_closed_still_exit_0(trained_run, out):
    """A job started with `>&-` or `2>&-`: what would have been printed is dropped; the files are
    written and the exit code says so."""
    folder = out / trained_run.name
    (folder / "2024-12-31.csv").unlink()
    predict = ["predict", "--run", trained_run, "--out", out, "--as-of", "2024-12-31", "--json"]
    score = ["score", "--run", trained_run, "--out", out]
    for closed, args in ((">&-", predict), ("2>&-", score), (">&- 2>&-", score)):
        proc = subprocess.run(
            ["bash", "-c", f'"$0" "$@" {closed}', FORECASTER, *map(str, args)],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=120,
        )
        assert proc.returncode == 0, (closed, args[0], proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "unexpected error" not in proc.stderr
    assert (folder / "2024-12-31.csv").is_file()
    assert pd.read_csv(folder / "score.csv")["n"].sum() > 0


def test_the_table_title_counts_the_forecast_files_in_words_that_agree(cli, trained_run, out):
    res = cli("score", "--run", trained_run, "--out", out, "--since", "2024-12-31")
    assert res.exit_code == 0, res.stderr
    assert f"live scores of run {trained_run.name} (1 forecast file);" in res.stdout, res.stdout
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 0, res.stderr
    assert f"live scores of run {trained_run.name} (4 forecast files);" in res.stdout, res.stdout


def test_the_table_shows_coverage_as_a_percentage_and_the_files_keep_the_fraction(cli, trained_run, out):
    """As evaluate's table does (80.0%), where score.csv and --json keep the share (0.8)."""
    res = cli("score", "--run", trained_run, "--out", out)
    assert res.exit_code == 0, res.stderr
    scores = _score_csv(out, trained_run)
    rows = {}
    for ln in res.stdout.splitlines():
        cells = [c.strip() for c in ln.split("|")[1:-1]]
        if len(cells) == 11:
            rows[(cells[0], cells[1])] = cells
    shown = [rows[(r.ticker, str(r.step))][8] for r in scores.itertuples(index=False)]
    assert shown == ["" if r.n == 0 else f"{r.coverage:.1%}" for r in scores.itertuples(index=False)]
    assert all(0 <= c <= 1 for c in scores["coverage"].dropna())
    doc = json.loads(cli("score", "--run", trained_run, "--out", out, "--json").stdout)
    assert [r["coverage"] for r in doc["scores"]] == [None if c != c else c for c in scores["coverage"]]


def test_a_promoted_name_whose_run_was_deleted_says_how_to_score_its_forecasts(
    cli, trained_run, sample_dir, out, tmp_path
):
    """`retrain --keep` deleted the run runs/prod points at: its forecasts are still under its
    name, and the error gives the command that scores them (the run's name, not the pointer's)."""
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / trained_run.name)
    assert cli("promote", runs / trained_run.name, "--name", "prod", "--runs-dir", runs, "-q").exit_code == 0
    shutil.rmtree(runs / trained_run.name)
    res = cli("score", "--run", runs / "prod", "--out", out, "--source", "csv", "--data-dir", sample_dir)
    assert res.exit_code == 1
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    gone = (runs / trained_run.name).resolve()
    assert f"{runs / 'prod'} points at {gone}, which does not exist" in res.stderr, res.stderr
    command = re.search(r"`forecaster (score [^`]*)`", res.stderr)
    assert command, res.stderr
    args = shlex.split(command.group(1))
    assert args[args.index("--run") + 1] == str(gone), args
    again = cli(*args, "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["run"] == trained_run.name
    # without --source the command asks for it, by the name the run read it with
    res = cli("score", "--run", runs / "prod", "--out", out)
    assert res.exit_code == 1 and f"--run {gone}" in res.stderr and "--source" in res.stderr, res.stderr
    # and with no forecasts of the run either, that is said instead
    res = cli("score", "--run", runs / "prod", "--out", tmp_path / "elsewhere", "--source", "csv")
    assert res.exit_code == 1 and "no forecast files of run" in res.stderr, res.stderr
    assert "`forecaster score" not in res.stderr, res.stderr


def test_the_warning_about_sessions_missing_from_the_data_counts_in_agreeing_words(cli, trained_run, out):
    folder = out / trained_run.name
    df = pd.read_csv(folder / "2024-12-20.csv", dtype=str)
    df.loc[(df["ticker"] == "STOCKA") & (df["step"] == "3"), "date"] = "2024-12-25"  # Christmas: no bar
    df.loc[(df["ticker"] == "STOCKB") & (df["step"].isin(["2", "3"])), "date"] = "2024-12-25"
    df.to_csv(folder / "2024-12-20.csv", index=False)
    df = pd.read_csv(folder / "2024-12-24.csv", dtype=str)
    df.loc[(df["ticker"] == "STOCKB") & (df["step"] == "3"), "date"] = "2024-12-28"  # a Saturday
    df.to_csv(folder / "2024-12-24.csv", index=False)
    res = cli("score", "--run", trained_run, "--out", out, "-q")
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "the data does not have" in ln]
    assert lines == [
        "WARNING: STOCKA: 1 forecast for a session the data does not have (2024-12-25); "
        "the calendar and the data disagree, so it is not scored",
        "WARNING: STOCKB: 3 forecasts for sessions the data does not have (2024-12-25, 2024-12-28); "
        "the calendar and the data disagree, so they are not scored",
    ], res.stderr


@pytest.mark.parametrize(("copied", "extra"), [("2024-12-24", "2024-12-25"), ("2024-12-27", "2024-12-28")])
def test_a_forecast_dated_past_a_bar_the_calendar_does_not_know_is_not_scored_against_a_later_bar(
    cli, trained_run, sample_dir, out, tmp_path, copied, extra
):
    """Data of an exchange open on a day the run's calendar is not (a bar on 2024-12-25, or on
    Saturday 2024-12-28, under the New York calendar): step h is the data's h-th bar after the
    as-of date, so a forecast dated by the calendar past that bar would be scored against a
    later step's outcome. Before, it was, without a word; so was one dated on the data's last
    bar (2024-12-31, step 2 as of 2024-12-27), after a check that left that bar out."""
    data = _copy_data(sample_dir, tmp_path / "data")
    bars = read_csv_bars(data, "STOCKA")
    assert bars.index[-1] == pd.Timestamp("2024-12-31")
    added = bars.loc[[pd.Timestamp(copied)]].set_axis([pd.Timestamp(extra)])
    write_csv(pd.concat([bars, added]).sort_index(), data / "STOCKA.csv")
    res = cli("score", "--run", trained_run, "--out", out, "--data-dir", data, "--json")
    assert res.exit_code == 0, res.stderr
    rows = pd.concat([pd.read_csv(out / trained_run.name / f"{d}.csv", dtype=str) for d in ORIGINS])
    a = rows[rows["ticker"] == "STOCKA"]
    # scored before: as of a day before the extra bar, dated after it and by 2024-12-31
    astray = a[(a["as_of"] < extra) & (a["date"] > extra) & (a["date"] <= "2024-12-31")]
    assert len(astray) >= 2 and (extra != "2024-12-28" or "2024-12-31" in set(astray["date"]))
    doc = json.loads(res.stdout)
    warned = [w for w in doc["warnings"] if w.startswith("STOCKA:")]
    assert len(warned) == 1 and warned[0].startswith(f"STOCKA: {len(astray)} forecasts are dated other than"), warned
    assert (
        "the data have bars on days the calendar does not trade (set data.calendar to the ticker's exchange)"
        in warned[0]
    ), warned
    got = {(r["ticker"], r["step"]): r["n"] for r in doc["scores"]}
    clean = cli("score", "--run", trained_run, "--out", out, "--json")
    before = {(r["ticker"], r["step"]): r["n"] for r in json.loads(clean.stdout)["scores"]}
    for step, n in astray.groupby("step").size().items():
        assert got[("STOCKA", int(step))] == before[("STOCKA", int(step))] - n
        assert got[("STOCKB", int(step))] == before[("STOCKB", int(step))]


def test_the_warning_about_forecasts_dated_off_the_datas_bars_gives_the_earliest_as_its_example(
    cli, trained_run, sample_dir, out, tmp_path
):
    """STOCKB's data with a bar on 2024-12-25, a day the New York calendar does not trade: its
    forecasts dated past that bar are named in one warning, whose example is the earliest of
    them in the order of the files (step 3 as of 2024-12-20), the same on every score."""
    data = _copy_data(sample_dir, tmp_path / "data")
    bars = read_csv_bars(data, "STOCKB")
    added = bars.loc[[pd.Timestamp("2024-12-24")]].set_axis([pd.Timestamp("2024-12-25")])
    write_csv(pd.concat([bars, added]).sort_index(), data / "STOCKB.csv")
    res = cli("score", "--run", trained_run, "--out", out, "--data-dir", data, "--json")
    assert res.exit_code == 0, res.stderr
    warned = [w for w in json.loads(res.stdout)["warnings"] if w.startswith("STOCKB:")]
    assert len(warned) == 1, warned
    assert warned[0].startswith(
        "STOCKB: 4 forecasts are dated other than the data's bars (e.g. step 3 as of 2024-12-20, dated "
        "2024-12-26, which is bar 4 of the data after it): "
    ), warned


def test_the_table_shows_dm_p_values_to_three_decimals_as_evaluate_does(capsys):
    from forecaster.cli import _show_score

    scores = pd.DataFrame(
        {
            "ticker": ["ALL", "ALL", "ALL"],
            "step": [1, 2, 3],
            "n": [250, 250, 1],
            "pending": [0, 0, 0],
            "mae": [1.5, 1.5, 1.5],
            "mae_naive": [1.6, 1.6, 1.6],
            "skill": [0.0625, 0.0625, 0.0625],
            "dm_pvalue": [0.0456789, 1.2345e-07, np.nan],
            "coverage": [0.8, 0.8, 1.0],
            "width": [4.0, 4.0, 4.0],
            "pinball": [0.5, 0.5, 0.5],
        }
    )
    _show_score(ScoreReport(run="r", model="lstm", folder=Path("f"), scores=scores), [], False, False)
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in capsys.readouterr().out.splitlines()]
    rows = [cells for cells in rows if cells[:1] != ["ticker"]]  # the header's cells are names
    assert [cells[7] for cells in rows if len(cells) == 11] == ["0.046", "0.000", ""]


def test_the_table_shows_large_price_errors_without_an_exponent(capsys):
    """A ticker priced in the hundred thousands (BRK-A) has errors in the thousands: 12346,
    not 1.235e+04."""
    from forecaster.cli import _show_score

    scores = pd.DataFrame(
        {
            "ticker": ["BRK-A"],
            "step": [1],
            "n": [250],
            "pending": [0],
            "mae": [12345.6],
            "mae_naive": [9876.54],
            "skill": [-0.25],
            "dm_pvalue": [0.5],
            "coverage": [0.8],
            "width": [31415.9],
            "pinball": [2718.28],
        }
    )
    _show_score(ScoreReport(run="r", model="lstm", folder=Path("f"), scores=scores), [], False, False)
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in capsys.readouterr().out.splitlines()]
    rows = [cells for cells in rows if cells[:1] != ["ticker"]]  # the header's cells are names
    [cells] = [cells for cells in rows if len(cells) == 11]
    assert [cells[4], cells[5], cells[9], cells[10]] == ["12346", "9877", "31416", "2718"], cells


def test_score_quiet_with_a_log_file_logs_what_was_scored(cli, trained_run, out, tmp_path):
    """From cron (`-q --log-file`) each score leaves a line in the log naming the files it read
    and wrote, and nothing on stderr; the log was empty."""
    log = tmp_path / "score.log"
    res = cli("score", "--run", trained_run, "--out", out, "-q", "--log-file", log)
    assert res.exit_code == 0 and res.stderr == "", res.stderr
    [line] = log.read_text().splitlines()
    assert f"INFO scored {len(ORIGINS)} forecast files of run {trained_run.name}: " in line, line
    assert str(out / trained_run.name / "score.csv") in line, line


def test_many_files_skipped_are_named_ten_lines_at_most(cli, trained_run, out):
    """A year of forecast files gone bad gives ten lines on stderr, not one per file; --json
    names every one with its reason."""
    folder = out / trained_run.name
    bad = [f"2023-01-{d:02d}.csv" for d in range(2, 14)]
    for name in bad:
        (folder / name).write_text("not,a,forecast\n1,2,3\n")
    res = cli("score", "--run", trained_run, "--out", out, "--json")
    assert res.exit_code == 3, res.stderr
    errors = log_lines(res, "ERROR")
    assert [e.split(" skipped: ")[0] for e in errors[:9]] == [str(folder / n) for n in bad[:9]]
    assert errors[9:] == ["and 3 more skipped forecast files (the --json output lists them all)"]
    assert sorted(json.loads(res.stdout)["skipped"]) == bad


def test_the_coverage_alert_reads_the_forecast_after_one_whose_as_of_bar_is_gone_as_apart(
    trained_run, sample_dir, out, tmp_path
):
    """STOCKA's bar of 2024-12-24 gone from the data since its forecast was made: that
    forecast's 2 steps are the sessions of 2024-12-26 and 2024-12-27, those of the forecast as of
    2024-12-27 are 2024-12-30 and 2024-12-31, so the two share no session and the coverage
    alert's test reads both, as it reads STOCKB's. It took the forecast as of 2024-12-24 for one
    made on 2024-12-26 and read one of the two only ("over the 3 that do not overlap")."""
    from forecaster.scoring import score

    data = _copy_data(sample_dir, tmp_path / "data")
    bars = read_csv_bars(data, "STOCKA")
    write_csv(bars.drop(pd.Timestamp("2024-12-24")), data / "STOCKA.csv")
    folder = out / trained_run.name
    for day in ORIGINS:  # every 2-step interval far below its actual: a miss
        df = pd.read_csv(folder / f"{day}.csv", dtype=str)
        df.loc[df["step"] == "2", ["p10", "p50", "p90"]] = "10.0"
        df.to_csv(folder / f"{day}.csv", index=False)
    rep = score(trained_run, out=out, data_dir=data, since="2024-12-24")
    assert rep.exit_code == 0 and rep.warnings == [], rep.warnings
    step2 = rep.pooled().set_index("step").loc[2]
    assert (step2["n"], step2["coverage"]) == (4, 0.0)  # as of 2024-12-24 and 2024-12-27, each ticker
    alert = rep.coverage_alert(0.8, 0.95)
    assert "h=2 0.0% (n=4, p=0.0016)" in alert, alert  # 0.2 ** 4: all 4 read


def test_an_unknown_source_is_refused_once_as_predict_refuses_it(trained_run, out):
    """score(source="yahooo") said "nothing to score" with every ticker's closes unreadable
    ("STOCKA: no actuals: unknown source ..."), and predict said the same mistake in other
    words ("expected one of yahoo, csv"): both say it in one line, before anything is read."""
    import forecaster as fc
    from forecaster.errors import ConfigError

    for call in (
        lambda: fc.score(trained_run, out=out, source="yahooo"),
        lambda: fc.predict(trained_run, out=out, offline=True, source="yahooo"),
    ):
        with pytest.raises(ConfigError) as refused:
            call()
        assert str(refused.value) == "unknown source 'yahooo'; expected 'yahoo' or 'csv'"
    assert not (out / trained_run.name / "score.csv").exists()
