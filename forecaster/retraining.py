"""Champion and challenger: retrain a promoted name and promote the new run only if it is not worse.

:func:`retrain` trains a challenger with the champion's config (command-line overrides on top)
on the data as the source holds it now, into ``runs/NAME-YYYYmmdd-HHMMSS``. Both are then
backtested walk-forward (:func:`forecaster.evaluation.walk_forward`, the forecasts ``evaluate``
makes) on the same sessions: the challenger's test split, the last ``test_days`` sessions. Each
forecast uses data up to its origin only; the champion keeps its own normalisation and interval
calibration. The challenger's intervals are tracked from its validation scales; the champion's
from its own test split's start on, through every session since, so each is the interval it
issued live (``predict`` brings its scale up to date the same way), not one started afresh from
a validation scale a year old. Only the (ticker, origin, step) forecasts that both made are
compared.

The challenger is promoted when, on those forecasts, its mean pinball loss is not higher than
the champion's and its median's absolute errors are not significantly larger (one-sided
Diebold–Mariano test of "the champion is more accurate" at ``alpha``, on the difference of the
absolute errors averaged over every ticker and step of each origin, in origin order, with ``h``
the horizon). A tie goes to the challenger: it has seen the newer data. Where the challenger's
test split starts before the champion's (a longer ``--test-days``), the champion walks forward
from there instead, its validation split perhaps overlapping the first sessions compared; that
can only flatter the champion.

The name's lock is held throughout: a second retrain or a promote of the same name waits
``lock_timeout`` seconds and then exits 75. The pointer moves only after the challenger is
written whole and has won, so a failed, refused or killed challenger leaves it as it was.
"""

from __future__ import annotations

import logging
import math
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .checkpoint import NAME_LOCK, Run, load_run
from .config import QUANTILES, load_config
from .errors import RESULT, ConfigError, DataError, ForecasterError, LockBusy
from .evaluation import walk_forward
from .fsio import PathLike, file_lock, refuse_empty_folders
from .metrics import coverage, diebold_mariano_differential, mae, pinball_rows, skill, width
from .registry import (
    DEFAULT_KEEP,
    DEFAULT_RUNS_DIR,
    _finished,
    champion,
    check_writable,
    lock_path,
    new_run_dir,
    pointer_path,
    pointer_target,
    prune,
    runs_dir_option,
    switch,
)
from .store import load_bars
from .tickers import some_names, validate_ticker
from .training import Interrupted, raise_if_stopped, sigterm_as_interrupt, train

log = logging.getLogger("forecaster")

ALPHA = 0.05
"""Significance of the test that would keep the champion because the challenger's MAE is worse."""

_KEY = ["ticker", "origin", "step"]


@dataclass
class Figures:
    """One model's walk-forward figures on the forecasts both models made."""

    run: str
    n: int
    mae: float
    mae_naive: float
    skill: float
    pinball: float
    coverage: float
    width: float


@dataclass
class Comparison:
    champion: Figures
    challenger: Figures
    dm_pvalue: float  # small: the champion's absolute errors are significantly smaller
    alpha: float
    test_start: str
    promote: bool
    reason: str
    forecasts: pd.DataFrame  # the forecasts compared: walk_forward's columns, _a champion, _b challenger


