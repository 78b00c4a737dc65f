"""Restore drills without an engine: the drill's result as a run record and back, its
verdict (a skipped probe is never a pass), the snapshot it picks, durations, the isolation
refusals and the compose document it writes, the HTML page."""

from __future__ import annotations

import os
import random
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stackvault.errors import SnapshotNotFound, UsageError
from stackvault.records.drill import (
    DrillCleanup,
    DrillPhase,
    DrillProbe,
    DrillResult,
    drillable_source,
    latest_drill,
)
from stackvault.records.run import RunRecord
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.drill import (
    LABEL,
    _Sandbox,
    blank_outbound,
    drill_project_name,
    host_names,
    outbound_patterns,
    parse_span,
    pick_drill_snapshot,
    shared_ports,
)
from stackvault.stack.drillhtml import render_html

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def result(**kw: object) -> DrillResult:
    r = DrillResult(
        drill_id="ab" * 16,
        job="dify",
        project="dify",
        drill_project="dify-drill-20261201-030000",
        snapshot="cd" * 32,
        snapshot_time=T0 - timedelta(hours=1),
        started=T0,
        ended=T0 + timedelta(seconds=30),
        rto_s=12.5,
        rto_target_s=7200.0,
        rpo_achieved_s=3600.0,
        phases=[
            DrillPhase("read snapshot", "snapshot", 0.0, 0.5),
            DrillPhase("databases", "databases", 0.5, 5.0),
            DrillPhase("cleanup", "cleanup", 12.5, 14.0),
        ],
        probes=[DrillProbe("database db", "pass", "matches what was recorded")],
    )
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_the_record_round_trip() -> None:
    r = result()
    r.result = r.judge()
    assert r.result == "ok"
    record = r.to_run_record(
        host="h1", program="stackvault 0.1.0", repository="primary", location="/srv/repo"
    )
    [step] = record.steps
    assert step.name == "drill" and step.result == "ok" and step.snapshot == r.snapshot
    again = RunRecord.from_json(record.to_json())
    back = DrillResult.from_run_record(again)
    assert back is not None
    assert back.to_json() == r.to_json()
    other = RunRecord.from_json({**record.to_json(), "id": "ef" * 16, "steps": []})
    assert latest_drill([other, again], job="dify") is not None
    assert latest_drill([other]) is None
    assert DrillResult.from_run_record(other) is None


def test_the_verdict() -> None:
    assert result().judge() == "ok"
    skipped = [DrillProbe("http", "skipped", "no tool")]
    assert result(probes=skipped).judge() == "failed"  # a skipped probe is no pass
    r = result(probes=[*result().probes, DrillProbe("http x", "fail", "answered 500")])
    r.result = r.judge()
    assert r.result == "failed" and r.summary_error() == "probe http x failed: answered 500"
    r = result(cleanup=DrillCleanup(ok=False, error="still there: volume v"))
    r.result = r.judge()
    assert r.summary_error() == "cleanup failed: still there: volume v"
    assert result(result="interrupted").judge() == "interrupted"
    assert result(rto_s=8000.0).rto_met is False and result().rto_met is True


def snap(sid: str, age_days: float, tags: list[str], stack: bool = True) -> Snapshot:
    return Snapshot(
        time=T0 - timedelta(days=age_days),
        tree=b"",
        paths=[],
        hostname="h",
        username="u",
        tags=tags,
        stack={"project": "dify"} if stack else None,
        id=sid,
    )


def test_the_snapshot_picked() -> None:
    snaps = [
        snap("aaaa1111", 40, ["job:dify"]),
        snap("bbbb2222", 10, ["job:dify"]),
        snap("cccc3333", 1, ["job:dify"]),
        snap("dddd4444", 0, ["job:other"]),
        snap("eeee5555", 0, ["job:dify"], stack=False),
    ]
    assert pick_drill_snapshot(snaps, "dify", "latest", T0).id == "cccc3333"
    seen = {
        pick_drill_snapshot(snaps, "dify", "random-within=30d", T0, random.Random(i)).id
        for i in range(30)
    }
    assert seen == {"bbbb2222", "cccc3333"}
    assert pick_drill_snapshot(snaps, "dify", "aaaa", T0).id == "aaaa1111"
    with pytest.raises(SnapshotNotFound, match="no complete stack snapshot of job x"):
        pick_drill_snapshot(snaps, "x", "latest", T0)
    with pytest.raises(SnapshotNotFound, match="no stack snapshot within 12h"):
        pick_drill_snapshot(snaps, "dify", "random-within=12h", T0)
    with pytest.raises(SnapshotNotFound, match="matches no stack snapshot"):
        pick_drill_snapshot(snaps, "dify", "eeee5555", T0)
    # a job without a stack: its other snapshots only
    assert pick_drill_snapshot(snaps, "dify", "latest", T0, stack=False).id == "eeee5555"
    with pytest.raises(SnapshotNotFound, match="no complete snapshot of job other"):
        pick_drill_snapshot(snaps, "other", "latest", T0, stack=False)


