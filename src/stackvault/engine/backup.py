"""The file backup pipeline (engine layer): walk → chunk → dedup → pack → index → snapshot.

The main thread walks directories and builds trees; files of at least the minimum chunk size
are read, chunked and hashed by a bounded pool of worker threads (the native libraries release
the GIL) and their chunks compressed and encrypted on the writer's pool. Smaller files are read
and hashed by the main thread itself, when it would otherwise wait (`SmallFiles`), and sealed
by the writer in batches; full packs are uploaded by the writer's own pool. The snapshot is
written only after every pack and index file is durable, and never when the run fails or is
interrupted.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from stackvault.chunking.cdc import Chunker
from stackvault.chunking.streamcut import StreamCutter
from stackvault.engine.artifacts import RESERVED, artifact_path
from stackvault.engine.capture import SourceCapture
from stackvault.engine.listing import DirectoryLister, Listing
from stackvault.engine.nodes import Completions, Pending, node_from_entry, same_metadata
from stackvault.engine.progress import NullProgress, Progress
from stackvault.engine.scan import start_totals
from stackvault.engine.smallfiles import SmallFiles
from stackvault.errors import (
    Interrupted,
    SourceError,
    SourceVanished,
    UsageError,
)
from stackvault.repo.blob import BlobType
from stackvault.repo.lock import current_username
from stackvault.repo.repository import PROGRAM, Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, encode_tree, valid_name
from stackvault.repo.writer import BlobWriter
from stackvault.sources.base import Source
from stackvault.sources.command import CommandStream
from stackvault.sources.exclude import ExcludeMatcher
from stackvault.sources.files import VANISHED, FileWalker, Problem
from stackvault.sources.fsentry import FsEntry, entry_from_stat


@dataclass
class BackupOptions:
    """What to back up and how to label it."""

    paths: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    one_file_system: bool = False
    tags: list[str] = field(default_factory=list)
    host: str | None = None
    parent: str | None = None
    """Snapshot id prefix to compare against; None picks the latest with the same host/paths."""
    force: bool = False
    """Re-read every file even when the parent says it is unchanged."""
    stdin_command: str | None = None
    stdin_filename: str = "stdin"
    workers: int | None = None
    scan_totals: bool = False
    """Give progress totals for an ETA (terminals only): the parent snapshot's files and
    bytes when there is a parent, else counted by walking the paths in a background thread
    (walking them twice costs ~15 % of a no-change backup on a terminal)."""
    sources: list[Source] = field(default_factory=list)
    """Application sources captured as artifacts (databases, volumes, buckets), in order,
    before the paths."""
    before_cut: Callable[[], None] | None = None
    """Called once the first ``cut_at`` sources are captured, before the others and the
    paths (a stack backup stops its writers here, so that what does not change - images -
    is read before the cut)."""
    cut_at: int = 0
    after_capture: Callable[[list[dict[str, Any]]], dict[str, Any] | None] | None = None
    """Called once everything has been read (before the last packs, the index and the
    snapshot are written) with the artifact records; what it returns becomes the snapshot's
    ``stack`` manifest. A stack backup restarts its stopped services here. Not called when
    the capture failed; an exception from it fails the backup."""


@dataclass
class BackupResult:
    snapshot: Snapshot
    problems: list[Problem]


@dataclass
class _Counts:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


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


class BackupJob:
    """One backup run. Create, then call `run` once."""

    def __init__(
        self,
        repo: Repository,
        options: BackupOptions,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.repo = repo
        self.opts = options
        self.progress: Progress = progress or NullProgress()
        self.problems: list[Problem] = []
        self._problems_lock = threading.Lock()
        self._counts = _Counts()
        self._stop = threading.Event()
        self._local = threading.local()
        self._hardlinks: dict[str, Future[Node | None]] = {}
        self._completions = Completions()
        self._lister = DirectoryLister(repo, self.progress, force=options.force, stop=self._stop)
        workers = options.workers or max(2, (os.cpu_count() or 2))
        self._workers = workers
        self._slots = threading.BoundedSemaphore(workers * 4)
        # Small files the walking thread reads when it would otherwise wait (smallfiles.py).
        self._small = SmallFiles()
        # Whole-file SHA-256 of large files, computed behind their chunking (StreamCutter).
        self._digests = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="digest")

    # --- problems and per-thread state --------------------------------------------------------

    def _problem(self, problem: Problem) -> None:
        with self._problems_lock:
            self.problems.append(problem)
        self.progress.notice(
            f"{'error' if problem.incomplete else 'notice'}: {problem.path}: {problem.message}"
        )

    def _cutter(self) -> StreamCutter:
        """This thread's chunker and read buffer, made on first use and kept for the run."""
        cutter: StreamCutter | None = getattr(self._local, "cutter", None)
        if cutter is None:
            cfg = self.repo.config
            cutter = self._local.cutter = StreamCutter(
                Chunker(cfg.chunker, self.repo.master.chunker_seed), self._digests
            )
        return cutter

    # --- parent ---------------------------------------------------------------------------

    def _find_parent(self, host: str, paths: list[str]) -> Snapshot | None:
        if self.opts.force:
            return None
        snaps = self.repo.list_snapshots()
        if self.opts.parent:
            return self.repo.find_snapshot(self.opts.parent, snaps)
        for snap in reversed(snaps):
            if snap.hostname == host and sorted(snap.paths) == paths:
                return snap
        return None

    # --- files ----------------------------------------------------------------------------

    def _store_stream(self, writer: BlobWriter, stream: object) -> tuple[list[bytes], str, int]:
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
                return self._store_stream(writer, f)
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
                        node.content, node.sha256, node.size = self._store_stream(writer, f)
            except OSError as exc:
                raise SourceError(f"read failed: {exc.strerror or exc}") from exc
            if node.size != entry.size:
                self._problem(Problem(entry.path, "file changed size while being read", False))
            with self._counts.lock:
                self._counts.files += 1
                self._counts.bytes += node.size
                if old is None:
                    self._counts.files_new += 1
                else:
                    self._counts.files_changed += 1
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
        with self._counts.lock:
            self._counts.files += 1
            self._counts.files_unmodified += 1
            self._counts.bytes += node.size
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
            return self._linked(self._hardlinks[key], entry, self._counts)
        self._small.acquire(self._slots)  # back-pressure on the walker
        fut = pool.submit(self._backup_file, writer, walker, entry, old)
        if key is not None:
            self._hardlinks[key] = fut
        return fut

    @staticmethod
    def _linked(first: Future[Node | None], entry: FsEntry, counts: _Counts) -> Future[Node | None]:
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

    def _save_tree(self, writer: BlobWriter, nodes: list[Node]) -> bytes:
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
                node.subtree = self._save_tree(writer, kept)
            with self._counts.lock:
                self._counts.dirs += 1
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

    def _build_root(
        self,
        pool: ThreadPoolExecutor,
        writer: BlobWriter,
        walker: FileWalker,
        paths: list[str],
        parent: Snapshot | None,
        extra: list[Node],
    ) -> bytes:
        """Save the trees from ``/`` down to every backed-up path, with ``extra`` nodes added
        to the root (the artifacts' directory); return the root tree id."""
        parent_root = Node(name="", type="dir", subtree=parent.tree) if parent else None

        def build(
            prefix: str, members: list[str], old: Node | None, more: list[Node] | None = None
        ) -> bytes:
            olds = self._lister.parent_children(old)
            groups: dict[str, list[str]] = {}
            for p in members:
                rest = p[len(prefix) :].lstrip("/")
                groups.setdefault(rest.split("/", 1)[0], []).append(p)
            nodes: list[Node | Future[Node | None] | None] = []
            for name in sorted(groups):
                full = f"{prefix.rstrip('/')}/{name}"
                if full in groups[name]:
                    nodes.append(self._backup_root(pool, writer, walker, full, olds.get(name)))
                else:
                    # A directory above a backed-up path: its own metadata, none of its
                    # other contents.
                    inter = node_from_entry(entry_from_stat(full, name, os.lstat(full)))
                    inter.subtree = build(full, groups[name], olds.get(name))
                    nodes.append(inter)
            self._small.drain()
            done = [n.result() if isinstance(n, Future) else n for n in nodes]
            kept = [n for n in done if n is not None] + list(more or [])
            return self._save_tree(writer, sorted(kept, key=lambda n: n.name))

        return build("/", paths, parent_root, extra)

    # --- the run ----------------------------------------------------------------------------

    def _normalise_paths(self) -> list[str]:
        if not self.opts.paths:
            if self.opts.sources:
                return []
            raise SourceError("nothing to back up: give at least one path")
        out: list[str] = []
        for p in sorted({os.path.abspath(p) for p in self.opts.paths}):
            if p == "/":
                return ["/"]
            if p == f"/{RESERVED}" or p.startswith(f"/{RESERVED}/"):
                raise UsageError(
                    f"cannot back up {p}: /{RESERVED} is where snapshots keep their artifacts"
                )
            if not os.path.lexists(p):
                raise SourceError(f"cannot back up {p}: no such file or directory")
            # /srv covers /srv/app: keep only the outermost path.
            if any(p.startswith(q.rstrip("/") + "/") for q in out):
                continue
            out.append(p)
        return out

    def stop(self) -> None:
        """Ask the run to stop at the next chunk (from a signal handler or another thread)."""
        self._stop.set()

    def run(self) -> BackupResult:
        """Back up and save a snapshot; raise on failure without saving one."""
        start = self.repo.clock.monotonic()
        host = self.opts.host or socket.gethostname()
        if self.opts.stdin_command:
            paths = ["/" + self.opts.stdin_filename]
        else:
            paths = self._normalise_paths()
        if self.opts.stdin_command and not valid_name(self.opts.stdin_filename):
            raise UsageError(f"--stdin-filename {self.opts.stdin_filename!r} is not a file name")
        if self.opts.stdin_command and self.opts.stdin_filename == RESERVED:
            raise UsageError(f"--stdin-filename {RESERVED} is reserved")
        names = [s.name for s in self.opts.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UsageError(
                f"two sources would both be stored as artifact {dupes[0]!r}; "
                "give one of them another name with ?name=..."
            )
        file_paths = paths
        paths = sorted(paths + [artifact_path(n) for n in names])
        # A pack that vanished must not be reused (blobs or a parent's files): its data is
        # stored again, which also heals older snapshots that need it.
        self.repo.drop_missing_packs("; this backup stores their data again where it still exists")
        parent = self._find_parent(host, paths)
        writer = self.repo.writer()
        pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="backup")
        committed = False
        artifacts: list[dict[str, Any]] = []
        try:
            extra: list[Node] = []
            if self.opts.before_cut is not None and self.opts.cut_at <= 0:
                self.opts.before_cut()
            if self.opts.sources:
                capture = SourceCapture(
                    self.repo,
                    writer,
                    self.progress,
                    store_stream=lambda stream: self._store_stream(writer, stream),
                    save_tree=lambda nodes: self._save_tree(writer, nodes),
                    problem=self._problem,
                    stopping=self._stop.is_set,
                )
                extra = capture.run(
                    self.opts.sources,
                    parent,
                    artifacts,
                    several=len(self.opts.sources) + len(file_paths) > 1,
                    alone=not self.opts.paths and not self.opts.stdin_command,
                    before_cut=self.opts.before_cut,
                    cut_at=self.opts.cut_at,
                )
                with self._counts.lock:
                    self._counts.bytes += capture.bytes
            if self.opts.stdin_command:
                tree_id = self._backup_command(writer, extra)
            else:
                matcher = ExcludeMatcher(self.opts.excludes)
                walker = FileWalker(matcher, self.opts.one_file_system, self._problem)
                scanner = None
                if self.opts.scan_totals and file_paths:
                    scanner = start_totals(paths, matcher, self.progress, parent)
                try:
                    tree_id = self._build_root(pool, writer, walker, file_paths, parent, extra)
                finally:
                    if scanner:
                        scanner.stop()
            stack = self.opts.after_capture(artifacts) if self.opts.after_capture else None
            writer.flush()
            committed = True
        except KeyboardInterrupt as exc:
            self._stop.set()
            raise Interrupted("backup interrupted; no snapshot was saved") from exc
        except Interrupted:
            self._stop.set()
            raise
        finally:
            if not committed:
                self._stop.set()
                self._small.cancel(Interrupted("backup stopped"))
            self._lister.shutdown()
            pool.shutdown(wait=True, cancel_futures=True)
            self._digests.shutdown(wait=True)
            writer.close(commit=committed)
        incomplete = [p for p in self.problems if p.incomplete]
        failed_artifacts = sum(1 for a in artifacts if not a["complete"])
        c = self._counts
        snap = Snapshot(
            time=self.repo.clock.now(),
            tree=tree_id,
            paths=paths,
            hostname=host,
            username=current_username(),
            tags=sorted(set(self.opts.tags)),
            parent=parent.id if parent else None,
            program=PROGRAM,
            complete=not incomplete,
            problems=[{"path": p.path, "message": p.message} for p in incomplete],
            artifacts=artifacts,
            stack=stack,
            summary={
                "artifacts": len(artifacts),
                "artifacts_failed": failed_artifacts,
                "files": c.files,
                "dirs": c.dirs,
                "bytes": c.bytes,
                "files_new": c.files_new,
                "files_changed": c.files_changed,
                "files_unmodified": c.files_unmodified,
                "data_blobs_added": writer.stats.blobs_added,
                "data_added": writer.stats.raw_added,
                "data_added_stored": writer.stats.stored_added,
                "problems": len(incomplete),
                "duration_s": round(self.repo.clock.monotonic() - start, 3),
            },
        )
        self.repo.save_snapshot(snap)
        self.progress.close()
        return BackupResult(snap, self.problems)

    def _backup_command(self, writer: BlobWriter, extra: list[Node]) -> bytes:
        now = self.repo.clock.now()
        with CommandStream(self.opts.stdin_command or "") as stream:
            content, sha, size = self._store_stream(writer, stream)
        # CommandStream.__exit__ raised SourceError if the command failed: we only get here
        # when it exited 0.
        mtime = int(now.timestamp() * 1e9)
        node = Node(
            name=self.opts.stdin_filename,
            type="file",
            mode=0o600,
            uid=os.getuid(),
            gid=os.getgid(),
            mtime_ns=mtime,
            ctime_ns=mtime,
            size=size,
            content=content,
            sha256=sha,
        )
        with self._counts.lock:
            self._counts.files += 1
            self._counts.files_new += 1
            self._counts.bytes += size
        return self._save_tree(writer, sorted([node, *extra], key=lambda n: n.name))
