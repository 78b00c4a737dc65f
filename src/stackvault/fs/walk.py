"""Filesystem walker (fs layer): lists directories and opens files for a backup.

Symlinks are never followed. Each directory is opened with ``O_NOFOLLOW`` and checked to be
the very inode that was recorded for it, and its children are ``lstat``-ed relative to that
open directory. So a directory or file swapped for a symlink (or moved) while the backup runs
is reported, never read through: the content captured for a path is the content of the inode
recorded for that path.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from stackvault.errors import SourceError, SourceVanished
from stackvault.fs.entry import (
    FsEntry,
    KnownFile,
    entry_from_stat,
    kind_of,
    read_xattrs,
    special_kind_name,
)
from stackvault.fs.exclude import ExcludeMatcher

VANISHED = "vanished during backup"
"""The notice for an entry deleted between its listing and its reading."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: if a fifo was swapped in for the file, open() must not hang waiting for a writer.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NOATIME = getattr(os, "O_NOATIME", 0)
_PATH_FITS = 4000  # bytes of a path opened whole; PATH_MAX is 4096 on Linux, with the NUL


@dataclass(frozen=True)
class Problem:
    """Something the walker could not capture, or chose not to.

    ``incomplete`` is True when data the user asked for is missing from the backup (the
    snapshot must be marked incomplete) and False for notices (a skipped socket, an entry
    that vanished before it could be read, a mount point not descended into).
    """

    path: str
    message: str
    incomplete: bool


CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
"""The first bytes of a cache directory's tag file (https://bford.info/cachedir/)."""


@dataclass(frozen=True)
class WalkRules:
    """What else a backup leaves out, beyond the exclude patterns (below the top-level paths,
    which are always captured): directories holding a file of one of the names of
    ``if_present`` (``NAME`` or ``NAME:CONTENT``, the file's first bytes), cache directories
    (a ``CACHEDIR.TAG`` with its signature) with ``caches``, and regular files larger than
    ``larger_than`` bytes. Each directory left out gets a notice."""

    if_present: tuple[str, ...] = ()
    caches: bool = False
    larger_than: int | None = None

    def markers(self) -> list[tuple[str, bytes]]:
        """(file name, first bytes it must have, empty for any) of each marker file."""
        out = []
        for item in self.if_present:
            name, _, content = item.partition(":")
            out.append((name, content.encode()))
        if self.caches:
            out.append((CACHEDIR_TAG, CACHEDIR_SIGNATURE))
        return out


def _marked(dir_fd: int, name: str, markers: list[tuple[str, bytes]]) -> str | None:
    """The marker file found in directory ``name`` (of ``dir_fd``), if any."""
    for marker, content in markers:
        try:
            fd = os.open(f"{name}/{marker}", _FILE_FLAGS, dir_fd=dir_fd)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            if not content or os.read(fd, len(content)) == content:
                return marker
        except OSError:
            continue
        finally:
            os.close(fd)
    return None


