"""What a copy reports (engine layer): per snapshot, copied or skipped and what it moved.

`CopyJob.run` (`engine/copy.py`) returns a `CopyResult`; the command renders it (text or
``--json``) and callers that keep records of runs keep it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stackvault.repo.snapshot import Snapshot


@dataclass
class CopyStats:
    """What copying one snapshot (or a whole run, for the totals) moved and found."""

    blobs_copied: int = 0
    """Blobs (data and trees) added to the destination."""
    bytes_copied: int = 0
    """Their plaintext size."""
    bytes_stored: int = 0
    """What they take in the destination (compressed and encrypted)."""
    blobs_present: int = 0
    """Distinct blobs the snapshot needs that the destination already held (from before the
    run or from a snapshot copied earlier in it)."""
    bytes_present: int = 0
    """Their plaintext size."""
    trees_reused: int = 0
    """Directories unchanged since a snapshot already in the destination, taken over whole
    without looking inside (their blobs are not counted one by one)."""

    def add(self, other: CopyStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class SnapshotCopy:
    """The outcome for one source snapshot."""

    source: Snapshot
    copy: Snapshot | None = None
    """The new snapshot in the destination; None when it was skipped."""
    existing: Snapshot | None = None
    """When skipped: the destination snapshot that already is this backup."""
    stats: CopyStats = field(default_factory=CopyStats)

    def to_json(self) -> dict[str, Any]:
        return {
            "source_id": self.source.id,
            "status": "copied" if self.copy is not None else "skipped",
            "id": self.copy.id if self.copy is not None else None,
            "existing_id": self.existing.id if self.existing is not None else None,
            "time": self.source.time.isoformat(timespec="microseconds"),
            "hostname": self.source.hostname,
            "paths": self.source.paths,
            **self.stats.to_json(),
        }


@dataclass
class CopyResult:
    """Every selected snapshot, oldest first, and whether the two repositories share ids."""

    snapshots: list[SnapshotCopy]
    shared_ids: bool

    @property
    def copied(self) -> list[SnapshotCopy]:
        return [s for s in self.snapshots if s.copy is not None]

    @property
    def skipped(self) -> list[SnapshotCopy]:
        return [s for s in self.snapshots if s.copy is None]

    def totals(self) -> CopyStats:
        out = CopyStats()
        for s in self.snapshots:
            out.add(s.stats)
        return out
