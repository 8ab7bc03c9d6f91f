"""Damaged or oddly written files the commands read: a clear one-line error naming the file,
line or cell with the documented exit code, or the file read as the same bars or forecasts
as its plain form; never an unexpected error, and never a file written that another command
then refuses.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from support import assert_one_line_error

from forecaster.errors import DataError
from forecaster.store import load_csv

pytestmark = pytest.mark.usefixtures("torch_one_thread")

HEADER = "Date,Open,High,Low,Close,Volume"


def _data_with_stocka(sample_dir, tmp_path, text: bytes):
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    (data / "STOCKA.csv").write_bytes(text)
    return data


def _predict_stocka(cli, run, data, out):
    return cli("predict", "--run", run, "--data-dir", data, "--out", out, "-t", "STOCKA")


# ---------------------------------------------------------------------------- bar CSV files


def test_a_csv_file_whose_lines_end_in_a_carriage_return_alone_reads_as_its_plain_form(sample_dir, tmp_path):
    """Lines ended by CR alone (as old Mac programs write them): the header was taken to be
    the whole file, and the csv module's "new-line character seen in unquoted field" was an
    unexpected error."""
    plain = (sample_dir / "STOCKA.csv").read_bytes()
    data = tmp_path / "data"
    data.mkdir()
    (data / "STOCKA.csv").write_bytes(plain.replace(b"\r\n", b"\n").replace(b"\n", b"\r"))
    pd.testing.assert_frame_equal(load_csv(data, "STOCKA"), load_csv(sample_dir, "STOCKA"))


def test_predict_reads_a_csv_file_with_lines_ended_by_a_carriage_return(cli, trained_run, sample_dir, tmp_path):
    plain = (sample_dir / "STOCKA.csv").read_bytes()
    data = _data_with_stocka(sample_dir, tmp_path, plain.replace(b"\n", b"\r"))
    res = _predict_stocka(cli, trained_run, data, tmp_path / "fc")
    assert res.exit_code == 0, res.stderr
    assert "unexpected error" not in res.stderr


def test_a_csv_header_with_a_field_over_the_csv_modules_limit_is_named(cli, trained_run, sample_dir, tmp_path):
    """A header field of 200,000 characters (over the csv module's 131,072): its
    "field larger than field limit" was an unexpected error; now the file is named."""
    rows = (sample_dir / "STOCKA.csv").read_text().split("\n", 1)[1]
    data = _data_with_stocka(sample_dir, tmp_path, f"{HEADER}{'x' * 200_000}\n{rows}".encode())
    res = _predict_stocka(cli, trained_run, data, tmp_path / "fc")
    assert_one_line_error(
        res, 1, f"{data / 'STOCKA.csv'}: not a readable CSV file (field larger than field limit (131072))"
    )
    assert not (tmp_path / "fc").exists()


@pytest.mark.parametrize(
    "first, other",
    [
        ("2024-01-02 00:00:00-05:00", "2024-01-03 00:00:00-05:00Z"),  # an offset left after the Z is taken
        ("2024-01-02", "2024-01-03 00:00:00+01:00 UTC"),
    ],
)
def test_a_date_with_a_time_zone_among_dates_without_one_is_named(sample_dir, tmp_path, first, other):
    """pandas' "Mixed timezones detected" ValueError was an unexpected error."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "STOCKA.csv").write_text(f"{HEADER}\n{first},10,11,9,10,100\n{other},10,11,9,10,100\n")
    with pytest.raises(DataError) as caught:
        load_csv(data, "STOCKA")
    assert str(caught.value) == (
        f"{data / 'STOCKA.csv'}: date {other!r} (line 3) is not in the file's date format, that of "
        f"{first!r} (line 2); write every date of a file one way"
    )


def test_predict_names_a_date_with_a_time_zone_left_among_dates_without_one(cli, trained_run, sample_dir, tmp_path):
    header, *rows = (sample_dir / "STOCKA.csv").read_text().splitlines()
    stamped = [f"{r[:10]} 00:00:00-05:00{r[10:]}" for r in rows]
    stamped[-3] = f"{rows[-3][:10]} 00:00:00-05:00Z{rows[-3][10:]}"
    data = _data_with_stocka(sample_dir, tmp_path, "\n".join([header, *stamped, ""]).encode())
    res = _predict_stocka(cli, trained_run, data, tmp_path / "fc")
    assert_one_line_error(
        res,
        1,
        f"{data / 'STOCKA.csv'}: date '{rows[-3][:10]} 00:00:00-05:00Z' (line {len(rows) - 1}) is not in the "
        f"file's date format, that of '{rows[0][:10]} 00:00:00-05:00' (line 2)",
    )
    assert not (tmp_path / "fc").exists()


# ---------------------------------------------------------------------------- forecast files


@pytest.mark.parametrize("rows", ["", ",,,,,,,,,\n"])
def test_predict_retrying_one_ticker_over_a_days_file_without_forecasts_writes_its_own(
    cli, trained_run, tmp_path, rows
):
    """The day's file its header alone (a copy stopped after it), or that and a row of empty
    fields: `predict -t` stopped with 'unexpected error: IndexError: single positional indexer
    is out-of-bounds'. Nothing in it is a forecast to keep: the file is the new forecast."""
    out = tmp_path / "fc"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    dated = out / trained_run.name / "2024-12-31.csv"
    dated.write_text(dated.read_text().split("\n", 1)[0] + "\n" + rows)
    res = cli("predict", "--run", trained_run, "--out", out, "-q", "-t", "STOCKB")
    assert res.exit_code == 0, res.stderr
    assert str(dated) not in res.stderr and "ERROR" not in res.stderr
    assert list(pd.read_csv(dated)["ticker"]) == ["STOCKB"] * 3


def test_predict_retrying_one_ticker_keeps_the_others_rows_past_a_row_of_empty_fields(cli, trained_run, tmp_path):
    """A row of empty fields (a spreadsheet's empty row) among the forecasts, which score
    ignores, made `predict -t` call the file another run's (run ''), and drop the other
    tickers' forecasts."""
    out = tmp_path / "fc"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    dated = out / trained_run.name / "2024-12-31.csv"
    whole = dated.read_bytes()
    lines = whole.decode().splitlines(keepends=True)
    dated.write_text("".join([*lines[:3], ",,,,,,,,,\n", *lines[3:], ",,,,,,,,,\n"]))
    res = cli("predict", "--run", trained_run, "--out", out, "-q", "-t", "STOCKB")
    assert res.exit_code == 0, res.stderr
    assert str(dated) not in res.stderr
    assert dated.read_bytes() == whole


# ---------------------------------------------------------------------------- run directories


@pytest.mark.parametrize(
    "field, value",
    [("nu", 2.0), ("nu", 0.0), ("beta", 1e300), ("omega", float("nan")), ("omega", -1.0), ("close", 0.0)],
)
def test_a_garch_fit_edited_in_run_json_makes_the_run_malformed(cli, run_copy, field, value):
    """The garch fit kept in run.json, edited: nu = 2 stopped evaluate with 'unexpected error:
    ZeroDivisionError', and beta = 1e300 wrote NaN into its metrics.csv. The run is named
    malformed, as for any field no training writes, exit 1."""
    meta = json.loads((run_copy / "run.json").read_text())
    sym = next(s for s, t in meta["tickers"].items() if t.get("garch"))
    meta["tickers"][sym]["garch"][field] = value
    (run_copy / "run.json").write_text(json.dumps(meta))
    res = cli("evaluate", "--run", run_copy, "-q")
    assert_one_line_error(
        res,
        1,
        f"{run_copy / 'run.json'} is malformed: {sym}.garch holds parameters no garch fit has (finite numbers, "
        "omega at least 0, alpha + gamma / 2 + beta from 0 to 1, nu above 2, a close above 0)",
    )
    assert not (run_copy / "eval").exists()


@pytest.fixture(scope="module")
def interrupted_run(small_dir, tmp_path_factory, torch_one_thread):
    """A tiny run stopped after its second epoch, resumable (copy it before damaging it)."""
    from support import tiny_overrides

    from forecaster.config import load_config
    from forecaster.training import Interrupted, train

    def stop(rec):
        if rec.epoch == 2:
            raise KeyboardInterrupt

    run = tmp_path_factory.mktemp("interrupted") / "run"
    cfg = load_config(None, tiny_overrides(small_dir, **{"train.epochs": 3, "train.checkpoint_every": 0}))
    with pytest.raises(Interrupted):
        train(cfg, run_dir=run, on_epoch=stop)
    return run


@pytest.mark.parametrize(
    "edit, why",
    [
        (lambda s, t: s["param_groups"][0].update(eps="min"), "the optimiser cannot take (eps 'min')"),
        (lambda s, t: s["param_groups"][0].update(betas=[0.9]), "(betas [0.9])"),
        (lambda s, t: s["param_groups"][0].update(differentiable=True), "(differentiable True)"),
        (lambda s, t: s["param_groups"][0].update(params=[0, 0]), "(params [0, 0])"),
        (lambda s, t: s["param_groups"][0].update(params=[0, 999]), "(params [0, 999])"),
        (lambda s, t: s["scheduler"].update(best={}), "scheduler holds a setting the scheduler cannot take (best {})"),
        (lambda s, t: s["scheduler"].update(factor=""), "(factor '')"),
        (lambda s, t: s.update(fitted_on="min"), "fitted_on is not a table of the hashes of the tickers' bars"),
        (lambda s, t: t.update({"opt.0.step": t["opt.0.step"][:0]}), "opt.0.step holds 0 numbers, not one"),
    ],
)
def test_train_resume_names_a_resume_file_whose_settings_torch_cannot_take(cli, interrupted_run, tmp_path, edit, why):
    """The optimiser's and scheduler's settings kept in resume.safetensors, edited: torch
    stopped the resumed training with an unexpected error of its own (TypeError, RuntimeError,
    AttributeError: 'str' object has no attribute 'get'). The file is named as one that does
    not match the run, exit 1, the run left as it was."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    path = run / "resume.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        state = json.loads(f.metadata()["state"])
    tensors = load_file(str(path))
    edit(state, tensors)
    save_file(tensors, str(path), metadata={"state": json.dumps(state)})
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    res = cli("train", "--resume", run, "-q")
    line = assert_one_line_error(res, 1, f"{path} does not match the run's config (", why)
    assert line.endswith("the run cannot be resumed; train it again without --resume")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
