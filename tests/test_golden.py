"""A run written by an earlier version still loads and predicts the same numbers.

The golden run under ``tests/golden/runs/v1`` (a tiny GRU, hidden size 4, lookback 10,
horizon 3) and its forecast ``tests/golden/forecast_v1.csv`` are committed; see
``tests/golden/make_golden.py`` for how, and for when (rarely) they may be regenerated.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import run_meta

from forecaster.checkpoint import FORMAT_VERSION, HISTORY_COLUMNS, load_run

GOLDEN = Path(__file__).resolve().parent / "golden"
RUN = GOLDEN / "runs" / "v1"
DATA = GOLDEN / "data"
EXPECTED = GOLDEN / "forecast_v1.csv"
NUMERIC = ["last_close", "p10", "p50", "p90"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_golden_files_are_small_and_complete():
    assert {p.name for p in RUN.iterdir()} == {"model.safetensors", "run.json", "history.csv"}
    assert sorted(p.name for p in DATA.iterdir()) == ["GOLDA.csv", "GOLDB.csv"]
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < 200_000


def test_golden_run_loads():
    run = load_run(RUN)
    # written in format 1, read as what it was made with: targets on the ticker's training
    # volatility, the network's median at every step, the six features of that time
    assert run.manifest.format_version == 1 and FORMAT_VERSION == 3
    assert (run.config.model.target_scale, run.config.model.median_alpha) == ("ticker", 1.0)
    assert run.manifest.median_weights() == [1.0, 1.0, 1.0]
    assert run.manifest.features.names == ["ret", "range", "body", "dvol", "dow_sin", "dow_cos"]
    assert run.name == "v1"
    assert run.names == ["GOLDA", "GOLDB"]
    cfg = run.config
    assert (cfg.model.cell, cfg.model.hidden_size) == ("gru", 4)
    assert (cfg.window.lookback, cfg.window.horizon) == (10, 3)
    assert cfg.data.source == "csv"
    # the recorded data folder does not pin the run to the machine it was made on
    assert not Path(cfg.data.data_dir).is_absolute()
    assert set(run.manifest.scalers()) == {"GOLDA", "GOLDB"}
    assert all(len(v) == 3 for v in run.manifest.conformal().values())
    # written before the interval settings were recorded: the values it was made with
    assert (cfg.intervals.vol_halflife, cfg.intervals.tracking_rate) == (20, 0.05)
    assert cfg.intervals.step_tracking == "separate"  # each step's scale tracked alone, as then
    with open(RUN / "history.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == HISTORY_COLUMNS
        assert [r["epoch"] for r in reader] == ["1"]


def test_golden_run_metadata_matches_its_data():
    meta = run_meta(RUN)
    for sym in ("GOLDA", "GOLDB"):
        bars = pd.read_csv(DATA / f"{sym}.csv")
        t = meta["tickers"][sym]
        assert (t["first_date"], t["last_date"], t["rows"]) == (bars["Date"].iloc[0], bars["Date"].iloc[-1], len(bars))


def test_golden_run_predicts_the_committed_forecast(cli, tmp_path):
    out = tmp_path / "fc"
    res = cli("predict", "--run", RUN, "--offline", "--data-dir", DATA, "--out", out, "-q")
    assert res.exit_code == 0, res.stderr
    expected = pd.read_csv(EXPECTED, dtype={"as_of": str, "date": str})
    as_of = expected["as_of"].iloc[0]
    got_path = out / "v1" / f"{as_of}.csv"
    assert got_path.is_file(), sorted(p.name for p in (out / "v1").iterdir())
    got = pd.read_csv(got_path, dtype={"as_of": str, "date": str})
    assert list(got.columns) == list(expected.columns)
    assert got.shape == expected.shape == (6, 10)
    text = [c for c in expected.columns if c not in NUMERIC]
    pd.testing.assert_frame_equal(got[text], expected[text])
    np.testing.assert_allclose(got[NUMERIC].to_numpy(), expected[NUMERIC].to_numpy(), rtol=1e-5, atol=0)
    # the forecast dates skip Good Friday 2024 and the weekend after it
    assert list(expected["date"][:3]) == ["2024-04-01", "2024-04-02", "2024-04-03"]


def test_golden_run_predicts_the_same_through_the_api(tmp_path):
    from forecaster.prediction import predict

    report = predict(RUN, offline=True, data_dir=DATA, out=tmp_path)
    expected = pd.read_csv(EXPECTED)
    np.testing.assert_allclose(
        report.forecasts["p50"].to_numpy(dtype=float), expected["p50"].to_numpy(), rtol=1e-5, atol=0
    )
