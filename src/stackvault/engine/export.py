"""Export a snapshot as a plain tar stream (engine layer), readable without stackvault.

PAX format keeps nanosecond mtimes, long and non-ASCII names, numeric owners and xattrs
(``SCHILY.xattr.*``, text values only). Hard links become tar hard-link members, fifos and
device nodes tar FIFO, CHR and BLK members. Every
file's bytes are
authenticated and checked against the snapshot's SHA-256 on the way out.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from typing import BinaryIO

from stackvault.engine.browse import walk
from stackvault.engine.filedata import open_file_node
from stackvault.errors import IntegrityError
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node


def export_tar(
    repo: Repository,
    snapshot: Snapshot,
    out: BinaryIO,
    path: str = "/",
    on_error: Callable[[str, IntegrityError], None] | None = None,
) -> tuple[int, int]:
    """Write the snapshot (or the subtree at ``path``) as tar to ``out``. A directory whose
    listing cannot be read is written empty and reported to ``on_error`` (raises without).

    Returns ``(members, bytes of file data)``."""
    members = total = 0
    first_link: dict[str, str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for abspath, node in walk(repo, snapshot, path, on_error=on_error):
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
                tar.addfile(info, open_file_node(repo, node))
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
    elif node.type == "fifo":
        info.type = tarfile.FIFOTYPE
    elif node.type in ("chardev", "blockdev"):
        info.type = tarfile.CHRTYPE if node.type == "chardev" else tarfile.BLKTYPE
        info.devmajor, info.devminor = node.major, node.minor
    else:
        info.type = tarfile.REGTYPE
        info.size = node.size
    if node.type == "file" and node.size and not node.content:
        raise IntegrityError(f"{name}: file has a size but no content in the snapshot")
    return info
