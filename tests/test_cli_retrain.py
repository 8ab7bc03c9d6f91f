"""`forecaster retrain NAME`: a challenger trained with the champion's config replaces it only
when it is not worse on the same, most recent test sessions (SPEC §10)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from run_variants import shifted_run
from support import (
    SLOW_TEST_TIMEOUT_S,
    assert_one_line_error,
    drop_a_stop_signal,
    run_forecaster_minding_file_modes,
    run_script,
    tiny_overrides,
)

import forecaster.retraining as retraining
from forecaster import registry
from forecaster.checkpoint import load_run
from forecaster.config import load_config
from forecaster.errors import EXIT_TEMPFAIL
from forecaster.fsio import file_lock
from forecaster.prediction import predict
from forecaster.store import load_bars
from forecaster.training import train

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def runs(small_run, tmp_path) -> Path:
    """runs/prod -> runs/first, a private copy of the champion."""
    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copytree(small_run, folder / "first")
    registry.promote(folder / "first", "prod", runs_dir=folder)
    return folder


def _target(runs: Path) -> str:
    return os.readlink(runs / "prod")


def test_retrain_promotes_a_challenger_that_is_not_worse(cli, runs):
    # the same config, seed and data give the same model: a tie, which the newer run wins
    res = cli("retrain", "prod", "--runs-dir", runs, "--patience", "7", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["promoted"] is True and doc["champion"] == "first"
    assert doc["challenger"].startswith("prod-") and _target(runs) == doc["challenger"]
    a, b = doc["figures"]["champion"], doc["figures"]["challenger"]
    assert a["n"] == b["n"] > 0 and b["pinball"] == pytest.approx(a["pinball"]) and b["mae"] == pytest.approx(a["mae"])
    meta = json.loads((runs / doc["challenger"] / "run.json").read_text())
    assert meta["config"]["train"]["patience"] == 7  # the flag on top of the champion's config
    assert meta["config"]["window"] == json.loads((runs / "first" / "run.json").read_text())["config"]["window"]
    info = cli("info", runs / "prod")
    assert f"-> {(runs / doc['challenger']).resolve()}" in info.stdout


def test_retrain_keeps_the_champion_when_the_challenger_is_worse(cli, runs, monkeypatch):
    real = retraining.train

    def worse(cfg, *, run_dir, **kw):  # trains, then spoils the output layer
        result = real(cfg, run_dir=run_dir, **kw)
        spoiled = shifted_run(run_dir, run_dir.with_name("spoiled"), noise=1.0)
        shutil.rmtree(run_dir)
        os.replace(spoiled, run_dir)
        return result

    monkeypatch.setattr(retraining, "train", worse)
    res = cli("retrain", "prod", "--runs-dir", runs)
    assert res.exit_code == 0, res.stderr
    assert "is not promoted, first stays" in res.stdout
    assert _target(runs) == "first"
    pointer, target = res.stdout.splitlines()[-1].split(" -> ")
    assert (pointer, Path(target).name) == (str(runs / "prod"), "first")  # where the name still points
    assert len(registry.runs_of("prod", runs)) == 1  # the challenger is kept to look at


def test_the_verdict_is_printed_once_on_stdout_with_or_without_quiet(cli, runs, tmp_path):
    """The verdict is retrain's result: on stdout once (cron mails it under --quiet), in the
    log file, never repeated on stderr."""
    res = cli("retrain", "prod", "--runs-dir", runs)
    assert res.exit_code == 0, res.stderr
    assert [ln for ln in res.stdout.splitlines() if " is promoted over first: " in ln]
    assert "promoted" not in res.stderr
    pointer, target = res.stdout.splitlines()[-1].split(" -> ")
    assert (pointer, Path(target).name) == (str(runs / "prod"), _target(runs))  # the challenger now
    log_file = tmp_path / "logs" / "retrain.log"
    res = cli("retrain", "prod", "--runs-dir", runs, "--quiet", "--log-file", log_file)
    assert res.exit_code == 0, res.stderr
    [verdict] = res.stdout.splitlines()
    assert " is promoted over prod-" in verdict and res.stderr == ""
    assert [ln for ln in log_file.read_text().splitlines() if "promoted" in ln][0].endswith(verdict)


def test_champion_is_backtested_on_the_challengers_sessions_with_data_up_to_each_origin(small_run, small_dir, tmp_path):
    champ = load_run(small_run)
    chall_dir = tmp_path / "challenger"
    train(load_config(None, tiny_overrides(small_dir, **{"window.test_days": 60, "train.seed": 1})), run_dir=chall_dir)
    chall = load_run(chall_dir)
    bars = load_bars("csv", small_dir, ["STOCKA", "STOCKB"])
    c = retraining.compare(champ, chall, bars)
    fc = c.forecasts
    # every origin's next session is in the challenger's (shorter) test split, and all of them are there
    test_start = pd.Timestamp(chall.manifest.splits.test_start)
    firsts = pd.to_datetime(fc.loc[fc["step"] == 1, "date"])
    assert firsts.min() == test_start
    sessions = sorted(set().union(*(set(b.index[b.index >= test_start]) for b in bars.values())))
    assert sorted(set(firsts)) == sessions
    assert c.champion.n == c.challenger.n == len(fc)
    # the champion's forecast at an origin is the one predict makes with the bars up to it
    origin = str(fc["origin"].iloc[len(fc) // 2])
    live = predict(small_run, as_of=origin, out=tmp_path / "fc", offline=True).forecasts
    mine = fc[fc["origin"] == origin].sort_values(["ticker", "step"])
    live = live[live["ticker"].isin(mine["ticker"])].sort_values(["ticker", "step"])
    np.testing.assert_allclose(mine["p50_a"], live["p50"], rtol=1e-9)
    # a worse challenger is refused, with the figures saying why
    bad = retraining.compare(champ, load_run(shifted_run(chall_dir, tmp_path / "bad", noise=1.0)), bars)
    assert not bad.promote and bad.challenger.pinball > bad.champion.pinball and bad.dm_pvalue < 0.05


def test_the_champions_intervals_are_those_it_issued_live(small_dir, tmp_path):
    """A champion trained 40 sessions ago: its scale was started afresh at the challenger's test
    split from its validation scale, a stale one, not tracked on as its live forecasts were.
    Now its forecasts compared are those evaluate's walk forward (and predict, live) gives."""
    from forecaster.evaluation import evaluate

    old = tmp_path / "old"
    old.mkdir()
    for f in small_dir.glob("*.csv"):
        rows = f.read_text().splitlines(keepends=True)
        (old / f.name).write_text("".join(rows[:-40]))
    champ_dir, chall_dir = tmp_path / "champion", tmp_path / "challenger"
    train(load_config(None, tiny_overrides(old)), run_dir=champ_dir)
    for f in small_dir.glob("*.csv"):
        shutil.copy(f, old / f.name)  # the store caught up
    train(load_config(None, tiny_overrides(old, **{"window.test_days": 60, "train.seed": 1})), run_dir=chall_dir)
    c = retraining.compare(load_run(champ_dir), load_run(chall_dir), load_bars("csv", old, ["STOCKA", "STOCKB"]))
    walked = evaluate(champ_dir).predictions.astype({"origin": str})
    mine = c.forecasts.astype({"origin": str}).merge(walked, on=["ticker", "origin", "step"])
    assert len(mine) == len(c.forecasts) > 0
    for q in ("p10", "p50", "p90"):
        np.testing.assert_allclose(mine[f"{q}_a"], mine[q], rtol=1e-9)


