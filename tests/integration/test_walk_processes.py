"""A backup whose directories are walked by child processes (`stackvault.engine.walkprocs`)
stores exactly what the walk in one process stores: the same root tree (every kind of entry,
content, modes, times, xattrs, hard links across directories, large files, directories of
more small files than one answer carries), the same counts; an unchanged tree is not read
again; what a child finds wrong reaches the run's problems; a mount point stays empty with
one-file-system; a child that dies fails the backup with no snapshot; where no process can
be made the walk runs in one process."""

from __future__ import annotations

import errno
import os
import random
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stackvault.engine.backup import BackupJob, BackupOptions, BackupResult
from stackvault.engine.progress import NullProgress
from stackvault.engine.walkprocs import READ_FILES
from stackvault.errors import StackvaultError
from stackvault.repo.repository import Repository
from support.localrepo import new_local_repo

PW = b"walk processes"
MTIME_NS = 1_600_000_000_123_456_789
MiB = 1024 * 1024


def _tree(root: Path) -> Path:
    rnd = random.Random(5)
    for i in range(700):
        sub = root / f"tenant-{i % 7}" / f"part-{i % 3}" / "deep" / "er"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"doc-{i}.json").write_bytes(rnd.randbytes(rnd.randint(0, 5000)))
        os.chmod(sub / f"doc-{i}.json", 0o600 + (i % 3) * 0o040)
        os.utime(sub / f"doc-{i}.json", ns=(MTIME_NS + i, MTIME_NS + i))
    crowded = root / "crowded"  # more small files than one answer reads
    crowded.mkdir()
    for i in range(READ_FILES * 2 + 7):
        (crowded / f"{i:05d}").write_bytes(b"%d " % i * (i % 50))
    (root / "big.bin").write_bytes(rnd.randbytes(5 * MiB + 17))  # several blobs
    (root / "tenant-3" / "large.bin").write_bytes(rnd.randbytes(2 * MiB))
    (root / "empty").write_bytes(b"")
    (root / "empty-dir").mkdir()
    (root / "link").symlink_to("tenant-0/part-0/deep/er/doc-0.json")
    os.mkfifo(root / "tenant-4" / "pipe")
    # Hard links across directories, of a small and a large file: read once, shared.
    os.link(root / "tenant-1" / "part-1" / "deep" / "er" / "doc-1.json", root / "hard-small")
    os.link(root / "tenant-3" / "large.bin", root / "tenant-5" / "hard-large")
    try:
        os.setxattr(root / "tenant-2" / "part-2" / "deep" / "er" / "doc-2.json", "user.o", b"\x00t")
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return new_local_repo(tmp_path / "repo", PW)


def _backup(repo: Repository, data: Path, processes: int, **opts: object) -> BackupResult:
    options = BackupOptions(paths=[str(data)], processes=processes, **opts)  # type: ignore[arg-type]
    with repo.lock(exclusive=False, operation="backup"):
        return BackupJob(repo, options).run()


_COUNTED = ("files", "dirs", "bytes", "files_new", "files_changed", "files_unmodified")


def _counts(result: BackupResult) -> tuple[int, ...]:
    return tuple(result.snapshot.summary[k] for k in _COUNTED)


def test_processes_store_exactly_what_one_process_stores(repo: Repository, tmp_path: Path) -> None:
    data = _tree(tmp_path / "data")
    alone = _backup(repo, data, 0, force=True)
    forked = _backup(repo, data, 2, force=True)
    three = _backup(repo, data, 3, force=True)
    assert forked.snapshot.tree == alone.snapshot.tree == three.snapshot.tree
    assert _counts(forked) == _counts(alone) == _counts(three)
    # 700 documents, the crowded folder, big, large, empty and the two hard links.
    assert forked.snapshot.summary["files"] == 700 + READ_FILES * 2 + 7 + 5
    assert forked.problems == alone.problems == []


def test_a_new_repository_gets_every_blob_from_the_children(
    repo: Repository, tmp_path: Path
) -> None:
    """The first backup's blobs are sealed in the children: the repository they leave
    checks clean and restores the same tree as a backup in one process would."""
    from stackvault.repo.check import Checker

    data = _tree(tmp_path / "data")
    first = _backup(repo, data, 2)
    assert first.snapshot.summary["files_new"] == first.snapshot.summary["files"]
    assert first.snapshot.summary["data_blobs_added"] > READ_FILES
    report = Checker(repo, read_data=True).run()
    assert report.ok, report
    again = _backup(repo, data, 0, force=True)
    assert again.snapshot.tree == first.snapshot.tree
    assert again.snapshot.summary["data_blobs_added"] == 0


