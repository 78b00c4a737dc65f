"""The blob index (repository layer): blob id → pack, offset, length (FORMAT.md §6)."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from stackvault.crypto.envelope import Envelope
from stackvault.errors import IntegrityError, UnsupportedFormat
from stackvault.repo.blob import IndexEntry, blob_type
from stackvault.repo.pack import PackedBlob

INDEX_AAD = b"sv1:index"
_MAGIC = b"SVIX"
_HEAD = struct.Struct("<4sBI")
_PACK = struct.Struct("<32sI")
_ENTRY = struct.Struct("<BIII32s")  # type, offset, length, raw length, blob id
_COUNT = struct.Struct("<I")
_ID = 32


@dataclass(frozen=True)
class IndexFile:
    """The decoded content of one index file."""

    packs: list[tuple[bytes, list[PackedBlob]]]
    supersedes: list[bytes]
    """Ids of older index files whose content this one replaces (version 2, written by
    prune): those files are ignored when loading, even while they still exist (e.g. under
    Object Lock retention)."""


class Index:
    """The in-memory union of index files. Thread-safe for concurrent `add` and lookups."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, IndexEntry] = {}
        self._packs: dict[bytes, list[PackedBlob]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._blobs)

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._blobs

    def has_all(self, blob_ids: Iterable[bytes]) -> bool:
        """Whether every one of ``blob_ids`` is indexed."""
        return all(map(self._blobs.__contains__, blob_ids))

    def get(self, blob_id: bytes) -> IndexEntry | None:
        return self._blobs.get(blob_id)

    def add_pack(self, pack_id: bytes, blobs: Iterable[PackedBlob]) -> None:
        """Record every blob of a completely stored pack."""
        blobs = list(blobs)
        with self._lock:
            self._packs.setdefault(pack_id, []).extend(blobs)
            # A blob may be listed in several packs (interrupted prune, concurrent backups);
            # any listed copy is good, so the first one seen stays.
            keep = self._blobs.setdefault
            for kind, blob_id, offset, length, raw_length in blobs:
                keep(blob_id, IndexEntry(pack_id, offset, length, raw_length, kind))

    def drop_packs(self, pack_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """Forget ``pack_ids`` (packs that are gone): a blob they held is then listed by
        another pack that holds it, or not at all. Returns the blobs no longer listed
        anywhere, each with the pack it was in."""
        gone = set(pack_ids)
        with self._lock:
            for pack_id in gone:
                self._packs.pop(pack_id, None)
            stale = {b: e.pack_id for b, e in self._blobs.items() if e.pack_id in gone}
            for blob_id in stale:
                del self._blobs[blob_id]
            for pack_id, blobs in self._packs.items():
                for kind, blob_id, offset, length, raw_length in blobs:
                    if blob_id in stale and blob_id not in self._blobs:
                        self._blobs[blob_id] = IndexEntry(pack_id, offset, length, raw_length, kind)
            return {b: p for b, p in stale.items() if b not in self._blobs}

    def packs(self) -> dict[bytes, list[PackedBlob]]:
        """Pack id → the blobs the index lists in it (a copy)."""
        with self._lock:
            return {k: list(v) for k, v in self._packs.items()}

    def items(self) -> Iterator[tuple[bytes, IndexEntry]]:
        return iter(list(self._blobs.items()))

    def pack_ids(self) -> set[bytes]:
        with self._lock:
            return set(self._packs)


def encode_index(
    envelope: Envelope,
    packs: Sequence[tuple[bytes, Sequence[PackedBlob]]],
    supersedes: Sequence[bytes] = (),
) -> bytes:
    """Serialise and seal an index file naming ``packs`` (version 1), or version 2 if it
    ``supersedes`` older index files."""
    parts = [_HEAD.pack(_MAGIC, 2 if supersedes else 1, len(packs))]
    for pack_id, blobs in packs:
        parts.append(_PACK.pack(pack_id, len(blobs)))
        parts.extend(
            _ENTRY.pack(b.type, b.offset, b.length, b.raw_length, b.blob_id) for b in blobs
        )
    if supersedes:
        if any(len(i) != _ID for i in supersedes):
            raise ValueError("index ids are 32 bytes")
        parts.append(_COUNT.pack(len(supersedes)))
        parts.extend(supersedes)
    return envelope.seal(b"".join(parts), INDEX_AAD)


def decode_index(envelope: Envelope, data: bytes) -> list[tuple[bytes, list[PackedBlob]]]:
    """Open and parse an index file; only its packs. Raises `IntegrityError` if damaged."""
    return decode_index_file(envelope, data).packs


def decode_index_file(envelope: Envelope, data: bytes) -> IndexFile:
    """Open and parse an index file. Raises `IntegrityError` if damaged."""
    plain = envelope.open(data, INDEX_AAD)
    try:
        magic, version, count = _HEAD.unpack_from(plain, 0)
    except struct.error as exc:
        raise IntegrityError("index file is truncated") from exc
    if magic != _MAGIC:
        raise IntegrityError("index file has a bad magic number")
    if version not in (1, 2):
        raise UnsupportedFormat(f"index file version {version} is not supported")
    pos = _HEAD.size
    out: list[tuple[bytes, list[PackedBlob]]] = []
    try:
        for _ in range(count):
            pack_id, n = _PACK.unpack_from(plain, pos)
            pos += _PACK.size
            blobs = [
                PackedBlob(blob_type(t), bid, off, length, raw)
                for t, off, length, raw, bid in _ENTRY.iter_unpack(
                    plain[pos : pos + n * _ENTRY.size]
                )
            ]
            if len(blobs) != n:
                raise IntegrityError("index file is truncated")
            pos += n * _ENTRY.size
            out.append((pack_id, blobs))
        supersedes: list[bytes] = []
        if version == 2:
            (n,) = _COUNT.unpack_from(plain, pos)
            pos += _COUNT.size
            supersedes = [plain[pos + i * _ID : pos + (i + 1) * _ID] for i in range(n)]
            pos += n * _ID
            if pos > len(plain):
                raise IntegrityError("index file is truncated")
    except (struct.error, ValueError) as exc:
        raise IntegrityError("index file is malformed") from exc
    if pos != len(plain):
        raise IntegrityError("index file has trailing bytes")
    return IndexFile(out, supersedes)
