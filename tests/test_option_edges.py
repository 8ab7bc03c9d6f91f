"""Option and environment values at their edges: refused with one line naming what was given,
the documented exit code, and nothing written; never an unexpected error."""

from __future__ import annotations

import pytest
from support import assert_one_line_error

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _train(cli, small_dir, run, *extra):
    args = ["train", "--source", "csv", "--data-dir", small_dir, "-t", "STOCKA", "--lookback", "20", "--horizon", "3"]
    args += ["--val-days", "100", "--test-days", "100", "--hidden-size", "8", "--epochs", "1", "--run-dir", run]
    return cli(*args, *extra)


@pytest.mark.parametrize(
    "env, fragments",
    [
        ({"WORLD_SIZE": "abc"}, ("WORLD_SIZE='abc'", "not a whole number")),
        ({"WORLD_SIZE": "0"}, ("WORLD_SIZE='0'", "at least 1")),
        ({"WORLD_SIZE": "-1"}, ("WORLD_SIZE='-1'", "at least 1")),
        ({"LOCAL_RANK": "abc"}, ("LOCAL_RANK='abc'",)),
        ({"RANK": "x"}, ("RANK='x'",)),
        ({"WORLD_SIZE": "2", "RANK": "x"}, ("RANK='x'",)),
        ({"WORLD_SIZE": "2"}, ("RANK is unset where WORLD_SIZE=2",)),
        ({"WORLD_SIZE": "2", "RANK": "2"}, ("RANK is 2 where WORLD_SIZE=2", "from 0 to 1")),
        ({"WORLD_SIZE": "2", "RANK": "1"}, ("MASTER_ADDR and MASTER_PORT unset",)),
        (
            {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"},
            ("MASTER_PORT='99999'",),
        ),
    ],
)
def test_a_torchrun_variable_that_cannot_be_a_job_is_refused_naming_it(
    cli, small_dir, tmp_path, monkeypatch, env, fragments
):
    """`WORLD_SIZE=abc forecaster train` said "unexpected error: ValueError: invalid literal for
    int()", WORLD_SIZE=0 a ZeroDivisionError and WORLD_SIZE=-1 a pydantic validation error of the
    run's manifest; a job without RANK or MASTER_ADDR torch's own ValueError, all as unexpected
    errors. Each is one line naming the variable now, exit 1, before any training."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run = tmp_path / "run"
    res = _train(cli, small_dir, run)
    assert_one_line_error(res, 1, "environment variable", *fragments)
    assert not run.exists()


def test_an_empty_world_size_is_one_process(cli, small_dir, tmp_path, monkeypatch):
    """An empty WORLD_SIZE (`WORLD_SIZE= forecaster train`, a job runner's template left blank)
    is unset, as the entry point reads it; training read it as int("") and failed with an
    unexpected ValueError. Training is reached now, as one process."""
    from forecaster.errors import ConfigError
    from forecaster.training import Dist

    def reached(cfg, **kwargs):
        raise ConfigError(f"training reached with a world of {Dist().world}")

    monkeypatch.setattr("forecaster.training.train", reached)
    monkeypatch.setenv("WORLD_SIZE", "")
    monkeypatch.delenv("RANK", raising=False)
    res = _train(cli, small_dir, tmp_path / "run")
    assert_one_line_error(res, 1, "training reached with a world of 1")


def test_a_rank_without_a_job_trains_and_writes_the_run(cli, small_dir, tmp_path, monkeypatch):
    """A RANK left in the environment with no WORLD_SIZE (a shell where a job once ran): the
    training ran as a job's rank 3, which writes nothing, and exited 0 without a word and
    without a run. One process writes its run whatever RANK says."""
    for name in ("WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "3")
    run = tmp_path / "run"
    res = _train(cli, small_dir, run)
    assert res.exit_code == 0, res.stderr
    assert (run / "run.json").is_file() and (run / "history.csv").is_file()


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_config_file_that_never_ends_is_refused(cli, tmp_path, device):
    """`--config /dev/zero` read the device to its end, which never comes: the command grew
    until the machine ran out of memory. A config file is read up to 16 MiB now, and one that
    holds more is one line naming it, exit 1."""
    run = tmp_path / "run"
    res = cli("train", "--config", device, "--epochs", "1", "--run-dir", run)
    assert_one_line_error(res, 1, f"config file {device}", "more than 16 MiB")
    assert not run.exists()


def test_a_config_file_over_the_limit_is_refused_unread(cli, tmp_path):
    """A plain file is measured before it is read: one of 17 MiB (a data file given as the
    config) is the same line, not a TOML error after reading it whole."""
    config = tmp_path / "big.toml"
    with open(config, "wb") as f:
        f.truncate(17 << 20)
    res = cli("train", "--config", config, "--run-dir", tmp_path / "run")
    assert_one_line_error(res, 1, f"config file {config} holds more than 16 MiB")


def test_a_config_file_just_under_the_limit_is_read(cli, tmp_path):
    """The limit is no config's: a long file (a comment of 16 MiB less a few bytes) still reads."""
    from forecaster.config import CONFIG_MAX_BYTES

    config = tmp_path / "long.toml"
    text = "[train]\nepochs = 0\n"
    config.write_text(text + "#" * (CONFIG_MAX_BYTES - len(text) - 1) + "\n")
    res = cli("train", "--config", config, "--run-dir", tmp_path / "run")
    assert_one_line_error(res, 1, "train.epochs: must be greater than 0, not 0")


def test_the_name_tune_in_the_folder_of_the_studies_is_refused(cli, run_copy, tmp_path):
    """`promote RUN --name tune` made runs/tune a link to the run, and the next
    `forecaster tune` wrote its study (default.db, default/) into that run's directory. The name
    is refused there now, exit 1, naming --name; under another --runs-dir it is a name as any."""
    res = cli("promote", run_copy, "--name", "tune")
    assert_one_line_error(res, 1, "--name tune", "keeps its studies")
    assert not (tmp_path / "cwd" / "runs").exists()
    res = cli("promote", run_copy, "--name", "tune", "--runs-dir", "./runs/../runs")
    assert_one_line_error(res, 1, "--name tune")
    res = cli("retrain", "tune", "--epochs", "1")  # it said: promote a run first, `promote RUN --name tune`
    assert_one_line_error(res, 1, "NAME tune: runs/tune is the folder where `forecaster tune` keeps its studies")
    res = cli("promote", run_copy, "--name", "tune", "--runs-dir", "models", "-q")
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "cwd" / "models" / "tune").resolve() == run_copy.resolve()


@pytest.mark.parametrize(
    "extra, why",
    [
        (["--offline"], "--offline, which never refreshes the store"),
        ([], "the run's csv source, whose files are not refreshed"),
        (["--source", "csv"], "--source csv, whose files are not refreshed"),
    ],
)
def test_max_staleness_where_nothing_is_refreshed_says_it_has_no_effect(cli, trained_run, tmp_path, extra, why):
    """`predict --offline --max-staleness 0` (or of a run that reads CSV files) forecast from
    bars of any age without a word: the limit applies only to a failed refresh of the store, and
    there is none. A warning says so now; the forecast is written as before."""
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc", "--max-staleness", "0", "-q", *extra)
    assert res.exit_code == 0, res.stderr
    [line] = [ln for ln in res.stderr.splitlines() if "--max-staleness" in ln]
    assert line.startswith("WARNING: --max-staleness has no effect with " + why), line
    assert (tmp_path / "fc" / trained_run.name / "latest.csv").is_file()
    res = cli("predict", "--run", trained_run, "--out", tmp_path / "fc2", "-q", *extra)
    assert res.exit_code == 0 and "--max-staleness" not in res.stderr


@pytest.mark.parametrize(
    "value, said",
    [("", "'' names no file"), ("  ", "'  ' names no file"), ("FOLDER", "is a folder: give the name of a file in it")],
)
def test_a_log_file_that_names_no_file_is_a_usage_error_saying_so(cli, run_copy, tmp_path, value, said):
    """`--log-file ""` (an empty "$LOG") was refused as "file '' is a directory", of the current
    folder it was taken for; one of spaces was a log file named "  " in the current folder. Both
    are refused as naming no file now, and a folder as a folder, exit 2 before any work."""
    value = str(tmp_path) if value == "FOLDER" else value
    res = cli("info", run_copy, "--log-file", value)
    assert res.exit_code == 2 and res.stdout == "", res.stderr
    assert "Invalid value for '--log-file': " in res.stderr and said in res.stderr, res.stderr
    assert not (tmp_path / "cwd" / value).is_file()


def test_a_tune_timeout_that_passes_before_the_first_trial_says_so(cli, small_dir):
    """`tune --timeout 1e-9` started no trial, and said "no trial of study s has completed
    (every trial's state: runs/tune/s/trials.csv)", a file with a header and no trial. It says
    that the timeout passed before the first trial now, naming --timeout, exit 1."""
    args = ["tune", "--source", "csv", "--data-dir", small_dir, "-t", "STOCKA", "--lookback", "20", "--horizon", "3"]
    args += ["--val-days", "100", "--test-days", "100", "--epochs", "1", "--trials", "1", "--study", "s"]
    res = cli(*args, "--timeout", "1e-9")
    assert_one_line_error(res, 1, "no trial of study s was run: --timeout 1e-09 s", "before the first one could start")


def test_a_journal_storage_that_cannot_be_opened_names_the_storage(cli, small_dir):
    """`tune --storage journal:/proc/1/study.log` (a file no process may make there) said only
    "ERROR: /proc/1/study.log: No such file or directory"; the line names the study storage now."""
    args = ["tune", "--source", "csv", "--data-dir", small_dir, "-t", "STOCKA", "--epochs", "1", "--trials", "1"]
    res = cli(*args, "--storage", "journal:/proc/1/study.log")
    assert_one_line_error(res, 1, "cannot open the study storage journal:/proc/1/study.log: ")


def test_a_best_run_over_the_studies_folder_is_refused_before_the_search(cli, small_dir, tmp_path):
    """`tune --train-best --run-dir runs` in a new project ran the whole search, made runs/tune,
    and only then refused the best run as a folder holding tune. It is refused before any trial
    now, exit 1, nothing made."""
    args = ["tune", "--source", "csv", "--data-dir", small_dir, "-t", "STOCKA", "--lookback", "20", "--horizon", "3"]
    args += ["--val-days", "100", "--test-days", "100", "--epochs", "1", "--trials", "1", "--train-best"]
    for target in ("runs", "runs/tune"):
        res = cli(*args, "--run-dir", target)
        assert_one_line_error(res, 1, f"cannot train the best run into {target}: it would replace runs/tune")
        assert not (tmp_path / "cwd" / "runs").exists()
    # the study's own results folder, which the search makes: refused before it too
    res = cli(*args, "--study", "s", "--run-dir", "runs/tune/s")
    assert_one_line_error(res, 1, "cannot train the best run into runs/tune/s: it is inside runs/tune")
    assert not (tmp_path / "cwd" / "runs").exists()
