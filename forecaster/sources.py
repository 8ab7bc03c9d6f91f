"""Price sources (CSV files and Yahoo via yfinance), both giving one normalised frame.

The normalised frame has float64 columns ``open, high, low, close, volume`` and a tz-naive
``DatetimeIndex`` named ``date`` (datetime64[ns], midnight of each session date). A fast reader
may give the same bars as plain arrays instead (:class:`PlainBars`). Sorting, de-duplication
and sanity checks are ``store.validate_bars``'s job, not this module's.

yfinance and pyarrow are imported inside functions only, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import random
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from forecaster.errors import DataError, NetworkError, NoUsableBars, RateLimitError, ServerError, TickerError
from forecaster.sessions import DEFAULT_CALENDAR, is_open_session_unfinished
from forecaster.tickers import ticker_file, validate_ticker

COLUMNS = ["open", "high", "low", "close", "volume"]
DATE_COLUMNS = ("date", "datetime", "timestamp")
ADJ_CLOSE_COLUMNS = ("adj close", "adjclose", "adjusted close")
_MISSING = ["nan", "na", "n/a", "null", "none", "-"]

# pandas 3 reads every decimal to the nearest float and deprecates float_precision; before 3
# the default parser is one bit off now and then, and round_trip is the exact one
_EXACT_FLOATS: dict[str, str] = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
# The earliest and latest dates a datetime64[ns] index can hold, with a margin.
FIRST_DAY = np.datetime64("1678-01-01", "D")
LAST_DAY = np.datetime64("2261-12-31", "D")
YEARS_HELD = f"{FIRST_DAY.astype(object).year}-{LAST_DAY.astype(object).year}"
MAX_DATE_LENGTH = 100
"""Characters a date field may have: the longest way of writing a date and time with its zone
("Wednesday, 31 December 2025 16:00:00.000000 America/Argentina/ComodRivadavia") is 78. Longer
text is no date, and the parser that reads dates in other formats takes a time that grows with
the square of its length (93 s for a field of a million characters)."""
MAX_COLUMNS = 1000
"""Fields a CSV file's header may have: a price file has a handful, a spreadsheet's export a few
empty ones more. A header of a million commas (a 1 MB file) would be read as that many columns
of every row."""
# pandas reads an integer this large or larger as text, not as a number: such a CSV value is
# left to the careful reader, which names it.
_TEXT_NUMBER = 1e18

# Yahoo: one request, one ticker.
FETCH_TIMEOUT_S = 10.0  # per request: a daily history comes back in about a second when Yahoo is up
RETRY_ATTEMPTS = 4  # tries in all for one ticker: rides out a short outage, gives up on a long one
RETRY_BASE_DELAY_S = 1.0  # the first backoff; it doubles with each retry, with full jitter
RETRY_MAX_DELAY_S = 60.0  # no single wait longer than a minute
RATE_LIMIT_SLOWDOWN = 5  # an HTTP 429 needs a longer pause than a dropped connection
NO_DATA_RETRIES = 1  # one more try for "no data": a 5xx replayed from yfinance's cache is unseen
TICKER_DEADLINE_S = 90.0  # hard limit per ticker, retries included, so no ticker can hold a cron run
# Today's bar: when its session is over.
CLOSE_GRACE_MINUTES = 15.0  # the closing auction's prints reach Yahoo a few minutes after the bell
FALLBACK_CLOSE_HOUR = 18  # local hour by which any exchange has closed, for a day the calendar does not trade

log = logging.getLogger("forecaster")

DateLike = str | date | datetime | pd.Timestamp


class PlainBars(NamedTuple):
    """Bars read straight into arrays by a fast reader: not sorted, de-duplicated or checked.

    ``dates`` is a tz-naive datetime64 array (unit s, ms, us or ns); ``columns`` holds one
    float64 array per name of ``COLUMNS``, in that order.
    """

    dates: np.ndarray
    columns: list[np.ndarray]

    def frame(self) -> pd.DataFrame:
        """The same bars as a frame (index named ``date``, in the arrays' own time unit)."""
        index = pd.DatetimeIndex(self.dates, name="date")
        return pd.DataFrame(dict(zip(COLUMNS, self.columns)), index=index)


# What a reader gives: a frame, or the arrays of a fast reader.
RawBars = PlainBars | pd.DataFrame


def empty_bars() -> pd.DataFrame:
    """A normalised frame with no rows."""
    index = pd.DatetimeIndex([], dtype="datetime64[ns]", name="date")
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS}, index=index)


# --------------------------------------------------------------------------- CSV


def _header_key(name: object) -> str:
    """'  Adj_Close ' -> 'adj close': case, surrounding space and '_' vs ' ' do not matter, nor
    do a dot or the stars of a footnote ('Adj. Close', 'Adj Close**')."""
    return " ".join(re.sub(r"[_.*]", " ", str(name)).split()).lower()


# A time with a UTC offset, as in yfinance's own CSV export: keep the local wall time so the
# date stays the exchange's session date (dropping the offset, never converting it).
_OFFSET_RE = re.compile(
    r"^(.*\d:\d\d(?::\d\d(?:\.\d+)?)?(?:\s*[AaPp][Mm])?)\s*(?:Z|UTC|GMT|[+-]\d\d(?::?\d\d)?)$"
)  # after a time, in any layout: "2024-01-02T22:00-05:00", "Jan 02 2024 22:00 -0500"


# A date whose year has two digits (01/07/22, 1.7.22 16:00, 1-Jul-22), which pandas guesses no
# format for; and one whose two-digit year comes first (22-07-01, as some exports write them).
_SHORT_YEAR_RE = re.compile(r"^(\d{1,2}([/.-])(?:\d{1,2}|[A-Za-z]{3,9})\2)(\d\d)(?!\d)")
_SHORT_YEAR_FIRST_RE = re.compile(r"^(\d\d)([/.-])(\d{1,2}\2\d{1,2})(?!\d)")

# A date without a day ("2015", "2015-03", "Jan 2015"), which pandas reads as the first of its
# year or month: its date part (before any time) has fewer than three fields, or two and no
# month name, and is not a compact YYYYMMDD.
_TIME_RE = re.compile(r"[T\s]+\d{1,2}:\d\d.*$")
_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_MONTH_RE = re.compile(rf"(?i)\b(?:{_MONTHS})[a-z]*\.?\b|\d(?:{_MONTHS})")
_THREE_NUMBERS_RE = re.compile(r"\d+[-/.]\d+[-/.]\d")  # a date of three fields: it has a day

