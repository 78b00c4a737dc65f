"""A repository whose file system is 100 % full can still be cleaned up: `forget --prune`
takes its lock in the space reserve, prune frees space in the low-space order, and the kept
snapshots stay whole. Real full file systems: a small tmpfs mounted for the test (as root)."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import FAST_INIT, PASSWORD, Result, describe, inside
from stackvault.crypto.kdf import KdfParams
from stackvault.repo.blob import BlobType
from stackvault.repo.check import Checker
from stackvault.repo.pack import pack_name
from stackvault.repo.prune import execute_prune, plan_prune
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, encode_tree
from stackvault.store.local import LocalStore

Cli = Callable[..., Result]
MIB = 1024 * 1024
PW = PASSWORD.encode()
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs; unmounted at the end."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(path: Path) -> None:
    """Write to ``path`` until the file system is full (ENOSPC); it may be full already."""
    with pytest.raises(OSError) as info, open(path, "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError):  # not even a lock object fits
        (path.parent / "probe").write_bytes(b"x" * 512)


def test_forget_and_prune_on_a_full_file_system(
    small_fs: Path, tmp_path: Path, cli: Cli, repo_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = small_fs / "repo"
    monkeypatch.setenv("STACKVAULT_REPOSITORY", str(repo))
    assert cli(*FAST_INIT, "--pack-size", "1").code == 0
    assert (repo / "reserve").stat().st_size > 0
    src = tmp_path / "src"
    rnd = random.Random(7)
    saved = []
    for generation in range(12):  # until the file system is full
        if src.exists():
            shutil.rmtree(src)
        src.mkdir()
        (src / "data.bin").write_bytes(rnd.randbytes(4 * MIB))
        (src / "note.txt").write_text(f"generation {generation}\n")
        res = cli("--json", "backup", src)
        if res.code != 0:
            assert "no space left" in res.err.lower() and "Traceback" not in res.err, res.err
            break
        saved.append((res.json()["id"], describe(src)))
    else:
        raise AssertionError("the file system never filled up")
    assert len(saved) >= 2
    fill(small_fs / "filler")  # 100 %: not even a lock fits now
    kept_id, kept_state = saved[-1]

    res = cli("--json", "forget", "--keep-last", "1", "--prune", "--safety-margin", "0")
    assert res.code == 0, res.out + res.err
    assert "space reserve" in res.err, res.err
    doc = res.json()
    assert doc["prune"]["packs_deleted"] >= 4
    assert shutil.disk_usage(small_fs).free >= 8 * MIB

    res = cli("check", "--read-data")
    assert res.code == 0, res.out + res.err
    assert (repo / "reserve").exists()
    target = tmp_path / "restored"
    res = cli("restore", kept_id, "--target", target, "--verify")
    assert res.code == 0, res.out + res.err
    assert describe(inside(target, src)) == kept_state
    # The repository works as before: a backup fits again, and another prune is normal.
    (small_fs / "filler").unlink(missing_ok=True)
    assert cli("backup", src).code == 0
    res = cli("--json", "prune", "--safety-margin", "0")
    assert res.code == 0, res.out + res.err
    assert "low-space" not in res.err


def test_prune_frees_space_in_the_low_space_order_when_not_even_the_index_fits(
    small_fs: Path, tmp_path: Path
) -> None:
    """The lock is taken, then the file system fills up again: the new index cannot be
    written first, so prune deletes the old index files before writing it — and nothing
    a kept snapshot needs is lost, even though nothing could be written up front."""
    store = LocalStore(small_fs / "repo")
    store.ensure_root()
    repo = Repository.init(store, PW, kdf=FAST_KDF, pack_size=512 * 1024)
    rnd = random.Random(11)
    ids = []
    for _ in range(8):
        writer = repo.writer()
        blobs = [writer.save(BlobType.DATA, rnd.randbytes(300_000))[0] for _ in range(4)]
        tree_id, _ = writer.save(
            BlobType.TREE,
            encode_tree([Node(name="f", type="file", size=1_200_000, content=blobs)]),
        )
        writer.flush()
        writer.close()
        ids.append(
            repo.save_snapshot(
                Snapshot(
                    time=datetime.now(UTC), tree=tree_id, paths=["/"], hostname="h", username="u"
                )
            )
        )
    for snap_id in ids[:-1]:
        repo.remove_snapshot(snap_id)
    again = Repository.open(store, PW)
    with again.lock(exclusive=True, operation="prune") as held:
        again.load_index()
        fill(small_fs / "filler")
        plan = plan_prune(again, now=held.store_time, safety_margin=timedelta(0))
        assert plan.delete_packs
        notices: list[str] = []
        execute_prune(again, plan, notices.append)
    assert plan.low_space and any("low-space order" in n for n in notices), notices
    assert not any(store.exists(pack_name(p)) for p in plan.delete_packs)
    (small_fs / "filler").unlink()
    fresh = Repository.open(store, PW)
    report = Checker(fresh, read_data=True).run()
    assert report.ok, report.errors
    assert report.snapshots == 1
