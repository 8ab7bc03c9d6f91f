"""Help text and documentation: every command and every option explains itself, the README
covers every command and exit code, and both entry points (`forecaster`, `python -m forecaster`)
work from a shell."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from forecaster.cli import app

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["download", "train", "evaluate", "predict", "info", "tune"]
EXIT_CODES = ["0", "1", "2", "3", "75"]


def _group():
    return typer.main.get_command(app)


def _params():
    for name, cmd in _group().commands.items():
        for p in cmd.params:
            yield name, p


def test_the_app_has_exactly_the_documented_commands():
    assert sorted(_group().commands) == sorted(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    cmd = _group().commands[name]
    assert cmd.help and len(cmd.help.strip()) > 20
    assert not cmd.hidden


def test_every_option_and_argument_has_help():
    missing = [f"{cmd} {p.name}" for cmd, p in _params() if not (getattr(p, "help", None) or "").strip()]
    assert missing == []


def test_the_common_options_are_where_the_spec_puts_them():
    opts = {name: {o for p in cmd.params for o in getattr(p, "opts", [])} for name, cmd in _group().commands.items()}
    for name in ("download", "train", "evaluate", "predict"):
        assert {"--quiet", "--json", "--log-file"} <= opts[name], name
    for name in ("train", "evaluate", "predict"):
        assert {"--source", "--data-dir"} <= opts[name], name
    assert "--json" in opts["info"]
    assert {"--config", "--data-dir"} <= opts["download"]
    assert {
        "--config",
        "--tickers",
        "--model",
        "--lookback",
        "--horizon",
        "--hidden-size",
        "--num-layers",
        "--dropout",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--val-days",
        "--test-days",
        "--device",
        "--run-dir",
    } <= opts["train"]
    assert {"--run", "--as-of", "--out", "--offline", "--max-staleness"} <= opts["predict"]
    assert {"--run"} <= opts["evaluate"]


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_runs_and_lists_its_options(cli, name):
    res = cli(name, "--help")
    assert res.exit_code == 0, res.stderr
    cmd = _group().commands[name]
    for p in cmd.params:
        for opt in getattr(p, "opts", []):
            if opt.startswith("--"):
                assert opt in res.stdout, (name, opt)


def test_readme_mentions_every_command_and_exit_code():
    readme = ROOT / "README.md"
    assert readme.is_file(), "README.md is missing"
    text = readme.read_text(encoding="utf-8")
    for name in COMMANDS:
        assert re.search(rf"forecaster\s+{name}\b", text), f"README lacks `forecaster {name}`"
    for code in EXIT_CODES:
        assert re.search(rf"(?<![\w.]){code}(?![\w.])", text), f"README lacks exit code {code}"


def _run(argv):
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", TERM="dumb")
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def _lists_all_commands(text):
    return [name for name in COMMANDS if not re.search(rf"\b{name}\b", text)]


def test_console_script_and_module_help():
    script = Path(sys.executable).parent / "forecaster"
    assert script.is_file(), f"console script not installed next to {sys.executable}"
    for argv in ([str(script), "--help"], [sys.executable, "-m", "forecaster", "--help"]):
        proc = _run(argv)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert _lists_all_commands(proc.stdout) == [], (argv, proc.stdout)
        assert "Usage" in proc.stdout
