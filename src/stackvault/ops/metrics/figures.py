"""What the metrics say of a job, computed from its repositories (ops layer).

`read_repository` reads one repository once — every run record, every snapshot, and, where
cheap, its stored size and the free space of a local repository's file system — into a
`RepositoryRead`; repositories shared by several jobs are read once for all of them.
`job_figures` (pure: the tests give it synthetic reads) turns the reads of a job's
repositories into `JobFigures`, reusing the history (`stackvault.ops.history`) and the
verdict (`stackvault.ops.status.judge`) that ``status`` computes, so the metrics and
``status`` never disagree.

Definitions (each a figure of `JobFigures` / `RepositoryFigures`):

* **last success**: the end of the newest run (by start) with result ``ok``, over the run
  records of every repository of the job; **last run**: the newest run whatever its result.
* **newest snapshot**: per repository, the newest complete snapshot tagged ``job:NAME``
  (a copy counts); its age is the repository's current RPO.
* **copy lag**: per copy, the primary's complete job snapshots newer than the newest one
  whose origin the copy holds (all of them when it holds none).
* **last backup**: the summary of the primary's newest job snapshot (complete or not):
  bytes of the files it covers, bytes added (raw and stored), files new / changed /
  unmodified; for a stack snapshot the services stopped by a strict cut and its downtime.
* **last check**: per repository, the newest ``check`` step of the job's runs against it
  (`stackvault.ops.history.last_check`): its start, whether it ended ``ok``, bytes read.
* **lease**: the job's newest lease in the primary (FORMAT.md §15, `stackvault.repo.leases`):
  which daemon (host, PID) holds or last held the job's run, its state and last heartbeat.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from stackvault.config.job import EffectiveJob
from stackvault.config.repository import RepositorySettings
from stackvault.errors import StackvaultError
from stackvault.ops.history import (
    backup_runs,
    distinct_runs,
    job_history,
    last_check,
    newest_job_snapshot,
)
from stackvault.ops.session import Opener
from stackvault.ops.status import (
    DrillFigure,
    JobStatus,
    Objectives,
    RepositoryView,
    Role,
    Verdict,
    judge,
)
from stackvault.records.run import RunRecord, RunResult, job_tag
from stackvault.records.stack import read_manifest
from stackvault.repo.leases import Lease, job_leases
from stackvault.repo.snapshot import Snapshot
from stackvault.store.local import LocalStore


@dataclass(frozen=True)
class Filesystem:
    """The file system a local repository lives on (`os.statvfs`)."""

    avail_bytes: int
    """Bytes an unprivileged writer may still use."""
    size_bytes: int


@dataclass(frozen=True)
class RepositoryRead:
    """One repository as read for the metrics, or why it could not be read (``error``)."""

    name: str
    runs: tuple[RunRecord, ...] = ()
    """Every readable run record, of every job."""
    snapshots: tuple[Snapshot, ...] = ()
    size_bytes: int | None = None
    """Bytes of every object of the store; None when not measured."""
    filesystem: Filesystem | None = None
    """A local repository's file system; None for others."""
    leases: tuple[Lease, ...] = ()
    """The leases of the jobs whose primary this is (`read_repository`'s ``lease_jobs``)."""
    error: str | None = None


def read_repository(
    settings: RepositorySettings,
    opener: Opener,
    *,
    measure_size: bool = True,
    lease_jobs: Sequence[str] = (),
) -> RepositoryRead:
    """Read the repository of ``settings`` through ``opener`` (no lock: only listings and
    records are read), with the leases of ``lease_jobs`` (the jobs whose primary it is).
    ``measure_size`` lists every object for its size (one listing of the store). An error of
    the repository or its store gives a read holding its one-sentence message; nothing is
    raised for it (an unreadable lease is left out)."""
    try:
        with opener(settings) as repo:
            runs = tuple(repo.list_runs())
            snapshots = tuple(repo.list_snapshots())
            size = sum(info.size for info in repo.store.list("")) if measure_size else None
            filesystem = (
                _filesystem(repo.store.root) if isinstance(repo.store, LocalStore) else None
            )
            leases = tuple(
                lease
                for job in lease_jobs
                for lease in job_leases(repo.store, repo.envelope, job, lambda _m: None)
            )
    except StackvaultError as exc:
        return RepositoryRead(settings.name, error=str(exc))
    return RepositoryRead(settings.name, runs, snapshots, size, filesystem, leases)


