"""Walk-forward evaluation of a run on its held-out test split, against baselines.

At every origin in the test period the model forecasts H sessions with data up to the origin
only (the window's inputs end there); the forecasts are compared with the actual closes, and so
are the point baselines (naive random walk, drift, historical mean) and the interval baselines
(historical simulation, EWMA, GJR-GARCH), each from the bars up to the origin only.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .baselines import BASELINES, GARCH_REFIT_EVERY, PROBABILISTIC_BASELINES, GarchParams, naive_scale
from .checkpoint import Run, load_run, run_lock_path
from .errors import EXIT_OK, EXIT_PARTIAL, DataError, ForecasterError
from .fsio import (
    PathLike,
    atomic_write_text,
    file_lock,
    publish_files,
    refuse_empty_folders,
    remove_stale_temp_dirs,
    replace_dir,
    sibling_temp_dir,
)
from .intervals import calibrated, start_scales, tracked_scales, with_median
from .metrics import POOLED, PROBABILISTIC_MODELS, QUANTILE_SUFFIXES, lag_share, metrics_table, sort_metrics
from .npinfer import predict_scaled
from .outputs import NOT_A_PRICE, are_prices, to_csv_text, write_csv
from .pool import Workers, processes_for
from .pool import blocks as _blocks
from .pool import workers as _workers
from .sources import csv_file
from .store import load_bars, store_path
from .tickers import log_some, some_names, some_reasons
from .windows import ending_before

log = logging.getLogger("forecaster")

PREDICTION_COLUMNS = ["ticker", "origin", "step", "date", "actual", "p10", "p50", "p90", "naive"]

NAMED_FAILURES = 5
"""The error of an evaluation none of whose tickers' bars could be read names this many of them."""

ENDED = "ended_before_test_split"
"""Why a ticker is in a report's ``missing``: its bars end before the test split starts..."""
TOO_FEW = "too_few_bars"
"""...its bars reach into the test split, but are too few for one forecast with an actual..."""
UNREADABLE = "unreadable"
"""...or its bars could not be read: no file, an unreadable one, bad bars (a failure: exit 3)..."""
NOT_FINITE = "forecast_not_finite"
"""...or its forecasts are not all finite positive prices: the run's weights or figures overflow
(a failure: exit 3; no row of it is written)."""
FAILURES = (UNREADABLE, NOT_FINITE)

MIN_TICKERS_PER_JOB = 8
"""A process of its own for the backtest only with this many tickers for each: starting one
costs about a second, a ticker's backtest about 0.1 s."""
LAG_R2 = 0.95
"""The lag detector flags a forecast whose moves the last close explains beyond this R^2..."""
LAG_SLOPE_TOL = 0.05
"""...with a slope within this of 1: then it is the last value shifted forward."""


