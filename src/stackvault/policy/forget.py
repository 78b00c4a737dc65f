"""Which snapshots `forget` removes, and why (policy layer). Pure logic: no I/O.

A `ForgetPlan` is made either from snapshot ids given explicitly (`plan_named`) or from a
retention policy applied per group of snapshots (`plan_retention`, see `policy.retention`).
`stackvault.repo.forget.forget_snapshots` carries it out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from stackvault.policy.retention import (
    Decision,
    GroupKey,
    RetentionPolicy,
    SnapshotRef,
    decide,
)

if TYPE_CHECKING:
    from stackvault.repo.snapshot import Snapshot

NAMED = "named on the command line"
"""The reason given for removing a snapshot named explicitly."""


@dataclass(frozen=True)
class ForgetDecision:
    """Keep or remove one snapshot, with the reasons."""

    id: str
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ForgetGroup:
    """The decisions for one group of snapshots (one value per ``group_by`` field)."""

    key: GroupKey
    decisions: tuple[Decision, ...]


@dataclass(frozen=True)
class ForgetPlan:
    """Every decision, in order; the groups they came from (empty for named snapshots)."""

    decisions: tuple[ForgetDecision, ...]
    groups: tuple[ForgetGroup, ...] = ()

    @property
    def remove(self) -> list[str]:
        """The ids of the snapshots to remove, in decision order."""
        return [d.id for d in self.decisions if not d.keep]


def plan_named(snapshot_ids: Sequence[str]) -> ForgetPlan:
    """Remove exactly these snapshots (ids already resolved)."""
    return ForgetPlan(tuple(ForgetDecision(s, False, (NAMED,)) for s in snapshot_ids))


def plan_retention(
    snapshots: Iterable[Snapshot], policy: RetentionPolicy, group_by: tuple[str, ...], now: datetime
) -> ForgetPlan:
    """Apply ``policy`` to each group of ``snapshots`` (`decide`; `UsageError` for an empty
    policy)."""
    refs = [
        SnapshotRef(s.id, s.time, s.hostname, tuple(s.paths), frozenset(s.tags)) for s in snapshots
    ]
    groups = tuple(ForgetGroup(key, tuple(ds)) for key, ds in decide(refs, policy, group_by, now))
    decisions = tuple(
        ForgetDecision(d.snapshot.id, d.keep, d.reasons) for g in groups for d in g.decisions
    )
    return ForgetPlan(decisions, groups)
