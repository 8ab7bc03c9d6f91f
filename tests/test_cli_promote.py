"""`forecaster promote RUN --name NAME`: runs/NAME points at a run, and every command that reads
a run takes the name (SPEC §10)."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from run_variants import shifted_run
from support import ROOT, run_forecaster_minding_file_modes, tiny_overrides

import forecaster
from forecaster import registry
from forecaster.errors import EXIT_TEMPFAIL

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# the folder holding the package under test (the checkout, or site-packages where it is installed):
# a subprocess given it as PYTHONPATH imports the same forecaster
PACKAGE_PARENT = Path(next(iter(forecaster.__path__))).resolve().parent


@pytest.fixture
def runs(trained_run, tmp_path) -> Path:
    """A runs folder with two complete runs of the same shapes that forecast differently."""
    folder = tmp_path / "runs"
    folder.mkdir()
    shifted_run(trained_run, folder / "alpha", noise=0.0)
    shifted_run(trained_run, folder / "beta", noise=0.5)
    return folder


def test_promote_points_the_name_at_the_run_and_switches_it(cli, runs):
    res = cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs)
    assert res.exit_code == 0, res.stderr
    pointer = runs / "prod"
    assert pointer.is_symlink() and os.readlink(pointer) == "alpha"  # relative: the folder can move
    assert str(pointer) in res.stdout and "alpha" in res.stdout
    res = cli("promote", runs / "beta", "--name", "prod", "--runs-dir", runs, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert Path(doc["target"]) == (runs / "beta").resolve() and Path(doc["previous"]) == (runs / "alpha").resolve()
    assert os.readlink(pointer) == "beta"
    assert not [p for p in runs.iterdir() if p.name.endswith(".tmp")]  # no temp link left behind


def test_promote_says_where_the_name_pointed_before(cli, runs):
    """The line names the run the name points at now and, when it pointed elsewhere, that one too."""
    alpha, beta = (runs / "alpha").resolve(), (runs / "beta").resolve()
    res = cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs)
    assert res.exit_code == 0 and res.stdout == f"{runs / 'prod'} -> {alpha}\n", res.stdout
    res = cli("promote", runs / "beta", "--name", "prod", "--runs-dir", runs)
    assert res.exit_code == 0 and res.stdout == f"{runs / 'prod'} -> {beta}  (was {alpha})\n", res.stdout
    assert cli("promote", runs / "beta", "--name", "prod", "--runs-dir", runs, "-q").stdout == ""


def test_promote_json_holds_the_keys_the_readme_names(cli, runs):
    res = cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    said = re.search(r"`promote` takes .*?its `--json` object holds (.*?)\. ", readme).group(1)
    assert set(re.findall(r"`(\w+)`", said)) == set(doc)
    assert doc["name"] == "prod" and doc["previous"] is None


def test_predict_evaluate_score_and_info_take_a_promoted_name(cli, runs, tmp_path):
    assert cli("promote", runs / "beta", "--name", "prod", "--runs-dir", runs).exit_code == 0
    name = runs / "prod"
    out = tmp_path / "fc"
    for day in ("2024-12-24", "2024-12-31"):
        res = cli("predict", "--run", name, "--out", out, "--as-of", day, "-q")
        assert res.exit_code == 0, res.stderr
    forecast = pd.read_csv(out / "beta" / "2024-12-24.csv")  # under the run's own name
    assert set(forecast["run"]) == {"beta"}
    res = cli("score", "--run", name, "--out", out, "-q")
    assert res.exit_code == 0, res.stderr
    assert (out / "beta" / "score.csv").is_file()
    res = cli("evaluate", "--run", name, "-q")
    assert res.exit_code == 0, res.stderr
    assert (runs / "beta" / "eval" / "metrics.csv").is_file()
    res = cli("info", name)
    assert res.exit_code == 0, res.stderr
    assert f"pointer    {name} -> {(runs / 'beta').resolve()}" in res.stdout
    assert "run        beta" in res.stdout and "evaluation" in res.stdout
    doc = json.loads(cli("info", name, "--json").stdout)
    assert doc["name"] == "beta" and doc["pointer"]["target"] == str((runs / "beta").resolve())


def test_promote_refuses_what_is_not_a_whole_run(cli, runs):
    assert cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs).exit_code == 0
    (runs / "beta" / "model.safetensors").unlink()
    res = cli("promote", runs / "beta", "--name", "prod", "--runs-dir", runs)
    assert res.exit_code == 1 and "model.safetensors" in res.stderr
    assert os.readlink(runs / "prod") == "alpha"
    # a real run directory under the name is not replaced
    res = cli("promote", runs / "alpha", "--name", "beta", "--runs-dir", runs)
    assert res.exit_code == 1 and "is a run directory, not a promoted name" in res.stderr
    assert (runs / "beta").is_dir() and not (runs / "beta").is_symlink()
    # nor is a file, and the message says what stands there
    (runs / "notes").write_text("kept\n")
    res = cli("promote", runs / "alpha", "--name", "notes", "--runs-dir", runs)
    assert res.exit_code == 1 and "notes is a file, not a promoted name" in res.stderr, res.stderr
    assert (runs / "notes").read_text() == "kept\n"
    (runs / "notes").unlink()
    for bad in ("../escape", "a/b", ".hidden", ""):
        res = cli("promote", runs / "alpha", "--name", bad, "--runs-dir", runs)
        assert res.exit_code == 1 and "unusable name" in res.stderr, bad
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == ["alpha", "beta", "prod"]


def test_a_run_that_cannot_be_promoted_leaves_nothing_behind(cli, runs, tmp_path):
    """Refused with the reason, before the name's lock file, or the --runs-dir folder (a typo,
    say), is made."""
    (runs / "beta" / "model.safetensors").unlink()
    for runs_dir in (runs, tmp_path / "mistyped" / "runs"):
        res = cli("promote", runs / "beta", "--name", "prod", "--runs-dir", runs_dir)
        assert res.exit_code == 1 and "model.safetensors is missing" in res.stderr
    assert not (tmp_path / "mistyped").exists()
    assert not (runs / ".prod.lock").exists() and not (runs / "prod").exists()


@pytest.mark.parametrize("first", [True, False])
def test_a_link_that_cannot_be_made_says_where_the_name_still_points(cli, runs, monkeypatch, first):
    """A disk with no room for one more link (no inodes left): the name is switched in one
    rename or not at all, and the line says which run it still names."""
    if not first:
        assert cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs).exit_code == 0

    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "symlink", no_room)
    res = cli("promote", runs / "beta", "--name", "prod", "--runs-dir", runs)
    assert res.exit_code == 1
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
    assert line.startswith(
        f"ERROR: cannot point {runs / 'prod'} at {(runs / 'beta').resolve()}: No space left on device"
    )
    if first:
        assert line.endswith("; no link was made") and not os.path.lexists(runs / "prod")
    else:
        assert line.endswith(f"; {runs / 'prod'} still points at alpha") and os.readlink(runs / "prod") == "alpha"


def test_a_name_that_is_a_real_folder_is_refused_and_no_lock_file_is_left(cli, runs):
    (runs / "plain").mkdir()
    res = cli("promote", runs / "alpha", "--name", "plain", "--runs-dir", runs)
    assert res.exit_code == 1 and "not a promoted name" in res.stderr, res.stderr
    assert not (runs / ".plain.lock").exists() and list((runs / "plain").iterdir()) == []


def test_a_promoted_name_whose_run_was_deleted_is_named_in_the_error(cli, runs, tmp_path):
    """Every command given the name says which name points where, not only the missing run."""
    assert cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs).exit_code == 0
    shutil.rmtree(runs / "alpha")
    name, gone = runs / "prod", (runs / "alpha").resolve()
    for args in (
        ["predict", "--run", name, "--out", tmp_path / "fc"],
        ["evaluate", "--run", name],
        ["score", "--run", name, "--out", tmp_path / "fc"],
        ["info", name],
        ["promote", name, "--name", "other", "--runs-dir", runs],
        ["retrain", "prod", "--runs-dir", runs],
    ):
        res = cli(*args)
        assert res.exit_code == 1, (args, res.stderr)
        assert f"{name} points at {gone}, which does not exist" in res.stderr, (args, res.stderr)


def test_promote_exits_75_while_the_name_is_locked(cli, runs):
    code = (
        "import sys, time\nfrom forecaster import fsio\n"
        "with fsio.file_lock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(registry.lock_path("prod", runs))], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert res.exit_code == EXIT_TEMPFAIL and f"pid {holder.pid}" in res.stderr
    assert not (runs / "prod").exists()


@pytest.mark.parametrize("name", ["prod", "staging"])
def test_promote_in_a_read_only_runs_folder_says_it_cannot_be_written_and_nothing_changed(cli, runs, tmp_path, name):
    """A runs folder without write permission: one line saying that the folder cannot be
    written and that nothing was changed, for a name already promoted (whose lock file an
    earlier promote left) and a new one; it said "cannot create the lock file runs/.NAME.lock"
    or "cannot point runs/prod at ...", files the user never asked for."""
    assert cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs).exit_code == 0
    before = sorted(p.name for p in runs.iterdir())
    runs.chmod(0o555)
    try:
        res = run_forecaster_minding_file_modes(
            "promote", runs / "beta", "--name", name, "--runs-dir", runs, cwd=tmp_path
        )
    finally:
        runs.chmod(0o755)
    assert res.returncode == 1, res.stderr
    where = f"{runs / 'prod'} points at alpha" if name == "prod" else "no link was made"
    assert res.stderr.splitlines() == [
        f"ERROR: cannot promote {runs / 'beta'} as {name}: the runs folder {runs} cannot be written "
        f"(Permission denied); nothing was changed, {where}"
    ]
    assert sorted(p.name for p in runs.iterdir()) == before and os.readlink(runs / "prod") == "alpha"


def test_prune_keeps_the_newest_runs_of_the_name_and_the_one_it_names(tmp_path):
    runs = tmp_path / "runs"
    stamps = ["20260105-190000", "20260112-190000", "20260119-190000", "20260119-190000-2", "20260126-190000"]
    for s in stamps:
        (runs / f"prod-{s}").mkdir(parents=True)
    (runs / "prod-eu-20260101-190000").mkdir()  # another name's run
    (runs / "handmade").mkdir()  # not written by retrain
    (runs / ".prod-20260127-190000.k1ll3d.tmp").mkdir()  # a run whose writer was killed
    (runs / "prod").symlink_to("prod-20260105-190000")  # the oldest serves
    assert [p.name for p in registry.runs_of("prod", runs)] == [f"prod-{s}" for s in stamps]
    result = registry.prune("prod", 2, runs)
    assert [p.name for p in result.removed] == ["prod-20260112-190000", "prod-20260119-190000"]
    left = sorted(p.name for p in runs.iterdir())
    assert left == [
        "handmade",
        "prod",
        "prod-20260105-190000",
        "prod-20260119-190000-2",
        "prod-20260126-190000",
        "prod-eu-20260101-190000",
    ]


@pytest.mark.parametrize("keep", [0, -1])
def test_prune_refuses_to_keep_no_run_and_deletes_nothing(tmp_path, keep):
    from forecaster.errors import ConfigError

    runs = tmp_path / "runs"
    for s in ("20260105-190000", "20260112-190000"):
        (runs / f"prod-{s}").mkdir(parents=True)
    (runs / "prod").symlink_to("prod-20260112-190000")
    with pytest.raises(ConfigError) as caught:
        registry.prune("prod", keep, runs)
    assert str(caught.value) == f"keep must be at least 1, not {keep}"
    assert sorted(p.name for p in runs.iterdir()) == ["prod", "prod-20260105-190000", "prod-20260112-190000"]


def test_list_runs_of_a_folder_not_there_a_file_or_one_that_cannot_be_read_says_which(tmp_path):
    from support import run_python_minding_file_modes

    from forecaster.errors import ConfigError

    missing, notes = tmp_path / "missing", tmp_path / "notes.txt"
    notes.write_text("notes\n")
    for folder, said in [(missing, f"no folder {missing}"), (notes, f"{notes} is a file, not a folder of runs")]:
        with pytest.raises(ConfigError) as caught:
            registry.list_runs(folder)
        assert str(caught.value) == said
    runs = tmp_path / "runs"
    (runs / "alpha").mkdir(parents=True)
    runs.chmod(0o311)  # its runs may be reached by name, not listed
    script = (
        "import sys\nfrom forecaster.errors import ConfigError\nfrom forecaster.registry import list_runs\n"
        "try:\n    list_runs(sys.argv[1])\nexcept ConfigError as e:\n    print(e)"
    )
    try:
        done = run_python_minding_file_modes(script, runs)
    finally:
        runs.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"cannot read the folder {runs}: Permission denied\n"


def test_prune_orders_the_runs_made_in_one_second_by_their_number_not_as_text(tmp_path):
    """Eleven retrains in the same second get -2 ... -11 after the stamp: runs_of lists them in
    the order they were made (-2 before -10), so `retrain --keep 3` deletes the oldest eight and
    keeps -9, -10 and -11, not -8, -9 and the first."""
    runs = tmp_path / "runs"
    stamp = "20260119-190000"
    made = [f"prod-{stamp}"] + [f"prod-{stamp}-{n}" for n in range(2, 12)]
    for name in reversed(made):  # the folder's listing order is no help
        (runs / name).mkdir(parents=True)
    (runs / "prod").symlink_to("prod-20260105-190000")  # a champion made earlier
    (runs / "prod-20260105-190000").mkdir()
    assert [p.name for p in registry.runs_of("prod", runs)] == ["prod-20260105-190000", *made]
    result = registry.prune("prod", 3, runs)
    assert [p.name for p in result.removed] == made[:-3]
    assert sorted(p.name for p in runs.iterdir()) == sorted(["prod", "prod-20260105-190000", *made[-3:]])


def test_prune_counts_a_run_json_without_a_status_as_finished(tmp_path):
    """run.json of a run made before the status was recorded has none: it is a finished run,
    pruned in its turn by age, not first like an interrupted challenger."""
    runs = tmp_path / "runs"
    status = {
        "prod-20260105-190000": {"status": "complete"},
        "prod-20260112-190000": {},  # an older run: no status
        "prod-20260119-190000": {"status": "interrupted"},
        "prod-20260126-190000": {"status": "complete"},
    }
    for name, extra in status.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "run.json").write_text(json.dumps({"name": name, **extra}))
    (runs / "prod").symlink_to("prod-20260126-190000")
    result = registry.prune("prod", 2, runs)
    assert [p.name for p in result.removed] == ["prod-20260119-190000", "prod-20260105-190000"]
    assert [p.name for p in registry.runs_of("prod", runs)] == ["prod-20260112-190000", "prod-20260126-190000"]


def test_prune_takes_a_run_json_json_cannot_read_for_an_unfinished_run(tmp_path):
    """A run.json nested deeper than Python's recursion limit stopped the pruning (and so the
    retrain) with an unexpected error; it is a folder without a readable run.json, pruned first."""
    runs = tmp_path / "runs"
    for name in ("prod-20260105-190000", "prod-20260112-190000", "prod-20260119-190000"):
        (runs / name).mkdir(parents=True)
        (runs / name / "run.json").write_text(json.dumps({"name": name, "status": "complete"}))
    (runs / "prod-20260112-190000" / "run.json").write_text("[" * 100_000 + "]" * 100_000)
    (runs / "prod").symlink_to("prod-20260119-190000")
    result = registry.prune("prod", 2, runs)
    assert [p.name for p in result.removed] == ["prod-20260112-190000"]


def test_training_into_a_promoted_name_is_refused(cli, runs, small_dir):
    assert cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs).exit_code == 0
    args = ["--source", "csv", "--data-dir", small_dir, "--tickers", "STOCKA,STOCKB", "--lookback", "20"]
    args += ["--horizon", "3", "--val-days", "100", "--test-days", "100", "--hidden-size", "4", "--epochs", "1"]
    res = cli("train", *args, "--run-dir", runs / "prod")
    assert res.exit_code == 1 and "promoted name" in res.stderr
    assert "epoch" not in res.stderr  # refused before training, not once the epochs are spent
    assert os.readlink(runs / "prod") == "alpha" and (runs / "alpha" / "run.json").is_file()


def test_training_into_the_run_a_promoted_name_points_at_is_refused(cli, runs, small_dir):
    """Trained into again and stopped, the run would have left the name serving an unfinished
    run, which predict refuses: the model a name serves changes only by promote or retrain."""
    assert cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs).exit_code == 0
    before = (runs / "alpha" / "run.json").read_text()
    args = ["--source", "csv", "--data-dir", small_dir, "--tickers", "STOCKA,STOCKB", "--lookback", "20"]
    args += ["--horizon", "3", "--val-days", "100", "--test-days", "100", "--hidden-size", "4", "--epochs", "1"]
    res = cli("train", *args, "--run-dir", runs / "alpha")
    assert res.exit_code == 1 and f"promoted name {runs / 'prod'} points at" in " ".join(res.stderr.split())
    assert "epoch" not in res.stderr
    assert (runs / "alpha" / "run.json").read_text() == before and os.readlink(runs / "prod") == "alpha"
    res = cli("train", *args, "--run-dir", runs / "beta")  # a run no name points at is replaced as before
    assert res.exit_code == 0, res.stderr


def test_prune_keeps_a_run_that_another_promoted_name_points_at(tmp_path):
    runs = tmp_path / "runs"
    for s in ["20260105-190000", "20260112-190000", "20260119-190000"]:
        (runs / f"prod-{s}").mkdir(parents=True)
    (runs / "prod").symlink_to("prod-20260119-190000")
    (runs / "stable").symlink_to("prod-20260105-190000")  # `promote runs/prod --name stable`, weeks ago
    result = registry.prune("prod", 1, runs)
    assert [p.name for p in result.removed] == ["prod-20260112-190000"]
    assert (runs / "stable" / ".").is_dir() and (runs / "prod" / ".").is_dir()


def test_prune_keeps_a_run_promoted_under_another_name_while_it_prunes(tmp_path, monkeypatch):
    """A promote of another name may land after prune has looked at the links and before it
    deletes: the run it points at now must stay (prune looks again under the run's lock)."""
    runs = tmp_path / "runs"
    for s in ["20260105-190000", "20260112-190000", "20260119-190000"]:
        (runs / f"prod-{s}").mkdir(parents=True)
    (runs / "prod").symlink_to("prod-20260119-190000")
    finished = registry._finished

    def promoted_meanwhile(run: Path) -> bool:
        if not (runs / "stable").is_symlink():  # `promote runs/prod-20260112-190000 --name stable`
            (runs / "stable").symlink_to("prod-20260112-190000")
        return finished(run)

    monkeypatch.setattr(registry, "_finished", promoted_meanwhile)
    result = registry.prune("prod", 1, runs)
    assert [p.name for p in result.removed] == ["prod-20260105-190000"]
    assert (runs / "stable" / ".").is_dir() and runs / "prod-20260112-190000" in result.kept


def test_promote_waits_for_the_lock_of_a_run_being_written_and_then_exits_75(cli, runs):
    """A run being trained into (or deleted by a prune) holds its lock: promote does not point
    a name at it meanwhile."""
    from forecaster.checkpoint import run_lock_path
    from forecaster.fsio import file_lock

    with file_lock(run_lock_path(runs / "alpha")):
        res = cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs)
        assert res.exit_code == EXIT_TEMPFAIL and ".alpha.lock" in res.stderr, res.stderr
        assert not (runs / "prod").exists()
    assert cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs).exit_code == 0
    assert os.readlink(runs / "prod") == "alpha"


