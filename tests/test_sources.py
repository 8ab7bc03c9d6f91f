import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from yf_fixtures import FakeYahoo, make_bars

import forecaster
from forecaster import sources, store
from forecaster.errors import DataError, NetworkError, RateLimitError, ServerError, TickerError

REPO_ROOT = Path(next(iter(forecaster.__path__))).resolve().parent


pytestmark = pytest.mark.usefixtures("offline_yfinance")


def assert_normalised(df: pd.DataFrame) -> None:
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dtype == np.float64 for dtype in df.dtypes)
    assert isinstance(df.index, pd.DatetimeIndex)
    assert df.index.tz is None and df.index.name == "date"
    assert df.index.dtype == "datetime64[ns]"
    assert (df.index == df.index.normalize()).all()


# --------------------------------------------------------------------------- CSV


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """date,open,high,low,close,volume
2024-01-02,10,11,9,10.5,1000
2024-01-03,10.5,12,10,11.5,2000
"""


def test_csv_reads_normalised_frame(tmp_path):
    write(tmp_path, "AAA.csv", GOOD)
    df = sources.read_csv_bars(tmp_path, "aaa")
    assert_normalised(df)
    assert list(df.index.strftime("%Y-%m-%d")) == ["2024-01-02", "2024-01-03"]
    assert df.loc["2024-01-03", "close"] == 11.5
    assert df.loc["2024-01-02", "volume"] == 1000.0


def test_csv_file_named_in_another_case_is_read_and_two_such_are_refused(tmp_path):
    # aapl.csv, as a case-insensitive disk would read it for AAPL; BRK-B's file as brk-b.csv
    write(tmp_path, "aaa.csv", GOOD)
    write(tmp_path, "brk-b.csv", GOOD)
    assert list(sources.read_csv_bars(tmp_path, "AAA")["close"]) == [10.5, 11.5]
    assert list(sources.read_csv_bars(tmp_path, "brk-b")["close"]) == [10.5, 11.5]
    write(tmp_path, "Aaa.csv", GOOD)
    with pytest.raises(DataError) as info:
        sources.read_csv_bars(tmp_path, "AAA")
    assert str(info.value) == f"AAA: several CSV files in {tmp_path} could be its: Aaa.csv, aaa.csv"
    write(tmp_path, "AAA.csv", GOOD.replace("11.5,2000", "11.25,2000"))  # the exact name wins
    assert list(sources.read_csv_bars(tmp_path, "AAA")["close"]) == [10.5, 11.25]


def test_csv_header_is_case_and_space_insensitive_with_adj_close(tmp_path):
    write(
        tmp_path,
        "AAA.csv",
        "\ufeff  Timestamp , OPEN,High ,low,Close, Adj Close ,Volume\n2024-01-02, 10,11,9,10,5,1000\n",
    )
    df = sources.read_csv_bars(tmp_path, "AAA")
    row = df.iloc[0]
    # auto-adjust: O/H/L scaled by adj/close = 0.5, close replaced by adj close
    assert (row["open"], row["high"], row["low"], row["close"]) == (5.0, 5.5, 4.5, 5.0)
    assert row["volume"] == 1000.0


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # a zero row, as some exports write a session without trading: refused as without Adj Close
        ("2024-01-03,0,0,0,0,0,0", "AAA: open 0 on 2024-01-03 is not a finite positive price, in {path}"),
        # a negative close is named as it is, not turned into a negative open
        (
            "2024-01-03,10.5,12,10,-11.5,11.5,2000",
            "AAA: close -11.5 on 2024-01-03 is not a finite positive price, in {path}",
        ),
        # a bad adjusted close is named in its own column and line, not as the open it would scale
        (
            "2024-01-03,10.5,12,10,11.5,-5.75,2000",
            "{path}: adj close -5.75 on 2024-01-03 (line 3) is not a finite positive price",
        ),
        (
            "2024-01-03,10.5,12,10,11.5,0,2000",
            "{path}: adj close 0 on 2024-01-03 (line 3) is not a finite positive price",
        ),
        (
            "2024-01-03,10.5,12,10,11.5,inf,2000",
            "{path}: adj close inf on 2024-01-03 (line 3) is not a finite positive price",
        ),
    ],
)
def test_csv_with_adj_close_refuses_a_bar_without_a_positive_close(tmp_path, row, expected):
    from forecaster.store import load_csv

    write(tmp_path, "AAA.csv", f"Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,10,11,9,10.5,10.5,1000\n{row}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's note on 0 / 0 would reach the user's terminal
        with pytest.raises(DataError) as info:
            load_csv(tmp_path, "AAA")
    assert str(info.value) == expected.format(path=tmp_path / "AAA.csv")


@pytest.mark.parametrize("adj", ["Adj. Close", "Adj Close**", "adj_close", "AdjClose", "Adjusted Close"])
def test_csv_adj_close_column_in_any_common_spelling_adjusts_the_prices(tmp_path, adj):
    # 'Adj. Close' as in Quandl's WIKI prices (after its unadjusted columns), 'Adj Close**' as on
    # Yahoo's history page: an adjusted close left unread would give unadjusted prices unnoticed
    write(tmp_path, "AAA.csv", f"Date,Open,High,Low,Close,Volume,{adj}\n2024-01-02,10,11,9,10,1000,5\n")
    row = sources.read_csv_bars(tmp_path, "AAA").iloc[0]
    assert (row["open"], row["high"], row["low"], row["close"]) == (5.0, 5.5, 4.5, 5.0)


def test_csv_written_by_yfinance_download_is_read(tmp_path):
    # yf.download("AAA").to_csv(): the column levels Price and Ticker, then the index's name
    write(
        tmp_path,
        "AAA.csv",
        "Price,Close,High,Low,Open,Volume\nTicker,AAA,AAA,AAA,AAA,AAA\nDate,,,,,\n"
        "2024-01-02,10.5,11,9,10,1000\n2024-01-03,11.5,12,10,10.5,2000\nbad,1,1,1,1,1\n",
    )
    with pytest.raises(DataError, match=r"unparseable date 'bad' \(line 6\)"):
        sources.read_csv_bars(tmp_path, "AAA")
    write(tmp_path, "AAA.csv", (tmp_path / "AAA.csv").read_text().removesuffix("bad,1,1,1,1,1\n"))
    df = sources.read_csv_bars(tmp_path, "AAA")
    assert_normalised(df)
    assert list(df.index.strftime("%Y-%m-%d")) == ["2024-01-02", "2024-01-03"]
    assert list(df["open"]) == [10.0, 10.5] and list(df["close"]) == [10.5, 11.5]


def test_csv_empty_adj_close_column_is_ignored_and_us_dates_parse(tmp_path):
    write(
        tmp_path,
        "AAA.csv",
        "Date,Open,High,Low,Close,Adj Close,Volume\n01/02/2024,1,2,1,1.5,,100\n",
    )
    df = sources.read_csv_bars(tmp_path, "AAA")
    assert df.index[0] == pd.Timestamp("2024-01-02")
    assert df["close"].iloc[0] == 1.5


def _read_dated_rows(tmp_path, dates: list[str]):
    """Bars read from AAA.csv, one row per date in file order, each row's open 10, 11, 12..."""
    rows = "".join(f"{d},{10 + i},{11 + i},{9 + i},{10.5 + i},100\n" for i, d in enumerate(dates))
    write(tmp_path, "AAA.csv", "Date,Open,High,Low,Close,Volume\n" + rows)
    df = sources.read_csv_bars(tmp_path, "AAA")
    assert list(df["open"]) == [10.0 + i for i in range(len(dates))]
    return df


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        # day first (a European export): the first rows are ambiguous, the 15th is not
        (
            ["10/01/2024", "11/01/2024", "12/01/2024", "15/01/2024", "16/01/2024"],
            ["2024-01-10", "2024-01-11", "2024-01-12", "2024-01-15", "2024-01-16"],
        ),
        # month first, the same days
        (
            ["01/10/2024", "01/11/2024", "01/12/2024", "01/15/2024", "01/16/2024"],
            ["2024-01-10", "2024-01-11", "2024-01-12", "2024-01-15", "2024-01-16"],
        ),
        # wholly ambiguous: month first, whose dates lie a day apart (day first: a month)
        (["01/02/2024", "01/03/2024"], ["2024-01-02", "2024-01-03"]),
        (["02/01/2024", "03/01/2024"], ["2024-01-02", "2024-01-03"]),
        # two-digit years (a spreadsheet's short date), day first and month first
        (["10/01/24", "11/01/24", "12/01/24", "15/01/24"], ["2024-01-10", "2024-01-11", "2024-01-12", "2024-01-15"]),
        (["10.01.24 16:00", "15.01.24 16:00"], ["2024-01-10", "2024-01-15"]),
        (["1/10/24", "1/11/24", "1/15/24"], ["2024-01-10", "2024-01-11", "2024-01-15"]),
        (["1-Jul-22", "5-Jul-22", "15-Jul-22"], ["2022-07-01", "2022-07-05", "2022-07-15"]),
    ],
)
def test_csv_slash_dates_are_read_with_one_order_for_the_whole_file(tmp_path, dates, expected):
    df = _read_dated_rows(tmp_path, dates)
    assert list(df.index.strftime("%Y-%m-%d")) == expected


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        # year first (22-06-29 for 2022-06-29): read day first, the dates would run 2029-06-22,
        # 2030-06-22, 2001-07-22...; month first does not read 22-06-29 at all
        (
            ["22-06-29", "22-06-30", "22-07-01", "22-07-05"],
            ["2022-06-29", "2022-06-30", "2022-07-01", "2022-07-05"],
        ),
        # newest first, and with slashes
        (["22-07-05", "22-07-01", "22-06-30"], ["2022-07-05", "2022-07-01", "2022-06-30"]),
        (["23/12/28", "23/12/29", "24/01/02"], ["2023-12-28", "2023-12-29", "2024-01-02"]),
        # day first still wins where it reads the dates in date order: year first would not
        (["29-06-22", "30-06-22", "01-07-22"], ["2022-06-29", "2022-06-30", "2022-07-01"]),
        # every field 12 or less: month first and day first read them a year apart, year
        # first a day apart, as daily bars are
        (["12-07-01", "12-07-02"], ["2012-07-01", "2012-07-02"]),
        # one month of a year-first export: day first reads it in date order too (2001-07-22,
        # 2002-07-22...), but years apart
        (
            ["22-07-01", "22-07-05", "22-07-06", "22-07-07", "22-07-08", "22-07-11"],
            ["2022-07-01", "2022-07-05", "2022-07-06", "2022-07-07", "2022-07-08", "2022-07-11"],
        ),
        (["24/01/02", "24/01/03", "24/01/04"], ["2024-01-02", "2024-01-03", "2024-01-04"]),
    ],
)
def test_csv_dates_with_a_two_digit_year_first_are_read_year_first_when_no_other_order_fits(tmp_path, dates, expected):
    from forecaster.store import load_csv

    df = _read_dated_rows(tmp_path, dates)
    assert list(df.index.strftime("%Y-%m-%d")) == expected
    assert list(load_csv(tmp_path, "AAA").index.strftime("%Y-%m-%d")) == sorted(expected)


