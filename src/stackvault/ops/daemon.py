"""The loop of ``stackvault serve`` (ops layer): sleep until the scheduler says a job is due,
start it, log every event, answer signals.

- **Several jobs at once, each in a child process** (`Launcher`: `stackvault.ops.child` in
  ``serve``): up to `DaemonOptions.concurrency` runs of different jobs at once, never two of
  one job (the scheduler's rule). A job whose slot passed while every place was taken starts
  when one frees (a ``catch-up`` if it is more than `Scheduler.late_after` late). A child is
  ``stackvault run``: SIGTERM makes it stop its step cleanly (releasing its locks, saving
  nothing unfinished) and record the run as ``interrupted``.
- **Or one at a time, in the main thread** (``run_job``: tests and library use): SIGTERM then
  reaches the run as a `KeyboardInterrupt`, with the same effect.
- **Start state from the repositories.** The last run of each job is read from every
  repository of the job (`read_job_history`, the newest wins), so a restart, or the daemon
  moving to another host, does not change the next due time. A repository that cannot be
  read is logged; the job then waits for its next slot.
- **Signals** (`Daemon.install_signals`): SIGTERM / SIGINT stop scheduling; the runs in
  progress are interrupted and the loop returns once they have recorded themselves; a child
  that has not stopped within ``stop_timeout_s`` is killed (an in-process run: the process
  exits) and the status is 1. SIGHUP reloads the
  configuration file: an invalid file is logged and the running configuration kept; jobs
  whose schedule did not change keep their state.
- **Logs**: one line per event on stderr (`EventLog`: ``text`` or ``json``), never a
  password (the configuration's locations are redacted; run errors come redacted from
  `JobRun`).
- **Metrics** (optional `Metrics`, ``serve --metrics-listen``): recomputed from the
  repositories at start, on reload, for a job after each of its runs (which is counted
  first), and every `METRICS_REFRESH_S` seconds (runs of other daemons, snapshot ages).
- **Notifications** (`stackvault.ops.notify`, the configuration's ``notify:``): a child run
  tells of itself (``stackvault run`` does); the daemon tells what only it sees — a run it
  could not start, a lease it took over, a job's verdict turning ``breached`` or ``at-risk``
  (judged with the metrics' cadence, when a target wants those events) and the daily
  digest. None of it ever stops the loop.
- **Lease** (several daemons on one repository): `RunGate.admit` is asked before each run
  (`stackvault.ops.lease.JobLeases` in ``serve``; `AdmitAll` alone); a refused run — another
  daemon has it, or is still running an earlier run of the job — is handed back to the
  scheduler (neither retried nor failed), and `RunGate.release` gets the result.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType

from stackvault.clock import Clock, SystemClock
from stackvault.config import Config, NotifySettings
from stackvault.config.job import EffectiveJob
from stackvault.config.model import NotifyEvent
from stackvault.errors import StackvaultError
from stackvault.interrupts import take_lost
from stackvault.ops.drills import DrillPlanner, DrillSpec, PastDrill
from stackvault.ops.eventlog import EventLog, stamp
from stackvault.ops.history import read_job_history
from stackvault.ops.launch import AdmitAll, Finished, Launcher, RunGate, RunHandle, RunJob
from stackvault.ops.lease import RunKind, lease_key, new_run_id
from stackvault.ops.metrics import Metrics
from stackvault.ops.notify import Notifier, NotifyCounts, previous_runs
from stackvault.ops.run import JobRun
from stackvault.ops.scheduler import DueRun, JobSpec, PastRun, Scheduler, SchedulerEvent
from stackvault.ops.session import Opener
from stackvault.ops.status import JobStatus, read_job_status
from stackvault.records.drill import latest_drill
from stackvault.records.run import RunResult, RunStep, Trigger

SLEEP_SLICE_S = 0.5
"""The longest single sleep: the bound on how late a signal's flag is seen."""
METRICS_REFRESH_S = 300.0
"""How often `Metrics` are recomputed from the repositories while nothing ends."""


@dataclass
class _Active:
    """A run the daemon started and has not seen end."""

    run: DueRun
    run_id: str
    handle: RunHandle
    kind: RunKind = "run"


@dataclass(frozen=True)
class DaemonOptions:
    """``jitter_s``: bound of the start offsets; ``seed``: of the scheduler's RNG (None:
    random); ``stop_timeout_s``: how long an interrupted run may take to stop;
    ``concurrency``: how many runs (of different jobs) a `Launcher` may have at once."""

    jitter_s: float = 30.0
    seed: int | None = None
    stop_timeout_s: float = 60.0
    concurrency: int = 2


