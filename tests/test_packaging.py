"""The project as pip installs it: what its source distribution holds."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile

import pytest
from support import ROOT

# what the test suite reads beside the package: `make test` runs in an unpacked sdist
SHIPPED = ("forecaster", "tests", "configs", "data/sample", "benchmarks")
NOT_SHIPPED = ("runs/", "forecasts/", "data/store/", "benchmarks/results/quick/")
_IGNORED = shutil.ignore_patterns(
    ".git", ".venv*", "runs", "forecasts", "store", "quick", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


def _files(root, folder: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / folder).rglob("*") if p.is_file()}


def test_the_sdist_holds_what_the_tests_read_and_no_outputs(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_IGNORED)
    expected = {"Makefile", "README.md", "pyproject.toml", ".ci/oldest.txt"}
    for folder in SHIPPED:
        expected |= _files(src, folder)
    assert "tests/conftest.py" in expected and "data/sample/STOCKA.csv" in expected
    for junk in ("runs/r/run.json", "forecasts/r/latest.csv", "data/store/A.parquet", "tests/__pycache__/x.pyc"):
        (src / junk).parent.mkdir(parents=True, exist_ok=True)
        (src / junk).write_text("x")
    (src / "benchmarks/results/quick").mkdir(parents=True)
    (src / "benchmarks/results/quick/bench.json").write_text("{}")

    out = tmp_path / "dist"
    code = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with tarfile.open(out / proc.stdout.strip().splitlines()[-1]) as tar:
        members = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}

    assert sorted(expected - members) == []
    assert [m for m in members if m.startswith(NOT_SHIPPED) or "__pycache__" in m] == []