@dataclass
class RetrainReport:
    name: str
    pointer: Path
    champion: Path
    challenger: Path
    promoted: bool
    comparison: Comparison
    removed: list[Path] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The report as JSON-able values (NaN as None)."""
        c = self.comparison
        roles = (("champion", c.champion), ("challenger", c.challenger))
        return {
            "name": self.name,
            "promoted": self.promoted,
            "champion": self.champion.name,
            "challenger": self.challenger.name,
            "pointer": str(self.pointer),
            "points_to": (self.challenger if self.promoted else self.champion).name,
            "reason": c.reason,
            "test_start": c.test_start,
            "alpha": c.alpha,
            "dm_pvalue": _number(c.dm_pvalue),
            "figures": {role: {k: _number(v) for k, v in vars(f).items()} for role, f in roles},
            "removed": [p.name for p in self.removed],
        }


def retrain(
    name: str,
    *,
    overrides: dict | None = None,
    runs_dir: PathLike = DEFAULT_RUNS_DIR,
    keep: int = DEFAULT_KEEP,
    alpha: float = ALPHA,
    lock_timeout: float = 0.0,
    on_epoch=None,
    on_batch=None,
    now: datetime | None = None,
) -> RetrainReport:
    """Train a challenger for the promoted ``name``, compare it with the champion, promote it
    when it is not worse, and keep the newest ``keep`` run directories of the name.

    Raises LockBusy (exit 75) when the name is locked, a ForecasterError (exit 1) when there is
    no champion, the data are bad or training fails (a NaN loss); the pointer is untouched then.
    """
    refuse_empty_folders(runs_dir=runs_dir, required=("runs_dir",))
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must be a significance level from 0 to 1, not {alpha!r}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:  # before the training, not after it
        raise ConfigError(f"keep must be a whole number of runs, at least 1, not {keep!r}")
    runs_dir = Path(runs_dir)
    pointer = pointer_path(name, runs_dir)
    # SIGTERM (systemctl stop) from the first check of the champion on stops it like Ctrl-C
    # (exit 130), with one line
    with sigterm_as_interrupt(), ExitStack() as held:
        champ_dir = run_dir = None
        stage = "before it waited for the lock on the name"
        try:
            champion(name, runs_dir)  # no champion: refused before the lock file (or a mistyped folder) is made
            check_writable(f"retrain {name}", name, runs_dir)  # before the lock files: neither could be made
            stage = "while it waited for the lock on the name"
            held.enter_context(file_lock(lock_path(name, runs_dir), lock_timeout, purpose=NAME_LOCK))
            stage = "before the challenger trained"  # the champion is loaded, the challenger's config built
            champ_dir = champion(name, runs_dir)
            champ = load_run(champ_dir)
            run_dir = new_run_dir(name, runs_dir, now or datetime.now(UTC))
            cfg = load_config(None, {**(overrides or {}), "run_dir": str(run_dir)}, base=_stored(champ))
            _check_comparable(champ, cfg.data.tickers)
            log.info("training challenger %s with %s's config", run_dir, champ.name)
            stage = "while the challenger trained"
            # a challenger that diverges writes nothing: it is never compared, so it could only be
            # pruned, one day, in place of a finished run
            train(
                cfg,
                run_dir=run_dir,
                on_epoch=on_epoch,
                on_batch=on_batch,
                lock_timeout=lock_timeout,
                keep_diverged=False,
                distributed=False,  # one process, whatever a job runner sets
                checkpoints=False,  # a challenger cut short is trained again, never resumed
            )
            stage = "before the challenger was compared"
            # a stop whose interrupt Python dropped (raised in a finalizer) stops it at the next stage
            raise_if_stopped()
            chall = load_run(run_dir)
            names = [s for s in chall.names if s in champ.manifest.tickers]
            # the bars the challenger trained on, of which training has warned already
            bars = load_bars(cfg.data.source, cfg.data.data_dir, names, warn_of_gaps=False) if names else {}
            # a champion's ticker that the challenger was to forecast but skipped (too short now)
            dropped = {
                s: chall.manifest.skipped.get(s, "not trained")
                for s in map(validate_ticker, cfg.data.tickers)
                if s in champ.manifest.tickers and s not in chall.manifest.tickers
            }
            comparison = compare(champ, chall, bars, alpha, dropped=dropped)
            # the command's result: the CLI prints it on stdout, so it is marked to stay off stderr
            log.info("%s", comparison.reason, extra={RESULT: True})
            stage = WON if comparison.promote else "after the comparison"
            raise_if_stopped()
            if comparison.promote:
                switch(pointer, run_dir)
            stage = "after the comparison"
            raise_if_stopped()
            removed = prune(name, keep, runs_dir).removed
        except (KeyboardInterrupt, Interrupted):
            raise _interrupted(name, runs_dir, champ_dir, run_dir, stage) from None
        except ForecasterError as exc:
            # a cron mail says what failed and that the name is as it was (the error's own type,
            # and so exit code, kept); a busy lock says so itself, and a won comparison moved it
            untouched = champ_dir is not None and stage not in (WON, "after the comparison")
            if untouched and not isinstance(exc, LockBusy) and len(exc.args) == 1:
                where = f"{pointer} still points at {champ_dir.name}"
                exc.args = (f"retrain of {name} failed {stage} ({where}): {exc}",)
            raise
    return RetrainReport(
        name=name,
        pointer=pointer,
        champion=champ_dir,
        challenger=run_dir,
        promoted=comparison.promote,
        comparison=comparison,
        removed=removed,
    )


WON = "after the comparison, which the challenger won"
"""The stage of a retrain whose challenger won, until the name points at it."""


def _interrupted(name: str, runs_dir: Path, champ_dir: Path | None, run_dir: Path | None, stage: str) -> Interrupted:
    """What an interrupted retrain left: where the name points, and the challenger's run. Not
    `train --resume`, which training's own message advises: that would finish the challenger
    but never compare it with the champion. Its ``details`` are those keys of
    :meth:`RetrainReport.as_dict` that apply. ``champ_dir`` and ``run_dir`` are None when the
    signal came before they were known."""
    pointer = pointer_path(name, runs_dir)
    target = pointer_target(pointer)
    promoted = target is not None and run_dir is not None and target.name == run_dir.name
    written = promoted or (run_dir is not None and (run_dir / "run.json").is_file())
    if promoted:
        left = f"the challenger {run_dir} was promoted"
    elif stage == WON:  # stopped as the name was to be switched: still the champion's
        left = f"the challenger {run_dir} won the comparison but was not promoted: the name was not switched yet"
    elif stage == "after the comparison":
        left = f"the challenger {run_dir} was compared and not promoted"
    elif written:
        # a stop as the challenger's training returned finds its run written whole: trained
        done = "unfinished" if stage == "while the challenger trained" and not _finished(run_dir) else "trained"
        left = f"the challenger {run_dir} is left {done}, not compared and not promoted"
    else:
        left = "no challenger run was written"
    details = {
        "name": name,
        "promoted": promoted,
        "champion": (champ_dir or target).name if (champ_dir or target) else None,
        "challenger": run_dir.name if written else None,
        "pointer": str(pointer),
        "points_to": target.name if target else None,
    }
    return Interrupted(
        f"retrain of {name} interrupted {stage}: {pointer} points at {target.name if target else 'nothing'}; "
        f"{left}. Run `forecaster retrain {name}{runs_dir_option(runs_dir)}` again to train and compare a new "
        "challenger",
        details,
    )


def _check_comparable(champ: Run, tickers: list[str]) -> None:
    """Refuse, before hours of training, a challenger that could not be compared with the
    champion: one whose tickers are none of the champion's."""
    asked = [validate_ticker(t) for t in tickers]
    if asked and not any(s in champ.manifest.tickers for s in asked):
        raise ConfigError(
            f"the challenger's tickers ({some_names(asked)}) are none of the champion's "
            f"({some_names(champ.names)}), so the two could not be compared: "
            f"retrain with at least one of them, or train a new run and promote it"
        )


