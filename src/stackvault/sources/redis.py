"""A Redis server as a source (sources layer): ``redis://[USER@]HOST:PORT[/DB]`` (a server this
host reaches over TCP) and ``redis+docker://CONTAINER[:PORT]`` (a server inside a container).

Options: ``name`` (the artifact's name; default ``redis``, or ``CONTAINER-redis``) and
``timeout`` (seconds, default 300: the longest the server may stay silent while it sends the
RDB, and the longest wait for a BGSAVE, a stop or a restart). A ``/DB`` suffix is accepted,
since Redis URLs commonly carry one, but changes nothing: an RDB file holds every database of
the server, and capture and restore always cover the whole server.

**Credentials.** On this host the password comes from ``REDISCLI_AUTH`` or ``REDIS_PASSWORD``
and is sent with ``AUTH`` (``AUTH USER PASSWORD`` when the URL names an ACL user). In a
container, ``redis-cli`` runs with ``REDISCLI_AUTH`` taken from the container's own
``REDIS_PASSWORD`` when it has one (the value never leaves the container), else with none.

**Artifact.** One file, ``dump.rdb``: the server's RDB snapshot, byte for byte.

**Capture on a host** (``redis://``): the RDB is pulled over the replication protocol, as a
replica would: ``SYNC`` (after ``REPLCONF capa eof``, so the server picks disk-based or
diskless transfer per its own ``repl-diskless-sync`` setting; diskless waits
``repl-diskless-sync-delay``, 5 s by default). The server forks, and its RDB arrives as
``$LENGTH`` + bytes, or as ``$EOF:MARK`` + bytes + the 40-byte mark; keep-alive newlines before
it are skipped. The payload is streamed into the sink as it arrives and the connection is
closed right after it, before any replication traffic. A disk-based transfer also rewrites the
server's own ``dump.rdb``, as a ``BGSAVE`` would, and a server that had no replica keeps a
replication backlog (``repl-backlog-size``, 1 MB by default) for ``repl-backlog-ttl``.
``SYNC`` needs an unrestricted connection (managed services often disable it); use a
``+docker`` URL there.

**Capture in a container** (``redis+docker://``): ``BGSAVE SCHEDULE`` through ``redis-cli`` in
the container; then, polling ``INFO persistence`` (bounded by ``timeout``, interruptible), wait
until no save is in progress and a save newer than the request has succeeded (``rdb_saves``,
or ``rdb_last_save_time`` on servers without it); then the file named by ``CONFIG GET dir`` +
``dbfilename`` is streamed with ``cat`` (`ContainerRunner.output`: counted and hashed inside the
container). A failed BGSAVE (``rdb_last_bgsave_status:err``: an unwritable directory, a full
disk) fails the capture. A save that completes after ours, before ``cat`` opens the file,
would be captured instead: still a complete snapshot, only a little newer (noted, and
``keys_exact`` is then false).

**Completeness.** Whichever way it came, the stream must be an RDB: ``REDIS`` + four digits at
the start, the end-of-file opcode 0xFF followed by the 8-byte CRC-64 at the end, and the
CRC-64 (Jones polynomial, as Redis computes it) of everything before must match (`Crc64`, pure
Python at roughly 100 MB/s; a server with ``rdbchecksum no`` writes 0 and is recorded as
``"crc64": "disabled"``). A length-prefixed transfer must deliver exactly its length. A stream
that breaks, ends early or fails a check raises `SourceError` out of the sink: nothing is
recorded.

**Facts.** ``{"keys": {"db0": N, ...}}`` from ``INFO keyspace``, read just before the save
point and just after it: ``SYNC``: when the RDB starts to arrive (diskless: right after the
fork; disk-based: once the server's save is done); ``BGSAVE``: right after its reply (the fork
happens before it). On a busy server the two readings differ, as keys are added, deleted or
expire meanwhile; ``keys_exact`` (beside the facts) is true only when they are equal, and the
facts hold the second one (``keys_before`` the first). Keys whose TTL passes before a restore
are not loaded again, so a restore can legitimately show fewer. Beside the facts: server
version, RDB version, size, SHA-256, CRC-64 status, transfer mode, timings.

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

**Restore into a server on a host**: the server is made a replica of a tiny master that this
process runs (on the local address of the connection to the server, i.e. 127.0.0.1 for a local
server: the server must be able to connect back to it). It answers the handshake (``PING``,
``AUTH``, ``REPLCONF``), replies to ``PSYNC``/``SYNC`` with ``+FULLRESYNC`` and the RDB, and the
restore waits until ``INFO replication`` shows the link up and the sync done, then sends
``REPLICAOF NO ONE``. The server replaces its whole dataset with the RDB (what it does for any
full resync). The last byte is held back until the artifact's SHA-256 and the RDB checks pass,
so a damaged artifact is never loaded. A server that asks for the RDB again (it could not load
it) fails the restore; an RDB format newer than the server loads is refused beforehand.
Afterwards, if the server has save points (``CONFIG GET save``), a ``BGSAVE`` makes the
restored data durable. Refused for a server that is a replica itself or a cluster node.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import secrets
import socket
import struct
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from stackvault.errors import RestoreRefused, SourceError, StackvaultError, UsageError
from stackvault.sources.base import (
    ArtifactReader,
    ArtifactSink,
    EntryMeta,
    Readable,
    RestoreOptions,
    Source,
)
from stackvault.sources.url import SourceURL

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from stackvault.sources.docker.exec import ContainerRunner

RDB = "dump.rdb"
"""The artifact's only file."""

