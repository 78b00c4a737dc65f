"""Pack-oriented restore (engine layer): files' blobs read pack by pack, for remote stores.

Reading a remote store costs per request (botocore's Python glue on this side, the server's
work on the other: with SeaweedFS, 512 MiB read as 1 MiB ranges costs the server 3 times the
CPU of reading it as 16 MiB objects), so a restore from S3 must not read blob by blob.
`PackRestorer` collects the files of a window of the tree walk, groups their blobs by pack,
and reads each pack's needed blobs as a few long spans (`stackvault.repo.spans`) on a pool
of threads; each blob read is authenticated once and written at every offset of every file
that holds it. A small file is written in whatever order its packs arrive; its SHA-256 is
taken in file order all the same (a blob that arrives ahead of the ones before it is kept, up
to `AHEAD_BYTES` in all, or read back from the file when they are in), and a file whose digest
does not match the snapshot's is removed, as on the file-by-file path (`RestoreJob`). A large
file (`STAGE_MIN`) is written front to back through a pair of stages lent to it
(`FileWriter.stage`, around the page cache where `WriteMode` finds that cheaper, as the
file-by-file path writes large files): a blob that arrives ahead of the ones before it is
held until they are in; when the held bytes would pass `AHEAD_BYTES` the file gives its
stages back and goes on without them, each blob written at its offset as it arrives. Damage
stays per file: a span that cannot be read is read blob by blob, which reports the blob at
fault (a missing pack fails its files without more requests), and only the files holding a
damaged blob fail.
"""

from __future__ import annotations

import hashlib
import mmap
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from typing import NamedTuple

from stackvault.engine.filerestore import STAGE_MIN
from stackvault.engine.progress import Progress
from stackvault.errors import IntegrityError, Interrupted
from stackvault.fs.target import RestoreTarget
from stackvault.fs.writemode import WriteMode
from stackvault.fs.writer import FileWriter
from stackvault.repo.blob import IndexEntry
from stackvault.repo.repository import Repository
from stackvault.repo.spans import SpanData, cut_spans, read_span
from stackvault.repo.tree import Node

SMALL_BLOB = 256 * 1024
"""Files of one blob below this are made on the small-file thread."""
AHEAD_BYTES = 64 << 20
"""Plaintext of blobs that arrived ahead of a file's earlier ones kept for its hash (or, in a
staged file, until they can be appended); past this (over all files) such a blob is written
at once and read back from the file for the hash instead."""
STAGED_FILES = 8
"""Large files written through stages at the same time; the next ones are written without
stages, each blob at its offset through the page cache, until a pair of stages is free."""
STAGE_BYTES = 1 << 20
"""Length of each stage lent to a large file (two per file). 4 MiB, as the file-by-file path
uses, saved nothing here (1.06 GB from S3, 3 alternated rounds: 3.97-4.24 s against
3.80-3.99 s) and raised the peak RSS by 20-60 MB."""
WINDOW_FILES = 16384
WINDOW_REFS = 131072
"""A window of the walk is planned (its blobs grouped by pack) once it holds this many files
or blob references: a pack with blobs of two windows is read twice, a larger window holds
more of the tree in memory (~1.8 KB a file waiting, its node included: windows of 65,536
raised the peak RSS of a 200,000-file restore by 110-125 MB and saved nothing there, where
creating the files is the cost). A backup packs small files in the order its readers finish
them, not the tree's, so small windows read each pack several times in short spans: the
benchmark's 20,063 files from S3 took 235 requests (572 MB) in windows of 4,096 files, 125
(502 MB) in windows of 16,384 and 112 (499 MB) in one window; the restore took 4.8-4.9 s
against 5.3-5.5 s with 4,096 (4.4 s in one window, with 20 MB more peak memory), and the
server's CPU time fell from 1.2-1.4 to 1.0 s."""


def _entry(ref: _Ref) -> IndexEntry:
    return ref.entry


class _Ref(NamedTuple):
    entry: IndexEntry
    blob_id: bytes
    task: _FileTask
    offset: int
    """Where the blob goes in the file."""


