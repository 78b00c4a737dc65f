"""Database servers whose password is a file in the container, as Docker secrets give it: a
Compose project (real engine, real Compose) with PostgreSQL started with
``POSTGRES_PASSWORD_FILE`` (password authentication on its socket too, so nothing works without
it) and MariaDB with ``MARIADB_ROOT_PASSWORD_FILE``, each file mounted read-only under
``/run/secrets``; no password variable anywhere.

Covered: discovery records each password source by name (``file:/run/secrets/...``), never a
password; preflight connects with them; a strict backup captures both databases complete; a
wrong file in the plan fails preflight. The preset's expected databases
(``facts.databases``) are checked on the source ``facts.databases_source`` names only, so a
MySQL database expected beside a PostgreSQL server passes, and fails when named on the wrong
source.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Result
from support.appproject import HOST_MOUNTS, AppProject, make_postgres_dir, yaml_str
from support.dbservers import free_port, pg_bindir, service_user
from support.dockerd import CONTAINER_PATH, HOST_IMAGE, DockerEngine

Cli = Callable[..., Result]
PG_SECRET = "/run/secrets/pg_password"
MY_SECRET = "/run/secrets/mysql_root_password"


class SecretsProject(AppProject):
    """The Compose project of the module docstring."""

    def __init__(self, directory: Path, engine: DockerEngine) -> None:
        super().__init__(directory, engine, f"svsecret{secrets.token_hex(3)}")
        self.pg_password = secrets.token_hex(12)
        self.my_password = secrets.token_hex(12)
        self.pg_port = free_port()
        self.my_port = free_port()

    def write(self) -> SecretsProject:
        d = self.directory
        make_postgres_dir(d, "db")
        my_uid, my_gid = service_user("mysql")
        pg_uid, pg_gid = service_user("postgres")
        (d / "volumes/mysql").mkdir(parents=True)
        os.chown(d / "volumes/mysql", my_uid, my_gid)
        (d / "secrets").mkdir()
        for name, value, owner in (
            ("pg_password", self.pg_password, (pg_uid, pg_gid)),
            ("mysql_root_password", self.my_password, (my_uid, my_gid)),
        ):
            (d / "secrets" / name).write_text(value + "\n")
            os.chown(d / "secrets" / name, *owner)
            (d / "secrets" / name).chmod(0o400)
        pg_init = (
            '[ -s "$PGDATA/PG_VERSION" ] || initdb -D "$PGDATA" -U postgres '
            '--pwfile="$POSTGRES_PASSWORD_FILE" --auth-local=scram-sha-256 '
            "--auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync >/dev/null; "
            "( for i in $(seq 1 100); do pg_isready -q && break; sleep 0.2; done; "
            'PGPASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")" psql -U postgres -qc '
            "'CREATE DATABASE app' 2>/dev/null ) & "
            'exec postgres -D "$PGDATA" -c listen_addresses=127.0.0.1'
        )
        my_init = (
            "[ -d /data/db/mysql ] || mariadb-install-db --no-defaults --datadir=/data/db "
            '--skip-test-db >/dev/null; umask 077; printf "ALTER USER root@localhost '
            "IDENTIFIED BY '%s';\\nCREATE DATABASE IF NOT EXISTS shop;\\n"
            "CREATE TABLE IF NOT EXISTS shop.orders (id int primary key);\\n"
            'INSERT IGNORE INTO shop.orders VALUES (1), (2);\\n" '
            '"$(cat "$MARIADB_ROOT_PASSWORD_FILE")" > /tmp/init.sql && exec "$0" "$@"'
        )
        (d / "docker-compose.yaml").write_text(
            f"""version: "2.4"
services:
  db:
    image: {HOST_IMAGE}
    network_mode: host
    user: "{pg_uid}:{pg_gid}"
    environment:
      POSTGRES_USER: postgres
      POSTGRES_PASSWORD_FILE: {PG_SECRET}
      POSTGRES_DB: app
      PGDATA: /data/pg
      PGPORT: "{self.pg_port}"
      PATH: {pg_bindir()}:{CONTAINER_PATH}
      LC_ALL: C
    command: ["sh", "-c", {yaml_str(pg_init)}]
    stop_signal: SIGINT
    volumes:
{HOST_MOUNTS}      - ./volumes/db:/data
      - ./secrets/pg_password:{PG_SECRET}:ro
  mysql:
    image: {HOST_IMAGE}
    network_mode: host
    user: "{my_uid}:{my_gid}"
    environment:
      MARIADB_ROOT_PASSWORD_FILE: {MY_SECRET}
      PATH: {CONTAINER_PATH}
    command: ["sh", "-c", {yaml_str(my_init)}, "/usr/sbin/mariadbd", "--no-defaults",
              "--datadir=/data/db", "--socket=/tmp/mysqld.sock", "--pid-file=/tmp/mysqld.pid",
              "--port={self.my_port}", "--bind-address=127.0.0.1", "--init-file=/tmp/init.sql"]
    volumes:
{HOST_MOUNTS}      - ./volumes/mysql:/data
      - ./secrets/mysql_root_password:{MY_SECRET}:ro
