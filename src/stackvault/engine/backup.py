"""A backup run (engine layer): walk → chunk → dedup → pack → index → snapshot.

`BackupJob` is the run: it checks the options, finds the parent snapshot, captures the
application sources (`engine/capture.py`), has the paths (or a command's output) turned into
trees (`engine/filetree.py`: the walk, the file readers, the trees), and writes the snapshot
with its summary — only after every pack and index file is durable, and never when the run
fails or is interrupted.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stackvault.engine.artifacts import RESERVED, artifact_path
from stackvault.engine.capture import SourceCapture
from stackvault.engine.filetree import FileTreeBackup
from stackvault.engine.progress import NullProgress, Progress
from stackvault.engine.totals import start_totals
from stackvault.errors import (
    Interrupted,
    SourceError,
    UsageError,
)
from stackvault.fs.exclude import ExcludeMatcher
from stackvault.fs.walk import FileWalker, Problem, WalkRules
from stackvault.records.artifact import ArtifactRecord
from stackvault.repo.lock import current_username
from stackvault.repo.repository import PROGRAM, Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, valid_name
from stackvault.repo.writer import BlobWriter
from stackvault.sources.contract import Source
from stackvault.sources.tools.command import CommandStream


@dataclass
class BackupOptions:
    """What to back up and how to label it."""

    paths: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    iexcludes: list[str] = field(default_factory=list)
    """Exclude patterns matched whatever the case (`fs.exclude.ExcludeMatcher`)."""
    one_file_system: bool = False
    rules: WalkRules = field(default_factory=WalkRules)
    """What else the walk leaves out: marked directories, large files (`WalkRules`)."""
    tags: list[str] = field(default_factory=list)
    host: str | None = None
    parent: str | None = None
    """Snapshot id prefix to compare against; None picks the latest with the same host/paths."""
    force: bool = False
    """Re-read every file even when the parent says it is unchanged."""
    stdin_command: str | None = None
    stdin_filename: str = "stdin"
    workers: int | None = None
    processes: int | None = None
    """Child processes walking directories (`stackvault.engine.walkprocs`). None: as the
    store's access says (`StoreAccess.walk_processes`); 0: none, the walk runs in this
    process."""
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
    after_capture: Callable[[list[ArtifactRecord]], dict[str, Any] | None] | None = None
    """Called once everything has been read (before the last packs, the index and the
    snapshot are written) with the artifact records; what it returns becomes the snapshot's
    ``stack`` manifest. A stack backup restarts its stopped services here. Not called when
    the capture failed; an exception from it fails the backup."""
    captured: Callable[[str], None] | None = None
    """Called, from any thread, with each source's name once its capture is over (complete
    or failed), and with each backed-up path (as normalised: absolute, the outermost of
    nested ones) once everything below it is read, not with one whose walk failed. A stack
    backup starts each stopped service again as soon as its own data is read; it must return
    at once."""


def normalise_paths(opts: BackupOptions) -> list[str]:
    """The absolute paths of ``opts.paths`` to walk, sorted, the outermost of nested ones
    only; `SourceError` for one that does not exist, `UsageError` for a reserved one."""
    if not opts.paths:
        if opts.sources:
            return []
        raise SourceError("nothing to back up: give at least one path")
    out: list[str] = []
    for p in sorted({os.path.abspath(p) for p in opts.paths}):
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


@dataclass
class BackupResult:
    snapshot: Snapshot
    problems: list[Problem]


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
        self._stop = threading.Event()
        self._workers = options.workers or max(2, (os.cpu_count() or 2))

    # --- problems --------------------------------------------------------

    def _problem(self, problem: Problem) -> None:
        with self._problems_lock:
            self.problems.append(problem)
        self.progress.notice(
            f"{'error' if problem.incomplete else 'notice'}: {problem.path}: {problem.message}"
        )

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

    # --- the run ----------------------------------------------------------------------------

    def _normalise_paths(self) -> list[str]:
        return normalise_paths(self.opts)

    def stop(self) -> None:
        """Ask the run to stop at the next chunk (from a signal handler or another thread)."""
        self._stop.set()

    def run(self) -> BackupResult:
        """Back up and save a snapshot; raise on failure without saving one."""
        start = self.repo.clock.monotonic()
        host = self.opts.host or socket.gethostname()
        paths = self._file_paths()
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
        files = FileTreeBackup(
            self.repo,
            self.progress,
            force=self.opts.force,
            workers=self._workers,
            stop=self._stop,
            problem=self._problem,
        )
        matcher = ExcludeMatcher(self.opts.excludes, self.opts.iexcludes)
        walker = FileWalker(matcher, self.opts.one_file_system, self._problem, self.opts.rules)
        if file_paths and not self.opts.stdin_command:
            # Forked before any source is captured: the run has started no thread yet.
            processes = self.opts.processes
            if processes is None:
                processes = self.repo.access.walk_processes
            files.start_processes(walker, processes)
        committed = False
        artifacts: list[ArtifactRecord] = []
        try:
            extra: list[Node] = []
            if self.opts.before_cut is not None and self.opts.cut_at <= 0:
                self.opts.before_cut()
            if self.opts.sources:
                capture = SourceCapture(
                    self.repo,
                    writer,
                    self.progress,
                    store_stream=lambda stream: files.reader.store_stream(writer, stream),
                    save_tree=lambda nodes: files.save_tree(writer, nodes),
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
                    captured=self.opts.captured,
                )
                files.counts.add(bytes=capture.bytes)
            if self.opts.stdin_command:
                tree_id = self._backup_command(files, writer, extra)
            else:
                tree_id = self._backup_paths(
                    files, writer, walker, file_paths, paths, parent, extra
                )
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
            files.close(committed=committed)
            writer.close(commit=committed)
        snap = self._snapshot(tree_id, paths, host, parent, artifacts, stack, files, writer, start)
        self.repo.save_snapshot(snap)
        self.progress.close()
        return BackupResult(snap, self.problems)

    def _file_paths(self) -> list[str]:
        """The absolute paths this backup stores (without its artifacts): those given, or
        the one file of ``--stdin-from-command``; `UsageError` for an unusable file name."""
        if self.opts.stdin_command:
            paths = ["/" + self.opts.stdin_filename]
        else:
            paths = self._normalise_paths()
        if self.opts.stdin_command and not valid_name(self.opts.stdin_filename):
            raise UsageError(f"--stdin-filename {self.opts.stdin_filename!r} is not a file name")
        if self.opts.stdin_command and self.opts.stdin_filename == RESERVED:
            raise UsageError(f"--stdin-filename {RESERVED} is reserved")
        return paths

    def _backup_paths(
        self,
        files: FileTreeBackup,
        writer: BlobWriter,
        walker: FileWalker,
        file_paths: list[str],
        paths: list[str],
        parent: Snapshot | None,
        extra: list[Node],
    ) -> bytes:
        """Walk ``file_paths`` into trees, with ``extra`` (the artifacts' directory) at the
        root, counting the totals ahead on another thread if asked; the root tree id."""
        scanner = None
        if self.opts.scan_totals and file_paths:
            scanner = start_totals(paths, walker.excludes, self.progress, parent)
        try:
            return files.build_root(
                writer, walker, file_paths, parent, extra, read=self.opts.captured
            )
        finally:
            if scanner:
                scanner.stop()

    def _snapshot(
        self,
        tree_id: bytes,
        paths: list[str],
        host: str,
        parent: Snapshot | None,
        artifacts: list[ArtifactRecord],
        stack: dict[str, Any] | None,
        files: FileTreeBackup,
        writer: BlobWriter,
        start: float,
    ) -> Snapshot:
        """The snapshot of this backup, its summary counted (not saved yet)."""
        incomplete = [p for p in self.problems if p.incomplete]
        failed_artifacts = sum(1 for a in artifacts if not a.complete)
        c = files.counts
        return Snapshot(
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

    def _backup_command(
        self, files: FileTreeBackup, writer: BlobWriter, extra: list[Node]
    ) -> bytes:
        now = self.repo.clock.now()
        with CommandStream(self.opts.stdin_command or "") as stream:
            content, sha, size = files.reader.store_stream(writer, stream)
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
        files.counts.add(files=1, files_new=1, bytes=size)
        return files.save_tree(writer, sorted([node, *extra], key=lambda n: n.name))