@pytest.mark.parametrize("offset", ["+09", "+0900", "+09:00", "Z"])
def test_csv_dates_with_any_iso_offset_form_keep_the_local_date(tmp_path, offset):
    # ISO 8601 allows the offset as hours alone (+09) as well as +0900 and +09:00
    write(
        tmp_path,
        "7203.T.csv",
        f"Datetime,Open,High,Low,Close,Volume\n2024-03-08T00:00:00{offset},1,1,1,1,1\n2024-03-11T00:00:00{offset},1,1,1,1,1\n",
    )
    df = sources.read_csv_bars(tmp_path, "7203.T")
    assert list(df.index.strftime("%Y-%m-%d")) == ["2024-03-08", "2024-03-11"]
    assert_normalised(df)


def test_csv_dates_with_utc_offsets_keep_the_session_date(tmp_path):
    # as written by DataFrame.to_csv of a yfinance history() frame; Tokyo must not shift a day
    write(
        tmp_path,
        "7203.T.csv",
        "Datetime,Open,High,Low,Close,Volume\n"
        "2024-03-08 00:00:00+09:00,1,1,1,1,1\n"
        "2024-03-11 00:00:00+09:00,1,1,1,1,1\n",
    )
    df = sources.read_csv_bars(tmp_path, "7203.T")
    assert list(df.index.strftime("%Y-%m-%d")) == ["2024-03-08", "2024-03-11"]
    assert_normalised(df)


