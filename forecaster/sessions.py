"""Trading sessions on an exchange calendar (default XNYS, the New York Stock Exchange).

Everything here answers questions in *sessions*, not calendar days: weekends and exchange
holidays (Christmas, Good Friday, ...) are skipped. Session dates are returned as tz-naive
midnight ``pd.Timestamp`` / ``pd.DatetimeIndex`` values (``datetime64[ns]``), the same shape as
the index of the local store.

``exchange_calendars`` is imported lazily, inside the functions, so that importing this module
(and running ``forecaster --help``) stays fast. Calendars are built once per process and name:
from 1990-01-01 (or the calendar's own earliest date) to two years after today. A question about
dates outside that span builds, and caches, a wider calendar.

Date arguments accept anything ``pd.Timestamp`` accepts (``"2025-12-24"``, ``datetime.date``,
``pd.Timestamp``). Only the date part is used; a tz-aware value is taken at its own wall-clock
date. ``now`` arguments are instants instead: a tz-aware value is converted, a naive one is taken
as UTC, and ``None`` means the current time.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from forecaster.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from exchange_calendars import ExchangeCalendar

__all__ = [
    "DEFAULT_CALENDAR",
    "calendar_bounds",
    "check_calendar",
    "get_calendar",
    "is_open_session_unfinished",
    "last_completed_session",
    "next_sessions",
    "not_sessions",
    "sessions_after_count",
    "sessions_in_range",
]

DEFAULT_CALENDAR = "XNYS"

_DEFAULT_START = pd.Timestamp("1990-01-01")  # covers most histories; an older date builds a wider calendar
_YEARS_AHEAD = 2  # forecasts look days or weeks ahead: two years of future sessions is ample
_CLOSE_LOOKBACK = pd.Timedelta(days=31)  # the last close lies within a month even after long closures
_MIN_SESSIONS_PER_WEEK = 4  # fewest sessions in any week of a working exchange (a holiday week)
_GUESS_MARGIN = pd.Timedelta(days=31)  # room for a run of holidays beyond that rate
_EXAMPLE_NAMES = ("XNYS", "XNAS", "XLON", "XETR", "XPAR", "XTKS", "XHKG", "XTSE", "XASX")


class _Span(NamedTuple):
    """A built calendar and the dates it was asked to cover (inclusive)."""

    calendar: Any
    start: pd.Timestamp
    end: pd.Timestamp
    sessions: pd.DatetimeIndex
    closes: pd.DatetimeIndex  # market close of each session, UTC wall time (tz-naive)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the deprecation chatter exchange_calendars emits under newer pandas."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        pandas4 = getattr(pd.errors, "Pandas4Warning", None)
        if pandas4 is not None:
            warnings.simplefilter("ignore", pandas4)
        yield


def _valid_names() -> list[str]:
    import exchange_calendars as xcals  # slow to import (about a second): only when needed

    return sorted(xcals.get_calendar_names(include_aliases=False))


def _unknown(name: object) -> ConfigError:
    try:
        known = set(_valid_names())
    except Exception:  # pragma: no cover - defensive
        known = set(_EXAMPLE_NAMES)
    examples = ", ".join(n for n in _EXAMPLE_NAMES if n in known)
    return ConfigError(
        f"unknown exchange calendar {name!r}; valid names include {examples} "
        f"({len(known)} in all, see exchange_calendars.get_calendar_names())"
    )


@lru_cache(maxsize=64)
def _resolve_name(name: object) -> str:
    """The canonical calendar name for ``name`` (aliases such as NYSE resolve too)."""
    if not isinstance(name, str) or not name.strip():
        raise _unknown(name)
    import exchange_calendars as xcals  # slow to import (about a second): only when needed

    names = set(xcals.get_calendar_names(include_aliases=True))
    for candidate in (name.strip(), name.strip().upper()):
        if candidate in names:
            return xcals.resolve_alias(candidate)
    raise _unknown(name)


def check_calendar(name: object) -> str:
    """The canonical name of exchange calendar ``name``, or a one-line ConfigError listing
    valid names (or saying why a known one cannot be built): for commands that record or use
    the calendar later (``train`` writes it into the run that ``predict`` reads; ``download``
    needs it only once a bar of today arrives), so that a typo stops them before they do any
    work."""
    canonical = _resolve_name(name)
    _default_span(canonical)
    return canonical


def _clock_today() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()


@lru_cache(maxsize=64)
def _bounds(name: str) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The earliest / latest dates calendar ``name`` has holiday data for (None: unbounded)."""
    import exchange_calendars as xcals  # slow to import (about a second): only when needed

    dispatcher = xcals.calendar_utils.global_calendar_dispatcher
    factory = getattr(dispatcher, "_calendar_factories", {}).get(name)
    if factory is None:  # pragma: no cover - depends on exchange_calendars internals
        return None, None
    bmin, bmax = factory.bound_min(), factory.bound_max()
    return (
        None if bmin is None else pd.Timestamp(bmin).as_unit("ns"),
        None if bmax is None else pd.Timestamp(bmax).as_unit("ns"),
    )


