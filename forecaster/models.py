"""The network: a recurrent encoder (Elman RNN, LSTM or GRU), a ticker embedding and a quantile
head. Pure torch: it sees tensors only, never files or frames.

``direct`` emits all H steps from one head (many-to-many); ``recursive`` emits one step and is
rolled forward by :func:`roll_forward`. Quantiles are kept in order by construction: the median
is free and every other level is the median plus or minus a cumulative softplus.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


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
        self.head = nn.Linear(hidden_size, self.steps * len(self.quantiles))

    def forward(self, x: torch.Tensor, ticker: torch.Tensor, first: int | None = None) -> torch.Tensor:
        """x: (B, L, F) standardised features, ticker: (B,) ids -> (B, steps, Q), the forecast
        from the last row.

        With ``first`` (forking sequences), a forecast from every row from ``first`` on:
        (B, L - first, steps, Q); the one from row ``i`` has read rows ``0 .. i`` only.
        """
        if self.embedding is not None:
            e = self.embedding(ticker)  # (B, E)
            x = torch.cat([x, e[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)  # (B, L, F+E)
        out, _ = self.encoder(x)  # (B, L, hidden)
        h = out[:, -1] if first is None else out[:, first:]  # (B, hidden) or (B, C, hidden)
        raw = self.head(self.dropout(h))  # (B, [C,] steps*Q)
        return self._ordered(raw.view(*h.shape[:-1], self.steps, len(self.quantiles)))

    def _ordered(self, raw: torch.Tensor) -> torch.Tensor:
        """Monotone quantiles from raw outputs (..., S, Q): median free, gaps softplus, summed
        outwards from the median (a single level on a side is its own sum: no cumsum then)."""
        m = self.median_index
        med = raw[..., m : m + 1]
        gaps = F.softplus(raw)  # (..., S, Q); the median's own entry is not used
        below, above = gaps[..., :m], gaps[..., m + 1 :]
        if below.shape[-1] > 1:
            below = torch.flip(torch.cumsum(torch.flip(below, [-1]), -1), [-1])
        if above.shape[-1] > 1:
            above = torch.cumsum(above, -1)
        return torch.cat([med - below, med, med + above], dim=-1)


def build_model(cfg, n_features: int, n_tickers: int) -> QuantileRNN:
    """The network for a :class:`forecaster.config.Config`."""
    m = cfg.model
    return QuantileRNN(
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


@torch.no_grad()
def roll_forward(
    model: QuantileRNN,
    x: torch.Tensor,
    ticker: torch.Tensor,
    horizon: int,
    ret_shift: torch.Tensor,
    next_dow: torch.Tensor,
) -> torch.Tensor:
    """Recursive multi-step forecast from a one-step model.

    x: (B, L, F) standardised inputs; ret_shift: (B,) the ticker's training mean return in units
    of its return scale (so a predicted return r, in those units, is the feature ``r - shift``);
    next_dow: (B, H, 2) calendar features of the next H sessions. Each step appends a row with
    the predicted median return, the other market features at their training mean (0 after
    scaling) and the next weekday. Returns cumulative-return quantiles (B, H, Q) in units of
    ``ret_std * sqrt(h)``, like the direct head: medians add up, the spreads of the steps add
    in quadrature (independent steps).
    """
    m = model.median_index
    cum = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)  # (B,)
    lo_sq = torch.zeros(x.shape[0], m, dtype=x.dtype, device=x.device)  # (B, m)
    hi_sq = torch.zeros(x.shape[0], len(model.quantiles) - m - 1, dtype=x.dtype, device=x.device)
    out = []
    for h in range(horizon):
        q = model(x, ticker)[:, 0]  # (B, Q), one step, units of ret_std
        r = q[:, m]
        cum = cum + r
        lo_sq = lo_sq + (r[:, None] - q[:, :m]) ** 2
        hi_sq = hi_sq + (q[:, m + 1 :] - r[:, None]) ** 2
        levels = torch.cat([cum[:, None] - lo_sq.sqrt(), cum[:, None], cum[:, None] + hi_sq.sqrt()], -1)
        out.append(levels / math.sqrt(h + 1))
        new = torch.zeros_like(x[:, :1])  # (B, 1, F)
        new[:, 0, 0] = r - ret_shift
        new[:, 0, -2:] = next_dow[:, h]
        x = torch.cat([x[:, 1:], new], dim=1)
    return torch.stack(out, dim=1)  # (B, H, Q)
