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
import statistics
import subprocess
import sys
import tempfile
import threading
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
        print(f"  {row.section:<9} {row.name:<44} {_fmt(row.value):>10} {row.unit:<10} {row.note}",
              flush=True)
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
class Bench:
    """In-process training benchmarks over one WindowSet built from synthetic bars."""

    def __init__(self, n_windows: int, warmup_batches: int, repeats: int, seed: int):
        import numpy as np

        from forecaster.synthetic import generate_universe
        from forecaster.windows import build_windows, make_splits

        self.n_windows, self.warmup_batches, self.repeats = n_windows, warmup_batches, repeats
        self.seed = seed
        lookback, horizon = REFERENCE["lookback"], REFERENCE["horizon"]
        # 10 years of ~2,500 sessions; about 1,700 training windows per ticker on average
        n_tickers = max(4, int(np.ceil(n_windows / 1200)))
        bars = generate_universe(n_tickers, years=10, seed=seed)
        splits = make_splits(bars, 250, 250)
        self.ws = build_windows(bars, lookback, horizon, splits)
        ends = self.ws.ends("train")
        rng = np.random.default_rng(seed)
        self.ends = rng.permutation(ends)
        if len(self.ends) < n_windows:  # not expected; windows may then repeat
            self.ends = np.resize(self.ends, n_windows)
        self.empty = np.empty(0, dtype=np.int64)

    def config(self, cell: str, hidden: int, layers: int, batch: int, threads: int):
        from forecaster.config import load_config

        return load_config(None, {
            "model.cell": cell, "model.hidden_size": hidden, "model.num_layers": layers,
            "model.strategy": "direct", "model.quantiles": [0.1, 0.5, 0.9],
            "window.lookback": REFERENCE["lookback"], "window.horizon": REFERENCE["horizon"],
            "train.batch_size": batch, "train.epochs": 1, "train.device": "cpu",
            "train.threads": threads, "train.seed": self.seed})

    def project(self, cfg) -> float:
        """Samples/s of one epoch of forecaster.training.fit over ``n_windows`` windows."""
        import torch

        from forecaster.training import fit, new_model, seed_everything

        torch.set_num_threads(cfg.train.threads)
        seed_everything(self.seed)
        cpu = torch.device("cpu")
        model = new_model(cfg, self.ws).to(cpu)
        warm = self.ends[: self.warmup_batches * cfg.train.batch_size]
        for _ in fit(model, self.ws, cfg, cpu, warm, self.empty):
            pass
        ends = self.ends[: self.n_windows]
        start = time.perf_counter()
        records = list(fit(model, self.ws, cfg, cpu, ends, self.empty))
        seconds = time.perf_counter() - start
        assert records and records[0].samples == len(ends)
        return len(ends) / seconds

    def hand(self, cfg) -> float:
        """Samples/s of a minimal PyTorch loop: pre-built tensors, the same recurrent cell and a
        linear head, same batch size, AdamW and pinball loss; no data pipeline."""
        import torch
        from torch import nn

        torch.set_num_threads(cfg.train.threads)
        torch.manual_seed(self.seed)
        m, w, t = cfg.model, cfg.window, cfg.train
        ends = self.ends[: self.n_windows]
        x_np, _ = self.ws.inputs(ends)
        x_all = torch.from_numpy(x_np)  # (N, L, F), already in a shuffled order
        y_all = torch.from_numpy(self.ws.targets(ends))  # (N, H)
        q = torch.tensor(m.quantiles)
        cell = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[m.cell]

        class Hand(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = cell(x_all.shape[-1], m.hidden_size, m.num_layers, batch_first=True,
                                dropout=m.dropout if m.num_layers > 1 else 0.0)
                self.head = nn.Linear(m.hidden_size, w.horizon * len(m.quantiles))

            def forward(self, x):
                out, _ = self.rnn(x)
                return self.head(out[:, -1]).view(x.shape[0], w.horizon, len(m.quantiles))

        model = Hand()
        opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        bs = t.batch_size

        def epoch(n: int) -> None:
            model.train()
            for i in range(0, n, bs):
                xb, yb = x_all[i : i + bs], y_all[i : i + bs]
                diff = yb.unsqueeze(-1) - model(xb)
                loss = torch.maximum(q * diff, (q - 1) * diff).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        epoch(min(len(ends), self.warmup_batches * bs))
        start = time.perf_counter()
        epoch(len(ends))
        return len(ends) / (time.perf_counter() - start)

    def pair(self, cfg) -> tuple[float, float]:
        """Best of ``repeats`` interleaved (project, hand) measurements."""
        proj, hand = [], []
        for _ in range(self.repeats):
            proj.append(self.project(cfg))
            hand.append(self.hand(cfg))
        return max(proj), max(hand)


def section_reference(res: Results, bench: Bench, threads: int, cells) -> None:
    r = REFERENCE
    label = f"L{r['lookback']} h{r['hidden_size']}x{r['num_layers']} bs{r['batch_size']}"
    res.details["reference"] = {}
    for cell in cells:
        cfg = bench.config(cell, r["hidden_size"], r["num_layers"], r["batch_size"], threads)
        proj, hand = bench.pair(cfg)
        ratio = proj / hand
        res.details["reference"][cell] = {"project": proj, "hand": hand, "ratio": ratio}
        res.add("reference", f"{cell} {label} project loop", proj, "samples/s")
        res.add("reference", f"{cell} {label} hand loop", hand, "samples/s")
        res.add("reference", f"{cell} ratio project/hand", ratio, "", f">= {TARGET_RATIO}",
                ratio >= TARGET_RATIO, f"{(ratio - 1) * 100:+.0f}% vs hand")


def _defaults():
    from forecaster.config import Config

    c = Config()
    return c.model.cell, c.model.hidden_size, c.model.num_layers, c.train.batch_size


def section_defaults(res: Results, bench: Bench, threads: int) -> None:
    cell, hidden, layers, batch = _defaults()
    label = f"L{REFERENCE['lookback']} h{hidden}x{layers} bs{batch}"
    cfg = bench.config(cell, hidden, layers, batch, threads)
    proj, hand = bench.pair(cfg)
    ratio = proj / hand
    res.details["defaults"] = {"cell": cell, "hidden": hidden, "layers": layers, "batch": batch,
                               "project": proj, "hand": hand, "ratio": ratio}
    res.add("defaults", f"{cell} {label} project loop", proj, "samples/s")
    res.add("defaults", f"{cell} {label} hand loop", hand, "samples/s")
    res.add("defaults", f"{cell} ratio project/hand", ratio, "", f">= {TARGET_RATIO}",
            ratio >= TARGET_RATIO, f"{(ratio - 1) * 100:+.0f}% vs hand")


def section_sweep(res: Results, bench: Bench, batches, threads_list) -> None:
    cell, hidden, layers, default_batch = _defaults()
    grid = {}
    for th in threads_list:
        for bs in batches:
            cfg = bench.config(cell, hidden, layers, bs, th)
            grid[(bs, th)] = max(bench.project(cfg) for _ in range(bench.repeats))
    best = max(grid, key=grid.get)
    res.details["sweep"] = {"cell": cell, "hidden": hidden, "layers": layers,
                            "samples_per_s": {f"batch{bs}_threads{th}": v for (bs, th), v in grid.items()},
                            "best": {"batch": best[0], "threads": best[1]}}
    for (bs, th), v in grid.items():
        note = []
        if bs == default_batch:
            note.append("default batch")
        if (bs, th) == best:
            note.append("fastest")
        res.add("sweep", f"{cell} h{hidden}x{layers} batch {bs:>4} threads {th}", v, "samples/s",
                note=", ".join(note))


# ---- subprocess timings ----------------------------------------------------------------------------
@dataclass
class Proc:
    wall: float
    max_rss_mb: float
    rc: int
    out: str
    err: str


def measure(cmd: list[str], *, cwd: Path | None = None, timeout: float = 600,
            env: dict | None = None) -> Proc:
    """Run ``cmd``; wall time, and the peak RSS of it and its waited-for children (wait4)."""
    full_env = dict(os.environ, NO_COLOR="1", COLUMNS="160", **(env or {}))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                             env=full_env)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Proc(wall, usage.ru_maxrss / 1024.0, p.returncode,
                    out.read().decode(errors="replace"), err.read().decode(errors="replace"))


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
    res.add("cli", f"forecaster --help (median of {repeats})", wall, "s", f"< {TARGET_HELP_S}",
            wall < TARGET_HELP_S, f"peak RSS {rss:.0f} MB")

    if demo_run is None:
        demo_run = work / "demo-run"
        p = _checked(measure(fc + ["train", "--config", str(ROOT / "configs/demo.toml"), "--epochs", "2",
                                   "--run-dir", str(demo_run), "--quiet"], cwd=ROOT),
                     "training the demo run")
        det["demo_train_2_epochs"] = {"wall_s": p.wall, "max_rss_mb": p.max_rss_mb}
        res.add("cli", "train demo config, 2 epochs (setup)", p.wall, "s",
                note=f"peak RSS {p.max_rss_mb:.0f} MB")
    out = work / "demo-forecasts"
    wall, rss, walls = repeat(fc + ["predict", "--run", str(demo_run), "--offline", "--out", str(out)],
                              repeats, "forecaster predict", cwd=ROOT)
    det["predict"] = {"run": str(demo_run), "median_s": wall, "runs_s": walls, "max_rss_mb": rss}
    res.add("cli", f"predict --run <demo> --offline (median of {repeats})", wall, "s",
            f"< {TARGET_PREDICT_S:g}", wall < TARGET_PREDICT_S, f"peak RSS {rss:.0f} MB")

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
    return measure(["make", "--no-print-directory", "-o", str(stamp), "demo", f"VENV={venv}"],
                   cwd=tree, timeout=900)


