"""`forecaster train`: the run directory it writes, flag/config precedence, exit codes 0, 1, 2."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from support import (
    SLOW_TEST_TIMEOUT_S,
    assert_one_line_error,
    csv_folder_with_a_bar_on,
    error_lines,
    run_meta,
    run_script,
)

from forecaster.synthetic import generate_bars, write_csv

pytestmark = pytest.mark.usefixtures("torch_one_thread")

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "grad_norm", "lr", "seconds", "samples"]
RUN_FILES = {"model.safetensors", "run.json", "history.csv"}

# Tiny model flags: trains in well under a second on the small CSV folder.
TINY = [
    "--source",
    "csv",
    "--lookback",
    "20",
    "--horizon",
    "3",
    "--val-days",
    "100",
    "--test-days",
    "100",
    "--model",
    "gru",
    "--hidden-size",
    "8",
    "--batch-size",
    "128",
    "--epochs",
    "1",
    "--seed",
    "0",
]


def _history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        assert reader.fieldnames == HISTORY_COLUMNS
    return rows


def _config_file(path, small_dir, *, epochs=2, extra=""):
    path.write_text(
        "[data]\n"
        'source = "csv"\n'
        f'data_dir = "{small_dir.as_posix()}"\n'
        'tickers = ["STOCKA", "STOCKB"]\n'
        "[window]\nlookback = 20\nhorizon = 3\nval_days = 100\ntest_days = 100\n"
        '[model]\ncell = "gru"\nhidden_size = 8\n'
        f"[train]\nepochs = {epochs}\nbatch_size = 128\nseed = 0\n" + extra
    )
    return path


# ---------------------------------------------------------------------------- exit 0


def test_train_writes_a_complete_run(cli, small_dir, tmp_path):
    run = tmp_path / "runs" / "first"
    res = cli("train", "--data-dir", small_dir, "--tickers", "STOCKA,STOCKB", *TINY, "--run-dir", run)
    assert res.exit_code == 0, res.stderr
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert "run written to" in res.stdout and str(run) in res.stdout
    rows = _history(run)
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    meta = run_meta(run)
    assert meta["format_version"] == 3
    assert meta["name"] == "first"
    assert set(meta["tickers"]) == {"STOCKA", "STOCKB"}
    assert meta["tickers"]["STOCKA"]["first_date"] == "2022-07-01"
    assert meta["tickers"]["STOCKB"]["first_date"] == "2023-06-01"
    assert meta["tickers"]["STOCKA"]["last_date"] == "2024-12-31"
    assert set(meta["windows"]) == {"train", "val", "test"}
    assert all(meta["windows"][k] > 0 for k in ("train", "val", "test"))
    assert len(meta["data_hash"]) == 64
    c = meta["config"]
    assert (c["model"]["cell"], c["model"]["hidden_size"]) == ("gru", 8)
    assert (c["window"]["lookback"], c["window"]["horizon"]) == (20, 3)
    assert c["train"]["epochs"] == 1
    # nothing left behind next to the run (the temporary directory was moved into place)
    assert [p.name for p in run.parent.iterdir() if not p.name.endswith(".lock")] == ["first"]


def test_train_run_is_readable_per_umask(cli, small_dir, tmp_path):
    """A run trained by one user is read by another (the cron operator): modes follow the
    umask like any other file the tool writes, not the 0700 / 0600 of temporary files."""
    umask = os.umask(0o022)
    os.umask(umask)
    run = tmp_path / "r"
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", run, "-q")
    assert res.exit_code == 0, res.stderr
    assert oct(run.stat().st_mode & 0o777) == oct(0o777 & ~umask)
    for name in sorted(RUN_FILES):
        assert (name, oct((run / name).stat().st_mode & 0o777)) == (name, oct(0o666 & ~umask))


def test_train_tickers_as_arguments_and_default_run_dir(cli, small_dir):
    res = cli("train", "STOCKA", "stockb", "--data-dir", small_dir, *TINY, "--quiet")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == ""
    runs = [p for p in (Path.cwd() / "runs").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1 and runs[0].name.startswith("gru-")
    meta = run_meta(runs[0])
    assert set(meta["tickers"]) == {"STOCKA", "STOCKB"}


def test_one_argument_of_comma_separated_tickers_is_read_as_tickers_as_evaluate_reads_it(cli, small_dir, tmp_path):
    """`train "STOCKA,stockb"` (a variable holding a list): "invalid ticker 'STOCKA,STOCKB'", where
    evaluate and predict, and train's -t, read the two tickers."""
    res = cli("train", "STOCKA,stockb", "--data-dir", small_dir, *TINY, "--run-dir", tmp_path / "r", "-q")
    assert res.exit_code == 0, res.stderr
    assert set(run_meta(tmp_path / "r")["tickers"]) == {"STOCKA", "STOCKB"}


def test_train_flags_override_config_file(cli, small_dir, tmp_path):
    cfg = _config_file(tmp_path / "c.toml", small_dir, epochs=2, extra='[predict]\nout = "elsewhere"\n')
    run = tmp_path / "r"
    res = cli("train", "--config", cfg, "--epochs", "1", "--hidden-size", "6", "--run-dir", run, "-q")
    assert res.exit_code == 0, res.stderr
    assert len(_history(run)) == 1
    c = run_meta(run)["config"]
    assert c["train"]["epochs"] == 1  # flag over file
    assert c["model"]["hidden_size"] == 6  # flag over file
    assert c["window"]["lookback"] == 20  # file over default (60)
    assert c["train"]["batch_size"] == 128  # file over default (256)
    assert c["predict"]["out"] == "elsewhere"
    assert c["model"]["dropout"] == pytest.approx(0.1)  # the built-in default


def test_train_mode_chunk_and_threads_flags(cli, small_dir, tmp_path):
    cfg = _config_file(tmp_path / "c.toml", small_dir, epochs=1, extra='mode = "window"\nchunk = 8\n')
    run = tmp_path / "r"
    res = cli("train", "--config", cfg, "--run-dir", run, "-q")
    assert res.exit_code == 0, res.stderr
    t = json.loads((run / "run.json").read_text())["config"]["train"]
    assert (t["mode"], t["chunk"]) == ("window", 8)  # the file over the defaults
    rows = _history(run)
    assert int(rows[0]["samples"]) == json.loads((run / "run.json").read_text())["windows"]["train"]
    run2 = tmp_path / "r2"
    res = cli("train", "--config", cfg, "--train-mode", "forking", "--chunk", "16", "--threads", "1", "--run-dir", run2)
    assert res.exit_code == 0, res.stderr
    meta = json.loads((run2 / "run.json").read_text())
    assert (meta["config"]["train"]["mode"], meta["config"]["train"]["chunk"]) == ("forking", 16)
    assert meta["config"]["train"]["threads"] == 1
    # each switch: its default in run2, and the other value recorded when the flag gives it
    switches = [
        ("burn_in_grad", False, ["--train-mode", "forking", "--burn-in-grad"]),
        ("burn_in_dropout", False, ["--burn-in-dropout", "--num-layers", "2"]),
        ("burn_in_ahead", True, ["--no-burn-in-ahead"]),
        ("halves", True, ["--train-mode", "window", "--no-halves"]),
    ]
    for key, default, flags in switches:
        assert meta["config"]["train"][key] is default, key
        res = cli("train", "--config", cfg, *flags, "--run-dir", tmp_path / f"r-{key}", "-q")
        assert res.exit_code == 0, res.stderr
        assert json.loads((tmp_path / f"r-{key}" / "run.json").read_text())["config"]["train"][key] is (not default)
    # samples count forecast origins in both modes: one epoch covers every training origin
    assert int(_history(run2)[0]["samples"]) == meta["windows"]["train"]
    res = cli("train", "--config", cfg, "--train-mode", "sideways", "--run-dir", tmp_path / "r3")
    assert res.exit_code == 2 and "sideways" in res.stderr


