"""`forecaster tune` as a library: the search space, the objective (validation only), pruning,
resuming after an interrupt or a killed process, and two processes on one study."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from conftest import tiny_overrides
from optuna.trial import TrialState
from support import drop_a_stop_signal, study_storage

from forecaster.checkpoint import Origin, read_manifest
from forecaster.config import SEARCH_SPACE, Config, SpaceConfig, TrainConfig, config_toml, load_config
from forecaster.errors import ConfigError, DataError, TemporaryFailure, TrainingError
from forecaster.sources import read_csv_bars
from forecaster.synthetic import generate_bars, write_csv
from forecaster.training import EpochRecord, train
from forecaster.tuning import (
    PruningHook,
    SearchInterrupted,
    _machine,
    embedded_url,
    open_storage,
    remove_abandoned_trial_dirs,
    search_dims,
    storage_label,
    trial_config,
    tune,
)
from forecaster.windows import make_splits

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ROOT = Path(__file__).resolve().parents[1]
# a small space so that every trial trains in well under a second
SMALL_SPACE = {
    "tune.space.lookback": [10, 30],
    "tune.space.hidden_size": [4, 16],
    "tune.space.num_layers": [1, 2],
    "tune.space.batch_size": [64, 128],
}


def _cfg(data_dir, **extra) -> Config:
    return load_config(None, tiny_overrides(data_dir, **SMALL_SPACE, **{"tune.study": "t", **extra}))


# ---------------------------------------------------------------------------- the space


def test_the_space_covers_every_dimension_the_config_has():
    names = set(SpaceConfig.model_fields)
    assert {"cell", "lookback", "hidden_size", "num_layers", "dropout", "lr", "batch_size"} <= names
    assert SpaceConfig().cell == ["rnn", "lstm", "gru"]  # every value the config allows
    # the training mode is searched exactly when the config has the key
    mode = TrainConfig.model_fields.get("mode")
    assert ("mode" in names) == (mode is not None)
    if mode is not None:
        assert SpaceConfig().mode == list(get_args(mode.annotation))
    else:
        with pytest.raises(ConfigError, match="tune.space.mode: unknown key"):
            load_config(None, {"tune.space.mode": ["forking"]})
    assert [d.name for d in SEARCH_SPACE if d.name in names] == list(SpaceConfig.model_fields)


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("tune.space.nope", [1, 2], "tune.space.nope: unknown key"),
        ("tune.trails", 3, "tune.trails: unknown key"),
        ("tune.space.lookback", [50, 10], "low <= high"),
        ("tune.space.lookback", [10, 20, 30], "low <= high"),
        ("tune.space.hidden_size", [0, 8], "tune.space.hidden_size"),
        ("tune.space.cell", ["transformer"], "tune.space.cell"),
        ("tune.space.dropout", [0.0, 1.5], "tune.space.dropout"),
        ("tune.study", "../escape", "tune.study"),
    ],
)
def test_bad_tune_settings_are_refused_naming_the_key(key, value, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, {key: value})
    assert fragment in str(e.value)


def test_a_tune_table_in_a_config_file_narrows_the_space(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[tune]\ntrials = 4\n[tune.space]\ncell = ["gru"]\nlookback = []\n')
    cfg = load_config(p)
    dims = {d.name: values for d, values in search_dims(cfg)}
    assert cfg.tune.trials == 4
    assert dims["cell"] == ["gru"] and "lookback" not in dims
    assert dims["lr"] == [1e-4, 1e-2]  # the rest keeps its defaults
    # a key set on the command line is taken out of the search
    fixed = {d.name for d, _ in search_dims(cfg, fixed={"model.hidden_size", "train.lr"})}
    assert "hidden_size" not in fixed and "lr" not in fixed and "dropout" in fixed


def test_a_space_that_reaches_an_invalid_config_is_refused_before_any_trial(tmp_path):
    cfg = load_config(
        None, {"window.horizon": 5, "model.ar_order": 0, "tune.space.lookback": [2, 30], "tune.study": "bad"}
    )
    with pytest.raises(ConfigError, match="horizon"):
        tune(cfg, root=tmp_path)
    assert not (tmp_path / "bad.db").exists()


def test_trial_config_sets_the_params_and_drops_the_tuning_settings(small_dir):
    base = _cfg(small_dir, **{"tune.storage": "postgresql://u:secret@db/x", "run_dir": "runs/x"})
    cfg = trial_config(base, {"model.cell": "rnn", "window.lookback": 12})
    assert (cfg.model.cell, cfg.window.lookback, cfg.run_dir) == ("rnn", 12, None)
    assert cfg.tune.storage == ""  # a password in the storage URL never reaches a run or best.toml


def test_config_toml_round_trips(tmp_path):
    cfg = load_config(
        None,
        {
            "data.tickers": ["BRK-B", "^GSPC"],
            "data.data_dir": 'odd "dir"\\ é\x7f',
            "train.lr": 3.5e-5,
            "model.dropout": 0.0,
            "tune.space.cell": ["gru"],
            "run_dir": "runs/x",
        },
    )
    text = config_toml(cfg, "a header\nover two lines")
    assert text.startswith("# a header\n# over two lines\n")
    assert Config.model_validate(tomllib.loads(text)) == cfg
    assert "[tune]" not in config_toml(cfg, exclude=("tune",))


def test_storage_urls():
    assert (
        storage_label("postgresql://user:s3cret@db.example:5432/optuna")
        == "postgresql://user:***@db.example:5432/optuna"
    )
    assert storage_label("sqlite:///runs/tune/x.db") == "sqlite:///runs/tune/x.db"
    # a password with '/' or ':' in it (SQLAlchemy reads it up to the '@'), or given as a query parameter
    for url in (
        "postgresql://tuner:s3cr/et@127.0.0.1:5432/optuna",
        "postgresql://tuner:a:b/c@127.0.0.1/optuna",
        "postgresql://127.0.0.1:5432/optuna?user=tuner&password=s3cr/et",
        "redis://:s3cr/et@localhost:6379/0",
        "mysql://u@h/db?passwd=s3cret&charset=utf8",
    ):
        shown = storage_label(url)
        assert "s3cr" not in shown and "a:b" not in shown and "***" in shown, shown
    assert storage_label("postgresql://tuner:s3cr/et@127.0.0.1:5432/optuna") == (
        "postgresql://tuner:***@127.0.0.1:5432/optuna"
    )
    assert (
        storage_label("postgresql://h/o?Password=x&sslmode=require") == "postgresql://h/o?Password=***&sslmode=require"
    )
    assert storage_label("postgresql://tuner@db/optuna") == "postgresql://tuner@db/optuna"  # no password
    assert storage_label("journal:runs/tune/a:b@c.log") == "journal:runs/tune/a:b@c.log"
    with pytest.raises(ConfigError, match="not installed"):
        open_storage("postgresql://u:p@localhost/x", 10)  # no driver installed: one clear line
    assert embedded_url("s", Path("/r")) == "sqlite:////r/s.db"
    for memory in ("sqlite:///:memory:", "sqlite://", "sqlite:///:memory:?cache=shared"):
        with pytest.raises(ConfigError, match="a database in memory, which keeps nothing once the command ends"):
            open_storage(memory, 10)


class IntegrityError(Exception):
    """Named as SQLAlchemy's: a unique key another process wrote first."""


