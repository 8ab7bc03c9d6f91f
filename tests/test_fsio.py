import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from support import UNPRIVILEGED_ROOT, hold_lock, python_env, stop

from forecaster import fsio
from forecaster.errors import EXIT_TEMPFAIL, LockBusy


def test_atomic_write_text_and_bytes(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    fsio.atomic_write_text(target, "héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    fsio.atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_writer_failure_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="boom"):
        with fsio.atomic_writer(target) as f:
            f.write("new, half written")
            raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_atomic_writer_failure_in_fsync_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(fsio.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        fsio.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_writer_keeps_mode_of_existing_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    target.chmod(0o640)
    fsio.atomic_write_text(target, "new")
    assert target.stat().st_mode & 0o777 == 0o640


def test_atomic_writer_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError):
        with fsio.atomic_writer(tmp_path / "x", "a"):
            pass


def test_replace_dir_swaps_whole_directory(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / "old.txt").write_text("old")
    stale = tmp_path / ".run.replaced-deadbeef"  # left by an interrupted earlier replace
    stale.mkdir()
    tmp = fsio.sibling_temp_dir(final)
    (tmp / "new.txt").write_text("new")
    fsio.replace_dir(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_replace_dir_fallback_without_exchange(tmp_path, monkeypatch):
    monkeypatch.setattr(fsio, "_exchange", lambda a, b: False)
    final = tmp_path / "run"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp = fsio.sibling_temp_dir(final)
    (tmp / "new.txt").write_text("new")
    fsio.replace_dir(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.parametrize("swap", ["exchange", "renames"])
def test_replace_dir_keeps_the_permissions_of_the_folder_it_replaces(tmp_path, monkeypatch, swap):
    """A folder its user made 0750 (or read-only) stays so when it is replaced: the new one
    came with the default mode (0755 under the usual umask)."""
    if swap == "renames":
        monkeypatch.setattr(fsio, "_exchange", lambda a, b: False)
    final = tmp_path / "eval"
    final.mkdir()
    final.chmod(0o750)
    tmp = fsio.sibling_temp_dir(final)
    (tmp / "new.txt").write_text("new")
    fsio.replace_dir(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert os.stat(final).st_mode & 0o7777 == 0o750


# `python -c` script: replace the folder named by the first argument with one holding new.txt
# (with the exchange the system offers, or the two renames when the second argument says so)
_REPLACE = """
import logging, sys
from pathlib import Path
from forecaster import fsio
logging.basicConfig(format="%(levelname)s: %(message)s")
if sys.argv[2] == "renames":
    fsio._exchange = lambda a, b: False
final = Path(sys.argv[1])
tmp = fsio.sibling_temp_dir(final)
(tmp / "new.txt").write_text("new")
fsio.replace_dir(tmp, final)
"""


@pytest.mark.parametrize("swap", ["exchange", "renames"])
def test_replace_dir_of_a_read_only_folder_is_done_and_warns_of_what_it_left(tmp_path, swap):
    """A folder made read-only (a run's eval/), in a folder that can be written: the new
    contents are swapped in, and the old ones, which cannot be deleted, are named in a warning;
    it raised after the swap (the command failed with the new contents in place)."""
    final = tmp_path / "eval"
    final.mkdir()
    (final / "old.txt").write_text("old")
    final.chmod(0o555)
    cmd = [sys.executable, "-c", _REPLACE, str(final), swap]
    try:
        res = subprocess.run(
            [*UNPRIVILEGED_ROOT, *cmd] if os.geteuid() == 0 else cmd,
            capture_output=True,
            text=True,
            env=python_env(),
            timeout=60,
        )
        left = [p for p in tmp_path.iterdir() if p.name != "eval"]
    finally:
        for p in tmp_path.iterdir():
            p.chmod(0o755)
    assert res.returncode == 0, res.stderr
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    [old] = left
    assert [p.name for p in old.iterdir()] == ["old.txt"]
    [line] = res.stderr.splitlines()
    assert line.startswith("WARNING: ") and str(final) in line and str(old) in line, line
    assert "Permission denied" in line and "delete it by hand" in line, line


def test_saving_a_run_removes_what_a_killed_writer_of_it_left(trained_run, tmp_path):
    """A writer killed while it wrote the run out left its temp folder beside the run (a whole
    copy of a run, each time): the next save of the run, under the same lock, deletes it, and
    leaves alone those of other runs and files of the same form."""
    from forecaster import checkpoint

    run = tmp_path / "tiny"
    left = [tmp_path / ".tiny.k1ll3d_0.tmp", tmp_path / ".tiny.2.abcdefgh.tmp", tmp_path / ".tiny-2.abcdefgh.tmp"]
    for p in left:
        p.mkdir()
    (tmp_path / ".tiny.abcdefgh.tmp").write_text("not a folder")
    manifest = checkpoint.read_manifest(trained_run)
    history = [checkpoint._history_row(r) for r in csv.DictReader((trained_run / "history.csv").open())]
    checkpoint.save_run(run, checkpoint.read_weights(trained_run), manifest, history)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".tiny.2.abcdefgh.tmp", ".tiny-2.abcdefgh.tmp", ".tiny.abcdefgh.tmp", "tiny"]
    )
    assert checkpoint.load_run(run).name == manifest.name


def test_replace_dir_creates_missing_final(tmp_path):
    tmp = fsio.sibling_temp_dir(tmp_path / "new")
    (tmp / "a").write_text("a")
    fsio.replace_dir(tmp, tmp_path / "new")
    assert (tmp_path / "new" / "a").read_text() == "a"
    assert not tmp.exists()


def test_file_lock_records_holder_and_cleans_up(tmp_path):
    lock = tmp_path / "store" / ".lock"
    with fsio.file_lock(lock):
        holder = (tmp_path / "store" / ".lock.holder").read_text()
        assert f'"pid": {os.getpid()}' in holder
    assert not (tmp_path / "store" / ".lock.holder").exists()
    with fsio.file_lock(lock):  # free again
        pass


@pytest.fixture
def lock_holder(tmp_path):
    """A separate process that takes the lock and keeps it until killed."""
    lock = tmp_path / "store" / ".lock"
    proc = hold_lock(lock, 60)
    try:
        yield proc, lock
    finally:
        stop(proc)


def test_second_process_gets_lock_busy_naming_holder(lock_holder):
    proc, lock = lock_holder
    started = time.monotonic()
    with pytest.raises(LockBusy) as info:
        with fsio.file_lock(lock, timeout=0):
            pass
    assert time.monotonic() - started < 2
    message = str(info.value)
    assert f"pid {proc.pid}" in message
    assert str(lock) in message and "--lock-timeout" in message
    assert info.value.exit_code == EXIT_TEMPFAIL


def test_lock_of_killed_holder_is_free_at_once(lock_holder):
    proc, lock = lock_holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    started = time.monotonic()
    with fsio.file_lock(lock, timeout=0):
        pass
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("recorded", ["2000-01-01T00:00:00Z", "now"])
def test_a_holder_record_whose_pid_went_to_a_process_started_since_names_no_holder(tmp_path, recorded):
    """A holder killed outright leaves its record; after a reboot its pid may belong to a
    process started since (here this one, against a record dated before it began), which does
    not hold the lock. A record taken after the process began names it."""
    import json
    import socket
    from datetime import UTC, datetime

    lock = tmp_path / ".lock"
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if recorded == "now" else recorded
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": when, "command": "forecaster train"}
    (tmp_path / ".lock.holder").write_text(json.dumps(record))
    held = fsio.lock_holder(lock)
    if recorded == "now":
        assert held == f"pid {os.getpid()} on {socket.gethostname()}, started {when}: forecaster train"
    else:
        assert held is None


@pytest.mark.parametrize("swap", ["exchange", "renames"])
def test_a_run_replaced_while_it_is_read_is_read_whole_from_the_new_one(trained_run, tmp_path, monkeypatch, swap):
    """`train --run-dir` puts a new run in place of the one a cron `predict` is reading: the
    manifest (calibration, tickers, gate) and the weights must come from one training. They
    came from one each: the old run.json and the new model.safetensors."""
    import json

    from safetensors.numpy import load_file, save_file

    from forecaster import checkpoint

    if swap == "renames":
        monkeypatch.setattr(fsio, "_exchange", lambda a, b: False)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    new = fsio.sibling_temp_dir(run)
    shutil.copytree(trained_run, new, dirs_exist_ok=True)
    doc = json.loads((new / "run.json").read_text())
    doc["created_at"] = "2030-01-01T00:00:00+00:00"
    (new / "run.json").write_text(json.dumps(doc))
    halved = {k: v * 0.5 for k, v in load_file(str(new / "model.safetensors")).items()}
    save_file(halved, str(new / "model.safetensors"))

    real, reads = checkpoint.read_weights, []

    def replaced_meanwhile(run_dir):
        if not reads:  # the manifest was read: now the new run takes the old one's place
            fsio.replace_dir(new, run)
        reads.append(real(run_dir))
        return reads[-1]

    monkeypatch.setattr(checkpoint, "read_weights", replaced_meanwhile)
    loaded = checkpoint.load_run(run)
    assert loaded.manifest.created_at.year == 2030
    assert len(reads) == 2 and reads[-1]["head.weight"].tolist() == halved["head.weight"].tolist()
    assert loaded.model.head_w.T.tolist() == halved["head.weight"].tolist()
