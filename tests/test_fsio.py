import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import UNPRIVILEGED_ROOT, hold_lock, python_env, stop, tiny_overrides

from forecaster import fsio
from forecaster.errors import EXIT_ERROR, EXIT_TEMPFAIL, LockBusy


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


def _old_and_new_without_exchange(tmp_path, monkeypatch):
    """A run folder holding old.txt and its replacement holding new.txt, on a file system
    without renameat2's exchange (the fallback of two renames)."""
    monkeypatch.setattr(fsio, "_exchange", lambda a, b: False)
    final = tmp_path / "run"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp = fsio.sibling_temp_dir(final)
    (tmp / "new.txt").write_text("new")
    return final, tmp


def test_replace_dir_fallback_without_exchange(tmp_path, monkeypatch):
    final, tmp = _old_and_new_without_exchange(tmp_path, monkeypatch)
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
@pytest.mark.parametrize("inner", [False, True])
def test_replace_dir_of_a_read_only_folder_keeps_its_mode_and_leaves_no_copy(tmp_path, swap, inner):
    """A folder made read-only (a run during its training, whose checkpoints replace it; a
    run's eval/), in a folder that can be written, perhaps with a read-only folder in it too:
    the new contents are swapped in with the old mode, and the old contents are deleted. They
    were left behind with a warning, a whole copy of the run at every checkpoint."""
    final = tmp_path / "eval"
    final.mkdir()
    (final / "old.txt").write_text("old")
    if inner:
        (final / "plots").mkdir()
        (final / "plots" / "a.png").write_text("png")
        (final / "plots").chmod(0o500)
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
        mode = final.stat().st_mode & 0o777
        left = [p.name for p in tmp_path.iterdir() if p.name != "eval"]
    finally:
        for p in tmp_path.rglob("*"):
            if p.is_dir():
                p.chmod(0o755)
        tmp_path.chmod(0o755)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert mode == 0o555 and left == []


