"""Faults in the production loop: promote and retrain SIGKILLed at random moments, and predict
racing a promotion. (A corrupt forecast file under score: tests/test_cli_score.py.)

After every kill, ``runs/prod`` must name a whole, complete run: the old one or the new one.
The kills go to children forked by ``tests/crash_loop.py`` (see there), half of them at a
random delay and half just after the moment that matters (a temp link or a new run directory
shows up), so that some land in the middle of a switch.
"""

from __future__ import annotations

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
from run_variants import shifted_run
from support import SLOW_TEST_TIMEOUT_S

import forecaster
import forecaster.checkpoint as checkpoint
from forecaster import registry
from forecaster.checkpoint import load_run
from forecaster.prediction import predict

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TESTS = Path(__file__).resolve().parent
REPO_ROOT = Path(next(iter(forecaster.__path__))).resolve().parent
AS_OF = "2024-12-27"


@pytest.fixture
def two_runs(trained_run, tmp_path) -> Path:
    """runs/alpha and runs/beta: the same shapes, different forecasts."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shifted_run(trained_run, runs / "alpha", noise=0.0)
    shifted_run(trained_run, runs / "beta", noise=0.5)
    return runs


class Helper:
    """A forking helper process (tests/crash_loop.py) and its answers."""

    def __init__(self, *args: str):
        env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{REPO_ROOT}", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(TESTS / "crash_loop.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=TESTS,
        )
        self.ready = False

    def __call__(self, *command: str) -> int:
        """Start a child with ``command``; its pid."""
        if not self.ready:
            assert self.proc.stdout.readline().strip() == "ready"
            self.ready = True
        self.proc.stdin.write(" ".join(command) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module", autouse=True)
def helpers():
    """Both helpers, started with the module: they import while the first tests run (the
    retrain one imports torch, seconds)."""
    started = {"promote": Helper(), "retrain": Helper("retrain")}
    yield started
    for h in started.values():
        h.close()


def _reaped(helper) -> int:
    return int(helper.proc.stdout.readline().split()[1])


def _kill(helper, pid: int) -> bool:
    """SIGKILL the child; False when it had already finished (and exited 0)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # done and reaped before the kill
        pass
    status = _reaped(helper)
    if os.WIFEXITED(status):
        assert os.WEXITSTATUS(status) == 0, status
        return False
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    return True


def _whole_target(runs: Path) -> str:
    """The run runs/prod names, checked to be a whole, complete run."""
    pointer = runs / "prod"
    assert pointer.is_symlink(), "the name is gone"
    target = os.readlink(pointer)
    run = load_run(pointer)  # the manifest and weights of one run, consistent with each other
    assert run.manifest.status == "complete" and run.path.name == target
    return target