class FileWalker:
    """Produces `FsEntry` values for a backup; safe to use from several threads.

    The engine calls `stat_root` for each top-level path, `scan_dir` for each directory
    entry it wants to descend into, and `open_regular_file` to read each file.

    With ``one_file_system``, a subdirectory on another device than its parent directory (a
    mount point) is still returned by `scan_dir`, so the directory layout restores, but
    `scan_dir` on it returns nothing; a notice (incomplete=False) says so. Since the walker
    never descends into a mount point, "another device than its parent" is the same as
    "another device than the root it was reached from". Files on another device (bind-mounted
    single files) are kept. Top-level paths are always captured, whatever their device.
    """

    def __init__(
        self,
        excludes: ExcludeMatcher,
        one_file_system: bool,
        on_problem: Callable[[Problem], None],
        rules: WalkRules | None = None,
    ) -> None:
        self.excludes = excludes
        self.one_file_system = one_file_system
        self.on_problem = on_problem
        self.rules = rules or WalkRules()
        self._markers = self.rules.markers()
        self._lock = threading.Lock()
        self._mount_points: set[tuple[int, int]] = set()  # (device, inode) not to descend into

    def stat_root(self, path: str) -> FsEntry | None:
        """The entry for a top-level backup path, which must be absolute and resolved.

        A symlink is returned as a symlink. Returns None (after a notice) when the path is
        excluded or is a socket. Raises `SourceError` if it does not exist or
        cannot be examined.
        """
        if not os.path.isabs(path):
            raise SourceError(f"cannot back up {path}: not an absolute path")
        path = os.path.normpath(path)
        try:
            st = os.lstat(path)
        except FileNotFoundError as exc:
            raise SourceError(f"cannot back up {path}: no such file or directory") from exc
        except OSError as exc:
            raise SourceError(f"cannot back up {path}: {exc.strerror}") from exc
        kind = kind_of(st.st_mode)
        if kind is None:
            self._notice(path, f"skipped {special_kind_name(st.st_mode)}")
            return None
        if self.excludes.excluded(path, kind == "dir"):
            self._notice(path, "excluded")
            return None
        name = os.path.basename(path) or "/"
        try:
            target = os.readlink(path) if kind == "symlink" else None
        except OSError as exc:
            raise SourceError(f"cannot back up {path}: {exc.strerror}") from exc
        return entry_from_stat(path, name, st, link_target=target, xattrs=self._xattrs(path))

    def is_mount_point(self, dir_entry: FsEntry) -> bool:
        """Whether `scan_dir` keeps this directory empty (one-file-system)."""
        with self._lock:
            return (dir_entry.device, dir_entry.inode) in self._mount_points

    def keep_empty(self, dir_entry: FsEntry) -> None:
        """Have `scan_dir` keep this directory empty, as another walker found it to be a
        mount point (a backup's walk in several processes)."""
        with self._lock:
            self._mount_points.add((dir_entry.device, dir_entry.inode))

    def scan_dir(
        self, dir_entry: FsEntry, known: Mapping[str, KnownFile] | None = None
    ) -> list[FsEntry]:
        """The children of a directory entry, sorted by the bytes of their names.

        Excluded children are dropped silently; sockets (which cannot be restored) with a
        notice.
        An unreadable directory is reported (incomplete=True) and yields ``[]``. ``known``:
        what an earlier backup recorded of the directory's files, by name; a file it still
        describes gets the extended attributes recorded there (`KnownFile`).
        """
        if dir_entry.kind != "dir":
            raise SourceError(f"cannot list {dir_entry.path}: not a directory")
        with self._lock:
            if (dir_entry.device, dir_entry.inode) in self._mount_points:
                return []
        try:
            fd = open_path(dir_entry.path, _DIR_FLAGS)
        except FileNotFoundError:
            self._notice(dir_entry.path, VANISHED)
            return []
        except OSError as exc:
            reason = _replaced(exc) or exc.strerror or str(exc)
            self._incomplete(dir_entry.path, f"cannot read directory: {reason}")
            return []
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (dir_entry.device, dir_entry.inode):
                self._incomplete(dir_entry.path, "cannot read directory: replaced during backup")
                return []
            try:
                with os.scandir(fd) as it:
                    names = [e.name for e in it]
            except OSError as exc:
                self._incomplete(dir_entry.path, f"cannot read directory: {exc.strerror}")
                return []
            names.sort(key=os.fsencode)
            prefix = dir_entry.path if dir_entry.path.endswith("/") else dir_entry.path + "/"
            children = (self._child(fd, dir_entry, prefix, name, known) for name in names)
            return [child for child in children if child is not None]
        finally:
            os.close(fd)

    def open_regular_file(self, entry: FsEntry) -> BinaryIO:
        """Open a file entry for reading (unbuffered); the caller closes it.

        Raises `SourceError` (naming the path and the reason) if the file cannot be opened or
        is no longer the regular file with the entry's inode and device, `SourceVanished` if
        it no longer exists.
        """
        fd = self._open_fd(entry, blocking=True)
        try:
            return os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise

    def open_directory(self, dir_entry: FsEntry) -> int | None:
        """The directory of ``dir_entry`` opened and checked to still be it (its device and
        inode), to read its files relative to it (`read_small_file`'s ``dir_fd``): the
        kernel then resolves one name per file instead of the whole path. The caller closes
        it. None if it cannot be opened or was replaced: its files are then read by their
        paths, which report what is wrong with each."""
        try:
            fd = open_path(dir_entry.path, _DIR_FLAGS)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != (dir_entry.device, dir_entry.inode):
            os.close(fd)
            return None
        return fd

    def read_small_file(self, entry: FsEntry, limit: int, dir_fd: int | None = None) -> bytes:
        """The contents of a file entry, up to ``limit`` bytes (``limit`` bytes means it may
        have grown: the caller reads it as a stream instead). Same checks and errors as
        `open_regular_file`; one open, fstat, read and close, without a file object: this
        runs once per small file of a backup. ``dir_fd``: the entry's directory, opened by
        `open_directory` (the file is then opened by its name there)."""
        fd = self._open_fd(entry, blocking=False, dir_fd=dir_fd)
        try:
            # O_NONBLOCK has no effect on reads of a regular file (fstat checked it is one).
            # Ask for one byte more than listed: getting exactly the listed size is the
            # common case and needs no second read to find the end.
            want = min(limit, entry.size + 1)
            data = os.read(fd, want)
            if len(data) != entry.size and len(data) > 0:
                # Shorter (a short read, or truncated) or longer (it grew): read on until
                # EOF or the limit.
                parts = [data]
                size = len(data)
                while size < limit and (more := os.read(fd, limit - size)):
                    parts.append(more)
                    size += len(more)
                data = b"".join(parts)
            return data
        except OSError as exc:
            raise SourceError(f"cannot read {entry.path}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _open_fd(self, entry: FsEntry, *, blocking: bool, dir_fd: int | None = None) -> int:
        """The entry's file opened read-only (``O_NONBLOCK`` cleared if ``blocking``; by its
        name in ``dir_fd`` if given), checked to still be the regular file with the entry's
        inode and device."""
        if entry.kind != "file":
            raise SourceError(f"cannot read {entry.path}: not a regular file")
        try:
            try:
                fd = _open_entry(entry, _FILE_FLAGS | _NOATIME, dir_fd)
            except PermissionError as exc:
                # O_NOATIME needs ownership of the file (or CAP_FOWNER); read without it.
                if not _NOATIME or exc.errno != errno.EPERM:
                    raise
                fd = _open_entry(entry, _FILE_FLAGS, dir_fd)
        except FileNotFoundError as exc:
            raise SourceVanished(f"{entry.path}: {VANISHED}") from exc
        except OSError as exc:
            reason = _replaced(exc) or exc.strerror or str(exc)
            raise SourceError(f"cannot read {entry.path}: {reason}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (
                entry.device,
                entry.inode,
            ):
                raise SourceError(f"cannot read {entry.path}: replaced during backup")
            if blocking:
                os.set_blocking(fd, True)
            return fd
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError):
                raise SourceError(f"cannot read {entry.path}: {exc.strerror}") from exc
            raise

    # --- internals -------------------------------------------------------------------------

    def _child(
        self,
        dir_fd: int,
        parent: FsEntry,
        prefix: str,
        name: str,
        known: Mapping[str, KnownFile] | None,
    ) -> FsEntry | None:
        path = prefix + name
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            kind = kind_of(st.st_mode)
            if kind is None:
                if not self.excludes.excluded(path, False):
                    self._notice(path, f"skipped {special_kind_name(st.st_mode)}")
                return None
            if self.excludes.excluded(path, kind == "dir"):
                return None
            if self._left_out(dir_fd, path, name, kind, st):
                return None
            target = os.readlink(name, dir_fd=dir_fd) if kind == "symlink" else None
        except FileNotFoundError:
            self._notice(path, VANISHED)
            return None
        except OSError as exc:
            self._incomplete(path, f"cannot read: {exc.strerror}")
            return None
        if kind == "dir" and self.one_file_system and st.st_dev != parent.device:
            with self._lock:
                self._mount_points.add((st.st_dev, st.st_ino))
            self._notice(path, "mount point kept empty: another filesystem (one-file-system)")
        was = known.get(name) if known and kind == "file" else None
        if was is not None and was.describes(st):
            xattrs = was.xattrs
        else:
            xattrs = self._xattrs(path, dir_fd, name)
        return entry_from_stat(path, name, st, link_target=target, xattrs=xattrs, kind=kind)

    def _left_out(self, dir_fd: int, path: str, name: str, kind: str, st: os.stat_result) -> bool:
        """Whether `WalkRules` leave this child out (a directory with a notice)."""
        rules = self.rules
        if kind == "file" and rules.larger_than is not None:
            return st.st_size > rules.larger_than
        if kind == "dir" and (rules.if_present or rules.caches):
            marker = _marked(dir_fd, name, self._markers)
            if marker is not None:
                self._notice(path, f"excluded: it holds {marker}")
                return True
        return False

    def _xattrs(
        self, path: str, dir_fd: int | None = None, name: str = ""
    ) -> tuple[tuple[str, bytes], ...]:
        # listxattr has no dir_fd form; going by path is fine for attributes of lstat-ed
        # entries because the final component is not followed. A path longer than PATH_MAX
        # is reached through the open directory's /proc/self/fd link instead.
        try:
            try:
                return read_xattrs(path)
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG or dir_fd is None:
                    raise
                return read_xattrs(f"/proc/self/fd/{dir_fd}/{name}")
        except FileNotFoundError:
            return ()
        except OSError as exc:
            self._incomplete(path, f"cannot read extended attributes: {exc.strerror}")
            return ()

    def _notice(self, path: str, message: str) -> None:
        self.on_problem(Problem(path, message, incomplete=False))

    def _incomplete(self, path: str, message: str) -> None:
        self.on_problem(Problem(path, message, incomplete=True))


