"""Browsing snapshots (engine layer): listing paths, comparing two snapshots."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stackvault.engine.filedata import find_node
from stackvault.errors import IntegrityError
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, walk_trees


def walk(
    repo: Repository,
    snapshot: Snapshot,
    path: str = "/",
    on_error: Callable[[str, IntegrityError], None] | None = None,
) -> Iterator[tuple[str, Node]]:
    """``(absolute path, node)`` for ``path`` and everything below it, depth first. A
    directory whose listing cannot be read raises `IntegrityError`, or with ``on_error`` is
    reported there and skipped (see `walk_trees`)."""
    node = find_node(repo, snapshot, path)
    base = "/" + "/".join(p for p in path.split("/") if p)
    if base != "/":
        yield base, node
    if node.type == "dir" and node.subtree is not None:
        yield from walk_trees(
            repo.load_tree, node.subtree, "" if base == "/" else base, on_error=on_error
        )


@dataclass(frozen=True)
class Change:
    """One difference: ``+`` added, ``-`` removed, ``M`` content changed, ``U`` metadata only,
    ``T`` type changed."""

    kind: str
    path: str


def _same_content(a: Node, b: Node) -> bool:
    if a.type == "file":
        return a.content == b.content
    if a.type == "symlink":
        return a.target == b.target
    return (a.major, a.minor) == (b.major, b.minor)


def _same_meta(a: Node, b: Node) -> bool:
    return (a.mode, a.uid, a.gid, a.mtime_ns, a.xattrs) == (
        b.mode,
        b.uid,
        b.gid,
        b.mtime_ns,
        b.xattrs,
    )


def diff(repo: Repository, old: Snapshot, new: Snapshot) -> Iterator[Change]:
    """Differences from ``old`` to ``new``, in path order; identical subtrees are skipped
    without loading. Iterative: snapshots may be deeper than Python's recursion limit. Two
    trees are compared side by side (a stack of comparisons of its own); a subtree only one
    side holds is listed with `walk_trees`."""

    def subtree_paths(tree: bytes | None, prefix: str) -> Iterator[str]:
        if tree is None:
            return
        for path, _n in walk_trees(repo.load_tree, tree, prefix):
            yield path

    def compare(
        a_tree: bytes | None, b_tree: bytes | None, prefix: str
    ) -> Iterator[Change | tuple[bytes | None, bytes | None, str]]:
        """The changes of one directory, and a ``(old tree, new tree, path)`` for each
        subdirectory in both, to be compared in its place."""
        if a_tree == b_tree:
            return
        a = {n.name: n for n in repo.load_tree(a_tree)} if a_tree else {}
        b = {n.name: n for n in repo.load_tree(b_tree)} if b_tree else {}
        for name in sorted(a.keys() | b.keys()):
            path = f"{prefix}/{name}"
            na, nb = a.get(name), b.get(name)
            if nb is None and na is not None:
                yield Change("-", path)
                if na.type == "dir":
                    yield from (Change("-", p) for p in subtree_paths(na.subtree, path))
            elif na is None and nb is not None:
                yield Change("+", path)
                if nb.type == "dir":
                    yield from (Change("+", p) for p in subtree_paths(nb.subtree, path))
            elif na is not None and nb is not None:
                if na.type != nb.type:
                    yield Change("T", path)
                    if na.type == "dir":
                        yield from (Change("-", p) for p in subtree_paths(na.subtree, path))
                    if nb.type == "dir":
                        yield from (Change("+", p) for p in subtree_paths(nb.subtree, path))
                elif not _same_content(na, nb):
                    yield Change("M", path)
                elif not _same_meta(na, nb):
                    yield Change("U", path)
                if na.type == "dir" and nb.type == "dir":
                    yield (na.subtree, nb.subtree, path)

    stack = [compare(old.tree, new.tree, "")]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, Change):
            yield item
        else:
            stack.append(compare(*item))