# ---- the 1,000-ticker universe -------------------------------------------------------------------------
def write_universe(folder: Path, n: int, years: float, seed: int) -> dict:
    """``generate_universe`` written as <TICKER>.csv files (the layout of forecaster.synthetic)."""
    import numpy as np
    import pandas as pd

    from forecaster.synthetic import generate_universe

    t0 = time.perf_counter()
    bars = generate_universe(n, years=years, seed=seed)
    t1 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in bars.items():
        # byte-for-byte the text of forecaster.synthetic.write_csv, written by pandas (faster)
        frame = pd.DataFrame({
            "Date": df.index.strftime("%Y-%m-%d"),
            **{c.title(): np.round(df[c].to_numpy(np.float64), 4) + 0.0
               for c in ("open", "high", "low", "close")},
            "Volume": np.rint(df["volume"].to_numpy(np.float64)).astype(np.int64)})
        frame.to_csv(folder / f"{name}.csv", index=False, float_format="%.4f", lineterminator="\n")
    t2 = time.perf_counter()
    rows = sum(len(df) for df in bars.values())
    return {"tickers": list(bars), "rows": rows, "generate_s": t1 - t0, "write_s": t2 - t1}


def read_history(run_dir: Path) -> list[dict]:
    import csv

    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def section_universe(res: Results, work: Path, n: int, years: float, seed: int, data_dir: Path | None,
                     extra: list[str]) -> None:
    fc = forecaster_cmd()
    det = res.details.setdefault("universe", {"tickers": n, "years": years, "seed": seed})
    if data_dir is None:
        data_dir = work / "universe"
        info = write_universe(data_dir, n, years, seed)
        det.update({k: info[k] for k in ("rows", "generate_s", "write_s")})
        tickers = info["tickers"]
        res.add("universe", f"generate + write {n} CSVs ({info['rows']:,} bars)",
                info["generate_s"] + info["write_s"], "s", note="setup")
    else:
        tickers = sorted(p.stem for p in data_dir.glob("*.csv"))[:n]
    run_dir = work / "universe-run"
    cmd = fc + ["train", "--source", "csv", "--data-dir", str(data_dir), "--tickers", ",".join(tickers),
                "--epochs", "1", "--run-dir", str(run_dir), "--quiet", *extra]
    p = _checked(measure(cmd, cwd=work, timeout=3600), f"train on {n} tickers")
    meta = json.loads((run_dir / "run.json").read_text())
    hist = read_history(run_dir)[0]
    samples, secs = int(hist["samples"]), float(hist["seconds"])
    det["train"] = {"wall_s": p.wall, "max_rss_mb": p.max_rss_mb, "windows": meta["windows"],
                    "trained_tickers": len(meta["tickers"]), "skipped": len(meta.get("skipped", {})),
                    "epoch_samples": samples, "epoch_seconds": secs, "device": meta.get("device")}
    res.add("universe", f"train 1 epoch, {len(meta['tickers'])} tickers (wall)", p.wall, "s",
            note=f"{len(meta.get('skipped', {}))} skipped: too short")
    res.add("universe", f"train epoch: {samples:,} windows", samples / secs, "samples/s",
            note=f"{secs:.0f} s in the epoch incl. validation")
    res.add("universe", "train peak RSS", p.max_rss_mb, "MB", f"< {TARGET_UNIVERSE_RSS_MB:.0f}",
            p.max_rss_mb < TARGET_UNIVERSE_RSS_MB)

    p = _checked(measure(fc + ["evaluate", "--run", str(run_dir), "--quiet"], cwd=work, timeout=3600),
                 f"evaluate on {n} tickers")
    det["evaluate"] = {"wall_s": p.wall, "max_rss_mb": p.max_rss_mb}
    res.add("universe", "evaluate (walk-forward test split)", p.wall, "s",
            note=f"peak RSS {p.max_rss_mb:.0f} MB")

    out = work / "universe-forecasts"
    p = _checked(measure(fc + ["predict", "--run", str(run_dir), "--offline", "--out", str(out), "--quiet"],
                         cwd=work, timeout=3600), f"predict on {n} tickers")
    det["predict"] = {"wall_s": p.wall, "max_rss_mb": p.max_rss_mb}
    res.add("universe", f"predict all {len(meta['tickers'])} tickers --offline", p.wall, "s",
            f"< {TARGET_UNIVERSE_PREDICT_S:g}", p.wall < TARGET_UNIVERSE_PREDICT_S,
            f"peak RSS {p.max_rss_mb:.0f} MB")


