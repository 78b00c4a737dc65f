"""Child processes that list directories and read small files for a backup (engine layer).

A backup of many small files is bound by per-file Python work on the walking thread: a
``stat`` and the comparison with the parent snapshot for each file, and for a new file its
read, hashes and seal. Threads of one process take turns at the interpreter, so that work
keeps one core busy. From a local repository on a machine with several cores the backup
forks one child per core before it starts any thread (`stackvault.engine.forked`), and hands
each directory to a child (`DirJob`, `FileTreeBackup` in ``filetree.py``):

- the child lists the directory, decodes its parent snapshot's tree, keeps the nodes of
  unchanged files, and reads, hashes, compresses and encrypts small files (`SealingSink`);
- when nothing below the directory is left to do elsewhere, it also stores the directory's
  tree and answers with its node (`WalkOutcome.node`); otherwise it answers with the
  directory's entries (`WalkOutcome.items`): nodes, and what the parent hands on:
  subdirectories (`SubDir`, to a child in turn), large and hard-linked files (`ParentFile`,
  to the parent's reader threads, which share one map of hard links) and small files beyond
  what one answer carries (`SmallBatch`, to a child as a `ReadJob`);
- the blobs a child sealed come back with its answer; the parent appends each one no other
  has stored (`BlobWriter.reserve`, `BlobWriter.add_sealed`) before it uses the nodes that
  refer to them.

`WalkLanes` runs the jobs: one thread per child, jobs taken newest first, so the walk stays
depth first and the directories waiting for their subdirectories are about those on the
path being walked, as in the single-process walk.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from stackvault.engine.counts import Counts
from stackvault.engine.filereader import Files
from stackvault.engine.forked import ChildProcess, Outcome
from stackvault.engine.progress import NullProgress
from stackvault.errors import Interrupted
from stackvault.fs.entry import FsEntry
from stackvault.fs.walk import Problem
from stackvault.repo.blob import BlobType, blob_aad
from stackvault.repo.repository import Repository
from stackvault.repo.tree import Node
from stackvault.repo.writer import SealedBlob

READ_FILES = 2048
"""Small files a child reads for one answer at most (the rest of a directory's small files
go out as further jobs). A directory within the bounds is finished in its child, tree and
all; 256 left directories of 1,000 files to the parent, whose unpickling of their nodes and
encoding of their trees cost ~13 % more CPU in all (200,000 files)."""
READ_BYTES = 16 << 20
"""Bytes of small files a child reads for one answer at most: an answer carries their sealed
blobs, and holds their plaintext until they are sealed."""


@dataclass
class DirJob:
    """List a directory (``old``: its node in the parent snapshot) and do what can be done
    there. ``mount_point``: the walk keeps it empty (one-file-system)."""

    entry: FsEntry
    old: Node | None
    mount_point: bool = False


@dataclass
class ReadJob:
    """Read, hash and seal small files of one directory."""

    directory: FsEntry
    files: Files


Job = DirJob | ReadJob


@dataclass
class SubDir:
    """A subdirectory, to be walked by a job of its own."""

    entry: FsEntry
    old: Node | None
    mount_point: bool


@dataclass
class ParentFile:
    """A large or hard-linked file, read by the parent's reader threads."""

    entry: FsEntry
    old: Node | None


@dataclass
class SmallBatch:
    """Small files of a directory left for a `ReadJob`."""

    directory: FsEntry
    files: Files


Item = Node | SubDir | ParentFile | SmallBatch


@dataclass
class WalkOutcome(Outcome):
    """What a child made of one job."""

    items: list[Item] = field(default_factory=list)
    """A directory's entries (a file that could not be read is left out, with a problem), or
    a `ReadJob`'s nodes."""
    node: Node | None = None
    """The directory's node, when the child stored its tree (``items`` is then empty)."""
    blobs: list[SealedBlob] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    """What the job counted, for the run's summary."""
    progress_files: int = 0
    progress_bytes: int = 0


