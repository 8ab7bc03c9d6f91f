"""Batched forecasts from a model over any set of windows (validation, test, or the latest)."""

from __future__ import annotations

import numpy as np
import torch

from .features import next_weekday_features
from .models import QuantileRNN, roll_forward
from .windows import WindowSet


@torch.no_grad()
def predict_scaled(
    model: QuantileRNN,
    ws: WindowSet,
    ends: np.ndarray,
    strategy: str,
    batch_size: int = 8192,
    device: torch.device | None = None,
) -> np.ndarray:
    """(B, H, Q) quantiles of the cumulative log return, in units of ``ret_std * sqrt(h)``."""
    device = device or torch.device("cpu")
    model.eval()
    horizon = ws.horizon
    shift = ws.ret_shift()
    out = []
    for i in range(0, len(ends), batch_size):
        e = ends[i : i + batch_size]
        x, tid = ws.inputs(e)
        xt = torch.from_numpy(x).to(device)
        tt = torch.from_numpy(tid).to(device)
        if strategy == "recursive":
            dow = torch.from_numpy(next_weekday_features(ws.dates[e], horizon)).float().to(device)
            sh = torch.from_numpy(shift[tid]).float().to(device)
            q = roll_forward(model, xt, tt, horizon, sh, dow)
        else:
            q = model(xt, tt)
        out.append(q.float().cpu().numpy())
    if not out:
        return np.empty((0, horizon, len(model.quantiles)), np.float32)
    return np.concatenate(out)


def to_log_returns(scaled: np.ndarray, ws: WindowSet, ends: np.ndarray) -> np.ndarray:
    """Scaled quantiles (B, H, Q) -> cumulative log returns (B, H, Q)."""
    return scaled * ws.tscale[ws.ticker_id[ends]][:, :, None]