def test_csv_is_not_sorted_or_repaired_here(tmp_path):
    write(
        tmp_path,
        "AAA.csv",
        "date,open,high,low,close,volume\n2024-01-03,1,1,1,1,1\n2024-01-02,2,2,2,2,\n",
    )
    df = sources.read_csv_bars(tmp_path, "AAA")
    assert list(df.index.strftime("%m-%d")) == ["01-03", "01-02"]
    assert np.isnan(df["volume"].iloc[1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("date,open,high,low,close,volume\n", "has a header but no rows"),
        ("date,open,high,close,volume\n2024-01-02,1,1,1,1\n", "missing column(s) low"),
        ("day,open,high,low,close,volume\n2024-01-02,1,1,1,1,1\n", "missing column(s) date"),
        (
            "date;open;high;low;close;volume\n2024-01-02;1,5;1;1;1;1\n",
            "looks like ';'-separated; expected commas",
        ),
        (
            "date\topen\thigh\tlow\tclose\tvolume\n2024-01-02\t1\t1\t1\t1\t1\n",
            "looks like tab-separated; expected commas",
        ),
        (
            "date,open,high,low,close,volume\n2024-01-02,1,1,1,1,1\nnot-a-date,1,1,1,1,1\n",
            "unparseable date 'not-a-date' (line 3)",
        ),
        (
            "date,open,high,low,close,volume\n2024-01-02,1,1,1,1,1\n,1,1,1,1,1\n",
            "empty date (line 3)",
        ),
        # dates in two formats: never read each in whatever way it parses
        (
            "date,open,high,low,close,volume\n2022-07-01,1,1,1,1,1\n2022-07-05,1,1,1,1,1\n07/06/2022,1,1,1,1,1\n",
            "date '07/06/2022' (line 4) is not in the file's date format, that of '2022-07-01' (line 2)",
        ),
        # the file's format is that of most of its dates, not always the first one's
        (
            "date,open,high,low,close,volume\n07/01/2022,1,1,1,1,1\n2022-07-05,1,1,1,1,1\n2022-07-06,1,1,1,1,1\n",
            "date '07/01/2022' (line 2) is not in the file's date format, that of '2022-07-05' (line 3)",
        ),
        (
            "date,open,high,low,close,volume\n15/01/2024,1,1,1,1,1\n16/01/2024,1,1,1,1,1\n2024-01-17,1,1,1,1,1\n",
            "date '2024-01-17' (line 4) is not in the file's date format, that of '15/01/2024' (line 2)",
        ),
        (
            "date,open,high,low,close,volume\n1-Jul-22,1,1,1,1,1\n5-Jul-22,1,1,1,1,1\nJul 6 2022,1,1,1,1,1\n",
            "date 'Jul 6 2022' (line 4) is not in the file's date format, that of '1-Jul-22' (line 2)",
        ),
        (
            "date,open,high,low,close,volume\n2024-01-02,1,1,1,1,1\n2024-01-03,1,1,1,abc,1\n",
            "non-numeric value 'abc' in column close on 2024-01-03",
        ),
        (
            "date,open,close,Close,high,low,volume\n2024-01-02,1,1,1,1,1,1\n",
            "duplicate column(s) close",
        ),
        (  # pandas' df.to_csv() of a frame whose date index has no name
            ",open,high,low,close,volume\n2024-01-02,1,1,1,1,1\n",
            "missing column(s) date (found: (no name), open, high, low, close, volume); if the column with "
            "no name holds the dates, name it Date",
        ),
        (  # the very same name twice: pandas would rename the second, and the first be read
            "Date,Open,High,Low,Close,Volume,Close\n2024-01-02,1,1,1,1,1,9\n",
            "duplicate column(s) close",
        ),
        (
            "date,open,high,low,close,volume\n2024-01-02,1,1,1,1,1,7,8\n",
            "line 2 has more fields than the header (8 of 6)",
        ),
        (  # every price column is needed; only volume may be left out
            "date,high,low,close,volume\n2024-01-02,1,1,1,1\n",
            "missing column(s) open (found: date, high, low, close, volume)",
        ),
        (  # a mistyped year in a file the careful reader reads (a space after a comma)
            "date,open,high,low,close,volume\n2024-01-02,1,1,1,1,1\n2925-01-03, 1,1,1,1,1\n",
            "date '2925-01-03' (line 3) is outside the years 1678-2261 that a date can take; a mistyped year?",
        ),
        (
            "date,open,high,low,close,volume\n2024-01-02,1,1,1,1,1\n2024-01-02,1,1,1,1,1,7\n",
            "line 3 has more fields than the header (7 of 6)",
        ),
        # yearly or monthly figures: pandas reads "2015" as 1 January, "2015-03" as 1 March
        ("date,open,high,low,close,volume\n2015,1,1,1,1,1\n2016,1,1,1,1,1\n", "date '2015' (line 2) has no day"),
        ("date,open,high,low,close,volume\n2015-03,1,1,1,1,1\n2015-04,1,1,1,1,1\n", "'2015-03' (line 2) has no day"),
        ("date,open,high,low,close,volume\nJan 2015,1,1,1,1,1\nFeb 2015,1,1,1,1,1\n", "'Jan 2015' (line 2) has no day"),
        (
            "date,open,high,low,close,volume\n2015-01 00:00,1,1,1,1,1\n2015-02 00:00,1,1,1,1,1\n",
            "date '2015-01 00:00' (line 2) has no day",
        ),
        (  # after dates of three fields, which need no closer look
            "date,open,high,low,close,volume\n2015-01-02,1,1,1,1,1\n2015-01-05,1,1,1,1,1\n2015-03,1,1,1,1,1\n",
            "date '2015-03' (line 4) has no day",
        ),
    ],
)
def test_csv_bad_inputs_name_the_problem(tmp_path, text, expected):
    path = write(tmp_path, "BAD.csv", text)
    with pytest.raises(DataError) as info:
        sources.read_csv_bars(tmp_path, "BAD")
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "dates",
    [
        ["20150102", "20150105"],
        ["02Jan2015", "05Jan2015"],
        ["Jan 2 2015", "Jan 5 2015"],
        ["2-Jan-15", "5-Jan-15"],
        ["2015-01-02 16:00 -05:00", "2015-01-05 16:00 -05:00"],
    ],
)
def test_csv_dates_with_a_day_in_any_layout_are_not_taken_for_months(tmp_path, dates):
    write(tmp_path, "AAA.csv", "date,open,high,low,close,volume\n" + "".join(f"{d},1,1,1,1,1\n" for d in dates))
    assert list(sources.read_csv_bars(tmp_path, "AAA").index.strftime("%Y-%m-%d")) == ["2015-01-02", "2015-01-05"]


