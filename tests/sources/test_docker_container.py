"""The Docker container source (``docker-container://NAME``) against a real Docker engine (the
session's private ``dockerd``): a container with a named volume, a volume nested inside it and
a read-only bind mount of a host directory (plus the host image's ``/usr`` and ``/etc``,
excluded) → capture → data removed → restore → probe equal, owners and modes back on the host;
``container.json`` with the image id and the environment's names but none of its values;
overwrite rules; cold capture; restore after the container and its volumes are gone; errors.
Runs in about 20 s (engine start included).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.contract import (
    ArtifactRestoreOptions,
    EntryMeta,
    Readable,
    StoredFile,
    compare_facts,
)
from stackvault.sources.docker.container import ContainerSource
from stackvault.sources.docker.containerinfo import mount_key
from stackvault.sources.registry import open_source
from support.artifacts import MemorySink
from support.dockerd import run_oneshot, run_service_container

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

pytestmark = pytest.mark.usefixtures("docker_env")

SECRET = "pg-Secret-Value-93f1c7"
SLEEPER = "trap 'exit 0' TERM; while :; do sleep 0.1; done"
DATA_SCRIPT = r"""
set -eu
mkdir -p /data/pg/base/1 /data/pg/pg_wal
i=1
while [ $i -le 50 ]; do head -c 8192 /dev/urandom > /data/pg/base/1/$i; i=$((i+1)); done
head -c 1048576 /dev/urandom > /data/pg/pg_wal/000000010000000000000001
echo 15 > /data/pg/PG_VERSION
ln /data/pg/PG_VERSION /data/pg/PG_VERSION.hard
ln -s pg_wal /data/pg/wal-link
chown -R 999:999 /data/pg
chmod 0700 /data/pg
chmod 0600 /data/pg/PG_VERSION
echo cached > /data/cache/blob
chown 1001:1001 /data/cache /data/cache/blob
"""


def unique(prefix: str) -> str:
    return f"sv-{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def app(docker_client: DockerClient, host_image: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A running container ``name`` with volume ``/data``, volume ``/data/cache`` nested in
    it, and host dir ``conf`` bind-mounted read-only at ``/conf``; removed afterwards."""
    name = unique("app")
    data, cache = unique("data"), unique("cache")
    conf = tmp_path / "conf"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "app.ini").write_text("[server]\nport = 8080\n")
    (conf / "conf.d" / "tls.ini").write_text("[tls]\nciphers = modern\n")
    os.chown(conf / "app.ini", 1001, 1001)
    os.chmod(conf / "app.ini", 0o640)
    os.symlink("../app.ini", conf / "conf.d" / "main.ini")
    for vol in (data, cache):
        docker_client.volumes.create(vol)
    run_oneshot(
        docker_client,
        host_image,
        ["sh", "-c", DATA_SCRIPT],
        user="0:0",
        volumes={
            data: {"bind": "/data", "mode": "rw"},
            cache: {"bind": "/data/cache", "mode": "rw"},
        },
    )
    container = run_service_container(
        docker_client,
        host_image,
        name,
        ["sh", "-c", SLEEPER],
        user="0:0",
        volumes={
            data: {"bind": "/data", "mode": "rw"},
            cache: {"bind": "/data/cache", "mode": "rw"},
            str(conf): {"bind": "/conf", "mode": "ro"},
        },
        environment={"POSTGRES_PASSWORD": SECRET, "APP_MODE": "production"},
        labels={"com.example.role": "database"},
    )
    yield {"name": name, "container": container, "data": data, "cache": cache, "conf": conf}
    import docker.errors

    try:
        docker_client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass
    for vol in (data, cache):
        try:
            docker_client.volumes.get(vol).remove(force=True)
        except docker.errors.NotFound:
            pass


def url(name: str, extra: str = "") -> str:
    return f"docker-container://{name}?exclude=/usr,/etc{extra}"


def capture(address: str, sink: MemorySink | None = None) -> tuple[dict[str, Any], MemorySink]:
    sink = sink or MemorySink()
    source = open_source(address)
    try:
        return source.capture(sink), sink
    finally:
        source.close()


