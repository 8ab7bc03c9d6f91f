"""Live scoring: every forecast a run has written, against the closes realised since (SPEC §9).

``predict`` leaves ``OUT/<run>/<as_of>.csv`` behind every evening; :func:`score` reads all of
them (``latest.csv`` is a copy of one, so it is not read), looks up the close of each
forecast's session in the run's source, and reports per ticker and step, and pooled (``ALL``),
the metrics ``evaluate`` reports, computed by the same code (:func:`forecaster.metrics.
metrics_table`): the median as the point forecast, the last close as the naive one.

- The actual of a forecast for session ``date`` is that session's close in the source as it is
  now, so a revised bar is scored with its latest value and scoring twice gives the same
  numbers. A ``date`` after the ticker's last bar is pending; one on or before it that has no
  bar (the calendar and the data disagree, e.g. on a holiday) is named and not scored.
- Only live forecasts are scored: one whose ``as_of`` is before its ticker's last bar in the
  run (``predict --as-of`` a day of the data the run was trained, validated and tested on) is
  in-sample, left out with one warning saying how many. One as of that last bar forecasts
  only sessions after the run's data, and is live. With the run gone, its last bars are not
  known: every forecast is scored.
- Prices are compared in the data's current adjustment: when the close of the forecast's
  ``as_of`` session in the source differs from the ``last_close`` the forecast was made from
  (a split or dividend re-adjusted history), its quantiles and the naive forecast are scaled by
  the ratio, as if the forecast had been made from today's data.
- With ``since``, the files of earlier days (``<as_of>.csv``) are not read at all.
- A file that is not a forecast of this run (malformed, another run's, or another model's
  trained again under the run's name: another cell in its ``model`` column, or every forecast
  of another number of steps) is named and skipped,
  and so is a ticker whose bars cannot be read or go past today: the report covers the rest (exit 3). When
  nothing is left to score (those skipped, or ``--since`` after the last forecast), that is an
  error (exit 1) and ``score.csv`` is not rewritten.
- A file is torn when it is cut inside a line, or at a line end inside a ticker's steps (its
  last row a step before the run's horizon, or, the run gone, before the file's longest
  forecast's); rows of empty fields (a spreadsheet's empty row) are ignored wherever they
  are, as blank lines are.
- The same forecast (ticker, as_of, step) found in two files is scored once, from the file of
  the later date.
- A run whose directory is gone (``retrain --keep`` deleted it) leaves its forecasts behind:
  they are scored when the source is given (``--source``; the run's own is not known any more),
  the run named by its path's last part, as its forecast files name it. A promoted name that
  points at such a run is an error that gives that command, with the run's own name.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import warnings
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd

from .checkpoint import read_manifest
from .choices import Cell
from .config import DataConfig, PredictConfig
from .errors import EXIT_OK, EXIT_PARTIAL, DataError, ForecasterError, RunFormatError
from .evaluation import EvalReport
from .fsio import PathLike, ends_mid_line, file_in_the_way, follow_link, not_a_folder, refuse_empty_folders
from .metrics import POOLED, metrics_table
from .outputs import FORECAST_FILE, has_dated_forecasts, refuse_unreadable_forecast, write_csv
from .prediction import FORECAST_COLUMNS, MEDIAN_FAR, medians_near
from .sessions import dated_after_today, last_completed_session, parse_day, sessions_after_count
from .sources import row_lines, where_row
from .store import check_source, load_bars, warn_gaps
from .tickers import csv_safe, log_some, validate_ticker, warnings_into

log = logging.getLogger("forecaster")

SCORE_COLUMNS = [
    "ticker",
    "step",
    "n",
    "pending",
    "mae",
    "mae_naive",
    "skill",
    "dm_pvalue",
    "coverage",
    "width",
    "pinball",
]
SCORE_FILE = "score.csv"
"""The dated forecast files ``predict`` writes (``latest.csv`` and ``score.csv`` do not match)."""
REVISION_RTOL = 1e-6
"""A stored close that differs from a forecast's last_close by more than this (relative) was
re-adjusted since; below it the difference is the CSV's 10 significant digits."""
MISSING_SHOWN = 3
"""Dates named per ticker in the warning about forecasts for sessions missing from the data."""

_PRICES = ["last_close", "p10", "p50", "p90"]
_APART_COLUMNS = ["ticker", "at", "step", "actual", "p10", "p90"]
"""What :meth:`ScoreReport.coverage_alert` reads of each forecast."""