@lru_cache(maxsize=64)
def _build(name: str, start: pd.Timestamp, end: pd.Timestamp) -> _Span:
    """Calendar ``name`` (canonical) built for ``[start, end]``, clipped to what it supports."""
    import exchange_calendars as xcals  # slow to import (about a second): only when needed

    bmin, bmax = _bounds(name)
    lo = start if bmin is None else max(start, bmin)
    hi = end if bmax is None else min(end, bmax)
    if lo > hi:  # pragma: no cover - every span asked for reaches a date of the holiday data
        raise ConfigError(f"exchange calendar {name!r} has no sessions from {start.date()} to {end.date()}")
    with _quiet():
        try:
            cal = xcals.get_calendar(name, start=lo, end=hi)
        except Exception as exc:  # a calendar this version of exchange_calendars cannot build
            why = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise ConfigError(
                f"exchange calendar {name!r} cannot be built by exchange_calendars {xcals.__version__} "
                f"({why[:100]}{' ...' if len(why) > 100 else ''}); set data.calendar to another exchange"
            ) from exc
        sessions = pd.DatetimeIndex(np.asarray(cal.sessions, dtype="datetime64[ns]"))
        closes = cal.closes.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    return _Span(cal, lo, hi, sessions, pd.DatetimeIndex(closes))


_NEWER = " (exchange_calendars {version}: a newer version may hold later years, pip install -U exchange-calendars)"
"""What to do about a date after a calendar's holiday data: the data of later years come with
later versions of exchange_calendars."""


def _xcals_version() -> str:
    import exchange_calendars as xcals

    return xcals.__version__


def _default_span(name: str) -> _Span:
    today = _clock_today()
    end = pd.Timestamp(year=today.year + _YEARS_AHEAD, month=12, day=31)
    if end < _DEFAULT_START:  # a clock reset to the epoch (a machine without a working clock battery)
        raise ConfigError(
            f"this machine's clock says today is {today.date()}, before the years the exchange calendars "
            f"are read for ({_DEFAULT_START.year} on): set the clock to the right date"
        )
    return _build(_resolve_name(name), _DEFAULT_START, end)


@lru_cache(maxsize=32)
def get_calendar(name: str = DEFAULT_CALENDAR) -> ExchangeCalendar:
    """The ``exchange_calendars`` calendar ``name``, covering 1990-01-01 to two years ahead.

    Raises ``ConfigError`` (listing a few valid names) when ``name`` is not a known calendar.
    """
    return _default_span(name).calendar


def _covering(name: str, first: pd.Timestamp | None, last: pd.Timestamp | None, strict: bool = True) -> _Span:
    """A calendar span whose dates include ``first`` and ``last``.

    A ``first`` before the exchange's holiday data is a ``ConfigError`` (a search there would
    answer with the data's first sessions); so is a ``last`` after it with ``strict``, which
    otherwise gets the widest span available.
    """
    span = _default_span(name)
    need_lo = first is not None and first < span.start
    need_hi = last is not None and last > span.end
    if not (need_lo or need_hi):
        return span
    bmin, bmax = _bounds(_resolve_name(name))
    beyond = [
        (first, "from", bmin) if need_lo and bmin is not None and first < bmin else None,
        (last, "up to", bmax) if strict and need_hi and bmax is not None and last > bmax else None,
        (first, "up to", bmax) if first is not None and bmax is not None and first > bmax else None,
    ]
    for day, word, bound in filter(None, beyond):
        raise ConfigError(
            f"exchange calendar {name!r} only has sessions {word} {bound.date()}; cannot answer for {day.date()}"
            + (_NEWER if word == "up to" else "").format(version=_xcals_version())
        )
    # Only the years asked about (plus one after), so a far-off date builds a small calendar.
    lo = span.start if first is None else pd.Timestamp(year=first.year, month=1, day=1)
    hi = span.end if last is None else pd.Timestamp(year=last.year + 1, month=12, day=31)
    return _build(_resolve_name(name), lo, hi)


