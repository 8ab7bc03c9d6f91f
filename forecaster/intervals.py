"""Calibrated intervals: tracked online from the validation split on, applied to forecasts.

The network forecasts p10 / p50 / p90 of each step's cumulative log return (arrays ``(B, H, 3)``
in units of the windows' target scale). The calibrated interval keeps the forecast's median and
multiplies its two half-widths by ``s * v``: ``s`` a scale per ticker and step, ``v`` a
volatility factor (1 when the targets are already in units of the local volatility; for runs
whose targets use the ticker's training volatility, the recent EWMA volatility relative to it).

- :func:`tracked_scales` walks forward through consecutive origins and adjusts ``s`` from the
  misses already realised at each one (online quantile tracking, in the spirit of adaptive
  conformal inference, Gibbs & Candès, 2021): every miss widens the interval a little, every
  hit narrows it a little less, so the long-run miss rate is pulled to the nominal 20 %
  whatever the regime, and nothing realised after an origin reaches its interval. By default
  (``intervals.step_tracking = "shared"``, :func:`track_shared_scales`) every step's scale
  moves with the one-step misses, which are known a session later, and each longer step's own
  misses correct its level slowly; ``"separate"`` tracks each step from its own misses alone
  (:func:`track_scales`).
- Training starts ``s`` at 1 at the first validation origin and tracks it through the
  validation split (the run's ``conformal`` scale: where the test split starts), then through
  the test split to the last bar (``conformal_online``, what ``predict`` uses from there on).
  ``evaluate`` tracks through the test split from ``conformal`` exactly as training did.
- :func:`forecast_scales` picks the scale a forecast uses, brought up to date by ``predict``
  through every outcome realised since the run's last bar; :func:`calibrated` applies it.
- :func:`median_weights` decides, per step, whether the median is the network's or the last
  close, and :func:`with_median` moves the interval with it.

Everything here is numpy; nothing imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .choices import StepTracking
from .config import COVERAGE, QUANTILES
from .metrics import diebold_mariano_differential
from .windows import WindowSet

LO, MID, HI = 0, QUANTILES.index(0.5), len(QUANTILES) - 1
"""Positions of the interval's ends and of the median along the quantile axis."""


# ------------------------------------------------------------------------------ on plain arrays


def scale_scores(actual, lo, mid, hi, vol) -> np.ndarray:
    """The factor by which the half-width on the actual's side, times ``vol``, must be
    stretched to reach the actual (<= 1 inside the raw interval); NaN where the actual is."""
    y, a, m, b, v = (np.asarray(x, dtype=float) for x in (actual, lo, mid, hi, vol))
    with np.errstate(divide="ignore", invalid="ignore"):
        below = (m - y) / (v * np.maximum(m - a, 1e-12))
        above = (y - m) / (v * np.maximum(b - m, 1e-12))
    return np.maximum(below, above)


