"""Forecast accuracy metrics (SPEC §8).

Every metric takes 1-D array-likes of equal length and ignores the rows in which any of its
inputs is NaN. A metric with no usable row returns NaN. Percentages (``mape``, ``smape``) are
in percent. Everything here is plain numpy and ``math``: the Student-t distribution needed by
the Diebold–Mariano test is computed from the regularized incomplete beta function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .config import COVERAGE, QUANTILES

__all__ = [
    "METRIC_COLUMNS",
    "BASELINE_MODELS",
    "PROBABILISTIC_MODELS",
    "mae",
    "rmse",
    "mape",
    "smape",
    "mase",
    "directional_accuracy",
    "skill",
    "diebold_mariano",
    "diebold_mariano_differential",
    "chi2_sf",
    "kupiec_pvalue",
    "christoffersen_pvalue",
    "conditional_coverage_pvalue",
    "student_t_cdf",
    "student_t_sf",
    "coverage",
    "width",
    "pinball",
    "pinball_rows",
    "lag_share",
    "metrics_table",
]

METRIC_COLUMNS: tuple[str, ...] = (
    "ticker",
    "model",
    "step",
    "n",
    "mae",
    "rmse",
    "mape",
    "smape",
    "mase",
    "directional_accuracy",
    "skill",
    "dm_pvalue",
    "coverage",
    "width",
    "pinball",
    "kupiec_pvalue",
    "christoffersen_pvalue",
    "dm_pinball_pvalue",
    "best_vol",
    "pinball_ratio",
)
"""The columns of ``metrics.csv``, in order (new ones are only ever appended)."""

BASELINE_MODELS: tuple[str, ...] = ("naive", "drift", "mean")
"""Baseline forecasts reported next to every model, in report order."""

PROBABILISTIC_MODELS: tuple[str, ...] = ("hist", "ewma", "garch")
"""Probabilistic baselines, reported after :data:`BASELINE_MODELS` when the predictions carry
their quantiles as ``<name>_p10``, ``<name>_p50``, ``<name>_p90``."""

QUANTILE_SUFFIXES: tuple[str, ...] = ("p10", "p50", "p90")
"""The quantile columns of a forecast, for the levels in :data:`forecaster.config.QUANTILES`."""

PINBALL_FLOOR = 1e-12
"""A mean pinball loss at most this fraction of the mean actual price is read as 0: rounding
noise (a bound of ``exp(log 10) = 10.000000000000002`` around a close of 10), not a loss that a
ratio can be taken to. A real spread, even one tick of a cent on a $10,000 price, is 1e-6 of it."""

INTERVAL_MISS_RATE = round(1.0 - COVERAGE, 12)  # 0.2, not 1 - (0.9 - 0.1) = 0.19999999999999996
"""Nominal miss rate of the p10-p90 interval, tested by ``kupiec_pvalue``."""

POOLED = "ALL"
"""The ``ticker`` value of the rows that pool every ticker."""


# --------------------------------------------------------------------------------------------
# helpers


def _arrays(*values) -> list[np.ndarray]:
    """Convert to 1-D float arrays of one length and drop the rows where any of them is NaN."""
    arrays = [np.asarray(v, dtype=float).reshape(-1) for v in values]
    length = arrays[0].shape[0]
    for a in arrays[1:]:
        if a.shape[0] != length:
            raise ValueError(f"arrays differ in length: {[x.shape[0] for x in arrays]}")
    keep = np.ones(length, dtype=bool)
    for a in arrays:
        keep &= ~np.isnan(a)
    return [a[keep] for a in arrays]


def _mean(x: np.ndarray) -> float:
    """``np.mean`` of a non-empty array, to the last bit (the same pairwise sum over the count),
    without its Python-level overhead: the metrics rows of a backtest take tens of thousands."""
    return float(x.sum() / x.size)


# --------------------------------------------------------------------------------------------
# point-forecast errors


def mae(actual, forecast) -> float:
    """Mean absolute error: mean(|actual - forecast|)."""
    y, f = _arrays(actual, forecast)
    return _mean(np.abs(y - f)) if y.size else float("nan")


def rmse(actual, forecast) -> float:
    """Root mean squared error: sqrt(mean((actual - forecast)^2))."""
    y, f = _arrays(actual, forecast)
    return math.sqrt(_mean((y - f) ** 2)) if y.size else float("nan")


def mape(actual, forecast) -> float:
    """Mean absolute percentage error, in percent: 100 * mean(|actual - forecast| / |actual|).

    Rows with ``actual == 0`` (where the ratio is undefined) are ignored as well.
    """
    y, f = _arrays(actual, forecast)
    return _mape(np.abs(y - f), y)


def _mape(abs_err: np.ndarray, y: np.ndarray) -> float:
    """:func:`mape` from the absolute errors of rows without NaN."""
    nonzero = y != 0
    if nonzero.all():
        return 100.0 * _mean(abs_err / np.abs(y)) if y.size else float("nan")
    return 100.0 * _mean(abs_err[nonzero] / np.abs(y[nonzero])) if nonzero.any() else float("nan")


def smape(actual, forecast) -> float:
    """Symmetric MAPE, in percent (0..200): 100 * mean(2|a - f| / (|a| + |f|)).

    A row with ``actual == forecast == 0`` counts as a perfect forecast (0).
    """
    y, f = _arrays(actual, forecast)
    return _smape(np.abs(y - f), y, f)


def _smape(abs_err: np.ndarray, y: np.ndarray, f: np.ndarray) -> float:
    """:func:`smape` from the absolute errors of rows without NaN."""
    if y.size == 0:
        return float("nan")
    den = np.abs(y) + np.abs(f)
    ratio = np.divide(2.0 * abs_err, den, out=np.zeros_like(abs_err), where=den > 0)
    return 100.0 * _mean(ratio)


def mase(actual, forecast, scale: float) -> float:
    """Mean absolute scaled error: MAE / ``scale``.

    ``scale`` is the one-step naive MAE on the training split (``baselines.naive_scale``). NaN
    when the scale is not a positive finite number.
    """
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        return float("nan")
    return mae(actual, forecast) / scale


def directional_accuracy(actual, forecast, last) -> float:
    """Share of rows where the forecast moves the same way as the actual price from ``last``.

    A row counts as a hit when sign(forecast - last) == sign(actual - last). Rows where the
    actual equals ``last`` (no direction to call) are left out; a forecast equal to ``last``
    calls no direction and is a miss. NaN when no row is left, or when the forecast calls no
    direction on any row (it is the last close throughout: the metric does not apply).
    """
    return _directional(*_arrays(actual, forecast, last))


def _directional(y: np.ndarray, f: np.ndarray, base: np.ndarray) -> float:
    """:func:`directional_accuracy` of rows without NaN."""
    moved = y != base
    if not np.any(moved) or not np.any(moved & (f != base)):
        return float("nan")
    return _mean(np.sign(f[moved] - base[moved]) == np.sign(y[moved] - base[moved]))


def skill(mae_model: float, mae_naive: float) -> float:
    """Skill score vs the naive forecast: 1 - mae_model / mae_naive.

    Positive: the model beats naive; 0: as good; negative: worse. NaN when ``mae_naive`` is 0
    or either input is NaN.
    """
    mae_model, mae_naive = float(mae_model), float(mae_naive)
    if math.isnan(mae_model) or math.isnan(mae_naive) or mae_naive == 0:
        return float("nan")
    return 1.0 - mae_model / mae_naive


# --------------------------------------------------------------------------------------------
# Student-t distribution (math only)

_BETA_EPS = 1e-15
_BETA_TINY = 1e-300
_BETA_MAX_ITER = 100_000


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _BETA_TINY:
        d = _BETA_TINY
    d = 1.0 / d
    h = d
    for m in range(1, _BETA_MAX_ITER + 1):
        m2 = 2 * m
        # even step
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        if abs(d) < _BETA_TINY:
            d = _BETA_TINY
        c = 1.0 + aa / c
        if abs(c) < _BETA_TINY:
            c = _BETA_TINY
        d = 1.0 / d
        h *= d * c
        # odd step
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        if abs(d) < _BETA_TINY:
            d = _BETA_TINY
        c = 1.0 + aa / c
        if abs(c) < _BETA_TINY:
            c = _BETA_TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _BETA_EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_sf(x: float, dof: float) -> float:
    """Upper tail P(T > x) of Student's t distribution with ``dof`` degrees of freedom.

    Uses P(T > |x|) = I_{dof / (dof + x^2)}(dof / 2, 1 / 2) / 2, accurate to about 1e-12.
    """
    x, dof = float(x), float(dof)
    if math.isnan(x) or math.isnan(dof) or dof <= 0:
        return float("nan")
    if math.isinf(x):
        return 0.0 if x > 0 else 1.0
    if x == 0.0:
        return 0.5
    t2 = x * x
    # 1 - z computed without cancellation: t^2 / (dof + t^2)
    z = dof / (dof + t2)
    if z < 0.5:
        tail = 0.5 * _betainc(0.5 * dof, 0.5, z)
    else:
        tail = 0.5 * (1.0 - _betainc(0.5, 0.5 * dof, t2 / (dof + t2)))
    return tail if x > 0 else 1.0 - tail


def student_t_cdf(x: float, dof: float) -> float:
    """Lower tail P(T <= x) of Student's t distribution with ``dof`` degrees of freedom."""
    x, dof = float(x), float(dof)
    if math.isnan(x) or math.isnan(dof) or dof <= 0:
        return float("nan")
    return student_t_sf(-x, dof)


