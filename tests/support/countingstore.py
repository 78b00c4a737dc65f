"""Stores that record every read, for tests that count what an operation fetched."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence

from stackvault.repo.blob import BlobType
from stackvault.repo.pack import pack_name
from stackvault.repo.repository import Repository
from stackvault.store.base import Capabilities, ObjectInfo, Store


class CountingStore(Store):
    """Delegates to ``inner`` and records every ``get`` (name, offset, length)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.gets: list[tuple[str, int, int | None]] = []
        self._lock = threading.Lock()

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.inner.put(name, data)

    def put_parts(self, name: str, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        self.inner.put_parts(name, parts)

    def put_new(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.inner.put_new(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._lock:
            self.gets.append((name, offset, length))
        return self.inner.get(name, offset, length)

    def stat(self, name: str) -> ObjectInfo:
        return self.inner.stat(name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def describe(self) -> str:
        return f"counting:{self.inner.describe()}"

    def data_blob_gets(self, repo: Repository) -> list[bytes]:
        """Ids of the data blobs that were read (ranged gets inside data packs)."""
        where = {
            (pack_name(entry.pack_id), entry.offset): blob_id
            for blob_id, entry in repo.index.items()
            if entry.type == BlobType.DATA
        }
        with self._lock:
            return [where[(n, o)] for n, o, _len in self.gets if (n, o) in where]


class RemoteCountingStore(CountingStore):
    """A counting store that says it is remote, as S3 does (so the engine reads as it would
    from S3: whole tree packs, restores pack by pack)."""

    def capabilities(self) -> Capabilities:
        return dataclasses.replace(self.inner.capabilities(), remote=True)
