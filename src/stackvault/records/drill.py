"""The restore drill result (records layer): what one ``stackvault drill JOB`` found.

A drill is stored as a **run record** (FORMAT.md §14) of its job with exactly one step named
``drill``: `DrillResult.to_run_record` writes it, `DrillResult.from_run_record` reads it
back, and `latest_drill` finds a job's newest drill among its records. The step's typed
fields say what every reader of run records needs (result, snapshot drilled, error); its
``details`` hold the rest, as written by `DrillResult.to_details`:

```
{"drill_id", "project", "drill_project", "snapshot_time", "rto_s", "rto_target_s",
 "rpo_achieved_s", "phases": [{"name", "group", "start_s", "end_s", "status"}],
 "probes": [{"name", "status": "pass"|"fail"|"skipped", "message"}],
 "cleanup": {"ok", "error", "removed": [...]}, "notices": [...], "blanked": [...]}
```

Times in ``phases`` are seconds from the drill's start. ``rto_s`` runs from the start of
the ``read snapshot`` phase until the probes are done (removing earlier drills' leftovers
and the cleanup are not part of it); None when the drill did not get that far.
``rpo_achieved_s`` is the restore point's age when the drill started. ``blanked`` lists the
outbound settings the drill emptied (``SERVICE: NAME``). A drill of a job that protects no
stack (``project`` and ``drill_project`` empty) restores its database artifacts into
throwaway servers and its paths into a directory (`DRILLABLE_SCHEMES`). A drill passes only
when every probe that ran passed (a skipped probe never counts as a pass, and a drill whose
probes were all skipped fails) and its cleanup left nothing behind.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from stackvault.records.run import RunRecord, RunResult, RunStep, StepResult, Trigger

DRILL_STEP = "drill"
"""The name of the one step of a drill's run record."""

ProbeStatus = Literal["pass", "fail", "skipped"]

DRILLABLE_SCHEMES = ("postgres", "postgresql", "mysql", "mariadb")
"""The source URL schemes (with or without ``+docker``) a drill of a job without a stack
restores into a throwaway server; a job's paths are drilled too, other sources are not."""


def drillable_source(url: str) -> bool:
    """Whether a drill of a job without a stack can restore source ``url`` (its scheme is
    one of `DRILLABLE_SCHEMES`)."""
    scheme = url.partition("://")[0].lower().removesuffix("+docker")
    return scheme in DRILLABLE_SCHEMES


PHASE_GROUPS = ("snapshot", "files", "databases", "start", "healthy", "probes", "cleanup")
"""What a phase belongs to, for the report's timeline: reading the snapshot, restoring
volumes and files, loading databases, starting services, waiting for them to be healthy,
probing, cleaning up."""


@dataclass(slots=True)
class DrillPhase:
    """One timed phase of a drill (seconds from the drill's start)."""

    name: str
    group: str
    """One of `PHASE_GROUPS`."""
    start_s: float
    end_s: float
    status: Literal["done", "failed"] = "done"

    @property
    def seconds(self) -> float:
        return round(self.end_s - self.start_s, 3)


@dataclass(slots=True)
class DrillProbe:
    """One thing the drill checked on the restored stack."""

    name: str
    status: ProbeStatus
    message: str


@dataclass(slots=True)
class DrillCleanup:
    """What removing the drill's containers, volumes, networks and directory did."""

    ok: bool = True
    error: str | None = None
    removed: list[str] = field(default_factory=list)
    """``container NAME``, ``volume NAME``, ``network NAME``, ``directory PATH``."""


