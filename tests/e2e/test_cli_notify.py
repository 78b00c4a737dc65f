"""`stackvault notify test` (cli, end to end) against a real JSON webhook and SMTP server on
127.0.0.1: one line per target, exit codes, JSON, and no URL or credential in the output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result
from support.notifyservers import MailReceiver, WebhookReceiver, free_port

Cli = Callable[..., Result]

HEAD = """\
repositories:
  primary: {url: /srv/backup, password_env: PW}
jobs:
  dify: {paths: [/etc], policy: tier2, repository: primary}
"""


def test_a_test_message_reaches_every_target(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        HEAD + "notify:\n"
        "  targets:\n"
        "    hook: {url_env: HOOK_URL, events: [failure]}\n"
        f"    mail: {{url_file: {tmp_path / 'mail-url'}, events: [digest]}}\n"
    )
    with WebhookReceiver() as hook, MailReceiver() as mail:
        monkeypatch.setenv("HOOK_URL", hook.json_url("/ops"))
        (tmp_path / "mail-url").write_text(mail.mailto_url() + "\n")
        res = cli("notify", "test", "--config", path)
        assert res.code == 0, res.err
        assert res.out == "hook (JSON): ok\nmail (E-Mail): ok\n"
        assert res.err == ""
        assert [m["title"] for m in hook.posted()] == ["stackvault: test notification"]
        (message,) = mail.wait(1)
        assert message["Subject"] == "stackvault: test notification"
        assert message["To"] == "ops@example.com"

        res = cli("notify", "test", "--config", path, "--json")
        assert res.code == 0, res.err
        assert res.json() == {
            "config": str(path),
            "ok": True,
            "targets": [
                {"target": "hook", "ok": True, "error": None, "attempts": 1, "service": "JSON"},
                {"target": "mail", "ok": True, "error": None, "attempts": 1, "service": "E-Mail"},
            ],
        }


def test_undelivered_targets_are_named_with_why_and_exit_1(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        HEAD + "notify:\n"
        "  targets:\n"
        "    hook: {url_env: HOOK_URL}\n"
        "    down: {url_env: DOWN_URL}\n"
        "    unset: {url_env: STACKVAULT_TEST_UNSET_URL}\n"
        "    unknown: {url_env: UNKNOWN_URL}\n"
    )
    token = "xoxb4711secrettoken"
    with WebhookReceiver() as hook:
        monkeypatch.setenv("HOOK_URL", hook.json_url())
        monkeypatch.setenv("DOWN_URL", f"json://user:{token}@127.0.0.1:{free_port()}/{token}")
        monkeypatch.setenv("UNKNOWN_URL", f"nosuchservice://{token}@host")
        res = cli("notify", "test", "--config", path)
        assert len(hook.posted()) == 1
    assert res.code == 1
    assert res.out.splitlines() == [
        "hook (JSON): ok",
        "down (JSON): not delivered: A Connection error occurred sending JSON notification to "
        "127.0.0.1.",
        "unset: not delivered: notify target unset: the environment variable "
        "STACKVAULT_TEST_UNSET_URL is not set; set it, or name another url_env in the "
        "configuration",
        "unknown: not delivered: the URL from environment variable UNKNOWN_URL is not one "
        "Apprise can use (see https://github.com/caronc/apprise/wiki for the URL of each "
        "service)",
    ]
    assert token not in res.out + res.err


def test_without_targets_it_says_so(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "stackvault.yaml"
    path.write_text(HEAD)
    res = cli("notify", "test", "--config", path)
    assert res.code == 1
    assert res.out == ""
    assert res.err == f"error: {path} has no notify targets: add them under notify.targets\n"


def test_an_invalid_file_is_refused_by_key_and_line(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "stackvault.yaml"
    path.write_text(HEAD + "notify:\n  targets:\n    ops: {url: 'json://u:pw@host/x'}\n")
    res = cli("notify", "test", "--config", path)
    assert res.code == 1
    assert res.err == (
        f"stackvault: error: {path}: 1 problem:\n"
        f"{path}:7: notify.targets.ops.url: an inline URL is not accepted (notification URLs "
        "hold credentials): give url_env (an environment variable), url_file (a file holding "
        "it) or url_command (a command printing it)\n"
    )
    assert "pw" not in res.out
