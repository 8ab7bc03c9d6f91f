"""Configuration: the one home of every default.

Precedence is built-in defaults < TOML file (``--config``) < command-line flags. Every section
forbids unknown keys, so a typo in a config file is an error that names the key.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from .choices import Cell, Device, Precision, Source, StepTracking, Strategy, TargetScale, TrainMode
from .errors import OPTION_NAMES, ConfigError
from .tickers import split_tickers

QUANTILES = (0.1, 0.5, 0.9)
"""The quantile levels every model and baseline forecasts: p10, p50 (the point forecast), p90."""
COVERAGE = QUANTILES[-1] - QUANTILES[0]
"""Nominal coverage of the [p10, p90] interval."""


def _as_written(kind: Any, value: Any) -> None:
    """Refuse a value of another kind than the key's, which validation would otherwise turn
    into one silently: ``true`` into 1 epoch, ``"60"`` into 60, ``3.0`` into 3, ``"no"`` into
    false. A whole number where a number is meant (``lr = 1``) is that number."""
    while get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {_written(value)}")
    # nan is no number a key can take: said so, not "should be less than or equal to 10"
    not_a_number = isinstance(value, float) and (kind is int or math.isnan(value))
    if kind in (int, float) and (isinstance(value, (bool, str)) or not_a_number):
        whole = "a whole number" if kind is int else "a number"
        raise ValueError(f"expected {whole}, not {_written(value)}")
    if kind in (Path, Path | None) and value is not None and not isinstance(value, (str, Path)):  # TOML has no null
        raise ValueError(f"expected a folder name in quotes, not {_written(value)}")
    if isinstance(kind, type) and issubclass(kind, BaseModel) and not isinstance(value, (dict, BaseModel)):
        raise ValueError(f"expected a table (a [section] header with its keys below it), not {_written(value)}")
    if get_origin(kind) is list and isinstance(value, list) and get_args(kind):
        for item in value:
            _as_written(get_args(kind)[0], item)


def _written(value: Any) -> str:
    """``value`` as it reads in a TOML file: true / false, a string in quotes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_written(v) for v in value) + "]"
    if isinstance(value, (date, time)):  # a TOML date or time (datetime is a date)
        return value.isoformat()
    return json.dumps(value) if isinstance(value, str) else repr(value)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _same_kind(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None:
            _as_written(field.annotation, value)
        return value


def _folder_named(value: Any) -> Any:
    """An empty folder name is refused: as a path it would be ".", the current folder. A
    leading ``~`` is the user's home, as in a shell (not a folder named ``~`` here)."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("empty: name a folder")
    return home_expanded(value)


def home_expanded(value: Any) -> Any:
    """``value`` (a path or its text) with a leading ``~`` or ``~user`` made the home folder;
    anything else, or a home that cannot be found, as it is."""
    if isinstance(value, (str, Path)) and str(value).startswith("~"):
        try:
            return Path(value).expanduser()
        except RuntimeError:  # no HOME and no password entry
            return value
    return value


class DataConfig(_Section):
    source: Source = Field("yahoo", description="where bars come from")
    data_dir: Path = Field(Path("data"), description="store root (yahoo) or CSV folder (csv)")
    tickers: list[str] = Field(default_factory=list, description="symbols to train on")
    calendar: str = Field("XNYS", description="exchange calendar for future session dates")

    _not_empty = field_validator("data_dir", mode="before")(_folder_named)

    @field_validator("tickers", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """One string of symbols separated by commas (or spaces), as ``--tickers`` takes them, or
        a list of such strings."""
        if isinstance(value, str):
            return split_tickers([value])
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return split_tickers(value)
        return value


class WindowConfig(_Section):
    lookback: int = Field(60, gt=1, le=2000, description="sessions of history per window")
    horizon: int = Field(5, gt=0, le=250, description="sessions forecast ahead")
    val_days: int = Field(250, gt=0, description="sessions in the validation split")
    test_days: int = Field(250, gt=0, description="sessions in the test split")


class ModelConfig(_Section):
    cell: Cell = Field("lstm", description="recurrent encoder")
    strategy: Strategy = Field("direct", description="multi-step strategy")
    hidden_size: int = Field(32, gt=0, le=4096)
    num_layers: int = Field(1, gt=0, le=16)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    embedding_dim: int = Field(4, ge=0, le=256, description="ticker embedding size (0: none)")
    target_scale: TargetScale = Field(
        "local",
        description="what the network's targets are divided by (times sqrt(h)): the local (range-based) "
        "volatility at the origin, or the ticker's training volatility",
    )
    scale_halflife: int = Field(
        60, gt=0, le=1000, description="half-life in sessions of the local volatility (target scale and rvol feature)"
    )
    ar_order: int = Field(
        5,
        ge=0,
        le=250,
        description="the median also gets a linear term in the last ar_order returns (in units of the local "
        "volatility): the autoregressive highway (0: none)",
    )
    median_alpha: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="the network's median is the forecast at a step only where it beat the naive forecast on the "
        "validation split with a one-sided Diebold-Mariano p below this; elsewhere the median is the last close "
        "(1: always the network's, 0: always the last close)",
    )
    quantiles: list[float] = Field(
        default_factory=lambda: list(QUANTILES), description="quantile levels (only 0.1, 0.5, 0.9)"
    )

    @field_validator("quantiles")
    @classmethod
    def _check_quantiles(cls, q: list[float]) -> list[float]:
        if [float(x) for x in q] != list(QUANTILES):
            raise ValueError(
                f"only {list(QUANTILES)} is supported: the forecast columns p10 / p50 / p90, the "
                "80 % interval's coverage and the pinball loss are defined at these levels"
            )
        return q


class IntervalConfig(_Section):
    vol_halflife: int = Field(
        20,
        gt=0,
        le=1000,
        description="half-life in sessions of the EWMA volatility that widens and narrows the intervals of a run "
        "whose targets use the ticker's training volatility (model.target_scale = ticker)",
    )
    tracking_rate: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="step of the online interval-scale tracker on the log scale: a miss widens the interval "
        "by exp(0.8 x rate), a hit narrows it by exp(-0.2 x rate) (0: off)",
    )
    step_tracking: StepTracking = Field(
        "shared",
        description="shared: every step's scale moves with the one-step misses (known a session later), and "
        "step h's own misses correct it at rate / h; separate: each step tracked from its own misses alone at rate",
    )


class TrainConfig(_Section):
    epochs: int = Field(30, gt=0, le=10_000)
    batch_size: int = Field(256, gt=0, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0, allow_inf_nan=False)
    grad_clip: float = Field(1.0, gt=0, allow_inf_nan=False, description="max global gradient norm")
    patience: int = Field(12, gt=0, description="epochs without validation gain before stopping")
    seed: int = Field(0, ge=0, le=2**64 - 1, description="seeds torch, numpy and random (torch takes up to 2**64 - 1)")
    device: Device = "auto"
    precision: Precision = Field("fp32", description="bf16 autocast on CUDA")
    threads: int = Field(
        1,
        ge=0,
        description="torch CPU threads (0: one per usable core); with 1, window training on a CPU computes "
        "each batch in two halves, side by side where two cores are usable",
    )
    mode: TrainMode = Field(
        "forking", description="forking: one encoder pass per stretch, a loss at every origin; window: one per window"
    )
    chunk: int = Field(32, gt=0, le=10_000, description="forecast origins per stretch in forking mode")
    epoch_steps: int = Field(
        1024, ge=0, description="forking: most optimisation steps per epoch, larger steps beyond (0: no limit)"
    )
    halves: bool = Field(
        True,
        description="window training on a CPU with train.threads = 1: each batch in two halves, side by side "
        "where two cores are usable (false: each batch whole, on one core)",
    )
    burn_in_grad: bool = Field(
        False,
        description="forking: backpropagate through each stretch's burn-in rows as well as its chunk's "
        "(false: the burn-in only sets the state the chunk starts from, without gradient; faster)",
    )
    burn_in_dropout: bool = Field(
        False,
        description="forking, burn-in without gradient: apply the dropout between the encoder's layers to the "
        "burn-in rows too (false: the burn-in sets the chunk's starting state as inference would, without "
        "dropout; faster)",
    )
    burn_in_ahead: bool = Field(
        True,
        description="forking, burn-in without gradient or dropout: compute each step's burn-in during the step "
        "before, from the weights before that step's update, on a second core where there is one (false: after "
        "the update, in turn)",
    )
    checkpoint_every: float = Field(
        60.0,
        ge=0,
        allow_inf_nan=False,
        description="seconds of training between the resumable checkpoints of a new run (or of the run resumed), "
        "so that a process killed outright can be resumed from the last one (0: no checkpoints)",
    )


class PredictConfig(_Section):
    out: Path = Field(Path("forecasts"), description="folder for forecast CSVs")
    max_staleness: int = Field(3, ge=0, description="sessions a stored bar may lag")

    _not_empty = field_validator("out", mode="before")(_folder_named)


_SECTIONS: dict[str, type[_Section]] = {
    "data": DataConfig,
    "window": WindowConfig,
    "model": ModelConfig,
    "intervals": IntervalConfig,
    "train": TrainConfig,
    "predict": PredictConfig,
}


def config_field(key: str) -> FieldInfo | None:
    """The field behind a dotted key such as ``model.cell`` (None when the config has no such key)."""
    section, _, name = key.partition(".")
    model = _SECTIONS.get(section)
    return None if model is None else model.model_fields.get(name)


# ---- hyper-parameter search (`forecaster tune`) -------------------------------------------------
@dataclass(frozen=True)
class SearchDim:
    """One dimension of the hyper-parameter search: the config key a trial sets and its default
    range. ``kind`` is ``choice`` (``default`` lists the values; empty: every value the key
    allows), ``int`` or ``float`` (``default`` is ``(low, high)``, sampled on a log scale when
    ``log``). A dimension whose key the config does not have is left out of the search."""

    name: str
    key: str
    kind: Literal["choice", "int", "float"]
    default: tuple = ()
    log: bool = False


SEARCH_SPACE: tuple[SearchDim, ...] = (
    SearchDim("cell", "model.cell", "choice"),
    SearchDim("lookback", "window.lookback", "int", (20, 120)),
    SearchDim("hidden_size", "model.hidden_size", "int", (8, 128), log=True),
    SearchDim("num_layers", "model.num_layers", "int", (1, 3)),
    SearchDim("dropout", "model.dropout", "float", (0.0, 0.5)),
    SearchDim("lr", "train.lr", "float", (1e-4, 1e-2), log=True),
    SearchDim("batch_size", "train.batch_size", "choice", (64, 128, 256, 512)),
    SearchDim("mode", "train.mode", "choice"),
)
"""What `forecaster tune` searches by default, in this order (the `[tune.space]` keys)."""


def _range_of(dim: SearchDim):
    def check(values: list) -> list:
        if dim.kind == "choice" or not values:
            return values
        if len(values) != 2 or values[0] > values[1]:
            raise ValueError("a range is [low, high] with low <= high (or [] to leave it out of the search)")
        return values

    return check


def _space_field(dim: SearchDim, field: FieldInfo) -> tuple[Any, Any]:
    # each value is checked like the config key it sets (its type and bounds)
    value_type = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    default = list(dim.default) or list(get_args(field.annotation) if get_origin(field.annotation) is Literal else ())
    what = "values to choose from" if dim.kind == "choice" else "[low, high]" + (", log scale" if dim.log else "")
    return (
        Annotated[list[value_type], AfterValidator(_range_of(dim))],
        Field(default_factory=lambda: list(default), description=f"{dim.key}: {what}; [] leaves it out"),
    )


def active_dims() -> list[SearchDim]:
    """The search dimensions whose config key exists in this version of the config."""
    return [d for d in SEARCH_SPACE if config_field(d.key) is not None]


SpaceConfig = create_model(
    "SpaceConfig",
    __base__=_Section,
    __doc__="The search space: one entry per dimension of SEARCH_SPACE that the config has.",
    **{d.name: _space_field(d, config_field(d.key)) for d in active_dims()},
)

_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class TuneConfig(_Section):
    study: str = Field("default", description="study name: runs/tune/<study>.db and runs/tune/<study>/")
    storage: str = Field("", description="Optuna storage URL (empty: the SQLite file runs/tune/<study>.db)")
    trials: int = Field(20, gt=0, description="trials each `forecaster tune` process adds to the study")
    timeout: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="seconds after which no new trial starts (0: no limit)"
    )
    seed: int = Field(0, ge=0, description="seed of the TPE sampler")
    startup_trials: int = Field(5, ge=0, description="random trials before TPE models the space")
    prune: bool = Field(True, description="stop trials whose validation loss trails the median")
    prune_startup_trials: int = Field(3, ge=0, description="finished trials before any trial is pruned")
    prune_warmup_epochs: int = Field(2, ge=0, description="epochs a trial completes before it may be pruned")
    heartbeat: int = Field(10, gt=0, description="seconds between a trial's heartbeats in a database storage")
    space: SpaceConfig = Field(default_factory=SpaceConfig)

    @field_validator("study")
    @classmethod
    def _plain_study_name(cls, name: str) -> str:
        if not _STUDY_NAME.fullmatch(name):
            raise ValueError("a study name is 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return name


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    intervals: IntervalConfig = Field(default_factory=IntervalConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    run_dir: Path | None = Field(None, description="run directory (default runs/<name>)")

    _not_empty = field_validator("run_dir", mode="before")(_folder_named)

    @model_validator(mode="after")
    def _check_sizes(self) -> Config:
        if self.model.ar_order > self.window.lookback:  # the term reads the window's last ar_order returns
            ar, lookback = self.model.ar_order, self.window.lookback
            raise ValueError(
                f"window.lookback ({lookback}) must be at least model.ar_order ({ar}), the number of past returns "
                f"the median's autoregressive term reads from the window: use a lookback of {ar} or more "
                f"(--lookback), or set ar_order to at most {lookback} in the [model] section of a config "
                "file (0: no autoregressive term)"
            )
        if self.window.horizon > self.window.lookback:
            horizon, lookback = self.window.horizon, self.window.lookback
            raise ValueError(
                f"window.horizon ({horizon}) must not exceed window.lookback ({lookback}): use a horizon of at most "
                f"{lookback} (--horizon), or a lookback of {horizon} or more (--lookback)"
            )
        t = self.train
        # AdamW multiplies every weight by 1 - lr * weight_decay at each step: at 1 or more the
        # weights are wiped out, or flip sign and grow until the loss is NaN
        if t.lr * t.weight_decay >= 1:
            raise ValueError(
                f"train.weight_decay ({t.weight_decay:g}) times train.lr ({t.lr:g}) must be below 1: AdamW "
                "multiplies the weights by 1 - lr x weight_decay at every step, so they would be wiped out or flip "
                f"sign and grow until the loss is NaN; use a weight_decay below {1 / t.lr:g} (or a lower --lr)"
            )
        for split in ("val_days", "test_days"):  # a window's targets all lie in its own split
            if getattr(self.window, split) < self.window.horizon:
                raise ValueError(
                    f"window.{split} ({getattr(self.window, split)}) must be at least window.horizon "
                    f"({self.window.horizon}): a window needs all its forecast sessions in its split, so none would "
                    f"fit; use a {split} of {self.window.horizon} or more (--{split.replace('_', '-')})"
                )
        return self


def _home(loc: tuple) -> str | None:
    """Where the key at ``loc`` belongs: the top of the file for a top-level key, else the
    sections that have it (the search space too where the key was written in [tune], or when no
    other section has it); None if none."""
    name = str(loc[-1])
    field = Config.model_fields.get(name)
    if field is not None and field.default_factory is None:
        return "at the top of the file, before the first [section]"
    sections: dict[str, type[BaseModel]] = {**_SECTIONS, "tune": TuneConfig}
    homes = [f"[{section}]" for section, model in sections.items() if name in model.model_fields]
    if name in SpaceConfig.model_fields and (not homes or loc[0] == "tune"):
        homes.append("[tune.space] (a search range)")
    return "in " + " or ".join(homes) if homes else None


def _unknown_key(loc: tuple) -> str:
    """The message for a key the config does not have there, with where a key of that name
    belongs (a TOML key written below a [section] header is that section's, whatever was meant)."""
    home = _home(loc) if loc else None
    return f"unknown key here ({loc[-1]} belongs {home})" if home else "unknown key"


_SECTION_NAMES = frozenset(k for k, f in Config.model_fields.items() if f.default_factory is not None)
"""The tables of a config file: [data], [window], ... [tune]."""


_EXPECTED = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "string_type": "text in quotes",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list in brackets, such as [1, 2]",
    "dict_type": "a table",
    "model_type": "a table",
}
"""pydantic's type errors, by their type, in the words of a config file: what the key takes."""

_BOUNDS = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
_BOUND_TYPES = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def said(e: dict) -> str:
    """What one of pydantic's errors ``e`` says, in the config's own words: a check of the
    config's own as it words it (no "Value error, " before it), a value of the wrong kind or
    out of range as what the key takes and what it was given; any other as pydantic puts it."""
    ctx = e.get("ctx") or {}
    if e["type"] == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if e["type"] in _EXPECTED and "input" in e:
        return f"expected {_EXPECTED[e['type']]}, not {_written(e['input'])}"
    if (bound := _BOUND_TYPES.get(e["type"])) and bound in ctx and "input" in e:
        return f"must be {_BOUNDS[bound]} {ctx[bound]}, not {_written(e['input'])}"
    return e["msg"]


def _format_validation(err: ValidationError, origin: str, given: tuple[str, ...] | list[str] = ()) -> str:
    """One line for ``err``, from ``origin``; a key among the overrides ``given`` is named as
    the option that set it, where a command line set it (:func:`forecaster.errors.options_named`)."""
    names = OPTION_NAMES.get() or {}
    parts = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"])
        msg = _unknown_key(e["loc"]) if e["type"] == "extra_forbidden" else said(e)
        shown = names.get(key, key) if key in given else key
        parts.append(f"{shown}: {msg}" if key else msg)  # a check across keys names them itself
    return f"invalid configuration ({origin}): " + "; ".join(parts)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Set the key ``dotted`` names in ``tree``; one that goes through a setting (``train.epochs.x``)
    is refused naming it, whether or not ``tree`` holds that setting yet."""
    *parents, leaf = dotted.split(".")
    node, model = tree, Config
    for depth, p in enumerate(parents):
        field = model.model_fields.get(p) if model is not None else None
        inner = field.annotation if field is not None else None
        model = inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None
        node = node.setdefault(p, {})
        if not isinstance(node, dict) or (field is not None and model is None):
            raise ConfigError(f"cannot set {dotted}: {'.'.join(parents[: depth + 1])} is a setting, not a section")
    node[leaf] = value


TUNE_ROOT = Path("runs") / "tune"
"""Where tune keeps its embedded studies (``<study>.db``) and every study's results
(``<study>/``); here, where the command line reads it without importing torch (promote)."""

CONFIG_MAX_BYTES = 16 << 20
"""The most a config file may hold: more is no config (a list of 100,000 tickers takes under
1 MiB), and the bytes of a device such as /dev/zero never end."""


def _config_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a config file, of at most CONFIG_MAX_BYTES: a plain file is measured before
    it is read, anything else (a device, a pipe) read up to one byte more than that."""
    too_long = ConfigError(
        f"config file {path} holds more than {CONFIG_MAX_BYTES >> 20} MiB: no config is that long (is it "
        "a device, such as /dev/zero, or a data file?)"
    )
    try:
        st = os.stat(path)
    except OSError:  # said as reading it says it
        st = None
    if st is None or stat.S_ISREG(st.st_mode):
        if st is not None and st.st_size > CONFIG_MAX_BYTES:
            raise too_long
        return Path(path).read_bytes()
    with open(path, "rb") as f:
        data = f.read(CONFIG_MAX_BYTES + 1)
    if len(data) > CONFIG_MAX_BYTES:
        raise too_long
    return data


def read_toml(path: str | os.PathLike[str]) -> dict:
    """Read a TOML config file, turning every failure into a one-line ConfigError."""
    try:
        # a byte-order mark, which some Windows editors write, is no part of the text
        return tomllib.loads(_config_bytes(path).decode("utf-8").removeprefix("\ufeff"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}), as TOML requires") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is not valid TOML: its arrays or tables are nested too deeply") from None
    except ValueError as e:  # tomllib's int() of a number of over 4300 digits, or a name holding a NUL
        if "integer string conversion" not in str(e):
            raise ConfigError(f"cannot read config file {ascii(str(path))}: {e}") from None
        raise ConfigError(f"config file {path} is not valid TOML: a number has more digits than can be read") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None, base: dict | None = None
) -> Config:
    """Defaults, then ``base`` (a stored config) or the TOML file at ``path``, then dotted
    ``overrides`` (None values skipped)."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a dict of dotted keys, not {type(overrides).__name__}")
    if path is not None and not str(path).strip():  # not the current folder, read as a file
        raise ConfigError('config file "" names no file: give a file name, or None for the defaults alone')
    tree: dict = copy.deepcopy(base) if base is not None else {}
    if path is not None:
        for section, values in read_toml(path).items():
            if section in _SECTION_NAMES and not isinstance(values, dict):
                raise ConfigError(
                    f"invalid configuration ({path}): {section} = {_written(values)}: {section} is a section, "
                    f"written [{section}] on a line of its own with its keys below it"
                )
            if isinstance(values, dict) and isinstance(tree.get(section), dict):
                tree[section].update(values)
            else:
                tree[section] = values
    read = copy.deepcopy(tree)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    given = [k for k, v in (overrides or {}).items() if v is not None]
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, _origin(e, path, given), given)) from None
    if path is not None and given:
        _check_file(read, path)
    return cfg


def _check_file(tree: dict, path: str | os.PathLike[str]) -> None:
    """Refuse a bad key of the file at ``path`` (``tree``: read on top of any base) that a flag
    set over: the file is as wrong without the flag. A check across keys is the resolved
    config's, which the flags may settle (``lookback = 4`` in the file, ``--lookback 20``)."""
    try:
        Config.model_validate(tree)
    except ValidationError as e:
        if all(err["loc"] for err in e.errors()):
            raise ConfigError(_format_validation(e, str(path))) from None