@dataclass
class EvalReport:
    run: str
    model: str
    metrics: pd.DataFrame
    predictions: pd.DataFrame  # with the extra columns last_close, drift, mean
    out_dir: Path
    lag: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: dict[str, Path] = field(default_factory=dict)
    missing: dict[str, dict[str, str]] = field(default_factory=dict)  # tickers not evaluated, each with its reason
    median_weight: list[float] | None = None  # per step: 1 the network's median, 0 the last close
    median_alpha: float | None = None  # the run's model.median_alpha (0: the gate shut at every step by design)
    asked: bool = False  # the tickers were named (--tickers), not every one of the run's

    @property
    def failed(self) -> dict[str, dict[str, str]]:
        """The tickers of ``missing`` whose bars could not be read (a missing file, bad bars) or
        whose forecasts are not finite positive prices."""
        return {s: why for s, why in self.missing.items() if why["reason"] in FAILURES}

    @property
    def exit_code(self) -> int:
        """0 when every ticker was evaluated, 3 (partial) when some were not and the others
        were. Of the run's tickers evaluated by default, one without test windows is named (a
        warning) but is no failure; one asked for by name is."""
        return EXIT_PARTIAL if self.failed or (self.asked and self.missing) else EXIT_OK

    def overall(self) -> pd.DataFrame:
        """The pooled (ticker ALL) rows."""
        return self.metrics[self.metrics["ticker"] == "ALL"]

    def verdict(self, alpha: float = 0.05) -> tuple[bool, str]:
        """(beats_naive, sentence): does the model beat naive at every step, significantly?"""
        m = self.overall()
        mine = m[m["model"] == self.model]
        lines, ok = [], True
        gate = self.median_weight or []
        for _, r in mine.iterrows():
            sig = pd.notna(r["dm_pvalue"]) and r["dm_pvalue"] < alpha
            better = pd.notna(r["skill"]) and r["skill"] > 0
            ok &= bool(sig and better)
            step = int(r["step"])
            if step <= len(gate) and gate[step - 1] == 0:
                why = (
                    "model.median_alpha = 0 never uses the network's"
                    if self.median_alpha is not None and self.median_alpha <= 0
                    else "the network's did not beat it on validation"
                )
                lines.append(f"h={step}: the median is the last close ({why})")
            elif not better:  # a skill of exactly 0 (the same errors) is no better, not worse
                how = "worse than" if pd.notna(r["skill"]) and r["skill"] < 0 else "no better than"
                lines.append(f"h={step}: {how} naive (skill {r['skill']:+.2%})")
            elif not sig:
                p = f"DM p={r['dm_pvalue']:.3f}" if pd.notna(r["dm_pvalue"]) else "DM p n/a: too few forecasts"
                lines.append(f"h={int(r['step'])}: not significantly better than naive (skill {r['skill']:+.2%}, {p})")
        if ok:
            return True, f"The model beats the naive forecast at every step (DM p < {alpha})."
        return False, (
            "The model does NOT beat the naive (random-walk) forecast: " + "; ".join(lines) + ". Do not trade on it."
        )

    def interval_verdict(self, alpha: float = 0.05) -> tuple[bool, str]:
        """(beats, sentence): do the model's quantiles beat the best volatility baseline (lowest
        pinball loss among hist, ewma, garch) at every step, significantly?"""
        m = self.overall()
        mine = m[m["model"] == self.model].set_index("step")
        base = m[m["model"].isin(PROBABILISTIC_MODELS)]
        if base.empty:
            return False, "No volatility baseline was evaluated."
        lines, ok = [], True
        for step in sorted(base["step"].unique()):
            r = mine.loc[step]
            coverage = f"coverage {r['coverage']:.1%} (Kupiec p={r['kupiec_pvalue']:.2f})"
            if pd.isna(r["best_vol"]):  # every origin too early in its ticker's history for hist, ewma and garch
                ok = False
                lines.append(f"h={int(step)}: no volatility baseline could be scored (too little history), {coverage}")
                continue
            # the baseline the DM test compared with, on the origins where every forecast is known
            ratio, p = r["pinball_ratio"], r["dm_pinball_pvalue"]
            if pd.isna(ratio):  # the baseline hit every actual (a price that never moved): nothing to beat
                ok = False
                lines.append(
                    f"h={int(step)}: {r['best_vol']}'s pinball loss is 0 (its bounds held every actual: "
                    f"the price did not move), so there is no ratio to it, {coverage}"
                )
                continue
            sig = bool(ratio < 1 and pd.notna(p) and p < alpha)
            ok &= sig
            test = f"DM p={p:.3f}" if pd.notna(p) else "DM p n/a"
            lines.append(f"h={int(step)}: pinball {ratio:.3f}x {r['best_vol']}'s ({test}), {coverage}")
        head = (
            f"The intervals beat the best volatility baseline at every step (DM p < {alpha}): "
            if ok
            else "The intervals do NOT beat the best volatility baseline (hist, ewma, garch) at every step: "
        )
        return ok, head + "; ".join(lines) + "."


def lag_report(pred: pd.DataFrame) -> pd.DataFrame:
    """Per ticker: how much of the one-step forecast's movement is the last observed move.

    Between consecutive origins, the change of the median forecast is regressed on the change of
    the last close. A forecast that is "the last value shifted forward" has slope ~1 and
    R^2 ~1: its movement is explained entirely by what already happened, and it carries nothing
    the naive forecast does not. Flagged when R^2 > 0.95 and the slope is within 0.05 of 1.
    Tickers in the order they first appear; each one's rows in origin order.
    """
    one = pred["step"].to_numpy() == 1
    tickers, names = pd.factorize(pred["ticker"][one])
    origins, _ = pd.factorize(pred["origin"][one], sort=True)
    origins = np.where(origins < 0, origins.max(initial=0) + 1, origins)  # a missing origin sorts last
    order = np.lexsort((origins, tickers))  # by ticker, then origin: each ticker's rows together
    p50, last = (pred[c].to_numpy(dtype=float)[one][order] for c in ("p50", "last_close"))
    rows = []
    for sym, rows_of in zip(names, np.split(np.arange(len(order)), np.flatnonzero(np.diff(tickers[order])) + 1)):
        slope, r2 = lag_share(np.diff(p50[rows_of]), np.diff(last[rows_of]))
        flagged = bool(r2 > LAG_R2 and abs(slope - 1) < LAG_SLOPE_TOL)
        rows.append({"ticker": sym, "slope": slope, "r2": r2, "copies_last_value": flagged})
    return pd.DataFrame(rows, columns=["ticker", "slope", "r2", "copies_last_value"])


