"""Fault injection: what an unattended ``forecaster predict`` does when things go wrong.

The scenarios at the end run the *installed* command (``forecaster`` next to
``sys.executable``) the way cron does: no TTY, stdin closed, a minimal environment (PATH,
HOME in a scratch folder, LANG=C). Yahoo is simulated inside that subprocess by
``tests/fault_hooks/sitecustomize.py`` (put on its PYTHONPATH; the real yfinance code runs
against in-memory answers), which can also stop the process just before a chosen rename
so that it can be SIGKILLed mid-write. Each scenario checks the exit code (SPEC §2), that
earlier outputs are intact, and that the output holds no colour codes and no progress bar.

The in-process tests before them pin the pieces: locks, the per-ticker deadline, the
circuit breaker, the unfinished bar, write errors, and a writer SIGKILLed at random moments.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from support import (
    FORECASTER,
    ROOT,
    SLOW_TEST_TIMEOUT_S,
    TESTS,
    UNPRIVILEGED_ROOT,
    error_lines,
    forecaster_logger_kept,
    hold_lock,
    make_bars,
    no_sleep,
    python_env,
    run_forecaster_minding_file_modes,
    run_meta,
    run_script,
    stop,
)
from yf_fixtures import FakeYahoo

import forecaster
import forecaster.store
from forecaster import fsio, sources, store
from forecaster.errors import (
    EXIT_ERROR,
    EXIT_PARTIAL,
    EXIT_TEMPFAIL,
    ForecasterError,
    LockBusy,
    NetworkError,
)
from forecaster.outputs import to_csv_text
from forecaster.sources import read_csv_bars

HOOKS = TESTS / "fault_hooks"
FORECAST_COLUMNS = ["ticker", "as_of", "step", "date", "last_close", "p10", "p50", "p90", "model", "run"]


# one list: a second `pytestmark = ...` would silently replace the first
pytestmark = pytest.mark.usefixtures("torch_one_thread", "offline_yfinance")


# ============================================================================ locks


def test_predict_waits_for_the_lock_up_to_lock_timeout(cli, trained_run, tmp_path):
    out = tmp_path / "fc"
    holder = hold_lock(out / trained_run.name / ".lock", 2.0)
    try:
        started = time.monotonic()
        res = cli("predict", "--run", trained_run, "--out", out, "-q", "--lock-timeout", "60")
        waited = time.monotonic() - started
    finally:
        stop(holder)
    assert res.exit_code == 0, res.stderr
    assert waited >= 1.0  # it did wait for the other run
    assert (out / trained_run.name / "latest.csv").is_file()


def test_predict_gives_up_after_lock_timeout_naming_the_holder(cli, trained_run, tmp_path):
    out = tmp_path / "fc"
    timeout = 1.5
    holder = hold_lock(out / trained_run.name / ".lock", 120)
    try:
        started = time.monotonic()
        res = cli("predict", "--run", trained_run, "--out", out, "--lock-timeout", str(timeout))
        waited = time.monotonic() - started
    finally:
        stop(holder)
    assert res.exit_code == EXIT_TEMPFAIL
    # it waits out --lock-timeout 1.5 (never less: the lock is polled until that much time has
    # passed), then gives up at once, not when the holder's 120 s are over: 1.55 s measured
    # in-process; 5 s leaves room for a busy machine
    assert timeout <= waited < 5, f"waited {waited:.2f} s for --lock-timeout {timeout}"
    assert f"pid {holder.pid}" in res.stderr and "--lock-timeout" in res.stderr
    assert not list((out / trained_run.name).glob("*.csv"))


def test_predict_takes_its_lock_before_touching_the_network(cli, trained_run, sample_dir, tmp_path, monkeypatch):
    calls = []

    def fetch(ticker, *a, **k):
        calls.append(ticker)
        return read_csv_bars(sample_dir, ticker)

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", fetch)
    out = tmp_path / "fc"
    holder = hold_lock(out / trained_run.name / ".lock", 120)
    try:
        res = cli("predict", "--run", trained_run, "--source", "yahoo", "--data-dir", tmp_path / "data", "--out", out)
    finally:
        stop(holder)
    assert res.exit_code == EXIT_TEMPFAIL
    assert calls == []  # an overlapping run does no network work and writes nothing
    assert not (tmp_path / "data" / "store").exists()


@pytest.mark.parametrize("mode", [0o555, 0o600], ids=["read-only", "cannot-be-entered"])
def test_predict_into_an_out_folder_it_cannot_write_refuses_before_touching_the_network(
    trained_run, sample_dir, tmp_path, mode
):
    """`--out` below a read-only folder, or one that cannot be entered, the run's forecast
    folder not made yet: the error the write would meet, before the store is refreshed (it
    came once every ticker was downloaded), and nothing made, neither the forecast folder nor
    the store."""
    out = tmp_path / "fc"
    out.mkdir(mode=mode)
    answers = {sym: str(sample_dir / f"{sym}.csv") for sym in ("STOCKA", "STOCKB")}
    args = ["--run", trained_run, "--source", "yahoo", "--data-dir", tmp_path / "data"]
    try:
        res = run_forecaster_minding_file_modes(
            "predict",
            *args,
            "--out",
            out / "daily",  # made on the way, as the forecast folder is
            cwd=tmp_path,
            PYTHONPATH=os.pathsep.join(map(str, (ROOT, HOOKS, TESTS))),  # with Yahoo simulated
            **yahoo_env(tmp_path, answers),
        )
    finally:
        out.chmod(0o755)
    assert res.returncode == EXIT_ERROR, res.stderr
    folder = out / "daily" / trained_run.name
    why = "Permission denied; earlier forecast files are unchanged"  # what the write would say
    assert error_lines(res) == [f"ERROR: cannot write forecasts to {folder}: {why}"]
    assert yahoo_log(tmp_path) == []  # no ticker fetched
    assert not (tmp_path / "data").exists() and not list(out.iterdir())


def test_download_waits_for_the_store_lock(cli, tmp_path, monkeypatch):
    bars = make_bars("2024-01-02", 30)
    monkeypatch.setattr(forecaster.store, "fetch_with_retry", lambda t, *a, **k: bars.copy())
    data = tmp_path / "d"
    holder = hold_lock(data / "store" / ".lock", 3.0)
    try:
        busy = cli("download", "AAA", "--data-dir", data)
        waited = cli("download", "AAA", "--data-dir", data, "--lock-timeout", "60", "-q")
    finally:
        stop(holder)
    assert busy.exit_code == EXIT_TEMPFAIL and f"pid {holder.pid}" in busy.stderr
    assert waited.exit_code == 0, waited.stderr
    assert len(pd.read_parquet(data / "store" / "AAA.parquet")) == 30


def test_a_lock_that_cannot_be_created_is_an_error_not_a_busy_lock(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ForecasterError) as info:
        with fsio.file_lock(blocker / "run" / ".lock"):
            pass
    assert not isinstance(info.value, LockBusy)
    assert info.value.exit_code == EXIT_ERROR
    assert "cannot create the lock file" in str(info.value)


def test_stale_temp_files_of_killed_writers_are_cleaned_under_the_lock(tmp_path):
    bars = make_bars("2024-01-02", 20)
    store.save_store(tmp_path, "AAA", bars.iloc[:10])
    folder = store.store_dir(tmp_path)
    old, young = folder / ".AAA.parquet.k1ll3d.tmp", folder / ".AAA.parquet.wr1t1ng.tmp"
    for p in (old, young):
        p.write_bytes(b"PAR1 half a file")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    report = store.download(["AAA"], tmp_path, fetch=lambda t, s, e: bars.copy())
    assert list(report.ok) == ["AAA"]
    assert not old.exists()  # left by a writer killed long ago
    assert young.exists()  # might belong to a writer that is still running
    assert (folder / "AAA.parquet").is_file()


# ============================================================================ network


def test_hung_attempt_is_abandoned_at_the_ticker_deadline(monkeypatch):
    release = threading.Event()
    calls = []

    def hangs(ticker, *a, **k):
        calls.append(ticker)
        release.wait(30)  # yfinance stuck in its un-timed time-zone probe
        raise AssertionError("should have been abandoned")

    monkeypatch.setattr(sources, "fetch_history", hangs)
    started = time.monotonic()
    try:
        with pytest.raises(NetworkError, match="AAA: no answer from Yahoo within"):
            sources.fetch_with_retry("AAA", deadline=1.0, sleep=no_sleep)
    finally:
        release.set()
    assert time.monotonic() - started < 5
    assert calls == ["AAA"]


def test_deadline_bounds_the_retries_too(monkeypatch):
    attempts = []

    def slow_failure(ticker, *a, **k):
        attempts.append(time.monotonic())
        time.sleep(0.4)
        raise NetworkError(f"{ticker}: cannot reach Yahoo")

    monkeypatch.setattr(sources, "fetch_history", slow_failure)
    started = time.monotonic()
    with pytest.raises(NetworkError):
        sources.fetch_with_retry("AAA", deadline=1.0, attempts=10, base_delay=0.01, sleep=time.sleep)
    assert time.monotonic() - started < 2.5
    assert 2 <= len(attempts) <= 4


def test_circuit_breaker_stops_on_rate_limits(tmp_path):
    names = ["A", "B", "C", "D", "E", "F"]
    yahoo = FakeYahoo(dict.fromkeys(names, 429))
    fetch = lambda t, s, e: sources.fetch_with_retry(  # noqa: E731
        t, s, e, session=yahoo.session(), sleep=no_sleep
    )
    report = store.download(names, tmp_path, fetch=fetch)
    assert report.ok == {}
    assert report.kinds == dict.fromkeys(names, "rate_limit")
    assert all("not tried" in report.failed[t] for t in "DEF")
    assert "rate-limit" in report.failed["D"]
    assert {s for s, _ in yahoo.calls} == {"A", "B", "C"}


def test_circuit_breaker_trips_on_failures_in_a_row_after_successes(tmp_path):
    bars = make_bars("2024-01-02", 10)
    yahoo = FakeYahoo({"A": bars})
    down = {"B", "C", "D"}

    def fetch(t, s, e):
        if t in down:
            raise NetworkError(f"{t}: cannot reach Yahoo")
        return sources.fetch_with_retry(t, s, e, session=yahoo.session(), sleep=no_sleep)

    report = store.download(["A", "B", "C", "D", "E", "F"], tmp_path, fetch=fetch)
    assert list(report.ok) == ["A"]
    assert report.kinds == dict.fromkeys("BCDEF", "network")
    assert "not tried" in report.failed["E"] and "not tried" in report.failed["F"]
    assert {s for s, _ in yahoo.calls} == {"A"}


def test_circuit_breaker_resets_after_a_success(tmp_path):
    bars = make_bars("2024-01-02", 10)
    failing = {"B", "C", "E", "F"}

    def fetch(t, s, e):
        if t in failing:
            raise NetworkError(f"{t}: cannot reach Yahoo")
        return bars.copy()

    report = store.download(list("ABCDEFG"), tmp_path, fetch=fetch)
    assert sorted(report.ok) == ["A", "D", "G"]
    assert not any("not tried" in why for why in report.failed.values())


def test_refetch_never_loses_a_stored_row(tmp_path):
    everything = make_bars("2024-01-02", 40)
    store.save_store(tmp_path, "AAA", everything.iloc[:30])
    adjusted = everything.copy()
    adjusted[["open", "high", "low", "close"]] *= 0.97
    shorter = adjusted.iloc[5:]  # Yahoo's "max" history now starts later

    def fetch(t, s, e):
        return shorter.copy() if s is None else shorter[shorter.index >= pd.Timestamp(s)].copy()

    result = store.update_ticker(tmp_path, "AAA", fetch)
    assert result.refetched
    stored = store.load_store(tmp_path, "AAA")
    assert set(everything.index[:30]) <= set(stored.index)
    assert len(stored) == 40


# ============================================================================ the unfinished bar


def _bars_ending(day: str) -> pd.DataFrame:
    bars = make_bars("2024-11-01", 60)
    return bars[bars.index <= pd.Timestamp(day)]


@pytest.mark.parametrize(
    "calendar,tz,local_time,kept",
    [
        # New York closes at 13:00 on Christmas Eve: a bar at 14:00 is final (a fixed 18:00 rule
        # would drop it), one at 12:00 is not.
        ("XNYS", "America/New_York", "2024-12-24 12:00", False),
        ("XNYS", "America/New_York", "2024-12-24 14:00", True),
        # Tokyo closes at 15:30 local time.
        ("XTKS", "Asia/Tokyo", "2024-12-24 15:00", False),
        ("XTKS", "Asia/Tokyo", "2024-12-24 16:30", True),
        # London closes at 16:30.
        ("XLON", "Europe/London", "2024-12-23 16:00", False),
        ("XLON", "Europe/London", "2024-12-23 17:00", True),
    ],
)
def test_unfinished_bar_uses_the_exchange_close(calendar, tz, local_time, kept):
    now = pd.Timestamp(local_time, tz=tz)
    bars = _bars_ending(str(now.date()))
    assert bars.index[-1] == now.tz_localize(None).normalize()
    got = sources.drop_unfinished_session(bars, tz, now, calendar=calendar)
    assert len(got) == len(bars) - (0 if kept else 1)


@pytest.mark.parametrize("tz,symbol", [("UTC", "BTC-USD"), ("Europe/London", "EURUSD=X")])
def test_round_the_clock_markets_keep_todays_bar_out_until_the_day_ends(tz, symbol):
    now = pd.Timestamp("2024-12-23 23:30", tz=tz)
    bars = _bars_ending("2024-12-23")
    assert len(sources.drop_unfinished_session(bars, tz, now, symbol=symbol)) == len(bars) - 1
    tomorrow = pd.Timestamp("2024-12-24 00:30", tz=tz)
    assert len(sources.drop_unfinished_session(bars, tz, tomorrow, symbol=symbol)) == len(bars)


# ============================================================================ write errors


def test_forecast_write_error_is_exit_1_and_keeps_earlier_forecasts(cli, trained_run, tmp_path, monkeypatch):
    out = tmp_path / "fc"
    assert cli("predict", "--run", trained_run, "--out", out, "-q").exit_code == 0
    folder = out / trained_run.name
    before = {p.name: p.read_bytes() for p in folder.glob("*.csv")}

    def disk_full(fd):  # the data only fails to reach the disk when it is flushed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    res = cli("predict", "--run", trained_run, "--out", out, "--as-of", "2024-07-03")
    assert res.exit_code == EXIT_ERROR
    [line] = error_lines(res)
    assert "Traceback" not in res.stderr
    assert "cannot write forecasts" in line and "No space left on device" in line
    assert {p.name: p.read_bytes() for p in folder.glob("*.csv")} == before
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_first_forecast_that_cannot_be_written_says_nothing_was(cli, trained_run, tmp_path, monkeypatch):
    """A full disk at the first forecast into a new folder: no earlier file to keep, so the line
    says none was written rather than that earlier files are unchanged."""

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    out = tmp_path / "fc"
    res = cli("predict", "--run", trained_run, "--out", out)
    assert res.exit_code == EXIT_ERROR
    [line] = error_lines(res)
    folder = out / trained_run.name
    assert line.startswith(f"ERROR: cannot write forecasts to {folder / '2024-12-31.csv'}: No space left on device")
    assert line.endswith("; no forecast file was written"), line
    assert not list(folder.glob("*.csv"))


def test_latest_csv_that_cannot_be_replaced_is_named_with_the_file_that_was_written(cli, trained_run, tmp_path):
    """The dated file goes first: when latest.csv then cannot be replaced (here a folder stands
    in its place), the error says where the forecast is, not that nothing changed."""
    out = tmp_path / "fc"
    folder = out / trained_run.name
    (folder / "latest.csv").mkdir(parents=True)
    res = cli("predict", "--run", trained_run, "--out", out)
    assert res.exit_code == EXIT_ERROR
    [line] = error_lines(res)
    assert "Traceback" not in res.stderr
    dated = folder / "2024-12-31.csv"
    assert f"cannot write forecasts to {folder / 'latest.csv'}" in line
    assert f"the forecast was written to {dated} only, latest.csv is unchanged" in line, line
    assert "earlier forecast files are unchanged" not in line
    assert dated.is_file() and (folder / "latest.csv").is_dir()


def test_a_dated_file_that_cannot_be_written_leaves_latest_csv_as_it_was(cli, trained_run, tmp_path):
    """The dated file goes first: when it cannot be written (here a folder stands in its place),
    latest.csv still holds the earlier forecast, which a consumer can trace to its dated file,
    and the error says that the earlier files are unchanged."""
    out = tmp_path / "fc"
    folder = out / trained_run.name
    assert cli("predict", "--run", trained_run, "--out", out, "--as-of", "2024-07-03", "-q").exit_code == 0
    before = (folder / "latest.csv").read_bytes()
    assert b"2024-07-03" in before
    (folder / "2024-12-31.csv").mkdir()
    res = cli("predict", "--run", trained_run, "--out", out)
    assert res.exit_code == EXIT_ERROR
    [line] = error_lines(res)
    assert "Traceback" not in res.stderr
    assert f"cannot write forecasts to {folder / '2024-12-31.csv'}" in line
    assert line.endswith("earlier forecast files are unchanged"), line
    assert (folder / "latest.csv").read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def _stored_with_ten_bars_to_come(data, sym: str, monkeypatch) -> bytes:
    """``sym`` stored with 30 bars, Yahoo (every ticker) answering with 40; the stored file's bytes."""
    bars = make_bars("2024-01-02", 40)
    store.save_store(data, sym, bars.iloc[:30])
    monkeypatch.setattr(forecaster.store, "fetch_with_retry", lambda t, s=None, e=None, **k: bars.copy())
    return store.store_path(data, sym).read_bytes()


