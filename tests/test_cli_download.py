"""`forecaster download`: the store it fills and every exit code (0, 1, 2, 3, 75).

Nothing here touches the network: ``forecaster.store.fetch_with_retry`` is replaced by an
in-memory fake, or routed to the offline Yahoo stand-in of ``yf_fixtures``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
from support import assert_one_line_error
from yf_fixtures import FakeYahoo, make_bars

import forecaster.sources
import forecaster.store
from forecaster import fsio
from forecaster.errors import NetworkError, TickerError

STORE_COLUMNS = ["open", "high", "low", "close", "volume"]


class FakeFetch:
    """Stands in for ``fetch_with_retry``: SYMBOL -> bars, or an exception to raise."""

    def __init__(self, answers):
        self.answers = answers
        self.calls: list[tuple[str, object, object]] = []

    def __call__(self, ticker, start=None, end=None, *, session=None, **_):
        self.calls.append((ticker, start, end))
        got = self.answers.get(ticker)
        if got is None:
            raise TickerError(f"no data for {ticker} (unknown or delisted symbol?)")
        if isinstance(got, Exception):
            raise got
        bars = got if start is None else got[got.index >= pd.Timestamp(start)]
        return bars.copy()


@pytest.fixture
def fake_fetch(monkeypatch):
    def install(answers):
        fake = FakeFetch(answers)
        monkeypatch.setattr(forecaster.store, "fetch_with_retry", fake)
        return fake

    return install


def _stored(data_dir, ticker) -> pd.DataFrame:
    return pd.read_parquet(data_dir / "store" / f"{ticker}.parquet")


def _parquets(data_dir) -> list[str]:
    store = data_dir / "store"
    return sorted(p.name for p in store.glob("*.parquet")) if store.exists() else []


# ---------------------------------------------------------------------------- exit 0


def test_download_writes_store_and_prints_table(cli, fake_fetch, tmp_path):
    a, b = make_bars("2024-01-02", 40, seed=1), make_bars("2024-02-01", 25, seed=2)
    fake_fetch({"AAA": a, "BRK-B": b})
    data = tmp_path / "data"
    res = cli("download", "AAA", "brk-b", "--data-dir", data)
    assert res.exit_code == 0, res.stderr
    assert _parquets(data) == ["AAA.parquet", "BRK-B.parquet"]
    for sym, bars in (("AAA", a), ("BRK-B", b)):
        df = _stored(data, sym)
        assert list(df.columns) == STORE_COLUMNS
        assert len(df) == len(bars)
        assert df.index.is_monotonic_increasing and df.index.is_unique
        assert df.index.tz is None
        pd.testing.assert_series_equal(
            df["close"], bars["close"], check_names=False, check_freq=False, check_index_type=False
        )
    # the table: one row per ticker with its row count, first and last date
    row = {sym: next(ln for ln in res.stdout.splitlines() if f" {sym} " in ln) for sym in ("AAA", "BRK-B")}
    for sym, bars in (("AAA", a), ("BRK-B", b)):
        cells = row[sym].replace("|", " ").split()
        assert str(len(bars)) in cells
        assert str(bars.index[0].date()) in cells
        assert str(bars.index[-1].date()) in cells


def test_download_table_says_how_many_bars_each_ticker_gained(cli, fake_fetch, tmp_path):
    """Each row: the ticker, its stored rows, first and last date, and the bars this download
    added (all of them the first time, only the new sessions after that)."""
    bars = make_bars("2024-01-02", 45, seed=4)
    fake_fetch({"AAA": bars.iloc[:40]})
    data = tmp_path / "data"

    def table(res):
        assert res.exit_code == 0, res.stderr
        return [[c.strip() for c in ln.split("|")[1:-1]] for ln in res.stdout.splitlines() if ln.startswith("|")]

    first, last = str(bars.index[0].date()), str(bars.index[39].date())
    assert table(cli("download", "AAA", "--data-dir", data)) == [
        ["ticker", "rows", "first", "last", "added"],
        ["AAA", "40", first, last, "40"],
    ]
    fake_fetch({"AAA": bars})
    assert table(cli("download", "AAA", "--data-dir", data))[1] == ["AAA", "45", first, str(bars.index[-1].date()), "5"]


def test_download_unknown_calendar_stops_before_any_ticker(cli, fake_fetch, tmp_path):
    # the calendar is needed only once a bar of today arrives: a typo must stop the command
    # before the first ticker is fetched, not halfway through the list
    fake = fake_fetch({"AAA": make_bars("2024-01-02", 40, seed=1)})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\ncalendar = "XNYSE"\n')
    data = tmp_path / "data"
    res = cli("download", "AAA", "--config", cfg, "--data-dir", data)
    assert res.exit_code == 1
    assert "unknown exchange calendar 'XNYSE'" in res.stderr
    assert fake.calls == [] and _parquets(data) == []


def test_download_json_reports_rows_and_dates(cli, fake_fetch, tmp_path):
    a = make_bars("2024-01-02", 30, seed=3)
    fake_fetch({"AAA": a})
    res = cli("download", "AAA", "--data-dir", tmp_path / "d", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) == {"ok", "failed"}
    assert doc["failed"] == {}
    assert set(doc["ok"]) == {"AAA"}
    got = doc["ok"]["AAA"]
    assert got["rows"] == 30
    assert got["added"] == 30
    assert str(got["first"]) == str(a.index[0].date())
    assert str(got["last"]) == str(a.index[-1].date())


def test_download_quiet_prints_no_table(cli, fake_fetch, tmp_path):
    fake_fetch({"AAA": make_bars("2024-01-02", 30)})
    data = tmp_path / "d"
    res = cli("download", "AAA", "--data-dir", data, "--quiet")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == ""
    assert _parquets(data) == ["AAA.parquet"]


def test_download_is_incremental(cli, fake_fetch, tmp_path):
    full = make_bars("2024-01-02", 50, seed=4)
    data = tmp_path / "d"
    fake = fake_fetch({"AAA": full.iloc[:40]})
    assert cli("download", "AAA", "--data-dir", data, "-q").exit_code == 0
    assert fake.calls == [("AAA", None, None)]
    fake.answers["AAA"] = full
    res = cli("download", "AAA", "--data-dir", data, "--json")
    assert res.exit_code == 0, res.stderr
    # the second call starts a few sessions before the last stored bar, not from scratch
    _, start, _ = fake.calls[-1]
    assert start is not None
    assert full.index[30] <= pd.Timestamp(start) <= full.index[39]
    doc = json.loads(res.stdout)["ok"]["AAA"]
    assert doc["added"] == 10 and doc["rows"] == 50
    assert len(_stored(data, "AAA")) == 50


def test_download_takes_data_dir_from_config_and_flag_wins(cli, fake_fetch, tmp_path):
    fake_fetch({"AAA": make_bars("2024-01-02", 20)})
    from_cfg, from_flag = tmp_path / "cfgdata", tmp_path / "flagdata"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndata_dir = "{from_cfg.as_posix()}"\n')
    assert cli("download", "AAA", "--config", cfg, "-q").exit_code == 0
    assert _parquets(from_cfg) == ["AAA.parquet"]
    assert cli("download", "AAA", "--config", cfg, "--data-dir", from_flag, "-q").exit_code == 0
    assert _parquets(from_flag) == ["AAA.parquet"]


def test_download_names_a_folder_in_the_place_of_a_stored_file_and_stores_the_others(cli, fake_fetch, tmp_path):
    fake_fetch({"AAA": make_bars("2024-01-02", 20), "BBB": make_bars("2024-01-02", 20)})
    data = tmp_path / "d"
    (data / "store" / "AAA.parquet" / "kept").mkdir(parents=True)
    res = cli("download", "AAA", "BBB", "--data-dir", data)
    assert res.exit_code == 3, res.stderr
    assert f"AAA: {data / 'store' / 'AAA.parquet'} is a folder, not a stored file; move it away" in res.stderr
    assert "no stored data" not in res.stderr
    assert _parquets(data) == ["AAA.parquet", "BBB.parquet"] and (data / "store" / "AAA.parquet" / "kept").is_dir()


def test_download_log_file_gets_timestamped_lines(cli, fake_fetch, tmp_path):
    fake_fetch({"AAA": make_bars("2024-01-02", 20)})
    log_file = tmp_path / "logs" / "dl.log"
    res = cli("download", "AAA", "ZZZ", "--data-dir", tmp_path / "d", "--log-file", log_file)
    assert res.exit_code == 3
    text = log_file.read_text()
    assert "ZZZ" in text
    assert text[:4].isdigit()  # each line starts with its timestamp


def test_download_through_offline_yahoo_stand_in(cli, monkeypatch, tmp_path):
    """The real fetch code (yfinance included) against the in-memory Yahoo."""
    yahoo = FakeYahoo({"AAA": make_bars("2024-01-02", 30, seed=5)})
    real = forecaster.sources.fetch_with_retry

    def via_fake(ticker, start=None, end=None, *, session=None, **_):
        return real(ticker, start, end, session=yahoo.session(), sleep=lambda s: None)

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", via_fake)
    data = tmp_path / "d"
    res = cli("download", "AAA", "--data-dir", data, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["ok"]["AAA"]["rows"] == 30
    assert len(_stored(data, "AAA")) == 30
    assert yahoo.chart_calls("AAA")


NO_RESULT = json.dumps({"chart": {"result": [], "error": None}})  # yfinance's time-zone probe raises IndexError on it


def test_an_answer_yfinance_chokes_on_fails_its_ticker_alone(cli, monkeypatch, tmp_path):
    """A chart answer with an empty result made yfinance raise IndexError, which stopped the
    whole download as an unexpected error (exit 1): the ticker before it stored but not
    reported, the one after it never tried. It fails that ticker alone now, named, exit 3."""
    yahoo = FakeYahoo({"AAA": make_bars("2024-01-02", 30), "NORES": NO_RESULT, "CCC": make_bars("2024-01-02", 30)})
    real = forecaster.sources.fetch_with_retry

    def via_fake(ticker, start=None, end=None, *, session=None, **_):
        return real(ticker, start, end, session=yahoo.session(), sleep=lambda s: None)

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", via_fake)
    data = tmp_path / "d"
    res = cli("download", "AAA", "NORES", "CCC", "--data-dir", data, "--json")
    assert res.exit_code == 3, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc["ok"]) == {"AAA", "CCC"}
    assert doc["failed"]["NORES"].startswith("unexpected answer from Yahoo (IndexError")
    assert len(_stored(data, "AAA")) == 30 and len(_stored(data, "CCC")) == 30
    assert "unexpected error" not in res.stderr


def test_download_of_only_todays_unfinished_bar_says_to_run_again_after_the_close(
    cli, monkeypatch, tmp_path, offline_yfinance
):
    """A symbol whose only bar is today's, still trading (a listing's first day; an exchange
    rate, whose day is over only at midnight): one line saying so and when to run again, not
    "no usable bars", as if its data were bad."""
    # a zone where it is about noon now: Yahoo's bar of today (stamped 09:30 there) exists and
    # the day is not over, whatever the hour the test runs at (Etc/GMT-5 is UTC+5)
    offset = min(14, max(-12, 12 - pd.Timestamp.now(tz="UTC").hour))
    tz = f"Etc/GMT{-offset:+d}"
    today = pd.Timestamp.now(tz=tz).tz_localize(None).normalize()
    bars = make_bars("2024-01-02", 1, seed=5).set_axis(pd.DatetimeIndex([today], name="date"))
    yahoo = FakeYahoo({"EURUSD=X": bars})
    yahoo.timezones["EURUSD=X"] = tz
    real = forecaster.sources.fetch_with_retry

    def via_fake(ticker, start=None, end=None, *, session=None, **_):
        return real(ticker, start, end, session=yahoo.session(), sleep=lambda s: None)

    monkeypatch.setattr(forecaster.store, "fetch_with_retry", via_fake)
    data = tmp_path / "d"
    res = cli("download", "EURUSD=X", "--data-dir", data)
    assert res.exit_code == 1, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("ERROR: EURUSD=X:"))
    assert f"only today's bar ({today.date()})" in line and "run again after the close" in line, line
    assert "no usable bars" not in res.stderr
    assert _parquets(data) == []


def test_download_takes_the_tickers_of_its_config_when_none_is_named(cli, fake_fetch, tmp_path):
    fake = fake_fetch({"AAA": make_bars("2024-01-02", 20), "BBB": make_bars("2024-01-02", 30)})
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndata_dir = "{(tmp_path / "d").as_posix()}"\ntickers = ["AAA", "BBB"]\n')
    res = cli("download", "--config", cfg)
    assert res.exit_code == 0, res.stderr
    assert _parquets(tmp_path / "d") == ["AAA.parquet", "BBB.parquet"]
    res = cli("download", "BBB", "--config", cfg)  # named tickers come first
    assert res.exit_code == 0 and [c[0] for c in fake.calls][-1:] == ["BBB"] and len(fake.calls) == 3


def test_download_without_tickers_is_a_usage_error(cli, fake_fetch, tmp_path):
    fake = fake_fetch({})
    res = cli("download", "--data-dir", tmp_path / "d")
    assert res.exit_code == 2 and "name the tickers, or give a --config that lists them" in res.stderr
    assert fake.calls == [] and not (tmp_path / "d").exists()


def test_download_with_a_csv_config_says_the_store_is_not_what_it_reads(cli, fake_fetch, tmp_path):
    fake_fetch({"AAA": make_bars("2024-01-02", 20)})
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nsource = "csv"\ndata_dir = "{(tmp_path / "d").as_posix()}"\n')
    res = cli("download", "AAA", "--config", cfg)
    assert res.exit_code == 0, res.stderr
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("WARNING:")]
    assert "source = csv" in line and "only source = yahoo reads" in line, line
    assert _parquets(tmp_path / "d") == ["AAA.parquet"]


# ---------------------------------------------------------------------------- exit 1


def test_download_config_unknown_key_is_named(cli, fake_fetch, tmp_path):
    fake = fake_fetch({"AAA": make_bars("2024-01-02", 20)})
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[data]\nsauce = "csv"\n')
    res = cli("download", "AAA", "--config", cfg, "--data-dir", tmp_path / "d")
    assert res.exit_code == 1
    assert "data.sauce" in res.stderr and "unknown key" in res.stderr
    assert fake.calls == []
    assert _parquets(tmp_path / "d") == []


def test_download_config_wrong_type_is_named(cli, fake_fetch, tmp_path):
    fake_fetch({"AAA": make_bars("2024-01-02", 20)})
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[window]\nlookback = "sixty"\n')
    res = cli("download", "AAA", "--config", cfg, "--data-dir", tmp_path / "d")
    assert res.exit_code == 1
    assert "window.lookback" in res.stderr
    assert _parquets(tmp_path / "d") == []


def test_download_config_not_toml(cli, fake_fetch, tmp_path):
    fake_fetch({})
    cfg = tmp_path / "bad.toml"
    cfg.write_text("this is [not toml\n")
    res = cli("download", "AAA", "--config", cfg, "--data-dir", tmp_path / "d")
    assert res.exit_code == 1
    assert "TOML" in res.stderr


@pytest.mark.parametrize(
    ("file", "store"), [("data/store", "data/store"), ("data", "data/store"), ("data", "data/sub/store")]
)
def test_download_into_a_store_path_that_is_a_file_says_so_in_one_line(cli, fake_fetch, tmp_path, file, store):
    fake = fake_fetch({"AAA": make_bars("2024-01-02", 20)})
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file).write_text("not a folder\n")
    cfg = tmp_path / "c.toml"  # a data folder that is a file, from the config, passes the flag's own check
    cfg.write_text(f'[data]\ndata_dir = "{(tmp_path / store).parent}"\n')
    res = cli("download", "AAA", "--config", cfg)
    line = assert_one_line_error(res, 1, f"{tmp_path / file} is a file, not a folder")
    assert "exists" not in line.lower() and "Errno" not in res.stderr
    assert fake.calls == []
    assert (tmp_path / file).read_text() == "not a folder\n"


def test_download_an_empty_data_dir_is_refused_not_taken_for_the_current_folder(cli, fake_fetch, tmp_path):
    fake = fake_fetch({"AAA": make_bars("2024-01-02", 20)})
    res = cli("download", "AAA", "--data-dir", "")
    assert_one_line_error(res, 1, '--data-dir "" names no folder')
    assert fake.calls == [] and list(Path.cwd().iterdir()) == []


def test_download_invalid_symbol(cli, fake_fetch, tmp_path):
    fake = fake_fetch({})
    res = cli("download", "../../etc", "--data-dir", tmp_path / "d")
    assert res.exit_code == 1
    assert "invalid ticker" in res.stderr
    assert fake.calls == []
    assert not (tmp_path / "etc.parquet").exists()


def test_download_every_ticker_unknown_is_an_error_not_tempfail(cli, fake_fetch, tmp_path):
    fake_fetch({})  # every symbol: "no data"
    res = cli("download", "NOPE", "NADA", "--data-dir", tmp_path / "d")
    assert res.exit_code == 1
    assert "NOPE" in res.stderr and "NADA" in res.stderr
    assert _parquets(tmp_path / "d") == []


# ---------------------------------------------------------------------------- exit 2


@pytest.mark.parametrize(
    "args",
    [
        ["download"],  # no ticker
        ["download", "AAA", "--bogus"],
        ["download", "AAA", "--lock-timeout", "-1"],
        ["download", "AAA", "--config", "/no/such/config.toml"],
    ],
)
def test_download_usage_errors(cli, fake_fetch, args):
    fake = fake_fetch({})
    res = cli(*args)
    assert res.exit_code == 2
    assert "Usage" in res.stderr
    assert res.stdout == ""
    assert fake.calls == []


# ---------------------------------------------------------------------------- exit 3


def test_download_partial_failure_writes_the_rest(cli, fake_fetch, tmp_path):
    fake_fetch({"AAA": make_bars("2024-01-02", 20), "BBB": NetworkError("BBB: connection reset")})
    data = tmp_path / "d"
    res = cli("download", "AAA", "BBB", "--data-dir", data)
    assert res.exit_code == 3
    assert _parquets(data) == ["AAA.parquet"]
    err = res.stderr
    assert "BBB" in err and "failed" in err
    assert "AAA" in res.stdout


def test_download_partial_failure_json(cli, fake_fetch, tmp_path):
    fake_fetch({"AAA": make_bars("2024-01-02", 20)})
    res = cli("download", "AAA", "ZZZ", "--data-dir", tmp_path / "d", "--json")
    assert res.exit_code == 3
    doc = json.loads(res.stdout)
    assert set(doc["ok"]) == {"AAA"}
    assert set(doc["failed"]) == {"ZZZ"}
    assert "ZZZ" in res.stderr


def test_download_json_holds_the_keys_the_readme_names(cli, fake_fetch, tmp_path):
    fake_fetch({"AAA": make_bars("2024-01-02", 20)})
    res = cli("download", "AAA", "ZZZ", "--data-dir", tmp_path / "d", "--json")
    assert res.exit_code == 3
    doc = json.loads(res.stdout)
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8").split())
    said = re.search(r"`download --json` prints `ok` \(per ticker stored: (.*?)\) and `failed`", readme)
    assert said is not None, "the README does not say what download --json prints"
    assert set(re.findall(r"`(\w+)`", said.group(1))) == set(doc["ok"]["AAA"])
    assert set(doc) == {"ok", "failed"} and set(doc["failed"]) == {"ZZZ"}


def test_download_refuses_to_append_a_series_that_no_longer_has_the_stored_sessions(cli, fake_fetch, tmp_path):
    """The symbol now names another security (delisted, then reused): Yahoo's bars start long
    after the stored ones and share none of the sessions re-fetched for the overlap. They are
    not appended across the gap as if one series went on; the ticker fails with what to do."""
    data = tmp_path / "d"
    stored = make_bars("2021-01-04", 60, seed=4)
    fake_fetch({"AAA": stored, "BBB": make_bars("2024-01-02", 30, seed=5)})
    assert cli("download", "AAA", "BBB", "--data-dir", data, "-q").exit_code == 0
    before = (data / "store" / "AAA.parquet").read_bytes()
    fake_fetch({"AAA": make_bars("2023-05-01", 40, seed=6), "BBB": make_bars("2024-01-02", 35, seed=5)})
    res = cli("download", "AAA", "BBB", "--data-dir", data, "--json")
    assert res.exit_code == 3, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc["ok"]) == {"BBB"}
    reason = doc["failed"]["AAA"]
    assert f"no longer include the stored sessions {stored.index[-5].date()} to {stored.index[-1].date()}" in reason
    assert "2023-05-01" in reason and "unchanged" in reason
    assert f"delete {data / 'store' / 'AAA.parquet'} and run `forecaster download --data-dir {data} AAA`" in reason
    assert (data / "store" / "AAA.parquet").read_bytes() == before


def test_download_store_file_with_a_bad_bar_says_to_delete_it(cli, fake_fetch, tmp_path):
    """A close of -1 in the stored file (an older version, an edit by hand) is no bad answer
    from Yahoo: every later download would fail the same way until the file is deleted."""
    data = tmp_path / "d"
    bars = make_bars("2021-01-04", 40, seed=4)
    bad = bars.copy()
    bad.loc["2021-01-18", "close"] = -1.0
    path = forecaster.store.save_store(data, "AAA", bad)
    before = path.read_bytes()
    fake_fetch({"AAA": bars, "BBB": make_bars("2021-01-04", 40, seed=5)})
    res = cli("download", "AAA", "BBB", "--data-dir", data, "--json")
    assert res.exit_code == 3, res.stderr
    assert json.loads(res.stdout)["failed"] == {
        "AAA": "the stored file holds bad bars (close -1 on 2021-01-18 is not a finite positive price); "
        f"delete {path} and run `forecaster download --data-dir {data} AAA`"
    }
    assert path.read_bytes() == before
    # bad bars from Yahoo are Yahoo's: no file to delete
    fake_fetch({"AAA": bars, "CCC": bad})
    res = cli("download", "CCC", "--data-dir", data, "--json")
    assert json.loads(res.stdout)["failed"] == {"CCC": "close -1 on 2021-01-18 is not a finite positive price"}
    path.unlink()
    assert cli("download", "AAA", "--data-dir", data, "-q").exit_code == 0


# ---------------------------------------------------------------------------- exit 75


def test_download_network_down_for_every_ticker_is_tempfail(cli, fake_fetch, tmp_path):
    down = NetworkError("cannot reach Yahoo (ConnectionError: network is unreachable)")
    fake_fetch({"AAA": down, "BBB": down})
    data = tmp_path / "d"
    res = cli("download", "AAA", "BBB", "--data-dir", data)
    assert res.exit_code == 75
    assert _parquets(data) == []
    # nothing was downloaded: no empty table on stdout; each ticker named once, each fact once
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert [line for line in lines if "AAA" in line] == [
        "ERROR: AAA: cannot reach Yahoo (ConnectionError: network is unreachable)"
    ]
    assert sum("BBB" in line for line in lines) == 1
    assert "AAA: AAA" not in res.stderr
    assert lines[-1] == "ERROR: no ticker downloaded (2 failed); retry later"


def test_download_json_when_every_ticker_fails_is_the_error_object_with_each_reason(cli, fake_fetch, tmp_path):
    """Failed as a whole (75 here, 1 for bad bars): stdout holds the error object every command
    prints then, so a wrapper reading `.exit_code` sees the outage, with each ticker's reason."""
    down = NetworkError("cannot reach Yahoo (ConnectionError: network is unreachable)")
    fake_fetch({"AAA": down, "BBB": down})
    res = cli("download", "AAA", "BBB", "--data-dir", tmp_path / "d", "--json")
    assert res.exit_code == 75
    assert json.loads(res.stdout) == {
        "error": "no ticker downloaded (2 failed); retry later",
        "exit_code": 75,
        "failed": {"AAA": str(down), "BBB": str(down)},
    }
    assert res.stderr.strip().splitlines()[-1] == "ERROR: no ticker downloaded (2 failed); retry later"