def walk_forward(run: Run, bars: dict[str, pd.DataFrame], track: bool = True) -> pd.DataFrame:
    """One row per (ticker, origin, step) over the test split of ``run``: every session of the
    test split is the origin's next session once; steps past the last bar are left out.

    The forecasts go through the numpy forward pass that ``predict`` uses. ``track=False`` keeps
    the validation scales for the whole split (no online tracking), to show what the
    split-conformal calibration alone would have given."""
    pred = _walk_forward(run, bars, track)
    if pred is None:
        raise _no_test_windows(run)
    return pred


def _no_test_windows(run: Run) -> DataError:
    return DataError(
        "no test windows: the data end before the run's test split "
        f"(starting {run.splits().test_start.date()}) has {run.config.window.horizon} sessions"
    )


def _walk_forward(run: Run, bars: dict[str, pd.DataFrame], track: bool = True) -> pd.DataFrame | None:
    """:func:`walk_forward`, None when there is no test window."""
    cfg = run.config
    ws = run.windows(bars)
    ends = ws.origins("test")
    if len(ends) == 0:
        return None
    q = with_median(
        predict_scaled(run.model, ws, ends, cfg.model.strategy, calendar=cfg.data.calendar),
        run.manifest.median_weights(),
    )
    conformal = run.manifest.conformal()
    if track:
        scale, _ = tracked_scales(
            q, ws, ends, conformal, cfg.intervals.tracking_rate, steps=cfg.intervals.step_tracking
        )
    else:
        scale = start_scales(ws, ends, conformal)
    lo, med, hi = calibrated(q, ws, ends, scale)
    fits = {sym: t.garch for sym, t in run.manifest.tickers.items() if t.garch is not None}
    parts = [_ticker_rows(ws, ends, k, sym, lo, med, hi, fits.get(sym)) for k, sym in enumerate(ws.tickers)]
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    # one frame for every ticker: a frame per ticker, then concat, costs milliseconds a ticker
    return pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in parts[0]})


def _ticker_rows(ws, ends, k: int, sym: str, lo, med, hi, fit=None) -> dict[str, np.ndarray] | None:
    """The prediction rows of the ``k``-th ticker present, as columns: forecasts, actuals and
    baselines. ``fit``: the run's garch fit at the first test origin, used when these are its bars."""
    H = ws.horizon
    first, stop = ws.offsets[k], ws.offsets[k + 1]
    sel = np.nonzero(ws.ticker_id[ends] == ws.names.index(sym))[0]
    if len(sel) == 0:
        return None
    fut = ends[sel][:, None] + np.arange(1, H + 1)
    have = fut < stop  # steps whose actual exists (the last origins lack some)
    fut = np.minimum(fut, stop - 1)
    close_o = ws.close[ends[sel]]
    start = int(ends[sel].min())
    days = _days(ws.dates[start : int(fut.max()) + 1])  # each session's text once: origins and target dates
    frame = {
        "ticker": np.repeat(sym, len(sel) * H),
        "origin": np.repeat(days[ends[sel] - start], H),
        "step": np.tile(np.arange(1, H + 1), len(sel)),
        "date": days[fut.ravel() - start],
        "actual": ws.close[fut].ravel(),
        "last_close": np.repeat(close_o, H),
    }
    with np.errstate(over="ignore", invalid="ignore"):  # a price that is no finite number fails its ticker
        for name, arr in (("p10", lo), ("p50", med), ("p90", hi)):
            frame[name] = (close_o[:, None] * np.exp(arr[sel])).ravel()
    # the ticker's closes from its second bar on (the first has no return, so no row): the
    # drift's line starts there
    close = ws.close[first:stop]
    for name, baseline in BASELINES.items():
        frame[name] = baseline(close, ends[sel] - first, H).ravel()
    local = ends[sel] - first
    params = _same_fit(fit, ws, ends[sel])
    for name, baseline in PROBABILISTIC_BASELINES.items():
        extra = {"where": _origin_of(sym, ws.dates[first:stop])} if name == "garch" else {}
        extra |= {"params": params} if name == "garch" and params is not None else {}
        prices = baseline(close, local, H, **extra)  # (B, H, 3), from the bars up to each origin
        for j, suffix in enumerate(QUANTILE_SUFFIXES):
            frame[f"{name}_{suffix}"] = prices[:, :, j].ravel()
    keep = have.ravel()
    return {c: v[keep] for c, v in frame.items()}