def will_read(path: str, dir_fd: int | None = None) -> None:
    """Ask the kernel to start reading a file: by ``path``, or by its name in ``dir_fd``
    (`FileWalker.open_directory`). Opened as the walk opens files to read them, so a file
    that became a fifo or a symlink is neither waited on nor followed; errors are left for
    the real read, which reports them."""
    try:
        fd = os.open(path, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_entry(entry: FsEntry, flags: int, dir_fd: int | None) -> int:
    """``os.open`` of an entry: by its name in ``dir_fd``, else by its path."""
    if dir_fd is None:
        return open_path(entry.path, flags)
    return os.open(entry.name, flags, dir_fd=dir_fd)


def open_path(path: str, flags: int) -> int:
    """``os.open(path, flags)``, also for an absolute ``path`` longer than PATH_MAX (which
    the kernel refuses whole): then its longest prefix that fits is opened and the rest is
    walked one directory at a time (``O_DIRECTORY | O_NOFOLLOW``, as the walker reached
    them), and the last component opened with ``flags`` relative to its directory. Only
    paths the kernel refused take that way, so the common case costs nothing more."""
    try:
        return os.open(path, flags)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    raw = os.fsencode(path)
    cut = raw.rfind(b"/", 0, _PATH_FITS)
    rest = [part for part in raw[cut + 1 :].split(b"/") if part]
    if cut <= 0 or not rest:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path)
    fd = os.open(raw[:cut], _DIR_FLAGS)
    try:
        for part in rest[:-1]:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(rest[-1], flags, dir_fd=fd)
    finally:
        os.close(fd)


def _replaced(exc: OSError) -> str | None:
    """The reason to report when an O_NOFOLLOW open failed because the entry changed type."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "replaced during backup"
    return None