def _filesystem(root: Path) -> Filesystem | None:
    try:
        st = os.statvfs(root)
    except OSError:
        return None
    return Filesystem(avail_bytes=st.f_bavail * st.f_frsize, size_bytes=st.f_blocks * st.f_frsize)


@dataclass(frozen=True)
class LastRun:
    """The newest run of a job (by start), from the run records."""

    id: str
    result: RunResult
    trigger: str
    started: datetime
    ended: datetime
    duration_s: float


@dataclass(frozen=True)
class LastBackup:
    """The primary's newest job snapshot (complete or not) and its summary; a figure the
    snapshot's summary lacks is None."""

    snapshot: str
    time: datetime
    complete: bool
    source_bytes: int | None
    """Bytes of the files and artifacts it covers (read, or found unchanged)."""
    added_bytes: int | None
    """New data, before compression."""
    stored_bytes: int | None
    """New data as stored (compressed, encrypted)."""
    files_new: int | None
    files_changed: int | None
    files_unmodified: int | None


@dataclass(frozen=True)
class ServiceCut:
    """One service a strict cut stopped or paused: how (``stop`` or ``pause``) and the
    seconds from the stop request until it ran again (None: not started again by the
    backup)."""

    name: str
    mode: str
    downtime_s: float | None


@dataclass(frozen=True)
class StackCut:
    """The cut of the primary's newest stack snapshot: how many services it stopped (or
    paused) and, for a strict cut, the seconds from the first stop until every stopped
    service ran again, and each service's own downtime where the manifest records it."""

    consistency: str
    stopped_services: int
    downtime_s: float | None
    services: tuple[ServiceCut, ...] = ()


@dataclass(frozen=True)
class LastCheckFigures:
    """The newest check of a repository by the job's runs."""

    started: datetime
    ok: bool
    bytes_read: int | None


@dataclass(frozen=True)
class LeaseFigures:
    """The job's newest lease (by slot, then attempt) in its primary."""

    host: str
    pid: int
    state: str
    """``running``, ``done`` or ``abandoned`` as the lease says (a ``running`` lease whose
    holder died says so until another daemon takes it over)."""
    refreshed: datetime
    """Its holder's last heartbeat (or the end of the run)."""


def newest_lease(leases: Sequence[Lease], job: str) -> LeaseFigures | None:
    """The figures of ``job``'s newest lease among ``leases``; None when it has none."""
    newest = max(
        (lease for lease in leases if lease.job == job),
        key=lambda lease: (lease.slot, lease.attempt),
        default=None,
    )
    if newest is None:
        return None
    return LeaseFigures(newest.holder.host, newest.holder.pid, newest.state, newest.refreshed)


@dataclass(frozen=True)
class RepositoryFigures:
    """What the metrics say of one repository of a job."""

    name: str
    role: Role
    error: str | None
    """Why it could not be read at the last refresh; None when it was (then every other
    figure is as read)."""
    newest_snapshot: datetime | None = None
    job_snapshots: int | None = None
    """Complete snapshots tagged ``job:NAME``."""
    snapshots: int | None = None
    """Every snapshot of the repository (of any job)."""
    copy_lag: int | None = None
    """Copies only: the primary's job snapshots this copy is behind (module docstring)."""
    check: LastCheckFigures | None = None
    size_bytes: int | None = None
    filesystem: Filesystem | None = None


