"""Restore pack by pack (`PackRestorer`, the default from a remote store): each pack read in
a few long requests, files byte-identical whatever order their blobs arrive in, damage and
store failures reported as on the file-by-file path."""

from __future__ import annotations

import hashlib
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import describe, make_tree
from stackvault.chunking.cdc import ChunkerParams
from stackvault.crypto.kdf import KdfParams
from stackvault.engine import packrestore
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.restore import FileRestoreOptions, RestoreJob
from stackvault.errors import IntegrityError, StorePermissionDenied
from stackvault.fs import writemode
from stackvault.fs.target import RestoreTarget
from stackvault.fs.writemode import WriteMode
from stackvault.repo import spans
from stackvault.repo.blob import BlobType
from stackvault.repo.pack import pack_name
from stackvault.repo.repository import Repository
from stackvault.repo.tree import Node
from stackvault.store.base import Store
from stackvault.store.faulty import FaultyStore
from stackvault.store.memory import MemoryStore
from support.countingstore import RemoteCountingStore
from support.damage import damage_blob

PW = b"pack restore"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
SMALL_CHUNKS = ChunkerParams(min=1024, avg=4096, max=16 * 1024)
PACK = 512 * 1024


def _data(root: Path) -> Path:
    """make_tree's mix (small, empty, symlink, hard link) plus files of many blobs across
    several packs, one with long zero runs (one blob written at many offsets)."""
    make_tree(root, files=40)
    rnd = random.Random(3)
    (root / "big").mkdir()
    for i in range(3):
        (root / "big" / f"upload-{i}.bin").write_bytes(rnd.randbytes(700_000 + i * 1000))
    (root / "big" / "dump.sql").write_text(
        "".join(f"INSERT INTO t VALUES ({i}, '{rnd.random()}');\n" for i in range(40_000))
    )
    (root / "big" / "sparse.img").write_bytes(
        rnd.randbytes(5000) + bytes(300_000) + rnd.randbytes(7000) + bytes(200_000)
    )
    return root


def _backed_up(tmp_path: Path) -> tuple[MemoryStore, Path]:
    data = _data(tmp_path / "data")
    store = MemoryStore()
    Repository.init(store, PW, kdf=FAST_KDF, chunker=SMALL_CHUNKS, pack_size=PACK)
    repo = Repository.open(store, PW)
    repo.load_index()
    BackupJob(repo, BackupOptions(paths=[str(data)], workers=2)).run()
    return store, data


def _open(store: Store) -> Repository:
    repo = Repository.open(store, PW)
    repo.load_index()
    return repo


def _job(repo: Repository, target: Path, **options: object) -> RestoreJob:
    return RestoreJob(
        repo,
        repo.list_snapshots()[-1],
        FileRestoreOptions(target=str(target), **options),  # type: ignore[arg-type]
    )


def _data_packs(repo: Repository) -> set[str]:
    return {pack_name(e.pack_id) for _i, e in repo.index.items() if e.type == BlobType.DATA}


def _nodes(repo: Repository) -> dict[str, Node]:
    return {
        path: node
        for path, node in repo.iter_tree(repo.list_snapshots()[-1].tree, "")
        if node.type == "file"
    }


def test_a_remote_restore_reads_each_data_pack_once(tmp_path: Path) -> None:
    store, data = _backed_up(tmp_path)
    counting = RemoteCountingStore(store)
    repo = _open(counting)
    packs = _data_packs(repo)
    blobs = sum(1 for _i, e in repo.index.items() if e.type == BlobType.DATA)
    assert len(packs) >= 4 and blobs > 20 * len(packs)  # a test of many blobs per pack
    counting.gets.clear()
    target = tmp_path / "out"
    result = _job(repo, target).run()
    assert describe(target / data.relative_to(data.anchor)) == describe(data)
    assert result.hardlinks == 1 and not result.failed
    reads = sorted(g[0] for g in counting.gets if g[0] in packs)
    assert reads == sorted(packs)  # one request per pack, not one per blob


