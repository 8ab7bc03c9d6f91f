"""`forecaster info DIR`: what a run shows (tickers, date ranges, config, metrics, versions)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from support import (
    ROOT,
    UNPRIVILEGED_ROOT,
    assert_one_line_error,
    hold_lock,
    python_env,
    run_forecaster_minding_file_modes,
    run_meta,
    run_python_minding_file_modes,
    stop,
    tiny_overrides,
)

from forecaster.config import config_toml, load_config
from forecaster.training import Interrupted, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_info_shows_tickers_date_ranges_and_config(cli, trained_run):
    res = cli("info", trained_run)
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    meta = run_meta(trained_run)
    assert meta["name"] in out
    # the sample: STOCKA listed 2016, STOCKB listed 2021, both up to the end of 2024
    lines = {ln.split()[1].rstrip(":"): ln for ln in out.splitlines() if ln.startswith("ticker")}
    assert set(lines) == {"STOCKA", "STOCKB"}
    assert "2016-01-04" in lines["STOCKA"] and "2024-12-31" in lines["STOCKA"]
    assert "2021-01-04" in lines["STOCKB"] and "2024-12-31" in lines["STOCKB"]
    assert set(meta["tickers"]) == set(lines)
    for sym, t in meta["tickers"].items():
        assert str(t["rows"]) in lines[sym]
    assert "gru" in out and "lookback 20" in out and "horizon 3" in out
    assert meta["splits"]["test_start"][:10] in out
    assert meta["data_hash"][:16] in out
    assert "torch" in out and "pandas" in out  # versions
    assert "best_epoch" in out  # metrics
    cfg = meta["config"]
    t = cfg["train"]
    assert f"training   {t['mode']}, epochs {t['epochs']} (patience {t['patience']}), batch {t['batch_size']}, " in out
    assert f"lr {t['lr']}, weight decay {t['weight_decay']}, dropout {cfg['model']['dropout']}, seed {t['seed']}" in out
    assert f"calendar {cfg['data']['calendar']}" in out
    # the device it trained on, and what was asked when that differs
    asked = "" if t["device"] == meta["device"] else f" (--device {t['device']})"
    assert f"seed {t['seed']}, device {meta['device']}{asked}, fp32\n" in out
    track, m = cfg["intervals"], cfg["model"]
    half_life = f"volatility half-life {track['vol_halflife']}\n"
    assert f"intervals  tracking rate {track['tracking_rate']} ({track['step_tracking']}), {half_life}" in out
    assert m["target_scale"] == "local"
    scale = f"targets in units of the local volatility (half-life {m['scale_halflife']})"
    assert f"{scale}, AR terms {m['ar_order']}, ticker embedding {m['embedding_dim']}, " in out
    assert f"median gate p < {m['median_alpha']}\n" in out
    assert res.stderr == ""


def test_info_says_a_recursive_runs_validation_loss_is_one_steps_and_tracking_off(cli, sample_dir, tmp_path):
    """A recursive run's validation loss is its one-step forecasts' (not comparable with a direct
    run's over every step), said by info and by train; a tracking rate of 0 is "off", not
    "0.0 (shared)"."""
    run = tmp_path / "rec"
    over = tiny_overrides(
        sample_dir,
        **{
            "model.strategy": "recursive",
            "intervals.tracking_rate": 0.0,
            "model.median_alpha": 0.0,
            "model.target_scale": "ticker",
            "train.epoch_steps": 0,
        },
    )
    train(load_config(None, over), run_dir=run)
    out = cli("info", run).stdout
    assert "targets in units of the ticker's volatility, AR terms 5, ticker embedding 4, " in out
    assert "median gate off (always the last close)\n" in out
    assert "chunk 32, no limit on the steps an epoch\n" in out
    assert "a recursive run trains and validates its one-step forecasts: its validation loss is one step's\n" in out
    assert "intervals  tracking off, volatility half-life 20\n" in out
    conf = tmp_path / "recursive.toml"  # the same configuration, trained again from the command line
    conf.write_text(config_toml(load_config(None, over)))
    res = cli("train", "--config", conf, "--run-dir", tmp_path / "rec2", "--epochs", "1")
    assert res.exit_code == 0, res.stderr
    assert "validation pinball (one step ahead) " in res.stdout


def test_info_json_is_the_run_metadata(cli, trained_run):
    res = cli("info", trained_run, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc == run_meta(trained_run)
    assert {
        "format_version",
        "name",
        "config",
        "tickers",
        "splits",
        "windows",
        "data_hash",
        "metrics",
        "versions",
        "seed",
        "created_at",
    } <= set(doc)


def test_info_json_keys_of_a_promoted_name_are_documented_in_the_readme(cli, run_copy):
    assert cli("promote", run_copy, "--name", "prod", "--runs-dir", run_copy.parent, "-q").exit_code == 0
    res = cli("info", run_copy.parent / "prod", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("Every command that takes a run") :].split("\n\n", 1)[0]
    added = set(doc) - set(run_meta(run_copy))
    assert added == {"pointer"}
    assert doc["pointer"] == {
        "name": "prod",
        "path": str(run_copy.parent / "prod"),
        "target": str(run_copy.resolve()),
    }
    assert not [k for k in sorted(added | set(doc["pointer"])) if f"`{k}`" not in paragraph]


@pytest.fixture
def interrupted_run(sample_dir, tmp_path):
    """A tiny run whose training was stopped in its first epoch: saved, resumable."""

    def stopped(rec):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(load_config(None, tiny_overrides(sample_dir)), run_dir=run, on_epoch=stopped)
    return run


def test_info_on_a_promoted_name_whose_run_was_interrupted_says_to_resume_the_run_itself(cli, interrupted_run):
    """The champion retrained in place (`train --run-dir` of the run a name points at) and
    stopped: the command info gives resumes the run directory, which train accepts, not the
    promoted name, which it refuses."""
    run_copy = interrupted_run
    (run_copy.parent / "prod").symlink_to(run_copy.name)
    res = cli("info", run_copy.parent / "prod")
    assert res.exit_code == 0, res.stderr
    status = next(ln for ln in res.stdout.splitlines() if ln.startswith("status"))
    assert status.endswith(f"resume with `forecaster train --resume {run_copy.resolve()}`"), status
    res = cli("info", run_copy)
    assert f"resume with `forecaster train --resume {run_copy}`" in res.stdout


def test_info_on_a_run_stopped_inside_its_first_epoch_shows_no_best_epoch_and_the_resume_that_works(
    cli, sample_dir, tmp_path
):
    """Ctrl-C before the first epoch ended saves a resumable run with no epoch run: no best
    epoch nor loss, shown as n/a (null in --json) beside the 0 epochs run; the resume info
    advises trains it from its start, after which its best epoch is shown."""

    def stopped(steps):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(load_config(None, tiny_overrides(sample_dir)), run_dir=run, on_batch=stopped)
    res = cli("info", run)
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert f"status     interrupted: resume with `forecaster train --resume {run}`" in lines
    [metrics] = [ln for ln in lines if ln.startswith("metrics ")]
    assert metrics.startswith("metrics    best_epoch n/a, best_val_loss n/a, epochs_run 0, train_seconds "), metrics
    doc = json.loads(cli("info", run, "--json").stdout)["metrics"]
    assert (doc["best_epoch"], doc["best_val_loss"], doc["epochs_run"]) == (None, None, 0)
    # there is no epoch 0 to have stopped after
    assert_one_line_error(cli("predict", "--run", run), 1, f"{run}: training was interrupted in its first epoch; ")
    assert cli("train", "--resume", run, "-q").exit_code == 0
    [metrics] = [ln for ln in cli("info", run).stdout.splitlines() if ln.startswith("metrics ")]
    assert re.match(r"metrics    best_epoch [12], best_val_loss 0\.\d{4}, epochs_run 2, ", metrics), metrics


@pytest.mark.parametrize("lost", ["resume.safetensors", "history.csv"])
def test_info_on_an_interrupted_run_that_cannot_be_resumed_says_so_not_to_resume_it(cli, interrupted_run, lost):
    """An interrupted run missing what `train --resume` goes on from (copied in part, or a file
    deleted): info does not advise the resume, which would be refused; it says why the run
    cannot be used and what to do, as for a run whose weights are gone."""
    (interrupted_run / lost).unlink()
    refused = cli("train", "--resume", interrupted_run)
    # one line that names the run once, the file lost, and what to do (history.csv's said
    # "... is not a readable epoch history ([Errno 2] No such file or directory: '...')", no more)
    line = assert_one_line_error(
        refused, 1, "cannot be resumed", f"its {lost} ", "train the run again without --resume"
    )
    assert line.count(str(interrupted_run)) == 1 and "Errno" not in line, line
    res = cli("info", interrupted_run)
    assert_one_line_error(res, 1, "cannot be used", lost, "cannot be resumed")
    [status] = [ln for ln in res.stdout.splitlines() if ln.startswith("status")]
    assert "cannot be used" in status and lost in status and "resume with" not in status, status
    doc = json.loads(cli("info", interrupted_run, "--json").stdout)
    assert lost in doc["unusable"] and doc["status"] == "interrupted"
    # nor do the commands that refuse it (they advised `train --resume`, which is refused)
    for args in (("predict", "--run", interrupted_run, "--offline"), ("evaluate", "--run", interrupted_run)):
        line = assert_one_line_error(cli(*args), 1, "cannot be resumed", lost, "train the run again without --resume")
        assert "resume with" not in line and line.count(str(interrupted_run)) == 1, line


@pytest.mark.parametrize("damaged", ["resume.safetensors", "history.csv"])
def test_resume_of_a_run_whose_resume_files_are_unreadable_says_to_train_it_again(cli, interrupted_run, damaged):
    """resume.safetensors cut short, or a history.csv without its columns: one line naming the
    file and what to do, as for one that is missing (it named the file and no way on)."""
    (interrupted_run / damaged).write_text("epoch\n1\n")
    line = assert_one_line_error(
        cli("train", "--resume", interrupted_run), 1, damaged, "cannot be resumed", "again without --resume"
    )
    assert "Errno" not in line, line


def _epoch_written_1e400(run) -> None:
    history = run / "history.csv"
    history.write_text(history.read_text().replace("\n1,", "\n1e400,"))


@pytest.mark.parametrize(
    "damage, file, said",
    [
        (_epoch_written_1e400, "history.csv", "history.csv is not a readable epoch history"),
        (
            lambda run: _rewrite_resume(run, lambda t, s: s.update(epoch=float("inf"))),
            "resume.safetensors",
            "resume.safetensors is not a readable resume file",
        ),
    ],
    ids=["history-epoch-1e400", "resume-epoch-infinity"],
)
def test_an_infinite_epoch_is_unreadable_not_an_unexpected_error(cli, interrupted_run, damage, file, said):
    """history.csv's epoch written 1e400, or resume.safetensors' state saying epoch Infinity
    (JSON that Python reads), edited or damaged: train --resume and info of the run ended with
    an unexpected OverflowError, and info of the folder listed no run at all, where it names
    each run that cannot be used and why."""
    damage(interrupted_run)
    line = assert_one_line_error(cli("train", "--resume", interrupted_run), 1, said, "infinity")
    assert "unexpected" not in line, line
    assert_one_line_error(cli("info", interrupted_run), 1, "cannot be used", file)
    res = cli("info", interrupted_run.parent)
    assert res.exit_code == 0, res.stderr
    assert f"{interrupted_run.name}: " in res.stdout and said.split(" is ", 1)[1] in res.stdout, res.stdout


def _rewrite_resume(run, change) -> None:
    """Rewrite run's resume.safetensors with ``change(tensors, state)`` applied to its tensors
    and the JSON state in its metadata."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    path = run / "resume.safetensors"
    tensors = load_file(path)
    with safe_open(str(path), "numpy") as f:
        state = json.loads(f.metadata()["state"])
    change(tensors, state)
    save_file(tensors, path, metadata={"state": json.dumps(state)})


def _first_opt(tensors: dict) -> str:
    return next(k for k in sorted(tensors) if k.startswith("opt.") and k.endswith(".exp_avg"))


RESUME_DAMAGE = {
    "weights of another shape": (
        lambda t, s: t.update({"model.head.bias": np.zeros(1, np.float32)}),
        "model.head.bias has shape (1,)",
    ),
    "a weight missing": (lambda t, s: t.pop("model.head.bias"), "missing model.head.bias"),
    # the best epoch's weights are loaded only once training ends: an unexpected error then
    "a best epoch's weight missing": (lambda t, s: t.pop("best.head.bias"), "missing best.head.bias"),
    "a moment of another shape": (  # torch loaded it and trained on, without a word
        lambda t, s: t.update({_first_opt(t): np.zeros(7, np.float32)}),
        "has shape (7,)",
    ),
    "param_groups not a list": (lambda t, s: s.update(param_groups="x"), "param_groups is not a list of tables"),
    "a learning rate in words": (
        lambda t, s: s["param_groups"][0].update(lr="fast"),
        "param_groups holds a group without a learning rate",
    ),
    "a group without eps": (  # torch loaded it and failed at the first step with a KeyError
        lambda t, s: s["param_groups"][0].pop("eps"),
        "param_groups holds a group without eps",
    ),
    "scheduler not a table": (lambda t, s: s.update(scheduler=[1]), "scheduler is not a scheduler's state"),
    "generator of floats": (
        lambda t, s: t.update(generator=np.zeros(3, np.float32)),
        "generator is not a random generator's state",
    ),
}


@pytest.mark.parametrize("case", list(RESUME_DAMAGE))
def test_a_resume_state_that_does_not_fit_the_run_is_refused_by_info_and_resume_in_one_line(cli, interrupted_run, case):
    """A resume.safetensors whose tensors or settings do not fit the run (copied from another
    run, edited): info called the run resumable, and `train --resume` read the data and then
    failed with torch's "unexpected error" of several lines, or trained on with the wrong moments."""
    change, fragment = RESUME_DAMAGE[case]
    _rewrite_resume(interrupted_run, change)
    res = cli("info", interrupted_run)
    assert_one_line_error(res, 1, "cannot be used", fragment, "cannot be resumed")
    line = assert_one_line_error(
        cli("train", "--resume", interrupted_run), 1, fragment, "train it again without --resume"
    )
    assert "unexpected error" not in line


def test_a_resume_state_torch_cannot_load_is_one_line_naming_the_file(cli, interrupted_run):
    """What the checks of the resume file cannot see, torch's scheduler refuses when it loads it:
    one line naming the file, not an unexpected error."""
    _rewrite_resume(interrupted_run, lambda t, s: s["scheduler"].update(mode="evil"))
    line = assert_one_line_error(
        cli("train", "--resume", interrupted_run), 1, "resume.safetensors cannot be loaded", "mode evil"
    )
    assert "unexpected error" not in line


def test_info_writes_the_control_characters_of_a_run_json_as_escapes(cli, run_copy):
    """A run.json from elsewhere whose free text (a skipped ticker's reason, the device, a
    version) holds escape sequences: info printed them raw, to clear the screen, retitle the
    terminal or show a link to anywhere."""
    meta = run_meta(run_copy)
    meta["skipped"] = {"ZZZ": "\x1b]8;;http://example.invalid\x07click\x1b]8;;\x07"}
    meta["device"] = "\x1b[2Jcpu"
    meta["versions"]["torch"] = "\x1b]0;title\x07"
    (run_copy / "run.json").write_text(json.dumps(meta))
    res = cli("info", run_copy)
    assert res.exit_code == 0, res.stderr
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout
    assert "skipped    ZZZ: \\x1b]8;;http://example.invalid\\x07click\\x1b]8;;\\x07" in res.stdout
    assert "device \\x1b[2Jcpu" in res.stdout and "torch \\x1b]0;title\\x07" in res.stdout


def test_info_mentions_evaluation_when_present(cli, run_copy):
    assert "evaluation" not in cli("info", run_copy).stdout
    (run_copy / "eval").mkdir()
    (run_copy / "eval" / "metrics.csv").write_text("ticker,model\n")
    res = cli("info", run_copy)
    assert res.exit_code == 0
    assert str(run_copy / "eval" / "metrics.csv") in res.stdout
    assert "(made by an older evaluate, without step, n, skill" in res.stdout  # not a crash


def test_info_names_an_evaluation_with_a_word_for_a_figure_as_unreadable(cli, run_copy):
    """A metrics.csv edited by hand, a word where the pooled skill was: info ended with an
    unexpected error (TypeError, exit 1) before the versions, where any other unreadable
    figure is a line saying so."""
    model = run_meta(run_copy)["config"]["model"]["cell"]
    (run_copy / "eval").mkdir()
    (run_copy / "eval" / "metrics.csv").write_text(
        f"ticker,model,step,n,skill,coverage,best_vol,pinball_ratio\nALL,{model},1,240,high,0.8,garch,1.01\n"
    )
    res = cli("info", run_copy)
    assert res.exit_code == 0, res.stderr
    assert "(unreadable: TypeError: " in res.stdout, res.stdout
    assert "versions   forecaster" in res.stdout


def test_info_shows_the_evaluations_pooled_figures_step_by_step(cli, run_copy):
    """SPEC: info shows the run's metrics; it named the evaluation's file, none of its figures."""
    import pandas as pd

    assert cli("evaluate", "--run", run_copy, "-q", "--no-plot").exit_code == 0
    m = pd.read_csv(run_copy / "eval" / "metrics.csv")
    model = run_meta(run_copy)["config"]["model"]["cell"]
    pooled = m[(m["ticker"] == "ALL") & (m["model"] == model)].sort_values("step")
    out = cli("info", run_copy).stdout
    shown = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("step ")]
    assert len(shown) == len(pooled) > 0, out
    for line, r in zip(shown, pooled.itertuples(), strict=True):
        assert line.startswith(f"step {r.step}: MAE / naive {1 - r.skill:.4f}, "), line
        assert f"({r.best_vol}) {r.pinball_ratio:.4f}, 80 % coverage {r.coverage:.1%}, n {r.n}" in line, line


