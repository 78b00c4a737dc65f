"""Blob types, ids and the per-thread blob codec (repository layer)."""

from __future__ import annotations

import enum
from typing import NamedTuple

import zstandard

from stackvault.errors import IntegrityError

ENCODING_RAW = 0
ENCODING_ZSTD = 1


class BlobType(enum.IntEnum):
    """What a blob holds. Packs hold blobs of one type only."""

    DATA = 0
    TREE = 1


_BLOB_TYPES = {t.value: t for t in BlobType}


def blob_type(value: int) -> BlobType:
    """The `BlobType` of a stored type byte (a dictionary lookup: ``BlobType(value)`` costs
    about ten times as much, once per blob of every index file loaded). Raises
    `ValueError` for an unknown type."""
    try:
        return _BLOB_TYPES[value]
    except KeyError:
        raise ValueError(f"unknown blob type {value}") from None


class IndexEntry(NamedTuple):
    """Where one blob is stored."""

    pack_id: bytes
    offset: int
    length: int
    raw_length: int
    type: BlobType


def blob_aad(blob_type: BlobType, blob_id: bytes) -> bytes:
    """Associated data binding a sealed blob to its type and id (FORMAT.md §5)."""
    return b"sv1:blob:" + bytes((blob_type,)) + blob_id


COMPRESS_MIN = 64
"""Payloads shorter than this are stored raw without trying zstd."""


def _saves_enough(size: int, packed: int) -> bool:
    """Whether zstd output of ``packed`` bytes is worth storing for ``size`` raw bytes: it
    must save at least 1/32."""
    return packed <= size - (size >> 5)


class BlobCodec:
    """Compresses and decompresses blob payloads. One per thread: zstd contexts are not
    shareable between threads."""

    def __init__(self, level: int = 2) -> None:
        # Level 2 on ~1 MiB chunks of SQL text: 386 MB/s, ratio 3.92; level 1: 408 MB/s, 3.69;
        # level 3: 303 MB/s, 4.01 (docs/PERFORMANCE.md). 2 keeps the repository within a few
        # percent of level 3's size at close to level 1's speed.
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._decompressor = zstandard.ZstdDecompressor()

    def encode(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """``encoding byte | payload``: zstd when it saves at least 1/32, else raw."""
        if len(plaintext) >= COMPRESS_MIN:
            packed = self._compressor.compress(plaintext)
            if _saves_enough(len(plaintext), len(packed)):
                return b"\x01" + packed
        return b"\x00" + bytes(plaintext)

    def encode_many(self, plaintexts: list[bytes]) -> list[bytes]:
        """`encode` of each of ``plaintexts`` (small blobs), compressed in one native call."""
        big: list[bytes | bytearray | memoryview] = [
            p for p in plaintexts if len(p) >= COMPRESS_MIN
        ]
        packed = self._compressor.multi_compress_to_buffer(big, threads=1) if big else None
        out: list[bytes] = []
        k = 0
        for plain in plaintexts:
            if packed is not None and len(plain) >= COMPRESS_MIN:
                segment = packed[k]
                k += 1
                if _saves_enough(len(plain), len(segment)):
                    # One copy out of zstd's buffer (a segment has the buffer protocol;
                    # its type stubs do not say so).
                    out.append(b"\x01" + segment)  # type: ignore[operator]
                    continue
            out.append(b"\x00" + plain)
        return out

    def decode(self, encoded: bytes, raw_length: int) -> bytes | memoryview:
        """Inverse of `encode`; raises `IntegrityError` on malformed input."""
        if not encoded:
            raise IntegrityError("blob payload is empty")
        kind = encoded[0]
        if kind == ENCODING_RAW:
            return memoryview(encoded)[1:]  # no copy of a large incompressible blob
        if kind == ENCODING_ZSTD:
            try:
                out: bytes = self._decompressor.decompress(
                    memoryview(encoded)[1:], max_output_size=raw_length
                )
            except zstandard.ZstdError as exc:
                raise IntegrityError("blob payload does not decompress") from exc
            return out
        raise IntegrityError(f"blob payload has unknown encoding {kind}")
