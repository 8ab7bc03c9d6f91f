import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support import ROOT, drop_a_stop_signal, python_env, run_meta, tiny_overrides

from forecaster.config import load_config
from forecaster.errors import ConfigError, DataError, RunFormatError, TrainingError
from forecaster.training import fit, new_model, resolve_device, seed_everything, train
from forecaster.windows import build_windows, make_splits


def test_seed_everything_makes_torch_and_numpy_repeat():
    seed_everything(3)
    a = (torch.rand(3), np.random.rand(3))
    seed_everything(3)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_same_seed_same_forecasts_different_seed_different(sample_dir, tmp_path):
    from forecaster.prediction import predict

    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        cfg = load_config(None, tiny_overrides(sample_dir, **{"train.seed": seed, "train.epochs": 1}))
        train(cfg, run_dir=tmp_path / name)
        runs[name] = predict(tmp_path / name, offline=True, out=tmp_path / "out").forecasts
    cols = ["p10", "p50", "p90"]
    pd.testing.assert_frame_equal(runs["a"][cols], runs["b"][cols])
    assert not np.allclose(runs["a"][cols].to_numpy(float), runs["c"][cols].to_numpy(float))


def _leaves(node, path=""):
    """Every value of a parsed ``run.json`` by its dotted path (list items by their index)."""
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in _leaves(sub, f"{path}.{key}" if path else key).items()}
    if isinstance(node, list):
        return {k: v for i, sub in enumerate(node) for k, v in _leaves(sub, f"{path}[{i}]").items()}
    return {path: node}


def test_the_readme_names_all_that_differs_between_two_trainings_of_one_seed(sample_dir, tmp_path):
    """Users compare two runs of the same bars, configuration and seed file by file: the weights
    are the same byte for byte, and the README's "Reproducibility" names every field of
    ``run.json`` and column of ``history.csv`` that still differs (the clock's)."""
    cfg = load_config(None, tiny_overrides(sample_dir, **{"train.epochs": 1}))
    runs = []
    for _ in range(2):  # into one folder, as a training repeated to check it is
        train(cfg, run_dir=tmp_path / "run")
        files = {f: (tmp_path / "run" / f).read_bytes() for f in ("model.safetensors", "run.json", "history.csv")}
        runs.append(files)
    a, b = runs
    assert a["model.safetensors"] == b["model.safetensors"]
    first, second = (_leaves(json.loads(r["run.json"])) for r in runs)
    assert first.keys() == second.keys()
    fields = sorted(k for k in first if first[k] != second[k])
    rows = [list(csv.DictReader(r["history.csv"].decode().splitlines())) for r in runs]
    columns = sorted({c for x, y in zip(*rows) for c in x if x[c] != y[c]})
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Reproducibility\n", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`([^`]+)`", section.split("\n\n", 1)[0])
    assert all(f in named for f in fields), (fields, named)
    assert all(c in named for c in columns), (columns, named)