def test_prune_keeps_a_run_being_trained(tmp_path):
    """An unfinished challenger resumed by hand (`train --resume`, as info advises) holds its
    run lock while it trains: a retrain's pruning meanwhile leaves it, and its lock, alone."""
    from forecaster.checkpoint import run_lock_path
    from forecaster.fsio import file_lock

    runs = tmp_path / "runs"
    for s in ["20260105-190000", "20260112-190000", "20260119-190000"]:
        (runs / f"prod-{s}").mkdir(parents=True)
    (runs / "prod").symlink_to("prod-20260119-190000")
    busy = runs / "prod-20260105-190000"
    writing = runs / f".{busy.name}.wr1t1ng0.tmp"  # the run that training is writing out now
    writing.mkdir()
    with file_lock(run_lock_path(busy)):
        result = registry.prune("prod", 1, runs)
        assert [p.name for p in result.removed] == ["prod-20260112-190000"]
        assert busy.is_dir() and busy in result.kept and run_lock_path(busy).exists()
        assert writing.is_dir()  # it was deleted under the writer, whose save then failed
    result = registry.prune("prod", 1, runs)  # once its training is over, it goes like any other
    assert [p.name for p in result.removed] == [busy.name] and not run_lock_path(busy).exists()
    assert not writing.exists()  # as does what a writer killed since left


