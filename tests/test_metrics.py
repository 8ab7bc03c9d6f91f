import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from forecaster.metrics import (
    METRIC_COLUMNS,
    coverage,
    diebold_mariano,
    directional_accuracy,
    lag_share,
    mae,
    mape,
    mase,
    metrics_table,
    pinball,
    rmse,
    skill,
    smape,
    student_t_cdf,
    student_t_sf,
    width,
)

NAN = float("nan")


# ---------------------------------------------------------------- point metrics


def test_mae_rmse_ignore_nan_rows():
    actual = [1.0, 2.0, 3.0, NAN]
    forecast = [2.0, 2.0, 5.0, 1.0]
    assert mae(actual, forecast) == pytest.approx(1.0)
    assert rmse(actual, forecast) == pytest.approx(math.sqrt(5 / 3))
    # a NaN forecast drops its row too
    assert mae([1.0, 2.0], [NAN, 4.0]) == pytest.approx(2.0)
    assert math.isnan(mae([NAN], [1.0]))
    assert math.isnan(rmse([], []))


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        mae([1.0, 2.0], [1.0])


def test_mape_in_percent_and_skips_zero_actuals():
    assert mape([100.0, 200.0, 0.0], [110.0, 180.0, 5.0]) == pytest.approx(10.0)
    assert math.isnan(mape([0.0], [1.0]))


def test_smape_hand_computed():
    # rows: 2*50/150, 0/0 -> 0, 2*2/2
    expected = 100 * (100 / 150 + 0.0 + 2.0) / 3
    assert smape([100.0, 0.0, 1.0], [50.0, 0.0, -1.0]) == pytest.approx(expected)
    assert smape([5.0], [5.0]) == 0.0
    assert smape([1.0], [-1.0]) == pytest.approx(200.0)


_FINITE_OR_NAN = st.one_of(st.floats(-1e100, 1e100), st.just(NAN))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            arrays(float, n, elements=_FINITE_OR_NAN),
            arrays(float, n, elements=_FINITE_OR_NAN),
        )
    )
)
def test_smape_is_between_0_and_200(pair):
    actual, forecast = pair
    value = smape(actual, forecast)
    usable = ~(np.isnan(actual) | np.isnan(forecast))
    if not usable.any():
        assert math.isnan(value)
    else:
        assert 0.0 <= value <= 200.0


def test_mase_divides_by_scale():
    assert mase([1.0, 2.0, 3.0], [2.0, 2.0, 5.0], 0.5) == pytest.approx(2.0)
    assert math.isnan(mase([1.0], [2.0], 0.0))
    assert math.isnan(mase([1.0], [2.0], NAN))


def test_directional_accuracy():
    actual = [11.0, 9.0, 10.0, 12.0]
    forecast = [10.5, 10.5, 11.0, 10.0]
    last = [10.0, 10.0, 10.0, 10.0]
    # row 3 (actual == last) is left out; row 1 hit, row 2 wrong way, row 4 calls no direction
    assert directional_accuracy(actual, forecast, last) == pytest.approx(1 / 3)
    assert math.isnan(directional_accuracy([10.0], [11.0], [10.0]))
    assert directional_accuracy([9.0, NAN], [8.0, 12.0], [10.0, 10.0]) == 1.0


def test_skill_sign():
    assert skill(0.8, 1.0) == pytest.approx(0.2)
    assert skill(1.2, 1.0) == pytest.approx(-0.2)
    assert skill(1.0, 1.0) == 0.0
    assert math.isnan(skill(1.0, 0.0))
    assert math.isnan(skill(NAN, 1.0))


# ---------------------------------------------------------------- Student t


@pytest.mark.parametrize(
    "t, dof, tail",
    [(2.0, 10, 0.036694), (1.0, 5, 0.181609), (2.228139, 10, 0.025), (1.812461, 10, 0.05)],
)
def test_t_tail_known_values(t, dof, tail):
    assert student_t_sf(t, dof) == pytest.approx(tail, abs=1e-6)
    assert student_t_cdf(-t, dof) == pytest.approx(tail, abs=1e-6)
    assert student_t_cdf(t, dof) == pytest.approx(1 - tail, abs=1e-6)


@pytest.mark.parametrize("t", [-30.0, -2.5, -0.3, 0.0, 0.7, 1.0, 4.0, 100.0])
def test_t_cdf_closed_forms(t):
    # dof = 1 is the Cauchy distribution, dof = 2 has an algebraic CDF
    assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(t * t + 2)), abs=1e-12)


