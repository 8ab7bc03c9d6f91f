import functools
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import ROOT
from yf_fixtures import FakeYahoo, make_bars

import forecaster
from forecaster import sources, store
from forecaster.errors import ConfigError, DataError, LockBusy, NetworkError, ServerError, TickerError
from forecaster.sources import PlainBars
from forecaster.store import DownloadReport, FailureKind, UpdateResult

# the folder holding the package under test (the checkout, or site-packages where it is installed):
# a subprocess given it as PYTHONPATH imports the same forecaster
PACKAGE_PARENT = Path(next(iter(forecaster.__path__))).resolve().parent


pytestmark = pytest.mark.usefixtures("offline_yfinance")


def no_sleep(seconds: float) -> None:
    pass


def yahoo_fetch(yahoo: FakeYahoo):
    """The real retrying Yahoo fetch through the fake, without waiting between tries."""
    return functools.partial(sources.fetch_with_retry, session=yahoo.session(), sleep=no_sleep)


# --------------------------------------------------------------------------- validate_bars


def test_validate_repairs_order_duplicates_and_nan_rows_with_warnings(caplog):
    bars = make_bars("2024-01-02", 6)
    messy = pd.concat([bars.iloc[3:], bars.iloc[:3], bars.iloc[[1]] * 1.01])
    messy.iloc[0, messy.columns.get_loc("close")] = np.nan  # 2024-01-05 loses its close
    messy.iloc[1, messy.columns.get_loc("volume")] = np.nan
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        out = store.validate_bars(messy, "AAA")
    assert out.index.is_monotonic_increasing and out.index.is_unique
    assert len(out) == 5 and pd.Timestamp("2024-01-05") not in out.index
    assert out.loc["2024-01-03", "close"] == pytest.approx(bars.loc["2024-01-03", "close"] * 1.01)
    assert out.index[3] == pd.Timestamp("2024-01-08")
    assert out["volume"].iloc[3] == bars.loc["2024-01-04", "volume"]  # the last known one, not 0
    text = caplog.text
    assert "AAA: dropped 1 row(s) with a missing date or price (an adjusted close too) (2024-01-05)" in text
    assert "sorted 6 rows" in text
    assert "dropped 1 row(s) with a duplicate date" in text
    assert (
        "AAA: 1 row(s) without a volume (2024-01-08) take the volume of the bar before them (the first known "
        "one before any), so their volume change reads 0"
    ) in text


def test_a_csv_without_a_volume_column_is_read_with_zero_volume_and_a_note(tmp_path, caplog):
    """An index's or an exchange rate's file often has no volume: its bars are read, with a
    volume of 0 on every row and one note saying so (not a warning: a cron job's --quiet
    output stays empty); the prices are those of the file."""
    bars = make_bars("2024-01-02", 30)
    prices = bars.drop(columns="volume").rename_axis("Date")
    prices.to_csv(tmp_path / "IDX.csv", date_format="%Y-%m-%d")
    with caplog.at_level(logging.INFO, logger="forecaster"):
        got = store.load_csv(tmp_path, "IDX")
    assert (got["volume"] == 0.0).all() and len(got) == 30
    np.testing.assert_allclose(got[["open", "high", "low", "close"]].to_numpy(), prices.to_numpy(), rtol=1e-15)
    assert [r.getMessage() for r in caplog.records] == [
        "IDX: no volume: set to 0 on all 30 rows (its volume feature is flat)"
    ]


def test_validate_clean_frame_passes_silently(caplog):
    bars = make_bars("2024-01-02", 10)
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        out = store.validate_bars(bars, "AAA")
    pd.testing.assert_frame_equal(out, bars, check_freq=False)
    assert caplog.text == ""


def test_validate_normalises_tz_aware_index():
    bars = make_bars("2024-01-02", 3)
    bars.index = bars.index.tz_localize("Asia/Tokyo")
    out = store.validate_bars(bars, "AAA")
    assert out.index.tz is None and out.index[0] == pd.Timestamp("2024-01-02")


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("close", -1.0, "close -1 on 2024-01-04 is not a finite positive price"),
        ("open", 0.0, "open 0 on 2024-01-04 is not a finite positive price"),
        ("high", np.inf, "high inf on 2024-01-04 is not a finite positive price"),
        ("volume", -5.0, "volume -5 on 2024-01-04 is not a finite non-negative volume"),
        ("low", 1000.0, "high"),  # low above high
        ("close", 150.0, "close 150 on 2024-01-04 is outside the day's low-high range"),
    ],
)
def test_validate_errors_name_ticker_date_and_column(column, value, expected):
    bars = make_bars("2024-01-02", 5)
    bars.loc["2024-01-04", column] = value
    with pytest.raises(DataError) as info:
        store.validate_bars(bars, "AAA")
    message = str(info.value)
    assert message.startswith("AAA: ") and expected in message and "2024-01-04" in message


def test_validate_high_below_low():
    bars = make_bars("2024-01-02", 5)
    bars.loc["2024-01-03", ["high", "low"]] = [90.0, 110.0]
    bars.loc["2024-01-03", "close"] = 100.0
    with pytest.raises(DataError, match="AAA: high 90 on 2024-01-03 is below the low"):
        store.validate_bars(bars, "AAA")


def test_validate_close_slightly_outside_range_is_tolerated():
    bars = make_bars("2024-01-02", 5)
    bars.loc["2024-01-03", "close"] = bars.loc["2024-01-03", "high"] * 1.005
    store.validate_bars(bars, "AAA")


