"""What a stack restore reports (stack layer): its steps with their times, the validation of
the restored stack, the notices and the measured restore time (``stack restore --json`` and
``--report FILE`` print `StackRestore.to_dict`); for a dry run the problems its checks found;
for a restore that failed, what failed, which logs to read and how to clean up. The same
document is the restore's record in the restored directory (`stackvault.stack.restorelabels`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PLANNED = "planned"
"""A dry run: nothing was done."""
RUNNING = "running"
"""The restore is under way (or its process died: its record says so)."""
OK = "ok"
"""Restored, every validation passed."""
INVALID = "invalid"
"""Restored, but a validation failed (a service not running within the wait, a check)."""
FAILED = "failed"
"""A step failed: the project is half-restored."""
INTERRUPTED = "interrupted"
"""Stopped by Ctrl-C / SIGTERM: the project is half-restored."""


@dataclass
class Step:
    """One step of a restore: ``planned``, then ``running``, then ``done`` or ``failed``."""

    name: str
    detail: str
    seconds: float | None = None
    status: str = "planned"


@dataclass
class Validation:
    """One thing checked about the restored stack: an artifact against what was recorded, a
    service running, an HTTP probe, a preset's check."""

    subject: str
    ok: bool
    message: str


@dataclass
class Problem:
    """Something the checks found that refuses the restore before anything is changed (the
    project exists, a file or volume is there, a published port is taken)."""

    message: str
    hint: str = ""


@dataclass
class LogHint:
    """A service whose logs say why the restore failed: the commands that show them."""

    service: str
    why: str
    commands: list[str]


@dataclass
class StackRestore:
    snapshot: str
    project: str
    directory: str
    dry_run: bool
    steps: list[Step] = field(default_factory=list)
    validation: list[Validation] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    rto_s: float | None = None
    status: str = PLANNED
    restore_id: str | None = None
    """The id in the labels of what this restore created (``io.stackvault.restore``)."""
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None
    """Why the restore failed (the failing step's error, with its hint)."""
    failed_step: str | None = None
    exit_code: int = 0
    logs: list[LogHint] = field(default_factory=list)
    cleanup: list[str] = field(default_factory=list)
    """How to remove a half-restored project: the commands, in order."""
    created: list[str] = field(default_factory=list)
    """The files and directories this restore created (absolute paths): what ``--replace``
    removes of it besides its labelled containers, volumes and networks."""
    replaced: list[str] = field(default_factory=list)
    """What ``--replace`` removed of an earlier restore (``container NAME``, ...)."""
    plan_file: str | None = None
    record: str | None = None
    """Where this report is kept in the restored directory."""
    owner: str | None = None
    """``HOST:PID`` of the process that restores."""
    started: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None and all(v.ok for v in self.validation)

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "project": self.project,
            "directory": self.directory,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "rto_s": self.rto_s,
            "steps": [asdict(s) for s in self.steps],
            "validation": [asdict(v) for v in self.validation],
            "notices": self.notices,
            "status": self.status,
            "restore_id": self.restore_id,
            "started": self.started,
            "owner": self.owner,
            "problems": [asdict(p) for p in self.problems],
            "error": self.error,
            "failed_step": self.failed_step,
            "exit_code": self.exit_code,
            "logs": [asdict(h) for h in self.logs],
            "cleanup": self.cleanup,
            "created": self.created,
            "replaced": self.replaced,
            "plan_file": self.plan_file,
            "record": self.record,
        }