@dataclass
class ScoreReport:
    run: str
    model: str
    folder: Path
    scores: pd.DataFrame  # SCORE_COLUMNS
    read: list[str] = field(default_factory=list)  # forecast files scored (made on or after --since)
    skipped: dict[str, str] = field(default_factory=dict)  # file name -> why it was not read
    failed: dict[str, str] = field(default_factory=dict)  # ticker -> why its forecasts were not scored
    warnings: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    # one row per forecast scored or pending: ticker, at (its origin's bar), step, actual (NaN: pending), p10, p90
    forecasts: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_APART_COLUMNS))
    median_weight: list[float] | None = None  # the run's, per step (0: the median is the last close)
    median_alpha: float | None = None  # the run's model.median_alpha

    @property
    def exit_code(self) -> int:
        """0 when every forecast file and ticker was scored, 3 when some were skipped."""
        return EXIT_PARTIAL if self.skipped or self.failed else EXIT_OK

    def pooled(self) -> pd.DataFrame:
        """The ``ALL`` rows that have at least one scored forecast."""
        s = self.scores
        return s[(s["ticker"] == POOLED) & (s["n"] > 0)]

    def coverage_alert(self, lo: float, hi: float, alpha: float = 0.05) -> str | None:
        """Why the pooled coverage of some step is outside [lo, hi] by more than chance; None
        when it is not. A step alerts when its coverage is below ``lo`` (above ``hi``) and the
        one-sided exact binomial test rejects a true coverage of ``lo`` (``hi``) at ``alpha``:
        two forecasts both outside a right 80 % interval, which happens one day in twenty-five,
        are no drift. h-step forecasts from consecutive origins share h - 1 sessions, so their
        misses come in runs: the test reads those of each ticker that do not overlap
        (:func:`_apart_counts`), as evaluate's Kupiec test does. Same-day forecasts of several
        tickers are still taken as independent, which they are not."""
        bad = []
        for r in self.pooled().itertuples(index=False):
            if lo <= r.coverage <= hi:
                continue
            inside, n = _apart_counts(self.forecasts, int(r.step))
            below = r.coverage < lo
            p = coverage_pvalue(inside, n, lo if below else hi, below=below)
            if p < alpha:
                of = "" if n == r.n else f" over the {n} that do not overlap"
                bad.append(f"h={int(r.step)} {_share_outside(r.coverage, lo, hi)} (n={int(r.n)}, p={p:.2g}{of})")
        if not bad:
            return None
        return f"interval coverage outside {_share(lo)}-{_share(hi)} in live forecasts: " + ", ".join(bad)

    def skill_alert(self, alpha: float = 0.05) -> str | None:
        """Why the model does not beat naive significantly at every scored step (the test of
        ``evaluate --fail-if-no-skill``); None when it does or nothing is scored yet."""
        pooled = self.pooled()
        if pooled.empty:
            return None
        table = pooled.assign(model=self.model)
        report = EvalReport(
            run=self.run,
            model=self.model,
            metrics=table,
            predictions=pd.DataFrame(),
            out_dir=self.folder,
            median_weight=self.median_weight,
            median_alpha=self.median_alpha,
        )
        ok, verdict = report.verdict(alpha)
        return None if ok else f"no skill over the naive forecast in live forecasts: {verdict}"


def coverage_pvalue(inside: int, n: int, bound: float, below: bool | None = None) -> float:
    """The one-sided exact binomial p-value of ``inside`` forecasts of ``n`` inside their
    interval against a true coverage of ``bound``: the chance of as few as seen (``below``;
    by default when ``inside`` is under ``bound * n``) or as many (otherwise). 1.0 with no
    forecast."""
    from scipy.special import bdtr, bdtrc  # the binomial's tails, without scipy.stats' import time

    if n == 0:
        return 1.0
    if below is None:
        below = inside < bound * n
    if below:
        return float(bdtr(inside, n, bound))
    return 1.0 if inside == 0 else float(bdtrc(inside - 1, n, bound))


def _apart_counts(forecasts: pd.DataFrame, step: int) -> tuple[int, int]:
    """(inside, scored) of the scored ``step``-step forecasts of each ticker that share no
    session: in the order of their origins, each one whose origin is at least ``step`` bars
    (``at``, the origin's place in the ticker's bars) after that of the last one kept. Daily
    forecasts keep every ``step``-th; weekly 5-step ones, or days a job missed, all they can."""
    f = forecasts[(forecasts["step"] == step) & forecasts[["actual", "p10", "p90"]].notna().all(axis=1)]
    f = f.sort_values(["ticker", "at"], kind="stable")
    keep = np.zeros(len(f), dtype=bool)
    at, tickers = f["at"].to_numpy(), f["ticker"].to_numpy()
    last = None
    for i in range(len(f)):
        if i == 0 or tickers[i] != tickers[i - 1] or at[i] - last >= step:
            keep[i], last = True, at[i]
    kept = f[keep]
    inside = (kept["p10"] <= kept["actual"]) & (kept["actual"] <= kept["p90"])
    return int(inside.sum()), len(kept)


def _share(x: float) -> str:
    """A bound as given: 0.705 is 70.5%, not a rounded 70% or 71%."""
    return f"{100 * x:.10g}%"


def _share_outside(x: float, lo: float, hi: float) -> str:
    """A coverage outside [lo, hi] to as many decimals as show it outside (70.49% under a
    bound of 70.5%, where one decimal would print the bound itself)."""
    for places in range(1, 6):
        if not lo <= round(x, places + 2) <= hi:
            break
    return f"{100 * x:.{places}f}%"


