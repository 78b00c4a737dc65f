"""Durations of a policy (config layer): ``rpo``, ``rto``, ``window``, a check's ``every``.

The notation is `stackvault.policy.duration.parse_duration`'s (``2h``, ``7d``, ``2w``, ``6m``,
``1y2m``; ``m`` is months) with one addition a recovery point objective needs: minutes, written
``min`` and last (``5min``, ``1h30min``). Comparisons (a schedule against an RPO) use nominal
lengths: a month is 30 days, a year 365 days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stackvault.errors import UsageError
from stackvault.policy.duration import Duration, parse_duration

EXPECTED = "a duration like 5min, 2h, 1h30min, 7d, 2w or 1y2m (m = months, min = minutes)"
_MINUTES = re.compile(r"^(?P<calendar>.*?)(?P<minutes>[0-9]+)min$")

_NOMINAL_DAY = 86_400


@dataclass(frozen=True)
class Span:
    """A duration of the configuration: a calendar part (or None) and whole minutes (>= 0)."""

    calendar: Duration | None = None
    minutes: int = 0

    @property
    def seconds(self) -> int:
        """The nominal length in seconds (month = 30 days, year = 365 days)."""
        c = self.calendar or Duration()
        days = c.years * 365 + c.months * 30 + c.days
        return days * _NOMINAL_DAY + c.hours * 3600 + self.minutes * 60

    def __str__(self) -> str:
        """The canonical notation (``2h``, ``1h30min``, ``7d``)."""
        head = str(self.calendar) if self.calendar is not None else ""
        return head + (f"{self.minutes}min" if self.minutes else "")


def span_of_seconds(seconds: int) -> Span:
    """The span of ``seconds`` (whole minutes), as days, hours and minutes."""
    minutes_total = seconds // 60
    days, rest = divmod(minutes_total, 1440)
    hours, minutes = divmod(rest, 60)
    calendar = Duration(days=days, hours=hours) if days or hours else None
    return Span(calendar, minutes)


def parse_span(text: str) -> Span:
    """Parse a policy duration; `UsageError` naming the expected form (zero is refused)."""
    stripped = text.strip()
    match = _MINUTES.match(stripped)
    minutes = int(match["minutes"]) if match else 0
    head = match["calendar"] if match else stripped
    zero = UsageError(f"a duration must be longer than zero, got {text!r}")
    try:
        calendar = parse_duration(head) if head else None
    except UsageError as exc:
        if "longer than zero" in exc.message and not minutes:
            raise zero from None
        raise UsageError(f"expected {EXPECTED}, got {text!r}") from None
    span = Span(calendar, minutes)
    if span.seconds == 0:
        raise zero
    return span