def test_info_says_when_the_evaluation_is_cut_short_or_covers_some_tickers_only(cli, run_copy):
    """A metrics.csv cut inside a row showed that row's step with blank figures; one cut before
    the pooled rows showed the heading alone; an evaluation of one ticker of two looked like
    the whole run's."""
    metrics = run_copy / "eval" / "metrics.csv"
    assert cli("evaluate", "--run", run_copy, "-q", "--no-plot", "STOCKA").exit_code == 0
    out = cli("info", run_copy).stdout
    assert "over 1 of the run's 2 tickers (STOCKA)" in out, out
    assert cli("evaluate", "--run", run_copy, "-q", "--no-plot").exit_code == 0
    whole = metrics.read_text()
    assert "tickers (" not in cli("info", run_copy).stdout
    metrics.write_text(whole[: whole.rindex("ALL,") + 10])  # inside the last pooled row
    out = cli("info", run_copy).stdout
    assert "(cut short: its last line is incomplete; run evaluate again to see its figures)" in out, out
    assert "step " not in out
    lines = whole.splitlines(keepends=True)
    metrics.write_text("".join(ln for ln in lines if not ln.startswith("ALL,")))
    model = run_meta(run_copy)["config"]["model"]["cell"]
    out = cli("info", run_copy).stdout
    assert f"(no pooled figures of the {model} model in it: run evaluate again to see them)" in out, out
    metrics.write_text("")
    assert "(empty: run evaluate again to see its figures)" in cli("info", run_copy).stdout
    # a baseline that held every actual (a price that never moved): no ratio, and info says why
    flat = pd.read_csv(io.StringIO(whole))
    flat.loc[flat["ticker"] == "ALL", "pinball_ratio"] = float("nan")
    flat.to_csv(metrics, index=False)
    shown = [ln for ln in cli("info", run_copy).stdout.splitlines() if ln.strip().startswith("step 1:")]
    assert shown and "baseline (" in shown[0] and ") none (its loss is 0), 80 % coverage" in shown[0], shown