def test_durations_and_names() -> None:
    assert parse_span("30s", "--keep") == 30
    assert parse_span("1h30min", "--keep") == 5400
    assert parse_span("30d", "x") == 30 * 86400
    for bad in ("", "10", "5m", "1h x"):
        with pytest.raises(UsageError, match="--keep takes a duration"):
            parse_span(bad, "--keep")
    assert drill_project_name("My.App", T0) == "myapp-drill-20261201-030000"


def test_isolation_refuses_what_reaches_production_and_rewrites_the_rest() -> None:
    root = "/var/lib/stackvault/drills/dify-drill-20261201-030000"
    sandbox = _Sandbox(None, "ab" * 16, "dify-drill-20261201-030000", root)  # type: ignore[arg-type]
    doc = {
        "version": "2.4",
        "services": {
            "db": {
                "image": "postgres:15",
                "network_mode": "host",
                "volumes": [f"{root}/docker/volumes/db:/data:rw", "/usr:/usr:ro"],
                "ports": ["5432:5432"],
            },
            "api": {
                "image": "api",
                "networks": ["default"],
                "container_name": "dify-api",
                "labels": ["a=b"],
                "hostname": "api",
                "volumes": [{"type": "bind", "source": "/srv/data", "target": "/d"}],
            },
            "agent": {"image": "x", "volumes": ["/var/run/docker.sock:/var/run/docker.sock:ro"]},
            "ns": {"image": "x", "pid": "host", "volumes_from": ["db"]},
        },
        "volumes": {"ext": {"external": True}, "fixed": {"name": "prod_data"}, "own": {}},
        "networks": {"default": {}},
    }
    problems = sandbox.problems(doc)
    assert problems == [
        "volume ext is external (production's)",
        "volume fixed has the fixed name prod_data",
        "service api mounts /srv/data writable, outside the drill",
        "service agent mounts the Docker socket /var/run/docker.sock",
        "service ns uses volumes_from",
        "service ns uses pid: host",
    ]
    assert host_names(
        {**doc["services"], "x": {"networks": {"default": {"aliases": ["x1", "db"]}}}}
    ) == ["db", "api", "dify-api", "agent", "ns", "x", "x1"]
    assert shared_ports(
        {
            "a": {"ports": ["8080:80", "127.0.0.1:9:8194/tcp"]},
            "b": {"expose": ["8194"]},
            "c": {"ports": [{"target": 80, "published": 81}]},
        }
    ) == [
        "services a, c all use port 80: in the drill's one network namespace only one of them "
        "can listen on it",
        "services a, b all use port 8194: in the drill's one network namespace only one of "
        "them can listen on it",
    ]
    out = sandbox.transform(doc)
    assert "networks" not in out
    db, api = out["services"]["db"], out["services"]["api"]
    assert db["network_mode"] == api["network_mode"] == f"container:{sandbox.name}"
    assert "ports" not in db and "networks" not in api and "hostname" not in api
    assert api["container_name"] == "dify-drill-20261201-030000-api"
    assert api["labels"] == {
        "a": "b",
        LABEL: "ab" * 16,
        f"{LABEL}.project": sandbox.project,
        f"{LABEL}.owner": f"{socket.gethostname()}:{os.getpid()}",
    }


def test_the_page_is_self_contained() -> None:
    page = render_html(result(notices=["<b>x</b>"], blanked=["api: SMTP_<PASSWORD>"]))
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "&lt;b&gt;x" in page
    assert "<td>outbound settings emptied</td><td>api: SMTP_&lt;PASSWORD&gt;</td>" in page
    for outside in ("<script", "src=", "href=", "@import", "url("):
        assert outside not in page


def test_outbound_settings_are_emptied_by_pattern(tmp_path: Path) -> None:
    env_file = tmp_path / "api.env"
    env_file.write_text("# mail\nexport RESEND_API_KEY=re_1\nOPENAI_API_KEY=sk\n")
    services = {
        "api": {
            "environment": {"MAIL_TYPE": "smtp", "SMTP_SERVER": "mx", "SECRET_KEY": "k"},
            "env_file": [str(env_file), str(tmp_path / "missing.env")],
        },
        "sandbox": {"environment": ["ENABLE_NETWORK=true", "HTTP_PROXY=http://p:3128", "X"]},
        "web": {"image": "web"},
    }
    patterns = outbound_patterns("dify")
    assert "SMTP_*" in patterns and outbound_patterns("generic") == ()
    assert outbound_patterns("n8n") == ("N8N_SMTP_*",)
    assert outbound_patterns("open-webui") == ("WEBHOOK_URL",)
    blanked = blank_outbound(services, patterns)
    assert blanked == [
        "api: MAIL_TYPE",
        "api: SMTP_SERVER",
        "api: RESEND_API_KEY",
        "sandbox: ENABLE_NETWORK",
        "sandbox: HTTP_PROXY",
    ]
    assert services["api"]["environment"] == {
        "MAIL_TYPE": "",
        "SMTP_SERVER": "",
        "SECRET_KEY": "k",
        "RESEND_API_KEY": "",  # environment wins over env_file
    }
    assert services["sandbox"]["environment"] == {
        "ENABLE_NETWORK": "",
        "HTTP_PROXY": "",
        "X": None,
    }
    assert "environment" not in services["web"]
    assert blank_outbound({"api": {"environment": {"MAIL_TYPE": "x"}}}, ()) == []


