"""Trading sessions on the exchange calendar (forecaster.sessions)."""

from __future__ import annotations

import ast
import inspect

import exchange_calendars
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import forecaster.sessions as sessions_module
from forecaster.errors import ConfigError
from forecaster.sessions import (
    check_calendar,
    get_calendar,
    is_open_session_unfinished,
    last_completed_session,
    next_sessions,
    sessions_after_count,
    sessions_in_range,
)

NY = "America/New_York"


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s)


def ny(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz=NY)


def dates(*items: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(x) for x in items]


# --- next_sessions --------------------------------------------------------------------------


def test_next_sessions_skips_christmas_and_the_weekend():
    out = next_sessions("2025-12-24", 4)
    assert list(out) == dates("2025-12-26", "2025-12-29", "2025-12-30", "2025-12-31")


def test_next_sessions_skips_new_year_into_the_next_year():
    assert list(next_sessions("2025-12-31", 2)) == dates("2026-01-02", "2026-01-05")


def test_next_sessions_after_a_non_session_day():
    # Saturday and Christmas Day themselves are not sessions; the answer is the same.
    assert list(next_sessions("2025-12-27", 1)) == dates("2025-12-29")
    assert list(next_sessions("2025-12-25", 1)) == dates("2025-12-26")


def test_next_sessions_skips_good_friday():
    # Good Friday 2025 is April 18; Thursday April 17 is followed by Monday April 21.
    assert list(next_sessions("2025-04-17", 2)) == dates("2025-04-21", "2025-04-22")


def test_next_sessions_shape_and_type():
    out = next_sessions(pd.Timestamp("2024-03-01"), 10)
    assert isinstance(out, pd.DatetimeIndex)
    assert out.dtype == "datetime64[ns]"
    assert out.tz is None
    assert len(out) == 10
    assert (out == out.normalize()).all()
    assert out.is_monotonic_increasing and out.is_unique
    assert (out > ts("2024-03-01")).all()


def test_next_sessions_zero_and_negative():
    assert len(next_sessions("2025-06-02", 0)) == 0
    with pytest.raises(ValueError):
        next_sessions("2025-06-02", -1)


def test_next_sessions_beyond_default_calendar_end():
    # Far past "today + 2 years": a wider calendar is built on demand.
    out = next_sessions("2035-12-24", 2)
    assert list(out) == dates("2035-12-26", "2035-12-27")


def test_tz_aware_date_keeps_its_wall_date():
    out = next_sessions(pd.Timestamp("2025-12-24", tz="UTC"), 1)
    assert list(out) == dates("2025-12-26")


# --- sessions_in_range ----------------------------------------------------------------------


def test_sessions_in_range_is_inclusive_and_skips_weekends():
    out = sessions_in_range("2025-06-02", "2025-06-13")  # Monday .. Friday, two weeks
    assert len(out) == 10
    assert out[0] == ts("2025-06-02") and out[-1] == ts("2025-06-13")
    assert (out.day_of_week < 5).all()


@pytest.mark.parametrize(
    "holiday",
    [
        "2025-04-18",  # Good Friday
        "2024-03-29",  # Good Friday
        "2025-07-04",  # Independence Day
        "2025-11-27",  # Thanksgiving
        "2025-12-25",  # Christmas
        "2025-01-01",  # New Year's Day
        "2012-10-29",  # Hurricane Sandy closure
    ],
)
def test_holidays_are_not_sessions(holiday):
    day = ts(holiday)
    window = sessions_in_range(day - pd.Timedelta(days=7), day + pd.Timedelta(days=7))
    assert day not in window
    assert len(window) >= 8


def test_sessions_in_range_old_data_and_year_count():
    out = sessions_in_range("2004-01-01", "2004-12-31")
    assert out[0] == ts("2004-01-02")
    assert out[-1] == ts("2004-12-31")
    assert 250 <= len(out) <= 253


def test_sessions_in_range_empty_when_reversed_or_no_session():
    assert len(sessions_in_range("2025-06-10", "2025-06-01")) == 0
    assert len(sessions_in_range("2025-12-27", "2025-12-28")) == 0  # a weekend


