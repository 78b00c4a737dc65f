"""Prune must not destroy a live backup's data, even when it misjudges the backup's lock.

Each case is one way the judgement used to go wrong — a holder in another PID namespace with
the same hostname, clocks 31 minutes apart, a zombie holder — run with real processes, real
namespaces (``unshare --pid``) and a repository on disk; and the defence in depth behind it:
prune keeps unused packs younger than its safety margin, measured by the store's clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import PASSWORD, Result
from stackvault.clock import FrozenClock
from stackvault.errors import RepositoryLocked
from stackvault.repo.blob import BlobType
from stackvault.repo.lock import Holder, process_gone
from stackvault.repo.pack import pack_name
from stackvault.repo.prune import execute_prune, plan_prune
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, encode_tree
from stackvault.store.local import LocalStore
from support.aging import backdate

Cli = Callable[..., Result]
PW = PASSWORD.encode()


def lock_names(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "locks").iterdir()) if (repo / "locks").exists() else []


@pytest.fixture
def store(initialised: Path) -> LocalStore:
    return LocalStore(initialised)


def holder_script(repo: Path, *, exit_after_lock: bool = False) -> str:
    """Python that takes a shared lock as a backup does and says so; then sleeps, or exits
    at once without releasing it (a crash)."""
    end = "os._exit(0)" if exit_after_lock else "time.sleep(120)"
    return textwrap.dedent(
        f"""
        import os, sys, time
        from stackvault.repo.repository import Repository
        from stackvault.store.local import LocalStore
        repo = Repository.open(LocalStore({str(repo)!r}), {PASSWORD!r}.encode())
        repo.lock(exclusive=False, operation="backup").acquire()
        print("locked", os.getpid(), flush=True)
        {end}
        """
    )


def free_host_pid() -> int:
    """A PID that no process has on this host now (a namespace's process will take it)."""
    for pid in range(400, 30000, 37):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise AssertionError("no free pid found")


@pytest.fixture
def namespaced_holder(initialised: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """A backup holding a lock inside a new PID namespace (as in a container started with
    the host's name), whose PID there does not exist on the host."""
    target = free_host_pid()
    script = textwrap.dedent(
        f"""
        import os, sys
        # PIDs in a new namespace count up from 1: burn them until the next is {target}.
        while True:
            child = os.fork()
            if child == 0:
                os._exit(0)
            os.waitpid(child, 0)
            if child >= {target} - 1:
                break
        if os.fork() == 0:
            exec(compile(sys.argv[1], "holder", "exec"))
        os.wait()
        """
    )
    proc = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-c",
            script,
            holder_script(initialised),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == ["locked"], line
        yield int(line[1]), proc
    finally:
        proc.kill()
        proc.wait()


def test_lock_held_in_another_pid_namespace_with_the_same_hostname_is_live(
    initialised: Path, namespaced_holder: tuple[int, subprocess.Popen[str]], cli: Cli
) -> None:
    pid, _proc = namespaced_holder
    assert not os.path.exists(f"/proc/{pid}"), "the namespace's PID exists here too"
    (lock,) = lock_names(initialised)
    repo = Repository.open(LocalStore(initialised), PW)
    with pytest.raises(RepositoryLocked, match=f"'backup' \\(PID {pid} on"):
        repo.lock(exclusive=True, operation="prune").acquire()
    res = cli("prune")
    assert res.code != 0 and "locked" in res.err, res.out + res.err
    assert lock_names(initialised) == [lock]


def test_clock_31_minutes_behind_does_not_make_a_live_lock_stale(store: LocalStore) -> None:
    """The backup host's clock is 31 minutes behind the pruning host's: its lock's own
    times look older than the lease, but the store wrote the object just now."""
    behind = FrozenClock(datetime.now(UTC) - timedelta(minutes=31))
    backup = Repository.open(store, PW, clock=behind)
    with backup.lock(exclusive=False, operation="backup"):
        pruner = Repository.open(store, PW)
        with pytest.raises(RepositoryLocked, match="'backup'"):
            pruner.lock(exclusive=True, operation="prune").acquire()


def test_a_lock_the_store_has_not_seen_refreshed_for_the_lease_is_stale(
    store: LocalStore,
) -> None:
    """The reverse: a holder whose clock runs ahead keeps writing "refreshed: now", but the
    store's time says the object is older than the lease — it is stale."""
    ahead = FrozenClock(datetime.now(UTC) + timedelta(hours=2))
    gone = Repository.open(store, PW, clock=ahead)
    lock = gone.lock(exclusive=True, operation="backup")
    lock.acquire()
    lock._stop.set()  # the holder hangs: it will refresh no more
    (name,) = lock_names(store.root)
    backdate(store, f"locks/{name}", datetime.now(UTC) - timedelta(minutes=31))
    notices: list[str] = []
    other = Repository.open(store, PW, notice=notices.append)
    other.lock_lease_s = 1800
    with other.lock(exclusive=True, operation="prune"):
        pass
    # Judged by the store, not by the holder's PID: this process is alive and the same.
    assert any("by the store's clock" in n for n in notices), notices


def test_zombie_holder_is_dead(initialised: Path) -> None:
    """A holder that exited without releasing its lock, not yet reaped by its parent."""
    proc = subprocess.Popen(
        [sys.executable, "-c", holder_script(initialised, exit_after_lock=True)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline().split()[1])
        deadline = time.monotonic() + 30
        while b") Z" not in Path(f"/proc/{pid}/stat").read_bytes():
            assert time.monotonic() < deadline, "the holder never became a zombie"
            time.sleep(0.01)
        assert process_gone(pid)
        notices: list[str] = []
        repo = Repository.open(LocalStore(initialised), PW, notice=notices.append)
        with repo.lock(exclusive=True, operation="prune"):
            pass
        assert any(f"process {pid} on this host no longer exists" in n for n in notices)
    finally:
        proc.wait()


def test_holder_identity_names_namespace_and_boot() -> None:
    me = Holder.current()
    assert me.boot_id and me.pid_ns.startswith("pid:[")
    assert me.same_pid_space(me)
    assert not me.same_pid_space(Holder(me.host, me.pid, me.boot_id, "pid:[1]"))
    assert not me.same_pid_space(Holder(me.host, me.pid, "another-boot", me.pid_ns))
    assert not Holder(me.host, 1).same_pid_space(Holder(me.host, 1))


# --- prune's safety margin -----------------------------------------------------------------


def write_in_flight(repo: Repository, seed: int) -> tuple[list[bytes], list[bytes]]:
    """What a running backup has done before its snapshot: packs stored and indexed (the
    periodic index), nothing referencing them yet. Returns (blob ids, their data)."""
    rnd = __import__("random").Random(seed)
    writer = repo.writer()
    chunks = [rnd.randbytes(300_000) for _ in range(6)]
    ids = [writer.save(BlobType.DATA, c)[0] for c in chunks]
    writer.flush()
    writer.close()
    return ids, chunks


def finish_backup(repo: Repository, ids: list[bytes], size: int) -> str:
    """The backup saves its snapshot, referencing what it wrote before prune ran."""
    writer = repo.writer()
    node = Node(name="big", type="file", size=size, content=ids)
    tree_id, _ = writer.save(BlobType.TREE, encode_tree([node]))
    writer.flush()
    writer.close()
    snap = Snapshot(
        time=datetime.now(UTC), tree=tree_id, paths=["/in-flight"], hostname="h", username="u"
    )
    return repo.save_snapshot(snap)


def test_prune_keeps_young_unused_packs_of_a_backup_it_did_not_see(
    initialised: Path, cli: Cli, tmp_path: Path
) -> None:
    """A backup running without a lock prune can see (its lock misjudged, or none): prune
    keeps the packs it wrote within the safety margin, and the backup's snapshot is whole."""
    store = LocalStore(initialised)
    backup = Repository.open(store, PW)
    backup.load_index()
    ids, chunks = write_in_flight(backup, 1)
    packs = sorted(p for p in (initialised / "data").rglob("*") if p.is_file())
    assert packs

    res = cli("--json", "prune")
    assert res.code == 0, res.out + res.err
    doc = res.json()
    assert doc["packs_deleted"] == 0 and doc["packs_kept_young"] == len(packs)
    assert doc["safety_margin_s"] == 3600
    assert all(p.exists() for p in packs)

    snap_id = finish_backup(backup, ids, sum(len(c) for c in chunks))
    res = cli("check", "--read-data")
    assert res.code == 0, res.out + res.err
    res = cli("restore", snap_id[:12], "--target", tmp_path / "r")
    assert res.code == 0, res.out + res.err
    assert (tmp_path / "r" / "big").read_bytes() == b"".join(chunks)

    # Control: the same situation with no margin loses the in-flight packs.
    again = Repository.open(store, PW)
    again.load_index()
    more, _ = write_in_flight(again, 2)
    plan = plan_prune(again, safety_margin=timedelta(0))
    assert {again.index_entry(b).pack_id for b in more} <= set(plan.delete_packs)


def test_prune_keeps_a_young_unindexed_pack_and_deletes_an_old_unused_one(
    initialised: Path,
) -> None:
    store = LocalStore(initialised)
    repo = Repository.open(store, PW)
    repo.load_index()
    ids, _ = write_in_flight(repo, 3)
    pack_names = sorted({pack_name(repo.index_entry(b).pack_id) for b in ids})
    for index_file in (initialised / "index").iterdir():
        index_file.unlink()  # the backup was killed before its index: packs unindexed
    fresh = Repository.open(store, PW)
    fresh.load_index()
    plan = plan_prune(fresh)
    assert sorted(plan.young_packs) == pack_names and plan.unindexed_packs == []
    execute_prune(fresh, plan)
    assert all(store.exists(n) for n in pack_names)

    # Two hours later (by the store's clock) they are old, unused and unindexed: their
    # headers are read and they go, their bytes reported.
    for name in pack_names:
        backdate(store, name, datetime.now(UTC) - timedelta(hours=2))
    plan = plan_prune(fresh)
    assert sorted(plan.unindexed_packs) == pack_names
    assert plan.bytes_unindexed == sum(store.stat(n).size for n in pack_names)
    execute_prune(fresh, plan)
    assert not any(store.exists(n) for n in pack_names)


def test_prune_measures_age_against_its_own_lock_in_store_time(initialised: Path) -> None:
    """``now`` for the margin is the store's time of prune's lock, whatever prune's clock."""
    store = LocalStore(initialised)
    far_ahead = FrozenClock(datetime.now(UTC) + timedelta(days=3))
    repo = Repository.open(store, PW, clock=far_ahead)
    repo.load_index()
    ids, _ = write_in_flight(repo, 4)
    with repo.lock(exclusive=True, operation="prune") as held:
        assert held.store_time is not None
        assert abs(held.store_time - datetime.now(UTC)) < timedelta(minutes=1)
        plan = plan_prune(repo, now=held.store_time)
    assert {pack_name(repo.index_entry(b).pack_id) for b in ids} <= set(plan.young_packs)
    assert not plan.delete_packs
    # By the local clock alone the packs would look three days old.
    assert plan_prune(repo).delete_packs
