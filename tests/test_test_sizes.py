"""Do the significance tests reject a true null hypothesis about as often as their level says,
and a false one often? Seeded simulations of a few hundred samples each: a test that reads
dependent losses as independent rejects several times too often, far outside the tolerance of
each check."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

import forecaster.retraining as retraining

ALPHA = 0.05


def _equally_good_runs(rng, tickers: int, origins: int, horizon: int, spread: float = 1.0) -> dict:
    """walk_forward's rows for a champion and a challenger on ``tickers`` random walks whose
    returns share a market factor. Each forecast is the last close moved by a drift times the
    step, the drift drawn afresh at every origin and shared in part by the tickers (a model's
    view of the market). Both drifts come from one distribution, so neither run is the more
    accurate, unless ``spread`` (the challenger's drifts over the champion's) is not 1."""
    steps = np.arange(1, horizon + 1)
    shocks = 0.6 * rng.standard_normal(origins + horizon) + 0.8 * rng.standard_normal((tickers, origins + horizon))
    path = np.concatenate([np.zeros((tickers, 1)), np.cumsum(0.01 * shocks, axis=1)], axis=1)
    start = np.arange(origins)
    last = np.exp(path[:, start])[:, :, None]  # (ticker, origin, 1)
    actual = np.exp(path[:, start[:, None] + steps])  # (ticker, origin, step)
    days = pd.bdate_range("2024-01-02", periods=origins + horizon)
    index = np.indices(actual.shape).reshape(3, -1)
    runs = {}
    for name, scale in (("champion", 1.0), ("challenger", spread)):
        drift = 0.004 * scale * (0.7 * rng.standard_normal(origins) + 0.7 * rng.standard_normal((tickers, origins)))
        p50 = (last * np.exp(drift[:, :, None] * steps)).reshape(-1)
        runs[name] = pd.DataFrame(
            {
                "ticker": np.array([f"T{k}" for k in range(tickers)])[index[0]],
                "origin": days[index[1]],
                "step": steps[index[2]],
                "date": days[index[1] + steps[index[2]]],
                "actual": actual.reshape(-1),
                "p10": 0.98 * p50,
                "p50": p50,
                "p90": 1.02 * p50,
                "naive": np.broadcast_to(last, actual.shape).reshape(-1),
            }
        )
    return runs


def _stub_run(name: str, tickers: int):
    splits = SimpleNamespace(test_start="2024-01-02")
    return SimpleNamespace(
        name=name, manifest=SimpleNamespace(splits=splits, tickers={f"T{k}": None for k in range(tickers)})
    )


def _retrain_rejections(monkeypatch, seed: int, samples: int, spread: float = 1.0) -> float:
    """The share of ``samples`` simulated comparisons in which retrain's test finds the
    challenger's median errors significantly larger at ``ALPHA``."""
    rng = np.random.default_rng(seed)
    tickers, origins, horizon = 3, 60, 5
    runs = {}
    monkeypatch.setattr(retraining, "walk_forward", lambda run, bars: runs[run.name])
    champ, chall = _stub_run("champion", tickers), _stub_run("challenger", tickers)
    bars = {f"T{k}": None for k in range(tickers)}
    rejected = 0
    for _ in range(samples):
        runs.update(_equally_good_runs(rng, tickers, origins, horizon, spread))
        c = retraining.compare(champ, chall, bars)
        rejected += bool(c.dm_pvalue < ALPHA)
    return rejected / samples


def test_retrain_finds_an_equally_good_challenger_significantly_worse_about_alpha_of_the_time(monkeypatch):
    """Two runs whose forecasts are equally accurate, over 3 tickers, 60 origins and 5 steps:
    the one-sided test at 0.05 says the challenger's errors are significantly larger in 5-8 % of
    the samples (the Student-t reference is a little liberal over 60 origins). Read as one series
    of every ticker and step, whose errors of one origin are far apart, it said so in over 20 %
    and refused an equally good challenger one time in five."""
    assert _retrain_rejections(monkeypatch, seed=0, samples=200) < 0.12


def test_retrain_finds_a_worse_challenger_significantly_worse(monkeypatch):
    """A challenger whose drifts are 2.5 times as far off as the champion's is found worse almost
    every time: the mean per origin keeps the test's power."""
    assert _retrain_rejections(monkeypatch, seed=1, samples=100, spread=2.5) > 0.9


def _skill_claims(seed: int, samples: int, move: float = 2.0, signal: float = 0.002) -> float:
    """The share of ``samples`` simulated backtests whose pooled metrics row finds the model
    significantly better than naive at ``ALPHA``.

    Each day's log return of a ticker is a predictable part ``a`` plus noise, both shared in part
    by the tickers (a market). The model forecasts a move of ``move * a``: at 2, overshooting by
    ``a`` costs it as much, on average, as the naive forecast loses by missing ``a``, so it is
    exactly as good as naive; at 1 it is better, the more so the larger the ``signal``, the
    scale of ``a`` (the noise's is 0.01)."""
    from forecaster.metrics import metrics_table

    rng = np.random.default_rng(seed)
    tickers, origins = 20, 60
    days = pd.bdate_range("2024-01-02", periods=origins)
    claims = 0
    for _ in range(samples):
        a = signal * (rng.standard_normal(origins) + 0.3 * rng.standard_normal((tickers, origins)))
        noise = 0.01 * (0.6 * rng.standard_normal(origins) + 0.8 * rng.standard_normal((tickers, origins)))
        last = 100.0 * np.exp(rng.normal(0.0, 0.5, (tickers, 1)) + np.zeros((1, origins)))
        p50 = last * np.exp(move * a)
        pred = pd.DataFrame(
            {
                "ticker": np.repeat([f"T{k}" for k in range(tickers)], origins),
                "origin": np.tile(days, tickers),
                "step": 1,
                "actual": (last * np.exp(a + noise)).reshape(-1),
                "last_close": last.reshape(-1),
                "p10": 0.98 * p50.reshape(-1),
                "p50": p50.reshape(-1),
                "p90": 1.02 * p50.reshape(-1),
                "naive": last.reshape(-1),
            }
        )
        table = metrics_table(pred, "gru", {}, per_ticker=False, baselines=("naive",))
        claims += bool(table.loc[table["model"] == "gru", "dm_pvalue"].iloc[0] < ALPHA)
    return claims / samples


