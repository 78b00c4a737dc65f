"""How a restore writes its files (engine layer): what file threads and child processes run
for each batch of files `stackvault.engine.restore` hands them.

A file's bytes are authenticated blob by blob and its SHA-256 is compared with the snapshot's
record before the file gets its metadata (or, with ``overwrite``, replaces the old one); a
file that does not match is removed, so a damaged file is never left behind looking good,
and is reported (with the blob at fault) while the others are still restored. A small file
(at most one blob, below `STAGE_MIN`) is checked before it is even created, then written and
given its metadata in one go; the stored blobs of a batch's small files are read with one
ranged read per run of nearby blobs in a pack. A large file is written front to back through
page-aligned stages, its blobs fetched and authenticated a few ahead on the blob pool.
"""

from __future__ import annotations

import hashlib
import itertools
import mmap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from stackvault.engine.progress import Progress
from stackvault.errors import IntegrityError, Interrupted
from stackvault.fs.target import FileWriter, RestoreTarget, SmallFile
from stackvault.fs.writemode import WriteMode
from stackvault.readahead import read_ahead
from stackvault.repo.blob import IndexEntry
from stackvault.repo.repository import Repository
from stackvault.repo.spans import by_pack, cut_spans, read_span
from stackvault.repo.tree import Node

PREFETCH = 4
"""Blobs of one file fetched and decrypted ahead of the one being written."""
STAGE_MIN = 1 << 20
"""Files at least this large are written through stages (`FileWriter.stage`), around the page
cache or through it as `WriteMode` finds cheaper."""
RUN_BLOB = 256 * 1024
RUN_GAP = 64 * 1024
"""Stored blobs below `RUN_BLOB` of a batch of small files, less than `RUN_GAP` apart in one
pack, are read with one ranged read (the bytes between them are read and dropped): a read
per file costs more than the file's own work there."""
RUN_MAX = 8 * 1024 * 1024
"""Longest such read."""
STAGE_BYTES = 4 * 1024 * 1024
"""Length of each of a file thread's two stages (page-aligned, reused for every file)."""

Files = list[tuple[list[str], Node]]
"""A batch of files handed to a lane: each one's path components and node."""
_Sealed = tuple[IndexEntry, memoryview]
"""Where a blob is stored and its stored bytes, read with those of nearby blobs."""


