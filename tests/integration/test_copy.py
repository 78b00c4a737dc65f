"""`CopyJob` between real repositories (local directories, and a FaultyStore for crashes): copies
restore byte for byte, run twice copy nothing, copy only new data, skip downloads when the
repositories share their id key, pass `check --read-data`, and survive being interrupted.

Expected blob and byte counts are computed from the source repository's trees, never typed in.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import describe, inside, make_tree
from stackvault.chunking.cdc import ChunkerParams
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.copy import CopyJob, select_snapshots
from stackvault.engine.copyresult import CopyResult
from stackvault.engine.progress import NullProgress
from stackvault.engine.restore import FileRestoreOptions, RestoreJob
from stackvault.errors import Interrupted, SnapshotNotFound, StackvaultError
from stackvault.repo.blob import BlobType
from stackvault.repo.check import Checker
from stackvault.repo.pack import pack_name
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import rewrite_tree
from stackvault.store.base import Store
from stackvault.store.faulty import FaultyStore, SimulatedCrash
from stackvault.store.local import LocalStore
from stackvault.store.memory import MemoryStore
from support.countingstore import CountingStore

PW_SRC = b"source password"
PW_DST = b"a different destination password"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
# Small chunks and packs: a few MiB make dozens of blobs and several packs.
SMALL_CHUNKS = ChunkerParams(min=16 * 1024, avg=64 * 1024, max=256 * 1024)
SMALL_PACK = 512 * 1024


# --- helpers -----------------------------------------------------------------------------------


def new_local(path: Path, password: bytes, **kw: Any) -> LocalStore:
    store = LocalStore(path)
    store.ensure_root()
    Repository.init(
        store, password, kdf=FAST_KDF, pack_size=SMALL_PACK, **({"chunker": SMALL_CHUNKS} | kw)
    )
    return store


def opened(store: Store, password: bytes) -> Repository:
    repo = Repository.open(store, password)
    repo.load_index()
    return repo


def backup(store: Store, src: Path, password: bytes = PW_SRC, **kw: Any) -> Snapshot:
    repo = opened(store, password)
    return BackupJob(repo, BackupOptions(paths=[str(src)], workers=2, **kw)).run().snapshot


@contextmanager
def both(source: Store, dest: Store) -> Iterator[tuple[Repository, Repository]]:
    """Both repositories open, locked and indexed as `stackvault copy` has them."""
    src, dst = Repository.open(source, PW_SRC), Repository.open(dest, PW_DST)
    with ExitStack() as stack:
        stack.enter_context(src.lock(exclusive=False, operation="copy (source)"))
        stack.enter_context(dst.lock(exclusive=False, operation="copy"))
        src.load_index()
        dst.load_index()
        yield src, dst


def copy(source: Store, dest: Store, refs: Sequence[str] = (), **kw: Any) -> CopyResult:
    with both(source, dest) as (src, dst):
        return CopyJob(src, dst, workers=2).run(select_snapshots(src, refs, **kw))


def restore(store: Store, password: bytes, snap_id: str, target: Path) -> None:
    repo = opened(store, password)
    RestoreJob(repo, repo.find_snapshot(snap_id), FileRestoreOptions(target=str(target))).run()


def check_clean(store: Store, password: bytes) -> list[str]:
    """`check --read-data` passes; its notices (unreferenced packs) are returned."""
    report = Checker(Repository.open(store, password), read_data=True).run()
    assert report.ok, [e.__dict__ for e in report.errors]
    for notice in report.notices:
        assert "not referenced by the index" in notice, notice
    return report.notices


def blobs_of(store: Store, password: bytes, snap_id: str) -> dict[bytes, tuple[BlobType, int]]:
    """Every distinct blob a snapshot references (trees included): id → (type, plaintext size)."""
    repo = opened(store, password)
    out: dict[bytes, tuple[BlobType, int]] = {}

    def walk(tree_id: bytes) -> None:
        if tree_id in out:
            return
        out[tree_id] = (BlobType.TREE, len(repo.load_blob(tree_id)))
        for node in repo.load_tree(tree_id):
            for blob_id in node.content:
                entry = repo.index.get(blob_id)
                assert entry is not None
                out[blob_id] = (BlobType.DATA, entry.raw_length)
            if node.subtree is not None:
                walk(node.subtree)

    walk(repo.find_snapshot(snap_id).tree)
    return out


def objects(store: Store) -> dict[str, int]:
    """Every object but locks: name → size."""
    return {i.name: i.size for i in store.list("") if not i.name.startswith("locks/")}


@dataclass
class Repos:
    source: LocalStore
    dest: LocalStore
    data: Path
    tmp: Path


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    data = make_tree(tmp_path / "data", seed=7)
    return Repos(
        new_local(tmp_path / "source", PW_SRC),
        new_local(tmp_path / "dest", PW_DST),
        data,
        tmp_path,
    )


def change_tree(data: Path, seed: int) -> None:
    """A new 200 KiB file and one rewritten note: some new blobs, most of the tree kept."""
    rnd = random.Random(seed)
    (data / "docs" / "deep" / f"new-{seed}.bin").write_bytes(rnd.randbytes(200 * 1024))
    (data / "docs" / "note-3.txt").write_text(f"rewritten {seed}\n" * 100)


# --- copying ----------------------------------------------------------------------------------


def test_copy_between_repositories_with_different_keys_restores_byte_identical(
    repos: Repos,
) -> None:
    snap = backup(repos.source, repos.data)
    expected = blobs_of(repos.source, PW_SRC, snap.id)

    result = copy(repos.source, repos.dest)

    assert not result.shared_ids
    assert [s.source.id for s in result.copied] == [snap.id]
    outcome = result.copied[0]
    assert outcome.copy is not None
    stats = outcome.stats
    assert stats.blobs_copied == len(expected)
    assert stats.bytes_copied == sum(size for _t, size in expected.values())
    assert (stats.blobs_present, stats.bytes_present, stats.trees_reused) == (0, 0, 0)
    assert 0 < stats.bytes_stored <= sum(i.size for i in repos.dest.list("data/"))

    # the copy is the same backup, under the destination's own ids
    dst = opened(repos.dest, PW_DST)
    (copied,) = dst.list_snapshots()
    assert copied.id == outcome.copy.id
    assert copied.original == snap.id
    assert (copied.time, copied.paths, copied.hostname, copied.username, copied.tags) == (
        snap.time,
        snap.paths,
        snap.hostname,
        snap.username,
        snap.tags,
    )
    assert (copied.summary, copied.complete, copied.program) == (
        snap.summary,
        snap.complete,
        snap.program,
    )
    assert copied.tree != snap.tree  # different id keys: every id is translated
    assert not set(dst.index.pack_ids()) & set(opened(repos.source, PW_SRC).index.pack_ids())
    assert len(blobs_of(repos.dest, PW_DST, copied.id)) == len(expected)

    target = repos.tmp / "restored"
    restore(repos.dest, PW_DST, copied.id, target)
    assert describe(inside(target, repos.data)) == describe(repos.data)
    assert check_clean(repos.dest, PW_DST) == []


def test_translated_trees_keep_every_other_field(repos: Repos) -> None:
    snap = backup(repos.source, repos.data)
    copy(repos.source, repos.dest)
    src, dst = opened(repos.source, PW_SRC), opened(repos.dest, PW_DST)
    (copied,) = dst.list_snapshots()
    src_nodes = dict(src.iter_tree(snap.tree))
    dst_nodes = dict(dst.iter_tree(copied.tree))
    assert src_nodes.keys() == dst_nodes.keys()
    for path, a in src_nodes.items():
        b = dst_nodes[path]
        ja, jb = a.to_json(), b.to_json()
        assert ja.pop("content", None) is not None or a.type != "file"
        jb.pop("content", None)
        ja.pop("subtree", None)
        jb.pop("subtree", None)
        assert ja == jb, path
        assert len(a.content) == len(b.content)
        for x, y in zip(a.content, b.content, strict=True):
            assert bytes(src.load_blob(x)) == bytes(dst.load_blob(y))
    # hard links, modes and symlinks survive as they were
    assert any(n.hardlink for n in dst_nodes.values())
    assert any(n.type == "symlink" for n in dst_nodes.values())


def test_rewrite_tree_keeps_unknown_fields() -> None:
    old, new = bytes(32), bytes([1]) * 32
    data = (
        b'{"nodes":[{"name":"f","type":"file","future":{"x":1},"content":["'
        + old.hex().encode()
        + b'"],"sha256":"ab"}]}'
    )
    out = rewrite_tree(data, {old: new})
    assert out == data.replace(old.hex().encode(), new.hex().encode())
    with pytest.raises(StackvaultError, match="not translated"):
        rewrite_tree(data, {})


def test_second_copy_copies_nothing(repos: Repos) -> None:
    snap = backup(repos.source, repos.data)
    first = copy(repos.source, repos.dest)
    before = objects(repos.dest)

    again = copy(repos.source, repos.dest)

    assert again.copied == []
    (skipped,) = again.skipped
    assert skipped.source.id == snap.id
    assert skipped.existing is not None
    assert first.copied[0].copy is not None
    assert skipped.existing.id == first.copied[0].copy.id
    assert again.totals().blobs_copied == 0
    assert objects(repos.dest) == before  # not even an index file


def test_copy_of_a_second_snapshot_transfers_only_new_data(repos: Repos) -> None:
    one = backup(repos.source, repos.data)
    copy(repos.source, repos.dest)
    change_tree(repos.data, seed=2)
    two = backup(repos.source, repos.data)
    blobs_one = blobs_of(repos.source, PW_SRC, one.id)
    blobs_two = blobs_of(repos.source, PW_SRC, two.id)
    new = {b: v for b, v in blobs_two.items() if b not in blobs_one}
    new_data = {b for b, (kind, _s) in new.items() if kind == BlobType.DATA}
    assert new_data and len(new) < len(blobs_two)

    counting = CountingStore(repos.source)
    result = copy(counting, repos.dest)

    assert [s.source.id for s in result.skipped] == [one.id]
    (outcome,) = result.copied
    assert outcome.source.id == two.id
    assert outcome.stats.blobs_copied == len(new)
    assert outcome.stats.bytes_copied == sum(size for _t, size in new.values())
    # Directories unchanged since the copied first snapshot are taken over whole, and the
    # first copy's blobs are known under their destination ids: only new data is read, even
    # though the two repositories' ids differ.
    assert outcome.stats.trees_reused > 0
    read = counting.data_blob_gets(opened(repos.source, PW_SRC))
    assert sorted(read) == sorted(new_data)

    dst = opened(repos.dest, PW_DST)
    copied = dst.find_snapshot("latest")
    assert copied.original == two.id
    assert copied.parent == dst.list_snapshots()[0].id  # the parent, translated
    target = repos.tmp / "restored"
    restore(repos.dest, PW_DST, copied.id, target)
    assert describe(inside(target, repos.data)) == describe(repos.data)
    check_clean(repos.dest, PW_DST)


def test_copying_two_snapshots_in_one_run_counts_shared_blobs_once(repos: Repos) -> None:
    one = backup(repos.source, repos.data)
    change_tree(repos.data, seed=3)
    two = backup(repos.source, repos.data)
    blobs_one = blobs_of(repos.source, PW_SRC, one.id)
    blobs_two = blobs_of(repos.source, PW_SRC, two.id)

    result = copy(repos.source, repos.dest)

    first, second = result.copied
    assert first.stats.blobs_copied == len(blobs_one)
    assert second.stats.blobs_copied == len(blobs_two.keys() - blobs_one.keys())
    total = blobs_one | blobs_two
    assert result.totals().blobs_copied == len(total)
    assert result.totals().bytes_copied == sum(size for _t, size in total.values())
    check_clean(repos.dest, PW_DST)


def test_selection_by_reference_host_and_tag(repos: Repos) -> None:
    a = backup(repos.source, repos.data, tags=["nightly"])
    b = backup(repos.source, repos.data, host="other", tags=["nightly", "db"])
    c = backup(repos.source, repos.data, host="other")
    src = opened(repos.source, PW_SRC)
    assert [s.id for s in select_snapshots(src)] == [a.id, b.id, c.id]
    assert [s.id for s in select_snapshots(src, ["latest"])] == [c.id]
    assert [s.id for s in select_snapshots(src, host="other")] == [b.id, c.id]
    assert [s.id for s in select_snapshots(src, tags=["nightly"])] == [a.id, b.id]
    assert [s.id for s in select_snapshots(src, ["latest"], tags=["nightly"])] == [b.id]
    assert [s.id for s in select_snapshots(src, [a.id[:8], a.id[:10]])] == [a.id]
    with pytest.raises(SnapshotNotFound):
        select_snapshots(src, [a.id[:8]], host="other")

    result = copy(repos.source, repos.dest, [b.id[:8]])
    assert [s.source.id for s in result.copied] == [b.id]
    # the other two have the same trees: nothing but snapshots is added for them
    before = {n for n in objects(repos.dest) if not n.startswith("snapshots/")}
    rest = copy(repos.source, repos.dest)
    assert [s.source.id for s in rest.copied] == [a.id, c.id]
    assert rest.totals().blobs_copied == 0
    assert {n for n in objects(repos.dest) if not n.startswith("snapshots/")} == before


def test_copy_back_and_along_a_chain_recognises_the_same_backup(
    repos: Repos, tmp_path: Path
) -> None:
    snap = backup(repos.source, repos.data)
    copy(repos.source, repos.dest)  # A -> B
    third = new_local(tmp_path / "third", PW_DST)
    # B -> C: the copy in C records A's id, not B's
    b_repo = opened(repos.dest, PW_DST)
    c_result = _copy_with(repos.dest, PW_DST, third, PW_DST)
    (outcome,) = c_result.copied
    assert outcome.copy is not None and outcome.copy.original == snap.id
    assert b_repo.list_snapshots()[0].original == snap.id
    # A -> C: already there (same origin); C -> A: A holds the original
    assert _copy_with(repos.source, PW_SRC, third, PW_DST).copied == []
    assert _copy_with(third, PW_DST, repos.source, PW_SRC).copied == []


def _copy_with(source: Store, src_pw: bytes, dest: Store, dst_pw: bytes) -> CopyResult:
    src, dst = opened(source, src_pw), opened(dest, dst_pw)
    return CopyJob(src, dst, workers=2).run(select_snapshots(src))


# --- shared id key -----------------------------------------------------------------------------


def test_shared_chunker_params_keep_ids_and_skip_downloads(repos: Repos, tmp_path: Path) -> None:
    src = opened(repos.source, PW_SRC)
    shared = LocalStore(tmp_path / "shared")
    shared.ensure_root()
    created = Repository.init(shared, PW_DST, kdf=FAST_KDF, pack_size=SMALL_PACK, ids_from=src)
    assert created.master.id_key == src.master.id_key
    assert created.master.chunker_seed == src.master.chunker_seed
    assert created.master.enc != src.master.enc  # its own encryption key
    assert created.config.chunker == src.config.chunker
    assert created.config.id != src.config.id

    one = backup(repos.source, repos.data)
    first = copy(repos.source, shared)
    assert first.shared_ids
    dst = opened(shared, PW_DST)
    (copied,) = dst.list_snapshots()
    assert copied.tree == one.tree  # trees keep their ids
    assert first.totals().blobs_copied == len(blobs_of(repos.source, PW_SRC, one.id))

    # The same data again from another host (no earlier copy to lean on) plus one new file:
    # with a shared id key, blobs the destination lists are not even read from the source.
    change_tree(repos.data, seed=4)
    two = backup(repos.source, repos.data, host="elsewhere")
    blobs_one = blobs_of(repos.source, PW_SRC, one.id)
    blobs_two = blobs_of(repos.source, PW_SRC, two.id)
    new = {b for b in blobs_two if b not in blobs_one}
    new_data = {b for b in new if blobs_two[b][0] == BlobType.DATA}
    assert new_data

    counting = CountingStore(repos.source)
    second = copy(counting, shared)
    (outcome,) = second.copied
    assert outcome.stats.blobs_copied == len(new)
    assert outcome.stats.trees_reused == 0
    assert sorted(counting.data_blob_gets(opened(repos.source, PW_SRC))) == sorted(new_data)
    assert opened(shared, PW_DST).find_snapshot("latest").tree == two.tree

    # Different id keys, the same two snapshots: no earlier copy of host "elsewhere", so
    # every data blob of the second is read (to learn its destination id), none stored twice.
    copy(repos.source, repos.dest, [one.id])
    counting = CountingStore(repos.source)
    cross = copy(counting, repos.dest, [two.id])
    assert cross.copied[0].stats.blobs_copied == len(new)
    all_data = {b for b, (kind, _s) in blobs_two.items() if kind == BlobType.DATA}
    assert set(counting.data_blob_gets(opened(repos.source, PW_SRC))) == all_data

    for store, password in ((shared, PW_DST), (repos.dest, PW_DST)):
        target = tmp_path / f"restored-{store.root.name}"
        restore(store, password, "latest", target)
        assert describe(inside(target, repos.data)) == describe(repos.data)
        check_clean(store, password)


# --- failures ---------------------------------------------------------------------------------


def memory_repo(password: bytes) -> MemoryStore:
    store = MemoryStore()
    Repository.init(store, password, kdf=FAST_KDF, chunker=SMALL_CHUNKS, pack_size=SMALL_PACK)
    return store


def test_copy_interrupted_by_a_crash_leaves_a_consistent_destination(
    repos: Repos, tmp_path: Path
) -> None:
    backup(repos.source, repos.data)
    change_tree(repos.data, seed=5)
    backup(repos.source, repos.data)
    expected = describe(repos.data)

    # A clean run, to learn how many puts a copy makes.
    probe = FaultyStore(memory_repo(PW_DST))
    copy(repos.source, probe)
    total = probe.calls["put"]
    assert total > 8

    crash_points = sorted({1, 2, 3, total // 3, total // 2, total - 3, total - 2, total - 1})
    for point in crash_points:
        dest = FaultyStore(memory_repo(PW_DST))
        dest.crash_after_puts(point)
        with pytest.raises((SimulatedCrash, StackvaultError)):
            copy(repos.source, dest)
        dest.clear()
        # Only complete snapshots: each restores fully, and check passes.
        dst = opened(dest, PW_DST)
        for snap in dst.list_snapshots():
            restore(dest, PW_DST, snap.id, tmp_path / f"partial-{point}-{snap.short_id}")
        check_clean(dest, PW_DST)

        result = copy(repos.source, dest)  # a later copy completes
        assert len(result.copied) + len(result.skipped) == 2
        target = tmp_path / f"restored-{point}"
        restore(dest, PW_DST, "latest", target)
        assert describe(inside(target, repos.data)) == expected, point
        check_clean(dest, PW_DST)
        assert copy(repos.source, dest).copied == []


class StopAfter(NullProgress):
    """Stops the job once ``limit`` bytes were transferred (like Ctrl-C in the middle)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.job: CopyJob | None = None

    def advance(self, *, files: int = 0, bytes_: int = 0) -> None:
        super().advance(files=files, bytes_=bytes_)
        if self.bytes >= self.limit and self.job is not None:
            self.job.stop()