def _wait_for(condition, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not condition():
        time.sleep(0.001)


def _forecast(run: Path, out: Path) -> tuple[str, pd.DataFrame]:
    rep = predict(run, as_of=AS_OF, out=out, offline=True)
    return rep.run, rep.forecasts[["ticker", "step", "p10", "p50", "p90", "run"]].reset_index(drop=True)


def test_predict_reads_the_run_the_name_named_when_it_started(two_runs, tmp_path, monkeypatch):
    runs = two_runs
    registry.promote(runs / "alpha", "prod", runs_dir=runs)
    want = _forecast(runs / "alpha", tmp_path / "ref")
    real = checkpoint.read_weights

    def promoted_meanwhile(run_dir):  # a promotion lands between run.json and the weights
        if os.readlink(runs / "prod") == "alpha":
            monkeypatch.setattr(checkpoint, "read_weights", real)
            registry.promote(runs / "beta", "prod", runs_dir=runs)
        return real(run_dir)

    monkeypatch.setattr(checkpoint, "read_weights", promoted_meanwhile)
    got = _forecast(runs / "prod", tmp_path / "fc")
    assert os.readlink(runs / "prod") == "beta"
    assert got[0] == "alpha"
    pd.testing.assert_frame_equal(got[1], want[1])


def test_predict_racing_promotions_sees_one_run_or_the_other(two_runs, tmp_path):
    runs = two_runs
    refs = {name: _forecast(runs / name, tmp_path / "ref")[1] for name in ("alpha", "beta")}
    registry.promote(runs / "alpha", "prod", runs_dir=runs)
    stop = threading.Event()
    switches = []

    def promote_back_and_forth():
        while not stop.is_set():
            registry.promote(runs / ("beta" if len(switches) % 2 == 0 else "alpha"), "prod", runs_dir=runs)
            switches.append(1)

    flipper = threading.Thread(target=promote_back_and_forth)
    flipper.start()
    seen = []
    try:
        for _ in range(8):
            name, got = _forecast(runs / "prod", tmp_path / "fc")
            pd.testing.assert_frame_equal(got, refs[name])
            seen.append(name)
    finally:
        stop.set()
        flipper.join(timeout=30)
    assert len(switches) > 8, "the name hardly moved while predict ran"
    assert set(seen) <= {"alpha", "beta"}


def test_sigkill_during_promote_leaves_the_name_on_a_whole_run(helpers, two_runs):
    runs, helper = two_runs, helpers["promote"]
    registry.promote(runs / "alpha", "prod", runs_dir=runs)
    rng = random.Random(7)
    seen = set()
    for i in range(16):
        pid = helper("promote", str(runs), str(runs / "alpha"), str(runs / "beta"))
        if i % 2:
            _wait_for(lambda: bool(_temp_links(runs)), 1.0)
        else:
            time.sleep(rng.uniform(0.0, 0.15))
        assert _kill(helper, pid), "a promote loop ended by itself"
        seen.add(_whole_target(runs))
    assert seen == {"alpha", "beta"}, "the kills never caught a switch done"
    registry.promote(runs / "beta", "prod", runs_dir=runs)  # the next promote cleans a killed one's temp link
    assert _temp_links(runs) == []


def _temp_links(runs: Path) -> list[Path]:
    return [p for p in runs.glob(".prod.*.tmp") if p.is_symlink()]


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_sigkill_during_retrain_leaves_the_name_on_a_whole_run(helpers, small_run, tmp_path):
    helper = helpers["retrain"]
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(small_run, runs / "first")
    registry.promote(runs / "first", "prod", runs_dir=runs)
    rng = random.Random(11)
    targets = [_whole_target(runs)]
    pid = helper("retrain", str(runs))  # a whole retrain first: how long one takes
    started = time.monotonic()
    assert not _kill_after(helper, pid, None)
    took = time.monotonic() - started
    targets.append(_whole_target(runs))
    kills = attempts = 0
    # at least four retrainings, and more (up to ten) until two of them were killed mid-way: on a
    # loaded machine a retraining can end before a kill timed from the first one's length
    while attempts < 4 or (kills < 2 and attempts < 10):
        i, attempts = attempts, attempts + 1
        before = {p.name for p in registry.runs_of("prod", runs)}
        pid = helper("retrain", str(runs))
        if i % 2:  # just after the challenger is written: comparing, switching, pruning
            _wait_for(lambda b=before: {p.name for p in registry.runs_of("prod", runs)} - b, 2 * took)
            delay = rng.uniform(0.0, 0.2 * took)
        else:
            delay = rng.uniform(0.2, 1.0) * took
        killed = _kill_after(helper, pid, delay)
        kills += killed
        if not killed:  # it ended first: a retraining takes less now than the first one measured
            took *= 0.75
        target = _whole_target(runs)
        names = [p.name for p in registry.runs_of("prod", runs)]
        assert target == targets[-1] or target in names and names.index(target) > names.index(targets[-1])
        targets.append(target)
    assert not _kill_after(helper, helper("retrain", str(runs)), None)  # what the kills left blocks nobody
    targets.append(_whole_target(runs))
    assert kills >= 2, f"only {kills} of {attempts} retrainings were killed before they ended"
    assert len(set(targets)) >= 3, targets  # the name moved on (first, then challengers)
    leftovers = [p.name for p in runs.iterdir() if p.name.startswith(".prod-") and not p.name.endswith("lock")]
    assert not [n for n in leftovers if "deleting" in n or n.endswith(".tmp")], leftovers


def _kill_after(helper, pid: int, delay: float | None) -> bool:
    """SIGKILL the child after ``delay`` seconds (None: let it finish); whether it was killed."""
    if delay is None:
        status = _reaped(helper)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        return False
    time.sleep(delay)
    return _kill(helper, pid)