@dataclass(frozen=True)
class JobFigures:
    """What the metrics say of one job, as of `refreshed` (see the module docstring)."""

    job: str
    refreshed: datetime
    rpo_s: int
    rto_s: int
    interval_s: int
    """The schedule's longest gap between two runs: how often a success is expected."""
    window_s: int
    check_every_s: int
    verdict: Verdict
    """`stackvault.ops.status.judge`'s verdict as of `refreshed`."""
    last_run: LastRun | None
    last_success: datetime | None
    """When the newest ``ok`` run ended."""
    last_backup: LastBackup | None
    stack_cut: StackCut | None
    repositories: tuple[RepositoryFigures, ...]
    lease: LeaseFigures | None = None
    drill: DrillFigure | None = None
    """The newest restore drill (`stackvault.ops.status`), None when never drilled."""
    drill_every_s: int | None = None
    """How often the job is to be drilled (None: drills are not scheduled)."""
    status: JobStatus | None = None
    """`stackvault.ops.status.judge`'s whole status as of `refreshed` (the daemon's
    notifications read the verdict from it instead of reading the repositories again)."""

    def observed(self, record: RunRecord) -> JobFigures:
        """These figures with ``record`` (a run that just ended) as the last run, and as the
        last success if it ended ``ok``; unchanged if the figures already know a newer run."""
        if self.last_run is not None and self.last_run.started > record.started:
            return self
        success = record.ended if record.succeeded else self.last_success
        return replace(self, last_run=last_run_of(record), last_success=success)


def last_run_of(record: RunRecord) -> LastRun:
    """The `LastRun` figures of a record."""
    return LastRun(
        record.id,
        record.result,
        record.trigger,
        record.started,
        record.ended,
        record.duration_s,
    )


def copy_lag(primary: Sequence[Snapshot], copy_origins: frozenset[str], job: str) -> int:
    """How many of the primary's complete ``job`` snapshots are newer than the newest one
    whose origin the copy holds (all of them when it holds none)."""
    tag = job_tag(job)
    mine = sorted(
        (s for s in primary if s.complete and tag in s.tags), key=lambda s: (s.time, s.id)
    )
    held = [i for i, s in enumerate(mine) if s.origin in copy_origins]
    return len(mine) - (held[-1] + 1 if held else 0)


def _count(snapshots: Sequence[Snapshot], job: str) -> int:
    tag = job_tag(job)
    return sum(1 for s in snapshots if s.complete and tag in s.tags)


def _origins(snapshots: Sequence[Snapshot], job: str) -> frozenset[str]:
    tag = job_tag(job)
    return frozenset(s.origin for s in snapshots if s.complete and tag in s.tags)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def last_backup(snapshots: Sequence[Snapshot], job: str) -> LastBackup | None:
    """The primary's newest ``job`` snapshot, complete or not, with its summary's figures."""
    tag = job_tag(job)
    snap = max((s for s in snapshots if tag in s.tags), key=lambda s: (s.time, s.id), default=None)
    if snap is None:
        return None
    s = snap.summary
    return LastBackup(
        snapshot=snap.id,
        time=snap.time,
        complete=snap.complete,
        source_bytes=_int(s.get("bytes")),
        added_bytes=_int(s.get("data_added")),
        stored_bytes=_int(s.get("data_added_stored")),
        files_new=_int(s.get("files_new")),
        files_changed=_int(s.get("files_changed")),
        files_unmodified=_int(s.get("files_unmodified")),
    )


def stack_cut(snapshots: Sequence[Snapshot], job: str) -> StackCut | None:
    """The cut of the newest ``job`` snapshot that holds a stack manifest; None when there
    is none or its manifest cannot be read (``check`` reports that)."""
    tag = job_tag(job)
    stacks = [s for s in snapshots if tag in s.tags and s.stack]
    snap = max(stacks, key=lambda s: (s.time, s.id), default=None)
    if snap is None:
        return None
    try:
        manifest = read_manifest(snap)
    except StackvaultError:
        return None
    if manifest is None:
        return None
    cut = manifest.downtime
    if cut is None or cut.services is None:  # an online cut, or a manifest from before
        stopped = sum(1 for service in manifest.services.values() if service.stopped)
        return StackCut(manifest.consistency, stopped, cut.seconds if cut is not None else None)
    services = tuple(
        ServiceCut(name, d.mode, d.downtime_s) for name, d in sorted(cut.services.items())
    )
    return StackCut(manifest.consistency, len(services), cut.seconds, services)


