"""The phases of a drill (stack layer): each timed from the drill's start, and the frame every
drill runs in - its work, then its cleanup whatever happened, then its verdict (see
`stackvault.stack.drill`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from stackvault.errors import Interrupted, StackvaultError
from stackvault.records.drill import DrillCleanup, DrillPhase, DrillResult
from stackvault.stack.drill.cleanup import signals_ignored

STEP_GROUPS = {
    "images": "snapshot",
    "configuration": "files",
    "directories": "files",
    "database services": "databases",
    "databases": "databases",
    "volumes": "files",
    "data directories": "files",
    "other services": "start",
    "validation": "probes",
}
"""The restore's steps (`stackvault.stack.restore`) and the drill phase group of each."""


class PhaseClock:
    """Phases of ``result``, timed from the clock's making; one phase runs at a time."""

    def __init__(self, result: DrillResult) -> None:
        self.t0 = time.monotonic()
        self.result = result
        self.current: DrillPhase | None = None

    def at(self) -> float:
        """Seconds since the drill started."""
        return round(time.monotonic() - self.t0, 3)

    def begin(self, name: str, group: str) -> None:
        """End the current phase and start ``name`` (of `PHASE_GROUPS` ``group``)."""
        self.end()
        self.current = DrillPhase(name, group, self.at(), self.at())
        self.result.phases.append(self.current)

    def end(self, status: str = "done") -> None:
        """End the current phase (if any) as ``done`` or ``failed``."""
        if self.current is not None:
            self.current.end_s = self.at()
            if status == "failed":
                self.current.status = "failed"
            self.current = None

    def mark(self, name: str, group: str) -> None:
        """A moment (a phase of no length), such as ``first healthy``."""
        now = self.at()
        self.result.phases.append(DrillPhase(name, group, now, now))


def run_phases(
    clock: PhaseClock,
    work: Callable[[], None],
    cleanup: Callable[[], DrillCleanup],
    now: Callable[[], datetime],
) -> DrillResult:
    """Run a drill's ``work``, then - whatever happened, with SIGINT and SIGTERM ignored -
    its ``cleanup`` as the ``cleanup`` phase, and judge the result. Nothing is raised: an
    error fails the phase it happened in and becomes the result's ``error`` (one sentence,
    prefixed by that phase), an interrupt makes the result ``interrupted``."""
    result = clock.result
    try:
        work()
    except (KeyboardInterrupt, Interrupted):
        clock.end("failed")
        result.result = "interrupted"
    except StackvaultError as exc:
        failed = clock.current.name if clock.current is not None else "drill"
        clock.end("failed")
        result.error = f"{failed}: {exc.message}"
        if exc.hint:
            result.error += f" ({exc.hint})"
    except Exception as exc:  # the engine's or Compose's own errors: reported, cleaned up
        failed = clock.current.name if clock.current is not None else "drill"
        clock.end("failed")
        result.error = f"{failed}: {type(exc).__name__}: {exc}"[:500]
    finally:
        with signals_ignored():
            clock.begin("cleanup", "cleanup")
            result.cleanup = cleanup()
            clock.end("done" if result.cleanup.ok else "failed")
    result.ended = now()
    result.result = result.judge()
    return result


def keep_for(clock: PhaseClock, seconds: float, tell: Callable[[str], None], what: str) -> None:
    """The ``kept`` phase: ``what`` stays up ``seconds`` before the cleanup (``--keep``)."""
    if seconds <= 0:
        return
    tell(f"keeping {what} for {seconds:.0f} s")
    clock.begin("kept", "cleanup")
    time.sleep(seconds)
    clock.end()
