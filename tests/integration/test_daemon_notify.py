"""What ``serve`` itself tells the notification targets (`stackvault.ops.daemon` with a real
local repository and a local JSON webhook): a job whose RPO is breached (no snapshot at all)
is told of once when the daemon starts and not again at the next judgement; a lease taken
over is told of through `Daemon.notify`; the metrics count what was sent."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from stackvault.clock import SystemClock
from stackvault.config import load_config
from stackvault.ops.daemon import Daemon, DaemonOptions
from stackvault.ops.eventlog import EventLog
from stackvault.ops.metrics import Metrics
from support.jobrepos import init_fast, opener
from support.notifyservers import WebhookReceiver


def test_a_breached_rpo_is_told_once_and_a_takeover_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SV_PW", "pw")
    init_fast(tmp_path / "primary", b"pw")
    (tmp_path / "data").mkdir()
    config = tmp_path / "stackvault.yaml"
    config.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "primary"}, password_env: SV_PW}}
notify:
  targets:
    ops: {{url_env: HOOK_URL, events: [rpo-breach, lease-takeover]}}
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier3
    repository: primary
"""
    )
    with WebhookReceiver() as hook:
        monkeypatch.setenv("HOOK_URL", hook.json_url("/ops"))
        out = io.StringIO()
        metrics = Metrics()
        daemon = Daemon(
            lambda: load_config(str(config)),
            opener,
            EventLog("json", out, SystemClock()),
            options=DaemonOptions(jitter_s=0, seed=1),
            metrics=metrics,
        )
        daemon.start()
        (breach,) = hook.posted()
        assert "etc" in breach["message"] and "breached" in breach["message"], breach
        daemon._refresh_metrics()  # the next judgement: still breached, already told
        assert len(hook.posted()) == 1
        daemon.notify("etc", "lease-takeover", "PID 1 on standby stopped renewing its lease")
        assert len(hook.posted()) == 2
        assert "standby" in hook.posted()[1]["message"]
        daemon._refresh_metrics()
        exposition = generate_latest(metrics.registry).decode()
        assert "stackvault_notifications_sent_total 2.0" in exposition, exposition
        assert "stackvault_notifications_failed_total 0.0" in exposition