def test_prune_deletes_the_lock_files_of_challengers_never_written_unless_one_is_being_trained(tmp_path):
    """A retrain killed before its challenger was written left the challenger's lock and
    holder files behind, one or two more with each such kill, forever."""
    from forecaster.checkpoint import run_lock_path
    from forecaster.fsio import file_lock

    runs = tmp_path / "runs"
    (runs / "prod-20260119-190000").mkdir(parents=True)
    (runs / "prod").symlink_to("prod-20260119-190000")
    gone = [runs / f"prod-2026010{d}-190000" for d in (5, 6)]
    for run in gone:
        run_lock_path(run).touch()
        run_lock_path(run).with_name(run_lock_path(run).name + ".holder").write_text("{}")
    training = runs / "prod-20260126-190000"  # a retrain about to write its challenger
    other = runs / ".other-20260105-190000.lock"  # another name's: not this prune's
    other.touch()
    with file_lock(run_lock_path(training)):
        registry.prune("prod", 1, runs)
        assert sorted(p.name for p in runs.iterdir() if p.name.startswith(".")) == sorted(
            [run_lock_path(training).name, run_lock_path(training).name + ".holder", other.name]
        )


def test_prune_warns_of_a_run_it_cannot_delete_once_per_prune(tmp_path, monkeypatch, caplog):
    """A pruned run with a read-only folder inside (as a user without the rights to delete it)
    was left as `.NAME-STAMP.deleting` without a word, and tried again on every retrain."""
    runs = tmp_path / "runs"
    for s in ["20260105-190000", "20260112-190000"]:
        (runs / f"prod-{s}").mkdir(parents=True)
    trash = runs / ".prod-20260105-190000.deleting"
    rmtree = shutil.rmtree

    def denied(path, ignore_errors=False, **kwargs):  # as rmtree meets a folder it cannot empty
        if Path(path) == trash:
            if ignore_errors:
                return
            raise PermissionError(errno.EACCES, "Permission denied", str(trash / "eval"))
        return rmtree(path, ignore_errors=ignore_errors, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", denied)
    for _ in range(2):  # the prune that renames it, then the next retrain's, which tries again
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="forecaster"):
            registry.prune("prod", 1, runs)
        [line] = [r.getMessage() for r in caplog.records]
        assert str(trash) in line and "Permission denied" in line, line
        assert trash.is_dir()
    monkeypatch.setattr(shutil, "rmtree", rmtree)  # once it can be deleted, it goes without a word
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        registry.prune("prod", 1, runs)
    assert not caplog.records and sorted(p.name for p in runs.iterdir()) == ["prod-20260112-190000"]