def test_train_config_run_dir_is_used(cli, small_dir, tmp_path):
    cfg = _config_file(tmp_path / "c.toml", small_dir, epochs=1).read_text()
    path = tmp_path / "c2.toml"
    path.write_text(f'run_dir = "{(tmp_path / "from-config").as_posix()}"\n' + cfg)
    res = cli("train", "--config", path, "-q")
    assert res.exit_code == 0, res.stderr
    assert {p.name for p in (tmp_path / "from-config").iterdir()} == RUN_FILES


def test_train_json_result(cli, small_dir, tmp_path):
    run = tmp_path / "r"
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA,STOCKB", *TINY, "--run-dir", run, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {
        "run_dir",
        "name",
        "best_epoch",
        "best_val_loss",
        "epochs_run",
        "train_seconds",
        "windows",
        "skipped",
    } <= set(doc)
    assert doc["name"] == "r" and doc["interrupted"] is False
    assert doc["epochs_run"] == 1 and doc["best_epoch"] == 1
    assert doc["skipped"] == {}
    meta = run_meta(run)
    assert doc["windows"] == meta["windows"]
    assert doc["best_val_loss"] == pytest.approx(float(_history(run)[0]["val_loss"]))
    # the per-epoch log line goes to stderr, never into the JSON
    assert "epoch 1" in res.stderr