def test_validate_absurd_one_day_move():
    bars = make_bars("2024-01-02", 5)
    bars.loc["2024-01-05", ["open", "high", "low", "close"]] *= 25
    with pytest.raises(DataError, match="close .* on 2024-01-05 is more than 20x away") as caught:
        store.validate_bars(bars, "AAA")
    # most often a split the prices are not adjusted for: the error says which, and what to do
    before, after = bars["close"].iloc[2], bars["close"].iloc[3]
    assert str(caught.value) == (
        f"AAA: close {after:g} on 2024-01-05 is more than 20x away from the previous close ({before:g} -> "
        f"{after:g}: 25x, as at a 1-for-25 split); not adjusted for a split? Give prices adjusted for splits "
        "(an 'Adj Close' column is applied to the others when the file has one)"
    )
    bars.loc["2024-01-05", ["open", "high", "low", "close"]] *= 1.4  # 35x: no split's ratio
    with pytest.raises(DataError, match=r"previous close \([0-9.]+ -> [0-9.]+\); not adjusted for a split\?"):
        store.validate_bars(bars, "AAA")


def test_validate_a_close_that_collapses_to_under_a_twentieth_is_refused_as_a_jump_up_is():
    """A close of 4 the day after one of 100 (a 25-for-1 split the prices are not adjusted for,
    or a mistyped price) is refused with the same clear error as a 25x jump up, naming the day
    and both closes; it must not reach the features as a -97 % return."""
    bars = make_bars("2024-01-02", 5)
    bars[["open", "high", "low", "close"]] = 100.0
    bars.loc[bars.index >= "2024-01-04", ["open", "high", "low", "close"]] = 4.0  # stays there
    with pytest.raises(DataError) as caught:
        store.validate_bars(bars, "AAA")
    assert str(caught.value) == (
        "AAA: close 4 on 2024-01-04 is more than 20x away from the previous close (100 -> 4: 1/25 of the close "
        "before, as at a 25-for-1 split); not adjusted for a split? Give prices adjusted for splits "
        "(an 'Adj Close' column is applied to the others when the file has one)"
    )
    bars.loc[bars.index >= "2024-01-04", ["open", "high", "low", "close"]] = 5.0  # 1/20: a fall the market makes
    assert store.validate_bars(bars, "AAA")["close"].iloc[-1] == 5.0


def test_validate_empty_and_all_nan_are_errors():
    with pytest.raises(DataError, match="AAA: no usable bars"):
        store.validate_bars(sources.empty_bars(), "AAA")
    bars = make_bars("2024-01-02", 3)
    bars["close"] = np.nan
    with pytest.raises(DataError, match="no usable bars"):
        store.validate_bars(bars, "AAA")


def test_validate_missing_column():
    with pytest.raises(DataError, match="missing column"):
        store.validate_bars(make_bars("2024-01-02", 3).drop(columns="volume"), "AAA")


def plain(df: pd.DataFrame) -> PlainBars:
    return PlainBars(df.index.to_numpy(), [df[c].to_numpy() for c in sources.COLUMNS])


def test_validate_plain_arrays_like_the_frame(caplog):
    bars = make_bars("2024-01-02", 8)
    messy = pd.concat([bars.iloc[4:], bars.iloc[:4]])
    messy.iloc[2, messy.columns.get_loc("volume")] = np.nan
    for df in (bars, messy):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="forecaster"):
            from_frame = store.validate_bars(df, "AAA")
            frame_warnings = list(caplog.messages)
            caplog.clear()
            from_arrays = store.validate_bars(plain(df), "AAA")
        pd.testing.assert_frame_equal(from_arrays, from_frame)
        assert caplog.messages == frame_warnings
    assert len(frame_warnings) == 2  # sorted, and a volume set to 0
    bad = bars.copy()
    bad.iloc[5, bad.columns.get_loc("low")] = -2.0
    with pytest.raises(DataError, match=r"^AAA: low -2 on 2024-01-09 is not a finite positive price$"):
        store.validate_bars(plain(bad), "AAA")


# --------------------------------------------------------------------------- merge / files


def test_merge_new_rows_win_and_revision_detection():
    old = make_bars("2024-01-02", 10)
    new = make_bars("2024-01-02", 14).iloc[7:].copy()  # overlaps the last 3 stored days
    merged, revised = store.merge_bars(old, new)
    assert not revised
    assert len(merged) == 14 and merged.index.is_unique and merged.index.is_monotonic_increasing
    new.loc[new.index[0], "volume"] += 1  # volume updates are not a revision...
    assert not store.merge_bars(old, new)[1]
    new["close"] *= 1 + 1e-7  # ...nor closes within rtol
    assert not store.merge_bars(old, new)[1]
    new["close"] *= 0.98  # a re-adjusted history is
    merged, revised = store.merge_bars(old, new)
    assert revised
    assert merged.loc[new.index[0], "close"] == new["close"].iloc[0]


def test_merge_disjoint_is_not_a_revision():
    old, later = make_bars("2024-01-02", 5), make_bars("2024-02-01", 5)
    merged, revised = store.merge_bars(old, later)
    assert not revised and len(merged) == 10


def test_save_and_load_round_trip(tmp_path):
    bars = make_bars("2024-01-02", 20)
    path = store.save_store(tmp_path, "brk-b", bars)
    assert path == tmp_path / "store" / "BRK-B.parquet"
    assert store.store_path(tmp_path, "BRK-B") == path
    pd.testing.assert_frame_equal(store.load_store(tmp_path, "BRK-B"), bars, check_freq=False)


def test_load_missing_suggests_download(tmp_path):
    with pytest.raises(DataError, match=f"run `forecaster download --data-dir {tmp_path} AAA` first"):
        store.load_store(tmp_path, "AAA")


def test_a_folder_named_as_a_stored_file_is_said_to_be_one(tmp_path):
    store.store_path(tmp_path, "AAA").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        store.load_store(tmp_path, "AAA")
    assert str(info.value) == (
        f"AAA: {tmp_path / 'store' / 'AAA.parquet'} is a folder, not a stored file; move it away, "
        f"then run `forecaster download --data-dir {tmp_path} AAA`"
    )


def test_load_corrupt_parquet(tmp_path):
    path = store.store_path(tmp_path, "AAA")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"AAA: cannot read .*AAA\.parquet"):
        store.load_store(tmp_path, "AAA")


