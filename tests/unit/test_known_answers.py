"""Known-answer vectors for the repository format (FORMAT.md §2-§8): fixed inputs and the exact
bytes, ids and cut points today's code gives for them.

Each expected value was computed once and is written here as a literal: a change of library
(pyfastcdc, blake3, cryptography, zstandard) or of code that moves one of them makes existing
repositories unreadable or stops deduplication against them, and must fail here. Never update a
literal to make a test pass; a real format change bumps the version (FORMAT.md) instead.

The encrypted vectors were sealed with fixed nonces (``Envelope`` draws its own, so its output
cannot be pinned): opening them pins the readers; sealing is pinned by opening what it wrote
with the bare AES-GCM primitive, and by the exact plaintexts the writers produce.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stackvault.chunking.cdc import Chunker, ChunkerParams
from stackvault.chunking.streamcut import StreamCutter
from stackvault.crypto.envelope import NONCE_SIZE, OVERHEAD, Envelope
from stackvault.crypto.kdf import KdfParams, derive_key
from stackvault.crypto.keyfile import read_key_info, unwrap_master_key
from stackvault.crypto.masterkey import MasterKey
from stackvault.errors import IntegrityError, WrongPassword
from stackvault.repo.blob import BlobCodec, BlobType, blob_aad
from stackvault.repo.index import INDEX_AAD, decode_index_file, encode_index
from stackvault.repo.pack import (
    HEADER_AAD,
    PackBuilder,
    PackedBlob,
    pack_name,
    read_pack_header,
    storage_id,
)
from stackvault.repo.tree import Node, decode_tree, encode_tree

# --- the fixed inputs --------------------------------------------------------------------------

ENC = bytes(range(32))
ID_KEY = bytes(range(32, 64))
SEED = 0x5EED_0123_4567_89AB
MASTER = MasterKey(ENC, ID_KEY, SEED)
PASSWORD = b"known answer password"
SALT = bytes(range(100, 116))
KDF = KdfParams(memory_kib=1024, iterations=2, lanes=2)
"""Small, but no two parameters equal, so swapping two of them changes the key."""

MIB = 1024 * 1024
PSEUDO_RANDOM_8MIB_SEED = 1

BLOB_A = b"hello, pack"  # short: stored raw (encoding 0)
BLOB_B = b"compressible " * 20  # stored as a zstd frame (encoding 1)
ID_A = bytes.fromhex("d936c1eadfbe16f2bceba4c4df893aa8c79f5726a962c786d01272262e0f3323")
ID_B = bytes.fromhex("8bfadc275c9bae302581c56499a0c0e71ee6c37c027a9894304a85b1db0cf451")
PACK_1 = bytes([0xAA]) * 32
PACK_2 = bytes([0xBB]) * 32
TREE_ID = bytes([0x11]) * 32
SUPERSEDED = bytes([0xCC]) * 32


def perturbed(data: bytes, at: int) -> bytes:
    """``data`` with the byte at ``at`` flipped."""
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# --- key derivation and key files (§3) ---------------------------------------------------------

DERIVED = bytes.fromhex("cbd67d5abe9dc2ec9763b91e0d82d2476e90b959c91ddc75857171c04107a809")

KEY_FILE = json.dumps(
    {
        "version": 1,
        "kdf": "argon2id",
        "kdf_params": {"memory_kib": 1024, "iterations": 2, "lanes": 2},
        "salt": "4itwevecBqz35svM71EcbQ==",
        "created": "2026-01-02T03:04:05+00:00",
        "host": "kat-host",
        "username": "kat",
        "data": (
            "nJ2c8uDgYTVioXH4zVo0Lj+0QowwjzbxqIbUy18gND8CC9qN2mUg/kM130RaLp3YCsQ7U7ZV9tVJpG/92pVb"
            "njNm+CfBucRrE4JPJjkRTYlnBR9NN/0q0uOKgCXdPEzFFjJAhatB7atheJDk7tq23JRbx/jzj0wMRUzkimFM"
            "ajObQDMRqxGQ7d0L9m3Odk0lAGv8dQ1yoeWWB3oXynIfbEg71mQKLvsULv8cEb+c"
        ),
    },
    indent=1,
).encode()


def test_argon2id_derives_the_known_wrapping_key() -> None:
    assert derive_key(PASSWORD, SALT, KDF) == DERIVED
    assert derive_key(perturbed(PASSWORD, 0), SALT, KDF) != DERIVED
    assert derive_key(PASSWORD, perturbed(SALT, 15), KDF) != DERIVED


def test_the_known_key_file_unwraps_to_the_known_master_key() -> None:
    master = unwrap_master_key(KEY_FILE, PASSWORD)
    assert (master.enc, master.id_key, master.chunker_seed) == (ENC, ID_KEY, SEED)
    info = read_key_info(KEY_FILE)
    assert (info.created, info.host, info.username, info.kdf) == (
        "2026-01-02T03:04:05+00:00",
        "kat-host",
        "kat",
        KDF,
    )
    with pytest.raises(WrongPassword):
        unwrap_master_key(KEY_FILE, perturbed(PASSWORD, 3))


def test_the_master_key_document_inside_a_key_file() -> None:
    doc = json.loads(KEY_FILE)
    wrapping = derive_key(PASSWORD, base64.b64decode(doc["salt"]), KDF)
    sealed = base64.b64decode(doc["data"])
    plain = AESGCM(wrapping).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], b"sv1:key")
    assert json.loads(plain) == {
        "enc": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "id": "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
        "chunker_seed": SEED,
    }
    assert MasterKey.from_bytes(plain) == MASTER
    assert json.loads(MASTER.to_bytes()) == json.loads(plain)


# --- the envelope (§7) -------------------------------------------------------------------------

ENVELOPE_PLAIN = b"known answer plaintext"
ENVELOPE_AAD = b"sv1:kat"
ENVELOPE_NONCE = bytes(range(200, 212))
ENVELOPE = bytes.fromhex(
    "c8c9cacbcccdcecfd0d1d2d37a160eace8ec9a4e074b7acc3e76877589e998cd7c1f92dcdd7da8c711fdb642"
    "6687e7dc3d09"
)


def test_envelope_opens_the_known_ciphertext() -> None:
    assert ENVELOPE[:NONCE_SIZE] == ENVELOPE_NONCE
    assert len(ENVELOPE) == len(ENVELOPE_PLAIN) + OVERHEAD
    assert Envelope(ENC).open(ENVELOPE, ENVELOPE_AAD) == ENVELOPE_PLAIN
    for at in (0, NONCE_SIZE, len(ENVELOPE) - 1):  # nonce, ciphertext, tag
        with pytest.raises(IntegrityError):
            Envelope(ENC).open(perturbed(ENVELOPE, at), ENVELOPE_AAD)
    with pytest.raises(IntegrityError):
        Envelope(ENC).open(ENVELOPE, b"sv1:kat2")


def test_envelope_seals_nonce_then_aes_gcm_ciphertext_and_tag() -> None:
    sealed = Envelope(ENC).seal(ENVELOPE_PLAIN, ENVELOPE_AAD)
    nonce, rest = sealed[:NONCE_SIZE], sealed[NONCE_SIZE:]
    # Exactly what AES-256-GCM gives for that nonce: no other framing, no other key.
    assert rest == AESGCM(ENC).encrypt(nonce, ENVELOPE_PLAIN, ENVELOPE_AAD)
    # The known ciphertext is the same construction with the fixed nonce.
    expected = ENVELOPE_NONCE + AESGCM(ENC).encrypt(ENVELOPE_NONCE, ENVELOPE_PLAIN, ENVELOPE_AAD)
    assert expected == ENVELOPE
    assert Envelope(ENC).seal(ENVELOPE_PLAIN, ENVELOPE_AAD)[:NONCE_SIZE] != nonce  # random


# --- ids (§1, §2) ------------------------------------------------------------------------------


def test_storage_id_is_unkeyed_blake3_of_the_stored_bytes() -> None:
    assert storage_id(b"").hex() == (
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    )
    data = random.Random(3).randbytes(100_000)  # several BLAKE3 chunks: the threaded path
    assert storage_id(data).hex() == (
        "f59d308a86b10ac2f59d4003c24e3dccafe68171d8f3aaa24522c5806891ba77"
    )
    assert storage_id(perturbed(data, 99_999)) != storage_id(data)
    assert pack_name(bytes.fromhex("ab" * 32)) == "data/ab/" + "ab" * 32


def test_blob_id_is_blake3_keyed_with_the_id_key() -> None:
    assert MASTER.blob_id(b"stackvault keyed blob id").hex() == (
        "ff05687fd5c98127ba8695ce7f49a85b47e30b386786572ce3477e7e28bd00cf"
    )
    data = random.Random(3).randbytes(100_000)
    assert MASTER.blob_id(data).hex() == (
        "a934687716173929574de69a610a4ccd8111e56bdb3233e3f5aa5aa8e874e494"
    )
    assert (MASTER.blob_id(BLOB_A), MASTER.blob_id(BLOB_B)) == (ID_A, ID_B)
    assert MASTER.blob_id(perturbed(data, 0)) != MASTER.blob_id(data)
    other = MasterKey(ENC, perturbed(ID_KEY, 31), SEED)
    assert other.blob_id(data) != MASTER.blob_id(data)


def test_associated_data_of_blobs() -> None:
    assert blob_aad(BlobType.DATA, ID_A) == b"sv1:blob:\x00" + ID_A
    assert blob_aad(BlobType.TREE, ID_A) == b"sv1:blob:\x01" + ID_A


# --- pack files (§5) ---------------------------------------------------------------------------

PACK = bytes.fromhex(
    "01010101010101010101010177ab805904ea4446a43504736dc57af566c53076b8119e58cdcc3a7702020202"
    "02020202020202029a00ac9444b9355b6e85a2905016b7636e8cdc1ffd361494625fd177d78d5e4bbc4b3f26"
    "9ae4216bcd68de40a71343030303030303030303030303ee633cd60b995216de8430bf2775ea11e8ea1d541e"
    "27b58b2a7ad94a228bcb951dd32eac83a978d66bab7f0e6b4b391bf3d6fc5677851a3190cd6990428b65fa87"
    "2d9a4e97a226f8c85f74054de99f685a85c1557a3854ba295957342c821d0fbc0b6e000000"
)
"""Two data blobs (40 and 59 bytes sealed), the sealed header, its length (u32)."""
HEADER_PLAIN = bytes.fromhex(
    "00280000000b000000d936c1eadfbe16f2bceba4c4df893aa8c79f5726a962c786d01272262e0f3323003b00"
    "0000040100008bfadc275c9bae302581c56499a0c0e71ee6c37c027a9894304a85b1db0cf451"
)
PACK_ENTRIES = [
    PackedBlob(BlobType.DATA, ID_A, 0, 40, len(BLOB_A)),
    PackedBlob(BlobType.DATA, ID_B, 40, 59, len(BLOB_B)),
]


def test_pack_header_of_the_known_pack() -> None:
    assert read_pack_header(Envelope(ENC), PACK, len(PACK)) == PACK_ENTRIES
    assert struct.unpack("<I", PACK[-4:]) == (len(PACK) - 99 - 4,)
    with pytest.raises(IntegrityError):
        read_pack_header(Envelope(ENC), perturbed(PACK, len(PACK) - 10), len(PACK))
    with pytest.raises(IntegrityError):
        read_pack_header(Envelope(ENC), PACK, len(PACK) + 1)


def test_blobs_of_the_known_pack_open_decode_and_match_their_ids() -> None:
    envelope, codec = Envelope(ENC), BlobCodec()
    for entry, plain in zip(PACK_ENTRIES, (BLOB_A, BLOB_B), strict=True):
        sealed = PACK[entry.offset : entry.offset + entry.length]
        encoded = envelope.open(sealed, blob_aad(entry.type, entry.blob_id))
        assert bytes(codec.decode(encoded, entry.raw_length)) == plain
        assert MASTER.blob_id(plain) == entry.blob_id
    assert envelope.open(PACK[:40], blob_aad(BlobType.DATA, ID_A))[:1] == b"\x00"  # raw
    assert envelope.open(PACK[40:99], blob_aad(BlobType.DATA, ID_B))[:1] == b"\x01"  # zstd
    with pytest.raises(IntegrityError):  # a blob is bound to its id
        envelope.open(PACK[:40], blob_aad(BlobType.DATA, ID_B))


def test_pack_builder_writes_blobs_then_the_known_header() -> None:
    builder = PackBuilder(BlobType.DATA)
    builder.add(ID_A, PACK[:40], len(BLOB_A))
    builder.add(ID_B, PACK[40:99], len(BLOB_B))
    pack_id, parts = builder.finish(Envelope(ENC))
    pack = b"".join(bytes(p) for p in parts)
    assert pack[:99] == PACK[:99]
    (hlen,) = struct.unpack("<I", pack[-4:])
    assert hlen == len(pack) - 99 - 4 == len(HEADER_PLAIN) + OVERHEAD
    assert Envelope(ENC).open(pack[99:-4], HEADER_AAD) == HEADER_PLAIN
    assert pack_id == storage_id(pack)


# --- index files (§6) --------------------------------------------------------------------------

INDEX_PACKS = [
    (PACK_1, PACK_ENTRIES),
    (PACK_2, [PackedBlob(BlobType.TREE, TREE_ID, 0, 300, 1000)]),
]
INDEX_V1_PLAIN = bytes.fromhex(
    "535649580102000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa020000"
    "000000000000280000000b000000d936c1eadfbe16f2bceba4c4df893aa8c79f5726a962c786d01272262e0f"
    "332300280000003b000000040100008bfadc275c9bae302581c56499a0c0e71ee6c37c027a9894304a85b1db"
    "0cf451bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb010000000100000000"
    "2c010000e80300001111111111111111111111111111111111111111111111111111111111111111"
)
INDEX_V1 = bytes.fromhex(
    "04040404040404040404040437d187d02857919dcaaff1c18f570baa3ef3a7ced823cd47bd85960aa7bec121"
    "17df8ccbf998d38109e32b1c7dde5de13ee6fd9e9daac1c7b4a7d4f7d1110bb3a28b47ebf8a3ea914b33d504"
    "7e2966dbcf4acab82cf75f6b1092458aa48e60d11d1366f9c1f6847ee1952fb8d9ea6b75d92072ce06b7a0c8"
    "be6dc21721fbd982be181c61dd35e11169794e3f573a955b6619476bd9789adbc30479414965cbbf1fe4205d"
    "2d6dd8868bc4346f4b9054a1b487e4e1cad34a00b498289a39974f174bdd9148e3abdffca8f772947e03bde6"
    "c6ca9c17851714b727d7c0682abff58fa4cfa19ed392a41c"
)
INDEX_V2_PLAIN = bytes.fromhex(
    "535649580201000000bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb010000"
    "0001000000002c010000e8030000111111111111111111111111111111111111111111111111111111111111"
    "111101000000cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)
INDEX_V2 = bytes.fromhex(
    "0505050505050505050505051f609129a23c9aea3f35b05bb2a8bd6eeecc2f645f612e30899a69986584abe6"
    "94f8eebaf16d9bb7c74930324ccd8e28bcfe946567c68aa5da289ec45eca88ba0109352be125c0f8de5e91f5"
    "7a1f2b6930593ebd6029916976190c692104f07cf895f6a9eff4284bcbba468a6768ea24ae9c13c043df9ce7"
    "075bf07e3ce1da4ad76a4fe684bd0c78ddde40ccc69a"
)


def test_known_index_files_decode_to_the_known_entries() -> None:
    v1 = decode_index_file(Envelope(ENC), INDEX_V1)
    assert (v1.packs, v1.supersedes) == (INDEX_PACKS, [])
    v2 = decode_index_file(Envelope(ENC), INDEX_V2)
    assert (v2.packs, v2.supersedes) == (INDEX_PACKS[1:], [SUPERSEDED])
    for data in (INDEX_V1, INDEX_V2):
        with pytest.raises(IntegrityError):
            decode_index_file(Envelope(ENC), perturbed(data, len(data) // 2))


def test_index_writer_gives_the_known_plaintexts() -> None:
    envelope = Envelope(ENC)
    assert envelope.open(encode_index(envelope, INDEX_PACKS), INDEX_AAD) == INDEX_V1_PLAIN
    written = encode_index(envelope, INDEX_PACKS[1:], [SUPERSEDED])
    assert envelope.open(written, INDEX_AAD) == INDEX_V2_PLAIN
    assert envelope.open(INDEX_V1, INDEX_AAD) == INDEX_V1_PLAIN
    assert envelope.open(INDEX_V2, INDEX_AAD) == INDEX_V2_PLAIN


# --- trees (§8.1) ------------------------------------------------------------------------------

TREE_NODES = [
    Node(
        name="b.txt",
        type="file",
        mode=0o644,
        uid=1000,
        gid=1000,
        mtime_ns=1_700_000_000_123_456_789,
        ctime_ns=1_700_000_001_000_000_000,
        inode=42,
        device=2049,
        nlink=1,
        size=11,
        content=[ID_A],
        sha256=hashlib.sha256(BLOB_A).hexdigest(),
    ),
    Node("a-dir", "dir", 0o755, 0, 0, 5, 6, 7, 8, 2, subtree=bytes([0x22]) * 32),
    Node(os.fsdecode(b"caf\xe9"), "symlink", 0o777, 0, 0, 1, 2, 3, 4, 1, target='naïve/日本 "q"\n'),
    Node(
        name="x",
        type="file",
        mode=0o4755,
        inode=9,
        device=8,
        nlink=2,
        sha256=hashlib.sha256(b"").hexdigest(),
        xattrs=[("user.k", b"\x00v")],
        hardlink="8:9",
    ),
]
TREE = (
    b'{"nodes":[{"name":"a-dir","type":"dir","mode":493,"uid":0,"gid":0,"mtime_ns":5,'
    b'"ctime_ns":6,"inode":7,"device":8,"nlink":2,'
    b'"subtree":"2222222222222222222222222222222222222222222222222222222222222222"},'
    b'{"name":"b.txt","type":"file","mode":420,"uid":1000,"gid":1000,'
    b'"mtime_ns":1700000000123456789,"ctime_ns":1700000001000000000,"inode":42,"device":2049,'
    b'"nlink":1,"size":11,'
    b'"content":["d936c1eadfbe16f2bceba4c4df893aa8c79f5726a962c786d01272262e0f3323"],'
    b'"sha256":"2400569c9d9513c8e1bca5b00331a63cdf9f135af24254528a968f50cff8e4f0"},'
    b'{"name":"caf\\udce9","type":"symlink","mode":511,"uid":0,"gid":0,"mtime_ns":1,'
    b'"ctime_ns":2,"inode":3,"device":4,"nlink":1,'
    b'"target":"na\\u00efve/\\u65e5\\u672c \\"q\\"\\n"},'
    b'{"name":"x","type":"file","mode":2541,"uid":0,"gid":0,"mtime_ns":0,"ctime_ns":0,'
    b'"inode":9,"device":8,"nlink":2,"size":0,"content":[],'
    b'"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",'
    b'"xattrs":[["user.k","AHY="]],"hardlink":"8:9"}]}'
)


def test_trees_encode_to_the_known_canonical_json() -> None:
    """Tree ids are keyed hashes of these bytes: identical directories must keep encoding
    identically, or every unchanged directory is stored again."""
    assert encode_tree(TREE_NODES) == TREE
    assert encode_tree(list(reversed(TREE_NODES))) == TREE
    assert decode_tree(TREE) == sorted(TREE_NODES, key=lambda n: n.name)


# --- content-defined chunking (§2) -------------------------------------------------------------


@pytest.fixture(scope="module")
def pseudo_random_8mib() -> bytes:
    return random.Random(PSEUDO_RANDOM_8MIB_SEED).randbytes(8 * MIB)


def cut_offsets(data: bytes, params: ChunkerParams, seed: int) -> list[int]:
    """The end offset of every chunk of ``data``."""
    ends, pos = [], 0
    for chunk in Chunker(params, seed).buffer_chunks(data):
        pos += len(chunk)
        ends.append(pos)
    return ends


DEFAULT_CUTS = [1208016, 1922994, 3031602, 4843076, 6154302, 7379525, 8247775, 8 * MIB]
DEFAULT_CUTS_SEED_0 = [1521776, 3351541, 3870365, 5478046, 5965835, 6531021, 7640944, 8 * MIB]
SMALL = ChunkerParams(min=16 * 1024, avg=64 * 1024, max=256 * 1024)
SMALL_CUTS_COUNT = 101
SMALL_CUTS_FIRST = [18651, 101023, 142490, 167165, 192927, 273239]
SMALL_CUTS_SHA256 = "a44c78e61fa0042a9058d505c006bed846237512b84a9af9a14a1a55a18d2b16"
"""SHA-256 of ``json.dumps(offsets)``."""


def test_chunker_cut_points_with_the_default_sizes(pseudo_random_8mib: bytes) -> None:
    """The repository default sizes (min 256 KiB, avg 1 MiB, max 4 MiB), seeded: a pyfastcdc
    upgrade that moves a cut point makes new backups stop deduplicating against old ones."""
    assert ChunkerParams().to_json() == {
        "algorithm": "fastcdc2020",
        "min": 256 * 1024,
        "avg": MIB,
        "max": 4 * MIB,
    }
    assert cut_offsets(pseudo_random_8mib, ChunkerParams(), SEED) == DEFAULT_CUTS
    assert cut_offsets(pseudo_random_8mib, ChunkerParams(), 0) == DEFAULT_CUTS_SEED_0


def test_chunker_cut_points_with_small_sizes(pseudo_random_8mib: bytes) -> None:
    cuts = cut_offsets(pseudo_random_8mib, SMALL, SEED)
    assert len(cuts) == SMALL_CUTS_COUNT
    assert cuts[: len(SMALL_CUTS_FIRST)] == SMALL_CUTS_FIRST
    assert hashlib.sha256(json.dumps(cuts).encode()).hexdigest() == SMALL_CUTS_SHA256


def test_the_backup_stream_cutter_cuts_at_the_same_points(pseudo_random_8mib: bytes) -> None:
    for params, expected in ((ChunkerParams(), DEFAULT_CUTS), (SMALL, None)):
        ends, pos = [], 0
        cutter = StreamCutter(Chunker(params, SEED))
        for chunk in cutter.chunks(io.BytesIO(pseudo_random_8mib)):
            pos += len(chunk)
            ends.append(pos)
        if expected is None:
            assert hashlib.sha256(json.dumps(ends).encode()).hexdigest() == SMALL_CUTS_SHA256
        else:
            assert ends == expected
