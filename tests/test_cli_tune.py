"""`forecaster tune`: its options, the files it writes, best.toml as a train config, the final
run and its origin, and silence without a terminal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import typer.main
from support import (
    SLOW_TEST_TIMEOUT_S,
    assert_one_line_error,
    axes_drawn,
    csv_folder_with_a_bar_on,
    run_forecaster_minding_file_modes,
    run_meta,
    run_script,
    study_storage,
)

from forecaster.cli import app
from forecaster.config import active_dims, load_config
from forecaster.tuning import search_dims

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _config(path, small_dir):
    path.write_text(
        "[data]\n"
        'source = "csv"\n'
        f'data_dir = "{small_dir.as_posix()}"\n'
        'tickers = ["STOCKA", "STOCKB"]\n'
        "[window]\nhorizon = 3\nval_days = 100\ntest_days = 100\n"
        "[train]\nseed = 0\n"
        '[tune.space]\nlookback = [10, 30]\nnum_layers = [1, 2]\nbatch_size = [64, 128]\ncell = ["gru", "rnn"]\n'
    )
    return path


@pytest.mark.parametrize("run_dir", [None, "runs/best"])
def test_tune_train_best_refuses_a_log_file_inside_the_best_runs_folder_before_the_search(
    cli, small_dir, tmp_path, run_dir
):
    """The best run replaces its whole folder, as train's does: the log was deleted with it (or,
    for a new folder, made it look like a folder of other files after the whole search)."""
    conf = _config(tmp_path / "tune.toml", small_dir)
    best = Path(run_dir or "runs/s-best")
    args = ["tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "s", "--train-best"]
    res = cli(*args, *(["--run-dir", run_dir] if run_dir else []), "--log-file", best / "tune.log")
    assert res.exit_code == 2, res.stderr
    assert "--log-file" in res.stderr and "where --train-best writes the best run" in res.stderr
    assert not (tmp_path / "cwd" / "runs").exists()  # no study, no log, no folder


def test_tune_train_best_with_a_log_file_and_a_config_that_does_not_validate_is_one_error_line_there_too(
    cli, small_dir, tmp_path
):
    """--train-best with --log-file reads the config for the best run's folder before the log is
    set up (a log inside it is refused); a config that does not validate is then the command's
    own error, once the log is set up: one line on stderr and in the log, not a traceback."""
    conf = _config(tmp_path / "tune.toml", small_dir)
    conf.write_text(conf.read_text() + '[tune]\ntrials = "many"\n')
    log = tmp_path / "tune.log"
    res = cli("tune", "--config", conf, "--epochs", "1", "--study", "s", "--train-best", "--log-file", log)
    line = assert_one_line_error(res, 1, "tune.trials")
    assert line.removeprefix("ERROR: ") in log.read_text()
    assert not (tmp_path / "cwd" / "runs").exists()


def test_tune_writes_its_results_and_the_best_config_trains(cli, small_dir, tmp_path):
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = cli(
        "tune",
        "--config",
        conf,
        "--trials",
        "2",
        "--epochs",
        "1",
        "--hidden-size",
        "8",
        "--study",
        "s",
        "--train-best",
        "--run-dir",
        "runs/best",
    )
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""  # no terminal: no progress, no per-trial lines
    out = tmp_path / "cwd" / "runs" / "tune" / "s"
    assert (tmp_path / "cwd" / "runs" / "tune" / "s.db").is_file()
    trials = pd.read_csv(out / "trials.csv")
    searched = [d.name for d, _ in search_dims(load_config(conf), fixed={"model.hidden_size"})]
    assert list(trials.columns) == ["number", "state", "value", *searched, "seconds"]
    assert {"cell", "lookback", "num_layers", "dropout", "lr", "batch_size"} <= set(searched)
    assert list(trials["number"]) == [0, 1] and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert "hidden_size" not in trials.columns  # fixed by the flag: not searched
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = trials.loc[trials["value"].idxmin()]
    assert f"best trial {best['number']}" in res.stdout

    # best.toml is a complete config that `train` takes, and trains the best trial again
    cfg = tomllib.loads((out / "best.toml").read_text())
    assert cfg["model"]["hidden_size"] == 8 and cfg["train"]["epochs"] == 1
    assert cfg["model"]["cell"] == best["cell"] and cfg["window"]["lookback"] == best["lookback"]
    res = cli("train", "--config", out / "best.toml", "--run-dir", "runs/again", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["best_val_loss"] == pytest.approx(best["value"], rel=1e-9)

    # --train-best trained the same configuration, and the run says where it came from
    final = json.loads((tmp_path / "cwd" / "runs" / "best" / "run.json").read_text())
    assert final["metrics"]["best_val_loss"] == pytest.approx(best["value"], rel=1e-9)
    assert final["origin"]["study"] == "s" and final["origin"]["trial"] == best["number"]
    res = cli("info", "runs/best")
    assert res.exit_code == 0, res.stderr
    assert f"origin     tuning study s, trial {best['number']}" in res.stdout


def test_train_best_and_best_toml_take_this_commands_data_folder_and_threads(cli, small_dir, tmp_path):
    """The best trial ran before the data folder moved (or on another machine of the study):
    its recorded folder, device and threads are that process's, and --train-best failed after
    the whole search; best.toml and the run take this command's own."""
    first = tmp_path / "first"
    shutil.copytree(small_dir, first)
    conf = _config(tmp_path / "tune.toml", first)
    common = ["tune", "--config", conf, "--epochs", "1", "--study", "s", "--trials", "1"]
    assert cli(*common, "-q").exit_code == 0
    moved = first.rename(tmp_path / "moved")
    # a learning rate that diverges: the best trial stays the one that read the old folder
    res = cli(*common, "--lr", "10", "--data-dir", moved, "--threads", "2", "--train-best", "--run-dir", "runs/b")
    assert res.exit_code == 0, res.stderr
    trials = pd.read_csv(tmp_path / "cwd" / "runs" / "tune" / "s" / "trials.csv")
    assert trials.loc[trials["value"].idxmin(), "number"] == 0
    best = tomllib.loads((tmp_path / "cwd" / "runs" / "tune" / "s" / "best.toml").read_text())
    assert Path(best["data"]["data_dir"]) == moved and best["train"]["threads"] == 2
    run = json.loads((tmp_path / "cwd" / "runs" / "b" / "run.json").read_text())
    assert Path(run["config"]["data"]["data_dir"]) == moved and run["origin"]["trial"] == 0