def test_failed_save_leaves_old_file_byte_identical(tmp_path, monkeypatch):
    store.save_store(tmp_path, "AAA", make_bars("2024-01-02", 10))
    path = store.store_path(tmp_path, "AAA")
    before = path.read_bytes()

    def half_write(self, f, **kwargs):
        f.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_write)
    with pytest.raises(OSError, match="disk full"):
        store.save_store(tmp_path, "AAA", make_bars("2024-01-02", 20))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["AAA.parquet"]


# --------------------------------------------------------------------------- update_ticker


class ScriptedSource:
    """A fetch(ticker, start, end) over a frame of 'all bars Yahoo knows', recording calls."""

    def __init__(self, bars: pd.DataFrame) -> None:
        self.bars = bars
        self.calls: list[tuple[str, object, object]] = []
        self.error: Exception | None = None

    def __call__(self, ticker, start, end):
        self.calls.append((ticker, start, end))
        if self.error is not None:
            raise self.error
        df = self.bars
        if start is not None:
            df = df[df.index >= pd.Timestamp(start)]
        return df.copy()


def test_update_new_ticker_fetches_full_history(tmp_path):
    src = ScriptedSource(make_bars("2024-01-02", 30))
    result = store.update_ticker(tmp_path, "aaa", src)
    assert src.calls == [("AAA", None, None)]
    assert (result.ticker, result.rows, result.added, result.refetched) == ("AAA", 30, 30, False)
    assert str(result.first) == "2024-01-02" and result.last == src.bars.index[-1].date()


def test_update_is_incremental_with_overlap(tmp_path):
    everything = make_bars("2024-01-02", 40)
    store.save_store(tmp_path, "AAA", everything.iloc[:30])
    src = ScriptedSource(everything)
    result = store.update_ticker(tmp_path, "AAA", src, overlap_days=5)
    assert src.calls == [("AAA", everything.index[25], None)]
    assert (result.rows, result.added, result.refetched) == (40, 10, False)
    pd.testing.assert_frame_equal(store.load_store(tmp_path, "AAA"), everything, check_freq=False)


def test_update_without_news_does_not_rewrite(tmp_path):
    bars = make_bars("2024-01-02", 30)
    store.save_store(tmp_path, "AAA", bars)
    path = store.store_path(tmp_path, "AAA")
    os.utime(path, (1, 1))
    result = store.update_ticker(tmp_path, "AAA", ScriptedSource(bars))
    assert result.added == 0 and path.stat().st_mtime == 1


def test_update_saves_a_revised_volume_and_range_of_the_overlap(tmp_path):
    """Yahoo amends the volume (and the high) of a recent session after the fact: a refresh
    that brings no new session and the same closes still saves the amended bar, without
    fetching the whole history again. The stored file kept the first, partial figures."""
    bars = make_bars("2024-01-02", 30)
    store.save_store(tmp_path, "AAA", bars)
    amended = bars.copy()
    amended.loc[amended.index[-1], "volume"] += 123_456  # the day's final volume
    amended.loc[amended.index[-2], "high"] *= 1.001
    src = ScriptedSource(amended)
    result = store.update_ticker(tmp_path, "AAA", src, overlap_days=5)
    assert (result.added, result.refetched) == (0, False) and len(src.calls) == 1
    pd.testing.assert_frame_equal(store.load_store(tmp_path, "AAA"), amended, check_freq=False)


def test_update_revision_refetches_full_history(tmp_path):
    everything = make_bars("2024-01-02", 40)
    store.save_store(tmp_path, "AAA", everything.iloc[:30])
    adjusted = everything.copy()
    adjusted[["open", "high", "low", "close"]] *= 0.97  # a dividend re-adjusts all history
    src = ScriptedSource(adjusted)
    result = store.update_ticker(tmp_path, "AAA", src)
    assert [c[1] for c in src.calls] == [everything.index[25], None]
    assert result.refetched and result.rows == 40 and result.added == 10
    pd.testing.assert_frame_equal(store.load_store(tmp_path, "AAA"), adjusted, check_freq=False)


