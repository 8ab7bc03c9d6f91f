"""The model against every baseline, on the shipped sample and on real daily prices.

For each data set and seed, trains the default model (the sample: ``configs/demo.toml``),
evaluates it walk-forward on its test split and reports, per step (1 and the last), from the
pooled (``ALL``) rows of ``metrics.csv``:

- the MAE ratio to the naive forecast of the model and of the drift and mean baselines;
- the pinball loss (levels 0.1, 0.5, 0.9) of the model and of the hist, ewma and garch
  baselines, as a ratio to the best of those three on the same data and step;
- the coverage of the 80 % interval, of the model and the garch, and the model's Kupiec p-value
  (at the last step on every h-th origin, whose forecasts do not overlap);
- the Diebold-Mariano p-values of the model against naive (MAE) and against the best
  volatility baseline (pinball).

Protocol of the real series (``/work/shared/data``-style folder of ``GOOG.csv``, ``ORCL.csv``,
``YHOO.csv``, given with ``--real DIR``): each series trained and evaluated on its own, the last
250 sessions test, the 250 before them validation, horizon 5, mean of the seeds (default 0 and 1).
Every choice of the model was made on validation splits; these are test figures.

Prints Markdown tables and writes the rows as CSV (``benchmarks/results/compare_models.csv``).

    python benchmarks/compare_models.py --real ../shared/data        # under a minute on 2 cores
    python benchmarks/compare_models.py --datasets sample --epochs 2  # a quick check of the script
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from forecaster.config import load_config  # noqa: E402
from forecaster.evaluation import evaluate  # noqa: E402
from forecaster.metrics import PROBABILISTIC_MODELS  # noqa: E402
from forecaster.training import train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

REAL = ("GOOG", "ORCL", "YHOO")
PROTOCOL = {"window.test_days": 250, "window.val_days": 250, "window.horizon": 5}


def figures(metrics: pd.DataFrame, model: str, step: int) -> dict:
    """One step's figures from the pooled rows of metrics.csv."""
    m = metrics[(metrics["ticker"] == "ALL") & (metrics["step"] == step)].set_index("model")
    vols = m.loc[list(PROBABILISTIC_MODELS)]
    # the best baseline and the ratio as evaluate reports them (over the origins every forecaster
    # has), so that the ratio and its DM p-value are about the same baseline and rows
    best = m.loc[model, "best_vol"]
    naive_mae = m.loc["naive", "mae"]
    row = {
        "mae_ratio": m.loc[model, "mae"] / naive_mae,
        "mae_ratio_drift": m.loc["drift", "mae"] / naive_mae,
        "mae_ratio_mean": m.loc["mean", "mae"] / naive_mae,
        "dm_p": m.loc[model, "dm_pvalue"],
        "pinball_ratio": m.loc[model, "pinball_ratio"],
        "best_vol": best,
        "dm_pinball_p": m.loc[model, "dm_pinball_pvalue"],
        "coverage": m.loc[model, "coverage"],
        "kupiec_p": m.loc[model, "kupiec_pvalue"],
        "coverage_garch": m.loc["garch", "coverage"],
    }
    row.update({f"pinball_ratio_{b}": vols.loc[b, "pinball"] / vols.loc[best, "pinball"] for b in PROBABILISTIC_MODELS})
    return row


def run_one(name: str, config: Path | None, overrides: dict, seed: int, work: Path, epochs: int | None) -> list[dict]:
    cfg = load_config(config, {**overrides, "train.seed": seed, "train.epochs": epochs})
    run_dir = work / f"{name}-{seed}"
    train(cfg, run_dir=run_dir)
    report = evaluate(run_dir)
    H = cfg.window.horizon
    steps = [1, H] if H > 1 else [1]
    return [{"dataset": name, "seed": seed, "step": h, **figures(report.metrics, cfg.model.cell, h)} for h in steps]


def _p(value) -> str:
    """A p-value; a dash where there is no test (the median is the last close: no difference);
    text (the seeds' own values) as it is."""
    if isinstance(value, str):
        return value
    return "-" if pd.isna(value) else f"{value:.2f}"


def _seeds_p(values: pd.Series):
    """The seeds' p-values in one cell: their mean, a dash when no seed has a test, and each
    seed's own (a dash for none) when only some have: a mean of the others would pass for all."""
    if values.isna().all() or values.notna().all():
        return values.mean()
    return " / ".join(_p(v) for v in values)


