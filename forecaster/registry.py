"""Promoted names: ``runs/NAME`` points at the run directory that serves under that name.

The pointer is a symbolic link with a relative target (``runs/prod -> prod-20260105-190000``),
switched by renaming a freshly made link over it. A symlink rather than a pointer file because
every reader already follows it with no code of its own (``cat runs/prod/run.json``, a backup,
``predict --run runs/prod``), the rename makes the switch atomic, and the kernel resolves it; a
reader that opens several files resolves it once first (:func:`forecaster.fsio.follow_link`,
which ``checkpoint.load_run`` does), so it sees one run whole. The relative target keeps the
``runs/`` folder movable.

The run directories that ``retrain`` writes for a name are its siblings ``NAME-YYYYmmdd-HHMMSS``
(a ``-N`` suffix when two fall in one second); :func:`prune` keeps the newest of them (an
unfinished one, left by an interrupted retrain, is the first to go) and never one that a
promoted name points at. Every change to a name happens under the lock
``runs/.NAME.lock``, which ``retrain`` holds from training to promotion.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .checkpoint import NAME_LOCK, Manifest, load_run, resume_command, run_directory, run_lock_path
from .errors import ConfigError, ForecasterError, LockBusy
from .fsio import (
    LockUnavailable,
    PathLike,
    cannot_make,
    delete_tree,
    file_lock,
    follow_link,
    is_temp_name,
    links_in,
    lock_holder,
    lock_holding,
    read_own_file,
    refuse_empty_folders,
    remove_stale_temps,
    swap_symlink,
)

log = logging.getLogger("forecaster")

DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_KEEP = 5
"""Run directories of a name kept by ``retrain``: a few weeks of weekly challengers to look back on."""
STAMP = "%Y%m%d-%H%M%S"
"""The time stamp in the names of the run directories ``retrain`` writes (UTC)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TRASH = ".deleting"


@dataclass
class PromoteResult:
    name: str
    pointer: Path
    target: Path  # the run directory the pointer names now
    previous: Path | None  # the one it named before, if any


@dataclass
class Pruned:
    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def check_name(name: str) -> str:
    """A promoted name: one plain folder name of letters, digits, ``_``, ``.`` and ``-``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"unusable name {ascii(str(name)[:40])}: use letters, digits, '_', '.' and '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return name


def runs_dir_option(runs_dir: Path) -> str:
    """`` --runs-dir DIR`` for a command that a message asks for, empty for the default folder:
    run as written, the command acts on the folder the one that said it used."""
    runs_dir = Path(runs_dir)
    return "" if runs_dir == DEFAULT_RUNS_DIR else f" --runs-dir {shlex.quote(str(runs_dir))}"


def pointer_path(name: str, runs_dir: PathLike = DEFAULT_RUNS_DIR) -> Path:
    return Path(runs_dir) / check_name(name)


def lock_path(name: str, runs_dir: PathLike = DEFAULT_RUNS_DIR) -> Path:
    return Path(runs_dir) / f".{check_name(name)}.lock"


def _training(lock: Path) -> str | None:
    """Who trains the run whose lock is ``lock`` (as :func:`~forecaster.fsio.lock_holder` says
    it): its live holder, unless that holds it as a promoted name's lock; None otherwise."""
    held = lock_holding(lock)
    return held[0] if held and held[1] != NAME_LOCK else None


def pointer_target(path: Path) -> Path | None:
    """The run directory a promoted name points at, None when ``path`` is not a pointer."""
    path = Path(path)
    return follow_link(path) if path.is_symlink() else None


def _what(path: Path) -> str:
    """What stands at ``path`` where a promoted name's link should be."""
    if not path.is_dir():
        return "a file"
    return "a run directory" if (path / "run.json").is_file() else "a folder"


