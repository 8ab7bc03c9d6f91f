"""Bad input handed to the CLI: a clear one-line error, the documented exit code, nothing written.

Every case goes through the real Typer app (the ``cli`` fixture): bad CSV files, hostile
ticker symbols, bad configuration, bad ``--as-of`` dates and damaged run directories (a
pickle in place of the weights included: it must never be unpickled). Repairable data
(unsorted or duplicate dates, empty rows) is fixed with a warning and gives the same
forecast as clean data.
"""

from __future__ import annotations

import json
import pickle
import shlex
import shutil
from pathlib import Path

import pytest
from support import assert_one_line_error, error_lines, log_lines, run_forecaster_minding_file_modes, run_meta

pytestmark = pytest.mark.usefixtures("torch_one_thread")

HEADER = "Date,Open,High,Low,Close,Volume\n"


def csv_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.csv")) if folder.exists() else []


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def clean_lines(sample_dir) -> list[str]:
    """The data rows of the sample's STOCKA.csv (header dropped)."""
    return (sample_dir / "STOCKA.csv").read_text().splitlines(keepends=True)[1:]


def predict_one(cli, run, data: Path, out: Path, *extra):
    return cli("predict", "--run", run, "--data-dir", data, "--out", out, "-t", "STOCKA", *extra)


# ---------------------------------------------------------------------------- CSV: refused


def _replace_field(line: str, column: int, value: str) -> str:
    cells = line.rstrip("\n").split(",")
    cells[column] = value
    return ",".join(cells) + "\n"


def _bad_csv(case: str, rows: list[str]) -> str:
    last = len(rows) - 1
    if case == "missing column":
        return "Date,Open,High,Low,Volume\n" + "".join(",".join(r.split(",")[:4] + r.split(",")[5:]) for r in rows)
    if case == "non-numeric":
        rows[last - 5] = _replace_field(rows[last - 5], 4, "12.5abc")
        return HEADER + "".join(rows)
    if case == "zero price":
        rows[last - 5] = _replace_field(rows[last - 5], 1, "0")
        return HEADER + "".join(rows)
    if case == "negative price":
        rows[last - 5] = _replace_field(rows[last - 5], 3, "-4.5")
        return HEADER + "".join(rows)
    if case == "infinite price":
        rows[last - 5] = _replace_field(rows[last - 5], 4, "inf")
        return HEADER + "".join(rows)
    if case == "subnormal price":  # a positive float without its full precision
        rows[last - 5] = _replace_field(rows[last - 5], 3, "1e-318")
        return HEADER + "".join(rows)
    if case == "negative volume":
        rows[last - 5] = _replace_field(rows[last - 5], 5, "-100")
        return HEADER + "".join(rows)
    if case == "absurd value":
        cells = rows[last - 5].rstrip("\n").split(",")
        rows[last - 5] = ",".join([cells[0], *(f"{float(x) * 1e6:.4f}" for x in cells[1:5]), cells[5]]) + "\n"
        return HEADER + "".join(rows)
    if case == "high below low":
        cells = rows[last - 5].rstrip("\n").split(",")
        cells[2], cells[3] = cells[3], cells[2]
        rows[last - 5] = ",".join(cells) + "\n"
        return HEADER + "".join(rows)
    if case == "empty file":
        return ""
    if case == "header only":
        return HEADER
    if case == "unparseable date":
        rows[last - 5] = _replace_field(rows[last - 5], 0, "2024-13-45")
        return HEADER + "".join(rows)
    if case == "mixed date formats":  # one date as 07/05/2024 among ISO dates
        day = rows[last - 5].split(",")[0]
        rows[last - 5] = _replace_field(rows[last - 5], 0, f"{day[5:7]}/{day[8:10]}/{day[:4]}")
        return HEADER + "".join(rows)
    if case == "wrong delimiter":
        return HEADER.replace(",", ";") + "".join(r.replace(",", ";") for r in rows)
    if case == "every row empty":
        return HEADER + "".join(r.split(",")[0] + ",,,,,\n" for r in rows)
    if case == "too short for the window":
        return HEADER + "".join(rows[-10:])
    if case == "binary junk":
        return "\x00\x01PK\x03\x04 not a csv at all\x00\n"
    raise AssertionError(case)