def test_the_best_trial_line_gives_a_value_fixed_by_a_flag_when_it_ran(cli, small_dir, tmp_path):
    """Trial 0 ran with the cell fixed by a flag, trial 1 with the hidden size: whichever is
    best, its line gives every parameter trials.csv (and best.toml) gives it."""
    conf = _config(tmp_path / "tune.toml", small_dir)
    common = ["tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "s"]
    assert cli(*common, "--model", "rnn", "-q").exit_code == 0
    res = cli(*common, "--hidden-size", "6")
    assert res.exit_code == 0, res.stderr
    trials = pd.read_csv(tmp_path / "cwd" / "runs" / "tune" / "s" / "trials.csv")
    best = trials.loc[trials["value"].idxmin()]
    params = [c for c in trials.columns if c not in ("number", "state", "value", "seconds")]
    assert {"cell", "hidden_size"} <= set(params)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(f"best trial {best['number']}:"))
    fixed = "cell rnn" if best["number"] == 0 else "hidden_size 6"
    assert fixed in line and all(f"{p} " in line for p in params), line


@pytest.mark.parametrize(
    "sig,stopped_in",
    [pytest.param(signal.SIGINT, 1, id="ctrl-c-in-trial-1"), pytest.param(signal.SIGTERM, 0, id="kill-in-trial-0")],
)
def test_an_interrupted_tune_says_what_it_kept_and_the_same_command_goes_on(
    cli, small_dir, tmp_path, monkeypatch, sig, stopped_in
):
    from forecaster import tuning

    real = tuning.PruningHook.__call__

    def signalled(self, rec):  # Ctrl-C or `kill` while a trial trains
        real(self, rec)
        if self.trial.number == stopped_in:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(tuning.PruningHook, "__call__", signalled)
    conf = _config(tmp_path / "tune.toml", small_dir)
    command = ["tune", "--config", conf, "--epochs", "1", "--study", "s"]
    res = cli(*command, "--trials", "3")
    line = assert_one_line_error(res, 130, "tuning interrupted", "study s", "s.db", "the same command")
    out = tmp_path / "cwd" / "runs" / "tune" / "s"
    written = sorted(p.name for p in out.iterdir())
    # best.toml only once a trial has completed; the message names what is there, and no more
    assert written == (["best.toml", "history.png", "trials.csv"] if stopped_in else ["history.png", "trials.csv"])
    assert all(f"runs/tune/s/{name}" in line for name in written) and ("best.toml" in line) == bool(stopped_in)
    assert ("1 completed trial" if stopped_in else "no completed trial") in line
    # the same command goes on with the study: the interrupted trial is failed, the counts add up
    monkeypatch.setattr(tuning.PruningHook, "__call__", real)
    res = cli(*command, "--trials", "1")
    assert res.exit_code == 0, res.stderr
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["number"]) == list(range(stopped_in + 2))
    assert trials["state"].iloc[stopped_in] == "FAIL" and trials["state"].iloc[-1] in ("COMPLETE", "PRUNED")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_tune_writes_its_results_lets_them_be_written_and_says_what_was_kept(
    cli, small_dir, tmp_path, monkeypatch, sig
):
    """Ctrl-C or `kill` after the last trial, while the results are written: the write went
    unfinished (no history.png) and the line was the generic one, with --json's error object
    in place of the result. The results are written whole now, then the search stops as an
    interrupted one does."""
    from forecaster import plots

    real = plots.plot_study

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(plots, "plot_study", signalled)
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = cli("tune", "--config", conf, "--epochs", "1", "--study", "s", "--trials", "1", "--json")
    line = assert_one_line_error(res, 130, "tuning interrupted", "1 completed trial")
    doc = json.loads(res.stdout)
    assert doc["interrupted"] is True and line == f"ERROR: {doc['message']}"
    out = tmp_path / "cwd" / "runs" / "tune" / "s"
    assert sorted(p.name for p in out.iterdir()) == ["best.toml", "history.png", "trials.csv"]
    assert len(pd.read_csv(out / "trials.csv")) == 1


def test_an_interrupted_tune_json_says_on_stdout_what_the_study_keeps(cli, small_dir, tmp_path, monkeypatch):
    """`kill` in trial 1 of `tune --json`: exit 130, the line on stderr, and on stdout the
    result a script reads, saying the same as the line."""
    from forecaster import tuning

    real = tuning.PruningHook.__call__

    def signalled(self, rec):
        real(self, rec)
        if self.trial.number == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(tuning.PruningHook, "__call__", signalled)
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = cli("tune", "--config", conf, "--epochs", "1", "--study", "s", "--trials", "3", "--json")
    line = assert_one_line_error(res, 130, "tuning interrupted", "1 completed trial")
    doc = json.loads(res.stdout)
    assert doc["interrupted"] is True and line == f"ERROR: {doc['message']}"
    assert doc["study"] == "s" and doc["added"] == 2 and doc["run_dir"] is None
    assert doc["trials"] == {"complete": 1, "pruned": 0, "failed": 1, "running": 0}
    trials = pd.read_csv(tmp_path / "cwd" / "runs" / "tune" / "s" / "trials.csv")
    assert doc["best"]["number"] == 0 and doc["best"]["value"] == pytest.approx(trials["value"].iloc[0])
    assert sorted(doc["files"]) == ["best", "history", "trials"]
    assert all((tmp_path / "cwd" / path).is_file() and path in line for path in doc["files"].values())


