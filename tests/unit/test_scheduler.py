"""The scheduler of ``stackvault serve`` (`stackvault.ops.scheduler`), simulated: 30 days of a
5-minute job and a daily job, with injected failures, a run longer than its interval and a
6-hour outage of the daemon; then restarts from the repositories' history.

A discrete-event simulation: time jumps to the next due time or the end of a run in flight;
a fake runner decides each run's duration and result from a script (slot, attempt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from stackvault.config.schedule import parse_schedule
from stackvault.ops.scheduler import DueRun, JobSpec, PastRun, RetryPolicy, Scheduler
from stackvault.records.run import RunResult

START = datetime(2026, 3, 1, tzinfo=UTC)
END = START + timedelta(days=30)
OUTAGE = (START + timedelta(days=10, minutes=3), START + timedelta(days=10, hours=6, minutes=3))
FAST = JobSpec("fast", parse_schedule("*/5 * * * *"), rpo_s=900)
DAILY = JobSpec("daily", parse_schedule("0 2 * * *"), rpo_s=2 * 86_400)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return START + timedelta(days=day, hours=hour, minutes=minute)


@dataclass
class Script:
    """The fake runner: (duration s, result) of a run by its job, slot and attempt."""

    fail_once: set[tuple[str, datetime]]
    fail_always: set[tuple[str, datetime]]
    long: set[tuple[str, datetime]]
    calls: list[tuple[DueRun, datetime, datetime]] = field(default_factory=list)

    def __call__(self, run: DueRun, now: datetime) -> tuple[float, RunResult]:
        key = (run.job, run.slot)
        result: RunResult
        if key in self.fail_always or (key in self.fail_once and run.attempt == 1):
            duration, result = 5.0, "failed"
        elif key in self.long:
            duration, result = 720.0, "ok"
        else:
            duration, result = (20.0 if run.job == "fast" else 600.0), "ok"
        self.calls.append((run, now, now + timedelta(seconds=duration)))
        return duration, result


def simulate(sched: Scheduler, script: Script) -> None:
    """Drive ``sched`` from START to END; no tick during OUTAGE (runs in flight end after
    it)."""
    now = START
    in_flight: dict[str, tuple[datetime, RunResult]] = {}
    while True:
        candidates = [e for e, _ in in_flight.values()]
        wake = sched.next_wakeup()
        if wake is not None:
            candidates.append(wake)
        t = max(now, min(candidates))
        if OUTAGE[0] <= t < OUTAGE[1]:
            t = OUTAGE[1]
        if t >= END:
            return
        now = t
        for job, (end, result) in list(in_flight.items()):
            if end <= now:
                del in_flight[job]
                sched.finished(job, now, result)
        for run in sched.due(now):
            assert run.job not in in_flight, f"two runs of {run.job} at once at {now}"
            duration, result = script(run, now)
            in_flight[run.job] = (now + timedelta(seconds=duration), result)


@pytest.fixture(scope="module")
def month() -> tuple[Scheduler, Script]:
    script = Script(
        fail_once={("fast", at(3, 10)), ("fast", at(20, 13)), ("daily", at(5, 2))},
        fail_always={("fast", at(7, 8)), ("daily", at(15, 2))},
        long={("fast", at(12, 12))},
    )
    sched = Scheduler([FAST, DAILY], START, jitter_s=20, seed=42)
    simulate(sched, script)
    return sched, script


def test_no_two_runs_of_a_job_overlap(month: tuple[Scheduler, Script]) -> None:
    _, script = month
    for job in ("fast", "daily"):
        spans = sorted((s, e) for r, s, e in script.calls if r.job == job)
        for (_, end), (start, _) in pairwise(spans):
            assert start >= end


def test_exact_runs_by_trigger(month: tuple[Scheduler, Script]) -> None:
    sched, _ = month
    fast, daily = sched.states["fast"].stats, sched.states["daily"].stats
    # 8,639 slots (00:05 of day 0 to 23:55 of day 29); 72 in the outage are one catch-up;
    # the 12-minute run skips 2; retries: 1 + 2 (then given up) + 1.
    assert fast.runs == {"schedule": 8639 - 72 - 2, "catch-up": 1, "retry": 4}
    assert fast.skipped_ticks == 2
    assert fast.gave_up == 1
    # 30 slots at 02:00, the one of day 10 in the outage; retries: 1 + 8 (max_retries).
    assert daily.runs == {"schedule": 29, "catch-up": 1, "retry": 9}
    assert daily.skipped_ticks == 0
    assert daily.gave_up == 1


def test_one_catch_up_right_after_the_outage(month: tuple[Scheduler, Script]) -> None:
    _, script = month
    catch_ups = [(r, s) for r, s, _ in script.calls if r.trigger == "catch-up"]
    assert sorted((r.job, r.slot, s) for r, s in catch_ups) == [
        ("daily", at(10, 2), OUTAGE[1]),
        ("fast", at(10, 0, 5), OUTAGE[1]),
    ]
    after = [r for r, s, _ in script.calls if r.job == "fast" and s > OUTAGE[1]]
    assert after[0].slot == at(10, 6, 5) and after[0].trigger == "schedule"


def test_retry_delays_back_off_exponentially(month: tuple[Scheduler, Script]) -> None:
    sched, script = month
    jitter = RetryPolicy().jitter

    def within(delays: list[float], bases: list[float]) -> None:
        assert len(delays) == len(bases)
        for d, b in zip(delays, bases, strict=True):
            assert b <= d <= b * (1 + jitter), (delays, bases)

    within(sched.states["fast"].stats.retry_delays, [60, 60, 120, 60])
    within(
        sched.states["daily"].stats.retry_delays,
        [60, 60, 120, 240, 480, 960, 1920, 3600, 3600],
    )
    # each retry starts when its delay says: failed run's end + delay
    ends = {(r.job, r.slot, r.attempt): e for r, _, e in script.calls}
    for run, start, _ in script.calls:
        if run.trigger == "retry":
            assert run.due_at == start
            assert start > ends[(run.job, run.slot, run.attempt - 1)]


def test_start_offsets_are_bounded_and_seeded() -> None:
    a = Scheduler([FAST, DAILY], START, jitter_s=20, seed=1)
    b = Scheduler([FAST, DAILY], START, jitter_s=20, seed=1)
    offsets = [s.offset_s for s in a.states.values()]
    assert offsets == [s.offset_s for s in b.states.values()]
    assert all(0 <= o <= 20 for o in offsets) and len(set(offsets)) == 2
    tight = Scheduler([JobSpec("m", parse_schedule("* * * * *"), 600)], START, jitter_s=600)
    assert tight.states["m"].offset_s <= 30  # half the interval at most


def test_restart_after_downtime_catches_up_once() -> None:
    now = at(4, 9, 1)
    history = {"fast": PastRun(at(4, 3), "ok"), "daily": PastRun(at(3, 2), "ok")}
    sched = Scheduler([FAST, DAILY], now, history=history)
    runs = sched.due(now)
    assert [(r.job, r.trigger, r.slot) for r in runs] == [
        ("daily", "catch-up", at(4, 2)),
        ("fast", "catch-up", at(4, 3, 5)),
    ]
    for r in runs:
        sched.finished(r.job, now + timedelta(seconds=30), "ok")
    assert sched.due(now + timedelta(seconds=40)) == []
    assert sched.states["fast"].slot == at(4, 9, 5)
    assert sched.states["daily"].slot == at(5, 2)


def test_restart_without_a_missed_slot_waits_for_the_next() -> None:
    now = at(4, 9, 1)
    history = {"fast": PastRun(at(4, 9, 0), "ok"), "daily": PastRun(at(4, 2), "ok")}
    sched = Scheduler([FAST, DAILY], now, history=history)
    assert sched.due(now) == []
    assert sched.next_wakeup() == at(4, 9, 5)
    fresh = Scheduler([DAILY], now)  # never ran: its first slot
    assert fresh.next_wakeup() == at(5, 2)


def test_a_job_removed_on_reload_finishes_its_run_first() -> None:
    sched = Scheduler([FAST], at(0, 0))
    (run,) = sched.due(at(0, 0, 5))
    sched.set_jobs([DAILY], at(0, 0, 6), {})
    assert sched.due(at(0, 0, 10)) == []
    sched.finished(run.job, at(0, 0, 11), "ok")
    assert set(sched.states) == {"daily"}
    with pytest.raises(ValueError, match="no run in flight"):
        sched.finished("fast", at(0, 0, 12), "ok")
