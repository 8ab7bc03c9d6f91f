"""A writer to be killed: helper process for the SIGKILL test of tests/test_faults.py.

Run as ``python crash_writer.py DATA_DIR OUT_DIR``. It imports the data layer once, prints
``ready`` and then, for every ``go`` line read from stdin, forks a child that writes new
versions of one ticker's store file and of a forecast folder for ever, through the
production writers (``store.save_store`` and ``outputs.write_csv``), in the order predict
uses: the store, the dated forecast, then ``latest.csv``. The parent prints the child's pid,
waits for it to die (the test SIGKILLs it at a random moment) and prints ``reaped``.
Forking from a process that has not touched pyarrow yet keeps each try to milliseconds
instead of a fresh interpreter's start-up.

Version ``v`` of the store holds the first ``BASE_ROWS + v`` rows of :func:`all_bars`;
version ``v`` of a forecast file is exactly ``to_csv_text(forecast_frame(v))``.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import pandas as pd

BASE_ROWS = 2000
MAX_VERSION = 500
TICKER = "AAA"
DATED = "2024-12-31.csv"


def all_bars() -> pd.DataFrame:
    from support import make_bars

    return make_bars("2000-01-03", BASE_ROWS + MAX_VERSION, seed=7)


def forecast_frame(version: int, rows: int = 1000) -> pd.DataFrame:
    from forecaster.prediction import FORECAST_COLUMNS

    step = pd.RangeIndex(1, rows + 1)
    return pd.DataFrame(
        {
            "ticker": TICKER,
            "as_of": "2024-12-31",
            "step": step,
            "date": "2025-01-02",
            "last_close": 100.0,
            "p10": 90.0 + step / 1000,
            "p50": 100.0 + version + step / 1000,
            "p90": 110.0 + step / 1000,
            "model": "gru",
            "run": f"v{version}",
        },
        columns=FORECAST_COLUMNS,
    )


def forecast_dir(out_dir: Path) -> Path:
    return out_dir / "run"


def write_version(data_dir: Path, out_dir: Path, bars: pd.DataFrame, version: int) -> None:
    from forecaster.outputs import write_csv
    from forecaster.store import save_store

    save_store(data_dir, TICKER, bars.iloc[: BASE_ROWS + version])
    frame = forecast_frame(version)
    write_csv(frame, forecast_dir(out_dir) / DATED)
    write_csv(frame, forecast_dir(out_dir) / "latest.csv")


def _child(data_dir: Path, out_dir: Path, bars: pd.DataFrame) -> None:
    from forecaster.store import load_store

    version = len(load_store(data_dir, TICKER)) - BASE_ROWS
    while version < MAX_VERSION:
        version += 1
        write_version(data_dir, out_dir, bars, version)
    while True:  # nothing left to write: wait for the kill
        os.pause()


def main() -> None:
    data_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    import forecaster.outputs  # noqa: F401 - imported once, before forking
    import forecaster.store  # noqa: F401

    bars = all_bars()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        pid = os.fork()
        if pid == 0:
            try:
                _child(data_dir, out_dir, bars)
            except BaseException:
                traceback.print_exc()
            os._exit(1)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"reaped {status}", flush=True)


if __name__ == "__main__":
    main()
