"""The network's forward pass in numpy: every forecast the project makes goes through it.

Training runs the torch module (:mod:`forecaster.models`); calibration on the validation split,
``evaluate`` and ``predict`` run the same weights here, so what is evaluated is what is deployed,
and forecasting never imports torch. :class:`NumpyQuantileRNN` computes what
:class:`forecaster.models.QuantileRNN` computes in eval mode (dropout is the identity), from the
same state dict: the same tensor names and shapes, torch's gate orders (LSTM ``i, f, g, o``; GRU
``r, z, n`` with ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``), in float32.
:func:`predict_scaled` forecasts any set of windows, the recursive strategy included.

Every window of a batch goes through one matrix product per layer and timestep (the state's;
the input's is taken for many timesteps at once) and one exp for all the gates; the embedding's
share of the input product is computed once per window (it is the same at every timestep).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from .features import next_weekday_features
from .windows import WindowSet

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
FORECAST_BATCH = 1024
"""Windows per forward pass: a step's buffers (windows x gates floats, half a megabyte at 32
LSTM units) stay in the cache; 8192 was a third slower on a 2-core machine."""
INPUT_BLOCK_BYTES = 1 << 19
"""About this much of the input side's products is computed ahead of the scan at a time: 250
windows of 32 LSTM units took 12 ms with 512 kB (4 timesteps), 15 to 17 ms with 2 MB (16) on a
2-core AMD EPYC, whose cores have 512 kB of L2 cache each."""


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), without overflow for large x nor loss for very negative x."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def ordering_matrix(n_quantiles: int, median: int) -> np.ndarray:
    """(Q-1, Q) matrix ``M`` that keeps quantiles in order: ``quantiles = median + softplus(gaps) @ M``,
    ``gaps`` being the raw outputs other than the median's, in level order. A gap below the median
    lowers its own level and every level under it; a gap above raises its level and every one over it.
    Both forward passes (torch and numpy) use it, so they order quantiles the same way."""
    m = np.zeros((n_quantiles - 1, n_quantiles), np.float32)
    for row, level in enumerate(i for i in range(n_quantiles) if i != median):
        if level < median:
            m[row, : level + 1] = -1.0
        else:
            m[row, level:] = 1.0
    return m


def ar_feature(ar_order: int, features: list[str] | None) -> int | None:
    """Which input feature the autoregressive highway reads (``zret``), or None without one."""
    if not ar_order:
        return None
    if features is None or "zret" not in features:
        raise ValueError("model.ar_order needs the zret feature among the inputs")
    return list(features).index("zret")


def state_shapes(
    *,
    cell: str,
    n_features: int,
    n_tickers: int,
    hidden_size: int,
    num_layers: int,
    embedding_dim: int,
    steps: int,
    n_quantiles: int,
    ar_order: int = 0,
) -> dict[str, tuple[int, ...]]:
    """Every tensor of QuantileRNN's state dict and its shape, in state-dict order."""
    g = GATES[cell] * hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    if embedding_dim:
        shapes["embedding.weight"] = (n_tickers, embedding_dim)
    for k in range(num_layers):
        n_in = n_features + embedding_dim if k == 0 else hidden_size
        shapes[f"encoder.weight_ih_l{k}"] = (g, n_in)
        shapes[f"encoder.weight_hh_l{k}"] = (g, hidden_size)
        shapes[f"encoder.bias_ih_l{k}"] = (g,)
        shapes[f"encoder.bias_hh_l{k}"] = (g,)
    shapes["head.weight"] = (steps * n_quantiles, hidden_size)
    shapes["head.bias"] = (steps * n_quantiles,)
    if ar_order:
        shapes["ar.weight"] = (steps, ar_order)
        shapes["ar.bias"] = (steps,)
    return shapes


def config_shapes(cfg, n_features: int, n_tickers: int) -> dict[str, tuple[int, ...]]:
    """:func:`state_shapes` for a :class:`forecaster.config.Config`."""
    m = cfg.model
    return state_shapes(
        cell=m.cell,
        n_features=n_features,
        n_tickers=n_tickers,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        embedding_dim=m.embedding_dim,
        steps=cfg.window.horizon if m.strategy == "direct" else 1,
        n_quantiles=len(m.quantiles),
        ar_order=m.ar_order,
    )


