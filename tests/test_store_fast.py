"""The fast paths of loading bars give exactly what the careful (pandas) paths give.

The readers (``read_csv_bars``, the store's) first try a fast pyarrow read into arrays, and
``validate_bars`` first tries a fast check on the arrays; each steps aside to the careful
path when something is unusual. On clean data both must give the same frame (values bit for
bit, index, frequency, dtypes, labels); on bad data the fast paths must step aside, so the
same error is raised with the same message, or the same repair is made with the same warnings.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from yf_fixtures import make_bars

from forecaster import sources, store
from forecaster.store import COLUMNS
from forecaster.synthetic import generate_universe, write_csv

HEADER = "Date,Open,High,Low,Close,Volume\n"


@contextmanager
def careful_only():
    """Every fast path switched off: what the loaders did before they had one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sources, "_plain_csv", lambda path: None)
        mp.setattr(store, "_read_plain_store", lambda path: None)
        mp.setattr(store, "_validated_fast", lambda bars: None)
        yield


def fast_csv(data_dir: Path, ticker: str) -> bool:
    """True when loading this CSV file takes the fast read and the fast check."""
    plain = sources.plain_csv_bars(data_dir, ticker)
    return plain is not None and store._validated_fast(plain) is not None


def fast_store(path: Path) -> bool:
    """True when loading this store file takes the fast read and the fast check."""
    plain = store._read_plain_store(path)
    return plain is not None and store._validated_fast(plain) is not None


def outcome(call, caplog) -> tuple:
    """("returned", value, warnings) or ("raised", type, message, warnings)."""
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="forecaster"):
            value = call()
    except Exception as exc:
        return ("raised", type(exc), str(exc), caplog.messages)
    return ("returned", value, caplog.messages)


def assert_identical(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same frame: values bit for bit (-0.0 and NaN included), index, frequency, labels."""
    pd.testing.assert_frame_equal(a, b, check_exact=True, check_freq=True, check_flags=True)
    assert a.index.freq == b.index.freq
    assert a.index.dtype == b.index.dtype and a.index.name == b.index.name
    assert a.columns.dtype == b.columns.dtype and a.columns.name == b.columns.name
    assert a.attrs == b.attrs
    assert list(a.dtypes) == list(b.dtypes)
    assert np.array_equal(a.to_numpy(np.float64).view(np.int64), b.to_numpy(np.float64).view(np.int64))


def assert_same_outcome(call, caplog) -> tuple:
    fast = outcome(call, caplog)
    with careful_only():
        slow = outcome(call, caplog)
    assert fast[0] == slow[0], (fast, slow)
    if fast[0] == "raised":
        assert fast[1:] == slow[1:]
    else:
        assert fast[2] == slow[2]
        got, want = fast[1], slow[1]
        if isinstance(want, dict):
            assert list(got) == list(want)
            for key in want:
                assert_identical(got[key], want[key])
        else:
            assert_identical(got, want)
    return fast


# --------------------------------------------------------------------------- clean bars


def random_bars(seed: int, n: int, dates: str, unit: str) -> pd.DataFrame:
    """``n`` clean bars with unrounded prices; ``dates`` picks how the dates are spaced."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("1995-01-02") + pd.Timedelta(days=int(rng.integers(0, 12000)))
    if dates == "random":
        days = np.cumsum(rng.integers(1, 6, n))
        index = pd.DatetimeIndex(start + pd.to_timedelta(days, unit="D"))
    else:
        freq = {
            "daily": "D",
            "bday": "B",
            "weekly": "W-WED",
            "month_end": "ME",
            "month_start": "MS",
            "quarter": "QE",
            "year": "YS",
            "bmonth": "BME",
        }[dates]
        index = pd.date_range(start, periods=n, freq=freq).normalize()
    close = float(np.exp(rng.uniform(-3, 9))) * np.exp(np.cumsum(rng.normal(0, 0.05, n)))
    open_ = close * np.exp(rng.normal(0, 0.02, n))
    high = np.maximum(open_, close) * (1 + rng.random(n) * 0.02)
    low = np.minimum(open_, close) * (1 - rng.random(n) * 0.02)
    volume = np.floor(rng.uniform(0, 1e7, n)) if rng.random() < 0.5 else rng.uniform(0, 1e7, n)
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=pd.DatetimeIndex(index.to_numpy().astype(f"datetime64[{unit}]"), name="date"),
    )


