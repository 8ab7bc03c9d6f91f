"""Forecast the next H trading sessions for every ticker of a run, and write the forecast CSV.

Freshness: without ``offline`` the store is refreshed first; a ticker whose refresh fails falls
back to its stored bars when the last one is at most ``max_staleness`` sessions behind the
latest completed session, and fails otherwise.

Unattended runs: the arguments, and that an output folder that does not exist yet can be
made, are checked before anything is fetched or written; the output folder ``OUT/<run>/`` is
locked (``.lock``) for the whole refresh-and-write, so an overlapping run waits
``lock_timeout`` seconds and then exits 75 naming the holder (a folder that does not exist yet
is made and locked only once there is a forecast to write, so that a run that writes nothing
leaves nothing behind); both CSV files are written to a temp name and renamed, the dated
file first, then ``latest.csv`` (unless it holds a forecast for a later day: it is always the
newest).

The network runs in numpy (:mod:`forecaster.npinfer`): forecasting never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd

from .checkpoint import Run, load_run
from .choices import Cell
from .errors import EXIT_OK, EXIT_PARTIAL, ConfigError, DataError, ForecasterError, TemporaryFailure
from .fsio import (
    LockUnavailable,
    PathLike,
    cannot_write_into,
    ends_mid_line,
    file_in_the_way,
    file_lock,
    not_a_folder,
    refuse_empty_folders,
    remove_stale_temps,
)
from .intervals import calibrated, forecast_scales, with_median
from .npinfer import predict_scaled
from .outputs import NOT_A_PRICE, are_prices, read_forecast_csv, write_csv
from .pool import blocks, processes_for, workers
from .sessions import (
    dated_after_today,
    get_calendar,
    last_completed_session,
    next_sessions,
    not_sessions,
    parse_day,
    sessions_after_count,
)
from .sources import YEARS_HELD, relative_note
from .store import (
    DownloadReport,
    FailureKind,
    StoreWriteError,
    check_source,
    download,
    load_bars,
    load_store,
    store_dir,
    warn_gaps,
)
from .tickers import csv_safe, log_some, some_reasons, validate_ticker, warnings_into

log = logging.getLogger("forecaster")

WARMUP_HALFLIVES = 50
"""Bars kept before the last window, in volatility half-lives: the EWMA's start then weighs 2**-50."""

FORECAST_COLUMNS = ["ticker", "as_of", "step", "date", "last_close", "p10", "p50", "p90", "model", "run"]

MEDIAN_APART = 100.0
"""How many times a forecast's median may be above or below its last close: a model's median
of the next sessions is within a few percent of it. One further away is a cell edited by hand
(a last close of 1e-308), which score would otherwise scale the forecast by, to infinity."""

MIN_TICKERS_PER_JOB = 100
"""A process of its own only with this many tickers for each: a ticker's forecast takes about
10 ms (reading its bars most of it), sending a process its share and the run a few."""


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
    recalibrated: dict[str, int] = field(default_factory=dict)  # sessions since the run's last bar, per ticker

    @property
    def exit_code(self) -> int:
        """0 when every ticker was forecast, 3 (partial) when some failed and the rest were written."""
        return EXIT_PARTIAL if self.failed else EXIT_OK


def _age_note(last: pd.Timestamp, cut, now, calendar: str) -> tuple[bool, str]:
    """How far the last bar lags the as-of date, or the latest completed session when that is
    earlier (an --as-of of today before the close: today's bar cannot exist yet), and whether
    that is a warning (a bar behind, or one ahead of the latest completed session). A calendar
    whose data does not reach today (exchange_calendars holds some exchanges' holidays only a
    few years ahead) counts to the as-of date alone."""
    try:
        ref = last_completed_session(now, calendar)
    except ConfigError:
        if cut is None:
            raise
        ref = cut
    if cut is not None and cut <= ref:
        ref, what = cut, f"--as-of {cut.date()}"
    else:
        what = f"the latest completed session ({ref.date()})"
    traded = not len(not_sessions(pd.DatetimeIndex([last]), calendar))
    if last > ref:  # a bar of today before the close, or of a day that is no session
        why = "a bar of a session still trading (its close not final)" if traded else f"a day {calendar} does not trade"
        return True, f"last bar {last.date()} is after {what}: {why}"
    behind = sessions_after_count(last, ref, calendar)
    if behind == 0 and not traded:  # as fresh as can be, but dated on a day of no session
        return False, f"last bar {last.date()}, a day {calendar} does not trade"
    if behind == 0:
        up_to = "the latest completed session" if what.startswith("the") else f"the last session up to {what}"
        return False, f"last bar {last.date()}, {up_to}"
    return True, f"last bar {last.date()}, {behind} session(s) before {what}"


