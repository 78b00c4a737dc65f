"""The lanes a restore hands its regular files to (engine layer): threads that restore
batches of files, each lane with a bounded queue so the tree walk runs ahead of them but not
without limit (`stackvault.engine.restore`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from stackvault.engine.forked import ChildProcess
from stackvault.engine.packrestore import PackRestorer
from stackvault.repo.tree import Node

LANE_QUEUE = 16
"""Jobs queued per lane of file threads, so the tree walk runs ahead of the lanes. No more:
each queued batch keeps its nodes alive (~150 objects a batch of 64 files), and the
interpreter's garbage collector walks every live object at each full collection. With 256 a
lane, and a record kept of every job, the parent of a restore of 1,000,000 files spent
15-16 of its 38-43 CPU-s in collections; with 16 and no record, 4-8 of 24-35."""


class Lane:
    """File threads running ``job`` on batches of files, with a bounded queue (`submit`
    blocks when it is full). Only the first failure of a job is kept (`finish` raises it):
    a record per job would grow with the restore."""

    def __init__(
        self, workers: int, name: str, job: Callable[[list[tuple[list[str], Node]]], None]
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._size = workers + LANE_QUEUE
        self._slots = threading.BoundedSemaphore(self._size)
        self._failure: BaseException | None = None
        self._failure_lock = threading.Lock()
        self._job = job

    def submit(self, files: list[tuple[list[str], Node]]) -> None:
        self._slots.acquire()

        def run() -> None:
            try:
                self._job(files)
            except BaseException as exc:
                with self._failure_lock:
                    if self._failure is None:
                        self._failure = exc
            finally:
                self._slots.release()

        self._pool.submit(run)

    def finish(self) -> None:
        """Wait for every job (each holds a slot until it ends); raise the first failure as
        soon as there is one."""
        taken = 0
        try:
            while taken < self._size and self._failure is None:
                self._slots.acquire()
                taken += 1
        finally:
            for _ in range(taken):
                self._slots.release()
        if self._failure is not None:
            raise self._failure

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Lanes:
    """Where a restore hands its regular files: the lanes of small files (in batches; one
    lane of threads, or one lane per child process, each batch to the next lane), the lane
    of large files (several blobs, or one of at least `STAGE_MIN` bytes), and, reading pack
    by pack, the `PackRestorer` (which then takes every file with content)."""

    small: list[Lane]
    large: Lane
    packs: PackRestorer | None
    children: list[ChildProcess[Any, Any]]
    """The child processes behind the small lanes (none: file threads)."""

    def finish(self) -> None:
        """Wait for every file handed out; re-raise the first failure."""
        for lane in self.small:
            lane.finish()
        self.large.finish()
        if self.packs is not None:
            self.packs.finish()

    def close(self) -> None:
        """Stop the threads and the child processes (after `finish`, or to abandon what is
        left: a child finishes its batch first)."""
        if self.packs is not None:
            self.packs.close()
        for lane in self.small:
            lane.shutdown()
        self.large.shutdown()
        for child in self.children:
            child.close()
