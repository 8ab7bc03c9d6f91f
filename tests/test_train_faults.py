"""Interrupting, resuming, locking and distributing training."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from support import BIN, ROOT, SLOW_TEST_TIMEOUT_S, cli_env, free_port, run_meta, start_forecaster, tiny_overrides

from forecaster.config import load_config
from forecaster.errors import LockBusy
from forecaster.fsio import file_lock
from forecaster.store import load_bars
from forecaster.training import Trainer, new_model, seed_everything, train
from forecaster.windows import build_windows, make_splits


def _trainer(sample_dir, epochs, mode="forking", patience=50):
    over = {"train.epochs": epochs, "train.patience": patience, "train.mode": mode}
    cfg = load_config(None, tiny_overrides(sample_dir, **over))
    bars = load_bars("csv", sample_dir, ["STOCKA", "STOCKB"])
    ws = build_windows(
        bars, cfg.window.lookback, cfg.window.horizon, make_splits(bars, cfg.window.val_days, cfg.window.test_days)
    )
    seed_everything(cfg.train.seed)
    return Trainer(new_model(cfg, ws), ws, cfg, torch.device("cpu")), ws


@pytest.mark.parametrize("mode", ["forking", "window"])
def test_resuming_continues_exactly_where_training_stopped(sample_dir, mode):
    straight, ws = _trainer(sample_dir, 4, mode)
    recs = list(straight.epochs(ws.ends("train"), ws.ends("val")))
    interrupted, ws2 = _trainer(sample_dir, 4, mode)
    it = interrupted.epochs(ws2.ends("train"), ws2.ends("val"))
    first = [next(it), next(it)]  # two epochs, then "killed"
    saved = interrupted.state()
    # whatever the interrupted process would have drawn next is gone with it
    torch.manual_seed(12345)
    interrupted.gen.manual_seed(999)
    resumed, ws3 = _trainer(sample_dir, 4, mode)
    resumed.restore(saved)
    rest = list(resumed.epochs(ws3.ends("train"), ws3.ends("val")))
    assert [r.epoch for r in first + rest] == [1, 2, 3, 4]
    assert [r.val_loss for r in first + rest] == pytest.approx([r.val_loss for r in recs], rel=1e-6)
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v)


def test_a_resumed_runs_patience_applies_to_the_learning_rate_schedule_too(sample_dir):
    """``train --resume --patience N``: early stopping and the halving of the learning rate both
    go by N, not the halving by the interrupted run's patience (saved in the scheduler's state)."""
    first, ws = _trainer(sample_dir, 3, patience=12)
    next(first.epochs(ws.ends("train"), ws.ends("val")))
    assert first.sched.patience == 6
    resumed, _ = _trainer(sample_dir, 3, patience=4)
    resumed.restore(first.state())
    assert resumed.sched.patience == 2
    assert resumed.sched.state_dict()["patience"] == 2


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_resumable_run_and_resume_finishes_it(sample_dir, tmp_path, sig):
    run = tmp_path / "run"
    args = [
        "train",
        "--source",
        "csv",
        "--data-dir",
        str(sample_dir),
        "--tickers",
        "STOCKA,STOCKB",
        "--lookback",
        "20",
        "--horizon",
        "3",
        "--val-days",
        "100",
        "--test-days",
        "100",
        "--hidden-size",
        "8",
        "--model",
        "gru",
        "--epochs",
        "500",
        "--patience",
        "500",
        "--run-dir",
        str(run),
    ]
    p = start_forecaster(*args)
    deadline = time.time() + 120
    seen = ""
    while time.time() < deadline:  # wait for the second epoch's log line, then interrupt
        line = p.stderr.readline()
        seen += line
        if "epoch 2:" in line:
            break
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, seen + err
    assert "--resume" in err and "Traceback" not in err
    meta = run_meta(run)
    assert meta["status"] == "interrupted"
    done = meta["metrics"]["epochs_run"]
    assert done >= 2 and (run / "resume.safetensors").is_file()
    load_file(str(run / "model.safetensors"))  # a loadable weights file
    # an interrupted run is refused for forecasting, with the way out in the message
    p = start_forecaster("predict", "--run", run, "--offline", "--out", tmp_path / "fc")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1 and "--resume" in err
    # resuming finishes it: epochs continue from where they stopped
    p = start_forecaster("train", "--resume", run, "--epochs", done + 2)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    meta = run_meta(run)
    assert meta["status"] == "complete" and not (run / "resume.safetensors").exists()
    hist = pd.read_csv(run / "history.csv")
    assert list(hist["epoch"]) == list(range(1, done + 3))


def test_resume_of_a_complete_run_is_refused(trained_run, run_copy):
    p = start_forecaster("train", "--resume", run_copy)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1 and "nothing to resume" in err


def test_second_training_into_the_same_run_waits_then_exits_75(sample_dir, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(sample_dir))
    with file_lock(tmp_path / ".run.lock"):
        with pytest.raises(LockBusy, match="pid"):
            train(cfg, run_dir=run, lock_timeout=0.2)
    assert not run.exists()


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_torchrun_two_cpu_processes(sample_dir, tmp_path):
    """DistributedDataParallel with gloo: one valid run, written once, validation improving."""
    run = tmp_path / "ddp"
    env = cli_env(OMP_NUM_THREADS="1")
    cmd = [
        str(BIN / "torchrun"),
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        "-m",
        "forecaster",
        "train",
        "--source",
        "csv",
        "--data-dir",
        str(sample_dir),
        "--tickers",
        "STOCKA,STOCKB",
        "--lookback",
        "20",
        "--horizon",
        "3",
        "--val-days",
        "100",
        "--test-days",
        "100",
        "--hidden-size",
        "16",
        "--model",
        "lstm",
        "--epochs",
        "4",
        "--lr",
        "0.003",
        "--run-dir",
        str(run),
        "--quiet",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = run_meta(run)
    assert meta["world_size"] == 2 and meta["status"] == "complete"
    hist = pd.read_csv(run / "history.csv")
    assert len(hist) == 4
    assert hist["val_loss"].iloc[-1] < hist["val_loss"].iloc[0]
    # each epoch saw (almost) every training origin once across the two ranks: the ranks take
    # equal shares of the chunks of origins, so at most one chunk is left over
    assert meta["config"]["train"]["mode"] == "forking"
    assert 0 <= meta["windows"]["train"] - hist["samples"].min() <= meta["config"]["train"]["chunk"]
    # only one writer: no stray temporary directories next to the run
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ddp.") and "lock" not in p.name] == []
    from forecaster.prediction import predict

    out = predict(run, offline=True, out=tmp_path / "fc").forecasts
    assert np.isfinite(out[["p10", "p50", "p90"]].to_numpy()).all()


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_torchrun_with_fewer_chunks_than_processes_is_refused(small_dir, tmp_path):
    """One chunk of training origins for two processes: neither would train, so the job is
    refused before training, naming why, and no run is written."""
    run = tmp_path / "ddp"
    cmd = [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "forecaster"]
    cmd += ["train", "--source", "csv", "--data-dir", str(small_dir), "-t", "STOCKB", "--lookback", "20"]
    cmd += ["--horizon", "3", "--val-days", "100", "--test-days", "100", "--hidden-size", "8", "--epochs", "1"]
    cmd += ["--chunk", "1000", "--run-dir", str(run), "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(OMP_NUM_THREADS="1"), timeout=300)
    assert res.returncode != 0, res.stderr[-3000:]
    assert "1 chunks of training origins (--chunk 1000) cannot be shared among 2 processes" in res.stderr
    assert not run.exists()


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_a_distributed_job_that_loses_a_process_keeps_the_epochs_trained(small_dir, tmp_path):
    """Rank 1 dies after its third epoch: rank 0's next collective failed with gloo's
    "Connection reset by peer", an 'unexpected error' that lost every epoch trained. Now rank
    0 saves them as a resumable run and says so once, whichever reaches it first: the broken
    collective or torchrun stopping it."""
    run = tmp_path / "ddp"
    cmd = [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "forecaster"]
    cmd += ["train", "--source", "csv", "--data-dir", str(small_dir), "-t", "STOCKA,STOCKB", "--lookback", "20"]
    cmd += ["--horizon", "3", "--val-days", "100", "--test-days", "100", "--hidden-size", "8", "--epochs", "50"]
    cmd += ["--patience", "50", "--chunk", "16", "--run-dir", str(run), "--quiet"]
    hooks = Path(__file__).parent / "fault_hooks"
    env = cli_env(
        OMP_NUM_THREADS="1",
        FORECASTER_TEST_RANK_DIES="1:3",
        PYTHONPATH=os.pathsep.join(map(str, (ROOT, hooks, Path(__file__).parent))),
    )
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode != 0
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
    assert len(errors) == 1 and "a resumable run was saved to" in errors[0], res.stderr[-3000:]
    assert "unexpected error" not in res.stderr
    meta = run_meta(run)
    assert meta["status"] == "interrupted" and meta["metrics"]["epochs_run"] >= 3
    assert (run / "resume.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
@pytest.mark.parametrize("rank_reads", ["older bars", "no bars"])
def test_a_distributed_job_whose_processes_read_different_data_is_refused_by_every_one(small_dir, tmp_path, rank_reads):
    """Rank 1 reads its own copy of the data. A stale one (STOCKB's last 60 sessions missing)
    trained without a word, the ranks' steps paired wrongly, and the run was written as
    complete. One it cannot read at all made it exit at once while rank 0 waited for it in
    the process group until gloo's timeout (30 minutes). Now every process refuses the job."""
    own = tmp_path / "node-b"
    own.mkdir()
    if rank_reads == "older bars":
        for f in small_dir.glob("*.csv"):
            rows = f.read_text().splitlines(keepends=True)
            (own / f.name).write_text("".join(rows[:-60] if f.stem == "STOCKB" else rows))
    run = tmp_path / "ddp"
    cmd = [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "forecaster"]
    cmd += ["train", "--source", "csv", "--data-dir", str(small_dir), "-t", "STOCKA,STOCKB", "--lookback", "20"]
    cmd += ["--horizon", "3", "--val-days", "100", "--test-days", "100", "--hidden-size", "8", "--epochs", "2"]
    cmd += ["--run-dir", str(run), "--quiet", "--json"]
    hooks = Path(__file__).parent / "fault_hooks"
    env = cli_env(
        OMP_NUM_THREADS="1",
        FORECASTER_TEST_RANK_DATA=f"1:{own}",
        PYTHONPATH=os.pathsep.join(map(str, (ROOT, hooks, Path(__file__).parent))),
    )
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode == 1, res.stderr[-3000:]
    errors = sorted(ln for ln in res.stderr.splitlines() if ln.startswith("ERROR"))
    if rank_reads == "older bars":
        assert len(errors) == 2 and all("the processes of the distributed job read different bars" in e for e in errors)
    else:
        assert len(errors) == 2, res.stderr[-3000:]
        assert "STOCKA: no CSV file" in errors[0]  # rank 1's own
        assert "another process of the distributed job could not read its data" in errors[1]
    assert json.loads(res.stdout)["error"]  # rank 0's, alone
    assert not run.exists()


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_a_distributed_job_warns_of_its_data_once(small_dir, tmp_path):
    """Every process reads the same bars: each printed the same warnings, on stderr and in the
    log file, once per process."""
    data = tmp_path / "data"
    data.mkdir()
    for f in small_dir.glob("*.csv"):
        shutil.copy(f, data / f.name)
    rows = (small_dir / "STOCKA.csv").read_text().splitlines(keepends=True)
    (data / "SHORT.csv").write_text("".join(rows[:-250]))  # its bars end before the validation split
    run, log_file = tmp_path / "ddp", tmp_path / "train.log"
    cmd = [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "forecaster"]
    cmd += ["train", "--source", "csv", "--data-dir", str(data), "-t", "STOCKA,STOCKB,SHORT", "--lookback", "20"]
    cmd += ["--horizon", "3", "--val-days", "100", "--test-days", "100", "--hidden-size", "8", "--epochs", "1"]
    cmd += ["--run-dir", str(run), "--quiet", "--log-file", str(log_file)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(OMP_NUM_THREADS="1"), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    said = [ln for ln in res.stderr.splitlines() if "SHORT: no validation windows" in ln]
    assert len(said) == 1 and said[0].startswith("WARNING"), res.stderr[-3000:]
    assert sum("SHORT: no validation windows" in ln for ln in log_file.read_text().splitlines()) == 1
    assert run_meta(run)["no_validation"]["SHORT"]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_distributed_job_prints_one_json_document_and_other_ranks_no_interruption_line(
    cli, small_dir, tmp_path, monkeypatch, rank
):
    """Every process of a job refusing the same bad config printed its --json error object on
    the job's one stdout: two documents, not JSON. A Ctrl-C while the config is read, which
    reaches every process, printed its line once per process. Rank 0 alone does both now."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    args = ["train", "--source", "csv", "--data-dir", small_dir, "-t", "STOCKA", "--horizon", "3", "--val-days", "2"]
    res = cli(*args, "--run-dir", tmp_path / "run", "--json")
    assert res.exit_code == 1
    assert "val_days" in res.stderr  # each process says why it stopped
    assert (res.stdout != "") == (rank == "0")
    if rank == "0":
        assert json.loads(res.stdout)["exit_code"] == 1

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("forecaster.config.load_config", stopped)
    res = cli(*args, "--run-dir", tmp_path / "run")
    assert res.exit_code == 130
    assert (res.stderr != "") == (rank == "0")


def test_another_rank_of_a_training_whose_log_file_cannot_be_opened_prints_no_json(cli, tmp_path, monkeypatch):
    """That error comes before the command's work starts: the rank was not known yet there."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    (tmp_path / "f").touch()
    for rank, printed in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        res = cli("train", "-t", "STOCKA", "--log-file", tmp_path / "f" / "x.log", "--json")
        assert res.exit_code == 1 and "cannot write the log file" in res.stderr
        assert (res.stdout != "") == printed


def test_a_command_other_than_train_where_a_job_runner_sets_rank_prints_its_json(cli, tmp_path, monkeypatch):
    """Some job runners set WORLD_SIZE and RANK for every process: a predict there is no rank
    of a training job, and keeps its --json error document."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    res = cli("predict", "--run", tmp_path / "nothing", "--json")
    assert res.exit_code == 1 and json.loads(res.stdout)["exit_code"] == 1


def _stop_while_reading(monkeypatch):
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("forecaster.training.load_training_data", stopped)


def _stop_after_the_epochs(monkeypatch):
    def stopped(self):
        raise KeyboardInterrupt

    monkeypatch.setattr("forecaster.training.Trainer.restore_best", stopped)


@pytest.mark.parametrize("stop", [_stop_while_reading, _stop_after_the_epochs])
@pytest.mark.parametrize("json_out", [False, True])
def test_an_interrupted_distributed_training_says_so_once_from_rank_0(
    cli, small_dir, tmp_path, monkeypatch, stop, json_out
):
    """Under torchrun every process is stopped, but only rank 0 saves the run: it alone says
    what was left (the line, or --json's document); another rank exits 130 without a word, so
    the job's output holds the line once, not once per process. A rank is what torchrun's
    RANK says (here a rank without a job, so that no process group is needed)."""
    from forecaster import training

    monkeypatch.setattr(training.Dist, "main", property(lambda self: self.rank == 0))
    stop(monkeypatch)
    run = tmp_path / "run"
    args = ["train", "--source", "csv", "--data-dir", small_dir, "-t", "STOCKA,STOCKB", "--lookback", "20"]
    args += ["--horizon", "3", "--val-days", "100", "--test-days", "100", "--hidden-size", "8", "--epochs", "1"]
    args += ["--run-dir", run] + (["--json"] if json_out else [])
    monkeypatch.setenv("RANK", "1")
    res = cli(*args)
    assert res.exit_code == 130, res.stderr
    assert res.stderr == "" and res.stdout == ""
    assert not run.exists()
    monkeypatch.setenv("RANK", "0")
    res = cli(*args)
    assert res.exit_code == 130, res.stderr
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
    assert "training interrupted" in line
    if json_out:
        assert json.loads(res.stdout)["interrupted"] is True
