"""Reading what a snapshot holds (engine layer): a node by its path, and a file node's
plaintext as blobs or as a stream, always checked against the file's recorded SHA-256.

Kept apart from the restore and export pipelines so that what only reads (artifact readers,
``restore --stdout``, tar export) imports none of their machinery.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

from stackvault.errors import IntegrityError, PathNotFound
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.tree import Node

READ_BUFFER = 1 << 20
"""Buffer of the stream `open_file_node` returns."""


def find_node(repo: Repository, snapshot: Snapshot, path: str) -> Node:
    """The node at absolute ``path`` inside a snapshot (``/`` is the root directory)."""
    node = Node(name="", type="dir", subtree=snapshot.tree)
    for part in [p for p in path.split("/") if p]:
        if node.type != "dir" or node.subtree is None:
            raise PathNotFound(f"{path} is not in snapshot {snapshot.short_id}")
        match = next((n for n in repo.load_tree(node.subtree) if n.name == part), None)
        if match is None:
            raise PathNotFound(f"{path} is not in snapshot {snapshot.short_id}")
        node = match
    return node


def read_file_blobs(repo: Repository, node: Node) -> Iterator[bytes | memoryview]:
    """The plaintext of a file node, blob by blob, verified against the recorded SHA-256:
    `IntegrityError` once the last blob is read if the whole does not match."""
    sha = hashlib.sha256()
    for blob_id in node.content:
        data = repo.load_blob(blob_id)
        sha.update(data)
        yield data
    if node.sha256 and sha.hexdigest() != node.sha256:
        raise IntegrityError(f"{node.name}: restored content does not match its SHA-256")


class BlobReader(io.RawIOBase):
    """A raw, read-only file over a sequence of byte chunks (e.g. `read_file_blobs`)."""

    def __init__(self, chunks: Iterator[bytes | memoryview]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = memoryview(nxt)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def open_file_node(repo: Repository, node: Node) -> io.BufferedReader:
    """A buffered stream of a file node's plaintext (`read_file_blobs`)."""
    return io.BufferedReader(BlobReader(read_file_blobs(repo, node)), READ_BUFFER)