"""
        )
        return self

    def up(self) -> SecretsProject:
        self.compose("up", "-d")
        pg = f'PGPASSWORD="$(cat {PG_SECRET})" psql -XAtq -U postgres -d app -c "SELECT 1"'
        my = (
            f'MYSQL_PWD="$(cat {MY_SECRET})" mariadb --no-defaults --socket=/tmp/mysqld.sock '
            '-uroot -N -B -e "SELECT count(*) FROM shop.orders"'
        )
        self.wait_for("PostgreSQL", lambda: self.exec("db", "sh", "-c", pg) == "1")
        self.wait_for("MariaDB", lambda: self.exec("mysql", "sh", "-c", my) == "2")
        return self


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecretsProject]:
    proj = SecretsProject(tmp_path_factory.mktemp("secrets") / "stack", docker_engine)
    proj.directory.mkdir()
    try:
        proj.write().up()
        yield proj
    finally:
        proj.down()


@pytest.fixture(scope="module")
def plan_doc() -> dict[str, Any]:
    """The plan as discovery wrote it (filled by the first test)."""
    return {}


def _write(doc: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _preflight(cli: Cli, plan: Path) -> tuple[int, dict[str, str]]:
    res = cli("stack", "preflight", "--config", str(plan), "--json")
    checks = res.json()["checks"]
    failed = {c["subject"]: c["message"] for c in checks if c["status"] == "error"}
    return res.code, failed


def test_discovery_reads_the_password_files_and_a_backup_uses_them(
    cli: Cli,
    project: SecretsProject,
    docker_env: str,
    initialised: Path,
    tmp_path: Path,
    plan_doc: dict[str, Any],
) -> None:
    out = tmp_path / "stackvault.yaml"
    res = cli("stack", "discover", "--project", project.name, "--output", str(out))
    assert res.code == 0, res.err
    text = out.read_text()
    doc = yaml.safe_load(text)
    found = {s["name"]: s for s in doc["sources"]}
    assert found["db"]["password_from"] == f"file:{PG_SECRET}", found["db"]
    assert found["mysql"]["password_from"] == f"file:{MY_SECRET}", found["mysql"]
    assert f"password from file:{PG_SECRET}" in res.err, res.err
    plan_doc.update(doc)

    res = cli("stack", "preflight", "--config", str(out), "--json")
    assert res.code == 0, res.out
    ok = {c["subject"]: c["message"] for c in res.json()["checks"] if c["status"] == "ok"}
    assert "credentials work" in ok["source db"] and "credentials work" in ok["source mysql"]

    res = cli("stack", "backup", "--config", str(out), "--json")
    assert res.code == 0, res.err
    snap = cli("snapshots", "--json").json()[-1]
    arts = {a["name"]: a for a in snap["artifacts"]}
    assert arts["db"]["complete"] and arts["mysql"]["complete"], arts
    assert "app" in arts["db"]["metadata"]["facts"]["databases"]
    assert arts["mysql"]["metadata"]["facts"]["databases"]["shop"]["tables"] == {"orders": 2}
    for secret in (project.pg_password, project.my_password):
        assert secret not in text + res.out + res.err

    doc = json.loads(json.dumps(plan_doc))
    [db] = [s for s in doc["sources"] if s["name"] == "db"]
    db["password_from"] = "file:/run/secrets/nope"
    code, failed = _preflight(cli, _write(doc, tmp_path / "wrong.yaml"))
    assert code == 1 and "source db" in failed and "source mysql" not in failed, failed


def test_expected_databases_are_checked_on_the_source_the_facts_name(
    cli: Cli,
    project: SecretsProject,
    docker_env: str,
    initialised: Path,
    tmp_path: Path,
    plan_doc: dict[str, Any],
) -> None:
    assert plan_doc, "the first test fills the plan"
    doc = json.loads(json.dumps(plan_doc))
    doc["facts"] = {"databases": ["shop"], "databases_source": "mysql"}
    code, failed = _preflight(cli, _write(doc, tmp_path / "mysql.yaml"))
    assert code == 0, failed  # shop is on MySQL; PostgreSQL is not asked for it

    doc["facts"] = {"databases": ["shop"], "databases_source": "db"}
    code, failed = _preflight(cli, _write(doc, tmp_path / "pg.yaml"))
    assert code == 1 and failed == {"source db": "database shop does not exist on db"}, failed

    doc["facts"] = {"databases": ["app"]}  # a plan written before the source was named
    code, failed = _preflight(cli, _write(doc, tmp_path / "old.yaml"))
    assert code == 0, failed
