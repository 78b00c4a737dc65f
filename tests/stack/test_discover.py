"""`stack discover` on a real Compose project (docker-compose 1.29 on the test engine): the
Dify-shaped project of `support.composeproject`, running, with writers.

Covered: the project is found from the engine's labels alone; services are classified (the
database by its environment, Redis by its program, writers by their mounts, stateless ones);
the plan captures PostgreSQL (every database: dify and dify_plugin), Redis, the bind-mounted
data directories, the named volume, the configuration (``.env``, compose file, ``nginx/``) and
lists secrets by name only; stop/start orders follow ``depends_on``; the written plan loads back
equal; the Dify preset's warnings (public default ``SECRET_KEY``, external storage); clear
errors for a missing project, an existing output file and a broken plan file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Result
from stackvault.errors import UsageError
from stackvault.records.plan import PathPlan, ProbePlan, plan_from_dict
from stackvault.stack.plan import load_plan, render_plan
from stackvault.stack.presets.dify import DEFAULT_SECRET_KEY, backup_facts
from support.composeproject import DifyLikeProject, started
from support.dockerd import DockerEngine

Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DifyLikeProject]:
    proj = DifyLikeProject(tmp_path_factory.mktemp("dify") / "docker", docker_engine)
    with started(proj):
        yield proj


def test_discover_writes_a_plan_that_knows_the_stack(
    cli: Cli, project: DifyLikeProject, docker_env: str, tmp_path: Path
) -> None:
    out = tmp_path / "stackvault.yaml"
    res = cli("stack", "discover", "--project", project.name, "--output", str(out))
    assert res.code == 0, res.err
    assert f"wrote the plan of project {project.name} (preset dify)" in res.err
    text = out.read_text()
    assert project.secret_key not in text and project.db_password not in text
    assert "# role decides the capture" in text

    plan = load_plan(str(out))
    d = str(project.directory)
    assert plan.project == project.name and plan.directory == d
    assert plan.preset == "dify" and plan.consistency == "strict"
    roles = {name: s.role for name, s in plan.services.items()}
    assert roles == {
        "api": "app",
        "db": "postgres",
        "nginx": "stateless",
        "plugin_daemon": "app",
        "redis": "redis",
        "weaviate": "app",
        "web": "stateless",
        "worker": "app",
    }
    stops = {name for name, s in plan.services.items() if s.stop}
    assert stops == {"api", "worker", "plugin_daemon", "weaviate"}
    urls = {s.name: s.url for s in plan.sources}
    assert urls == {
        "db": f"postgres+docker://{project.container('db')}/?name=db",
        "redis": f"redis+docker://{project.container('redis')}?name=redis",
        f"volume-{project.name}_weaviate_data": (
            f"docker-volume://{project.name}_weaviate_data?mode=hot"
            f"&name=volume-{project.name}_weaviate_data"
        ),
    }
    # How each server is reached, as it was started (the port of the database, its socket).
    reach = {s.name: (s.port, s.socket, s.password_from) for s in plan.sources if s.port}
    assert reach == {
        "db": (project.pg_port, "/var/run/postgresql", "env:POSTGRES_PASSWORD"),
        "redis": (project.redis_port, None, "none"),
    }
    assert "postmaster.pid of the running server" in text
    assert [p.path for p in plan.paths] == [
        f"{d}/volumes/app/storage",
        f"{d}/volumes/plugin_daemon",
    ]
    assert plan.config[:2] == [f"{d}/.env", f"{d}/docker-compose.yaml"]
    assert f"{d}/nginx" in plan.config
    assert plan.secrets == ["DB_PASSWORD", "SECRET_KEY"]
    assert plan.facts["databases"] == ["dify", "dify_plugin"]
    assert plan.facts["privkeys"] == f"{d}/volumes/app/storage/privkeys"
    assert plan.warnings == []
    # Dependents stop first, and start last.
    assert plan.start_order() == [
        "db",
        "redis",
        "api",
        "web",
        "nginx",
        "plugin_daemon",
        "weaviate",
        "worker",
    ]
    assert plan.stop_order() == ["worker", "weaviate", "plugin_daemon", "api"]

    # --json carries the plan and what was found, still without secret values.
    res = cli("stack", "discover", "--project", project.name, "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["plan"]["project"] == project.name
    assert "SECRET_KEY" in doc["discovered"]["env_names"]
    assert project.secret_key not in res.out and project.db_password not in res.out
    assert doc["discovered"]["services"]["db"]["env_names"].count("POSTGRES_PASSWORD") == 1
    assert plan_from_dict(doc["plan"]).sources == plan.sources


def test_the_only_project_is_found_without_a_name_and_output_is_not_clobbered(
    cli: Cli, project: DifyLikeProject, docker_env: str, tmp_path: Path
) -> None:
    res = cli("stack", "discover")
    assert res.code == 0, res.err
    assert f"# stackvault plan for Compose project {project.name}" in res.out
    out = tmp_path / "plan.yaml"
    out.write_text("# my edits\n")
    res = cli("stack", "discover", "--output", str(out))
    assert res.code == 2 and f"{out} exists; it may hold your edits" in res.err
    assert out.read_text() == "# my edits\n"
    assert cli("stack", "discover", "--output", str(out), "--force").code == 0
    assert "version: 1" in out.read_text()


def test_unknown_project_and_preset(cli: Cli, project: DifyLikeProject, docker_env: str) -> None:
    res = cli("stack", "discover", "--project", "nope")
    assert res.code == 2
    assert "has no containers of Compose project 'nope'" in res.err
    assert project.name in res.err and "Traceback" not in res.err
    res = cli("stack", "discover", "--preset", "wordpress")
    assert res.code == 2 and "unknown preset 'wordpress'" in res.err


def test_dify_warnings_for_a_public_secret_key_and_external_storage(
    project: DifyLikeProject, docker_env: str
) -> None:
    from stackvault.sources.docker.engine import connect
    from stackvault.stack.compose import discover
    from stackvault.stack.presets import plan_for

    client = connect()
    try:
        found = discover(client, project.name)
    finally:
        client.close()
    found.env["SECRET_KEY"] = DEFAULT_SECRET_KEY
    found.env["STORAGE_TYPE"] = "s3"
    plan = plan_for(found, "dify")
    assert any("public default" in w for w in plan.warnings), plan.warnings
    assert any("STORAGE_TYPE=s3" in w and "add that bucket to sources" in w for w in plan.warnings)
    generic = plan_for(found, "generic")
    assert generic.preset == "generic" and generic.warnings == [] and generic.facts == {}


def test_broken_plan_files_name_the_field(tmp_path: Path) -> None:
    good = {
        "version": 1,
        "project": "p",
        "directory": "/srv/p",
        "preset": "generic",
        "consistency": "strict",
        "compose_files": [],
        "services": {"db": {"role": "postgres", "image": "postgres:15", "stop": False}},
        "sources": [{"name": "db", "url": "postgres+docker://p_db_1/", "service": "db"}],
        "paths": [],
        "config": [],
        "secrets": [],
    }
    assert plan_from_dict(good).services["db"].role == "postgres"
    hooked = plan_from_dict({**good, "hooks": [{"service": "db", "before": "pause now"}]})
    assert hooked.hooks[0].before == ["sh", "-c", "pause now"] and hooked.hooks[0].after == []
    assert (hooked.hooks[0].where, hooked.hooks[0].mode, hooked.hooks[0].timeout) == (
        "container",
        "essential",
        60.0,
    )
    cases = [
        ({"consistency": "sometimes"}, "consistency must be strict or online"),
        ({"services": {"db": {"role": "oracle", "image": "x"}}}, "services.db.role must be one"),
        (
            {"services": {"db": {"role": "postgres", "image": "x", "stop": "yes"}}},
            "services.db.stop must be true or false",
        ),
        (
            {"sources": [{"name": "db", "url": "u", "service": "cache"}]},
            "source db names service 'cache', which is not under services",
        ),
        ({"paths": [{"path": "rel/dir", "service": "db"}]}, "paths[0].path must be absolute"),
        ({"version": 2}, "version must be 1"),
        ({"hooks": [{"service": "db", "before": "x", "where": "vm"}]}, "where must be container"),
        ({"hooks": [{"service": "db", "before": "x", "mode": "maybe"}]}, "mode must be essential"),
        ({"hooks": [{"service": "web", "before": "x"}]}, "hooks[0] names service 'web'"),
        ({"hooks": [{"service": "db"}]}, "hooks[0] has neither before nor after"),
        ({"hooks": [{"service": "db", "after": 5}]}, "hooks[0].after must be a command"),
        ({"hooks": [{"service": "db", "after": "x", "timeout": -1}]}, "timeout must be a positive"),
        ({"probes": [{"url": "ftp://h/"}]}, "probes[0].url must be an http:// or https:// URL"),
        ({"probes": [{"url": "http://h/", "status": 99}]}, "probes[0].status must be an HTTP"),
        ({"probes": [{"url": "http://h/", "status": True}]}, "probes[0].status must be an HTTP"),
        ({"probes": [{"url": "http://h/", "service": "web"}]}, "probes[0] names service 'web'"),
    ]
    for change, message in cases:
        with pytest.raises(UsageError) as failed:
            plan_from_dict({**good, **change}, "plan.yaml")
        assert message in str(failed.value), (change, str(failed.value))
    rendered = tmp_path / "hooked.yaml"
    rendered.write_text(render_plan(hooked))
    assert load_plan(str(rendered)).hooks == hooked.hooks
    probed = plan_from_dict({**good, "probes": [{"url": "http://127.0.0.1:8/x", "service": "db"}]})
    assert probed.probes == [ProbePlan(url="http://127.0.0.1:8/x", status=200, service="db")]
    rendered.write_text(render_plan(probed))
    assert load_plan(str(rendered)).probes == probed.probes
    broken = tmp_path / "bad.yaml"
    broken.write_text("services: [\n")
    with pytest.raises(UsageError, match="is not valid YAML"):
        load_plan(str(broken))
    with pytest.raises(UsageError, match="there is no plan file"):
        load_plan(str(tmp_path / "missing.yaml"))
    broken.write_text(json.dumps(good))
    assert load_plan(str(broken)).project == "p"


def test_an_excluded_plugin_cwd_is_recorded_for_the_restore() -> None:
    plan = plan_from_dict(
        {
            "version": 1,
            "project": "p",
            "directory": "/srv/dify/docker",
            "preset": "dify",
            "consistency": "strict",
            "services": {"plugin_daemon": {"role": "app", "image": "x", "stop": True}},
            "paths": [
                {"path": "/srv/dify/docker/volumes/plugin_daemon", "service": "plugin_daemon"}
            ],
        }
    )
    assert backup_facts(plan) == {}
    plan.paths[0].exclude = ["persistence", "/cwd/"]
    assert backup_facts(plan) == {"plugins_rebuild": True}
    plan.paths = [
        PathPlan(path="/srv/other/volumes/plugin_daemon", service="plugin_daemon", exclude=["cwd"])
    ]
    assert backup_facts(plan) == {}