def test_a_refetch_rescales_the_stored_bars_the_readjusted_history_lacks(tmp_path, caplog):
    """A split re-adjusts history upstream, and Yahoo's new history lacks a session stored
    before (and begins later than the store): those stored bars kept the old price scale, a
    +100 % then -50 % move spliced into the history without a word. Now they are brought to
    the new scale, and named."""
    everything = make_bars("2024-01-02", 60, seed=3)
    store.save_store(tmp_path, "AAA", everything.iloc[:50])
    adjusted = everything.copy()
    adjusted.iloc[:, :4] *= 0.5  # a 2:1 split since the last download: every earlier price halved
    lacked = everything.index[[0, 1, 2, 3, 20]]  # older than Yahoo's history; a session it dropped
    served = adjusted.iloc[4:].drop(index=everything.index[20])
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        result = store.update_ticker(tmp_path, "AAA", ScriptedSource(served))
    assert result.refetched
    stored = store.load_store(tmp_path, "AAA")
    assert list(stored.index) == list(everything.index)  # nothing lost
    for day in lacked:
        np.testing.assert_allclose(stored.loc[day, ["open", "high", "low", "close"]], adjusted.loc[day].iloc[:4])
        assert stored.loc[day, "volume"] == everything.loc[day, "volume"]
    returns = np.diff(np.log(stored["close"].to_numpy()))
    assert np.abs(returns).max() < 0.1  # no jump of the split's size anywhere
    assert any(
        "5 stored bar(s) that the re-adjusted history lacks (2024-01-02 to 2024-01-30)" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("error", [NetworkError("AAA: cannot reach Yahoo"), DataError("AAA: no usable bars")])
def test_failed_update_leaves_store_byte_identical(tmp_path, error):
    store.save_store(tmp_path, "AAA", make_bars("2024-01-02", 30))
    before = store.store_path(tmp_path, "AAA").read_bytes()
    src = ScriptedSource(make_bars("2024-01-02", 40))
    src.error = error
    with pytest.raises(type(error)):
        store.update_ticker(tmp_path, "AAA", src)
    assert store.store_path(tmp_path, "AAA").read_bytes() == before


def test_update_refuses_bad_fetched_data_and_keeps_store(tmp_path):
    store.save_store(tmp_path, "AAA", make_bars("2024-01-02", 30))
    before = store.store_path(tmp_path, "AAA").read_bytes()
    bad = make_bars("2024-01-02", 40)
    bad.loc[bad.index[-1], "close"] = -3.0
    with pytest.raises(DataError, match="AAA: close -3"):
        store.update_ticker(tmp_path, "AAA", ScriptedSource(bad))
    assert store.store_path(tmp_path, "AAA").read_bytes() == before


# --------------------------------------------------------------------------- download (yfinance)


def test_download_several_tickers_through_yfinance(tmp_path):
    bars = {"AAA": make_bars("2024-01-02", 30, seed=1), "BRK-B": make_bars("2024-01-02", 25)}
    yahoo = FakeYahoo(bars)
    report = store.download(["aaa", "brk-b", "AAA"], tmp_path, session=yahoo.session())
    assert report.failed == {} and report.kinds == {}
    assert sorted(report.ok) == ["AAA", "BRK-B"]
    assert report.ok["AAA"].rows == 30 and report.ok["BRK-B"].added == 25
    for symbol, frame in bars.items():
        pd.testing.assert_frame_equal(store.load_store(tmp_path, symbol), frame, check_freq=False)
    assert (tmp_path / "store" / "AAA.parquet").is_file()


def test_download_one_of_three_failing(tmp_path):
    yahoo = FakeYahoo({"AAA": make_bars("2024-01-02", 10), "CCC": make_bars("2024-01-02", 10)})
    report = store.download(["AAA", "NOSUCH", "CCC"], tmp_path, fetch=yahoo_fetch(yahoo))
    assert sorted(report.ok) == ["AAA", "CCC"]
    assert report.kinds == {"NOSUCH": "no_data"}
    assert report.failed["NOSUCH"] == "no data (unknown or delisted symbol?)"
    assert report.failure_lines() == ["NOSUCH: no data (unknown or delisted symbol?)"]
    assert report.exit_code == 3
    assert not store.store_path(tmp_path, "NOSUCH").exists()
    assert store.store_path(tmp_path, "CCC").exists()


def test_download_rate_limited(tmp_path):
    yahoo = FakeYahoo({"RL": 429, "AAA": make_bars("2024-01-02", 10)})
    report = store.download(["RL", "AAA"], tmp_path, fetch=yahoo_fetch(yahoo))
    assert report.kinds == {"RL": "rate_limit"} and "429" in report.failed["RL"]
    assert report.failed["RL"].startswith("Yahoo rate limit")
    assert list(report.ok) == ["AAA"]
    assert sum(s == "RL" for s, _ in yahoo.calls) >= 4  # retried


def test_download_invalid_symbol_is_reported_not_fatal(tmp_path):
    yahoo = FakeYahoo({"AAA": make_bars("2024-01-02", 10)})
    report = store.download(["../evil", "AAA"], tmp_path, session=yahoo.session())
    assert list(report.ok) == ["AAA"] and report.kinds == {"../evil": "data"}
    assert not (tmp_path.parent / "evil.parquet").exists()


def test_download_network_down_trips_circuit_breaker(tmp_path):
    yahoo = FakeYahoo({t: make_bars("2024-01-02", 10) for t in ["A", "B", "C", "D", "E"]})
    yahoo.down = True
    report = store.download(["A", "B", "C", "D", "E"], tmp_path, fetch=yahoo_fetch(yahoo))
    assert report.ok == {}
    assert report.kinds == dict.fromkeys("ABCDE", "network")
    assert "not tried" in report.failed["D"] and "cannot reach Yahoo" in report.failed["A"]
    assert report.failure_lines()[0].startswith("A: cannot reach Yahoo (")
    assert report.exit_code == 75
    assert not any(s in ("D", "E") for s, _ in yahoo.calls)  # never asked for
    assert not store.store_path(tmp_path, "A").exists()


def test_download_yahoo_server_errors_trip_the_circuit_breaker_as_such(tmp_path):
    """A Yahoo 5xx on every try is a temporary failure named as a server error, not "no data",
    and a streak of them stops the download like a network outage does."""
    yahoo = FakeYahoo(dict.fromkeys(["S1", "S2", "S3", "S4"], 503))
    report = store.download(["S1", "S2", "S3", "S4"], tmp_path, fetch=yahoo_fetch(yahoo))
    assert report.kinds == dict.fromkeys(["S1", "S2", "S3", "S4"], "server")
    assert report.failed["S1"] == "Yahoo server error (HTTP 503); retry later"
    assert report.failed["S4"] == "not tried: Yahoo keeps answering with server errors"
    assert report.exit_code == 75
    assert not any(s == "S4" for s, _ in yahoo.calls)


def test_download_incremental_appends_only_new_rows(tmp_path):
    everything = make_bars("2024-01-02", 40)
    yahoo = FakeYahoo({"AAA": everything.iloc[:30]})
    first = store.download(["AAA"], tmp_path, session=yahoo.session()).ok["AAA"]
    assert (first.rows, first.added) == (30, 30)
    yahoo.answers["AAA"] = everything
    yahoo.calls.clear()
    second = store.download(["AAA"], tmp_path, session=yahoo.session()).ok["AAA"]
    assert (second.rows, second.added, second.refetched) == (40, 10, False)
    [params] = yahoo.chart_calls("AAA")
    start = pd.Timestamp(int(params["period1"]), unit="s", tz="UTC").tz_convert("America/New_York")
    assert start.date() == everything.index[25].date()  # 5 sessions of overlap
    pd.testing.assert_frame_equal(store.load_store(tmp_path, "AAA"), everything, check_freq=False)


def test_download_revision_triggers_full_refetch(tmp_path):
    everything = make_bars("2024-01-02", 40)
    yahoo = FakeYahoo({"AAA": everything.iloc[:30]})
    store.download(["AAA"], tmp_path, session=yahoo.session())
    yahoo.answers["AAA"] = everything
    yahoo.adjclose["AAA"] = everything["close"] * 0.95  # a dividend re-adjusts past closes
    yahoo.calls.clear()
    result = store.download(["AAA"], tmp_path, session=yahoo.session()).ok["AAA"]
    assert result.refetched and result.rows == 40
    assert len(yahoo.chart_calls("AAA")) == 2  # incremental, then the full history
    stored = store.load_store(tmp_path, "AAA")
    np.testing.assert_allclose(stored["close"], everything["close"] * 0.95)


def test_download_reasons_do_not_repeat_the_ticker(tmp_path):
    bad = make_bars("2024-01-02", 10)
    bad.loc[bad.index[-1], "close"] = -3.0
    answers = {"BAD": bad, "DOWN": NetworkError("DOWN: cannot reach Yahoo (ConnectionError)")}

    def fetch(ticker, start, end):
        got = answers[ticker]
        if isinstance(got, Exception):
            raise got
        return got.copy()

    report = store.download(["BAD", "DOWN"], tmp_path, fetch=fetch)
    assert report.failed == {
        "BAD": "close -3 on 2024-01-15 is not a finite positive price",
        "DOWN": "cannot reach Yahoo (ConnectionError)",
    }
    assert report.kinds == {"BAD": FailureKind.DATA, "DOWN": FailureKind.NETWORK}
    assert report.failure_lines() == [
        "BAD: close -3 on 2024-01-15 is not a finite positive price",
        "DOWN: cannot reach Yahoo (ConnectionError)",
    ]
    assert report.exit_code == 1
    assert report.as_dict() == {"ok": {}, "failed": report.failed}


def _result(symbol: str) -> UpdateResult:
    return UpdateResult(symbol, 10, pd.Timestamp("2024-01-02").date(), pd.Timestamp("2024-01-15").date(), 10, False)


@pytest.mark.parametrize(
    ("ok", "kinds", "code", "summary"),
    [
        ([], {}, 0, "0 ticker(s) downloaded"),
        (["A", "B"], {}, 0, "2 ticker(s) downloaded"),
        (["A"], {"B": "network"}, 3, "1 of 2 tickers downloaded, 1 failed"),
        (["A"], {"B": "data"}, 3, "1 of 2 tickers downloaded, 1 failed"),
        ([], {"A": "network", "B": "rate_limit"}, 75, "no ticker downloaded (2 failed); retry later"),
        ([], {"A": "rate_limit"}, 75, "no ticker downloaded (1 failed); retry later"),
        ([], {"A": "network", "B": "no_data"}, 1, "no ticker downloaded (2 failed)"),
        ([], {"A": "data"}, 1, "no ticker downloaded (1 failed)"),
    ],
)
def test_download_report_exit_code_and_summary(ok, kinds, code, summary):
    report = DownloadReport()
    for symbol in ok:
        report.ok[symbol] = _result(symbol)
    for symbol, kind in kinds.items():
        report.fail(symbol, f"{symbol}: went wrong", FailureKind(kind))
    assert report.exit_code == code
    assert report.summary() == summary
    assert report.failed == dict.fromkeys(kinds, "went wrong")
    assert report.as_dict()["ok"] == {s: vars(report.ok[s]) for s in ok}


def test_failure_kinds_are_their_strings():
    assert FailureKind.NETWORK == "network" and FailureKind.RATE_LIMIT == "rate_limit"
    assert FailureKind.SERVER == "server"
    assert [k for k in FailureKind if k.temporary] == [FailureKind.NETWORK, FailureKind.RATE_LIMIT, FailureKind.SERVER]
    assert FailureKind.of(ServerError("x")) is FailureKind.SERVER
    assert FailureKind.of(TickerError("x")) is FailureKind.NO_DATA
    assert FailureKind.of(DataError("x")) is FailureKind.DATA


def test_download_passes_the_calendar_to_the_yahoo_fetch(tmp_path, monkeypatch):
    seen = []

    def fetch_with_retry(ticker, start=None, end=None, **options):
        seen.append(options["calendar"])
        return make_bars("2024-01-02", 5)

    monkeypatch.setattr(store, "fetch_with_retry", fetch_with_retry)
    assert store.download(["AAA"], tmp_path, calendar="XTKS").exit_code == 0
    assert store.download(["BBB"], tmp_path).exit_code == 0
    assert seen == ["XTKS", "XNYS"]


def test_download_failure_leaves_store_byte_identical(tmp_path):
    yahoo = FakeYahoo({"AAA": make_bars("2024-01-02", 30)})
    store.download(["AAA"], tmp_path, session=yahoo.session())
    before = store.store_path(tmp_path, "AAA").read_bytes()
    yahoo.down = True
    report = store.download(["AAA"], tmp_path, fetch=yahoo_fetch(yahoo))
    assert report.kinds == {"AAA": "network"}
    assert store.store_path(tmp_path, "AAA").read_bytes() == before


def test_download_refuses_while_another_process_holds_the_lock(tmp_path):
    code = (
        "import sys, time\nfrom forecaster import fsio\n"
        "with fsio.file_lock(sys.argv[1]):\n    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)}
    lock = tmp_path / "store" / ".lock"
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        src = ScriptedSource(make_bars("2024-01-02", 5))
        with pytest.raises(LockBusy, match=f"pid {proc.pid}"):
            store.download(["AAA"], tmp_path, fetch=src)
        assert src.calls == []
    finally:
        proc.kill()
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- load_bars


def test_load_bars_from_csv_and_store(tmp_path):
    bars = make_bars("2024-01-02", 5)
    messy = pd.concat([bars.iloc[2:], bars.iloc[:2]])  # unsorted on disk
    messy.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "AAA.csv")
    got = store.load_bars("csv", tmp_path, ["aaa"])
    assert list(got) == ["AAA"]
    pd.testing.assert_frame_equal(got["AAA"], bars, check_freq=False, rtol=1e-12)

    store.save_store(tmp_path, "BBB", bars)
    pd.testing.assert_frame_equal(store.load_bars("yahoo", tmp_path, ["BBB"])["BBB"], bars, check_freq=False)


def test_load_bars_failing_ticker_is_named(tmp_path):
    store.save_store(tmp_path, "BBB", make_bars("2024-01-02", 5))
    with pytest.raises(DataError, match="CCC"):
        store.load_bars("yahoo", tmp_path, ["BBB", "CCC"])
    (tmp_path / "BAD.csv").write_text("date,open,high,low,close,volume\n2024-01-02,1,1,1,-1,1\n")
    with pytest.raises(DataError, match="BAD: close -1 on 2024-01-02"):
        store.load_bars("csv", tmp_path, ["BAD"])


def test_load_bars_leaves_out_a_ticker_without_usable_bars_only_when_asked(tmp_path):
    """Train's read: a ticker whose every row lacks a price (a CSV file or a stored one) is left
    out with its reason, where it stopped the read of every ticker; any other bad data still
    fails, and a read without ``unusable`` (predict, evaluate) still raises for it."""
    bars = make_bars("2024-01-02", 5)
    bars.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "AAA.csv")
    bars.assign(close=np.nan).rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "NANC.csv")
    store.save_store(tmp_path, "AAA", bars)
    store.save_store(tmp_path, "NANC", bars.assign(close=np.nan))
    for source in ("csv", "yahoo"):
        unusable: dict[str, str] = {}
        got = store.load_bars(source, tmp_path, ["nanc", "AAA"], unusable=unusable)
        assert list(got) == ["AAA"]
        assert list(unusable) == ["NANC"]
        assert "no usable bars: each of its 5 row(s) lacks a date or one of open, high, low, close" in unusable["NANC"]
        with pytest.raises(store.NoUsableBars, match="NANC: .*no usable bars"):
            store.load_bars(source, tmp_path, ["AAA", "NANC"])
    (tmp_path / "BAD.csv").write_text("date,open,high,low,close,volume\n2024-01-02,1,1,1,-1,1\n")
    with pytest.raises(DataError, match="BAD: close -1 on 2024-01-02"):
        store.load_bars("csv", tmp_path, ["AAA", "BAD"], unusable={})