def _origin_of(sym: str, dates: np.ndarray):
    """How the garch baseline's warnings name the origin at an index of ``sym``'s bars."""
    return lambda o: f"origin {_days(dates[o : o + 1])[0]} of {sym}"


def _days(dates: np.ndarray) -> np.ndarray:
    """Session dates as ``YYYY-MM-DD`` text."""
    return np.datetime_as_string(dates.astype("datetime64[D]"), unit="D").astype(object)


def _same_fit(fit, ws, ends: np.ndarray) -> GarchParams | None:
    """The run's garch fit when it is the one the baseline would make on these origins: the
    same first origin and close, and no refit due within them."""
    if fit is None or len(ends) == 0 or len(ends) > GARCH_REFIT_EVERY:
        return None
    first = int(ends.min())
    # relative only: numpy's default absolute tolerance (1e-8) would take a close of 3e-7 revised
    # by 0.1 % for the one the fit was made at, and a revised history of a token priced in
    # millionths would keep a fit of other bars, where the same bars priced in dollars are refitted
    close = ws.close[first]
    same = pd.Timestamp(ws.dates[first]).date() == fit.origin and np.isclose(close, fit.close, rtol=1e-12, atol=0.0)
    return GarchParams(fit.omega, fit.alpha, fit.gamma, fit.beta, fit.nu) if same else None


PLOT_TICKERS = 20
"""The most tickers ``evaluate`` draws plots for unless asked (a plot takes about a tenth of a
second: a universe's would take minutes)."""


def evaluate(
    run_dir: PathLike,
    *,
    source: str | None = None,
    data_dir: PathLike | None = None,
    tickers: str | Iterable[str] | None = None,
    plot: bool | None = False,
    jobs: int = 0,
    lock_timeout: float = 0.0,
) -> EvalReport:
    """Backtest ``run_dir`` and write ``eval/metrics.csv``, ``eval/predictions.csv`` and
    ``eval/lag.csv`` (and plots with ``plot``; None: when at most :data:`PLOT_TICKERS` tickers
    are evaluated); ``jobs`` processes share the tickers (0: one per core this process may use).

    The run's lock is held throughout (LockBusy after ``lock_timeout`` seconds): a training
    rewriting the run, a retrain deleting it or another evaluation of it would otherwise leave
    this one's files in a run that is no longer the one evaluated, or a run folder that had gone."""
    refuse_empty_folders(run_dir=run_dir, data_dir=data_dir, required=("run_dir",))
    path = load_run(run_dir).path  # its errors (no run there, a name whose run is gone) first
    with file_lock(run_lock_path(path), lock_timeout):
        run = load_run(path)  # as it is now that no training may rewrite it
        remove_stale_temp_dirs(path / "eval")  # left by an evaluation killed outright
        return _evaluate(run, run_dir, source, data_dir, tickers, plot, jobs)