def test_probe_commands_in_the_plan() -> None:
    from stackvault.records.plan import plan_from_dict

    doc: dict[str, object] = {
        "version": 1,
        "project": "p",
        "preset": "generic",
        "consistency": "online",
        "services": {"api": {"role": "app", "image": "x"}},
        "probe_commands": [
            {"service": "api", "command": "curl -fsS http://$STACKVAULT_PROBE_HOST/"},
            {"service": "api", "command": ["true"], "port": 5001, "timeout": 5},
        ],
    }
    plan = plan_from_dict(doc)
    first, second = plan.probe_commands
    assert first.command == ["sh", "-c", "curl -fsS http://$STACKVAULT_PROBE_HOST/"]
    assert (first.port, first.timeout) == (None, 60.0)
    assert (second.command, second.port, second.timeout) == (["true"], 5001, 5.0)
    doc["probe_commands"] = [
        {"service": "nope", "command": "true"},
        {"service": "api", "command": ""},
        {"service": "api", "command": "x", "timeout": 0},
    ]
    with pytest.raises(UsageError) as caught:
        plan_from_dict(doc)
    assert str(caught.value).splitlines() == [
        "the plan: probe_commands[0] names service 'nope', which is not under services",
        "the plan: probe_commands[1].command must be a command: a string or a list of strings",
        "the plan: probe_commands[2].timeout must be a positive number",
    ]


def test_which_sources_a_drill_loads_and_what_it_blanks_is_recorded() -> None:
    for url in ("postgres://h/db", "postgres+docker://c", "mysql://h/", "mariadb://h/x"):
        assert drillable_source(url), url
    for url in ("redis://h", "sqlite:///x.db", "docker-volume://v", "s3://b"):
        assert not drillable_source(url), url
    r = result(blanked=["api: MAIL_TYPE"], notices=["outbound settings emptied: api: MAIL_TYPE"])
    record = r.to_run_record(host="h", program="p", repository="r", location="l")
    back = DrillResult.from_run_record(RunRecord.from_json(record.to_json()))
    assert back is not None and back.blanked == ["api: MAIL_TYPE"]
    assert back.notices == r.notices


def test_a_plan_without_databases_skips_the_connection_probe() -> None:
    from stackvault.records.plan import plan_from_dict
    from stackvault.records.stack import StackManifest
    from stackvault.stack.drill.connections import connection_probes

    plan = plan_from_dict(
        {
            "version": 1,
            "project": "p",
            "preset": "generic",
            "consistency": "online",
            "services": {"api": {"role": "app", "image": "x"}},
        }
    )
    m = StackManifest.model_construct(plan=plan)
    [probe] = connection_probes(None, "p-drill-20260101-000000", m)  # type: ignore[arg-type]
    assert (probe.status, probe.message) == ("skipped", "the plan has no database")


def test_leftover_directories_of_drills_without_an_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stackvault.stack.drill.cleanup import remove_leftover_directories

    work, temp = tmp_path / "work", tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    dead = work / "db-drill-20200101-000000"
    (dead / "files").mkdir(parents=True)
    live = work / "db-drill-20200101-000001"
    live.mkdir()
    (live / ".stackvault-drill-owner").write_text(f"{socket.gethostname()}:{os.getppid()}")
    mine = work / "db-drill-20200101-000002"
    mine.mkdir()
    (work / "unrelated").mkdir()
    servers = temp / "db-drill-20200101-000000-k2j4"  # a dead drill's servers
    servers.mkdir()
    (servers / ".stackvault-drill-owner").write_text(f"{socket.gethostname()}:999999999")
    unowned = temp / "db-drill-20200101-000003-x1y2"  # no owner file: not known as a drill's
    unowned.mkdir()
    (temp / "db-drill-20200101-000002-abcd").mkdir()  # the running drill's own
    done = remove_leftover_directories(str(work), keep=mine.name)
    assert done.ok and done.removed == [f"directory {dead}", f"directory {servers}"]
    assert sorted(p.name for p in work.iterdir()) == [live.name, mine.name, "unrelated"]
    assert sorted(p.name for p in temp.iterdir()) == [
        "db-drill-20200101-000002-abcd",
        unowned.name,
    ]
