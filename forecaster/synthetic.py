"""Seeded synthetic daily OHLCV bars on an exchange calendar (NYSE by default).

The shipped sample under ``data/sample/`` and the test and benchmark universes are made here.
The bars are synthetic, not real prices, but they have the features a forecasting model meets
in real daily equity data, plus a small, known amount of predictability to find.

Model, one path per ticker, ``t`` counting sessions of the calendar (weekends and holidays
are skipped, so a bar exists exactly on each session)::

    r[t]      = mu + ar * (r[t-1] - mu) + eps[t]                 log return of the close
    eps[t]    = sigma[t] * z[t]
    sigma2[t] = omega + alpha * eps[t-1]**2 + beta * sigma2[t-1]  GARCH(1,1)
    z[t]      ~ Student-t(t_dof) scaled to unit variance          (Gaussian when t_dof is None)

    close[t]  = close[t-1] * exp(r[t])
    open[t]   = close[t-1] * exp(gap_scale * sigma[t] * g[t])                 g ~ N(0, 1)
    high[t]   = max(open[t], close[t]) * exp(range_scale * sigma[t] * |u[t]|)  u ~ N(0, 1)
    low[t]    = min(open[t], close[t]) * exp(-range_scale * sigma[t] * |d[t]|) d ~ N(0, 1)

    v[t]      = volume_ar * v[t-1]
                + volume_beta * (|r[t] - mu| / s - E|z|) + volume_noise * n[t]   n ~ N(0, 1)
    volume[t] = base_volume * exp(v[t])

where ``s = sqrt(omega / (1 - alpha - beta))`` is the unconditional volatility of ``eps``. So:

- **drift**: ``mu`` per session (the default 0.0003 is about 7.8 % a year);
- **volatility clustering**: GARCH(1,1) on the shocks (default persistence alpha + beta = 0.98,
  unconditional daily volatility 1.5 %, about 24 % a year);
- **fat tails**: Student-t innovations with 6 degrees of freedom, rescaled to unit variance
  (kurtosis of the returns is well above the Gaussian 3);
- **volume**: log-volume is AR(1) around ``log(base_volume)`` and jumps on days with large
  absolute returns, so volume and ``|return|`` are positively correlated, and volume clusters
  with volatility;
- **intraday bars**: the open is the previous close moved by a small gap; the high and the low
  extend beyond the open/close by a half-normal amount proportional to the day's volatility, so
  ``low <= min(open, close) <= max(open, close) <= high`` always holds;
- **predictability**: the AR(1) term ``ar`` (default 0.2) makes tomorrow's return partly
  predictable from today's. A forecaster that learns it has a lag-1 correlation of about 0.2
  with the next return: a direction hit rate of roughly 56 % and a one-step RMSE about 2 %
  below the random walk's. Large enough to show in a 250-session test split, far larger than
  anything real prices offer: the sample exists to show that the pipeline can learn.

Presets: ``Dynamics()`` (the above), ``Dynamics.random_walk()`` (geometric random walk:
no AR term, constant volatility, Gaussian shocks; nothing beyond the drift is predictable) and
``Dynamics.ar1(phi)`` (AR(1) log returns with coefficient ``phi``, constant volatility,
Gaussian shocks).

Prices are rounded to 4 decimals (a bar whose low is below 1, to 5 significant digits: a penny
stock at 0.0001 would otherwise read as a price that never moves, or 0) and volumes to whole
shares in the frames as well as in the CSV files, so a frame and the file written from it hold
the same numbers. The same seed always
gives the same frame and byte-identical CSV files.

Regenerate the shipped sample with ``python -m forecaster.synthetic data/sample``; write a
universe of synthetic tickers with ``python -m forecaster.synthetic OUT --universe 1000``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecaster.fsio import take_mode
from forecaster.sessions import DEFAULT_CALENDAR, sessions_in_range

__all__ = [
    "MIN_SESSIONS",
    "SAMPLE",
    "Dynamics",
    "generate_bars",
    "generate_universe",
    "main",
    "write_csv",
    "write_sample",
]

#: Fewest sessions any ticker of a synthetic universe has.
MIN_SESSIONS = 300

#: The shipped sample: (ticker, first session, last session, seed).
SAMPLE: tuple[tuple[str, str, str, int], ...] = (
    ("STOCKA", "2012-01-03", "2025-12-31", 1),
    ("STOCKB", "2020-01-02", "2025-12-31", 2),
)

_COLUMNS = ["open", "high", "low", "close", "volume"]
_CSV_HEADER = ["Date", "Open", "High", "Low", "Close", "Volume"]
_PRICE_DECIMALS = 4
_MAX_DECIMALS = 15  # of a bar whose low is below 1e-11: more would be noise in a float64


@dataclass(frozen=True)
class Dynamics:
    """Parameters of the synthetic price process (see the module docstring for the model).

    Attributes:
        mu: mean log return per session.
        ar: AR(1) coefficient of the demeaned log returns (the predictable part), |ar| < 1.
        omega, alpha, beta: GARCH(1,1) variance recursion of the shocks; alpha + beta < 1.
        t_dof: degrees of freedom of the Student-t shocks (> 2), or None for Gaussian shocks.
        base_volume: typical daily volume (the median level of the log-volume process).
        volume_ar: AR(1) coefficient of log-volume, in [0, 1).
        volume_beta: how strongly log-volume reacts to the absolute return in units of the
            unconditional volatility.
        volume_noise: standard deviation of the log-volume noise.
        gap_scale: overnight gap (open vs previous close) in units of the day's volatility.
        range_scale: how far high/low reach beyond open/close, in units of the day's volatility.
    """

    mu: float = 0.0003
    ar: float = 0.2
    omega: float = 4.5e-6
    alpha: float = 0.08
    beta: float = 0.90
    t_dof: float | None = 6.0
    base_volume: float = 1_000_000.0
    volume_ar: float = 0.7
    volume_beta: float = 0.2
    volume_noise: float = 0.25
    gap_scale: float = 0.25
    range_scale: float = 0.5

    def __post_init__(self) -> None:
        checks = [
            (math.isfinite(self.mu), "mu must be finite"),
            (-1.0 < self.ar < 1.0, "ar must be in (-1, 1)"),
            (self.omega > 0 and math.isfinite(self.omega), "omega must be positive"),
            (self.alpha >= 0 and self.beta >= 0, "alpha and beta must be non-negative"),
            (self.alpha + self.beta < 1.0, "alpha + beta must be below 1 (stationary variance)"),
            (self.t_dof is None or 2.0 < self.t_dof < math.inf, "t_dof must be a finite number above 2, or None"),
            (self.base_volume > 0 and math.isfinite(self.base_volume), "base_volume must be > 0"),
            (0.0 <= self.volume_ar < 1.0, "volume_ar must be in [0, 1)"),
            (math.isfinite(self.volume_beta), "volume_beta must be finite"),
            (0 <= self.volume_noise < math.inf, "volume_noise must be non-negative and finite"),
            (
                0 <= self.gap_scale < math.inf and 0 <= self.range_scale < math.inf,
                "gap/range scales must be >= 0 and finite",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"Dynamics: {message}")

    @property
    def sigma(self) -> float:
        """Unconditional standard deviation of the shocks ``eps`` (daily volatility)."""
        return math.sqrt(self.omega / (1.0 - self.alpha - self.beta))

    @property
    def mean_abs_shock(self) -> float:
        """E|z| for the unit-variance shock distribution."""
        if self.t_dof is None:
            return math.sqrt(2.0 / math.pi)
        nu = self.t_dof
        log_e = (
            math.log(2.0)
            + 0.5 * math.log(nu)
            + math.lgamma((nu + 1) / 2)
            - 0.5 * math.log(math.pi)
            - math.log(nu - 1)
            - math.lgamma(nu / 2)
        )
        return math.exp(log_e) * math.sqrt((nu - 2) / nu)

    @classmethod
    def random_walk(cls, sigma: float = 0.015, mu: float = 0.0003) -> Dynamics:
        """Geometric random walk: no AR term, constant volatility ``sigma``, Gaussian shocks."""
        return cls(mu=mu, ar=0.0, omega=sigma**2, alpha=0.0, beta=0.0, t_dof=None)

    @classmethod
    def ar1(cls, phi: float = 0.3, sigma: float = 0.015, mu: float = 0.0003) -> Dynamics:
        """AR(1) log returns with coefficient ``phi``, constant shock volatility, Gaussian."""
        return cls(mu=mu, ar=phi, omega=sigma**2, alpha=0.0, beta=0.0, t_dof=None)


def _draw(rng: np.random.Generator, n: int, dyn: Dynamics) -> np.ndarray:
    """The five innovation streams for one path, shape (5, n): z, gap, up, down, volume."""
    if dyn.t_dof is None:
        z = rng.standard_normal(n)
    else:
        z = rng.standard_t(dyn.t_dof, n) * math.sqrt((dyn.t_dof - 2.0) / dyn.t_dof)
    rest = rng.standard_normal((4, n))
    return np.concatenate([z[None, :], rest], axis=0)


def _simulate(
    shocks: np.ndarray, dyn: Dynamics, start_price: np.ndarray, base_volume: np.ndarray
) -> dict[str, np.ndarray]:
    """Run the model over ``shocks`` of shape (5, T, N): N independent paths, T sessions each.

    Returns arrays of shape (T, N) for open, high, low, close and volume (unrounded). The
    recursion over time is a Python loop; each step is vectorised across the N paths.
    """
    z, gap, up, down, vnoise = shocks
    n_steps, n_paths = z.shape
    returns = np.empty((n_steps, n_paths))
    sigmas = np.empty((n_steps, n_paths))
    log_vol = np.empty((n_steps, n_paths))

    s_bar = dyn.sigma
    centre = dyn.mean_abs_shock
    var = np.full(n_paths, s_bar**2)
    eps = np.zeros(n_paths)
    dev = np.zeros(n_paths)  # r[t-1] - mu
    v = np.zeros(n_paths)
    for t in range(n_steps):
        if t:
            var = dyn.omega + dyn.alpha * eps * eps + dyn.beta * var
        sig = np.sqrt(var)
        eps = sig * z[t]
        dev = dyn.ar * dev + eps
        v = dyn.volume_ar * v + dyn.volume_beta * (np.abs(dev) / s_bar - centre) + dyn.volume_noise * vnoise[t]
        returns[t] = dev
        sigmas[t] = sig
        log_vol[t] = v
    returns += dyn.mu

    log_close = np.log(start_price)[None, :] + np.cumsum(returns, axis=0)
    prev_log_close = np.vstack([np.log(start_price)[None, :], log_close[:-1]])
    log_open = prev_log_close + dyn.gap_scale * sigmas * gap
    top = np.maximum(log_open, log_close) + dyn.range_scale * sigmas * np.abs(up)
    bottom = np.minimum(log_open, log_close) - dyn.range_scale * sigmas * np.abs(down)
    return {
        "open": np.exp(log_open),
        "high": np.exp(top),
        "low": np.exp(bottom),
        "close": np.exp(log_close),
        "volume": base_volume[None, :] * np.exp(log_vol),
    }


def _decimals(low: np.ndarray) -> np.ndarray:
    """Decimals each bar's prices are rounded to: 4, or 5 significant digits of a low below 1
    (``0.5`` 5 decimals, ``0.0001`` 8), so that a penny stock's prices keep their moves."""
    low = np.asarray(low, dtype=np.float64)
    out = np.full(low.shape, _PRICE_DECIMALS, dtype=np.int64)
    small = (low < 1.0) & (low > 0)
    out[small] = _PRICE_DECIMALS + np.ceil(-np.log10(low[small])).astype(np.int64)
    return np.minimum(out, _MAX_DECIMALS)