def _evaluate(run: Run, run_dir, source, data_dir, tickers, plot, jobs) -> EvalReport:
    """:func:`evaluate` of the loaded ``run``, its lock held."""
    cfg = run.config
    names = run.select(tickers)
    if plot is None:
        plot = len(names) <= PLOT_TICKERS
        if not plot:
            log.info("plots not drawn for %d tickers (more than %d): --plot draws them", len(names), PLOT_TICKERS)
    if POOLED in names:  # a run made before training refused the name
        raise DataError(
            f"{run.path} has a ticker named {POOLED}, the label of metrics.csv's pooled rows: the two could not "
            f"be told apart; evaluate the other tickers by name, or train again without {POOLED}"
        )
    data = DataSource(source or cfg.data.source, Path(data_dir or cfg.data.data_dir))
    out_dir = run.path / "eval"  # the run loaded, even if a promoted name moved since
    # a run folder that cannot be written fails now, not after a long backtest (the folder is
    # made again to write in: one killed during the backtest leaves nothing behind)
    _temp_dir(out_dir).rmdir()
    # arch, seconds to import, is not loaded ahead of the processes: the garch baseline filters
    # with the fit made at training and imports it only where it has to fit
    with _workers(_jobs(jobs, len(names))) as pool:
        done = backtest(run, names, data, pool, keep_closes=plot, asked=bool(tickers))
    report = EvalReport(
        run=run.name,
        model=cfg.model.cell,
        metrics=done.metrics,
        predictions=done.predictions,
        out_dir=out_dir,
        lag=done.lag,
        missing=done.missing,
        median_weight=run.manifest.median_weights(),
        median_alpha=cfg.model.median_alpha,
        asked=bool(tickers),
    )
    _write(report, run, done.closes, plot, done.predictions_csv)
    shown = _as_named(run_dir, report.out_dir)
    report.files = {name: shown / path.relative_to(report.out_dir) for name, path in report.files.items()}
    return report


def _as_named(run_dir: Path, path: Path) -> Path:
    """``path``, a folder of the run loaded from ``run_dir``, in the style the user named the
    run: relative when ``run_dir`` is (a promoted name, ``runs/NAME``, is resolved to an
    absolute path to read the run through), absolute when it is."""
    if Path(run_dir).is_absolute() or not path.is_absolute():
        return path
    return Path(os.path.relpath(path))


@dataclass(frozen=True)
class DataSource:
    """Where a backtest reads its bars (see :func:`~forecaster.store.load_bars`)."""

    source: str
    data_dir: Path


@dataclass
class Backtest:
    """A run's walk-forward predictions, their metrics and lag report, and predictions.csv's
    text (formatted where the predictions were made: on a large universe, seconds of work);
    the tickers left out, each with its ``reason``: bars that end before the test split
    (:data:`ENDED`) or are too few for one origin (:data:`TOO_FEW`), with the last date and
    the split's first, or bars that could not be read (:data:`UNREADABLE`), with the file and
    the error; and, when asked for, each ticker's closes (for the plots)."""

    predictions: pd.DataFrame
    metrics: pd.DataFrame
    lag: pd.DataFrame
    predictions_csv: str
    missing: dict[str, dict[str, str]] = field(default_factory=dict)
    mase_scale: dict[str, float] = field(default_factory=dict)
    closes: dict[str, pd.DataFrame] = field(default_factory=dict)


