"""Configuration: the one home of every default.

Precedence is built-in defaults < TOML file (``--config``) < command-line flags. Every section
forbids unknown keys, so a typo in a config file is an error that names the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    source: Literal["yahoo", "csv"] = Field("yahoo", description="where bars come from")
    data_dir: Path = Field(Path("data"), description="store root (yahoo) or CSV folder (csv)")
    tickers: list[str] = Field(default_factory=list, description="symbols to train on")
    calendar: str = Field("XNYS", description="exchange calendar for future session dates")


class WindowConfig(_Section):
    lookback: int = Field(60, gt=1, le=2000, description="sessions of history per window")
    horizon: int = Field(5, gt=0, le=250, description="sessions forecast ahead")
    val_days: int = Field(250, gt=0, description="sessions in the validation split")
    test_days: int = Field(250, gt=0, description="sessions in the test split")


class ModelConfig(_Section):
    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="recurrent encoder")
    strategy: Literal["direct", "recursive"] = Field("direct", description="multi-step strategy")
    hidden_size: int = Field(32, gt=0, le=4096)
    num_layers: int = Field(1, gt=0, le=16)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    embedding_dim: int = Field(4, ge=0, le=256, description="ticker embedding size (0: none)")
    quantiles: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9])

    @model_validator(mode="after")
    def _check_quantiles(self) -> ModelConfig:
        q = self.quantiles
        if len(q) < 3 or 0.5 not in q or sorted(set(q)) != q or not all(0 < x < 1 for x in q):
            raise ValueError(
                "quantiles must be sorted, distinct, in (0, 1), include 0.5 and at least one level either side"
            )
        return self


class TrainConfig(_Section):
    epochs: int = Field(30, gt=0, le=10_000)
    batch_size: int = Field(256, gt=0, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    patience: int = Field(5, gt=0, description="epochs without validation gain before stopping")
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast on CUDA")
    threads: int = Field(1, ge=0, description="torch CPU threads (0: one per usable core)")
    mode: Literal["forking", "window"] = Field(
        "forking", description="forking: one encoder pass per stretch, a loss at every origin; window: one per window"
    )
    chunk: int = Field(32, gt=0, le=10_000, description="forecast origins per stretch in forking mode")
    epoch_steps: int = Field(
        1024, ge=0, description="forking: most optimisation steps per epoch, larger steps beyond (0: no limit)"
    )


class PredictConfig(_Section):
    out: Path = Field(Path("forecasts"), description="folder for forecast CSVs")
    max_staleness: int = Field(3, ge=0, description="sessions a stored bar may lag")


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig)
    run_dir: Path | None = Field(None, description="run directory (default runs/<name>)")

    @model_validator(mode="after")
    def _check_sizes(self) -> Config:
        if self.window.horizon > self.window.lookback:
            raise ValueError(
                f"window.horizon ({self.window.horizon}) must not exceed window.lookback ({self.window.lookback})"
            )
        return self


def _format_validation(err: ValidationError, origin: str) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "config"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{key}: {msg}")
    return f"invalid configuration ({origin}): " + "; ".join(parts)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {p} is not a section")
    node[leaf] = value


def read_toml(path: Path) -> dict:
    """Read a TOML config file, turning every failure into a one-line ConfigError."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None, base: dict | None = None) -> Config:
    """Defaults, then ``base`` (a stored config) or the TOML file at ``path``, then dotted
    ``overrides`` (None values skipped)."""
    import copy

    tree: dict = copy.deepcopy(base) if base is not None else {}
    if path is not None:
        for section, values in read_toml(path).items():
            if isinstance(values, dict) and isinstance(tree.get(section), dict):
                tree[section].update(values)
            else:
                tree[section] = values
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, str(path) if path else "options")) from None


def config_from_dict(tree: dict) -> Config:
    """Rebuild a Config stored in a run (raises ConfigError when it no longer validates)."""
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, "run.json")) from None
