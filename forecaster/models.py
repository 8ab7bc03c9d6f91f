"""The network: a recurrent encoder (Elman RNN, LSTM or GRU), a ticker embedding and a quantile
head. Pure torch: it sees tensors only, never files or frames.

``direct`` emits all H steps from one head (many-to-many); ``recursive`` emits one step and is
rolled forward at inference (:func:`forecaster.npinfer.roll_forward`). Quantiles are kept in order
by construction: the median is free and every other level is the median plus or minus a
cumulative softplus.

Training runs this module; every forecast (validation calibration, evaluate, predict) runs the
same weights through the numpy forward pass in :mod:`forecaster.npinfer`.
"""

from __future__ import annotations

import copy
import threading

import torch
from torch import nn
from torch.nn import functional as F

from .npinfer import ar_feature, ordering_matrix

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

DRAW_TURN = threading.local()
"""Where training runs a batch's pieces side by side, each thread's wait for its turn to draw
random numbers (``DRAW_TURN.wait``, a callable; unset elsewhere): dropout draws from torch's one
generator, so the pieces draw in their order and a seed gives the same masks whatever the timing."""


def _in_turn(fn, *args):
    wait = getattr(DRAW_TURN, "wait", None)
    if wait is not None:
        wait()
    return fn(*args)


def _without_dropout(module: nn.Module, *args):
    """``module(*args)`` in eval mode (no dropout), its mode restored after."""
    was = module.training
    module.train(False)
    try:
        return module(*args)
    finally:
        module.train(was)


