"""The processes a command shares its tickers among."""

import os

import pytest
from support import run_script

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
