"""A Dify-shaped stack started the way operators start theirs (`support.composeproject` with
its variants), on the real engine with the real Compose: PostgreSQL on its own port with its
unix socket in another directory (``postgres -p PORT -k /tmp/pgsock``, no ``PGPORT``), Redis
with its password on its command line only (``--requirepass``), and a second Redis
(``cache``) reading its port and password from ``redis.conf``.

Covered: discovery records how each server is reached (port, socket, password source by
name; never a password); preflight passes; a wrong password or an unreachable socket in the
plan fails preflight and ``stack backup`` before anything is stopped (the writers' start
times unchanged, no snapshot); a strict backup with a service paused by the plan
(``quiesce: pause``) is complete and prints each service's downtime; the stack destroyed and
restored has every database, both Redis servers' keys and the volume back.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker import DockerClient

from conftest import Result
from support.composeproject import DifyLikeProject
from support.dockerd import DockerEngine

Cli = Callable[..., Result]
WRITERS = ("api", "worker", "plugin_daemon", "weaviate")
SOCKET = "/tmp/pgsock"


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DifyLikeProject]:
    proj = DifyLikeProject(
        tmp_path_factory.mktemp("wild") / "docker",
        docker_engine,
        pg_socket=SOCKET,
        redis_password=True,
        redis_conf=True,
    )
    proj.directory.mkdir()
    proj.write()
    (proj.directory / "redis-conf/wrong.conf").write_text("requirepass not-the-password\n")
    proj.up()
    try:
        yield proj
    finally:
        proj.down()


@pytest.fixture(scope="module")
def plan_doc(project: DifyLikeProject) -> dict[str, Any]:
    """The plan as discovery wrote it (filled by the first test)."""
    return {}


def sources(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in doc["sources"]}


def started(client: DockerClient, project: DifyLikeProject) -> dict[str, tuple[str, bool]]:
    out = {}
    for name in (*WRITERS, "db", "redis", "cache"):
        state = client.api.inspect_container(project.container(name))["State"]
        out[name] = (state["StartedAt"], state["Paused"])
    return out


def test_discovery_reads_how_each_server_was_started(
    cli: Cli, project: DifyLikeProject, docker_env: str, tmp_path: Path, plan_doc: dict[str, Any]
) -> None:
    out = tmp_path / "stackvault.yaml"
    res = cli("stack", "discover", "--project", project.name, "--output", str(out))
    assert res.code == 0, res.err
    text = out.read_text()
    for secret in (project.db_password, project.redis_password, project.cache_password):
        assert secret and secret not in text and secret not in res.err + res.out
    doc = yaml.safe_load(text)
    found = sources(doc)
    assert found["db"]["port"] == project.pg_port and found["db"]["socket"] == SOCKET
    assert found["db"]["password_from"] == "env:POSTGRES_PASSWORD"
    assert found["redis"]["port"] == project.redis_port
    assert found["redis"]["password_from"] == "arg"
    assert found["cache"]["port"] == project.cache_port
    assert found["cache"]["password_from"] == "file:/srv/redis-conf/redis.conf"
    assert f"port: {project.pg_port}  # read from postmaster.pid" in text
    assert f"port: {project.cache_port}  # read from /srv/redis-conf/redis.conf" in text
    assert f"{project.directory}/redis-conf" in doc["config"]  # the cache's configuration
    told = f"  db: port {project.pg_port}, socket {SOCKET}, password from env:POSTGRES_PASSWORD"
    assert told + " (read from postmaster.pid of the running server" in res.err, res.err
    assert f"  redis: port {project.redis_port}, password from arg" in res.err
    assert doc["services"]["weaviate"]["quiesce"] == "stop"
    plan_doc.update(doc)

    res = cli("stack", "preflight", "--config", str(out), "--json")
    checks = res.json()["checks"]
    assert res.code == 0, [c for c in checks if c["status"] != "ok"]
    ok = {c["subject"]: c["message"] for c in checks if c["status"] == "ok"}
    assert f"port {project.pg_port}, socket {SOCKET}" in ok["source db"]
    assert "credentials work" in ok["source redis"] and "password from arg" in ok["source redis"]
    assert "credentials work" in ok["source cache"]

    # A URL written by hand without the port: the capture reads it from redis.conf too.
    from stackvault.sources.registry import open_source

    cache = open_source(
        f"redis+docker://{project.container('cache')}?password_from=file:/srv/redis-conf/redis.conf"
    )
    try:
        assert cache.probe() == {"keys": {}}
    finally:
        cache.close()


@pytest.mark.parametrize(
    ("source", "field", "value", "expected"),
    [
        ("cache", "password_from", "file:/srv/redis-conf/wrong.conf", "refused the password"),
        ("redis", "password_from", "none", "password"),
        ("db", "socket", "/nonexistent", "/nonexistent"),
    ],
)
def test_a_backup_that_cannot_reach_a_server_stops_nothing(
    cli: Cli,
    project: DifyLikeProject,
    docker_env: str,
    docker_client: DockerClient,
    initialised: Path,
    tmp_path: Path,
    plan_doc: dict[str, Any],
    source: str,
    field: str,
    value: str,
    expected: str,
) -> None:
    doc = json.loads(json.dumps(plan_doc))
    sources(doc)[source][field] = value
    plan = tmp_path / "stackvault.yaml"
    plan.write_text(json.dumps(doc))

    res = cli("stack", "preflight", "--config", str(plan))
    assert res.code == 1
    [line] = [x for x in res.out.splitlines() if x.startswith(f"FAIL  source {source}:")]
    assert re.search(expected, line), res.out
    assert "correct port, socket or password_from" in line

    before = started(docker_client, project)
    begun = time.monotonic()
    res = cli("stack", "backup", "--config", str(plan))
    took = time.monotonic() - begun
    assert res.code == 1, res.err
    assert f"preflight: source {source} " in res.err and "nothing was stopped or saved" in res.err
    assert started(docker_client, project) == before  # nothing stopped, paused or restarted
    assert cli("snapshots", "--json").json() == []
    print(f"stack backup refused by its preflight in {took:.2f} s")
    for secret in (project.db_password, project.redis_password, project.cache_password):
        assert secret and secret not in res.out + res.err


def test_a_backup_with_a_paused_service_then_a_restore(
    cli: Cli,
    project: DifyLikeProject,
    docker_env: str,
    initialised: Path,
    tmp_path: Path,
    plan_doc: dict[str, Any],
) -> None:
    doc = json.loads(json.dumps(plan_doc))
    doc["services"]["weaviate"]["quiesce"] = "pause"
    plan = tmp_path / "stackvault.yaml"
    plan.write_text(json.dumps(doc))
    project.redis_cli("MSET", "a", "1", "b", "2")
    project.redis_cli("SET", "cached", "yes", service="cache")
    time.sleep(1.0)  # let the writers write

    res = cli("stack", "backup", "--config", str(plan))
    assert res.code == 0, res.err + res.out
    preflight = re.search(r"preflight took (\d+\.\d+) s", res.err)
    assert preflight, res.err
    lines = {
        m[0]: m
        for m in re.findall(r"^  (\w+): (stop|pause), level (\d+), down (\S+) s", res.out, re.M)
    }
    figures = f"preflight {preflight[1]} s; downtime " + ", ".join(
        f"{name} ({m[1]}) {m[3]} s" for name, m in sorted(lines.items())
    )
    assert set(lines) == set(WRITERS), res.out
    assert lines["weaviate"][1] == "pause" and lines["api"][1] == "stop"
    assert all(float(m[3]) < 60 for m in lines.values())
    [snap] = cli("snapshots", "--json").json()
    arts = {a["name"]: a for a in snap["artifacts"]}
    assert {"db", "redis", "cache"} <= set(arts) and all(a["complete"] for a in arts.values())
    assert arts["cache"]["metadata"]["facts"]["keys"] == {"db0": 1}
    rows = arts["db"]["metadata"]["facts"]["databases"]["dify"]["tables"]["public.upload_files"]

    project.down()
    shutil.rmtree(project.directory)
    res = cli("stack", "restore", snap["id"], "--json")
    assert res.code == 0, res.err + res.out
    report = res.json()
    assert report["ok"], report
    assert int(project.psql("SELECT count(*) FROM upload_files", db="dify")) >= rows
    assert project.redis_cli("DBSIZE") == "2"
    assert project.redis_cli("GET", "cached", service="cache") == "yes"
    assert (
        project.compose("exec", "-T", "weaviate", "cat", "/var/lib/weaviate/index.bin").strip()
        == "index"
    )
    print(f"{figures}; restored in {report['rto_s']} s")  # after the last cli call