class OperationalError(Exception):
    """Named as SQLAlchemy's."""


@pytest.mark.parametrize(
    "raised",
    [
        IntegrityError("UNIQUE constraint failed: alembic_version.version_num"),
        OperationalError("(sqlite3.OperationalError) table studies already exists"),
    ],
)
def test_a_study_database_made_by_another_process_at_the_same_moment_is_opened(tmp_path, monkeypatch, raised):
    """Tune processes started together on a new study: all but one found the tables (or the
    alembic version) made by another in the middle of making them, and stopped with "unexpected
    error: IntegrityError" (exit 1) or "cannot reach the study storage" (exit 75). Opened
    again, the tables are there."""
    from forecaster import tuning

    real, calls = tuning._RDBStorage, []  # Optuna's RDBStorage

    def made_meanwhile(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise raised
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "_RDBStorage", made_meanwhile)
    storage = open_storage(f"sqlite:///{tmp_path / 'race.db'}", 60)
    assert len(calls) == 2 and storage.get_all_studies() == []
    calls.clear()

    def locked(*args, **kwargs):
        calls.append(1)
        raise OperationalError("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(tuning, "_RDBStorage", locked)
    with pytest.raises(TemporaryFailure, match="database is locked"):  # not tried again at once: exit 75
        open_storage(f"sqlite:///{tmp_path / 'locked.db'}", 60)
    assert len(calls) == 1


def test_a_study_database_locked_under_a_trial_stops_the_search_as_a_temporary_failure(
    small_dir, tmp_path, monkeypatch
):
    """A SQLite study locked by another process for longer than a write waits: Optuna's
    StorageInternalError ("invalid data in the commit, e.g. exceeding max length") was an
    unexpected error, exit 1. It is the locked database, worth a retry (exit 75), and the
    results of the trials so far are written."""
    from optuna.exceptions import StorageInternalError

    from forecaster import tuning

    real, calls = tuning.Objective.__call__, []

    def locked(self, trial):
        calls.append(trial.number)
        if len(calls) == 2:
            try:
                raise OperationalError("(sqlite3.OperationalError) database is locked")
            except OperationalError as e:
                raise StorageInternalError("An exception is raised during the commit.") from e
        return real(self, trial)

    monkeypatch.setattr(tuning.Objective, "__call__", locked)
    with pytest.raises(TemporaryFailure, match=r"database is locked; .* run the same command again") as caught:
        tune(_cfg(small_dir, **{"tune.trials": 3}), root=tmp_path)
    assert caught.value.exit_code == 75 and calls == [0, 1]
    assert list(pd.read_csv(tmp_path / "t" / "trials.csv")["state"]) == ["COMPLETE", "FAIL"]
    # any other error under a trial is still what it is
    monkeypatch.setattr(tuning.Objective, "__call__", lambda self, trial: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        tune(_cfg(small_dir, **{"tune.trials": 1}), root=tmp_path)


class _RedisConnectionError(Exception):  # redis.exceptions.ConnectionError: a RedisError, no OSError
    __module__ = "redis.exceptions"


_RedisConnectionError.__name__ = _RedisConnectionError.__qualname__ = "ConnectionError"


class _Unavailable:
    name = "UNAVAILABLE"


class _GrpcCallError(Exception):  # grpc._channel._InactiveRpcError of a server that is down
    __module__ = "grpc._channel"

    def code(self):
        return _Unavailable()


@pytest.mark.parametrize(
    "down",
    [
        _RedisConnectionError("Error 111 connecting to localhost:6379. Connection refused."),
        _GrpcCallError("failed to connect to all addresses; last error: UNAVAILABLE"),
    ],
    ids=["redis", "grpc"],
)
def test_a_storage_server_gone_under_a_trial_stops_the_search_as_a_temporary_failure(
    small_dir, tmp_path, monkeypatch, down
):
    """A Redis or gRPC storage server that stops answering during the search was an unexpected
    error (exit 1), where a database server's is a failure to retry (exit 75), the trials so far
    written."""
    from forecaster import tuning

    real, calls = tuning.Objective.__call__, []

    def server_gone(self, trial):
        calls.append(trial.number)
        if len(calls) == 2:
            raise down
        return real(self, trial)

    monkeypatch.setattr(tuning.Objective, "__call__", server_gone)
    with pytest.raises(TemporaryFailure, match=r"^cannot reach the study storage .*; .* run the same command again"):
        tune(_cfg(small_dir, **{"tune.trials": 3}), root=tmp_path)
    assert calls == [0, 1]
    assert list(pd.read_csv(tmp_path / "t" / "trials.csv")["state"]) == ["COMPLETE", "FAIL"]


def test_a_grpc_storage_server_that_cannot_be_reached_is_a_temporary_failure(small_dir, tmp_path, monkeypatch):
    """The first call to a gRPC storage whose server is down, as the study is loaded: exit 75."""
    from forecaster import tuning

    def down(*args, **kwargs):
        raise _GrpcCallError("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1")

    monkeypatch.setattr(tuning, "_load_study", down)
    with pytest.raises(TemporaryFailure, match=r"^cannot reach the study storage .*UNAVAILABLE"):
        tune(_cfg(small_dir), root=tmp_path)


def test_a_study_file_on_a_read_only_file_system_is_refused_saying_so(tmp_path, monkeypatch):
    """A SQLite study in a folder of a file system mounted read-only: the line said
    "Permission denied on the folder", which sends the user to chmod, to no end. It gives the
    reason, as the results folder's check does."""
    import os as os_module
    from types import SimpleNamespace

    folder = tmp_path / "ro"
    folder.mkdir()
    real_access, real_statvfs = os_module.access, os_module.statvfs

    def access(path, mode, *args, **kwargs):
        return False if Path(path) == folder and mode & os_module.W_OK else real_access(path, mode, *args, **kwargs)

    def statvfs(path):
        if Path(path) == folder:
            return SimpleNamespace(f_flag=os_module.ST_RDONLY)
        return real_statvfs(path)

    monkeypatch.setattr(os_module, "access", access)
    monkeypatch.setattr(os_module, "statvfs", statvfs)
    url = f"sqlite:///{folder / 's.db'}"
    with pytest.raises(ConfigError) as caught:
        open_storage(url, 60)
    assert str(caught.value) == f"cannot write the study storage {url}: Read-only file system on the folder {folder}"
    assert caught.value.exit_code == 1


# ---------------------------------------------------------------------------- origin in the run


def _open_on(path: Path) -> list[str]:
    """The file descriptors of this process open on ``path``."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                fds.append(fd)
    return fds


@contextlib.contextmanager
def _engines_disposed() -> Iterator[list]:
    """The SQLAlchemy engines disposed within the block, and no garbage collection meanwhile:
    a connection left open stays open (the collector would close it some time later)."""
    import gc

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    disposed: list = []

    def record(engine):
        disposed.append(engine)

    event.listen(Engine, "engine_disposed", record)
    gc.disable()
    try:
        yield disposed
    finally:
        gc.enable()
        event.remove(Engine, "engine_disposed", record)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the open files are read from /proc")
def test_a_study_file_that_is_no_database_is_refused_and_its_connection_closed(tmp_path):
    """`tune --storage sqlite:///FILE` on a file that is no database: Optuna's RDBStorage made
    its engine, connected, failed to make the tables and raised, handing back no storage to
    close; the connection (the file with it) stayed open until the garbage collector came by
    (Python 3.13+: ResourceWarning, unclosed database). The same error, the file closed."""
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"not a database\n")
    url = f"sqlite:///{bad}"
    with _engines_disposed() as disposed, pytest.raises(ConfigError) as caught:
        open_storage(url, 60)
    assert str(caught.value) == (
        f"the study storage {url} cannot be read as an Optuna study (file is not a database): "
        "move that file away, or give another --study or --storage"
    )
    assert caught.value.exit_code == 1
    assert _open_on(bad) == [] and len(disposed) == 1
    assert bad.read_bytes() == b"not a database\n"


def test_a_stop_while_the_study_file_is_opened_closes_its_connection(tmp_path):
    """Ctrl-C (or `kill`, made one) as Optuna connects to make the study's tables: the stop goes
    on, the storage's engine disposed (its pooled connections closed; the one the stop caught
    checked out is closed as it is let go), and the file opens again."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def stopped(connection):
        raise KeyboardInterrupt

    event.listen(Engine, "engine_connect", stopped)
    try:
        with _engines_disposed() as disposed, pytest.raises(KeyboardInterrupt):
            open_storage(f"sqlite:///{tmp_path / 'new.db'}", 60)
    finally:
        event.remove(Engine, "engine_connect", stopped)
    assert len(disposed) == 1
    with study_storage(f"sqlite:///{tmp_path / 'new.db'}") as storage:  # opened again, it works
        assert storage.get_all_studies() == []


@pytest.mark.parametrize("form", ["journal:", "sqlite:///"])
def test_a_storage_file_below_a_file_is_refused_naming_the_file(tmp_path, form):
    (tmp_path / "notes").write_text("")
    url = f"{form}{tmp_path / 'notes' / 'study.db'}"
    with pytest.raises(ConfigError) as e:
        open_storage(url, 10)
    assert str(e.value) == f"cannot make the study storage {url}: {tmp_path / 'notes'} is a file, not a folder"


def test_a_run_records_its_origin(run_copy, sample_dir, tmp_path):
    before = json.loads((run_copy / "run.json").read_text())
    assert before["origin"] is None  # trained without a study
    origin = Origin(study="s", trial=3, val_loss=0.25, storage="sqlite:///x.db")
    m = train(load_config(None, tiny_overrides(sample_dir)), run_dir=tmp_path / "tuned", origin=origin).manifest
    assert read_manifest(tmp_path / "tuned").origin == m.origin == origin
    assert json.loads((tmp_path / "tuned" / "run.json").read_text())["origin"]["trial"] == 3


# ---------------------------------------------------------------------------- pruning


class _Trial:
    """A stand-in for an Optuna trial whose pruner always says stop."""

    number = 0

    def __init__(self):
        self.reported = []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return True


def test_a_pruned_trial_stops_training_and_writes_nothing(small_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(small_dir, **{"train.epochs": 3}))
    trial = _Trial()
    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        train(cfg, run_dir=tmp_path / "run", on_epoch=PruningHook(trial, last_epoch=3))
    assert trial.reported and trial.reported[0][0] == 1
    assert not (tmp_path / "run").exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_the_budgets_last_epoch_is_never_pruned():
    trial = _Trial()
    hook = PruningHook(trial, last_epoch=2)
    with pytest.raises(optuna.TrialPruned):
        hook(EpochRecord(1, 0.3, 0.3, 0.1, 1e-3, 0.1, 10))
    hook(EpochRecord(2, 0.3, 0.2, 0.1, 1e-3, 0.1, 10))  # complete: its value counts
    assert trial.reported == [(1, 0.3), (2, 0.2)]


# ---------------------------------------------------------------------------- the objective


def _perturbed(dst: Path, start, end) -> Path:
    """The small data set again, with every bar dated in [start, end) scaled by a random factor."""
    dst.mkdir()
    rng = np.random.default_rng(5)
    for sym, first, seed in (("STOCKA", "2022-07-01", 21), ("STOCKB", "2023-06-01", 22)):
        bars = generate_bars(first, "2024-12-31", seed=seed)
        rows = (bars.index >= start) & (bars.index < end)
        factor = rng.uniform(0.7, 1.3, size=int(rows.sum()))
        for col in ("open", "high", "low", "close"):
            bars.loc[rows, col] = bars.loc[rows, col].to_numpy() * factor
        bars.loc[rows, "volume"] = np.round(bars.loc[rows, "volume"].to_numpy() * factor[::-1])
        write_csv(bars, dst / f"{sym}.csv")
    return dst


def test_the_objective_never_sees_the_test_split(small_dir, tmp_path):
    bars = {s: pd.read_csv(small_dir / f"{s}.csv", index_col=0, parse_dates=True) for s in ("STOCKA", "STOCKB")}
    splits = make_splits(bars, 100, 100)
    changed_test = _perturbed(tmp_path / "test-changed", splits.test_start, pd.Timestamp.max)
    changed_val = _perturbed(tmp_path / "val-changed", splits.val_start, splits.test_start)
    assert (changed_test / "STOCKA.csv").read_bytes() != (small_dir / "STOCKA.csv").read_bytes()

    def values(data_dir, name, trials=2):
        res = tune(_cfg(data_dir, **{"tune.trials": trials, "tune.study": name}), root=tmp_path / "tune")
        assert res.added == trials
        return res.trials

    plain, test_changed = values(small_dir, "plain"), values(changed_test, "test")
    assert list(plain["state"]) == ["COMPLETE"] * 2
    assert plain["value"].nunique() == 2  # the trials did differ
    # only the test split changed: the same proposals score exactly the same
    pd.testing.assert_frame_equal(plain.drop(columns="seconds"), test_changed.drop(columns="seconds"))
    # the control: change the validation split instead, and the first trial's score moves
    val_changed = values(changed_val, "val", trials=1)
    assert val_changed["lr"][0] == plain["lr"][0]
    assert val_changed["value"][0] != plain["value"][0]


# ---------------------------------------------------------------------------- resuming


def _kill_during_a_trial(url: str, study: str) -> tuple[int, int]:
    """Start a trial in another process and kill -9 that process while the trial runs, as a
    kill of `forecaster tune` mid-trial leaves it; return the trial's number and the pid."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        import optuna
        from optuna.storages import RDBStorage
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.load_study(study_name=sys.argv[2], storage=RDBStorage(sys.argv[1]))
        trial = study.ask()
        trial.set_user_attr("worker", {"machine": sys.argv[3], "pid": os.getpid()})
        print(trial.number, os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, url, study, _machine()], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    number, pid = proc.stdout.split()
    return int(number), int(pid)


def test_an_interrupted_or_killed_study_continues_and_the_trials_add_up(small_dir, tmp_path, monkeypatch):
    root = tmp_path / "tune"
    scratch = tmp_path / "scratch"  # where trials train
    scratch.mkdir()
    # torch makes its compiler's cache folder in the temporary folder the first time a process
    # builds an optimiser: made now, where it is torch's, when no earlier test here trained
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    cfg = _cfg(small_dir, **{"tune.trials": 3})

    def ctrl_c_in_the_second_trial(number, rec):
        if number == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune(cfg, root=root, on_epoch=ctrl_c_in_the_second_trial)
    # the trial interrupted is failed, and what was done is written out
    rows = pd.read_csv(root / "t" / "trials.csv")
    assert list(rows["state"]) == ["COMPLETE", "FAIL"]
    assert (root / "t" / "best.toml").is_file()
    assert list(scratch.iterdir()) == []  # nothing half-written is left

    killed, pid = _kill_during_a_trial(embedded_url("t", root), "t")
    assert killed == 2
    (scratch / f"forecaster-trial-{pid}-x" / "run").mkdir(parents=True)  # what its training left

    res = tune(cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"trials": 2})}), root=root)
    states = dict(zip(res.trials["number"], res.trials["state"]))
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "FAIL", 3: "COMPLETE", 4: "COMPLETE"}
    assert res.added == 2 and res.counts()["complete"] == 3 and res.counts()["running"] == 0
    assert list(scratch.iterdir()) == []
    # the resumed sampler does not replay the first proposals
    assert res.trials.loc[3, "lr"] != res.trials.loc[0, "lr"]


def test_a_trial_folder_named_with_a_pid_no_process_can_have_is_removed_not_an_error(tmp_path, monkeypatch):
    """A folder forecaster-trial-99999999999999999999-x in the shared temporary folder (another
    user's, say) ended every tune before its first trial with an unexpected OverflowError."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / f"forecaster-trial-{10**20}-x").mkdir()
    (tmp_path / f"forecaster-trial-{os.getpid()}-x").mkdir()  # a live process's trial
    remove_abandoned_trial_dirs()
    assert [p.name for p in tmp_path.iterdir()] == [f"forecaster-trial-{os.getpid()}-x"]


def test_any_seed_the_config_takes_seeds_the_sampler(small_dir, tmp_path):
    """tune.seed has no upper bound, Optuna's sampler takes 0 to 2**32 - 1: the largest seed it
    takes still runs when the trials of a resumed study are added to it, and a seed past it
    runs and proposes what the seed 2**32 below it proposes."""
    last = _cfg(small_dir, **{"tune.trials": 1, "tune.seed": 2**32 - 1})
    tune(last, root=tmp_path / "last")
    res = tune(last, root=tmp_path / "last")  # resumed: one trial before
    assert list(res.trials["state"]) == ["COMPLETE", "COMPLETE"]
    far = tune(_cfg(small_dir, **{"tune.trials": 1, "tune.seed": 2**33 - 1}), root=tmp_path / "far")
    assert far.trials.drop(columns="seconds").equals(res.trials.drop(columns="seconds").head(1))


def test_a_study_resumed_with_other_fixed_values_writes_every_cell_of_every_trial(small_dir, tmp_path):
    """A dimension fixed by a flag in one invocation and searched in another: each trial's row
    gives the value it trained with, whichever invocation ran it."""
    cfg = _cfg(small_dir, **{"tune.trials": 1, "model.cell": "rnn", "model.hidden_size": 6})
    tune(cfg, fixed={"model.cell"}, root=tmp_path)  # trial 0: cell fixed at rnn
    res = tune(cfg, fixed={"model.hidden_size"}, root=tmp_path)  # trial 1: hidden_size fixed at 6
    rows = pd.read_csv(tmp_path / "t" / "trials.csv")
    assert list(rows["number"]) == [0, 1] and {"cell", "hidden_size"} <= set(rows.columns)
    assert not rows.isna().any().any(), rows.to_string()
    assert rows.loc[0, "cell"] == "rnn" and rows.loc[1, "hidden_size"] == 6
    assert not res.trials.isna().any().any()
    # the best trial's parameters (its line, --json) are its row, whichever trial it is
    row = res.trials.set_index("number").loc[res.best.number].drop(["state", "value", "seconds"])
    assert res.best.params == row.to_dict()


def test_a_trial_whose_lookback_no_ticker_can_serve_fails_and_the_search_goes_on(small_dir, tmp_path):
    # STOCKB has about 200 training sessions: no lookback of this space leaves it a window
    cfg = _cfg(small_dir, **{"data.tickers": ["STOCKB"], "tune.trials": 3})
    cfg.tune.space.lookback = [300, 400]
    with pytest.raises(TrainingError, match="no trial of study t has completed; the first error: no ticker has") as e:
        tune(cfg, root=tmp_path)
    assert str(e.value).endswith(f"(every trial's state: {tmp_path / 't' / 'trials.csv'})")  # where to look
    trials = pd.read_csv(tmp_path / "t" / "trials.csv")
    assert list(trials["state"]) == ["FAIL"] * 3


def test_bad_data_stops_the_search_before_its_first_trial(small_dir, tmp_path):
    with pytest.raises(DataError, match="MISSING"):
        tune(_cfg(small_dir, **{"data.tickers": ["STOCKA", "MISSING"]}), root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_where_the_study_file_goes_is_named_before_any_trial(small_dir, tmp_path):
    """runs/tune/t.db is where study t is kept, and the results folder of a study named t.db:
    the folder is named, with no advice to give --storage a file inside it."""
    (tmp_path / "t.db" / "kept").mkdir(parents=True)
    with pytest.raises(ConfigError) as e:
        tune(_cfg(small_dir), root=tmp_path)
    assert str(e.value) == (
        f"study t is kept in the file {tmp_path / 't.db'}, and a folder has that name: "
        "move the folder away, or give another --study name"
    )
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept", "t.db"]


def test_processes_sharing_a_study_seed_their_samplers_apart_and_one_alone_as_its_seed_says(small_dir, monkeypatch):
    """Workers sharing a study through a storage added their process id to the seed: two
    started together (consecutive ids, each seeing one trial fewer or more; in containers one
    id for all) drew the same seed and ran the same trials. With a storage each process mixes
    in a random value of its own; without one the seed is tune.seed plus the trials before."""
    from forecaster import tuning

    alone = _cfg(small_dir, **{"tune.seed": 7})
    assert tuning._sampler_seed(alone, 3) == tuning._sampler_seed(alone, 3) == 10
    shared = _cfg(small_dir, **{"tune.seed": 7, "tune.storage": "journal:study.log"})
    monkeypatch.setattr(os, "getpid", lambda: 1)  # a container: every worker is process 1
    seeds = {tuning._sampler_seed(shared, 0) for _ in range(20)}
    assert len(seeds) == 20 and all(0 <= s < 2**32 for s in seeds)


def test_a_study_continues_with_its_tickers_in_another_order_but_not_with_other_tickers(small_dir, tmp_path):
    """Train reads the tickers in its own order and once each, so the same tickers in another
    order, or one named twice, make the same trials: the study went on refusing them."""
    tune(_cfg(small_dir, **{"tune.trials": 1, "data.tickers": ["STOCKA", "STOCKB"]}), root=tmp_path)
    res = tune(_cfg(small_dir, **{"tune.trials": 1, "data.tickers": ["STOCKB", "STOCKA", "STOCKB"]}), root=tmp_path)
    assert len(res.trials) == 2
    # nor in another case, or with spaces: train reads " stockb" as STOCKB
    res = tune(_cfg(small_dir, **{"tune.trials": 1, "data.tickers": [" stockb", "StockA"]}), root=tmp_path)
    assert len(res.trials) == 3
    with pytest.raises(ConfigError, match=r"data.tickers = \['STOCKA', 'STOCKB'\], this command has \['STOCKA'\]"):
        tune(_cfg(small_dir, **{"tune.trials": 1, "data.tickers": ["STOCKA"]}), root=tmp_path)


def test_a_study_refuses_to_continue_on_other_data(small_dir, tmp_path):
    tune(_cfg(small_dir, **{"tune.trials": 1}), root=tmp_path)
    with pytest.raises(ConfigError, match="train.epochs = 2, this command has 3"):
        tune(_cfg(small_dir, **{"tune.trials": 1, "train.epochs": 3}), root=tmp_path)


def test_a_study_begun_before_a_setting_existed_continues_only_as_its_trials_ran(small_dir, tmp_path):
    """A study that records no ``train.burn_in_dropout`` ran its trials with the dropout in the
    burn-in, as forecaster did then: continued with today's default it is refused, naming the
    setting; with the setting as it was, it goes on."""
    tune(_cfg(small_dir, **{"tune.trials": 1}), root=tmp_path)
    with study_storage(embedded_url("t", tmp_path)) as storage:
        study = optuna.load_study(study_name="t", storage=storage)
        setup = dict(study.user_attrs["setup"])
        assert setup.pop("train.burn_in_dropout") is False
        study.set_user_attr("setup", setup)
    with pytest.raises(ConfigError, match="train.burn_in_dropout = True, this command has False"):
        tune(_cfg(small_dir, **{"tune.trials": 1}), root=tmp_path)
    res = tune(_cfg(small_dir, **{"tune.trials": 1, "train.burn_in_dropout": True}), root=tmp_path)
    assert list(res.trials["state"]) == ["COMPLETE", "COMPLETE"]


def test_a_best_trial_run_before_a_setting_existed_is_written_as_it_ran(small_dir, tmp_path):
    """best.toml trains the best trial as it was trained: a trial whose config records none of
    the later settings gets their earlier values, not today's defaults."""
    from forecaster.tuning import best_trial

    tune(_cfg(small_dir, **{"tune.trials": 1}), root=tmp_path)
    with study_storage(embedded_url("t", tmp_path)) as storage:
        (trial,) = copy.deepcopy(optuna.load_study(study_name="t", storage=storage).get_trials())
    now = best_trial([trial], tmp_path / "best").config.train
    assert (now.burn_in_grad, now.burn_in_dropout, now.burn_in_ahead, now.halves) == (False, False, True, True)
    for key in ("burn_in_grad", "burn_in_dropout", "burn_in_ahead", "halves"):
        del trial.user_attrs["config"]["train"][key]
    del trial.user_attrs["config"]["intervals"]["step_tracking"]
    then = best_trial([trial], tmp_path / "best").config
    then_train = then.train
    assert (then_train.burn_in_grad, then_train.burn_in_dropout, then_train.burn_in_ahead) == (True, True, False)
    assert then_train.halves is False
    assert then.intervals.step_tracking == "separate"


def test_a_study_refuses_other_choices_before_any_trial_but_takes_another_range(small_dir, tmp_path):
    """Optuna cannot draw a choice from other values than a study's trials were drawn from:
    refused in one line naming the dimension, and no failed trial added to the study."""
    tune(_cfg(small_dir, **{"tune.trials": 1, "tune.space.cell": ["gru", "rnn"]}), root=tmp_path)
    with pytest.raises(ConfigError, match=r"study t searched cell over \['gru', 'rnn'\], this command over \['lstm'\]"):
        tune(_cfg(small_dir, **{"tune.trials": 1, "tune.space.cell": ["lstm"]}), root=tmp_path)
    with study_storage(embedded_url("t", tmp_path)) as storage:
        assert [tr.state for tr in optuna.load_study(study_name="t", storage=storage).trials] == [TrialState.COMPLETE]
    again = _cfg(small_dir, **{"tune.trials": 1, "tune.space.cell": ["gru", "rnn"]})
    again.tune.space.lookback = [12, 20]
    res = tune(again, root=tmp_path)
    assert list(res.trials["state"]) == ["COMPLETE", "COMPLETE"]


def test_a_study_refuses_to_continue_on_other_bars_but_not_on_other_test_bars(small_dir, tmp_path):
    """The same settings and tickers, but bars that changed since the study began (a bar
    appended, as a refreshed store has, or a revised one): refused, naming the ticker, and
    nothing added to the study. A copy of the same bars elsewhere, or bars changed only in the
    test split (which no trial sees), continue it."""
    root = tmp_path / "tune"
    tune(_cfg(small_dir, **{"tune.trials": 1}), root=root)
    bars = read_csv_bars(small_dir, "STOCKA")
    test_start = make_splits({"A": bars}, 100, 100).test_start
    prices = ["open", "high", "low", "close"]
    data = tmp_path / "data"
    data.mkdir()
    for sym in ("STOCKA", "STOCKB"):
        (data / f"{sym}.csv").write_bytes((small_dir / f"{sym}.csv").read_bytes())
    revised = bars.copy()
    revised.loc[revised.index >= test_start, prices] *= 1.01
    write_csv(revised, data / "STOCKA.csv")
    assert len(tune(_cfg(data, **{"tune.trials": 1}), root=root).trials) == 2
    appended = pd.concat([bars, bars.iloc[[-1]].set_axis([bars.index[-1] + pd.offsets.BDay()])])
    revised = bars.copy()
    revised.loc[revised.index[300], "volume"] += 1
    for changed, why in [
        (appended, f"its test split started {test_start.date()}, the bars read now start it 20"),
        (revised, "the training or validation bars of STOCKA have changed since"),
    ]:
        write_csv(changed, data / "STOCKA.csv")
        with pytest.raises(DataError, match=f"study t was run on other bars: {why}"):
            tune(_cfg(data, **{"tune.trials": 1}), root=root)
    assert len(pd.read_csv(root / "t" / "trials.csv")) == 2
    # the same tickers asked for, one of them skipped (a file of a header alone) now or then
    write_csv(bars, data / "STOCKA.csv")
    (data / "STOCKB.csv").write_text((small_dir / "STOCKB.csv").read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError, match="study t was run on other bars: STOCKB trained on then, not now"):
        tune(_cfg(data, **{"tune.trials": 1}), root=root)
    other = tmp_path / "tune-b"
    tune(_cfg(data, **{"tune.trials": 1}), root=other)  # a study begun without STOCKB
    (data / "STOCKB.csv").write_bytes((small_dir / "STOCKB.csv").read_bytes())
    with pytest.raises(DataError, match="study t was run on other bars: STOCKB trained on now, not then"):
        tune(_cfg(data, **{"tune.trials": 1}), root=other)
    assert len(pd.read_csv(root / "t" / "trials.csv")) == 2 and len(pd.read_csv(other / "t" / "trials.csv")) == 1


def test_a_study_begun_before_its_data_were_recorded_records_them_and_then_holds_to_them(small_dir, tmp_path):
    """A study file of a forecaster that recorded no data with its settings: continued, its
    data are recorded then, and a later command on other bars is refused as for any study."""
    import sqlite3

    from forecaster.tuning import objective_data, usable_bars

    root = tmp_path / "tune"
    cfg = _cfg(small_dir, **{"tune.trials": 1})
    tune(cfg, root=root)
    db = sqlite3.connect(root / "t.db")
    with db:
        db.execute("DELETE FROM study_user_attributes WHERE key = 'data'")
    db.close()
    with study_storage(embedded_url("t", root)) as storage:
        assert "data" not in optuna.load_study(study_name="t", storage=storage).user_attrs
    assert len(tune(cfg, root=root).trials) == 2
    with study_storage(embedded_url("t", root)) as storage:
        recorded = optuna.load_study(study_name="t", storage=storage).user_attrs["data"]
    assert recorded == objective_data(usable_bars(cfg, cfg.data.tickers)[0], cfg)
    data = tmp_path / "data"
    data.mkdir()
    (data / "STOCKB.csv").write_bytes((small_dir / "STOCKB.csv").read_bytes())
    bars = read_csv_bars(small_dir, "STOCKA")
    bars.loc[bars.index[300], "volume"] += 1
    write_csv(bars, data / "STOCKA.csv")
    with pytest.raises(DataError, match="the training or validation bars of STOCKA have changed since"):
        tune(_cfg(data, **{"tune.trials": 1}), root=root)


def test_a_study_whose_best_trial_records_a_config_this_forecaster_cannot_read_is_refused_before_any_trial(
    small_dir, tmp_path
):
    """A study a newer forecaster ran (its trials record a setting this one lacks): refused
    before any trial, naming the study and the trial, not after the search as a run.json that
    is not there; its trials and results are left as they were."""
    import sqlite3

    root = tmp_path / "tune"
    cfg = _cfg(small_dir, **{"tune.trials": 1})
    tune(cfg, root=root)
    before = {p.name: p.read_bytes() for p in (root / "t").iterdir()}
    db = sqlite3.connect(root / "t.db")
    with db:
        ((trial_id, stored),) = db.execute(
            "SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'config'"
        ).fetchall()
        newer = json.loads(stored)
        newer["train"]["newer_setting"] = 1
        db.execute(
            "UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'config'",
            (json.dumps(newer), trial_id),
        )
    db.close()
    with pytest.raises(ConfigError) as caught:
        tune(cfg, root=root)
    assert str(caught.value) == (
        f"study t in sqlite:///{(root / 't.db').resolve()} cannot be continued, as its best trial records a "
        "configuration this forecaster cannot read (invalid configuration (trial 0): train.newer_setting: unknown "
        "key): continue it with the forecaster that ran it, or give another --study name"
    )
    with study_storage(embedded_url("t", root)) as storage:
        assert len(optuna.load_study(study_name="t", storage=storage).trials) == 1
    assert {p.name: p.read_bytes() for p in (root / "t").iterdir()} == before


def test_an_interrupted_search_counts_its_pruned_trials_in_what_it_kept(small_dir, tmp_path):
    root = tmp_path / "tune"

    def pruned_then_stopped(number, rec):
        if number == 1:
            raise optuna.TrialPruned("pruned here")
        if number == 2:
            raise KeyboardInterrupt

    with pytest.raises(SearchInterrupted) as stop:
        tune(_cfg(small_dir, **{"tune.trials": 4}), root=root, on_epoch=pruned_then_stopped)
    assert str(stop.value).startswith(
        f"tuning interrupted: study t keeps 1 completed trial and 1 pruned in sqlite:///{root / 't.db'}; written: "
    )
    assert stop.value.result.counts() == {"complete": 1, "pruned": 1, "failed": 1, "running": 0}


def test_a_study_in_another_storage_keeps_its_results_folder(small_dir, tmp_path):
    """A study kept in a journal file, then the same --study without --storage: a new, empty
    study in the default file replaced the results of the journal's trials."""
    root = tmp_path / "tune"
    journal = f"journal:{tmp_path / 'j.log'}"
    tune(_cfg(small_dir, **{"tune.trials": 1, "tune.storage": journal}), root=root)
    before = {f.name: f.read_bytes() for f in (root / "t").iterdir()}
    with pytest.raises(ConfigError, match=r"holds the results of 1 trial\(s\) of a study t, and .* has no trial of it"):
        tune(_cfg(small_dir, **{"tune.trials": 1}), root=root)
    assert {f.name: f.read_bytes() for f in (root / "t").iterdir()} == before
    res = tune(_cfg(small_dir, **{"tune.trials": 1, "tune.storage": journal}), root=root)  # its own storage: on
    assert len(res.trials) == 2


def test_processes_on_the_default_study_file_propose_different_trials(small_dir, tmp_path):
    """Two tune processes on one default study (no --storage) both seeded tune.seed plus the
    trials they saw (none): they ran the same trials. Each now holds a number of its own, and
    any but the first mixes it into the seed; the first keeps its seed's proposals."""
    from forecaster.tuning import _sampler_seed, _worker_slot

    with _worker_slot(tmp_path, "s") as first, _worker_slot(tmp_path, "s") as second:
        assert (first, second) == (0, 1)
        with _worker_slot(tmp_path, "other") as alone:
            assert alone == 0
    with _worker_slot(tmp_path, "s") as again:
        assert again == 0  # let go at the end
    assert not list(tmp_path.glob(".*.lock"))
    cfg = _cfg(small_dir)
    assert _sampler_seed(cfg, 3, 0) == cfg.tune.seed + 3
    assert _sampler_seed(cfg, 3, 1) == _sampler_seed(cfg, 3, 1) != _sampler_seed(cfg, 3, 2) != cfg.tune.seed + 3

    def proposals(root: Path, busy: bool) -> list:
        cfg = _cfg(small_dir, **{"tune.trials": 2})
        with _worker_slot(root, "t") if busy else contextlib.nullcontext():  # another process's search under way
            res = tune(cfg, root=root)
        return res.trials[["lookback", "hidden_size"]].values.tolist()

    alone = proposals(tmp_path / "a", busy=False)
    assert proposals(tmp_path / "b", busy=False) == alone  # the first process: its seed's proposals
    assert proposals(tmp_path / "c", busy=True) != alone


# ---------------------------------------------------------------------------- two processes


def test_two_processes_share_one_study_through_a_journal_file(small_dir, tmp_path, monkeypatch):
    """`forecaster tune` in a second process and the same search in this one, on one journal
    file (Optuna's storage for several processes on one machine), with trials running at the
    same time: the study holds the sum of both processes' trials."""
    journal = tmp_path / "shared.log"
    conf = tmp_path / "tune.toml"
    conf.write_text(
        textwrap.dedent(
            f"""
            [data]
            source = "csv"
            data_dir = "{small_dir.as_posix()}"
            tickers = ["STOCKA", "STOCKB"]
            [window]
            val_days = 100
            test_days = 100
            horizon = 3
            [model]
            hidden_size = 8
            [train]
            epochs = 1
            threads = 1
            [tune]
            study = "shared"
            storage = "journal:{journal.as_posix()}"
            [tune.space]
            lookback = [10, 30]
            hidden_size = []
            num_layers = [1, 2]
            """
        )
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1")
    argv = [sys.executable, "-m", "forecaster", "tune", "--config", str(conf), "--trials", "2", "--json"]
    other = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    storage = open_storage(f"journal:{journal}", 10)
    seen_together = []

    def wait_for_the_other(number, rec):
        # hold this process's first trial open until the other process is running one too
        deadline = time.monotonic() + 240
        while not seen_together and time.monotonic() < deadline and other.poll() is None:
            running = optuna.load_study(study_name="shared", storage=storage).get_trials(states=(TrialState.RUNNING,))
            seen_together.extend(t.number for t in running if t.user_attrs.get("worker", {}).get("pid") == other.pid)
            time.sleep(0.2)

    monkeypatch.chdir(tmp_path)
    mine = tune(load_config(conf, {"tune.trials": 2}), on_epoch=wait_for_the_other)
    out, err = other.communicate(timeout=300)
    assert other.returncode == 0, err.decode()
    assert seen_together, "the two processes never ran trials at the same time"
    assert mine.added == 2 and json.loads(out)["added"] == 2
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # the sum of both processes' trials
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert {t.user_attrs["worker"]["pid"] for t in trials} == {os.getpid(), other.pid}
    assert len(pd.read_csv(tmp_path / "runs" / "tune" / "shared" / "trials.csv")) == 4


def test_importing_the_cli_does_not_import_optuna():
    code = "import sys, forecaster.cli; assert 'optuna' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_device_this_machine_lacks_stops_the_search_before_any_trial_is_recorded(small_dir, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA"):
        tune(_cfg(small_dir, **{"train.device": "cuda", "tune.trials": 1}), root=tmp_path / "tune")
    assert not (tmp_path / "tune").exists()  # no study, no trials.csv


def test_a_heartbeat_that_cannot_be_written_is_one_warning_line(caplog, capsys):
    """Optuna's heartbeat thread, ended by a locked database, printed a traceback of some 70
    lines before the search's own one-line error; another thread's error is left as it is."""
    import threading

    from forecaster.tuning import _heartbeat_failures_said

    def heartbeat():
        raise OperationalError("(sqlite3.OperationalError) database is locked\n[SQL: UPDATE trial_heartbeats ...]")

    def other():
        raise ZeroDivisionError("not a heartbeat")

    seen = []
    before = threading.excepthook
    threading.excepthook = lambda args: seen.append(type(args.exc_value).__name__)
    try:
        with caplog.at_level("WARNING", logger="forecaster"), _heartbeat_failures_said():
            for target in (heartbeat, other):
                t = threading.Thread(target=target, name=f"Thread-9 ({target.__name__})")
                t.start()
                t.join()
            named = threading.Thread(target=heartbeat, name="Thread-7 (_record_heartbeat)")
            named.start()
            named.join()
    finally:
        threading.excepthook = before
    assert seen == ["OperationalError", "ZeroDivisionError"]  # not a heartbeat thread by name: as before
    assert [r.getMessage() for r in caplog.records] == [
        "a trial's heartbeat could not be written to the study storage: (sqlite3.OperationalError) database is locked"
    ]
    assert threading.excepthook is not None and capsys.readouterr().err == ""


# ---------------------------------------------------------------------------- values and the best trial


def test_a_trials_value_is_its_best_epochs_validation_loss_not_its_last(small_dir, tmp_path, monkeypatch):
    """A trial whose validation loss rose after its best epoch is worth that best epoch (the
    weights its run keeps), in trials.csv and best.toml's header; best.toml has no [tune] table
    (a storage URL's password never reaches a train config)."""
    from forecaster.training import Trainer

    losses = iter([0.3, 0.2, 0.4])
    monkeypatch.setattr(Trainer, "_val_loss", lambda self, ends: next(losses))
    cfg = _cfg(small_dir, **{"tune.trials": 1, "train.epochs": 3, "train.patience": 5})
    res = tune(cfg, root=tmp_path)
    assert list(res.trials["value"]) == [pytest.approx(0.2)] and res.best.value == pytest.approx(0.2)
    text = (tmp_path / "t" / "best.toml").read_text()
    assert "validation pinball loss 0.2." in text
    assert "tune" not in tomllib.loads(text)


def test_a_search_closes_the_connections_of_its_sqlite_study(small_dir, tmp_path, monkeypatch):
    """tune() closes its storage's pooled database connections when it returns: left to the
    garbage collector, each SQLite connection warns on Python 3.13+ (unclosed database)."""
    import forecaster.tuning as tuning

    opened = []

    def kept(url, heartbeat):
        opened.append(open_storage(url, heartbeat))
        return opened[-1]

    monkeypatch.setattr(tuning, "open_storage", kept)
    tune(_cfg(small_dir, **{"tune.trials": 1}), root=tmp_path)
    (storage,) = opened
    assert storage.engine.pool.checkedin() == 0 and storage.engine.pool.checkedout() == 0


def test_the_best_trial_is_the_completed_one_of_the_lowest_value_the_first_of_a_tie(small_dir, tmp_path):
    """best.toml and --train-best take the completed trial of the lowest validation loss; of two
    alike, the earlier (a pruned trial, which has no value, is never it)."""
    from optuna.distributions import IntDistribution

    from forecaster.tuning import best_trial

    config = _cfg(small_dir).model_dump(mode="json")

    def trial(number, value, state=TrialState.COMPLETE):
        tr = optuna.trial.create_trial(
            state=state,
            value=value,
            params={"num_layers": 1 + number % 2},
            distributions={"num_layers": IntDistribution(1, 2)},
            user_attrs={"config": config},
        )
        tr.number = number
        return tr

    trials = [trial(0, 0.5), trial(1, 0.2), trial(2, 0.9), trial(3, 0.2), trial(4, None, TrialState.PRUNED)]
    best = best_trial(trials, tmp_path / "best")
    assert (best.number, best.value, best.params) == (1, 0.2, {"num_layers": 2})


def test_an_integer_dimension_reaches_both_ends_of_its_range():
    """``num_layers = [1, 2]`` in [tune.space] tries 1 and 2: the high end is in the range."""
    from forecaster.tuning import suggest

    dims = dict((d.name, (d, v)) for d, v in search_dims(load_config(None, {"tune.space.num_layers": [1, 2]})))
    dim, values = dims["num_layers"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {suggest(study.ask(), dim, values) for _ in range(30)}
    assert seen == {1, 2}


@pytest.mark.parametrize("where", ["in a trial", "between trials"])
def test_a_stop_signal_lost_in_a_finalizer_still_stops_the_search(small_dir, tmp_path, where, monkeypatch):
    """One `kill` in about thirty ran the whole search to its end and exited 0: its interrupt had
    been dropped inside the storage's cleanup code, and every later signal was ignored as the
    first one's echo. The stop it asked for now comes at the next training step or trial."""
    cfg = _cfg(small_dir, **{"tune.trials": 3})

    def on_epoch(number, rec):
        if where == "in a trial" and number == 1:
            drop_a_stop_signal()

    def on_trial(trial, best):
        if where == "between trials" and trial.number == 0:
            drop_a_stop_signal()

    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)  # what Python would print
    with pytest.raises(SearchInterrupted):
        tune(cfg, root=tmp_path, on_epoch=on_epoch, on_trial=on_trial)
    states = list(pd.read_csv(tmp_path / "t" / "trials.csv")["state"])
    assert states == (["COMPLETE", "FAIL"] if where == "in a trial" else ["COMPLETE"])
    assert dropped == []  # the stop's one line is the search's own


def test_a_grpc_storage_is_closed_with_its_channel(monkeypatch):
    """A gRPC storage's channel (a connection and its threads) was left open when tune ended,
    for as long as a Python caller's process lived."""
    from forecaster import tuning

    class Proxy:  # Optuna's GrpcStorageProxy (4.3 and later; 4.0 and 4.1 have none), made without a server
        closed = False

        def close(self):  # closes its channel
            self.closed = True

    monkeypatch.setattr(tuning, "_GRPC_PROXY", Proxy)
    proxy = Proxy()
    tuning.close_storage(proxy)
    assert proxy.closed


def test_a_grpc_storage_of_an_optuna_whose_client_has_no_close_is_left_as_it_is(monkeypatch):
    """Optuna 4.2's GrpcStorageProxy has no close() (4.3 added it): the end of every tune
    through it was an unexpected AttributeError."""
    from forecaster import tuning

    class Proxy:  # Optuna 4.2's GrpcStorageProxy
        pass

    monkeypatch.setattr(tuning, "_GRPC_PROXY", Proxy)
    tuning.close_storage(Proxy())


@pytest.mark.parametrize("url", ["grpc://localhost", "grpc://localhost:", "grpc://localhost:port", "grpc://h:70000"])
def test_a_grpc_storage_url_without_a_port_number_says_what_is_expected(monkeypatch, url):
    from forecaster import tuning

    class Proxy:  # Optuna's GrpcStorageProxy, made without a server
        def __init__(self, host, port):
            raise AssertionError(f"made with port {port!r}")

    monkeypatch.setattr(tuning, "_GRPC_PROXY", Proxy)
    with pytest.raises(ConfigError, match=r": a gRPC storage is grpc://HOST:PORT, with a port number$"):
        open_storage(url, 10)


def test_a_grpc_storage_url_with_an_optuna_that_has_no_grpc_client_says_which_it_needs(monkeypatch):
    from forecaster import tuning

    monkeypatch.setattr(tuning, "_GRPC_PROXY", None)  # Optuna 4.0 and 4.1
    with pytest.raises(ConfigError, match=r"^storage grpc://localhost:13000 needs Optuna 4\.2 or later, not "):
        open_storage("grpc://localhost:13000", 10)


@pytest.mark.parametrize(
    "url, missing",
    [
        ("grpc://localhost:13000", "no module named 'grpc' (pip install grpcio)"),
        ("redis://localhost:1/0", "no module named 'redis' (pip install redis)"),
    ],
)
def test_a_grpc_or_redis_storage_url_warns_of_nothing(recwarn, url, missing):
    """Optuna's ExperimentalWarning, with a line of its source, on every tune through them."""
    from forecaster.tuning import _GRPC_PROXY, close_storage

    if url.startswith("grpc:") and _GRPC_PROXY is None:  # Optuna 4.0 and 4.1 (make test-oldest)
        missing = "needs Optuna 4.2 or later"
    else:
        missing = f"needs a package that is not installed: {missing}"
    try:
        storage = open_storage(url, 10)  # a gRPC channel connects when first used
    except (ConfigError, TemporaryFailure) as e:  # grpcio and redis are not among the dependencies
        assert isinstance(e, TemporaryFailure) or missing in str(e)
    else:
        close_storage(storage)
    assert not [w for w in recwarn if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]


def test_a_redis_storage_that_cannot_be_reached_is_a_temporary_failure(monkeypatch):
    """redis' ConnectionError (its server down, where the redis package is installed) was an
    unexpected error, not a storage to try again later (exit 75), as a database's is."""

    class ConnectionError(Exception):  # redis.exceptions.ConnectionError, a RedisError, no OSError
        __module__ = "redis.exceptions"

    def unreachable(url):
        raise ConnectionError("Error 111 connecting to localhost:1. Connection refused.")

    monkeypatch.setattr(optuna.storages.journal, "JournalRedisBackend", unreachable)
    with pytest.raises(TemporaryFailure, match=r"^cannot reach the study storage redis://localhost:1/0: Error 111 "):
        open_storage("redis://localhost:1/0", 10)


def test_a_storage_without_its_driver_names_the_module_and_what_installs_it():
    """Optuna's own words named no package ("Failed to import DB access module for the specified
    storage URL. Please install appropriate one."), and the README's psycopg2-binary is not the
    driver SQLAlchemy 2.1 reads postgresql:// with."""
    from forecaster.tuning import _missing_package

    with pytest.raises(ConfigError) as raised:
        open_storage("mysql+pymysql://tuner@db.example/optuna", 10)  # PyMySQL is no dependency
    assert str(raised.value) == (
        "storage mysql+pymysql://tuner@db.example/optuna needs a package that is not installed: "
        "no module named 'pymysql' (pip install PyMySQL)"
    )
    for module, pip in (("psycopg", "'psycopg[binary]'"), ("psycopg2._psycopg", "psycopg2-binary"), ("zzz", "zzz")):
        try:
            try:
                raise ModuleNotFoundError(f"No module named {module!r}", name=module)
            except ImportError as inner:
                raise ImportError("Failed to import DB access module. Please install appropriate one.") from inner
        except ImportError as e:
            assert _missing_package(e) == f"no module named {module.split('.')[0]!r} (pip install {pip})"
    assert _missing_package(ImportError("cannot import name X")) == "cannot import name X"  # no module named: as said


def test_a_trial_that_runs_the_device_out_of_memory_fails_and_the_search_goes_on(small_dir, tmp_path, monkeypatch):
    from forecaster import training

    real, calls = training.Trainer._epoch, []

    def first_trial_runs_out(self, *args, **kwargs):
        calls.append(self)
        if calls[0] is self and self.epoch == 1:  # the first trial, in its second epoch
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(training.Trainer, "_epoch", first_trial_runs_out)
    res = tune(_cfg(small_dir, **{"tune.trials": 2}), root=tmp_path)
    trials = pd.read_csv(tmp_path / "t" / "trials.csv")
    assert list(trials["state"]) == ["FAIL", "COMPLETE"] and res.best.number == 1
    assert list(tmp_path.rglob("resume.safetensors")) == []
