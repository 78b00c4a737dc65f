"""The real-service fixtures work against the real things (tests/support/servicefixtures.py):
a private Docker engine, the host-binaries image, PostgreSQL / MariaDB / Redis on the host and
the same three in containers reached only through the Engine API."""

from __future__ import annotations

import subprocess
from typing import Any

import docker
import pytest
from docker import DockerClient

from support.dbcontainers import MariaDBContainer, PostgresContainer, RedisContainer
from support.dbservers import CommandError, MariaDBServer, PostgresServer, RedisServer, client_env
from support.dockerd import DockerEngine, run_oneshot


def _volume_mount(service: PostgresContainer | MariaDBContainer | RedisContainer) -> dict[str, Any]:
    service.container.reload()
    mounts = [m for m in service.container.attrs["Mounts"] if m["Destination"] == "/data"]
    assert len(mounts) == 1, service.container.attrs["Mounts"]
    mount: dict[str, Any] = mounts[0]
    return mount


# -- Docker ----------------------------------------------------------------------------------


def test_engine_is_private_and_has_no_bridge(
    docker_engine: DockerEngine, docker_client: DockerClient
) -> None:
    assert docker_client.ping()
    info = docker_client.info()
    assert info["DockerRootDir"] == str(docker_engine.directory / "root")
    assert info["Driver"] == "overlay2"
    assert docker_engine.host == f"unix://{docker_engine.directory}/docker.sock"
    assert len(str(docker_engine.socket_path)) < 100
    names = {n.name for n in docker_client.networks.list()}
    assert "bridge" not in names and "host" in names


