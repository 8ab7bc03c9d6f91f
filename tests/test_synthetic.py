"""Synthetic OHLCV bars (forecaster.synthetic) and the shipped sample made from them."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecaster.sessions import sessions_in_range
from forecaster.synthetic import (
    MIN_SESSIONS,
    SAMPLE,
    Dynamics,
    generate_bars,
    generate_universe,
    main,
    write_csv,
    write_sample,
)

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
LONG = ("2000-01-03", "2025-12-31")  # about 6,500 sessions


def log_returns(df: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(df["close"].to_numpy()))


def autocorr(x: np.ndarray, lag: int = 1) -> float:
    return float(np.corrcoef(x[:-lag], x[lag:])[0, 1])


def kurtosis(x: np.ndarray) -> float:
    """Pearson kurtosis (3 for a Gaussian)."""
    d = x - x.mean()
    return float(np.mean(d**4) / np.mean(d**2) ** 2)


def assert_valid_bars(df: pd.DataFrame) -> None:
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert (df.dtypes == np.float64).all()
    assert isinstance(df.index, pd.DatetimeIndex)
    assert df.index.name == "date"
    assert df.index.dtype == "datetime64[ns]"
    assert df.index.tz is None
    assert df.index.is_monotonic_increasing and df.index.is_unique
    values = df.to_numpy()
    assert np.isfinite(values).all()
    o, h, lo, c, v = (df[k].to_numpy() for k in ["open", "high", "low", "close", "volume"])
    assert (lo > 0).all()
    assert (h >= np.maximum(o, c)).all()
    assert (lo <= np.minimum(o, c)).all()
    assert (v >= 0).all()
    assert (v == np.round(v)).all()
    for col in ["open", "high", "low", "close"]:
        np.testing.assert_array_equal(df[col].to_numpy(), np.round(df[col].to_numpy(), 4))


@pytest.fixture(scope="module")
def default_long() -> pd.DataFrame:
    return generate_bars(*LONG, seed=7)


# --- generate_bars --------------------------------------------------------------------------


def test_same_seed_same_frame_and_different_seed_differs():
    a = generate_bars("2015-01-01", "2018-12-31", seed=11)
    b = generate_bars("2015-01-01", "2018-12-31", seed=11)
    c = generate_bars("2015-01-01", "2018-12-31", seed=12)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert a.index.equals(c.index)
    assert not np.allclose(a["close"].to_numpy(), c["close"].to_numpy())
    assert not np.allclose(a["volume"].to_numpy(), c["volume"].to_numpy())


def test_bars_are_consistent_and_on_sessions(default_long):
    assert_valid_bars(default_long)
    assert default_long.index.equals(sessions_in_range(*LONG))
    assert default_long.index[0] == pd.Timestamp("2000-01-03")


@pytest.mark.parametrize("dyn", [Dynamics.random_walk(), Dynamics.ar1(0.3), Dynamics()])
def test_presets_give_valid_bars(dyn):
    df = generate_bars("2019-01-01", "2020-12-31", seed=3, dynamics=dyn, start_price=25.0)
    assert_valid_bars(df)
    # The first bar starts from start_price: its open is within a few percent of it.
    assert abs(df["open"].iloc[0] / 25.0 - 1) < 0.05


def test_skips_holidays_and_weekends():
    df = generate_bars("2025-12-20", "2026-01-06", seed=0)
    assert pd.Timestamp("2025-12-25") not in df.index
    assert pd.Timestamp("2026-01-01") not in df.index
    assert (df.index.day_of_week < 5).all()
    assert df.index.equals(sessions_in_range("2025-12-20", "2026-01-06"))


def test_fat_tails(default_long):
    assert kurtosis(log_returns(default_long)) > 4.0
    # The Student-t shocks alone (constant volatility) already have fat tails: t(6) has
    # kurtosis 6.
    t_only = Dynamics(alpha=0.0, beta=0.0, omega=0.015**2)
    assert t_only.t_dof == 6.0
    assert kurtosis(log_returns(generate_bars(*LONG, seed=7, dynamics=t_only))) > 4.3
    # A Gaussian random walk has kurtosis near 3, for contrast.
    rw = generate_bars(*LONG, seed=7, dynamics=Dynamics.random_walk())
    assert abs(kurtosis(log_returns(rw)) - 3.0) < 0.4


def test_volatility_clustering(default_long):
    r = log_returns(default_long)
    assert autocorr(np.abs(r)) > 0.08
    assert autocorr(r**2, 5) > 0.03
    rw = generate_bars(*LONG, seed=7, dynamics=Dynamics.random_walk())
    assert abs(autocorr(np.abs(log_returns(rw)))) < 0.05


def test_volume_rises_with_absolute_returns(default_long):
    r = log_returns(default_long)
    log_volume = np.log(default_long["volume"].to_numpy()[1:])
    assert np.corrcoef(np.abs(r), log_volume)[0, 1] > 0.2
    # Big-move days trade more than quiet days.
    big = np.abs(r) > np.quantile(np.abs(r), 0.9)
    quiet = np.abs(r) < np.quantile(np.abs(r), 0.5)
    assert np.median(np.exp(log_volume[big])) > 1.3 * np.median(np.exp(log_volume[quiet]))


def test_random_walk_has_no_lag1_autocorrelation():
    r = log_returns(generate_bars(*LONG, seed=21, dynamics=Dynamics.random_walk()))
    assert abs(autocorr(r)) < 0.04  # ~3 standard errors over 6,500 returns


def test_ar1_has_lag1_autocorrelation_near_phi():
    r = log_returns(generate_bars(*LONG, seed=21, dynamics=Dynamics.ar1(0.3)))
    assert abs(autocorr(r) - 0.3) < 0.04


def test_default_dynamics_are_modestly_predictable():
    # Pooled over a small universe the lag-1 autocorrelation is close to the AR coefficient.
    universe = generate_universe(12, 8, seed=5)
    r = np.concatenate([log_returns(df) for df in universe.values()])
    pooled = np.mean([autocorr(log_returns(df)) for df in universe.values()])
    assert 0.14 < pooled < 0.26
    assert len(r) > 12 * MIN_SESSIONS


def test_default_dynamics_values():
    d = Dynamics()
    assert d.ar == pytest.approx(0.2)
    assert d.t_dof == 6.0
    assert d.alpha + d.beta < 1
    assert d.sigma == pytest.approx(0.015)


def test_presets():
    rw = Dynamics.random_walk()
    assert rw.ar == 0 and rw.alpha == 0 and rw.beta == 0 and rw.t_dof is None
    ar = Dynamics.ar1(0.25)
    assert ar.ar == 0.25 and ar.alpha == 0 and ar.beta == 0 and ar.t_dof is None
    assert Dynamics.ar1().ar == 0.3
    assert rw.sigma == pytest.approx(0.015) and ar.sigma == pytest.approx(0.015)


def test_dynamics_is_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Dynamics().ar = 0.5  # type: ignore[misc]
    with pytest.raises(ValueError, match="alpha"):
        Dynamics(alpha=0.2, beta=0.85)
    with pytest.raises(ValueError, match="ar"):
        Dynamics(ar=1.0)
    with pytest.raises(ValueError, match="t_dof"):
        Dynamics(t_dof=2.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("t_dof", math.inf),
        ("t_dof", math.nan),
        ("volume_beta", math.nan),
        ("volume_beta", math.inf),
        ("volume_noise", math.inf),
        ("gap_scale", math.inf),
        ("range_scale", math.nan),
    ],
)
def test_dynamics_that_would_make_nan_or_infinite_bars_are_refused(field, value):
    """Before, these gave bars of NaN (or infinite volumes) without a word."""
    said = "gap/range scales" if field.endswith("_scale") else field
    with pytest.raises(ValueError, match=f"Dynamics: {said} must be"):
        Dynamics(**{field: value})


def test_write_csv_refuses_a_volume_that_no_64_bit_integer_holds(tmp_path):
    df = generate_bars("2024-01-01", "2024-01-31", seed=4)
    df["volume"] = 1e19  # written as -9223372036854775808 before
    with pytest.raises(ValueError, match="volume must be below"):
        write_csv(df, tmp_path / "X.csv")
    assert not (tmp_path / "X.csv").exists()
    df["volume"] = 2.0**62
    assert write_csv(df, tmp_path / "X.csv").read_text().splitlines()[1].endswith(",4611686018427387904")


def test_generate_bars_rejects_bad_arguments():
    with pytest.raises(ValueError):
        generate_bars("2025-12-27", "2025-12-28", seed=0)  # a weekend: no sessions
    with pytest.raises(ValueError):
        generate_bars("2025-01-01", "2025-02-01", seed=0, start_price=0.0)


# --- CSV and the shipped sample -------------------------------------------------------------


def test_write_csv_format_and_round_trip(tmp_path):
    df = generate_bars("2024-01-01", "2024-03-31", seed=4)
    path = write_csv(df, tmp_path / "X.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "Date,Open,High,Low,Close,Volume"
    assert len(lines) == len(df) + 1
    first = lines[1].split(",")
    assert first[0] == "2024-01-02"
    assert all(len(x.split(".")[1]) == 4 for x in first[1:5])
    assert first[5].isdigit()
    back = pd.read_csv(path, index_col="Date", parse_dates=["Date"])
    back.index = back.index.astype("datetime64[ns]").rename("date")
    back.columns = [c.lower() for c in back.columns]
    pd.testing.assert_frame_equal(back.astype(np.float64), df, check_exact=True)
    again = write_csv(df, tmp_path / "Y.csv")
    assert again.read_bytes() == path.read_bytes()


def test_shipped_sample_matches_generator(tmp_path):
    written = write_sample(tmp_path)
    assert [p.name for p in written] == ["STOCKA.csv", "STOCKB.csv"]
    for p in written:
        shipped = SAMPLE_DIR / p.name
        assert shipped.is_file(), f"missing {shipped}"
        assert shipped.read_bytes() == p.read_bytes(), f"{p.name} differs from write_sample()"


@pytest.mark.parametrize(("ticker", "first", "last", "seed"), SAMPLE)
def test_shipped_sample_dates(ticker, first, last, seed):
    df = pd.read_csv(SAMPLE_DIR / f"{ticker}.csv")
    assert list(df.columns) == ["Date", "Open", "High", "Low", "Close", "Volume"]
    dates = pd.DatetimeIndex(pd.to_datetime(df["Date"]))
    assert dates[0] == pd.Timestamp(first)
    assert dates[-1] == pd.Timestamp("2025-12-31")
    assert last == "2025-12-31"
    assert dates.equals(sessions_in_range(first, last))
    assert (df["Low"] <= df[["Open", "Close"]].min(axis=1)).all()
    assert (df["High"] >= df[["Open", "Close"]].max(axis=1)).all()
    assert (df[["Open", "High", "Low", "Close"]] > 0).all().all()


def test_sample_dates_are_the_documented_ones():
    assert SAMPLE == (
        ("STOCKA", "2012-01-03", "2025-12-31", 1),
        ("STOCKB", "2020-01-02", "2025-12-31", 2),
    )


def test_main_regenerates_sample_and_writes_universe(tmp_path, capsys):
    assert main([str(tmp_path / "sample")]) == 0
    for name in ["STOCKA.csv", "STOCKB.csv"]:
        assert (tmp_path / "sample" / name).read_bytes() == (SAMPLE_DIR / name).read_bytes()
    assert main([str(tmp_path / "uni"), "--universe", "3", "--years", "2", "--seed", "9"]) == 0
    files = sorted(p.name for p in (tmp_path / "uni").iterdir())
    assert files == ["SYN0000.csv", "SYN0001.csv", "SYN0002.csv"]
    assert "STOCKA.csv" in capsys.readouterr().out


# --- generate_universe ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def universe() -> dict[str, pd.DataFrame]:
    return generate_universe(20, 3, seed=1)


def test_universe_names_and_shapes(universe):
    assert list(universe) == [f"SYN{i:04d}" for i in range(20)]
    full = sessions_in_range("2023-01-01", "2025-12-31")
    assert universe["SYN0000"].index.equals(full)
    for df in universe.values():
        assert_valid_bars(df)
        assert len(df) >= MIN_SESSIONS
        assert df.index[-1] == pd.Timestamp("2025-12-31")
        assert df.index.equals(full[full.get_loc(df.index[0]) :])


def test_universe_has_different_start_dates(universe):
    starts = {df.index[0] for df in universe.values()}
    lengths = [len(df) for df in universe.values()]
    assert len(starts) >= 5
    assert max(lengths) == len(sessions_in_range("2023-01-01", "2025-12-31"))
    assert sum(n == max(lengths) for n in lengths) >= 3  # some span the full history
    assert min(lengths) < max(lengths) - 100  # others were listed much later


def test_universe_tickers_differ_and_are_deterministic(universe):
    a, b = universe["SYN0000"], universe["SYN0001"]
    common = a.index.intersection(b.index)
    assert not np.allclose(a.loc[common, "close"], b.loc[common, "close"])
    again = generate_universe(20, 3, seed=1)
    for name in universe:
        pd.testing.assert_frame_equal(universe[name], again[name], check_exact=True)
    other = generate_universe(20, 3, seed=2)
    assert not universe["SYN0000"].equals(other["SYN0000"])


def test_universe_prefix_does_not_depend_on_size(universe):
    small = generate_universe(4, 3, seed=1)
    assert list(small) == ["SYN0000", "SYN0001", "SYN0002", "SYN0003"]
    for name, df in small.items():
        pd.testing.assert_frame_equal(df, universe[name], check_exact=True)


def test_universe_rejects_too_short_history():
    with pytest.raises(ValueError, match="300"):
        generate_universe(3, 1, seed=0)
    with pytest.raises(ValueError):
        generate_universe(0, 5, seed=0)


PANDAS_3 = int(pd.__version__.split(".")[0]) >= 3


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--universe", "2", "--years", "inf"], "--years must be more than 0"),
        (["--universe", "2", "--years", "1e6"], "--years must be more than 0"),
        (["--years", "3"], "--years only applies with --universe"),
        (["--seed", "5", "--end", "2020-01-01"], "--seed, --end only apply with --universe"),
        # the New York calendar of exchange_calendars trades on Christmas Day before 1970
        (["--universe", "2", "--years", "60"], "start before 1970, where the New York calendar holds no holidays"),
        # its own error message failed: a year before 1 has no Python date (pandas 3 reads
        # "-1" as the year -1; pandas 2 reads no date in it)
        (
            ["--universe", "1", "--end=-1"],
            "10.0 years up to -001-01-01 start before 1970" if PANDAS_3 else "--end '-1' is not a date",
        ),
        (["--universe", "10001"], "--universe must be from 1 to 10,000"),
        (["--universe", "2", "--seed", "-1"], "--seed must be a non-negative integer"),
        (["--universe", "2", "--end", "2300-01-01"], "is after today"),
        (["--universe", "2", "--end", "soon"], "is not a date"),
    ],
)
def test_cli_refuses_what_it_cannot_write_in_one_line(tmp_path, capsys, args, said):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "out"), *args])
    assert exc.value.code == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_universe_larger_than_the_machine_can_hold(tmp_path, capsys, monkeypatch):
    """10,000 tickers of 55 years: a MemoryError traceback after minutes of work."""
    import forecaster.synthetic as synthetic

    monkeypatch.setattr(synthetic, "_memory", lambda: 8 * 2**30)  # whatever this machine has
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "out"), "--universe", "10000", "--years", "55"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "10,000 tickers of 13,8" in err and "more than half this machine's memory (8.0 GiB)" in err
    assert not (tmp_path / "out").exists()


def test_cli_warns_of_files_of_another_universe_left_in_the_folder(tmp_path, capsys):
    """A smaller universe written where a larger one was: the folder mixed the two silently."""
    out = tmp_path / "u"
    assert main([str(out), "--universe", "3", "--years", "2"]) == 0
    assert "another universe" not in capsys.readouterr().err
    assert main([str(out), "--universe", "2", "--years", "2"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {out} also holds SYN0002.csv of another universe" in err


def test_cli_refuses_an_empty_folder_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([""])
    assert exc.value.code == 2 and 'OUT_DIR "" names no folder' in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_says_in_one_line_when_the_folder_cannot_be_written(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main([str(tmp_path / "file")]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot write into {tmp_path / 'file'}:")


def test_written_files_have_the_usual_mode_or_the_one_they_replace(tmp_path):
    old = os.umask(0o022)
    try:
        paths = write_sample(tmp_path)
        assert {p.stat().st_mode & 0o777 for p in paths} == {0o644}
        paths[0].chmod(0o640)
        write_sample(tmp_path)
        assert paths[0].stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_universe_names_keep_four_digits():
    assert list(generate_universe(3, 2, seed=0)) == ["SYN0000", "SYN0001", "SYN0002"]
    with pytest.raises(ValueError, match="from 1 to 10,000"):
        generate_universe(10_001, 2, seed=0)