def _check_figures(runs: Sequence[RunRecord], repository: str) -> LastCheckFigures | None:
    found = last_check(runs, repository)
    if found is None:
        return None
    bytes_read: int | None = None
    for run in runs:
        if run.id != found.run_id:
            continue
        for step in run.steps_named("check"):
            if step.repository == repository and step.started == found.started and step.details:
                bytes_read = _int(step.details.get("bytes_read"))
    return LastCheckFigures(found.started, found.result == "ok", bytes_read)


def job_figures(
    job: EffectiveJob, reads: Mapping[str, RepositoryRead], now: datetime
) -> JobFigures:
    """The figures of ``job`` from the reads of its repositories (by name; every repository
    of the job must be there), as of ``now`` (module docstring)."""
    views: list[RepositoryView] = []
    repos: list[RepositoryFigures] = []
    primary_read = reads[job.repository.name]
    for index, settings in enumerate(job.repositories):
        read = reads[settings.name]
        role: Role = "primary" if index == 0 else "copy"
        if read.error is not None:
            views.append(RepositoryView(settings.name, role, settings.shown, error=read.error))
            repos.append(RepositoryFigures(settings.name, role, read.error))
            continue
        runs = tuple(r for r in read.runs if r.job == job.name)
        history = job_history(job.name, runs, read.snapshots, now, repository=settings.name)
        origins = _origins(read.snapshots, job.name)
        views.append(RepositoryView(settings.name, role, settings.shown, history, runs, origins))
        newest = newest_job_snapshot(read.snapshots, job.name)
        lag = None
        if role == "copy" and primary_read.error is None:
            lag = copy_lag(primary_read.snapshots, origins, job.name)
        repos.append(
            RepositoryFigures(
                name=settings.name,
                role=role,
                error=None,
                newest_snapshot=newest.time if newest is not None else None,
                job_snapshots=_count(read.snapshots, job.name),
                snapshots=len(read.snapshots),
                copy_lag=lag,
                check=_check_figures(runs, settings.name),
                size_bytes=read.size_bytes,
                filesystem=read.filesystem,
            )
        )
    status = judge(job.name, Objectives.of(job), views, now)
    every_run = distinct_runs(backup_runs(r for v in views for r in v.runs))
    successes = [r for r in every_run if r.succeeded]
    primary_snapshots = primary_read.snapshots if primary_read.error is None else ()
    return JobFigures(
        job=job.name,
        refreshed=now,
        rpo_s=job.rpo.value.seconds,
        rto_s=job.rto.value.seconds,
        interval_s=job.schedule.value.longest_gap,
        window_s=job.window.value.seconds,
        check_every_s=job.check.every.value.seconds,
        verdict=status.verdict,
        last_run=last_run_of(every_run[-1]) if every_run else None,
        last_success=successes[-1].ended if successes else None,
        last_backup=last_backup(primary_snapshots, job.name),
        stack_cut=stack_cut(primary_snapshots, job.name),
        repositories=tuple(repos),
        lease=newest_lease(primary_read.leases, job.name),
        drill=status.drill,
        drill_every_s=status.drill_every_s,
        status=status,
    )


def read_jobs(
    jobs: Sequence[EffectiveJob],
    opener: Opener,
    now: Callable[[], datetime],
    *,
    measure_size: bool = True,
) -> list[JobFigures]:
    """The figures of ``jobs``, each repository read once (`read_repository`) however many
    of the jobs use it; ``now`` is asked once, after the reads."""
    reads: dict[str, RepositoryRead] = {}
    for job in jobs:
        for settings in job.repositories:
            if settings.name not in reads:
                primary_of = [j.name for j in jobs if j.repository.name == settings.name]
                reads[settings.name] = read_repository(
                    settings, opener, measure_size=measure_size, lease_jobs=primary_of
                )
    when = now()
    return [job_figures(job, reads, when) for job in jobs]