def test_load_bars_until_today_names_the_first_bar_dated_after_it_and_its_file(tmp_path):
    """For train, evaluate and tune: a mistyped year (2204) fails the ticker, with its file;
    without ``until_today`` the bars are read as they are (predict and score judge them)."""
    bars = make_bars("2024-01-02", 5)
    bars.index = bars.index[:-2].append(pd.DatetimeIndex(["2204-01-08", "2204-01-09"])).rename("date")
    bars.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "AAA.csv")
    store.save_store(tmp_path, "BBB", bars)
    assert store.load_bars("csv", tmp_path, ["AAA"])["AAA"].index[-1] == pd.Timestamp("2204-01-09")
    with pytest.raises(DataError) as info:
        store.load_bars("csv", tmp_path, ["AAA"], until_today=True)
    path = tmp_path / "AAA.csv"
    assert str(info.value) == f"AAA: 2 bar(s) dated after today, from 2204-01-08 to 2204-01-09, in {path}; fix the data"
    with pytest.raises(DataError) as info:
        store.load_bars("yahoo", tmp_path, ["BBB"], until_today=True)
    path = store.store_path(tmp_path, "BBB")
    assert str(info.value) == (
        "BBB: the stored file holds bad bars (2 bar(s) dated after today, from 2204-01-08 to 2204-01-09); "
        f"delete {path} and run `forecaster download --data-dir {tmp_path} BBB`"
    )