def parse_since(since: str | date | None) -> pd.Timestamp | None:
    """``--since`` as a date (:func:`forecaster.sessions.parse_day`)."""
    return parse_day(since, "--since")


def score(
    run_dir: PathLike,
    *,
    out: PathLike | None = None,
    source: str | None = None,
    data_dir: PathLike | None = None,
    since: str | date | None = None,
    now: pd.Timestamp | None = None,
) -> ScoreReport:
    """Score every forecast written for ``run_dir`` and write ``OUT/<run>/score.csv``.

    ``since`` keeps the forecasts made on or after that date (their ``as_of``). Returns the
    report; its ``exit_code`` is 3 when forecast files or tickers were skipped (named in
    ``skipped`` and ``failed``). Raises a ForecasterError (exit 1) when the run cannot be read,
    there is no forecast file at all, or nothing is left to score (every file or ticker
    skipped, or no forecast made on or after ``since``); nothing is written then. When nothing
    is at ``run_dir`` any more, the forecasts of the run of that name are scored if ``source``
    is given (an error otherwise), their tickers whatever they are. A ticker whose forecasts
    wait for sessions that have closed, its bars more than the run's ``predict.max_staleness``
    sessions behind the latest completed one (``now``: the current time by default), is
    named in a warning: its data stopped coming in.
    """
    refuse_empty_folders(run_dir=run_dir, out=out, data_dir=data_dir, required=("run_dir",))
    if source is not None:  # said once, not as every ticker's closes that could not be read
        check_source(source)
    cut = parse_since(since)
    gone = _gone_run_name(run_dir)
    if gone is None:
        _refuse_deleted_target(Path(run_dir), out, source, data_dir)
        manifest = read_manifest(run_dir)
        cfg = manifest.config
        run, model, tickers = manifest.name, cfg.model.cell, set(manifest.tickers)
        ends = {s: pd.Timestamp(t.last_date) for s, t in manifest.tickers.items()}
        horizon = cfg.window.horizon
        folder = Path(out or cfg.predict.out) / run
        source, data_dir = source or cfg.data.source, data_dir or cfg.data.data_dir
    else:
        run, model, tickers, horizon, ends = gone, None, None, None, {}
        folder = Path(out or PredictConfig().out) / run
    report = ScoreReport(run=run, model=model or "", folder=folder, scores=pd.DataFrame(columns=SCORE_COLUMNS))
    if gone is None:  # why a median is the last close, as evaluate says it
        report.median_weight, report.median_alpha = manifest.median_weights(), cfg.model.median_alpha
    names = sorted(p.name for p in folder.iterdir() if FORECAST_FILE.fullmatch(p.name)) if folder.is_dir() else []
    if gone is not None and not names:
        raise RunFormatError(f"no run directory at {run_dir}, and no forecast files of run {run} in {folder}")
    if not names:
        if blocker := file_in_the_way(folder):  # not "no files": nothing can be read from a file
            raise DataError(f"cannot read the forecasts of run {run}: {not_a_folder(blocker)}")
        raise DataError(f"no forecast files of run {run} in {folder} (predict writes them there)")
    if gone is not None and source is None:
        raise RunFormatError(
            f"no run directory at {run_dir}: to score the forecasts of run {run} in {folder}, "
            "give the source it read (--source, and --data-dir)"
        )
    if cut is not None:  # a file is named by the day its forecasts were made: one before --since is not read
        names = [name for name in names if name.removesuffix(".csv") >= str(cut.date())]
    frames = {}
    for name in names:
        try:
            frames[name] = _read_forecast(folder / name, run, tickers, horizon, model)
        except _Malformed as exc:
            report.skipped[name] = str(exc)
    if model is None and frames:  # the run is gone: its model is the one its latest forecasts name
        last = frames[list(frames)[-1]]
        latest = last["model"].iloc[-1]
        steps = int(last.groupby(["ticker", "as_of"]).size().max())  # and its horizon, theirs
        for name in list(frames):
            sizes = frames[name].groupby(["ticker", "as_of"]).size()
            made = int(sizes.iloc[0]) if len(sizes) and (sizes == sizes.iloc[0]).all() else steps
            if other := sorted(set(frames[name]["model"]) - {latest}):
                how = f"{_cell(other[0])}, the latest forecasts are {_cell(latest)}'s"
            elif _another_horizon(made, steps, len(sizes)):
                how = f"{made} steps, the latest forecasts have {steps}"
            else:
                continue
            report.skipped[name] = _another_model(run, how)
            del frames[name]
        report.skipped = dict(sorted(report.skipped.items()))
    report.read = list(frames)
    forecasts = _latest_copies(list(frames.values()))
    frames.clear()  # joined into forecasts: each file's own frame is not needed again
    if cut is not None:
        forecasts = forecasts[forecasts["as_of"] >= cut]
        report.read = _still_read(report.read, forecasts)
    none_since = cut is not None and forecasts.empty  # not an in-sample one left out below: said so there
    if ends:  # forecasts made inside the run's own data are not live: never mixed into its record
        forecasts = _live_only(forecasts, ends, report.warnings)
        report.read = _still_read(report.read, forecasts)
    if model is None:  # the run is gone: its model as its latest forecasts name it
        named = forecasts["model"].iloc[-1] if len(forecasts) else ""
        model = report.model = named if named in get_args(Cell) else "model"
    closes = _closes(sorted(forecasts["ticker"].unique()), source, data_dir or DataConfig().data_dir, report.warnings)
    report.failed = {s: why for s, why in closes.items() if isinstance(why, str)}
    known = {s: c for s, c in closes.items() if not isinstance(c, str)}
    pred = _with_actuals(forecasts, known, report.warnings)
    del forecasts  # in pred now, with their actuals: not held through the scoring
    if gone is None:  # a deleted run's calendar is not known
        report.warnings += _overdue(pred, known, cfg.data.calendar, cfg.predict.max_staleness, now)
    if pred.empty:
        why = [f"{name}: {reason}" for name, reason in report.skipped.items()]
        why += [f"{sym}: {reason}" for sym, reason in report.failed.items()]
        if none_since:
            why.append(f"no forecast made on or after {cut.date()}")
        why += report.warnings if not why else []
        raise DataError(f"nothing to score for run {run} in {folder}: " + "; ".join(why))
    report.scores = score_table(pred, model)
    report.forecasts = pred[_APART_COLUMNS]
    try:
        report.files["score"] = write_csv(report.scores, folder / SCORE_FILE)
    except OSError as exc:
        raise ForecasterError(f"cannot write {folder / SCORE_FILE}: {exc.strerror or exc}") from None
    log_some(logging.WARNING, report.warnings, "warnings")  # for a Python caller's logging too
    return report


