"""Pack files (repository layer): sealed blobs followed by a sealed header (FORMAT.md §5)."""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

import blake3

from stackvault.crypto.envelope import Envelope
from stackvault.errors import IntegrityError
from stackvault.repo.blob import BlobType

HEADER_AAD = b"sv1:packheader"
_ENTRY = struct.Struct("<BII32s")  # type, stored length, raw length, blob id
_TRAILER = struct.Struct("<I")


def pack_name(pack_id: bytes) -> str:
    """The store name of a pack: ``data/<first 2 hex>/<hex>``."""
    h = pack_id.hex()
    return f"data/{h[:2]}/{h}"


def storage_id(data: bytes | bytearray | memoryview) -> bytes:
    """Unkeyed BLAKE3 of stored bytes: the name of packs, index files and snapshots."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest()


@dataclass(frozen=True)
class PackedBlob:
    """One blob's place inside a pack."""

    type: BlobType
    blob_id: bytes
    offset: int
    length: int
    raw_length: int


class PackBuilder:
    """Accumulates sealed blobs of one type into one pack file in memory.

    The buffer is an anonymous mapping of ``capacity`` bytes: pages count against memory
    only once filled, and appending never reallocates and copies a growing pack. Call
    `release` when the pack has been stored.
    """

    def __init__(self, blob_type: BlobType, capacity: int) -> None:
        self.blob_type = blob_type
        self._buf = mmap.mmap(-1, capacity)
        self._size = 0
        self.entries: list[PackedBlob] = []

    @property
    def size(self) -> int:
        return self._size

    def _append(self, data: bytes | bytearray | memoryview) -> None:
        end = self._size + len(data)
        if end > len(self._buf):
            # Rare (a blob larger than the planned capacity). A fresh mapping and one copy:
            # mmap.resize of anonymous mappings is not reliable across platforms.
            bigger = mmap.mmap(-1, max(end, 2 * len(self._buf)))
            bigger[: self._size] = self._buf[: self._size]
            self._buf.close()
            self._buf = bigger
        self._buf[self._size : end] = data
        self._size = end

    def add(self, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        self.entries.append(
            PackedBlob(self.blob_type, blob_id, self._size, len(sealed), raw_length)
        )
        self._append(sealed)

    def finish(self, envelope: Envelope) -> tuple[bytes, memoryview]:
        """Return ``(pack_id, pack_bytes)``; valid until `release`."""
        header = b"".join(
            _ENTRY.pack(e.type, e.length, e.raw_length, e.blob_id) for e in self.entries
        )
        sealed_header = envelope.seal(header, HEADER_AAD)
        self._append(sealed_header)
        self._append(_TRAILER.pack(len(sealed_header)))
        view = memoryview(self._buf)[: self._size]
        return storage_id(view), view

    def release(self, view: memoryview | None = None) -> None:
        """Free the buffer (and the view `finish` returned, if given)."""
        if view is not None:
            view.release()
        self._buf.close()


def read_pack_header(envelope: Envelope, tail: bytes, pack_size: int) -> list[PackedBlob]:
    """Parse a pack's header from its last bytes (``tail`` must hold the header and trailer).

    Raises `IntegrityError` if the header is damaged or inconsistent with ``pack_size``.
    """
    if len(tail) < _TRAILER.size:
        raise IntegrityError("pack is too short to hold a header")
    (hlen,) = _TRAILER.unpack_from(tail, len(tail) - _TRAILER.size)
    if hlen + _TRAILER.size > len(tail):
        raise IntegrityError("pack header length points outside the pack")
    start = len(tail) - _TRAILER.size - hlen
    header = envelope.open(tail[start : start + hlen], HEADER_AAD)
    if len(header) % _ENTRY.size:
        raise IntegrityError("pack header has a partial entry")
    entries: list[PackedBlob] = []
    offset = 0
    for kind, length, raw_length, blob_id in _ENTRY.iter_unpack(header):
        entries.append(PackedBlob(BlobType(kind), blob_id, offset, length, raw_length))
        offset += length
    if offset + hlen + _TRAILER.size != pack_size:
        raise IntegrityError("pack header does not match the pack's size")
    return entries


def header_length_hint(entry_count: int) -> int:
    """Bytes needed at the end of a pack to hold a header of ``entry_count`` entries."""
    return entry_count * _ENTRY.size + 28 + _TRAILER.size