def test_info_shows_skipped_tickers(cli, run_copy, tmp_path):
    meta = run_meta(run_copy)
    meta["skipped"] = {"NEWCO": "40 training sessions, need at least 24"}
    (run_copy / "run.json").write_text(json.dumps(meta))
    res = cli("info", run_copy)
    assert res.exit_code == 0, res.stderr
    assert "NEWCO" in res.stdout
    # asked for by name, it is refused with the reason it was skipped, not as a ticker never seen
    res = cli("predict", "--run", run_copy, "-t", "NEWCO", "--offline", "--out", tmp_path / "fc")
    assert_one_line_error(
        res, 1, "the run was not trained on NEWCO (NEWCO was skipped at training: 40 training sessions, need at least"
    )


def test_info_does_not_change_the_run(cli, run_copy):
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    assert cli("info", run_copy).exit_code == 0
    assert cli("info", run_copy, "--json").exit_code == 0
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before


# ---------------------------------------------------------------------------- exit 1


def test_info_missing_run_dir(cli, tmp_path):
    res = cli("info", tmp_path / "gone")
    assert res.exit_code == 1
    assert "gone" in res.stderr
    assert res.stdout == ""


def test_info_on_a_run_whose_run_json_is_a_folder_names_the_file(cli, run_copy):
    """run.json made a folder (a mistaken ``mkdir``, a copy gone wrong): the error named a file
    descriptor, "ERROR: 3: Is a directory", not the file."""
    (run_copy / "run.json").unlink()
    (run_copy / "run.json").mkdir()
    line = assert_one_line_error(cli("info", run_copy), 1)
    assert line == f"ERROR: {run_copy / 'run.json'}: Is a directory"


