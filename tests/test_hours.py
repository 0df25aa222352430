"""Business hours: days, ranges, midnight crossing, time zones and DST changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from callback_ari.core.hours import BusinessHours


def utc(year: int, month: int, day: int, hour: int, minute: int) -> int:
    """Epoch ms of a UTC wall time."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


# 2025-01-06 is a Monday; 2025-01-10 a Friday.


def test_empty_spec_is_always_open() -> None:
    hours = BusinessHours.parse("", "UTC")
    assert hours.always_open
    assert hours.is_open(utc(2025, 1, 11, 3, 0))
    assert hours.next_open_ms(utc(2025, 1, 11, 3, 0)) == utc(2025, 1, 11, 3, 0)
    assert hours.next_close_ms(utc(2025, 1, 11, 3, 0)) is None


def test_weekday_window() -> None:
    hours = BusinessHours.parse("mon-fri 08:00-18:00", "UTC")
    assert not hours.is_open(utc(2025, 1, 6, 7, 59))
    assert hours.is_open(utc(2025, 1, 6, 8, 0))
    assert hours.is_open(utc(2025, 1, 6, 17, 59))
    assert not hours.is_open(utc(2025, 1, 6, 18, 0))
    assert not hours.is_open(utc(2025, 1, 11, 12, 0))  # Saturday
    # Friday evening -> Monday morning
    assert hours.next_open_ms(utc(2025, 1, 10, 18, 0)) == utc(2025, 1, 13, 8, 0)
    assert hours.next_close_ms(utc(2025, 1, 6, 9, 0)) == utc(2025, 1, 6, 18, 0)
    assert hours.next_close_ms(utc(2025, 1, 11, 9, 0)) == utc(2025, 1, 13, 18, 0)


def test_window_crossing_midnight() -> None:
    hours = BusinessHours.parse("fri 22:00-02:00", "UTC")
    assert not hours.is_open(utc(2025, 1, 10, 21, 59))
    assert hours.is_open(utc(2025, 1, 10, 22, 0))
    assert hours.is_open(utc(2025, 1, 11, 1, 59))  # Saturday early morning
    assert not hours.is_open(utc(2025, 1, 11, 2, 0))
    assert not hours.is_open(utc(2025, 1, 9, 23, 0))  # Thursday night
    assert hours.next_open_ms(utc(2025, 1, 12, 12, 0)) == utc(2025, 1, 17, 22, 0)
    assert hours.next_close_ms(utc(2025, 1, 10, 23, 0)) == utc(2025, 1, 11, 2, 0)


def test_sunday_night_into_monday_wraps_the_week() -> None:
    hours = BusinessHours.parse("sun 23:00-01:00", "UTC")
    assert hours.is_open(utc(2025, 1, 13, 0, 30))  # Monday 00:30
    assert not hours.is_open(utc(2025, 1, 13, 1, 0))


def test_several_windows_lists_and_separators() -> None:
    hours = BusinessHours.parse("mon,wed 09:00-12:00 13:00-17:00; sat 09:00-12:00", "UTC")
    assert hours.is_open(utc(2025, 1, 6, 9, 30))  # Monday
    assert not hours.is_open(utc(2025, 1, 6, 12, 30))  # lunch
    assert hours.is_open(utc(2025, 1, 8, 16, 0))  # Wednesday
    assert not hours.is_open(utc(2025, 1, 7, 10, 0))  # Tuesday
    assert hours.is_open(utc(2025, 1, 11, 11, 0))  # Saturday
    assert hours.next_open_ms(utc(2025, 1, 6, 12, 30)) == utc(2025, 1, 6, 13, 0)
    comma = BusinessHours.parse("mon-fri 08:00-18:00, sat 09:00-12:00", "UTC")
    assert comma.is_open(utc(2025, 1, 11, 10, 0)) and not comma.is_open(utc(2025, 1, 11, 13, 0))


def test_whole_days_never_close() -> None:
    hours = BusinessHours.parse("daily 00:00-24:00", "UTC")
    assert hours.is_open(utc(2025, 1, 6, 23, 59))
    assert hours.next_close_ms(utc(2025, 1, 6, 12, 0)) is None
    evening = BusinessHours.parse("mon 18:00-24:00", "UTC")
    assert evening.is_open(utc(2025, 1, 6, 23, 59))
    assert not evening.is_open(utc(2025, 1, 7, 0, 0))