def _disk_full_after(writes: int, monkeypatch) -> None:
    """Parquet writes fail as on a full disk once ``writes`` of them have been made."""
    real_to_parquet = pd.DataFrame.to_parquet
    made = []

    def to_parquet(self, *a, **k):
        if len(made) >= writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        made.append(1)
        return real_to_parquet(self, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)


def test_store_write_error_is_exit_1_and_keeps_the_stored_file(cli, tmp_path, monkeypatch):
    data = tmp_path / "d"
    before = _stored_with_ten_bars_to_come(data, "AAA", monkeypatch)
    _disk_full_after(0, monkeypatch)
    res = cli("download", "AAA", "--data-dir", data)
    assert res.exit_code == EXIT_ERROR
    [line] = error_lines(res)
    assert "No space left on device" in line and "AAA.parquet" in line
    assert "Traceback" not in res.stderr
    assert store.store_path(data, "AAA").read_bytes() == before


def test_store_filling_up_after_some_tickers_is_exit_3_naming_what_was_written(cli, tmp_path, monkeypatch):
    # exit 1 says nothing partial was written: once a ticker is stored, a disk that fills up
    # on the next one is a partial download, the stored tickers reported with the others
    data = tmp_path / "d"
    before = _stored_with_ten_bars_to_come(data, "BBB", monkeypatch)
    _disk_full_after(1, monkeypatch)
    res = cli("download", "AAA", "BBB", "CCC", "--data-dir", data, "--json")
    assert res.exit_code == EXIT_PARTIAL, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc["ok"]) == {"AAA"} and doc["ok"]["AAA"]["rows"] == 40
    assert set(doc["failed"]) == {"BBB", "CCC"}
    assert "No space left on device" in doc["failed"]["BBB"] and "BBB.parquet" in doc["failed"]["BBB"]
    assert doc["failed"]["CCC"].startswith("not tried")
    assert "Traceback" not in res.stderr
    assert len(pd.read_parquet(store.store_path(data, "AAA"))) == 40
    assert store.store_path(data, "BBB").read_bytes() == before
    assert not store.store_path(data, "CCC").exists()


