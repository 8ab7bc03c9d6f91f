import logging
import threading
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from forecaster.errors import DataError, TickerError
from forecaster.tickers import (
    MAX_TICKER_LEN,
    NAMED_TICKERS,
    csv_safe,
    csv_safe_frame,
    some_names,
    some_reasons,
    ticker_file,
    validate_ticker,
    warnings_into,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("AAPL", "AAPL"),
        ("  aapl\n", "AAPL"),
        ("brk-b", "BRK-B"),
        ("^GSPC", "^GSPC"),
        ("EURUSD=X", "EURUSD=X"),
        ("7203.T", "7203.T"),
        ("GC=F", "GC=F"),
        ("BTC-USD", "BTC-USD"),
        ("A", "A"),
        ("x" * MAX_TICKER_LEN, "X" * MAX_TICKER_LEN),  # the longest symbol taken
        ("m&m.ns", "M&M.NS"),  # Mahindra & Mahindra on the NSE: refused, and with it no spelling
    ],
)
def test_valid_symbols_are_normalised(raw, expected):
    assert validate_ticker(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "../x",
        "a/b",
        "a\\b",
        "=cmd()",
        "-rf",
        "+1",
        "@SUM",
        "A..B",
        "AAPL.",
        ".AAPL",
        "BRK--",
        "^",
        "^^GSPC",
        "AA PL",
        "AAPL\n\nX",
        "X" * 21,
        "ÄAPL",
        "stra\u00dfe",  # "ß".upper() == "SS": must not sneak through
        "A\x00B",
        "A;B",
        "$AAPL",
        "&M",
        "M&",
    ],
)
def test_invalid_symbols_raise_ticker_error(raw):
    with pytest.raises(TickerError, match="ticker"):
        validate_ticker(raw)


def test_ticker_error_is_a_data_error_with_one_safe_line():
    evil = "\x1b[31m=HYPERLINK(" + "x" * 500
    with pytest.raises(DataError) as info:
        validate_ticker(evil)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    assert len(message) < 200
    assert "..." in message  # truncated


def test_non_string_rejected():
    with pytest.raises(TickerError, match="string"):
        validate_ticker(None)  # type: ignore[arg-type]


def test_ticker_file_stays_inside_directory(tmp_path):
    path = ticker_file(tmp_path, "brk-b", ".csv")
    assert path == tmp_path / "BRK-B.csv"
    with pytest.raises(TickerError):
        ticker_file(tmp_path, "../../etc/passwd", ".csv")
    with pytest.raises(ValueError):
        ticker_file(tmp_path, "AAPL", "/../x")


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.text(max_size=30),
        st.from_regex(r"\s?\^?[A-Za-z0-9][A-Za-z0-9.=/-]{0,22}\s?", fullmatch=True),
    )
)
def test_any_accepted_symbol_is_a_plain_file_name(raw):
    try:
        symbol = validate_ticker(raw)
    except TickerError:  # refused with the one documented error (any other exception fails)
        symbol = None
    assume(symbol is not None)
    assert symbol.isascii() and symbol == symbol.upper()
    assert "/" not in symbol and "\\" not in symbol and ".." not in symbol
    assert not symbol.startswith(("=", "+", "-", "@", "."))
    base = Path("/data/dir")
    assert ticker_file(base, symbol, ".csv").parent == base


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+2", "'=1+2"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-2+3", "'-2+3"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("\nx", "'\nx"),
        # some spreadsheets trim leading spaces before reading a cell
        (" =1+2", "' =1+2"),
        ("  -2+3", "'  -2+3"),
        ("  AAPL", "  AAPL"),
        ("AAPL", "AAPL"),
        ("", ""),
        (-1.5, -1.5),
        (3, 3),
        (None, None),
    ],
)
def test_csv_safe(value, expected):
    assert csv_safe(value) == expected


def test_csv_safe_frame_touches_only_text_columns():
    df = pd.DataFrame(
        {
            "ticker": ["=EVIL", "AAPL"],
            "note": pd.array(["@x", None], dtype="string"),
            "p50": [-1.0, 2.0],
        },
        index=pd.Index(["+a", "b"], name="key"),
    )
    out = csv_safe_frame(df)
    assert out["ticker"].tolist() == ["'=EVIL", "AAPL"]
    assert out["note"].iloc[0] == "'@x" and pd.isna(out["note"].iloc[1])
    assert out["p50"].tolist() == [-1.0, 2.0]
    assert list(out.index) == ["'+a", "b"]
    assert df["ticker"].iloc[0] == "=EVIL"  # input untouched


@pytest.mark.parametrize("n", [0, 1, NAMED_TICKERS, NAMED_TICKERS + 1, 1000])
def test_a_message_names_ten_tickers_at_most(n):
    names = [f"T{i:04d}" for i in range(n)]
    text, reasons = some_names(names), some_reasons({s: f"why {s}" for s in names})
    if n <= NAMED_TICKERS:  # every one of them, nothing said about more
        assert text == ", ".join(names) and "more" not in text
        assert reasons == "; ".join(f"{s}: why {s}" for s in names)
    else:
        shown = NAMED_TICKERS - 1
        assert text == ", ".join(names[:shown]) + f" and {n - shown} more"
        assert reasons == "; ".join(f"{s}: why {s}" for s in names[:shown]) + f"; and {n - shown} more tickers"


def test_warnings_logged_meanwhile_are_kept_and_only_they(caplog):
    """A command that reports its warnings takes those this thread logs, and only those:
    errors and other levels are still shown, as are another thread's warnings and any logged
    after the block."""
    log = logging.getLogger("forecaster")
    shown: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: shown.append(record.getMessage())
    kept: list[str] = []
    log.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="forecaster"):
            with warnings_into(kept) as into:
                log.warning("AAA: 2 rows repaired")
                log.error("BBB failed")
                log.info("reading CCC")
                other = threading.Thread(target=log.warning, args=("DDD: from another thread",))
                other.start()
                other.join()
            log.warning("EEE: after the block")
    finally:
        log.removeHandler(handler)
    assert into is kept and kept == ["AAA: 2 rows repaired"]
    assert shown == ["BBB failed", "reading CCC", "DDD: from another thread", "EEE: after the block"]
