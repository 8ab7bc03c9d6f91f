"""The numpy forward pass (what calibration, evaluate and predict run) computes what the torch
network (what training runs) computes, and forecasting works where torch cannot be imported."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from support import assert_one_line_error, held_by_another_thread, python_env, tiny_overrides

from forecaster import npinfer
from forecaster.checkpoint import load_run, read_weights
from forecaster.errors import RunFormatError
from forecaster.models import QuantileRNN, build_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@torch.no_grad()
def torch_roll_forward(model, x, ticker, horizon, ret_shift, next_dow, ret_factor=1.0, fed=(), carried=()):
    """The recursive strategy written with torch ops, as the reference for the numpy one: each
    step appends the predicted median return (also as each ``fed`` feature, the ``carried``
    ones as the row before had them, the other market features at their training mean, 0 after
    scaling) and the next weekday; medians add up, the steps' spreads add in quadrature."""
    m = model.median_index
    cum = torch.zeros(x.shape[0])
    lo_sq = torch.zeros(x.shape[0], m)
    hi_sq = torch.zeros(x.shape[0], len(model.quantiles) - m - 1)
    out = []
    for h in range(horizon):
        q = model(x, ticker)[:, 0]
        r = q[:, m]
        cum = cum + r
        lo_sq = lo_sq + (r[:, None] - q[:, :m]) ** 2
        hi_sq = hi_sq + (q[:, m + 1 :] - r[:, None]) ** 2
        levels = torch.cat([cum[:, None] - lo_sq.sqrt(), cum[:, None], cum[:, None] + hi_sq.sqrt()], -1)
        out.append(levels / (h + 1) ** 0.5)
        new = torch.zeros_like(x[:, :1])
        new[:, 0, 0] = r * ret_factor - ret_shift
        for col, f, shift in fed:
            new[:, 0, col] = r * torch.as_tensor(f).float() - torch.as_tensor(shift).float()
        for col in carried:
            new[:, 0, col] = x[:, -1, col]
        new[:, 0, -2:] = next_dow[:, h]
        x = torch.cat([x[:, 1:], new], dim=1)
    return torch.stack(out, dim=1)


def _pair(cell, strategy, layers, emb, quantiles=(0.1, 0.5, 0.9), horizon=4, seed=0, ar=0):
    """A random torch QuantileRNN and its numpy twin built from the state dict (with an
    autoregressive highway of order ``ar`` on feature 2)."""
    torch.manual_seed(seed)
    net = QuantileRNN(
        ar_order=ar,
        ar_feature=2 if ar else None,
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
    twin = npinfer.NumpyQuantileRNN(
        state, cell=cell, num_layers=layers, quantiles=list(quantiles), steps=net.steps, ar_feature=net.ar_feature
    )
    return net, twin


@pytest.mark.parametrize("emb, ar", [(0, 0), (4, 0), (4, 3)])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("strategy", ["direct", "recursive"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_numpy_forward_equals_torch(cell, strategy, layers, emb, ar):
    net, twin = _pair(cell, strategy, layers, emb, ar=ar)
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
        want = torch_roll_forward(
            net, torch.from_numpy(x), torch.from_numpy(tid), 5, torch.from_numpy(shift), torch.from_numpy(dow)
        ).numpy()
        got = npinfer.roll_forward(twin, x, tid, 5, shift, dow)
        assert got.shape == (9, 5, 3)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_input_side_taken_a_few_timesteps_at_a_time_matches_torch(cell, steps, monkeypatch):
    """The input products of a block of timesteps at a time (one, or four of 15: the last block
    short) give what torch gives, and what one block for every timestep gives."""
    net, twin = _pair(cell, "direct", 2, 4)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(9, 15, 6)).astype(np.float32) * 2
    tid = rng.integers(0, 5, size=9)
    whole = twin(x, tid)
    gates = twin.layers[0][1].shape[1]
    monkeypatch.setattr(npinfer, "INPUT_BLOCK_BYTES", steps * 9 * gates * 4)
    seen = []
    matmul = np.matmul

    def spy(a, b, **kw):
        seen.append(a.shape[0])
        return matmul(a, b, **kw)

    monkeypatch.setattr(npinfer.np, "matmul", spy)
    got = twin(x, tid)
    monkeypatch.undo()
    # per layer: 15 state products of 9 rows, and the input products of the blocks
    blocks = [9] * 15 if steps == 1 else [36, 36, 36, 27]
    assert sorted(seen) == sorted(([9] * 15 + blocks) * 2)
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.from_numpy(tid)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, whole, atol=1e-6, rtol=0)


def test_roll_forward_feeds_its_own_median_back():
    _, twin = _pair("lstm", "recursive", 2, 3)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 10, 6)).astype(np.float32)
    tid = np.array([0, 1])
    out = npinfer.roll_forward(twin, x, tid, 4, np.zeros(2, np.float32), np.zeros((2, 4, 2), np.float32))
    assert out.shape == (2, 4, 3)
    assert (np.diff(out, axis=-1) >= 0).all()
    # step 1 is the one-step model itself
    np.testing.assert_allclose(out[:, 0], twin(x, tid)[:, 0], rtol=1e-6)
    # step 2 sees a window extended with step 1's median
    x2 = np.concatenate([x[:, 1:], np.zeros((2, 1, 6), np.float32)], 1)
    x2[:, -1, 0] = twin(x, tid)[:, 0, 1]
    second = twin(x2, tid)[:, 0, 1]
    np.testing.assert_allclose(out[:, 1, 1] * 2**0.5, out[:, 0, 1] + second, rtol=1e-5)


