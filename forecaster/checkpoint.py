"""The run-directory format, in one place.

A run is ``model.safetensors`` (weights only), ``run.json`` (the :class:`Manifest`: everything
needed to rebuild and use the model) and ``history.csv`` (one row per epoch); an interrupted run
also has ``resume.safetensors`` (the :class:`ResumeState` training continues from). Nothing is
pickled and loading never executes code from the files: tensors go through safetensors (numpy
arrays, so reading a run never needs torch), everything else is JSON checked field by field.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import shlex
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file
from safetensors.numpy import save as save_tensors

from .config import Config, said
from .errors import DataError, RunFormatError, RunWriteError, TickerError
from .features import CALENDAR, FEATURES, KNOWN_FEATURES, Scaler
from .fsio import (
    NotARegularFile,
    PathLike,
    follow_link,
    links_in,
    lock_holder,
    lock_holding,
    publish_files,
    read_own_file,
    refuse_empty_folders,
    remove_stale_temp_dirs,
    replace_dir,
    sibling_temp_dir,
)
from .npinfer import NumpyQuantileRNN, config_shapes
from .tickers import NAMED_TICKERS, given_tickers, some_names, validate_ticker
from .windows import Splits, WindowSet, build_windows

FORMAT_VERSION = 3
"""The run format this forecaster writes. It reads every earlier one too (see :func:`_migrate`)."""
WEIGHTS, META, HISTORY, RESUME = "model.safetensors", "run.json", "history.csv", "resume.safetensors"
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "grad_norm", "lr", "seconds", "samples"]
TARGET = "log(close[t+h]/close[t]) / (ret_std*sqrt(h))"
"""What the network's outputs are, in words, with ``model.target_scale = "ticker"`` (and what
every run said before runs said which scale they used)."""


def target_formula(model) -> str:
    """What a run's targets are, in words, for run.json: ``model`` is the run's ModelConfig."""
    if model.target_scale == "ticker":
        return TARGET
    return (
        "log(close[t+h]/close[t]) / (local_vol[t]*sqrt(h)); local_vol: the range-based volatility of one "
        f"session at the origin, half-life {model.scale_halflife} sessions"
    )


_RESERVED_NAMES = {"", ".", ".."}


def unusable_run_name(name: str) -> str | None:
    """Why ``name`` cannot name a run (None: it can). The name becomes a folder under the
    forecast directory, so it must be one plain path component, printable, of at most 200 bytes."""
    if (
        name in _RESERVED_NAMES
        or len(name.encode("utf-8", "surrogateescape")) > 200
        or any(ch in name for ch in "/\\\0")
        or not name.isprintable()
    ):
        return f"unusable run name {ascii(name[:40])}: it must be a plain folder name"
    return None


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GarchFit(_Record):
    """The garch baseline's parameters for the test split, fitted once at training on the returns
    up to its first origin (the fit evaluate would otherwise make), and that origin's session and
    close, so evaluate uses them only on the same bars."""

    omega: float
    alpha: float
    gamma: float
    beta: float
    nu: float
    origin: date
    close: float


class TickerEntry(_Record):
    """One ticker of a run: its embedding id, the bars it was trained on, its normalisation and
    its interval scales."""

    id: int = Field(ge=0)
    first_date: date
    last_date: date
    rows: int = Field(ge=0)
    train_rows: int = Field(ge=0)
    scaler: Scaler
    conformal: list[float] = Field(description="validation-split interval scale per step")
    conformal_online: list[float] | None = Field(
        None, description="the scale tracked online to the last bar, for forecasts from it on"
    )
    conformal_pending: list[list[float]] | None = Field(
        None,
        description="the scales in force at the last horizon - 1 test origins, oldest first: their outcomes "
        "after the last bar count as they are known",
    )
    garch: GarchFit | None = Field(None, description="the garch baseline's fit at the first test origin")


class FeatureSpec(_Record):
    names: list[str]
    target: str = TARGET
    interval: str | None = Field(None, description="how the intervals were made, in words (older runs)")


class SplitDates(_Record):
    val_start: date
    test_start: date

    def splits(self) -> Splits:
        return Splits.from_dict(self.model_dump(mode="json"))


class NoValidation(_Record):
    """A ticker trained on without validation windows: where its bars end, and where the
    validation split starts."""

    last_date: date
    split_start: date


class RunMetrics(_Record):
    best_epoch: int | None
    best_val_loss: float | None
    epochs_run: int = Field(ge=0)
    train_seconds: float
    interval_coverage_target: float


class Origin(_Record):
    """Where a run's configuration came from when a search chose it: a tuning study's best trial."""

    study: str
    trial: int = Field(ge=0, description="the trial's number in the study")
    val_loss: float = Field(description="the trial's validation pinball loss (best epoch)")
    storage: str = Field(description="where the study lives (any password hidden)")


class Manifest(_Record):
    """``run.json``: the resolved config, the tickers and their statistics, the splits, what the
    run was trained on, and how."""

    format_version: int = FORMAT_VERSION
    name: str
    status: Literal["complete", "interrupted"] = "complete"
    created_at: datetime
    config: Config
    features: FeatureSpec
    tickers: dict[str, TickerEntry]
    skipped: dict[str, str] = Field(default_factory=dict)
    no_validation: dict[str, NoValidation] = Field(
        default_factory=dict,
        description="tickers without validation windows: bars ending before the validation split or "
        "fewer than horizon sessions into it (last date, split start)",
    )
    splits: SplitDates
    windows: dict[str, int]
    data_hash: str
    seed: int
    device: str
    world_size: int = Field(1, ge=1)
    metrics: RunMetrics
    versions: dict[str, str]
    median_weight: list[float] | None = Field(
        None, description="per step, the weight of the network's median against the last close (None: 1)"
    )
    origin: Origin | None = Field(None, description="the tuning study that chose the config, if one did")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if (why := unusable_run_name(name)) is not None:
            raise ValueError(why)
        return name

    @property
    def names(self) -> list[str]:
        """Every ticker the model knows, in embedding order."""
        return sorted(self.tickers, key=lambda s: self.tickers[s].id)

    def scalers(self) -> dict[str, Scaler]:
        return {s: t.scaler for s, t in self.tickers.items()}

    def conformal(self) -> dict[str, list[float]]:
        return {s: t.conformal for s, t in self.tickers.items()}

    def median_weights(self) -> list[float]:
        return self.median_weight or [1.0] * self.config.window.horizon

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"


@dataclass
class Run:
    """A loaded, complete run: its manifest and the network (numpy forward pass, eval mode)."""

    path: Path
    manifest: Manifest
    model: NumpyQuantileRNN

    @property
    def config(self) -> Config:
        return self.manifest.config

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def names(self) -> list[str]:
        return self.manifest.names

    def splits(self) -> Splits:
        return self.manifest.splits.splits()

    def windows(self, bars: dict[str, pd.DataFrame]) -> WindowSet:
        """The windows over ``bars`` (some of the run's tickers) with the run's normalisation,
        features and target scale, each ticker keeping its embedding id."""
        cfg = self.config
        return build_windows(
            bars,
            cfg.window.lookback,
            cfg.window.horizon,
            self.splits(),
            scalers={s: v for s, v in self.manifest.scalers().items() if s in bars},
            tickers=self.names,
            features=self.manifest.features.names,
            target_scale=cfg.model.target_scale,
            scale_halflife=cfg.model.scale_halflife,
            vol_halflife=cfg.intervals.vol_halflife,
        )

    def select(self, tickers: str | Iterable[str] | None) -> list[str]:
        """The tickers asked for (every one of the run's when None; see :func:`given_tickers`),
        checked: each a valid symbol the run was trained on."""
        given = given_tickers(tickers)
        names = list(dict.fromkeys(validate_ticker(t) for t in given)) if given is not None else self.names
        unknown = [t for t in names if t not in self.manifest.tickers]
        if unknown:
            known = self.names
            skipped = [t for t in unknown if t in self.manifest.skipped]
            why = f" ({skipped[0]} was skipped at training: {self.manifest.skipped[skipped[0]]})" if skipped else ""
            raise DataError(
                f"the run was not trained on {some_names(unknown)}{why}; "
                f"it knows {len(known)} ticker(s): {some_names(known)}"
                + (f" (`forecaster info {self.path}` lists them all)" if len(known) > NAMED_TICKERS else "")
            )
        return names


@dataclass
class ResumeState:
    """Where an interrupted training stopped: everything needed to continue exactly.

    ``optimizer`` maps a parameter's index to its optimiser slots (e.g. ``exp_avg``);
    ``param_groups`` and ``scheduler`` are the JSON-able parts of torch's state dicts.
    """

    epoch: int
    best_val: float
    stale: int
    model: dict[str, np.ndarray]
    best: dict[str, np.ndarray] | None
    optimizer: dict[int, dict[str, np.ndarray]]
    param_groups: list
    scheduler: dict
    generator: np.ndarray
    torch_rng: np.ndarray | None
    cuda_rng: np.ndarray | None = None  # the CUDA generator dropout draws from on a GPU
    fitted_on: dict[str, str] | None = None  # per ticker, the hash of its bars before the test split (None: not kept)


# --------------------------------------------------------------------------------- writing


def history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row[k] for k in HISTORY_COLUMNS})
    return buf.getvalue()


def check_run_target(run_dir: Path) -> None:
    """Refuse a place a run cannot be written to, before any work: a run replaces the whole
    directory it is written to, so that directory must be absent, empty or a run already (which
    is replaced: one whose run.json reads as a run's), never a promoted name, a file or a folder
    holding other files."""
    run_dir = Path(run_dir)
    if (why := unusable_run_name(run_dir.name)) is not None:  # its forecasts' folder is named after it
        raise RunFormatError(f"{why}: choose another run directory")
    if run_dir.is_symlink():  # the swap would replace the link with a directory
        raise RunFormatError(
            f"{run_dir} is a promoted name (a link to {follow_link(run_dir)}), not a place to write a run: "
            "train into another directory and promote it"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFormatError(f"{run_dir} is a file, not a place to write a run: choose another run directory")
    if names := promoted_names_of(run_dir):  # a stop mid-training would leave the name serving an unfinished run
        shown = ", ".join(str(n) for n in names)
        raise RunFormatError(
            f"{run_dir} is the run that the promoted name {shown} points at: training into it would replace the "
            f"model that name serves; train into another directory and promote it"
        )
    if run_dir.is_dir() and (run_dir / META).is_file():
        try:  # only a run is replaced: a stray run.json does not make a folder one
            read_manifest(run_dir)
        except (RunFormatError, OSError) as e:
            raise RunFormatError(
                f"{run_dir} is not a run directory ({e}): writing a run there would replace all of it; "
                "choose a new or empty run directory"
            ) from None
    elif run_dir.is_dir():
        found = sorted(p.name for p in run_dir.iterdir())
        if found:
            shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
            raise RunFormatError(
                f"{run_dir} is not a run directory (it holds {shown}): writing a run there would replace "
                "all of it; choose a new or empty run directory"
            )


def promoted_names_of(run_dir: Path) -> list[Path]:
    """The promoted names (links) beside ``run_dir`` that point at it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or run_dir.is_symlink():
        return []
    target = run_dir.resolve()
    beside = run_dir.parent if run_dir.name not in ("", ".", "..") else target.parent
    return [beside / link.name for link, to in links_in(target.parent).items() if to == target]


def save_run(
    run_dir: Path,
    weights: dict[str, np.ndarray],
    manifest: Manifest,
    history: list[dict],
    resume: ResumeState | None = None,
) -> Path:
    """Write a run into a temporary sibling directory, then move it into place whole. Called
    with the run's lock held: the temporary directories of earlier writers that were killed go."""
    run_dir = Path(run_dir)
    try:
        check_run_target(run_dir)  # a folder made unreadable since the training began cannot be looked into
        remove_stale_temp_dirs(run_dir)
        tmp = sibling_temp_dir(run_dir)  # a full disk may have no room for one more folder
    except OSError as exc:
        why = exc.strerror or exc
        raise RunWriteError(f"cannot write the run {run_dir}: {why}; nothing there was changed") from exc
    try:
        # serialised here and written by Python, whose errors (a full disk) are OSErrors
        (tmp / WEIGHTS).write_bytes(
            save_tensors(_contiguous(weights), metadata={"format_version": str(FORMAT_VERSION)})
        )
        (tmp / META).write_text(manifest.to_json())
        (tmp / HISTORY).write_text(history_csv(history))
        if resume is not None:
            tensors, meta = _flatten(resume)
            (tmp / RESUME).write_bytes(save_tensors(tensors, metadata=meta))
        publish_files(tmp)
        replace_dir(tmp, run_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RunWriteError(
            f"cannot write the run {run_dir}: {exc.strerror or exc}; nothing there was changed"
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def _contiguous(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v) for k, v in arrays.items()}


def _flatten(state: ResumeState) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A resume state as flat named arrays plus JSON metadata (the safetensors layout)."""
    tensors = {f"model.{k}": v for k, v in state.model.items()}
    tensors.update({f"best.{k}": v for k, v in (state.best or {}).items()})
    for i, slots in state.optimizer.items():
        tensors.update({f"opt.{i}.{name}": np.asarray(v) for name, v in slots.items()})
    tensors["generator"] = state.generator
    if state.torch_rng is not None:
        tensors["torch_rng"] = state.torch_rng
    if state.cuda_rng is not None:
        tensors["cuda_rng"] = state.cuda_rng
    meta = {
        "epoch": state.epoch,
        "best_val": state.best_val,
        "stale": state.stale,
        "param_groups": state.param_groups,
        "scheduler": state.scheduler,
        "fitted_on": state.fitted_on,
    }
    return _contiguous(tensors), {"state": json.dumps(meta, default=float)}


# --------------------------------------------------------------------------------- reading


def _runs_beside(path: Path) -> str:
    """Where ``path``'s folder holds runs (a name mistyped): the command that lists them."""
    try:
        if any((p / META).is_file() for p in path.parent.iterdir()):
            return f" (`forecaster info {shlex.quote(str(path.parent))}` lists the runs there)"
    except OSError:  # no folder there, or one that cannot be read
        pass
    return ""


def run_directory(path: PathLike) -> Path:
    """``path`` with a promoted name's link resolved once; a RunFormatError when no directory
    is there, which names the promoted name as well as the run it points at."""
    refuse_empty_folders(run_dir=path, required=("run_dir",))  # "" is no run, not the current folder
    path = Path(path)
    run_dir = follow_link(path)
    if run_dir.is_dir():
        return run_dir
    if path.is_symlink():
        try:
            os.path.realpath(path, strict=True)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RunFormatError(
                    f"{path} is a symbolic link that leads into a loop of links: promote a run to that name again"
                ) from None
    if run_dir == path:
        held = lock_holding(run_lock_path(path))
        if held and held[1] == NAME_LOCK:  # the first promote of the name, before its link is made
            raise RunFormatError(f"no run directory at {path} yet: it is being promoted ({held[0]})")
        if held:
            raise RunFormatError(f"no run directory at {path} yet: a training is writing it ({held[0]})")
        raise RunFormatError(f"no run directory at {path}{_runs_beside(path)}")
    what = "is not a run directory" if run_dir.exists() else "does not exist (deleted?)"
    raise RunFormatError(f"{path} points at {run_dir}, which {what}")


def why_no_manifest(run_dir: Path) -> str:
    """Why the folder ``run_dir`` holds no run.json: a training writing it, a training killed
    before its first save (an empty folder), or else it is missing."""
    if holder := lock_holder(run_lock_path(run_dir)):
        return f"not yet, a training is writing it ({holder})"
    try:
        empty = not any(Path(run_dir).iterdir())
    except OSError:
        empty = False
    if empty:
        return f"the folder is empty, no {META} (as a training stopped before its first save leaves it)"
    return f"{META} is missing"


def read_manifest(run_dir: PathLike) -> Manifest:
    """run.json, checked: present, JSON, this format version, every field of the right type.

    ``run_dir`` may be a promoted name (a symbolic link to a run directory)."""
    run_dir = run_directory(run_dir)
    path = run_dir / META
    try:
        raw = json.loads(read_own_file(path))
    except FileNotFoundError:
        raise RunFormatError(f"{run_dir} is not a run: {why_no_manifest(run_dir)}") from None
    except NotARegularFile as e:
        raise RunFormatError(f"{path} is {e} (a link to a device, a pipe): not a forecaster run") from None
    except (ValueError, RecursionError) as e:  # a JSON error, a number of over 4300 digits, deep nesting
        raise RunFormatError(f"{path} is not valid JSON ({_json_problem(e)})") from None
    if not isinstance(raw, dict) or "format_version" not in raw:
        raise RunFormatError(f"{path} has no format_version: not a forecaster run")
    version = raw["format_version"]
    if version not in READABLE_VERSIONS or isinstance(version, bool):  # true == 1
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise RunFormatError(
            f"{run_dir} has run format {version!r}; this forecaster reads formats "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
            + (" (the run was written by a newer forecaster: upgrade to use it)" if newer else "")
        )
    try:
        manifest = Manifest.model_validate(_migrate(raw))
    except ValidationError as e:
        raise RunFormatError(f"{path} is malformed: {_problems(e)}") from None
    _check_consistent(manifest, path)
    return manifest


READABLE_VERSIONS = (1, 2, 3)


def _json_problem(exc: Exception) -> str:
    """What ``json.loads`` found wrong, in a few words: its own message, or what a number too
    long for Python to read or a nesting too deep for its recursion limit is."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return str(exc)
    return "a number with too many digits" if "integer string conversion" in str(exc) else str(exc)


EARLIER_SETTINGS = {
    "model": {"ar_order": 0},
    "intervals": {"vol_halflife": 20, "tracking_rate": 0.05, "step_tracking": "separate"},
    "train": {"mode": "window", "burn_in_grad": True, "burn_in_dropout": True, "burn_in_ahead": False, "halves": False},
}
"""Settings that came later, by section, with the value each had before it existed: a run (or a
tune trial) that records none was made that way. Its median had no autoregressive term (its
weights hold none); it was trained one window per origin (before the forking mode); its
intervals followed an EWMA volatility of half-life 20 sessions and were tracked at rate 0.05
(format 1's constants, whatever today's defaults are), each step's scale alone; it
backpropagated through the burn-in, applied dropout there, computed each burn-in from the
weights of its own step, and computed each window batch whole."""


def as_made(config: dict) -> dict:
    """``config`` (a run's or a tune trial's settings, by section) with every setting of
    :data:`EARLIER_SETTINGS` it does not record at the value it was made with."""
    out = {**config}
    for section, earlier in EARLIER_SETTINGS.items():
        part = out.get(section, {})
        if isinstance(part, dict):
            out[section] = {**earlier, **part}
    return out


def _migrate(raw: dict) -> dict:
    """A run.json of an earlier format as the current format describes it, with the settings it
    was made with. Format 1 predates the local target scale and the median gate: its targets
    were divided by the ticker's training volatility and its median was always the network's. A
    setting of :data:`EARLIER_SETTINGS` it does not record (the highway's, of format 1 and of
    the first format 2 runs) reads as it was then."""
    if not isinstance(raw.get("config"), dict):
        return raw
    config = {**raw["config"]}
    if raw.get("format_version") == 1 and isinstance(config.get("model"), dict):
        config["model"] = {"target_scale": "ticker", "median_alpha": 1.0, **config["model"]}
    return {**raw, "config": as_made(config)}


def _problems(err: ValidationError, most: int = 3) -> str:
    parts = [
        f"{'.'.join(str(x) for x in e['loc']) or 'run'}: {'unknown key' if e['type'] == 'extra_forbidden' else said(e)}"
        for e in err.errors()
    ]
    more = f" (and {len(parts) - most} more)" if len(parts) > most else ""
    return "; ".join(parts[:most]) + more


def _bad_id(m: Manifest) -> str | None:
    """The first ticker whose id breaks 0..n-1, one each (out of that range, or another's), in
    words; None where none does (n ids in 0..n-1, none twice, are 0..n-1)."""
    seen: dict[int, str] = {}
    for sym, entry in m.tickers.items():
        if not 0 <= entry.id < len(m.tickers):
            return f"{sym} has id {entry.id}"
        if entry.id in seen:
            return f"{seen[entry.id]} and {sym} both have id {entry.id}"
        seen[entry.id] = sym
    return None


def _check_consistent(m: Manifest, path: Path) -> None:
    """What pydantic cannot see field by field: ids, per-step lists and features agree."""
    names = m.features.names
    if not set(names) <= KNOWN_FEATURES or names[-2:] != FEATURES[-2:]:
        raise RunFormatError(
            f"{path.parent} was trained on features {names}, this forecaster computes {sorted(KNOWN_FEATURES)} "
            "with the calendar pair last"
        )
    for sym in m.tickers:  # each is read as a file name, written in forecasts, looked up by name
        try:
            same = validate_ticker(sym) == sym
        except TickerError:
            same = False
        if not same:
            raise RunFormatError(
                f"{path} is malformed: tickers holds {ascii(sym[:40])}, not a ticker symbol as written"
            )
    if (bad := _bad_id(m)) is not None:
        raise RunFormatError(f"{path} is malformed: ticker ids are not 0..{len(m.tickers) - 1}, one each ({bad})")
    horizon = m.config.window.horizon
    if m.median_weight is not None and (
        len(m.median_weight) != horizon or not all(0 <= w <= 1 for w in m.median_weight)
    ):
        raise RunFormatError(f"{path} is malformed: median_weight is not {horizon} weights from 0 to 1")
    continuous = len(names) - CALENDAR
    for sym, t in m.tickers.items():
        pending = t.conformal_pending or []
        if t.conformal_pending is None and t.conformal_online is not None and m.format_version >= 3:
            raise RunFormatError(  # format 3 keeps them wherever it tracked the test split
                f"{path} is malformed: {sym}.conformal_pending is missing "
                "(the scales in force at its last test origins)"
            )
        if len(pending) > horizon - 1:
            raise RunFormatError(
                f"{path} is malformed: {sym}.conformal_pending has {len(pending)} origins, not at most {horizon - 1}"
            )
        named = [("conformal", t.conformal), ("conformal_online", t.conformal_online)]
        for field, values in named + [("conformal_pending", row) for row in pending]:
            if values is not None and len(values) != horizon:
                raise RunFormatError(f"{path} is malformed: {sym}.{field} has {len(values)} steps, not {horizon}")
            if values is not None and not all(0 < v < math.inf for v in values):
                raise RunFormatError(f"{path} is malformed: {sym}.{field} holds a scale that is not a positive number")
        if t.garch is not None and not _usable_garch(t.garch):
            raise RunFormatError(
                f"{path} is malformed: {sym}.garch holds parameters no garch fit has (finite numbers, omega at "
                "least 0, alpha + gamma / 2 + beta from 0 to 1, nu above 2, a close above 0)"
            )
        sc = t.scaler
        if len(sc.mean) != continuous or len(sc.std) != continuous:
            raise RunFormatError(
                f"{path} is malformed: {sym}'s scaler has {len(sc.mean)} means and {len(sc.std)} deviations, "
                f"not one per continuous feature ({continuous})"
            )
        if not (all(map(math.isfinite, sc.mean)) and all(0 < v < math.inf for v in [*sc.std, sc.ret_std])):
            raise RunFormatError(f"{path} is malformed: {sym}'s scaler holds a value that is not a finite number")


_GARCH_SLACK = 1e-6
"""How far above 1 a fit's persistence may be: the optimiser's tolerance on that constraint."""


def _usable_garch(g: GarchFit) -> bool:
    """True when ``g`` is a fit the garch baseline could have made, as it checks a fit (finite,
    omega at least 0, persistence ``alpha + gamma / 2 + beta`` from 0 to 1, nu above 2) with a
    close above 0: a value edited into run.json otherwise divided by zero (nu = 2) or made the
    baseline's bounds infinite (beta = 1e300)."""
    values = [g.omega, g.alpha, g.gamma, g.beta, g.nu, g.close]
    return (
        all(map(math.isfinite, values))
        and g.omega >= 0
        and -_GARCH_SLACK <= g.alpha + 0.5 * g.gamma + g.beta <= 1 + _GARCH_SLACK
        and g.nu > 2
        and g.close > 0
    )


def read_weights(run_dir: Path) -> dict[str, np.ndarray]:
    """The weights of a run as float arrays named as torch names them."""
    weights = Path(run_dir) / WEIGHTS
    if weights.is_dir():
        raise RunFormatError(f"{run_dir} is not a complete run: its {WEIGHTS} is a folder, not a weights file")
    if not weights.is_file():
        raise RunFormatError(f"{run_dir} is not a complete run: {WEIGHTS} is missing")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError, TypeError) as e:  # TypeError: a dtype numpy lacks
        raise RunFormatError(
            f"{weights} is not a readable safetensors file ({e}); it may be truncated or not a weights file"
        ) from None


def check_tensors(weights: Path, state: dict, expected: dict[str, tuple[int, ...]]) -> None:
    """Refuse weights whose tensor names or shapes are not the ones the config implies."""
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {tuple(state[k].shape)}, config needs {tuple(v)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v)
    ]
    if problems:
        raise RunFormatError(
            f"{weights} does not match the run's config: "
            + "; ".join(problems[:3])
            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        )


def resume_command(run_dir: os.PathLike) -> str:
    """The command that continues the interrupted run in ``run_dir``, in backquotes, ready to paste."""
    return f"`forecaster train --resume {shlex.quote(str(run_dir))}`"


def run_lock_path(run_dir: os.PathLike) -> Path:
    """The lock ``train`` holds while it writes ``run_dir``: ``.<name>.lock`` beside it."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


NAME_LOCK = "name"
"""The purpose a promote or retrain records holding a promoted name's lock ``runs/.NAME.lock``
(:func:`forecaster.fsio.file_lock`). That is the file :func:`run_lock_path` gives for
``runs/NAME``, so that no training writes a run there while the name is switched; held for the
name, it is no training of a run ``NAME``."""


READ_TRIES = 3
"""Reads of a run that ``train`` replaced meanwhile, before the run's contents are taken as they are."""


def path_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what is at ``path`` (a run replaced whole gets another), None when nothing is."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def load_run(run_dir: PathLike) -> Run:
    """Load and check a complete run for forecasting; every problem is a RunFormatError that
    says what is wrong. The network runs in numpy: this never imports torch.

    A promoted name (``runs/NAME``, a link that ``promote`` may switch at any moment) is
    resolved once, so the manifest and the weights come from the same run; ``Run.path`` is the
    run directory itself. A run that ``train --run-dir`` puts in place of another while it is
    read (a new directory in one rename) is read again, so the manifest and the weights come
    from one training, never one from each."""
    run_dir = run_directory(run_dir)
    for tries_left in range(READ_TRIES - 1, -1, -1):
        before = path_identity(run_dir)
        try:
            run = _load_run_once(run_dir)
        except RunFormatError:
            if tries_left and path_identity(run_dir) != before:
                continue  # replaced while read: what was missing or mismatched may be there now
            raise
        if not tries_left or path_identity(run_dir) == before:
            return run
    raise AssertionError("unreachable")  # pragma: no cover


def after_epoch(epochs: int) -> str:
    """When a training stopped, having completed ``epochs`` epochs: "after epoch 3", or "in its
    first epoch" (there is no epoch 0)."""
    return f"after epoch {epochs}" if epochs else "in its first epoch"


def _load_run_once(run_dir: Path) -> Run:
    manifest = read_manifest(run_dir)
    if manifest.status != "complete":
        from .registry import challenger_of, unfinished_advice  # here: the registry imports this module

        if lock_holder(run_lock_path(run_dir)):  # a checkpoint of a training still running
            raise RunFormatError(
                f"{run_dir} is being trained: it holds a checkpoint after epoch {manifest.metrics.epochs_run}, not a "
                f"finished run; {unfinished_advice(run_dir)}"
            )
        stopped = f"{run_dir}: training was interrupted {after_epoch(manifest.metrics.epochs_run)}"
        if challenger_of(run_dir) is None:  # advised to resume: only if it can be (as info says)
            try:
                read_resume(run_dir)
            except RunFormatError as exc:
                why = str(exc)
                raise RunFormatError(
                    why if why.startswith(f"{run_dir} was interrupted") else f"{stopped}; {why}"
                ) from None
        # the challenger of an interrupted retrain is retrained, not resumed (as info says)
        raise RunFormatError(f"{stopped}; {unfinished_advice(run_dir)}")
    state = read_weights(run_dir)
    cfg = manifest.config
    n_features = len(manifest.features.names)
    check_tensors(run_dir / WEIGHTS, state, config_shapes(cfg, n_features, len(manifest.tickers)))
    if bad := next((k for k, v in state.items() if not np.isfinite(v).all()), None):
        raise RunFormatError(f"{run_dir / WEIGHTS} holds weights that are not finite numbers ({bad}): it is damaged")
    model = NumpyQuantileRNN.from_config(cfg, state, manifest.features.names)
    return Run(path=run_dir, manifest=manifest, model=model)


def read_resume(run_dir: Path) -> tuple[ResumeState, list[dict]]:
    """The saved training state and epoch history of an interrupted run."""
    trained_on = read_manifest(run_dir).features.names
    if trained_on != FEATURES:  # the network's inputs are this forecaster's: an earlier one's cannot go on
        raise RunFormatError(
            f"{run_dir} was interrupted but cannot be resumed: an earlier forecaster trained it on the inputs "
            f"{', '.join(trained_on)}, this one trains on {', '.join(FEATURES)}; train the run again without --resume"
        )
    path = Path(run_dir) / RESUME
    if not path.is_file():
        raise RunFormatError(
            f"{run_dir} was interrupted but cannot be resumed: its {RESUME} (the optimiser and random "
            "state training goes on from) is missing; train the run again without --resume"
        )
    try:
        state = _unflatten(load_file(str(path)), _safetensors_metadata(path))
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, RecursionError, OverflowError) as e:
        why = _json_problem(e) if isinstance(e, (ValueError, RecursionError)) else e  # OverflowError: epoch Infinity
        raise RunFormatError(
            f"{path} is not a readable resume file ({why}): the run cannot be resumed; train it again without --resume"
        ) from None
    hist = Path(run_dir) / HISTORY
    try:
        history = [_history_row(r) for r in csv.DictReader(io.StringIO(read_own_file(hist), newline=""))]
    except (OSError, KeyError, ValueError, TypeError, OverflowError) as e:  # OverflowError: an epoch of 1e400
        if isinstance(e, FileNotFoundError):
            why = "it is missing"
        elif isinstance(e, OSError):
            why = e.strerror or type(e).__name__  # the path is said once, before
        elif isinstance(e, KeyError):
            why = f"no {e.args[0]} column"
        else:
            why = str(e)
        raise RunFormatError(
            f"{run_dir} was interrupted but cannot be resumed: its {HISTORY} is not a readable epoch history "
            f"({why}); train the run again without --resume"
        ) from None
    if [row["epoch"] for row in history] != list(range(1, state.epoch + 1)):
        raise RunFormatError(
            f"{hist} does not hold epochs 1 to {state.epoch}, which {RESUME} was saved after "
            f"({len(history)} rows): the run cannot be resumed; train it again without --resume"
        )
    _check_resume_state(state, read_manifest(run_dir), path)
    return state, history


def _check_resume_state(state: ResumeState, manifest: Manifest, path: Path) -> None:
    """Refuse a resume state that training could not load: its weights (and the best epoch's),
    the optimiser's moments and the random states not the shapes and kinds the run's config
    gives, its optimiser and scheduler settings not tables. torch would refuse them only once
    the data were read, with a message of several lines, or (the moments) train on with them."""
    expected = config_shapes(manifest.config, len(manifest.features.names), len(manifest.tickers))
    shapes = list(expected.values())
    problems = []
    for part, tensors in (("model", state.model), ("best", state.best)):
        if tensors is None:  # no best epoch kept yet
            continue
        problems += [f"missing {part}.{k}" for k in expected if k not in tensors]
        problems += [f"unexpected {part}.{k}" for k in tensors if k not in expected]
        problems += [
            f"{part}.{k} has shape {tuple(v.shape)}, config needs {expected[k]}"
            for k, v in tensors.items()
            if k in expected and tuple(v.shape) != expected[k]
        ]
    for i, slots in state.optimizer.items():
        if not 0 <= i < len(shapes):
            problems.append(f"unexpected opt.{i}")
            continue
        problems += [
            f"opt.{i}.{name} has shape {tuple(v.shape)}, config needs {shapes[i]}"
            for name, v in slots.items()
            if name != "step" and tuple(v.shape) != shapes[i]
        ]
        if "step" in slots and slots["step"].size != 1:  # a count of steps, one number
            problems.append(f"opt.{i}.step holds {slots['step'].size} numbers, not one")
    for name in ("generator", "torch_rng", "cuda_rng"):
        rng = getattr(state, name)
        if rng is not None and (rng.dtype != np.uint8 or rng.ndim != 1):
            problems.append(f"{name} is not a random generator's state")
    groups = state.param_groups
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        problems.append("param_groups is not a list of tables")
    elif not all(_positive_number(g.get("lr")) and isinstance(g.get("params"), list) for g in groups):
        problems.append("param_groups holds a group without a learning rate or parameters")
    elif missing := next((k for g in groups for k in _GROUP_NEEDS if k not in g), None):
        problems.append(f"param_groups holds a group without {missing}")
    elif bad := next(
        (f"{k} {v!r}"[:60] for g in groups for k, v in g.items() if not _group_setting(k, v, len(shapes))), None
    ):
        problems.append(f"param_groups holds a setting the optimiser cannot take ({bad})")
    fitted = state.fitted_on
    if fitted is not None and not (isinstance(fitted, dict) and all(isinstance(v, str) for v in fitted.values())):
        problems.append("fitted_on is not a table of the hashes of the tickers' bars")
    if not isinstance(state.scheduler, dict) or "optimizer" in state.scheduler:  # torch never saves that one
        problems.append("scheduler is not a scheduler's state")
    elif bad := next((f"{k} {v!r}"[:60] for k, v in state.scheduler.items() if not _scheduler_setting(k, v)), None):
        problems.append(f"scheduler holds a setting the scheduler cannot take ({bad})")
    if problems:
        raise RunFormatError(
            f"{path} does not match the run's config ({'; '.join(problems[:3])}"
            + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            + "): the run cannot be resumed; train it again without --resume"
        )
    # a checkpoint is saved only after an epoch whose losses were finite: a value that is not
    # one (or a negative second moment) is damage, which training would meet as a NaN loss
    tensors = [
        (f"{part}.{k}", v) for part, t in (("model", state.model), ("best", state.best)) for k, v in (t or {}).items()
    ]
    tensors += [(f"opt.{i}.{name}", v) for i, slots in state.optimizer.items() for name, v in slots.items()]
    if bad := [k for k, v in tensors if not np.isfinite(v).all() or (k.endswith(".exp_avg_sq") and (v < 0).any())]:
        raise RunFormatError(
            f"{path} holds values that are not finite numbers, or negative second moments ({', '.join(bad[:3])}"
            + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            + "): it is damaged; the run cannot be resumed; train it again without --resume"
        )


def _positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def _number(value: object, low: float = 0.0, high: float = math.inf) -> bool:
    """A finite number (not a bool) from ``low`` to below ``high``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value < high


def _count(value: object) -> bool:
    """A whole number of 0 or more."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# The settings of a group of AdamW, as torch saves them: each known one must be of its kind,
# or torch stops the resumed training with an error of its own (a list for a number, fused
# and differentiable together, a parameter index past the network's).
_GROUP_SETTINGS = {
    "lr": _positive_number,
    "eps": _positive_number,
    "weight_decay": _number,
    "betas": lambda v: isinstance(v, list) and len(v) == 2 and all(_number(b, 0.0, 1.0) for b in v),
    "differentiable": lambda v: v is False,  # training never asks for it; fused refuses it
    **{k: lambda v: v is None or isinstance(v, bool) for k in ("foreach", "fused", "capturable")},
    **{k: lambda v: isinstance(v, bool) for k in ("amsgrad", "maximize", "decoupled_weight_decay")},
}


_GROUP_NEEDS = ("betas", "eps", "weight_decay")
"""The settings of a group that AdamW's step reads and torch does not fill in when it loads a
group without them (it does for the flags above)."""


def _group_setting(key: str, value: object, n_params: int) -> bool:
    """True when ``value`` can be the optimiser group's setting ``key`` (of a network of
    ``n_params`` parameters): ``params`` their distinct indices."""
    if key == "params":
        return all(_count(i) and i < n_params for i in value) and len(set(value)) == len(value)
    check = _GROUP_SETTINGS.get(key)
    return check is None or bool(check(value))


# The scheduler's settings, checked as the optimiser's are (its mode and threshold_mode torch refuses
# as it loads them, and training names the file then).
_SCHEDULER_SETTINGS = {
    "factor": lambda v: _number(v, 0.0, 1.0) and v > 0,
    "threshold": _number,
    "eps": _number,
    "default_min_lr": _number,
    "min_lrs": lambda v: isinstance(v, list) and all(_number(x) for x in v),
    "_last_lr": lambda v: isinstance(v, list) and all(_positive_number(x) for x in v),
    "best": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v),
    "mode_worse": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v),
    **{k: _count for k in ("patience", "cooldown", "cooldown_counter", "num_bad_epochs", "last_epoch")},
}


def _scheduler_setting(key: str, value: object) -> bool:
    """True when ``value`` can be the learning-rate scheduler's setting ``key``."""
    check = _SCHEDULER_SETTINGS.get(key)
    return check is None or bool(check(value))


def _safetensors_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="numpy") as f:
        return f.metadata() or {}


def _history_row(row: dict) -> dict:
    ints = {"epoch", "samples"}
    return {k: (int(float(row[k])) if k in ints else float(row[k])) for k in HISTORY_COLUMNS}


def _unflatten(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> ResumeState:
    m = json.loads(meta["state"])
    optimizer: dict[int, dict[str, np.ndarray]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            optimizer.setdefault(int(i), {})[name] = v
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    return ResumeState(
        epoch=int(m["epoch"]),
        best_val=float(m["best_val"]),
        stale=int(m["stale"]),
        model={k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
        best=best,
        optimizer=optimizer,
        param_groups=m["param_groups"],
        scheduler=m["scheduler"],
        generator=tensors["generator"],
        torch_rng=tensors.get("torch_rng"),
        cuda_rng=tensors.get("cuda_rng"),
        fitted_on=m.get("fitted_on"),  # a run interrupted before it was kept has none
    )