def test_sessions_in_range_output_is_plain_tz_naive_ns():
    out = sessions_in_range("2020-01-01", "2020-01-31")
    assert out.dtype == "datetime64[ns]"
    assert out.tz is None
    assert out[0] == ts("2020-01-02")


# --- sessions_after_count -------------------------------------------------------------------


def test_sessions_after_count_examples():
    assert sessions_after_count("2025-12-24", "2025-12-31") == 4  # 26, 29, 30, 31
    assert sessions_after_count("2025-12-24", "2025-12-26") == 1
    assert sessions_after_count("2025-12-24", "2025-12-25") == 0  # Christmas is not a session
    assert sessions_after_count("2025-12-24", "2025-12-24") == 0
    assert sessions_after_count("2025-12-31", "2025-12-24") == 0
    assert sessions_after_count("2025-04-17", "2025-04-21") == 1  # Good Friday skipped
    assert sessions_after_count("2025-12-27", "2025-12-29") == 1  # from a Saturday


@settings(max_examples=60, deadline=None)
@given(
    day=st.dates(min_value=pd.Timestamp("1995-01-01").date(), max_value=ts("2027-06-30").date()),
    k=st.integers(min_value=1, max_value=40),
)
def test_count_and_next_sessions_agree(day, k):
    out = next_sessions(day, k)
    assert sessions_after_count(day, out[-1]) == k
    assert list(sessions_in_range(out[0], out[-1])) == list(out)


# --- last_completed_session -----------------------------------------------------------------


def test_last_completed_session_before_and_after_the_close():
    # Monday 2025-07-07; Friday 2025-07-04 was a holiday, so before the close it is the 3rd.
    assert last_completed_session(ny("2025-07-07 15:59")) == ts("2025-07-03")
    assert last_completed_session(ny("2025-07-07 16:00")) == ts("2025-07-07")
    assert last_completed_session(ny("2025-07-07 23:30")) == ts("2025-07-07")
    assert last_completed_session(ny("2025-07-08 09:45")) == ts("2025-07-07")


def test_last_completed_session_in_winter_time():
    # In December New York is UTC-5: the close is 21:00 UTC.
    assert last_completed_session(pd.Timestamp("2025-12-01 20:59", tz="UTC")) == ts("2025-11-28")
    assert last_completed_session(pd.Timestamp("2025-12-01 21:00", tz="UTC")) == ts("2025-12-01")


def test_last_completed_session_naive_now_is_utc():
    # 19:59 UTC is 15:59 in New York in July.
    assert last_completed_session(pd.Timestamp("2025-07-08 19:59")) == ts("2025-07-07")
    assert last_completed_session(pd.Timestamp("2025-07-08 20:00")) == ts("2025-07-08")


def test_last_completed_session_half_day_and_weekend():
    # Christmas Eve closes at 13:00.
    assert last_completed_session(ny("2025-12-24 12:59")) == ts("2025-12-23")
    assert last_completed_session(ny("2025-12-24 13:00")) == ts("2025-12-24")
    # Christmas Day and the weekend: still the 26th... once it closed.
    assert last_completed_session(ny("2025-12-28 12:00")) == ts("2025-12-26")


def test_last_completed_session_default_now_is_tz_naive_and_in_the_past():
    out = last_completed_session()
    assert out.tz is None
    assert out == out.normalize()
    assert out <= pd.Timestamp.now(tz="UTC").tz_localize(None)
    assert out in sessions_in_range(out, out)


# --- is_open_session_unfinished -------------------------------------------------------------


def test_is_open_session_unfinished():
    assert is_open_session_unfinished("2025-07-07", ny("2025-07-07 08:00")) is True
    assert is_open_session_unfinished("2025-07-07", ny("2025-07-07 15:59")) is True
    assert is_open_session_unfinished("2025-07-07", ny("2025-07-07 16:00")) is False
    assert is_open_session_unfinished("2025-07-03", ny("2025-07-07 10:00")) is False  # past
    assert is_open_session_unfinished("2025-07-08", ny("2025-07-07 10:00")) is False  # future
    assert is_open_session_unfinished("2025-12-25", ny("2025-12-25 10:00")) is False  # holiday
    assert is_open_session_unfinished("2025-12-24", ny("2025-12-24 13:30")) is False  # half day