class _Held:
    """The plaintext held for hashing later (`_FileTask.ahead`), bounded by `AHEAD_BYTES`."""

    def __init__(self) -> None:
        self.bytes = 0
        self.lock = threading.Lock()

    def take(self, length: int) -> bool:
        with self.lock:
            if self.bytes + length > AHEAD_BYTES:
                return False
            self.bytes += length
            return True

    def give(self, length: int) -> None:
        with self.lock:
            self.bytes -= length


Pair = tuple[memoryview, memoryview]


class _Stages:
    """The pairs of page-aligned stages lent to large files (at most `STAGED_FILES`, each
    made on first use and reused)."""

    def __init__(self) -> None:
        self._free: list[Pair] = []
        self._made = 0
        self._lock = threading.Lock()

    def lend(self) -> Pair | None:
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._made >= STAGED_FILES:
                return None
            self._made += 1
        return (memoryview(mmap.mmap(-1, STAGE_BYTES)), memoryview(mmap.mmap(-1, STAGE_BYTES)))

    def give_back(self, pair: Pair) -> None:
        with self._lock:
            self._free.append(pair)


class _FileTask:
    """One file being restored from blobs that arrive in any order."""

    __slots__ = (
        "ahead",
        "cursor",
        "failed",
        "lock",
        "node",
        "pool",
        "rel",
        "remaining",
        "sha",
        "stages",
        "writer",
    )

    def __init__(self, rel: list[str], node: Node) -> None:
        self.rel = rel
        self.node = node
        self.remaining = len(node.content)
        self.writer: FileWriter | None = None
        self.stages: Pair | None = None
        """The stages the file is written through (`FileWriter.stage`), front to back with
        `FileWriter.append`; None: each blob is written at its offset as it arrives."""
        self.pool: _Stages | None = None
        """Where ``stages`` came from."""
        self.failed: str | None = None
        self.lock = threading.Lock()
        self.sha = hashlib.sha256()
        self.cursor = 0
        """Bytes hashed (and, through stages, appended) so far, from the start of the
        file."""
        self.ahead: dict[int, tuple[int, bytes | memoryview | None]] = {}
        """Blobs past ``cursor``, not hashed yet: offset → (length, the plaintext if held,
        else None: read back from the file when the cursor gets there). Without stages
        they are written already; with stages, not yet (and always held)."""

    def written(
        self,
        offset: int,
        data: bytes | memoryview | None,
        error: str | None,
        held: _Held,
        *,
        wrote: bool,
    ) -> bool:
        """Count one blob in (``data``, for ``offset``) or failed (``error``); True when it
        was the file's last. ``wrote``: the caller wrote it at its offset already (it does
        where the file had no stages when it looked; otherwise it is appended here once the
        blobs before it are in, or held until then)."""
        with self.lock:
            self.remaining -= 1
            if error is not None:
                self.failed = self.failed or error
                for length, kept in self.ahead.values():
                    if kept is not None:
                        held.give(length)
                self.ahead.clear()
            elif self.failed is None and data is not None:
                if not wrote and self.stages is None:  # its stages were given back since
                    self._pwrite(offset, data)
                if offset != self.cursor:
                    keep = held.take(len(data))
                    if not keep and self.stages is not None:
                        self._unstage()
                        self._pwrite(offset, data)
                    self.ahead[offset] = (len(data), data if keep else None)
                else:
                    self._take(data)
                    self._catch_up(held)
            return self.remaining == 0

    def _pwrite(self, offset: int, data: bytes | memoryview) -> None:
        assert self.writer is not None, "a blob is written once the file is open"
        self.writer.pwrite(offset, data)

    def _take(self, data: bytes | memoryview) -> None:
        """The next bytes from the cursor: hashed, and appended if the file has stages."""
        self.sha.update(data)
        if self.stages is not None:
            assert self.writer is not None
            self.writer.append(data)
        self.cursor += len(data)

    def stage(self, pool: _Stages, writes: Executor, mode: WriteMode) -> None:
        """Have the file written through a pair of stages from ``pool``, if one is free (its
        writer just opened, nothing written)."""
        assert self.writer is not None
        pair = pool.lend()
        if pair is None:
            return
        if self.writer.stage(pair, writes, mode):
            self.stages, self.pool = pair, pool
        else:
            pool.give_back(pair)

    def give_back(self) -> None:
        """Return the stages to their pool (the writer has ended or stopped using them)."""
        if self.stages is not None and self.pool is not None:
            self.pool.give_back(self.stages)
        self.stages = None

    def _unstage(self) -> None:
        """Stop writing through stages: what is staged is written, and so is every blob held
        ahead (kept for the hash); later blobs are written as they arrive."""
        assert self.writer is not None
        self.writer.unstage()
        self.give_back()
        for offset, (_length, kept) in self.ahead.items():
            assert kept is not None, "a staged file holds every blob ahead"
            self.writer.pwrite(offset, kept)

    def _catch_up(self, held: _Held) -> None:
        while self.cursor in self.ahead:
            length, kept = self.ahead.pop(self.cursor)
            if kept is not None:
                held.give(length)
            elif self.writer is not None:
                kept = self.writer.read_back(self.cursor, length)
            else:
                return
            self._take(kept)