ROWS = "".join(f"2024-01-{d:02d},1,1,1,1,1\n" for d in range(2, 30))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a million characters in a date field: 93 s in the parser of other date formats, which
        # takes a time that grows with the square of the field's length
        (
            "date,open,high,low,close,volume\n" + ROWS + "9" * 1_000_000 + ",1,1,1,1,1\n",
            "unparseable date '9999999999999999999999999999999999999999'... (row 29), 1000000 characters long",
        ),
        # a header of a million fields, named or left empty: each name was counted among all
        # the others (hours), then each row read as a million columns
        (
            "date,open,high,low,close,volume" + "".join(f",c{i}" for i in range(1_000_000)) + "\n" + ROWS,
            "its header has 1000006 fields, not a price file's few (at most 1000)",
        ),
        ("date,open,high,low,close,volume" + "," * 1_000_000 + "\n" + ROWS, "its header has 1000006 fields"),
    ],
    ids=["long date", "a million named columns", "a million empty columns"],
)
def test_a_csv_file_of_a_few_megabytes_is_refused_in_seconds_not_hours(tmp_path, text, expected):
    import time

    started = time.monotonic()
    path = write(tmp_path, "BAD.csv", text)
    with pytest.raises(DataError) as info:
        sources.read_csv_bars(tmp_path, "BAD")
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert expected in message and str(path) in message


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # two exports run together: the second one's header is line 5 (line 1 the first's)
        (
            "2024-01-02,10,11,9,10.5,1000\n\n   \nDate,Open,High,Low,Close,Volume\n2024-01-03,10,11,9,10.5,1000\n",
            "unparseable date 'Date' (line 5)",
        ),
        (
            "2024-01-02,10,11,9,10.5,1000\n\n,,,,,\n2024-01-03,10,11,9,10.5x,1000\n",
            "in column close on 2024-01-03 (line 5)",
        ),
    ],
)
def test_csv_errors_name_the_line_an_editor_shows(tmp_path, rows, expected):
    path = write(tmp_path, "AAA.csv", "Date,Open,High,Low,Close,Volume\n" + rows)
    with pytest.raises(DataError) as info:
        sources.read_csv_bars(tmp_path, "AAA")
    assert str(info.value).startswith(f"{path}: ") and str(info.value).endswith(expected)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # a spreadsheet's export: rows of empty fields below the data
        ("2024-01-02,10,11,9,10.5,1000\n2024-01-03,10.5,12,10,11.5,2000\n,,,,,\n,,,,,\n", ["01-02", "01-03"]),
        # one in the middle of day-first dates: the whole file is still read day first
        ("02/01/2024,10,11,9,10.5,1000\n,,,,,\n15/01/2024,10.5,12,10,11.5,2000\n", ["01-02", "01-15"]),
    ],
)
def test_csv_rows_of_empty_fields_are_dropped_with_a_warning(tmp_path, caplog, rows, expected):
    from forecaster.store import load_csv

    write(tmp_path, "AAA.csv", "Date,Open,High,Low,Close,Volume\n" + rows)
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        df = load_csv(tmp_path, "AAA")
    assert list(df.index.strftime("%m-%d")) == expected
    assert "AAA: dropped" in caplog.text and "missing date or price" in caplog.text


CUT_HEADER = "Date,Open,High,Low,Close,Volume\n"
CUT_ROWS = "2024-01-02,10,11,9,10.5,1000\n2024-01-03,10.5,12,10,11.5,2000\n"


@pytest.mark.parametrize(
    ("text", "line", "fields"),
    [
        # in the middle of the file, with CRLF line ends, and where spaces send it to pandas
        (CUT_HEADER + "2024-01-02,10,11,9,10.5\n" + CUT_ROWS.replace("01-0", "01-1"), 2, 5),
        ((CUT_HEADER + CUT_ROWS + "2024-01-04,11.5,12,11,11.\n").replace("\n", "\r\n"), 4, 5),
        (CUT_HEADER + CUT_ROWS.replace(",", ", ") + "2024-01-04, 11.5, 12, 11, 11.\n", 4, 5),
        # a row of empty fields (dropped as blank) before the cut line does not shift its number
        (CUT_HEADER + CUT_ROWS + ",,,,,\n2024-01-04,11.5,12,11,11.\n", 5, 5),
    ],
)
def test_csv_line_cut_off_is_an_error_naming_the_line(tmp_path, text, line, fields):
    """A row with fewer fields than the header never becomes a bar (a cut-off close, a volume of 0)."""
    path, message = _csv_error(tmp_path, text)
    assert message.startswith(f"{path}: line {line} is incomplete ({fields} of 6 fields"), message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # a write cut off mid-line, no line end after it: fields lost, or digits of the last field
        (CUT_HEADER + CUT_ROWS + "2024-01-04,11.5,12.1,10.9,11.", 4),
        (CUT_HEADER + CUT_ROWS + "2024-01-04,11.5,12", 4),
        (CUT_HEADER + CUT_ROWS + "2024-01-04", 4),
        (CUT_HEADER + CUT_ROWS + "2024-01-04,11.5,12,11,11.5,30", 4),  # a volume of 3000 cut to 30
        (CUT_HEADER + CUT_ROWS + "2024-01-04,11.5,12,11,11.5", 4),  # the close 11.57 cut to 11.5, no volume
        (CUT_HEADER + CUT_ROWS.replace(",", ", ") + "2024-01-04, 11.5, 12, 11, 11.5, 30", 4),
        ((CUT_HEADER + CUT_ROWS).replace("\n", "\r\n") + ",,,,,\r\n2024-01-04,11.5,12,11,11.5,30", 5),
        (CUT_HEADER.replace("\n", ",\n") + CUT_ROWS + "2024-01-04,11.5,12,11,11.", 4),  # a header ending with a comma
    ],
)
def test_csv_last_line_without_a_line_end_is_not_read_as_a_bar(tmp_path, caplog, text, line):
    """A file read while it is being written ends inside its last line: cut in its last field,
    the line has every field, and a volume of 30 for 3000 (or a close of 11.5 for 11.57, in a
    file without volumes) read as a bar. It is left out, named in a warning."""
    from forecaster.store import load_csv

    path = write(tmp_path, "AAA.csv", text)
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        df = load_csv(tmp_path, "AAA")
    assert list(df.index.strftime("%Y-%m-%d")) == ["2024-01-02", "2024-01-03"]
    assert list(df["close"]) == [10.5, 11.5] and list(df["volume"]) == [1000, 2000]
    said = [r.getMessage() for r in caplog.records if "has no line end" in r.getMessage()]
    assert said == [
        f"{path}: line {line}, the last, has no line end, as a file read while it is being written has: "
        "it was not read (end a file's last line, and write it whole to another name, then move it into "
        "place)"
    ], caplog.text
    if text.count(",") - text.rpartition("\n")[0].count(",") < 5:
        return  # the last line lacks fields: ended, it would be an incomplete line (above)
    # the same file whole: every bar, and no word
    write(tmp_path, "AAA.csv", text + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        whole = load_csv(tmp_path, "AAA")
    assert len(whole) == 3 and "no line end" not in caplog.text


def test_a_file_of_a_header_alone_without_a_line_end_is_a_header(tmp_path):
    from forecaster.errors import NoUsableBars

    write(tmp_path, "AAA.csv", CUT_HEADER.strip())
    with pytest.raises(NoUsableBars, match="has a header but no rows"):
        sources.read_csv_bars(tmp_path, "AAA")


def _csv_error(tmp_path, text: str):
    """The path of AAA.csv holding ``text`` and the one-line DataError reading it gives."""
    from forecaster.store import load_csv

    path = write(tmp_path, "AAA.csv", text)
    with pytest.raises(DataError) as info:
        load_csv(tmp_path, "AAA")
    message = str(info.value)
    assert "\n" not in message
    return path, message


def test_csv_header_ending_with_a_comma_does_not_make_every_line_incomplete(tmp_path):
    from forecaster.store import load_csv

    write(tmp_path, "AAA.csv", CUT_HEADER.replace("\n", ",\n") + CUT_ROWS)
    assert list(load_csv(tmp_path, "AAA")["close"]) == [10.5, 11.5]
    write(tmp_path, "AAA.csv", CUT_HEADER.replace("\n", ",\n") + CUT_ROWS + "2024-01-04,11.5,12,11,11.\n")
    with pytest.raises(DataError, match="line 4 is incomplete \\(5 of 6 fields"):
        load_csv(tmp_path, "AAA")


@pytest.mark.parametrize(
    ("text", "line", "fields"),
    [
        (CUT_HEADER + "2024-01-02,1,1,1,1,1\n2024-01-03,1,1,1,1,1,7,8\n", 3, 8),
        (CUT_HEADER + CUT_ROWS + "2024-01-04,11.5,12,11,11.5,3000,\n", 4, 7),
        # with CRLF line ends, after a row of empty fields, and where spaces send it to pandas
        ((CUT_HEADER + CUT_ROWS + ",,,,,\n2024-01-04,11.5,12,11,11.5,3000,9\n").replace("\n", "\r\n"), 5, 7),
        (CUT_HEADER + CUT_ROWS.replace(",", ", ") + "2024-01-04, 11.5, 12, 11, 11.5, 3000, 9\n", 4, 7),
        # a longer line before a shorter one: the first is named
        (CUT_HEADER + "2024-01-02,1,1,1,1,1,7\n2024-01-03,1,1,1,1\n", 2, 7),
    ],
)
def test_csv_line_with_more_fields_than_the_header_is_an_error_naming_the_line(tmp_path, text, line, fields):
    path, message = _csv_error(tmp_path, text)
    assert message.startswith(f"{path}: line {line} has more fields than the header ({fields} of 6)"), message


def test_csv_header_ending_with_a_comma_allows_its_unnamed_field_but_no_more(tmp_path):
    from forecaster.store import load_csv

    header = CUT_HEADER.replace("\n", ",\n")
    write(tmp_path, "AAA.csv", header + CUT_ROWS.replace("\n", ",x\n"))
    assert list(load_csv(tmp_path, "AAA")["close"]) == [10.5, 11.5]
    write(tmp_path, "AAA.csv", header + CUT_ROWS + "2024-01-04,11.5,12,11,11.5,3000,x,y\n")
    with pytest.raises(DataError, match="line 4 has more fields than the header \\(8 of 7\\)"):
        load_csv(tmp_path, "AAA")


def test_csv_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError) as info:
        sources.read_csv_bars(tmp_path, "NOPE")
    assert str(tmp_path / "NOPE.csv") in str(info.value)