def test_interrupted_copy_saves_no_snapshot_and_resumes(repos: Repos) -> None:
    snap = backup(repos.source, repos.data)
    with both(repos.source, repos.dest) as (src, dst):
        progress = StopAfter(1024 * 1024)
        job = CopyJob(src, dst, progress=progress, workers=2)
        progress.job = job
        with pytest.raises(Interrupted, match="0 snapshot"):
            job.run(select_snapshots(src))
    assert opened(repos.dest, PW_DST).list_snapshots() == []
    assert list(repos.dest.list("locks/")) == []
    check_clean(repos.dest, PW_DST)
    # what was stored is reused: the resumed copy transfers less than everything
    result = copy(repos.source, repos.dest)
    (outcome,) = result.copied
    assert outcome.stats.blobs_present > 0
    assert outcome.stats.blobs_copied + outcome.stats.blobs_present == len(
        blobs_of(repos.source, PW_SRC, snap.id)
    )
    check_clean(repos.dest, PW_DST)


def test_damaged_source_blob_fails_with_the_snapshot_named(repos: Repos) -> None:
    snap = backup(repos.source, repos.data)
    src = opened(repos.source, PW_SRC)
    big = max(src.index.items(), key=lambda item: item[1].raw_length)[1]
    path = repos.source.root / pack_name(big.pack_id)
    raw = bytearray(path.read_bytes())
    raw[big.offset + 20] ^= 0xFF
    path.chmod(0o600)
    path.write_bytes(bytes(raw))
    with pytest.raises(StackvaultError, match=f"cannot copy snapshot {snap.short_id}") as info:
        copy(repos.source, repos.dest)
    assert info.value.exit_code == 20
    assert opened(repos.dest, PW_DST).list_snapshots() == []
    check_clean(repos.dest, PW_DST)
