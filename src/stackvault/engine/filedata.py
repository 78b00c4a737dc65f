"""Reading what a snapshot holds (engine layer): a node by its path, and a file node's
plaintext as blobs or as a stream, always checked against the file's recorded SHA-256.

Kept apart from the restore and export pipelines so that what only reads (artifact readers,
``restore --stdout``, tar export) imports none of their machinery.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from stackvault.errors import IntegrityError, PathNotFound
from stackvault.readahead import read_ahead
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.repo.spans import read_span, runs_in_order
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
    `IntegrityError` once the last blob is read if the whole does not match.

    A file of several blobs is read ahead (`plaintexts`)."""
    sha = hashlib.sha256()
    for data in plaintexts(repo, node.content):
        sha.update(data)
        yield data
    if node.sha256 and sha.hexdigest() != node.sha256:
        raise IntegrityError(f"{node.name}: restored content does not match its SHA-256")


def plaintexts(repo: Repository, blob_ids: list[bytes]) -> Iterator[bytes | memoryview]:
    """The plaintext of ``blob_ids`` in order, each authenticated; several are read ahead
    of the one consumed, on a few threads (so that decryption and decompression use more
    than one core, `read_ahead`), and from a remote store in runs of nearby blobs, one
    request each (`runs_in_order`, at most `StoreAccess.stream_span` bytes; a blob a run
    cannot give is read on its own, which says what is wrong). A damaged blob raises when
    its turn comes."""
    if len(blob_ids) < 2:
        for blob_id in blob_ids:
            yield repo.load_blob(blob_id)
        return
    access = repo.access
    if access.stream_span is not None:
        runs = list(runs_in_order(blob_ids, repo.index.get, access.stream_span))
    else:
        runs = [[blob_id] for blob_id in blob_ids]
    ahead = access.stream_ahead
    pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="read-ahead")
    reads = read_ahead(pool, runs, partial(_read_run, repo), ahead)
    try:
        for opened in reads:
            for plain in opened:
                if isinstance(plain, IntegrityError):
                    raise plain
                yield plain
    finally:
        reads.close()
        pool.shutdown(wait=True)


def _read_run(repo: Repository, run: list[bytes]) -> list[bytes | memoryview | IntegrityError]:
    """The plaintexts of a run of blobs (one request when there are several), each or the
    error that stands in its place; the run ends at its first damaged blob."""
    entries = [repo.index.get(blob_id) for blob_id in run]
    data = read_span(repo.store, [e for e in entries if e is not None]) if len(run) > 1 else None
    out: list[bytes | memoryview | IntegrityError] = []
    for blob_id, entry in zip(run, entries, strict=True):
        try:
            if data is None or entry is None:
                out.append(repo.load_blob(blob_id))
            else:
                out.append(repo.span_blob(data, entry, blob_id))
        except IntegrityError as exc:
            out.append(exc)
            break
    return out


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