def _refresh(
    names, data_dir, calendar, max_staleness, now, cut, session, lock_timeout, report
) -> tuple[dict[str, str], set[str]]:
    """Update the store; return the tickers that must fail (stale and not refreshed) and those
    refreshed. Staleness is counted to the latest completed session, or to ``cut``
    (``--as-of``: as if today were that day) when it is earlier."""
    try:
        result = download(names, data_dir, session=session, lock_timeout=lock_timeout, calendar=calendar)
    except (LockUnavailable, StoreWriteError) as exc:
        if file_in_the_way(store_dir(data_dir)):  # nothing is stored there either: the one error
            raise
        # a read-only store (another user's downloads) or a full disk: every ticker's refresh
        # failed, and its stored bars are used as for a network failure, if recent enough
        result = DownloadReport()
        for sym in names:
            result.fail(sym, str(exc), FailureKind.DATA)
    try:
        latest = last_completed_session(now, calendar)
    except ConfigError:  # the calendar's data end before today: staleness counts to --as-of alone
        if cut is None:
            raise
        latest = cut
    if cut is not None:
        latest = min(latest, cut)
    bad: dict[str, str] = {}
    for sym, reason in result.failed.items():
        try:
            dates = load_store(data_dir, sym).index
        except DataError as exc:
            why = str(exc).removeprefix(f"{sym}: ")  # the ticker is named once, by the reader
            if why == reason:  # the refresh stopped at the stored bars themselves: one reason, said once
                bad[sym] = f"refresh failed: {why}"  # e.g. "the stored file holds bad bars (...); delete ..."
            else:
                stored = "nothing is stored" if "no stored data" in why else f"stored bars unusable: {why}"
                bad[sym] = f"refresh failed ({reason}) and {stored}"
        else:
            last = dates[-1]
            behind = sessions_after_count(last, latest, calendar)
            if behind <= max_staleness:
                upto = f"{last.date()}"
                if cut is not None and last > cut and (dates <= cut).any():  # the bars after --as-of are not read
                    upto = f"{dates[dates <= cut][-1].date()} (--as-of {cut.date()})"
                report.warnings.append(
                    f"{sym}: refresh failed ({reason}); using stored bars up to {upto} ({behind} session(s) behind)"
                )
                continue
            bad[sym] = (
                f"refresh failed ({reason}); stored bars end {last.date()}, {behind} session(s) behind "
                f"(max {max_staleness})"
            )
        if result.kinds[sym].temporary:
            report.network_failed.add(sym)
    return bad, set(result.ok)


def parse_as_of(as_of: str | date | None, now: pd.Timestamp | None = None) -> pd.Timestamp | None:
    """``--as-of`` as a session date (:func:`forecaster.sessions.parse_day`)."""
    return parse_day(as_of, "--as-of", now)


