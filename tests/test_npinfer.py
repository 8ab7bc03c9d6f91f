"""The numpy forward pass computes what the torch network computes, and predict never imports
torch: the same forecasts, the same refusals of bad weights."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from support import assert_one_line_error, python_env, tiny_overrides

from forecaster import npinfer
from forecaster.checkpoint import load_run, load_run_numpy
from forecaster.errors import RunFormatError
from forecaster.models import QuantileRNN, roll_forward

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _pair(cell, strategy, layers, emb, quantiles=(0.1, 0.5, 0.9), horizon=4, seed=0):
    """A random torch QuantileRNN and its numpy twin built from the state dict."""
    torch.manual_seed(seed)
    net = QuantileRNN(
        cell=cell,
        n_features=6,
        n_tickers=5,
        hidden_size=8,
        num_layers=layers,
        dropout=0.2,
        embedding_dim=emb,
        horizon=horizon,
        quantiles=list(quantiles),
        strategy=strategy,
    )
    with torch.no_grad():
        for p in net.parameters():  # larger than the default init: saturating gates, wide spreads
            p.mul_(3)
    net.eval()
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    twin = npinfer.NumpyQuantileRNN(state, cell=cell, num_layers=layers, quantiles=list(quantiles), steps=net.steps)
    return net, twin


@pytest.mark.parametrize("emb", [0, 4])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("strategy", ["direct", "recursive"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_numpy_forward_equals_torch(cell, strategy, layers, emb):
    net, twin = _pair(cell, strategy, layers, emb)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 15, 6)).astype(np.float32) * 2
    tid = rng.integers(0, 5, size=9)
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.from_numpy(tid)).numpy()
    got = twin(x, tid)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    if strategy == "recursive":
        shift = rng.normal(size=9).astype(np.float32)
        dow = rng.normal(size=(9, 5, 2)).astype(np.float32)
        want = roll_forward(
            net, torch.from_numpy(x), torch.from_numpy(tid), 5, torch.from_numpy(shift), torch.from_numpy(dow)
        ).numpy()
        got = npinfer.roll_forward(twin, x, tid, 5, shift, dow)
        assert got.shape == (9, 5, 3)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_many_quantiles_stay_ordered_and_match_torch():
    net, twin = _pair("lstm", "direct", 1, 3, quantiles=(0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95))
    x = np.random.default_rng(2).normal(size=(16, 10, 6)).astype(np.float32) * 10
    tid = np.arange(16) % 5
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.from_numpy(tid)).numpy()
    got = twin(x, tid)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert (np.diff(got, axis=-1) >= 0).all()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("strategy, layers, emb", [("direct", 1, 0), ("recursive", 3, 4)])
def test_state_shapes_are_torchs(cell, strategy, layers, emb):
    net, _ = _pair(cell, strategy, layers, emb)
    expected = npinfer.state_shapes(
        cell=cell,
        n_features=6,
        n_tickers=5,
        hidden_size=8,
        num_layers=layers,
        embedding_dim=emb,
        steps=net.steps,
        n_quantiles=3,
    )
    assert list(expected.items()) == [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


def test_softplus_and_sigmoid_are_stable():
    x = np.array([-1e4, -100, -20, -1, 0, 1, 20, 100, 1e4], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        sp, sg = npinfer.softplus(x), npinfer.sigmoid(x)
    np.testing.assert_allclose(sp, torch.nn.functional.softplus(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(sg, torch.sigmoid(torch.from_numpy(x)).numpy(), rtol=0, atol=1e-7)


@pytest.fixture(scope="module")
def recursive_run(sample_dir, tmp_path_factory):
    """A tiny two-layer LSTM run with the recursive strategy."""
    from forecaster.config import load_config
    from forecaster.training import train

    run_dir = tmp_path_factory.mktemp("runs") / "recursive"
    cfg = load_config(
        None,
        tiny_overrides(
            sample_dir,
            **{"model.cell": "lstm", "model.strategy": "recursive", "model.num_layers": 2, "train.epochs": 1},
        ),
    )
    train(cfg, run_dir=run_dir)
    return run_dir


@pytest.fixture(params=["direct", "recursive"])
def some_run(request, trained_run, recursive_run):
    return trained_run if request.param == "direct" else recursive_run


def test_numpy_run_predicts_what_the_torch_run_predicts(some_run, sample_dir):
    from forecaster.inference import predict_scaled as torch_predict_scaled
    from forecaster.store import load_bars
    from forecaster.windows import build_windows

    torch_run, np_run = load_run(some_run), load_run_numpy(some_run)
    assert np_run.meta == torch_run.meta and np_run.config == torch_run.config
    assert np_run.model.median_index == torch_run.model.median_index
    cfg = np_run.config
    bars = load_bars("csv", sample_dir, np_run.names)
    ws = build_windows(
        bars, cfg.window.lookback, cfg.window.horizon, np_run.splits(), scalers=np_run.scalers(), tickers=np_run.names
    )
    ends = np.concatenate([ws.origins("test"), ws.offsets[1:] - 1])
    want = torch_predict_scaled(torch_run.model, ws, ends, cfg.model.strategy)
    got = npinfer.predict_scaled(np_run.model, ws, ends, cfg.model.strategy, batch_size=64)
    assert got.shape == want.shape == (len(ends), cfg.window.horizon, 3)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_predict_writes_the_torch_path_forecast(some_run, tmp_path):
    import pandas as pd

    from forecaster import prediction
    from forecaster.evaluation import interval
    from forecaster.inference import predict_scaled as torch_predict_scaled
    from forecaster.sessions import next_sessions
    from forecaster.store import load_bars
    from forecaster.windows import build_windows

    report = prediction.predict(some_run, offline=True, out=tmp_path)
    torch_run = load_run(some_run)
    cfg = torch_run.config
    bars = load_bars("csv", cfg.data.data_dir, torch_run.names)
    want = prediction._forecast(
        torch_run,
        bars,
        None,
        True,
        None,
        prediction.ForecastReport(run="", as_of="", forecasts=pd.DataFrame()),
        build_windows,
        torch_predict_scaled,
        interval,
        next_sessions,
    )
    got = report.forecasts
    numeric = ["last_close", "p10", "p50", "p90"]
    pd.testing.assert_frame_equal(got.drop(columns=numeric), want.drop(columns=numeric))
    np.testing.assert_allclose(got[numeric].to_numpy(float), want[numeric].to_numpy(float), rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        ("drop", "missing head.bias"),
        ("extra", "unexpected encoder.weight_ih_l1"),
        ("shape", "head.weight has shape"),
        ("rename", "missing embedding.weight"),
    ],
)
def test_numpy_loader_refuses_weights_that_do_not_match(cli, run_copy, tmp_path, damage, fragment):
    weights = run_copy / "model.safetensors"
    state = load_file(str(weights))
    if damage == "drop":
        del state["head.bias"]
    elif damage == "extra":
        state["encoder.weight_ih_l1"] = np.zeros((24, 8), np.float32)
    elif damage == "shape":
        state["head.weight"] = state["head.weight"][:-1]
    else:
        state["embeddings.weight"] = state.pop("embedding.weight")
    save_file(state, str(weights))
    with pytest.raises(RunFormatError, match="does not match the run's config"):
        load_run_numpy(run_copy)
    out = tmp_path / "fc"
    res = cli("predict", "--run", run_copy, "--out", out)
    assert_one_line_error(res, 1, "model.safetensors", "does not match", fragment)
    assert not out.exists()


def test_cli_predict_never_imports_torch(trained_run, tmp_path):
    out = tmp_path / "fc"
    code = (
        "import json, sys\n"
        "from forecaster.cli import app\n"
        "try:\n"
        f"    app(['predict', '--run', {str(trained_run)!r}, '--offline', '--out', {str(out)!r}, '-q'])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'torch'\n"
        "               or m in ('safetensors.torch', 'forecaster.models', 'forecaster.inference'))\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=python_env(), timeout=120
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "heavy": []}, res.stderr
    assert (out / trained_run.name / "latest.csv").is_file()