def test_an_interrupted_train_best_json_gives_the_study_and_the_resumable_run(cli, small_dir, tmp_path, monkeypatch):
    """`kill` while --train-best trains the best configuration: the search is whole, and
    --json says so, with the run saved for `train --resume`."""
    from forecaster import tuning

    real = tuning.train

    def killed_in_the_final_run(cfg, *, run_dir, on_epoch=None, **kw):
        if "forecaster-trial-" in str(run_dir):  # a trial of the search trains as it would
            return real(cfg, run_dir=run_dir, on_epoch=on_epoch, **kw)
        return real(cfg, run_dir=run_dir, on_epoch=lambda rec: os.kill(os.getpid(), signal.SIGTERM), **kw)

    monkeypatch.setattr(tuning, "train", killed_in_the_final_run)
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = cli("tune", "--config", conf, "--epochs", "2", "--study", "s", "--trials", "1", "--train-best", "--json")
    line = assert_one_line_error(res, 130, "training interrupted", "runs/s-best", "--resume")
    doc = json.loads(res.stdout)
    assert doc["interrupted"] is True and line == f"ERROR: {doc['message']}"
    assert doc["trials"]["complete"] == 1 and doc["best"]["number"] == 0
    assert doc["run_dir"] == "runs/s-best"
    run = tmp_path / "cwd" / "runs" / "s-best"
    assert run_meta(run)["status"] != "complete"
    # the run saved to resume names the study, and keeps it once resumed (it lost it: no origin)
    assert (run_meta(run)["origin"]["study"], run_meta(run)["origin"]["trial"]) == ("s", 0)
    monkeypatch.setattr(tuning, "train", real)
    res = cli("train", "--resume", "runs/s-best", "-q")
    assert res.exit_code == 0, res.stderr
    meta = run_meta(run)
    assert meta["status"] == "complete" and (meta["origin"]["study"], meta["origin"]["trial"]) == ("s", 0)
    assert "origin     tuning study s, trial 0 " in cli("info", "runs/s-best").stdout


def test_tune_refuses_a_bad_space_with_one_line_and_exit_1(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[tune.space]\nlookbak = [10, 20]\n")
    res = cli("tune", "--config", bad, "--tickers", "A")
    assert res.exit_code == 1
    assert "tune.space.lookbak: unknown key" in res.stderr and res.stderr.count("\n") == 1


def test_tune_refuses_a_space_with_nothing_left_to_search_before_the_study(cli, small_dir, tmp_path):
    """Every dimension of [tune.space] empty but one, and that one fixed by its flag: one line,
    exit 1, and no study nor results folder made for a search of nothing."""
    conf = _config(tmp_path / "tune.toml", small_dir)
    empty = "".join(f"{d.name} = []\n" for d in active_dims() if d.name != "lr")
    conf.write_text(conf.read_text().split("[tune.space]")[0] + "[tune.space]\n" + empty)
    res = cli("tune", "--config", conf, "--lr", "0.001", "--trials", "1", "--study", "s")
    assert res.exit_code == 1, res.stderr
    assert "nothing to search: every dimension is fixed or empty in [tune.space]" in res.stderr
    assert res.stderr.count("\n") == 1
    assert not (tmp_path / "cwd" / "runs").exists()


def test_tune_train_best_refuses_a_run_dir_holding_other_files_before_the_search(cli, small_dir, tmp_path):
    conf = _config(tmp_path / "tune.toml", small_dir)
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("keep me\n")
    res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--train-best", "--run-dir", folder)
    assert res.exit_code == 1
    assert "is not a run directory" in res.stderr and res.stderr.count("\n") == 1
    assert [p.name for p in folder.iterdir()] == ["todo.txt"]
    assert not (tmp_path / "cwd" / "runs" / "tune").exists()  # no trial was run


def test_tune_refuses_a_ticker_with_a_bar_dated_after_today_before_the_search(cli, small_dir, tmp_path):
    """As train does: a mistyped year (2204-07-01) is named with its file, and no trial is run."""
    data = csv_folder_with_a_bar_on("2204-07-01", small_dir, tmp_path / "data", "STOCKA")
    conf = _config(tmp_path / "tune.toml", data)
    res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1")
    assert_one_line_error(res, 1, "STOCKA: 1 bar(s) dated after today, from 2204-07-01", f"in {data / 'STOCKA.csv'}")
    assert not (tmp_path / "cwd" / "runs").exists()


@pytest.mark.parametrize(
    "url,shown",
    [
        ("runs/tune/x.db", "Could not parse"),  # a path, not a URL
        ("sqlite://x.db", "Invalid SQLite URL"),  # two slashes, not three
        ("postgres://u:secret@db/optuna", "sqlalchemy.dialects:postgres"),  # postgresql:// is the name
    ],
)
def test_tune_refuses_a_bad_storage_url_with_one_line_and_exit_1(cli, small_dir, tmp_path, url, shown):
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--storage", url)
    assert_one_line_error(res, 1, "unusable storage URL", shown, "expected journal:FILE, sqlite:///FILE")
    assert "secret" not in res.stderr
    assert not (tmp_path / "cwd" / "runs").exists()


@pytest.mark.parametrize(
    "name,content,shown",
    [
        ("default.db", b"not a database\n", "(file is not a database)"),  # the study's own file, damaged
        ("study.log", b"not a journal\n", "(Expecting value"),
    ],
)
def test_tune_refuses_a_storage_file_that_holds_no_study_with_one_line_and_exit_1(
    cli, small_dir, tmp_path, name, content, shown
):
    conf = _config(tmp_path / "tune.toml", small_dir)
    store = tmp_path / "cwd" / "runs" / "tune" / name
    store.parent.mkdir(parents=True)
    store.write_bytes(content)
    storage = [] if name == "default.db" else ["--storage", f"journal:{store}"]
    res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1", *storage)
    assert_one_line_error(res, 1, f"{store} cannot be read as an Optuna study", shown, "another --study")
    assert "unexpected" not in res.stderr
    if name == "default.db":  # (Optuna reads a journal's last line as one another process is writing)
        assert store.read_bytes() == content
    assert not (tmp_path / "cwd" / "runs" / "tune" / "default").exists()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the open files are read from /proc")
def test_tune_on_a_storage_file_that_is_no_database_leaves_it_closed(cli, small_dir, tmp_path):
    """`--storage sqlite:///FILE` naming a file that is no database: one line, exit 1, and the
    file is not left open by the storage that could not be made (it was, until the garbage
    collector came by: Python 3.13+ warns of an unclosed database)."""
    import gc

    conf = _config(tmp_path / "tune.toml", small_dir)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"not a database\n")
    gc.disable()  # what is left open stays open
    try:
        res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--storage", f"sqlite:///{notes}")
        fds = Path("/proc/self/fd")
        left_open = [fd.name for fd in fds.iterdir() if _link(fd) == str(notes)]
    finally:
        gc.enable()
    assert_one_line_error(res, 1, f"{notes} cannot be read as an Optuna study", "(file is not a database)")
    assert left_open == []
    assert notes.read_bytes() == b"not a database\n"


