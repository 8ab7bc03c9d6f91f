"""The CSV writer: the text pandas would write, formula-safe, faster on large frames."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.outputs import FLOAT_FORMAT, REPEATS_FROM, has_dated_forecasts, to_csv_text, write_csv
from forecaster.tickers import csv_safe_frame


def pandas_text(df: pd.DataFrame, header: bool = True) -> str:
    return csv_safe_frame(df).to_csv(index=False, lineterminator="\n", float_format=FLOAT_FORMAT, header=header)


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
# no carriage return: pandas leaves it bare when lines end with "\n"; it is quoted here (below)
texts = st.one_of(st.none(), st.text(alphabet=st.sampled_from(list('ab ,"\n=+-@\t1é')), max_size=6))


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(floats, st.integers(-(2**40), 2**40), st.booleans(), texts), max_size=12),
    string_dtype=st.booleans(),
)
def test_text_is_what_pandas_writes(rows, string_dtype):
    df = pd.DataFrame(rows, columns=["x", "n", "flag", "name"])
    df["x"] = df["x"].astype(float)
    df["n"] = df["n"].astype(np.int64)
    df["flag"] = df["flag"].astype(bool)
    df["name"] = df["name"].astype("str" if string_dtype else object)
    assert to_csv_text(df) == pandas_text(df)
    # the rows alone: parts of one file written apart and joined
    assert to_csv_text(df, header=False) == pandas_text(df, header=False)
    half = len(df) // 2
    joined = to_csv_text(df.iloc[:half]) + to_csv_text(df.iloc[half:], header=False)
    assert joined == pandas_text(df)


@settings(max_examples=40, deadline=None)
@given(
    pool=st.lists(floats, min_size=1, max_size=6),
    names=st.lists(texts, min_size=1, max_size=6),
    rows=st.integers(REPEATS_FROM, REPEATS_FROM + 300),
    string_dtype=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_columns_of_repeated_values_are_what_pandas_writes(pool, names, rows, string_dtype, seed):
    """A long column of few distinct values (a backtest's actuals, its tickers and dates) is
    formatted one distinct value at a time: the same text, 0.0 apart from -0.0, NaN empty."""
    rng = np.random.default_rng(seed)
    values = np.array(pool, dtype=float)[rng.integers(0, len(pool), rows)]
    with np.errstate(over="ignore"):  # a float64 beyond float32's range is inf there
        single = values.astype(np.float32)
    df = pd.DataFrame(
        {
            "x": values,
            "x32": single,
            "name": pd.Series(np.array(names, dtype=object)[rng.integers(0, len(names), rows)], dtype=object),
            "distinct": rng.standard_normal(rows),
        }
    )
    df["name"] = df["name"].astype("str" if string_dtype else object)
    assert to_csv_text(df) == pandas_text(df)
    assert to_csv_text(df, header=False) == pandas_text(df, header=False)


@given(values=st.lists(texts, min_size=1, max_size=6))
def test_a_single_text_column_is_what_pandas_writes(values):
    df = pd.DataFrame({"only": pd.Series(values, dtype=object)})
    assert to_csv_text(df) == pandas_text(df)


def test_odd_columns_fall_back_to_pandas():
    df = pd.DataFrame(
        {
            "day": pd.to_datetime(["2024-01-02", "2024-01-03"]),
            "mixed": pd.Series(["a", 1.5], dtype=object),
            "odd, name": [1.0, np.nan],
        }
    )
    assert to_csv_text(df) == pandas_text(df)
    assert to_csv_text(pd.DataFrame()) == pandas_text(pd.DataFrame())
    numbered = pd.DataFrame({0: [1.5, 2.0], 1: ["a", "b"]})  # column names that are not text
    assert to_csv_text(numbered) == pandas_text(numbered)


def test_a_carriage_return_is_quoted():
    """A bare CR would end the line for many readers; pandas writes it bare, this quotes it."""
    df = pd.DataFrame({"note": ["a\rb", "c"], "x": [1.0, 2.0]})
    assert to_csv_text(df) == 'note,x\n"a\rb",1\nc,2\n'
    back = pd.read_csv(io.StringIO(to_csv_text(df)))
    assert back["note"].tolist() == ["a\rb", "c"]


def test_written_file_reads_back(tmp_path):
    df = pd.DataFrame({"ticker": ["=CMD", "A,B", 'say "hi"'], "p50": [1 / 3, 1e-12, -0.0], "step": [1, 2, 3]})
    path = write_csv(df, tmp_path / "out.csv")
    back = pd.read_csv(io.StringIO(path.read_text()))
    assert back["ticker"].tolist() == ["'=CMD", "A,B", 'say "hi"']  # a formula never starts a cell
    np.testing.assert_allclose(back["p50"], [1 / 3, 1e-12, 0.0], rtol=1e-9)
    assert back["step"].tolist() == [1, 2, 3]


def test_floats_are_written_to_ten_significant_digits():
    """A price or a loss of ten significant digits is written whole, and no more digits than
    those (no float noise, no padding)."""
    df = pd.DataFrame({"p50": [1234.567891, 0.1 + 0.2, 1 / 3, 2.5e-7, 100.0]})
    assert to_csv_text(df) == "p50\n1234.567891\n0.3\n0.3333333333\n2.5e-07\n100\n"


def test_a_folder_has_dated_forecasts_only_with_a_file_named_by_its_date(tmp_path):
    """``<as_of>.csv`` is a forecast file; ``latest.csv``, a copy made by hand or a temp file
    beside them is not, and a missing folder or a file has none."""
    assert not has_dated_forecasts(tmp_path / "missing")
    for name in ("latest.csv", "2024-12-31 (copy).csv", "2024-12-31.csv.bak", ".2024-12-31.csv.ab12cd.tmp"):
        (tmp_path / name).write_text("x\n")
    assert not has_dated_forecasts(tmp_path)
    assert not has_dated_forecasts(tmp_path / "latest.csv")
    (tmp_path / "2024-12-31.csv").write_text("x\n")
    assert has_dated_forecasts(tmp_path)


def test_a_forecast_file_with_too_many_header_fields_is_refused_saying_how_many(tmp_path):
    from forecaster.outputs import refuse_unreadable_forecast

    whole = tmp_path / "whole.csv"
    whole.write_text("," * 2000 + "\nx\n")
    with pytest.raises(ValueError, match=r"^its header has 2001 fields, not a forecast file's ten$"):
        refuse_unreadable_forecast(whole)
    cut = tmp_path / "cut.csv"  # more than is read of a header: the count is a floor
    cut.write_text("," * 100_000 + "\n")
    with pytest.raises(ValueError, match=r"^its header has 64001 fields or more, not a forecast file's ten$"):
        refuse_unreadable_forecast(cut)
    fine = tmp_path / "fine.csv"
    fine.write_text("a,b\n1,2\n")
    refuse_unreadable_forecast(fine)