def test_the_pooled_metrics_row_finds_a_model_as_good_as_naive_significantly_better_about_alpha_of_the_time():
    """20 tickers over 60 origins, a model exactly as good as naive whose forecasts, like the
    returns, share a market component: the pooled row's one-sided test at 0.05 finds it better
    in about 5 % of the samples. Read as one series of every ticker's rows, where the same-day
    differences of the tickers lie far apart, it did in about 20 %."""
    assert _skill_claims(seed=0, samples=200) < 0.11


def test_the_pooled_metrics_row_finds_a_better_model_significantly_better():
    """The mean of each origin keeps the test's power: a model that forecasts the predictable
    part of the returns is found better than naive almost every time."""
    assert _skill_claims(seed=1, samples=50, move=1.0, signal=0.006) > 0.8


def _dm_rejections(seed: int, samples: int, h: int, n: int = 250, spread: float = 1.0) -> float:
    """The share of ``samples`` whose one-sided Diebold-Mariano test at ``ALPHA`` finds the first
    of two h-step forecasts of a random walk more accurate, from ``n`` consecutive origins.

    Each forecast misses each day's move by its own daily noise, the second's ``spread`` times the
    first's: at 1 they are equally accurate. An h-step error sums h days, and those of
    consecutive origins share h - 1, so the loss differences are autocorrelated up to lag h - 1."""
    from forecaster.metrics import diebold_mariano

    rng = np.random.default_rng(seed)
    rejected = 0
    for _ in range(samples):
        path = np.cumsum(rng.standard_normal((3, n + h)) * [[0.3], [1.0], [spread]], axis=1)
        moved, first, second = path[:, h:] - path[:, :-h]  # the h-day move and each forecast's miss of it
        rejected += bool(diebold_mariano(moved + first, moved + second, h=h)[1] < ALPHA)
    return rejected / samples


def test_dm_of_overlapping_five_step_errors_rejects_equal_accuracy_about_alpha_of_the_time():
    """250 overlapping 5-step errors of two equally accurate forecasts: the test with its four
    lags rejects in about 5 % of 1000 samples. Without the lags (the variance of independent
    errors) it rejected in about 18 %."""
    assert _dm_rejections(seed=0, samples=1000, h=5) < 0.08


def test_dm_finds_the_more_accurate_of_two_five_step_forecasts_and_only_that_one():
    """One-sided: the first forecast, its daily misses half the second's, is found more accurate
    every time; the second, against the first, never."""
    assert _dm_rejections(seed=1, samples=100, h=5, spread=2.0) > 0.9
    assert _dm_rejections(seed=2, samples=100, h=5, spread=0.5) < 0.02


def _gate_openings(seed: int, samples: int, move: float = 2.0, signal: float = 0.002) -> float:
    """The share of ``samples`` simulated validation splits on which the median gate at ``ALPHA``
    takes the network's one-step median rather than the last close; the returns and the median's
    moves as in :func:`_skill_claims` (at ``move`` 2 the median is exactly as good as naive)."""
    from forecaster.intervals import MID, median_weights

    rng = np.random.default_rng(seed)
    tickers, origins = 20, 60
    dates = np.tile(pd.bdate_range("2024-01-02", periods=origins).to_numpy(), tickers)
    ends = np.arange(tickers * origins)
    opened = 0
    for _ in range(samples):
        a = signal * (rng.standard_normal(origins) + 0.3 * rng.standard_normal((tickers, origins)))
        noise = 0.01 * (0.6 * rng.standard_normal(origins) + 0.8 * rng.standard_normal((tickers, origins)))
        realised = (a + noise).reshape(-1, 1)  # each ticker's origins in time order, one ticker after another
        ws = SimpleNamespace(
            horizon=1, dates=dates, realised=lambda e, r=realised: r[e], target_scale=lambda e: np.ones((len(e), 1))
        )
        q = np.zeros((len(ends), 1, 3))
        q[:, 0, MID] = move * a.reshape(-1)
        opened += median_weights(q, ws, ends, ALPHA) == [1.0]
    return opened / samples


def test_the_median_gate_lets_a_median_as_good_as_naive_through_about_alpha_of_the_time():
    """20 tickers' validation windows over 60 days, a median exactly as good as the last close
    whose moves, like the returns, share a market component: the gate at 0.05 opens for it in
    4-9 % of the samples. Tested as one series of every ticker's errors, where the same day's
    lie far apart, it opened in 26 %."""
    assert _gate_openings(seed=0, samples=200) < 0.11


def test_the_median_gate_lets_a_better_median_through():
    """A median that forecasts the predictable part of the returns is let through almost every time."""
    assert _gate_openings(seed=1, samples=50, move=1.0, signal=0.006) > 0.8
