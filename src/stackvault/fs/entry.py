"""Filesystem entries (fs layer): one file, directory, symlink, fifo or device node with
its metadata.

Names and paths are ``str`` as produced by `os.fsdecode`: bytes that are not valid in the
filesystem encoding survive as lone surrogates (``surrogateescape``), so `os.fsencode` gives
back the exact on-disk bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Literal, NamedTuple

from stackvault.errors import SourceError

EntryKind = Literal["file", "dir", "symlink", "fifo", "chardev", "blockdev"]
DEVICE_KINDS = frozenset(("chardev", "blockdev"))

# errno values meaning "this filesystem (or this file type) has no extended attributes".
_NO_XATTR_SUPPORT = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})


class FsEntry(NamedTuple):
    """One directory entry as read from the filesystem (``lstat``, link text, xattrs) by a
    backup's walk; never a socket. A snapshot stores it as a `Node` (`stackvault.repo.tree`;
    the conversions are in `stackvault.engine.nodes`).

    ``size`` is the byte size for files, the length of the link text for symlinks and 0 for
    directories, fifos and devices (``st_size`` is filesystem-specific noise there).
    ``rdev`` is the device number of a device node (``st_rdev``), else 0. ``link_target`` is set for
    symlinks only. ``xattrs`` is sorted by name and empty when there are none or the
    filesystem does not support them. Immutable (a named tuple: a backup makes one per file,
    and a frozen dataclass costs twice as much to build).
    """

    name: str
    path: str
    kind: EntryKind
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int
    nlink: int
    link_target: str | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()
    rdev: int = 0


class KnownFile(NamedTuple):
    """What an earlier backup recorded of a regular file. While the file's size, times,
    inode and device are still these, its extended attributes are still ``xattrs``: setting
    or removing one changes the file's ctime. The walk then takes them from here instead of
    asking the kernel again (`FileWalker.scan_dir`), one ``listxattr`` per unchanged file."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int
    xattrs: tuple[tuple[str, bytes], ...]

    def describes(self, st: os.stat_result) -> bool:
        """Whether ``st`` (an ``lstat`` of a regular file) is still the file recorded."""
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev) == self[:5]


def kind_of(st_mode: int) -> EntryKind | None:
    """The entry kind for an ``lstat`` mode, or None for sockets (and unknown types)."""
    if stat.S_ISREG(st_mode):
        return "file"
    if stat.S_ISDIR(st_mode):
        return "dir"
    if stat.S_ISLNK(st_mode):
        return "symlink"
    if stat.S_ISFIFO(st_mode):
        return "fifo"
    if stat.S_ISCHR(st_mode):
        return "chardev"
    if stat.S_ISBLK(st_mode):
        return "blockdev"
    return None


def special_kind_name(st_mode: int) -> str:
    """A human name for a file type that is not captured ("socket", "fifo", ...)."""
    if stat.S_ISSOCK(st_mode):
        return "socket"
    if stat.S_ISFIFO(st_mode):
        return "fifo"
    if stat.S_ISBLK(st_mode):
        return "block device"
    if stat.S_ISCHR(st_mode):
        return "character device"
    return "special file"


def entry_from_stat(
    path: str,
    name: str,
    st: os.stat_result,
    *,
    link_target: str | None = None,
    xattrs: tuple[tuple[str, bytes], ...] = (),
    kind: EntryKind | None = None,
) -> FsEntry:
    """Build an entry from an ``lstat`` result; touches no disk. ``kind`` is
    ``kind_of(st.st_mode)`` if the caller has it already.

    Raises `SourceError` if ``st`` describes a socket, or if a symlink comes without its
    ``link_target``.
    """
    if kind is None:
        kind = kind_of(st.st_mode)
    if kind is None:
        raise SourceError(f"cannot back up {path}: it is a {special_kind_name(st.st_mode)}")
    if kind == "symlink" and link_target is None:
        raise SourceError(f"cannot back up {path}: symlink target not read")
    entry = FsEntry(
        name,
        path,
        kind,
        st.st_mode & 0o7777,  # stat.S_IMODE
        st.st_uid,
        st.st_gid,
        st.st_size if kind == "file" or kind == "symlink" else 0,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
        st.st_dev,
        st.st_nlink,
        link_target if kind == "symlink" else None,
        tuple(sorted(xattrs)) if xattrs else (),
    )
    if kind in DEVICE_KINDS:
        return entry._replace(rdev=st.st_rdev)
    return entry


def read_xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    """The extended attributes of ``path`` itself (symlinks not followed), sorted by name.

    Returns ``()`` when the filesystem does not support them. An attribute removed between
    listing and reading is left out. Other failures raise `OSError` for the caller to report.
    """
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTR_SUPPORT:
            return ()
        raise
    found: list[tuple[str, bytes]] = []
    for attr in names:
        try:
            found.append((attr, os.getxattr(path, attr, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno in _NO_XATTR_SUPPORT or exc.errno == errno.ENODATA:
                continue
            raise
    found.sort()
    return tuple(found)
