#!/usr/bin/env python3
"""Benchmarks of forecaster: training throughput, CLI latency and memory, a 1,000-ticker universe.

Run ``python benchmarks/run.py --help`` (or ``make bench``). Prints one table and writes
``benchmarks/results/bench.json``. What each section measures is described in
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("reference", "defaults", "sweep", "cli", "universe")

# the fixed reference configuration of section 1
REFERENCE = {"lookback": 60, "horizon": 5, "hidden_size": 64, "num_layers": 2, "batch_size": 64}
CELL_NAMES = ("rnn", "lstm", "gru")

TARGET_RATIO = 0.9  # project samples/s over hand-written loop samples/s
TARGET_HELP_S = 0.3
TARGET_PREDICT_S = 3.0
TARGET_UNIVERSE_RSS_MB = 2048.0
TARGET_UNIVERSE_PREDICT_S = 10.0


# ---- the result table ---------------------------------------------------------------------------
@dataclass
class Row:
    section: str
    name: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    def cells(self) -> list[str]:
        ok = "" if self.met is None else ("yes" if self.met else "NO")
        return [self.section, self.name, _fmt(self.value), self.unit, self.target, ok, self.note]


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def add(self, *args, **kwargs) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        print(f"  {row.section:<9} {row.name:<44} {_fmt(row.value):>10} {row.unit:<10} {row.note}", flush=True)
        return row


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def render_table(rows: list[Row]) -> str:
    head = ["section", "benchmark", "value", "unit", "target", "met", "note"]
    body = [r.cells() for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    align = ["<", "<", ">", "<", "<", "<", "<"]

    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    prev = None
    for r, cells in zip(rows, body):
        if prev is not None and r.section != prev:
            out.append("")
        out.append(line(cells))
        prev = r.section
    return "\n".join(out)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ---- training throughput --------------------------------------------------------------------------
class ProjectLoop:
    """forecaster.training.fit over one block of windows per epoch; the generator is resumed
    once per measured block, so the project's own loop (batching, model, loss, clipping, AdamW,
    bookkeeping) is what is timed. Validation is given no windows: only training is timed."""

    def __init__(self, bench: Bench, cfg, block_ends, n_epochs: int):
        import torch

        from forecaster.training import fit, new_model, seed_everything

        seed_everything(bench.seed)
        cpu = torch.device("cpu")
        cfg = cfg.model_copy(deep=True)
        cfg.train.epochs = n_epochs
        cfg.train.patience = n_epochs + 1  # an empty validation set must not stop it early
        self.n = len(block_ends)
        self.model = new_model(cfg, bench.ws).to(cpu)
        self.gen = fit(self.model, bench.ws, cfg, cpu, block_ends, bench.empty)

    def run(self) -> float:
        start = time.perf_counter()
        rec = next(self.gen)
        seconds = time.perf_counter() - start
        assert rec.samples == self.n
        return seconds

    def close(self) -> None:
        self.gen.close()


class HandLoop:
    """A minimal PyTorch loop over pre-built tensors: the same recurrent cell (input: the 6
    features), a linear head, the same batch size, AdamW and the pinball loss. No embedding,
    no quantile ordering, no dropout before the head, no clipping, no data pipeline.

    With ``project_model`` the network is the project's own QuantileRNN (ticker embedding,
    dropout, ordered quantiles) and only the loop is minimal: the gap to the project loop is
    then the loop's overhead alone (gathering windows, finiteness check, clipping, bookkeeping).
    """

    def __init__(self, bench: Bench, cfg, block_ends, project_model: bool = False):
        import torch
        from torch import nn

        from forecaster.training import new_model

        torch.manual_seed(bench.seed)
        m, w, t = cfg.model, cfg.window, cfg.train
        x_np, tid_np = bench.ws.inputs(block_ends)
        self.x = torch.from_numpy(x_np)  # (N, L, F)
        self.tid = torch.from_numpy(tid_np)  # (N,)
        self.y = torch.from_numpy(bench.ws.targets(block_ends))  # (N, H)
        self.q = torch.tensor(m.quantiles)
        cell = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[m.cell]
        steps, n_q = w.horizon, len(m.quantiles)

        class Hand(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = cell(
                    x_np.shape[-1],
                    m.hidden_size,
                    m.num_layers,
                    batch_first=True,
                    dropout=m.dropout if m.num_layers > 1 else 0.0,
                )
                self.head = nn.Linear(m.hidden_size, steps * n_q)

            def forward(self, x, tid):
                out, _ = self.rnn(x)
                return self.head(out[:, -1]).view(x.shape[0], steps, n_q)

        self.model = new_model(cfg, bench.ws) if project_model else Hand()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.bs = t.batch_size

    def run(self) -> float:
        import torch

        model, opt, q, bs = self.model, self.opt, self.q, self.bs
        start = time.perf_counter()
        model.train()
        for i in range(0, len(self.x), bs):
            xb, tb, yb = self.x[i : i + bs], self.tid[i : i + bs], self.y[i : i + bs]
            diff = yb.unsqueeze(-1) - model(xb, tb)
            loss = torch.maximum(q * diff, (q - 1) * diff).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    def close(self) -> None:
        pass


class Bench:
    """In-process training benchmarks over one WindowSet built from synthetic bars."""

    def __init__(self, n_windows: int, block: int, seed: int):
        import numpy as np

        from forecaster.synthetic import generate_universe
        from forecaster.windows import build_windows, make_splits

        self.n_windows, self.block, self.seed = n_windows, block, seed
        lookback, horizon = REFERENCE["lookback"], REFERENCE["horizon"]
        # 10 years of ~2,500 sessions give about 1,400 training windows per ticker on average
        n_tickers = max(4, int(np.ceil(2 * n_windows / 1200)))
        bars = generate_universe(n_tickers, years=10, seed=seed)
        splits = make_splits(bars, 250, 250)
        self.ws = build_windows(bars, lookback, horizon, splits)
        ends = np.random.default_rng(seed).permutation(self.ws.ends("train"))
        if len(ends) < 2 * n_windows:  # not expected; windows then repeat
            ends = np.resize(ends, 2 * n_windows)
        self.ends = ends
        self.empty = np.empty(0, dtype=np.int64)

    def config(self, cell: str, hidden: int, layers: int, batch: int, threads: int):
        from forecaster.config import load_config

        return load_config(
            None,
            {
                "model.cell": cell,
                "model.hidden_size": hidden,
                "model.num_layers": layers,
                "model.strategy": "direct",
                "model.quantiles": [0.1, 0.5, 0.9],
                "window.lookback": REFERENCE["lookback"],
                "window.horizon": REFERENCE["horizon"],
                "train.batch_size": batch,
                "train.epochs": 1,
                "train.device": "cpu",
                "train.threads": threads,
                "train.seed": self.seed,
            },
        )

    def _block_size(self, batch: int) -> int:
        return min(self.n_windows, max(self.block, 4 * batch))

    def compare(self, cfg, same_model: bool = False) -> dict:
        """Project and hand loop(s), each warmed up on one block, then alternating block by
        block until each has run ``n_windows`` windows, so all see the same background load.
        samples/s = block size / median block time; ratio = median of the per-block ratios."""
        import torch

        torch.set_num_threads(cfg.train.threads)
        size = self._block_size(cfg.train.batch_size)
        n_blocks = max(3, round(self.n_windows / size))
        block = self.ends[:size]
        loops = {"project": ProjectLoop(self, cfg, block, n_blocks + 1), "hand": HandLoop(self, cfg, block)}
        if same_model:
            loops["hand_same_model"] = HandLoop(self, cfg, block, project_model=True)
        times = {k: [] for k in loops}
        try:
            for lp in loops.values():
                lp.run()  # warm-up
            for _ in range(n_blocks):
                for k, lp in loops.items():
                    times[k].append(lp.run())
        finally:
            for lp in loops.values():
                lp.close()
        med = statistics.median
        out = {k: size / med(v) for k, v in times.items()}
        ratios = [h / p for p, h in zip(times["project"], times["hand"])]
        out.update(
            {
                "ratio": med(ratios),
                "block_ratio_min": min(ratios),
                "block_ratio_max": max(ratios),
                "windows": size * n_blocks,
                "block": size,
                "blocks": n_blocks,
                "block_seconds": times,
            }
        )
        if same_model:
            out["ratio_same_model"] = med([h / p for p, h in zip(times["project"], times["hand_same_model"])])
        return out

    def sweep(self, cfgs: dict) -> dict:
        """Project-loop samples/s of several configurations, run round-robin one block each
        (after one warm-up block each) so that load changes hit all of them alike."""
        import torch

        rounds = max(3, round(self.n_windows / (2 * self.block)))
        loops, sizes = {}, {}
        for key, cfg in cfgs.items():
            sizes[key] = self._block_size(cfg.train.batch_size)
            loops[key] = ProjectLoop(self, cfg, self.ends[: sizes[key]], rounds + 1)
        times = {k: [] for k in loops}
        try:
            for r in range(rounds + 1):
                for key, lp in loops.items():
                    torch.set_num_threads(cfgs[key].train.threads)
                    t = lp.run()
                    if r:  # round 0 is the warm-up
                        times[key].append(t)
        finally:
            for lp in loops.values():
                lp.close()
        return {k: sizes[k] / statistics.median(v) for k, v in times.items()}


def _ratio_row(res: Results, section: str, label: str, r: dict) -> None:
    res.add(section, f"{label} project loop", r["project"], "samples/s")
    res.add(section, f"{label} hand loop", r["hand"], "samples/s")
    res.add(
        section,
        f"{label.split()[0]} ratio project/hand",
        r["ratio"],
        "",
        f">= {TARGET_RATIO}",
        r["ratio"] >= TARGET_RATIO,
        f"{(r['ratio'] - 1) * 100:+.0f}%; median of {r['blocks']} blocks of {r['block']:,} "
        f"(range {r['block_ratio_min']:.2f}..{r['block_ratio_max']:.2f})",
    )


def section_reference(res: Results, bench: Bench, threads: int, cells) -> None:
    r = REFERENCE
    label = f"L{r['lookback']} h{r['hidden_size']}x{r['num_layers']} bs{r['batch_size']}"
    res.details["reference"] = {}
    for cell in cells:
        cfg = bench.config(cell, r["hidden_size"], r["num_layers"], r["batch_size"], threads)
        out = bench.compare(cfg)
        res.details["reference"][cell] = out
        _ratio_row(res, "reference", f"{cell} {label}", out)


def _defaults():
    from forecaster.config import Config

    c = Config()
    return c.model.cell, c.model.hidden_size, c.model.num_layers, c.train.batch_size


def section_defaults(res: Results, bench: Bench, threads: int) -> None:
    cell, hidden, layers, batch = _defaults()
    cfg = bench.config(cell, hidden, layers, batch, threads)
    out = bench.compare(cfg, same_model=True)
    res.details["defaults"] = {"cell": cell, "hidden": hidden, "layers": layers, "batch": batch, **out}
    _ratio_row(res, "defaults", f"{cell} L{REFERENCE['lookback']} h{hidden}x{layers} bs{batch}", out)
    res.add(
        "defaults",
        f"{cell} hand loop, project's QuantileRNN",
        out["hand_same_model"],
        "samples/s",
        note="same network as the project: isolates the loop",
    )
    r = out["ratio_same_model"]
    res.add(
        "defaults",
        f"{cell} ratio project/hand, same network",
        r,
        "",
        note=f"{(r - 1) * 100:+.0f}%: the loop's own overhead (same network on both sides)",
    )


def section_sweep(res: Results, bench: Bench, batches, threads_list, policy: str, policy_row: bool) -> None:
    cell, hidden, layers, default_batch = _defaults()
    grid = bench.sweep({(bs, th): bench.config(cell, hidden, layers, bs, th) for th in threads_list for bs in batches})
    best = max(grid, key=grid.get)
    res.details["sweep"] = {
        "cell": cell,
        "hidden": hidden,
        "layers": layers,
        "windows": bench.n_windows,
        "omp_wait_policy": policy,
        "samples_per_s": {f"batch{bs}_threads{th}": v for (bs, th), v in grid.items()},
        "best": {"batch": best[0], "threads": best[1]},
    }
    for (bs, th), v in grid.items():
        note = []
        if bs == default_batch:
            note.append("default batch")
        if (bs, th) == best:
            note.append("fastest")
        res.add("sweep", f"{cell} h{hidden}x{layers} batch {bs:>4} threads {th}", v, "samples/s", note=", ".join(note))
    if policy_row and 2 in threads_list:
        # the default configuration on 2 threads with the other wait policy, in a child process
        # (the policy is read when torch loads)
        other = "passive" if policy == "unset" else "unset"
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "child.json"
            n = min(bench.n_windows, 2000)
            p = measure(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--only",
                    "sweep",
                    "--sweep-batches",
                    str(default_batch),
                    "--sweep-threads",
                    "2",
                    "--windows",
                    str(n),
                    "--block",
                    str(bench.block),
                    "--omp-wait-policy",
                    other,
                    "--no-policy-row",
                    "--seed",
                    str(bench.seed),
                    "--json",
                    str(out),
                ],
                timeout=900,
            )
            if p.rc != 0 or not out.is_file():
                raise RuntimeError(f"child sweep failed: {(p.err or p.out)[-300:]}")
            child = json.loads(out.read_text())["details"]["sweep"]["samples_per_s"]
            v = child[f"batch{default_batch}_threads2"]
        res.details["sweep"][f"omp_wait_policy_{other}_threads2"] = v
        res.add(
            "sweep",
            f"{cell} h{hidden}x{layers} batch {default_batch:>4} threads 2, OMP_WAIT_POLICY {other}",
            v,
            "samples/s",
            note=f"{v / grid[(default_batch, 2)]:.2f}x of {policy}; {n:,} windows",
        )


# ---- subprocess timings ----------------------------------------------------------------------------
@dataclass
class Proc:
    wall: float
    max_rss_mb: float
    rc: int
    out: str
    err: str


# Started first, the launcher starts the command: a child's peak RSS (ru_maxrss) also counts the
# memory of the process it was forked from, and this process holds torch, so the command must not
# be forked from it. The launcher (python -S, a few MB) reports the wall time and the peak RSS of
# the command and every descendant that was waited for (RUSAGE_CHILDREN).
_LAUNCHER = """
import resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - t
with open(sys.argv[1], "w") as f:
    f.write(f"{wall} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
sys.exit(rc)
"""


def measure(cmd: list[str], *, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> Proc:
    """Run ``cmd``: its wall time and the peak RSS of it and its waited-for children."""
    full_env = dict(os.environ, NO_COLOR="1", COLUMNS="160", **(env or {}))
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats"
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            p = subprocess.Popen(
                [sys.executable, "-S", "-c", _LAUNCHER, str(stats), *cmd],
                cwd=cwd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=full_env,
                start_new_session=True,
            )
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:  # stop the command and whatever it started
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                rc = 124
        wall, rss_kb = (float(x) for x in stats.read_text().split()) if stats.is_file() else (timeout, 0)
        return Proc(
            wall, rss_kb / 1024.0, rc, out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
        )


def _checked(p: Proc, what: str) -> Proc:
    if p.rc != 0:
        tail = "\n".join((p.err or p.out).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed with exit code {p.rc}:\n{tail}")
    return p


def forecaster_cmd() -> list[str]:
    script = Path(sys.executable).with_name("forecaster")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "forecaster"]


def repeat(cmd: list[str], n: int, what: str, **kw) -> tuple[float, float, list[float]]:
    """(median wall, max peak RSS, all walls) of ``n`` runs."""
    runs = [_checked(measure(cmd, **kw), what) for _ in range(n)]
    walls = [r.wall for r in runs]
    return statistics.median(walls), max(r.max_rss_mb for r in runs), walls


def section_cli(res: Results, work: Path, repeats: int, make_demo: bool, demo_run: Path | None) -> None:
    fc = forecaster_cmd()
    det = res.details.setdefault("cli", {})
    wall, rss, walls = repeat(fc + ["--help"], repeats, "forecaster --help", cwd=ROOT)
    det["help"] = {"median_s": wall, "runs_s": walls, "max_rss_mb": rss}
    res.add(
        "cli",
        f"forecaster --help (median of {repeats})",
        wall,
        "s",
        f"< {TARGET_HELP_S}",
        wall < TARGET_HELP_S,
        f"peak RSS {rss:.0f} MB",
    )

    # the floor under every command that loads a model: starting python and importing torch
    n = min(repeats, 3)
    wall, rss, walls = repeat([sys.executable, "-c", "import torch"], n, "import torch", cwd=ROOT)
    det["import_torch"] = {"median_s": wall, "runs_s": walls, "max_rss_mb": rss}
    res.add(
        "cli", f"python -c 'import torch' (median of {n})", wall, "s", note=f"floor of predict; peak RSS {rss:.0f} MB"
    )

    if demo_run is None:
        demo_run = work / "demo-run"
        p = _checked(
            measure(
                fc
                + [
                    "train",
                    "--config",
                    str(ROOT / "configs/demo.toml"),
                    "--epochs",
                    "2",
                    "--run-dir",
                    str(demo_run),
                    "--quiet",
                ],
                cwd=ROOT,
            ),
            "training the demo run",
        )
        det["demo_train_2_epochs"] = {"wall_s": p.wall, "max_rss_mb": p.max_rss_mb}
        res.add("cli", "train demo config, 2 epochs (setup)", p.wall, "s", note=f"peak RSS {p.max_rss_mb:.0f} MB")
    out = work / "demo-forecasts"
    wall, rss, walls = repeat(
        fc + ["predict", "--run", str(demo_run), "--offline", "--out", str(out)],
        repeats,
        "forecaster predict",
        cwd=ROOT,
    )
    det["predict"] = {"run": str(demo_run), "median_s": wall, "runs_s": walls, "max_rss_mb": rss}
    res.add(
        "cli",
        f"predict --run <demo> --offline (median of {repeats})",
        wall,
        "s",
        f"< {TARGET_PREDICT_S:g}",
        wall < TARGET_PREDICT_S,
        f"peak RSS {rss:.0f} MB",
    )

    if make_demo:
        p = _checked(run_make_demo(work), "make demo")
        det["make_demo"] = {"wall_s": p.wall, "max_rss_mb": p.max_rss_mb}
        res.add("cli", "make demo (once)", p.wall, "s", note=f"peak RSS {p.max_rss_mb:.0f} MB")


def run_make_demo(work: Path) -> Proc:
    """``make demo`` in a copy of the files it reads, so the tree's runs/ and forecasts/ are left
    alone; the venv is the tree's own and is never reinstalled (``-o`` its stamp)."""
    tree = work / "demo-tree"
    (tree / "data").mkdir(parents=True, exist_ok=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "configs", tree / "configs", dirs_exist_ok=True)
    shutil.copytree(ROOT / "data" / "sample", tree / "data" / "sample", dirs_exist_ok=True)
    venv = Path(sys.prefix)
    stamp = venv / ".installed"
    return measure(["make", "--no-print-directory", "-o", str(stamp), "demo", f"VENV={venv}"], cwd=tree, timeout=900)


# ---- the 1,000-ticker universe -------------------------------------------------------------------------
_UNIVERSE: dict = {}  # the frames being written, shared with forked writer processes


def _write_some(args: tuple[Path, str, list[str]]) -> None:
    import numpy as np
    import pandas as pd

    from forecaster.store import save_store

    folder, kind, names = args
    for name in names:
        df = _UNIVERSE[name]
        if kind == "store":  # the project's own store writer: <folder>/store/<TICKER>.parquet
            save_store(folder, name, df)
            continue
        # byte-for-byte the text of forecaster.synthetic.write_csv, written by pandas (faster)
        frame = pd.DataFrame(
            {
                "Date": df.index.strftime("%Y-%m-%d"),
                **{c.title(): np.round(df[c].to_numpy(np.float64), 4) + 0.0 for c in ("open", "high", "low", "close")},
                "Volume": np.rint(df["volume"].to_numpy(np.float64)).astype(np.int64),
            }
        )
        frame.to_csv(folder / f"{name}.csv", index=False, float_format="%.4f", lineterminator="\n")


def write_bars(bars: dict, folder: Path, kind: str) -> float:
    """Write ``bars`` as <TICKER>.csv files or as the parquet store, one process per core;
    returns the seconds taken."""
    import multiprocessing

    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    names = list(bars)
    workers = max(1, min(os.cpu_count() or 1, 8, len(names)))
    _UNIVERSE.update(bars)
    try:
        chunks = [(folder, kind, names[i::workers]) for i in range(workers)]
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                pool.map(_write_some, chunks)
        else:
            for c in chunks:
                _write_some(c)
    finally:
        _UNIVERSE.clear()
    return time.perf_counter() - start


def write_universe(folder: Path, n: int, years: float, seed: int, kind: str = "csv") -> dict:
    """``generate_universe`` written as <TICKER>.csv files (the layout of forecaster.synthetic)
    or as the store under ``folder``."""
    from forecaster.synthetic import generate_universe

    t0 = time.perf_counter()
    bars = generate_universe(n, years=years, seed=seed)
    generate_s = time.perf_counter() - t0
    write_s = write_bars(bars, folder, kind)
    return {
        "tickers": list(bars),
        "rows": sum(len(df) for df in bars.values()),
        "generate_s": generate_s,
        "write_s": write_s,
    }


def read_cost(work: Path, n: int, seed: int) -> dict:
    """Milliseconds per ticker of forecaster.store.load_bars from CSV files and from the store
    (the first ``n`` tickers of the universe, in this process)."""
    import logging

    from forecaster.store import load_bars
    from forecaster.synthetic import generate_universe

    bars = generate_universe(n, years=10, seed=seed)
    folder = work / "read-cost"
    write_bars(bars, folder, "csv")
    write_bars(bars, folder, "store")
    names = list(bars)
    quiet = logging.getLogger("forecaster")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        out = {}
        for source, label in (("csv", "csv"), ("yahoo", "store")):
            start = time.perf_counter()
            load_bars(source, folder, names)
            out[label] = (time.perf_counter() - start) / n * 1000
    finally:
        quiet.setLevel(level)
        shutil.rmtree(folder, ignore_errors=True)
    return out


def read_history(run_dir: Path) -> list[dict]:
    import csv

    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def section_universe(
    res: Results, work: Path, n: int, years: float, seed: int, data_dir: Path | None, kind: str, extra: list[str]
) -> None:
    fc = forecaster_cmd()
    det = res.details.setdefault("universe", {"tickers": n, "years": years, "seed": seed, "source": kind})
    if data_dir is None:
        data_dir = work / "universe"
        info = write_universe(data_dir, n, years, seed, kind)
        det.update({k: info[k] for k in ("rows", "generate_s", "write_s")})
        tickers = info["tickers"]
        what = "CSV files" if kind == "csv" else "the parquet store"
        res.add(
            "universe",
            f"generate {n} tickers ({info['rows']:,} bars), write {what}",
            info["generate_s"] + info["write_s"],
            "s",
            note="setup",
        )
    else:
        pattern = "*.csv" if kind == "csv" else "store/*.parquet"
        tickers = sorted(p.stem for p in data_dir.glob(pattern))[:n]
    source = ["--source", "csv" if kind == "csv" else "yahoo", "--data-dir", str(data_dir)]
    run_dir = work / "universe-run"
    cmd = fc + [
        "train",
        *source,
        "--tickers",
        ",".join(tickers),
        "--epochs",
        "1",
        "--run-dir",
        str(run_dir),
        "--quiet",
        *extra,
    ]
    p = _checked(measure(cmd, cwd=work, timeout=3600), f"train on {n} tickers")
    meta = json.loads((run_dir / "run.json").read_text())
    hist = read_history(run_dir)[0]
    samples, secs = int(hist["samples"]), float(hist["seconds"])
    det["train"] = {
        "wall_s": p.wall,
        "max_rss_mb": p.max_rss_mb,
        "windows": meta["windows"],
        "trained_tickers": len(meta["tickers"]),
        "skipped": len(meta.get("skipped", {})),
        "epoch_samples": samples,
        "epoch_seconds": secs,
        "device": meta.get("device"),
    }
    res.add(
        "universe",
        f"train 1 epoch, {len(meta['tickers'])} tickers, --source {source[1]} (wall)",
        p.wall,
        "s",
        note=f"{len(meta.get('skipped', {}))} tickers skipped: too short",
    )
    res.add(
        "universe",
        f"train epoch: {samples:,} windows",
        samples / secs,
        "samples/s",
        note=f"{secs:.0f} s in the epoch incl. validation",
    )
    res.add(
        "universe",
        "train peak RSS",
        p.max_rss_mb,
        "MB",
        f"< {TARGET_UNIVERSE_RSS_MB:.0f}",
        p.max_rss_mb < TARGET_UNIVERSE_RSS_MB,
    )

    p = _checked(
        measure(fc + ["evaluate", "--run", str(run_dir), "--quiet"], cwd=work, timeout=3600), f"evaluate on {n} tickers"
    )
    det["evaluate"] = {"wall_s": p.wall, "max_rss_mb": p.max_rss_mb}
    res.add("universe", "evaluate (walk-forward test split)", p.wall, "s", note=f"peak RSS {p.max_rss_mb:.0f} MB")

    out = work / "universe-forecasts"
    p = _checked(
        measure(
            fc + ["predict", "--run", str(run_dir), "--offline", "--out", str(out), "--quiet"], cwd=work, timeout=3600
        ),
        f"predict on {n} tickers",
    )
    det["predict"] = {"wall_s": p.wall, "max_rss_mb": p.max_rss_mb}
    res.add(
        "universe",
        f"predict all {len(meta['tickers'])} tickers --offline",
        p.wall,
        "s",
        f"< {TARGET_UNIVERSE_PREDICT_S:g}",
        p.wall < TARGET_UNIVERSE_PREDICT_S,
        f"peak RSS {p.max_rss_mb:.0f} MB",
    )

    # what reading the bars costs per ticker, from each source: every command above pays it
    k = min(n, 100)
    cost = read_cost(work, k, seed)
    det["read_ms_per_ticker"] = cost
    for label in ("csv", "store"):
        res.add(
            "universe",
            f"load_bars from {label}, per ticker ({k} tickers)",
            cost[label],
            "ms",
            note=f"x {n:,} tickers = {cost[label] * n / 1000:.0f} s per command",
        )


# ---- main ------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="forecaster benchmarks: training samples/s against a hand-written PyTorch loop, "
        "a batch-size/thread sweep of the default model, CLI wall time and peak memory, "
        "and train/evaluate/predict on a synthetic universe of 1,000 tickers. Prints one "
        "table and writes a JSON file. See benchmarks/README.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections to run, from: {', '.join(SECTIONS)}"
    )
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out")
    ap.add_argument(
        "--quick", action="store_true", help="a fast smoke run: 2,000 windows, 3 CLI repeats, 100 tickers, no make demo"
    )
    ap.add_argument("--cells", default=",".join(CELL_NAMES), help="cells of the reference section")
    ap.add_argument(
        "--windows",
        type=int,
        default=None,
        help="measured training windows per loop and configuration (default 6000; 2000 with --quick)",
    )
    ap.add_argument(
        "--block",
        type=int,
        default=1000,
        help="windows per interleaved block (at least 4 batches); one extra block warms each loop up",
    )
    ap.add_argument(
        "--threads", type=int, default=2, help="torch threads of both loops in the reference and defaults sections"
    )
    ap.add_argument("--sweep-batches", default="64,128,256,512,1024")
    ap.add_argument("--sweep-threads", default="1,2")
    ap.add_argument(
        "--omp-wait-policy",
        choices=["auto", "passive", "active", "unset"],
        default=os.environ.get("OMP_WAIT_POLICY", "passive").lower(),
        help="OMP_WAIT_POLICY for this process and every command it starts (read when "
        "torch loads). unset is libgomp's default (idle threads spin): fastest on an "
        "idle machine, many times slower on a busy one; passive never spins, so a "
        "run cannot collapse when other jobs start. auto: unset if at least one core "
        "is idle at the start (1-minute load average below the core count minus "
        "one), else passive. The sweep adds one row with the other choice.",
    )
    ap.add_argument("--no-policy-row", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cli-repeats", type=int, default=None, help="runs per CLI timing (median; default 5)")
    ap.add_argument("--skip-make-demo", action="store_true", help="do not time `make demo`")
    ap.add_argument(
        "--demo-run",
        type=Path,
        default=None,
        help="time predict on this existing run instead of training a 2-epoch demo run",
    )
    ap.add_argument("--tickers", type=int, default=None, help="universe size (default 1000; 100 with --quick)")
    ap.add_argument("--years", type=float, default=10.0, help="universe history length")
    ap.add_argument(
        "--universe-source",
        choices=["csv", "store"],
        default="csv",
        help="how the universe is written and read: <TICKER>.csv files (--source csv) "
        "or the parquet store (--source yahoo, predict --offline: no network)",
    )
    ap.add_argument(
        "--universe-dir",
        type=Path,
        default=None,
        help="reuse a data folder (CSV files, or a store under it) instead of generating the universe",
    )
    ap.add_argument(
        "--train-args", default="", help="extra flags for the universe's `forecaster train`, e.g. '--device cuda'"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench.json", help="where to write the results"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    skipped = {s.strip() for s in args.skip.split(",") if s.strip()}
    bad = [s for s in [*chosen, *skipped] if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in chosen and s not in skipped]
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    if any(c not in CELL_NAMES for c in args.cells):
        ap.error(f"--cells takes {', '.join(CELL_NAMES)}")
    q = args.quick
    args.windows = args.windows or (2000 if q else 6000)
    args.cli_repeats = args.cli_repeats or (3 if q else 5)
    args.tickers = args.tickers or (100 if q else 1000)
    args.make_demo = not (args.skip_make_demo or q)
    args.sweep_batches = [int(x) for x in args.sweep_batches.split(",") if x]
    args.sweep_threads = [int(x) for x in args.sweep_threads.split(",") if x]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    # must be in the environment before torch (and so libgomp) is loaded, here and in children
    requested = args.omp_wait_policy
    if args.omp_wait_policy == "auto":
        busy = os.getloadavg()[0] >= (os.cpu_count() or 1) - 1
        args.omp_wait_policy = "passive" if busy else "unset"
    if args.omp_wait_policy == "unset":
        os.environ.pop("OMP_WAIT_POLICY", None)
    else:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    import torch

    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "threads": args.threads,
        "omp_wait_policy": args.omp_wait_policy,
        "omp_wait_policy_requested": requested,
        "windows": args.windows,
        "block": args.block,
        "sections": args.sections,
        "quick": args.quick,
        "load_average_start": load_average(),
    }
    print(
        f"forecaster benchmarks: {', '.join(args.sections)}  (torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY {args.omp_wait_policy}, load average "
        f"{meta['load_average_start']})",
        flush=True,
    )
    res = Results()
    work = Path(tempfile.mkdtemp(prefix="forecaster-bench-"))
    failures = []
    try:
        bench = None
        if {"reference", "defaults", "sweep"} & set(args.sections):
            bench = Bench(args.windows, args.block, args.seed)
        steps = {
            "reference": lambda: section_reference(res, bench, args.threads, args.cells),
            "defaults": lambda: section_defaults(res, bench, args.threads),
            "sweep": lambda: section_sweep(
                res, bench, args.sweep_batches, args.sweep_threads, args.omp_wait_policy, not args.no_policy_row
            ),
            "cli": lambda: section_cli(res, work, args.cli_repeats, args.make_demo, args.demo_run),
            "universe": lambda: section_universe(
                res,
                work,
                args.tickers,
                args.years,
                args.seed,
                args.universe_dir,
                args.universe_source,
                args.train_args.split(),
            ),
        }
        for name in args.sections:
            t0 = time.perf_counter()
            try:
                steps[name]()
            except Exception as e:  # one failing section does not hide the others
                failures.append(f"{name}: {e}")
                res.add(name, "FAILED", None, "", met=False, note=str(e).strip().splitlines()[0][:100])
            res.details.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    finally:
        if args.keep:
            print(f"temporary files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    meta["load_average_end"] = load_average()
    meta["total_seconds"] = round(time.perf_counter() - started, 1)
    print()
    print(render_table(res.rows))
    secs = res.details.get("section_seconds", {})
    print(
        f"\nload average (1/5/15 min) at start {meta['load_average_start']}, at end "
        f"{meta['load_average_end']}; total {meta['total_seconds']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items())
        + ")"
    )
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": [r.__dict__ for r in res.rows], "details": res.details}
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"results written to {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
