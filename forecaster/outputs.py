"""CSV writers: formula-safe cells, fixed columns, atomic replacement."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .fsio import atomic_write_text
from .tickers import csv_safe_frame


def to_csv_text(df: pd.DataFrame) -> str:
    """CSV text with no cell able to start a spreadsheet formula; floats at full precision."""
    return csv_safe_frame(df).to_csv(index=False, lineterminator="\n", float_format="%.10g")


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` to ``path`` atomically (a reader sees the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, to_csv_text(df))
    return path