# The orders of a date's fields, as they are preferred when several read a whole file: month
# first (as pandas reads 01/02/2024), day first, then year first (a two-digit year only).
_ORDERS = ("month", "day", "year")


def _guess_format(text: str, order: str) -> str | None:
    """The strptime format of the date ``text`` with its fields in ``order`` (one of
    ``_ORDERS``); None when pandas cannot tell or ``text`` cannot be in that order.
    A two-digit year is guessed as if it had four, then read as two."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pandas' note on the day-first order it saw
        if order == "year":
            short = _SHORT_YEAR_FIRST_RE.match(text)
            if not short:
                return None
            sep = short[2]
            long = guess_datetime_format(f"20{short[1]}{sep}{short[3]}{text[short.end() :]}")
            ok = long is not None and long.startswith(f"%Y{sep}%m{sep}%d") and long.count("%Y") == 1
            return long.replace("%Y", "%y") if ok else None
        fmt = guess_datetime_format(text, dayfirst=order == "day")
        short = _SHORT_YEAR_RE.match(text)
        if fmt is None and short:
            long = guess_datetime_format(f"{short[1]}20{short[3]}{text[short.end() :]}", dayfirst=order == "day")
            if long is not None and long.count("%Y") == 1:
                fmt = long.replace("%Y", "%y")
    return fmt


def _in_date_order(parsed: pd.Series) -> bool:
    """True when the dates run one way down the file, oldest first or newest first."""
    days = pd.Index(parsed.dropna())
    return bool(days.is_monotonic_increasing or days.is_monotonic_decreasing)


def _local_days(parsed: pd.Series) -> np.ndarray:
    """The dates of ``parsed`` as datetime64[D], each the local date where it was written
    ("Jan 02 2024 22:00 -0500" is 2 January, as its ISO form is, not UTC's 3 January)."""
    stamps = pd.DatetimeIndex(parsed)
    if stamps.tz is not None:
        stamps = stamps.tz_localize(None)
    return stamps.to_numpy().astype("datetime64[D]")


def _typical_gap(parsed: pd.Series) -> float:
    """The median number of days between consecutive dates (0 for fewer than two): daily bars
    read in the wrong order of their fields lie months or years apart."""
    days = _local_days(parsed.dropna()).astype(np.int64)
    return float(np.median(np.abs(np.diff(days)))) if len(days) > 1 else 0.0


def _layout(text: str) -> str:
    """A date's layout: its runs of digits and of letters as 9 and a ('1-Jul-22' -> '9-a-9')."""
    return re.sub(r"\d+", "9", re.sub(r"[A-Za-z]+", "a", text))


def _dates_in_one_format(local: pd.Series, iso: pd.Series) -> tuple[pd.Series, object]:
    """``local`` (the date fields, not all ISO) read in one format for the whole file, NaT
    where a date is not in it; and the label of the first date it read (None when none was).

    The formats tried: ISO (``iso``, ``local`` read as such) and the first date's, in each
    order of its fields (``_ORDERS``). Of those that read every date, one that gives the dates
    in date order wins (a file of daily bars is written in date order: read day first, the
    22-07-29, 22-08-01... of a year-first export run 2029-07-22, 2001-08-22...); of several,
    the one whose consecutive dates lie closest together (22-07-01, 22-07-05 read day first
    are in date order too, years apart), then the first in ``_ORDERS``; the first in
    ``_ORDERS`` when none is in date order. When no format reads every date, the
    file's is the one that reads the most (those of the first date it leaves unread are tried
    too), and the dates in another format are NaT. A layout pandas names no format for is
    read date by date, as long as every date has that layout.

    Parsing each date on its own would read "10/01/2024" month first and "15/01/2024" day
    first in the same file, scrambling a day-first export without a word.
    """
    dated = local[local != ""]
    if dated.empty:
        return iso, None
    readings = {"ISO8601": iso}
    for round_ in range(2):
        if round_:  # the formats of the first date the best reading so far leaves unread
            best = max(readings.values(), key=lambda p: int(p.notna().sum()))
            text = dated[best[dated.index].isna()].iloc[0]
        else:
            text = dated.iloc[0]
        for order in _ORDERS:
            fmt = _guess_format(text, order)
            if fmt is not None and fmt not in readings:
                readings[fmt] = pd.to_datetime(local, errors="coerce", format=fmt)
        whole = [p for p in readings.values() if p[dated.index].notna().all()]
        if whole:
            ordered = [p for p in whole if _in_date_order(p)]
            return (min(ordered, key=_typical_gap) if ordered else whole[0]), dated.index[0]
    best = max(readings.values(), key=lambda p: int(p.notna().sum()))
    if best.notna().any():
        return best, best.index[best.notna().to_numpy()][0]
    parsed = pd.to_datetime(local, errors="coerce", format="mixed")
    other = dated.map(_layout) != _layout(dated.iloc[0])
    if other.any():
        parsed[other.index[other.to_numpy()][0]] = pd.NaT
    return parsed, dated.index[0]


def _is_a_date(text: str) -> bool:
    """True when ``text`` reads as a date on its own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pd.notna(pd.to_datetime(pd.Series([text]), errors="coerce", format="mixed").iloc[0])


def _beyond_nanoseconds(text: str) -> bool:
    """True when ``text`` is a date outside the years a nanosecond timestamp holds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            stamp = pd.Timestamp(text)  # a coarser unit than nanoseconds where it has to
        except (ValueError, OverflowError):
            return False
    if pd.isna(stamp):
        return False
    day = np.datetime64(f"{stamp.year:04d}-{stamp.month:02d}-{stamp.day:02d}", "D")
    return bool(day < FIRST_DAY or day > LAST_DAY)


def _outside_years(path: Path, value: str, pos: int, lines: list[int] | None) -> DataError:
    return DataError(
        f"{path}: date {value[:40]!r} ({where_row(pos, lines)}) is outside the years {YEARS_HELD} "
        "that a date can take; a mistyped year?"
    )


def _parse_dates(raw: pd.Series, path: Path, blank: np.ndarray, lines: list[int] | None = None) -> pd.DatetimeIndex:
    """The dates of ``raw``, all in one format; NaT on the ``blank`` rows (every field empty),
    which the validator then drops with a warning. Any other row without a date in the file's
    format is a DataError, naming its line (``lines``: see :func:`row_lines`)."""
    text = raw.fillna("").astype(str).str.strip().reset_index(drop=True)
    if (long := np.flatnonzero(text.str.len().to_numpy() > MAX_DATE_LENGTH)).size:
        pos = int(long[0])
        raise DataError(
            f"{path}: unparseable date {text.iloc[pos][:40]!r}... ({where_row(pos, lines)}), "
            f"{len(text.iloc[pos])} characters long"
        )
    local = text.str.replace(_OFFSET_RE, r"\1", regex=True)[~blank]
    try:
        parsed = pd.to_datetime(local, errors="coerce", format="ISO8601")
        example = None
        if parsed.isna().any():
            parsed, example = _dates_in_one_format(local, parsed)
    except ValueError:  # pandas refuses dates with a time zone among dates without one
        _refuse_mixed_zones(local, text, path, lines)
        raise
    bad = parsed.isna()
    if bad.any():
        pos = int(bad.index[bad.to_numpy()][0])
        value = text.iloc[pos]
        if value and example is not None and _is_a_date(local[pos]):
            raise DataError(
                f"{path}: date {value[:40]!r} ({where_row(pos, lines)}) is not in the file's date format, that of "
                f"{text.iloc[example][:40]!r} ({where_row(int(example), lines)}); write every date of a file one way"
            )
        if value and _beyond_nanoseconds(local[pos]):  # pandas before 3 parses such a date as NaT
            raise _outside_years(path, value, pos, lines)
        what = f"unparseable date {value[:40]!r}" if value else "empty date"
        raise DataError(f"{path}: {what} ({where_row(pos, lines)})")
    _refuse_dates_without_a_day(local, path, lines)
    days = _local_days(parsed)
    outside = (days < FIRST_DAY) | (days > LAST_DAY)
    if outside.any():  # a mistyped year (2925, 0025): no nanosecond timestamp holds it
        pos = int(parsed.index[np.flatnonzero(outside)[0]])
        raise _outside_years(path, text.iloc[pos], pos, lines)
    _refuse_intraday(parsed, days, text, path, lines)
    dates = np.full(len(text), np.datetime64("NaT", "ns"), dtype="datetime64[ns]")
    dates[~blank] = days.astype("datetime64[ns]")
    return pd.DatetimeIndex(dates)


def _refuse_dates_without_a_day(local: pd.Series, path: Path, lines: list[int] | None) -> None:
    """A DataError naming the first date of ``local`` written without a day (a year, or a year
    and a month): pandas reads "2015" as 1 January 2015, which would make yearly or monthly
    figures daily bars.

    Dates that begin with three numbers (2015-03-02, 03/02/2015) have a day whatever follows:
    only the others are looked at closely, which keeps a long file's check cheap."""
    local = local[~local.str.match(_THREE_NUMBERS_RE, na=False).to_numpy(dtype=bool)]
    if local.empty:
        return
    day_part = local.str.replace(_TIME_RE, "", regex=True)
    numbers = day_part.str.count(r"\d+")
    named = day_part.str.contains(_MONTH_RE, regex=True)
    whole = (numbers >= 3) | ((numbers == 2) & named) | day_part.str.fullmatch(r"\d{8}")
    if not whole.all():
        pos = int(whole.index[~whole.to_numpy()][0])
        raise DataError(
            f"{path}: date {local[pos][:40]!r} ({where_row(pos, lines)}) has no day; daily bars need "
            "a year, a month and a day in every date"
        )


def _has_zone(text: str) -> bool | None:
    """True when the date ``text`` reads with a time zone, False without one, None when it
    does not read as a date."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(pd.Series([text]), errors="coerce", format="mixed")
    return None if parsed.isna().iloc[0] else parsed.dt.tz is not None


def _refuse_mixed_zones(local: pd.Series, text: pd.Series, path: Path, lines: list[int] | None) -> None:
    """DataError naming the first date that has a time zone where the file's first date has
    none, or none where it has one (left after :data:`_OFFSET_RE` took the offsets of a
    time: ``2024-01-03 00:00-05:00Z``), which pandas cannot read as one column of dates."""
    first = None
    zones: dict[str, bool] = {}  # by layout: the dates of a file are written in one or two
    for pos, value in local[local != ""].items():
        layout = _layout(value)
        zone = zones.get(layout)
        if zone is None and (zone := _has_zone(value)) is not None:
            zones[layout] = zone
        if zone is None:
            continue
        if first is None:
            first = (pos, zone)
        elif zone != first[1]:
            raise DataError(
                f"{path}: date {text.iloc[pos][:40]!r} ({where_row(int(pos), lines)}) is not in the file's date "
                f"format, that of {text.iloc[first[0]][:40]!r} ({where_row(int(first[0]), lines)}); "
                "write every date of a file one way"
            )


def _refuse_intraday(parsed: pd.Series, days: np.ndarray, text: pd.Series, path: Path, lines) -> None:
    """DataError for a file of intraday bars (a day's rows at several times of day): read as
    daily bars, each day would be its last bar, with that bar's volume. Daily bars stamped
    with one time of day (a UTC offset's midnight, a close at 16:00) are no such file."""
    stamps = pd.DatetimeIndex(parsed)
    if stamps.tz is not None:
        stamps = stamps.tz_localize(None)
    clock = (stamps - stamps.normalize()).to_numpy()
    if not clock.any():
        return
    first = pd.Series(clock, index=days).groupby(level=0).transform("first").to_numpy()
    if not (other := np.flatnonzero(clock != first)).size:
        return
    pos = int(parsed.index[other[0]])
    earlier = int(parsed.index[np.flatnonzero((days == days[other[0]]) & (clock == first[other[0]]))[0]])
    raise DataError(
        f"{path}: {text.iloc[earlier][:40]!r} ({where_row(earlier, lines)}) and {text.iloc[pos][:40]!r} "
        f"({where_row(pos, lines)}) are bars of one day at two times: intraday bars, where daily ones (one "
        "row a session) are read; resample them to daily bars"
    )


def read_csv_bars(data_dir: str | os.PathLike[str], ticker: str) -> pd.DataFrame:
    """Read ``<data_dir>/<TICKER>.csv`` into a normalised frame (unsorted, unvalidated).

    The header is case-insensitive; the date column may be called date, datetime or
    timestamp. With an "Adj Close" column, open/high/low are scaled by adj_close/close and
    close becomes adj_close (as yfinance's auto_adjust does). Raises DataError naming the
    file and the problem.
    """
    bars = read_csv_raw(data_dir, ticker)
    return bars.frame() if isinstance(bars, PlainBars) else bars


def read_csv_raw(data_dir: str | os.PathLike[str], ticker: str) -> RawBars:
    """:func:`read_csv_bars`'s bars, as arrays when the fast reader could read the file."""
    path = csv_file(data_dir, ticker)
    if path.is_dir():  # not a missing file: one of that name is there, as a folder
        raise DataError(f"{validate_ticker(ticker)}: {path} is a folder, not a CSV file")
    if not path.is_file():
        if path.is_symlink():  # there, but a link to nothing
            raise DataError(f"{validate_ticker(ticker)}: {path} is a link to {os.readlink(path)}, which does not exist")
        raise DataError(f"{validate_ticker(ticker)}: no CSV file at {path}{relative_note(data_dir)}")
    plain = _plain_csv(path)
    return plain if plain is not None else _read_csv_frame(path)


def csv_file(data_dir: str | os.PathLike[str], ticker: str) -> Path:
    """``<data_dir>/<TICKER>.csv``, or else the one file there whose name differs from it only
    in case (``aapl.csv``, as it would be read on a case-insensitive disk). DataError when
    several do, as no one of them is the ticker's more than the others."""
    path = ticker_file(data_dir, ticker, ".csv")
    if path.is_file():
        return path
    try:
        named = [p for p in path.parent.iterdir() if p.name.lower() == path.name.lower()]
    except OSError:  # no such folder, or not one that can be listed: named as missing
        return path
    found = sorted(p for p in named if p.is_file())
    if not found and (dangling := sorted(p for p in named if p.is_symlink() and not p.exists())):
        return dangling[0]  # a link to nothing, which the reader names as one

    def same(p: Path) -> tuple[int, int]:
        st = p.stat()
        return st.st_dev, st.st_ino

    if len({same(p) for p in found}) < len(found):  # one file under several names (links): that file
        found = sorted({same(p): p for p in sorted(found, reverse=True)}.values())
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(f"{validate_ticker(ticker)}: several CSV files in {path.parent} could be its: {names}")
    return found[0] if found else path


def relative_note(data_dir: str | os.PathLike[str], absolute: bool = False) -> str:
    """For a relative data folder that does not exist here: where it was looked for (a run
    keeps the data folder it was given, read from the directory a command runs in, so a cron
    job started elsewhere looks in the wrong place). With ``absolute``, an absolute folder that
    is not there is named too (moved, deleted, or a disk not mounted). Empty otherwise."""
    folder = Path(data_dir)
    if folder.is_dir():
        return ""
    if folder.is_absolute():
        if not absolute:
            return ""
        return (
            f" (the data folder {folder} is not there: moved, deleted or on a disk not mounted; "
            "pass --data-dir to use another)"
        )
    return (
        f" (the data folder {folder} is relative to the current directory, {Path.cwd()}, and is not there: "
        "run from the folder it is in, or pass --data-dir)"
    )


def _read_csv_frame(path: Path) -> pd.DataFrame:
    """The careful reader: pandas, with each problem named. Every check and the parse read one
    copy of the file's text (read once), so a file written meanwhile cannot pass a check in one
    state and be parsed in another."""
    try:
        text = _whole_lines(path, path.read_bytes().decode("utf-8-sig"))
        header = re.split(r"\r\n?|\n", text, maxsplit=1)[0]  # lines may end in \r alone (old Mac files)
        if "," not in header:
            for sep, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
                if sep in header:
                    raise DataError(f"{path}: looks like {name}-separated; expected commas")
        # pandas renames a repeated name (Close, Close.1), which would read the first silently
        fields = next(csv.reader([header], skipinitialspace=True), [])
        if len(fields) > MAX_COLUMNS:
            raise DataError(
                f"{path}: its header has {len(fields)} fields, not a price file's few (at most {MAX_COLUMNS})"
            )
        keys = [k for k in map(_header_key, fields) if k]
        if dupes := _repeated(keys):
            raise DataError(f"{path}: duplicate column(s) {', '.join(dupes)}")
        _refuse_lines_of_wrong_length(path, text)
        clean = _read_clean_csv(path, text)
        if clean is not None:
            return clean
        with warnings.catch_warnings():
            # A row longer than the header would silently become the index, or lose fields.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(io.StringIO(text), dtype=str, skipinitialspace=True, index_col=False)
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: some rows have more fields than the header") from None
    except pd.errors.EmptyDataError:
        raise NoUsableBars(f"{path}: the file is empty") from None  # no bars, as a header alone
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as exc:  # e.g. no permission to read it: this ticker fails, the others go on
        raise DataError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except (pd.errors.ParserError, ValueError, csv.Error) as exc:  # csv: a header field over 128 KiB
        reason = " ".join(str(exc).split())
        raise DataError(f"{path}: not a readable CSV file ({reason})") from None

    lines = row_lines(path, len(raw), text)
    if _is_yfinance_export(raw):  # its two lines below the header are a header too
        raw = raw.iloc[2:].reset_index(drop=True).rename(columns={raw.columns[0]: "Date"})
        lines = lines[2:] if lines is not None else None
    keys, date_col, adj_col = _columns(raw, path)
    raw.columns = keys
    if raw.empty:
        raise NoUsableBars(f"{path}: has a header but no rows")

    # a row of empty fields (",,,,,", as spreadsheets export the rows below the data) is a
    # blank line: dropped, with the validator's warning
    index = _parse_dates(raw[date_col], path, raw.isna().all(axis=1).to_numpy(), lines)
    values: dict[str, np.ndarray] = {}
    for col in COLUMNS + ([adj_col] if adj_col else []):
        if col not in raw.columns:  # no volume column: every row's volume is missing (validation sets it to 0)
            values[col] = np.full(len(raw), np.nan)
            continue
        text = raw[col].str.strip()
        if col == "volume":  # 1.23M, 950.20K: volumes as some sites write them (Investing's "Vol.")
            text = _volume_units(text)
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
        if _EXACT_FLOATS:  # pandas before 3 reads some decimals one bit off the nearest float: again, exactly
            took = numbers.notna().to_numpy()
            numbers[took] = text[took].astype("float64")
        missing_marks = text.str.lower().isin(_MISSING)
        bad = text.notna() & (text != "") & numbers.isna() & ~missing_marks
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: non-numeric value {text.iloc[pos][:40]!r} in column {col} "
                f"on {index[pos].date()} ({where_row(pos, lines)})"
            )
        values[col] = numbers.to_numpy()
    bad = _bad_adjustments(values, adj_col)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: {adj_col} {raw[adj_col].iloc[pos].strip()[:40]} on {index[pos].date()} ({where_row(pos, lines)}) "
            "is not a finite positive price"
        )
    return _assemble(values, index, adj_col)


def _whole_lines(path: Path, text: str) -> str:
    """``text`` without a last line that has no line end, when lines above it have one: a file
    read while it was being written ends that way, its last bar cut anywhere (``...,132`` for a
    volume of 13269200, a close of ``44.9`` for 44.970001), which no check could tell from a
    bar. It is left out with a warning naming the file and the line; a file written whole ends
    its last line (a writer that does not, should)."""
    if not text or text.endswith(("\n", "\r")):
        return text
    cut = max(text.rfind("\n"), text.rfind("\r"))
    if cut < 0 or not text[cut + 1 :].strip(" \t"):  # the header alone, or spaces after the last line end
        return text
    line = len(text[: cut + 1].splitlines()) + 1
    log.warning(
        "%s: line %d, the last, has no line end, as a file read while it is being written has: it was not read "
        "(end a file's last line, and write it whole to another name, then move it into place)",
        path,
        line,
    )
    return text[: cut + 1]


_VOLUME_UNITS = {"K": "e3", "M": "e6", "B": "e9"}


def _volume_units(text: pd.Series) -> pd.Series:
    """Volumes written with a unit (``1.23M``, ``950.20K``, ``2B``) as plain numbers' text."""
    found = text.str.extract(r"^(\d+(?:\.\d*)?|\.\d+)\s*([KMBkmb])$")
    has = found[0].notna()
    if not has.any():
        return text
    return text.where(~has, found[0] + found[1].str.upper().map(_VOLUME_UNITS))


def _is_yfinance_export(raw: pd.DataFrame) -> bool:
    """True for what ``yf.download(...).to_csv()`` writes: a ``Price,Close,High,...`` header,
    then a ``Ticker,AAPL,...`` line and a ``Date,,,,,`` line above the bars."""
    if len(raw) < 2 or _header_key(raw.columns[0]) != "price":
        return False
    first = raw.iloc[:2, 0].fillna("").str.strip().str.lower().tolist()
    return first[0] == "ticker" and first[1] in DATE_COLUMNS and bool(raw.iloc[1, 1:].isna().all())


def row_lines(path: Path, rows: int, text: str | None = None) -> list[int] | None:
    """The line of the file each of pandas' ``rows`` rows was read from (blank lines above a
    row move it down), or None when they cannot be told; ``text``: the file's text, as read
    (by default it is read from ``path``)."""
    try:
        with io.StringIO(text, newline="") if text is not None else open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, skipinitialspace=True)
            # pandas skips the lines with nothing but spaces; a row of empty fields it keeps
            lines = [reader.line_num for fields in reader if len(fields) > 1 or any(s.strip() for s in fields)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return lines[1:] if len(lines) == rows + 1 else None


def where_row(pos: int, lines: list[int] | None) -> str:
    """'line 7' for pandas' row ``pos``; 'row 6' (below the header) when its line is unknown."""
    return f"line {lines[pos]}" if lines is not None else f"row {pos + 1}"


def _refuse_lines_of_wrong_length(path: Path, text: str) -> None:
    """DataError naming the first line with fewer or more fields than the header.

    pandas fills the fields a line lacks with NaN, so a line cut off mid-write
    (``2025-12-31,204.19,206.07,204.16,205.``: no volume, the close's last digits lost) would
    read as a bar with a wrong close and a volume set to 0. Such a line cannot be repaired, as a
    line longer than the header cannot (which of its fields are the bar's?). A line of empty
    fields (``,,,,,``) is no such line: it is blank, and dropped with the validator's warning;
    nor is one that only lacks the unnamed fields of a header that ends with a comma.
    """
    try:
        with io.StringIO(text, newline="") as f:
            lines = csv.reader(f, skipinitialspace=True)
            width = most = 0
            for fields in lines:
                if not any(s.strip() for s in fields):
                    continue
                if not width:  # the header, less the unnamed fields at its end (a trailing comma)
                    width = max(i + 1 for i, name in enumerate(fields) if name.strip())
                    most = len(fields)
                elif len(fields) < width:
                    raise DataError(
                        f"{path}: line {lines.line_num} is incomplete ({len(fields)} of {width} fields; "
                        "was the file cut off while it was written?)"
                    )
                elif len(fields) > most:
                    raise DataError(
                        f"{path}: line {lines.line_num} has more fields than the header ({len(fields)} of {most})"
                    )
    except csv.Error:  # e.g. a NUL byte: pandas names the problem
        return


def _columns(raw: pd.DataFrame, path: Path) -> tuple[list[str], str, str | None]:
    """Normalised header keys, the date column and the adjusted-close column (if any)."""
    return _key_columns([_header_key(c) for c in raw.columns], path)


def _repeated(keys: list[str]) -> list[str]:
    """The keys found more than once in ``keys``, sorted."""
    return sorted(k for k, n in Counter(keys).items() if n > 1)


def _key_columns(keys: list[str], path: Path) -> tuple[list[str], str, str | None]:
    """:func:`_columns` from the normalised header keys."""
    if dupes := _repeated(keys):
        raise DataError(f"{path}: duplicate column(s) {', '.join(dupes)}")
    if "volume" not in keys and "vol" in keys:  # 'Vol' or 'Vol.', as some exports name it
        keys = ["volume" if k == "vol" else k for k in keys]
    date_col = next((c for c in DATE_COLUMNS if c in keys), None)
    missing = ([] if date_col else ["date"]) + [c for c in COLUMNS if c not in keys and c != "volume"]
    if missing:
        found = ["(no name)" if re.fullmatch(r"(unnamed: \d+)?", k) else k for k in keys]  # pandas' name for ""
        hint = (
            "; if the column with no name holds the dates, name it Date"
            if "date" in missing and found[0] == "(no name)"
            else ""
        )
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(found)}){hint}")
    adj_col = next((c for c in ADJ_CLOSE_COLUMNS if c in keys), None)
    return keys, date_col, adj_col