@pytest.fixture
def via_yahoo(monkeypatch, offline_yfinance):
    """Routes the fetch through the real yfinance code to an in-memory Yahoo with these answers."""

    def install(answers):
        yahoo = FakeYahoo(answers)
        real = forecaster.sources.fetch_with_retry

        def via_fake(ticker, start=None, end=None, *, session=None, **_):
            return real(ticker, start, end, session=yahoo.session(), sleep=lambda s: None)

        monkeypatch.setattr(forecaster.store, "fetch_with_retry", via_fake)
        return yahoo

    return install


@pytest.mark.parametrize("status", [500, 502, 503])
def test_download_yahoo_server_errors_are_tempfail_not_unknown_symbols(cli, via_yahoo, tmp_path, status):
    """yfinance gives a Yahoo 5xx the empty answer of an unknown symbol: the server error is
    still named, and a download left with nothing is a temporary failure (75), not exit 1.
    Two symbols new to yfinance's time-zone cache, and one it knows (its answers differ)."""
    new = [f"SRV{status}A", f"SRV{status}B"]
    known = f"SRV{status}K"
    yahoo = via_yahoo({known: make_bars("2024-01-02", 20)})
    data = tmp_path / "d"
    assert cli("download", known, "--data-dir", data, "-q").exit_code == 0
    before = (data / "store" / f"{known}.parquet").read_bytes()
    yahoo.answers.update(dict.fromkeys([*new, known], status))
    res = cli("download", *new, known, "--data-dir", data)
    assert res.exit_code == 75, res.stderr
    for sym in (*new, known):
        [line] = [ln for ln in res.stderr.splitlines() if ln.startswith(f"ERROR: {sym}:")]
        assert line == f"ERROR: {sym}: Yahoo server error (HTTP {status}); retry later", line
    assert "unknown or delisted" not in res.stderr
    assert res.stderr.splitlines()[-1] == "ERROR: no ticker downloaded (3 failed); retry later"
    assert (data / "store" / f"{known}.parquet").read_bytes() == before