REFUSED = {
    "missing column": ["missing column(s) close"],
    "non-numeric": ["non-numeric value", "column close"],
    "zero price": ["open 0 on", "not a finite positive price"],
    "negative price": ["low -4.5 on", "not a finite positive price"],
    "infinite price": ["close inf on", "not a finite positive price"],
    "subnormal price": ["low 9.99999e-319 on", "is below 2.23e-308, too small a price to compute with"],
    "negative volume": ["volume -100 on", "non-negative volume"],
    "absurd value": ["20x"],
    "high below low": ["below the low"],
    "empty file": ["the file is empty"],
    "header only": ["has a header but no rows"],
    "unparseable date": ["unparseable date '2024-13-45'"],
    "mixed date formats": ["STOCKA.csv: date", "is not in the file's date format, that of", "(line 2)"],
    "wrong delimiter": ["';'-separated"],
    "every row empty": ["no usable bars"],
    "too short for the window": ["only 10 bars", "need 21"],
    "binary junk": ["STOCKA.csv"],
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_csv_is_refused_with_one_line_and_nothing_written(cli, trained_run, clean_lines, tmp_path, case):
    data, out = tmp_path / "data", tmp_path / "fc"
    data.mkdir()
    (data / "STOCKA.csv").write_text(_bad_csv(case, list(clean_lines)), encoding="utf-8")
    res = predict_one(cli, trained_run, data, out)
    line = assert_one_line_error(res, 1, "STOCKA", *REFUSED[case])
    assert len(line) < 600
    if case != "too short for the window":  # nothing to fix in that file
        assert str(data / "STOCKA.csv") in line  # the file to fix, a bad bar's too
    assert csv_files(out) == []


def test_bad_csv_for_one_of_two_tickers_is_partial(cli, trained_run, sample_dir, clean_lines, tmp_path):
    data, out = tmp_path / "data", tmp_path / "fc"
    data.mkdir()
    (data / "STOCKA.csv").write_text(_bad_csv("zero price", list(clean_lines)))
    shutil.copy(sample_dir / "STOCKB.csv", data / "STOCKB.csv")
    res = cli("predict", "--run", trained_run, "--data-dir", data, "--out", out)
    assert res.exit_code == 3, res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert any(ln.startswith("ERROR") and "STOCKA" in ln for ln in res.stderr.splitlines())
    written = (out / trained_run.name / "latest.csv").read_text()
    assert "STOCKB" in written and "STOCKA" not in written


def test_unreadable_csv_for_one_of_two_tickers_is_partial(trained_run, sample_dir, tmp_path):
    """A file the job may not read fails its ticker, as a damaged one does: the other ticker's
    forecast is still written (exit 3), not the whole run given up with exit 1."""
    data, out = tmp_path / "data", tmp_path / "fc"
    data.mkdir()
    for sym in ("STOCKA", "STOCKB"):
        shutil.copy(sample_dir / f"{sym}.csv", data / f"{sym}.csv")
    (data / "STOCKA.csv").chmod(0)
    res = run_forecaster_minding_file_modes(
        "predict", "--run", trained_run, "--data-dir", data, "--out", out, cwd=tmp_path
    )
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    [line] = [ln for ln in error_lines(res) if "STOCKA" in ln]
    assert "STOCKA.csv: cannot be read (Permission denied)" in line
    written = (out / trained_run.name / "latest.csv").read_text()
    assert "STOCKB" in written and "STOCKA" not in written


def test_bad_csv_makes_train_fail_without_a_run(cli, small_dir, clean_lines, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "STOCKA.csv").write_text(_bad_csv("negative price", list(clean_lines)))
    run_dir = tmp_path / "runs" / "r"
    res = cli(
        "train",
        "--source",
        "csv",
        "--data-dir",
        data,
        "--tickers",
        "STOCKA",
        "--run-dir",
        run_dir,
        "--lookback",
        "20",
        "--horizon",
        "3",
    )
    line = assert_one_line_error(res, 1, "STOCKA", "low -4.5")
    assert line.endswith(f"is not a finite positive price, in {data / 'STOCKA.csv'}")  # as evaluate names it
    assert not run_dir.exists()


# ---------------------------------------------------------------------------- CSV: repaired


def _repaired_csv(case: str, rows: list[str]) -> str:
    if case == "unsorted dates":
        return HEADER + "".join(rows[-30:] + rows[:-30])
    if case == "duplicate dates":
        return HEADER + "".join(rows[:-3] + rows[-6:-3] + rows[-3:])
    if case == "empty and NaN rows":
        # extra rows on a Saturday and a Sunday with nothing usable in them
        return HEADER + "".join(rows) + "2025-01-04,,,,,\n2025-01-05,nan,NaN,,NULL,\n"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case,warning",
    [
        ("unsorted dates", "sorted"),
        ("duplicate dates", "duplicate date"),
        ("empty and NaN rows", "missing date or price"),
    ],
)
def test_repairable_csv_is_fixed_with_a_warning(cli, trained_run, clean_lines, tmp_path, case, warning):
    clean, data = tmp_path / "clean", tmp_path / "data"
    for d in (clean, data):
        d.mkdir()
    (clean / "STOCKA.csv").write_text(HEADER + "".join(clean_lines))
    (data / "STOCKA.csv").write_text(_repaired_csv(case, list(clean_lines)))
    res_clean = predict_one(cli, trained_run, clean, tmp_path / "fc-clean", "-q")
    assert res_clean.exit_code == 0, res_clean.stderr
    res = predict_one(cli, trained_run, data, tmp_path / "fc")
    assert res.exit_code == 0, res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert any(ln.startswith("WARNING") and "STOCKA" in ln and warning in ln for ln in res.stderr.splitlines()), (
        res.stderr
    )
    name = trained_run.name
    assert (tmp_path / "fc" / name / "latest.csv").read_bytes() == (
        tmp_path / "fc-clean" / name / "latest.csv"
    ).read_bytes()


# ---------------------------------------------------------------------------- tickers

HOSTILE = [
    "../x",
    "a/b",
    "..",
    "/etc/passwd",
    "=cmd()",
    "+SUM(1)",
    "@x",
    "-x",
    "A" * 300,
    "ÄPPLE",
    "AAPL\nERROR: fake",
    "x;rm -rf ~",
    "C:\\x",
    "a\x00b",
]


@pytest.mark.parametrize("symbol", HOSTILE, ids=lambda s: ascii(s)[:20])
def test_hostile_ticker_never_becomes_a_path(cli, trained_run, sample_dir, tmp_path, symbol):
    before = all_files(tmp_path)
    results = [
        cli("predict", "--run", trained_run, "--data-dir", sample_dir, "--out", tmp_path / "fc", "-t", symbol),
        cli("download", "--data-dir", tmp_path / "d", "--", symbol),
        cli(
            "train",
            "--source",
            "csv",
            "--data-dir",
            sample_dir,
            "--tickers",
            f"STOCKA,{symbol}",
            "--run-dir",
            tmp_path / "runs" / "r",
        ),
    ]
    for res in results:
        line = assert_one_line_error(res, 1, "invalid ticker")
        assert line.isascii() and len(line) < 300
    # nothing was created anywhere: no store file, no forecast, no run, no stray path
    assert all_files(tmp_path) == before
    assert not (tmp_path / "d").exists() and not (tmp_path / "fc").exists()
    assert not (tmp_path / "runs").exists()