# --------------------------------------------------------------------------------------------
# Diebold–Mariano test


def _autocovariance(centred: np.ndarray, lag: int) -> float:
    """Sample autocovariance at ``lag`` with the 1/n normalisation of a series whose mean is
    already subtracted: numpy's sum of the products, as :func:`_dm_statistics` takes it for
    many series at once (a dot product may round differently)."""
    n = centred.shape[0]
    if lag == 0:
        return float((centred * centred).sum() / n)
    return float((centred[lag:] * centred[:-lag]).sum() / n)


def diebold_mariano(e_model, e_bench, h: int = 1, power: float = 1) -> tuple[float, float]:
    """One-sided Diebold–Mariano test that the model is MORE accurate than the benchmark.

    H0: equal expected loss. H1: the model's expected loss is smaller. A small p-value means
    the model beats the benchmark; a p-value near 1 means the benchmark is the better one.

    The loss differential is ``d_t = |e_model_t|^power - |e_bench_t|^power`` (negative when
    the model does better), rows with a NaN in either error dropped; the test on it is
    :func:`diebold_mariano_differential`. Returns ``(statistic, pvalue)``.
    """
    h = _check_horizon(h)
    power = float(power)
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power}")
    em, eb = _arrays(e_model, e_bench)
    return _diebold_mariano(np.abs(em) ** power - np.abs(eb) ** power, h)


