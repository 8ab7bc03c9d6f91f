"""CSV writers: formula-safe cells, fixed columns, atomic replacement."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .fsio import atomic_write_text
from .tickers import csv_safe_frame

FLOAT_FORMAT = "%.10g"
"""Floats in every CSV: ten significant digits, enough for a price or a loss, and no padding."""

_NEEDS_QUOTES = re.compile(r'[",\r\n]')

FORECAST_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.csv")
"""The name of a dated forecast file, ``<as_of>.csv`` (``latest.csv`` is a copy of one)."""


def has_dated_forecasts(folder: Path) -> bool:
    """True when ``folder`` is a folder holding at least one dated forecast file."""
    try:
        return any(FORECAST_FILE.fullmatch(p.name) for p in folder.iterdir())
    except OSError:  # no such folder, not a folder, or not readable
        return False


MAX_FIELDS = 1000
"""Fields a forecast file's header may have when it is read back: it has ten. pandas reads a
header of a million commas (a 1 MB file) as that many columns of every row: 11.7 GB and four
minutes for a file of ten rows."""


def read_forecast_csv(path: Path) -> pd.DataFrame:
    """A forecast file as text cells (``pd.read_csv(path, dtype=str, keep_default_na=False)``);
    a ValueError first where :func:`refuse_unreadable_forecast` finds one."""
    refuse_unreadable_forecast(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def refuse_unreadable_forecast(path: Path) -> None:
    """A ValueError, before pandas reads ``path``, when its header has more than
    :data:`MAX_FIELDS` fields (or is longer than any such header), or when it is no regular file
    (a link to /dev/zero, a pipe: endless, or never ending); FileNotFoundError when it is not
    there."""
    if not Path(path).is_file():
        if not Path(path).exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        raise ValueError("not a regular file")
    with open(path, "rb") as f:
        header = f.readline(MAX_FIELDS * 64)
    fields = header.count(b",") + 1
    cut = len(header) == MAX_FIELDS * 64 and not header.endswith(b"\n")  # read no further
    if fields > MAX_FIELDS or cut:
        raise ValueError(f"its header has {fields}{' fields or more' if cut else ' fields'}, not a forecast file's ten")


NOT_A_PRICE = "its forecast is not a finite positive price: the run's weights or statistics are damaged"
"""Why a ticker fails whose forecast :func:`are_prices` refuses (predict, evaluate)."""


def are_prices(values: np.ndarray) -> np.ndarray:
    """Where ``values`` (forecast prices, perhaps an overflowed ``close * exp(x)``) are prices:
    finite and above 0. An interval end that overflows downwards is 0, which ``score`` refuses
    too; no file forecaster writes holds anything else."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values > 0)


def to_csv_text(df: pd.DataFrame, header: bool = True) -> str:
    """CSV text with no cell able to start a spreadsheet formula; floats as :data:`FLOAT_FORMAT`.

    The text is what ``DataFrame.to_csv(index=False, float_format=FLOAT_FORMAT)`` writes, except
    that a carriage return in a text cell is quoted (pandas leaves it bare, which many readers
    take for a line end); frames of numbers, booleans and text are formatted a column at a time
    with one ``%`` over the whole column (pandas formats cell by cell, three times slower on a
    large evaluation). ``header=False`` leaves out the line of column names: the rows of one
    part of a file.
    """
    df = csv_safe_frame(df)
    columns = [_column_text(df.iloc[:, j]) for j in range(df.shape[1])]
    if df.shape[1] == 0 or any(c is None for c in columns) or not all(isinstance(c, str) for c in df.columns):
        return df.to_csv(index=False, lineterminator="\n", float_format=FLOAT_FORMAT, header=header)
    if df.shape[1] == 1:  # a lone empty field is written quoted, so that the row is not blank
        columns = [['""' if v == "" else v for v in columns[0]]]
    lines = list(map(",".join, zip(*columns, strict=True)))
    if header:
        lines.insert(0, ",".join(_quoted(name) for name in df.columns))
    return "\n".join(lines) + "\n" if lines else ""


def _column_text(series: pd.Series) -> list[str] | None:
    """The CSV cells of one column, or None for a kind this fast path leaves to pandas."""
    values = series.to_numpy()
    kind = values.dtype.kind
    if kind == "f":
        return _float_cells(values)
    if kind in "iu":
        return list(map(str, values.tolist()))
    if kind == "b":
        return ["True" if v else "False" for v in values.tolist()]
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        # each distinct text once (a ticker, a date: repeated on many rows), then -1, a missing
        # cell, takes the empty one at the end
        codes, distinct = pd.factorize(series)
        cells = [_quoted(text) for text in distinct.tolist()] + [""]
        return list(map(cells.__getitem__, codes.tolist()))
    return None  # dates, categories, numbers in a text column: pandas knows their format


REPEATS_FROM = 1000
"""A float column of this many rows or more, of which at most half are distinct values (a
backtest's actuals and last closes: each close at several steps and origins), is formatted one
distinct value at a time."""


def _float_cells(values: np.ndarray) -> list[str]:
    """The cells of a float column: :data:`FLOAT_FORMAT`, empty for NaN."""
    n = len(values)
    if n >= REPEATS_FROM and values.itemsize in (2, 4, 8):
        # distinct by their bits (as integers of the same size), so that 0.0 and -0.0 (written
        # "0" and "-0") stay apart
        codes, distinct = pd.factorize(values.view(f"i{values.itemsize}"))
        if 2 * len(distinct) <= n:
            cells = _float_cells(distinct.view(values.dtype))
            return list(map(cells.__getitem__, codes.tolist()))
    cells = ((FLOAT_FORMAT + "\n") * n % tuple(values.tolist())).split("\n")[:n] if n else []
    for i in np.flatnonzero(np.isnan(values)):
        cells[i] = ""
    return cells


def _quoted(text: str) -> str:
    """A CSV field: quoted (inner quotes doubled) when it holds a comma, a quote or a line break."""
    return '"' + text.replace('"', '""') + '"' if _NEEDS_QUOTES.search(text) else text


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` to ``path`` atomically (a reader sees the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, to_csv_text(df))
    return path