def backtest(
    run: Run,
    names: list[str],
    data: DataSource,
    pool: Workers | None,
    *,
    keep_closes: bool = False,
    asked: bool = False,
) -> Backtest:
    """Read the bars of ``names``, then :func:`walk_forward`, its
    :func:`~forecaster.metrics.metrics_table` and :func:`lag_report`, the tickers shared among
    the processes of ``pool`` (see :func:`_workers`; None: all here), each reading its own
    tickers' bars. Each ticker is backtested on its own, so the result is the same for any
    number of processes; the pooled rows are computed here, over every ticker's predictions.
    Tickers whose bars end before the test split are named (a warning each, an error each
    with ``asked``: tickers named by the user) and left out."""
    model = run.config.model.cell
    wanted = set(names)
    names = [s for s in run.names if s in wanted]  # walk_forward's order, whatever the order asked
    if pool is None:
        parts = [_backtest_block(_Block(run, names, data, keep_closes))]
    else:
        blocks = _blocks(names, pool.processes)
        parts = pool.map(_backtest_block, [_Block(run, block, data, keep_closes) for block in blocks])
    missing = {s: why for p in parts for s, why in p.missing.items()}
    missing = {s: missing[s] for s in names if s in missing}  # in the run's order, whatever the blocks'
    split_start = run.splits().test_start.date()
    if len(missing) == len(names):
        failed = [f"{s}: {why['error']}" for s, why in missing.items() if why["reason"] in FAILURES]
        if len(failed) > NAMED_FAILURES:  # a universe of tickers in a folder that is not there: one line still
            failed[NAMED_FAILURES:] = [f"and {len(failed) - NAMED_FAILURES} more tickers whose bars could not be read"]
        windowless = {s: why for s, why in missing.items() if why["reason"] not in FAILURES}
        ended = [s for s, why in windowless.items() if why["reason"] == ENDED]
        reasons = [some_reasons({s: _no_origin(s, why, run) for s, why in windowless.items() if s not in ended})]
        if ended:
            reasons.insert(0, f"the bars of {some_names(ended)} end before the run's test split starts ({split_start})")
        if any(reasons):
            failed.append(f"no test windows: {'; '.join(r for r in reasons if r)}")
        raise DataError("; ".join(failed)).with_json(missing=missing)
    windowless = [  # the unreadable ones are errors, named by the caller
        f"{sym}: no test windows: {_no_origin(sym, why, run)}"
        for sym, why in missing.items()
        if why["reason"] not in FAILURES
    ]
    log_some(logging.ERROR if asked else logging.WARNING, windowless, "tickers without test windows")
    done = [p for p in parts if len(p.predictions)]
    if not done:
        raise _no_test_windows(run)
    pred = pd.concat([p.predictions for p in done], ignore_index=True)
    mase_scale = {s: v for p in parts for s, v in p.mase_scale.items()}
    pooled = metrics_table(pred, model, mase_scale, per_ticker=False)
    return Backtest(
        predictions=pred,
        metrics=sort_metrics(pd.concat([*(p.metrics for p in done), pooled], ignore_index=True), model),
        lag=pd.concat([p.lag for p in done], ignore_index=True),
        predictions_csv=to_csv_text(pred.iloc[:0][PREDICTION_COLUMNS]) + "".join(p.predictions_csv for p in done),
        missing=missing,
        mase_scale=mase_scale,
        closes={s: c for p in parts for s, c in p.closes.items()},
    )


def _no_origin(sym: str, why: dict[str, str], run: Run) -> str:
    """Why ``sym`` has no test window: its bars end before the test split, or (ending in it)
    are too few for one forecast that has an actual."""
    if why["last_date"] < why["split_start"]:
        return f"its bars end {why['last_date']}, before the test split starts ({why['split_start']})"
    lookback = run.config.window.lookback
    return (
        f"its bars (to {why['last_date']}) are too few for one forecast with an actual: that takes at least "
        f"{lookback + 2} bars (lookback {lookback}, one before them for the first return, one after the origin)"
    )


def _jobs(jobs: int, n_tickers: int) -> int:
    """Processes for a backtest of ``n_tickers``: ``jobs`` (0: one per usable core), fewer when
    some would get less than :data:`MIN_TICKERS_PER_JOB` tickers."""
    return processes_for(jobs, n_tickers, MIN_TICKERS_PER_JOB)


@dataclass(frozen=True)
class _Block:
    """Some of a backtest's tickers, backtested together by :func:`_backtest_block`."""

    run: Run
    names: list[str]
    data: DataSource
    keep_closes: bool


def _backtest_block(block: _Block) -> Backtest:
    """One block: its bars read, its tickers without test windows named, and the others'
    predictions, per-ticker metrics, lag rows and predictions.csv rows (no header); empty
    frames when none has a test window."""
    run = block.run
    bars, unreadable = _read_bars(block.data, block.names)
    splits = run.splits()
    missing = {s: {"reason": ENDED, **why} for s, why in ending_before(bars, splits.test_start).items()}
    present = {s: df for s, df in bars.items() if s not in missing}
    mase_scale = _mase_scales(bars, splits.val_start)
    closes = {s: df[["close"]] for s, df in present.items()} if block.keep_closes else {}
    # fewer bars than one forecast with an actual takes: named below, not given to the windows,
    # which refuse a ticker shorter than a window as an error that would stop the others
    enough = {s: df for s, df in present.items() if len(df) >= run.config.window.lookback + 2}
    pred = _walk_forward(run, enough) if enough else None
    forecast = set() if pred is None else set(pred["ticker"].unique())
    for sym in present.keys() - forecast:  # bars into the test split, but too few for one origin
        missing[sym] = {
            "reason": TOO_FEW,
            "last_date": str(present[sym].index[-1].date()),
            "split_start": str(splits.test_start.date()),
        }
    if pred is not None:
        pred = _without_unusable_forecasts(pred, missing)
    missing |= unreadable
    if pred is None:
        empty = pd.DataFrame()
        return Backtest(empty, empty, empty, "", missing, mase_scale, closes)
    return Backtest(
        predictions=pred,
        metrics=metrics_table(pred, run.config.model.cell, mase_scale, pooled=False),
        lag=lag_report(pred),
        predictions_csv=to_csv_text(pred[PREDICTION_COLUMNS], header=False),
        missing=missing,
        mase_scale=mase_scale,
        closes=closes,
    )


