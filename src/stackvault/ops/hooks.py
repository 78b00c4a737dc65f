"""A job's hooks (ops layer): ``before``, ``after`` and ``on_failure`` commands of a run.

Hooks run on this host through `stackvault.sources.tools.host.HostRunner` (the one way a
local process is run: its environment without stackvault's secrets), with nothing on their
standard input and a time limit. What a hook prints is shown when it ends, each line prefixed
(``[hook before] ...``), and kept in the report: `HookOutcome.log` holds its last 64 KiB,
`HookOutcome.output` its last lines, short, for the run record and the warnings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from stackvault.config.job import hook_text
from stackvault.errors import StackvaultError
from stackvault.sources.tools.host import HostRunner
from stackvault.sources.tools.runner import Runner
from stackvault.stack.hooks import hook_output, show_output

HookKind = Literal["before", "after", "on_failure"]

OUTPUT_LINES = 3
OUTPUT_CHARS = 300


@dataclass(frozen=True)
class HookOutcome:
    """How one hook ended: ``ok``; its ``command`` as a person reads it; ``error`` one
    sentence when it failed; ``output`` the last lines it printed (short); ``log`` what it
    printed, standard output then error output, its last 64 KiB at most."""

    kind: HookKind
    command: str
    ok: bool
    duration_s: float
    error: str | None = None
    output: str = ""
    log: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "hook": self.kind,
            "command": self.command,
            "ok": self.ok,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
            "output": self.output,
            "log": self.log,
        }


def short_output(stdout: bytes, stderr: str) -> str:
    """The last `OUTPUT_LINES` non-empty lines of the output (error output first if any),
    at most `OUTPUT_CHARS` characters."""
    text = stderr.strip() or stdout.decode("utf-8", "replace").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()][-OUTPUT_LINES:]
    joined = " | ".join(lines)
    return joined if len(joined) <= OUTPUT_CHARS else "…" + joined[-(OUTPUT_CHARS - 1) :]


def run_hook(
    kind: HookKind,
    argv: tuple[str, ...],
    *,
    timeout_s: float,
    runner: Runner | None = None,
    notice: Callable[[str], None] = lambda _m: None,
) -> HookOutcome:
    """Run one hook and say how it ended; never raises for the hook's own failure (a command
    not found, a non-zero exit, the time limit): that is the outcome's ``error``. Each line
    it printed goes to ``notice`` as ``[hook KIND] line`` once it has ended."""
    import time

    started = time.monotonic()
    command = hook_text(argv)
    try:
        done = (runner or HostRunner()).run(argv, timeout=timeout_s)
    except StackvaultError as exc:
        return HookOutcome(kind, command, False, time.monotonic() - started, str(exc))
    output = short_output(done.stdout, done.stderr)
    log = hook_output(done.stdout, done.stderr)
    show_output(notice, kind, log)
    elapsed = time.monotonic() - started
    if done.code != 0:
        error = f"the {kind} hook exited with status {done.code}"
        return HookOutcome(kind, command, False, elapsed, error, output, log)
    return HookOutcome(kind, command, True, elapsed, None, output, log)
