"""Forking-sequence training: one pass of the encoder over a stretch, a loss at every origin.

A window costs ``lookback`` recurrent steps for one forecast origin. Here the encoder reads a
*stretch* of one ticker's rows, ``lookback - 1`` rows of burn-in followed by a *chunk* of up to
``chunk`` consecutive forecast origins, and the multi-step loss is taken at every origin of the
chunk (the "forking sequences" of MQ-RNN): ``lookback + chunk - 1`` steps for ``chunk`` origins.
The first origin of a chunk reads exactly the ``lookback`` rows a window would; the later ones
have read a little more of the same ticker's history.

The origins are the windows' own (:meth:`forecaster.windows.WindowSet.ends` of the training
split), so the split rules are the windows' rules: every origin's targets lie in its split, and
a chunk never runs past its last origin (rows after it are zeros in the batch, never data).

Chunking is planned per epoch: each ticker's run of consecutive origins is cut into chunks of
``chunk`` origins from a random phase (the first chunk is 1 to ``chunk`` long), so a stretch
starts at different rows from one epoch to the next, and every origin is in exactly one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .windows import WindowSet


@dataclass(frozen=True)
class Chunks:
    """Chunks of consecutive forecast origins: chunk ``k`` holds rows ``start[k] .. start[k] +
    count[k] - 1`` as origins (all of one ticker)."""

    start: np.ndarray  # (K,) int64 first origin's row
    count: np.ndarray  # (K,) int64 origins in the chunk, 1 .. chunk

    def __len__(self) -> int:
        return len(self.start)

    def __getitem__(self, idx) -> Chunks:
        """The chunks at ``idx`` (a slice or an index array), in that order."""
        return Chunks(self.start[idx], self.count[idx])

    @property
    def origins(self) -> int:
        return int(self.count.sum())


def runs(origins: np.ndarray, ticker_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs of consecutive rows of one ticker in sorted ``origins``: (first row, length)."""
    o = np.sort(np.asarray(origins, dtype=np.int64))
    if len(o) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    breaks = np.flatnonzero((np.diff(o) != 1) | (np.diff(ticker_id[o]) != 0)) + 1
    first = np.concatenate([[0], breaks])
    lengths = np.diff(np.concatenate([first, [len(o)]]))
    return o[first], lengths.astype(np.int64)


def plan_chunks(origins: np.ndarray, ticker_id: np.ndarray, chunk: int, phase: np.ndarray | None = None) -> Chunks:
    """Cut each run of consecutive origins into chunks of at most ``chunk`` origins.

    ``phase`` (one integer per run, in ``[0, chunk)``) shortens each run's first chunk to
    ``chunk - phase`` origins, so the cuts move between epochs; None cuts from each run's start.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, not {chunk}")
    first, length = runs(origins, ticker_id)
    if phase is None:
        phase = np.zeros(len(first), np.int64)
    phase = np.asarray(phase, dtype=np.int64)
    # virtual cut points at first - phase + k*chunk; chunk k of a run spans the virtual
    # [first - phase + k*chunk, first - phase + (k+1)*chunk) clipped to the run
    n_chunks = (length + phase + chunk - 1) // chunk
    run_of = np.repeat(np.arange(len(first)), n_chunks)
    k = np.arange(len(run_of)) - np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
    lo = np.maximum(first[run_of] - phase[run_of] + k * chunk, first[run_of])
    hi = np.minimum(first[run_of] - phase[run_of] + (k + 1) * chunk, first[run_of] + length[run_of])
    return Chunks(lo.astype(np.int64), (hi - lo).astype(np.int64))


def epoch_chunks(origins: np.ndarray, ticker_id: np.ndarray, chunk: int, gen: torch.Generator) -> Chunks:
    """One epoch's chunks in training order: random phases, then a random order, both drawn
    from ``gen`` (the trainer's data-order generator, saved with a resumable run)."""
    n_runs = len(runs(origins, ticker_id)[0])
    phase = torch.randint(0, chunk, (n_runs,), generator=gen).numpy()
    plan = plan_chunks(origins, ticker_id, chunk, phase)
    return plan[torch.randperm(len(plan), generator=gen).numpy()]


class Stretches:
    """Turns chunks into tensors: inputs (B, lookback + chunk - 1, F), ticker ids (B,), targets
    (B, chunk, steps) and a mask (B, chunk) of the positions that are real origins.

    The row arithmetic is numpy; the gathers are torch, from the stacked rows (views of the
    numpy arrays on the CPU, one copy on the device elsewhere), so every device runs the same
    code. Targets come from a table of every row's targets as an origin, built once: one
    gather per batch instead of the sums and divisions of :meth:`WindowSet.targets`, with the
    same numbers.
    """

    def __init__(self, ws: WindowSet, chunk: int, device: torch.device, one_step: bool):
        self.chunk, self.device, self.lookback = chunk, device, ws.lookback
        self.x = torch.from_numpy(ws.x).to(device)  # (N, F)
        self.ticker_id = torch.from_numpy(ws.ticker_id).to(device)  # (N,)
        self.targets = torch.from_numpy(target_table(ws, 1 if one_step else ws.horizon)).to(device)  # (N, steps)
        self.offsets = np.arange(1 - ws.lookback, chunk, dtype=np.int64)  # (T,) rows from the first origin
        self.positions = np.arange(chunk)  # (C,)

    def __call__(self, chunks: Chunks) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        last = chunks.start + chunks.count - 1  # (B,) last origin of each chunk
        # input rows, never past the chunk's last origin: later positions repeat it and are
        # zeroed below (the encoder is causal, so they could not reach an earlier origin)
        rows = np.minimum(chunks.start[:, None] + self.offsets, last[:, None])  # (B, T)
        mask = self.positions < chunks.count[:, None]  # (B, C)
        r = torch.from_numpy(rows).to(self.device)
        x = self.x[r]  # (B, T, F)
        if not mask.all():
            live = np.concatenate([np.ones((len(rows), self.lookback - 1), bool), mask], 1)  # (B, T)
            x = x.masked_fill(~torch.from_numpy(live).to(self.device)[:, :, None], 0.0)
        origins = r[:, self.lookback - 1 :]  # (B, C) the chunk's origins (the last one repeated)
        return x, self.ticker_id[r[:, 0]], self.targets[origins], torch.from_numpy(mask).to(self.device)


def target_table(ws: WindowSet, steps: int) -> np.ndarray:
    """(N, steps) float32: the scaled cumulative log returns after each row, as
    :meth:`WindowSet.targets` gives them for a window ending there (rows too close to their
    ticker's end hold values that no valid origin reads)."""
    n = len(ws.log_close)
    out = np.empty((n, steps), np.float32)
    for h in range(1, steps + 1):  # a column at a time: no (N, steps) float64 temporaries
        ahead = ws.log_close[np.minimum(np.arange(h, n + h), n - 1)]
        out[:, h - 1] = (ahead - ws.log_close) / (ws.scale * np.sqrt(h))
    return out
