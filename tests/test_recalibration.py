"""predict brings a run's interval scale up to date with every outcome since the run's last bar:
a run trained on a calm stretch issues calibrated intervals again some 50 sessions after the
volatility doubles, where its own scale, never updated, keeps missing far too often.

The first sessions after the jump miss often either way (35-49 % of the first 50 with the update,
however long the network trained): the scale moves by a few per cent a session, so it needs
dozens of sessions to double."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecaster.checkpoint import load_run
from forecaster.config import load_config
from forecaster.intervals import calibrated, start_scales, tracked_scales, with_median
from forecaster.npinfer import predict_scaled
from forecaster.prediction import predict
from forecaster.synthetic import Dynamics, generate_bars, write_csv
from forecaster.training import train

pytestmark = pytest.mark.usefixtures("torch_one_thread")

AFTER = 150  # sessions forecast after the volatility doubles
CATCH_UP = 50  # sessions the tracked scale is given to catch up before its coverage is checked


WILD = Dynamics.random_walk(sigma=0.02, mu=0.0)  # the volatility doubles


TICKERS = ["AAA", "BBB", "CCC", "DDD"]  # 600 one-step outcomes: coverage known to about 1.6 pp


@pytest.fixture(scope="module")
def regime(tmp_path_factory):
    """A run trained on five calm years (1 % a day) of four tickers, the bars of the 150 sessions
    after its last one, when the volatility has doubled, and a folder holding all of them."""
    root = tmp_path_factory.mktemp("regime")
    (root / "calm").mkdir()
    (root / "all").mkdir()
    bars = {}
    for k, sym in enumerate(TICKERS):
        calm = generate_bars("2017-01-03", "2021-12-31", seed=11 + k, dynamics=Dynamics.random_walk(sigma=0.01, mu=0.0))
        wild = generate_bars(
            "2022-01-03",
            "2022-09-30",
            seed=21 + k,
            dynamics=WILD,
            start_price=float(calm["close"].iloc[-1]),
        )
        bars[sym] = pd.concat([calm, wild])
        write_csv(calm, root / "calm" / f"{sym}.csv")
        write_csv(bars[sym], root / "all" / f"{sym}.csv")
    overrides = {
        "data.source": "csv",
        "data.data_dir": str(root / "calm"),
        "data.tickers": TICKERS,
        "window.lookback": 20,
        "window.horizon": 3,
        "model.hidden_size": 16,
    }
    train(load_config(None, overrides), run_dir=root / "run")
    return root, bars


def test_coverage_is_nominal_again_once_the_scale_has_caught_up(regime):
    root, bars = regime
    run = load_run(root / "run")
    cfg = run.config
    ws = run.windows(bars)
    last = np.datetime64(pd.Timestamp(run.manifest.tickers["AAA"].last_date))
    origins = np.concatenate(
        [
            ws.offsets[k] + np.searchsorted(ws.dates[ws.offsets[k] : ws.offsets[k + 1]], last) + np.arange(AFTER)
            for k in range(4)
        ]
    )
    q = with_median(predict_scaled(run.model, ws, origins, cfg.model.strategy), run.manifest.median_weights())
    online = {s: t.conformal_online for s, t in run.manifest.tickers.items()}
    tracked, _ = tracked_scales(q, ws, origins, online, cfg.intervals.tracking_rate)
    actual = ws.realised(origins)[:, 0] * ws.target_scale(origins)[:, 0]

    def one_step_coverage(scale):
        """Coverage of each ticker's one-step intervals over the sessions after the catch-up."""
        lo, _, hi = calibrated(q, ws, origins, scale)
        inside = ((actual >= lo[:, 0]) & (actual <= hi[:, 0])).reshape(len(TICKERS), AFTER)
        return float(inside[:, CATCH_UP:].mean())

    with_update = one_step_coverage(tracked)
    without = one_step_coverage(start_scales(ws, origins, online))
    # 400 outcomes: a true coverage of 80 % is observed within 4 pp 95 % of the time
    assert with_update == pytest.approx(0.80, abs=0.04)
    assert without < with_update - 0.10  # the run's own scale, never updated, lags the new regime

    # and this is what predict issues, from the bars up to each date alone
    for k in (10, 75, AFTER - 1):
        as_of = str(pd.Timestamp(ws.dates[origins[k]]).date())
        report = predict(
            root / "run", offline=True, data_dir=root / "all", out=root / "fc", as_of=as_of, tickers=["AAA"]
        )
        assert report.recalibrated == {"AAA": k}
        row = report.forecasts[report.forecasts["step"] == 1].iloc[0]
        lo, _, hi = calibrated(q[k : k + 1], ws, origins[k : k + 1], tracked[k : k + 1])
        close = ws.close[origins[k]]
        np.testing.assert_allclose([row["p10"], row["p90"]], close * np.exp([lo[0, 0], hi[0, 0]]), rtol=1e-6)


def test_predict_from_a_run_trained_long_ago_issues_the_intervals_evaluate_walks_forward(sample_dir, tmp_path):
    """Years of bars, a run trained 150 sessions ago whose volatility half-lives (2 sessions) make
    predict read only a short tail of them: the tail reaches back past the run's last bar, so the
    catch-up of the interval scale sees every session since, and predict's p10 / p50 / p90 at an
    origin are those evaluate's walk forward gives at the same origin."""
    from support import tiny_overrides

    from forecaster.evaluation import evaluate

    data = tmp_path / "data"
    data.mkdir()
    for f in sample_dir.glob("*.csv"):
        rows = f.read_text().splitlines(keepends=True)
        (data / f.name).write_text("".join(rows[:-150]))  # the data when the run was trained
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(data, **{"model.scale_halflife": 2, "intervals.vol_halflife": 2})
    train(load_config(None, overrides), run_dir=run_dir)
    for f in sample_dir.glob("*.csv"):
        (data / f.name).write_bytes(f.read_bytes())  # the store caught up since
    walked = evaluate(run_dir, jobs=1).predictions.astype({"origin": str})
    as_of = sorted(walked["origin"].unique())[-10]  # 140 sessions after the run's last bar
    report = predict(run_dir, as_of=as_of, out=tmp_path / "fc", offline=True, jobs=1)
    assert report.exit_code == 0 and report.recalibrated == {"STOCKA": 140, "STOCKB": 140}
    live = report.forecasts.merge(walked[walked["origin"] == as_of], on=["ticker", "step"], suffixes=("", "_walk"))
    assert len(live) == 6  # two tickers, three steps
    for q in ("p10", "p50", "p90"):
        np.testing.assert_allclose(live[q], live[f"{q}_walk"], rtol=1e-9)
