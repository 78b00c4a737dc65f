"""`stack restore` of the Dify-shaped Compose project (`support.composeproject`) on the real
engine: back it up while the writers run, destroy everything (``down -v`` and the directory),
restore the strict cut under its own name and directory, then destroy it again and restore the
online cut (taken while the writers kept writing) under a new project name into a new
directory. Each time: both databases with their rows, Redis keys, the named volume, uploads and
the tenants' private keys with their owner, every service running, the Dify checks and the
plan's HTTP probe passing, the restore time measured.

Also: the dry run changes nothing; a restore onto an existing project is refused without
changing anything; the version guard refuses an older image (unless forced), reports a newer
one and stops on a missing one.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Result
from stackvault.errors import RestoreRefused, SourceError
from stackvault.records.stack import ServiceRecord
from stackvault.stack.restorereport import Validation
from support.composeproject import DifyLikeProject, started
from support.dockerd import DockerEngine, build_host_image

Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dify-restore")


@pytest.fixture(scope="module")
def project(
    docker_engine: DockerEngine, host_image: str, stack_dir: Path
) -> Iterator[DifyLikeProject]:
    proj = DifyLikeProject(stack_dir / "docker", docker_engine)
    with started(proj):
        yield proj


def facts(proj: DifyLikeProject) -> dict[str, Any]:
    storage = proj.directory / "volumes/app/storage"
    keys = sorted(p.relative_to(storage).as_posix() for p in storage.glob("privkeys/*/private.pem"))
    uploads = sorted(p.name for p in storage.glob("upload_files/*/*.bin"))
    return {
        "rows": int(proj.psql("SELECT count(*) FROM upload_files", db="dify")),
        "alembic": proj.psql("SELECT version_num FROM alembic_version", db="dify"),
        "plugin_db": proj.psql("SELECT count(*) FROM pg_database WHERE datname = 'dify_plugin'"),
        "keys": keys,
        "key_owner": {os.stat(storage / k).st_uid for k in keys},
        "uploads": len(uploads),
        "redis": proj.compose(
            "exec", "-T", "redis", "redis-cli", "-p", str(proj.redis_port), "DBSIZE"
        ).strip(),
        "volume": proj.compose(
            "exec", "-T", "weaviate", "cat", "/var/lib/weaviate/index.bin"
        ).strip(),
    }


def test_destroy_then_restore_same_project_and_then_a_new_one(
    cli: Cli,
    project: DifyLikeProject,
    initialised: Path,
    docker_env: str,
    tmp_path: Path,
    host_image: str,
) -> None:
    plan = tmp_path / "stackvault.yaml"
    assert cli("stack", "discover", "--project", project.name, "-o", str(plan)).code == 0
    web = f"http://127.0.0.1:{project.web_port}/"
    text = plan.read_text()
    assert text.count("probes:\n  []\n") == 1
    doc = yaml.safe_load(text)
    doc["probes"] = [{"url": web, "service": "web"}]
    plugin_dir = f"{project.directory}/volumes/plugin_daemon"
    [plugin] = [p for p in doc["paths"] if p["path"] == plugin_dir]
    plugin["exclude"] = ["cwd"]  # the plugins' virtual environments: rebuilt, not restored
    plan.write_text(json.dumps(doc))
    project.compose(
        "exec",
        "-T",
        "redis",
        "redis-cli",
        "-p",
        str(project.redis_port),
        "MSET",
        "a",
        "1",
        "b",
        "2",
    )
    res = cli(
        "stack", "backup", "--config", str(plan), "--with-images", "--tag", "release-7", "--json"
    )
    assert res.code == 0, res.err
    snap = res.json()["snapshot"]
    # The snapshot keeps the operator's tags: the image tags go to the images artifact only.
    [listed] = [s for s in cli("snapshots", "--json").json() if s["id"] == snap]
    assert sorted(listed["tags"]) == ["release-7", f"stack:{project.name}"], listed["tags"]
    image_id = res.json()["manifest"]["images"][host_image]
    # A second cut while nothing stops (the writers keep writing): restored to a new project.
    res = cli("stack", "backup", "--config", str(plan), "--consistency", "online", "--json")
    assert res.code == 0, res.err
    online = res.json()["snapshot"]
    assert res.json()["manifest"]["consistency"] == "online"
    # What the snapshot holds: the writers were stopped at the cut, so read it from the repo.
    saved = {
        a["name"]: a["metadata"]["facts"]
        for a in next(s for s in cli("snapshots", "--json").json() if s["id"] == snap)["artifacts"]
    }
    rows = saved["db"]["databases"]["dify"]["tables"]["public.upload_files"]

    # Restoring onto the running project is refused, and changes nothing.
    res = cli("stack", "restore", snap)
    assert res.code == 1 and f"Compose project {project.name} already has" in res.err, res.err

    # Destroy everything, the image too (a new host without registry access).
    project.down()
    shutil.rmtree(project.directory)
    client = project.engine.client()
    client.images.remove(host_image, force=True)  # running test containers keep its layers
    try:
        res = cli("stack", "restore", snap, "--dry-run")
        assert res.code == 0, res.err
        assert "dry run" in res.out and not project.directory.exists()
        assert f"images: load {host_image} from the snapshot" in res.out
        res = cli("stack", "restore", snap, "--json")
        assert res.code == 0, res.err + res.out
    finally:
        build_host_image(client)  # whatever happened, later tests need it
    assert client.images.get(host_image).id == image_id
    report = res.json()
    assert report["steps"][0]["name"] == "images"
    assert report["ok"] and report["rto_s"] > 0, report
    assert [s["status"] for s in report["steps"]] == ["done"] * len(report["steps"])
    got = facts(project)
    print(f"restored in {report['rto_s']} s; {got['rows']} rows")
    assert got["rows"] >= rows  # the writers run again after the restore
    assert got["alembic"] == "4f3a2b1c9d8e" and got["plugin_db"] == "1"
    assert got["keys"] == [f"privkeys/tenant-{i}/private.pem" for i in range(3)]
    assert got["key_owner"] == {1001}
    assert got["uploads"] >= rows and got["redis"] == "2" and got["volume"] == "index"
    subjects = {v["subject"]: v for v in report["validation"]}
    assert subjects["images"] == {
        "subject": "images",
        "ok": True,
        "message": f"loaded {host_image}",
    }
    assert subjects["dify tenants' private keys"]["ok"]
    assert subjects[f"probe {web}"] == {
        "subject": f"probe {web}",
        "ok": True,
        "message": "answered 200",
    }
    assert subjects["artifact db"]["message"] == "matches what was recorded"
    assert all(subjects[f"service {s}"]["ok"] for s in ("api", "db", "nginx", "web"))
    assert (project.directory / ".env").stat().st_mode & 0o777 == 0o600
    assert (project.directory / "volumes/plugin_daemon/plugin/manifest.yaml").is_file()
    assert not (project.directory / "volumes/plugin_daemon/cwd").exists()
    assert any("plugin_daemon cwd/) were not backed up" in n for n in report["notices"])

    # The online cut under a new project name in a new directory (the old one destroyed
    # again: host networking, same ports).
    project.down()
    shutil.rmtree(project.directory)
    new_dir = tmp_path / "moved" / "docker"
    report_file = tmp_path / "restore-report.json"
    res = cli(
        "stack",
        "restore",
        online,
        "--project",
        "moved",
        "--directory",
        str(new_dir),
        "--report",
        str(report_file),
        "--json",
    )
    assert res.code == 0, res.err + res.out
    assert json.loads(report_file.read_text()) == res.json()
    moved = DifyLikeProject(new_dir, project.engine, name="moved")
    moved.redis_port = project.redis_port
    try:
        got = facts(moved)
        assert got["rows"] >= rows and got["keys"] == [
            f"privkeys/tenant-{i}/private.pem" for i in range(3)
        ]
        assert got["redis"] == "2" and got["volume"] == "index"
        assert res.json()["ok"]
        vols = [v.name for v in project.engine.client().volumes.list()]
        assert "moved_weaviate_data" in vols
    finally:
        moved.down()


def test_version_guard(host_image: str, docker_env: str) -> None:
    from stackvault.sources.docker.engine import connect
    from stackvault.stack.images import version_guard

    client = connect()
    try:
        image = client.images.get(host_image)
        db = ServiceRecord(
            role="postgres",
            image=host_image,
            image_id="sha256:" + "0" * 64,
            digests=[],
            containers=[],
            state="running",
            stopped=False,
            depends_on=[],
            created="2999-01-01T00:00:00Z",
        )
        notes: list[str] = []

        def guard(force: bool) -> None:
            version_guard(client, {"db": db}, force, set(), notice=notes.append)

        with pytest.raises(RestoreRefused, match="is older than the one the data was saved with"):
            guard(force=False)
        guard(force=True)  # forced: goes on
        db.created = "2000-01-01T00:00:00Z"
        guard(force=False)
        assert any("is newer" in n for n in notes), notes
        db.image_id = image.id
        notes.clear()
        guard(force=False)
        assert notes == []
        db.image = "stackvault-test/absent:9"
        with pytest.raises(
            SourceError, match=r"image stackvault-test/absent:9 .* is not on this host"
        ):
            guard(force=False)
    finally:
        client.close()


def test_images_source_urls_and_a_missing_image(docker_env: str) -> None:
    from stackvault.errors import UsageError
    from stackvault.sources.docker.images import ImagesSource
    from stackvault.sources.registry import open_source
    from support.artifacts import MemorySink

    src = open_source("docker-images://?tags=a:1,b/c:2&name=imgs")
    assert isinstance(src, ImagesSource) and src.tags == ["a:1", "b/c:2"] and src.name == "imgs"
    with pytest.raises(UsageError, match="the engine is DOCKER_HOST"):
        open_source("docker-images://remote-host?tags=a:1")
    missing = open_source("docker-images://?tags=stackvault-test/absent:1")
    try:
        with pytest.raises(SourceError, match="image stackvault-test/absent:1 is not on the"):
            missing.capture(MemorySink())
        assert missing.probe() == {"images": {}}
    finally:
        missing.close()


def test_a_probe_waits_for_its_status_and_says_what_it_got(tmp_path: Path) -> None:
    import http.server
    import threading

    from stackvault.stack.probes import http_probe
    from support.dbservers import free_port

    (tmp_path / "up").write_text("ok")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert http_probe(f"{base}/up", 200, 1.0) == Validation(
            f"probe {base}/up", True, "answered 200"
        )
        missing = http_probe(f"{base}/nope", 200, 1.0)
        assert missing.ok is False
        assert missing.message == "answered 404, not 200, within 1 s", missing
        assert http_probe(f"{base}/nope", 404, 1.0).ok is True
    finally:
        server.shutdown()
        server.server_close()
    closed = http_probe(f"http://127.0.0.1:{free_port()}/", 200, 1.0)
    assert closed.ok is False and "refused" in closed.message, closed