def test_a_partial_restore_reads_only_what_its_files_need(tmp_path: Path) -> None:
    store, data = _backed_up(tmp_path)
    counting = RemoteCountingStore(store)
    repo = _open(counting)
    nodes = _nodes(repo)
    wanted = [n for p, n in nodes.items() if "/big/upload-" in p]
    assert len(wanted) == 3
    needed = {repo.index_entry(b).pack_id for n in wanted for b in n.content}
    counting.gets.clear()
    target = tmp_path / "out"
    result = _job(repo, target, include=["**/big/upload-*"]).run()
    assert result.files == 3
    restored = target / data.relative_to(data.anchor)
    assert describe(restored / "big") == {
        k.removeprefix("big/"): v for k, v in describe(data).items() if k.startswith("big/upload-")
    }
    read = [g for g in counting.gets if g[0] in _data_packs(repo)]
    assert {g[0] for g in read} == {pack_name(p) for p in needed}
    needed_bytes = sum(repo.index_entry(b).length for n in wanted for b in n.content)
    assert sum(g[2] or 0 for g in read) < needed_bytes + len(read) * spans.SPAN_GAP


@pytest.mark.parametrize("ahead_bytes", [0, 64 << 20], ids=["read-back", "held"])
def test_blobs_in_any_order_give_identical_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead_bytes: int
) -> None:
    """Spans of a few blobs on four threads: a file's blobs arrive out of order, and its
    hash is taken in file order from held plaintext or from what was written."""
    store, data = _backed_up(tmp_path)
    monkeypatch.setattr(spans, "SPAN_MAX", 16 * 1024)
    monkeypatch.setattr(packrestore, "AHEAD_BYTES", ahead_bytes)
    monkeypatch.setattr(packrestore, "WINDOW_FILES", 7)  # windows cut through the tree
    target = tmp_path / "out"
    result = _job(_open(store), target, by_pack=True, workers=4).run()
    assert describe(target / data.relative_to(data.anchor)) == describe(data)
    assert result.files == len(_nodes(_open(store))) - result.hardlinks


@pytest.mark.parametrize("ahead_bytes", [0, 64 << 20], ids=["read-back", "held"])
def test_a_file_written_back_to_front_is_hashed_front_to_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead_bytes: int
) -> None:
    monkeypatch.setattr(packrestore, "AHEAD_BYTES", ahead_bytes)
    blobs = [random.Random(i).randbytes(1000 + i) for i in range(6)]
    whole = b"".join(blobs)
    node = Node(name="f", type="file", size=len(whole), content=[b"%d" % i for i in range(6)])
    target = RestoreTarget(str(tmp_path / "out"), overwrite=False)
    target.prepare()
    task = packrestore._FileTask(["f"], node)
    task.writer = target.open_file(["f"], len(whole))
    held = packrestore._Held()
    offsets = [sum(len(b) for b in blobs[:i]) for i in range(6)]
    last = False
    for i in (3, 5, 4, 1, 2, 0):
        task.writer.pwrite(offsets[i], blobs[i])
        last = task.written(offsets[i], blobs[i], None, held, wrote=True)
    assert last and task.failed is None
    assert task.cursor == len(whole) and not task.ahead and held.bytes == 0
    assert task.sha.hexdigest() == hashlib.sha256(whole).hexdigest()
    task.writer.abort()
    target.close()


