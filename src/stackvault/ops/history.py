"""A job's history (operations layer): what one repository's run records and snapshots say
about a job — its last run, its last successful run, its newest complete snapshot, its last
check and how many of its runs succeeded lately. The `status` command and the daemon judge
RPO/RTO from these; nothing here decides a verdict.

Everything is computed from one repository (`read_job_history`) or from records and
snapshots the caller read (`job_history`, pure: the tests give it a synthetic history). A
run counts as successful only with result ``ok`` (`RunRecord.succeeded`); ``partial``,
``failed`` and ``interrupted`` do not. A run is counted once per run id, however many records
of it the repository holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from stackvault.clock import Clock
from stackvault.records.run import RunRecord, StepResult, job_tag
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot

WINDOWS_DAYS = (7, 30)
"""The windows `JobHistory` counts runs over."""


@dataclass(frozen=True)
class SuccessCount:
    """The runs of a job that started within the last `days` days (a run started after
    "now", by a host whose clock is ahead, counts too)."""

    days: int
    runs: int
    ok: int
    partial: int
    failed: int
    """``failed`` and ``interrupted`` runs."""

    @property
    def ratio(self) -> float | None:
        """``ok / runs``; None when there was no run (no evidence either way)."""
        return self.ok / self.runs if self.runs else None


@dataclass(frozen=True)
class LastCheck:
    """The newest ``check`` step among a job's runs."""

    run_id: str
    started: datetime
    result: StepResult
    repository: str | None
    error: str | None


@dataclass(frozen=True)
class JobHistory:
    """What a repository knows of one job (see the module docstring)."""

    job: str
    runs: int
    """Distinct runs recorded."""
    last_run: RunRecord | None
    """The newest run by start time, whatever its result."""
    last_success: RunRecord | None
    """The newest run with result ``ok``."""
    last_snapshot: Snapshot | None
    """The newest complete snapshot tagged ``job:<name>`` (a copy counts: it is restorable
    from this repository)."""
    last_check: LastCheck | None
    last_7_days: SuccessCount
    last_30_days: SuccessCount


def backup_runs(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """The records of the job's runs (``stackvault run``), without its restore drills'
    (`RunRecord.is_drill`): what the schedule, the success counts and the last run count."""
    return [r for r in runs if not r.is_drill]


def distinct_runs(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """One record per run id (the last given of each), oldest first by start time."""
    by_id = {r.id: r for r in runs}
    return sorted(by_id.values(), key=lambda r: (r.started, r.id))


def success_count(runs: Iterable[RunRecord], now: datetime, days: int) -> SuccessCount:
    """How the runs that started less than ``days`` days before ``now`` ended (one per run
    id)."""
    since = now - timedelta(days=days)
    recent = [r for r in distinct_runs(runs) if r.started > since]
    return SuccessCount(
        days=days,
        runs=len(recent),
        ok=sum(1 for r in recent if r.result == "ok"),
        partial=sum(1 for r in recent if r.result == "partial"),
        failed=sum(1 for r in recent if r.result in ("failed", "interrupted")),
    )


def newest_job_snapshot(snapshots: Iterable[Snapshot], job: str) -> Snapshot | None:
    """The newest complete snapshot tagged `job_tag` (``job:<name>``), by snapshot time."""
    tag = job_tag(job)
    tagged = [s for s in snapshots if s.complete and tag in s.tags]
    return max(tagged, key=lambda s: (s.time, s.id), default=None)


def last_check(runs: Iterable[RunRecord], repository: str | None = None) -> LastCheck | None:
    """The newest ``check`` step of these runs (of the repository named ``repository`` if
    given), by the step's start time; None if there is none."""
    found: LastCheck | None = None
    for run in runs:
        for step in run.steps_named("check"):
            if repository is not None and step.repository != repository:
                continue
            if found is None or step.started > found.started:
                found = LastCheck(run.id, step.started, step.result, step.repository, step.error)
    return found


def job_history(
    job: str,
    runs: Sequence[RunRecord],
    snapshots: Sequence[Snapshot],
    now: datetime,
    *,
    repository: str | None = None,
) -> JobHistory:
    """The history of ``job`` from these records (others' are ignored) and snapshots, as
    of ``now``. ``repository`` narrows `JobHistory.last_check` to checks of that
    repository (a run's record lists its steps against every repository it touched)."""
    mine = distinct_runs(r for r in backup_runs(runs) if r.job == job)
    successes = [r for r in mine if r.succeeded]
    return JobHistory(
        job=job,
        runs=len(mine),
        last_run=mine[-1] if mine else None,
        last_success=successes[-1] if successes else None,
        last_snapshot=newest_job_snapshot(snapshots, job),
        last_check=last_check(mine, repository),
        last_7_days=success_count(mine, now, WINDOWS_DAYS[0]),
        last_30_days=success_count(mine, now, WINDOWS_DAYS[1]),
    )


def read_job_history(
    repo: Repository,
    job: str,
    *,
    clock: Clock | None = None,
    repository: str | None = None,
) -> JobHistory:
    """`job_history` of one repository: its readable run records of ``job`` and its
    snapshots (damaged ones are skipped with the repository's warnings), as of ``clock``
    (default: the repository's)."""
    now = (clock or repo.clock).now()
    return job_history(
        job, repo.list_runs(job=job), repo.list_snapshots(), now, repository=repository
    )