def test_csv_file_name_taken_by_a_folder_is_said_to_be_a_folder(tmp_path):
    (tmp_path / "AAA.csv").mkdir()
    expected = f"AAA: {tmp_path / 'AAA.csv'} is a folder, not a CSV file"
    with pytest.raises(DataError) as info:
        sources.read_csv_bars(tmp_path, "AAA")
    assert str(info.value) == expected
    with pytest.raises(DataError) as info:
        store.load_bars("csv", tmp_path, ["AAA"])
    assert str(info.value) == expected


def test_csv_not_utf8(tmp_path):
    (tmp_path / "AAA.csv").write_bytes(b"date,open,high,low,close,volume\n\xff\xfe,1,1,1,1,1\n")
    with pytest.raises(DataError, match="not UTF-8"):
        sources.read_csv_bars(tmp_path, "AAA")


def test_csv_bad_symbol_never_touches_the_filesystem(tmp_path):
    with pytest.raises(TickerError):
        sources.read_csv_bars(tmp_path, "../secret")


# --------------------------------------------------------------------------- Yahoo


def test_fetch_history_success_matches_served_bars():
    bars = make_bars("2024-01-02", 30)
    yahoo = FakeYahoo({"AAA": bars})
    df = sources.fetch_history("aaa", session=yahoo.session())
    assert_normalised(df)
    pd.testing.assert_frame_equal(df, bars, check_freq=False)
    assert yahoo.chart_calls("AAA")[-1]["period1"].startswith("-")  # period="max"


def test_fetch_history_start_inclusive_end_exclusive():
    bars = make_bars("2024-01-02", 30)
    yahoo = FakeYahoo({"AAA": bars})
    df = sources.fetch_history("AAA", "2024-01-10", "2024-01-19", session=yahoo.session())
    assert df.index[0] == pd.Timestamp("2024-01-10")
    assert df.index[-1] == pd.Timestamp("2024-01-18")


def test_fetch_history_several_tickers_and_asian_session_dates():
    us, jp = make_bars("2024-03-04", 10, seed=1), make_bars("2024-03-04", 10, seed=2)
    yahoo = FakeYahoo({"USA": us, "7203.T": jp})
    yahoo.timezones["7203.T"] = "Asia/Tokyo"  # 09:30 JST is the previous day in UTC
    session = yahoo.session()
    pd.testing.assert_frame_equal(sources.fetch_history("USA", session=session), us, check_freq=False)
    pd.testing.assert_frame_equal(sources.fetch_history("7203.T", session=session), jp, check_freq=False)


def test_fetch_history_applies_adjustment():
    bars = make_bars("2024-01-02", 5)
    yahoo = FakeYahoo({"DIV": bars})
    yahoo.adjclose["DIV"] = bars["close"] * 0.9
    df = sources.fetch_history("DIV", session=yahoo.session())
    np.testing.assert_allclose(df["close"], bars["close"] * 0.9)
    np.testing.assert_allclose(df["open"], bars["open"] * 0.9)


def test_fetch_history_unknown_symbol_is_ticker_error():
    yahoo = FakeYahoo({})
    with pytest.raises(TickerError, match=r"^ZZZZ: no data \(unknown or delisted symbol\?\)$"):
        sources.fetch_history("ZZZZ", session=yahoo.session())


@pytest.mark.parametrize("status", [500, 502, 503])
def test_fetch_history_yahoo_server_error_is_not_an_unknown_symbol(status):
    """yfinance answers a Yahoo 5xx as it does an unknown symbol, whether the symbol's time
    zone is cached or not: the status it logs still tells them apart."""
    yahoo = FakeYahoo({f"KNOWN{status}": make_bars("2024-01-02", 5)})
    sources.fetch_history(f"KNOWN{status}", session=yahoo.session())  # its time zone is cached now
    yahoo.answers.update({f"KNOWN{status}": status, f"NEW{status}": status})
    for sym in (f"NEW{status}", f"KNOWN{status}"):
        with pytest.raises(ServerError, match=rf"^{sym}: Yahoo server error \(HTTP {status}\); retry later$"):
            sources.fetch_history(sym, "2024-01-02", "2024-01-09", session=yahoo.session())


def test_retry_yahoo_server_error_backs_off_as_the_network_does():
    yahoo = FakeYahoo({"DOWN5": 503})
    sleep = FakeClock()
    with pytest.raises(ServerError):
        sources.fetch_with_retry("DOWN5", session=yahoo.session(), sleep=sleep, rng=lambda: 1.0)
    assert sleep.sleeps == [1.0, 2.0, 4.0]  # 4 attempts, the network's base delay


def test_fetch_history_rate_limit():
    yahoo = FakeYahoo({"RL": 429})
    with pytest.raises(RateLimitError, match="RL"):
        sources.fetch_history("RL", session=yahoo.session())