def test_info_on_a_run_being_trained_says_so(cli, tmp_path):
    """While train writes runs/inprog (its lock held), info said only "no run directory"."""
    lock = tmp_path / ".inprog.lock"
    holder = hold_lock(lock, 60)
    try:
        res = cli("info", tmp_path / "inprog")
    finally:
        stop(holder)
    assert_one_line_error(
        res, 1, f"no run directory at {tmp_path / 'inprog'} yet: a training is writing it (pid {holder.pid} on "
    )
    # a holder killed before it could clean up (its file left, its pid gone) says nothing of a training
    assert (tmp_path / ".inprog.lock.holder").exists()
    line = assert_one_line_error(cli("info", tmp_path / "inprog"), 1, f"no run directory at {tmp_path / 'inprog'}")
    assert "training" not in line


def test_info_on_the_empty_folder_of_a_run_being_trained_says_so_not_that_it_holds_no_runs(cli, tmp_path):
    """`train --run-dir runs/new` into an empty folder it made or was given holds the run's lock
    before its first save: the folder is the run to be, not a folder of runs holding none."""
    (tmp_path / "new").mkdir()
    holder = hold_lock(tmp_path / ".new.lock", 60)
    try:
        res = cli("info", tmp_path / "new")
    finally:
        stop(holder)
    line = assert_one_line_error(
        res, 1, f"{tmp_path / 'new'} is not a run: not yet, a training is writing it (pid {holder.pid} on "
    )
    assert "folder of runs" not in line, line


_RUNS_IN = (
    "import sys; from pathlib import Path; from forecaster.cli import _runs_in; print(_runs_in(Path(sys.argv[1])))"
)


def test_info_on_a_folder_that_cannot_be_entered_is_one_line(tmp_path):
    """A folder whose names can be read but that cannot be entered (mode r--): whether it is a
    folder of runs cannot be told, so it is read as a run, whose reading says why in one line,
    exit 1."""
    shut = tmp_path / "shut"
    shut.mkdir()
    (shut / "run.json").write_text("{}")
    as_user = UNPRIVILEGED_ROOT if os.geteuid() == 0 else []  # root, without the capability to enter any folder

    def run(*args):
        return subprocess.run(
            [*as_user, sys.executable, *args], capture_output=True, text=True, env=python_env(NO_COLOR="1"), timeout=60
        )

    shut.chmod(0o444)
    try:
        told, listed = run("-m", "forecaster", "info", str(shut)), run("-c", _RUNS_IN, str(shut))
    finally:
        shut.chmod(0o755)
    assert told.returncode == 1, told.stderr
    assert told.stderr.splitlines() == [f"ERROR: {shut / 'run.json'}: Permission denied"]
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "None\n", "")  # not listed as a folder of runs


