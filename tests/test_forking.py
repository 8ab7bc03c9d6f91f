"""Forking-sequence training: chunking invariants (Hypothesis, over the same random ticker
histories as the window tests), the stretches a batch is made of, and the training mode."""

import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import sample_trainer
from test_models import net
from test_windows import histories, params, windows_for

from forecaster.forking import Stretches, epoch_chunks, plan_chunks, runs
from forecaster.training import fit, new_model

chunks_st = st.integers(1, 40)
settings_ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _phases(draw_seed: int, n_runs: int, chunk: int) -> np.ndarray:
    return np.random.default_rng(draw_seed).integers(0, chunk, n_runs)


@settings_
@given(histories, params, chunks_st, st.integers(0, 2**31 - 1), st.sampled_from(["train", "val", "test"]))
def test_every_origin_is_in_exactly_one_chunk_of_one_ticker(starts, p, chunk, seed, split):
    out = windows_for(starts, *p)
    assume(out is not None)
    _, _, ws = out
    origins = ws.ends(split)
    assume(len(origins) > 0)
    first, length = runs(origins, ws.ticker_id)
    phase = _phases(seed, len(first), chunk)
    plan = plan_chunks(origins, ws.ticker_id, chunk, phase)
    assert ((plan.count >= 1) & (plan.count <= chunk)).all()
    covered = np.concatenate([np.arange(s, s + c) for s, c in zip(plan.start, plan.count)])
    np.testing.assert_array_equal(np.sort(covered), np.sort(origins))  # each origin once
    last = plan.start + plan.count - 1
    assert (ws.ticker_id[plan.start] == ws.ticker_id[last]).all()  # one ticker per chunk
    # the chunks of a run: the first is chunk - phase long (or the whole run), then full ones
    n_expected = (length + phase + chunk - 1) // chunk
    assert len(plan) == int(n_expected.sum())
    starts_of_runs = np.isin(plan.start, first)
    firsts = dict(zip(plan.start[starts_of_runs], plan.count[starts_of_runs]))
    for f, n, ph in zip(first, length, phase):
        assert firsts[f] == min(n, chunk - ph)


@settings_
@given(histories, params, chunks_st, st.integers(0, 2**31 - 1))
def test_stretches_read_only_their_ticker_up_to_the_last_origin(starts, p, chunk, seed):
    out = windows_for(starts, *p)
    assume(out is not None)
    _, _, ws = out
    L, H = ws.lookback, ws.horizon
    gen = torch.Generator().manual_seed(seed)
    for split in ("train", "val"):
        origins = ws.ends(split)
        if len(origins) == 0:
            continue
        plan = epoch_chunks(origins, ws.ticker_id, chunk, gen)
        x, tid, y, mask = Stretches(ws, chunk, torch.device("cpu"), one_step=False)(plan)
        assert x.shape == (len(plan), L + chunk - 1, ws.x.shape[1]) and y.shape == (len(plan), chunk, H)
        np.testing.assert_array_equal(mask.sum(1).numpy(), plan.count)
        for b, (s, c) in enumerate(zip(plan.start, plan.count)):
            k = ws.ticker_id[s]
            lo, hi = ws.offsets[k], ws.offsets[k + 1]
            rows = np.arange(s - L + 1, s + c)  # burn-in, then the chunk's origins
            assert lo <= rows[0] and rows[-1] + H < hi  # inputs and targets inside the ticker
            np.testing.assert_array_equal(x[b, : len(rows)].numpy(), ws.x[rows])
            assert (x[b, len(rows) :] == 0).all()  # nothing after the last origin is read
            assert tid[b] == k
            o = np.arange(s, s + c)
            np.testing.assert_allclose(y[b, :c].numpy(), ws.targets(o), rtol=1e-6)
            # every target of every origin in the loss lies in the split of the first target
            code = ("train", "val", "test").index(split)
            assert (ws.split[o[:, None] + np.arange(1, H + 1)] == code).all()