def test_roll_forward_feeds_the_predicted_return_to_the_autoregressive_term():
    """The row added for each step held the predicted return as ``ret`` alone: the highway,
    which reads the return in units of the local volatility, saw the average return from step 2
    on, so an AR(1) term forecast one step and no more."""
    _, twin = _pair("lstm", "recursive", 1, 3, ar=1)
    for w in (twin.head_w, twin.head_b):
        w[...] = 0  # the median is the highway's alone: 0.5 times the last return read
    twin.ar_w[...] = 0.5
    twin.ar_b[...] = 0
    x = np.zeros((1, 10, 6), np.float32)
    x[:, -1, 2] = 1.0
    tid, shift, dow = np.array([0]), np.zeros(1, np.float32), np.zeros((1, 3, 2), np.float32)
    fed = [(2, np.ones(1, np.float32), np.zeros(1, np.float32))]
    out = npinfer.roll_forward(twin, x, tid, 3, shift, dow, None, fed)
    cumulative = out[0, :, 1] * np.sqrt([1, 2, 3])
    np.testing.assert_allclose(cumulative, [0.5, 0.75, 0.875], rtol=1e-6)
    alone = npinfer.roll_forward(twin, x, tid, 3, shift, dow) * np.sqrt([1, 2, 3])[:, None]
    np.testing.assert_allclose(alone[0, :, 1], [0.5, 0.5, 0.5], rtol=1e-6)  # as it was


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
@pytest.mark.parametrize(
    "strategy, layers, emb, ar", [("direct", 1, 0, 0), ("recursive", 3, 4, 0), ("direct", 2, 4, 5)]
)
def test_state_shapes_are_torchs(cell, strategy, layers, emb, ar):
    net, _ = _pair(cell, strategy, layers, emb, ar=ar)
    expected = npinfer.state_shapes(
        cell=cell,
        n_features=6,
        n_tickers=5,
        hidden_size=8,
        num_layers=layers,
        embedding_dim=emb,
        steps=net.steps,
        n_quantiles=3,
        ar_order=ar,
    )
    assert list(expected.items()) == [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


def test_softplus_is_stable():
    x = np.array([-1e4, -100, -20, -1, 0, 1, 20, 100, 1e4], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        sp = npinfer.softplus(x)
    np.testing.assert_allclose(sp, torch.nn.functional.softplus(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_saturated_gates_match_torch_without_overflow(cell):
    """Inputs of 1e4: every gate saturates; the exp of its value neither warns nor drifts."""
    net, twin = _pair(cell, "direct", 2, 4, ar=0)
    x = np.random.default_rng(5).choice([-1e4, 1e4], size=(6, 12, 6)).astype(np.float32)
    tid = np.arange(6) % 5
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.from_numpy(tid)).numpy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = twin(x, tid)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


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
    """The run's weights in the torch network give the numpy forward pass's forecasts."""
    from forecaster.features import next_weekday_features
    from forecaster.store import load_bars

    run = load_run(some_run)
    cfg = run.config
    names = run.manifest.features.names
    net = build_model(cfg, n_features=len(names), n_tickers=len(run.names), features=names)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in read_weights(some_run).items()})
    net.eval()
    bars = load_bars("csv", sample_dir, run.names)
    ws = run.windows(bars)
    ends = np.concatenate([ws.origins("test"), ws.offsets[1:] - 1])
    x, tid = (torch.from_numpy(np.ascontiguousarray(a)) for a in ws.inputs(ends))
    if cfg.model.strategy == "recursive":
        factor, shift = (torch.from_numpy(a).float() for a in ws.ret_feature(ends))
        dow = torch.from_numpy(next_weekday_features(ws.dates[ends], cfg.window.horizon)).float()
        fed, carried = ws.fed_back(ends)
        assert [c for c, _, _ in fed] == [names.index("zret")] and carried == [names.index("rvol")]
        want = torch_roll_forward(net, x, tid, cfg.window.horizon, shift, dow, factor, fed, carried).numpy()
    else:
        with torch.no_grad():
            want = net(x, tid).numpy()
    got = npinfer.predict_scaled(run.model, ws, ends, cfg.model.strategy, batch_size=64)
    assert got.shape == want.shape == (len(ends), cfg.window.horizon, 3)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_a_tickers_forecasts_do_not_depend_on_the_tickers_forecast_beside_it(some_run, sample_dir, monkeypatch):
    """Every pass of the forward pass holds one ticker's windows: a matrix product may round a row
    differently with the number of rows beside it, so a ticker's forecasts are the same bits
    alone as among other tickers' windows (evaluate in one process or several; predict -t)."""
    from forecaster.store import load_bars

    run = load_run(some_run)
    ws = run.windows(load_bars("csv", sample_dir, run.names))
    ends = np.random.default_rng(0).permutation(ws.origins("test"))  # the tickers interleaved
    tid = ws.ticker_id[ends]
    assert len(np.unique(tid)) == 2
    passes = []
    forward = npinfer.NumpyQuantileRNN.__call__

    def recorded(self, x, t):
        passes.append(np.unique(t))
        return forward(self, x, t)

    monkeypatch.setattr(npinfer.NumpyQuantileRNN, "__call__", recorded)
    together = npinfer.predict_scaled(run.model, ws, ends, run.config.model.strategy, batch_size=64)
    assert len(passes) > 2 and all(len(p) == 1 for p in passes)
    for k in np.unique(tid):
        alone = npinfer.predict_scaled(run.model, ws, ends[tid == k], run.config.model.strategy, batch_size=64)
        assert np.array_equal(together[tid == k], alone)


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
        load_run(run_copy)
    out = tmp_path / "fc"
    res = cli("predict", "--run", run_copy, "--out", out)
    assert_one_line_error(res, 1, "model.safetensors", "does not match", fragment)
    assert not out.exists()


# Run as a fresh interpreter in which `import torch` fails, as on a machine without it.
_NO_TORCH = """
import importlib.abc, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is not installed here")

sys.meta_path.insert(0, NoTorch())
from forecaster.cli import app
codes = []
for argv in ARGVS:
    try:
        app(argv)
    except SystemExit as e:
        codes.append(e.code)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch" or m in ("safetensors.torch", "forecaster.models"))
print(json.dumps({"codes": codes, "loaded": loaded}))
"""


def test_evaluate_predict_score_and_promote_work_where_torch_cannot_be_imported(run_copy, tmp_path):
    out = tmp_path / "fc"
    argvs = [
        ["evaluate", "--run", str(run_copy), "-q"],
        ["predict", "--run", str(run_copy), "--offline", "--out", str(out), "-q"],
        ["score", "--run", str(run_copy), "--out", str(out), "-q"],
        ["promote", str(run_copy), "--name", "prod", "--runs-dir", str(tmp_path / "runs"), "-q"],
    ]
    res = subprocess.run(
        [sys.executable, "-c", f"ARGVS = {argvs!r}\n" + _NO_TORCH],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=python_env(),
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0], "loaded": []}, res.stderr
    assert (run_copy / "eval" / "metrics.csv").is_file()
    name = json.loads((run_copy / "run.json").read_text())["name"]
    assert (out / name / "latest.csv").is_file()