def test_info_not_a_run(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli("info", tmp_path / "empty")
    assert res.exit_code == 1
    assert "run.json" in res.stderr


def test_info_damaged_run_json(cli, run_copy):
    (run_copy / "run.json").write_text("{ truncated")
    res = cli("info", run_copy)
    assert res.exit_code == 1
    assert "not valid JSON" in res.stderr
    assert "Traceback" not in res.stderr


def _without_weights(run):
    (run / "model.safetensors").unlink()


def _weights_a_folder(run):
    (run / "model.safetensors").unlink()
    (run / "model.safetensors").mkdir()


def _truncated_weights(run):
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def _weights_of_another_size(run):
    meta = run_meta(run)
    meta["config"]["model"]["hidden_size"] += 1
    (run / "run.json").write_text(json.dumps(meta))


def _a_weight_not_a_number(run):
    from safetensors.numpy import load_file, save_file

    state = load_file(str(run / "model.safetensors"))
    name = sorted(state)[0]
    state[name] = state[name] * np.nan
    save_file(state, str(run / "model.safetensors"))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_without_weights, "model.safetensors is missing"),
        (_weights_a_folder, "its model.safetensors is a folder, not a weights file"),
        (_a_weight_not_a_number, "holds weights that are not finite numbers"),
        (_truncated_weights, "is not a readable safetensors file"),
        (_weights_of_another_size, "does not match the run's config"),
    ],
)
def test_info_on_a_run_predict_refuses_says_it_cannot_be_used_and_why(cli, run_copy, tmp_path, damage, why):
    damage(run_copy)
    refused = cli("predict", "--run", run_copy, "--out", tmp_path / "fc")
    assert refused.exit_code == 1 and why in refused.stderr
    res = cli("info", run_copy)
    assert_one_line_error(res, 1, "cannot be used", why)
    [status] = [ln for ln in res.stdout.splitlines() if ln.startswith("status")]
    assert "cannot be used" in status and why in status
    assert "ticker     STOCKA" in res.stdout and "versions" in res.stdout  # all run.json still tells
    res = cli("info", run_copy, "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert why in doc.pop("unusable") and doc == run_meta(run_copy)


def test_info_from_cron_leaves_why_a_run_cannot_be_used_in_the_log_file(cli, run_copy, tmp_path):
    """`info --log-file` (a cron job checking the champion before it forecasts): the error line
    goes to the log, with a timestamp, as well as to stderr; a usable run leaves no error there."""
    log = tmp_path / "logs" / "info.log"
    ok = cli("info", run_copy, "--log-file", log)
    assert ok.exit_code == 0 and "ERROR" not in (log.read_text() if log.exists() else "")
    _without_weights(run_copy)
    res = cli("info", run_copy, "--log-file", log)
    assert_one_line_error(res, 1, "cannot be used", "model.safetensors is missing")
    [line] = [ln for ln in log.read_text().splitlines() if "ERROR" in ln]
    assert "model.safetensors is missing" in line and re.match(r"\d{4}-\d\d-\d\d", line)
    res = cli("info", run_copy, "--json", "--log-file", tmp_path)  # a folder: refused before anything is shown
    assert res.exit_code == 2 and "--log-file" in res.stderr


def _set(path: str, value):
    def damage(meta):
        *keys, last = path.split(".")
        node = meta
        for k in keys:
            node = node[k]
        node[last] = value(node[last]) if callable(value) else value

    return damage


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_set("tickers.STOCKA.scaler.std", lambda v: [0.0] * len(v)), "STOCKA's scaler holds a value that is not a"),
        (_set("tickers.STOCKA.scaler.mean", [1.0]), "STOCKA's scaler has 1 means and"),
        (_set("tickers.STOCKB.conformal_online", lambda v: [float("nan")] * len(v)), "STOCKB.conformal_online holds"),
        (_set("tickers.STOCKB.conformal", lambda v: [-1.0] * len(v)), "STOCKB.conformal holds a scale that is not"),
        (_set("median_weight", [1.0]), "median_weight is not 3 weights from 0 to 1"),
        (_set("tickers.STOCKA.conformal_pending", lambda v: [v[0], [0.0] * 3]), "STOCKA.conformal_pending holds"),
        (_set("tickers.STOCKA.conformal_pending", lambda v: [v[0][:2]]), "STOCKA.conformal_pending has 2 steps"),
        (_set("tickers.STOCKA.conformal_pending", lambda v: [v[0]] * 3), "pending has 3 origins, not at most 2"),
        (_set("tickers.STOCKA.conformal_pending", None), "STOCKA.conformal_pending is missing"),
    ],
)
def test_a_run_json_whose_numbers_cannot_make_a_forecast_is_refused_saying_which(cli, run_copy, tmp_path, damage, why):
    """Each of these made predict write empty or collapsed quantiles with exit 0 (or an
    unexpected error), and info call the run usable."""
    meta = run_meta(run_copy)
    damage(meta)
    (run_copy / "run.json").write_text(json.dumps(meta))
    for args in (("predict", "--run", run_copy, "--out", tmp_path / "fc", "--offline"), ("info", run_copy)):
        assert_one_line_error(cli(*args), 1, "is malformed", why)
    assert not (tmp_path / "fc").exists()


def test_a_forecast_that_is_not_a_finite_number_fails_its_ticker_and_is_not_written(run_copy, tmp_path, monkeypatch):
    from forecaster import prediction

    real = prediction.calibrated

    def broken(*args):
        lo, med, hi = (x.copy() for x in real(*args))
        hi[0, -1] = np.inf  # the first ticker's last step
        return lo, med, hi

    monkeypatch.setattr(prediction, "calibrated", broken)
    report = prediction.predict(run_copy, out=tmp_path / "fc", offline=True, jobs=1)
    assert report.exit_code == 3 and list(report.failed) == ["STOCKA"]
    assert "not a finite positive price" in report.failed["STOCKA"]
    written = pd.read_csv(tmp_path / "fc" / run_meta(run_copy)["name"] / "latest.csv")
    assert set(written["ticker"]) == {"STOCKB"} and written[["p10", "p50", "p90"]].notna().all().all()


def test_a_bad_setting_in_run_json_is_said_in_the_configs_own_words(cli, run_copy):
    """A setting of the wrong kind in run.json: the same words as in a config file, not
    pydantic's "Value error, " before them."""
    meta = run_meta(run_copy)
    meta["config"]["window"]["lookback"] = 20.5
    (run_copy / "run.json").write_text(json.dumps(meta))
    res = cli("info", run_copy)
    line = assert_one_line_error(res, 1, "run.json is malformed: config.window.lookback: expected a whole number")
    assert "Value error" not in line


@pytest.mark.parametrize("json_out", [False, True])
def test_a_ticker_without_validation_missing_its_dates_in_run_json_is_said_alike_in_text_and_json(
    cli, run_copy, json_out
):
    """A hand-edited no_validation entry without its dates: text `info` failed with a bare
    KeyError where `--json` and `evaluate` took it; now the run is malformed for all of them."""
    meta = run_meta(run_copy)
    meta["no_validation"] = {"STOCKB": {"last_date": "2024-01-02"}}
    (run_copy / "run.json").write_text(json.dumps(meta))
    res = cli("info", run_copy, *(["--json"] if json_out else []))
    assert res.exit_code == 1
    want = "run.json is malformed: no_validation.STOCKB.split_start"
    if json_out:
        assert want in json.loads(res.stdout)["error"]
    else:
        assert_one_line_error(res, 1, want)


def test_a_loop_of_links_is_named_as_one(cli, tmp_path):
    """Two names pointing at each other: it said the name pointed at itself, "which does not
    exist (deleted?)"."""
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    res = cli("info", tmp_path / "a")
    assert_one_line_error(res, 1, f"{tmp_path / 'a'} is a symbolic link that leads into a loop of links")


def test_info_newer_format_version(cli, run_copy):
    meta = run_meta(run_copy)
    meta["format_version"] = 4
    (run_copy / "run.json").write_text(json.dumps(meta))
    res = cli("info", run_copy)
    assert res.exit_code == 1
    assert "newer" in res.stderr


# ---------------------------------------------------------------------------- exit 2


@pytest.mark.parametrize("args", [[], ["--bogus"]])
def test_info_usage_errors(cli, trained_run, args):
    full = ["info", *args] + ([str(trained_run)] if args else [])
    res = cli(*full)
    assert res.exit_code == 2
    assert "Error" in res.stderr
    assert res.stdout == ""


def test_info_on_a_file_is_a_usage_error(cli, trained_run):
    res = cli("info", trained_run / "run.json")
    assert res.exit_code == 2