def job_spec(job: EffectiveJob) -> JobSpec:
    """What the scheduler needs of an effective job."""
    return JobSpec(job.name, job.schedule.value, job.rpo.value.seconds)


class Daemon:
    """The loop (see the module docstring). ``load`` reads the configuration file (raising
    `StackvaultError` when it is invalid); ``opener`` opens a repository of it; runs start
    through ``launcher`` if given, else in the main thread through ``run_job`` (default: an
    in-process `JobRun` through ``opener``)."""

    def __init__(
        self,
        load: Callable[[], Config],
        opener: Opener,
        log: EventLog,
        *,
        options: DaemonOptions | None = None,
        clock: Clock | None = None,
        run_job: RunJob | None = None,
        launcher: Launcher | None = None,
        drill_launcher: Launcher | None = None,
        gate: RunGate | None = None,
        metrics: Metrics | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.load = load
        self.opener = opener
        self.log = log
        self.options = options or DaemonOptions()
        self.clock = clock or SystemClock()
        self.run_job: RunJob = run_job or self._run_in_process
        self.launcher = launcher
        self.drill_launcher = drill_launcher
        """Starts ``stackvault drill JOB`` for the jobs with ``drill.every`` (None: no drills)."""
        self.drills = DrillPlanner((), self.clock.now())
        self.metrics = metrics
        self._metrics_at = time.monotonic()
        self.notifier = Notifier(NotifySettings(), [], log, clock=self.clock)
        """Rebuilt from the configuration at start and on reload."""
        self._counted = NotifyCounts(0, 0, 0)
        """What of the notifier's counts the metrics have (`_count_notifications`)."""
        self.active: dict[str, _Active] = {}
        """The runs in progress, by job."""
        self.gate: RunGate = gate or AdmitAll()
        self.sleep = sleep
        self.stopping = False
        self.reload_requested = False
        self._in_run = False
        self._interrupted = False
        self._stop_timer: threading.Timer | None = None
        """Ends the process if an interrupted run does not stop in time; cancelled when it
        does."""
        self.config: Config | None = None
        self.scheduler: Scheduler | None = None

    # --- signals ----------------------------------------------------------------------------

    def install_signals(self) -> Callable[[], None]:
        """Handle SIGTERM, SIGINT and SIGHUP; returns the function that restores the previous
        handlers."""
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reload_requested = True
            return
        if take_lost() and self._in_run:  # its interrupt, dropped by a finalizer: again
            raise KeyboardInterrupt
        self.request_stop(signal.Signals(signum).name)

    def request_stop(self, why: str) -> None:
        """Stop scheduling; interrupt the run in progress (once) with `KeyboardInterrupt`."""
        first = not self.stopping
        self.stopping = True
        if first:
            self.log("stopping", signal=why, run_in_progress=self._in_run or None)
        if self._in_run and not self._interrupted:
            self._interrupted = True
            self._stop_timer = threading.Timer(self.options.stop_timeout_s, self._stop_timed_out)
            self._stop_timer.daemon = True
            self._stop_timer.start()
            raise KeyboardInterrupt

    def _stop_timed_out(self) -> None:
        self.log("stop-timeout", seconds=self.options.stop_timeout_s)
        os._exit(1)

    # --- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load the configuration (its errors propagate: the daemon does not start on an
        invalid file) and build the scheduler from the repositories' history."""
        config = self.load()
        for warning in config.warnings:
            self.log("config-warning", detail=warning)
        now = self.clock.now()
        specs = [job_spec(j) for j in config.jobs.values()]
        history = self._history(list(config.jobs.values()))
        self.config = config
        self._new_notifier(config)
        self.scheduler = Scheduler(
            specs, now, history=history, jitter_s=self.options.jitter_s, seed=self.options.seed
        )
        self.drills = DrillPlanner(*self._drill_plan(config, list(config.jobs.values())))
        self._refresh_metrics()
        self.log("started", config=str(config.path), jobs=",".join(config.jobs) or "none")
        self._log_next()

    def serve(self) -> int:
        """`start`, then loop until stopped; returns the exit status (0, or 1 when a run had
        to be killed on the way out)."""
        self.start()
        assert self.scheduler is not None
        while not self.stopping:
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            self._reap()
            free = self.options.concurrency - len(self.active) if self.launcher else 1
            runs = self.scheduler.due(self.clock.now(), limit=free) if free > 0 else []
            self._flush_events()
            for run in runs:
                self._start_run(run)
            if runs:
                continue  # the next due jobs are decided after these started, by the clock
            if self.drill_launcher is not None and self._start_drills():
                continue
            if time.monotonic() - self._metrics_at >= METRICS_REFRESH_S:
                self._refresh_metrics()
            if self.notifier.digest_due():
                self._send_digest()
            wake = self.scheduler.next_wakeup() if free > 0 else None
            drill = self.drills.next_wakeup() if free > 0 and self.drill_launcher else None
            if drill is not None:
                wake = drill if wake is None else min(wake, drill)
            digest = self.notifier.next_digest()
            if digest is not None:
                wake = digest if wake is None else min(wake, digest)
            if self.active:  # look at the runs in progress every slice
                soon = self.clock.now() + timedelta(seconds=SLEEP_SLICE_S)
                wake = soon if wake is None else min(wake, soon)
            self._sleep_until(wake)
        status = self._stop_active()
        self.log("stopped")
        return status

    def _sleep_until(self, when: datetime | None) -> None:
        while not self.stopping and not self.reload_requested:
            left = 3600.0 if when is None else (when - self.clock.now()).total_seconds()
            if left <= 0:
                return
            self.sleep(min(left, SLEEP_SLICE_S))

    def _start_run(self, run: DueRun) -> None:
        assert self.scheduler is not None and self.config is not None
        job = self.config.jobs.get(run.job)
        run_id = new_run_id()
        refusal = "the job is no longer configured" if job is None else None
        if job is not None:
            refusal = self.gate.admit(job, run, run_id)
            if refusal is None and self.stopping:  # a signal came while the lease was claimed
                self.gate.release(run_id, None)
                refusal = "stopping"
        if job is None or refusal is not None:
            self.log("run-refused", job=run.job, trigger=run.trigger, reason=refusal)
            self.scheduler.finished(run.job, self.clock.now(), None)
            return
        self.log("run-start", job=run.job, trigger=run.trigger, attempt=run.attempt, run=run_id[:8])
        handle: RunHandle
        if self.launcher is not None:
            try:
                handle = self.launcher.start(job.name, run.trigger, run_id)
            except OSError as exc:
                why = f"the run could not be started: {exc}"
                self.log("run-error", job=run.job, error=why)
                self.notifier.event(job.name, "failure", why)
                handle = Finished("failed")
        else:
            handle = self._run_here(job, run.trigger, run_id)
        self.active[run.job] = _Active(run, run_id, handle)
        if self.launcher is None:
            self._reap()

    def _run_here(self, job: EffectiveJob, trigger: Trigger, run_id: str) -> Finished:
        """Run in the main thread, to its end."""
        result: RunResult = "failed"
        try:
            self._in_run = True
            result = self.run_job(job, trigger, run_id)
        except KeyboardInterrupt:
            result = "interrupted"
        except StackvaultError as exc:
            self.log("run-error", job=job.name, error=str(exc))
            result = "failed"
        finally:
            self._in_run = False
            if self._stop_timer is not None:
                self._stop_timer.cancel()
        return Finished(result)

    def _reap(self) -> None:
        """Close the runs that have ended: their lease, their log lines, the scheduler."""
        assert self.scheduler is not None
        for key, active in list(self.active.items()):
            result = active.handle.poll()
            if result is None:
                continue
            del self.active[key]
            self.gate.release(active.run_id, result)
            name = active.run.job
            if active.kind == "drill":
                self._drill_ended(name, active, result)
                continue
            record = active.handle.record
            for step in record.steps if record is not None else []:
                self._log_step(name, step)
            for repository, why in active.handle.not_recorded.items():
                self.log("not-recorded", job=name, repository=repository, error=why)
            self.log("run-end", job=name, trigger=active.run.trigger, result=result)
            self.scheduler.finished(name, self.clock.now(), result)
            if self.metrics is not None and active.handle.notifications:
                told = active.handle.notifications
                self.metrics.add_notifications(
                    told.get("sent", 0), told.get("failed", 0), told.get("pings_failed", 0)
                )
            if self.metrics is not None and name in self.config_jobs():
                if record is not None:
                    self.metrics.observe_run(name, record)
                self._refresh_metrics([name])
            elif name in self.config_jobs():
                self._judge([name])
            self._flush_events()
            self._log_next()

    def _stop_active(self) -> int:
        """Interrupt the runs in progress and wait for them (killing those that do not stop
        within the stop timeout); 1 if any had to be killed, else 0."""
        if not self.active:
            return 0
        for active in self.active.values():
            active.handle.interrupt()
        deadline = time.monotonic() + self.options.stop_timeout_s
        while self.active and time.monotonic() < deadline:
            self._reap()
            if self.active:
                time.sleep(0.1)
        if not self.active:
            return 0
        self.log("stop-timeout", seconds=self.options.stop_timeout_s, jobs=",".join(self.active))
        for active in self.active.values():
            active.handle.kill()
        end = time.monotonic() + 10
        while self.active and time.monotonic() < end:
            self._reap()
            time.sleep(0.1)
        return 1

    def reload(self) -> None:
        """Re-read the configuration file; keep the running one if it is invalid."""
        assert self.scheduler is not None and self.config is not None
        try:
            config = self.load()
        except StackvaultError as exc:
            self.log("reload-failed", error=str(exc), hint="the previous configuration is kept")
            return
        states = self.scheduler.states
        changed = [
            j
            for j in config.jobs.values()
            if j.name not in states or states[j.name].spec.schedule != j.schedule.value
        ]
        history = self._history(changed)
        self.scheduler.set_jobs(
            [job_spec(j) for j in config.jobs.values()], self.clock.now(), history
        )
        self.config = config
        self._new_notifier(config)
        redrilled = [
            j
            for j in config.jobs.values()
            if j.drill.every is not None
            and self.drills.every.get(j.name) != j.drill.every.value.seconds
        ]
        self.drills.set_jobs(*self._drill_plan(config, redrilled))
        self._refresh_metrics()
        self.log("reloaded", config=str(config.path), jobs=",".join(config.jobs) or "none")
        self._log_next()

    # --- drills ----------------------------------------------------------------------------

    def _drill_plan(
        self, config: Config, jobs: list[EffectiveJob]
    ) -> tuple[list[DrillSpec], datetime, dict[str, PastDrill]]:
        """The drilled jobs of ``config``, now, and the newest drill of each of ``jobs``
        as their primary repository records it."""
        specs = [
            DrillSpec(j.name, j.drill.every.value.seconds)
            for j in config.jobs.values()
            if j.drill.every is not None
        ]
        drilled = {s.job for s in specs}
        past: dict[str, PastDrill] = {}
        for job in jobs:
            if job.name not in drilled or self.drill_launcher is None:
                continue
            try:
                with self.opener(job.repository) as repo:
                    last = latest_drill(repo.list_runs(job=job.name))
            except StackvaultError as exc:
                self.log("history-unreadable", job=job.name, error=str(exc), what="drills")
                continue
            if last is not None:
                past[job.name] = PastDrill(last.ended, last.result)
        return specs, self.clock.now(), past

    def _start_drills(self) -> bool:
        """Start the drills that are due while places are free; True if one started."""
        assert self.config is not None and self.drill_launcher is not None
        started = False
        now = self.clock.now()
        for name in self.drills.due(now):
            if self.options.concurrency - len(self.active) <= 0:
                break
            job = self.config.jobs.get(name)
            key = lease_key(name, "drill")
            if job is None or key in self.active:
                continue
            run = DueRun(name, "schedule", self.drills.due_at[name], now, 1)
            run_id = new_run_id()
            refusal = self.gate.admit(job, run, run_id, "drill")
            self.drills.started(name)
            if refusal is not None:
                self.log("drill-refused", job=name, reason=refusal)
                self.drills.finished(name, now, None)
                continue
            self.log("drill-start", job=name, snapshot=job.drill.snapshot.value)
            try:
                handle = self.drill_launcher.start(name, "schedule", run_id)
            except OSError as exc:
                why = f"the drill could not be started: {exc}"
                self.log("drill-error", job=name, error=why)
                handle = Finished("failed")
            self.active[key] = _Active(run, run_id, handle, "drill")
            started = True
        return started

    def _drill_ended(self, name: str, active: _Active, result: RunResult) -> None:
        self.log("drill-end", job=name, result=result)
        self.drills.finished(name, self.clock.now(), result)
        if result != "ok":
            record = active.handle.record
            why = record.steps[0].error if record is not None and record.steps else None
            self.notify(
                name,
                "drill-failure",
                f"the restore drill of job {name} {result}" + (f": {why}" if why else ""),
            )
        if name in self.config_jobs():
            self._refresh_metrics([name])

    # --- helpers ---------------------------------------------------------------------------

    def config_jobs(self) -> set[str]:
        return set(self.config.jobs) if self.config is not None else set()

    def _refresh_metrics(self, jobs: list[str] | None = None) -> None:
        """Recompute the metrics (of ``jobs``, default all) from the repositories, and judge
        the jobs for the notifications; a failure is logged, never raised."""
        if jobs is None:
            self._metrics_at = time.monotonic()
        if self.metrics is None or self.config is None:
            self._judge(jobs)
            self._count_notifications()
            return
        try:
            fresh = self.metrics.refresh(self.config, self.opener, jobs=jobs)
        except StackvaultError as exc:
            self.log("metrics-refresh-failed", error=str(exc))
            self._judge(jobs)
        else:  # the metrics judged the jobs already: no second read of the repositories
            self._judge_statuses([f.status for f in fresh if f.status is not None])
        self._count_notifications()

    def _new_notifier(self, config: Config) -> None:
        """The notifier of ``config`` (its URLs read again), the old one's counts kept."""
        self._count_notifications()
        self.notifier = Notifier.from_config(config, self.log, clock=self.clock)
        self._counted = NotifyCounts(0, 0, 0)

    def _count_notifications(self) -> None:
        """Hand the metrics what the daemon's own notifier did since the last call."""
        now = self.notifier.counts()
        if self.metrics is not None:
            self.metrics.add_notifications(
                now.sent - self._counted.sent,
                now.failed - self._counted.failed,
                now.pings_failed - self._counted.pings_failed,
            )
        self._counted = now

    def _judge(self, jobs: list[str] | None = None) -> None:
        """Tell the notifier each job's verdict (``rpo-breach``, ``at-risk``), when one of
        its targets wants those events (reading the status opens every repository)."""
        if self.config is None or not self._wants_verdicts():
            return
        names = jobs if jobs is not None else list(self.config.jobs)
        found = [self.config.jobs[n] for n in names if n in self.config.jobs]
        self._judge_statuses([read_job_status(j, self.opener, self.clock) for j in found])

    def _wants_verdicts(self) -> bool:
        return any({"rpo-breach", "at-risk"} & set(t.events) for t in self.notifier.targets)

    def _judge_statuses(self, statuses: list[JobStatus]) -> None:
        """`_judge` of statuses already read."""
        if not self._wants_verdicts():
            return
        for status in statuses:
            self.notifier.judged(status)

    def _send_digest(self) -> None:
        assert self.config is not None
        statuses = [read_job_status(j, self.opener, self.clock) for j in self.config.jobs.values()]
        self.notifier.send_digest(statuses)

    def notify(self, job: str, kind: NotifyEvent, text: str) -> None:
        """Tell the notification targets that want ``kind`` (e.g. a lease taken over)."""
        self.notifier.event(job, kind, text)

    def _history(self, jobs: list[EffectiveJob]) -> dict[str, PastRun]:
        """Each job's newest recorded run over its repositories."""
        out: dict[str, PastRun] = {}
        for job in jobs:
            for settings in job.repositories:
                try:
                    with self.opener(settings) as repo:
                        last = read_job_history(repo, job.name).last_run
                except StackvaultError as exc:
                    self.log(
                        "history-unreadable",
                        job=job.name,
                        repository=settings.name,
                        error=str(exc),
                    )
                    continue
                if last is not None and (
                    job.name not in out or last.started > out[job.name].started
                ):
                    out[job.name] = PastRun(last.started, last.result)
        return out

    def _log_step(self, job: str, step: RunStep) -> None:
        self.log(
            "step",
            job=job,
            step=step.name,
            repository=step.repository,
            result=step.result,
            snapshot=step.snapshot[:8] if step.snapshot else None,
            duration_s=round(step.duration_s, 1),
            error=step.error,
        )

    def _run_in_process(self, job: EffectiveJob, trigger: Trigger, run_id: str) -> RunResult:
        runner = JobRun(
            job,
            self.opener,
            trigger=trigger,
            run_id=run_id,
            clock=self.clock,
            notice=lambda m: self.log("notice", job=job.name, detail=m),
            on_step=lambda step: self._log_step(job.name, step),
        )
        self.notifier.run_started(job)
        report = runner.run()
        self.notifier.run_finished(job, report.record, previous_runs(job, self.opener))
        for name, why in report.not_recorded.items():
            self.log("not-recorded", job=job.name, repository=name, error=why)
        return report.record.result

    def _flush_events(self) -> None:
        assert self.scheduler is not None
        for event in self.scheduler.drain_events():
            self._log_event(event)

    def _log_event(self, e: SchedulerEvent) -> None:
        if e.kind in ("due", "finished"):
            return  # run-start and run-end say it
        self.log(e.kind, job=e.job, trigger=e.trigger, delay_s=e.delay_s, detail=e.detail)

    def _log_next(self) -> None:
        assert self.scheduler is not None
        for name, state in self.scheduler.states.items():
            due = state.next_due()
            if due is not None:
                self.log("next", job=name, at=stamp(due))
