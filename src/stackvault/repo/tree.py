"""Trees (repository layer): one directory's nodes, serialised as a tree blob (FORMAT.md §8)."""

from __future__ import annotations

import base64
import json
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

import orjson

from stackvault.errors import IntegrityError, UnsupportedFormat

NodeType = Literal["file", "dir", "symlink", "fifo", "chardev", "blockdev"]
_NODE_TYPES = frozenset(("file", "dir", "symlink", "fifo", "chardev", "blockdev"))
DEVICE_TYPES = frozenset(("chardev", "blockdev"))
P = TypeVar("P")


def valid_name(name: str) -> bool:
    """True if ``name`` is one safe path component (see FORMAT.md §8)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


@dataclass
class Node:
    """One entry of a directory as a snapshot stores it: a node of a tree blob (FORMAT.md
    §8). A backup makes it from an `FsEntry` (read from the filesystem), the artifact sink
    from a source's `EntryMeta`; every conversion between them is in
    `stackvault.engine.nodes`."""

    name: str
    type: NodeType
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    device: int = 0
    nlink: int = 1
    size: int = 0
    content: list[bytes] = field(default_factory=list)
    sha256: str = ""
    subtree: bytes | None = None
    target: str | None = None
    xattrs: list[tuple[str, bytes]] = field(default_factory=list)
    hardlink: str | None = None
    major: int = 0
    minor: int = 0
    """Device number of a ``chardev`` or ``blockdev`` node (0 for other types)."""

    def __reduce__(self) -> tuple[Callable[..., Node], tuple[Any, ...]]:
        """Pickled as its fields in order: a restore sends the nodes of its small files to
        its child processes, 3 us a node this way against 11 us by the instance dict."""
        return Node, _node_fields(self)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "inode": self.inode,
            "device": self.device,
            "nlink": self.nlink,
        }
        if self.type == "file":
            d["size"] = self.size
            d["content"] = [c.hex() for c in self.content]
            d["sha256"] = self.sha256
        elif self.type == "dir":
            d["subtree"] = self.subtree.hex() if self.subtree else None
        elif self.type == "symlink":
            d["target"] = self.target
        elif self.type in DEVICE_TYPES:
            d["major"] = self.major
            d["minor"] = self.minor
        if self.xattrs:
            d["xattrs"] = [[k, base64.b64encode(v).decode()] for k, v in self.xattrs]
        if self.hardlink:
            d["hardlink"] = self.hardlink
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Node:
        # Trees are authenticated and written only by stackvault, so fields are taken as they
        # are (no per-field conversions): decoding parent trees is on the hot path of every
        # incremental backup.
        kind = d["type"]
        if kind not in _NODE_TYPES:
            if type(kind) is not str:
                raise IntegrityError("tree node has a malformed type")
            raise UnsupportedFormat(
                f"the snapshot holds an entry of type {kind!r}, which this version of "
                "stackvault does not know (a newer version wrote it); upgrade stackvault"
            )
        subtree = d.get("subtree")
        content = d.get("content")
        xattrs = d.get("xattrs")
        mode, uid, gid, mtime = d["mode"], d["uid"], d["gid"], d["mtime_ns"]
        if not (type(mode) is int and type(uid) is int and type(gid) is int and type(mtime) is int):
            raise IntegrityError("tree node has malformed metadata")
        node = cls(
            d["name"],
            kind,
            mode,
            uid,
            gid,
            mtime,
            d.get("ctime_ns", 0),
            d.get("inode", 0),
            d.get("device", 0),
            d.get("nlink", 1),
            d.get("size", 0),
            [bytes.fromhex(c) for c in content] if content else [],
            d.get("sha256", ""),
            bytes.fromhex(subtree) if subtree else None,
            d.get("target"),
            [(k, base64.b64decode(v)) for k, v in xattrs] if xattrs else [],
            d.get("hardlink"),
        )
        if kind in DEVICE_TYPES:
            major, minor = d["major"], d["minor"]
            if not (type(major) is int and type(minor) is int and major >= 0 and minor >= 0):
                raise IntegrityError("tree node has a malformed device number")
            node.major, node.minor = major, minor
        return node


_node_fields = operator.attrgetter(*(f.name for f in fields(Node)))


def encode_tree(nodes: list[Node]) -> bytes:
    """Serialise a directory deterministically (nodes sorted by name)."""
    ordered = sorted(nodes, key=lambda n: n.name)
    return _dumps({"nodes": [n.to_json() for n in ordered]})


def _dumps(doc: dict[str, Any]) -> bytes:
    """The canonical JSON of a tree (FORMAT.md §8.1): compact, every character outside
    printable ASCII escaped, as ``json.dumps(doc, separators=(",", ":"), ensure_ascii=True)``
    writes it. orjson writes those same bytes about ten times faster whenever nothing in the
    document needs a ``\\uXXXX`` escape of a character of 0x7f or above (it writes those
    raw, and refuses lone surrogates, which stand for undecodable bytes in names); such a
    document is encoded by the standard library instead."""
    try:
        out = orjson.dumps(doc)
        if out.isascii() and b"\x7f" not in out:
            return out
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, or an integer past 64 bits
        pass
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode()


def _loads(data: bytes) -> Any:
    """Parse JSON; lone surrogate escapes (undecodable names), which orjson refuses, are
    parsed by the standard library. Raises `ValueError` if neither can parse it."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def decode_tree(data: bytes) -> list[Node]:
    """Parse a tree blob. Raises `IntegrityError` on malformed content."""
    try:
        doc = _loads(data)
        return [Node.from_json(n) for n in doc["nodes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError("tree blob is malformed") from exc


def walk_tree_nodes(
    load: Callable[[bytes], list[Node]],
    tree_id: bytes,
    top: P,
    place: Callable[[P, Node], P],
    on_error: Callable[[P, IntegrityError], None] | None = None,
    descend: Callable[[P, Node], bool] | None = None,
) -> Iterator[tuple[P, Node]]:
    """The one walk of a snapshot's trees: depth first, each directory before its contents,
    ``(where, node)`` for every node below tree ``tree_id``. ``where`` is the node's place as
    the caller counts it: ``place(where of its directory, node)``, with ``top`` for tree
    ``tree_id`` itself (`walk_trees`: a path string; a restore: path components and whether
    they are included). ``place`` may raise to stop the walk (an unsafe name). Trees come
    from ``load`` (`Repository.load_tree`), one at a time as the walk reaches them.
    Iterative: a snapshot may be deeper than Python's recursion limit.

    A directory whose tree cannot be loaded raises `IntegrityError`, unless ``on_error`` is
    given: then it is called with the directory's place and the error, and the walk goes on
    with the rest (the directory is yielded, its contents are not). Tree ``tree_id`` itself
    must load.

    A directory for which ``descend(where, node)`` is false is yielded, but its tree is not
    loaded and nothing below it is yielded (a restore of some paths skips the rest of the
    snapshot without decoding it).

    Walks that need each tree's result after its subtrees' (check, repair, copy: a tree is
    judged or stored after its children, once per tree id) or each distinct tree once in
    no order (prune's reachable blobs) keep stacks of their own; each says so."""
    stack: list[tuple[P, Iterator[Node]]] = [(top, iter(load(tree_id)))]
    while stack:
        base, nodes = stack[-1]
        node = next(nodes, None)
        if node is None:
            stack.pop()
            continue
        where = place(base, node)
        yield where, node
        if node.type == "dir" and node.subtree is not None:
            if descend is not None and not descend(where, node):
                continue
            try:
                below = load(node.subtree)
            except IntegrityError as exc:
                if on_error is None:
                    raise
                on_error(where, exc)
                continue
            stack.append((where, iter(below)))


def _child_path(base: str, node: Node) -> str:
    return f"{base}/{node.name}"


def walk_trees(
    load: Callable[[bytes], list[Node]],
    tree_id: bytes,
    prefix: str = "",
    on_error: Callable[[str, IntegrityError], None] | None = None,
) -> Iterator[tuple[str, Node]]:
    """`walk_tree_nodes` with paths: ``(path, node)`` for every node below tree ``tree_id``,
    each directory before its contents; paths are ``prefix`` + ``/name`` per level.

    A directory whose tree cannot be loaded raises `IntegrityError`, unless ``on_error`` is
    given: then it is called with the directory's path and the error, and the walk goes on
    with the rest (the directory is yielded, its contents are not)."""
    return walk_tree_nodes(load, tree_id, prefix, _child_path, on_error)


def rewrite_tree(data: bytes, mapping: Mapping[bytes, bytes]) -> bytes:
    """The tree blob ``data`` with the blob ids it references — every file's ``content`` and
    every directory's ``subtree`` — replaced through ``mapping`` (`copy` between repositories
    whose id keys differ). Every other field, including any this version does not know, keeps
    its value and its place, and the result is encoded like `encode_tree`.

    Raises `IntegrityError` if the tree is malformed or references an id ``mapping`` lacks.
    """
    try:
        doc = _loads(data)
        nodes = doc["nodes"]
        for node in nodes:
            content = node.get("content")
            if content:
                node["content"] = [_mapped(mapping, c).hex() for c in content]
            subtree = node.get("subtree")
            if subtree:
                node["subtree"] = _mapped(mapping, subtree).hex()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError("tree blob is malformed") from exc
    return _dumps(doc)


def _mapped(mapping: Mapping[bytes, bytes], hex_id: str) -> bytes:
    new = mapping.get(bytes.fromhex(hex_id))
    if new is None:
        raise IntegrityError(f"tree references blob {hex_id[:12]}, which was not translated")
    return new
