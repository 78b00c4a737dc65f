"""One cycle of a configured job (ops layer): ``stackvault run JOB``.

`JobRun` runs the cycle of an `EffectiveJob` and returns a `RunReport`:

1. the ``before`` hook (a ``preflight`` step); if it fails, nothing else runs;
2. ``backup`` into the primary repository (a stack job: the stack backup of its plan;
   otherwise its paths and sources), the snapshot tagged ``job:NAME``;
3. ``copy`` into each copy repository: every ``job:NAME`` snapshot of the primary the copy
   lacks (so a copy that failed before is completed by the next run);
4. ``forget`` (the job's snapshots only, by the repository's retention, else ``default``)
   and ``prune`` (then the expiry of run records, as `prune` does) on each repository;
5. ``check`` of each repository where one is due (`stackvault.ops.checkdue`);
6. ``after`` (result ``ok``) or ``on_failure`` (``partial``, ``failed``; none after an
   interrupt) hook — its failure is reported, it does not change the result;
7. the run record written into every repository the run opened.

A step that fails is recorded and the run goes on where that makes sense: a failed copy,
forget, prune or check never undoes the backup (the run is ``partial``); a failed backup
stops the run (``failed``); an interrupt (SIGINT, SIGTERM: `KeyboardInterrupt`) stops the
step it hits — which releases its locks and saves nothing unfinished — skips the rest and
records the run as ``interrupted`` where the record can still be written.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from stackvault.clock import Clock, SystemClock
from stackvault.config.job import EffectiveJob
from stackvault.config.repository import RepositorySettings
from stackvault.engine.progress import NullProgress, Progress
from stackvault.errors import Interrupted, StackvaultError
from stackvault.ops.checkdue import check_due, data_slices
from stackvault.ops.history import last_check
from stackvault.ops.hooks import HookKind, HookOutcome, run_hook
from stackvault.ops.session import Opener, locked_session
from stackvault.records.run import RunRecord, RunResult, RunStep, StepResult, Trigger, job_tag
from stackvault.redact import redact
from stackvault.repo.repository import PROGRAM, Repository

TYPE_CHECKING = False
if TYPE_CHECKING:
    from stackvault.policy.retention import RetentionPolicy
    from stackvault.repo.snapshot import Snapshot

ProgressFactory = Callable[[str], Progress]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130
_EXIT = {"ok": EXIT_OK, "partial": EXIT_PARTIAL, "failed": EXIT_FAILED}

GROUP_BY = ("host", "paths")
"""How forget groups the job's snapshots (as `forget`'s default ``--group-by``)."""


class StepFailed(Exception):
    """Raised inside a step to end it as ``failed`` or ``partial`` (`result`) with a reason,
    keeping what it did (``snapshot``, ``bytes_added``, ``details``)."""

    def __init__(self, result: StepResult, error: str) -> None:
        super().__init__(error)
        self.result: StepResult = result
        self.error = error


@dataclass
class StepOutcome:
    """What a step's body reports on success (the step's typed fields)."""

    snapshot: str | None = None
    bytes_added: int | None = None
    details: dict[str, object] | None = None
    result: StepResult = "ok"
    error: str | None = None


@dataclass
class RunReport:
    """What ``run`` reports: the run record (the same in every repository), the hooks that
    ran, the repositories the record was written into, and those it could not be written
    into (name → one sentence)."""

    record: RunRecord
    hooks: list[HookOutcome] = field(default_factory=list)
    recorded_in: list[str] = field(default_factory=list)
    not_recorded: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 ``ok``, 3 ``partial``, 1 ``failed``, 130 ``interrupted``."""
        return _EXIT.get(self.record.result, EXIT_INTERRUPTED)

    def to_json(self) -> dict[str, object]:
        """The run record's JSON, then ``hooks``, ``recorded_in`` and ``not_recorded``."""
        return {
            **self.record.to_json(),
            "hooks": [h.to_json() for h in self.hooks],
            "recorded_in": self.recorded_in,
            "not_recorded": self.not_recorded,
        }


class _Interrupted(BaseException):
    """An interrupt was recorded in the current step; the run stops (a `BaseException`, like
    `KeyboardInterrupt`, so that no handler of errors takes it for one)."""