def predict(
    run_dir: PathLike,
    *,
    as_of: str | date | None = None,
    out: PathLike | None = None,
    offline: bool = False,
    source: str | None = None,
    data_dir: PathLike | None = None,
    tickers: str | Iterable[str] | None = None,
    max_staleness: int | None = None,
    now: pd.Timestamp | None = None,
    session=None,
    lock_timeout: float = 0.0,
    jobs: int = 0,
) -> ForecastReport:
    """Forecast from ``run_dir`` and write ``OUT/<run>/<as_of>.csv`` and ``latest.csv``;
    ``jobs`` processes share the tickers (0: one per core this process may use, fewer where
    each would get under :data:`MIN_TICKERS_PER_JOB`).

    Returns the report; its ``exit_code`` is 3 when some tickers failed (named in ``failed``) and
    the others were written. Raises TemporaryFailure (exit 75) when every ticker failed for
    network reasons or another run holds the output lock for more than ``lock_timeout`` seconds,
    and a ForecasterError (exit 1) for anything else; in those two cases nothing is written.
    """
    refuse_empty_folders(run_dir=run_dir, out=out, data_dir=data_dir, required=("run_dir",))
    cut = parse_as_of(as_of, now)
    if source is not None:
        check_source(source)
    run = load_run(Path(run_dir))
    cfg = run.config
    names = run.select(tickers)
    source = source or cfg.data.source
    data_dir_given, data_dir = data_dir, Path(data_dir or cfg.data.data_dir)
    staleness = cfg.predict.max_staleness if max_staleness is None else max_staleness
    if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < 0:
        raise ConfigError(f"max_staleness must be a whole number of sessions, 0 or more, not {staleness!r}")
    report = ForecastReport(run=run.name, as_of="", forecasts=pd.DataFrame(columns=FORECAST_COLUMNS))
    target = Path(out or cfg.predict.out) / run.name
    if blocker := file_in_the_way(target):
        raise ForecasterError(f"cannot write forecasts to {target}: {not_a_folder(blocker)}")
    if denied := cannot_write_into(target):  # a read-only --out or forecast folder: refused before any network work
        raise _write_error(denied, target)

    if source == "yahoo" and not offline and data_dir_given is None and (note := relative_note(data_dir, True)):
        # the run's own folder is not here: the wrong directory, most likely (a cron job's), or
        # a disk not mounted; not a network failure to retry, nor a new store to start in the
        # wrong place (--data-dir naming a new folder starts one)
        raise DataError(f"no store to refresh{note}")

    def forecast() -> None:
        dated = set(names)  # the tickers whose last bar's age is said (a stale fallback already was)
        if source == "yahoo" and not offline:
            bad, dated = _refresh(
                names, data_dir, cfg.data.calendar, staleness, now, cut, session, lock_timeout, report
            )
            report.failed.update(bad)
        todo = [s for s in names if s not in report.failed]
        processes = processes_for(jobs, len(todo), MIN_TICKERS_PER_JOB)
        if processes > 1:
            get_calendar(cfg.data.calendar)  # built once, here: the processes inherit it
        dated = frozenset(dated)
        work = [
            _Block(run, block, source, data_dir, cut, now, dated)
            for block in (blocks(todo, processes) if processes > 1 else [todo])
        ]
        with workers(processes) as pool:
            parts = pool.map(_forecast_block, work) if pool else [_forecast_block(work[0])]
        for part in parts:  # in the tickers' order, as one process would have them
            report.failed.update(part.failed)
            report.warnings += part.warnings
            report.notes += part.notes
            report.recalibrated |= part.recalibrated
        done = [part for part in parts if len(part.forecasts)]
        if not done:
            msg = "no forecast written: " + some_reasons(report.failed)
            if report.failed and set(report.failed) <= report.network_failed:
                raise TemporaryFailure(msg).with_json(failed=report.failed)
            raise DataError(msg).with_json(failed=report.failed)
        report.forecasts = pd.concat([part.forecasts for part in done], ignore_index=True)
        report.as_of = max(part.as_of for part in done)

    # A forecast folder that exists is locked for the whole refresh-and-write, so that an
    # overlapping run does no network work. One that does not is made, and locked, only once
    # there is a forecast to write, so that a run that writes nothing leaves no folder and no
    # lock file behind (deleting the lock file afterwards would not be safe: another run may
    # be waiting on it).
    if target.is_dir():
        with file_lock(target / ".lock", lock_timeout):
            remove_stale_temps(target)
            forecast()
            _write(report, target, run)
    else:
        forecast()
        with file_lock(_output_dir(target) / ".lock", lock_timeout):
            remove_stale_temps(target)
            _write(report, target, run)
    _log_messages(report)  # here, not by the command line only: a Python caller's logging shows them too
    return report


def _log_messages(report: ForecastReport) -> None:
    """The report's warnings and notes, each list cut short past ten (``--json`` has them all)."""
    log_some(logging.WARNING, report.warnings, "warnings")
    log_some(logging.INFO, report.notes, "notes")