def _still_read(names: list[str], forecasts: pd.DataFrame) -> list[str]:
    """The files of ``names`` that some forecast of ``forecasts`` still comes from, in their
    order. The files of ``forecasts`` are gathered once: a set built again for each name would
    read every forecast once per file, a time that grows with the square of the days forecast."""
    kept = set(forecasts["file"].unique())
    return [name for name in names if name in kept]


def _gone_run_name(run_dir: PathLike) -> str | None:
    """The name of the run at ``run_dir`` when nothing is there any more (no directory, no
    link): the last part of the path. None when something is there (read as a run)."""
    path = Path(run_dir)
    if os.path.lexists(path) or path.name in ("", ".", ".."):
        return None
    return path.name


def _refuse_deleted_target(path: Path, out: PathLike | None, source: str | None, data_dir: PathLike | None) -> None:
    """A promoted name whose run directory was deleted: an error that gives the command scoring
    the run's forecasts, kept under the run's own name (or says there are none). Nothing when
    ``path`` is not such a name."""
    if not path.is_symlink() or path.exists():
        return
    target = follow_link(path)
    shown = os.path.relpath(target) if not os.path.relpath(target).startswith("..") else str(target)
    folder = Path(out or PredictConfig().out) / target.name
    said = f"{path} points at {target}, which does not exist (deleted?)"
    if not has_dated_forecasts(folder):
        raise RunFormatError(f"{said}, and there are no forecast files of run {target.name} in {folder}")
    args = ["--run", shown] + (["--out", str(out)] if out is not None else [])
    args += ["--source", source] if source else []
    args += ["--data-dir", str(data_dir)] if data_dir is not None else []
    command = "forecaster score " + " ".join(shlex.quote(a) for a in args)
    if not source:  # only the run knew it: the user names it
        command += " --source SOURCE" + (" [--data-dir DIR]" if data_dir is None else "")
    raise RunFormatError(f"{said}; its forecasts are kept under its name in {folder}: score them with `{command}`")


class _Malformed(Exception):
    """A forecast file that cannot be scored, with the reason."""


def _another_horizon(made: int, horizon: int, forecasts: int) -> bool:
    """Whether ``forecasts`` forecasts of ``made`` steps each were made by a model of another
    horizon than ``horizon``: more steps, or fewer in more than one forecast (one alone may be a
    file cut short)."""
    return made > horizon or (made < horizon and forecasts > 1)


def _another_model(run: str, how: str) -> str:
    """Why a file of this run's name was not made by its model: another one trained under the
    same name (``train --run-dir`` into the same folder again), ``how`` telling them apart."""
    return f"written by another model named {run} ({how}; trained again under that name?)"


def _cell(model: str) -> str:
    """A model column's value as a message shows it: a cell's name, anything else quoted."""
    return model if model in get_args(Cell) else ascii(model[:40])


