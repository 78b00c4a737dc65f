"""A restore whose small files are restored by child processes (`stackvault.engine.restoreprocs`)
gives exactly what file threads give: every kind of entry, content, modes, times, xattrs, hard
links, over an old tree with ``overwrite``; from a local repository on disk."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import pytest

from conftest import describe
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.restore import FileRestoreOptions, RestoreJob, RestoreResult
from stackvault.repo.repository import Repository
from stackvault.store.local import LocalStore

PW = b"restore processes"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
MTIME_NS = 1_600_000_000_123_456_789


def _tree(root: Path) -> Path:
    rnd = random.Random(11)
    for i in range(900):
        sub = root / f"tenant-{i % 9}" / f"part-{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"doc-{i}.json").write_bytes(rnd.randbytes(rnd.randint(0, 5000)))
        os.chmod(sub / f"doc-{i}.json", 0o600 + (i % 3) * 0o040)
        os.utime(sub / f"doc-{i}.json", ns=(MTIME_NS + i, MTIME_NS + i))
    (root / "big.bin").write_bytes(rnd.randbytes(5 * 1024 * 1024 + 17))  # several blobs
    (root / "mid.bin").write_bytes(rnd.randbytes(1536 * 1024))  # over STAGE_MIN
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("tenant-0/part-0/doc-0.json")
    os.link(root / "tenant-1" / "part-1" / "doc-1.json", root / "hard")
    try:
        os.setxattr(root / "tenant-2" / "part-2" / "doc-2.json", "user.origin", b"\x00tenant")
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    return root


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A local repository holding one snapshot of `_tree`, and the tree."""
    base = tmp_path_factory.mktemp("procs")
    data = _tree(base / "data")
    store = LocalStore(base / "repo")
    store.ensure_root()
    Repository.init(store, PW, kdf=FAST_KDF)
    repo = Repository.open(store, PW)
    repo.load_index()
    BackupJob(repo, BackupOptions(paths=[str(data)], workers=2)).run()
    return base / "repo", data


def _restore(repo_dir: Path, target: Path, processes: int, **opts: Any) -> RestoreResult:
    repo = Repository.open(LocalStore(repo_dir), PW)
    repo.load_index()
    options = FileRestoreOptions(target=str(target), processes=processes, **opts)
    return RestoreJob(repo, repo.list_snapshots()[-1], options).run()


def _metadata(root: Path) -> dict[str, tuple[Any, ...]]:
    """Relative path → (mtime, xattrs, inode number group) of every file below ``root``."""
    out: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        xattrs = (
            sorted((k, os.getxattr(path, k)) for k in os.listxattr(path))
            if path.is_file() and not path.is_symlink()
            else []
        )
        out[str(path.relative_to(root))] = (st.st_mtime_ns, xattrs, st.st_nlink)
    return out


@pytest.mark.parametrize("processes", [2, 3])
def test_processes_restore_what_threads_restore(
    backed_up: tuple[Path, Path], tmp_path: Path, processes: int
) -> None:
    repo_dir, data = backed_up
    by_threads = _restore(repo_dir, tmp_path / "threads", 0)
    by_children = _restore(repo_dir, tmp_path / "children", processes)
    assert (by_threads.processes, by_children.processes) == (0, processes)
    for result in (by_threads, by_children):
        assert (result.files, result.hardlinks, result.symlinks) == (903, 1, 1)
        assert result.failed == [] and result.notices == []
    rel = data.relative_to(data.anchor)
    for target in (tmp_path / "threads", tmp_path / "children"):
        assert describe(target / rel) == describe(data)
        assert _metadata(target / rel) == _metadata(data)
    assert by_children.bytes == by_threads.bytes


def test_overwrite_through_processes_replaces_an_old_tree(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    repo_dir, data = backed_up
    target = tmp_path / "target"
    _restore(repo_dir, target, 2)
    restored = target / data.relative_to(data.anchor)
    changed = restored / "tenant-3" / "part-3" / "doc-3.json"
    changed.write_bytes(b"edited after the restore")
    (restored / "tenant-4" / "part-0" / "doc-4.json").unlink()
    result = _restore(repo_dir, target, 2, overwrite=True)
    assert result.processes == 2
    assert describe(restored) == describe(data)
    assert _metadata(restored) == _metadata(data)
    assert [p for p in restored.rglob("*") if ".svtmp-" in p.name] == []


def test_threads_restore_when_no_process_can_be_started(
    backed_up: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_dir, data = backed_up

    def refuse() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    result = _restore(repo_dir, tmp_path / "target", 2)
    assert result.processes == 0
    assert result.notices == [
        "small files restored by threads: no child process could be started "
        "(Resource temporarily unavailable)"
    ]
    assert describe(tmp_path / "target" / data.relative_to(data.anchor)) == describe(data)
