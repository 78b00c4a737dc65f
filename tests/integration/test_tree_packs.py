"""Trees from a remote store: each tree pack fetched once whole, damage still reported."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conftest import make_tree
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.errors import IntegrityError
from stackvault.repo.blob import BlobType
from stackvault.repo.pack import pack_name
from stackvault.repo.repository import Repository
from stackvault.repo.treepacks import TreePacks
from stackvault.store.memory import MemoryStore
from support.countingstore import RemoteCountingStore
from support.damage import damage_blob

PW = b"tree packs"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)


def _repo_with_snapshot(tmp_path: Path) -> tuple[MemoryStore, RemoteCountingStore, Repository]:
    data = make_tree(tmp_path / "data")
    for i in range(12):
        make_tree(data / f"sub-{i}", seed=i, files=3)
    store = MemoryStore()
    Repository.init(store, PW, kdf=FAST_KDF)
    repo = Repository.open(store, PW)
    repo.load_index()
    BackupJob(repo, BackupOptions(paths=[str(data)], workers=2)).run()
    counting = RemoteCountingStore(store)
    remote = Repository.open(counting, PW)
    remote.load_index()
    counting.gets.clear()
    return store, counting, remote


def _tree_packs(repo: Repository) -> set[str]:
    return {pack_name(e.pack_id) for _i, e in repo.index.items() if e.type == BlobType.TREE}


def test_a_walk_fetches_each_tree_pack_once(tmp_path: Path) -> None:
    _store, counting, repo = _repo_with_snapshot(tmp_path)
    snap = repo.list_snapshots()[-1]
    counting.gets.clear()
    dirs = sum(1 for _p, node in repo.iter_tree(snap.tree) if node.type == "dir")
    assert dirs > 12
    tree_gets = [g for g in counting.gets if g[0] in _tree_packs(repo)]
    assert sorted(g[0] for g in tree_gets) == sorted(_tree_packs(repo))
    assert all(g[1:] == (0, None) for g in tree_gets)  # whole packs


def test_damaged_tree_in_a_fetched_pack_fails_authentication(tmp_path: Path) -> None:
    store, _counting, repo = _repo_with_snapshot(tmp_path)
    snap = repo.list_snapshots()[-1]
    damage_blob(store, repo.index_entry(snap.tree), 0x01)
    with pytest.raises(IntegrityError, match="damaged"):
        repo.load_tree(snap.tree)


def test_missing_tree_pack_is_reported_as_missing(tmp_path: Path) -> None:
    store, _counting, repo = _repo_with_snapshot(tmp_path)
    snap = repo.list_snapshots()[-1]
    store.delete(pack_name(repo.index_entry(snap.tree).pack_id))
    with pytest.raises(IntegrityError, match="missing"):
        repo.load_tree(snap.tree)


def test_least_recently_used_packs_are_dropped_and_fetched_again(tmp_path: Path) -> None:
    _store, counting, repo = _repo_with_snapshot(tmp_path)
    trees = [e for _i, e in repo.index.items() if e.type == BlobType.TREE]
    packs = TreePacks(counting, keep_bytes=1)  # keeps only the pack fetched last
    first = trees[0]
    other = first._replace(pack_id=b"\x00" * 32)  # a pack that does not exist
    counting.gets.clear()
    assert packs.sealed(first) is not None
    assert packs.sealed(first) is not None  # kept
    assert packs.sealed(other) is None  # unreadable: the caller reads the blob itself
    assert packs.sealed(first) is not None  # dropped for the other one, fetched again
    assert [g[0] for g in counting.gets] == [
        pack_name(first.pack_id),
        pack_name(other.pack_id),
        pack_name(first.pack_id),
    ]


def test_threads_wanting_one_pack_share_one_fetch(tmp_path: Path) -> None:
    _store, counting, repo = _repo_with_snapshot(tmp_path)
    entry = next(e for _i, e in repo.index.items() if e.type == BlobType.TREE)
    packs = TreePacks(counting)
    counting.gets.clear()
    got: list[bytes] = []
    start = threading.Barrier(8)

    def want() -> None:
        start.wait()
        sealed = packs.sealed(entry)
        assert sealed is not None
        got.append(bytes(sealed))

    threads = [threading.Thread(target=want) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and len(set(got)) == 1
    assert len(counting.gets) == 1