def test_train_skips_a_ticker_too_short_with_a_warning(cli, small_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("STOCKA", "STOCKB"):
        (data / f"{name}.csv").write_bytes((small_dir / f"{name}.csv").read_bytes())
    write_csv(generate_bars("2024-09-03", "2024-12-31", seed=5), data / "NEWCO.csv")
    run = tmp_path / "r"
    res = cli("train", "--data-dir", data, "-t", "STOCKA,STOCKB,NEWCO", *TINY, "--run-dir", run, "--json")
    assert res.exit_code == 0, res.stderr
    assert "NEWCO" in res.stderr
    doc = json.loads(res.stdout)
    assert set(doc["skipped"]) == {"NEWCO"}
    meta = run_meta(run)
    assert set(meta["tickers"]) == {"STOCKA", "STOCKB"}
    assert set(meta["skipped"]) == {"NEWCO"}


def _without_closes(src: Path, dst: Path) -> Path:
    """``src``'s CSV file with every Close left empty: not one usable bar."""
    header, *rows = src.read_text().splitlines()
    assert header.split(",")[4] == "Close"
    blanked = [",".join(fields[:4] + [""] + fields[5:]) for fields in (row.split(",") for row in rows)]
    dst.write_text("\n".join([header, *blanked]) + "\n")
    return dst


def test_train_skips_a_ticker_without_usable_bars_with_a_warning(cli, small_dir, tmp_path):
    """A ticker whose every bar lacks its close is skipped as a too-short one is, named with why,
    where it stopped the training of the others ("NANC: no usable bars", exit 1); with no
    other ticker left, training fails naming it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "STOCKB.csv").write_bytes((small_dir / "STOCKB.csv").read_bytes())
    _without_closes(small_dir / "STOCKA.csv", data / "NANC.csv")
    run = tmp_path / "r"
    res = cli("train", "--data-dir", data, "-t", "STOCKB", "NANC", *TINY, "--run-dir", run, "--json")
    assert res.exit_code == 0, res.stderr
    assert "WARNING: skipping NANC: no usable bars: each of its" in res.stderr
    assert not error_lines(res)
    doc = json.loads(res.stdout)
    assert list(doc["skipped"]) == ["NANC"] and "no usable bars" in doc["skipped"]["NANC"]
    meta = run_meta(run)
    assert set(meta["tickers"]) == {"STOCKB"}
    assert meta["skipped"] == doc["skipped"]

    alone = tmp_path / "alone"
    res = cli("train", "--data-dir", data, "-t", "NANC", *TINY, "--run-dir", alone)
    assert_one_line_error(res, 1, "no ticker has usable bars: NANC: no usable bars")
    assert not alone.exists()


def test_train_records_its_tickers_as_trained_and_later_commands_read_them_back(cli, small_dir, tmp_path):
    """`-t STOCKA STOCKB STOCKA stocka` trains STOCKA and STOCKB: run.json's config says so,
    not the list as typed, and predict and evaluate forecast those two from it."""
    run = tmp_path / "r"
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", "STOCKB", "STOCKA", "stocka", *TINY, "--run-dir", run)
    assert res.exit_code == 0, res.stderr
    meta = run_meta(run)
    assert meta["config"]["data"]["tickers"] == ["STOCKA", "STOCKB"]
    assert set(meta["tickers"]) == {"STOCKA", "STOCKB"}
    res = cli("predict", "--run", run, "--offline", "--out", tmp_path / "fc", "--json")
    assert res.exit_code == 0, res.stderr
    assert {row["ticker"] for row in json.loads(res.stdout)["forecasts"]} == {"STOCKA", "STOCKB"}
    res = cli("evaluate", "--run", run, "--quiet")
    assert res.exit_code == 0, res.stderr
    with open(run / "eval" / "metrics.csv", newline="") as f:
        assert {"STOCKA", "STOCKB"} <= {row["ticker"] for row in csv.DictReader(f)}


# ---------------------------------------------------------------------------- exit 1


def test_train_refuses_a_ticker_with_a_bar_dated_after_today(cli, small_dir, tmp_path):
    """A mistyped year (2204-07-01) fails the ticker as a bad bar does, naming the date and the
    file, as predict and score do: it is not trained on with a warning of a 65,000-day gap."""
    data = csv_folder_with_a_bar_on("2204-07-01", small_dir, tmp_path / "data", "STOCKB")
    run = tmp_path / "r"
    res = cli("train", "--data-dir", data, "-t", "STOCKA,STOCKB", *TINY, "--run-dir", run)
    assert_one_line_error(
        res, 1, "STOCKB: 1 bar(s) dated after today, from 2204-07-01 to 2204-07-01", f"in {data / 'STOCKB.csv'}"
    )
    assert "gap" not in res.stderr
    assert not run.exists()


def test_train_lookback_below_ar_order_names_the_flag_and_the_way_out(cli, small_dir, tmp_path):
    """`--lookback 2`: the error is about the lookback the user gave and how to settle it, not
    about model.ar_order "exceeding" it, which no train flag sets."""
    run = tmp_path / "r"
    res = cli("train", "--source", "csv", "--data-dir", small_dir, "-t", "STOCKA", "--lookback", "2", "--run-dir", run)
    line = assert_one_line_error(
        res, 1, "window.lookback (2) must be at least model.ar_order (5)", "(--lookback)", "ar_order to at most 2"
    )
    assert "must not exceed" not in line
    assert not run.exists()


def test_train_config_unknown_key_is_named(cli, small_dir, tmp_path):
    cfg = _config_file(tmp_path / "c.toml", small_dir, extra="epoch = 3\n")  # in [train]
    res = cli("train", "--config", cfg, "--run-dir", tmp_path / "r")
    assert res.exit_code == 1
    assert "train.epoch" in res.stderr and "unknown key" in res.stderr
    assert not (tmp_path / "r").exists()


def test_train_config_unknown_section_is_named(cli, small_dir, tmp_path):
    cfg = _config_file(tmp_path / "c.toml", small_dir, extra='[modle]\ncell = "rnn"\n')
    res = cli("train", "--config", cfg, "--run-dir", tmp_path / "r")
    assert res.exit_code == 1
    assert "modle" in res.stderr
    assert not (tmp_path / "r").exists()


def test_train_unknown_calendar_stops_before_training(cli, small_dir, tmp_path):
    # predict dates its forecasts with the run's calendar: a typo must not wait until then
    cfg = _config_file(tmp_path / "c.toml", small_dir)
    cfg.write_text(cfg.read_text().replace('source = "csv"', 'source = "csv"\ncalendar = "XNYSE"'))
    res = cli("train", "--config", cfg, "--run-dir", tmp_path / "r")
    assert res.exit_code == 1
    assert "unknown exchange calendar 'XNYSE'" in res.stderr and "XNYS" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_calendar_given_by_another_of_its_names_is_recorded_by_its_exchanges(cli, small_dir, tmp_path):
    """calendar = " nyse " trained on the New York calendar, and run.json and info showed " nyse "."""
    cfg = _config_file(tmp_path / "c.toml", small_dir)
    cfg.write_text(cfg.read_text().replace('source = "csv"', 'source = "csv"\ncalendar = " nyse "'))
    res = cli("train", "--config", cfg, "--run-dir", tmp_path / "r", "--epochs", "1")
    assert res.exit_code == 0, res.stderr
    assert run_meta(tmp_path / "r")["config"]["data"]["calendar"] == "XNYS"


def test_train_config_wrong_type_is_named(cli, small_dir, tmp_path):
    cfg = _config_file(tmp_path / "c.toml", small_dir)
    cfg.write_text(cfg.read_text().replace("hidden_size = 8", 'hidden_size = "big"'))
    res = cli("train", "--config", cfg, "--run-dir", tmp_path / "r")
    assert res.exit_code == 1
    assert "model.hidden_size" in res.stderr
    assert not (tmp_path / "r").exists()


def test_train_impossible_flag_combination(cli, small_dir, tmp_path):
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--horizon", "30", "--run-dir", tmp_path / "r")
    assert res.exit_code == 1
    assert "horizon" in res.stderr
    assert not (tmp_path / "r").exists()


def test_train_refuses_a_ticker_named_like_the_pooled_rows(cli, small_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for sym in ("STOCKA", "STOCKB"):
        (data / f"{sym}.csv").write_bytes((small_dir / f"{sym}.csv").read_bytes())
    (data / "ALL.csv").write_bytes((small_dir / "STOCKB.csv").read_bytes())
    res = cli("train", "--data-dir", data, "-t", "STOCKA,all", *TINY, "--run-dir", tmp_path / "r")
    assert_one_line_error(res, 1, "ticker named ALL", "pooling every ticker")
    assert not (tmp_path / "r").exists()


def test_train_without_tickers(cli, small_dir, tmp_path):
    res = cli("train", "--data-dir", small_dir, *TINY, "--run-dir", tmp_path / "r")
    assert res.exit_code == 1
    assert "ticker" in res.stderr.lower()
    assert not (tmp_path / "r").exists()


def test_train_ticker_without_data_is_named(cli, small_dir, tmp_path):
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA,MISSING", *TINY, "--run-dir", tmp_path / "r")
    assert res.exit_code == 1
    assert "MISSING" in res.stderr
    assert not (tmp_path / "r").exists()


def test_train_missing_data_dir(cli, tmp_path):
    res = cli("train", "--data-dir", tmp_path / "nowhere", "-t", "STOCKA", *TINY, "--run-dir", tmp_path / "r")
    assert res.exit_code == 1
    assert "STOCKA" in res.stderr
    assert not (tmp_path / "r").exists()


def test_train_unavailable_device(cli, small_dir, tmp_path):
    import torch

    device = "cuda" if not torch.cuda.is_available() else "mps"
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--device", device, "--run-dir", tmp_path / "r")
    assert res.exit_code == 1
    assert device in res.stderr.lower()
    assert not (tmp_path / "r").exists()


def test_train_refuses_a_run_dir_holding_other_files_before_training(cli, small_dir, tmp_path):
    # a run replaces its whole directory: a folder of other files is never swapped away
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me\n")
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", folder)
    assert_one_line_error(res, 1, "is not a run directory", "notes.txt", "new or empty")
    assert "epoch" not in res.stderr  # refused before training
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep me\n"
    # nor is a file (run_dir in a config file, where the parser cannot check it)
    cfg = _config_file(tmp_path / "c.toml", small_dir, epochs=1)
    cfg.write_text(f'run_dir = "{(folder / "notes.txt").as_posix()}"\n' + cfg.read_text())
    res = cli("train", "--config", cfg)
    assert_one_line_error(res, 1, "notes.txt is a file")
    assert (folder / "notes.txt").read_text() == "keep me\n" and len(list(tmp_path.glob("data/.*"))) == 0
    # an empty folder, or an earlier run, is written to
    (folder / "notes.txt").unlink()
    assert cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", folder, "-q").exit_code == 0
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", folder, "--epochs", "2", "-q")
    assert res.exit_code == 0, res.stderr
    assert {p.name for p in folder.iterdir()} == RUN_FILES and len(_history(folder)) == 2


def test_train_error_is_one_line_without_traceback(cli, small_dir, tmp_path):
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA,MISSING", *TINY, "--run-dir", tmp_path / "r")
    assert res.exit_code == 1
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- exit 2


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "transformer"],
        ["--strategy", "sideways"],
        ["--device", "tpu"],
        ["--epochs", "many"],
        ["--source", "bloomberg"],
        ["--unknown-flag"],
        ["--config", "/no/such/file.toml"],
    ],
)
def test_train_usage_errors(cli, small_dir, tmp_path, args):
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", "--run-dir", tmp_path / "r", *args)
    assert res.exit_code == 2
    assert "Usage" in res.stderr
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- --resume


def _interrupted_run(small_dir, run_dir, after=1):
    """A run stopped after its epoch ``after`` (the first by default), as Ctrl-C leaves it."""
    from support import tiny_overrides

    from forecaster.config import load_config
    from forecaster.training import Interrupted, train

    def stop(rec):
        if rec.epoch == after:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        train(load_config(None, tiny_overrides(small_dir, **{"train.epochs": 3})), run_dir=run_dir, on_epoch=stop)
    return run_dir


@pytest.mark.parametrize(
    "flags,shown",
    [
        (["--hidden-size", "16"], "model.hidden_size 8 -> 16"),
        (["--horizon", "2"], "window.horizon 3 -> 2"),
        (["--lr", "0.05"], "train.lr 0.001 -> 0.05"),
        (["--val-days", "50"], "window.val_days 100 -> 50"),
        (["--tickers", "STOCKA"], "data.tickers"),
        (["--dropout", "0.3"], "model.dropout 0.1 -> 0.3"),
        (["--batch-size", "64"], "train.batch_size 128 -> 64"),
        (["--train-mode", "window"], "train.mode forking -> window"),
        (["--chunk", "8"], "train.chunk 32 -> 8"),
    ],
)
def test_resume_refuses_a_setting_the_run_cannot_continue_with(cli, small_dir, tmp_path, flags, shown):
    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped")
    before = {f: (run / f).read_bytes() for f in os.listdir(run)}
    res = cli("train", "--resume", run, *flags)
    assert_one_line_error(res, 1, "cannot resume", shown)
    assert {f: (run / f).read_bytes() for f in os.listdir(run)} == before
    # the same tickers spelt otherwise and in another order, and a setting that may change: the run goes on
    res = cli("train", "--resume", run, "--tickers", "stockb, STOCKA", "--epochs", "2")
    assert res.exit_code == 0, res.stderr
    assert run_meta(run)["status"] == "complete" and len(_history(run)) == 2


def test_resume_on_other_machine_settings_says_so(cli, small_dir, tmp_path):
    """--threads, --no-halves and the like may change on another machine: the resume goes on
    and a warning names each, as the epochs after it are computed otherwise."""
    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped")
    res = cli("train", "--resume", run, "--threads", "2", "--no-halves")
    assert res.exit_code == 0, res.stderr
    warned = [ln for ln in res.stderr.splitlines() if "the epochs from here are computed otherwise" in ln]
    assert len(warned) == 1 and "train.threads 1 -> 2; train.halves True -> False" in warned[0], res.stderr


def test_a_resume_that_waited_for_the_lock_does_not_go_on_from_a_run_written_meanwhile(
    cli, small_dir, tmp_path, monkeypatch
):
    """While a resume waited for the run's lock, another training wrote the run (finished it,
    or trained a new one there): the resume went on from the epoch it had read before and
    replaced that newer run. Now it changes nothing and says to run it again (exit 75)."""
    from forecaster import training

    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped")
    real = training.file_lock

    def written_while_waiting(path, timeout):
        newer = run.with_name("newer")
        shutil.copytree(run, newer)
        (newer / "written-meanwhile").write_text("")
        os.rename(run, run.with_name("older"))
        os.rename(newer, run)  # a training's run, replaced whole
        return real(path, timeout)

    monkeypatch.setattr(training, "file_lock", written_while_waiting)
    before = {f: (run / f).read_bytes() for f in os.listdir(tmp_path / "runs" / "stopped")}
    res = cli("train", "--resume", run)
    assert_one_line_error(res, 75, f"{run} was written by another training while this one waited for its lock")
    assert "written-meanwhile" in os.listdir(run)
    assert {f: (run / f).read_bytes() for f in os.listdir(run)} == before | {"written-meanwhile": b""}
    monkeypatch.setattr(training, "file_lock", real)
    res = cli("train", "--resume", run)  # again: it resumes what is there now
    assert res.exit_code == 0, res.stderr
    assert run_meta(run)["status"] == "complete"


def test_resume_refuses_bars_other_than_those_it_was_trained_on(cli, small_dir, tmp_path):
    # another --data-dir: once with a training bar revised, once with a ticker too short to train
    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped")
    before = {f: (run / f).read_bytes() for f in os.listdir(run)}
    revised, short = tmp_path / "revised", tmp_path / "short"
    for d in (revised, short):
        d.mkdir()
        for f in small_dir.iterdir():
            (d / f.name).write_bytes(f.read_bytes())
    lines = (revised / "STOCKA.csv").read_text().splitlines()
    fields = lines[10].split(",")
    fields[4] = f"{float(fields[4]) * 1.01:.4f}"  # one close of the training split, 1 % higher
    lines[10] = ",".join(fields)
    (revised / "STOCKA.csv").write_text("\n".join(lines) + "\n")
    rows = (small_dir / "STOCKB.csv").read_text().splitlines()
    (short / "STOCKB.csv").write_text("\n".join([rows[0], *rows[-50:]]) + "\n")  # bars of the test split only
    res = cli("train", "--resume", run, "--data-dir", revised)
    line = assert_one_line_error(res, 1, "cannot resume", "training bars of STOCKA", "--data-dir")
    assert "STOCKB" not in line
    res = cli("train", "--resume", run, "--data-dir", short)
    assert_one_line_error(res, 1, "cannot resume", "trained on STOCKA, STOCKB", "give STOCKA enough")
    assert {f: (run / f).read_bytes() for f in os.listdir(run)} == before  # still resumable, untouched
    res = cli("train", "--resume", run, "--data-dir", small_dir, "-q")
    assert res.exit_code == 0, res.stderr
    assert run_meta(run)["status"] == "complete"


def test_resume_refuses_revised_validation_bars_but_takes_bars_appended_since(cli, small_dir, tmp_path):
    """A validation bar revised since the run stopped: its earlier epochs' validation losses
    were measured on the old bars and the best epoch would be chosen across both; the
    normalisation (fitted on the training split) did not see it, so the resume went on."""
    from forecaster.sources import read_csv_bars

    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped")
    before = {f: (run / f).read_bytes() for f in os.listdir(run)}
    meta = run_meta(run)
    val_start, test_start = meta["splits"]["val_start"], meta["splits"]["test_start"]
    data = tmp_path / "data"
    shutil.copytree(small_dir, data)
    bars = read_csv_bars(small_dir, "STOCKA")
    revised = bars.copy()
    day = revised.index[(revised.index >= val_start) & (revised.index < test_start)][10]
    revised.loc[day, ["open", "high", "low", "close"]] *= 1.10
    write_csv(revised, data / "STOCKA.csv")
    res = cli("train", "--resume", run, "--data-dir", data)
    assert_one_line_error(res, 1, "cannot resume", "the training or validation bars of STOCKA are not those")
    assert {f: (run / f).read_bytes() for f in os.listdir(run)} == before
    # a bar revised in the test split, and one appended since (a refreshed store): it goes on
    later = bars.copy()
    later.loc[later.index[-3], "close"] *= 1.01
    write_csv(pd.concat([later, later.iloc[[-1]].set_axis([later.index[-1] + pd.offsets.BDay()])]), data / "STOCKA.csv")
    res = cli("train", "--resume", run, "--data-dir", data, "-q")
    assert res.exit_code == 0, res.stderr
    assert run_meta(run)["status"] == "complete"


def test_resume_refuses_fewer_epochs_than_the_run_has_done(cli, small_dir, tmp_path):
    # run.json would record train.epochs = 1 beside two epochs trained
    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped", after=2)
    before = {f: (run / f).read_bytes() for f in os.listdir(run)}
    res = cli("train", "--resume", run, "--epochs", "1")
    line = assert_one_line_error(res, 1, "cannot resume", "--epochs 1", "2 epochs")
    assert "--epochs 2" in line  # the lowest budget it can go on with
    assert {f: (run / f).read_bytes() for f in os.listdir(run)} == before
    # as many epochs as it has done: nothing more to train, the run is finished as it stands
    res = cli("train", "--resume", run, "--epochs", "2", "-q")
    assert res.exit_code == 0, res.stderr
    meta = run_meta(run)
    assert meta["status"] == "complete" and meta["config"]["train"]["epochs"] == meta["metrics"]["epochs_run"] == 2


def test_a_resumed_run_counts_the_seconds_it_trained_before(cli, small_dir, tmp_path):
    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped")
    meta = run_meta(run)
    meta["metrics"]["train_seconds"] = 1000.0  # as if the first epochs had taken that long
    (run / "run.json").write_text(json.dumps(meta))
    res = cli("train", "--resume", run, "--json")
    assert res.exit_code == 0, res.stderr
    assert 1000 < json.loads(res.stdout)["train_seconds"] == run_meta(run)["metrics"]["train_seconds"] < 1100


def test_train_quiet_with_a_log_file_logs_where_the_run_went(cli, small_dir, tmp_path):
    """`-q --log-file` (or --json): the result line, where the run went and its best epoch, is
    in the log; stdout has nothing (or the document alone) and stderr does not repeat it."""
    log, run = tmp_path / "train.log", tmp_path / "r"
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", run, "-q", "--log-file", log)
    assert res.exit_code == 0 and res.stdout == "", res.stdout
    [line] = [ln for ln in log.read_text().splitlines() if " INFO run written to " in ln]
    assert f"run written to {run}  (best epoch " in line and "validation pinball" in line, line
    assert "run written" not in res.stderr
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", run, "--json", "--log-file", log)
    assert json.loads(res.stdout)["run_dir"] == str(run)
    assert len([ln for ln in log.read_text().splitlines() if " INFO run written to " in ln]) == 2


@pytest.mark.parametrize("meta", ['{"hello": 1}', '{"format_', "", '{"format_version": 3}'])
def test_train_refuses_a_folder_whose_run_json_is_not_a_runs(cli, small_dir, tmp_path, meta):
    """A run replaces its whole directory, so only a run is replaced: a folder holding a file
    that happens to be called run.json (not JSON, not a run's, cut short) and the user's other
    files is refused before training, as every other command refuses to read it as a run."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "run.json").write_text(meta)
    (folder / "notes.txt").write_text("keep me\n")
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", folder)
    assert_one_line_error(res, 1, f"{folder} is not a run directory", "run.json", "new or empty")
    assert "epoch" not in res.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "run.json"]
    assert (folder / "notes.txt").read_text() == "keep me\n" and (folder / "run.json").read_text() == meta