def test_ticker_unknown_to_the_run_and_without_data(cli, trained_run, sample_dir, tmp_path):
    res = cli("predict", "--run", trained_run, "--data-dir", sample_dir, "--out", tmp_path / "fc", "-t", "ZZZZ")
    line = assert_one_line_error(res, 1, "ZZZZ", "not trained on")
    known = json.loads((trained_run / "run.json").read_text())["tickers"]
    assert f"it knows {len(known)} ticker(s): {', '.join(sorted(known, key=lambda s: known[s]['id']))}" in line
    assert "more" not in line and "forecaster info" not in line  # a few tickers: all of them named
    assert not (tmp_path / "fc").exists()
    res = cli(
        "train", "--source", "csv", "--data-dir", sample_dir, "--tickers", "ZZZZ", "--run-dir", tmp_path / "runs" / "r"
    )
    assert_one_line_error(res, 1, "ZZZZ")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "--run", "RUN", "--offline", "--out", "fc"],
        ["evaluate", "--run", "RUN"],
        ["train", "--source", "csv", "--data-dir", "DATA", "--tickers", "STOCKA", "--epochs", "1", "--run-dir", "r"],
        ["tune", "--source", "csv", "--data-dir", "DATA", "--tickers", "STOCKA", "--trials", "1"],
        ["retrain", "prod", "--runs-dir", "runs"],
    ],
    ids=lambda c: c[0],
)
@pytest.mark.parametrize("value", ["", ",", " ", " , ,"])
def test_tickers_given_but_naming_none_is_a_usage_error_not_every_ticker(cli, run_copy, small_dir, command, value):
    """`-t "$FAILED"` with nothing failed: the default (every ticker) is the opposite of what
    was meant, so nothing runs. A --tickers of the config file before it changes nothing."""
    before = all_files(Path.cwd())
    args = [str(run_copy) if a == "RUN" else str(small_dir) if a == "DATA" else a for a in command]
    if "--tickers" in args:  # the empty list replaces the one given earlier on the line
        at = args.index("--tickers")
        del args[at : at + 2]
    res = cli(*args, "-t", value)
    assert res.exit_code == 2, res.stderr
    assert f"Invalid value for '-t' / '--tickers': -t {shlex.quote(value)} names no ticker" in res.stderr, res.stderr
    assert res.stdout == ""
    assert all_files(Path.cwd()) == before and not (run_copy / "eval").exists()


@pytest.mark.parametrize(("value", "shown"), [("", "''"), (" ", "' '"), ("\n", "$'\\n'"), (" \t", "$' \\t'")])
def test_ticker_arguments_that_are_all_blank_are_a_usage_error(cli, run_copy, value, shown):
    """`predict --run R "$FAILED"`: an empty argument names no ticker either. It is shown as a
    shell reads it back: a newline in it was written as one, which broke the error's line."""
    res = cli("predict", "--run", run_copy, "--offline", "--out", "fc", value)
    assert res.exit_code == 2, res.stderr
    line = f"Error: Invalid value for TICKER: {shown} names no ticker: name at least one, or leave the tickers out"
    assert line in res.stderr.splitlines()[-1] and res.stdout == ""
    assert not Path("fc").exists()


@pytest.mark.parametrize("value", ["", " "])
def test_download_of_blank_ticker_arguments_is_a_usage_error_and_nothing_is_made(cli, value):
    """`download "$NEW"` with nothing new: not a bad symbol (exit 1) but no ticker named, as
    every other command says it (exit 2), and the store is not made."""
    res = cli("download", "--data-dir", "store-here", "--json", value)
    assert res.exit_code == 2, res.stderr
    assert f"{shlex.quote(value)} names no ticker" in res.stderr and res.stdout == ""
    assert not Path("store-here").exists()


@pytest.mark.parametrize(
    "command",
    [["download", "--data-dir", "d"], ["train", "--run-dir", "r", "-t"], ["tune", "--run-dir", "r", "-t"]],
    ids=lambda c: c[0],
)
def test_tickers_naming_none_without_a_config_listing_any_are_not_told_to_leave_them_out(cli, command):
    """Without a --config that lists tickers there are no default ones: leaving the tickers
    out, as `-t ""` was told, failed again; it is told to give a config that lists them."""
    res = cli(*command, "")
    assert res.exit_code == 2, res.stderr
    assert "names no ticker: name at least one, or leave the tickers out and give a --config that lists them" in (
        res.stderr
    )
    assert "default ones" not in res.stderr and res.stdout == ""
    assert not Path("d").exists() and not Path("r").exists()


def _renamed_run(run_copy: Path, tmp_path: Path, name: str, meta_name: str | None = None) -> Path:
    run = tmp_path / "runs" / name
    run.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(run_copy, run)
    meta = run_meta(run)
    meta["name"] = name if meta_name is None else meta_name
    (run / "run.json").write_text(json.dumps(meta))
    return run


@pytest.mark.parametrize("name", ["=HYPERLINK(1)", "  =HYPERLINK(1)", "@SUM(1)", "-2+3"])
def test_run_name_that_looks_like_a_formula_is_neutralised_in_the_csv(cli, run_copy, tmp_path, name):
    run = _renamed_run(run_copy, tmp_path, name)
    out = tmp_path / "fc"
    res = cli("predict", "--run", run, "--out", out, "-q")
    assert res.exit_code == 0, res.stderr
    text = (out / name / "latest.csv").read_text()
    cells = [c for line in text.splitlines() for c in line.split(",")]
    assert "'" + name in cells
    assert not any(c.lstrip().startswith(("=", "+", "-", "@")) for c in cells)


