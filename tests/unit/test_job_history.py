"""A job's history (ops/history.py) from a synthetic history of run records and snapshots, on a
frozen clock: last run, last success, newest complete snapshot of the job, last check, success
counts over 7 and 30 days."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from stackvault.clock import FrozenClock
from stackvault.crypto.kdf import KdfParams
from stackvault.ops.history import (
    SuccessCount,
    job_history,
    last_check,
    newest_job_snapshot,
    read_job_history,
    success_count,
)
from stackvault.records.run import RunRecord, RunResult, RunStep, StepResult, job_tag
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.store.memory import MemoryStore

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _run(
    days_ago: float,
    result: RunResult = "ok",
    *,
    job: str = "nightly",
    check: StepResult | None = None,
    check_repo: str = "local",
    run_id: str | None = None,
) -> RunRecord:
    started = NOW - days_ago * DAY
    steps = [RunStep("backup", "ok" if result == "ok" else "failed", started, 60.0, "local")]
    if check is not None:
        steps.append(
            RunStep(
                "check",
                check,
                started + timedelta(minutes=2),
                30.0,
                check_repo,
                error=None if check == "ok" else "pack 1234 is damaged",
            )
        )
    return RunRecord(
        id=run_id or secrets.token_hex(16),
        job=job,
        host="h",
        started=started,
        ended=started + timedelta(minutes=5),
        result=result,
        trigger="schedule",
        program="stackvault 0.1.0",
        steps=steps,
    )


def _snap(days_ago: float, tags: list[str], *, complete: bool = True) -> Snapshot:
    return Snapshot(
        time=NOW - days_ago * DAY,
        tree=bytes(32),
        paths=["/srv"],
        hostname="h",
        username="u",
        tags=tags,
        complete=complete,
        id=secrets.token_hex(32),
    )


def _history() -> tuple[list[RunRecord], list[Snapshot]]:
    """40 days of a nightly job: failures on days 2 and 20, a partial run on day 5 and one
    interrupted on day 35; checks on days 3 (ok) and 1 (failed, on another repository); plus
    runs of another job that must not count."""
    runs = []
    for day in range(40):
        result: RunResult = "ok"
        if day in (2, 20):
            result = "failed"
        elif day == 5:
            result = "partial"
        elif day == 35:
            result = "interrupted"
        check: StepResult | None = "ok" if day == 3 else ("failed" if day == 1 else None)
        runs.append(
            _run(day + 0.5, result, check=check, check_repo="offsite" if day == 1 else "local")
        )
    runs += [_run(0.1, "failed", job="hourly"), _run(0.2, "ok", job="hourly", check="ok")]
    snaps = [
        _snap(0.4, [job_tag("nightly")], complete=False),  # newest, but incomplete
        _snap(1.4, [job_tag("nightly"), "stack:dify"]),
        _snap(0.05, [job_tag("hourly")]),
        _snap(0.01, []),
    ]
    return runs, snaps


def test_the_history_of_a_job() -> None:
    runs, snaps = _history()
    h = job_history("nightly", runs, snaps, NOW)
    assert h.job == "nightly" and h.runs == 40
    assert h.last_run is not None and h.last_run.started == NOW - 0.5 * DAY
    assert h.last_success is not None and h.last_success.started == NOW - 0.5 * DAY
    assert h.last_snapshot is snaps[1]
    assert h.last_check is not None
    assert h.last_check.result == "failed" and h.last_check.repository == "offsite"
    assert h.last_check.error == "pack 1234 is damaged"
    # days 0..6 started within 7 days (day + 0.5 days ago): day 2 failed, day 5 partial.
    assert h.last_7_days == SuccessCount(days=7, runs=7, ok=5, partial=1, failed=1)
    assert h.last_7_days.ratio == 5 / 7
    # days 0..29: failures on 2 and 20, partial on 5.
    assert h.last_30_days == SuccessCount(days=30, runs=30, ok=27, partial=1, failed=2)


def test_the_last_success_skips_failed_partial_and_interrupted_runs() -> None:
    runs = [_run(3), _run(2, "partial"), _run(1, "interrupted"), _run(0.5, "failed")]
    h = job_history("nightly", runs, [], NOW)
    assert h.last_run is runs[3]
    assert h.last_success is runs[0]
    assert h.last_7_days == SuccessCount(days=7, runs=4, ok=1, partial=1, failed=2)


def test_the_last_check_of_one_repository() -> None:
    runs, _ = _history()
    check = last_check([r for r in runs if r.job == "nightly"], repository="local")
    assert check is not None and check.result == "ok"
    assert check.started == NOW - 3.5 * DAY + timedelta(minutes=2)
    assert last_check(runs, repository="elsewhere") is None


def test_a_job_with_no_runs_and_no_snapshots() -> None:
    runs, snaps = _history()
    h = job_history("weekly", runs, snaps, NOW)
    assert h.runs == 0 and h.last_run is None and h.last_success is None
    assert h.last_snapshot is None and h.last_check is None
    assert h.last_7_days == SuccessCount(days=7, runs=0, ok=0, partial=0, failed=0)
    assert h.last_7_days.ratio is None


def test_a_run_recorded_twice_counts_once() -> None:
    run = _run(1)
    again = _run(1, run_id=run.id)
    counted = success_count([run, again], NOW, 7)
    assert counted.runs == 1 and counted.ok == 1


def test_the_window_is_measured_from_now() -> None:
    runs = [_run(6.9), _run(7.1)]
    assert success_count(runs, NOW, 7).runs == 1
    assert success_count(runs, NOW + 2 * DAY, 7).runs == 0
    assert success_count(runs, NOW - 2 * DAY, 30).runs == 2  # a clock ahead of "now" counts


def test_the_newest_job_snapshot_needs_the_exact_tag() -> None:
    snaps = [_snap(1, ["job:nightly-2"]), _snap(2, ["job:nightly"]), _snap(0.5, ["nightly"])]
    assert newest_job_snapshot(snaps, "nightly") is snaps[1]


def test_read_from_a_repository_on_its_clock() -> None:
    clock = FrozenClock(NOW - 45 * DAY)
    store = MemoryStore()
    Repository.init(store, b"pw", kdf=KdfParams(memory_kib=8 * 1024, iterations=1), clock=clock)
    repo = Repository.open(store, b"pw", clock=clock)
    runs, snaps = _history()
    for run in runs:
        repo.save_run(run)
    for snap in snaps:
        repo.save_snapshot(snap)
    clock.current = NOW
    h = read_job_history(repo, "nightly")
    assert h.runs == 40 and h.last_30_days.ok == 27
    assert h.last_snapshot is not None and h.last_snapshot.tags == snaps[1].tags
    assert h == job_history("nightly", repo.list_runs(), repo.list_snapshots(), NOW)
    later = read_job_history(repo, "nightly", clock=FrozenClock(NOW + 8 * DAY))
    assert later.last_7_days.runs == 0 and later.last_30_days.runs == 22