@pytest.mark.parametrize("name", ["a\tb", "line\nbreak", "x" * 201, ".."])
def test_train_refuses_a_run_name_that_cannot_name_a_folder_before_training(cli, small_dir, tmp_path, name):
    """The run's name (its folder's) names its forecasts' folder too: a tab, a newline, a name
    over 200 bytes or ``..`` is refused in one line before any epoch, not after them all."""
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", f"{tmp_path}/runs/{name}")
    assert_one_line_error(res, 1, "unusable run name", "plain folder name", "choose another run directory")
    assert "epoch" not in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_train_refuses_a_run_dir_that_holds_its_data_folder(cli, small_dir, tmp_path):
    """A run replaces its whole directory: bars kept in a folder inside an earlier run (or in the
    run's folder itself) would be deleted by the run trained on them."""
    run = tmp_path / "run"
    assert cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", run, "-q").exit_code == 0
    data = run / "bars"
    shutil.copytree(small_dir, data)
    before = sorted(p.name for p in data.iterdir())
    for data_dir in (data, run):
        if data_dir == run:
            shutil.copy(small_dir / "STOCKA.csv", run / "STOCKA.csv")
        res = cli("train", "--data-dir", data_dir, "-t", "STOCKA", *TINY, "--run-dir", run)
        assert_one_line_error(res, 1, str(data_dir), "is inside the run directory", "keep the data elsewhere")
        assert "epoch" not in res.stderr  # refused before training
    assert sorted(p.name for p in data.iterdir()) == before and (run / "STOCKA.csv").is_file()