def _link(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def test_tune_refuses_a_study_another_program_made_in_its_storage(cli, small_dir, tmp_path):
    import optuna

    conf = _config(tmp_path / "tune.toml", small_dir)
    url = f"sqlite:///{tmp_path / 'other.db'}"
    with study_storage(url) as storage:
        other = optuna.create_study(study_name="shared", storage=storage)
        other.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "shared", "--storage", url)
    assert_one_line_error(res, 1, "study shared was not made by forecaster tune", "another --study")
    with study_storage(url) as storage:
        study = optuna.load_study(study_name="shared", storage=storage)
        assert len(study.trials) == 2 and study.user_attrs == {}  # left as it was
    assert not (tmp_path / "cwd" / "runs" / "tune" / "shared").exists()


@pytest.mark.parametrize(
    "made,said",
    [
        pytest.param({"direction": "maximize"}, "maximises its objective", id="maximising"),
        pytest.param({"directions": ["minimize", "minimize"]}, "has 2 objectives", id="two-objectives"),
    ],
)
def test_tune_refuses_a_study_of_another_objective_another_program_made(cli, small_dir, tmp_path, made, said):
    """A study that maximises, or has several objectives, made by other Optuna code on the same
    storage: refused in one line before any trial, the study left as it was."""
    import optuna

    conf = _config(tmp_path / "tune.toml", small_dir)
    url = f"sqlite:///{tmp_path / 'other.db'}"
    with study_storage(url) as storage:
        optuna.create_study(study_name="shared", storage=storage, **made)
    res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "shared", "--storage", url)
    line = assert_one_line_error(res, 1, f"study shared in sqlite:///{tmp_path / 'other.db'} {said}")
    assert line.endswith(": not a forecaster study; give another --study name"), line
    with study_storage(url) as storage:
        study = optuna.load_study(study_name="shared", storage=storage)
        assert study.trials == [] and study.user_attrs == {}
    assert not (tmp_path / "cwd" / "runs" / "tune" / "shared").exists()


def test_tune_refuses_a_study_to_which_another_program_added_trials(cli, small_dir, tmp_path):
    """A forecaster study whose storage another program added a trial of its own to (another
    parameter, a value that is no validation loss): refused, not searched on with that value
    mixed into the trials compared; its results are left as they were written."""
    import optuna

    conf = _config(tmp_path / "tune.toml", small_dir)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    command = ["tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "s", "--storage", url]
    assert cli(*command).exit_code == 0
    out = tmp_path / "cwd" / "runs" / "tune" / "s"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with study_storage(url) as storage:
        optuna.load_study(study_name="s", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1) - 5, 1)
    res = cli(*command)
    assert_one_line_error(
        res,
        1,
        "study s holds 1 trial(s) that forecaster tune did not run (number 1: no forecaster settings recorded)",
        "give another --study name",
    )
    with study_storage(url) as storage:
        assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_tune_takes_every_train_option():
    commands = typer.main.get_command(app).commands
    opts = {name: {o for p in commands[name].params for o in getattr(p, "opts", [])} for name in ("train", "tune")}
    assert opts["train"] - {"--resume"} <= opts["tune"]
    assert {"--trials", "--timeout", "--study", "--storage", "--train-best"} <= opts["tune"]