@pytest.mark.parametrize("day", ["2925-01-08", "0025-01-08"])
def test_a_date_no_timestamp_holds_is_named_with_its_file_and_line_not_an_unexpected_error(tmp_path, day):
    """A year mistyped beyond what a date can take (2925, 0025): a DataError naming the file,
    the line and the date, so the ticker fails alone; it was an uncaught OutOfBoundsDatetime
    ("unexpected error"), which stopped every ticker of predict and evaluate."""
    bars = make_bars("2024-01-02", 5)
    bars.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "AAA.csv")
    text = (tmp_path / "AAA.csv").read_text().replace("2024-01-05", day)
    (tmp_path / "AAA.csv").write_text(text)
    with pytest.raises(DataError) as info:
        store.load_bars("csv", tmp_path, ["AAA"])
    assert str(info.value) == (
        f"{tmp_path / 'AAA.csv'}: date '{day}' (line 5) is outside the years 1678-2261 that a date can take; "
        "a mistyped year?"
    )


def test_a_stored_date_no_timestamp_holds_is_named_with_the_advice_to_download_again(tmp_path):
    bars = make_bars("2024-01-02", 3)
    days = np.array(["2024-01-02", "2024-01-03", "2500-01-04"], dtype="datetime64[s]")
    bars.index = pd.DatetimeIndex(days, name="date")
    store.store_dir(tmp_path).mkdir(parents=True)
    bars.to_parquet(store.store_path(tmp_path, "AAA"))
    with pytest.raises(DataError, match=r"^AAA: the stored file holds bad bars \(date 2500-01-04 is outside the years"):
        store.load_bars("yahoo", tmp_path, ["AAA"])


def test_load_bars_unknown_source(tmp_path):
    with pytest.raises(ConfigError, match="unknown source"):
        store.load_bars("bloomberg", tmp_path, ["AAA"])