def test_history_records_every_epoch_with_gradient_norm(trained_run):
    rows = list(csv.DictReader(open(trained_run / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "train_loss", "val_loss", "grad_norm", "lr", "seconds", "samples"}
    for r in rows:
        assert float(r["grad_norm"]) > 0 and math.isfinite(float(r["val_loss"]))
        assert int(r["samples"]) > 0


def _setup(sample_dir, **extra):
    cfg = load_config(None, tiny_overrides(sample_dir, **extra))
    from forecaster.store import load_bars

    bars = load_bars("csv", sample_dir, ["STOCKA", "STOCKB"])
    ws = build_windows(
        bars, cfg.window.lookback, cfg.window.horizon, make_splits(bars, cfg.window.val_days, cfg.window.test_days)
    )
    return cfg, ws


def test_distributed_validation_reads_every_validation_window(sample_dir, monkeypatch, torch_one_thread):
    """Training steps are dealt out in equal shares (each is a collective), but validation's
    loss is a sum across processes: each rank takes its share of every window, none dropped."""
    from forecaster.training import Batches, Dist, Trainer, evaluate_loss

    cfg, ws = _setup(sample_dir)
    ends = ws.ends("val")[:7]
    for rank in range(3):
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("RANK", str(rank))
        dist = Dist()
        assert list(dist.shard(ends, whole=True)) == list(ends[rank::3])
        assert len(dist.shard(ends)) == 2  # training: the seventh is left out, 2 steps each
    seed_everything(0)
    model = new_model(cfg, ws)
    monkeypatch.setenv("RANK", "0")
    dist = Dist()
    monkeypatch.setattr(dist, "sum", lambda *values: list(values))  # this rank's part alone
    trainer = Trainer.__new__(Trainer)  # just what the validation pass reads
    trainer.model, trainer.dist, trainer.cfg, trainer.val_workers = model, dist, cfg, 1
    trainer.batches = Batches(ws, torch.device("cpu"), False)
    mine = evaluate_loss(model, trainer.batches, ends[0::3], cfg.model.quantiles)
    assert trainer._val_loss(ends) == mine  # windows 0, 3 and 6


def test_nan_loss_stops_with_a_clear_error(sample_dir):
    cfg, ws = _setup(sample_dir)
    ws.x[:] = np.nan  # poisoned inputs
    model = new_model(cfg, ws)
    with pytest.raises(TrainingError, match="loss became nan"):
        list(fit(model, ws, cfg, torch.device("cpu"), ws.ends("train"), ws.ends("val")))


def test_nan_during_train_keeps_the_previous_run(sample_dir, run_copy, monkeypatch):
    run = run_copy
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    cfg = load_config(None, tiny_overrides(sample_dir, **{"train.lr": 0.5}))
    import forecaster.models as models

    real = models.pinball_loss
    monkeypatch.setattr("forecaster.training.pinball_loss", lambda p, y, q: real(p, y, q) * float("nan"))
    with pytest.raises(TrainingError):
        train(cfg, run_dir=run)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_nan_loss_after_good_epochs_keeps_the_last_good_checkpoint_as_a_run(sample_dir, tmp_path, monkeypatch):
    """SPEC: a NaN loss stops the run with a clear error and keeps the last good checkpoint.
    The epochs before it were thrown away with the run; now the best of them is calibrated and
    written as a complete run, and the error says so."""
    import json

    import forecaster.models as models
    from forecaster.prediction import predict

    real, done = models.pinball_loss, []

    def nan_after_epoch_2(p, y, q):
        loss = real(p, y, q)
        return loss * float("nan") if len(done) >= 2 else loss

    monkeypatch.setattr("forecaster.training.pinball_loss", nan_after_epoch_2)
    cfg = load_config(None, tiny_overrides(sample_dir, **{"train.epochs": 6}))
    run = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train(cfg, run_dir=run, on_epoch=done.append)
    message = str(info.value)
    assert message.startswith("loss became nan at epoch 3, batch 1: try a lower --lr; "), message
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "complete" and meta["metrics"]["epochs_run"] == 2, meta["metrics"]
    kept = meta["metrics"]["best_epoch"]
    assert f"the last good checkpoint, epoch {kept} (validation loss" in message and str(run) in message, message
    assert predict(run, out=tmp_path / "fc", offline=True).exit_code == 0


def _overflowing(cfg):
    """``cfg`` with a weight decay that the config refuses (lr x weight_decay of 7): the weights
    flip sign and grow until the forward pass overflows while the validation loss is still a
    finite number (1e27), as a learning rate far too high can make them."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"weight_decay": 7000})})


def test_weights_that_forecast_no_finite_price_are_not_written_as_a_run(sample_dir, run_copy):
    """The validation loss stays a finite number (1e27), but the forward pass overflows. No run
    that forecasts nothing is written; the one there is kept."""
    before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    cfg = _overflowing(load_config(None, tiny_overrides(sample_dir, **{"train.epochs": 1})))
    with pytest.raises(TrainingError) as info:
        train(cfg, run_dir=run_copy)
    message = str(info.value)
    assert "forecasts on the validation split are not finite positive prices" in message, message
    assert "weight_decay" in message and f"nothing was written to {run_copy}" in message, message
    assert {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()} == before


def test_a_trial_whose_weights_forecast_no_finite_price_fails_without_naming_its_folder(sample_dir, tmp_path):
    """keep_diverged=False (a tuning trial, a challenger): its temporary folder is not the user's."""
    from forecaster.training import Diverged

    cfg = _overflowing(load_config(None, tiny_overrides(sample_dir, **{"train.epochs": 1})))
    with pytest.raises(Diverged) as info:
        train(cfg, run_dir=tmp_path / "trial", keep_diverged=False)
    message = str(info.value)
    assert "not finite positive prices" in message and str(tmp_path) not in message, message
    assert not (tmp_path / "trial").exists()


def test_a_nan_loss_after_an_epoch_that_forecasts_no_finite_price_writes_no_run(sample_dir, tmp_path):
    cfg = _overflowing(load_config(None, tiny_overrides(sample_dir, **{"train.epochs": 8})))
    run = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train(cfg, run_dir=run)
    message = str(info.value)
    assert message.startswith("loss became inf at epoch "), message
    assert "the best epoch before it, 1, cannot be kept" in message and "nothing was written" in message, message
    assert not run.exists()


def test_a_run_no_better_than_no_move_is_written_with_a_warning(sample_dir, tmp_path, caplog):
    """A learning rate far too high whose loss stays finite: the run is written (its forecasts are
    finite), but the user is told its validation loss is worse than forecasting no move at all."""
    cfg = load_config(None, tiny_overrides(sample_dir, **{"train.lr": 10, "model.cell": "rnn", "train.epochs": 4}))
    with caplog.at_level("WARNING", logger="forecaster"):
        res = train(cfg, run_dir=tmp_path / "bad")
    warned = [r.getMessage() for r in caplog.records if "no move" in r.getMessage()]
    assert len(warned) == 1 and f"{res.manifest.metrics.best_val_loss:.4f}" in warned[0], warned
    assert "learning rate, 10, too high" in warned[0], warned
    caplog.clear()
    with caplog.at_level("WARNING", logger="forecaster"):
        train(load_config(None, tiny_overrides(sample_dir)), run_dir=tmp_path / "good")
    assert not [r for r in caplog.records if "no move" in r.getMessage()]


@pytest.mark.parametrize("one_step", [False, True])
def test_the_no_move_loss_is_the_validation_loss_of_forecasts_of_zero(sample_dir, one_step):
    from forecaster.models import pinball_loss
    from forecaster.training import Batches, no_move_loss

    cfg, ws = _setup(sample_dir)
    ends = ws.ends("val")
    _, _, y = Batches(ws, torch.device("cpu"), one_step)(ends)
    zero = torch.zeros((*y.shape, len(cfg.model.quantiles)))
    expected = float(pinball_loss(zero, y, cfg.model.quantiles))
    assert no_move_loss(ws, ends, cfg.model.quantiles, one_step) == pytest.approx(expected, rel=1e-6)
    assert math.isnan(no_move_loss(ws, ends[:0], cfg.model.quantiles, one_step))


def test_early_stopping_restores_the_best_epoch(sample_dir):
    cfg, ws = _setup(sample_dir, **{"train.epochs": 12, "train.patience": 2, "train.lr": 0.05})
    seed_everything(0)  # this seed's validation loss is lowest at epoch 3 of 12
    model = new_model(cfg, ws)
    recs = list(fit(model, ws, cfg, torch.device("cpu"), ws.ends("train"), ws.ends("val")))
    best = min(recs, key=lambda r: r.val_loss)
    # stopped early, exactly `patience` epochs after the best one
    assert len(recs) < 12 and recs[-1].epoch - best.epoch == 2, [(r.epoch, r.val_loss) for r in recs]
    from forecaster.training import Batches, evaluate_loss

    now = evaluate_loss(model, Batches(ws, torch.device("cpu"), False), ws.ends("val"), cfg.model.quantiles)
    assert now == pytest.approx(best.val_loss, rel=1e-5)
    assert now != pytest.approx(recs[-1].val_loss, rel=1e-5)  # the best weights, not the last ones


def test_an_epoch_within_the_least_improvement_of_the_best_neither_keeps_its_weights_nor_resets_patience(
    sample_dir, monkeypatch
):
    """Two epochs that beat the first by less than MIN_IMPROVEMENT (float noise) are no
    progress: training stops ``patience`` epochs after the first, and the model left holds the
    first epoch's weights, those run.json names as the best epoch's."""
    from forecaster.training import MIN_IMPROVEMENT, Trainer

    losses = iter([0.3, 0.3 - MIN_IMPROVEMENT / 2, 0.3 - MIN_IMPROVEMENT / 2, 0.2, 0.1])
    monkeypatch.setattr(Trainer, "_val_loss", lambda self, ends: next(losses))
    cfg, ws = _setup(sample_dir, **{"train.epochs": 5, "train.patience": 2})
    model = new_model(cfg, ws)
    after = []  # the weights at the end of each epoch
    for _ in fit(model, ws, cfg, torch.device("cpu"), ws.ends("train"), ws.ends("val")):
        after.append({k: v.clone() for k, v in model.state_dict().items()})
    assert len(after) == 3  # epoch 1, then two epochs without progress
    assert any(not torch.equal(after[0][k], after[2][k]) for k in after[0])  # the epochs did train
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, after[0][k], rtol=0, atol=0)


def test_the_learning_rate_halves_after_half_the_patience_without_progress(sample_dir, monkeypatch):
    """With --patience 6 and a validation loss that never improves, epochs 1 to 5 train at
    --lr and epoch 6 at half of it: the rate halves once more than 3 (patience // 2) epochs after
    the best have not beaten it, and history.csv's lr is the rate the epoch trained at."""
    from forecaster.training import Trainer

    monkeypatch.setattr(Trainer, "_val_loss", lambda self, ends: 0.5)
    cfg, ws = _setup(sample_dir, **{"train.epochs": 6, "train.patience": 6, "train.lr": 0.004})
    recs = list(fit(new_model(cfg, ws), ws, cfg, torch.device("cpu"), ws.ends("train"), ws.ends("val")))
    assert [r.lr for r in recs] == pytest.approx([0.004] * 5 + [0.002], rel=1e-12)


def test_a_validation_loss_that_is_not_a_number_stops_training_with_a_clear_error(sample_dir, monkeypatch):
    """Finite training steps but a NaN validation loss: training stops at that epoch naming it,
    rather than going on with an epoch that can never count as the best."""
    from forecaster.training import Diverged, Trainer

    losses = iter([0.3, math.nan, 0.2])
    monkeypatch.setattr(Trainer, "_val_loss", lambda self, ends: next(losses))
    cfg, ws = _setup(sample_dir, **{"train.epochs": 3})
    seen = []
    with pytest.raises(Diverged, match="validation loss became nan at epoch 2"):
        for rec in fit(new_model(cfg, ws), ws, cfg, torch.device("cpu"), ws.ends("train"), ws.ends("val")):
            seen.append(rec.epoch)
    assert seen == [1]


def test_validation_shared_among_threads_gives_the_same_loss_to_the_last_bit(sample_dir, torch_one_thread):
    import threading

    from forecaster.training import Batches, evaluate_loss

    cfg, ws = _setup(sample_dir)
    seed_everything(0)
    model = new_model(cfg, ws)
    calls = []

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, tid):
            calls.append((threading.current_thread().name, torch.is_grad_enabled(), len(x)))
            return self.inner(x, tid)

    spy, batches, ends = Spy(model), Batches(ws, torch.device("cpu"), False), ws.ends("val")
    q = cfg.model.quantiles
    alone = evaluate_loss(spy, batches, ends, q, batch_size=64, workers=1)
    assert len(calls) == -(-len(ends) // 64) >= 3
    calls.clear()
    shared = evaluate_loss(spy, batches, ends, q, batch_size=64, workers=2)
    assert shared == alone  # the same batches, their losses added in the same order
    assert sorted(n for _, _, n in calls) == sorted(min(64, len(ends) - i) for i in range(0, len(ends), 64))
    assert all(name.startswith("validation") for name, _, _ in calls)  # worker threads ran them
    assert not any(grad for _, grad, _ in calls)  # without building a graph, in every thread
    # the default batches: the same loss again (up to rounding), to the last bit with or without threads
    calls.clear()
    default = evaluate_loss(spy, batches, ends, q, workers=2)
    assert default == pytest.approx(alone, rel=1e-5)
    assert len(calls) >= 2 and all(name.startswith("validation") for name, _, _ in calls)  # shared, small as it is
    assert evaluate_loss(model, batches, ends, q, workers=1) == default


@pytest.mark.parametrize(
    ("n", "device", "batch"),
    [(246, "cpu", 128), (992, "cpu", 128), (1_100, "cpu", 138), (8_000, "cpu", 1_000), (229_272, "cpu", 4_096)]
    + [(246, "cuda", 4_096), (229_272, "cuda", 4_096)],
)
def test_a_validation_pass_is_cut_by_its_size_alone(n, device, batch):
    """On a CPU even a small pass is cut into batches that the cores can share (8, of at least
    128 windows, at most 4,096); on a GPU one thread runs the largest batches."""
    from forecaster.training import validation_batch

    assert validation_batch(n, torch.device(device)) == batch


def test_an_interrupted_validation_drops_the_batches_not_started(sample_dir, torch_one_thread, monkeypatch):
    import concurrent.futures

    from forecaster.training import Batches, evaluate_loss

    cfg, ws = _setup(sample_dir)
    model = new_model(cfg, ws)
    shutdowns = []

    class Recording(concurrent.futures.ThreadPoolExecutor):
        def shutdown(self, wait=True, *, cancel_futures=False):
            shutdowns.append(cancel_futures)
            super().shutdown(wait, cancel_futures=cancel_futures)

    class Interrupted(torch.nn.Module):
        def forward(self, x, tid):
            raise KeyboardInterrupt  # as SIGTERM is turned into while training

    monkeypatch.setattr("forecaster.training.ThreadPoolExecutor", Recording)
    batches = Batches(ws, torch.device("cpu"), False)
    with pytest.raises(KeyboardInterrupt):
        evaluate_loss(Interrupted(), batches, ws.ends("val"), cfg.model.quantiles, batch_size=8, workers=2)
    assert shutdowns and shutdowns[0] is True  # the queued batches are cancelled, not run to the end
    shutdowns.clear()
    evaluate_loss(model, batches, ws.ends("val"), cfg.model.quantiles, batch_size=8, workers=2)
    assert shutdowns == [False]  # a pass that ends normally just closes its threads


def test_validation_uses_a_thread_per_core_only_where_torch_runs_one(sample_dir, torch_one_thread, monkeypatch):
    from forecaster.training import Trainer

    cfg, ws = _setup(sample_dir)
    monkeypatch.setattr("forecaster.training.usable_cores", lambda: 3)
    assert Trainer(new_model(cfg, ws), ws, cfg, torch.device("cpu")).val_workers == 3
    torch.set_num_threads(2)  # the fixture sets one thread back afterwards
    try:
        assert Trainer(new_model(cfg, ws), ws, cfg, torch.device("cpu")).val_workers == 1
    finally:
        torch.set_num_threads(1)


def _accelerators(monkeypatch, *, cuda: bool, mps: bool) -> None:
    """Make torch report CUDA and Apple MPS as present or absent."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    _accelerators(monkeypatch, cuda=cuda, mps=mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")  # asked for by name: always the CPU


@pytest.mark.parametrize(("name", "shown"), [("cuda", "CUDA"), ("mps", "MPS")])
def test_an_unavailable_device_is_a_config_error_naming_it(monkeypatch, name, shown):
    _accelerators(monkeypatch, cuda=False, mps=False)
    with pytest.raises(
        ConfigError, match=rf"train.device is {name} .*, but torch sees no {shown} device: pass `--device auto`"
    ):
        resolve_device(name)
    _accelerators(monkeypatch, cuda=True, mps=True)
    assert resolve_device(name) == torch.device(name)  # present: used as asked


def test_no_tickers_is_a_config_error(sample_dir):
    with pytest.raises(ConfigError, match="no tickers"):
        train(load_config(None, tiny_overrides(sample_dir, **{"data.tickers": []})))


def test_short_ticker_skipped_and_recorded(sample_dir, tmp_path):
    import shutil

    d = tmp_path / "data"
    shutil.copytree(sample_dir, d)
    df = pd.read_csv(d / "STOCKB.csv").tail(150)  # listed inside the validation period
    df.to_csv(d / "NEWCO.csv", index=False)
    cfg = load_config(None, tiny_overrides(d, **{"data.tickers": ["STOCKA", "NEWCO"], "train.epochs": 1}))
    res = train(cfg, run_dir=tmp_path / "run")
    assert list(res.manifest.tickers) == ["STOCKA"]
    assert "NEWCO" in res.manifest.skipped


@pytest.mark.parametrize(("training_bars", "kept"), [(24, True), (23, False)])
def test_a_ticker_with_bars_for_exactly_one_training_window_is_trained(
    sample_dir, tmp_path, caplog, training_bars, kept
):
    """Lookback 20 + horizon 3, plus the bar before them for the first return: 24 bars before
    the validation split make one training window, and the ticker is trained; 23 do not."""
    import shutil

    d = tmp_path / "data"
    shutil.copytree(sample_dir, d)
    df = pd.read_csv(d / "STOCKA.csv").tail(100 + 100 + training_bars)  # val_days + test_days + those
    df.to_csv(d / "NEWCO.csv", index=False)
    cfg = load_config(None, tiny_overrides(d, **{"data.tickers": ["STOCKA", "NEWCO"], "train.epochs": 1}))
    with caplog.at_level("WARNING", logger="forecaster"):
        res = train(cfg, run_dir=tmp_path / "run")
    warned = [r.getMessage() for r in caplog.records if "NEWCO" in r.getMessage()]
    if kept:
        assert list(res.manifest.tickers) == ["NEWCO", "STOCKA"] and res.manifest.skipped == {}
        assert warned == []
    else:
        assert list(res.manifest.tickers) == ["STOCKA"]
        reason = (
            "23 bars in the training split, need at least 24 "
            "(lookback 20 + horizon 3, plus the bar before them for the first return)"
        )
        assert res.manifest.skipped == {"NEWCO": reason}
        assert warned == [f"skipping NEWCO: {reason}"]


def test_ticker_without_validation_windows_is_named(sample_dir, tmp_path, caplog):
    """A ticker whose bars end before the validation split trains, and is named, never dropped silently."""
    import shutil

    d = tmp_path / "data"
    shutil.copytree(sample_dir, d)
    df = pd.read_csv(d / "STOCKB.csv")
    old = df[df["Date"] < "2023-06-01"]
    old.to_csv(d / "OLDCO.csv", index=False)  # delisted a year before the splits
    cfg = load_config(None, tiny_overrides(d, **{"data.tickers": ["STOCKA", "OLDCO"], "train.epochs": 1}))
    with caplog.at_level("WARNING", logger="forecaster"):
        res = train(cfg, run_dir=tmp_path / "run")
    val_start = str(res.manifest.splits.val_start)
    assert res.manifest.model_dump(mode="json")["no_validation"] == {
        "OLDCO": {"last_date": old["Date"].iloc[-1], "split_start": val_start}
    }
    assert "OLDCO" in res.manifest.tickers  # still trained on
    assert any("OLDCO: no validation windows" in r.getMessage() and val_start in r.getMessage() for r in caplog.records)


def test_a_ticker_with_bars_on_days_the_calendar_does_not_trade_is_named(sample_dir, tmp_path, caplog):
    """Bars of another exchange (open on days New York is not) under the default calendar: its
    forecasts would be dated by New York's sessions, so the warning names the first such day.
    The sample, all New York sessions, gets no such warning."""
    import shutil

    d = tmp_path / "data"
    shutil.copytree(sample_dir, d)
    df = pd.read_csv(d / "STOCKB.csv")
    days = pd.to_datetime(df["Date"])
    moved = days.where(days.dt.day_of_week != 4, days + pd.Timedelta(days=1))  # Fridays' bars on Saturdays
    abroad = df.assign(Date=moved.dt.strftime("%Y-%m-%d"))
    abroad.to_csv(d / "ABROAD.csv", index=False)
    first = moved[days.dt.day_of_week == 4].iloc[0].date()
    cfg = load_config(None, tiny_overrides(d, **{"data.tickers": ["STOCKA", "ABROAD"], "train.epochs": 1}))
    with caplog.at_level("WARNING", logger="forecaster"):
        train(cfg, run_dir=tmp_path / "run")
    warned = [r.getMessage() for r in caplog.records if "sessions (e.g." in r.getMessage()]
    n = int((days.dt.day_of_week == 4).sum())
    assert warned == [
        f"ABROAD: {n} of its bars fall on days that are not XNYS sessions (e.g. {first}): its forecasts would be "
        "dated by another exchange's sessions; set data.calendar to its exchange (one per run)"
    ]


def test_a_ticker_whose_later_inputs_are_unlike_its_training_ones_is_named(sample_dir, tmp_path, caplog):
    """A listing that traded flat at 10.00 through the training split, in cent ticks, then
    moved as a stock: its later inputs lie tens of deviations outside what the network saw.
    One that never moved at all is named too. The sample's tickers are not."""
    import shutil

    d = tmp_path / "data"
    shutil.copytree(sample_dir, d)
    df = pd.read_csv(d / "STOCKB.csv")
    calm = len(df) - 200  # the training split: all but the last 200 sessions (val 100, test 100)
    ticks = 10.0 + np.resize([0.0] * 9 + [0.01], calm)  # a cent up on one day in ten
    spac = df.copy()
    for col in ("Open", "High", "Low", "Close"):
        moved = df[col].to_numpy() * 10.0 / df["Close"].iloc[calm]
        spac[col] = np.concatenate([ticks + {"High": 0.01, "Low": -0.01}.get(col, 0.0), moved[calm:]])
    spac.to_csv(d / "SPAC.csv", index=False)
    df.assign(Open=10.0, High=10.0, Low=10.0, Close=10.0).to_csv(d / "FLAT.csv", index=False)
    cfg = load_config(None, tiny_overrides(d, **{"data.tickers": ["STOCKA", "SPAC", "FLAT"], "train.epochs": 1}))
    with caplog.at_level("WARNING", logger="forecaster"):
        train(cfg, run_dir=tmp_path / "run")
    warned = [r.getMessage() for r in caplog.records if "training split" in r.getMessage()]
    assert len(warned) == 2, warned
    spac_line, flat_line = sorted(warned, reverse=True)
    assert spac_line.startswith("SPAC: its ") and "standard deviations from its training split's mean" in spac_line
    assert int(spac_line.split(" is ")[1].split()[0]) > 50
    assert flat_line.startswith("FLAT: its close never moved over the training split")


def test_ticker_whose_bars_skip_the_validation_split_is_named_as_such_and_evaluated(sample_dir, tmp_path, caplog, cli):
    """A gap over the validation split (one bar left in it): named as a gap, not as bars that
    end there (its bars end in the test split), and evaluated there, as the warning says."""
    import shutil

    from forecaster.evaluation import evaluate

    d = tmp_path / "data"
    shutil.copytree(sample_dir, d)
    df = pd.read_csv(d / "STOCKB.csv")
    val_start, test_start = df["Date"].iloc[-200], df["Date"].iloc[-100]  # the tiny config's splits
    df[(df["Date"] < val_start) | (df["Date"] >= test_start) | (df["Date"] == df["Date"].iloc[-150])].to_csv(
        d / "GAPCO.csv", index=False
    )
    cfg = load_config(None, tiny_overrides(d, **{"data.tickers": ["STOCKA", "GAPCO"], "train.epochs": 1}))
    with caplog.at_level("WARNING", logger="forecaster"):
        res = train(cfg, run_dir=tmp_path / "run")
    assert str(res.manifest.splits.test_start) == test_start
    warned = [r.getMessage() for r in caplog.records if "GAPCO: no validation windows" in r.getMessage()]
    assert warned == [
        f"GAPCO: no validation windows: 1 of its bars fall in the validation split ({val_start} to {test_start}), "
        "a gap in them, fewer than the 3 sessions one forecast needs; it is trained on and evaluated, but its "
        "intervals are not calibrated"
    ]
    shown = f"no val.    GAPCO: too few bars in the validation split (a gap in them); bars end {df['Date'].iloc[-1]}"
    assert shown in cli("info", str(tmp_path / "run")).stdout.splitlines()
    report = evaluate(tmp_path / "run", jobs=1)
    assert "GAPCO" in set(report.predictions["ticker"]) and "GAPCO" not in report.missing


@pytest.mark.parametrize(("into_validation", "named"), [(2, True), (3, False)])
def test_ticker_ending_too_soon_into_the_validation_split_is_named(
    sample_dir, tmp_path, caplog, cli, into_validation, named
):
    """Bars reaching fewer than `horizon` (3) sessions into the validation split give no
    validation window: named as a ticker ending before the split is; 3 sessions give one."""
    import shutil

    d = tmp_path / "data"
    shutil.copytree(sample_dir, d)
    df = pd.read_csv(d / "STOCKB.csv")
    val_start = df["Date"].iloc[-200]  # the tiny config's splits: 100 validation, 100 test sessions
    cut = df[df["Date"] < val_start].index[-1] + into_validation
    df.iloc[: cut + 1].to_csv(d / "ENDSCO.csv", index=False)
    cfg = load_config(None, tiny_overrides(d, **{"data.tickers": ["STOCKA", "ENDSCO"], "train.epochs": 1}))
    with caplog.at_level("WARNING", logger="forecaster"):
        res = train(cfg, run_dir=tmp_path / "run")
    assert str(res.manifest.splits.val_start) == val_start
    warned = [r.getMessage() for r in caplog.records if "ENDSCO: no validation windows" in r.getMessage()]
    if named:
        last = df["Date"].iloc[cut]
        assert res.manifest.model_dump(mode="json")["no_validation"] == {
            "ENDSCO": {"last_date": last, "split_start": val_start}
        }
        assert warned == [
            f"ENDSCO: no validation windows: its bars end {last}, fewer than 3 sessions into the validation "
            f"split (from {val_start}); it is trained on and not evaluated, its intervals calibrated on the "
            f"{into_validation} validation session(s) it has"
        ]
        # its one-step outcomes there did move its scale: "neither calibrated" was not so
        assert res.manifest.tickers["ENDSCO"].conformal != [1.0, 1.0, 1.0]
        shown = f"no val.    ENDSCO: bars end {last}, too soon after the start of the validation split ({val_start})"
        assert shown in cli("info", str(tmp_path / "run")).stdout.splitlines()
    else:
        assert res.manifest.no_validation == {} and warned == []
    assert "ENDSCO" in res.manifest.tickers


def test_training_again_into_a_run_with_forecasts_warns_that_score_cannot_tell_them_apart(sample_dir, tmp_path, caplog):
    from forecaster.prediction import predict

    out = tmp_path / "forecasts"
    cfg = load_config(None, tiny_overrides(sample_dir, **{"train.epochs": 1, "predict.out": str(out)}))
    run = tmp_path / "runs" / "prod"
    with caplog.at_level("WARNING", logger="forecaster"):
        train(cfg, run_dir=run)
        report = predict(run, offline=True)
        assert (out / "prod" / f"{report.as_of}.csv").is_file()
        caplog.clear()
        train(cfg, run_dir=tmp_path / "runs" / "other")  # a new name: nothing to say
        assert not [r for r in caplog.records if "replaced an earlier run" in r.getMessage()]
        train(cfg, run_dir=run)
    (warned,) = [r.getMessage() for r in caplog.records if "replaced an earlier run" in r.getMessage()]
    assert warned == (
        f"{run} replaced an earlier run of that name, whose forecasts are in {out / 'prod'}: `forecaster score` "
        "cannot tell them from this model's unless they are moved aside (or train under a new name)"
    )


def test_missing_ticker_file_names_it(sample_dir):
    cfg = load_config(None, tiny_overrides(sample_dir, **{"data.tickers": ["STOCKA", "NOPE"]}))
    with pytest.raises(DataError, match="NOPE"):
        train(cfg)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("strategy", ["direct", "recursive"])
def test_every_model_and_strategy_trains_and_predicts(sample_dir, tmp_path, cell, strategy):
    from forecaster.prediction import predict

    cfg = load_config(
        None, tiny_overrides(sample_dir, **{"model.cell": cell, "model.strategy": strategy, "train.epochs": 1})
    )
    res = train(cfg, run_dir=tmp_path / "run")
    assert res.manifest.config.model.cell == cell
    out = predict(tmp_path / "run", offline=True, out=tmp_path / "fc").forecasts
    assert len(out) == 2 * cfg.window.horizon
    assert (out["p10"] <= out["p50"]).all() and (out["p50"] <= out["p90"]).all()


@pytest.mark.parametrize("one_step", [False, True])
def test_device_resident_batches_equal_numpy_gathered_ones(sample_dir, one_step):
    """CUDA gathers windows from device copies of the stacked arrays; the same code on the CPU
    must give exactly the batches numpy gathers."""
    from forecaster.training import Batches

    _, ws = _setup(sample_dir)
    ends = np.random.default_rng(0).permutation(ws.ends("train"))[:300]
    cpu = torch.device("cpu")
    for a, b in zip(Batches(ws, cpu, one_step, resident=True)(ends), Batches(ws, cpu, one_step, resident=False)(ends)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)


def test_numpy_gathered_batches_go_to_the_device_the_model_is_on(sample_dir):
    """Off CUDA and off the CPU (mps), the batches numpy gathers were left on the CPU: the first
    batch failed against a model on the device. The meta device stands in for one here."""
    from forecaster.training import Batches

    _, ws = _setup(sample_dir)
    ends = ws.ends("train")[:50]
    batch = Batches(ws, torch.device("meta"), False)(ends)
    assert [t.device.type for t in batch] == ["meta"] * 3
    assert [tuple(t.shape) for t in batch] == [tuple(t.shape) for t in Batches(ws, torch.device("cpu"), False)(ends)]


def test_the_collective_sum_is_on_the_device_of_the_process_group(monkeypatch):
    """A job on GPUs joins an NCCL group, which reduces no CPU tensor: the sums each training
    step makes (is the loss finite everywhere?) failed at the first step."""
    import torch.distributed

    from forecaster.training import Dist

    monkeypatch.setenv("WORLD_SIZE", "2")
    seen = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: seen.append(t.device.type))
    dist = Dist()
    assert dist.sum(1.0) == [1.0] and seen == ["cpu"]
    dist.device = torch.device("meta")  # what setup sets for a job on GPUs (cuda:LOCAL_RANK)
    seen.clear()
    with pytest.raises(NotImplementedError):  # a meta tensor has no values to give back
        dist.sum(1.0)
    assert seen == ["meta"]