def test_predict_for_one_ticker_keeps_the_others_rows_under_a_run_name_that_looks_like_a_formula(
    cli, run_copy, tmp_path
):
    """The file holds the neutralised name ('@daily): still this run's, so `predict -t` keeps
    the other tickers' rows of the day."""
    run = _renamed_run(run_copy, tmp_path, "@daily")
    out = tmp_path / "fc"
    assert cli("predict", "--run", run, "--out", out, "-q").exit_code == 0
    dated = out / "@daily" / "2024-12-31.csv"
    first = dated.read_bytes()
    res = cli("predict", "--run", run, "--out", out, "-q", "-t", "STOCKB")
    assert res.exit_code == 0, res.stderr
    assert dated.read_bytes() == first
    assert (out / "@daily" / "latest.csv").read_bytes() == first


@pytest.mark.parametrize("meta_name", ["../../escaped", "..", "a/b", "", "x\ny"])
def test_run_name_that_would_leave_the_output_folder_is_refused(cli, run_copy, tmp_path, meta_name):
    run = _renamed_run(run_copy, tmp_path, "r", meta_name)
    out = tmp_path / "area" / "fc"
    res = cli("predict", "--run", run, "--out", out)
    assert_one_line_error(res, 1, "run name")
    assert not (tmp_path / "area").exists()
    assert [p for p in csv_files(tmp_path) if run not in p.parents] == []


# ---------------------------------------------------------------------------- config

CONFIGS = {
    "unknown key": ("[model]\nhiden_size = 8\n", "model.hiden_size", "unknown key"),
    "unknown section": ('[modle]\ncell = "gru"\n', "modle", "unknown key"),
    "wrong type": ('[window]\nlookback = "sixty"\n', "window.lookback", ""),
    "float for a whole number": ("[window]\nhorizon = 3.0\n", "window.horizon", "expected a whole number, not 3.0"),
    "wrong type list": ("[data]\ntickers = 5\n", "data.tickers", "expected a list in brackets"),
    "zero size": ("[model]\nhidden_size = 0\n", "model.hidden_size", "greater than 0"),
    "negative size": ("[train]\nbatch_size = -8\n", "train.batch_size", "greater than 0"),
    "negative lr": ("[train]\nlr = -0.1\n", "train.lr", "greater than 0"),
    "horizon > lookback": ("[window]\nlookback = 5\nhorizon = 10\n", "horizon", "lookback"),
    "bad enum": ('[model]\ncell = "transformer"\n', "model.cell", ""),
    "not toml": ("lookback = = 3\n", "TOML", ""),
    "empty folder": ('[predict]\nout = ""\n', "predict.out", "empty: name a folder"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_bad_config_file_is_one_line_exit_1(cli, small_dir, tmp_path, case):
    text, key, what = CONFIGS[case]
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    run_dir = tmp_path / "runs" / "r"
    res = cli("train", "--config", cfg, "--source", "csv", "--data-dir", small_dir, "--run-dir", run_dir)
    assert_one_line_error(res, 1, key, what)
    assert not run_dir.exists()
    res = cli("download", "AAA", "--config", cfg, "--data-dir", tmp_path / "d")
    assert_one_line_error(res, 1, key, what)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["download", "AAA"],
        ["train", "--source", "csv", "--tickers", "STOCKA", "--run-dir", "RUN"],
        ["tune", "--source", "csv", "-t", "STOCKA", "--train-best", "--run-dir", "RUN"],
    ],
)
def test_config_given_twice_is_a_usage_error_naming_both_files(cli, small_dir, tmp_path, command):
    """A command reads one config file: a second --config is refused, not read in place of the first."""
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text("[window]\nhorizon = 3\n")
    second.write_text("[train]\nepochs = 1\n")
    before = all_files(Path.cwd())
    run = tmp_path / "r"
    res = cli(
        *[run if a == "RUN" else a for a in command], "--data-dir", small_dir, "--config", first, "--config", second
    )
    assert res.exit_code == 2 and res.stdout == "", res.stderr
    [line] = [ln for ln in res.stderr.splitlines() if "Invalid value" in ln]
    assert line.endswith(
        f"Invalid value for '--config': given 2 times ({first}, {second}); a command reads one config file: "
        "put the keys in one file"
    ), line
    assert all_files(Path.cwd()) == before and not run.exists()


@pytest.mark.parametrize(("value", "problem"), [("", "does not exist"), ("FOLDER", "is a directory")])
def test_a_config_that_is_no_file_is_a_usage_error_saying_why(cli, small_dir, tmp_path, value, problem):
    """`--config ""` names no file: it does not exist (it is not the current folder, a directory)."""
    value = str(tmp_path) if value == "FOLDER" else value
    res = cli("train", "--source", "csv", "--data-dir", small_dir, "-t", "STOCKA", "--config", value)
    assert res.exit_code == 2 and res.stdout == "", res.stderr
    assert f"Invalid value for '--config': file {value!r} {problem}." in res.stderr, res.stderr


@pytest.mark.parametrize(
    "flags,key",
    [
        (["--lookback", "0"], "(options): --lookback: must be greater than 1, not 0"),
        (["--horizon", "0"], "(options): --horizon: must be greater than 0"),
        (["--hidden-size", "-4"], "(options): --hidden-size: must be greater than 0, not -4"),
        (["--epochs", "0"], "(options): --epochs: must be greater than 0, not 0"),
        (["--lookback", "5", "--horizon", "10"], "window.horizon (10) must not exceed window.lookback (5)"),
        (["--dropout", "1.5"], "(options): --dropout: "),
        (["--seed", str(2**64)], "(options): --seed: "),
    ],
)
def test_bad_config_flags_are_one_line_exit_1_naming_the_flag(cli, small_dir, tmp_path, flags, key):
    run_dir = tmp_path / "runs" / "r"
    res = cli("train", "--source", "csv", "--data-dir", small_dir, "--tickers", "STOCKA", "--run-dir", run_dir, *flags)
    assert_one_line_error(res, 1, key)
    assert not run_dir.exists()


