"""The benchmark runner's bookkeeping: what a failed area, an update and a smoke run do to the
published table and results; and the GPU check, tried small on the CPU."""

from __future__ import annotations

import re
import sys

import pytest
from support import ROOT

sys.path.append(str(ROOT / "benchmarks"))

import harness  # noqa: E402
import run  # noqa: E402


def _meta(started: str) -> dict:
    load = {"loadavg": [0.1, 0.2, 0.3], "running": 0}
    return {
        "started": started,
        "cpus": 2,
        "usable_cpus": 2,
        "python": "3.11.7",
        "cpu": "a CPU",
        "load_start": load,
        "load_end": load,
        "total_seconds": 10.0,
    }


def _area(area: str, value: float) -> dict:
    row = harness.Row(area, f"{area} thing", value, "s", target="< 30", met=value < 30)
    return {"area": area, "rows": [row.__dict__], "meta": {}, "details": {}}


def _failed(area: str) -> dict:
    row = harness.Row(area, "FAILED", None, "", met=False, note="exit code 1")
    return {"area": area, "rows": [row.__dict__], "meta": {}, "details": {}}


def test_an_area_that_fails_in_an_update_keeps_its_earlier_rows_and_is_not_said_to_be_measured_again():
    last = {"meta": _meta("2026-01-01 00:00:00"), "areas": [_area("universe", 20.0), _area("cli", 0.1)]}
    new = {"meta": _meta("2026-02-02 00:00:00"), "areas": [_failed("universe"), _area("cli", 0.2)]}
    bench = run.updated(last, new)
    rows = {(a["area"], r["name"]): r["value"] for a in bench["areas"] for r in a["rows"]}
    assert rows == {("universe", "universe thing"): 20.0, ("cli", "cli thing"): 0.2}
    assert [u["areas"] for u in bench["meta"]["updates"]] == [["cli"]]
    table = run.readme_table(bench)
    assert "| universe | universe thing | 20.0 | s | < 30 | yes |" in table, table
    assert "Measured again 2026-02-02 00:00:00 (2 CPUs, 2 usable; a CPU; python 3.11.7;" in table, table
    # every area failed: the results stay as they were
    assert run.updated(last, {"meta": _meta("2026-03-03 00:00:00"), "areas": [_failed("cli")]}) == last


def test_a_failed_area_is_a_failed_row_of_the_table_not_a_missing_one():
    bench = {"meta": _meta("2026-01-01 00:00:00"), "areas": [_failed("universe"), _area("cli", 0.1)]}
    table = run.readme_table(bench)
    assert "| universe | FAILED (exit code 1) | - |  |  | NO |" in table, table


@pytest.mark.parametrize(
    "argv",
    [["--quick", "--readme"], ["--quick", "--update"], ["--only", "cli", "--skip", "cli"], ["--only", "nope"]],
)
def test_arguments_that_would_publish_a_smoke_run_or_run_nothing_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as info:
        run.parse_args(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--from-json", "{tmp}/none.json"], "not a bench.json this script wrote (FileNotFoundError"),
        (["--from-json", "{tmp}/empty.json"], "not a bench.json this script wrote (KeyError: 'areas')"),
        (["--from-json", "{tmp}/empty.json", "--update"], "--from-json runs nothing: drop --update and --quick"),
        # a mistyped folder left the real series out of a table published after 40 minutes
        (["--only", "convergence", "--real-data", "{tmp}"], "no GOOG.csv, ORCL.csv, YHOO.csv there"),
    ],
)
def test_a_file_or_folder_the_benchmarks_cannot_use_is_refused_in_one_line(argv, said, tmp_path, capsys):
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(SystemExit) as info:
        run.parse_args([a.format(tmp=tmp_path) for a in argv])
    assert info.value.code == 2
    assert said in capsys.readouterr().err


