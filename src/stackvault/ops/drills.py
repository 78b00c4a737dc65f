"""When ``serve`` runs restore drills (ops layer): pure, clock-driven, like the scheduler.

A job with ``drill.every`` is drilled every that long, counted from the end of its newest
drill as the repositories record it (`stackvault.records.drill.latest_drill`), so a restart or
another host changes nothing: a drill that passed is next due ``every`` after it ended; one
that failed or was interrupted, after ``min(every, RETRY_S)`` (a drill that could not run is
tried again the same day, and ``status`` shows the job unverified meanwhile); a job never
drilled is due at once. A drill is not started while one of the same job runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from stackvault.records.run import RunResult

RETRY_S = 6 * 3600
"""The longest wait before a failed drill is tried again."""


@dataclass(frozen=True)
class DrillSpec:
    """What the planner needs of a job: its name and ``drill.every`` in seconds."""

    job: str
    every_s: int


@dataclass(frozen=True)
class PastDrill:
    """A job's newest recorded drill: when it ended, and how."""

    ended: datetime
    result: RunResult


class DrillPlanner:
    """The next drill of each job (see the module docstring); ``now`` is passed in."""

    def __init__(
        self,
        specs: Iterable[DrillSpec],
        now: datetime,
        history: Mapping[str, PastDrill] | None = None,
    ) -> None:
        self.due_at: dict[str, datetime] = {}
        self.every: dict[str, int] = {}
        self.running: set[str] = set()
        self.set_jobs(specs, now, history or {})

    def set_jobs(
        self, specs: Iterable[DrillSpec], now: datetime, history: Mapping[str, PastDrill]
    ) -> None:
        """Replace the drilled jobs (start, reload): a job kept with the same ``every``
        keeps its due time; others start from ``history``."""
        due: dict[str, datetime] = {}
        every: dict[str, int] = {}
        for spec in specs:
            every[spec.job] = spec.every_s
            if spec.job in self.due_at and self.every.get(spec.job) == spec.every_s:
                due[spec.job] = self.due_at[spec.job]
                continue
            past = history.get(spec.job)
            due[spec.job] = now if past is None else self._after(past.ended, past.result, spec)
        self.due_at, self.every = due, every

    @staticmethod
    def _after(ended: datetime, result: RunResult | None, spec: DrillSpec) -> datetime:
        wait = spec.every_s if result == "ok" else min(spec.every_s, RETRY_S)
        return ended + timedelta(seconds=wait)

    def due(self, now: datetime) -> list[str]:
        """The jobs whose drill is due and not running, earliest first."""
        ready = [(at, job) for job, at in self.due_at.items() if at <= now]
        return [job for _, job in sorted(ready) if job not in self.running]

    def started(self, job: str) -> None:
        self.running.add(job)

    def finished(self, job: str, now: datetime, result: RunResult | None) -> None:
        """The drill of ``job`` ended at ``now`` with ``result`` (None: it did not start —
        another daemon has it; it is due again after ``every`` like a passed one)."""
        self.running.discard(job)
        every = self.every.get(job)
        if every is not None:
            self.due_at[job] = self._after(now, result or "ok", DrillSpec(job, every))

    def next_wakeup(self) -> datetime | None:
        """The earliest due time of a drill that is not running."""
        return min((at for job, at in self.due_at.items() if job not in self.running), default=None)
