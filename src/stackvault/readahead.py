"""The read-ahead window: reads run on a pool a bounded number ahead of the one consumed,
their results given in order.

Used wherever reads must overlap while what they hold stays bounded: a file's plaintext
read ahead of its writer or reader (a restore's large files, `stackvault.engine.filedata`'s
streams), so that decryption and decompression use more than one core; the index files a
repository loads (`stackvault.repo.repository`), each added to the index as its turn comes
and then dropped.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Executor, Future, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def read_ahead(
    pool: Executor, items: Iterable[T], read: Callable[[T], R], ahead: int
) -> Generator[R, None, None]:
    """``read(item)`` of each of ``items``, in their order, with up to ``ahead`` reads
    submitted to ``pool`` (running or queued) besides the one consumed: a result is
    taken, the next read submitted, and only then the result given.

    A read that raised raises when its turn comes. When the iterator ends early (closed,
    or a read raised), the reads not started are cancelled and those running are waited
    for, so none still runs after it is done: a read may write into something the
    consumer commits or aborts next."""
    window: deque[Future[R]] = deque()
    pending = iter(items)
    try:
        for item in itertools.islice(pending, ahead):
            window.append(pool.submit(read, item))
        while window:
            result = window.popleft().result()
            for nxt in itertools.islice(pending, 1):
                window.append(pool.submit(read, nxt))
            yield result
    finally:
        for fut in window:
            fut.cancel()
        wait(window)
