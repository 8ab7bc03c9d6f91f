"""Baseline forecasts reported next to every model (SPEC §8), vectorised over origins.

All functions take one ticker's closes in chronological order, ``close`` (positive prices),
the forecast origins ``origins`` (integer indices into ``close``: the last bar observed by each
forecast) and the horizon ``horizon``. They return price forecasts of shape
``(len(origins), horizon)``, column ``j`` being step ``h = j + 1``. Each forecast only uses
``close[: o + 1]``, so they are safe for walk-forward evaluation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["naive", "drift", "mean", "naive_scale", "BASELINES", "DEFAULT_MEAN_WINDOW"]

DEFAULT_MEAN_WINDOW = 250
"""Number of past daily log returns averaged by :func:`mean` (about one trading year)."""


def _prepare(close, origins, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate inputs; return (log close, origins as int64, steps 1..horizon as float)."""
    close = np.asarray(close, dtype=float)
    if close.ndim != 1:
        raise ValueError(f"close must be 1-D, got shape {close.shape}")
    if close.size == 0:
        raise ValueError("close is empty")
    if not np.all(np.isfinite(close)) or np.any(close <= 0):
        raise ValueError("close must hold finite positive prices")
    origins_arr = np.asarray(origins)
    if origins_arr.size and not np.issubdtype(origins_arr.dtype, np.integer):
        raise ValueError(f"origins must be integer indices, got dtype {origins_arr.dtype}")
    origins_arr = origins_arr.astype(np.int64).reshape(-1)
    if origins_arr.size and (origins_arr.min() < 0 or origins_arr.max() >= close.size):
        raise ValueError(f"origins must lie in [0, {close.size - 1}]")
    horizon = int(horizon)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    steps = np.arange(1, horizon + 1, dtype=float)
    return np.log(close), origins_arr, steps


def naive(close, origins, horizon: int) -> np.ndarray:
    """Random walk: every step forecasts the last observed close, ``y_hat[o, h] = close[o]``."""
    log_close, origins, _ = _prepare(close, origins, horizon)
    last = np.exp(log_close[origins])
    return np.repeat(last[:, None], int(horizon), axis=1)


def drift(close, origins, horizon: int) -> np.ndarray:
    """Random walk with drift (Hyndman & Athanasopoulos), on log prices.

    ``log y_hat[o, h] = log close[o] + h * (log close[o] - log close[0]) / o``: the straight line
    through the first and the last observed log price, extended ``h`` steps. At ``o = 0`` there
    is no history and the forecast is the naive one.
    """
    log_close, origins, steps = _prepare(close, origins, horizon)
    last = log_close[origins]
    slope = np.zeros(origins.shape[0], dtype=float)
    has_history = origins > 0
    slope[has_history] = (last[has_history] - log_close[0]) / origins[has_history]
    return np.exp(last[:, None] + steps[None, :] * slope[:, None])


def mean(close, origins, horizon: int, window: int = DEFAULT_MEAN_WINDOW) -> np.ndarray:
    """Historical mean log return, compounded: ``y_hat[o, h] = close[o] * exp(h * m_o)``.

    ``m_o`` is the mean of the last ``min(window, o)`` daily log returns up to the origin,
    ``r_t = log close[t] - log close[t - 1]`` for ``t = o - k + 1 .. o`` (``k = min(window, o)``),
    taken from a cumulative sum of the returns. At ``o = 0`` there is no return yet, ``m_o = 0``
    and the forecast is the naive one.
    """
    log_close, origins, steps = _prepare(close, origins, horizon)
    window = int(window)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    returns = np.diff(log_close)
    # cum[t] = sum of r_1 .. r_t (r_t = log close[t] - log close[t-1]), cum[0] = 0
    cum = np.concatenate(([0.0], np.cumsum(returns)))
    count = np.minimum(origins, window)
    total = cum[origins] - cum[origins - count]
    mean_return = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return np.exp(log_close[origins][:, None] + steps[None, :] * mean_return[:, None])


def naive_scale(close_train) -> float:
    """MASE denominator: the training split's one-step naive MAE, ``mean(|close[t] - close[t-1]|)``.

    NaN values are ignored; NaN when fewer than two closes are given.
    """
    close_train = np.asarray(close_train, dtype=float).reshape(-1)
    changes = np.abs(np.diff(close_train))
    changes = changes[~np.isnan(changes)]
    if changes.size == 0:
        return float("nan")
    return float(np.mean(changes))


BASELINES = {"naive": naive, "drift": drift, "mean": mean}
"""The baselines by the names used in ``metrics.csv``."""