def test_a_failing_challenger_never_touches_the_pointer(cli, runs, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("retrain", "prod", "--runs-dir", runs, "--data-dir", empty)
    assert res.exit_code == 1 and "STOCKA" in res.stderr
    assert _target(runs) == "first"
    # the cron mail's line says what failed and that the name is as it was
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
    assert line.startswith(
        f"ERROR: retrain of prod failed while the challenger trained ({runs / 'prod'} still points at first): "
    ), line
    import forecaster.models as models

    real = models.pinball_loss
    monkeypatch.setattr("forecaster.training.pinball_loss", lambda p, y, q: real(p, y, q) * float("nan"))
    res = cli("retrain", "prod", "--runs-dir", runs)
    assert res.exit_code == 1 and "nan" in res.stderr
    assert _target(runs) == "first"


def test_a_challenger_that_diverges_after_good_epochs_writes_no_run(cli, runs, monkeypatch):
    """train keeps the last good checkpoint of a diverged run; a challenger must not: it would
    never be compared, and the next prune would count it as a finished run."""
    import forecaster.models as models
    from forecaster import training

    real, real_epochs, done = models.pinball_loss, training.Trainer.epochs, []

    def epochs(self, *args, **kwargs):
        for record in real_epochs(self, *args, **kwargs):
            done.append(record)
            yield record

    def nan_after_epoch_1(p, y, q):
        return real(p, y, q) * (float("nan") if done else 1.0)

    monkeypatch.setattr(training.Trainer, "epochs", epochs)
    monkeypatch.setattr("forecaster.training.pinball_loss", nan_after_epoch_1)
    before = sorted(p.name for p in runs.iterdir())
    res = cli("retrain", "prod", "--runs-dir", runs, "--epochs", "4")
    assert res.exit_code == 1 and "loss became nan at epoch 2" in res.stderr, res.stderr
    assert "last good checkpoint" not in res.stderr
    assert _target(runs) == "first"
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == [
        n for n in before if not n.startswith(".")
    ]


def test_a_challenger_without_any_of_the_champions_tickers_is_refused_before_training(cli, runs, small_dir, tmp_path):
    """Nothing could compare the two: said at once, not after the challenger has trained."""
    data = shutil.copytree(small_dir, tmp_path / "data")
    shutil.copy(data / "STOCKA.csv", data / "STOCKC.csv")
    res = cli("retrain", "prod", "--runs-dir", runs, "--data-dir", data, "-t", "stockc")
    assert res.exit_code == 1
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
    assert "STOCKC" in line and "none of the champion's (STOCKA, STOCKB)" in line
    assert "training challenger" not in res.stderr
    assert registry.runs_of("prod", runs) == [] and _target(runs) == "first"
    # one ticker in common is enough: the two are compared on it
    res = cli("retrain", "prod", "--runs-dir", runs, "--data-dir", data, "-t", "STOCKC,STOCKA", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["figures"]["challenger"]["n"] > 0


def test_retrain_keeps_the_last_k_runs_of_the_name(cli, runs):
    made = []
    for _ in range(3):
        res = cli("retrain", "prod", "--runs-dir", runs, "--keep", "2", "--json")
        assert res.exit_code == 0, res.stderr
        made.append(json.loads(res.stdout)["challenger"])
    assert [p.name for p in registry.runs_of("prod", runs)] == made[1:]
    assert _target(runs) == made[-1]
    assert (runs / "first").is_dir()  # promoted by hand, not a run retrain wrote: never pruned


def test_retrain_exits_75_when_locked_and_1_without_a_champion(cli, runs):
    with file_lock(registry.lock_path("prod", runs)):
        res = cli("retrain", "prod", "--runs-dir", runs)
    assert res.exit_code == EXIT_TEMPFAIL
    assert _target(runs) == "first" and registry.runs_of("prod", runs) == []
    res = cli("retrain", "staging", "--runs-dir", runs)
    assert res.exit_code == 1 and "promote a run first" in res.stderr
    assert not (runs / ".staging.lock").exists()
    res = cli("retrain", "prod", "--runs-dir", runs.parent / "mistyped" / "runs")
    assert res.exit_code == 1 and "promote a run first" in res.stderr
    assert not (runs.parent / "mistyped").exists()  # nothing made for a folder that is not there


@pytest.mark.parametrize(("flag", "value"), [("--keep", "0"), ("--alpha", "1.5"), ("--alpha", "-0.1")])
def test_retrain_refuses_a_keep_or_alpha_out_of_range_before_training(cli, runs, flag, value):
    """--keep counts the run directories of the name kept, at least one: 0 is a usage error, as
    an --alpha outside [0, 1] is; no challenger is trained and the name still points where it did."""
    before = sorted(p.name for p in runs.iterdir())
    res = cli("retrain", "prod", "--runs-dir", runs, flag, value)
    assert res.exit_code == 2, res.stderr
    assert flag in res.stderr and res.stdout == ""
    assert sorted(p.name for p in runs.iterdir()) == before and _target(runs) == "first"


def test_a_bad_training_option_is_named_as_given_and_trains_nothing(cli, runs):
    before = sorted(p.name for p in runs.iterdir())
    res = cli("retrain", "prod", "--runs-dir", runs, "--epochs", "0")
    assert res.exit_code == 1, res.stderr
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
    assert line.endswith("(options): --epochs: must be greater than 0, not 0"), line
    assert sorted(p.name for p in runs.iterdir()) == before and _target(runs) == "first"


def test_a_challenger_with_the_same_medians_and_worse_intervals_is_refused_for_its_pinball_alone(
    small_run, small_dir, monkeypatch
):
    real = retraining.walk_forward

    def slightly_off_for_the_challenger(run, bars, **kw):
        pred = real(run, bars, **kw)
        if run.name == "challenger":  # the same medians, p10 and p90 a hair further from the actual
            for q in ("p10", "p90"):
                pred[q] -= 1e-7 * pred[q] * np.sign(pred["actual"] - pred[q])
        return pred

    monkeypatch.setattr(retraining, "walk_forward", slightly_off_for_the_challenger)
    champ = load_run(small_run)
    chall = dataclasses.replace(champ, manifest=champ.manifest.model_copy(update={"name": "challenger"}))
    c = retraining.compare(champ, chall, load_bars("csv", small_dir, ["STOCKA", "STOCKB"]))
    assert not c.promote and c.challenger.pinball > c.champion.pinball
    assert f"challenger is not promoted, {champ.name} stays (higher pinball loss): " in c.reason
    # the loss decided in the 5th digit or later is shown with enough digits to see it
    shown = c.reason.split("): pinball ")[1].split(", MAE")[0]
    mine, theirs = shown.split(" against the champion's ")
    assert float(mine) > float(theirs)


def _compare_rigged(small_run, small_dir, monkeypatch, *, champion=None, challenger=None):
    """retraining.compare of the champion with itself renamed "challenger", each one's walk
    forward changed by ``champion(pred)`` / ``challenger(pred)``: two runs whose forecasts
    differ in a known way."""
    real = retraining.walk_forward

    def rigged(run, bars, **kw):
        pred = real(run, bars, **kw).copy()
        change = challenger if run.name == "challenger" else champion
        return pred if change is None else change(pred)

    monkeypatch.setattr(retraining, "walk_forward", rigged)
    champ = load_run(small_run)
    chall = dataclasses.replace(champ, manifest=champ.manifest.model_copy(update={"name": "challenger"}))
    return retraining.compare(champ, chall, load_bars("csv", small_dir, ["STOCKA", "STOCKB"]))


def _further_off(pred, by: float):
    """The forecasts with p10 and p90 moved further from the actual by ``by`` (a share of
    each): a higher pinball loss, whatever the intervals' coverage was."""
    for q in ("p10", "p90"):
        pred[q] -= by * pred[q] * np.sign(pred["actual"] - pred[q])
    return pred


def test_a_challenger_with_significantly_larger_median_errors_is_refused_though_its_pinball_is_lower(
    small_run, small_dir, monkeypatch
):
    """The challenger's intervals are much closer to the actuals than the champion's (its pinball
    loss is lower), but every median of it is 1 % further from the actual: the Diebold-Mariano
    test finds its errors significantly larger, and the champion stays, the reason saying so."""

    def worse_medians(pred):
        pred["p50"] += 0.01 * pred["p50"] * np.sign(pred["p50"] - pred["actual"])
        return pred

    c = _compare_rigged(
        small_run, small_dir, monkeypatch, champion=lambda p: _further_off(p, 0.1), challenger=worse_medians
    )
    assert c.challenger.pinball < c.champion.pinball and c.challenger.mae > c.champion.mae
    assert c.dm_pvalue < c.alpha
    assert not c.promote
    assert f"challenger is not promoted, {c.champion.run} stays (significantly larger errors at 0.05): " in c.reason


def test_a_challenger_not_significantly_worse_is_promoted(small_run, small_dir, monkeypatch):
    """A challenger whose medians are a hair closer to the actuals and whose intervals are a hair
    less far off: nothing says it is worse (DM p far above alpha), so it is promoted."""

    def a_hair_better(pred):
        pred["p50"] += 0.001 * (pred["actual"] - pred["p50"])
        return pred

    c = _compare_rigged(
        small_run, small_dir, monkeypatch, champion=lambda p: _further_off(p, 1e-4), challenger=a_hair_better
    )
    assert c.dm_pvalue > c.alpha and c.challenger.pinball <= c.champion.pinball
    assert c.promote
    assert c.reason.startswith(f"challenger is promoted over {c.champion.run}: pinball ")


def test_a_challenger_with_a_forecast_that_is_not_finite_is_never_promoted(small_run, small_dir, monkeypatch):
    """One p90 of the challenger overflowed to inf: it is not promoted, and the reason says its
    forecasts are not finite, even against a champion one of whose p90 overflowed too (both
    pinball losses infinite, so they compare as equal, and the medians are the same)."""

    def one_p90_overflowed(row: int):
        def change(pred):
            pred.loc[pred.index[row], "p90"] = np.inf
            return pred

        return change

    c = _compare_rigged(
        small_run, small_dir, monkeypatch, champion=one_p90_overflowed(0), challenger=one_p90_overflowed(-1)
    )
    assert c.champion.pinball == c.challenger.pinball == np.inf
    assert not c.promote
    assert c.reason == f"challenger is not promoted, {c.champion.run} stays: some of its forecasts are not finite"


def test_the_dm_p_value_is_that_of_the_mean_error_difference_of_each_origin(small_run, small_dir, monkeypatch):
    """The p-value compared with alpha is the Diebold-Mariano test, with h = the horizon (3), of
    the difference of the two runs' absolute median errors averaged over every ticker and step of
    each origin, in origin order: the errors of one origin share sessions and a market, and only
    their mean leaves a series whose dependence the h - 1 lags cover."""
    from forecaster.metrics import diebold_mariano, diebold_mariano_differential

    rng = np.random.default_rng(0)

    def noisy(pred):
        pred["p50"] *= np.exp(rng.normal(0.0, 0.005, len(pred)))
        return pred

    c = _compare_rigged(small_run, small_dir, monkeypatch, challenger=noisy)
    assert load_run(small_run).config.window.horizon == 3
    fc = c.forecasts
    assert fc["ticker"].nunique() == 2 and fc["step"].nunique() == 3
    actual = fc["actual_a"].to_numpy(dtype=float)
    d = np.abs(actual - fc["p50_a"].to_numpy()) - np.abs(actual - fc["p50_b"].to_numpy())
    per_origin = pd.Series(d).groupby(fc["origin"].to_numpy()).mean().sort_index().to_numpy()

    def p_value(h):
        return diebold_mariano_differential(per_origin, h=h)[1]

    assert c.dm_pvalue == pytest.approx(p_value(3), rel=1e-12, abs=0)
    # and the horizon matters to it, as does the mean per origin
    assert p_value(3) != pytest.approx(p_value(1), rel=1e-6)
    series = fc.sort_values(["ticker", "step", "origin"], kind="mergesort")
    actual = series["actual_a"].to_numpy(dtype=float)
    every_row = diebold_mariano(actual - series["p50_a"].to_numpy(), actual - series["p50_b"].to_numpy(), h=3)[1]
    assert p_value(3) != pytest.approx(every_row, rel=1e-6)


def test_an_interrupted_retrain_says_where_the_name_points_and_to_retrain_again(cli, runs, monkeypatch):
    """`kill` while the challenger trains: exit 130, the name untouched, and the line says so
    and what to do: retrain again, not `train --resume` (which would never compare the two)."""
    real = retraining.train

    def killed_in_epoch_1(cfg, *, run_dir, on_epoch=None, **kw):
        return real(cfg, run_dir=run_dir, on_epoch=lambda rec: os.kill(os.getpid(), signal.SIGTERM), **kw)

    monkeypatch.setattr(retraining, "train", killed_in_epoch_1)
    res = cli("retrain", "prod", "--runs-dir", runs)
    [challenger] = registry.runs_of("prod", runs)
    line = assert_one_line_error(
        res, 130, "retrain of prod interrupted while the challenger trained", "prod points at first"
    )
    assert f"the challenger {challenger} is left unfinished, not compared and not promoted" in line
    assert f"run `forecaster retrain prod --runs-dir {runs}` again" in line.lower() and "--resume" not in line
    assert _target(runs) == "first"


def test_a_stop_as_the_challengers_training_returns_says_it_is_trained(cli, runs, monkeypatch):
    """A stop once the challenger's run was written whole, as its training returned (before
    retrain's next stage): the line called the finished challenger "unfinished", which `info`
    and prune then treated as a finished run."""
    real = retraining.train

    def stopped_as_it_returns(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # what SIGTERM raises there

    monkeypatch.setattr(retraining, "train", stopped_as_it_returns)
    res = cli("retrain", "prod", "--runs-dir", runs)
    [challenger] = registry.runs_of("prod", runs)
    line = assert_one_line_error(res, 130, "retrain of prod interrupted while the challenger trained")
    assert f"the challenger {challenger} is left trained, not compared and not promoted" in line, line
    assert json.loads((challenger / "run.json").read_text())["status"] == "complete"
    assert _target(runs) == "first"


def test_a_retrain_stopped_as_the_winner_was_to_be_promoted_says_it_won(cli, runs, monkeypatch):
    """A stop between the comparison the challenger won (a tie: the same config, seed and data)
    and the switch of the name: the line said the challenger "was compared and not promoted",
    as if it had lost."""

    def stopped(pointer, run_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(retraining, "switch", stopped)
    res = cli("retrain", "prod", "--runs-dir", runs)
    [challenger] = registry.runs_of("prod", runs)
    line = assert_one_line_error(res, 130, "retrain of prod interrupted after the comparison, which the challenger won")
    assert (
        f"the challenger {challenger} won the comparison but was not promoted" in line
        and "prod points at first" in line
    )
    assert _target(runs) == "first"


@pytest.mark.parametrize(
    ("module", "function", "stage", "left"),
    [
        # lost as the challenger's finished run was written, after its last step: its training
        # had no step left to stop at
        ("training", "_save", "before the challenger was compared", "is left trained, not compared"),
        # lost as the runs were backtested: the winner is not switched to
        ("retraining", "compare", "after the comparison, which the challenger won", "won the comparison but was not"),
        # lost as the name was switched: the older runs are not pruned
        ("retraining", "switch", "after the comparison", "was promoted"),
    ],
)
def test_a_stop_lost_in_a_finalizer_still_stops_a_retrain(cli, runs, monkeypatch, module, function, stage, left):
    """SIGTERM's interrupt raised inside a finalizer is dropped by Python, and the signals after
    it were ignored as its echo: retrain compared, switched the name and pruned, and exited 0.
    It stops at the next stage, with the line any stop there gives."""
    import forecaster.training as training

    where = {"training": training, "retraining": retraining}[module]
    real = getattr(where, function)

    def lost_meanwhile(*args, **kwargs):
        drop_a_stop_signal()
        return real(*args, **kwargs)

    monkeypatch.setattr(where, function, lost_meanwhile)
    dropped = []
    monkeypatch.setattr("sys.unraisablehook", dropped.append)  # what Python would print
    res = cli("retrain", "prod", "--runs-dir", runs, "--keep", "1")
    [challenger] = registry.runs_of("prod", runs)
    points = challenger.name if function == "switch" else "first"
    line = assert_one_line_error(res, 130, f"retrain of prod interrupted {stage}", f"prod points at {points}")
    assert f"the challenger {challenger} {left}" in line, line
    assert _target(runs) == points and (runs / "first").is_dir() and dropped == []  # nothing pruned


@pytest.mark.parametrize("default_runs_dir", [True, False])
def test_info_on_an_interrupted_challenger_says_to_retrain_again_as_retrain_does(
    cli, runs, monkeypatch, default_runs_dir
):
    """The challenger a stopped retrain left: info gives the command retrain's own line gives
    (retrain again), not `train --resume`, which would finish it but never compare it with the
    champion nor promote it; run as written, that command trains and compares a new one."""
    real = retraining.train

    def killed_in_epoch_1(cfg, *, run_dir, on_epoch=None, **kw):
        return real(cfg, run_dir=run_dir, on_epoch=lambda rec: os.kill(os.getpid(), signal.SIGTERM), **kw)

    monkeypatch.setattr(retraining, "train", killed_in_epoch_1)
    if default_runs_dir:  # the cron job's own folder: runs/ in the folder it runs in
        monkeypatch.chdir(runs.parent)
    where = Path("runs") if default_runs_dir else runs
    line = assert_one_line_error(cli("retrain", "prod", "--runs-dir", where), 130, "retrain of prod interrupted")
    [challenger] = registry.runs_of("prod", where)
    res = cli("info", challenger)
    assert res.exit_code == 0, res.stderr
    [status] = [ln for ln in res.stdout.splitlines() if ln.startswith("status")]
    assert _command_in(status, "retrain") == _command_in(line, "retrain"), (status, line)
    assert "interrupted" in status and "`forecaster train --resume" not in status, status
    monkeypatch.setattr(retraining, "train", real)
    assert cli(*_command_in(status, "retrain")).exit_code == 0
    assert _target(runs) != "first"  # a new challenger trained, was compared and won the tie
    # a run of that form whose name has no link beside it is no challenger: resumed as any run
    os.unlink(runs / "prod")
    res = cli("info", challenger)
    assert f"resume with `forecaster train --resume {challenger}`" in res.stdout, res.stdout


def test_predict_evaluate_and_promote_of_an_interrupted_challenger_say_to_retrain_again(
    cli, runs, small_dir, tmp_path, monkeypatch
):
    """The commands that refuse the challenger a stopped retrain left give info's advice
    (retrain again), not `train --resume`, which would finish it but never compare it with
    the champion; they said to resume it."""
    real = retraining.train

    def killed_in_epoch_1(cfg, *, run_dir, on_epoch=None, **kw):
        return real(cfg, run_dir=run_dir, on_epoch=lambda rec: os.kill(os.getpid(), signal.SIGTERM), **kw)

    monkeypatch.setattr(retraining, "train", killed_in_epoch_1)
    retrain_line = assert_one_line_error(cli("retrain", "prod", "--runs-dir", runs), 130, "retrain of prod")
    [challenger] = registry.runs_of("prod", runs)
    for args in (
        ["predict", "--run", challenger, "--data-dir", small_dir, "--out", tmp_path / "fc"],
        ["evaluate", "--run", challenger, "--data-dir", small_dir],
        ["promote", challenger, "--name", "staging", "--runs-dir", runs],
    ):
        line = assert_one_line_error(cli(*args), 1, f"{challenger}: training was interrupted after epoch")
        assert "--resume" in line and "`forecaster train --resume" not in line, line
        assert _command_in(line, "retrain") == _command_in(retrain_line, "retrain"), (line, retrain_line)
    assert _target(runs) == "first" and not (runs / "staging").exists()


def _command_in(line: str, program: str) -> list[str]:
    """The arguments of the backquoted `forecaster PROGRAM ...` command in ``line``."""
    quoted = line.split(f"`forecaster {program} ", 1)[1].split("`", 1)[0]
    return [program, *shlex.split(quoted)]


def test_the_commands_retrain_asks_for_name_its_runs_dir(cli, runs, monkeypatch):
    """With --runs-dir elsewhere than runs/, the command a line asks for, run as written from
    the same folder, acts on that folder: retrain again after an interruption, promote a run
    under a name that has none there."""
    real = retraining.train

    def killed_in_epoch_1(cfg, *, run_dir, on_epoch=None, **kw):
        return real(cfg, run_dir=run_dir, on_epoch=lambda rec: os.kill(os.getpid(), signal.SIGTERM), **kw)

    monkeypatch.setattr(retraining, "train", killed_in_epoch_1)
    line = assert_one_line_error(cli("retrain", "prod", "--runs-dir", runs), 130, "retrain of prod interrupted")
    monkeypatch.setattr(retraining, "train", real)
    res = cli(*_command_in(line, "retrain"))
    assert res.exit_code == 0, res.stderr
    assert _target(runs).startswith("prod-")  # the challenger trained again, and won the tie
    line = assert_one_line_error(cli("retrain", "staging", "--runs-dir", runs), 1, "promote a run first")
    args = _command_in(line, "promote")
    assert cli(*[runs / "first" if a == "RUN" else a for a in args]).exit_code == 0
    assert os.readlink(runs / "staging") == "first"


@pytest.mark.parametrize("name_lock", ["left by an earlier promote", "never made"])
def test_retrain_in_a_read_only_runs_folder_says_it_cannot_be_written_and_nothing_changed(runs, tmp_path, name_lock):
    """A runs folder without write permission (a shared one, mounted read-only): one line
    saying that the folder cannot be written and that nothing was changed, before the
    champion loads; it said "cannot create the lock file runs/.prod-<time>.lock" (or
    runs/.prod.lock), a file the user never asked for."""
    if name_lock == "never made":
        os.unlink(registry.lock_path("prod", runs))
    before = sorted(p.name for p in runs.iterdir())
    runs.chmod(0o555)
    try:
        res = run_forecaster_minding_file_modes("retrain", "prod", "--runs-dir", runs, cwd=tmp_path)
    finally:
        runs.chmod(0o755)
    assert res.returncode == 1, res.stderr
    [line] = res.stderr.splitlines()
    assert line == (
        f"ERROR: cannot retrain prod: the runs folder {runs} cannot be written (Permission denied); "
        f"nothing was changed, {runs / 'prod'} points at first"
    ), line
    assert sorted(p.name for p in runs.iterdir()) == before and _target(runs) == "first"


def test_a_champion_trained_on_a_gpu_retrained_where_there_is_none_says_where_cuda_came_from(cli, runs, monkeypatch):
    """The champion's config asks for CUDA (it was trained on another machine): the line
    names the config key the device came from, not a --device never typed, and the flag it
    gives trains the challenger."""
    import torch

    meta = json.loads((runs / "first" / "run.json").read_text(encoding="utf-8"))
    meta["config"]["train"]["device"] = "cuda"
    (runs / "first" / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = assert_one_line_error(cli("retrain", "prod", "--runs-dir", runs), 1, "no CUDA device")
    assert "--device cuda asked for" not in line and "train.device" in line, line
    assert _target(runs) == "first"
    flag = line.split("`", 2)[1]
    res = cli("retrain", "prod", "--runs-dir", runs, *shlex.split(flag))
    assert res.exit_code == 0, res.stderr


# `python -c` script: retrain, with SIGTERM arriving in the function of forecaster.retraining
# named by the first argument (compare: while the runs are backtested; load_run: once the lock
# is taken, while the champion loads; file_lock: while it waits for the lock; champion: first
# called before the lock is asked for, to check that the name has a champion)
_STOPPED_IN = """
import os, signal, sys
import forecaster.retraining as retraining
from forecaster.cli import main

real = getattr(retraining, sys.argv[1])

def stopped(*args, **kwargs):  # systemctl stop arrives during this call
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)

setattr(retraining, sys.argv[1], stopped)
sys.argv = ["forecaster", "retrain", "prod", "--runs-dir", *sys.argv[2:]]
main()
"""


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
def test_sigterm_while_comparing_exits_130_and_leaves_the_pointer(runs):
    res = run_script(_STOPPED_IN, "compare", runs)
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert "interrupted" in res.stderr and "Traceback" not in res.stderr
    assert _target(runs) == "first"


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TEST_TIMEOUT_S)
@pytest.mark.parametrize(
    ("stopped_in", "stage", "flags"),
    [
        ("champion", "before it waited for the lock on the name", []),
        ("file_lock", "while it waited for the lock on the name", ["--lock-timeout", "60"]),
        ("load_run", "before the challenger trained", []),
    ],
)
def test_sigterm_before_the_challenger_trains_exits_130_with_one_line_and_json(runs, stopped_in, stage, flags):
    """`kill` while retrain checks the champion, waits for the name's lock (--lock-timeout) or
    loads the champion: exit 130 with the line the later stages give (where the name points,
    nothing written) and --json the document; not a process killed by the signal (143) that
    says nothing, or a bare "interrupted"."""
    res = run_script(_STOPPED_IN, stopped_in, runs, *flags, "--json")
    assert res.returncode == 130, (res.returncode, res.stderr)
    [line] = res.stderr.splitlines()
    assert line.startswith(f"ERROR: retrain of prod interrupted {stage}"), line
    assert "prod points at first; no challenger run was written" in line, line
    assert f"run `forecaster retrain prod --runs-dir {runs}` again" in line.lower(), line
    assert json.loads(res.stdout) == {
        "name": "prod",
        "promoted": False,
        "champion": "first",
        "challenger": None,
        "pointer": str(runs / "prod"),
        "points_to": "first",
        "interrupted": True,
        "message": line.removeprefix("ERROR: "),
    }
    assert _target(runs) == "first" and registry.runs_of("prod", runs) == []


def test_an_interrupted_retrain_json_says_on_stdout_where_the_name_points(cli, runs, monkeypatch):
    """`kill` while the challenger of `retrain --json` trains: exit 130, the line on stderr, and
    on stdout the keys of a finished retrain that apply, with interrupted and the line."""
    real = retraining.train

    def killed_in_epoch_1(cfg, *, run_dir, on_epoch=None, **kw):
        return real(cfg, run_dir=run_dir, on_epoch=lambda rec: os.kill(os.getpid(), signal.SIGTERM), **kw)

    monkeypatch.setattr(retraining, "train", killed_in_epoch_1)
    res = cli("retrain", "prod", "--runs-dir", runs, "--json")
    line = assert_one_line_error(res, 130, "retrain of prod interrupted while the challenger trained")
    [challenger] = registry.runs_of("prod", runs)
    assert json.loads(res.stdout) == {
        "name": "prod",
        "promoted": False,
        "champion": "first",
        "challenger": challenger.name,
        "pointer": str(runs / "prod"),
        "points_to": "first",
        "interrupted": True,
        "message": line.removeprefix("ERROR: "),
    }
    # a finished retrain says it was not interrupted
    monkeypatch.setattr(retraining, "train", real)
    res = cli("retrain", "prod", "--runs-dir", runs, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["interrupted"] is False


def test_retrain_keep_prunes_an_unfinished_challenger_before_a_finished_run(cli, runs, monkeypatch):
    """An interrupted retrain's challenger does not push a finished run out of --keep: it is
    the first to go."""
    res = cli("retrain", "prod", "--runs-dir", runs, "--json")
    assert res.exit_code == 0, res.stderr
    finished = json.loads(res.stdout)["challenger"]
    real = retraining.train

    def killed_in_epoch_1(cfg, *, run_dir, on_epoch=None, **kw):
        return real(cfg, run_dir=run_dir, on_epoch=lambda rec: os.kill(os.getpid(), signal.SIGTERM), **kw)

    monkeypatch.setattr(retraining, "train", killed_in_epoch_1)
    assert cli("retrain", "prod", "--runs-dir", runs).exit_code == 130
    unfinished = registry.runs_of("prod", runs)[-1].name
    assert unfinished != finished and json.loads((runs / unfinished / "run.json").read_text())["status"] != "complete"
    monkeypatch.setattr(retraining, "train", real)
    res = cli("retrain", "prod", "--runs-dir", runs, "--keep", "2", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["removed"] == [unfinished]
    assert [p.name for p in registry.runs_of("prod", runs)] == [finished, doc["challenger"]]


def test_retrain_warns_once_of_sessions_missing_from_the_data(cli, runs, small_dir, tmp_path):
    """Bars with a gap: one warning, from training the challenger, not a second one when the
    same bars are read again to compare it with the champion."""
    data = tmp_path / "data"
    shutil.copytree(small_dir, data)
    bars = pd.read_csv(data / "STOCKA.csv")
    bars.drop(bars.index[40:60]).to_csv(data / "STOCKA.csv", index=False)  # four weeks missing
    res = cli("retrain", "prod", "--runs-dir", runs, "--data-dir", data)
    assert res.exit_code == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if "gap(s) of more than 14 days" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: STOCKA: 1 gap(s)"), res.stderr


def test_a_challenger_that_skips_a_champions_ticker_is_not_promoted(cli, runs, small_dir, tmp_path):
    """STOCKB's file now holds its last 210 sessions only (too few before the validation split
    to train on): the challenger skips it with a warning. Promoted, it would silently end the
    name's forecasts of STOCKB, so the champion stays, and the line says why (tickers asked for
    in lower case too)."""
    data = tmp_path / "data"
    shutil.copytree(small_dir, data)
    lines = (data / "STOCKB.csv").read_text().splitlines(keepends=True)
    (data / "STOCKB.csv").write_text(lines[0] + "".join(lines[-210:]))
    res = cli("retrain", "prod", "--runs-dir", runs, "--data-dir", data, "-t", "stocka,stockb", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["promoted"] is False and _target(runs) == "first"
    assert "first stays: it does not forecast STOCKB, which first forecasts (STOCKB: " in doc["reason"]
    assert doc["figures"]["challenger"]["n"] > 0  # compared on STOCKA all the same
    # naming the tickers to keep drops STOCKB on purpose, and the comparison decides
    res = cli("retrain", "prod", "--runs-dir", runs, "--data-dir", data, "-t", "STOCKA", "--json")
    assert res.exit_code == 0, res.stderr
    assert "does not forecast" not in json.loads(res.stdout)["reason"]


def test_retrain_of_a_run_directory_says_how_to_promote_it_and_that_works(cli, runs):
    """`retrain first`, first a run directory, said only that it was not a promoted name."""
    res = cli("retrain", "first", "--runs-dir", runs)
    line = assert_one_line_error(res, 1, f"{runs / 'first'} is a run directory, not a promoted name")
    command = line.split("`")[1]
    assert (
        command
        == f"forecaster promote {shlex.quote(str(runs / 'first'))} --name NAME --runs-dir {shlex.quote(str(runs))}"
    )
    assert line.endswith(", then retrain NAME")
    assert cli(*shlex.split(command)[1:-4], "--name", "mine", "--runs-dir", runs).exit_code == 0
    assert registry.champion("mine", runs) == (runs / "first").resolve()