def test_a_resume_file_keeps_the_state_of_the_cuda_generator(tmp_path):
    """Dropout on a GPU draws from the device's generator: without its state, the epochs after
    a resume drew other masks than an uninterrupted run."""
    from forecaster.checkpoint import ResumeState, _flatten, _unflatten

    rng = np.arange(16, dtype=np.uint8)
    state = ResumeState(
        epoch=3, best_val=0.5, stale=1, model={"w": np.ones(2, np.float32)}, best=None, optimizer={},
        param_groups=[], scheduler={}, generator=np.zeros(8, np.uint8), torch_rng=None, cuda_rng=rng,
    )  # fmt: skip
    back = _unflatten(*_flatten(state))
    assert np.array_equal(back.cuda_rng, rng)
    assert _unflatten(*_flatten(ResumeState(**{**state.__dict__, "cuda_rng": None}))).cuda_rng is None


def test_run_json_names_the_epoch_whose_weights_it_keeps(sample_dir, tmp_path, monkeypatch):
    """An epoch that beats the best by less than the least improvement is not kept: run.json's
    best epoch and loss are those of the weights written, not of that later epoch."""
    from forecaster.checkpoint import read_manifest
    from forecaster.training import MIN_IMPROVEMENT, Trainer

    losses = iter([0.3, 0.3 - MIN_IMPROVEMENT / 2, 0.4])
    monkeypatch.setattr(Trainer, "_val_loss", lambda self, ends: next(losses))
    cfg = load_config(None, tiny_overrides(sample_dir, **{"train.epochs": 3}))
    res = train(cfg, run_dir=tmp_path / "run")
    m = read_manifest(tmp_path / "run").metrics
    assert (m.best_epoch, m.best_val_loss, m.epochs_run) == (1, 0.3, 3)
    assert [r.val_loss for r in res.history][:2] == [0.3, 0.3 - MIN_IMPROVEMENT / 2]


