"""`BlobSet`, the compact set of blob ids prune collects the used blobs in: it answers exactly
like a `set` of the ids, also for ids that share their first eight bytes (the key of its hash
table) and for ids that are not 32 bytes long."""

from __future__ import annotations

import random

from stackvault.repo.blob import BlobType
from stackvault.repo.pack import PackedBlob
from stackvault.repo.prune import BlobSet


def blob(blob_id: bytes) -> PackedBlob:
    return PackedBlob(BlobType.DATA, blob_id, 0, 1, 1)


def test_blobset_answers_like_a_set() -> None:
    rnd = random.Random(7)
    ids = [rnd.randbytes(32) for _ in range(2000)]
    # Same first eight bytes as others (the hash table's key), and odd lengths.
    twins = [i[:8] + rnd.randbytes(24) for i in ids[:50]]
    odd = [b"", b"\x01" * 8, rnd.randbytes(31), rnd.randbytes(33)]
    members = ids[::2] + twins[::2] + odd[::2]
    others = ids[1::2] + twins[1::2] + odd[1::2] + [i[:31] + b"\x00" for i in ids[:20]]
    blobs = BlobSet()
    for blob_id in members:
        assert blobs.add(blob_id)
    reference = set(members)
    assert len(blobs) == len(reference)
    assert not any(blobs.add(blob_id) for blob_id in members)
    assert len(blobs) == len(reference)
    assert sorted(blobs) == sorted(reference)
    assert all(blob_id in blobs for blob_id in members)
    assert not any(blob_id in blobs and blob_id not in reference for blob_id in others)
    assert 5 not in blobs and bytearray(members[0]) not in blobs
    listed = [blob(i) for i in members + others]
    assert blobs.select(listed) == [b for b in listed if b.blob_id in reference]


def test_blobset_from_ids_and_update() -> None:
    ids = [bytes([n]) * 32 for n in range(10)]
    blobs = BlobSet(ids[:4])
    blobs.update(ids[2:7])
    assert len(blobs) == 7 and set(blobs) == set(ids[:7])
    assert blobs.select([]) == [] and len(BlobSet()) == 0 and list(BlobSet()) == []
