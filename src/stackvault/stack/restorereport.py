"""What a stack restore reports (stack layer): its steps with their times, the validation of
the restored stack, the notices and the measured restore time (``stack restore --json`` and
``--report FILE`` print `StackRestore.to_dict`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
class StackRestore:
    snapshot: str
    project: str
    directory: str
    dry_run: bool
    steps: list[Step] = field(default_factory=list)
    validation: list[Validation] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    rto_s: float | None = None

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.validation)

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
        }
