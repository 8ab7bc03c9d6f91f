"""From an OHLCV frame to the arrays a model sees. Pure numpy, no I/O.

Row ``t`` of the features uses bars up to and including session ``t`` only:

==============  ==========================================
``ret``         log(close_t / close_{t-1})
``range``       log(high_t / low_t)
``body``        log(close_t / open_t)
``dvol``        log((volume_t + 1) / (volume_{t-1} + 1))
``dow_sin/cos`` day of week on a 5-day circle
==============  ==========================================

The target of a window whose last input row is ``t`` is the cumulative log return
``log(close_{t+h} / close_t)`` for ``h = 1..H``; prices are rebuilt as ``close_t * exp(.)``.
Working in returns (not price levels) is what keeps a model honest against the random walk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURES = ["ret", "range", "body", "dvol", "dow_sin", "dow_cos"]
CONTINUOUS = 4  # the first four features are standardised; the calendar ones are not


@dataclass(frozen=True)
class TickerArrays:
    """One ticker's aligned arrays, dropping the first bar (it has no previous close)."""

    dates: np.ndarray  # (T,) datetime64[ns]
    features: np.ndarray  # (T, F) float64, raw (not standardised)
    log_close: np.ndarray  # (T,) float64
    close: np.ndarray  # (T,) float64


def dow_features(dates: np.ndarray) -> np.ndarray:
    """(T, 2) sine/cosine of the weekday (Mon=0 .. Fri=4) on a 5-day circle."""
    dow = pd.DatetimeIndex(dates).day_of_week.to_numpy().astype(np.float64)
    angle = 2 * np.pi * dow / 5.0
    return np.stack([np.sin(angle), np.cos(angle)], axis=1)


def next_weekday_features(last_dates: np.ndarray, horizon: int) -> np.ndarray:
    """(B, H, 2) weekday features of the H weekdays after each date (holidays don't matter here:
    only the day of the week is used)."""
    days = np.asarray(last_dates).astype("datetime64[D]")
    steps = np.busday_offset(days[:, None], np.arange(1, horizon + 1)[None, :], roll="forward")
    return dow_features(steps.ravel().astype("datetime64[ns]")).reshape(len(days), horizon, 2)


def make_arrays(bars: pd.DataFrame) -> TickerArrays:
    """Feature matrix and log closes for a validated OHLCV frame (at least 2 rows)."""
    o, h, lo, c, v = (bars[k].to_numpy(np.float64) for k in ("open", "high", "low", "close", "volume"))
    log_c = np.log(c)
    lv = np.log1p(np.maximum(v, 0.0))
    feats = np.empty((len(c) - 1, len(FEATURES)), dtype=np.float64)
    feats[:, 0] = np.diff(log_c)
    feats[:, 1] = np.log(h[1:] / lo[1:])
    feats[:, 2] = np.log(c[1:] / o[1:])
    feats[:, 3] = np.diff(lv)
    dates = bars.index.to_numpy()[1:]
    feats[:, 4:6] = dow_features(dates)
    return TickerArrays(dates=dates, features=feats, log_close=log_c[1:], close=c[1:])


@dataclass(frozen=True)
class Scaler:
    """Per-ticker statistics, fitted on the training split only."""

    mean: list[float]  # of the continuous features
    std: list[float]
    ret_std: float  # scale of one-session log returns; targets are divided by ret_std*sqrt(h)

    @classmethod
    def fit(cls, features: np.ndarray) -> Scaler:
        cont = features[:, :CONTINUOUS]
        std = cont.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        ret_std = float(std[0])
        return cls(mean=cont.mean(axis=0).tolist(), std=std.tolist(), ret_std=ret_std)

    def transform(self, features: np.ndarray) -> np.ndarray:
        out = features.astype(np.float32, copy=True)
        out[:, :CONTINUOUS] = (features[:, :CONTINUOUS] - np.asarray(self.mean)) / np.asarray(self.std)
        return out

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "ret_std": self.ret_std}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(mean=[float(x) for x in d["mean"]], std=[float(x) for x in d["std"]], ret_std=float(d["ret_std"]))


def target_scale(ret_std: float, horizon: int) -> np.ndarray:
    """(H,) divisor per step: a random walk's h-step log return grows like sqrt(h)."""
    return ret_std * np.sqrt(np.arange(1, horizon + 1, dtype=np.float64))