class QuantileRNN(nn.Module):
    def __init__(
        self,
        *,
        cell: str,
        n_features: int,
        n_tickers: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        embedding_dim: int,
        horizon: int,
        quantiles: list[float],
        strategy: str,
        ar_order: int = 0,
        ar_feature: int | None = None,
    ):
        super().__init__()
        self.quantiles = list(quantiles)
        self.median_index = self.quantiles.index(0.5)
        self.steps = horizon if strategy == "direct" else 1
        self.embedding = nn.Embedding(n_tickers, embedding_dim) if embedding_dim else None
        self.encoder = CELLS[cell](
            input_size=n_features + embedding_dim,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        # forking sequences: whether the gradient flows back through the rows before ``first``
        # (set for training; not a weight, and inference never reads it)
        self.burn_in_grad = True
        # and, when the burn-in runs without gradient, whether the dropout between the encoder's
        # layers applies there too (False: its state is computed as inference computes it)
        self.burn_in_dropout = True
        self.head = nn.Linear(hidden_size, self.steps * len(self.quantiles))
        q, m = len(self.quantiles), self.median_index
        # (Q, Q): quantiles = median + softplus(raw) @ order, the median's own row zero (not weights:
        # kept out of the state dict, made again from the quantiles)
        order = torch.zeros(q, q)
        order[[i for i in range(q) if i != m]] = torch.from_numpy(ordering_matrix(q, m))
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("median_onehot", (torch.arange(q) == m).float(), persistent=False)
        # the autoregressive highway: the median of each step plus a linear function of the last
        # ``ar_order`` values of one input feature (the return in units of the local volatility)
        self.ar_feature = ar_feature
        self.ar = nn.Linear(ar_order, self.steps) if ar_order else None
        if self.ar is not None:  # starts as no term at all: the data have to ask for one
            nn.init.zeros_(self.ar.weight)
            nn.init.zeros_(self.ar.bias)

    def forward(
        self,
        x: torch.Tensor,
        ticker: torch.Tensor,
        first: int | None = None,
        state: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """x: (B, L, F) standardised features, ticker: (B,) ids -> (B, steps, Q), the forecast
        from the last row.

        With ``first`` (forking sequences), a forecast from every row from ``first`` on:
        (B, L - first, steps, Q); the one from row ``i`` has read rows ``0 .. i`` only. With
        ``state`` too, the encoder's state after rows ``0 .. first - 1``, computed beforehand
        (:meth:`burn_in`): those rows are not run again (the AR term still reads them).
        """
        e = self._embedded(ticker)

        def inputs(rows: torch.Tensor) -> torch.Tensor:
            return self._joined(rows, e)

        drawn = self.training and self.encoder.dropout > 0  # dropout between the encoder's layers
        encoder = (lambda *a: _in_turn(self.encoder, *a)) if drawn else self.encoder
        if state is not None:
            if not first:
                raise ValueError("a burn-in state needs the row its chunk starts at (first)")
            h, _ = encoder(inputs(x[:, first:]), state)  # (B, C, hidden)
        elif first is not None and first > 0 and not self.burn_in_grad and torch.is_grad_enabled():
            with torch.no_grad():  # the burn-in: its state, without a graph
                if self.burn_in_dropout or not drawn:
                    _, state = encoder(inputs(x[:, :first]))
                else:  # as inference computes it
                    _, state = _without_dropout(self.encoder, inputs(x[:, :first]))
            h, _ = encoder(inputs(x[:, first:]), state)  # (B, C, hidden)
        else:
            out, _ = encoder(inputs(x))  # (B, L, hidden)
            h = out[:, -1] if first is None else out[:, first:]  # (B, hidden) or (B, C, hidden)
        h = _in_turn(self.dropout, h) if self.training else h
        raw = self.head(h).view(*h.shape[:-1], self.steps, len(self.quantiles))  # (B, [C,] S, Q)
        if self.ar is not None:  # read from the features themselves: data, so no graph to build
            k = self.ar.in_features
            lags = x[..., self.ar_feature].unfold(1, k, 1)  # (B, T-k+1, k): the k values up to each row
            lags = lags[:, -1] if first is None else lags[:, first - k + 1 :]  # (B, [C,] k)
            raw = raw + self.ar(lags)[..., None] * self.median_onehot  # added to the median only
        return self._ordered(raw)

    def burn_in(self, x: torch.Tensor, ticker: torch.Tensor, first: int):
        """The encoder's state after rows ``0 .. first - 1`` of ``x`` (B, L, F), without a graph,
        in this module's mode (an :func:`eval_twin` computes it as inference does, without
        dropout): what :meth:`forward` takes as ``state``."""
        with torch.no_grad():
            return self.encoder(self._joined(x[:, :first], self._embedded(ticker)))[1]

    def _embedded(self, ticker: torch.Tensor) -> torch.Tensor | None:
        """(B,) ticker ids -> (B, 1, E) embeddings, None without an embedding."""
        return None if self.embedding is None else self.embedding(ticker)[:, None, :]

    @staticmethod
    def _joined(rows: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        """(B, T, F) features -> (B, T, F+E), the ticker's embedding on every row."""
        return rows if e is None else torch.cat([rows, e.expand(-1, rows.shape[1], -1)], dim=-1)

    def _ordered(self, raw: torch.Tensor) -> torch.Tensor:
        """Monotone quantiles from raw outputs (..., S, Q): median free, gaps softplus, summed
        outwards from the median (:func:`forecaster.npinfer.ordering_matrix`, as the numpy
        forward pass orders them)."""
        m = self.median_index
        return raw[..., m : m + 1] + F.softplus(raw) @ self.order


def eval_twin(model: QuantileRNN) -> QuantileRNN:
    """A second module over the same parameter and buffer tensors as ``model``, kept in eval
    mode: it reads the weights as they are, so another thread can compute with it (a burn-in
    ahead, :meth:`QuantileRNN.burn_in`) while ``model`` trains, without either touching the
    other's mode."""
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo=shared).eval()


def build_model(cfg, n_features: int, n_tickers: int, features: list[str] | None = None) -> QuantileRNN:
    """The network for a :class:`forecaster.config.Config` reading ``features``."""
    m = cfg.model
    return QuantileRNN(
        ar_order=m.ar_order,
        ar_feature=ar_feature(m.ar_order, features),
        cell=m.cell,
        n_features=n_features,
        n_tickers=n_tickers,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        dropout=m.dropout,
        embedding_dim=m.embedding_dim,
        horizon=cfg.window.horizon,
        quantiles=m.quantiles,
        strategy=m.strategy,
    )


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: list[float] | torch.Tensor) -> torch.Tensor:
    """Mean pinball loss; pred (B, S, Q), target (B, S); quantiles a list or a (Q,) tensor."""
    q = (
        quantiles
        if isinstance(quantiles, torch.Tensor)
        else torch.tensor(quantiles, dtype=pred.dtype, device=pred.device)
    )
    diff = target.unsqueeze(-1) - pred  # (B, S, Q)
    return torch.maximum(q * diff, (q - 1) * diff).mean()