class NumpyQuantileRNN:
    """QuantileRNN's inference from its state dict (arrays named as torch names them)."""

    def __init__(
        self,
        state: dict[str, np.ndarray],
        *,
        cell: str,
        num_layers: int,
        quantiles: list[float],
        steps: int,
        ar_feature: int | None = None,
    ):
        f32 = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
        self.cell = cell
        self.quantiles = list(quantiles)
        self.median_index = self.quantiles.index(0.5)
        self.steps = steps
        self.embedding = f32.get("embedding.weight")
        # (W_ih^T, W_hh^T, bias, b_hn) per layer, transposed once for x @ W, in the scan's gate layout
        self.layers = [
            _scan_layout(
                cell,
                f32[f"encoder.weight_ih_l{k}"].T,
                f32[f"encoder.weight_hh_l{k}"].T,
                f32[f"encoder.bias_ih_l{k}"],
                f32[f"encoder.bias_hh_l{k}"],
            )
            for k in range(num_layers)
        ]
        self.head_w = f32["head.weight"].T.copy()
        self.head_b = f32["head.bias"]
        self.order = ordering_matrix(len(self.quantiles), self.median_index)
        self.ar_feature = ar_feature
        self.ar_w = f32["ar.weight"].T.copy() if "ar.weight" in f32 else None  # (k, steps)
        self.ar_b = f32.get("ar.bias")

    @classmethod
    def from_config(cls, cfg, state: dict[str, np.ndarray], features: list[str]) -> NumpyQuantileRNN:
        m = cfg.model
        return cls(
            state,
            ar_feature=ar_feature(m.ar_order, features),
            cell=m.cell,
            num_layers=m.num_layers,
            quantiles=m.quantiles,
            steps=cfg.window.horizon if m.strategy == "direct" else 1,
        )

    def __call__(self, x: np.ndarray, ticker: np.ndarray) -> np.ndarray:
        """x: (B, L, F) standardised features, ticker: (B,) ids -> (B, steps, Q)."""
        x = np.asarray(x, dtype=np.float32)
        seq = np.ascontiguousarray(x.transpose(1, 0, 2))  # (L, B, F): time-major, each step contiguous
        for k, (w_ih, w_hh, fixed, b_hn) in enumerate(self.layers):
            if k == 0 and self.embedding is not None:
                n_feat = x.shape[-1]
                fixed = self.embedding[ticker] @ w_ih[n_feat:] + fixed  # (B, G): the same at every timestep
                w_ih = w_ih[:n_feat]
            seq = self._scan(seq, w_ih, fixed, w_hh, b_hn)
        raw = (seq[-1] @ self.head_w + self.head_b).reshape(x.shape[0], self.steps, len(self.quantiles))
        if self.ar_w is not None:
            lags = x[:, -self.ar_w.shape[0] :, self.ar_feature]  # (B, k)
            raw[..., self.median_index] += lags @ self.ar_w + self.ar_b
        return self._ordered(raw)

    def _scan(self, seq: np.ndarray, w_ih: np.ndarray, fixed: np.ndarray, w_hh: np.ndarray, b_hn):
        """One recurrent layer over (L, B, In) inputs -> (L, B, H) outputs.

        The input side is one matrix product for a block of timesteps at a time (about
        :data:`INPUT_BLOCK_BYTES` of it: one for all L would be the largest thing in memory),
        with the biases added once; every step writes into buffers made once, as a fresh
        megabyte-sized array costs page faults every time. Weights come in :func:`_scan_layout`'s
        order and sign, so that every activation is ``1 / (1 + exp(a))`` of the gate's value
        ``a``: the sigmoid's for sigmoid gates, ``tanh(x) = 2 sigmoid(2x) - 1`` for the others.
        numpy's float32 exp took a half to a third of its tanh's time on a 2-core AMD EPYC.
        """
        L, B, n_in = seq.shape
        H, G = w_hh.shape
        one, two, minus_two = np.float32(1), np.float32(2), np.float32(-2)
        out = np.empty((L, B, H), np.float32)
        h = np.zeros((B, H), np.float32)
        c = np.zeros((B, H), np.float32)
        gates = np.empty((B, G), np.float32)
        tmp = np.empty((B, H), np.float32)
        block = max(1, min(L, INPUT_BLOCK_BYTES // (4 * B * G)))
        given = np.empty((block, B, G), np.float32)
        flat_seq = seq.reshape(L * B, n_in)
        with np.errstate(over="ignore"):  # exp(a) = inf for a large a: 1 / (1 + inf) = 0, the limit
            for t in range(L):
                j = t % block
                if j == 0:  # the next block's input side
                    n = min(block, L - t)
                    np.matmul(flat_seq[t * B : (t + n) * B], w_ih, out=given[:n].reshape(n * B, G))
                    given[:n] += fixed
                np.matmul(h, w_hh, out=gates)
                if self.cell == "gru":  # r and z add both sides; n adds r * (W_hn h + b_hn) to the input side
                    rz = given[j, :, : 2 * H]
                    rz += gates[:, : 2 * H]
                    _sigmoid(rz, one)
                    hn = gates[:, 2 * H :]
                    hn += b_hn
                    n_gate = given[j, :, 2 * H :]
                    np.multiply(rz[:, :H], hn, out=tmp)
                    n_gate += tmp
                    _tanh(n_gate, one, two)
                    np.subtract(h, n_gate, out=tmp)
                    tmp *= rz[:, H:]
                    np.add(n_gate, tmp, out=out[t])  # (1 - z) * n + z * h
                elif self.cell == "lstm":  # i, f, o, then g
                    gates += given[j]
                    _sigmoid(gates, one)
                    g = gates[:, 3 * H :]
                    g *= two
                    g -= one  # tanh(g) = 2 sigmoid(2g) - 1
                    c *= gates[:, H : 2 * H]
                    np.multiply(gates[:, :H], g, out=tmp)
                    c += tmp
                    np.multiply(c, minus_two, out=tmp)
                    _tanh(tmp, one, two)
                    np.multiply(gates[:, 2 * H : 3 * H], tmp, out=out[t])
                else:
                    gates += given[j]
                    _tanh(gates, one, two)
                    out[t] = gates
                h = out[t]
        return out

    def _ordered(self, raw: np.ndarray) -> np.ndarray:
        """Monotone quantiles from raw outputs (B, S, Q): median free, gaps softplus."""
        m = self.median_index
        gaps = np.delete(raw, m, axis=-1)  # (B, S, Q-1)
        return raw[..., m : m + 1] + softplus(gaps) @ self.order


def _scan_layout(cell: str, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray):
    """A layer's weights as :meth:`NumpyQuantileRNN._scan` reads them: ``(W_ih, W_hh, bias,
    b_hn)``. LSTM gates are reordered from torch's ``i, f, g, o`` to ``i, f, o, g``; every gate
    is negated, and the tanh ones (LSTM ``g``, GRU ``n``, the Elman cell) doubled too, so that
    the scan's ``1 / (1 + exp(a))`` is the gate's activation (exact: a sign and a power of 2).
    The two biases are added once (``bias``), but for the GRU's ``n`` gate, whose state side
    ``b_hn`` is scaled by ``r`` (None for the other cells)."""
    H = w_hh.shape[0]
    gates = GATES[cell]
    order = {"lstm": [0, 1, 3, 2]}.get(cell, list(range(gates)))
    sigmoids = {"lstm": 3, "gru": 2}.get(cell, 0)  # the leading gates (after reordering) that are sigmoids
    cols = np.concatenate([np.arange(g * H, (g + 1) * H) for g in order])
    scale = np.full(gates * H, -2.0, np.float32)
    scale[: sigmoids * H] = -1.0
    w_ih, w_hh, b_ih, b_hh = (np.ascontiguousarray(a[..., cols] * scale) for a in (w_ih, w_hh, b_ih, b_hh))
    if cell != "gru":
        return w_ih, w_hh, b_ih + b_hh, None
    bias = b_ih.copy()
    bias[: 2 * H] += b_hh[: 2 * H]
    return w_ih, w_hh, bias, np.ascontiguousarray(b_hh[2 * H :])


def _sigmoid(a: np.ndarray, one: np.float32) -> None:
    """In place: ``1 / (1 + exp(a))``, the sigmoid of ``-a``."""
    np.exp(a, out=a)
    a += one
    np.reciprocal(a, out=a)


def _tanh(a: np.ndarray, one: np.float32, two: np.float32) -> None:
    """In place: ``2 / (1 + exp(a)) - 1``, the tanh of ``-a / 2``."""
    np.exp(a, out=a)
    a += one
    np.divide(two, a, out=a)
    a -= one


def roll_forward(
    model: NumpyQuantileRNN,
    x: np.ndarray,
    ticker: np.ndarray,
    horizon: int,
    ret_shift: np.ndarray,
    next_dow: np.ndarray,
    ret_factor: np.ndarray | None = None,
    fed: Sequence[tuple[int, np.ndarray, np.ndarray]] = (),
    carried: Sequence[int] = (),
) -> np.ndarray:
    """The recursive strategy: a one-step model rolled forward H steps. Each step appends a row
    with the predicted median return as the ``ret`` feature (``r * ret_factor - ret_shift``, (B,)
    each: from units of the target scale to the standardised feature) and as each feature of
    ``fed`` (column, factor, shift: the return in units of the local volatility, which the
    autoregressive term reads), the features of ``carried`` as the row before had them (the
    local volatility: it persists), the other market features at their training mean (0 after
    scaling) and the next weekday. Medians add up, the steps' spreads add in quadrature
    (independent steps); (B, H, Q) in units of the target scale times ``sqrt(h)``."""
    m = model.median_index
    x = np.asarray(x, dtype=np.float32)
    ret_shift = np.asarray(ret_shift, dtype=np.float32)
    factor = np.float32(1.0) if ret_factor is None else np.asarray(ret_factor, dtype=np.float32)
    next_dow = np.asarray(next_dow, dtype=np.float32)
    B = x.shape[0]
    cum = np.zeros(B, np.float32)
    lo_sq = np.zeros((B, m), np.float32)
    hi_sq = np.zeros((B, len(model.quantiles) - m - 1), np.float32)
    out = []
    for h in range(horizon):
        q = model(x, ticker)[:, 0]  # (B, Q), one step, units of ret_std
        r = q[:, m]
        cum = cum + r
        lo_sq = lo_sq + (r[:, None] - q[:, :m]) ** 2
        hi_sq = hi_sq + (q[:, m + 1 :] - r[:, None]) ** 2
        levels = np.concatenate([cum[:, None] - np.sqrt(lo_sq), cum[:, None], cum[:, None] + np.sqrt(hi_sq)], -1)
        out.append(levels / np.float32(math.sqrt(h + 1)))
        new = np.zeros_like(x[:, :1])  # (B, 1, F)
        new[:, 0, 0] = r * factor - ret_shift
        for col, f, shift in fed:
            new[:, 0, col] = r * f - shift
        for col in carried:
            new[:, 0, col] = x[:, -1, col]
        new[:, 0, -2:] = next_dow[:, h]
        x = np.concatenate([x[:, 1:], new], axis=1)
    return np.stack(out, axis=1)


_ONE_BLAS_LIMIT = threading.Lock()
"""Held while a forecast holds BLAS at one thread: limits that overlapped in a program's threads
left BLAS one thread for good (each put back what it found, or a limit that another thread had
set, which the library does not take back from there)."""


def _blas_limit_free() -> None:
    """A process forked while another thread forecast has the lock free: that thread is not
    in it to let the lock go, and its first forecast (a worker's block) would wait for ever."""
    global _ONE_BLAS_LIMIT
    _ONE_BLAS_LIMIT = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_blas_limit_free)


def predict_scaled(
    model: NumpyQuantileRNN,
    ws: WindowSet,
    ends: np.ndarray,
    strategy: str,
    batch_size: int = FORECAST_BATCH,
    calendar: str | None = None,
) -> np.ndarray:
    """(B, H, Q) quantiles of the cumulative log return of the windows ending at ``ends``, in
    units of their target scale (:meth:`forecaster.windows.WindowSet.target_scale`). The
    recursive strategy's later steps read the weekdays of ``calendar``'s next sessions (of the
    next weekdays with None).

    Each ticker's windows go through passes of their own (in the order given, at most
    ``batch_size`` a pass): a matrix product may round a row differently with the number of rows
    beside it, so a window shared with other tickers would get a forecast that depends, in its
    last bits, on which other tickers are forecast with it. This way a ticker's forecasts are the
    same whether it is evaluated or forecast alone, with others, or in another process."""
    horizon = ws.horizon
    ends = np.asarray(ends)
    out = np.empty((len(ends), horizon, len(model.quantiles)), np.float32)
    if len(ends) == 0:
        return out
    tid = ws.ticker_id[ends]
    order = np.argsort(tid, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(tid[order])) + 1)
    # one BLAS thread: the products are too small to share (two threads were slower on two
    # cores), and processes backtesting side by side must not oversubscribe the cores
    # a network that overflows gives forecasts that are no finite number, which every caller
    # refuses, naming the ticker: numpy's warnings about it would only add lines to the log
    with _ONE_BLAS_LIMIT, threadpool_limits(limits=1, user_api="blas"), np.errstate(over="ignore", invalid="ignore"):
        for group in groups:
            for i in range(0, len(group), batch_size):
                rows = group[i : i + batch_size]
                e = ends[rows]
                x, t = ws.inputs(e)
                if strategy == "recursive":
                    dow = next_weekday_features(ws.dates[e], horizon, calendar)
                    factor, shift = ws.ret_feature(e)
                    fed, carried = ws.fed_back(e)
                    out[rows] = roll_forward(model, x, t, horizon, shift, dow, factor, fed, carried)
                else:
                    out[rows] = model(x, t)
    return out