def _output_dir(target: Path) -> Path:
    """``target`` made, for a forecast: it was not there when predict began, so a failure
    (something that took its place meanwhile, a folder above it made read-only) leaves no
    earlier forecast of the run."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if blocker := file_in_the_way(target):
            raise ForecasterError(f"cannot write forecasts to {target}: {not_a_folder(blocker)}") from None
        raise _write_error(exc, target, "no forecast file was written") from None
    return target


def _write_error(exc: OSError, where: Path, left: str = "earlier forecast files are unchanged") -> ForecasterError:
    """The error of a forecast file that could not be written, and what is ``left`` as it was."""
    reason = exc.strerror or type(exc).__name__
    return ForecasterError(f"cannot write forecasts to {where}: {reason}; {left}")


@dataclass(frozen=True)
class _Block:
    """Some of a forecast's tickers, forecast together by :func:`_forecast_block`."""

    run: Run
    names: list[str]
    source: str
    data_dir: Path
    cut: pd.Timestamp | None
    now: pd.Timestamp | None
    dated: frozenset[str]


def _forecast_block(block: _Block) -> ForecastReport:
    """One block's bars read and forecast: a report of its rows (none when no ticker could be
    read), failures, warnings, notes and recalibrations, dated by its latest last bar."""
    part = ForecastReport(run=block.run.name, as_of="", forecasts=pd.DataFrame(columns=FORECAST_COLUMNS))
    bars = _recent_bars(
        block.run, block.names, block.source, block.data_dir, block.cut, block.now, part.failed, part.warnings
    )
    if bars:
        part.forecasts = _forecast(block.run, bars, block.cut, block.dated, block.now, part)
    return part


def _recent_bars(
    run: Run, names, source, data_dir, cut, now, failed: dict[str, str], warnings: list[str]
) -> dict[str, pd.DataFrame]:
    """Each ticker's bars up to ``cut``, trimmed to what the window and the volatility estimate
    read; a ticker without enough of them, or (without ``cut``) with bars dated after today, is
    added to ``failed`` with the reason. Bars since the run's on days the run's calendar does
    not trade are warned of (``train`` named those it read)."""
    lookback = run.config.window.lookback
    halflife = max(run.config.intervals.vol_halflife, run.config.model.scale_halflife)
    keep = lookback + 1 + WARMUP_HALFLIVES * halflife  # plus the bars since the run's last one
    bars: dict[str, pd.DataFrame] = {}
    for sym in names:
        if sym in failed:
            continue
        try:
            with warnings_into(warnings):  # the reader's (rows repaired, dropped): in the report's
                # the gaps are warned of in the bars read: with --as-of, those up to it
                df = load_bars(source, data_dir, [sym], warn_of_gaps=False)[sym]
        except ForecasterError as e:
            failed[sym] = str(e).removeprefix(f"{sym}: ")  # the ticker is named once, by the reader
            continue
        # the first --as-of with a window's bars, for a ticker with too few of them up to --as-of
        later = f"; give --as-of {df.index[lookback].date()} or later" if cut is not None and len(df) > lookback else ""
        if cut is not None:
            df = df[df.index <= cut]
            if len(df) == 0:
                failed[sym] = f"no bars on or before --as-of {cut.date()}{later}"
                continue
        elif ahead := dated_after_today(df.index, now):  # a gap up to that bar would be no news
            failed[sym] = f"{ahead}; fix the data, or forecast from an earlier day with --as-of"
            continue
        with warnings_into(warnings):
            warn_gaps(df, sym)
        if len(df) < lookback + 1:
            failed[sym] = (
                f"only {len(df)} bars up to {df.index[-1].date()}, need {lookback + 1} for lookback {lookback}{later}"
            )
            continue
        since = int((df.index >= pd.Timestamp(run.manifest.tickers[sym].last_date)).sum())
        if off := _off_calendar(df.index[-max(since, 1) :], run.config.data.calendar):
            warnings.append(f"{sym}: {off}")
        bars[sym] = df.iloc[-(keep + since) :]
    return bars


