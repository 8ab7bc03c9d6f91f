"""A training's checkpoints: a new run saved resumable every ``train.checkpoint_every`` seconds,
so that a process killed outright (SIGKILL, the out-of-memory killer, a power cut) resumes from
its last one, and a run already in the folder is never replaced before training ends."""

import errno
import json
import logging
import os
import shutil
import signal
import time

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file
from support import SLOW_TEST_TIMEOUT_S, run_meta, start_forecaster, tiny_overrides

from forecaster import training
from forecaster.config import load_config
from forecaster.errors import RunFormatError, RunWriteError, TrainingError
from forecaster.training import train


def _cfg(sample_dir, every, epochs=4, **extra):
    return load_config(
        None,
        tiny_overrides(sample_dir, **{"train.epochs": epochs, "train.patience": 50, "train.checkpoint_every": every})
        | extra,
    )


def _seen_at_each_epoch(run):
    """An on_epoch hook recording, at each epoch's end, what the run folder's run.json says
    (None: no run.json): a checkpoint made after epoch k is seen at epoch k + 1."""
    seen = []

    def hook(rec):
        meta = run_meta(run) if (run / "run.json").is_file() else None
        seen.append(None if meta is None else (meta["status"], meta["metrics"]["epochs_run"], meta["created_at"]))

    return seen, hook


def test_a_new_run_is_saved_resumable_after_each_epoch_while_it_trains(sample_dir, tmp_path):
    run = tmp_path / "run"
    seen, hook = _seen_at_each_epoch(run)
    train(_cfg(sample_dir, 1e-6), run_dir=run, on_epoch=hook)
    # epoch 1 sees nothing yet; epoch k sees the checkpoint of epoch k - 1
    assert seen[0] is None
    assert [s[:2] for s in seen[1:]] == [("interrupted", 1), ("interrupted", 2), ("interrupted", 3)]
    # no checkpoint after the last epoch: the finished run is written whole instead
    meta = run_meta(run)
    assert meta["status"] == "complete" and meta["metrics"]["epochs_run"] == 4
    assert not (run / "resume.safetensors").exists()


def test_a_checkpoint_of_a_training_still_running_is_named_as_one(sample_dir, tmp_path):
    """While the training goes on, its checkpoint is refused for forecasting as one being
    trained, to wait for, not as an interrupted run to resume (which would wait for its lock)."""
    from forecaster.checkpoint import load_run
    from forecaster.errors import RunFormatError

    run = tmp_path / "run"
    said = {}

    def look(rec):
        if rec.epoch == 3:
            with pytest.raises(RunFormatError) as caught:
                load_run(run)
            said["load"] = str(caught.value)
            p = start_forecaster("info", run)
            said["info"] = p.communicate(timeout=120)[0]
            p = start_forecaster("info", run, "--json")
            said["json"] = json.loads(p.communicate(timeout=120)[0])

    train(_cfg(sample_dir, 1e-6), run_dir=run, on_epoch=look)
    assert said["load"].startswith(f"{run} is being trained: it holds a checkpoint after epoch 2, not a finished run; ")
    assert "a training is writing it now (pid " in said["load"] and said["load"].endswith("wait for it to end")
    [line] = [ln for ln in said["info"].splitlines() if ln.startswith("status")]
    assert line.startswith("status     being trained (a checkpoint after epoch 2): a training is writing it now (pid ")
    assert said["json"]["status"] == "interrupted" and said["json"]["being_trained"].startswith(f"pid {os.getpid()} ")


def test_a_folder_with_no_run_yet_says_why(sample_dir, tmp_path):
    """An empty folder (a training killed before its first checkpoint leaves one), or one a
    training is still writing its first epochs into, rather than a bare 'run.json is missing'."""
    from forecaster.checkpoint import read_manifest
    from forecaster.errors import RunFormatError

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(RunFormatError) as caught:
        read_manifest(run)
    assert str(caught.value) == (
        f"{run} is not a run: the folder is empty, no run.json (as a training stopped before its first save leaves it)"
    )
    said = []

    def look(rec):
        if rec.epoch == 1:
            with pytest.raises(RunFormatError) as caught:
                read_manifest(run)
            said.append(str(caught.value))

    train(_cfg(sample_dir, 0, epochs=2), run_dir=run, on_epoch=look)
    assert said[0].startswith(f"{run} is not a run: not yet, a training is writing it (pid {os.getpid()} ")
    (run / "run.json").unlink()
    with pytest.raises(RunFormatError, match=r"is not a run: run\.json is missing$"):
        read_manifest(run)


def test_checkpoint_every_0_saves_none(sample_dir, tmp_path):
    run = tmp_path / "run"
    seen, hook = _seen_at_each_epoch(run)
    train(_cfg(sample_dir, 0), run_dir=run, on_epoch=hook)
    assert seen == [None] * 4
    assert run_meta(run)["status"] == "complete"


def test_checkpoints_come_no_sooner_than_the_interval(sample_dir, tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 25))  # every reading of the clock 25 s after the one before
    monkeypatch.setattr(training._Checkpoints, "_now", staticmethod(lambda: float(next(clock))))
    run = tmp_path / "run"
    seen, hook = _seen_at_each_epoch(run)
    train(_cfg(sample_dir, 60, epochs=6), run_dir=run, on_epoch=hook)
    # the clock reads 0 at the start, then 25, 50 and 75 after epochs 1-3 (due: saved, the clock
    # read again, 100), 125 and 150 after epochs 4 and 5; none after the last epoch
    assert [None if s is None else s[1] for s in seen] == [None, None, None, 3, 3, 3]