def apply_scales(lo, mid, hi, scale, vol) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated ``(lo, hi)``: each half-width around ``mid`` multiplied by ``scale * vol``."""
    lo, mid, hi = (np.asarray(x, dtype=float) for x in (lo, mid, hi))
    f = np.maximum(np.asarray(scale, dtype=float) * np.asarray(vol, dtype=float), 0.0)
    return mid - f * (mid - lo), mid + f * (hi - mid)


def track_scales(
    scores, start, lags, rate: float, coverage: float = COVERAGE, given: np.ndarray | None = None
) -> np.ndarray:
    """Online scales for consecutive forecast origins, from the errors realised before each.

    ``scores`` (N, K): :func:`scale_scores` of N origins one session apart, in time order, for K
    series (e.g. one ticker's steps); NaN where the actual is unknown. ``start`` (K,): the
    validation scales. ``lags`` (K,): sessions until a column's actual is known (the step h).

    The scale in force at origin ``i`` is ``start * exp(rate * sum(miss_j - (1 - coverage)))``
    over the origins ``j <= i - lag`` whose actual is known, where ``miss_j`` says whether the
    actual fell outside the interval that was in force at ``j`` (score above that scale).
    Nothing realised after origin ``i`` is used. Returns (N + 1, K): the scales at the N origins
    and, last, at the session after the last origin (the next forecast's).

    ``given`` (P, K) resumes a tracking stopped at origin P: the scales that were in force at the
    first P origins, and ``start`` the scale at origin P, which counted every outcome known there.
    The outcomes still unknown there (origin ``j < P`` at a lag beyond ``P - j``) count when
    they are realised, against the scales given.
    """
    scores = np.asarray(scores, dtype=float)
    n, k = scores.shape
    lags = np.asarray(lags, dtype=np.int64).reshape(k)
    if np.any(lags < 1):
        raise ValueError("lags must be at least 1 session")
    p = _resumed_at(given, n, (k,))
    log_scale = np.log(np.maximum(np.asarray(start, dtype=float).reshape(k), 1e-12))
    out = np.empty((n + 1, k))
    miss = np.zeros((n, k))
    known = np.isfinite(scores)
    cols = np.arange(k)
    target = 1.0 - float(coverage)
    if p:
        out[:p] = given
        miss[:p] = np.where(known[:p], scores[:p] > out[:p], 0.0)
    for i in range(p, n + 1):
        j = i - lags
        ok = (j >= 0) & (i > p)  # at the origin resumed from, ``start`` counted the outcomes known
        if ok.any():
            jj, cc = j[ok], cols[ok]
            real = known[jj, cc]
            log_scale[cc[real]] += rate * (miss[jj[real], cc[real]] - target)
        out[i] = np.exp(log_scale)
        if i < n:
            miss[i] = np.where(known[i], scores[i] > out[i], 0.0)
    return out


def _resumed_at(given: np.ndarray | None, n: int, row: tuple[int, ...]) -> int:
    """The number of origins whose scales are ``given`` (0 for None), checked against N and the
    shape of a row."""
    if given is None:
        return 0
    shape = np.shape(given)
    if shape[1:] != row or shape[0] > n:
        raise ValueError(f"given scales of shape {shape} do not fit {n} origins of shape {row}")
    return shape[0]


def track_shared_scales(
    scores, start, rate: float, coverage: float = COVERAGE, given: np.ndarray | None = None
) -> np.ndarray:
    """Online scales of every step of T series at once, the steps sharing the one-step misses.

    ``scores`` (N, T, H): :func:`scale_scores` of N origins one session apart, in time order, of
    T series (tickers), step ``h`` in column ``h - 1``; NaN where the actual is unknown.
    ``start`` (T, H): the scales at the first origin.

    The scale of step ``h`` at origin ``i`` is ``start * exp(c + d_h)``:

    - ``c = rate * sum(miss1_j - (1 - coverage))`` over the origins ``j <= i - 1`` whose
      one-step actual is known: every step follows the one-step misses, the first to show
      that the volatility has changed (a step-h miss is known only h sessions after its origin);
    - ``d_h = rate / h * sum(missh_j - (1 - coverage))`` over ``j <= i - h`` (none for step 1):
      step h's own misses correct its level, each counting 1 / h, since consecutive h-step
      outcomes share h - 1 sessions and their misses come in runs.

    A miss is an actual outside the interval in force at its origin. Nothing realised after
    origin ``i`` is used. With H = 1 this is :func:`track_scales` with lag 1. Returns
    (N + 1, T, H): the scales at the N origins and, last, at the session after the last one.

    ``given`` (P, T, H) resumes a tracking stopped at origin P, as :func:`track_scales` does:
    the scales in force at the first P origins, ``start`` those at origin P.
    """
    scores = np.asarray(scores, dtype=float)
    n, t, steps = scores.shape
    p = _resumed_at(given, n, (t, steps))
    base = np.log(np.maximum(np.broadcast_to(np.asarray(start, dtype=float), (t, steps)), 1e-12))
    common, own = np.zeros(t), np.zeros((t, steps))
    rates = rate / np.arange(1, steps + 1)
    target = 1.0 - float(coverage)
    known = np.isfinite(scores)
    miss = np.zeros((n, t, steps))
    out = np.empty((n + 1, t, steps))
    if p:
        out[:p] = given
        miss[:p] = np.where(known[:p], scores[:p] > out[:p], 0.0)
    for i in range(p, n + 1):
        # the outcomes of origin i - h are known at i; at the origin resumed from, ``start``
        # counted those already
        for h in range(1, min(i, steps) + 1) if i > p else ():
            j = i - h
            step = np.where(known[j, :, h - 1], miss[j, :, h - 1] - target, 0.0)
            if h == 1:
                common += rate * step
            else:
                own[:, h - 1] += rates[h - 1] * step
        out[i] = np.exp(base + common[:, None] + own)
        if i < n:
            miss[i] = np.where(known[i], scores[i] > out[i], 0.0)
    return out


def with_median(q: np.ndarray, weight) -> np.ndarray:
    """The forecasts ``q`` (B, H, 3) with the median ``weight * median`` (per step, broadcast along
    H; 0 is the last close, 1 the network's) and both interval ends moved with it, so the
    interval keeps the network's half-widths around whichever median is used."""
    w = np.asarray(weight, dtype=np.float32)
    shift = (w - 1) * q[:, :, MID]  # (B, H)
    return q + shift[:, :, None]


def median_weights(q: np.ndarray, ws: WindowSet, ends: np.ndarray, alpha: float) -> list[float]:
    """Per step, 1.0 where the network's median beat the naive forecast (the last close) on the
    windows ending at ``ends`` (validation) with a one-sided Diebold–Mariano p below ``alpha``,
    else 0.0. Errors are compared in log returns, pooled over tickers: the test reads the mean
    difference of the absolute errors of each origin date over the tickers, in date order (the
    same day's errors of several tickers move together with the market, and taken as
    independent they would let a median no better than naive through far more often than
    ``alpha``). ``alpha >= 1`` keeps the network's median everywhere, ``alpha <= 0`` none."""
    if alpha >= 1 or alpha <= 0:
        return [float(alpha >= 1)] * ws.horizon
    s = ws.target_scale(ends)
    y, m = ws.realised(ends) * s, q[:, :, MID] * s
    dates = ws.dates[ends]
    weights = []
    for h in range(ws.horizon):
        ok = np.isfinite(y[:, h])
        e_model, e_naive = y[ok, h] - m[ok, h], y[ok, h]
        better = np.mean(np.abs(e_model)) < np.mean(np.abs(e_naive))
        _, day = np.unique(dates[ok], return_inverse=True)
        d = np.bincount(day, weights=np.abs(e_model) - np.abs(e_naive)) / np.bincount(day)
        _, p = diebold_mariano_differential(d, h=h + 1)
        weights.append(float(better and p < alpha))
    return weights


# ------------------------------------------------------------------- over forecasts of a WindowSet


def _scores(q: np.ndarray, ws: WindowSet, ends: np.ndarray) -> np.ndarray:
    """(B, H) scores of the forecasts ``q`` (B, H, 3) made at ``ends``; NaN where the actual is
    past the ticker's last bar, and where the price did not move at all up to it (a halted
    stock's bars): such an outcome is inside an interval of any width, so it tells nothing of
    the width; counted as a hit, each would narrow the scale by 1 %, and a halt of months
    would leave intervals that miss nearly every move for months after it."""
    vol = ws.vol[ends][:, None]
    scores = scale_scores(ws.realised(ends), q[:, :, LO], q[:, :, MID], q[:, :, HI], vol)
    return np.where(ws.unmoved(ends), np.nan, scores)


def start_scales(ws: WindowSet, ends: np.ndarray, scales: Mapping[str, list[float] | None]) -> np.ndarray:
    """(B, H) the per-ticker ``scales`` of the windows ending at ``ends`` (1.0 for a ticker that
    has none)."""
    table = np.ones((len(ws.names), ws.horizon))
    for i, s in enumerate(ws.names):
        values = scales.get(s) or []
        if len(values) == ws.horizon:
            table[i] = values
    return table[ws.ticker_id[ends]]


def walk_forward_scales(
    q_val: np.ndarray,
    val: np.ndarray,
    q_test: np.ndarray,
    test: np.ndarray,
    ws: WindowSet,
    rate: float,
    steps: StepTracking = "shared",
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[list[float]]]]:
    """Training's calibration: from 1 at the first validation origin, each ticker's scales
    tracked through the validation origins ``val`` (forecasts ``q_val``) to where the test split
    starts, then through the test origins ``test`` to the session after the last bar. Returns
    three per ticker: ``(at the test split's start, after the last bar, pending)``, pending the
    scales in force at the last H - 1 test origins (oldest first), whose longer steps end after
    the last bar: :func:`forecast_scales` counts those outcomes when they are known."""
    _, start = tracked_scales(q_val, ws, val, {}, rate, steps=steps)
    if len(test) == 0:
        return start, {}, {}
    in_force, final = tracked_scales(q_test, ws, test, start, rate, steps=steps)
    tid = ws.ticker_id[test]
    order = np.lexsort((test, tid))  # each ticker's origins together, in time order
    ids, first, counts = np.unique(tid[order], return_index=True, return_counts=True)
    pending = {}
    for i, f, c in zip(ids, first, counts):
        last = order[f + max(c - (ws.horizon - 1), 0) : f + c]
        pending[ws.names[i]] = [[float(v) for v in row] for row in in_force[last]]
    return start, final, pending


def tracked_scales(
    q: np.ndarray,
    ws: WindowSet,
    ends: np.ndarray,
    start: Mapping[str, list[float]],
    rate: float,
    coverage: float = COVERAGE,
    steps: StepTracking = "shared",
    given: Mapping[str, list[list[float]]] | None = None,
) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Walk-forward scales: each ticker's and step's scale starts at ``start`` at its first
    origin and is then tracked online from the misses already realised at each one, so no
    origin's interval uses its own future: the steps sharing the one-step misses
    (``steps="shared"``, :func:`track_shared_scales`) or each step alone (``"separate"``,
    :func:`track_scales`).

    ``ends`` must hold, per ticker, consecutive sessions in time order (``ws.origins(...)``).
    Returns the (B, H) scales of ``ends`` and, per ticker, the scales for a forecast from the
    session after its last origin (its last bar, when the origins are ``origins("test")``).

    ``given`` resumes a ticker's tracking: the scales that were in force at its first origins
    (one list of H per origin, as many as it lists), ``start`` its scales at the origin after
    them; their outcomes not yet known there count when they are realised.
    """
    H, B = ws.horizon, len(ends)
    scores = _scores(q, ws, ends)
    begin_all = start_scales(ws, ends, start)
    tid = ws.ticker_id[ends]
    # align tickers by position: row p of column block k is ticker k's p-th origin, shifted so
    # that every ticker's tracking starts (or resumes) at the same row
    order = np.lexsort((ends, tid))
    ids, first, counts = np.unique(tid[order], return_index=True, return_counts=True)
    given = given or {}
    lead = np.array([len(given.get(ws.names[i]) or ()) for i in ids], np.int64)
    if np.any(lead > counts):
        raise ValueError("more scales given for a ticker than it has origins")
    p = int(lead.max()) if B else 0
    shift = p - lead
    pos = np.empty(B, np.int64)
    pos[order] = np.arange(B) - np.repeat(first, counts) + np.repeat(shift, counts)
    col = np.searchsorted(ids, tid)
    n = int((counts + shift).max()) if B else 0
    grid = np.full((n, len(ids), H), np.nan)
    grid[pos, col] = scores
    begin = begin_all[order[first]]  # (K, H): each ticker's scales where its tracking starts
    fixed = np.ones((p, len(ids), H))  # rows before a ticker's own have no outcome: never counted
    for k, i in enumerate(ids):
        if lead[k]:
            fixed[shift[k] :, k] = np.asarray(given[ws.names[i]], dtype=float).reshape(lead[k], H)
    if steps == "shared":
        tracked = track_shared_scales(grid, begin, rate, coverage, given=fixed if p else None)
    elif steps == "separate":
        lags = np.tile(np.arange(1, H + 1), len(ids))
        tracked = track_scales(
            grid.reshape(n, -1), begin.ravel(), lags, rate, coverage, given=fixed.reshape(p, -1) if p else None
        ).reshape(n + 1, len(ids), H)
    else:
        raise ValueError(f"steps must be 'shared' or 'separate', not {steps!r}")
    final = {ws.names[i]: [float(v) for v in tracked[c + d, k]] for k, (i, c, d) in enumerate(zip(ids, counts, shift))}
    return tracked[pos, col], final


def forecast_scales(
    tickers: Mapping,
    ws: WindowSet,
    ends: np.ndarray,
    forecast: Callable[[np.ndarray], np.ndarray],
    rate: float,
    steps: StepTracking = "shared",
) -> tuple[np.ndarray, dict[str, int]]:
    """(B, H) scales for forecasts from the last row of each ticker (``ends``), and per ticker the
    number of sessions since the run's last bar that brought its scale up to date.

    ``tickers`` maps a name to its run entry (``conformal``, ``conformal_online``,
    ``conformal_pending``, ``last_date``). An origin after the ticker's last bar of training
    resumes the tracking the run stopped at that bar, as ``evaluate`` tracks on through it: from
    the scale there (``conformal_online``), with the outcomes known by now of every origin since
    and of the run's last H - 1 test origins, judged against the scales that were in force at
    them (``conformal_pending``; runs made without them miss those few). ``forecast(origins)``
    gives the network's (B, H, 3) forecasts for those origins. A run trained months ago still
    issues calibrated intervals. An origin inside the run's own data uses the scale at the start
    of its test split (``conformal``): nothing realised after it may reach it."""
    scale = start_scales(ws, ends, {s: t.conformal for s, t in tickers.items()})
    origin_days = ws.dates[ends].astype("datetime64[D]")
    catch_up, online, given, since = [], {}, {}, []
    for b, e in enumerate(ends):
        sym = ws.names[ws.ticker_id[e]]
        t = tickers.get(sym)
        if t is None or t.conformal_online is None or len(t.conformal_online) != ws.horizon:
            continue
        if origin_days[b] < np.datetime64(t.last_date):
            continue
        scale[b] = online[sym] = t.conformal_online
        first = ws.offsets[np.searchsorted(ws.offsets, e, side="right") - 1]
        rows = np.arange(first, e)
        rows = rows[ws.dates[rows].astype("datetime64[D]") >= np.datetime64(t.last_date)]
        pending = t.conformal_pending or []
        at_last = len(rows) and ws.dates[rows[0]].astype("datetime64[D]") == np.datetime64(t.last_date)
        if pending and at_last and rows[0] - len(pending) >= first + ws.lookback - 1:
            given[sym] = pending  # the rows before the run's last bar: its last test origins
            rows = np.concatenate([np.arange(rows[0] - len(pending), rows[0]), rows])
        catch_up.append(rows)
        since.append(rows[len(given.get(sym, ())) :])
    origins = np.concatenate(catch_up) if catch_up else np.empty(0, np.int64)
    counted = np.concatenate(since) if since else np.empty(0, np.int64)
    if len(counted) == 0:
        return scale, {}
    _, final = tracked_scales(forecast(origins), ws, origins, online, rate, steps=steps, given=given)
    for b, e in enumerate(ends):
        sym = ws.names[ws.ticker_id[e]]
        if sym in final:
            scale[b] = final[sym]
    counts = np.bincount(ws.ticker_id[counted], minlength=len(ws.names))
    return scale, {ws.names[i]: int(n) for i, n in enumerate(counts) if n}


def calibrated(
    q: np.ndarray, ws: WindowSet, ends: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated (lo, median, hi) cumulative log returns, each (B, H), of the forecasts ``q``
    made at ``ends``, with the (B, H) conformal ``scale``."""
    med = q[:, :, MID]
    lo, hi = apply_scales(q[:, :, LO], med, q[:, :, HI], scale, ws.vol[ends][:, None])
    s = ws.target_scale(ends)  # (B, H) back to log returns
    return lo * s, med * s, hi * s