def test_training_data_skip_a_ticker_without_usable_bars_and_name_it_when_none_is_left(small_dir, tmp_path):
    """A ticker whose every close is missing is left out of the windows and recorded as skipped
    with why, among those too short for the window; when every other ticker is too short, the
    error names both kinds."""
    from forecaster.synthetic import generate_bars, write_csv
    from forecaster.training import load_training_data

    (tmp_path / "STOCKB.csv").write_bytes((small_dir / "STOCKB.csv").read_bytes())
    write_csv(generate_bars("2024-09-03", "2024-12-31", seed=5), tmp_path / "NEWCO.csv")
    (tmp_path / "NANC.csv").write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,1,1.1,0.9,,100\n")
    cfg = load_config(None, tiny_overrides(tmp_path))
    data = load_training_data(cfg, ["NANC", "STOCKB", "NEWCO"])
    assert data.ws.tickers == ["STOCKB"]
    assert list(data.ws.skipped) == ["NANC", "NEWCO"]  # in the order asked for
    why = "no usable bars: each of its 1 row(s) lacks a date or one of open, high, low, close"
    why += f", in {tmp_path / 'NANC.csv'}"  # the file to look at
    assert data.ws.skipped["NANC"] == why
    with pytest.raises(DataError) as e:
        load_training_data(cfg, ["NEWCO", "NANC"], data.splits)  # the splits STOCKB gave
    assert str(e.value).startswith("no ticker has enough history: NEWCO: ")
    assert str(e.value).endswith(f"; NANC: {why}")
    with pytest.raises(DataError, match=r"^no ticker has usable bars: NANC: no usable bars"):
        load_training_data(cfg, ["NANC"])


