"""How to use a given store (repository layer): how many threads read or write it and
in what shape reads go, decided once from the store's `Capabilities`.

Every choice that depends on whether a store is local or remote (`Capabilities.remote`)
or on how many requests it takes at once (`Capabilities.parallelism`) is made here;
the repository, the restore, copy, check and prune ask `StoreAccess` rather than the
capabilities. A request to a remote store (S3) costs more than the bytes it brings
(botocore's Python glue on this side, the server's work on the other), so from one the
pipelines read pack by pack and in spans of nearby blobs (`stackvault.repo.spans`); a
local store is read blob by blob.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from stackvault.store.base import Capabilities, Store

STREAM_AHEAD = 2
"""Blobs read ahead of the one consumed by a stream of one file's plaintext, from a local
store."""
STREAM_AHEAD_REMOTE = 4
STREAM_SPAN = 4 << 20
"""Runs of blobs read ahead from a remote store by a stream of one file's plaintext, and
their longest: the plaintext held is about ``STREAM_AHEAD_REMOTE * STREAM_SPAN`` times the
data's compression ratio."""


def span_readers(parallelism: int) -> int:
    """Threads reading spans from a store with ``parallelism`` connections: a quarter of them
    (4 of S3's default 16), 2 to 8. More threads hand the GIL around more often for each
    socket read (a restore of 1.06 GB from SeaweedFS on 127.0.0.1: 8 threads 2.9-3.7 s, 4
    threads 2.9 s, 2-3 threads 2.8-2.9 s; a copy from it: 4.8-5.0 s with 2, 4 or 8, peak RSS
    176, 205, 255 MB); a store far away needs a few requests in flight to fill its bandwidth.
    """
    return max(2, min(8, parallelism // 4))


@dataclass(frozen=True)
class StoreAccess:
    """How the repository and the engine's pipelines use one store (see the module
    docstring); made by `of` from the store's capabilities, the same numbers for the same
    store every time."""

    remote: bool
    """Requests cross a network (`Capabilities.remote`)."""
    restore_file_workers: int
    """File threads per lane of a restore: one from a local store (more threads creating
    files at once contend in the kernel: 1.06 GB, cold cache, 4 file threads 5.3-5.5 s with
    5.2-5.4 s system CPU, 1 thread 3.85 s with 2.2 s); from a remote store up to 8."""
    restore_file_processes: int
    """Child processes restoring small files beside the file threads, from a local store:
    one per core, where there are at least two (a process has an interpreter of its own,
    threads take turns at one; `stackvault.engine.forked`); none from a remote store,
    whose restore reads pack by pack."""
    walk_processes: int
    """Child processes a backup hands its directories to, from a local store: one per core,
    where there are at least two (`stackvault.engine.walkprocs`); none for a remote store,
    whose requests a forked child cannot share."""
    restore_blob_workers: int
    """Threads fetching and authenticating the blobs of a restore's large files: every core
    (at least 2), and from a remote store at least as many as its connections allow, up
    to 8."""
    restore_by_pack: bool
    """A restore reads its files' blobs pack by pack (`PackRestorer`) rather than file by
    file: from a remote store."""
    pack_readers: int
    """Threads reading spans of packs (`span_readers`): the pack-by-pack restore."""
    copy_in_spans: bool
    """A copy reads the blobs a directory needs a span of a pack per request: from a
    remote source."""
    copy_readers: int
    """Threads reading a copy's source: `span_readers` from a remote store, else one per
    connection, 2 to 8."""
    check_readers: int
    """Whole packs read at once by `check --read-data` (each held in memory): two keep both
    cores busy; a remote store needs up to 4 in flight to hide its latency."""
    stream_ahead: int
    """Reads kept ahead of the consumer of one file's plaintext (`STREAM_AHEAD`,
    `STREAM_AHEAD_REMOTE`)."""
    stream_span: int | None
    """From a remote store one file's blobs are streamed in runs of nearby blobs of at most
    this many bytes, one request each (`STREAM_SPAN`); None: blob by blob."""
    tree_packs: bool
    """Trees are read as whole tree packs fetched once per run (`TreePacks`): from a
    remote store."""
    keeps_reserve: bool
    """The store can fill up (a local file system, not S3), so the repository keeps a space
    reserve in it (`stackvault.repo.reserve`)."""
    metadata_readers: int
    """Threads reading index files and snapshots: one per connection, at most 8."""
    request_workers: int
    """Threads for many small requests (pack headers, retention lookups and updates): one
    per connection, at most 16."""
    upload_workers: int
    """Packs uploaded at once by a `BlobWriter`, each held in memory: one per connection,
    2 to 8 (64 MiB at the default pack size)."""

    @classmethod
    def of(cls, caps: Capabilities) -> StoreAccess:
        """The access for a store with capabilities ``caps``."""
        remote, par = caps.remote, caps.parallelism
        cores = os.cpu_count() or 1
        blob_workers = max(2, cores)
        if remote:
            blob_workers = max(blob_workers, min(8, par))
        return cls(
            remote=remote,
            restore_file_workers=min(8, par) if remote else 1,
            restore_file_processes=0 if remote or cores < 2 else min(8, cores),
            walk_processes=0 if remote or cores < 2 else min(8, cores),
            restore_blob_workers=blob_workers,
            restore_by_pack=remote,
            pack_readers=span_readers(par),
            copy_in_spans=remote,
            copy_readers=span_readers(par) if remote else max(2, min(8, par)),
            check_readers=max(1, min(4 if remote else 2, par)),
            stream_ahead=STREAM_AHEAD_REMOTE if remote else STREAM_AHEAD,
            stream_span=STREAM_SPAN if remote else None,
            tree_packs=remote,
            keeps_reserve=not remote,
            metadata_readers=max(1, min(8, par)),
            request_workers=max(1, min(16, par)),
            upload_workers=max(2, min(8, par)),
        )


def store_access(store: Store) -> StoreAccess:
    """`StoreAccess.of` the store's capabilities (for code given a store, not a
    `Repository`, whose ``access`` holds it)."""
    return StoreAccess.of(store.capabilities())