def test_a_bad_value_is_named_as_the_option_or_the_file_key_that_gave_it(cli, small_dir, tmp_path):
    """A flag's bad value is named by the flag, the config file's beside it by its key; the
    same overrides through the Python API are named by their keys."""
    from forecaster.config import load_config
    from forecaster.errors import ConfigError

    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nlr = -0.5\n")
    data = ["--source", "csv", "--data-dir", small_dir, "--tickers", "STOCKA"]
    res = cli("train", *data, "--config", cfg, "--epochs", "0", "--run-dir", tmp_path / "r")
    line = assert_one_line_error(res, 1, f"invalid configuration ({cfg} and options): ")
    assert "--epochs: must be greater than 0, not 0" in line and "train.lr: must be greater than 0" in line, line
    assert "train.epochs" not in line and "--lr" not in line, line
    with pytest.raises(ConfigError, match=r"\(options\): train\.epochs: must be greater than 0"):
        load_config(None, {"train.epochs": 0})


@pytest.mark.parametrize(
    ("command", "flag", "value", "choices"),
    [
        (["predict", "--run", "RUN"], "--source", "ftp", "'yahoo', 'csv'"),
        (["evaluate", "--run", "RUN"], "--source", "ftp", "'yahoo', 'csv'"),
        (["train"], "--source", "ftp", "'yahoo', 'csv'"),
        (["train"], "--model", "transformer", "'rnn', 'lstm', 'gru'"),
        (["train"], "--strategy", "sideways", "'direct', 'recursive'"),
        (["train"], "--device", "tpu", "'auto', 'cpu', 'cuda', 'mps'"),
        (["train"], "--precision", "fp8", "'fp32', 'bf16'"),
        (["train"], "--train-mode", "batch", "'forking', 'window'"),
    ],
)
def test_a_value_not_among_an_options_choices_is_one_clean_usage_line(cli, run_copy, command, flag, value, choices):
    """Said in our words, as other bad option values are: no pydantic "Value error, " before them."""
    before = all_files(Path.cwd())
    res = cli(*[str(run_copy) if a == "RUN" else a for a in command], flag, value)
    assert res.exit_code == 2 and res.stdout == ""
    [line] = [ln for ln in res.stderr.splitlines() if "Invalid value" in ln]
    assert line.endswith(f"Invalid value for '{flag}': '{value}' is not one of {choices}."), line
    assert "Value error" not in res.stderr
    assert all_files(Path.cwd()) == before


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        (["evaluate", "--run", "RUN"], "--data-dir"),
        (["score", "--run", "RUN"], "--out"),
        (["score", "--run", "RUN"], "--data-dir"),
        (["promote", "RUN", "--name", "prod"], "--runs-dir"),
        (["retrain", "prod"], "--runs-dir"),
        (["train", "--source", "csv", "--tickers", "STOCKA", "--epochs", "1"], "--run-dir"),
        (["train", "--epochs", "1"], "--resume"),
        (["tune", "--source", "csv", "--tickers", "STOCKA", "--train-best"], "--run-dir"),
    ],
)
def test_an_empty_folder_option_is_refused_not_taken_for_the_current_folder(cli, run_copy, command, flag):
    before = all_files(Path.cwd())
    res = cli(*[str(run_copy) if a == "RUN" else a for a in command], flag, "")
    assert_one_line_error(res, 1, f'{flag} "" names no folder')
    assert all_files(Path.cwd()) == before and not (run_copy / "eval").exists()


def test_an_empty_resume_says_what_to_give_not_a_default_it_lacks(cli):
    """--resume has no default folder: the line says to name the run, or to leave --resume out
    for a new run, not "omit --resume for its default"."""
    before = all_files(Path.cwd())
    res = cli("train", "--epochs", "1", "--resume", "")
    line = assert_one_line_error(res, 1, '--resume "" names no folder')
    assert line.endswith("give the interrupted run's directory, or omit --resume to train a new run")
    assert all_files(Path.cwd()) == before


def test_an_empty_data_dir_given_to_train_is_refused(cli, tmp_path):
    res = cli("train", "--source", "csv", "--data-dir", "", "--tickers", "STOCKA", "--run-dir", tmp_path / "r")
    assert_one_line_error(res, 1, "(options): --data-dir: empty: name a folder")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- --as-of


@pytest.mark.parametrize(
    "as_of", ["someday", "2024-02-30", "07/03/2024", "2024-7-3", "2024-07-03T10:00", "", "1e9", "2024-07-03\nERROR: x"]
)
def test_as_of_not_a_date(cli, trained_run, tmp_path, as_of):
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--as-of", as_of)
    line = assert_one_line_error(res, 1, "--as-of", "YYYY-MM-DD")
    assert line.isascii()
    assert not (tmp_path / "fc").exists()


def test_as_of_in_the_future_and_before_the_data(cli, trained_run, tmp_path):
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--as-of", "2999-01-04")
    assert_one_line_error(res, 1, "2999-01-04", "future")
    assert not (tmp_path / "fc").exists()
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--as-of", "1999-01-04")
    assert_one_line_error(res, 1, "STOCKA", "STOCKB", "no bars on or before --as-of 1999-01-04")
    assert csv_files(tmp_path / "fc") == []


# ---------------------------------------------------------------------------- run directories