bars_args = st.tuples(
    st.integers(0, 2**32 - 1),
    st.integers(1, 80),
    st.sampled_from(["random", "daily", "bday", "weekly", "month_end", "month_start", "quarter", "year", "bmonth"]),
    st.sampled_from(["s", "ms", "us", "ns"]),
)


@settings(max_examples=150, deadline=None)
@given(args=bars_args, shuffle_columns=st.booleans(), extra=st.booleans())
def test_validate_fast_path_is_the_careful_path_on_clean_frames(args, shuffle_columns, extra):
    df = random_bars(*args)
    if extra:
        df["note"] = "x"
    if shuffle_columns:
        df = df[list(reversed(df.columns))]
    assert store._clean_frame(df) is not None  # the fast path is taken
    fast = store.validate_bars(df, "AAA")
    with careful_only():
        slow = store.validate_bars(df, "AAA")
    assert_identical(fast, slow)


def write_csv_text(df: pd.DataFrame, style: dict) -> str:
    """``df`` as CSV text in one of the layouts read by read_csv_bars."""
    names = {"date": style["date"], "open": "Open", "high": "HIGH", "low": "low", "close": "Close", "volume": "Volume"}
    fmt = {"repr": repr, "fixed": lambda v: f"{v:.4f}", "exp": lambda v: f"{v:.6e}"}[style["fmt"]]
    columns = ["date", "open", "high", "low", "close", "volume"]
    if style["adj"]:
        columns.insert(5, "adj")
        names["adj"] = "Adj Close"
    if style["extra"]:
        columns.append("extra")
        names["extra"] = "Dividends note"
    rows = [",".join(names[c] for c in columns)]
    for i, (day, row) in enumerate(zip(df.index.strftime("%Y-%m-%d"), df.itertuples())):
        cells = {"date": day, "extra": "é-note" if i % 2 else "", "adj": fmt(row.close * 0.5)}
        for c in COLUMNS:
            value = getattr(row, c)
            cells[c] = str(int(value)) if c == "volume" and value.is_integer() else fmt(value)
        if style["quote"]:
            cells = {k: f'"{v}"' for k, v in cells.items()}
        rows.append(",".join(cells[c] for c in columns))
    newline = "\r\n" if style["crlf"] else "\n"
    return ("\ufeff" if style["bom"] else "") + newline.join(rows) + newline


csv_style = st.fixed_dictionaries(
    {
        "date": st.sampled_from(["Date", "date", "Timestamp", "DATETIME"]),
        "fmt": st.sampled_from(["repr", "fixed", "exp"]),
        "adj": st.booleans(),
        "extra": st.booleans(),
        "quote": st.booleans(),
        "crlf": st.booleans(),
        "bom": st.booleans(),
    }
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=bars_args, style=csv_style)
def test_csv_fast_path_is_the_pandas_path_on_clean_files(tmp_path, caplog, args, style):
    df = random_bars(*args)
    (tmp_path / "AAA.csv").write_text(write_csv_text(df, style), encoding="utf-8")
    assert fast_csv(tmp_path, "AAA")  # the fast path is taken
    fast = sources.read_csv_bars(tmp_path, "AAA")
    assert_identical(fast, sources._read_clean_csv(tmp_path / "AAA.csv"))
    assert_same_outcome(lambda: store.load_bars("csv", tmp_path, ["AAA"]), caplog)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=bars_args)
def test_store_fast_path_is_the_careful_path_on_clean_files(tmp_path, caplog, args):
    df = random_bars(*args)
    path = store.save_store(tmp_path, "AAA", df)
    assert fast_store(path)  # the fast path is taken
    assert_same_outcome(lambda: store.load_store(tmp_path, "AAA"), caplog)
    assert_same_outcome(lambda: store.load_bars("yahoo", tmp_path, ["AAA"]), caplog)


def test_synthetic_universe_takes_the_fast_paths(tmp_path, caplog):
    for name, df in generate_universe(4, years=3, seed=5).items():
        write_csv(df, tmp_path / f"{name}.csv")
        store.save_store(tmp_path, name, df)
        assert fast_csv(tmp_path, name)
        assert fast_store(store.store_path(tmp_path, name))
        for source in ("csv", "yahoo"):
            got = assert_same_outcome(partial(store.load_bars, source, tmp_path, [name]), caplog)
            pd.testing.assert_frame_equal(got[1][name], df, check_freq=False)


