"""One file into blobs, and its node (engine layer): what a backup does with each file.

`FileReader` reads a file (or any byte stream) and stores its chunks, or reuses the node of
a file its parent snapshot shows unchanged, counting both in the run's `Counts` and
progress. The walk (`FileTreeBackup`) calls it from its threads, and a child process of the
walk (`stackvault.engine.walkprocs`) from its own copy.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from stackvault.chunking.cdc import Chunker
from stackvault.chunking.streamcut import StreamCutter
from stackvault.engine.counts import Counts
from stackvault.engine.listing import DirectoryLister
from stackvault.engine.nodes import node_from_entry, same_metadata
from stackvault.engine.progress import Progress
from stackvault.errors import Interrupted, SourceError, SourceVanished
from stackvault.fs.entry import FsEntry
from stackvault.fs.walk import VANISHED, FileWalker, Problem
from stackvault.repo.blob import BlobType
from stackvault.repo.repository import Repository
from stackvault.repo.tree import Node
from stackvault.repo.writer import BlobSaver


class FileReader:
    """Reads the files of one backup run into blobs; thread-safe. ``progress``, ``counts``
    and ``problem`` may be replaced between uses (a child process counts each job apart).
    `close` at the end."""

    def __init__(
        self,
        repo: Repository,
        progress: Progress,
        lister: DirectoryLister,
        *,
        workers: int,
        stop: threading.Event,
        problem: Callable[[Problem], None],
    ) -> None:
        self.repo = repo
        self.progress = progress
        self.counts = Counts()
        self.problem = problem
        self._lister = lister
        self._stop = stop
        self._local = threading.local()
        # Whole-file SHA-256 of large files, computed behind their chunking (StreamCutter).
        self._digests = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="digest")

    def close(self) -> None:
        self._digests.shutdown(wait=True)

    def _cutter(self) -> StreamCutter:
        """This thread's chunker and read buffer, made on first use and kept for the run."""
        cutter: StreamCutter | None = getattr(self._local, "cutter", None)
        if cutter is None:
            cfg = self.repo.config
            cutter = self._local.cutter = StreamCutter(
                Chunker(cfg.chunker, self.repo.master.chunker_seed), self._digests
            )
        return cutter

    def store_stream(self, writer: BlobSaver, stream: object) -> tuple[list[bytes], str, int]:
        """Chunk, hash and store a byte stream; return (blob ids, sha256 hex, size)."""
        sha = hashlib.sha256()
        content: list[bytes] = []
        size = 0
        master = self.repo.master
        for chunk in self._cutter().chunks(stream, sha):
            if self._stop.is_set():
                raise Interrupted("backup interrupted")
            blob_id = master.blob_id(chunk)
            writer.save(BlobType.DATA, chunk, blob_id)
            content.append(blob_id)
            size += len(chunk)
            self.progress.advance(bytes_=len(chunk))
        return content, sha.hexdigest(), size

    def store_small(
        self, writer: BlobSaver, walker: FileWalker, entry: FsEntry
    ) -> tuple[list[bytes], str, int]:
        """A file below the minimum chunk size is one chunk: one read, no chunker set-up.

        Gives the same blobs as `store_stream` would (the chunker never cuts below its
        minimum), so deduplication does not depend on which path a file took.
        """
        small = self.repo.config.chunker.min
        data = walker.read_small_file(entry, small)
        if len(data) >= small:  # grew since it was listed
            with walker.open_regular_file(entry) as f:
                return self.store_stream(writer, f)
        if self._stop.is_set():
            raise Interrupted("backup interrupted")
        content: list[bytes] = []
        if data:
            blob_id = self.repo.master.blob_id(data)
            writer.save(BlobType.DATA, data, blob_id)
            content.append(blob_id)
        self.progress.advance(bytes_=len(data))
        return content, hashlib.sha256(data).hexdigest(), len(data)

    def read_file(
        self, writer: BlobSaver, walker: FileWalker, entry: FsEntry, old: Node | None
    ) -> Node | None:
        try:
            node = node_from_entry(entry)
            try:
                if entry.size < self.repo.config.chunker.min:
                    node.content, node.sha256, node.size = self.store_small(writer, walker, entry)
                else:
                    with walker.open_regular_file(entry) as f:
                        node.content, node.sha256, node.size = self.store_stream(writer, f)
            except OSError as exc:
                raise SourceError(f"read failed: {exc.strerror or exc}") from exc
            if node.size != entry.size:
                self.problem(Problem(entry.path, "file changed size while being read", False))
            with self.counts.lock:
                self.counts.files += 1
                self.counts.bytes += node.size
                if old is None:
                    self.counts.files_new += 1
                else:
                    self.counts.files_changed += 1
            self.progress.advance(files=1)
            return node
        except SourceVanished:
            self.problem(Problem(entry.path, VANISHED, False))
            return None
        except SourceError as exc:
            self.problem(Problem(entry.path, str(exc), True))
            return None

    def reuse(self, entry: FsEntry, old: Node | None) -> Node | None:
        """The node of an unchanged file, built from its parent node without reading it."""
        if old is None or not self._lister.unchanged(entry, old):
            return None
        if same_metadata(entry, old):
            node = old  # nodes are never changed once built, so the parent's can be shared
        else:
            node = node_from_entry(entry)
            node.content, node.sha256, node.size = list(old.content), old.sha256, old.size
        with self.counts.lock:
            self.counts.files += 1
            self.counts.files_unmodified += 1
            self.counts.bytes += node.size
        self.progress.advance(files=1, bytes_=node.size)
        return node

    def linked(self, first: Future[Node | None], entry: FsEntry) -> Future[Node | None]:
        """The node of a hard link to a file being read (``first``), once it is read; it
        fails as ``first`` fails."""
        out: Future[Node | None] = Future()
        counts = self.counts

        def done(f: Future[Node | None]) -> None:
            try:
                src = f.result()
            except BaseException as exc:  # the first link failed, or was cancelled
                out.set_exception(exc)
                return
            if src is None:
                out.set_result(None)
                return
            node = node_from_entry(entry)
            node.content, node.sha256, node.size = list(src.content), src.sha256, src.size
            with counts.lock:
                counts.files += 1
                counts.files_new += 1
                counts.bytes += node.size
            out.set_result(node)

        first.add_done_callback(done)
        return out