def test_tune_train_best_exits_75_before_the_search_when_the_best_run_is_locked(cli, small_dir, tmp_path):
    """Another run holds the lock on --train-best's run directory: exit 75 at once with the
    lock-busy line, no trial run; once the lock is free the same command searches and trains
    (the probe let the lock go again, and the final training takes it)."""
    from forecaster.fsio import file_lock

    conf = _config(tmp_path / "tune.toml", small_dir)
    command = ["tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "s", "--train-best"]
    lock = tmp_path / "cwd" / "runs" / ".s-best.lock"
    with file_lock(lock):
        res = cli(*command)
    assert_one_line_error(res, 75, "another forecaster run holds", ".s-best.lock", "--lock-timeout")
    assert not (tmp_path / "cwd" / "runs" / "tune").exists()  # no study, no trial
    res = cli(*command)
    assert res.exit_code == 0, res.stderr
    assert run_meta(tmp_path / "cwd" / "runs" / "s-best")["status"] == "complete"


# `python -c` script: tune with the config file given, SIGTERM arriving in the function named
# by MODULE.FUNCTION (forecaster.tuning.usable_bars: while the bars are read; forecaster.fsio.file_lock:
# while --train-best's run directory lock is tried); more arguments are passed on
_KILLED_IN = """
import importlib, os, signal, sys
from forecaster.cli import main

where, conf, *more = sys.argv[1:]
module, name = where.rsplit(".", 1)
module = importlib.import_module(module)
real = getattr(module, name)

def killed(*args, **kwargs):  # `kill` arrives during this call
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)

setattr(module, name, killed)
sys.argv = ["forecaster", "tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "s", *more]
main()
"""


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_sigterm_while_train_best_waits_for_its_lock_exits_130_with_one_line(small_dir, tmp_path):
    conf = _config(tmp_path / "tune.toml", small_dir)
    more = ["--train-best", "--lock-timeout", "60"]
    res = run_script(_KILLED_IN, "forecaster.fsio.file_lock", conf, *more, cwd=tmp_path)
    assert res.returncode == 130, (res.returncode, res.stderr)
    [line] = res.stderr.splitlines()
    assert line.startswith("ERROR: tuning interrupted before its first trial, while it waited for the lock"), line
    assert "nothing was written" in line, line
    assert not (tmp_path / "runs" / "tune").exists()


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_sigterm_while_tune_reads_the_data_exits_130_with_one_line(small_dir, tmp_path):
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = run_script(_KILLED_IN, "forecaster.tuning.usable_bars", conf, cwd=tmp_path)
    assert res.returncode == 130, (res.returncode, res.stderr)
    [line] = res.stderr.splitlines()
    assert line.startswith("ERROR: tuning interrupted before its first trial") and "nothing" in line, line
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs" / "tune" / "s").exists()  # nothing written


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_sigterm_while_tune_opens_its_study_names_the_file_it_made(small_dir, tmp_path):
    """`kill` once the study's file has been made, before the study is in it: the line does not
    say that nothing was written, but names the file left (empty of trials), which the same
    command goes on with."""
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = run_script(_KILLED_IN, "forecaster.tuning._load_study", conf, cwd=tmp_path)
    assert res.returncode == 130, (res.returncode, res.stderr)
    [line] = res.stderr.splitlines()
    db = Path("runs") / "tune" / "s.db"
    assert (tmp_path / db).is_file()
    assert line.startswith("ERROR: tuning interrupted before its first trial") and "nothing" not in line, line
    assert f"no trial was run ({db} made for the study, without a trial, and kept)" in line, line
    command = "import sys\nfrom forecaster.cli import main\nsys.argv = ['forecaster', *sys.argv[1:]]\nmain()"
    again = run_script(
        command, "tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "s", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert len(pd.read_csv(tmp_path / "runs" / "tune" / "s" / "trials.csv")) == 1


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_sigterm_before_the_first_trial_of_tune_json_prints_the_study_on_stdout(small_dir, tmp_path):
    """`kill` while `tune --json` reads the bars: exit 130, the line on stderr, and on stdout the
    document an interrupted search gives, with no trial, no best and no file."""
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = run_script(_KILLED_IN, "forecaster.tuning.usable_bars", conf, "--json", cwd=tmp_path)
    assert res.returncode == 130, (res.returncode, res.stderr)
    [line] = res.stderr.splitlines()
    assert line.startswith("ERROR: tuning interrupted before its first trial"), line
    assert json.loads(res.stdout) == {
        "study": "s",
        "storage": f"sqlite:///{(tmp_path / 'runs' / 'tune' / 's.db').resolve()}",
        "added": 0,
        "trials": {"complete": 0, "pruned": 0, "failed": 0, "running": 0},
        "best": None,
        "files": {},
        "run_dir": None,
        "interrupted": True,
        "message": line.removeprefix("ERROR: "),
    }
    assert not (tmp_path / "runs" / "tune" / "s").exists()  # nothing written


@pytest.mark.parametrize(
    ("url", "example"), [("sqlite:///{d}", "sqlite:///{d}/study.db"), ("journal:{d}", "journal:{d}/study.log")]
)
def test_tune_refuses_a_storage_that_names_a_folder_with_exit_1_not_75(cli, small_dir, tmp_path, url, example):
    """A storage naming a folder is a mistake no retry mends: exit 1 with the fix, not 75
    ("cannot reach the study storage ... unable to open database file"), which tells cron to
    try again."""
    folder = tmp_path / "studies"
    folder.mkdir()
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--storage", url.format(d=folder))
    assert_one_line_error(res, 1, "names a folder", example.format(d=folder))
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "extra", "where"),
    [
        ("sqlite:///runs", [], "the results folder runs/tune/default goes"),
        ("journal:runs/tune/default", [], "the results folder runs/tune/default goes"),
        ("sqlite:///best.db", ["--train-best", "--run-dir", "best.db/run"], "the best run's directory best.db/run"),
    ],
)
def test_tune_refuses_a_study_file_where_its_results_go_before_the_search(cli, small_dir, tmp_path, url, extra, where):
    """``--storage sqlite:///runs`` made the database file ``runs`` and searched; then the
    results (runs/tune/<study>/) could not be written. Refused before a trial, making nothing."""
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--storage", url, *extra)
    assert_one_line_error(res, 1, f"the study storage {url} would be a file where {where}")
    assert list(Path.cwd().iterdir()) == []


@pytest.mark.parametrize("url", ["journal:/dev/null", "sqlite:////dev/null"])
def test_tune_refuses_a_storage_that_is_no_regular_file(cli, small_dir, tmp_path, url):
    """A journal in /dev/null was "I/O error: Invalid argument", naming nothing."""
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--storage", url)
    assert_one_line_error(res, 1, f"the study storage {url} is not a regular file")