@pytest.mark.parametrize("filename", ["/srv/market/bars.parquet", None])
def test_a_file_error_no_check_foresaw_is_one_line_naming_the_file(cli, trained_run, monkeypatch, filename):
    """An OSError that reaches the command line unexplained is still one plain line, exit 1:
    the file it happened to (or "I/O error" when it names none) and why, with --json the
    error object."""
    from forecaster import prediction

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", filename)

    monkeypatch.setattr(prediction, "predict", denied)
    res = cli("predict", "--run", trained_run, "--offline", "--json")
    assert res.exit_code == EXIT_ERROR
    line = f"{filename or 'I/O error'}: Permission denied"
    assert error_lines(res) == [f"ERROR: {line}"] and "Traceback" not in res.stderr
    assert json.loads(res.stdout) == {"error": line, "exit_code": EXIT_ERROR}


# ============================================================================ SIGKILL at random


def _fresh_temp(*folders: Path) -> bool:
    """Whether a writer's temp file younger than a second is in one of ``folders``."""
    for folder in folders:
        for entry in os.scandir(folder):
            try:
                if fsio.is_temp_name(entry.name) and entry.stat().st_mtime > time.time() - 1:
                    return True
            except FileNotFoundError:  # renamed away while we looked
                continue
    return False


STOP_WHILE_STARTING = """
import os, signal, sys

SIG = getattr(signal, sys.argv[1])


class StopOnImport:  # stops this process just as it starts importing the command line
    def find_spec(self, name, path=None, target=None):
        if name == "forecaster.cli":
            os.kill(os.getpid(), SIG)
        return None

sys.meta_path.insert(0, StopOnImport())
sys.argv = ["forecaster", "predict", "--help"]
from forecaster.entry import main
main()
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_while_the_command_starts_is_one_line_and_exit_130(sig):
    """`systemctl stop` or Ctrl-C in the tenth of a second the command line takes to import:
    one line and exit 130, as later on; not a silent 143 or a traceback."""
    res = run_script(STOP_WHILE_STARTING, sig)
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert error_lines(res) == ["ERROR: forecaster interrupted while starting; nothing was read or written"]
    assert "Traceback" not in res.stderr and res.stdout == ""


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_distributed_training_stopped_while_it_starts_says_so_once(rank):
    """`systemctl stop` of a torchrun job as it starts reaches every process: rank 0 alone says
    so (and prints --json's object), the others exit 130 without a word, so that the job's
    output holds one line and one document."""
    job = f"import os\nos.environ.update(WORLD_SIZE='2', RANK='{rank}')\n"
    code = job + STOP_WHILE_STARTING.replace('"predict", "--help"', '"train", "--json"')
    res = run_script(code, "SIGTERM")
    assert res.returncode == 130, (res.returncode, res.stderr)
    line = "forecaster interrupted while starting; nothing was read or written"
    if rank == "0":
        assert error_lines(res) == [f"ERROR: {line}"]
        assert json.loads(res.stdout) == {"error": line, "exit_code": 130}
    else:
        assert (res.stdout, res.stderr) == ("", "")


STOP_AS_THE_STREAMS_ARE_SET_UP = """
import os, signal, sys


class StoppedAsItIsSetUp:  # stops this process as the entry point sets up its stderr
    def __init__(self, stream):
        self._stream = stream

    def reconfigure(self, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return self._stream.reconfigure(**kwargs)

    def __getattr__(self, name):
        return getattr(self._stream, name)


sys.stderr = StoppedAsItIsSetUp(sys.stderr)
sys.argv = ["forecaster", "predict", "--help"]
from forecaster.entry import main
main()
"""


def test_a_signal_as_the_entry_point_sets_up_its_streams_is_one_line_and_exit_130():
    """The stop handlers are set, then the standard streams made to escape what their encoding
    lacks: a SIGTERM in between printed a KeyboardInterrupt traceback."""
    res = run_script(STOP_AS_THE_STREAMS_ARE_SET_UP)
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert error_lines(res) == ["ERROR: forecaster interrupted while starting; nothing was read or written"]
    assert "Traceback" not in res.stderr and res.stdout == ""


STOP_AS_THE_COMMAND_LINE_SETS_UP_ITS_STREAMS = """
import os, signal, sys

from forecaster import cli

real = cli._closed_streams_to_devnull


def stopped():  # stops this process as the command line looks for closed standard streams
    os.kill(os.getpid(), signal.SIGTERM)
    real()


cli._closed_streams_to_devnull = stopped
sys.argv = ["forecaster", "predict", "--help"]
from forecaster.entry import main
main()
"""


def test_a_signal_as_the_command_line_sets_up_its_streams_is_one_line_and_exit_130():
    """The command line sets up its standard streams before typer reads the arguments: a
    SIGTERM then printed a KeyboardInterrupt traceback."""
    res = run_script(STOP_AS_THE_COMMAND_LINE_SETS_UP_ITS_STREAMS)
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert error_lines(res) == ["ERROR: forecaster interrupted while starting; nothing was read or written"]
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_ctrl_c_while_starting_stops_a_command_started_in_the_background():
    """A shell script's `forecaster ... &` inherits SIGINT ignored. Training listens to it
    anyway; so does the command from its start: a `kill -INT` while it starts was lost, and
    the training it went on to ran to its end."""
    res = run_script("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n" + STOP_WHILE_STARTING, "SIGINT")
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert error_lines(res) == ["ERROR: forecaster interrupted while starting; nothing was read or written"]


STOP_WHILE_THE_COMMAND_LINE_IS_READ = """
import os, signal, sys

import typer.core
import typer.main

SIG = getattr(signal, sys.argv[1])
AT = sys.argv[2]


def stop_then(real):  # stops this process once, just as typer reaches ``real``
    def wrapper(*args, **kwargs):
        if not getattr(wrapper, "done", False):
            wrapper.done = True
            os.kill(os.getpid(), SIG)
        return real(*args, **kwargs)

    return wrapper


if AT == "building":  # typer turning the command functions into a command line
    typer.main.get_group = stop_then(typer.main.get_group)
else:  # reading the arguments, before the command runs
    typer.core.TyperGroup.make_context = stop_then(typer.core.TyperGroup.make_context)
sys.argv = ["forecaster", "predict", "--run", "runs/x", "--json"]
from forecaster.entry import main
main()
"""


@pytest.mark.parametrize("at", ["building", "parsing"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_while_the_command_line_is_read_is_one_line_and_exit_130(sig, at):
    """The fifth of a second after the import, while typer builds the command line and reads
    the arguments, is still starting: one line (and --json's object), exit 130; not a
    traceback, nor a silent 130."""
    res = run_script(STOP_WHILE_THE_COMMAND_LINE_IS_READ, sig, at)
    assert res.returncode == 130, (res.returncode, res.stderr)
    line = "forecaster interrupted while starting; nothing was read or written"
    assert error_lines(res) == [f"ERROR: {line}"]
    assert "Traceback" not in res.stderr
    assert json.loads(res.stdout) == {"error": line, "exit_code": 130}


@pytest.mark.parametrize("began", [False, True])
def test_an_interruption_is_called_one_while_starting_only_before_a_command_began(monkeypatch, capsys, began):
    """A KeyboardInterrupt that reaches the entry point after a command began (its own lines
    are out) exits 130 without claiming that nothing was read or written."""
    from forecaster import cli

    def app():
        cli._Printed.started = began
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", app)
    assert _main_exits(monkeypatch, "predict") == 130
    assert ("interrupted while starting" in capsys.readouterr().err) is not began


def _main_exits(monkeypatch, *args: str) -> int:
    """The exit code of the entry point's ``main`` run here with ``args`` (no command begun
    before), its SIGTERM handler put back after."""
    from forecaster import cli

    def exit_now(code):
        raise SystemExit(code)

    monkeypatch.setattr(cli._Printed, "started", False)
    monkeypatch.setattr(os, "_exit", exit_now)
    monkeypatch.setattr(sys, "argv", ["forecaster", *args])
    for name in ("stdin", "stdout", "stderr"):  # main wraps them for good, as a process it ends would
        monkeypatch.setattr(sys, name, getattr(sys, name))
    term = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as e, forecaster_logger_kept():
            cli.main()
    finally:
        signal.signal(signal.SIGTERM, term)
    return e.value.code


def test_a_stop_as_a_command_begins_is_one_line_and_exit_130(monkeypatch, capsys):
    """A stop that comes as the command enters its error handling, before it is ready to say
    anything (here as it clears the stopping state): one line and exit 130, not a silent 130."""
    from forecaster import cli

    def stopped_now(begun=True):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "stop_begun", stopped_now)
    assert _main_exits(monkeypatch, "info", "runs/x") == 130
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("ERROR")] == [
        "ERROR: forecaster interrupted while starting; nothing was read or written"
    ], err


STOP_AS_THE_DOCUMENT_IS_WRITTEN = """
import os, signal, sys


class StoppedAsTheDocumentIsWritten:  # SIGTERM once the --json document is written, as one
    def __init__(self, stream):  # that came while the write waited on a full pipe would
        self._stream = stream

    def write(self, text):
        n = self._stream.write(text)
        if text.startswith("{"):
            os.kill(os.getpid(), signal.SIGTERM)
        return n

    def __getattr__(self, name):
        return getattr(self._stream, name)


sys.stdout = StoppedAsTheDocumentIsWritten(sys.stdout)
sys.argv = ["forecaster", "info", sys.argv[1], "--json"]
from forecaster.entry import main
main()
"""


def test_a_stop_as_the_json_document_is_written_adds_no_error_object_after_it(trained_run):
    """`info --json | slow-reader` stopped while the document waited on the full pipe: the error
    object was printed after the document (whose rest was flushed at exit), two documents on
    stdout that no JSON parser reads. Now stdout holds the document alone; stderr says what
    stopped it, and the exit code."""
    res = run_script(STOP_AS_THE_DOCUMENT_IS_WRITTEN, trained_run)
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert json.loads(res.stdout)["tickers"] == run_meta(trained_run)["tickers"]
    assert error_lines(res) == [
        "ERROR: info interrupted before it finished; the files it had written are whole and nothing is "
        "half-written: run it again"
    ]


STOP_DROPPED_IN_A_FINALIZER = """
import os, signal, sys, threading, time
from pathlib import Path
from forecaster import prediction

SIG = getattr(signal, sys.argv[1])
HELD = sys.argv[4] == "held"


class Collected:  # freed as the command runs; the signal arrives while its finalizer runs
    def __del__(self):
        try:
            os.kill(os.getpid(), SIG)
            for _ in range(100000):  # the handler runs here: Python drops its KeyboardInterrupt
                pass
        except KeyboardInterrupt:
            os.write(1, b"the interrupt fell in the finalizer\\n")
            raise


real = prediction.load_run
real_start = threading.Thread.start


def held_start(self):  # a busy machine holds the main thread up once, just after it started a thread
    real_start(self)
    threading.Thread.start = real_start
    time.sleep(0.1)


def load_run(path):
    if HELD:
        threading.Thread.start = held_start
    Collected()
    run = real(path)
    # the command still has work to do as the stop comes back: it comes in a moment however busy
    # the machine, and stops this wait; a stop lost for good lets the command go on after it
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return run


prediction.load_run = load_run
sys.argv = ["forecaster", "predict", "--run", sys.argv[2], "--offline", "--out", sys.argv[3]]
from forecaster.entry import main
main()
"""


@pytest.mark.parametrize("held", ["", "held"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stop_dropped_in_a_finalizer_still_stops_the_command(sig, held, run_copy, tmp_path):
    """A signal whose KeyboardInterrupt fell inside a finalizer (a weak reference's callback as
    the garbage collector ran it) was dropped by Python with an "Exception ignored" traceback,
    and the command ran on to exit 0. It is delivered again: one line, exit 130, nothing written.
    ``held``: the main thread is held up in the hook that delivers it again (a loaded machine),
    and the interrupt delivered again comes while it is still there; raised there, it was
    dropped once more ("Exception ignored in sys.unraisablehook") and the command exited 0."""
    out = tmp_path / "forecasts"
    res = run_script(STOP_DROPPED_IN_A_FINALIZER, sig, run_copy, out, held or "-")
    assert "the interrupt fell in the finalizer" in res.stdout, (res.returncode, res.stdout, res.stderr)
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert len(error_lines(res)) == 1 and "interrupted" in error_lines(res)[0]
    assert "Exception ignored" not in res.stderr and "Traceback" not in res.stderr
    assert not out.exists() or not any(out.rglob("*.csv"))


def test_the_installed_command_starts_from_the_entry_that_takes_signals():
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="forecaster")
    assert script.value == "forecaster.entry:main"


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_sigkill_at_random_moments_never_leaves_a_torn_file(tmp_path):
    """A writer is SIGKILLed 30 times at random points: every file is an old or a new version.

    Half of the kills come at a random delay, the other half as soon as a temp file shows
    up, so that some surely land in the middle of a write.
    """
    import crash_writer as cw

    data, out = tmp_path / "data", tmp_path / "out"
    bars = cw.all_bars()
    cw.write_version(data, out, bars, 0)
    folder = cw.forecast_dir(out)
    expected_text = {}

    def version_of(path: Path) -> int:
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        assert lines[0].split(",") == FORECAST_COLUMNS, f"{path.name}: torn header"
        version = int(lines[1].rsplit(",", 1)[1].lstrip("v"))
        if version not in expected_text:
            expected_text[version] = to_csv_text(cw.forecast_frame(version))
        assert text == expected_text[version], f"{path.name}: torn or mixed content"
        return version

    env = python_env(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    helper = subprocess.Popen(
        [sys.executable, str(TESTS / "crash_writer.py"), str(data), str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=TESTS,
    )
    rng = random.Random(1234)
    previous = (0, 0, 0)
    temps_seen = 0
    deadline = time.monotonic() + 45
    try:
        assert helper.stdout.readline().strip() == "ready"
        for i in range(30):
            assert time.monotonic() < deadline, f"only {i} kills in the time allowed"
            helper.stdin.write("go\n")
            helper.stdin.flush()
            pid = int(helper.stdout.readline())
            if i % 2:
                limit = time.monotonic() + 2
                while time.monotonic() < limit and not _fresh_temp(folder, store.store_dir(data)):
                    pass
            else:
                time.sleep(rng.uniform(0.0, 0.4))
            os.kill(pid, signal.SIGKILL)
            status = int(helper.stdout.readline().split()[1])
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status

            stored = store.load_store(data, cw.TICKER)  # readable and valid, never torn
            s = len(stored) - cw.BASE_ROWS
            pd.testing.assert_frame_equal(stored, bars.iloc[: cw.BASE_ROWS + s], check_freq=False)
            d, latest = version_of(folder / cw.DATED), version_of(folder / "latest.csv")
            assert latest <= d <= s  # written in the order store, dated file, latest.csv
            # nothing ever goes back to an older version: the store never loses a row
            assert all(now >= then for now, then in zip((s, d, latest), previous))
            previous = (s, d, latest)
            temps = [p for p in (*folder.iterdir(), *store.store_dir(data).iterdir()) if fsio.is_temp_name(p.name)]
            temps_seen = max(temps_seen, len(temps))
            # a leftover temp file never looks like a forecast or a store file
            assert all(p.suffix == ".tmp" for p in temps)
            assert sorted(p.name for p in folder.glob("*.csv")) == [cw.DATED, "latest.csv"]
            assert [p.name for p in store.store_dir(data).glob("*.parquet")] == ["AAA.parquet"]
    finally:
        helper.stdin.close()
        helper.wait(timeout=30)
    assert previous[0] > 0, "the writer never got anything written"
    assert temps_seen > 0, "no kill landed in the middle of a write"


# ============================================================================ cron scenarios
#
# The installed command is mostly start-up time (torch, pandas), so the scenarios are started
# together by one module fixture and each test then checks its own outcome.

SETPRIV = shutil.which("setpriv")


def cron_command(args, *, drop_root_powers: bool = False) -> list[str]:
    """The installed ``forecaster`` as cron starts it: through a shell that closes stdin."""
    cmd = ["/bin/sh", "-c", 'exec "$0" "$@" <&-', str(FORECASTER), *map(str, args)]
    if drop_root_powers and os.geteuid() == 0:
        # root ignores file modes; without these capabilities a 0555 folder is read-only
        cmd = [*UNPRIVILEGED_ROOT, *cmd]
    return cmd


def cron_env(home: Path, **extra: str) -> dict[str, str]:
    """A minimal environment: PATH, HOME in a scratch folder, LANG=C (+ the test hooks)."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C",
        "PYTHONPATH": f"{HOOKS}{os.pathsep}{TESTS}",
        **extra,
    }


def start(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_plain(res) -> None:
    """No colour codes, no progress bar (carriage returns), no traceback; tables in ASCII (a
    log file or a pipe gets no box-drawing characters)."""
    assert res.stdout.isascii(), res.stdout
    for stream in (res.stdout, res.stderr):
        assert "\x1b" not in stream, stream
        assert "\r" not in stream, stream
        assert "Traceback" not in stream, stream


def earlier_forecasts(folder: Path) -> dict[str, bytes]:
    """Put an earlier day's forecast (dated file and latest.csv) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    old = pd.DataFrame(
        [["STOCKA", "2024-12-30", 1, "2024-12-31", 1.0, 0.9, 1.0, 1.1, "gru", folder.name]], columns=FORECAST_COLUMNS
    )
    text = to_csv_text(old)
    for name in ("2024-12-30.csv", "latest.csv"):
        (folder / name).write_text(text)
    return {name: text.encode() for name in ("2024-12-30.csv", "latest.csv")}


def csv_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob("*.csv")}


def yahoo_env(root: Path, answers: dict) -> dict[str, str]:
    spec = root / "yahoo.json"
    spec.write_text(json.dumps({"answers": answers, "log": str(root / "yahoo.log")}))
    return {"FORECASTER_TEST_YAHOO": str(spec)}


def yahoo_log(root: Path) -> list[dict]:
    log = root / "yahoo.log"
    return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []


class Scenario:
    """One cron run: its folders, what was there before, and (once finished) its result."""

    def __init__(self, root: Path, run: Path):
        self.root, self.run = root, run
        self.data, self.out = root / "data", root / "fc"
        self.folder = self.out / run.name
        self.before: dict[str, bytes] = {}
        self.stored: dict[str, bytes] = {}
        self.proc: subprocess.Popen | None = None
        self.res: subprocess.CompletedProcess | None = None

    def args(self, *extra) -> list:
        return ["predict", "--run", self.run, "--out", self.out, *extra]

    def finish(self, timeout: float) -> None:
        assert self.proc is not None
        out, err = self.proc.communicate(timeout=timeout)
        self.res = subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)


@pytest.fixture(scope="module")
def cron(trained_run, sample_dir, tmp_path_factory):
    """Start every cron scenario at once; returns them by name once all have finished."""
    base = tmp_path_factory.mktemp("cron")
    runs: dict[str, Scenario] = {}

    def scenario(name: str) -> Scenario:
        runs[name] = Scenario(base / name, trained_run)
        runs[name].root.mkdir()
        return runs[name]

    # network down, nothing stored: 75
    s = scenario("down")
    s.before = earlier_forecasts(s.folder)
    env = cron_env(s.root / "home", **yahoo_env(s.root, {"STOCKA": "down", "STOCKB": "down"}))
    s.proc = start(cron_command(s.args("--source", "yahoo", "--data-dir", s.data)), env, s.root)

    # HTTP 429 for every ticker, stored bars too old to use: 75
    s = scenario("rate_limited")
    for sym in ("STOCKA", "STOCKB"):  # ends 2024-12-31: far more than 3 sessions ago
        s.stored[sym] = store.save_store(s.data, sym, read_csv_bars(sample_dir, sym)).read_bytes()
    s.before = earlier_forecasts(s.folder)
    env = cron_env(s.root / "home", **yahoo_env(s.root, {"STOCKA": 429, "STOCKB": 429}))
    s.proc = start(cron_command(s.args("--source", "yahoo", "--data-dir", s.data)), env, s.root)

    # one of two tickers failing: 3
    s = scenario("partial")
    s.before = earlier_forecasts(s.folder)
    answers = {"STOCKA": str(sample_dir / "STOCKA.csv"), "STOCKB": "down"}
    env = cron_env(s.root / "home", **yahoo_env(s.root, answers))
    s.proc = start(cron_command(s.args("--source", "yahoo", "--data-dir", s.data)), env, s.root)

    # a forecast folder made read-only after earlier runs (their lock file still there): 1,
    # before any network work
    s = scenario("read_only")
    s.before = earlier_forecasts(s.folder)
    (s.folder / ".lock").touch()
    for p in (s.out, s.folder):
        os.chmod(p, 0o555)
    cmd = cron_command(s.args("--source", "yahoo", "--data-dir", s.data), drop_root_powers=True)
    env = cron_env(s.root / "home", **yahoo_env(s.root, {"STOCKA": str(sample_dir / "STOCKA.csv")}))
    if os.geteuid() != 0 or SETPRIV:
        s.proc = start(cmd, env, s.root)

    # two overlapping runs: the first stops (holding the lock) just before replacing
    # latest.csv and is SIGKILLed there; the second reaches the lock only after that
    s = scenario("overlap")
    s.before = earlier_forecasts(s.folder)
    paused = s.root / "paused"
    first = cron_env(s.root / "home", FORECASTER_TEST_PAUSE=f"latest.csv:{paused}")
    s.proc = start(cron_command(s.args()), first, s.root)
    second = scenario("overlap_second")
    second.proc = start(
        cron_command(s.args()), cron_env(s.root / "home", FORECASTER_TEST_LOCK_AFTER=str(paused)), s.root
    )

    # `systemctl stop` (SIGTERM) while a run writes latest.csv: it stops just before the rename
    stopped = scenario("stopped")
    stopped.before = earlier_forecasts(stopped.folder)
    stopped_at = stopped.root / "paused"
    env = cron_env(stopped.root / "home", FORECASTER_TEST_PAUSE=f"latest.csv:{stopped_at}")
    stopped.proc = start(cron_command(stopped.args()), env, stopped.root)

    try:
        give_up = time.monotonic() + 300
        for marker, proc in ((paused, s.proc), (stopped_at, stopped.proc)):
            while not marker.exists():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < give_up, "a run never reached latest.csv"
                time.sleep(0.1)
        stopped.proc.send_signal(signal.SIGTERM)
        second.finish(timeout=300)
        s.proc.send_signal(signal.SIGKILL)
        for each in runs.values():
            if each.proc is not None and each.res is None:
                each.finish(timeout=300)
    finally:
        for each in runs.values():
            if each.proc is not None and each.proc.poll() is None:
                each.proc.kill()
                each.proc.wait(timeout=30)
        for p in (runs["read_only"].out, runs["read_only"].folder):
            os.chmod(p, 0o755)
    return runs


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_cron_network_down_exits_75_and_keeps_earlier_forecasts(cron):
    s = cron["down"]
    assert_plain(s.res)
    assert s.res.returncode == EXIT_TEMPFAIL, s.res.stderr
    [line] = error_lines(s.res)
    assert "STOCKA" in line and "STOCKB" in line and "cannot reach Yahoo" in line
    assert csv_bytes(s.folder) == s.before
    assert not (s.data / "store" / "STOCKA.parquet").exists()
    events = yahoo_log(s.root)
    for sym in ("STOCKA", "STOCKB"):  # each ticker retried with backoff, then given up
        assert sum(e["event"] == "attempt" and e["ticker"] == sym for e in events) == 4
    sleeps = [e["seconds"] for e in events if e["event"] == "sleep"]
    assert len(sleeps) == 6 and all(0 <= x <= 4 for x in sleeps)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_cron_rate_limited_with_a_stale_store_exits_75(cron):
    s = cron["rate_limited"]
    assert_plain(s.res)
    assert s.res.returncode == EXIT_TEMPFAIL, s.res.stderr
    [line] = error_lines(s.res)
    assert "STOCKA" in line and "STOCKB" in line and "429" in line and "behind" in line
    assert csv_bytes(s.folder) == s.before
    for sym, content in s.stored.items():  # a failed refresh never touches the store
        assert store.store_path(s.data, sym).read_bytes() == content
    sleeps = [e["seconds"] for e in yahoo_log(s.root) if e["event"] == "sleep"]
    assert len(sleeps) == 6 and all(0 <= x <= 20 for x in sleeps)  # 5x longer base for 429


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_cron_one_of_two_tickers_failing_exits_3(cron):
    s = cron["partial"]
    assert_plain(s.res)
    assert s.res.returncode == EXIT_PARTIAL, s.res.stderr
    [line] = error_lines(s.res)
    assert "STOCKB" in line and "STOCKA" not in line
    assert set(pd.read_csv(s.folder / "latest.csv")["ticker"]) == {"STOCKA"}
    assert (s.folder / "latest.csv").read_bytes() == (s.folder / "2024-12-31.csv").read_bytes()
    assert (s.folder / "2024-12-30.csv").read_bytes() == s.before["2024-12-30.csv"]
    assert store.store_path(s.data, "STOCKA").is_file()
    assert not store.store_path(s.data, "STOCKB").exists()
    assert "STOCKA" in s.res.stdout  # the table of what was written


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_cron_read_only_output_exits_1_and_keeps_earlier_forecasts(cron):
    s = cron["read_only"]
    assert s.res is not None, "as root this test needs setpriv (util-linux) to drop the override"
    assert_plain(s.res)
    assert s.res.returncode == EXIT_ERROR, s.res.stderr
    [line] = error_lines(s.res)
    assert str(s.folder) in line and "Permission denied" in line
    assert csv_bytes(s.folder) == s.before
    assert yahoo_log(s.root) == [] and not s.data.exists()  # refused before the refresh


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_cron_sigterm_mid_write_exits_130_and_leaves_no_temp_file(cron):
    """`systemctl stop` or a wrapper's timeout while latest.csv is written: one line, exit 130,
    the dated file whole, latest.csv the earlier one and no temp file left behind, rather than
    a process killed by the signal (143) that says nothing and leaves its temp file."""
    s = cron["stopped"]
    assert_plain(s.res)
    assert s.res.returncode == 130, (s.res.returncode, s.res.stderr)
    [line] = error_lines(s.res)
    assert line.startswith("ERROR: predict interrupted before it finished"), line
    assert "nothing is half-written" in line and "run it again" in line, line
    assert not [p.name for p in s.folder.iterdir() if fsio.is_temp_name(p.name)]
    assert (s.folder / "latest.csv").read_bytes() == s.before["latest.csv"]
    dated = pd.read_csv(s.folder / "2024-12-31.csv")
    assert list(dated.columns) == FORECAST_COLUMNS and len(dated) == 6


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_cron_overlapping_runs_and_sigkill_mid_write(cron, cli):
    first, second = cron["overlap"], cron["overlap_second"]
    # the overlapping run gives up at once, naming the run that holds the lock
    assert_plain(second.res)
    assert second.res.returncode == EXIT_TEMPFAIL, second.res.stderr
    [line] = error_lines(second.res)
    assert f"pid {first.proc.pid}" in line and "holds" in line and "--lock-timeout" in line

    # the first was killed between its two renames: the dated file is whole, latest.csv old
    assert first.res.returncode == -signal.SIGKILL
    folder = first.folder
    dated = folder / "2024-12-31.csv"
    df = pd.read_csv(dated)
    assert list(df.columns) == FORECAST_COLUMNS and len(df) == 6
    assert (folder / "latest.csv").read_bytes() == first.before["latest.csv"]
    assert (folder / "2024-12-30.csv").read_bytes() == first.before["2024-12-30.csv"]
    assert any(fsio.is_temp_name(p.name) for p in folder.iterdir())  # its unfinished temp
    assert sorted(p.name for p in folder.glob("*.csv")) == ["2024-12-30.csv", "2024-12-31.csv", "latest.csv"]

    # the lock of the killed run blocks nobody: the next run goes straight through
    started = time.monotonic()
    res = cli("predict", "--run", first.run, "--out", first.out, "--lock-timeout", "0", "-q")
    assert res.exit_code == 0, res.stderr
    assert time.monotonic() - started < 30
    assert (folder / "latest.csv").read_bytes() == dated.read_bytes()