def diebold_mariano_differential(d, h: int = 1) -> tuple[float, float]:
    """One-sided Diebold–Mariano test on a loss differential ``d_t = loss_model_t - loss_bench_t``.

    Any loss works (absolute or squared error, the per-row pinball loss of two quantile
    forecasts); NaN rows are dropped. H1: the model's expected loss is smaller, so a small
    p-value means the model beats the benchmark.

    - long-run variance ``V = g_0 + 2 * sum_{k=1}^{h-1} g_k`` (rectangular kernel, sample
      autocovariances ``g_k`` with the 1/n normalisation, the usual choice for h-step
      forecasts); when that is not positive, the Bartlett / Newey–West weights ``1 - k/h`` are
      used instead;
    - ``DM = mean(d) / sqrt(V / n)``, multiplied by the Harvey–Leybourne–Newbold small-sample
      factor ``sqrt((n + 1 - 2h + h(h - 1)/n) / n)``;
    - p-value ``P(T <= DM*)`` with ``T`` Student-t with ``n - 1`` degrees of freedom.

    Returns ``(statistic, pvalue)`` where ``statistic`` is the corrected DM*. Both are NaN
    when fewer than 3 rows remain, the differential has zero variance, or there are no more rows
    than ``h``: the factor, ``(n - h)(n - h + 1) / n^2``, is 0 at ``n = h - 1`` and ``n = h``
    and positive again below them, where ``n`` forecasts that all overlap (three 5-step ones
    share three sessions) would give a p-value of 0.001 to three close differences.
    """
    h = _check_horizon(h)
    (d,) = _arrays(d)
    return _diebold_mariano(d, h)


def _check_horizon(h) -> int:
    h = int(h)
    if h < 1:
        raise ValueError(f"h must be >= 1, got {h}")
    return h


def _added(terms):
    """``terms`` (numbers, or arrays added element by element) added one by one from 0, left to
    right, each sum rounded: the one order both Diebold-Mariano paths share. Not ``sum()``: from
    Python 3.12 it compensates a sum of floats (Neumaier), so its last bit differs from that of
    plain addition, and from one Python to another."""
    total = 0
    for term in terms:
        total = total + term
    return total


def _diebold_mariano(d: np.ndarray, h: int) -> tuple[float, float]:
    """The test of :func:`diebold_mariano_differential` on a differential without NaN."""
    nan = (float("nan"), float("nan"))
    n = d.shape[0]
    if n < 3 or n <= h:
        return nan
    if not np.all(np.isfinite(d)) or np.all(d == d[0]):
        return nan
    max_lag = min(h - 1, n - 1)
    centred = d - _mean(d)
    gammas = [_autocovariance(centred, k) for k in range(max_lag + 1)]
    if gammas[0] <= 0:
        return nan
    variance = gammas[0] + 2.0 * _added(gammas[1:])
    if not variance > 0:
        variance = gammas[0] + 2.0 * _added((1.0 - k / h) * gammas[k] for k in range(1, max_lag + 1))
    if not variance > 0:
        return nan
    factor = (n + 1 - 2 * h + h * (h - 1) / n) / n
    if not factor > 0:
        return nan
    statistic = float(_mean(d) / math.sqrt(variance / n) * math.sqrt(factor))
    return statistic, student_t_cdf(statistic, n - 1)


def _dm_statistics(d: np.ndarray, h: int) -> np.ndarray:
    """The statistic of :func:`_diebold_mariano` for each row of ``d`` (differentials of one
    length and step ``h``, without NaN), NaN where that test has none: the same arithmetic in the
    same order, row by row, so the same values to the last bit (numpy sums each row of a 2-D
    array as it sums a 1-D one)."""
    m, n = d.shape
    out = np.full(m, np.nan)
    factor = (n + 1 - 2 * h + h * (h - 1) / n) / n if n >= 3 and n > h else 0.0
    if not factor > 0:
        return out
    ok = np.isfinite(d).all(axis=1) & ~(d == d[:, :1]).all(axis=1)
    d = d[ok]
    mean = d.sum(axis=1) / n
    centred = d - mean[:, None]
    max_lag = min(h - 1, n - 1)
    gammas = [(centred * centred).sum(axis=1) / n]
    gammas += [(centred[:, k:] * centred[:, :-k]).sum(axis=1) / n for k in range(1, max_lag + 1)]
    variance = gammas[0] + 2.0 * _added(gammas[1:])  # each row's sums as _diebold_mariano's, term by term
    if not np.all(variance > 0):
        weighted = _added((1.0 - k / h) * gammas[k] for k in range(1, max_lag + 1))
        variance = np.where(variance > 0, variance, gammas[0] + 2.0 * weighted)
    with np.errstate(invalid="ignore", divide="ignore"):
        statistic = mean / np.sqrt(variance / n) * math.sqrt(factor)
    out[ok] = np.where((gammas[0] > 0) & (variance > 0), statistic, np.nan)
    return out


# --------------------------------------------------------------------------------------------
# interval tests: are the misses of an interval as frequent as nominal, and independent?


def chi2_sf(x: float, dof: int) -> float:
    """Upper tail P(X > x) of a chi-square with 1 or 2 degrees of freedom (closed forms).

    One degree: ``erfc(sqrt(x / 2))`` (X is a squared standard normal); two: ``exp(-x / 2)``.
    """
    x = float(x)
    if math.isnan(x):
        return float("nan")
    if x <= 0:
        return 1.0
    if dof == 1:
        return math.erfc(math.sqrt(x / 2.0))
    if dof == 2:
        return math.exp(-x / 2.0)
    raise ValueError(f"only 1 or 2 degrees of freedom have a closed form here, got {dof}")


def _xlogy(k: float, p: float) -> float:
    """``k * log(p)`` with the convention ``0 * log(0) = 0`` of the likelihoods below."""
    return 0.0 if k == 0 else k * math.log(p)