def champion(name: str, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """The run directory ``runs/NAME`` points at; an error when there is no such pointer."""
    pointer = pointer_path(name, runs_dir)
    if not pointer.is_symlink():
        if pointer.exists():
            what = _what(pointer)
            run, it = (shlex.quote(str(pointer)), "it") if what == "a run directory" else ("RUN", "a run")
            raise ConfigError(
                f"{pointer} is {what}, not a promoted name (a link made by promote): promote {it} under another "
                f"name (`forecaster promote {run} --name NAME{runs_dir_option(runs_dir)}`), then retrain NAME"
            )
        raise ConfigError(
            f"no promoted name {pointer}: promote a run first "
            f"(`forecaster promote RUN --name {name}{runs_dir_option(runs_dir)}`)"
        )
    return run_directory(pointer)


def check_writable(doing: str, name: str, runs_dir: PathLike) -> None:
    """Refuse, before the name's lock file (or anything else) is made there, a runs folder that
    cannot be written (read-only, or on a read-only mount): one line that says ``doing`` failed
    and that nothing was changed."""
    runs_dir = Path(runs_dir)
    denied = cannot_make(runs_dir / f".{check_name(name)}.check")  # the folder's permission: nothing made
    if denied is not None:
        target = pointer_target(pointer_path(name, runs_dir))
        where = f"{pointer_path(name, runs_dir)} points at {target.name}" if target else "no link was made"
        raise ForecasterError(
            f"cannot {doing}: the runs folder {runs_dir} cannot be written ({denied.strerror}); "
            f"nothing was changed, {where}"
        )


def promote(
    run_dir: PathLike, name: str, *, runs_dir: PathLike = DEFAULT_RUNS_DIR, lock_timeout: float = 0.0
) -> PromoteResult:
    """Point ``runs_dir/NAME`` at ``run_dir`` (a complete, loadable run) in one rename.

    Raises LockBusy (exit 75) when another promote or retrain of the name holds its lock
    longer than ``lock_timeout`` seconds, a ForecasterError (exit 1) when the run cannot be
    loaded or ``runs_dir/NAME`` is a real directory.
    """
    refuse_empty_folders(run_dir=run_dir, runs_dir=runs_dir, required=("run_dir", "runs_dir"))
    pointer = pointer_path(name, runs_dir)
    # refused before the name's lock file (or a mistyped --runs-dir) is made; checked again under the lock
    load_run(run_directory(run_dir))
    _check_pointer(pointer)
    check_writable(f"promote {run_dir} as {name}", name, runs_dir)
    with file_lock(lock_path(name, runs_dir), lock_timeout, purpose=NAME_LOCK):  # no training, for info
        return switch(pointer, run_dir, lock_timeout)


def _check_pointer(pointer: Path) -> None:
    """ConfigError when ``pointer`` is a real file or folder, not a promoted name's link."""
    if pointer.exists() and not pointer.is_symlink():
        raise ConfigError(
            f"{pointer} is {_what(pointer)}, not a promoted name: move it away or promote under another name"
        )


def switch(pointer: Path, run_dir: PathLike, lock_timeout: float = 0.0) -> PromoteResult:
    """:func:`promote`'s work, for a caller that already holds the name's lock. The run's own
    lock is held too, so the run is neither being trained into nor being deleted by another
    name's :func:`prune` while the link to it is made."""
    target = run_directory(run_dir).resolve()  # a promoted name is promoted as the run it names now
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(run_lock_path(target), lock_timeout))
        except LockUnavailable:
            pass  # a run in a folder that cannot be written: nothing can train into it or delete it
        return _switch(pointer, target)


def _switch(pointer: Path, target: Path) -> PromoteResult:
    load_run(target)  # only a whole, complete run can be promoted (refused with the reason)
    _check_pointer(pointer)
    previous = pointer_target(pointer)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_links(pointer)
    remove_stale_temps(pointer.parent)  # e.g. a lock's holder file, from a process killed mid-write
    try:
        link = os.path.relpath(target, pointer.parent.resolve())
    except ValueError:  # another drive on Windows: no relative path exists
        link = str(target)
    try:
        swap_symlink(pointer, link)
    except OSError as exc:  # the new link replaces the old in one rename, or not at all
        where = f"{pointer} still points at {previous.name}" if previous else "no link was made"
        raise ForecasterError(f"cannot point {pointer} at {target}: {exc.strerror or exc}; {where}") from None
    return PromoteResult(name=pointer.name, pointer=pointer, target=follow_link(pointer), previous=previous)