_OPTIONS = frozenset({"timeout"})
_CHUNK = 1 << 20
_DEFAULT_PORT = 6379
_CONNECT_TIMEOUT = 15.0
_POLL = 0.2
_RDB_HEADER = re.compile(rb"^REDIS[0-9]{4}$")
_ERROR_REPLY = re.compile(
    r"^(ERR|WRONGPASS|NOAUTH|NOPERM|LOADING|BUSY|MISCONF|READONLY|MASTERDOWN|OOM|DENIED|"
    r"NOMASTERLINK|WRONGTYPE|EXECABORT)\b"
)
_TEMP_SUFFIX = ".stackvault-new"


# --- CRC-64 (Jones), as Redis computes it ----------------------------------------------------

_POLY = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9, bit-reflected


def _byte_table() -> tuple[int, ...]:
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _byte_table()
# _PLANES[k][v]: byte k of _TABLE[v], as translate() tables.
_PLANES = tuple(bytes((_TABLE[v] >> (8 * k)) & 0xFF for v in range(256)) for k in range(8))


def _gf2_times(mat: Sequence[int], vec: int) -> int:
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _zeros_operator(nbytes: int) -> tuple[tuple[int, ...], ...]:
    """The linear map "feed ``nbytes`` zero bytes" on a CRC register, as 8 tables of 256 (one
    per register byte), like zlib's ``crc32_combine``."""
    op = [_POLY] + [1 << (n - 1) for n in range(1, 64)]  # one zero bit
    for _ in range(3):  # -> one zero byte
        op = [_gf2_times(op, op[n]) for n in range(64)]
    result = [1 << n for n in range(64)]
    n = nbytes
    while n:
        if n & 1:
            result = [_gf2_times(op, result[i]) for i in range(64)]
        n >>= 1
        if n:
            op = [_gf2_times(op, op[i]) for i in range(64)]
    return tuple(tuple(_gf2_times(result, v << (8 * k)) for v in range(256)) for k in range(8))


def _shift(op: tuple[tuple[int, ...], ...], c: int) -> int:
    return (
        op[0][c & 0xFF]
        ^ op[1][(c >> 8) & 0xFF]
        ^ op[2][(c >> 16) & 0xFF]
        ^ op[3][(c >> 24) & 0xFF]
        ^ op[4][(c >> 32) & 0xFF]
        ^ op[5][(c >> 40) & 0xFF]
        ^ op[6][(c >> 48) & 0xFF]
        ^ op[7][c >> 56]
    )


def _crc_scalar(crc: int, data: bytes) -> int:
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


class Crc64:
    """CRC-64/Jones (reflected, initial value 0, no final XOR; ``crc64(0, "123456789")`` is
    ``0xe9c6d914c4b8d9ca``), the checksum at the end of every RDB file.

    A byte-at-a-time loop in Python manages ~13 MB/s. Here each 4 MiB block is cut into 4096
    lanes of 1 KiB whose CRCs advance side by side: one step handles byte ``i`` of every lane
    with C-speed primitives (a strided slice, big-integer XOR, ``bytes.translate`` through the
    table split into byte planes). The lane CRCs are then folded in order, ``crc(A+B) =
    shift(crc(A), len(B)) ^ crc(B)``, with a precomputed "append zero bytes" operator. Together
    about 100 MB/s, so a 100 MB RDB costs about one second.
    """

    LANE = 1024
    LANES = 4096
    BLOCK = LANE * LANES

    def __init__(self) -> None:
        self.value = 0
        self._pending = bytearray()
        self._lane_op: tuple[tuple[int, ...], ...] | None = None
        self._block_op: tuple[tuple[int, ...], ...] | None = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._pending += data
        if len(self._pending) < self.BLOCK:
            return
        if self._block_op is None:
            self._block_op = _zeros_operator(self.BLOCK)
        whole = len(self._pending) // self.BLOCK * self.BLOCK
        blocks = bytes(self._pending[:whole])
        del self._pending[:whole]
        for off in range(0, whole, self.BLOCK):
            block_crc = self._lanes(blocks[off : off + self.BLOCK], self.LANES)
            self.value = _shift(self._block_op, self.value) ^ block_crc

    def finish(self) -> int:
        """The CRC of everything given (call once)."""
        data = bytes(self._pending)
        self._pending.clear()
        lanes = len(data) // self.LANE
        if lanes >= 16:
            size = lanes * self.LANE
            part = self._lanes(data[:size], lanes)
            self.value = _shift(_zeros_operator(size), self.value) ^ part
            data = data[size:]
        self.value = _crc_scalar(self.value, data)
        return self.value

    def _lanes(self, block: bytes, lanes: int) -> int:
        """The CRC (from 0) of ``block``: ``lanes`` lanes of `LANE` bytes."""
        lane = self.LANE
        frombytes = int.from_bytes
        p0, p1, p2, p3, p4, p5, p6, p7 = _PLANES
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0  # byte k of every lane's register
        for i in range(lane):
            idx = (s0 ^ frombytes(block[i::lane], "little")).to_bytes(lanes, "little")
            s0 = frombytes(idx.translate(p0), "little") ^ s1
            s1 = frombytes(idx.translate(p1), "little") ^ s2
            s2 = frombytes(idx.translate(p2), "little") ^ s3
            s3 = frombytes(idx.translate(p3), "little") ^ s4
            s4 = frombytes(idx.translate(p4), "little") ^ s5
            s5 = frombytes(idx.translate(p5), "little") ^ s6
            s6 = frombytes(idx.translate(p6), "little") ^ s7
            s7 = frombytes(idx.translate(p7), "little")
        registers = bytearray(8 * lanes)
        for k, plane in enumerate((s0, s1, s2, s3, s4, s5, s6, s7)):
            registers[k::8] = plane.to_bytes(lanes, "little")
        if self._lane_op is None:
            self._lane_op = _zeros_operator(lane)
        op = self._lane_op
        crc = 0
        for value in struct.unpack(f"<{lanes}Q", registers):
            crc = _shift(op, crc) ^ value
        return crc


