"""Evaluation and tuning plots (matplotlib, Agg backend). Only evaluate --plot and tune import this module."""

from __future__ import annotations

import csv
import errno
import io
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .fsio import atomic_writer, read_own_file

log = logging.getLogger("forecaster")

_CANNOT_WRITE = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}
"""What stops a plot's file from being written: the evaluation's files cannot be either."""


def import_matplotlib():
    """matplotlib, whatever ``MPLBACKEND`` says, and in silence where its folders cannot be
    written. Set to a backend matplotlib does not know, it refuses to be imported at all, and
    so does ``arch`` (the garch fits), which imports it: forecaster draws files only, so it
    imports it with the Agg backend instead (the variable is left as it was). Where its
    config or cache folder cannot be made (a service's user whose HOME or XDG_CACHE_HOME it
    cannot write), matplotlib uses a temporary one and says so in two lines on stderr, each
    time cron runs the command: that note is left out (the folders are logged at debug level)."""
    mpl_log = logging.getLogger("matplotlib")
    level = mpl_log.level
    mpl_log.setLevel(logging.ERROR)
    try:
        matplotlib = _import_matplotlib()
        matplotlib.get_cachedir()  # found (or made) once per process, here: the font cache's folder
    finally:
        mpl_log.setLevel(level)
    log.debug("matplotlib's config folder %s, cache folder %s", matplotlib.get_configdir(), matplotlib.get_cachedir())
    return matplotlib


def _import_matplotlib():
    try:
        import matplotlib
    except ValueError as e:
        if "backend" not in str(e):
            raise
        for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
            del sys.modules[name]  # the half-made import, so that it is made again
        wanted = os.environ.get("MPLBACKEND")
        os.environ["MPLBACKEND"] = "Agg"
        try:
            import matplotlib
        finally:
            if wanted is None:
                os.environ.pop("MPLBACKEND", None)
            else:
                os.environ["MPLBACKEND"] = wanted
        log.debug("MPLBACKEND=%r is not a backend matplotlib knows: Agg used", wanted)
    return matplotlib


def _figure():
    """matplotlib's ``Figure``, drawn without pyplot: a program that calls forecaster keeps its
    own backend and figures (a notebook's inline plots, a window's) as they were."""
    import_matplotlib()
    from matplotlib.figure import Figure

    return Figure


