"""`stackvault status [JOB]` end to end: real local repositories made by `stackvault run` (a
primary and a copy), judged on a fixed clock — ok after a run with its check, breached when
the clock is past the RPO, at-risk when the copy lacks the newest snapshot, unverified when
no check ran; the --json document, a JOB argument, an unknown job.

Real files and repositories in ``tmp_path``, the real CLI in-process (``cli`` fixture); the
clock `status` judges by is replaced by a `FrozenClock` (``cli/commands/status.clock``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import PASSWORD, Result, make_tree
from stackvault.cli.commands import status as status_command
from stackvault.clock import FrozenClock
from stackvault.errors import EXIT_ERROR
from stackvault.records.drill import DrillProbe, DrillResult
from support.jobrepos import COPY_PASSWORD, open_local, primary_and_copy

Cli = Callable[..., Result]
HOUR = 3600


def write_config(tmp_path: Path, *, check: str = "{every: 1d, read_data_subset: 1/2}") -> Path:
    """A path job ``etc`` (rpo 24h, every 12 h, window 1 h: a snapshot made a few minutes
    before "now" is never at risk, whatever the time of day) into ``primary`` copied to
    ``offsite``; a second job ``other`` into ``primary`` only, never run."""
    config = tmp_path / "stackvault.yaml"
    config.write_text(
        f"""\
repositories:
  primary:
    url: {tmp_path / "primary"}
    password_env: SV_PRIMARY_PW
  offsite:
    url: {tmp_path / "offsite"}
    password_env: SV_COPY_PW
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier3
    repository: primary
    copies: [offsite]
    window: 1h
    check: {check}
  other:
    paths: [{tmp_path / "data"}]
    policy: tier3
    repository: primary
"""
    )
    return config


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Both repositories initialised (their own passwords), the data, the configuration."""
    primary_and_copy(tmp_path, PASSWORD.encode(), monkeypatch)
    make_tree(tmp_path / "data", files=3)
    return write_config(tmp_path)


def newest_snapshot_time(path: Path, password: str) -> datetime:
    repo = open_local(path, password)
    return max(s.time for s in repo.list_snapshots() if "job:etc" in s.tags)


