"""Split-conformal calibration of quantile intervals.

Two scores are available, both fitted per ticker and step on the validation split so that the
interval covers the nominal 80 % of the actuals:

- additive (conformalized quantile regression, Romano, Patterson & Candès, 2019): the raw
  ``[p10, p90]`` is widened or narrowed by one offset, :func:`calibrate`;
- volatility-scaled multiplicative (what the forecaster uses): the interval's two half-widths
  around the median are multiplied by ``s * v``, where ``v`` is the local volatility at the
  origin relative to the training volatility, :func:`calibrate_scales`. Returns are
  heteroskedastic; a validation split that was more volatile than today would otherwise leave
  today's intervals too wide (and a calmer one too narrow).

Split-conformal coverage holds only while the future resembles the validation split. Walking
forward, :func:`track_scales` therefore keeps adjusting each scale from the errors already
realised (online quantile tracking, in the spirit of adaptive conformal inference, Gibbs &
Candès, 2021): every miss widens the interval a little, every hit narrows it a little less, so
that the long-run miss rate is pulled to the nominal one whatever the regime.

Everything works in whatever unit the caller uses; nothing here imports torch.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_COVERAGE",
    "MIN_ROWS",
    "conformity_scores",
    "conformal_offsets",
    "calibrate",
    "apply_offsets",
    "scale_scores",
    "calibrate_scales",
    "apply_scales",
    "TRACKING_RATE",
    "track_scales",
]

DEFAULT_COVERAGE = 0.8
"""Nominal coverage of the ``[p10, p90]`` interval."""

MIN_ROWS = 20
"""Fewest validation rows for a (ticker, step) offset of its own; fewer use the pooled one."""


def conformity_scores(actual, lo, hi) -> np.ndarray:
    """CQR scores ``E = max(lo - y, y - hi)``: > 0 outside the interval, <= 0 inside.

    Rows where any input is NaN are dropped.
    """
    y = np.asarray(actual, dtype=float).reshape(-1)
    a = np.asarray(lo, dtype=float).reshape(-1)
    b = np.asarray(hi, dtype=float).reshape(-1)
    if not (y.shape == a.shape == b.shape):
        raise ValueError(f"arrays differ in length: {y.shape[0]}, {a.shape[0]}, {b.shape[0]}")
    keep = ~(np.isnan(y) | np.isnan(a) | np.isnan(b))
    return np.maximum(a[keep] - y[keep], y[keep] - b[keep])


def conformal_quantile(scores, coverage: float = DEFAULT_COVERAGE) -> float:
    """The ``ceil((n + 1) * coverage)``-th smallest finite score (the largest when that rank is
    above n; NaN when there is no finite score)."""
    coverage = float(coverage)
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    scores = np.sort(np.asarray(scores, dtype=float)[np.isfinite(scores)])
    n = scores.shape[0]
    if n == 0:
        return float("nan")
    # the small tolerance keeps e.g. (99 + 1) * 0.8 = 80.00000000000001 from rounding up to 81
    k = math.ceil((n + 1) * coverage - 1e-9)
    return float(scores[min(max(k, 1), n) - 1])


def scale_scores(actual, lo, mid, hi, vol) -> np.ndarray:
    """Multiplicative scores: the factor by which the half-width on the actual's side,
    times ``vol``, must be stretched to reach the actual (<= 1 inside the raw interval)."""
    y, a, m, b, v = (np.asarray(x, dtype=float).reshape(-1) for x in (actual, lo, mid, hi, vol))
    with np.errstate(divide="ignore", invalid="ignore"):
        below = (m - y) / (v * np.maximum(m - a, 1e-12))
        above = (y - m) / (v * np.maximum(b - m, 1e-12))
    return np.maximum(below, above)


def calibrate_scales(
    frame: pd.DataFrame, coverage: float = DEFAULT_COVERAGE, min_rows: int = MIN_ROWS
) -> dict[str, list[float]]:
    """Fit multiplicative scales per ticker and step on validation predictions.

    ``frame`` has the columns ``ticker, step, actual, lo, mid, hi, vol``. Returns
    ``{ticker: [scale_step1, ..., scale_stepH]}``; a (ticker, step) with fewer than
    ``min_rows`` finite scores uses the scale pooled over every ticker for that step (1.0 when
    the step has none).
    """
    data = frame.copy()
    data["score"] = scale_scores(data["actual"], data["lo"], data["mid"], data["hi"], data["vol"])
    horizon = int(data["step"].max()) if len(data) else 0
    pooled = [1.0] * horizon
    for step, g in data.groupby("step", sort=True):
        q = conformal_quantile(g["score"], coverage)
        pooled[int(step) - 1] = 1.0 if math.isnan(q) else q
    scales: dict[str, list[float]] = {}
    for ticker, by_ticker in data.groupby("ticker", sort=True):
        values = list(pooled)
        for step, g in by_ticker.groupby("step", sort=True):
            if int(np.isfinite(g["score"]).sum()) >= int(min_rows):
                values[int(step) - 1] = conformal_quantile(g["score"], coverage)
        scales[str(ticker)] = [float(v) for v in values]
    return scales


def apply_scales(lo, mid, hi, scale, vol) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated ``(lo, hi)``: each half-width around ``mid`` multiplied by ``scale * vol``."""
    lo, mid, hi = (np.asarray(x, dtype=float) for x in (lo, mid, hi))
    f = np.maximum(np.asarray(scale, dtype=float) * np.asarray(vol, dtype=float), 0.0)
    return mid - f * (mid - lo), mid + f * (hi - mid)


TRACKING_RATE = 0.05
"""Step of the online tracker on the log scale: a miss widens by ``exp(0.05 * 0.8)`` (+4.1 %),
a hit narrows by ``exp(-0.05 * 0.2)`` (-1.0 %) at 80 % coverage."""


