"""The project as pip installs it: what its source distribution holds and what its code imports."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

from support import ROOT

import forecaster

# what the test suite reads beside the package: `make test` runs in an unpacked sdist
SHIPPED = ("forecaster", "tests", "configs", "data/sample", "benchmarks")
NOT_SHIPPED = ("runs/", "forecasts/", "data/store/", "benchmarks/results/quick/")
_BUILT = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


def _ignored(folder: str, names: list[str]) -> set[str]:
    """What a copy of the checkout leaves out: what was built or cached, anywhere, and the
    outputs in their own folders (not tests/golden/runs, which the tests read)."""
    at = Path(os.path.relpath(folder, ROOT))
    return set(_BUILT(folder, names)) | {n for n in names if (at / n).as_posix() + "/" in NOT_SHIPPED}


def _files(root, folder: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / folder).rglob("*") if p.is_file()}


def test_the_sdist_holds_what_the_tests_read_and_no_outputs(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_ignored)
    expected = {"Makefile", "README.md", "pyproject.toml", ".ci/oldest.txt"}
    for folder in SHIPPED:
        expected |= _files(src, folder)
    assert {"tests/conftest.py", "tests/golden/runs/v1/run.json", "data/sample/STOCKA.csv"} <= expected
    for junk in ("runs/r/run.json", "forecasts/r/latest.csv", "data/store/A.parquet", "tests/__pycache__/x.pyc"):
        (src / junk).parent.mkdir(parents=True, exist_ok=True)
        (src / junk).write_text("x")
    (src / "benchmarks/results/quick").mkdir(parents=True)
    (src / "benchmarks/results/quick/bench.json").write_text("{}")

    out = tmp_path / "dist"
    code = "import sys, hatchling.build as b; print(b.build_sdist(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with tarfile.open(out / proc.stdout.strip().splitlines()[-1]) as tar:
        members = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}

    assert sorted(expected - members) == []
    assert [m for m in members if m.startswith(NOT_SHIPPED) or "__pycache__" in m] == []


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_imports() -> set[str]:
    """Top-level modules the package under test imports, except where it catches their ImportError."""
    found = set()
    for path in Path(next(iter(forecaster.__path__))).glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        optional = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers
            ):
                optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"forecaster", "__future__"}


def test_every_module_imported_at_run_time_is_a_declared_dependency():
    """A module of the dev extras (pytest, hypothesis) or of no declared distribution, imported
    by the package, works in a checkout and fails where pip installed only the dependencies."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    declared = {_canonical(re.match(r"[A-Za-z0-9._-]+", req)[0]) for req in project["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    imported = _runtime_imports()
    assert {"torch", "numpy", "typer"} <= imported
    undeclared = {
        module: distributions.get(module)
        for module in imported
        if not declared & {_canonical(d) for d in distributions.get(module, [])}
    }
    assert undeclared == {}
