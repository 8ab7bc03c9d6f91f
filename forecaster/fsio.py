"""Atomic writes, directory swaps and process locks: the one place that renames/locks files."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from stat import S_IRWXU, S_ISDIR, S_ISLNK, S_ISREG
from typing import IO, Any

from filelock import FileLock, Timeout

from forecaster.errors import ConfigError, ForecasterError, LockBusy

PathLike = str | os.PathLike[str]

log = logging.getLogger("forecaster")


def _umask() -> int:
    """The process umask as it is now (a program may set its own after importing forecaster):
    temp files are created 0600 and get the usual mode on rename. Read from /proc where there
    is one: os.umask reads it only by setting it, for a moment, for every thread."""
    try:
        with open("/proc/self/status", "rb") as f:  # bytes: the process name may be in any encoding
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Yield a file that replaces ``path`` only when the block finishes without an exception.

    Writes go to a temp file in the same directory, which is flushed, fsynced and renamed over
    ``path`` (then the directory is fsynced). On an exception the temp file is removed and the
    old ``path`` is left untouched. ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if mode == "wb":
            handle = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        take_mode(tmp, target)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


def take_mode(tmp: PathLike, target: PathLike) -> None:
    """Give ``tmp``, about to replace ``target``, the mode of ``target``, or the usual one when
    there is none yet (mkstemp makes its file readable by its owner alone)."""
    try:
        mode = Path(target).stat().st_mode
        if not S_ISREG(mode):  # a link to /dev/zero (mode 666) gives the file no mode of its own
            raise FileNotFoundError(target)
        os.chmod(tmp, mode & 0o7777)
    except FileNotFoundError:
        os.chmod(tmp, 0o666 & ~_umask())


def atomic_write_text(path: PathLike, text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    with atomic_writer(path, "w") as f:
        f.write(text)


def sibling_temp_dir(final_dir: PathLike) -> Path:
    """Create an empty temp directory next to ``final_dir`` (same filesystem, for replace_dir)."""
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result must be readable as usual
    return tmp


def remove_stale_temp_dirs(final_dir: PathLike) -> None:
    """Delete the temp directories that :func:`sibling_temp_dir` made for ``final_dir`` and a
    killed writer left (``.<name>.<8 random characters>.tmp``). Call only while holding the lock
    every writer of ``final_dir`` holds: no other writer is filling one now."""
    final = Path(final_dir)
    pattern = re.compile(re.escape(f".{final.name}.") + r"[a-z0-9_]{8}\.tmp")
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


def publish_files(directory: PathLike) -> None:
    """fsync every file in ``directory`` and give it the permissions the umask asks for."""
    mode = 0o666 & ~_umask()
    for f in Path(directory).iterdir():
        if f.is_file():
            os.chmod(f, mode)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where that is unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded in this process
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def replace_dir(tmp_dir: PathLike, final_dir: PathLike) -> None:
    """Put the fully written ``tmp_dir`` in place of ``final_dir``.

    A reader sees the old directory or the new one, never a mix. ``tmp_dir`` must be on the
    same filesystem (see :func:`sibling_temp_dir`). The new directory gets the permission
    bits of the old one (a ``chmod`` of ``final_dir`` holds). The old contents are deleted
    afterwards, as are leftovers of an earlier replace that was interrupted; old contents that cannot be
    deleted (a read-only ``final_dir``) are warned of, since the new ones are in place then.
    """
    tmp, final = Path(tmp_dir), Path(final_dir)
    if not tmp.is_dir():
        raise FileNotFoundError(f"no directory {tmp}")
    parent = final.parent
    for stale in parent.glob(f".{final.name}.replaced-*"):
        shutil.rmtree(stale, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):  # the new folder keeps the old one's permissions
        os.chmod(tmp, final.stat().st_mode & 0o7777)
    if not final.exists():
        os.replace(tmp, final)
    elif _exchange(tmp, final):
        _discard(tmp, final)  # now holds the old contents
    else:
        # Fallback: two renames; for a moment final_dir is absent, never half-written.
        backup = parent / f".{final.name}.replaced-{uuid.uuid4().hex[:8]}"
        os.replace(final, backup)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(backup, final)
            raise
        _discard(backup, final)
    _fsync_dir(parent)


def _discard(old: Path, final: Path) -> None:
    """Delete ``old``, the contents swapped out of ``final``: the new contents are in place,
    so what cannot be deleted is a warning naming it, not a failure. Its folders are made
    writable to their owner first: a read-only ``final`` (whose mode the new contents keep)
    would otherwise leave a whole copy of itself behind at every replace."""
    _owner_may_delete(old)
    delete_tree(old, f"{final} was replaced, but its old contents in {old}")


def _owner_may_delete(top: Path) -> None:
    """Give the owner read, write and search on ``top`` and every folder in it (links are not
    followed), where this process may; what it may not is left as it is."""
    with contextlib.suppress(OSError):
        os.chmod(top, os.lstat(top).st_mode & 0o7777 | S_IRWXU)
    for root, dirs, _ in os.walk(top):
        for d in dirs:
            path = os.path.join(root, d)
            with contextlib.suppress(OSError):
                mode = os.lstat(path).st_mode
                if not S_ISLNK(mode):
                    os.chmod(path, mode & 0o7777 | S_IRWXU)


def delete_tree(path: PathLike, what: str) -> None:
    """Delete the folder ``path``, which nothing needs any more: what cannot be deleted (a
    read-only folder in it) is a warning, ``what`` naming it, not a failure."""
    try:
        if Path(path).is_symlink():  # a link put where a folder was (eval/ -> elsewhere): the link alone
            Path(path).unlink()
        else:
            shutil.rmtree(path)
    except OSError as exc:
        log.warning("%s could not be deleted (%s): delete it by hand", what, _reason(exc))


def swap_symlink(link: PathLike, target: str) -> None:
    """Make ``link`` a symbolic link to ``target`` in one rename.

    The new link is made under a temp name beside ``link`` and renamed over it: a reader that
    opens ``link`` follows the old target or the new one, never a missing or half-made link.
    ``link`` must not be a real directory (rename cannot replace one). A temp link left by a
    process killed before its rename is named like :func:`atomic_writer`'s temp files.
    """
    link = Path(link)
    tmp = link.parent / f".{link.name}.{uuid.uuid4().hex[:8]}.tmp"
    os.symlink(target, tmp, target_is_directory=True)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(link.parent)


def follow_link(path: PathLike) -> Path:
    """``path`` with its symbolic links resolved once, when it is one; else ``path`` unchanged.

    A reader that opens several files of a directory through a link that may be switched
    meanwhile must resolve it once and read everything through the result.
    """
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def links_in(folder: PathLike) -> dict[Path, Path]:
    """The symbolic links directly in ``folder``, each with the path it resolves to; none when
    the folder is missing or cannot be read."""
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return {}
    return {p: Path(os.path.realpath(p)) for p in entries if p.is_symlink()}


def _holder_file(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".holder")


def _holder(lock_path: Path) -> tuple[int, str, str, str, str | None] | None:
    """The holder recorded beside ``lock_path``: its pid, host, description, the UTC time it
    took the lock and what it holds it for (None when it did not say: every record before the
    field was added); None when no readable record is there."""
    try:
        info = json.loads(read_own_file(_holder_file(lock_path)))
        pid, host, started = int(info["pid"]), info["host"], str(info["started"])
        if not 0 < pid < 2**31:  # no process's (pid_t): os.kill takes 0 and -1 for groups of them
            return None
        purpose = info.get("purpose")
        return (
            pid,
            host,
            f"pid {pid} on {host}, started {started}: {info['command']}",
            started,
            purpose if isinstance(purpose, str) else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, OverflowError):
        return None


def _started_after(pid: int, when: str) -> bool:
    """Whether process ``pid`` started after the UTC time ``when`` (as a holder records it): then
    it is another process that was given the pid of a holder killed since (after a reboot, say).
    False where that cannot be told (no /proc)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines() if ln.startswith("btime"))
        began = boot + ticks / os.sysconf("SC_CLK_TCK")
        return began > datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp() + 2
    except (OSError, ValueError, IndexError, StopIteration, AttributeError):
        return False


