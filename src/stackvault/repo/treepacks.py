"""Whole tree packs of a remote store, fetched once per run (repository layer).

A walk of a snapshot loads one tree per directory; on a store across a network each tree
read from its pack is a request (~3-5 ms on a local S3 server), and a no-change backup of
20,063 files made 222 of them, one after the other on each walking thread. Tree packs hold
trees only and are small next to data packs, so fetching each once whole and cutting the
trees out of it turns those requests into one per pack.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future

from stackvault.errors import StackvaultError
from stackvault.repo.blob import IndexEntry
from stackvault.repo.pack import pack_name
from stackvault.store.base import Store

KEEP_BYTES = 64 * 1024 * 1024
"""Tree packs kept at most; the least recently used go first."""


class TreePacks:
    """Cuts sealed tree blobs out of whole tree packs, each fetched once. Thread-safe: a
    thread wanting a pack another is fetching waits for that fetch."""

    def __init__(self, store: Store, keep_bytes: int = KEEP_BYTES) -> None:
        self._store = store
        self._keep = keep_bytes
        self._packs: OrderedDict[bytes, Future[bytes | None]] = OrderedDict()
        self._sizes: dict[bytes, int] = {}
        self._held = 0
        self._lock = threading.Lock()

    def sealed(self, entry: IndexEntry) -> memoryview | None:
        """The stored bytes of the blob at ``entry``, or None if its pack could not be read
        whole or is shorter than the index says: the caller then reads the blob itself,
        which reports what is wrong."""
        with self._lock:
            fut = self._packs.get(entry.pack_id)
            fetch = fut is None
            if fut is None:
                fut = self._packs[entry.pack_id] = Future()
            else:
                self._packs.move_to_end(entry.pack_id)
        if fetch:
            self._fetch(entry.pack_id, fut)
        data = fut.result()
        if data is None or entry.offset + entry.length > len(data):
            return None
        return memoryview(data)[entry.offset : entry.offset + entry.length]

    def _fetch(self, pack_id: bytes, fut: Future[bytes | None]) -> None:
        data: bytes | None = None
        try:
            data = self._store.get(pack_name(pack_id))
        except StackvaultError:
            pass
        finally:
            fut.set_result(data)  # also when interrupted: no waiter may hang
        with self._lock:
            if self._packs.get(pack_id) is not fut:
                return  # already dropped again by another thread's eviction
            self._sizes[pack_id] = len(data or b"")
            self._held += self._sizes[pack_id]
            while self._held > self._keep and len(self._packs) > 1:
                oldest, old = next(iter(self._packs.items()))
                if not old.done() or oldest == pack_id:
                    break
                del self._packs[oldest]
                self._held -= self._sizes.pop(oldest, 0)
