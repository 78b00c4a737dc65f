"""`stackvault drill` of a job whose PostgreSQL or MariaDB runs in a container, on the real
engine: the artifact goes into a throwaway server in a container of the same image (on this
host's loopback at a free port, labelled as the drill's), is compared with the snapshot's
facts, and the container is removed; production's container is untouched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FAST_INIT, PASSWORD, Result
from stackvault.stack.drill import drill_resources
from support.dbcontainers import MariaDBContainer, PostgresContainer

Cli = Callable[..., Result]
JOB = "db"


def job(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, source: str) -> Path:
    """A repository and a job ``db`` of ``source``, run once; its configuration file."""
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    assert cli("--repo", tmp_path / "repo", *FAST_INIT).code == 0
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    monkeypatch.setenv("SV_PW", PASSWORD)
    config = tmp_path / "stackvault.yaml"
    config.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "repo"}, password_env: SV_PW}}
jobs:
  {JOB}:
    sources: ["{source}"]
    policy: tier3
    repository: primary
"""
    )
    res = cli("run", JOB, "--config", config)
    assert res.code == 0, res.err
    return config


def test_a_database_captured_in_a_container_is_drilled_in_a_container_of_its_image(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_env: str,
    pg_container: PostgresContainer,
) -> None:
    db = pg_container.create_database(f"drill_{tmp_path.name[-12:].lower()}".replace("-", "_"))
    pg_container.psql(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 250);",
        db=db,
    )
    config = job(tmp_path, cli, monkeypatch, f"postgres+docker://{pg_container.name}/{db}?name=pg")
    client = pg_container.container.client
    before = {c.id for c in client.containers.list(all=True)}
    workdir = tmp_path / "drills"
    res = cli("drill", JOB, "--config", config, "--workdir", workdir, "--json")
    report = res.json()
    assert res.code == 0, res.err + str(report)
    probes = {p["name"]: p for p in report["probes"]}
    loaded = probes["database pg: loaded"]
    assert loaded["status"] == "pass"
    assert "PostgreSQL 15" in loaded["message"] and " container of " in loaded["message"]
    assert probes["database pg: row counts as recorded"]["status"] == "pass"
    assert [p["name"] for p in report["phases"]] == [
        "leftovers",
        "read snapshot",
        "server pg",
        "database pg",
        "cleanup",
    ]
    assert any(" container of " in r for r in report["cleanup"]["removed"])
    assert drill_resources(client) == [] and list(workdir.iterdir()) == []
    assert {c.id for c in client.containers.list(all=True)} == before
    assert pg_container.psql("SELECT count(*) FROM t", db=db) == "250"


def test_a_mariadb_captured_in_a_container_is_drilled_in_a_container_of_its_image(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_env: str,
    mariadb_container: MariaDBContainer,
) -> None:
    db = mariadb_container.create_database(f"drill_{tmp_path.name[-12:].lower()}".replace("-", "_"))
    mariadb_container.sql(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);", db=db
    )
    config = job(
        tmp_path, cli, monkeypatch, f"mysql+docker://{mariadb_container.name}/{db}?name=my"
    )
    client = mariadb_container.container.client
    before = {c.id for c in client.containers.list(all=True)}
    workdir = tmp_path / "drills"
    res = cli("drill", JOB, "--config", config, "--workdir", workdir, "--json")
    report = res.json()
    assert res.code == 0, res.err + str(report)
    probes = {p["name"]: p for p in report["probes"]}
    loaded = probes["database my: loaded"]
    assert loaded["status"] == "pass" and "MySQL " in loaded["message"], loaded
    assert " container of " in loaded["message"]
    assert probes["database my: row counts as recorded"]["status"] == "pass"
    assert drill_resources(client) == [] and list(workdir.iterdir()) == []
    assert {c.id for c in client.containers.list(all=True)} == before
