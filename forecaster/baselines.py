"""Baseline forecasts reported next to every model (SPEC §8), vectorised over origins.

All functions take one ticker's closes in chronological order, ``close`` (positive prices),
the forecast origins ``origins`` (integer indices into ``close``: the last bar observed by each
forecast) and the horizon ``horizon``. They return price forecasts of shape
``(len(origins), horizon)``, column ``j`` being step ``h = j + 1``. Each forecast only uses
``close[: o + 1]``, so they are safe for walk-forward evaluation.

The probabilistic baselines ``hist``, ``ewma`` and ``garch`` take the same arguments and return
quantiles of the price, shape ``(len(origins), horizon, 3)`` for the levels 0.1, 0.5 and 0.9.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from .config import QUANTILES

__all__ = [
    "naive",
    "drift",
    "mean",
    "naive_scale",
    "BASELINES",
    "DEFAULT_MEAN_WINDOW",
    "hist",
    "ewma",
    "garch",
    "garch_volatility",
    "fit_garch",
    "garch_filter",
    "GarchParams",
    "PROBABILISTIC_BASELINES",
]

log = logging.getLogger("forecaster")

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
    # the close itself, not exp(log close): a median that is the last close must equal it to
    # the bit, or a DM test between the two reads rounding noise as a difference
    _, origins, _ = _prepare(close, origins, horizon)
    return _with_median(close, origins, int(horizon))[:, :, 1]


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
    return _compounded(close, origins, last, steps, slope)


def _compounded(close, origins: np.ndarray, last: np.ndarray, steps: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """``close[o] * exp(h * rate)`` as ``exp(log close[o] + h * rate)``, the close itself where the
    rate is 0: ``exp(log 10)`` is 10.000000000000002, and a price that never moved would get
    an error of a rounding's size, not 0, against naive's exact one."""
    out = np.exp(last[:, None] + steps[None, :] * rate[:, None])
    still = rate == 0
    out[still] = np.asarray(close, dtype=float)[origins[still]][:, None]
    return out


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
    return _compounded(close, origins, log_close[origins], steps, mean_return)


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


# --------------------------------------------------------------------------------------------
# probabilistic baselines (SPEC §8): quantiles of the price at each step
#
# Each returns prices of shape ``(len(origins), horizon, len(QUANTILES))``; the median is
# the last close (none of them forecasts a direction), the outer levels come from a model of
# the spread of the log return from the origin to the step. Each origin uses ``close[: o + 1]``.

HIST_WINDOW = 500
"""Sessions whose h-step log returns make the empirical distribution of :func:`hist` (SPEC §8)."""

HIST_MIN_RETURNS = 50
"""Fewer h-step returns than this give no :func:`hist` bounds (NaN): the tails would be noise."""

EWMA_LAMBDA = 0.94
"""RiskMetrics decay of the EWMA variance for daily returns (J.P. Morgan, 1996)."""

EWMA_TAIL = 1e-12
"""EWMA weights below this fraction of the newest one are dropped (exact to float precision)."""

EWMA_MIN_RETURNS = 20
"""Fewer daily returns than this give no :func:`ewma` bounds (NaN): too few to weigh."""

GARCH_REFIT_EVERY = 250
"""Origins served by one GARCH fit: an arch fit costs 40-80 ms of CPU, so one fit per ticker for
the usual 250-session test period (refitting every 20 origins takes 13 fits, ten times longer)."""

GARCH_MAX_WINDOW = 2000
"""At most this many daily returns (about eight years) are used for one GARCH fit: enough for
a stable tail and persistence estimate, recent enough to leave old regimes out."""

GARCH_MIN_RETURNS = 250
"""Fewer daily returns than this before an origin: no GARCH fit, the EWMA variance is used."""

GARCH_BACKCAST = 75
"""Returns weighed (by 0.94**i) into the variance that starts the recursion, as arch does."""

_PERSISTENCE_SLACK = 1e-6  # optimiser tolerance on arch's constraint alpha + gamma / 2 + beta <= 1
_PCT = 100.0  # arch is fitted on returns in percent (its advice for a well-scaled optimisation)


@dataclass(frozen=True)
class GarchParams:
    """GJR-GARCH(1,1) of daily log returns in percent, zero mean, Student-t errors (arch's names).

    ``sigma2[t+1] = omega + (alpha + gamma * [eps[t] < 0]) * eps[t]**2 + beta * sigma2[t]``,
    ``eps[t] = sigma[t] * z[t]`` with ``z`` Student-t with ``nu`` degrees of freedom, unit variance.
    """

    omega: float
    alpha: float
    gamma: float
    beta: float
    nu: float

    @property
    def persistence(self) -> float:
        """``alpha + gamma / 2 + beta``: the decay of a variance shock (errors are symmetric)."""
        return self.alpha + 0.5 * self.gamma + self.beta

    def bounded(self) -> GarchParams:
        """These parameters within arch's constraints, ``alpha >= 0``, ``alpha + gamma >= 0``,
        ``beta >= 0``, which its optimiser meets only to a tolerance: a fit of ``alpha = 0`` and
        ``gamma = -6e-7`` times the squared return of a crash (a 19-fold fall, -294 %) is a
        negative variance, and a NaN bound at the origin after it."""
        alpha = max(self.alpha, 0.0)
        gamma = max(self.gamma, -alpha)
        beta = max(self.beta, 0.0)
        if (alpha, gamma, beta) == (self.alpha, self.gamma, self.beta):
            return self
        return GarchParams(self.omega, alpha, gamma, beta, self.nu)


def _with_median(close, origins: np.ndarray, horizon: int) -> np.ndarray:
    """(n, horizon, 3) array: NaN bounds, the last close as the median (bit for bit naive's)."""
    out = np.full((origins.shape[0], horizon, len(QUANTILES)), np.nan)
    out[:, :, 1] = np.asarray(close, dtype=float)[origins][:, None]
    return out


def _set_bounds(out: np.ndarray, last: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Put ``exp(last + lower)`` and ``exp(last + upper)`` (log offsets from the last close,
    ``lower <= 0 <= upper``) as the bounds of ``out`` around its median, the last close, on the
    right side of it to the bit: ``exp(log close + 0)`` is not always the close (``exp(log 10)``
    is 10.000000000000002), so a spread of 0, a price that never moved, would put p10 above the
    close and miss every actual by a rounding error. An offset of 0 gives the close itself, and
    a bound that rounding puts across the median is the median. A NaN bound stays NaN."""
    median = out[:, :, 1]
    for k, offset in ((0, lower), (2, upper)):
        bound = np.exp(last + offset)
        bound = np.where(offset == 0, median, bound)
        out[:, :, k] = np.minimum(bound, median) if k == 0 else np.maximum(bound, median)
    return out


def _scaled_quantiles(close, log_close, origins, horizon, variance, z_lo, z_hi) -> np.ndarray:
    """Prices ``close[o] * exp(z * sqrt(variance))``; ``variance`` (n, horizon) of the log return."""
    out = _with_median(close, origins, horizon)
    sd = np.sqrt(variance)
    last = log_close[origins][:, None]
    lower = np.asarray(z_lo, dtype=float).reshape(-1, 1) * sd
    upper = np.asarray(z_hi, dtype=float).reshape(-1, 1) * sd
    return _set_bounds(out, last, lower, upper)


def _window_quantiles(values: np.ndarray, ends: np.ndarray, window: int, levels) -> np.ndarray:
    """Quantiles (numpy's linear method) of ``values[max(0, e - window + 1) : e + 1]`` per end ``e``,
    leaving out NaN; of each column of ``values`` when it has two dimensions.

    Returns ``(len(levels), len(ends))``, or ``(len(levels), len(ends), columns)``; NaN where
    fewer than :data:`HIST_MIN_RETURNS` values are there (``e < 0`` means none). The rows from
    the first window's start to the last end go through pandas' rolling quantile once per level:
    a sorted window updated one value in, one out, where sorting every window took about twice
    as long (250 windows of 500). Its interpolation is numpy's linear one,
    ``low + (position - below) * (high - low)``, with the same order statistics, so the
    quantiles are the same to the last bit; a NaN is not put in the window, so a column that
    starts later (NaN before) gives what its values alone would.
    """
    values = np.asarray(values, dtype=float)
    columns = values if values.ndim > 1 else values[:, None]
    ends = np.asarray(ends)
    out = np.full((len(levels), ends.shape[0], columns.shape[1]), np.nan)
    some = np.clip(ends + 1, 0, window) >= HIST_MIN_RETURNS  # rows in the window (NaN or not)
    if some.any():
        lo, hi = int(ends[some].min()), int(ends[some].max())
        first = max(0, lo - window + 1)
        rolling = pd.DataFrame(columns[first : hi + 1]).rolling(window, min_periods=HIST_MIN_RETURNS)
        rows = ends[some] - first
        for k, q in enumerate(levels):
            out[k, some] = rolling.quantile(q).to_numpy()[rows]
    return out if values.ndim > 1 else out[..., 0]


def hist(close, origins, horizon: int, window: int = HIST_WINDOW) -> np.ndarray:
    """Historical simulation: empirical quantiles of the h-step log returns, ``close[o] * exp(q)``.

    For step ``h`` and origin ``o`` the sample is the overlapping h-step log returns
    ``log close[t] - log close[t - h]`` ending at the last ``window`` sessions up to the origin
    (``t = o - window + 1 .. o``, ``t >= h``); its 10 % and 90 % quantiles (linear
    interpolation) give the outer levels, clipped so that they never cross the median (the last
    close). Bounds are NaN when fewer than :data:`HIST_MIN_RETURNS` returns are there. The
    steps are the columns of one table of returns by the session they end at (NaN before the
    first), whose windows end at the origins: one rolling pass per level for every step.
    """
    log_close, origins, _ = _prepare(close, origins, horizon)
    horizon, window = int(horizon), int(window)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out = _with_median(close, origins, horizon)
    returns = np.full((log_close.shape[0], horizon), np.nan)  # [t, h - 1]: the h-step return ending at t
    for h in range(1, horizon + 1):
        returns[h:, h - 1] = log_close[h:] - log_close[:-h]
    q = _window_quantiles(returns, origins, window, (QUANTILES[0], QUANTILES[-1]))  # (2, origins, steps)
    last = log_close[origins][:, None]
    return _set_bounds(out, last, np.minimum(q[0], 0.0), np.maximum(q[1], 0.0))


def _ewma_variance(log_close: np.ndarray, origins: np.ndarray, lam: float = EWMA_LAMBDA) -> np.ndarray:
    """EWMA variance of the daily log return after each origin (NaN with too short a history).

    ``sum_k lam**k r[o - k]**2 / sum_k lam**k`` over the returns up to the origin: the
    RiskMetrics recursion ``s[t] = lam s[t-1] + (1 - lam) r[t]**2`` with its weights
    normalised, so that a short history is not biased towards zero. Weights below
    :data:`EWMA_TAIL` are dropped, which makes it a sliding dot product over the origins.
    """
    if not 0.0 < lam < 1.0:
        raise ValueError(f"lambda must be in (0, 1), got {lam}")
    lags = int(math.ceil(math.log(EWMA_TAIL) / math.log(lam)))
    squared = np.diff(log_close) ** 2  # squared[t - 1] is r[t]**2
    padded = np.concatenate((np.zeros(lags), squared))
    weights = lam ** np.arange(lags)[::-1]  # oldest first, newest (weight 1) last
    # row o holds r[o - lags + 1] .. r[o] (zeros before the first return)
    windows = np.lib.stride_tricks.sliding_window_view(padded, lags)[origins]
    count = np.minimum(origins, lags)
    total = (1.0 - lam**count) / (1.0 - lam)  # the weights of the returns that exist
    # each row's products added up on their own: a matrix product adds them in an order that
    # may depend on the number of rows, so an origin's last bit changed with the origins asked
    # for (bars appended after it gave it another variance, to the 16th digit)
    weighted = (windows * weights).sum(axis=1)
    variance = weighted / np.where(count > 0, total, 1.0)
    variance[origins < EWMA_MIN_RETURNS] = np.nan
    return variance


def ewma(close, origins, horizon: int, lam: float = EWMA_LAMBDA) -> np.ndarray:
    """RiskMetrics: zero mean, EWMA variance of daily log returns, normal quantiles, sqrt(h) scaling.

    The log return to step ``h`` is ``N(0, h * s_o)`` with ``s_o`` the EWMA variance at the
    origin (decay ``lam``, see :func:`_ewma_variance`). Bounds are NaN when fewer than
    :data:`EWMA_MIN_RETURNS` returns are there.
    """
    log_close, origins, steps = _prepare(close, origins, horizon)
    variance = _ewma_variance(log_close, origins, float(lam))[:, None] * steps[None, :]
    z = NormalDist().inv_cdf(QUANTILES[-1])
    return _scaled_quantiles(close, log_close, origins, int(horizon), variance, -z, z)


def fit_garch(returns_pct, start: GarchParams | None = None) -> GarchParams | None:
    """Fit :class:`GarchParams` with arch to daily log returns in percent; None if the fit fails.

    ``start`` (the previous fit, say) seeds the optimiser. A fit that raises, does not
    converge, or gives non-finite or non-stationary parameters is a failure.
    """
    from .plots import import_matplotlib

    import_matplotlib()  # arch imports it, and it refuses an MPLBACKEND it does not know
    from arch.univariate import arch_model  # arch pulls in statsmodels: seconds to import

    returns_pct = np.asarray(returns_pct, dtype=float)
    model = arch_model(returns_pct, mean="Zero", vol="GARCH", p=1, o=1, q=1, dist="t", rescale=False)
    starting = None if start is None else [start.omega, start.alpha, start.gamma, start.beta, start.nu]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-convergence is read from the result below
            res = model.fit(disp="off", show_warning=False, starting_values=starting)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        log.debug("GARCH fit raised %s", exc)
        return None
    values = np.asarray(res.params, dtype=float)
    if res.convergence_flag != 0 or values.shape != (5,) or not np.all(np.isfinite(values)):
        log.debug("GARCH fit did not converge: %s", res.optimization_result.message)
        return None
    params = GarchParams(*(float(v) for v in values)).bounded()
    # arch keeps persistence <= 1; an integrated fit (= 1) still forecasts, growing linearly
    if params.omega < 0 or params.persistence > 1.0 + _PERSISTENCE_SLACK or params.nu <= 2.0:
        log.debug("GARCH fit out of bounds: %s", params)
        return None
    return params


def fit_garch_each(samples: list[np.ndarray]) -> list[GarchParams | None]:
    """:func:`fit_garch` of each sample of returns (a block of tickers for one process)."""
    return [fit_garch(returns) for returns in samples]


def garch_filter(returns_pct, params: GarchParams, known: int | None = None) -> np.ndarray:
    """Conditional variances (percent squared) of the GJR-GARCH recursion over ``returns_pct``.

    Returns ``n + 1`` values: ``out[t]`` is the variance of return ``t`` given the returns
    before it, and ``out[n]`` the one-step forecast after the last one. The recursion starts
    from arch's backcast, the 0.94**i-weighted mean of the first :data:`GARCH_BACKCAST` squared
    returns, so inside the estimation sample it matches arch's ``conditional_volatility``.
    ``known`` (at least 1) limits the backcast to the first ``known`` returns: those known at
    the first forecast read from the path, which must not depend on the returns after it.
    """
    eps = np.asarray(returns_pct, dtype=float).reshape(-1)
    if eps.size == 0:
        raise ValueError("no returns to filter")
    tau = min(GARCH_BACKCAST, eps.size, eps.size if known is None else max(int(known), 1))
    w = EWMA_LAMBDA ** np.arange(tau)  # arch weighs its backcast with the RiskMetrics decay too
    backcast = float(np.sum(eps[:tau] ** 2 * w) / w.sum())
    omega, alpha, gamma, beta = params.omega, params.alpha, params.gamma, params.beta
    down = alpha + gamma  # the weight of a negative return
    s = omega + (alpha + 0.5 * gamma + beta) * backcast
    # a recursion in plain floats, into a list: ~0.3 us a step (0.36 writing into an array)
    out = []
    keep = out.append
    for e in eps.tolist():
        keep(s)
        s = omega + (down if e < 0 else alpha) * e * e + beta * s
    keep(s)
    return np.array(out)


def _garch_state(
    log_close: np.ndarray,
    origins: np.ndarray,
    refit_every: int,
    max_window: int,
    fixed: GarchParams | None,
    where: Callable[[int], str] | None = None,
) -> tuple[np.ndarray, list[GarchParams | None]]:
    """One-step variance (percent squared) after each origin, and the parameters behind it.

    Origins are served in blocks of ``refit_every`` sessions from the earliest one. A block is
    fitted on at most ``max_window`` returns ending at its first origin; the recursion is then
    run with those parameters from the start of the estimation sample through the block, so an
    origin's variance uses only returns up to it. A failed fit reuses the previous block's
    parameters, or the EWMA variance (parameters None) when there are none; so does a block
    with fewer than :data:`GARCH_MIN_RETURNS` returns. With ``fixed`` parameters nothing is
    fitted: all origins are one block filtered with them. ``where(o)`` names origin ``o`` in
    the warnings (by default ``origin o``, its index).
    """
    where = where or (lambda o: f"origin {o}")
    refit_every, max_window = int(refit_every), int(max_window)
    if refit_every < 1 or max_window < 2:
        raise ValueError(f"refit_every must be >= 1 and max_window >= 2, got {refit_every}, {max_window}")
    if fixed is not None:
        refit_every = log_close.shape[0]
        fixed = fixed.bounded()
    returns = _PCT * np.diff(log_close)  # returns[t - 1] is the return ending at session t
    variance = np.full(origins.shape[0], np.nan)
    params: list[GarchParams | None] = [None] * origins.shape[0]
    order = np.argsort(origins, kind="stable")
    order = order[origins[order] > 0]  # no return up to the first bar: no variance (NaN), as EWMA's
    previous: GarchParams | None = None
    i = 0
    while i < order.size:
        first = int(origins[order[i]])
        j = int(np.searchsorted(origins[order], first + refit_every, side="left"))
        block = order[i:j]
        start = max(0, first - max_window)  # the fit uses returns[start:first] (sessions start+1 .. first)
        fitted = fixed
        if fitted is None and first >= GARCH_MIN_RETURNS:
            fitted = fit_garch(returns[start:first], previous)
            if fitted is None:
                fallback = "the previous fit" if previous is not None else "EWMA"
                log.warning("GARCH fit at %s failed; using %s", where(first), fallback)
                fitted = previous
        elif fitted is None:
            log.warning(
                "GARCH: %d returns before %s are too few for a fit (it needs %d); using EWMA",
                first,
                where(first),
                GARCH_MIN_RETURNS,
            )
        if fitted is None:
            variance[block] = _PCT**2 * _ewma_variance(log_close, origins[block])
        else:
            last = int(origins[block].max())
            # path[k]: the variance of returns[start + k]; its backcast reads the returns up to the
            # block's first origin only: with parameters given, an origin among the first 75
            # returns would otherwise see the returns after it
            path = garch_filter(returns[start:last], fitted, known=first - start)
            variance[block] = path[origins[block] - start]
            for k in block:
                params[k] = fitted
            previous = fitted
        i = j
    return variance, params


def garch_volatility(
    close,
    origins,
    refit_every: int = GARCH_REFIT_EVERY,
    max_window: int = GARCH_MAX_WINDOW,
    params: GarchParams | None = None,
    where: Callable[[int], str] | None = None,
) -> np.ndarray:
    """GJR-GARCH one-step conditional volatility of the daily log return after each origin.

    A causal input: the value at origin ``o`` (a fraction, not percent) is the forecast of the
    next return's standard deviation from ``close[: o + 1]`` only (see :func:`garch`, also for
    ``params``). NaN where the EWMA fallback has too little history.
    """
    log_close, origins, _ = _prepare(close, origins, 1)
    variance, _ = _garch_state(log_close, origins, refit_every, max_window, params, where)
    return np.sqrt(variance) / _PCT


def garch(
    close,
    origins,
    horizon: int,
    refit_every: int = GARCH_REFIT_EVERY,
    max_window: int = GARCH_MAX_WINDOW,
    params: GarchParams | None = None,
    where: Callable[[int], str] | None = None,
) -> np.ndarray:
    """GJR-GARCH(1,1), Student-t errors, zero mean, fitted with arch on returns in percent.

    The log return to step ``h`` has variance ``V_h = v_1 + ... + v_h``: ``v_1`` the one-step
    conditional variance at the origin, ``v_k = omega + persistence * v_{k-1}`` the analytic
    per-step forecasts (as arch's ``forecast``). Its quantiles are Student-t quantiles with
    the fitted ``nu``, scaled to unit variance, times ``sqrt(V_h)``. Parameters are refitted
    every ``refit_every`` origins on at most ``max_window`` returns up to the block's first
    origin (see :func:`_garch_state`); where no fit is possible the bounds are the EWMA ones.

    ``params``, fitted beforehand by :func:`fit_garch` on returns up to the earliest origin
    (say when the test split is cut), skip the fits, the expensive part: every origin is then
    filtered with them. ``where(o)`` names origin ``o`` (an index into ``close``) in the
    warnings, e.g. by its ticker and date.
    """
    log_close, origins, _ = _prepare(close, origins, horizon)
    horizon = int(horizon)
    one_step, used = _garch_state(log_close, origins, refit_every, max_window, params, where)
    n = origins.shape[0]
    omega, persistence = np.zeros(n), np.ones(n)  # the EWMA fallback: v_k = v_1, normal quantiles
    z_hi = np.full(n, NormalDist().inv_cdf(QUANTILES[-1]))
    for p in set(used) - {None}:
        rows = [k for k, q in enumerate(used) if q == p]
        omega[rows], persistence[rows] = p.omega, p.persistence
        z_hi[rows] = unit_t_quantile(QUANTILES[-1], p.nu)
    per_step = np.empty((n, horizon))
    per_step[:, 0] = one_step
    for k in range(1, horizon):
        per_step[:, k] = omega + persistence * per_step[:, k - 1]
    variance = np.cumsum(per_step, axis=1) / _PCT**2
    return _scaled_quantiles(close, log_close, origins, horizon, variance, -z_hi, z_hi)


def unit_t_quantile(level: float, nu: float) -> float:
    """The ``level`` quantile of Student's t with ``nu`` > 2 degrees of freedom scaled to unit
    variance: arch's ``StudentsT().ppf`` to the last bit, without building a scipy
    distribution object (a millisecond each, once per ticker in a backtest)."""
    from scipy.special import stdtrit  # scipy.special: a tenth of a second to import

    return float(stdtrit(nu, level)) * (1.0 / math.sqrt(nu / (nu - 2.0)))


PROBABILISTIC_BASELINES = {"hist": hist, "ewma": ewma, "garch": garch}
"""The probabilistic baselines by the names used in ``metrics.csv``."""
