"""Spot checks (engine layer): compare a random sample of a snapshot's files with the live
files they were backed up from, to catch a backup that silently stored the wrong data or
skipped a change.

For each sampled file (a regular file below one of the snapshot's own paths, so a stack's
database dumps, which have no live file, are never sampled):

- gone from the live tree → ``missing``; no longer a regular file, or its size or
  modification time differ from the snapshot's → ``changed``. Both are expected drift since
  the snapshot was taken and never count against it.
- otherwise (same size, same modification time: a backup would have taken it as unchanged)
  its live SHA-256 must equal the snapshot's → ``match``, else ``mismatch``: the content
  changed without its metadata changing (the case an incremental backup cannot see), or the
  snapshot holds other bytes than the file had. A file that cannot be read is
  ``unreadable``.
- with ``read_data``, the snapshot's content is also read back from the repository and
  verified (`read_file_blobs`): a blob that is missing or damaged is ``damaged``.

The sample is ``ceil(fraction * files)`` files (at least one when there are files) drawn with
``rng``, so a seed repeats a check. Files are read with the page cache hint that they are not
needed again.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from stackvault.engine.filedata import read_file_blobs
from stackvault.errors import IntegrityError, StoreError
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, walk_trees

SpotOutcome = Literal["match", "mismatch", "changed", "missing", "unreadable", "damaged"]
FAILING: frozenset[SpotOutcome] = frozenset({"mismatch", "damaged"})
"""The outcomes that count against the snapshot (the others are drift or local trouble)."""

_READ = 1 << 20


@dataclass(frozen=True)
class SpotFile:
    """One sampled file and what the comparison found."""

    path: str
    outcome: SpotOutcome
    detail: str = ""


@dataclass
class SpotReport:
    """The result of `spot_check`."""

    snapshot: str
    files: int
    """Regular files below the snapshot's paths (the population sampled from)."""
    fraction: float
    read_data: bool
    sampled: list[SpotFile] = field(default_factory=list)

    def count(self, outcome: SpotOutcome) -> int:
        return sum(1 for f in self.sampled if f.outcome == outcome)

    @property
    def failures(self) -> list[SpotFile]:
        return [f for f in self.sampled if f.outcome in FAILING]

    def to_json(self) -> dict[str, object]:
        outcomes: tuple[SpotOutcome, ...] = (
            "match",
            "mismatch",
            "changed",
            "missing",
            "unreadable",
            "damaged",
        )
        return {
            "snapshot": self.snapshot,
            "files": self.files,
            "fraction": self.fraction,
            "read_data": self.read_data,
            "sampled": len(self.sampled),
            "counts": {o: self.count(o) for o in outcomes},
            "failures": [
                {"path": f.path, "outcome": f.outcome, "detail": f.detail} for f in self.failures
            ],
            "unreadable": [
                {"path": f.path, "detail": f.detail}
                for f in self.sampled
                if f.outcome == "unreadable"
            ],
        }


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def spot_check(
    repo: Repository,
    snapshot: Snapshot,
    fraction: float,
    *,
    rng: random.Random | None = None,
    read_data: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SpotReport:
    """Compare a random ``fraction`` (0 < f ≤ 1) of ``snapshot``'s files with the live files
    (see the module docstring); ``progress(done, total)`` after each sampled file. A tree
    that cannot be read raises `IntegrityError` (run ``check``)."""
    if not 0 < fraction <= 1:
        raise ValueError("the fraction to sample is more than 0 and at most 1")
    roots = [p for p in snapshot.paths if p.startswith("/")]
    population: list[tuple[str, Node]] = [
        (path, node)
        for path, node in walk_trees(repo.load_tree, snapshot.tree)
        if node.type == "file" and _under(path, roots)
    ]
    report = SpotReport(snapshot.id, len(population), fraction, read_data)
    if not population:
        return report
    k = min(len(population), max(1, math.ceil(fraction * len(population))))
    chosen = (rng or random.Random()).sample(population, k)
    for i, (path, node) in enumerate(sorted(chosen, key=lambda pn: pn[0]), 1):
        report.sampled.append(_compare(repo, path, node, read_data))
        if progress is not None:
            progress(i, k)
    return report


def _compare(repo: Repository, path: str, node: Node, read_data: bool) -> SpotFile:
    if read_data:
        try:
            stored = hashlib.sha256()
            for data in read_file_blobs(repo, node):
                stored.update(data)
        except (IntegrityError, StoreError) as exc:
            return SpotFile(path, "damaged", str(exc))
        expected = stored.hexdigest()
    else:
        expected = node.sha256
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return SpotFile(path, "missing")
    except OSError as exc:
        return SpotFile(path, "unreadable", exc.strerror or str(exc))
    if not _regular(st.st_mode):
        return SpotFile(path, "changed", "no longer a regular file")
    if st.st_size != node.size or st.st_mtime_ns != node.mtime_ns:
        return SpotFile(path, "changed", "size or modification time changed since the snapshot")
    try:
        live = _sha256(path)
    except OSError as exc:
        return SpotFile(path, "unreadable", exc.strerror or str(exc))
    if not expected:
        return SpotFile(path, "match", "the snapshot records no SHA-256: compared by size")
    if live != expected:
        return SpotFile(
            path,
            "mismatch",
            "same size and modification time as in the snapshot, other content",
        )
    return SpotFile(path, "match")


def _regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:  # not touching the access time, where this process may ask for it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    try:
        while chunk := os.read(fd, _READ):
            digest.update(chunk)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return digest.hexdigest()
