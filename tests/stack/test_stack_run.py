"""`stackvault run` of a **stack job** on the Dify-shaped Compose project of
`support.composeproject` (real engine, host networking) and of a **source job** (a real
PostgreSQL database), each backed up into a local repository and copied to the real S3 server
(SeaweedFS), with retention, the due check and run records in both; and SIGTERM in the middle
of a run's strict cut: every stopped service runs again, no snapshot is saved, the run is
recorded as interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import FAST_INIT, PASSWORD, Result
from stackvault.ops.run import EXIT_INTERRUPTED
from stackvault.repo.repository import Repository
from stackvault.store.open import open_store
from support.composeproject import DifyLikeProject, started
from support.dbservers import PostgresServer
from support.dockerd import DockerEngine

Cli = Callable[..., Result]
SERVICES = ("api", "worker", "plugin_daemon", "weaviate", "db", "redis")


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DifyLikeProject]:
    proj = DifyLikeProject(tmp_path_factory.mktemp("dify-run") / "docker", docker_engine)
    with started(proj):
        yield proj


def running(project: DifyLikeProject) -> dict[str, bool]:
    out = project.compose("ps", "--services", "--filter", "status=running")
    up = set(out.split())
    return {s: s in up for s in SERVICES}


@pytest.fixture
def config(
    cli: Cli,
    project: DifyLikeProject,
    docker_env: str,
    s3_env: object,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """Two jobs — ``dify`` (the stack's plan, as `stack discover` wrote it) and ``db`` (a
    PostgreSQL source, its URL added by the test) — into ``primary`` (local) with a copy in
    ``offsite`` (S3)."""
    plan = tmp_path / "dify-plan.yaml"
    res = cli("stack", "discover", "--project", project.name, "--output", str(plan))
    assert res.code == 0, res.err
    monkeypatch.delenv("STACKVAULT_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    offsite = f"s3://{s3_bucket}/offsite"
    for location in (str(tmp_path / "primary"), offsite):
        res = cli("--repo", location, *FAST_INIT)
        assert res.code == 0, res.err
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    monkeypatch.setenv("SV_PW", PASSWORD)
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "primary"}, password_env: SV_PW}}
  offsite: {{url: "{offsite}", password_env: SV_PW}}
jobs:
  dify:
    stack_plan: {plan}
    policy: tier2
    repository: primary
    copies: [offsite]
    retention:
      default: {{keep-last: 2}}
"""
    )
    return path


def open_repo(location: str) -> Repository:
    return Repository.open(open_store(location), PASSWORD.encode())


def test_run_of_a_stack_job_and_a_source_job_copies_and_records_in_both_repositories(
    cli: Cli,
    config: Path,
    project: DifyLikeProject,
    s3_bucket: str,
    tmp_path: Path,
    pg_env: PostgresServer,
    pg_database: str,
) -> None:
    pg_env.psql(
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 500)", db=pg_database
    )
    with config.open("a") as f:
        f.write(
            f"""\
  db:
    sources: ["{pg_env.url(pg_database)}"]
    policy: tier3
    repository: primary
    copies: [offsite]
"""
        )
    for job in ("dify", "db"):
        res = cli("run", job, "--config", config, "--json")
        assert res.code == 0, (job, res.err)
        doc = res.json()
        assert doc["result"] == "ok" and doc["recorded_in"] == ["primary", "offsite"], doc
        steps = {(s["name"], s["repository"]): s for s in doc["steps"]}
        assert {("backup", "primary"), ("copy", "offsite"), ("check", "offsite")} <= set(steps)
        assert all(s["result"] == "ok" for s in doc["steps"]), doc["steps"]
    assert running(project) == dict.fromkeys(SERVICES, True)

    for location in (str(tmp_path / "primary"), f"s3://{s3_bucket}/offsite"):
        repo = open_repo(location)
        try:
            snaps = repo.list_snapshots()
            stack = [s for s in snaps if "job:dify" in s.tags]
            (snap,) = stack
            assert f"stack:{project.name}" in snap.tags and snap.complete
            (db,) = [s for s in snaps if "job:db" in s.tags]
            assert db.complete
            assert {r.job for r in repo.list_runs()} == {"dify", "db"}
        finally:
            repo.store.close()


def test_sigterm_during_the_strict_cut_of_a_run_restarts_every_service_and_records_it(
    config: Path, project: DifyLikeProject, tmp_path: Path
) -> None:
    big = project.directory / "volumes/app/storage/big"
    big.mkdir(exist_ok=True)
    for i in range(6):  # enough data that the cut lasts a few seconds
        (big / f"blob{i}").write_bytes(os.urandom(40 << 20))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stackvault", "run", "dify", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        deadline = time.monotonic() + 120
        while running(project)["api"] and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        assert not running(project)["api"], "the cut never stopped the writers"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == EXIT_INTERRUPTED, err
        assert "Traceback" not in err, err
        assert running(project) == dict.fromkeys(SERVICES, True), err
    finally:
        for f in big.iterdir():
            f.unlink()
        big.rmdir()
    repo = open_repo(str(tmp_path / "primary"))
    try:
        assert [s for s in repo.list_snapshots() if "job:dify" in s.tags] == []
        (record,) = repo.list_runs(job="dify")
        assert record.result == "interrupted", record
        (backup,) = record.steps_named("backup")
        assert backup.result == "interrupted"
    finally:
        repo.store.close()
