"""Training: seeds, devices, the epoch loop, and ``train(config)`` which writes a run.

The loop (:func:`fit`) yields one :class:`EpochRecord` per epoch and leaves the best
validation weights in the model; callers decide what to draw and when to save.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .config import Config
from .errors import ConfigError, TrainingError
from .models import QuantileRNN, build_model, pinball_loss
from .windows import WindowSet

log = logging.getLogger("forecaster")


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    grad_norm: float  # mean pre-clipping global gradient norm over the epoch's batches
    lr: float
    seconds: float
    samples: int

    def as_row(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and every CUDA device) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an unavailable choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps asked for, but torch sees no MPS device")
    return torch.device(name)


class Batches:
    """Turns window indices into device tensors, one batch at a time."""

    def __init__(self, ws: WindowSet, device: torch.device, one_step: bool):
        self.ws, self.device, self.one_step = ws, device, one_step

    def __call__(self, ends: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, tid = self.ws.inputs(ends)
        y = self.ws.targets(ends)
        if self.one_step:
            y = y[:, :1]
        dev = self.device
        return (torch.from_numpy(x).to(dev, non_blocking=True),
                torch.from_numpy(tid).to(dev, non_blocking=True),
                torch.from_numpy(y).to(dev, non_blocking=True))


def _autocast(device: torch.device, precision: str):
    enabled = precision == "bf16" and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def evaluate_loss(model: QuantileRNN, batches: Batches, ends: np.ndarray, quantiles: list[float],
                  batch_size: int = 4096, precision: str = "fp32") -> float:
    """Mean pinball loss over the windows ending at ``ends`` (eval mode)."""
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(ends), batch_size):
        x, tid, y = batches(ends[i : i + batch_size])
        with _autocast(batches.device, precision):
            pred = model(x, tid)
        total += float(pinball_loss(pred.float(), y, quantiles)) * len(y)
        n += len(y)
    return total / max(n, 1)


def fit(model: QuantileRNN, ws: WindowSet, cfg: Config, device: torch.device,
        train_ends: np.ndarray, val_ends: np.ndarray,
        on_batch: Callable[[int], None] | None = None) -> Iterator[EpochRecord]:
    """Train with AdamW, gradient clipping, LR halving on plateau and early stopping.

    Yields a record per epoch; when the generator finishes (or is closed) the model holds the
    weights of the best validation epoch. A NaN or infinite loss raises TrainingError.
    """
    t = cfg.train
    q = cfg.model.quantiles
    batches = Batches(ws, device, one_step=cfg.model.strategy == "recursive")
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, t.patience // 2))
    gen = torch.Generator().manual_seed(t.seed)
    best = (math.inf, None)
    stale = 0
    try:
        for epoch in range(1, t.epochs + 1):
            start = time.perf_counter()
            model.train()
            order = train_ends[torch.randperm(len(train_ends), generator=gen).numpy()]
            loss_sum, norm_sum, n_batches = 0.0, 0.0, 0
            for i in range(0, len(order), t.batch_size):
                x, tid, y = batches(order[i : i + t.batch_size])
                with _autocast(device, t.precision):
                    pred = model(x, tid)
                loss = pinball_loss(pred.float(), y, q)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"loss became {float(loss.detach())} at epoch {epoch}, batch {n_batches + 1}: "
                        "try a lower --lr; the last good run (if any) is kept")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                opt.step()
                loss_sum += loss.detach()
                norm_sum += norm.detach()
                n_batches += 1
                if on_batch:
                    on_batch(len(y))
            val = evaluate_loss(model, batches, val_ends, q, precision=t.precision)
            if not math.isfinite(val):
                raise TrainingError(f"validation loss became {val} at epoch {epoch}")
            lr = opt.param_groups[0]["lr"]
            sched.step(val)
            if val < best[0] - 1e-6:
                best = (val, {k: v.detach().clone() for k, v in model.state_dict().items()})
                stale = 0
            else:
                stale += 1
            yield EpochRecord(epoch, float(loss_sum) / max(n_batches, 1), val,
                              float(norm_sum) / max(n_batches, 1), lr,
                              time.perf_counter() - start, len(order))
            if stale >= t.patience:
                log.info("early stop at epoch %d (best val %.5f)", epoch, best[0])
                break
    finally:
        if best[1] is not None:
            model.load_state_dict(best[1])
        model.eval()


def data_hash(bars: dict) -> str:
    """SHA-256 over every ticker's dates and OHLCV values, in ticker order."""
    h = hashlib.sha256()
    for sym in sorted(bars):
        df = bars[sym]
        h.update(sym.encode())
        h.update(df.index.to_numpy().astype("datetime64[ns]").astype(np.int64).tobytes())
        h.update(np.ascontiguousarray(df[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)).tobytes())
    return h.hexdigest()


def set_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)
        os.environ.setdefault("OMP_NUM_THREADS", str(n))


def new_model(cfg: Config, ws: WindowSet) -> QuantileRNN:
    return build_model(cfg, n_features=ws.x.shape[1], n_tickers=len(ws.names))