@pytest.mark.parametrize("read_only", ["folder", "file"])
def test_tune_refuses_a_study_file_it_cannot_write_with_exit_1_not_75(small_dir, tmp_path, read_only):
    """A SQLite storage in a folder this user cannot write, or a study file it cannot: exit 1
    naming it before any trial, not 75 ("cannot reach the study storage ... unable to open
    database file"), which tells cron to try again, nor an unexpected error once the first
    trial is recorded."""
    conf = _config(tmp_path / "tune.toml", small_dir)
    studies = tmp_path / "studies"
    studies.mkdir()
    if read_only == "file":
        (studies / "s.db").touch(mode=0o444)
        at = studies / "s.db"
    else:
        studies.chmod(0o555)
        at = f"the folder {studies}"
    url = f"sqlite:///{studies}/s.db"
    args = ["--trials", "1", "--epochs", "1", "--study", "s", "--storage", url]
    try:
        res = run_forecaster_minding_file_modes("tune", "--config", conf, *args, cwd=tmp_path)
    finally:
        studies.chmod(0o755)
    assert res.returncode == 1, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
    assert errors == [f"ERROR: cannot write the study storage {url}: Permission denied on {at}"]
    assert sorted(p.name for p in studies.iterdir()) == (["s.db"] if read_only == "file" else [])
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("blocked", ["read-only", "a file"])
def test_tune_refuses_a_results_folder_it_cannot_write_before_the_first_trial(small_dir, tmp_path, blocked):
    """runs/tune/<study>/ read-only, or a file in its place: refused before the search (it
    was found once every trial had run, as a temporary file that could not be made), and
    nothing added to the study."""
    conf = _config(tmp_path / "tune.toml", small_dir)
    out = tmp_path / "runs" / "tune" / "s"
    if blocked == "a file":
        out.parent.mkdir(parents=True)
        out.touch()
        why = "runs/tune/s is a file, not a folder"
    else:
        out.mkdir(parents=True, mode=0o555)
        why = "Permission denied on the folder runs/tune/s"
    args = ["--trials", "1", "--epochs", "1", "--study", "s"]
    try:
        res = run_forecaster_minding_file_modes("tune", "--config", conf, *args, cwd=tmp_path)
    finally:
        out.chmod(0o755)
    assert res.returncode == 1, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
    assert errors == [f"ERROR: cannot write the results of study s to runs/tune/s: {why}"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["s"]  # no study made


@pytest.mark.parametrize("name", ["trials.csv", "best.toml", "history.png"])
def test_tune_refuses_a_folder_in_the_place_of_a_results_file_before_the_first_trial(cli, small_dir, tmp_path, name):
    """A folder where a result goes was found once every trial had run, named as a temporary
    file that is a folder: refused before the search, and nothing added to the study."""
    conf = _config(tmp_path / "tune.toml", small_dir)
    out = tmp_path / "cwd" / "runs" / "tune" / "s"
    (out / name).mkdir(parents=True)
    res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "s")
    assert_one_line_error(res, 1, f"cannot write the results of study s: {Path('runs/tune/s') / name} is a folder")
    assert sorted(p.name for p in out.parent.iterdir()) == ["s"]  # no study made


