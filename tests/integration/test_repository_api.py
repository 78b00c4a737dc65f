"""The `Repository` API over real stores (MemoryStore and LocalStore on disk): blobs, dedup,
snapshots, keys and locks, including stale locks of really dead processes."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stackvault.crypto.kdf import KdfParams
from stackvault.errors import (
    EXIT_LOCKED,
    EXIT_NO_REPOSITORY,
    EXIT_WRONG_PASSWORD,
    IntegrityError,
    RepositoryExists,
    RepositoryLocked,
    RepositoryNotFound,
    SnapshotNotFound,
    WrongPassword,
)
from stackvault.repo.blob import BlobType
from stackvault.repo.config import DEFAULT_PACK_SIZE
from stackvault.repo.lock import LOCK_AAD, Holder, LockInfo, list_locks
from stackvault.repo.pack import pack_name, read_pack_header, storage_id
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.store.base import Store
from stackvault.store.local import LocalStore
from stackvault.store.memory import MemoryStore
from support.aging import backdate

PW = b"correct horse battery staple"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
T0 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    local = LocalStore(tmp_path / "repo")
    local.ensure_root()
    return local


def init(store: Store, **kw: object) -> Repository:
    return Repository.init(store, PW, kdf=FAST_KDF, **kw)  # type: ignore[arg-type]


def reopen(store: Store, notices: list[str] | None = None) -> Repository:
    sink = notices.append if notices is not None else (lambda _m: None)
    repo = Repository.open(store, PW, notice=sink)
    repo.load_index()
    return repo


def snap(tree: bytes, minutes: int = 0, **kw: object) -> Snapshot:
    return Snapshot(
        time=T0 + timedelta(minutes=minutes),
        tree=tree,
        paths=["/srv/app"],
        hostname="box",
        username="ops",
        **kw,  # type: ignore[arg-type]
    )


# --- opening ----------------------------------------------------------------------------------


def test_open_errors(store: Store) -> None:
    with pytest.raises(RepositoryNotFound) as nf:
        Repository.open(store, PW)
    assert nf.value.exit_code == EXIT_NO_REPOSITORY
    init(store)
    with pytest.raises(RepositoryExists):
        init(store)
    with pytest.raises(WrongPassword) as wp:
        Repository.open(store, b"wrong")
    assert wp.value.exit_code == EXIT_WRONG_PASSWORD
    repo = Repository.open(store, PW)
    assert repo.config.pack_size == DEFAULT_PACK_SIZE


def test_second_key_opens_the_same_master_key(store: Store) -> None:
    repo = init(store)
    repo.add_key(b"second password", FAST_KDF)
    other = Repository.open(store, b"second password")
    assert other.master == repo.master
    assert other.key_id != repo.key_id
    assert len(repo.list_keys()) == 2


def test_damaged_key_file_is_skipped_and_the_good_key_still_opens(store: Store) -> None:
    """A key file with impossible KDF parameters, sorted before the good one: opening must
    skip it with a notice and use the next key (the FORMAT promises several keys each open
    the repository independently)."""
    repo = init(store)
    good = store.get(f"keys/{repo.key_id}")
    doc = json.loads(good)
    doc["kdf_params"] = {"memory_kib": 0, "iterations": 1, "lanes": 1}
    store.put("keys/" + "0" * 64, json.dumps(doc).encode())
    notices: list[str] = []
    opened = Repository.open(store, PW, notice=notices.append)
    assert opened.master == repo.master
    assert any("00000000" in n for n in notices), notices


# --- blobs ------------------------------------------------------------------------------------


def test_blobs_survive_reopening(store: Store) -> None:
    repo = init(store, pack_size=512 * 1024)
    rnd = random.Random(11)
    payloads = [
        b"",
        b"tiny",
        rnd.randbytes(1000),
        b"compressible " * 20_000,  # > 64 KiB: sealed on the worker pool
        rnd.randbytes(300 * 1024),
        rnd.randbytes(700 * 1024),  # larger than a pack on its own
    ]
    tree_payload = b'{"nodes":[]}'
    writer = repo.writer()
    ids = []
    for p in payloads:
        blob_id, added = writer.save(BlobType.DATA, p)
        assert added
        assert blob_id == repo.master.blob_id(p)
        ids.append(blob_id)
    tree_id, _ = writer.save(BlobType.TREE, tree_payload)
    writer.flush()
    writer.close()
    assert writer.stats.blobs_added == len(payloads) + 1
    assert writer.stats.index_files_written >= 1
    assert len(repo.index_names()) >= 1

    again = reopen(store)
    assert len(again.index) == len(payloads) + 1
    for blob_id, p in zip(ids, payloads, strict=True):
        assert bytes(again.load_blob(blob_id)) == p
        entry = again.index.get(blob_id)
        assert entry is not None and entry.type == BlobType.DATA and entry.raw_length == len(p)
    assert bytes(again.load_blob(tree_id)) == tree_payload
    assert again.load_tree(tree_id) == []

    # Every pack is self-describing, named by its hash, and holds blobs of one type only.
    for pack_id, blobs in again.index.packs().items():
        data = store.get(pack_name(pack_id))
        assert storage_id(data) == pack_id
        header = read_pack_header(again.envelope, data, len(data))
        assert {(b.blob_id, b.offset, b.length) for b in blobs} == {
            (h.blob_id, h.offset, h.length) for h in header
        }
        assert len({h.type for h in header}) == 1
    tree_entry = again.index.get(tree_id)
    assert tree_entry is not None
    assert all(
        again.index.get(i).pack_id != tree_entry.pack_id  # type: ignore[union-attr]
        for i in ids
    )
    # Index files are named by their hash too.
    for name in again.index_names():
        assert storage_id(store.get(name)).hex() == name.removeprefix("index/")

    with pytest.raises(IntegrityError, match="not in the index"):
        again.load_blob(b"\x01" * 32)


def test_dedup(store: Store) -> None:
    repo = init(store)
    data = os.urandom(200_000)
    writer = repo.writer()
    first = writer.save(BlobType.DATA, data)
    second = writer.save(BlobType.DATA, data)  # before any flush: reserved, not stored twice
    assert first == (repo.master.blob_id(data), True)
    assert second == (first[0], False)
    writer.flush()
    assert writer.save(BlobType.DATA, bytearray(data)) == (first[0], False)
    writer.close()
    assert writer.stats.blobs_added == 1
    stored = sum(i.size for i in store.list("data/"))
    assert 200_000 < stored < 2 * 200_000

    again = reopen(store)
    w2 = again.writer()
    assert w2.save(BlobType.DATA, data) == (first[0], False)
    w2.flush()
    w2.close()
    assert w2.stats.blobs_added == 0
    assert sum(i.size for i in store.list("data/")) == stored
    assert len(again.index) == 1
    assert bytes(reopen(store).load_blob(first[0])) == data


def test_same_data_in_two_repositories_gets_different_ids() -> None:
    a, b = init(MemoryStore()), init(MemoryStore())
    data = b"same content"
    wa, wb = a.writer(), b.writer()
    ida, _ = wa.save(BlobType.DATA, data)
    idb, _ = wb.save(BlobType.DATA, data)
    wa.close()
    wb.close()
    assert ida != idb


def test_many_tiny_blobs_in_one_pack() -> None:
    """360,000 distinct 20-byte blobs (a directory of tiny files): the pack's header outgrows
    the margin the writer reserves in its buffer. The backup must still store and index them.
    Runs in a child process because the failure seen was a SIGBUS."""
    script = textwrap.dedent(
        """
        import os
        from stackvault.crypto.kdf import KdfParams
        from stackvault.repo.blob import BlobType
        from stackvault.repo.repository import Repository
        from stackvault.store.memory import MemoryStore

        store = MemoryStore()
        repo = Repository.init(store, b"pw", kdf=KdfParams(memory_kib=8192, iterations=1))
        writer = repo.writer()
        ids = [writer.save(BlobType.DATA, os.urandom(20))[0] for _ in range(360_000)]
        writer.flush()
        writer.close()
        again = Repository.open(store, b"pw")
        again.load_index()
        assert len(again.index) == len(ids)
        assert len(bytes(again.load_blob(ids[-1]))) == 20
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        f"exit {proc.returncode} (negative = killed by signal {-proc.returncode}); "
        f"stderr: {proc.stderr[-2000:]}"
    )