def _misses(misses, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Misses as a bool array without its NaN rows, and the group label of each kept row."""
    values = np.asarray(misses, dtype=float).reshape(-1)
    labels = np.zeros(values.shape[0]) if groups is None else np.asarray(groups).reshape(-1)
    if labels.shape[0] != values.shape[0]:
        raise ValueError(f"misses and groups differ in length: {values.shape[0]}, {labels.shape[0]}")
    keep = ~np.isnan(values)
    return values[keep] != 0, labels[keep]


def _kupiec_lr(hits: np.ndarray, rate: float) -> float:
    return _kupiec_lr_counts(hits.shape[0], int(hits.sum()), rate)


def _kupiec_lr_counts(n: int, x: int, rate: float) -> float:
    """Kupiec's likelihood ratio of ``x`` misses in ``n`` rows (``n > 0``)."""
    observed = x / n
    null = _xlogy(n - x, 1.0 - rate) + _xlogy(x, rate)
    alternative = _xlogy(n - x, 1.0 - observed) + _xlogy(x, observed)
    return max(0.0, -2.0 * (null - alternative))


def kupiec_pvalue(misses, rate: float) -> float:
    """Kupiec's (1995) unconditional-coverage test: do misses occur at the nominal rate?

    ``misses`` flags the rows where the actual fell outside the interval (NaN rows are
    ignored); ``rate`` is the nominal miss rate (0.2 for a 10-90 % interval). With ``x``
    misses in ``n`` rows and ``r = x / n``, the likelihood ratio
    ``LR = -2 [(n - x) log(1 - rate) + x log(rate) - (n - x) log(1 - r) - x log(r)]``
    (``0 log 0 = 0``, so no miss or only misses are fine) is chi-square with 1 degree of
    freedom under H0. A small p-value: the interval is miscalibrated. NaN without a row.
    """
    rate = float(rate)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    hits, _ = _misses(misses)
    if hits.shape[0] == 0:
        return float("nan")
    return chi2_sf(_kupiec_lr(hits, rate), 1)


def _christoffersen_lr(hits: np.ndarray, labels: np.ndarray) -> float:
    same = labels[1:] == labels[:-1]  # transitions only inside a group
    before, after = hits[:-1][same], hits[1:][same]
    n01 = int(np.sum(~before & after))
    n00 = int(np.sum(~before & ~after))
    n11 = int(np.sum(before & after))
    n10 = int(np.sum(before & ~after))
    return _christoffersen_lr_counts(n00, n01, n10, n11)


def _christoffersen_lr_counts(n00: int, n01: int, n10: int, n11: int) -> float:
    """Christoffersen's likelihood ratio from the counts of transitions ``n_ij`` from state
    ``i`` to ``j`` (1: a miss); NaN without any."""
    total = n00 + n01 + n10 + n11
    if total == 0:
        return float("nan")
    pi = (n01 + n11) / total
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    null = _xlogy(n00 + n10, 1.0 - pi) + _xlogy(n01 + n11, pi)
    markov = _xlogy(n00, 1.0 - pi01) + _xlogy(n01, pi01) + _xlogy(n10, 1.0 - pi11) + _xlogy(n11, pi11)
    return max(0.0, -2.0 * (null - markov))


def christoffersen_pvalue(misses, groups=None) -> float:
    """Christoffersen's (1998) independence test: is a miss as likely after a miss as after a hit?

    The misses (NaN rows ignored) are a first-order Markov chain with ``n_ij`` transitions
    from state ``i`` to ``j`` (1 = miss); ``pi01 = n01 / (n00 + n01)``, ``pi11 = n11 / (n10 +
    n11)`` and ``pi`` the miss rate over all transitions. The likelihood ratio of the i.i.d.
    model (``pi``) against the chain (``pi01``, ``pi11``) is chi-square with 1 degree of
    freedom under H0. A small p-value: misses cluster (or alternate). With ``groups`` (one
    label per row, rows of a group in time order) transitions are counted only inside a
    group, so pooled tickers are not chained. 1.0 when no miss or only misses (nothing to
    tell apart), NaN without any transition.
    """
    hits, labels = _misses(misses, groups)
    if hits.shape[0] < 2:
        return float("nan")
    return chi2_sf(_christoffersen_lr(hits, labels), 1)


def conditional_coverage_pvalue(misses, rate: float, groups=None) -> float:
    """Christoffersen's conditional-coverage test: the Kupiec and independence ratios summed.

    ``LR_cc = LR_uc + LR_ind`` is chi-square with 2 degrees of freedom under H0 (misses
    i.i.d. at the nominal ``rate``). NaN without any transition.
    """
    rate = float(rate)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    hits, labels = _misses(misses, groups)
    if hits.shape[0] < 2:
        return float("nan")
    return chi2_sf(_kupiec_lr(hits, rate) + _christoffersen_lr(hits, labels), 2)


# --------------------------------------------------------------------------------------------
# intervals and quantiles


def coverage(actual, lo, hi) -> float:
    """Share of rows with ``lo <= actual <= hi``."""
    y, a, b = _arrays(actual, lo, hi)
    if y.size == 0:
        return float("nan")
    return float(np.mean((a <= y) & (y <= b)))


def width(lo, hi) -> float:
    """Mean interval width: mean(hi - lo)."""
    a, b = _arrays(lo, hi)
    if a.size == 0:
        return float("nan")
    return float(np.mean(b - a))


def pinball_rows(actual, quantiles: Mapping[float, Sequence[float] | np.ndarray]) -> np.ndarray:
    """Pinball (quantile) loss of each row, averaged over the quantile levels.

    ``quantiles`` maps a level ``q`` in (0, 1) to that quantile's forecasts. The loss of a
    level is ``max(q * (y - f), (q - 1) * (y - f))``. NaN on the rows where the actual or any
    quantile is NaN. The per-row losses of two forecasts make the differential that
    :func:`diebold_mariano_differential` tests.
    """
    levels = [float(q) for q in quantiles]
    if not levels:
        raise ValueError("no quantile level given")
    for q in levels:
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantile level must be in (0, 1), got {q}")
    y = np.asarray(actual, dtype=float).reshape(-1)
    total = np.zeros_like(y)
    for q, f in zip(levels, quantiles.values(), strict=True):
        f = np.asarray(f, dtype=float).reshape(-1)
        if f.shape != y.shape:
            raise ValueError(f"arrays differ in length: {y.shape[0]}, {f.shape[0]}")
        diff = y - f
        total += np.maximum(q * diff, (q - 1.0) * diff)
    return total / len(levels)


def pinball(actual, quantiles: Mapping[float, Sequence[float] | np.ndarray]) -> float:
    """Mean pinball (quantile) loss, averaged over the quantile levels (see :func:`pinball_rows`).

    Rows where the actual or any quantile is NaN are ignored; NaN without a usable row.
    """
    if not quantiles:
        return float("nan")
    return _mean_known(pinball_rows(actual, quantiles))


def _mean_known(losses: np.ndarray) -> float:
    """The mean of the rows that are not NaN; NaN without one."""
    known = losses[~np.isnan(losses)]
    return _mean(known) if known.size else float("nan")


def lag_share(forecast_change, last_change) -> tuple[float, float]:
    """How much of the forecast is a copy of the last observed move.

    Regresses (ordinary least squares with an intercept) the forecast change
    ``p50 - last_close`` on the previous observed change ``last_close - previous_close`` and
    returns ``(slope, r2)``. A model that just extrapolates the last move shows a slope near 1
    and an R² near 1. NaN when fewer than 2 rows remain or the last change does not vary; R²
    is NaN when the forecast change does not vary.
    """
    y, x = _arrays(forecast_change, last_change)
    nan = float("nan")
    if y.size < 2:
        return nan, nan
    xc = x - x.mean()
    yc = y - y.mean()
    sxx = float(np.dot(xc, xc))
    syy = float(np.dot(yc, yc))
    if sxx <= 0:
        return nan, nan
    sxy = float(np.dot(xc, yc))
    slope = sxy / sxx
    r2 = nan if syy <= 0 else min(1.0, sxy * sxy / (sxx * syy))
    return slope, r2


# --------------------------------------------------------------------------------------------
# the metrics.csv table

_PRED_COLUMNS = ("ticker", "origin", "step", "actual", "last_close", "p10", "p50", "p90")


def _quantile_columns(model: str, model_name: str) -> tuple[str, ...] | None:
    """The p10, p50, p90 columns of a model's forecast, None for a point forecast."""
    if model == model_name:
        return QUANTILE_SUFFIXES
    if model in PROBABILISTIC_MODELS:
        return tuple(f"{model}_{suffix}" for suffix in QUANTILE_SUFFIXES)
    return None


class _Groups:
    """Rows cut into groups (one table row per group and model): each group's rows together,
    in time order, from ``start``; ``of`` is each row's group, ``step`` each group's step.
    Every metric of the table is computed for all groups at once, with the definitions of
    the functions above (a backtest of a thousand tickers has tens of thousands of groups)."""

    def __init__(self, start: np.ndarray, rows: int, step: np.ndarray):
        self.start, self.n, self.step = start, len(start), step
        self.size = np.diff(np.append(start, rows))
        self.of = np.repeat(np.arange(self.n), self.size)

    def count(self, rows: np.ndarray) -> np.ndarray:
        """Rows per group where ``rows`` is True."""
        if self.n == 0:
            return np.zeros(0, dtype=np.int64)
        return np.add.reduceat(rows, self.start, dtype=np.int64)

    def sum(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Per group: the sum of ``x`` over the rows where ``rows`` is True, to the last bit the
        ``sum()`` of that group's rows (the groups of each size summed as the rows of one 2-D
        array: numpy sums each row as it sums a 1-D array)."""
        if rows.all():
            n, start = self.size, self.start
        else:
            x, n = x[rows], self.count(rows)
            start = np.cumsum(n) - n
        out = np.zeros(self.n)
        for size in np.unique(n[n > 0]):
            which = np.flatnonzero(n == size)
            if size < 1024:
                out[which] = x[start[which, None] + np.arange(size)].sum(axis=1)
            else:  # a few large groups (the pooled rows): no index array
                out[which] = [x[a : a + size].sum() for a in start[which]]
        return out

    def mean(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Per group: the mean of ``x`` over the rows where ``rows`` is True; NaN without one."""
        return _ratio(self.sum(x, rows), self.count(rows))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, NaN where ``den`` is 0."""
    return np.divide(num, den, out=np.full(len(num), np.nan), where=den > 0)


def _point_columns(g: _Groups, cols: Mapping[str, np.ndarray], fc: np.ndarray, directional: bool) -> dict:
    """Per group: ``n``, :func:`mae`, :func:`rmse`, :func:`mape`, :func:`smape`, the MASE (NaN
    when the ticker has no usable scale) and, with ``directional``,
    :func:`directional_accuracy`, of the rows where the actual and the forecast are known."""
    y = cols["actual"]
    valid = ~(np.isnan(y) | np.isnan(fc))
    with np.errstate(invalid="ignore", divide="ignore"):
        err = y - fc
        abs_err = np.abs(err)
        den = np.abs(y) + np.abs(fc)
        ratio = np.divide(2.0 * abs_err, den, out=np.zeros_like(abs_err), where=den > 0)
        nonzero = valid & (y != 0)
        relative = np.divide(abs_err, np.abs(y), out=np.zeros_like(abs_err), where=nonzero)
        scaled = abs_err / cols["mase_scale"]
    out = {
        "n": g.count(valid),
        "mae": g.mean(abs_err, valid),
        "rmse": np.sqrt(g.mean(err * err, valid)),
        "mape": 100.0 * g.mean(relative, nonzero),
        "smape": 100.0 * g.mean(ratio, valid),
        "mase": g.mean(scaled, valid),
    }
    if directional:
        last = cols["last_close"]
        moved = valid & ~np.isnan(last) & (y != last)
        same = np.sign(fc - last) == np.sign(y - last)
        called = g.count(moved & (fc != last))  # none: the last close throughout, no direction to score
        out["directional_accuracy"] = np.where(called > 0, _ratio(g.count(moved & same), g.count(moved)), np.nan)
    return out


def _dm_pvalues(g: _Groups, d: np.ndarray, rows: np.ndarray, origin: np.ndarray | None = None) -> np.ndarray:
    """Per group: the p-value of :func:`diebold_mariano_differential` on the differential ``d``
    of the rows where ``rows`` is True (in order), with ``h`` the group's step. With ``origin``
    (each row's origin, as codes in time order: the pooled rows), on the mean of ``d`` over the
    rows of each origin instead, in origin order (:func:`_origin_means`)."""
    if origin is None:
        d, n = d[rows], g.count(rows)
    else:
        d, n = _origin_means(g, d, rows, origin)
    start = np.cumsum(n) - n
    out = np.full(g.n, np.nan)
    for size, step in {(int(a), int(b)) for a, b in zip(n[n >= 3], g.step[n >= 3], strict=True)}:
        which = np.flatnonzero((n == size) & (g.step == step))  # the groups of one length and step, at once
        statistics = _dm_statistics(d[start[which, None] + np.arange(size)], step)
        out[which] = [student_t_cdf(x, size - 1) for x in statistics.tolist()]
    return out


def _origin_means(g: _Groups, d: np.ndarray, rows: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the mean of ``d`` over its rows (where ``rows`` is True) of each origin, in
    origin order, all groups' one after the other; and how many origins each group has.

    Same-day forecasts of several tickers are not independent: a model's view of the market
    moves all of them, and the market moves their actuals. Tested as one series of every
    ticker's rows, the differentials of one day lie far apart, where the h - 1 lags do not reach
    them, and a model exactly as good as naive whose forecasts share a market component was
    found significantly better in 13-30 % of simulated samples at 0.05 (10 to 30 tickers). The
    mean of each day leaves one series whose dependence is that of overlapping h-step forecasts."""
    of, at, x = g.of[rows], origin[rows].astype(np.int64), d[rows]
    span = int(at.max(initial=0)) + 1
    keys, index = np.unique(of.astype(np.int64) * span + at, return_inverse=True)
    means = np.bincount(index, weights=x, minlength=len(keys)) / np.bincount(index, minlength=len(keys))
    return means, np.bincount(keys // span, minlength=g.n)


def _interval_columns(g: _Groups, cols: Mapping[str, np.ndarray], lo, mid, hi) -> tuple[dict, np.ndarray]:
    """Per group: :func:`coverage`, :func:`width`, :func:`pinball`, :func:`kupiec_pvalue` and,
    on step 1, :func:`christoffersen_pvalue` (misses chained within a ticker only) of a p10,
    p50, p90 forecast; and the per-row pinball losses."""
    y = cols["actual"]
    bounds = ~(np.isnan(lo) | np.isnan(hi))
    known = bounds & ~np.isnan(y)
    losses = pinball_rows(y, dict(zip(QUANTILES, (lo, mid, hi), strict=True)))
    with np.errstate(invalid="ignore"):
        inside = known & (lo <= y) & (y <= hi)
        spread = hi - lo
    n = g.count(known)
    # h-step forecasts from consecutive origins share h - 1 days, so their misses come in runs and
    # a test that takes them as independent rejects a right interval far too often: Kupiec's test
    # reads every h-th origin of each ticker, whose forecasts do not overlap
    apart = known & (_position_in_ticker(g, cols["ticker_code"]) % g.step[g.of] == 0)
    tested, misses = g.count(apart), g.count(apart & ~inside)
    kupiec = [
        chi2_sf(_kupiec_lr_counts(int(k), int(x), INTERVAL_MISS_RATE), 1) if k else np.nan
        for k, x in zip(tested, misses, strict=True)
    ]
    out = {
        "coverage": _ratio(g.count(inside).astype(float), n),
        "width": g.mean(spread, bounds),
        "pinball": g.mean(losses, ~np.isnan(losses)),
        "kupiec_pvalue": np.array(kupiec, dtype=float),
        "christoffersen_pvalue": _christoffersen_column(g, cols["ticker_code"], known, ~inside, n),
    }
    return out, losses


def _position_in_ticker(g: _Groups, ticker: np.ndarray) -> np.ndarray:
    """Each row's place (0, 1, ...) among its ticker's rows of its group, in origin order."""
    rows = np.arange(len(g.of))
    first = np.ones(len(g.of), dtype=bool)
    first[1:] = (g.of[1:] != g.of[:-1]) | (ticker[1:] != ticker[:-1])
    return rows - np.maximum.accumulate(np.where(first, rows, 0))


def _christoffersen_column(g: _Groups, ticker: np.ndarray, known: np.ndarray, missed: np.ndarray, n) -> np.ndarray:
    """Per step-1 group with two known rows or more: :func:`christoffersen_pvalue` of its
    misses, transitions counted between consecutive known rows of one ticker."""
    out = np.full(g.n, np.nan)
    of, hits, tick = g.of[known], missed[known], ticker[known]
    same = (of[1:] == of[:-1]) & (tick[1:] == tick[:-1])
    before, after, where = hits[:-1][same], hits[1:][same], of[1:][same]
    n00, n01, n10, n11 = (np.bincount(where[b & a], minlength=g.n) for b in (~before, before) for a in (~after, after))
    for i in np.flatnonzero((g.step == 1) & (n >= 2)):
        lr = _christoffersen_lr_counts(int(n00[i]), int(n01[i]), int(n10[i]), int(n11[i]))
        out[i] = chi2_sf(lr, 1)
    return out


def _dm_pinball_columns(
    g: _Groups, y: np.ndarray, losses: dict[str, np.ndarray], model_name: str, origin: np.ndarray | None = None
) -> dict:
    """Per group, against the probabilistic baseline with the lowest mean pinball loss on the
    rows where every forecast is known (the first such baseline on a tie), on those rows: the
    DM p-value of the model's pinball loss, that baseline's name and the ratio of the model's
    mean pinball loss to its. A baseline without a forecast in the group (too little history
    for it at every origin) is left out. NaN (and no name) without a baseline or such a row."""
    baselines = [m for m in losses if m != model_name]
    if not baselines:
        return {"dm_pinball_pvalue": np.full(g.n, np.nan), "best_vol": np.full(g.n, np.nan, dtype=object)}
    common = ~np.isnan(y) & ~np.isnan(losses[model_name])
    for m in baselines:
        known = ~np.isnan(losses[m])
        common &= known | (g.count(known) == 0)[g.of]
    means = np.vstack([g.mean(losses[m], common) for m in baselines])
    best = np.argmin(np.where(np.isnan(means), np.inf, means), axis=0)
    stacked = np.vstack([losses[m] for m in baselines])
    d = losses[model_name] - stacked[best[g.of], np.arange(len(g.of))]
    best_mean = means[best, np.arange(g.n)]
    scored = ~np.isnan(best_mean)
    # a baseline that hit every actual (a price that never moved) has a loss of 0, or of a
    # rounding error: a ratio to that is no figure (3e10 for a flat ticker), so it is left empty
    level = g.mean(np.abs(y), common)
    perfect = scored & (best_mean <= PINBALL_FLOOR * np.where(np.isnan(level), 0.0, level))
    return {
        # no test against a baseline with no loss either: the ratio, baseline and test go together
        "dm_pinball_pvalue": np.where(perfect, np.nan, _dm_pvalues(g, d, common, origin)),
        "best_vol": np.where(scored, np.asarray(baselines, dtype=object)[best], np.nan),
        "pinball_ratio": _ratio(g.mean(losses[model_name], common), np.where(scored & ~perfect, best_mean, np.nan)),
    }


def _table_part(g: _Groups, cols: Mapping[str, np.ndarray], labels, models: list[str], model_name: str) -> pd.DataFrame:
    """The metrics rows of every group (``labels``: each group's ticker) and model."""
    y = cols["actual"]
    naive_err = y - cols["naive"]
    naive_known = ~np.isnan(naive_err)
    naive_mae = g.mean(np.abs(naive_err), naive_known)
    parts, losses = [], {}
    for model in models:
        columns = _quantile_columns(model, model_name)
        fc = cols[model] if columns is None else cols[columns[1]]
        point = model != "naive" and model not in PROBABILISTIC_MODELS  # those forecast the last close
        part = {"ticker": labels, "model": np.repeat(model, g.n), "step": g.step}
        part |= _point_columns(g, cols, fc, directional=point)
        if point:  # against naive: skill, and the DM test of the absolute errors
            part["skill"] = 1.0 - _ratio(part["mae"], np.where(naive_mae == 0, 0.0, naive_mae))
            with np.errstate(invalid="ignore"):
                d, rows = np.abs(y - fc) - np.abs(naive_err), naive_known & ~np.isnan(fc)
                part["dm_pvalue"] = _dm_pvalues(g, d, rows, cols.get("origin_code"))
        if columns is not None:
            interval, losses[model] = _interval_columns(g, cols, *(cols[c] for c in columns))
            part |= interval
        parts.append(part)
    parts[0] |= _dm_pinball_columns(g, y, losses, model_name, cols.get("origin_code"))
    frame = pd.concat([pd.DataFrame(p) for p in parts], ignore_index=True)
    return frame.reindex(columns=list(METRIC_COLUMNS))


def _probabilistic_models(pred: pd.DataFrame) -> list[str]:
    """The probabilistic baselines whose three quantile columns the predictions carry."""
    present = []
    for model in PROBABILISTIC_MODELS:
        columns = [f"{model}_{suffix}" for suffix in QUANTILE_SUFFIXES]
        found = [c in pred.columns for c in columns]
        if any(found) and not all(found):
            raise ValueError(f"predictions carry only some of {', '.join(columns)}")
        if all(found):
            present.append(model)
    return present


def metrics_table(
    pred: pd.DataFrame,
    model_name: str,
    mase_scale: Mapping[str, float],
    *,
    per_ticker: bool = True,
    pooled: bool = True,
    baselines: tuple[str, ...] = BASELINE_MODELS,
) -> pd.DataFrame:
    """Build the ``metrics.csv`` table (SPEC §8) from walk-forward predictions.

    ``pred`` has one row per (ticker, origin, step) with the columns ``ticker, origin, step,
    actual, last_close, p10, p50, p90, naive, drift, mean`` (``date`` may be there too), and
    may carry the quantiles of the probabilistic baselines, ``hist_p10, hist_p50, hist_p90``
    and likewise ``ewma_*``, ``garch_*``. The result has one row per (ticker, model, step) for
    the run's model (point forecast ``p50``), the ``naive``, ``drift`` and ``mean`` baselines and
    each probabilistic baseline present, plus rows with ticker ``ALL`` that pool every ticker,
    and exactly the columns of :data:`METRIC_COLUMNS`.

    - ``mase`` divides each row's absolute error by its own ticker's ``mase_scale`` (the
      training split's one-step naive MAE) and averages, so the pooled value is comparable
      across tickers; a ticker without a usable scale makes MASE NaN.
    - ``skill`` and ``dm_pvalue`` compare with ``naive`` (NaN on the naive rows); the
      Diebold–Mariano test uses ``h = step`` and errors in origin order; on the pooled rows, the
      mean difference of each origin over the tickers, in origin order (same-day forecasts of
      several tickers are not independent). A small ``dm_pvalue`` means the model beats naive.
    - ``directional_accuracy`` is NaN on the naive rows (naive never calls a direction).
    - The probabilistic baselines' median is the last close: their point metrics are naive's
      (and, like naive's, ``directional_accuracy``, ``skill`` and ``dm_pvalue`` are NaN).
    - ``coverage``, ``width`` and ``pinball`` (over levels 0.1, 0.5, 0.9) are for the rows of
      forecasts with quantiles: the model and the probabilistic baselines; so are
      ``kupiec_pvalue`` (do the p10-p90 misses occur 20 % of the time? at step h on every h-th
      origin of each ticker, the first one included, whose forecasts do not overlap) and
      ``christoffersen_pvalue`` (are one-step misses independent? step 1 only; pooled rows
      chain misses within each ticker only).
    - ``dm_pinball_pvalue``, on the model's rows only: the one-sided DM test (``h = step``) of
      the model's per-row pinball loss against the probabilistic baseline with the lowest mean
      pinball loss on the same rows (the rows where every forecast is known; pooled, as for
      ``dm_pvalue``, the mean difference of each origin). A small value
      means the model's quantiles beat it; NaN when the predictions carry no probabilistic
      baseline. ``best_vol`` names that baseline and ``pinball_ratio`` is the model's mean
      pinball loss over its, on those rows (empty when no row has every forecast, and when
      that baseline's loss is 0 or below :data:`PINBALL_FLOOR` times the mean actual price: a
      baseline that hit every actual, as on a price that never moved).

    Rows are sorted by :func:`sort_metrics`. A metric that does not apply is NaN (empty in the
    CSV). ``per_ticker=False`` leaves out the rows of each ticker, ``pooled=False`` the ``ALL``
    rows: the two parts of a table computed apart, put together by :func:`sort_metrics`.
    ``baselines`` (some of :data:`BASELINE_MODELS`, ``naive`` among them) limits the point
    baselines to those, whose columns alone ``pred`` then needs: live scoring has only the
    last close.
    """
    if "naive" not in baselines or set(baselines) - set(BASELINE_MODELS):
        raise ValueError(f"baselines must be some of {', '.join(BASELINE_MODELS)}, naive among them, not {baselines!r}")
    baselines = tuple(b for b in BASELINE_MODELS if b in baselines)  # in the table's order
    missing = [c for c in (*_PRED_COLUMNS, *baselines) if c not in pred.columns]
    if missing:
        raise ValueError(f"predictions are missing columns: {', '.join(missing)}")
    model_name = str(model_name)
    if model_name in BASELINE_MODELS or model_name in PROBABILISTIC_MODELS:
        raise ValueError(f"model name {model_name!r} clashes with a baseline name")
    probabilistic = _probabilistic_models(pred)
    models = [model_name, *baselines, *probabilistic]
    extra = [f"{m}_{suffix}" for m in probabilistic for suffix in QUANTILE_SUFFIXES]
    # every column once as an array, in (ticker, step, origin) order for the ticker rows and
    # (step, ticker, origin) for the pooled ones: a group is then a slice of them. Sorting the
    # codes of the sorted distinct tickers and origins (a stable sort) gives the order a sort of
    # the frame by those columns gives, for a fraction of its cost on a large universe.
    tcodes, tnames = pd.factorize(pred["ticker"].astype(str), sort=True)
    ocodes, _ = pd.factorize(pred["origin"], sort=True)
    ocodes = np.where(ocodes < 0, ocodes.max(initial=0) + 1, ocodes)  # a missing origin sorts last
    steps = pred["step"].to_numpy().astype(int)
    labels = np.asarray(tnames, dtype=object)
    scales = np.array([float(mase_scale.get(t, float("nan"))) for t in tnames], dtype=float)
    scales[~(np.isfinite(scales) & (scales > 0))] = np.nan
    values = {
        c: pred[c].to_numpy(dtype=float)
        for c in [*_PRED_COLUMNS, *baselines, *extra]
        if c not in ("ticker", "origin", "step")
    }

    def part(order: np.ndarray, keys: list[np.ndarray]) -> pd.DataFrame:
        cols = {c: v[order] for c, v in values.items()}
        cols["ticker_code"] = tcodes[order]
        cols["mase_scale"] = scales[tcodes[order]]
        if len(keys) == 1:  # the pooled rows: their tests read the mean of each origin
            cols["origin_code"] = ocodes[order]
        keys = [k[order] for k in keys]
        change = np.zeros(len(order), dtype=bool)
        change[:1] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
        starts = np.flatnonzero(change)
        g = _Groups(starts, len(order), steps[order][starts])
        group_labels = labels[tcodes[order][starts]] if len(keys) > 1 else np.repeat(POOLED, len(starts))
        return _table_part(g, cols, group_labels.astype(object), models, model_name)

    parts = []
    if per_ticker:
        parts.append(part(np.lexsort((ocodes, steps, tcodes)), [tcodes, steps]))
    if pooled:
        parts.append(part(np.lexsort((ocodes, tcodes, steps)), [steps]))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(METRIC_COLUMNS))
    if table.empty:
        table = pd.DataFrame({c: pd.Series(dtype=float) for c in METRIC_COLUMNS})
        table["ticker"] = table["ticker"].astype(str)
        table["model"] = table["model"].astype(str)
    table["step"] = table["step"].astype(int)
    table["n"] = table["n"].astype(int)
    return sort_metrics(table, model_name)


def sort_metrics(table: pd.DataFrame, model_name: str) -> pd.DataFrame:
    """``metrics.csv``'s order: by ticker (the pooled ``ALL`` rows last), model (the run's model,
    then naive, drift, mean, hist, ewma, garch) and step."""
    rank = {m: i for i, m in enumerate([str(model_name), *BASELINE_MODELS, *PROBABILISTIC_MODELS])}
    keys = pd.DataFrame(
        {
            "pooled": (table["ticker"] == POOLED).to_numpy(),
            "ticker": table["ticker"].to_numpy(),
            "model": table["model"].map(rank).to_numpy(),
            "step": table["step"].to_numpy(),
        }
    )
    order = keys.sort_values(["pooled", "ticker", "model", "step"], kind="mergesort").index
    return table.iloc[order].reset_index(drop=True)