def _bad_adjustments(values: dict[str, np.ndarray], adj_col: str | None) -> np.ndarray:
    """The rows whose close is a positive number and whose adjusted close is given but is not
    one (0, -5.25, inf): scaled by it, their open would be named as the bad price."""
    if not adj_col or np.isnan(values[adj_col]).all():
        return np.zeros(len(values["close"]), dtype=bool)
    close, adj = values["close"], values[adj_col]
    return (close > 0) & np.isfinite(close) & ~np.isnan(adj) & ~((adj > 0) & np.isfinite(adj))


def _adjusted(values: dict[str, np.ndarray], adj_col: str | None) -> dict[str, np.ndarray]:
    """``values`` with open/high/low scaled by adj_close/close and close set to adj_close.

    A row whose close is not a positive number (0, -1, empty) is left as it is, so that the
    checks refuse it (or drop it) as they would without the Adj Close column.
    """
    if adj_col and not np.isnan(values[adj_col]).all():  # an all-empty Adj Close is ignored
        close = values["close"]
        usable = (close > 0) & np.isfinite(close)
        ratio = np.divide(values[adj_col], close, out=np.ones_like(close), where=usable)
        for col in ("open", "high", "low"):
            values[col] = values[col] * ratio
        values["close"] = np.where(usable, values[adj_col], close)
    return values