def test_runs_split_at_gaps_and_ticker_boundaries():
    tid = np.array([0] * 10 + [1] * 10)
    first, length = runs(np.array([2, 3, 4, 7, 8, 9, 10, 11, 15]), tid)
    np.testing.assert_array_equal(first, [2, 7, 10, 15])  # 9 | 10 is a ticker boundary
    np.testing.assert_array_equal(length, [3, 3, 2, 1])


def test_plan_without_phase_cuts_from_the_start_of_each_run():
    plan = plan_chunks(np.arange(100, 110), np.zeros(200, np.int64), 4)
    np.testing.assert_array_equal(plan.start, [100, 104, 108])
    np.testing.assert_array_equal(plan.count, [4, 4, 2])
    with pytest.raises(ValueError):
        plan_chunks(np.arange(3), np.zeros(3, np.int64), 0)


def test_each_epoch_cuts_a_run_of_origins_at_other_rows():
    """The cuts move from epoch to epoch: over the epochs the first chunk of a run is every
    length from 1 to ``chunk`` origins, so a stretch (and the burn-in before it) starts at
    other rows, not at the same ``chunk``-aligned rows every epoch."""
    tid = np.zeros(200, np.int64)
    origins = np.arange(20, 120)
    gen = torch.Generator().manual_seed(0)
    firsts = set()
    for _ in range(40):
        plan = epoch_chunks(origins, tid, 4, gen)
        assert plan.origins == len(origins)
        firsts.add(int(plan.count[plan.start == 20][0]))
    assert firsts == {1, 2, 3, 4}