day_patterns = st.one_of(
    st.lists(st.integers(1, 40), min_size=0, max_size=40).map(lambda s: np.cumsum([0, *s])),
    st.tuples(
        st.sampled_from(
            ["D", "B", "W-MON", "2W-FRI", "ME", "MS", "BMS", "BME", "QE", "QS", "YE", "YS", "WOM-2TUE", "3D"]
        ),
        st.integers(1, 40),
        st.integers(0, 20000),
        st.integers(0, 39),
        st.integers(-3, 3),
    ).map(lambda a: _perturbed(*a)),
)


def _perturbed(freq: str, n: int, start: int, at: int, shift: int) -> np.ndarray:
    """Dates of a regular ``freq`` (days since 1970), one of them moved by ``shift`` days."""
    index = pd.date_range(pd.Timestamp("1970-01-01") + pd.Timedelta(days=start), periods=n, freq=freq)
    days = index.to_numpy().astype("datetime64[D]").view(np.int64).copy()
    days[at % n] += shift
    return np.unique(days)


@settings(max_examples=400, deadline=None)
@given(days=day_patterns)
def test_no_frequency_shortcut_agrees_with_pandas(days):
    assume(store._infers_no_freq(days))
    index = pd.DatetimeIndex(days.astype("datetime64[D]").astype("datetime64[ns]"))
    assert index.normalize().freq is None


# --------------------------------------------------------------------------- bad frames


def _bad_frames() -> dict[str, pd.DataFrame]:
    good = make_bars("2024-01-02", 8)
    cases: dict[str, pd.DataFrame] = {}

    def edit(name, row, column, value):
        df = good.copy()
        df.iloc[row, df.columns.get_loc(column)] = value
        cases[name] = df

    edit("nan close", 3, "close", np.nan)
    edit("nan open", 0, "open", np.nan)
    edit("nan volume", 5, "volume", np.nan)
    edit("inf high", 2, "high", np.inf)
    edit("negative low", 4, "low", -1.0)
    edit("zero close", 7, "close", 0.0)
    edit("negative volume", 1, "volume", -5.0)
    edit("inf volume", 1, "volume", np.inf)
    edit("minus zero volume", 1, "volume", -0.0)
    edit("high below low", 6, "high", good["low"].iloc[6] * 0.5)
    edit("close above high", 6, "close", good["high"].iloc[6] * 1.02)
    edit("close below low", 2, "close", good["low"].iloc[2] * 0.98)
    edit("close at the tolerance", 2, "close", good["high"].iloc[2] * (1 + store.RANGE_TOLERANCE))
    jump = good.copy()
    jump.iloc[4:] *= 25
    cases["jump"] = jump
    cases["unsorted"] = good.iloc[[3, 1, 2, 0, 4, 5, 6, 7]]
    cases["duplicate date"] = pd.concat([good, good.iloc[[2]] * 1.001])
    cases["unsorted and duplicate"] = pd.concat([good.iloc[::-1], good.iloc[[0]]])
    cases["times of day"] = good.set_axis(good.index + pd.Timedelta(hours=13))
    cases["one time of day"] = good.set_axis(
        good.index.where(good.index != good.index[3], good.index[3] + pd.Timedelta(1))
    )
    nat = good.index.to_numpy().copy()
    nat[0] = np.datetime64("NaT", "ns")
    cases["NaT first"] = good.set_axis(pd.DatetimeIndex(nat, name="date"))
    cases["tz-aware"] = good.tz_localize("Asia/Tokyo")
    cases["empty"] = good.iloc[:0]
    cases["all rows dropped"] = good.assign(close=np.nan)
    cases["object column"] = good.assign(close=good["close"].astype(str).astype(object))
    cases["int volume"] = good.assign(volume=good["volume"].astype(np.int64))
    cases["Float64 column"] = good.assign(open=good["open"].astype("Float64"))
    cases["float32 column"] = good.assign(low=good["low"].astype(np.float32))
    named = good.copy()
    named.columns.name = "field"
    cases["named columns"] = named
    cases["object column labels"] = good.set_axis(pd.Index(COLUMNS, dtype=object), axis=1)
    with_attrs = good.copy()
    with_attrs.attrs["source"] = "test"
    cases["attrs"] = with_attrs
    cases["missing column"] = good.drop(columns="low")
    cases["not a date index"] = good.reset_index(drop=True)
    cases["duplicate column"] = pd.concat([good, good[["close"]]], axis=1)
    cases["us index"] = good.set_axis(good.index.astype("datetime64[us]"))
    cases["year 1600"] = good.set_axis(
        pd.DatetimeIndex(good.index.to_numpy().astype("datetime64[s]") - np.timedelta64(424 * 365, "D"), name="date")
    )
    cases["one row"] = good.iloc[:1]
    return cases


