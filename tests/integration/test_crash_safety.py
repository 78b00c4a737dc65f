"""Crash safety: real kill -9 of backup processes, injected store crashes during backup and
prune (FaultyStore over a MemoryStore), Ctrl-C / SIGTERM of running backups, and a full disk.

The promise (README, FORMAT.md §10): packs, then index, then snapshot, so that at any moment of a
crash `check` passes (unreferenced packs are only notices), the next run succeeds and reuses what
was stored, and every kept snapshot stays restorable while prune runs.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import FAST_INIT, PASSWORD, Result, describe, inside
from stackvault.chunking.cdc import ChunkerParams
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.restore import FileRestoreOptions, RestoreJob
from stackvault.errors import StackvaultError
from stackvault.repo.check import Checker
from stackvault.repo.index import Index, decode_index
from stackvault.repo.prune import execute_prune, plan_prune
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.writer import INDEX_EVERY_PACKS
from stackvault.store.base import Store
from stackvault.store.faulty import FaultyStore, SimulatedCrash
from stackvault.store.memory import MemoryStore

Cli = Callable[..., Result]
MIB = 1024 * 1024
PW = PASSWORD.encode()
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
# Small chunks and packs: a few MiB of input make many packs, so crashes land between them.
SMALL_CHUNKS = ChunkerParams(min=16 * 1024, avg=64 * 1024, max=256 * 1024)
SMALL_PACK = 512 * 1024
SEED = int(os.environ.get("STACKVAULT_TEST_SEED", "20260417"))


# --- helpers -----------------------------------------------------------------------------------


def objects(repo: Path, kind: str) -> list[Path]:
    base = repo / kind
    if not base.is_dir():
        return []
    return [p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")]


ALLOWED_NOTICE_MARKERS = ("is not referenced by the index", "removed stale lock of PID")


def assert_check_clean(res: Result) -> list[str]:
    """`check` passed; stderr holds only notices about unreferenced packs or stale locks."""
    assert res.code == 0, res.out + res.err
    assert "no errors were found" in res.out, res.out
    lines = [line for line in res.err.splitlines() if line.strip()]
    for line in lines:
        assert any(m in line for m in ALLOWED_NOTICE_MARKERS), f"unexpected output: {line!r}"
    return lines


def memory_clone(store: MemoryStore) -> MemoryStore:
    copy = MemoryStore()
    for info in store.list(""):
        copy.put(info.name, store.get(info.name))
    return copy


def write_tree(root: Path, rnd: random.Random, *, scale: int = 1) -> None:
    """A mixed tree: random and compressible files, small files, a symlink, odd modes."""
    (root / "rand").mkdir(parents=True, exist_ok=True)
    (root / "text").mkdir(exist_ok=True)
    (root / "small" / "deeper").mkdir(parents=True, exist_ok=True)
    (root / "empty-dir").mkdir(exist_ok=True)
    for i in range(3):
        (root / "rand" / f"r{i}.bin").write_bytes(rnd.randbytes(scale * (i + 1) * 300 * 1024))
    words = [rnd.randbytes(6).hex().encode() for _ in range(500)]
    for i in range(2):
        lines = (
            b"%08d %s %s\n" % (n, words[n % 500], words[(n * 7 + i) % 500])
            for n in range(scale * 20_000)
        )
        (root / "text" / f"t{i}.log").write_bytes(b"".join(lines))
    for i in range(40):
        (root / "small" / ("deeper" if i % 3 else "") / f"s{i}.dat").write_bytes(
            rnd.randbytes(rnd.randint(0, 6000))
        )
    os.chmod(root / "small" / "s0.dat", 0o751)
    link = root / "link"
    if not link.is_symlink():
        link.symlink_to("text/t0.log")


def api_backup_snapshot(store: Store, src: Path) -> Snapshot:
    repo = Repository.open(store, PW)
    repo.load_index()
    return BackupJob(repo, BackupOptions(paths=[str(src)], workers=2)).run().snapshot


def api_backup(store: Store, src: Path) -> str:
    return api_backup_snapshot(store, src).id


def api_restore(store: Store, snapshot_id: str, target: Path) -> dict[str, tuple[Any, ...]]:
    repo = Repository.open(store, PW)
    repo.load_index()
    snap = repo.find_snapshot(snapshot_id)
    RestoreJob(repo, snap, FileRestoreOptions(target=str(target))).run()
    return describe(target)


def api_check(store: Store, *, read_data: bool = True) -> list[str]:
    """Run a check on ``store``; assert it is clean; return its notices."""
    repo = Repository.open(store, PW)
    report = Checker(repo, read_data=read_data).run()
    assert report.ok, [e.__dict__ for e in report.errors]
    assert report.affected == {}
    for n in report.notices:
        assert "not referenced by the index" in n, n
    return report.notices


def new_memory_repo() -> MemoryStore:
    store = MemoryStore()
    Repository.init(store, PW, kdf=FAST_KDF, chunker=SMALL_CHUNKS, pack_size=SMALL_PACK)
    return store


# --- kill -9 during backup -------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[Any, ...]]]:
    """~100 MB of mixed data, made once per module, with its description."""
    root = tmp_path_factory.mktemp("bigsrc") / "data"
    rnd = random.Random(SEED)
    (root / "random").mkdir(parents=True)
    (root / "text").mkdir()
    (root / "small" / "a" / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    for i in range(4):
        (root / "random" / f"big{i}.bin").write_bytes(rnd.randbytes(12 * MIB))
    for i in range(10):
        (root / "random" / f"mid{i}.bin").write_bytes(rnd.randbytes(MIB + i * 4099))
    words = [rnd.randbytes(5).hex().encode() for _ in range(2000)]
    for i in range(4):
        lines = (
            b"%09d %s %s %s\n" % (n, words[n % 2000], words[(n * 31 + i) % 2000], words[i])
            for n in range(8 * MIB // 44)
        )
        (root / "text" / f"log{i}.txt").write_bytes(b"".join(lines))
    for i in range(300):
        sub = ("", "a", "a/b")[i % 3]
        data = rnd.randbytes(rnd.randint(0, 12_000)) if i % 2 else b"text %d\n" % i * (i % 50)
        (root / "small" / sub / f"f{i:03d}").write_bytes(data)
    os.chmod(root / "small" / "f000", 0o600)
    os.chmod(root / "small" / "a" / "f001", 0o755)
    (root / "link-abs").symlink_to("/etc/hostname")
    (root / "link-rel").symlink_to("text/log0.txt")
    os.link(root / "small" / "f003", root / "small" / "hardlink-f003")
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert 90 * MIB < total < 120 * MIB
    return root, describe(root)


@pytest.mark.slow
def test_kill_9_during_backup(
    big_tree: tuple[Path, dict[str, tuple[Any, ...]]],
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, expected = big_tree
    runs = 8
    rnd = random.Random(SEED)
    # sys.__stderr__: the `cli` fixture's capsys swallows ordinary prints.
    log = sys.__stderr__ or sys.stderr
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    monkeypatch.delenv("STACKVAULT_PASSWORD_FILE", raising=False)
    env = {**os.environ, "STACKVAULT_PASSWORD": PASSWORD}

    def start(repo: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "stackvault", "backup", str(data)],
            env={**env, "STACKVAULT_REPOSITORY": str(repo)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_for_lock(repo: Path, proc: subprocess.Popen[bytes]) -> None:
        """Until the process holds its repository lock: start-up is over, the backup begins."""
        deadline = time.monotonic() + 60
        while not objects(repo, "locks") and proc.poll() is None:
            assert time.monotonic() < deadline, "the backup never took its lock"
            time.sleep(0.002)

    # Interpreter start-up takes most of a run here (a whole 100 MB backup lasts ~0.65 s, of
    # which ~0.4 s is start-up), so delays counted from the spawn would mostly land before the
    # first write or after the end. Instead: measure how long the backup works once it holds
    # its lock, and kill at a random point of that window (a little beyond it, too).
    calibrate = tmp_path / "calibrate"
    assert cli("--repo", calibrate, *FAST_INIT).code == 0
    proc = start(calibrate)
    wait_for_lock(calibrate, proc)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    window = time.monotonic() - t0
    shutil.rmtree(calibrate)
    upper = min(1.5, max(0.1, 1.1 * window))
    print(
        f"kill -9 test seed: {SEED} (set STACKVAULT_TEST_SEED to repeat); the backup works "
        f"{window:.2f} s after taking its lock; kills at 0.00..{upper:.2f} s after that",
        file=log,
    )
    mid_upload = 0
    outcomes = []
    for run in range(runs):
        repo = tmp_path / f"repo{run}"
        monkeypatch.setenv("STACKVAULT_REPOSITORY", str(repo))
        # Half the runs with 1 MiB packs: more packs, and a periodic index file mid-run.
        pack_size = ["--pack-size", "1"] if run % 2 else []
        res = cli(*FAST_INIT, *pack_size)
        assert res.code == 0, res.err

        delay = rnd.uniform(0.0, upper)
        proc = start(repo)
        wait_for_lock(repo, proc)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)  # a zombie if it already finished: still fine
        _, err = proc.communicate(timeout=60)
        killed = proc.returncode == -signal.SIGKILL
        if not killed:
            assert proc.returncode == 0, err

        snaps = objects(repo, "snapshots")
        packs = objects(repo, "data")
        assert len(snaps) <= 1
        assert killed or snaps, "a backup that exited 0 saved no snapshot"

        context = (
            f"seed {SEED}, run {run}, killed {delay:.2f}s after the lock, "
            f"{'1 MiB' if pack_size else '16 MiB'} packs"
        )
        res = cli("check")
        try:
            notices = assert_check_clean(res)
        except AssertionError as exc:
            raise AssertionError(f"{context}: {exc}") from exc
        unreferenced = sum("not referenced" in n for n in notices)
        if (packs and not snaps) or unreferenced:
            mid_upload += 1
        outcomes.append(
            f"{context}, {'killed' if killed else 'finished'}, "
            f"{len(packs)} packs ({unreferenced} unreferenced), "
            f"{len(objects(repo, 'index'))} index, {len(snaps)} snapshots"
        )
        print(outcomes[-1], file=log)

        # At most the packs stored since the last index file are lost to the next backup:
        # an index file follows every INDEX_EVERY_PACKS packs (and every INDEX_EVERY_S).
        assert unreferenced <= INDEX_EVERY_PACKS + 8, outcomes[-1]
        loose = {repo / n.removeprefix("notice: ").split()[0] for n in notices}
        indexed_bytes = sum(p.stat().st_size for p in packs if p not in loose)
        res = cli("--json", "backup", str(data))
        assert res.code == 0, f"{outcomes[-1]}: {res.out + res.err}"
        assert len(objects(repo, "snapshots")) == len(snaps) + 1
        # What the killed run stored and indexed is reused, not uploaded again.
        summary = res.json()["summary"]
        reused = summary["bytes"] - summary["data_added"]
        if indexed_bytes:
            assert reused >= 0.9 * indexed_bytes, (outcomes[-1], summary, indexed_bytes)

        target = tmp_path / f"restore{run}"
        res = cli("restore", "latest", "--target", str(target))
        assert res.code == 0, res.out + res.err
        assert describe(inside(target, data)) == expected, outcomes[-1]
        assert objects(repo, "locks") == []
        shutil.rmtree(target)
        shutil.rmtree(repo)
    assert mid_upload >= 1, (
        "no kill landed while data was being uploaded; the test proved nothing:\n"
        + "\n".join(outcomes)
    )


def test_killed_upload_leaves_no_temp_files_after_prune(
    big_tree: tuple[Path, dict[str, tuple[Any, ...]]], repo_env: Path, cli: Cli
) -> None:
    """kill -9 while a pack is being written leaves its temporary file (``data/xx/.tmp-*``)
    behind. `prune` holds the exclusive lock, so no writer can be using such a file: after it,
    none may remain (otherwise every crash leaks up to a pack per upload worker, for ever)."""
    data, _ = big_tree
    repo = repo_env
    assert cli(*FAST_INIT).code == 0
    env = {**os.environ, "STACKVAULT_REPOSITORY": str(repo), "STACKVAULT_PASSWORD": PASSWORD}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackvault", "backup", str(data)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not list((repo / "data").rglob(".tmp-*")):
            assert proc.poll() is None, "the backup ended before a pack upload was caught"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list((repo / "data").rglob(".tmp-*")), "no partial upload was left to clean up"
    assert_check_clean(cli("check"))
    res = cli("prune", "--safety-margin", "0")
    assert res.code == 0, res.out + res.err
    left = [f"{p.relative_to(repo)} ({p.stat().st_size} bytes)" for p in repo.rglob(".tmp-*")]
    assert left == [], f"partial uploads still in the repository after prune: {left}"


# --- injected crashes during backup (API) ------------------------------------------------------


@pytest.fixture(scope="module")
def small_src(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[Any, ...]]]:
    root = tmp_path_factory.mktemp("smallsrc") / "src"
    write_tree(root, random.Random(SEED + 1))
    return root, describe(root)


def count_backup_puts(src: Path) -> int:
    inner = new_memory_repo()
    faulty = FaultyStore(inner)
    api_backup(faulty, src)
    return faulty.calls["put"]


def test_crash_during_backup(
    small_src: tuple[Path, dict[str, tuple[Any, ...]]], tmp_path: Path
) -> None:
    src, expected = small_src
    total = count_backup_puts(src)
    assert total >= 6, total  # several packs, an index and the snapshot
    crashed = 0
    for n in range(total):  # every put: packs, trees, the index, the snapshot
        inner = new_memory_repo()
        faulty = FaultyStore(inner)
        faulty.crash_after_puts(n)
        try:
            api_backup(faulty, src)
        except (SimulatedCrash, StackvaultError):
            crashed += 1
        else:
            # How blobs fall into packs depends on the threads' timing: this run needed no
            # more than n puts, so there was nothing to crash; it must be a whole backup.
            assert faulty.calls["put"] <= n, f"no crash after {n} of {faulty.calls['put']} puts"
            api_check(inner)
            continue
        assert list(inner.list("snapshots/")) == [], f"crash after {n} puts saved a snapshot"
        indexed = list(inner.list("index/"))
        api_check(inner)

        snap = api_backup_snapshot(inner, src)  # a new Repository over the same inner store
        snap_id = snap.id
        assert [i.name for i in inner.list("snapshots/")] == [f"snapshots/{snap_id}"]
        if indexed:
            # Everything was stored and indexed before the crash: the next run reuses it.
            assert snap.summary["data_added"] < snap.summary["bytes"] / 10, snap.summary
        target = tmp_path / f"restore-{n}"
        got = api_restore(inner, snap_id, target)
        assert describe(inside(target, src)) == expected, f"crash point {n}"
        assert got  # something was restored
        api_check(inner)
    assert crashed >= total - 2, (crashed, total)  # nearly every crash point was reached


def test_crash_when_the_store_loses_the_acknowledgement(
    small_src: tuple[Path, dict[str, tuple[Any, ...]]], tmp_path: Path
) -> None:
    """The pack put succeeds but its acknowledgement is lost: the backup fails, nothing is
    recorded that points at missing data, and the next backup restores."""
    src, expected = small_src
    inner = new_memory_repo()
    faulty = FaultyStore(inner)
    faulty.fail_put(
        lambda n: n.startswith("data/"), SimulatedCrash("ack lost"), times=1, after=True
    )
    with pytest.raises((SimulatedCrash, StackvaultError)):
        api_backup(faulty, src)
    assert list(inner.list("snapshots/")) == []
    api_check(inner)
    snap_id = api_backup(inner, src)
    target = tmp_path / "r"
    api_restore(inner, snap_id, target)
    assert describe(inside(target, src)) == expected


# --- injected crashes during prune (API) ---------------------------------------------------------


@pytest.fixture(scope="module")
def prunable(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[MemoryStore, dict[str, dict[str, tuple[Any, ...]]], Path]:
    """A repository with 5 snapshots of an evolving tree, 3 of them forgotten.

    Returns the store, the expected restore of each kept snapshot (by id) and the source root.
    """
    src = tmp_path_factory.mktemp("prunesrc") / "src"
    rnd = random.Random(SEED + 2)
    store = new_memory_repo()
    ids: list[str] = []
    states: list[dict[str, tuple[Any, ...]]] = []
    for gen in range(5):
        write_tree(src, rnd)  # rewrites the random files each time
        (src / f"gen{gen}.bin").write_bytes(rnd.randbytes(400 * 1024))
        if gen >= 2:
            (src / f"gen{gen - 2}.bin").unlink()
        ids.append(api_backup(store, src))
        states.append(describe(src))
    repo = Repository.open(store, PW)
    for i in (0, 2, 3):
        repo.remove_snapshot(ids[i])
    kept = {ids[1]: states[1], ids[4]: states[4]}
    return store, kept, src


def count_prune_ops(store: MemoryStore) -> tuple[int, int]:
    faulty = FaultyStore(memory_clone(store))
    repo = Repository.open(faulty, PW)
    repo.load_index()
    plan = plan_prune(repo, safety_margin=timedelta(0))
    assert plan.delete_packs and plan.repack_packs, "the fixture must need deletes and repacks"
    before = dict(faulty.calls)
    execute_prune(repo, plan)
    return faulty.calls["put"] - before["put"], faulty.calls["delete"] - before["delete"]


def crash_scenarios(puts: int, deletes: int) -> Iterator[tuple[str, Callable[[FaultyStore], None]]]:
    for n in sorted({0, 1, puts // 2, puts - 1}):
        yield f"crash after {n} of {puts} puts", lambda f, n=n: f.crash_after_puts(n)
    for n in sorted({0, 1, deletes // 2, deletes - 1}):

        def arm(f: FaultyStore, n: int = n) -> None:
            seen = [0]

            def nth(_name: str) -> bool:
                seen[0] += 1
                return seen[0] > n

            f.fail_delete(nth, SimulatedCrash(f"crash at delete {n}"))

        yield f"crash at delete {n} of {deletes}", arm
    yield (
        "index deletes fail",
        lambda f: f.fail_delete(lambda name: name.startswith("index/"), SimulatedCrash("index")),
    )
    yield (
        "first pack delete fails",
        lambda f: f.fail_delete(
            lambda name: name.startswith("data/"), SimulatedCrash("data"), times=1
        ),
    )


def test_crash_during_prune(
    prunable: tuple[MemoryStore, dict[str, dict[str, tuple[Any, ...]]], Path], tmp_path: Path
) -> None:
    base, kept, src = prunable
    puts, deletes = count_prune_ops(base)
    assert puts >= 2 and deletes >= 3, (puts, deletes)
    for i, (name, arm) in enumerate(crash_scenarios(puts, deletes)):
        inner = memory_clone(base)
        faulty = FaultyStore(inner)
        repo = Repository.open(faulty, PW)
        repo.load_index()
        plan = plan_prune(repo, safety_margin=timedelta(0))
        arm(faulty)
        with pytest.raises((SimulatedCrash, StackvaultError)):
            execute_prune(repo, plan)

        # Every kept snapshot restores, right after the crash.
        for snap_id, state in kept.items():
            target = tmp_path / f"s{i}-{snap_id[:8]}-after-crash"
            api_restore(inner, snap_id, target)
            assert describe(inside(target, src)) == state, name
            shutil.rmtree(target)

        # A second prune completes; then everything checks out and still restores.
        again = Repository.open(inner, PW)
        again.load_index()
        execute_prune(again, plan_prune(again, safety_margin=timedelta(0)))
        notices = api_check(inner, read_data=True)
        assert notices == [], (name, notices)
        for snap_id, state in kept.items():
            target = tmp_path / f"s{i}-{snap_id[:8]}-after-prune"
            api_restore(inner, snap_id, target)
            assert describe(inside(target, src)) == state, name
            shutil.rmtree(target)
        assert {i.name.removeprefix("snapshots/") for i in inner.list("snapshots/")} == set(kept)


def test_prune_reindexes_used_unindexed_packs_without_copying_the_index(
    prunable: tuple[MemoryStore, dict[str, dict[str, tuple[Any, ...]]], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prune takes each pack's blobs from the in-memory index one pack at a time (never a
    copy of the whole index); packs no index lists whose headers hold used blobs are
    indexed again from their headers, and the new index lists them blob for blob."""
    base, kept, src = prunable
    store = memory_clone(base)
    repo = Repository.open(store, PW)
    repo.load_index()
    kept_packs = set(plan_prune(repo, safety_margin=timedelta(0)).keep_packs)

    # Take away an index file that lists a pack prune keeps: its packs become unindexed.
    def lists_kept(name: str) -> bool:
        return any(p in kept_packs for p, _blobs in decode_index(repo.envelope, store.get(name)))

    name = next(n for n in repo.index_names() if lists_kept(n))
    listed = dict(decode_index(repo.envelope, store.get(name)))
    store.delete(name)

    def no_copy(_index: Index) -> None:
        raise AssertionError("prune copied the whole index")

    monkeypatch.setattr(Index, "packs", no_copy)
    repo = Repository.open(store, PW)
    repo.load_index()
    plan = plan_prune(repo, safety_margin=timedelta(0))
    assert plan.reindexed and set(plan.header_blobs) == set(plan.reindexed)
    assert plan.delete_packs, "the fixture must need deletes"
    for pack_id in plan.reindexed:
        assert sorted(plan.header_blobs[pack_id]) == sorted(listed[pack_id])
    execute_prune(repo, plan)
    monkeypatch.undo()

    after = Repository.open(store, PW)
    after.load_index()
    kept_again = [p for p in plan.reindexed if p in plan.keep_packs]
    assert kept_again, "the fixture must keep a pack whose index file was taken away"
    for pack_id in kept_again:
        assert sorted(after.index.pack_blobs(pack_id)) == sorted(listed[pack_id])
    assert api_check(store, read_data=True) == []
    for snap_id, state in kept.items():
        target = tmp_path / snap_id[:8]
        api_restore(store, snap_id, target)
        assert describe(inside(target, src)) == state