def test_the_autoregressive_term_reads_the_zret_feature_and_says_so_when_it_is_missing():
    assert npinfer.ar_feature(0, None) is None  # no term, no feature needed
    assert npinfer.ar_feature(3, ["ret", "rvol", "zret", "dow_sin", "dow_cos"]) == 2
    for features in (None, ["ret", "range", "dow_sin", "dow_cos"]):
        with pytest.raises(ValueError, match="model.ar_order needs the zret feature among the inputs"):
            npinfer.ar_feature(3, features)


def test_forecasts_from_two_threads_at_once_leave_the_process_its_blas_threads(trained_run, sample_dir, monkeypatch):
    """Each forecast held BLAS at one thread and then put back what it found: one that began
    while another held it found one thread, and put that back after the other had ended, for
    good (a scheduler's threads evaluating two runs left numpy one thread from then on)."""
    import threading
    import time

    from threadpoolctl import threadpool_info

    from forecaster.store import load_bars

    run = load_run(trained_run)
    ws = run.windows(load_bars("csv", sample_dir, run.names))
    ends = ws.offsets[1:] - 1
    first_in, second_started, first_done = threading.Event(), threading.Event(), threading.Event()

    class Waits:
        """The run's network, made to wait inside the forecast."""

        def __init__(self, entered, then, linger=0.0):
            self.entered, self.then, self.linger = entered, then, linger

        def __getattr__(self, name):
            return getattr(run.model, name)

        def __call__(self, *args):
            self.entered.set()
            self.then.wait(30)
            time.sleep(self.linger)
            return run.model(*args)

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    def second_forecast():
        second_started.set()
        npinfer.predict_scaled(Waits(threading.Event(), first_done), ws, ends[1:], "direct")

    # the limits held at once, counted: where BLAS runs one thread anyway (a machine of one
    # core) the threads it is left with cannot tell, and this can
    real, held, most = npinfer.threadpool_limits, [0], [0]

    @contextlib.contextmanager
    def counted(*args, **kwargs):
        with real(*args, **kwargs):
            held[0] += 1
            most[0] = max(most[0], held[0])
            try:
                yield
            finally:
                held[0] -= 1

    monkeypatch.setattr(npinfer, "threadpool_limits", counted)
    before = blas()
    # the first begins, the second begins while it runs, the first ends, then the second
    first = threading.Thread(
        target=npinfer.predict_scaled, args=(Waits(first_in, second_started, 0.3), ws, ends[:1], "direct")
    )
    second = threading.Thread(target=second_forecast)
    first.start()
    assert first_in.wait(30)
    second.start()
    first.join(30)
    first_done.set()
    second.join(30)
    assert most == [1] and held == [0]
    assert blas() == before


def _blas_limit_takes(_) -> bool:
    """In a worker: whether a forecast there can take the BLAS limit (False: it would wait for ever)."""
    took = npinfer._ONE_BLAS_LIMIT.acquire(timeout=5)
    if took:
        npinfer._ONE_BLAS_LIMIT.release()
    return took


def test_a_worker_forked_while_another_thread_forecasts_can_forecast():
    """A program's thread forecasting as another evaluates with --jobs: the workers, forked
    while the first held BLAS at one thread, found its lock taken by a thread they do not have,
    and the evaluation waited for ever."""
    from forecaster.pool import workers

    with held_by_another_thread(npinfer._ONE_BLAS_LIMIT), workers(2) as pool:
        assert pool.map(_blas_limit_takes, [0, 1]) == [True, True]