def _as_date(value: Any, what: str = "date") -> pd.Timestamp:
    """``value`` as a tz-naive midnight timestamp (ns); a tz-aware value keeps its wall date."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} {value!r} is not a date") from exc
    if ts is pd.NaT:
        raise ValueError(f"{what} is missing (NaT)")
    if ts.tzinfo is not None:
        ts = ts.tz_localize(None)
    return ts.normalize().as_unit("ns")


def _as_instant(now: Any) -> pd.Timestamp:
    """``now`` as a UTC timestamp; None is the current time, a naive value is taken as UTC."""
    if now is None:
        return pd.Timestamp.now(tz="UTC").as_unit("ns")
    ts = pd.Timestamp(now)
    if ts is pd.NaT:
        raise ValueError("now is missing (NaT)")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").as_unit("ns")


def latest_possible_day(now: Any = None) -> pd.Timestamp:
    """The latest date it is anywhere on Earth (UTC+14): no bar can be dated after it."""
    return (_as_instant(now) + pd.Timedelta(hours=14)).tz_localize(None).normalize()


def parse_day(value: Any, flag: str, now: Any = None) -> pd.Timestamp | None:
    """``value`` (``--as-of``, ``--since``) as a date: a string must be YYYY-MM-DD, and a
    ``datetime.date`` or ``pd.Timestamp`` is taken at its date. ConfigError (naming ``flag``)
    for anything else and for a day that has begun nowhere on Earth yet; None stays None."""
    from datetime import date

    from forecaster.tickers import _shown

    if value is None:
        return None
    if isinstance(value, date) and not pd.isna(value):  # datetime and pd.Timestamp are dates too
        day = pd.Timestamp(value)
        day = (day.tz_localize(None) if day.tzinfo else day).normalize()
    else:
        text = str(value).strip()
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                raise ValueError(text)
            day = pd.Timestamp(date.fromisoformat(text))
        except ValueError:
            raise ConfigError(f"{flag} {_shown(value)} is not a date; expected YYYY-MM-DD") from None
    if day > (latest := latest_possible_day(now)):  # today east of UTC is not the future
        raise ConfigError(f"{flag} {day.date()} is in the future: give {latest.date()} or an earlier day")
    return day


def dated_after_today(dates: pd.DatetimeIndex, now: Any = None) -> str | None:
    """'N bar(s) dated after today, from D1 to D2' for bars no day has reached yet (a mistyped
    year), or None when there are none."""
    ahead = dates[dates > latest_possible_day(now)]
    if ahead.empty:
        return None
    return f"{len(ahead)} bar(s) dated after today, from {ahead[0].date()} to {ahead[-1].date()}"


def _plain(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(np.asarray(index, dtype="datetime64[ns]"))


def sessions_in_range(start: Any, end: Any, calendar: str = DEFAULT_CALENDAR) -> pd.DatetimeIndex:
    """The sessions from ``start`` to ``end``, both inclusive (empty when ``end < start``)."""
    lo = _as_date(start, "start")
    hi = _as_date(end, "end")
    if hi < lo:
        return pd.DatetimeIndex([], dtype="datetime64[ns]")
    sessions = _covering(calendar, lo, hi).sessions
    i = sessions.searchsorted(lo, side="left")
    j = sessions.searchsorted(hi, side="right")
    return _plain(sessions[i:j])


def calendar_bounds(calendar: str = DEFAULT_CALENDAR) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The first and last dates ``calendar`` has holiday data for (None: open-ended)."""
    return _bounds(_resolve_name(calendar))


def not_sessions(dates: pd.DatetimeIndex, calendar: str = DEFAULT_CALENDAR) -> pd.DatetimeIndex:
    """The ``dates`` (sorted dates of daily bars) that are not sessions of ``calendar``: the
    bars of another exchange, open on days this one is not. Dates outside the calendar's
    holiday data are not judged."""
    if len(dates) == 0:
        return pd.DatetimeIndex([], dtype="datetime64[ns]")
    bmin, bmax = _bounds(_resolve_name(calendar))
    lo, hi = _as_date(dates[0], "date"), _as_date(dates[-1], "date")
    lo = lo if bmin is None else max(lo, bmin)
    hi = hi if bmax is None else min(hi, bmax)
    if lo > hi:
        return pd.DatetimeIndex([], dtype="datetime64[ns]")
    inside = _plain(dates)
    inside = inside[(inside >= lo) & (inside <= hi)]
    return inside[~inside.isin(sessions_in_range(lo, hi, calendar))]


