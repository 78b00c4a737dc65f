"""The lanes a restore hands its regular files to (engine layer): threads that restore
batches of files, each lane with a bounded queue so the tree walk runs ahead of them but not
without limit (`stackvault.engine.restore`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from stackvault.engine.forked import ChildProcess
from stackvault.engine.packrestore import PackRestorer
from stackvault.repo.tree import Node

LANE_QUEUE = 256
"""Jobs queued per lane of file threads, so the tree walk runs ahead of both lanes."""


class Lane:
    """File threads running ``job`` on batches of files, with a bounded queue (`submit`
    blocks when it is full)."""

    def __init__(
        self, workers: int, name: str, job: Callable[[list[tuple[list[str], Node]]], None]
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(workers + LANE_QUEUE)
        self._futures: list[Future[None]] = []
        self._job = job

    def submit(self, files: list[tuple[list[str], Node]]) -> None:
        self._slots.acquire()

        def run() -> None:
            try:
                self._job(files)
            finally:
                self._slots.release()

        self._futures.append(self._pool.submit(run))

    def finish(self) -> None:
        """Wait for every job; re-raise the first failure."""
        for fut in self._futures:
            fut.result()

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
