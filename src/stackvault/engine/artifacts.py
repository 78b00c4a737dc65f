"""Artifacts in snapshots (engine layer): the sink sources capture into, and the reader
restores read from (FORMAT.md §8.2).

An artifact is a directory tree stored under ``/.stackvault/artifacts/<name>/`` of the
snapshot's root tree, so that every tool that walks trees (check, prune, copy, ls, find, diff,
restore --target) handles it without knowing about sources; the snapshot's ``artifacts`` list
holds its record (kind, redacted location, completeness, the source's metadata and facts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from stackvault.engine.filedata import find_node, open_file_node
from stackvault.engine.nodes import meta_of_node, node_from_meta
from stackvault.errors import IntegrityError, Interrupted, SourceError, StackvaultError
from stackvault.records.artifact import ArtifactRecord
from stackvault.repo.blob import BlobType
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node, encode_tree, valid_name, walk_trees
from stackvault.repo.writer import BlobWriter
from stackvault.sources.contract import (
    ArtifactEntry,
    ArtifactReader,
    ArtifactSink,
    EntryMeta,
    Readable,
    StoredFile,
)

RESERVED = ".stackvault"
"""The top-level name of the snapshot root that holds stackvault's own entries."""
ARTIFACTS_DIR = "artifacts"


def artifact_path(name: str) -> str:
    """The absolute path of an artifact's tree inside a snapshot."""
    return f"/{RESERVED}/{ARTIFACTS_DIR}/{name}"


def split_path(path: str) -> list[str]:
    """The components of a relative artifact path; `SourceError` for anything unsafe."""
    parts = path.split("/")
    if not path or path.startswith("/") or not all(valid_name(p) for p in parts):
        raise SourceError(f"invalid artifact entry path {path!r}")
    return parts


def entry_of(path: str, node: Node) -> ArtifactEntry:
    kind = node.type
    if kind != "file" and kind != "dir" and kind != "symlink":
        raise IntegrityError(f"artifact entry {path!r} is a {kind}, which no artifact holds")
    return ArtifactEntry(
        path=path,
        kind=kind,
        meta=meta_of_node(node),
        size=node.size if node.type == "file" else 0,
        sha256=node.sha256 if node.type == "file" else "",
        target=node.target or "" if node.type == "symlink" else "",
    )


@dataclass
class _Dir:
    meta: EntryMeta
    children: dict[str, Node | _Dir] = field(default_factory=dict)


StoreStream = Callable[[Readable], tuple[list[bytes], str, int]]