def _number(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _stored(run: Run) -> dict:
    """The champion's config as a base for the challenger's (without its own run directory)."""
    tree = run.config.model_dump(mode="json")
    tree.pop("run_dir", None)
    return tree


def compare(
    champ: Run, chall: Run, bars: dict[str, pd.DataFrame], alpha: float = ALPHA, dropped: dict[str, str] | None = None
) -> Comparison:
    """Both runs walk forward over the challenger's test split of ``bars``; the verdict. A
    challenger that ``dropped`` some of the champion's tickers (ticker: why) is never promoted:
    the name would stop forecasting them."""
    if not bars:
        raise DataError(f"{champ.name} and {chall.name} have no ticker in common: nothing to compare")
    window = champ  # its intervals as issued live: tracked from its own test split's start
    if chall.manifest.splits.test_start < champ.manifest.splits.test_start:
        window = replace(champ, manifest=champ.manifest.model_copy(update={"splits": chall.manifest.splits}))
    pred = {
        "champion": walk_forward(window, {s: b for s, b in bars.items() if s in champ.manifest.tickers}),
        "challenger": walk_forward(chall, {s: b for s, b in bars.items() if s in chall.manifest.tickers}),
    }
    both = pred["champion"].merge(pred["challenger"], on=[*_KEY, "date"], suffixes=("_a", "_b"))
    both = both.sort_values(["ticker", "step", "origin"], kind="mergesort").reset_index(drop=True)
    if both.empty:
        raise DataError(f"{champ.name} and {chall.name} made no forecast for the same session: nothing to compare")
    actual = both["actual_a"].to_numpy(dtype=float)
    figs = {
        role: _figures(run.name, both, actual, suffix)
        for role, run, suffix in (("champion", champ, "_a"), ("challenger", chall, "_b"))
    }
    p = _champion_better_pvalue(both, actual, int(both["step"].max()))
    a, b = figs["champion"], figs["challenger"]
    finite = np.isfinite(both[["p10_b", "p50_b", "p90_b"]].to_numpy(dtype=float)).all()
    worse_pinball = not b.pinball <= a.pinball
    worse_mae = not math.isnan(p) and p < alpha
    promote = bool(finite and not worse_pinball and not worse_mae and not dropped)
    test_start = str(chall.manifest.splits.test_start)
    reason = _reason(champ.name, a, b, p, alpha, test_start, finite=finite, promote=promote, dropped=dropped)
    return Comparison(a, b, p, alpha, test_start, promote, reason, both)


def _champion_better_pvalue(both: pd.DataFrame, actual: np.ndarray, horizon: int) -> float:
    """The one-sided Diebold-Mariano p-value of "the champion's median errors are smaller than the
    challenger's": the test of the difference of their absolute errors averaged over every ticker
    and step of each origin, the origins in time order, with ``h`` the horizon.

    The differences of one origin are far from independent: its steps share sessions (the 4- and
    5-step errors share four), and the tickers share the day's market. Tested as one series of
    every ticker and step, those of one origin lie far apart, where the test's h - 1 lags do not
    reach them, so it took them as independent and found two equally good runs significantly
    different about one time in five at 0.05. One mean per origin leaves only the overlap of
    consecutive origins, which the h - 1 lags cover. NaN (no verdict) without three origins
    compared."""
    d = np.abs(actual - both["p50_a"].to_numpy(dtype=float)) - np.abs(actual - both["p50_b"].to_numpy(dtype=float))
    per_origin = pd.Series(d).groupby(both["origin"].to_numpy(), sort=True).mean()
    return diebold_mariano_differential(per_origin.to_numpy(dtype=float), h=horizon)[1]


def _reason(
    champ: str,
    a: Figures,
    b: Figures,
    p: float,
    alpha: float,
    test_start: str,
    *,
    finite: bool,
    promote: bool,
    dropped: dict[str, str] | None = None,
) -> str:
    """The verdict in one line: which run stays, why, and the figures compared."""
    if not finite:
        return f"{b.run} is not promoted, {champ} stays: some of its forecasts are not finite"
    if dropped:
        lost = "; ".join(f"{s}: {why}" for s, why in dropped.items())
        return (
            f"{b.run} is not promoted, {champ} stays: it does not forecast {', '.join(dropped)}, which {champ} "
            f"forecasts ({lost}); retrain with -t naming the others to drop {'it' if len(dropped) == 1 else 'them'}"
        )
    dm = "DM p n/a: identical or too few errors" if math.isnan(p) else f"one-sided DM p={p:.3g}"
    pin_b, pin_a = _apart(b.pinball, a.pinball)
    mae_b, mae_a = _apart(b.mae, a.mae)
    figures = (
        f"pinball {pin_b} against the champion's {pin_a}, MAE {mae_b} against {mae_a} "
        f"({dm}), {b.n} forecasts from {test_start}"
    )
    if promote:
        return f"{b.run} is promoted over {champ}: {figures}"
    why = []
    if not b.pinball <= a.pinball:
        why.append("higher pinball loss")
    if not math.isnan(p) and p < alpha:
        why.append(f"significantly larger errors at {alpha}")
    return f"{b.run} is not promoted, {champ} stays ({' and '.join(why)}): {figures}"


def _apart(x: float, y: float) -> tuple[str, str]:
    """``x`` and ``y`` with 4 significant digits, more when that would print two different
    numbers the same (a verdict decided by the 5th digit shows it)."""
    for digits in range(4, 16):
        fx, fy = f"{x:.{digits}g}", f"{y:.{digits}g}"
        if fx != fy or x == y:
            break
    return fx, fy


def _figures(run: str, both: pd.DataFrame, actual: np.ndarray, suffix: str) -> Figures:
    lo, mid, hi = (both[f"{q}{suffix}"].to_numpy(dtype=float) for q in ("p10", "p50", "p90"))
    naive = both[f"naive{suffix}"].to_numpy(dtype=float)
    losses = pinball_rows(actual, dict(zip(QUANTILES, (lo, mid, hi), strict=True)))
    m, m_naive = mae(actual, mid), mae(actual, naive)
    return Figures(
        run=run,
        n=int(len(both)),
        mae=m,
        mae_naive=m_naive,
        skill=skill(m, m_naive),
        pinball=float(np.mean(losses)),
        coverage=coverage(actual, lo, hi),
        width=width(lo, hi),
    )
