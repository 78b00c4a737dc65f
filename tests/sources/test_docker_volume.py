"""The Docker volume source (``docker-volume://NAME``) against a real Docker engine (the
session's private ``dockerd``, containers from the host image): capture of a realistic volume
(owners, modes, setgid, symlinks of every kind, a hard link, empty, big and unicode files, a
fifo) → restore into a new volume → probe equal and the same ``find`` listing inside a
container; overwrite rules; hot capture of a volume being written; cold capture stopping and
always restarting the containers that use it (after success, a failing sink, Ctrl-C, and a
container that cannot be stopped); truncated and malformed archive streams; clear errors for a
missing volume, an unreachable engine and bad URLs. Runs in about 40 s (engine start included).

The unstoppable container is real: its runtime (``containerd-shim``) is frozen with SIGSTOP,
so the engine cannot deliver the stop (nor SIGKILL) — what a wedged runtime or a process in
uninterruptible sleep looks like. A paused container or a frozen cgroup does not do it: the
engine stops those normally (tried).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stackvault.engine.capture import CAPTURE_TRIES
from stackvault.errors import RestoreRefused, SourceChanged, SourceError, UsageError
from stackvault.sources.contract import (
    ArtifactEntry,
    ArtifactRestoreOptions,
    EntryMeta,
    Readable,
    StoredFile,
    compare_facts,
)
from stackvault.sources.docker.mounts import HELPER_LABEL, MOUNT
from stackvault.sources.docker.tarreader import read_tree
from stackvault.sources.docker.volume import VolumeSource
from stackvault.sources.registry import open_source
from support.artifacts import MemorySink
from support.dockerd import run_oneshot, run_service_container

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

pytestmark = pytest.mark.usefixtures("docker_env")

MiB = 1 << 20

# A volume as an application leaves it: a root owned by the service (0700, like a database's
# data directory), config files of another user, a setgid shared directory, a 3 MiB binary,
# 200 small files five levels deep, symlinks (relative, absolute to the outside, escaping
# with .., dangling), a hard link, empty files, a unicode name and a fifo (not captured).
POPULATE = r"""
set -eu
cd /v
mkdir -p app/config app/logs shared 'deep/a/b/c/d'
printf 'db_host=127.0.0.1\nport=5432\n' > app/config/app.conf
chmod 0600 app/config/app.conf
chown 1001:1001 app/config/app.conf
ln app/config/app.conf app/config/hard.conf
: > app/logs/empty.log
chown 999:999 app/logs/empty.log
chmod 0640 app/logs/empty.log
printf '#!/bin/sh\necho hi\n' > app/run.sh
chmod 0755 app/run.sh
head -c 3145728 /dev/urandom > app/blob.bin
chown 999:999 app/blob.bin
chown 1001:999 shared
chmod 2775 shared
: > shared/empty
i=1
while [ $i -le 200 ]; do echo "row $i" > deep/a/b/c/d/f$i.txt; i=$((i+1)); done
printf 'gr\303\266\303\237e\n' > 'Ünïcödé 日本.txt'
ln -s app/config/app.conf cfg-link
ln -s /etc/passwd abs-link
ln -s ../../../../../etc/shadow deep/a/b/escape
ln -s no-such-file dangling
mkfifo app/pipe
touch -d @1600000000 app/config/app.conf app/run.sh
touch -h -d @1500000000 cfg-link
touch -d @1400000000 deep/a/b/c
chown 999:999 /v
chmod 0700 /v
"""

LISTING = ["find", "/v", "-printf", r"%P\t%y\t%m\t%U\t%G\t%n\t%l\t%T@\n"]


def unique(prefix: str) -> str:
    return f"sv-{prefix}-{secrets.token_hex(4)}"


def listing(client: DockerClient, image: str, volume: str) -> dict[str, tuple[str, ...]]:
    """``find`` inside a container: path → (type, mode, uid, gid, links, target, mtime s)."""
    out = run_oneshot(
        client, image, LISTING, user="0:0", volumes={volume: {"bind": "/v", "mode": "ro"}}
    )
    rows: dict[str, tuple[str, ...]] = {}
    for line in out.splitlines():
        path, kind, mode, uid, gid, links, target, mtime = line.split("\t")
        rows[path] = (kind, mode, uid, gid, links, target, mtime.split(".")[0])
    return rows


def populate(client: DockerClient, image: str, volume: str, script: str = POPULATE) -> None:
    run_oneshot(
        client,
        image,
        ["sh", "-c", script],
        user="0:0",
        volumes={volume: {"bind": "/v", "mode": "rw"}},
    )


def remove_volume(client: DockerClient, name: str) -> None:
    import docker.errors

    try:
        client.volumes.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


@pytest.fixture
def volumes(docker_client: DockerClient) -> Iterator[Callable[[str], str]]:
    """Make uniquely named volumes; removed after the test."""
    made: list[str] = []

    def make(prefix: str) -> str:
        name = unique(prefix)
        docker_client.volumes.create(name)
        made.append(name)
        return name

    yield make
    for name in made:
        for c in docker_client.containers.list(all=True, filters={"volume": name}):
            c.remove(force=True)
        remove_volume(docker_client, name)


@pytest.fixture(scope="module")
def app_volume(docker_client: DockerClient, host_image: str) -> Iterator[str]:
    """The realistic volume of `POPULATE` (read-only for the tests that use it)."""
    name = unique("app")
    docker_client.volumes.create(name)
    populate(docker_client, host_image, name)
    yield name
    remove_volume(docker_client, name)


def serve(
    client: DockerClient, image: str, volume: str, script: str, name: str | None = None
) -> Container:
    """A running container using ``volume`` at /v (host networking, as root)."""
    return run_service_container(
        client,
        image,
        name or unique("svc"),
        ["sh", "-c", script],
        user="0:0",
        volumes={volume: {"bind": "/v", "mode": "rw"}},
    )


SLEEPER = "trap 'exit 0' TERM; while :; do sleep 0.1; done"


def started_at(container: Container) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def capture(url: str, sink: MemorySink | None = None) -> tuple[dict[str, Any], MemorySink]:
    sink = sink or MemorySink()
    source = open_source(url)
    try:
        return source.capture(sink), sink
    finally:
        source.close()


# --- round trip ---------------------------------------------------------------------------------


def test_capture_restore_probe_round_trip(
    docker_client: DockerClient, host_image: str, app_volume: str, volumes: Callable[[str], str]
) -> None:
    before = listing(docker_client, host_image, app_volume)
    meta, sink = capture(f"docker-volume://{app_volume}")

    facts = meta["facts"]
    assert facts["root"] == {"mode": "0700", "uid": 999, "gid": 999}
    assert facts["files"] == 207  # 200 rows, app.conf + hard link, run.sh, blob, 2 empty, 1 unicode
    assert facts["files"] == sum(1 for _p, r in before.items() if r[0] == "f")
    assert facts["hardlinks"] == 1
    assert facts["symlinks"] == 4
    assert facts["dirs"] == sum(1 for p, r in before.items() if r[0] == "d" and p)
    assert facts["bytes"] > 3 * MiB
    assert facts["sha256"]["app/config/hard.conf"] == facts["sha256"]["app/config/app.conf"]
    assert meta["hardlinks"] == {"app/config/hard.conf": "app/config/app.conf"}
    assert meta["consistency"] == "hot" and meta["stopped"] == []
    assert meta["skipped"] == ["app/pipe (fifo)"]
    assert not any("captured hot" in n for n in sink.notices), "no container uses it"
    assert any("app/pipe" in n and "fifo" in n for n in sink.notices)

    # what the sink got: the root's metadata on "data", owners, modes, links as they are
    e = sink.entries
    assert e["data"].kind == "dir" and (e["data"].meta.mode, e["data"].meta.uid) == (0o700, 999)
    assert e["data/shared"].meta == EntryMeta(0o2775, 1001, 999, e["data/shared"].meta.mtime_ns)
    conf = e["data/app/config/app.conf"]
    assert (conf.meta.mode, conf.meta.uid, conf.meta.gid) == (0o600, 1001, 1001)
    assert conf.meta.mtime_ns == 1_600_000_000 * 10**9
    assert e["data/cfg-link"].target == "app/config/app.conf"
    assert e["data/cfg-link"].meta.mtime_ns == 1_500_000_000 * 10**9
    assert e["data/abs-link"].target == "/etc/passwd"
    assert e["data/deep/a/b/escape"].target == "../../../../../etc/shadow"
    assert e["data/dangling"].kind == "symlink"
    assert sink.data["data/Ünïcödé 日本.txt"] == "größe\n".encode()
    assert len(sink.data["data/app/blob.bin"]) == 3 * MiB
    assert "data/app/pipe" not in e

    # restore into a new volume: described as nothing to replace, then equal
    target = unique("restored")
    source = open_source(f"docker-volume://{target}")
    try:
        assert source.describe_target() is None
        result = source.restore(sink.reader("v", "docker-volume", meta), ArtifactRestoreOptions())
        assert result["created"] is True and result["files"] == 207
        assert compare_facts(facts, source.probe()) == []
        assert source.describe_target() == f"volume {target} holds {len(before) - 2} entries"
        after = listing(docker_client, host_image, target)
        expected = {p: r for p, r in before.items() if r[0] != "p"}  # the fifo is not captured
        assert after == expected
    finally:
        source.close()
        remove_volume(docker_client, target)


def test_restore_over_a_removed_volume_and_with_overwrite(
    docker_client: DockerClient, host_image: str, volumes: Callable[[str], str]
) -> None:
    name = volumes("data")
    populate(docker_client, host_image, name)
    recorded = listing(docker_client, host_image, name)
    meta, sink = capture(f"docker-volume://{name}")
    reader = sink.reader("v", "docker-volume", meta)

    # the volume is lost: restore creates it again
    remove_volume(docker_client, name)
    source = open_source(f"docker-volume://{name}")
    assert isinstance(source, VolumeSource)
    try:
        assert source.describe_target() is None
        assert source.restore(reader, ArtifactRestoreOptions())["created"] is True
        assert compare_facts(meta["facts"], source.probe()) == []

        # now it holds data: refused without overwrite, nothing changed
        populate(docker_client, host_image, name, "echo extra > /v/extra.txt")
        held = len(recorded) - 2 + 1  # without the root and the fifo, with extra.txt
        assert source.describe_target() == f"volume {name} holds {held} entries"
        with pytest.raises(RestoreRefused, match=rf"volume {name} holds {held} entries"):
            source.restore(reader, ArtifactRestoreOptions())
        assert "extra.txt" in listing(docker_client, host_image, name)

        # overwrite, no container uses it: removed, created again, restored
        result = source.restore(reader, ArtifactRestoreOptions(overwrite=True))
        assert result["emptied"] is True
        assert compare_facts(meta["facts"], source.probe()) == []

        # overwrite while a *stopped* container uses it: emptied in a helper from its image
        populate(docker_client, host_image, name, "echo extra > /v/extra.txt")
        user = serve(docker_client, host_image, name, SLEEPER)
        user.stop(timeout=5)
        result = source.restore(reader, ArtifactRestoreOptions(overwrite=True))
        assert result["emptied"] is True
        assert compare_facts(meta["facts"], source.probe()) == []
        after = listing(docker_client, host_image, name)
        assert after == {p: r for p, r in recorded.items() if r[0] != "p"}
        # every helper (the emptying one, those that wrote and read the volume) is removed
        helpers = docker_client.containers.list(all=True, filters={"label": HELPER_LABEL})
        assert helpers == []

        # a running container uses it: refused, whatever the options
        user.start()
        with pytest.raises(RestoreRefused, match=rf"used by running container\(s\) {user.name}"):
            source.restore(reader, ArtifactRestoreOptions(overwrite=True))
    finally:
        source.close()


def test_restore_stops_at_content_that_does_not_match_its_record(
    docker_client: DockerClient, app_volume: str
) -> None:
    meta, sink = capture(f"docker-volume://{app_volume}")
    blob = sink.data["data/app/blob.bin"]
    sink.data["data/app/blob.bin"] = blob[:-1] + bytes([blob[-1] ^ 1])  # same size, 1 bit off
    target = unique("damaged")
    source = open_source(f"docker-volume://{target}")
    try:
        with pytest.raises(SourceError) as caught:
            source.restore(sink.reader("v", "docker-volume", meta), ArtifactRestoreOptions())
        message = str(caught.value)
        assert "'data/app/blob.bin' of artifact 'v' read back with another SHA-256" in message
        assert f"volume {target} now holds part of the artifact" in message
        assert source.describe_target() is not None  # partial: a new restore needs overwrite
    finally:
        source.close()
        remove_volume(docker_client, target)


def test_restore_refuses_unsafe_entry_paths(
    docker_client: DockerClient, volumes: Callable[[str], str]
) -> None:
    name = volumes("small")
    meta, sink = capture(f"docker-volume://{name}")
    # an artifact whose tree was tampered with (MemorySink would refuse to make it)
    sink.entries["data/../../etc/cron.d/x"] = ArtifactEntry("data/../../etc/cron.d/x", "file")
    sink.data["data/../../etc/cron.d/x"] = b""
    target = unique("unsafe")
    source = open_source(f"docker-volume://{target}")
    try:
        with pytest.raises(RestoreRefused, match="unsafe path"):
            source.restore(sink.reader("v", "docker-volume", meta), ArtifactRestoreOptions())
    finally:
        source.close()
    assert target not in [v.name for v in docker_client.volumes.list()]  # nothing was created


# --- hot and cold -------------------------------------------------------------------------------


def test_hot_capture_while_a_container_writes(
    docker_client: DockerClient, host_image: str, volumes: Callable[[str], str]
) -> None:
    name = volumes("busy")
    writer = serve(
        docker_client,
        host_image,
        name,
        "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo line $i >> /v/log;"
        " echo $i > /v/n.$((i % 50)); [ $((i % 100)) -eq 0 ] && sleep 0.01; done",
    )
    time.sleep(0.5)
    changed = 0
    for _ in range(3):
        # A file rewritten while the engine archives it cuts the stream short: the capture
        # says so with `SourceChanged`, which the backup engine takes again (up to
        # CAPTURE_TRIES in all); this loop does the same.
        for attempt in range(1, CAPTURE_TRIES + 1):
            try:
                meta, sink = capture(f"docker-volume://{name}")
                break
            except SourceChanged as exc:
                assert "may have shrunk while it was read" in str(exc), exc
                assert attempt < CAPTURE_TRIES, exc
                changed += 1
        assert meta["consistency"] == "hot"
        assert any(f"captured hot while {writer.name} use" in n for n in sink.notices)
        assert sink.data["data/log"].startswith(b"line 1\nline 2\n")
        assert meta["facts"]["files"] >= 2
    print(f"{changed} capture(s) taken again after a file changed under them")
    writer.reload()
    assert writer.status == "running"  # nothing was stopped
    assert started_at(writer) == writer.attrs["State"]["StartedAt"]


class ProbingSink(MemorySink):
    """A sink that runs ``on_file`` before it stores the n-th file (to look at or fail the
    capture from inside it)."""

    def __init__(self, on_file: Callable[[int, str], None]) -> None:
        super().__init__()
        self.on_file = on_file
        self.count = 0

    def add_file(self, path: str, stream: Readable, meta: EntryMeta | None = None) -> StoredFile:
        self.count += 1
        self.on_file(self.count, path)
        return super().add_file(path, stream, meta)


def test_cold_capture_stops_users_and_starts_them_again(
    docker_client: DockerClient, host_image: str, volumes: Callable[[str], str]
) -> None:
    name = volumes("cold")
    populate(docker_client, host_image, name, "echo a > /v/a; echo b > /v/b")
    first = serve(docker_client, host_image, name, SLEEPER, unique("c1"))
    second = serve(docker_client, host_image, name, SLEEPER, unique("c2"))
    idle = serve(docker_client, host_image, name, SLEEPER, unique("c3"))
    idle.stop(timeout=5)  # a stopped user stays stopped
    before = {c.name: started_at(c) for c in (first, second)}
    seen: list[tuple[str, str]] = []

    def look(_n: int, _path: str) -> None:
        for c in (first, second):
            c.reload()
            seen.append((c.name, c.status))

    meta, sink = capture(f"docker-volume://{name}?mode=cold&stop-timeout=5", ProbingSink(look))
    assert seen and all(status == "exited" for _n, status in seen)  # stopped while read
    for c in (first, second):
        c.reload()
        assert c.status == "running"
        assert started_at(c) != before[c.name]  # really stopped and started again
    idle.reload()
    assert idle.status == "exited"
    assert meta["consistency"] == "cold"
    stopped = {s["container"]: s for s in meta["stopped"]}
    assert set(stopped) == {first.name, second.name}
    assert all(s["downtime_s"] >= s["stop_s"] > 0 for s in stopped.values())
    assert sorted(meta["used_by"]) == sorted([first.name, second.name, idle.name])
    assert sink.data["data/a"] == b"a\n"


@pytest.mark.parametrize("failure", ["error", "ctrl-c"])
def test_cold_capture_starts_users_again_after_a_failure(
    docker_client: DockerClient, host_image: str, volumes: Callable[[str], str], failure: str
) -> None:
    name = volumes("fail")
    populate(docker_client, host_image, name, "for i in 1 2 3 4 5; do echo $i > /v/f$i; done")
    user = serve(docker_client, host_image, name, SLEEPER)
    before = started_at(user)
    states: list[str] = []

    def fail(n: int, _path: str) -> None:
        user.reload()
        states.append(user.status)
        if n == 3:
            if failure == "error":
                raise SourceError("the repository is full")
            raise KeyboardInterrupt

    expected: type[BaseException] = SourceError if failure == "error" else KeyboardInterrupt
    with pytest.raises(expected):
        capture(f"docker-volume://{name}?mode=cold", ProbingSink(fail))
    assert states == ["exited"] * 3
    user.reload()
    assert user.status == "running"
    assert started_at(user) != before


def test_cold_capture_kills_a_container_that_ignores_sigterm(
    docker_client: DockerClient, host_image: str, volumes: Callable[[str], str]
) -> None:
    name = volumes("stubborn")
    user = serve(docker_client, host_image, name, "trap '' TERM; while :; do sleep 0.1; done")
    meta, _sink = capture(f"docker-volume://{name}?mode=cold&stop-timeout=1")
    (record,) = meta["stopped"]
    assert record["stop_s"] >= 1.0  # the engine waited the stop timeout, then killed it
    user.reload()
    assert user.status == "running"


def test_ctrl_c_while_a_container_is_being_stopped(
    docker_client: DockerClient, host_image: str, volumes: Callable[[str], str]
) -> None:
    """SIGINT arrives while the engine is still stopping the container (it ignores SIGTERM,
    so the engine waits the stop timeout): the engine goes on stopping it after the client
    gave up, so the quiesce waits for that and starts it again."""
    name = volumes("ctrlc")
    user = serve(docker_client, host_image, name, "trap '' TERM; while :; do sleep 0.1; done")
    before = started_at(user)
    timer = threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            capture(f"docker-volume://{name}?mode=cold&stop-timeout=2")
    finally:
        timer.cancel()
    user.reload()
    assert user.status == "running"
    assert started_at(user) != before


def _shim_pid(container: Container) -> int:
    """The pid of the ``containerd-shim`` that runs ``container`` (a process of this host)."""
    container.reload()
    pid = int(container.attrs["State"]["Pid"])
    stat = Path(f"/proc/{pid}/stat").read_text()
    ppid = int(stat.rsplit(")", 1)[1].split()[1])
    comm = Path(f"/proc/{ppid}/comm").read_text().strip()
    assert comm.startswith("containerd-shim"), comm
    return ppid


def test_a_container_that_cannot_be_stopped_aborts_the_capture(
    docker_client: DockerClient, host_image: str, volumes: Callable[[str], str]
) -> None:
    name = volumes("wedged")
    tag = unique("w")
    fine = serve(docker_client, host_image, name, SLEEPER, f"{tag}-a")  # stopped first
    wedged = serve(docker_client, host_image, name, SLEEPER, f"{tag}-b")
    before = started_at(fine)
    shim = _shim_pid(wedged)
    os.kill(shim, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(SourceError) as caught:
            capture(f"docker-volume://{name}?mode=cold&stop-timeout=1&stop-grace=2")
        elapsed = time.monotonic() - t0
        message = str(caught.value)
        assert message.startswith(
            f"container {wedged.name} did not stop within 1 s plus 2 s for the engine; "
            "the capture was aborted"
        )
        # its start was tried too, and failed: reported in the same message
        assert f"could not be started again: {wedged.name}" in message
        assert elapsed < 15
        fine.reload()
        assert fine.status == "running"
        assert started_at(fine) != before  # it was stopped, and started again
    finally:
        os.kill(shim, signal.SIGCONT)
    # once its runtime runs again, the engine completes the stop it had accepted: the
    # container ends stopped, as the message said (it "could not be started again")
    deadline = time.monotonic() + 20
    while wedged.status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        wedged.reload()
    assert wedged.status == "exited"


def test_cold_capture_refuses_a_paused_user(
    docker_client: DockerClient, host_image: str, volumes: Callable[[str], str]
) -> None:
    name = volumes("paused")
    user = serve(docker_client, host_image, name, SLEEPER)
    user.pause()
    try:
        with pytest.raises(SourceError, match=rf"{user.name} using volume {name} are paused"):
            capture(f"docker-volume://{name}?mode=cold")
    finally:
        user.unpause()


# --- streams ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_archive(docker_client: DockerClient, app_volume: str, host_image: str) -> bytes:
    """The engine's archive of the app volume, as it sends it."""
    from docker.types import Mount

    helper = docker_client.containers.create(
        host_image,
        ["true"],
        mounts=[Mount(MOUNT, app_volume, type="volume", read_only=True, no_copy=True)],
        network_mode="none",
    )
    try:
        chunks, _stat = helper.get_archive(MOUNT)
        return b"".join(chunks)
    finally:
        helper.remove(force=True)


