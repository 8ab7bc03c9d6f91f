#!/usr/bin/env python3
"""One training-loop measurement in this process, printed as one JSON line.

Started by the other benchmark scripts, one fresh process per measurement, so that every loop
starts from the same clean environment. Two loops:

- ``project``: forecaster's own training (:class:`forecaster.training.Trainer`) with the
  thread setting ``forecaster train`` applies (``train.threads``, by default one thread), in
  ``--mode window`` or ``forking``;
- ``hand``: a plain PyTorch loop with torch's defaults: pre-built window tensors, the same
  recurrent cell over the 8 features, a linear head, AdamW (the project's weight decay), the
  pinball loss; nothing set.

Both train on the same forecast origins: every training origin of the first synthetic tickers
of ``forecaster.synthetic.generate_universe``, at least ``--targets`` of them. One pass over
them warms the loop up; then passes are timed until ``--seconds`` have passed (at least
``--passes``). Reported: training targets (forecast origins) per second over the timed passes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", choices=["project", "hand"], required=True)
    ap.add_argument("--mode", choices=["window", "forking"], default="window", help="project loop's train.mode")
    ap.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256, help="forecast origins per optimisation step")
    ap.add_argument("--lookback", type=int, default=60)
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=None, help="forking: origins per stretch (default: the config's)")
    ap.add_argument("--threads", type=int, default=None, help="project loop: train.threads (default: the config's)")
    ap.add_argument(
        "--burn-in-ahead",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="forking: train.burn_in_ahead (default: the config's)",
    )
    ap.add_argument("--targets", type=int, default=3000, help="forecast origins per pass (at least)")
    ap.add_argument("--seconds", type=float, default=8.0, help="time the passes for at least this long")
    ap.add_argument("--passes", type=int, default=2, help="timed passes (at least)")
    ap.add_argument(
        "--torch-defaults",
        action="store_true",
        help="project loop: skip the project's thread setting (torch's own defaults)",
    )
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def origins(args):
    """A WindowSet and the training origins of its first tickers (whole runs, so that forking
    and windows see exactly the same targets)."""
    import numpy as np

    from forecaster.synthetic import generate_universe
    from forecaster.windows import build_windows, make_splits

    bars = generate_universe(max(2, args.targets // 1000 + 2), years=10, seed=args.seed)
    ws = build_windows(bars, args.lookback, args.horizon, make_splits(bars, 250, 250))
    ends = ws.ends("train")
    keep = []
    for k in range(len(ws.tickers)):
        lo, hi = ws.offsets[k], ws.offsets[k + 1]
        keep.append(ends[(ends >= lo) & (ends < hi)])
        if sum(len(e) for e in keep) >= args.targets:
            break
    return ws, np.concatenate(keep)


def config(args):
    from forecaster.config import load_config

    over = {
        "model.cell": args.cell,
        "model.hidden_size": args.hidden,
        "model.num_layers": args.layers,
        "window.lookback": args.lookback,
        "window.horizon": args.horizon,
        "train.batch_size": args.batch,
        "train.mode": args.mode,
        "train.chunk": args.chunk,
        "train.threads": args.threads,
        "train.burn_in_ahead": args.burn_in_ahead,
        "train.device": "cpu",
        "train.seed": args.seed,
    }
    return load_config(None, over)


def timed(run_pass, n_targets: int, args) -> dict:
    run_pass()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < args.passes or time.perf_counter() - start < args.seconds:
        t = time.perf_counter()
        run_pass()
        times.append(time.perf_counter() - t)
    return {"targets_per_s": n_targets * len(times) / sum(times), "passes": len(times), "targets": n_targets}


def project(args) -> dict:
    import numpy as np
    import torch

    from forecaster.training import Trainer, new_model, seed_everything, set_threads

    cfg = config(args)
    cfg.train.epochs, cfg.train.patience = 10_000, 10_000
    if args.torch_defaults:  # torch's own team of threads, as with --threads 0: batches computed whole
        cfg.train.threads = 0
    else:
        set_threads(cfg.train.threads)  # what `forecaster train` does after
    ws, ends = origins(args)
    seed_everything(cfg.train.seed)
    trainer = Trainer(new_model(cfg, ws), ws, cfg, torch.device("cpu"))
    it = trainer.epochs(ends, np.empty(0, np.int64))  # no validation: training alone is timed
    out = timed(lambda: next(it), len(ends), args)
    return {**out, "threads": torch.get_num_threads()}


def hand(args) -> dict:
    import torch
    from torch import nn

    ws, ends = origins(args)
    torch.manual_seed(args.seed)
    x_np, _ = ws.inputs(ends)
    x, y = torch.from_numpy(x_np), torch.from_numpy(ws.targets(ends))
    q = torch.tensor([0.1, 0.5, 0.9])
    cell = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[args.cell]
    steps = args.horizon

    class Hand(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cell(
                x.shape[-1], args.hidden, args.layers, batch_first=True, dropout=0.1 if args.layers > 1 else 0
            )
            self.head = nn.Linear(args.hidden, steps * 3)

        def forward(self, xb):
            out, _ = self.rnn(xb)
            return self.head(out[:, -1]).view(len(xb), steps, 3)

    model = Hand()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)

    def run_pass():
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), args.batch):
            idx = order[i : i + args.batch]
            diff = y[idx].unsqueeze(-1) - model(x[idx])
            loss = torch.maximum(q * diff, (q - 1) * diff).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return {**timed(run_pass, len(ends), args), "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    import logging

    args = parse_args(argv)
    logging.getLogger("forecaster").setLevel(logging.ERROR)  # no "skipping SYN..." warnings
    t0 = time.perf_counter()
    out = project(args) if args.loop == "project" else hand(args)
    out.update(
        loop=args.loop,
        mode=args.mode if args.loop == "project" else "window",
        pid=os.getpid(),
        wall_s=round(time.perf_counter() - t0, 2),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
    )
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
