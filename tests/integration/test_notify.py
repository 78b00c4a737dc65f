"""Notifications (ops/notify) against real receivers on 127.0.0.1: a JSON webhook (Apprise's
``json://``), an SMTP server with a login (aiosmtpd, Apprise's ``mailto://``) and an HTTP
server for the dead-man pings. The right events reach the right targets, repeated failures
give one message, a reminder after ``remind_every`` and one recovery (also across a restart,
from the repository's run records or the state file), no secret is ever sent, and a target
that is down is logged and counted without the call raising."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stackvault.clock import FrozenClock
from stackvault.config import Config, load_config
from stackvault.crypto.kdf import KdfParams
from stackvault.ops.notify import Notifier, warning_log
from stackvault.ops.status import JobStatus, LastRun
from stackvault.records.run import RunRecord, RunResult, RunStep
from stackvault.repo.repository import Repository
from stackvault.store.memory import MemoryStore
from support.notifyservers import MailReceiver, WebhookReceiver, free_port

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
SECRET = "Sup3r-S3cret-pw"
HOUR = 3600.0


class Log:
    """The notifier's log, kept: (event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def __call__(self, event: str, /, **fields: object) -> None:
        self.lines.append((event, fields))

    def events(self) -> list[str]:
        return [e for e, _ in self.lines]

    def text(self) -> str:
        return repr(self.lines)


def write_config(tmp_path: Path, notify: str, job_extra: str = "") -> Config:
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        "repositories:\n"
        f"  primary: {{url: {tmp_path / 'repo'}, password_env: STACKVAULT_TEST_PW}}\n"
        "jobs:\n"
        "  dify:\n"
        "    paths: [/etc]\n"
        "    policy: tier2\n"
        "    repository: primary\n" + job_extra + notify
    )
    return load_config(str(path), check_files=False)


def record(
    result: RunResult,
    started: datetime,
    *,
    step: str = "backup",
    error: str | None = None,
    snapshot: str | None = None,
) -> RunRecord:
    """A run of job dify: a backup step (and a failing ``step`` if it is another)."""
    steps = [
        RunStep(
            "backup",
            "failed" if result == "failed" and step == "backup" else "ok",
            started,
            10.0,
            "primary",
            "/srv/repo",
            snapshot=snapshot if result != "failed" else None,
            error=error if step == "backup" else None,
        )
    ]
    if step != "backup":
        steps.append(RunStep(step, "failed", started, 5.0, "offsite", "/srv/off", error=error))
    return RunRecord(
        id=secrets.token_hex(16),
        job="dify",
        host="backup-host",
        started=started,
        ended=started + timedelta(minutes=5),
        result=result,
        trigger="schedule",
        program="stackvault 0.1.0",
        steps=steps,
    )


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def mail() -> Iterator[MailReceiver]:
    with MailReceiver() as receiver:
        yield receiver


def notifier(
    config: Config,
    clock: FrozenClock,
    log: Log,
    sleeps: list[float] | None = None,
    state_dir: str | None = None,
) -> Notifier:
    """The notifier of ``config``; its waits between tries are kept in ``sleeps``."""
    waits = sleeps if sleeps is not None else []
    return Notifier.from_config(config, log, clock=clock, sleep=waits.append, state_dir=state_dir)


