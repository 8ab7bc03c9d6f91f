"""Tune on a data set, then compare the tuned configuration with the default one on the test split.

Runs an Optuna study (the same code as ``forecaster tune``) on the shipped synthetic sample, or on
a folder of ``<TICKER>.csv`` files given as argument, trains the best trial's configuration and
the default configuration with the same epoch budget, evaluates both walk-forward on the test
split (which the search never saw) and prints, side by side: the validation pinball loss (the
objective), and the test pinball loss, skill against the naive forecast and interval coverage
pooled over the tickers at the first and last step.

    python benchmarks/tune_example.py                                 # the shipped sample
    python benchmarks/tune_example.py --trials 8 --epochs 3           # a quick run
    python benchmarks/tune_example.py PATH/TO/CSV_FOLDER --tickers GOOG,ORCL --trials 40 --epochs 15

For the sample the default configuration is ``configs/demo.toml``; for a CSV folder it is the
built-in defaults (``configs/default.toml``), read through the csv source. Everything is seeded:
the same machine and versions print the same figures, except the times.
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

from forecaster.config import Config, load_config  # noqa: E402
from forecaster.evaluation import evaluate  # noqa: E402
from forecaster.training import train  # noqa: E402
from forecaster.tuning import train_best, tune  # noqa: E402

SAMPLE = ROOT / "data" / "sample"


def base_config(args: argparse.Namespace) -> Config:
    """The default configuration for the data set, with this script's budget and seed."""
    sample = args.data == SAMPLE
    tickers = args.tickers.split(",") if args.tickers else sorted(p.stem for p in args.data.glob("*.csv"))
    if not tickers:
        raise SystemExit(f"no <TICKER>.csv files in {args.data}")
    overrides = {
        "data.source": "csv",
        "data.data_dir": str(args.data),
        "data.tickers": tickers,
        "train.epochs": args.epochs,
        "train.threads": args.threads,
        "tune.trials": args.trials,
        "tune.study": args.study,
        "tune.seed": args.seed,
    }
    return load_config(ROOT / "configs" / "demo.toml" if sample else None, overrides)


def test_figures(run_dir: Path) -> dict[str, float]:
    """Pooled test-split figures of a run at its first and last step."""
    report = evaluate(run_dir)
    pooled = report.overall()
    mine = pooled[pooled["model"] == report.model].set_index("step")
    out = {}
    for step in sorted({int(mine.index.min()), int(mine.index.max())}):
        for col in ("pinball", "skill", "coverage"):
            out[f"{col} h={step}"] = float(mine.loc[step, col])
    return out


def _fmt(key: str, v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return ""
    if key.startswith(("skill", "coverage")):
        return f"{v:+.2%}" if key.startswith("skill") else f"{v:.1%}"
    return f"{v:.5f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="?", type=Path, default=SAMPLE, help="folder of <TICKER>.csv (default: the sample)")
    p.add_argument("--tickers", help="comma-separated tickers (default: every CSV file in the folder)")
    p.add_argument("--trials", type=int, default=20, help="trials in the study (default 20)")
    p.add_argument("--epochs", type=int, default=10, help="epoch budget of every trial and run (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--study", default="tune-example", help="study name (default tune-example)")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the study and runs under DIR (default: removed)")
    args = p.parse_args(argv)
    args.data = args.data.resolve()

    cfg = base_config(args)
    work = args.keep or Path(tempfile.mkdtemp(prefix="tune-example-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        default = train(cfg, run_dir=work / "default")
        default_seconds = time.perf_counter() - started
        started = time.perf_counter()
        result = tune(cfg, fixed={"train.epochs"}, run_dir=work / "tuned", root=work / "tune")
        tune_seconds = time.perf_counter() - started
        tuned = train_best(result)
        rows = {
            "default": {"validation pinball": default.manifest.metrics.best_val_loss, **test_figures(default.run_dir)},
            f"tuned (trial {result.best.number})": {
                "validation pinball": result.best.value,
                **test_figures(tuned.run_dir),
            },
        }
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    counts = result.counts()
    print(
        f"data {args.data} ({', '.join(cfg.data.tickers)}); {args.trials} trials of {args.epochs} epochs, "
        f"sampler seed {args.seed}: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed in {tune_seconds:.0f} s (the default run trained in {default_seconds:.0f} s)"
    )
    print(
        "best parameters: "
        + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.best.params.items())
    )
    columns = list(next(iter(rows.values())))
    print()
    print("| config | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(_fmt(c, row[c]) for c in columns) + " |")
    print(
        "\nvalidation pinball: the objective (best epoch, on the model's volatility-scaled returns); the other "
        "columns: the test split, walk-forward, pooled over the tickers (pinball loss in price units)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