def test_train_refuses_a_log_file_inside_the_run_dir_as_a_usage_error(cli, small_dir, tmp_path):
    """The run replaces its whole directory: a log written there would vanish with an earlier
    run, or make a new run's directory look like a folder of other files."""
    run = tmp_path / "run"
    assert cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", run, "-q").exit_code == 0
    before = {f: (run / f).read_bytes() for f in os.listdir(run)}
    # the run's folder spelt through another one (runs/a/../run) is the same folder
    (tmp_path / "a").mkdir()
    for target in (run, tmp_path / "new", tmp_path / "a" / ".." / "run"):
        res = cli(
            "train",
            "--data-dir",
            small_dir,
            "-t",
            "STOCKA",
            *TINY,
            "--run-dir",
            target,
            "--log-file",
            target / "train.log",
        )
        assert res.exit_code == 2, res.stderr
        assert "Usage" in res.stderr and "--log-file" in res.stderr and "write the log" in res.stderr
    assert {f: (run / f).read_bytes() for f in os.listdir(run)} == before and not (tmp_path / "new").exists()
    # beside the run, it is written and kept
    res = cli(
        "train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", run, "--log-file", tmp_path / "t.log"
    )
    assert res.exit_code == 0, res.stderr
    assert "epoch 1" in (tmp_path / "t.log").read_text()


def test_a_log_file_below_a_link_loop_is_one_error_line_not_a_traceback(cli, small_dir, tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    args = ["train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", tmp_path / "run"]
    res = cli(*args, "--log-file", tmp_path / "loop" / "t.log")
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    assert_one_line_error(res, 1, "cannot write the log file")


def test_train_refuses_a_log_file_inside_the_configs_run_dir_as_a_usage_error(cli, small_dir, tmp_path):
    """The same when the run directory comes from the config file: refused before the log is
    opened, so no folder is made there (one holding only a log would not be a run directory)."""
    run = tmp_path / "from-config"
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'run_dir = "{run.as_posix()}"\n')
    args = ["train", "--config", cfg, "--data-dir", small_dir, "-t", "STOCKA", *TINY]
    res = cli(*args, "--log-file", run / "logs" / "train.log")
    assert res.exit_code == 2, res.stderr
    assert "Usage" in res.stderr and "(the config's run_dir)" in res.stderr and "write the log" in res.stderr
    assert not run.exists()
    res = cli(*args, "--log-file", tmp_path / "train.log", "-q")  # beside it: trained, and the log kept
    assert res.exit_code == 0, res.stderr
    assert (run / "run.json").is_file() and "epoch 1" in (tmp_path / "train.log").read_text()


def test_a_config_that_does_not_validate_with_a_log_file_is_one_error_line_there_too(cli, small_dir, tmp_path):
    """With --log-file and no --run-dir, train reads the config for its run_dir before the log
    is set up (a log inside it is refused); a config that does not validate is then the command's
    own error, once the log is set up: one line on stderr and in the log, not a traceback."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[window]\nlookback = "long"\n')
    log = tmp_path / "train.log"
    res = cli("train", "--config", cfg, "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--log-file", log)
    line = assert_one_line_error(res, 1, "window.lookback")
    assert line.removeprefix("ERROR: ") in log.read_text()
    assert not (tmp_path / "cwd" / "runs").exists()


def test_resume_refuses_another_run_dir_as_a_usage_error(cli, small_dir, tmp_path):
    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped")
    before = {f: (run / f).read_bytes() for f in os.listdir(run)}
    res = cli("train", "--resume", run, "--run-dir", tmp_path / "runs" / "elsewhere")
    assert res.exit_code == 2
    assert "Usage" in res.stderr and "--run-dir" in res.stderr and "written back to its own directory" in res.stderr
    assert not (tmp_path / "runs" / "elsewhere").exists()
    assert {f: (run / f).read_bytes() for f in os.listdir(run)} == before  # still resumable, untouched
    # the run's own directory, however spelt, is no conflict
    (tmp_path / "a").mkdir()
    res = cli("train", "--resume", run, "--run-dir", tmp_path / "a" / ".." / "runs" / "stopped", "-q")
    assert res.exit_code == 0, res.stderr
    assert run_meta(run)["status"] == "complete"


def test_resume_says_why_a_run_cannot_be_resumed(cli, small_dir, tmp_path):
    # an interrupted run whose resume state was lost is not called complete
    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped")
    (run / "resume.safetensors").unlink()
    res = cli("train", "--resume", run)
    line = assert_one_line_error(res, 1, "was interrupted but cannot be resumed", "resume.safetensors")
    assert "complete" not in line and "without --resume" in line
    assert run_meta(run)["status"] == "interrupted"
    # a complete run is named as one, whatever flags come with it
    done = tmp_path / "runs" / "done"
    assert cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", done, "-q").exit_code == 0
    res = cli("train", "--resume", done, "--lr", "0.05")
    line = assert_one_line_error(res, 1, "nothing to resume: the run is complete")
    assert line.endswith("(--resume finishes an interrupted training); train a new run without --resume"), line


def test_an_interrupted_train_json_says_on_stdout_what_the_run_left(cli, small_dir, tmp_path, monkeypatch):
    """`kill` during `train --json`: exit 130, the line on stderr, and on stdout the keys of a
    finished train for the run saved, with resumable, interrupted and the line."""
    import signal

    from forecaster import training

    real = training.train

    def killed_in_epoch_1(cfg, *, on_epoch=None, **kw):
        return real(cfg, on_epoch=lambda rec: os.kill(os.getpid(), signal.SIGTERM), **kw)

    monkeypatch.setattr(training, "train", killed_in_epoch_1)
    run = tmp_path / "r"
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA,STOCKB", *TINY, "--run-dir", run, "--json")
    line = assert_one_line_error(res, 130, "training interrupted after epoch 1", "--resume")
    doc = json.loads(res.stdout)
    assert doc["interrupted"] is True and line == f"ERROR: {doc['message']}"
    assert doc["run_dir"] == str(run) and doc["name"] == "r" and doc["resumable"] is True
    assert doc["epochs_run"] == 1 and doc["best_epoch"] == 1 and doc["windows"] == run_meta(run)["windows"]
    assert run_meta(run)["status"] == "interrupted"


_KILLED_IN = """
import importlib, os, signal, sys
from forecaster.cli import main

module, name = importlib.import_module(sys.argv[1]), sys.argv[2]
real = getattr(module, name)

def killed(*args, **kwargs):  # `kill` arrives as train calls module.name
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)