def test_repeated_failures_give_one_message_a_reminder_and_one_recovery(
    tmp_path: Path, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", hook.json_url("/ops"))
    config = write_config(
        tmp_path,
        "notify:\n"
        "  targets:\n"
        "    ops: {url_env: HOOK_URL, events: [failure, partial, recovered]}\n"
        "  remind_every: 6h\n",
    )
    clock = FrozenClock(T0)
    log = Log()
    n = notifier(config, clock, log)
    job = config.job("dify")
    history: list[RunRecord] = []

    def finish(rec: RunRecord) -> int:
        clock.current = rec.ended
        sent = n.run_finished(job, rec, list(history))
        history.append(rec)
        assert all(r.ok for r in sent), sent
        return len(sent)

    # three failures within an hour: one message
    fails = [
        record("failed", T0 + timedelta(minutes=20 * i), error="the source is unreachable")
        for i in range(3)
    ]
    assert [finish(r) for r in fails] == [1, 0, 0]
    first = hook.posted()[0]
    assert first["title"] == "stackvault: dify failed (backup)"
    assert first["type"] == "failure"
    body = first["message"]
    assert "Job dify failed on host backup-host" in body
    assert "Step backup (primary) failed: the source is unreachable" in body
    assert "What to do: no new restore point was made" in body
    assert "stackvault run dify" in body

    # still failing 6 hours after the first: one reminder, then quiet again
    later = fails[0].ended + timedelta(hours=6)
    assert finish(record("failed", later - timedelta(minutes=5), error="still down")) == 1
    assert finish(record("failed", later + timedelta(minutes=30), error="still down")) == 0
    reminder = hook.posted()[1]
    assert reminder["title"] == "stackvault: dify still failing (backup)"
    assert "Still failing: 4 run(s) in a row since 2026-03-01 02:00 UTC." in reminder["message"]

    # the first success: one recovery, naming the snapshot; then nothing
    snap = "ab" * 32
    ok = record("ok", later + timedelta(hours=1), snapshot=snap)
    assert finish(ok) == 1
    assert finish(record("ok", later + timedelta(hours=2), snapshot=snap)) == 0
    recovered = hook.posted()[2]
    assert recovered["title"] == "stackvault: dify recovered"
    assert recovered["type"] == "success"
    assert "had not succeeded since 2026-03-01 02:00 UTC (5 run(s)" in recovered["message"]
    assert f"Snapshot: {snap} in primary" in recovered["message"]
    assert len(hook.posted()) == 3
    assert (n.notifications_sent, n.notifications_failed) == (3, 0)
    assert log.events() == ["notify-sent"] * 3


def test_events_go_only_to_the_targets_that_want_them(
    tmp_path: Path, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALL_URL", hook.json_url("/all"))
    monkeypatch.setenv("REC_URL", hook.json_url("/recovered-only"))
    monkeypatch.setenv("CHECK_URL", hook.json_url("/checks"))
    config = write_config(
        tmp_path,
        "notify:\n"
        "  targets:\n"
        "    all: {url_env: ALL_URL}\n"
        "    rec: {url_env: REC_URL, events: [recovered]}\n"
        "    checks: {url_env: CHECK_URL, events: [check-failure, lease-takeover]}\n",
    )
    clock = FrozenClock(T0)
    n = notifier(config, clock, Log())
    job = config.job("dify")
    partial = record("partial", T0, step="check", error="2 error(s) found", snapshot="cd" * 32)
    n.run_finished(job, partial, [])
    n.run_finished(job, record("ok", T0 + timedelta(hours=1)), [partial])
    n.event("dify", "lease-takeover", "host b took job dify over from host a")
    paths = [(r.path, r.json()["title"]) for r in hook.requests]
    assert paths == [
        ("/all", "stackvault: dify was partial (check)"),
        ("/checks", "stackvault: dify was partial (check)"),
        ("/all", "stackvault: dify recovered"),
        ("/recovered-only", "stackvault: dify recovered"),
        ("/all", "stackvault: dify lease-takeover"),
        ("/checks", "stackvault: dify lease-takeover"),
    ]
    partial_body = hook.requests[0].json()["message"]
    assert "Step check (offsite) failed: 2 error(s) found" in partial_body
    assert f"Snapshot: {'cd' * 32} in primary" in partial_body
    assert "What to do: run stackvault check on offsite" in partial_body


def test_state_survives_a_restart_through_the_run_records_and_the_state_file(
    tmp_path: Path, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", hook.json_url())
    config = write_config(tmp_path, "notify:\n  targets:\n    ops: {url_env: HOOK_URL}\n")
    job = config.job("dify")
    clock = FrozenClock(T0)
    # the run records in a real repository: a new notifier (a restarted daemon, another
    # host) reads the first failure there and stays quiet about the second
    repo = Repository.init(
        MemoryStore(), b"pw", kdf=KdfParams(memory_kib=8 * 1024, iterations=1), clock=clock
    )
    first = record("failed", T0, error="disk full")
    assert len(notifier(config, clock, Log()).run_finished(job, first, repo.list_runs())) == 1
    repo.save_run(first)
    second = record("failed", T0 + timedelta(minutes=30), error="disk full")
    fresh = notifier(config, clock, Log())
    assert fresh.run_finished(job, second, repo.list_runs(job="dify")) == []

    # the repository cannot be read (previous=None): the state file remembers
    state = tmp_path / "state"
    a = notifier(config, clock, Log(), state_dir=str(state))
    third = record("partial", T0 + timedelta(hours=1), step="copy", error="offsite down")
    assert len(a.run_finished(job, third, None)) == 1
    config = write_config(  # the same directory, named by the configuration
        tmp_path,
        f"notify:\n  targets:\n    ops: {{url_env: HOOK_URL}}\n  state_dir: {state}\n",
    )
    b = notifier(config, clock, Log())
    fourth = record("partial", T0 + timedelta(hours=2), step="copy", error="offsite down")
    assert b.run_finished(job, fourth, None) == []
    assert (state / "notify-state.json").is_file()
    assert len(hook.posted()) == 2


def test_no_secret_reaches_a_message_the_mail_or_the_log(
    tmp_path: Path, hook: WebhookReceiver, mail: MailReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", hook.json_url("/tok3n-in-the-path"))
    (tmp_path / "mail-url").write_text(mail.mailto_url() + "\n")
    config = write_config(
        tmp_path,
        "notify:\n"
        "  targets:\n"
        "    hook: {url_env: HOOK_URL}\n"
        f"    mail: {{url_file: {tmp_path / 'mail-url'}}}\n",
    )
    log = Log()
    n = notifier(config, FrozenClock(T0), log)
    error = (
        f"pg_dump: connection to postgres://backup:{SECRET}@db:5432/app failed; "
        f"PGPASSWORD={SECRET} backup:{SECRET}@db"
    )
    sent = n.run_finished(config.job("dify"), record("failed", T0, error=error), [])
    assert [(r.target, r.ok) for r in sent] == [("hook", True), ("mail", True)]
    posted = hook.posted()[0]
    assert SECRET not in repr(posted)
    assert "postgres://***@db:5432/app" in posted["message"]
    assert "PGPASSWORD=***" in posted["message"]
    (message,) = mail.wait(1)
    assert message["Subject"] == "stackvault: dify failed (backup)"
    text = message.get_body(preferencelist=("plain", "html")).get_content()  # type: ignore[union-attr]
    assert "Step backup (primary) failed" in text
    assert SECRET not in message.as_string()
    assert mail.password not in message.as_string()
    assert SECRET not in log.text() and mail.password not in log.text()
    assert "tok3n" not in log.text()


def test_a_target_that_is_down_is_logged_counted_and_never_raises(
    tmp_path: Path, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = f"json://127.0.0.1:{free_port()}/hook"
    monkeypatch.setenv("DOWN_URL", down)
    monkeypatch.setenv("HOOK_URL", hook.json_url())
    config = write_config(
        tmp_path,
        "notify:\n"
        "  targets:\n"
        "    down: {url_env: DOWN_URL}\n"
        "    unset: {url_env: STACKVAULT_TEST_NOT_SET}\n"
        "    hook: {url_env: HOOK_URL}\n",
    )
    log = Log()
    sleeps: list[float] = []
    n = notifier(config, FrozenClock(T0), log, sleeps)
    assert log.lines == [
        (
            "notify-target-unusable",
            {
                "target": "unset",
                "error": "notify target unset: the environment variable "
                "STACKVAULT_TEST_NOT_SET is not set; set it, or name another url_env in the "
                "configuration",
            },
        )
    ]
    sent = n.run_finished(config.job("dify"), record("failed", T0, error="boom"), [])
    by_target = {r.target: r for r in sent}
    assert by_target["hook"].ok and by_target["hook"].attempts == 1
    assert not by_target["down"].ok and by_target["down"].attempts == 3
    assert "Connection error" in (by_target["down"].error or "")
    assert not by_target["unset"].ok and by_target["unset"].attempts == 0
    assert sleeps == [1.0, 2.0]  # two waits before the second and third tries, backing off
    assert (n.notifications_sent, n.notifications_failed) == (1, 2)
    failed = [f for e, f in log.lines if e == "notify-failed"]
    assert {f["target"] for f in failed} == {"down", "unset"}
    assert all(f["job"] == "dify" and f["event"] == "failure" for f in failed)
    assert len(hook.posted()) == 1


def test_dead_man_pings_start_success_and_fail_with_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver() as hc:
        monkeypatch.setenv("HC_DIFY", hc.http_url("/ping/5f0e-uuid"))
        config = write_config(tmp_path, "", job_extra="    ping_url_env: HC_DIFY\n")
        job = config.job("dify")
        log = Log()
        n = notifier(config, FrozenClock(T0), log)
        n.run_started(job)
        n.run_finished(job, record("ok", T0), [])
        n.run_started(job)
        error = f"cannot connect to redis://:{SECRET}@cache:6379"
        n.run_finished(job, record("failed", T0 + timedelta(hours=1), error=error), [])
        got = [(r.method, r.path) for r in hc.requests]
        assert got == [
            ("GET", "/ping/5f0e-uuid/start"),
            ("GET", "/ping/5f0e-uuid"),
            ("GET", "/ping/5f0e-uuid/start"),
            ("POST", "/ping/5f0e-uuid/fail"),
        ]
        body = hc.requests[-1].body.decode()
        assert (
            "failed" in body and "backup primary: cannot connect to redis://***@cache:6379" in body
        )
        assert SECRET not in body
        assert n.pings_failed == 0 and log.lines == []

    # the ping service is down, or answers 404: logged, counted, never raised
    monkeypatch.setenv("HC_DIFY", f"http://127.0.0.1:{free_port()}/ping/5f0e-uuid")
    log = Log()
    sleeps: list[float] = []
    n = notifier(config, FrozenClock(T0), log, sleeps)
    n.run_started(job)
    assert n.pings_failed == 1 and sleeps == [1.0]
    ((event, fields),) = log.lines
    assert event == "ping-failed" and fields["ping"] == "start" and fields["job"] == "dify"
    assert "cannot be reached" in str(fields["error"]) and "5f0e-uuid" not in str(fields["error"])
    with WebhookReceiver(status=404) as hc:
        monkeypatch.setenv("HC_DIFY", hc.http_url("/ping/5f0e-uuid"))
        n.run_finished(job, record("ok", T0), [])
        assert n.pings_failed == 2
        assert log.lines[-1][1]["error"] == "the ping service answered HTTP 404 Not Found"


def test_rpo_breach_is_sent_once_per_remind_every_until_a_run_succeeds(
    tmp_path: Path, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", hook.json_url())
    config = write_config(
        tmp_path,
        "notify:\n"
        "  targets:\n"
        "    ops: {url_env: HOOK_URL, events: [rpo-breach]}\n"
        "  remind_every: 2h\n",
    )
    clock = FrozenClock(T0)
    n = notifier(config, clock, Log())
    text = "the newest restore point is 3h old, over the rpo 2h"
    assert len(n.event("dify", "rpo-breach", text)) == 1
    clock.advance(HOUR)
    assert n.event("dify", "rpo-breach", text) == []
    clock.advance(HOUR)
    assert len(n.event("dify", "rpo-breach", text)) == 1
    n.run_finished(config.job("dify"), record("ok", clock.now()), [])  # no target wants it
    assert len(n.event("dify", "rpo-breach", text)) == 1
    messages = hook.posted()
    assert len(messages) == 3
    assert messages[0]["title"] == "stackvault: dify rpo-breach"
    assert messages[0]["message"].startswith(text + "\nWhat to do: the newest restore point")


def test_test_reaches_every_target_whatever_its_events(
    tmp_path: Path, hook: WebhookReceiver, mail: MailReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", hook.json_url())
    monkeypatch.setenv("MAIL_URL", mail.mailto_url())
    config = write_config(
        tmp_path,
        "notify:\n"
        "  targets:\n"
        "    hook: {url_env: HOOK_URL, events: [digest]}\n"
        "    mail: {url_env: MAIL_URL, events: [recovered]}\n",
    )
    n = notifier(config, FrozenClock(T0), Log())
    assert [(r.target, r.ok) for r in n.test()] == [("hook", True), ("mail", True)]
    assert hook.posted()[0]["title"] == "stackvault: test notification"
    assert mail.wait(1)[0]["Subject"] == "stackvault: test notification"
    assert [t.label for t in n.targets] == ["hook (JSON)", "mail (E-Mail)"]


def test_the_digest_is_due_daily_and_lists_each_job(
    tmp_path: Path, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", hook.json_url())
    monkeypatch.setenv("OTHER_URL", hook.json_url("/other"))
    config = write_config(
        tmp_path,
        "notify:\n"
        "  targets:\n"
        "    ops: {url_env: HOOK_URL, events: [digest]}\n"
        "    other: {url_env: OTHER_URL, events: [failure]}\n"
        '  digest: "0 8 * * *"\n',
    )
    clock = FrozenClock(T0)  # 02:00
    state = tmp_path / "state"
    n = notifier(config, clock, Log(), state_dir=str(state))
    assert not n.digest_due()
    assert n.next_digest() == T0 + timedelta(hours=6)
    clock.advance(6 * HOUR)  # 08:00
    assert n.digest_due()
    statuses = [
        JobStatus(
            job="dify",
            verdict="breached",
            now=clock.now(),
            rpo_s=7200,
            window_s=3600,
            check_every_s=7 * 86400,
            schedule="0 * * * *",
            next_run=clock.now() + timedelta(hours=1),
            last_run=LastRun("a" * 32, "failed", T0, 300.0, True),
            repositories=(),
            reasons=(("breached", "the newest snapshot is 9h old, over the rpo 2h"),),
        )
    ]
    sent = n.send_digest(statuses)
    assert [(r.target, r.ok) for r in sent] == [("ops", True)]
    (digest,) = hook.posted()
    assert digest["title"].endswith(": 1 of 1 job(s) need attention")
    assert digest["message"] == (
        "dify: breached (last run failed, next 2026-03-01 09:00 UTC)\n"
        "  breached: the newest snapshot is 9h old, over the rpo 2h"
    )
    assert not n.digest_due()
    assert n.next_digest() == T0 + timedelta(days=1, hours=6)
    clock.advance(23 * HOUR)
    restarted = notifier(config, clock, Log(), state_dir=str(state))  # the state file says when
    assert not restarted.digest_due()
    clock.advance(HOUR)
    assert restarted.digest_due()


def status(verdict: str, now: datetime, reasons: tuple[tuple[str, str], ...] = ()) -> JobStatus:
    return JobStatus(
        job="dify",
        verdict=verdict,  # type: ignore[arg-type]
        now=now,
        rpo_s=7200,
        window_s=3600,
        check_every_s=7 * 86400,
        schedule="0 * * * *",
        next_run=now + timedelta(hours=1),
        last_run=None,
        repositories=(),
        reasons=reasons,  # type: ignore[arg-type]
    )


def test_verdicts_are_told_of_as_rpo_breach_and_at_risk(
    tmp_path: Path, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", hook.json_url())
    config = write_config(
        tmp_path,
        "notify:\n  targets:\n    ops: {url_env: HOOK_URL, events: [rpo-breach, at-risk]}\n",
    )
    clock = FrozenClock(T0)
    n = notifier(config, clock, Log())
    risk = (("at-risk", "copy offsite lacks the newest snapshot"),)
    breach = (("breached", "the newest snapshot is 3h old, over the rpo 2h"), *risk)
    assert len(n.judged(status("at-risk", clock.now(), risk))) == 1
    assert n.judged(status("at-risk", clock.now(), risk)) == []
    assert len(n.judged(status("breached", clock.now(), breach))) == 1
    clock.advance(HOUR)
    assert n.judged(status("breached", clock.now(), breach)) == []
    assert n.judged(status("ok", clock.now())) == []
    assert len(n.judged(status("breached", clock.now(), breach))) == 1  # told at once again
    assert n.judged(status("unverified", clock.now())) == []
    titles = [(m["title"], m["message"].splitlines()[0]) for m in hook.posted()]
    assert titles == [
        ("stackvault: dify at-risk", "job dify is at-risk: copy offsite lacks the newest snapshot"),
        (
            "stackvault: dify rpo-breach",
            "job dify is breached: the newest snapshot is 3h old, over the rpo 2h",
        ),
        (
            "stackvault: dify rpo-breach",
            "job dify is breached: the newest snapshot is 3h old, over the rpo 2h",
        ),
    ]


def test_the_warning_log_of_a_command() -> None:
    lines: list[str] = []
    log = warning_log(lines.append)
    log("notify-sent", target="ops", event="failure", job="dify")
    log("notify-failed", target="ops", event="failure", job="dify", attempts=3, error="refused")
    log("ping-failed", job="dify", ping="start", error="timed out", extra=None)
    assert lines == [
        "warning: notify-failed target=ops event=failure job=dify attempts=3 error=refused",
        "warning: ping-failed job=dify ping=start error=timed out",
    ]
