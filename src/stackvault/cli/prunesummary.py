"""What prune reports (cli layer): `PruneSummary`, the ``--json`` document of `prune` and the
``prune`` member of `forget --prune`'s. Imported only when prune runs (dataclasses are not
among the CLI's start-up imports)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from stackvault.repo.prune import PrunePlan


@dataclass(frozen=True)
class PruneSummary:
    """What prune did (or would do): the ``--json`` document of `prune`, and the ``prune``
    member of `forget --prune`'s (keys in this order)."""

    packs_deleted: int
    packs_repacked: int
    bytes_freed: int
    bytes_repacked: int
    unindexed_packs_deleted: int
    bytes_unindexed_deleted: int
    packs_reindexed: int
    packs_kept_young: int
    bytes_kept_young: int
    safety_margin_s: int
    unreadable_packs_kept: list[str]
    damaged_index_replaced: int
    low_space: bool
    objects_locked: int
    bytes_locked: int
    next_release: str | None
    retention_extended: int
    retention_until: str | None
    run_records_removed: int = 0
    """Run records the expiry rule deleted (or would delete): FORMAT.md §14."""

    @classmethod
    def of(cls, plan: PrunePlan, margin: timedelta, runs_removed: int = 0) -> PruneSummary:
        release = plan.next_release
        return cls(
            packs_deleted=len(plan.delete_packs) + len(plan.unindexed_packs),
            packs_repacked=len(plan.repack_packs),
            bytes_freed=plan.bytes_freed,
            bytes_repacked=plan.bytes_repacked,
            unindexed_packs_deleted=len(plan.unindexed_packs),
            bytes_unindexed_deleted=plan.bytes_unindexed,
            packs_reindexed=len(plan.reindexed),
            packs_kept_young=len(plan.young_packs),
            bytes_kept_young=plan.bytes_young,
            safety_margin_s=int(margin.total_seconds()),
            unreadable_packs_kept=sorted(plan.unreadable_packs),
            damaged_index_replaced=len(plan.damaged_index) if plan.rewrites_index else 0,
            low_space=plan.low_space,
            objects_locked=len(plan.locked),
            bytes_locked=plan.bytes_locked,
            next_release=release.isoformat() if release else None,
            retention_extended=len(plan.extend),
            retention_until=(
                plan.extend_until.isoformat() if plan.extend and plan.extend_until else None
            ),
            run_records_removed=runs_removed,
        )

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)