class TreeSink(ArtifactSink):
    """Builds an artifact's tree while a source captures: file contents go through
    ``store_stream`` (the backup pipeline's chunk → dedup → pack path); `finish` saves the
    trees, bottom up, and returns the artifact's directory node."""

    def __init__(
        self,
        repo: Repository,
        writer: BlobWriter,
        name: str,
        store_stream: StoreStream,
        *,
        previous_tree: bytes | None,
        notice: Callable[[str], None],
        stopping: Callable[[], bool],
        root_meta: EntryMeta | None = None,
    ) -> None:
        self.repo = repo
        self.writer = writer
        self.name = name
        self._store_stream = store_stream
        self._previous_tree = previous_tree
        self._previous: dict[str, Node] = {}
        self._trees: dict[bytes, list[Node]] = {}
        self._notice = notice
        self._stopping = stopping
        self.root = _Dir(root_meta or EntryMeta(mode=0o700))
        self.files = 0
        self.bytes = 0
        self.reused = 0

    # --- building ---------------------------------------------------------------------------

    def _parent(self, parts: list[str]) -> _Dir:
        node = self.root
        for part in parts[:-1]:
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Dir(EntryMeta(mode=0o700))
            if not isinstance(child, _Dir):
                raise SourceError(f"artifact entry {'/'.join(parts)!r} lies below a file")
            node = child
        return node

    def _place(self, path: str, node: Node) -> None:
        parts = split_path(path)
        parent = self._parent(parts)
        if parts[-1] in parent.children:
            raise SourceError(f"artifact entry {path!r} was added twice")
        node.name = parts[-1]
        parent.children[parts[-1]] = node

    def _file_node(self, meta: EntryMeta | None) -> Node:
        return node_from_meta("", "file", meta or EntryMeta())

    def add_file(self, path: str, stream: Readable, meta: EntryMeta | None = None) -> StoredFile:
        split_path(path)
        self.check_interrupted()
        node = self._file_node(meta)
        node.content, node.sha256, node.size = self._store_stream(stream)
        self._place(path, node)
        self.files += 1
        self.bytes += node.size
        return StoredFile(path, node.size, node.sha256)

    def add_dir(self, path: str, meta: EntryMeta | None = None) -> None:
        parts = split_path(path)
        parent = self._parent(parts)
        existing = parent.children.get(parts[-1])
        m = meta or EntryMeta(mode=0o700)
        if existing is None:
            parent.children[parts[-1]] = _Dir(m)
        elif isinstance(existing, _Dir):
            existing.meta = m  # made implicitly as a parent before: now its own metadata
        else:
            raise SourceError(f"artifact entry {path!r} was added twice")

    def add_symlink(self, path: str, target: str, meta: EntryMeta | None = None) -> None:
        node = node_from_meta("", "symlink", meta or EntryMeta(mode=0o777), target=target)
        self._place(path, node)

    def add_hardlink(self, path: str, existing: str, meta: EntryMeta | None = None) -> None:
        parts = split_path(existing)
        first = self._parent(parts).children.get(parts[-1])
        if not isinstance(first, Node) or first.type != "file":
            raise SourceError(f"hard link {path!r} points at {existing!r}, not a stored file")
        if not first.hardlink:
            first.hardlink = f"artifact:{existing}"
        node = self._file_node(meta or meta_of_node(first))
        node.content, node.sha256, node.size = list(first.content), first.sha256, first.size
        node.hardlink = first.hardlink
        self._place(path, node)
        self.files += 1
        self.bytes += node.size

    def previous(self, path: str) -> ArtifactEntry | None:
        if self._previous_tree is None:
            return None
        try:
            parts = split_path(path)
        except SourceError:
            return None
        tree: bytes | None = self._previous_tree
        node: Node | None = None
        for i, part in enumerate(parts):
            if tree is None:
                return None
            nodes = self._trees.get(tree)
            if nodes is None:
                try:
                    nodes = self._trees[tree] = self.repo.load_tree(tree)
                except StackvaultError:
                    return None
            node = next((n for n in nodes if n.name == part), None)
            if node is None:
                return None
            tree = node.subtree if i < len(parts) - 1 else None
        if node is None or node.type != "file":
            return None
        if not all(c in self.repo.index for c in node.content):
            return None
        self._previous[path] = node
        return entry_of(path, node)

    def reuse(
        self, path: str, previous: ArtifactEntry, meta: EntryMeta | None = None
    ) -> StoredFile:
        old = self._previous.get(previous.path)
        if old is None:
            raise SourceError(f"{previous.path!r} was not found in the parent artifact")
        node = self._file_node(meta or previous.meta)
        node.content, node.sha256, node.size = list(old.content), old.sha256, old.size
        self._place(path, node)
        self.files += 1
        self.bytes += node.size
        self.reused += 1
        return StoredFile(path, node.size, node.sha256)

    def notice(self, message: str) -> None:
        self._notice(message)

    def check_interrupted(self) -> None:
        if self._stopping():
            raise Interrupted("backup interrupted")

    # --- saving -----------------------------------------------------------------------------

    def finish(self) -> Node:
        """Save every tree, each after the trees below it and siblings in name order (with a
        stack of its own: an artifact may be deeper than Python's recursion limit); return
        the artifact's directory node (named after it)."""
        saved: dict[int, Node] = {}
        stack: list[tuple[_Dir, str, bool]] = [(self.root, self.name, False)]
        while stack:
            d, name, children_saved = stack.pop()
            if not children_saved:
                stack.append((d, name, True))
                for child_name in sorted(d.children, reverse=True):  # popped in name order
                    child = d.children[child_name]
                    if isinstance(child, _Dir):
                        stack.append((child, child_name, False))
                continue
            nodes = [
                saved.pop(id(child)) if isinstance(child, _Dir) else child
                for child in (d.children[n] for n in sorted(d.children))
            ]
            tree_id, _added = self.writer.save(BlobType.TREE, encode_tree(nodes))
            saved[id(d)] = node_from_meta(name, "dir", d.meta, subtree=tree_id)
        return saved[id(self.root)]


def find_artifact(snapshot: Snapshot, name: str) -> ArtifactRecord:
    """The record of artifact ``name`` in ``snapshot``; `SourceError` listing the names it
    has otherwise."""
    for record in snapshot.artifacts:
        if record.name == name:
            return record
    names = ", ".join(r.name for r in snapshot.artifacts) or "none"
    raise SourceError(
        f"snapshot {snapshot.short_id} has no artifact {name!r} (it has: {names})",
        hint="list them with `stackvault snapshots --json`",
    )


class RepoArtifactReader(ArtifactReader):
    """An artifact of a snapshot, read from the repository."""

    def __init__(self, repo: Repository, snapshot: Snapshot, record: ArtifactRecord) -> None:
        self.repo = repo
        self.snapshot = snapshot
        self.record = record
        self.name = record.name
        self.kind = record.kind
        self.metadata = dict(record.metadata or {})
        if not record.complete:
            raise SourceError(
                f"artifact {self.name!r} of snapshot {snapshot.short_id} is incomplete "
                f"({record.error or 'its capture failed'}); there is nothing to restore",
                hint="pick an earlier snapshot where it is complete",
            )
        self.node = find_node(repo, snapshot, artifact_path(self.name))
        if self.node.type != "dir" or self.node.subtree is None:
            raise IntegrityError(
                f"artifact {self.name!r} of snapshot {snapshot.short_id} has no tree"
            )
        self._nodes: dict[str, Node] | None = None

    def _index(self) -> dict[str, Node]:
        if self._nodes is None:
            assert self.node.subtree is not None
            self._nodes = {}
            for path, node in walk_trees(self.repo.load_tree, self.node.subtree):
                rel = path.lstrip("/")
                split_path(rel)  # a tampered tree must not smuggle unsafe paths out
                self._nodes[rel] = node
        return self._nodes

    def entries(self) -> Iterator[ArtifactEntry]:
        for path, node in self._index().items():
            yield entry_of(path, node)

    def entry(self, path: str) -> ArtifactEntry:
        node = self._index().get(path)
        if node is None:
            return super().entry(path)
        return entry_of(path, node)

    def open(self, path: str) -> Readable:
        node = self._index().get(path)
        if node is None or node.type != "file":
            raise SourceError(
                f"artifact {self.name!r} of snapshot {self.snapshot.short_id} has no file {path!r}"
            )
        return open_file_node(self.repo, node)
