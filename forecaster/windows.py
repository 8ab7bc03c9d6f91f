"""Date splits and training windows over one contiguous array of all tickers.

Every ticker's feature rows are stacked into one ``(N, F)`` array; a window is just the index
``t`` of its last input row. Inputs are rows ``t-L+1 .. t`` and targets the cumulative log
returns to rows ``t+1 .. t+H``, gathered per batch, so no window is ever materialised.

Splits are by date over the union of all tickers' sessions: the last ``test_days`` sessions are
test, the ``val_days`` before them validation, the rest training. A window belongs to the split
of its first target date, and is kept only when all of its targets fall in that same split and
all of its rows in one ticker (no window crosses a ticker or split boundary).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .config import IntervalConfig, ModelConfig
from .errors import DataError
from .features import FEATURES, Scaler, TickerArrays, make_arrays
from .tickers import some_reasons

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    """First session of validation and of test; training is everything before ``val_start``."""

    val_start: pd.Timestamp
    test_start: pd.Timestamp

    def code(self, dates: np.ndarray) -> np.ndarray:
        """0 train, 1 val, 2 test for each date."""
        d = pd.DatetimeIndex(dates)
        return (d >= self.val_start).astype(np.int8) + (d >= self.test_start).astype(np.int8)

    def to_dict(self) -> dict:
        return {"val_start": str(self.val_start.date()), "test_start": str(self.test_start.date())}

    @classmethod
    def from_dict(cls, d: dict) -> Splits:
        return cls(pd.Timestamp(d["val_start"]), pd.Timestamp(d["test_start"]))


def make_splits(bars: dict[str, pd.DataFrame], val_days: int, test_days: int) -> Splits:
    """Split boundaries counted in sessions back from the latest date of any ticker."""
    # sorted unique dates in numpy: a set of Timestamps took 11 s for 1,000 tickers of 10 years
    dates = [b.index.to_numpy(dtype="datetime64[ns]") for b in bars.values()]
    union = pd.DatetimeIndex(np.unique(np.concatenate(dates)) if dates else np.array([], "datetime64[ns]"))
    if len(union) < val_days + test_days + 2:
        raise DataError(
            f"only {len(union)} session{'s' if len(union) != 1 else ''} in the data: not enough for "
            f"val_days={val_days} + test_days={test_days} plus training"
        )
    return Splits(val_start=union[-(val_days + test_days)], test_start=union[-test_days])


@dataclass
class WindowSet:
    """All tickers' rows stacked; windows are row indices into these arrays."""

    tickers: list[str]  # tickers present, in row order
    names: list[str]  # ticker of each id (the model's embedding order)
    lookback: int
    horizon: int
    x: np.ndarray  # (N, F) float32, standardised features
    log_close: np.ndarray  # (N,) float64
    close: np.ndarray  # (N,) float64
    dates: np.ndarray  # (N,) datetime64[ns]
    ticker_id: np.ndarray  # (N,) int64, index into ``tickers``
    offsets: np.ndarray  # (K+1,) first row of each ticker, then N
    split: np.ndarray  # (N,) int8 split code of each row's date
    scalers: dict[str, Scaler]
    scale: np.ndarray  # (N,) float64: a window ending at row t has targets divided by scale[t] * sqrt(h)
    vol: np.ndarray  # (N,) interval widening at each row (1.0 where the targets are already local)
    skipped: dict[str, str] = field(default_factory=dict)
    features: list[str] = field(default_factory=lambda: list(FEATURES))  # the columns of x
    still: np.ndarray | None = None  # (N,) bool: the row's price did not move (a halted stock's bar)

    @property
    def sqrt_h(self) -> np.ndarray:
        """(H,) sqrt(h): the h-step return's spread grows like it (a random walk's does)."""
        return np.sqrt(np.arange(1, self.horizon + 1, dtype=np.float64))

    def target_scale(self, ends: np.ndarray) -> np.ndarray:
        """(B, H) what the targets of the windows ending at ``ends`` are divided by."""
        return self.scale[ends][:, None] * self.sqrt_h

    def ends(self, split: str | None = None) -> np.ndarray:
        """Last-input-row indices of every valid window (of one split, or all)."""
        L, H = self.lookback, self.horizon
        parts = []
        for k in range(len(self.tickers)):
            lo, hi = self.offsets[k], self.offsets[k + 1]  # rows [lo, hi)
            t = np.arange(lo + L - 1, hi - H, dtype=np.int64)
            if split is not None:
                want = SPLITS.index(split)
                t = t[(self.split[t + 1] == want) & (self.split[t + H] == want)]
            else:
                t = t[self.split[t + 1] == self.split[t + H]]
            parts.append(t)
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def origins(self, split: str = "test") -> np.ndarray:
        """Every forecast origin whose next session is in ``split`` (walk-forward evaluation):
        like :meth:`ends`, but the last origins keep the steps that have actuals, so each
        session of the split is the first target of exactly one origin."""
        want = SPLITS.index(split)
        parts = []
        for k in range(len(self.tickers)):
            lo, hi = self.offsets[k], self.offsets[k + 1]
            t = np.arange(lo + self.lookback - 1, hi - 1, dtype=np.int64)
            parts.append(t[self.split[t + 1] == want])
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def inputs(self, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, L, F) inputs and (B,) ticker ids of the windows ending at ``ends``.

        Whole windows are copied from a read-only strided view of ``x`` (row ``s`` of the view is
        the window starting at row ``s``), ten times faster than gathering row by row."""
        ends = np.asarray(ends)
        x = np.ascontiguousarray(self.x)
        n, f = x.shape
        view = np.lib.stride_tricks.as_strided(
            x,
            shape=(max(n - self.lookback + 1, 0), self.lookback, f),
            strides=(x.strides[0], x.strides[0], x.strides[1]),
            writeable=False,
        )
        return view[ends - (self.lookback - 1)], self.ticker_id[ends]

    def ret_feature(self, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """How a one-step return r, in units of the target scale of the windows ending at
        ``ends``, becomes the standardised ``ret`` feature: ``r * factor - shift``, both (B,)."""
        mean, std = self._stats([0])
        tid = self.ticker_id[ends]
        return self.scale[ends] / std[tid, 0], mean[tid, 0] / std[tid, 0]

    def _stats(self, cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(K, C) each ticker's training mean and deviation of the feature columns ``cols``
        (0 and 1 for a ticker without a scaler)."""
        mean, std = np.zeros((len(self.names), len(cols))), np.ones((len(self.names), len(cols)))
        for i, s in enumerate(self.names):
            if s in self.scalers:
                mean[i] = [self.scalers[s].mean[c] for c in cols]
                std[i] = [self.scalers[s].std[c] for c in cols]
        return mean, std

    def fed_back(self, ends: np.ndarray) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], list[int]]:
        """What a recursive forecast from the windows ending at ``ends`` puts in the row it adds
        besides ``ret`` (:meth:`ret_feature`): ``zret``, the predicted return in units of the
        local volatility at the origin, as (column, factor, shift) with ``r * factor - shift``
        (B,) each; and the columns carried over from the row before (``rvol``: the local
        volatility persists). Nothing for features a run does not have."""
        names = self.features
        if "zret" not in names or "rvol" not in names:
            return [], []
        z, rv = names.index("zret"), names.index("rvol")
        mean, std = self._stats([z, rv])
        tid = self.ticker_id[ends]
        local = np.exp(self.x[ends, rv].astype(np.float64) * std[tid, 1] + mean[tid, 1])  # sigma at the origin
        return [(z, self.scale[ends] / local / std[tid, 0], mean[tid, 0] / std[tid, 0])], [rv]

    def targets(self, ends: np.ndarray) -> np.ndarray:
        """(B, H) scaled cumulative log returns after each window (every target must exist)."""
        fut = ends[:, None] + np.arange(1, self.horizon + 1)  # (B, H)
        cum = self.log_close[fut] - self.log_close[ends][:, None]
        return (cum / self.target_scale(ends)).astype(np.float32)

    def unmoved(self, ends: np.ndarray) -> np.ndarray:
        """(B, H) True where every session from the one after ``ends`` to the step's did not move
        at all (:attr:`still`: a halt); False where they are unknown."""
        steps = np.arange(1, self.horizon + 1)
        if self.still is None or len(self.still) == 0:
            return np.zeros((len(ends), self.horizon), bool)
        count = np.concatenate([[0], np.cumsum(self.still)])  # count[t]: still rows before row t
        fut = np.minimum(ends[:, None] + steps, len(self.still) - 1)  # (B, H)
        return count[fut + 1] - count[ends + 1][:, None] == steps

    def realised(self, ends: np.ndarray) -> np.ndarray:
        """(B, H) like :meth:`targets`, in float64, with NaN for the steps past the ticker's last
        row (the actuals not known yet at the last origins)."""
        fut = ends[:, None] + np.arange(1, self.horizon + 1)  # (B, H)
        last_row = self.offsets[np.searchsorted(self.offsets, ends, side="right")] - 1  # (B,)
        have = fut <= last_row[:, None]
        cum = self.log_close[np.minimum(fut, last_row[:, None])] - self.log_close[ends][:, None]
        return np.where(have, cum / self.target_scale(ends), np.nan)