def next_sessions(after: Any, n: int, calendar: str = DEFAULT_CALENDAR) -> pd.DatetimeIndex:
    """The ``n`` sessions strictly after ``after`` (``after`` itself need not be a session).

    ``next_sessions("2025-12-24", 2)`` is 2025-12-26 and 2025-12-29: Christmas and the weekend
    are skipped.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    day = _as_date(after, "after")
    n = int(n)
    if n == 0:
        return pd.DatetimeIndex([], dtype="datetime64[ns]")
    # A generous guess at the last date needed.
    guess = day + pd.Timedelta(days=int(n * 7 / _MIN_SESSIONS_PER_WEEK)) + _GUESS_MARGIN
    span = _covering(calendar, day, guess, strict=False)
    i = span.sessions.searchsorted(day, side="right")
    out = span.sessions[i : i + n]
    if len(out) < n:  # the span reaches the end of the calendar's holiday data
        raise ConfigError(
            f"exchange calendar {calendar!r} only has sessions up to {span.end.date()}: {len(out)} after "
            f"{day.date()}, cannot give {n}" + _NEWER.format(version=_xcals_version())
        )
    return _plain(out)


def sessions_after_count(a: Any, b: Any, calendar: str = DEFAULT_CALENDAR) -> int:
    """How many sessions lie in ``(a, b]``; 0 when ``b <= a``.

    It is the number of trading sessions by which ``b`` is after ``a``: for any date ``d``,
    ``sessions_after_count(d, next_sessions(d, k)[-1]) == k``.
    """
    lo = _as_date(a, "a")
    hi = _as_date(b, "b")
    if hi <= lo:
        return 0
    sessions = _covering(calendar, lo, hi).sessions
    return int(sessions.searchsorted(hi, side="right") - sessions.searchsorted(lo, side="right"))


def last_completed_session(now: pd.Timestamp | None = None, calendar: str = DEFAULT_CALENDAR) -> pd.Timestamp:
    """The latest session whose market close is at or before ``now``, as a tz-naive date.

    Today's session counts only once the exchange has closed (16:00 New York for XNYS, earlier
    on half days such as Christmas Eve); before that, the previous session is returned.
    """
    instant = _as_instant(now)
    wall = instant.tz_localize(None)
    span = _covering(calendar, wall.normalize() - _CLOSE_LOOKBACK, wall.normalize())
    i = int(span.closes.searchsorted(wall, side="right")) - 1
    if i < 0:
        raise ValueError(
            f"no session of {calendar!r} has closed by {instant.isoformat()} "
            f"(the calendar starts on {span.sessions[0].date()})"
        )
    return span.sessions[i]


def _session_close(day: pd.Timestamp, calendar: str) -> pd.Timestamp | None:
    """The close of ``day`` on ``calendar`` as a tz-naive UTC time; None when it is not a session."""
    span = _covering(calendar, day, day)
    i = span.sessions.searchsorted(day, side="left")
    if i >= len(span.sessions) or span.sessions[i] != day:
        return None
    return span.closes[i]


def is_open_session_unfinished(
    date: Any,
    now: pd.Timestamp | None = None,
    calendar: str | None = DEFAULT_CALENDAR,
    *,
    tz: str | None = None,
    grace: pd.Timedelta = pd.Timedelta(0),
    fallback_close_hour: int | None = None,
) -> bool:
    """True when ``date`` is today's session in the exchange's time zone and it has not closed.

    A bar dated today, fetched before the close, is a partial bar: its close is only the latest
    price. Past and future dates give False. ``tz`` is the exchange's time zone (by default the
    calendar's); the session is over ``grace`` after its close on ``calendar`` (earlier on half
    days). A date ``calendar`` does not trade gives False, or, with ``fallback_close_hour``,
    True before that hour of the local day (a bar from an exchange the calendar does not
    describe). So does a ``tz`` whose clock differs from the calendar's at ``now`` (a Tokyo
    ticker in a run on the New York calendar: New York's close says nothing of Tokyo's), and a
    day beyond the calendar's holiday data. ``calendar=None`` is a market that trades round the
    clock: today is unfinished until the local day is over (``tz`` is then required).
    """
    day = _as_date(date, "date")
    instant = _as_instant(now)
    if tz is None:
        if calendar is None:
            raise ValueError("a round-the-clock market needs its time zone")
        tz = _default_span(calendar).calendar.tz
    local_now = instant.tz_convert(tz)
    if day != local_now.tz_localize(None).normalize():
        return False
    if calendar is None:
        return True
    close = None
    if instant.tz_convert(_default_span(calendar).calendar.tz).utcoffset() == local_now.utcoffset():
        with suppress(ConfigError):  # a day past the calendar's data: the fallback decides
            close = _session_close(day, calendar)
    if close is None:
        return fallback_close_hour is not None and local_now.hour < fallback_close_hour
    return bool(instant.tz_localize(None) < close + grace)
