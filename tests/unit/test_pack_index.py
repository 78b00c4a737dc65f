"""Unit tests of the repository's binary formats: pack files, index files, the blob codec, trees
and the keyed content-defined chunker (FORMAT.md §5, §6, §8)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import struct

import pytest
import zstandard

from stackvault.chunking.cdc import Chunker, ChunkerParams
from stackvault.crypto.envelope import OVERHEAD
from stackvault.crypto.masterkey import MasterKey
from stackvault.errors import IntegrityError, UnsupportedFormat
from stackvault.repo.blob import BlobCodec, BlobType, blob_aad
from stackvault.repo.index import (
    INDEX_AAD,
    Index,
    decode_index,
    decode_index_file,
    encode_index,
)
from stackvault.repo.pack import (
    HEADER_AAD,
    PackBuilder,
    PackedBlob,
    header_length_hint,
    pack_name,
    read_pack_header,
    storage_id,
)
from stackvault.repo.tree import Node, decode_tree, encode_tree, valid_name

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def master() -> MasterKey:
    return MasterKey.generate()


def build_pack(
    master: MasterKey, blob_type: BlobType, payloads: list[bytes]
) -> tuple[bytes, bytes, list[tuple[bytes, int, int]]]:
    """A real pack of ``payloads``: (pack id, pack bytes, [(blob id, stored len, raw len)])."""
    env = master.envelope()
    codec = BlobCodec()
    builder = PackBuilder(blob_type)
    expected = []
    for p in payloads:
        blob_id = master.blob_id(p)
        sealed = env.seal(codec.encode(p), blob_aad(blob_type, blob_id))
        builder.add(blob_id, sealed, len(p))
        expected.append((blob_id, len(sealed), len(p)))
    pack_id, parts = builder.finish(env)
    data = b"".join(parts)
    return pack_id, data, expected


# --- packs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("blob_type", [BlobType.DATA, BlobType.TREE])
def test_pack_header_round_trip(master: MasterKey, blob_type: BlobType) -> None:
    rnd = random.Random(3)
    payloads = [b"", b"x", b"a" * 5000, rnd.randbytes(100_000), rnd.randbytes(17), b"a" * 5000]
    pack_id, data, expected = build_pack(master, blob_type, payloads)
    assert pack_id == storage_id(data)
    assert pack_name(pack_id) == f"data/{pack_id.hex()[:2]}/{pack_id.hex()}"

    entries = read_pack_header(master.envelope(), data, len(data))
    assert [e.blob_id for e in entries] == [e[0] for e in expected]
    assert [e.length for e in entries] == [e[1] for e in expected]
    assert [e.raw_length for e in entries] == [len(p) for p in payloads]
    assert all(e.type == blob_type for e in entries)
    offsets = [e.offset for e in entries]
    assert offsets[0] == 0
    assert offsets == [sum(e[1] for e in expected[:i]) for i in range(len(expected))]

    # Each blob opens at its offset with its type and id, and decodes to the payload.
    env, codec = master.envelope(), BlobCodec()
    for e, payload in zip(entries, payloads, strict=True):
        sealed = data[e.offset : e.offset + e.length]
        plain = codec.decode(env.open(sealed, blob_aad(blob_type, e.blob_id)), e.raw_length)
        assert bytes(plain) == payload
        # The AAD binds the type: the same bytes do not open as the other type.
        other = BlobType.TREE if blob_type == BlobType.DATA else BlobType.DATA
        with pytest.raises(IntegrityError):
            env.open(sealed, blob_aad(other, e.blob_id))

    # Reading only the tail (as the index rebuild does with a ranged get) gives the same.
    hint = header_length_hint(len(payloads))
    assert read_pack_header(master.envelope(), data[-hint:], len(data)) == entries


def test_pack_of_many_blobs_is_built_from_parts(master: MasterKey) -> None:
    """A pack is handed to the store as parts; their concatenation is the pack, its id is the
    hash of that concatenation, and the header describes every blob at its offset."""
    builder = PackBuilder(BlobType.DATA)
    blobs = [(bytes([i]) * 32, bytes([i]) * 3000) for i in range(200)]
    for blob_id, sealed in blobs:
        builder.add(blob_id, sealed, len(sealed))
    pack_id, parts = builder.finish(master.envelope())
    data = b"".join(parts)
    assert pack_id == storage_id(data)
    entries = read_pack_header(master.envelope(), data, len(data))
    assert [e.blob_id for e in entries] == [b for b, _ in blobs]
    for e, (_, sealed) in zip(entries, blobs, strict=True):
        assert data[e.offset : e.offset + e.length] == sealed


def test_empty_pack_header(master: MasterKey) -> None:
    _, data, _ = build_pack(master, BlobType.DATA, [])
    assert read_pack_header(master.envelope(), data, len(data)) == []
    assert len(data) == header_length_hint(0)


def test_pack_header_wrong_size_is_integrity_error(master: MasterKey) -> None:
    _, data, _ = build_pack(master, BlobType.DATA, [b"one" * 100, b"two" * 100])
    env = master.envelope()
    for size in (len(data) - 1, len(data) + 1, len(data) * 2, 0):
        with pytest.raises(IntegrityError, match="size"):
            read_pack_header(env, data, size)


def test_pack_damaged_header_is_integrity_error(master: MasterKey) -> None:
    _, data, _ = build_pack(master, BlobType.DATA, [os.urandom(300), os.urandom(300)])
    env = master.envelope()
    (hlen,) = struct.unpack("<I", data[-4:])
    header_start = len(data) - 4 - hlen
    # Every byte of the sealed header and of the trailer.
    for pos in range(header_start, len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x04
        with pytest.raises(IntegrityError):
            read_pack_header(env, bytes(damaged), len(damaged))


@pytest.mark.parametrize("keep", [0, 1, 3, 4, 20, -1])
def test_truncated_pack_is_integrity_error(master: MasterKey, keep: int) -> None:
    _, data, _ = build_pack(master, BlobType.DATA, [os.urandom(1000)])
    cut = data[:keep] if keep >= 0 else data[:-1]
    with pytest.raises(IntegrityError):
        read_pack_header(master.envelope(), cut, len(cut))


def test_pack_header_under_another_key_is_integrity_error(master: MasterKey) -> None:
    _, data, _ = build_pack(master, BlobType.DATA, [b"payload" * 50])
    with pytest.raises(IntegrityError):
        read_pack_header(MasterKey.generate().envelope(), data, len(data))


def test_pack_header_with_partial_entry_is_integrity_error(master: MasterKey) -> None:
    """An authenticated header whose length is not a multiple of the entry size."""
    env = master.envelope()
    sealed = env.seal(b"\x00" * 40, HEADER_AAD)
    data = sealed + struct.pack("<I", len(sealed))
    with pytest.raises(IntegrityError, match="partial"):
        read_pack_header(env, data, len(data))


def test_pack_blob_data_damage_is_caught_by_the_blob_envelope(master: MasterKey) -> None:
    """A flip inside a blob leaves the header intact but the blob fails to open."""
    payload = os.urandom(5000)
    _, data, _ = build_pack(master, BlobType.DATA, [payload])
    damaged = bytearray(data)
    damaged[100] ^= 0x01
    entries = read_pack_header(master.envelope(), bytes(damaged), len(damaged))
    e = entries[0]
    assert storage_id(bytes(damaged)) != storage_id(data)  # the name no longer matches
    with pytest.raises(IntegrityError):
        master.envelope().open(damaged[e.offset : e.offset + e.length], blob_aad(e.type, e.blob_id))


# --- index files --------------------------------------------------------------------------------


def random_packs(rnd: random.Random, count: int) -> list[tuple[bytes, list[PackedBlob]]]:
    packs = []
    for _ in range(count):
        n = rnd.choice([0, 1, 2, 7, 50])
        kind = rnd.choice([BlobType.DATA, BlobType.TREE])
        blobs, offset = [], 0
        for _ in range(n):
            length = rnd.randint(OVERHEAD + 1, 9 * MIB)
            blobs.append(PackedBlob(kind, rnd.randbytes(32), offset, length, rnd.randint(0, MIB)))
            offset += length
        packs.append((rnd.randbytes(32), blobs))
    return packs


@pytest.mark.parametrize("count", [0, 1, 3, 500])
def test_index_round_trip(master: MasterKey, count: int) -> None:
    packs = random_packs(random.Random(count), count)
    data = encode_index(master.envelope(), packs)
    assert decode_index(master.envelope(), data) == packs


def test_index_of_many_packs_loads_into_index(master: MasterKey) -> None:
    packs = random_packs(random.Random(9), 300)
    decoded = decode_index(master.envelope(), encode_index(master.envelope(), packs))
    index = Index()
    for pack_id, blobs in decoded:
        index.add_pack(pack_id, blobs)
    total = sum(len(b) for _, b in packs)
    assert len(index) == total
    assert index.pack_ids() == {p for p, _ in packs}
    for pack_id, blobs in packs:
        for b in blobs:
            e = index.get(b.blob_id)
            assert e is not None
            assert (e.pack_id, e.offset, e.length, e.raw_length, e.type) == (
                pack_id,
                b.offset,
                b.length,
                b.raw_length,
                b.type,
            )


def test_index_blob_listed_twice_keeps_first_copy() -> None:
    blob = b"b" * 32
    index = Index()
    index.add_pack(b"1" * 32, [PackedBlob(BlobType.DATA, blob, 0, 100, 50)])
    index.add_pack(b"2" * 32, [PackedBlob(BlobType.DATA, blob, 40, 100, 50)])
    entry = index.get(blob)
    assert entry is not None and entry.pack_id == b"1" * 32 and entry.offset == 0
    assert len(index) == 1
    assert set(index.packs()) == {b"1" * 32, b"2" * 32}


def test_truncated_or_tampered_index_is_integrity_error(master: MasterKey) -> None:
    env = master.envelope()
    data = encode_index(env, random_packs(random.Random(5), 4))
    for n in (0, 1, 12, 27, 28, len(data) // 2, len(data) - 1):
        with pytest.raises(IntegrityError):
            decode_index(env, data[:n])
    rnd = random.Random(6)
    for pos in [0, 11, 12, len(data) - 1, *rnd.sample(range(len(data)), 30)]:
        damaged = bytearray(data)
        damaged[pos] ^= 1 << rnd.randrange(8)
        with pytest.raises(IntegrityError):
            decode_index(env, bytes(damaged))
    with pytest.raises(IntegrityError):
        decode_index(MasterKey.generate().envelope(), data)
    # A snapshot envelope is not an index, even under the right key.
    with pytest.raises(IntegrityError):
        decode_index(env, env.seal(b"SVIX\x01\x00\x00\x00\x00", b"sv1:snapshot"))


def _sealed_index(master: MasterKey, plain: bytes) -> bytes:
    return master.envelope().seal(plain, INDEX_AAD)


def test_authentic_but_malformed_index_is_integrity_error(master: MasterKey) -> None:
    """Content that authenticates but is structurally wrong (a bug in a writer)."""
    head = struct.pack("<4sBI", b"SVIX", 1, 1)
    pack = struct.pack("<32sI", b"p" * 32, 2)
    entry = struct.pack("<BIII32s", 0, 0, 100, 50, b"b" * 32)
    good = head + pack + entry + entry
    assert len(decode_index(master.envelope(), _sealed_index(master, good))[0][1]) == 2
    cases = {
        "bad magic": struct.pack("<4sBI", b"XXXX", 1, 1) + pack + entry + entry,
        "short header": b"SVIX",
        "count too high": struct.pack("<4sBI", b"SVIX", 1, 2) + pack + entry + entry,
        "entries missing": head + pack + entry,
        "trailing bytes": good + b"\x00",
        "unknown blob type": head + pack + entry + struct.pack("<BIII32s", 9, 0, 1, 1, b"c" * 32),
    }
    for name, plain in cases.items():
        with pytest.raises(IntegrityError):
            decode_index(master.envelope(), _sealed_index(master, plain))
            pytest.fail(f"{name} was accepted")


def test_index_of_a_future_version_is_unsupported(master: MasterKey) -> None:
    plain = struct.pack("<4sBI", b"SVIX", 3, 0)
    with pytest.raises(UnsupportedFormat):
        decode_index(master.envelope(), _sealed_index(master, plain))


def test_version_2_index_round_trips_the_superseded_ids(master: MasterKey) -> None:
    packs = random_packs(random.Random(9), 3)
    old = [bytes([i]) * 32 for i in range(1, 4)]
    data = encode_index(master.envelope(), packs, supersedes=old)
    decoded = decode_index_file(master.envelope(), data)
    assert decoded.packs == packs
    assert decoded.supersedes == old
    assert (
        decode_index_file(master.envelope(), encode_index(master.envelope(), packs)).supersedes
        == []
    )


def test_version_2_index_with_a_cut_supersede_list_is_damage(master: MasterKey) -> None:
    plain = struct.pack("<4sBI", b"SVIX", 2, 0) + struct.pack("<I", 2) + b"x" * 40
    with pytest.raises(IntegrityError):
        decode_index_file(master.envelope(), _sealed_index(master, plain))


# --- blob codec ---------------------------------------------------------------------------------


def test_codec_compresses_compressible_data() -> None:
    codec = BlobCodec()
    text = b"".join(b"line %d of a very repetitive log file\n" % (i % 100) for i in range(20000))
    enc = codec.encode(text)
    assert enc[0] == 1
    assert len(enc) < len(text) // 5
    # The payload is one standard zstd frame.
    assert zstandard.ZstdDecompressor().decompress(enc[1:], max_output_size=len(text)) == text
    assert bytes(codec.decode(enc, len(text))) == text


@pytest.mark.parametrize("size", [64, 1000, MIB])
def test_codec_stores_random_data_raw(size: int) -> None:
    codec = BlobCodec()
    data = os.urandom(size)
    enc = codec.encode(data)
    assert enc[0] == 0
    assert enc[1:] == data
    assert bytes(codec.decode(enc, size)) == data


def test_codec_small_data_is_raw_and_round_trips() -> None:
    codec = BlobCodec()
    for data in (b"", b"a", b"a" * 63):
        enc = codec.encode(data)
        assert enc == b"\x00" + data
        assert bytes(codec.decode(enc, len(data))) == data


def test_codec_skips_compression_that_saves_less_than_a_32nd() -> None:
    """Mostly random data with a little redundancy: zstd saves something, but not 1/32."""
    codec = BlobCodec()
    rnd = random.Random(4)
    data = rnd.randbytes(31 * 1024) + b"\x00" * 700  # ~2 % compressible
    enc = codec.encode(data)
    assert enc[0] == 0 and enc[1:] == data
    data2 = rnd.randbytes(28 * 1024) + b"\x00" * 4096  # ~12 % compressible
    assert codec.encode(data2)[0] == 1


@pytest.mark.parametrize(
    "encoded",
    [
        b"",
        b"\x02payload",
        b"\xffpayload",
        b"\x01",
        b"\x01this is not a zstd frame at all",
        b"\x01" + os.urandom(200),
    ],
)
def test_codec_decode_of_garbage_is_integrity_error(encoded: bytes) -> None:
    with pytest.raises(IntegrityError):
        BlobCodec().decode(encoded, 100)


def test_codec_decode_of_truncated_frame_is_integrity_error() -> None:
    codec = BlobCodec()
    text = b"abc" * 10000
    enc = codec.encode(text)
    assert enc[0] == 1
    with pytest.raises(IntegrityError):
        codec.decode(enc[: len(enc) // 2], len(text))


# --- trees --------------------------------------------------------------------------------------


ODD_NAMES = [
    os.fsdecode(b"latin1-\xe9t\xe9"),  # not UTF-8: surrogate escapes
    os.fsdecode(b"\xff\xfe\xfd"),
    os.fsdecode(b"mixed-\xc3\xa9-\xc3"),  # valid é then a lone lead byte
    "日本語",
    "emoji-🎉",
    "new\nline",
    "tab\tand space ",
    'quote"back\\slash',
    "-dash",
    "...",
    ".hidden",
    "a" * 255,
]


def sample_nodes() -> list[Node]:
    nodes = [
        Node(
            name=name,
            type="file",
            mode=0o4755 if i % 2 else 0o600,
            uid=1000 + i,
            gid=2000 + i,
            mtime_ns=1_700_000_000_123_456_789 + i,
            ctime_ns=1_700_000_001_000_000_001,
            inode=10 + i,
            device=2049,
            nlink=1,
            size=i * 1000,
            content=[bytes([i]) * 32, bytes([i + 1]) * 32],
            sha256=hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest(),
        )
        for i, name in enumerate(ODD_NAMES)
    ]
    nodes.append(Node(name="dir", type="dir", mode=0o1777, subtree=b"\x07" * 32))
    nodes.append(Node(name="empty-dir", type="dir", subtree=None))
    nodes.append(Node(name="link", type="symlink", mode=0o777, target=os.fsdecode(b"../t\xe4rget")))
    nodes.append(
        Node(
            name="with-xattrs",
            type="file",
            xattrs=[("user.a", b"\x00\xff binary"), ("user.b", b"")],
            hardlink="2049:77",
            nlink=2,
        )
    )
    return nodes


def test_tree_round_trip_with_odd_names() -> None:
    nodes = sample_nodes()
    data = encode_tree(nodes)
    assert data.isascii()  # \udcXX escapes, never raw bytes
    decoded = decode_tree(data)
    assert decoded == sorted(nodes, key=lambda n: n.name)
    # Names come back byte for byte.
    assert {os.fsencode(n.name) for n in decoded} >= {
        b"latin1-\xe9t\xe9",
        b"\xff\xfe\xfd",
        b"mixed-\xc3\xa9-\xc3",
    }
    assert all(valid_name(n.name) for n in decoded)


def test_tree_encoding_is_deterministic() -> None:
    nodes = sample_nodes()
    first = encode_tree(nodes)
    rnd = random.Random(2)
    for _ in range(10):
        shuffled = nodes[:]
        rnd.shuffle(shuffled)
        assert encode_tree(shuffled) == first
    assert encode_tree(decode_tree(first)) == first
    # Sorted by code point.
    names = [n["name"] for n in json.loads(first)["nodes"]]
    assert names == sorted(names)
    # A change anywhere changes the bytes (and so the tree id).
    changed = [*nodes]
    changed[0] = Node(**{**changed[0].__dict__, "mtime_ns": changed[0].mtime_ns + 1})
    assert encode_tree(changed) != first


def test_tree_bytes_are_the_canonical_json_whatever_the_names() -> None:
    """Tree ids must not depend on which JSON encoder wrote the tree: every tree is the
    standard library's compact, ASCII-escaped JSON (FORMAT.md §8.1), names with control
    characters, DEL, non-ASCII text and undecodable bytes included."""
    rnd = random.Random(11)
    alphabet = [chr(c) for c in range(1, 128) if chr(c) != "/"] + ["é", "€", "😀", "\udcff"]
    for _ in range(300):
        nodes = [
            Node(
                name="".join(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 12))) + str(i),
                type="symlink",
                mtime_ns=rnd.randrange(-(2**62), 2**63),
                inode=rnd.randrange(2**64),
                target="".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 8))),
            )
            for i in range(rnd.randrange(1, 6))
        ]
        data = encode_tree(nodes)
        ordered = sorted(nodes, key=lambda n: n.name)
        want = json.dumps(
            {"nodes": [n.to_json() for n in ordered]}, separators=(",", ":"), ensure_ascii=True
        ).encode()
        assert data == want
        assert decode_tree(data) == ordered


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"nodes": 5}',
        b'{"other": []}',
        b'{"nodes": [{"name": "x"}]}',
        b'{"nodes": [{"name": "x", "type": 5, "mode": 0, "uid": 0, "gid": 0, "mtime_ns": 0}]}',
        b'{"nodes": [{"name": "x", "type": "file", "mode": "rw", "uid": 0, "gid": 0, '
        b'"mtime_ns": 0}]}',
        b'{"nodes": [{"name": "x", "type": "file", "mode": 0, "uid": 0, "gid": 0, '
        b'"mtime_ns": 0, "content": ["zz"]}]}',
    ],
)
def test_malformed_tree_is_integrity_error(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        decode_tree(data)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs", "nul\0byte", "trailing/"])
def test_valid_name_rejects_unsafe_components(name: str) -> None:
    assert not valid_name(name)


# --- chunker ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_16mib() -> bytes:
    return random.Random(16).randbytes(16 * MIB)


def cuts(chunker: Chunker, data: bytes) -> list[int]:
    out, pos = [], 0
    for chunk in chunker.buffer_chunks(data):
        pos += len(chunk)
        out.append(pos)
    return out


def test_chunker_same_seed_same_cuts(random_16mib: bytes) -> None:
    params = ChunkerParams()
    a = cuts(Chunker(params, 12345), random_16mib)
    b = cuts(Chunker(params, 12345), random_16mib)
    assert a == b
    assert a[-1] == len(random_16mib)
    assert len(a) >= 5  # ~1 MiB average over 16 MiB


def test_chunker_different_seed_different_cuts(random_16mib: bytes) -> None:
    params = ChunkerParams()
    a = cuts(Chunker(params, 1), random_16mib)
    b = cuts(Chunker(params, 2), random_16mib)
    c = cuts(Chunker(params, 2**62 + 17), random_16mib)
    assert a != b and a != c and b != c
    # Not just shifted a little: most cut points differ.
    assert len(set(a[:-1]) & set(b[:-1])) <= len(a) // 3


def test_chunk_sizes_within_bounds(random_16mib: bytes) -> None:
    params = ChunkerParams(min=64 * 1024, avg=256 * 1024, max=1024 * 1024)
    sizes = [len(c) for c in Chunker(params, 99).buffer_chunks(random_16mib)]
    assert sum(sizes) == len(random_16mib)
    assert all(params.min <= s <= params.max for s in sizes[:-1])
    assert 0 < sizes[-1] <= params.max
    # The average is in the right region (normalised chunking keeps it near avg).
    assert params.avg / 2 <= len(random_16mib) / len(sizes) <= params.avg * 2
    # Data without content to cut on is cut at the maximum size.
    zeros = [len(c) for c in Chunker(params, 99).buffer_chunks(bytes(5 * MIB + 10))]
    assert zeros[:5] == [params.max] * 5 and zeros[5] == 10


def test_chunker_stream_and_buffer_agree(random_16mib: bytes) -> None:
    chunker = Chunker(ChunkerParams(), 77)
    from_buf = [hashlib.sha256(c).digest() for c in chunker.buffer_chunks(random_16mib)]
    from_stream = [
        hashlib.sha256(c).digest()
        for c in Chunker(ChunkerParams(), 77).stream_chunks(io.BytesIO(random_16mib))
    ]
    assert from_buf == from_stream


def test_chunker_insertion_changes_only_the_first_chunks(random_16mib: bytes) -> None:
    """The dedup property: inserting bytes at the front leaves the later cut points (relative
    to the content) where they were, so all but the first few chunks are shared."""
    params = ChunkerParams()

    def chunk_ids(data: bytes) -> list[bytes]:
        return [hashlib.sha256(c).digest() for c in Chunker(params, 4242).buffer_chunks(data)]

    original = chunk_ids(random_16mib)
    for prefix in (b"x", b"hello world\n" * 3, random.Random(1).randbytes(100_000)):
        shifted = chunk_ids(prefix + random_16mib)
        new = [c for c in shifted if c not in set(original)]
        assert len(new) <= 2, f"{len(new)} of {len(shifted)} chunks changed"
        assert shifted[len(new) :] == original[len(original) - (len(shifted) - len(new)) :]
    # Appending changes only the last chunk(s).
    appended = chunk_ids(random_16mib + b"tail")
    assert appended[:-2] == original[: len(appended) - 2]


@pytest.mark.parametrize(
    ("mn", "avg", "mx"),
    [(32, 1024, 4096), (1024, 512, 4096), (1024, 4096, 2048), (64, 256, 32 * MIB)],
)
def test_chunker_params_validation(mn: int, avg: int, mx: int) -> None:
    from stackvault.errors import UsageError

    with pytest.raises(UsageError):
        ChunkerParams(mn, avg, mx)


def test_chunker_params_json() -> None:
    p = ChunkerParams(min=64 * 1024, avg=256 * 1024, max=MIB)
    assert ChunkerParams.from_json(p.to_json()) == p
    with pytest.raises(UnsupportedFormat):
        ChunkerParams.from_json({**p.to_json(), "algorithm": "rabin"})
