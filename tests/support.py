"""Plain functions and constants shared by the test modules (fixtures live in conftest.py).

Test modules import them with ``from support import ...``: pytest puts ``tests/`` on
``sys.path``, as it does for ``yf_fixtures`` (the offline Yahoo stand-in) and ``crash_writer``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
BIN = Path(sys.executable).parent
FORECASTER = BIN / "forecaster"  # the installed console script

# Per-test limit for the few tests that start several forecaster processes (each pays torch's
# start-up) or train for many epochs; pyproject.toml's default `timeout` covers every other test.
SLOW_TEST_TIMEOUT_S = 300

# ---------------------------------------------------------------------------- runs


@contextmanager
def forecaster_logger_kept() -> Iterator[None]:
    """The ``forecaster`` logger as it was, after a command run in this process pointed it at
    its own streams (the CLI sets it up once per process and never takes it down)."""
    import logging

    logger = logging.getLogger("forecaster")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield
    finally:
        for h in logger.handlers:
            if h not in saved[0]:
                h.close()
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


def tiny_overrides(data_dir: Path, **extra) -> dict:
    """Dotted config overrides for a model that trains in a second or two on the sample data."""
    base = {
        "data.source": "csv",
        "data.data_dir": str(data_dir),
        "data.tickers": ["STOCKA", "STOCKB"],
        "window.lookback": 20,
        "window.horizon": 3,
        "window.val_days": 100,
        "window.test_days": 100,
        "model.cell": "gru",
        "model.hidden_size": 8,
        "train.epochs": 2,
        "train.batch_size": 128,
        "train.seed": 0,
    }
    base.update(extra)
    return base


def sample_trainer(data_dir: Path, **overrides):
    """(cfg, windows, Trainer) of a tiny model over the sample's two tickers, seeded, on the CPU."""
    import torch

    from forecaster.config import load_config
    from forecaster.store import load_bars
    from forecaster.training import Trainer, new_model, seed_everything
    from forecaster.windows import build_windows, make_splits

    cfg = load_config(None, tiny_overrides(data_dir, **overrides))
    bars = load_bars("csv", data_dir, ["STOCKA", "STOCKB"])
    ws = build_windows(
        bars, cfg.window.lookback, cfg.window.horizon, make_splits(bars, cfg.window.val_days, cfg.window.test_days)
    )
    seed_everything(cfg.train.seed)
    return cfg, ws, Trainer(new_model(cfg, ws), ws, cfg, torch.device("cpu"))


@contextmanager
def study_storage(url: str) -> Iterator:
    """An Optuna storage on the database ``url`` for a test to read or make a study in, its
    database connections closed at the end (each one left to the garbage collector warns on
    Python 3.13+: ResourceWarning, unclosed database)."""
    import optuna

    from forecaster.tuning import close_storage

    storage = optuna.storages.RDBStorage(url)
    try:
        yield storage
    finally:
        close_storage(storage)


