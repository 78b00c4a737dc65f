"""Small files put off by the walking thread until it would otherwise wait (engine layer).

A backup's walking thread reads small files itself: their cost is Python glue, which threads
cannot share. Reading them where they are met delays every large file behind them: in a tree
of a large dump, 20,000 small documents and then a folder of uploads, the uploads would start
only once the documents are done, and their disk writes would not overlap the dump's
compression. So the walker queues small files instead and reads them when it has nothing
else to do: when the pool of large-file readers is full, when it waits for a listing, and
once the walk is over. The queue is bounded; past the bound the oldest are read at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from stackvault.fs.entry import FsEntry
from stackvault.repo.tree import Node

BATCH = 64
"""Files read per turn: the walker checks for a free reader slot between turns."""
LIMIT = 32_768
"""Files queued at most: their entries stay in memory, ~600 bytes each (~20 MB at the bound,
measured on 20,000 entries with tracemalloc)."""

Reader = Callable[[FsEntry, Node | None], Node | None]


class SmallFiles:
    """The walking thread's queue of small files to read. Used by that thread only."""

    def __init__(self, *, batch: int = BATCH, limit: int = LIMIT) -> None:
        self._batch = batch
        self._limit = limit
        self._queue: deque[
            tuple[Future[list[Node | None]], Reader, list[tuple[FsEntry, Node | None]]]
        ]
        self._queue = deque()
        self._queued = 0

    def __len__(self) -> int:
        return self._queued

    def defer(
        self, read: Reader, files: list[tuple[FsEntry, Node | None]]
    ) -> list[Future[list[Node | None]]]:
        """Queue ``files`` (entry and parent node) to be read by ``read``; one future per
        batch resolves to their nodes (None for a file that could not be read)."""
        out: list[Future[list[Node | None]]] = []
        for i in range(0, len(files), self._batch):
            fut: Future[list[Node | None]] = Future()
            part = files[i : i + self._batch]
            self._queue.append((fut, read, part))
            self._queued += len(part)
            out.append(fut)
        while self._queued > self._limit:
            self.run_one()
        return out

    def run_one(self) -> bool:
        """Read the oldest batch; False if there was none. An exception that is not a
        per-file problem (interruption, a failing repository) fails the batch's future and
        is raised."""
        if not self._queue:
            return False
        fut, read, files = self._queue.popleft()
        self._queued -= len(files)
        try:
            nodes = [read(entry, old) for entry, old in files]
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        fut.set_result(nodes)
        return True

    def acquire(self, slots: threading.Semaphore) -> None:
        """Take one of ``slots``, reading queued files while none is free."""
        while not slots.acquire(blocking=False):
            if not self.run_one():
                slots.acquire()
                return

    def wait(self, fut: Future[Any]) -> None:
        """Read queued files until ``fut`` is done (or the queue is empty)."""
        while not fut.done() and self.run_one():
            pass

    def drain(self) -> None:
        """Read every queued file."""
        while self.run_one():
            pass

    def cancel(self, exc: BaseException) -> None:
        """Fail every queued batch with ``exc`` (the run is stopping)."""
        while self._queue:
            fut, _read, files = self._queue.popleft()
            self._queued -= len(files)
            fut.set_exception(exc)
