"""Small blobs are sealed in batches on the writer's pool (one zstd call per batch): every one
is stored and readable after `flush`, deduplicated while it waits, dropped on an aborted
close, and a failure while a batch is stored fails the writer. `BlobCodec.encode_many` makes
exactly what `encode` makes, blob by blob."""

from __future__ import annotations

import random

import pytest

from stackvault.crypto.kdf import KdfParams
from stackvault.errors import StackvaultError, StoreError
from stackvault.repo.blob import ENCODING_RAW, ENCODING_ZSTD, BlobCodec, BlobType, blob_aad
from stackvault.repo.repository import Repository
from stackvault.repo.writer import BATCH_BLOBS
from stackvault.store.faulty import FaultyStore
from stackvault.store.memory import MemoryStore

PW = b"pw"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)


def payloads(count: int, seed: int = 3) -> list[bytes]:
    """Small blobs of every kind: empty, below the compression threshold, compressible
    JSON-like text and incompressible bytes."""
    rnd = random.Random(seed)
    out: list[bytes] = [b"", b"x", b"63 bytes" * 7 + b"1234567"]
    while len(out) < count:
        if len(out) % 2:
            words = " ".join(rnd.choice(["tenant", "doc", "value", "id"]) for _ in range(300))
            out.append(f'{{"n": {len(out)}, "text": "{words}"}}'.encode())
        else:
            out.append(rnd.randbytes(rnd.randrange(100, 4000)))
    return out


def test_encode_many_matches_encode_blob_by_blob() -> None:
    codec = BlobCodec()
    blobs = payloads(50)
    many = codec.encode_many(blobs)
    assert len(many) == len(blobs)
    kinds = set()
    for blob, encoded in zip(blobs, many, strict=True):
        single = codec.encode(blob)
        assert encoded[0] == single[0]  # the same raw-or-zstd decision
        kinds.add(encoded[0])
        assert bytes(codec.decode(encoded, len(blob))) == blob
        if encoded[0] == ENCODING_RAW:
            assert encoded == single
    assert kinds == {ENCODING_RAW, ENCODING_ZSTD}
    assert codec.encode_many([]) == []


def test_small_blobs_of_both_types_are_stored_by_flush() -> None:
    store = MemoryStore()
    repo = Repository.init(store, PW, kdf=FAST_KDF)
    writer = repo.writer()
    blobs = payloads(3 * BATCH_BLOBS + 5)  # full batches and a partial one
    data_ids = [writer.save(BlobType.DATA, b)[0] for b in blobs]
    tree = b'{"nodes":[]}'
    tree_id, added = writer.save(BlobType.TREE, tree)
    assert added
    # Saved again while still waiting in a batch: not stored twice.
    assert writer.save(BlobType.DATA, blobs[-1]) == (data_ids[-1], False)
    writer.flush()
    writer.close()
    assert writer.stats.blobs_added == len(blobs) + 1

    again = Repository.open(store, PW)
    again.load_index()
    assert len(again.index) == len(blobs) + 1
    for blob_id, blob in zip(data_ids, blobs, strict=True):
        assert bytes(again.load_blob(blob_id)) == blob
    assert bytes(again.load_blob(tree_id)) == tree
    tree_entry = again.index.get(tree_id)
    assert tree_entry is not None and tree_entry.type == BlobType.TREE
    assert all(again.index.get(i).pack_id != tree_entry.pack_id for i in data_ids)  # type: ignore[union-attr]


def test_an_aborted_close_drops_the_waiting_batch() -> None:
    store = MemoryStore()
    repo = Repository.init(store, PW, kdf=FAST_KDF)
    writer = repo.writer()
    blobs = payloads(5)  # fewer than a batch: all still waiting
    for b in blobs:
        writer.save(BlobType.DATA, b)
    writer.close(commit=False)
    assert writer.stats.blobs_added == 0
    assert not list(store.list("data/"))

    # Nothing is left reserved or half-stored: the next writer stores them all.
    again = Repository.open(store, PW)
    again.load_index()
    w2 = again.writer()
    assert all(w2.save(BlobType.DATA, b)[1] for b in blobs)
    w2.flush()
    w2.close()
    assert w2.stats.blobs_added == len(blobs)


def test_a_failing_upload_of_batched_blobs_fails_the_writer() -> None:
    faulty = FaultyStore(MemoryStore())
    repo = Repository.init(faulty, PW, kdf=FAST_KDF, pack_size=512 * 1024)
    faulty.fail_put(lambda n: n.startswith("data/"), StoreError("disk on fire"))
    writer = repo.writer()
    with pytest.raises(StackvaultError, match="disk on fire"):
        # ~2.5 MB of small blobs: several packs; the failure surfaces while saving or at flush.
        for b in payloads(2400):
            writer.save(BlobType.DATA, b)
        writer.flush()
    writer.close(commit=False)
    assert not list(faulty.inner.list("index/"))


def test_blobs_sealed_elsewhere_are_stored_once() -> None:
    store = MemoryStore()
    repo = Repository.init(store, PW, kdf=FAST_KDF)
    writer = repo.writer()
    stored_id, _ = writer.save(BlobType.DATA, b"stored by the writer itself")
    blobs = [b"first", b"second", b"stored by the writer itself"]
    ids = [repo.blob_id(b) for b in blobs]
    # Sealed as a backup's child process seals them.
    boxes = repo.envelope.seal_many(
        repo.codec().encode_many(blobs), [blob_aad(BlobType.DATA, i) for i in ids]
    )
    sealed = [
        (BlobType.DATA, blob_id, box, len(b))
        for blob_id, box, b in zip(ids, boxes, blobs, strict=True)
    ]
    writer.store_sealed(sealed)
    writer.store_sealed(sealed[:1])  # already being stored: not again
    writer.flush()
    assert ids[2] == stored_id
    assert writer.stats.blobs_added == 3  # the writer's own and the two new ones
    for blob_id, b in zip(ids, blobs, strict=True):
        assert bytes(repo.load_blob(blob_id)) == b