def table(rows: pd.DataFrame) -> str:
    """Markdown, one line per data set and step, the seeds averaged (p-values: see _seeds_p)."""
    groups = rows.drop(columns=["best_vol"]).groupby(["dataset", "step"], sort=False)
    mean = groups.mean(numeric_only=True)
    for col in ("dm_p", "dm_pinball_p"):
        mean[col] = groups[col].agg(_seeds_p).astype(object)
    best = rows.groupby(["dataset", "step"], sort=False)["best_vol"].agg(lambda s: "/".join(sorted(set(s))))
    lines = [
        "| data | h | MAE / naive: model | drift | mean | DM p | pinball / best vol: model | hist | ewma | garch "
        "| DM p | coverage: model | garch | Kupiec p |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (data, step), r in mean.iterrows():
        lines.append(
            f"| {data} | {step} | {r.mae_ratio:.4f} | {r.mae_ratio_drift:.4f} | {r.mae_ratio_mean:.4f} | {_p(r.dm_p)} "
            f"| {r.pinball_ratio:.4f} | {r.pinball_ratio_hist:.4f} | {r.pinball_ratio_ewma:.4f} "
            f"| {r.pinball_ratio_garch:.4f} | {_p(r.dm_pinball_p)} | {r.coverage:.1%} | {r.coverage_garch:.1%} "
            f"| {_p(r.kupiec_p)} |"
        )
    real = mean[mean.index.get_level_values(0).isin(REAL)]
    if len(real):
        lines.append("")
        for step, g in real.groupby(level=1):
            lines.append(
                f"Real series, h={step}: mean pinball ratio {g['pinball_ratio'].mean():.4f} "
                f"(worst {g['pinball_ratio'].max():.4f}); MAE ratio worst {g['mae_ratio'].max():.4f}; "
                f"coverage {g['coverage'].min():.1%}-{g['coverage'].max():.1%}"
            )
        print(f"(best volatility baseline per data and step: {dict(best)})", file=sys.stderr)
    return "\n".join(lines)


COLUMNS = {"dataset", "seed", "step", "best_vol", "dm_p", "dm_pinball_p"}
"""Columns a results file of this script has (and the table reads)."""


def _results(p: argparse.ArgumentParser, path: Path) -> pd.DataFrame:
    """The rows of a results file of this script, or a usage error (exit 2) saying why not."""
    try:
        rows = pd.read_csv(path)
    except (OSError, ValueError) as exc:  # missing, a folder, empty, not a CSV file
        p.error(f"--from-csv {path}: cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())})")
    if lacking := sorted(COLUMNS - set(rows.columns)):
        p.error(f"--from-csv {path}: not a results file of this script (no {', '.join(lacking)} column)")
    if rows.empty:
        p.error(f"--from-csv {path}: holds no results")
    return rows


def _check_data(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every data set asked for can be trained, before any is: a wrong folder skipped the real
    series and the results file lost their rows."""
    others = [d for d in args.datasets if d != "sample"]
    if not others:
        return
    if args.real is None:
        p.error(f"{', '.join(others)}: give --real DIR, the folder of their CSV files (or --datasets sample)")
    if not args.real.is_dir():
        p.error(f"--real {args.real} is not a folder")
    if missing := [d for d in others if not (args.real / f"{d}.csv").is_file()]:
        p.error(f"--real {args.real} has no {', '.join(f'{d}.csv' for d in missing)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", type=Path, help="folder with GOOG.csv, ORCL.csv, YHOO.csv (csv source)")
    p.add_argument("--datasets", nargs="+", default=["sample", *REAL], help="which data sets")
    p.add_argument("--seeds", nargs="+", type=harness.at_least(0), default=[0, 1])
    p.add_argument("--epochs", type=harness.at_least(1), default=None, help="override the epoch budget (a quick check)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "compare_models.csv")
    p.add_argument("--from-csv", type=Path, default=None, help="do not train: print the table of this --out file")
    args = p.parse_args(argv)
    if args.from_csv is not None:
        print(table(_results(p, args.from_csv)))
        return 0
    _check_data(p, args)
    try:  # before the training, not after it
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        p.error(f"--out {args.out}: its folder cannot be made ({exc.strerror or exc})")
    if args.out.is_dir() or not os.access(args.out if args.out.exists() else args.out.parent, os.W_OK):
        p.error(f"--out {args.out}: cannot be written")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="compare-"))
    try:
        for name in args.datasets:
            if name == "sample":
                config, overrides = ROOT / "configs" / "demo.toml", {"run_dir": None}
                overrides["data.data_dir"] = str(ROOT / "data" / "sample")
            elif args.real is not None and (args.real / f"{name}.csv").is_file():
                config = None
                overrides = {"data.source": "csv", "data.data_dir": str(args.real), "data.tickers": [name], **PROTOCOL}
            else:
                print(f"skipping {name}: no --real folder with {name}.csv", file=sys.stderr)
                continue
            for seed in args.seeds:
                rows += run_one(name, config, overrides, seed, work, args.epochs)
                print(f"{name} seed {seed} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out, index=False, float_format="%.10g")  # --from-csv gives the same table
    print(table(frame))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
