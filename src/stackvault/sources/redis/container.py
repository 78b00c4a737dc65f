"""A Redis server in a container: its port and files, a restore's archives (sources layer).

**Capture in a container** (``redis+docker://``): ``BGSAVE SCHEDULE`` through ``redis-cli`` in
the container; then, polling ``INFO persistence`` (bounded by ``timeout``, interruptible), wait
until no save is in progress and a save newer than the request has succeeded (``rdb_saves``,
or ``rdb_last_save_time`` on servers without it); then the file named by ``CONFIG GET dir`` +
``dbfilename`` is streamed with ``cat`` (`ContainerRunner.output`: counted and hashed inside the
container). A failed BGSAVE (``rdb_last_bgsave_status:err``: an unwritable directory, a full
disk) fails the capture. A save that completes after ours, before ``cat`` opens the file,
would be captured instead: still a complete snapshot, only a little newer (noted, and
``keys_exact`` is then false).

**Restore into a container**: refused (`RestoreRefused`) without ``overwrite`` when the server
holds keys, and refused when the RDB format is newer than the server loads. First, while the
server runs, the RDB is uploaded through the Engine API (``put_archive``, a tar generated as
the artifact is read) under a temporary name next to ``dbfilename``, and checked (size,
SHA-256, RDB checks; the tail of the upload is only sent once they pass): a failure here
changes nothing. With AOF on (``appendonly yes``) the server would load its AOF and ignore the
RDB, so the AOF (the ``appenddirname`` directory, or the ``appendfilename`` file before Redis
7) is moved aside to ``NAME.stackvault-old-TIME`` (automatic rewrites switched off first) and
replaced by one that *is* the RDB: a manifest naming it as the base file (Redis 7), or the RDB
as the AOF file itself (an RDB-preamble AOF). Then the container is stopped (``timeout``), a
second small archive hard-links the upload as ``dbfilename`` (and as the AOF base), the
container is started, the restore waits until the server answers ``PING`` (``LOADING`` means
not yet), and the temporary name is removed. Files belong to the owner of the data directory.
Should the linking fail after the AOF was moved, the container is left stopped with a message
saying where the AOF is (started, it would begin empty).
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from stackvault.errors import SourceError
from stackvault.sources.contract import Readable
from stackvault.sources.redis.rdb import RdbCheck, held_back
from stackvault.sources.redis.rediscli import RedisCli
from stackvault.sources.redis.resp import DEFAULT_PORT, POLL

if TYPE_CHECKING:
    from docker.models.containers import Container


def join(directory: str, name: str) -> str:
    return name if name.startswith("/") else f"{directory.rstrip('/')}/{name}"


SERVERS = frozenset({"redis-server", "redis-stack-server", "valkey-server", "keydb-server"})
"""The programs that run a Redis server."""


def server_args(container: Container) -> list[str]:
    """The arguments of the Redis server on the container's command line (``[]`` when it is
    not started there: an image's default command)."""
    from stackvault.sources.docker.cmdline import command_of, program_args

    return program_args(command_of(container.attrs), SERVERS) or []


def config_path(args: list[str]) -> str | None:
    """The configuration file a server was started with: its first argument, when that is no
    option (``redis-server /etc/redis/redis.conf --port 6380``)."""
    if args and not args[0].startswith("-"):
        return args[0]
    return None


def port_of(container: Container, read: Callable[[str], str | None] | None = None) -> int:
    """The ``--port`` of the container's command line, else the ``port`` of the configuration
    file it was started with (``read``: a file's text in the container, None if unreadable),
    else 6379."""
    from stackvault.sources.docker.cmdline import expand, option
    from stackvault.sources.docker.engine import container_env

    args = server_args(container)
    value = option(args, "--port")
    conf = config_path(args)
    if value is None and conf is not None and read is not None:
        value = parse_conf(read(conf) or "").get("port")
    value = expand(value, container_env(container)) if value else None
    return int(value) if value and value.isdigit() else DEFAULT_PORT


def parse_conf(text: str) -> dict[str, str]:
    """The directives of a ``redis.conf`` (the last value of each, quotes removed; ``include``
    is not followed). Holds the password (``requirepass``): never print it."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.lower()] = value
    return out


def command_password(container: Container) -> str:
    """The ``--requirepass`` of the server's command line (a ``$VARIABLE`` resolved in the
    container's environment); `SourceError` when there is none."""
    from stackvault.sources.docker.cmdline import expand, option
    from stackvault.sources.docker.engine import container_env

    value = option(server_args(container), "--requirepass")
    if value is None:
        raise SourceError(
            f"the Redis server of container {container.name} has no --requirepass on its "
            "command line",
            hint="correct password_from of its source in the plan (env:NAME, file:PATH or none)",
        )
    return expand(value, container_env(container))


def file_password(cli: RedisCli, path: str) -> str:
    """The ``requirepass`` of the configuration file ``path`` in the container; `SourceError`
    when it cannot be read or sets none."""
    res = cli.runner.run(["cat", path], timeout=60)
    if res.code != 0:
        raise SourceError(
            f"cannot read {path} {cli.runner.where} for the Redis password: "
            f"{res.stderr.strip()[:200]}",
            hint="correct password_from of its source in the plan (file:PATH in the container)",
        )
    value = parse_conf(res.text).get("requirepass")
    if not value:
        raise SourceError(
            f"{path} {cli.runner.where} sets no requirepass",
            hint="correct password_from of its source in the plan (env:NAME, arg or none)",
        )
    return value


