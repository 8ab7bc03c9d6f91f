"""Hyper-parameter search with Optuna (`forecaster tune`).

Each trial trains one model with :func:`forecaster.training.train` on a configuration drawn from
the search space (:data:`forecaster.config.SEARCH_SPACE`, narrowed by ``[tune.space]`` and by the
keys the command line fixes) and is scored by its best epoch's validation pinball loss: the test
split never enters the objective. A seeded TPE sampler proposes configurations; a median pruner,
fed every epoch's validation loss through :class:`PruningHook`, stops trials that trail the
others. The study lives in an Optuna storage, by default the SQLite file
``runs/tune/<study>.db``, so an interrupted search continues where it stopped; ``--storage``
lets several processes or machines work on one study.

Only the tune command imports this module, and with it Optuna.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from .checkpoint import EARLIER_SETTINGS, Origin, as_made, run_lock_path
from .config import SEARCH_SPACE, TUNE_ROOT, Config, SearchDim, active_dims, config_from_dict, config_toml, load_config
from .errors import (
    ConfigError,
    DataError,
    ForecasterError,
    RunWriteError,
    TemporaryFailure,
    TickerError,
    TrainingError,
)
from .fsio import (
    PathLike,
    atomic_write_text,
    cannot_write_into,
    file_in_the_way,
    file_lock,
    not_a_folder,
    refuse_empty_folders,
    write_denied,
)
from .outputs import write_csv
from .tickers import validate_ticker
from .training import (
    EpochRecord,
    Interrupted,
    TrainResult,
    checked_tickers,
    fitted_hashes,
    raise_if_stopped,
    resolve_device,
    sigterm_as_interrupt,
    train,
    usable_bars,
)
from .windows import make_splits

log = logging.getLogger("forecaster")

GRACE_BEATS = 3
"""A trial in a database storage whose heartbeat has been silent this many intervals is failed."""
JOURNAL = "journal:"
"""``--storage journal:PATH``: Optuna's journal storage in a file (several processes, one machine)."""
LOCAL_KEYS = ("run_dir", "data.data_dir", "train.device", "train.threads", "predict.", "tune.")
"""Config keys that may differ between the processes of one study (paths, hardware, tuning)."""
TRIALS_CSV, BEST_TOML, HISTORY_PNG = "trials.csv", "best.toml", "history.png"
TRIAL_DIR = "forecaster-trial-"
"""Prefix of a trial's scratch folder in the system's temp folder (then the process id)."""


@dataclass
class BestTrial:
    number: int
    value: float
    params: dict[str, Any]
    config: Config  # the trial's complete configuration, run_dir set to the final run's


@dataclass
class TuneResult:
    study: str
    storage: str  # the storage URL, any password hidden
    trials: pd.DataFrame  # the rows of trials.csv
    added: int  # trials this process ran
    best: BestTrial | None
    files: dict[str, Path] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        states = self.trials["state"].value_counts() if len(self.trials) else {}
        return {s.name.lower(): int(states.get(s.name, 0)) for s in (TrialState.COMPLETE, TrialState.PRUNED)} | {
            "failed": int(states.get("FAIL", 0)),
            "running": int(states.get("RUNNING", 0)),
        }


# ---- the search space -------------------------------------------------------------------------
def search_dims(cfg: Config, fixed: Iterable[str] = ()) -> list[tuple[SearchDim, list]]:
    """The dimensions searched, each with its values or [low, high]: every dimension the config
    has, less those whose key is in ``fixed`` (set on the command line) or whose range in
    ``[tune.space]`` is empty."""
    fixed = {fixed} if isinstance(fixed, str) else set(fixed)  # one key, not its letters
    known = _dotted_keys(cfg.model_dump())
    if unknown := sorted(k for k in fixed if k not in known):
        raise ConfigError(f"unknown config key(s) among the fixed ones: {', '.join(map(repr, unknown))}")
    space = cfg.tune.space.model_dump()
    return [(d, space[d.name]) for d in active_dims() if d.key not in fixed and space[d.name]]


def _dotted_keys(tree: dict, prefix: str = "") -> set[str]:
    """Every key of a config's ``model_dump()``, dotted (``train.epochs``), sections too."""
    keys = set()
    for k, v in tree.items():
        keys.add(prefix + k)
        if isinstance(v, dict):
            keys |= _dotted_keys(v, f"{prefix}{k}.")
    return keys


def trial_config(base: Config, params: dict[str, Any]) -> Config:
    """``base`` with the dotted keys of ``params`` set: the configuration one trial trains."""
    tree = base.model_dump(mode="json", exclude={"run_dir", "tune"})
    try:
        return load_config(None, params, base=tree)
    except ConfigError as e:
        raise ConfigError(f"the search space reaches an invalid configuration: {e}") from None


def check_space(base: Config, dims: list[tuple[SearchDim, list]]) -> None:
    """Refuse, before any trial, a space whose every value does not make a valid config."""
    if not dims:
        raise ConfigError("nothing to search: every dimension is fixed or empty in [tune.space]")
    for dim, values in dims:
        for v in values:
            trial_config(base, {dim.key: v})


def suggest(trial: optuna.Trial, dim: SearchDim, values: list) -> Any:
    if dim.kind == "choice":
        return trial.suggest_categorical(dim.name, values)
    if dim.kind == "int":
        return trial.suggest_int(dim.name, int(values[0]), int(values[1]), log=dim.log)
    return trial.suggest_float(dim.name, float(values[0]), float(values[1]), log=dim.log)


def check_choices(study: optuna.Study, dims: list[tuple[SearchDim, list]]) -> None:
    """Refuse, before any trial, a choice dimension whose values differ from those the study's
    trials were drawn from: Optuna would fail every trial of this command on it. A range (an
    integer or a float dimension) may change from one command to the next."""
    before: dict[str, tuple] = {}
    for tr in study.get_trials(deepcopy=False):
        for name, dist in tr.distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                before.setdefault(name, dist.choices)
    for dim, values in dims:
        if dim.kind == "choice" and dim.name in before and tuple(values) != before[dim.name]:
            raise ConfigError(
                f"study {study.study_name} searched {dim.name} over {list(before[dim.name])}, this command over "
                f"{list(values)}: the choices of a study cannot change; give [tune.space] {dim.name} the same "
                "values (or fix it with a flag) to continue it, or another --study name"
            )