def _assemble(values: dict[str, np.ndarray], index: pd.DatetimeIndex, adj_col: str | None) -> pd.DataFrame:
    values = _adjusted(values, adj_col)
    return pd.DataFrame({c: values[c] for c in COLUMNS}, index=index.rename("date"))


def _read_clean_csv(path: Path, text: str | None = None) -> pd.DataFrame | None:
    """The fast path for a well-formed file (``text``, read from ``path``; by default read
    now): numeric columns parsed in C and plain YYYY-MM-DD dates. None when anything is
    unusual; the careful path then finds and names the problem."""
    try:
        if text is None:
            text = path.read_bytes().decode("utf-8-sig")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            raw = pd.read_csv(io.StringIO(text), skipinitialspace=True, index_col=False, **_EXACT_FLOATS)
        keys, date_col, adj_col = _columns(raw, path)
        raw.columns = keys
        wanted = COLUMNS + ([adj_col] if adj_col else [])
        if raw.empty or not all(c in raw.columns and pd.api.types.is_numeric_dtype(raw[c]) for c in wanted):
            return None  # a missing volume column too: the careful path reads it
        index = pd.DatetimeIndex(pd.to_datetime(raw[date_col], format="%Y-%m-%d")).astype("datetime64[ns]")
        if index.isna().any():
            return None
    except (DataError, ValueError, TypeError, Warning, pd.errors.ParserError, UnicodeDecodeError):
        return None
    values = {c: raw[c].to_numpy(np.float64) for c in wanted}
    if _bad_adjustments(values, adj_col).any():
        return None  # the careful path names the row
    return _assemble(values, index, adj_col)


