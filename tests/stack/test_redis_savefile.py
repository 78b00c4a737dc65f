"""A Redis server that cannot write its save file, in a Compose project (real engine, real
Compose): service ``cache`` runs as the ``redis`` uid with ``--dir /data`` on a directory only
root may write, beside a writer ``app`` that a strict cut stops.

Covered: ``stack preflight`` fails naming the directory the server cannot write, and ``stack
backup`` stops before anything is stopped (the writer's start time unchanged, no snapshot);
after a save that failed there, preflight names the failed save too; once the directory is the
server's, a save succeeds, preflight passes and the backup captures the server complete. A
second server, ``locked``, has its ``CONFIG`` command renamed away: preflight says the capture
cannot find its save file.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from docker import DockerClient

from conftest import Result
from support.appproject import HOST_MOUNTS, IDLE, AppProject, yaml_str
from support.dbservers import free_port, service_user
from support.dockerd import CONTAINER_PATH, HOST_IMAGE, DockerEngine

Cli = Callable[..., Result]


class CacheProject(AppProject):
    """The Compose project of the module docstring."""

    def __init__(self, directory: Path, engine: DockerEngine) -> None:
        super().__init__(directory, engine, f"svsave{secrets.token_hex(3)}")
        self.port = free_port()
        self.locked_port = free_port()

    def write(self) -> CacheProject:
        d = self.directory
        uid, gid = service_user("redis")
        (d / "volumes/cache").mkdir(parents=True)
        (d / "volumes/cache").chmod(0o755)  # root's: the server cannot write there
        (d / "volumes/app").mkdir(parents=True)
        (d / "docker-compose.yaml").write_text(
            f"""version: "2.4"
services:
  cache:
    image: {HOST_IMAGE}
    network_mode: host
    user: "{uid}:{gid}"
    environment:
      PATH: {CONTAINER_PATH}
    command: ["redis-server", "--port", "{self.port}", "--bind", "127.0.0.1", "--dir", "/data",
              "--save", ""]
    volumes:
{HOST_MOUNTS}      - ./volumes/cache:/data
  locked:
    image: {HOST_IMAGE}
    network_mode: host
    user: "{uid}:{gid}"
    environment:
      PATH: {CONTAINER_PATH}
    command: ["redis-server", "--port", "{self.locked_port}", "--bind", "127.0.0.1", "--dir",
              "/tmp", "--save", "", "--rename-command", "CONFIG", ""]
    volumes:
{HOST_MOUNTS}
  app:
    image: {HOST_IMAGE}
    network_mode: host
    environment:
      PATH: {CONTAINER_PATH}
    command: ["sh", "-c", {yaml_str(IDLE)}]
    depends_on: [cache]
    volumes:
{HOST_MOUNTS}      - ./volumes/app:/data
"""
        )
        return self

    def cli(self, *args: str) -> str:
        return self.exec("cache", "redis-cli", "-p", str(self.port), *args)

    def up(self) -> CacheProject:
        self.compose("up", "-d")
        self.wait_for("Redis", lambda: self.cli("PING") == "PONG")
        self.cli("SET", "greeting", "hello")
        return self


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CacheProject]:
    proj = CacheProject(tmp_path_factory.mktemp("save") / "stack", docker_engine)
    proj.directory.mkdir()
    try:
        proj.write().up()
        yield proj
    finally:
        proj.down()


def _failures(cli: Cli, plan: Path) -> tuple[int, dict[str, list[str]]]:
    res = cli("stack", "preflight", "--config", str(plan), "--json")
    out: dict[str, list[str]] = {}
    for c in res.json()["checks"]:
        if c["status"] == "error":
            out.setdefault(c["subject"], []).append(c["message"])
    return res.code, out


def test_a_redis_that_cannot_save_fails_preflight_before_anything_stops(
    cli: Cli,
    project: CacheProject,
    docker_env: str,
    docker_client: DockerClient,
    initialised: Path,
    tmp_path: Path,
) -> None:
    plan = tmp_path / "stackvault.yaml"
    res = cli("stack", "discover", "--project", project.name, "--output", str(plan))
    assert res.code == 0, res.err

    code, failed = _failures(cli, plan)
    assert code == 1 and sorted(failed) == ["source cache", "source locked"], failed
    assert failed["source locked"] == [
        "CONFIG GET dir does not answer, but the capture reads the save file where it says"
    ]
    doc = yaml.safe_load(plan.read_text())
    doc["sources"] = [s for s in doc["sources"] if s["name"] != "locked"]
    plan.write_text(json.dumps(doc))
    code, failed = _failures(cli, plan)
    assert code == 1 and list(failed) == ["source cache"], failed
    [message] = failed["source cache"]
    assert "save directory /data" in message and "not writable for the server" in message

    app = project.container("app")
    before = docker_client.api.inspect_container(app)["State"]["StartedAt"]
    res = cli("stack", "backup", "--config", str(plan))
    assert res.code == 1 and "preflight: source cache" in res.err, res.err
    assert "nothing was stopped or saved" in res.err
    assert docker_client.api.inspect_container(app)["State"]["StartedAt"] == before
    assert cli("snapshots", "--json").json() == []

    project.cli("BGSAVE")  # fails: the directory is root's
    project.wait_for(
        "the failed save",
        lambda: "rdb_last_bgsave_status:err" in project.cli("INFO", "persistence"),
    )
    code, failed = _failures(cli, plan)
    assert code == 1 and any("last save failed" in m for m in failed["source cache"]), failed

    uid, gid = service_user("redis")
    os.chown(project.directory / "volumes/cache", uid, gid)
    project.cli("BGSAVE")
    project.wait_for(
        "a good save", lambda: "rdb_last_bgsave_status:ok" in project.cli("INFO", "persistence")
    )
    code, failed = _failures(cli, plan)
    assert code == 0, failed
    res = cli("stack", "backup", "--config", str(plan), "--json")
    assert res.code == 0, res.err
    [art] = [a for a in cli("snapshots", "--json").json()[-1]["artifacts"] if a["name"] == "cache"]
    assert art["complete"] and art["metadata"]["facts"]["keys"] == {"db0": 1}, art
