"""Several blobs of a pack read with one request (repository layer).

A request to a remote store costs more than the bytes it brings (botocore's Python glue on
this side, the server's work on the other), so the engine's readers of many blobs from S3
(the pack-by-pack restore, copy) group the blobs they need by pack and read each group of
nearby blobs as one span. A span that cannot be read is no verdict: each blob is then read
on its own (`Repository.span_blob`), which says what is wrong with it. Whether to read in
spans, and on how many threads, is `stackvault.repo.access`'s decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from stackvault.errors import IntegrityError, ObjectNotFound, StackvaultError
from stackvault.repo.blob import IndexEntry
from stackvault.repo.pack import pack_name
from stackvault.store.base import Store

SPAN_GAP = 1 << 20
"""Needed blobs of a pack less than this apart are read with one request (the bytes between
them are read and dropped): a request costs more than a MiB of transfer."""
SPAN_MAX = 16 << 20
"""Longest span: a whole pack of the default 8 MiB in one request. Spans of at most 8 MiB
read the same packs in ~1.8 requests each (the last blob and the header lie past 8 MiB); a
restore of the benchmark's 1.06 GB from SeaweedFS cost its server 1.19-1.47 CPU-s a round with
this limit against 1.34-1.78 with 8 MiB, in three alternated rounds."""

T = TypeVar("T")


def by_pack(items: Iterable[T], entry: Callable[[T], IndexEntry]) -> dict[bytes, list[T]]:
    """``items`` grouped by the pack their blob (``entry(item)``) is in, first seen first."""
    packs: dict[bytes, list[T]] = {}
    for item in items:
        packs.setdefault(entry(item).pack_id, []).append(item)
    return packs


def cut_spans(
    items: list[T],
    entry: Callable[[T], IndexEntry],
    gap: int | None = None,
    limit: int | None = None,
) -> Iterator[list[T]]:
    """The spans of ``items`` (blobs of one pack; several items may name the same blob): in
    offset order, a new span where the gap exceeds ``gap`` (`SPAN_GAP`) or the span would
    exceed ``limit`` (`SPAN_MAX`). Items of the same blob stay next to each other."""
    gap = SPAN_GAP if gap is None else gap
    limit = SPAN_MAX if limit is None else limit
    span: list[T] = []
    start = end = 0
    for item in sorted(items, key=lambda i: entry(i).offset):
        e = entry(item)
        if span and (e.offset - end > gap or e.offset + e.length - start > limit):
            yield span
            span = []
        if span:
            end = max(end, e.offset + e.length)
        else:
            start, end = e.offset, e.offset + e.length
        span.append(item)
    if span:
        yield span


def runs_in_order(
    items: Iterable[T], entry: Callable[[T], IndexEntry | None], limit: int = SPAN_MAX
) -> Iterator[list[T]]:
    """``items`` (blobs in the order they are wanted, e.g. a file's) cut into runs that one
    request each can read, keeping their order: a run goes on while the next blob lies in
    the same pack, inside the run or less than `SPAN_GAP` after it, and the run stays within
    ``limit`` bytes. An item without an index entry is a run of its own."""
    run: list[T] = []
    pack = b""
    start = end = 0
    for item in items:
        e = entry(item)
        if e is None:
            if run:
                yield run
            yield [item]
            run = []
            continue
        if run and not (
            e.pack_id == pack
            and start <= e.offset <= end + SPAN_GAP
            and max(end, e.offset + e.length) - start <= limit
        ):
            yield run
            run = []
        if run:
            end = max(end, e.offset + e.length)
        else:
            pack, start, end = e.pack_id, e.offset, e.offset + e.length
        run.append(item)
    if run:
        yield run


class SpanData:
    """The bytes of one span as read, or why there are none."""

    __slots__ = ("data", "missing", "start")

    def __init__(self, data: memoryview | None, start: int, missing: bool) -> None:
        self.data = data
        self.start = start
        self.missing = missing
        """The pack does not exist: every blob in it is missing, no need to ask again."""

    def sealed(self, entry: IndexEntry) -> memoryview | None:
        """The stored bytes of the blob at ``entry``, or None if the span does not hold them
        (not read, or shorter than the index says: the pack is truncated)."""
        if self.data is None:
            return None
        at = entry.offset - self.start
        if at < 0 or at + entry.length > len(self.data):
            return None
        return self.data[at : at + entry.length]


def read_span(store: Store, entries: list[IndexEntry]) -> SpanData:
    """Read the span holding ``entries`` (blobs of one pack) with one request."""
    start = min(e.offset for e in entries)
    end = max(e.offset + e.length for e in entries)
    try:
        return SpanData(
            memoryview(store.get(pack_name(entries[0].pack_id), start, end - start)),
            start,
            missing=False,
        )
    except ObjectNotFound:
        return SpanData(None, start, missing=True)
    except StackvaultError:
        return SpanData(None, start, missing=False)


def missing_blob(entry: IndexEntry, blob_id: bytes) -> IntegrityError:
    """The error for a blob whose pack does not exist."""
    return IntegrityError(
        f"pack {entry.pack_id.hex()[:12]} holding blob {blob_id.hex()[:12]} is missing"
    )