class FileRestorer:
    """Restores batches of files (`restore_files`): tells ``done`` of each file restored and
    ``failed`` of each that repository damage kept from being restored (its path and why);
    advances ``progress`` by the bytes written. ``blob_pool`` and ``write_pool`` (with
    ``write_mode``) let a large file's blobs be fetched ahead and its stages written in the
    background; without them a file's blobs are read and written in turn. Thread-safe:
    every file thread of a restore shares one."""

    def __init__(
        self,
        repo: Repository,
        *,
        progress: Progress,
        stop: threading.Event,
        done: Callable[[Node], None],
        failed: Callable[[str, str], None],
        blob_pool: ThreadPoolExecutor | None = None,
        write_pool: ThreadPoolExecutor | None = None,
        write_mode: WriteMode | None = None,
    ) -> None:
        self.repo = repo
        self.progress = progress
        self._stop = stop
        self._file_done = done
        self._file_failed = failed
        self._blob_pool = blob_pool
        self._write_pool = write_pool
        self._write_mode = write_mode or WriteMode()
        self._local = threading.local()

    def restore_files(self, target: RestoreTarget, files: Files) -> None:
        """Restore a batch of files below ``target``: one-blob files below `STAGE_MIN` in
        one go each, those of one directory together (`_restore_small`), the others through
        a `FileWriter`."""
        sealed = self._read_runs(files) if len(files) > 1 else {}
        run: list[tuple[list[str], Node]] = []  # small files of one directory, in turn
        for rel, node in files:
            if len(node.content) < 2 and node.size < STAGE_MIN:
                if run and (len(run[0][0]) != len(rel) or run[0][0][:-1] != rel[:-1]):
                    self._restore_small(target, run, sealed)
                    run = []
                run.append((rel, node))
                continue
            if run:
                self._restore_small(target, run, sealed)
                run = []
            one = sealed.get(node.content[0]) if len(node.content) == 1 else None
            self._restore_file(target, rel, node, one)
        if run:
            self._restore_small(target, run, sealed)

    def _restore_small(
        self,
        target: RestoreTarget,
        files: list[tuple[list[str], Node]],
        sealed: dict[bytes, _Sealed],
    ) -> None:
        """Restore files of at most one blob, smaller than `STAGE_MIN`, all in one
        directory: each one's content is read and checked against the snapshot's SHA-256
        first, and only those that match are created, written and given their metadata, in
        one go (`RestoreTarget.write_files`); each that does not is reported."""
        good: list[SmallFile] = []
        nodes: list[Node] = []
        for rel, node in files:
            if self._stop.is_set():
                raise Interrupted("restore interrupted")
            try:
                data: bytes | memoryview = b""
                if node.content:
                    blob_id, verify = node.content[0], not node.sha256
                    one = sealed.get(blob_id)
                    if one is None:
                        data = self.repo.load_blob(blob_id, verify_id=verify)
                    else:
                        data = self.repo.open_blob(one[0], blob_id, one[1], verify_id=verify)
                if len(data) != node.size or (
                    node.sha256 and hashlib.sha256(data).hexdigest() != node.sha256
                ):
                    raise IntegrityError("restored content does not match the snapshot's SHA-256")
            except IntegrityError as exc:
                self._file_failed("/".join(rel), str(exc))  # the path only when needed
                continue
            good.append(
                SmallFile(rel[-1], data, node.mode, node.uid, node.gid, node.mtime_ns, node.xattrs)
            )
            nodes.append(node)
        if not good:
            return
        target.write_files(files[0][0][:-1], good)
        self.progress.advance(bytes_=sum(len(f.data) for f in good))
        for node in nodes:
            self._file_done(node)

    def _read_runs(self, files: Files) -> dict[bytes, _Sealed]:
        """Where the blobs of the one-blob files of a batch are and their stored bytes, by
        blob id, read with one ranged read per run of nearby small blobs in a pack
        (`RUN_BLOB`, `RUN_GAP`, `RUN_MAX`) instead of one read per file. Best effort: a
        blob it cannot read (missing pack, unindexed blob, short read) is left out, and its
        file reads it on its own, which reports the damage for that file alone."""
        small: list[tuple[IndexEntry, bytes]] = []
        for _rel, node in files:
            if len(node.content) != 1:
                continue
            entry = self.repo.index.get(node.content[0])
            if entry is not None and entry.length < RUN_BLOB:
                small.append((entry, node.content[0]))
        out: dict[bytes, _Sealed] = {}
        for blobs in by_pack(small, _entry_of).values():
            for run in cut_spans(blobs, _entry_of, RUN_GAP, RUN_MAX):
                if len(run) < 2:
                    continue  # nothing saved: the file reads its blob itself
                data = read_span(self.repo.store, [entry for entry, _id in run])
                for entry, blob_id in run:
                    sealed = data.sealed(entry)
                    if sealed is not None:
                        out[blob_id] = entry, sealed
        return out

    def _write_blobs(
        self, node: Node, writer: FileWriter, sealed: _Sealed | None = None
    ) -> tuple[int, str]:
        """Write a file's blobs; the bytes written and the SHA-256 (hex) of what was written.

        A large file is written front to back through this thread's stages, each full stage
        written on the write pool (around the page cache or through it, as `WriteMode`
        finds cheaper) while the next fills, its blobs fetched and authenticated a few
        ahead on the blob pool. Otherwise a file of several blobs has them fetched,
        authenticated and written at their offsets (known from the index) a few ahead on the
        blob pool, so that copying into the page cache keeps every core busy; this thread
        only hashes them in order.

        Blob ids are not hashed again where the file has a SHA-256: the caller checks the
        whole file against it before committing (and removes the file if it differs).
        ``sealed``: where a one-blob file's blob is and its stored bytes, already read
        (`_read_runs`).
        """
        content = node.content
        verify = not node.sha256
        sha = hashlib.sha256()
        written = 0
        pool, writes = self._blob_pool, self._write_pool
        if (
            pool is not None
            and writes is not None
            and node.size >= STAGE_MIN
            and writer.stage(self._stages(), writes, self._write_mode)
        ):
            for data in self._prefetched(pool, content, None, verify):
                sha.update(data)
                writer.append(data)
                written += len(data)
                self.progress.advance(bytes_=len(data))
            return written, sha.hexdigest()
        if sealed is not None and len(content) == 1:
            data = self.repo.open_blob(sealed[0], content[0], sealed[1], verify_id=verify)
            sha.update(data)
            writer.pwrite(0, data)
            self.progress.advance(bytes_=len(data))
            return len(data), sha.hexdigest()
        if len(content) < 2 or pool is None:
            for blob_id in content:
                data = self.repo.load_blob(blob_id, verify_id=verify)
                sha.update(data)
                writer.pwrite(written, data)
                written += len(data)
                self.progress.advance(bytes_=len(data))
            return written, sha.hexdigest()
        for data in self._prefetched(pool, content, writer, verify):
            sha.update(data)
            written += len(data)
            self.progress.advance(bytes_=len(data))
        return written, sha.hexdigest()

    def _stages(self) -> tuple[memoryview, memoryview]:
        """This thread's two page-aligned stages, made on first use."""
        stages: tuple[memoryview, memoryview] | None = getattr(self._local, "stages", None)
        if stages is None:
            stages = self._local.stages = (
                memoryview(mmap.mmap(-1, STAGE_BYTES)),
                memoryview(mmap.mmap(-1, STAGE_BYTES)),
            )
        return stages

    def _prefetched(
        self,
        pool: ThreadPoolExecutor,
        content: list[bytes],
        writer: FileWriter | None,
        verify_id: bool,
    ) -> Iterator[bytes | memoryview]:
        """The plaintext of ``content`` in order, each blob fetched and authenticated up to
        `PREFETCH` ahead on ``pool`` (`read_ahead`) and, given a ``writer``, also written at
        its offset there."""
        offsets: list[int] = []
        if writer is not None:
            offsets = list(
                itertools.accumulate(
                    (self.repo.index_entry(b).raw_length for b in content[:-1]), initial=0
                )
            )

        def fetch(index: int) -> bytes | memoryview:
            if self._stop.is_set():
                raise Interrupted("restore interrupted")
            data = self.repo.load_blob(content[index], verify_id=verify_id)
            if writer is not None:
                writer.pwrite(offsets[index], data)
            return data

        # `read_ahead` waits for the reads running when it ends: no pwrite may still run
        # once the writer is committed or aborted.
        yield from read_ahead(pool, range(len(content)), fetch, PREFETCH)

    def _restore_file(
        self,
        target: RestoreTarget,
        rel: list[str],
        node: Node,
        sealed: _Sealed | None = None,
    ) -> None:
        path = "/".join(rel)
        try:
            if self._stop.is_set():
                raise Interrupted("restore interrupted")
            writer = target.open_file(rel, node.size)
            try:
                written, digest = self._write_blobs(node, writer, sealed)
                if written != node.size or (node.sha256 and digest != node.sha256):
                    raise IntegrityError("restored content does not match the snapshot's SHA-256")
                writer.commit(node.mode, node.uid, node.gid, node.mtime_ns, None, node.xattrs)
            except BaseException:
                writer.abort()
                raise
        except IntegrityError as exc:
            self._file_failed(path, str(exc))
            return
        self._file_done(node)


def _entry_of(blob: tuple[IndexEntry, bytes]) -> IndexEntry:
    return blob[0]