def _save(fig, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, written whole or not at all (an interrupted study keeps its
    previous history.png, not half of a new one)."""
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    return path


FEW_POINTS = 40
"""A series of at most this many forecasts is drawn with markers, and its interval as bars too:
a line or band of one point is not drawn at all."""


def plot_ticker(pred: pd.DataFrame, history: pd.Series, sym: str, path: Path, steps: list[int]) -> Path:
    """Recent closes, the walk-forward median forecast with its interval band, and actuals.
    A median that is the last close at every origin (the gate shut it off) is one line,
    labelled so, rather than a line hidden under the naive one."""
    fig = _figure()(figsize=(11, 3.6 * len(steps)))
    axes = fig.subplots(len(steps), 1, squeeze=False)
    for ax, step in zip(axes[:, 0], steps):
        p = pred[(pred["ticker"] == sym) & (pred["step"] == step)]
        ax.set_title(f"{sym}: walk-forward forecasts {step} session(s) ahead")
        if p.empty:  # its bars end fewer than ``step`` sessions into the test split
            ax.text(0.5, 0.5, f"no forecast {step} session(s) ahead: the bars end too soon", ha="center")
            ax.set_axis_off()
            continue
        dates = pd.to_datetime(p["date"])
        few = len(p) <= FEW_POINTS
        mark = {"marker": "o", "ms": 3} if few else {}
        start = dates.min() - pd.Timedelta(days=120)
        past = history[(history.index >= start) & (history.index < dates.min())]
        ax.plot(past.index, past.to_numpy(), color="0.45", lw=1, label="history")
        ax.plot(dates, p["actual"], color="black", lw=1, label="actual close", **mark)
        band = {"color": "tab:blue", "alpha": 0.22}
        ax.fill_between(dates, p["p10"], p["p90"], label="calibrated p10–p90", **band)
        if few:
            ax.vlines(dates, p["p10"], p["p90"], lw=4, **band)
        if np.array_equal(p["p50"].to_numpy(), p["naive"].to_numpy()):
            label = f"median forecast, h={step} = naive (last close)"
            ax.plot(dates, p["p50"], color="tab:blue", lw=1.1, label=label, **mark)
        else:
            ax.plot(dates, p["naive"], color="tab:orange", lw=0.8, ls="--", label="naive (last close)", **mark)
            ax.plot(dates, p["p50"], color="tab:blue", lw=1.1, label=f"median forecast, h={step}", **mark)
        ax.set_ylabel("price")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_training(history: pd.DataFrame, path: Path, kept: int | None = None) -> Path:
    """Train and validation loss, and the gradient norm, per epoch; ``kept`` marks the epoch
    whose weights the run kept (run.json's ``best_epoch``; by default the lowest validation loss)."""
    fig = _figure()(figsize=(11, 3.8))
    a, b = fig.subplots(1, 2)
    a.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    a.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    if kept is None:
        kept = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    a.axvline(kept, color="0.5", ls=":", label=f"kept: epoch {kept}")
    a.set_title("pinball loss")
    a.set_xlabel("epoch")
    a.legend()
    a.grid(alpha=0.3)
    b.plot(history["epoch"], history["grad_norm"], marker="o", color="tab:red")
    b.set_title("mean gradient norm before clipping")
    b.set_xlabel("epoch")
    b.set_yscale("log")
    b.grid(alpha=0.3)
    for ax in (a, b):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return _save(fig, path)


def plot_report(report, run, bars: dict[str, pd.DataFrame], out: Path) -> dict[str, Path]:
    """Write ``<out>/<TICKER>.png`` per ticker and ``<out>/training.png``; return their paths."""
    H = run.config.window.horizon
    steps = [1] if H == 1 else [1, H]
    files = {}
    try:
        _figure()
    except Exception as e:  # a broken matplotlib or MPLBACKEND: the evaluation is written without plots
        log.warning("plots not drawn: matplotlib cannot be used (%s: %s)", type(e).__name__, e)
        return files
    out.mkdir(parents=True, exist_ok=True)
    drawings = [
        (sym, lambda sym=sym: plot_ticker(report.predictions, bars[sym]["close"], sym, out / f"{sym}.png", steps))
        for sym in report.predictions["ticker"].unique()
    ]
    hist = _training_history(Path(run.path) / "history.csv")
    if hist is not None:
        kept = run.manifest.metrics.best_epoch
        drawings.append(("training", lambda: plot_training(hist, out / "training.png", kept)))
    for name, draw in drawings:
        try:
            files[name] = draw()
        except Exception as e:  # one plot that cannot be drawn costs that plot, not the evaluation
            if isinstance(e, OSError) and e.errno in _CANNOT_WRITE:  # a full disk: nothing of it can be written
                raise
            log.warning("%s.png not drawn: %s: %s", name, type(e).__name__, e)
    return files


def _training_history(path: Path) -> pd.DataFrame | None:
    """The epochs of ``history.csv`` that training.png draws; None, with a warning, when the
    file is missing, unreadable or holds no epoch with a validation loss (the evaluation and
    the tickers' plots do not need it)."""
    cols = ["epoch", "train_loss", "val_loss", "grad_norm"]
    try:
        rows = csv.reader(io.StringIO(read_own_file(path), newline=""))
        header = next(rows, None)
    except (OSError, ValueError, csv.Error) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    else:
        if header is None:
            why = "No columns to parse from file"
        elif missing := [c for c in cols if c not in header]:
            why = f"no column {', '.join(missing)}"
        else:
            # those columns alone, read in one pass: a header of a million commas is not a million
            # columns of each row (pandas took 40 s and 1.4 GB over one such file)
            at = [header.index(c) for c in cols]
            try:
                picked = [[row[i] if i < len(row) else "" for i in at] for row in rows]
            except csv.Error as e:
                why = str(e)
            else:
                hist = pd.DataFrame(picked, columns=cols).apply(pd.to_numeric, errors="coerce")
                hist = hist.dropna(subset=["epoch", "val_loss"])
                if len(hist):
                    return hist
                why = "no epoch with a validation loss"
    log.warning("training.png not drawn: %s: %s", path, why)
    return None


def plot_study(trials: pd.DataFrame, pruned_at: dict[int, float], path: Path, study: str) -> Path:
    """The optimisation history: each completed trial's validation loss, the best so far, and
    the loss at which each pruned trial was stopped."""
    fig = _figure()(figsize=(9, 4.2))
    path.parent.mkdir(parents=True, exist_ok=True)
    ax = fig.subplots()
    done = trials[trials["state"] == "COMPLETE"].sort_values("number")
    if len(done):
        ax.plot(done["number"], done["value"], "o", color="tab:blue", label="completed trial")
        ax.step(done["number"], done["value"].cummin(), where="post", color="tab:green", label="best so far")
    if pruned_at:
        ax.plot(list(pruned_at), list(pruned_at.values()), "x", color="0.5", label="pruned (last reported)")
    failed = trials.loc[trials["state"] == "FAIL", "number"]
    for i, n in enumerate(failed):
        ax.axvline(n, color="tab:red", alpha=0.25, lw=1, label="failed" if i == 0 else None)
    ax.set_title(f"study {study}: validation pinball loss per trial")
    ax.set_xlabel("trial")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("validation pinball loss (best epoch)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
