"""In-memory store (store layer): a dict of objects for tests, benchmarks and dry runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from stackvault.errors import ObjectExists, ObjectNotFound, StoreError, StorePermissionDenied
from stackvault.store.base import Capabilities, ObjectInfo, Store, validate_name


class MemoryStore(Store):
    """Objects held in a dict; see `Store` for the contract. Nothing survives the process.

    With ``append_only=True`` it behaves like an append-only server: overwrites raise
    `ObjectExists` and deletes raise `StorePermissionDenied`, except for ``locks/`` objects,
    which stay deletable (a client must release its own lock), as in `LocalStore`.
    """

    def __init__(self, *, append_only: bool = False) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._append_only = append_only

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        validate_name(name)
        # Copy outside the lock: the caller may reuse its buffer, and big copies shouldn't block.
        value = bytes(data)
        with self._lock:
            if self._append_only and name in self._objects:
                raise ObjectExists(
                    f"object {name} already exists in append-only {self.describe()}",
                    hint="append-only stores never overwrite objects",
                )
            self._objects[name] = value

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        validate_name(name)
        if offset < 0 or (length is not None and length < 0):
            raise StoreError(f"invalid range offset={offset} length={length} for {name}")
        value = self._value(name)
        end = len(value) if length is None else offset + length
        return value[offset:end]

    def stat(self, name: str) -> ObjectInfo:
        validate_name(name)
        return ObjectInfo(name, len(self._value(name)))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._lock:
            found = [
                ObjectInfo(n, len(v)) for n, v in self._objects.items() if n.startswith(prefix)
            ]
        return iter(found)

    def delete(self, name: str) -> None:
        validate_name(name)
        if self._append_only and not name.startswith("locks/"):
            raise StorePermissionDenied(
                f"cannot delete {name}: {self.describe()} is append-only",
                hint="delete objects with a client that has delete permission",
            )
        with self._lock:
            self._objects.pop(name, None)

    def capabilities(self) -> Capabilities:
        return Capabilities(range_reads=True, parallelism=8, append_only=self._append_only)

    def describe(self) -> str:
        return f"memory:{id(self):x}"

    def _value(self, name: str) -> bytes:
        with self._lock:
            value = self._objects.get(name)
        if value is None:
            raise ObjectNotFound(f"object {name} not found in {self.describe()}")
        return value
