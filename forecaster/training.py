"""Training: seeds, devices, the epoch loop, and ``train(config)`` which writes a run.

The loop (:func:`fit`) yields one :class:`EpochRecord` per epoch and leaves the best
validation weights in the model; callers decide what to draw and when to save.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import platform
import random
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__
from .baselines import GARCH_MAX_WINDOW, GARCH_MIN_RETURNS, fit_garch_each
from .checkpoint import (
    RESUME,
    FeatureSpec,
    GarchFit,
    Manifest,
    Origin,
    ResumeState,
    RunMetrics,
    SplitDates,
    TickerEntry,
    after_epoch,
    check_run_target,
    path_identity,
    read_manifest,
    read_resume,
    resume_command,
    run_lock_path,
    save_run,
    target_formula,
)
from .config import COVERAGE, Config
from .entry import stop_begun
from .entry import stopping as stop_said
from .errors import (
    EXIT_INTERRUPTED,
    ConfigError,
    DataError,
    ForecasterError,
    RunFormatError,
    RunWriteError,
    TemporaryFailure,
    TrainingError,
)
from .features import CALENDAR, FEATURES
from .forking import Stretches, epoch_chunks, plan_chunks
from .fsio import PathLike, file_in_the_way, file_lock, not_a_folder, refuse_empty_folders
from .intervals import median_weights, walk_forward_scales, with_median
from .metrics import POOLED
from .models import DRAW_TURN, QuantileRNN, build_model, eval_twin, pinball_loss
from .npinfer import NumpyQuantileRNN, predict_scaled
from .outputs import are_prices, has_dated_forecasts
from .pool import blocks, processes_for, workers
from .sessions import check_calendar, not_sessions
from .store import load_bars
from .threads import usable_cores
from .tickers import log_some, some_names, some_reasons, validate_ticker
from .windows import SPLITS, Splits, WindowSet, build_windows, make_splits, without_windows

log = logging.getLogger("forecaster")

LR_DECAY = 0.5
"""Learning-rate factor when the validation loss plateaus (for half the early-stopping patience)."""
MIN_IMPROVEMENT = 1e-6
"""A validation loss must beat the best by more than this to count as progress (float noise does not)."""


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


@contextmanager
def caller_state_kept():
    """torch's thread count and the random states of Python, numpy and torch as they were
    before, once the block ends: training sets them for itself (:func:`set_threads`,
    :func:`seed_everything`), and a program that trains from Python keeps its own."""
    threads = torch.get_num_threads()
    py, np_state, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


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
        raise ConfigError(_unavailable(name, "CUDA"))
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(_unavailable(name, "MPS"))
    return torch.device(name)


def _unavailable(name: str, shown: str) -> str:
    """Why a device cannot be used. It may come from --device, from train.device of a config
    file or from the config of the run that is resumed or retrained (a run trained on another
    machine): the key is named, and the flag that overrides it."""
    return (
        f"train.device is {name} (--device, or the config file, or the run resumed or retrained), but torch "
        f"sees no {shown} device: pass `--device auto` to use what this machine has"
    )


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
            self.scale = torch.from_numpy(ws.scale).to(device)  # (N,)
            self.sqrt_h = torch.from_numpy(ws.sqrt_h).to(device)  # (H,)
            self.ticker_id = torch.from_numpy(ws.ticker_id).to(device)  # (N,)
            self.back = torch.arange(1 - ws.lookback, 1, device=device)  # (L,)
            self.ahead = torch.arange(1, ws.horizon + 1, device=device)  # (H,)

    def __call__(self, ends: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.resident:
            e = torch.from_numpy(np.ascontiguousarray(ends)).to(self.device, non_blocking=True)
            tid = self.ticker_id[e]
            x = self.x[e[:, None] + self.back]
            cum = self.log_close[e[:, None] + self.ahead] - self.log_close[e][:, None]
            y = (cum / (self.scale[e][:, None] * self.sqrt_h)).float()
            return x, tid, (y[:, :1] if self.one_step else y)
        x, tid = self.ws.inputs(ends)
        y = self.ws.targets(ends)
        if self.one_step:
            y = y[:, :1]
        # on the CPU the tensors share numpy's memory; on another device (mps) they are copied there
        return tuple(torch.from_numpy(a).to(self.device) for a in (x, tid, y))


def peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process of the job went away
    (gloo's "Connection reset by peer" / "Connection closed by peer", a network error of the
    process group), not some other failure of a collective (out of memory, a size mismatch)."""
    import torch.distributed as dist

    text = str(exc)  # a process gone: its connection closed, or (its machine gone) no answer in time
    return isinstance(exc, dist.DistNetworkError) or bool(
        re.search(
            r"(reset|closed) by peer|connection (reset|closed|refused)|broken pipe"
            r"|timed out waiting \d+ms for (recv|send)",
            text,
            re.IGNORECASE,
        )
    )


def _autocast(device: torch.device, precision: str):
    enabled = precision == "bf16" and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


VALIDATION_BATCH = 4096
"""The most windows a validation batch holds."""
VALIDATION_PARTS = 8
"""A validation pass of fewer than ``8 x 4096`` windows on a CPU is cut into 8 batches (of at
least 128 windows), so that up to 8 cores can share even a small one."""


