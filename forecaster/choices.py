"""The closed sets of values that the configuration and the command line share.

Kept apart from :mod:`forecaster.config` (which needs pydantic) so that the command line can
build its choices without slowing ``forecaster --help``.
"""

from __future__ import annotations

from typing import Literal, get_args

Source = Literal["yahoo", "csv"]
Cell = Literal["rnn", "lstm", "gru"]
Strategy = Literal["direct", "recursive"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["fp32", "bf16"]
TargetScale = Literal["local", "ticker"]
TrainMode = Literal["forking", "window"]
StepTracking = Literal["shared", "separate"]

SOURCES: tuple[str, ...] = get_args(Source)
