"""Keyed content-defined chunking (chunking layer), FastCDC 2020 via `pyfastcdc`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pyfastcdc.cy import FastCDC

from stackvault.errors import UnsupportedFormat, UsageError

MIB = 1024 * 1024


@dataclass(frozen=True)
class ChunkerParams:
    """Chunk size bounds in bytes, recorded in the repository config (FORMAT.md §4)."""

    min: int = 256 * 1024
    avg: int = 1 * MIB
    max: int = 4 * MIB

    def __post_init__(self) -> None:
        # pyfastcdc's accepted ranges; outside them it raises an unhelpful ValueError.
        if not (
            64 <= self.min <= MIB and 256 <= self.avg <= 4 * MIB and 1024 <= self.max <= 16 * MIB
        ):
            raise UsageError(f"chunk sizes out of range: {self}")
        if not self.min <= self.avg <= self.max:
            raise UsageError(f"chunk sizes must satisfy min <= avg <= max: {self}")

    def to_json(self) -> dict[str, Any]:
        return {"algorithm": "fastcdc2020", "min": self.min, "avg": self.avg, "max": self.max}

    @classmethod
    def from_json(cls, data: Any) -> ChunkerParams:
        if not isinstance(data, dict) or data.get("algorithm") != "fastcdc2020":
            raise UnsupportedFormat("repository uses an unknown chunking algorithm")
        return cls(int(data["min"]), int(data["avg"]), int(data["max"]))


class Chunker:
    """Splits streams into content-defined chunks whose cut points depend on a secret seed.

    Not thread-safe: give each worker thread its own `Chunker` (construction is cheap).
    """

    def __init__(self, params: ChunkerParams, seed: int) -> None:
        self.params = params
        self._cdc = FastCDC(
            params.avg, min_size=params.min, max_size=params.max, normalized_chunking=1, seed=seed
        )

    def stream_chunks(self, stream: BinaryIO) -> Iterator[memoryview]:
        """Yield chunks of ``stream`` until EOF.

        Each memoryview is valid only until the next one is requested: copy or consume it.
        """
        for chunk in self._cdc.cut_stream(stream):
            yield chunk.data

    def buffer_chunks(self, buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """Yield chunks of an in-memory buffer (views into ``buf``)."""
        for chunk in self._cdc.cut_buf(buf):
            yield chunk.data
