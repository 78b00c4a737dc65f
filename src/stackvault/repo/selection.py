"""Which snapshots a command looks at (repository layer): the `--host`, `--tag` and `--path`
filters, and the newest few of each group of snapshots, in one place for every command that
lists, copies or picks snapshots."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from stackvault.repo.snapshot import Snapshot


def _normal(path: str) -> str:
    return posixpath.normpath(path) if path else path


@dataclass(frozen=True)
class SnapshotFilter:
    """Snapshots of ``host`` (any host when None) that carry every tag of ``tags`` and
    include every path of ``paths`` (compared after normalising, so ``/srv/app/`` is
    ``/srv/app``). The empty filter matches every snapshot."""

    host: str | None = None
    tags: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, host: str | None = None, tags: Iterable[str] = (), paths: Iterable[str] = ()
    ) -> SnapshotFilter:
        return cls(host, frozenset(tags), frozenset(_normal(p) for p in paths))

    @property
    def narrows(self) -> bool:
        """Whether the filter leaves any snapshot out at all."""
        return self.host is not None or bool(self.tags) or bool(self.paths)

    def matches(self, snapshot: Snapshot) -> bool:
        if self.host is not None and snapshot.hostname != self.host:
            return False
        if not self.tags <= set(snapshot.tags):
            return False
        return not self.paths or self.paths <= {_normal(p) for p in snapshot.paths}

    def apply(self, snapshots: Iterable[Snapshot]) -> list[Snapshot]:
        """The matching snapshots, in the order given."""
        return [s for s in snapshots if self.matches(s)]


def newest_per_group(snapshots: list[Snapshot], count: int) -> list[Snapshot]:
    """The ``count`` newest snapshots of each group (same host and same set of paths, as
    `forget` groups them), in the order given (oldest first for a repository's listing)."""
    seen: dict[tuple[str, tuple[str, ...]], int] = {}
    keep: set[int] = set()
    for index in sorted(range(len(snapshots)), key=lambda i: snapshots[i].time, reverse=True):
        snap = snapshots[index]
        group = (snap.hostname, tuple(sorted(snap.paths)))
        if seen.get(group, 0) < count:
            seen[group] = seen.get(group, 0) + 1
            keep.add(index)
    return [s for i, s in enumerate(snapshots) if i in keep]