def _read_forecast(
    path: Path, run: str, tickers: set[str] | None, horizon: int | None, cell: str | None
) -> pd.DataFrame:
    """One forecast file, checked: this run's, the forecast columns, valid values, and its
    tickers among ``tickers`` (None: the run is gone, any ticker), its steps from 1 to the
    run's ``horizon`` (None: the run is gone, as many as the file's longest forecast has).

    With the run at hand, a file whose forecasts another model made (its ``model`` column
    another ``cell``, or every forecast of another number of steps) is not the run's: the run
    was trained again under its name, and its forecasts are kept apart from the earlier
    model's."""
    try:
        refuse_unreadable_forecast(path)  # a header of a million commas, a link to /dev/zero
        with warnings.catch_warnings():
            # a row longer than the header would silently become the index, or lose fields
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.ParserWarning:
        raise _Malformed("some rows have more fields than the header") from None
    except pd.errors.EmptyDataError:
        raise _Malformed(_empty_why(path)) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        longer = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if longer:
            width, line, seen = longer.groups()
            raise _Malformed(f"line {line} has more fields than the header ({seen} of {width})") from None
        raise _Malformed(f"not a readable CSV file ({str(exc).splitlines()[0][:120]})") from None
    except OSError as exc:
        raise _Malformed(f"cannot be read ({exc.strerror or exc})") from None
    missing = [c for c in FORECAST_COLUMNS if c not in raw.columns]
    if missing:
        if raw.empty and _cut_in_header(path):
            raise _Malformed("it ends inside its header line (the file was cut short?)")
        raise _Malformed(f"not a forecast file: no column {', '.join(missing)}")
    # rows of empty fields (`,,,,,,` from a spreadsheet that saved an empty row, between the
    # forecasts or below them) hold nothing: dropped wherever they are, as blank lines are; a
    # row cut short keeps its ticker
    rows = len(raw)
    values = raw.to_numpy(dtype=object)  # numpy, not frame operations: a file is small
    kept = np.flatnonzero((values != "").any(axis=1))  # each row's place among pandas' rows
    fields = values[kept][:, [raw.columns.get_loc(c) for c in FORECAST_COLUMNS]]

    def where(pos: int) -> str:
        """Row ``pos`` as a message names it: the line an editor shows it on (blank lines and
        dropped rows above it move it down), read only when a message needs it."""
        return where_row(int(kept[pos]), row_lines(path, rows))

    if not len(fields):
        raise _Malformed("no forecast rows")
    again = (fields == np.array(FORECAST_COLUMNS, dtype=object)).all(axis=1)
    if again.any():  # not a run named "run": files joined end to end, each with its header
        raise _Malformed(f"{where(int(np.flatnonzero(again)[0]))} repeats the header line (two files joined into one?)")
    # every cell of a forecast is filled: an empty one on the last row is a file cut short (a
    # copy that stopped midway), not another run's; above it, a field emptied by hand
    empty = fields == ""
    short = empty.any(axis=1)
    if short.any():
        pos = int(np.flatnonzero(short)[0])
        if pos == len(fields) - 1:
            raise _Malformed(f"{where(pos)} is incomplete (the file was cut short?)")
        blank = [c for c, e in zip(FORECAST_COLUMNS, empty[pos]) if e]
        raise _Malformed(f"{where(pos)} is incomplete: no {', '.join(blank)}")
    text = dict(zip(FORECAST_COLUMNS, fields.T))  # each column's fields, as strings
    others = sorted(set(text["run"]) - {run, csv_safe(run)})
    last = text["run"][-1]
    if last in others and ends_mid_line(path) and any(r.startswith(last) for r in (run, csv_safe(run))):
        # the copy stopped inside the run's name on the last row: a torn file, not another run's
        raise _Malformed(f"{where(len(fields) - 1)} is incomplete (the file was cut short?)")
    if others:
        raise _Malformed(f"written by run {ascii(others[0][:60])}, not {run}")
    if cell is not None and (made := sorted(set(text["model"]) - {cell})):
        raise _Malformed(_another_model(run, f"{_cell(made[0])}, the run's is {cell}"))
    try:
        symbols = {s: validate_ticker(s) for s in dict.fromkeys(text["ticker"])}
    except ForecasterError as exc:
        raise _Malformed(str(exc)) from None
    unknown = sorted(set(symbols.values()) - tickers) if tickers is not None else []
    if unknown:
        raise _Malformed(f"ticker {unknown[0]} is not one of the run's")
    written, spellings = pd.factorize(text["ticker"])
    ticker = np.array([symbols[t] for t in spellings], dtype=object)[written]
    tcode, _ = pd.factorize(ticker)  # two spellings of one symbol are one ticker
    (as_of, date), acode = _days(text["as_of"], text["date"])
    step = pd.to_numeric(text["step"], errors="coerce").astype(float)
    prices = np.column_stack([pd.to_numeric(text[c], errors="coerce").astype(float) for c in _PRICES])
    whole = np.isfinite(step) & (step % 1 == 0)
    # a forecast is a (ticker, as_of) pair, as a groupby of the two counts them: one without a
    # date (NaT) is none
    pair = tcode * (acode.max(initial=0) + 1) + acode
    sizes = np.bincount(pair[~np.isnat(as_of)])
    sizes = sizes[sizes > 0]
    # a step the run does not forecast (9 of a 5-step run, 0): with the run gone, the steps of
    # the file's longest forecast (a hand-edited step leaves its ticker one step short)
    steps = horizon or (int(sizes.max()) if len(sizes) else 0)
    outside = whole & ((step < 1) | (step > steps))
    invalid = (
        np.isnat(as_of)
        | np.isnat(date)
        | ~whole
        | ~np.isfinite(prices).all(axis=1)
        | ~(prices > 0).all(axis=1)
        | ~((prices[:, 1] <= prices[:, 2]) & (prices[:, 2] <= prices[:, 3]))
        | ~(date > as_of)
    )
    if horizon and not invalid.any() and len(sizes) and (sizes == sizes[0]).all():
        made = int(sizes[0])  # every forecast has steps 1..made: a model of that horizon
        if _another_horizon(made, horizon, len(sizes)):
            steps_of = pd.Series(step).groupby(pair)
            if steps_of.apply(lambda s: sorted(s) == list(range(1, made + 1))).all():
                raise _Malformed(_another_model(run, f"{made} steps, the run forecasts {horizon}"))
    far = ~invalid & ~medians_near(prices[:, 0], prices[:, 2])  # a last close edited to 1e-308
    bad = invalid | outside | far
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        why = "dates, step or prices"
        if far[row]:
            why = MEDIAN_FAR
        elif not invalid[row]:  # a valid row but for its step: which steps the run has
            limit = f"run {run} forecasts" if horizon else "the file's forecasts have"
            why = f"step {int(step[row])}; {limit} steps 1 to {steps}"
        raise _Malformed(f"{where(row)} is not a valid forecast ({why})")
    step = step.astype(int)
    # predict ends every ticker's forecast with its last step: a file whose last row is an
    # earlier one, and its ticker's last, was cut at a line end (a crash, a full disk)
    last = step[-1]
    if last < steps and step[pair == pair[-1]].max() == last:
        at = f"{where(len(step) - 1)}, step {last} of {ticker[-1]}'s {steps}"
        raise _Malformed(f"it ends at {at} (the file was cut short?)")
    return pd.DataFrame(
        {
            "ticker": ticker,
            "as_of": as_of,
            "date": date,
            "step": step,
            **dict(zip(_PRICES, prices.T)),
            "model": text["model"],
            "file": path.name,
        }
    )


