"""Restore path safety (fs layer): name validation and symlink-proof directory fds.

Used by `stackvault.fs.target`. A path below the restore root is a tuple of
components; `DirFds` reaches a directory by opening each component with
``O_DIRECTORY | O_NOFOLLOW`` relative to its parent's fd, so no symlink is ever followed.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from stackvault.errors import RestoreRefused, StackvaultError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_DIR_MODE = 0o700  # until the engine applies the final mode
MAX_CACHED_DIRS = 256  # directory fds kept open; pinned ones are never evicted


def show(parts: Sequence[str]) -> str:
    """A path for messages: control characters, NUL and undecodable bytes escaped."""
    text = "/".join(parts)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_NOT_NAMES = frozenset({"", ".", ".."})
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def check_rel(rel: Sequence[str]) -> tuple[str, ...]:
    """``rel`` as a tuple if every component is one safe name; else `RestoreRefused`.

    A safe name is not empty, not ``.`` or ``..``, has no ``/`` or NUL, and encodes to bytes.
    Runs for every restored file: one set lookup, two scans and one encode per component.
    """
    parts = tuple(rel)
    for part in parts:
        try:
            if part not in _NOT_NAMES and "/" not in part and "\0" not in part:
                part.encode(_FS_ENCODING, _FS_ERRORS)  # what os.fsencode does
                continue
        except UnicodeEncodeError:
            pass
        raise RestoreRefused(
            f"refusing to restore '{show(parts)}': path component '{show([part])}' {_problem(part)}"
        )
    return parts


def _problem(part: str) -> str:
    """Why ``part`` is not a safe name (`check_rel`)."""
    if part == "":
        return "is empty"
    if part == "..":
        return "would escape the target"
    if part == ".":
        return "is not a name"
    if "/" in part:
        return "contains '/'"
    if "\0" in part:
        return "contains NUL"
    return "is not a valid file name"


def os_failure(root: str, parts: Sequence[str], exc: OSError | UnicodeError) -> StackvaultError:
    """The error to raise when an OS call on ``parts`` below ``root`` failed."""
    reason = exc.strerror if isinstance(exc, OSError) else str(exc)
    return StackvaultError(f"cannot restore '{show(parts)}' in {root}: {reason}")


def lstat_at(root: str, parts: tuple[str, ...], pfd: int) -> os.stat_result | None:
    """``lstat`` of the last component of ``parts`` in directory ``pfd``; None if absent."""
    try:
        return os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_failure(root, parts, exc) from exc


def exists_error(parts: Sequence[str], *, directory: bool = False) -> RestoreRefused:
    """The refusal for an entry whose name is taken."""
    if directory:
        return RestoreRefused(
            f"refusing to restore '{show(parts)}': a directory of that name exists"
        )
    return RestoreRefused(
        f"refusing to restore '{show(parts)}': it already exists; pass --overwrite"
    )


def check_slot(root: str, parts: tuple[str, ...], pfd: int, *, overwrite: bool) -> bool:
    """Whether ``parts`` exists; refuse if a non-directory may not replace it.

    A directory is never replaced; anything else only with ``overwrite``.
    """
    st = lstat_at(root, parts, pfd)
    if st is None:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise exists_error(parts, directory=True)
    if not overwrite:
        raise exists_error(parts)
    return True


def clear_slot(root: str, parts: tuple[str, ...], pfd: int, *, overwrite: bool) -> None:
    """Make room for a new entry at ``parts``, unlinking a replaceable old one."""
    if check_slot(root, parts, pfd, overwrite=overwrite):
        try:
            os.unlink(parts[-1], dir_fd=pfd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise os_failure(root, parts, exc) from exc


@dataclass(slots=True)
class DirHandle:
    """A cached directory fd; ``pins`` counts the operations using it right now."""

    fd: int
    pins: int = 0


class DirFds:
    """Open directory fds below one root fd, cached least-recently-used; thread-safe.

    An fd is pinned between `acquire` and `release` and is never closed while pinned, so
    another thread's eviction cannot close it (and let the number be reused) under a caller.
    """

    def __init__(self, root: str, root_fd: int) -> None:
        self.root = root
        self._root_fd = root_fd
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, ...], DirHandle] = OrderedDict()
        self._closed = False

    @property
    def root_fd(self) -> int:
        """The root's fd (owned by this object)."""
        return self._root_fd

    def acquire(self, parts: tuple[str, ...], *, create: bool) -> tuple[int, DirHandle | None]:
        """A pinned fd of directory ``parts`` (``()`` is the root, which is never evicted).

        With ``create``, missing directories are made (mode 0o700). A symlink or
        non-directory on the way raises `RestoreRefused`.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("restore target is closed")
            if not parts:
                return self._root_fd, None
            handle = self._open(parts, create)
            return handle.fd, handle

    def release(self, handle: DirHandle | None) -> None:
        """Unpin what `acquire` returned."""
        if handle is not None:
            with self._lock:
                handle.pins -= 1

    @contextmanager
    def parent_of(self, parts: tuple[str, ...], *, create: bool = True) -> Iterator[int]:
        """The pinned fd of the directory that holds ``parts``, for the block's duration."""
        fd, handle = self.acquire(parts[:-1], create=create)
        try:
            yield fd
        finally:
            self.release(handle)

    def close(self) -> None:
        """Close every fd, the root's included."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for handle in self._cache.values():
                os.close(handle.fd)
            self._cache.clear()
            os.close(self._root_fd)

    def _open(self, parts: tuple[str, ...], create: bool) -> DirHandle:
        """Find or open directory ``parts`` and pin it; the caller holds the lock.

        Iterative, not recursive: trees may be deeper than Python's recursion limit, and
        evicting as it goes keeps a deep path from using one fd per level.
        """
        depth = len(parts)
        while depth > 0 and parts[:depth] not in self._cache:
            depth -= 1
        handle: DirHandle | None = None
        if depth:
            handle = self._cache[parts[:depth]]
            self._cache.move_to_end(parts[:depth])
            handle.pins += 1
        for end in range(depth + 1, len(parts) + 1):
            pfd = self._root_fd if handle is None else handle.fd
            try:
                child = DirHandle(self._open_child(parts[:end], pfd, create), pins=1)
            finally:
                if handle is not None:
                    handle.pins -= 1
            self._cache[parts[:end]] = handle = child
            self._evict()
        assert handle is not None  # parts is not empty
        return handle

    def _evict(self) -> None:
        """Close least recently used fds beyond the cache size, skipping pinned ones."""
        excess = len(self._cache) - MAX_CACHED_DIRS
        if excess <= 0:
            return
        idle: list[tuple[str, ...]] = []
        for key, handle in self._cache.items():
            if handle.pins == 0:
                idle.append(key)
                if len(idle) == excess:
                    break
        for key in idle:
            os.close(self._cache.pop(key).fd)

    def _open_child(self, parts: tuple[str, ...], pfd: int, create: bool) -> int:
        """Open the last component of ``parts`` in directory ``pfd``, refusing a symlink."""
        name = parts[-1]
        try:
            try:
                return os.open(name, DIR_FLAGS, dir_fd=pfd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, NEW_DIR_MODE, dir_fd=pfd)
                except FileExistsError:
                    pass  # made meanwhile; the open below checks what it is
                return os.open(name, DIR_FLAGS, dir_fd=pfd)
        except OSError as exc:
            # O_NOFOLLOW|O_DIRECTORY gives ENOTDIR for a symlink (ELOOP on some systems).
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise os_failure(self.root, parts, exc) from exc
            st = lstat_at(self.root, parts, pfd)
            what = "a symbolic link" if st and stat.S_ISLNK(st.st_mode) else "not a directory"
            raise RestoreRefused(
                f"refusing to restore below '{show(parts)}': it is {what}, "
                "and restore never follows or replaces one on the way"
            ) from exc
