#!/usr/bin/env python3
"""A thousand tickers: train one epoch, evaluate and predict over a synthetic universe.

``forecaster.synthetic.generate_universe(--tickers, years=--years, seed=--seed)`` is written as
``<TICKER>.csv`` files (or, with ``--source store``, as the parquet store) into a temporary
folder, then each command runs once as a separate process from the clean environment:

- ``forecaster train --epochs 1`` with the default configuration, once per ``--modes`` (the
  default mode, forking; ``window`` takes minutes): the command's wall time and memory, and
  the epoch's seconds (``history.csv``, validation included) and training targets per second;
  the memory target is the most that all of its processes (its garch fits run in workers
  beside it) held at once, their proportional set sizes summed every 0.05 s, and each row also
  gives the largest single process's peak RSS;
- ``forecaster evaluate`` and ``forecaster predict --offline`` of the first mode's run.

Two more rows time ``forecaster.store.load_bars`` per ticker from CSV files and from the store
(the first 100 tickers): every command pays it once per ticker.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

TARGET_EPOCH_S = 30.0
TARGET_RSS_MB = 2048.0
TARGET_EVALUATE_S = 30.0
TARGET_PREDICT_S = 10.0

_UNIVERSE: dict = {}  # the frames being written, shared with forked writer processes


def _write_some(job: tuple[Path, str, list[str]]) -> None:
    import numpy as np
    import pandas as pd

    from forecaster.store import save_store

    folder, kind, names = job
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
    """Write ``bars`` as <TICKER>.csv files or as the store, one process per core; seconds taken."""
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    names = list(bars)
    workers = max(1, min(os.cpu_count() or 1, 8, len(names)))
    _UNIVERSE.update(bars)
    try:
        jobs = [(folder, kind, names[i::workers]) for i in range(workers)]
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                pool.map(_write_some, jobs)
        else:
            for job in jobs:
                _write_some(job)
    finally:
        _UNIVERSE.clear()
    return time.perf_counter() - start


def read_cost(work: Path, n: int, seed: int) -> dict:
    """Milliseconds per ticker of load_bars from CSV files and from the store (``n`` tickers)."""
    from forecaster.store import load_bars
    from forecaster.synthetic import generate_universe

    bars = generate_universe(n, years=10, seed=seed)
    folder = work / "read-cost"
    write_bars(bars, folder, "csv")
    write_bars(bars, folder, "store")
    logging.getLogger("forecaster").setLevel(logging.ERROR)
    out = {}
    for source, label in (("csv", "csv"), ("yahoo", "store")):
        start = time.perf_counter()
        load_bars(source, folder, list(bars))
        out[label] = (time.perf_counter() - start) / n * 1000
    shutil.rmtree(folder, ignore_errors=True)
    return out


def timed(res: harness.Results, key: str, name: str, target_s: float, cmd: list[str]) -> None:
    """Run one command once in a fresh process: its wall time against ``target_s`` and peak RSS."""
    p = harness.checked(harness.measure(cmd, timeout=3600), key)
    res.details[key] = {"wall_s": p.wall, "max_rss_mb": p.max_rss_mb, "peak_mb": p.peak_mb}
    res.add(name, p.wall, "s", target=f"< {target_s:g}", met=p.wall < target_s, note=memory_note(p))


def memory_note(p: harness.Proc) -> str:
    """The memory a command held: all its processes at once where that was measured, and the
    largest single process."""
    together = "" if p.peak_mb is None else f"peak memory {p.peak_mb:,.0f} MB (all its processes at once); "
    return f"{together}largest process's peak RSS {p.max_rss_mb:,.0f} MB"


def main(argv=None) -> int:
    ap = harness.area_args(__doc__.split("\n\n")[0], rounds=None)
    ap.add_argument("--tickers", type=int, default=1000)
    ap.add_argument("--years", type=float, default=10.0)
    ap.add_argument("--modes", default="forking", help="training modes to time, comma-separated (window is slow)")
    ap.add_argument("--source", choices=["csv", "store"], default="csv")
    ap.add_argument("--data-dir", type=Path, default=None, help="reuse this data folder instead of writing one")
    ap.add_argument("--train-args", default="", help="extra flags for `forecaster train`, e.g. '--device cuda'")
    args = ap.parse_args(argv)
    if args.quick:
        args.tickers = min(args.tickers, 100)
    res = harness.Results("universe")
    res.meta.update(tickers=args.tickers, years=args.years, source=args.source)
    work = Path(tempfile.mkdtemp(prefix="forecaster-universe-"))
    fc = harness.forecaster_cmd()
    try:
        data = args.data_dir
        if data is None:
            from forecaster.synthetic import generate_universe

            data = work / "data"
            t0 = time.perf_counter()
            bars = generate_universe(args.tickers, years=args.years, seed=args.seed)
            names = list(bars)
            rows = sum(len(b) for b in bars.values())
            write_bars(bars, data, args.source)
            del bars
            what = "CSV files" if args.source == "csv" else "the parquet store"
            res.add(f"generate {args.tickers} tickers ({rows:,} bars), write {what}", time.perf_counter() - t0, "s")
        else:
            pattern = "*.csv" if args.source == "csv" else "store/*.parquet"
            names = sorted(p.stem for p in data.glob(pattern))[: args.tickers]
        source = ["--source", "csv" if args.source == "csv" else "yahoo", "--data-dir", str(data)]
        first_run = None
        for mode in args.modes.split(","):
            run = work / f"run-{mode}"
            cmd = fc + ["train", *source, "--tickers", ",".join(names), "--epochs", "1", "--train-mode", mode]
            cmd += ["--run-dir", str(run), "--quiet", *args.train_args.split()]
            p = harness.checked(harness.measure(cmd, timeout=7200), f"train ({mode}) on {len(names)} tickers")
            meta = json.loads((run / "run.json").read_text())
            with open(run / "history.csv", newline="") as f:
                hist = next(csv.DictReader(f))
            samples, secs, val = int(hist["samples"]), float(hist["seconds"]), float(hist["val_loss"])
            res.details[f"train_{mode}"] = {
                "wall_s": p.wall,
                "max_rss_mb": p.max_rss_mb,
                "peak_mb": p.peak_mb,
                "windows": meta["windows"],
                "tickers": len(meta["tickers"]),
                "skipped": len(meta.get("skipped", {})),
                "epoch_samples": samples,
                "epoch_seconds": secs,
                "val_loss": val,
                "device": meta.get("device"),
            }
            res.add(
                f"train ({mode}): one epoch, {samples:,} origins, validation included",
                secs,
                "s",
                target=f"< {TARGET_EPOCH_S:g}",
                met=secs < TARGET_EPOCH_S,
                note=f"{samples / secs:,.0f} targets/s; validation pinball {val:.4f} over "
                f"{meta['windows']['val']:,} windows",
            )
            res.add(
                f"train ({mode}): the command, {len(meta['tickers'])} tickers (wall)",
                p.wall,
                "s",
                note=f"{memory_note(p)}; {len(meta.get('skipped', {}))} tickers too short, skipped",
            )
            # the memory of the whole command: its garch fits run in worker processes beside it
            peak = p.max_rss_mb if p.peak_mb is None else max(p.peak_mb, p.max_rss_mb)
            what = "peak RSS (largest process)" if p.peak_mb is None else "peak memory, all its processes at once"
            res.add(
                f"train ({mode}): {what}",
                peak,
                "MB",
                target=f"< {TARGET_RSS_MB:g}",
                met=peak < TARGET_RSS_MB,
                note=memory_note(p),
            )
            first_run = first_run or run
        timed(
            res,
            "evaluate",
            "evaluate (walk-forward test split)",
            TARGET_EVALUATE_S,
            fc + ["evaluate", "--run", str(first_run), "--quiet"],
        )
        timed(
            res,
            "predict",
            "predict every ticker --offline",
            TARGET_PREDICT_S,
            fc + ["predict", "--run", str(first_run), "--offline", "--out", str(work / "fc"), "--quiet"],
        )
        k = min(len(names), 100)
        cost = read_cost(work, k, args.seed)
        res.details["read_ms_per_ticker"] = cost
        for label in ("csv", "store"):
            res.add(
                f"load_bars from {label}, per ticker ({k} tickers)",
                cost[label],
                "ms",
                note=f"x {len(names):,} tickers = {cost[label] * len(names) / 1000:.1f} s per command",
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.finish(res, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
