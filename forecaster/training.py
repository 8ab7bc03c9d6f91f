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
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC

import numpy as np
import torch

from .config import Config
from .errors import ConfigError, TrainingError
from .forking import Stretches, epoch_chunks
from .models import QuantileRNN, build_model, pinball_loss
from .threads import usable_cores
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
    """Turns window indices into device tensors, one batch at a time.

    On CUDA (``resident``) the stacked features, log closes and target scales are copied to the
    device once and every batch is gathered there: only the (B,) window indices cross the bus.
    Elsewhere numpy gathers the batch (the tensors share its memory).
    """

    def __init__(self, ws: WindowSet, device: torch.device, one_step: bool, resident: bool | None = None):
        self.ws, self.device, self.one_step = ws, device, one_step
        self.resident = device.type == "cuda" if resident is None else resident
        if self.resident:
            self.x = torch.from_numpy(ws.x).to(device)  # (N, F)
            self.log_close = torch.from_numpy(ws.log_close).to(device)  # (N,)
            self.tscale = torch.from_numpy(ws.tscale).to(device)  # (K, H)
            self.ticker_id = torch.from_numpy(ws.ticker_id).to(device)  # (N,)
            self.back = torch.arange(1 - ws.lookback, 1, device=device)  # (L,)
            self.ahead = torch.arange(1, ws.horizon + 1, device=device)  # (H,)

    def __call__(self, ends: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.resident:
            e = torch.from_numpy(np.ascontiguousarray(ends)).to(self.device, non_blocking=True)
            tid = self.ticker_id[e]
            x = self.x[e[:, None] + self.back]
            cum = self.log_close[e[:, None] + self.ahead] - self.log_close[e][:, None]
            y = (cum / self.tscale[tid]).float()
            return x, tid, (y[:, :1] if self.one_step else y)
        x, tid = self.ws.inputs(ends)
        y = self.ws.targets(ends)
        if self.one_step:
            y = y[:, :1]
        return torch.from_numpy(x), torch.from_numpy(tid), torch.from_numpy(y)


def _autocast(device: torch.device, precision: str):
    enabled = precision == "bf16" and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def evaluate_loss(
    model: QuantileRNN,
    batches: Batches,
    ends: np.ndarray,
    quantiles: list[float],
    batch_size: int = 4096,
    precision: str = "fp32",
) -> float:
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


class Dist:
    """This process's place in a torchrun job (world size 1 when not distributed)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> torch.device:
        """Join the process group (NCCL on CUDA, gloo on the CPU); one GPU per local rank."""
        if not self.active:
            return device
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def shard(self, ends: np.ndarray) -> np.ndarray:
        """This rank's equal share (the tail that does not divide evenly is dropped, so every
        rank runs the same number of batches)."""
        if not self.active:
            return ends
        n = len(ends) - len(ends) % self.world
        return ends[self.rank : n : self.world]

    def sum(self, *values: float) -> list[float]:
        if not self.active:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


FUSED_ADAMW = ("cpu", "cuda")
"""Devices where AdamW runs as one fused kernel over all parameters (torch >= 2.4)."""


def _cloned(obj):
    """A copy of a (nested dict / list) state whose tensors share nothing with the original."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _cloned(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cloned(v) for v in obj]
    return obj