def test_is_open_session_unfinished_uses_the_exchange_date():
    # 02:00 UTC on the 8th is still the evening of the 7th in New York: the 8th is not "today".
    assert is_open_session_unfinished("2025-07-08", pd.Timestamp("2025-07-08 02:00")) is False
    assert is_open_session_unfinished("2025-07-08", pd.Timestamp("2025-07-08 14:00")) is True


def test_is_open_session_unfinished_half_day_closes_early():
    # Christmas Eve closes at 13:00 in New York.
    assert is_open_session_unfinished("2025-12-24", ny("2025-12-24 12:59")) is True
    assert is_open_session_unfinished("2025-12-24", ny("2025-12-24 13:00")) is False


def test_is_open_session_unfinished_grace_after_the_close():
    grace = pd.Timedelta(minutes=15)
    assert is_open_session_unfinished("2025-07-07", ny("2025-07-07 16:14"), grace=grace) is True
    assert is_open_session_unfinished("2025-07-07", ny("2025-07-07 16:15"), grace=grace) is False
    assert is_open_session_unfinished("2025-12-24", ny("2025-12-24 13:10"), grace=grace) is True
    assert is_open_session_unfinished("2025-12-24", ny("2025-12-24 13:16"), grace=grace) is False


def test_is_open_session_unfinished_today_in_the_given_time_zone():
    # 10:00 in Tokyo on the 8th is 21:00 of the 7th in New York: with tz="Asia/Tokyo" the 8th
    # is today, and the New York session of the 8th has not even opened.
    now = pd.Timestamp("2025-07-08 10:00", tz="Asia/Tokyo")
    assert is_open_session_unfinished("2025-07-08", now) is False  # not today in New York
    assert is_open_session_unfinished("2025-07-08", now, "XTKS", tz="Asia/Tokyo") is True
    after_tokyo_close = pd.Timestamp("2025-07-08 16:00", tz="Asia/Tokyo")
    assert is_open_session_unfinished("2025-07-08", after_tokyo_close, "XTKS", tz="Asia/Tokyo") is False


def test_a_bar_in_a_time_zone_other_than_the_calendars_is_judged_by_the_local_hour_not_that_close():
    """A Tokyo ticker in a run on the New York calendar: New York's close says nothing of
    Tokyo's. Before, a Tokyo bar was dropped as unfinished until New York closed (every
    evening forecast in Tokyo a session late), and a New York bar under the Tokyo calendar
    was kept as final hours before New York closed."""
    fallback = {"fallback_close_hour": 18}
    tokyo_evening = pd.Timestamp("2025-07-08 19:00", tz="Asia/Tokyo")  # 06:00 in New York
    assert is_open_session_unfinished("2025-07-08", tokyo_evening, "XNYS", tz="Asia/Tokyo", **fallback) is False
    tokyo_morning = pd.Timestamp("2025-07-08 10:00", tz="Asia/Tokyo")
    assert is_open_session_unfinished("2025-07-08", tokyo_morning, "XNYS", tz="Asia/Tokyo", **fallback) is True
    assert is_open_session_unfinished("2025-07-08", tokyo_morning, "XNYS", tz="Asia/Tokyo") is False
    new_york_morning = ny("2025-07-08 10:56")  # 23:56 in Tokyo, long after its close
    assert is_open_session_unfinished("2025-07-08", new_york_morning, "XTKS", tz="America/New_York", **fallback)
    # a zone on the calendar's clock (Toronto on New York's) keeps the calendar's close, half days too
    assert is_open_session_unfinished("2025-12-24", ny("2025-12-24 13:30"), "XNYS", tz="America/Toronto") is False


def test_a_day_past_a_calendars_holiday_data_is_judged_by_the_local_hour():
    """exchange_calendars holds the Shanghai exchange's holidays only to 2026-12-31: a bar of a
    later day was an unexpected error for download and predict."""
    noon = pd.Timestamp("2027-03-05 12:00", tz="Asia/Shanghai")
    assert is_open_session_unfinished("2027-03-05", noon, "XSHG", fallback_close_hour=18) is True
    evening = pd.Timestamp("2027-03-05 19:00", tz="Asia/Shanghai")
    assert is_open_session_unfinished("2027-03-05", evening, "XSHG", fallback_close_hour=18) is False