@pytest.fixture
def staged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of 64 KiB and more written through stages of 8 KiB, two files at a time."""
    monkeypatch.setattr(packrestore, "STAGE_MIN", 64 * 1024)
    monkeypatch.setattr(packrestore, "STAGE_BYTES", 8192)
    monkeypatch.setattr(packrestore, "STAGED_FILES", 2)


@pytest.mark.parametrize("ahead_bytes", [0, 64 << 20], ids=["unstaged", "held"])
def test_large_files_through_stages_are_identical_whatever_the_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, staged: None, ahead_bytes: int
) -> None:
    """Spans of a few blobs on four threads: the staged files' blobs arrive out of order
    and are appended in file order (held), or the files give their stages back (no room
    to hold) and are written blob by blob; more large files than pairs of stages."""
    store, data = _backed_up(tmp_path)
    monkeypatch.setattr(spans, "SPAN_MAX", 16 * 1024)
    monkeypatch.setattr(packrestore, "AHEAD_BYTES", ahead_bytes)
    monkeypatch.setattr(writemode, "RECORD_MIN", 0)  # stages of 8 KiB measured too
    lent: list[int] = []
    lend = packrestore._Stages.lend

    def counted(pool: packrestore._Stages) -> packrestore.Pair | None:
        pair = lend(pool)
        lent.append(pair is not None)
        return pair

    monkeypatch.setattr(packrestore._Stages, "lend", counted)
    large = sum(1 for n in _nodes(_open(store)).values() if n.size >= 64 * 1024)
    target = tmp_path / "out"
    result = _job(_open(store), target, by_pack=True, workers=4).run()
    assert describe(target / data.relative_to(data.anchor)) == describe(data)
    assert not result.failed
    assert len(lent) == large >= 5 and sum(lent) >= 2
    assert result.writes is not None and result.writes.chosen is not None  # stages written


def _blobs_and_task(
    tmp_path: Path, sizes: list[int]
) -> tuple[list[bytes], list[int], packrestore._FileTask, RestoreTarget]:
    blobs = [random.Random(i).randbytes(n) for i, n in enumerate(sizes)]
    node = Node(
        name="f", type="file", size=sum(sizes), content=[b"%d" % i for i in range(len(sizes))]
    )
    target = RestoreTarget(str(tmp_path / "out"), overwrite=False)
    target.prepare()
    task = packrestore._FileTask(["f"], node)
    task.writer = target.open_file(["f"], node.size)
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    return blobs, offsets, task, target


def test_a_staged_file_holds_early_blobs_and_writes_in_file_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packrestore, "STAGE_BYTES", 8192)
    blobs, offsets, task, target = _blobs_and_task(tmp_path, [5000] * 6)
    pool, held = packrestore._Stages(), packrestore._Held()
    with ThreadPoolExecutor(1) as writes:
        task.stage(pool, writes, WriteMode())
        assert task.stages is not None
        for i in (3, 5, 4, 1, 2):
            assert not task.written(offsets[i], blobs[i], None, held, wrote=False)
        assert held.bytes == 25_000 and task.cursor == 0
        path = Path(target.root) / "f"
        assert not path.read_bytes().strip(b"\0")  # held, not written yet
        assert task.written(offsets[0], blobs[0], None, held, wrote=False)
        assert task.cursor == 30_000 and held.bytes == 0 and not task.ahead
        task.writer.commit(0o644, 0, 0, 0)
    task.give_back()
    assert task.stages is None and len(pool._free) == 1  # back, for the next file
    assert path.read_bytes() == b"".join(blobs)
    assert task.sha.hexdigest() == hashlib.sha256(b"".join(blobs)).hexdigest()
    target.close()


def test_a_staged_file_without_room_to_hold_goes_on_blob_by_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first blob is staged, the third held; the fourth arrives early with no room left
    to hold it: the staged bytes and the held blob are written, the stages go back, and the
    rest is written as it arrives (hashed in order from what was held or read back)."""
    monkeypatch.setattr(packrestore, "STAGE_BYTES", 8192)
    monkeypatch.setattr(packrestore, "AHEAD_BYTES", 6000)
    blobs, offsets, task, target = _blobs_and_task(tmp_path, [5000] * 6)
    pool, held = packrestore._Stages(), packrestore._Held()
    with ThreadPoolExecutor(1) as writes:
        task.stage(pool, writes, WriteMode())
        for i in (0, 2):
            assert not task.written(offsets[i], blobs[i], None, held, wrote=False)
        assert task.stages is not None and task.cursor == 5000 and held.bytes == 5000
        assert not task.written(offsets[3], blobs[3], None, held, wrote=False)
        assert task.stages is None and pool._free  # given back
        path = Path(target.root) / "f"
        assert path.read_bytes() == blobs[0] + bytes(5000) + blobs[2] + blobs[3]
        for i in (1, 5):
            assert not task.written(offsets[i], blobs[i], None, held, wrote=False)
        assert held.bytes == 5000 and task.cursor == 20_000  # the last one held for the hash
        assert task.written(offsets[4], blobs[4], None, held, wrote=False)
        task.writer.commit(0o644, 0, 0, 0)
    assert path.read_bytes() == b"".join(blobs)
    assert task.sha.hexdigest() == hashlib.sha256(b"".join(blobs)).hexdigest()
    target.close()