# ---- main ------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="forecaster benchmarks: training samples/s against a hand-written PyTorch loop, "
                    "a batch-size/thread sweep of the default model, CLI wall time and peak memory, "
                    "and train/evaluate/predict on a synthetic universe of 1,000 tickers. Prints one "
                    "table and writes a JSON file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run, from: {', '.join(SECTIONS)}")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out")
    ap.add_argument("--quick", action="store_true",
                    help="a fast smoke run: 3,000 windows, 1 repeat, 3 CLI repeats, 100 tickers, "
                         "no make demo")
    ap.add_argument("--cells", default=",".join(CELL_NAMES), help="cells of the reference section")
    ap.add_argument("--windows", type=int, default=None, help="training windows per measured epoch "
                    "(default 20000; 3000 with --quick)")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up batches before each measurement")
    ap.add_argument("--repeats", type=int, default=None,
                    help="training measurements per cell (best is kept; default 2, 1 with --quick)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the reference and "
                    "default-config sections (both loops)")
    ap.add_argument("--sweep-batches", default="64,128,256,512,1024")
    ap.add_argument("--sweep-threads", default="1,2")
    ap.add_argument("--cli-repeats", type=int, default=None, help="runs per CLI timing (median; default 5)")
    ap.add_argument("--skip-make-demo", action="store_true", help="do not time `make demo`")
    ap.add_argument("--demo-run", type=Path, default=None,
                    help="time predict on this existing run instead of training a 2-epoch demo run")
    ap.add_argument("--tickers", type=int, default=None, help="universe size (default 1000; 100 with --quick)")
    ap.add_argument("--years", type=float, default=10.0, help="universe history length")
    ap.add_argument("--universe-dir", type=Path, default=None,
                    help="reuse a folder of <TICKER>.csv files instead of generating the universe")
    ap.add_argument("--train-args", default="",
                    help="extra flags for the universe's `forecaster train`, e.g. '--device cuda'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench.json",
                    help="where to write the results")
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
    args.windows = args.windows or (3000 if q else 20000)
    args.repeats = args.repeats or (1 if q else 2)
    args.cli_repeats = args.cli_repeats or (3 if q else 5)
    args.tickers = args.tickers or (100 if q else 1000)
    args.make_demo = not (args.skip_make_demo or q)
    args.sweep_batches = [int(x) for x in args.sweep_batches.split(",") if x]
    args.sweep_threads = [int(x) for x in args.sweep_threads.split(",") if x]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_default_threads": torch.get_num_threads(), "threads": args.threads,
            "windows": args.windows, "warmup_batches": args.warmup, "repeats": args.repeats,
            "sections": args.sections, "quick": args.quick, "load_average_start": load_average()}
    print(f"forecaster benchmarks: {', '.join(args.sections)}  (torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {meta['load_average_start']})", flush=True)
    res = Results()
    work = Path(tempfile.mkdtemp(prefix="forecaster-bench-"))
    failures = []
    try:
        bench = None
        if {"reference", "defaults", "sweep"} & set(args.sections):
            bench = Bench(args.windows, args.warmup, args.repeats, args.seed)
        steps = {
            "reference": lambda: section_reference(res, bench, args.threads, args.cells),
            "defaults": lambda: section_defaults(res, bench, args.threads),
            "sweep": lambda: section_sweep(res, bench, args.sweep_batches, args.sweep_threads),
            "cli": lambda: section_cli(res, work, args.cli_repeats, args.make_demo, args.demo_run),
            "universe": lambda: section_universe(res, work, args.tickers, args.years, args.seed,
                                                 args.universe_dir, args.train_args.split()),
        }
        for name in args.sections:
            t0 = time.perf_counter()
            try:
                steps[name]()
            except Exception as e:  # one failing section does not hide the others
                failures.append(f"{name}: {e}")
                res.add(name, "FAILED", None, "", met=False, note=str(e).splitlines()[0][:100])
            res.details.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    finally:
        if args.keep:
            print(f"temporary files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    meta["load_average_end"] = load_average()
    meta["total_seconds"] = round(time.perf_counter() - started, 1)
    table = render_table(res.rows)
    print()
    print(table)
    print(f"\nload average (1/5/15 min) at start {meta['load_average_start']}, at end "
          f"{meta['load_average_end']}; total {meta['total_seconds']:.0f} s")
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": [r.__dict__ for r in res.rows], "details": res.details}
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"results written to {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
