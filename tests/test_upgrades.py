"""A run written by an earlier forecaster, used by this one: it forecasts, resumes and retrains as
it was made, or says plainly why it cannot.

Each test builds the older run from one written by the current code, edited to what the older
version wrote (a setting it did not record, the tensors and inputs it had)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from safetensors.numpy import load_file, save_file
from support import assert_one_line_error, run_meta, tiny_overrides

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _edit_meta(run: Path, edit) -> None:
    meta = run_meta(run)
    edit(meta)
    (run / "run.json").write_text(json.dumps(meta), encoding="utf-8")


def _interrupted_run(data_dir: Path, run_dir: Path) -> Path:
    """A run stopped after its first epoch, as Ctrl-C leaves it."""
    from forecaster.config import load_config
    from forecaster.training import Interrupted, train

    def stop(rec):
        if rec.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        train(load_config(None, tiny_overrides(data_dir, **{"train.epochs": 3})), run_dir=run_dir, on_epoch=stop)
    return run_dir


def _before_the_highway(meta: dict) -> None:
    """run.json as format 2 wrote it before the median's autoregressive term: no model.ar_order
    and no pending interval scales (they came with format 3)."""
    meta["format_version"] = 2
    del meta["config"]["model"]["ar_order"]
    for t in meta["tickers"].values():
        del t["conformal_pending"]


def test_a_run_made_before_the_autoregressive_highway_forecasts_without_it(run_copy, tmp_path, cli):
    """Its weights hold no ``ar.*`` tensors: read with today's ``ar_order`` (5) it was refused as
    weights that do not match its config, so an upgrade stopped its daily forecasts."""
    from forecaster.checkpoint import WEIGHTS, load_run
    from forecaster.prediction import predict

    weights = load_file(str(run_copy / WEIGHTS))
    assert {"ar.weight", "ar.bias"} <= set(weights)
    without = {k: v for k, v in weights.items() if not k.startswith("ar.")}
    save_file(without, str(run_copy / WEIGHTS), metadata={"format_version": "2"})
    same = tmp_path / "explicit"  # the same run recording the term it lacks: none
    same.mkdir()
    for f in run_copy.iterdir():
        (same / f.name).write_bytes(f.read_bytes())
    _edit_meta(run_copy, _before_the_highway)
    _edit_meta(same, lambda m: (_before_the_highway(m), m["config"]["model"].update(ar_order=0)))

    assert load_run(run_copy).config.model.ar_order == 0
    got = predict(run_copy, offline=True, out=tmp_path / "old").forecasts
    want = predict(same, offline=True, out=tmp_path / "same").forecasts
    assert len(got) == 2 * 3
    cols = ["ticker", "step", "p10", "p50", "p90"]
    pd.testing.assert_frame_equal(got[cols].reset_index(drop=True), want[cols].reset_index(drop=True))
    res = cli("predict", "--run", run_copy, "--offline", "--out", tmp_path / "cli")
    assert res.exit_code == 0, res.stderr


def test_a_run_made_before_the_training_modes_is_resumed_one_window_per_origin(cli, small_dir, tmp_path):
    """Such a run was trained one window per origin: resumed (or retrained) in today's default
    forking mode, its later epochs were trained otherwise without a word."""
    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped")
    assert run_meta(run)["config"]["train"]["mode"] == "forking"

    def before_the_modes(meta):
        for key in ("mode", "chunk", "epoch_steps"):  # the three came together
            del meta["config"]["train"][key]

    _edit_meta(run, before_the_modes)
    res = cli("train", "--resume", run, "--epochs", "2")
    assert res.exit_code == 0, res.stderr
    meta = run_meta(run)
    assert meta["status"] == "complete" and meta["config"]["train"]["mode"] == "window"


def test_an_interrupted_run_of_other_inputs_says_it_cannot_be_resumed(cli, small_dir, tmp_path):
    """A run an earlier forecaster trained on other inputs (before the zret feature) cannot go on
    with this one's: resume said its training bars were not those it was started on, though
    they were; now it says why, and info and predict say the same."""
    from forecaster.features import CALENDAR, FEATURES

    run = _interrupted_run(small_dir, tmp_path / "runs" / "stopped")
    gone = FEATURES.index("zret")
    assert gone < len(FEATURES) - CALENDAR

    def before_zret(meta):
        meta["format_version"] = 2
        meta["features"]["names"] = [f for f in FEATURES if f != "zret"]
        meta["config"]["model"]["ar_order"] = 0  # the term reads zret
        for t in meta["tickers"].values():
            t.pop("conformal_pending", None)
            for stat in ("mean", "std"):
                del t["scaler"][stat][gone]

    _edit_meta(run, before_zret)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    inputs = ", ".join(f for f in FEATURES if f != "zret")
    res = cli("train", "--resume", run)
    line = assert_one_line_error(res, 1, str(run), "cannot be resumed", inputs, "without --resume")
    assert "are not those it was started on" not in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    res = cli("predict", "--run", run, "--offline", "--out", tmp_path / "fc")
    assert_one_line_error(res, 1, "cannot be resumed", inputs)
    res = cli("info", run)  # a run that cannot be used: said on its status line, exit 1
    assert res.exit_code == 1 and "cannot be used" in res.stdout and "cannot be resumed" in res.stdout, res.stdout