def test_host_image_runs_host_binaries_as_numeric_users(
    docker_client: DockerClient, host_image: str
) -> None:
    script = (
        "id -un; printf abc | sha256sum; tar --version | head -1; "
        "postgres --version; touch /tmp/w && echo tmp-ok; readlink /var/run"
    )
    out = run_oneshot(
        docker_client,
        host_image,
        ["sh", "-c", script],
        user="65534:65534",
        environment={"PATH": "/usr/lib/postgresql/15/bin:/usr/bin:/bin"},
    )
    lines = out.splitlines()
    assert lines[0] == "nobody"  # resolved through the host's /etc, mounted read-only
    assert lines[1].startswith("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert lines[2].startswith("tar (GNU tar)")
    assert lines[3].startswith("postgres (PostgreSQL) 15.")
    assert lines[4:] == ["tmp-ok", "../run"]


def test_docker_env_points_the_sdk_at_the_test_engine(
    docker_env: str, docker_engine: DockerEngine, redis_container: RedisContainer
) -> None:
    client = docker.from_env()
    try:
        found = client.containers.get(redis_container.name)
        assert found.attrs["HostConfig"]["NetworkMode"] == "host"
        assert client.info()["DockerRootDir"] == str(docker_engine.directory / "root")
    finally:
        client.close()
    assert docker_engine.env() == {"DOCKER_HOST": docker_env}


# -- servers on the host ----------------------------------------------------------------------


def test_pg_server_tables_and_password(pg_server: PostgresServer, pg_database: str) -> None:
    out = pg_server.psql(
        "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 42);"
        "SELECT count(*), sum(n) FROM t",
        db=pg_database,
    )
    assert out == "42|903"
    assert (
        pg_server.url(pg_database)
        == f"postgres://postgres@127.0.0.1:{pg_server.port}/{pg_database}"
    )
    assert pg_server.psql("SHOW listen_addresses") == "127.0.0.1"
    wrong = client_env({**pg_server.env(), "PGPASSWORD": "wrong"})
    denied = subprocess.run(
        [str(pg_server.bindir / "psql"), "-X", "-d", "postgres", "-c", "SELECT 1"],
        env=wrong,
        capture_output=True,
        text=True,
        check=False,
    )
    assert denied.returncode != 0 and "password authentication failed" in denied.stderr
    with pytest.raises(CommandError, match="does not exist"):
        pg_server.psql("SELECT * FROM no_such_table", db=pg_database)


def test_pg_server_pgbench_init(pg_server: PostgresServer, pg_database: str) -> None:
    pg_server.pgbench_init(pg_database, scale=1)
    assert pg_server.psql("SELECT count(*) FROM pgbench_accounts", db=pg_database) == "100000"


def test_mariadb_server_tables_and_password(
    mariadb_server: MariaDBServer, mariadb_database: str
) -> None:
    out = mariadb_server.sql(
        "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2), (3);SELECT count(*), sum(n) FROM t",
        db=mariadb_database,
    )
    assert out == "3\t6"
    assert mariadb_server.sql("SELECT @@bind_address") == "127.0.0.1"
    assert mariadb_server.url("x") == f"mysql://root@127.0.0.1:{mariadb_server.port}/x"
    no_password = client_env({k: v for k, v in mariadb_server.env().items() if k != "MYSQL_PWD"})
    denied = subprocess.run(
        [str(mariadb_server.client), "--no-defaults", "-uroot", "--protocol=tcp", "-e", "SELECT 1"],
        env=no_password,
        capture_output=True,
        text=True,
        check=False,
    )
    assert denied.returncode != 0 and "Access denied" in denied.stderr


def test_redis_server_set_get(redis_server: RedisServer) -> None:
    assert redis_server.cli("SET", "svt:k", "hello world") == "OK"
    assert redis_server.cli("GET", "svt:k") == "hello world"
    with pytest.raises(CommandError, match="not an integer"):
        redis_server.cli("INCR", "svt:k")
    assert redis_server.url() == f"redis://127.0.0.1:{redis_server.port}"


# -- servers in containers --------------------------------------------------------------------


def test_pg_container_tools_env_and_volume(pg_container: PostgresContainer) -> None:
    assert pg_container.exec(["pg_dump", "--version"]).startswith("pg_dump (PostgreSQL) 15.")
    env = dict(e.split("=", 1) for e in pg_container.container.attrs["Config"]["Env"])
    assert env["POSTGRES_USER"] == "postgres" and env["POSTGRES_DB"] == "postgres"
    assert env["POSTGRES_PASSWORD"] == pg_container.password
    mount = _volume_mount(pg_container)
    assert mount["Type"] == "volume" and mount["Name"] == pg_container.volume
    db = pg_container.create_database("svt_fixture_check")
    try:
        out = pg_container.psql(
            "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 7);"
            "SELECT count(*) FROM t",
            db=db,
        )
        assert out == "7"
    finally:
        pg_container.psql(f"DROP DATABASE {db} WITH (FORCE)")
    # TCP with the password from the container's own environment (what capture code does).
    over_tcp = pg_container.exec(
        ["sh", "-c", 'PGPASSWORD="$POSTGRES_PASSWORD" psql -X -At -h 127.0.0.1 -c "SELECT 1"']
    )
    assert over_tcp.strip() == "1"
    assert pg_container.exec(["id", "-un"]).strip() == "postgres"
    assert pg_container.health() == "healthy"


def test_mariadb_container_password_and_volume(mariadb_container: MariaDBContainer) -> None:
    out = mariadb_container.sql(
        "CREATE DATABASE svt_fixture_check; CREATE TABLE svt_fixture_check.t (n int);"
        "INSERT INTO svt_fixture_check.t VALUES (1), (2); SELECT count(*) FROM svt_fixture_check.t;"
        "DROP DATABASE svt_fixture_check"
    )
    assert out == "2"
    # The host's /etc/mysql/my.cnf socket path reaches the server; no password, no entry.
    default_socket = 'MYSQL_PWD="$MARIADB_ROOT_PASSWORD" mariadb -uroot -N -e "SELECT 1"'
    assert mariadb_container.exec(["sh", "-c", default_socket]).strip() == "1"
    with pytest.raises(CommandError, match="Access denied"):
        mariadb_container.exec(["mariadb", "-uroot", "-h127.0.0.1", "-e", "SELECT 1"])
    env = dict(e.split("=", 1) for e in mariadb_container.container.attrs["Config"]["Env"])
    assert env["MARIADB_ROOT_PASSWORD"] == env["MYSQL_ROOT_PASSWORD"] == mariadb_container.password
    assert _volume_mount(mariadb_container)["Name"] == mariadb_container.volume
    assert mariadb_container.exec(["id", "-un"]).strip() == "mysql"


def test_redis_container_set_get_and_save_into_volume(redis_container: RedisContainer) -> None:
    assert redis_container.cli("SET", "svt:k", "v1") == "OK"
    assert redis_container.cli("GET", "svt:k") == "v1"
    assert redis_container.cli("SAVE") == "OK"
    assert "dump.rdb" in redis_container.exec(["ls", "/data"]).split()
    mount = _volume_mount(redis_container)
    assert mount["Name"] == redis_container.volume and mount["RW"] is True
    assert redis_container.container.attrs["HostConfig"]["NetworkMode"] == "host"