def test_is_open_session_unfinished_fallback_hour_on_a_day_the_calendar_does_not_trade():
    # New York is closed on Christmas Day; a bar dated that day comes from another exchange.
    assert is_open_session_unfinished("2025-12-25", ny("2025-12-25 17:59"), fallback_close_hour=18) is True
    assert is_open_session_unfinished("2025-12-25", ny("2025-12-25 18:00"), fallback_close_hour=18) is False
    assert is_open_session_unfinished("2025-12-25", ny("2025-12-25 17:59")) is False


def test_is_open_session_unfinished_round_the_clock():
    assert is_open_session_unfinished("2025-12-25", pd.Timestamp("2025-12-25 23:59"), None, tz="UTC") is True
    assert is_open_session_unfinished("2025-12-25", pd.Timestamp("2025-12-26 00:00"), None, tz="UTC") is False
    with pytest.raises(ValueError, match="time zone"):
        is_open_session_unfinished("2025-12-25", pd.Timestamp("2025-12-25 12:00"), None)


# --- calendars ------------------------------------------------------------------------------


def test_unknown_calendar_is_config_error():
    with pytest.raises(ConfigError) as info:
        get_calendar("NOPE")
    assert "NOPE" in str(info.value)
    assert "XNYS" in str(info.value)
    with pytest.raises(ConfigError):
        next_sessions("2025-12-24", 1, calendar="NOT-A-CALENDAR")
    with pytest.raises(ConfigError):
        sessions_in_range("2025-01-01", "2025-02-01", calendar="")


def test_dates_outside_a_calendars_holiday_data_are_config_errors_not_wrong_sessions():
    """exchange_calendars holds some exchanges' holidays for a span only (Shanghai: from
    1990-12-03 to 2026-12-31 in the version this was written with). Before, a date before the
    span was answered with the span's first sessions (the day after 1989-06-01 was 1990-12-03)
    and a date after it was an unexpected ValueError."""
    first, last = sessions_module._bounds("XSHG")
    assert first is not None and last is not None  # a bounded calendar, or this test tests nothing
    before = first - pd.Timedelta(days=200)
    after = last + pd.Timedelta(days=60)
    for ask in (
        lambda: next_sessions(before, 3, calendar="XSHG"),
        lambda: sessions_after_count(before, first + pd.Timedelta(days=10), calendar="XSHG"),
        lambda: sessions_in_range(before, first + pd.Timedelta(days=10), calendar="XSHG"),
    ):
        with pytest.raises(
            ConfigError, match=f"only has sessions from {first.date()}; cannot answer for {before.date()}"
        ):
            ask()
    for ask in (
        lambda: next_sessions(after, 3, calendar="XSHG"),
        lambda: sessions_in_range(last - pd.Timedelta(days=10), after, calendar="XSHG"),
        lambda: last_completed_session(after + pd.Timedelta(hours=12), calendar="XSHG"),
    ):
        with pytest.raises(
            ConfigError, match=f"only has sessions up to {last.date()}; cannot answer for {after.date()}"
        ) as e:
            ask()
        # what to do, when the year after its data comes (XSHG's end on 2026-12-31 in 4.13)
        assert str(e.value).endswith("a newer version may hold later years, pip install -U exchange-calendars)")
    inside = first + pd.Timedelta(days=200)
    assert len(next_sessions(inside, 3, calendar="XSHG")) == 3


def test_sessions_asked_for_past_the_end_of_a_calendars_holiday_data_say_to_install_a_newer_one():
    """The forecast of a run on Shanghai's calendar made in the last days of its holiday data
    (to 2026-12-31 in exchange_calendars 4.13): the sessions of its last steps are not in the
    data. The error said only that the data end there; it now says what may hold later years,
    as the error of a date after the data does."""
    _, last = sessions_module._bounds("XSHG")
    assert last is not None  # a bounded calendar, or this test tests nothing
    tail = sessions_in_range(last - pd.Timedelta(days=20), last, calendar="XSHG")
    day = tail[-3]  # two sessions left after it
    assert list(next_sessions(day, 2, calendar="XSHG")) == list(tail[-2:])
    with pytest.raises(ConfigError) as e:
        next_sessions(day, 5, calendar="XSHG")
    assert str(e.value) == (
        f"exchange calendar 'XSHG' only has sessions up to {last.date()}: 2 after {day.date()}, cannot give 5 "
        f"(exchange_calendars {exchange_calendars.__version__}: a newer version may hold later years, "
        "pip install -U exchange-calendars)"
    )