class SealingSink:
    """Where a child stores blobs: those not in the repository's index (as it was at the
    fork) nor given to it during the current job are kept, then compressed in one call and
    sealed by `take`. Has `BlobWriter.save`'s signature."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._plain: list[tuple[BlobType, bytes, bytes]] = []
        self._seen: set[bytes] = set()

    def save(
        self,
        blob_type: BlobType,
        data: bytes | bytearray | memoryview,
        blob_id: bytes | None = None,
    ) -> tuple[bytes, bool]:
        """Keep ``data`` unless it is stored already; ``(blob_id, added)``."""
        if blob_id is None:
            blob_id = self._repo.blob_id(data)
        if blob_id in self._seen or blob_id in self._repo.index:
            return blob_id, False
        self._seen.add(blob_id)
        self._plain.append((blob_type, blob_id, bytes(data)))
        return blob_id, True

    def take(self) -> list[SealedBlob]:
        """The blobs kept since the last call, compressed and sealed."""
        plain, self._plain = self._plain, []
        self._seen.clear()
        if not plain:
            return []
        encoded = self._repo.codec().encode_many([data for _t, _i, data in plain])
        sealed = self._repo.envelope.seal_many(
            encoded, [blob_aad(blob_type, blob_id) for blob_type, blob_id, _d in plain]
        )
        return [
            (blob_type, blob_id, box, len(data))
            for (blob_type, blob_id, data), box in zip(plain, sealed, strict=True)
        ]


def split_reads(files: Files) -> tuple[Files, list[Files]]:
    """The small files one answer reads (at most `READ_FILES` and `READ_BYTES`), and the
    rest in batches of the same bounds."""
    batches: list[Files] = [[]]
    size = 0
    for entry, old in files:
        if len(batches[-1]) >= READ_FILES or (batches[-1] and size + entry.size > READ_BYTES):
            batches.append([])
            size = 0
        batches[-1].append((entry, old))
        size += entry.size
    return batches[0], batches[1:]


class WalkLanes:
    """Runs jobs on child processes: one thread per child takes the newest job, has its
    child run it and resolves the job's future with the outcome (callbacks run on that
    thread). `close` once: jobs not yet taken fail with `Interrupted`."""

    def __init__(self, children: list[ChildProcess[Job, WalkOutcome]]) -> None:
        self.children = children
        self._jobs: list[tuple[Job, Future[WalkOutcome]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(
                target=self._lane, args=(child,), name=f"walk-child-{child.pid}", daemon=True
            )
            for child in children
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> Future[WalkOutcome]:
        """A future of ``job``'s outcome; it fails with the job's error."""
        fut: Future[WalkOutcome] = Future()
        with self._cond:
            if not self._closed:
                self._jobs.append((job, fut))
                self._cond.notify()
                return fut
        fut.set_exception(Interrupted("backup stopped"))
        return fut

    def _lane(self, child: ChildProcess[Job, WalkOutcome]) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job, fut = self._jobs.pop()
            try:
                outcome = child.run(job)
            except BaseException as exc:
                fut.set_exception(exc)
                continue
            fut.set_result(outcome)

    def close(self) -> None:
        """Fail the jobs not taken, wait for the lanes (each finishes the job it has), and
        end the children."""
        with self._cond:
            self._closed = True
            left, self._jobs = self._jobs, []
            self._cond.notify_all()
        for _job, fut in left:
            fut.set_exception(Interrupted("backup stopped"))
        for thread in self._threads:
            thread.join()
        for child in self.children:
            child.close()


def count_into(outcome: WalkOutcome, counts: Counts, progress: NullProgress) -> None:
    """Put what a job counted (a `Counts` and a `NullProgress` of the child) into its
    outcome."""
    outcome.counts = counts
    outcome.progress_files, outcome.progress_bytes = progress.files, progress.bytes
    outcome.notices = list(progress.notices)