class _MakesMarker:
    """Unpickling this creates ``path`` (the proof that a file was unpickled)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _damage(run: Path, case: str, tmp_path: Path) -> str:
    """Damage ``run`` as ``case`` says; returns a fragment the error must contain."""
    weights, meta_path = run / "model.safetensors", run / "run.json"
    meta = json.loads(meta_path.read_text())
    if case == "missing run.json":
        meta_path.unlink()
        return "run.json is missing"
    if case == "missing weights":
        weights.unlink()
        return "model.safetensors is missing"
    if case == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return "model.safetensors"
    if case == "empty weights":
        weights.write_bytes(b"")
        return "model.safetensors"
    if case == "weights are a directory":
        weights.unlink()
        weights.mkdir()
        return "model.safetensors"
    if case == "invalid json":
        meta_path.write_text('{"format_version": 1, "name": ')
        return "not valid JSON"
    if case == "json nested too deeply":  # json's recursion limit, not a JSON error
        meta_path.write_text("[" * 100_000 + "]" * 100_000)
        return "not valid JSON (nested too deeply)"
    if case == "json number too long":  # over Python's 4300 digits of an int read from text
        meta_path.write_text(json.dumps(meta).replace('"format_version": 3', '"format_version": ' + "9" * 5000))
        return "not valid JSON (a number with too many digits)"
    if case == "ticker in lower case":  # the run looked it up upper-cased: an unexpected KeyError
        meta["tickers"]["stocka"] = meta["tickers"].pop("STOCKA")
        meta_path.write_text(json.dumps(meta))
        return "run.json is malformed: tickers holds 'stocka', not a ticker symbol as written"
    if case == "ticker a formula":
        meta["tickers"]["=1+1"] = meta["tickers"].pop("STOCKA")
        meta_path.write_text(json.dumps(meta))
        return "run.json is malformed: tickers holds '=1+1', not a ticker symbol as written"
    if case == "format_version true":  # true == 1 in Python: read as a format 1 run
        meta["format_version"] = True
        meta_path.write_text(json.dumps(meta))
        return "has run format True"
    if case == "json not an object":
        meta_path.write_text("[1, 2, 3]")
        return "format_version"
    if case == "json wrong types":
        meta["splits"] = "soon"
        meta_path.write_text(json.dumps(meta))
        return "run.json is malformed"
    if case == "tensors do not match config":
        meta["config"]["model"]["hidden_size"] = 16
        meta_path.write_text(json.dumps(meta))
        return "does not match"
    if case == "newer format version":
        meta["format_version"] = 99
        meta_path.write_text(json.dumps(meta))
        return "newer forecaster"
    if case == "unknown cell in config":
        meta["config"]["model"]["cell"] = "transformer"
        meta_path.write_text(json.dumps(meta))
        return "model.cell"
    raise AssertionError(case)


RUN_CASES = [
    "missing run.json",
    "missing weights",
    "truncated weights",
    "empty weights",
    "weights are a directory",
    "invalid json",
    "json nested too deeply",
    "json number too long",
    "json not an object",
    "ticker in lower case",
    "ticker a formula",
    "format_version true",
    "json wrong types",
    "tensors do not match config",
    "newer format version",
    "unknown cell in config",
]


@pytest.mark.parametrize("case", RUN_CASES)
def test_damaged_run_is_refused(cli, run_copy, tmp_path, case):
    fragment = _damage(run_copy, case, tmp_path)
    out = tmp_path / "fc"
    res = cli("predict", "--run", run_copy, "--out", out)
    assert_one_line_error(res, 1, fragment)
    assert not out.exists()


def test_missing_run_directory(cli, tmp_path):
    res = cli("predict", "--run", tmp_path / "no-such-run", "--out", tmp_path / "fc")
    assert_one_line_error(res, 1, "no-such-run")
    assert not (tmp_path / "fc").exists()


@pytest.mark.parametrize("style", ["pickle", "torch.save"])
def test_pickle_in_place_of_the_weights_is_never_unpickled(cli, run_copy, tmp_path, style):
    marker = tmp_path / "unpickled.marker"
    # The payload is live: unpickling it does create its marker file.
    probe = tmp_path / "probe.marker"
    pickle.loads(pickle.dumps(_MakesMarker(probe)))
    assert probe.exists()

    weights = run_copy / "model.safetensors"
    if style == "pickle":
        weights.write_bytes(pickle.dumps({"encoder.weight": _MakesMarker(marker)}, protocol=4))
    else:
        import torch

        torch.save({"encoder.weight": _MakesMarker(marker)}, weights)
    out = tmp_path / "fc"
    res = cli("predict", "--run", run_copy, "--out", out)
    assert_one_line_error(res, 1, "model.safetensors", "not a readable safetensors file")
    assert not marker.exists()
    assert not out.exists()
    # evaluate and info read the same run and refuse it the same way
    res = cli("evaluate", "--run", run_copy)
    assert res.exit_code == 1 and "Traceback" not in res.stdout + res.stderr
    assert not marker.exists()


def test_damaged_store_file_is_refused(cli, trained_run, sample_dir, tmp_path):
    from forecaster.sources import read_csv_bars
    from forecaster.store import save_store

    data = tmp_path / "data"
    path = save_store(data, "STOCKA", read_csv_bars(sample_dir, "STOCKA"))
    path.write_bytes(path.read_bytes()[:200])
    res = cli(
        "predict",
        "--run",
        trained_run,
        "--source",
        "yahoo",
        "--offline",
        "--data-dir",
        data,
        "--out",
        tmp_path / "fc",
        "-t",
        "STOCKA",
    )
    assert_one_line_error(res, 1, "STOCKA", "cannot read", "download")
    assert csv_files(tmp_path / "fc") == []


def test_predict_with_a_read_only_store_forecasts_from_the_stored_bars(trained_run, sample_dir, tmp_path):
    """A store the job may read but not write (another user's downloads): the refresh fails
    for every ticker, and each is forecast from its stored bars, recent enough, with a
    warning, as when Yahoo is down; not exit 1 with nothing written."""
    from forecaster.sources import read_csv_bars
    from forecaster.store import save_store, store_dir

    data = tmp_path / "data"
    for sym in ("STOCKA", "STOCKB"):
        save_store(data, sym, read_csv_bars(sample_dir, sym))  # ends 2024-12-31
    store_dir(data).chmod(0o555)
    args = ["--source", "yahoo", "--data-dir", data, "--out", tmp_path / "fc", "--as-of", "2024-12-31"]
    res = run_forecaster_minding_file_modes(
        "predict", "--run", trained_run, *args, "--max-staleness", "0", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    for sym in ("STOCKA", "STOCKB"):
        [line] = [ln for ln in res.stderr.splitlines() if ln.startswith(f"WARNING: {sym}: refresh failed")]
        assert "cannot create the lock file" in line and "Permission denied" in line, line
        assert "using stored bars up to 2024-12-31" in line, line
    latest = (tmp_path / "fc" / trained_run.name / "latest.csv").read_text()
    assert "STOCKA" in latest and "STOCKB" in latest
    assert sorted(p.name for p in store_dir(data).iterdir()) == ["STOCKA.parquet", "STOCKB.parquet"]


def test_unreadable_store_file_is_not_called_damaged(trained_run, sample_dir, tmp_path):
    """A store file the job may not read is likely whole: the error says why it cannot be read
    and does not advise deleting the ticker's history."""
    from forecaster.sources import read_csv_bars
    from forecaster.store import save_store

    data = tmp_path / "data"
    for sym in ("STOCKA", "STOCKB"):
        path = save_store(data, sym, read_csv_bars(sample_dir, sym))
    path.chmod(0)
    args = ["--source", "yahoo", "--offline", "--data-dir", data, "--out", tmp_path / "fc"]
    res = run_forecaster_minding_file_modes("predict", "--run", trained_run, *args, cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    [line] = [ln for ln in error_lines(res) if "STOCKB" in ln]
    assert "cannot read" in line and "STOCKB.parquet (Permission denied)" in line
    assert "delete" not in line and "download" not in line
    assert "STOCKA" in (tmp_path / "fc" / trained_run.name / "latest.csv").read_text()


@pytest.mark.parametrize(
    "command",
    [
        ["download", "AAPL", "--data-dir", "{store_is_a_file}"],
        ["train", "--source", "csv", "--data-dir", "{empty}", "--tickers", "STOCKA", "--run-dir", "{missing}"],
        ["tune", "--source", "csv", "--data-dir", "{empty}", "--tickers", "STOCKA", "--trials", "1"],
        ["evaluate", "--run", "{missing}"],
        ["predict", "--run", "{missing}", "--offline"],
        ["info", "{missing}"],
        ["score", "--run", "{missing}"],
        ["promote", "{missing}", "--name", "prod"],
        ["retrain", "prod", "--runs-dir", "{empty}"],
    ],
    ids=lambda command: command[0],
)
def test_a_failed_command_with_json_prints_its_error_line_and_code_as_json(cli, tmp_path, command):
    """`--json` on a command that fails as a whole: stdout holds one object with the ERROR
    line and the exit code, not nothing (which a reader of stdout cannot parse)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "store").write_text("not a folder")
    names = {"empty": empty, "missing": tmp_path / "missing", "store_is_a_file": tmp_path / "data"}
    res = cli(*[arg.format(**names) for arg in command], "--json")
    line = assert_one_line_error(res, 1)
    assert json.loads(res.stdout) == {"error": line.removeprefix("ERROR: "), "exit_code": 1}


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "--run", ""],
        ["predict", "--run", "", "--offline"],
        ["score", "--run", ""],
        ["info", ""],
        ["promote", "", "--name", "prod"],
    ],
    ids=lambda command: command[0],
)
def test_an_empty_run_is_refused_not_taken_for_the_current_folder(cli, tmp_path, command):
    """`--run ""` (or an empty DIR) is one line, exit 1, naming what to give; it was read as the
    current folder ("ERROR: . is not a run: run.json is missing")."""
    res = cli(*command)
    line = assert_one_line_error(res, 1, '"" names no folder', "run directory or a promoted name")
    assert "run.json" not in line
    assert not (tmp_path / "runs").exists()  # promote made no name


def test_a_universe_of_tickers_is_not_listed_in_one_error_line(tmp_path):
    """A run trained on a thousand tickers names ten of them at most (and the unknown ones the
    same way) and says where to see the rest, rather than one line of thousands of characters."""
    from types import SimpleNamespace

    from forecaster.checkpoint import Run
    from forecaster.errors import DataError
    from forecaster.tickers import NAMED_TICKERS

    known = [f"T{i:04d}" for i in range(1000)]
    run = SimpleNamespace(
        manifest=SimpleNamespace(tickers=dict.fromkeys(known), skipped={}), names=known, path=tmp_path / "r"
    )
    assert Run.select(run, ["T0005", "T0002"]) == ["T0005", "T0002"]
    unknown = [f"ZZ{i}" for i in range(30)]
    with pytest.raises(DataError) as err:
        Run.select(run, ["T0001", *unknown])
    msg = str(err.value)
    shown = NAMED_TICKERS - 1
    assert msg.startswith(f"the run was not trained on {', '.join(unknown[:shown])} and {30 - shown} more;")
    assert f"it knows 1000 ticker(s): {', '.join(known[:shown])} and {1000 - shown} more" in msg
    assert f"`forecaster info {tmp_path / 'r'}` lists them all" in msg
    assert "T0001" not in msg.split(";")[0] and len(msg) < 400


# ---------------------------------------------------------------------------- many tickers at once

MANY = [f"T{i:02d}" for i in range(12)]


@pytest.fixture(scope="module")
def many_tickers(tmp_path_factory) -> tuple[Path, Path]:
    """A CSV folder of 12 tickers with 2.5 years each (and 12 with 30 bars), and a run trained
    on the 12: a small universe, past the ten tickers a message names."""
    from support import tiny_overrides

    from forecaster.config import load_config
    from forecaster.synthetic import generate_bars, write_csv
    from forecaster.training import train

    data = tmp_path_factory.mktemp("many")
    for i, sym in enumerate(MANY):
        write_csv(generate_bars("2022-07-01", "2024-12-31", seed=100 + i), data / f"{sym}.csv")
        write_csv(generate_bars("2024-11-01", "2024-12-13", seed=200 + i), data / f"S{sym}.csv")
    run = tmp_path_factory.mktemp("many-runs") / "many"
    train(load_config(None, tiny_overrides(data, **{"data.tickers": MANY, "train.epochs": 1})), run_dir=run)
    return data, run


def test_many_tickers_skipped_by_train_are_named_ten_lines_at_most(cli, many_tickers, tmp_path):
    """Too short for a window or without a usable bar: one list of skipped tickers, ten lines."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ["T00", "T01", *(f"ST{i:02d}" for i in range(6))]:
        shutil.copy(many_tickers[0] / f"{name}.csv", data / f"{name}.csv")
    for i in range(6):
        (data / f"E{i:02d}.csv").write_text("Date,Open,High,Low,Close,Volume\n")  # a header, no rows
    skipped = (
        [f"E{i:02d}" for i in range(0, 6, 2)] + [f"ST{i:02d}" for i in range(6)] + [f"E{i:02d}" for i in (1, 3, 5)]
    )
    flags = ["--source", "csv", "--epochs", "1", "--lookback", "20", "--horizon", "3", "--quiet"]
    res = cli(
        "train", "--data-dir", data, "-t", ",".join(["T00", "T01", *skipped]), *flags, "--run-dir", tmp_path / "r"
    )
    assert res.exit_code == 0, res.stderr
    lines = [w for w in log_lines(res, "WARNING") if w.startswith("skipping") or w.startswith("and ")]
    assert [w.split(":")[0] for w in lines[:9]] == [f"skipping {s}" for s in skipped[:9]]  # in the order asked
    assert "has a header but no rows" in lines[0] and "bars in the training split" in lines[3]
    assert lines[9:] == ["and 3 more tickers skipped (the --json output lists them all)"]
    assert list(run_meta(tmp_path / "r")["skipped"]) == skipped  # every one of them in the run


def test_many_tickers_failing_in_predict_are_named_ten_lines_at_most(cli, many_tickers, tmp_path):
    data, run = many_tickers
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(data / "T00.csv", one / "T00.csv")
    res = cli("predict", "--run", run, "--data-dir", one, "--out", tmp_path / "fc")
    assert res.exit_code == 3, res.stderr
    errors = log_lines(res, "ERROR")
    assert errors[:9] == [f"{s} failed: no CSV file at {one / s}.csv" for s in MANY[1:10]]
    assert errors[9:] == ["and 2 more failed tickers (the --json output lists them all)"]
    res = cli("predict", "--run", run, "--data-dir", one, "--out", tmp_path / "fc", "--json")
    assert res.exit_code == 3
    assert list(json.loads(res.stdout)["failed"]) == MANY[1:]


def test_a_universe_failing_in_predict_is_one_line_and_json_names_every_ticker(cli, many_tickers, tmp_path):
    _, run = many_tickers
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("predict", "--run", run, "--data-dir", empty, "--out", tmp_path / "fc", "--json")
    line = assert_one_line_error(res, 1, "no forecast written: T00: no CSV file at ", "; and 3 more tickers")
    assert "T08: " in line and "T09" not in line
    doc = json.loads(res.stdout)
    assert doc["error"] == line.removeprefix("ERROR: ") and doc["exit_code"] == 1
    assert doc["failed"] == {s: f"no CSV file at {empty / s}.csv" for s in MANY}


def test_many_tickers_without_test_windows_in_evaluate_are_named_ten_lines_at_most(cli, many_tickers, tmp_path):
    import pandas as pd

    data, run = many_tickers
    ended = tmp_path / "ended"
    ended.mkdir()
    shutil.copy(data / "T00.csv", ended / "T00.csv")
    for sym in MANY[1:]:  # delisted before the test split
        df = pd.read_csv(data / f"{sym}.csv")
        df[df["Date"] < "2024-06-01"].to_csv(ended / f"{sym}.csv", index=False)
    res = cli("evaluate", "--run", run, "--data-dir", ended, "--json")
    assert res.exit_code == 0, res.stderr
    warned = [w for w in log_lines(res, "WARNING") if "no test windows" in w or w.startswith("and ")]
    assert [w.split(":")[0] for w in warned[:9]] == MANY[1:10]
    assert warned[9:] == ["and 2 more tickers without test windows (the --json output lists them all)"]
    assert list(json.loads(res.stdout)["missing"]) == MANY[1:]
    # every ticker without test windows: one line, and every one of them in --json
    df = pd.read_csv(data / "T00.csv")
    df[df["Date"] < "2024-06-01"].to_csv(ended / "T00.csv", index=False)
    res = cli("evaluate", "--run", run, "--data-dir", ended, "--json")
    line = assert_one_line_error(res, 1, "the bars of T00, T01, ", " and 3 more end before the run's test split")
    assert list(json.loads(res.stdout)["missing"]) == MANY and len(line) < 400
