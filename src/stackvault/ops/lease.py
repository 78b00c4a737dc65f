"""The multi-host gate of ``stackvault serve`` (ops layer): each scheduled run of a job
happens once across every daemon that serves it, through a lease in the job's primary
repository (the format and its guarantees: `stackvault.repo.leases`, FORMAT.md §15).

`JobLeases.admit`, asked by the daemon before each run:

1. opens the primary repository and **claims** the run's lease (slot and attempt) with a
   create-only write. If it exists, another daemon has this run: refused.
2. lists the job's other leases. A **live** ``running`` lease (another daemon is still busy
   with an earlier run of the job) makes this one back off: its lease is closed as ``done``
   with no result, and the run is refused — the rule "never two runs of one job at once",
   across hosts. A ``running`` lease whose holder is **gone** (killed, its host lost: no
   heartbeat within ``lease_s`` by the store's clock, or its PID gone on this host) is
   **taken over**: marked ``abandoned``, its run recorded as ``failed`` in the primary
   repository (unless the holder recorded it before dying), and the repository locks that
   holder left in the job's repositories removed.
3. deletes finished leases older than `LeaseOptions.keep_s` (the newest `KEEP_LAST` of each
   job stay, so a late daemon still finds the claim of a run it was about to start).
4. starts the **heartbeat**: the lease is rewritten every ``heartbeat_s`` until `release`
   writes the run's result into it.

If the primary repository cannot be opened, the run is admitted without a lease: it fails at
its backup step like any run against an unreachable repository (and is recorded and retried
as such) instead of being refused silently. Both daemons then fail alike; none runs twice.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

from stackvault.clock import Clock, SystemClock
from stackvault.config.job import EffectiveJob
from stackvault.errors import StackvaultError
from stackvault.ops.scheduler import DueRun
from stackvault.ops.session import Opener
from stackvault.records.run import TRIGGERS, RunRecord, RunResult, RunStep, Trigger
from stackvault.repo.leases import (
    Lease,
    claim_lease,
    delete_lease,
    job_leases,
    lease_name,
    read_lease,
    write_lease,
)
from stackvault.repo.lock import Holder, remove_locks_of
from stackvault.repo.repository import PROGRAM, Repository

KEEP_LAST = 5
"""Finished leases of a job that are never deleted, however old."""

Log = Callable[..., None]
"""The daemon's event log: ``log(event, **fields)``."""


@dataclass(frozen=True)
class LeaseOptions:
    """``lease_s``: how long a lease stays live without a heartbeat (another daemon takes
    the job over after that); ``heartbeat_s``: how often the holder rewrites it; ``keep_s``:
    how long finished leases are kept."""

    lease_s: int = 120
    heartbeat_s: float = 20.0
    keep_s: int = 2 * 86_400

    def __post_init__(self) -> None:
        if self.lease_s < 2 or not 0 < self.heartbeat_s <= self.lease_s / 2:
            raise ValueError(
                "a lease needs at least 2 seconds and a heartbeat of at most half of it"
            )


RunKind = Literal["run", "drill"]
"""What a lease is for: a run of the job (``stackvault run``) or a restore drill of it."""


def lease_key(job: str, kind: RunKind) -> str:
    """The name a lease of ``kind`` is kept under: the job's for its runs, ``JOB.drill`` for
    its drills (FORMAT.md §15)."""
    return job if kind == "run" else f"{job}.{kind}"


def new_run_id() -> str:
    """A fresh run id (`RunRecord.id`)."""
    return uuid.uuid4().hex