BAD_FRAMES = _bad_frames()


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_validate_same_outcome_on_unusual_frames(case, caplog):
    df = BAD_FRAMES[case]
    assert_same_outcome(lambda: store.validate_bars(df, "AAA"), caplog)


def _store_file(tmp_path: Path) -> Path:
    path = store.store_path(tmp_path, "AAA")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("case", [c for c in BAD_FRAMES if c != "duplicate column"])
def test_store_same_outcome_on_unusual_files(case, tmp_path, caplog):
    BAD_FRAMES[case].to_parquet(_store_file(tmp_path))
    assert_same_outcome(lambda: store.load_store(tmp_path, "AAA"), caplog)


@pytest.mark.parametrize(
    "case",
    [
        "Float64 with NA",
        "index as a column",
        "no metadata",
        "extra column",
        "damaged",
        "empty file",
        "date32 index",
        "ms index",
        "many row groups",
    ],
)
def test_store_same_outcome_on_odd_layouts(case, tmp_path, caplog):
    good = make_bars("2024-01-02", 8)
    path = _store_file(tmp_path)
    if case == "Float64 with NA":
        good.assign(open=pd.array([None, *good["open"].iloc[1:]], dtype="Float64")).to_parquet(path)
    elif case == "index as a column":
        good.reset_index().to_parquet(path)
    elif case == "no metadata":
        pq.write_table(pa.Table.from_pandas(good).replace_schema_metadata(None), path)
    elif case == "extra column":
        good.assign(note="x").to_parquet(path)
    elif case == "damaged":
        store.save_store(tmp_path, "AAA", good)
        path.write_bytes(path.read_bytes()[:-40])
    elif case == "empty file":
        path.write_bytes(b"")
    elif case == "date32 index":
        good.set_axis(pd.Index(good.index.date, name="date")).to_parquet(path)
    elif case == "ms index":
        good.set_axis(good.index.astype("datetime64[ms]")).to_parquet(path)
    elif case == "many row groups":
        pq.write_table(pa.Table.from_pandas(make_bars("2020-01-02", 500)), path, row_group_size=64)
    else:
        raise AssertionError(case)
    assert_same_outcome(lambda: store.load_store(tmp_path, "AAA"), caplog)


# --------------------------------------------------------------------------- bad CSV files


ROWS = ["2024-01-02,10,11,9,10.5,1000", "2024-01-03,10.5,12,10,11.5,2000", "2024-01-04,11.5,12,11,11.8,1500"]


def _csv(*rows: str, header: str = HEADER) -> str:
    return header + "".join(r + "\n" for r in rows)


