"""Forecast the next H trading sessions for every ticker of a run, and write the forecast CSV.

Freshness: without ``offline`` the store is refreshed first; a ticker whose refresh fails falls
back to its stored bars when the last one is at most ``max_staleness`` sessions behind the
latest completed session, and fails otherwise.

Unattended runs: the arguments are checked before anything is fetched or written; the
output folder ``OUT/<run>/`` is locked (``.lock``) for the whole refresh-and-write, so an
overlapping run waits ``lock_timeout`` seconds and then exits 75 naming the holder; both CSV
files are written to a temp name and renamed, the dated file first, then ``latest.csv``.

The network runs in numpy (:mod:`forecaster.npinfer`): forecasting never imports torch.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import (
    ConfigError,
    DataError,
    ForecasterError,
    PartialFailure,
    RunFormatError,
    TemporaryFailure,
)
from .windows import VOL_HALFLIFE

log = logging.getLogger("forecaster")

VOL_WARMUP = 50 * VOL_HALFLIFE
"""Bars kept before the last window: the volatility average's start then weighs 2**-50."""

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


def _age_note(last: pd.Timestamp, cut, now, calendar: str) -> tuple[int, str]:
    """How far the last bar lags the as-of date, or else the latest completed session."""
    from .sessions import last_completed_session, sessions_after_count

    ref = cut if cut is not None else last_completed_session(now, calendar)
    behind = sessions_after_count(last, ref, calendar)
    what = f"--as-of {ref.date()}" if cut is not None else f"the latest completed session ({ref.date()})"
    return behind, f"last bar {last.date()}, {behind} session(s) before {what}"


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
        except DataError as exc:
            stored = "nothing is stored" if "no stored data" in str(exc) else f"stored bars unusable: {exc}"
            bad[sym] = f"refresh failed ({reason}) and {stored}"
        else:
            behind = sessions_after_count(last, latest, cfg_calendar)
            if behind > max_staleness:
                bad[sym] = (
                    f"refresh failed ({reason}); stored bars end {last.date()}, "
                    f"{behind} sessions behind (max {max_staleness})"
                )
            else:
                report.warnings.append(
                    f"{sym}: refresh failed ({reason}); using stored bars "
                    f"up to {last.date()} ({behind} sessions behind)"
                )
                continue
        if result.kinds.get(sym) in ("network", "rate_limit"):
            report.network_failed.add(sym)
    return bad


def _shown(value: object, limit: int = 40) -> str:
    text = str(value)
    return ascii(text[:limit]) + ("..." if len(text) > limit else "")


def parse_as_of(as_of: str | date | None, now: pd.Timestamp | None = None) -> pd.Timestamp | None:
    """``--as-of`` as a session date; ConfigError (exit 1) for a non-date or a future date.

    A string must be YYYY-MM-DD; a ``datetime.date`` / ``pd.Timestamp`` is taken at its date.
    """
    if as_of is None:
        return None
    if isinstance(as_of, date):  # datetime and pd.Timestamp are dates too
        day = pd.Timestamp(as_of)
        day = (day.tz_localize(None) if day.tzinfo else day).normalize()
    else:
        text = str(as_of).strip()
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                raise ValueError(text)
            day = pd.Timestamp(date.fromisoformat(text))
        except ValueError:
            raise ConfigError(f"--as-of {_shown(as_of)} is not a date; expected YYYY-MM-DD") from None
    if day > _utc(now).tz_localize(None).normalize():
        raise ConfigError(f"--as-of {day.date()} is in the future")
    return day


_RESERVED_NAMES = {"", ".", ".."}


def _checked_run_name(name: object, run_dir: Path) -> str:
    """The run's name, used as a folder under OUT: one plain path component, nothing else."""
    if (
        not isinstance(name, str)
        or name in _RESERVED_NAMES
        or len(name.encode()) > 200
        or any(ch in name for ch in "/\\\0")
        or not name.isprintable()
    ):
        raise RunFormatError(
            f"{run_dir}: run.json has an unusable run name {_shown(name)}; it must be a plain folder name"
        )
    return name


def _load(run_dir: Path):
    """load_run_numpy, with a malformed run.json (wrong types, odd shapes) as a RunFormatError."""
    from .checkpoint import load_run_numpy

    try:
        run = load_run_numpy(run_dir)
        _checked_run_name(run.meta.get("name"), run_dir)
        run.names  # noqa: B018 - touch the parts predict relies on
        run.scalers()
        run.splits()
        run.conformal()
    except ForecasterError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        raise RunFormatError(f"{run_dir}: run.json is malformed ({type(exc).__name__}: {_shown(exc, 80)})") from None
    return run


def _write_error(exc: OSError, where: Path) -> ForecasterError:
    reason = exc.strerror or type(exc).__name__
    return ForecasterError(f"cannot write forecasts to {where}: {reason}; earlier forecast files are unchanged")


