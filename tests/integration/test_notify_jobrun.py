"""A real `JobRun` told of through the notifier, wired as ``run`` and ``serve`` call it
(`Notifier.run_started`, the run, `Notifier.run_finished` with the run records read back by
`previous_runs`): a failing before hook gives one message and a ``/fail`` ping, the second
failure nothing, the recovery one message naming the snapshot — all decided from the run
records in the repository."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from stackvault.clock import FrozenClock
from stackvault.config import load_config
from stackvault.ops.notify import Notifier, previous_runs
from stackvault.ops.run import JobRun
from support.jobrepos import init_fast, opener
from support.notifyservers import WebhookReceiver


def test_runs_of_a_job_are_told_of_once_per_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SV_PW", "pw")
    init_fast(tmp_path / "primary", b"pw")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("hello")
    broken = tmp_path / "broken"
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "primary"}, password_env: SV_PW}}
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier3
    repository: primary
    hooks: {{before: "test ! -e {broken}"}}
    ping_url_env: HC_ETC
notify:
  targets:
    ops: {{url_env: HOOK_URL, events: [failure, recovered]}}
"""
    )
    clock = FrozenClock(datetime(2026, 12, 6, 2, tzinfo=UTC))
    with WebhookReceiver() as hook:
        monkeypatch.setenv("HOOK_URL", hook.json_url("/ops"))
        monkeypatch.setenv("HC_ETC", hook.http_url("/ping/etc-4711"))
        config = load_config(str(path))
        job = config.job("etc")
        notifier = Notifier.from_config(config, clock=clock, sleep=lambda _s: None)

        def cycle() -> str:
            notifier.run_started(job)
            report = JobRun(job, opener, clock=clock).run()
            notifier.run_finished(job, report.record, previous_runs(job, opener))
            clock.advance(3600)
            return report.record.result

        broken.touch()
        assert [cycle(), cycle()] == ["failed", "failed"]
        broken.unlink()
        assert cycle() == "ok"

        posted = [r.json() for r in hook.requests if r.path == "/ops"]
        fail_body = next(r.body for r in hook.requests if r.path.endswith("/fail"))
        pings = [(r.method, r.path) for r in hook.requests if r.path.startswith("/ping")]
    assert [m["title"] for m in posted] == [
        "stackvault: etc failed (preflight)",
        "stackvault: etc recovered",
    ]
    assert "Step preflight failed: the before hook" in posted[0]["message"]
    assert "What to do: the before hook failed and nothing was backed up" in posted[0]["message"]
    with opener(job.repository) as repo:
        (snapshot,) = repo.list_snapshots()
    assert f"Snapshot: {snapshot.id} in primary" in posted[-1]["message"]
    assert "(2 run(s) failed or were partial)" in posted[-1]["message"]
    assert pings == [
        ("GET", "/ping/etc-4711/start"),
        ("POST", "/ping/etc-4711/fail"),
        ("GET", "/ping/etc-4711/start"),
        ("POST", "/ping/etc-4711/fail"),
        ("GET", "/ping/etc-4711/start"),
        ("GET", "/ping/etc-4711"),
    ]
    assert fail_body.decode().endswith(
        "failed\npreflight: the before hook exited with status 1; nothing was backed up"
    )
    assert notifier.counts().to_json() == {"sent": 2, "failed": 0, "pings_failed": 0}