setattr(module, name, killed)
sys.argv = ["forecaster", "train", *sys.argv[3:]]
main()
"""


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_sigterm_while_train_reads_the_data_exits_130_with_one_line(small_dir, tmp_path):
    """`kill` before the first epoch: exit 130 with one line saying nothing was written (and
    --json says so on stdout), not a process killed by the signal (143) without a word."""
    run = tmp_path / "r"
    args = ["--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", run, "--json"]
    res = run_script(_KILLED_IN, "forecaster.training", "load_training_data", *args, cwd=tmp_path)
    assert res.returncode == 130, (res.returncode, res.stderr)
    [line] = res.stderr.splitlines()
    assert line.startswith("ERROR: training interrupted before its first epoch"), line
    assert "nothing was written" in line and "run the same command again" in line, line
    doc = json.loads(res.stdout)
    assert doc["interrupted"] is True and doc["resumable"] is False and doc["run_dir"] == str(run)
    assert not run.exists()


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_sigterm_while_a_run_named_after_the_time_reads_its_data_names_no_folder(small_dir, tmp_path):
    """Without --run-dir the run's folder (named after the time) is made before the data are
    read and removed again when a stop comes before anything is written: the line and --json
    named that folder, gone by the time they were read. Now they name none, as a stop before
    the folder is made does."""
    args = ["--data-dir", small_dir, "-t", "STOCKA", *TINY, "--json"]
    res = run_script(_KILLED_IN, "forecaster.training", "load_training_data", *args, cwd=tmp_path)
    assert res.returncode == 130, (res.returncode, res.stderr)
    [line] = res.stderr.splitlines()
    said = "training interrupted before its first epoch, while the data were read: nothing was written; "
    assert line == f"ERROR: {said}run the same command again", line
    doc = json.loads(res.stdout)
    assert doc == {"run_dir": None, "resumable": False, "interrupted": True, "message": line[len("ERROR: ") :]}
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
@pytest.mark.parametrize(
    ("module", "stopped_in", "named", "said"),
    [
        # while the config is read, torch imported: before the data are read
        ("forecaster.config", "load_config", True, "while it started, before the data were read"),
        # as training checks its calendar, before a run named after the time has a folder
        ("forecaster.training", "check_calendar", False, "before its first epoch, as it started"),
    ],
)
def test_sigterm_while_train_starts_says_nothing_was_written_and_json_gives_the_result(
    small_dir, tmp_path, module, stopped_in, named, said
):
    """`kill` in train's first second or two, before the data are read: the line was the
    generic one ("the files it had written are whole") and --json's the error object, with
    no `resumable`. Now training's own, as a stop while the data are read gives them; with no
    --run-dir, no folder is named yet (`run_dir` null) and none is left."""
    run = tmp_path / "r"
    args = ["--data-dir", small_dir, "-t", "STOCKA", *TINY, "--json", *(["--run-dir", run] if named else [])]
    res = run_script(_KILLED_IN, module, stopped_in, *args, cwd=tmp_path)
    assert res.returncode == 130, (res.returncode, res.stderr)
    [line] = res.stderr.splitlines()
    assert line == f"ERROR: training interrupted {said}: nothing was written; run the same command again", line
    doc = json.loads(res.stdout)
    where = str(run) if named else None
    assert doc == {"run_dir": where, "resumable": False, "interrupted": True, "message": line[len("ERROR: ") :]}
    runs = tmp_path / "runs"
    assert not run.exists() and (not runs.exists() or not any(runs.iterdir()))


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
@pytest.mark.parametrize(
    "stopped_in,doing",
    [
        ("check_calendar", "as it started"),  # the calendar's library imported: before the run is named
        ("_resume_point", "while the data were read"),  # the run's checkpoint read
        ("file_lock", "while it waited for the run directory's lock"),  # --lock-timeout: a wait
        ("_Checkpoints", ""),  # the lock held, the epochs not begun
    ],
)
def test_sigterm_before_a_resumed_run_trains_says_it_stays_resumable(small_dir, tmp_path, stopped_in, doing):
    """`kill` of `train --resume` after the config was read and before the first epoch: the
    generic line ("the files it had written are whole") and the error object, which said
    neither that the run was left as it was nor how to resume it. Now training's own."""
    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped")
    before = {f: (run / f).read_bytes() for f in os.listdir(run)}
    res = run_script(_KILLED_IN, "forecaster.training", stopped_in, "--resume", run, "--json", cwd=tmp_path)
    assert res.returncode == 130, (res.returncode, res.stderr)
    [line] = res.stderr.splitlines()
    doing = f", {doing}" if doing else ""
    assert line == (
        f"ERROR: training interrupted before its first epoch{doing}: nothing was written to {run}; "
        f"continue with `forecaster train --resume {run}`"
    ), line
    doc = json.loads(res.stdout)
    assert doc["interrupted"] is True and doc["resumable"] is True and doc["message"] == line[len("ERROR: ") :]
    assert doc["run_dir"] == str(run) and doc["epochs_run"] == 1  # the run as it was, to resume
    assert {f: (run / f).read_bytes() for f in os.listdir(run)} == before