def predict(
    run_dir: Path,
    *,
    as_of: str | None = None,
    out: Path | None = None,
    offline: bool = False,
    source: str | None = None,
    data_dir: Path | None = None,
    tickers: list[str] | None = None,
    max_staleness: int | None = None,
    now: pd.Timestamp | None = None,
    session=None,
    lock_timeout: float = 0.0,
) -> ForecastReport:
    """Forecast from ``run_dir`` and write ``OUT/<run>/<as_of>.csv`` and ``latest.csv``.

    Raises PartialFailure (exit 3) when some tickers failed but others were written,
    TemporaryFailure (exit 75) when every ticker failed for network reasons or another run
    holds the output lock for more than ``lock_timeout`` seconds, and a ForecasterError
    (exit 1) for anything else; in those last two cases nothing is written.
    """
    from .evaluation import interval
    from .fsio import file_lock, remove_stale_temps
    from .npinfer import predict_scaled
    from .outputs import write_csv
    from .sessions import next_sessions
    from .store import load_bars
    from .tickers import validate_ticker
    from .windows import build_windows

    cut = parse_as_of(as_of, now)
    if source not in (None, "yahoo", "csv"):
        raise ConfigError(f"unknown source {_shown(source)}; expected 'yahoo' or 'csv'")
    requested = [validate_ticker(t) for t in tickers] if tickers else None
    run = _load(Path(run_dir))
    cfg = run.config
    source = source or cfg.data.source
    data_dir = Path(data_dir or cfg.data.data_dir)
    out = Path(out or cfg.predict.out)
    staleness = cfg.predict.max_staleness if max_staleness is None else max_staleness
    names = list(dict.fromkeys(requested)) if requested else run.names
    unknown = [t for t in names if t not in run.meta["tickers"]]
    if unknown:
        raise DataError(f"the run was not trained on {', '.join(unknown)}; it knows {', '.join(run.names)}")
    report = ForecastReport(run=run.name, as_of="", forecasts=pd.DataFrame(columns=FORECAST_COLUMNS))
    target = out / run.name
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(exc, target) from None
    with file_lock(target / ".lock", lock_timeout):
        remove_stale_temps(target)
        failed: dict[str, str] = {}
        if source == "yahoo" and not offline:
            failed.update(_refresh(names, data_dir, cfg.data.calendar, staleness, now, session, lock_timeout, report))
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
                failed[sym] = (
                    f"only {len(df)} bars up to {df.index[-1].date()}, need "
                    f"{cfg.window.lookback + 1} for lookback {cfg.window.lookback}"
                )
                continue
            bars[sym] = df.iloc[-(cfg.window.lookback + 1 + VOL_WARMUP) :]
        report.failed = failed
        if not bars:
            msg = "no forecast written: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
            if failed and set(failed) <= report.network_failed:
                raise TemporaryFailure(msg)
            raise DataError(msg)
        frame = _forecast(
            run,
            bars,
            cut,
            offline or source == "csv",
            now,
            report,
            build_windows,
            predict_scaled,
            interval,
            next_sessions,
        )
        report.forecasts = frame
        # The dated file first, then latest.csv: a consumer that sees the new latest.csv can
        # always find the dated file it came from.
        for key, path in (("forecast", target / f"{report.as_of}.csv"), ("latest", target / "latest.csv")):
            try:
                report.files[key] = write_csv(frame, path)
            except OSError as exc:
                raise _write_error(exc, path) from None
    if failed:
        raise PartialFailure(
            f"{len(failed)} of {len(names)} tickers failed: " + ", ".join(failed), failed=failed, result=report
        )
    return report


def _forecast(
    run, bars, cut, note_age, now, report, build_windows, predict_scaled, interval, next_sessions
) -> pd.DataFrame:
    """The forecast rows (SPEC §7) for the tickers in ``bars``; sets ``report.as_of``."""
    from .evaluation import forecast_scales

    cfg = run.config
    scalers = run.scalers()
    ws = build_windows(
        bars,
        cfg.window.lookback,
        cfg.window.horizon,
        run.splits(),
        scalers={s: scalers[s] for s in bars},
        tickers=run.names,
    )
    ends = ws.offsets[1:] - 1  # last row of each present ticker
    scaled = predict_scaled(run.model, ws, ends, cfg.model.strategy)
    scale = forecast_scales(run.meta["tickers"], ws, ends)
    lo, med, hi = interval(scaled, ws, ends, run.conformal(), run.model.median_index, scale)
    H = ws.horizon
    last_dates = pd.DatetimeIndex(ws.dates[ends])
    file_as_of = (cut or last_dates.max()).date()
    rows = []
    sessions: dict = {}  # next sessions and age note per distinct last date (most tickers share one)
    for i, sym in enumerate(ws.tickers):
        last = last_dates[i]
        if last not in sessions:
            sessions[last] = next_sessions(last, H, cfg.data.calendar)
        dates = sessions[last]
        c = float(ws.close[ends[i]])
        for h in range(H):
            rows.append(
                {
                    "ticker": sym,
                    "as_of": str(last.date()),
                    "step": h + 1,
                    "date": str(pd.Timestamp(dates[h]).date()),
                    "last_close": c,
                    "p10": c * float(np.exp(lo[i, h])),
                    "p50": c * float(np.exp(med[i, h])),
                    "p90": c * float(np.exp(hi[i, h])),
                    "model": cfg.model.cell,
                    "run": run.name,
                }
            )
        if note_age:
            key = ("age", last)
            if key not in sessions:
                sessions[key] = _age_note(last, cut, now, cfg.data.calendar)
            behind, note = sessions[key]
            (report.warnings if behind > 0 else report.notes).append(f"{sym}: {note}")
    report.as_of = str(file_as_of)
    return pd.DataFrame(rows, columns=FORECAST_COLUMNS)
