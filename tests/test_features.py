import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.features import FEATURES, Scaler, make_arrays, target_scale


def bars(n=30, seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    idx = pd.bdate_range("2024-01-01", periods=n, name="date")
    return pd.DataFrame(
        {
            "open": close * 1.001,
            "high": close * 1.02,
            "low": close * 0.98,
            "close": close,
            "volume": rng.integers(1000, 5000, n).astype(float),
        },
        index=idx,
    )


def test_features_use_only_the_past_and_present():
    df = bars()
    a = make_arrays(df)
    assert a.features.shape == (len(df) - 1, len(FEATURES))
    np.testing.assert_allclose(a.features[:, 0], np.diff(np.log(df["close"])))
    np.testing.assert_allclose(a.features[:, 1], np.log(1.02 / 0.98))
    # changing a future bar never changes an earlier feature row
    df2 = df.copy()
    df2.iloc[20, df2.columns.get_loc("close")] *= 1.5
    b = make_arrays(df2)
    np.testing.assert_array_equal(a.features[:19], b.features[:19])


def test_day_of_week_features_distinguish_weekdays():
    a = make_arrays(bars(11))
    dows = {tuple(np.round(r, 6)) for r in a.features[:, 4:6]}
    assert len(dows) == 5


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.integers(10, 200))
def test_scaler_round_trip(seed, n):
    a = make_arrays(bars(n, seed))
    sc = Scaler.fit(a.features)
    z = sc.transform(a.features)
    back = z[:, :4] * np.asarray(sc.std) + np.asarray(sc.mean)  # standardised, nothing lost
    np.testing.assert_allclose(back, a.features[:, :4], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(z[:, 4:], a.features[:, 4:].astype(np.float32))  # calendar: as it is
    z = sc.transform(a.features)[:, :4]
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
    assert Scaler.from_dict(sc.to_dict()) == sc


def test_scaler_constant_column_does_not_divide_by_zero():
    f = np.ones((10, len(FEATURES)))
    sc = Scaler.fit(f)
    assert np.isfinite(sc.transform(f)).all()


def test_target_scale_grows_like_sqrt_h():
    np.testing.assert_allclose(target_scale(0.02, 4), 0.02 * np.sqrt([1, 2, 3, 4]))


def test_zero_volume_is_finite():
    df = bars()
    df["volume"] = 0.0
    assert np.isfinite(make_arrays(df).features).all()


@pytest.mark.parametrize("n", [2, 3])
def test_tiny_frames(n):
    assert make_arrays(bars(n)).features.shape == (n - 1, len(FEATURES))
