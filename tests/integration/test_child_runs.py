"""Runs of ``serve`` in child processes (`stackvault.ops.child`) with real processes: exit
statuses map to results, stderr lines are relayed as they come, the report on stdout is
parsed, SIGTERM and SIGKILL reach the child, and a child whose daemon died stops itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stackvault.cli.commands.run import RUN_TRIGGERS
from stackvault.ops.child import ChildRun
from stackvault.records.run import TRIGGERS


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def __call__(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


def wait(run: ChildRun, seconds: float = 20) -> str | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = run.poll()
        if result is not None:
            return result
        time.sleep(0.05)
    return None


def child(code: str, log: Log) -> ChildRun:
    return ChildRun("etc", [sys.executable, "-c", code], log)


RECORD = {
    "version": 1,
    "id": "ab" * 16,
    "job": "etc",
    "host": "h",
    "started": "2026-12-06T02:00:00+00:00",
    "ended": "2026-12-06T02:00:05+00:00",
    "result": "partial",
    "trigger": "schedule",
    "program": "stackvault test",
    "steps": [],
    "hooks": [],
    "recorded_in": ["primary"],
    "not_recorded": {"offsite": "it could not be opened"},
}


def test_exit_status_output_and_report_of_a_child() -> None:
    log = Log()
    code = (
        "import sys, json; print('warning: slow disk', file=sys.stderr, flush=True); "
        f"print(json.dumps({RECORD!r})); sys.exit(3)"
    )
    run = child(code, log)
    assert wait(run) == "partial"
    assert run.record is not None and run.record.id == "ab" * 16
    assert run.not_recorded == {"offsite": "it could not be opened"}
    assert ("output", {"job": "etc", "line": "warning: slow disk"}) in log.events

    for status, result in ((0, "ok"), (1, "failed"), (130, "interrupted"), (7, "failed")):
        log = Log()
        assert wait(child(f"raise SystemExit({status})", log)) == result
        assert (status == 7) == any(e == "run-crashed" for e, _ in log.events)


def test_interrupt_and_kill_reach_the_child() -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))\n"
        "print('ready', file=sys.stderr, flush=True)\n"
        "time.sleep(60)\n"
    )
    log = Log()
    run = child(code, log)
    deadline = time.monotonic() + 20
    while not log.events and time.monotonic() < deadline:
        time.sleep(0.05)
    run.interrupt()
    assert wait(run) == "interrupted"

    stubborn = child(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)", Log()
    )
    time.sleep(0.5)
    stubborn.interrupt()
    assert wait(stubborn, 1) is None
    stubborn.kill()
    assert wait(stubborn) == "failed"  # killed: no report, status -9


def test_a_child_whose_daemon_dies_interrupts_itself(tmp_path: Path) -> None:
    out = tmp_path / "out"
    grandchild = (
        "import os, signal, sys, time\n"
        "from stackvault.ops.child import watch_parent\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(out)!r}, 'w').write('term'), "
        "os._exit(0)))\n"
        "watch_parent(os.getppid(), 0.1)\n"
        "time.sleep(30)\n"
    )
    parent = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    time.sleep(1)  # the grandchild is watching
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert out.read_text() == "term"
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_run_offers_every_trigger_a_record_can_hold() -> None:
    assert sorted(RUN_TRIGGERS) == sorted(TRIGGERS)
    assert json.loads(json.dumps(RECORD))["trigger"] in RUN_TRIGGERS