def validation_batch(n: int, device: torch.device) -> int:
    """Windows per validation batch for a pass of ``n``: a function of ``n`` and the device type
    only, never of the cores, so that the loss is the same on any machine of that type. On a
    CPU a pass is cut into :data:`VALIDATION_PARTS` batches (at least 128 windows, at most
    :data:`VALIDATION_BATCH`); elsewhere one thread runs it in the largest batches."""
    if device.type != "cpu":
        return VALIDATION_BATCH
    return min(VALIDATION_BATCH, max(128, -(-n // VALIDATION_PARTS)))


def evaluate_loss(
    model: QuantileRNN,
    batches: Batches,
    ends: np.ndarray,
    quantiles: list[float],
    batch_size: int | None = None,
    precision: str = "fp32",
    workers: int = 1,
) -> float:
    """Mean pinball loss over the windows ending at ``ends`` (eval mode).

    The windows go through in fixed batches of ``batch_size`` (by default
    :func:`validation_batch`'s), shared among ``workers`` threads (each runs whole batches, on
    one torch thread: nothing waits on anything but the last batch), and the batches' losses are
    added in their order: the result is the same, to the last bit, for any number of workers."""
    model.eval()
    if batch_size is None:
        batch_size = validation_batch(len(ends), batches.device)

    def one(start: int) -> tuple[float, int]:
        with torch.no_grad():  # grad mode is per thread
            x, tid, y = batches(ends[start : start + batch_size])
            with _autocast(batches.device, precision):
                pred = model(x, tid)
            return float(pinball_loss(pred.float(), y, quantiles)) * len(y), len(y)

    starts = range(0, len(ends), batch_size)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(min(workers, len(starts)), thread_name_prefix="validation") as pool:
            try:
                parts = list(pool.map(one, starts))
            except BaseException:  # Ctrl-C, SIGTERM, an error: the batches not started yet are dropped
                pool.shutdown(cancel_futures=True)
                raise
    else:
        parts = [one(s) for s in starts]
    total, n = 0.0, 0
    for loss, count in parts:
        total += loss
        n += count
    return total / max(n, 1)


WINDOW_PIECES = 2
"""Pieces each window-training batch is cut into on a CPU with ``train.threads = 1``."""


def window_pieces(device: torch.device, dist: Dist, forking: bool, halves: bool = True, threads: int = 1) -> int:
    """Pieces each training batch is cut into, each computed in a thread of its own on one torch
    thread and their gradients added in order: :data:`WINDOW_PIECES` in window training on a CPU
    with ``threads`` (``train.threads``) 1, the default, unless ``halves`` (``train.halves``) is
    off; else one. A window batch is big enough to share that way (a forking step's few long
    stretches are not: it does not gain from a second thread). The count follows the settings
    alone, never the cores (``--threads 2`` runs one torch thread on a one-core machine, and is
    still computed whole), so neither do a seed's dropout masks."""
    if not halves or forking or device.type != "cpu" or dist.active or threads != 1:
        return 1
    return WINDOW_PIECES


def burn_in_ahead(cfg: Config) -> bool:
    """Whether forking training computes each step's burn-in during the step before
    (``train.burn_in_ahead``): only where the burn-in has no gradient (``train.burn_in_grad``
    off) and no dropout (one layer, no dropout, or ``train.burn_in_dropout`` off), so that it
    draws nothing and its state depends on the weights alone."""
    t, m = cfg.train, cfg.model
    dropped = m.num_layers > 1 and m.dropout > 0 and t.burn_in_dropout
    return t.burn_in_ahead and not t.burn_in_grad and not dropped and cfg.window.lookback > 1


def validation_workers(device: torch.device, dist: Dist) -> int:
    """Threads sharing a validation pass's batches: one per usable core on a CPU where torch
    runs one thread (the default), else one. Whole batches a thread, so unlike a team of
    threads splitting every small operation, nothing spins while the cores are shared."""
    if device.type != "cpu" or dist.active or torch.get_num_threads() != 1:
        return 1
    return usable_cores()


class Dist:
    """This process's place in a torchrun job (world size 1 when not distributed, or ``alone``:
    a training that is one process whatever the environment says)."""

    def __init__(self, alone: bool = False):
        env = {} if alone else os.environ
        self.world = int(env.get("WORLD_SIZE", "1"))
        self.rank = int(env.get("RANK", "0"))
        self.local_rank = int(env.get("LOCAL_RANK", "0"))
        self.device = torch.device("cpu")  # where the collectives' tensors go: set by setup

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """The process that writes the run: rank 0 of a job, or the one process of a training
        that is not distributed (whatever a RANK left in the environment says)."""
        return not self.active or self.rank == 0

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
        if device.type == "cuda":  # NCCL reduces tensors on the GPU; gloo those on the CPU
            self.device = device
        return device

    def shard(self, ends: np.ndarray, whole: bool = False) -> np.ndarray:
        """This rank's equal share (the tail that does not divide evenly is dropped, so every
        rank runs the same number of training steps, each a collective); with ``whole``, every
        item, the shares differing by one at most (validation: its only collective is the sum)."""
        if not self.active:
            return ends
        n = len(ends) if whole else len(ends) - len(ends) % self.world
        return ends[self.rank : n : self.world]

    def sum(self, *values: float) -> list[float]:
        if not self.active:
            return list(values)
        import torch.distributed as dist

        # on the device the process group serves: NCCL (CUDA) reduces no CPU tensor
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def agree(self, failed: bool, value: int) -> tuple[bool, bool]:
        """Over every process: did any fail, and do all hold the same ``value`` (below 2**52)?
        One collective."""
        if not self.active:
            return failed, True
        import torch.distributed as dist

        t = torch.tensor([float(failed), float(value), -float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t[0] > 0), bool(t[1] == -t[2])

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

    Trains on windows or, in forking mode (``train.mode``), on stretches that put the loss at
    every origin of a chunk (:mod:`forecaster.forking`); either way ``batch_size`` origins a
    step and validation on ``lookback``-long windows from a zero state, as inference reads. A
    window batch may be computed in pieces side by side (:func:`window_pieces`).
    :meth:`epochs` yields one record per epoch. The state after each completed epoch (weights,
    optimiser, scheduler, data-order generator) is kept so an interrupted run can be saved and
    resumed exactly where it stopped.
    """

    def __init__(self, model: QuantileRNN, ws: WindowSet, cfg: Config, device: torch.device, dist: Dist | None = None):
        t = cfg.train
        self.cfg, self.ws, self.device = cfg, ws, device
        self.dist = dist or Dist()
        self.model = model
        model.burn_in_grad, model.burn_in_dropout = t.burn_in_grad, t.burn_in_dropout
        self.net = model  # what is called: the DDP wrapper when distributed
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.opt = torch.optim.AdamW(
            model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=device.type in FUSED_ADAMW or None
        )
        # every gradient a view of one buffer, so that zeroing, the norm and the clipping are one
        # operation each rather than one per parameter (not with DDP, which keeps its own buckets)
        self.grads = None if self.dist.active else flat_grads(model)
        self.plateau = max(1, t.patience // 2)  # epochs without a gain before the rate halves
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, factor=LR_DECAY, patience=self.plateau)
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
        self.val_workers = validation_workers(device, self.dist)
        self.pieces = window_pieces(device, self.dist, self.forking, t.halves, t.threads)
        # forking: each step's burn-in computed during the step before (see :meth:`_burn_in`)
        self.ahead = self.forking and burn_in_ahead(cfg)
        self.twin = eval_twin(model) if self.ahead else None
        self.params = [p for p in model.parameters() if p.requires_grad]

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
            # on a GPU dropout draws from the device's generator
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }  # dropout draws from the global generator

    def restore(self, state: dict) -> None:
        self.epoch, self.best_val, self.stale = state["epoch"], state["best_val"], state["stale"]
        self.model.load_state_dict(state["model"])
        self.best_state = state["best"]
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.sched.patience = self.plateau  # a resumed run's --patience applies to both of its uses
        self.gen.set_state(state["generator"])
        if state.get("torch_rng") is not None:
            torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.snapshot = state

    # -- the loop -------------------------------------------------------------------------------
    def _val_loss(self, val_ends: np.ndarray) -> float:
        mine = self.dist.shard(val_ends, whole=True) if self.dist.active else val_ends
        loss = evaluate_loss(
            self.model,
            self.batches,
            mine,
            self.cfg.model.quantiles,
            precision=self.cfg.train.precision,
            workers=self.val_workers,
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

    def _loss(self, items, q: torch.Tensor, ready: tuple | None = None) -> tuple[torch.Tensor, int]:
        """The mean pinball loss over one step's items and the number of forecast origins in it;
        in forking mode ``ready`` is their stretches and burn-in state made beforehand
        (:meth:`_burn_in`), if they were."""
        prec = self.cfg.train.precision
        if not self.forking:
            x, tid, y = self.batches(items)
            with _autocast(self.device, prec):
                pred = self.net(x, tid)
            return pinball_loss(pred.float(), y, q), len(y)
        (x, tid, y, mask), state = ready if ready is not None else (self.stretches(items), None)
        with _autocast(self.device, prec):
            # (B, C, steps, Q): every origin of the chunk
            pred = self.net(x, tid, self.ws.lookback - 1, state).float()
        if items.count.min() < self.stretches.chunk:  # some chunks are short: only real origins count
            pred, y = pred[mask], y[mask]
        return pinball_loss(pred, y, q), items.origins

    def _burn_in(self, items) -> tuple[tuple, torch.Tensor | tuple]:
        """Forking mode with :attr:`ahead`: the stretches of ``items`` and their burn-in state,
        computed as inference computes it (:func:`forecaster.models.eval_twin`) from the weights
        as they are now. The trainer makes them for the next step while this one runs (in a
        thread of the pool, or else in turn after this step's backward pass: the weights, the
        numbers and the draws are the same either way, for it draws nothing), and for an
        epoch's first step from its own weights."""
        batch = self.stretches(items)
        with _autocast(self.device, self.cfg.train.precision):  # as the chunk runs (bf16 on a GPU: not in a thread)
            return batch, self.twin.burn_in(batch[0], batch[1], self.ws.lookback - 1)

    def _pool_threads(self) -> int:
        """Threads beside this one that an epoch's steps use: the window pieces' (one per
        usable core, up to :attr:`pieces`), or one for the next forking step's burn-in on a CPU
        with one torch thread (``train.threads``) where two cores are usable; 0: no pool."""
        cores = usable_cores()
        if cores < 2:
            return 0
        if self.pieces > 1:
            return min(self.pieces, cores)
        solo = self.device.type == "cpu" and not self.dist.active and self.cfg.train.threads == 1
        return 1 if self.ahead and solo else 0

    def _pieces_backward(self, items: np.ndarray, q: torch.Tensor, pool: ThreadPoolExecutor | None):
        """The loss and gradient of one window batch, computed as :attr:`pieces` pieces side by
        side (in ``pool``'s threads; in this one without a pool): each piece's loss weighted by its
        share of the windows, the first piece's gradient put into ``.grad`` and the others' added
        to it in their order. Dropout's draws are made in the pieces' order
        (:data:`forecaster.models.DRAW_TURN`)."""
        parts = np.array_split(items, min(self.pieces, len(items)))
        drawn = [threading.Event() for _ in parts]  # piece i has made all its random draws

        def piece(i: int) -> tuple[torch.Tensor, tuple | None]:
            # grad mode and autocast are per thread: the same in the pool's threads as in the
            # caller's (a CPU trains in fp32), whatever the caller has set
            with torch.enable_grad(), torch.autocast("cpu", enabled=False):
                DRAW_TURN.wait = drawn[i - 1].wait if i else None
                try:
                    loss, n = self._loss(parts[i], q)
                finally:  # the next piece must not wait for a piece that failed
                    DRAW_TURN.wait = None
                    drawn[i].set()
                share = loss * (n / len(items))
                if i == 0:
                    share.backward()
                    return loss.detach() * n, None
                return loss.detach() * n, torch.autograd.grad(share, self.params, allow_unused=True)

        if pool is None:
            done = [piece(i) for i in range(len(parts))]
        else:
            futures = [pool.submit(piece, i) for i in range(len(parts))]
            done = [f.result() for f in futures]
        total = done[0][0]
        for weighted, grads in done[1:]:
            total = total + weighted
            for p, g in zip(self.params, grads):
                if g is None:
                    continue
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.add_(g)
        return total / len(items), len(items)

    def epochs(
        self, train_ends: np.ndarray, val_ends: np.ndarray, on_batch: Callable[[int], None] | None = None
    ) -> Iterator[EpochRecord]:
        workers = self._pool_threads()
        if not workers:
            yield from self._epochs(train_ends, val_ends, on_batch, None)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="training") as pool:
            yield from self._epochs(train_ends, val_ends, on_batch, pool)

    def _epochs(
        self,
        train_ends: np.ndarray,
        val_ends: np.ndarray,
        on_batch: Callable[[int], None] | None,
        pool: ThreadPoolExecutor | None,
    ) -> Iterator[EpochRecord]:
        t = self.cfg.train
        with torch.inference_mode(False):  # a caller's inference mode (per thread) never reaches training
            q = torch.tensor(self.cfg.model.quantiles, dtype=torch.float32, device=self.device)
            if self.snapshot is None:  # stopped inside the first epoch, a run resumes from its start
                self.snapshot = self._capture()
        while not self.finished:
            with torch.inference_mode(False):
                rec = self._epoch(train_ends, val_ends, on_batch, pool, q)
            yield rec
            if self.stale >= t.patience:
                log.info("early stop at epoch %d (best val %.5f)", rec.epoch, self.best_val)

    def _epoch(
        self,
        train_ends: np.ndarray,
        val_ends: np.ndarray,
        on_batch: Callable[[int], None] | None,
        pool: ThreadPoolExecutor | None,
        q: torch.Tensor,
    ) -> EpochRecord:
        """One epoch: its training steps, then the validation loss, the schedule and the best weights."""
        t = self.cfg.train
        epoch = self.epoch + 1
        start = time.perf_counter()
        self.net.train()
        order, per_step = self._order(train_ends)
        loss_sum = torch.zeros((), device=self.device)
        norm_sum = torch.zeros((), device=self.device)
        n_batches = n_targets = 0
        ready = None  # forking with the burn-in ahead: this step's stretches and burn-in state
        for i in range(0, len(order), per_step):
            raise_if_stopped()
            items = order[i : i + per_step]
            if self.grads is None:
                self.opt.zero_grad(set_to_none=True)
            else:
                self.grads.zero_()
            if self.ahead:
                ready = ready or self._burn_in(items)  # an epoch's first step: from its own weights
                following = order[i + per_step : i + 2 * per_step]
                job = pool.submit(self._burn_in, following) if pool is not None and len(following) else None
            if self.pieces > 1:  # the gradient too
                loss, n = self._pieces_backward(items, q, pool)
            else:
                with torch.enable_grad():  # whatever the caller has set
                    loss, n = self._loss(items, q, ready)
            finite = bool(torch.isfinite(loss))
            if self.dist.active:  # every rank must stop together
                finite = self.dist.sum(float(not finite))[0] == 0
            if not finite:
                raise Diverged(
                    f"loss became {float(loss.detach())} at epoch {epoch}, batch {n_batches + 1}: try a lower --lr"
                )
            if self.pieces == 1:
                loss.backward()
            if self.ahead:  # before the update: the next burn-in reads the weights this step read
                ready = (job.result() if job is not None else self._burn_in(following)) if len(following) else None
            norm = self._clip(t.grad_clip)
            self.opt.step()
            loss_sum += loss.detach()
            norm_sum += norm.detach()
            n_batches += 1
            n_targets += n
            if on_batch:
                on_batch(n)
        val = self._val_loss(val_ends)
        if not math.isfinite(val):
            raise Diverged(f"validation loss became {val} at epoch {epoch}")
        lr = self.opt.param_groups[0]["lr"]
        self.sched.step(val)
        if val < self.best_val - MIN_IMPROVEMENT:
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
        return EpochRecord(epoch, train_loss / w, val, norm_mean / w, lr, time.perf_counter() - start, int(samples))

    def _clip(self, max_norm: float) -> torch.Tensor:
        """Scale the gradient down to a global norm of at most ``max_norm`` (as
        ``torch.nn.utils.clip_grad_norm_`` does); returns the norm before."""
        if self.grads is None:
            return torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        norm = torch.linalg.vector_norm(self.grads)
        self.grads.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        return norm

    @property
    def finished(self) -> bool:
        """Whether :meth:`epochs` has no epoch left to train (its budget spent, or stopped early)."""
        t = self.cfg.train
        return self.epoch >= t.epochs or self.stale >= t.patience

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
    trainer = Trainer(model, ws, cfg, device, Dist(alone=True))
    try:
        yield from trainer.epochs(train_ends, val_ends, on_batch)
    finally:
        trainer.restore_best()


def flat_grads(model: torch.nn.Module) -> torch.Tensor | None:
    """One zeroed buffer holding every parameter's gradient, each ``p.grad`` a view of it (the
    backward pass adds into an existing gradient in place), or None where the parameters differ
    in dtype or device."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or len({(p.dtype, p.device) for p in params}) != 1:
        return None
    flat = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat


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
    cores = usable_cores()
    if n > cores:  # threads beyond the cores only wait on one another, many times slower
        log.warning(
            "train.threads (--threads) is %d, more than the %d cores this process may use: it trains on %d",
            n,
            cores,
            cores,
        )
        n = cores
    torch.set_num_threads(n if n > 0 else cores)


def new_model(cfg: Config, ws: WindowSet) -> QuantileRNN:
    return build_model(cfg, n_features=ws.x.shape[1], n_tickers=len(ws.names), features=FEATURES)


def numpy_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's weights as numpy arrays (the run's and the numpy forward pass's format)."""
    return {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}


@dataclass
class TrainResult:
    run_dir: Path
    manifest: Manifest | None  # None on the ranks of a distributed job that do not write the run
    history: list[EpochRecord]


class Diverged(TrainingError):
    """The loss (or the validation loss) stopped being a finite number: the weights diverged."""


class Interrupted(TrainingError):
    """Training was stopped by SIGINT/SIGTERM; a resumable run was saved. ``details``: what
    the interrupted command left (for train, ``run_dir`` and ``resumable``), as its --json
    output gives it. ``shown``: whether this process says so; in a distributed job only rank 0
    does (the one that saves the run), the others exit 130 without a word, so the line is
    printed once, not once per process."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str, details: dict | None = None, *, shown: bool = True):
        super().__init__(message)
        self.details = dict(details or {})
        self.shown = shown


@dataclass
class TrainingData:
    """The bars a run trains on, its splits, the windows over them and each split's windows."""

    bars: dict[str, pd.DataFrame]
    splits: Splits
    ws: WindowSet
    ends: dict[str, np.ndarray]


_ONE_TRAINING = threading.RLock()
"""Held by :func:`train` (again by one nested in it: a retrain's, a search's trial)."""


def _training_lock_free() -> None:
    """A process forked while another thread trained has the lock free: that thread is not in
    it to let the lock go, and a training there would wait for ever."""
    global _ONE_TRAINING
    _ONE_TRAINING = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_training_lock_free)

_STOPS: list[list[int]] = []
"""The signals received by each :func:`sigterm_as_interrupt` now open, the innermost last."""


def raise_if_stopped() -> None:
    """Raise again the stop that a signal asked for and that was lost: its KeyboardInterrupt,
    raised wherever the program happened to be, fell inside a finalizer (a database connection's
    cleanup, collected at that moment), where Python reports it as ignored and drops it. Called
    before each training step and each trial of a search, so that the stop still stops them."""
    if any(_STOPS):  # an outer one's too: a search's, lost between two trials
        raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt():
    """Let SIGTERM (what `kill` and systemd send) and SIGINT stop training like Ctrl-C does,
    once: the signals after the first are ignored while what it stopped saves its work."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    stopping = []
    stop_begun(False)  # nothing is stopping as this begins (a process may train more than once)

    def handler(signum, frame):
        # once: a second signal (torchrun's SIGTERM after Ctrl-C) must not cut short the save
        # that the first one started (here or in a training nested in this one, as retrain's
        # is), nor, once the command line's handlers are back, the line that says what it kept
        if not stopping and not stop_said():
            stopping.append(signum)
            stop_begun()
            raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, handler)
    # a process started in the background by a shell ignores SIGINT; training listens anyway
    old_int = signal.signal(signal.SIGINT, handler)
    _STOPS.append(stopping)
    old_hook = sys.unraisablehook

    def unraisable(info):
        # the stop dropped in a finalizer: not a second message, as it is kept (raise_if_stopped)
        if not (stopping and isinstance(info.exc_value, KeyboardInterrupt)):
            old_hook(info)

    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = old_hook
        _STOPS.pop()
        if _STOPS:  # a stop that what this covered ended without (lost after its last step): the
            _STOPS[-1].extend(stopping)  # enclosing one's now, a retrain's or a search's, to stop at its next check
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def train(
    cfg: Config,
    *,
    run_dir: PathLike | None = None,
    on_epoch=None,
    on_batch=None,
    lock_timeout: float = 0.0,
    resume: bool = False,
    keep_diverged: bool = True,
    distributed: bool = True,
    checkpoints: bool = True,
    origin: Origin | None = None,
) -> TrainResult:
    """Train one global model over ``cfg.data.tickers`` and write its run directory.

    Under ``torchrun`` (WORLD_SIZE > 1) the windows are sharded across ranks with
    DistributedDataParallel and only rank 0 writes the run; ``distributed=False`` trains in
    this process alone whatever the environment says (a tuning trial, a retrain's challenger:
    a job runner may set WORLD_SIZE for every process it starts). SIGINT or SIGTERM saves a resumable
    run and raises :class:`Interrupted`; ``resume=True`` continues the run at ``run_dir``. A
    NaN loss raises :class:`Diverged`, after writing the best epoch before it as the run when
    ``keep_diverged`` (a tuning trial or a challenger, which only the finished run serves, do not).
    Every ``train.checkpoint_every`` seconds a new run (or the run resumed) is saved as an
    interrupted one, so that a process killed outright can be resumed from there
    (:class:`_Checkpoints`); ``checkpoints=False`` saves none (a tuning trial, whose run goes; a
    retrain's challenger, trained again rather than resumed). ``origin``: the tuning study that
    chose the configuration, recorded in every save of the run (a run resumed keeps its own).
    """
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a Config (from forecaster.load_config), not {type(cfg).__name__}")
    refuse_empty_folders(run_dir=run_dir)
    if resume and run_dir is None and cfg.run_dir is None:  # not a new run named after the time
        raise ConfigError("resume=True continues the run at run_dir: name it (run_dir=..., or the config's run_dir)")
    # one training at a time in a process: the seeds, random streams and thread count it sets are
    # the process's, so two at once from a program's threads drew from each other's streams
    with _ONE_TRAINING, caller_state_kept():  # a library caller's threads and random streams are theirs again after
        now = datetime.now(UTC)
        named = None if (run_dir or cfg.run_dir) is None else Path(run_dir or cfg.run_dir)
        stopped = _stopped_before_training(named, resume, Dist(alone=not distributed), "as it started")
        # one stop handler from here to the end: a stop before the run's own (:func:`_train`'s)
        # takes over, as the run's folder is named or made, is training's own too, not the
        # command line's generic line; `starting` is emptied once the run's own has taken over
        with sigterm_as_interrupt(), stopped as starting:
            tickers = checked_tickers(cfg)
            # predict dates its forecasts with the calendar: a typo stops here. run.json records it by
            # its exchange's name (XNYS for nyse), and the tickers as validated (AAPL for aapl, each
            # once), which later commands read back
            calendar = check_calendar(cfg.data.calendar)
            data = cfg.data.model_copy(update={"tickers": tickers, "calendar": calendar})
            cfg = cfg.model_copy(update={"data": data})

            def into(path: Path, reserved: bool = False) -> TrainResult:
                how = (on_epoch, on_batch, lock_timeout, resume, keep_diverged, distributed, checkpoints, origin)
                return _train(cfg, tickers, path, now, *how, starting=starting, reserved=reserved)

            if run_dir is not None or cfg.run_dir is not None or not Dist(alone=not distributed).main:
                return into(Path(run_dir or cfg.run_dir or _default_run_dir(cfg, now)))
            # a folder named after the second: made now, so that two trainings started in the same
            # second do not write one run over the other; removed again if nothing is written to it
            run_dir = _reserve(_default_run_dir(cfg, now))
            try:
                return into(run_dir, reserved=True)
            except BaseException:
                with suppress(OSError):
                    run_dir.rmdir()  # only while empty: an interrupted run saved there stays
                raise


@contextmanager
def _signals_ignored():
    """SIGINT and SIGTERM ignored while a resumable run is saved (in the main thread): a second
    Ctrl-C, or the SIGTERM torchrun sends every process once one has stopped, would otherwise cut
    the save short and lose the epochs it keeps."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


@contextmanager
def _stopped_before_training(run_dir: Path | None, resume: bool, dist: Dist, what: str = "") -> Iterator[list[str]]:
    """A stop (Ctrl-C, SIGTERM) before the first epoch, ``what`` the command was doing then (the
    list it yields, to change as the work goes on): :class:`Interrupted`, with the line that
    nothing was written (a run being resumed is left as it was, to resume), as a stop during
    the epochs gives its own."""
    doing = [what]
    try:
        yield doing
    except KeyboardInterrupt:
        if not doing:  # emptied: a stop the epochs' own handling (or the run once written) meets, as it is
            raise
        what = doing[0]
        dist.close()
        then = f"continue with {resume_command(run_dir)}" if resume else "run the same command again"
        where = "" if run_dir is None else f" to {run_dir}"
        raise Interrupted(
            f"training interrupted before its first epoch{', ' + what if what else ''}: nothing was written{where}; "
            f"{then}",
            {"run_dir": run_dir, "resumable": resume and dist.main, "saved": False},
            shown=dist.main,
        ) from None


def _default_run_dir(cfg: Config, now: datetime) -> Path:
    return Path("runs") / f"{cfg.model.cell}-{now:%Y%m%d-%H%M%S}"


def _reserve(path: Path) -> Path:
    """A new, empty folder at ``path``, or at ``path-2``, ``path-3``... when that one exists."""
    candidate = path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(2):
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                if not os.path.lexists(candidate):  # not a name taken: something else is in the way
                    raise
                candidate = path.with_name(f"{path.name}-{n}")
    except OSError as exc:
        parent = path.parent
        if blocker := file_in_the_way(parent):
            why = not_a_folder(blocker)
        elif parent.is_symlink() and not parent.exists():
            why = f"{parent} is a link to {os.readlink(parent)}, which is not there (or loops)"
        else:
            why = exc.strerror or str(exc)
        raise RunFormatError(f"cannot make the run directory {candidate}: {why}") from None
    raise AssertionError("unreachable")


def _train(
    cfg: Config,
    tickers: list[str],
    run_dir: Path,
    now: datetime,
    on_epoch,
    on_batch,
    lock_timeout: float,
    resume: bool,
    keep_diverged: bool,
    distributed: bool = True,
    checkpoints: bool = True,
    origin: Origin | None = None,
    starting: list[str] | None = None,
    reserved: bool = False,
) -> TrainResult:
    """:func:`train` into ``run_dir``, its config checked (the other arguments are train's).
    ``starting``: what :func:`train`'s own stop before training yielded, emptied here once this
    run's takes over (a stop later is this one's to say). ``reserved``: ``run_dir`` is the
    folder :func:`train` made for a run named after the time, removed again when nothing is
    written to it, so a stop before the first epoch names no folder."""
    dist = Dist(alone=not distributed)
    manifest = None
    diverged = None
    every = (cfg.train.checkpoint_every or None) if checkpoints and dist.main else None  # 0: none
    with ExitStack() as held:
        # `kill` from here to the first epoch stops it like Ctrl-C, with one line saying nothing was written
        named = None if reserved else run_dir
        with _stopped_before_training(named, resume, dist, "while the data were read") as doing:
            if starting is not None:
                starting.clear()  # a stop from here on is said by this one (or, after the epochs, as it is)
            held.enter_context(sigterm_as_interrupt())
            check_run_target(run_dir)  # refused now, not once the epochs are spent
            wanted = resolve_device(cfg.train.device)  # and a device this machine lacks, before the data are read
            _check_data_outside(run_dir, cfg)
            read_as = path_identity(run_dir) if resume else None  # which run was read: the lock is taken later
            before = _resume_point(run_dir, cfg) if resume else None
            earlier = None if resume else _earlier_forecasts(run_dir, cfg)
            state, history, splits, seconds_before = (None, [], None, 0.0) if before is None else before[1:]
            if before is not None:
                origin = before[0].origin  # a tuned run resumed: still the study's
            seed_everything(cfg.train.seed)
            set_threads(cfg.train.threads)
            # every process joins the group before it reads the data, so that one whose data
            # fail can tell the others, which would otherwise wait for it until gloo's timeout
            device = dist.setup(wanted)
            try:
                data = load_training_data(cfg, tickers, splits)
                if before is not None:
                    _check_same_data(before[0], data.ws, run_dir, before[1].fitted_on, data)
            except Exception as exc:
                if not dist.active:
                    raise
                _same_data(dist, None, exc)
            if dist.active:
                _same_data(dist, data, None)
                _check_shares(cfg, data, dist.world)
            if cfg.train.precision == "bf16" and device.type != "cuda" and dist.main:
                log.warning("--precision bf16 is autocast on CUDA only: training on %s runs in fp32", device.type)
            t = cfg.train
            if t.mode == "forking" and t.batch_size % t.chunk and dist.main:  # a step takes whole chunks
                per = max(1, t.batch_size // t.chunk)
                log.warning(
                    "--batch-size %d is not a multiple of --chunk %d: each forking step takes %d whole chunk(s), "
                    "%d forecast origins",
                    t.batch_size,
                    t.chunk,
                    per,
                    per * t.chunk,
                )
            trainer = Trainer(new_model(cfg, data.ws).to(device), data.ws, cfg, device, dist)
            if state is not None:
                try:
                    trainer.restore(_trainer_state(state))
                except torch.cuda.OutOfMemoryError as exc:  # the device's, not the file's fault
                    raise TrainingError(
                        f"{device} ran out of memory loading the state to resume ({_first_line(exc)}); nothing "
                        f"was changed: resume on the CPU with {resume_command(run_dir)[:-1]} --device cpu`"
                    ) from None
                except (RuntimeError, ValueError, TypeError, KeyError) as exc:  # what the checks cannot see
                    why = " ".join(str(exc).split())[:300]
                    raise RunFormatError(
                        f"{run_dir / RESUME} cannot be loaded ({why}): the run cannot be resumed; train it again "
                        "without --resume"
                    ) from None
            doing[0] = "while it waited for the run directory's lock"
            held.enter_context(file_lock(run_lock_path(run_dir), lock_timeout) if dist.main else nullcontext())
            doing[0] = ""
            # entered once the lock is held: whether the folder holds something a checkpoint must not replace
            saver = held.enter_context(_Checkpoints(run_dir, every, resume, trainer.epoch))
            if resume and dist.main and path_identity(run_dir) != read_as:
                # another training wrote the run while this one waited for its lock (finished it, or
                # trained a new one there): the state read before would go on from a stale epoch
                raise TemporaryFailure(
                    f"{run_dir} was written by another training while this one waited for its lock; nothing was "
                    f"changed: run {resume_command(run_dir)} again to resume what is there now"
                )
            if not resume and dist.main:
                _warn_of_an_interrupted_run(run_dir)

        started = time.perf_counter() - seconds_before  # a resumed run counts the time it trained before

        def checkpoint() -> None:
            seconds = time.perf_counter() - started
            _save(run_dir, trainer, data, history, cfg, now, seconds, interrupted=True, origin=origin, keep=True)

        try:
            try:
                for rec in trainer.epochs(data.ends["train"], data.ends["val"], on_batch=on_batch):
                    history.append(rec)
                    if on_epoch:
                        on_epoch(rec)
                    if saver.due(trainer):
                        saver.save(checkpoint, trainer.epoch)
            except torch.cuda.OutOfMemoryError as exc:
                # a tuning trial's or a challenger's run goes with it: nothing to keep
                keep = checkpoint if checkpoints and dist.main else None
                raise _out_of_memory(exc, device, trainer, saver, keep) from None
            except Diverged as exc:  # a NaN loss: the last good checkpoint is kept, if there is one
                if not keep_diverged:
                    raise
                if trainer.best_state is None:
                    raise Diverged(
                        f"{exc}; no epoch finished, so nothing was written to {run_dir} (a run already there is kept)"
                    ) from None
                diverged = exc
            trainer.restore_best()
            if dist.main:  # calibration and writing take a while: a stop then keeps the epochs too
                seconds = time.perf_counter() - started
                try:
                    manifest = _save(run_dir, trainer, data, history, cfg, now, seconds, origin=origin)
                except RunWriteError as exc:  # a full disk: the last checkpoint stays, to finish later
                    raise saver.kept(exc) from None
                except Diverged as exc:  # weights that forecast no finite price: no run is written
                    why = f"{exc}: try a lower --lr or train.weight_decay"
                    if diverged is not None:
                        why = (
                            f"{diverged}; the best epoch before it, {kept_epoch(history).epoch}, cannot be kept: {exc}"
                        )
                    if not keep_diverged:  # a trial or a challenger: its run was never to be kept
                        raise Diverged(why) from None
                    raise Diverged(f"{why}; nothing was written to {run_dir} (a run already there is kept)") from None
                if keep_diverged and diverged is None:  # not a trial nor a challenger, which are compared with others
                    _warn_if_worse_than_no_move(trainer, data, manifest)
        except (KeyboardInterrupt, RuntimeError) as exc:
            lost = isinstance(exc, RuntimeError)
            if lost and not (dist.active and peer_lost(exc)):
                raise
            # another process of a distributed job stopped (killed, or its node gone): the epochs
            # trained so far are kept as they are on Ctrl-C, not lost with an unexpected error
            stop_begun()  # torchrun's SIGTERM, which follows, must not cut the save or its line short
            unsaved = None  # why the resumable run could not be saved (a full disk)
            if dist.main:
                seconds = time.perf_counter() - started
                try:
                    try:
                        with _signals_ignored():  # torchrun's SIGTERM after a lost process: the save finishes
                            _save(run_dir, trainer, data, history, cfg, now, seconds, interrupted=True, origin=origin)
                    except KeyboardInterrupt:  # one already pending as the save began: saved again, whole
                        with _signals_ignored():
                            _save(run_dir, trainer, data, history, cfg, now, seconds, interrupted=True, origin=origin)
                except RunWriteError as e:
                    unsaved = e
            if not lost:
                dist.close()  # a group that lost a member cannot be left in order
            first = _first_line(exc) if lost else ""
            why = f"another process of the distributed job stopped ({first})" if lost else "training interrupted"
            if unsaved is not None:
                raise _unsaved(why, trainer.epoch, unsaved, run_dir) from None
            raise Interrupted(
                f"{why} {after_epoch(trainer.epoch)}; a resumable run was saved to {run_dir}: "
                f"continue with {resume_command(run_dir)}",
                {"run_dir": run_dir, "resumable": dist.main},
                shown=dist.main,
            ) from None
        if dist.main:
            if earlier is not None:
                log.warning(
                    "%s replaced an earlier run of that name, whose forecasts are in %s: `forecaster score` "
                    "cannot tell them from this model's unless they are moved aside (or train under a new name)",
                    run_dir,
                    earlier,
                )
    dist.barrier()
    dist.close()
    if diverged is not None:
        kept = kept_epoch(history)
        raise Diverged(
            f"{diverged}; the last good checkpoint, epoch {kept.epoch} (validation loss {kept.val_loss:.5f}), "
            f"was calibrated and written to {run_dir}, a complete run that forecasts"
        )
    return TrainResult(run_dir=run_dir, manifest=manifest, history=history)


def no_move_loss(ws: WindowSet, ends: np.ndarray, quantiles: list[float], one_step: bool) -> float:
    """The validation loss of a forecast of no move at all (every quantile 0) over the windows
    ending at ``ends``, pooled as :func:`evaluate_loss` pools them (the first step alone for a
    one-step model); NaN without windows. The targets alone are read, not the windows' inputs."""
    q = np.asarray(quantiles, dtype=np.float64)
    total, n = 0.0, 0
    for start in range(0, len(ends), 65536):
        y = ws.targets(ends[start : start + 65536]).astype(np.float64)[..., None]  # (B, H, 1)
        if one_step:
            y = y[:, :1]
        total += float(np.maximum(q * y, (q - 1) * y).sum())
        n += y.shape[0] * y.shape[1] * len(q)
    return total / n if n else math.nan


def _warn_if_worse_than_no_move(trainer: Trainer, data: TrainingData, manifest: Manifest) -> None:
    """Say so when the run's best validation loss is no better than forecasting no move at all:
    training went wrong (a learning rate far too high, say) and its forecasts, finite as they
    are, should not be used before they are evaluated."""
    best = manifest.metrics.best_val_loss
    cfg = trainer.cfg
    flat = no_move_loss(data.ws, data.ends["val"], cfg.model.quantiles, cfg.model.strategy == "recursive")
    if math.isfinite(flat) and best >= flat:
        log.warning(
            "the validation pinball loss %.4f is no better than forecasting no move at all (%.4f): training "
            "went wrong (a learning rate, %g, too high?) and the run's forecasts and intervals are not to be "
            "trusted; evaluate it before use",
            best,
            flat,
            trainer.cfg.train.lr,
        )


def _warn_of_an_interrupted_run(run_dir: Path) -> None:
    """A new training into a folder that holds an interrupted run (one stopped, or killed after
    a checkpoint, perhaps while this one waited for its lock) replaces it when it ends: said, with
    how to continue that run instead."""
    try:
        there = read_manifest(run_dir) if (run_dir / "run.json").is_file() else None
    except (ForecasterError, OSError):
        return
    if there is not None and there.status != "complete":
        log.warning(
            "%s holds an interrupted run, trained for %d epochs, which this new training replaces when it ends: "
            "to continue that run instead, stop this one and run %s",
            run_dir,
            there.metrics.epochs_run,
            resume_command(run_dir),
        )


def _unsaved(why: str, epoch: int, error: RunWriteError, run_dir: Path) -> Interrupted:
    """A stopped training whose resumable run could not be written (``error``): what the run
    directory holds instead, resumable when that is an interrupted run (a checkpoint, or the run
    that was being resumed)."""
    try:
        left = read_manifest(run_dir)
    except (ForecasterError, OSError):
        left = None
    resumable = left is not None and left.status != "complete"
    if resumable:
        then = (
            f"{run_dir} holds the resumable run of epoch {left.metrics.epochs_run}: "
            f"continue with {resume_command(run_dir)}"
        )
    else:
        then = "the epochs trained are lost: run the same command again once the run can be written"
    return Interrupted(
        f"{why} {after_epoch(epoch)}, and the resumable run could not be saved ({error}); {then}",
        {"run_dir": run_dir, "resumable": resumable, "saved": False},
    )


def _earlier_forecasts(run_dir: Path, cfg: Config) -> Path | None:
    """The forecast folder (``predict.out``/<name>) of the run that ``run_dir`` holds now, when
    it holds one and that folder has dated forecasts: a forecast file names only its run, so
    once another model replaces the run, ``score`` would read them as the new model's."""
    folder = Path(cfg.predict.out) / run_dir.name
    return folder if (run_dir / "run.json").is_file() and has_dated_forecasts(folder) else None


def _check_data_outside(run_dir: Path, cfg: Config) -> None:
    """Refuse a run directory that is, or holds, the data folder: writing the run replaces the
    whole directory, which would delete the bars the run is trained on."""
    data, target = Path(cfg.data.data_dir).resolve(), run_dir.resolve()
    if data == target or target in data.parents:
        raise ConfigError(
            f"the data folder {cfg.data.data_dir} is inside the run directory {run_dir}, which the run replaces "
            "whole (deleting the bars with it): keep the data elsewhere or choose another run directory"
        )


def checked_tickers(cfg: Config) -> list[str]:
    """The config's tickers, validated and without repeats (an error when there are none)."""
    if not cfg.data.tickers:
        raise ConfigError("no tickers to train on: pass --tickers or set data.tickers")
    tickers = list(dict.fromkeys(validate_ticker(t) for t in cfg.data.tickers))
    if POOLED in tickers:
        raise ConfigError(
            f"cannot train on a ticker named {POOLED}: that is the label of the rows pooling every ticker in "
            "evaluate's metrics.csv and score's score.csv, which could not tell the two apart"
        )
    return tickers


RESUME_FIXED = (
    "data.tickers",
    "window.lookback",
    "window.horizon",
    "window.val_days",
    "window.test_days",
    "model.cell",
    "model.strategy",
    "model.hidden_size",
    "model.num_layers",
    "model.embedding_dim",
    "model.target_scale",
    "model.scale_halflife",
    "model.ar_order",
    "model.dropout",
    "train.lr",
    "train.weight_decay",
    "train.seed",
    "train.batch_size",
    "train.grad_clip",
    "train.mode",
    "train.chunk",
    "train.epoch_steps",
    "train.burn_in_grad",
    "train.burn_in_dropout",
)
"""Settings an interrupted run keeps when it is resumed: the network's shape, the tickers, windows
and splits its validation losses were measured on, what the saved optimiser and random state
already hold, and how its steps are made (dropout, batch, clipping, training mode). The budget
(``--epochs``, ``--patience``) may change, and so may the machine's settings
(:data:`RESUME_MACHINE`, said in a warning)."""
RESUME_MACHINE = ("train.device", "train.precision", "train.threads", "train.halves", "train.burn_in_ahead")
"""Settings of the machine a run is resumed on: they may differ from the epochs before (another
machine, a GPU), which can move the numbers in their last bits; a resume names each that changed."""


def _setting(cfg: Config, key: str):
    section, _, name = key.partition(".")
    value = getattr(getattr(cfg, section), name)
    if key == "data.tickers":  # the model orders its tickers itself: only which ones counts
        return sorted({validate_ticker(t) for t in value})
    return value


def _check_resumable(before: Config, cfg: Config, run_dir: Path) -> None:
    """Refuse to resume with a setting of :data:`RESUME_FIXED` changed: training would not
    continue the run it names (and run.json would record a setting it was not trained with)."""

    def changes(keys: tuple[str, ...]) -> list[str]:
        return [
            f"{k} {_setting(before, k)} -> {_setting(cfg, k)}" for k in keys if _setting(before, k) != _setting(cfg, k)
        ]

    if changed := changes(RESUME_FIXED):
        raise ConfigError(
            f"cannot resume {run_dir} with other settings: {'; '.join(changed)}; an interrupted run goes on "
            "with the network, data, optimiser and steps it was started with (train a new run to change them)"
        )
    if moved := changes(RESUME_MACHINE):
        log.warning(
            "resuming %s with %s: the epochs from here are computed otherwise than those before (the numbers "
            "may differ in their last bits), and run.json records the new settings",
            run_dir,
            "; ".join(moved),
        )


def _resume_point(run_dir: Path, cfg: Config) -> tuple[Manifest, ResumeState, list[EpochRecord], Splits, float]:
    """Where an interrupted run stopped: its manifest, trainer state, epoch history, splits and
    the seconds it had trained."""
    manifest = read_manifest(run_dir)
    if manifest.status == "complete":
        raise RunFormatError(
            f"{run_dir} has nothing to resume: the run is complete (--resume finishes an interrupted training); "
            "train a new run without --resume"
        )
    _check_resumable(manifest.config, cfg, run_dir)
    state, rows = read_resume(run_dir)
    history = [EpochRecord(**row) for row in rows]
    if cfg.train.epochs < len(history):  # run.json would record a budget below what was trained
        raise ConfigError(
            f"cannot resume {run_dir} with --epochs {cfg.train.epochs}: it has already trained {len(history)} "
            f"epochs; give --epochs {len(history)} or more (--epochs {len(history)} finishes it as it stands)"
        )
    return manifest, state, history, manifest.splits.splits(), manifest.metrics.train_seconds


def _check_same_data(
    manifest: Manifest, ws: WindowSet, run_dir: Path, fitted_on: dict[str, str] | None = None, data=None
) -> None:
    """Refuse to resume on training or validation bars other than the run's (another --data-dir
    or --source, or bars revised since): the network learnt on those, with their normalisation,
    and its earlier epochs' validation losses, which the best epoch is chosen by, were measured
    on those. ``fitted_on``: the resume state's :func:`fitted_hashes` (None in a run saved
    before they were kept: its training bars are checked through their normalisation alone)."""
    trained = sorted(manifest.tickers, key=lambda sym: manifest.tickers[sym].id)
    if ws.names != trained:
        raise DataError(
            f"cannot resume {run_dir}: it was trained on {some_names(trained)}, the bars read now give "
            f"{some_names(ws.names) or 'no ticker'} enough training history; resume it with the data it was "
            "started on (its --source and --data-dir), or train a new run"
        )
    changed = [sym for sym in trained if manifest.tickers[sym].scaler != ws.scalers[sym]]
    if not changed and fitted_on is not None and data is not None:
        now = fitted_hashes(data.bars, data.splits.test_start)
        if revised := [sym for sym in trained if fitted_on.get(sym) != now.get(sym)]:
            raise DataError(
                f"cannot resume {run_dir}: the training or validation bars of {', '.join(revised)} are not those "
                "it was started on (its earlier epochs' validation losses were measured on those); resume it "
                "with the data it was started on (its --source and --data-dir), or train a new run"
            )
    if changed:
        raise DataError(
            f"cannot resume {run_dir}: the training bars of {', '.join(changed)} are not those it was started "
            "on; resume it with the data it was started on (its --source and --data-dir), or train a new run"
        )


def _same_data(dist: Dist, data: TrainingData | None, failure: Exception | None) -> None:
    """Refuse a distributed job one of whose processes could not read its data (``failure``, its
    own error, raised there) or whose processes read different bars (a stale copy on one node,
    a store refreshed as they started): each would train on its own, their steps paired wrongly,
    and the run written as if all had read rank 0's. Every process calls it, once."""
    digest = 0 if data is None else int(data_hash(data.bars)[:13], 16)
    failed, same = dist.agree(failure is not None, digest)
    if failure is not None:
        dist.close()
        raise failure
    if failed:
        dist.close()
        raise DataError("another process of the distributed job could not read its data (its error line says why)")
    if not same:
        dist.close()
        raise DataError(
            "the processes of the distributed job read different bars: every node needs the same data, "
            "from a shared folder or identical copies"
        )


def _check_shares(cfg: Config, data: TrainingData, world: int) -> None:
    """Refuse a distributed job in which some process would get no training item (window or
    chunk) in an epoch, or no validation window: the items are dealt out in equal shares, so
    with fewer items than processes none would train, and the run would be its untrained start."""
    t = cfg.train
    if t.mode == "forking":  # an epoch has at least the chunks cut from each run's start
        least = len(plan_chunks(data.ends["train"], data.ws.ticker_id, t.chunk))
        what, fewer = f"chunks of training origins (--chunk {t.chunk})", "a smaller --chunk, "
    else:
        least, what, fewer = len(data.ends["train"]), "training windows", ""
    for n, items, hint in ((least, what, fewer), (len(data.ends["val"]), "validation windows", "")):
        if n < world:
            raise TrainingError(
                f"{n} {items} cannot be shared among {world} processes, each of which needs one: "
                f"train with fewer processes, {hint}or more history"
            )


def usable_bars(cfg: Config, tickers: list[str], warn: bool = True) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The bars of ``tickers`` that have any, and why each of the others has none (skipped,
    with a warning each unless ``warn`` is false, ten lines at most); an error when no ticker
    is left."""
    unusable: dict[str, str] = {}
    bars = load_bars(cfg.data.source, cfg.data.data_dir, tickers, until_today=True, unusable=unusable)
    if warn:
        _warn_skipped(unusable)
    if not bars:
        raise DataError(f"no ticker has usable bars: {some_reasons(unusable)}")
    return bars, unusable


def _warn_skipped(skipped: dict[str, str]) -> None:
    log_some(logging.WARNING, [f"skipping {sym}: {why}" for sym, why in skipped.items()], "tickers skipped")


def _warn_other_exchanges(bars: dict[str, pd.DataFrame], calendar: str) -> None:
    """A warning for each ticker with bars on days that are not sessions of the run's calendar:
    step h of its forecasts is its h-th next bar, but they are dated by that calendar."""
    lines = []
    for sym, df in bars.items():
        off = not_sessions(df.index, calendar)
        if len(off):
            lines.append(
                f"{sym}: {len(off)} of its bars fall on days that are not {calendar} sessions (e.g. {off[0].date()}): "
                f"its forecasts would be dated by another exchange's sessions; set data.calendar to its exchange "
                "(one per run)"
            )
    log_some(logging.WARNING, lines, "tickers with bars off the calendar")


FAR_OUTSIDE = 50.0
"""Standard deviations (of a ticker's training split) beyond which an input read later is
named: on GOOG, ORCL and YHOO the inputs stay within 13 in the training split and 8 after it,
on 300 generated tickers within 30 (the day's range, a heavy-tailed input, of a ticker with a
short training split); a SPAC that traded flat at 10.00 in cent ticks, then moved, reaches
75 to 700."""

INPUT_WORDS = {
    "ret": "daily return",
    "range": "day's range",
    "body": "close against open",
    "dvol": "volume change",
    "rvol": "local volatility",
    "zret": "return in units of the local volatility",
}


def _warn_unlike_training(ws: WindowSet) -> None:
    """A warning for each ticker whose bars after the training split give the network an input
    far outside those of its training split (a crash, or a listing that first traded flat: a
    SPAC at 10.00 in cent ticks, then a stock), or whose close never moved over the training
    split: what the network forecasts from there is an extrapolation, which validation and
    evaluate then score."""
    lines = []
    names = ws.features[: len(ws.features) - CALENDAR]
    train = SPLITS.index("train")
    for k, sym in enumerate(ws.tickers):
        lo, hi = ws.offsets[k], ws.offsets[k + 1]
        part = ws.split[lo:hi]
        if (part == train).any() and np.ptp(ws.log_close[lo:hi][part == train]) == 0:
            lines.append(
                f"{sym}: its close never moved over the training split: the network learnt nothing of its "
                "returns, and its forecasts are its last close with the intervals of the other tickers' shapes"
            )
            continue
        later = np.abs(ws.x[lo:hi, : len(names)][part != train])
        if not later.size or (top := float(later.max())) <= FAR_OUTSIDE:
            continue
        row, col = np.unravel_index(int(later.argmax()), later.shape)
        day = pd.Timestamp(ws.dates[lo:hi][part != train][row]).date()
        lines.append(
            f"{sym}: its {INPUT_WORDS.get(names[col], names[col])} on {day} is {top:.0f} standard deviations "
            "from its training split's mean: the network saw no input like it, and forecasts from there "
            "extrapolate (a crash, or training bars unlike the later ones: prices that barely moved at first?)"
        )
    log_some(logging.WARNING, lines, "tickers whose later inputs are unlike their training ones")


def load_training_data(cfg: Config, tickers: list[str], splits: Splits | None = None) -> TrainingData:
    """Bars, splits (computed unless given) and windows; an error when a split has no window.

    A ticker with no usable bars is skipped with a warning, as one too short for a training
    window is (both are in ``ws.skipped``); an error when no ticker is left."""
    bars, unusable = usable_bars(cfg, tickers, warn=False)  # named below with those too short
    _warn_other_exchanges(bars, cfg.data.calendar)
    w = cfg.window

    def windows(splits: Splits) -> WindowSet:
        try:
            return build_windows(
                bars,
                w.lookback,
                w.horizon,
                splits,
                features=FEATURES,
                target_scale=cfg.model.target_scale,
                scale_halflife=cfg.model.scale_halflife,
                vol_halflife=cfg.intervals.vol_halflife,
            )
        except DataError as exc:  # every other ticker too short: the error names those without usable bars too
            if not unusable or not str(exc).startswith("no ticker has enough history"):
                raise
            raise DataError(f"{exc}; {some_reasons(unusable)}") from None

    if splits is not None:  # a resumed run's own
        ws = windows(splits)
    else:
        splits = make_splits(bars, w.val_days, w.test_days)
        ws = windows(splits)
        # the splits are counted over the tickers trained: a ticker skipped as too short (one
        # listed lately, whose bars run past the others') must not set them. Without it they
        # can only come earlier, so that more may be skipped: until none is
        while ws.skipped:
            kept = make_splits({s: b for s, b in bars.items() if s not in ws.skipped}, w.val_days, w.test_days)
            if kept == splits:
                break
            splits = kept
            ws = windows(splits)
    reasons = {**ws.skipped, **unusable}
    ws.skipped = {sym: reasons[sym] for sym in tickers if sym in reasons}  # in the order asked for
    ends = {s: ws.ends(s) for s in ("train", "val", "test")}
    _warn_skipped(ws.skipped)
    no_val = []
    test_start = str(splits.test_start.date())
    for sym, why in without_windows(ws, bars, ends["val"], splits.val_start).items():
        last, start = why["last_date"], why["split_start"]
        if last >= test_start:  # bars on both sides of the split: a gap over it
            inside = int(((bars[sym].index >= splits.val_start) & (bars[sym].index < splits.test_start)).sum())
            no_val.append(
                f"{sym}: no validation windows: {inside} of its bars fall in the validation split ({start} to "
                f"{test_start}), a gap in them, fewer than the {w.horizon} sessions one forecast needs; it is trained "
                "on and evaluated, but its intervals are not calibrated"
            )
            continue
        if last < start:
            where = f"before the validation split starts ({start})"
            then = "it is trained on but neither calibrated nor evaluated"
        else:  # a forecast needs `horizon` sessions of the split after its origin
            where = f"fewer than {w.horizon} sessions into the validation split (from {start})"
            inside = int((bars[sym].index >= splits.val_start).sum())
            then = (
                f"it is trained on and not evaluated, its intervals calibrated on the {inside} "
                f"validation session(s) it has"
            )
        no_val.append(f"{sym}: no validation windows: its bars end {last}, {where}; {then}")
    log_some(logging.WARNING, no_val, "tickers without validation windows")
    _warn_unlike_training(ws)
    for split, what in (("train", "training"), ("val", "validation")):
        if len(ends[split]) == 0:
            raise TrainingError(f"no {what} windows: shorten lookback/horizon/val_days or add history")
    return TrainingData(bars=bars, splits=splits, ws=ws, ends=ends)


@dataclass
class Calibration:
    """What training fits after the weights, on the validation split: the median's weight per
    step, the interval scales, and those scales tracked through the test split to the last bar."""

    median_weight: list[float]
    scales: dict[str, list[float]]
    online: dict[str, list[float]]
    pending: dict[str, list[list[float]]]


def calibrate(weights: dict[str, np.ndarray], cfg: Config, data: TrainingData) -> Calibration:
    """The run's median gate and interval scales, through the numpy forward pass that every
    forecast uses."""
    net = NumpyQuantileRNN.from_config(cfg, weights, FEATURES)
    ws, strategy = data.ws, cfg.model.strategy

    def forecast(ends: np.ndarray, split: str) -> np.ndarray:
        return _usable(predict_scaled(net, ws, ends, strategy, calendar=cfg.data.calendar), ws, ends, split)

    median = median_weights(forecast(data.ends["val"], "validation"), ws, data.ends["val"], cfg.model.median_alpha)
    val, test = ws.origins("val"), ws.origins("test")
    scales, online, pending = walk_forward_scales(
        with_median(forecast(val, "validation"), median),
        val,
        with_median(forecast(test, "test"), median),
        test,
        ws,
        cfg.intervals.tracking_rate,
        cfg.intervals.step_tracking,
    )
    return Calibration(median, scales, online, pending)


def _usable(q: np.ndarray, ws, ends: np.ndarray, split: str) -> np.ndarray:
    """The forecasts ``q`` made at ``ends``, when every one of them is a finite positive price;
    otherwise :class:`Diverged`: weights whose validation loss stayed a finite number can still
    overflow the forward pass, and such a run would forecast nothing."""
    with np.errstate(over="ignore", invalid="ignore"):
        prices = ws.close[ends][:, None, None] * np.exp(q * ws.target_scale(ends)[:, :, None])
    bad = ~are_prices(prices).all(axis=(1, 2))
    if bad.any():
        names = [ws.names[i] for i in np.unique(ws.ticker_id[ends[bad]])]
        raise Diverged(
            f"the network's forecasts on the {split} split are not finite positive prices ({some_names(names)}): "
            "its weights diverged"
        )
    return q


def _save(
    run_dir: Path,
    trainer: Trainer,
    data: TrainingData,
    history: list[EpochRecord],
    cfg: Config,
    now: datetime,
    seconds: float,
    interrupted: bool = False,
    origin: Origin | None = None,
    keep: bool = False,
) -> Manifest:
    """Write the run (and, when interrupted, the resume state beside it); ``origin``: the
    tuning study that chose its configuration, kept from the run resumed. An interrupted run's
    weights are its best epoch's, which the trainer then holds too, unless ``keep`` (a
    checkpoint, after which training goes on)."""
    resume = _resume_state(trainer, fitted_hashes(data.bars, data.splits.test_start)) if interrupted else None
    best = trainer.best_state if interrupted else None
    if best is not None and keep:
        weights = {k: v.detach().cpu().float().numpy() for k, v in best.items()}
    else:
        if best is not None:
            trainer.model.load_state_dict(best)
        weights = numpy_state(trainer.model)
    calibration = None if interrupted else calibrate(weights, cfg, data)
    manifest = _manifest(run_dir, cfg, data, history, calibration, now, seconds, trainer, interrupted)
    if origin is not None:
        manifest = manifest.model_copy(update={"origin": origin})
    save_run(run_dir, weights, manifest, [r.as_row() for r in history], resume=resume)
    return manifest


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _out_of_memory(
    exc: BaseException,
    device: torch.device,
    trainer: Trainer,
    saver: _Checkpoints,
    write: Callable[[], None] | None,
) -> TrainingError:
    """The error for a device that ran out of memory in training. The epochs trained so far are
    kept as a resumable run where a checkpoint may go (a new run, or the run resumed), which can
    continue on the CPU; a run that was in the folder is left whole."""
    said = _first_line(exc)
    exc.__traceback__ = None  # the failed step's tensors go with it
    if device.type == "cuda":
        torch.cuda.empty_cache()
    epoch, unsaved = saver.keep_now(write, trainer) if write is not None else (None, None)
    ran_out = f"{device} ran out of memory in epoch {trainer.epoch + 1} ({said})"
    if unsaved is not None:  # a full disk too: the folder holds what it held, if anything, to resume
        ran_out += f"; the {trainer.epoch} epoch(s) trained could not be saved ({_said(unsaved)})"
    on_the_cpu = f"continue it on the CPU with {resume_command(saver.run_dir)[:-1]} --device cpu`"
    if epoch is None:
        return TrainingError(f"{ran_out}: train again with a smaller --batch-size, or on the CPU (--device cpu)")
    if unsaved is not None:
        return TrainingError(f"{ran_out}, and {saver.run_dir} holds the resumable run of epoch {epoch}: {on_the_cpu}")
    return TrainingError(
        f"{ran_out}; the {epoch} epoch(s) trained were saved to {saver.run_dir} as a resumable run: {on_the_cpu}, "
        "or train again with a smaller --batch-size"
    )


def _said(error: RunWriteError) -> str:
    """A run write's error without its closing "nothing there was changed", which the line
    that quotes it says in its own words."""
    return str(error).removesuffix("; nothing there was changed")


class _Checkpoints:
    """Every ``every`` seconds of training (None: never), the run so far saved as an interrupted,
    resumable one: a training killed outright (``kill -9``, out of memory, a power cut) resumes
    from its last checkpoint rather than from nothing. Only into a folder that held nothing when
    the training took its lock, or the run it resumes: a run that was there (one that forecasts
    every day) stays until the new one replaces it whole. Entered with the run's lock held; left
    by an error other than :class:`Interrupted` (whose own save replaces the checkpoint), a new
    run's checkpoint is removed, the folder left as it was found, unless :meth:`kept` keeps it.
    ``epoch``: that of the run resumed (0 for a new one)."""

    def __init__(self, run_dir: Path, every: float | None, resume: bool, epoch: int = 0):
        self.run_dir, self.every, self.resume = run_dir, every, resume
        self.fresh = False  # the folder was absent or empty
        self.existed = False
        self.written = False
        self.epoch = epoch  # of the resumable run in the folder: the last checkpoint written, or the run resumed
        self.warned = False
        self.last = 0.0

    def __enter__(self) -> _Checkpoints:
        self.existed = self.run_dir.is_dir()
        self.fresh = not self.existed or not any(self.run_dir.iterdir())
        if not (self.fresh or self.resume):
            self.every = None
        self.last = self._now()
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None or issubclass(kind, Interrupted) or not (self.written and self.fresh):
            return
        with suppress(OSError):
            shutil.rmtree(self.run_dir)
            if self.existed:
                self.run_dir.mkdir()

    def due(self, trainer: Trainer) -> bool:
        """Whether to save now: the interval has passed and an epoch is still to come (the last
        one's run is written whole right after)."""
        return self.every is not None and not trainer.finished and self._now() - self.last >= self.every

    def save(self, write: Callable[[], None], epoch: int) -> None:
        """``write`` the checkpoint after ``epoch``; one that cannot be written is said once, and
        training goes on."""
        try:
            write()
            self.written, self.epoch = True, epoch
        except RunWriteError as exc:
            if not self.warned:
                log.warning("%s; training goes on, and %s", exc, self._if_killed())
                self.warned = True
        self.last = self._now()

    def _if_killed(self) -> str:
        """What a process killed now leaves to resume."""
        if self.written:
            return f"a process killed now resumes from the checkpoint after epoch {self.epoch}"
        if self.resume:
            return f"a process killed now resumes from epoch {self.epoch}, where this training resumed the run"
        return "a process killed now loses its epochs"

    def _holds(self) -> str | None:
        """The resumable run the folder holds, in words (None: none): the last checkpoint, or
        the run resumed, which stays until one is written."""
        if self.written:
            return f"the checkpoint after epoch {self.epoch}"
        if self.resume:
            return f"the run resumed, after epoch {self.epoch}"
        return None

    def keep_now(self, write: Callable[[], None], trainer: Trainer) -> tuple[int | None, RunWriteError | None]:
        """After a failure the run can go on from (the device out of memory): the epochs trained so
        far written by ``write`` as a resumable run and kept, where a checkpoint may go (not written
        again where the last checkpoint, or the run resumed, holds them all already). The epoch
        of the resumable run the folder then holds (None: none, as no epoch was trained, a run was
        already in the folder, or the write failed with no checkpoint before it), and the error
        of a write that failed (a full disk), after which the last checkpoint or the run resumed
        stays."""
        if trainer.epoch == 0 or not (self.fresh or self.resume):
            return None, None
        if self._holds() is not None and self.epoch == trainer.epoch:  # no epoch since: the folder has them all
            self.written = False  # not taken away on the way out
            return self.epoch, None
        try:
            write()
        except RunWriteError as exc:
            if self._holds() is None:
                return None, exc
            self.written = False  # the last checkpoint is not taken away on the way out
            return self.epoch, exc
        self.written = False  # not taken away on the way out
        return trainer.epoch, None

    def kept(self, error: RunWriteError) -> RunWriteError:
        """The run could not be written when training ended (a full disk): its last checkpoint,
        or the run resumed, stays in its place, to finish with ``train --resume`` once there is
        room."""
        holds = self._holds()
        if holds is None:
            return error
        self.written = False  # not taken away on the way out
        return RunWriteError(
            f"{_said(error)}; it holds {holds}: {resume_command(self.run_dir)} finishes the run once it can be written"
        )

    @staticmethod
    def _now() -> float:
        return time.perf_counter()


MIN_GARCH_FITS_PER_PROCESS = 50
"""The garch fits of a run share the usable cores, each process given this many tickers at least:
one costs about 2 s to start and import arch, the time of some 30 fits."""


def garch_fits(ws: WindowSet) -> dict[str, GarchFit]:
    """Per ticker, the garch baseline's fit at its first test origin: what evaluate would fit,
    done once here (a GJR-GARCH fit costs tens of milliseconds a ticker). Many tickers share the
    usable cores (:data:`MIN_GARCH_FITS_PER_PROCESS`), each fit the same wherever it is made."""
    origins = ws.origins("test")
    todo = []  # (ticker, its returns up to the origin, the origin's session, its close)
    for k, sym in enumerate(ws.tickers):
        mine = origins[ws.ticker_id[origins] == ws.names.index(sym)]
        if len(mine) == 0:
            continue
        close = ws.close[ws.offsets[k] : ws.offsets[k + 1]]
        first = int(mine.min() - ws.offsets[k])  # the origin, as an index into this ticker's closes
        if first < GARCH_MIN_RETURNS:
            continue
        returns = 100.0 * np.diff(np.log(close[: first + 1]))  # percent, as the baseline fits
        day = pd.Timestamp(ws.dates[ws.offsets[k] + first]).date()
        todo.append((sym, returns[max(0, first - GARCH_MAX_WINDOW) :], day, float(close[first])))
    fitted = _fit_garch_shared([returns for _, returns, _, _ in todo])
    return {
        sym: GarchFit(**asdict(p), origin=day, close=close)
        for (sym, _, day, close), p in zip(todo, fitted, strict=True)
        if p is not None
    }


def _fit_garch_shared(samples: list[np.ndarray]) -> list:
    """:func:`fit_garch` of each sample, in order, in processes of their own when there are
    enough: fresh interpreters, as this one has run training's threads."""
    with workers(processes_for(0, len(samples), MIN_GARCH_FITS_PER_PROCESS), fresh=True) as pool:
        if pool is None:
            return fit_garch_each(samples)
        shares = [[samples[i] for i in block] for block in blocks(list(range(len(samples))), pool.processes)]
        return [p for part in pool.map(fit_garch_each, shares) for p in part]


def _manifest(run_dir, cfg, data, history, calibration, now, seconds, trainer, interrupted) -> Manifest:
    ws, H = data.ws, cfg.window.horizon
    scales = calibration.scales if calibration else {}
    online = calibration.online if calibration else {}
    pending = calibration.pending if calibration else {}
    fits = garch_fits(ws) if calibration else {}
    tickers = {}
    for k, sym in enumerate(ws.tickers):
        lo, hi = ws.offsets[k], ws.offsets[k + 1]
        bars = data.bars[sym]
        tickers[sym] = TickerEntry(
            id=ws.names.index(sym),
            first_date=bars.index[0].date(),
            last_date=bars.index[-1].date(),
            rows=len(bars),
            train_rows=int((ws.split[lo:hi] == 0).sum()),
            scaler=ws.scalers[sym],
            conformal=[float(x) for x in scales.get(sym, [1.0] * H)],
            conformal_online=online.get(sym),
            conformal_pending=pending.get(sym),
            garch=fits.get(sym),
        )
    best = kept_epoch(history)
    return Manifest(
        name=run_dir.name,
        status="interrupted" if interrupted else "complete",
        created_at=now.replace(microsecond=0),
        config=cfg,
        features=FeatureSpec(names=FEATURES, target=target_formula(cfg.model)),
        tickers=tickers,
        skipped=ws.skipped,
        no_validation=without_windows(ws, data.bars, data.ends["val"], data.splits.val_start),
        splits=SplitDates(val_start=data.splits.val_start.date(), test_start=data.splits.test_start.date()),
        windows={s: int(len(e)) for s, e in data.ends.items()},
        data_hash=data_hash(data.bars),
        seed=cfg.train.seed,
        device=str(trainer.device),
        world_size=trainer.dist.world,
        metrics=RunMetrics(
            best_epoch=best.epoch if best else None,
            best_val_loss=best.val_loss if best else None,
            epochs_run=len(history),
            train_seconds=round(seconds, 3),
            interval_coverage_target=round(COVERAGE, 6),
        ),
        versions=_versions(),
        median_weight=calibration.median_weight if calibration else None,
    )


def kept_epoch(history: list[EpochRecord]) -> EpochRecord | None:
    """The epoch whose weights training keeps, by the trainer's rule: the last to beat every
    earlier one by more than :data:`MIN_IMPROVEMENT` (not merely the lowest validation loss)."""
    best = None
    for rec in history:
        if best is None or rec.val_loss < best.val_loss - MIN_IMPROVEMENT:
            best = rec
    return best


def _versions() -> dict[str, str]:
    return {
        "forecaster": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def fitted_hashes(bars: dict[str, pd.DataFrame], test_start: pd.Timestamp) -> dict[str, str]:
    """Per ticker, a hash of its bars before ``test_start``: those training and validation read
    (a bar appended since, or revised in the test split, changes none)."""
    return {sym: data_hash({sym: df[df.index < test_start]}) for sym, df in bars.items()}


def _resume_state(trainer: Trainer, fitted_on: dict[str, str] | None = None) -> ResumeState:
    """The trainer's state after its last completed epoch, as numpy arrays for the run, and
    ``fitted_on``: :func:`fitted_hashes` of the bars it trained and validated on."""
    st = trainer.state()

    def arrays(tensors: dict | None) -> dict[str, np.ndarray] | None:
        return None if tensors is None else {k: v.detach().cpu().numpy() for k, v in tensors.items()}

    opt = st["optimizer"]
    return ResumeState(
        epoch=st["epoch"],
        best_val=st["best_val"],
        stale=st["stale"],
        model=arrays(st["model"]),
        best=arrays(st["best"]),
        optimizer={
            int(i): {n: torch.as_tensor(v).detach().cpu().numpy() for n, v in slots.items()}
            for i, slots in opt["state"].items()
        },
        param_groups=opt["param_groups"],
        scheduler=st["scheduler"],
        generator=st["generator"].numpy(),
        torch_rng=st["torch_rng"].numpy(),
        cuda_rng=None if st.get("cuda_rng") is None else st["cuda_rng"].numpy(),
        fitted_on=fitted_on,
    )


def _trainer_state(r: ResumeState) -> dict:
    """:meth:`Trainer.restore`'s state from a saved resume state."""

    def tensors(arrays: dict | None) -> dict | None:
        return None if arrays is None else {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}

    return {
        "epoch": r.epoch,
        "best_val": r.best_val,
        "stale": r.stale,
        "model": tensors(r.model),
        "best": tensors(r.best),
        "optimizer": {"state": {i: tensors(slots) for i, slots in r.optimizer.items()}, "param_groups": r.param_groups},
        "scheduler": r.scheduler,
        "generator": torch.from_numpy(r.generator.copy()),
        "torch_rng": None if r.torch_rng is None else torch.from_numpy(r.torch_rng.copy()),
        "cuda_rng": None if r.cuda_rng is None else torch.from_numpy(r.cuda_rng.copy()),
    }
