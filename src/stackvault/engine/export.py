"""Export a snapshot as a plain tar stream (engine layer), readable without stackvault.

PAX format keeps nanosecond mtimes, long and non-ASCII names, numeric owners and xattrs
(``SCHILY.xattr.*``, text values only). Hard links become tar hard-link members. Every
file's bytes are
authenticated and checked against the snapshot's SHA-256 on the way out.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from stackvault.engine.browse import walk
from stackvault.errors import IntegrityError
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node


class _BlobReader(io.RawIOBase):
    """A file-like view of a file node's blobs, for `tarfile.addfile`."""

    def __init__(self, chunks: Iterator[bytes | memoryview]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = memoryview(nxt)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def export_tar(
    repo: Repository, snapshot: Snapshot, out: BinaryIO, path: str = "/"
) -> tuple[int, int]:
    """Write the snapshot (or the subtree at ``path``) as tar to ``out``.

    Returns ``(members, bytes of file data)``."""
    from stackvault.engine.restore import read_file_blobs

    members = total = 0
    first_link: dict[str, str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for abspath, node in walk(repo, snapshot, path):
            name = abspath.lstrip("/")
            info = _tarinfo(name, node)
            if node.type == "file" and node.hardlink and node.hardlink in first_link:
                info.type = tarfile.LNKTYPE
                info.linkname = first_link[node.hardlink]
                info.size = 0
                tar.addfile(info)
            elif node.type == "file":
                if node.hardlink:
                    first_link[node.hardlink] = name
                reader = io.BufferedReader(_BlobReader(read_file_blobs(repo, node)), 1 << 20)
                tar.addfile(info, reader)
                total += node.size
            else:
                tar.addfile(info)
            members += 1
    return members, total


def _tarinfo(name: str, node: Node) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = node.mode
    info.uid = node.uid
    info.gid = node.gid
    info.mtime = node.mtime_ns / 1e9
    pax: dict[str, str] = {"mtime": f"{node.mtime_ns // 10**9}.{node.mtime_ns % 10**9:09d}"}
    for key, value in node.xattrs:
        # tarfile writes PAX values as UTF-8 text; a binary value cannot be carried exactly,
        # so it is left out rather than written altered.
        try:
            pax[f"SCHILY.xattr.{key}"] = value.decode("utf-8")
        except UnicodeDecodeError:
            continue
    info.pax_headers = pax
    if node.type == "dir":
        info.type = tarfile.DIRTYPE
    elif node.type == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = node.target or ""
    else:
        info.type = tarfile.REGTYPE
        info.size = node.size
    if node.type == "file" and node.size and not node.content:
        raise IntegrityError(f"{name}: file has a size but no content in the snapshot")
    return info
