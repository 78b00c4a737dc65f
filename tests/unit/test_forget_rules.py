"""The rules `forget` and `unlock` apply, as a library user of `Repository` meets them
(policy/forget.py, repo/forget.py, repo/lock.py, repo/appendonly.py), on in-memory stores."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stackvault.clock import FrozenClock
from stackvault.crypto.kdf import KdfParams
from stackvault.errors import AppendOnlyRefused
from stackvault.policy.forget import NAMED, plan_named, plan_retention
from stackvault.policy.retention import RetentionPolicy
from stackvault.repo.forget import UNKNOWN_DATE, forget_snapshots, resolve_snapshot_id
from stackvault.repo.lock import remove_locks
from stackvault.repo.prune import PrunePlan, execute_prune
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.store.base import Retention
from stackvault.store.memory import MemoryStore

PW = b"pw"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)


def _repo(store: MemoryStore, clock: FrozenClock, retention: Retention | None = None) -> Repository:
    Repository.init(store, PW, kdf=FAST_KDF, clock=clock, object_lock=retention)
    return Repository.open(store, PW, clock=clock)


def _snapshots(repo: Repository, clock: FrozenClock, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        snap = Snapshot(
            time=clock.now(), tree=bytes(32), paths=["/data"], hostname="h", username="u"
        )
        ids.append(repo.save_snapshot(snap))
        clock.advance(3600)
    return ids


def test_a_retention_plan_removes_what_no_rule_keeps() -> None:
    clock = FrozenClock()
    repo = _repo(MemoryStore(), clock)
    old, mid, new = _snapshots(repo, clock, 3)
    plan = plan_retention(repo.list_snapshots(), RetentionPolicy(last=2), ("host",), clock.now())
    assert plan.remove == [old]
    assert [g.key for g in plan.groups] == [("h",)]
    assert {d.id for d in plan.decisions if d.keep} == {mid, new}
    notices: list[str] = []
    result = forget_snapshots(repo, plan.remove, notices.append)
    assert result.removed == [old] and result.locked == {} and notices == []
    assert sorted(s.id for s in repo.list_snapshots()) == sorted([mid, new])


def test_named_snapshots_are_removed_with_their_reason() -> None:
    plan = plan_named(["a", "b"])
    assert plan.remove == ["a", "b"]
    assert all(d.reasons == (NAMED,) and not d.keep for d in plan.decisions)


def test_object_lock_retention_keeps_a_snapshot_until_it_ends() -> None:
    clock = FrozenClock()
    store = MemoryStore(object_lock=True, clock=clock)
    repo = _repo(store, clock, Retention("compliance", 2))
    (snap,) = _snapshots(repo, clock, 1)
    notices: list[str] = []
    result = forget_snapshots(repo, [snap], notices.append)
    assert result.removed == [] and list(result.locked) == [snap]
    assert result.locked[snap] != UNKNOWN_DATE
    assert "under Object Lock retention until" in notices[0]
    assert [s.id for s in repo.list_snapshots()] == [snap]
    clock.advance(timedelta(days=3).total_seconds())
    assert forget_snapshots(repo, [snap], notices.append).removed == [snap]


def test_an_append_only_store_refuses_before_removing_anything() -> None:
    clock = FrozenClock()
    store = MemoryStore(append_only=True, clock=clock)
    repo = _repo(store, clock)
    ids = _snapshots(repo, clock, 2)
    with pytest.raises(AppendOnlyRefused, match="`forget` deletes snapshots"):
        forget_snapshots(repo, ids, lambda _m: None)
    assert len(repo.list_snapshots()) == 2
    with pytest.raises(AppendOnlyRefused, match="unlock --remove-all"):
        remove_locks(store, repo.envelope, clock, lambda _m: None, remove_all=True)
    names = sorted(i.name for i in store.list(""))
    plan = PrunePlan(old_index=repo.index_names())  # would rewrite the index
    with pytest.raises(AppendOnlyRefused, match="`prune` deletes packs and index files"):
        execute_prune(repo, plan)
    assert sorted(i.name for i in store.list("")) == names


def test_a_damaged_snapshot_is_found_by_its_name() -> None:
    clock = FrozenClock()
    store = MemoryStore()
    repo = _repo(store, clock)
    good, bad = _snapshots(repo, clock, 2)
    store.delete(f"snapshots/{bad}")
    store.put(f"snapshots/{bad}", b"damaged")
    snaps = repo.list_snapshots(on_error=lambda _n, _e: None)
    assert resolve_snapshot_id(repo, good[:8], snaps) == good
    assert resolve_snapshot_id(repo, bad[:8], snaps) == bad


def test_remove_locks_leaves_a_live_lock_unless_told_to_remove_all() -> None:
    clock = FrozenClock()
    store = MemoryStore()
    repo = _repo(store, clock)
    held = repo.lock(exclusive=False, operation="backup")
    held.acquire()
    try:
        assert remove_locks(store, repo.envelope, clock, lambda _m: None) == []
        (removed,) = remove_locks(store, repo.envelope, clock, lambda _m: None, remove_all=True)
        assert removed.reason == "--remove-all" and removed.pid > 0
        assert list(store.list("locks/")) == []
    finally:
        held.release()


def test_the_forget_summary_names_the_snapshots_object_lock_keeps() -> None:
    from functools import partial

    from stackvault.cli.commands.forget import removed_line
    from stackvault.cli.render import human_time

    utc = partial(human_time, utc=True)
    assert removed_line(False, 2, {}, utc) == "removed 2 snapshot(s)"
    assert removed_line(True, 1, {}, utc) == "would remove 1 snapshot(s)"
    assert removed_line(False, 0, {"c6420e82" + "0" * 56: "2026-03-31T00:00:00+00:00"}, utc) == (
        "removed 0 snapshot(s); 1 stay under Object Lock retention "
        "(c6420e82 until 2026-03-31 00:00:00 UTC)"
    )
