"""How a restore reads small files' blobs: a batch's nearby blobs in one ranged read per run,
with damage still reported for the one file it affects."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import describe
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.restore import FileRestoreOptions, RestoreJob
from stackvault.errors import IntegrityError
from stackvault.repo.blob import BlobType
from stackvault.repo.pack import pack_name
from stackvault.repo.repository import Repository
from stackvault.store.memory import MemoryStore
from support.countingstore import CountingStore
from support.damage import damage_blob

PW = b"restore reads"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
FILES = 300


def _small_files(root: Path) -> Path:
    rnd = random.Random(7)
    for i in range(FILES):
        sub = root / f"d{i % 5}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"doc-{i}.json").write_bytes(rnd.randbytes(rnd.randint(200, 3000)))
    return root


def _backed_up(tmp_path: Path) -> tuple[MemoryStore, Path]:
    data = _small_files(tmp_path / "data")
    store = MemoryStore()
    Repository.init(store, PW, kdf=FAST_KDF)
    repo = Repository.open(store, PW)
    repo.load_index()
    BackupJob(repo, BackupOptions(paths=[str(data)], workers=2)).run()
    return store, data


def _restore(repo: Repository, target: Path, processes: int = 0) -> RestoreJob:
    """A restore by file threads (reads are counted in this process), or by ``processes``
    child processes (`stackvault.engine.restoreprocs`), which read the same way."""
    options = FileRestoreOptions(target=str(target), processes=processes)
    return RestoreJob(repo, repo.list_snapshots()[-1], options)


def _file_blob(repo: Repository, name: str) -> bytes:
    """The blob id of the file called ``name`` in the latest snapshot."""
    for path, node in repo.iter_tree(repo.list_snapshots()[-1].tree, ""):
        if path.endswith("/" + name):
            assert len(node.content) == 1
            return node.content[0]
    raise AssertionError(f"{name} not in the snapshot")


def test_small_files_are_read_in_a_few_ranged_reads(tmp_path: Path) -> None:
    store, data = _backed_up(tmp_path)
    counting = CountingStore(store)
    repo = Repository.open(counting, PW)
    repo.load_index()
    counting.gets.clear()
    target = tmp_path / "out"
    _restore(repo, target).run()
    assert describe(target / data.relative_to(data.anchor)) == describe(data)
    data_packs = {
        pack_name(entry.pack_id) for _id, entry in repo.index.items() if entry.type == BlobType.DATA
    }
    reads = [g for g in counting.gets if g[0] in data_packs]
    # one read per file before; now about one per batch of files
    assert 0 < len(reads) <= FILES // 20, reads


@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "processes"])
def test_damaged_blob_in_a_run_fails_only_its_file(tmp_path: Path, processes: int) -> None:
    store, data = _backed_up(tmp_path)
    repo = Repository.open(store, PW)
    repo.load_index()
    victim = _file_blob(repo, "doc-42.json")
    damage_blob(store, repo.index_entry(victim))
    target = tmp_path / "out"
    job = _restore(repo, target, processes)
    with pytest.raises(IntegrityError):
        job.run()
    assert job.result.processes == processes
    restored = target / data.relative_to(data.anchor)
    assert [path for path, _why in job.result.failed] == [
        str((restored / "d2" / "doc-42.json").relative_to(target))
    ]
    expected = describe(data)
    del expected["d2/doc-42.json"]
    assert describe(restored) == expected
    assert job.result.files == FILES - 1


@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "processes"])
def test_truncated_pack_still_restores_the_blobs_before_the_cut(
    tmp_path: Path, processes: int
) -> None:
    store, _data = _backed_up(tmp_path)
    repo = Repository.open(store, PW)
    repo.load_index()
    entry = repo.index_entry(_file_blob(repo, "doc-150.json"))
    name = pack_name(entry.pack_id)
    store.put(name, store.get(name)[: entry.offset + 10])  # cut inside that blob
    before = sum(
        1
        for _id, e in repo.index.items()
        if e.pack_id == entry.pack_id and e.type == BlobType.DATA and e.offset < entry.offset
    )
    target = tmp_path / "out"
    job = _restore(repo, target, processes)
    with pytest.raises(IntegrityError):
        job.run()
    # every file whose blob lies wholly before the cut is restored; the others are reported
    assert job.result.files >= before
    assert job.result.files + len(job.result.failed) == FILES
    assert all("truncated" in why or "missing" in why for _p, why in job.result.failed)