def run_meta(run: Path) -> dict:
    """The run's ``run.json`` as a dict."""
    return json.loads((Path(run) / "run.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- price bars


def make_bars(start: str, n: int, *, price: float = 100.0, seed: int = 0, volume: float = 1e6) -> pd.DataFrame:
    """``n`` business days of plausible bars (normalised shape: lower-case OHLCV columns, a
    tz-naive ``date`` index) starting at ``start``; the same ``seed`` gives the same bars."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, periods=n, name="date").astype("datetime64[ns]")
    close = price * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * (1 + rng.normal(0, 0.003, n))
    high = np.maximum(open_, close) * 1.005
    low = np.minimum(open_, close) * 0.995
    vol = np.round(volume * (1 + rng.random(n)))
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": vol}, index=dates)


def csv_folder_with_a_bar_on(day: str, src: Path, dst: Path, ticker: str) -> Path:
    """A copy at ``dst`` of the CSV folder ``src`` whose ``ticker`` has one more bar, dated
    ``day``, with the values of its last one (as a mistyped year, 2204 for 2024, leaves it)."""
    dst.mkdir(parents=True)
    for path in src.glob("*.csv"):
        shutil.copy(path, dst / path.name)
    last = (dst / f"{ticker}.csv").read_text(encoding="utf-8").splitlines()[-1]
    with open(dst / f"{ticker}.csv", "a", encoding="utf-8") as fh:
        fh.write(f"{day},{last.split(',', 1)[1]}\n")
    return dst


# ---------------------------------------------------------------------------- subprocesses


def python_env(**extra: str) -> dict[str, str]:
    """This environment with the repository and ``tests/`` on PYTHONPATH, for ``python -c``
    children that import ``forecaster`` or the modules of ``tests/``."""
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}", **extra}


def run_script(code: str, *args, cwd: Path | None = None, own_group: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -c code args...`` in a fresh process (one torch thread, no colour) and
    return what it printed and its exit code: for a signal the process sends itself, which
    would stop the test runner if sent in-process. ``own_group``: in a process group of its
    own, which it and its children may signal whole (as systemd signals a service's)."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=python_env(OMP_NUM_THREADS="1", NO_COLOR="1"),
        cwd=cwd,
        timeout=240,
        start_new_session=own_group,
    )


def cli_env(**extra: str) -> dict[str, str]:
    """This environment with plain, wide, colourless output, for the installed command."""
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb", **extra}


def start_forecaster(*args, env: dict[str, str] | None = None, **popen_kw) -> subprocess.Popen:
    """Start the installed ``forecaster`` with ``args`` (text pipes for stdout and stderr)."""
    return subprocess.Popen(
        [str(FORECASTER), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env() if env is None else env,
        **popen_kw,
    )


_HOLD_LOCK = """
import sys, time
from forecaster import fsio
with fsio.file_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(lock: Path, seconds: float) -> subprocess.Popen:
    """Another process that holds ``lock`` for ``seconds``; returns once it has the lock."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True, env=python_env()
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    if first != "locked":
        stop(proc)
        raise AssertionError(f"the lock holder did not start: {first!r}")
    return proc


# Root reads and writes any file whatever its mode; without these capabilities it cannot.
UNPRIVILEGED_ROOT = [shutil.which("setpriv") or "setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


def run_python_minding_file_modes(script: str, *args) -> subprocess.CompletedProcess:
    """``python -c script args`` in a child process for which file modes hold (as root, without
    the capabilities that let it ignore them); text stdout and stderr."""
    cmd = [sys.executable, "-c", script, *map(str, args)]
    if os.geteuid() == 0:
        assert shutil.which("setpriv"), "setpriv (util-linux) is needed to test file modes as root"
        cmd = [*UNPRIVILEGED_ROOT, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=python_env(), timeout=60)


def run_forecaster_minding_file_modes(*args, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    """``python -m forecaster args`` in a child process for which file modes hold (as root,
    without the capabilities that let it ignore them), so that a file made unreadable with
    ``chmod`` is unreadable to it. Plain, wide, colourless output; text stdout and stderr.
    ``extra``: more environment variables (or other values of them) for the child."""
    cmd = [sys.executable, "-m", "forecaster", *map(str, args)]
    if os.geteuid() == 0:
        assert shutil.which("setpriv"), "setpriv (util-linux) is needed to test file modes as root"
        cmd = [*UNPRIVILEGED_ROOT, *cmd]
    env = python_env(NO_COLOR="1", COLUMNS="200", TERM="dumb", **extra)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=SLOW_TEST_TIMEOUT_S)


def stop(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it still runs, and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def free_port() -> int:
    """A TCP port that nothing on this machine listens on right now (several test suites may
    run side by side, so a fixed port can be taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_sleep(seconds: float) -> None:
    """Stands in for ``time.sleep`` in retry loops: back-offs cost no time."""


# ---------------------------------------------------------------------------- CLI results


def error_lines(res) -> list[str]:
    """The ERROR lines of stderr; none may report an unexpected error (a bug)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
    assert not any("unexpected error" in ln for ln in lines), lines
    return lines


def log_lines(res, level: str) -> list[str]:
    """The messages of stderr's ``level`` lines (``WARNING``, ``ERROR``...), without the prefix."""
    return [ln.removeprefix(f"{level}: ") for ln in res.stderr.splitlines() if ln.startswith(f"{level}: ")]


def assert_one_line_error(res, code: int, *fragments: str) -> str:
    """Exit ``code``, no traceback, exactly one ERROR line on stderr holding ``fragments``."""
    out = res.stdout + res.stderr
    assert res.exit_code == code, (res.exit_code, out)
    assert "Traceback" not in out
    errors = error_lines(res)
    assert len(errors) == 1, res.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def record_blocks(monkeypatch, module, block: str) -> list[tuple[int, list[list[str]]]]:
    """Share ``module``'s tickers one to a process (its ``MIN_TICKERS_PER_JOB`` set to 1) and
    record, for every pool that maps ``module.<block>``, its processes and its blocks' tickers."""
    from forecaster import pool

    monkeypatch.setattr(module, "MIN_TICKERS_PER_JOB", 1)
    pools = []
    shared = pool.Workers.map

    def recorded(self, fn, jobs):
        jobs = list(jobs)
        if fn is getattr(module, block):
            pools.append((self.executor._max_workers, [job.names for job in jobs]))
        return shared(self, fn, jobs)

    monkeypatch.setattr(pool.Workers, "map", recorded)
    return pools


def stopped_in_a_worker(module: str, block: str, *argv: str) -> str:
    """A script that runs ``forecaster ARGV`` (``{0}``, ``{1}``... read from its own arguments)
    with ``forecaster.<module>``'s tickers one to a process, where the first block to start
    sends SIGTERM to the whole process group, as ``systemctl stop`` does to a service."""
    args = ", ".join(repr(a) if not a.startswith("{") else f"sys.argv[{int(a[1:-1]) + 1}]" for a in argv)
    return f"""
import os, signal, sys
from forecaster import {module}
from forecaster.cli import main

{module}.MIN_TICKERS_PER_JOB = 1  # two tickers: a process each
real = {module}.{block}

def stopped(block):
    os.killpg(0, signal.SIGTERM)
    return real(block)

{module}.{block} = stopped
sys.argv = ["forecaster", {args}]
main()
"""


def assert_stopped_with_one_line(res: subprocess.CompletedProcess, command: str) -> None:
    """``command`` stopped by a signal: exit 130 and one line on stderr, no traceback from any
    of its processes."""
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert res.stderr.splitlines() == [
        f"ERROR: {command} interrupted before it finished; the files it had written are whole and "
        "nothing is half-written: run it again"
    ], res.stderr


class _SignalledWhileCollected:
    def __del__(self):  # the signal arrives as the garbage collector runs this
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)


def drop_a_stop_signal() -> None:
    """SIGTERM as it arrives inside a finalizer (a database connection's cleanup, run by the
    garbage collector at that moment): the handler's KeyboardInterrupt is raised there, and
    Python drops it, with an "Exception ignored" message."""
    _SignalledWhileCollected()  # freed at once: its finalizer runs here


def axes_drawn(monkeypatch) -> list:
    """The axes of every figure the plots save from now on, kept open for reading."""
    from forecaster import plots

    axes = []
    real = plots._save

    def spy(fig, path):
        axes.extend(fig.axes)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return axes


def stocka_plot_fails(monkeypatch) -> None:
    """STOCKA's plot raises (a matplotlib edge case), the other plots are drawn."""
    from forecaster import plots

    real = plots.plot_ticker

    def flaky(pred, history, sym, path, steps):
        if sym == "STOCKA":
            raise ValueError("cannot draw this one")
        return real(pred, history, sym, path, steps)

    monkeypatch.setattr(plots, "plot_ticker", flaky)


@contextlib.contextmanager
def held_by_another_thread(lock):
    """``lock`` taken and held by another thread of this process while the block runs."""
    import threading

    inside, done = threading.Event(), threading.Event()

    def holding():
        with lock:
            inside.set()
            done.wait(30)

    other = threading.Thread(target=holding)
    other.start()
    try:
        assert inside.wait(30)
        yield
    finally:
        done.set()
        other.join(30)


@contextmanager
def memory_capped(limit: int = 8 << 30) -> Iterator[None]:
    """This process's address space held to ``limit`` bytes while the block runs: a read that
    never ends (a link to /dev/zero) fails there, rather than taking the machine's memory and
    the test runner with it."""
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, before)


def stderr_on_a_terminal(
    args, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> tuple[int, bytes, str]:
    """Run the installed command with its stderr on a terminal (a pty), stdin closed and stdout
    a pipe; its exit code, the bytes the terminal was sent, and stdout."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(FORECASTER), *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        cwd=cwd,
        text=True,
    )
    os.close(slave)
    raw = _terminal_output(master)
    assert proc.stdout is not None
    out = proc.stdout.read()
    return proc.wait(timeout=timeout), raw, out


def on_a_terminal(args, env: dict[str, str], timeout: float = 120) -> tuple[int, bytes]:
    """Run the installed command with its stdout on a terminal (a pty); its exit code and the
    bytes the terminal was sent, style codes included."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([str(FORECASTER), *map(str, args)], stdout=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    return proc.wait(timeout=timeout), _terminal_output(master)


def _terminal_output(master: int) -> bytes:
    """Every byte a pty's command side sent until it closed, read from its ``master`` end
    (closed here)."""
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal is closed once the command has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks)