def test_a_smoke_runs_results_are_not_published_from_their_file_either(tmp_path, monkeypatch, capsys):
    written = []
    monkeypatch.setattr(run, "write_readme", written.append)
    quick = tmp_path / "bench.json"
    quick.write_text(run.json.dumps({"meta": {**_meta("2026-01-01 00:00:00"), "quick": True}, "areas": []}))
    assert run.main(["--from-json", str(quick), "--readme"]) == 2
    assert written == [] and "--quick smoke run" in capsys.readouterr().err


def test_a_measured_child_keeps_no_setting_of_the_callers_environment(monkeypatch):
    """Only where things are: a threading, oneDNN, CUDA, torchrun or PYTHONPATH setting of the
    caller would change what is measured (only the threading ones were taken out)."""
    for k, v in {
        "OMP_NUM_THREADS": "7",
        "PYTHONPATH": "/elsewhere",
        "CUDA_VISIBLE_DEVICES": "",
        "WORLD_SIZE": "2",
        "ONEDNN_VERBOSE": "1",
        "LD_PRELOAD": "x.so",
        "HOME": "/home/me",
    }.items():
        monkeypatch.setenv(k, v)
    env = harness.clean_env({"OMP_WAIT_POLICY": "PASSIVE"})
    assert env["HOME"] == "/home/me" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    for k in ("OMP_NUM_THREADS", "PYTHONPATH", "CUDA_VISIBLE_DEVICES", "WORLD_SIZE", "ONEDNN_VERBOSE", "LD_PRELOAD"):
        assert k not in env


def test_a_smoke_run_writes_apart_from_the_published_results():
    assert run.results_dir(run.parse_args(["--quick"])) == harness.RESULTS / "quick"
    assert run.results_dir(run.parse_args([])) == harness.RESULTS


def test_quick_keeps_the_options_given_and_unknown_names_are_argument_errors(capsys):
    ap = harness.area_args("x", rounds=3)
    ap.add_argument("--cells", default="lstm,gru,rnn")
    args = ap.parse_args(["--quick", "--cells", "gru"])
    harness.quick(ap, args, rounds=1, cells="lstm")
    assert (args.rounds, args.cells) == (1, "gru")
    assert harness.names_from(ap, "--cells", "gru,rnn", ("lstm", "gru", "rnn")) == ["gru", "rnn"]
    with pytest.raises(SystemExit):
        harness.names_from(ap, "--cells", "gruu", ("lstm", "gru", "rnn"))
    assert "unknown 'gruu'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ap.parse_args(["--rounds", "0"])


def test_the_comparison_shows_each_seeds_p_value_when_only_some_seeds_have_a_test():
    """A median gate open for one seed and shut for the other: the mean of the one p-value
    would pass for both seeds', and the dash would no longer mean 'no test'."""
    import compare_models
    import pandas as pd

    assert compare_models._seeds_p(pd.Series([0.2, float("nan")])) == "0.20 / -"
    assert compare_models._p(compare_models._seeds_p(pd.Series([float("nan"), float("nan")]))) == "-"
    assert compare_models._p(compare_models._seeds_p(pd.Series([0.2, 0.4]))) == "0.30"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        # the real series skipped, and the results file left with the sample's rows alone
        (["--real", "{tmp}/nowhere"], "--real {tmp}/nowhere is not a folder"),
        (["--datasets", "GOOG"], "GOOG: give --real DIR"),
        (["--datasets", "sample", "FOO", "--real", "{tmp}"], "--real {tmp} has no FOO.csv"),
        (["--epochs", "0"], "argument --epochs: must be at least 1, not 0"),
        (["--from-csv", "{tmp}/none.csv"], "--from-csv {tmp}/none.csv: cannot be read (FileNotFoundError"),
        (["--from-csv", "{tmp}/other.csv"], "--from-csv {tmp}/other.csv: not a results file of this script"),
    ],
)
def test_the_comparison_refuses_what_it_cannot_run_before_it_trains_or_writes(tmp_path, capsys, args, said):
    import compare_models

    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    out = tmp_path / "results.csv"
    out.write_text("kept\n")
    with pytest.raises(SystemExit) as e:
        compare_models.main([a.format(tmp=tmp_path) for a in args] + ["--out", str(out)])
    assert e.value.code == 2
    assert said.format(tmp=tmp_path) in capsys.readouterr().err
    assert out.read_text() == "kept\n"