def test_a_ticker_skipped_as_too_short_does_not_set_the_splits(small_dir, tmp_path):
    """A ticker listed lately whose bars run past the others' is skipped (too few training
    bars), and its dates set the splits all the same: the ticker trained got its test split
    after its last bar (no test window: evaluate had nothing to score) while train said
    nothing. The splits are those of the tickers trained."""
    from forecaster.store import load_bars
    from forecaster.synthetic import generate_bars, write_csv
    from forecaster.training import load_training_data
    from forecaster.windows import make_splits

    (tmp_path / "STOCKB.csv").write_bytes((small_dir / "STOCKB.csv").read_bytes())
    write_csv(generate_bars("2025-01-02", "2025-09-30", seed=5), tmp_path / "NEWCO.csv")  # after STOCKB's last bar
    cfg = load_config(None, tiny_overrides(tmp_path))
    bars = load_bars("csv", tmp_path, ["STOCKB", "NEWCO"])
    everyone = make_splits(bars, 100, 100)
    assert everyone.test_start > bars["STOCKB"].index[-1]  # NEWCO's dates made them: no test bar of STOCKB
    data = load_training_data(cfg, ["STOCKB", "NEWCO"])
    assert data.ws.tickers == ["STOCKB"] and list(data.ws.skipped) == ["NEWCO"]
    assert data.splits == make_splits({"STOCKB": bars["STOCKB"]}, 100, 100)
    assert data.splits.test_start == bars["STOCKB"].index[-100]
    assert len(data.ends["val"]) and len(data.ends["test"])  # STOCKB is validated and evaluated
    assert data.ws.skipped["NEWCO"].startswith("0 bars in the training split")
    given = load_training_data(cfg, ["STOCKB", "NEWCO"], everyone)  # a resumed run's splits stay as recorded
    assert given.splits == everyone