def track_scales(scores, start, lags, rate: float = TRACKING_RATE, coverage: float = DEFAULT_COVERAGE) -> np.ndarray:
    """Online scales for consecutive forecast origins, from the errors realised before each.

    ``scores`` (N, K): :func:`scale_scores` of N origins one session apart, in time order, for K
    series (e.g. one ticker's steps); NaN where the actual is unknown. ``start`` (K,): the
    validation scales. ``lags`` (K,): sessions until a column's actual is known (the step h).

    The scale in force at origin ``i`` is ``start * exp(rate * sum(miss_j - (1 - coverage)))``
    over the origins ``j <= i - lag`` whose actual is known, where ``miss_j`` says whether the
    actual fell outside the interval that was in force at ``j`` (score above that scale).
    Nothing realised after origin ``i`` is used. Returns (N + 1, K): the scales at the N origins
    and, last, at the session after the last origin (the next forecast's).
    """
    scores = np.asarray(scores, dtype=float)
    n, k = scores.shape
    lags = np.asarray(lags, dtype=np.int64).reshape(k)
    if np.any(lags < 1):
        raise ValueError("lags must be at least 1 session")
    log_scale = np.log(np.maximum(np.asarray(start, dtype=float).reshape(k), 1e-12))
    out = np.empty((n + 1, k))
    miss = np.zeros((n, k))
    known = np.isfinite(scores)
    cols = np.arange(k)
    target = 1.0 - float(coverage)
    for i in range(n + 1):
        j = i - lags
        ok = j >= 0
        if ok.any():
            jj, cc = j[ok], cols[ok]
            real = known[jj, cc]
            log_scale[cc[real]] += rate * (miss[jj[real], cc[real]] - target)
        out[i] = np.exp(log_scale)
        if i < n:
            miss[i] = np.where(known[i], scores[i] > out[i], 0.0)
    return out


def conformal_offsets(actual, lo, hi, coverage: float = DEFAULT_COVERAGE) -> float:
    """The split-conformal offset that makes ``[lo - q, hi + q]`` reach ``coverage``.

    ``q`` is the ``ceil((n + 1) * coverage)``-th smallest score of :func:`conformity_scores`,
    i.e. the empirical quantile at level ``ceil((n + 1) * coverage) / n`` (the finite-sample
    correction); when that level is above 1, the largest score. ``q`` is negative when the raw
    intervals are too wide. Rows with NaN are ignored; with no row the offset is 0.0.
    """
    q = conformal_quantile(conformity_scores(actual, lo, hi), coverage)
    return 0.0 if math.isnan(q) else q


def calibrate(
    frame: pd.DataFrame, coverage: float = DEFAULT_COVERAGE, min_rows: int = MIN_ROWS
) -> dict[str, list[float]]:
    """Fit conformal offsets per ticker and step on validation predictions.

    ``frame`` has the columns ``ticker, step, actual, p10, p90`` (steps numbered from 1). The
    result maps each ticker to ``[offset_step1, ..., offset_stepH]`` (plain floats, ready for
    JSON), ``H`` being the largest step in the frame. A (ticker, step) with fewer than
    ``min_rows`` usable rows gets the offset pooled over every ticker for that step (0.0 when
    that step has no usable row at all).
    """
    required = ["ticker", "step", "actual", "p10", "p90"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"calibration frame is missing columns: {', '.join(missing)}")
    if frame.empty:
        return {}
    data = frame.loc[:, required].copy()
    data["ticker"] = data["ticker"].astype(str)
    data["step"] = data["step"].astype(int)
    if data["step"].min() < 1:
        raise ValueError("steps must be numbered from 1")
    for column in ("actual", "p10", "p90"):
        data[column] = data[column].astype(float)
    usable = data[["actual", "p10", "p90"]].notna().all(axis=1)
    horizon = int(data["step"].max())

    pooled = [0.0] * horizon
    for step, group in data.groupby("step", sort=True):
        pooled[int(step) - 1] = conformal_offsets(group["actual"], group["p10"], group["p90"], coverage)

    offsets: dict[str, list[float]] = {}
    for ticker, by_ticker in data.groupby("ticker", sort=True):
        values = list(pooled)
        for step, group in by_ticker.groupby("step", sort=True):
            if int(usable.loc[group.index].sum()) >= int(min_rows):
                values[int(step) - 1] = conformal_offsets(group["actual"], group["p10"], group["p90"], coverage)
        offsets[str(ticker)] = [float(v) for v in values]
    return offsets


def apply_offsets(lo, hi, offset, mid=None) -> tuple[np.ndarray, np.ndarray]:
    """Return the calibrated interval ``(lo - offset, hi + offset)``; never an inverted one.

    ``offset`` broadcasts against ``lo`` and ``hi`` (e.g. one offset per step along the last
    axis). A negative offset narrows the interval; it is clamped so that the interval keeps
    the median inside, ``lo <= mid <= hi``, when ``mid`` (the p50 forecast) is given, and so
    that ``lo <= hi`` otherwise (both ends meet at the centre of the raw interval).
    """
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    offset = np.asarray(offset, dtype=float)
    new_lo = lo - offset
    new_hi = hi + offset
    if mid is not None:
        mid = np.asarray(mid, dtype=float)
        new_lo = np.fmin(new_lo, mid)
        new_hi = np.fmax(new_hi, mid)
    else:
        centre = (lo + hi) / 2.0
        inverted = new_lo > new_hi
        new_lo = np.where(inverted, centre, new_lo)
        new_hi = np.where(inverted, centre, new_hi)
    return new_lo, new_hi