def _gpu_check(tmp_path, **env):
    import os
    import subprocess

    full = {
        **os.environ,
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "TICKERS": "12",
        "YEARS": "4",
        "BATCHES": "512",
        "TMPDIR": str(tmp_path),
        **env,
    }
    full.pop("PYTHONPATH", None)
    return subprocess.Popen(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        env=full,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_gpu_check_runs_the_demo_loop_and_both_modes_on_the_device_it_is_given(tmp_path):
    """The GPU check, tried on the CPU: the demo trained, evaluated and forecast, then a line per
    mode of the universe's epoch, each honouring its batch."""
    proc = _gpu_check(tmp_path)
    stdout, stderr = proc.communicate(timeout=170)
    assert proc.returncode == 0, stderr[-2000:]
    text = stdout
    assert "demo trained on cpu (run.json device: cpu)" in text
    assert "evaluate of the cpu-trained demo run exited 0" in text
    assert "predict --offline of the cpu-trained demo run exited 0: 10 forecast rows" in text
    for mode in ("forking", "window"):
        assert re.search(rf"^gpu_check: {mode} +batch 512 +fp32 +[\d,]+ targets/s", text, re.M), mode
    assert "fastest forking" in text and "fastest window" in text
    assert "failed" not in text + stderr
    assert not list(tmp_path.glob("forecaster-gpu-check.*"))  # its temporary folder is removed


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_gpu_check_exits_1_when_a_step_failed_and_2_for_an_unknown_mode(tmp_path):
    proc = _gpu_check(tmp_path, LOOP="0", MODES="window", TRAIN_ARGS="--no-such-flag")
    out, err = proc.communicate(timeout=110)
    assert proc.returncode == 1 and "some steps failed" in err
    proc = _gpu_check(tmp_path, MODES="windo")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "unknown mode windo" in err


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("after", [1.0, 6.0])
def test_ctrl_c_stops_the_whole_gpu_check_not_only_the_training_under_way(tmp_path, after):
    """Stopped in a python step of its own (1 s: checking the modules, writing the universe),
    bash died of the signal after the step's traceback (exit -2); in a training (6 s) it exits
    130 and starts no other."""
    import os
    import signal
    import time

    proc = _gpu_check(tmp_path, LOOP="0", MODES="window", BATCHES="256 512", TICKERS="40", YEARS="6")
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=100)
    assert proc.returncode == 130, (out, err)
    assert "batch 512" not in out  # the next training was not started


def _wheel(folder, module: str, code: str):
    import zipfile

    folder.mkdir(exist_ok=True)
    with zipfile.ZipFile(folder / f"{module}-0.0.1-py3-none-any.whl", "w") as z:
        z.writestr(f"{module}/__init__.py", code)
        z.writestr(f"{module}-0.0.1.dist-info/METADATA", f"Name: {module}\nVersion: 0.0.1\n")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_gpu_check_unpacks_only_wheels_of_missing_modules_and_skips_bf16_off_cuda(tmp_path):
    wheels = tmp_path / "wheels"
    _wheel(wheels, "filelock", "raise ImportError('the wheel hid the installed filelock')\n")
    _wheel(wheels, "gpu_check_probe_module", "")
    proc = _gpu_check(tmp_path, LOOP="0", MODES="window", WHEELS=str(wheels), PRECISIONS="fp32 bf16")
    out, err = proc.communicate(timeout=110)
    assert proc.returncode == 0, err[-2000:]
    assert "unpacked gpu_check_probe_module-0.0.1" in out and "unpacked filelock" not in out
    assert re.search(r"window +batch 512 +bf16 +skipped: bf16 autocast is for cuda only", out)
    assert re.search(r"window +batch 512 +fp32 +[\d,]+ targets/s", out)
