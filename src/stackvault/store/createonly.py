"""A create-only view of a store (store layer): every put through it is a `put_new`.

`init` writes the new repository's objects through it: two processes that create a repository
at one location at the same time can then never replace each other's config, and the one that
loses takes back its key file (`remove_created`), so that no key opening another master key is
left behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from stackvault.store.base import Capabilities, ObjectInfo, Retention, Store


class CreateOnlyStore(Store):
    """``inner``, except that `put` and `put_parts` only create (`ObjectExists` if the name is
    taken); the names it created are in `created`."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.created: list[str] = []
        self._lock = threading.Lock()

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.put_new(name, data)

    def put_parts(self, name: str, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        self.put_new(name, b"".join(parts))

    def put_new(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.inner.put_new(name, data)
        with self._lock:
            self.created.append(name)

    def remove_created(self) -> None:
        """Delete every object this view created (best effort: a delete that fails leaves
        an object that `check` reports)."""
        with self._lock:
            names, self.created = self.created, []
        for name in names:
            self.inner.delete(name)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
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
        return self.inner.describe()

    @property
    def retries(self) -> int:
        return self.inner.retries

    def set_notice(self, notice: Callable[[str], None]) -> None:
        self.inner.set_notice(notice)

    def ensure_root(self, *, object_lock: bool = False) -> None:
        self.inner.ensure_root(object_lock=object_lock)

    def configure_retention(self, retention: Retention | None) -> None:
        self.inner.configure_retention(retention)

    def retention(self, name: str) -> datetime | None:
        return self.inner.retention(name)

    def set_retention(self, name: str, until: datetime) -> None:
        self.inner.set_retention(name, until)

    def cleanup(self) -> int:
        return self.inner.cleanup()

    def close(self) -> None:
        self.inner.close()
