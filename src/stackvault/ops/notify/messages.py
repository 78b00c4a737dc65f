"""What a notification says (ops layer): the messages of a run, of an event, of the digest
and of ``notify test``, and the scrubbing every text goes through.

A message names the job, the step that failed and its error, what to do, and the snapshot
id when there is one. It never holds a secret: every text taken from elsewhere (a step's
error, an event's text) goes through `scrub`, which redacts URLs (`stackvault.redact`),
``key=value`` pairs whose key looks secret, ``user:password@`` without a scheme and
``Authorization: Bearer ...``-like tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from stackvault.config.model import NotifyEvent
from stackvault.ops.notify.dedup import Decision
from stackvault.ops.status import JobStatus
from stackvault.records.run import RunRecord, RunStep
from stackvault.redact import HIDDEN, is_secret_key, redact

Level = Literal["info", "success", "warning", "failure"]
"""How a service shows the message (Apprise's notification types)."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
_PAIR = re.compile(r"(?<![\w.-])([A-Za-z_][\w.-]*)=([^\s&'\",;]+)")
_USERINFO = re.compile(r"(?<![\w/:@.-])[\w.%+-]*:[^\s@/:]+@(?=[\w\[])")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


@dataclass(frozen=True)
class Message:
    """One notification: the events it tells of (``kinds``: a target gets it when it wants
    any of them), the job (None: about no job), a title line and the body."""

    kinds: tuple[NotifyEvent, ...]
    job: str | None
    title: str
    body: str
    level: Level

    def text(self) -> str:
        """Title and body, as a plain-text service shows them."""
        return f"{self.title}\n\n{self.body}"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without credentials: URLs redacted, ``password=...``-like pairs hidden,
    ``user:password@`` and ``Bearer TOKEN`` hidden, and each of ``secrets`` (4 characters or
    more) replaced."""
    out = _URL.sub(lambda m: redact(m.group(0)), text)
    out = _PAIR.sub(lambda m: f"{m[1]}={HIDDEN}" if is_secret_key(m[1]) else m[0], out)
    out = _USERINFO.sub(f"{HIDDEN}@", out)
    out = _BEARER.sub(lambda m: f"{m[1]} {HIDDEN}", out)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:
            out = out.replace(secret, HIDDEN)
    return out


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _bad_steps(record: RunRecord) -> list[RunStep]:
    return [s for s in record.steps if s.result in ("failed", "partial", "interrupted")]


def advice(job: str, step: RunStep | None) -> str:
    """What to do about a failed ``step`` of ``job`` (None: the run failed without one)."""
    repo = step.repository if step is not None and step.repository else "it"
    name = step.name if step is not None else ""
    if name == "preflight":
        return (
            f"the before hook failed and nothing was backed up: run the hook by hand (stackvault "
            f"config show {job}), fix it, then run: stackvault run {job}"
        )
    if name == "backup":
        return (
            f"no new restore point was made: fix the cause above, then run: stackvault run "
            f"{job}; stackvault status {job} shows the restore points left"
        )
    if name == "copy":
        return (
            f"the snapshot is in the primary repository and the next run copies what is "
            f"missing: check that {repo} is reachable and has space"
        )
    if name in ("forget", "prune"):
        return (
            f"retention did not run on {repo} (nothing was lost): check its space and locks "
            f"(stackvault unlock)"
        )
    if name == "check":
        return f"run stackvault check on {repo}: it names the damage and the repairs to run"
    if name == "drill":
        return f"the restore drill failed: restore the snapshot by hand to see why ({repo})"
    return f"see stackvault status {job}, then run: stackvault run {job}"


def _snapshot_line(record: RunRecord) -> str | None:
    backup = record.steps_named("backup")
    if backup and backup[0].snapshot:
        where = f" in {backup[0].repository}" if backup[0].repository else ""
        return f"Snapshot: {backup[0].snapshot}{where}"
    return None


def _run_line(record: RunRecord, verb: str) -> str:
    return (
        f"Job {record.job} {verb} on host {record.host} (run {record.id[:8]}, trigger "
        f"{record.trigger}, started {_when(record.started)}, took {record.duration_s:.0f} s)."
    )


def run_kinds(record: RunRecord, decision: Decision) -> tuple[NotifyEvent, ...]:
    """The events a run's message tells of: ``recovered``; or ``failure`` / ``partial``,
    with ``check-failure`` / ``drill-failure`` when such a step failed."""
    if decision.kind == "recovered":
        return ("recovered",)
    kinds: list[NotifyEvent] = ["failure" if record.result == "failed" else "partial"]
    if any(s.result == "failed" for s in record.steps_named("check")):
        kinds.append("check-failure")
    if any(s.result == "failed" for s in record.steps_named("drill")):
        kinds.append("drill-failure")
    return tuple(kinds)


def run_message(record: RunRecord, decision: Decision, secrets: Iterable[str] = ()) -> Message:
    """The message of a finished run the dedup rules let through (``decision``)."""
    kinds = run_kinds(record, decision)
    secrets = tuple(secrets)
    job = record.job
    if decision.kind == "recovered":
        lines = [_run_line(record, "succeeded again")]
        if decision.since is not None:
            lines.append(
                f"It had not succeeded since {_when(decision.since)} ({decision.runs} run(s) "
                "failed or were partial)."
            )
        snap = _snapshot_line(record)
        if snap:
            lines.append(snap)
        return Message(kinds, job, f"stackvault: {job} recovered", "\n".join(lines), "success")
    verb = "failed" if record.result == "failed" else "was partial"
    bad = _bad_steps(record)
    lines = [_run_line(record, verb)]
    if decision.kind == "reminder" and decision.since is not None:
        lines.append(
            f"Still {'failing' if record.result == 'failed' else 'partial'}: {decision.runs} "
            f"run(s) in a row since {_when(decision.since)}."
        )
    for step in bad:
        where = f" ({step.repository})" if step.repository else ""
        error = scrub(step.error or "no reason recorded", secrets)
        lines.append(f"Step {step.name}{where} {step.result}: {error}")
    snap = _snapshot_line(record)
    if snap:
        lines.append(snap)
    lines.append("What to do: " + advice(job, bad[0] if bad else None))
    first = bad[0].name if bad else "run"
    if decision.kind == "reminder":
        verb = "still failing" if record.result == "failed" else "still partial"
    title = f"stackvault: {job} {verb} ({first})"
    return Message(
        kinds, job, title, "\n".join(lines), "failure" if record.result == "failed" else "warning"
    )


_EVENT_ADVICE: dict[str, str] = {
    "rpo-breach": "the newest restore point is older than the RPO: see stackvault status {job}, "
    "then run: stackvault run {job}",
    "at-risk": "the RPO will be breached before the next run can end unless it succeeds: see "
    "stackvault status {job}",
    "check-failure": "run stackvault check on the repository: it names the repairs to run",
    "drill-failure": "restore the snapshot by hand to see why the drill failed",
    "lease-takeover": "the daemon that held the job stopped renewing its lease and this one took "
    "the job over: check that host",
}


def event_message(
    job: str | None, kind: NotifyEvent, text: str, secrets: Iterable[str] = ()
) -> Message:
    """The message of an event the daemon saw (``rpo-breach``, ``lease-takeover`` ...)."""
    about = f"{job} " if job else ""
    lines = [scrub(text, secrets)]
    todo = _EVENT_ADVICE.get(kind)
    if todo:
        lines.append("What to do: " + todo.format(job=job or "JOB"))
    level: Level = "warning" if kind in ("at-risk", "lease-takeover") else "failure"
    return Message((kind,), job, f"stackvault: {about}{kind}", "\n".join(lines), level)


def digest_message(statuses: Sequence[JobStatus], host: str) -> Message:
    """The daily summary: one line per job (its verdict, last run), then the reasons of any
    verdict other than ok."""
    lines = []
    for s in statuses:
        last = "never run" if s.last_run is None else f"last run {s.last_run.result}"
        lines.append(f"{s.job}: {s.verdict} ({last}, next {_when(s.next_run)})")
        lines += [f"  {verdict}: {scrub(reason)}" for verdict, reason in s.reasons]
    bad = sum(1 for s in statuses if not s.ok)
    head = "every job is ok" if not bad else f"{bad} of {len(statuses)} job(s) need attention"
    level: Level = "info" if not bad else "warning"
    body = "\n".join(lines) if lines else "no jobs"
    return Message(("digest",), None, f"stackvault on {host}: {head}", body, level)


def test_message(target: str, host: str) -> Message:
    """The message of ``notify test`` (sent to every target, whatever its events)."""
    return Message(
        (),
        None,
        "stackvault: test notification",
        f"A test from stackvault on host {host} to target {target}: notifications reach you.",
        "info",
    )