def _describe_holder(lock_path: Path) -> str:
    holder = _holder(lock_path)
    return holder[2] if holder else "holder unknown"


def lock_holder(path: PathLike) -> str | None:
    """Who holds the lock ``path`` (as a LockBusy message says it), when a live process on this
    machine does; None otherwise. Only read, never taken: a reader that merely looks must not
    make a writer starting at that moment find the lock busy."""
    held = lock_holding(path)
    return held[0] if held else None


def lock_holding(path: PathLike) -> tuple[str, str | None] | None:
    """Who holds the lock ``path`` (as :func:`lock_holder` says it) and the ``purpose`` it gave
    :func:`file_lock` (None when it gave none), when a live process on this machine holds it;
    None otherwise. Read from one record, so the two always belong to the same holder."""
    holder = _holder(Path(path))
    if holder is None or holder[1] != socket.gethostname():
        return None
    try:
        os.kill(holder[0], 0)
    except ProcessLookupError:
        return None  # a holder killed before it could clean up
    except PermissionError:
        pass  # alive, another user's
    if _started_after(holder[0], holder[3]):
        return None  # its pid given to a process started since
    return holder[2], holder[4]


def _command_line() -> str:
    args = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    text = shlex.join(args)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 200 else text[:197] + "..."


class LockUnavailable(ForecasterError):
    """A lock file that cannot be created at all (a read-only or missing folder, a file in the
    way): nothing can be written beside it."""