def test_promote_quiet_with_a_log_file_logs_the_switch(cli, runs, tmp_path):
    """From cron (`-q --log-file`) a promotion leaves its line in the log, and nothing on stderr;
    the log was empty."""
    log = tmp_path / "promote.log"
    cli("promote", runs / "alpha", "--name", "prod", "--runs-dir", runs)
    res = cli("promote", runs / "beta", "--name", "prod", "--runs-dir", runs, "-q", "--log-file", log)
    assert res.exit_code == 0 and res.stderr == "", res.stderr
    [line] = log.read_text().splitlines()
    assert line.endswith(
        f"INFO promoted {runs / 'prod'} -> {(runs / 'beta').resolve()} (was {(runs / 'alpha').resolve()})"
    )


def test_the_resume_command_for_an_interrupted_run_in_a_folder_with_a_space_reads_back_as_its_path(
    cli, sample_dir, tmp_path
):
    """promote refuses a run whose training was interrupted with the command that resumes it:
    a run directory whose name has a space in it is quoted there, so that the command, pasted
    into a shell, names that directory and not two arguments."""
    from forecaster.config import load_config
    from forecaster.training import Interrupted, train

    def stopped(rec):
        raise KeyboardInterrupt

    run = tmp_path / "my runs" / "run 1"
    with pytest.raises(Interrupted):  # a resumable run, saved in its first epoch
        train(load_config(None, tiny_overrides(sample_dir)), run_dir=run, on_epoch=stopped)
    res = cli("promote", run, "--name", "prod", "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 1
    command = re.search(r"resume with `forecaster (train [^`]*)`", res.stderr)
    assert command, res.stderr
    assert shlex.split(command.group(1)) == ["train", "--resume", str(run)]