class PackRestorer:
    """Restore regular files (of at least one blob) by reading their packs.

    `add` each file as the walk reaches it; `finish` waits for all of them and re-raises the
    first error that is not a file's own damage (a store that refuses access, a full disk,
    an interrupt); `close` stops and removes every file not committed. ``done(node)`` and
    ``failed(path, message)`` are called once per file, from the pool's threads.
    """

    def __init__(
        self,
        repo: Repository,
        target: RestoreTarget,
        *,
        workers: int,
        progress: Progress,
        stop: threading.Event,
        done: Callable[[Node], None],
        failed: Callable[[str, str], None],
        writes: Executor | None = None,
        write_mode: WriteMode | None = None,
    ) -> None:
        """``writes`` (with ``write_mode``): where the stages of large files are written;
        without it every file is written blob by blob as its blobs arrive."""
        self.repo = repo
        self.target = target
        self.progress = progress
        self._stop = stop
        self._done = done
        self._failed = failed
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restore-pack")
        # Small files are made by one thread: creating them (short system calls and Python
        # glue) from several threads costs more in contention than it overlaps (20,000
        # files: 1.4 s from 2 threads, 0.9 s from one).
        self._small = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-small")
        # Spans read or queued: those read hold their bytes until their blobs are written,
        # so at most 2 * workers * SPAN_MAX bytes are held.
        self._slots = threading.BoundedSemaphore(2 * workers)
        self._futures: list[Future[None]] = []
        self._plan: dict[bytes, list[_Ref]] = {}
        self._files = 0
        self._refs = 0
        self._open: set[_FileTask] = set()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._held = _Held()
        self._writes = writes
        self._write_mode = write_mode or WriteMode()
        self._stages = _Stages()

    def add(self, rel: list[str], node: Node) -> None:
        """Plan a file; a blob the index does not list fails the file now."""
        task = _FileTask(rel, node)
        refs: list[_Ref] = []
        offset = 0
        for blob_id in node.content:
            entry = self.repo.index.get(blob_id)
            if entry is None:
                try:
                    self.repo.index_entry(blob_id)  # raises, saying why (missing pack?)
                except IntegrityError as exc:
                    self._failed("/".join(rel), str(exc))
                return
            refs.append(_Ref(entry, blob_id, task, offset))
            offset += entry.raw_length
        for ref in refs:
            self._plan.setdefault(ref.entry.pack_id, []).append(ref)
        self._files += 1
        self._refs += len(refs)
        if self._files >= WINDOW_FILES or self._refs >= WINDOW_REFS:
            self._submit_window()

    def finish(self) -> None:
        self._submit_window()
        while True:  # a span's job adds its small files' job before it ends
            with self._lock:
                futures, self._futures = self._futures, []
            if not futures:
                break
            wait(futures)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._small.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            left, self._open = self._open, set()
        for task in left:
            if task.writer is not None:
                task.writer.abort()
            task.give_back()

    # --- planning ---------------------------------------------------------------------------

    def _submit_window(self) -> None:
        plan, self._plan = self._plan, {}
        self._files = self._refs = 0
        for refs in plan.values():
            for span in cut_spans(refs, _entry):
                self._submit(span)

    def _submit(self, span: list[_Ref]) -> None:
        if self._error is not None:
            raise self._error
        self._slots.acquire()
        try:
            self._track(self._pool.submit(self._read_span, span))
        except BaseException:
            self._slots.release()
            raise

    def _track(self, fut: Future[None]) -> None:
        with self._lock:
            if len(self._futures) >= 1024:
                self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(fut)

    # --- doing (pool threads) ---------------------------------------------------------------

    def _read_span(self, span: list[_Ref]) -> None:
        """Read a span of a pack and restore its blobs: those of small one-blob files on the
        one small-file thread (after this returns; it frees the span's slot then), the
        others here."""
        handed = False
        try:
            if self._stop.is_set():
                raise Interrupted("restore interrupted")
            data = read_span(self.repo.store, [ref.entry for ref in span])
            small: list[list[_Ref]] = []
            i = 0
            while i < len(span):
                j = i + 1
                while j < len(span) and span[j].blob_id == span[i].blob_id:
                    j += 1
                group = span[i:j]
                if group[0].entry.raw_length < SMALL_BLOB and all(
                    len(ref.task.node.content) == 1 for ref in group
                ):
                    small.append(group)
                else:
                    self._restore_blob(group, data)
                i = j
            if small:
                self._track(self._small.submit(self._restore_small, small, data))
                handed = True
        except BaseException as exc:
            self._failure(exc)
            raise
        finally:
            if not handed:
                self._slots.release()

    def _restore_small(self, groups: list[list[_Ref]], data: SpanData) -> None:
        try:
            for group in groups:
                if self._stop.is_set():
                    raise Interrupted("restore interrupted")
                self._restore_blob(group, data)
        except BaseException as exc:
            self._failure(exc)
            raise
        finally:
            self._slots.release()

    def _failure(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc
        self._stop.set()

    def _restore_blob(self, refs: list[_Ref], data: SpanData) -> None:
        """Open one blob (cut out of the span read, or read on its own unless its pack is
        missing) and write it for every reference to it."""
        entry, blob_id = refs[0].entry, refs[0].blob_id
        verify = any(not ref.task.node.sha256 for ref in refs)
        try:
            plain = self.repo.span_blob(data, entry, blob_id, verify_id=verify)
        except IntegrityError as exc:
            for ref in refs:
                self._deliver(ref, None, str(exc))
            return
        for ref in refs:
            self._deliver(ref, plain, None)

    def _deliver(self, ref: _Ref, plain: bytes | memoryview | None, error: str | None) -> None:
        """Write one blob where ``ref`` says (unless its file failed already) or count it as
        failed with ``error``; end the file if it was its last."""
        task = ref.task
        wrote = False
        if plain is not None and task.failed is None:
            writer = self._writer(task)
            if task.stages is None:  # else appended in turn, by `_FileTask.written`
                writer.pwrite(ref.offset, plain)
                wrote = True
            self.progress.advance(bytes_=len(plain))
        if task.written(ref.offset, plain, error, self._held, wrote=wrote):
            self._end(task)

    def _writer(self, task: _FileTask) -> FileWriter:
        with task.lock:
            if task.writer is None:
                if self._stop.is_set():
                    raise Interrupted("restore interrupted")
                task.writer = self.target.open_file(task.rel, task.node.size)
                with self._lock:
                    self._open.add(task)
                if self._writes is not None and task.node.size >= STAGE_MIN:
                    task.stage(self._stages, self._writes, self._write_mode)
            return task.writer

    def _end(self, task: _FileTask) -> None:
        """The file's last blob is in: commit it, or remove it and report why."""
        node, writer = task.node, task.writer
        error = task.failed
        if error is None and (
            writer is None
            or task.cursor != node.size
            or (node.sha256 and task.sha.hexdigest() != node.sha256)
        ):
            error = "restored content does not match the snapshot's SHA-256"
        with self._lock:
            self._open.discard(task)
        if writer is not None:
            try:
                if error is None:
                    writer.commit(node.mode, node.uid, node.gid, node.mtime_ns, None, node.xattrs)
                else:
                    writer.abort()
            except BaseException:
                writer.abort()
                raise
            finally:
                task.give_back()
        if error is None:
            self._done(node)
        else:
            self._failed("/".join(task.rel), error)
