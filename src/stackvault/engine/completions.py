"""Directory nodes of a backup completed asynchronously (engine layer): a directory's node
is finished, its tree stored, by whichever thread stores the last of its children."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

from stackvault.repo.tree import Node

Pending = Node | None | Future[Node | None] | Future[list[Node | None]]


class Completions:
    """Completes directory nodes once their children are stored (`when_all`), without
    recursion: a directory's completion completes its parent's, and so on up, which for a
    tree thousands of levels deep would exceed Python's recursion limit if each ran inside
    the last (``Future.set_result`` runs callbacks in place). A completion started while
    another runs on the same thread is queued and run by the outer one. Thread-safe."""

    def __init__(self) -> None:
        self._local = threading.local()

    def when_all(
        self,
        items: list[Pending],
        finish: Callable[[list[Node]], Node],
        out: Future[Node | None] | None = None,
    ) -> Future[Node | None]:
        """``out`` (a new future if None), resolved to ``finish(nodes)`` - run in whichever
        thread completes the last item - once every future among ``items`` is done; any
        failure of an item fails it."""
        result: Future[Node | None] = Future() if out is None else out
        futures = [i for i in items if isinstance(i, Future)]
        remaining = [len(futures) + 1]  # +1: nothing fires before every callback is attached
        lock = threading.Lock()

        def complete() -> None:
            try:
                nodes: list[Node] = []
                for item in items:
                    value = item.result() if isinstance(item, Future) else item
                    if isinstance(value, list):
                        nodes.extend(n for n in value if n is not None)
                    elif value is not None:
                        nodes.append(value)
                # Children are no longer needed once the directory's tree is stored; dropping
                # them keeps memory proportional to the directories in progress, not the tree.
                items.clear()
                result.set_result(finish(nodes))
            except BaseException as exc:
                result.set_exception(exc)

        def done(_f: object = None) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            self._run(complete)

        for fut in futures:
            fut.add_done_callback(done)
        done()
        return result

    def _run(self, job: Callable[[], None]) -> None:
        """Run ``job`` now, or after the completion this thread is running (a trampoline)."""
        queue: list[Callable[[], None]] | None = getattr(self._local, "queue", None)
        if queue is not None:
            queue.append(job)
            return
        queue = self._local.queue = [job]
        try:
            while queue:
                queue.pop()()
        finally:
            self._local.queue = None
