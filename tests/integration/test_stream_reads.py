"""Reading one file's plaintext as a stream (`dump`, artifact readers, tar export): read
ahead, from a remote store in runs of nearby blobs, damage raised at its place."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from stackvault.chunking.cdc import ChunkerParams
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.filedata import find_node, open_file_node, read_file_blobs
from stackvault.errors import IntegrityError
from stackvault.repo.pack import pack_name
from stackvault.repo.repository import Repository
from stackvault.repo.tree import Node
from stackvault.store.base import Store
from stackvault.store.memory import MemoryStore
from support.countingstore import CountingStore, RemoteCountingStore
from support.damage import damage_blob

PW = b"stream reads"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
SMALL_CHUNKS = ChunkerParams(min=1024, avg=4096, max=16 * 1024)
PACK = 512 * 1024


def _backed_up(tmp_path: Path) -> tuple[MemoryStore, Path, bytes]:
    data = tmp_path / "data"
    data.mkdir()
    rnd = random.Random(11)
    body = b"".join(rnd.randbytes(3000) + b"x" * rnd.randint(0, 5000) for _ in range(400)) + bytes(
        100_000
    )
    (data / "dump.sql").write_bytes(body)
    store = MemoryStore()
    Repository.init(store, PW, kdf=FAST_KDF, chunker=SMALL_CHUNKS, pack_size=PACK)
    repo = Repository.open(store, PW)
    repo.load_index()
    BackupJob(repo, BackupOptions(paths=[str(data)], workers=2)).run()
    return store, data, body


def _node(store: Store, data: Path) -> tuple[Repository, Node]:
    repo = Repository.open(store, PW)
    repo.load_index()
    return repo, find_node(repo, repo.list_snapshots()[-1], str(data / "dump.sql"))


@pytest.mark.parametrize("remote", [True, False], ids=["remote", "local"])
def test_a_stream_reads_the_whole_file_in_order(tmp_path: Path, remote: bool) -> None:
    store, data, body = _backed_up(tmp_path)
    counting = RemoteCountingStore(store) if remote else CountingStore(store)
    repo, node = _node(counting, data)
    blobs = len(node.content)
    assert blobs > 100
    counting.gets.clear()
    with open_file_node(repo, node) as stream:
        assert hashlib.sha256(stream.read()).digest() == hashlib.sha256(body).digest()
    packs = {pack_name(repo.index_entry(b).pack_id) for b in node.content}
    reads = [g for g in counting.gets if g[0] in packs]
    if remote:
        assert len(packs) <= len(reads) < blobs // 10  # runs of nearby blobs, not blobs
    else:
        assert len(reads) == blobs


def test_a_damaged_blob_raises_after_the_bytes_before_it(tmp_path: Path) -> None:
    store, data, body = _backed_up(tmp_path)
    repo, node = _node(store, data)
    k = len(node.content) // 2
    damage_blob(store, repo.index_entry(node.content[k]))
    repo, node = _node(RemoteCountingStore(store), data)
    got: list[bytes] = []
    with pytest.raises(IntegrityError, match="damaged"):
        for piece in read_file_blobs(repo, node):
            got.append(bytes(piece))
    before = sum(repo.index_entry(b).raw_length for b in node.content[:k])
    assert b"".join(got) == body[:before]  # everything before the damage, nothing after


def test_a_missing_pack_is_named(tmp_path: Path) -> None:
    store, data, _body = _backed_up(tmp_path)
    repo, node = _node(store, data)
    gone = repo.index_entry(node.content[-1]).pack_id
    store.delete(pack_name(gone))
    repo, node = _node(RemoteCountingStore(store), data)
    with pytest.raises(IntegrityError, match="is missing"):
        for _piece in read_file_blobs(repo, node):
            pass
