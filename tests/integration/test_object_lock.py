"""Object Lock semantics of forget and prune (repository layer), on a store that simulates
S3 retention with a frozen clock; the same behaviour against a real S3 server is in
tests/s3/test_object_lock_s3.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from conftest import make_tree
from stackvault.chunking.cdc import ChunkerParams
from stackvault.clock import FrozenClock
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.restore import FileRestoreOptions, RestoreJob
from stackvault.errors import ObjectLocked, StoreError
from stackvault.repo.check import Checker
from stackvault.repo.prune import PrunePlan, execute_prune, plan_prune
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.store.base import Retention
from stackvault.store.memory import MemoryStore

PW = b"pw"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
SMALL = ChunkerParams(min=16 * 1024, avg=64 * 1024, max=256 * 1024)
DAYS = 10


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def store(clock: FrozenClock) -> MemoryStore:
    store = MemoryStore(object_lock=True, clock=clock)
    Repository.init(
        store,
        PW,
        kdf=FAST_KDF,
        chunker=SMALL,
        pack_size=512 * 1024,
        clock=clock,
        object_lock=Retention("compliance", DAYS),
    )
    return store


def opened(store: MemoryStore, clock: FrozenClock) -> Repository:
    repo = Repository.open(store, PW, clock=clock)
    repo.load_index()
    return repo


def backup(store: MemoryStore, clock: FrozenClock, src: Path) -> Snapshot:
    repo = opened(store, clock)
    return BackupJob(repo, BackupOptions(paths=[str(src)], workers=2)).run().snapshot


def prune(store: MemoryStore, clock: FrozenClock) -> tuple[Repository, PrunePlan]:
    repo = opened(store, clock)
    plan = plan_prune(repo, safety_margin=timedelta(0))
    execute_prune(repo, plan)
    return repo, plan


def check_clean(store: MemoryStore, clock: FrozenClock) -> None:
    report = Checker(Repository.open(store, PW, clock=clock), read_data=True).run()
    assert report.ok, [e.__dict__ for e in report.errors]


def test_every_object_but_locks_carries_the_retention(
    store: MemoryStore, clock: FrozenClock, tmp_path: Path
) -> None:
    backup(store, clock, make_tree(tmp_path / "src"))
    names = [i.name for i in store.list("")]
    assert any(n.startswith("data/") for n in names) and "config" in names
    expected = clock.now() + timedelta(days=DAYS)
    for name in names:
        assert not name.startswith("locks/")  # released after the backup
        assert store.retention(name) == expected, name
    with pytest.raises(ObjectLocked):
        store.delete(next(n for n in names if n.startswith("data/")))


def test_forgotten_data_stays_until_its_retention_ends_then_prune_removes_it(
    store: MemoryStore, clock: FrozenClock, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", seed=1)
    old = backup(store, clock, src)
    (src / "docs" / "deep" / "er" / "big.bin").write_bytes(b"replaced" * 100_000)
    clock.advance(3600)
    new = backup(store, clock, src)

    # The old snapshot is locked: deleting it fails, and prune keeps everything.
    repo = opened(store, clock)
    with pytest.raises(ObjectLocked):
        repo.remove_snapshot(old.id)
    assert {s.id for s in repo.list_snapshots()} == {old.id, new.id}

    # After the snapshot's retention: it can be forgotten, but the packs only it used were
    # extended by nobody (no prune ran), so they are removable too.
    clock.advance(DAYS * 86400)
    repo = opened(store, clock)
    repo.remove_snapshot(old.id)
    before = {i.name: i.size for i in store.list("data/")}
    repo, plan = prune(store, clock)
    after = {i.name: i.size for i in store.list("data/")}
    assert plan.delete_packs or plan.repack_packs
    assert set(before) - set(after) and sum(after.values()) < sum(before.values())
    check_clean(store, clock)
    target = tmp_path / "out"
    snap = opened(store, clock).find_snapshot(new.id)
    RestoreJob(opened(store, clock), snap, FileRestoreOptions(target=str(target))).run()
    assert (target / str(src).lstrip("/") / "docs" / "deep" / "er" / "big.bin").read_bytes() == (
        b"replaced" * 100_000
    )


def test_prune_leaves_locked_unused_packs_reports_them_and_check_stays_clean(
    store: MemoryStore, clock: FrozenClock, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", seed=2)
    first = backup(store, clock, src)
    (src / "docs" / "deep" / "er" / "big.bin").write_bytes(b"other" * 200_000)
    backup(store, clock, src)
    # Simulate a snapshot removed by someone allowed to (e.g. after a governance bypass):
    store._until.pop(f"snapshots/{first.id}")  # the test reaches into the fake
    opened(store, clock).remove_snapshot(first.id)

    repo = opened(store, clock)
    plan = plan_prune(repo, safety_margin=timedelta(0))
    assert plan.locked and plan.bytes_locked > 0 and not plan.delete_packs
    assert plan.next_release == clock.now() + timedelta(days=DAYS)
    packs_before = {i.name for i in store.list("data/")}
    execute_prune(repo, plan)
    assert {i.name for i in store.list("data/")} == packs_before  # nothing deleted
    check_clean(store, clock)

    # Once the retention has run out, the next prune removes them.
    clock.advance(DAYS * 86400 + 1)
    _repo, later = prune(store, clock)
    assert later.delete_packs or later.repack_packs
    assert packs_before - {i.name for i in store.list("data/")}
    check_clean(store, clock)


def test_prune_extends_what_kept_snapshots_need_once_half_the_period_is_left(
    store: MemoryStore, clock: FrozenClock, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", seed=3)
    snap = backup(store, clock, src)
    # Early on, nothing needs extending.
    _repo, plan = prune(store, clock)
    assert plan.extend == []

    clock.advance((DAYS / 2 + 1) * 86400)
    _repo, plan = prune(store, clock)
    extended = set(plan.extend)
    assert f"snapshots/{snap.id}" in extended and "config" in extended
    assert any(n.startswith("data/") for n in extended)
    assert any(n.startswith("keys/") for n in extended)
    until = clock.now() + timedelta(days=DAYS)
    for name in extended:
        assert store.retention(name) == until
    # The data the kept snapshot needs survives well past its first retention date.
    clock.advance((DAYS - 1) * 86400)
    with pytest.raises(ObjectLocked):
        store.delete(f"snapshots/{snap.id}")


def test_a_repository_with_object_lock_needs_a_store_that_has_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="Object Lock"):
        Repository.init(MemoryStore(), PW, kdf=FAST_KDF, object_lock=Retention("governance", 1))


def test_a_locked_repository_opened_from_a_plain_store_is_readable_with_a_notice(
    store: MemoryStore, clock: FrozenClock
) -> None:
    plain = MemoryStore()
    for info in store.list(""):
        plain.put(info.name, store.get(info.name))
    notices: list[str] = []
    repo = Repository.open(plain, PW, notice=notices.append)
    assert repo.config.object_lock == Retention("compliance", DAYS)
    assert any("objects written now carry no retention" in n for n in notices)
