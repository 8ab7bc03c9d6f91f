"""Test-only fault injection for ``forecaster`` subprocesses started by tests/test_faults.py.

Python imports ``sitecustomize`` at start-up from ``sys.path``; the tests put this folder
(and ``tests/``, for ``yf_fixtures``) on ``PYTHONPATH`` of the one subprocess they start.
Nothing here is installed or shipped, and without the variables below it does nothing.

``FORECASTER_TEST_YAHOO=<file.json>``
    Yahoo answers from memory through the real yfinance code: ``forecaster.sources.
    fetch_history`` gets a ``requests`` session served by ``yf_fixtures.FakeYahoo``.
    The JSON is ``{"answers": {SYMBOL: spec}, "log": <file>}`` where spec is the path of a
    ``<TICKER>.csv`` to serve, an HTTP status (429, 500, 404) or ``"down"`` (every request
    for the symbol raises ``requests.ConnectionError``). Retries do not wait: each backoff
    delay and each attempt is appended to ``log`` as a JSON line instead.

``FORECASTER_TEST_PAUSE=<file name>:<marker path>``
    Just before ``os.replace`` puts a file called <file name> in place, write the process id
    to <marker path> and sleep (so the test can kill the process at exactly that point).

``FORECASTER_TEST_RANK_DIES=<rank>:<epoch>``
    In the process of a torchrun job whose RANK is <rank>, end the process at once (exit 9)
    once that epoch is trained, as a killed process or a lost machine would.

``FORECASTER_TEST_RANK_DATA=<rank>:<folder>``
    In the process of a torchrun job whose RANK is <rank>, read the bars from <folder> instead
    of the configured data folder, as a node with its own copy of the data would.

``FORECASTER_TEST_LOCK_AFTER=<marker path>``
    Wait until <marker path> exists before taking any lock (``forecaster.fsio.file_lock``),
    so that two runs started together reach their lock in a known order.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path


def _log(path: str | None, **record) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _install_fake_yahoo(spec_file: str) -> None:
    import requests
    from yf_fixtures import FakeYahoo

    from forecaster import sources

    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    log_file = spec.get("log")
    answers, down = {}, set()
    for symbol, what in spec["answers"].items():
        if what == "down":
            down.add(symbol.upper())
        elif isinstance(what, int):
            answers[symbol] = what
        else:
            answers[symbol] = sources.read_csv_bars(Path(what).parent, Path(what).stem)

    class PartlyDownYahoo(FakeYahoo):
        def _answer(self, path, params):
            symbol = path.rsplit("/", 1)[-1].upper()
            if "/v8/finance/chart/" in path and symbol in down:
                raise requests.ConnectionError(f"simulated outage for {symbol}")
            return super()._answer(path, params)

    yahoo = PartlyDownYahoo(answers)
    real_fetch = sources.fetch_history

    def fetch_history(ticker, start=None, end=None, *, session=None, **options):
        _log(log_file, event="attempt", ticker=ticker)
        return real_fetch(ticker, start, end, session=yahoo.session(), **options)

    def no_wait(seconds: float) -> None:
        _log(log_file, event="sleep", seconds=seconds)

    sources.fetch_history = fetch_history
    sources.fetch_with_retry.__kwdefaults__["sleep"] = no_wait


def _install_pause(setting: str) -> None:
    name, marker = setting.split(":", 1)
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(os.fsdecode(dst)).name == name:
            Path(marker).write_text(str(os.getpid()), encoding="utf-8")
            time.sleep(300)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace


def _install_lock_gate(marker: str) -> None:
    from forecaster import fsio

    real_lock = fsio.file_lock

    @contextlib.contextmanager
    def file_lock(path, timeout=0):
        give_up = time.monotonic() + 300
        while not Path(marker).exists() and time.monotonic() < give_up:
            time.sleep(0.05)
        with real_lock(path, timeout):
            yield

    fsio.file_lock = file_lock


def _install_death(setting: str) -> None:
    rank, epoch = setting.split(":")
    if os.environ.get("RANK") != rank:
        return
    from forecaster import training

    real_epochs = training.Trainer.epochs

    def epochs(self, *args, **kwargs):
        for record in real_epochs(self, *args, **kwargs):
            yield record
            if record.epoch >= int(epoch):
                os._exit(9)

    training.Trainer.epochs = epochs


def _install_rank_data(setting: str) -> None:
    rank, folder = setting.split(":", 1)
    if os.environ.get("RANK") != rank:
        return
    from forecaster import training

    real_load = training.load_training_data

    def load_training_data(cfg, *args, **kwargs):
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"data_dir": folder})})
        return real_load(cfg, *args, **kwargs)

    training.load_training_data = load_training_data


if os.environ.get("FORECASTER_TEST_RANK_DATA"):
    _install_rank_data(os.environ["FORECASTER_TEST_RANK_DATA"])
if os.environ.get("FORECASTER_TEST_RANK_DIES"):
    _install_death(os.environ["FORECASTER_TEST_RANK_DIES"])
if os.environ.get("FORECASTER_TEST_YAHOO"):
    _install_fake_yahoo(os.environ["FORECASTER_TEST_YAHOO"])
if os.environ.get("FORECASTER_TEST_PAUSE"):
    _install_pause(os.environ["FORECASTER_TEST_PAUSE"])
if os.environ.get("FORECASTER_TEST_LOCK_AFTER"):
    _install_lock_gate(os.environ["FORECASTER_TEST_LOCK_AFTER"])