def ending_before(bars: dict[str, pd.DataFrame], start: pd.Timestamp) -> dict[str, dict[str, str]]:
    """The tickers whose bars end before ``start`` (a delisted ticker, a stale file): they can
    have no window in the split starting there. Each with its last date and ``start``."""
    return {
        sym: {"last_date": str(df.index[-1].date()), "split_start": str(start.date())}
        for sym, df in bars.items()
        if len(df) and df.index[-1] < start
    }


def without_windows(
    ws: WindowSet, bars: dict[str, pd.DataFrame], ends: np.ndarray, start: pd.Timestamp
) -> dict[str, dict[str, str]]:
    """The tickers of ``ws`` none of whose windows end at ``ends`` (one split's origins), the
    split starting at ``start``: those whose bars end before it, and those whose bars reach
    into it by too few sessions for one forecast. Each with its last date and ``start``."""
    have = set(np.unique(ws.ticker_id[ends]).tolist())
    return {
        sym: {"last_date": str(bars[sym].index[-1].date()), "split_start": str(start.date())}
        for k, sym in enumerate(ws.tickers)
        if k not in have and len(bars[sym])
    }


def build_windows(
    bars: dict[str, pd.DataFrame],
    lookback: int,
    horizon: int,
    splits: Splits,
    scalers: dict[str, Scaler] | None = None,
    tickers: list[str] | None = None,
    *,
    features: list[str] | None = None,
    target_scale: str = ModelConfig.model_fields["target_scale"].default,
    scale_halflife: int = ModelConfig.model_fields["scale_halflife"].default,
    vol_halflife: int = IntervalConfig.model_fields["vol_halflife"].default,
) -> WindowSet:
    """Stack tickers into one WindowSet.

    Training: ``scalers`` is None and each ticker's scaler is fitted on its training rows only;
    a ticker with too few rows for one training window is skipped, its reason in ``skipped``.
    Evaluation / prediction: pass the run's ``scalers`` and ``tickers`` (its embedding order);
    every ticker then keeps its id, and one without enough rows raises a DataError naming it.

    ``features`` (default :data:`FEATURES`) are the network's inputs. ``target_scale``: "local"
    divides each window's targets by the local volatility at its last row (half-life
    ``scale_halflife``), "ticker" by the ticker's training volatility, with the intervals then
    widened by the EWMA volatility (half-life ``vol_halflife``) relative to it.
    """
    order = list(tickers) if tickers is not None else sorted(bars)
    fitted, arrays, skipped = _ticker_arrays(bars, order, lookback, horizon, splits, scalers, features, scale_halflife)
    kept = list(arrays)
    ids = {s: i for i, s in enumerate(kept)} if tickers is None else {s: i for i, s in enumerate(order)}
    sizes = [len(a.dates) for a in arrays.values()]
    dates = np.concatenate([a.dates for a in arrays.values()])
    scale, vol = _target_scale(arrays, fitted, target_scale, vol_halflife)
    return WindowSet(
        tickers=kept,
        names=list(ids),
        lookback=lookback,
        horizon=horizon,
        x=np.concatenate([fitted[s].transform(a.features) for s, a in arrays.items()]),
        log_close=np.concatenate([a.log_close for a in arrays.values()]),
        close=np.concatenate([a.close for a in arrays.values()]),
        dates=dates,
        ticker_id=np.repeat(np.array([ids[s] for s in kept], dtype=np.int64), sizes),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        split=splits.code(dates),
        scalers={s: fitted[s] for s in kept},
        scale=scale,
        vol=vol,
        skipped=skipped,
        features=list(features) if features is not None else list(FEATURES),
        still=np.concatenate([a.still for a in arrays.values()]),
    )


