"""The run record (records layer): the history of one run of a job, as stored in every
repository the run touched (FORMAT.md §14).

`RunRecord` is the one definition; `RunRecord.from_json` reads it from a record's stored JSON
(and checks it, once, there) and `RunRecord.to_json` writes it. Keys this version does not
know — of the record and of each `RunStep` — are kept (``unknown``) and written after the
known ones, so a record of a newer writer read and written again loses nothing.

A record is written once, when the run has ended (the object is created, never replaced):
there is no "running" record. A run that was interrupted writes ``interrupted``; a run whose
process died writes nothing, which a reader sees as a scheduled run that did not happen.

Snapshots made by a job carry the tag `job_tag` (``job:<name>``), the link between a job's
runs and its snapshots.

Like `ArtifactRecord`, the record is a plain slotted dataclass with hand-written checks: a
status command reads every record of a repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args

RUN_FORMAT = 1
"""The ``version`` of the stored record; a reader refuses records of another version."""

RunResult = Literal["ok", "partial", "failed", "interrupted"]
"""How a run ended: ``ok`` every step succeeded; ``partial`` a snapshot was made but is
incomplete, or a later step (copy, forget, check...) failed after the backup succeeded;
``failed`` no usable snapshot was made (or the run's only purpose failed); ``interrupted``
stopped by a signal."""
StepResult = Literal["ok", "partial", "failed", "skipped", "interrupted"]
"""How a step ended; ``skipped``: not run (an earlier step failed, or nothing to do)."""
Trigger = Literal["schedule", "manual", "catch-up", "retry"]
"""Why the run started: its schedule, a person (``run JOB``), a missed schedule caught up
after the host was down, a retry of a failed run."""

RUN_RESULTS: tuple[RunResult, ...] = get_args(RunResult)
STEP_RESULTS: tuple[StepResult, ...] = get_args(StepResult)
TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)

STEP_NAMES = ("preflight", "backup", "copy", "forget", "prune", "check", "drill", "lease")
"""The steps this version writes; a reader accepts any name matching `_STEP_NAME` (a newer
writer may add steps)."""

_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_STEP_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")
_RUN_ID = re.compile(r"[0-9a-f]{32}")

_RUN_KEYS = frozenset(
    ("version", "id", "job", "host", "started", "ended", "result", "trigger", "program", "steps")
)
_STEP_KEYS = frozenset(
    (
        "name",
        "repository",
        "location",
        "result",
        "started",
        "duration_s",
        "snapshot",
        "bytes_added",
        "error",
        "details",
    )
)


def job_tag(job: str) -> str:
    """The tag every snapshot made by ``job`` carries: ``job:<name>``."""
    return f"job:{job}"


def valid_job_name(job: str) -> bool:
    """True if ``job`` is a job name a record can hold: a letter or digit, then up to 127
    letters, digits, ``.``, ``_`` or ``-``."""
    return _JOB_NAME.fullmatch(job) is not None


def format_time(when: datetime) -> str:
    """The stored form of a time: UTC, ISO 8601 with microseconds (as snapshots)."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(slots=True)
class RunStep:
    """One step of a run, against at most one repository."""

    name: str
    """``preflight``, ``backup``, ``copy``, ``forget``, ``prune``, ``check``, ``drill``
    (`STEP_NAMES`; a newer writer may add others)."""
    result: StepResult
    started: datetime
    """When the step started (UTC)."""
    duration_s: float
    repository: str | None = None
    """The name the configuration gives the repository the step worked on; None for a step
    that touches none (``preflight``)."""
    location: str | None = None
    """That repository's location, with every credential removed by the writer
    (`stackvault.redact.redact`; `Repository.save_run` refuses one that still holds any)."""
    snapshot: str | None = None
    """The id of the snapshot the step made (``backup``) or wrote (``copy``: its id in the
    destination), or that it checked or restored (``drill``)."""
    bytes_added: int | None = None
    """Stored bytes the step added to the repository (``backup``, ``copy``)."""
    error: str | None = None
    """Why the step failed or was partial: one sentence, never a secret."""
    details: dict[str, Any] | None = None
    """Anything the typed fields cannot say (counts of a prune, a drill's timings). A reader
    must not need it to judge the run."""
    unknown: dict[str, Any] = field(default_factory=dict)
    """Keys written by a newer version, kept as they are."""

    def to_json(self) -> dict[str, Any]:
        """The stored form: name, repository, location, result, started, duration_s,
        snapshot, bytes_added, error (each present, null when unset), details when set, then
        the unknown keys."""
        d: dict[str, Any] = {
            "name": self.name,
            "repository": self.repository,
            "location": self.location,
            "result": self.result,
            "started": format_time(self.started),
            "duration_s": self.duration_s,
            "snapshot": self.snapshot,
            "bytes_added": self.bytes_added,
            "error": self.error,
        }
        if self.details is not None:
            d["details"] = self.details
        if self.unknown:
            d.update(self.unknown)
        return d

    @classmethod
    def from_json(cls, value: object, where: str = "a step") -> RunStep:
        """The step stored as ``value``; `ValueError` naming the step and what is wrong."""
        if type(value) is not dict:
            raise ValueError(f"{where} is not a JSON object")
        d = cast(dict[str, Any], value)
        name = d.get("name")
        if type(name) is not str or _STEP_NAME.fullmatch(name) is None:
            raise ValueError(f"{where} has no valid name (lowercase letters, digits, '-')")
        where = f"{where} ({name})"
        result = d.get("result")
        if result not in STEP_RESULTS:
            raise ValueError(f"{where}: result {result!r} is not one of {', '.join(STEP_RESULTS)}")
        started = _time(d.get("started"), f"{where}: started")
        duration = d.get("duration_s")
        if not isinstance(duration, int | float) or isinstance(duration, bool) or duration < 0:
            raise ValueError(f"{where}: duration_s is not a number of seconds")
        for key in ("repository", "location", "error"):
            if d.get(key) is not None and type(d.get(key)) is not str:
                raise ValueError(f"{where}: {key} is not a string or null")
        snapshot = d.get("snapshot")
        if snapshot is not None and (type(snapshot) is not str or not _is_hex(snapshot)):
            raise ValueError(f"{where}: snapshot is not a snapshot id (hex) or null")
        added = d.get("bytes_added")
        if added is not None and (type(added) is not int or added < 0):
            raise ValueError(f"{where}: bytes_added is not a whole number or null")
        details = d.get("details")
        if details is not None and type(details) is not dict:
            raise ValueError(f"{where}: details is not a JSON object")
        return cls(
            name=name,
            result=cast(StepResult, result),
            started=started,
            duration_s=float(duration),
            repository=d.get("repository"),
            location=d.get("location"),
            snapshot=snapshot,
            bytes_added=added,
            error=d.get("error"),
            details=details,
            unknown={k: v for k, v in d.items() if k not in _STEP_KEYS},
        )


@dataclass(slots=True)
class RunRecord:
    """One run of a job: who ran it where, when, why, how it ended, and its steps in the
    order they ran."""

    id: str
    """32 hex digits, random, chosen when the run starts: the same in every repository the
    run touched (each holds its own record of it)."""
    job: str
    """The job's name (`valid_job_name`); its snapshots are tagged `job_tag` (``job:<name>``)."""
    host: str
    """The host name of the machine that ran it."""
    started: datetime
    """UTC."""
    ended: datetime
    """UTC. Normally not before `started`, but a host whose clock was stepped back during the
    run may write such a record; it is read as it is (`duration_s` is then negative)."""
    result: RunResult
    trigger: Trigger
    program: str
    """``stackvault <version>`` of the writer."""
    steps: list[RunStep] = field(default_factory=list)
    unknown: dict[str, Any] = field(default_factory=dict)
    """Keys written by a newer version, kept as they are."""

    @property
    def duration_s(self) -> float:
        """Seconds from start to end."""
        return (self.ended - self.started).total_seconds()

    @property
    def succeeded(self) -> bool:
        """True for a run whose result is ``ok`` (``partial`` is not a success)."""
        return self.result == "ok"

    @property
    def is_drill(self) -> bool:
        """True for the record of a restore drill (its one step is ``drill``,
        `stackvault.records.drill`): not a backup run of the job."""
        return len(self.steps) == 1 and self.steps[0].name == "drill"

    def steps_named(self, name: str) -> list[RunStep]:
        """The steps of that name, in the order they ran."""
        return [s for s in self.steps if s.name == name]

    def to_json(self) -> dict[str, Any]:
        """The stored form: version, id, job, host, started, ended, result, trigger, program,
        steps, then the unknown keys."""
        d: dict[str, Any] = {
            "version": RUN_FORMAT,
            "id": self.id,
            "job": self.job,
            "host": self.host,
            "started": format_time(self.started),
            "ended": format_time(self.ended),
            "result": self.result,
            "trigger": self.trigger,
            "program": self.program,
            "steps": [s.to_json() for s in self.steps],
        }
        if self.unknown:
            d.update(self.unknown)
        return d

    @classmethod
    def from_json(cls, value: object) -> RunRecord:
        """The record stored as ``value``; `ValueError` with one sentence naming the first
        thing wrong when it is not a run record (the repository reader turns it into
        `IntegrityError` naming the object). A record of another ``version`` raises
        `UnsupportedRunFormat`."""
        if type(value) is not dict:
            raise ValueError("a run record is not a JSON object")
        d = cast(dict[str, Any], value)
        version = d.get("version")
        if version != RUN_FORMAT:
            raise UnsupportedRunFormat(
                f"run record has unsupported version {version!r} "
                "(written by a newer version of stackvault?)"
            )
        run_id = d.get("id")
        if type(run_id) is not str or _RUN_ID.fullmatch(run_id) is None:
            raise ValueError("run record: id is not 32 hex digits")
        where = f"run {run_id[:8]}"
        job = d.get("job")
        if type(job) is not str or not valid_job_name(job):
            raise ValueError(f"{where}: job is not a job name")
        for key in ("host", "program"):
            if type(d.get(key)) is not str:
                raise ValueError(f"{where}: {key} is not a string")
        started = _time(d.get("started"), f"{where}: started")
        ended = _time(d.get("ended"), f"{where}: ended")
        result = d.get("result")
        if result not in RUN_RESULTS:
            raise ValueError(f"{where}: result {result!r} is not one of {', '.join(RUN_RESULTS)}")
        trigger = d.get("trigger")
        if trigger not in TRIGGERS:
            raise ValueError(f"{where}: trigger {trigger!r} is not one of {', '.join(TRIGGERS)}")
        steps = d.get("steps")
        if type(steps) is not list:
            raise ValueError(f"{where}: steps is not a list")
        return cls(
            id=run_id,
            job=job,
            host=d["host"],
            started=started,
            ended=ended,
            result=cast(RunResult, result),
            trigger=cast(Trigger, trigger),
            program=d["program"],
            steps=[RunStep.from_json(s, f"{where}: step {i + 1}") for i, s in enumerate(steps)],
            unknown={k: v for k, v in d.items() if k not in _RUN_KEYS},
        )


class UnsupportedRunFormat(ValueError):
    """A run record of a ``version`` this program does not read (a newer writer): not
    damage; readers skip it with a notice."""


def _time(value: object, what: str) -> datetime:
    """A stored time as an aware UTC datetime (a time without zone is taken as UTC, as for
    snapshots); `ValueError` naming ``what`` otherwise."""
    if type(value) is not str:
        raise ValueError(f"{what} is not an ISO 8601 time")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} is not an ISO 8601 time") from None
    return when.astimezone(UTC) if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)
