#!/usr/bin/env python3
"""Command latency and memory: ``forecaster --help``, ``import torch``, ``forecaster predict``
on the demo run, ``forecaster score`` of four years of daily forecasts, and ``make demo``.

The forecasts scored are live ones, as a cron job leaves them: made by a run of the demo config
trained on the sample up to ``SCORED_FILES`` sessions before its end, one file each session
since (the last one written by ``predict``, the others copies of it moved along the calendar,
each from that day's close), scored against the sample's closes. Forecasts made inside a
run's data are left out by ``score``: copies of the demo run's own would leave one file scored.

Every command runs through a small launcher process (``python -S``) that reports its wall time
and ``ru_maxrss`` of ``RUSAGE_CHILDREN``: the peak RSS of the command and of every process it
waited for (for ``make demo``: the largest of train, evaluate and predict). Wall times are the
median (min-max) of ``--rounds`` runs.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

TARGET_HELP_S = 0.3
TARGET_PREDICT_S = 3.0


def repeat(res: harness.Results, label: str, cmd: list[str], n: int, target: float | None = None, **kw) -> None:
    runs = [harness.checked(harness.measure(cmd, **kw), label) for _ in range(n)]
    s = harness.spread([r.wall for r in runs])
    rss = max(r.max_rss_mb for r in runs)
    res.details[label] = {"walls_s": [r.wall for r in runs], "max_rss_mb": rss}
    res.add(
        f"{label} ({n} runs)",
        s["median"],
        "s",
        spread=harness.fmt_spread(s),
        target=f"< {target:g}" if target else "",
        met=s["median"] < target if target else None,
        note=f"peak RSS {rss:.0f} MB",
    )


SCORED_FILES = 1000  # four years of daily forecasts


def daily_forecasts(folder: Path, n: int, data_dir: Path) -> None:
    """``n`` dated forecast files in ``folder``: the one ``predict`` wrote there, copied to each
    of the ``n - 1`` sessions before it (as_of and dates moved along the exchange calendar, its
    prices scaled to each ticker's close that day, from ``data_dir``), as a cron job that
    forecasts every day leaves them."""
    import exchange_calendars as xc
    import pandas as pd

    (made,) = [p for p in folder.glob("????-??-??.csv")]
    df = pd.read_csv(made, dtype={"as_of": str, "date": str})
    steps = df["step"].to_numpy()
    closes = {t: pd.read_csv(data_dir / f"{t}.csv", index_col=0)["Close"] for t in df["ticker"].unique()}
    cal = xc.get_calendar("XNYS")
    days = [str(d.date()) for d in cal.sessions_in_range(cal.first_session, cal.last_session)]
    last = days.index(made.stem)
    for i in range(last - n + 1, last):
        out = df.copy()
        out["as_of"] = days[i]
        out["date"] = [days[i + k] for k in steps]
        ratio = out["ticker"].map({t: close[days[i]] for t, close in closes.items()}) / out["last_close"]
        for col in ("last_close", "p10", "p50", "p90"):
            out[col] = out[col] * ratio
        out.to_csv(folder / f"{days[i]}.csv", index=False, float_format="%.10g")


def live_run(work: Path, fc: list[str]) -> tuple[Path, Path]:
    """A run of the demo config (2 epochs) trained on the sample up to ``SCORED_FILES`` sessions
    before its end, and the forecast folder of its daily forecasts since: (run, out)."""
    import pandas as pd

    sample = harness.ROOT / "data" / "sample"
    cut_dir = work / "sample-cut"
    cut_dir.mkdir()
    sessions = pd.read_csv(sample / "STOCKA.csv", usecols=["Date"])["Date"]
    cut = sessions.iloc[-SCORED_FILES]  # its forecast is the first of the SCORED_FILES days
    for path in sample.glob("*.csv"):
        bars = pd.read_csv(path, dtype=str)
        bars[bars["Date"] <= cut].to_csv(cut_dir / path.name, index=False)
    run, out = work / "live-run", work / "live-forecasts"
    cfg = str(harness.ROOT / "configs" / "demo.toml")
    # shorter splits than the demo's, so that STOCKB (listed 2020) is still trained on
    cmd = fc + ["train", "--config", cfg, "--epochs", "2", "--val-days", "120", "--test-days", "120"]
    harness.checked(harness.measure(cmd + ["--data-dir", str(cut_dir), "--run-dir", str(run), "--quiet"]), "live run")
    cmd = fc + ["predict", "--run", str(run), "--offline", "--data-dir", str(sample), "--out", str(out), "--quiet"]
    harness.checked(harness.measure(cmd), "the live run's last forecast")
    daily_forecasts(out / run.name, SCORED_FILES, sample)
    return run, out


def run_make_demo(work: Path) -> harness.Proc:
    """``make demo`` in a copy of the files it reads, so the tree's runs/ and forecasts/ are left
    alone; the virtual environment is the tree's own and is never reinstalled (``-o`` its stamp)."""
    tree = work / "demo-tree"
    (tree / "data").mkdir(parents=True, exist_ok=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(harness.ROOT / name, tree / name)
    shutil.copytree(harness.ROOT / "configs", tree / "configs", dirs_exist_ok=True)
    shutil.copytree(harness.ROOT / "data" / "sample", tree / "data" / "sample", dirs_exist_ok=True)
    venv = Path(sys.prefix)
    cmd = ["make", "--no-print-directory", "-o", str(venv / ".installed"), "demo", f"VENV={venv}"]
    return harness.measure(cmd, cwd=tree, timeout=900)


def main(argv=None) -> int:
    ap = harness.area_args(__doc__.split("\n\n")[0], rounds=5)
    ap.add_argument("--skip-make-demo", action="store_true", help="do not time `make demo`")
    ap.add_argument("--demo-run", type=Path, default=None, help="time predict on this run instead of a fresh one")
    args = ap.parse_args(argv)
    harness.quick(ap, args, rounds=3, skip_make_demo=True)
    res = harness.Results("cli")
    fc = harness.forecaster_cmd()
    work = Path(tempfile.mkdtemp(prefix="forecaster-cli-"))
    try:
        repeat(res, "forecaster --help", fc + ["--help"], args.rounds, TARGET_HELP_S)
        repeat(res, "python -c 'import torch'", [harness.python(), "-c", "import torch"], min(args.rounds, 3))
        demo_run = args.demo_run
        if demo_run is None:
            demo_run = work / "demo-run"
            cfg = str(harness.ROOT / "configs" / "demo.toml")
            cmd = fc + ["train", "--config", cfg, "--epochs", "2", "--run-dir", str(demo_run), "--quiet"]
            p = harness.checked(harness.measure(cmd), "training the demo run")
            res.add("train demo config, 2 epochs (setup)", p.wall, "s", note=f"peak RSS {p.max_rss_mb:.0f} MB")
        out = work / "forecasts"
        cmd = fc + ["predict", "--run", str(demo_run), "--offline", "--out", str(out)]
        repeat(res, "predict --run <demo> --offline", cmd, args.rounds, TARGET_PREDICT_S)
        run, out = live_run(work, fc)
        sample = str(harness.ROOT / "data" / "sample")
        cmd = fc + ["score", "--run", str(run), "--out", str(out), "--data-dir", sample, "--quiet"]
        repeat(res, f"score, {SCORED_FILES:,} daily forecast files", cmd, min(args.rounds, 3))
        if not args.skip_make_demo:
            p = harness.checked(run_make_demo(work), "make demo")
            res.details["make_demo"] = {"wall_s": p.wall, "max_rss_mb": p.max_rss_mb}
            res.add("make demo (once)", p.wall, "s", note=f"peak RSS {p.max_rss_mb:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.finish(res, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
