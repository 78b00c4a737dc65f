"""When each job runs (ops layer): the pure, clock-driven scheduler of ``stackvault serve``.

No threads, no sleeping, no clock of its own: the caller (`stackvault.ops.daemon`, or a test
simulating a month) passes ``now`` to every call. Per job it keeps the next **slot** (the
cron time of `Schedule.next_run`) plus a fixed **start offset**, a pending **retry** and
whether a run is **in flight**. The rules:

- **One run per job at a time.** `due` never hands out a job whose run has not been
  `finished`; the slots that pass while it runs are skipped and counted
  (`JobStats.skipped_ticks`); the next slot is the first one after the run ended.
- **A missed run happens once.** However many slots passed while nothing ran (the daemon was
  down, or another job held the loop), the job runs once; that run is a ``catch-up`` when it
  starts more than `late_after` seconds after its slot, a ``schedule`` run otherwise. At
  start (`JobState` from the repositories' history, `PastRun`), a slot after the job's last
  recorded run that has already passed is such a missed run; a job with no recorded run
  waits for its first slot.
- **Start jitter.** Each job gets one offset, drawn once from a seeded RNG, uniform in
  ``[0, min(jitter, shortest gap / 2)]``: jobs of the same cron minute start spread out, and
  an offset never pushes a run past the job's next slot.
- **Retries.** A ``failed`` run (exit 1: no snapshot was made) is retried (trigger
  ``retry``) after ``base * 2**(n-1)`` seconds (capped at `RetryPolicy.max_delay`) plus up to
  `RetryPolicy.jitter` of that, as long as the retry starts before the RPO has elapsed since
  the slot the run was for, before the job's next slot (which runs anyway), and within
  `RetryPolicy.max_retries`; otherwise the slot counts as failed (`JobStats.gave_up`). A
  ``partial`` run (exit 3) is not retried: its snapshot exists, and the next run completes
  the copies it lacks. An ``interrupted`` run is not retried either.

A future multi-host lease slots in between `due` and starting the run: a run the lease
refuses is handed back with `finished(..., result=None)` (no retry, no failure).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from stackvault.config.schedule import Schedule
from stackvault.records.run import RunResult, Trigger

LATE_AFTER_S = 300.0
"""Default `Scheduler.late_after`: a run that starts later than this after its slot is a
``catch-up``."""

RETRIED: frozenset[RunResult] = frozenset({"failed"})
"""The run results that are retried."""


@dataclass(frozen=True)
class JobSpec:
    """What the scheduler needs of a job: its name, schedule and RPO (seconds)."""

    name: str
    schedule: Schedule
    rpo_s: int


@dataclass(frozen=True)
class PastRun:
    """A job's last recorded run, from its repositories (`stackvault.ops.history`)."""

    started: datetime
    result: RunResult


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff of retries: ``base_s * 2**(n-1)`` for retry ``n``, at most
    ``max_delay_s``, plus a random ``[0, jitter]`` fraction of it; at most ``max_retries``
    retries of one slot."""

    base_s: float = 60.0
    max_delay_s: float = 3600.0
    jitter: float = 0.1
    max_retries: int = 8

    def backoff(self, retry: int) -> float:
        """The delay before retry ``retry`` (1-based), without jitter."""
        return float(min(self.max_delay_s, self.base_s * 2 ** (retry - 1)))


@dataclass(frozen=True)
class DueRun:
    """A run `Scheduler.due` hands out: start it now, then call `Scheduler.finished`."""

    job: str
    trigger: Trigger
    slot: datetime
    """The cron time the run is for (a retry: the slot of the run it retries)."""
    due_at: datetime
    """When it was due (slot + offset, or the retry's time)."""
    attempt: int
    """1 for the slot's first run, 2 for its first retry, ..."""


EventKind = Literal["due", "finished", "skipped", "retry", "gave-up", "dropped"]


@dataclass(frozen=True)
class SchedulerEvent:
    """One thing the scheduler decided, for the daemon's log."""

    at: datetime
    kind: EventKind
    job: str
    detail: str = ""
    trigger: Trigger | None = None
    delay_s: float | None = None


@dataclass
class JobStats:
    """Counts since the scheduler started."""

    runs: dict[Trigger, int] = field(default_factory=dict)
    skipped_ticks: int = 0
    gave_up: int = 0
    retry_delays: list[float] = field(default_factory=list)


@dataclass
class _Retry:
    at: datetime
    slot: datetime
    attempt: int
    deadline: datetime


@dataclass
class JobState:
    """The scheduler's state of one job."""

    spec: JobSpec
    offset_s: float
    slot: datetime
    """The next cron slot (the job is due at ``slot + offset``)."""
    retry: _Retry | None = None
    running: DueRun | None = None
    stats: JobStats = field(default_factory=JobStats)

    @property
    def slot_due(self) -> datetime:
        return self.slot + timedelta(seconds=self.offset_s)

    def next_due(self) -> datetime | None:
        """When the job is next due; None while it runs."""
        if self.running is not None:
            return None
        if self.retry is not None:
            return min(self.retry.at, self.slot_due)
        return self.slot_due


class Scheduler:
    """The jobs' next runs (see the module docstring). ``jitter_s``: the bound of the start
    offsets; ``seed``: of the RNG of offsets and retry jitter (a simulation is repeatable);
    ``history``: each job's last recorded run (absent: none)."""

    def __init__(
        self,
        jobs: Iterable[JobSpec],
        now: datetime,
        *,
        history: Mapping[str, PastRun] | None = None,
        jitter_s: float = 0.0,
        seed: int | None = None,
        retry: RetryPolicy | None = None,
        late_after_s: float = LATE_AFTER_S,
    ) -> None:
        if jitter_s < 0:
            raise ValueError("the start jitter cannot be negative")
        self.jitter_s = jitter_s
        self.retry_policy = retry or RetryPolicy()
        self.late_after = timedelta(seconds=late_after_s)
        self._rng = random.Random(seed)
        self.states: dict[str, JobState] = {}
        self.events: list[SchedulerEvent] = []
        self._removed: set[str] = set()
        self.set_jobs(jobs, now, history or {})

    # --- configuration --------------------------------------------------------------------

    def set_jobs(
        self, jobs: Iterable[JobSpec], now: datetime, history: Mapping[str, PastRun]
    ) -> None:
        """Replace the set of jobs (start, reload). A job kept with the same schedule keeps
        its state (slot, offset, pending retry, run in flight, counts); a new or changed job
        starts from ``history`` (its last recorded run); a removed job is forgotten once its
        run in flight (if any) has finished."""
        new: dict[str, JobState] = {}
        jobs = list(jobs)
        for spec in jobs:
            old = self.states.get(spec.name)
            if old is not None and old.spec.schedule == spec.schedule:
                old.spec = spec
                new[spec.name] = old
                continue
            offset = self._offset(spec.schedule)
            past = history.get(spec.name)
            slot = spec.schedule.next_run(past.started if past else now)
            state = JobState(spec, offset, slot)
            if old is not None:
                state.running, state.stats = old.running, old.stats
            new[spec.name] = state
        removed: set[str] = set()
        for name, old in self.states.items():
            if name not in new and old.running is not None:
                new[name] = old  # its run finishes, then `finished` drops it
                removed.add(name)
        self._removed = removed
        self.states = new

    def _offset(self, schedule: Schedule) -> float:
        bound = min(self.jitter_s, schedule.longest_gap / 2)
        return self._rng.uniform(0.0, bound) if bound > 0 else 0.0

    # --- time ------------------------------------------------------------------------------

    def next_wakeup(self) -> datetime | None:
        """The earliest time a job is due (possibly in the past); None if every job runs or
        there is none."""
        dues = [d for s in self.states.values() if (d := s.next_due()) is not None]
        return min(dues, default=None)

    def due(self, now: datetime, *, limit: int | None = None) -> list[DueRun]:
        """The runs to start now, earliest due first (at most ``limit``: a caller that runs
        jobs one after the other asks for one at a time, so that a run's trigger is decided
        when it starts); each job handed out is marked as running until `finished`."""
        ready = [
            (due, name)
            for name, state in self.states.items()
            if name not in self._removed and (due := state.next_due()) is not None and due <= now
        ]
        out: list[DueRun] = []
        for _, name in sorted(ready):
            if limit is not None and len(out) >= limit:
                break
            state = self.states[name]
            run = self._due_run(state, now)
            if run is not None:
                state.running = run
                stats = state.stats
                stats.runs[run.trigger] = stats.runs.get(run.trigger, 0) + 1
                self._event(now, "due", run.job, trigger=run.trigger, detail=_late(run, now))
                out.append(run)
        return out

    def _due_run(self, state: JobState, now: datetime) -> DueRun | None:
        name = state.spec.name
        retry = state.retry
        if retry is not None:
            if retry.at > now and state.slot_due > now:
                return None
            state.retry = None
            if retry.at <= now and now <= retry.deadline and now < state.slot_due:
                return DueRun(name, "retry", retry.slot, retry.at, retry.attempt)
            state.stats.gave_up += 1
            self._event(now, "gave-up", name, detail="the retry came too late; the slot failed")
        if state.slot_due > now:
            return None
        slot, due_at = state.slot, state.slot_due
        trigger: Trigger = "catch-up" if now - due_at > self.late_after else "schedule"
        missed = 0
        following = state.spec.schedule.next_run(now)
        probe = state.spec.schedule.next_run(slot)
        while probe <= now and missed < 100_000:
            missed += 1
            probe = state.spec.schedule.next_run(probe)
        state.slot = following
        if missed:
            self._event(now, "skipped", name, detail=f"{missed} missed slot(s) run once")
        return DueRun(name, trigger, slot, due_at, 1)

    def finished(self, job: str, now: datetime, result: RunResult | None) -> None:
        """The run of ``job`` ended at ``now`` with ``result`` (None: it did not start, e.g.
        refused by a lease: neither retried nor failed). Counts the slots it skipped,
        schedules a retry if the rules allow one."""
        state = self.states.get(job)
        if state is None or state.running is None:
            raise ValueError(f"job {job!r} has no run in flight")
        run, state.running = state.running, None
        if job in self._removed:
            self._removed.discard(job)
            del self.states[job]
            return
        schedule = state.spec.schedule
        skipped = 0
        while state.slot <= now:
            skipped += 1
            state.slot = schedule.next_run(state.slot)
        if skipped:
            state.stats.skipped_ticks += skipped
            self._event(now, "skipped", job, detail=f"{skipped} tick(s) came while it ran")
        self._event(now, "finished", job, detail=result or "not started", trigger=run.trigger)
        if result not in RETRIED:
            return
        policy = self.retry_policy
        if run.attempt > policy.max_retries:
            state.stats.gave_up += 1
            self._event(now, "gave-up", job, detail=f"failed after {run.attempt} attempts")
            return
        delay = policy.backoff(run.attempt)
        delay += self._rng.uniform(0.0, policy.jitter * delay)
        at = now + timedelta(seconds=delay)
        deadline = run.slot + timedelta(seconds=state.spec.rpo_s)
        if at > deadline or at >= state.slot_due:
            state.stats.gave_up += 1
            self._event(now, "gave-up", job, detail="no retry fits before the RPO or next slot")
            return
        state.retry = _Retry(at, run.slot, run.attempt + 1, deadline)
        state.stats.retry_delays.append(delay)
        self._event(now, "retry", job, delay_s=delay, detail=f"attempt {run.attempt + 1}")

    def _event(
        self,
        at: datetime,
        kind: EventKind,
        job: str,
        *,
        detail: str = "",
        trigger: Trigger | None = None,
        delay_s: float | None = None,
    ) -> None:
        self.events.append(SchedulerEvent(at, kind, job, detail, trigger, delay_s))

    def drain_events(self) -> list[SchedulerEvent]:
        """The events since the last call, oldest first."""
        out, self.events = self.events, []
        return out


def _late(run: DueRun, now: datetime) -> str:
    late = (now - run.due_at).total_seconds()
    return f"slot {run.slot.isoformat()}, {late:.0f} s late" if late >= 1 else ""