def _remove_stale_links(pointer: Path) -> None:
    """Temp links of a promote killed before its rename (only made under the name's lock)."""
    for entry in pointer.parent.glob(f".{pointer.name}.*.tmp"):
        if entry.is_symlink() and is_temp_name(entry.name):
            entry.unlink(missing_ok=True)


def _named_runs(runs_dir: Path) -> set[Path]:
    """The run directories that the links in ``runs_dir`` point at, resolved."""
    return set(links_in(runs_dir).values())


def new_run_dir(name: str, runs_dir: Path = DEFAULT_RUNS_DIR, now: datetime | None = None) -> Path:
    """A fresh ``runs_dir/NAME-YYYYmmdd-HHMMSS`` (with ``-2``, ``-3`` ... when taken)."""
    stamp = (now or datetime.now(UTC)).strftime(STAMP)
    base = Path(runs_dir) / f"{check_name(name)}-{stamp}"
    candidate, n = base, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _named(run_dir: Path) -> Path:
    """``run_dir`` as a path whose last part is the run's folder name (``.`` resolved)."""
    run_dir = Path(run_dir)
    return run_dir.resolve() if run_dir.name in ("", ".", "..") else run_dir


def challenger_of(run_dir: Path) -> str | None:
    """The promoted name whose challenger ``run_dir`` is (a run directory named as retrain names
    them, ``NAME-YYYYmmdd-HHMMSS``, beside the link ``NAME``), None for any other run."""
    run_dir = _named(run_dir)
    m = re.fullmatch(r"(.+)-\d{8}-\d{6}(?:-\d+)?", run_dir.name)
    if not m or not _NAME.fullmatch(m.group(1)):
        return None
    return m.group(1) if (run_dir.parent / m.group(1)).is_symlink() else None


def unfinished_advice(run_dir: Path) -> str:
    """What to do with the interrupted run in ``run_dir``: for the challenger of an interrupted
    retrain, retrain again (``train --resume`` would finish it but never compare it with the
    champion nor promote it); for any other run, resume it. A run whose training is still going
    (its lock held by a live process: what it holds is a checkpoint) is waited for."""
    if holder := lock_holder(run_lock_path(run_dir)):
        return f"a training is writing it now ({holder}): wait for it to end"
    name = challenger_of(run_dir)
    if name is None:
        return f"resume with {resume_command(run_dir)}"
    runs_dir = _named(run_dir).parent
    return (
        f"the unfinished challenger of {name}: run `forecaster retrain {name}{runs_dir_option(runs_dir)}` again "
        f"to train and compare a new challenger (`train --resume` would finish it without comparing it)"
    )


def _runs_pattern(name: str) -> str:
    return re.escape(check_name(name)) + r"-(\d{8}-\d{6})(?:-(\d+))?"


def runs_of(name: str, runs_dir: Path = DEFAULT_RUNS_DIR) -> list[Path]:
    """The run directories ``retrain`` wrote for ``name``, oldest first."""
    pattern = re.compile(_runs_pattern(name))
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = []
    for p in runs_dir.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_dir() and not p.is_symlink():
            found.append(((m.group(1), int(m.group(2) or 1)), p))
    return [p for _, p in sorted(found)]


