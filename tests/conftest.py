"""Shared fixtures: an isolated environment, a small synthetic CSV data folder, and one tiny
trained run reused by the evaluate / predict / info tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import settings
from support import forecaster_logger_kept, tiny_overrides

# No property test fails on time: an example that runs slowly on a busy machine is no bug (speed is
# what the benchmarks measure). A test's own @settings still sets its number of examples.
settings.register_profile("forecaster", deadline=None)
settings.load_profile("forecaster")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test touches the real home, cache, temporary folder or colour settings: the commands a
    test starts (torchrun's log folders among what they write) keep their temporary files under
    the test session's folder, which pytest removes in time."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "xdg-cache"))
    (base / "tmp").mkdir(exist_ok=True)
    monkeypatch.setenv("TMPDIR", str(base / "tmp"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def offline_yfinance(tmp_path_factory):
    """Private yfinance caches under tmp, and no response replayed from an earlier test."""
    from yfinance.data import YfData

    from forecaster import sources

    sources.configure_yfinance(tmp_path_factory.getbasetemp() / "yfinance-cache")
    YfData.cache_get.cache_clear()
    yield
    YfData.cache_get.cache_clear()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """CSV folder with STOCKA (listed 2016) and STOCKB (listed 2021): different histories."""
    from forecaster.synthetic import generate_bars, write_csv

    d = tmp_path_factory.mktemp("sample")
    write_csv(generate_bars("2016-01-04", "2024-12-31", seed=11), d / "STOCKA.csv")
    write_csv(generate_bars("2021-01-04", "2024-12-31", seed=12), d / "STOCKB.csv")
    return d


@pytest.fixture(scope="session")
def trained_run(sample_dir, tmp_path_factory) -> Path:
    """A tiny run trained once per test session (copy it before modifying it)."""
    from forecaster.config import load_config
    from forecaster.training import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(load_config(None, tiny_overrides(sample_dir)), run_dir=run_dir)
    return run_dir


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run, safe to damage."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


@pytest.fixture(scope="session")
def small_dir(tmp_path_factory) -> Path:
    """A short CSV folder (STOCKA from 2022-07, STOCKB from 2023-06) for quick CLI trainings."""
    from forecaster.synthetic import generate_bars, write_csv

    d = tmp_path_factory.mktemp("small")
    write_csv(generate_bars("2022-07-01", "2024-12-31", seed=21), d / "STOCKA.csv")
    write_csv(generate_bars("2023-06-01", "2024-12-31", seed=22), d / "STOCKB.csv")
    return d


@pytest.fixture(scope="session")
def small_run(small_dir, tmp_path_factory) -> Path:
    """A tiny run on the short CSV folder, trained once per test session (copy it before
    modifying it): the champion of the retrain tests, quick to retrain."""
    from forecaster.config import load_config
    from forecaster.training import train

    run_dir = tmp_path_factory.mktemp("small-runs") / "first"
    train(load_config(None, tiny_overrides(small_dir)), run_dir=run_dir)
    return run_dir


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Invoke the real Typer app in-process from a scratch working directory.

    Returns ``invoke(*args)`` giving typer's Result (stdout and stderr kept apart). The
    ``forecaster`` logger is restored after each call, since the CLI points it at the
    runner's temporary streams.
    """
    from typer.testing import CliRunner

    from forecaster.cli import app

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    runner = CliRunner()

    def invoke(*args):
        with forecaster_logger_kept():
            return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture(scope="session")
def torch_one_thread():
    """One torch CPU thread while tiny models train (much faster on a busy machine).

    Session-scoped so that it is in place before the session-scoped ``trained_run`` is built
    when a module asks for it with ``pytest.mark.usefixtures``; restored at the end.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