BAD_CSV = {
    "clean": _csv(*ROWS),
    "empty cell": _csv(ROWS[0], "2024-01-03,10.5,,10,11.5,2000", ROWS[2]),
    "empty volume": _csv(ROWS[0], "2024-01-03,10.5,12,10,11.5,", ROWS[2]),
    "NA": _csv(ROWS[0], "2024-01-03,10.5,NA,10,11.5,2000"),
    "nan": _csv(ROWS[0], "2024-01-03,10.5,nan,10,11.5,2000"),
    "+nan": _csv(ROWS[0], "2024-01-03,10.5,+nan,10,11.5,2000"),
    "inf": _csv(ROWS[0], "2024-01-03,10.5,inf,10,11.5,2000"),
    "INF": _csv(ROWS[0], "2024-01-03,10.5,INF,10,11.5,2000"),
    "minus zero volume": _csv(ROWS[0], "2024-01-03,10.5,12,10,11.5,-0"),
    "minus zero float volume": _csv(ROWS[0], "2024-01-03,10.5,12,10,11.5,-0.0"),
    "zero volume": _csv(ROWS[0], "2024-01-03,10.5,12,10,11.5,0"),
    "plus sign": _csv(ROWS[0], "2024-01-03,+10.5,12,10,11.5,2000"),
    "exponent": _csv(ROWS[0], "2024-01-03,1.05e1,12,10,11.5,2e3"),
    "text": _csv(ROWS[0], "2024-01-03,10.5,abc,10,11.5,2000"),
    "hex": _csv(ROWS[0], "2024-01-03,0x10,12,10,11.5,2000"),
    "bool volume": _csv("2024-01-02,10,11,9,10.5,True", "2024-01-03,10.5,12,10,11.5,False"),
    "space before": _csv(ROWS[0], "2024-01-03, 10.5,12,10,11.5,2000"),
    "space after": _csv(ROWS[0], "2024-01-03,10.5 ,12,10,11.5,2000"),
    "space after date": _csv("2024-01-02 ,10,11,9,10.5,1000", ROWS[1]),
    "tab": _csv(ROWS[0], "2024-01-03,\t10.5,12,10,11.5,2000"),
    "short date": _csv("2024-1-2,10,11,9,10.5,1000", ROWS[1]),
    "us date": _csv("01/02/2024,10,11,9,10.5,1000", ROWS[1]),
    "iso time": _csv("2024-01-02T00:00:00,10,11,9,10.5,1000", ROWS[1]),
    "offset time": _csv("2024-01-02 00:00:00+09:00,10,11,9,10.5,1000", ROWS[1]),
    "afternoon": _csv("2024-01-02 15:30:00,10,11,9,10.5,1000", ROWS[1]),
    "bad day": _csv("2024-02-30,10,11,9,10.5,1000", ROWS[1]),
    "year 1600": _csv("1600-01-03,10,11,9,10.5,1000", ROWS[1]),
    "year 9999": _csv(ROWS[0], "9999-01-03,10,11,9,10.5,1000"),
    "empty date": _csv(ROWS[0], ",10,11,9,10.5,1000"),
    "unsorted": _csv(ROWS[2], ROWS[0], ROWS[1]),
    "duplicate date": _csv(ROWS[0], ROWS[1], ROWS[1].replace("11.5", "11.6")),
    "high below low": _csv(ROWS[0], "2024-01-03,10.5,9,10,9.5,2000"),
    "negative price": _csv(ROWS[0], "2024-01-03,-10.5,12,10,11.5,2000"),
    "jump": _csv(ROWS[0], "2024-01-03,300,300,300,300,2000"),
    "long row": _csv(ROWS[0], ROWS[1] + ",7"),
    "every row long": _csv(ROWS[0] + ",7", ROWS[1] + ",8"),
    "short row": _csv(ROWS[0], "2024-01-03,10.5,12,10,11.5"),
    "header only": HEADER,
    "empty": "",
    "blank lines": HEADER + "\n" + ROWS[0] + "\n\n" + ROWS[1] + "\n\n\n",
    "blank first line": "\n" + _csv(*ROWS),
    "no final newline": HEADER + ROWS[0] + "\n" + ROWS[1],
    "cr line ends": (HEADER + "\n".join(ROWS)).replace("\n", "\r"),
    "crlf": _csv(*ROWS).replace("\n", "\r\n"),
    "bom": "\ufeff" + _csv(*ROWS),
    "two boms": "\ufeff\ufeff" + _csv(*ROWS),
    "quoted header": _csv(*ROWS, header='"Date","Open","High","Low","Close","Volume"\n'),
    "quoted header with comma": _csv(*[r + ",1" for r in ROWS], header='Date,Open,High,Low,Close,Volume,"a,b"\n'),
    "quoted cells": _csv(*['"' + r.replace(",", '","') + '"' for r in ROWS]),
    "duplicate columns": _csv(*[r + ",1" for r in ROWS], header=HEADER.strip() + ",Close\n"),
    "same column twice": _csv(*[r + ",1" for r in ROWS], header=HEADER.strip() + ",close\n"),
    "empty header name": _csv(*[r + ",1" for r in ROWS], header=HEADER.strip() + ",\n"),
    "missing column": _csv("2024-01-02,10,11,10.5,1000", header="Date,Open,High,Close,Volume\n"),
    "no volume column": _csv(
        "2024-01-02,10,11,9,10.5", "2024-01-03,10.5,12,10,11.5", header="Date,Open,High,Low,Close\n"
    ),
    "semicolons": HEADER.replace(",", ";") + ROWS[0].replace(",", ";") + "\n",
    "adj close": _csv("2024-01-02,10,11,9,10.5,5.25,1000", header="Date,Open,High,Low,Close,Adj Close,Volume\n"),
    "empty adj close": _csv("2024-01-02,10,11,9,10.5,,1000", header="Date,Open,High,Low,Close,Adj Close,Volume\n"),
    "partly empty adj close": _csv(
        "2024-01-02,10,11,9,10.5,,1000",
        "2024-01-03,10.5,12,10,11.5,5,2000",
        header="Date,Open,High,Low,Close,Adj Close,Volume\n",
    ),
    "adj close and adjclose": _csv(
        "2024-01-02,10,11,9,10.5,5,6,1000", header="Date,Open,High,Low,Close,AdjClose,Adj Close,Volume\n"
    ),
    "timestamp and date": _csv(
        "2024-01-02,2024-01-05,10,11,9,10.5,1000", header="Timestamp,Date,Open,High,Low,Close,Volume\n"
    ),
    "text column": _csv(*[r + ",hello world" for r in ROWS], header=HEADER.strip() + ",Note\n"),
    "long digits": _csv(ROWS[0], "2024-01-03,10.50000000000000000000001,12,10,11.5,2000"),
    "huge volume": _csv(ROWS[0], "2024-01-03,10.5,12,10,11.5,123456789012345678901234567890"),
    "uint64 volume": _csv(ROWS[0], "2024-01-03,10.5,12,10,11.5,18446744073709551615"),
    "int64 volume": _csv(ROWS[0], "2024-01-03,10.5,12,10,11.5,999999999999999999"),
    "huge float": _csv(ROWS[0], "2024-01-03,1e300,1e300,1e300,1e300,1"),
    "leading zeros": _csv(ROWS[0], "2024-01-03,010.5,12,10,11.5,002000"),
}


