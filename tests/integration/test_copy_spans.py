"""Copy from a remote source (S3-like): a directory's blobs read a span of a pack per
request, the copy the same as blob by blob, failures as blob by blob."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from conftest import describe, inside, make_tree
from stackvault.chunking.cdc import ChunkerParams
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.copy import CopyJob, select_snapshots
from stackvault.engine.copyresult import CopyResult
from stackvault.engine.progress import NullProgress
from stackvault.engine.restore import FileRestoreOptions, RestoreJob
from stackvault.errors import IntegrityError, Interrupted, StorePermissionDenied
from stackvault.repo.blob import BlobType
from stackvault.repo.check import Checker
from stackvault.repo.pack import pack_name
from stackvault.repo.repository import Repository
from stackvault.store.base import Store
from stackvault.store.faulty import FaultyStore
from stackvault.store.memory import MemoryStore
from support.countingstore import CountingStore, RemoteCountingStore
from support.damage import damage_blob

PW = b"copy spans"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
SMALL_CHUNKS = ChunkerParams(min=1024, avg=4096, max=16 * 1024)
PACK = 512 * 1024


def _repo() -> MemoryStore:
    store = MemoryStore()
    Repository.init(store, PW, kdf=FAST_KDF, chunker=SMALL_CHUNKS, pack_size=PACK)
    return store


def _open(store: Store) -> Repository:
    repo = Repository.open(store, PW)
    repo.load_index()
    return repo


def _data(root: Path) -> Path:
    make_tree(root, files=60)
    rnd = random.Random(5)
    for i in range(3):
        (root / f"upload-{i}.bin").write_bytes(rnd.randbytes(400_000))
    return root


def _backup(store: Store, data: Path) -> None:
    BackupJob(_open(store), BackupOptions(paths=[str(data)], workers=2)).run()


def _copy(source: Store, dest: Store, progress: NullProgress | None = None) -> CopyResult:
    src = _open(source)
    job = CopyJob(src, _open(dest), workers=3, progress=progress)
    if isinstance(progress, _StopAfter):
        progress.job = job
    return job.run(select_snapshots(src))


def _data_blobs(repo: Repository) -> int:
    return sum(1 for _i, e in repo.index.items() if e.type == BlobType.DATA)


def _data_packs(repo: Repository) -> set[str]:
    return {pack_name(e.pack_id) for _i, e in repo.index.items() if e.type == BlobType.DATA}


def _restored(store: Store, target: Path) -> Path:
    repo = _open(store)
    RestoreJob(repo, repo.list_snapshots()[-1], FileRestoreOptions(target=str(target))).run()
    return target


@pytest.mark.parametrize("remote", [True, False], ids=["remote", "local"])
def test_a_copy_from_a_remote_source_reads_spans_not_blobs(tmp_path: Path, remote: bool) -> None:
    data = _data(tmp_path / "data")
    source, dest = _repo(), _repo()
    _backup(source, data)
    counting = RemoteCountingStore(source) if remote else CountingStore(source)
    result = _copy(counting, dest)
    (outcome,) = result.copied
    src = _open(source)
    blobs = _data_blobs(src)
    assert outcome.stats.blobs_copied > blobs  # the data blobs and the trees
    reads = [g for g in counting.gets if g[0] in _data_packs(src)]
    if remote:
        assert len(reads) <= len(_data_packs(src)) * 8 < blobs // 4, (len(reads), blobs)
    else:
        assert len(reads) == blobs  # blob by blob from a local source
    target = _restored(dest, tmp_path / "out")
    assert describe(inside(target, data)) == describe(data)
    report = Checker(Repository.open(dest, PW), read_data=True).run()
    assert report.ok


def test_a_damaged_blob_in_a_span_fails_the_copy_naming_the_snapshot(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    source, dest = _repo(), _repo()
    _backup(source, data)
    src = _open(source)
    entry = max(
        (e for _i, e in src.index.items() if e.type == BlobType.DATA), key=lambda e: e.length
    )
    damage_blob(source, entry)
    snap = src.list_snapshots()[-1]
    with pytest.raises(IntegrityError, match=f"cannot copy snapshot {snap.short_id}.*damaged"):
        _copy(RemoteCountingStore(source), dest)
    assert _open(dest).list_snapshots() == []


def test_a_missing_pack_fails_the_copy_without_a_request_per_blob(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    source, dest = _repo(), _repo()
    _backup(source, data)
    src = _open(source)
    gone = sorted(_data_packs(src))[0]
    in_it = sum(1 for _i, e in src.index.items() if pack_name(e.pack_id) == gone)
    dirs = sum(1 for _p, node in src.iter_tree(src.list_snapshots()[-1].tree) if node.type == "dir")
    source.delete(gone)
    counting = RemoteCountingStore(source)
    with pytest.raises(IntegrityError, match="is missing"):
        _copy(counting, dest)
    # one request per directory with blobs there at most, not one per blob
    assert 1 <= [g[0] for g in counting.gets].count(gone) <= dirs < in_it
    assert _open(dest).list_snapshots() == []


def test_a_refused_read_stops_the_copy_with_that_error(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    source, dest = _repo(), _repo()
    _backup(source, data)
    faulty = FaultyStore(RemoteCountingStore(source))
    packs = sorted(_data_packs(_open(source)))
    faulty.fail_get(lambda name: name == packs[-1], StorePermissionDenied("access denied"))
    with pytest.raises(StorePermissionDenied):
        _copy(faulty, dest)
    assert _open(dest).list_snapshots() == []


class _StopAfter(NullProgress):
    """Stops the job once ``limit`` bytes were transferred (like Ctrl-C in the middle)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.job: CopyJob | None = None
        self.stopped = threading.Event()

    def advance(self, *, files: int = 0, bytes_: int = 0) -> None:
        super().advance(files=files, bytes_=bytes_)
        if self.bytes >= self.limit and self.job is not None:
            self.job.stop()
            self.stopped.set()


def test_an_interrupted_copy_from_a_remote_source_saves_nothing_and_resumes(
    tmp_path: Path,
) -> None:
    data = _data(tmp_path / "data")
    source, dest = _repo(), _repo()
    _backup(source, data)
    progress = _StopAfter(2 * 1024 * 1024)
    with pytest.raises(Interrupted, match="0 snapshot"):
        _copy(RemoteCountingStore(source), dest, progress)
    assert progress.stopped.is_set()
    assert _open(dest).list_snapshots() == []
    result = _copy(RemoteCountingStore(source), dest)
    (outcome,) = result.copied
    assert outcome.stats.blobs_present > 0  # what the first run stored is kept
    target = _restored(dest, tmp_path / "out")
    assert describe(inside(target, data)) == describe(data)