def _finished(run: Path) -> bool:
    """Whether ``run`` holds a finished run: not one whose training was interrupted (an
    interrupted retrain's challenger), nor a folder without a readable run.json."""
    try:
        meta = json.loads(read_own_file(run / "run.json"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(meta, dict) and meta.get("status", "complete") == "complete"


def _drop_orphan_lock(run: Path) -> None:
    """Delete the lock files of ``run``, a run folder that is not there, unless a training holds
    the lock now (about to write it)."""
    lock = run_lock_path(run)
    try:
        with file_lock(lock):
            if not run.exists():  # deleted while held: no training can be holding it meanwhile
                for path in (lock, lock.with_name(lock.name + ".holder")):
                    path.unlink(missing_ok=True)
    except LockBusy:
        return


def prune(name: str, keep: int, runs_dir: Path = DEFAULT_RUNS_DIR) -> Pruned:
    """Delete all but the newest ``keep`` run directories of ``name``, unfinished ones (an
    interrupted retrain's challenger) first: one never pushes out a finished run. Never one
    that a promoted name in ``runs_dir`` points at (this name's, or another promoted from it).
    Never one being trained (its run lock held: an unfinished challenger resumed by hand).
    Call with the name's lock held. Each one is renamed out of the way first, so a deletion cut
    short never leaves a half-deleted directory that looks like a run; the leftovers of one
    cut short, and of a run whose writer was killed, go too (not the temporary folder of a run
    being written out now)."""
    if keep < 1:
        raise ConfigError(f"keep must be at least 1, not {keep}")
    runs_dir = Path(runs_dir)
    named = _named_runs(runs_dir)
    leftover = re.compile(r"\.(?P<run>" + _runs_pattern(name) + r")(?P<rest>\..+\.tmp|" + re.escape(_TRASH) + ")")
    run_lock = re.compile(r"\.(?P<run>" + _runs_pattern(name) + r")\.lock(\.holder)?")
    for entry in list(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        if (m := run_lock.fullmatch(entry.name)) and not (runs_dir / m.group("run")).exists():
            _drop_orphan_lock(runs_dir / m.group("run"))  # a retrain killed before its challenger was written
            continue
        m = leftover.fullmatch(entry.name)
        if not m or not entry.is_dir() or entry.is_symlink():
            continue
        if m.group("rest") == _TRASH:  # a deletion cut short: only ever made under the name's lock
            delete_tree(entry, str(entry))  # warned of: every prune tries it again
            continue
        run = runs_dir / m.group("run")
        try:
            with file_lock(run_lock_path(run)):  # a run being written out now: its writer holds that lock
                shutil.rmtree(entry, ignore_errors=True)
                if not run.exists():  # the lock taken for a run that is not there: deleted while held
                    for lock in (f".{run.name}.lock", f".{run.name}.lock.holder"):
                        (runs_dir / lock).unlink(missing_ok=True)
        except LockBusy:
            continue
    result = Pruned()
    runs = runs_of(name, runs_dir)
    done = {run: _finished(run) for run in runs}
    runs = [r for r in runs if not done[r]] + [r for r in runs if done[r]]  # the first to go first
    for i, run in enumerate(runs):
        if i >= len(runs) - keep or run.resolve() in named:
            result.kept.append(run)
            continue
        try:
            with file_lock(run_lock_path(run)):  # a run being trained (`train --resume` of it) stays
                if run.resolve() in _named_runs(runs_dir):  # promoted under another name since the look above
                    result.kept.append(run)
                    continue
                trash = run.with_name(f".{run.name}{_TRASH}")
                os.replace(run, trash)
                delete_tree(trash, str(trash))
        except LockBusy:
            log.info("%s kept: it is in use (its lock is held: being trained or evaluated)", run)
            result.kept.append(run)
            continue
        for lock in (f".{run.name}.lock", f".{run.name}.lock.holder"):  # train's lock on that run
            (runs_dir / lock).unlink(missing_ok=True)
        result.removed.append(run)
    return result


@dataclass
class RunEntry:
    """One row of :func:`list_runs`. ``status`` is one of ``complete``, ``interrupted``,
    ``being trained``, ``empty`` (a training stopped before its first save), ``unreadable``
    (its run.json or folder cannot be read), ``unusable`` (its run.json can, but predict or
    ``train --resume`` would refuse the run) or ``link`` (a promoted name whose run is gone or
    a loop of links); ``detail`` says why, how to resume, or who trains it. ``names`` are the
    promoted names in the folder that point at it (a run linked in from elsewhere is listed
    under its link's name)."""

    run: str
    path: Path
    status: str
    manifest: Manifest | None = None
    names: list[str] = field(default_factory=list)
    detail: str | None = None
    evaluated: bool = False


def unusable_reason(run_dir: Path, manifest: Manifest) -> str | None:
    """Why the run in ``run_dir`` cannot be used though its run.json reads: a complete run that
    predict, evaluate and promote would refuse (its weights missing, unreadable or not matching
    its config), or an interrupted one whose resume files ``train --resume`` would refuse (the
    unfinished challenger of a retrain is never resumed: it is retrained). None when usable."""
    from .checkpoint import read_resume
    from .errors import RunFormatError

    try:
        if manifest.status == "complete":
            load_run(run_dir)
        elif challenger_of(run_dir) is None:
            read_resume(run_dir)
    except RunFormatError as e:
        return str(e)
    return None


def _run_row(entry: Path, name: str) -> RunEntry | None:
    """The row of the folder ``entry`` (listed as ``name``): a run, or a folder a training made;
    None for any other folder. OSErrors (a folder that cannot be read) reach the caller."""
    from .checkpoint import META, read_manifest, why_no_manifest

    lock = run_lock_path(entry)
    meta = entry / META
    if meta.exists() or meta.is_symlink():
        try:
            m = read_manifest(entry)
        except ForecasterError as e:
            return RunEntry(name, entry, "unreadable", detail=str(e))
        except OSError as e:
            return RunEntry(name, entry, "unreadable", detail=f"cannot read {meta}: {e.strerror or e}")
        row = RunEntry(name, entry, m.status, manifest=m, evaluated=(entry / "eval" / "metrics.csv").is_file())
        if m.status != "complete" and (holder := _training(lock)):
            row.status, row.detail = "being trained", holder
        elif (why := unusable_reason(entry, m)) is not None:
            row.status, row.detail = "unusable", why
        elif m.status != "complete":
            row.detail = unfinished_advice(entry)
        return row
    if not lock.exists():
        return None
    if holder := _training(lock):  # made by a training that has written nothing yet
        return RunEntry(name, entry, "being trained", detail=holder)
    if any(entry.iterdir()):
        return RunEntry(name, entry, "unreadable", detail=why_no_manifest(entry))
    return RunEntry(name, entry, "empty", detail=why_no_manifest(entry))


def list_runs(folder: PathLike = DEFAULT_RUNS_DIR) -> list[RunEntry]:
    """The runs in ``folder`` (``runs/`` by default), by name: every directory holding a
    ``run.json`` or made by a training (its lock beside it), a training that has not made its
    folder yet, and a run elsewhere that a link in the folder points at; each with its status
    and the promoted names that point at it. A link to nothing (its run deleted) or into a loop
    is a row of its own; other folders (``tune/``), other links and hidden entries are left out.
    A run that cannot be read is a row saying why, never an error. Reads, never writes or locks;
    an entry that goes while it is read is left out."""
    import errno

    from .checkpoint import META

    refuse_empty_folders(folder=folder, required=("folder",))
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a folder of runs" if folder.exists() else f"no folder {folder}")
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise ConfigError(f"cannot read the folder {folder}: {e.strerror or e}") from None
    rows: dict[str, RunEntry] = {}  # by the real path of each run

    def add(entry: Path, name: str) -> None:
        try:
            if entry.is_dir() and (row := _run_row(entry, name)) is not None:
                rows[os.path.realpath(entry)] = row
        except FileNotFoundError:  # gone while it was read (pruned, or replaced whole)
            return
        except OSError as e:
            rows[os.path.realpath(entry)] = RunEntry(name, entry, "unreadable", detail=f"{entry}: {e.strerror or e}")

    links = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            links.append(entry)
        else:
            add(entry, entry.name)
    present = {e.name for e in entries}
    # trainings yet to make their folder: their lock is there, held; not a promote's lock on a
    # name whose link is not made yet (the name is listed once it points at its run)
    for entry in entries:
        m = re.fullmatch(r"\.([^.].*)\.lock", entry.name)
        if m and m.group(1) not in present and (holder := _training(entry)):
            run = folder / m.group(1)
            rows[os.path.realpath(run)] = RunEntry(run.name, run, "being trained", detail=f"{holder}, no folder yet")
    for link in links:
        try:
            target = os.path.realpath(link, strict=True)
            linked_in = target not in rows and Path(target, META).exists()  # a run made elsewhere
        except OSError as e:
            if e.errno == errno.ELOOP:
                rows[str(link)] = RunEntry(link.name, link, "link", None, [link.name], "leads into a loop of links")
            elif isinstance(e, FileNotFoundError):
                where = f"points at {os.path.realpath(link)}, which is not there"
                rows[str(link)] = RunEntry(link.name, link, "link", None, [link.name], where)
            continue
        if linked_in:
            add(Path(target), link.name)
        if target in rows:
            rows[target].names.append(link.name)
    return sorted(rows.values(), key=lambda r: r.run)
