"""The in-memory blob index at scale: ids that share their first bytes, packs dropped, and
what a blob costs in memory."""

from __future__ import annotations

import os
import random
import tracemalloc

from stackvault.repo.blob import BlobType
from stackvault.repo.index import Index
from stackvault.repo.pack import PackedBlob


def _blob(blob_id: bytes, offset: int = 0) -> PackedBlob:
    return PackedBlob(BlobType.DATA, blob_id, offset, 100 + offset, 200 + offset)


def test_ids_sharing_their_first_eight_bytes_are_told_apart() -> None:
    prefix = b"\x00" * 8  # also the hash table's reserved empty key
    a, b, c = prefix + b"a" * 24, prefix + b"b" * 24, prefix + b"c" * 24
    index = Index()
    index.add_pack(b"1" * 32, [_blob(a, 0), _blob(b, 10)])
    index.add_pack(b"2" * 32, [_blob(b, 20)])  # b again: the first copy stays
    assert len(index) == 2
    assert a in index and b in index and c not in index
    found_a, found_b = index.get(a), index.get(b)
    assert found_a is not None and found_a.offset == 0
    assert found_b is not None and (found_b.pack_id, found_b.offset) == (b"1" * 32, 10)
    assert index.get(c) is None
    assert dict(index.items()).keys() == {a, b}


def test_dropping_a_pack_falls_back_to_another_copy_or_reports_the_blob_lost() -> None:
    shared, only, other = os.urandom(32), os.urandom(32), os.urandom(32)
    index = Index()
    index.add_pack(b"1" * 32, [_blob(shared, 0), _blob(only, 5)])
    index.add_pack(b"2" * 32, [_blob(shared, 7), _blob(other, 9)])
    lost = index.drop_packs([b"1" * 32])
    assert lost == {only: b"1" * 32}
    entry = index.get(shared)
    assert entry is not None and (entry.pack_id, entry.offset) == (b"2" * 32, 7)
    assert only not in index and other in index
    assert index.pack_ids() == {b"2" * 32} and len(index) == 2


def test_lookups_do_not_accept_other_shapes() -> None:
    index = Index()
    blob_id = os.urandom(32)
    index.add_pack(b"1" * 32, [_blob(blob_id)])
    assert blob_id[:16] not in index and "x" not in index and index.get(blob_id[:8]) is None
    assert index.get(b"") is None and b"\x01" not in index and not index.has_all([b"ab"])
    assert bytearray(blob_id) in index and memoryview(blob_id) in index
    assert index.has_all([blob_id]) and not index.has_all([blob_id, os.urandom(32)])


def test_each_blob_costs_about_a_hundred_bytes_of_memory() -> None:
    rng = random.Random(3)
    count = 200_000
    packs = [
        (rng.randbytes(32), [_blob(rng.randbytes(32), i) for i in range(1000)])
        for _ in range(count // 1000)
    ]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = Index()
        for pack_id, blobs in packs:
            index.add_pack(pack_id, blobs)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(index) == count
    # 49 bytes of rows plus the hash table's cells; a dict of tuples took ~320 bytes a blob.
    # (tracemalloc sees the Python-side arrays; the table is allocated in C, so RSS is
    # checked by the scale benchmark, not here.)
    assert used / count < 120, f"{used / count:.0f} bytes per blob"
    for pack_id, blobs in packs[::37]:
        for blob in blobs[::101]:
            entry = index.get(blob.blob_id)
            assert entry is not None and (entry.pack_id, entry.offset) == (pack_id, blob.offset)


def test_packs_are_given_one_at_a_time_as_the_whole_copy_gives_them() -> None:
    rng = random.Random(7)
    index = Index()
    for n in range(5):
        index.add_pack(bytes([n]) * 32, [_blob(rng.randbytes(32), i) for i in range(n * 3)])
    index.add_pack(b"\x02" * 32, [_blob(rng.randbytes(32), 99)])  # a second listing of pack 2
    whole = index.packs()
    assert dict(index.iter_packs()) == whole
    assert all(index.pack_blobs(p) == blobs for p, blobs in whole.items())
    assert len(index.pack_blobs(b"\x02" * 32)) == 7
    assert index.pack_blobs(b"\x09" * 32) == [] and index.pack_blobs(b"\x00" * 32) == []
