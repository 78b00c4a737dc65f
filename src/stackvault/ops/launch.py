"""What the daemon starts runs through (ops layer): the gate asked before each run (`RunGate`,
`stackvault.ops.lease.JobLeases` across hosts), the launcher that starts one
(`Launcher`, `stackvault.ops.child.ChildLauncher`) and the handle of a run in progress
(`RunHandle`); `AdmitAll` and `Finished` for one daemon running in its main thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from stackvault.config.job import EffectiveJob
from stackvault.ops.lease import RunKind
from stackvault.ops.scheduler import DueRun
from stackvault.records.run import RunRecord, RunResult, Trigger


class RunGate(Protocol):
    """Whether this daemon may start a run now (`stackvault.ops.lease.JobLeases` across
    hosts)."""

    def admit(
        self, job: EffectiveJob, run: DueRun, run_id: str, kind: RunKind = "run"
    ) -> str | None:
        """None: start ``run`` (its record will carry ``run_id``; ``kind`` ``drill``: a
        restore drill of the job); else why not."""
        ...

    def release(self, run_id: str, result: RunResult | None) -> None:
        """The admitted run ``run_id`` ended with ``result``."""
        ...


class AdmitAll:
    """The one-daemon gate: every run is admitted."""

    def admit(
        self, job: EffectiveJob, run: DueRun, run_id: str, kind: RunKind = "run"
    ) -> str | None:
        return None

    def release(self, run_id: str, result: RunResult | None) -> None:
        return None


RunJob = Callable[[EffectiveJob, Trigger, str], RunResult]
"""Runs one cycle of a job with a trigger and a run id, and returns its result."""


class RunHandle(Protocol):
    """A run in progress (`stackvault.ops.child.ChildRun`)."""

    record: RunRecord | None
    not_recorded: dict[str, str]
    notifications: dict[str, int]

    def poll(self) -> RunResult | None:
        """Its result once it has ended, else None."""
        ...

    def interrupt(self) -> None: ...

    def kill(self) -> None: ...


class Launcher(Protocol):
    """Starts runs (`stackvault.ops.child.ChildLauncher`)."""

    def start(self, job: str, trigger: str, run_id: str) -> RunHandle: ...


@dataclass
class Finished:
    """The handle of a run that ran to its end in the main thread."""

    result: RunResult
    record: RunRecord | None = None
    not_recorded: dict[str, str] = field(default_factory=dict)
    notifications: dict[str, int] = field(default_factory=dict)

    def poll(self) -> RunResult | None:
        return self.result

    def interrupt(self) -> None:
        return None

    def kill(self) -> None:
        return None
