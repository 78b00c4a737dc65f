"""The Open WebUI preset on an Open WebUI-shaped Compose project
(`support.openwebuiproject`) on the real engine: ``stack discover`` picks the preset by
itself, the strict cut is taken while the writer saves uploads, chats and embeddings into
``webui.db`` and Chroma, everything is destroyed (``down -v``, the directory), and the stack
is restored under a new project name into a new directory. The preset's own checks then pass
- users in the restored database, every upload it names there, the vector store readable -
and fail once an upload is gone.
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
from support.composeproject import started
from support.dockerd import DockerEngine
from support.openwebuiproject import DATA, WEBUI_IMAGE, OpenWebUILikeProject

Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenWebUILikeProject]:
    proj = OpenWebUILikeProject(tmp_path_factory.mktemp("owui") / "open-webui", docker_engine)
    with started(proj):
        yield proj


def test_discover_backup_destroy_restore_and_the_data_checks(
    cli: Cli, project: OpenWebUILikeProject, initialised: Path, docker_env: str, tmp_path: Path
) -> None:
    plan_file = tmp_path / "stackvault.yaml"
    res = cli("stack", "discover", "--project", project.name, "-o", str(plan_file))
    assert res.code == 0, res.err
    assert f"(preset open-webui) to {plan_file}" in res.err
    text = plan_file.read_text()
    assert project.secret_key not in text
    assert f"Open WebUI data {DATA}: webui.db, uploads/, vector_db/ (Chroma)" in text
    plan = load_plan(str(plan_file))
    assert plan.preset == "open-webui"
    assert plan.services["open-webui"].stop
    volume = f"{project.name}_open-webui"
    assert plan.facts["data_capture"] == f"volume {volume}"
    assert plan.facts["database"] == "sqlite" and plan.facts["sqlite"] == f"{DATA}/webui.db"
    assert plan.facts["chroma"] == f"{DATA}/vector_db/chroma.sqlite3"
    assert "WEBUI_SECRET_KEY" in plan.secrets
    assert not any("WEBUI_SECRET_KEY is not set" in w for w in plan.warnings), plan.warnings
    assert any("/root/.ollama: captured" in w for w in plan.warnings), plan.warnings

    t0 = time.monotonic()
    res = cli("stack", "backup", "--config", str(plan_file), "--json")
    backup_s = time.monotonic() - t0
    assert res.code == 0, res.err
    snap = res.json()["snapshot"]
    manifest_doc = res.json()["manifest"]
    assert "open-webui" in manifest_doc["downtime"]["services"]

    project.down()
    shutil.rmtree(project.directory)
    new_dir = tmp_path / "moved" / "open-webui"
    new_name = f"{project.name}m"
    t0 = time.monotonic()
    res = cli(
        "stack", "restore", snap, "--project", new_name, "--directory", str(new_dir), "--json"
    )
    restore_s = time.monotonic() - t0
    assert res.code == 0, res.err + res.out
    moved = OpenWebUILikeProject(new_dir, project.engine, name=new_name)
    client = project.engine.client()
    try:
        assert res.json()["ok"], res.json()
        manifest = read_manifest(SimpleNamespace(stack=manifest_doc, short_id=snap[:8]))
        assert manifest is not None and manifest.preset == "open-webui"
        moved.compose("stop", "open-webui")  # what the restore brought back, not new writes
        stack = RestoredStack(client, new_name, manifest)
        checks = {v.subject: v for v in restore_checks(stack)}
        assert all(v.ok for v in checks.values()), checks
        assert checks["open-webui database"].message.startswith("1 users, ")
        uploads = checks["open-webui uploads"].message
        assert uploads.startswith("all ") and uploads.endswith(
            " uploads the database names are there"
        )
        count = int(uploads.split()[1])
        assert count >= 5
        assert checks["open-webui vector store"].message.startswith("Chroma: ")
        print(f"open-webui stack: backup {backup_s:.1f} s, restore {restore_s:.1f} s (RTO "
              f"{res.json()['rto_s']} s), {count} uploads")  # fmt: skip

        # An upload the database names is gone: the check names it.
        client.containers.run(
            WEBUI_IMAGE,
            ["/bin/sh", "-c", f"rm \"$(ls {DATA}/uploads/* | head -n 1)\""],
            volumes={volume.replace(project.name, new_name): {"bind": DATA, "mode": "rw"},
                     "/usr": {"bind": "/usr", "mode": "ro"}},
            remove=True,
        )  # fmt: skip
        gone = {v.subject: v for v in restore_checks(stack)}["open-webui uploads"]
        assert not gone.ok and gone.message.startswith(f"1 of {count} uploads"), gone
    finally:
        moved.down()
