"""Files and directories into trees (engine layer): the walk of a backup's paths.

`FileTreeBackup` is the part of a backup run (`engine/backup.py`) that turns the paths into
trees: the main thread walks directories depth first, with a stack of its own (trees may be
deeper than Python's recursion limit), and builds their trees; files of at least the minimum
chunk size are read, chunked and hashed by a bounded pool of worker threads (the native
libraries release the GIL) and their chunks compressed and encrypted on the writer's pool.
Smaller files are read and hashed by the walking thread itself when it would otherwise wait
(`SmallFiles`). A file the parent snapshot shows unchanged (and whose blobs are all indexed)
is not read. A directory's tree is stored once everything below it is stored; the walk does
not wait for it. Byte streams that are not files (a command's output, a source's capture) are
stored through the same `store_stream`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from stackvault.chunking.cdc import Chunker
from stackvault.chunking.streamcut import StreamCutter
from stackvault.engine.completions import Completions, Pending
from stackvault.engine.listing import DirectoryLister, Listing
from stackvault.engine.nodes import node_from_entry, same_metadata
from stackvault.engine.progress import Progress
from stackvault.engine.smallfiles import SmallFiles
from stackvault.errors import Interrupted, SourceError, SourceVanished
from stackvault.fs.entry import FsEntry, entry_from_stat
from stackvault.fs.walk import VANISHED, FileWalker, Problem
from stackvault.repo.blob import BlobType
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, encode_tree
from stackvault.repo.writer import BlobWriter


@dataclass
class Counts:
    """What a backup run went through, for its snapshot's summary (thread-safe with
    ``lock``)."""

    files: int = 0
    dirs: int = 0
    bytes: int = 0
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **deltas: int) -> None:
        """Add to counters by name (``files=1, bytes=n``) under the lock."""
        with self.lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)


@dataclass
class _DirWalk:
    """A directory on the walk's stack: its listing, the next child to take on, and what its
    children will give (nodes, or futures of them)."""

    entry: FsEntry
    old: Node | None
    listing: Listing
    out: Future[Node | None]
    """Resolved to the directory's node once every child is stored."""
    next: int = 0
    pending: list[Pending] = field(default_factory=list)
    deferred: list[tuple[FsEntry, Node | None]] = field(default_factory=list)


