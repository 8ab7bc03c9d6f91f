"""Window training on a CPU with one torch thread cuts each batch into pieces computed side by
side: the gradient must be the whole batch's, and a seed's results must not depend on the cores
or on which thread gets ahead."""

import threading
import time

import numpy as np
import pytest
import torch
from support import sample_trainer

from forecaster.models import DRAW_TURN, pinball_loss
from forecaster.training import WINDOW_PIECES, Dist, window_pieces

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _trainer(sample_dir, **extra):
    over = {"train.mode": "window", "train.epochs": 2, "train.patience": 50, "model.cell": "lstm", **extra}
    return sample_trainer(sample_dir, **over)


def _train(sample_dir, **extra) -> tuple[list, dict]:
    cfg, ws, trainer = _trainer(sample_dir, **extra)
    records = list(trainer.epochs(ws.ends("train"), ws.ends("val")))
    return [(r.train_loss, r.val_loss, r.grad_norm) for r in records], trainer.model.state_dict()


def first_piece() -> bool:
    """Whether the piece being computed in this thread is its batch's first (the only one that
    does not wait for a turn to draw)."""
    return getattr(DRAW_TURN, "wait", None) is None


def _same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_window_training_on_one_torch_thread_cuts_its_batches_in_pieces(sample_dir):
    cpu = torch.device("cpu")
    assert WINDOW_PIECES >= 2
    assert window_pieces(cpu, Dist(), forking=False) == WINDOW_PIECES
    assert window_pieces(cpu, Dist(), forking=True) == 1  # a forking step does not gain from it
    assert window_pieces(torch.device("cuda"), Dist(), forking=False) == 1
    for threads in (0, 2):  # torch's own team of threads: no pieces on top
        assert window_pieces(cpu, Dist(), forking=False, threads=threads) == 1
    assert window_pieces(cpu, Dist(), forking=False, halves=False) == 1
    _, _, trainer = _trainer(sample_dir)
    assert trainer.pieces == WINDOW_PIECES
    _, _, trainer = _trainer(sample_dir, **{"train.halves": False})  # --no-halves
    assert trainer.pieces == 1


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_the_pieces_follow_the_settings_not_the_cores(sample_dir, monkeypatch, threads):
    """``--threads 2`` on a one-core machine runs one torch thread, yet its batches are computed
    whole, as on two cores: the dropout masks, and so the weights, do not depend on the machine."""
    from forecaster.training import set_threads

    seen = set()
    before = torch.get_num_threads()
    try:
        for cores in (1, 2):
            monkeypatch.setattr("forecaster.training.usable_cores", lambda cores=cores: cores)
            set_threads(threads)  # what train does: one torch thread on one core, whatever was asked
            _, _, trainer = _trainer(sample_dir, **{"train.threads": threads})
            seen.add(trainer.pieces)
    finally:
        torch.set_num_threads(before)
    assert seen == {WINDOW_PIECES if threads == 1 else 1}


def test_the_pieces_gradient_is_the_whole_batchs(sample_dir):
    """Each piece's loss weighted by its share of the windows: the gradient and the loss are
    those of the batch taken whole (up to rounding), for an odd batch as for an even one."""
    cfg, ws, trainer = _trainer(sample_dir, **{"model.dropout": 0.0})
    q = torch.tensor(cfg.model.quantiles)
    trainer.net.train()
    for items in (ws.ends("train")[:128], ws.ends("train")[5:122]):
        trainer.opt.zero_grad(set_to_none=False)
        x, tid, y = trainer.batches(items)
        whole = pinball_loss(trainer.net(x, tid).float(), y, q)
        whole.backward()
        expected = [p.grad.clone() for p in trainer.params]
        trainer.grads.zero_()
        loss, n = trainer._pieces_backward(items, q, None)
        assert n == len(items)
        assert float(loss) == pytest.approx(float(whole.detach()), rel=1e-6)
        for p, g in zip(trainer.params, expected):
            assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-7)
        assert any(float(g.abs().max()) > 0 for g in expected)


def test_a_seed_trains_the_same_bits_on_one_core_as_on_several(sample_dir, monkeypatch):
    """With dropout: its draws follow the pieces' order whichever thread runs them."""
    monkeypatch.setattr("forecaster.training.usable_cores", lambda: 1)
    alone = _train(sample_dir, **{"model.dropout": 0.3})
    monkeypatch.setattr("forecaster.training.usable_cores", lambda: 2)
    shared = _train(sample_dir, **{"model.dropout": 0.3})
    assert alone[0] == shared[0]
    assert _same_bits(alone[1], shared[1])


