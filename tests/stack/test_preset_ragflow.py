"""The RAGFlow preset on a RAGFlow-shaped Compose project (`support.ragflowproject`) on the
real engine: ``stack discover`` picks the preset by itself, the strict cut is taken while
uploads go to MinIO and their rows to MySQL, the document engine indexes and RAGFlow queues
tasks; everything is destroyed (``down -v``, the directory), and the stack is restored under a
new project name into a new directory. The preset's own checks then pass - every document of
``rag_flow`` has its object in the restored MinIO data, the Elasticsearch data is there - and
fail once an object is gone.
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
from support.ragflowproject import ES_DATA, MINIO_IMAGE, RAGFlowLikeProject

Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RAGFlowLikeProject]:
    proj = RAGFlowLikeProject(tmp_path_factory.mktemp("ragflow") / "docker", docker_engine)
    with started(proj):
        yield proj


def test_discover_backup_destroy_restore_and_the_store_checks(
    cli: Cli, project: RAGFlowLikeProject, initialised: Path, docker_env: str, tmp_path: Path
) -> None:
    plan_file = tmp_path / "stackvault.yaml"
    res = cli("stack", "discover", "--project", project.name, "-o", str(plan_file))
    assert res.code == 0, res.err
    assert f"(preset ragflow) to {plan_file}" in res.err
    text = plan_file.read_text()
    assert project.mysql_password not in text and project.minio_password not in text
    assert "RAGFlow's uploaded files: a bucket per knowledge base" in text
    plan = load_plan(str(plan_file))
    assert plan.preset == "ragflow"
    roles = {n: s.role for n, s in plan.services.items()}
    assert roles == {"es01": "vector-store", "minio": "object-store", "mysql": "mysql",
                     "ragflow": "app", "redis": "redis"}  # fmt: skip
    assert [n for n, s in plan.services.items() if s.stop] == ["es01", "minio", "ragflow"]
    assert plan.facts["databases"] == ["rag_flow"] and plan.facts["doc_engine"] == "elasticsearch"
    assert plan.facts["minio_capture"] == f"volume {project.name}_minio_data"
    assert plan.facts["doc_engine_data"] == ES_DATA
    template = str(project.directory / "service_conf.yaml.template")
    assert template in plan.config and all(p.path != template for p in plan.paths)
    assert any("ELASTIC_PASSWORD in .env still the public default" in w for w in plan.warnings)
    assert {"MYSQL_PASSWORD", "MINIO_PASSWORD", "REDIS_PASSWORD"} <= set(plan.secrets)

    t0 = time.monotonic()
    res = cli("stack", "backup", "--config", str(plan_file), "--json")
    backup_s = time.monotonic() - t0
    assert res.code == 0, res.err
    snap = res.json()["snapshot"]
    manifest_doc = res.json()["manifest"]
    assert set(manifest_doc["downtime"]["services"]) == {"es01", "minio", "ragflow"}

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
    moved = RAGFlowLikeProject(new_dir, project.engine, name=new_name)
    client = project.engine.client()
    try:
        assert res.json()["ok"], res.json()
        manifest = read_manifest(SimpleNamespace(stack=manifest_doc, short_id=snap[:8]))
        assert manifest is not None and manifest.preset == "ragflow"
        moved.compose("stop", "minio", "es01", "ragflow")  # the restored data, not new writes
        stack = RestoredStack(client, new_name, manifest)
        checks = {v.subject: v for v in restore_checks(stack)}
        assert all(v.ok for v in checks.values()), checks
        docs = checks["ragflow documents"].message
        assert docs.startswith("all ") and docs.endswith(" documents have their object in MinIO")
        count = int(docs.split()[1])
        assert count >= 6
        assert checks["ragflow elasticsearch"].message == f"{ES_DATA}/indices restored"
        print(f"ragflow stack: backup {backup_s:.1f} s, restore {restore_s:.1f} s (RTO "
              f"{res.json()['rto_s']} s), {count} documents")  # fmt: skip

        # An object a document names is gone from MinIO: the check names it.
        kb, location = moved.sql("SELECT kb_id, location FROM document ORDER BY id LIMIT 1").split()
        client.containers.run(
            MINIO_IMAGE,
            ["/bin/sh", "-c", f"rm -r /data/{kb}/{location}"],
            volumes={f"{new_name}_minio_data": {"bind": "/data", "mode": "rw"},
                     "/usr": {"bind": "/usr", "mode": "ro"}},
            remove=True,
        )  # fmt: skip
        gone = {v.subject: v for v in restore_checks(stack)}["ragflow documents"]
        assert not gone.ok and gone.message.startswith(f"1 of {count} documents"), gone
        assert f"{kb}/{location}" in gone.message
    finally:
        moved.down()