def test_a_stop_as_the_run_folder_is_made_is_trainings_own(cli, small_dir, tmp_path, monkeypatch):
    """A stop between the checks of tickers and calendar and the run's own stop handler (as the
    folder named after the time is made) met the command line's handler: the generic line ("the
    files it had written are whole") and --json's error object, not training's line that
    nothing was written. The KeyboardInterrupt is the one SIGTERM raises there."""
    from forecaster import training

    def stopped(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_reserve", stopped)
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--json")
    line = assert_one_line_error(res, 130)
    said = "training interrupted before its first epoch, as it started: nothing was written; run the same command again"
    assert line == f"ERROR: {said}", line
    assert json.loads(res.stdout) == {"run_dir": None, "resumable": False, "interrupted": True, "message": said}
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_a_stop_as_the_progress_bar_is_made_is_trainings_own(cli, small_dir, tmp_path, monkeypatch):
    """The progress bar (its import, on a terminal) was made after the stop of a starting train
    was training's own and before training's handler: a stop then gave the generic line and
    --json's error object. Now the line that nothing was written, as a stop a moment before."""
    from contextlib import contextmanager

    from forecaster import cli as cli_module

    @contextmanager
    def stopped(show, epochs):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(cli_module, "_progress", stopped)
    run = tmp_path / "r"
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--run-dir", run, "--json")
    line = assert_one_line_error(res, 130)
    said = "training interrupted while it started, before the data were read: nothing was written; "
    assert line == f"ERROR: {said}run the same command again", line
    doc = json.loads(res.stdout)
    assert doc == {"run_dir": str(run), "resumable": False, "interrupted": True, "message": line[len("ERROR: ") :]}
    assert not run.exists()


_KILLED_TWICE = """
import os, signal, sys
import forecaster.cli as cli
import forecaster.training as training
from forecaster.cli import main

real_train, real_failed = training.train, cli._failed

def killed_in_epoch_1(cfg, *, on_epoch=None, **kw):
    return real_train(cfg, on_epoch=lambda rec: os.kill(os.getpid(), signal.SIGTERM), **kw)

def failed_as_a_second_sigterm_arrives(*args, **kwargs):  # torchrun's, after a stop
    os.kill(os.getpid(), signal.SIGTERM)
    return real_failed(*args, **kwargs)

training.train, cli._failed = killed_in_epoch_1, failed_as_a_second_sigterm_arrives
sys.argv = ["forecaster", "train", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_a_second_signal_as_the_interruption_is_reported_does_not_swallow_its_line(small_dir, tmp_path):
    """A stopped training saved its run, then a second SIGTERM (torchrun sends one to every
    process of a job once one has stopped) arrived as the line was printed: it ended the
    process with 130 and no line at all, so a distributed job that lost a process sometimes
    said nothing of the run it saved. Now the line is printed."""
    run = tmp_path / "r"
    args = ["--data-dir", small_dir, "-t", "STOCKA,STOCKB", *TINY, "--run-dir", run]
    res = run_script(_KILLED_TWICE, *args, cwd=tmp_path)
    assert res.returncode == 130, (res.returncode, res.stderr)
    [line] = res.stderr.splitlines()
    assert line.startswith("ERROR: training interrupted after epoch 1") and "--resume" in line, line
    assert run_meta(run)["status"] == "interrupted" and (run / "resume.safetensors").is_file()


_FULL_DISK = """
import resource, sys
from forecaster.cli import main

resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # files of at most 4 kB: the weights do not fit
sys.argv = ["forecaster", "train", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_a_run_that_cannot_be_written_is_one_line_and_leaves_nothing(small_dir, tmp_path):
    """A full disk as the run is written: safetensors' own error was an 'unexpected error'
    naming neither the run nor what was left."""
    run = tmp_path / "runs" / "r"
    args = ["--data-dir", small_dir, "-t", "STOCKA,STOCKB", *TINY, "--run-dir", run]
    res = run_script(_FULL_DISK, *args, "-q", cwd=tmp_path)
    assert res.returncode == 1, (res.returncode, res.stderr)
    # (matplotlib, imported by arch, may say that its font cache could not be saved either)
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
    assert line.startswith(f"ERROR: cannot write the run {run}: File too large; nothing there was changed"), line
    assert not run.exists() and not [p for p in run.parent.iterdir() if not p.name.endswith(".lock")]


def test_a_stop_after_the_last_epoch_keeps_a_resumable_run(cli, small_dir, tmp_path, monkeypatch):
    """`kill` while the trained model is calibrated and written: the epochs are kept in a
    resumable run (exit 130), which --resume finishes without training again."""
    import signal

    from forecaster import training

    real, calls = training.calibrate, []

    def killed_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "calibrate", killed_once)
    run = tmp_path / "r"
    args = ["--data-dir", small_dir, "-t", "STOCKA,STOCKB", *TINY, "--epochs", "2", "--run-dir", run]
    res = cli("train", *args, "--json")
    assert_one_line_error(res, 130, "training interrupted after epoch 2", "--resume")
    doc = json.loads(res.stdout)
    assert doc["resumable"] is True and doc["epochs_run"] == 2
    assert run_meta(run)["status"] == "interrupted" and (run / "resume.safetensors").is_file()
    trained = [row["train_loss"] for row in _history(run)]
    res = cli("train", "--resume", run, "-q")
    assert res.exit_code == 0, res.stderr
    assert run_meta(run)["status"] == "complete" and not (run / "resume.safetensors").exists()
    assert [row["train_loss"] for row in _history(run)] == trained


def test_a_run_stopped_inside_its_first_epoch_resumes_from_its_start(cli, small_dir, tmp_path):
    """Ctrl-C after a few steps of epoch 1: the saved state is the one before the epoch, so the
    resumed run trains exactly the epochs an uninterrupted run does."""
    from support import tiny_overrides

    from forecaster.config import load_config
    from forecaster.training import Interrupted, train

    cfg = load_config(None, tiny_overrides(small_dir))
    train(cfg, run_dir=tmp_path / "whole")
    steps = []

    def stop_at_step_3(n):
        steps.append(n)
        if len(steps) == 3:
            raise KeyboardInterrupt

    run = tmp_path / "stopped"
    with pytest.raises(Interrupted, match="training interrupted in its first epoch; a resumable run was saved"):
        train(cfg, run_dir=run, on_batch=stop_at_step_3)
    res = cli("train", "--resume", run, "-q")
    assert res.exit_code == 0, res.stderr
    losses = [[row[k] for k in ("epoch", "train_loss", "val_loss", "grad_norm")] for row in _history(run)]
    assert losses == [
        [row[k] for k in ("epoch", "train_loss", "val_loss", "grad_norm")] for row in _history(tmp_path / "whole")
    ]


def test_resume_refuses_an_epoch_history_that_does_not_match_the_saved_state(cli, small_dir, tmp_path):
    """A history.csv cut short (or lost) beside a resume state saved after epoch 2: refused,
    naming the file, where it was continued into a run whose history skipped epochs."""
    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped", after=2)
    lines = (run / "history.csv").read_text().splitlines(keepends=True)
    (run / "history.csv").write_text("".join(lines[:2]))  # the header and epoch 1
    before = {f: (run / f).read_bytes() for f in os.listdir(run)}
    res = cli("train", "--resume", run)
    assert_one_line_error(res, 1, "history.csv does not hold epochs 1 to 2", "cannot be resumed")
    assert {f: (run / f).read_bytes() for f in os.listdir(run)} == before
    (run / "history.csv").unlink()
    res = cli("train", "--resume", run)
    line = assert_one_line_error(res, 1, "history.csv is not a readable epoch history", "cannot be resumed")
    assert "resume.safetensors" not in line


@pytest.mark.parametrize("split", ["val", "test"])
def test_train_with_fewer_split_days_than_the_horizon_says_so(cli, small_dir, tmp_path, split):
    """--val-days or --test-days below --horizon leaves that split no window whatever the data
    (a test split without one leaves evaluate nothing to score): refused before the data are
    read, the error saying to lengthen the split, not to shorten it."""
    run = tmp_path / "r"
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, f"--{split}-days", "2", "--run-dir", run)
    line = assert_one_line_error(res, 1, f"window.{split}_days (2) must be at least window.horizon (3)")
    assert "shorten" not in line and line.endswith(f"; use a {split}_days of 3 or more (--{split}-days)")
    assert not run.exists()


def test_train_bf16_without_cuda_warns_that_it_trains_in_fp32(cli, small_dir, tmp_path):
    """bf16 is autocast on CUDA only: on the CPU the run trains in fp32, and says so."""
    res = cli("train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--precision", "bf16", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("WARNING:")]
    assert warnings == ["WARNING: --precision bf16 is autocast on CUDA only: training on cpu runs in fp32"]


@pytest.mark.parametrize(("batch", "per", "origins"), [(100, 3, 96), (16, 1, 32)])
def test_a_forking_batch_that_is_not_whole_chunks_says_what_a_step_takes(cli, small_dir, tmp_path, batch, per, origins):
    """A forking step takes whole chunks: --batch-size 16 trained 32 origins a step, and 100 took
    96, without a word, where the batch is said to count the origins of a step."""
    args = ["train", "--data-dir", small_dir, "-t", "STOCKA", *TINY, "--batch-size", str(batch)]
    res = cli(*args, "--run-dir", tmp_path / "r")
    assert res.exit_code == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("WARNING:")]
    assert warnings == [
        f"WARNING: --batch-size {batch} is not a multiple of --chunk 32: each forking step takes {per} whole "
        f"chunk(s), {origins} forecast origins"
    ]
    res = cli(*args, "--train-mode", "window", "--run-dir", tmp_path / "w")  # a window step takes the batch
    assert res.exit_code == 0 and "WARNING" not in res.stderr, res.stderr