def _boundaries(data: bytes) -> list[tuple[str, int, int]]:
    """(name, header offset, end of padded data) of each member."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            end = m.offset_data + (m.size + 511) // 512 * 512
            out.append((m.name, m.offset, end))
    return out


def _read(data: bytes, chunk: int = 70_000) -> dict[str, Any]:
    chunks = (data[i : i + chunk] for i in range(0, len(data), chunk))
    return read_tree(chunks, what="volume x", sink=MemorySink(), prefix="data").facts.as_dict()


def test_truncated_or_malformed_streams_raise(real_archive: bytes, app_volume: str) -> None:
    whole = _read(real_archive)
    meta, _sink = capture(f"docker-volume://{app_volume}")
    assert whole == meta["facts"]  # the reference parse agrees with the capture

    members = _boundaries(real_archive)
    blob = next(m for m in members if m[0].endswith("app/blob.bin"))
    last = members[-1]
    cuts = {
        "inside a file": blob[1] + 512 + MiB,
        "inside a header": blob[1] + 100,
        "at a member boundary": blob[2],
        "after the last member": last[2],
        "inside the end blocks": last[2] + 512,
    }
    for where, cut in cuts.items():
        with pytest.raises(SourceError, match=r"volume x") as caught:
            _read(real_archive[:cut])
        assert "ended" in str(caught.value) or "truncated" in str(caught.value), where

    damaged = bytearray(real_archive)
    damaged[blob[2] : blob[2] + 512] = b"\xff" * 512  # the header after the blob
    with pytest.raises(SourceError, match="malformed"):
        _read(bytes(damaged))
    with pytest.raises(SourceError, match="empty"):
        _read(b"")
    with pytest.raises(SourceError):
        _read(b"not a tar archive at all" * 100)

    def broken() -> Iterator[bytes]:
        yield real_archive[:MiB]
        raise ConnectionResetError("connection reset by peer")

    with pytest.raises(SourceError, match=r"broke after \d+ bytes \(connection reset"):
        read_tree(broken(), what="volume x", sink=MemorySink(), prefix="data")


# --- errors ---------------------------------------------------------------------------------


def test_missing_volume(docker_env: str) -> None:
    name = unique("missing")
    source = open_source(f"docker-volume://{name}")
    try:
        with pytest.raises(SourceError, match=rf"there is no volume '{name}' at the Docker engine"):
            source.capture(MemorySink())
        with pytest.raises(SourceError, match="there is no volume"):
            source.probe()
    finally:
        source.close()


def test_unreachable_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dead = tmp_path / "dead.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{dead}")
    source = open_source("docker-volume://anything")
    with pytest.raises(SourceError, match=rf"cannot reach the Docker engine at unix://{dead}"):
        source.capture(MemorySink())


def test_missing_helper_image(volumes: Callable[[str], str]) -> None:
    name = volumes("img")
    with pytest.raises(SourceError, match="helper image 'no-such/image:1' is not present"):
        capture(f"docker-volume://{name}?helper-image=no-such/image:1")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("docker-volume://data?mode=warm", "must be hot or cold"),
        ("docker-volume://data?stop-timeout=-1", "must be a number"),
        ("docker-volume://data?verbose=1", "unknown option"),
        ("docker-volume://bad%2Fname", "does not name a volume"),
        ("docker-volume://data/extra", "has a path"),
        ("docker-volume://", "does not name a volume"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        open_source(url)


def test_name_keeps_its_case() -> None:
    source = open_source("docker-volume://MyData_1.x?name=vol")
    assert isinstance(source, VolumeSource)
    assert (source.volume, source.name) == ("MyData_1.x", "vol")
    assert open_source("docker-volume://pgdata").name == "volume-pgdata"
    assert json.dumps(source.location) == '"docker-volume://MyData_1.x?name=vol"'
