"""Compare the recurrent cells and multi-step strategies on the same data and protocol.

Trains rnn / lstm / gru x direct / recursive, evaluates each run walk-forward on its test split
and reports the pooled (ticker ``ALL``) skill against the naive forecast, the Diebold-Mariano
p-value at step 1 and the interval coverage, on:

- ``sample``: the shipped synthetic sample (STOCKA, STOCKB) with the configuration of
  ``configs/demo.toml`` (only the cell and the strategy change);
- ``GOOG``: real daily prices from ``../shared/data/GOOG.csv`` when that file exists, with the
  built-in defaults and the GOOG protocol: the last 250 sessions test, the 250 before them
  validation, horizon 5 (steps 1 and 5 reported).

Prints a Markdown table and writes it as CSV (``benchmarks/results/compare_models.csv`` by
default). Every run is seeded, so the same machine and versions give the same figures, except
the training times.

    python benchmarks/compare_models.py                 # everything, a few minutes on a CPU
    python benchmarks/compare_models.py --epochs 2      # a quick check of the script itself
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from forecaster.config import load_config  # noqa: E402
from forecaster.evaluation import evaluate  # noqa: E402
from forecaster.training import train  # noqa: E402

CELLS = ("rnn", "lstm", "gru")
STRATEGIES = ("direct", "recursive")
COLUMNS = [
    "dataset",
    "model",
    "strategy",
    "skill_h1",
    "skill_h5",
    "dm_p_h1",
    "coverage_h1",
    "coverage_h5",
    "static_coverage_h1",
    "static_coverage_h5",
    "train_seconds",
    "epochs_run",
]
HEADERS = [
    "dataset",
    "model",
    "strategy",
    "skill h=1",
    "skill h=5",
    "DM p h=1",
    "coverage h=1",
    "coverage h=5",
    "validation-only coverage h=1",
    "validation-only coverage h=5",
    "train seconds",
    "epochs run",
]
GOOG_PROTOCOL = {"window.test_days": 250, "window.val_days": 250, "window.horizon": 5}


def datasets(args: argparse.Namespace) -> list[tuple[str, Path | None, dict]]:
    """(name, config file or None for the built-in defaults, dotted overrides) per dataset."""
    out = []
    if "sample" in args.datasets:
        out.append(
            (
                "sample",
                args.demo_config,
                {"data.source": "csv", "data.data_dir": str(args.sample_dir), "data.tickers": ["STOCKA", "STOCKB"]},
            )
        )
    if "GOOG" in args.datasets:
        goog = args.goog
        if goog.is_file():
            out.append(
                (
                    "GOOG",
                    None,
                    {
                        "data.source": "csv",
                        "data.data_dir": str(goog.parent),
                        "data.tickers": [goog.stem],
                        **GOOG_PROTOCOL,
                    },
                )
            )
        else:
            print(f"note: {goog} not found; the GOOG comparison is skipped", flush=True)
    return out


def one_run(
    name: str, config: Path | None, overrides: dict, cell: str, strategy: str, args: argparse.Namespace, work: Path
) -> dict:
    """Train and evaluate one (cell, strategy) on one dataset; the table row."""
    extra = {
        "model.cell": cell,
        "model.strategy": strategy,
        "train.threads": args.threads,
        "train.epochs": args.epochs,
        "train.seed": args.seed,
        "train.device": args.device,
    }
    cfg = load_config(config, {**overrides, **extra})
    run_dir = work / f"{name}-{cell}-{strategy}"
    result = train(cfg, run_dir=run_dir)
    report = evaluate(run_dir)
    static = static_coverage(run_dir)
    pooled = report.overall()
    mine = pooled[pooled["model"] == cell].set_index("step")
    last = cfg.window.horizon

    def at(column: str, step: int) -> float:
        return float(mine.loc[step, column]) if step in mine.index else math.nan

    return {
        "dataset": name,
        "model": cell,
        "strategy": strategy,
        "skill_h1": at("skill", 1),
        "skill_h5": at("skill", 5 if last >= 5 else last),
        "dm_p_h1": at("dm_pvalue", 1),
        "coverage_h1": at("coverage", 1),
        "coverage_h5": at("coverage", 5 if last >= 5 else last),
        "static_coverage_h1": static.get(1, math.nan),
        "static_coverage_h5": static.get(5 if last >= 5 else last, math.nan),
        "train_seconds": float(result.manifest.metrics.train_seconds),
        "epochs_run": int(result.manifest.metrics.epochs_run),
    }


def static_coverage(run_dir: Path) -> dict[int, float]:
    """Pooled test coverage per step with the validation-split scales alone (no online
    tracking): what split-conformal calibration gives when the test period differs."""
    from forecaster.checkpoint import load_run
    from forecaster.evaluation import walk_forward
    from forecaster.metrics import coverage
    from forecaster.store import load_bars

    run = load_run(run_dir)
    pred = walk_forward(run, load_bars(run.config.data.source, run.config.data.data_dir, run.names), track=False)
    return {int(step): float(coverage(g["actual"], g["p10"], g["p90"])) for step, g in pred.groupby("step")}


def _fmt(column: str, value) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column.startswith("skill"):
        return f"{value:+.2%}"
    if "coverage" in column:
        return f"{value:.1%}"
    if column == "dm_p_h1":
        return f"{value:.3g}"
    if column == "train_seconds":
        return f"{value:.1f}"
    return str(value)


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEADERS))) + "|",
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_fmt(c, row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def summary(table: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """One line per dataset: the best step-1 skill and which runs beat naive significantly."""
    out = []
    for name, group in table.groupby("dataset", sort=False):
        best = group.loc[group["skill_h1"].idxmax()]
        sig = group[(group["dm_p_h1"] < alpha) & (group["skill_h1"] > 0)]
        which = ", ".join(f"{r.model}/{r.strategy}" for r in sig.itertuples()) or "none"
        out.append(
            f"{name}: best step-1 skill {best['skill_h1']:+.2%} ({best['model']}/"
            f"{best['strategy']}); beating naive at step 1 with DM p < {alpha}: {which}"
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Compare rnn/lstm/gru x direct/recursive on the shipped sample and, when "
        "present, GOOG; print a Markdown table and write it as CSV."
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        choices=["sample", "GOOG"],
        default=["sample", "GOOG"],
        help="which comparisons to run (default: both)",
    )
    p.add_argument(
        "--cells", nargs="+", choices=CELLS, default=list(CELLS), help="recurrent cells (default: all three)"
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        choices=STRATEGIES,
        default=list(STRATEGIES),
        help="multi-step strategies (default: both)",
    )
    p.add_argument(
        "--sample-dir",
        type=Path,
        default=ROOT / "data" / "sample",
        help="folder holding STOCKA.csv and STOCKB.csv (default: data/sample)",
    )
    p.add_argument(
        "--demo-config",
        type=Path,
        default=ROOT / "configs" / "demo.toml",
        help="configuration of the sample comparison (default: configs/demo.toml)",
    )
    p.add_argument(
        "--goog",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "GOOG.csv",
        help="GOOG daily bars, skipped with a note when the file is absent "
        "(default: ../shared/data/GOOG.csv next to the checkout)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "compare_models.csv",
        help="CSV file to write (default: benchmarks/results/compare_models.csv)",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="override train.epochs (default: the dataset's configuration)"
    )
    p.add_argument("--seed", type=int, default=None, help="override train.seed (default: the configuration's, 0)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads, train.threads (default: torch's own choice)"
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda", "mps"], default=None, help="override train.device (default: auto)"
    )
    p.add_argument(
        "--keep-runs",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the run directories under DIR (default: a temporary folder, removed at the end)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = datasets(args)
    if not plan:
        print("nothing to compare", file=sys.stderr)
        return 1
    work = args.keep_runs or Path(tempfile.mkdtemp(prefix="compare-models-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for name, config, overrides in plan:
            for cell in args.cells:
                for strategy in args.strategies:
                    started = time.perf_counter()
                    row = one_run(name, config, overrides, cell, strategy, args, work)
                    rows.append(row)
                    print(
                        f"{name} {cell}/{strategy}: skill h=1 {row['skill_h1']:+.2%}, "
                        f"DM p {row['dm_p_h1']:.3g}, {row['epochs_run']} epochs, "
                        f"{time.perf_counter() - started:.0f} s in all",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        if args.keep_runs is None:
            shutil.rmtree(work, ignore_errors=True)
    table = pd.DataFrame(rows, columns=COLUMNS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.6g")
    print(markdown(table))
    print()
    for line in summary(table):
        print(line)
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
