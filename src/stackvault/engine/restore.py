"""The restore pipeline (engine layer): snapshot tree → files written below a target.

The tree is walked on this thread, which makes directories, symlinks and special files and
hands the regular files out: small ones in batches to a lane of file threads or, from a local
store, to one child process per core (`stackvault.engine.forked`), large ones to a lane
of file threads, each running `FileRestorer`; from a remote store, pack by pack
(`stackvault.engine.packrestore`). Either way each file's bytes are authenticated and its
SHA-256 is compared with the snapshot's record before the file gets its metadata (or, with
``overwrite``, replaces the old one), and a file that does not match is removed, so a damaged
file is never left behind looking good. Files whose data is damaged are reported (with the
blob at fault) and the others are still restored; the run then fails with `IntegrityError`
(exit 20). Directory metadata is applied last, deepest first, so mtimes stick.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from stackvault.engine.collector import fewer_collections
from stackvault.engine.filerestore import STAGE_MIN, FileRestorer, Files
from stackvault.engine.forked import ChildProcess, fork_supported
from stackvault.engine.packrestore import PackRestorer
from stackvault.engine.progress import NullProgress, Progress
from stackvault.engine.restorelanes import Lane, Lanes
from stackvault.engine.restoreprocs import BatchOutcome
from stackvault.errors import (
    IntegrityError,
    Interrupted,
    RestoreIncomplete,
    RestoreRefused,
    StackvaultError,
)
from stackvault.fs.exclude import ExcludeMatcher
from stackvault.fs.target import RestoreTarget
from stackvault.fs.walk import open_path
from stackvault.fs.writemode import WriteFigures, WriteMode
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, valid_name, walk_tree_nodes

_SPECIAL = frozenset(("fifo", "chardev", "blockdev"))
BATCH_FILES = 64
BATCH_BYTES = 4 * 1024 * 1024
"""Small files are handed out in batches of at most this many files and bytes."""
IN_FLIGHT = 2
"""Batches a child process of the restore holds at once: one it restores, one waiting, so
that it goes on at once instead of waiting for the parent to take its answer and send the
next (`ChildProcess.run`; 200,000 files: 13.4 and 14.5 s against 13.9 and 15.0 s)."""
_Place = tuple[list[str], bool]
"""Where a node of the walk is: its path components below the target, and whether it is
included (it or a directory above it matches ``include``)."""


@dataclass
class FileRestoreOptions:
    """How `RestoreJob` restores a snapshot's files below a directory (the restore of an
    artifact into a live target takes the sources' own options instead)."""

    target: str
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    """Leave out what these patterns match (`ExcludeMatcher`), even where ``include``
    matches."""
    iexclude: list[str] = field(default_factory=list)
    """The same, whatever the case."""
    overwrite: bool = False
    verify: bool = False
    workers: int | None = None
    processes: int | None = None
    """Child processes restoring the small files (`stackvault.engine.forked`);
    None: as the store's access says (`StoreAccess.restore_file_processes`); 0: none, file
    threads only."""
    root_tree: bytes | None = None
    """Restore the contents of this tree (e.g. an artifact's) instead of the snapshot root."""
    by_pack: bool | None = None
    """Read blobs pack by pack (`PackRestorer`) instead of file by file; by default only
    from a remote store, where each request costs more than the bytes it reads."""


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    specials: int = 0
    """Fifos and device nodes."""
    bytes: int = 0
    verified: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_made: list[tuple[str, str]] = field(default_factory=list)
    """Entries the system refused to create (a device node without the privilege)."""
    notices: list[str] = field(default_factory=list)
    writes: WriteFigures | None = None
    """How large files were written (`WriteMode`): MB/s around and through the page cache."""
    processes: int = 0
    """Child processes that restored small files (0: file threads did)."""


