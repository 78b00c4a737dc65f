"""`RedisSource`: a Redis server, on a host or in a container, as a source (sources layer).

**Facts.** ``{"keys": {"db0": N, ...}}`` from ``INFO keyspace``, read just before the save
point and just after it: ``SYNC``: when the RDB starts to arrive (diskless: right after the
fork; disk-based: once the server's save is done); ``BGSAVE``: right after its reply (the fork
happens before it). On a busy server the two readings differ, as keys are added, deleted or
expire meanwhile; ``keys_exact`` (beside the facts) is true only when they are equal, and the
facts hold the second one (``keys_before`` the first). Keys whose TTL passes before a restore
are not loaded again, so a restore can legitimately show fewer. Beside the facts: server
version, RDB version, size, SHA-256, CRC-64 status, transfer mode, timings.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict, cast

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.contract import (
    ArtifactReader,
    ArtifactRestoreOptions,
    ArtifactSink,
    EntryMeta,
    Source,
)
from stackvault.sources.redis.bgsave import save_counts, wait_saved
from stackvault.sources.redis.container import (
    command_password,
    file_password,
    join,
    link_archive,
    move_aof_aside,
    owner,
    port_of,
    put_archive,
    tar_upload,
    wait_ready,
)
from stackvault.sources.redis.rdb import RDB, CheckedStream, RdbCheck, check_rdb_version
from stackvault.sources.redis.rediscli import RedisCli
from stackvault.sources.redis.replication import Master, SyncPayload
from stackvault.sources.redis.resp import (
    DEFAULT_PORT,
    Connection,
    parse_keyspace,
    reply_error,
    reply_text,
)
from stackvault.sources.redis.savefile import (
    SaveProblem,
    container_save_problems,
    last_save_problem,
)
from stackvault.sources.url import SourceURL

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from stackvault.sources.docker.exec import ContainerRunner

_OPTIONS = frozenset({"timeout", "password_from"})
_PASSWORD_FROM = re.compile(r"env:[A-Za-z_][A-Za-z0-9_]*|arg|file:.+|none")
_TEMP_SUFFIX = ".stackvault-new"


class RedisFacts(TypedDict):
    """The facts of a Redis server: keys per database (``{"db0": 12}``; empty ones absent)."""

    keys: dict[str, int]


class RedisRestored(TypedDict):
    """What a Redis restore did: where, how (``replication`` into a running server, or
    ``container restart`` with the RDB in place), the keys it then holds, the RDB loaded
    (`rdb.RdbInfo`), whether it was saved (replication) or where it was put and where the
    AOF was moved (container), and the seconds it took."""

    target: str
    method: str
    keys: dict[str, int]
    rdb_size: int
    rdb_version: NotRequired[int]
    crc64: NotRequired[Literal["ok", "disabled"]]
    persisted: NotRequired[bool]
    rdb_path: NotRequired[str]
    aof_moved_to: NotRequired[str | None]
    seconds: dict[str, float]


class RedisSource(Source):
    """A Redis server on a host or in a container; see the package's docstrings."""

    kind = "redis"
    schemes = ("redis", "redis+docker")

    def __init__(
        self,
        *,
        name: str,
        location: str,
        host: str = "",
        port: int | None = None,
        user: str | None = None,
        container: str | None = None,
        timeout: float = 300.0,
        password_from: str | None = None,
    ) -> None:
        super().__init__(name, location)
        self.password_from = password_from
        self.host = host
        self.port = port
        self.user = user
        self.container_name = container
        self.timeout = timeout
        self._client: DockerClient | None = None

    @classmethod
    def from_url(cls, url: SourceURL) -> RedisSource:
        url.require_options(_OPTIONS)
        timeout = url.number("timeout", 300.0, minimum=1)
        user = f"{url.user}@" if url.user else ""
        if url.scheme == "redis+docker":
            if not url.host or url.path not in ("", "/"):
                raise UsageError(
                    f"the source URL {url.redacted} must name a container: "
                    "redis+docker://CONTAINER[:PORT]"
                )
            suffix = f":{url.port}" if url.port else ""
            password_from = url.query.get("password_from")
            if password_from is not None and not _PASSWORD_FROM.fullmatch(password_from):
                raise UsageError(
                    f"option password_from of {url.redacted} must be env:NAME, arg, file:PATH "
                    "or none"
                )
            return cls(
                password_from=password_from,
                name=url.artifact_name(f"{url.host}-redis"),
                location=f"redis+docker://{user}{url.host}{suffix}",
                port=url.port,
                user=url.user,
                container=url.host,
                timeout=timeout,
            )
        if not url.host:
            raise UsageError(
                f"the source URL {url.redacted} names no host: write redis://HOST:PORT"
            )
        if not re.fullmatch(r"(/[0-9]*)?", url.path):
            raise UsageError(
                f"the source URL {url.redacted} has a path that is not a database number"
            )
        port = url.port or DEFAULT_PORT
        host = f"[{url.host}]" if ":" in url.host else url.host
        return cls(
            name=url.artifact_name("redis"),
            location=f"redis://{user}{host}:{port}{url.path if url.path != '/' else ''}",
            host=url.host,
            port=port,
            user=url.user,
            timeout=timeout,
        )

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    # --- common ---------------------------------------------------------------------------

    def _connect(self) -> Connection:
        assert self.port is not None
        conn = Connection(self.host, self.port, self.location, self.timeout)
        try:
            conn.authenticate(self.user)
        except BaseException:
            conn.close()
            raise
        return conn

    def probe(self) -> RedisFacts:
        if self.container_name is not None:
            cli, _container = self._container_cli()
            return {"keys": parse_keyspace(cli.call("INFO", "keyspace"))}
        conn = self._connect()
        try:
            return {"keys": parse_keyspace(reply_text(conn.call("INFO", "keyspace")))}
        finally:
            conn.close()

    def save_problems(self) -> list[SaveProblem]:
        """Why a capture of this server would fail at its save (`savefile`), found without
        saving anything; none when it would not."""
        if self.container_name is not None:
            cli, container = self._container_cli()
            return container_save_problems(cli, self._docker(), container)
        conn = self._connect()
        try:
            problem = last_save_problem(conn.info("persistence"), None)
        finally:
            conn.close()
        return [problem] if problem is not None else []

    def describe_target(self) -> str | None:
        keys = self.probe()["keys"]
        total = sum(keys.values())
        if not total:
            return None
        where = f" in {len(keys)} databases" if len(keys) > 1 else ""
        return f"redis at {self.location} holds {total} key{'s' if total > 1 else ''}{where}"

    def _refuse_unless(self, options: ArtifactRestoreOptions, reader: ArtifactReader) -> None:
        existing = self.describe_target()
        if existing is not None and not options.overwrite:
            raise RestoreRefused(
                f"{existing}; restoring {reader.name!r} would replace them all",
                hint="pass --overwrite (a safety snapshot is taken first) or restore into an "
                "empty server",
            )

    # --- capture --------------------------------------------------------------------------

    def capture(self, sink: ArtifactSink) -> dict[str, Any]:
        if self.container_name is not None:
            return self._capture_container(sink)
        return self._capture_host(sink)

    def _capture_host(self, sink: ArtifactSink) -> dict[str, Any]:
        started = time.monotonic()
        control = self._connect()
        replica: Connection | None = None
        try:
            version = control.info("server").get("redis_version", "")
            before = parse_keyspace(reply_text(control.call("INFO", "keyspace")))
            replica = self._connect()
            with contextlib.suppress(SourceError):  # servers before 2.8 do not know it
                replica.call("REPLCONF", "capa", "eof")
            replica.send("SYNC")
            header = self._sync_header(replica, sink)
            forked = time.monotonic()
            after = parse_keyspace(reply_text(control.call("INFO", "keyspace")))
            payload = SyncPayload(replica, header)
            stream = CheckedStream(payload.readinto, RdbCheck(f"the RDB of {self.location}"))
            stored = sink.add_file(RDB, stream, EntryMeta(mode=0o600))
        finally:
            if replica is not None:
                replica.close()  # before the server starts streaming commands
            control.close()
        result = self._checked(stream, stored.size, stored.sha256)
        return {
            "facts": {"keys": after},
            "keys_exact": before == after,
            **({} if before == after else {"keys_before": before}),
            "server_version": version,
            **result,
            "transfer": f"sync ({payload.mode})",
            "seconds": {
                "fork_wait": round(forked - started, 3),
                "total": round(time.monotonic() - started, 3),
            },
        }

    def _sync_header(self, conn: Connection, sink: ArtifactSink) -> bytes:
        """Skip the keep-alive newlines a master sends while it prepares the RDB."""
        while True:
            sink.check_interrupted()
            line = conn.read_line()
            if not line:
                continue
            if line.startswith(b"-"):
                text = line[1:].decode("utf-8", "replace")
                raise reply_error(self.location, "SYNC", text)
            if not line.startswith(b"$"):
                raise SourceError(
                    f"redis at {self.location} answered SYNC with {line[:40]!r}, not an RDB"
                )
            return line

    def _checked(self, stream: CheckedStream, size: int, sha256: str) -> dict[str, Any]:
        check = stream.check
        if stream.result is None:  # the sink stopped before EOF
            raise SourceError(f"the RDB of {self.location} was not read to its end")
        if size != check.size or sha256 != check.sha256.hexdigest():
            raise SourceError(
                f"the RDB of {self.location} was stored as {size} bytes but {check.size} were "
                "read; nothing was recorded",
                hint="run the backup again",
            )
        return {**stream.result, "rdb_size": size, "rdb_sha256": sha256}

    # --- containers -----------------------------------------------------------------------

    def _docker(self) -> DockerClient:
        if self._client is None:
            from stackvault.sources.docker.engine import connect

            self._client = connect()
        return self._client

    def _container_cli(self) -> tuple[RedisCli, Container]:
        from stackvault.sources.docker.engine import container_env, get_container, require_running
        from stackvault.sources.docker.exec import ContainerRunner

        assert self.container_name is not None
        client = self._docker()
        container = get_container(client, self.container_name)
        require_running(container)
        env = container_env(container)
        how = self.password_from
        if how is None:  # the default: the variable the common images set
            how = "env:REDIS_PASSWORD" if env.get("REDIS_PASSWORD") else "none"
        env_from = {"REDISCLI_AUTH": how[4:]} if how.startswith("env:") else None
        runner = ContainerRunner(client, container, env_from=env_from)
        port = self.port or port_of(container, lambda path: _read(runner, path))
        cli = RedisCli(runner, port, self.user, self.location)
        if how == "arg":
            cli.env["REDISCLI_AUTH"] = command_password(container)
        elif how.startswith("file:"):
            cli.env["REDISCLI_AUTH"] = file_password(cli, how[5:])
        return cli, container

    def _capture_container(self, sink: ArtifactSink) -> dict[str, Any]:
        started = time.monotonic()
        cli, container = self._container_cli()
        version = cli.info("server").get("redis_version", "")
        deadline = time.monotonic() + self.timeout
        saves = self._wait_saved(cli.info, deadline, None, sink.check_interrupted)
        if saves[0] < 0 and int(cli.call("TIME").split()[0]) <= saves[1]:
            time.sleep(1.05)  # no save counter (Redis < 7): LASTSAVE counts whole seconds
        before: dict[str, int] = {}
        after: dict[str, int] = {}
        while True:
            keyspace1, reply, keyspace2 = cli.script(
                ["INFO keyspace", "BGSAVE SCHEDULE", "INFO keyspace"]
            )
            if reply.startswith("Background saving"):
                before, after = parse_keyspace(keyspace1), parse_keyspace(keyspace2)
                break
            if "already in progress" not in reply:
                raise cli.error("BGSAVE", reply)
            saves = self._wait_saved(cli.info, deadline, None, sink.check_interrupted)
        scheduled = "scheduled" in reply
        saves = self._wait_saved(cli.info, deadline, saves, sink.check_interrupted)
        if scheduled:  # the fork happened later than the second reading
            after = parse_keyspace(cli.call("INFO", "keyspace"))
        saved = time.monotonic()
        path = join(cli.config_get("dir"), cli.config_get("dbfilename") or RDB)
        output = cli.runner.output(["cat", path], label=f"cat {path}")

        def read(buf: memoryview) -> int:
            n = output.readinto(buf)
            if not n:
                output.finish()  # cat's own failure first, then the RDB checks
            return n

        with output:
            stream = CheckedStream(read, RdbCheck(f"{path} {cli.runner.where}"))
            stored = sink.add_file(RDB, stream, EntryMeta(mode=0o600))
        result = self._checked(stream, stored.size, stored.sha256)
        exact = before == after
        if save_counts(cli.info("persistence")) != saves:
            sink.notice(
                f"another save of {self.location} completed while its RDB was read; the "
                "newer snapshot was captured and the key counts are approximate"
            )
            exact = False
        from stackvault.sources.docker.engine import image_facts

        return {
            "facts": {"keys": after},
            "keys_exact": exact,
            **({} if before == after else {"keys_before": before}),
            "server_version": version,
            **result,
            "transfer": "bgsave",
            "rdb_path": path,
            "container": {"name": container.name, **image_facts(container)},
            "seconds": {
                "bgsave": round(saved - started, 3),
                "total": round(time.monotonic() - started, 3),
            },
        }

    def _wait_saved(
        self,
        info: Callable[[str], dict[str, str]],
        deadline: float,
        previous: tuple[int, int] | None,
        check_interrupted: Callable[[], None] = lambda: None,
    ) -> tuple[int, int]:
        """`wait_saved` for this server."""
        return wait_saved(
            info,
            deadline,
            previous,
            check_interrupted,
            location=self.location,
            timeout=self.timeout,
            container_name=self.container_name,
        )

    # --- restore --------------------------------------------------------------------------

    def restore(self, reader: ArtifactReader, options: ArtifactRestoreOptions) -> RedisRestored:
        entry = reader.entry(RDB)
        if entry.kind != "file":
            raise SourceError(f"{RDB!r} of artifact {reader.name!r} is not a file")
        if self.container_name is not None:
            return self._restore_container(reader, options, entry.size, entry.sha256)
        return self._restore_host(reader, options, entry.size, entry.sha256)

    def _restore_host(
        self, reader: ArtifactReader, options: ArtifactRestoreOptions, size: int, sha256: str
    ) -> RedisRestored:
        started = time.monotonic()
        conn = self._connect()
        try:
            info = conn.info("replication")
            if info.get("role") != "master":
                raise SourceError(
                    f"redis at {self.location} is a replica of "
                    f"{info.get('master_host')}:{info.get('master_port')}",
                    hint="restore into its master instead",
                )
            if conn.info("cluster").get("cluster_enabled") == "1":
                raise SourceError(
                    f"redis at {self.location} is a cluster node; restoring an RDB into a "
                    "cluster is not supported"
                )
            self._refuse_unless(options, reader)
            version = conn.info("server").get("redis_version", "")
            check_rdb_version(reader, version, self.location)
            local = conn.sock.getsockname()[0]
            master = Master(local, lambda: reader.open(RDB), size, sha256, self.location)
            try:
                conn.call("REPLICAOF", local, str(master.port))
                try:
                    master.wait_loaded(conn, self.timeout)
                except BaseException:
                    with contextlib.suppress(Exception):
                        conn.call("REPLICAOF", "NO", "ONE")
                    raise
                conn.call("REPLICAOF", "NO", "ONE")
            finally:
                master.close()
            loaded = time.monotonic()
            persisted = self._persist(conn, options)
            keys = parse_keyspace(reply_text(conn.call("INFO", "keyspace")))
        finally:
            conn.close()
        rdb: dict[str, object] = dict(master.rdb_info or {})  # none if not served whole yet
        return cast(RedisRestored, {
            "target": self.location,
            "method": "replication",
            "keys": keys,
            "rdb_size": size,
            **rdb,
            "persisted": persisted,
            "seconds": {
                "load": round(loaded - started, 3),
                "total": round(time.monotonic() - started, 3),
            },
        })  # fmt: skip

    def _persist(self, conn: Connection, options: ArtifactRestoreOptions) -> bool:
        """``BGSAVE`` (and wait for it) if the server has save points; whether it did."""
        try:
            save = conn.call("CONFIG", "GET", "save")
        except SourceError:
            options.notice(
                f"CONFIG is not available on redis at {self.location}; the restored data is "
                "on disk only after its next save"
            )
            return False
        if not isinstance(save, list) or len(save) < 2 or not reply_text(save[1]).strip():
            return False
        before = save_counts(conn.info("persistence"))
        conn.call("BGSAVE", "SCHEDULE")
        self._wait_saved(conn.info, time.monotonic() + self.timeout, before)
        return True

    def _restore_container(
        self, reader: ArtifactReader, options: ArtifactRestoreOptions, size: int, sha256: str
    ) -> RedisRestored:
        import docker.errors

        from stackvault.sources.docker.engine import api_error

        started = time.monotonic()
        cli, container = self._container_cli()
        self._refuse_unless(options, reader)
        check_rdb_version(reader, cli.info("server").get("redis_version", ""), self.location)
        directory = cli.config_get("dir")
        dbfilename = cli.config_get("dbfilename") or RDB
        aof = cli.config_get("appendonly") == "yes"
        aof_dir = cli.config_get("appenddirname") if aof else ""
        aof_file = cli.config_get("appendfilename") or "appendonly.aof"
        uid, gid = owner(cli, directory)
        temp = dbfilename + _TEMP_SUFFIX
        remove_temp = ["rm", "-f", join(directory, temp)]

        # 1. the upload, under a temporary name, while the server runs: a failure changes nothing
        check = RdbCheck(f"the artifact's {RDB}", restore=True)
        try:
            body = tar_upload(temp, reader.open(RDB), size, sha256, uid, gid, check)
            put_archive(container, directory, body, "uploading the RDB")
            rdb_info = check.finish()
        except BaseException:
            with contextlib.suppress(Exception):
                cli.runner.run(remove_temp, timeout=60)
            raise
        uploaded = time.monotonic()

        # 2. the AOF aside, stop, link the upload into place, start
        moved: str | None = None
        if aof:
            moved = move_aof_aside(
                cli, directory, aof_dir or aof_file, timeout=self.timeout, location=self.location
            )
            if moved:
                options.notice(f"moved the AOF of {self.location} aside to {moved}")
        try:
            container.stop(timeout=int(self.timeout))
        except docker.errors.DockerException as exc:
            raise api_error(f"stopping container {container.name}", exc) from exc
        try:
            links = link_archive(temp, dbfilename, aof, aof_dir, aof_file, uid, gid)
            put_archive(container, directory, iter([links]), "linking the RDB")
        except BaseException as exc:
            if moved:  # started now, it would begin empty with a new AOF: leave it stopped
                raise SourceError(
                    f"restoring into container {container.name} failed after its AOF was "
                    f"moved to {moved} and it was stopped ({exc}); it is left stopped",
                    hint=f"move {moved} back to {join(directory, aof_dir or aof_file)} "
                    "and start it, or run the restore again",
                ) from exc
            with contextlib.suppress(Exception):
                container.start()
                wait_ready(cli, container, self.timeout)
                cli.runner.run(remove_temp, timeout=60)
            raise
        try:
            container.start()
        except docker.errors.DockerException as exc:
            raise api_error(f"starting container {container.name}", exc) from exc
        wait_ready(cli, container, self.timeout)
        cli.runner.run(remove_temp, timeout=60)
        keys = parse_keyspace(cli.call("INFO", "keyspace"))
        return cast(RedisRestored, {
            "target": self.location,
            "method": "container restart",
            "keys": keys,
            "rdb_size": size,
            **rdb_info,
            "rdb_path": join(directory, dbfilename),
            "aof_moved_to": moved,
            "seconds": {
                "upload": round(uploaded - started, 3),
                "total": round(time.monotonic() - started, 3),
            },
        })  # fmt: skip


def _read(runner: ContainerRunner, path: str) -> str | None:
    """The text of ``path`` in the runner's container; None when it cannot be read."""
    try:
        res = runner.run(["cat", path], timeout=60)
    except SourceError:
        return None
    return res.text if res.code == 0 else None