# ---- storage ----------------------------------------------------------------------------------
def storage_label(url: str) -> str:
    """A storage URL fit to print: the password, if any, replaced by ***: the one after
    ``user:``, read up to the ``@`` as SQLAlchemy reads it (it may hold ``/`` and ``:``), and a
    ``password=`` or ``passwd=`` query parameter (MySQL's drivers take the latter)."""
    url = re.sub(r"^([^:/]+://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"([?&](?:password|passwd)=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def embedded_url(study: str, root: Path = TUNE_ROOT) -> str:
    return f"sqlite:///{(Path(root) / f'{study}.db').resolve()}"


def open_storage(url: str, heartbeat: int):
    """An Optuna storage from a URL: ``journal:PATH`` (a journal file, safe for several processes
    on one machine), ``redis://...`` (a journal in Redis), ``grpc://HOST:PORT`` (Optuna's storage
    proxy) or any SQLAlchemy database URL (``sqlite:///...``, ``postgresql://...``,
    ``mysql://...``), the latter with a heartbeat so a killed worker's trial is failed."""
    label = storage_label(url)
    if re.fullmatch(r"sqlite:///?(:memory:)?(\?.*)?", url):  # SQLite in memory: the study would end with the command
        raise ConfigError(
            f"the study storage {label} is a database in memory, which keeps nothing once the command ends: "
            "name a file, e.g. sqlite:///runs/tune/study.db"
        )
    for form, example in ((JOURNAL, "study.log"), ("sqlite:///", "study.db")):
        path = Path(url[len(form) :]).expanduser() if url.startswith(form) else None
        if path is not None and path.is_dir():  # "unable to open database file", which no retry mends
            raise ConfigError(
                f"the study storage {label} names a folder: name a file in it, e.g. {form}{path}/{example}"
            )
        if path is not None and (blocker := file_in_the_way(path.parent)):  # "File exists", naming no storage
            raise ConfigError(f"cannot make the study storage {label}: {not_a_folder(blocker)}")
        if path is not None and path.exists() and not path.is_file():  # /dev/null, a pipe: "Invalid argument"
            raise ConfigError(f"the study storage {label} is not a regular file: name a file, e.g. {form}{example}")
    if url.startswith("sqlite:///"):
        _refuse_read_only(Path(url[len("sqlite:///") :]).expanduser(), label)
    try:
        if url.startswith(JOURNAL):
            from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

            path = Path(url[len(JOURNAL) :]).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            # the open() lock: what Optuna's docs advise where symlinks are unsupported (Windows, NFSv3+)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path), JournalFileOpenLock(str(path))))
        if url.startswith(("redis://", "rediss://")):
            from optuna.storages.journal import JournalRedisBackend

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # a warning on every tune, to no end
                return optuna.storages.JournalStorage(JournalRedisBackend(url))
        if url.startswith("grpc://"):
            if _GRPC_PROXY is None:
                raise ConfigError(f"storage {label} needs Optuna 4.2 or later, not {optuna.__version__}")
            host, _, port = url[len("grpc://") :].rstrip("/").rpartition(":")
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(
                    f"unusable storage URL {label}: a gRPC storage is grpc://HOST:PORT, with a port number"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # a warning on every tune, to no end
                return _GRPC_PROXY(host=host or "localhost", port=int(port))
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, SCHEMA_TRIES + 1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)  # the heartbeat argument
                    return _RDBStorage(
                        url,
                        heartbeat_interval=heartbeat,
                        grace_period=GRACE_BEATS * heartbeat,
                        # a write waits for another process's rather than failing after sqlite's 5 s
                        engine_kwargs={"connect_args": {"timeout": SQLITE_BUSY_S}} if url.startswith("sqlite:") else {},
                    )
            except Exception as e:
                if attempt == SCHEMA_TRIES or not _made_meanwhile(e):
                    raise
                time.sleep(0.1 * attempt)  # another process is making the tables: they are there in a moment
    except ImportError as e:
        raise ConfigError(f"storage {label} needs a package that is not installed: {_missing_package(e)}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:  # a journal file that holds something else
        raise _unreachable(e, url) from None
    except ValueError as e:
        raise ConfigError(f"unusable storage URL {label}: {e}") from None
    except Exception as e:
        if _is_bad_url(e):  # not a URL at all, or a database SQLAlchemy has no dialect for
            first = str(e).strip().splitlines()[0].replace(url, label).rstrip(":")
            raise ConfigError(f"unusable storage URL {label}: {first}; expected {STORAGE_FORMS}") from None
        if isinstance(e, OSError) and not _storage_down(e):  # a journal file that cannot be made or opened
            why = e.strerror or type(e).__name__
            raise ForecasterError(f"cannot open the study storage {label}: {why}") from None
        raise _unreachable(e, url) from None


_PIP_NAMES = {
    "psycopg": "psycopg[binary]",  # postgresql:// with SQLAlchemy 2.1 and later
    "psycopg2": "psycopg2-binary",  # postgresql:// before, and postgresql+psycopg2://
    "MySQLdb": "mysqlclient",  # mysql://
    "pymysql": "PyMySQL",  # mysql+pymysql://
    "redis": "redis",
    "grpc": "grpcio",
}
"""The package pip installs each storage's driver module from, where the names differ."""


def _missing_package(e: ImportError) -> str:
    """Which module a storage's driver lacks and what installs it: the module Optuna or
    SQLAlchemy failed to import, found in the chain of ``e`` (their own message names no
    package: "Failed to import DB access module ... install appropriate one")."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ModuleNotFoundError) and cause.name:
            top = cause.name.split(".")[0]
            return f"no module named {top!r} (pip install {shlex.quote(_PIP_NAMES.get(top, top))})"
        cause = cause.__cause__ or cause.__context__
    return str(e)


class _RDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage, its engine disposed when its making fails. The constructor makes the
    engine, then connects to make the tables and check their version; when that fails (a file
    that is no database, a server that does not answer, a stop meanwhile) it raises, with no
    storage handed back to close, and the connection stayed open (the file with it) until the
    garbage collector came by."""

    def __init__(self, *args, **kwargs) -> None:
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            close_storage(self)
            raise


_GRPC_PROXY = getattr(optuna.storages, "GrpcStorageProxy", None)
"""Optuna's client of a storage served over gRPC (Optuna 4.2 and later; None before)."""


def close_storage(storage) -> None:
    """Close the database connections an SQLAlchemy storage (Optuna's RDBStorage) keeps in its
    engine's pool, also those of one whose making failed part way, and a gRPC storage's channel.
    Left to the garbage collector, each SQLite connection keeps its file open until then, and
    warns on Python 3.13+ (ResourceWarning: unclosed database); a gRPC channel keeps its
    connection and threads, for as long as a Python caller's process lives. A journal file is
    not held open between writes."""
    if _GRPC_PROXY is not None and isinstance(storage, _GRPC_PROXY):
        if hasattr(storage, "close"):  # Optuna 4.3 and later: 4.2's client keeps its channel to itself
            storage.close()
        return
    if (engine := getattr(storage, "engine", None)) is not None:
        try:
            if getattr(storage, "scoped_session", None) is not None:
                storage.remove_session()
        finally:
            engine.dispose()


SQLITE_BUSY_S = 60
"""Seconds a write to a SQLite study waits while another process holds the file's lock."""
SCHEMA_TRIES = 5
"""Openings of a database storage whose tables another process was making at the same moment."""


def _made_meanwhile(e: Exception) -> bool:
    """Whether ``e`` is a database's tables or study being made by another process at the same
    moment (tune processes started together on a new study): "table ... already exists", or a
    unique key another process wrote first. Opening again finds them made."""
    names = {c.__name__ for c in type(e).__mro__}
    return "IntegrityError" in names or ("OperationalError" in names and "already exists" in str(e))


def _refuse_read_only(path: Path, label: str) -> None:
    """SQLite writes the study file and a journal beside it: a folder or a file this process may
    not write is an error to mend (exit 1), not a database to try again later (exit 75)."""
    folder = path.parent
    if folder.is_dir() and (denied := cannot_write_into(folder)) is not None:  # Read-only file system, or no permission
        raise ConfigError(f"cannot write the study storage {label}: {denied.strerror} on the folder {folder}")
    if path.is_file() and not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"cannot write the study storage {label}: {write_denied(path).strerror} on {path}")


STORAGE_FORMS = "journal:FILE, sqlite:///FILE, postgresql://..., mysql://..., redis://... or grpc://HOST:PORT"
"""The storage URLs `--storage` takes, as an error message lists them."""


def _is_bad_url(e: Exception) -> bool:
    """SQLAlchemy's ArgumentError (NoSuchModuleError is one): the URL itself is wrong, which no
    retry mends."""
    return any(c.__name__ == "ArgumentError" and c.__module__.startswith("sqlalchemy") for c in type(e).__mro__)


def _storage_cause(e: BaseException) -> BaseException:
    """The database's own error under ``e`` (Optuna wraps a failed commit, "database is locked"
    among them, in a StorageInternalError), or ``e``."""
    seen = e
    while seen is not None:
        if _storage_down(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return e


DISK_FULL = ("database or disk is full", "No space left on device")
"""What a database says when the disk under it (or a quota) is full: SQLite's SQLITE_FULL, and
the server's own words (PostgreSQL's "could not extend file ...")."""


def _study_file(url: str) -> str | None:
    """The study's file for a SQLite or journal storage (its URL's path); None for others."""
    for form in ("sqlite:///", JOURNAL):
        if url.startswith(form):
            return url[len(form) :].split("?", 1)[0]
    return None


def _storage_place(url: str) -> str:
    """The study's file for a SQLite or journal storage, else its URL fit to print."""
    return _study_file(url) or storage_label(url)


def _unreachable(e: Exception, url: str) -> Exception:
    """A database that cannot be reached now (server down, file locked) is worth retrying
    later (exit 75); one whose disk is full is not (exit 1, naming its file: a retry every so
    often finds it as full); a file that holds no study (not a database, not a journal: a
    ValueError from reading it) is an error naming it; any other exception is returned as it is."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if type(e).__name__ == "OperationalError" and any(words in str(e) for words in DISK_FULL):
        why = re.sub(r"^\([\w.]+\) ", "", first)  # sqlalchemy's "(sqlite3.OperationalError) " prefix
        why = why if "No space left on device" in why else f"No space left on device ({why})"
        return ForecasterError(f"cannot write the study storage {_storage_place(url)}: {why}")
    if _storage_down(e):
        return TemporaryFailure(f"cannot reach the study storage {storage_label(url)}: {first}")
    if type(e).__name__ == "DatabaseError" or isinstance(e, ValueError):
        first = re.sub(r"^\([\w.]+\) ", "", first)  # sqlalchemy's "(sqlite3.DatabaseError) " prefix
        return ConfigError(
            f"the study storage {storage_label(url)} cannot be read as an Optuna study ({first}): "
            "move that file away, or give another --study or --storage"
        )
    return e


def _storage_down(e: BaseException) -> bool:
    """Whether ``e`` says the study's storage cannot be reached or used now: a database's
    OperationalError (sqlalchemy's and the drivers' name for it: locked, server down, disk full),
    a Redis server or a gRPC storage server that does not answer."""
    return type(e).__name__ == "OperationalError" or _redis_down(e) or _grpc_down(e)


def _grpc_down(e: BaseException) -> bool:
    """Whether ``e`` is a gRPC call that failed because its server cannot be reached now (an
    RpcError whose code is UNAVAILABLE or DEADLINE_EXCEEDED)."""
    if not type(e).__module__.startswith("grpc") or not callable(getattr(e, "code", None)):
        return False
    try:
        return getattr(e.code(), "name", None) in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    except Exception:  # an RpcError that is not a call's: no code to read
        return False


def _redis_down(e: BaseException) -> bool:
    """Whether ``e`` is redis' own ConnectionError or TimeoutError (a RedisError, no OSError): a
    Redis server that cannot be reached now."""
    return type(e).__module__.startswith("redis") and type(e).__name__ in ("ConnectionError", "TimeoutError")


# ---- trials left running by a dead process ----------------------------------------------------
def _machine() -> str:
    """This machine and process namespace: where a process id means the same process."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())  # a reboot ends every pid
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))  # containers on one host
    return "|".join(parts)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: a number no process can have
        return False
    except OSError:
        return True  # exists but belongs to someone else
    return True


def fail_abandoned(study: optuna.Study) -> list[int]:
    """Mark failed the trials left RUNNING by a process of this machine that no longer exists
    (killed with -9, or the machine lost power); return their numbers. Trials of other
    machines are failed by the database storages' heartbeat instead."""
    here, failed = _machine(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker") or {}
        if owner.get("machine") != here or _alive(int(owner.get("pid", os.getpid()))):
            continue
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        failed.append(t.number)
        log.warning("trial %d was left running by process %s, which is gone: marked failed", t.number, owner["pid"])
    return failed


def remove_abandoned_trial_dirs() -> None:
    """Delete the scratch folders of trials whose process was killed before it could."""
    for d in Path(tempfile.gettempdir()).glob(f"{TRIAL_DIR}*-*"):
        pid = d.name[len(TRIAL_DIR) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


# ---- one trial ----------------------------------------------------------------------------------
class PruningHook:
    """The ``on_epoch`` callback of a trial's training: reports each epoch's validation loss to
    the trial and raises :class:`optuna.TrialPruned` when the pruner says stop, so training ends
    before it writes anything. The budget's last epoch is never pruned: the trial is complete
    by then, and its value counts."""

    def __init__(self, trial: optuna.Trial, last_epoch: int, then: Callable[[int, EpochRecord], None] | None = None):
        self.trial, self.last_epoch, self.then = trial, last_epoch, then

    def __call__(self, rec: EpochRecord) -> None:
        self.trial.report(rec.val_loss, rec.epoch)
        if self.then:
            self.then(self.trial.number, rec)
        if rec.epoch < self.last_epoch and self.trial.should_prune():
            raise optuna.TrialPruned(f"validation loss {rec.val_loss:.5f} at epoch {rec.epoch} trails the median")


class Objective:
    """Train the trial's configuration; its value is the best epoch's validation pinball loss."""

    def __init__(self, base: Config, dims: list[tuple[SearchDim, list]], on_epoch=None):
        self.base, self.dims, self.on_epoch = base, dims, on_epoch
        self.worker = {"machine": _machine(), "pid": os.getpid()}
        self.started = 0

    def __call__(self, trial: optuna.Trial) -> float:
        self.started += 1
        trial.set_user_attr("worker", self.worker)
        fail_abandoned(trial.study)
        cfg = trial_config(self.base, {d.key: suggest(trial, d, values) for d, values in self.dims})
        trial.set_user_attr("config", cfg.model_dump(mode="json"))
        # the trial's run is only a means to its validation loss: it goes when the trial ends
        with tempfile.TemporaryDirectory(prefix=f"{TRIAL_DIR}{os.getpid()}-") as tmp:
            try:
                res = train(
                    cfg,
                    run_dir=Path(tmp) / "run",
                    on_epoch=PruningHook(trial, cfg.train.epochs, self.on_epoch),
                    keep_diverged=False,  # a trial that diverges fails: its run would go with it
                    distributed=False,  # each trial is one process, whatever a job runner sets
                    checkpoints=False,  # its run goes with the trial: the study is what resumes
                )
            except Interrupted:
                raise KeyboardInterrupt from None  # the study marks the trial failed and stops
            except TrainingError as e:
                trial.set_user_attr("error", str(e))
                raise
            except DataError as e:
                # the bars were read before the first trial: what fails here is the trial's own
                # setting (a lookback longer than every ticker's training split), not the data
                trial.set_user_attr("error", str(e))
                raise TrainingError(str(e)) from None
        m = res.manifest.metrics
        trial.set_user_attr("best_epoch", m.best_epoch)
        return float(m.best_val_loss)


# ---- the study ----------------------------------------------------------------------------------
def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def objective_data(bars: dict[str, pd.DataFrame], cfg: Config) -> dict[str, Any]:
    """What a trial's value depends on in the data: where the test split starts, and per ticker
    a hash of its bars before it (a bar revised in the test split changes no trial)."""
    test_start = make_splits(bars, cfg.window.val_days, cfg.window.test_days).test_start
    return {"test_start": str(test_start.date()), "bars": fitted_hashes(bars, test_start)}


def _check_setup(study: optuna.Study, base: Config, searched: set[str], data: dict[str, Any]) -> None:
    """A study compares trials on one data set and budget: refuse to continue it with others.
    ``data``: :func:`objective_data` of the bars this command read."""
    setup = {
        k: v
        for k, v in _flat(base.model_dump(mode="json")).items()
        if not k.startswith(LOCAL_KEYS) and k not in searched
    }
    before = study.user_attrs.get("setup")
    if before is None and study.get_trials(deepcopy=False):
        raise ConfigError(
            f"study {study.study_name} was not made by forecaster tune "
            "(its trials record no forecaster settings): give another --study name"
        )
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if foreign := [tr for tr in finished if "config" not in tr.user_attrs]:  # other code's trials, added to it
        shown = ", ".join(str(tr.number) for tr in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ConfigError(
            f"study {study.study_name} holds {len(foreign)} trial(s) that forecaster tune did not run (number "
            f"{shown}: no forecaster settings recorded), whose values are not the validation losses it compares: "
            "give another --study name"
        )
    if before is None:
        study.set_user_attr("setup", setup)
        study.set_user_attr("searched", sorted(searched))
        study.set_user_attr("data", data)
        return
    # a setting that came after the study began: its trials ran with the value it had before
    before = {**_flat(EARLIER_SETTINGS), **before}
    either = searched | set(study.user_attrs.get("searched", []))
    for k in sorted(set(setup) & set(before) - either):
        if _setting_value(k, setup[k]) != _setting_value(k, before[k]):
            raise ConfigError(
                f"study {study.study_name} was run with {k} = {before[k]!r}, this command has {setup[k]!r}: "
                "use the same settings to continue it, or another --study name"
            )
    seen = study.user_attrs.get("data")
    if seen is None:  # a study begun before its data were recorded: from now on they are
        study.set_user_attr("data", data)
        return
    added, lost = sorted(set(data["bars"]) - set(seen["bars"])), sorted(set(seen["bars"]) - set(data["bars"]))
    if added or lost:  # the same tickers asked for, but one skipped (no usable bars) then or now
        why = "; ".join(
            [f"{', '.join(added)} trained on now, not then"] * bool(added)
            + [f"{', '.join(lost)} trained on then, not now (skipped: no usable bars?)"] * bool(lost)
        )
    elif seen["test_start"] != data["test_start"]:
        why = f"its test split started {seen['test_start']}, the bars read now start it {data['test_start']}"
    else:
        changed = sorted(s for s in set(data["bars"]) & set(seen["bars"]) if data["bars"][s] != seen["bars"][s])
        why = f"the training or validation bars of {', '.join(changed)} have changed since" if changed else ""
    if why:
        raise DataError(
            f"study {study.study_name} was run on other bars: {why}, so the trials would not compare; "
            "tune on the bars it was run on, or start another --study name"
        )


def _setting_value(key: str, value: Any) -> Any:
    """A setting as it tells on the trials: the tickers as a set of symbols (train reads them
    in its own order, once each, and ``brk-b`` as ``BRK-B``), any other as it is."""
    if key == "data.tickers" and isinstance(value, list):
        return sorted({_symbol(t) for t in value})
    return value


def _symbol(text: Any) -> Any:
    """``text`` as train reads the ticker (a study's stored setting that is none, as it is)."""
    try:
        return validate_ticker(text)
    except (TickerError, TypeError, AttributeError):
        return text


def _sampler_seed(cfg: Config, n_before: int, slot: int = 0) -> int:
    """The TPE sampler's seed: ``tune.seed`` plus the trials already in the study, so that a
    resumed study does not replay the proposals it started with. With ``tune.storage`` (a study
    that several processes share) mixed with a random value of this process's own: workers
    started together must not propose the same trials (their process ids, added before, are
    consecutive, or all alike in containers, as the counts of trials they see may be). On the
    default storage mixed with the process's ``slot`` (:func:`_worker_slot`) when it is not the
    first: the first process's proposals stay those of its seed."""
    seed = cfg.tune.seed + n_before
    if cfg.tune.storage:
        seed = int(np.random.SeedSequence([seed, secrets.randbits(64)]).generate_state(1)[0])
    elif slot:
        seed = int(np.random.SeedSequence([seed, slot]).generate_state(1)[0])
    return seed % 2**32  # the sampler's numpy generator takes 0 to 2**32 - 1; the config any seed >= 0


WORKER_SLOTS = 64
"""Processes on one default study file that get numbers of their own (any more share the number 64)."""


@contextlib.contextmanager
def _worker_slot(root: Path, study: str) -> Iterator[int]:
    """The lowest number (0, 1, ...) no other process searching ``study`` in its default file on
    this machine holds, held until the search ends (a lock that dies with its process)."""
    from filelock import FileLock, Timeout

    root.mkdir(parents=True, exist_ok=True)
    for slot in range(WORKER_SLOTS):
        lock = FileLock(root / f".{study}.worker{slot}.lock", timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            continue
        except OSError:  # a folder that takes no lock file: one process's numbers, as before
            break
        try:
            yield slot
        finally:
            lock.release()
            with contextlib.suppress(OSError):  # no lock file left behind (at worst two share a number)
                os.unlink(lock.lock_file)
        return
    yield WORKER_SLOTS


class _OncePerMessage(logging.Filter):
    """During trials (:attr:`trials`): no info lines (training's own), each warning once rather
    than per trial, nor one given before them (a ticker skipped, said as the bars are first
    read). Before them every line passes, its warnings noted."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()
        self.trials = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return not self.trials
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


@contextlib.contextmanager
def _heartbeat_failures_said() -> Iterator[None]:
    """A trial's heartbeat that cannot be written (the study's database locked longer than a
    write waits) ends Optuna's heartbeat thread with a traceback of some 70 lines on stderr:
    one warning line instead, naming the error. Other threads' errors are left as they are."""
    before = threading.excepthook

    def hook(args) -> None:
        if args.thread is not None and "_record_heartbeat" in args.thread.name and args.exc_value is not None:
            first = (str(args.exc_value).strip().splitlines() or [type(args.exc_value).__name__])[0]
            log.warning("a trial's heartbeat could not be written to the study storage: %s", first)
            return
        before(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = before


@contextlib.contextmanager
def _filtered(quiet: _OncePerMessage, trials: bool) -> Iterator[None]:
    """``quiet`` on the logger's handlers for the block: noting warnings before the trials, or
    (``trials``) quieting them."""
    quiet.trials = trials
    handlers = list(log.handlers)
    for h in handlers:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)


def best_run_dir(cfg: Config, run_dir: PathLike | None = None) -> Path:
    """Where the best configuration's run goes: ``run_dir``, else ``runs/<study>-best``."""
    return Path(run_dir) if run_dir is not None else Path("runs") / f"{cfg.tune.study}-best"


def _keeps_optuna_verbosity(fn):
    """``fn`` with Optuna's log level put back as it was when it returns: the search quiets
    Optuna's own lines (its failures are reported once, plainly), not the caller's."""

    @functools.wraps(fn)
    def kept(*args, **kwargs):
        before = optuna.logging.get_verbosity()
        try:
            return fn(*args, **kwargs)
        finally:
            optuna.logging.set_verbosity(before)

    return kept


@_keeps_optuna_verbosity
def tune(
    cfg: Config,
    *,
    fixed: Iterable[str] = (),
    run_dir: PathLike | None = None,
    root: PathLike = TUNE_ROOT,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
    on_trial: Callable[[FrozenTrial, float | None], None] | None = None,
    best_lock_timeout: float | None = None,
) -> TuneResult:
    """Run ``cfg.tune.trials`` more trials of the study ``cfg.tune.study`` (created if new) and
    write its results under ``root/<study>/``.

    ``fixed``: config keys set on the command line, taken out of the search. ``run_dir``: where
    the best configuration's run goes (``best.toml``'s ``run_dir``; default
    ``runs/<study>-best``). ``on_epoch(trial_number, record)`` and ``on_trial(trial, best_value)``
    report progress. With ``best_lock_timeout`` (``--train-best``), a best run directory
    another process holds is refused before the search (LockBusy after waiting that many
    seconds): its lock is tried and let go, and taken for good when that run trains. Ctrl-C or
    SIGTERM marks the running trial failed, writes the results of the
    trials so far and raises :class:`SearchInterrupted` (a KeyboardInterrupt saying what was kept);
    the same call later continues the study. Before the first trial (the bars being read, the
    study opened, the lock tried) its message says nothing was written (or names the study's
    file and results folder if they were made by then, with no trial in them), and its
    ``result`` has no trial and no file.
    """
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a Config (from forecaster.load_config), not {type(cfg).__name__}")
    refuse_empty_folders(run_dir=run_dir, root=root, required=("root",))
    t = cfg.tune
    dims = search_dims(cfg, fixed)
    check_space(cfg, dims)
    url = t.storage or embedded_url(t.study, Path(root))
    _check_results_folder(Path(root) / t.study, t.study)
    _check_storage_not_in_the_way(
        url, Path(root) / t.study, best_run_dir(cfg, run_dir) if best_lock_timeout is not None else None
    )
    if not t.storage and (db := Path(root) / f"{t.study}.db").is_dir():  # the results of a study named so
        raise ConfigError(
            f"study {t.study} is kept in the file {db}, and a folder has that name: "
            "move the folder away, or give another --study name"
        )
    # what the search may make before its first trial: said, if an interrupt comes then
    made = [p for p in ([] if t.storage else [Path(root) / f"{t.study}.db"]) + [Path(root) / t.study] if not p.exists()]
    with contextlib.ExitStack() as held:  # this process's number among those on the default storage file
        resolve_device(cfg.train.device)  # a device this machine lacks stops the search before a trial is recorded
        stage = f"while the bars were read or study {t.study} was opened"
        quiet = _OncePerMessage()  # a warning of the bars read now is not given again by each trial
        try:
            with _filtered(quiet, trials=False), sigterm_as_interrupt():  # `kill` before the first trial: as Ctrl-C
                if best_lock_timeout is not None:
                    target = best_run_dir(cfg, run_dir)
                    stage, before = f"while it waited for the lock on {target}", stage
                    with file_lock(run_lock_path(target), best_lock_timeout):
                        stage = before
                # bad or missing data stops the search before it starts, not as one failed trial after another
                bars, _ = usable_bars(cfg, checked_tickers(cfg))  # one without bars skipped, as train skips it
                data = objective_data(bars, cfg)
                optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported here, once, plainly
                # processes sharing the default storage file get numbers (0 for the first) that make their
                # proposals differ; taken once the data and the device are known good, as nothing is made before
                slot = 0 if t.storage else held.enter_context(_worker_slot(Path(root), t.study))
                storage = open_storage(url, t.heartbeat)
                held.callback(close_storage, storage)
                study = _load_study(storage, cfg, url, slot)
                _check_results_of_another_study(study, Path(root) / t.study, url)
                _check_setup(study, cfg, {d.key for d, _ in dims}, data)
                check_choices(study, dims)
                _check_best_readable(study, cfg, best_run_dir(cfg, run_dir), url)
                fail_abandoned(study)
                remove_abandoned_trial_dirs()
        except ForecasterError:
            raise
        except Exception as e:  # the study's database failing as the study is made (its disk full)
            if not _storage_down(cause := _storage_cause(e)):
                raise
            raise _unreachable(cause, url) from None
        except KeyboardInterrupt:
            nothing = TuneResult(study=t.study, storage=storage_label(url), trials=pd.DataFrame(), added=0, best=None)
            if made := [str(p) for p in made if p.exists()]:
                kept = f"no trial was run ({' and '.join(made)} made for the study, without a trial, and kept)"
            else:
                kept = "nothing was written"
            raise SearchInterrupted(
                f"tuning interrupted before its first trial, {stage}: {kept}; "
                "run the same command again to start the search",
                nothing,
            ) from None
        objective = Objective(cfg, dims, on_epoch)
        final_dir = best_run_dir(cfg, run_dir)

        def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            if trial.state == TrialState.FAIL and "error" in trial.user_attrs:
                log.warning("trial %d failed: %s", trial.number, trial.user_attrs["error"])
            if on_trial:
                on_trial(trial, _best_value(study))
            raise_if_stopped()  # a stop lost in the storage's code as the trial was recorded

        stopped, failure = False, None
        try:
            with _filtered(quiet, trials=True), _heartbeat_failures_said(), sigterm_as_interrupt():  # `kill`: as Ctrl-C
                study.optimize(
                    objective,
                    n_trials=t.trials,
                    timeout=t.timeout or None,
                    catch=(TrainingError,),
                    callbacks=[after_trial],
                    gc_after_trial=False,
                )
        except KeyboardInterrupt:
            stopped = True
        except Exception as e:  # the storage failing under a trial (locked for longer than it waits, its disk full)?
            if not _storage_down(cause := _storage_cause(e)):
                raise
            failure = _unreachable(cause, url)
        finally:  # interrupted or not, the trials so far are written out, whole
            with _signals_held() as caught:
                if failure is None:
                    result = write_results(study, Path(root) / t.study, final_dir, url, cfg)
                else:  # as far as the storage still answers
                    with contextlib.suppress(Exception):
                        write_results(study, Path(root) / t.study, final_dir, url, cfg)
            stopped = stopped or bool(caught)
        if failure is not None:
            again = "run the same command again to go on with it"
            if not isinstance(failure, TemporaryFailure):  # a full disk: no retry mends it until space is made
                again = f"make room, then {again}"
            raise type(failure)(f"{failure}; the study keeps the trials it had recorded: {again}") from None
        result.added = objective.started
        if stopped:
            raise SearchInterrupted(_what_was_kept(result), result)
        if not study.get_trials(deepcopy=False) and t.timeout:
            raise TrainingError(
                f"no trial of study {result.study} was run: --timeout {t.timeout:g} s (tune.timeout) had passed "
                "before the first one could start; give a longer timeout, or 0 for none"
            )
        _raise_if_nothing_completed(study, result)
        return result


def _check_best_readable(study: optuna.Study, cfg: Config, run_dir: Path, url: str) -> None:
    """Refuse, before any trial, a study whose best trial records a configuration this
    forecaster cannot read (one a newer forecaster ran, with a setting this one lacks): its
    results, best.toml among them, could not be written after the search."""
    try:
        best_trial(study.get_trials(deepcopy=False), run_dir, cfg)
    except ConfigError as e:
        raise ConfigError(
            f"study {study.study_name} in {storage_label(url)} cannot be continued, as its best trial records a "
            f"configuration this forecaster cannot read ({e}): continue it with the forecaster that ran it, or give "
            "another --study name"
        ) from None


def _check_results_of_another_study(study: optuna.Study, out: Path, url: str) -> None:
    """Refuse a study with no trial whose results folder holds the trials of another: the same
    --study in another storage (one left out, or another given) would replace their results."""
    if study.get_trials(deepcopy=False):
        return
    try:
        kept = len(pd.read_csv(out / TRIALS_CSV))
    except (OSError, ValueError):  # none there, or nothing readable: nothing to lose
        return
    if kept:
        raise ConfigError(
            f"{out} holds the results of {kept} trial(s) of a study {study.study_name}, and {storage_label(url)} has "
            "no trial of it: give the --storage that study is kept in to continue it, or move that folder away "
            "(or give another --study name) to start a new one"
        )


def _check_storage_not_in_the_way(url: str, out: Path, best: Path | None) -> None:
    """Refuse, before the search, a study file (``sqlite:///`` or ``journal:``) that would be
    made where the results folder ``out`` (or the ``best`` run directory) or a folder above it
    goes: ``--storage sqlite:///runs`` made the database file ``runs``, and the results of the
    whole search could then not be written."""
    if (file := _study_file(url)) is None:
        return
    path = Path(file).expanduser().resolve()
    for folder, what in ((out, "the results folder"), (best, "the best run's directory")):
        if folder is not None and path in (here := folder.resolve(), *here.parents):
            form, suffix = (JOURNAL, ".log") if url.startswith(JOURNAL) else ("sqlite:///", ".db")
            raise ConfigError(
                f"the study storage {storage_label(url)} would be a file where {what} {folder} goes: "
                f"name a file elsewhere, e.g. {form}{out.parent / (out.name + suffix)}"
            )


def _check_results_folder(out: Path, study: str) -> None:
    """Refuse, before the first trial rather than after the search, a results folder that
    cannot be made or written, or that holds a folder in the place of a results file; nothing
    is made here."""
    if blocker := file_in_the_way(out):
        raise ConfigError(f"cannot write the results of study {study} to {out}: {not_a_folder(blocker)}")
    if (denied := cannot_write_into(out)) is not None:
        raise ConfigError(
            f"cannot write the results of study {study} to {out}: {denied.strerror} on the folder {denied.filename}"
        )
    for name in (TRIALS_CSV, BEST_TOML, HISTORY_PNG):  # a folder where a result file goes: no write replaces it
        if (out / name).is_dir():
            raise ConfigError(f"cannot write the results of study {study}: {out / name} is a folder, not a file")


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """SIGINT and SIGTERM noted, not raised, while the results are written (in the main
    thread): a Ctrl-C then would leave them half-written and say nothing of what the study
    keeps. The list holds the signals caught; the caller stops once the results are out."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in signals}
    try:
        yield caught
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


class SearchInterrupted(KeyboardInterrupt):
    """The search was stopped by SIGINT/SIGTERM after its results were written; the message says
    what the study keeps and how to go on with it, ``result`` is what was written."""

    def __init__(self, message: str, result: TuneResult):
        super().__init__(message)
        self.result = result


def _what_was_kept(result: TuneResult) -> str:
    counts = result.counts()
    done = counts["complete"]
    kept = f"{done} completed trial{'s' if done != 1 else ''}" if done else "no completed trial yet"
    if counts["pruned"]:
        kept += f" and {counts['pruned']} pruned"
    files = ", ".join(str(path) for path in result.files.values())
    return (
        f"tuning interrupted: study {result.study} keeps {kept} in {result.storage}; written: {files}; "
        "run the same command again to go on with the study (--trials N adds N trials to it)"
    )


def _load_study(storage, cfg: Config, url: str, slot: int = 0) -> optuna.Study:
    t = cfg.tune
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=t.prune_startup_trials, n_warmup_steps=t.prune_warmup_epochs)
        if t.prune
        else optuna.pruners.NopPruner()
    )
    for attempt in range(1, SCHEMA_TRIES + 1):
        try:
            study = optuna.create_study(study_name=t.study, storage=storage, direction="minimize", load_if_exists=True)
            break
        except Exception as e:
            if attempt == SCHEMA_TRIES or not _made_meanwhile(e):
                raise _unreachable(_storage_cause(e), url) from None
            time.sleep(0.1 * attempt)
    if study.directions != [optuna.study.StudyDirection.MINIMIZE]:  # made by other code on the same storage
        how = "maximises its objective" if len(study.directions) == 1 else f"has {len(study.directions)} objectives"
        raise ConfigError(
            f"study {t.study} in {storage_label(url)} {how}: not a forecaster study; give another --study name"
        )
    sampler = optuna.samplers.TPESampler(
        seed=_sampler_seed(cfg, len(study.get_trials(deepcopy=False)), slot), n_startup_trials=t.startup_trials
    )
    return optuna.load_study(study_name=t.study, storage=storage, sampler=sampler, pruner=pruner)


def _best_value(study: optuna.Study) -> float | None:
    values = [tr.value for tr in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return min(values) if values else None


def _raise_if_nothing_completed(study: optuna.Study, result: TuneResult) -> None:
    if result.best is not None:
        return
    errors = [tr.user_attrs["error"] for tr in study.get_trials(deepcopy=False) if "error" in tr.user_attrs]
    why = f"; the first error: {errors[0]}" if errors else ""
    where = f" (every trial's state: {result.files['trials']})" if "trials" in result.files else ""
    raise TrainingError(f"no trial of study {result.study} has completed{why}{where}")


# ---- results ------------------------------------------------------------------------------------
def _trained_with(trial: FrozenTrial, name: str) -> Any:
    """The value of parameter ``name`` that ``trial`` trained with: sampled, or, where an
    invocation of the study fixed that dimension (a flag, an empty list in the space), the
    value of the configuration the trial recorded; None when it recorded none."""
    if name in trial.params:
        return trial.params[name]
    key = next((d.key for d in SEARCH_SPACE if d.name == name), None)
    if key is None:
        return None
    node: Any = trial.user_attrs.get("config")
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _param_names(trials: list[FrozenTrial]) -> list[str]:
    """The parameters any of ``trials`` searched, in the order of the search space."""
    order = [d.name for d in SEARCH_SPACE]
    names = {n for tr in trials for n in tr.params}
    return [n for n in order if n in names] + sorted(names - set(order))


def trials_frame(trials: list[FrozenTrial]) -> pd.DataFrame:
    """One row per trial: number, state, value, one column per parameter, seconds. A trial
    run while a searched dimension was fixed gives the value it trained with."""
    params = _param_names(trials)
    rows = []
    for tr in sorted(trials, key=lambda x: x.number):
        seconds = (
            (tr.datetime_complete - tr.datetime_start).total_seconds()
            if tr.datetime_complete and tr.datetime_start
            else None
        )
        rows.append(
            {
                "number": tr.number,
                "state": tr.state.name,
                "value": tr.value if tr.state == TrialState.COMPLETE else None,
                **{n: _trained_with(tr, n) for n in params},
                "seconds": None if seconds is None else round(seconds, 3),
            }
        )
    return pd.DataFrame(rows, columns=["number", "state", "value", *params, "seconds"])


def _here(tree: dict, base: Config | None) -> dict:
    """A trial's recorded config with this process's own settings (:data:`LOCAL_KEYS`: the data
    folder, device, threads, predict and tune sections) in place of those of the process, or
    the earlier run of the command, that ran the trial."""
    if base is None:
        return tree
    tree = copy.deepcopy(tree)
    for key, value in _flat(base.model_dump(mode="json")).items():
        if key.startswith(LOCAL_KEYS) and key != "run_dir":
            *path, name = key.split(".")
            node = tree
            for part in path:
                node = node.setdefault(part, {})
            node[name] = value
    return tree


def best_trial(trials: list[FrozenTrial], run_dir: Path, base: Config | None = None) -> BestTrial | None:
    """The completed trial of the lowest validation loss; its ``params`` are its row of
    trials.csv: every parameter of the study, a value fixed by a flag when it ran included.
    Its config takes this command's own settings (``base``'s :data:`LOCAL_KEYS`): the best
    trial may have run on another machine, or before the data folder moved."""
    done = [
        tr for tr in trials if tr.state == TrialState.COMPLETE and tr.value is not None and "config" in tr.user_attrs
    ]
    if not done:
        return None
    tr = min(done, key=lambda x: (x.value, x.number))
    made = as_made(tr.user_attrs["config"])  # a trial run before a setting existed: as it ran
    cfg = config_from_dict(_here(made, base), f"trial {tr.number}").model_copy(update={"run_dir": run_dir})
    params = {n: v for n in _param_names(trials) if (v := _trained_with(tr, n)) is not None}
    return BestTrial(number=tr.number, value=float(tr.value), params=params, config=cfg)


def write_results(study: optuna.Study, out: Path, run_dir: Path, url: str, base: Config | None = None) -> TuneResult:
    """``trials.csv``, ``history.png`` and (once a trial has completed) ``best.toml``, with
    ``base``'s settings of this machine (:func:`best_trial`). A trials.csv or best.toml that
    cannot be written is an error naming it (the study keeps its trials in its storage); a
    history.png, a warning: the plot of the trials before is taken away, not left stale."""
    trials = study.get_trials(deepcopy=False)
    frame = trials_frame(trials)
    best = best_trial(trials, run_dir, base)
    target = out / TRIALS_CSV
    try:
        files = {"trials": write_csv(frame, target)}
        if best is not None:
            header = (
                f"The best trial of study {study.study_name} ({storage_label(url)}): trial {best.number}, "
                f"validation pinball loss {best.value:.6g}.\n`forecaster train --config {out / BEST_TOML}` trains it."
            )
            target = out / BEST_TOML
            atomic_write_text(target, config_toml(best.config, header, exclude=("tune",)))
            files["best"] = target
    except OSError as e:
        raise ForecasterError(
            f"cannot write {target}: {e.strerror or e}; study {study.study_name} keeps its trials in "
            f"{storage_label(url)}: once {out} can be written, the same command writes its results again"
        ) from None
    if len(frame):
        from .plots import plot_study  # matplotlib: only once there is something to draw

        try:
            files["history"] = plot_study(frame, _last_reported(trials), out / HISTORY_PNG, study.study_name)
        except Exception as e:  # a broken matplotlib, or a full disk: the study's results are written without it
            if isinstance(e, OSError):
                stale = _without_stale_plot(out / HISTORY_PNG)
                log.warning("%s not drawn: cannot write it: %s%s", out / HISTORY_PNG, e.strerror or e, stale)
            else:
                log.warning("%s not drawn: matplotlib cannot be used (%s: %s)", HISTORY_PNG, type(e).__name__, e)
    return TuneResult(study=study.study_name, storage=storage_label(url), trials=frame, added=0, best=best, files=files)


def _without_stale_plot(path: Path) -> str:
    """Take away the history.png of the trials before (it would be taken for this one's); what
    to add to the warning: nothing, or that the old one is still there, and stale."""
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        return f"; the {HISTORY_PNG} there, of the trials before, is stale (cannot remove it: {e.strerror or e})"
    return ""


def _last_reported(trials: list[FrozenTrial]) -> dict[int, float]:
    """The last validation loss each pruned trial reported (what the pruner stopped it at)."""
    return {
        tr.number: tr.intermediate_values[max(tr.intermediate_values)]
        for tr in trials
        if tr.state == TrialState.PRUNED and tr.intermediate_values
    }


def train_best(result: TuneResult, *, on_epoch=None, on_batch=None, lock_timeout: float = 0.0) -> TrainResult:
    """Train the best trial's configuration into its ``run_dir`` and record the study in the run."""
    if result.best is None:
        raise TrainingError(f"study {result.study} has no completed trial to train")
    best = result.best
    origin = Origin(study=result.study, trial=best.number, val_loss=best.value, storage=result.storage)
    try:
        res = train(
            best.config,
            run_dir=best.config.run_dir,
            on_epoch=on_epoch,
            on_batch=on_batch,
            lock_timeout=lock_timeout,
            distributed=False,
            # every save of the run records the study: the finished run, one saved to resume (and
            # train --resume keeps it), its checkpoints
            origin=origin,
        )
    except RunWriteError as exc:  # a full disk under the run: the search is whole, and says how to train it again
        raise RunWriteError(f"{exc}; {_kept_for_training_again(result)}") from None
    return res


def _kept_for_training_again(result: TuneResult) -> str:
    """What an error of ``--train-best`` adds: the study and best.toml are kept, and the
    command that trains the best trial again (best.toml's run_dir is the run's)."""
    toml = result.files.get("best")
    again = (
        f"`forecaster train --config {shlex.quote(str(toml))}` trains the best trial again"
        if toml is not None
        else "the same command trains it again"
    )
    kept = f"study {result.study} ({result.storage})" + (f" and {toml}" if toml is not None else "")
    return f"{kept} are kept: {again}"