def test_tune_skips_a_ticker_without_bars_as_train_does(cli, small_dir, tmp_path):
    """A ticker whose file has a header and no rows is skipped with a warning naming it, the
    search goes on with the others (it stopped before the first trial); none left: one line."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "STOCKA.csv").write_bytes((small_dir / "STOCKA.csv").read_bytes())
    (data / "STOCKB.csv").write_text("Date,Open,High,Low,Close,Volume\n")
    conf = _config(tmp_path / "tune.toml", data)
    res = cli("tune", "--config", conf, "--trials", "2", "--epochs", "1", "--hidden-size", "8")
    assert res.exit_code == 0, res.stderr
    # once, as the bars are read: not again by the first trial's training
    assert res.stderr.count(f"WARNING: skipping STOCKB: {data / 'STOCKB.csv'}: has a header but no rows") == 1
    assert len(pd.read_csv(tmp_path / "cwd" / "runs" / "tune" / "default" / "trials.csv")) == 2

    res = cli("tune", "--config", conf, "-t", "STOCKB", "--trials", "1", "--epochs", "1")
    assert_one_line_error(res, 1, "no ticker has usable bars: STOCKB:", "has a header but no rows")


def test_a_matplotlib_that_cannot_be_used_costs_the_history_plot_not_the_study(cli, small_dir, tmp_path, monkeypatch):
    """The plot is drawn last: a matplotlib that cannot be imported made tune fail with an
    'unexpected error' after every trial had run, and --json gave the error object."""
    from forecaster import plots

    def broken(*args):
        raise ImportError("no backend")

    monkeypatch.setattr(plots, "_figure", broken)
    conf = _config(tmp_path / "tune.toml", small_dir)
    args = ("--trials", "1", "--epochs", "1", "--hidden-size", "8", "--study", "p", "--json")
    res = cli("tune", "--config", conf, *args)
    assert res.exit_code == 0, res.stderr
    why = "matplotlib cannot be used (ImportError: no backend)"
    assert res.stderr.splitlines() == [f"WARNING: history.png not drawn: {why}"]
    out = tmp_path / "cwd" / "runs" / "tune" / "p"
    assert sorted(p.name for p in out.iterdir()) == ["best.toml", "trials.csv"]
    assert json.loads(res.stdout)["study"] == "p"


class OperationalError(Exception):
    """Named as SQLAlchemy's and sqlite3's."""


def _disk_full(message: str = "An exception is raised during the commit."):
    """Optuna's StorageInternalError over SQLite's answer on a full disk, as a commit gets it."""
    from optuna.exceptions import StorageInternalError

    try:
        raise OperationalError("(sqlite3.OperationalError) database or disk is full")
    except OperationalError as e:
        raise StorageInternalError(message) from e


@pytest.mark.parametrize("where", ["opened", "made", "set up"])
def test_a_full_disk_under_the_study_file_is_an_error_naming_it_not_a_temporary_failure(
    cli, small_dir, tmp_path, monkeypatch, where
):
    """The disk of runs/tune/<study>.db full as the storage is opened, as the study is made in
    it, or as its settings are recorded: it said "cannot reach the study storage" with exit 75,
    which a timer retries every so often to no end, or "unexpected error: StorageInternalError".
    One line naming the file and the full disk, exit 1."""
    import optuna

    from forecaster import tuning

    if where == "opened":
        monkeypatch.setattr(
            tuning,
            "_RDBStorage",  # Optuna's RDBStorage
            lambda *a, **k: (_ for _ in ()).throw(
                OperationalError("(sqlite3.OperationalError) database or disk is full")
            ),
        )
    elif where == "made":
        monkeypatch.setattr(optuna, "create_study", lambda *a, **k: _disk_full())
    else:
        monkeypatch.setattr(tuning.optuna.Study, "set_user_attr", lambda *a, **k: _disk_full())
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = cli("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "f")
    db = (tmp_path / "cwd" / "runs" / "tune" / "f.db").resolve()
    assert_one_line_error(
        res, 1, f"cannot write the study storage {db}: No space left on device (database or disk is full)"
    )


def test_a_full_disk_under_a_trial_stops_the_search_with_exit_1_and_keeps_the_trials(
    cli, small_dir, tmp_path, monkeypatch
):
    """The study's disk fills during the search: exit 1 (not 75: waiting does not make room),
    one line naming the file, the trials so far written."""
    from forecaster import tuning

    real, calls = tuning.Objective.__call__, []

    def full(self, trial):
        calls.append(trial.number)
        if len(calls) == 2:
            _disk_full()
        return real(self, trial)

    monkeypatch.setattr(tuning.Objective, "__call__", full)
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = cli("tune", "--config", conf, "--trials", "3", "--epochs", "1", "--study", "f")
    db = (tmp_path / "cwd" / "runs" / "tune" / "f.db").resolve()
    assert_one_line_error(
        res, 1, f"cannot write the study storage {db}: No space left on device", "keeps the trials it had recorded"
    )
    assert list(pd.read_csv(tmp_path / "cwd" / "runs" / "tune" / "f" / "trials.csv")["state"]) == ["COMPLETE", "FAIL"]


def _no_space(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("before", [False, True])
def test_a_history_plot_that_cannot_be_written_costs_the_plot_alone_and_leaves_none_stale(
    cli, small_dir, tmp_path, monkeypatch, before
):
    """The results folder's disk full once trials.csv and best.toml are written: the search
    ended with "I/O error: No space left on device", exit 1, the history.png of the trials
    before left beside the new results. A warning naming the plot now, exit 0, and no
    history.png that is not of these trials."""
    from forecaster import plots

    conf = _config(tmp_path / "tune.toml", small_dir)
    args = ("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "p")
    out = tmp_path / "cwd" / "runs" / "tune" / "p"
    if before:
        assert cli(*args).exit_code == 0
        assert (out / "history.png").is_file()
    monkeypatch.setattr(plots, "_save", _no_space)
    res = cli(*args)
    assert res.exit_code == 0, res.stderr
    assert res.stderr.splitlines() == [
        f"WARNING: {Path('runs/tune/p/history.png')} not drawn: cannot write it: No space left on device"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["best.toml", "trials.csv"]
    assert len(pd.read_csv(out / "trials.csv")) == 1 + before


@pytest.mark.parametrize("name", ["trials.csv", "best.toml"])
def test_a_results_file_that_cannot_be_written_is_one_line_naming_it_and_the_study_keeps_its_trials(
    cli, small_dir, tmp_path, monkeypatch, name
):
    """trials.csv or best.toml that cannot be written (a full disk): one line naming the file
    and saying the study keeps its trials, exit 1; the same command goes on once there is room."""
    from forecaster import tuning

    writer = "write_csv" if name == "trials.csv" else "atomic_write_text"
    real = getattr(tuning, writer)
    monkeypatch.setattr(tuning, writer, _no_space)
    conf = _config(tmp_path / "tune.toml", small_dir)
    args = ("tune", "--config", conf, "--trials", "1", "--epochs", "1", "--study", "w")
    res = cli(*args)
    assert_one_line_error(
        res, 1, f"cannot write {Path('runs/tune/w') / name}: No space left on device", "study w keeps its trials in"
    )
    monkeypatch.setattr(tuning, writer, real)
    res = cli(*args)
    assert res.exit_code == 0, res.stderr
    assert len(pd.read_csv(tmp_path / "cwd" / "runs" / "tune" / "w" / "trials.csv")) == 2


def test_a_best_run_that_cannot_be_written_says_the_study_is_kept_and_how_to_train_it_again(
    cli, small_dir, tmp_path, monkeypatch
):
    """--train-best whose run folder's disk is full: "cannot write the run ...; nothing there
    was changed", and no word of the search. It says the study and best.toml are kept, and the
    command that trains the best trial again."""
    from forecaster import tuning
    from forecaster.errors import RunWriteError

    real = tuning.train

    def full(cfg, *, run_dir, **kw):
        if "forecaster-trial-" in str(run_dir):  # a trial of the search trains as it would
            return real(cfg, run_dir=run_dir, **kw)
        raise RunWriteError(f"cannot write the run {run_dir}: No space left on device; nothing there was changed")

    monkeypatch.setattr(tuning, "train", full)
    conf = _config(tmp_path / "tune.toml", small_dir)
    res = cli("tune", "--config", conf, "--epochs", "1", "--study", "s", "--trials", "1", "--train-best")
    best = Path("runs/tune/s/best.toml")
    assert_one_line_error(
        res,
        1,
        "cannot write the run runs/s-best: No space left on device; nothing there was changed",
        f"study s (sqlite:///{(tmp_path / 'cwd' / 'runs' / 'tune' / 's.db').resolve()}) and {best} are kept",
        f"`forecaster train --config {best}` trains the best trial again",
    )
    monkeypatch.setattr(tuning, "train", real)
    res = cli("train", "--config", str(best), "-q")
    assert res.exit_code == 0, res.stderr
    assert run_meta(tmp_path / "cwd" / "runs" / "s-best")["status"] == "complete"


def test_the_study_plot_draws_each_trial_against_its_number(tmp_path, monkeypatch):
    """history.png: completed trials and the best so far by trial number, each pruned trial at
    the loss it last reported, each failed one as a line, named once in the legend."""
    from forecaster import plots

    axes = axes_drawn(monkeypatch)
    trials = pd.DataFrame(
        {
            "number": [0, 1, 2, 3, 4],
            "state": ["COMPLETE", "FAIL", "COMPLETE", "PRUNED", "FAIL"],
            "value": [0.5, None, 0.4, None, None],
        }
    )
    path = plots.plot_study(trials, {3: 0.7}, tmp_path / "study" / "history.png", "s1")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [ax] = axes
    assert ax.get_title() == "study s1: validation pinball loss per trial"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("trial", "validation pinball loss (best epoch)")
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["completed trial", "best so far", "pruned (last reported)", "failed"]
    pruned = [ln for ln in ax.get_lines() if ln.get_label() == "pruned (last reported)"]
    assert [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in pruned] == [([3], [0.7])]
    failed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and ln.get_xdata()[0] in (1, 4)]
    assert sorted(ln.get_xdata()[0] for ln in failed) == [1, 4]


def _stderr_on_a_terminal(args, cwd: Path, **env_extra: str) -> tuple[int, bytes, str]:
    """Run the installed command in ``cwd`` with stderr on a pseudo-terminal; its exit code,
    the bytes the terminal was sent, and stdout."""
    from support import cli_env, stderr_on_a_terminal

    return stderr_on_a_terminal(args, cli_env(COLUMNS="150", **env_extra), cwd=cwd)


def test_tune_on_a_terminal_draws_a_bar_over_the_trials_that_ends_on_a_line_of_its_own(small_dir, tmp_path):
    """The bar counts the trials done out of --trials and, once one is done, the best loss so
    far, which is the best trial's of the summary; it is left on a line of its own, the
    cursor shown again."""
    import re

    conf = _config(tmp_path / "tune.toml", small_dir)
    args = ["tune", "--config", conf, "--trials", "2", "--epochs", "2", "--hidden-size", "8", "--study", "s"]
    code, raw, out = _stderr_on_a_terminal(args, tmp_path, TERM="xterm-256color")
    assert code == 0, raw
    assert raw.endswith(b"\r\n\x1b[?25h"), raw[-200:]  # the bar's line ended, the cursor back
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode())
    drawn = [part for line in text.split("\r\n") for part in line.split("\r") if part.strip()]
    assert drawn and all(line.startswith("tuning ") for line in drawn), drawn  # the bar alone
    counts = [int(m) for line in drawn for m in re.findall(r" (\d)/2 ", line)]
    assert counts == sorted(counts) and counts[-1] == 2, drawn  # trials done, never going back
    best = re.search(r"validation pinball (\d\.\d{5})", out)
    assert best, out
    assert re.fullmatch(rf"tuning ━+ 2/2 trial 1 complete  best {best[1]} \d:\d\d:\d\d", drawn[-1]), drawn[-1]


@pytest.mark.parametrize("columns", [40, 60, 80])
def test_the_tuning_bar_keeps_its_figures_whole_on_a_narrow_terminal(monkeypatch, columns):
    """On 60 columns and fewer rich cut the bar's figures with an ellipsis: the trials done
    ("…"), the best loss ("best 0…"), the time. The bar itself is left out where it does not
    fit, and the figures wrap onto a second line rather than lose a digit."""
    import io
    import re
    from types import SimpleNamespace

    from rich.console import Console

    from forecaster import cli

    out = io.StringIO()
    console = Console(file=out, width=columns, force_terminal=True, color_system=None)
    monkeypatch.setattr(cli, "_stderr_console", lambda: console)
    with cli._tune_progress(True, 20) as (on_epoch, on_trial):
        for n in range(12):
            on_trial(SimpleNamespace(number=n, state=SimpleNamespace(name="COMPLETE")), 0.28351)
        on_epoch(12, SimpleNamespace(epoch=30, val_loss=0.28606))
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue().split("\x1b[2K")[-1])  # the last frame drawn
    assert "…" not in last and all(len(line) <= columns for line in last.splitlines()), last
    assert re.match(r"tuning [━╸╺ ]*12/20 trial 12 ", last), last
    # every word whole, wherever the line wrapped them (the bar, where drawn, left out)
    words = [w for w in last.split() if set(w) - set("━╸╺")]
    times = [w for w in words if re.fullmatch(r"\d:\d\d:\d\d", w)]
    assert len(times) == 1, last
    expected = "tuning 12/20 trial 12 epoch 30 val 0.28606 best 0.28351".split()
    assert sorted(w for w in words if w not in times) == sorted(expected), last


@pytest.mark.parametrize("flag, term", [("-q", "xterm-256color"), ("--json", "xterm-256color"), (None, "dumb")])
def test_tune_draws_nothing_on_a_terminal_with_quiet_json_or_a_dumb_terminal(small_dir, tmp_path, flag, term):
    conf = _config(tmp_path / "tune.toml", small_dir)
    args = ["tune", "--config", conf, "--trials", "1", "--epochs", "1", "--hidden-size", "8", "--study", "s"]
    code, raw, out = _stderr_on_a_terminal([*args, *([flag] if flag else [])], tmp_path, TERM=term)
    assert code == 0, raw
    assert raw == b""
    assert ("1 trial(s) run now" in out) is (flag is None) and (flag != "--json" or json.loads(out)["study"] == "s")