def test_t_cdf_tends_to_normal_for_large_dof():
    normal = 0.5 * math.erfc(1.96 / math.sqrt(2))
    assert student_t_sf(1.96, 1e8) == pytest.approx(normal, abs=1e-8)
    # first-order correction of the t tail over the normal one: phi(x) (x^3 + x) / (4 dof)
    phi = math.exp(-(1.96**2) / 2) / math.sqrt(2 * math.pi)
    corrected = normal + phi * (1.96**3 + 1.96) / (4 * 1e4)
    assert student_t_sf(1.96, 1e4) == pytest.approx(corrected, abs=1e-8)
    assert student_t_sf(math.inf, 3) == 0.0
    assert math.isnan(student_t_sf(1.0, 0))


# ---------------------------------------------------------------- Diebold–Mariano


def test_dm_clearly_better_model_has_small_pvalue():
    rng = np.random.default_rng(1)
    bench = rng.normal(0, 1.0, 500)
    model = rng.normal(0, 0.6, 500)
    stat, p = diebold_mariano(model, bench)
    assert stat < 0
    assert p < 0.01


def test_dm_worse_model_has_large_pvalue():
    rng = np.random.default_rng(2)
    bench = rng.normal(0, 0.6, 500)
    model = rng.normal(0, 1.0, 500)
    stat, p = diebold_mariano(model, bench, h=3)
    assert stat > 0
    assert p > 0.9