def _off_calendar(dates: pd.DatetimeIndex, calendar: str) -> str | None:
    """What is wrong with ``dates`` (a ticker's newest bars) on ``calendar``: bars on days it
    does not trade, which a forecast dated by its sessions would follow; None when all trade."""
    off = not_sessions(dates, calendar)
    if not len(off):
        return None
    which = "its last bar" if off[-1] == dates[-1] else "a bar"
    return (
        f"{len(off)} of its bars since the run's last fall on days that are not {calendar} sessions, "
        f"{which} on {off[-1].date()} ({off[-1].day_name()}): dates shifted by a time zone (bars stamped in "
        f"UTC?), or bars of another exchange; its forecasts are dated by {calendar}'s sessions after its last bar"
    )


def _write(report: ForecastReport, target: Path, run: Run) -> None:
    """The dated file first, then latest.csv: a consumer that sees the new latest.csv can always
    find the dated file it came from. The dated file keeps the rows an earlier file for the same
    day holds for tickers not forecast now (``predict -t`` retrying the tickers that failed must
    not erase the others' forecasts), in the run's ticker order. latest.csv is the newest
    forecast: one of this run for a later day than ``report.as_of`` (an ``--as-of`` in the
    past, or ``-t`` for a ticker whose bars end earlier) is kept as it is, with a note."""
    dated = target / f"{report.as_of}.csv"
    latest = target / "latest.csv"
    rows = _with_earlier_rows(report.forecasts, dated, run, report.warnings)
    newer = _later_as_of(latest, report.as_of, report.run)
    files = {"forecast": dated} if newer else {"forecast": dated, "latest": latest}
    for key, path in files.items():
        try:
            report.files[key] = write_csv(rows, path)
        except OSError as exc:
            if not report.files:
                raise _write_error(exc, path, _left_as_it_was(target)) from None
            # the dated file is in place: say so, rather than that nothing changed
            raise _write_error(
                exc, path, f"the forecast was written to {dated} only, {path.name} is unchanged"
            ) from None
    if newer:  # first, so that it is shown however many notes on the bars' age follow
        report.notes.insert(0, f"{latest} kept: it holds the forecast of {newer}, newer than {report.as_of}")


def _left_as_it_was(target: Path) -> str:
    """What a forecast that could not be written leaves in ``target``, said after the error."""
    try:
        earlier = any(p.suffix == ".csv" for p in target.iterdir())
    except OSError:
        earlier = True
    return "earlier forecast files are unchanged" if earlier else "no forecast file was written"


def _later_as_of(path: Path, as_of: str, run_name: str) -> str | None:
    """The day of the forecast file ``path`` when it is one of this run's and made for a day
    after ``as_of``; None otherwise (no such file, an earlier or the same day, not a forecast
    of this run), when it is to be replaced."""
    try:
        held = _forecast_fields(read_forecast_csv(path))
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return None
    if held is None or held.empty or not held["run"].isin({run_name, csv_safe(run_name)}).all():
        return None
    days = pd.to_datetime(held["as_of"], format="%Y-%m-%d", errors="coerce")
    if days.isna().any():
        return None
    newest = days.max()
    return str(newest.date()) if newest > pd.Timestamp(as_of) else None


def _forecast_fields(df: pd.DataFrame) -> pd.DataFrame | None:
    """The forecast columns of a forecast file read as text, in their order (a column added
    by hand, or the columns reordered, leave its forecasts as they are, as ``score`` reads
    them); None when one of them is missing."""
    if not set(FORECAST_COLUMNS) <= set(df.columns):
        return None
    return df[FORECAST_COLUMNS]


REPLACED = "replaced by this forecast alone"
"""How a warning about a day's forecast file that ``predict -t`` could not add to ends."""

NAMED_LATER = 5
"""Tickers named in the warning about forecasts kept because their bars went back."""