@contextlib.contextmanager
def file_lock(path: PathLike, timeout: float = 0, *, purpose: str | None = None) -> Iterator[None]:
    """Hold an OS-level lock on ``path`` for the block; raise LockBusy if another process has it.

    ``timeout`` is how long to wait in seconds (0: one try; negative: wait forever). The lock
    dies with its process, so one left by a killed run never blocks. The holder (pid, host,
    command line, start time, and ``purpose`` when given: what the lock is held for, where one
    file is locked for more than one thing) is recorded in ``<path>.holder`` for the LockBusy
    message and :func:`lock_holding`.
    A lock that cannot be created at all (read-only or missing folder) is a LockUnavailable.
    """
    lock_path = Path(path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        # a lock file that cannot be made: filelock would try again until its timeout, then say "held"
        if not lock_path.exists() and (reason := _cannot_create(lock_path)):
            raise LockUnavailable(f"cannot create the lock file {lock_path}: {reason}")
        lock = FileLock(lock_path, timeout=timeout, thread_local=False)
        lock.acquire()
    except Timeout:  # a TimeoutError, so an OSError: caught first
        raise LockBusy(
            f"another forecaster run holds {lock_path} ({_describe_holder(lock_path)}); "
            "retry later or pass --lock-timeout"
        ) from None
    except OSError as exc:
        if blocker := file_in_the_way(lock_path.parent):
            raise LockUnavailable(f"cannot create the lock file {lock_path}: {not_a_folder(blocker)}") from None
        raise LockUnavailable(f"cannot create the lock file {lock_path}: {_reason(exc)}") from None
    holder = _holder_file(lock_path)
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command_line(),
            "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if purpose is not None:
            info["purpose"] = purpose
        try:
            atomic_write_text(holder, json.dumps(info) + "\n")
        except OSError:
            pass  # only a courtesy for the LockBusy message; the lock itself is held
        yield
    finally:
        with contextlib.suppress(OSError):
            holder.unlink(missing_ok=True)
        lock.release()


def _cannot_create(path: Path) -> str | None:
    """Why the lock file ``path``, not there yet, cannot be created; None when it can."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:
        return _reason(exc)
    return None


class NotARegularFile(ValueError):
    """A file this program writes (run.json, history.csv, a lock's record) found to be something
    else: a link to a device such as /dev/zero (endless) or a pipe (never ending)."""


def read_own_file(path: PathLike) -> str:
    """The UTF-8 text of ``path``, a file this program writes, checked to be a regular file
    before anything is read from it (:class:`NotARegularFile`, a ValueError, otherwise: a run
    folder from elsewhere can hold a link to /dev/zero). A pipe is opened without waiting for
    a writer. FileNotFoundError and the other OSErrors as ``open`` gives them."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if S_ISDIR(mode):  # said here, with the file's name: fdopen's error names the descriptor ("3")
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not S_ISREG(mode):
            raise NotARegularFile("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read().decode("utf-8")
    finally:
        os.close(fd)


def ends_mid_line(path: PathLike) -> bool:
    """True when the file does not end with a line break (a forecast file ends every row with
    one): a copy or a write stopped inside its last row, whose last field may be a prefix of
    what was being written. False for an empty file or one that cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) not in (b"\n", b"\r")
    except OSError:
        return False


def file_in_the_way(folder: PathLike) -> Path | None:
    """The first of ``folder`` and the folders above it that exists but is not a folder (a
    file where a folder has to be), or None when there is none. What cannot be looked at (below
    a folder that cannot be entered) counts as not there: making it names the error."""
    path = Path(folder)
    for part in [*reversed(path.parents), path]:
        if os.path.exists(part) and not os.path.isdir(part):
            return part
    return None


def cannot_make(folder: PathLike) -> OSError | None:
    """The error that making ``folder`` (with the folders above it that do not exist yet)
    would meet, told without making anything: the nearest folder above it that exists cannot
    be written to or entered (``Permission denied``), or is on a read-only file system. None
    when ``folder`` exists, when what is nearest is not a folder (:func:`file_in_the_way`
    names it), or when making it would go through as far as permissions tell (root writes
    anywhere unless its file-mode override was taken away; a full disk is only found by
    writing)."""
    path = Path(folder)
    nearest = next((p for p in [path, *path.parents] if os.path.lexists(p)), None)
    if nearest is None or nearest == path or not os.path.isdir(nearest):
        return None
    return _unwritable(nearest)


def cannot_write_into(folder: PathLike) -> OSError | None:
    """The error that writing a file into ``folder`` would meet, told without writing: for a
    folder that exists, that it cannot be written to or entered, or is on a read-only file
    system; for one that does not, :func:`cannot_make`'s."""
    path = Path(folder)
    if not os.path.isdir(path):
        return cannot_make(path)
    return _unwritable(path)


def _unwritable(folder: Path) -> OSError | None:
    """``Permission denied`` or ``Read-only file system`` for a folder that a file cannot be
    made in, as far as permissions tell; None when one can."""
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    return write_denied(folder)


def write_denied(path: PathLike) -> OSError:
    """Why ``path``, which its permissions do not let this process write, cannot be written:
    ``Read-only file system`` where its file system is, else ``Permission denied``."""
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): the permission is what it says
        read_only = False
    code = errno.EROFS if read_only else errno.EACCES
    return OSError(code, os.strerror(code), str(path))


def not_a_folder(path: PathLike) -> str:
    """What to say of ``path``, a file where a folder is needed."""
    return f"{path} is a file, not a folder"


def _reason(exc: OSError) -> str:
    """``Permission denied`` rather than ``[Errno 13] Permission denied: '/the/path'``."""
    return exc.strerror or type(exc).__name__


def is_temp_name(name: str) -> bool:
    """True for the names :func:`atomic_writer` gives its temp files (``.<name>.<random>.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3


def remove_stale_temps(directory: PathLike, min_age: float = 3600.0) -> int:
    """Delete temp files of :func:`atomic_writer` older than ``min_age`` seconds in ``directory``.

    A writer killed between creating its temp file and the rename leaves one behind; call
    this while holding the directory's lock. Returns how many were removed; never raises.
    """
    removed = 0
    now = datetime.now(UTC).timestamp()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if not is_temp_name(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime >= min_age:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def refuse_empty_folders(*, required: tuple[str, ...] = (), **folders: object) -> None:
    """A ConfigError for the first of ``folders`` (keyword name: value) given as an empty string,
    which a path would take for the current folder, and a default would quietly replace: the
    library refuses what the command line refuses (``--out ""``). A TypeError, naming the
    argument, for a value that is no folder name at all (not a str or a path; None only where
    the argument is not ``required``), rather than an error from deep inside."""
    for name, value in folders.items():
        if value is None and name not in required:
            continue
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name} must be a folder name (a str or a path), not {type(value).__name__}")
        if isinstance(value, str) and not value.strip():
            default = "" if name in required else ", or None for its default"
            raise ConfigError(f'{name}="" names no folder: give a folder name{default}')