class FileTreeBackup:
    """The files and directories of one backup run. Create it for the run, use it, then
    `close` it once (also on failure)."""

    def __init__(
        self,
        repo: Repository,
        progress: Progress,
        *,
        force: bool,
        workers: int,
        stop: threading.Event,
        problem: Callable[[Problem], None],
    ) -> None:
        self.repo = repo
        self.progress = progress
        self.counts = Counts()
        self._problem = problem
        self._stop = stop
        self._local = threading.local()
        self._hardlinks: dict[str, Future[Node | None]] = {}
        self._completions = Completions()
        self._lister = DirectoryLister(repo, progress, force=force, stop=stop)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backup")
        self._slots = threading.BoundedSemaphore(workers * 4)
        # Small files the walking thread reads when it would otherwise wait (smallfiles.py).
        self._small = SmallFiles()
        # Whole-file SHA-256 of large files, computed behind their chunking (StreamCutter).
        self._digests = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="digest")

    def close(self, *, committed: bool) -> None:
        """Stop the threads; a run that did not commit cancels the small files still queued."""
        if not committed:
            self._stop.set()
            self._small.cancel(Interrupted("backup stopped"))
        self._lister.shutdown()
        self._pool.shutdown(wait=True, cancel_futures=True)
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

    # --- files and streams ----------------------------------------------------------------

    def store_stream(self, writer: BlobWriter, stream: object) -> tuple[list[bytes], str, int]:
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

    def _store_small(
        self, writer: BlobWriter, walker: FileWalker, entry: FsEntry
    ) -> tuple[list[bytes], str, int]:
        """A file below the minimum chunk size is one chunk: one read, no chunker set-up.

        Gives the same blobs as `_store_stream` would (the chunker never cuts below its
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

    def _backup_file(
        self, writer: BlobWriter, walker: FileWalker, entry: FsEntry, old: Node | None
    ) -> Node | None:
        try:
            return self._read_file(writer, walker, entry, old)
        finally:
            self._slots.release()

    def _read_file(
        self, writer: BlobWriter, walker: FileWalker, entry: FsEntry, old: Node | None
    ) -> Node | None:
        try:
            node = node_from_entry(entry)
            try:
                if entry.size < self.repo.config.chunker.min:
                    node.content, node.sha256, node.size = self._store_small(writer, walker, entry)
                else:
                    with walker.open_regular_file(entry) as f:
                        node.content, node.sha256, node.size = self.store_stream(writer, f)
            except OSError as exc:
                raise SourceError(f"read failed: {exc.strerror or exc}") from exc
            if node.size != entry.size:
                self._problem(Problem(entry.path, "file changed size while being read", False))
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
            self._problem(Problem(entry.path, VANISHED, False))
            return None
        except SourceError as exc:
            self._problem(Problem(entry.path, str(exc), True))
            return None

    def _reuse(self, entry: FsEntry, old: Node | None) -> Node | None:
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

    def _submit_file(
        self,
        pool: ThreadPoolExecutor,
        writer: BlobWriter,
        walker: FileWalker,
        entry: FsEntry,
        old: Node | None,
    ) -> Future[Node | None] | Node:
        key = f"{entry.device}:{entry.inode}" if entry.nlink > 1 else None
        if key is not None and key in self._hardlinks:
            return self._linked(self._hardlinks[key], entry, self.counts)
        self._small.acquire(self._slots)  # back-pressure on the walker
        fut = pool.submit(self._backup_file, writer, walker, entry, old)
        if key is not None:
            self._hardlinks[key] = fut
        return fut

    @staticmethod
    def _linked(first: Future[Node | None], entry: FsEntry, counts: Counts) -> Future[Node | None]:
        out: Future[Node | None] = Future()

        def done(f: Future[Node | None]) -> None:
            src = f.result()
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

    # --- directories ------------------------------------------------------------------------

    def save_tree(self, writer: BlobWriter, nodes: list[Node]) -> bytes:
        """Store a directory's tree blob; its id."""
        blob_id, _added = writer.save(BlobType.TREE, encode_tree(nodes))
        return blob_id

    def _backup_dir(
        self,
        pool: ThreadPoolExecutor,
        writer: BlobWriter,
        walker: FileWalker,
        entry: FsEntry,
        old: Node | None,
    ) -> Future[Node | None]:
        """Walk a directory and submit its files; the returned future resolves to its node
        once every child is stored. The walk does not wait for a directory's files: it goes
        on to the next directory while the workers read them. Depth first, with a stack of
        its own rather than recursion: trees may be deeper than Python's recursion limit."""
        top: Future[Node | None] = Future()
        stack = [self._enter_dir(walker, entry, old, None, top)]
        while stack:
            walk = stack[-1]
            sub = self._walk_children(pool, writer, walker, walk)
            if sub is None:
                stack.pop()
                self._leave_dir(writer, walker, walk)
                continue
            child, prev, ahead = sub
            out: Future[Node | None] = Future()
            walk.pending.append(out)
            stack.append(self._enter_dir(walker, child, prev, ahead, out))
        return top

    def _enter_dir(
        self,
        walker: FileWalker,
        entry: FsEntry,
        old: Node | None,
        listed: Future[Listing] | None,
        out: Future[Node | None],
    ) -> _DirWalk:
        """Start walking a directory: its listing (``listed`` if it was started ahead)."""
        if self._stop.is_set():
            raise Interrupted("backup interrupted")
        if listed is None:
            listing = self._lister.list(walker, entry, old)
        else:
            self._small.wait(listed)
            listing = self._lister.take(listed)
        return _DirWalk(entry, old, listing, out)

    def _walk_children(
        self, pool: ThreadPoolExecutor, writer: BlobWriter, walker: FileWalker, walk: _DirWalk
    ) -> tuple[FsEntry, Node | None, Future[Listing] | None] | None:
        """Take on the directory's next children up to its next subdirectory, which is
        returned (with its parent node and its listing if started ahead) for the caller to
        walk; None once every child is taken on."""
        children, old_children = walk.listing.children, walk.listing.old_children
        pending, deferred = walk.pending, walk.deferred
        small = self.repo.config.chunker.min
        while walk.next < len(children):
            child = children[walk.next]
            walk.next += 1
            prev = old_children.get(child.name)
            if child.kind == "dir":
                return child, prev, walk.listing.ahead.get(child.name)
            if child.kind != "file":
                pending.append(node_from_entry(child))
            elif (reused := self._reuse(child, prev)) is not None:
                pending.append(reused)
            elif child.size < small and child.nlink == 1:
                # Small files are read by this thread: their cost is Python glue, which
                # threads cannot share (the GIL), and handing them to a pool costs more than
                # it saves. It reads them when it would otherwise wait (smallfiles.py).
                deferred.append((child, prev))
            else:
                pending.append(self._submit_file(pool, writer, walker, child, prev))
        return None

    def _leave_dir(self, writer: BlobWriter, walker: FileWalker, walk: _DirWalk) -> None:
        """Every child is taken on: have the directory's node made once they are stored."""
        if walk.deferred:
            read = functools.partial(self._read_file, writer, walker)
            walk.pending.extend(self._small.defer(read, walk.deferred))
        entry, old, old_children = walk.entry, walk.old, walk.listing.old_children

        def finish(kept: list[Node]) -> Node:
            node = node_from_entry(entry)
            if (
                old is not None
                and old.subtree is not None
                and len(kept) == len(old_children)
                and all((o := old_children.get(n.name)) is n or o == n for n in kept)
            ):
                # Nothing below changed: the tree would serialise to the same bytes, so it
                # has the same id. Skip encoding, hashing and the index lookup.
                node.subtree = old.subtree
            else:
                node.subtree = self.save_tree(writer, kept)
            with self.counts.lock:
                self.counts.dirs += 1
            return node

        self._completions.when_all(walk.pending, finish, walk.out)

    def _backup_root(
        self,
        pool: ThreadPoolExecutor,
        writer: BlobWriter,
        walker: FileWalker,
        path: str,
        old: Node | None,
    ) -> Node | Future[Node | None] | None:
        entry = walker.stat_root(path)
        if entry is None:
            return None
        if entry.kind == "dir":
            return self._backup_dir(pool, writer, walker, entry, old)
        if entry.kind == "file":
            reused = self._reuse(entry, old)
            return (
                reused
                if reused is not None
                else self._submit_file(pool, writer, walker, entry, old)
            )
        return node_from_entry(entry)

    def build_root(
        self,
        writer: BlobWriter,
        walker: FileWalker,
        paths: list[str],
        parent: Snapshot | None,
        extra: list[Node],
        *,
        read: Callable[[str], None] | None = None,
    ) -> bytes:
        """Save the trees from ``/`` down to every backed-up path, with ``extra`` nodes added
        to the root (the artifacts' directory); return the root tree id. Files are compared
        with ``parent``'s (unchanged ones are not read). ``read`` is called, from any thread,
        with each of ``paths`` once everything below it is stored (not when its walk failed).
        The directories above the paths are walked with a stack of their own (`_Above`), not
        recursion: a path may have more components than Python's recursion limit."""
        pool = self._pool
        parent_root = Node(name="", type="dir", subtree=parent.tree) if parent else None
        stack = [self._above("/", paths, parent_root, list(extra), None)]
        while True:
            top = stack[-1]
            name = next(top.names, None)
            if name is not None:
                full = f"{top.prefix.rstrip('/')}/{name}"
                if full in top.groups[name]:
                    built = self._backup_root(pool, writer, walker, full, top.olds.get(name))
                    top.nodes.append(built)
                    if read is not None:
                        _when_read(built, full, read)
                else:
                    # A directory above a backed-up path: its own metadata, none of its
                    # other contents.
                    inter = node_from_entry(entry_from_stat(full, name, os.lstat(full)))
                    stack.append(self._above(full, top.groups[name], top.olds.get(name), [], inter))
                continue
            self._small.drain()
            done = [n.result() if isinstance(n, Future) else n for n in top.nodes]
            kept = [n for n in done if n is not None] + top.more
            tree_id = self.save_tree(writer, sorted(kept, key=lambda n: n.name))
            stack.pop()
            if not stack:
                return tree_id
            assert top.node is not None
            top.node.subtree = tree_id
            stack[-1].nodes.append(top.node)

    def _above(
        self, prefix: str, members: list[str], old: Node | None, more: list[Node], node: Node | None
    ) -> _Above:
        """Directory ``prefix``, above the backed-up ``members`` (or one of them), to build
        (`build_root`); ``old`` is the same directory in the parent snapshot."""
        groups: dict[str, list[str]] = {}
        for p in members:
            rest = p[len(prefix) :].lstrip("/")
            groups.setdefault(rest.split("/", 1)[0], []).append(p)
        olds = self._lister.parent_children(old)
        return _Above(prefix, groups, iter(sorted(groups)), olds, more, node)


def _when_read(
    built: Node | Future[Node | None] | None, path: str, read: Callable[[str], None]
) -> None:
    """``read(path)`` once ``built`` (a backed-up path's node) is done, unless it failed."""
    if not isinstance(built, Future):
        read(path)
        return

    def done(future: Future[Node | None]) -> None:
        if not future.cancelled() and future.exception() is None:
            read(path)

    built.add_done_callback(done)


@dataclass
class _Above:
    """A directory above the backed-up paths on `FileTreeBackup.build_root`'s stack."""

    prefix: str
    groups: dict[str, list[str]]
    """Backed-up paths below it, by the name of its entry they are in (or are)."""
    names: Iterator[str]
    """The names of ``groups`` still to build, in order."""
    olds: dict[str, Node]
    """Its entries in the parent snapshot, by name."""
    more: list[Node]
    """Nodes added to it besides (the artifacts' directory, at the root)."""
    node: Node | None
    """Its own node, which gets its tree id once it is built (None for the root)."""
    nodes: list[Node | Future[Node | None] | None] = field(default_factory=list)
    """Its entries built or being built so far."""