def _with_earlier_rows(forecasts: pd.DataFrame, path: Path, run: Run, warnings: list[str]) -> pd.DataFrame:
    """``forecasts`` and the rows of the forecast file ``path`` (of this run) for the other
    tickers, in the forecast columns (one added by hand is left out); just ``forecasts`` when
    there is no such file or it is not one of this run's (added to ``warnings``, shown once the
    file is written, when it is unreadable, not a forecast file at all, or when another model
    trained under the run's name made those rows: one file never mixes two models' forecasts,
    which ``score`` could not read). A ticker's rows made from a later day than its forecast now
    are kept in place of it, with a warning. A file cut short (a write or a copy stopped
    midway: its last row torn, or its last forecast without its last steps) keeps its whole
    forecasts; the incomplete one is left out, with a warning."""
    run_name, order = run.name, run.names
    try:
        read = read_forecast_csv(path)
        earlier = _forecast_fields(read)
        if earlier is None:
            missing = ", ".join(c for c in FORECAST_COLUMNS if c not in read.columns)
            warnings.append(f"{path} is not a forecast file (no column {missing}): {REPLACED}")
            return forecasts
        # rows of empty fields (a spreadsheet's empty row) hold nothing, as score reads them; a
        # file of none but those, or of its header alone, holds no forecast to keep
        earlier = earlier[(earlier != "").any(axis=1)]
        if earlier.empty:
            return forecasts
        # the file holds the name as written, neutralised when it reads as a formula
        foreign = ~earlier["run"].isin({run_name, csv_safe(run_name)})
        torn = bool(foreign.iloc[-1] and not foreign.iloc[:-1].any() and ends_mid_line(path))
        if torn:  # a write or copy stopped inside the last row: the rows before it are whole
            earlier, foreign = earlier.iloc[:-1], foreign.iloc[:-1]
        if foreign.any():
            other = ascii(earlier["run"][foreign].iloc[0][:60])
            warnings.append(f"{path} holds forecasts of run {other}, not {run_name}: {REPLACED}")
            return forecasts
        earlier = earlier.astype({"step": "int64"})
    except FileNotFoundError:
        return forecasts
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        warnings.append(f"{path} is unreadable ({type(exc).__name__}): {REPLACED}")
        return forecasts
    horizon = run.config.window.horizon
    if len(earlier) and (cut := _last_forecast_cut_short(earlier, horizon)) is not None:
        earlier, torn = earlier[~cut], True
    if torn:
        warnings.append(f"{path} was cut short: its last forecast was incomplete and is left out, the others kept")
        if earlier.empty:
            return forecasts
    if other := _another_model(earlier, run.config.model.cell, horizon):
        warnings.append(
            f"{path} holds forecasts of another model named {run_name} ({other}; trained again under that "
            f"name?): {REPLACED}"
        )
        return forecasts
    # a ticker whose rows here are as of a later day than its forecast now (its bars went
    # back: a revision, a stale copy) keeps them: the file is that day's record for score
    now_as_of = forecasts.groupby("ticker")["as_of"].max()
    then_as_of = earlier.groupby("ticker")["as_of"].max()
    later = sorted(t for t in now_as_of.index if t in then_as_of.index and then_as_of[t] > now_as_of[t])
    if later:
        days = ", ".join(f"{t} as of {then_as_of[t]}, now {now_as_of[t]}" for t in later[:NAMED_LATER])
        more = f" and {len(later) - NAMED_LATER} more" if len(later) > NAMED_LATER else ""
        warnings.append(
            f"{path} keeps the forecasts of tickers whose bars now end before the day they were made from "
            f"({days}{more}): their data went back (revised, or an older copy?), and their forecasts now are "
            "not written"
        )
        forecasts = forecasts[~forecasts["ticker"].isin(later)]
    kept = earlier[~earlier["ticker"].isin(set(forecasts["ticker"]))]
    if kept.empty:
        return forecasts
    # only the rows kept need be prices: a bad cell of a ticker forecast again goes with it
    if why := _not_forecasts(kept, run.names) or _not_prices(kept):  # an edited cell: score would refuse the file
        warnings.append(f"{path} is unreadable ({why}): {REPLACED}")
        return forecasts
    kept = kept.astype(dict.fromkeys(PRICE_COLUMNS, "float64"))
    rows = pd.concat([kept, forecasts], ignore_index=True)
    rank = {sym: i for i, sym in enumerate(order)}
    position = rows["ticker"].map(lambda sym: rank.get(sym, len(rank)))
    return rows.assign(_at=position).sort_values(["_at", "ticker", "step"], kind="stable").drop(columns="_at")


PRICE_COLUMNS = ["last_close", "p10", "p50", "p90"]


_FIRST, _LAST = pd.Timestamp.min, pd.Timestamp.max