def _origin(err: ValidationError, path: str | os.PathLike[str] | None, given: list[str]) -> str:
    """Where the bad values came from: the options (``given``: the dotted keys they set), the
    file at ``path``, or both; a check across keys (loc empty) names every source there was."""
    sources = [str(path)] if path is not None else []
    sources += ["options"] if given or not sources else []
    found = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"])
        if not key:  # a check across keys names them: the options where it names one they set
            named = any(k in said(e) for k in given)
            found += [s for s in sources if s != "options" or named or path is None]
        elif any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in given) or path is None:
            found.append("options")  # (the key an option set, a part of it, or the section it named)
        else:
            found.append(str(path))
    return " and ".join(s for s in sources if s in found) or sources[0]


def config_from_dict(tree: dict, origin: str) -> Config:
    """Rebuild a Config stored elsewhere (a tuning trial's), raising ConfigError when it no
    longer validates, its message naming ``origin``, where the config was stored."""
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, origin)) from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    # a JSON string is a TOML basic string, once DEL (which TOML wants escaped) is escaped too
    return json.dumps(str(v), ensure_ascii=False).replace("\x7f", "\\u007F")


def _toml_table(tree: dict, prefix: str) -> list[str]:
    lines = [f"{k} = {_toml_value(v)}" for k, v in tree.items() if v is not None and not isinstance(v, dict)]
    for k, v in tree.items():
        if isinstance(v, dict):
            name = f"{prefix}.{k}" if prefix else k
            lines += ["", f"[{name}]", *_toml_table(v, name)]
    return lines


def config_toml(cfg: Config, header: str = "", exclude: tuple[str, ...] = ()) -> str:
    """``cfg`` as a TOML config file that :func:`load_config` reads back to the same Config,
    less the sections in ``exclude`` (keys whose value is None, the built-in default, are left out)."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    body = "\n".join(_toml_table(cfg.model_dump(mode="json", exclude=set(exclude)), "")).strip("\n")
    return comment + ("\n" if comment else "") + body + "\n"