def fix_clock(monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    """`status` judges as of ``when``."""
    monkeypatch.setattr(status_command, "clock", lambda: FrozenClock(when))


def status_json(cli: Cli, config: Path, *args: str) -> tuple[int, Any]:
    res = cli("status", *args, "--config", config, "--json")
    assert "Traceback" not in res.err
    doc = res.json()
    return res.code, doc


def job_doc(doc: Any, name: str = "etc") -> Any:
    return next(j for j in doc["jobs"] if j["job"] == name)


def test_ok_after_a_run_with_its_check_and_the_json_shape(
    setup: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = cli("run", "etc", "--config", setup)
    assert res.code == 0, res.err
    snap_time = newest_snapshot_time(tmp_path / "primary", PASSWORD)
    # One minute later: at most 12 h to the next run plus a 1 h window is within the RPO.
    fix_clock(monkeypatch, snap_time + timedelta(minutes=1))
    code, doc = status_json(cli, setup, "etc")
    assert code == 0, doc
    etc = job_doc(doc)
    assert [j["job"] for j in doc["jobs"]] == ["etc"]
    assert etc["verdict"] == "ok" and etc["reasons"] == []
    assert etc["rpo_s"] == 24 * HOUR and etc["window_s"] == HOUR
    assert etc["schedule"] == "0 */12 * * *" and etc["check_every_s"] == 24 * HOUR
    last = etc["last_run"]
    assert isinstance(last, dict)
    assert last["result"] == "ok" and last["within_window"] is True
    repos = etc["repositories"]
    assert isinstance(repos, list)
    assert [(r["name"], r["role"], r["error"]) for r in repos] == [
        ("primary", "primary", None),
        ("offsite", "copy", None),
    ]
    for r in repos:
        assert r["snapshot"]["within_rpo"] is True and r["snapshot"]["age_s"] < 120
        assert r["check"]["result"] == "ok" and r["check"]["current"] is True
        assert r["behind"] is False
        assert set(r["restore_points"]) == {"7d", "30d"}
        assert r["restore_points"]["7d"]["created"] == 1
        assert r["problems"] == []
    primary = repos[0]
    assert primary["location"] == str(tmp_path / "primary")

    # The table: one line for the job, one per repository, exit 0.
    res = cli("status", "etc", "--config", setup)
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[0].split()[:2] == ["etc", "ok"]
    assert lines[1].startswith("  primary (primary)") and "check ok" in lines[1]
    assert lines[2].startswith("  offsite (copy)") and "check ok" in lines[2]
    assert lines[3].split() == ["drill", "never", "drilled"]
    assert len(lines) == 4


def test_breached_when_the_clock_is_past_the_rpo(
    setup: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("run", "etc", "--config", setup).code == 0
    snap_time = newest_snapshot_time(tmp_path / "primary", PASSWORD)
    fix_clock(monkeypatch, snap_time + timedelta(hours=25))
    code, doc = status_json(cli, setup, "etc")
    assert code == EXIT_ERROR
    etc = job_doc(doc)
    assert etc["verdict"] == "breached"
    primary = etc["repositories"][0]
    assert primary["snapshot"]["within_rpo"] is False
    verdicts = {r["verdict"] for r in etc["reasons"]}
    # The check is also older than check.every (1d): breached wins over unverified.
    assert verdicts == {"breached", "unverified"}
    res = cli("status", "etc", "--config", setup)
    assert res.code == EXIT_ERROR
    assert res.out.splitlines()[0].split()[:2] == ["etc", "breached"]
    assert "breached: primary: newest snapshot is 1 d 1 h old, over the RPO" in res.out


def test_a_job_never_run_is_breached(setup: Path, cli: Cli) -> None:
    code, doc = status_json(cli, setup, "other")
    assert code == EXIT_ERROR
    other = job_doc(doc, "other")
    assert other["verdict"] == "breached" and other["last_run"] is None
    (primary,) = other["repositories"]
    assert primary["snapshot"] is None and primary["check"] is None


def test_at_risk_when_the_copy_lacks_the_newest_snapshot(
    setup: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("run", "etc", "--config", setup).code == 0
    # The second run cannot open the copy (wrong password): the primary's newest snapshot is
    # not copied.
    (tmp_path / "data" / "new.txt").write_text("changed\n")
    monkeypatch.setenv("SV_COPY_PW", "not the copy's password")
    assert cli("run", "etc", "--config", setup).code == 3
    monkeypatch.setenv("SV_COPY_PW", COPY_PASSWORD)
    snap_time = newest_snapshot_time(tmp_path / "primary", PASSWORD)
    fix_clock(monkeypatch, snap_time + timedelta(minutes=1))
    code, doc = status_json(cli, setup, "etc")
    assert code == EXIT_ERROR
    etc = job_doc(doc)
    assert etc["verdict"] == "at-risk"
    primary, offsite = etc["repositories"]
    assert primary["behind"] is False and primary["problems"] == []
    assert offsite["behind"] is True
    assert offsite["snapshot"]["id"] != primary["snapshot"]["id"]
    (problem,) = offsite["problems"]
    assert problem["verdict"] == "at-risk"
    assert problem["reason"].startswith("lacks the primary's newest snapshot ")
    # The failed copy counts as no restore point in the copy: 2 runs, 1 copied.
    assert primary["restore_points"]["7d"]["created"] == 2
    assert offsite["restore_points"]["7d"]["created"] == 1


def test_at_risk_when_a_repository_cannot_be_opened(
    setup: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert cli("run", "etc", "--config", setup).code == 0
    snap_time = newest_snapshot_time(tmp_path / "primary", PASSWORD)
    fix_clock(monkeypatch, snap_time + timedelta(minutes=1))
    monkeypatch.setenv("SV_COPY_PW", "not the copy's password")
    res = cli("status", "etc", "--config", setup)
    assert res.code == EXIT_ERROR, res.err
    lines = res.out.splitlines()
    assert lines[0].split()[:2] == ["etc", "at-risk"]
    assert "offsite (copy)" in lines[2] and "cannot be read: " in lines[2]
    assert "wrong password for the 'offsite' repository" in lines[2]


def test_unverified_when_no_check_ran(
    tmp_path: Path, setup: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run always checks when no check is recorded, so the check ran; with check.every
    # 30min and the clock 40 minutes on, no check lies within its period (the snapshot is
    # still well within the RPO).
    assert cli("run", "etc", "--config", setup).code == 0
    snap_time = newest_snapshot_time(tmp_path / "primary", PASSWORD)
    config = write_config(tmp_path, check="{every: 30min, read_data_subset: none}")
    fix_clock(monkeypatch, snap_time + timedelta(minutes=40))
    code, doc = status_json(cli, config, "etc")
    assert code == EXIT_ERROR
    etc = job_doc(doc)
    assert etc["verdict"] == "unverified"
    for r in etc["repositories"]:
        assert r["check"]["current"] is False
        assert [p["verdict"] for p in r["problems"]] == ["unverified"]


def test_every_job_without_a_job_argument_and_an_unknown_job(
    setup: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("run", "etc", "--config", setup).code == 0
    snap_time = newest_snapshot_time(tmp_path / "primary", PASSWORD)
    fix_clock(monkeypatch, snap_time + timedelta(minutes=1))
    code, doc = status_json(cli, setup)
    assert code == EXIT_ERROR  # "other" never ran
    assert [(j["job"], j["verdict"]) for j in doc["jobs"]] == [
        ("etc", "ok"),
        ("other", "breached"),
    ]
    res = cli("status", "nope", "--config", setup)
    assert res.code == EXIT_ERROR
    assert "there is no job 'nope'" in res.err and "jobs: etc, other" in res.err
    assert "Traceback" not in res.err


def save_drill(path: Path, *, rto_s: float, result: str = "ok", minutes_ago: int = 30) -> None:
    """A drill of ``etc`` recorded in the repository at ``path`` as ``stackvault drill``
    records one: a run record with one ``drill`` step."""
    repo = open_local(path, PASSWORD)
    try:
        snap = max((s for s in repo.list_snapshots() if "job:etc" in s.tags), key=lambda s: s.time)
        ended = datetime.now(UTC) - timedelta(minutes=minutes_ago)
        drill = DrillResult(
            drill_id=secrets.token_hex(16),
            job="etc",
            project="",
            drill_project="etc-drill-1",
            snapshot=snap.id,
            snapshot_time=snap.time,
            started=ended - timedelta(seconds=rto_s + 5),
            ended=ended,
            result=result,  # type: ignore[arg-type]
            rto_s=rto_s,
            rto_target_s=8 * HOUR,
            probes=[DrillProbe("files: paths (SHA-256)", "pass", "3 files")],
        )
        record = drill.to_run_record(
            host="drill-host", program="stackvault test", repository="primary", location=str(path)
        )
        repo.save_run(record)
    finally:
        repo.store.close()


def test_the_last_drill_and_its_rto_are_shown_and_judged(
    setup: Path, tmp_path: Path, cli: Cli
) -> None:
    assert cli("run", "etc", "--config", setup).code == 0
    save_drill(tmp_path / "primary", rto_s=240, minutes_ago=600)

    res = cli("status", "etc", "--config", setup)
    assert res.code == 0, res.err
    drill_line = res.out.splitlines()[3]
    assert drill_line.split()[:4] == ["drill", "passed", "10.0h", "ago,"]
    assert "restored in 4min (rto 8.0h)" in drill_line and "over the rto" not in drill_line
    code, doc = status_json(cli, setup, "etc")
    etc = job_doc(doc)
    assert code == 0 and etc["verdict"] == "ok"
    assert etc["drill"]["result"] == "ok" and etc["drill"]["rto_s"] == 240
    assert etc["last_run"]["result"] == "ok"  # a drill is never the job's last run

    # A newer drill (started after the first) that took longer than the RTO puts the job
    # at risk.
    save_drill(tmp_path / "primary", rto_s=9 * HOUR, minutes_ago=5)
    res = cli("status", "etc", "--config", setup)
    assert res.code == 1
    assert res.out.splitlines()[0].split()[:2] == ["etc", "at-risk"]
    assert "restored in 9.0h (rto 8.0h), over the rto" in res.out
    code, doc = status_json(cli, setup, "etc")
    assert job_doc(doc)["verdict"] == "at-risk"
    reasons = job_doc(doc)["reasons"]
    assert [r["verdict"] for r in reasons] == ["at-risk"], reasons
    assert reasons[0]["reason"] == "drill: last drill restored in 9 h, over the RTO"