def test_download_a_yahoo_server_error_beside_a_good_ticker_is_partial(cli, via_yahoo, tmp_path):
    via_yahoo({"GOODA": make_bars("2024-01-02", 20), "SRVP": 503})
    data = tmp_path / "d"
    res = cli("download", "GOODA", "SRVP", "--data-dir", data)
    assert res.exit_code == 3, res.stderr
    assert "ERROR: SRVP: Yahoo server error (HTTP 503); retry later" in res.stderr.splitlines()
    assert _parquets(data) == ["GOODA.parquet"]


def test_download_unknown_symbol_through_yfinance_is_still_an_error(cli, via_yahoo, tmp_path):
    """Yahoo's 404 "No data found" stays an unknown symbol: exit 1, with that message."""
    via_yahoo({})
    res = cli("download", "NOSUCHA", "NOSUCHB", "--data-dir", tmp_path / "d")
    assert res.exit_code == 1, res.stderr
    for sym in ("NOSUCHA", "NOSUCHB"):
        assert f"ERROR: {sym}: no data (unknown or delisted symbol?)" in res.stderr.splitlines()
    assert "server error" not in res.stderr


def test_download_network_down_keeps_existing_store(cli, fake_fetch, tmp_path):
    data = tmp_path / "d"
    fake = fake_fetch({"AAA": make_bars("2024-01-02", 20)})
    assert cli("download", "AAA", "--data-dir", data, "-q").exit_code == 0
    before = (data / "store" / "AAA.parquet").read_bytes()
    fake.answers["AAA"] = NetworkError("network is unreachable")
    res = cli("download", "AAA", "--data-dir", data)
    assert res.exit_code == 75
    assert (data / "store" / "AAA.parquet").read_bytes() == before