def _ticker_arrays(bars, order, lookback, horizon, splits, scalers, features, halflife):
    """Each usable ticker's arrays, in ``order``, and its scaler: fitted on its training rows
    (``scalers`` None; a ticker too short for one training window is skipped, with the reason)
    or the given one (a ticker without a full window is an error)."""
    fitting = scalers is None
    fitted: dict[str, Scaler] = {} if fitting else dict(scalers)
    arrays: dict[str, TickerArrays] = {}
    skipped: dict[str, str] = {}
    for sym in order:
        if sym not in bars:
            continue
        a = make_arrays(bars[sym], features, halflife) if len(bars[sym]) >= 2 else None
        n = 0 if a is None else len(a.dates)
        if fitting:
            # one training window takes lookback + horizon rows, each a bar with the bar before
            # it (for its return): lookback + horizon + 1 bars in the training split
            n_bars = int((bars[sym].index < splits.val_start).sum())
            if a is None or n_bars < lookback + horizon + 1:
                reason = (
                    f"{n_bars} bars in the training split, need at least {lookback + horizon + 1} "
                    f"(lookback {lookback} + horizon {horizon}, plus the bar before them for the first return)"
                )
                skipped[sym] = reason  # the caller says so
                continue
            fitted[sym] = Scaler.fit(a.features[splits.code(a.dates) == 0])
        elif n < lookback:
            raise DataError(f"{sym}: only {n + 1} bars, need at least {lookback + 1} for lookback {lookback}")
        arrays[sym] = a
    if not arrays:
        raise DataError(f"no ticker has enough history: {some_reasons(skipped)}")
    return fitted, arrays, skipped


