"""Running a plan's hooks around the cut (stack layer).

`Hooks.before` runs every hook's ``before`` command in plan order; an essential one that fails
(non-zero exit, timeout, no container) aborts: the ``after`` commands of the hooks whose
``before`` already ran are run at once as the undo, then `HookFailed` is raised. An optional
one that fails is a warning. `Hooks.after` runs the ``after`` commands in reverse order
(once per hook, also as the undo after a failed cut); their failures are warnings - the data
is already read by then. Every run is recorded (service, phase, ok, seconds, exit status, the
last line of its error output and what it printed, bounded by `OUTPUT_KEEP`) for the manifest.

What a hook prints is shown as it ends, each line prefixed (``[hook api before] ...``), through
the notice callback (stderr on the command line): a hook's own words are often what explains
its failure. `hook_output` and `show_output` are shared with a job's hooks (`ops/hooks.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from stackvault.errors import SourceError, StackvaultError
from stackvault.records.plan import HookPlan
from stackvault.records.stack import HookRun
from stackvault.sources.tools.host import HostRunner
from stackvault.sources.tools.runner import Runner, describe_exit
from stackvault.stack.compose import Project

if TYPE_CHECKING:
    from docker import DockerClient


OUTPUT_KEEP = 64 * 1024
"""Characters of a hook's output kept for the report (its last ones)."""


def hook_output(stdout: bytes, stderr: str, keep: int = OUTPUT_KEEP) -> str:
    """What a hook printed: its standard output, then its error output (the two are read
    apart, so their order between each other is lost); at most the last ``keep``
    characters, cut at a line's start, after a ``[...]`` line when something was cut."""
    out = stdout.decode("utf-8", "replace")
    text = out + ("\n" if out and not out.endswith("\n") and stderr else "") + stderr
    if len(text) <= keep:
        return text
    tail = text[-keep:]
    start = tail.find("\n") + 1
    return "[...]\n" + (tail[start:] if 0 < start < len(tail) else tail)


def show_output(notice: Callable[[str], None], label: str, text: str) -> None:
    """Each non-empty line of ``text`` as a notice ``[hook LABEL] line``."""
    for line in text.splitlines():
        if line.strip():
            notice(f"[hook {label}] {line.rstrip()}")


class HookFailed(SourceError):
    """An essential ``before`` hook failed; the undo ran, nothing was stopped or saved."""


class Hooks:
    def __init__(
        self,
        hooks: list[HookPlan],
        project: Project,
        client: DockerClient,
        notice: Callable[[str], None],
    ) -> None:
        self.hooks = hooks
        self.project = project
        self.client = client
        self.notice = notice
        self.record: list[HookRun] = []
        self._ran_before: list[HookPlan] = []
        self._after_done = False

    def _runner(self, hook: HookPlan) -> Runner:
        if hook.where == "host":
            return HostRunner()
        from stackvault.sources.docker.engine import get_container
        from stackvault.sources.docker.exec import ContainerRunner

        svc = self.project.services.get(hook.service)
        if svc is None:
            raise SourceError(f"service {hook.service} has no container")
        return ContainerRunner(self.client, get_container(self.client, svc.container))

    def _run(self, hook: HookPlan, phase: str, argv: list[str]) -> str | None:
        """Run one command; None if it succeeded, else why not."""
        t0 = time.monotonic()
        error: str | None = None
        code: int | None = None
        output = ""
        try:
            res = self._runner(hook).run(argv, timeout=hook.timeout)
            code = res.code
            output = hook_output(res.stdout, res.stderr)
            show_output(self.notice, f"{hook.service} {phase}", output)
            if res.code != 0:
                last = (res.stderr.strip().splitlines() or [""])[-1][:200]
                error = describe_exit(res.code) + (f": {last}" if last else "")
        except StackvaultError as exc:
            error = exc.message
        self.record.append(
            HookRun(
                service=hook.service,
                phase=phase,
                where=hook.where,
                mode=hook.mode,
                ok=error is None,
                exit=code,
                error=error,
                seconds=round(time.monotonic() - t0, 3),
                output=output,
            )
        )
        return error

    def before(self) -> None:
        for hook in self.hooks:
            if not hook.before:
                self._ran_before.append(hook)
                continue
            error = self._run(hook, "before", hook.before)
            if error is None:
                self._ran_before.append(hook)
                continue
            what = f"the before hook of service {hook.service} ({hook.where}) {error}"
            if hook.mode == "optional":
                self.notice(f"warning: {what}; it is optional, the backup goes on")
                self._ran_before.append(hook)
                continue
            self.after()
            raise HookFailed(
                f"{what}; the backup was aborted before anything was stopped or saved, and "
                "the after hooks of the hooks already run were run",
                hint="fix the hook or mark it mode: optional in the plan",
            )

    def after(self) -> None:
        if self._after_done:
            return
        self._after_done = True
        for hook in reversed(self._ran_before):
            if not hook.after:
                continue
            error = self._run(hook, "after", hook.after)
            if error is not None:
                self.notice(f"warning: the after hook of service {hook.service} {error}")