def _round(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Round prices to :func:`_decimals` of their bar and volume to whole shares, in place.

    All four prices of a bar are rounded to the same decimals, and rounding is monotone, so
    ``low <= min(open, close) <= max(open, close) <= high`` survives.
    """
    decimals = _decimals(arrays["low"])
    finer = decimals != _PRICE_DECIMALS
    factor = 10.0 ** decimals[finer]
    for k in ("open", "high", "low", "close"):
        small = arrays[k][finer]
        np.round(arrays[k], _PRICE_DECIMALS, out=arrays[k])
        arrays[k][finer] = np.rint(small * factor) / factor
    np.rint(arrays["volume"], out=arrays["volume"])
    return arrays


def _frame(index: pd.DatetimeIndex, values: np.ndarray, columns: pd.Index | None = None) -> pd.DataFrame:
    """A bars frame from ``values`` of shape (len(index), 5) in ``_COLUMNS`` order."""
    if not (index.dtype == "datetime64[ns]" and index.name == "date"):
        index = pd.DatetimeIndex(np.asarray(index, dtype="datetime64[ns]"), name="date")
    block = np.array(values, dtype=np.float64, order="F")  # one copy, column-major like pandas
    if columns is None:
        columns = pd.Index(_COLUMNS)
    return pd.DataFrame(block, index=index, columns=columns, copy=False)


def generate_bars(
    start: Any,
    end: Any,
    *,
    seed: int,
    dynamics: Dynamics = Dynamics(),
    calendar: str = DEFAULT_CALENDAR,
    start_price: float = 100.0,
) -> pd.DataFrame:
    """Synthetic daily bars for every session of ``calendar`` from ``start`` to ``end``.

    Returns a frame indexed by the session dates (``date``, tz-naive ``datetime64[ns]``) with
    float64 columns ``open, high, low, close, volume``. ``start_price`` is the close before the
    first bar. The same arguments always give the same frame.
    """
    if not (math.isfinite(start_price) and start_price > 0):
        raise ValueError(f"start_price must be positive, got {start_price!r}")
    sessions = sessions_in_range(start, end, calendar)
    if len(sessions) == 0:
        raise ValueError(f"no {calendar} sessions between {start} and {end}")
    rng = np.random.default_rng(seed)
    shocks = _draw(rng, len(sessions), dynamics)[:, :, None]
    arrays = _simulate(shocks, dynamics, np.array([float(start_price)]), np.array([dynamics.base_volume]))
    rounded = _round(arrays)
    return _frame(sessions, np.column_stack([rounded[c][:, 0] for c in _COLUMNS]))


MAX_TICKERS = 10_000
"""Tickers of a universe at most: their names have four digits, SYN0000 to SYN9999."""
MAX_YEARS = 200
"""Years of a universe's history, less than this."""
FIRST_SESSION = pd.Timestamp("1970-01-02")
"""A universe's sessions start on or after this: exchange_calendars' New York calendar holds
no holidays before 1970 (it would trade on Christmas Day)."""
BYTES_PER_BAR = 250
"""Memory a universe takes while it is made, per ticker and session (about 210 measured)."""


def _memory() -> int | None:
    """This machine's memory in bytes, where the system says."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def generate_universe(
    n_tickers: int,
    years: float = 10,
    *,
    seed: int,
    end: Any = "2025-12-31",
    dynamics: Dynamics = Dynamics(),
) -> dict[str, pd.DataFrame]:
    """``n_tickers`` synthetic tickers ``SYN0000``, ``SYN0001``, ... on the XNYS calendar.

    All histories end on the last session on or before ``end``. ``SYN0000`` and about half of
    the others span the full ``years``; the rest were "listed" later, at a random session, and
    still have at least ``MIN_SESSIONS`` sessions. Each ticker has its own start price and
    volume level and its own random stream (derived from ``seed`` and its number), so the first
    k tickers of a universe do not depend on how many tickers are asked for. All tickers share
    ``dynamics`` and are simulated together, vectorised across tickers.
    """
    if isinstance(n_tickers, bool) or not isinstance(n_tickers, (int, np.integer)):
        raise ValueError(f"n_tickers must be an integer, got {n_tickers!r}")
    if not 1 <= n_tickers <= MAX_TICKERS:
        raise ValueError(f"n_tickers must be from 1 to {MAX_TICKERS:,}, got {n_tickers}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0 < years < MAX_YEARS:
        raise ValueError(f"years must be more than 0 and less than {MAX_YEARS}, got {years!r}")
    last = pd.Timestamp(end).normalize()
    shown = str(last)[:10] if last.year >= 1000 else str(last).split()[0]  # .date() fails before year 1
    try:
        first = last - pd.Timedelta(days=round(float(years) * 365.25) - 1)
    except (OverflowError, pd.errors.OutOfBoundsDatetime, pd.errors.OutOfBoundsTimedelta) as exc:
        raise ValueError(f"{years} years up to {shown} reach beyond the dates pandas can hold: {exc}") from None
    if first < FIRST_SESSION:
        raise ValueError(
            f"{years} years up to {shown} start before {FIRST_SESSION.year}, where the New York calendar holds no "
            "holidays (Christmas Day would be a session): fewer years, or a later end"
        )
    sessions = sessions_in_range(first, last)
    n_steps = len(sessions)
    if n_steps < MIN_SESSIONS:
        raise ValueError(
            f"{years} years up to {shown} give {n_steps} sessions; each ticker needs at least {MIN_SESSIONS}"
        )
    need, have = n_tickers * n_steps * BYTES_PER_BAR, _memory()
    if have is not None and need > have / 2:
        raise ValueError(
            f"{n_tickers:,} tickers of {n_steps:,} sessions need about {need / 2**30:.1f} GiB while they are made, "
            f"more than half this machine's memory ({have / 2**30:.1f} GiB): fewer tickers or years"
        )

    names = [f"SYN{i:04d}" for i in range(n_tickers)]
    shocks = np.empty((5, n_steps, n_tickers))
    start_price = np.empty(n_tickers)
    base_volume = np.empty(n_tickers)
    first_row = np.zeros(n_tickers, dtype=np.int64)
    for i in range(n_tickers):
        rng = np.random.default_rng([int(seed), i])
        start_price[i] = float(np.clip(40.0 * math.exp(0.6 * rng.standard_normal()), 5, 1000))
        base_volume[i] = dynamics.base_volume * math.exp(rng.standard_normal())
        late = rng.random() >= 0.5
        offset = int(rng.integers(0, n_steps - MIN_SESSIONS + 1))
        first_row[i] = offset if (late and i > 0) else 0
        shocks[:, :, i] = _draw(rng, n_steps, dynamics)

    raw = _simulate(shocks, dynamics, np.ones(n_tickers), base_volume)
    del shocks
    # Prices are multiplicative in the model, so scaling a whole path is the same path started
    # at another price: scale each so the close before its first bar is its start price.
    cols = np.arange(n_tickers)
    before = np.where(first_row > 0, raw["close"][np.maximum(first_row - 1, 0), cols], 1.0)
    scale = start_price / before
    for c in ("open", "high", "low", "close"):
        raw[c] *= scale[None, :]
    _round(raw)
    stacked = np.stack([raw.pop(c) for c in _COLUMNS], axis=-1)  # (T, N, 5)

    index = pd.DatetimeIndex(sessions, name="date")
    columns = pd.Index(_COLUMNS)  # one shared (immutable) column index for all the frames
    out: dict[str, pd.DataFrame] = {}
    for i, name in enumerate(names):
        k = int(first_row[i])
        out[name] = _frame(index[k:], stacked[k:, i, :], columns)
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    """``path`` replaced by ``text`` in one rename (no fsync: a universe is a thousand files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        take_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_csv(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write bars as ``Date,Open,High,Low,Close,Volume`` (prices to 4 decimals, a bar whose low is
    below 1 to 5 significant digits; integer volume).

    The file is written atomically (a temporary file, then a rename) and is byte-for-byte
    reproducible for the same frame. Returns the path written.
    """
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"write_csv: missing columns {missing}")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise ValueError("write_csv: the index must be a DatetimeIndex of session dates")
    prices = df[["open", "high", "low", "close"]].to_numpy(dtype=np.float64)
    volume = df["volume"].to_numpy(dtype=np.float64)
    if not (np.isfinite(prices).all() and np.isfinite(volume).all()):
        raise ValueError("write_csv: prices and volume must be finite")
    if (volume < 0).any():
        raise ValueError("write_csv: volume must be non-negative")
    if (np.rint(volume) >= 2.0**63).any():  # a whole number of shares in a signed 64-bit integer
        raise ValueError("write_csv: volume must be below 2**63 shares")

    dates = df.index.strftime("%Y-%m-%d")
    rounded = np.round(prices, _PRICE_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    formatted = [np.char.mod(f"%.{_PRICE_DECIMALS}f", rounded[:, j]).astype(object) for j in range(4)]
    decimals = _decimals(prices[:, 2])
    for i in np.flatnonzero(decimals != _PRICE_DECIMALS):  # a penny stock's bars, more decimals
        for j in range(4):
            formatted[j][i] = f"{round(float(prices[i, j]), int(decimals[i])) + 0.0:.{decimals[i]}f}"
    vol = np.char.mod("%d", np.rint(volume).astype(np.int64))
    rows = [",".join(_CSV_HEADER)]
    columns = (dates, *formatted, vol)
    rows.extend(",".join(parts) for parts in zip(*columns, strict=True))
    out = Path(path)
    _atomic_write_text(out, "\n".join(rows) + "\n")
    return out


def write_sample(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the shipped sample (``STOCKA.csv``, ``STOCKB.csv``) into ``out_dir``."""
    written = []
    for ticker, first, last, seed in SAMPLE:
        bars = generate_bars(first, last, seed=seed)
        written.append(write_csv(bars, Path(out_dir) / f"{ticker}.csv"))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: regenerate the sample, or write a synthetic universe."""
    parser = argparse.ArgumentParser(
        prog="python -m forecaster.synthetic",
        description=(
            "Write synthetic daily OHLCV bars (not real prices). By default, regenerate the "
            "shipped sample STOCKA.csv and STOCKB.csv into OUT_DIR."
        ),
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the CSV files into")
    parser.add_argument(
        "--universe",
        type=int,
        metavar="N",
        default=None,
        help="instead of the sample, write N synthetic tickers SYN0000.csv, SYN0001.csv, ...",
    )
    parser.add_argument("--years", type=float, default=None, help="history length of the universe (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the universe (default 0)")
    parser.add_argument("--end", default=None, help="last date of the universe (default 2025-12-31)")
    args = parser.parse_args(argv)
    if not args.out_dir.strip():
        parser.error('OUT_DIR "" names no folder')
    universe_only = [f"--{k}" for k in ("years", "seed", "end") if getattr(args, k) is not None]
    if args.universe is None and universe_only:
        verb = "apply" if len(universe_only) > 1 else "applies"
        parser.error(f"{', '.join(universe_only)} only {verb} with --universe (the sample is fixed)")

    try:
        if args.universe is None:
            paths = write_sample(args.out_dir)
        else:
            years = 10.0 if args.years is None else args.years
            try:
                end = pd.Timestamp("2025-12-31" if args.end is None else args.end)
            except ValueError:
                parser.error(f"--end {args.end!r} is not a date; expected YYYY-MM-DD")
            if pd.isna(end):
                parser.error(f"--end {args.end!r} is not a date; expected YYYY-MM-DD")
            end = end.tz_localize(None) if end.tzinfo else end  # the date as written
            if end.normalize() > pd.Timestamp.now().normalize():
                parser.error(f"--end {end.date()} is after today: training refuses bars dated after today")
            try:
                frames = generate_universe(args.universe, years, seed=args.seed or 0, end=end)
            except ValueError as exc:
                parser.error(
                    str(exc)
                    .replace("n_tickers", "--universe")
                    .replace("years must", "--years must")
                    .replace("seed must", "--seed must")
                )
            paths = [write_csv(df, Path(args.out_dir) / f"{name}.csv") for name, df in frames.items()]
            written = {p.name for p in paths}
            others = sorted(p.name for p in Path(args.out_dir).glob("SYN*.csv") if p.name not in written)
            if others:  # an earlier, larger universe: the folder now mixes two
                shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
                print(
                    f"warning: {args.out_dir} also holds {shown} of another universe: a command reading the "
                    "whole folder reads them too; delete them, or write into an empty folder",
                    file=sys.stderr,
                )
    except OSError as exc:
        print(f"error: cannot write into {args.out_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for p in paths[:10]:
        print(p)
    if len(paths) > 10:
        print(f"... and {len(paths) - 10} more")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
