"""Tree nodes during a backup (engine layer): from filesystem entries, and completed
asynchronously when a directory's children are stored."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future

from stackvault.fs.entry import FsEntry
from stackvault.repo.tree import Node


def node_from_entry(e: FsEntry) -> Node:
    """The snapshot node for a filesystem entry (content and subtree are filled in later)."""
    node = Node(
        name=e.name,
        type=e.kind,
        mode=e.mode,
        uid=e.uid,
        gid=e.gid,
        mtime_ns=e.mtime_ns,
        ctime_ns=e.ctime_ns,
        inode=e.inode,
        device=e.device,
        nlink=e.nlink,
        size=e.size if e.kind == "file" else 0,
        target=e.link_target if e.kind == "symlink" else None,
        xattrs=list(e.xattrs),
    )
    if e.kind == "file" and e.nlink > 1:
        node.hardlink = f"{e.device}:{e.inode}"
    elif e.rdev:
        node.major, node.minor = os.major(e.rdev), os.minor(e.rdev)
    return node


def same_metadata(e: FsEntry, node: Node) -> bool:
    """Whether `node_from_entry` of the regular file ``e`` would give ``node``'s metadata
    (every field other than content and SHA-256), so that ``node`` can stand for it."""
    return (
        # FsEntry is a named tuple: fields 3-11 (mode, uid, gid, size, mtime_ns, ctime_ns,
        # inode, device, nlink) compared in one go; this runs once per unchanged file.
        e[3:12]
        == (
            node.mode,
            node.uid,
            node.gid,
            node.size,
            node.mtime_ns,
            node.ctime_ns,
            node.inode,
            node.device,
            node.nlink,
        )
        and e.kind == "file" == node.type
        and e.name == node.name
        and node.target is None
        and node.subtree is None
        and (list(e.xattrs) == node.xattrs if e.xattrs or node.xattrs else True)
        and (f"{e.device}:{e.inode}" if e.nlink > 1 else None) == node.hardlink
    )


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