# --- Ctrl-C and SIGTERM -------------------------------------------------------------------------


STDIN_COMMAND = "sh -c 'head -c 300000000 /dev/zero; sleep 60'"


@pytest.fixture
def sparse_tree(tmp_path: Path) -> Path:
    """A large input that costs no disk: an 8 GiB sparse file (reading it takes many seconds)."""
    root = tmp_path / "sparse"
    root.mkdir()
    with open(root / "disk.img", "wb") as f:
        f.truncate(8 * 1024 * MIB)
    (root / "note.txt").write_text("hello\n")
    return root


def start_backup(repo: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stackvault", "backup", *args],
        env={**os.environ, "STACKVAULT_REPOSITORY": str(repo), "STACKVAULT_PASSWORD": PASSWORD},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so whatever it leaves can be found
    )


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("source", ["stdin-command", "tree"])
def test_interrupted_backup(
    initialised: Path, sparse_tree: Path, sig: signal.Signals, source: str
) -> None:
    repo = initialised
    args = (
        ["--stdin-from-command", STDIN_COMMAND] if source == "stdin-command" else [str(sparse_tree)]
    )
    proc = start_backup(repo, *args)
    try:
        time.sleep(1.0)
        assert proc.poll() is None, "the backup finished before it could be interrupted"
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc.pid)
    assert proc.returncode == 130, (proc.returncode, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "interrupted" in lines[0] and "Traceback" not in err
    assert objects(repo, "snapshots") == []
    assert objects(repo, "locks") == []


def test_interrupted_stdin_command_leaves_no_process_behind(initialised: Path) -> None:
    """SIGTERM to stackvault while ``--stdin-from-command`` runs a shell pipeline: the dump
    command's processes must not keep running (and holding the pipes) after stackvault exits."""
    proc = start_backup(initialised, "--stdin-from-command", STDIN_COMMAND)
    try:
        time.sleep(1.0)
        start = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
        took = time.monotonic() - start
        assert proc.returncode == 130
        time.sleep(0.2)
        left = subprocess.run(
            ["pgrep", "-g", str(proc.pid), "-a"], capture_output=True, text=True, check=False
        ).stdout.strip()
        assert left == "", f"still running after stackvault exited ({took:.1f} s to exit): {left}"
    finally:
        kill_group(proc.pid)


# --- a full disk -----------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def test_full_disk_during_backup(
    small_tmpfs: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = small_tmpfs / "repo"
    monkeypatch.setenv("STACKVAULT_REPOSITORY", str(repo))
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    monkeypatch.delenv("STACKVAULT_PASSWORD_FILE", raising=False)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(random.Random(SEED).randbytes(50 * MIB))
    (src / "small.txt").write_text("small\n")
    assert cli(*FAST_INIT).code == 0

    res = cli("backup", str(src))
    assert res.code != 0
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, res.err
    assert "space" in lines[0].lower(), lines[0]
    assert "Traceback" not in res.err and "internal error" not in res.err
    assert objects(repo, "snapshots") == []
    assert objects(repo, "locks") == []
    # No temporary files left filling the disk either.
    assert [p for p in repo.rglob(".tmp-*")] == []

    subprocess.run(
        ["mount", "-o", "remount,size=200m", str(small_tmpfs)], check=True, capture_output=True
    )
    res = cli("backup", str(src))
    assert res.code == 0, res.out + res.err
    assert len(objects(repo, "snapshots")) == 1
    assert_check_clean(cli("check", "--read-data"))
    target = tmp_path / "restore"
    assert cli("restore", "latest", "--target", str(target)).code == 0
    assert describe(inside(target, src)) == describe(src)
