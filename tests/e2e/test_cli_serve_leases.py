"""Two `stackvault serve` processes on one repository, with the real clock: a job every
minute whose run takes a while (a ``before`` hook sleeps). The first minute's run happens
once (one daemon claims it, the other is refused); the holder is killed with SIGKILL in the
middle of it; at the next minute the other daemon takes the job over — the killed run is
recorded as failed, the new one runs — and no lock is left.

Bounded: at most ~80 s to the first minute, ~95 s to the next minute's run, 20 s to stop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conftest import FAST_INIT, PASSWORD, make_tree
from stackvault.records.run import RunRecord
from stackvault.repo.repository import Repository
from stackvault.store.open import open_store


def runs(path: Path) -> list[RunRecord]:
    repo = Repository.open(open_store(str(path)), PASSWORD.encode())
    return sorted(repo.list_runs(job="etc"), key=lambda r: r.started)


def events(log: Path, name: str | None = None) -> list[dict[str, object]]:
    text = log.read_text() if log.exists() else ""
    found = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [e for e in found if name is None or e["event"] == name]


def wait_for(what: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.2)
    return what()


def test_two_daemons_run_each_slot_once_and_one_takes_over_from_a_killed_holder(
    tmp_path: Path,
) -> None:
    env = os.environ.copy()
    env.pop("STACKVAULT_PASSWORD_FILE", None)
    env["STACKVAULT_PASSWORD"] = PASSWORD
    repo = tmp_path / "primary"
    init = subprocess.run(
        [sys.executable, "-m", "stackvault", "--repo", str(repo), *FAST_INIT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    make_tree(tmp_path / "data", files=5)
    config = tmp_path / "stackvault.yaml"
    config.write_text(
        f"""\
repositories:
  primary:
    url: {repo}
    password_env: SV_PRIMARY_PW
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier3
    schedule: "* * * * *"
    repository: primary
    hooks:
      before: [sleep, "10"]
"""
    )
    env.pop("STACKVAULT_PASSWORD")
    env["SV_PRIMARY_PW"] = PASSWORD
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, log in logs.items():
        with log.open("w") as err:
            procs[name] = subprocess.Popen(
                [
                    *(sys.executable, "-m", "stackvault", "serve", "--config", str(config)),
                    *("--log-format", "json", "--jitter", "0", "--lease", "30"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                start_new_session=True,  # its hook's child dies with it
            )
    try:

        def started() -> list[str]:
            return [name for name, log in logs.items() if events(log, "run-start")]

        assert wait_for(lambda: bool(started()), 80), logs["a"].read_text()
        (holder,) = started()
        other = "b" if holder == "a" else "a"
        assert wait_for(lambda: bool(events(logs[other], "run-refused")), 15), logs[
            other
        ].read_text()
        (refused,) = events(logs[other], "run-refused")
        assert "was claimed by PID" in str(refused["reason"]), refused
        killed_run = str(events(logs[holder], "run-start")[0]["run"])
        os.killpg(procs[holder].pid, signal.SIGKILL)
        procs[holder].wait(timeout=10)

        assert wait_for(lambda: bool(events(logs[other], "run-end")), 95), logs[other].read_text()
        (takeover,) = events(logs[other], "lease-takeover")
        assert f"process {procs[holder].pid} on this host no longer exists" in str(
            takeover["reason"]
        )
        (end,) = events(logs[other], "run-end")
        assert end["result"] == "ok", logs[other].read_text()

        procs[other].send_signal(signal.SIGTERM)
        assert procs[other].wait(timeout=20) == 0, logs[other].read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    failed, ok = runs(repo)
    assert failed.id.startswith(killed_run) and failed.result == "failed"
    assert "stopped without finishing" in str(failed.steps[0].error)
    assert ok.result == "ok" and ok.trigger == "schedule"
    assert (ok.started - failed.started).total_seconds() >= 50  # the next minute's slot
    # Each slot ran once: one run-start in each daemon's log, for different minutes.
    assert len(events(logs[holder], "run-start")) == len(events(logs[other], "run-start")) == 1
    locks = repo / "locks"
    assert not locks.is_dir() or os.listdir(locks) == []
    for log in logs.values():
        assert "Traceback" not in log.read_text() and PASSWORD not in log.read_text()