def test_fetch_history_network_down():
    yahoo = FakeYahoo({"AAA": make_bars("2024-01-02", 5)})
    yahoo.down = True
    with pytest.raises(NetworkError, match="AAA: cannot reach Yahoo"):
        sources.fetch_history("AAA", session=yahoo.session())


class FakeClock:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def test_retry_rate_limit_backs_off_longer_then_gives_up():
    yahoo = FakeYahoo({"RL": 429})
    sleep = FakeClock()
    with pytest.raises(RateLimitError):
        sources.fetch_with_retry("RL", session=yahoo.session(), sleep=sleep, rng=lambda: 1.0)
    assert sleep.sleeps == [5.0, 10.0, 20.0]  # 4 attempts, base 5x for 429
    assert len(yahoo.calls) >= 4


def test_retry_network_uses_full_jitter_and_cap():
    yahoo = FakeYahoo({})
    yahoo.down = True
    sleep = FakeClock()
    with pytest.raises(NetworkError):
        sources.fetch_with_retry(
            "AAA", session=yahoo.session(), sleep=sleep, rng=lambda: 0.5, attempts=5, max_delay=3.0
        )
    assert sleep.sleeps == [0.5, 1.0, 1.5, 1.5]


def test_retry_no_data_only_once():
    yahoo = FakeYahoo({})
    sleep = FakeClock()
    with pytest.raises(TickerError):
        sources.fetch_with_retry("ZZZ", session=yahoo.session(), sleep=sleep, rng=lambda: 1.0)
    assert len(sleep.sleeps) == 1


def test_retry_clears_yfinance_cache_so_a_flaky_5xx_recovers():
    bars = make_bars("2024-01-02", 10)
    yahoo = FakeYahoo({"FLAKY": 500})

    def sleep(seconds: float) -> None:
        yahoo.answers["FLAKY"] = bars  # the server recovers while we wait

    df = sources.fetch_with_retry("FLAKY", session=yahoo.session(), sleep=sleep)
    pd.testing.assert_frame_equal(df, bars, check_freq=False)


def test_retry_defaults_are_the_named_budgets(monkeypatch):
    calls = []

    def down(*args, **kwargs):
        calls.append(args)
        raise NetworkError("AAA: cannot reach Yahoo")

    monkeypatch.setattr(sources, "fetch_history", down)
    sleep = FakeClock()
    with pytest.raises(NetworkError):
        sources.fetch_with_retry("AAA", sleep=sleep, rng=lambda: 1.0)
    assert len(calls) == sources.RETRY_ATTEMPTS
    base = sources.RETRY_BASE_DELAY_S
    assert sleep.sleeps == [min(sources.RETRY_MAX_DELAY_S, base * 2**i) for i in range(sources.RETRY_ATTEMPTS - 1)]


def test_retry_respects_deadline():
    yahoo = FakeYahoo({"RL": 429})
    sleep = FakeClock()
    with pytest.raises(RateLimitError):
        sources.fetch_with_retry("RL", session=yahoo.session(), sleep=sleep, rng=lambda: 1.0, deadline=3.0)
    assert sleep.sleeps == []


def test_retry_does_not_retry_data_errors(monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise DataError("X: Yahoo error: odd")

    monkeypatch.setattr(sources, "fetch_history", broken)
    with pytest.raises(DataError, match="odd"):
        sources.fetch_with_retry("X", sleep=FakeClock())
    assert len(calls) == 1


def test_drop_unfinished_session():
    bars = make_bars("2024-01-02", 3)  # ends 2024-01-04
    during = pd.Timestamp("2024-01-04 15:00", tz="America/New_York").tz_convert("UTC")
    after = pd.Timestamp("2024-01-04 19:00", tz="America/New_York").tz_convert("UTC")
    assert len(sources.drop_unfinished_session(bars, "America/New_York", during)) == 2
    assert len(sources.drop_unfinished_session(bars, "America/New_York", after)) == 3
    next_day = pd.Timestamp("2024-01-05 10:00", tz="America/New_York").tz_convert("UTC")
    assert len(sources.drop_unfinished_session(bars, "America/New_York", next_day)) == 3


def test_drop_unfinished_session_drops_every_row_of_that_day():
    """Yahoo's frame with the session in progress twice: both rows go (the last one alone
    went, and the other, a partial bar, was stored)."""
    bars = make_bars("2024-01-02", 3)  # ends 2024-01-04
    twice = pd.concat([bars, bars.iloc[-1:] * 1.01])
    during = pd.Timestamp("2024-01-04 15:00", tz="America/New_York").tz_convert("UTC")
    got = sources.drop_unfinished_session(twice, "America/New_York", during)
    pd.testing.assert_frame_equal(got, bars.iloc[:2], check_freq=False)
    after = pd.Timestamp("2024-01-04 19:00", tz="America/New_York").tz_convert("UTC")
    assert len(sources.drop_unfinished_session(twice, "America/New_York", after)) == 4


def _ending(day: str) -> pd.DataFrame:
    bars = make_bars("2024-11-01", 60)
    return bars[bars.index <= pd.Timestamp(day)]


@pytest.mark.parametrize(
    ("local_time", "kept"),
    [
        ("2024-12-23 16:14", False),  # a full day: 16:00 close, plus the grace minutes
        ("2024-12-23 16:15", True),
        ("2024-12-24 13:14", False),  # Christmas Eve is a half day: 13:00 close
        ("2024-12-24 13:15", True),
    ],
)
def test_drop_unfinished_session_follows_the_calendar_close_and_grace(local_time, kept):
    now = pd.Timestamp(local_time, tz="America/New_York")
    bars = _ending(str(now.date()))
    got = sources.drop_unfinished_session(bars, "America/New_York", now, calendar="XNYS")
    assert len(got) == len(bars) - (0 if kept else 1)
    assert sources.CLOSE_GRACE_MINUTES == 15


def test_drop_unfinished_session_uses_the_configured_calendar_not_the_time_zone():
    # A Tokyo bar at 16:30 Tokyo time: Tokyo (XTKS) closed at 15:30, while the default New
    # York calendar has this session still ahead (it closes at 13:00 New York, 03:00 in Tokyo).
    tz = "Asia/Tokyo"
    now = pd.Timestamp("2024-12-24 16:30", tz=tz)
    bars = _ending("2024-12-24")
    assert len(sources.drop_unfinished_session(bars, tz, now, calendar="XTKS")) == len(bars)
    assert len(sources.drop_unfinished_session(bars, tz, now)) == len(bars) - 1
    assert len(sources.drop_unfinished_session(bars, tz, now, calendar="XNYS")) == len(bars) - 1


def test_drop_unfinished_session_fallback_hour_when_the_calendar_does_not_trade():
    # 2024-07-04: New York is closed, London trades; a London bar of that day is final only
    # after the fallback hour, local time.
    tz = "Europe/London"
    bars = make_bars("2024-06-03", 24)
    assert bars.index[-1] == pd.Timestamp("2024-07-04")
    before = pd.Timestamp("2024-07-04 17:59", tz=tz)
    after = pd.Timestamp("2024-07-04 18:00", tz=tz)
    assert sources.FALLBACK_CLOSE_HOUR == 18
    assert len(sources.drop_unfinished_session(bars, tz, before, calendar="XNYS")) == len(bars) - 1
    assert len(sources.drop_unfinished_session(bars, tz, after, calendar="XNYS")) == len(bars)
    assert len(sources.drop_unfinished_session(bars, tz, before, close_hour=17, calendar="XNYS")) == len(bars)


def test_drop_unfinished_session_keeps_empty_and_unzoned_bars():
    empty = sources.empty_bars()
    assert sources.drop_unfinished_session(empty, "America/New_York") is empty
    bars = make_bars("2024-01-02", 3)
    now = pd.Timestamp("2024-01-04 15:00", tz="America/New_York")
    assert sources.drop_unfinished_session(bars, None, now) is bars


def test_fetch_with_retry_passes_the_calendar_on(monkeypatch):
    seen = []
    bars = make_bars("2024-01-02", 3)

    def fetch(ticker, start=None, end=None, **options):
        seen.append(options["calendar"])
        return bars

    monkeypatch.setattr(sources, "fetch_history", fetch)
    assert sources.fetch_with_retry("AAA", calendar="XTKS") is bars
    assert sources.fetch_with_retry("AAA") is bars
    assert seen == ["XTKS", "XNYS"]


def test_configure_yfinance_sets_private_quiet_strict_mode(tmp_path, monkeypatch):
    import yfinance as yf
    from yfinance import cache

    monkeypatch.setattr(sources, "_yf_configured", False)
    previous = cache._TzDBManager.get_location()
    try:
        target = tmp_path / "yf"
        sources.configure_yfinance(target)
        assert target.stat().st_mode & 0o777 == 0o700
        assert cache._TzDBManager.get_location() == str(target)
        assert yf.config.debug.hide_exceptions is False
        assert yf.config.network.retries in (None, 0)
        assert logging.getLogger("yfinance").propagate is False
        sources.configure_yfinance(tmp_path / "other")  # once per process
        assert not (tmp_path / "other").exists()
    finally:
        yf.set_tz_cache_location(previous)


def test_yfinance_log_lines_reach_forecaster_yfinance_at_debug_and_never_stderr(capsys, caplog):
    """configure_yfinance ran for the session (conftest): yfinance's own lines, DEBUG ones
    included, are kept off stderr and re-emitted on 'forecaster.yfinance' when it listens."""
    yf_log = logging.getLogger("yfinance")
    yf_log.debug("url=https://example.invalid/v8/finance/chart/AAA")
    yf_log.warning("AAA: possibly delisted")
    assert capsys.readouterr().err == ""
    with caplog.at_level(logging.DEBUG, logger="forecaster.yfinance"):
        yf_log.debug("response code=200")
        yf_log.warning("AAA: possibly delisted")
    forwarded = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "forecaster.yfinance"]
    assert forwarded == [(logging.DEBUG, "response code=200"), (logging.DEBUG, "AAA: possibly delisted")]


