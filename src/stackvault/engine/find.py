"""`stackvault find` (engine layer): the paths of snapshots that match patterns."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from stackvault.engine.browse import walk
from stackvault.errors import IntegrityError
from stackvault.fs.exclude import ExcludeMatcher
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node


@dataclass(frozen=True)
class Found:
    """One match: the snapshot, the path in it, its node."""

    snapshot: Snapshot
    path: str
    node: Node


def find(
    repo: Repository,
    snapshots: Iterable[Snapshot],
    matcher: ExcludeMatcher,
    on_error: Callable[[Snapshot, str, IntegrityError], None] | None = None,
) -> Iterator[Found]:
    """Every path of ``snapshots`` (in the order given, each depth first) that ``matcher``
    matches, the syntax of exclude patterns. A directory that matches is given, what lies
    below it is not (it matches too, as the directory does). A directory whose listing is
    lost goes to ``on_error`` and the search goes on."""
    for snap in snapshots:
        matched: set[str] = set()

        def lost(directory: str, exc: IntegrityError, snap: Snapshot = snap) -> None:
            if on_error is not None:
                on_error(snap, directory, exc)
            else:
                raise exc

        for path, node in walk(repo, snap, "/", on_error=lost):
            is_dir = node.type == "dir"
            if not matcher.excluded(path, is_dir):
                continue
            if posixpath.dirname(path) in matched:
                if is_dir:
                    matched.add(path)
                continue
            if is_dir:
                matched.add(path)
            yield Found(snap, path, node)