def _days(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Each column's dates, written ``YYYY-MM-DD``, as datetime64[ns], NaT where a field is no
    such date; and the first column's dates' places among its distinct dates (NaT's all one, 0).
    Each distinct field is parsed once (a file holds a few dates, on many rows); two fields of
    one date (2024-01-05, 2024-1-5, which the format reads alike) have one place."""
    at, distinct = pd.factorize(np.concatenate(columns))
    day = pd.to_datetime(np.asarray(distinct, dtype=object), format="%Y-%m-%d", errors="coerce")
    # a year the bars' dates cannot hold (3024 for 2024) is no forecast date: NaT, a bad row
    day = day.where((day >= pd.Timestamp.min) & (day <= pd.Timestamp.max)).astype("datetime64[ns]").to_numpy()
    same, _ = pd.factorize(day)  # each distinct field's date among the distinct dates; NaT: -1
    parts = np.split(at, np.cumsum([len(c) for c in columns])[:-1])
    return [day[p] for p in parts], same[parts[0]] + 1


def _empty_why(path: Path) -> str:
    """Why a file pandas finds no columns in is skipped: empty (0 bytes: a write that never
    happened, a full disk), or only blank lines."""
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    return "it is empty (0 bytes)" if size == 0 else "it holds only blank lines, no header"


def _cut_in_header(path: Path) -> bool:
    """True when the whole file is the start of the header predict writes, cut off before its
    line break."""
    try:
        text = path.read_bytes()[:200].decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return False
    return bool(text) and ",".join(FORECAST_COLUMNS).startswith(text)


def _latest_copies(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """All forecasts, each (ticker, as_of, step) once: from the latest file that holds it."""
    if not frames:
        empty = {c: pd.Series(dtype=float) for c in ["step", *_PRICES]}
        none = pd.Series(dtype=str)
        days = {"as_of": pd.to_datetime([]), "date": pd.to_datetime([])}
        return pd.DataFrame({"ticker": none, **days, **empty, "model": none, "file": none})
    df = pd.concat(frames, ignore_index=True)  # files in date order
    return df.drop_duplicates(["ticker", "as_of", "step"], keep="last").reset_index(drop=True)


def _live_only(forecasts: pd.DataFrame, ends: dict[str, pd.Timestamp], warnings: list[str]) -> pd.DataFrame:
    """The forecasts made from the end of the run's data on: those whose ``as_of`` is before
    their ticker's last bar in the run (``predict --as-of`` a day the run was trained,
    validated or tested on) forecast sessions the run had read, so they are left out, in one
    warning saying how many. A forecast as of that last bar (``predict`` right after ``train``)
    forecasts only sessions after it: live."""
    last = forecasts["ticker"].map(ends)
    inside = (forecasts["as_of"] < last).to_numpy()
    if not inside.any():
        return forecasts
    made = forecasts[inside].drop_duplicates(["ticker", "as_of"])
    n = len(made)
    days = sorted({str(d.date()) for d in made["as_of"]})
    shown = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    what = "1 forecast" if n == 1 else f"{n} forecasts"
    verb = "is" if n == 1 else "are"
    warnings.append(
        f"{what} made as of {shown}, before the end of the run's data ({_ends(ends)}), {verb} in-sample "
        "(predict --as-of a day of the data the run was trained, validated and tested on) and not scored as live"
    )
    return forecasts[~inside].reset_index(drop=True)


def _ends(ends: dict[str, pd.Timestamp]) -> str:
    """The run's last bar: one date when its tickers share it, else the range of its tickers'
    (a line, whatever the number of tickers)."""
    days = sorted({str(d.date()) for d in ends.values()})
    if len(days) == 1:
        return f"its last bar {days[0]}"
    return f"its tickers' last bars, {days[0]} to {days[-1]}"


def _closes(tickers: list[str], source: str, data_dir: PathLike, warnings: list[str]) -> dict[str, pd.Series | str]:
    """Each ticker's closes from the source, or the reason they cannot be read (bars dated
    after today, a typo'd year, among them: predict refuses them too, and they would make every
    pending forecast look like one for a session the data lacks). The reader's warnings (gaps,
    rows repaired or dropped) go into ``warnings``."""
    out: dict[str, pd.Series | str] = {}
    for sym in tickers:
        try:
            with warnings_into(warnings):
                bars = load_bars(source, Path(data_dir), [sym], warn_of_gaps=False)[sym]
        except ForecasterError as exc:
            out[sym] = f"no actuals: {str(exc).removeprefix(f'{sym}: ')}"  # the ticker is named by the caller
            continue
        if ahead := dated_after_today(bars.index):  # a gap up to that bar would be no news
            out[sym] = f"no actuals: {ahead}; fix the data"
            continue
        with warnings_into(warnings):
            warn_gaps(bars, sym)
        out[sym] = bars["close"]
    return out


def _with_actuals(forecasts: pd.DataFrame, closes: dict[str, pd.Series], warnings: list[str]) -> pd.DataFrame:
    """The rows ``metrics_table`` scores: one per forecast of a ticker with bars, its actual
    (NaN while pending) and the naive forecast, prices in the data's current adjustment.

    The rows are grouped by ticker (in ticker order), each ticker's in the order of
    ``forecasts``. Each column is one array filled ticker by ticker, and the frame is made once:
    years of daily forecasts of many tickers are held once more, not once per step of the way."""
    codes, names = pd.factorize(forecasts["ticker"].astype(str), sort=True)
    with_bars = np.array([name in closes for name in names], dtype=bool)
    order = np.argsort(codes, kind="stable")
    order = order[with_bars[codes[order]]]  # the rows of tickers with bars, ticker by ticker
    starts = np.searchsorted(codes[order], np.arange(len(names) + 1))
    dates_all = forecasts["date"].to_numpy()[order]
    origins_all = forecasts["as_of"].to_numpy()[order]
    steps_all = forecasts["step"].to_numpy()[order]
    last_close = forecasts["last_close"].to_numpy(dtype=float)[order]
    n = len(order)
    actual, at = np.full(n, np.nan), np.zeros(n, dtype=np.int64)
    factor, drop = np.ones(n), np.zeros(n, dtype=bool)
    for code, sym in enumerate(names):
        if not with_bars[code]:  # every ticker named has rows: names come from the forecasts
            continue
        rows = slice(starts[code], starts[code + 1])
        close = closes[sym]
        dates, origins, steps = pd.DatetimeIndex(dates_all[rows]), pd.DatetimeIndex(origins_all[rows]), steps_all[rows]
        known = dates <= close.index[-1]
        actual[rows] = close.reindex(dates).to_numpy(dtype=float)
        missing = known & np.isnan(actual[rows])
        if missing.any():
            days = sorted({str(d.date()) for d in dates[missing]})
            shown = ", ".join(days[:MISSING_SHOWN]) + (" ..." if len(days) > MISSING_SHOWN else "")
            count = int(missing.sum())
            what = "1 forecast" if count == 1 else f"{count} forecasts"
            where = "a session" if len(days) == 1 else "sessions"
            warnings.append(
                f"{sym}: {what} for {where} the data does not have ({shown}); "
                f"the calendar and the data disagree, so {'it is' if count == 1 else 'they are'} not scored"
            )
        # step h's actual is the data's h-th bar after the forecast's as_of, as in training: a
        # date the calendar puts elsewhere (the data of another exchange) would score the wrong bar
        bars = close.index.searchsorted(dates, side="right") - close.index.searchsorted(origins, side="right")
        for astray, why in (
            (
                known & ~missing & (bars > steps),
                "the data have bars on days the calendar does not trade (set data.calendar to the ticker's exchange)",
            ),
            (
                known & ~missing & (bars < steps),
                "the data lack sessions of the calendar there (a gap, or the ticker's exchange was closed: check "
                "data.calendar)",
            ),
        ):
            if not astray.any():
                continue
            first = np.flatnonzero(astray)[0]
            count = int(astray.sum())
            what = "1 forecast is" if count == 1 else f"{count} forecasts are"
            warnings.append(
                f"{sym}: {what} dated other than the data's bars (e.g. step {steps[first]} as of "
                f"{origins[first].date()}, dated {dates[first].date()}, which is bar {bars[first]} of the data after "
                f"it): {why}, so {'it is' if count == 1 else 'they are'} not scored"
            )
            missing = missing | astray
        drop[rows] = missing
        # the origin's place in the ticker's bars: how many are on or before it, so that step h is
        # bar at + h - 1 whether the origin's own bar is there or gone from the data since
        at[rows] = close.index.searchsorted(origins, side="right")
        now = close.reindex(origins).to_numpy(dtype=float)
        then = last_close[rows]
        factor[rows] = np.where(np.isfinite(now) & (np.abs(now / then - 1) > REVISION_RTOL), now / then, 1.0)
    keep = order[~drop]
    kept = ~drop
    return pd.DataFrame(
        {
            "ticker": names[codes[keep]],
            "origin": origins_all[kept],  # dates order as their text does
            "at": at[kept],
            "date": dates_all[kept],
            "step": steps_all[kept],
            "actual": actual[kept],
            **{q: forecasts[q].to_numpy(dtype=float)[keep] * factor[kept] for q in ("last_close", "p10", "p50", "p90")},
        },
        columns=["ticker", "origin", "at", "date", "step", "actual", "last_close", "p10", "p50", "p90"],
        copy=False,  # each array is new: not copied once more into the frame
    )


def _overdue(pred: pd.DataFrame, closes: dict[str, pd.Series], calendar: str, staleness: int, now) -> list[str]:
    """One warning per ticker whose pending forecasts include sessions that have closed while
    its bars end more than ``staleness`` sessions before the latest completed session: a feed
    that stopped, whose forecasts would otherwise wait unscored, without a word, for ever."""
    waiting = pred[pred["actual"].isna()]
    if waiting.empty:
        return []
    try:
        latest = last_completed_session(now, calendar)
    except (ValueError, ForecasterError):  # a calendar without data for today: predict says so
        return []
    out = []
    for sym, rows in waiting.groupby("ticker", sort=True):
        dates = pd.DatetimeIndex(rows["date"])
        dates = dates[dates <= latest]
        if dates.empty:
            continue
        last = closes[sym].index[-1]
        try:
            behind = sessions_after_count(last, latest, calendar)
        except (ValueError, ForecasterError):
            continue
        if behind <= staleness:
            continue
        what = "1 forecast" if len(dates) == 1 else f"{len(dates)} forecasts"
        out.append(
            f"{sym}: {what} for sessions that have closed ({dates.min().date()} to {dates.max().date()}) "
            f"wait for their closes, but its bars end {last.date()}, {behind} sessions before the latest "
            f"completed one ({latest.date()}): its data are not being refreshed (run `forecaster download` or "
            "`predict`, or update its file)"
        )
    return out


def score_table(pred: pd.DataFrame, model: str) -> pd.DataFrame:
    """``score.csv`` (SPEC §9) from forecasts with their actuals (NaN: pending).

    ``pred`` has one row per forecast: ``ticker, origin, step, actual, last_close, p10, p50,
    p90``. The metrics are ``evaluate``'s (``metrics_table``) with the naive forecast the last
    close; ``n`` counts the scored forecasts, ``pending`` those whose actual is not known yet.
    """
    if pred.empty:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    waiting = pred["actual"].isna()
    gone = waiting.to_numpy()
    # a pending forecast keeps its group in the table but adds to no metric (width included)
    scored = {c: np.where(gone, np.nan, pred[c].to_numpy(dtype=float)) for c in ("p10", "p50", "p90", "last_close")}
    frame = pd.DataFrame(
        {
            **{c: pred[c] for c in ("ticker", "origin", "step", "actual", "last_close")},
            **{c: scored[c] for c in ("p10", "p50", "p90")},
            "naive": scored["last_close"],
        },
        copy=False,
    )
    table = metrics_table(frame, model, {}, baselines=("naive",))
    mine = table[table["model"] == model].set_index(["ticker", "step"])
    naive = table[table["model"] == "naive"].set_index(["ticker", "step"])["mae"]
    pending = pd.concat(
        [
            waiting.groupby([pred["ticker"], pred["step"]]).sum(),
            waiting.groupby(pred["step"]).sum().rename(lambda s: (POOLED, s)),
        ]
    )
    pending.index = pd.MultiIndex.from_tuples(list(pending.index), names=["ticker", "step"])
    out = mine.assign(mae_naive=naive, pending=pending.reindex(mine.index).fillna(0).astype(int))
    out = out.reset_index()[SCORE_COLUMNS]
    out["n"] = out["n"].astype(int)
    return out.reset_index(drop=True)
