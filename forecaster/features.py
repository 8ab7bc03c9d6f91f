"""From an OHLCV frame to the arrays a model sees. Pure numpy, no I/O.

Row ``t`` of the features uses bars up to and including session ``t`` only:

==============  ==========================================
``ret``         log(close_t / close_{t-1})
``range``       log(high_t / low_t)
``body``        log(close_t / open_t)
``dvol``        log((volume_t + 1) / (volume_{t-1} + 1))
``rvol``        log of the local volatility ``sigma_t`` (below)
``zret``        log(close_t / close_{t-1}) / sigma_t: the return in units of the local volatility
``dow_sin/cos`` day of week on a 5-day circle (always the last two)
==============  ==========================================

The local volatility ``sigma_t`` is an exponentially weighted average of each session's
Garman–Klass range variance plus its overnight gap, ``(log open_t / close_{t-1})^2 +
0.5 (log high_t / low_t)^2 - (2 log 2 - 1) (log close_t / open_t)^2``: the day's high and low carry
several times more information about volatility than its close alone. An open outside the
day's low-high range (a bad print; validation checks the close, not the open) is read at the
nearer end of it, so one such bar cannot inflate the volatility for months. A session whose
price did not move at all (high = low = the close before: a halted stock's bar) is left out of
the average, which carries its value over: a halt of a year would otherwise bring the local
volatility down to a quarter (one of three years, to its floor), and the first moves after it
would read as four times their size.

The target of a window whose last input row is ``t`` is the cumulative log return
``log(close_{t+h} / close_t)`` for ``h = 1..H``; prices are rebuilt as ``close_t * exp(.)``.
Working in returns (not price levels) is what keeps a model honest against the random walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from . import sessions as sessions_module
from .config import ModelConfig
from .errors import ConfigError

FEATURES = ["ret", "range", "body", "dvol", "rvol", "zret", "dow_sin", "dow_cos"]
"""What a new run's network reads, in order."""
KNOWN_FEATURES = set(FEATURES)
"""Every feature this forecaster can compute (runs made before ``rvol`` and ``zret`` existed
use a subset)."""
CALENDAR = 2
"""The last two features are the calendar ones: standardised as they are, not by the scaler."""
MIN_VOL = 1e-4
"""Floor of the local volatility (0.01 % a day): a flat stretch of bars must not divide by zero."""


@dataclass(frozen=True)
class TickerArrays:
    """One ticker's aligned arrays, dropping the first bar (it has no previous close)."""

    dates: np.ndarray  # (T,) datetime64[ns]
    features: np.ndarray  # (T, F) float64, raw (not standardised)
    log_close: np.ndarray  # (T,) float64
    close: np.ndarray  # (T,) float64
    local_vol: np.ndarray  # (T,) float64, sigma_t: the local volatility of one session's log return
    still: np.ndarray | None = None  # (T,) bool: the session's price did not move (see :func:`still_sessions`)


def dow_features(dates: np.ndarray) -> np.ndarray:
    """(T, 2) sine/cosine of the weekday (Mon=0 .. Fri=4) on a 5-day circle."""
    dow = pd.DatetimeIndex(dates).day_of_week.to_numpy().astype(np.float64)
    angle = 2 * np.pi * dow / 5.0
    return np.stack([np.sin(angle), np.cos(angle)], axis=1)


def next_weekday_features(last_dates: np.ndarray, horizon: int, calendar: str | None = None) -> np.ndarray:
    """(B, H, 2) weekday features of the H sessions of exchange ``calendar`` after each date (a
    Friday before a Monday holiday is followed by Tuesday); with None, or for a date beyond
    the calendar's holiday data, of the H weekdays after it. A weekend date counts from the
    Friday before it, so the first weekday after it is the Monday."""
    days = np.asarray(last_dates).astype("datetime64[D]")
    steps = np.busday_offset(days[:, None], np.arange(1, horizon + 1)[None, :], roll="backward")
    found = _sessions_after(calendar, days, horizon) if calendar is not None and len(days) else None
    if found is not None:
        sessions, start = found  # every session of the calendar from ``start`` on, to past the last date
        at = np.searchsorted(sessions, days, side="right")[:, None] + np.arange(horizon)[None, :]
        known = (days >= start) & (at[:, -1] < len(sessions))  # within the calendar's data
        steps[known] = sessions[at[known]]
    return dow_features(steps.ravel().astype("datetime64[ns]")).reshape(len(days), horizon, 2)


