"""The local Parquet store (one file per ticker), validation, incremental updates, download.

Loading one ticker's bars is: a reader (:func:`forecaster.sources.read_csv_raw` for CSV files,
:func:`_read_store_raw` for the store), then :func:`validate_bars`, the one validator. Each
reader first tries a fast pyarrow read into plain arrays and leaves anything unusual to pandas;
the validator first tries a fast check on the arrays, which builds the result directly when the
bars need no repair, and otherwise repairs and checks them step by step.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecaster import fsio
from forecaster.choices import SOURCES
from forecaster.errors import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_TEMPFAIL,
    ConfigError,
    DataError,
    ForecasterError,
    NetworkError,
    NoUsableBars,
    RateLimitError,
    ServerError,
    TickerError,
)
from forecaster.sessions import DEFAULT_CALENDAR, check_calendar, dated_after_today
from forecaster.sources import (
    COLUMNS,
    FIRST_DAY,
    LAST_DAY,
    YEARS_HELD,
    DateLike,
    PlainBars,
    RawBars,
    configure_yfinance,
    csv_file,
    fetch_with_retry,
    read_csv_raw,
    relative_note,
)
from forecaster.tickers import _shown, given_tickers, ticker_file, validate_ticker

log = logging.getLogger("forecaster")

Fetch = Callable[[str, DateLike | None, DateLike | None], pd.DataFrame]

PRICES = ["open", "high", "low", "close"]
MAX_DAILY_FACTOR = 20.0  # a close more than 20x (or under 1/20 of) the previous one is absurd
RANGE_TOLERANCE = 0.01  # close may sit outside [low, high] by rounding, not by more than 1 %
OVERLAP_SESSIONS = 5  # an update re-fetches the last week of stored sessions, to see revisions
REVISION_RTOL = 1e-6  # a stored close that moved by more than this (relative) was re-adjusted upstream
BREAKER_AFTER = 3  # stop after this many tickers in a row failed with network/rate-limit errors
# Consecutive bars further apart than this (calendar days) are warned about: sessions are
# missing from the data. Weekends, long weekends, the 4 sessions NYSE lost after 9/11 (7 days)
# and the longest Lunar New Year closures in Asia (11 days) stay below it.
GAP_WARN_DAYS = 14

_DAY_NS = 86_400_000_000_000
_COLUMNS_INDEX = pd.Index(COLUMNS)


def store_dir(data_dir: str | os.PathLike[str]) -> Path:
    """The store folder, ``<data_dir>/store``."""
    return Path(data_dir) / "store"


def store_path(data_dir: str | os.PathLike[str], ticker: str) -> Path:
    """``<data_dir>/store/<TICKER>.parquet`` for a validated ticker."""
    return ticker_file(store_dir(data_dir), ticker, ".parquet")


# --------------------------------------------------------------------------- validation


def validate_bars(bars: RawBars, ticker: str, *, path: Path | None = None) -> pd.DataFrame:
    """Return clean bars (a new frame) or raise DataError naming ticker, date and column.

    ``bars`` is what a reader gives: a frame, or a fast reader's :class:`PlainBars`; ``path``
    the file it read them from, when a warning should name it (a CSV file the user can edit).
    Repairs, each with a warning: sorts by date, drops rows with a missing date or price,
    keeps the last of duplicate dates (naming them), gives a missing volume the last known one
    (0 on every row of bars without any). Refuses non-finite or non-positive prices and those
    below :data:`SMALLEST_PRICE`, negative volume, high < low, a close outside [low, high] by
    more than 1 %, a one-day move over 20x, and an empty result. Bars that need no repair and
    pass every check (nearly all) are built straight from their arrays, with the same result. An
    open outside [low, high] is kept (the features read it at the range's nearer end); the
    readers (:func:`load_store`, :func:`load_csv`) name one more than 1 % off in a warning.
    """
    if not isinstance(bars, PlainBars):
        _check_layout(bars, ticker)
    clean = _validated_fast(bars)
    return clean if clean is not None else _validated_slow(bars, ticker, path)


def _validated_slow(bars: RawBars, ticker: str, path: Path | None) -> pd.DataFrame:
    """:func:`validate_bars` step by step: the repairs with their warnings, then the checks."""
    # repairs
    out = _as_float_bars(bars.frame() if isinstance(bars, PlainBars) else bars, ticker)
    rows = len(out)
    out = _drop_rows_without_date_or_price(out, ticker, path)
    newest_first = not out.index.is_monotonic_increasing and out.index.is_monotonic_decreasing
    out = _sort_by_date(out, ticker, path)
    out = _keep_last_of_each_date(out, ticker, path, newest_first)
    out = _fill_missing_volume(out, ticker, path)
    # checks
    if out.empty:
        why = f": each of its {rows} row(s) lacks a date or one of {', '.join(PRICES)}" if rows else ""
        raise NoUsableBars(f"{ticker}: no usable bars{why}")
    _refuse_bad_values(out, ticker)
    return out


def _warn_open_off_range(df: pd.DataFrame, ticker: str, path: Path | None = None) -> pd.DataFrame:
    """``df``, after a warning of its opens outside the day's low-high range by more than the
    rounding tolerance: bad prints the features read at the range's edge, which the user may
    want to fix. Given when bars are read for use, not at each validation of a download."""
    o, high, low = (df[c].to_numpy() for c in ("open", "high", "low"))
    off = (o > high * (1 + RANGE_TOLERANCE)) | (o < low * (1 - RANGE_TOLERANCE))
    if off.any():
        where = f" in {path}" if path is not None else ""
        log.warning(
            "%s: the open is outside the day's low-high range by more than %g %% on %s%s; "
            "it is read at the range's nearer end",
            ticker,
            RANGE_TOLERANCE * 100,
            _some_dates(df.index[off]),
            where,
        )
    return df


SPLIT_RATIOS: tuple[tuple[int, int], ...] = (
    (3, 2), (2, 1), (3, 1), (4, 1), (5, 1), (8, 1), (10, 1), (15, 1), (20, 1), (25, 1), (30, 1), (50, 1), (100, 1)
)  # fmt: skip
"""A CSV file's closes are checked for a one-day move to b/a or a/b times the close before: what
a split a-for-b (or a reverse split b-for-a) does to prices not adjusted for it, for the ratios
that splits use (3-for-2, 2-for-1 ... 100-for-1; a move of more than :data:`MAX_DAILY_FACTOR`
is refused, its error asking whether a split is not adjusted for)..."""
SPLIT_TOLERANCE = 0.03
"""...within 3 % (the day's own move on top of the split)..."""
SPLIT_VOLUME_SESSIONS = 20
"""...and, when the file has volumes, with the median volume of this many sessions after it moved
the other way by at least the square root of a/b (a split multiplies the shares traded by a/b)..."""
SPLIT_SPIKE = 3.0
"""...and, for a ratio under 2 (3-for-2), whose one-day move a crash or a rally can make: a fall
only (no 2-for-3 reverse splits), in a file with volumes, with the volume of the day itself at
most this many times the ratio over the median before it: a split day trades about a/b times
the shares, a day of news many times more."""


def _split_ratio_text(a: int, b: int, down: bool) -> str:
    """'1/2 of the close before, as at a 2-for-1 split', '10x, as at a 1-for-10 split'."""
    if down:
        return f"{b}/{a} of the close before, as at a {a}-for-{b} split"
    return f"{a / b:g}x, as at a {b}-for-{a} split"


def _warn_split_like_moves(df: pd.DataFrame, ticker: str, path: Path | None = None) -> pd.DataFrame:
    """``df``, after a warning naming each one-day move that looks like a split its prices are
    not adjusted for (:data:`SPLIT_RATIOS`): the features and targets would read it as a
    return of -50 % (2-for-1) or +900 % (1-for-10). A CSV file may hold raw prices; the store
    holds Yahoo's adjusted ones, where such a move is the market's."""
    close = df["close"].to_numpy()
    moves = _split_like_moves(close, df["volume"].to_numpy())
    if moves:
        shown = [
            f"{df.index[t].date()} ({close[t - 1]:.6g} -> {close[t]:.6g}: {_split_ratio_text(a, b, down)})"
            for t, (a, b), down in moves[:SHOWN_DATES]
        ]
        more = f" and {len(moves) - SHOWN_DATES} more" if len(moves) > SHOWN_DATES else ""
        where = f" in {path}" if path is not None else ""
        log.warning(
            "%s: the close moves by a split's ratio on %s%s%s; if the prices are not adjusted for splits, each "
            "reads as a one-day return that never happened: give adjusted prices (an 'Adj Close' column is "
            "applied to the others when the file has one)",
            ticker,
            ", ".join(shown),
            more,
            where,
        )
    return df


def _at_ratio(move, a: int, b: int):
    """Whether ``|move|`` (one-day log changes of the close) is a split a-for-b's, within
    :data:`SPLIT_TOLERANCE`."""
    return np.abs(np.abs(move) - math.log(a / b)) < math.log1p(SPLIT_TOLERANCE)


def _split_ratio_of(move: float) -> tuple[int, int] | None:
    """The ratio ``(a, b)`` of :data:`SPLIT_RATIOS` of the one-day log change ``move``, or None."""
    return next(((a, b) for a, b in SPLIT_RATIOS if _at_ratio(move, a, b)), None)


def _split_like_moves(close: np.ndarray, volume: np.ndarray) -> list[tuple[int, tuple[int, int], bool]]:
    """Each row ``t`` whose close is about b/a or a/b times the one before (``(a, b)`` in
    :data:`SPLIT_RATIOS`), with ``(a, b)`` and whether it fell, in date order; where the volumes
    are known, only those after which the median volume moved the other way by sqrt(a/b) or
    more (and, for a ratio under 2, whose own volume is no spike: :data:`SPLIT_SPIKE`)."""
    if len(close) < 2:
        return []
    move = np.log(close[1:] / close[:-1])
    has_volume = bool(np.any(volume > 0))
    found = []
    for a, b in SPLIT_RATIOS:
        n = a / b
        if n < 2 and not has_volume:  # a move of a third, without volumes to tell a split from news
            continue
        for i in np.flatnonzero(_at_ratio(move, a, b)):
            t, down = int(i) + 1, bool(move[i] < 0)
            if n < 2 and not down:  # 3-for-2 splits are usual; 2-for-3 reverse splits are not
                continue
            if has_volume:
                before = volume[max(0, t - SPLIT_VOLUME_SESSIONS) : t]
                after = volume[t + 1 : t + 1 + SPLIT_VOLUME_SESSIONS]
                if len(before) == 0 or len(after) == 0:
                    continue
                was, now = float(np.median(before)), float(np.median(after))
                if not (now >= was * math.sqrt(n) if down else was >= now * math.sqrt(n)):
                    continue
                usual = was * n if down else was / n  # the day's usual shares, counted after the split
                if n < 2 and volume[t] > SPLIT_SPIKE * usual:
                    continue
            found.append((t, (a, b), down))
    return sorted(found)


def _check_layout(df: pd.DataFrame, ticker: str) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{ticker}: missing column(s) {', '.join(missing)}")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(f"{ticker}: bars must be indexed by date")


def _as_float_bars(df: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """``COLUMNS`` as float64, indexed by tz-naive session dates (datetime64[ns]) named date."""
    try:
        out = df[COLUMNS].astype("float64")
    except (TypeError, ValueError) as exc:
        raise DataError(f"{ticker}: non-numeric prices ({exc})") from None
    index = out.index
    if index.tz is not None:
        index = index.tz_localize(None)
    days = index.to_numpy().astype("datetime64[D]")
    outside = (days < FIRST_DAY) | (days > LAST_DAY)
    if outside.any():  # no nanosecond timestamp holds it: named, not an unexpected error
        raise DataError(f"{ticker}: date {days[outside][0]} is outside the years {YEARS_HELD} that a date can take")
    out.index = index.astype("datetime64[ns]").normalize().rename("date")  # normalize last: it sets the freq
    return out


def _drop_rows_without_date_or_price(df: pd.DataFrame, ticker: str, path: Path | None = None) -> pd.DataFrame:
    """The rows with a date and every price (an empty adjusted close empties the row's prices),
    with a warning naming the file and the dates of those dropped."""
    unusable = df.index.isna() | df[PRICES].isna().any(axis=1).to_numpy()
    if not unusable.any():
        return df
    dated = df.index[unusable & ~df.index.isna()]
    log.warning(
        "%s: dropped %d row(s) with a missing date or price (an adjusted close too)%s%s",
        ticker,
        unusable.sum(),
        f" in {path}" if path is not None else "",
        f" ({_some_dates(dated)})" if len(dated) else "",
    )
    return df[~unusable]


def _sort_by_date(df: pd.DataFrame, ticker: str, path: Path | None = None) -> pd.DataFrame:
    """The bars oldest first. A file written newest first (as many sites export) is read from
    its end, with no warning: a row pasted above another of the same date is the later one,
    and so is kept (:func:`_keep_last_of_each_date`). Dates in no order are sorted, warned of."""
    if df.index.is_monotonic_increasing:
        return df
    if df.index.is_monotonic_decreasing:
        return df.iloc[::-1]
    where = f" in {path}" if path is not None else ""
    log.warning("%s: dates were out of order%s; sorted %d rows", ticker, where, len(df))
    return df.sort_index(kind="stable")


def _keep_last_of_each_date(
    df: pd.DataFrame, ticker: str, path: Path | None = None, newest_first: bool = False
) -> pd.DataFrame:
    """The last row of each date (of a file written ``newest_first``, read from its end: the
    upper row), with a warning naming the dates."""
    dupes = df.index.duplicated(keep="last")
    if not dupes.any():
        return df
    where = f" in {path}" if path is not None else ""
    log.warning(
        "%s: dropped %d row(s) with a duplicate date%s (kept the %s of each): %s",
        ticker,
        dupes.sum(),
        where,
        "upper row, the file being written newest first," if newest_first else "last",
        _some_dates(df.index[dupes].unique()),
    )
    return df[~dupes]


SHOWN_DATES = 3  # a warning about many dates names this many, then how many in all


def _some_dates(dates: pd.DatetimeIndex) -> str:
    """'2024-03-05' or '5 dates: 2024-03-05, 2024-03-06, 2024-03-07, ...' (the first ones)."""
    shown = ", ".join(str(d.date()) for d in dates[:SHOWN_DATES])
    if len(dates) == 1:
        return shown
    more = ", ..." if len(dates) > SHOWN_DATES else ""
    return f"{len(dates)} dates: {shown}{more}"


def _fill_missing_volume(df: pd.DataFrame, ticker: str, path: Path | None = None) -> pd.DataFrame:
    """``df`` with each missing volume the last known one before it (the first known one, for
    rows before any): the volume change the network reads is then 0 there, as no news, where a
    volume of 0 made it about +-16 standard deviations on both sides of the gap (and a last bar
    without its volume, as some sources give the latest day, moved the forecast). A file with
    no volume at all gets 0 on every row, with a note."""
    no_volume = df["volume"].isna()
    if not no_volume.any():
        return df
    if no_volume.all():  # a file without a volume column (an index, an exchange rate): a note, not a warning
        log.info("%s: no volume: set to 0 on all %d rows (its volume feature is flat)", ticker, len(df))
        return df.assign(volume=0.0)
    where = f" in {path}" if path is not None else ""
    log.warning(
        "%s: %d row(s) without a volume%s (%s) take the volume of the bar before them (the first known one "
        "before any), so their volume change reads 0",
        ticker,
        no_volume.sum(),
        where,
        _some_dates(df.index[no_volume.to_numpy()]),
    )
    return df.assign(volume=df["volume"].ffill().bfill())


SMALLEST_PRICE = float(np.finfo(np.float64).tiny)
"""The smallest price a bar may hold (2.2e-308): below it a float loses digits, and the returns
of such prices are rounded to a few distinct values."""


def _checks(columns: Sequence[np.ndarray]) -> Iterator[tuple[str, int, np.ndarray, str]]:
    """The checks, in the order they are reported: (column, first row, which rows from the
    first one pass, the problem of a row that does not).

    ``columns`` are the float64 arrays of ``COLUMNS``. Lazy, and each check may assume the
    ones before it passed: a caller stops at the first that fails.
    """
    open_, high, low, close, volume = columns
    for name, values in zip(PRICES, (open_, high, low, close)):
        yield name, 0, (values > 0) & (values < np.inf), "is not a finite positive price"
    for name, values in zip(PRICES, (open_, high, low, close)):
        yield name, 0, values >= SMALLEST_PRICE, f"is below {SMALLEST_PRICE:.3g}, too small a price to compute with"
    yield "volume", 0, (volume >= 0) & (volume < np.inf), "is not a finite non-negative volume"
    yield "high", 0, high >= low, "is below the low"
    inside = (close <= high * (1 + RANGE_TOLERANCE)) & (close >= low * (1 - RANGE_TOLERANCE))
    yield "close", 0, inside, "is outside the day's low-high range"
    factor = close[1:] / close[:-1]
    steady = (factor <= MAX_DAILY_FACTOR) & (factor >= 1 / MAX_DAILY_FACTOR)
    yield "close", 1, steady, f"is more than {MAX_DAILY_FACTOR:g}x away from the previous close"


def _passes_checks(columns: Sequence[np.ndarray]) -> bool:
    return all(passing.all() for _, _, passing, _ in _checks(columns))


def _refuse_bad_values(df: pd.DataFrame, ticker: str) -> None:
    """DataError naming the first failed check of :func:`_checks`: column, value and date."""
    for column, first, passing, problem in _checks([df[c].to_numpy() for c in COLUMNS]):
        failing = np.flatnonzero(~passing)
        if failing.size:
            pos = first + int(failing[0])
            value = df[column].iloc[pos]
            if first == 1:  # the one-day move: raw prices across a split, most likely
                problem = _absurd_move(float(df[column].iloc[pos - 1]), float(value))
            raise DataError(f"{ticker}: {column} {value:g} on {df.index[pos].date()} {problem}")


def _absurd_move(before: float, close: float) -> str:
    """What is wrong with a close more than :data:`MAX_DAILY_FACTOR` times away from the one
    ``before`` it, and what to do: such a move is a split the prices are not adjusted for,
    far more often than a market's."""
    ratio = _split_ratio_of(math.log(close / before))
    down = close < before
    seen = f"{before:g} -> {close:g}" + (f": {_split_ratio_text(*ratio, down)}" if ratio else "")
    return (
        f"is more than {MAX_DAILY_FACTOR:g}x away from the previous close ({seen}); not adjusted for a split? "
        "Give prices adjusted for splits (an 'Adj Close' column is applied to the others when the file has one)"
    )


# --------------------------------------------------------------------------- the fast check


def _validated_fast(bars: RawBars) -> pd.DataFrame | None:
    """What :func:`validate_bars` returns, built straight from the arrays, for bars that need
    no repair and pass every check; None for any other bars (the step-by-step path then
    repairs or refuses them, with its warnings and messages)."""
    if isinstance(bars, PlainBars):
        return _validated_arrays(bars.dates, bars.columns)
    return _clean_frame(bars)


def _infers_no_freq(days: np.ndarray) -> bool:
    """True when pandas is sure to infer no frequency for these strictly increasing dates
    (int64 days since 1970-01-01), as ``DatetimeIndex.normalize`` does; False when it might
    find one and has to be asked.

    Sure means: fewer than three dates, or steps of more than one size, not all of 1 or 3
    days (no business-day rule), more than one weekday (no week-of-month rule), and more
    dates than the months they span, over more than one month: two dates then share a
    month and two do not, so the steps in months differ (no annual, quarterly or monthly
    rule). Daily bars of a year or more are all of these.
    """
    if len(days) < 3:
        return True
    steps = np.diff(days)
    lo, hi = steps.min(), steps.max()
    if lo == hi or (lo == 1 and hi == 3 and not ((steps != 1) & (steps != 3)).any()):
        return False
    if not (steps % 7).any():
        return False
    first, last = days[[0, -1]].astype("datetime64[D]").astype("datetime64[M]").view(np.int64)
    return bool(first != last and len(days) > last - first + 1)


def _validated_arrays(stamps: np.ndarray, columns: Sequence[np.ndarray]) -> pd.DataFrame | None:
    """:func:`_validated_fast` for tz-naive datetime64 ``stamps`` and the float64 ``columns``
    (in ``COLUMNS`` order).

    No repair means: at least one row, dates at midnight and strictly increasing, and no
    missing price or volume (a missing value fails the checks).
    """
    ticks = stamps.view(np.int64)
    if not (len(ticks) and stamps[0] >= FIRST_DAY and stamps[-1] <= LAST_DAY):
        return None  # NaT fails both comparisons
    if (np.diff(ticks) <= 0).any():
        return None
    nanos = stamps.astype("datetime64[ns]", copy=False).view(np.int64)
    days, rest = np.divmod(nanos, _DAY_NS)
    if rest.any():
        return None
    if not _passes_checks(columns):
        return None
    block = np.empty((len(nanos), len(COLUMNS)), order="F")
    for i, values in enumerate(columns):
        block[:, i] = values
    index = pd.DatetimeIndex(nanos.view("datetime64[ns]"), name="date")
    if not _infers_no_freq(days):
        index = index.normalize()  # sets the frequency pandas infers, as validate_bars does
    return pd.DataFrame(block, index=index, columns=_COLUMNS_INDEX.copy(), copy=False)


def _clean_frame(df: pd.DataFrame) -> pd.DataFrame | None:
    """:func:`_validated_arrays` for a plain DataFrame of float64 columns (under unnamed
    string labels, without attrs) and a tz-naive DatetimeIndex; None for any other frame."""
    columns = df.columns
    if not (
        type(df) is pd.DataFrame
        and type(df.index) is pd.DatetimeIndex
        and columns.is_unique
        and columns.name is None
        and columns.dtype == _COLUMNS_INDEX.dtype
        and not df.attrs
        and df.flags.allows_duplicate_labels
        and df.index.tz is None
    ):
        return None
    series = [df[c] for c in COLUMNS]
    if any(s.dtype != np.float64 for s in series):
        return None
    return _validated_arrays(df.index.to_numpy(), [s.to_numpy() for s in series])


# --------------------------------------------------------------------------- reading the store


@functools.lru_cache(maxsize=16)
def _plain_index_column(pandas_metadata: bytes | None) -> str | None:
    """The index column of a Parquet file whose pandas metadata is ``pandas_metadata``, when
    ``pd.read_parquet`` would give plain float64 ``COLUMNS`` under unnamed column labels and
    a tz-naive DatetimeIndex from that column, and no attrs; else None."""
    try:
        meta = json.loads(pandas_metadata or b"null")
        index_columns = meta["index_columns"]
        levels = meta.get("column_indexes", [])
        types = {c["field_name"]: c["numpy_type"] for c in meta["columns"]}
        name = index_columns[0]
        plain = (
            len(index_columns) == 1
            and isinstance(name, str)
            and name not in COLUMNS
            and len(levels) <= 1
            and all(level.get("name") is None for level in levels)
            and not meta.get("attributes")
            and all(types.get(c) == "float64" for c in COLUMNS)
            and types.get(name) in {f"datetime64[{unit}]" for unit in ("s", "ms", "us", "ns")}
        )
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        return None
    return name if plain else None


def _read_plain_store(path: Path) -> PlainBars | None:
    """The bars of a store file in the layout :func:`save_store` writes, read by pyarrow
    (the same bars ``pd.read_parquet`` gives); None for any other file."""
    import pyarrow as pa  # slow to import: only when a file is read
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path, pre_buffer=False) as file:
            schema = file.schema_arrow
            metadata = schema.metadata or {}
            if b"PANDAS_ATTRS" in metadata:  # attrs that pandas wrote, which pyarrow 15 keeps nowhere else
                return None
            name = _plain_index_column(metadata.get(b"pandas"))
            if name is None:
                return None
            fields = [schema.field(c) for c in [*COLUMNS, name]]
            stamp = fields[-1].type
            if not (
                all(f.type == pa.float64() for f in fields[:-1]) and pa.types.is_timestamp(stamp) and stamp.tz is None
            ):
                return None
            table = file.read(columns=[*COLUMNS, name], use_threads=False, use_pandas_metadata=False)
        return PlainBars(table.column(name).to_numpy(), [table.column(c).to_numpy() for c in COLUMNS])
    except Exception:  # a damaged or unusual file: pd.read_parquet says what is wrong
        return None


def _read_store_raw(path: Path, symbol: str) -> RawBars:
    """The bars of the store file at ``path``: arrays when it is plain, else pandas' frame."""
    plain = _read_plain_store(path)
    if plain is not None:
        return plain
    try:
        return pd.read_parquet(path)
    except PermissionError as exc:  # the file may be whole: deleting it is no advice
        raise DataError(f"{symbol}: cannot read {path} ({os.strerror(exc.errno)})") from None
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise DataError(
            f"{symbol}: cannot read {path} ({type(exc).__name__}); delete it and run {download_command(path, symbol)}"
        ) from None


def download_command(path: Path, symbol: str) -> str:
    """The ``download`` that stores ``symbol`` at ``path`` (its file in a store), in backquotes:
    with ``--data-dir`` unless the store is the default one, which a bare download fills."""
    root = Path(path).parent.parent
    option = "" if root == Path("data") else f" --data-dir {shlex.quote(str(root))}"
    return f"`forecaster download{option} {symbol}`"


# --------------------------------------------------------------------------- the store


def load_store(data_dir: str | os.PathLike[str], ticker: str) -> pd.DataFrame:
    """Read and validate the stored bars of ``ticker``; DataError when missing or unreadable,
    or when its bars fail validation (saying to delete the file and download it again)."""
    symbol = validate_ticker(ticker)
    path = store_path(data_dir, symbol)
    if path.is_dir():  # not a ticker never downloaded: no download can write its file there
        raise DataError(
            f"{symbol}: {path} is a folder, not a stored file; move it away, then run {download_command(path, symbol)}"
        )
    if not path.is_file():
        if blocker := fsio.file_in_the_way(path.parent):  # no ticker can be stored there either
            raise DataError(f"{symbol}: no stored data: {fsio.not_a_folder(blocker)}")
        if note := relative_note(data_dir):  # the wrong folder, most likely, not a ticker never downloaded
            raise DataError(f"{symbol}: no stored data at {path}{note}")
        raise DataError(f"{symbol}: no stored data at {path}; run {download_command(path, symbol)} first")
    raw = _read_store_raw(path, symbol)
    try:
        return _warn_open_off_range(validate_bars(raw, symbol), symbol)
    except DataError as exc:  # bad bars written by an older version, or edited by hand: no update can mend them
        error = _bad_stored_bars(symbol, path, str(exc).removeprefix(f"{symbol}: "))
        raise (NoUsableBars(str(error)) if isinstance(exc, NoUsableBars) else error) from None


def _bad_stored_bars(symbol: str, path: Path, why: str) -> DataError:
    """The error of a stored file whose bars no download can mend: delete it, download again."""
    return DataError(
        f"{symbol}: the stored file holds bad bars ({why}); delete {path} and run {download_command(path, symbol)}"
    )


def load_csv(data_dir: str | os.PathLike[str], ticker: str) -> pd.DataFrame:
    """Read and validate ``<data_dir>/<TICKER>.csv``; DataError when missing or unreadable, or
    when its bars are bad (naming the file, as every command that reads it then does). A
    warning names opens off the day's range and moves like a split the prices are not adjusted for."""
    symbol = validate_ticker(ticker)
    path = csv_file(data_dir, symbol)
    raw = read_csv_raw(data_dir, symbol)
    try:
        bars = validate_bars(raw, symbol, path=path)
    except DataError as exc:  # a bad bar is named by its date and column: say in which file, for every command
        if str(path) in str(exc):
            raise
        raise type(exc)(f"{exc}, in {path}") from None
    return _warn_split_like_moves(_warn_open_off_range(bars, symbol, path), symbol, path)


def save_store(data_dir: str | os.PathLike[str], ticker: str, df: pd.DataFrame) -> Path:
    """Write ``df`` as the stored bars of ``ticker``, atomically; returns the path.

    The file is written to a temp name and renamed, so a reader (or a crash) sees the old
    file or the new one; a failed write raises OSError and leaves the old file as it was.
    """
    path = store_path(data_dir, ticker)
    with fsio.atomic_writer(path, "wb") as f:
        df[COLUMNS].to_parquet(f, engine="pyarrow")
    return path


def merge_bars(old: pd.DataFrame, new: pd.DataFrame, *, rtol: float = REVISION_RTOL) -> tuple[pd.DataFrame, bool]:
    """Combine stored and fetched bars; fetched rows win on shared dates.

    Returns ``(merged, revised)``; ``revised`` is True when a shared date's (adjusted) close
    differs beyond ``rtol``, meaning the source re-adjusted its history (a dividend or a
    split rescales every earlier close). Other columns of the overlap are simply replaced
    by the fetched values: a corrected open/high/low or an amended volume of the last few
    sessions is not a reason to download the whole history again.
    """
    shared = old.index.intersection(new.index)
    revised = not np.allclose(
        old.loc[shared, "close"].to_numpy(dtype="float64"),
        new.loc[shared, "close"].to_numpy(dtype="float64"),
        rtol=rtol,
        atol=0.0,
    )
    merged = pd.concat([old[~old.index.isin(new.index)], new]).sort_index(kind="stable")
    return merged, revised


def _rescaled_to(old: pd.DataFrame, full: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """``old`` with the rows that the re-adjusted history ``full`` lacks (a session Yahoo no
    longer lists, or older than the history it gives) brought to its price scale, named in a
    warning: each row's prices times the ratio of the new close to the stored one at the next
    date both hold (the last such date for rows after it). A dividend or a split rescales every
    earlier price by one factor, so that ratio is the row's own; kept as they were, those rows
    would splice two price scales into one history (a jump of the split's size). Rows ``full``
    holds are replaced by it anyway."""
    lacking = ~old.index.isin(full.index)
    shared = old.index.intersection(full.index)
    if not lacking.any() or len(shared) == 0:
        return old
    ratio = (full.loc[shared, "close"].to_numpy(dtype="float64")) / old.loc[shared, "close"].to_numpy(dtype="float64")
    at = np.minimum(shared.searchsorted(old.index[lacking]), len(shared) - 1)
    out = old.copy()
    prices = ["open", "high", "low", "close"]
    out.loc[lacking, prices] = old.loc[lacking, prices].to_numpy(dtype="float64") * ratio[at][:, None]
    days = old.index[lacking]
    log.warning(
        "%s: %d stored bar(s) that the re-adjusted history lacks (%s to %s) were rescaled to its prices",
        symbol,
        len(days),
        days[0].date(),
        days[-1].date(),
    )
    return out


class StoreWriteError(ForecasterError):
    """The store could not be written (a full disk, a read-only store): no other ticker would
    fare better."""


@dataclass(frozen=True)
class UpdateResult:
    """What one ticker's update did."""

    ticker: str
    rows: int
    first: date
    last: date
    added: int
    refetched: bool


def update_ticker(
    data_dir: str | os.PathLike[str], ticker: str, fetch: Fetch, *, overlap_days: int = OVERLAP_SESSIONS
) -> UpdateResult:
    """Bring the stored bars of ``ticker`` up to date with ``fetch(ticker, start, end)``.

    A stored ticker is fetched from ``overlap_days`` sessions before its last bar; if the
    overlap shows a revision, the full history is fetched again. A new ticker gets its full
    history. Stored data is only ever replaced by a validated, merged superset, so a failed
    fetch leaves the file untouched and no stored row is ever lost. A failed write is a
    StoreWriteError (the end of the whole download, not just this ticker's failure).
    """
    symbol = validate_ticker(ticker)
    path = store_path(data_dir, symbol)
    old = load_store(data_dir, symbol) if path.exists() else None
    refetched = False
    if old is None:
        merged = validate_bars(fetch(symbol, None, None), symbol)
        added = len(merged)
    else:
        start = old.index[max(len(old) - overlap_days, 0)]
        fresh = validate_bars(fetch(symbol, start, None), symbol)
        _check_overlap(old, fresh, start, symbol, path)
        merged, revised = merge_bars(old, fresh)
        if revised:
            log.warning("%s: history was re-adjusted upstream; fetching it all again", symbol)
            full = validate_bars(fetch(symbol, None, None), symbol)
            merged, _ = merge_bars(_rescaled_to(old, full, symbol), full)
            refetched = True
        merged = validate_bars(merged, symbol)  # the seam between stored and fetched rows too
        added = int((~merged.index.isin(old.index)).sum())
    if old is None or refetched or added or not merged.equals(old):
        try:
            save_store(data_dir, symbol, merged)
        except OSError as exc:  # disk full, read-only store: no other ticker would fare better
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise StoreWriteError(f"cannot write {path}: {reason}; the stored file is unchanged") from None
    return UpdateResult(symbol, len(merged), merged.index[0].date(), merged.index[-1].date(), added, refetched)


def _check_overlap(old: pd.DataFrame, fresh: pd.DataFrame, start: pd.Timestamp, symbol: str, path: Path) -> None:
    """DataError when none of the stored sessions re-fetched from ``start`` came back: Yahoo's
    series of the symbol is no longer the stored one (a delisted symbol given to another
    security, say), and appending it would splice two series across a gap without a word."""
    if fresh.index.isin(old.index).any():
        return
    tail = old.index[old.index >= start]
    raise DataError(
        f"{symbol}: Yahoo's bars no longer include the stored sessions {tail[0].date()} to {tail[-1].date()} "
        f"(its bars run from {fresh.index[0].date()} to {fresh.index[-1].date()}): the symbol may now name "
        f"another security; the stored file is unchanged. To store Yahoo's series instead, delete {path} "
        f"and run {download_command(path, symbol)}"
    )


class FailureKind(StrEnum):
    """Why a ticker failed to download (each compares equal to its plain string)."""

    NETWORK = "network"  # Yahoo could not be reached, or did not answer in time
    RATE_LIMIT = "rate_limit"  # Yahoo answered HTTP 429
    SERVER = "server"  # Yahoo answered with a server error (HTTP 5xx)
    NO_DATA = "no_data"  # Yahoo has no bars for the symbol (unknown or delisted)
    DATA = "data"  # an invalid symbol, or bars that failed validation

    @property
    def temporary(self) -> bool:
        """True for failures worth retrying later (the network, Yahoo's rate limit or its server errors)."""
        return self in (FailureKind.NETWORK, FailureKind.RATE_LIMIT, FailureKind.SERVER)

    @classmethod
    def of(cls, exc: Exception) -> FailureKind:
        if isinstance(exc, RateLimitError):
            return cls.RATE_LIMIT
        if isinstance(exc, ServerError):
            return cls.SERVER
        if isinstance(exc, NetworkError):
            return cls.NETWORK
        if isinstance(exc, TickerError):
            return cls.NO_DATA
        return cls.DATA


@dataclass
class DownloadReport:
    """Per-ticker outcome of :func:`download`.

    ``ok`` maps each updated ticker to its result; ``failed`` maps each failed ticker to why,
    without the ticker's name (``"cannot reach Yahoo (...)"``); ``kinds`` says what kind of
    failure each one was.
    """

    ok: dict[str, UpdateResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, FailureKind] = field(default_factory=dict)

    def fail(self, symbol: str, error: Exception | str, kind: FailureKind) -> None:
        """Record a failure; a message that starts with ``"<symbol>: "`` loses that prefix."""
        self.failed[symbol] = str(error).removeprefix(f"{symbol}: ")
        self.kinds[symbol] = kind

    @property
    def temporary(self) -> bool:
        """True when something failed and every failure was the network or a rate limit."""
        return bool(self.failed) and all(self.kinds[s].temporary for s in self.failed)

    @property
    def exit_code(self) -> int:
        """The process exit code (SPEC §2): 0 when nothing failed; 3 when some tickers were
        downloaded and some failed; 75 when none was and every failure was the network or a
        rate limit (retry later); 1 when none was for any other reason."""
        if not self.failed:
            return EXIT_OK
        if self.ok:
            return EXIT_PARTIAL
        return EXIT_TEMPFAIL if self.temporary else EXIT_ERROR

    def failure_lines(self) -> list[str]:
        """One ``"<TICKER>: <reason>"`` line per failed ticker."""
        return [f"{symbol}: {reason}" for symbol, reason in self.failed.items()]

    def summary(self) -> str:
        """One line on the whole download, e.g. ``"2 of 3 tickers downloaded, 1 failed"``."""
        tried = len(self.ok) + len(self.failed)
        if not self.failed:
            return f"{len(self.ok)} ticker(s) downloaded"
        if self.ok:
            return f"{len(self.ok)} of {tried} tickers downloaded, {len(self.failed)} failed"
        later = "; retry later" if self.temporary else ""
        return f"no ticker downloaded ({len(self.failed)} failed){later}"

    def as_dict(self) -> dict[str, Any]:
        """``{"ok": {ticker: result fields}, "failed": {ticker: reason}}``, for JSON output."""
        return {"ok": {s: vars(r) for s, r in self.ok.items()}, "failed": dict(self.failed)}


def download(
    tickers: Iterable[str],
    data_dir: str | os.PathLike[str],
    *,
    session: Any = None,
    fetch: Fetch | None = None,
    lock_timeout: float = 0.0,
    calendar: str = DEFAULT_CALENDAR,
) -> DownloadReport:
    """Fetch and store daily bars for each ticker, incrementally, under the store lock.

    Per-ticker failures are collected in the report, not raised. Once ``BREAKER_AFTER``
    tickers in a row have failed with network or rate-limit errors, the rest are not tried
    and are reported as failing the same way (a circuit breaker: no paying retries x N
    tickers while Yahoo is unreachable). ``calendar`` is the exchange calendar whose close
    says whether today's bar is final (:func:`forecaster.sources.drop_unfinished_session`);
    it is not used with ``fetch``. Raises LockBusy when another process holds
    ``<data_dir>/store/.lock`` (after waiting ``lock_timeout`` seconds), and
    ForecasterError when the store cannot be written before any ticker was stored; once one
    was, a failed write fails that ticker and the ones after it in the report (a partial
    download).
    """
    fsio.refuse_empty_folders(data_dir=data_dir, required=("data_dir",))  # not the current folder
    # read as -t reads them: one ticker or a comma-separated list, not its letters; none named
    # ([], "", [""]) is refused, as `-t ""` is: a retry of an empty list of failed tickers must
    # not pass for a download; nor None, the default tickers, which only a config holds
    tickers = given_tickers(tickers, default=False)
    report = DownloadReport()
    symbols: list[str] = []
    for raw in tickers:
        try:
            symbol = validate_ticker(raw)
        except TickerError as exc:
            report.fail(str(raw), exc, FailureKind.DATA)
            continue
        if symbol not in symbols:
            symbols.append(symbol)
    if not symbols:
        return report
    if blocker := fsio.file_in_the_way(store_dir(data_dir)):  # said once, before anything is set up there
        raise StoreWriteError(f"cannot store bars in {store_dir(data_dir)}: {fsio.not_a_folder(blocker)}")
    if fetch is None:
        check_calendar(calendar)  # before any ticker is written
        configure_yfinance(Path(data_dir) / ".yfinance-cache")

        def fetch_yahoo(t: str, start: DateLike | None, end: DateLike | None) -> pd.DataFrame:
            return fetch_with_retry(t, start, end, session=session, calendar=calendar)

        fetch = fetch_yahoo

    with fsio.file_lock(store_dir(data_dir) / ".lock", lock_timeout):
        fsio.remove_stale_temps(store_dir(data_dir))
        streak: list[FailureKind] = []  # kinds of the latest failures in a row
        for i, symbol in enumerate(symbols):
            if len(streak) >= BREAKER_AFTER:
                _skip_the_rest(report, symbols[i:], streak)
                break
            try:
                report.ok[symbol] = update_ticker(data_dir, symbol, fetch)
            except (DataError, NetworkError, RateLimitError) as exc:
                report.fail(symbol, exc, FailureKind.of(exc))  # said once, by whoever reads the report
            except StoreWriteError as exc:
                if not report.ok:  # nothing written yet: the one error of the download
                    raise
                # the tickers stored so far are a partial download, reported with the rest
                report.fail(symbol, exc, FailureKind.DATA)
                for rest in symbols[i + 1 :]:
                    report.fail(rest, "not tried: the store could not be written", FailureKind.DATA)
                break
            kind = report.kinds.get(symbol)
            streak = streak + [kind] if kind is not None and kind.temporary else []
    return report


def _skip_the_rest(report: DownloadReport, rest: list[str], streak: list[FailureKind]) -> None:
    """The circuit breaker: report ``rest`` as failing like the ``streak`` before them."""
    if all(k == FailureKind.RATE_LIMIT for k in streak):
        kind, why = FailureKind.RATE_LIMIT, "Yahoo keeps rate-limiting"
    elif all(k == FailureKind.SERVER for k in streak):
        kind, why = FailureKind.SERVER, "Yahoo keeps answering with server errors"
    else:
        kind, why = FailureKind.NETWORK, "the network looks down"
    log.warning("%d tickers in a row failed (%s): not trying the %d left", len(streak), why, len(rest))
    for symbol in rest:
        report.fail(symbol, f"not tried: {why}", kind)


def check_source(source: object) -> None:
    """ConfigError for a ``source`` that is none of :data:`forecaster.choices.SOURCES`."""
    if source not in SOURCES:
        raise ConfigError(f"unknown source {_shown(source)}; expected {' or '.join(map(repr, SOURCES))}")


def load_bars(
    source: str,
    data_dir: str | os.PathLike[str],
    tickers: Iterable[str],
    *,
    tail: int | None = None,
    warn_of_gaps: bool = True,
    until_today: bool = False,
    unusable: dict[str, str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Validated bars per ticker from ``source``: "csv" (``<data_dir>/<T>.csv``) or "yahoo"
    (the store under ``<data_dir>/store``). The first failing ticker raises its DataError;
    with an ``unusable`` dict, a ticker with no usable bars (:class:`NoUsableBars`) is left out
    instead, and its reason recorded there under its symbol.

    With ``tail``, each frame holds only its last ``tail`` rows, for callers that need recent
    history only; the whole history is still read and validated. ``warn_of_gaps=False``: no
    warning of missing sessions, for a second read of bars the command has already warned of.
    ``until_today=True``: a ticker with bars dated after today (a mistyped year) fails too,
    naming the first of them and its file, for the callers that read every bar (train,
    evaluate, tune); predict and score name such bars in their own way.
    """
    check_source(source)
    if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int) or tail < 1):
        raise ValueError(f"tail must be a positive integer or None, got {tail!r}")
    tickers = given_tickers(tickers, default=False)  # as download reads them: none named, or None, is refused
    load = load_csv if source == "csv" else load_store
    bars: dict[str, pd.DataFrame] = {}
    for raw in tickers:
        symbol = validate_ticker(raw)
        try:
            df = load(data_dir, symbol)
        except NoUsableBars as exc:
            if unusable is None:
                raise
            unusable[symbol] = str(exc).removeprefix(f"{symbol}: ")
            continue
        if until_today and (ahead := dated_after_today(df.index)):
            if source == "csv":
                raise DataError(f"{symbol}: {ahead}, in {csv_file(data_dir, symbol)}; fix the data")
            raise _bad_stored_bars(symbol, store_path(data_dir, symbol), ahead)
        if warn_of_gaps:
            warn_gaps(df, symbol)
        bars[symbol] = df if tail is None else df.iloc[-tail:]
    return bars


def warn_gaps(df: pd.DataFrame, ticker: str) -> None:
    """One warning when consecutive bars are more than ``GAP_WARN_DAYS`` calendar days apart:
    sessions missing from the data, which would be read as if the bars were consecutive (a
    window across the gap, a "next session" weeks later). The bars are left as they are."""
    days = df.index.values.astype("datetime64[D]").view(np.int64)  # whatever the index's resolution
    steps = np.diff(days)
    wide = np.flatnonzero(steps > GAP_WARN_DAYS)
    if not wide.size:
        return
    worst = int(wide[np.argmax(steps[wide])])
    log.warning(
        "%s: %d gap(s) of more than %d days between consecutive bars, the largest %d days from %s to %s: "
        "sessions missing from the data are read as if the bars were consecutive",
        ticker,
        wide.size,
        GAP_WARN_DAYS,
        steps[worst],
        df.index[worst].date(),
        df.index[worst + 1].date(),
    )