# --- snapshots --------------------------------------------------------------------------------


def save_tree(repo: Repository, payload: bytes = b'{"nodes":[]}') -> bytes:
    writer = repo.writer()
    tree_id, _ = writer.save(BlobType.TREE, payload)
    writer.flush()
    writer.close()
    return tree_id


def test_snapshot_round_trip(store: Store) -> None:
    repo = init(store)
    tree = save_tree(repo)
    s = snap(
        tree,
        tags=["nightly", "db"],
        parent="ab" * 32,
        complete=False,
        problems=[{"path": "/srv/app/x", "message": "permission denied"}],
        summary={"files": 3, "bytes": 12},
    )
    sid = repo.save_snapshot(s)
    assert s.id == sid and len(sid) == 64
    assert storage_id(store.get(f"snapshots/{sid}")).hex() == sid
    assert s.program.startswith("stackvault ")

    loaded = reopen(store).list_snapshots()
    assert len(loaded) == 1
    got = loaded[0]
    assert got.id == sid
    assert (got.time, got.tree, got.paths, got.hostname, got.username) == (
        T0,
        tree,
        ["/srv/app"],
        "box",
        "ops",
    )
    assert got.tags == ["nightly", "db"] and got.parent == "ab" * 32
    assert got.complete is False and got.problems == s.problems
    assert got.summary == {"files": 3, "bytes": 12}