def _sessions_after(calendar: str, days: np.ndarray, horizon: int) -> tuple[np.ndarray, np.datetime64] | None:
    """The sessions of ``calendar`` from the first of ``days`` to well past the last one's
    ``horizon`` sessions (clipped to the calendar's holiday data), as datetime64[D], with the
    first date they cover (a date from then on, a session or not, finds its next sessions in
    them); None for a calendar that cannot be built. One look-up for every date of a pass."""
    if not _buildable(calendar):
        return None
    lo, hi = pd.Timestamp(days.min()), pd.Timestamp(days.max()) + pd.Timedelta(days=2 * horizon + 31)
    first, last = sessions_module.calendar_bounds(calendar)
    lo = lo if first is None else max(lo, first)
    hi = hi if last is None else min(hi, last)
    if lo > hi:
        return None
    sessions = sessions_module.sessions_in_range(lo, hi, calendar).to_numpy().astype("datetime64[D]")
    return sessions, np.datetime64(lo.date(), "D")


@lru_cache(maxsize=16)
def _buildable(calendar: str) -> bool:
    try:
        sessions_module.get_calendar(sessions_module.check_calendar(calendar))
    except ConfigError:
        return False
    return True


def range_variance(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(T-1,) each session's Garman–Klass variance plus its overnight gap, from the second bar on
    (never negative)."""
    lo_, h_, o_, c_ = np.log(lo[1:]), np.log(h[1:]), np.log(o[1:]), np.log(c[1:])
    gap = o_ - np.log(c[:-1])
    gk = gap**2 + 0.5 * (h_ - lo_) ** 2 - (2 * np.log(2) - 1) * (c_ - o_) ** 2
    return np.maximum(gk, 0.0)


STILL_RTOL = 1e-9
"""Prices this close (relative) are the same price: far below any tick (a cent of 1,000 is
1e-5), far above the rounding of an adjusted price (open, high and low multiplied by
adj close / close, the close the adj close itself: a few units of the 16th digit apart)."""


def still_sessions(h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(T-1,) from the second bar on: the sessions whose price did not move at all, their high,
    low and close all the close before (a halted or untraded stock's bar), to a rounding of an
    adjusted price (:data:`STILL_RTOL`). They tell nothing of how much the price moves when it
    trades."""

    def same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.abs(a - b) <= STILL_RTOL * np.abs(b)

    return same(h[1:], lo[1:]) & same(c[1:], c[:-1]) & same(h[1:], c[1:])


def make_arrays(
    bars: pd.DataFrame,
    names: list[str] | None = None,
    halflife: float = ModelConfig.model_fields["scale_halflife"].default,
) -> TickerArrays:
    """Feature matrix (the features ``names``, default :data:`FEATURES`), log closes and the local
    volatility (EWMA of the range variance with ``halflife`` sessions) for a validated OHLCV frame
    of at least 2 rows."""
    names = FEATURES if names is None else list(names)
    o, h, lo, c, v = (bars[k].to_numpy(np.float64) for k in ("open", "high", "low", "close", "volume"))
    o = np.clip(o, lo, h)  # an open off the day's range (a bad print, an unadjusted split) is read at its edge
    log_c = np.log(c)
    lv = np.log1p(np.maximum(v, 0.0))
    dates = bars.index.to_numpy()[1:]
    still = still_sessions(h, lo, c)
    # a session that did not move is left out of the average, which carries its value over it
    ranges = np.where(still, np.nan, range_variance(o, h, lo, c))
    variance = pd.Series(ranges).ewm(halflife=halflife, min_periods=1, ignore_na=True).mean().to_numpy()
    local_vol = np.maximum(np.sqrt(np.nan_to_num(variance, nan=0.0)), MIN_VOL)  # none moved yet: the floor
    dow = dow_features(dates)
    columns = {
        "ret": np.diff(log_c),
        "range": np.log(h[1:] / lo[1:]),
        "body": np.log(c[1:] / o[1:]),
        "dvol": np.diff(lv),
        "rvol": np.log(local_vol),
        "zret": np.diff(log_c) / local_vol,
        "dow_sin": dow[:, 0],
        "dow_cos": dow[:, 1],
    }
    feats = np.stack([columns[n] for n in names], axis=1)
    return TickerArrays(dates=dates, features=feats, log_close=log_c[1:], close=c[1:], local_vol=local_vol, still=still)


@dataclass(frozen=True)
class Scaler:
    """Per-ticker statistics, fitted on the training split only."""

    mean: list[float]  # of the continuous features
    std: list[float]
    ret_std: float  # of one-session log returns over the training split

    @classmethod
    def fit(cls, features: np.ndarray) -> Scaler:
        cont = features[:, :-CALENDAR]
        std = cont.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        ret_std = float(std[0])
        return cls(mean=cont.mean(axis=0).tolist(), std=std.tolist(), ret_std=ret_std)

    def transform(self, features: np.ndarray) -> np.ndarray:
        out = features.astype(np.float32, copy=True)
        k = len(self.mean)
        out[:, :k] = (features[:, :k] - np.asarray(self.mean)) / np.asarray(self.std)
        return out

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "ret_std": self.ret_std}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(mean=[float(x) for x in d["mean"]], std=[float(x) for x in d["std"]], ret_std=float(d["ret_std"]))