def test_info_shows_window_counts_and_metrics_readably_and_json_keeps_them_whole(cli, trained_run):
    meta = run_meta(trained_run)
    res = cli("info", trained_run)
    assert res.exit_code == 0, res.stderr
    [splits] = [ln for ln in res.stdout.splitlines() if ln.startswith("splits")]
    w = meta["windows"]
    assert splits.endswith(f"; windows train {w['train']}, val {w['val']}, test {w['test']}"), splits
    [metrics] = [ln for ln in res.stdout.splitlines() if ln.startswith("metrics")]
    loss = meta["metrics"]["best_val_loss"]
    assert f"best_val_loss {loss:.4g}," in metrics and repr(loss) not in metrics, metrics
    assert f"best_epoch {meta['metrics']['best_epoch']}," in metrics, metrics
    assert "{" not in res.stdout and "'" not in res.stdout
    doc = json.loads(cli("info", trained_run, "--json").stdout)
    assert doc["windows"] == w and doc["metrics"]["best_val_loss"] == loss


def test_info_json_is_strict_json_when_run_json_holds_a_nan(cli, run_copy):
    meta = json.loads((run_copy / "run.json").read_text())
    meta["metrics"]["best_val_loss"] = float("nan")  # Python's json writes it as NaN
    meta["metrics"]["train_seconds"] = float("inf")
    (run_copy / "run.json").write_text(json.dumps(meta))
    res = cli("info", run_copy, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert doc["metrics"]["best_val_loss"] is None
    assert doc["metrics"]["train_seconds"] is None
    assert doc["metrics"]["best_epoch"] == meta["metrics"]["best_epoch"]  # the rest as it was


def test_a_moved_run_says_its_forecasts_keep_the_name_it_was_trained_as(cli, trained_run, run_copy, tmp_path):
    name = run_meta(trained_run)["name"]
    assert "moved" not in cli("info", trained_run).stdout
    moved = run_copy.rename(tmp_path / "elsewhere")
    res = cli("info", moved)
    assert res.exit_code == 0, res.stderr
    assert f"trained as {name}: its forecasts go to forecasts/{name}" in res.stdout
    res = cli("predict", "--run", moved, "--offline", "--out", tmp_path / "fc", "-q")
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "fc" / name / "latest.csv").is_file() and not (tmp_path / "fc" / "elsewhere").exists()


def test_info_names_the_device_used_and_a_bf16_that_ran_in_fp32(cli, run_copy):
    doc = json.loads((run_copy / "run.json").read_text())
    doc["config"]["train"].update(device="auto", precision="bf16")
    doc["device"] = "cpu"
    (run_copy / "run.json").write_text(json.dumps(doc))
    res = cli("info", run_copy)
    assert res.exit_code == 0, res.stderr
    assert "device cpu (--device auto), fp32 (bf16 asked: CUDA only)" in res.stdout


def _table_rows(text: str) -> dict[str, list[str]]:
    """The body rows of the ASCII table on ``text`` (stdout not a terminal), by their first cell."""
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in text.splitlines() if ln.startswith("|")]
    return {cells[0]: cells for cells in rows[1:]}


@pytest.fixture
def runs_folder(trained_run, interrupted_run, tmp_path):
    """A folder of runs as it is after a while: a promoted champion that was evaluated, a run
    stopped mid-training, a training killed before its first save (its folder empty, its lock
    left), a damaged run.json, a promoted name whose run was deleted, and a study's folder."""
    import shutil

    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(trained_run, runs / "champ")
    (runs / "champ" / "eval").mkdir(exist_ok=True)
    (runs / "champ" / "eval" / "metrics.csv").write_text("ticker,model,step\n")
    (runs / "prod").symlink_to("champ")
    shutil.copytree(trained_run, runs / "plain")
    shutil.rmtree(runs / "plain" / "eval", ignore_errors=True)
    shutil.copytree(interrupted_run, runs / "stopped")
    (runs / "killed").mkdir()
    (runs / ".killed.lock").touch()
    shutil.copytree(trained_run, runs / "broken")
    (runs / "broken" / "run.json").write_text("{ truncated")
    (runs / "old").symlink_to("old-20260101-000000")
    (runs / "tune" / "default").mkdir(parents=True)
    (runs / "tune" / "default.db").write_bytes(b"")
    (runs / "docs").symlink_to(runs / "tune")  # a link to a folder that is no run
    shutil.copytree(trained_run, runs / "noweights")
    (runs / "noweights" / "model.safetensors").unlink()
    shutil.copytree(trained_run, runs / "jsondir")
    (runs / "jsondir" / "run.json").unlink()
    (runs / "jsondir" / "run.json").mkdir()
    (runs / "loop").symlink_to("loop2")
    (runs / "loop2").symlink_to("loop")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(trained_run, elsewhere / "ext")
    (runs / "ext").symlink_to(elsewhere / "ext")
    shutil.copytree(trained_run, runs / "[red]alert")  # a name, not markup
    return runs


def test_info_of_a_folder_of_runs_lists_each_with_its_status_and_names(cli, runs_folder):
    """`info runs/` said "run.json is missing"; it lists the runs: what each is, whether it can
    be used, which names point at it, and a line for each that needs a word."""
    res = cli("info", runs_folder)
    assert res.exit_code == 0, res.stderr
    rows = _table_rows(res.stdout)
    epochs = run_meta(runs_folder / "stopped")["metrics"]["epochs_run"]
    assert {run: cells[1] for run, cells in rows.items()} == {  # not tune/, nor a link to it or to a run listed
        "[red]alert": "complete",
        "broken": "unreadable",
        "champ": "complete",
        "ext": "complete",  # a run linked in from elsewhere, under its link's name
        "jsondir": "unreadable",
        "killed": "empty",
        "loop": "link",
        "loop2": "link",
        "noweights": "unusable",
        "old": "link",
        "plain": "complete",
        "stopped": f"interrupted (epoch {epochs})",
    }
    assert rows["ext"][8] == "ext" and rows["noweights"][6] == rows["champ"][6]
    meta = run_meta(runs_folder / "champ")
    champ = rows["champ"]
    assert champ[3] == f"{meta['config']['model']['cell']}, hidden {meta['config']['model']['hidden_size']}x1"
    assert champ[5] == str(len(meta["tickers"])) and champ[6] == f"{meta['metrics']['best_val_loss']:.5f}"
    assert (champ[7], champ[8]) == ("yes", "prod")
    assert (rows["plain"][7], rows["plain"][8]) == ("", "")
    lines = [ln for ln in res.stdout.splitlines() if not ln.startswith(("|", "+")) and ":" in ln]
    said = dict(ln.split(": ", 1) for ln in lines)
    assert said["stopped"] == f"resume with `forecaster train --resume {runs_folder / 'stopped'}`"
    assert "as a training stopped before its first save leaves it" in said["killed"]
    assert "not valid JSON" in said["broken"]
    assert said["old"] == f"points at {runs_folder / 'old-20260101-000000'}, which is not there"
    assert said["loop"] == said["loop2"] == "leads into a loop of links"
    assert said["jsondir"].startswith(f"cannot read {runs_folder / 'jsondir' / 'run.json'}: ")
    assert "model.safetensors" in said["noweights"]  # what `info` of that run, and predict, say of it
    assert said["noweights"] in cli("info", runs_folder / "noweights").stdout
    assert not {"champ", "plain", "ext", "[red]alert"} & set(said)


