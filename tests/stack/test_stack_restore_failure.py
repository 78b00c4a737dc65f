"""`stack restore` when it cannot finish, `--replace`, `--dry-run`'s port check and the restored
plan, through the CLI on the real engine: the Dify-shaped Compose project
(`support.composeproject`) plus a service ``edge`` in profile ``edge`` that publishes
``127.0.0.1:EDGE_PORT`` on the engine's default bridge (which the test engine lacks: it is never
started, and Compose creates no network for it), one online stack snapshot of it for the
module.

- `stack plan SNAPSHOT` prints the plan the snapshot holds (YAML, ``--json``);
- `--replace` refuses a project that no stack restore created: production is untouched;
- `--dry-run` reports a published port that a socket of the test holds (with the profile
  enabled) before anything is created, and so does the restore itself;
- a restore whose database cannot start (its port held) fails after ``--wait``: exit 1 with one
  error line and no traceback, the report (printed, ``--report``, and the record in the
  directory) says which step failed, which logs to read and how to clean up; a retry is refused
  naming ``--replace``; ``--replace`` removes the half-restored project (containers, the volume,
  the files it wrote) and restores it; the restore writes the plan of the restored project
  next to its compose files, and ``stack backup`` reads it from the current directory.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import FAST_INIT, PASSWORD, Result
from stackvault.cli.main import main
from support.composeproject import DifyLikeProject, started
from support.dbservers import free_port
from support.dockerd import HOST_IMAGE, DockerEngine

Cli = Callable[..., Result]

_EDGE = f"""  edge:
    image: {HOST_IMAGE}
    network_mode: bridge
    profiles: ["edge"]
    user: "0:0"
    command: ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 0.2; done"]
    ports: ["127.0.0.1:${{EDGE_PORT}}:80"]
    volumes:
      - /usr:/usr:ro
      - /etc:/etc:ro
"""


class EdgeProject(DifyLikeProject):
    """The Dify-shaped project with ``edge``: a service of profile ``edge`` that publishes
    ``127.0.0.1:EDGE_PORT`` through the engine (so it is never started by these tests)."""

    def __init__(self, directory: Path, engine: DockerEngine) -> None:
        super().__init__(directory, engine)
        self.edge_port = free_port()

    def compose_yaml(self, pg_uid: int, pg_gid: int, redis_uid: int) -> str:
        text = super().compose_yaml(pg_uid, pg_gid, redis_uid)
        top = "\nvolumes:\n  weaviate_data:\n"
        assert text.count(top) == 1
        return text.replace(top, "\n" + _EDGE + top.lstrip("\n"))

    def write(self) -> EdgeProject:
        super().write()
        with open(self.directory / ".env", "a", encoding="utf-8") as f:
            f.write(f"EDGE_PORT={self.edge_port}\n")
        return self


@pytest.fixture(scope="module")
def env(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The engine and a repository of the module's own in the environment."""
    repo = tmp_path_factory.mktemp("restore-failure") / "repo"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT", "COMPOSE_PROFILES"):
            mp.delenv(name, raising=False)
        for name in ("STACKVAULT_STACK_CONFIG", "STACKVAULT_PASSWORD_FILE"):
            mp.delenv(name, raising=False)
        mp.setenv("DOCKER_HOST", docker_engine.host)
        mp.setenv("STACKVAULT_REPOSITORY", str(repo))
        mp.setenv("STACKVAULT_PASSWORD", PASSWORD)
        assert main(FAST_INIT) == 0
        yield repo


@pytest.fixture(scope="module")
def project(
    env: Path,
    docker_engine: DockerEngine,
    host_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EdgeProject]:
    proj = EdgeProject(tmp_path_factory.mktemp("edge") / "docker", docker_engine)
    with started(proj):
        yield proj