def test_download_lock_held_is_tempfail_naming_holder(cli, fake_fetch, tmp_path):
    fake = fake_fetch({"AAA": make_bars("2024-01-02", 20)})
    data = tmp_path / "d"
    with fsio.file_lock(data / "store" / ".lock"):
        res = cli("download", "AAA", "--data-dir", data)
    assert res.exit_code == 75
    assert f"pid {os.getpid()}" in res.stderr
    assert "holds" in res.stderr
    assert fake.calls == []
    assert _parquets(data) == []
    # once the lock is free the same command works
    assert cli("download", "AAA", "--data-dir", data, "-q").exit_code == 0


def test_train_without_stored_bars_names_a_download_into_its_own_data_folder(cli, fake_fetch, tmp_path):
    """A config whose data folder is not the default one: the download the error asks for,
    run as written, fills that folder (not data/ of the current directory), after which
    the bars are found."""
    root = tmp_path / "my store"
    root.mkdir()
    cfg = tmp_path / "prod.toml"
    cfg.write_text(f'[data]\nsource = "yahoo"\ndata_dir = "{root}"\ntickers = ["AAA"]\n', encoding="utf-8")
    res = cli("train", "--config", cfg, "--epochs", "1")
    assert res.exit_code == 1
    advice = re.search(r"run `forecaster (download [^`]*)` first", res.stderr)
    assert advice, res.stderr
    fake_fetch({"AAA": make_bars("2020-01-02", 60, seed=1)})
    assert cli(*shlex.split(advice.group(1))).exit_code == 0
    assert (root / "store" / "AAA.parquet").is_file()
    assert not Path("data").exists()
    res = cli("train", "--config", cfg, "--epochs", "1")
    assert "no stored data" not in res.stderr


def test_download_with_yfinances_cache_on_a_full_disk_names_the_cache_not_yahoo(cli, via_yahoo, tmp_path, monkeypatch):
    """The disk of <data-dir>/.yfinance-cache full: yfinance's SQLite cache raised "database or
    disk is full", told as "unexpected answer from Yahoo", which blames Yahoo. The line names
    the cache's folder and the full disk, exit 1 (not 75: no retry makes room)."""
    import peewee
    from yfinance import cache

    def full(self, *args, **kwargs):
        raise peewee.OperationalError("database or disk is full")

    monkeypatch.setattr(cache._TzCache, "lookup", full)
    via_yahoo({"FULLA": make_bars("2024-01-02", 20)})
    data = tmp_path / "d"
    res = cli("download", "FULLA", "--data-dir", data)
    assert res.exit_code == 1, res.stderr
    folder = cache._TzDBManager.get_location()
    assert res.stderr.splitlines() == [
        f"ERROR: FULLA: cannot write yfinance's cache {folder}: No space left on device (database or disk is full)",
        "ERROR: no ticker downloaded (1 failed)",
    ]
    assert "Yahoo" not in res.stderr.replace("yfinance's", "")
