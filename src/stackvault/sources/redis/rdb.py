"""The RDB file: its completeness checks and the format versions servers load (sources layer).

**Completeness.** Whichever way it came, the stream must be an RDB: ``REDIS`` + four digits at
the start, the end-of-file opcode 0xFF followed by the 8-byte CRC-64 at the end, and the
CRC-64 (Jones polynomial, as Redis computes it) of everything before must match (`Crc64`, pure
Python at roughly 100 MB/s; a server with ``rdbchecksum no`` writes 0 and is recorded as
``"crc64": "disabled"``). A length-prefixed transfer must deliver exactly its length. A stream
that breaks, ends early or fails a check raises `SourceError` out of the sink: nothing is
recorded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Literal, TypedDict

from stackvault.errors import SourceError
from stackvault.sources.contract import ArtifactReader, Readable
from stackvault.sources.redis.crc64 import Crc64

RDB = "dump.rdb"
"""The artifact's only file."""

CHUNK = 1 << 20
"""Bytes per read of an RDB stream."""

_RDB_HEADER = re.compile(rb"^REDIS[0-9]{4}$")


class RdbInfo(TypedDict):
    """What checking a whole RDB stream found: its format version, and whether its CRC-64
    was checked (``ok``) or written as zero (``disabled``)."""

    rdb_version: int
    crc64: Literal["ok", "disabled"]


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
        self._result: RdbInfo | None = None

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

    def finish(self) -> RdbInfo:
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
        crc: Literal["ok", "disabled"] = "disabled"
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


def held_back(
    stream: Readable, check: RdbCheck, size: int, sha256: str, outcome: str = ""
) -> Iterator[bytes]:
    """The artifact's RDB from ``stream`` in pieces, each fed to ``check``, the last one held
    back until the whole had ``size`` bytes with SHA-256 ``sha256`` and was a complete RDB -
    so a server being fed never receives the end of a wrong file. `SourceError` otherwise
    (``outcome``: what that means for the target, appended to the message)."""
    last = b""
    while data := stream.read(CHUNK):
        check.update(data)
        if check.size > size:
            break
        if last:
            yield last
        last = data
    if check.size != size or check.sha256.hexdigest() != sha256:
        raise SourceError(
            f"the artifact's {RDB} has {check.size} bytes (SHA-256 "
            f"{check.sha256.hexdigest()[:12]}…), not the {size} bytes recorded{outcome}",
            hint="run `stackvault check` on the repository",
        )
    check.finish()
    yield last


class CheckedStream:
    """A `Readable` over ``read`` (a callable that fills a buffer, 0 at the end) that feeds
    an `RdbCheck`, whose `RdbCheck.finish` runs before EOF is reported: a sink never sees the
    end of an incomplete RDB."""

    def __init__(self, readinto: Callable[[memoryview], int], check: RdbCheck) -> None:
        self._readinto = readinto
        self.check = check
        self.result: RdbInfo | None = None

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
            n = CHUNK
        buf = bytearray(n)
        got = self.readinto(memoryview(buf))
        return bytes(buf[:got])


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


def check_rdb_version(reader: ArtifactReader, server_version: str, location: str) -> None:
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