def test_an_unchanged_tree_is_not_read_and_changes_are_found(
    repo: Repository, tmp_path: Path
) -> None:
    data = _tree(tmp_path / "data")
    first = _backup(repo, data, 2)
    unchanged = _backup(repo, data, 2)
    assert unchanged.snapshot.tree == first.snapshot.tree
    summary = unchanged.snapshot.summary
    assert summary["files_unmodified"] == summary["files"] and summary["files_new"] == 0
    assert summary["data_blobs_added"] == 0

    doc = data / "tenant-6" / "part-0" / "deep" / "er" / "doc-6.json"
    doc.write_bytes(b"changed content")
    (data / "crowded" / "00003").unlink()
    (data / "tenant-0" / "new.txt").write_text("new file")
    changed = _backup(repo, data, 2)
    summary = changed.snapshot.summary
    assert (summary["files_changed"], summary["files_new"]) == (1, 1)
    assert summary["files"] == first.snapshot.summary["files"]
    reread = _backup(repo, data, 0, force=True)
    assert changed.snapshot.tree == reread.snapshot.tree != first.snapshot.tree


def test_what_a_child_finds_wrong_reaches_the_run(repo: Repository, tmp_path: Path) -> None:
    data = tmp_path / "d"
    (data / "a" / "b").mkdir(parents=True)
    (data / "a" / "b" / "kept.txt").write_text("kept")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(data / "a" / "b" / "s.sock"))
        result = _backup(repo, data, 2)
    finally:
        sock.close()
    skipped = [p for p in result.problems if p.path == str(data / "a" / "b" / "s.sock")]
    assert len(skipped) == 1 and "socket" in skipped[0].message and not skipped[0].incomplete
    assert result.snapshot.complete and result.snapshot.summary["files"] == 1


def test_one_file_system_keeps_a_mount_point_below_a_child_empty(
    repo: Repository, tmp_path: Path, tmpfs_below: Callable[[Path], None]
) -> None:
    data = tmp_path / "data"
    tmpfs_below(data / "a" / "mnt")
    (data / "a" / "mnt" / "sub").mkdir()
    (data / "a" / "mnt" / "sub" / "on-tmpfs").write_text("other filesystem")
    (data / "a" / "local").write_text("same filesystem")
    result = _backup(repo, data, 2, one_file_system=True)
    assert result.snapshot.summary["files"] == 1
    mount = [p for p in result.problems if p.path == str(data / "a" / "mnt")]
    assert len(mount) == 1 and "mount point" in mount[0].message
    full = _backup(repo, data, 2)
    assert full.snapshot.summary["files"] == 2


class _KillChild(NullProgress):
    """Kills a child process of the walk with SIGKILL at the first file counted."""

    def __init__(self) -> None:
        super().__init__()
        self.killed: list[int] = []
        self._once = threading.Lock()

    def advance(self, *, files: int = 0, bytes_: int = 0) -> None:
        super().advance(files=files, bytes_=bytes_)
        if files and self._once.acquire(blocking=False):
            for pid in _children():
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)


def _children() -> Iterator[int]:
    """The live child processes of this process forked from it (same command line)."""
    me = os.getpid()
    with open(f"/proc/{me}/cmdline", "rb") as f:
        mine = f.read()
    for task in os.listdir(f"/proc/{me}/task"):
        with open(f"/proc/{me}/task/{task}/children") as f:
            pids = [int(p) for p in f.read().split()]
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read() == mine:
                        yield pid
            except FileNotFoundError:
                continue


def test_a_child_that_dies_fails_the_backup_and_saves_no_snapshot(
    repo: Repository, tmp_path: Path
) -> None:
    data = _tree(tmp_path / "data")
    progress = _KillChild()
    options = BackupOptions(paths=[str(data)], processes=2)
    with repo.lock(exclusive=False, operation="backup"):
        job = BackupJob(repo, options, progress=progress)
        with pytest.raises(StackvaultError) as failed:
            job.run()
    assert progress.killed, "no child process was found to kill"
    assert "a backup process" in failed.value.message
    assert "killed by signal 9" in failed.value.message
    assert "the backup is incomplete" in failed.value.message
    assert repo.snapshot_names() == []
    assert list(_children()) == [], "a child process outlived the backup"


def test_where_no_process_can_be_made_one_process_walks(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _tree(tmp_path / "data")
    expected = _backup(repo, data, 0, force=True)

    def refuse() -> int:
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(os, "fork", refuse)
    progress = NullProgress()
    options = BackupOptions(paths=[str(data)], processes=2, force=True)
    with repo.lock(exclusive=False, operation="backup"):
        result = BackupJob(repo, options, progress=progress).run()
    assert result.snapshot.tree == expected.snapshot.tree
    assert any("walked by one process" in n for n in progress.notices), progress.notices