@pytest.fixture(scope="module")
def snap(project: EdgeProject, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One online stack snapshot of the running project (nothing stops)."""
    plan = tmp_path_factory.mktemp("edge-plan") / "stackvault.yaml"
    assert main(["stack", "discover", "--project", project.name, "-o", str(plan)]) == 0
    done = _main_json("stack", "backup", "--config", str(plan), "--consistency", "online")
    return str(done["snapshot"])


def _main_json(*args: str) -> Any:
    """``stackvault ARGS --json`` run in this process (in a module fixture: no capsys)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([*args, "--json"]) == 0
    return json.loads(buf.getvalue())


def _containers(project: DifyLikeProject, name: str | None = None) -> dict[str, Any]:
    """Name → container of Compose project ``name`` (default: the project's own)."""
    client = project.engine.client()
    try:
        label = f"com.docker.compose.project={name or project.name}"
        return {c.name: c for c in client.containers.list(all=True, filters={"label": label})}
    finally:
        client.close()


def _hold(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port may be in TIME_WAIT
    s.bind(("127.0.0.1", port))
    s.listen(1)
    return s


def test_stack_plan_prints_the_plan_a_snapshot_holds(
    cli: Cli, project: EdgeProject, snap: str
) -> None:
    res = cli("stack", "plan", snap[:8])
    assert res.code == 0, res.err
    assert res.out.startswith(f"# stackvault plan for Compose project {project.name} (stored in ")
    doc = yaml.safe_load(res.out)
    assert doc["project"] == project.name and doc["directory"] == str(project.directory)
    assert {"db", "redis", "api", "weaviate"} <= set(doc["services"])
    res = cli("stack", "plan", "latest", "--project", project.name, "--json")
    assert res.code == 0, res.err
    assert res.json()["snapshot"] == snap and res.json()["plan"]["project"] == project.name
    assert res.json()["plan"]["sources"][0]["url"] == doc["sources"][0]["url"]


def test_replace_refuses_a_project_no_stack_restore_created(
    cli: Cli, project: EdgeProject, snap: str
) -> None:
    before = {n: c.id for n, c in _containers(project).items()}
    env_file = (project.directory / ".env").read_text()
    for dry in ([], ["--dry-run"]):
        res = cli("stack", "restore", snap, "--replace", *dry)
        assert res.code == 1 and "Traceback" not in res.err, res.err
        assert (
            f"Compose project {project.name} has {len(before)} container(s) that no stack "
            "restore created" in res.err
        ), res.err
        assert "nothing was changed" in res.err
    after = _containers(project)
    assert {n: c.id for n, c in after.items()} == before
    assert all(c.status == "running" for c in after.values())
    assert (project.directory / ".env").read_text() == env_file


def test_dry_run_reports_a_published_port_that_is_taken(
    cli: Cli, project: EdgeProject, snap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "copy"
    restore = ("stack", "restore", snap, "--project", "svport", "--directory", str(target))
    holder = _hold(project.edge_port)
    try:
        res = cli(*restore, "--dry-run")  # profile edge not enabled: edge is not started
        assert res.code == 0, res.err + res.out
        assert "it would go ahead" in res.out
        monkeypatch.setenv("COMPOSE_PROFILES", "edge")
        res = cli(*restore, "--dry-run")
        assert res.code == 1, res.err + res.out
        published = f"127.0.0.1:{project.edge_port}/tcp"
        assert (
            f"problem: port {published} that service edge publishes cannot be bound on this "
            "host: it is in use" in res.out
        ), res.out
        assert "1 problem(s): the restore would be refused; nothing changed" in res.out
        res = cli(*restore, "--dry-run", "--json")
        assert res.code == 1
        [problem] = res.json()["problems"]
        assert published in problem["message"] and "ss -lntup" in problem["hint"]
        assert res.json()["ok"] is False and res.json()["status"] == "planned"
        # the restore itself refuses before it creates anything
        res = cli(*restore)
        assert res.code == 1 and "Traceback" not in res.err, res.err
        assert f"port {published} that service edge publishes" in res.err
        assert "nothing was changed" in res.err
    finally:
        holder.close()
    assert not target.exists() and not _containers(project, "svport")
    res = cli(*restore, "--dry-run")  # the port is free again
    assert res.code == 0, res.err + res.out


def test_a_failed_restore_reports_and_replace_restores_it(
    cli: Cli,
    project: EdgeProject,
    snap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project.down()  # host networking: the restored copy listens on production's ports
    target = tmp_path / "restored" / "docker"
    report = tmp_path / "report.json"
    restore = ("stack", "restore", snap, "--project", "svfail", "--directory", str(target))
    restored = DifyLikeProject(target, project.engine, name="svfail")
    holder = _hold(project.pg_port)  # the restored database cannot listen: never ready
    try:
        res = cli(*restore, "--wait", "6", "--report", str(report))
    finally:
        holder.close()
    try:
        _check_failure(res, report, target)
        containers = _containers(project, "svfail")
        assert {"svfail_db_1", "svfail_redis_1"} <= set(containers), containers
        record = json.loads(report.read_text())
        for c in containers.values():
            assert c.labels["io.stackvault.restore"] == record["restore_id"]
            assert c.labels["io.stackvault.restore.snapshot"] == snap

        res = cli(*restore)  # a retry is refused, and says what to do
        assert res.code == 1, res.err
        assert "Compose project svfail already has 2 container(s)" in res.err, res.err
        assert "pass --replace" in res.err

        res = cli(*restore, "--replace", "--dry-run", "--json")
        assert res.code == 0, res.err + res.out
        would = res.json()["replaced"]
        assert "would remove container svfail_db_1" in would, would
        assert "would remove volume svfail_weaviate_data" in would, would
        assert f"would remove {target}/.env" in would, would
        assert (target / ".env").exists() and _containers(project, "svfail")

        res = cli(*restore, "--replace", "--json")
        assert res.code == 0, res.err + res.out
        done = res.json()
        assert done["ok"] and done["status"] == "ok", done
        assert "container svfail_db_1" in done["replaced"], done["replaced"]
        assert "volume svfail_weaviate_data" in done["replaced"]
        assert done["restore_id"] != record["restore_id"]
        assert int(restored.psql("SELECT count(*) FROM upload_files", db="dify")) > 0
        assert json.loads((target / ".stackvault-restore.json").read_text())["status"] == "ok"

        # the plan of the restored project, next to its compose files: stack backup reads it
        plan_file = target / "stackvault.yaml"
        assert done["plan_file"] == str(plan_file)
        plan = yaml.safe_load(plan_file.read_text())
        assert plan["project"] == "svfail" and plan["directory"] == str(target)
        assert plan["compose_files"] == [str(target / "docker-compose.yaml")]
        [db] = [s for s in plan["sources"] if s["name"] == "db"]
        assert db["url"].startswith("postgres+docker://svfail_db_1/")
        assert any(
            s["url"].startswith("docker-volume://svfail_weaviate_data") for s in plan["sources"]
        )
        assert all(p["path"].startswith(str(target)) for p in plan["paths"])
        monkeypatch.chdir(target)
        res = cli("stack", "backup", "--consistency", "online", "--json")
        assert res.code == 0, res.err
        assert res.json()["manifest"]["project"] == "svfail"

        # a restore that completed is not replaced
        res = cli(*restore, "--replace")
        assert res.code == 1 and "was restored completely by stack restore" in res.err, res.err
        assert set(_containers(project, "svfail")) >= {"svfail_db_1", "svfail_api_1"}
    finally:
        restored.down()


def _check_failure(res: Result, report: Path, target: Path) -> None:
    """The failed restore: its exit, error line, printed report, report file and record."""
    assert res.code == 1 and "Traceback" not in res.err, res.err
    errors = [line for line in res.err.splitlines() if line.startswith("stackvault: error:")]
    assert len(errors) == 1, res.err
    assert (
        "stack restore failed at step database services: service db of project svfail did "
        in (errors[0])
    )
    assert "--replace" in errors[0] and str(target / ".stackvault-restore.json") in errors[0]
    assert "FAILED at step database services" in res.out, res.out
    assert "done     configuration" in res.out and "failed   database services" in res.out
    assert "logs of service db (not ready in 6 s" in res.out, res.out
    assert "docker logs svfail_db_1" in res.out
    assert "docker-compose -p svfail -f" in res.out and " logs db" in res.out
    assert "to clean up: stackvault stack restore " in res.out
    assert f" --project svfail --directory {target} --replace" in res.out
    doc = json.loads(report.read_text())
    assert doc == json.loads((target / ".stackvault-restore.json").read_text())
    assert doc["status"] == "failed" and doc["failed_step"] == "database services", doc
    assert doc["ok"] is False and doc["exit_code"] == 1 and "did not become ready" in doc["error"]
    assert [s["status"] for s in doc["steps"][:4]] == ["done", "done", "failed", "planned"]
    [logs] = [h for h in doc["logs"] if h["service"] == "db"]
    assert logs["commands"][0] == "docker logs svfail_db_1"
    assert str(target / ".env") in doc["created"] and doc["record"] == str(
        target / ".stackvault-restore.json"
    )
    assert os.stat(target / ".stackvault-restore.json").st_mode & 0o777 == 0o600
    assert (target / ".stackvault-restore.compose.yaml").is_file()