class Trainer:
    """AdamW, gradient clipping, LR halving on plateau, early stopping with best-weights restore.

    :meth:`epochs` yields one record per epoch. The state after each completed epoch (weights,
    optimiser, scheduler, data-order generator) is kept so an interrupted run can be saved and
    resumed exactly where it stopped.
    """

    def __init__(self, model: QuantileRNN, ws: WindowSet, cfg: Config, device: torch.device, dist: Dist | None = None):
        t = cfg.train
        self.cfg, self.ws, self.device = cfg, ws, device
        self.dist = dist or Dist()
        self.model = model
        self.net = model  # what is called: the DDP wrapper when distributed
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.opt = torch.optim.AdamW(
            model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=device.type in FUSED_ADAMW or None
        )
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, factor=0.5, patience=max(1, t.patience // 2))
        self.gen = torch.Generator().manual_seed(t.seed)
        one_step = cfg.model.strategy == "recursive"
        self.forking = t.mode == "forking"
        self.batches = Batches(ws, device, one_step=one_step)
        self.stretches = Stretches(ws, t.chunk, device, one_step) if self.forking else None
        self.epoch = 0
        self.best_val = math.inf
        self.best_state: dict | None = None
        self.stale = 0
        self.snapshot: dict | None = None  # state after the last completed epoch

    # -- resumable state ------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to continue after the last completed epoch."""
        return self.snapshot or self._capture()

    def _capture(self) -> dict:
        return {
            "epoch": self.epoch,
            "best_val": self.best_val,
            "stale": self.stale,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "best": self.best_state,
            "optimizer": _cloned(self.opt.state_dict()),
            "scheduler": self.sched.state_dict(),
            "generator": self.gen.get_state().clone(),
            "torch_rng": torch.get_rng_state(),
        }  # dropout draws from the global generator

    def restore(self, state: dict) -> None:
        self.epoch, self.best_val, self.stale = state["epoch"], state["best_val"], state["stale"]
        self.model.load_state_dict(state["model"])
        self.best_state = state["best"]
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        if state.get("torch_rng") is not None:
            torch.set_rng_state(state["torch_rng"])
        self.snapshot = state

    # -- the loop -------------------------------------------------------------------------------
    def _val_loss(self, val_ends: np.ndarray) -> float:
        mine = self.dist.shard(val_ends) if self.dist.active else val_ends
        loss = evaluate_loss(
            self.model, self.batches, mine, self.cfg.model.quantiles, precision=self.cfg.train.precision
        )
        total, n = self.dist.sum(loss * len(mine), len(mine))
        return total / max(n, 1)

    def _order(self, train_ends: np.ndarray):
        """This rank's share of the epoch's training items in order, and the items per step:
        windows (their last rows), or in forking mode :class:`Chunks` of origins."""
        if not self.forking:
            order = train_ends[torch.randperm(len(train_ends), generator=self.gen).numpy()]
            return self.dist.shard(order), self.cfg.train.batch_size
        chunks = epoch_chunks(train_ends, self.ws.ticker_id, self.cfg.train.chunk, self.gen)
        mine = chunks[self.dist.shard(np.arange(len(chunks)))]
        return mine, self.stretches_per_step(len(mine))

    def stretches_per_step(self, n_chunks: int) -> int:
        """``batch_size`` origins per step (at least one stretch), and more when that would
        take an epoch of more than ``epoch_steps`` steps: on a large data set a step costs
        little more for many more origins, and there are steps enough per epoch anyway."""
        t = self.cfg.train
        per = max(1, t.batch_size // t.chunk)
        if t.epoch_steps:
            per = max(per, -(-n_chunks // t.epoch_steps))
        return per

    def _loss(self, items, q: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The mean pinball loss over one step's items and the number of forecast origins in it."""
        prec = self.cfg.train.precision
        if not self.forking:
            x, tid, y = self.batches(items)
            with _autocast(self.device, prec):
                pred = self.net(x, tid)
            return pinball_loss(pred.float(), y, q), len(y)
        x, tid, y, mask = self.stretches(items)
        with _autocast(self.device, prec):
            pred = self.net(x, tid, self.ws.lookback - 1).float()  # (B, C, steps, Q): every origin of the chunk
        if items.count.min() < self.stretches.chunk:  # some chunks are short: only real origins count
            pred, y = pred[mask], y[mask]
        return pinball_loss(pred, y, q), items.origins

    def epochs(
        self, train_ends: np.ndarray, val_ends: np.ndarray, on_batch: Callable[[int], None] | None = None
    ) -> Iterator[EpochRecord]:
        t = self.cfg.train
        q = torch.tensor(self.cfg.model.quantiles, dtype=torch.float32, device=self.device)
        while self.epoch < t.epochs and self.stale < t.patience:
            epoch = self.epoch + 1
            start = time.perf_counter()
            self.net.train()
            order, per_step = self._order(train_ends)
            loss_sum = torch.zeros((), device=self.device)
            norm_sum = torch.zeros((), device=self.device)
            n_batches = n_targets = 0
            for i in range(0, len(order), per_step):
                loss, n = self._loss(order[i : i + per_step], q)
                finite = bool(torch.isfinite(loss))
                if self.dist.active:  # every rank must stop together
                    finite = self.dist.sum(float(not finite))[0] == 0
                if not finite:
                    raise TrainingError(
                        f"loss became {float(loss.detach())} at epoch {epoch}, batch {n_batches + 1}: "
                        "try a lower --lr; the last good run (if any) is kept"
                    )
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                self.opt.step()
                loss_sum += loss.detach()
                norm_sum += norm.detach()
                n_batches += 1
                n_targets += n
                if on_batch:
                    on_batch(n)
            val = self._val_loss(val_ends)
            if not math.isfinite(val):
                raise TrainingError(f"validation loss became {val} at epoch {epoch}")
            lr = self.opt.param_groups[0]["lr"]
            self.sched.step(val)
            if val < self.best_val - 1e-6:
                self.best_val, self.stale = val, 0
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            else:
                self.stale += 1
            self.epoch = epoch
            train_loss, norm_mean, samples = self.dist.sum(
                float(loss_sum) / max(n_batches, 1), float(norm_sum) / max(n_batches, 1), n_targets
            )
            w = self.dist.world
            self.snapshot = self._capture()
            yield EpochRecord(epoch, train_loss / w, val, norm_mean / w, lr, time.perf_counter() - start, int(samples))
            if self.stale >= t.patience:
                log.info("early stop at epoch %d (best val %.5f)", epoch, self.best_val)

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()


def fit(
    model: QuantileRNN,
    ws: WindowSet,
    cfg: Config,
    device: torch.device,
    train_ends: np.ndarray,
    val_ends: np.ndarray,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[EpochRecord]:
    """Train ``model`` in this process; yields a record per epoch and leaves the best
    validation weights in the model when the generator ends (or is closed)."""
    trainer = Trainer(model, ws, cfg, device)
    try:
        yield from trainer.epochs(train_ends, val_ends, on_batch)
    finally:
        trainer.restore_best()


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
    """torch's CPU threads for this process: ``n``, or one per usable core when 0.

    One thread is the default (``train.threads``): the small recurrent steps of these models
    gain little from a second thread on an idle machine, and a team of threads that waits on
    one another is many times slower as soon as another process wants the same cores. A fixed
    count also keeps a seed's results the same whatever else the machine is doing (the thread
    count changes how sums are split, and so their last bits)."""
    torch.set_num_threads(n if n > 0 else usable_cores())


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

    return {
        "forecaster": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
    }


def calibration_scales(
    model: QuantileRNN, ws: WindowSet, ends: np.ndarray, strategy: str, coverage: float, device: torch.device
) -> dict[str, list[float]]:
    """Volatility-scaled conformal factors per ticker and step from validation windows."""
    import pandas as pd

    from .inference import predict_scaled
    from .intervals import calibrate_scales

    q = predict_scaled(model, ws, ends, strategy, device=device)  # (B, H, Q)
    y = ws.targets(ends)  # (B, H)
    B, H = y.shape
    m = model.median_index
    frame = pd.DataFrame(
        {
            "ticker": np.repeat(np.asarray(ws.names, dtype=object)[ws.ticker_id[ends]], H),
            "step": np.tile(np.arange(1, H + 1), B),
            "actual": y.ravel(),
            "lo": q[:, :, 0].ravel(),
            "mid": q[:, :, m].ravel(),
            "hi": q[:, :, -1].ravel(),
            "vol": np.repeat(ws.vol[ends], H),
        }
    )
    return calibrate_scales(frame, coverage=coverage)


def tracked_scales(
    model: QuantileRNN,
    ws: WindowSet,
    conformal: dict[str, list[float]],
    strategy: str,
    coverage: float,
    device: torch.device,
) -> dict[str, list[float]]:
    """Per ticker, the online interval scales at its last bar: the validation scales tracked
    through the test split exactly as ``evaluate`` does (nothing here changes the weights)."""
    from .evaluation import online_scales
    from .inference import predict_scaled

    ends = ws.origins("test")
    if len(ends) == 0:
        return {}
    q = predict_scaled(model, ws, ends, strategy, device=device)
    return online_scales(q, ws, ends, conformal, model.median_index, coverage)[1]


RESUME = "resume.safetensors"


class Interrupted(TrainingError):
    """Training was stopped by SIGINT/SIGTERM; a resumable run was saved."""

    exit_code = 130


def _flatten_state(trainer: Trainer) -> tuple[dict, dict]:
    """The trainer's resumable state as flat tensors plus JSON metadata (safetensors format)."""
    import json

    st = trainer.state()
    tensors = {f"model.{k}": v.contiguous() for k, v in st["model"].items()}
    if st["best"] is not None:
        tensors.update({f"best.{k}": v.contiguous() for k, v in st["best"].items()})
    for i, slots in st["optimizer"]["state"].items():
        for name, v in slots.items():
            tensors[f"opt.{i}.{name}"] = torch.as_tensor(v).detach().cpu().contiguous()
    tensors["generator"] = st["generator"]
    tensors["torch_rng"] = st["torch_rng"]
    meta = {
        "epoch": st["epoch"],
        "best_val": st["best_val"],
        "stale": st["stale"],
        "param_groups": st["optimizer"]["param_groups"],
        "scheduler": st["scheduler"],
    }
    return tensors, {"state": json.dumps(meta, default=float)}


def _unflatten_state(tensors: dict, meta: dict) -> dict:
    import json

    m = json.loads(meta["state"])
    opt_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    return {
        "epoch": m["epoch"],
        "best_val": m["best_val"],
        "stale": m["stale"],
        "model": {k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
        "best": best,
        "optimizer": {"state": opt_state, "param_groups": m["param_groups"]},
        "scheduler": m["scheduler"],
        "generator": tensors["generator"],
        "torch_rng": tensors.get("torch_rng"),
    }


def read_resume(run_dir) -> tuple[dict, list[dict]]:
    """The saved trainer state and epoch history of an interrupted run."""
    from pathlib import Path

    import pandas as pd
    from safetensors import SafetensorError, safe_open

    from .errors import RunFormatError

    path = Path(run_dir) / RESUME
    if not path.is_file():
        raise RunFormatError(f"{run_dir} has nothing to resume (no {RESUME}: the run is complete)")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
        state = _unflatten_state(tensors, meta)
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise RunFormatError(f"{path} is not a readable resume file ({e})") from None
    history = pd.read_csv(Path(run_dir) / "history.csv").to_dict("records")
    return state, history


@contextmanager
def _sigterm_as_interrupt():
    """Let SIGTERM (what `kill` and systemd send) and SIGINT stop training like Ctrl-C does."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, handler)
    # a process started in the background by a shell ignores SIGINT; training listens anyway
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def train(
    cfg: Config,
    *,
    run_dir: os.PathLike | None = None,
    on_epoch=None,
    on_batch=None,
    lock_timeout: float = 0.0,
    resume: bool = False,
) -> TrainResult:
    """Train one global model over ``cfg.data.tickers`` and write its run directory.

    Under ``torchrun`` (WORLD_SIZE > 1) the windows are sharded across ranks with
    DistributedDataParallel and only rank 0 writes the run. SIGINT or SIGTERM saves a resumable
    run and raises :class:`Interrupted`; ``resume=True`` continues the run at ``run_dir``.
    """
    from datetime import datetime
    from pathlib import Path

    from .fsio import file_lock
    from .store import load_bars
    from .tickers import validate_ticker
    from .windows import Splits, build_windows, make_splits

    if not cfg.data.tickers:
        raise ConfigError("no tickers to train on: pass --tickers or set data.tickers")
    tickers = list(dict.fromkeys(validate_ticker(t) for t in cfg.data.tickers))
    now = datetime.now(UTC)
    if run_dir is None:
        run_dir = cfg.run_dir or Path("runs") / f"{cfg.model.cell}-{now:%Y%m%d-%H%M%S}"
    run_dir = Path(run_dir)
    state, history, splits = None, [], None
    if resume:
        from .checkpoint import read_meta

        old = read_meta(run_dir)
        state, rows = read_resume(run_dir)
        history = [EpochRecord(**{k: r[k] for k in EpochRecord.__dataclass_fields__}) for r in rows]
        splits = Splits.from_dict(old["splits"])
    dist = Dist()
    seed_everything(cfg.train.seed)
    set_threads(cfg.train.threads)
    bars = load_bars(cfg.data.source, cfg.data.data_dir, tickers)
    w = cfg.window
    splits = splits or make_splits(bars, w.val_days, w.test_days)
    ws = build_windows(bars, w.lookback, w.horizon, splits)
    ends = {s: ws.ends(s) for s in ("train", "val", "test")}
    if len(ends["train"]) == 0 or len(ends["val"]) == 0:
        raise TrainingError(
            f"no {'training' if len(ends['train']) == 0 else 'validation'} "
            "windows: shorten lookback/horizon/val_days or add history"
        )
    device = dist.setup(resolve_device(cfg.train.device))
    model = new_model(cfg, ws).to(device)
    trainer = Trainer(model, ws, cfg, device, dist)
    if state is not None:
        trainer.restore(state)
    lock = file_lock(run_dir.parent / f".{run_dir.name}.lock", lock_timeout) if dist.main else nullcontext()
    started = time.perf_counter()
    with lock, _sigterm_as_interrupt():
        try:
            for rec in trainer.epochs(ends["train"], ends["val"], on_batch=on_batch):
                history.append(rec)
                if on_epoch:
                    on_epoch(rec)
        except KeyboardInterrupt:
            if dist.main:
                _save(
                    run_dir,
                    trainer,
                    ws,
                    bars,
                    splits,
                    ends,
                    history,
                    cfg,
                    device,
                    now,
                    time.perf_counter() - started,
                    interrupted=True,
                )
            dist.close()
            raise Interrupted(
                f"training interrupted after epoch {trainer.epoch}; a resumable run "
                f"was saved to {run_dir}: continue with "
                f"`forecaster train --resume {run_dir}`"
            ) from None
        trainer.restore_best()
        meta = None
        if dist.main:
            meta = _save(
                run_dir,
                trainer,
                ws,
                bars,
                splits,
                ends,
                history,
                cfg,
                device,
                now,
                time.perf_counter() - started,
                interrupted=False,
            )
    dist.barrier()
    dist.close()
    return TrainResult(run_dir=run_dir, meta=meta or {}, history=history)


def _save(
    run_dir,
    trainer: Trainer,
    ws: WindowSet,
    bars,
    splits,
    ends,
    history,
    cfg: Config,
    device,
    now,
    seconds: float,
    interrupted: bool,
) -> dict:
    """Write the run (and, when interrupted, the resume state beside it)."""
    from .checkpoint import save_run
    from .features import FEATURES
    from .intervals import TRACKING_RATE
    from .windows import VOL_HALFLIFE

    model, w, q = trainer.model, cfg.window, cfg.model.quantiles
    if interrupted:
        tensors, extra = _flatten_state(trainer)
        if trainer.best_state is not None:
            model.load_state_dict(trainer.best_state)
        scales: dict = {}
        online: dict = {}
    else:
        tensors, extra = None, None
        scales = calibration_scales(model, ws, ends["val"], cfg.model.strategy, coverage=q[-1] - q[0], device=device)
        online = tracked_scales(model, ws, scales, cfg.model.strategy, coverage=q[-1] - q[0], device=device)
    model.cpu()
    info = {}
    for k, sym in enumerate(ws.tickers):
        lo, hi = ws.offsets[k], ws.offsets[k + 1]
        info[sym] = {
            "id": ws.names.index(sym),
            "first_date": str(bars[sym].index[0].date()),
            "last_date": str(bars[sym].index[-1].date()),
            "rows": int(len(bars[sym])),
            "train_rows": int((ws.split[lo:hi] == 0).sum()),
            "scaler": ws.scalers[sym].to_dict(),
            "conformal": [float(x) for x in scales.get(sym, [1.0] * w.horizon)],
        }
        if sym in online:  # the tracked scales for forecasts made from the last bar on
            info[sym]["conformal_online"] = online[sym]
    best = min(history, key=lambda r: r.val_loss) if history else None
    meta = {
        "name": run_dir.name,
        "status": "interrupted" if interrupted else "complete",
        "created_at": now.isoformat(timespec="seconds"),
        "config": cfg.model_dump(mode="json"),
        "features": {
            "names": FEATURES,
            "target": "log(close[t+h]/close[t]) / (ret_std*sqrt(h))",
            "interval": f"median +- conformal scale x EWMA volatility (halflife {VOL_HALFLIFE}); "
            f"scale tracked online through the test split (rate {TRACKING_RATE})",
        },
        "tickers": info,
        "skipped": ws.skipped,
        "splits": splits.to_dict(),
        "windows": {s: int(len(e)) for s, e in ends.items()},
        "data_hash": data_hash(bars),
        "seed": cfg.train.seed,
        "device": str(device),
        "world_size": trainer.dist.world,
        "metrics": {
            "best_epoch": best.epoch if best else None,
            "best_val_loss": best.val_loss if best else None,
            "epochs_run": len(history),
            "train_seconds": round(seconds, 3),
            "interval_coverage_target": round(q[-1] - q[0], 6),
        },
        "versions": _versions(),
    }
    extra_files = {RESUME: (tensors, extra)} if interrupted else {}
    save_run(run_dir, model, meta, [r.as_row() for r in history], extra_tensors=extra_files)
    return {"format_version": 1, **meta}