def test_importing_the_data_layer_does_not_import_yfinance():
    code = "import sys, forecaster.sources, forecaster.store; sys.exit('yfinance' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_dates_with_a_utc_offset_in_another_format_keep_their_local_date(tmp_path):
    """'Jan 02 2024 22:00 -0500' is the evening of 2 January where it was written, as its ISO
    form is: it read as 3 January (UTC's date), a Saturday for a Friday's bar."""
    rows = "".join(f'"Jan {d:02d} 2024 22:00 -0500",10,11,9,10.5,100\n' for d in (2, 3, 4, 5))
    write(tmp_path, "AAA.csv", "Date,Open,High,Low,Close,Volume\n" + rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's note on time zones would reach the user's terminal
        df = sources.read_csv_bars(tmp_path, "AAA")
    assert list(df.index.strftime("%Y-%m-%d")) == ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    # across a change to daylight saving time the offset changes: it was an unexpected error
    rows = '"Mar 08 2024 4:00 PM -0500",10,11,9,10.5,100\n"Mar 11 2024 4:00 PM -0400",10,11,9,10.5,100\n'
    write(tmp_path, "BBB.csv", "Date,Open,High,Low,Close,Volume\n" + rows)
    assert list(sources.read_csv_bars(tmp_path, "BBB").index.strftime("%Y-%m-%d")) == ["2024-03-08", "2024-03-11"]


def test_a_newest_first_file_is_read_quietly_and_keeps_the_row_pasted_above_a_date_it_repeats(tmp_path, caplog):
    """Newest-first exports (Investing, Nasdaq, Alpha Vantage) are updated by pasting rows at the
    top: of a date written twice, the upper row is the later one. The stable sort kept the lower,
    stale one; and every read of such a file warned that its dates were out of order."""
    from forecaster.store import load_csv

    write(
        tmp_path,
        "AAA.csv",
        "Date,Open,High,Low,Close,Volume\n"
        "2024-01-04,12,13,11,12.8,300\n"  # today's final bar, pasted above
        "2024-01-04,12,13,11,12.5,150\n"  # the provisional one of the same day
        "2024-01-03,11,12,10,11.5,200\n"
        "2024-01-02,10,11,9,10.5,100\n",
    )
    with caplog.at_level("WARNING", logger="forecaster"):
        df = load_csv(tmp_path, "AAA")
    assert list(df["close"]) == [10.5, 11.5, 12.8] and list(df["volume"]) == [100, 200, 300]
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "out of order" in m], said
    assert [m for m in said if "duplicate date" in m] == [
        f"AAA: dropped 1 row(s) with a duplicate date in {tmp_path / 'AAA.csv'} (kept the upper row, the file being "
        "written newest first, of each): 2024-01-04"
    ]
    caplog.clear()
    write(
        tmp_path,
        "BBB.csv",
        "Date,Open,High,Low,Close,Volume\n2024-01-03,11,12,10,11.5,200\n"
        "2024-01-02,10,11,9,10.5,100\n2024-01-04,12,13,11,12.8,300\n",
    )
    with caplog.at_level("WARNING", logger="forecaster"):
        assert list(load_csv(tmp_path, "BBB")["close"]) == [10.5, 11.5, 12.8]
    assert [r.getMessage() for r in caplog.records] == [
        f"BBB: dates were out of order in {tmp_path / 'BBB.csv'}; sorted 3 rows"
    ]


@pytest.mark.parametrize("name", ["Vol", "Vol.", "vol"])
def test_a_volume_column_named_vol_is_read(tmp_path, name):
    """It was ignored: the volume set to 0 on every row, with a note for a file without one."""
    write(
        tmp_path,
        "AAA.csv",
        f"Date,Open,High,Low,Close,{name}\n2024-01-02,10,11,9,10.5,1000\n2024-01-03,10.5,12,10,11.5,2000\n",
    )
    assert list(sources.read_csv_bars(tmp_path, "AAA")["volume"]) == [1000.0, 2000.0]
    write(tmp_path, "BBB.csv", "Date,Open,High,Low,Close,Vol,Volume\n2024-01-02,10,11,9,10.5,1,1000\n")
    assert list(sources.read_csv_bars(tmp_path, "BBB")["volume"]) == [1000.0]  # a column named Volume wins


