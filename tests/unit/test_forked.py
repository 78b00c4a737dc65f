"""The child processes a pipeline hands batches to (`stackvault.engine.forked`, used by the
restore's small files and the backup's walk):
outcomes and errors cross the pipe intact, a child that dies or is interrupted is reported,
children end with their parent, and a fork while another thread holds a store's fd cache
lock does not leave the child waiting for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest

from stackvault.engine.forked import ChildProcess
from stackvault.engine.restoreprocs import BatchOutcome
from stackvault.errors import IntegrityError, Interrupted, StackvaultError
from stackvault.store.fdcache import FdCache


def _started(work: Callable[[list[int]], BatchOutcome]) -> ChildProcess[list[int], BatchOutcome]:
    return ChildProcess(lambda: work)


def test_batches_are_restored_in_the_child_and_counted() -> None:
    parent = os.getpid()

    def work(batch: list[int]) -> BatchOutcome:
        assert os.getpid() != parent
        return BatchOutcome(files=len(batch), bytes=sum(batch), notices=[f"pid {os.getpid()}"])

    child = _started(work)
    try:
        first = child.run([1, 2, 3])
        second = child.run([10])
    finally:
        child.close()
    assert (first.files, first.bytes, second.files, second.bytes) == (3, 6, 1, 10)
    assert first.notices == [f"pid {child.pid}"]


def test_a_stackvault_error_comes_back_whole() -> None:
    def work(batch: list[int]) -> BatchOutcome:
        raise IntegrityError("blob 1234 is damaged", hint="run check")

    child = _started(work)
    try:
        with pytest.raises(IntegrityError) as err:
            child.run([1])
    finally:
        child.close()
    assert (err.value.message, err.value.hint) == ("blob 1234 is damaged", "run check")


def test_a_bug_in_the_child_comes_back_with_its_traceback() -> None:
    def work(batch: list[int]) -> BatchOutcome:
        raise ValueError("unexpected value 42")

    child = _started(work)
    try:
        with pytest.raises(RuntimeError, match=r"(?s)ValueError: unexpected value 42"):
            child.run([1])
    finally:
        child.close()


def test_an_interrupted_child_says_so() -> None:
    def work(batch: list[int]) -> BatchOutcome:
        raise KeyboardInterrupt

    child = _started(work)
    try:
        with pytest.raises(Interrupted):
            child.run([1])
    finally:
        child.close()


def test_a_child_that_dies_is_reported_with_its_signal() -> None:
    def work(batch: list[int]) -> BatchOutcome:
        if batch == [2]:
            os.kill(os.getpid(), signal.SIGKILL)
        return BatchOutcome(files=1)

    child = _started(work)
    try:
        assert child.run([1]).files == 1
        with pytest.raises(StackvaultError, match="killed by signal 9") as err:
            child.run([2])
    finally:
        child.close()
    assert type(err.value) is StackvaultError
    assert "the restore is incomplete" in err.value.message


def test_siblings_end_when_the_pipes_close() -> None:
    """Each child closes the earlier children's pipe ends: closing the pipes in any order
    lets every child see its own pipe end and exit."""
    first = _started(lambda batch: BatchOutcome(files=len(batch)))
    second: ChildProcess[list[int], BatchOutcome] = ChildProcess(
        lambda: lambda batch: BatchOutcome(files=len(batch)), (first,)
    )
    assert first.run([1]).files == 1 and second.run([1, 2]).files == 2
    done = threading.Event()

    def close_first() -> None:
        first.close()  # waits for the first child: it must not need the second to exit
        done.set()

    closer = threading.Thread(target=close_first)
    closer.start()
    closer.join(timeout=10)
    assert done.is_set(), "the first child kept running while its sibling was alive"
    second.close()


def test_children_die_with_their_parent() -> None:
    """Children of a parent killed with SIGKILL see their pipes close and end."""
    script = textwrap.dedent(
        """
        import sys, time
        from stackvault.engine.forked import ChildProcess
        from stackvault.engine.restoreprocs import BatchOutcome
        children = []
        for _ in range(2):
            children.append(ChildProcess(lambda: lambda b: BatchOutcome(), tuple(children)))
        print(" ".join(str(c.pid) for c in children), flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), "a child outlived its killed parent"


def test_a_fork_while_another_thread_holds_an_fd_cache_lock() -> None:
    cache = FdCache()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache._lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    try:
        # In the child the holder thread does not exist; the cache must still be usable.
        child = _started(lambda batch: BatchOutcome(files=int(cache.acquire("x") is None)))
        answers: list[BatchOutcome] = []
        asking = threading.Thread(target=lambda: answers.append(child.run([1])), daemon=True)
        asking.start()
        asking.join(timeout=10)
        if not answers:
            os.kill(child.pid, signal.SIGKILL)
        child.close()
        assert [a.files for a in answers] == [1], "the child waited for the lock"
    finally:
        release.set()
        holder.join()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_an_error_that_does_not_pickle_comes_back_as_a_bug() -> None:
    class Odd(StackvaultError):
        pass

    def work(batch: list[int]) -> BatchOutcome:
        error = Odd("odd failure")
        error.lock = threading.Lock()  # type: ignore[attr-defined]  # no pickle takes a lock
        raise error

    child = _started(work)
    try:
        with pytest.raises(RuntimeError, match=r"(?s)odd failure.*pickle"):
            child.run([1])
    finally:
        child.close()


def test_batches_sent_from_several_threads_each_get_their_own_outcome() -> None:
    """Several threads may have batches in flight at once: the child handles them in the
    order sent, and each caller gets the outcome of its own batch, whoever receives it."""

    def work(batch: list[int]) -> BatchOutcome:
        time.sleep(0.002 * (batch[0] % 3))  # answers take different times
        return BatchOutcome(files=batch[0], bytes=sum(batch))

    child = _started(work)
    got: dict[int, BatchOutcome] = {}
    lock = threading.Lock()

    def ask(first: int) -> None:
        for n in range(first, first + 40):
            outcome = child.run([n, n])
            with lock:
                got[n] = outcome

    try:
        askers = [threading.Thread(target=ask, args=(k * 1000,)) for k in range(4)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(timeout=30)
    finally:
        child.close()
    assert len(got) == 160
    assert all((o.files, o.bytes) == (n, 2 * n) for n, o in got.items())


def test_a_child_that_dies_fails_every_batch_in_flight() -> None:
    entered = threading.Barrier(2, timeout=10)

    def work(batch: list[int]) -> BatchOutcome:
        time.sleep(0.3)  # the second batch is sent meanwhile
        os.kill(os.getpid(), signal.SIGKILL)
        return BatchOutcome()

    child = _started(work)
    errors: list[BaseException] = []

    def ask(n: int) -> None:
        entered.wait()
        try:
            child.run([n])
        except StackvaultError as exc:
            errors.append(exc)

    try:
        askers = [threading.Thread(target=ask, args=(n,)) for n in (1, 2)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(timeout=30)
        assert not any(asker.is_alive() for asker in askers), "a caller waits forever"
    finally:
        child.close()
    assert len(errors) == 2
    assert all("killed by signal 9" in str(e) for e in errors)