@pytest.mark.parametrize("case", list(BAD_CSV))
def test_csv_same_outcome_on_unusual_files(case, tmp_path, caplog):
    (tmp_path / "AAA.csv").write_text(BAD_CSV[case], encoding="utf-8", newline="")
    assert_same_outcome(lambda: store.load_bars("csv", tmp_path, ["AAA"]), caplog)
    assert_same_outcome(lambda: store.load_bars("csv", tmp_path, ["AAA"], tail=2), caplog)


@pytest.mark.parametrize("case", list(BAD_CSV))
def test_read_csv_bars_fast_path_gives_the_pandas_fast_frame(case, tmp_path):
    path = tmp_path / "AAA.csv"
    path.write_text(BAD_CSV[case], encoding="utf-8", newline="")
    if sources.plain_csv_bars(tmp_path, "AAA") is not None:
        fast = sources.read_csv_bars(tmp_path, "AAA")
        assert_identical(fast, sources._read_clean_csv(path))
        with careful_only():
            assert_identical(fast, sources.read_csv_bars(tmp_path, "AAA"))


def test_csv_not_utf8_in_an_unused_column_is_still_refused(tmp_path, caplog):
    path = tmp_path / "AAA.csv"
    path.write_bytes(_csv(*[r + ",caf\xe9" for r in ROWS], header=HEADER.strip() + ",Note\n").encode("latin-1"))
    fast = assert_same_outcome(lambda: store.load_bars("csv", tmp_path, ["AAA"]), caplog)
    assert fast[0] == "raised" and "not UTF-8 text" in fast[2]


def test_csv_missing_file_same_outcome(tmp_path, caplog):
    fast = assert_same_outcome(lambda: store.load_bars("csv", tmp_path, ["NOPE"]), caplog)
    assert fast[0] == "raised" and "no CSV file" in fast[2]


# --------------------------------------------------------------------------- tail


def test_load_bars_tail_returns_the_last_rows_of_the_validated_frame(tmp_path):
    bars = make_bars("2024-01-02", 30)
    store.save_store(tmp_path, "AAA", bars)
    full = store.load_bars("yahoo", tmp_path, ["AAA"])["AAA"]
    for tail in (1, 7, 30, 500):
        got = store.load_bars("yahoo", tmp_path, ["AAA"], tail=tail)["AAA"]
        pd.testing.assert_frame_equal(got, full.iloc[-tail:])
    assert store.load_bars("yahoo", tmp_path, ["AAA"], tail=None)["AAA"].equals(full)


def test_load_bars_tail_still_validates_the_whole_history(tmp_path):
    lines = _csv(
        ROWS[0], "2024-01-03,-10.5,12,10,11.5,2000", *[f"2024-02-{d:02d},10,11,9,10.5,1000" for d in range(1, 20)]
    )
    (tmp_path / "AAA.csv").write_text(lines)
    with pytest.raises(Exception, match="is not a finite positive price"):
        store.load_bars("csv", tmp_path, ["AAA"], tail=3)


@pytest.mark.parametrize("tail", [0, -1, 2.0, True, "3"])
def test_load_bars_tail_must_be_a_positive_integer(tmp_path, tail):
    with pytest.raises(ValueError, match="tail must be a positive integer"):
        store.load_bars("csv", tmp_path, ["AAA"], tail=tail)