@pytest.mark.parametrize(
    ("text", "why"), [("Date,Open,High,Low,Close,Volume\n", "has a header but no rows"), ("", "the file is empty")]
)
def test_train_skips_a_ticker_whose_file_has_no_rows(cli, small_dir, tmp_path, text, why):
    """A CSV with its header and no row yet (a ticker just added to a folder), or with nothing
    at all yet, is a ticker without bars: skipped with a warning, the others trained (it stopped
    the whole training; the empty file still did, where the header alone was skipped)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "STOCKB.csv").write_bytes((small_dir / "STOCKB.csv").read_bytes())
    (data / "NEW.csv").write_text(text)
    run = tmp_path / "r"
    res = cli("train", "--data-dir", data, "-t", "STOCKB", "NEW", *TINY, "--run-dir", run)
    assert res.exit_code == 0, res.stderr
    assert f"WARNING: skipping NEW: {data / 'NEW.csv'}: {why}" in res.stderr
    assert set(run_meta(run)["tickers"]) == {"STOCKB"}


def test_the_progress_bar_left_on_screen_shows_the_last_epoch_trained(monkeypatch):
    """On a terminal the bar reads `epoch N+1` while epoch N+1 trains; once training stops,
    and while the run is finished after it (calibration, baselines: seconds to a minute), it
    must read the last epoch trained, full, not an epoch that never ran."""
    import io

    import rich.progress
    from rich.console import Console

    from forecaster import cli as cli_module

    console = Console(file=io.StringIO(), force_terminal=True, width=100, no_color=True)
    monkeypatch.setattr(cli_module, "_stderr_console", lambda: console)
    bars = []

    class Seen(rich.progress.Progress):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append(self)

    monkeypatch.setattr(rich.progress, "Progress", Seen)

    def shown():
        console.file = io.StringIO()
        bars[0].refresh()
        return console.file.getvalue()

    with cli_module._progress(True, 5) as (on_epoch, on_batch):
        on_batch(32)
        assert "epoch 1" in shown()
        on_batch(32)
        on_epoch(_record(1))
        on_batch(32)  # epoch 2 trains
        assert "epoch 2" in shown()
        on_batch(32)
        on_epoch(_record(2))
        finishing = shown()  # early stopping, or the cap: the run is being finished
        assert "epoch 2" in finishing and "epoch 3" not in finishing, finishing
        assert "val 0.6000" in finishing
    assert "epoch 3" not in shown()


def _record(epoch: int):
    from types import SimpleNamespace

    return SimpleNamespace(epoch=epoch, samples=64, train_loss=0.5, val_loss=0.6, grad_norm=0.1, lr=1e-3, seconds=0.2)


def test_the_log_file_has_every_epoch_line_when_the_progress_bar_shows_them(monkeypatch, tmp_path, capsys):
    """On a terminal the bar shows the epochs on stderr; the log file kept none of them, so a
    log of an interactive training had no record of it. Stderr still shows the bar alone."""
    import io
    import logging

    from rich.console import Console

    from forecaster import cli as cli_module

    monkeypatch.setattr(cli_module, "_stderr_console", lambda: Console(file=io.StringIO(), force_terminal=True))
    logger = logging.getLogger("forecaster")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        cli_module.setup_logging(False, tmp_path / "train.log")
        with cli_module._progress(True, 5) as (on_epoch, on_batch):
            for epoch in (1, 2):
                on_batch(64)
                on_epoch(_record(epoch))
    finally:
        for h in logger.handlers:
            h.close()
        logger.handlers[:], logger.level, logger.propagate = saved
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert [line.split(" INFO ", 1)[1] for line in lines] == [
        f"epoch {n}: train 0.5000  val 0.6000  grad-norm 0.100  lr 0.001  0.2s" for n in (1, 2)
    ]
    assert "epoch" not in capsys.readouterr().err


def _on_a_terminal(
    args, env_extra: dict[str, str | None], timeout: float = 120, escapes: list[str] | None = None
) -> tuple[int, list[str]]:
    """Run the installed command with stderr on a pseudo-terminal (``env_extra``'s variables set,
    or unset where None); its exit code and the lines a terminal would show (after each carriage
    return, escape sequences left out; given a list as ``escapes``, those sequences are added to it)."""
    import re

    from support import cli_env, stderr_on_a_terminal

    env = {k: v for k, v in cli_env(**{"COLUMNS": "150", **env_extra}).items() if v is not None}
    code, raw, _ = stderr_on_a_terminal(args, env, timeout=timeout)
    text = raw.decode("utf-8", "replace")
    if escapes is not None:
        escapes += re.findall(r"\x1b\[[0-9;?]*[A-Za-z]", text)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return code, [line.rstrip("\r").split("\r")[-1] for line in text.split("\n")]  # the tty's "\r\n"


def test_log_lines_during_the_progress_bar_have_lines_of_their_own(small_dir, tmp_path):
    """The log went to stderr as it was before the bar was drawn: its lines were appended to
    the bar's line ("... 0:00:01INFO: early stop at epoch 3") and stayed glued in the scrollback."""
    args = ["train", *TINY, "--data-dir", small_dir, "-t", "STOCKA,STOCKB", "--epochs", "40", "--patience", "1"]
    args += ["--run-dir", tmp_path / "r"]
    code, lines = _on_a_terminal(args, {"TERM": "xterm-256color"})
    assert code == 0, lines
    stopped = [line for line in lines if "early stop at epoch" in line]
    assert len(stopped) == 1 and stopped[0].startswith("INFO: early stop at epoch"), lines
    assert any(line.startswith("epoch ") and "━" in line for line in lines), lines  # the bar was drawn


def test_a_dumb_terminal_shows_the_epochs_as_lines(small_dir, tmp_path):
    """On TERM=dumb rich draws no moving bar: nothing showed until the end, when the bar was
    drawn once. The epochs' lines are shown instead, as when stderr is not a terminal."""
    args = ["train", *TINY, "--data-dir", small_dir, "-t", "STOCKA,STOCKB", "--epochs", "3"]
    code, lines = _on_a_terminal([*args, "--run-dir", tmp_path / "r"], {"TERM": "dumb"})
    assert code == 0, lines
    assert [line[: len("INFO: epoch 1:")] for line in lines if line.startswith("INFO: epoch ")] == [
        f"INFO: epoch {n}:" for n in (1, 2, 3)
    ], lines
    assert not any("━" in line for line in lines), lines


def test_on_a_narrow_terminal_the_bar_and_the_log_lines_above_it_keep_their_figures_and_paths_whole(
    small_dir, tmp_path
):
    """On a phone's 40 columns rich cut the bar's elapsed time to "0:0…", and broke a warning
    printed above the bar at the 40th column, its path in two pieces that could not be pasted
    back. The bar itself is left out where it does not fit; a log line is one line, which the
    terminal wraps."""
    import re

    data = tmp_path / "daily-bars-of-the-two-stocks-in-a-folder-with-a-long-name"
    shutil.copytree(small_dir, data)
    bars = data / "STOCKB.csv"
    rows = bars.read_text().splitlines()
    rows[5], rows[6] = rows[6], rows[5]  # two dates out of order: a warning names the file
    bars.write_text("\n".join(rows) + "\n")
    args = ["train", *TINY, "--data-dir", data, "-t", "STOCKA,STOCKB", "--epochs", "3", "--run-dir", tmp_path / "r"]
    code, lines = _on_a_terminal(args, {"TERM": "xterm-256color", "COLUMNS": "40"})
    assert code == 0, lines
    assert any(line.startswith(f"WARNING: STOCKB: dates were out of order in {bars}; sorted ") for line in lines), lines
    assert not any("…" in line for line in lines), lines
    bar = [line.rstrip() for line in lines if line.startswith("epoch ")]
    assert bar and re.fullmatch(r"epoch 3 train \d\.\d{4} val \d\.\d{4} \d:\d\d:\d\d", bar[-1]), lines


@pytest.mark.parametrize("value", ["1", None, ""])
def test_the_progress_bar_on_a_terminal_is_coloured_unless_no_color_is_set(small_dir, tmp_path, value):
    """NO_COLOR is honoured on a terminal too: the bar is drawn without a colour, as the tables
    are. Set empty, it asks for nothing (https://no-color.org), as rich reads it too."""
    no_color = bool(value)
    args = ["train", *TINY, "--data-dir", small_dir, "-t", "STOCKA,STOCKB", "--run-dir", tmp_path / "r"]
    escapes: list[str] = []
    env = {"TERM": "xterm-256color", "NO_COLOR": value}
    code, lines = _on_a_terminal(args, env, escapes=escapes)
    assert code == 0, lines
    assert any(line.startswith("epoch ") and "━" in line for line in lines), lines  # the bar was drawn
    colours = [e for e in escapes if e.endswith("m") and any(p.startswith(("3", "9")) for p in e[2:-1].split(";"))]
    assert (colours == []) is no_color, escapes
