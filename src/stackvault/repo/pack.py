"""Pack files (repository layer): sealed blobs followed by a sealed header (FORMAT.md §5)."""

from __future__ import annotations

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
    """Accumulates sealed blobs of one type for one pack file.

    The sealed blobs are kept as separate buffers and handed to the store as a list of parts
    (written with one gathering system call by the local store), so building a pack never
    copies its data and never holds the GIL for a large memcpy.
    """

    def __init__(self, blob_type: BlobType) -> None:
        self.blob_type = blob_type
        self.parts: list[bytes] = []
        self.entries: list[PackedBlob] = []
        self.size = 0

    def add(self, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        self.entries.append(PackedBlob(self.blob_type, blob_id, self.size, len(sealed), raw_length))
        self.parts.append(sealed)
        self.size += len(sealed)

    def finish(self, envelope: Envelope) -> tuple[bytes, list[bytes]]:
        """Return ``(pack_id, parts)``: the pack is the concatenation of ``parts``."""
        header = b"".join(
            _ENTRY.pack(e.type, e.length, e.raw_length, e.blob_id) for e in self.entries
        )
        sealed_header = envelope.seal(header, HEADER_AAD)
        parts = [*self.parts, sealed_header, _TRAILER.pack(len(sealed_header))]
        self.parts = []
        hasher = blake3.blake3()
        for part in parts:
            hasher.update(part)
        return hasher.digest(), parts


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