def test_a_clock_set_before_1988_is_named_not_taken_for_a_calendar_without_sessions(monkeypatch):
    """A machine whose clock was reset to the epoch (1970-01-01) builds its calendars to two
    years after that, which ends before they start (1990): the error said that XNYS had no
    sessions from 1990-01-01 to 1972-12-31, a fault of the calendar. It names the clock."""
    monkeypatch.setattr(sessions_module, "_clock_today", lambda: ts("1970-01-01"))
    sessions_module._build.cache_clear()
    sessions_module.get_calendar.cache_clear()
    try:
        for ask in (
            lambda: check_calendar("XNYS"),
            lambda: next_sessions("2024-12-31", 3),
            lambda: last_completed_session(pd.Timestamp("2025-01-02 22:00", tz="UTC")),
        ):
            with pytest.raises(ConfigError) as e:
                ask()
            assert str(e.value) == (
                "this machine's clock says today is 1970-01-01, before the years the exchange calendars are "
                "read for (1990 on): set the clock to the right date"
            )
        monkeypatch.setattr(sessions_module, "_clock_today", lambda: ts("1988-03-01"))  # to 1990-12-31: enough
        assert list(next_sessions("1990-12-28", 2)) == dates("1990-12-31", "1991-01-02")
    finally:
        sessions_module._build.cache_clear()
        sessions_module.get_calendar.cache_clear()


def test_a_calendar_that_cannot_be_built_is_one_config_error(monkeypatch):
    """exchange_calendars 4.13 cannot build its Tel Aviv calendar at all: train accepted the
    name, then predict and download failed with a 90 KB unexpected error."""
    import exchange_calendars

    def broken(name, **kwargs):
        raise ValueError("Special dates [" + ", ".join(["Timestamp('1990-01-07 13:40:00+0000')"] * 2000) + "]")

    monkeypatch.setattr(exchange_calendars, "get_calendar", broken)
    sessions_module._build.cache_clear()
    try:
        with pytest.raises(ConfigError) as info:
            sessions_module.check_calendar("XLON")
    finally:
        monkeypatch.undo()
        sessions_module._build.cache_clear()
    message = str(info.value)
    assert message.startswith("exchange calendar 'XLON' cannot be built by exchange_calendars "), message
    assert "ValueError: Special dates" in message and len(message) < 300, message


def test_calendar_is_cached_and_aliases_resolve():
    assert get_calendar("XNYS") is get_calendar("XNYS")
    assert get_calendar("NYSE").name == "XNYS"


def test_a_calendar_name_is_read_in_any_case_and_without_blanks_around_it():
    assert check_calendar("xnys") == "XNYS"
    assert check_calendar(" nyse ") == "XNYS"
    assert list(next_sessions("2025-12-24", 1, calendar="xnys")) == dates("2025-12-26")


@pytest.mark.parametrize("n", [True, 1.0, "1"])
def test_a_count_of_sessions_that_is_no_integer_is_refused(n):
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        next_sessions("2025-06-02", n)


@pytest.mark.parametrize("call", [lambda: next_sessions(pd.NaT, 1), lambda: sessions_in_range("2025-01-02", pd.NaT)])
def test_a_missing_date_is_refused_not_taken_for_a_day(call):
    with pytest.raises(ValueError, match="is missing \\(NaT\\)"):
        call()


def test_other_calendar_has_its_own_holidays():
    # London is closed on Boxing Day, New York is not.
    assert list(next_sessions("2025-12-24", 1, calendar="XLON")) == dates("2025-12-29")
    assert list(next_sessions("2025-12-24", 1)) == dates("2025-12-26")


def test_module_does_not_import_exchange_calendars_at_import_time():
    # Keeps ``forecaster --help`` fast: the import happens inside the functions only.
    tree = ast.parse(inspect.getsource(sessions_module))
    top_level = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            top_level.append(node.module or "")
    assert top_level, "expected some top-level imports"
    assert not any(name.split(".")[0] == "exchange_calendars" for name in top_level)


