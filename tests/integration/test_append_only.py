"""Append-only stores: `LocalStore(append_only=True)` (and `MemoryStore`'s flag) add objects but
never overwrite or delete them, locks excepted; a repository on them backs up, refreshes and
releases its locks, checks and restores; `open_store` selects it for local paths only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import describe, inside, make_tree
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.restore import FileRestoreOptions, RestoreJob
from stackvault.errors import ObjectExists, StorePermissionDenied, UsageError
from stackvault.repo.check import Checker
from stackvault.repo.pack import pack_name
from stackvault.repo.repository import Repository
from stackvault.store.base import Store
from stackvault.store.local import TEMP_PREFIX, LocalStore
from stackvault.store.memory import MemoryStore
from stackvault.store.open import open_store

PW = b"append only"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)


def temp_files(root: Path) -> list[str]:
    return [n for _d, _s, files in os.walk(root) for n in files if n.startswith(TEMP_PREFIX)]


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore(append_only=True)
    local = LocalStore(tmp_path / "repo", append_only=True)
    local.ensure_root()
    return local


def test_adds_but_never_overwrites_or_deletes(store: Store) -> None:
    assert store.capabilities().append_only
    store.put("data/ab/pack1", b"first")
    with pytest.raises(ObjectExists, match="data/ab/pack1"):
        store.put("data/ab/pack1", b"second")
    with pytest.raises(ObjectExists):
        store.put_parts("data/ab/pack1", [b"sec", b"ond"])
    assert store.get("data/ab/pack1") == b"first"
    for name in ("data/ab/pack1", "snapshots/s1", "index/i1", "keys/k1", "config"):
        with pytest.raises(StorePermissionDenied, match="append-only"):
            store.delete(name)
    assert store.get("data/ab/pack1") == b"first"
    store.put("data/ab/pack2", b"new names are fine")
    assert {i.name for i in store.list("data/")} == {"data/ab/pack1", "data/ab/pack2"}
    if isinstance(store, LocalStore):
        assert temp_files(store.root) == []  # the refused writes left nothing behind


def test_locks_stay_deletable(store: Store) -> None:
    store.put("locks/abc", b"lock")
    store.delete("locks/abc")
    assert not store.exists("locks/abc")
    store.delete("locks/abc")  # idempotent, as always


def test_local_store_without_hard_links_still_refuses_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "repo", append_only=True)
    store.ensure_root()

    def no_links(_src: object, _dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # vfat says EPERM

    monkeypatch.setattr(os, "link", no_links)
    store.put("index/i1", b"one")
    with pytest.raises(ObjectExists):
        store.put("index/i1", b"two")
    assert store.get("index/i1") == b"one"
    assert temp_files(store.root) == []


def test_a_normal_local_store_still_overwrites(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    store.ensure_root()
    assert not store.capabilities().append_only
    store.put("index/i1", b"one")
    store.put("index/i1", b"two")
    assert store.get("index/i1") == b"two"
    store.delete("index/i1")


def test_open_store_append_only(tmp_path: Path) -> None:
    for location in (str(tmp_path / "r"), f"file://{tmp_path}/r"):
        store = open_store(location, append_only=True)
        assert isinstance(store, LocalStore)
        assert store.capabilities().append_only
    assert not open_store(str(tmp_path / "r")).capabilities().append_only
    with pytest.raises(UsageError, match="bucket policy") as info:
        open_store("s3://bucket/prefix", append_only=True)
    assert "Object Lock" in str(info.value)


def test_repository_works_on_an_append_only_store(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_tree(tmp_path / "data")
    Repository.init(store, PW, kdf=FAST_KDF)
    for round_ in range(2):
        repo = Repository.open(store, PW)
        repo.load_index()
        with repo.lock(exclusive=False, operation="backup") as lock:
            # a refresh writes a new lock object and deletes the old one
            before = {i.name for i in store.list("locks/")}
            lock.refresh()
            after = {i.name for i in store.list("locks/")}
            assert len(before) == len(after) == 1 and before != after
            (data / f"round-{round_}.txt").write_text(f"round {round_}\n")
            BackupJob(repo, BackupOptions(paths=[str(data)], workers=2)).run()
        assert list(store.list("locks/")) == []  # released
    repo = Repository.open(store, PW)
    report = Checker(repo, read_data=True).run()
    assert report.ok and report.snapshots == 2
    repo.load_index()
    RestoreJob(repo, repo.find_snapshot("latest"), FileRestoreOptions(str(tmp_path / "t"))).run()
    assert describe(inside(tmp_path / "t", data)) == describe(data)

    # a key can be added, not removed; nothing written can be replaced
    repo.add_key(b"second password", FAST_KDF)
    with pytest.raises(StorePermissionDenied, match="key"):
        repo.change_password(b"third password", FAST_KDF)
    assert len(repo.list_keys()) == 2  # refused before writing a new key
    pack_id = next(iter(repo.index.pack_ids()))
    with pytest.raises(ObjectExists):
        store.put(pack_name(pack_id), b"garbage")
    with pytest.raises(StorePermissionDenied):
        repo.remove_snapshot(repo.find_snapshot("latest").id)
    assert Checker(Repository.open(store, PW), read_data=True).run().ok