def test_missing_store_file_under_a_relative_folder_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """A relative data folder that is not in the current directory is named with that
    directory (the wrong place, most likely); one that is there asks for a download."""
    from forecaster.errors import DataError
    from forecaster.store import load_store

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as caught:
        load_store("data", "AAA")
    assert f"the data folder data is relative to the current directory, {tmp_path}, and is not there" in str(
        caught.value
    )
    assert "download" not in str(caught.value)
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError) as caught:
        load_store("data", "AAA")
    assert "relative" not in str(caught.value) and "run `forecaster download AAA` first" in str(caught.value)
    with pytest.raises(DataError, match=f"download --data-dir {tmp_path / 'elsewhere'} AAA"):
        load_store(tmp_path / "elsewhere", "AAA")  # an absolute folder: no note either, its folder in the command


def test_duplicate_dates_are_named_with_the_csv_file_they_are_in(tmp_path, caplog):
    """A user fixing the file needs the dates and the file, not just a count."""
    bars = make_bars("2024-01-02", 12)
    one = pd.concat([bars, bars.iloc[[4]] * 1.01])
    one.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "AAA.csv")
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        got = store.load_bars("csv", tmp_path, ["AAA"])["AAA"]
    assert len(got) == 12
    day = bars.index[4].date()
    assert (
        f"AAA: dropped 1 row(s) with a duplicate date in {tmp_path / 'AAA.csv'} (kept the last of each): {day}\n"
        in (caplog.text)
    )

    caplog.clear()
    many = pd.concat([bars, bars.iloc[[1, 2, 2, 5, 7, 9]]])  # five dates, one of them three times
    many.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "BBB.csv")
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        store.load_bars("csv", tmp_path, ["BBB"])
    first = ", ".join(str(d.date()) for d in bars.index[[1, 2, 5]])
    assert f"BBB: dropped 6 row(s) with a duplicate date in {tmp_path / 'BBB.csv'} (kept the last of each): " in (
        caplog.text
    )
    assert f"5 dates: {first}, ...\n" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        store.validate_bars(pd.concat([bars, bars.iloc[[3]]]), "CCC")
    assert f"CCC: dropped 1 row(s) with a duplicate date (kept the last of each): {bars.index[3].date()}\n" in (
        caplog.text
    )


def test_load_bars_warns_once_of_sessions_missing_inside_the_bars(tmp_path, caplog):
    """Ten sessions deleted from a CSV, twice: one warning naming the ticker,
    the largest gap's dates and how many gaps; the bars are read as they are."""
    bars = make_bars("2020-10-01", 60)
    holed = bars.drop(bars.index[22:32]).drop(bars.index[45:55])  # 2020-11-02..13, 2020-12-03..16
    holed.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "AAA.csv")
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        got = store.load_bars("csv", tmp_path, ["AAA"], tail=5)["AAA"]
    pd.testing.assert_frame_equal(got, holed.iloc[-5:], check_freq=False, rtol=1e-12)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "AAA: 2 gap(s) of more than 14 days between consecutive bars, the largest 17 days from 2020-10-30 to "
        "2020-11-16: sessions missing from the data are read as if the bars were consecutive"
    ]


def test_holidays_and_exchange_closures_are_no_gap(tmp_path, caplog):
    """Long weekends, the four sessions NYSE lost after 9/11 and an 11-day Lunar New Year
    closure are ordinary; nor does the shipped sample warn."""
    bars = make_bars("2001-08-01", 80)
    holes = ["2001-09-03", *pd.bdate_range("2001-09-11", "2001-09-14"), *pd.bdate_range("2001-10-22", "2001-10-29")]
    store.save_store(tmp_path, "AAA", bars.drop(pd.DatetimeIndex(holes)))
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        store.load_bars("yahoo", tmp_path, ["AAA"])
        store.load_bars("csv", ROOT / "data" / "sample", ["STOCKA", "STOCKB"])
    assert caplog.text == ""


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_a_gap_is_measured_in_days_whatever_the_resolution_of_the_dates(caplog, unit):
    bars = make_bars("2020-10-01", 40)
    holed = bars.drop(bars.index[10:25])
    holed = holed.set_axis(holed.index.as_unit(unit))
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        store.warn_gaps(holed, "AAA")
    [record] = caplog.records
    assert "1 gap(s) of more than 14 days" in record.getMessage()
    assert f"from {bars.index[9].date()} to {bars.index[25].date()}" in record.getMessage()


def _as_if_split(bars: pd.DataFrame, row: int, n: float) -> pd.DataFrame:
    """``bars`` as a file not adjusted for a split at ``row`` looks: the prices before it ``n``
    times higher and the volumes ``n`` times lower (``n`` < 1: a reverse split)."""
    out = bars.copy()
    out.iloc[:row, :4] *= n
    out.iloc[:row, 4] = np.round(out.iloc[:row, 4] / n)
    return out


def test_a_csv_not_adjusted_for_a_split_is_named_with_the_day_and_ratio(tmp_path, caplog):
    """A 2-for-1 split or a 1-for-10 reverse split left in raw prices reads as a -69 % or +230 %
    log return: the bars are kept, but the day is named. A real halving of the price (the
    volume traded does not double) is not, nor is anything in the store, whose bars Yahoo adjusts."""
    bars = make_bars("2024-01-02", 80)
    files = {
        "RAW": _as_if_split(bars, 40, 2),
        "REV": _as_if_split(bars, 50, 0.1),
        "CRASH": pd.concat([bars.iloc[:30], bars.iloc[30:] * [0.5, 0.5, 0.5, 0.5, 1]]),
        "NOVOL": _as_if_split(bars, 60, 3).drop(columns="volume"),
        "OK": bars,
    }
    for name, frame in files.items():
        frame.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / f"{name}.csv")
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        got = store.load_bars("csv", tmp_path, list(files))
    np.testing.assert_allclose(got["RAW"]["close"], files["RAW"]["close"], rtol=1e-12)  # kept as they are

    def said(name, row, ratio):
        c = files[name]["close"]
        return (
            f"{name}: the close moves by a split's ratio on {bars.index[row].date()} ({c.iloc[row - 1]:.6g} -> "
            f"{c.iloc[row]:.6g}: {ratio}) in {tmp_path / (name + '.csv')}; if the prices are not adjusted for "
            "splits, each reads as a one-day return that never happened: give adjusted prices (an 'Adj Close' "
            "column is applied to the others when the file has one)"
        )

    assert caplog.messages == [
        said("RAW", 40, "1/2 of the close before, as at a 2-for-1 split"),
        said("REV", 50, "10x, as at a 1-for-10 split"),
        said("NOVOL", 60, "1/3 of the close before, as at a 3-for-1 split"),  # no volume to tell
    ]
    caplog.clear()
    store.save_store(tmp_path / "data", "RAW", files["RAW"])
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        store.load_bars("yahoo", tmp_path / "data", ["RAW"])
    assert caplog.messages == []


