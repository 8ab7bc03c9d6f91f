"""The library takes the command line's arguments the way the command line does: a string of
tickers is tickers, not letters; tickers given but naming none are refused, not every ticker; an
empty folder name is refused, not the current folder or a default one."""

from __future__ import annotations

import pytest
from support import held_by_another_thread, tiny_overrides

import forecaster as fc
from forecaster.config import load_config
from forecaster.errors import ConfigError, DataError, TickerError
from forecaster.tickers import given_tickers
from forecaster.tuning import search_dims


@pytest.mark.parametrize(
    ("given", "names"),
    [(None, None), ("STOCKA", ["STOCKA"]), ("a, b", ["a", "b"]), (["A", "B,C"], ["A", "B", "C"]), (("X",), ["X"])],
)
def test_tickers_given_as_on_the_command_line(given, names):
    assert given_tickers(given) == names


@pytest.mark.parametrize("given", [[], "", " , ", ()])
def test_tickers_given_but_naming_none_are_refused(given):
    with pytest.raises(ConfigError, match="name no ticker"):
        given_tickers(given)


def test_a_ticker_that_is_not_a_string_is_refused():
    with pytest.raises(TickerError, match="expected a string"):
        given_tickers([7])


def test_predict_and_evaluate_read_a_string_as_tickers_and_refuse_an_empty_list(run_copy, tmp_path):
    out = tmp_path / "forecasts"
    rep = fc.predict(run_copy, offline=True, out=out, tickers="stocka")
    assert sorted(set(rep.forecasts["ticker"])) == ["STOCKA"]
    with pytest.raises(ConfigError, match="name no ticker"):
        fc.predict(run_copy, offline=True, out=out, tickers=[])
    with pytest.raises(ConfigError, match="name no ticker"):
        fc.evaluate(run_copy, tickers=[])


def test_load_bars_reads_a_string_as_tickers(sample_dir):
    bars = fc.load_bars("csv", sample_dir, "STOCKA,STOCKB")
    assert list(bars) == ["STOCKA", "STOCKB"]


@pytest.mark.parametrize("given", [[], (), "", " , "])
def test_download_refuses_tickers_naming_none(tmp_path, given):
    """`[]` returned an empty report with exit code 0: a retry of no failed tickers read as done."""

    def fetch(symbol, start, end):
        raise AssertionError("nothing may be fetched")

    with pytest.raises(ConfigError, match="name no ticker"):
        fc.download(given, tmp_path / "data", fetch=fetch)
    assert not (tmp_path / "data").exists()


def test_download_and_load_bars_refuse_none_as_tickers(tmp_path, sample_dir):
    """None names the default tickers, which only a config holds: these raised TypeError
    ('NoneType' object is not iterable), an unexpected error on the command line's terms."""

    def fetch(symbol, start, end):
        raise AssertionError("nothing may be fetched")

    with pytest.raises(ConfigError, match="default tickers, which only a config holds"):
        fc.download(None, tmp_path / "data", fetch=fetch)
    assert not (tmp_path / "data").exists()
    with pytest.raises(ConfigError, match="default tickers, which only a config holds"):
        fc.load_bars("csv", sample_dir, None)


@pytest.mark.parametrize("given", ["", " , ", [], [""], [" ", ","], ()])
def test_download_and_load_bars_refuse_tickers_naming_none_without_offering_none(tmp_path, sample_dir, given):
    """Tickers naming none are refused by both, as by predict and evaluate: load_bars gave an
    empty dict for [] where download refused it, and download reported [""] as a failed ticker
    '' (exit code 1) where it refused "". Nor do they say "or pass None for the default ones":
    None is refused there (no config holds default tickers), so that sent a caller to another
    error."""

    def fetch(symbol, start, end):
        raise AssertionError("nothing may be fetched")

    with pytest.raises(ConfigError, match="name no ticker") as refused:
        fc.download(given, tmp_path / "data", fetch=fetch)
    assert "None" not in str(refused.value)
    assert not (tmp_path / "data").exists()
    with pytest.raises(ConfigError, match="name no ticker") as refused:
        fc.load_bars("csv", sample_dir, given)
    assert "None" not in str(refused.value)


