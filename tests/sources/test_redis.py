"""The Redis source against real servers: ``redis://`` (RDB pulled with SYNC, restore by acting
as the server's master) on the shared ``redis_server`` and fresh servers, and
``redis+docker://`` (BGSAVE + cat, restore through the Engine API) on the shared
``redis_container`` and fresh containers, with 200 000 keys of every type; the RDB checks
(CRC-64) on their own; and every failure with its message. Runs in about 60 s.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.contract import (
    ArtifactEntry,
    ArtifactRestoreOptions,
    EntryMeta,
    Readable,
    StoredFile,
    compare_facts,
)
from stackvault.sources.redis import RDB, Crc64, RdbCheck, RedisSource, max_rdb_version
from stackvault.sources.registry import open_source
from support.artifacts import MemoryReader, MemorySink
from support.dbcontainers import RedisContainer
from support.dbservers import RedisServer, free_port

if TYPE_CHECKING:
    from docker import DockerClient

DATA_DB, SMALL_DB = 7, 9
KEYS = 200_000


# --- helpers ------------------------------------------------------------------------------


class Resp:
    """A minimal RESP client for checks (binary-safe, unlike redis-cli's text output)."""

    def __init__(self, port: int, password: str | None = None, db: int = 0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.file = self.sock.makefile("rb")
        if password:
            self.call("AUTH", password)
        if db:
            self.call("SELECT", str(db))

    def call(self, *args: str | bytes) -> Any:
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            data = a.encode() if isinstance(a, str) else a
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self) -> Any:
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2]
        return [self._reply() for _ in range(int(rest))]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def command(port: int, *args: str, password: str | None = None, db: int = 0) -> Any:
    conn = Resp(port, password, db)
    try:
        return conn.call(*args)
    finally:
        conn.close()


def resp_commands(n: int, seed: int = 1) -> bytes:
    """``n`` keys of every type in `DATA_DB` (strings, hashes, lists, sets, sorted sets; every
    50th string with a TTL) and 1000 strings plus a stream in `SMALL_DB`, as RESP."""
    rng = random.Random(seed)
    out: list[bytes] = []

    def cmd(*args: object) -> None:
        items = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        out.append(b"*%d\r\n" % len(items))
        out.extend(b"$%d\r\n%s\r\n" % (len(x), x) for x in items)

    cmd("SELECT", DATA_DB)
    for i in range(n):
        kind = i % 5
        if kind == 0:
            cmd("SET", f"str:{i}", rng.randbytes(rng.randint(1, 200)))
            if i % 50 == 0:
                cmd("EXPIRE", f"str:{i}", 86_400)
        elif kind == 1:
            cmd("HSET", f"hash:{i}", "id", i, "name", "ñ" * rng.randint(1, 40), "f", rng.random())
        elif kind == 2:
            cmd("RPUSH", f"list:{i}", *(rng.randint(0, 10**9) for _ in range(rng.randint(1, 20))))
        elif kind == 3:
            cmd("SADD", f"set:{i}", *(f"m{rng.randint(0, 999)}" for _ in range(rng.randint(1, 9))))
        else:
            members = [x for j in range(rng.randint(1, 8)) for x in (rng.random(), f"z{j}")]
            cmd("ZADD", f"zset:{i}", *members)
    cmd("SELECT", SMALL_DB)
    for i in range(1000):
        cmd("SET", f"small:{i}", i)
    for i in range(50):
        cmd("XADD", "events", "*", "n", i)
    return b"".join(out)