def wipe(client: DockerClient, image: str, app: dict[str, Any]) -> None:
    """Remove every file of the container's data (volumes and bind dir), keep the mounts: the
    nested volume is mounted as in the container, so its mount point stays in the outer one."""
    run_oneshot(
        client,
        image,
        ["sh", "-c", "rm -rf /a/pg /a/cache/* && ls -A /a /a/cache"],
        user="0:0",
        volumes={
            app["data"]: {"bind": "/a", "mode": "rw"},
            app["cache"]: {"bind": "/a/cache", "mode": "rw"},
        },
    )
    for child in app["conf"].iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def started_at(container: Container) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def test_capture_wipe_restore_probe(
    docker_client: DockerClient, host_image: str, app: dict[str, Any]
) -> None:
    container: Container = app["container"]
    meta, sink = capture(url(app["name"]))
    mounts = meta["facts"]["mounts"]
    assert sorted(mounts) == ["/conf", "/data", "/data/cache"]
    assert mounts["/data"]["files"] == 53  # 50 pages, the WAL segment, PG_VERSION + link
    assert mounts["/data"]["hardlinks"] == 1 and mounts["/data"]["symlinks"] == 1
    assert not any(p.startswith("cache") for p in mounts["/data"]["sha256"])  # nested: own
    assert mounts["/data/cache"]["root"] == {"mode": "0755", "uid": 1001, "gid": 1001}
    assert mounts["/conf"]["files"] == 2 and mounts["/conf"]["symlinks"] == 1
    assert sink.entries["mounts/data/pg"].meta.mode == 0o700
    assert sink.entries["mounts/data/pg"].meta.uid == 999
    assert sink.entries["mounts/conf/conf.d/main.ini"].target == "../app.ini"
    assert any("/usr" in n and "excluded" in n for n in sink.notices)

    described = json.loads(sink.data["container.json"])
    container.reload()
    assert described["image_id"] == container.attrs["Image"]
    assert described["image"] == host_image
    assert {"POSTGRES_PASSWORD", "APP_MODE", "PATH"} <= set(described["config"]["env_names"])
    assert described["config"]["labels"]["com.example.role"] == "database"
    assert described["host_config"]["network_mode"] == "host"
    by_dest = {m["destination"]: m for m in described["mounts"]}
    assert by_dest["/data"]["name"] == app["data"] and by_dest["/data"]["captured"]
    assert by_dest["/conf"]["source"] == str(app["conf"]) and by_dest["/conf"]["rw"] is False
    assert by_dest["/usr"]["captured"] is False and by_dest["/usr"]["reason"] == "excluded"
    for text in (sink.data["container.json"].decode(), json.dumps(meta)):
        assert SECRET not in text and "production" not in text

    before = started_at(container)
    wipe(docker_client, host_image, app)
    source = open_source(url(app["name"]))
    notices: list[str] = []
    try:
        assert source.describe_target() is None
        result = source.restore(
            sink.reader("c", "docker-container", meta),
            ArtifactRestoreOptions(notice=notices.append),
        )
        assert [m["destination"] for m in result["mounts"]] == ["/conf", "/data", "/data/cache"]
        assert result["mounts"][1]["target"] == f"volume {app['data']}"
        assert result["mounts"][0]["target"] == f"bind mount {app['conf']}"
        assert [s["container"] for s in result["stopped"]] == [app["name"]]
        assert compare_facts(meta["facts"], source.probe()) == []
    finally:
        source.close()
    container.reload()
    assert container.status == "running" and started_at(container) != before  # stopped for it
    ini = app["conf"] / "app.ini"
    st = ini.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1001, 1001, 0o640)
    assert ini.read_text() == "[server]\nport = 8080\n"
    assert os.readlink(app["conf"] / "conf.d" / "main.ini") == "../app.ini"


def test_restore_refuses_non_empty_mounts_unless_overwrite(
    docker_client: DockerClient, host_image: str, app: dict[str, Any]
) -> None:
    meta, sink = capture(url(app["name"]))
    reader = sink.reader("c", "docker-container", meta)
    (app["conf"] / "added-later.ini").write_text("x\n")
    run_oneshot(
        docker_client,
        host_image,
        ["sh", "-c", "echo new > /a/pg/new-table"],
        user="0:0",
        volumes={app["data"]: {"bind": "/a", "mode": "rw"}},
    )
    source = open_source(url(app["name"]))
    try:
        described = source.describe_target() or ""
        assert described.startswith(f"container {app['name']}: /conf: bind mount {app['conf']}")
        with pytest.raises(RestoreRefused, match=r"\(mount /conf of container .*nothing was"):
            source.restore(reader, ArtifactRestoreOptions())
        assert (app["conf"] / "added-later.ini").exists()
        result = source.restore(reader, ArtifactRestoreOptions(overwrite=True))
        assert all(m["emptied"] for m in result["mounts"])
        assert not (app["conf"] / "added-later.ini").exists()
        assert compare_facts(meta["facts"], source.probe()) == []
    finally:
        source.close()
    app["container"].reload()
    assert app["container"].status == "running"


