"""Calendar-aware durations such as ``1y2m3d4h`` (policy layer): parsing, printing, subtracting.

The notation is restic's (``--keep-within 1y5m7d2h``) plus ``w`` for weeks: y = years,
m = months (never minutes), w = weeks, d = days, h = hours. Weeks are stored as days, so
``2w`` prints as ``14d``.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from stackvault.errors import UsageError

_EXPECTED = (
    "expected a duration like 7d, 2w, 6m or 1y2m (y=years, m=months, w=weeks, d=days, h=hours)"
)
_WHOLE = re.compile(r"(?:[0-9]+[ymwdh])+")
_PART = re.compile(r"([0-9]+)([ymwdh])")


@dataclass(frozen=True)
class Duration:
    """A span of calendar time: whole years, months, days and hours, each ``>= 0``.

    Years and months are calendar units (their length depends on the date they are subtracted
    from); days are calendar days (wall-clock, so a day across a DST change is 23 or 25 hours);
    hours are exact elapsed hours.
    """

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __post_init__(self) -> None:
        for name in ("years", "months", "days", "hours"):
            value = getattr(self, name)
            # bool is an int subclass; Duration(days=True) is a bug, not one day.
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Duration.{name} must be an int >= 0, got {value!r}")

    def is_zero(self) -> bool:
        """True if every component is zero."""
        return self.years == self.months == self.days == self.hours == 0

    def subtract_from(self, dt: datetime) -> datetime:
        """Return ``dt`` moved back by this duration.

        Years and months are subtracted first, as calendar arithmetic that keeps the wall-clock
        time and clamps the day to the target month's length (Mar 31 - 1m = Feb 28, or Feb 29 in
        a leap year); then days as calendar days (wall-clock time kept); then hours as elapsed
        time (for a tz-aware ``dt`` measured in UTC, then shown in ``dt``'s zone again). The
        result has ``dt``'s tzinfo. Raises `UsageError` if the result falls outside the range
        `datetime` can represent (before year 1).
        """
        try:
            month_index = dt.year * 12 + (dt.month - 1) - (self.years * 12 + self.months)
            year, month0 = divmod(month_index, 12)
            if year < 1:
                raise OverflowError
            day = min(dt.day, calendar.monthrange(year, month0 + 1)[1])
            result = dt.replace(year=year, month=month0 + 1, day=day) - timedelta(days=self.days)
            if result.tzinfo is None:
                return result - timedelta(hours=self.hours)
            # Hours are elapsed time, so step in UTC: across a DST change, wall-clock arithmetic
            # in the local zone would be an hour off.
            utc = result.astimezone(UTC) - timedelta(hours=self.hours)
            return utc.astimezone(result.tzinfo)
        except OverflowError as exc:
            raise UsageError(
                f"the duration {self} reaches back before year 1 from {dt.isoformat()}",
                hint="give a shorter duration",
            ) from exc

    def __str__(self) -> str:
        """The canonical notation, e.g. ``1y2m3d4h``; zero components left out (zero: ``0h``)."""
        parts = [
            f"{value}{unit}"
            for value, unit in (
                (self.years, "y"),
                (self.months, "m"),
                (self.days, "d"),
                (self.hours, "h"),
            )
            if value
        ]
        return "".join(parts) or "0h"


def parse_duration(text: str) -> Duration:
    """Parse restic-style duration notation (``7d``, ``2w``, ``6m``, ``1y2m3d4h``).

    Units may come in any order, each at most once; surrounding whitespace is ignored; units are
    lower-case only (``m`` is months). A duration of zero is refused: as a retention window it
    would keep nothing. Raises `UsageError` naming the expected form on any invalid text.
    """
    stripped = text.strip()
    if not _WHOLE.fullmatch(stripped):
        raise UsageError(f"{_EXPECTED}, got {text!r}")
    values: dict[str, int] = {}
    for number, unit in _PART.findall(stripped):
        if unit in values:
            raise UsageError(f"unit {unit!r} given twice; {_EXPECTED}, got {text!r}")
        values[unit] = int(number)
    duration = Duration(
        years=values.get("y", 0),
        months=values.get("m", 0),
        days=values.get("d", 0) + 7 * values.get("w", 0),
        hours=values.get("h", 0),
    )
    if duration.is_zero():
        raise UsageError(f"a duration must be longer than zero; {_EXPECTED}, got {text!r}")
    return duration