def test_info_of_a_folder_whose_path_is_wider_than_its_table_names_it_on_one_line(cli, trained_run, tmp_path):
    """The table's title was wrapped at the table's width: the path of a deep folder was broken
    across lines ("...-team-s-ru" / "ns-/runs"), in a cron log too, where it could not be pasted."""
    import shutil

    runs = tmp_path / ("the-forecasting-team-s-runs-" * 6) / "runs"
    shutil.copytree(trained_run, runs / "r")
    res = cli("info", runs)
    assert res.exit_code == 0, res.stderr
    assert f"runs in {runs}" in [line.strip() for line in res.stdout.splitlines()], res.stdout
    assert _table_rows(res.stdout)["r"][1] == "complete"


def test_info_of_a_folder_lists_a_run_json_that_json_cannot_read_as_unreadable(cli, trained_run, tmp_path):
    """A run.json nested deeper than Python's recursion limit, or holding a number of more digits
    than Python reads, was an "unexpected error" that ended the whole listing."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "good")
    for name, text in (("deep", "[" * 100_000 + "]" * 100_000), ("long", '{"format_version": ' + "9" * 5000 + "}")):
        (runs / name).mkdir()
        (runs / name / "run.json").write_text(text)
    res = cli("info", runs, "--json")
    assert res.exit_code == 0, res.stderr
    rows = {r["run"]: r for r in json.loads(res.stdout)["runs"]}
    statuses = {run: r["status"] for run, r in rows.items()}
    assert statuses == {"good": "complete", "deep": "unreadable", "long": "unreadable"}
    assert rows["deep"]["detail"].endswith("is not valid JSON (nested too deeply)")
    assert rows["long"]["detail"].endswith("is not valid JSON (a number with too many digits)")


def test_info_json_of_a_folder_of_runs_gives_every_row_the_same_keys(cli, runs_folder):
    res = cli("info", runs_folder, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["folder"] == str(runs_folder)
    runs = {r["run"]: r for r in doc["runs"]}
    assert len({tuple(sorted(r)) for r in doc["runs"]}) == 1
    meta = run_meta(runs_folder / "champ")
    assert runs["champ"] | {"model": None} == {
        "run": "champ",
        "path": str(runs_folder / "champ"),
        "status": "complete",
        "names": ["prod"],
        "detail": None,
        "created_at": meta["created_at"],
        "model": None,
        "tickers": sorted(meta["tickers"], key=lambda s: meta["tickers"][s]["id"]),
        "best_epoch": meta["metrics"]["best_epoch"],
        "epochs_run": meta["metrics"]["epochs_run"],
        "best_val_loss": meta["metrics"]["best_val_loss"],
        "evaluated": True,
    }
    assert runs["champ"]["model"]["lookback"] == meta["config"]["window"]["lookback"]
    assert runs["stopped"]["status"] == "interrupted" and runs["killed"]["status"] == "empty"
    assert runs["broken"]["best_val_loss"] is None and "not valid JSON" in runs["broken"]["detail"]
    assert runs["old"]["names"] == ["old"] and runs["plain"]["evaluated"] is False


def test_info_of_a_folder_of_runs_names_the_trainings_going_on(cli, runs_folder):
    """A run whose training holds its lock is being trained: with a checkpoint (an interrupted
    run.json), before its first one (an empty folder), or before it made its folder at all
    (`train --run-dir` and retrain make it at their first save); the line names the process."""
    runs = ("stopped", "killed", "fresh")
    holders = [hold_lock(runs_folder / f".{run}.lock", 60) for run in runs]
    try:
        res = cli("info", runs_folder)
    finally:
        for holder in holders:
            stop(holder)
    assert res.exit_code == 0, res.stderr
    rows = _table_rows(res.stdout)
    assert rows["stopped"][1].startswith("being trained (epoch ")
    assert rows["killed"][1] == rows["fresh"][1] == "being trained"
    for run, holder in zip(runs, holders, strict=True):
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith(f"{run}: "))
        assert f"pid {holder.pid} on " in line, line


_PAUSED_PROMOTE = """
import sys
from forecaster import registry
from forecaster.cli import app

def paused(*args, **kwargs):  # the name's lock is held: wait for a line before the link is made
    print("holding", flush=True)
    sys.stdin.readline()
    return switch(*args, **kwargs)

