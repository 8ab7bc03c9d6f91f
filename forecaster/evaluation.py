"""Walk-forward evaluation of a run on its held-out test split, against naive baselines.

At every origin in the test period the model forecasts H sessions with data up to the origin
only (the window's inputs end there); the forecasts are compared with the actual closes, and so
are the naive (random walk), drift and historical-mean baselines.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

log = logging.getLogger("forecaster")

PREDICTION_COLUMNS = ["ticker", "origin", "step", "date", "actual", "p10", "p50", "p90", "naive"]


LAG_R2 = 0.95  # above this (with a slope within 0.05 of 1) the forecast is flagged as a copy of the last close


@dataclass
class EvalReport:
    run: str
    model: str
    metrics: pd.DataFrame
    predictions: pd.DataFrame  # with the extra columns last_close, drift, mean
    out_dir: Path
    lag: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: dict[str, Path] = field(default_factory=dict)

    def overall(self) -> pd.DataFrame:
        """The pooled (ticker ALL) rows."""
        return self.metrics[self.metrics["ticker"] == "ALL"]

    def verdict(self, alpha: float = 0.05) -> tuple[bool, str]:
        """(beats_naive, sentence): does the model beat naive at every step, significantly?"""
        m = self.overall()
        mine = m[m["model"] == self.model]
        lines, ok = [], True
        for _, r in mine.iterrows():
            sig = pd.notna(r["dm_pvalue"]) and r["dm_pvalue"] < alpha
            better = pd.notna(r["skill"]) and r["skill"] > 0
            ok &= bool(sig and better)
            if not better:
                lines.append(f"h={int(r['step'])}: worse than naive (skill {r['skill']:+.2%})")
            elif not sig:
                lines.append(
                    f"h={int(r['step'])}: not significantly better than naive "
                    f"(skill {r['skill']:+.2%}, DM p={r['dm_pvalue']:.3f})"
                )
        if ok:
            return True, f"The model beats the naive forecast at every step (DM p < {alpha})."
        return False, (
            "The model does NOT beat the naive (random-walk) forecast: " + "; ".join(lines) + ". Do not trade on it."
        )


def lag_report(pred: pd.DataFrame) -> pd.DataFrame:
    """Per ticker: how much of the one-step forecast's movement is the last observed move.

    Between consecutive origins, the change of the median forecast is regressed on the change of
    the last close. A forecast that is "the last value shifted forward" has slope ~1 and
    R^2 ~1: its movement is explained entirely by what already happened, and it carries nothing
    the naive forecast does not. Flagged when R^2 > 0.95 and the slope is within 0.05 of 1.
    """
    from .metrics import lag_share

    rows = []
    for sym, p in pred[pred["step"] == 1].groupby("ticker", sort=False):
        p = p.sort_values("origin")
        slope, r2 = lag_share(p["p50"].diff().to_numpy()[1:], p["last_close"].diff().to_numpy()[1:])
        flagged = bool(r2 > LAG_R2 and abs(slope - 1) < 0.05)
        rows.append({"ticker": sym, "slope": slope, "r2": r2, "copies_last_value": flagged})
    return pd.DataFrame(rows, columns=["ticker", "slope", "r2", "copies_last_value"])


def walk_forward(run, bars: dict[str, pd.DataFrame], track: bool = True) -> pd.DataFrame:
    """One row per (ticker, origin, step) over the test split of ``run``: every session of the
    test split is the origin's next session once; steps past the last bar are left out.

    ``track=False`` keeps the validation scales for the whole split (no online tracking), to
    show what the split-conformal calibration alone would have given."""
    from .baselines import drift, mean, naive
    from .inference import predict_scaled
    from .windows import build_windows

    cfg = run.config
    ws = build_windows(
        bars,
        cfg.window.lookback,
        cfg.window.horizon,
        run.splits(),
        scalers={s: v for s, v in run.scalers().items() if s in bars},
        tickers=run.names,
    )
    ends = ws.origins("test")
    if len(ends) == 0:
        raise DataError(
            "no test windows: the data end before the run's test split "
            f"(starting {run.splits().test_start.date()}) has {cfg.window.horizon} sessions"
        )
    scaled = predict_scaled(run.model, ws, ends, cfg.model.strategy)
    q = cfg.model.quantiles
    scale = (
        online_scales(scaled, ws, ends, run.conformal(), run.model.median_index, coverage=q[-1] - q[0])[0]
        if track
        else None
    )
    lo, med, hi = interval(scaled, ws, ends, run.conformal(), run.model.median_index, scale)
    H = ws.horizon
    tid = ws.ticker_id[ends]
    close_o = ws.close[ends]
    parts = []
    for k, sym in enumerate(ws.tickers):
        first = ws.offsets[k]
        sel = np.nonzero(tid == ws.names.index(sym))[0]
        if len(sel) == 0:
            continue
        local = ends[sel] - first
        close = ws.close[first : ws.offsets[k + 1]]
        base = {"naive": naive(close, local, H), "drift": drift(close, local, H), "mean": mean(close, local, H)}
        fut = ends[sel][:, None] + np.arange(1, H + 1)
        have = fut < ws.offsets[k + 1]  # steps whose actual exists (the last origins lack some)
        fut = np.minimum(fut, ws.offsets[k + 1] - 1)
        frame = {
            "ticker": np.repeat(sym, len(sel) * H),
            "origin": np.repeat(ws.dates[ends[sel]], H),
            "step": np.tile(np.arange(1, H + 1), len(sel)),
            "date": ws.dates[fut].ravel(),
            "actual": ws.close[fut].ravel(),
            "last_close": np.repeat(close_o[sel], H),
        }
        for name, arr in (("p10", lo), ("p50", med), ("p90", hi)):
            frame[name] = (close_o[sel][:, None] * np.exp(arr[sel])).ravel()
        for name, arr in base.items():
            frame[name] = arr.ravel()
        parts.append(pd.DataFrame(frame)[have.ravel()])
    pred = pd.concat(parts, ignore_index=True)
    pred["origin"] = pd.to_datetime(pred["origin"]).dt.date.astype(str)
    pred["date"] = pd.to_datetime(pred["date"]).dt.date.astype(str)
    return pred


def static_scales(ws, ends: np.ndarray, conformal: dict[str, list[float]]) -> np.ndarray:
    """(B, H) validation-split conformal scales of the windows ending at ``ends`` (1.0 for a
    ticker the run has none for)."""
    H = ws.horizon
    scale = np.ones((len(ws.names), H))
    for i, s in enumerate(ws.names):
        vals = conformal.get(s) or []
        if len(vals) == H:
            scale[i] = vals
    return scale[ws.ticker_id[ends]]


def forecast_scales(tickers: dict[str, dict], ws, ends: np.ndarray) -> np.ndarray:
    """(B, H) interval scales for forecasts from the windows ending at ``ends``, from run.json's
    ``tickers`` entries: the online scale the run tracked up to the ticker's last bar
    (``conformal_online``) for an origin on or after that bar, else the validation scale (an
    origin inside the run's own data must not use what was realised after it)."""
    scale = static_scales(ws, ends, {s: t.get("conformal") for s, t in tickers.items()})
    H = ws.horizon
    for b, e in enumerate(ends):
        t = tickers.get(ws.names[ws.ticker_id[e]]) or {}
        online, last = t.get("conformal_online"), t.get("last_date")
        if (
            isinstance(online, list)
            and len(online) == H
            and isinstance(last, str)
            and np.datetime64(ws.dates[e], "D") >= np.datetime64(last, "D")
        ):
            scale[b] = online
    return scale


def interval(
    scaled: np.ndarray,
    ws,
    ends: np.ndarray,
    conformal: dict[str, list[float]],
    median_index: int,
    scale: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated (lo, median, hi) cumulative log returns, each (B, H): the model's half-widths
    around its median, times the conformal scale and the local volatility at the origin.

    ``scale`` (B, H) overrides the run's validation scales (``conformal``), e.g. with the
    online ones of :func:`online_scales`."""
    from .intervals import apply_scales

    if scale is None:
        scale = static_scales(ws, ends, conformal)
    med = scaled[:, :, median_index]
    lo, hi = apply_scales(scaled[:, :, 0], med, scaled[:, :, -1], scale, ws.vol[ends][:, None])
    s = ws.tscale[ws.ticker_id[ends]]  # (B, H)
    return lo * s, med * s, hi * s


def online_scales(
    scaled: np.ndarray, ws, ends: np.ndarray, conformal: dict[str, list[float]], median_index: int, coverage: float
) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Walk-forward interval scales: each ticker's and step's scale starts at its validation
    value at the first origin and is then tracked online (:func:`intervals.track_scales`) from
    the misses already realised at each origin, so no origin's interval uses its own future.

    ``ends`` must hold, per ticker, consecutive sessions in time order (``ws.origins(...)``).
    Returns the (B, H) scales of ``ends`` and, per ticker, the scales for a forecast from the
    session after its last origin (its last bar, when the origins are ``origins("test")``).
    """
    from .intervals import scale_scores, track_scales

    H = ws.horizon
    B = len(ends)
    tid = ws.ticker_id[ends]
    start = static_scales(ws, ends, conformal)  # (B, H)
    # actuals in the model's units; NaN where the step runs past the ticker's last bar
    fut = ends[:, None] + np.arange(1, H + 1)  # (B, H)
    last_row = ws.offsets[1:][np.searchsorted(ws.offsets[1:], ends, side="right")] - 1
    have = fut <= last_row[:, None]
    actual = np.full((B, H), np.nan)
    safe = np.minimum(fut, last_row[:, None])
    actual[have] = ((ws.log_close[safe] - ws.log_close[ends][:, None]) / ws.tscale[tid])[have]
    med = scaled[:, :, median_index]
    scores = scale_scores(
        actual, scaled[:, :, 0], med, scaled[:, :, -1], np.broadcast_to(ws.vol[ends][:, None], (B, H))
    ).reshape(B, H)
    # align tickers by position: row p of column block k is ticker k's p-th origin
    order = np.lexsort((ends, tid))
    ids, first, counts = np.unique(tid[order], return_index=True, return_counts=True)
    pos = np.empty(B, np.int64)
    pos[order] = np.arange(B) - np.repeat(first, counts)
    col = np.searchsorted(ids, tid)
    n = int(counts.max()) if B else 0
    grid = np.full((n, len(ids), H), np.nan)
    grid[pos, col] = scores
    begin = np.ones((len(ids), H))
    begin[col[order[first]]] = start[order[first]]
    tracked = track_scales(
        grid.reshape(n, -1), begin.ravel(), np.tile(np.arange(1, H + 1), len(ids)), coverage=coverage
    ).reshape(n + 1, len(ids), H)
    final = {ws.names[i]: [float(v) for v in tracked[c, k]] for k, (i, c) in enumerate(zip(ids, counts))}
    return tracked[pos, col], final


def evaluate(
    run_dir: Path,
    *,
    source: str | None = None,
    data_dir: Path | None = None,
    tickers: list[str] | None = None,
    plot: bool = False,
) -> EvalReport:
    """Backtest ``run_dir`` and write ``eval/metrics.csv`` and ``eval/predictions.csv``."""
    from .baselines import naive_scale
    from .checkpoint import load_run
    from .fsio import publish_files, replace_dir, sibling_temp_dir
    from .metrics import metrics_table
    from .outputs import write_csv
    from .store import load_bars
    from .tickers import validate_ticker

    run = load_run(run_dir)
    cfg = run.config
    names = [validate_ticker(t) for t in tickers] if tickers else run.names
    unknown = [t for t in names if t not in run.meta["tickers"]]
    if unknown:
        raise DataError(f"the run was not trained on {', '.join(unknown)}; it knows {', '.join(run.names)}")
    bars = load_bars(source or cfg.data.source, Path(data_dir or cfg.data.data_dir), names)
    pred = walk_forward(run, bars)
    splits = run.splits()
    scale = {}
    for sym in names:
        train_close = bars[sym]["close"][bars[sym].index < splits.val_start].to_numpy()
        scale[sym] = naive_scale(train_close)
    model_name = cfg.model.cell
    metrics = metrics_table(pred, model_name, scale)
    out_dir = Path(run_dir) / "eval"
    # everything is written into a temporary folder that replaces eval/ whole at the end,
    # so a failure (a plot, a full disk) leaves the previous evaluation as it was
    tmp = sibling_temp_dir(out_dir)
    report = EvalReport(
        run=run.name, model=model_name, metrics=metrics, predictions=pred, out_dir=tmp, lag=lag_report(pred)
    )
    try:
        write_csv(metrics, tmp / "metrics.csv")
        write_csv(pred[PREDICTION_COLUMNS], tmp / "predictions.csv")
        write_csv(report.lag, tmp / "lag.csv")
        if plot:
            from .plots import plot_report

            plot_report(report, run, bars)
        publish_files(tmp)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.out_dir = out_dir
    report.files = {name: out_dir / f"{name}.csv" for name in ("metrics", "predictions", "lag")}
    if plot:
        report.files["plots"] = out_dir / "plots"
    return report