def _not_forecasts(rows: pd.DataFrame, tickers: list[str]) -> str | None:
    """What the first of the forecast ``rows`` (text cells, steps as integers) holds that is
    not a forecast of one of the run's ``tickers``, as ``score`` reads it: a ticker not the
    run's, an ``as_of`` or ``date`` that is no YYYY-MM-DD date, a date not after its as_of,
    or a step below 1; None when every row is one. Kept, such a row would make ``score``
    skip the whole day's file, this day's new forecasts with it."""
    known = set(tickers)

    def symbol(text: str) -> str | None:
        try:
            return validate_ticker(text)
        except ForecasterError:
            return None

    symbols = {t: symbol(t) for t in dict.fromkeys(rows["ticker"])}
    ticker_ok = rows["ticker"].map(symbols).isin(known).to_numpy(dtype=bool)
    # a year the bars' dates cannot hold (9999) is no forecast date, as score reads it
    as_of, day = (
        pd.to_datetime(rows[c], format="%Y-%m-%d", errors="coerce").where(lambda d: d.between(_FIRST, _LAST))
        for c in ("as_of", "date")
    )
    steps = rows["step"].to_numpy()
    bad = ~ticker_ok | as_of.isna().to_numpy() | day.isna().to_numpy() | ~(day > as_of).to_numpy() | (steps < 1)
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    row = rows.iloc[i]
    at = f"{row['ticker'][:40]}'s forecast as of {row['as_of'][:40]}, step {row['step']}"
    if not ticker_ok[i]:
        return f"{at}: not one of the run's tickers" if symbols[row["ticker"]] else f"{at}: not a ticker"
    for name, parsed in (("as_of", as_of), ("date", day)):
        if pd.isna(parsed.iloc[i]):
            return f"{at}: {name} {ascii(row[name][:40])} is not a YYYY-MM-DD date of the years {YEARS_HELD}"
    if steps[i] < 1:
        return f"{at}: step {row['step']} is not a step of a forecast"
    return f"{at}: date {row['date']} is not after its as_of"


def _not_prices(rows: pd.DataFrame) -> str | None:
    """What the first of the forecast ``rows`` (text cells) holds that is not a forecast's
    prices, as ``score`` reads them: a cell that is no finite price above 0, or p10, p50 and
    p90 out of order; None when every row holds prices."""
    values = rows[PRICE_COLUMNS].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, copy=True)
    with np.errstate(invalid="ignore"):
        values[~(np.isfinite(values) & (values > 0))] = np.nan
        bad = np.isnan(values).any(axis=1) | ~((values[:, 1] <= values[:, 2]) & (values[:, 2] <= values[:, 3]))
        apart = ~medians_near(values[:, 0], values[:, 2])
    if not (bad | apart).any():
        return None
    i = int(np.flatnonzero(bad | apart)[0])
    row = rows.iloc[i]
    at = f"{row['ticker']}'s forecast as of {row['as_of']}, step {row['step']}"
    for j, col in enumerate(PRICE_COLUMNS):
        if np.isnan(values[i, j]):
            return f"{at}: {col} {ascii(row[col][:40])} is not a price"
    if not bad[i]:
        return f"{at}: {MEDIAN_FAR}"
    return f"{at}: p10, p50 and p90 are not in order"


MEDIAN_FAR = f"p50 is more than {MEDIAN_APART:g}x away from last_close"


MEDIAN_NOT_NEAR = (
    f"its forecast's median is more than {MEDIAN_APART:g}x away from its last close, which score refuses as "
    "no forecast: the run's weights or statistics are damaged, or its inputs lie far outside what it was trained on"
)


