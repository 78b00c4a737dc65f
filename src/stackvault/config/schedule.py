"""Schedules (config layer): cron expressions checked with croniter, and the schedule a policy
gets when it names none.

The derivation rule: the largest interval of `STEPS` that is at most half the RPO. Half, so
that a run may take the other half and the newest restore point is still never older than the
RPO; `STEPS` are intervals that divide an hour or a day evenly, so runs fall on the same
minutes every hour (or hours every day). An RPO under 2 minutes gets every minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from croniter import croniter  # type: ignore[import-untyped]

from stackvault.config.durations import Span
from stackvault.errors import UsageError

STEPS: tuple[tuple[int, str], ...] = (
    (60, "* * * * *"),
    (120, "*/2 * * * *"),
    (300, "*/5 * * * *"),
    (600, "*/10 * * * *"),
    (900, "*/15 * * * *"),
    (1800, "*/30 * * * *"),
    (3600, "0 * * * *"),
    (7200, "0 */2 * * *"),
    (10800, "0 */3 * * *"),
    (14400, "0 */4 * * *"),
    (21600, "0 */6 * * *"),
    (43200, "0 */12 * * *"),
    (86400, "0 2 * * *"),
)
"""(interval in seconds, cron expression), shortest first."""

_SAMPLE_START = datetime(2026, 1, 1, tzinfo=UTC)
_SAMPLE_RUNS = 1500
_SAMPLE_SECONDS = 400 * 86_400


@dataclass(frozen=True)
class Schedule:
    """A checked cron expression and the longest gap between two of its runs."""

    cron: str
    longest_gap: int
    """Seconds: the longest time between two consecutive runs over a sample of the next year
    (at most 1,500 runs)."""

    def next_run(self, after: datetime) -> datetime:
        """The first run strictly after ``after`` (timezone-aware; cron fields read in its
        zone), in ``after``'s zone."""
        if after.tzinfo is None:
            raise ValueError("next_run needs a timezone-aware datetime")
        found: datetime = croniter(self.cron, after).get_next(datetime)
        return found


def parse_schedule(text: str) -> Schedule:
    """A five-field cron expression (``*/15 * * * *``, ``0 2 * * *``) or a croniter alias
    (``@daily``, ``@hourly``); `UsageError` otherwise."""
    cron = " ".join(text.split())
    five = len(cron.split()) == 5 or (cron.startswith("@") and " " not in cron)
    if not five or not croniter.is_valid(cron):
        raise UsageError(
            f"expected a cron expression of five fields (minute hour day month weekday), "
            f"e.g. '*/15 * * * *' or '0 2 * * *', got {text!r}"
        )
    return Schedule(cron, _longest_gap(cron))


def _longest_gap(cron: str) -> int:
    it = croniter(cron, _SAMPLE_START)
    previous: datetime = it.get_next(datetime)
    longest = 0
    for _ in range(_SAMPLE_RUNS):
        current: datetime = it.get_next(datetime)
        longest = max(longest, int((current - previous).total_seconds()))
        if (current - _SAMPLE_START).total_seconds() > _SAMPLE_SECONDS:
            break
        previous = current
    return longest


def derive_schedule(rpo: Span) -> Schedule:
    """The schedule of a policy that names none: the largest of `STEPS` at most half the RPO."""
    half = rpo.seconds // 2
    chosen = STEPS[0]
    for step in STEPS:
        if step[0] <= half:
            chosen = step
    return Schedule(chosen[1], chosen[0])