def test_a_run_already_in_the_folder_stays_until_training_ends(sample_dir, tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = run_meta(run)
    seen, hook = _seen_at_each_epoch(run)
    train(_cfg(sample_dir, 1e-6), run_dir=run, on_epoch=hook)
    assert seen == [("complete", before["metrics"]["epochs_run"], before["created_at"])] * 4
    assert before["metrics"]["epochs_run"] == 2 and run_meta(run)["metrics"]["epochs_run"] == 4  # replaced at the end


def test_a_resumed_run_is_checkpointed_too(sample_dir, tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(sample_dir, 0, epochs=2)

    def stop(rec):
        raise KeyboardInterrupt

    with pytest.raises(training.Interrupted):
        train(cfg, run_dir=run, on_epoch=stop)
    assert run_meta(run)["metrics"]["epochs_run"] == 1
    seen, hook = _seen_at_each_epoch(run)
    train(_cfg(sample_dir, 1e-6, epochs=5), run_dir=run, on_epoch=hook, resume=True)
    assert [s[:2] for s in seen] == [("interrupted", 1), ("interrupted", 2), ("interrupted", 3), ("interrupted", 4)]
    assert run_meta(run)["status"] == "complete"


@pytest.mark.parametrize("existed", [False, True])
def test_a_training_that_fails_takes_its_checkpoint_away(sample_dir, tmp_path, existed):
    run = tmp_path / "run"
    if existed:
        run.mkdir()

    def fail_at_3(rec):
        if rec.epoch == 3:
            assert (run / "run.json").is_file()  # the checkpoint of epoch 2
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        train(_cfg(sample_dir, 1e-6), run_dir=run, on_epoch=fail_at_3)
    # the folder as it was found: absent, or there and empty
    assert run.is_dir() == existed and (not existed or not any(run.iterdir()))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_a_failed_training_into_the_default_folder_leaves_no_folder(sample_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def fail_at_3(rec):
        if rec.epoch == 3:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        train(_cfg(sample_dir, 1e-6), on_epoch=fail_at_3)
    # only the lock file beside the folder, as every training leaves it
    assert [p.name for p in (tmp_path / "runs").iterdir() if not p.name.endswith(".lock")] == []


def test_a_checkpoint_that_cannot_be_written_is_said_once_and_training_goes_on(
    sample_dir, tmp_path, monkeypatch, caplog
):
    real = training.save_run

    def no_room(run_dir, weights, manifest, history, resume=None):
        if manifest.status != "complete":
            raise RunWriteError(f"cannot write the run {run_dir}: No space left on device; nothing there was changed")
        return real(run_dir, weights, manifest, history, resume=resume)

    monkeypatch.setattr(training, "save_run", no_room)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        res = train(_cfg(sample_dir, 1e-6), run_dir=run)
    assert res.manifest.status == "complete" and run_meta(run)["metrics"]["epochs_run"] == 4
    said = [r.getMessage() for r in caplog.records if "No space left on device" in r.getMessage()]
    assert len(said) == 1 and "training goes on" in said[0]


def test_a_checkpoint_keeps_training_where_it_was(sample_dir, tmp_path):
    """A checkpoint saves the best epoch's weights as the run's without loading them into the
    network being trained: the epochs after it are those of a training without checkpoints."""
    fast = {"train.lr": 0.01}  # a validation loss that rises at an epoch before the last
    plain = train(_cfg(sample_dir, 0, epochs=5, **fast), run_dir=tmp_path / "plain")
    losses = [r.val_loss for r in plain.history]
    assert any(loss > min(losses[:k]) for k, loss in enumerate(losses[:-1]) if k), losses
    saved = train(_cfg(sample_dir, 1e-6, epochs=5, **fast), run_dir=tmp_path / "saved")
    assert [r.val_loss for r in saved.history] == losses
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("plain", "saved"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_tuning_trials_save_no_checkpoints(monkeypatch, tmp_path):
    from forecaster import tuning

    seen = []

    def spy(*args, **kw):
        seen.append(kw.get("checkpoints", True))
        raise ValueError("stop here")

    monkeypatch.setattr(tuning, "train", spy)
    objective = tuning.Objective(load_config(None, {}), [])
    trial = type("T", (), {"set_user_attr": lambda *a: None, "study": None})()
    monkeypatch.setattr(tuning, "fail_abandoned", lambda study: None)
    monkeypatch.setattr(tuning, "trial_config", lambda base, values: base)
    with pytest.raises(ValueError, match="stop here"):
        objective(trial)
    assert seen == [False]


def test_a_retrains_challenger_saves_no_checkpoints(trained_run, tmp_path):
    from forecaster import registry, retraining

    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(trained_run, runs / "first")
    registry.promote(runs / "first", "prod", runs_dir=runs)
    seen = []

    def hook(rec):
        seen.append(sorted(p.parent.name for p in runs.glob("prod-*/run.json")))

    overrides = {"train.checkpoint_every": 1e-6, "train.epochs": 4, "train.patience": 50}
    report = retraining.retrain("prod", runs_dir=runs, overrides=overrides, on_epoch=hook)
    assert seen == [[]] * 4
    assert run_meta(report.challenger)["metrics"]["epochs_run"] == 4


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_a_training_killed_outright_resumes_from_its_last_checkpoint(sample_dir, tmp_path):
    """SIGKILL, which no handler sees: the last checkpoint is a resumable run, and resuming it
    ends where a training never killed ends."""
    tiny = "--lookback 20 --horizon 3 --val-days 100 --test-days 100 --hidden-size 8 --model gru"
    args = ["--source", "csv", "--data-dir", sample_dir, "-t", "STOCKA,STOCKB", *tiny.split()]
    args += ["--epochs", "8", "--patience", "50"]
    straight = tmp_path / "straight"
    p = start_forecaster("train", *args, "--run-dir", straight, "-q")
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    run = tmp_path / "killed"
    p = start_forecaster("train", *args, "--run-dir", run, "--checkpoint-every", "0.000001")
    deadline, seen = time.time() + 120, ""
    while time.time() < deadline:  # epoch 4's line: the checkpoint of epoch 3 is there by then
        line = p.stderr.readline()
        seen += line
        if "epoch 4:" in line or not line:
            break
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    assert "epoch 4:" in seen, seen
    meta = run_meta(run)
    assert meta["status"] == "interrupted" and 3 <= meta["metrics"]["epochs_run"] <= 4
    p = start_forecaster("info", run)  # its training gone: a run to resume
    [line] = [ln for ln in p.communicate(timeout=120)[0].splitlines() if ln.startswith("status")]
    assert line == f"status     interrupted: resume with `forecaster train --resume {run}`", line
    p = start_forecaster("train", "--resume", run, "-q")
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    assert run_meta(run)["status"] == "complete" and not (run / "resume.safetensors").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _no_room_for_folders(monkeypatch, calls: int | None = None):
    """The run writer's temporary folder cannot be made (a disk with no room left for one more
    folder), for the first ``calls`` attempts (None: every one)."""
    import errno

    from forecaster import checkpoint

    real, made = checkpoint.sibling_temp_dir, []

    def full(final_dir):
        made.append(final_dir)
        if calls is None or len(made) <= calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(final_dir)

    monkeypatch.setattr(checkpoint, "sibling_temp_dir", full)
    return made


def test_a_run_whose_temporary_folder_cannot_be_made_is_a_run_write_error(trained_run, tmp_path, monkeypatch):
    from forecaster.checkpoint import read_manifest, save_run

    _no_room_for_folders(monkeypatch)
    run = tmp_path / "run"
    with pytest.raises(RunWriteError, match=f"cannot write the run {run}: No space left on device; nothing"):
        save_run(run, {}, read_manifest(trained_run), [])
    assert not run.exists()


def test_checkpoints_with_no_room_for_their_folder_are_said_once_and_training_goes_on(
    sample_dir, tmp_path, monkeypatch, caplog
):
    made = _no_room_for_folders(monkeypatch, calls=3)  # the checkpoints of epochs 1-3; the run fits
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        res = train(_cfg(sample_dir, 1e-6), run_dir=run)
    assert len(made) == 4 and res.manifest.status == "complete" and run_meta(run)["metrics"]["epochs_run"] == 4
    said = [r.getMessage() for r in caplog.records if "No space left on device" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"cannot write the run {run}")
    assert said[0].endswith("; training goes on, and a process killed now loses its epochs"), said[0]


def test_a_checkpoint_that_cannot_be_written_after_one_that_was_names_the_one_to_resume(
    sample_dir, tmp_path, monkeypatch, caplog
):
    from forecaster import checkpoint

    real, calls = checkpoint.sibling_temp_dir, []

    def full_from_the_second(final_dir):  # the checkpoint of epoch 1 fits; those after do not
        calls.append(final_dir)
        if 2 <= len(calls) <= 3:
            import errno

            raise OSError(errno.ENOSPC, "No space left on device")
        return real(final_dir)

    monkeypatch.setattr(checkpoint, "sibling_temp_dir", full_from_the_second)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        train(_cfg(sample_dir, 1e-6), run_dir=run)
    said = [r.getMessage() for r in caplog.records if "No space left on device" in r.getMessage()]
    assert len(said) == 1
    assert said[0].endswith("; training goes on, and a process killed now resumes from the checkpoint after epoch 1")


def test_a_run_that_cannot_be_written_when_training_ends_keeps_its_last_checkpoint(sample_dir, tmp_path, monkeypatch):
    """A full disk at the end: the checkpoint is what the epochs left, and --resume finishes the
    run from it once there is room, rather than training them all again."""
    real = training.save_run

    def no_room_at_the_end(run_dir, weights, manifest, history, resume=None):
        if manifest.status == "complete":
            raise RunWriteError(f"cannot write the run {run_dir}: No space left on device; nothing there was changed")
        return real(run_dir, weights, manifest, history, resume=resume)

    monkeypatch.setattr(training, "save_run", no_room_at_the_end)
    run = tmp_path / "run"
    with pytest.raises(RunWriteError) as caught:
        train(_cfg(sample_dir, 1e-6), run_dir=run)
    assert str(caught.value) == (
        f"cannot write the run {run}: No space left on device; it holds the checkpoint after epoch 3: "
        f"`forecaster train --resume {run}` finishes the run once it can be written"
    )
    assert run_meta(run)["status"] == "interrupted" and run_meta(run)["metrics"]["epochs_run"] == 3
    monkeypatch.setattr(training, "save_run", real)
    res = train(_cfg(sample_dir, 1e-6), run_dir=run, resume=True)
    assert res.manifest.status == "complete" and [r.epoch for r in res.history] == [1, 2, 3, 4]


def test_a_tuned_runs_checkpoints_record_its_study(sample_dir, tmp_path):
    from forecaster.checkpoint import Origin

    origin = Origin(study="s", trial=3, val_loss=0.25, storage="sqlite:///s.db")
    run = tmp_path / "run"
    seen = []
    train(_cfg(sample_dir, 1e-6, epochs=3), run_dir=run, on_epoch=lambda rec: seen.append(_origin(run)), origin=origin)
    assert seen[1:] == [origin.model_dump(mode="json")] * 2 and _origin(run) == origin.model_dump(mode="json")


def _origin(run):
    return run_meta(run).get("origin") if (run / "run.json").is_file() else None


def test_train_best_records_the_study_in_the_runs_checkpoints(monkeypatch):
    from forecaster import tuning
    from forecaster.checkpoint import Origin

    given = {}

    def spy(cfg, **kw):
        given.update(kw)
        raise ValueError("stop here")

    monkeypatch.setattr(tuning, "train", spy)
    best = type("Best", (), {"number": 4, "value": 0.2, "config": load_config(None, {})})()
    result = type("Result", (), {"best": best, "study": "s", "storage": "sqlite:///s.db", "files": {}})()
    with pytest.raises(ValueError, match="stop here"):
        tuning.train_best(result)
    assert given["origin"] == Origin(study="s", trial=4, val_loss=0.2, storage="sqlite:///s.db")


def test_a_new_training_into_an_interrupted_run_says_it_replaces_it(sample_dir, tmp_path, caplog):
    run = tmp_path / "run"
    with pytest.raises(training.Interrupted):
        train(_cfg(sample_dir, 0, epochs=3), run_dir=run, on_epoch=_stop_at(2))
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        train(_cfg(sample_dir, 0, epochs=2), run_dir=run)
    said = [r.getMessage() for r in caplog.records if "holds an interrupted run" in r.getMessage()]
    assert said == [
        f"{run} holds an interrupted run, trained for 2 epochs, which this new training replaces when it ends: to "
        f"continue that run instead, stop this one and run `forecaster train --resume {run}`"
    ]


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_checkpoint_interval_that_is_no_number_of_seconds_is_refused(cli, sample_dir, tmp_path, value):
    data = ["--source", "csv", "--data-dir", sample_dir, "-t", "STOCKA,STOCKB"]
    res = cli("train", *data, "--checkpoint-every", value, "--run-dir", tmp_path / "r")
    assert res.exit_code == 1, res.stderr
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
    assert line.startswith("ERROR: invalid configuration (options): --checkpoint-every: "), line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("key", "value"), [("model.head.bias", np.nan), ("opt.0.exp_avg", np.inf), ("opt.0.exp_avg_sq", -1.0)]
)
def test_a_resume_file_holding_values_that_are_no_finite_numbers_is_refused(sample_dir, tmp_path, key, value):
    """Not trained on to a NaN loss blamed on the learning rate, the interrupted run replaced."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    run = tmp_path / "run"
    with pytest.raises(training.Interrupted):
        train(_cfg(sample_dir, 0, epochs=3), run_dir=run, on_epoch=_stop_at(2))
    path = run / "resume.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors[key] = tensors[key].copy()
    tensors[key].flat[0] = value
    save_file(tensors, str(path), metadata=meta)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(RunFormatError) as caught:
        train(_cfg(sample_dir, 0, epochs=3), run_dir=run, resume=True)
    msg = str(caught.value)
    assert msg.startswith(f"{path} holds values that are not finite numbers") and f"({key})" in msg, msg
    assert msg.endswith("train it again without --resume"), msg
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def _stop_at(epoch):
    def hook(rec):
        if rec.epoch == epoch:
            raise KeyboardInterrupt

    return hook


def test_a_stop_whose_run_cannot_be_saved_says_the_epochs_are_lost(sample_dir, tmp_path, monkeypatch):
    _no_room_for_folders(monkeypatch)
    run = tmp_path / "run"
    with pytest.raises(training.Interrupted) as caught:
        train(_cfg(sample_dir, 0), run_dir=run, on_epoch=_stop_at(2))
    msg = str(caught.value)
    assert msg.startswith("training interrupted after epoch 2, and the resumable run could not be saved (cannot write")
    assert "No space left on device" in msg and msg.endswith(
        "the epochs trained are lost: run the same command again once the run can be written"
    )
    assert caught.value.details["resumable"] is False and caught.value.exit_code == 130
    assert not run.exists()


def test_a_stop_whose_run_cannot_be_saved_points_at_the_last_checkpoint(sample_dir, tmp_path, monkeypatch):
    from forecaster import checkpoint

    real = checkpoint.sibling_temp_dir
    calls = []

    def full_after_2(final_dir):  # the checkpoints of epochs 1 and 2 fit; then the disk is full
        calls.append(final_dir)
        if len(calls) > 2:
            import errno

            raise OSError(errno.ENOSPC, "No space left on device")
        return real(final_dir)

    monkeypatch.setattr(checkpoint, "sibling_temp_dir", full_after_2)
    run = tmp_path / "run"
    with pytest.raises(training.Interrupted) as caught:
        train(_cfg(sample_dir, 1e-6, epochs=6), run_dir=run, on_epoch=_stop_at(4))
    msg = str(caught.value)
    assert "after epoch 4, and the resumable run could not be saved" in msg
    assert msg.endswith(f"{run} holds the resumable run of epoch 2: continue with `forecaster train --resume {run}`")
    assert caught.value.details["resumable"] is True
    assert run_meta(run)["status"] == "interrupted" and run_meta(run)["metrics"]["epochs_run"] == 2


def test_a_stop_whose_run_cannot_be_saved_prints_no_other_runs_figures_as_json(
    cli, sample_dir, trained_run, tmp_path, monkeypatch
):
    """--json of a stop whose save failed: the run directory, not the figures of the earlier run
    still there (not this training's)."""
    import json

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    real_epochs = training.Trainer.epochs

    def stopped(self, *args, **kw):
        for rec in real_epochs(self, *args, **kw):
            yield rec
            raise KeyboardInterrupt

    monkeypatch.setattr(training.Trainer, "epochs", stopped)
    _no_room_for_folders(monkeypatch)
    args = ["--source", "csv", "--data-dir", sample_dir, "-t", "STOCKA,STOCKB", "--lookback", "20", "--horizon", "3"]
    args += ["--val-days", "100", "--test-days", "100", "--model", "gru", "--hidden-size", "8", "--epochs", "3"]
    res = cli("train", *args, "--run-dir", run, "--json")
    assert res.exit_code == 130, res.stderr
    doc = json.loads(res.stdout)
    assert doc == {
        "run_dir": str(run),
        "name": "run",
        "resumable": False,
        "interrupted": True,
        "message": doc["message"],
    }
    assert "could not be saved" in doc["message"] and run_meta(run)["status"] == "complete"


def test_a_run_whose_files_cannot_reach_the_disk_leaves_the_run_that_was_there(trained_run, tmp_path, monkeypatch):
    """Every file of a run is flushed to the disk before the run is put in place: a disk that
    fails at the flush is a RunWriteError, the run already in the folder stays as it was, and
    no temporary folder is left beside it."""
    from forecaster.checkpoint import read_manifest, read_weights, save_run

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    manifest = read_manifest(trained_run).model_copy(update={"status": "interrupted"})

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(RunWriteError, match=f"cannot write the run {run}: No space left on device; nothing"):
        save_run(run, read_weights(trained_run), manifest, [])
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_an_interrupted_runs_training_state_reads_back_as_it_was_saved(trained_run, tmp_path):
    """What training goes on from after an interruption (the weights, the best epoch's, the
    optimiser's slots, the random generators, the bars' hashes) reads back whole."""
    from forecaster.checkpoint import ResumeState, read_manifest, read_resume, read_weights, save_run
    from forecaster.npinfer import config_shapes

    weights = read_weights(trained_run)
    history = pd.read_csv(trained_run / "history.csv").to_dict("records")
    rng = np.random.default_rng(0)
    meta = read_manifest(trained_run)  # the optimiser's slots go by the parameters' order, the state dict's
    order = list(config_shapes(meta.config, len(meta.features.names), len(meta.tickers)))
    saved = ResumeState(
        epoch=len(history),
        best_val=0.25,
        stale=1,
        model=weights,
        best={k: v + 1 for k, v in weights.items()},
        optimizer={i: {"exp_avg": rng.normal(size=weights[k].shape).astype(np.float32)} for i, k in enumerate(order)},
        param_groups=[
            {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-4, "params": list(range(len(weights)))}
        ],
        scheduler={"best": 0.25, "num_bad_epochs": 1},
        generator=rng.integers(0, 255, 16, dtype=np.uint8),
        torch_rng=rng.integers(0, 255, 32, dtype=np.uint8),
        cuda_rng=rng.integers(0, 255, 8, dtype=np.uint8),
        fitted_on={"STOCKA": "a1", "STOCKB": "b2"},
    )
    run = tmp_path / "run"
    save_run(run, weights, read_manifest(trained_run).model_copy(update={"status": "interrupted"}), history, saved)
    got, got_history = read_resume(run)
    assert (got.epoch, got.best_val, got.stale) == (saved.epoch, saved.best_val, saved.stale)
    assert (got.param_groups, got.scheduler, got.fitted_on) == (saved.param_groups, saved.scheduler, saved.fitted_on)
    for name in ("model", "best"):
        want, have = getattr(saved, name), getattr(got, name)
        assert have.keys() == want.keys() and all(np.array_equal(have[k], want[k]) for k in want), name
    assert got.optimizer.keys() == saved.optimizer.keys()
    assert all(np.array_equal(got.optimizer[i]["exp_avg"], s["exp_avg"]) for i, s in saved.optimizer.items())
    for name in ("generator", "torch_rng", "cuda_rng"):
        assert np.array_equal(getattr(got, name), getattr(saved, name)), name
    assert got_history == history


def test_a_folder_holding_other_files_is_no_place_to_write_a_run(trained_run, tmp_path):
    """A run replaces the whole folder it is written to: a folder holding anything but a run
    is refused before anything is written, its files kept; an empty folder is taken."""
    from forecaster.checkpoint import read_manifest, read_weights, save_run

    weights, manifest = read_weights(trained_run), read_manifest(trained_run)
    notes = tmp_path / "notes"
    notes.mkdir()
    for name in ("a.md", "b.md", "c.md", "d.md"):
        (notes / name).write_text(f"notes {name}")
    with pytest.raises(RunFormatError) as e:
        save_run(notes, weights, manifest, [])
    assert str(e.value) == (
        f"{notes} is not a run directory (it holds a.md, b.md, c.md and 1 more): writing a run there would "
        "replace all of it; choose a new or empty run directory"
    )
    assert {p.name: p.read_text() for p in notes.iterdir()} == {
        n: f"notes {n}" for n in ("a.md", "b.md", "c.md", "d.md")
    }
    empty = tmp_path / "empty"
    empty.mkdir()
    save_run(empty, weights, manifest, [])
    assert (empty / "run.json").is_file()


def test_a_run_name_may_take_up_to_200_bytes():
    """The name becomes a folder of forecasts: up to 200 bytes in UTF-8, however many characters."""
    from forecaster.checkpoint import unusable_run_name

    assert unusable_run_name("r" * 200) is None
    assert unusable_run_name("\u00e9" * 100) is None  # 2 bytes each
    for name in ("r" * 201, "\u00e9" * 100 + "r"):
        assert unusable_run_name(name) == f"unusable run name {ascii(name[:40])}: it must be a plain folder name"


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        pytest.param(
            lambda m: m.update(median_weight=[0.5, 1.5, 0.5]),
            "median_weight is not 3 weights from 0 to 1",
            id="median weight above 1",
        ),
        pytest.param(
            lambda m: m.update(median_weight=[0.5, -0.1, 0.5]),
            "median_weight is not 3 weights from 0 to 1",
            id="median weight below 0",
        ),
        pytest.param(
            lambda m: m["features"].update(
                names=["ret", "range", "body", "dvol", "rvol", "zret", "dow_cos", "dow_sin"]
            ),
            "with the calendar pair last",
            id="calendar pair swapped",
        ),
        pytest.param(
            lambda m: m["tickers"]["STOCKB"].update(id=0),
            "is malformed: ticker ids are not 0..1, one each (STOCKA and STOCKB both have id 0)",
            id="ticker id twice",
        ),
        pytest.param(
            lambda m: m["tickers"]["STOCKB"].update(id=2),
            "is malformed: ticker ids are not 0..1, one each (STOCKB has id 2)",
            id="ticker id out of range",
        ),
    ],
)
def test_a_run_whose_parts_disagree_is_refused_saying_which(run_copy, edit, fragment):
    """What run.json says about its steps and features must agree with the rest before any forecast
    is made from it."""
    from forecaster.checkpoint import load_run

    path = run_copy / "run.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(RunFormatError) as e:
        load_run(run_copy)
    assert fragment in str(e.value)


def test_a_run_whose_config_no_longer_validates_is_one_line_naming_the_key_in_every_command(cli, run_copy):
    """A run.json whose config holds a key this forecaster does not know (a hand edit, or a newer
    forecaster's setting): info, predict and evaluate each refuse it in one line naming the key."""
    from support import assert_one_line_error

    path = run_copy / "run.json"
    meta = json.loads(path.read_text())
    meta["config"]["train"]["newer_setting"] = 1
    path.write_text(json.dumps(meta))
    said = f"{path} is malformed: config.train.newer_setting: unknown key"
    for command in (["info", run_copy], ["predict", "--run", run_copy, "--offline"], ["evaluate", "--run", run_copy]):
        assert_one_line_error(cli(*command), 1, said)


def test_a_ticker_asked_for_twice_is_forecast_once(trained_run):
    from forecaster.checkpoint import load_run

    run = load_run(trained_run)
    assert run.select("stockb, STOCKA, STOCKB") == ["STOCKB", "STOCKA"]
    assert run.select(None) == ["STOCKA", "STOCKB"]


def test_a_resume_refuses_an_epoch_history_longer_than_its_saved_state(trained_run, tmp_path):
    """history.csv must hold exactly the epochs the resume state was saved after: a row more
    (a later epoch's, whose state was not saved) would be counted as trained."""
    from forecaster.checkpoint import ResumeState, read_manifest, read_resume, read_weights, save_run

    history = pd.read_csv(trained_run / "history.csv").to_dict("records")
    weights = read_weights(trained_run)
    state = ResumeState(
        epoch=len(history) - 1,
        best_val=0.25,
        stale=0,
        model=weights,
        best=None,
        optimizer={},
        param_groups=[],
        scheduler={},
        generator=np.zeros(4, np.uint8),
        torch_rng=None,
    )
    run = tmp_path / "run"
    save_run(run, weights, read_manifest(trained_run).model_copy(update={"status": "interrupted"}), history, state)
    with pytest.raises(RunFormatError, match=f"does not hold epochs 1 to {len(history) - 1}, which resume.safetensors"):
        read_resume(run)


def _out_of_memory_at(monkeypatch, epoch: int):
    """The device runs out of memory as ``epoch`` starts (what a GPU's allocator raises)."""
    real = training.Trainer._epoch

    def epoch_or_oom(self, *args, **kwargs):
        if self.epoch + 1 == epoch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(training.Trainer, "_epoch", epoch_or_oom)


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_device_out_of_memory_keeps_a_new_runs_epochs_to_resume_on_the_cpu(sample_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _out_of_memory_at(monkeypatch, 3)
    with pytest.raises(TrainingError, match="ran out of memory in epoch 3") as err:
        train(_cfg(sample_dir, 1e-6), run_dir=run)  # checkpointed after each epoch, as a failure takes away
    msg = str(err.value)
    assert "the 2 epoch(s) trained were saved" in msg and "--device cpu" in msg and "\n" not in msg
    meta = run_meta(run)
    assert meta["status"] == "interrupted" and meta["metrics"]["epochs_run"] == 2
    monkeypatch.undo()
    done = train(_cfg(sample_dir, 0), run_dir=run, resume=True)
    assert [r.epoch for r in done.history] == [1, 2, 3, 4] and run_meta(run)["status"] == "complete"


def test_a_device_out_of_memory_in_the_first_epoch_leaves_nothing(sample_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _out_of_memory_at(monkeypatch, 1)
    with pytest.raises(TrainingError, match=r"ran out of memory in epoch 1 .*smaller --batch-size"):
        train(_cfg(sample_dir, 0), run_dir=run)
    assert not run.exists()


def test_a_device_out_of_memory_leaves_a_run_in_the_folder_whole(sample_dir, tmp_path, monkeypatch, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = _files(run)
    _out_of_memory_at(monkeypatch, 3)
    with pytest.raises(TrainingError, match=r"ran out of memory in epoch 3 .*smaller --batch-size") as err:
        train(_cfg(sample_dir, 0), run_dir=run)
    assert "saved" not in str(err.value)
    assert _files(run) == before


def test_a_device_out_of_memory_while_resuming_is_not_called_a_bad_file(sample_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"

    def stop(rec):
        raise KeyboardInterrupt

    with pytest.raises(training.Interrupted):
        train(_cfg(sample_dir, 0), run_dir=run, on_epoch=stop)
    before = _files(run)

    def no_room(self, state):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(training.Trainer, "restore", no_room)
    with pytest.raises(TrainingError, match="ran out of memory loading the state to resume") as err:
        train(_cfg(sample_dir, 0), run_dir=run, resume=True)
    assert "cannot be loaded" not in str(err.value) and "--device cpu" in str(err.value)
    assert _files(run) == before


def test_a_device_out_of_memory_keeps_nothing_of_a_training_without_checkpoints(sample_dir, tmp_path, monkeypatch):
    """A tuning trial's or a retrain challenger's run goes with it: it is not kept to resume."""
    run = tmp_path / "run"
    _out_of_memory_at(monkeypatch, 3)
    with pytest.raises(TrainingError, match=r"ran out of memory in epoch 3 .*smaller --batch-size") as err:
        train(_cfg(sample_dir, 1e-6), run_dir=run, checkpoints=False)
    assert "saved" not in str(err.value) and not run.exists()


def _no_room_after(monkeypatch, fits: int):
    """The disk fills up once ``fits`` runs have been written: each write after them is a
    RunWriteError, the run already in the folder left as it was."""
    real = training.save_run
    writes = []

    def no_room(run_dir, weights, manifest, history, resume=None):
        writes.append(manifest.metrics.epochs_run)
        if len(writes) > fits:
            raise RunWriteError(f"cannot write the run {run_dir}: No space left on device; nothing there was changed")
        return real(run_dir, weights, manifest, history, resume=resume)

    monkeypatch.setattr(training, "save_run", no_room)
    return writes


def _interrupted_after_1(sample_dir, run):
    with pytest.raises(training.Interrupted):
        train(_cfg(sample_dir, 0), run_dir=run, on_epoch=_stop_at(1))
    assert run_meta(run)["status"] == "interrupted" and run_meta(run)["metrics"]["epochs_run"] == 1
    return _files(run)


def test_a_device_out_of_memory_whose_epochs_cannot_be_saved_keeps_the_last_checkpoint(
    sample_dir, tmp_path, monkeypatch
):
    """Out of memory on a full disk: the checkpoint written before the disk filled is what the
    epochs left, kept to resume on the CPU, not taken away with the failed training."""
    run = tmp_path / "run"
    _out_of_memory_at(monkeypatch, 4)
    writes = _no_room_after(monkeypatch, 2)  # the checkpoints of epochs 1 and 2
    with pytest.raises(TrainingError) as err:
        train(_cfg(sample_dir, 1e-6), run_dir=run)
    assert writes == [1, 2, 3, 3]  # the third checkpoint, then the epochs kept at the failure
    assert str(err.value) == (
        "cpu ran out of memory in epoch 4 (CUDA out of memory. Tried to allocate 2.00 GiB); the 3 epoch(s) trained "
        f"could not be saved (cannot write the run {run}: No space left on device), and {run} holds the resumable "
        f"run of epoch 2: continue it on the CPU with `forecaster train --resume {run} --device cpu`"
    )
    assert run_meta(run)["status"] == "interrupted" and run_meta(run)["metrics"]["epochs_run"] == 2
    monkeypatch.undo()
    done = train(_cfg(sample_dir, 0), run_dir=run, resume=True)
    assert [r.epoch for r in done.history] == [1, 2, 3, 4] and run_meta(run)["status"] == "complete"


def test_a_device_out_of_memory_whose_epochs_cannot_be_saved_and_no_checkpoint_says_so(
    sample_dir, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    _out_of_memory_at(monkeypatch, 3)
    _no_room_after(monkeypatch, 0)
    with pytest.raises(TrainingError) as err:
        train(_cfg(sample_dir, 1e-6), run_dir=run)
    assert str(err.value).endswith(
        f"; the 2 epoch(s) trained could not be saved (cannot write the run {run}: No space left on device): "
        "train again with a smaller --batch-size, or on the CPU (--device cpu)"
    )
    assert not run.exists()


def test_a_resumed_run_out_of_memory_whose_epochs_cannot_be_saved_is_left_to_resume(
    cli, sample_dir, tmp_path, monkeypatch
):
    """A run resumed, out of memory on a full disk: the run resumed is still in its folder, and
    the line says to resume it (on the CPU), not to train it again, which would lose its epochs."""
    run = tmp_path / "run"
    before = _interrupted_after_1(sample_dir, run)
    _out_of_memory_at(monkeypatch, 3)
    _no_room_after(monkeypatch, 0)
    res = cli("train", "--resume", run, "--checkpoint-every", "0.000001", "-q")
    assert res.exit_code == 1, res.stderr
    assert res.stderr.splitlines()[-1] == (
        "ERROR: cpu ran out of memory in epoch 3 (CUDA out of memory. Tried to allocate 2.00 GiB); the 2 epoch(s) "
        f"trained could not be saved (cannot write the run {run}: No space left on device), and {run} holds the "
        f"resumable run of epoch 1: continue it on the CPU with `forecaster train --resume {run} --device cpu`"
    )
    assert _files(run) == before


def test_a_resumed_run_that_cannot_be_written_names_the_run_resumed_to_finish_it(
    sample_dir, tmp_path, monkeypatch, caplog
):
    """Resumed on a full disk: no checkpoint and no finished run can be written, and what the
    folder holds, the run as it was resumed, is named with the --resume that finishes it."""
    run = tmp_path / "run"
    before = _interrupted_after_1(sample_dir, run)
    _no_room_after(monkeypatch, 0)
    with caplog.at_level(logging.WARNING, logger="forecaster"), pytest.raises(RunWriteError) as err:
        train(_cfg(sample_dir, 1e-6), run_dir=run, resume=True)
    assert str(err.value) == (
        f"cannot write the run {run}: No space left on device; it holds the run resumed, after epoch 1: "
        f"`forecaster train --resume {run}` finishes the run once it can be written"
    )
    said = [r.getMessage() for r in caplog.records if "No space left on device" in r.getMessage()]
    assert len(said) == 1
    assert said[0].endswith(
        "training goes on, and a process killed now resumes from epoch 1, where this training resumed the run"
    )
    assert _files(run) == before
    monkeypatch.undo()
    done = train(_cfg(sample_dir, 0), run_dir=run, resume=True)
    assert [r.epoch for r in done.history] == [1, 2, 3, 4] and run_meta(run)["status"] == "complete"


def test_a_run_folder_that_cannot_be_read_since_training_began_is_a_checkpoint_not_written(
    sample_dir, tmp_path, monkeypatch, caplog
):
    """The run's folder made unreadable after a checkpoint (its permissions changed): the next
    checkpoints are one warning and training goes on, as on a full disk; at the end, the
    checkpoint that is there is named to finish the run from once the folder can be read."""
    from forecaster import checkpoint

    run = tmp_path / "run"
    real = checkpoint.check_run_target

    def unreadable_once_written(run_dir):
        if (run_dir / "run.json").exists():
            raise PermissionError(errno.EACCES, "Permission denied", str(run_dir / "run.json"))
        real(run_dir)

    monkeypatch.setattr(checkpoint, "check_run_target", unreadable_once_written)
    with caplog.at_level(logging.WARNING, logger="forecaster"), pytest.raises(RunWriteError) as err:
        train(_cfg(sample_dir, 1e-6), run_dir=run)
    assert str(err.value) == (
        f"cannot write the run {run}: Permission denied; it holds the checkpoint after epoch 1: "
        f"`forecaster train --resume {run}` finishes the run once it can be written"
    )
    said = [r.getMessage() for r in caplog.records if "Permission denied" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith(
        "training goes on, and a process killed now resumes from the checkpoint after epoch 1"
    )
    assert run_meta(run)["status"] == "interrupted" and run_meta(run)["metrics"]["epochs_run"] == 1


def test_a_device_out_of_memory_right_after_a_checkpoint_keeps_it_without_writing_it_again(
    sample_dir, tmp_path, monkeypatch
):
    """The checkpoint after epoch 2 holds every epoch trained when epoch 3 runs out of memory:
    it is kept as it is, so a disk that has filled up since costs nothing."""
    run = tmp_path / "run"
    _out_of_memory_at(monkeypatch, 3)
    writes = _no_room_after(monkeypatch, 2)
    with pytest.raises(TrainingError) as err:
        train(_cfg(sample_dir, 1e-6), run_dir=run)
    assert writes == [1, 2]
    assert f"; the 2 epoch(s) trained were saved to {run} as a resumable run: continue it on the CPU" in str(err.value)
    assert run_meta(run)["status"] == "interrupted" and run_meta(run)["metrics"]["epochs_run"] == 2