def test_volumes_written_with_a_unit_are_read(tmp_path):
    """Investing.com writes its "Vol." as 1.23M or 950.20K: read as numbers (a "Vol." column was
    first ignored, then such values failed the ticker as non-numeric)."""
    write(
        tmp_path,
        "AAA.csv",
        "Date,Open,High,Low,Close,Vol.\n2024-01-02,10,11,9,10.5,1.2M\n2024-01-03,10.5,12,10,11.5,950.20K\n"
        '2024-01-04,11.5,12,11,11.7,2b\n2024-01-05,11.5,12,11,11.7,"1,000"\n',
    )
    with pytest.raises(DataError, match="non-numeric value '1,000' in column volume on 2024-01-05"):
        sources.read_csv_bars(tmp_path, "AAA")
    write(
        tmp_path,
        "AAA.csv",
        "Date,Open,High,Low,Close,Vol.\n2024-01-02,10,11,9,10.5,1.2M\n2024-01-03,10.5,12,10,11.5,950.20K\n"
        "2024-01-04,11.5,12,11,11.7,2b\n2024-01-05,11.5,12,11,11.7,1500\n",
    )
    assert list(sources.read_csv_bars(tmp_path, "AAA")["volume"]) == [1.2e6, 950200.0, 2e9, 1500.0]
    write(tmp_path, "BBB.csv", "Date,Open,High,Low,Close,1.5M\n2024-01-02,10,11,9,1.5M,1\n")  # prices take no unit
    with pytest.raises(DataError, match="non-numeric value '1.5M' in column close"):
        sources.read_csv_bars(tmp_path, "BBB")


def test_intraday_bars_are_refused_naming_two_rows_of_one_day(tmp_path):
    """An hourly or minute export read as daily bars: each day was its last intraday bar, with
    that bar's volume, and only a warning of dropped duplicate dates."""
    write(
        tmp_path,
        "AAA.csv",
        "Datetime,Open,High,Low,Close,Volume\n"
        "2024-01-02 09:30:00-05:00,10,11,9,10.5,100\n"
        "2024-01-02 10:30:00-05:00,10.5,11,10,10.7,50\n"
        "2024-01-03 09:30:00-05:00,10.7,12,10,11.5,80\n",
    )
    with pytest.raises(
        DataError,
        match=r"'2024-01-02 09:30:00-05:00' \(line 2\) and '2024-01-02 10:30:00-05:00' "
        r"\(line 3\) are bars of one day at two times: intraday bars",
    ):
        sources.read_csv_bars(tmp_path, "AAA")
    # daily bars stamped with one time of day each, even where the time changes (a DST offset)
    write(
        tmp_path,
        "BBB.csv",
        "Date,Open,High,Low,Close,Volume\n"
        "2024-03-08 00:00:00-05:00,10,11,9,10.5,100\n"
        "2024-03-11 00:00:00-04:00,10.5,11,10,10.7,50\n"
        "2024-03-12 16:00:00,10.7,12,10,11.5,80\n",
    )
    assert list(sources.read_csv_bars(tmp_path, "BBB").index.strftime("%Y-%m-%d")) == [
        "2024-03-08",
        "2024-03-11",
        "2024-03-12",
    ]


def test_the_careful_reader_parses_the_text_it_checked(tmp_path, monkeypatch):
    """A file appended to between the check of its lines and the parse: the half line written
    meanwhile (every field but the volume, cut in its close) became a bar. Checks and parse now
    read one copy of the text."""
    path = write(
        tmp_path,
        "AAA.csv",
        "Date,Open,High,Low,Close,Volume\n02/01/2024,10,11,9,10.5,1000\n03/01/2024,10.5,12,10,11.5,2000\n",
    )
    real = sources._refuse_lines_of_wrong_length

    def then_appended(*args):
        real(*args)
        with open(path, "a") as f:
            f.write("04/01/2024,11.5,12,11,11.\n")  # checked, this line would be incomplete

    monkeypatch.setattr(sources, "_refuse_lines_of_wrong_length", then_appended)
    df = sources.read_csv_bars(tmp_path, "AAA")
    assert list(df["close"]) == [10.5, 11.5] and list(df["volume"]) == [1000, 2000]


def test_a_csv_link_to_nothing_says_so_and_one_file_under_two_names_is_read(tmp_path):
    """A dangling link read as 'no CSV file at ...'; a file and a link to it under another case
    were 'several CSV files could be its'."""
    (tmp_path / "AAA.csv").symlink_to(tmp_path / "gone.csv")
    with pytest.raises(
        DataError, match=rf"AAA: {tmp_path / 'AAA.csv'} is a link to {tmp_path / 'gone.csv'}, which does not exist"
    ):
        sources.read_csv_bars(tmp_path, "AAA")
    (tmp_path / "bbb.csv").symlink_to(tmp_path / "gone.csv")  # in another case than the ticker's
    with pytest.raises(DataError, match=rf"BBB: {tmp_path / 'bbb.csv'} is a link to .*gone.csv, which does not exist"):
        sources.read_csv_bars(tmp_path, "BBB")
    write(tmp_path, "msft.csv", GOOD)
    (tmp_path / "MSFT.CSV").symlink_to(tmp_path / "msft.csv")
    assert list(sources.read_csv_bars(tmp_path, "MSFT")["close"]) == [10.5, 11.5]
    os.link(tmp_path / "msft.csv", tmp_path / "mSFT.csv")  # a hard link: the same file too
    assert list(sources.read_csv_bars(tmp_path, "MSFT")["close"]) == [10.5, 11.5]
    write(tmp_path, "Msft.csv", GOOD)  # a second file: which is the ticker's?
    with pytest.raises(DataError, match="several CSV files .* could be its: MSFT.CSV, Msft.csv"):
        sources.read_csv_bars(tmp_path, "MSFT")


def test_a_row_dropped_for_an_empty_adjusted_close_is_named_with_its_file(tmp_path, caplog):
    """Its close there, its Adj Close empty (as on a newest row some sites fill late): the warning
    named neither the file nor that the adjusted close counts."""
    from forecaster.store import load_csv

    path = write(
        tmp_path,
        "AAA.csv",
        "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,10,11,9,10.5,10.5,100\n"
        "2024-01-03,10.5,12,10,11.5,11.5,200\n2024-01-04,11.5,12,11,11.7,,300\n",
    )
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        assert len(load_csv(tmp_path, "AAA")) == 2
    assert (
        f"AAA: dropped 1 row(s) with a missing date or price (an adjusted close too) in {path} (2024-01-04)"
        in caplog.text
    )