def test_restore_refuses_a_mount_another_running_container_uses(
    docker_client: DockerClient, host_image: str, app: dict[str, Any]
) -> None:
    meta, sink = capture(url(app["name"]))
    other = run_service_container(
        docker_client,
        host_image,
        unique("other"),
        ["sh", "-c", SLEEPER],
        user="0:0",
        volumes={app["cache"]: {"bind": "/c", "mode": "rw"}},
    )
    try:
        source = open_source(url(app["name"]))
        with pytest.raises(
            RestoreRefused, match=rf"also used by running container\(s\) {other.name}"
        ):
            source.restore(
                sink.reader("c", "docker-container", meta), ArtifactRestoreOptions(overwrite=True)
            )
        source.close()
    finally:
        other.remove(force=True)


class WatchingSink(MemorySink):
    def __init__(self, on_file: Callable[[], None]) -> None:
        super().__init__()
        self.on_file = on_file

    def add_file(self, path: str, stream: Readable, meta: EntryMeta | None = None) -> StoredFile:
        if path.startswith("mounts/"):
            self.on_file()
        return super().add_file(path, stream, meta)


def test_cold_capture_stops_the_container(app: dict[str, Any]) -> None:
    container: Container = app["container"]
    before = started_at(container)
    states: set[str] = set()

    def look() -> None:
        container.reload()
        states.add(container.status)

    meta, _sink = capture(url(app["name"], "&mode=cold&stop-timeout=5"), WatchingSink(look))
    assert states == {"exited"}
    assert meta["consistency"] == "cold"
    (stopped,) = meta["stopped"]
    assert stopped["container"] == app["name"] and stopped["downtime_s"] > 0
    container.reload()
    assert container.status == "running" and started_at(container) != before


def test_restore_after_the_container_and_its_volumes_are_gone(
    docker_client: DockerClient, host_image: str, app: dict[str, Any]
) -> None:
    meta, sink = capture(url(app["name"]))
    app["container"].remove(force=True)
    for vol in (app["data"], app["cache"]):
        docker_client.volumes.get(vol).remove()
    wipe_conf = app["conf"]
    shutil.rmtree(wipe_conf / "conf.d")
    (wipe_conf / "app.ini").unlink()

    source = open_source(url(app["name"]))
    notices: list[str] = []
    try:
        assert source.describe_target() is None
        result = source.restore(
            sink.reader("c", "docker-container", meta),
            ArtifactRestoreOptions(notice=notices.append),
        )
        assert result["container_exists"] is False
        assert [m["created"] for m in result["mounts"]] == [False, True, True]
        assert any("does not exist" in n and "not recreated" in n for n in notices)
        assert compare_facts(meta["facts"], source.probe()) == []
    finally:
        source.close()
    assert {app["data"], app["cache"]} <= {v.name for v in docker_client.volumes.list()}
    assert (wipe_conf / "app.ini").read_text() == "[server]\nport = 8080\n"


def test_restore_into_a_container_without_the_mount(
    docker_client: DockerClient, host_image: str, app: dict[str, Any]
) -> None:
    meta, sink = capture(url(app["name"]))
    bare = run_service_container(
        docker_client, host_image, unique("bare"), ["sh", "-c", SLEEPER], user="0:0"
    )
    try:
        source = open_source(url(str(bare.name)))
        with pytest.raises(SourceError, match=r"has no mount at /conf, /data, /data/cache"):
            source.restore(sink.reader("c", "docker-container", meta), ArtifactRestoreOptions())
        source.close()
    finally:
        bare.remove(force=True)


def test_missing_container_and_unreachable_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = unique("none")
    source = open_source(f"docker-container://{name}")
    with pytest.raises(SourceError, match=rf"there is no container '{name}' at the Docker engine"):
        source.capture(MemorySink())
    with pytest.raises(SourceError, match="there is no container"):
        source.probe()
    source.close()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'dead.sock'}")
    source = open_source(f"docker-container://{name}")
    with pytest.raises(SourceError, match="cannot reach the Docker engine at unix://"):
        source.capture(MemorySink())


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("docker-container://app?exclude=usr", "as absolute paths"),
        ("docker-container://app?mode=frozen", "must be hot or cold"),
        ("docker-container://app?volumes=all", "unknown option"),
    ],
)
def test_bad_urls(address: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        open_source(address)


def test_mount_keys() -> None:
    taken: set[str] = set()
    assert mount_key("/var/lib/postgresql/data", taken) == "var_lib_postgresql_data"
    assert mount_key("/var/lib_postgresql/data", taken) == "var_lib_postgresql_data~2"
    assert mount_key("/srv/my files", taken) == "srv_my-files"
    source = open_source("docker-container://Web_1")
    assert isinstance(source, ContainerSource)
    assert (source.container_name, source.name) == ("Web_1", "container-Web_1")
