"""Restore target (fs layer): writes a tree below one directory and never outside it.

Every operation names its path as a sequence of components below the target root. Each
component is validated (`check_rel`), and the filesystem is reached through directory fds
opened with ``O_DIRECTORY | O_NOFOLLOW`` one component at a time from the root (`DirFds`),
with ``*at()`` calls on the final name. A symlink in the way (planted by the snapshot or
present beforehand) is never followed: the operation is refused with `RestoreRefused`.
Symlinks that the snapshot contains are created with their text as-is; that is safe because
nothing here follows them. A directory is never replaced by anything else, even with
``overwrite``.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

from stackvault.errors import RestoreRefused, StackvaultError
from stackvault.fs.safety import (
    DIR_FLAGS,
    NEW_DIR_MODE,
    DirFds,
    check_rel,
    check_slot,
    clear_slot,
    exists_error,
    lstat_at,
    os_failure,
    show,
)
from stackvault.fs.writer import FileWriter

_NEW_FLAGS = os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
PRESIZE_MIN = 1 << 20
"""Files at least this large are sized with ``ftruncate`` before they are written; smaller
ones get their size from their writes (20,000 small files: one system call less each,
~0.09 s)."""
_NO_XATTR_SUPPORT = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})
# chown errors that mean "not allowed / not representable here" rather than a broken disk.
_OWNER_REFUSED = frozenset({errno.EPERM, errno.EINVAL})
Xattrs = Sequence[tuple[str, bytes]]
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


class SmallFile(NamedTuple):
    """A small file `RestoreTarget.write_files` creates: its name in the directory, its
    content (checked by the caller) and its metadata."""

    name: str
    data: bytes | memoryview
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    xattrs: Xattrs = ()


__all__ = ["FileWriter", "RestoreTarget", "SmallFile", "check_rel"]


def _check_entry(rel: Sequence[str]) -> tuple[str, ...]:
    parts = check_rel(rel)
    if not parts:
        raise RestoreRefused("refusing to restore an entry over the target directory itself")
    return parts


def _create_temp(name: str, pfd: int) -> tuple[str, int]:
    """Create a private temp file beside ``name`` in directory ``pfd``: its name and fd."""
    # Keep the temp name within NAME_MAX (255 bytes) however long the real name is.
    stem = os.fsdecode(os.fsencode(name)[:200])
    while True:
        tmp = f".{stem}.svtmp-{secrets.token_hex(6)}"
        try:
            return tmp, os.open(tmp, _NEW_FLAGS, 0o600, dir_fd=pfd)
        except FileExistsError:
            continue


class RestoreTarget:
    """A directory that a restore writes into; thread-safe. Call `prepare` (or use ``with``).

    ``restore_owner`` None means "only when running as root". Metadata problems (owner not
    permitted, xattrs unsupported) never raise: each call returns its notices and they are
    collected in `notices`. Missing parent directories are created (mode 0o700). Other
    failures raise `RestoreRefused` (would destroy data or escape) or `StackvaultError`.
    """

    def __init__(self, root: str, *, overwrite: bool, restore_owner: bool | None = None) -> None:
        self.root = os.path.abspath(root)
        self.overwrite = overwrite
        self.is_root_user = os.geteuid() == 0
        self.restore_owner = self.is_root_user if restore_owner is None else restore_owner
        self.notices: list[str] = []
        self._dirs: DirFds | None = None

    def __enter__(self) -> RestoreTarget:
        self.prepare()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def prepare(self) -> None:
        """Create the root (and its parents) if missing and open it.

        Refuses a root that is a symlink or not a directory, and a non-empty root unless
        ``overwrite``.
        """
        if self._dirs is not None:
            return
        root = self.root
        try:
            os.makedirs(root, exist_ok=True)
            st = os.lstat(root)
            if stat.S_ISLNK(st.st_mode):
                raise RestoreRefused(f"target {root} is a symbolic link; give the real directory")
            if not stat.S_ISDIR(st.st_mode):
                raise RestoreRefused(f"target {root} exists and is not a directory")
            fd = os.open(root, DIR_FLAGS)
        except FileExistsError as exc:  # from makedirs: the name is taken by a non-directory
            raise RestoreRefused(f"target {root} exists and is not a directory") from exc
        except OSError as exc:
            raise StackvaultError(f"cannot use restore target {root}: {exc.strerror}") from exc
        with os.scandir(fd) as it:
            empty = next(it, None) is None
        if not empty and not self.overwrite:
            os.close(fd)
            raise RestoreRefused(
                f"target {root} is not empty; choose an empty directory or pass --overwrite"
            )
        self._dirs = DirFds(root, fd)

    def sharing_root(self) -> RestoreTarget:
        """A target on this one's opened root (the fd is duplicated, the path not looked up
        again) with directory fds and notices of its own: what a child process restoring
        files beside this one writes into (`stackvault.engine.forked`)."""
        other = RestoreTarget(self.root, overwrite=self.overwrite, restore_owner=self.restore_owner)
        other._dirs = DirFds(self.root, os.dup(self._fds().root_fd))
        return other

    def close(self) -> None:
        """Close every directory fd. Unfinished `FileWriter` objects must be aborted first."""
        if self._dirs is not None:
            self._dirs.close()

    # --- operations ------------------------------------------------------------------------

    def mkdir(self, rel: Sequence[str]) -> None:
        """Create a directory (mode 0o700 until `set_dir_metadata`); an existing one is kept.

        An existing non-directory is replaced if ``overwrite``, else refused.
        """
        parts = check_rel(rel)
        if not parts:
            return
        with self._fds().parent_of(parts) as pfd:
            try:
                os.mkdir(parts[-1], NEW_DIR_MODE, dir_fd=pfd)
                return
            except FileExistsError:
                pass
            except OSError as exc:
                raise os_failure(self.root, parts, exc) from exc
            st = lstat_at(self.root, parts, pfd)
            if st is not None and stat.S_ISDIR(st.st_mode):
                return
            clear_slot(self.root, parts, pfd, overwrite=self.overwrite)
            try:
                os.mkdir(parts[-1], NEW_DIR_MODE, dir_fd=pfd)
            except OSError as exc:
                raise os_failure(self.root, parts, exc) from exc

    def open_file(self, rel: Sequence[str], size: int) -> FileWriter:
        """Start writing a regular file of ``size`` bytes; an existing entry is never touched.

        Without ``overwrite``, the file is created under its own name with ``O_EXCL`` (mode
        0o600 until `FileWriter.commit`), so an existing entry of that name, a directory or a
        symlink included, is refused now, before any data is written; `FileWriter.abort`
        removes it again. With ``overwrite`` (a directory is still refused), the data goes to
        a temp file ``.<name>.svtmp-<random>`` beside the name, which replaces the old entry
        only at commit. A file of at least `PRESIZE_MIN` bytes is sized with ftruncate, so
        regions never written stay sparse zeros, and its writer leaves ranges of zeros
        unwritten (holes: `FileWriter.sparse`); a smaller one is as long as what was
        written (the caller checks that it wrote ``size`` bytes).
        """
        parts = _check_entry(rel)
        dirs = self._fds()
        pfd, handle = dirs.acquire(parts[:-1], create=True)
        try:
            name, fd = self._new_file(parts, pfd)
            presized = size >= PRESIZE_MIN
            if presized:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    os.close(fd)
                    os.unlink(name, dir_fd=pfd)
                    raise
        except BaseException as exc:
            dirs.release(handle)
            if isinstance(exc, OSError):
                raise os_failure(self.root, parts, exc) from exc
            raise
        return FileWriter(
            self, parts, pfd, partial(dirs.release, handle), fd, name, size, sparse=presized
        )

    def write_files(self, directory: Sequence[str], files: Sequence[SmallFile]) -> list[str]:
        """Create small regular files in ``directory`` (made if missing), each holding its
        ``data`` (already checked by the caller) and given its metadata in one go: the
        create, write, metadata and close of `open_file` and `FileWriter.commit` without a
        writer object, the directory reached and checked once for all of them (a restore of
        many small files spends much of its time here). The same rules: without
        ``overwrite`` a file is created with ``O_EXCL`` under its name; with it, under a temp
        name that replaces the old entry once it is whole; if anything fails, the file is
        removed and the error raised (the files before it are complete). Returns the
        metadata notices.

        A new file is created with its final mode where nothing set after it needs another
        (no xattrs, no setuid, setgid or sticky bit); its owner and mode are then read back
        (``fstat``), and only what the umask, a default ACL or the directory's group left
        different is changed (`apply_metadata` with ``current``): two system calls that
        each dirty the inode, saved for most files. The snapshot's mtime is still set last,
        so a file left unfinished by a kill never has it (it does not look restored)."""
        dparts = check_rel(directory)
        dirs = self._fds()
        pfd, handle = dirs.acquire(dparts, create=True)
        notices: list[str] = []
        try:
            for f in files:
                parts = dparts + check_rel((f.name,))
                direct = not self.overwrite and not f.xattrs and not f.mode & _SPECIAL_BITS
                name, fd = self._new_file(parts, pfd, f.mode if direct else 0o600)
                try:
                    view = memoryview(f.data)
                    while view:
                        view = view[os.write(fd, view) :]
                    notices += self.apply_metadata(
                        fd,
                        parts,
                        f.mode,
                        f.uid,
                        f.gid,
                        f.mtime_ns,
                        None,
                        f.xattrs,
                        current=os.fstat(fd) if direct else None,
                    )
                    if self.overwrite:
                        self.install(parts, pfd, name)
                except BaseException as exc:
                    os.close(fd)
                    try:
                        os.unlink(name, dir_fd=pfd)
                    except OSError:
                        pass  # cleaning up must not hide the error that led here
                    if isinstance(exc, OSError):
                        raise os_failure(self.root, parts, exc) from exc
                    raise
                os.close(fd)
            return notices
        finally:
            dirs.release(handle)

    def symlink(
        self, rel: Sequence[str], target: str, uid: int, gid: int, mtime_ns: int
    ) -> list[str]:
        """Create a symlink whose text is ``target`` verbatim, with owner and mtime.

        Returns the notices it produced (also added to `notices`).
        """
        parts = _check_entry(rel)
        if not target or "\0" in target:
            raise RestoreRefused(f"refusing to restore '{show(parts)}': invalid symlink target")
        notices: list[str] = []
        with self._fds().parent_of(parts) as pfd:
            clear_slot(self.root, parts, pfd, overwrite=self.overwrite)
            name = parts[-1]
            try:
                os.symlink(target, name, dir_fd=pfd)
            except FileExistsError as exc:
                raise exists_error(parts) from exc
            except (OSError, UnicodeEncodeError) as exc:
                raise os_failure(self.root, parts, exc) from exc
            if self.restore_owner:
                try:
                    os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
                except (OSError, OverflowError) as exc:
                    notices = self._owner_failed(parts, exc, uid, gid)
            try:
                os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)
            except OSError as exc:
                raise os_failure(self.root, parts, exc) from exc
        return self._note(notices)

    def special(
        self,
        rel: Sequence[str],
        kind: str,
        device: tuple[int, int],
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        xattrs: Xattrs = (),
    ) -> list[str]:
        """Create a fifo (``kind`` ``"fifo"``) or a device node (``"chardev"``,
        ``"blockdev"``, with ``device`` = (major, minor)) and give it its metadata.

        Returns the notices it produced. Raises `RestoreRefused` if the name is taken (as
        for files), `StackvaultError` if the system refuses to make it (``mknod`` of a
        device needs privileges: the caller reports that for this entry and goes on).
        """
        parts = _check_entry(rel)
        if kind == "fifo":
            fmt = stat.S_IFIFO
        elif kind == "chardev":
            fmt = stat.S_IFCHR
        elif kind == "blockdev":
            fmt = stat.S_IFBLK
        else:
            raise ValueError(f"not a special file type: {kind!r}")
        with self._fds().parent_of(parts) as pfd:
            clear_slot(self.root, parts, pfd, overwrite=self.overwrite)
            name = parts[-1]
            try:
                os.mknod(name, fmt | 0o600, os.makedev(*device), dir_fd=pfd)
            except FileExistsError as exc:
                raise exists_error(parts) from exc
            except OSError as exc:
                raise os_failure(self.root, parts, exc) from exc
            if kind == "fifo":
                # Opening a fifo to read, without waiting for a writer, does nothing else:
                # its metadata then goes through the fd, like a file's.
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=pfd)
                except OSError as exc:
                    raise os_failure(self.root, parts, exc) from exc
                try:
                    return self.apply_metadata(fd, parts, mode, uid, gid, mtime_ns, None, xattrs)
                finally:
                    os.close(fd)
            # A device is never opened (that can act on the hardware): by name, not
            # following a symlink at any step (nothing can have replaced the node created
            # above by one in between except another writer of the target).
            return self._note(self._name_metadata(parts, pfd, mode, uid, gid, mtime_ns, xattrs))

    def _name_metadata(
        self,
        parts: tuple[str, ...],
        pfd: int,
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        xattrs: Xattrs,
    ) -> list[str]:
        """`apply_metadata` for an entry that is not opened, by its name in ``pfd``."""
        name = parts[-1]
        notices: list[str] = []
        if self.restore_owner:
            try:
                os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
            except (OSError, OverflowError) as exc:
                notices.extend(self._owner_failed(parts, exc, uid, gid))
        for key, value in xattrs:
            try:
                os.setxattr(f"/proc/self/fd/{pfd}/{name}", key, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno in _NO_XATTR_SUPPORT:
                    notices.append(f"'{show(parts)}': extended attributes not supported here")
                    break
                notices.append(f"'{show(parts)}': cannot restore xattr {key}: {exc.strerror}")
        try:
            os.chmod(name, mode, dir_fd=pfd, follow_symlinks=False)
            os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)
        except (OSError, NotImplementedError) as exc:
            if isinstance(exc, NotImplementedError):
                exc = OSError(errno.ENOTSUP, "cannot set the mode without following links")
            raise os_failure(self.root, parts, exc) from exc
        return notices

    def hardlink(self, rel: Sequence[str], existing_rel: Sequence[str]) -> None:
        """Make ``rel`` another name of the already restored ``existing_rel``."""
        parts, source = _check_entry(rel), _check_entry(existing_rel)
        if parts == source:
            raise RestoreRefused(f"refusing to restore '{show(parts)}': a link to itself")
        dirs = self._fds()
        with dirs.parent_of(source, create=False) as sfd, dirs.parent_of(parts) as dfd:
            clear_slot(self.root, parts, dfd, overwrite=self.overwrite)
            try:
                os.link(
                    source[-1], parts[-1], src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False
                )
            except FileExistsError as exc:
                raise exists_error(parts) from exc
            except OSError as exc:
                raise os_failure(self.root, parts, exc) from exc

    def set_dir_metadata(
        self, rel: Sequence[str], mode: int, uid: int, gid: int, mtime_ns: int, xattrs: Xattrs = ()
    ) -> list[str]:
        """Apply a directory's final metadata; call it after its contents are restored.

        ``rel`` may be empty (the target root itself). Returns the notices it produced.
        """
        parts = check_rel(rel)
        dirs = self._fds()
        fd, handle = dirs.acquire(parts, create=False)
        try:
            return self.apply_metadata(fd, parts, mode, uid, gid, mtime_ns, None, xattrs)
        finally:
            dirs.release(handle)

    # --- shared with FileWriter --------------------------------------------------------------

    def apply_metadata(
        self,
        fd: int,
        parts: tuple[str, ...],
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        atime_ns: int | None,
        xattrs: Xattrs,
        *,
        current: os.stat_result | None = None,
    ) -> list[str]:
        """Set owner, xattrs, mode and times on an open file or directory; notices returned.

        ``current``: the entry's status as it is now, if known; an owner or mode it already
        has is then not set again."""
        notices: list[str] = []
        chowned = False
        # Order matters: chown clears setuid bits and file capabilities, and an owner may only
        # set user.* xattrs while the mode still grants write permission.
        if self.restore_owner and (
            current is None or current.st_uid != uid or current.st_gid != gid
        ):
            chowned = True
            try:
                os.fchown(fd, uid, gid)
            except (OSError, OverflowError) as exc:
                notices.extend(self._owner_failed(parts, exc, uid, gid))
        for name, value in xattrs:
            try:
                os.setxattr(fd, name, value)
            except OSError as exc:
                if exc.errno in _NO_XATTR_SUPPORT:
                    notices.append(f"'{show(parts)}': extended attributes not supported here")
                    break
                notices.append(f"'{show(parts)}': cannot restore xattr {name}: {exc.strerror}")
        try:
            if current is None or chowned or stat.S_IMODE(current.st_mode) != mode:
                os.fchmod(fd, mode)
            os.utime(fd, ns=(mtime_ns if atime_ns is None else atime_ns, mtime_ns))
        except OSError as exc:
            raise os_failure(self.root, parts, exc) from exc
        return self._note(notices) if notices else notices

    def install(self, parts: tuple[str, ...], pfd: int, tmp: str) -> None:
        """Give a finished temp file (``overwrite`` only) its real name, replacing a file there.

        A directory that took the name meanwhile is never replaced.
        """
        try:
            os.rename(tmp, parts[-1], src_dir_fd=pfd, dst_dir_fd=pfd)
        except IsADirectoryError as exc:
            raise exists_error(parts, directory=True) from exc
        except OSError as exc:
            raise os_failure(self.root, parts, exc) from exc

    # --- internals -------------------------------------------------------------------------

    def _new_file(self, parts: tuple[str, ...], pfd: int, mode: int = 0o600) -> tuple[str, int]:
        """The file a restore writes ``parts`` into, in directory ``pfd``: its name and fd.
        Without ``overwrite``, ``parts`` itself, created exclusively with ``mode`` (less the
        umask); with it, a temp file (mode 0o600) beside what is there (which must not be a
        directory), installed at the end."""
        if self.overwrite:
            check_slot(self.root, parts, pfd, overwrite=True)
            return _create_temp(parts[-1], pfd)
        return parts[-1], self._create_new(parts, pfd, mode)

    def _create_new(self, parts: tuple[str, ...], pfd: int, mode: int = 0o600) -> int:
        """Create ``parts`` exclusively (never following or replacing anything); its fd."""
        try:
            return os.open(parts[-1], _NEW_FLAGS, mode, dir_fd=pfd)
        except FileExistsError as exc:
            st = lstat_at(self.root, parts, pfd)
            is_dir = st is not None and stat.S_ISDIR(st.st_mode)
            raise exists_error(parts, directory=is_dir) from exc

    def _fds(self) -> DirFds:
        if self._dirs is None:
            raise RuntimeError("RestoreTarget.prepare() was not called")
        return self._dirs

    def _owner_failed(
        self, parts: Sequence[str], exc: OSError | OverflowError, uid: int, gid: int
    ) -> list[str]:
        """Notices for a failed chown; errors other than 'not permitted' or 'not representable
        here' are raised."""
        if isinstance(exc, OverflowError):
            # A uid or gid beyond this platform's range (another system, or a tree from a
            # newer program): the entry is restored, owned by whoever restores it.
            return [
                f"'{show(parts)}': cannot restore owner {uid}:{gid}: out of this system's "
                "range; left owned by the restoring user"
            ]
        if exc.errno not in _OWNER_REFUSED:
            raise os_failure(self.root, parts, exc) from exc
        if not self.is_root_user:
            return []  # only root may give files away: expected, not worth a notice
        return [f"'{show(parts)}': cannot restore owner: {exc.strerror}"]

    def _note(self, notices: list[str]) -> list[str]:
        # list.extend of a list is atomic under the GIL; no lock needed for the log.
        self.notices.extend(notices)
        return notices
