"""Processes sharing a command's tickers (``evaluate --jobs``, ``predict --jobs``, the garch
fits at the end of ``train``).

Each ticker is worked on alone, so a command gives the same result on any number of processes;
the tickers go out in blocks, in order, and the results come back in that order.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from typing import TypeVar

from .errors import ConfigError
from .threads import usable_cores

T = TypeVar("T")
R = TypeVar("R")

BLOCK_SHARE = 2
"""Each block of tickers handed to a process is 1 / (this x processes) of the tickers not yet
handed out: large blocks first, then smaller and smaller ones, so that no process is left
idle long at the end waiting for another's last block..."""
MIN_TICKERS_PER_BLOCK = 8
"""...down to blocks of this many tickers (each block costs a few milliseconds to send)."""


def processes_for(jobs: int, n_tickers: int, min_per_job: int) -> int:
    """Processes for ``n_tickers``: ``jobs`` (0: one per usable core), fewer when some would
    get less than ``min_per_job`` tickers."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ConfigError(f"jobs must be a whole number, 0 or more (0: one per core), not {jobs!r}")
    return max(1, min(jobs or usable_cores(), n_tickers // min_per_job))


def blocks(names: list[str], processes: int) -> list[list[str]]:
    """``names`` cut into blocks for ``processes`` processes, in order, each
    :data:`BLOCK_SHARE` times smaller than the tickers left and the smallest of
    :data:`MIN_TICKERS_PER_BLOCK` tickers and an even share."""
    smallest = min(MIN_TICKERS_PER_BLOCK, -(-len(names) // processes))
    out, start = [], 0
    while start < len(names):
        left = len(names) - start
        size = max(smallest, -(-left // (BLOCK_SHARE * processes)))
        if left - size < smallest:  # no block smaller than that at the end
            size = left
        out.append(names[start : start + size])
        start += size
    return out


@dataclass(frozen=True)
class Workers:
    """The processes a command shares its tickers among."""

    executor: ProcessPoolExecutor
    processes: int

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``fn`` of each item, in the processes, the results in the items' order. Unlike
        ``executor.map``, a stop while they run cancels nothing from here: the blocks not started
        are dropped by the pool itself as it is ended (:func:`_stop_now`). Cancelled from here,
        as the pool found its processes ended, it failed on them (InvalidStateError, on
        Python 3.11 to 3.13) and left its dead processes and a thread behind."""
        futures = [self.executor.submit(fn, item) for item in items]
        return [future.result() for future in futures]


@contextmanager
def workers(processes: int, *, fresh: bool = False) -> Iterator[Workers | None]:
    """``processes`` processes (None for one: the work is done here); ``fresh``: each started
    as a new interpreter, never a copy of this process (one that has run threads: training's)."""
    if processes <= 1:
        yield None
        return
    # fork where there is one: a worker starts in milliseconds, with numpy and pandas loaded
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() and not fresh else "spawn"
    context = multiprocessing.get_context(method)
    with (
        _main_left_out() if method == "spawn" else nullcontext(),
        ProcessPoolExecutor(
            processes, mp_context=context, initializer=_worker_signals, initargs=(os.getpid(),)
        ) as pool,
    ):
        try:
            # every process is started now, with the stop signals held: one that arrives while a
            # process is still starting (as the first block of another stops the command) waits
            # for that process to take its own handlers, instead of the command's
            with _stop_signals_held():
                pool.submit(_started)
            yield Workers(pool, processes)
        except BaseException:
            _stop_now(pool)
            raise


@contextmanager
def _main_left_out() -> Iterator[None]:
    """The program's main module out of sight while processes are started anew: a new process
    would run the script that called the library again, top to bottom (its training, say), unless
    every line of it were under ``if __name__ == "__main__":``. The workers need only this
    package's functions, which they import."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")  # no file, no spec: as under ``python -c``
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


STOP_WAIT_S = 5.0
"""Seconds a stop waits for each process it ended to be gone (they die at once on SIGTERM)."""


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """A failure or a stop (Ctrl-C, SIGTERM): the blocks not started are dropped and the running
    ones ended, not waited for. A process only returns its block's result, it writes nothing, so
    nothing is lost; waiting would keep a Ctrl-C waiting seconds (a block of garch fits, say).
    Each process ended is then waited for as it dies, so that a program that goes on (a
    notebook, a scheduler) is not left with dead processes never waited for."""
    running = list((getattr(pool, "_processes", None) or {}).values())  # gone after shutdown
    if hasattr(pool, "terminate_workers"):  # Python 3.14 and later
        pool.terminate_workers()
    else:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in running:
            with suppress(ProcessLookupError, ValueError):  # it ended meanwhile, or was closed
                process.terminate()
    for process in running:
        with suppress(ValueError, AssertionError):  # closed meanwhile
            process.join(STOP_WAIT_S)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when ``parent`` dies (Linux), and end it now if that
    happened already; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl to call: as before
        return
    if os.getppid() != parent:  # the command died before the request was made
        os._exit(1)


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back in this thread (and in the processes it starts) until the
    block ends; one that comes meanwhile is delivered then."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _started() -> None:
    """The first task, which makes the pool start its processes."""


def _worker_signals(parent: int) -> None:
    """A worker leaves Ctrl-C to the command, which stops handing out blocks and ends the
    processes (:func:`_stop_now`), and dies quietly on SIGTERM (`systemctl stop` signals every
    process of the command) rather than taking it for a Ctrl-C of its own: a traceback, or a
    pool that hangs.
    It starts with both signals held (:func:`workers`), so that neither reaches the command's
    own handlers, which it inherits; one that came before is delivered here, to these.
    On Linux it also dies with the command (``parent``): one killed outright (SIGKILL: the OOM
    killer, ``timeout -s KILL``) left its workers waiting on their pipes for ever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with(parent)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
