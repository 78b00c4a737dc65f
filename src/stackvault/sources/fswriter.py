"""Restored file writer (sources layer): a new file (or a temp file beside an old one) filled
by pwrite, given its metadata at commit."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from stackvault.errors import IntegrityError
from stackvault.sources.fsdirs import os_failure, show

if TYPE_CHECKING:
    from stackvault.sources.fsrestore import RestoreTarget


class FileWriter:
    """One file being restored; created by `RestoreTarget.open_file`.

    The file is either created under its own name (``in_place``: a restore that never
    replaces anything) or a temp file renamed over the old entry at commit. `pwrite` may be
    called from several threads at once. `commit` (or `abort`) ends the
    writer; it waits for pwrites under way and refuses later ones. Used as a context manager,
    the writer is aborted on leaving the block unless it was committed.
    """

    def __init__(
        self,
        target: RestoreTarget,
        parts: tuple[str, ...],
        dir_fd: int,
        release: Callable[[], None],
        fd: int,
        name: str,
        size: int,
    ) -> None:
        self.parts = parts
        self.size = size
        self.name = name
        """The name being written in the parent directory: the real one if ``in_place``."""
        self.in_place = not target.overwrite
        self.committed = False
        self._target = target
        self._dir_fd = dir_fd
        self._release = release
        self._fd = fd
        self._cond = threading.Condition()
        self._writing = 0  # pwrite calls under way
        self._open = True

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.committed:
            self.abort()

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write all of ``data`` at ``offset``; raises `IntegrityError` past the file size."""
        view = memoryview(data).cast("B")
        if offset < 0 or offset + view.nbytes > self.size:
            raise IntegrityError(
                f"restoring '{show(self.parts)}': data at {offset}+{view.nbytes} lies beyond "
                f"its recorded size {self.size}"
            )
        with self._cond:
            if not self._open:
                raise RuntimeError("FileWriter is already committed or aborted")
            self._writing += 1
        try:
            while view:
                written = os.pwrite(self._fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as exc:
            raise os_failure(self._target.root, self.parts, exc) from exc
        finally:
            with self._cond:
                self._writing -= 1
                self._cond.notify_all()

    def commit(
        self,
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        atime_ns: int | None = None,
        xattrs: Sequence[tuple[str, bytes]] = (),
    ) -> list[str]:
        """Apply the metadata (and move a temp file to its name); returns metadata notices.

        ``atime_ns`` defaults to ``mtime_ns``. On failure the file being written is removed.
        """
        if not self._stop():
            raise RuntimeError("FileWriter is already committed or aborted")
        try:
            notices = self._target.apply_metadata(
                self._fd, self.parts, mode, uid, gid, mtime_ns, atime_ns, xattrs
            )
            if not self.in_place:
                self._target.install(self.parts, self._dir_fd, self.name)
        except BaseException:
            self._discard()
            raise
        self.committed = True
        os.close(self._fd)
        self._release()
        return notices

    def abort(self) -> None:
        """Remove the file being written; a no-op after `commit` or a previous `abort`."""
        if self._stop():
            self._discard()

    def _stop(self) -> bool:
        """Refuse new pwrites and wait for running ones; False if already stopped."""
        with self._cond:
            if not self._open:
                return False
            self._open = False
            self._cond.wait_for(lambda: self._writing == 0)
            return True

    def _discard(self) -> None:
        try:
            os.close(self._fd)
            try:
                os.unlink(self.name, dir_fd=self._dir_fd)
            except OSError:
                pass  # best effort: cleaning up must not hide the error that led here
        finally:
            self._release()