def _without_unusable_forecasts(pred: pd.DataFrame, missing: dict) -> pd.DataFrame | None:
    """``pred`` without the tickers some of whose forecasts are not finite positive prices (a
    network or interval scale that overflows), each added to ``missing`` as a failure, as predict
    fails them: a report never holds an infinite, empty or zero price. None when none is left."""
    bad = ~are_prices(pred[["p10", "p50", "p90"]].to_numpy(dtype=float)).all(axis=1)
    if not bad.any():
        return pred
    for sym in pd.unique(pred["ticker"][bad]):
        missing[sym] = {"reason": NOT_FINITE, "error": NOT_A_PRICE}
    pred = pred[~pred["ticker"].isin(missing)].reset_index(drop=True)
    return pred if len(pred) else None


def _read_bars(data: DataSource, names: list[str]) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, str]]]:
    """The bars of each of ``names`` that can be read, and, for each of the others (no file, an
    unreadable one, bad bars), the file and the error, with the reason :data:`UNREADABLE`."""
    bars, failed = {}, {}
    where = csv_file if data.source == "csv" else store_path
    for sym in names:
        try:
            bars |= load_bars(data.source, data.data_dir, [sym], until_today=True)
        except DataError as exc:
            error = str(exc).removeprefix(f"{sym}: ")  # the ticker is named once, by the caller
            file = str(where(data.data_dir, sym))
            if file not in error:  # a bad bar is named by its date and column: say in which file
                error = f"{error}, in {file}"
            failed[sym] = {"reason": UNREADABLE, "file": file, "error": error}
    return bars, failed


def _mase_scales(bars: dict[str, pd.DataFrame], val_start: pd.Timestamp) -> dict[str, float]:
    """MASE denominators: each ticker's one-step naive MAE over its training split."""
    return {s: naive_scale(df["close"][df.index < val_start].to_numpy()) for s, df in bars.items()}


def _temp_dir(out_dir: Path) -> Path:
    """The temporary folder beside ``out_dir`` that the evaluation is written into."""
    try:
        return sibling_temp_dir(out_dir)
    except OSError as exc:
        raise _write_error(exc, out_dir) from None


def _write_error(exc: OSError, out_dir: Path, *, replacing: bool = False) -> ForecasterError:
    """The error of an evaluation that could not be written to ``out_dir``, and what is left
    (not said when it failed ``replacing`` the previous one: the new one may be in place)."""
    why = exc.strerror or exc
    if replacing:
        return ForecasterError(f"cannot put the evaluation in place at {out_dir}: {why}")
    left = "the previous evaluation is kept as it was" if out_dir.is_dir() else "nothing was written"
    return ForecasterError(f"cannot write the evaluation to {out_dir}: {why}; {left}")


def _write(report: EvalReport, run: Run, closes: dict[str, pd.DataFrame], plot: bool, predictions_csv: str) -> None:
    """Write the evaluation into a temporary folder that replaces eval/ whole at the end, so a
    failure (a full disk) leaves the previous evaluation as it was; a plot that cannot be drawn
    is named in a warning and left out."""
    out_dir = report.out_dir
    tmp = _temp_dir(out_dir)
    replacing = False
    try:
        write_csv(report.metrics, tmp / "metrics.csv")
        atomic_write_text(tmp / "predictions.csv", predictions_csv)
        write_csv(report.lag, tmp / "lag.csv")
        if plot:
            # matplotlib costs a second to import: only when plots are asked for
            from .plots import plot_report

            plot_report(report, run, closes, tmp / "plots")
        publish_files(tmp)
        replacing = True
        replace_dir(tmp, out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _write_error(exc, out_dir, replacing=replacing) from None
        raise
    report.files = {name: out_dir / f"{name}.csv" for name in ("metrics", "predictions", "lag")}
    if plot and (out_dir / "plots").is_dir():
        report.files["plots"] = out_dir / "plots"
