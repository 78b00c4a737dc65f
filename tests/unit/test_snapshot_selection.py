"""Which snapshots a command looks at (`repo/selection.py`): host, tag and path filters, and
the newest N of each group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stackvault.repo.selection import SnapshotFilter, newest_per_group
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
