"""Ticker symbols: validation, safe file names, spreadsheet-safe CSV values, and messages that
name many of them."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from forecaster.errors import ConfigError, TickerError

log = logging.getLogger("forecaster")

MAX_TICKER_LEN = 20

# Yahoo-style: an optional "^" (indices), then letters/digits with ".", "-", "=" or "&" inside
# (BRK-B, 7203.T, EURUSD=X, GC=F, M&M.NS). It must start and end with a letter or digit, so no
# symbol can look like an option ("-x"), a formula ("=x") or a path part ("..").
_TICKER_RE = re.compile(r"\^?[A-Z0-9](?:[A-Z0-9.\-=&]*[A-Z0-9])?")
_SUFFIX_RE = re.compile(r"(?:\.[a-z0-9]+)+")

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")
_FORMULA_STARTS = ("=", "+", "-", "@")


NAMED_TICKERS = 10
"""Tickers named in one message at most: a universe of them would bury the message."""


def some_names(names: list[str]) -> str:
    """Up to :data:`NAMED_TICKERS` of ``names``, comma-separated, and how many more there are."""
    return _capped(names, ", ", " and {} more")


def some_reasons(reasons: dict[str, str]) -> str:
    """``TICKER: why`` for up to :data:`NAMED_TICKERS` tickers, and how many more there are."""
    return _capped([f"{sym}: {why}" for sym, why in reasons.items()], "; ", "; and {} more tickers")


@contextmanager
def warnings_into(messages: list[str]):
    """Every warning this thread logs meanwhile goes into ``messages`` instead of out: a
    command that reports its warnings (``--json``'s ``warnings``) then has them all, those of
    the bars it read included, and logs them once, with :func:`log_some`."""
    thread = threading.get_ident()

    def kept(record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.thread == thread:
            messages.append(record.getMessage())
            return False
        return True

    log.addFilter(kept)
    try:
        yield messages
    finally:
        log.removeFilter(kept)


def log_some(level: int, messages: list[str], what: str) -> None:
    """Log up to :data:`NAMED_TICKERS` ``messages`` (one per ticker, say), or the first ones and
    how many more there are: a universe of tickers would bury the rest of the output. Every
    one of them is in the command's ``--json`` output."""
    shown = messages if len(messages) <= NAMED_TICKERS else messages[: NAMED_TICKERS - 1]
    for m in shown:
        log.log(level, "%s", m)
    if len(shown) < len(messages):
        log.log(level, "and %d more %s (the --json output lists them all)", len(messages) - len(shown), what)


def _capped(items: list[str], sep: str, more: str) -> str:
    """``items`` joined by ``sep``; past :data:`NAMED_TICKERS`, the first ones and ``more``
    with the count of the others."""
    if len(items) <= NAMED_TICKERS:
        return sep.join(items)
    shown = NAMED_TICKERS - 1
    return sep.join(items[:shown]) + more.format(len(items) - shown)


def _shown(value: object, limit: int = 24) -> str:
    """A short, ASCII-only repr of untrusted input, for error messages."""
    text = str(value)
    return ascii(text[:limit]) + ("..." if len(text) > limit else "")


def split_tickers(values: Iterable[str]) -> list[str]:
    """The tickers of ``values``, each a ticker or several separated by commas or spaces."""
    return [t for value in values for part in value.split(",") for t in part.split() if t]


def given_tickers(tickers: str | Iterable[str] | None, *, default: bool = True) -> list[str] | None:
    """The tickers a library caller named, as the command line reads them: None when none were
    given (the default ones); a string is one ticker or several, comma-separated. Given but
    naming none (``[]``, ``""``, ``","``) is a ConfigError, not the default tickers: a retry of
    an empty list of failed tickers must do nothing, not everything. ``default=False`` where
    there are no default tickers (no config holds them there): None is refused too, and the
    error for none named offers no None."""
    if tickers is None:
        if not default:
            raise ConfigError(
                "tickers=None names the default tickers, which only a config holds: name them ('AAPL,MSFT')"
            )
        return None
    values = [tickers] if isinstance(tickers, str) else list(tickers)
    for value in values:
        if not isinstance(value, str):
            raise TickerError(f"invalid ticker {_shown(value)}: expected a string")
    names = split_tickers(values)
    if not names:
        hint = ", or pass None for the default ones" if default else " ('AAPL,MSFT')"
        raise ConfigError(f"tickers {_shown(tickers)} name no ticker: name at least one{hint}")
    return names


def validate_ticker(symbol: str) -> str:
    """Return ``symbol`` stripped and upper-cased, or raise TickerError if it is not Yahoo-style.

    Accepts symbols such as ``AAPL``, ``BRK-B``, ``^GSPC``, ``EURUSD=X``, ``7203.T`` and ``GC=F``.
    """
    if not isinstance(symbol, str):
        raise TickerError(f"ticker must be a string, got {type(symbol).__name__}")
    text = symbol.strip()
    if not text:
        raise TickerError("empty ticker symbol")
    # Check ASCII before upper(): "ß".upper() is "SS", which would slip through the pattern.
    if not text.isascii() or len(text) > MAX_TICKER_LEN:
        raise TickerError(f"invalid ticker {_shown(symbol)}: expected at most {MAX_TICKER_LEN} ASCII characters")
    text = text.upper()
    if ".." in text or not _TICKER_RE.fullmatch(text):
        raise TickerError(
            f"invalid ticker {_shown(symbol)}: expected a Yahoo-style symbol such as "
            "AAPL, BRK-B, ^GSPC, EURUSD=X or 7203.T"
        )
    return text


def ticker_file(directory: str | os.PathLike[str], symbol: str, suffix: str) -> Path:
    """``<directory>/<SYMBOL><suffix>`` for a validated symbol; never a path outside it."""
    if not _SUFFIX_RE.fullmatch(suffix):
        raise ValueError(f"bad file suffix {suffix!r}")
    name = validate_ticker(symbol) + suffix
    base = Path(directory)
    # The pattern already forbids separators and "..": this re-checks the final path anyway.
    resolved_base = base.resolve()
    candidate = Path(os.path.normpath(resolved_base / name))
    if candidate.parent != resolved_base or candidate.name != name:
        raise TickerError(f"ticker {_shown(symbol)} would leave the directory {base}")
    return base / name


def csv_safe(value: object) -> object:
    """Prefix ``'`` to a string that a spreadsheet could read as a formula; return others as is.

    That is a string starting with ``= + - @``, a tab or a line break, or with spaces before
    one of ``= + - @`` (some spreadsheets trim leading spaces before reading a cell).
    """
    if isinstance(value, str) and (
        value.startswith(_FORMULA_PREFIXES) or value.lstrip(" ").startswith(_FORMULA_STARTS)
    ):
        return "'" + value
    return value


def csv_safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with :func:`csv_safe` applied to its text columns and text index."""
    out = df.copy()
    for col in out.columns:
        series = out[col]
        if pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
            # each distinct value checked once; only the unsafe ones are rewritten
            unsafe = {v: safe for v in series.dropna().unique() if (safe := csv_safe(v)) is not v}
            if unsafe:
                out[col] = series.replace(unsafe)
    index = out.index
    if not isinstance(index, pd.MultiIndex) and (
        pd.api.types.is_object_dtype(index) or pd.api.types.is_string_dtype(index)
    ):
        out.index = index.map(csv_safe)
    return out