def medians_near(last_close: np.ndarray, p50: np.ndarray) -> np.ndarray:
    """Where a forecast's median ``p50`` is within :data:`MEDIAN_APART` times its
    ``last_close`` (False where either is NaN)."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return (p50 <= last_close * MEDIAN_APART) & (p50 >= last_close / MEDIAN_APART)


def _last_forecast_cut_short(rows: pd.DataFrame, horizon: int) -> pd.Series | None:
    """The rows of the last forecast in ``rows`` (the last row's ticker and day) when they show
    a file cut at the end of a line: steps 1 to n only, n below ``horizon``, where every other
    forecast holds all of them; None otherwise."""
    last = rows.iloc[-1]
    mine = (rows["ticker"] == last["ticker"]) & (rows["as_of"] == last["as_of"])
    steps = rows.loc[mine, "step"].tolist()
    if steps != list(range(1, len(steps) + 1)) or len(steps) >= horizon:
        return None
    if (rows[~mine].groupby(["ticker", "as_of"])["step"].max() != horizon).any():
        return None
    return mine


def _another_model(rows: pd.DataFrame, cell: str, horizon: int) -> str | None:
    """How the forecast ``rows`` show that a model other than the run's made them: another
    cell in their ``model`` column, or a forecast of another number of steps; None when they
    may be the run's."""
    if made := sorted(set(rows["model"]) - {cell}):
        shown = made[0] if made[0] in get_args(Cell) else ascii(made[0][:40])  # a cell, or what was typed
        return f"{shown}, the run's is {cell}"
    steps = rows.groupby(["ticker", "as_of"])["step"].max()
    if (steps != horizon).any():
        (sym, _), n = next((k, v) for k, v in steps.items() if v != horizon)
        return f"{sym}'s forecast has {n} steps, the run forecasts {horizon}"
    return None


def _forecast(run: Run, bars, cut, dated: set[str], now, report: ForecastReport) -> pd.DataFrame:
    """The forecast rows (SPEC §7) for the tickers in ``bars``; sets ``report.as_of``. For the
    tickers in ``dated`` it says how far the last bar lags (a warning when it does at all)."""
    cfg = run.config
    ws = run.windows(bars)
    ends = ws.offsets[1:] - 1  # last row of each present ticker
    median = run.manifest.median_weights()

    def forecast(origins: np.ndarray) -> np.ndarray:
        return with_median(
            predict_scaled(run.model, ws, origins, cfg.model.strategy, calendar=cfg.data.calendar), median
        )

    scale, report.recalibrated = forecast_scales(
        run.manifest.tickers, ws, ends, forecast, cfg.intervals.tracking_rate, cfg.intervals.step_tracking
    )
    lo, med, hi = calibrated(forecast(ends), ws, ends, scale)
    H = ws.horizon
    last_dates = pd.DatetimeIndex(ws.dates[ends])
    closes = ws.close[ends][:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        prices = [closes * np.exp(x) for x in (lo, med, hi)]
    finite = np.logical_and.reduce([are_prices(p).all(axis=1) for p in prices])
    near = medians_near(closes, prices[1]).all(axis=1)  # a row score refuses, and the day's file with it
    rows = []
    sessions: dict = {}  # next sessions and age note per distinct last date (most tickers share one)
    for i, sym in enumerate(ws.tickers):
        if not finite[i]:  # never an empty cell, nor a zero price, in a file cron jobs read: the ticker fails
            report.failed[sym] = NOT_A_PRICE
            continue
        if not near[i]:
            report.failed[sym] = MEDIAN_NOT_NEAR
            continue
        last = last_dates[i]
        if last not in sessions:
            sessions[last] = next_sessions(last, H, cfg.data.calendar)
        c = float(ws.close[ends[i]])
        for h in range(H):
            rows.append(
                {
                    "ticker": sym,
                    "as_of": str(last.date()),
                    "step": h + 1,
                    "date": str(pd.Timestamp(sessions[last][h]).date()),
                    "last_close": c,
                    "p10": float(prices[0][i, h]),
                    "p50": float(prices[1][i, h]),
                    "p90": float(prices[2][i, h]),
                    "model": cfg.model.cell,
                    "run": run.name,
                }
            )
        if sym in dated:
            key = ("age", last)
            if key not in sessions:
                sessions[key] = _age_note(last, cut, now, cfg.data.calendar)
            warn, note = sessions[key]
            (report.warnings if warn else report.notes).append(f"{sym}: {note}")
    # dated by the last bar forecast from, as the rows are: an --as-of on a weekend or a holiday
    # is the session before it, never a day no row names
    if (finite & near).any():
        report.as_of = str(last_dates[finite & near].max().date())
    return pd.DataFrame(rows, columns=FORECAST_COLUMNS)