def test_one_gradient_buffer_clips_as_torch_does(sample_dir, torch_one_thread):
    """Every parameter's gradient is a view of one buffer, through training; clipping it as one
    vector gives torch's clip_grad_norm_ (the norm and the scaled gradients)."""
    from forecaster.models import pinball_loss
    from forecaster.training import Trainer

    cfg, ws = _setup(sample_dir, **{"model.dropout": 0.0, "train.epochs": 1})  # two passes alike
    seed_everything(0)
    model = new_model(cfg, ws)
    trainer = Trainer(model, ws, cfg, torch.device("cpu"))
    params = list(model.parameters())
    sizes = sum(p.numel() for p in params)
    assert trainer.grads.numel() == sizes
    list(trainer.epochs(ws.ends("train"), ws.ends("val")))  # a training epoch keeps them there
    buffer = trainer.grads.untyped_storage().data_ptr()
    assert all(p.grad.untyped_storage().data_ptr() == buffer for p in params)
    assert float(trainer.grads.abs().sum()) > 0  # and the backward pass filled them

    model.train()
    x, tid, y = trainer.batches(ws.ends("train")[:256])
    q = torch.tensor(cfg.model.quantiles)

    def clipped(clip):
        trainer.grads.zero_()
        (pinball_loss(model(x, tid), y, q) * 100).backward()
        return clip(), [p.grad.clone() for p in params]

    norm, grads = clipped(lambda: trainer._clip(0.01))
    torch_norm, torch_grads = clipped(lambda: torch.nn.utils.clip_grad_norm_(params, 0.01))
    assert float(norm) > 0.01  # it was clipped
    assert float(norm) == pytest.approx(float(torch_norm), rel=1e-5)
    for mine, theirs in zip(grads, torch_grads, strict=True):
        torch.testing.assert_close(mine, theirs)
    assert float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))) == pytest.approx(0.01, rel=1e-4)