def test_a_later_piece_that_gets_ahead_waits_for_its_turn_to_draw(sample_dir, monkeypatch):
    """The first piece is held back while its batch is gathered: the second one runs its encoder
    meanwhile but must make its dropout draws after the first's, as on one core."""
    monkeypatch.setattr("forecaster.training.usable_cores", lambda: 1)
    alone = _train(sample_dir, **{"model.dropout": 0.3, "model.num_layers": 2})
    monkeypatch.setattr("forecaster.training.usable_cores", lambda: 2)
    cfg, ws, trainer = _trainer(sample_dir, **{"model.dropout": 0.3, "model.num_layers": 2})
    loss, delayed = trainer._loss, []

    def slow_first_piece(items, q):
        if first_piece() and len(delayed) < 40:
            delayed.append(threading.current_thread().name)
            time.sleep(0.01)  # the other piece gets ahead
        return loss(items, q)

    trainer._loss = slow_first_piece
    records = list(trainer.epochs(ws.ends("train"), ws.ends("val")))
    assert len(delayed) == 40 and all(name.startswith("training") for name in delayed)  # in the pool's threads
    assert [(r.train_loss, r.val_loss, r.grad_norm) for r in records] == alone[0]
    assert _same_bits(trainer.model.state_dict(), alone[1])


def test_a_failing_piece_raises_and_leaves_no_piece_waiting(sample_dir, monkeypatch):
    monkeypatch.setattr("forecaster.training.usable_cores", lambda: 2)
    cfg, ws, trainer = _trainer(sample_dir)

    def failing(items, q):
        if first_piece():
            raise MemoryError("no room for this batch")
        return loss(items, q)

    loss, trainer._loss = trainer._loss, failing
    done = []

    def run():
        try:
            list(trainer.epochs(ws.ends("train"), ws.ends("val")))
        except MemoryError as e:
            done.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive() and done and "no room" in str(done[0])


def test_window_runs_keep_their_results_with_pieces(sample_dir):
    """The same seed twice: the same losses and weights (timing between the threads aside)."""
    a = _train(sample_dir)
    b = _train(sample_dir)
    assert a[0] == b[0] and _same_bits(a[1], b[1])
    assert np.isfinite([v for rec in a[0] for v in rec]).all()


@pytest.mark.parametrize("cores", [1, 2])
def test_the_callers_grad_mode_and_autocast_do_not_reach_the_halves(sample_dir, monkeypatch, cores):
    """Both are per thread: the pool's threads never see them, so without this the caller's
    thread (one core) would train differently from the pool (two), or not at all."""
    monkeypatch.setattr("forecaster.training.usable_cores", lambda: 2)
    expected = _train(sample_dir)
    monkeypatch.setattr("forecaster.training.usable_cores", lambda: cores)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = _train(sample_dir)
    assert got[0] == expected[0] and _same_bits(got[1], expected[1])


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("train_mode, halves", [("forking", True), ("window", False), ("window", True)])
def test_training_under_a_callers_no_grad_or_inference_mode_trains_as_without(sample_dir, mode, train_mode, halves):
    """A Trainer made as usual, its epochs run under the caller's no_grad or inference_mode:
    forking steps, whole window batches and halves train as they would without it."""
    over = {"train.mode": train_mode, "train.chunk": 16, "train.halves": halves}
    _, ws, trainer = _trainer(sample_dir, **over)
    expected = [rec.as_row() for rec in trainer.epochs(ws.ends("train"), ws.ends("val"))]
    _, ws, trainer = _trainer(sample_dir, **over)
    with getattr(torch, mode)():
        records = [rec.as_row() for rec in trainer.epochs(ws.ends("train"), ws.ends("val"))]
        assert torch.is_inference_mode_enabled() == (mode == "inference_mode")  # the caller's, kept
    assert len(records) == 2 and all(r["grad_norm"] > 0 for r in records)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in records] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in expected
    ]


def test_the_halves_threads_end_with_the_training(sample_dir, monkeypatch):
    """Run to the end, or left after one epoch (the generator dropped): no thread of the halves
    stays behind."""
    import gc

    monkeypatch.setattr("forecaster.training.usable_cores", lambda: 2)
    cfg, ws, trainer = _trainer(sample_dir)
    list(trainer.epochs(ws.ends("train"), ws.ends("val")))
    cfg, ws, trainer = _trainer(sample_dir)
    epochs = trainer.epochs(ws.ends("train"), ws.ends("val"))
    next(epochs)
    assert any(t.name.startswith("training") for t in threading.enumerate())  # the pool is there
    epochs.close()
    del epochs
    gc.collect()
    deadline = time.monotonic() + 10
    while any(t.name.startswith("training") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("training")]