def owner(cli: RedisCli, directory: str) -> tuple[int, int]:
    """The numeric owner of ``directory`` in the container (0, 0 if unknown)."""
    script = 'stat -c "%u %g" "$0" 2>/dev/null || ls -nd "$0"'
    res = cli.runner.run(["sh", "-c", script, directory], timeout=60)
    fields = res.text.split()
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return int(fields[0]), int(fields[1])
    if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
        return int(fields[2]), int(fields[3])
    return 0, 0


def tar_upload(
    name: str,
    stream: Readable,
    size: int,
    sha256: str,
    uid: int,
    gid: int,
    check: RdbCheck,
) -> Iterator[bytes]:
    """A tar archive of one file, generated as ``stream`` is read; the last chunk of the file
    is only produced once the whole content passed ``check`` and matches ``sha256``."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600 if uid else 0o644
    info.uid, info.gid = uid, gid
    info.mtime = int(time.time())
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    yield from held_back(stream, check, size, sha256)
    yield b"\0" * (-size % 512) + b"\0" * 1024


def link_archive(
    temp: str, dbfilename: str, aof: bool, aof_dir: str, aof_file: str, uid: int, gid: int
) -> bytes:
    """A tar that hard-links ``temp`` as ``dbfilename`` and, with AOF on, as the AOF: the base
    of a fresh multi-part AOF (Redis 7: ``aof_dir``) or the AOF file itself (before 7)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, link: str = "", data: bytes | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.uid, info.gid = uid, gid
            info.mode = 0o755 if kind == tarfile.DIRTYPE else (0o600 if uid else 0o644)
            info.mtime = int(time.time())
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        add(dbfilename, tarfile.LNKTYPE, temp)
        if aof and aof_dir:
            base = f"{aof_file}.1.base.rdb"
            add(aof_dir, tarfile.DIRTYPE)
            add(f"{aof_dir}/{base}", tarfile.LNKTYPE, temp)
            manifest = f"file {base} seq 1 type b\n".encode()
            add(f"{aof_dir}/{aof_file}.manifest", tarfile.REGTYPE, data=manifest)
        elif aof:
            add(aof_file, tarfile.LNKTYPE, temp)
    return out.getvalue()


def put_archive(container: Container, path: str, body: Iterator[bytes], what: str) -> None:
    import docker.errors

    from stackvault.sources.docker.engine import api_error

    failure: list[BaseException] = []

    def guarded() -> Iterator[bytes]:
        try:
            yield from body
        except BaseException as exc:
            failure.append(exc)
            raise

    try:
        ok = container.client.api.put_archive(str(container.id), path, guarded())  # type: ignore[union-attr]
    except BaseException as exc:
        if failure:
            raise failure[0] from exc
        if isinstance(exc, docker.errors.DockerException):
            raise api_error(f"{what} into container {container.name}", exc) from exc
        raise SourceError(f"{what} into container {container.name} failed: {exc}") from exc
    if failure:
        raise failure[0]
    if not ok:
        raise SourceError(f"{what} into container {container.name} failed")


def move_aof_aside(
    cli: RedisCli, directory: str, name: str, *, timeout: float, location: str
) -> str | None:
    """Rename the AOF (directory or file) to ``NAME.stackvault-old-TIME`` while the server
    runs (it keeps writing to the open files, which is harmless: it is stopped next);
    automatic rewrites are switched off first so none recreates it meanwhile."""
    deadline = time.monotonic() + timeout
    cli.call("CONFIG", "SET", "auto-aof-rewrite-percentage", "0")
    while cli.info("persistence").get("aof_rewrite_in_progress") == "1":
        if time.monotonic() > deadline:
            raise SourceError(f"an AOF rewrite of {location} did not finish in time")
        time.sleep(POLL)
    source = join(directory, name)
    target = f"{source}.stackvault-old-{time.strftime('%Y%m%dT%H%M%S')}"
    script = 'if [ -e "$0" ]; then mv "$0" "$1" && echo moved; fi'
    res = cli.runner.check(["sh", "-c", script, source, target], timeout=120, what="mv")
    return target if "moved" in res.text else None


def wait_ready(cli: RedisCli, container: Container, timeout: float) -> None:
    """Until the server answers PING (not LOADING); `SourceError` if the container stops
    or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        if container.status not in ("running", "created", "restarting"):
            raise SourceError(
                f"container {container.name} stopped after the restore "
                f"({container.status}); the server did not accept the RDB",
                hint=f"see `docker logs {container.name}`",
            )
        with contextlib.suppress(SourceError):  # not up yet
            if cli.runner.run([*cli.base, "PING"], env=cli.env, timeout=60).text.strip() == "PONG":
                return
        if time.monotonic() > deadline:
            raise SourceError(
                f"redis in container {container.name} did not answer within "
                f"{timeout:.0f} s after the restore",
                hint=f"see `docker logs {container.name}`; raise ?timeout= for a large dataset",
            )
        time.sleep(POLL)
