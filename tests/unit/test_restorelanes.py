"""A restore's lanes of file threads (`stackvault.engine.restorelanes.Lane`): `finish` waits
for every job handed out, raises a job's failure, and the queue bounds how far the walk runs
ahead."""

from __future__ import annotations

import threading
import time

import pytest

from stackvault.engine import restorelanes
from stackvault.engine.restorelanes import Lane
from stackvault.errors import IntegrityError
from stackvault.repo.tree import Node

Files = list[tuple[list[str], Node]]


def _batch(n: int) -> Files:
    return [([f"f{n}"], Node(name=f"f{n}", type="file"))]


def test_finish_waits_for_every_job() -> None:
    done: list[str] = []
    lock = threading.Lock()

    def job(files: Files) -> None:
        time.sleep(0.01)
        with lock:
            done.extend(node.name for _rel, node in files)

    lane = Lane(2, "test-lane", job)
    try:
        for n in range(40):
            lane.submit(_batch(n))
        lane.finish()
        assert sorted(done) == sorted(f"f{n}" for n in range(40))
        lane.submit(_batch(40))  # the lane takes more after a finish
        lane.finish()
        assert len(done) == 41
    finally:
        lane.shutdown()


def test_finish_raises_a_failure_without_waiting_for_the_rest() -> None:
    release = threading.Event()

    def job(files: Files) -> None:
        if files[0][1].name == "f0":
            raise IntegrityError("blob 0 is damaged")
        release.wait(10)

    lane = Lane(2, "test-lane", job)
    try:
        for n in range(3):
            lane.submit(_batch(n))
        started = time.monotonic()
        with pytest.raises(IntegrityError, match="blob 0 is damaged"):
            lane.finish()
        assert time.monotonic() - started < 5, "finish waited for the jobs still running"
    finally:
        release.set()
        lane.shutdown()


def test_submit_blocks_once_the_queue_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restorelanes, "LANE_QUEUE", 2)
    release = threading.Event()
    lane = Lane(1, "test-lane", lambda files: release.wait(10) and None)
    submitted: list[int] = []

    def walk() -> None:
        for n in range(6):
            lane.submit(_batch(n))
            submitted.append(n)

    walker = threading.Thread(target=walk, daemon=True)
    try:
        walker.start()
        time.sleep(0.3)
        assert submitted == [0, 1, 2], "one job running and two queued, then submit waits"
        release.set()
        walker.join(timeout=10)
        lane.finish()
        assert submitted == list(range(6))
    finally:
        release.set()
        lane.shutdown()
