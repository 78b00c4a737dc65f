"""In-memory store (store layer): a dict of objects, a public testing aid.

stackvault itself never opens one (no location names it); it is kept in the package, not under
``tests/``, for code built on `stackvault.repo.repository.Repository` to test against without a
disk or a server: it keeps the `Store` contract, can behave append-only like `LocalStore`, and
emulates S3 Object Lock retention on an injectable clock (so retention that lasts days can be
tested in milliseconds). stackvault's own tests use it the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

from stackvault.clock import Clock, SystemClock
from stackvault.errors import (
    ObjectExists,
    ObjectLocked,
    ObjectNotFound,
    StoreError,
    StorePermissionDenied,
)
from stackvault.store.base import (
    Capabilities,
    ObjectInfo,
    Retention,
    Store,
    is_mutable,
    validate_name,
)


class MemoryStore(Store):
    """Objects held in a dict; see `Store` for the contract. Nothing survives the process.

    With ``append_only=True`` it behaves like an append-only server: overwrites raise
    `ObjectExists` and deletes raise `StorePermissionDenied`, except for ``locks/`` objects,
    which stay deletable (a client must release its own lock), as in `LocalStore`.

    With ``object_lock=True`` it simulates S3 Object Lock on ``clock``: objects put after
    `configure_retention` (``locks/`` excepted) cannot be deleted before their retention date,
    which `set_retention` can only move later. Overwriting keeps the later of the two dates.
    """

    def __init__(
        self, *, append_only: bool = False, object_lock: bool = False, clock: Clock | None = None
    ) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._creating = threading.Lock()
        """Held by `put_new` from its check to its put, so creations of one name are serial."""
        self._append_only = append_only
        self._object_lock = object_lock
        self._clock: Clock = clock or SystemClock()
        self._retention: Retention | None = None
        self._until: dict[str, datetime] = {}
        self._written: dict[str, datetime] = {}
        """When each object was put, by ``clock`` (the store's own clock)."""

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        validate_name(name)
        # Copy outside the lock: the caller may reuse its buffer, and big copies shouldn't block.
        value = bytes(data)
        with self._lock:
            if self._append_only and name in self._objects and not is_mutable(name):
                raise ObjectExists(
                    f"object {name} already exists in append-only {self.describe()}",
                    hint="append-only stores never overwrite objects",
                )
            self._objects[name] = value
            self._written[name] = self._clock.now()
            if self._retention is not None and not is_mutable(name):
                until = self._clock.now() + timedelta(days=self._retention.days)
                self._until[name] = max(until, self._until.get(name, until))

    def put_new(self, name: str, data: bytes | bytearray | memoryview) -> None:
        validate_name(name)
        value = bytes(data)
        with self._creating:
            with self._lock:
                held = self._objects.get(name)
            if held is None:
                self.put(name, value)
                return
        if held != value:
            raise ObjectExists(f"object {name} already exists in {self.describe()}")

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        validate_name(name)
        if offset < 0 or (length is not None and length < 0):
            raise StoreError(f"invalid range offset={offset} length={length} for {name}")
        value = self._value(name)
        end = len(value) if length is None else offset + length
        return value[offset:end]

    def stat(self, name: str) -> ObjectInfo:
        validate_name(name)
        value = self._value(name)
        return ObjectInfo(name, len(value), self._written.get(name))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._lock:
            found = [
                ObjectInfo(n, len(v), self._written.get(n))
                for n, v in self._objects.items()
                if n.startswith(prefix)
            ]
        return iter(found)

    def delete(self, name: str) -> None:
        validate_name(name)
        if self._append_only and not is_mutable(name):
            raise StorePermissionDenied(
                f"cannot delete {name}: {self.describe()} is append-only",
                hint="delete objects with a client that has delete permission",
            )
        with self._lock:
            until = self._until.get(name)
            if until is not None and until > self._clock.now():
                raise ObjectLocked(
                    f"cannot delete {name} in {self.describe()}: retained until {until}",
                    hint="wait until the retention date",
                )
            self._objects.pop(name, None)
            self._until.pop(name, None)
            self._written.pop(name, None)

    def set_mtime(self, name: str, when: datetime) -> None:
        """Pretend the object was written at ``when`` (tests of age-based decisions: stale
        locks, prune's safety margin)."""
        self._value(name)
        with self._lock:
            self._written[name] = when

    def capabilities(self) -> Capabilities:
        return Capabilities(
            range_reads=True,
            parallelism=8,
            append_only=self._append_only,
            object_lock=self._object_lock,
        )

    def configure_retention(self, retention: Retention | None) -> None:
        if retention is not None and not self._object_lock:
            super().configure_retention(retention)
        self._retention = retention

    def retention(self, name: str) -> datetime | None:
        validate_name(name)
        self._value(name)
        with self._lock:
            return self._until.get(name)

    def set_retention(self, name: str, until: datetime) -> None:
        validate_name(name)
        if not self._object_lock:
            super().set_retention(name, until)
        self._value(name)
        with self._lock:
            self._until[name] = max(until, self._until.get(name, until))

    def describe(self) -> str:
        return f"memory:{id(self):x}"

    def _value(self, name: str) -> bytes:
        with self._lock:
            value = self._objects.get(name)
        if value is None:
            raise ObjectNotFound(f"object {name} not found in {self.describe()}")
        return value