@pytest.mark.parametrize(
    ("victim", "stages"),
    [("upload-1.bin", False), ("dump.sql", True)],
    ids=["blob-by-blob", "through-stages"],
)
def test_a_damaged_blob_fails_only_the_files_holding_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    victim: str,
    stages: bool,
) -> None:
    if stages:
        request.getfixturevalue("staged")
        monkeypatch.setattr(packrestore, "STAGED_FILES", 8)  # stages for every large file
    store, data = _backed_up(tmp_path)
    repo = _open(store)
    nodes = _nodes(repo)
    content = nodes[next(p for p in nodes if p.endswith(victim))].content
    assert len(content) > 4
    damage_blob(store, repo.index_entry(content[len(content) // 2]))
    staged_files: list[str] = []  # the files that had stages when they ended
    give_back = packrestore._FileTask.give_back

    def seen(task: packrestore._FileTask) -> None:
        if task.stages is not None:
            staged_files.append(task.rel[-1])
        give_back(task)

    monkeypatch.setattr(packrestore._FileTask, "give_back", seen)
    target = tmp_path / "out"
    job = _job(_open(RemoteCountingStore(store)), target)
    with pytest.raises(IntegrityError, match="1 file"):
        job.run()
    assert (victim in staged_files) == stages
    (failed, why), *more = job.result.failed
    assert not more and failed.endswith(f"big/{victim}") and "damaged" in why
    expected = describe(data)
    del expected[f"big/{victim}"]
    assert describe(target / data.relative_to(data.anchor)) == expected  # none half-written


def test_a_missing_pack_fails_its_files_and_the_rest_is_restored(tmp_path: Path) -> None:
    store, data = _backed_up(tmp_path)
    repo = _open(store)
    nodes = _nodes(repo)
    pack_id = repo.index_entry(next(iter(nodes[next(p for p in nodes if "dump" in p)].content)))
    gone = pack_id.pack_id
    hit = {
        p for p, n in nodes.items() if any(repo.index_entry(b).pack_id == gone for b in n.content)
    }
    store.delete(pack_name(gone))
    target = tmp_path / "out"
    counting = RemoteCountingStore(store)
    job = _job(_open(counting), target)
    with pytest.raises(IntegrityError):
        job.run()
    # The restore lists the packs first: the missing one is never asked for.
    assert [g[0] for g in counting.gets].count(pack_name(gone)) == 0
    assert {p.lstrip("/") for p, _w in job.result.failed} <= {p.lstrip("/") for p in hit}
    assert job.result.failed and all("missing" in why for _p, why in job.result.failed)
    restored = describe(target / data.relative_to(data.anchor))
    original = describe(data)
    for rel, what in restored.items():
        assert original[rel] == what  # whatever is there is whole
    assert len(restored) >= len(original) - len(hit)


def test_a_refused_read_stops_the_restore_and_keeps_no_partial_file(tmp_path: Path) -> None:
    store, data = _backed_up(tmp_path)
    faulty = FaultyStore(store)
    repo = _open(faulty)
    packs = sorted(_data_packs(repo))
    seen = threading.Event()

    def refused(name: str) -> bool:
        if name == packs[len(packs) // 2]:
            seen.set()
            return True
        return False

    faulty.fail_get(refused, StorePermissionDenied("access denied to the pack"))
    target = tmp_path / "out"
    with pytest.raises(StorePermissionDenied):
        _job(repo, target, by_pack=True, workers=2).run()
    assert seen.is_set()
    original = describe(data)
    for rel, what in describe(target / data.relative_to(data.anchor)).items():
        assert original[rel] == what or what[0] == "dir"  # no file cut short
