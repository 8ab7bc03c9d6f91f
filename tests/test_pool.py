"""The processes a command shares its tickers among."""

import os

import pytest
from support import run_script


def test_processes_are_the_jobs_asked_for_or_the_cores_but_never_too_few_tickers_each(monkeypatch):
    """``--jobs 0`` is a process per usable core; no process is started for fewer than
    ``min_per_job`` tickers, and one always does the work, however few the tickers."""
    from forecaster import pool

    monkeypatch.setattr(pool, "usable_cores", lambda: 6)
    assert pool.processes_for(0, 1000, 8) == 6
    assert pool.processes_for(4, 1000, 8) == 4
    assert pool.processes_for(4, 24, 8) == 3  # 24 tickers: three processes of 8, not four of 6
    assert pool.processes_for(0, 23, 8) == 2
    assert pool.processes_for(4, 7, 8) == 1  # too few for two processes: the work is done here
    assert pool.processes_for(0, 0, 8) == 1


@pytest.mark.parametrize("jobs", [-1, True, 2.0, "2", None])
def test_processes_for_refuses_jobs_that_are_no_count(jobs):
    from forecaster.errors import ConfigError
    from forecaster.pool import processes_for

    with pytest.raises(ConfigError, match="jobs must be a whole number, 0 or more"):
        processes_for(jobs, 100, 8)


def test_blocks_start_at_a_share_of_the_tickers_and_shrink_to_the_floor():
    """Two processes, 100 tickers: a quarter first (1 / (BLOCK_SHARE x processes)), then a
    quarter of what is left, down to blocks of 8; the 7 left over join the last block."""
    from forecaster.pool import blocks

    names = [f"T{i}" for i in range(100)]
    assert [len(b) for b in blocks(names, 2)] == [25, 19, 14, 11, 8, 8, 15]
    assert [len(b) for b in blocks(names[:12], 4)] == [3, 3, 3, 3]  # few tickers: an even share each


# a stop signal that comes while a worker process starts, before it has taken its own handlers:
# here each worker sends itself a Ctrl-C first thing, which the command's handler (inherited)
# would take for its own
_SIGNALLED_WHILE_WORKERS_START = """
import os, signal
from forecaster import pool

signal.signal(signal.SIGINT, signal.default_int_handler)
real = pool._worker_signals

def signalled_first(parent):
    os.kill(os.getpid(), signal.SIGINT)
    real(parent)

pool._worker_signals = signalled_first
with pool.workers(2) as shared:
    print(len(shared.executor._processes), sum(shared.executor.map(abs, [-1, -2, -3])), flush=True)
"""


def test_a_ctrl_c_that_comes_while_the_workers_start_waits_for_their_own_handlers():
    """Every worker is started as the pool is opened, with the stop signals held until it has
    taken its own handlers (it ignores a Ctrl-C, which is the command's to handle): one that
    came sooner went to the command's handler, copied into the worker, which broke the pool."""
    res = run_script(_SIGNALLED_WHILE_WORKERS_START)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["2 6"]
    assert res.stderr == ""


_STOPPED_WHILE_BLOCKS_RUN = """
import os, signal, sys, time
from pathlib import Path
from forecaster.pool import workers

marks = Path(sys.argv[1])
# Ctrl-C raises KeyboardInterrupt here as in the command line, which listens to it (entry.main)
# even where it starts ignored: under `make test &`, say, a background job ignores SIGINT
signal.signal(signal.SIGINT, signal.default_int_handler)

def block(k):
    (marks / f"started-{os.getpid()}").touch()
    time.sleep(30)  # waited for, the blocks would finish and leave their marks
    (marks / f"finished-{k}").touch()
    return k

try:
    with workers(2) as pool:
        results = pool.executor.map(block, [0, 1])
        while len(list(marks.glob("started-*"))) < 2:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the workers ignore it, the command stops
        list(results)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_stop_ends_the_running_blocks_rather_than_waiting_for_them(tmp_path):
    """Ctrl-C while every process is inside a long block: the command gets its interrupt back at
    once, and the processes are ended (a block's result is only ever returned, so nothing is
    lost), not left to finish their blocks."""
    res = run_script(_STOPPED_WHILE_BLOCKS_RUN, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["interrupted"], res.stderr
    pids = [int(p.name.removeprefix("started-")) for p in tmp_path.glob("started-*")]
    assert len(pids) == 2
    assert not [pid for pid in pids if _alive(pid)]
    assert not list(tmp_path.glob("finished-*"))


_STOPPED_AND_GOING_ON = """
import os, signal, threading, time
from forecaster.pool import workers

