"""The walking thread's queue of small files (engine/smallfiles.py): batches resolve to their
nodes in order, the queue is read when no reader slot is free, while waiting for a future
and at the end, its bound holds, and a failure fails the batch and reaches the walker."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from stackvault.engine.smallfiles import SmallFiles
from stackvault.errors import Interrupted
from stackvault.fs.entry import FsEntry
from stackvault.repo.tree import Node


def entry(name: str) -> FsEntry:
    return FsEntry(
        path=f"/src/{name}",
        name=name,
        kind="file",
        mode=0o644,
        uid=0,
        gid=0,
        size=10,
        mtime_ns=0,
        ctime_ns=0,
        inode=1,
        device=1,
        nlink=1,
        link_target=None,
        xattrs=(),
    )


class Recorder:
    def __init__(self) -> None:
        self.read: list[str] = []

    def __call__(self, e: FsEntry, old: Node | None) -> Node | None:
        self.read.append(e.name)
        return None if e.name.startswith("bad") else Node(name=e.name, type="file")


def files(*names: str) -> list[tuple[FsEntry, Node | None]]:
    return [(entry(n), None) for n in names]


def test_batches_resolve_in_order_once_drained() -> None:
    q = SmallFiles(batch=2)
    rec = Recorder()
    futs = q.defer(rec, files("a", "b", "c", "bad-d", "e"))
    assert len(futs) == 3 and len(q) == 5
    assert rec.read == [] and not any(f.done() for f in futs)  # nothing read yet
    q.drain()
    assert rec.read == ["a", "b", "c", "bad-d", "e"] and len(q) == 0
    results = [f.result() for f in futs]
    assert [[n.name if n else None for n in r] for r in results] == [
        ["a", "b"],
        ["c", None],
        ["e"],
    ]
    assert q.run_one() is False


def test_the_bound_reads_the_oldest_at_once() -> None:
    q = SmallFiles(batch=2, limit=3)
    rec = Recorder()
    q.defer(rec, files("a", "b"))
    assert rec.read == []
    q.defer(rec, files("c", "d"))  # 4 queued > 3: the oldest batch is read
    assert rec.read == ["a", "b"] and len(q) == 2


def test_acquire_reads_queued_files_while_no_slot_is_free() -> None:
    q = SmallFiles(batch=1)
    rec = Recorder()
    slots = threading.BoundedSemaphore(1)
    q.defer(rec, files("a", "b", "c"))
    q.acquire(slots)  # a slot is free: taken at once, nothing read
    assert rec.read == []
    freer = threading.Timer(0.3, slots.release)
    freer.start()
    q.acquire(slots)  # none free: reads the queue, then waits for the release
    freer.join()
    assert rec.read == ["a", "b", "c"]
    assert not slots.acquire(blocking=False)  # the walker holds the slot it got


def test_wait_reads_until_the_future_is_done() -> None:
    q = SmallFiles(batch=1)
    seen: list[str] = []
    target: Future[int] = Future()

    def read(e: FsEntry, old: Node | None) -> Node | None:
        seen.append(e.name)
        if e.name == "b":
            target.set_result(1)
        return Node(name=e.name, type="file")

    q.defer(read, files("a", "b", "c"))
    q.wait(target)
    assert seen == ["a", "b"] and len(q) == 1


def test_a_failure_fails_its_batch_and_reaches_the_walker() -> None:
    q = SmallFiles(batch=2)

    def read(e: FsEntry, old: Node | None) -> Node | None:
        if e.name == "b":
            raise Interrupted("backup interrupted")
        return Node(name=e.name, type="file")

    first, second = q.defer(read, files("a", "b", "c"))
    with pytest.raises(Interrupted):
        q.drain()
    with pytest.raises(Interrupted):
        first.result(timeout=0)
    assert not second.done()
    q.cancel(Interrupted("backup stopped"))
    with pytest.raises(Interrupted, match="stopped"):
        second.result(timeout=0)
    assert len(q) == 0
