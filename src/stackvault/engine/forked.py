"""Child processes a pipeline hands batches of work to (engine layer).

Why: per-file work in Python (a restore creating small files, a backup listing directories
and reading small files) is ~30-100 us of interpreter time around a few system calls.
Threads of one process take turns at the interpreter, so however many there are, such work
keeps about one core busy. A child process has an interpreter of its own: with one child per
core the files are handled on every core at once.

How: `ChildProcess` forks the running process once its repository, index and keys are open,
before the pipeline starts threads of its own, so the child shares them copy-on-write and
needs no key, index or password of its own. The parent sends a batch (pickled) through a
pipe; the child handles it with the function its ``setup`` returned and answers with an
`Outcome` (a subclass of it carries the pipeline's results).

Lifetime: the child ends when its pipe closes: when the parent closes it, or when the parent
dies however it dies (the kernel closes the parent's end). It ignores SIGINT and SIGTERM: a
signal raises in the thread that runs the batch, anywhere, even between the create of a file
and the ``try`` that would remove it, so the child instead finishes the batch it has (each
is small) and ends when the parent, interrupted, closes its pipe. A child never returns
into the parent's code: it leaves with ``os._exit``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

from stackvault.errors import Interrupted, StackvaultError

Batch = TypeVar("Batch")
Result = TypeVar("Result", bound="Outcome")


def fork_supported() -> bool:
    """Whether child processes can be used here: Linux (other systems are not tested;
    `fork` is unsafe on macOS)."""
    return sys.platform == "linux" and hasattr(os, "fork")


@dataclass
class Outcome:
    """What a child made of one batch: subclasses add the pipeline's results."""

    error: StackvaultError | None = None
    """The failure that ended the batch early (the pipeline fails with it)."""
    bug: str = ""
    """The traceback of an unexpected exception in the child."""


class ChildProcess(Generic[Batch, Result]):
    """One child process handling batches with the function ``setup`` returns.

    ``setup`` runs in the child right after the fork (it makes the child's own handles: a
    target with its own directory fds, say) and returns the function that handles a batch.
    ``role`` names the work in messages ("restore", "backup").
    ``siblings``: the processes started before this one, whose pipe ends the child closes
    (else a sibling would never see its pipe close). `run` may be called from any thread,
    from several at once.
    """

    def __init__(
        self,
        setup: Callable[[], Callable[[Batch], Result]],
        siblings: Sequence[ChildProcess[Any, Any]] = (),
        *,
        role: str = "restore",
    ) -> None:
        self.role = role
        parent_end, child_end = multiprocessing.Pipe(duplex=True)
        sys.stdout.flush()
        sys.stderr.flush()
        with warnings.catch_warnings():
            # Python 3.12+ warns of forking a process that has threads: the child runs
            # nothing but `_serve` and leaves with os._exit; see the module docstring.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never returns
            status = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                parent_end.close()
                for sibling in siblings:
                    sibling._conn.close()
                status = _serve(child_end, setup(), role)
            except BaseException:  # a child must leave through os._exit
                status = 1
            finally:
                os._exit(status)
        child_end.close()
        self.pid = pid
        self._conn: Connection = parent_end
        self._status: int | None = None
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._reap_lock = threading.Lock()
        self._waiting: deque[Future[Result]] = deque()

    def run(self, batch: Batch) -> Result:
        """Have the child handle ``batch``; its outcome. Raises the error that ended the
        batch, `Interrupted` if the child was interrupted, `StackvaultError` if it died.

        Several threads may call it at once: each batch is sent as soon as the pipe takes
        it, so the child finds the next batch waiting when it answers the last one instead
        of idling while the parent takes the answer and sends another (the child handles
        batches in the order sent, and whichever caller is receiving hands each answer to
        the caller of its batch)."""
        mine: Future[Result] = Future()
        try:
            with self._send_lock:
                self._waiting.append(mine)
                self._conn.send(batch)
            with self._recv_lock:
                while not mine.done():
                    outcome: Result = self._conn.recv()
                    self._waiting.popleft().set_result(outcome)
        except (EOFError, OSError) as exc:
            raise StackvaultError(
                f"a {self.role} process (PID {self.pid}) ended before finishing its files: "
                f"{self._ended()}; the {self.role} is incomplete",
                hint=f"look for the out-of-memory killer in the kernel log, then run the "
                f"{self.role} again",
            ) from exc
        outcome = mine.result()
        if outcome.error is not None:
            raise outcome.error
        if outcome.bug:
            raise RuntimeError(f"in {self.role} process {self.pid}:\n{outcome.bug}")
        return outcome

    def close(self) -> None:
        """Close the pipe (the child ends when it has finished its batch) and reap the
        child."""
        self._conn.close()
        self._ended()

    def _ended(self) -> str:
        """Wait for the child; how it ended (each caller of `run` with a batch in flight
        asks when the pipe breaks: the child is reaped once)."""
        with self._reap_lock:
            if self._status is None:
                try:
                    _pid, self._status = os.waitpid(self.pid, 0)
                except ChildProcessError:
                    self._status = 0
        if os.WIFSIGNALED(self._status):
            return f"killed by signal {os.WTERMSIG(self._status)}"
        return f"exit status {os.waitstatus_to_exitcode(self._status)}"


def _serve(conn: Connection, work: Callable[[Batch], Outcome], role: str) -> int:
    """The child's loop: handle each batch received, answer its outcome; the exit status."""
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return 0
        try:
            outcome = work(batch)
        except KeyboardInterrupt:
            outcome = Outcome(error=Interrupted(f"{role} interrupted"))
        except StackvaultError as exc:
            outcome = Outcome(error=exc)
        except BaseException:  # reported to the parent as a bug
            outcome = Outcome(bug=traceback.format_exc())
        try:
            _answer(conn, outcome)
        except (OSError, KeyboardInterrupt):
            return 1
        if outcome.error is not None or outcome.bug:
            return 1


def _answer(conn: Connection, outcome: Outcome) -> None:
    """Send ``outcome``; one that cannot be pickled (an error holding something no pickle
    takes) is sent as a bug with the traceback of the pickling (pickling comes before
    anything is written, so the pipe holds no partial message)."""
    try:
        conn.send(outcome)
    except (OSError, KeyboardInterrupt):
        raise
    except Exception:
        conn.send(Outcome(bug=f"{outcome.error!r}\n{traceback.format_exc()}"))
