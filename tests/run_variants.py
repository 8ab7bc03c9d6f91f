"""Runs made from a trained run without training: a different model of the same shapes.

Used by the tests of promote, retrain and live scoring, which need two runs that forecast
differently (to tell which one a reader saw) or a challenger known to be worse.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from forecaster.checkpoint import FORMAT_VERSION, META, WEIGHTS


def shifted_run(src: Path, dst: Path, *, noise: float = 1.0, seed: int = 0) -> Path:
    """Copy the run at ``src`` to ``dst`` (named after it) with random noise of standard
    deviation ``noise`` added to the output layer's biases and its median used at every step:
    its quantiles move away from the trained ones, so it forecasts differently and worse."""
    shutil.copytree(src, dst)
    weights = load_file(str(dst / WEIGHTS))
    rng = np.random.default_rng(seed)
    bias = weights["head.bias"]
    weights["head.bias"] = (bias + rng.normal(0.0, noise, bias.shape)).astype(bias.dtype)
    save_file(weights, str(dst / WEIGHTS), metadata={"format_version": str(FORMAT_VERSION)})
    # and its (noisy) median is the forecast at every step, not gated back to the last close
    meta = json.loads((dst / META).read_text())
    meta["median_weight"] = [1.0] * meta["config"]["window"]["horizon"]
    (dst / META).write_text(json.dumps(meta, indent=2) + "\n")
    rename_run(dst)
    return dst


def rename_run(run: Path) -> Path:
    """Make the run's recorded name its directory's name (forecasts go to OUT/<name>/)."""
    meta = json.loads((run / META).read_text())
    meta["name"] = run.name
    (run / META).write_text(json.dumps(meta, indent=2) + "\n")
    return run
