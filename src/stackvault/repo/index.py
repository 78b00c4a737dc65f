"""The blob index (repository layer): blob id → pack, offset, length (FORMAT.md §6)."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from preshed.maps import PreshMap

from stackvault.crypto.envelope import Envelope
from stackvault.errors import IntegrityError, UnsupportedFormat
from stackvault.repo.blob import BlobType, IndexEntry, blob_type
from stackvault.repo.pack import PackedBlob

INDEX_AAD = b"sv1:index"
_MAGIC = b"SVIX"
_HEAD = struct.Struct("<4sBI")
_PACK = struct.Struct("<32sI")
_ENTRY = struct.Struct("<BIII32s")  # type, offset, length, raw length, blob id
_COUNT = struct.Struct("<I")
_ID = 32
_key = struct.Struct("<Q").unpack_from  # the hash table's key: an id's first 8 bytes


@dataclass(frozen=True)
class IndexFile:
    """The decoded content of one index file."""

    packs: list[tuple[bytes, list[PackedBlob]]]
    supersedes: list[bytes]
    """Ids of older index files whose content this one replaces (version 2, written by
    prune): those files are ignored when loading, even while they still exist (e.g. under
    Object Lock retention)."""


class Index:
    """The in-memory union of index files: where each blob is stored.

    Compact, because a repository kept for years lists tens of millions of blobs. Each listed
    blob is one 49-byte row of a byte array (`_ROW`: its id, pack number, offset, stored and
    raw length, type) plus one cell of a hash table keyed by the id's first eight bytes (ids
    are keyed hashes already, so they need no further hashing): about 95 bytes a blob, where
    a dictionary of tuples took over 300. A lookup compares the whole id stored in the row
    the table names, so it never answers for another blob; ids whose first eight bytes are
    another blob's (about one pair in 10^12) are kept in a small dictionary beside it.

    Thread-safe for concurrent `add_pack` and lookups: a row is written before the table
    names it, and changes happen under a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._rows = bytearray()  # _ROW.size bytes per listing, in the order added
        self._pack_ids: list[bytes] = []  # pack number -> pack id
        self._pack_numbers: dict[bytes, int] = {}
        self._pack_rows: dict[int, list[range]] = {}  # pack number -> its row numbers
        self._table = PreshMap()  # first 8 id bytes -> row of the blob's first listing
        self._overflow: dict[bytes, int] = {}  # id -> row, for ids whose 8 bytes are taken
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def listings(self) -> int:
        """How many blob listings the index holds: a blob listed in several packs counts
        once for each, so this equals ``len`` unless some blob is listed twice."""
        return len(self._rows) // _SIZE

    def _row(self, blob_id: bytes) -> int | None:
        """The row of the blob's first listing, or None (also for anything but a 32-byte id)."""
        if len(blob_id) != _ID:
            return None
        row = self._table[_key(blob_id)[0]]
        if row is not None and self._rows.startswith(blob_id, row * _SIZE):
            return int(row)
        if self._overflow:
            return self._overflow.get(bytes(blob_id))
        return None

    def __contains__(self, blob_id: object) -> bool:
        if not isinstance(blob_id, bytes):
            return isinstance(blob_id, bytearray | memoryview) and bytes(blob_id) in self
        return len(blob_id) == _ID and self._row(blob_id) is not None

    def has_all(self, blob_ids: Iterable[bytes]) -> bool:
        """Whether every one of ``blob_ids`` is indexed (the hot path of a backup that
        reuses unchanged files, so `_row` is written out here)."""
        table, rows, overflow = self._table, self._rows, self._overflow
        for blob_id in blob_ids:
            if len(blob_id) != _ID:
                return False
            row = table[_key(blob_id)[0]]
            found = row is not None and rows.startswith(blob_id, row * _SIZE)
            if not found and (not overflow or bytes(blob_id) not in overflow):
                return False
        return True

    def get(self, blob_id: bytes) -> IndexEntry | None:
        """Where the blob is stored, or None if no index lists it."""
        row = self._row(blob_id)
        if row is None:
            return None
        pack, offset, length, raw_length, kind = _PLACE(self._rows, row * _SIZE + _ID)
        return _new_entry(
            IndexEntry, (self._pack_ids[pack], offset, length, raw_length, _TYPES[kind])
        )

    def add_pack(self, pack_id: bytes, blobs: Iterable[PackedBlob]) -> None:
        """Record every blob of a completely stored pack."""
        with self._lock:
            self._add(pack_id, blobs)

    def _add(self, pack_id: bytes, blobs: Iterable[PackedBlob]) -> None:
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = self._pack_numbers[pack_id] = len(self._pack_ids)
            self._pack_ids.append(pack_id)
        rows, table, overflow = self._rows, self._table, self._overflow
        first = row = len(rows) // _SIZE
        for kind, blob_id, offset, length, raw_length in blobs:
            if len(blob_id) != _ID:
                raise ValueError("blob ids are 32 bytes")
            rows += _ROW.pack(blob_id, number, offset, length, raw_length, kind)
            # A blob may be listed in several packs (interrupted prune, concurrent backups);
            # any listed copy is good, so the first one seen is the one looked up.
            key = _key(blob_id)[0]
            held = table[key]
            if held is None:
                table[key] = row
                self._count += 1
            elif not rows.startswith(blob_id, held * _SIZE) and blob_id not in overflow:
                overflow[bytes(blob_id)] = row
                self._count += 1
            row += 1
        spans = self._pack_rows.setdefault(number, [])
        if row > first:
            spans.append(range(first, row))

    def _listed(self) -> Iterator[tuple[bytes, list[PackedBlob]]]:
        for number, spans in self._pack_rows.items():
            yield self._pack_ids[number], list(_blobs(self._rows, spans))

    def drop_packs(self, pack_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """Forget ``pack_ids`` (packs that are gone): a blob they held is then listed by
        another pack that holds it, or not at all. Returns the blobs no longer listed
        anywhere, each with the pack it was in. The index is built again from the rows of
        the other packs (one pack at a time: at most the rows twice in memory)."""
        gone = set(pack_ids)
        with self._lock:
            stale: dict[bytes, bytes] = {}
            for number, spans in self._pack_rows.items():
                if self._pack_ids[number] not in gone:
                    continue
                for blob in _blobs(self._rows, spans):
                    entry = self.get(blob.blob_id)
                    if entry is not None and entry.pack_id in gone:
                        stale[blob.blob_id] = entry.pack_id
            rows, pack_ids, pack_rows = self._rows, self._pack_ids, self._pack_rows
            self._reset()
            for number, spans in pack_rows.items():
                if pack_ids[number] not in gone:
                    self._add(pack_ids[number], _blobs(rows, spans))
            return {b: p for b, p in stale.items() if self._row(b) is None}

    def iter_packs(self) -> Iterator[tuple[bytes, list[PackedBlob]]]:
        """Each pack with the blobs the index lists in it, one pack at a time (only the pack
        at hand is copied out). Packs added meanwhile may be left out; do not drop packs
        while iterating."""
        with self._lock:
            packs = list(self._pack_rows.items())
        for number, spans in packs:
            yield self._pack_ids[number], list(_blobs(self._rows, spans))

    def pack_blobs(self, pack_id: bytes) -> list[PackedBlob]:
        """The blobs the index lists in one pack ([] for a pack it does not list)."""
        with self._lock:
            number = self._pack_numbers.get(pack_id)
            spans = list(self._pack_rows.get(number, ())) if number is not None else []
            return list(_blobs(self._rows, spans))

    def packs(self) -> dict[bytes, list[PackedBlob]]:
        """Pack id → the blobs the index lists in it (a copy of the whole index: at scale,
        prefer `iter_packs` or `pack_blobs`)."""
        with self._lock:
            return dict(self._listed())

    def items(self) -> Iterator[tuple[bytes, IndexEntry]]:
        """Every indexed blob once, with where it is looked up. Rows added while iterating
        may be left out; do not drop packs meanwhile."""
        with self._lock:
            count = len(self._rows) // _SIZE
        for row in range(count):
            blob_id = bytes(self._rows[row * _SIZE : row * _SIZE + _ID])
            if self._row(blob_id) == row:
                entry = self.get(blob_id)
                assert entry is not None
                yield blob_id, entry

    def pack_ids(self) -> set[bytes]:
        with self._lock:
            return {self._pack_ids[n] for n in self._pack_rows}


def _blobs(rows: bytearray, spans: list[range]) -> Iterator[PackedBlob]:
    """The blobs of a pack's rows (``spans`` of row numbers in ``rows``)."""
    for span in spans:
        for row in span:
            blob_id, _pack, offset, length, raw_length, kind = _ROW.unpack_from(rows, row * _SIZE)
            yield PackedBlob(_TYPES[kind], blob_id, offset, length, raw_length)


_ROW = struct.Struct("<32sIIIIB")  # blob id, pack number, offset, length, raw length, type
_SIZE = _ROW.size
_PLACE = struct.Struct("<IIIIB").unpack_from  # a row without its id
_TYPES = {t.value: t for t in BlobType}
_new_entry = tuple.__new__  # builds an `IndexEntry` without its Python-level constructor


def encode_index(
    envelope: Envelope,
    packs: Iterable[tuple[bytes, Sequence[PackedBlob]]],
    supersedes: Sequence[bytes] = (),
) -> bytes:
    """Serialise and seal an index file naming ``packs`` (version 1), or version 2 if it
    ``supersedes`` older index files. ``packs`` may be any iterable, e.g. one that takes
    each pack's listing out of the in-memory index as it is encoded (prune): only the
    serialised file is held whole, in one buffer."""
    if any(len(i) != _ID for i in supersedes):
        raise ValueError("index ids are 32 bytes")
    plain = bytearray(_HEAD.size)
    entry = _ENTRY.pack
    count = 0
    for pack_id, blobs in packs:
        plain += _PACK.pack(pack_id, len(blobs))
        for b in blobs:
            plain += entry(b.type, b.offset, b.length, b.raw_length, b.blob_id)
        count += 1
    _HEAD.pack_into(plain, 0, _MAGIC, 2 if supersedes else 1, count)
    if supersedes:
        plain += _COUNT.pack(len(supersedes))
        for index_id in supersedes:
            plain += index_id
    return envelope.seal(plain, INDEX_AAD)


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
