"""Which snapshots a command looks at (repository layer): the `--host`, `--tag` and `--path`
filters, and the newest few of each group of snapshots, in one place for every command that
lists, copies or picks snapshots."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from stackvault.errors import SnapshotNotFound
from stackvault.repo.snapshot import Snapshot

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.repo.repository import Repository

STACK_TAG = "stack:"
"""The tag every stack snapshot carries, followed by its Compose project's name."""


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

    def with_tag(self, tag: str) -> SnapshotFilter:
        return SnapshotFilter(self.host, self.tags | {tag}, self.paths)

    def describe(self) -> str:
        """The filters in words: ``of host web1 with tag nightly including /srv/app``."""
        parts = []
        if self.host is not None:
            parts.append(f"of host {self.host}")
        if self.tags:
            parts.append("with tag " + ", ".join(sorted(self.tags)))
        if self.paths:
            parts.append("including " + ", ".join(sorted(self.paths)))
        return " ".join(parts)


def pick_snapshot(
    repo: Repository,
    ref: str,
    chosen: SnapshotFilter = SnapshotFilter(),
    snapshots: list[Snapshot] | None = None,
) -> Snapshot:
    """The snapshot ``ref`` names: ``latest`` is the newest snapshot ``chosen`` matches; an id
    prefix names its snapshot whatever the filters say (it is already exact). Raises
    `SnapshotNotFound` with one sentence naming the filters when ``latest`` matches nothing."""
    snaps = snapshots if snapshots is not None else repo.list_snapshots()
    if ref != "latest" or not chosen.narrows:
        return repo.find_snapshot(ref, snaps)
    matching = chosen.apply(snaps)
    if not matching:
        raise SnapshotNotFound(
            f"'latest' matches nothing: the repository has no snapshot {chosen.describe()}",
            hint="list them with `stackvault snapshots` (it takes the same --host, --tag "
            "and --path filters)",
        )
    return matching[-1]


def stack_projects(snapshots: Iterable[Snapshot]) -> set[str]:
    """The Compose projects the stack snapshots among ``snapshots`` were taken of."""
    return {t.removeprefix(STACK_TAG) for s in snapshots for t in s.tags if t.startswith(STACK_TAG)}


def pick_stack_snapshot(
    repo: Repository, ref: str, chosen: SnapshotFilter, project: str | None
) -> Snapshot:
    """The stack snapshot ``ref`` names for `stack restore`. ``latest`` is scoped to one
    project: the one of a ``stack:NAME`` tag among the filters, else ``project`` (the name
    it is restored as), else the only project that has stack snapshots (several are
    refused, naming them)."""
    snaps = repo.list_snapshots()
    if ref != "latest" or any(t.startswith(STACK_TAG) for t in chosen.tags):
        return pick_snapshot(repo, ref, chosen, snaps)
    if project is not None:
        scoped = chosen.with_tag(STACK_TAG + project)
        if scoped.apply(snaps):
            return pick_snapshot(repo, ref, scoped, snaps)
        others = sorted(stack_projects(chosen.apply(snaps)))
        raise SnapshotNotFound(
            f"'latest' matches nothing: the repository has no stack snapshot of project "
            f"{project}" + (f" {chosen.describe()}" if chosen.narrows else ""),
            hint=(
                f"to restore another project's snapshot as {project}, name it: --tag "
                f"stack:{others[0]} (stack snapshots exist of {', '.join(others)})"
                if others
                else "list them with `stackvault snapshots --tag stack:NAME`"
            ),
        )
    projects = sorted(stack_projects(chosen.apply(snaps)))
    if len(projects) > 1:
        raise SnapshotNotFound(
            f"'latest' is ambiguous: the repository has stack snapshots of {len(projects)} "
            f"projects ({', '.join(projects)})",
            hint="name one with --project NAME or --tag stack:NAME",
        )
    if not projects:
        raise SnapshotNotFound(
            "'latest' matches nothing: the repository has no stack snapshot"
            + (f" {chosen.describe()}" if chosen.narrows else ""),
            hint="a stack snapshot is made by `stackvault stack backup`",
        )
    return pick_snapshot(repo, ref, chosen.with_tag(STACK_TAG + projects[0]), snaps)


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
