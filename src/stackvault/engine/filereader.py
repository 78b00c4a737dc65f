"""One file into blobs, and its node (engine layer): what a backup does with each file.

`FileReader` reads a file (or any byte stream) and stores its chunks, or reuses the node of
a file its parent snapshot shows unchanged, counting both in the run's `Counts` and
progress. The walk (`FileTreeBackup`) calls it from its threads, and a child process of the
walk (`stackvault.engine.walkprocs`) from its own copy.
"""

from __future__ import annotations

import hashlib
import os
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
from stackvault.fs.walk import VANISHED, FileWalker, Problem, will_read
from stackvault.repo.blob import BlobType
from stackvault.repo.repository import Repository
from stackvault.repo.tree import Node
from stackvault.repo.writer import BlobSaver

Files = list[tuple[FsEntry, Node | None]]
"""Files to read: each entry with its node in the parent snapshot (None: new)."""


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

    def _small_node(
        self, writer: BlobSaver, walker: FileWalker, entry: FsEntry, dir_fd: int | None
    ) -> Node | None:
        """The node of a file listed below the minimum chunk size, read in one go and stored
        as one chunk (no chunker set-up; ``dir_fd``: its directory, `open_directory`), or
        None if it has grown to the minimum since it was listed (read it as a stream).

        Gives the same blobs as `store_stream` would (the chunker never cuts below its
        minimum), so deduplication does not depend on which path a file took.
        """
        small = self.repo.config.chunker.min
        data = walker.read_small_file(entry, small, dir_fd)
        if len(data) >= small:
            return None
        if self._stop.is_set():
            raise Interrupted("backup interrupted")
        node = node_from_entry(entry)
        if data:
            blob_id = self.repo.master.blob_id(data)
            writer.save(BlobType.DATA, data, blob_id)
            node.content = [blob_id]
        node.sha256 = hashlib.sha256(data).hexdigest()
        node.size = len(data)
        return node

    def _read(
        self,
        writer: BlobSaver,
        walker: FileWalker,
        entry: FsEntry,
        dir_fd: int | None = None,
    ) -> tuple[Node, int] | None:
        """A file read and stored: its node and the bytes not yet given to progress (a
        streamed file's are given chunk by chunk); None if it could not be read, which is
        reported as a problem. Counts nothing."""
        try:
            try:
                if entry.size < self.repo.config.chunker.min:
                    node = self._small_node(writer, walker, entry, dir_fd)
                    if node is not None:
                        return self._checked(node, entry), node.size
                node = node_from_entry(entry)
                with walker.open_regular_file(entry) as f:
                    node.content, node.sha256, node.size = self.store_stream(writer, f)
                return self._checked(node, entry), 0
            except OSError as exc:
                raise SourceError(f"read failed: {exc.strerror or exc}") from exc
        except SourceVanished:
            self.problem(Problem(entry.path, VANISHED, False))
            return None
        except SourceError as exc:
            self.problem(Problem(entry.path, str(exc), True))
            return None

    def _checked(self, node: Node, entry: FsEntry) -> Node:
        """``node``, with a problem reported if the file's size changed while it was read."""
        if node.size != entry.size:
            self.problem(Problem(entry.path, "file changed size while being read", False))
        return node

    def read_file(
        self, writer: BlobSaver, walker: FileWalker, entry: FsEntry, old: Node | None
    ) -> Node | None:
        """Read and store a file (``old``: its node in the parent snapshot, None if new); its
        node, or None if it could not be read (reported as a problem). Counted."""
        read = self._read(writer, walker, entry)
        if read is None:
            return None
        node, unsent = read
        new = old is None
        self._count(files=1, new=int(new), changed=int(not new), size=node.size, unsent=unsent)
        return node

    def read_small_files(
        self, writer: BlobSaver, walker: FileWalker, directory: FsEntry, files: Files
    ) -> list[Node]:
        """`read_file` of each of ``files``: regular files listed in ``directory``, below the
        minimum chunk size, each with its parent node. They are opened by name in the
        directory, opened once (`FileWalker.open_directory`; by path if it cannot be), and
        counted once for all. The nodes of those that could be read, in order.

        The kernel is first asked to read them all ahead (`will_read`): with
        their reads in flight together, a cold read rarely waits on the disk alone, and
        waits less CPU time in the kernel (200,000 files from disk, cold: 24.0-29.5 s and
        35.5-42.2 CPU-s without, 16.1-16.7 s and 28.2-29.3 CPU-s with; docs/PERFORMANCE.md)."""
        dir_fd = walker.open_directory(directory)
        if dir_fd is not None and len(files) > 1:
            for entry, _old in files:
                will_read(entry.name, dir_fd)
        nodes: list[Node] = []
        new = changed = size = unsent = 0
        try:
            for entry, old in files:
                read = self._read(writer, walker, entry, dir_fd)
                if read is None:
                    continue
                node, more = read
                nodes.append(node)
                size += node.size
                unsent += more
                if old is None:
                    new += 1
                else:
                    changed += 1
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        self._count(files=len(nodes), new=new, changed=changed, size=size, unsent=unsent)
        return nodes

    def _count(self, *, files: int, new: int, changed: int, size: int, unsent: int) -> None:
        """Count files read (``new`` and ``changed`` of them) of ``size`` bytes, and give
        progress the files and the ``unsent`` bytes."""
        with self.counts.lock:
            self.counts.files += files
            self.counts.bytes += size
            self.counts.files_new += new
            self.counts.files_changed += changed
        self.progress.advance(files=files, bytes_=unsent)

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