@dataclass
class TrainResult:
    run_dir: os.PathLike
    meta: dict
    history: list[EpochRecord]


def _versions() -> dict:
    import platform

    import pandas

    from . import __version__

    return {"forecaster": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "pandas": pandas.__version__}


def calibration_scales(model: QuantileRNN, ws: WindowSet, ends: np.ndarray, strategy: str,
                       coverage: float, device: torch.device) -> dict[str, list[float]]:
    """Volatility-scaled conformal factors per ticker and step from validation windows."""
    import pandas as pd

    from .inference import predict_scaled
    from .intervals import calibrate_scales

    q = predict_scaled(model, ws, ends, strategy, device=device)  # (B, H, Q)
    y = ws.targets(ends)  # (B, H)
    B, H = y.shape
    m = model.median_index
    frame = pd.DataFrame({
        "ticker": np.repeat(np.asarray(ws.names, dtype=object)[ws.ticker_id[ends]], H),
        "step": np.tile(np.arange(1, H + 1), B), "actual": y.ravel(),
        "lo": q[:, :, 0].ravel(), "mid": q[:, :, m].ravel(), "hi": q[:, :, -1].ravel(),
        "vol": np.repeat(ws.vol[ends], H)})
    return calibrate_scales(frame, coverage=coverage)


def train(cfg: Config, *, run_dir: os.PathLike | None = None, on_epoch=None, on_batch=None,
          lock_timeout: float = 0.0) -> TrainResult:
    """Train one global model over ``cfg.data.tickers`` and write its run directory."""
    from datetime import datetime, timezone
    from pathlib import Path

    from .checkpoint import save_run
    from .features import FEATURES
    from .store import load_bars
    from .tickers import validate_ticker
    from .windows import VOL_HALFLIFE, build_windows, make_splits

    if not cfg.data.tickers:
        raise ConfigError("no tickers to train on: pass --tickers or set data.tickers")
    tickers = list(dict.fromkeys(validate_ticker(t) for t in cfg.data.tickers))
    seed_everything(cfg.train.seed)
    set_threads(cfg.train.threads)
    bars = load_bars(cfg.data.source, cfg.data.data_dir, tickers)
    w = cfg.window
    splits = make_splits(bars, w.val_days, w.test_days)
    ws = build_windows(bars, w.lookback, w.horizon, splits)
    ends = {s: ws.ends(s) for s in ("train", "val", "test")}
    if len(ends["train"]) == 0 or len(ends["val"]) == 0:
        raise TrainingError(f"no {'training' if len(ends['train']) == 0 else 'validation'} "
                            "windows: shorten lookback/horizon/val_days or add history")
    device = resolve_device(cfg.train.device)
    model = new_model(cfg, ws).to(device)
    started = time.perf_counter()
    history: list[EpochRecord] = []
    for rec in fit(model, ws, cfg, device, ends["train"], ends["val"], on_batch=on_batch):
        history.append(rec)
        if on_epoch:
            on_epoch(rec)
    seconds = time.perf_counter() - started
    q = cfg.model.quantiles
    scales = calibration_scales(model, ws, ends["val"], cfg.model.strategy,
                                coverage=q[-1] - q[0], device=device)
    model.cpu()
    now = datetime.now(timezone.utc)
    if run_dir is None:
        run_dir = cfg.run_dir or Path("runs") / f"{cfg.model.cell}-{now:%Y%m%d-%H%M%S}"
    run_dir = Path(run_dir)
    best = min(history, key=lambda r: r.val_loss)
    info = {}
    for k, sym in enumerate(ws.tickers):
        lo, hi = ws.offsets[k], ws.offsets[k + 1]
        info[sym] = {"id": ws.names.index(sym), "first_date": str(bars[sym].index[0].date()),
                     "last_date": str(bars[sym].index[-1].date()), "rows": int(len(bars[sym])),
                     "train_rows": int((ws.split[lo:hi] == 0).sum()),
                     "scaler": ws.scalers[sym].to_dict(),
                     "conformal": [float(x) for x in scales.get(sym, [1.0] * w.horizon)]}
    meta = {
        "name": run_dir.name,
        "created_at": now.isoformat(timespec="seconds"),
        "config": cfg.model_dump(mode="json"),
        "features": {"names": FEATURES, "target": "log(close[t+h]/close[t]) / (ret_std*sqrt(h))",
                     "interval": f"median +- conformal scale x EWMA volatility (halflife {VOL_HALFLIFE})"},
        "tickers": info,
        "skipped": ws.skipped,
        "splits": splits.to_dict(),
        "windows": {s: int(len(e)) for s, e in ends.items()},
        "data_hash": data_hash(bars),
        "seed": cfg.train.seed,
        "device": str(device),
        "metrics": {"best_epoch": best.epoch, "best_val_loss": best.val_loss,
                    "epochs_run": len(history), "train_seconds": round(seconds, 3),
                    "interval_coverage_target": round(q[-1] - q[0], 6)},
        "versions": _versions(),
    }
    save_run(run_dir, model, meta, [r.as_row() for r in history])
    return TrainResult(run_dir=run_dir, meta={"format_version": 1, **meta}, history=history)
