"""Unit tests for the policy layer's calendar durations (`stackvault.policy.duration`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from stackvault.errors import EXIT_USAGE, UsageError
from stackvault.policy.duration import Duration, parse_duration

# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", Duration(days=7)),
        ("2w", Duration(days=14)),
        ("6m", Duration(months=6)),
        ("1y", Duration(years=1)),
        ("12h", Duration(hours=12)),
        ("1y2m", Duration(years=1, months=2)),
        ("1y2m3d4h", Duration(years=1, months=2, days=3, hours=4)),
        ("4h3d2m1y", Duration(years=1, months=2, days=3, hours=4)),  # any order
        ("1w2d", Duration(days=9)),  # weeks add to days
        ("  3d\n", Duration(days=3)),  # surrounding whitespace is ignored
        ("007d", Duration(days=7)),
        ("0y5d", Duration(days=5)),  # a zero component is fine if the whole is not zero
        ("400d", Duration(days=400)),  # no carrying into larger units
    ],
)
def test_parse_valid(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "x",
        "7",  # no unit
        "d",  # no number
        "7x",
        "7D",  # units are lower-case only (M would be ambiguous)
        "1M",
        "-1d",
        "+1d",
        "1.5d",
        "1d 2h",  # no inner whitespace
        "1d,2h",
        "7 d",
        "1y2",
        "7days",
        "1min",
    ],
)
def test_parse_invalid_shows_expected_form(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_duration(text)
    message = str(info.value)
    assert "expected a duration like 7d, 2w, 6m or 1y2m" in message
    assert f"got {text!r}" in message
    assert info.value.exit_code == EXIT_USAGE


def test_parse_repeated_unit_is_refused() -> None:
    with pytest.raises(UsageError, match=r"unit 'd' given twice.*got '1d2d'"):
        parse_duration("1d2d")


@pytest.mark.parametrize("text", ["0d", "0y0m0d0h", "0w"])
def test_parse_zero_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="longer than zero"):
        parse_duration(text)


# --- printing --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["7d", "6m", "1y", "5h", "1y2m", "1y2m3d4h", "1y4h", "2m3d"])
def test_str_round_trips_canonical_text(text: str) -> None:
    assert str(parse_duration(text)) == text


def test_str_normalises() -> None:
    assert str(parse_duration("2w")) == "14d"
    assert str(parse_duration("4h1y")) == "1y4h"
    assert str(Duration()) == "0h"


# --- construction ----------------------------------------------------------------------------


def test_negative_or_non_int_components_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="days"):
        Duration(days=-1)
    with pytest.raises(ValueError, match="hours"):
        Duration(hours=True)


def test_is_zero() -> None:
    assert Duration().is_zero()
    assert not Duration(hours=1).is_zero()


# --- subtracting -----------------------------------------------------------------------------


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        # Month ends clamp to the shorter month instead of spilling into the next one.
        (_utc(2026, 3, 31, 12), "1m", _utc(2026, 2, 28, 12)),
        (_utc(2024, 3, 31, 12), "1m", _utc(2024, 2, 29, 12)),  # leap year
        (_utc(2026, 5, 31), "1m", _utc(2026, 4, 30)),
        (_utc(2026, 12, 31), "10m", _utc(2026, 2, 28)),
        (_utc(2024, 2, 29), "1y", _utc(2023, 2, 28)),
        (_utc(2024, 2, 29), "4y", _utc(2020, 2, 29)),
        # Across the year boundary.
        (_utc(2026, 1, 15, 8, 30), "1m", _utc(2025, 12, 15, 8, 30)),
        (_utc(2026, 2, 10), "14m", _utc(2024, 12, 10)),
        # Days and hours.
        (_utc(2026, 3, 1), "1d", _utc(2026, 2, 28)),
        (_utc(2026, 1, 1, 2), "3h", _utc(2025, 12, 31, 23)),
        (_utc(2026, 1, 10), "1w", _utc(2026, 1, 3)),
        # All together: 2026-05-10 12:00 -1y2m -> 2025-03-10 12:00 -3d -> 03-07 12:00 -4h -> 08:00.
        (_utc(2026, 5, 10, 12), "1y2m3d4h", _utc(2025, 3, 7, 8)),
        # Months first, then days: Mar 31 -1m = Feb 28, then -1d = Feb 27.
        (_utc(2026, 3, 31), "1m1d", _utc(2026, 2, 27)),
    ],
)
def test_subtract_from(start: datetime, duration: str, expected: datetime) -> None:
    assert parse_duration(duration).subtract_from(start) == expected


def test_subtract_keeps_fixed_offset_zone() -> None:
    zone = timezone(timedelta(hours=-5))
    start = datetime(2026, 3, 31, 23, 0, tzinfo=zone)
    result = parse_duration("1m").subtract_from(start)
    assert result == datetime(2026, 2, 28, 23, 0, tzinfo=zone)
    assert result.tzinfo is zone


def test_subtract_from_naive_datetime() -> None:
    naive = datetime(2026, 1, 2, 0, 30)
    assert Duration(days=1, hours=1).subtract_from(naive) == datetime(2025, 12, 31, 23, 30)


def test_days_are_calendar_days_and_hours_are_elapsed_across_dst() -> None:
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database")
    # Clocks in Berlin went from 02:00 CET to 03:00 CEST on 2026-03-29.
    noon_after = datetime(2026, 3, 29, 12, 0, tzinfo=berlin)
    one_day = Duration(days=1).subtract_from(noon_after)
    assert (one_day.hour, one_day.day) == (12, 28)  # same wall-clock time, a day earlier
    # ...which is 23 elapsed hours (compare in UTC: same-zone subtraction is wall-clock).
    assert noon_after.astimezone(UTC) - one_day.astimezone(UTC) == timedelta(hours=23)
    day_of_hours = Duration(hours=24).subtract_from(noon_after)
    assert (day_of_hours.hour, day_of_hours.day) == (11, 28)
    assert noon_after.astimezone(UTC) - day_of_hours.astimezone(UTC) == timedelta(hours=24)


@pytest.mark.parametrize("duration", [Duration(years=3000), Duration(days=10**10)])
def test_subtract_before_year_one_is_a_usage_error(duration: Duration) -> None:
    with pytest.raises(UsageError, match="before year 1"):
        duration.subtract_from(_utc(2026, 1, 1))
