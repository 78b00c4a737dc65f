"""Removing snapshots (repository layer): what `forget` does once it has decided.

`forget_snapshots` removes snapshots by id and honours Object Lock retention: a snapshot
whose retention has not ended stays (with a notice naming the date it ends) and is reported
as locked, not as an error, so a later forget removes it (FORMAT.md §11). It refuses, before
removing anything, on a store opened append-only. `resolve_snapshot_id` finds the id of a
snapshot given on the command line, damaged ones included, so they can be forgotten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stackvault.errors import ObjectLocked, SnapshotNotFound
from stackvault.repo.appendonly import refuse_on_append_only_store
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot

SNAPSHOTS_PREFIX = "snapshots/"
UNKNOWN_DATE = "an unknown date"
"""What `ForgetResult.locked` holds for a snapshot whose retention date the store hides."""


@dataclass(frozen=True)
class ForgetResult:
    """The outcome of `forget_snapshots`."""

    removed: list[str] = field(default_factory=list)
    """Ids of the snapshots removed, in the order asked for."""
    locked: dict[str, str] = field(default_factory=dict)
    """Snapshot id → when its Object Lock retention ends (ISO 8601, seconds, or
    `UNKNOWN_DATE`): those snapshots are still there."""


def resolve_snapshot_id(repo: Repository, ref: str, snapshots: list[Snapshot]) -> str:
    """A snapshot id from a reference (an id prefix or ``latest``); a damaged (unreadable)
    snapshot is found by the id in its object's name, so it can be forgotten. Raises
    `SnapshotNotFound` if nothing, or more than one damaged snapshot, matches."""
    try:
        return repo.find_snapshot(ref, snapshots).id
    except SnapshotNotFound:
        names = [n.removeprefix(SNAPSHOTS_PREFIX) for n in repo.snapshot_names()]
        matches = [n for n in names if ref and n.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise


def forget_snapshots(
    repo: Repository, snapshot_ids: Sequence[str], notice: Callable[[str], None]
) -> ForgetResult:
    """Remove these snapshots (not the data only they use: that is prune's work).

    Raises `AppendOnlyRefused` before removing anything if the store is append-only. A
    snapshot under Object Lock retention stays: ``notice`` is told until when, and it is
    listed in `ForgetResult.locked` instead of `ForgetResult.removed`."""
    refuse_on_append_only_store(repo.store, "forget", "deletes snapshots")
    result = ForgetResult()
    for snap_id in snapshot_ids:
        until = _remove(repo, snap_id)
        if until is None:
            result.removed.append(snap_id)
            continue
        result.locked[snap_id] = until
        notice(
            f"snapshot {snap_id[:8]} is under Object Lock retention until {until}; "
            "it stays until then (a later forget removes it)"
        )
    # a snapshot named twice and locked is not "removed" the second time either
    result.removed[:] = [s for s in result.removed if s not in result.locked]
    return result


def _remove(repo: Repository, snap_id: str) -> str | None:
    """Remove a snapshot; if Object Lock retention forbids it, return the date it ends."""
    try:
        repo.remove_snapshot(snap_id)
    except ObjectLocked:
        until = repo.store.retention(f"{SNAPSHOTS_PREFIX}{snap_id}")
        return until.isoformat(timespec="seconds") if until else UNKNOWN_DATE
    return None