def test_replace_dir_warns_of_old_contents_it_may_not_delete(tmp_path, monkeypatch, caplog):
    """Old contents that still cannot be deleted (another owner's folder in them) are named in
    a warning: the new contents are in place, so the replace is done."""
    from forecaster import fsio

    final = tmp_path / "eval"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp = fsio.sibling_temp_dir(final)
    (tmp / "new.txt").write_text("new")

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(fsio.shutil, "rmtree", refused)
    with caplog.at_level("WARNING", logger="forecaster"):
        fsio.replace_dir(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    [old] = [p for p in tmp_path.iterdir() if p.name != "eval"]
    [line] = [r.getMessage() for r in caplog.records]
    assert str(final) in line and str(old) in line and "Permission denied" in line and "delete it by hand" in line


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


def test_a_lock_file_that_cannot_be_made_in_a_folder_that_exists_is_unavailable_not_busy():
    """A folder where no file can be made though it exists (/proc/self here; a folder of
    another kernel file system elsewhere): the lock library tried again until its timeout and
    the command said another run held the lock, exit 75, which no retry could mend. It is
    exit 1 now, with the system's reason."""
    lock = Path("/proc/self/.run.lock")
    started = time.monotonic()
    with pytest.raises(fsio.LockUnavailable) as info:
        with fsio.file_lock(lock, timeout=30):  # at once, not after the wait for a holder
            pass
    assert time.monotonic() - started < 5
    assert f"cannot create the lock file {lock}" in str(info.value)
    assert info.value.exit_code == EXIT_ERROR


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


def test_a_holder_record_json_cannot_read_names_no_holder(tmp_path):
    """A holder record nested deeper than Python's recursion limit is no readable record, as a
    torn one is, not an unexpected error."""
    lock = tmp_path / ".lock"
    (tmp_path / ".lock.holder").write_text("[" * 100_000 + "]" * 100_000)
    assert fsio.lock_holder(lock) is None


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


def _usual_mode(kind: int) -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return kind & ~umask


@pytest.mark.parametrize("umask", [0o077, 0o027])
def test_new_files_follow_the_umask_the_program_sets_after_importing(tmp_path, umask):
    """The umask was read once, as forecaster was imported: a program that set its own later
    (a daemon's 077) got files and folders readable by everyone."""
    before = os.umask(umask)
    try:
        fsio.atomic_write_text(tmp_path / "new.csv", "x\n")
        folder = fsio.sibling_temp_dir(tmp_path / "eval")
    finally:
        os.umask(before)
    assert oct((tmp_path / "new.csv").stat().st_mode & 0o777) == oct(0o666 & ~umask)
    assert oct(folder.stat().st_mode & 0o777) == oct(0o777 & ~umask)


def test_the_umask_is_read_without_setting_it_whatever_the_process_is_named(tmp_path, monkeypatch):
    """The umask is read from /proc's status of the process, whose name may be any bytes: read
    as ASCII, a name like 'prévu' made it set the umask for a moment, for every thread."""
    status = tmp_path / "status"
    status.write_bytes("Name:\tprévu\nState:\tR (running)\nUmask:\t0027\n".encode())
    real_open = open

    def proc_status(path, *args, **kwargs):
        return real_open(status if path == "/proc/self/status" else path, *args, **kwargs)

    def set_for_every_thread(mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(fsio, "open", proc_status, raising=False)
    monkeypatch.setattr(fsio.os, "umask", set_for_every_thread)
    assert fsio._umask() == 0o027


def test_atomic_writer_interrupted_keeps_the_old_file_and_removes_the_temp(tmp_path):
    """Ctrl-C inside the block (a KeyboardInterrupt, no Exception) leaves no temp file either."""
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with fsio.atomic_writer(target) as f:
            f.write("new, half written")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_published_files_get_the_usual_mode(tmp_path):
    """A run's files are readable as the umask says, whatever mode they were written with."""
    (tmp_path / "weights").write_bytes(b"w")
    (tmp_path / "weights").chmod(0o600)
    (tmp_path / "sub").mkdir()
    fsio.publish_files(tmp_path)
    assert (tmp_path / "weights").stat().st_mode & 0o777 == _usual_mode(0o666)


def test_replace_dir_puts_the_old_folder_back_when_the_new_one_cannot_take_its_place(tmp_path, monkeypatch):
    """The two renames of the fallback: when the second fails, the old folder is put back, not
    left under its backup name with nothing at the final one."""
    final, tmp = _old_and_new_without_exchange(tmp_path, monkeypatch)
    real = os.replace

    def second_fails(src, dst):
        if str(src) == str(tmp):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(fsio.os, "replace", second_fails)
    with pytest.raises(OSError, match="No space left"):
        fsio.replace_dir(tmp, final)
    assert [p.name for p in final.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run", tmp.name])


def test_swap_symlink_over_a_real_folder_fails_and_leaves_no_temp_link(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "prod").mkdir()
    (tmp_path / "prod" / "file").write_text("x")
    with pytest.raises(OSError):
        fsio.swap_symlink(tmp_path / "prod", "target")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prod", "target"]
    fsio.swap_symlink(tmp_path / "link", "target")
    assert os.readlink(tmp_path / "link") == "target"


def test_follow_link_resolves_a_link_and_leaves_any_other_path_as_given(tmp_path, monkeypatch):
    (tmp_path / "real" / "run").mkdir(parents=True)
    (tmp_path / "via").symlink_to(tmp_path / "real")
    (tmp_path / "prod").symlink_to(tmp_path / "real" / "run")
    monkeypatch.chdir(tmp_path)
    assert fsio.follow_link("prod") == tmp_path / "real" / "run"
    assert fsio.follow_link("via/run") == Path("via/run")  # a link above it is no matter


def test_stale_temp_dirs_are_those_named_as_sibling_temp_dir_names_them(tmp_path):
    """Only ``.<name>.<8 characters>.tmp`` folders go: a folder of the user's with a name alike
    (fewer characters, another run's name) stays."""
    made = fsio.sibling_temp_dir(tmp_path / "run")
    kept = [tmp_path / ".run.old.tmp", tmp_path / ".run.abcdefghi.tmp", tmp_path / ".run2.abcdefgh.tmp"]
    for p in kept:
        p.mkdir()
    fsio.remove_stale_temp_dirs(tmp_path / "run")
    assert not made.exists()
    assert all(p.is_dir() for p in kept)


def test_a_live_holder_that_took_the_lock_as_it_started_is_named(lock_holder):
    """The holder's start time, read from /proc, is known only to the second (as is the time in
    its record): a holder that took the lock in its first moments must not be taken for a
    process started after the record."""
    import socket

    proc, lock = lock_holder
    held = fsio.lock_holder(lock)
    assert held is not None and held.startswith(f"pid {proc.pid} on {socket.gethostname()}, started ")


def _record_holder(lock, pid, **extra):
    import json
    import socket
    from datetime import UTC, datetime

    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"pid": pid, "host": socket.gethostname(), "started": when, "command": "forecaster train", **extra}
    lock.with_name(lock.name + ".holder").write_text(json.dumps(record))


@pytest.mark.parametrize("pid", [float("inf"), 10**20, 0, -1])
def test_a_holder_record_whose_pid_no_process_can_have_names_no_holder(tmp_path, pid):
    """A damaged record's pid: Infinity or 10**20 ended every reader (info of a folder of runs)
    with an unexpected OverflowError; 0 and -1, which os.kill takes for a process group and for
    every process, named a holder for ever."""
    lock = tmp_path / ".lock"
    _record_holder(lock, pid)
    assert fsio.lock_holding(lock) is None


def test_a_lock_held_for_a_purpose_says_it_and_one_recorded_without_says_none(tmp_path):
    """One lock file can be locked for more than one thing (a promoted name's lock is the file a
    training of a run of that name would lock): the purpose its holder gave is read with who it
    is, from one record. A record without one (every earlier version's) reads as before."""
    lock = tmp_path / ".lock"
    with fsio.file_lock(lock, purpose="name"):
        held = fsio.lock_holding(lock)
        assert held is not None and held[1] == "name" and held[0] == fsio.lock_holder(lock)
        assert held[0].startswith(f"pid {os.getpid()} on ")
    assert fsio.lock_holding(lock) is None
    _record_holder(lock, os.getpid())
    assert fsio.lock_holding(lock) == (fsio.lock_holder(lock), None)
    _record_holder(lock, os.getpid(), purpose=["not", "a", "word"])
    assert fsio.lock_holding(lock) == (fsio.lock_holder(lock), None)


def test_a_holder_record_of_a_dead_process_or_another_host_names_no_holder(tmp_path):
    lock = tmp_path / ".lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    _record_holder(lock, dead.pid)
    assert fsio.lock_holder(lock) is None
    _record_holder(lock, os.getpid(), host="elsewhere.invalid")
    assert fsio.lock_holder(lock) is None
    _record_holder(lock, os.getpid())
    assert fsio.lock_holder(lock).startswith(f"pid {os.getpid()} on ")


def test_a_holder_of_another_user_that_cannot_be_signalled_is_named(tmp_path, monkeypatch):
    """os.kill(pid, 0) on another user's live process is a PermissionError: it is alive."""
    lock = tmp_path / ".lock"
    _record_holder(lock, os.getpid())

    def not_yours(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(fsio.os, "kill", not_yours)
    assert fsio.lock_holder(lock).startswith(f"pid {os.getpid()} on ")


def test_the_holders_command_line_is_recorded_printable_and_cut_to_200_characters(tmp_path, monkeypatch):
    import json

    lock = tmp_path / ".lock"
    monkeypatch.setattr(sys, "argv", ["/usr/bin/forecaster", "train", "--run-dir", "a\x1bb", "x" * 300])
    with fsio.file_lock(lock):
        command = json.loads((tmp_path / ".lock.holder").read_text())["command"]
    assert command.startswith("forecaster train --run-dir 'a?b' ")
    assert len(command) == 200 and command.endswith("xxx...")


def test_file_lock_waits_for_the_holder_up_to_its_timeout(tmp_path):
    lock = tmp_path / ".lock"
    proc = hold_lock(lock, 0.5)
    try:
        with fsio.file_lock(lock, timeout=30):
            assert (tmp_path / ".lock.holder").read_text().count(f'"pid": {os.getpid()}') == 1
    finally:
        stop(proc)


def test_a_holder_record_that_cannot_be_written_does_not_cost_the_lock(tmp_path, monkeypatch):
    def disk_full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsio, "atomic_write_text", disk_full)
    ran = []
    with fsio.file_lock(tmp_path / ".lock"):
        ran.append(True)
    assert ran == [True]


@pytest.mark.parametrize(
    ("content", "cut"), [(b"", False), (b"a,b\n1,2\n", False), (b"a,b\r\n1,2\r", False), (b"a,b\n1,2", True)]
)
def test_ends_mid_line(tmp_path, content, cut):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    assert fsio.ends_mid_line(path) is cut
    assert fsio.ends_mid_line(tmp_path / "missing.csv") is False


def test_cannot_make_or_write_into_a_folder_says_why_without_making_anything(tmp_path, monkeypatch):
    """What the permissions refuse, told up front: Permission denied, or Read-only file system
    where the folder's file system is mounted read-only; nothing for a folder that exists
    already (cannot_make) or that can be written."""
    import errno

    present = tmp_path / "present"
    present.mkdir()
    assert fsio.cannot_make(present / "new") is None and fsio.cannot_write_into(present) is None
    monkeypatch.setattr(fsio.os, "access", lambda path, mode: False)
    assert fsio.cannot_make(present) is None  # there already: nothing to make
    denied = fsio.cannot_make(present / "new" / "deeper")
    assert (denied.errno, denied.filename) == (errno.EACCES, str(present))
    assert fsio.cannot_write_into(present).errno == errno.EACCES
    monkeypatch.setattr(fsio.os, "statvfs", lambda path: type("vfs", (), {"f_flag": os.ST_RDONLY})())
    read_only = fsio.cannot_write_into(present)
    assert (read_only.errno, read_only.strerror) == (errno.EROFS, os.strerror(errno.EROFS))
    assert not list(present.iterdir())


def test_only_old_temp_files_of_atomic_writer_are_removed(tmp_path):
    """A temp file (``.<name>.<random>.tmp``) older than min_age is a killed writer's: removed
    and counted. A newer one (a live writer's), another dot-file, a folder or a link of that
    name stays."""
    old, new = tmp_path / ".prices.csv.ab12cd.tmp", tmp_path / ".prices.csv.ef34gh.tmp"
    other = [tmp_path / ".prices.tmp", tmp_path / "prices.csv.ab12.tmp"]
    for p in (old, new, *other):
        p.write_text("x")
    (tmp_path / ".run.abcdefgh.tmp").mkdir()
    (tmp_path / ".latest.ab12cd.tmp").symlink_to(other[1])
    hour_ago = time.time() - 3600
    for p in (old, *other, tmp_path / ".run.abcdefgh.tmp"):
        os.utime(p, (hour_ago, hour_ago))
    os.utime(tmp_path / ".latest.ab12cd.tmp", (hour_ago, hour_ago), follow_symlinks=False)
    assert fsio.is_temp_name(old.name) and not fsio.is_temp_name(".prices.tmp")
    assert fsio.remove_stale_temps(tmp_path, min_age=600) == 1
    assert not old.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [new.name, *(p.name for p in other), ".run.abcdefgh.tmp", ".latest.ab12cd.tmp"]
    )
    assert fsio.remove_stale_temps(tmp_path / "missing") == 0


def test_refuse_empty_folders():
    """A blank folder name is refused, None only where the folder is optional."""
    from forecaster.errors import ConfigError

    fsio.refuse_empty_folders(out=None, run_dir="runs/a", required=("run_dir",))
    with pytest.raises(ConfigError, match='out="" names no folder: give a folder name, or None for its default'):
        fsio.refuse_empty_folders(out="  ")
    with pytest.raises(ConfigError, match='run_dir="" names no folder: give a folder name$'):
        fsio.refuse_empty_folders(run_dir=" ", required=("run_dir",))
    with pytest.raises(TypeError, match="run_dir must be a folder name .* not NoneType"):
        fsio.refuse_empty_folders(run_dir=None, required=("run_dir",))


def test_replacing_a_folder_that_is_a_link_replaces_the_link_and_leaves_what_it_points_at(tmp_path, caplog):
    """A run's eval/ made a link to a folder elsewhere (a copied run): evaluate's replace put
    the new folder in place and then left the link aside as a hidden folder, with a warning on
    every evaluation that it could not be deleted. The link goes; what it pointed at stays."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    final = tmp_path / "run" / "eval"
    final.parent.mkdir()
    final.symlink_to(elsewhere)
    new = fsio.sibling_temp_dir(final)
    (new / "metrics.csv").write_text("new")
    with caplog.at_level("WARNING", logger="forecaster"):
        fsio.replace_dir(new, final)
    assert not final.is_symlink() and (final / "metrics.csv").read_text() == "new"
    assert sorted(p.name for p in final.parent.iterdir()) == ["eval"]
    assert (elsewhere / "precious.txt").read_text() == "keep" and not caplog.records


def test_a_file_written_over_a_link_to_a_device_takes_the_usual_mode_not_the_devices(tmp_path):
    """latest.csv made a link to /dev/zero (mode 666): the forecast written in its place was
    writable by every user of the machine."""
    target = tmp_path / "latest.csv"
    target.symlink_to("/dev/null")
    fsio.atomic_write_text(target, "x\n")
    assert not target.is_symlink() and target.read_text() == "x\n"
    assert target.stat().st_mode & 0o777 == 0o666 & ~fsio._umask()


def _pipe(path):
    """A named pipe at ``path``: opening it to read waits for a writer, and reading it never ends
    while one is there. Without the check, each read below hangs until the test's timeout."""
    os.mkfifo(path)
    return path


def test_an_own_file_that_is_a_pipe_or_a_device_is_refused_before_it_is_read(tmp_path):
    (tmp_path / "ok.json").write_text('{"a": "é"}', encoding="utf-8")
    assert fsio.read_own_file(tmp_path / "ok.json") == '{"a": "é"}'
    (tmp_path / "device.json").symlink_to(os.devnull)
    for path in (_pipe(tmp_path / "pipe.json"), tmp_path / "device.json"):
        with pytest.raises(fsio.NotARegularFile, match="not a regular file"):
            fsio.read_own_file(path)
    with pytest.raises(FileNotFoundError):
        fsio.read_own_file(tmp_path / "absent.json")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(IsADirectoryError) as folder:
        fsio.read_own_file(tmp_path / "folder.json")
    assert folder.value.filename == str(tmp_path / "folder.json")  # not its descriptor's number


def test_the_files_of_a_run_from_elsewhere_that_are_pipes_are_refused_not_waited_on(trained_run, tmp_path, caplog):
    """A run folder copied from elsewhere whose run.json or history.csv is a pipe (or a link to
    /dev/zero) hung info, evaluate --plot, train --resume and retrain's pruning (or read until
    memory ran out); so did a lock's record of its holder."""
    from forecaster import checkpoint, plots, registry

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "run.json").unlink()
    _pipe(run / "run.json")
    with pytest.raises(checkpoint.RunFormatError, match=r"run\.json is not a regular file .*: not a forecaster run"):
        checkpoint.read_manifest(run)
    assert registry._finished(run) is False

    (run / "history.csv").unlink()
    _pipe(run / "history.csv")
    assert plots._training_history(run / "history.csv") is None
    assert "training.png not drawn" in caplog.text and "not a regular file" in caplog.text

    lock = tmp_path / ".run.lock"
    _pipe(fsio._holder_file(lock))
    assert fsio._holder(lock) is None


def test_an_interrupted_runs_history_that_is_a_pipe_is_refused_on_resume(tmp_path, sample_dir):
    from forecaster import checkpoint, training
    from forecaster.config import load_config

    run = tmp_path / "run"

    def stop(rec):
        raise KeyboardInterrupt

    with pytest.raises(training.Interrupted):
        training.train(load_config(None, tiny_overrides(sample_dir)), run_dir=run, on_epoch=stop)
    (run / "history.csv").unlink()
    _pipe(run / "history.csv")
    with pytest.raises(
        checkpoint.RunFormatError, match=r"history\.csv is not a readable epoch history \(not a regular"
    ):
        checkpoint.read_resume(run)
