"""Which snapshots a command looks at (`repo/selection.py`): host, tag and path filters, and
the newest N of each group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from stackvault.errors import SnapshotNotFound
from stackvault.repo.repository import Repository
from stackvault.repo.selection import (
    SnapshotFilter,
    newest_per_group,
    pick_snapshot,
    pick_stack_snapshot,
)
from stackvault.repo.snapshot import Snapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def snap(n: int, host: str, paths: list[str], tags: list[str] | None = None) -> Snapshot:
    return Snapshot(
        time=T0 + timedelta(hours=n),
        tree=b"\0" * 32,
        paths=paths,
        hostname=host,
        username="root",
        tags=tags or [],
        id=f"{n:064x}",
    )


SNAPS = [
    snap(0, "a", ["/srv/app"], ["nightly"]),
    snap(1, "a", ["/srv/app", "/etc"]),
    snap(2, "b", ["/srv/app"], ["nightly", "db"]),
    snap(3, "a", ["/srv/app"]),
    snap(4, "a", ["/srv/app"], ["nightly"]),
]


def ids(snaps: list[Snapshot]) -> list[int]:
    return [int(s.id, 16) for s in snaps]


def test_filters_combine_and_paths_are_normalised() -> None:
    assert ids(SnapshotFilter().apply(SNAPS)) == [0, 1, 2, 3, 4]
    assert not SnapshotFilter().narrows
    assert ids(SnapshotFilter.of(host="a").apply(SNAPS)) == [0, 1, 3, 4]
    assert ids(SnapshotFilter.of(tags=["nightly"]).apply(SNAPS)) == [0, 2, 4]
    assert ids(SnapshotFilter.of(tags=["nightly", "db"]).apply(SNAPS)) == [2]
    assert ids(SnapshotFilter.of(paths=["/etc/"]).apply(SNAPS)) == [1]
    assert ids(SnapshotFilter.of(paths=["/srv/app", "/etc"]).apply(SNAPS)) == [1]
    assert ids(SnapshotFilter.of(host="a", tags=["nightly"], paths=["/srv/app"]).apply(SNAPS)) == [
        0,
        4,
    ]
    assert SnapshotFilter.of(paths=["/x"]).narrows


def test_newest_per_group_keeps_the_order_given() -> None:
    assert ids(newest_per_group(SNAPS, 1)) == [1, 2, 4]
    assert ids(newest_per_group(SNAPS, 2)) == [1, 2, 3, 4]
    assert ids(newest_per_group(SNAPS, 9)) == [0, 1, 2, 3, 4]


class _Repo:
    """What `pick_snapshot` asks of a repository: its snapshots, and `find_snapshot`."""

    find_snapshot = Repository.find_snapshot

    def __init__(self, snaps: list[Snapshot]) -> None:
        self.snaps = snaps

    def list_snapshots(self) -> list[Snapshot]:
        return list(self.snaps)


STACKS = [
    snap(0, "h", ["/stack/a"], ["stack:a"]),
    snap(1, "h", ["/stack/b"], ["stack:b"]),
    snap(2, "h", ["/srv/app"]),
]


def pick_stack(ref: str, project: str | None, *tags: str) -> int:
    repo = cast(Repository, _Repo(STACKS))
    return int(pick_stack_snapshot(repo, ref, SnapshotFilter.of(tags=tags), project).id, 16)


def test_stack_latest_is_scoped_to_one_project() -> None:
    assert pick_stack("latest", "a") == 0
    assert pick_stack("latest", "b") == 1
    assert pick_stack("latest", "renamed", "stack:a") == 0  # restored under a new name
    assert pick_stack(f"{2:064x}"[:64], "a") == 2  # an id is exact
    with pytest.raises(SnapshotNotFound, match=r"ambiguous.*\(a, b\)"):
        pick_stack("latest", None)
    with pytest.raises(SnapshotNotFound, match="no stack snapshot of project c") as got:
        pick_stack("latest", "c")
    assert "--tag stack:a" in str(got.value)
    only_a = cast(Repository, _Repo(STACKS[::2]))
    assert pick_stack_snapshot(only_a, "latest", SnapshotFilter(), None).id == STACKS[0].id
    with pytest.raises(SnapshotNotFound, match="no stack snapshot"):
        pick_stack_snapshot(cast(Repository, _Repo(STACKS[2:])), "latest", SnapshotFilter(), None)


def test_pick_latest_names_the_filters() -> None:
    repo = cast(Repository, _Repo(SNAPS))
    assert pick_snapshot(repo, "latest", SnapshotFilter.of(host="b")).id == SNAPS[2].id
    assert pick_snapshot(repo, "latest").id == SNAPS[4].id
    with pytest.raises(SnapshotNotFound) as got:
        pick_snapshot(repo, "latest", SnapshotFilter.of("c", ["db"], ["/x/"]))
    assert str(got.value).startswith(
        "'latest' matches nothing: the repository has no snapshot of host c with tag db "
        "including /x;"
    )
