"""Notifications (ops layer): telling people about runs, through Apprise, and dead-man pings.

`Notifier` is what ``run`` and ``serve`` call: `Notifier.from_config`, then around each run
`run_started` and `run_finished` (with the job's records, `previous_runs`); for what the
daemon sees, `event` (``lease-takeover``), `judged` (a ``status`` verdict: ``rpo-breach``,
``at-risk``), `next_digest` / `digest_due` / `send_digest`; `test` for ``notify test``.
Nothing it does raises into the caller or changes a run's result: an undeliverable message
is retried, logged (``notify-failed``) and counted (`Notifier.notifications_failed`,
`Notifier.counts`); a failed ping is logged (``ping-failed``) and counted
(`Notifier.pings_failed`). A command logs through `warning_log`, the daemon through its
event log.

- ``messages``: what a message says (job, step, error, what to do, snapshot), scrubbed of
  secrets;
- ``dedup``: when a run is told of (first failure, reminders at ``remind_every``, recovery),
  decided from the job's run records and this host's memory (`NotifyState`);
- ``delivery``: one Apprise object per target, tries with backoff, errors without URLs;
- ``ping``: the healthchecks.io-style ``/start``, success and ``/fail`` pings.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from stackvault.clock import Clock, SystemClock
from stackvault.config import Config, EffectiveJob, NotifySettings
from stackvault.config.model import NotifyEvent
from stackvault.errors import StackvaultError
from stackvault.ops.history import backup_runs
from stackvault.ops.notify.dedup import JobState, NotifyState, Outcome, decide, remember
from stackvault.ops.notify.delivery import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF_S,
    DeliveryResult,
    Target,
    url_secrets,
)
from stackvault.ops.notify.messages import (
    Message,
    digest_message,
    event_message,
    run_message,
    scrub,
    test_message,
)
from stackvault.ops.notify.ping import PING_TIMEOUT_S, PingKind, send_ping
from stackvault.ops.session import Opener
from stackvault.ops.status import JobStatus
from stackvault.records.run import RunRecord

__all__ = [
    "DeliveryResult",
    "Message",
    "Notifier",
    "NotifyCounts",
    "NotifyLog",
    "NotifyState",
    "previous_runs",
    "warning_log",
]

DEDUPLICATED: tuple[NotifyEvent, ...] = ("rpo-breach", "at-risk")
"""Events `Notifier.event` sends once per ``remind_every`` and job, until a run succeeds."""
_VERDICT_EVENTS: dict[str, NotifyEvent] = {"breached": "rpo-breach", "at-risk": "at-risk"}
"""The verdicts of ``status`` that are told of (`Notifier.judged`)."""


@dataclass(frozen=True)
class NotifyCounts:
    """What a notifier did so far (for metrics, and for ``run --json`` to hand to ``serve``)."""

    sent: int
    failed: int
    pings_failed: int

    def to_json(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "pings_failed": self.pings_failed}


class NotifyLog(Protocol):
    """Where the notifier logs (the daemon's `EventLog` fits): an event name and fields."""

    def __call__(self, event: str, /, **fields: object) -> None: ...


def _no_log(event: str, /, **fields: object) -> None:
    return None


class Notifier:
    """Sends the notifications of a configuration's ``notify:`` section (see the module
    docstring). ``state``: the dedup memory (`NotifyState`: in memory, or a file under the
    state directory); ``sleep``: between tries (tests pass one that does not wait)."""

    def __init__(
        self,
        settings: NotifySettings,
        targets: Sequence[Target],
        log: NotifyLog = _no_log,
        *,
        state: NotifyState | None = None,
        clock: Clock | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_s: float = DEFAULT_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
        ping_timeout_s: float = PING_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.targets = list(targets)
        self.log = log
        self.state = state or NotifyState()
        self.clock = clock or SystemClock()
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.ping_timeout_s = ping_timeout_s
        self.host = socket.gethostname()
        self.started = self.clock.now()
        self.notifications_sent = 0
        """Messages delivered (one per target)."""
        self.notifications_failed = 0
        """Messages a target did not get after every try (one per target), and internal
        errors of the notifier."""
        self.pings_failed = 0
        """Dead-man pings that failed after every try."""
        self._secrets: tuple[str, ...] = tuple(s for t in self.targets for s in t.secrets)
        self._lock = threading.RLock()
        """One delivery at a time (Apprise's log capture is process-wide), and one update of
        the state: the daemon may call from its lease threads."""

    @classmethod
    def from_config(
        cls,
        config: Config,
        log: NotifyLog = _no_log,
        *,
        state_dir: str | None = None,
        clock: Clock | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_s: float = DEFAULT_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Notifier:
        """The notifier of ``config``: each target's URL is read now; one that cannot be
        read, or that Apprise does not know, is logged (``notify-target-unusable``) and
        fails each message sent to it. ``state_dir``: where the dedup memory is kept
        (``notify-state.json``), over ``notify.state_dir``; with neither it is kept in this
        process only (the run records still decide)."""
        targets = []
        for target in config.notify.targets:
            described = target.url_ref.describe()
            try:
                url: str | None = target.url()
                problem = None
            except StackvaultError as exc:
                url, problem = None, str(exc)
            built = Target(target.name, target.events, url, problem, described=described)
            if built.problem is not None:
                log("notify-target-unusable", target=target.name, error=built.problem)
            targets.append(built)
        return cls(
            config.notify,
            targets,
            log,
            state=NotifyState.in_dir(state_dir or config.notify.state_dir),
            clock=clock,
            attempts=attempts,
            backoff_s=backoff_s,
            sleep=sleep,
        )

    def counts(self) -> NotifyCounts:
        """The counters: messages delivered, messages not delivered, pings failed."""
        return NotifyCounts(self.notifications_sent, self.notifications_failed, self.pings_failed)

    # --- runs ----------------------------------------------------------------------------

    def run_started(self, job: EffectiveJob) -> None:
        """A run of ``job`` starts: its ``/start`` ping (if the job has a ping URL)."""
        try:
            self._ping(job, "start", "")
        except Exception as exc:  # never into the run
            self._internal(exc, job.name)

    def run_finished(
        self,
        job: EffectiveJob,
        record: RunRecord,
        previous: Iterable[RunRecord] | None = None,
    ) -> list[DeliveryResult]:
        """A run of ``job`` ended with ``record``: its ping (success or ``/fail``), then its
        message when the dedup rules let one through, to every target that wants it.
        ``previous``: the job's run records read from its repository (others' and
        ``record`` itself are ignored; None: they could not be read, this host's memory
        alone decides). Returns the deliveries (none when nothing was sent)."""
        try:
            if record.result in ("ok", "failed", "partial"):
                kind: PingKind = "success" if record.result == "ok" else "fail"
                self._ping(job, kind, self._ping_body(record))
            if not self.targets:
                return []  # nothing to tell, nothing to remember
            outcome = Outcome.of(record)
            past = [Outcome.of(r) for r in previous or () if r.job == job.name]
            with self._lock, self.state.update() as data:
                mine = data.jobs.get(job.name)
                past += mine.outcomes if mine is not None else []
                remember(data, job.name, outcome)
                if record.result == "ok" and mine is not None:
                    for kind_name in DEDUPLICATED:
                        mine.events.pop(kind_name, None)
            self._state_problem()
            decision = decide(outcome, past, self.settings.remind_every.seconds)
            if decision is None:
                return []
            return self.send(run_message(record, decision, self._secrets))
        except Exception as exc:  # never into the run
            return self._internal(exc, job.name)

    def _ping_body(self, record: RunRecord) -> str:
        if record.result == "ok":
            return ""
        lines = [f"run {record.id[:8]} {record.result}"]
        for step in record.steps:
            if step.result in ("failed", "partial"):
                where = f" {step.repository}" if step.repository else ""
                lines.append(f"{step.name}{where}: {step.error or step.result}")
        return scrub("\n".join(lines), self._secrets)

    def _ping(self, job: EffectiveJob, kind: PingKind, body: str) -> None:
        if job.ping is None:
            return
        try:
            url = job.ping_url()
        except StackvaultError as exc:
            self.pings_failed += 1
            self.log("ping-failed", job=job.name, ping=kind, error=str(exc))
            return
        assert url is not None
        try:
            error = send_ping(url, kind, body, timeout_s=self.ping_timeout_s, sleep=self.sleep)
        except Exception as exc:  # never into the run
            error = f"internal error ({type(exc).__name__})"
        if error is not None:
            self.pings_failed += 1
            self.log("ping-failed", job=job.name, ping=kind, error=scrub(error, url_secrets(url)))

    # --- events --------------------------------------------------------------------------

    def event(self, job: str | None, kind: NotifyEvent, text: str) -> list[DeliveryResult]:
        """Tell of an event the caller saw (``rpo-breach``, ``at-risk``, ``check-failure``,
        ``drill-failure``, ``lease-takeover``): ``text`` says what (it is scrubbed).
        ``rpo-breach`` and ``at-risk`` of one job are sent once per ``remind_every`` until
        one of its runs succeeds; the others every time."""
        try:
            if kind in DEDUPLICATED and job is not None:
                now = self.clock.now()
                with self._lock, self.state.update() as data:
                    events = data.jobs.setdefault(job, JobState()).events
                    last = events.get(kind)
                    every = self.settings.remind_every.seconds
                    if last is not None and (now - last).total_seconds() < every:
                        return []
                    events[kind] = now
                self._state_problem()
            return self.send(event_message(job, kind, text, self._secrets))
        except Exception as exc:
            return self._internal(exc, job)

    def judged(self, status: JobStatus) -> list[DeliveryResult]:
        """Tell of a job's verdict as ``status`` judged it: ``breached`` is an ``rpo-breach``,
        ``at-risk`` an ``at-risk`` (each with the reasons, deduplicated as `event` does);
        ``ok`` forgets both, so that the next breach is told of at once."""
        try:
            kind = _VERDICT_EVENTS.get(status.verdict)
            if kind is None:
                if status.ok:
                    with self._lock, self.state.update() as data:
                        mine = data.jobs.get(status.job)
                        if mine is not None:
                            for name in DEDUPLICATED:
                                mine.events.pop(name, None)
                return []
            reasons = [r for v, r in status.reasons if v == status.verdict]
            text = f"job {status.job} is {status.verdict}: " + "; ".join(reasons or ["see status"])
            return self.event(status.job, kind, text)
        except Exception as exc:
            return self._internal(exc, status.job)

    def next_digest(self) -> datetime | None:
        """When the next digest is due: the first tick of ``notify.digest`` after the last
        digest (or, if none was sent, after this notifier was made); None when no target
        wants it (the daemon wakes up for it)."""
        if not any("digest" in t.events for t in self.targets):
            return None
        last = self.state.snapshot().digest or self.started
        return self.settings.digest.next_run(last)

    def digest_due(self) -> bool:
        """True when `next_digest` has come."""
        due = self.next_digest()
        return due is not None and due <= self.clock.now()

    def send_digest(self, statuses: Sequence[JobStatus]) -> list[DeliveryResult]:
        """Send the digest of ``statuses`` (what ``status`` reports) to the targets that
        want it, and remember when."""
        try:
            with self._lock, self.state.update() as data:
                data.digest = self.clock.now()
            self._state_problem()
            return self.send(digest_message(statuses, self.host))
        except Exception as exc:
            return self._internal(exc, None)

    # --- delivery ------------------------------------------------------------------------

    def test(self) -> list[DeliveryResult]:
        """Send a test message to every target, whatever its events (``notify test``)."""
        out = []
        for target in self.targets:
            out.append(self._deliver(target, test_message(target.name, self.host), "test"))
        return out

    def send(self, message: Message) -> list[DeliveryResult]:
        """Deliver ``message`` to every target that wants one of its events."""
        kind = ",".join(message.kinds)
        return [self._deliver(t, message, kind) for t in self.targets if t.wants(message)]

    def _deliver(self, target: Target, message: Message, kind: str) -> DeliveryResult:
        try:
            with self._lock:
                result = target.send(
                    message, attempts=self.attempts, backoff_s=self.backoff_s, sleep=self.sleep
                )
        except Exception as exc:
            result = DeliveryResult(target.name, False, f"internal error ({type(exc).__name__})")
        if result.ok:
            self.notifications_sent += 1
            self.log("notify-sent", target=target.name, event=kind, job=message.job)
        else:
            self.notifications_failed += 1
            self.log(
                "notify-failed",
                target=target.name,
                event=kind,
                job=message.job,
                attempts=result.attempts,
                error=result.error,
            )
        return result

    def _state_problem(self) -> None:
        if self.state.problem is not None:
            self.log("notify-state-problem", error=self.state.problem)
            self.state.problem = None

    def _internal(self, exc: Exception, job: str | None) -> list[DeliveryResult]:
        self.notifications_failed += 1
        self.log(
            "notify-failed",
            job=job,
            error=scrub(f"internal error ({type(exc).__name__}: {exc})", self._secrets),
        )
        return []


def warning_log(write: Callable[[str], None]) -> NotifyLog:
    """A `NotifyLog` for a command: every event but ``notify-sent`` as one ``warning:`` line
    (``warning: notify-failed target=ops event=failure job=dify attempts=3 error=...``)."""

    def log(event: str, /, **fields: object) -> None:
        if event == "notify-sent":
            return
        detail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and v != "")
        write(f"warning: {event} {detail}")

    return log


def previous_runs(job: EffectiveJob, opener: Opener) -> list[RunRecord] | None:
    """The run records of ``job`` in its first repository that can be read (the primary,
    then the copies), for `Notifier.run_finished`; None when none can."""
    for settings in job.repositories:
        try:
            with ExitStack() as stack:
                repo = stack.enter_context(opener(settings))
                return backup_runs(repo.list_runs(job=job.name))
        except StackvaultError:
            continue
    return None
