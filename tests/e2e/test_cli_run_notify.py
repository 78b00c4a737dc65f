"""`stackvault run JOB` tells people about its runs: a JSON webhook target and a dead-man ping
URL (local receivers on 127.0.0.1). Two failed runs in a row give one failure message (the
second is a repeat), the next good run one recovery message; the ping URL gets ``/start``
for each run, ``/fail`` with the error for a failed one and the plain URL for a good one.
A target that is down is a warning and changes no exit status."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FAST_INIT, PASSWORD, Result, make_tree
from support.notifyservers import WebhookReceiver, free_port

Cli = Callable[..., Result]


@pytest.fixture
def config(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("STACKVAULT_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    res = cli("--repo", tmp_path / "primary", *FAST_INIT)
    assert res.code == 0, res.err
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    monkeypatch.setenv("SV_PW", PASSWORD)
    make_tree(tmp_path / "data", files=3)
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "primary"}, password_env: SV_PW}}
notify:
  targets:
    ops: {{url_env: HOOK_URL, events: [failure, recovered]}}
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier3
    repository: primary
    ping_url_env: PING_URL
    hooks:
      before: [test, "!", -e, {tmp_path / "broken"}]
"""
    )
    return path


def test_a_failure_streak_is_told_once_then_its_recovery(
    config: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken").touch()
    with WebhookReceiver() as hook, WebhookReceiver() as ping:
        monkeypatch.setenv("HOOK_URL", hook.json_url("/ops"))
        monkeypatch.setenv("PING_URL", ping.http_url("/ping/etc"))
        for _ in range(2):
            res = cli("run", "etc", "--config", config, "--json")
            assert res.code == 1, res.err
            assert res.json()["notifications"]["failed"] == 0
        (tmp_path / "broken").unlink()
        res = cli("run", "etc", "--config", config, "--json")
        assert res.code == 0, res.err

        messages = hook.posted()
        assert len(messages) == 2, messages
        failure, recovery = (m["title"] + "\n" + m["message"] for m in messages)
        assert "etc" in failure and "fail" in failure.lower()
        assert "etc" in recovery and "recover" in recovery.lower()
        assert all(PASSWORD not in m for m in (failure, recovery))
        pings = [(r.method, r.path) for r in ping.requests]
        assert pings == [
            ("GET", "/ping/etc/start"),
            ("POST", "/ping/etc/fail"),
            ("GET", "/ping/etc/start"),
            ("POST", "/ping/etc/fail"),
            ("GET", "/ping/etc/start"),
            ("GET", "/ping/etc"),
        ]
        assert b"before" in ping.requests[1].body  # the failed step says why


def test_a_target_that_is_down_is_a_warning_only(
    config: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "broken").touch()
    monkeypatch.setenv("HOOK_URL", f"json://127.0.0.1:{free_port()}/nobody")
    monkeypatch.setenv("PING_URL", f"http://127.0.0.1:{free_port()}/ping")
    res = cli("run", "etc", "--config", config)
    assert res.code == 1  # the run's own result, not the notification's
    assert "notify-failed" in res.err and "ping-failed" in res.err, res.err
    assert "Traceback" not in res.err
