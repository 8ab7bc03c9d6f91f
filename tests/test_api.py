"""The Python API: every command is a function of the package, and the README's example runs."""

from __future__ import annotations

import datetime as dt
import inspect
import os
import re
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Iterable
from pathlib import Path

import pytest
from support import stocka_plot_fails

import forecaster
from forecaster.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = f"\n## {title}\n"
    assert head in text, f"README lacks the section {title!r}"
    return text.split(head, 1)[1].split("\n## ", 1)[0]


def test_every_command_but_info_is_a_function_of_the_package():
    import typer.main

    commands = set(typer.main.get_command(app).commands)
    assert commands - {"info"} <= set(forecaster.__all__), commands - set(forecaster.__all__)
    for name in commands - {"info"}:
        assert callable(getattr(forecaster, name)), name


def test_the_readme_table_names_only_functions_the_package_has():
    names = re.findall(r"^\| `(\w+)\(", _section("From Python"), re.M)
    assert {"train", "evaluate", "predict", "score", "promote", "retrain", "download", "tune"} <= set(names)
    for name in names:
        assert name in forecaster.__all__ and callable(getattr(forecaster, name)), name


def test_a_type_checker_sees_every_name_the_package_exports():
    """``import forecaster as fc; fc.predict(...)`` is checked only if the names imported for type
    checkers (each re-exported as such) are the ones the package serves lazily, from the same
    modules, and the package ships ``py.typed``."""
    import ast

    init = Path(forecaster.__file__)
    tree = ast.parse(init.read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    imported = {
        alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    re_exported = {alias.name == alias.asname for node in block.body for alias in node.names}
    assert imported == forecaster._LAZY and re_exported == {True}
    assert (init.parent / "py.typed").is_file()


def _members(hint) -> tuple:
    return typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)


def test_the_functions_annotations_take_what_the_readme_passes():
    """A folder as a str, tickers as a comma-separated str, a date as a date: the annotations
    said Path (or os.PathLike) and list[str], so a type checker refused the README's own calls."""
    folders = {"path", "run_dir", "out", "data_dir", "runs_dir", "folder", "root"}
    checked = set()
    for name in forecaster.__all__:
        function = getattr(forecaster, name)
        if not inspect.isfunction(function):
            continue
        for param, hint in typing.get_type_hints(function).items():
            takes = _members(hint)
            if param in folders:
                assert str in takes and os.PathLike[str] in takes, (name, param, hint)
            elif param == "tickers":
                assert str in takes or Iterable[str] in takes, (name, param, hint)
            elif param in ("as_of", "since"):
                assert str in takes and dt.date in takes, (name, param, hint)
            else:
                continue
            checked.add(param)
    assert checked == folders | {"tickers", "as_of", "since"}


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        forecaster.trian  # noqa: B018


def test_the_readme_example_runs_and_writes_what_it_says(tmp_path):
    code = re.search(r"```python\n(.*?)```", _section("From Python"), re.S).group(1)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(ROOT / "data" / "sample", tmp_path / "data" / "sample")
    (tmp_path / "example.py").write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "api"
    assert (run / "model.safetensors").is_file() and (run / "eval" / "metrics.csv").is_file()
    assert (tmp_path / "runs" / "api-prod").resolve() == run.resolve()
    dated = sorted(p.name for p in (tmp_path / "forecasts" / "api").glob("2*.csv"))
    assert dated == ["2025-12-31.csv"], dated
    lines = done.stdout.splitlines()
    assert any(re.match(r"\d+\s+garch\s", line.strip()) for line in lines), done.stdout
    assert any("STOCKB" in line and "2026-01-02" in line for line in lines), done.stdout
    assert lines[-1] == "1 no run directory at runs/no-such-run (`forecaster info runs` lists the runs there)", lines[
        -1
    ]
    # predict's warnings reach the caller's logging, as the README's comment says
    assert "WARNING:forecaster:STOCKA: last bar 2025-12-31, " in done.stderr, done.stderr


def test_plots_leave_the_callers_matplotlib_backend_and_figures_as_they_were(run_copy, monkeypatch):
    """evaluate(plot=True) switched the program's pyplot to Agg (a notebook's inline plots
    stopped showing), and a plot that could not be drawn closed every figure the program had
    open."""
    import matplotlib
    import matplotlib.pyplot as plt

    stocka_plot_fails(monkeypatch)
    before = matplotlib.get_backend()
    plt.switch_backend("svg")  # a backend of the program's own, not forecaster's Agg
    mine = plt.figure()
    try:
        forecaster.evaluate(run_copy, plot=True, jobs=1)
        assert sorted(p.name for p in (run_copy / "eval" / "plots").iterdir()) == ["STOCKB.png", "training.png"]
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == [mine.number]
    finally:
        plt.close(mine)
        plt.switch_backend(before)
