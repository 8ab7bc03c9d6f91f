"""Regenerate the golden run checked by ``tests/test_golden.py``.

    python tests/golden/make_golden.py

Run this ONLY for a deliberate change of the run format (``FORMAT_VERSION``, the layout of
``run.json`` or ``model.safetensors``, the feature list) or of the model's numerics, and commit
the result together with that change. The committed files are the reference that proves a new
version of the code still loads and predicts from runs written by the old one: regenerating
them to make a failing golden test pass defeats the point of the test.

It writes, under ``tests/golden/``:

- ``data/GOLDA.csv``, ``data/GOLDB.csv``: two small synthetic tickers (different listing dates);
- ``runs/v1/``: ``model.safetensors``, ``run.json``, ``history.csv`` from a tiny training
  (GRU, hidden size 4, lookback 10, horizon 3, one epoch, on the CPU). The run records its data
  folder as the relative path ``data``, so nothing in it depends on where the checkout lives;
- ``forecast_v1.csv``: the forecast that run makes, offline, from that data.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICKERS = {"GOLDA": ("2023-01-03", 101), "GOLDB": ("2023-04-03", 102)}
LAST_DAY = "2024-03-28"  # the next sessions skip Good Friday and a weekend
OVERRIDES = {
    "data.source": "csv",
    "data.data_dir": "data",
    "data.tickers": list(TICKERS),
    "window.lookback": 10,
    "window.horizon": 3,
    "window.val_days": 40,
    "window.test_days": 40,
    "model.cell": "gru",
    "model.hidden_size": 4,
    "train.epochs": 1,
    "train.batch_size": 64,
    "train.seed": 0,
    "train.device": "cpu",
    "train.threads": 1,
}


def main() -> int:
    sys.path.insert(0, str(HERE.parents[1]))
    from forecaster.config import load_config
    from forecaster.prediction import predict
    from forecaster.synthetic import generate_bars, write_csv
    from forecaster.training import train

    os.chdir(HERE)  # every path the run records is relative to this folder
    for name, (first, seed) in TICKERS.items():
        write_csv(generate_bars(first, LAST_DAY, seed=seed), Path("data") / f"{name}.csv")
    run_dir = Path("runs") / "v1"
    shutil.rmtree(run_dir, ignore_errors=True)
    train(load_config(None, OVERRIDES), run_dir=run_dir)
    with tempfile.TemporaryDirectory() as out:
        report = predict(run_dir, offline=True, data_dir=Path("data"), out=Path(out))
        shutil.copyfile(report.files["forecast"], "forecast_v1.csv")
    for p in sorted(HERE.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:8d}  {p.relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
