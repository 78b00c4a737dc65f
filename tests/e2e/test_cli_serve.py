"""`stackvault serve` end to end with the real clock: a job scheduled every minute on a local
repository; the daemon (a subprocess) runs it at the next minute, serves its metrics over
HTTP (the last success is the run record's end), survives a SIGHUP with an invalid
configuration file, and stops on SIGTERM with status 0, leaving no lock.

Bounded: at most ~75 s waiting for the first minute's run, 20 s for each signal's effect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from conftest import FAST_INIT, PASSWORD, make_tree
from stackvault.records.run import RunRecord
from stackvault.repo.repository import Repository
from stackvault.store.open import open_store
from support.dbservers import free_port


def runs(path: Path) -> list[RunRecord]:
    return Repository.open(open_store(str(path)), PASSWORD.encode()).list_runs(job="etc")


def log_events(log: Path) -> list[dict[str, object]]:
    text = log.read_text() if log.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_for(what: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.2)
    return what()


def test_serve_runs_the_job_reloads_and_stops(tmp_path: Path) -> None:
    env = os.environ.copy()
    env.pop("STACKVAULT_PASSWORD_FILE", None)
    env["STACKVAULT_PASSWORD"] = PASSWORD
    init = subprocess.run(
        [sys.executable, "-m", "stackvault", "--repo", str(tmp_path / "primary"), *FAST_INIT],
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
    url: {tmp_path / "primary"}
    password_env: SV_PRIMARY_PW
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier3
    schedule: "* * * * *"
    repository: primary
    retention:
      default: {{keep-last: 3}}
"""
    )
    env.pop("STACKVAULT_PASSWORD")
    env["SV_PRIMARY_PW"] = PASSWORD
    log = tmp_path / "serve.log"
    port = free_port()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "stackvault", "serve", "--config", str(config)),
                *("--log-format", "json", "--jitter", "0"),
                *("--metrics-listen", f"127.0.0.1:{port}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:
        assert wait_for(lambda: bool(runs(tmp_path / "primary")), 80), log.read_text()
        (record,) = runs(tmp_path / "primary")
        assert record.trigger == "schedule" and record.result == "ok", record
        assert wait_for(lambda: any(e["event"] == "run-end" for e in log_events(log)), 20)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            exposition = resp.read().decode()
        wanted = 'stackvault_backup_last_success_timestamp_seconds{job="etc"}'
        (line,) = [x for x in exposition.splitlines() if x.startswith(wanted)]
        assert abs(float(line.split()[-1]) - record.ended.timestamp()) < 1, line
        assert 'stackvault_backup_attempt_total{job="etc"} 1.0' in exposition
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200

        config.write_text("jobs: [this is not a mapping\n")
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: any(e["event"] == "reload-failed" for e in log_events(log)), 20), (
            log.read_text()
        )
        time.sleep(0.5)
        assert proc.poll() is None, "the daemon stopped on an invalid configuration"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    text = log.read_text()
    assert "Traceback" not in text and PASSWORD not in text
    events = [e["event"] for e in log_events(log)]
    for wanted in ("started", "next", "run-start", "step", "run-end", "reload-failed"):
        assert wanted in events, (wanted, events)
    assert events[-2:] == ["stopping", "stopped"], events
    start = next(e for e in log_events(log) if e["event"] == "run-start")
    assert start["job"] == "etc" and start["trigger"] == "schedule"
    locks = tmp_path / "primary" / "locks"
    assert not locks.is_dir() or os.listdir(locks) == []