@dataclass(slots=True)
class DrillResult:
    """The result of one drill (see the module docstring)."""

    drill_id: str
    """32 hex digits; the run record's id too, and the value of the drill label."""
    job: str
    project: str
    """The production Compose project the snapshot was taken of."""
    drill_project: str
    """The Compose project the drill restored into (``<project>-drill-<time>``)."""
    snapshot: str | None
    snapshot_time: datetime | None
    started: datetime
    ended: datetime
    result: RunResult = "failed"
    error: str | None = None
    rto_s: float | None = None
    rto_target_s: float | None = None
    rpo_achieved_s: float | None = None
    phases: list[DrillPhase] = field(default_factory=list)
    probes: list[DrillProbe] = field(default_factory=list)
    cleanup: DrillCleanup = field(default_factory=DrillCleanup)
    notices: list[str] = field(default_factory=list)
    blanked: list[str] = field(default_factory=list)
    """The outbound settings the drill emptied, ``SERVICE: NAME``."""

    @classmethod
    def not_run(
        cls, job: str, snapshot: str, snapshot_time: datetime, why: str, now: datetime
    ) -> DrillResult:
        """A drill that could not run (no Docker engine): failed, with ``why``."""
        return cls(
            drill_id=secrets.token_hex(16),
            job=job,
            project="",
            drill_project="",
            snapshot=snapshot,
            snapshot_time=snapshot_time,
            started=now,
            ended=now,
            result="failed",
            error=f"the drill could not run: {why}",
            rpo_achieved_s=round((now - snapshot_time).total_seconds(), 3),
        )

    @property
    def passed(self) -> bool:
        return self.result == "ok"

    @property
    def rto_met(self) -> bool | None:
        """Whether the measured RTO is within the target (None: not both known)."""
        if self.rto_s is None or self.rto_target_s is None:
            return None
        return self.rto_s <= self.rto_target_s

    def judge(self) -> RunResult:
        """The result the probes, the error and the cleanup give (``interrupted`` is kept):
        ok only without an error, with at least one probe passed, none failed, and a
        clean cleanup."""
        if self.result == "interrupted":
            return "interrupted"
        if self.error is not None or not self.cleanup.ok:
            return "failed"
        if any(p.status == "fail" for p in self.probes):
            return "failed"
        if not any(p.status == "pass" for p in self.probes):
            return "failed"
        return "ok"

    def summary_error(self) -> str | None:
        """One sentence: why the drill did not pass (None when it passed)."""
        if self.result == "ok":
            return None
        if self.result == "interrupted":
            return "the drill was interrupted"
        if self.error is not None:
            return self.error
        failed = [p for p in self.probes if p.status == "fail"]
        if failed:
            extra = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            return f"probe {failed[0].name} failed: {failed[0].message}{extra}"
        if not self.cleanup.ok:
            return f"cleanup failed: {self.cleanup.error}"
        return "no probe could be run (all were skipped)"

    def to_details(self) -> dict[str, Any]:
        """The ``details`` of the run record's drill step."""
        return {
            "drill_id": self.drill_id,
            "project": self.project,
            "drill_project": self.drill_project,
            "snapshot_time": self.snapshot_time.isoformat() if self.snapshot_time else None,
            "rto_s": self.rto_s,
            "rto_target_s": self.rto_target_s,
            "rpo_achieved_s": self.rpo_achieved_s,
            "phases": [
                {
                    "name": p.name,
                    "group": p.group,
                    "start_s": p.start_s,
                    "end_s": p.end_s,
                    "status": p.status,
                }
                for p in self.phases
            ],
            "probes": [
                {"name": p.name, "status": p.status, "message": p.message} for p in self.probes
            ],
            "cleanup": {
                "ok": self.cleanup.ok,
                "error": self.cleanup.error,
                "removed": list(self.cleanup.removed),
            },
            "notices": list(self.notices),
            "blanked": list(self.blanked),
        }

    def to_json(self) -> dict[str, Any]:
        """The ``drill --json`` report: the details with the run's own fields."""
        return {
            "job": self.job,
            "result": self.result,
            "passed": self.passed,
            "error": self.summary_error(),
            "snapshot": self.snapshot,
            "started": self.started.isoformat(),
            "ended": self.ended.isoformat(),
            "rto_met": self.rto_met,
            **self.to_details(),
        }

    def to_run_record(
        self,
        *,
        host: str,
        program: str,
        repository: str | None,
        location: str | None,
        trigger: Trigger = "manual",
    ) -> RunRecord:
        """The run record the drill is stored as (one ``drill`` step)."""
        step_result: StepResult = "ok" if self.result == "ok" else self.result
        if step_result == "partial":
            step_result = "failed"
        step = RunStep(
            name=DRILL_STEP,
            result=step_result,
            started=self.started,
            duration_s=round((self.ended - self.started).total_seconds(), 3),
            repository=repository,
            location=location,
            snapshot=self.snapshot,
            error=self.summary_error(),
            details=self.to_details(),
        )
        return RunRecord(
            id=self.drill_id,
            job=self.job,
            host=host,
            started=self.started,
            ended=self.ended,
            result=self.result,
            trigger=trigger,
            program=program,
            steps=[step],
        )

    @classmethod
    def from_run_record(cls, record: RunRecord) -> DrillResult | None:
        """The drill a run record holds; None when it is not a drill's record (no ``drill``
        step). Details that are missing or of the wrong type read as absent."""
        steps = record.steps_named(DRILL_STEP)
        if not steps:
            return None
        step = steps[-1]
        d = step.details or {}
        result = cls(
            drill_id=record.id,
            job=record.job,
            project=_text(d.get("project")),
            drill_project=_text(d.get("drill_project")),
            snapshot=step.snapshot,
            snapshot_time=_when(d.get("snapshot_time")),
            started=record.started,
            ended=record.ended,
            result=record.result,
            error=step.error,
            rto_s=_number(d.get("rto_s")),
            rto_target_s=_number(d.get("rto_target_s")),
            rpo_achieved_s=_number(d.get("rpo_achieved_s")),
        )
        for p in d.get("phases") or []:
            if isinstance(p, dict):
                status: Literal["done", "failed"] = (
                    "failed" if p.get("status") == "failed" else "done"
                )
                result.phases.append(
                    DrillPhase(
                        _text(p.get("name")),
                        _text(p.get("group")),
                        _number(p.get("start_s")) or 0.0,
                        _number(p.get("end_s")) or 0.0,
                        status,
                    )
                )
        for p in d.get("probes") or []:
            if isinstance(p, dict):
                st = p.get("status")
                status_: ProbeStatus = st if st in ("pass", "fail", "skipped") else "fail"
                result.probes.append(
                    DrillProbe(_text(p.get("name")), status_, _text(p.get("message")))
                )
        result.blanked = [str(x) for x in d.get("blanked") or [] if isinstance(x, str)]
        result.notices = [str(x) for x in d.get("notices") or [] if isinstance(x, str)]
        c = d.get("cleanup")
        if isinstance(c, dict):
            result.cleanup = DrillCleanup(
                ok=c.get("ok") is not False,
                error=c.get("error") if isinstance(c.get("error"), str) else None,
                removed=[str(x) for x in c.get("removed") or []],
            )
        return result


def latest_drill(records: Iterable[RunRecord], job: str | None = None) -> DrillResult | None:
    """The newest drill (by start) among ``records`` (of ``job`` if given); None if none."""
    found = [r for r in records if (job is None or r.job == job) and r.steps_named(DRILL_STEP)]
    if not found:
        return None
    return DrillResult.from_run_record(max(found, key=lambda r: r.started))


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