@pytest.mark.parametrize(
    ("n", "said"),
    [
        (1.5, "2/3 of the close before, as at a 3-for-2 split"),
        (8, "1/8 of the close before, as at a 8-for-1 split"),
        (15, "1/15 of the close before, as at a 15-for-1 split"),
        (1 / 8, "8x, as at a 1-for-8 split"),
        (1 / 15, "15x, as at a 1-for-15 split"),
        (1 / 20, "20x, as at a 1-for-20 split"),
    ],
)
def test_a_csv_not_adjusted_for_a_split_of_any_usual_ratio_is_named(tmp_path, caplog, n, said):
    """Only 2, 3, 4, 5 and 10 were looked for: a 3-for-2 split or a 1-for-8, 1-for-15 or 1-for-20
    reverse split passed without a word, and blew up the intervals."""
    bars = make_bars("2024-01-02", 80)
    raw = _as_if_split(bars, 40, n)
    raw.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "RAW.csv")
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        store.load_bars("csv", tmp_path, ["RAW"])
    c = raw["close"]
    assert caplog.messages == [
        f"RAW: the close moves by a split's ratio on {bars.index[40].date()} ({c.iloc[39]:.6g} -> {c.iloc[40]:.6g}: "
        f"{said}) in {tmp_path / 'RAW.csv'}; if the prices are not adjusted for splits, each reads as a one-day "
        "return that never happened: give adjusted prices (an 'Adj Close' column is applied to the others when "
        "the file has one)"
    ]


def test_a_crash_or_rally_of_a_small_splits_ratio_on_heavy_trading_is_not_named(tmp_path, caplog):
    """A fall to 2/3 (or a rise of half) on news: the volume that day is many times the usual
    and stays high after, as after a 3-for-2 split, but a split day trades about 1.5 times the
    usual shares, not ten times them."""
    bars = make_bars("2024-01-02", 80)
    crash = pd.concat([bars.iloc[:40], bars.iloc[40:] * [2 / 3, 2 / 3, 2 / 3, 2 / 3, 2]])
    crash.iloc[40, 4] = bars["volume"].iloc[40] * 10
    rally = pd.concat([bars.iloc[:40], bars.iloc[40:] * [1.5, 1.5, 1.5, 1.5, 1]])
    rally.iloc[40, 4] = bars["volume"].iloc[40] * 10
    rally.iloc[41:, 4] = np.round(bars["volume"].iloc[41:] / 2)  # and trading calms down after it
    for name, frame in (("CRASH", crash), ("RALLY", rally)):
        frame.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / f"{name}.csv")
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        store.load_bars("csv", tmp_path, ["CRASH", "RALLY"])
    assert caplog.messages == []


def test_a_move_of_a_third_is_named_a_split_only_as_a_3_for_2_in_a_file_with_volumes(tmp_path, caplog):
    """A rise to 1.5 times was named as a "2-for-3 split", a reverse split no one makes; and in a
    file without volumes, any fall of a third was named, with nothing to tell it from news."""
    bars = make_bars("2024-01-02", 80)
    _as_if_split(bars, 40, 1 / 1.5).rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "UP.csv")
    no_volume = _as_if_split(bars, 40, 1.5).drop(columns="volume")
    no_volume.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "NOVOL.csv")
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        store.load_bars("csv", tmp_path, ["UP", "NOVOL"])
    assert not [m for m in caplog.messages if "split" in m], caplog.messages


def test_an_open_off_the_days_range_is_kept_and_named_with_its_dates(tmp_path, caplog):
    """A bad open is no reason to refuse a ticker (the features read it at the range's edge),
    but a user fixing the file needs to hear of it; an open off by rounding is not worth a word."""
    bars = make_bars("2024-01-02", 12)
    bad = bars.copy()
    bad.iloc[3, bad.columns.get_loc("open")] = bars["high"].iloc[3] * 1.05  # 5 % above the high
    bad.iloc[7, bad.columns.get_loc("open")] = bars["low"].iloc[7] * 0.9  # 10 % below the low
    bad.iloc[9, bad.columns.get_loc("open")] = bars["high"].iloc[9] * 1.001  # rounding: silent
    bad.rename_axis("Date").rename(columns=str.title).to_csv(tmp_path / "AAA.csv")
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        got = store.load_bars("csv", tmp_path, ["AAA"])["AAA"]
    assert len(got) == 12 and got["open"].iloc[3] == pytest.approx(bars["high"].iloc[3] * 1.05)  # kept as it is
    days = ", ".join(str(bars.index[i].date()) for i in (3, 7))
    assert caplog.messages == [
        f"AAA: the open is outside the day's low-high range by more than 1 % on 2 dates: {days} in "
        f"{tmp_path / 'AAA.csv'}; it is read at the range's nearer end"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        store.validate_bars(bad, "AAA")  # a download's validations: no word (the reads say it, once)
        store.save_store(tmp_path / "data", "BBB", bad.iloc[:5])  # one bad row left
        store.save_store(tmp_path / "data", "CCC", bad.iloc[8:])  # only the rounding
        store.load_bars("yahoo", tmp_path / "data", ["BBB", "CCC"])
    assert caplog.messages == [
        f"BBB: the open is outside the day's low-high range by more than 1 % on {bars.index[3].date()}; "
        "it is read at the range's nearer end"
    ]