switch, registry.switch = registry.switch, paused
sys.argv = ["forecaster", "promote", *sys.argv[1:]]
app()
"""


def test_info_does_not_take_the_first_promote_of_a_name_for_a_training(cli, runs_folder):
    """The first promote of a name holds the name's lock, runs/.NAME.lock, before its link is
    made: the file a training of a run runs/NAME locks. info listed the name as a run "being
    trained" by the promote ("no folder yet"), and info of the name said a training was writing
    it. The folder is listed as it was before the switch; info of the name says it is being
    promoted, by whom."""
    before = cli("info", runs_folder)
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_PROMOTE, runs_folder / "plain", "--name", "staging", "--runs-dir", runs_folder],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=python_env(),
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "holding"
        assert (runs_folder / ".staging.lock.holder").exists() and not (runs_folder / "staging").is_symlink()
        listed, listed_json = cli("info", runs_folder), cli("info", runs_folder, "--json")
        named = cli("info", runs_folder / "staging")
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    assert listed.exit_code == 0, listed.stderr
    assert listed.stdout == before.stdout  # no row, nor line, for the name
    assert "staging" not in {r["run"] for r in json.loads(listed_json.stdout)["runs"]}
    assert named.exit_code == 1
    assert f"no run directory at {runs_folder / 'staging'} yet: it is being promoted (pid {proc.pid} on " in (
        named.stderr
    ), named.stderr
    assert "training" not in named.stderr
    after = cli("info", runs_folder)
    assert _table_rows(after.stdout)["plain"][8] == "staging" and "staging" not in _table_rows(after.stdout)


def test_info_lists_a_folder_of_runs_reached_through_a_link(cli, runs_folder, tmp_path):
    """runs/ kept on another disk and linked in (`runs -> /data/runs`); a promoted name still
    shows its run."""
    (tmp_path / "link").symlink_to(runs_folder)
    for given in (tmp_path / "link", f"{tmp_path / 'link'}/"):
        res = cli("info", given)
        assert res.exit_code == 0, res.stderr
        assert _table_rows(res.stdout)["champ"][8] == "prod"
    res = cli("info", tmp_path / "link" / "prod")
    assert res.exit_code == 0 and res.stdout.startswith(f"pointer    {tmp_path / 'link' / 'prod'} -> "), res.stdout


def test_info_of_a_folder_of_runs_that_cannot_be_read_says_so(runs_folder):
    """A run folder no one may read is a row saying why; the rest are listed as before."""
    from forecaster.registry import list_runs

    (runs_folder / "plain").chmod(0)
    try:
        script = (
            "import sys; from forecaster.registry import list_runs\n"
            "for r in list_runs(sys.argv[1]): print(r.run, r.status, r.detail, sep='|')"
        )
        done = run_python_minding_file_modes(script, runs_folder)
    finally:
        (runs_folder / "plain").chmod(0o755)
    assert done.returncode == 0, done.stderr
    said = {run: (status, detail) for run, status, detail in (ln.split("|") for ln in done.stdout.splitlines())}
    assert said["plain"][0] == "unreadable" and "Permission denied" in said["plain"][1], said["plain"]
    assert {r.run for r in list_runs(runs_folder)} == set(said)


@pytest.mark.parametrize("holds", ["nothing", "a study", "links only"])
def test_info_of_a_folder_holding_no_run_says_it_is_not_one(cli, tmp_path, holds):
    """A new empty runs/, a study's folder, or a folder of links to anything but runs (a
    project's root) is not taken for a folder of runs, and the line says what it is not."""
    runs = tmp_path / "runs"
    runs.mkdir()
    if holds == "a study":
        (runs / "tune" / "default").mkdir(parents=True)
    elif holds == "links only":
        (tmp_path / "docs").mkdir()
        (runs / "docs").symlink_to(tmp_path / "docs")
        (runs / "gone").symlink_to(tmp_path / "gone")
    assert_one_line_error(cli("info", runs), 1, f"{runs} is not a run, nor a folder of runs: ")


def test_a_run_named_with_control_characters_keeps_to_its_own_row(cli, trained_run, tmp_path):
    """A folder's name may hold a newline or an escape sequence: listed as it is, the newline
    split the run's row in two and the escape reached the terminal. Both are shown escaped."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "two\nlines")
    shutil.copytree(trained_run, runs / "red\x1b[31m")
    shutil.copytree(trained_run, runs / "bad\tjson")
    (runs / "bad\tjson" / "run.json").write_text("{")  # listed with a line that says why
    res = cli("info", runs)
    assert res.exit_code == 0, res.stderr
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", res.stdout)  # only the lines' own newlines
    rows = _table_rows(res.stdout)
    assert {run: cells[1] for run, cells in rows.items()} == {
        r"two\nlines": "complete",
        r"red\x1b[31m": "complete",
        r"bad\tjson": "unreadable",
    }
    assert any(ln.startswith(r"bad\tjson: ") for ln in res.stdout.splitlines())


def test_an_error_naming_a_path_with_a_newline_or_an_escape_is_one_line(cli, tmp_path):
    """`info` of a folder named with a newline and an ESC (a name pasted from elsewhere, a
    script's variable): its error line was two lines on stderr and in the log file, the second
    not marked ERROR (cron's grep missed it), and ESC[31m turned the terminal red."""
    log = tmp_path / "cron.log"
    res = cli("info", tmp_path / "no\nsuch\x1b[31m", "--log-file", log)
    assert res.exit_code == 1
    assert res.stderr == f"ERROR: no run directory at {tmp_path}/no\\nsuch\\x1b[31m\n", res.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"ERROR no run directory at {tmp_path}/no\\nsuch\\x1b[31m"), lines


def test_a_path_the_file_name_encoding_lacks_is_one_line_saying_so(cli, run_copy, monkeypatch):
    """Under a locale that is not UTF-8 (LC_ALL=fr_FR.ISO-8859-1), a run whose data folder was
    recorded as `données 予測` cannot be opened: that was an 'unexpected error:
    UnicodeEncodeError' pointing at a bug, where the path and the locale are what to change."""
    import forecaster.cli

    def unencodable(path):
        raise UnicodeEncodeError("latin-1", "/srv/données 予測", 13, 15, "ordinal not in range(256)")

    monkeypatch.setattr(forecaster.cli.sys, "getfilesystemencoding", lambda: "latin-1")
    monkeypatch.setattr("forecaster.checkpoint.read_manifest", unencodable)
    res = cli("info", run_copy)
    line = assert_one_line_error(res, 1, "/srv/données 予測", "latin-1", "UTF-8")
    assert "unexpected error" not in line


def test_a_log_file_under_a_locale_that_is_not_utf8_takes_any_name(tmp_path):
    """--log-file was written in the locale's encoding: under cron's LC_ALL=C with UTF-8 mode
    off (PYTHONUTF8=0), a line naming `prévisions 予測` printed '--- Logging error ---' and a
    traceback on stderr, and the log file lost the line. It is UTF-8, whatever the locale."""
    from support import cli_env, start_forecaster

    log = tmp_path / "cron.log"
    proc = start_forecaster(
        "info", tmp_path / "prévisions 予測", "--log-file", log, env=cli_env(LC_ALL="C", PYTHONUTF8="0")
    )
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Logging error" not in stderr and "Traceback" not in stderr, stderr
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and f"ERROR no run directory at {tmp_path}/pr" in lines[0], lines


@pytest.mark.parametrize(
    "args",
    [
        ["info", "RUN"],
        ["predict", "--run", "RUN", "--offline"],
        ["evaluate", "--run", "RUN"],
        ["promote", "RUN", "--name", "p"],
    ],
)
def test_a_run_folder_that_cannot_be_read_is_one_error_line_exit_1(trained_run, tmp_path, args):
    """A run folder this user may not read (mode 000) is the command's error, exit 1 as the
    README's table has it for an unreadable run, naming the file and why: the parser refused it
    as a usage error (exit 2, "is not readable")."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    run.chmod(0o000)
    try:
        res = run_forecaster_minding_file_modes(*[a if a != "RUN" else "run" for a in args], cwd=tmp_path)
    finally:
        run.chmod(0o755)
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == ["ERROR: run/run.json: Permission denied"], res.stderr