def test_an_epochs_chunks_are_trained_in_a_shuffled_order_not_ticker_after_ticker():
    """A step takes chunks from anywhere in the training split: an epoch's chunks are not in
    row order (one ticker's history after another's, oldest first), and the same generator
    state gives the same order (a resumed run trains as the straight one)."""
    tid = np.repeat([0, 1, 2], 100)
    origins = np.concatenate([np.arange(10, 90), np.arange(110, 190), np.arange(210, 290)])
    plan = epoch_chunks(origins, tid, 8, torch.Generator().manual_seed(3))
    again = epoch_chunks(origins, tid, 8, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(plan.start, again.start)
    assert not (np.diff(plan.start) > 0).all()
    assert set(tid[plan.start[: len(plan) // 3]]) == {0, 1, 2}  # every ticker early in the epoch


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("strategy", ["direct", "recursive"])
def test_each_origin_sees_the_rows_a_window_from_the_stretch_start_would(cell, strategy):
    """The forecast at chunk position c is the forecast of the window of the stretch's first
    L + c rows: at the first origin exactly what inference computes from its lookback window."""
    m = net(cell, strategy, emb=2).eval()
    L, C = 7, 5
    x, tid = torch.randn(3, L + C - 1, 6), torch.tensor([0, 2, 1])
    with torch.no_grad():
        forked = m(x, tid, L - 1)  # (B, C, steps, Q)
        assert forked.shape == (3, C, 4 if strategy == "direct" else 1, 3)
        for c in range(C):
            torch.testing.assert_close(forked[:, c], m(x[:, : L + c], tid), rtol=1e-5, atol=1e-6)
        # rows after a position never change its forecast (what makes zero padding harmless)
        later = x.clone()
        later[:, L + 1 :] = 99.0
        torch.testing.assert_close(m(later, tid, L - 1)[:, :2], forked[:, :2])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_burn_in_without_gradient_forecasts_the_same_and_sends_no_gradient_before_the_chunk(cell):
    """Without gradient the burn-in only sets the state the chunk starts from: the same
    forecasts, the same gradient on the chunk's rows, none on the burn-in's."""
    L, C = 7, 5
    x0, tid = torch.randn(3, L + C - 1, 6), torch.tensor([0, 2, 1])
    out, grad = {}, {}
    for flag in (True, False):
        m = net(cell, emb=2).train()  # no dropout in net(): training mode is deterministic
        m.burn_in_grad = flag
        x = x0.clone().requires_grad_(True)
        out[flag] = m(x, tid, L - 1)
        (out[flag] * torch.linspace(-1, 1, out[flag].numel()).view_as(out[flag])).sum().backward()
        grad[flag] = x.grad
    torch.testing.assert_close(out[False], out[True], rtol=1e-5, atol=1e-6)
    assert grad[True][:, : L - 1].abs().sum() > 0  # through the burn-in
    assert torch.equal(grad[False][:, : L - 1], torch.zeros_like(grad[False][:, : L - 1]))
    torch.testing.assert_close(grad[False][:, L - 1 :], grad[True][:, L - 1 :], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("burn_in_grad", [False, True])
def test_forking_training_runs_the_burn_in_without_gradient_unless_asked(sample_dir, burn_in_grad):
    """By default (``train.burn_in_grad = false``) each step runs the encoder over the
    ``lookback - 1`` burn-in rows without a graph, then over the chunk with one (here in turn,
    ``train.burn_in_ahead`` off: the burn-in ahead is tested below)."""
    over = {"train.epochs": 1, "train.burn_in_grad": burn_in_grad, "train.burn_in_ahead": False}
    cfg, ws, trainer = _trainer(sample_dir, "forking", **over)
    calls = []
    trainer.model.encoder.register_forward_hook(
        lambda mod, args, out: calls.append((torch.is_grad_enabled(), mod.training, args[0].shape[1]))
    )
    (rec,) = trainer.epochs(ws.ends("train"), ws.ends("val"))
    assert np.isfinite(rec.val_loss) and rec.grad_norm > 0
    L, C = cfg.window.lookback, cfg.train.chunk
    training = [c[::2] for c in calls if c[1]]
    assert {n for _, n in training} <= set(range(1, L + C))
    if burn_in_grad:  # one pass with gradient over burn-in and chunk
        assert {g for g, _ in training} == {True} and max(n for _, n in training) == L - 1 + C
    else:  # pairs: the burn-in without gradient, then the chunk (up to C rows) with it
        assert training[0::2] == [(False, L - 1)] * (len(training) // 2)
        assert {g for g, _ in training[1::2]} == {True} and max(n for _, n in training[1::2]) == C
    assert all(n == L for g, train, n in calls if not train)  # validation reads whole windows


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_burn_in_without_gradient_skips_the_dropout_between_layers_unless_asked(cell):
    """With two layers and dropout, the burn-in (without gradient) sets the chunk's starting
    state as inference would, without dropout, unless ``burn_in_dropout`` is on; the chunk itself
    keeps its dropout, and the encoder is left in training mode."""
    L, C = 9, 4
    x, tid = torch.randn(3, L + C - 1, 6), torch.tensor([0, 2, 1])
    for flag in (False, True):
        m = net(cell, emb=2, dropout=0.5).train()
        m.burn_in_grad, m.burn_in_dropout = False, flag
        calls = []
        m.encoder.register_forward_hook(
            lambda mod, args, out, calls=calls: calls.append((mod.training, args[0], out[1]))
        )
        m(x, tid, L - 1)
        assert m.encoder.training and m.training
        (burn_mode, burn_in, burn_state), (chunk_mode, _, _) = calls
        assert burn_in.shape[1] == L - 1 and (burn_mode, chunk_mode) == (flag, True)
        with torch.no_grad():
            _, plain = m.encoder.eval()(burn_in)
        m.train()
        same = [torch.equal(a, b) for a, b in zip(_states(burn_state), _states(plain))]
        assert all(same) != flag  # without its dropout exactly the plain state; with it, not


def _states(state):
    return state if isinstance(state, tuple) else (state,)


def test_forking_training_runs_the_burn_in_without_dropout_by_default(sample_dir):
    """Two layers with dropout: every burn-in call of an epoch runs in eval mode without a
    graph; with ``train.burn_in_dropout`` in training mode, like the chunks (in turn, as the
    burn-in ahead is off)."""
    seen = {}
    for flag in (False, True):
        over = {"train.epochs": 1, "model.num_layers": 2, "model.dropout": 0.2, "train.burn_in_dropout": flag}
        over["train.burn_in_ahead"] = False
        cfg, ws, trainer = _trainer(sample_dir, "forking", **over)
        calls = []
        trainer.model.encoder.register_forward_hook(
            lambda mod, args, out, calls=calls: calls.append((torch.is_grad_enabled(), mod.training, args[0].shape[1]))
        )
        (rec,) = trainer.epochs(ws.ends("train"), ws.ends("val"))
        assert np.isfinite(rec.val_loss) and rec.grad_norm > 0
        L = cfg.window.lookback
        burn = [c for c in calls if not c[0] and c[2] == L - 1]
        chunks = [c for c in calls if c[0]]
        assert len(burn) == len(chunks) > 0 and {c[1] for c in chunks} == {True}
        assert {c[1] for c in burn} == {flag}
        seen[flag] = rec.val_loss
    assert seen[False] != seen[True]  # a different state, so different training


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_burn_in_state_given_to_the_forward_pass_forecasts_as_its_own_burn_in(cell):
    """``burn_in`` computes the state the forward pass would reach after ``first`` rows; given
    it, the forward pass forecasts the same, and the gradient reaches only the chunk's rows."""
    L, C = 8, 5
    m = net(cell, emb=2).train()
    m.burn_in_grad = False
    x = torch.randn(3, L + C - 1, 6, requires_grad=True)
    tid = torch.tensor([1, 0, 2])
    state = m.burn_in(x, tid, L - 1)
    assert all(not s.requires_grad for s in _states(state))
    given_ = m(x, tid, L - 1, state)
    torch.testing.assert_close(given_, m(x, tid, L - 1), rtol=0, atol=0)
    given_.sum().backward()
    assert torch.equal(x.grad[:, : L - 1], torch.zeros_like(x.grad[:, : L - 1]))
    assert x.grad[:, L - 1 :].abs().sum() > 0
    with pytest.raises(ValueError, match="first"):
        m(x, tid, None, state)


def test_an_eval_twin_shares_the_weights_and_keeps_its_own_mode():
    from forecaster.models import eval_twin

    m = net("lstm", emb=2, dropout=0.5).train()
    twin = eval_twin(m)
    assert all(a is b for a, b in zip(m.parameters(), twin.parameters()))
    assert not twin.training and not twin.encoder.training and m.training and m.encoder.training
    with torch.no_grad():  # a change to the model's weights is the twin's too
        m.encoder.weight_hh_l0.add_(1.0)
    x, tid = torch.randn(2, 9, 6), torch.tensor([0, 1])
    for a, b in zip(_states(twin.burn_in(x, tid, 6)), _states(m.eval().burn_in(x, tid, 6))):
        assert torch.equal(a, b)


def _burn_in_calls(trainer, threads: list | None = None):
    """(input, state) of every burn-in the trainer's eval twin computes, in order; the name of
    the thread each ran on into ``threads``. A burn-in off the main thread starts 10 ms late, so
    that one still running when the step's update comes would read the updated weights."""
    calls = []

    def late(mod, args):
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.01)

    def seen(mod, args, out):
        calls.append((args[0], out[1]))
        if threads is not None:
            threads.append(threading.current_thread().name)

    trainer.twin.encoder.register_forward_pre_hook(late)
    trainer.twin.encoder.register_forward_hook(seen)
    return calls


@pytest.mark.parametrize("layers", [1, 2])
def test_the_burn_in_ahead_reads_the_weights_before_the_previous_steps_update(sample_dir, monkeypatch, layers):
    """With ``train.burn_in_ahead`` (the default) a step's burn-in is computed during the step
    before, from the weights that step read: the n-th burn-in of an epoch equals the eval-mode
    encoder's state from the weights before update n - 1 (the first, before update 0), without
    dropout or a graph, and the chunks run in training mode with one. On two cores every
    burn-in after the first runs in the pool's thread, and is done before the update."""
    import forecaster.training as training

    monkeypatch.setattr(training, "usable_cores", lambda: 2)
    over = {"train.epochs": 1, "model.num_layers": layers, "model.dropout": 0.3 if layers > 1 else 0.0}
    cfg, ws, trainer = _trainer(sample_dir, "forking", **over)
    assert trainer.ahead
    weights = []  # the encoder's weights before each update
    trainer.opt.register_step_pre_hook(
        lambda opt, args, kwargs: weights.append({k: v.clone() for k, v in trainer.model.encoder.state_dict().items()})
    )
    threads = []
    burn = _burn_in_calls(trainer, threads)
    chunks = []
    trainer.model.encoder.register_forward_hook(
        lambda mod, args, out: chunks.append((torch.is_grad_enabled(), mod.training, args[0].shape[1]))
    )
    (rec,) = trainer.epochs(ws.ends("train"), ws.ends("val"))
    assert np.isfinite(rec.val_loss)
    L, steps = cfg.window.lookback, len(weights)
    assert steps > 2 and len(burn) == steps
    assert threads[0] == threading.main_thread().name  # an epoch's first: in turn
    assert all(name.startswith("training") for name in threads[1:])  # the others beside a step
    trained = [c for c in chunks if c[1]]
    assert len(trained) == steps and {(g, n <= cfg.train.chunk) for g, _, n in trained} == {(True, True)}
    enc = trainer.model.encoder  # an encoder of the same shape, filled with each snapshot
    check = type(enc)(enc.input_size, enc.hidden_size, layers, batch_first=True, dropout=enc.dropout).eval()

    def state_from(w, rows):
        check.load_state_dict(w)
        with torch.no_grad():
            return _states(check(rows)[1])

    for n, (rows, state) in enumerate(burn):
        assert rows.shape[1] == L - 1 and all(not s.requires_grad for s in _states(state))
        ahead = state_from(weights[max(n - 1, 0)], rows)
        assert all(torch.equal(a, b) for a, b in zip(_states(state), ahead)), n
        if n:  # not from the weights of its own step, which the burn-in in turn would read
            own = state_from(weights[n], rows)
            assert not all(torch.equal(a, b) for a, b in zip(_states(state), own)), n


@pytest.mark.parametrize("cores", [1, 2])
def test_with_the_weights_held_still_the_burn_in_ahead_trains_as_the_burn_in_in_turn(sample_dir, monkeypatch, cores):
    """The burn-in ahead differs from the one in turn only in the weights it reads: with the
    updates switched off, each step's loss is the same to the last bit (so each step trains on
    its own stretches, each with its own burn-in)."""
    import forecaster.training as training

    monkeypatch.setattr(training, "usable_cores", lambda: cores)
    losses = {}
    for ahead in (True, False):
        over = {"train.epochs": 1, "model.num_layers": 2, "model.dropout": 0.2, "train.burn_in_ahead": ahead}
        cfg, ws, trainer = _trainer(sample_dir, "forking", **over)
        trainer.opt.step = lambda: None
        seen = []  # the training steps' head outputs (validation's batches finish in any order)
        trainer.model.head.register_forward_hook(
            lambda mod, args, out, seen=seen: seen.append(out.detach().clone()) if mod.training else None
        )
        (rec,) = trainer.epochs(ws.ends("train"), ws.ends("val"))
        losses[ahead] = (rec.train_loss, seen)
    assert losses[True][0] == losses[False][0]
    assert len(losses[True][1]) == len(losses[False][1]) > 2
    assert all(torch.equal(a, b) for a, b in zip(losses[True][1], losses[False][1], strict=True))


def test_the_burn_in_ahead_trains_alike_on_one_core_and_on_two(sample_dir, monkeypatch):
    """Computed in a thread beside the step or in turn after its backward pass, the next burn-in
    reads the same weights and draws nothing: the same training to the last bit."""
    import forecaster.training as training

    out = {}
    for cores in (1, 2):
        monkeypatch.setattr(training, "usable_cores", lambda cores=cores: cores)
        over = {"train.epochs": 2, "model.num_layers": 2, "model.dropout": 0.2}
        cfg, ws, trainer = _trainer(sample_dir, "forking", **over)
        assert trainer._pool_threads() == (cores - 1)
        recs = list(trainer.epochs(ws.ends("train"), ws.ends("val")))
        out[cores] = ([r.val_loss for r in recs], torch.cat([p.detach().flatten() for p in trainer.model.parameters()]))
    assert out[1][0] == out[2][0]
    assert torch.equal(out[1][1], out[2][1])


@pytest.mark.parametrize(
    "over, threads",
    [
        ({}, 1),  # the next burn-in beside the step
        ({"train.threads": 2}, 0),  # torch's team of threads has the cores: in turn
        ({"train.threads": 0}, 0),
        ({"train.burn_in_ahead": False}, 0),
        ({"train.mode": "window"}, 2),  # the window halves'
        ({"train.mode": "window", "train.halves": False}, 0),
    ],
)
def test_a_second_thread_computes_the_next_burn_in_only_beside_one_torch_thread(sample_dir, monkeypatch, over, threads):
    import forecaster.training as training

    monkeypatch.setattr(training, "usable_cores", lambda: 2)
    cfg, ws, trainer = _trainer(sample_dir, over.pop("train.mode", "forking"), **over)
    assert trainer._pool_threads() == threads
    monkeypatch.setattr(training, "usable_cores", lambda: 1)
    assert trainer._pool_threads() == 0


@pytest.mark.parametrize(
    "over, ahead",
    [
        ({}, True),
        ({"train.burn_in_ahead": False}, False),
        ({"train.burn_in_grad": True}, False),  # the burn-in needs this step's graph
        ({"model.num_layers": 2, "model.dropout": 0.2, "train.burn_in_dropout": True}, False),  # it would draw
        ({"model.num_layers": 1, "model.dropout": 0.2, "train.burn_in_dropout": True}, True),  # no layers between
        ({"model.num_layers": 2, "model.dropout": 0.0, "train.burn_in_dropout": True}, True),
        ({"train.mode": "window"}, False),
    ],
)
def test_the_burn_in_is_made_ahead_only_where_it_draws_nothing_and_needs_no_graph(sample_dir, over, ahead):
    cfg, ws, trainer = _trainer(sample_dir, over.pop("train.mode", "forking"), **{"train.epochs": 1, **over})
    assert trainer.ahead == ahead and (trainer.twin is not None) == ahead
    (rec,) = trainer.epochs(ws.ends("train"), ws.ends("val"))
    assert np.isfinite(rec.val_loss)


def test_the_burn_in_ahead_changes_training_only_a_little(sample_dir):
    """A burn-in from the weights one update older: different numbers, about the same fit."""
    seen = {}
    for flag in (True, False):
        cfg, ws, trainer = _trainer(sample_dir, "forking", **{"train.epochs": 2, "train.burn_in_ahead": flag})
        seen[flag] = [r.val_loss for r in trainer.epochs(ws.ends("train"), ws.ends("val"))]
    assert seen[True] != seen[False]
    np.testing.assert_allclose(seen[True], seen[False], rtol=0.01)


def _trainer(sample_dir, mode, **extra):
    over = {"train.mode": mode, "train.chunk": 16, "train.epochs": 3, "train.patience": 50, **extra}
    return sample_trainer(sample_dir, **over)


@pytest.mark.parametrize("strategy", ["direct", "recursive"])
def test_an_epoch_counts_every_training_origin_once(sample_dir, strategy):
    cfg, ws, trainer = _trainer(sample_dir, "forking", **{"model.strategy": strategy})
    seen = []
    recs = list(trainer.epochs(ws.ends("train"), ws.ends("val"), on_batch=seen.append))
    n = len(ws.ends("train"))
    assert [r.samples for r in recs] == [n] * 3
    assert sum(seen) == 3 * n
    # batch_size counts origins: each step holds batch_size // chunk stretches
    assert max(seen) <= cfg.train.batch_size
    assert all(np.isfinite(r.val_loss) and r.grad_norm > 0 for r in recs)


@pytest.mark.parametrize("epoch_steps", [0, 3])
def test_epoch_steps_bounds_the_steps_of_an_epoch(sample_dir, epoch_steps):
    cfg, ws, trainer = _trainer(sample_dir, "forking", **{"train.epochs": 1, "train.epoch_steps": epoch_steps})
    seen = []
    (rec,) = trainer.epochs(ws.ends("train"), ws.ends("val"), on_batch=seen.append)
    assert rec.samples == sum(seen) == len(ws.ends("train"))  # every origin still trains once
    if epoch_steps:  # larger steps instead of more of them
        assert len(seen) <= epoch_steps and max(seen) > cfg.train.batch_size
    else:  # batch_size origins a step (at most: short chunks carry fewer)
        assert max(seen) <= cfg.train.batch_size and len(seen) > 3


def test_forking_learns_like_windows_on_the_sample(sample_dir):
    """Both modes lower the validation loss from the untrained model's."""
    from forecaster.training import Batches, evaluate_loss

    for mode in ("forking", "window"):
        cfg, ws, trainer = _trainer(sample_dir, mode, **{"train.lr": 0.01})
        before = evaluate_loss(
            trainer.model, Batches(ws, torch.device("cpu"), False), ws.ends("val"), cfg.model.quantiles
        )
        recs = list(trainer.epochs(ws.ends("train"), ws.ends("val")))
        assert min(r.val_loss for r in recs) < before, mode


def test_nan_inputs_stop_forking_training_with_a_clear_error(sample_dir):
    from forecaster.errors import TrainingError

    cfg, ws, _ = _trainer(sample_dir, "forking")
    ws.x[:] = np.nan
    with pytest.raises(TrainingError, match="loss became nan"):
        list(fit(new_model(cfg, ws), ws, cfg, torch.device("cpu"), ws.ends("train"), ws.ends("val")))


def test_a_short_chunks_loss_counts_only_its_real_origins(sample_dir):
    """A chunk of 5 origins in a stretch made for 16 has the loss of those 5 origins alone (as
    with --chunk 5): the positions after its last origin, zeros in the batch, are no part of it."""
    from forecaster.forking import Chunks

    losses = []
    for chunk in (16, 5):
        cfg, ws, trainer = _trainer(sample_dir, "forking", **{"train.chunk": chunk, "train.batch_size": 16})
        trainer.model.eval()
        starts = ws.ends("train")[[0, 40]]
        items = Chunks(starts.astype(np.int64), np.array([5, 5], np.int64))
        q = torch.tensor(cfg.model.quantiles)
        with torch.no_grad():
            loss, n = trainer._loss(items, q)
        assert n == 10
        losses.append(float(loss))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_a_recursive_models_stretches_carry_one_step_targets(sample_dir):
    """The recursive strategy trains on the next session alone: its stretches' targets are
    the first step of the direct strategy's, not all of them."""
    _, ws, _ = sample_trainer(sample_dir)
    plan = plan_chunks(ws.ends("train")[:40], ws.ticker_id, 8)
    _, _, y_direct, mask = Stretches(ws, 8, torch.device("cpu"), one_step=False)(plan)
    _, _, y_one, _ = Stretches(ws, 8, torch.device("cpu"), one_step=True)(plan)
    assert y_direct.shape[-1] == ws.horizon and y_one.shape == (*y_direct.shape[:-1], 1)
    torch.testing.assert_close(y_one[mask], y_direct[mask][:, :1])