class JobRun:
    """One run of ``job``: create, then call `run` once.

    ``opener`` opens a repository of the configuration (`Opener`); ``clock`` gives every time
    of the record and the check decisions; ``notice`` receives notices and warnings;
    ``on_step`` each step as it ends; ``progress`` makes the progress display of a backup or
    copy; ``run_id`` is the id of its record (a fresh one if None)."""

    def __init__(
        self,
        job: EffectiveJob,
        opener: Opener,
        *,
        trigger: Trigger = "manual",
        run_id: str | None = None,
        clock: Clock | None = None,
        notice: Callable[[str], None] = lambda _m: None,
        on_step: Callable[[RunStep], None] = lambda _s: None,
        progress: ProgressFactory | None = None,
        hook_timeout_s: float | None = None,
    ) -> None:
        self.job = job
        self.opener = opener
        self.trigger: Trigger = trigger
        self.run_id = run_id or uuid.uuid4().hex
        self.clock = clock or SystemClock()
        self.notice = notice
        self.on_step = on_step
        self.progress: ProgressFactory = progress or (lambda _label: NullProgress())
        self.hook_timeout_s = hook_timeout_s or float(job.window.value.seconds)
        self.tag = job_tag(job.name)
        self.steps: list[RunStep] = []
        self.hooks: list[HookOutcome] = []
        self.snapshot_id: str | None = None
        self._open: dict[str, Repository] = {}
        """Repositories opened by this run, by name, in the order opened."""
        self._unopened: dict[str, str] = {}
        """Repositories that could not be opened: name → why (they are not tried again)."""

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> RunReport:
        """Run the cycle; never raises for a step's failure (it is in the report)."""
        run_id = self.run_id
        started = self.clock.now()
        with ExitStack() as stack:
            interrupted = False
            try:
                self._cycle(stack)
            except (_Interrupted, KeyboardInterrupt):
                interrupted = True
            result = self._result(interrupted)
            if not interrupted:
                self._closing_hook(result)
            record = RunRecord(
                id=run_id,
                job=self.job.name,
                host=socket.gethostname(),
                started=started,
                ended=self.clock.now(),
                result=result,
                trigger=self.trigger,
                program=PROGRAM,
                steps=self.steps,
            )
            report = RunReport(record, self.hooks)
            self._save(stack, report)
        return report

    def _cycle(self, stack: ExitStack) -> None:
        if not self._before():
            return
        primary = self._backup(stack)
        if primary is None:
            return
        for settings in self.job.copies:
            self._copy(stack, primary, settings)
        for name, repo in list(self._open.items()):
            self._retention(name, repo)
        for name, repo in list(self._open.items()):
            self._check(name, repo)

    def _result(self, interrupted: bool) -> RunResult:
        """``interrupted`` / ``failed`` (no usable snapshot) / ``partial`` (an incomplete
        snapshot, or a later step failed) / ``ok``."""
        if interrupted:
            return "interrupted"
        backups = [s for s in self.steps if s.name == "backup"]
        if not backups or backups[0].result == "failed":
            return "failed"
        if any(s.result in ("failed", "partial") for s in self.steps):
            return "partial"
        return "ok"

    # --- steps ------------------------------------------------------------------------------

    @contextmanager
    def _step(self, name: str, settings: RepositorySettings | None) -> Iterator[StepOutcome]:
        """Time a step and append its `RunStep`: ``ok`` unless the body raises — `StepFailed`
        (its result), a `StackvaultError` or any other exception (``failed``, one sentence),
        `KeyboardInterrupt` or `Interrupted` (``interrupted``, then `_Interrupted` stops the
        run)."""
        started = self.clock.now()
        t0 = self.clock.monotonic()
        outcome = StepOutcome()
        result: StepResult = "ok"
        error: str | None = None
        stop = False
        try:
            yield outcome
            result, error = outcome.result, outcome.error
        except StepFailed as exc:
            result, error = exc.result, exc.error
        except Interrupted as exc:  # the engine's form of an interrupt it cleaned up after
            result, error, stop = "interrupted", str(exc), True
        except StackvaultError as exc:
            result, error = "failed", str(exc)
        except KeyboardInterrupt:
            result, error, stop = "interrupted", "interrupted by a signal", True
        except Exception as exc:  # a bug: recorded in one sentence, the run goes on
            result, error = "failed", f"internal error ({type(exc).__name__}: {exc})"
        step = RunStep(
            name=name,
            result=result,
            started=started,
            duration_s=max(0.0, self.clock.monotonic() - t0),
            repository=settings.name if settings is not None else None,
            location=redact(settings.location) if settings is not None else None,
            snapshot=outcome.snapshot,
            bytes_added=outcome.bytes_added,
            error=error,
            details=outcome.details,
        )
        self.steps.append(step)
        self.on_step(step)
        if stop:
            raise _Interrupted

    def _skip(self, name: str, settings: RepositorySettings | None, why: str) -> None:
        """Record a step that is not run (``skipped``, ``why`` as its error)."""
        with self._step(name, settings) as out:
            out.result, out.error = "skipped", why

    def _before(self) -> bool:
        """The ``before`` hook as the ``preflight`` step; False if it failed."""
        argv = self.job.hooks.before
        if argv is None:
            return True
        with self._step("preflight", None) as out:
            hook = self._hook("before", argv)
            out.details = {"hook": "before", "output": hook.output}
            if not hook.ok:
                raise StepFailed("failed", f"{hook.error}; nothing was backed up")
        return self.steps[-1].result == "ok"

    def _hook(self, kind: HookKind, argv: tuple[str, ...]) -> HookOutcome:
        outcome = run_hook(kind, argv, timeout_s=self.hook_timeout_s, notice=self.notice)
        self.hooks.append(outcome)
        return outcome

    def _closing_hook(self, result: RunResult) -> None:
        """``after`` on success, ``on_failure`` on a partial or failed run; a failing one is
        reported (`RunReport.hooks`), it does not change the result."""
        kind: HookKind = "after" if result == "ok" else "on_failure"
        argv = self.job.hooks.after if result == "ok" else self.job.hooks.on_failure
        if argv is None:
            return
        try:
            self._hook(kind, argv)
        except KeyboardInterrupt:
            return

    def _open_repo(self, stack: ExitStack, settings: RepositorySettings) -> Repository:
        """The repository of ``settings``, opened once for the run (closed at its end)."""
        repo = self._open.get(settings.name)
        if repo is None:
            try:
                repo = stack.enter_context(self.opener(settings))
            except StackvaultError as exc:
                self._unopened[settings.name] = str(exc)
                raise
            self._open[settings.name] = repo
        return repo

    def _backup(self, stack: ExitStack) -> Repository | None:
        """The backup step (opening the primary is part of it); the open primary if a
        snapshot was made (complete or not), else None."""
        settings = self.job.repository
        primary: Repository | None = None
        with self._step("backup", settings) as out:
            primary = self._open_repo(stack, settings)
            snapshot, added, complete, problems = self._make_snapshot(primary)
            self.snapshot_id = snapshot
            out.snapshot, out.bytes_added = snapshot, added
            if not complete:
                out.result = "partial"
                out.error = f"the snapshot is incomplete: {problems} item(s) could not be read"
        return primary if self.steps[-1].result in ("ok", "partial") else None

    def _make_snapshot(self, primary: Repository) -> tuple[str, int, bool, int]:
        """Back up what the job protects; (snapshot id, stored bytes added, complete,
        problems)."""
        op = f"run {self.job.name}: backup"
        progress = self.progress("backup")
        try:
            with locked_session(primary, self.clock, op, exclusive=False, index=True) as repo:
                if self.job.stack_plan is not None:
                    snap = self._stack_backup(repo, progress)
                else:
                    snap = self._files_backup(repo, progress)
        finally:
            progress.close()
        s = snap.summary
        return snap.id, int(s.get("data_added_stored", 0)), snap.complete, int(s.get("problems", 0))

    def _files_backup(self, repo: Repository, progress: Progress) -> Snapshot:
        from stackvault.engine.backup import BackupJob, BackupOptions
        from stackvault.sources.registry import open_source

        opts = BackupOptions(
            paths=list(self.job.paths),
            tags=[self.tag],
            sources=[open_source(url) for url in self.job.sources],
        )
        return BackupJob(repo, opts, progress=progress).run().snapshot

    def _stack_backup(self, repo: Repository, progress: Progress) -> Snapshot:
        from stackvault.sources.docker.engine import connect
        from stackvault.stack.backup import backup_stack
        from stackvault.stack.plan import load_plan

        assert self.job.stack_plan is not None
        plan = load_plan(self.job.stack_plan)
        client = connect()
        try:
            done = backup_stack(
                repo, plan, client, tags=[self.tag], progress=progress, notice=self.notice
            )
        finally:
            client.close()
        return done.snapshot

    def _copy(self, stack: ExitStack, primary: Repository, settings: RepositorySettings) -> None:
        """Copy every job snapshot the copy lacks; the step names the new snapshot's copy."""
        from stackvault.engine.copy import CopyJob, select_snapshots

        name = self.job.name
        with self._step("copy", settings) as out:
            dest_repo = self._open_repo(stack, settings)
            progress = self.progress("copy")
            try:
                with (
                    locked_session(
                        primary, self.clock, f"run {name}: copy (source)", exclusive=False,
                        index=True,
                    ) as source,
                    locked_session(
                        dest_repo, self.clock, f"run {name}: copy", exclusive=False, index=True
                    ) as dest,
                ):  # fmt: skip
                    selected = select_snapshots(source, tags=[self.tag])
                    result = CopyJob(source, dest, progress=progress).run(selected)
            finally:
                progress.close()
            mine = [o for o in result.snapshots if o.source.id == self.snapshot_id]
            held = (mine[0].copy or mine[0].existing) if mine else None
            out.snapshot = held.id if held is not None else None
            out.bytes_added = result.totals().bytes_stored
            out.details = {"copied": len(result.copied), "already_there": len(result.skipped)}

    def _retention(self, name: str, repo: Repository) -> None:
        """Forget (the job's snapshots, by this repository's rules, else ``default``), then
        prune and run-record expiry, under one exclusive lock. Skipped on an append-only
        store and where no rules apply."""
        settings = self._settings(name)
        rules = self.job.retention.get(name) or self.job.retention.get("default")
        why = None
        if repo.store.capabilities().append_only:
            why = f"{repo.store.describe()} is append-only: nothing is deleted from it"
        elif rules is None:
            why = "no retention rules for this repository"
        if why is not None or rules is None:
            self._skip("forget", settings, why or "")
            return
        op = f"run {self.job.name}: forget and prune"
        with ExitStack() as held:
            try:
                session = held.enter_context(
                    locked_session(repo, self.clock, op, exclusive=True, index=True)
                )
            except StackvaultError as exc:  # the lock could not be taken
                with self._step("forget", settings):
                    raise StepFailed("failed", str(exc)) from exc
                return
            with self._step("forget", settings) as out:
                out.details = self._forget(session, rules.value.policy())
            with self._step("prune", settings) as out:
                out.details = self._prune(session)

    def _forget(self, session: Repository, policy: RetentionPolicy) -> dict[str, object]:
        from stackvault.policy.forget import plan_retention
        from stackvault.repo.forget import forget_snapshots

        snaps = [s for s in session.list_snapshots() if self.tag in s.tags]
        plan = plan_retention(snaps, policy, GROUP_BY, self.clock.now())
        done = forget_snapshots(session, plan.remove, self.notice)
        kept = sum(1 for d in plan.decisions if d.keep)
        return {"kept": kept, "removed": len(done.removed), "locked": len(done.locked)}

    def _prune(self, session: Repository) -> dict[str, object]:
        from stackvault.repo.prune import execute_prune, plan_prune

        plan = plan_prune(session, now=session.lock_time)
        execute_prune(session, plan, self.notice)
        runs = session.expire_runs(command="prune")  # FORMAT.md §14
        return {
            "packs_deleted": len(plan.delete_packs) + len(plan.unindexed_packs),
            "packs_repacked": len(plan.repack_packs),
            "bytes_freed": plan.bytes_freed,
            "objects_locked": len(plan.locked),
            "run_records_expired": len(runs.removed),
        }

    def _check(self, name: str, repo: Repository) -> None:
        """Check the repository if due (no step when not due); the packs of this period's
        slices if the policy reads a subset ``n/t`` (`stackvault.ops.checkdue`)."""
        from stackvault.repo.check import Checker

        settings = self._settings(name)
        every = self.job.check.every.value.seconds
        now = self.clock.now()
        try:
            last = last_check(repo.list_runs(job=self.job.name), name)
        except StackvaultError:
            last = None  # the history cannot be read: check
        if not check_due(last, every, now):
            assert last is not None
            self.notice(f"check {name}: not due (last check {last.started:%Y-%m-%d %H:%M} UTC)")
            return
        subset = self.job.check.read_data_subset.value
        slices = data_slices(subset, every, now) if subset is not None else None
        with self._step("check", settings) as out:
            op = f"run {self.job.name}: check"
            with locked_session(repo, self.clock, op, exclusive=False, index=False) as session:
                checker = Checker(
                    session,
                    subset=subset.fraction if subset is not None and slices is None else None,
                    packs=slices.holds if slices is not None else None,
                )
                report = checker.run()
            read = slices.text if slices is not None else subset.text if subset else None
            out.details = {
                "packs": report.packs,
                "packs_read": report.packs_read,
                "bytes_read": report.bytes_read,
                "errors": len(report.errors),
                "data": read,
            }
            if not report.ok:
                first = report.errors[0]
                raise StepFailed(
                    "failed",
                    f"{len(report.errors)} error(s) found, the first: {first.kind} {first.name}: "
                    f"{first.message}; run `stackvault check` on it for the repairs",
                )

    def _settings(self, name: str) -> RepositorySettings:
        return next(r for r in self.job.repositories if r.name == name)

    # --- records ----------------------------------------------------------------------------

    def _save(self, stack: ExitStack, report: RunReport) -> None:
        """Write the record into every repository the run opened (the primary always, even
        when nothing else ran, if it can be opened)."""
        primary = self.job.repository.name
        if primary in self._unopened:
            report.not_recorded[primary] = "it could not be opened (see the backup step)"
        elif primary not in self._open:
            try:
                self._open_repo(stack, self.job.repository)
            except (StackvaultError, KeyboardInterrupt) as exc:
                report.not_recorded[primary] = str(exc) or "interrupted"
        for name, repo in self._open.items():
            try:
                repo.save_run(report.record)
            except StackvaultError as exc:
                report.not_recorded[name] = str(exc)
            except KeyboardInterrupt:
                report.not_recorded[name] = "interrupted"
                break
            else:
                report.recorded_in.append(name)
