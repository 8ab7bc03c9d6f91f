"""The run-directory format, in one place.

A run is ``model.safetensors`` (weights only), ``run.json`` (everything needed to rebuild and
use the model) and ``history.csv`` (one row per epoch). Nothing is pickled and loading never
executes code from the files: weights go through safetensors, everything else is JSON.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .config import Config, config_from_dict
from .errors import ConfigError, RunFormatError
from .features import FEATURES, Scaler
from .windows import Splits

FORMAT_VERSION = 1
WEIGHTS, META, HISTORY = "model.safetensors", "run.json", "history.csv"
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "grad_norm", "lr", "seconds", "samples"]


@dataclass
class Run:
    """A loaded run: its config, metadata and a model in eval mode on the CPU (a torch
    QuantileRNN from :func:`load_run`, a NumpyQuantileRNN from :func:`load_run_numpy`)."""

    path: Path
    config: Config
    meta: dict
    model: object  # QuantileRNN or NumpyQuantileRNN

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def names(self) -> list[str]:
        """Every ticker the model knows, in embedding order."""
        return list(self.meta["tickers"])

    def scalers(self) -> dict[str, Scaler]:
        return {s: Scaler.from_dict(t["scaler"]) for s, t in self.meta["tickers"].items()}

    def splits(self) -> Splits:
        return Splits.from_dict(self.meta["splits"])

    def conformal(self) -> dict[str, list[float]]:
        return {s: t.get("conformal", []) for s, t in self.meta["tickers"].items()}


def history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row[k] for k in HISTORY_COLUMNS})
    return buf.getvalue()


def save_run(run_dir: Path, model, meta: dict, history: list[dict], extra_tensors: dict | None = None) -> Path:
    """Write a run into a temporary sibling directory, then move it into place whole.

    ``extra_tensors`` maps further file names to ``(tensors, metadata)`` saved as safetensors
    (the resume state of an interrupted run).
    """
    from safetensors.torch import save_file

    from .fsio import publish_files, replace_dir, sibling_temp_dir

    run_dir = Path(run_dir)
    meta = {"format_version": FORMAT_VERSION, **meta}
    tmp = sibling_temp_dir(run_dir)
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format_version": str(FORMAT_VERSION)})
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (tmp / HISTORY).write_text(history_csv(history))
        for name, (tensors, extra) in (extra_tensors or {}).items():
            save_file(tensors, str(tmp / name), metadata=extra)
        publish_files(tmp)
        replace_dir(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def read_meta(run_dir: Path) -> dict:
    """run.json, checked for presence, JSON validity and format version."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFormatError(f"no run directory at {run_dir}")
    path = run_dir / META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFormatError(f"{run_dir} is not a run: {META} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFormatError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise RunFormatError(f"{path} has no format_version: not a forecaster run")
    version = meta["format_version"]
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise RunFormatError(
            f"{run_dir} has run format {version!r}; this forecaster reads format {FORMAT_VERSION}"
            + (" (the run was written by a newer forecaster: upgrade to use it)" if newer else "")
        )
    for key, kind in (("name", str), ("config", dict), ("tickers", dict), ("splits", dict), ("features", dict)):
        if key not in meta:
            raise RunFormatError(f"{path} lacks the '{key}' entry")
        if not isinstance(meta[key], kind):
            raise RunFormatError(f"{path} is malformed: '{key}' must be a {'string' if kind is str else 'JSON object'}")
    return meta


def check_complete(meta: dict, run_dir: Path) -> None:
    """Refuse to forecast from a run whose training was interrupted."""
    if meta.get("status", "complete") != "complete":
        raise RunFormatError(
            f"{run_dir}: training was interrupted after epoch "
            f"{meta['metrics'].get('epochs_run')}; resume it with "
            f"`forecaster train --resume {run_dir}`"
        )


def _read_run(run_dir: Path, load_file) -> tuple[dict, Config, Path, dict]:
    """run.json checked, the config parsed and the weights read with ``load_file`` (a
    safetensors loader: torch or numpy); every problem is a RunFormatError."""
    from safetensors import SafetensorError

    meta = read_meta(run_dir)
    check_complete(meta, run_dir)
    try:
        cfg = config_from_dict(meta["config"])
    except ConfigError as e:
        raise RunFormatError(f"{run_dir}: {e}") from None
    if meta["features"].get("names") != FEATURES:
        raise RunFormatError(
            f"{run_dir} was trained on features {meta['features'].get('names')}, this forecaster computes {FEATURES}"
        )
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise RunFormatError(f"{run_dir} is not a complete run: {WEIGHTS} is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, TypeError) as e:  # TypeError: a dtype numpy lacks
        raise RunFormatError(
            f"{weights} is not a readable safetensors file ({e}); it may be truncated or not a weights file"
        ) from None
    return meta, cfg, weights, state


def _check_tensors(weights: Path, state: dict, expected: dict[str, tuple[int, ...]]) -> None:
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


def load_run(run_dir: Path) -> Run:
    """Load and check a run; every problem is a RunFormatError that says what is wrong."""
    from safetensors.torch import load_file

    from .models import build_model

    run_dir = Path(run_dir)
    meta, cfg, weights, state = _read_run(run_dir, lambda path: load_file(path, device="cpu"))
    model = build_model(cfg, n_features=len(FEATURES), n_tickers=len(meta["tickers"]))
    _check_tensors(weights, state, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict(state, strict=True)
    model.eval()
    return Run(path=run_dir, config=cfg, meta=meta, model=model)


def load_run_numpy(run_dir: Path) -> Run:
    """:func:`load_run` without torch, for forecasting: the same checks and errors, and a
    :class:`forecaster.npinfer.NumpyQuantileRNN` as the model."""
    from safetensors.numpy import load_file

    from .npinfer import NumpyQuantileRNN, config_shapes

    run_dir = Path(run_dir)
    meta, cfg, weights, state = _read_run(run_dir, load_file)
    _check_tensors(weights, state, config_shapes(cfg, len(FEATURES), len(meta["tickers"])))
    return Run(path=run_dir, config=cfg, meta=meta, model=NumpyQuantileRNN.from_config(cfg, state))