class JobLeases:
    """The lease gate (see the module docstring); one instance per daemon, holding the leases
    of its runs in progress by run id. Called from the daemon's main thread only."""

    def __init__(
        self,
        opener: Opener,
        log: Log,
        *,
        options: LeaseOptions | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.opener = opener
        self.log = log
        self.options = options or LeaseOptions()
        self.clock = clock or SystemClock()
        self.me = Holder.current()
        self._held: dict[str, _Held] = {}
        self.on_takeover: Callable[[str, str], None] | None = None
        """Told ``(job, what happened)`` after a takeover (the daemon's notifications)."""

    # --- the gate ---------------------------------------------------------------------------

    def admit(
        self, job: EffectiveJob, run: DueRun, run_id: str, kind: RunKind = "run"
    ) -> str | None:
        """None if this daemon runs ``run`` (holding its lease until `release`), else why
        not, in one sentence. ``kind`` ``drill``: a restore drill of the job, leased apart
        from its runs (`lease_key`): a drill and a backup of one job may run at once."""
        stack = ExitStack()
        try:
            repo = stack.enter_context(self.opener(job.repository))
        except StackvaultError as exc:
            stack.close()
            self.log(
                "lease-unavailable",
                job=job.name,
                repository=job.repository.name,
                error=str(exc),
                hint="running without a lease",
            )
            return None
        try:
            refusal = self._claim(stack, repo, job, run, run_id, lease_key(job.name, kind))
        except StackvaultError as exc:
            stack.close()
            self.log(
                "lease-unavailable", job=job.name, error=str(exc), hint="running without a lease"
            )
            return None
        except BaseException:
            stack.close()
            raise
        if refusal is not None:
            stack.close()
        return refusal

    def release(self, run_id: str, result: RunResult | None) -> None:
        """Stop the heartbeat of run ``run_id`` and write its ``result`` into its lease
        (nothing if the run was admitted without one)."""
        held = self._held.pop(run_id, None)
        if held is None:
            return
        try:
            held.stop()
            current = self._read(held)
            if current is not None and current.state == "abandoned":
                self.log("lease-lost", job=held.lease.job, detail=current.note)
                return
            write_lease(
                held.repo.store,
                held.repo.envelope,
                replace(held.lease, state="done", result=result, refreshed=self.clock.now()),
            )
        except StackvaultError as exc:
            self.log("lease-release-failed", job=held.lease.job, error=str(exc))
        finally:
            held.stack.close()

    # --- claiming ---------------------------------------------------------------------------

    def _claim(
        self,
        stack: ExitStack,
        repo: Repository,
        job: EffectiveJob,
        run: DueRun,
        run_id: str,
        key: str,
    ) -> str | None:
        now = self.clock.now()
        mine = claim_lease(
            repo.store,
            repo.envelope,
            Lease(
                job=key,
                slot=run.slot,
                attempt=run.attempt,
                run_id=run_id,
                trigger=run.trigger,
                holder=self.me,
                acquired=now,
                refreshed=now,
                lease_s=self.options.lease_s,
            ),
        )
        if mine is None:
            return self._claimed_elsewhere(repo, key, run)
        leases = job_leases(repo.store, repo.envelope, key, self._notice(job))
        for other in leases:
            if other.object_name == mine.object_name or other.state != "running":
                continue
            dead = other.dead_reason(mine.stored, self.clock.now(), self.me)
            if dead is None:
                what = "drill" if key != job.name else "run"
                why = (
                    f"another {what} of job {job.name} is in progress "
                    f"({other.describe_holder()}, slot {other.slot:%Y-%m-%d %H:%M} UTC)"
                )
                write_lease(repo.store, repo.envelope, replace(mine, state="done", note=why))
                return why
            self._take_over(repo, job, other, dead)
        self._expire(repo, [lease for lease in leases if lease.object_name != mine.object_name])
        held = _Held(stack, repo, mine, self)
        self._held[run_id] = held
        held.start()
        return None

    def _claimed_elsewhere(self, repo: Repository, key: str, run: DueRun) -> str:
        other = read_lease(repo.store, repo.envelope, lease_name(key, run.slot, run.attempt))
        who = other.describe_holder() if other is not None else "another daemon"
        state = f", {other.state}" if other is not None else ""
        if other is not None and other.result:
            state += f" ({other.result})"
        job, _, kind = key.partition(".")
        return (
            f"the {kind or 'run'} of job {job} for {run.slot:%Y-%m-%d %H:%M} UTC "
            f"(attempt {run.attempt}) was claimed by {who}{state}"
        )

    def _take_over(self, repo: Repository, job: EffectiveJob, other: Lease, dead: str) -> None:
        """Close ``other`` (its holder is gone) as abandoned, record its run as failed, and
        remove the locks its holder left."""
        note = f"taken over by PID {self.me.pid} on {self.me.host}: {dead}"
        write_lease(repo.store, repo.envelope, replace(other, state="abandoned", note=note))
        self.log(
            "lease-takeover",
            job=job.name,
            holder=other.describe_holder(),
            slot=f"{other.slot:%Y-%m-%dT%H:%M:%SZ}",
            reason=dead,
        )
        if self.on_takeover is not None:
            self.on_takeover(
                job.name,
                f"{other.describe_holder()} stopped renewing its lease on the run for "
                f"{other.slot:%Y-%m-%d %H:%M} UTC ({dead}); PID {self.me.pid} on "
                f"{self.me.host} took the job over and records that run as failed",
            )
        # A drill records itself (interrupted) when its daemon dies; a run does not.
        recorded = other.job != job.name or any(
            r.id == other.run_id for r in repo.list_runs(job=job.name)
        )
        if not recorded:
            repo.save_run(self._failed_record(job, other, dead))
        for settings in job.repositories:
            try:
                if settings.name == job.repository.name:
                    removed = remove_locks_of(
                        repo.store, repo.envelope, other.holder, self._notice(job)
                    )
                else:
                    with self.opener(settings) as copy:
                        removed = remove_locks_of(
                            copy.store, copy.envelope, other.holder, self._notice(job)
                        )
            except StackvaultError as exc:
                self.log(
                    "lease-unlock-failed", job=job.name, repository=settings.name, error=str(exc)
                )
                continue
            if removed:
                self.log(
                    "locks-removed", job=job.name, repository=settings.name, count=len(removed)
                )

    def _failed_record(self, job: EffectiveJob, lease: Lease, dead: str) -> RunRecord:
        trigger: Trigger = lease.trigger if lease.trigger in TRIGGERS else "schedule"
        error = (
            f"the daemon running it ({lease.describe_holder()}) stopped without finishing: "
            f"{dead}; PID {self.me.pid} on {self.me.host} took the job over"
        )
        duration = max(0.0, (lease.refreshed - lease.acquired).total_seconds())
        return RunRecord(
            id=lease.run_id,
            job=job.name,
            host=lease.holder.host,
            started=lease.acquired,
            ended=lease.refreshed,
            result="failed",
            trigger=trigger,
            program=PROGRAM,
            steps=[RunStep("lease", "failed", lease.acquired, duration, error=error)],
        )

    def _expire(self, repo: Repository, others: list[Lease]) -> None:
        finished = [lease for lease in others if lease.state != "running"]
        cutoff = self.clock.now() - timedelta(seconds=self.options.keep_s)
        for lease in finished[: max(0, len(finished) - KEEP_LAST)]:
            if lease.slot < cutoff:
                try:
                    delete_lease(repo.store, lease.object_name)
                except StackvaultError as exc:
                    self.log("lease-cleanup-failed", job=lease.job, error=str(exc))
                    return

    # --- heartbeat --------------------------------------------------------------------------

    def _read(self, held: _Held) -> Lease | None:
        return read_lease(held.repo.store, held.repo.envelope, held.lease.object_name)

    def _notice(self, job: EffectiveJob) -> Callable[[str], None]:
        return lambda message: self.log("notice", job=job.name, detail=message)


class _Held:
    """A claimed lease, its open repository, and the thread that keeps it live."""

    def __init__(self, stack: ExitStack, repo: Repository, lease: Lease, gate: JobLeases):
        self.stack = stack
        self.repo = repo
        self.lease = lease
        self.gate = gate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{lease.job}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.gate.options.heartbeat_s):
            try:
                current = self.gate._read(self)
                if current is not None and current.state == "abandoned":
                    self.gate.log("lease-lost", job=self.lease.job, detail=current.note)
                    return
                self.lease = write_lease(
                    self.repo.store,
                    self.repo.envelope,
                    replace(self.lease, refreshed=self.gate.clock.now()),
                )
            except StackvaultError as exc:
                self.gate.log("lease-heartbeat-failed", job=self.lease.job, error=str(exc))