def test_dm_equal_accuracy():
    # the loss differential averages exactly 0: statistic 0, p = 0.5
    stat, p = diebold_mariano([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert stat == pytest.approx(0.0, abs=1e-12)
    assert p == pytest.approx(0.5)
    # identical errors: zero variance, no test
    stat, p = diebold_mariano([1.0, -2.0, 3.0], [1.0, -2.0, 3.0])
    assert math.isnan(stat) and math.isnan(p)
    # too few rows
    assert all(math.isnan(v) for v in diebold_mariano([1.0, 2.0], [2.0, 1.0]))
    assert all(math.isnan(v) for v in diebold_mariano([1.0, 2.0, NAN], [2.0, 1.0, 3.0]))


def test_dm_hln_factor_hand_computed_n3():
    # d = [-1, 2, 1]: mean 2/3, g0 = 14/9, DM = (2/3) / sqrt(14/27), HLN factor sqrt(2/3)
    stat, p = diebold_mariano([1.0, 3.0, 2.0], [2.0, 1.0, 1.0])
    dm = (2 / 3) / math.sqrt(14 / 27)
    expected = dm * math.sqrt((3 + 1 - 2 + 0) / 3)
    assert stat == pytest.approx(expected, rel=1e-12)
    assert stat != pytest.approx(dm)
    # n - 1 = 2 degrees of freedom: closed-form CDF
    assert p == pytest.approx(0.5 + expected / (2 * math.sqrt(expected**2 + 2)), rel=1e-10)


def test_dm_h2_rectangular_kernel_hand_computed():
    # d = [1, 2, 3, -1, -2, 0]: mean 1/2, g0 = 17.5/6, g1 = 5.75/6, V = g0 + 2 g1 = 29/6,
    # DM = 0.5 / sqrt(V / 6), HLN factor sqrt((6 + 1 - 4 + 2/6) / 6) = sqrt(5/9)
    stat, _ = diebold_mariano([1, 2, 3, 0, 0, 0], [0, 0, 0, 1, 2, 0], h=2)
    assert stat == pytest.approx(math.sqrt(5 / 29), rel=1e-12)


def test_dm_falls_back_to_bartlett_when_rectangular_is_not_positive():
    # d = [1, -1, 2, 0, 3, -2]: g0 = 17.5/6, g1 = -11.25/6, rectangular V < 0;
    # Bartlett V = g0 + 2 * (1/2) * g1 = 6.25/6, DM = 0.5 / sqrt(V / 6) = 1.2, then HLN
    stat, p = diebold_mariano([2, 1, 3, 1, 4, 1], [1, 2, 1, 1, 1, 3], h=2)
    assert stat == pytest.approx(1.2 * math.sqrt(5 / 9), rel=1e-12)
    assert p == pytest.approx(student_t_cdf(stat, 5))
    assert 0.5 < p < 1.0


def test_dm_power_two_uses_squared_errors():
    stat1, _ = diebold_mariano([0.0, 2.0, 1.0], [1.0, 1.0, 1.0], power=1)
    stat2, _ = diebold_mariano([0.0, 2.0, 1.0], [1.0, 1.0, 1.0], power=2)
    # power 1: d = [-1, 1, 0] averages 0; power 2: d = [-1, 3, 0] averages 2/3
    assert stat1 == pytest.approx(0.0, abs=1e-12)
    assert stat2 > 0


def test_dm_rejects_bad_arguments():
    with pytest.raises(ValueError):
        diebold_mariano([1, 2, 3], [1, 2, 4], h=0)
    with pytest.raises(ValueError):
        diebold_mariano([1, 2, 3], [1, 2, 4], power=0)


# ---------------------------------------------------------------- intervals and quantiles


def test_coverage_and_width():
    assert coverage([1, 2, 3, 4], [0, 2.5, 3, 5], [2, 3, 3, 6]) == pytest.approx(0.5)
    assert coverage([1, NAN], [0, 0], [2, 2]) == 1.0
    assert width([0, 1], [2, 4]) == pytest.approx(2.5)
    assert math.isnan(width([NAN], [1.0]))


def test_pinball_hand_computed():
    actual = [1.0, 3.0]
    # level 0.1 at 2: losses 0.9, 0.1 -> 0.5; level 0.9 at 0: losses 0.9, 2.7 -> 1.8
    value = pinball(actual, {0.1: [2.0, 2.0], 0.9: [0.0, 0.0]})
    assert value == pytest.approx((0.5 + 1.8) / 2)
    assert pinball([2.0], {0.5: [2.0]}) == 0.0
    with pytest.raises(ValueError):
        pinball(actual, {1.5: [1.0, 1.0]})


def test_lag_share():
    x = np.array([-2.0, -1.0, 0.5, 1.0, 3.0])
    slope, r2 = lag_share(2 * x + 1, x)
    assert slope == pytest.approx(2.0)
    assert r2 == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    y = 0.3 * x + rng.normal(size=200)
    slope, r2 = lag_share(y, x)
    assert slope == pytest.approx(np.polyfit(x, y, 1)[0])
    assert r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)
    assert all(math.isnan(v) for v in lag_share([1.0, 2.0], [1.0, 1.0]))
    slope, r2 = lag_share([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert slope == 0.0 and math.isnan(r2)


# ---------------------------------------------------------------- metrics_table


def _small_pred() -> pd.DataFrame:
    rows = [
        # ticker, origin, step, actual, last, p10, p50, p90, naive, drift, mean
        ("AAA", 0, 1, 10.0, 11.0, 9.0, 10.5, 12.0, 11.0, 11.2, 10.9),
        ("AAA", 1, 1, 12.0, 11.0, 10.0, 11.5, 11.8, 11.0, 11.2, 10.9),
        ("BBB", 0, 1, 20.0, 21.0, 19.0, 21.0, 23.0, 21.0, 21.5, 20.5),
        ("BBB", 1, 1, 22.0, 21.0, 18.0, 19.0, 20.0, 21.0, 21.5, 20.5),
    ]
    cols = ["ticker", "origin", "step", "actual", "last_close", "p10", "p50", "p90"]
    frame = pd.DataFrame(rows, columns=[*cols, "naive", "drift", "mean"])
    frame["date"] = pd.Timestamp("2024-01-02")
    return frame


def test_metrics_table_hand_computed():
    table = metrics_table(_small_pred(), "lstm", {"AAA": 1.0, "BBB": 2.0})
    assert list(table.columns) == list(METRIC_COLUMNS)
    assert list(table["ticker"]) == ["AAA"] * 4 + ["BBB"] * 4 + ["ALL"] * 4
    assert list(table["model"]) == ["lstm", "naive", "drift", "mean"] * 3
    by = table.set_index(["ticker", "model"])

    aaa = by.loc[("AAA", "lstm")]
    assert aaa["n"] == 2
    assert aaa["mae"] == pytest.approx(0.5)
    assert aaa["mase"] == pytest.approx(0.5)
    assert aaa["skill"] == pytest.approx(0.5)  # naive MAE is 1
    assert aaa["directional_accuracy"] == pytest.approx(1.0)
    assert aaa["coverage"] == pytest.approx(0.5)  # 12 is above p90 = 11.8
    assert aaa["width"] == pytest.approx((3.0 + 1.8) / 2)
    assert math.isnan(aaa["dm_pvalue"])  # two rows are too few

    bbb = by.loc[("BBB", "lstm")]
    assert bbb["mae"] == pytest.approx(2.0)  # errors 1 and 3
    assert bbb["mase"] == pytest.approx(1.0)
    assert bbb["skill"] == pytest.approx(-1.0)
    assert bbb["directional_accuracy"] == 0.0  # one flat call, one wrong way

    pooled = by.loc[("ALL", "lstm")]
    assert pooled["n"] == 4
    assert pooled["mae"] == pytest.approx(1.25)
    # each row scaled by its own ticker's scale: 0.5, 0.5, 0.5, 1.5
    assert pooled["mase"] == pytest.approx(0.75)
    assert pooled["skill"] == pytest.approx(1 - 1.25 / 1.0)
    assert pooled["coverage"] == pytest.approx(0.5)
    assert pinball(
        [10, 12, 20, 22], {0.1: [9, 10, 19, 18], 0.5: [10.5, 11.5, 21, 19], 0.9: [12, 11.8, 23, 20]}
    ) == pytest.approx(pooled["pinball"])

    naive_rows = table[table["model"] == "naive"]
    assert naive_rows["skill"].isna().all()
    assert naive_rows["dm_pvalue"].isna().all()
    assert naive_rows["directional_accuracy"].isna().all()
    baselines = table[table["model"] != "lstm"]
    assert baselines[["coverage", "width", "pinball"]].isna().all().all()
    drift = by.loc[("AAA", "drift")]
    assert drift["mae"] == pytest.approx((1.2 + 0.8) / 2)
    assert drift["skill"] == pytest.approx(0.0)


def test_metrics_table_missing_scale_gives_nan_mase():
    table = metrics_table(_small_pred(), "gru", {"AAA": 1.0})
    by = table.set_index(["ticker", "model"])
    assert by.loc[("AAA", "gru"), "mase"] == pytest.approx(0.5)
    assert math.isnan(by.loc[("BBB", "gru"), "mase"])
    assert math.isnan(by.loc[("ALL", "gru"), "mase"])


def test_metrics_table_missing_column_is_an_error():
    with pytest.raises(ValueError, match="drift"):
        metrics_table(_small_pred().drop(columns="drift"), "gru", {})


def _walk_forward_pred(noise: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for ticker in ["ZZZ", "AAA"]:
        for step in (1, 2):
            n = 120
            last = 100 + rng.normal(0, 1, n).cumsum()
            actual = last + rng.normal(0, 2 * step, n)
            p50 = actual + rng.normal(0, noise * step, n)
            frames.append(
                pd.DataFrame(
                    {
                        "ticker": ticker,
                        "origin": np.arange(n),
                        "step": step,
                        "date": pd.Timestamp("2024-01-01"),
                        "actual": actual,
                        "last_close": last,
                        "p10": p50 - 2,
                        "p50": p50,
                        "p90": p50 + 2,
                        "naive": last,
                        "drift": last + 0.01,
                        "mean": last - 0.01,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=0)


def test_metrics_table_sorting_and_skill_sign():
    good = metrics_table(_walk_forward_pred(noise=0.5), "rnn", {"AAA": 1.0, "ZZZ": 1.0})
    assert len(good) == 3 * 4 * 2
    assert list(good["ticker"].drop_duplicates()) == ["AAA", "ZZZ", "ALL"]
    first = good[good["ticker"] == "AAA"]
    assert list(zip(first["model"], first["step"], strict=True)) == [
        ("rnn", 1), ("rnn", 2), ("naive", 1), ("naive", 2),
        ("drift", 1), ("drift", 2), ("mean", 1), ("mean", 2),
    ]  # fmt: skip
    model_rows = good[good["model"] == "rnn"]
    assert (model_rows["skill"] > 0).all()
    assert (model_rows["dm_pvalue"] < 0.01).all()
    assert (good.loc[good["ticker"] == "ALL", "n"] == 240).all()
    assert good["n"].dtype.kind == "i" and good["step"].dtype.kind == "i"

    bad = metrics_table(_walk_forward_pred(noise=6.0), "rnn", {"AAA": 1.0, "ZZZ": 1.0})
    model_rows = bad[bad["model"] == "rnn"]
    assert (model_rows["skill"] < 0).all()
    assert (model_rows["dm_pvalue"] > 0.9).all()


def test_metrics_table_ignores_rows_without_actual():
    pred = _small_pred()
    pred.loc[0, "actual"] = NAN
    table = metrics_table(pred, "lstm", {"AAA": 1.0, "BBB": 2.0})
    by = table.set_index(["ticker", "model"])
    assert by.loc[("AAA", "lstm"), "n"] == 1
    assert by.loc[("AAA", "lstm"), "mae"] == pytest.approx(0.5)
    assert by.loc[("ALL", "naive"), "n"] == 3


def test_metrics_table_empty_predictions():
    empty = _small_pred().iloc[0:0]
    table = metrics_table(empty, "lstm", {})
    assert list(table.columns) == list(METRIC_COLUMNS)
    assert table.empty
