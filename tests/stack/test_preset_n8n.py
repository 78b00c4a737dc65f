"""The n8n preset on an n8n-shaped Compose project (`support.n8nproject`) on the real engine:
``stack discover`` picks the preset by itself, the strict cut is taken while the writers
store credentials, binary data and executions, everything is destroyed (``down -v``, the
directory), and the stack is restored under a new project name into a new directory. The
preset's own checks then pass on the restored stack - the user folder's ``config`` holds the
encryption key and it decrypts every stored credential - and fail once the key file is gone.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import Result
from stackvault.records.stack import read_manifest
from stackvault.stack.plan import load_plan, render_plan
from stackvault.stack.presets import restore_checks
from stackvault.stack.presets.restored import RestoredStack
from support.composeproject import started
from support.dockerd import DockerEngine
from support.n8nproject import FOLDER, N8nLikeProject

Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[N8nLikeProject]:
    proj = N8nLikeProject(tmp_path_factory.mktemp("n8n") / "n8n", docker_engine)
    with started(proj):
        yield proj


# This test comes first: the next one destroys the project.
def test_a_plan_that_no_longer_captures_the_key_stops_the_backup_before_anything_stops(
    cli: Cli, project: N8nLikeProject, initialised: Path, docker_env: str, tmp_path: Path
) -> None:
    plan_file = tmp_path / "stackvault.yaml"
    res = cli("stack", "discover", "--project", project.name, "-o", str(plan_file))
    assert res.code == 0, res.err
    plan = load_plan(str(plan_file))
    volume = f"{project.name}_n8n_storage"
    plan.sources = [s for s in plan.sources if not s.url.startswith(f"docker-volume://{volume}")]
    plan_file.write_text(render_plan(plan))
    res = cli("stack", "preflight", "--config", str(plan_file))
    assert res.code == 1, res.out + res.err
    assert "preset n8n" in res.out + res.err and "encryptionKey" in res.out + res.err
    before = project.compose("ps", "--services", "--filter", "status=running")
    res = cli("stack", "backup", "--config", str(plan_file))
    assert res.code == 1 and "Traceback" not in res.err, res.err
    assert project.compose("ps", "--services", "--filter", "status=running") == before


def test_discover_backup_destroy_restore_and_the_key_checks(
    cli: Cli, project: N8nLikeProject, initialised: Path, docker_env: str, tmp_path: Path
) -> None:
    plan_file = tmp_path / "stackvault.yaml"
    res = cli("stack", "discover", "--project", project.name, "-o", str(plan_file))
    assert res.code == 0, res.err
    assert f"(preset n8n) to {plan_file}" in res.err
    text = plan_file.read_text()
    assert project.db_password not in text and project.encryption_key() not in text
    plan = load_plan(str(plan_file))
    assert plan.preset == "n8n"
    assert plan.services["postgres"].role == "postgres"
    assert plan.services["n8n"].stop and plan.services["n8n-worker"].stop
    assert plan.facts["databases"] == ["n8n"] and plan.facts["database"] == "postgresdb"
    assert plan.facts["n8n_service"] == "n8n" and plan.facts["user_folder"] == FOLDER
    volume = f"{project.name}_n8n_storage"
    assert plan.facts["user_folder_capture"] == f"volume {volume}"
    assert any(s.url.startswith(f"docker-volume://{volume}?") for s in plan.sources)
    assert "n8n user folder /home/node/.n8n: config (encryptionKey)" in text  # its note
    assert plan.facts["encryption_key"] == f"file:{FOLDER}/config"
    assert any("N8N_ENCRYPTION_KEY is not set" in w for w in plan.warnings), plan.warnings
    assert "POSTGRES_PASSWORD" in plan.secrets and "DB_POSTGRESDB_PASSWORD" in plan.secrets

    t0 = time.monotonic()
    res = cli("stack", "backup", "--config", str(plan_file), "--json")
    backup_s = time.monotonic() - t0
    assert res.code == 0, res.err
    snap = res.json()["snapshot"]
    manifest_doc = res.json()["manifest"]
    assert set(manifest_doc["downtime"]["services"]) == {"n8n", "n8n-worker"}
    key = project.encryption_key()
    saved = {
        a["name"]: a["metadata"]["facts"]
        for a in next(s for s in cli("snapshots", "--json").json() if s["id"] == snap)["artifacts"]
    }
    creds = saved["postgres"]["databases"]["n8n"]["tables"]["public.credentials_entity"]
    assert creds >= 2

    project.down()
    shutil.rmtree(project.directory)
    new_dir = tmp_path / "moved" / "n8n"
    new_name = f"{project.name}m"
    t0 = time.monotonic()
    res = cli(
        "stack", "restore", snap, "--project", new_name, "--directory", str(new_dir), "--json"
    )
    restore_s = time.monotonic() - t0
    assert res.code == 0, res.err + res.out
    moved = N8nLikeProject(new_dir, project.engine, name=new_name)
    moved.pg_port = project.pg_port
    client = project.engine.client()
    try:
        assert res.json()["ok"], res.json()
        assert moved.encryption_key() == key
        manifest = read_manifest(SimpleNamespace(stack=manifest_doc, short_id=snap[:8]))
        assert manifest is not None and manifest.preset == "n8n"
        stack = RestoredStack(client, new_name, manifest)
        checks = {v.subject: v for v in restore_checks(stack)}
        assert checks["n8n encryption key"].ok, checks
        assert checks["n8n encryption key"].message == f"present in {FOLDER}/config"
        assert checks["n8n credentials"].ok, checks
        assert "stored credentials in database n8n decrypt" in checks["n8n credentials"].message
        print(f"n8n stack: backup {backup_s:.1f} s, restore {restore_s:.1f} s (RTO "
              f"{res.json()['rto_s']} s), {creds} credentials")  # fmt: skip

        # Without its key file the restored credentials are useless: the check says so.
        moved.compose("stop", "n8n", "n8n-worker")
        helper = client.containers.run(
            "docker.n8n.io/n8nio/n8n:1.80.0",
            ["/bin/sh", "-c", f"rm {FOLDER}/config"],
            volumes={
                f"{new_name}_n8n_storage": {"bind": FOLDER, "mode": "rw"},
                "/usr": {"bind": "/usr", "mode": "ro"},
            },
            remove=True,
        )
        assert helper == b""
        [missing] = restore_checks(stack)
        assert not missing.ok and "config is not in the restored container" in missing.message
    finally:
        moved.down()