def test_snapshot_listing_and_lookup(store: Store) -> None:
    repo = init(store)
    tree = save_tree(repo)
    with pytest.raises(SnapshotNotFound):
        repo.find_snapshot("latest")
    # Saved out of time order: listing sorts by time.
    ids = {m: repo.save_snapshot(snap(tree, minutes=m)) for m in (5, 1, 9, 3)}
    repo = reopen(store)
    listed = repo.list_snapshots()
    assert [s.id for s in listed] == [ids[1], ids[3], ids[5], ids[9]]
    assert repo.find_snapshot("latest").id == ids[9]
    for sid in ids.values():
        assert repo.find_snapshot(sid).id == sid
        assert repo.find_snapshot(sid[:8]).id == sid
    for bad in ("", "xyz", "LATEST", "ABCDEF", "g" + ids[9][1:]):
        with pytest.raises(SnapshotNotFound):
            repo.find_snapshot(bad)
    missing = next(
        p
        for p in (f"{i:x}" * 8 for i in range(16))
        if not any(s.startswith(p) for s in ids.values())
    )
    with pytest.raises(SnapshotNotFound, match="no snapshot matches"):
        repo.find_snapshot(missing)

    repo.remove_snapshot(ids[9])
    assert reopen(store).find_snapshot("latest").id == ids[5]


def test_ambiguous_prefix(store: Store) -> None:
    repo = init(store)
    tree = save_tree(repo)
    # 17 snapshots: two of them must share their first hex digit.
    ids = [repo.save_snapshot(snap(tree, minutes=m)) for m in range(17)]
    by_digit: dict[str, list[str]] = {}
    for sid in ids:
        by_digit.setdefault(sid[0], []).append(sid)
    digit, group = max(by_digit.items(), key=lambda kv: len(kv[1]))
    assert len(group) >= 2
    with pytest.raises(SnapshotNotFound, match=f"matches {len(group)} snapshots"):
        repo.find_snapshot(digit)
    # Enough digits resolve it.
    for sid in group:
        assert repo.find_snapshot(sid[:12]).id == sid


# --- locks ------------------------------------------------------------------------------------


def write_lock(
    repo: Repository,
    *,
    host: str,
    pid: int,
    exclusive: bool,
    refreshed: datetime,
    lease_s: int = 1800,
    operation: str = "backup",
    holder: Holder | None = None,
) -> str:
    """A lock object as another process would write it; ``refreshed`` also becomes the
    object's modification time in the store (the clock locks are judged by)."""
    info = LockInfo(
        id="",
        host=host,
        pid=pid,
        boot_id=holder.boot_id if holder else "",
        pid_ns=holder.pid_ns if holder else "",
        username="someone",
        exclusive=exclusive,
        operation=operation,
        created=refreshed - timedelta(minutes=1),
        refreshed=refreshed,
        lease_s=lease_s,
    )
    name = f"locks/{secrets.token_hex(16)}"
    repo.store.put(name, repo.envelope.seal(json.dumps(info.to_json()).encode(), LOCK_AAD))
    backdate(repo.store, name, refreshed)
    return name


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def lock_names(store: Store) -> list[str]:
    return sorted(i.name for i in store.list("locks/"))


def test_shared_locks_coexist_and_are_released(store: Store) -> None:
    repo = init(store)
    other = Repository.open(store, PW)
    with repo.lock(exclusive=False, operation="backup"):
        with other.lock(exclusive=False, operation="restore"):
            assert len(lock_names(store)) == 2
            held = {lk.operation for lk in list_locks(store, repo.envelope, lambda _m: None)}
            assert held == {"backup", "restore"}
        assert len(lock_names(store)) == 1
    assert lock_names(store) == []