signal.signal(signal.SIGINT, signal.default_int_handler)

def block(k):
    time.sleep(0.02)  # short blocks: the pool is handing out the next ones as the stop comes
    return k

for _ in range(3):  # a program that goes on: a notebook, a scheduler
    try:
        with workers(2) as pool:
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C
            pool.map(block, range(2000))
    except KeyboardInterrupt:
        pass
    time.sleep(0.3)  # what the pool's own threads would do meanwhile
    try:
        dead = os.waitpid(-1, os.WNOHANG)[0]  # a child ended and not waited for
    except ChildProcessError:  # no child at all
        dead = 0
    print(dead, sorted(t.name for t in threading.enumerate()), flush=True)
"""


def test_a_stop_leaves_a_program_that_goes_on_no_dead_process_thread_or_traceback():
    """A program that goes on after a stop (a notebook, a scheduler calling evaluate or predict
    with jobs), with blocks still waiting for a process: a Ctrl-C left it, more often than not,
    two dead processes not waited for, a thread of the pool's, and the pool's own traceback
    (InvalidStateError: CANCELLED) on its stderr."""
    res = run_script(_STOPPED_AND_GOING_ON)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["0 ['MainThread']"] * 3
    assert res.stderr == ""


_KILLED_WHILE_BLOCKS_RUN = """
import os, signal, sys, time
from pathlib import Path
from forecaster.pool import workers

marks = Path(sys.argv[1])
with workers(2, fresh=sys.argv[2] == "spawn") as pool:
    results = pool.executor.map(time.sleep, [60, 60])
    time.sleep(1)  # both blocks under way
    for pid in pool.executor._processes:
        (marks / f"started-{pid}").touch()
    os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer, `timeout -s KILL`: no handler runs
"""


def test_a_stop_in_the_middle_of_the_blocks_cancels_none_of_them_from_the_caller():
    """The blocks not started are dropped by the pool as it is ended, never cancelled from the
    thread the stop reaches: ``executor.map`` cancelled them there, and the pool, finding its
    processes ended, then failed on the cancelled blocks and left dead processes behind."""
    from concurrent.futures import Executor, Future

    from forecaster.pool import Workers

    class Blocks(Executor):  # the first block stopped, the others not started yet
        def __init__(self):
            self.futures = []

        def submit(self, fn, *args, **kwargs):
            future = Future()
            if not self.futures:
                future.set_exception(KeyboardInterrupt())
            self.futures.append(future)
            return future

    blocks = Blocks()
    with pytest.raises(KeyboardInterrupt):
        Workers(blocks, 2).map(len, ["a", "bb", "ccc"])
    assert len(blocks.futures) == 3 and not any(f.cancelled() for f in blocks.futures[1:])


def test_a_stop_waits_for_each_process_it_ends():
    """A process ended and never waited for stays a dead (zombie) process of a program that goes
    on, one more at each stop."""
    from forecaster import pool

    class Process:
        def __init__(self):
            self.calls = []

        def terminate(self):
            self.calls.append("terminate")

        def join(self, timeout=None):
            self.calls.append(("join", timeout))

    class Pool:
        def __init__(self, processes):
            self._processes = dict(enumerate(processes))

        def shutdown(self, wait=True, cancel_futures=False):
            assert (wait, cancel_futures) == (False, True)

        def terminate_workers(self):  # Python 3.14: ends its processes itself
            for process in self._processes.values():
                process.terminate()

    processes = [Process(), Process()]
    pool._stop_now(Pool(processes))
    assert [p.calls for p in processes] == [["terminate", ("join", pool.STOP_WAIT_S)]] * 2


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_the_workers_die_with_a_command_killed_outright(tmp_path, start):
    """SIGKILL leaves the command no moment to end its workers: they stayed, their parent gone,
    waiting on their pipes for ever (evaluate --jobs, predict --jobs, train's garch fits)."""
    import time

    res = run_script(_KILLED_WHILE_BLOCKS_RUN, tmp_path, start)
    assert res.returncode == -9, res.stderr
    pids = [int(p.name.removeprefix("started-")) for p in tmp_path.glob("started-*")]
    assert len(pids) == 2
    give_up = time.monotonic() + 10
    while [pid for pid in pids if _alive(pid)] and time.monotonic() < give_up:
        time.sleep(0.05)
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:  # not left behind by this test either
        os.kill(pid, 9)
    assert not left
