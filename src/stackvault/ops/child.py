"""Runs of ``serve`` in child processes (ops layer), so several jobs run at once.

`ChildLauncher.start` runs one ``stackvault run JOB --json`` (the command line comes from the
caller: the cli layer knows it) in its own session, and returns a `ChildRun`:

- ``poll`` says whether it ended and with which result: its exit status mapped like
  ``run``'s (0 ok, 3 partial, 1 failed, 130 interrupted; anything else — a crash, a kill — is
  ``failed``); the run's record (its ``--json`` report on stdout) is parsed for the daemon's
  step lines, and each line the child writes on stderr (warnings, progress) is relayed to the
  daemon's log as an ``output`` event as it comes.
- ``interrupt`` sends SIGTERM: the child stops its step cleanly and records the run as
  interrupted (``stackvault run``'s own handling); ``kill`` sends SIGKILL to its process group
  (hooks and dump tools included).

A child whose daemon dies (SIGKILL, a crash) must not run on unsupervised while another daemon
takes its lease over: `watch_parent`, called by ``run`` when `PARENT_ENV` is set, interrupts
the child itself once its parent is gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO

from stackvault.records.run import RunRecord, RunResult

PARENT_ENV = "STACKVAULT_SERVE_PID"
"""Set in a child's environment to the daemon's PID (`watch_parent`)."""

_REPORT_KEYS = frozenset(("hooks", "recorded_in", "not_recorded", "notifications"))
"""What ``run --json`` adds to the run record."""
_RESULTS: dict[int, RunResult] = {0: "ok", 3: "partial", 1: "failed", 130: "interrupted"}

Log = Callable[..., None]
CommandLine = Callable[[str, str, str], Sequence[str]]
"""``(job, trigger, run_id)`` → the argv of the child that runs it."""


class ChildRun:
    """One run in a child process (see the module docstring)."""

    def __init__(self, job: str, argv: Sequence[str], log: Log, *, report: bool = True) -> None:
        self.job = job
        self.log = log
        self.report = report
        """Whether its stdout is a ``run --json`` report to parse (a drill's is not)."""
        self.record: RunRecord | None = None
        """The run's record, once the child has ended and printed it."""
        self.not_recorded: dict[str, str] = {}
        self.notifications: dict[str, int] = {}
        """What the run's notifier did (``sent``, ``failed``, ``pings_failed``)."""
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self._stdout: list[bytes] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._relay, args=(self.proc.stderr,), daemon=True),
            threading.Thread(target=self._collect, args=(self.proc.stdout,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self._result: RunResult | None = None

    def poll(self) -> RunResult | None:
        """The run's result once the child has ended (and its output is read), else None."""
        if self._result is not None:
            return self._result
        code = self.proc.poll()
        if code is None:
            return None
        for reader in self._readers:
            reader.join(timeout=5)
        self._parse()
        self._result = _RESULTS.get(code, "failed")
        if code not in _RESULTS:
            self.log("run-crashed", job=self.job, status=code)
        return self._result

    def interrupt(self) -> None:
        """Ask the run to stop (SIGTERM to the child)."""
        self._signal(self.proc.pid, os.kill, signal.SIGTERM)

    def kill(self) -> None:
        """Stop the run and everything it started now (SIGKILL to its process group)."""
        self._signal(self.proc.pid, os.killpg, signal.SIGKILL)

    @staticmethod
    def _signal(pid: int, send: Callable[[int, int], None], sig: signal.Signals) -> None:
        try:
            send(pid, sig)
        except ProcessLookupError:
            pass

    def _relay(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.log("output", job=self.job, line=line)  # the log redacts URLs

    def _collect(self, stream: IO[bytes]) -> None:
        self._stdout.append(stream.read())

    def _parse(self) -> None:
        text = b"".join(self._stdout).decode("utf-8", "replace").strip()
        if not text or not self.report:
            return
        try:
            doc = json.loads(text)
            self.record = RunRecord.from_json(
                {k: v for k, v in doc.items() if k not in _REPORT_KEYS}
            )
            self.not_recorded = {str(k): str(v) for k, v in doc.get("not_recorded", {}).items()}
            self.notifications = {
                str(k): int(v) for k, v in (doc.get("notifications") or {}).items()
            }
        except (ValueError, TypeError, AttributeError) as exc:
            self.log("run-report-unreadable", job=self.job, error=str(exc))


class ChildLauncher:
    """Starts each run as a child process whose argv ``command_line`` gives."""

    def __init__(self, command_line: CommandLine, log: Log, *, report: bool = True) -> None:
        self.command_line = command_line
        self.log = log
        self.report = report

    def start(self, job: str, trigger: str, run_id: str) -> ChildRun:
        argv = self.command_line(job, trigger, run_id)
        return ChildRun(job, argv, self.log, report=self.report)


def watch_parent(parent: int, interval_s: float = 1.0) -> None:
    """In a child of ``serve``: once the parent process ``parent`` is gone (this process was
    re-parented), send SIGTERM to this process — the run stops cleanly and records itself as
    interrupted. Returns at once; the watching is a daemon thread."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
