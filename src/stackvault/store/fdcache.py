"""A small cache of open read-only file descriptors (store layer), shared between threads.

Entries are reference-counted: an evicted or invalidated descriptor is closed only when the
last reader using it releases it, so a concurrent ``pread`` never sees a closed (or reused)
descriptor. A process forked while another thread held a cache's lock gets the cache
with a fresh lock (`os.register_at_fork`), so its reads cannot wait forever for it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class FdEntry:
    fd: int
    refs: int = 0
    doomed: bool = False


class FdCache:
    """Up to ``capacity`` descriptors, least recently used evicted first."""

    def __init__(self, capacity: int = 32) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, FdEntry] = OrderedDict()
        _CACHES.add(self)
        # A store that is dropped without close() must not leak its descriptors.
        weakref.finalize(self, _close_all, self._entries)

    def acquire(self, name: str) -> FdEntry | None:
        """The cached entry for ``name`` with a reference taken, or None."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            entry.refs += 1
            self._entries.move_to_end(name)
            return entry

    def release(self, entry: FdEntry) -> None:
        with self._lock:
            entry.refs -= 1
            close = entry.doomed and entry.refs == 0
        if close:
            os.close(entry.fd)

    def offer(self, name: str, fd: int) -> None:
        """Keep ``fd`` (which the caller no longer uses) for later reads of ``name``."""
        to_close: list[int] = []
        with self._lock:
            if name in self._entries:
                to_close.append(fd)
            else:
                self._entries[name] = FdEntry(fd)
            while len(self._entries) > self._capacity:
                _old, entry = self._entries.popitem(last=False)
                to_close.extend(self._doom(entry))
        for f in to_close:
            os.close(f)

    def invalidate(self, name: str) -> None:
        """Forget ``name`` (its object was replaced or deleted)."""
        with self._lock:
            entry = self._entries.pop(name, None)
            to_close = self._doom(entry) if entry is not None else []
        for f in to_close:
            os.close(f)

    def clear(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            to_close = [f for e in entries for f in self._doom(e)]
        for f in to_close:
            os.close(f)

    @staticmethod
    def _doom(entry: FdEntry) -> list[int]:
        entry.doomed = True
        return [entry.fd] if entry.refs == 0 else []


_CACHES: weakref.WeakSet[FdCache] = weakref.WeakSet()


def _fresh_locks() -> None:
    """In a forked child: a new lock for every cache (the thread that held one is gone)."""
    for cache in list(_CACHES):
        cache._lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks)


def _close_all(entries: OrderedDict[str, FdEntry]) -> None:
    for entry in entries.values():
        try:
            os.close(entry.fd)
        except OSError:
            pass
    entries.clear()
