"""Progress totals for the ETA: counted by walking the paths on a first backup, taken from the
parent snapshot's summary on later ones (so the tree is not walked twice)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from conftest import make_tree
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.repo.repository import Repository
from stackvault.store.memory import MemoryStore

PW = b"progress totals"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)


class TotalsProgress:
    """Records every `set_total` call; counts what was done."""

    def __init__(self) -> None:
        self.totals: list[tuple[int | None, int | None]] = []
        self.files = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def set_total(self, *, files: int | None = None, bytes_: int | None = None) -> None:
        with self._lock:
            self.totals.append((files, bytes_))

    def advance(self, *, files: int = 0, bytes_: int = 0) -> None:
        with self._lock:
            self.files += files
            self.bytes += bytes_

    def notice(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


def _regular_files(root: Path) -> tuple[int, int]:
    files = size = 0
    for top, _dirs, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(top, name))
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
    return files, size


def _backup(repo: Repository, data: Path, progress: TotalsProgress) -> dict[str, int]:
    job = BackupJob(
        repo, BackupOptions(paths=[str(data)], workers=2, scan_totals=True), progress=progress
    )
    return job.run().snapshot.summary


def _new_repo() -> Repository:
    store = MemoryStore()
    Repository.init(store, PW, kdf=FAST_KDF)
    repo = Repository.open(store, PW)
    repo.load_index()
    return repo


def test_first_backup_counts_totals_by_walking(tmp_path: Path) -> None:
    data = make_tree(tmp_path / "data")
    repo = _new_repo()
    progress = TotalsProgress()
    _backup(repo, data, progress)
    # the scanner counts regular files once each (a hard link's two names count twice)
    assert progress.totals, "no totals were given"
    assert progress.totals[-1] == _regular_files(data)


def test_later_backup_takes_the_parents_totals(tmp_path: Path) -> None:
    data = make_tree(tmp_path / "data")
    repo = _new_repo()
    first = _backup(repo, data, TotalsProgress())
    (data / "added.txt").write_bytes(b"x" * 5000)  # the walk would count this one too
    progress = TotalsProgress()
    second = _backup(repo, data, progress)
    assert progress.totals == [(first["files"], first["bytes"])]
    assert second["files"] == first["files"] + 1
    assert progress.bytes == second["bytes"]  # the bar's done figure is the real one