def test_garch_fits_shared_among_fresh_processes_are_those_made_here(sample_dir, monkeypatch):
    """A universe's garch fits are shared among processes started afresh (training has run
    threads in this one): every ticker gets the fit this process makes, to the last bit."""
    from forecaster import pool, training

    cfg = load_config(None, tiny_overrides(sample_dir))
    data = training.load_training_data(cfg, cfg.data.tickers)
    here = training.garch_fits(data.ws)
    assert sorted(here) == ["STOCKA", "STOCKB"]  # the sample's returns are enough for a fit
    monkeypatch.setattr(training, "processes_for", lambda jobs, n, least: 2)  # two, even on one core
    started = []

    class Recorded(pool.ProcessPoolExecutor):
        def __init__(self, *args, mp_context=None, **kwargs):
            started.append(mp_context.get_start_method())
            super().__init__(*args, mp_context=mp_context, **kwargs)

    monkeypatch.setattr(pool, "ProcessPoolExecutor", Recorded)
    assert training.garch_fits(data.ws) == here
    assert started == ["spawn"]


def test_trainings_started_in_the_same_second_each_get_their_own_run_directory(sample_dir, tmp_path, monkeypatch):
    """Without --run-dir a run is named after the second it started: a second training in that
    second wrote its run over the first one's (both said they had written it). The name is
    now taken by making the folder, the next one gets -2; a training that fails leaves none."""
    from forecaster import training

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training, "_default_run_dir", lambda cfg, now: Path("runs") / "gru-20261204-101010")
    first = train(load_config(None, tiny_overrides(sample_dir, **{"data.tickers": ["STOCKA"], "train.epochs": 1})))
    second = train(load_config(None, tiny_overrides(sample_dir, **{"data.tickers": ["STOCKB"], "train.epochs": 1})))
    assert (first.run_dir, second.run_dir) == (Path("runs/gru-20261204-101010"), Path("runs/gru-20261204-101010-2"))
    assert list(run_meta(first.run_dir)["tickers"]) == ["STOCKA"] and list(run_meta(second.run_dir)["tickers"]) == [
        "STOCKB"
    ]
    with pytest.raises(DataError):
        train(load_config(None, tiny_overrides(tmp_path / "no-data")))
    assert sorted(p.name for p in Path("runs").iterdir() if not p.name.startswith(".")) == [
        "gru-20261204-101010",
        "gru-20261204-101010-2",
    ]


