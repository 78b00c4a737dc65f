"""Restored file writer (fs layer): a new file (or a temp file beside an old one) filled
by pwrite, given its metadata at commit."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, wait
from types import TracebackType
from typing import Protocol

from stackvault.errors import IntegrityError
from stackvault.fs.safety import os_failure, show
from stackvault.fs.writemode import WriteMode
from stackvault.store.directio import ALIGN, set_direct


class FileHome(Protocol):
    """What a `FileWriter` needs of the target it restores into (`RestoreTarget` is one): its
    root (for messages), whether files replace old entries (written under a temporary name
    and installed at commit), and the two steps of a commit."""

    @property
    def root(self) -> str: ...
    @property
    def overwrite(self) -> bool: ...

    def apply_metadata(
        self,
        fd: int,
        parts: tuple[str, ...],
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        atime_ns: int | None,
        xattrs: Sequence[tuple[str, bytes]],
    ) -> list[str]:
        """Set owner, xattrs, mode and times on the open file; the notices."""
        ...

    def install(self, parts: tuple[str, ...], pfd: int, tmp: str) -> None:
        """Rename the finished temporary file ``tmp`` (in directory ``pfd``) to its name."""
        ...


_ZEROS = bytes(64 * 1024)


def zeros(data: memoryview) -> bool:
    """Whether ``data`` (a byte view) holds nothing but zero bytes. Compared piece by piece
    with ``bytes.startswith``, which takes any buffer and runs at memcmp speed (~30 GB/s;
    comparing memoryviews goes item by item, 100 times slower); other data is usually told
    apart by its first and last byte."""
    n = data.nbytes
    if not n or data[0] or data[n - 1]:
        return not n
    piece = len(_ZEROS)
    return all(_ZEROS.startswith(data[at : at + piece]) for at in range(0, n, piece))


class FileWriter:
    """One file being restored; created by `RestoreTarget.open_file`.

    The file is either created under its own name (``in_place``: a restore that never
    replaces anything) or a temp file renamed over the old entry at commit. `pwrite` may be
    called from several threads at once; `append` (from one thread, not mixed with `pwrite`)
    writes the file front to back, directly or, after `stage`, through stages written in the
    background around or through the page cache. `commit` (or `abort`) ends the writer; it
    waits for the writes under way and refuses later ones. Used as a context manager, the
    writer is aborted on leaving the block unless it was committed.

    A ``sparse`` writer skips writes of nothing but zeros (whole blobs given to `pwrite`,
    whole stages written by `append`): the file is new and already has its full size, so
    what is not written reads as zeros, and a sparse file restores with its holes.
    """

    def __init__(
        self,
        target: FileHome,
        parts: tuple[str, ...],
        dir_fd: int,
        release: Callable[[], None],
        fd: int,
        name: str,
        size: int,
        *,
        sparse: bool = False,
    ) -> None:
        self.parts = parts
        self.size = size
        self.sparse = sparse
        """The file is new and already ``size`` bytes long (``ftruncate``): a range of
        zeros is left unwritten, a hole, instead of taking disk space."""
        self.name = name
        """The name being written in the parent directory: the real one if ``in_place``."""
        self.in_place = not target.overwrite
        self.committed = False
        self._target = target
        self._dir_fd = dir_fd
        self._release = release
        self._fd = fd
        # A plain lock, and an event made only if `_stop` has to wait: a Condition per file
        # cost ~5 us more per small file (of 20,000) than this.
        self._lock = threading.Lock()
        self._writing = 0  # pwrite calls under way
        self._open = True
        self._idle: threading.Event | None = None  # set when the last pwrite under way ends
        self._appended = 0  # bytes given to append
        self._stages: Sequence[memoryview] = ()
        self._cur = 0  # the stage being filled
        self._staged = 0  # bytes in it, which start at file offset _appended - _staged
        self._writes: Executor | None = None
        self._mode: WriteMode | None = None  # given by `stage`
        self._inflight: Future[None] | None = None  # the write of the previous stage
        self._direct = False  # whether O_DIRECT is set on the file now

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
        if self.sparse and zeros(view):
            return  # a hole: the file already reads as zeros there
        with self._lock:
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
            with self._lock:
                self._writing -= 1
                if not self._writing and self._idle is not None:
                    self._idle.set()

    def read_back(self, offset: int, length: int) -> bytes:
        """``length`` bytes written at ``offset`` (after a `pwrite` that returned)."""
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as exc:
            raise os_failure(self._target.root, self.parts, exc) from exc
        if len(data) != length:
            raise IntegrityError(
                f"restoring '{show(self.parts)}': {len(data)} of {length} bytes read back "
                f"at {offset}"
            )
        return data

    def stage(self, stages: Sequence[memoryview], writes: Executor, mode: WriteMode) -> bool:
        """Have `append` collect the file's bytes in ``stages`` (at least two, writable,
        page-aligned, all of one length that is a multiple of `ALIGN`; the caller reuses
        them once this writer has ended) and write each full stage on ``writes`` while
        the next one fills. ``mode`` chooses for each write whether it goes around the page
        cache (``O_DIRECT``) and is told what it took; `commit` writes the rest.

        Why around the page cache: copying restored data into it was the largest single
        cost of a restore on virtual machines (1.09 GB of pwrite: 3.6 s of system time
        there; direct: 0.06 s), and a restore of gigabytes would evict the cache of
        everything else on the host. Why not always: where the disk is slow, writing
        through the cache finishes sooner (`stackvault.fs.writemode`). Returns False,
        changing nothing, if anything was written already or the stages do not qualify.
        """
        size = len(stages[0]) if stages else 0
        if (
            self._appended
            or len(stages) < 2
            or not size
            or size % ALIGN
            or any(len(st) != size for st in stages)
        ):
            return False
        self._stages, self._writes, self._mode = stages, writes, mode
        return True

    def append(self, data: bytes | memoryview) -> None:
        """Write ``data`` after everything appended before; raises `IntegrityError` past the
        file size. From one thread only."""
        view = memoryview(data).cast("B")
        if not self._stages:
            self.pwrite(self._appended, view)
            self._appended += view.nbytes
            return
        if self._appended + view.nbytes > self.size:
            raise IntegrityError(
                f"restoring '{show(self.parts)}': data at {self._appended}+{view.nbytes} lies "
                f"beyond its recorded size {self.size}"
            )
        room = len(self._stages[0])
        while view:
            stage = self._stages[self._cur]
            n = min(room - self._staged, view.nbytes)
            stage[self._staged : self._staged + n] = view[:n]
            self._staged += n
            self._appended += n
            view = view[n:]
            if self._staged == room:
                self._settle()
                assert self._writes is not None
                self._inflight = self._writes.submit(
                    self._write_out, stage, self._appended - room, measure=True
                )
                self._cur = (self._cur + 1) % len(self._stages)
                self._staged = 0

    def unstage(self) -> None:
        """Write what is staged and stop using the stages (the caller may reuse them once
        this returns): later bytes go by `pwrite`, through the page cache. For a file whose
        bytes stop arriving in order. From the thread that appends."""
        self._flush_stage()
        self._stages = ()
        if self._direct:
            try:
                set_direct(self._fd, False)
            except OSError as exc:
                raise os_failure(self._target.root, self.parts, exc) from exc
            self._direct = False

    def _settle(self) -> None:
        """Wait for the write of the previous stage; raise its failure."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.result()

    def _write_out(self, view: memoryview, at: int, *, measure: bool) -> None:
        """Write all of ``view`` at ``at``: around the page cache if ``measure`` and the mode
        says so (then telling it what the write took), else through it. At most one call
        runs at a time per writer (the O_DIRECT flag belongs to the open file)."""
        mode = self._mode
        assert mode is not None, "only staged writes are written out"
        if self.sparse and zeros(view):
            return  # a hole: the file already reads as zeros there
        want = measure and mode.direct()
        try:
            if want != self._direct:
                if set_direct(self._fd, want):
                    self._direct = want
                elif want:
                    mode.refuse_direct()  # this filesystem has no O_DIRECT
            direct, start, nbytes = self._direct, time.perf_counter(), view.nbytes
            while view:
                try:
                    written = os.pwrite(self._fd, view, at)
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not self._direct:
                        raise
                    set_direct(self._fd, False)  # refused midway: the same bytes again,
                    self._direct = measure = False  # through the page cache from now on
                    mode.refuse_direct()
                    continue
                view, at = view[written:], at + written
        except OSError as exc:
            raise os_failure(self._target.root, self.parts, exc) from exc
        if measure:
            mode.record(direct, nbytes, time.perf_counter() - start)

    def _flush_stage(self) -> None:
        """Write what is staged: the aligned part as the mode says, the last partial block
        through the page cache (``O_DIRECT`` cannot write it)."""
        if not self._stages:
            return
        self._settle()
        staged, self._staged = self._staged, 0
        stage, at = self._stages[self._cur], self._appended - staged
        aligned = staged // ALIGN * ALIGN
        if aligned:
            self._write_out(stage[:aligned], at, measure=True)
        if staged > aligned:
            self._write_out(stage[aligned:staged], at + aligned, measure=False)

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
            self._flush_stage()
            notices = self._target.apply_metadata(
                self._fd, self.parts, mode, uid, gid, mtime_ns, atime_ns, xattrs
            )
            if not self.in_place:
                self._target.install(self.parts, self._dir_fd, self.name)
        except BaseException:
            self._discard()
            raise
        self.committed = True
        self._stages = ()
        os.close(self._fd)
        self._release()
        return notices

    def abort(self) -> None:
        """Remove the file being written; a no-op after `commit` or a previous `abort`."""
        if self._stop():
            self._discard()

    def _stop(self) -> bool:
        """Refuse new pwrites and wait for running ones; False if already stopped."""
        with self._lock:
            if not self._open:
                return False
            self._open = False
            if not self._writing:
                return True
            idle = self._idle = threading.Event()
        idle.wait()
        return True

    def _discard(self) -> None:
        self._stages = ()
        if self._inflight is not None:
            wait([self._inflight])  # its failure, if any, is not the one to report
            self._inflight = None
        try:
            os.close(self._fd)
            try:
                os.unlink(self.name, dir_fd=self._dir_fd)
            except OSError:
                pass  # best effort: cleaning up must not hide the error that led here
        finally:
            self._release()
