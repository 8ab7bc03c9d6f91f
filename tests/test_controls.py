"""Controls that keep the whole pipeline honest, end to end (train -> walk-forward evaluate).

- On a geometric random walk nothing is predictable: the model must not beat naive. A clear
  positive skill here would mean the future leaks into the inputs or the scaling.
- On AR(1) log returns (coefficient 0.3) there is something to learn: the model must beat naive
  at step 1, significantly.
- The same AR(1) series with its days shuffled keeps the return distribution but loses the
  serial dependence: the skill must vanish again.

The data come from the package's own seeded generator, written as CSV files and read back
through the ``csv`` source like any user data. Six tickers and a 500-session test split give
3,000 pooled test origins, enough to separate a skill of a few percent from noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecaster.config import load_config
from forecaster.evaluation import evaluate
from forecaster.synthetic import Dynamics, generate_bars, write_csv
from forecaster.training import train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]

N_TICKERS = 6
FIRST, LAST = "2017-01-03", "2024-12-31"  # about 2,010 sessions per ticker
TEST_DAYS, VAL_DAYS = 500, 250
HORIZON = 3
DATA_SEED = 1  # ticker i is generated with seed 1000 * DATA_SEED + i
TRAIN_SEED = 0
SHUFFLE_SEED = 7
TOLERANCE = 0.03  # |skill| bound for the controls with nothing to learn
COLUMNS = ["open", "high", "low", "close", "volume"]


def _names() -> list[str]:
    return [f"CTL{i}" for i in range(N_TICKERS)]


def _bars(dynamics: Dynamics) -> dict[str, pd.DataFrame]:
    return {
        name: generate_bars(FIRST, LAST, seed=1000 * DATA_SEED + i, dynamics=dynamics)
        for i, name in enumerate(_names())
    }


def shuffle_days(bars: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same bars with the order of the days permuted, prices rebuilt from the permuted moves.

    Each day is kept whole as its moves relative to the previous close (open, high, low and
    close over the previous close) and its volume, so the bars stay consistent (low <= open,
    close <= high) and every feature keeps its distribution, but tomorrow's return no longer
    depends on today's. The first bar's previous close is taken to be its own open.
    """
    close = bars["close"].to_numpy(np.float64)
    prev = np.concatenate([[bars["open"].iloc[0]], close[:-1]])
    moves = bars[["open", "high", "low", "close"]].to_numpy(np.float64) / prev[:, None]
    order = np.random.default_rng(seed).permutation(len(bars))
    moves = moves[order]
    new_close = prev[0] * np.cumprod(moves[:, 3])
    new_prev = np.concatenate([[prev[0]], new_close[:-1]])
    values = np.column_stack([new_prev[:, None] * moves[:, :3], new_close, bars["volume"].to_numpy(np.float64)[order]])
    return pd.DataFrame(values, index=bars.index, columns=COLUMNS)


def _train_and_evaluate(bars: dict[str, pd.DataFrame], folder: Path) -> pd.DataFrame:
    """Write ``bars`` as CSVs, train a small GRU on them, evaluate it; the model's ALL rows."""
    data = folder / "data"
    for name, frame in bars.items():
        write_csv(frame, data / f"{name}.csv")
    cfg = load_config(
        None,
        {
            "data.source": "csv",
            "data.data_dir": str(data),
            "data.tickers": list(bars),
            "window.lookback": 20,
            "window.horizon": HORIZON,
            "window.val_days": VAL_DAYS,
            "window.test_days": TEST_DAYS,
            "model.cell": "gru",
            "model.hidden_size": 16,
            "train.epochs": 8,
            "train.batch_size": 256,
            "train.seed": TRAIN_SEED,
            "train.device": "cpu",
        },
    )
    train(cfg, run_dir=folder / "run")
    report = evaluate(folder / "run")
    pooled = report.overall()
    mine = pooled[pooled["model"] == "gru"].set_index("step").sort_index()
    assert list(mine.index) == list(range(1, HORIZON + 1))
    # every test session of every ticker is an origin (the last origins lose their late steps)
    assert mine.loc[1, "n"] == N_TICKERS * TEST_DAYS
    return mine


@pytest.fixture(scope="module")
def ar_bars() -> dict[str, pd.DataFrame]:
    return _bars(Dynamics.ar1(0.3))


def _lag1(returns: np.ndarray) -> float:
    r = returns - returns.mean()
    return float(np.dot(r[1:], r[:-1]) / np.dot(r, r))


def test_random_walk_gives_no_skill(tmp_path):
    mine = _train_and_evaluate(_bars(Dynamics.random_walk()), tmp_path)
    skill = mine["skill"].to_numpy(float)
    assert np.all(np.isfinite(skill))
    assert np.all(np.abs(skill) <= TOLERANCE), f"skill vs naive on a random walk: {skill}"


def test_ar1_returns_are_learned(ar_bars, tmp_path):
    mine = _train_and_evaluate(ar_bars, tmp_path)
    skill, pvalue = mine.loc[1, "skill"], mine.loc[1, "dm_pvalue"]
    assert skill > 0, f"step-1 skill on AR(1) returns: {skill:+.4f}"
    assert pvalue < 0.01, f"step-1 DM p-value on AR(1) returns: {pvalue:.3g} (skill {skill:+.4f})"


def test_shuffled_ar1_returns_give_no_skill(ar_bars, tmp_path):
    shuffled = {name: shuffle_days(frame, SHUFFLE_SEED + i) for i, (name, frame) in enumerate(ar_bars.items())}
    # the control itself: same returns, serial dependence gone, bars still consistent
    for name, frame in ar_bars.items():
        start = frame["open"].iloc[0]  # the close before the first bar, as shuffle_days takes it
        before = np.diff(np.log(np.concatenate([[start], frame["close"].to_numpy()])))
        after = np.diff(np.log(np.concatenate([[start], shuffled[name]["close"].to_numpy()])))
        assert _lag1(before) > 0.2 and abs(_lag1(after)) < 0.1
        assert np.allclose(np.sort(before), np.sort(after), atol=1e-9, rtol=0)
        s = shuffled[name]
        assert (s["low"] <= s[["open", "close"]].min(axis=1)).all()
        assert (s["high"] >= s[["open", "close"]].max(axis=1)).all()

    mine = _train_and_evaluate(shuffled, tmp_path)
    skill, pvalue = mine.loc[1, "skill"], mine.loc[1, "dm_pvalue"]
    assert abs(skill) <= TOLERANCE, f"step-1 skill on shuffled returns: {skill:+.4f}"
    # no evidence of skill: p > 0.05, or no test at all (NaN) where the median gate made the
    # forecast the last close itself
    assert not pvalue <= 0.05, f"step-1 DM p-value on shuffled returns: {pvalue:.3g} (skill {skill:+.4f})"
