"""Files a backup must neither drop nor misreport, through the engine's API: files deleted
while a backup runs, and sparse files restored with their holes.

Real files, a real local repository; the moment of a deletion is fixed by the backup's own
progress events, not by patching the code under test.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.progress import NullProgress
from stackvault.repo.repository import Repository
from support.localrepo import new_local_repo

PASSWORD = b"awkward files"
MiB = 1024 * 1024


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return new_local_repo(tmp_path / "repo", PASSWORD)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (a UNIX socket's address is limited to ~108 bytes)."""
    import shutil

    path = Path(tempfile.mkdtemp(prefix="sv-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class DeleteOnNotice(NullProgress):
    """Deletes ``victims`` when the backup first reports a notice about ``trigger``: the
    listing of their directory has seen them by then, nothing has read them yet."""

    def __init__(self, trigger: str, victims: list[Path]) -> None:
        super().__init__()
        self.trigger = trigger
        self.victims = victims
        self.fired = threading.Event()

    def notice(self, message: str) -> None:
        super().notice(message)
        if self.trigger in message and not self.fired.is_set():
            for victim in self.victims:
                victim.unlink()
            self.fired.set()


def test_files_deleted_after_the_listing_are_notices_not_errors(
    repo: Repository, short_dir: Path
) -> None:
    src = short_dir / "src"
    src.mkdir()
    (src / "a-large.bin").write_bytes(os.urandom(3 * MiB))  # read on the pool
    (src / "a-small.txt").write_text("small, read by the walking thread")
    (src / "b-kept.txt").write_text("stays")
    victims = [src / "a-large.bin", src / "a-small.txt"]
    progress = DeleteOnNotice("z.sock", victims)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Sorted last in its directory: its notice comes once the others are listed.
        sock.bind(str(src / "z.sock"))
        # The walk in this process: the socket's notice reaches the progress while the
        # walk goes on (a child process reports its notices with its answer).
        opts = BackupOptions(paths=[str(src)], processes=0)
        result = BackupJob(repo, opts, progress=progress).run()
    finally:
        sock.close()
    assert progress.fired.is_set()
    snap = result.snapshot
    assert snap.complete is True, snap.problems
    assert snap.problems == []
    vanished = {p.path: p for p in result.problems if "vanished" in p.message}
    assert set(vanished) == {str(v) for v in victims}
    assert all(not p.incomplete for p in vanished.values())
    assert all(p.message == "vanished during backup" for p in vanished.values())
    assert snap.summary["files"] == 1


# --- sparse files ------------------------------------------------------------------------------


def make_sparse(path: Path, size: int, data: dict[int, bytes]) -> None:
    """A file of ``size`` bytes holding ``data`` at its offsets and holes elsewhere."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, chunk in data.items():
            f.seek(offset)
            f.write(chunk)


@pytest.mark.parametrize("by_pack", [False, True], ids=["file by file", "pack by pack"])
def test_a_sparse_file_is_restored_with_its_holes(
    repo: Repository, tmp_path: Path, by_pack: bool
) -> None:
    from stackvault.engine.restore import FileRestoreOptions, RestoreJob

    src = tmp_path / "src"
    src.mkdir()
    size = 64 * MiB
    make_sparse(
        src / "disk.img",
        size,
        {0: os.urandom(4096), 20 * MiB + 123: os.urandom(MiB), size - 11: b"end of file"},
    )
    assert os.stat(src / "disk.img").st_blocks * 512 < 4 * MiB  # the source is sparse
    snap = BackupJob(repo, BackupOptions(paths=[str(src)])).run().snapshot
    # the zeros are stored once, whatever their length: a few blobs, little data
    assert snap.summary["data_added_stored"] < 3 * MiB

    target = tmp_path / "restored"
    RestoreJob(repo, snap, FileRestoreOptions(target=str(target), by_pack=by_pack)).run()
    restored = target / str(src / "disk.img").lstrip("/")
    assert restored.stat().st_size == size
    assert sha256(restored) == sha256(src / "disk.img")
    assert restored.stat().st_blocks * 512 < 16 * MiB, "the holes were written as zeros"


def sha256(path: Path) -> str:
    import hashlib

    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            sha.update(block)
    return sha.hexdigest()