def test_a_default_run_directory_under_a_broken_link_is_one_error_not_a_loop(sample_dir, tmp_path, monkeypatch):
    """`runs` a link to a folder that is gone: making a run directory there looped forever on
    `-2`, `-3`... (each taken for a name in use). Now the link and where it points are named."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").symlink_to(tmp_path / "gone")
    with pytest.raises(RunFormatError) as err:
        train(load_config(None, tiny_overrides(sample_dir, **{"train.epochs": 1})))
    assert f"runs is a link to {tmp_path / 'gone'}, which is not there" in str(err.value)
    assert not (tmp_path / "gone").exists()


def test_a_default_run_directory_under_a_file_named_runs_says_so(sample_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("")
    with pytest.raises(RunFormatError, match="runs is a file, not a folder"):
        train(load_config(None, tiny_overrides(sample_dir, **{"train.epochs": 1})))


@pytest.mark.parametrize("scale", ["local", "ticker"])
def test_run_json_says_what_the_targets_were_divided_by(sample_dir, tmp_path, scale):
    """run.json described every run's targets as divided by the ticker's volatility, also the
    default runs, whose targets are divided by the local volatility at the origin."""
    import json

    cfg = load_config(None, tiny_overrides(sample_dir, **{"model.target_scale": scale, "train.epochs": 1}))
    train(cfg, run_dir=tmp_path / "run")
    target = json.loads((tmp_path / "run" / "run.json").read_text())["features"]["target"]
    if scale == "local":
        assert target.startswith("log(close[t+h]/close[t]) / (local_vol[t]*sqrt(h))"), target
        assert f"half-life {cfg.model.scale_halflife} sessions" in target, target
    else:
        assert target == "log(close[t+h]/close[t]) / (ret_std*sqrt(h))"


def test_a_device_this_machine_lacks_is_refused_before_the_data_are_read(sample_dir, tmp_path, monkeypatch):
    import torch

    from forecaster import training

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training, "load_training_data", lambda *a, **k: pytest.fail("the data were read"))
    cfg = load_config(None, tiny_overrides(sample_dir, **{"train.device": "cuda"}))
    with pytest.raises(ConfigError, match="CUDA"):
        training.train(cfg, run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("mode", ["forking", "window"])
def test_a_distributed_job_refused_for_its_validation_windows_is_not_told_to_shorten_its_chunks(mode):
    """The chunk length sets how many training items there are, not validation windows."""
    from types import SimpleNamespace

    from forecaster.training import _check_shares

    cfg = load_config(None, {"train.mode": mode, "train.chunk": 32})
    ws = SimpleNamespace(ticker_id=np.zeros(5000, np.int64))
    few_val = SimpleNamespace(ws=ws, ends={"train": np.arange(100, 4000), "val": np.arange(4000, 4001)})
    with pytest.raises(TrainingError, match="1 validation windows cannot be shared among 2") as e:
        _check_shares(cfg, few_val, 2)
    assert "--chunk" not in str(e.value) and "fewer processes, or more history" in str(e.value)
    few_train = SimpleNamespace(ws=ws, ends={"train": np.arange(100, 101), "val": np.arange(4000, 4100)})
    with pytest.raises(TrainingError, match="cannot be shared among 2") as e:
        _check_shares(cfg, few_train, 2)
    assert ("a smaller --chunk" in str(e.value)) == (mode == "forking")


def test_processes_started_anew_do_not_run_the_calling_script_again(tmp_path):
    """A script that trains over many tickers, its lines not under ``if __name__ ==
    "__main__":``. The garch fits at the end go to processes started as new interpreters, and each
    ran the whole script again (its training too) before failing: the run was lost to a
    BrokenProcessPool. They start without it now."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from forecaster.pool import workers\n"
        "print('the script ran', flush=True)\n"
        "with workers(2, fresh=True) as pool:\n"
        "    print(sorted(pool.executor.map(abs, [-3, -1, -2])))\n"
    )
    res = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=python_env(), cwd=tmp_path, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["the script ran", "[1, 2, 3]"]


def test_a_stop_signal_lost_in_a_finalizer_still_stops_training(sample_dir, tmp_path, monkeypatch):
    """SIGTERM's interrupt raised inside a finalizer is dropped by Python (with an "Exception
    ignored" message), and the signals after it were ignored as its echo: training went on to its
    last epoch. It stops at the next step, saved as a run to resume, as for any stop, and says
    so once: the dropped interrupt prints nothing of its own."""
    from forecaster.training import Interrupted

    def lost_at_the_first_epoch(rec):
        if rec.epoch == 1:
            drop_a_stop_signal()

    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)  # what Python would print
    cfg = load_config(None, tiny_overrides(sample_dir, **{"train.epochs": 5, "train.patience": 5}))
    with pytest.raises(Interrupted):
        train(cfg, run_dir=tmp_path / "run", on_epoch=lost_at_the_first_epoch)
    meta = run_meta(tmp_path / "run")
    assert (meta["status"], meta["metrics"]["epochs_run"]) == ("interrupted", 1)
    assert dropped == []