def populate(port: int, n: int = KEYS, password: str | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDISCLI")}
    if password:
        env["REDISCLI_AUTH"] = password
    proc = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--pipe"],
        input=resp_commands(n),
        capture_output=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0 and b"errors: 0" in proc.stdout, proc.stdout + proc.stderr


def fill_large(port: int, keys: int = 400_000, size: int = 250) -> None:
    """About ``keys * size`` bytes of RDB in one server-side loop (~1 s)."""
    script = "for i=1,ARGV[1] do redis.call('SET', 'big:'..i, string.rep('v', ARGV[2])) end"
    command(port, "EVAL", script, "0", str(keys), str(size))


def value(conn: Resp, key: bytes) -> Any:
    """A key's type, content (order-independent where the type is) and whether it expires."""
    kind = conn.call("TYPE", key)
    content: Any
    if kind == "string":
        content = conn.call("GET", key)
    elif kind == "hash":
        flat = conn.call("HGETALL", key)
        content = dict(zip(flat[::2], flat[1::2], strict=True))
    elif kind == "list":
        content = conn.call("LRANGE", key, "0", "-1")
    elif kind == "set":
        content = sorted(conn.call("SMEMBERS", key))
    elif kind == "zset":
        content = conn.call("ZRANGE", key, "0", "-1", "WITHSCORES")
    else:
        content = conn.call("XRANGE", key, "-", "+")
    return kind, content, conn.call("TTL", key) > 0


def sample(port: int, n: int = 300, password: str | None = None) -> dict[bytes, Any]:
    """The values of ``n`` keys of `DATA_DB` (the same keys on every server) and the stream."""
    rng = random.Random(99)
    conn = Resp(port, password, DATA_DB)
    try:
        out: dict[bytes, Any] = {}
        for i in rng.sample(range(KEYS), n):
            key = f"{['str', 'hash', 'list', 'set', 'zset'][i % 5]}:{i}".encode()
            out[key] = value(conn, key)
        assert sum(1 for v in out.values() if v[2]) > 0  # some strings with a TTL
        conn.call("SELECT", str(SMALL_DB))
        out[b"events"] = value(conn, b"events")
        return out
    finally:
        conn.close()


def capture(source: RedisSource) -> tuple[MemorySink, MemoryReader, dict[str, Any]]:
    sink = MemorySink()
    meta = source.capture(sink)
    json.dumps(meta)
    return sink, sink.reader(source.name, source.kind, meta), meta


def redis_source(url: str) -> RedisSource:
    source = open_source(url)
    assert isinstance(source, RedisSource)
    return source


@pytest.fixture
def no_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDISCLI_AUTH", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fresh_server(no_redis_env: None) -> Iterator[RedisServer]:
    """An empty Redis of its own (a restore target, or a server a test may break)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def loaded_server(redis_server: RedisServer, no_redis_env: None) -> Iterator[RedisServer]:
    """The shared server with `KEYS` keys in `DATA_DB` and a few in `SMALL_DB` (flushed
    afterwards), diskless SYNC without its 5 s delay for the duration of the test."""
    populate(redis_server.port)
    delay = redis_server.cli("CONFIG", "GET", "repl-diskless-sync-delay").split("\n")[1]
    redis_server.cli("CONFIG", "SET", "repl-diskless-sync-delay", "0")
    yield redis_server
    redis_server.cli("CONFIG", "SET", "repl-diskless-sync-delay", delay)
    for db in (DATA_DB, SMALL_DB):
        command(redis_server.port, "FLUSHDB", db=db)


class AofRedisContainer(RedisContainer):
    """A Redis container with ``appendonly yes`` (Redis 7: a multi-part AOF directory)."""

    def _command(self) -> list[str]:
        return [*super()._command(), "--appendonly", "yes"]


# --- URLs and the RDB checks --------------------------------------------------------------


def test_url_forms() -> None:
    source = redis_source("redis://127.0.0.1:6380/2?timeout=5")
    assert (source.host, source.port, source.name, source.location, source.timeout) == (
        "127.0.0.1",
        6380,
        "redis",
        "redis://127.0.0.1:6380/2",
        5,
    )
    source = redis_source("redis://backup@cache.internal")
    assert (source.port, source.user, source.location) == (
        6379,
        "backup",
        "redis://backup@cache.internal:6379",
    )
    source = redis_source("redis+docker://cache:6390?name=sessions")
    assert (source.container_name, source.port, source.name) == ("cache", 6390, "sessions")
    assert redis_source("redis+docker://cache").name == "cache-redis"
    with pytest.raises(UsageError, match="contains a password"):
        open_source("redis://:secret@127.0.0.1:6379")
    with pytest.raises(UsageError, match="not a database number"):
        open_source("redis://127.0.0.1:6379/cache")
    with pytest.raises(UsageError, match="names no host"):
        open_source("redis:///0")
    with pytest.raises(UsageError, match="must name a container"):
        open_source("redis+docker:///x")
    with pytest.raises(UsageError, match="unknown option"):
        open_source("redis://127.0.0.1?db=1")
    for how in ("env:REDIS_PASSWORD", "arg", "file:/etc/redis/redis.conf", "none"):
        assert redis_source(f"redis+docker://cache:6390?password_from={how}").password_from == how
    with pytest.raises(UsageError, match="must be env:NAME, arg, file:PATH or none"):
        open_source("redis+docker://cache?password_from=hunter2")


def test_crc64_matches_the_bytewise_definition() -> None:
    crc = Crc64()
    crc.update(b"123456789")
    assert crc.finish() == 0xE9C6D914C4B8D9CA  # the published check value of CRC-64/Jones
    rng = random.Random(5)

    def bitwise(data: bytes) -> int:  # the definition: reflected, polynomial 0xad93d23594c935a9
        crc = 0
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ (0x95AC9329AC4BC9B5 if crc & 1 else 0)
        return crc

    table = [bitwise(bytes([b])) for b in range(256)]

    def bytewise(data: bytes) -> int:  # the same, a byte at a time (fast enough for MiBs)
        crc = 0
        for b in data:
            crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc

    assert bytewise(b"123456789") == bitwise(b"123456789") == 0xE9C6D914C4B8D9CA
    for size in (0, 1, 15, 1024 * 17 + 3, 1024 * 40, Crc64.BLOCK + 4097):
        data = rng.randbytes(size)
        expected = bitwise(data) if size < 100_000 else bytewise(data)
        crc = Crc64()
        cut = rng.randint(0, size)
        crc.update(data[:cut])
        crc.update(memoryview(data)[cut:])
        assert crc.finish() == expected, size


@pytest.mark.redis  # starts a Redis server of its own
def test_rdb_checks_on_a_real_rdb(fresh_server: RedisServer) -> None:
    populate(fresh_server.port, 5_000)
    fresh_server.cli("SAVE")
    rdb = (fresh_server.directory / "dump.rdb").read_bytes()

    def check(data: bytes, what: str = "the RDB") -> dict[str, Any]:
        c = RdbCheck(what)
        for i in range(0, len(data), 7777):
            c.update(data[i : i + 7777])
        return c.finish()

    assert check(rdb) == {"rdb_version": 10, "crc64": "ok"}

    def cut(n: int) -> bytes:  # a truncation that does not end on 0xFF + 8 bytes by chance
        while rdb[n - 9] == 0xFF:
            n -= 1
        return rdb[:n]

    with pytest.raises(SourceError, match=r"the RDB is incomplete: its .* bytes do not end"):
        check(cut(len(rdb) // 2))
    with pytest.raises(SourceError, match="is incomplete"):
        check(cut(len(rdb) - 1))
    damaged = bytearray(rdb)
    damaged[len(rdb) // 2] ^= 0x20
    with pytest.raises(SourceError, match="is damaged: its CRC-64 does not match"):
        check(bytes(damaged))
    with pytest.raises(SourceError, match=r"is not an RDB file \(it starts with b'<html>"):
        check(b"<html>" + rdb)
    # a server with `rdbchecksum no` (immutable at run time) writes a CRC of 0
    assert check(rdb[:-8] + bytes(8)) == {"rdb_version": 10, "crc64": "disabled"}


# --- on a host ----------------------------------------------------------------------------


@pytest.mark.redis  # starts a Redis server of its own
def test_capture_and_restore_into_a_fresh_server(
    loaded_server: RedisServer, fresh_server: RedisServer
) -> None:
    source = redis_source(loaded_server.url())
    sink, reader, meta = capture(source)
    keys = meta["facts"]["keys"]
    assert keys[f"db{DATA_DB}"] == KEYS and keys[f"db{SMALL_DB}"] == 1001
    assert meta["keys_exact"] is True
    assert (meta["crc64"], meta["rdb_version"], meta["transfer"]) == ("ok", 10, "sync (diskless)")
    assert meta["server_version"].startswith("7.")
    assert sink.entries[RDB].size == meta["rdb_size"] > 10_000_000
    assert sink.data[RDB][:9] == b"REDIS0010"
    assert compare_facts(meta["facts"], source.probe()) == []

    target = redis_source(fresh_server.url())
    assert target.describe_target() is None
    done = target.restore(reader, ArtifactRestoreOptions())
    assert done["method"] == "replication" and done["keys"] == keys
    assert done["persisted"] is False  # the fixture's server has no save points
    assert compare_facts(meta["facts"], target.probe()) == []
    assert sample(fresh_server.port) == sample(loaded_server.port)
    role = command(fresh_server.port, "INFO", "replication").decode()
    assert "role:master" in role  # REPLICAOF NO ONE: no longer a replica of this process
    assert target.describe_target() == (
        f"redis at {fresh_server.url()} holds {sum(keys.values())} keys in {len(keys)} databases"
    )


@pytest.mark.redis  # starts a Redis server of its own
def test_disk_based_sync_and_durable_restore(fresh_server: RedisServer) -> None:
    populate(fresh_server.port, 20_000)
    fresh_server.cli("CONFIG", "SET", "repl-diskless-sync", "no")
    _sink, reader, meta = capture(redis_source(fresh_server.url()))
    assert meta["transfer"] == "sync (disk)" and meta["crc64"] == "ok"

    target_server = RedisServer()
    target_server.start()
    try:
        target_server.cli("CONFIG", "SET", "save", "3600 1")  # a server with save points
        command(target_server.port, "SET", "old", "data")
        target = redis_source(target_server.url())
        with pytest.raises(RestoreRefused, match=r"holds 1 key; restoring .*--overwrite"):
            target.restore(reader, ArtifactRestoreOptions())
        done = target.restore(reader, ArtifactRestoreOptions(overwrite=True))
        assert done["persisted"] is True
        assert compare_facts(meta["facts"], target.probe()) == []
        assert command(target_server.port, "EXISTS", "old") == 0
        saved = RdbCheck("saved")
        saved.update((target_server.directory / "dump.rdb").read_bytes())
        assert saved.finish()["crc64"] == "ok"  # the restored data is on disk
    finally:
        target_server.stop()


@pytest.mark.redis  # starts a Redis server of its own
def test_busy_server_records_inexact_key_counts(fresh_server: RedisServer) -> None:
    fill_large(fresh_server.port, 100_000, 50)
    fresh_server.cli("CONFIG", "SET", "repl-diskless-sync-delay", "1")
    stop = threading.Event()

    def write() -> None:
        conn = Resp(fresh_server.port)
        i = 0
        while not stop.is_set():
            conn.call("SET", f"new:{i}", "x")
            i += 1
        conn.close()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        _sink, reader, meta = capture(redis_source(fresh_server.url()))
    finally:
        stop.set()
        writer.join()
    assert meta["keys_exact"] is False
    before, after = meta["keys_before"]["db0"], meta["facts"]["keys"]["db0"]
    assert before < after
    target_server = RedisServer()
    target_server.start()
    try:
        target = redis_source(target_server.url())
        target.restore(reader, ArtifactRestoreOptions())
        restored = target.probe()["keys"]["db0"]
        assert before <= restored <= after  # the fork happened between the two readings
    finally:
        target_server.stop()


# --- in containers ------------------------------------------------------------------------


def test_container_capture_restore_and_aof_target(
    redis_container: RedisContainer,
    docker_client: DockerClient,
    host_image: str,
    docker_env: str,
    fresh_server: RedisServer,
    no_redis_env: None,
) -> None:
    populate(redis_container.port)
    try:
        source = redis_source(f"redis+docker://{redis_container.name}")
        assert source.port is None  # found in the container's command line
        _sink, reader, meta = capture(source)
        keys = meta["facts"]["keys"]
        assert keys[f"db{DATA_DB}"] == KEYS and meta["keys_exact"] is True
        assert (meta["transfer"], meta["crc64"], meta["rdb_path"]) == (
            "bgsave",
            "ok",
            "/data/dump.rdb",
        )
        assert meta["container"]["name"] == redis_container.name
        expected = sample(redis_container.port)

        # into a server on this host (as its master)
        target = redis_source(fresh_server.url())
        target.restore(reader, ArtifactRestoreOptions())
        assert compare_facts(meta["facts"], target.probe()) == []
        assert sample(fresh_server.port) == expected

        # back into the same container, over changed data
        command(redis_container.port, "FLUSHDB", db=SMALL_DB)
        command(redis_container.port, "SET", "junk", "1", db=DATA_DB)
        with pytest.raises(RestoreRefused, match=f"holds {KEYS + 1} keys"):
            source.restore(reader, ArtifactRestoreOptions())
        done = source.restore(reader, ArtifactRestoreOptions(overwrite=True))
        assert done["method"] == "container restart" and done["aof_moved_to"] is None
        assert compare_facts(meta["facts"], source.probe()) == []
        assert sample(redis_container.port) == expected
        listing = redis_container.exec(["ls", "-a", "/data"]).split()
        assert not [name for name in listing if "stackvault" in name]
    finally:
        for db in (DATA_DB, SMALL_DB):
            command(redis_container.port, "FLUSHDB", db=db)

    # into a container with AOF on and a password in its environment
    password = "pw-" + os.urandom(8).hex()
    aof = AofRedisContainer(docker_client, host_image, password=password)
    aof.start()
    try:
        command(aof.port, "SET", "before", "restore", password=password)
        target = redis_source(f"redis+docker://{aof.name}")
        assert target.describe_target() == f"redis at redis+docker://{aof.name} holds 1 key"
        notices: list[str] = []
        done = target.restore(reader, ArtifactRestoreOptions(overwrite=True, notice=notices.append))
        moved = done["aof_moved_to"]
        assert moved and moved.startswith("/data/appendonlydir.stackvault-old-")
        assert any("moved the AOF" in n for n in notices)
        assert compare_facts(meta["facts"], target.probe()) == []
        assert command(aof.port, "EXISTS", "before", password=password) == 0
        old = aof.exec(["ls", moved]).split()
        assert "appendonly.aof.manifest" in old  # the previous AOF, kept
        # the AOF now holds the restored data: it survives a restart
        aof.stop()
        aof.start()
        assert compare_facts(meta["facts"], target.probe()) == []
        assert sample(aof.port, password=password) == expected
        persistence = command(aof.port, "INFO", "persistence", password=password).decode()
        assert "aof_enabled:1" in persistence
    finally:
        aof.remove()


def test_container_bgsave_failure(redis_container: RedisContainer, docker_env: str) -> None:
    mode = redis_container.exec(["stat", "-c", "%a", "/data"]).strip()
    redis_container.exec(["chmod", "0555", "/data"], user="0:0")  # the server cannot write
    try:
        sink = MemorySink()
        with pytest.raises(
            SourceError,
            match=rf"BGSAVE of redis\+docker://{redis_container.name} failed "
            r"\(rdb_last_bgsave_status:err\); see the server's log \(docker logs",
        ):
            redis_source(f"redis+docker://{redis_container.name}?timeout=30").capture(sink)
        assert RDB not in sink.entries
    finally:
        redis_container.exec(["chmod", mode, "/data"], user="0:0")
        # a successful save ends the MISCONF state (writes refused after a failed save)
        redis_container.cli("SAVE")


def test_container_errors(redis_container: RedisContainer, docker_env: str) -> None:
    with pytest.raises(SourceError, match="there is no container 'no-such-redis'"):
        redis_source("redis+docker://no-such-redis").capture(MemorySink())
    wrong_port = free_port()
    with pytest.raises(SourceError, match=r"cannot reach the server.*CONTAINER:PORT"):
        redis_source(f"redis+docker://{redis_container.name}:{wrong_port}").probe()

    source = redis_source(f"redis+docker://{redis_container.name}")
    command(redis_container.port, "SET", "keep", "me")
    try:
        sink, reader, _meta = capture(source)
        redis_container.container.reload()
        started_at = redis_container.container.attrs["State"]["StartedAt"]
        # a damaged artifact: the upload fails its checks before the server is touched
        data = bytearray(sink.data[RDB])
        data[len(data) // 2] ^= 1
        sink.data[RDB] = bytes(data)
        with pytest.raises(SourceError, match=r"the artifact's dump.rdb has \d+ bytes \(SHA-256"):
            source.restore(reader, ArtifactRestoreOptions(overwrite=True))
        # an RDB format newer than the server loads: refused before anything else
        sink.data[RDB] = b"REDIS0099" + bytes(data[9:])
        with pytest.raises(SourceError, match=r"format 99\) is newer than redis 7\.0\.\d+ at"):
            source.restore(reader, ArtifactRestoreOptions(overwrite=True))
        redis_container.container.reload()
        assert redis_container.container.attrs["State"]["StartedAt"] == started_at
        assert command(redis_container.port, "GET", "keep") == b"me"
        listing = redis_container.exec(["ls", "-a", "/data"]).split()
        assert not [name for name in listing if "stackvault" in name]
    finally:
        command(redis_container.port, "DEL", "keep")


def test_max_rdb_version() -> None:
    assert [max_rdb_version(v) for v in ("7.0.15", "7.2.4", "7.4.1", "6.2.14", "4.0.9")] == [
        10,
        11,
        12,
        9,
        8,
    ]
    assert max_rdb_version("8.0.0") is None and max_rdb_version("unknown") is None


# --- failures on a host -------------------------------------------------------------------


@pytest.mark.redis  # starts a Redis server of its own
def test_passwords_and_acl_users(monkeypatch: pytest.MonkeyPatch, no_redis_env: None) -> None:
    password = "pw-" + os.urandom(8).hex()
    server = RedisServer(password=password)
    server.start()
    try:
        url = server.url()
        with pytest.raises(SourceError, match="requires a password; set REDISCLI_AUTH"):
            redis_source(url).capture(MemorySink())
        monkeypatch.setenv("REDISCLI_AUTH", "wrong")
        with pytest.raises(SourceError, match="refused the password from REDISCLI_AUTH") as err:
            redis_source(url).capture(MemorySink())
        assert "wrong" not in str(err.value)
        monkeypatch.delenv("REDISCLI_AUTH")
        monkeypatch.setenv("REDIS_PASSWORD", password)
        command(server.port, "SET", "k", "v", password=password)
        command(server.port, "CONFIG", "SET", "repl-diskless-sync-delay", "0", password=password)
        _sink, _reader, meta = capture(redis_source(url))
        assert meta["facts"]["keys"] == {"db0": 1}

        command(
            server.port, "ACL", "SETUSER", "backup", "on", ">bpw", "+@all", "~*", password=password
        )
        monkeypatch.setenv("REDIS_PASSWORD", "bpw")
        user_url = url.replace("redis://", "redis://backup@")
        assert capture(redis_source(user_url))[2]["facts"]["keys"] == {"db0": 1}
        monkeypatch.setenv("REDIS_PASSWORD", "nope")
        with pytest.raises(SourceError, match="refused user 'backup' and the password"):
            redis_source(user_url).capture(MemorySink())
        command(
            server.port,
            "ACL",
            "SETUSER",
            "nosync",
            "on",
            ">n",
            "+@all",
            "-sync",
            "~*",
            password=password,
        )
        monkeypatch.setenv("REDIS_PASSWORD", "n")
        with pytest.raises(SourceError, match="does not allow SYNC for this user"):
            redis_source(url.replace("redis://", "redis://nosync@")).capture(MemorySink())
    finally:
        server.stop()


def test_unreachable_server(no_redis_env: None) -> None:
    port = free_port()
    with pytest.raises(
        SourceError, match=rf"cannot connect to redis at 127.0.0.1:{port} \(Connection refused\)"
    ):
        redis_source(f"redis://127.0.0.1:{port}").capture(MemorySink())


class KillingSink(MemorySink):
    """Kills the server (SIGKILL) once the first MiB of the RDB has been read."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid

    def add_file(self, path: str, stream: Readable, meta: EntryMeta | None = None) -> StoredFile:
        got = 0
        while got < 1 << 20:
            data = stream.read(1 << 20)
            assert data, f"the stream ended after {got} bytes"
            got += len(data)
        os.kill(self.pid, signal.SIGKILL)
        while data := stream.read(1 << 20):
            got += len(data)
        raise AssertionError(f"the stream ended normally after {got} bytes")


@pytest.mark.parametrize("diskless", ["yes", "no"])
@pytest.mark.redis  # starts a Redis server of its own
def test_server_killed_during_sync(fresh_server: RedisServer, diskless: str) -> None:
    fill_large(fresh_server.port)  # about 100 MB of RDB
    fresh_server.cli("CONFIG", "SET", "repl-diskless-sync", diskless)
    fresh_server.cli("CONFIG", "SET", "repl-diskless-sync-delay", "0")
    info = command(fresh_server.port, "INFO", "server").decode()
    pid = int(info.split("process_id:")[1].split()[0])
    sink = KillingSink(pid)
    of = r" of \d+" if diskless == "no" else ""
    with pytest.raises(
        SourceError,
        match=rf"the RDB transfer from redis at .* broke after \d+{of} bytes .*nothing was "
        "recorded",
    ):
        redis_source(fresh_server.url()).capture(sink)
    assert RDB not in sink.entries


def test_restore_refusals_and_damaged_artifact(
    loaded_server: RedisServer, fresh_server: RedisServer
) -> None:
    _sink, reader, meta = capture(redis_source(loaded_server.url()))
    target = redis_source(fresh_server.url())

    # a replica: restore into its master instead
    fresh_server.cli("REPLICAOF", "127.0.0.1", str(loaded_server.port))
    with pytest.raises(
        SourceError, match=r"is a replica of 127.0.0.1:\d+; restore into its master"
    ):
        target.restore(reader, ArtifactRestoreOptions(overwrite=True))
    fresh_server.cli("REPLICAOF", "NO", "ONE")
    fresh_server.cli("FLUSHALL")

    command(fresh_server.port, "SET", "precious", "1")
    with pytest.raises(RestoreRefused, match=rf"redis at {fresh_server.url()} holds 1 key"):
        target.restore(reader, ArtifactRestoreOptions())

    # a damaged artifact is never loaded: its last byte is only sent once the checks pass
    sink = reader.sink
    data = bytearray(sink.data[RDB])
    data[len(data) // 3] ^= 1
    sink.data[RDB] = bytes(data)
    with pytest.raises(SourceError, match=r"the artifact's dump.rdb has \d+ bytes \(SHA-256"):
        target.restore(reader, ArtifactRestoreOptions(overwrite=True))
    assert target.probe()["keys"] == {"db0": 1}
    sink.data[RDB] = b"REDIS0099" + bytes(data[9:])
    with pytest.raises(SourceError, match=r"format 99\) is newer than redis 7\.0\.\d+ at redis"):
        target.restore(reader, ArtifactRestoreOptions(overwrite=True))
    assert target.probe()["keys"] == {"db0": 1}
    assert "role:master" in command(fresh_server.port, "INFO", "replication").decode()
    assert meta["facts"]["keys"][f"db{DATA_DB}"] == KEYS


@pytest.mark.redis  # starts a Redis server of its own
def test_entry_must_be_a_file(fresh_server: RedisServer) -> None:
    sink = MemorySink()
    sink.entries[RDB] = ArtifactEntry(RDB, "dir")
    with pytest.raises(SourceError, match="is not a file"):
        redis_source(fresh_server.url()).restore(
            sink.reader("redis", "redis", {}), ArtifactRestoreOptions()
        )