# --- RDB completeness -----------------------------------------------------------------------


class RdbCheck:
    """Checks an RDB byte stream as it passes (`update`), and at its end (`finish`): the
    ``REDISnnnn`` header, the end-of-file opcode and the CRC-64; also counts and hashes it.
    ``restore``: the messages speak of a restore (nothing loaded) instead of a capture."""

    def __init__(self, what: str, *, restore: bool = False) -> None:
        self.what = what
        if restore:
            self._outcome = "it was not loaded"
            self._hint = "run `stackvault check` on the repository"
        else:
            self._outcome = "nothing was recorded"
            self._hint = "run the backup again"
        self.size = 0
        self.sha256 = hashlib.sha256()
        self._head = b""
        self._hold = b""  # the last 9 bytes seen: 0xFF + CRC at the end
        self._crc = Crc64()
        self._result: dict[str, Any] | None = None

    def update(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self.size += len(data)
        self.sha256.update(data)
        if len(self._head) < 9:
            self._head += bytes(data[: 9 - len(self._head)])
        buf = self._hold + bytes(data)
        if len(buf) > 9:
            self._crc.update(memoryview(buf)[:-9])
            self._hold = buf[-9:]
        else:
            self._hold = buf

    def finish(self) -> dict[str, Any]:
        """`SourceError` unless the whole stream was a complete RDB; its version and CRC
        status otherwise (the same again on later calls)."""
        if self._result is not None:
            return self._result
        if not _RDB_HEADER.match(self._head):
            raise SourceError(
                f"{self.what} is not an RDB file (it starts with {self._head[:9]!r}, "
                f"{self.size} bytes); {self._outcome}"
            )
        if self.size < 18 or self._hold[0] != 0xFF:
            raise SourceError(
                f"{self.what} is incomplete: its {self.size} bytes do not end with the RDB "
                f"end-of-file marker; {self._outcome}",
                hint=self._hint,
            )
        stored = int.from_bytes(self._hold[1:], "little")
        crc = "disabled"
        if stored:
            self._crc.update(self._hold[:1])
            if self._crc.finish() != stored:
                raise SourceError(
                    f"{self.what} is damaged: its CRC-64 does not match its content "
                    f"({self.size} bytes); {self._outcome}",
                    hint=self._hint,
                )
            crc = "ok"
        self._result = {"rdb_version": int(self._head[5:9]), "crc64": crc}
        return self._result


class _CheckedStream:
    """A `Readable` over ``read`` (a callable that fills a buffer, 0 at the end) that feeds
    an `RdbCheck`, whose `RdbCheck.finish` runs before EOF is reported: a sink never sees the
    end of an incomplete RDB."""

    def __init__(self, readinto: Callable[[memoryview], int], check: RdbCheck) -> None:
        self._readinto = readinto
        self.check = check
        self.result: dict[str, Any] | None = None

    def readinto(self, buf: memoryview) -> int:
        if self.result is not None:
            return 0
        n = self._readinto(buf)
        if n:
            self.check.update(buf[:n])
            return n
        self.result = self.check.finish()
        return 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = _CHUNK
        buf = bytearray(n)
        got = self.readinto(memoryview(buf))
        return bytes(buf[:got])


# --- RESP over a socket ---------------------------------------------------------------------


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) of the server."""


class _Connection:
    """One RESP2 connection to a server on the network, authenticated from the environment."""

    def __init__(self, host: str, port: int, location: str, timeout: float) -> None:
        self.location = location
        self.timeout = timeout
        self._buf = bytearray()
        try:
            self.sock = socket.create_connection(
                (host, port), timeout=min(timeout, _CONNECT_TIMEOUT)
            )
        except TimeoutError as exc:
            raise SourceError(
                f"cannot connect to redis at {host}:{port} (no answer)",
                hint="check the host, the port and any firewall",
            ) from exc
        except OSError as exc:
            raise SourceError(
                f"cannot connect to redis at {host}:{port} ({exc.strerror or exc})",
                hint="check the host and port, and that the server is running",
            ) from exc
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- wire --------------------------------------------------------------------------------

    def send(self, *args: str | bytes) -> None:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        try:
            self.sock.sendall(b"".join(parts))
        except OSError as exc:
            raise self._broken(exc) from exc

    def _broken(self, exc: BaseException | None = None) -> SourceError:
        if isinstance(exc, TimeoutError):
            return SourceError(
                f"redis at {self.location} did not answer within {self.timeout:.0f} s",
                hint="check the server, or raise ?timeout=",
            )
        detail = f" ({exc})" if exc else ""
        return SourceError(
            f"redis at {self.location} closed the connection{detail}",
            hint="check the server's log; it may have restarted or refused this client",
        )

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes: buffered ones first; `SourceError` at EOF or on a timeout."""
        if self._buf:
            data = bytes(self._buf[:n])
            del self._buf[:n]
            return data
        try:
            data = self.sock.recv(n)
        except OSError as exc:
            raise self._broken(exc) from exc
        if not data:
            raise self._broken()
        return data

    def read_line(self) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line.rstrip(b"\r")
            self._buf += self.recv(65536)

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._buf += self.recv(max(65536, n - len(self._buf)))
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def read_reply(self) -> Any:
        line = self.read_line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            raise RedisReplyError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._read_exact(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise SourceError(f"redis at {self.location} sent an unexpected reply {line[:40]!r}")

    def call(self, *args: str | bytes) -> Any:
        """Send one command, return its reply; `SourceError` for an error reply."""
        self.send(*args)
        try:
            return self.read_reply()
        except RedisReplyError as exc:
            raise reply_error(self.location, str(args[0]), str(exc)) from exc

    def info(self, section: str) -> dict[str, str]:
        return parse_info(_text(self.call("INFO", section)))

    # -- authentication ----------------------------------------------------------------------

    def authenticate(self, user: str | None) -> None:
        password = os.environ.get("REDISCLI_AUTH") or os.environ.get("REDIS_PASSWORD")
        if password is None and user is None:
            return
        args = ["AUTH", *([user] if user else []), password or ""]
        self.send(*args)
        try:
            self.read_reply()
        except RedisReplyError as exc:
            text = str(exc)
            if "without any password configured" in text:
                return  # the server has no password: nothing to authenticate
            if text.startswith("WRONGPASS") or "invalid password" in text:
                who = f"user {user!r} and the" if user else "the"
                raise SourceError(
                    f"redis at {self.location} refused {who} password from "
                    "REDISCLI_AUTH/REDIS_PASSWORD",
                    hint="check the password (and the user in the URL)",
                ) from exc
            raise reply_error(self.location, "AUTH", text) from exc


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def parse_info(text: str) -> dict[str, str]:
    """``INFO`` output as a dict (``# Section`` lines and blanks skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            out[key] = value
    return out


def parse_keyspace(text: str) -> dict[str, int]:
    """``{"db0": 12, ...}`` from ``INFO keyspace`` output (databases without keys absent)."""
    out: dict[str, int] = {}
    for key, value in parse_info(text).items():
        if re.fullmatch(r"db[0-9]+", key):
            fields = dict(part.partition("=")[::2] for part in value.split(","))
            out[key] = int(fields.get("keys", "0"))
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][2:])))


def reply_error(location: str, command: str, text: str) -> SourceError:
    """A `SourceError` for an error reply of the server to ``command``."""
    text = text.strip()
    code = text.split(" ", 1)[0]
    if code == "NOAUTH":
        return SourceError(
            f"redis at {location} requires a password",
            hint="set REDISCLI_AUTH or REDIS_PASSWORD (in a container: REDIS_PASSWORD in its "
            "environment)",
        )
    if code == "WRONGPASS":
        return SourceError(
            f"redis at {location} refused the password",
            hint="check REDISCLI_AUTH/REDIS_PASSWORD and the user in the URL",
        )
    if code == "NOPERM":
        return SourceError(
            f"redis at {location} does not allow {command.upper()} for this user ({text})",
            hint="grant the user that command, or use a +docker URL",
        )
    return SourceError(f"redis at {location} answered {command.upper()} with an error: {text}")


# --- the RDB of a SYNC reply ----------------------------------------------------------------


class _SyncPayload:
    """The RDB that follows a ``SYNC``: ``$LEN`` + bytes, or ``$EOF:MARK`` + bytes + MARK."""

    def __init__(self, conn: _Connection, header: bytes) -> None:
        self.conn = conn
        self.received = 0
        self.length: int | None = None
        self.mark = b""
        if header.startswith(b"$EOF:"):
            self.mode = "diskless"
            self.mark = header[5:]
            if len(self.mark) != 40:
                raise SourceError(f"redis at {conn.location} sent a malformed SYNC header")
        else:
            self.mode = "disk"
            try:
                self.length = int(header[1:])
            except ValueError as exc:
                raise SourceError(
                    f"redis at {conn.location} sent a malformed SYNC header {header[:40]!r}"
                ) from exc
        self._ready = b""
        self._held = b""
        self._ended = False

    def _fetch(self) -> None:
        try:
            if self.length is not None:
                left = self.length - self.received
                if left == 0:
                    self._ended = True
                    return
                data = self.conn.recv(min(_CHUNK, left))
                self.received += len(data)
                self._ready = data
                return
            data = self._held + self.conn.recv(_CHUNK)
        except SourceError as exc:
            of = f" of {self.length}" if self.length is not None else ""
            raise SourceError(
                f"the RDB transfer from redis at {self.conn.location} broke after "
                f"{self.received}{of} bytes ({exc.message}); nothing was recorded",
                hint="check the server's log (it may have been restarted or killed) and run "
                "the backup again",
            ) from exc
        if data.endswith(self.mark):
            self._ready = data[: -len(self.mark)]
            self._held = b""
            self._ended = True
        else:
            self._ready = data[: -len(self.mark)]
            self._held = data[-len(self.mark) :]
        self.received += len(self._ready)

    def readinto(self, buf: memoryview) -> int:
        while not self._ready:
            if self._ended:
                return 0
            self._fetch()
        n = min(len(buf), len(self._ready))
        buf[:n] = self._ready[:n]
        self._ready = self._ready[n:]
        return n


# --- a master that serves one RDB (restore into a server on a host) -------------------------


class _Master:
    """Listens on ``host``:(free port) and serves the RDB to the replica that connects: the
    handshake, ``+FULLRESYNC``, ``$LEN`` and the bytes (the last one only once ``check``
    passed). Runs in a thread; `error` is set if serving failed, `syncs` counts requests."""

    def __init__(
        self,
        host: str,
        open_rdb: Callable[[], Readable],
        size: int,
        sha256: str,
        location: str,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(4)
        self.listener.settimeout(0.5)
        self.host = host
        self.port: int = self.listener.getsockname()[1]
        self.replid = secrets.token_hex(20)
        self.open_rdb = open_rdb
        self.size = size
        self.sha256 = sha256
        self.location = location
        self.syncs = 0
        self.sent = 0
        self.served = threading.Event()
        self.error: StackvaultError | None = None
        self.rdb_info: dict[str, Any] = {}
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="redis-restore", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        with contextlib.suppress(OSError):
            self.listener.close()
        self._thread.join(timeout=10)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        reader = sock.makefile("rb")
        try:
            while not self._stop.is_set():
                args = _read_command(reader)
                if args is None:
                    return
                name = args[0].upper() if args else b""
                if name == b"PING":
                    sock.sendall(b"+PONG\r\n")
                elif name == b"REPLCONF" and len(args) > 1 and args[1].upper() == b"ACK":
                    continue  # the replica's offset reports need no answer
                elif name in (b"REPLCONF", b"AUTH"):
                    sock.sendall(b"+OK\r\n")
                elif name in (b"PSYNC", b"SYNC"):
                    self.syncs += 1
                    if name == b"PSYNC":
                        sock.sendall(b"+FULLRESYNC %s 0\r\n" % self.replid.encode())
                    self._send_rdb(sock)
                else:
                    sock.sendall(b"-ERR unknown command\r\n")
        except StackvaultError as exc:
            self.error = exc
        except OSError:
            pass  # the replica went away; the restore notices
        except Exception as exc:
            self.error = SourceError(f"serving the RDB to redis at {self.location} failed: {exc}")
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _send_rdb(self, sock: socket.socket) -> None:
        check = RdbCheck(f"the artifact's {RDB}", restore=True)
        stream = self.open_rdb()
        sock.sendall(b"$%d\r\n" % self.size)
        last = b""
        while True:
            data = stream.read(_CHUNK)
            if not data:
                break
            check.update(data)
            if check.size > self.size:
                break
            if last:
                sock.sendall(last)
                self.sent += len(last)
            last = data
        if check.size != self.size or check.sha256.hexdigest() != self.sha256:
            raise SourceError(
                f"the artifact's {RDB} has {check.size} bytes (SHA-256 "
                f"{check.sha256.hexdigest()[:12]}…), not the {self.size} bytes recorded; "
                f"redis at {self.location} did not load it",
                hint="run `stackvault check` on the repository",
            )
        self.rdb_info = check.finish()
        sock.sendall(last)  # now complete: the replica may load it
        self.sent += len(last)
        self.served.set()


def _read_command(reader: io.BufferedReader) -> list[bytes] | None:
    """One command of a replica (a RESP array, or an inline line); None at EOF."""
    line = reader.readline()
    if not line:
        return None
    line = line.rstrip(b"\r\n")
    if not line.startswith(b"*"):
        return line.split()
    args = []
    for _ in range(int(line[1:])):
        size = int(reader.readline().rstrip(b"\r\n")[1:])
        args.append(reader.read(size + 2)[:-2])
    return args


# --- redis-cli in a container ---------------------------------------------------------------


class _Cli:
    """``redis-cli`` run in a container through a `ContainerRunner`."""

    def __init__(self, runner: ContainerRunner, port: int, user: str | None, location: str):
        self.runner = runner
        self.location = location
        self.base = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
        if user:
            self.base += ["--user", user]
        self._exit_codes = True  # redis-cli -e (Redis 7); older ones do not know it

    def call(self, *args: str, timeout: float = 120) -> str:
        """One command; its raw reply (without the final newline)."""
        while True:
            argv = [*self.base, *(["-e"] if self._exit_codes else []), *args]
            res = self.runner.run(argv, timeout=timeout)
            out = res.text.rstrip("\n")
            err = res.stderr.strip()
            if self._exit_codes and "Unrecognized option" in (err + out):
                self._exit_codes = False
                continue
            if res.code != 0 or _ERROR_REPLY.match(out) or _ERROR_REPLY.match(err):
                raise self.error(args[0], err or out)
            return out

    def script(self, commands: Sequence[str], timeout: float = 120) -> list[str]:
        """Commands (no spaces in arguments) sent through one connection, in order; their
        raw replies (error replies included: the caller checks them)."""
        marker = f"@@stackvault-{secrets.token_hex(6)}"
        lines = []
        for i, command in enumerate(commands):
            if i:
                lines.append(f"ECHO {marker}")
            lines.append(command)
        res = self.runner.run(self.base, stdin=("\n".join(lines) + "\n").encode(), timeout=timeout)
        if res.code != 0:
            raise self.error(commands[0].split()[0], res.stderr.strip() or res.text)
        parts = res.text.split(f"{marker}\n")
        if len(parts) != len(commands):
            raise self.error(commands[0].split()[0], res.stderr.strip() or res.text[-300:])
        return [p.rstrip("\n") for p in parts]

    def error(self, command: str, text: str) -> SourceError:
        text = text.replace("AUTH failed: ", "").strip()
        if "Could not connect" in text:
            return SourceError(
                f"redis-cli {self.runner.where} cannot reach the server ({text[:200]})",
                hint="give the port the server listens on in the container: "
                "redis+docker://CONTAINER:PORT",
            )
        lines = text.splitlines()
        replies = [line for line in lines if _ERROR_REPLY.match(line)]
        return reply_error(self.location, command, (replies or lines or [""])[0])

    def info(self, section: str) -> dict[str, str]:
        return parse_info(self.call("INFO", section))

    def config_get(self, name: str) -> str:
        out = self.call("CONFIG", "GET", name).split("\n")
        return out[1] if len(out) >= 2 else ""


# --- the source -----------------------------------------------------------------------------


class RedisSource(Source):
    """A Redis server on a host or in a container; see the module docstring."""

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
    ) -> None:
        super().__init__(name, location)
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
            return cls(
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
        port = url.port or _DEFAULT_PORT
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

    def _connect(self) -> _Connection:
        assert self.port is not None
        conn = _Connection(self.host, self.port, self.location, self.timeout)
        try:
            conn.authenticate(self.user)
        except BaseException:
            conn.close()
            raise
        return conn

    def probe(self) -> dict[str, Any]:
        if self.container_name is not None:
            cli, _container = self._container_cli()
            return {"keys": parse_keyspace(cli.call("INFO", "keyspace"))}
        conn = self._connect()
        try:
            return {"keys": parse_keyspace(_text(conn.call("INFO", "keyspace")))}
        finally:
            conn.close()

    def describe_target(self) -> str | None:
        keys = self.probe()["keys"]
        total = sum(keys.values())
        if not total:
            return None
        where = f" in {len(keys)} databases" if len(keys) > 1 else ""
        return f"redis at {self.location} holds {total} key{'s' if total > 1 else ''}{where}"

    def _refuse_unless(self, options: RestoreOptions, reader: ArtifactReader) -> None:
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
        replica: _Connection | None = None
        try:
            version = control.info("server").get("redis_version", "")
            before = parse_keyspace(_text(control.call("INFO", "keyspace")))
            replica = self._connect()
            with contextlib.suppress(SourceError):  # servers before 2.8 do not know it
                replica.call("REPLCONF", "capa", "eof")
            replica.send("SYNC")
            header = self._sync_header(replica, sink)
            forked = time.monotonic()
            after = parse_keyspace(_text(control.call("INFO", "keyspace")))
            payload = _SyncPayload(replica, header)
            stream = _CheckedStream(payload.readinto, RdbCheck(f"the RDB of {self.location}"))
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

    def _sync_header(self, conn: _Connection, sink: ArtifactSink) -> bytes:
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

    def _checked(self, stream: _CheckedStream, size: int, sha256: str) -> dict[str, Any]:
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

    def _container_cli(self) -> tuple[_Cli, Container]:
        from stackvault.sources.docker.engine import container_env, get_container, require_running
        from stackvault.sources.docker.exec import ContainerRunner

        assert self.container_name is not None
        client = self._docker()
        container = get_container(client, self.container_name)
        require_running(container)
        env = container_env(container)
        env_from = {"REDISCLI_AUTH": "REDIS_PASSWORD"} if env.get("REDIS_PASSWORD") else None
        runner = ContainerRunner(client, container, env_from=env_from)
        port = self.port or _port_of(container)
        return _Cli(runner, port, self.user, self.location), container

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
        path = _join(cli.config_get("dir"), cli.config_get("dbfilename") or RDB)
        output = cli.runner.output(["cat", path], label=f"cat {path}")

        def read(buf: memoryview) -> int:
            n = output.readinto(buf)
            if not n:
                output.finish()  # cat's own failure first, then the RDB checks
            return n

        with output:
            stream = _CheckedStream(read, RdbCheck(f"{path} {cli.runner.where}"))
            stored = sink.add_file(RDB, stream, EntryMeta(mode=0o600))
        result = self._checked(stream, stored.size, stored.sha256)
        exact = before == after
        if _saves(cli.info("persistence")) != saves:
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
        """Wait until no RDB save runs (and, given ``previous``, one newer than it has
        succeeded); return the save counters then. `SourceError` when that save failed or
        time ran out."""
        polls = 0
        while True:
            check_interrupted()
            persistence = info("persistence")
            saves = _saves(persistence)
            if persistence.get("rdb_bgsave_in_progress") != "1":
                if previous is None:
                    return saves
                failed = persistence.get("rdb_last_bgsave_status") == "err"
                if _newer(saves, previous) and not failed:
                    return saves
                # rdb_saves counts failed saves too; without it (Redis < 7) only a success
                # moves LASTSAVE on, and a scheduled save starts once an AOF rewrite ends
                if failed and (
                    _newer(saves, previous)
                    or (persistence.get("aof_rewrite_in_progress", "0") == "0" and polls >= 3)
                ):
                    raise SourceError(
                        f"BGSAVE of {self.location} failed (rdb_last_bgsave_status:err)",
                        hint="see the server's log"
                        + (f" (docker logs {self.container_name})" if self.container_name else "")
                        + ": often its data directory is not writable or the disk is full",
                    )
            if time.monotonic() > deadline:
                raise SourceError(
                    f"BGSAVE of {self.location} did not finish within {self.timeout:.0f} s",
                    hint="raise ?timeout= for a large dataset",
                )
            polls += 1
            time.sleep(_POLL)

    # --- restore --------------------------------------------------------------------------

    def restore(self, reader: ArtifactReader, options: RestoreOptions) -> dict[str, Any]:
        entry = reader.entry(RDB)
        if entry.kind != "file":
            raise SourceError(f"{RDB!r} of artifact {reader.name!r} is not a file")
        if self.container_name is not None:
            return self._restore_container(reader, options, entry.size, entry.sha256)
        return self._restore_host(reader, options, entry.size, entry.sha256)

    def _restore_host(
        self, reader: ArtifactReader, options: RestoreOptions, size: int, sha256: str
    ) -> dict[str, Any]:
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
            _check_rdb_version(reader, version, self.location)
            local = conn.sock.getsockname()[0]
            master = _Master(local, lambda: reader.open(RDB), size, sha256, self.location)
            try:
                conn.call("REPLICAOF", local, str(master.port))
                try:
                    self._wait_loaded(conn, master)
                except BaseException:
                    with contextlib.suppress(Exception):
                        conn.call("REPLICAOF", "NO", "ONE")
                    raise
                conn.call("REPLICAOF", "NO", "ONE")
            finally:
                master.close()
            loaded = time.monotonic()
            persisted = self._persist(conn, options)
            keys = parse_keyspace(_text(conn.call("INFO", "keyspace")))
        finally:
            conn.close()
        return {
            "target": self.location,
            "method": "replication",
            "keys": keys,
            "rdb_size": size,
            **master.rdb_info,
            "persisted": persisted,
            "seconds": {
                "load": round(loaded - started, 3),
                "total": round(time.monotonic() - started, 3),
            },
        }

    def _wait_loaded(self, conn: _Connection, master: _Master) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            if master.error is not None:
                raise master.error
            info = conn.info("replication")
            if (
                master.served.is_set()
                and info.get("master_link_status") == "up"
                and info.get("master_sync_in_progress") == "0"
            ):
                return
            if master.syncs > 1:
                raise SourceError(
                    f"redis at {self.location} could not load the RDB (it asked for it again)",
                    hint="its log says why: often an RDB version newer than the server, or a "
                    "data directory it cannot write",
                )
            if time.monotonic() > deadline:
                detail = (
                    "never connected to this process"
                    if master.syncs == 0
                    else f"received {master.sent} of {master.size} bytes"
                )
                raise SourceError(
                    f"redis at {self.location} did not load the RDB within "
                    f"{self.timeout:.0f} s ({detail})",
                    hint=f"the server must be able to connect to {master.host}:{master.port}; "
                    "raise ?timeout= for a large dataset",
                )
            time.sleep(_POLL / 2)

    def _persist(self, conn: _Connection, options: RestoreOptions) -> bool:
        """``BGSAVE`` (and wait for it) if the server has save points; whether it did."""
        try:
            save = conn.call("CONFIG", "GET", "save")
        except SourceError:
            options.notice(
                f"CONFIG is not available on redis at {self.location}; the restored data is "
                "on disk only after its next save"
            )
            return False
        if not isinstance(save, list) or len(save) < 2 or not _text(save[1]).strip():
            return False
        before = _saves(conn.info("persistence"))
        conn.call("BGSAVE", "SCHEDULE")
        self._wait_saved(conn.info, time.monotonic() + self.timeout, before)
        return True

    def _restore_container(
        self, reader: ArtifactReader, options: RestoreOptions, size: int, sha256: str
    ) -> dict[str, Any]:
        import docker.errors

        from stackvault.sources.docker.engine import api_error

        started = time.monotonic()
        cli, container = self._container_cli()
        self._refuse_unless(options, reader)
        _check_rdb_version(reader, cli.info("server").get("redis_version", ""), self.location)
        directory = cli.config_get("dir")
        dbfilename = cli.config_get("dbfilename") or RDB
        aof = cli.config_get("appendonly") == "yes"
        aof_dir = cli.config_get("appenddirname") if aof else ""
        aof_file = cli.config_get("appendfilename") or "appendonly.aof"
        uid, gid = _owner(cli, directory)
        temp = dbfilename + _TEMP_SUFFIX
        remove_temp = ["rm", "-f", _join(directory, temp)]

        # 1. the upload, under a temporary name, while the server runs: a failure changes nothing
        check = RdbCheck(f"the artifact's {RDB}", restore=True)
        try:
            body = _tar_upload(temp, reader.open(RDB), size, sha256, uid, gid, check)
            _put_archive(container, directory, body, "uploading the RDB")
            rdb_info = check.finish()
        except BaseException:
            with contextlib.suppress(Exception):
                cli.runner.run(remove_temp, timeout=60)
            raise
        uploaded = time.monotonic()

        # 2. the AOF aside, stop, link the upload into place, start
        moved: str | None = None
        if aof:
            moved = self._move_aof_aside(cli, directory, aof_dir or aof_file)
            if moved:
                options.notice(f"moved the AOF of {self.location} aside to {moved}")
        try:
            container.stop(timeout=int(self.timeout))
        except docker.errors.DockerException as exc:
            raise api_error(f"stopping container {container.name}", exc) from exc
        try:
            links = _link_archive(temp, dbfilename, aof, aof_dir, aof_file, uid, gid)
            _put_archive(container, directory, iter([links]), "linking the RDB")
        except BaseException as exc:
            if moved:  # started now, it would begin empty with a new AOF: leave it stopped
                raise SourceError(
                    f"restoring into container {container.name} failed after its AOF was "
                    f"moved to {moved} and it was stopped ({exc}); it is left stopped",
                    hint=f"move {moved} back to {_join(directory, aof_dir or aof_file)} "
                    "and start it, or run the restore again",
                ) from exc
            with contextlib.suppress(Exception):
                container.start()
                self._wait_ready(cli, container)
                cli.runner.run(remove_temp, timeout=60)
            raise
        try:
            container.start()
        except docker.errors.DockerException as exc:
            raise api_error(f"starting container {container.name}", exc) from exc
        self._wait_ready(cli, container)
        cli.runner.run(remove_temp, timeout=60)
        keys = parse_keyspace(cli.call("INFO", "keyspace"))
        return {
            "target": self.location,
            "method": "container restart",
            "keys": keys,
            "rdb_size": size,
            **rdb_info,
            "rdb_path": _join(directory, dbfilename),
            "aof_moved_to": moved,
            "seconds": {
                "upload": round(uploaded - started, 3),
                "total": round(time.monotonic() - started, 3),
            },
        }

    def _move_aof_aside(self, cli: _Cli, directory: str, name: str) -> str | None:
        """Rename the AOF (directory or file) to ``NAME.stackvault-old-TIME`` while the server
        runs (it keeps writing to the open files, which is harmless: it is stopped next);
        automatic rewrites are switched off first so none recreates it meanwhile."""
        deadline = time.monotonic() + self.timeout
        cli.call("CONFIG", "SET", "auto-aof-rewrite-percentage", "0")
        while cli.info("persistence").get("aof_rewrite_in_progress") == "1":
            if time.monotonic() > deadline:
                raise SourceError(f"an AOF rewrite of {self.location} did not finish in time")
            time.sleep(_POLL)
        source = _join(directory, name)
        target = f"{source}.stackvault-old-{time.strftime('%Y%m%dT%H%M%S')}"
        script = 'if [ -e "$0" ]; then mv "$0" "$1" && echo moved; fi'
        res = cli.runner.check(["sh", "-c", script, source, target], timeout=120, what="mv")
        return target if "moved" in res.text else None

    def _wait_ready(self, cli: _Cli, container: Container) -> None:
        """Until the server answers PING (not LOADING); `SourceError` if the container stops
        or time runs out."""
        deadline = time.monotonic() + self.timeout
        while True:
            container.reload()
            if container.status not in ("running", "created", "restarting"):
                raise SourceError(
                    f"container {container.name} stopped after the restore "
                    f"({container.status}); the server did not accept the RDB",
                    hint=f"see `docker logs {container.name}`",
                )
            with contextlib.suppress(SourceError):  # not up yet
                if cli.runner.run([*cli.base, "PING"], timeout=60).text.strip() == "PONG":
                    return
            if time.monotonic() > deadline:
                raise SourceError(
                    f"redis in container {container.name} did not answer within "
                    f"{self.timeout:.0f} s after the restore",
                    hint=f"see `docker logs {container.name}`; raise ?timeout= for a large dataset",
                )
            time.sleep(_POLL)


def _saves(persistence: dict[str, str]) -> tuple[int, int]:
    """(successful saves since start or -1, time of the last one): they grow with a save."""
    return int(persistence.get("rdb_saves", "-1")), int(persistence.get("rdb_last_save_time", "0"))


def _newer(saves: tuple[int, int], previous: tuple[int, int]) -> bool:
    if saves[0] >= 0 and previous[0] >= 0:
        return saves[0] > previous[0]
    return saves[1] > previous[1]


def max_rdb_version(server_version: str) -> int | None:
    """The newest RDB format a Redis of ``server_version`` loads (None: unknown, newer)."""
    m = re.match(r"(\d+)\.(\d+)", server_version)
    if not m:
        return None
    version = (int(m[1]), int(m[2]))
    for since, rdb in ((7, 4), 12), ((7, 2), 11), ((7, 0), 10), ((5, 0), 9), ((4, 0), 8):
        if version >= since:
            return None if version >= (8, 0) else rdb
    return 7 if version >= (3, 2) else 6


def _check_rdb_version(reader: ArtifactReader, server_version: str, location: str) -> None:
    """`SourceError` if the artifact's RDB is newer than the server can load."""
    head = reader.open(RDB).read(9)
    if not _RDB_HEADER.match(head):
        raise SourceError(f"{RDB!r} of artifact {reader.name!r} is not an RDB file")
    rdb = int(head[5:9])
    newest = max_rdb_version(server_version)
    if newest is not None and rdb > newest:
        raise SourceError(
            f"the artifact's RDB (format {rdb}) is newer than redis {server_version} at "
            f"{location} can load (format {newest} at most)",
            hint="restore into a server of the version it was captured from, or newer",
        )


# --- container helpers ----------------------------------------------------------------------


def _join(directory: str, name: str) -> str:
    return name if name.startswith("/") else f"{directory.rstrip('/')}/{name}"


def _port_of(container: Container) -> int:
    """The ``--port`` of the container's command line, else 6379."""
    config = container.attrs.get("Config", {})
    argv = [str(a) for a in (config.get("Entrypoint") or []) + (config.get("Cmd") or [])]
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv) and argv[i + 1].isdigit():
            return int(argv[i + 1])
        if arg.startswith("--port=") and arg[7:].isdigit():
            return int(arg[7:])
    return _DEFAULT_PORT


def _owner(cli: _Cli, directory: str) -> tuple[int, int]:
    """The numeric owner of ``directory`` in the container (0, 0 if unknown)."""
    script = 'stat -c "%u %g" "$0" 2>/dev/null || ls -nd "$0"'
    res = cli.runner.run(["sh", "-c", script, directory], timeout=60)
    fields = res.text.split()
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return int(fields[0]), int(fields[1])
    if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
        return int(fields[2]), int(fields[3])
    return 0, 0


def _tar_upload(
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
    last = b""
    while True:
        data = stream.read(_CHUNK)
        if not data:
            break
        check.update(data)
        if check.size > size:
            break
        if last:
            yield last
        last = data
    if check.size != size or check.sha256.hexdigest() != sha256:
        raise SourceError(
            f"the artifact's {RDB} has {check.size} bytes (SHA-256 "
            f"{check.sha256.hexdigest()[:12]}…), not the {size} bytes recorded",
            hint="run `stackvault check` on the repository",
        )
    check.finish()
    yield last + b"\0" * (-size % 512) + b"\0" * 1024


def _link_archive(
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


def _put_archive(container: Container, path: str, body: Iterator[bytes], what: str) -> None:
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