def test_exclusive_lock_conflicts(store: Store) -> None:
    repo = init(store)
    other = Repository.open(store, PW)
    with repo.lock(exclusive=False, operation="backup"):
        before = lock_names(store)
        with pytest.raises(RepositoryLocked) as info:
            other.lock(exclusive=True, operation="prune").acquire()
        assert info.value.exit_code == EXIT_LOCKED
        msg = str(info.value)
        assert "'backup'" in msg and f"PID {os.getpid()}" in msg and socket.gethostname() in msg
        assert lock_names(store) == before  # the failed attempt left nothing behind
    with repo.lock(exclusive=True, operation="prune"):
        with pytest.raises(RepositoryLocked, match="'prune'"):
            other.lock(exclusive=False, operation="backup").acquire()
        with pytest.raises(RepositoryLocked, match="exclusively"):
            other.lock(exclusive=True, operation="forget").acquire()
    assert lock_names(store) == []


def test_lock_refresh_replaces_the_lock_object(store: Store) -> None:
    repo = init(store)
    lock = repo.lock(exclusive=True, operation="prune")
    lock.acquire()
    try:
        first = lock_names(store)
        lock.refresh()
        second = lock_names(store)
        assert len(first) == len(second) == 1 and first != second
    finally:
        lock.release()
    lock.release()  # twice is fine
    assert lock_names(store) == []


def test_lock_of_a_dead_process_on_this_host_is_stale(store: Store) -> None:
    repo = init(store)
    pid = dead_pid()
    name = write_lock(
        repo,
        host=socket.gethostname(),
        pid=pid,
        exclusive=True,
        refreshed=datetime.now(UTC),
        holder=Holder.current(),
    )
    notices: list[str] = []
    again = Repository.open(store, PW, notice=notices.append)
    with again.lock(exclusive=True, operation="prune"):
        assert name not in lock_names(store)
        assert len(lock_names(store)) == 1
    assert any("stale" in n and f"PID {pid}" in n for n in notices), notices


def test_lock_of_a_sigkilled_process_is_stale(tmp_path: Path) -> None:
    """A real process takes a lock and is killed with SIGKILL: it cannot clean up."""
    store = LocalStore(tmp_path / "repo")
    store.ensure_root()
    init(store)
    script = textwrap.dedent(
        f"""
        import sys, time
        from stackvault.repo.repository import Repository
        from stackvault.store.local import LocalStore
        repo = Repository.open(LocalStore({str(store.root)!r}), {PW!r})
        repo.lock(exclusive=True, operation="holder").acquire()
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        notices: list[str] = []
        repo = Repository.open(store, PW, notice=notices.append)
        with pytest.raises(RepositoryLocked, match=f"'holder'.*PID {proc.pid}"):
            repo.lock(exclusive=False, operation="backup").acquire()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert len(lock_names(store)) == 1  # the dead process's lock is still there
        with repo.lock(exclusive=True, operation="prune"):
            pass
        assert any("stale" in n and f"PID {proc.pid}" in n for n in notices), notices
        assert lock_names(store) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_expired_lease_from_another_host_is_stale(store: Store) -> None:
    repo = init(store)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    name = write_lock(repo, host="elsewhere.example", pid=1, exclusive=True, refreshed=long_ago)
    notices: list[str] = []
    again = Repository.open(store, PW, notice=notices.append)
    with again.lock(exclusive=True, operation="prune"):
        assert name not in lock_names(store)
    assert any(
        "stale" in n and "elsewhere.example" in n and "not refreshed" in n for n in notices
    ), notices


def test_live_lock_from_another_host_blocks(store: Store) -> None:
    repo = init(store)
    # Its PID does not exist here, but PIDs of another host mean nothing on this one.
    pid = dead_pid()
    recent = datetime.now(UTC) - timedelta(minutes=5)
    write_lock(
        repo,
        host="elsewhere.example",
        pid=pid,
        exclusive=False,
        refreshed=recent,
        operation="nightly-backup",
    )
    with pytest.raises(RepositoryLocked) as info:
        repo.lock(exclusive=True, operation="prune").acquire()
    assert "elsewhere.example" in str(info.value) and "'nightly-backup'" in str(info.value)
    # A shared lock from there does not block another shared lock here.
    with repo.lock(exclusive=False, operation="backup"):
        assert len(lock_names(store)) == 2
    # An exclusive one from there blocks everything.
    write_lock(repo, host="elsewhere.example", pid=pid, exclusive=True, refreshed=recent)
    with pytest.raises(RepositoryLocked, match="exclusively"):
        repo.lock(exclusive=False, operation="backup").acquire()
    assert len(lock_names(store)) == 2


def test_unreadable_lock_is_ignored_with_a_notice(store: Store) -> None:
    init(store)
    store.put("locks/" + "ab" * 16, b"garbage that is not an envelope")
    notices: list[str] = []
    again = Repository.open(store, PW, notice=notices.append)
    with again.lock(exclusive=True, operation="prune"):
        pass
    assert any("unreadable lock" in n for n in notices), notices