def test_download_and_load_bars_split_a_list_s_comma_separated_items_as_predict_does(tmp_path, sample_dir):
    """["STOCKA,STOCKB"] is two tickers to predict (-t "STOCKA,STOCKB"); download and
    load_bars refused it as one invalid ticker 'STOCKA,STOCKB'."""
    asked = []

    def fetch(symbol, start, end):
        asked.append(symbol)
        raise DataError(f"{symbol}: no rows")

    rep = fc.download(["AAPL,msft"], tmp_path, fetch=fetch)
    assert asked == ["AAPL", "MSFT"] and list(rep.failed) == ["AAPL", "MSFT"]
    assert list(fc.load_bars("csv", sample_dir, ["STOCKA,stockb"])) == ["STOCKA", "STOCKB"]


def test_download_reads_a_string_as_tickers(tmp_path):
    asked = []

    def fetch(symbol, start, end):
        asked.append(symbol)
        raise DataError(f"{symbol}: no rows")

    rep = fc.download("AAPL", tmp_path, fetch=fetch)
    assert asked == ["AAPL"] and list(rep.failed) == ["AAPL"]


@pytest.mark.parametrize(
    ("call", "name", "has_default"),
    [
        (lambda run, tmp: fc.predict(run, offline=True, out=""), "out", True),
        (lambda run, tmp: fc.score(run, out=""), "out", True),
        (lambda run, tmp: fc.evaluate(run, data_dir=""), "data_dir", True),
        (lambda run, tmp: fc.promote(run, "prod", runs_dir=""), "runs_dir", False),
        (lambda run, tmp: fc.retrain("prod", runs_dir=""), "runs_dir", False),
        (lambda run, tmp: fc.evaluate(""), "run_dir", False),
        # read the run in the current folder, or said "." was not a run
        (lambda run, tmp: fc.load_run(""), "run_dir", False),
        # download went to Yahoo and made store/ and .yfinance-cache/ in the current folder
        (lambda run, tmp: fc.download(["AAPL"], ""), "data_dir", False),
    ],
)
def test_an_empty_folder_name_is_refused_by_the_library_too(run_copy, tmp_path, monkeypatch, call, name, has_default):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f'{name}="" names no folder') as e:
        call(run_copy, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing made here
    # None only where it stands for a default (runs_dir=None and run_dir=None are TypeErrors)
    assert ("or None for its default" in str(e.value)) == has_default, str(e.value)


def test_train_refuses_an_empty_run_dir_before_it_trains(sample_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, {**tiny_overrides(sample_dir), "run_dir": "runs/default"})
    with pytest.raises(ConfigError, match='run_dir="" names no folder'):
        fc.train(cfg, run_dir="")
    assert not list(tmp_path.iterdir())


def test_train_refuses_to_resume_a_run_it_is_not_told_the_folder_of(sample_dir, tmp_path, monkeypatch):
    """resume=True without a run_dir made a folder named after the time and said that it held
    no run; now it says which folder to name, before anything is made."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, tiny_overrides(sample_dir))
    with pytest.raises(ConfigError, match="resume=True continues the run at run_dir: name it"):
        fc.train(cfg, resume=True)
    assert not list(tmp_path.iterdir())


def test_tune_takes_one_fixed_key_as_a_key_and_refuses_unknown_ones(sample_dir):
    cfg = load_config(None, tiny_overrides(sample_dir))
    keys = {d.key for d, _ in search_dims(cfg)}
    assert "model.hidden_size" in keys
    assert {d.key for d, _ in search_dims(cfg, "model.hidden_size")} == keys - {"model.hidden_size"}
    with pytest.raises(ConfigError, match="'train.nope'"):
        search_dims(cfg, ["train.nope"])


@pytest.mark.parametrize("flag", ["--as-of", "--since"])
def test_dates_are_read_alike_for_as_of_and_since(flag):
    import datetime as dt

    import pandas as pd

    from forecaster.sessions import parse_day

    day = pd.Timestamp("2025-01-02")
    for value in ("2025-01-02", dt.date(2025, 1, 2), dt.datetime(2025, 1, 2, 15), pd.Timestamp("2025-01-02 09:30")):
        assert parse_day(value, flag) == day
    assert parse_day(pd.Timestamp("2025-01-02 23:00", tz="Asia/Tokyo"), flag) == day
    assert parse_day(None, flag) is None
    for bad in (pd.NaT, "2025-1-2", "soon", 20250102):
        with pytest.raises(ConfigError, match=f"{flag} .* is not a date; expected YYYY-MM-DD"):
            parse_day(bad, flag)
    with pytest.raises(ConfigError, match=f"{flag} 2999-01-01 is in the future"):
        parse_day("2999-01-01", flag)


def test_score_takes_a_timestamp_for_since_as_predict_takes_one_for_as_of(run_copy, tmp_path):
    import pandas as pd

    out = tmp_path / "forecasts"
    fc.predict(run_copy, offline=True, out=out, as_of=pd.Timestamp("2024-12-20"))
    # (that forecast lies inside the run's own data, so neither has a live forecast to score)
    with pytest.raises(DataError) as as_text:
        fc.score(run_copy, out=out, since="2024-11-01")
    with pytest.raises(DataError) as as_timestamp:
        fc.score(run_copy, out=out, since=pd.Timestamp("2024-11-01 10:00"))
    assert str(as_timestamp.value) == str(as_text.value)


def test_training_from_python_leaves_the_callers_threads_and_random_streams_as_they_were(sample_dir, tmp_path):
    import random

    import numpy as np
    import torch

    cfg = load_config(None, {**tiny_overrides(sample_dir), "train.threads": 1, "train.epochs": 1})
    before = torch.get_num_threads()
    torch.set_num_threads(2 if before != 2 else 3)
    threads = torch.get_num_threads()
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    try:
        fc.train(cfg, run_dir=tmp_path / "r")
        assert torch.get_num_threads() == threads
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    finally:
        torch.set_num_threads(before)


def test_trainings_started_at_once_from_two_threads_train_as_one_alone_does(sample_dir, tmp_path):
    """A scheduler's pool of threads: two trainings of one seed at once drew from the one
    random stream the process has, and neither gave the weights that seed gives alone."""
    import threading

    cfg = load_config(None, {**tiny_overrides(sample_dir), "train.threads": 1})
    fc.train(cfg, run_dir=tmp_path / "alone")
    errors = []

    def train(name):
        try:
            fc.train(cfg, run_dir=tmp_path / name)
        except BaseException as e:  # said by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=train, args=(f"at-once-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    alone = (tmp_path / "alone" / "model.safetensors").read_bytes()
    for i in range(2):
        assert (tmp_path / f"at-once-{i}" / "model.safetensors").read_bytes() == alone, i


def test_tuning_from_python_leaves_optunas_log_level_as_it_was(sample_dir, tmp_path):
    """The search quiets Optuna's own lines: the caller's level stayed changed (ERROR)."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        cfg = load_config(None, {**tiny_overrides(sample_dir), "train.epochs": 1, "tune.trials": 1})
        fc.tune(cfg, root=tmp_path / "tune")
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(before)


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (lambda: fc.train({"train": {"epochs": 1}}), "cfg must be a Config"),
        (lambda: fc.train("configs/smoke.toml"), "cfg must be a Config"),
        (lambda: fc.tune("configs/smoke.toml"), "cfg must be a Config"),
        (lambda: fc.load_config(None, [("train.epochs", 3)]), "overrides must be a dict"),
    ],
)
def test_arguments_of_the_wrong_type_are_named_up_front(call, said):
    with pytest.raises(TypeError, match=said):
        call()


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (lambda run, tmp: fc.evaluate(None), "run_dir must be a folder name .* not NoneType"),
        (lambda run, tmp: fc.evaluate(7), "run_dir must be a folder name .* not int"),
        (lambda run, tmp: fc.predict(None, offline=True, out=tmp / "fc"), "run_dir must be a folder name"),
        (lambda run, tmp: fc.predict(run, offline=True, out=3), "out must be a folder name .* not int"),
        (lambda run, tmp: fc.score(None, out=tmp / "fc"), "run_dir must be a folder name"),
        (lambda run, tmp: fc.score(run, data_dir=["data"]), "data_dir must be a folder name .* not list"),
        (lambda run, tmp: fc.promote(None, "prod", runs_dir=tmp / "runs"), "run_dir must be a folder name"),
        (lambda run, tmp: fc.promote(run, "prod", runs_dir=None), "runs_dir must be a folder name"),
        (lambda run, tmp: fc.retrain("prod", runs_dir=None), "runs_dir must be a folder name"),
    ],
)
def test_a_folder_argument_that_is_no_folder_name_is_named_up_front(run_copy, tmp_path, monkeypatch, call, said):
    """Before, these failed inside pathlib (``expected str, bytes or os.PathLike object``)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=said):
        call(run_copy, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing made here


def test_train_and_tune_name_a_run_dir_of_the_wrong_type(sample_dir):
    cfg = load_config(None, tiny_overrides(sample_dir))
    with pytest.raises(TypeError, match="run_dir must be a folder name .* not int"):
        fc.train(cfg, run_dir=5)
    with pytest.raises(TypeError, match="root must be a folder name .* not bool"):
        fc.tune(cfg, root=True)
    with pytest.raises(TypeError, match="root must be a folder name .* not NoneType"):
        fc.tune(cfg, root=None)


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (lambda run, tmp: fc.evaluate(run, jobs=-1), "jobs must be a whole number"),
        (lambda run, tmp: fc.evaluate(run, jobs="2"), "jobs must be a whole number"),
        (lambda run, tmp: fc.predict(run, offline=True, out=tmp / "fc", jobs=2.5), "jobs must be a whole number"),
        (lambda run, tmp: fc.predict(run, offline=True, out=tmp / "fc", max_staleness=-1), "max_staleness must be"),
        (lambda run, tmp: fc.retrain("prod", runs_dir=tmp / "runs", alpha=5), "alpha must be a significance level"),
        # keep was checked as the old runs were pruned: after the challenger was trained and promoted
        (lambda run, tmp: fc.retrain("prod", runs_dir=tmp / "runs", keep=0), "keep must be a whole number .* not 0"),
        (lambda run, tmp: fc.retrain("prod", runs_dir=tmp / "runs", keep="3"), "keep must be a whole number"),
        (lambda run, tmp: fc.retrain("prod", runs_dir=tmp / "runs", keep=True), "keep must be a whole number"),
    ],
)
def test_values_the_command_line_refuses_are_refused_by_the_library(run_copy, tmp_path, call, said):
    with pytest.raises(ConfigError, match=said):
        call(run_copy, tmp_path)
    assert not (tmp_path / "fc").exists() and not (tmp_path / "runs").exists()
    assert not (run_copy / "eval").exists()


def test_a_tuning_trial_trains_alone_where_a_job_runner_set_world_size(sample_dir, tmp_path, monkeypatch):
    """Every trial read WORLD_SIZE and RANK as a torchrun job's and tried to join a process
    group: 'unexpected error: ... environment variable MASTER_ADDR expected'."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    cfg = load_config(None, {**tiny_overrides(sample_dir), "train.epochs": 1, "tune.trials": 1})
    res = fc.tune(cfg, root=tmp_path / "tune")
    assert list(res.trials["state"]) == ["COMPLETE"]


def test_a_process_forked_while_another_thread_trains_can_train():
    """A program forking workers (multiprocessing's fork) while one of its threads trains: the
    child found the one-training lock held by a thread it does not have, and its training waited
    for ever."""
    import multiprocessing

    from forecaster import training

    with held_by_another_thread(training._ONE_TRAINING):
        child = multiprocessing.get_context("fork").Process(target=_exit_1_unless_training_may_start)
        child.start()
        child.join(30)
        assert child.exitcode == 0


def _exit_1_unless_training_may_start() -> None:
    import os

    from forecaster import training

    os._exit(0 if training._ONE_TRAINING.acquire(timeout=5) else 1)