def test_hours_are_in_the_queue_time_zone() -> None:
    # 09:00-17:00 in New York is 14:00-22:00 UTC in winter; in Berlin 08:00-16:00 UTC.
    ny = BusinessHours.parse("mon-fri 09:00-17:00", "America/New_York")
    berlin = BusinessHours.parse("mon-fri 09:00-17:00", "Europe/Berlin")
    assert not ny.is_open(utc(2025, 1, 6, 13, 59)) and ny.is_open(utc(2025, 1, 6, 14, 0))
    assert berlin.is_open(utc(2025, 1, 6, 8, 0)) and not berlin.is_open(utc(2025, 1, 6, 16, 0))
    # Friday 17:00 New York is Friday 22:00 UTC; next open Monday 14:00 UTC
    assert ny.next_open_ms(utc(2025, 1, 10, 22, 0)) == utc(2025, 1, 13, 14, 0)
    # Tokyo Monday 08:00 local is Sunday 23:00 UTC: the local weekday decides
    tokyo = BusinessHours.parse("mon 08:00-09:00", "Asia/Tokyo")
    assert tokyo.is_open(utc(2025, 1, 5, 23, 30))
    assert not tokyo.is_open(utc(2025, 1, 6, 23, 30))


def test_dst_spring_forward_keeps_wall_clock_hours() -> None:
    # New York switches from EST (UTC-5) to EDT (UTC-4) on Sunday 2025-03-09.
    hours = BusinessHours.parse("daily 09:00-17:00", "America/New_York")
    assert hours.is_open(utc(2025, 3, 8, 14, 0)) and not hours.is_open(utc(2025, 3, 8, 13, 59))
    assert hours.is_open(utc(2025, 3, 10, 13, 0)) and not hours.is_open(utc(2025, 3, 10, 12, 59))
    # Saturday 17:00 EST -> Sunday 09:00 EDT is 15 real hours, not 16
    assert hours.next_open_ms(utc(2025, 3, 8, 22, 0)) == utc(2025, 3, 9, 13, 0)
    assert hours.next_close_ms(utc(2025, 3, 9, 13, 0)) == utc(2025, 3, 9, 21, 0)


def test_window_starting_inside_the_dst_gap_opens_when_the_gap_ends() -> None:
    # 02:00-04:00 on 2025-03-09 in New York: 02:00-03:00 does not exist.
    hours = BusinessHours.parse("sun 02:30-04:00", "America/New_York")
    start = hours.next_open_ms(utc(2025, 3, 9, 5, 0))  # Sunday 00:00 EST
    assert start == utc(2025, 3, 9, 7, 0)  # 03:00 EDT, the moment the gap ends
    assert hours.is_open(start) and not hours.is_open(start - 1000)
    assert hours.next_close_ms(start) == utc(2025, 3, 9, 8, 0)  # 04:00 EDT


def test_dst_fall_back_window_lasts_one_hour_longer() -> None:
    # Europe/Berlin returns from CEST (UTC+2) to CET (UTC+1) on Sunday 2025-10-26 at 03:00.
    hours = BusinessHours.parse("sun 00:00-06:00", "Europe/Berlin")
    opened = hours.next_open_ms(utc(2025, 10, 25, 12, 0))
    assert opened == utc(2025, 10, 25, 22, 0)  # 00:00 CEST
    assert hours.next_close_ms(opened) == utc(2025, 10, 26, 5, 0)  # 06:00 CET: 7 real hours


@pytest.mark.parametrize(
    ("spec", "tz", "message"),
    [
        ("mon 25:00-26:00", "UTC", "bad time in '25:00-26:00'"),
        ("mon 08:60-09:00", "UTC", "bad time in"),
        ("funday 08:00-09:00", "UTC", "unknown day 'funday'"),
        ("08:00-09:00", "UTC", "has no day before it"),
        ("mon", "UTC", "need a time range"),
        ("mon 08:00-09:00 tue", "UTC", "need a time range"),
        ("mon 08:00-08:00", "UTC", "empty time range"),
        ("mon 8-9", "UTC", "bad time range '8-9'"),
        ("mon 08:00-09:00", "Mars/Base", "unknown time zone 'Mars/Base'"),
        ("mon 08:00-09:00", "../etc/passwd", "unknown time zone"),
    ],
)
def test_bad_specs_explain_themselves(spec: str, tz: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        BusinessHours.parse(spec, tz)
    assert message in str(info.value)


def test_day_names_ranges_and_aliases() -> None:
    hours = BusinessHours.parse("Friday-Mon 10:00-11:00", "UTC")
    open_days = {d for d in range(6, 13) if hours.is_open(utc(2025, 1, d, 10, 30))}
    assert open_days == {6, 10, 11, 12}  # Mon, Fri, Sat, Sun
    weekends = BusinessHours.parse("weekends 10:00-11:00", "UTC")
    assert {d for d in range(6, 13) if weekends.is_open(utc(2025, 1, d, 10, 30))} == {11, 12}
