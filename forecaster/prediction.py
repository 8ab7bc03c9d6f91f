"""Forecast the next H trading sessions for every ticker of a run, and write the forecast CSV.

Freshness: without ``offline`` the store is refreshed first; a ticker whose refresh fails falls
back to its stored bars when the last one is at most ``max_staleness`` sessions behind the
latest completed session, and fails otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, ForecasterError, PartialFailure, TemporaryFailure

log = logging.getLogger("forecaster")

FORECAST_COLUMNS = ["ticker", "as_of", "step", "date", "last_close", "p10", "p50", "p90", "model", "run"]


@dataclass
class ForecastReport:
    run: str
    as_of: str
    forecasts: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    network_failed: set[str] = field(default_factory=set)


def _utc(now: pd.Timestamp | None) -> pd.Timestamp:
    if now is None:
        return pd.Timestamp.now(tz="UTC")
    return now.tz_convert("UTC") if now.tzinfo else now.tz_localize("UTC")


def _age_note(sym: str, last: pd.Timestamp, cut, now, calendar: str) -> tuple[int, str]:
    """How far the last bar lags the as-of date, or else the latest completed session."""
    from .sessions import last_completed_session, sessions_after_count

    ref = cut if cut is not None else last_completed_session(now, calendar)
    behind = sessions_after_count(last, ref, calendar)
    what = f"--as-of {ref.date()}" if cut is not None else f"the latest completed session ({ref.date()})"
    return behind, f"{sym}: last bar {last.date()}, {behind} session(s) before {what}"


def _refresh(names, data_dir, cfg_calendar, max_staleness, now, session, lock_timeout, report):
    """Update the store; return the tickers that must fail (stale and not refreshed)."""
    from .sessions import last_completed_session, sessions_after_count
    from .store import download, load_store

    result = download(names, data_dir, session=session, lock_timeout=lock_timeout)
    latest = last_completed_session(now, cfg_calendar)
    bad: dict[str, str] = {}
    for sym, reason in result.failed.items():
        try:
            last = load_store(data_dir, sym).index[-1]
        except DataError:
            bad[sym] = f"refresh failed ({reason}) and nothing is stored"
        else:
            behind = sessions_after_count(last, latest, cfg_calendar)
            if behind > max_staleness:
                bad[sym] = (f"refresh failed ({reason}); stored bars end {last.date()}, "
                            f"{behind} sessions behind (max {max_staleness})")
            else:
                report.warnings.append(f"{sym}: refresh failed ({reason}); using stored bars "
                                       f"up to {last.date()} ({behind} sessions behind)")
                continue
        if result.kinds.get(sym) in ("network", "rate_limit"):
            report.network_failed.add(sym)
    return bad


def predict(run_dir: Path, *, as_of: str | None = None, out: Path | None = None,
            offline: bool = False, source: str | None = None, data_dir: Path | None = None,
            tickers: list[str] | None = None, max_staleness: int | None = None,
            now: pd.Timestamp | None = None, session=None, lock_timeout: float = 0.0) -> ForecastReport:
    """Forecast from ``run_dir`` and write ``OUT/<run>/<as_of>.csv`` and ``latest.csv``.

    Raises PartialFailure (exit 3) when some tickers failed but others were written, and
    TemporaryFailure (exit 75) when every ticker failed for network reasons.
    """
    from .checkpoint import load_run
    from .evaluation import interval
    from .fsio import file_lock
    from .inference import predict_scaled
    from .outputs import write_csv
    from .sessions import next_sessions
    from .store import load_bars
    from .tickers import validate_ticker
    from .windows import build_windows

    run = load_run(run_dir)
    cfg = run.config
    source = source or cfg.data.source
    data_dir = Path(data_dir or cfg.data.data_dir)
    out = Path(out or cfg.predict.out)
    staleness = cfg.predict.max_staleness if max_staleness is None else max_staleness
    names = [validate_ticker(t) for t in tickers] if tickers else run.names
    unknown = [t for t in names if t not in run.meta["tickers"]]
    if unknown:
        raise DataError(f"the run was not trained on {', '.join(unknown)}; it knows "
                        f"{', '.join(run.names)}")
    report = ForecastReport(run=run.name, as_of="", forecasts=pd.DataFrame(columns=FORECAST_COLUMNS))
    failed: dict[str, str] = {}
    if source == "yahoo" and not offline:
        failed.update(_refresh(names, data_dir, cfg.data.calendar, staleness, now, session,
                               lock_timeout, report))
    cut = pd.Timestamp(as_of).normalize() if as_of else None
    if cut is not None and cut > _utc(now).tz_localize(None).normalize():
        raise DataError(f"--as-of {cut.date()} is in the future")
    bars: dict[str, pd.DataFrame] = {}
    for sym in names:
        if sym in failed:
            continue
        try:
            df = load_bars(source, data_dir, [sym])[sym]
        except ForecasterError as e:
            failed[sym] = str(e)
            continue
        if cut is not None:
            df = df[df.index <= cut]
            if len(df) == 0:
                failed[sym] = f"no bars on or before --as-of {cut.date()}"
                continue
        if len(df) < cfg.window.lookback + 1:
            failed[sym] = (f"only {len(df)} bars up to {df.index[-1].date()}, need "
                           f"{cfg.window.lookback + 1} for lookback {cfg.window.lookback}")
            continue
        bars[sym] = df
    report.failed = failed
    if not bars:
        msg = "no forecast written: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
        if failed and set(failed) <= report.network_failed:
            raise TemporaryFailure(msg)
        raise DataError(msg)
    scalers = run.scalers()
    ws = build_windows(bars, cfg.window.lookback, cfg.window.horizon, run.splits(),
                       scalers={s: scalers[s] for s in bars}, tickers=run.names)
    ends = ws.offsets[1:] - 1  # last row of each present ticker
    scaled = predict_scaled(run.model, ws, ends, cfg.model.strategy)
    lo, med, hi = interval(scaled, ws, ends, run.conformal(), run.model.median_index)
    H = ws.horizon
    last_dates = pd.DatetimeIndex(ws.dates[ends])
    file_as_of = (cut or last_dates.max()).date()
    rows = []
    for i, sym in enumerate(ws.tickers):
        last = last_dates[i]
        dates = next_sessions(last, H, cfg.data.calendar)
        c = float(ws.close[ends[i]])
        for h in range(H):
            rows.append({"ticker": sym, "as_of": str(last.date()), "step": h + 1,
                         "date": str(pd.Timestamp(dates[h]).date()), "last_close": c,
                         "p10": c * float(np.exp(lo[i, h])), "p50": c * float(np.exp(med[i, h])),
                         "p90": c * float(np.exp(hi[i, h])), "model": cfg.model.cell,
                         "run": run.name})
        if offline or source == "csv":
            behind, note = _age_note(sym, last, cut, now, cfg.data.calendar)
            (report.warnings if behind > 0 else report.notes).append(note)
    frame = pd.DataFrame(rows, columns=FORECAST_COLUMNS)
    report.as_of = str(file_as_of)
    report.forecasts = frame
    target = out / run.name
    target.mkdir(parents=True, exist_ok=True)
    with file_lock(target / ".lock", lock_timeout):
        report.files["forecast"] = write_csv(frame, target / f"{file_as_of}.csv")
        report.files["latest"] = write_csv(frame, target / "latest.csv")
    if failed:
        raise PartialFailure(f"{len(failed)} of {len(names)} tickers failed: "
                             + ", ".join(failed), failed=failed, result=report)
    return report
