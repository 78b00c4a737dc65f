"""The AnythingLLM preset on an AnythingLLM-shaped Compose project
(`support.anythingllmproject`) on the real engine: ``stack discover`` picks the preset by
itself, the strict cut is taken while the writer saves documents, their rows and their LanceDB
vectors, everything is destroyed (``down``, the directory), and the stack is restored under a
new project name into a new directory. The preset's own checks then pass - the keys are set,
the restored database reads, every workspace document and every workspace's vector table is
there - and fail once a document is gone.
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
from stackvault.stack.plan import load_plan
from stackvault.stack.presets import restore_checks
from stackvault.stack.presets.restored import RestoredStack
from support.anythingllmproject import UID, AnythingLLMLikeProject
from support.composeproject import started
from support.dockerd import DockerEngine

Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnythingLLMLikeProject]:
    proj = AnythingLLMLikeProject(tmp_path_factory.mktemp("allm") / "docker", docker_engine)
    with started(proj):
        yield proj


def test_discover_backup_destroy_restore_and_the_storage_checks(
    cli: Cli, project: AnythingLLMLikeProject, initialised: Path, docker_env: str, tmp_path: Path
) -> None:
    plan_file = tmp_path / "stackvault.yaml"
    res = cli("stack", "discover", "--project", project.name, "-o", str(plan_file))
    assert res.code == 0, res.err
    assert f"(preset anythingllm) to {plan_file}" in res.err
    text = plan_file.read_text()
    assert not any(v in text for v in project.keys.values())
    assert "AnythingLLM storage /app/server/storage: anythingllm.db, documents/" in text
    plan = load_plan(str(plan_file))
    assert plan.preset == "anythingllm" and plan.warnings == []
    assert plan.services["anythingllm"].stop
    storage, env = str(project.directory / "storage"), str(project.directory / ".env")
    assert [p.path for p in plan.paths] == [storage]  # the server's .env is configuration
    assert env in plan.config
    assert plan.facts["storage_capture"] == storage
    assert {"JWT_SECRET", "SIG_KEY", "SIG_SALT"} <= set(plan.secrets)

    t0 = time.monotonic()
    res = cli("stack", "backup", "--config", str(plan_file), "--json")
    backup_s = time.monotonic() - t0
    assert res.code == 0, res.err
    snap = res.json()["snapshot"]
    manifest_doc = res.json()["manifest"]
    assert list(manifest_doc["downtime"]["services"]) == ["anythingllm"]

    project.down()
    shutil.rmtree(project.directory)
    new_dir = tmp_path / "moved" / "docker"
    new_name = f"{project.name}m"
    t0 = time.monotonic()
    res = cli(
        "stack", "restore", snap, "--project", new_name, "--directory", str(new_dir), "--json"
    )
    restore_s = time.monotonic() - t0
    assert res.code == 0, res.err + res.out
    moved = AnythingLLMLikeProject(new_dir, project.engine, name=new_name)
    client = project.engine.client()
    try:
        assert res.json()["ok"], res.json()
        assert (new_dir / "storage").stat().st_uid == UID
        assert (new_dir / ".env").stat().st_mode & 0o777 == 0o600
        manifest = read_manifest(SimpleNamespace(stack=manifest_doc, short_id=snap[:8]))
        assert manifest is not None and manifest.preset == "anythingllm"
        moved.compose("stop", "anythingllm")  # what the restore brought back, not new writes
        stack = RestoredStack(client, new_name, manifest)
        checks = {v.subject: v for v in restore_checks(stack)}
        assert all(v.ok for v in checks.values()), checks
        assert checks["anythingllm keys"].message == "JWT_SECRET, SIG_KEY, SIG_SALT set"
        assert checks["anythingllm database"].message.startswith("2 workspaces, ")
        documents = int(checks["anythingllm database"].message.split(", ")[1].split()[0])
        assert documents >= 6
        assert checks["anythingllm vectors"].message == (
            "LanceDB tables of all 2 workspaces with documents"
        )
        print(f"anythingllm stack: backup {backup_s:.1f} s, restore {restore_s:.1f} s (RTO "
              f"{res.json()['rto_s']} s), {documents} documents")  # fmt: skip

        # A document a workspace names is gone: the check names it. (The first of each run
        # of the writer: a later round followed it, so its row is there.)
        first = sorted((new_dir / "storage/documents/custom-documents").glob("report-1-*"))[0]
        first.unlink()
        gone = {v.subject: v for v in restore_checks(stack)}["anythingllm documents"]
        assert not gone.ok and gone.message.startswith(f"1 of {documents} workspace documents")
        assert first.name in gone.message
    finally:
        moved.down()