def test_a_forecast_as_of_a_day_the_calendar_holds_is_dated_after_its_data_ends():
    """predict --as-of 1993-06-01 on a Shanghai run, run after that calendar's holiday data
    ends (2026-12-31): the age of the last bar is counted to the as-of date. Before, today's
    session could not be found and the whole forecast failed."""
    from forecaster.prediction import _age_note

    _, last = sessions_module._bounds("XSHG")
    later = last + pd.Timedelta(days=60)
    warn, note = _age_note(pd.Timestamp("1993-05-28"), pd.Timestamp("1993-06-01"), later, "XSHG")
    assert (warn, note) == (True, "last bar 1993-05-28, 2 session(s) before --as-of 1993-06-01")  # 05-31, 06-01
    # a bar as fresh as the as-of date allows (1993-05-29 and 30 are a weekend) says so, not "0 before"
    warn, note = _age_note(pd.Timestamp("1993-05-28"), pd.Timestamp("1993-05-30"), later, "XSHG")
    assert (warn, note) == (False, "last bar 1993-05-28, the last session up to --as-of 1993-05-30")
    with pytest.raises(ConfigError, match=f"only has sessions up to {last.date()}"):
        _age_note(pd.Timestamp("1993-05-28"), None, later, "XSHG")


# --- dates of today and of the future ---------------------------------------------------------


def test_a_day_already_begun_east_of_utc_is_not_in_the_future():
    """At 10:00 UTC it is already tomorrow at UTC+14 (Kiritimati): an --as-of of that day, or a
    bar dated on it, is not from the future; the day after is, and so is that day at 09:59."""
    from forecaster.sessions import dated_after_today, latest_possible_day, parse_day

    at_ten = pd.Timestamp("2025-01-02 10:00", tz="UTC")
    assert latest_possible_day(at_ten) == ts("2025-01-03")
    assert latest_possible_day(at_ten - pd.Timedelta(minutes=1)) == ts("2025-01-02")
    assert parse_day("2025-01-03", "--as-of", now=at_ten) == ts("2025-01-03")
    with pytest.raises(ConfigError, match="--as-of 2025-01-03 is in the future"):
        parse_day("2025-01-03", "--as-of", now=at_ten - pd.Timedelta(minutes=1))
    with pytest.raises(ConfigError, match="--since 2025-01-04 is in the future"):
        parse_day("2025-01-04", "--since", now=at_ten)
    bars = pd.DatetimeIndex(dates("2025-01-02", "2025-01-03"))
    assert dated_after_today(bars, at_ten) is None
    late = bars.append(pd.DatetimeIndex(dates("2025-01-04", "2025-02-01")))
    assert dated_after_today(late, at_ten) == "2 bar(s) dated after today, from 2025-01-04 to 2025-02-01"


def test_a_tz_aware_date_east_of_utc_keeps_its_wall_date():
    """The morning of 2025-12-24 in Tokyo is still 12-23 in UTC: the date is the 24th, whose
    next session is the 26th (not the 24th, as the UTC date would give)."""
    tokyo = pd.Timestamp("2025-12-24 08:00", tz="Asia/Tokyo")
    assert list(next_sessions(tokyo, 1)) == dates("2025-12-26")
    assert sessions_after_count(tokyo, "2025-12-26") == 1
    assert list(sessions_in_range(tokyo, tokyo)) == dates("2025-12-24")


def test_bars_outside_a_calendars_holiday_data_are_not_called_non_sessions():
    """Shanghai's holiday data start on 1990-12-03: a bar of 1990-11-30 cannot be judged and is
    not named, while a Saturday bar inside the data is."""
    from forecaster.sessions import not_sessions

    first, _ = sessions_module._bounds("XSHG")
    assert first == ts("1990-12-03")  # the data this test is written for
    bars = pd.DatetimeIndex(dates("1990-11-29", "1990-11-30", "1990-12-03", "1990-12-08", "1990-12-10"))
    assert list(not_sessions(bars, "XSHG")) == dates("1990-12-08")
    assert list(not_sessions(bars[:2], "XSHG")) == []