def _target_scale(arrays: dict[str, TickerArrays], fitted, target_scale: str, vol_halflife: int):
    """(N,) each row's target scale and (N,) its interval widening (see :func:`build_windows`)."""
    if target_scale == "local":
        scale = np.concatenate([a.local_vol for a in arrays.values()])
        return scale, np.ones(len(scale))
    if target_scale == "ticker":
        scale = np.concatenate([np.full(len(a.dates), fitted[s].ret_std) for s, a in arrays.items()])
        # the "ret" feature (always the first) is each row's daily log return
        vol = [ewma_vol(a.features[:, 0], fitted[s].ret_std, vol_halflife, a.still) for s, a in arrays.items()]
        return scale, np.concatenate(vol)
    raise ValueError(f"unknown target scale {target_scale!r}")


def ewma_vol(returns: np.ndarray, ret_std: float, halflife: int, still: np.ndarray | None = None) -> np.ndarray:
    """Exponentially weighted volatility of one ticker's daily log returns, up to and including
    each row, in units of its training volatility (about 1 in a typical training period).
    The rows of ``still`` (sessions whose price did not move at all: a halt) are left out of the
    average, which carries its value over them, as the local volatility does: counted as returns
    of 0, a halt of 300 sessions brought it to half a percent, and the intervals with it."""
    r2 = (returns / ret_std) ** 2
    if still is not None:
        r2 = np.where(still, np.nan, r2)
    average = pd.Series(r2).ewm(halflife=halflife, min_periods=1, ignore_na=True).mean().to_numpy()
    return np.sqrt(np.nan_to_num(average, nan=0.0))  # none moved yet: 0, as returns of 0 gave