class RestoreJob:
    """Restore a snapshot (or the parts matching ``include``) below a target directory."""

    def __init__(
        self,
        repo: Repository,
        snapshot: Snapshot,
        options: FileRestoreOptions,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.repo = repo
        self.snapshot = snapshot
        self.opts = options
        self.progress: Progress = progress or NullProgress()
        self.result = RestoreResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._include = ExcludeMatcher(options.include) if options.include else None
        self._exclude = ExcludeMatcher(options.exclude, options.iexclude)
        self._links: dict[str, list[str]] = {}
        self._dirs: list[tuple[list[str], Node]] = []
        self._made: set[tuple[str, ...]] = set()
        self._blob_pool: ThreadPoolExecutor | None = None
        self._write_pool: ThreadPoolExecutor | None = None
        self._write_mode = WriteMode()
        self._to_verify: list[tuple[list[str], str]] = []

    def stop(self) -> None:
        self._stop.set()

    # --- planning ---------------------------------------------------------------------------

    def _wanted(self, path: str, is_dir: bool) -> bool:
        return self._include is None or self._include.excluded(path, is_dir)

    def _left_out(self, path: str, is_dir: bool) -> bool:
        """Whether ``--exclude`` leaves ``path`` out (it or a directory above it matches)."""
        return self._exclude.excluded(path, is_dir)

    def _may_want_below(self, directory: str) -> bool:
        """Whether a file below ``directory`` (itself not included) could be wanted: unknown
        for any pattern with wildcards or not anchored at the root; for a plain path, only if
        it lies below."""
        for pattern in self.opts.include or ():
            if not pattern.startswith("/") or any(c in pattern for c in "*?["):
                return True
            if pattern.rstrip("/").startswith(directory + "/"):
                return True
        return False

    def _walk(self, tree_id: bytes) -> Iterator[tuple[_Place, Node]]:
        """``((path components, included), node)`` for every node below ``tree_id``, depth
        first, each directory before its contents (`walk_tree_nodes`). An unsafe name stops
        the restore; a directory whose listing is lost stays empty and the restore fails at
        the end, naming it, while everything else is still restored."""
        descend = self._descend if self._include is not None or self._exclude else None
        return walk_tree_nodes(
            self.repo.load_tree, tree_id, ([], False), self._place, self._lost, descend
        )

    def _descend(self, place: _Place, node: Node) -> bool:
        """Whether the walk needs directory ``place``'s contents: not where nothing below it
        can be restored, because ``--exclude`` leaves it out (and so everything below it) or
        it is not included and no ``--include`` pattern could match below it."""
        parts, included = place
        if included:
            return True
        path = "/" + "/".join(parts)
        if self._exclude and self._left_out(path, True):
            return False
        return self._include is not None and self._may_want_below(path)

    def _place(self, parent: _Place, node: Node) -> _Place:
        base, inc_base = parent
        if not valid_name(node.name):
            raise RestoreRefused(
                f"refusing to restore {'/'.join([*base, node.name])!r}: the snapshot holds "
                "an unsafe path component (the repository may have been tampered with)"
            )
        parts = [*base, node.name]
        path, is_dir = "/" + "/".join(parts), node.type == "dir"
        return parts, (inc_base or self._wanted(path, is_dir)) and not (
            self._exclude and self._left_out(path, is_dir)
        )

    def _lost(self, place: _Place, exc: IntegrityError) -> None:
        parts, inc = place
        if inc or self._may_want_below("/" + "/".join(parts)):
            self._file_failed("/".join(parts) + "/", f"its listing is lost: {exc}")

    # --- doing ------------------------------------------------------------------------------

    def _ensure_dirs(self, target: RestoreTarget, rel: list[str]) -> None:
        """Make the directories of ``rel`` that are not made yet, looking from the deepest up
        (the walk makes a directory before its contents, so usually none is missing)."""
        made = len(rel)
        while made and tuple(rel[:made]) not in self._made:
            made -= 1
        for i in range(made + 1, len(rel) + 1):
            key = tuple(rel[:i])
            target.mkdir(list(key))
            self._made.add(key)

    def _file_done(self, node: Node) -> None:
        with self._lock:
            self.result.files += 1
            self.result.bytes += node.size
        self.progress.advance(files=1)

    def _file_failed(self, path: str, message: str) -> None:
        with self._lock:
            self.result.failed.append((path, message))
        self.progress.notice(f"error: {path}: {message}")

    def dry_run(self) -> RestoreResult:
        """What `run` would restore, counted from the snapshot's trees; the target is not
        touched and no file data is read."""
        root = self.opts.root_tree or self.snapshot.tree
        links: set[str] = set()
        for (_rel, included), node in self._walk(root):
            if not included:
                continue
            if node.type == "dir":
                self.result.dirs += 1
            elif node.type == "symlink":
                self.result.symlinks += 1
            elif node.type in _SPECIAL:
                self.result.specials += 1
            elif node.hardlink and node.hardlink in links:
                self.result.hardlinks += 1
            else:
                if node.hardlink:
                    links.add(node.hardlink)
                self.result.files += 1
                self.result.bytes += node.size
        self._raise_failures()
        return self.result

    def run(self) -> RestoreResult:
        """Restore; raise `IntegrityError` at the end if any file could not be restored."""
        with fewer_collections():
            return self._run()

    def _run(self) -> RestoreResult:
        target = RestoreTarget(self.opts.target, overwrite=self.opts.overwrite)
        target.prepare()
        # Blobs of a pack that vanished are read from another copy where one exists.
        self.repo.drop_missing_packs()
        lanes = self._start(target)
        try:
            self._hand_out(target, lanes)
            lanes.finish()
            self._make_hardlinks(target)
            for rel, node in sorted(self._dirs, key=lambda d: len(d[0]), reverse=True):
                target.set_dir_metadata(
                    rel, node.mode, node.uid, node.gid, node.mtime_ns, node.xattrs
                )
                self.result.dirs += 1
        except KeyboardInterrupt as exc:
            self._stop.set()
            raise Interrupted("restore interrupted; files not yet restored are missing") from exc
        finally:
            self._stop.set()
            lanes.close()
            if self._blob_pool is not None:
                self._blob_pool.shutdown(wait=True, cancel_futures=True)
            if self._write_pool is not None:
                self._write_pool.shutdown(wait=True)
            self.result.writes = self._write_mode.figures()
            self.result.notices.extend(target.notices)
            target.close()
        if self.opts.verify:
            self._verify()
        self.progress.close()
        self._raise_failures()
        return self.result

    def _start(self, target: RestoreTarget) -> Lanes:
        """The file threads and pools of this run (see `Lanes`)."""
        # Two lanes of file threads: one for small files (in batches), one for files of
        # several blobs, so that the creation of many small files (Python glue and system
        # calls) overlaps with the hashing and writing of large ones; as many threads per
        # lane as `StoreAccess.restore_file_workers` says. Blobs of large files are fetched,
        # authenticated and written by the blob pool. From a remote store (S3), where each
        # request costs more than the bytes it reads, files are restored by reading their
        # packs instead (`PackRestorer`, by default); the lanes then only make empty files.
        # Small files from a local store go to child processes, one per core where the
        # store's access says so (`stackvault.engine.forked`): forked first, before
        # this run starts any thread.
        access = self.repo.access
        workers = self.opts.workers or access.restore_file_workers
        by_pack = access.restore_by_pack if self.opts.by_pack is None else self.opts.by_pack
        processes = self.opts.processes
        if processes is None:
            processes = access.restore_file_processes
        children = self._fork(target, processes) if processes > 0 and not by_pack else []
        self._blob_pool = ThreadPoolExecutor(
            max_workers=access.restore_blob_workers, thread_name_prefix="restore-blob"
        )
        self._write_pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="restore-write"
        )
        files = FileRestorer(
            self.repo,
            progress=self.progress,
            stop=self._stop,
            done=self._file_done,
            failed=self._file_failed,
            blob_pool=self._blob_pool,
            write_pool=self._write_pool,
            write_mode=self._write_mode,
        )
        if children:
            small = [
                Lane(IN_FLIGHT, f"restore-child-{child.pid}", partial(self._through, child, target))
                for child in children
            ]
        else:
            small = [Lane(workers, "restore-small", partial(files.restore_files, target))]
        large = Lane(workers, "restore-large", partial(files.restore_files, target))
        packs = (
            PackRestorer(
                self.repo,
                target,
                workers=self.opts.workers or access.pack_readers,
                progress=self.progress,
                stop=self._stop,
                done=self._file_done,
                failed=self._file_failed,
                writes=self._write_pool,
                write_mode=self._write_mode,
            )
            if by_pack
            else None
        )
        self.result.processes = len(children)
        return Lanes(small, large, packs, children)

    def _fork(self, target: RestoreTarget, count: int) -> list[ChildProcess[Files, BatchOutcome]]:
        """``count`` child processes restoring small files, or none where processes cannot
        be made (not Linux, or the system refuses: too many processes or open files); the
        file threads restore them then, as a notice says."""
        if not fork_supported():
            return []
        children: list[ChildProcess[Files, BatchOutcome]] = []
        try:
            for _ in range(count):
                children.append(ChildProcess(partial(self._in_child, target), tuple(children)))
        except OSError as exc:
            for child in children:
                child.close()
            self.result.notices.append(
                f"small files restored by threads: no child process could be started "
                f"({exc.strerror or exc})"
            )
            return []
        return children

    def _in_child(self, target: RestoreTarget) -> Callable[[Files], BatchOutcome]:
        """Run in a child process right after it was forked: the function that restores a
        batch there, into a target of the child's own on the same root, counting into the
        batch's outcome (this job's result and progress belong to the parent)."""
        own = target.sharing_root()
        out = BatchOutcome()

        def done(node: Node) -> None:
            out.files += 1
            out.bytes += node.size

        def failed(path: str, message: str) -> None:
            out.failed.append((path, message))

        files = FileRestorer(
            self.repo, progress=NullProgress(), stop=self._stop, done=done, failed=failed
        )

        def restore(batch: Files) -> BatchOutcome:
            nonlocal out
            out = BatchOutcome()
            files.restore_files(own, batch)
            out.notices, own.notices = own.notices, []
            return out

        return restore

    def _through(
        self, child: ChildProcess[Files, BatchOutcome], target: RestoreTarget, files: Files
    ) -> None:
        """Have ``child`` restore a batch; count what it did as if done here."""
        out = child.run(files)
        with self._lock:
            self.result.files += out.files
            self.result.bytes += out.bytes
            self.result.failed.extend(out.failed)
        self.progress.advance(files=out.files, bytes_=out.bytes)
        for path, why in out.failed:
            self.progress.notice(f"error: {path}: {why}")
        target.notices.extend(out.notices)

    def _hand_out(self, target: RestoreTarget, lanes: Lanes) -> None:
        """Walk the snapshot: make directories, symlinks and special files on this thread,
        hand regular files to ``lanes`` (small files in batches: a hand-off per tiny file
        costs more than restoring it), and record hard links and directories for the end."""
        small_lanes, large_lane, packs = lanes.small, lanes.large, lanes.packs
        batches = 0
        total_files = total_bytes = 0
        batch: list[tuple[list[str], Node]] = []
        batch_bytes = 0
        root = self.opts.root_tree or self.snapshot.tree
        for (rel, included), node in self._walk(root):
            if not included:
                continue
            if node.type == "dir":
                self._ensure_dirs(target, rel)
                self._dirs.append((rel, node))
                continue
            self._ensure_dirs(target, rel[:-1])
            if node.type == "symlink":
                target.symlink(rel, node.target or "", node.uid, node.gid, node.mtime_ns)
                self.result.symlinks += 1
                continue
            if node.type in _SPECIAL:
                self._restore_special(target, rel, node)
                continue
            if self.opts.verify and node.sha256:
                self._to_verify.append((rel, node.sha256))
            if node.hardlink and node.hardlink in self._links:
                self._links[node.hardlink].append("/".join(rel))
                continue
            if node.hardlink:
                self._links[node.hardlink] = ["/".join(rel)]
            total_files += 1
            total_bytes += node.size
            self.progress.set_total(files=total_files, bytes_=total_bytes)
            if packs is not None and node.content:
                packs.add(rel, node)
                continue
            if len(node.content) > 1 or node.size >= STAGE_MIN:
                large_lane.submit([(rel, node)])
                continue
            batch.append((rel, node))
            batch_bytes += node.size
            if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                small_lanes[batches % len(small_lanes)].submit(batch)
                batches += 1
                batch, batch_bytes = [], 0
        if batch:
            small_lanes[batches % len(small_lanes)].submit(batch)

    def _raise_failures(self) -> None:
        """`IntegrityError` if a file could not be restored, else `RestoreIncomplete` if a
        fifo or device node could not be made."""
        if self.result.failed:
            first = self.result.failed[0]
            raise IntegrityError(
                f"{len(self.result.failed)} file(s) could not be restored because repository "
                f"data is damaged, first: {first[0]} ({first[1]})",
                hint="run `stackvault check --read-data` to see what is affected",
            )
        if self.result.not_made:
            first = self.result.not_made[0]
            raise RestoreIncomplete(
                f"{len(self.result.not_made)} fifo(s) or device node(s) could not be created, "
                f"first: {first[1]}; everything else was restored",
                hint="device nodes can be restored by root only",
            )

    def _restore_special(self, target: RestoreTarget, rel: list[str], node: Node) -> None:
        """Make a fifo or device node; one the system refuses to make (``mknod`` of a device
        needs privileges) is reported and the restore goes on, as restic does."""
        try:
            target.special(
                rel,
                node.type,
                (node.major, node.minor),
                node.mode,
                node.uid,
                node.gid,
                node.mtime_ns,
                node.xattrs,
            )
        except RestoreRefused:
            raise
        except StackvaultError as exc:
            path = "/".join(rel)
            self.result.not_made.append((path, exc.message))
            self.progress.notice(f"error: {exc.message}")
            return
        self.result.specials += 1

    def _make_hardlinks(self, target: RestoreTarget) -> None:
        failed = {p for p, _ in self.result.failed}
        for paths in self._links.values():
            first, rest = paths[0], paths[1:]
            if first in failed:
                continue
            for other in rest:
                target.hardlink(other.split("/"), first.split("/"))
                self.result.hardlinks += 1

    def _verify(self) -> None:
        """Re-read every restored regular file from disk and compare its SHA-256 (the list
        was collected during the restore, so the snapshot's trees are not loaded twice)."""
        failed = {p for p, _ in self.result.failed}
        for rel, digest in self._to_verify:
            path = "/".join(rel)
            if path in failed:
                continue
            try:
                actual = sha256_of(os.path.join(self.opts.target, *rel))
            except FileNotFoundError:  # a hard link whose first name could not be restored
                actual = None
            if actual != digest:
                self.result.failed.append((path, "verification after restore: SHA-256 differs"))
            else:
                self.result.verified += 1


def sha256_of(path: str) -> str:
    """SHA-256 of a file on disk (without following a final symlink); ``path`` may be
    longer than PATH_MAX."""
    sha = hashlib.sha256()
    fd = open_path(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while True:
            buf = os.read(fd, 1 << 20)
            if not buf:
                break
            sha.update(buf)
    finally:
        os.close(fd)
    return sha.hexdigest()
