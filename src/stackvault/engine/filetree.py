"""Files and directories into trees (engine layer): the walk of a backup's paths.

`FileTreeBackup` is the part of a backup run (`engine/backup.py`) that turns the paths into
trees: the main thread walks directories depth first, with a stack of its own (trees may be
deeper than Python's recursion limit), and builds their trees; files of at least the minimum
chunk size are read, chunked and hashed by a bounded pool of worker threads (the native
libraries release the GIL) and their chunks compressed and encrypted on the writer's pool.
Smaller files are read and hashed by the walking thread itself when it would otherwise wait
(`SmallFiles`). A file the parent snapshot shows unchanged (and whose blobs are all indexed)
is not read (`FileReader`, which also stores byte streams that are not files: a command's
output, a source's capture). A directory's tree is stored once everything below it is
stored; the walk does not wait for it.

With child processes (`start_processes`; a local repository on several cores) the
directories are walked and their small files read by the children instead, one directory a
job (`stackvault.engine.walkprocs`); the main thread then only starts the walk of each
backed-up path and waits for it.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from stackvault.engine.completions import Completions, Pending
from stackvault.engine.counts import Counts
from stackvault.engine.filereader import FileReader, Files
from stackvault.engine.forked import ChildProcess, fork_supported
from stackvault.engine.listing import DirectoryLister, Listing
from stackvault.engine.nodes import node_from_entry
from stackvault.engine.progress import NullProgress, Progress
from stackvault.engine.smallfiles import SmallFiles
from stackvault.engine.walkprocs import (
    DirJob,
    Item,
    Job,
    ParentFile,
    ReadJob,
    SealingSink,
    SmallBatch,
    SubDir,
    WalkLanes,
    WalkOutcome,
    count_into,
    split_reads,
)
from stackvault.errors import Interrupted
from stackvault.fs.entry import FsEntry, entry_from_stat
from stackvault.fs.walk import FileWalker, Problem, will_read
from stackvault.repo.blob import BlobType
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, encode_tree
from stackvault.repo.writer import BlobSaver, BlobWriter


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
        self._problem = problem
        self._stop = stop
        self._hardlinks: dict[str, Future[Node | None]] = {}
        self._hardlinks_lock = threading.Lock()
        # Child processes walking directories (walkprocs.py), from `start_processes`.
        self._lanes: WalkLanes | None = None
        self._completions = Completions()
        self._lister = DirectoryLister(repo, progress, force=force, stop=stop)
        self.reader = FileReader(
            repo, progress, self._lister, workers=workers, stop=stop, problem=problem
        )
        self.counts = self.reader.counts
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backup")
        self._slots = threading.BoundedSemaphore(workers * 4)
        # Small files the walking thread reads when it would otherwise wait (smallfiles.py).
        self._small = SmallFiles()

    def close(self, *, committed: bool) -> None:
        """Stop the threads; a run that did not commit cancels the small files still queued."""
        if not committed:
            self._stop.set()
            self._small.cancel(Interrupted("backup stopped"))
        if self._lanes is not None:
            self._lanes.close()
        self._lister.shutdown()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.reader.close()

    # --- files and streams ----------------------------------------------------------------

    def _backup_file(
        self, writer: BlobWriter, walker: FileWalker, entry: FsEntry, old: Node | None
    ) -> Node | None:
        try:
            return self.reader.read_file(writer, walker, entry, old)
        finally:
            self._slots.release()

    def _submit_file(
        self,
        pool: ThreadPoolExecutor,
        writer: BlobWriter,
        walker: FileWalker,
        entry: FsEntry,
        old: Node | None,
    ) -> Future[Node | None] | Node:
        first: Future[Node | None] | None = None
        if entry.nlink > 1:
            # Files are submitted by the walking thread, and with child processes by their
            # lane threads: the first of a set of hard links is read, the others share it.
            key = f"{entry.device}:{entry.inode}"
            with self._hardlinks_lock:
                seen = self._hardlinks.get(key)
                if seen is None:
                    first = self._hardlinks[key] = Future()
            if seen is not None:
                return self.reader.linked(seen, entry)
        if self._lanes is None:
            self._small.acquire(self._slots)  # back-pressure on the walker
        else:
            self._slots.acquire()
        try:
            fut = pool.submit(self._backup_file, writer, walker, entry, old)
        except BaseException as exc:
            self._slots.release()
            if first is not None:
                first.set_exception(exc)
            raise
        if first is None:
            return fut
        _chain(fut, first)
        return first

    # --- child processes (walkprocs.py) -----------------------------------------------------

    def start_processes(self, walker: FileWalker, count: int) -> int:
        """Fork ``count`` child processes to walk directories with ``walker`` (before the
        run starts any thread: see `stackvault.engine.forked`); how many were started: 0
        where processes cannot be made (not Linux, or the system refuses), and then the walk
        runs here, as a notice says (when the system refused)."""
        if count <= 0 or not fork_supported():
            return 0
        children: list[ChildProcess[Job, WalkOutcome]] = []
        try:
            for _ in range(count):
                setup = functools.partial(self._walk_child, walker)
                children.append(ChildProcess(setup, tuple(children), role="backup"))
        except OSError as exc:
            for child in children:
                child.close()
            self.progress.notice(
                f"notice: directories walked by one process: no child process could be "
                f"started ({exc.strerror or exc})"
            )
            return 0
        self._lanes = WalkLanes(children)
        return len(children)

    def _walk_child(self, walker: FileWalker) -> Callable[[Job], WalkOutcome]:
        """Run in a child right after the fork: the function that runs a job there. What
        the job counts, notices and finds wrong goes into its outcome (this copy of the
        run's counters, progress and problem report is the child's own)."""
        sink = SealingSink(self.repo)
        problems: list[Problem] = []
        walker.on_problem = self._problem = self.reader.problem = problems.append
        self._lanes = None
        reader = self.reader

        def run(job: Job) -> WalkOutcome:
            problems.clear()
            self.counts = reader.counts = Counts()
            progress = self.progress = reader.progress = self._lister.progress = NullProgress()
            out = self._child_job(sink, walker, job)
            out.blobs = sink.take()
            out.problems = list(problems)
            count_into(out, self.counts, progress)
            return out

        return run

    def _child_job(self, sink: SealingSink, walker: FileWalker, job: Job) -> WalkOutcome:
        """A job, in a child: read a batch of small files, or list a directory, keep its
        unchanged files, read its small files (some, `split_reads`) and, when nothing is
        left to do elsewhere, store its tree."""
        if isinstance(job, ReadJob):
            return WalkOutcome(
                items=list(self.reader.read_small_files(sink, walker, job.directory, job.files))
            )
        if job.mount_point:
            walker.keep_empty(job.entry)
        # The kernel is asked to read ahead the small files read here by `read_small_files`
        # (through the directory, just before it reads them) and those left for later jobs
        # below; the listing does not ask for them a second time.
        listing = self._lister.list_one(walker, job.entry, job.old, hints=False)
        old_children = listing.old_children
        items: list[Item] = []
        reads: Files = []
        small = self.repo.config.chunker.min
        for child in listing.children:
            prev = old_children.get(child.name)
            if child.kind == "dir":
                items.append(SubDir(child, prev, walker.is_mount_point(child)))
            elif child.kind != "file":
                items.append(node_from_entry(child))
            elif (reused := self.reader.reuse(child, prev)) is not None:
                items.append(reused)
            elif child.size < small and child.nlink == 1:
                reads.append((child, prev))
            else:
                items.append(ParentFile(child, prev))
        here, later = split_reads(reads)
        items.extend(self.reader.read_small_files(sink, walker, job.entry, here))
        for batch in later:
            for entry, _prev in batch:
                will_read(entry.path)
            items.append(SmallBatch(job.entry, batch))
        if all(isinstance(item, Node) for item in items):
            kept = [item for item in items if isinstance(item, Node)]
            return WalkOutcome(node=self._dir_node(sink, job.entry, job.old, old_children, kept))
        return WalkOutcome(items=items)

    def _dir_in_child(
        self, writer: BlobWriter, walker: FileWalker, job: DirJob, out: Future[Node | None]
    ) -> None:
        """Have a child walk a directory; ``out`` resolves to its node once everything
        below it is stored."""
        assert self._lanes is not None
        done = functools.partial(self._dir_outcome, writer, walker, job, out)
        self._lanes.submit(job).add_done_callback(done)

    def _dir_outcome(
        self,
        writer: BlobWriter,
        walker: FileWalker,
        job: DirJob,
        out: Future[Node | None],
        fut: Future[WalkOutcome],
    ) -> None:
        """A child's answer for a directory (on its lane's thread): store what it sealed,
        hand on what is left, and have the directory's node made once that is done."""
        try:
            outcome = self._absorb(writer, fut)
            if outcome.node is not None:
                out.set_result(outcome.node)
                return
            pending: list[Pending] = []
            for item in outcome.items:
                if isinstance(item, Node):
                    pending.append(item)
                elif isinstance(item, SubDir):
                    sub: Future[Node | None] = Future()
                    pending.append(sub)
                    self._dir_in_child(
                        writer, walker, DirJob(item.entry, item.old, item.mount_point), sub
                    )
                elif isinstance(item, ParentFile):
                    pending.append(
                        self._submit_file(self._pool, writer, walker, item.entry, item.old)
                    )
                else:
                    pending.append(self._read_in_child(writer, item))
            old_children = self._lister.parent_children(job.old)
            finish = functools.partial(self._dir_node, writer, job.entry, job.old, old_children)
            self._completions.when_all(pending, finish, out)
        except BaseException as exc:
            out.set_exception(exc)

    def _read_in_child(self, writer: BlobWriter, batch: SmallBatch) -> Future[list[Node | None]]:
        """Have a child read a batch of small files; their nodes once their blobs are
        stored."""
        assert self._lanes is not None
        nodes: Future[list[Node | None]] = Future()

        def done(fut: Future[WalkOutcome]) -> None:
            try:
                items = self._absorb(writer, fut).items
                nodes.set_result([n for n in items if isinstance(n, Node)])
            except BaseException as exc:
                nodes.set_exception(exc)

        self._lanes.submit(ReadJob(batch.directory, batch.files)).add_done_callback(done)
        return nodes

    def _absorb(self, writer: BlobWriter, fut: Future[WalkOutcome]) -> WalkOutcome:
        """A job's outcome (raises its failure), once the blobs it sealed are stored and
        what it counted and found is reported here."""
        outcome = fut.result()
        writer.store_sealed(outcome.blobs)
        outcome.blobs = []
        for problem in outcome.problems:
            self._problem(problem)
        for notice in outcome.notices:
            self.progress.notice(notice)
        self.counts.merge(outcome.counts)
        self.progress.advance(files=outcome.progress_files, bytes_=outcome.progress_bytes)
        return outcome

    # --- directories ------------------------------------------------------------------------

    def save_tree(self, writer: BlobSaver, nodes: list[Node]) -> bytes:
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
        if self._lanes is not None:
            self._dir_in_child(writer, walker, DirJob(entry, old), top)
            return top
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
            elif (reused := self.reader.reuse(child, prev)) is not None:
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
            read = functools.partial(self.reader.read_file, writer, walker)
            walk.pending.extend(self._small.defer(read, walk.deferred))
        finish = functools.partial(
            self._dir_node, writer, walk.entry, walk.old, walk.listing.old_children
        )
        self._completions.when_all(walk.pending, finish, walk.out)

    def _dir_node(
        self,
        writer: BlobSaver,
        entry: FsEntry,
        old: Node | None,
        old_children: dict[str, Node],
        kept: list[Node],
    ) -> Node:
        """A directory's node once its children are stored (``kept``), its tree stored."""
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
            reused = self.reader.reuse(entry, old)
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


def _chain(source: Future[Node | None], target: Future[Node | None]) -> None:
    """Resolve ``target`` as ``source`` resolves."""

    def done(f: Future[Node | None]) -> None:
        if f.cancelled():
            target.cancel()
            return
        exc = f.exception()
        if exc is not None:
            target.set_exception(exc)
        else:
            target.set_result(f.result())

    source.add_done_callback(done)


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