def plain_csv_bars(data_dir: str | os.PathLike[str], ticker: str) -> PlainBars | None:
    """The bars :func:`read_csv_bars` gives for ``<data_dir>/<TICKER>.csv``, as arrays read by
    pyarrow, when it is a plain file; None when it is not (or is missing), and the careful
    reader must read it.

    Plain means: UTF-8 text, a header without quotes, no space or tab below the header, and
    in every row a YYYY-MM-DD date (1678 to 2261) and, in each column used, a number under
    1e18 in size (pandas reads bigger integers as text) and no -0 volume. Anything else (a
    missing or odd value, a short or long row, a duplicate column...) is left to the pandas
    paths, which name the problem.
    """
    return _plain_csv(csv_file(data_dir, ticker))


def _plain_csv(path: Path) -> PlainBars | None:
    import pyarrow as pa  # slow to import: only when a file is read
    import pyarrow.csv as pcsv

    try:
        data = path.read_bytes()
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        if not data.endswith((b"\n", b"\r")):  # a last line perhaps cut: the careful reader says so
            return None
        end = data.find(b"\n")
        header = data[:end].removesuffix(b"\r")
        if end < 0 or b'"' in header or data.find(b" ", end) >= 0 or data.find(b"\t", end) >= 0:
            return None
        if not data.isascii():
            data.decode("utf-8")
        names = header.decode("utf-8").split(",")
        if len(names) > MAX_COLUMNS:  # the careful reader says so
            return None
        _, date_col, adj_col = _key_columns([_header_key(n) for n in names], path)
        wanted = COLUMNS + ([adj_col] if adj_col else [])
        used = {_header_key(n): n for n in names}
        if "volume" not in used:  # the careful path reads it, and says so
            return None
        types = {used[c]: pa.float64() for c in wanted} | {used[date_col]: pa.date32()}
        table = pcsv.read_csv(
            pa.BufferReader(data),
            read_options=pcsv.ReadOptions(use_threads=False),
            convert_options=pcsv.ConvertOptions(
                column_types=types,
                include_columns=list(types),
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (DataError, OSError, UnicodeDecodeError, pa.ArrowException):
        return None
    days = table.column(used[date_col]).to_numpy()
    values = {c: table.column(used[c]).to_numpy() for c in wanted}
    volume = values["volume"]
    if not (
        len(days)
        and (days >= FIRST_DAY).all()
        and (days <= LAST_DAY).all()
        and all((np.abs(v) < _TEXT_NUMBER).all() for v in values.values())
        and not (np.signbit(volume) & (volume == 0)).any()  # pandas may read a "-0" volume as 0
        and not _bad_adjustments(values, adj_col).any()
    ):
        return None
    values = _adjusted(values, adj_col)
    return PlainBars(days.astype("datetime64[ns]"), [values[c] for c in COLUMNS])


# --------------------------------------------------------------------------- Yahoo

_yf_configured = False
_yf_cache_dir: Path | None = None  # where configure_yfinance put yfinance's caches


class _ForwardToForecaster(logging.Handler):
    """Re-emit yfinance's log records at DEBUG on 'forecaster.yfinance' (kept out of stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger("forecaster.yfinance")
        if target.isEnabledFor(logging.DEBUG):  # yfinance logs at DEBUG now: most records go nowhere
            target.debug("%s", record.getMessage())


# The lines yfinance logs at DEBUG for each request it makes (yfinance.data.YfData._make_request):
# "url=<url>", then "response code=<status>" (twice when it tried a failed request again).
_YF_REQUEST_LINE = re.compile(r"url=(\S+)")
_YF_STATUS_LINE = re.compile(r"response code=(\d{3})")


class _YahooAnswers(logging.Handler):
    """The HTTP status of every chart request yfinance makes in a watched thread, read from
    its DEBUG lines.

    yfinance turns a Yahoo server error (HTTP 5xx) into the same empty answer, or the same
    exception, as an unknown symbol's: the status it logs is where the two can still be told
    apart. Each thread watches its own requests (tickers may be fetched side by side).
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._watched: dict[int, list[list[Any]]] = {}  # thread id -> [url, last status] per request

    def emit(self, record: logging.LogRecord) -> None:
        requests = self._watched.get(record.thread) if record.thread is not None else None
        if requests is None:
            return
        text = str(record.msg).strip()  # yfinance's debug logger indents its lines
        if url := _YF_REQUEST_LINE.fullmatch(text):
            requests.append([url[1], None])
        elif (status := _YF_STATUS_LINE.fullmatch(text)) and requests:
            requests[-1][1] = int(status[1])

    @contextlib.contextmanager
    def watch(self) -> Iterator[list[list[Any]]]:
        """Record the requests of the calling thread for the block: ``[url, status]`` each."""
        key = threading.get_ident()
        requests: list[list[Any]] = []
        self._watched[key] = requests
        try:
            yield requests
        finally:
            self._watched.pop(key, None)


_yahoo_answers = _YahooAnswers()


def _server_error_status(requests: list[list[Any]], exc: BaseException | None = None) -> int | None:
    """The status of Yahoo's answer to the last chart request of ``requests`` (None when it
    did not answer) or, when none was seen, of the HTTP error ``exc``, if it is a server
    error (5xx); else None."""
    charts = [status for url, status in requests if "/v8/finance/chart/" in url]
    status = charts[-1] if charts else getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) and 500 <= status <= 599 else None


def configure_yfinance(cache_dir: str | os.PathLike[str]) -> None:
    """Set yfinance up once per process: private caches, quiet warnings, exceptions raised,
    and its log kept out of stderr, at DEBUG, where the HTTP status of each request is read
    (a Yahoo 5xx is told from an unknown symbol by it).

    Later calls do nothing (yfinance cannot move its caches once they are open).
    """
    global _yf_configured, _yf_cache_dir
    if _yf_configured:
        return
    import yfinance as yf  # slow to import (about half a second): only when Yahoo is used

    warnings.filterwarnings("ignore", module=r"yfinance(\..*)?")
    yf_log = logging.getLogger("yfinance")
    yf_log.propagate = False
    if not any(isinstance(h, _ForwardToForecaster) for h in yf_log.handlers):
        yf_log.addHandler(_ForwardToForecaster())
    if _yahoo_answers not in yf_log.handlers:
        yf_log.addHandler(_yahoo_answers)
    yf_log.setLevel(logging.DEBUG)  # the HTTP status of each request is logged at DEBUG only
    directory = Path(cache_dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # the cookie cache is pickled: keep it private
    except OSError as exc:
        log.warning("cannot use %s for yfinance's cache (%s); using its default", directory, exc)
    else:
        yf.set_tz_cache_location(str(directory))
        _yf_cache_dir = directory
    config = getattr(yf, "config", None)
    if config is not None and hasattr(config, "debug"):
        config.debug.hide_exceptions = False
    _yf_configured = True


def _day(value: DateLike) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d")


def normalise_history(df: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """Turn a ``Ticker.history`` frame into the normalised shape (session dates, float64)."""
    columns = {_header_key(c): c for c in df.columns}
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{ticker}: Yahoo answer lacks column(s) {', '.join(missing)}")
    index = pd.DatetimeIndex(df.index)
    if index.tz is not None:
        index = index.tz_localize(None)  # local session date; tz_convert would shift Asia a day
    index = index.normalize().astype("datetime64[ns]").rename("date")
    return pd.DataFrame({c: df[columns[c]].to_numpy(dtype="float64") for c in COLUMNS}, index=index)


_ROUND_THE_CLOCK_TZ = {"UTC", "Etc/UTC", "GMT", "Etc/GMT"}  # where Yahoo puts crypto


def drop_unfinished_session(
    df: pd.DataFrame,
    tz: str | None,
    now: pd.Timestamp | None = None,
    close_hour: int = FALLBACK_CLOSE_HOUR,
    *,
    calendar: str = DEFAULT_CALENDAR,
    symbol: str | None = None,
    grace_minutes: float = CLOSE_GRACE_MINUTES,
) -> pd.DataFrame:
    """Drop the last bar dated today (exchange time zone ``tz``), and any other row of that
    day, while that session is trading.

    Yahoo's daily series can end with the session in progress; such a bar would later change
    and look like a revision. The close is that of the session on the exchange ``calendar``
    (the configured one), so half days count, plus ``grace_minutes`` for the closing prints.
    On a day that calendar does not trade, a bar is kept only after ``close_hour`` local time;
    for FX and futures (``=`` in the symbol) and round-the-clock markets (UTC), only once the
    day is over. The rule is :func:`forecaster.sessions.is_open_session_unfinished`.
    """
    if df.empty or tz is None:
        return df
    round_the_clock = tz in _ROUND_THE_CLOCK_TZ or (symbol is not None and "=" in symbol)
    unfinished = is_open_session_unfinished(
        df.index[-1],
        now,
        None if round_the_clock else calendar,
        tz=tz,
        grace=pd.Timedelta(minutes=grace_minutes),
        fallback_close_hour=close_hour,
    )
    # every row of that day: Yahoo's frame can hold the session in progress twice
    return df[df.index.normalize() != df.index[-1].normalize()] if unfinished else df


def _is_http_status(exc: BaseException, status: int) -> bool:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) == status


def fetch_history(
    ticker: str,
    start: DateLike | None = None,
    end: DateLike | None = None,
    *,
    session: Any = None,
    timeout: float = FETCH_TIMEOUT_S,
    calendar: str = DEFAULT_CALENDAR,
) -> pd.DataFrame:
    """Fetch daily adjusted bars for one ticker from Yahoo, one attempt, normalised.

    ``start`` is inclusive, ``end`` exclusive; ``start=None`` asks for the full history. A
    last bar whose session is still trading on the exchange ``calendar`` is left out
    (:func:`drop_unfinished_session`); when it is the only bar, a DataError says so. Raises
    RateLimitError (HTTP 429), ServerError (a Yahoo 5xx, which yfinance reports as it does an
    unknown symbol: told apart by the status it logs, once :func:`configure_yfinance` has run),
    TickerError (no data: unknown/delisted symbol), NetworkError (other transport errors) or
    DataError. Each message starts with the symbol.
    """
    import yfinance as yf  # slow to import (about half a second): only when Yahoo is used
    from yfinance.exceptions import YFException, YFRateLimitError, YFTickerMissingError

    symbol = validate_ticker(ticker)
    kwargs: dict[str, Any] = {
        "interval": "1d",
        "auto_adjust": True,
        "actions": False,
        "timeout": timeout,
    }
    if start is None:
        kwargs["period"] = "max"
    else:
        kwargs["start"] = _day(start)
    if end is not None:
        kwargs["end"] = _day(end)
    no_data = f"{symbol}: no data (unknown or delisted symbol?)"

    def server_error(status: int) -> ServerError:
        return ServerError(f"{symbol}: Yahoo server error (HTTP {status}); retry later")

    try:
        with _yahoo_answers.watch() as requests:
            raw = yf.Ticker(symbol, session=session).history(**kwargs)
    except YFRateLimitError:
        raise RateLimitError(f"{symbol}: Yahoo rate limit (HTTP 429); retry later") from None
    except Exception as exc:  # whatever yfinance raises fails this ticker alone, never the others
        if (full := _cache_full(exc)) is not None:  # its SQLite caches on a full disk: nothing of Yahoo's doing
            raise DataError(
                f"{symbol}: cannot write yfinance's cache {_yfinance_cache_folder()}: No space left on device ({full})"
            ) from None
        # a 5xx first: yfinance gives it as a missing symbol, or chokes on the error page
        if status := _server_error_status(requests, exc):
            raise server_error(status) from None
        if isinstance(exc, YFTickerMissingError) or _is_http_status(exc, 404):
            raise TickerError(no_data) from None
        if isinstance(exc, OSError):
            raise NetworkError(f"{symbol}: cannot reach Yahoo ({type(exc).__name__}: {exc})") from None
        if isinstance(exc, YFException):
            raise DataError(f"{symbol}: Yahoo error: {exc}") from None
        reason = f"{type(exc).__name__}: {exc}"  # yfinance choking on an odd answer
        raise DataError(f"{symbol}: unexpected answer from Yahoo ({reason})") from exc
    if raw is None or raw.empty:
        if status := _server_error_status(requests):
            raise server_error(status)
        raise TickerError(no_data)
    tz = getattr(raw.index, "tz", None)
    bars = normalise_history(raw, symbol)
    done = drop_unfinished_session(bars, str(tz) if tz is not None else None, calendar=calendar, symbol=symbol)
    if done.empty:  # a symbol's first day (a listing): "no usable bars" would say its data are bad
        raise DataError(
            f"{symbol}: Yahoo has only today's bar ({bars.index[-1].date()}), whose session has not closed yet: "
            "nothing to store; run again after the close"
        )
    return done


def _cache_full(exc: BaseException) -> str | None:
    """SQLite's words when yfinance's cache (peewee over sqlite3) meets a full disk or quota,
    found under ``exc``; None for any other error."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "OperationalError" and "database or disk is full" in str(seen):
            return "database or disk is full"
        seen = seen.__cause__ or seen.__context__
    return None


def _yfinance_cache_folder() -> str:
    """The folder of yfinance's SQLite caches: ``<data-dir>/.yfinance-cache`` as
    :func:`configure_yfinance` set it, or its own default where that could not be used."""
    try:
        from yfinance import cache

        return str(cache._TzDBManager.get_location())
    except Exception:  # another yfinance than the one this was written against
        return str(_yf_cache_dir) if _yf_cache_dir is not None else "(its default folder)"


def _clear_yfinance_cache() -> None:
    """Forget yfinance's in-process response cache, which would otherwise replay a failure."""
    from yfinance import data as yf_data  # local, as every yfinance import here

    cache_get = getattr(yf_data.YfData, "cache_get", None)
    if hasattr(cache_get, "cache_clear"):
        cache_get.cache_clear()


def _within(seconds: float, call: Callable[[], pd.DataFrame], what: str) -> pd.DataFrame:
    """Run ``call`` with a hard time limit; NetworkError when it has not answered by then.

    yfinance's own ``timeout`` does not bound its time-zone probe (10 s) or its info
    fallback (30 s), so one stuck attempt could hold a cron run for minutes. The call runs
    in a daemon thread; one that overruns is abandoned (its result is never used, and it
    cannot keep the process alive at exit).
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="forecaster-fetch", daemon=True).start()
    if not done.wait(max(seconds, 0.0)):
        raise NetworkError(f"{what}: no answer from Yahoo within {seconds:.0f}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def fetch_with_retry(
    ticker: str,
    start: DateLike | None = None,
    end: DateLike | None = None,
    *,
    session: Any = None,
    calendar: str = DEFAULT_CALENDAR,
    attempts: int = RETRY_ATTEMPTS,
    base_delay: float = RETRY_BASE_DELAY_S,
    max_delay: float = RETRY_MAX_DELAY_S,
    deadline: float = TICKER_DEADLINE_S,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> pd.DataFrame:
    """:func:`fetch_history` with retries: exponential backoff and full jitter.

    Network errors, Yahoo server errors (5xx) and rate limits (with a ``RATE_LIMIT_SLOWDOWN``
    times longer base delay) are retried up to ``attempts`` tries in all; a "no data" answer
    is retried ``NO_DATA_RETRIES`` times. yfinance's in-memory response
    cache is cleared before each retry, or it would replay the failure. ``deadline`` is a
    hard limit in seconds for the ticker: an attempt still running then is abandoned
    (NetworkError), and no retry starts that could not finish its wait before it. Re-raises
    the last error.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    ticker = validate_ticker(ticker)
    started = time.monotonic()
    no_data_left = NO_DATA_RETRIES

    def attempt_once() -> pd.DataFrame:
        return fetch_history(ticker, start, end, session=session, calendar=calendar)

    for attempt in range(attempts):
        left = deadline - (time.monotonic() - started)
        try:
            return _within(left, attempt_once, ticker)
        except RateLimitError as exc:
            error: DataError | NetworkError | RateLimitError = exc
            base = base_delay * RATE_LIMIT_SLOWDOWN
        except NetworkError as exc:
            error, base = exc, base_delay
        except TickerError as exc:
            if no_data_left < 1:
                raise
            no_data_left -= 1
            error, base = exc, base_delay
        if attempt + 1 >= attempts:
            raise error
        delay = rng() * min(max_delay, base * 2**attempt)
        if time.monotonic() - started + delay >= deadline:
            raise error
        log.debug("%s: %s; retrying in %.1fs", ticker, error, delay)
        sleep(delay)
        _clear_yfinance_cache()
    raise AssertionError("unreachable")
