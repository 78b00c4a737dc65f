"""The blob writer (repository layer): dedup, packing, parallel uploads and index commits.

Commit order (FORMAT.md §10): a pack is put in the store before any index file names it, and
index files are written before the caller writes a snapshot (`flush` returns only when both are
durable). A crash leaves at most packs no index names.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from stackvault.crypto.envelope import OVERHEAD, Envelope
from stackvault.errors import StackvaultError
from stackvault.repo.access import StoreAccess
from stackvault.repo.blob import BlobCodec, BlobType, blob_aad
from stackvault.repo.config import RepoConfig
from stackvault.repo.index import Index, encode_index
from stackvault.repo.pack import PackBuilder, PackedBlob, pack_name, storage_id
from stackvault.store.base import Store

SealedBlob = tuple[BlobType, bytes, bytes, int]
"""A blob compressed and sealed elsewhere (a backup's child process): type, id, sealed
bytes, plaintext length."""

INDEX_EVERY_PACKS = 8
INDEX_EVERY_S = 20.0
"""An index file is written once this many packs are stored that no index file names yet, or
when the oldest of them has waited this long: a crash (kill -9, power loss) then costs the
next backup at most about that much data to store again (FORMAT.md §10)."""
ASYNC_MIN = 64 * 1024
"""Blobs at least this large are compressed and sealed on the writer's worker pool one by one;
smaller ones in batches (a hand-off per blob would cost more than the work)."""
BATCH_BLOBS = 64
BATCH_BYTES = 256 * 1024
"""A batch of small blobs goes to the pool once it holds this many blobs or bytes."""
BATCHES_IN_FLIGHT = 4
"""Batches queued or being sealed at most; a caller with another full batch waits."""


class _PackBuffers:
    """A fixed set of reusable pack buffers: ``take`` waits until one is free.

    Each is a private anonymous mapping, outside malloc's arenas, whose pages are allocated
    only once written to; a buffer that held a pack is reused for a later one, so the run
    keeps at most ``count`` packs' worth of pages resident however many packs it writes.
    """

    def __init__(self, count: int, capacity: int, keep: int) -> None:
        self._capacity = capacity
        # Pages past ``keep`` (the pack size) hold only the part of a pack's last blob that
        # overshoots it: returned to the kernel when a pack used them, so an idle buffer
        # keeps about one pack size resident, not the largest overshoot seen so far.
        self._keep = -(-keep // mmap.PAGESIZE) * mmap.PAGESIZE
        self._free: list[memoryview] = []
        self._left = count  # not created yet
        self._cond = threading.Condition()

    def take(self) -> memoryview:
        with self._cond:
            while not self._free and not self._left:
                self._cond.wait()
            if self._free:
                return self._free.pop()
            self._left -= 1
        return memoryview(mmap.mmap(-1, self._capacity, flags=mmap.MAP_PRIVATE))

    def give(self, buffer: memoryview, used: int = 0) -> None:
        """Return a buffer once nothing refers to its contents; ``used``: bytes written."""
        if used > self._keep and hasattr(mmap, "MADV_DONTNEED"):
            mapping = buffer.obj
            assert isinstance(mapping, mmap.mmap)
            mapping.madvise(mmap.MADV_DONTNEED, self._keep, self._capacity - self._keep)
        with self._cond:
            self._free.append(buffer)
            self._cond.notify()


@dataclass
class WriterStats:
    """What a writer added to the repository."""

    blobs_added: int = 0
    raw_added: int = 0
    stored_added: int = 0
    packs_written: int = 0
    index_files_written: int = 0


class PackTarget(Protocol):
    """What a `BlobWriter` needs of the repository it writes to (`Repository` is one): the
    store packs and index files go to, the config (pack and chunk sizes), the in-memory index
    it adds new packs to, the envelope it seals with, a codec per thread, blob ids, and how
    many uploads the store takes (`StoreAccess`)."""

    @property
    def store(self) -> Store: ...
    @property
    def config(self) -> RepoConfig: ...
    @property
    def index(self) -> Index: ...
    @property
    def envelope(self) -> Envelope: ...
    @property
    def access(self) -> StoreAccess: ...
    def codec(self) -> BlobCodec: ...
    def blob_id(self, data: bytes | bytearray | memoryview) -> bytes: ...


class BlobSaver(Protocol):
    """What stores blobs for a pipeline: a `BlobWriter`, or a backup child's sink."""

    def save(
        self,
        blob_type: BlobType,
        data: bytes | bytearray | memoryview,
        blob_id: bytes | None = None,
    ) -> tuple[bytes, bool]:
        """Store ``data`` unless present; return ``(blob_id, added)``."""
        ...


class BlobWriter:
    """Adds blobs to a repository. Thread-safe: several workers may call `save` concurrently."""

    def __init__(
        self,
        repo: PackTarget,
        *,
        upload_workers: int | None = None,
        seal_workers: int | None = None,
        on_pack: Callable[[int], None] | None = None,
    ) -> None:
        self._repo = repo
        # Each upload holds one pack in memory (`StoreAccess.upload_workers`).
        workers = upload_workers or repo.access.upload_workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pack-upload")
        # Packs in memory waiting for upload: bounded so a slow store throttles readers.
        self._slots = threading.BoundedSemaphore(workers)
        # Data packs are built in reused buffers (see `PackBuilder`): one being filled while
        # ``workers`` are uploaded. Taking a buffer waits for an upload to finish, which is
        # the back-pressure that stops sealers (and through them the readers) when uploads
        # lag. Room for a pack plus the largest chunk, sealed: a pack is closed once it
        # reaches the pack size, so it overshoots by less than one blob.
        config = repo.config
        self._buffers = _PackBuffers(
            workers + 1, config.pack_size + config.chunker.max + 1 + OVERHEAD, config.pack_size
        )
        sealers = seal_workers or max(1, os.cpu_count() or 1)
        self._seal_pool = ThreadPoolExecutor(max_workers=sealers, thread_name_prefix="seal")
        self._seal_slots = threading.BoundedSemaphore(sealers * 2)
        # Small blobs wait here, already reserved, until a batch is full (or `flush`). They
        # have their own bound so that a caller storing small files is not held up behind
        # large chunks waiting for seal slots.
        self._batch: list[tuple[BlobType, bytes, bytes]] = []
        self._batch_bytes = 0
        self._batch_slots = threading.BoundedSemaphore(BATCHES_IN_FLIGHT)
        self._pending = 0
        self._idle = threading.Condition()
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._reserved: set[bytes] = set()
        self._builders: dict[BlobType, PackBuilder] = {}
        self._unsaved: list[tuple[bytes, list[PackedBlob]]] = []
        self._unsaved_since = 0.0
        """When the oldest of `_unsaved` was stored (monotonic), 0 when there is none."""
        self._futures: list[Future[None]] = []
        self._error: BaseException | None = None
        self._on_pack = on_pack
        self.stats = WriterStats()

    def reserve(self, blob_id: bytes) -> bool:
        """True if the caller must store this blob; False if it is stored or being stored."""
        with self._lock:
            if blob_id in self._reserved or blob_id in self._repo.index:
                return False
            self._reserved.add(blob_id)
            return True

    def store_sealed(self, blobs: list[SealedBlob]) -> None:
        """`reserve` and `add_sealed` each of ``blobs`` not stored or being stored yet: the
        reservations are made under one lock."""
        index = self._repo.index
        reserved = self._reserved
        fresh: list[SealedBlob] = []
        with self._lock:
            for blob in blobs:
                blob_id = blob[1]
                if blob_id not in reserved and blob_id not in index:
                    reserved.add(blob_id)
                    fresh.append(blob)
        for blob_type, blob_id, sealed, raw_len in fresh:
            self.add_sealed(blob_type, blob_id, sealed, raw_len)

    def save(
        self,
        blob_type: BlobType,
        data: bytes | bytearray | memoryview,
        blob_id: bytes | None = None,
    ) -> tuple[bytes, bool]:
        """Store ``data`` unless present; return ``(blob_id, added)``."""
        if blob_id is None:
            blob_id = self._repo.blob_id(data)
        if not self.reserve(blob_id):
            return blob_id, False
        if len(data) < ASYNC_MIN:
            self._queue_small(blob_type, blob_id, data)
            return blob_id, True
        self._raise_pending()
        # Wait for a seal slot before copying: a reader held up here holds no copy.
        self._seal_slots.acquire()
        with self._idle:
            self._pending += 1
        try:
            # The caller's buffer (a chunker view) is reused for the next chunk: copy it.
            # The copy goes in a box the sealer empties, so it is freed once sealed rather
            # than when the task ends (a pool keeps a task's arguments until then, and a
            # sealer may wait for a pack buffer after sealing).
            box = [bytes(data)]
            self._seal_pool.submit(self._seal_async, blob_type, blob_id, box)
        except BaseException:
            self._task_done(self._seal_slots)
            raise
        return blob_id, True

    def _queue_small(
        self, blob_type: BlobType, blob_id: bytes, data: bytes | bytearray | memoryview
    ) -> None:
        # A chunker view is reused for the next chunk: keep a copy (``bytes`` are immutable).
        item = (blob_type, blob_id, data if isinstance(data, bytes) else bytes(data))
        with self._lock:
            self._batch.append(item)
            self._batch_bytes += len(item[2])
            if len(self._batch) < BATCH_BLOBS and self._batch_bytes < BATCH_BYTES:
                return
            batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._submit_batch(batch)

    def _submit_batch(self, batch: list[tuple[BlobType, bytes, bytes]]) -> None:
        self._raise_pending()
        self._batch_slots.acquire()
        with self._idle:
            self._pending += 1
        try:
            self._seal_pool.submit(self._seal_batch, [batch])
        except BaseException:
            self._task_done(self._batch_slots)
            raise

    def _seal_batch(self, box: list[list[tuple[BlobType, bytes, bytes]]]) -> None:
        try:
            batch = box.pop()
            # One call compresses the whole batch: the GIL is released once, not per blob.
            encoded = self._repo.codec().encode_many([data for _t, _i, data in batch])
            sealed = self._repo.envelope.seal_many(
                encoded, [blob_aad(blob_type, blob_id) for blob_type, blob_id, _d in batch]
            )
            for (blob_type, blob_id, data), one in zip(batch, sealed, strict=True):
                if self._error is not None:
                    return
                self.add_sealed(blob_type, blob_id, one, len(data))
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._task_done(self._batch_slots)

    def _seal_only(
        self, blob_type: BlobType, blob_id: bytes, data: bytes | bytearray | memoryview
    ) -> bytes:
        return self._repo.envelope.seal(
            self._repo.codec().encode(data), blob_aad(blob_type, blob_id)
        )

    def _seal_async(self, blob_type: BlobType, blob_id: bytes, box: list[bytes]) -> None:
        try:
            data = box.pop()
            raw_len = len(data)
            sealed = self._seal_only(blob_type, blob_id, data)
            del data
            self.add_sealed(blob_type, blob_id, sealed, raw_len)
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._task_done(self._seal_slots)

    def _task_done(self, slots: threading.BoundedSemaphore) -> None:
        """A sealing task (one blob, or a batch) ended: free its slot; wake `flush`."""
        slots.release()
        with self._idle:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()

    def _fail(self, exc: BaseException) -> None:
        """Record the first failure of a pool task; `_raise_pending` raises it."""
        with self._lock:
            if self._error is None:
                self._error = exc

    def _wait_sealed(self) -> None:
        with self._idle:
            while self._pending:
                self._idle.wait()

    def add_sealed(
        self, blob_type: BlobType, blob_id: bytes, sealed: bytes | memoryview, raw_len: int
    ) -> None:
        """Append an already sealed, reserved blob to the open pack of its type.

        May wait (for a data pack: until an upload frees a buffer; for a full pack: until an
        upload slot is free): that is the writer's back-pressure.
        """
        self._raise_pending()
        full: PackBuilder | None = None
        buffer: memoryview | None = None
        while True:
            with self._lock:
                builder = self._builders.get(blob_type)
                if builder is None and (buffer is not None or blob_type != BlobType.DATA):
                    builder = self._builders[blob_type] = PackBuilder(blob_type, buffer)
                    buffer = None
                if builder is not None:
                    builder.add(blob_id, sealed, raw_len)
                    self.stats.blobs_added += 1
                    self.stats.raw_added += raw_len
                    self.stats.stored_added += len(sealed)
                    if builder.size >= self._repo.config.pack_size:
                        full = self._builders.pop(blob_type)
                    break
            # No open data pack: wait for a buffer outside the lock, then open one (unless
            # another thread did meanwhile: then the buffer goes back).
            buffer = self._buffers.take()
            if self._error is not None:
                self._buffers.give(buffer)
                self._raise_pending()
        if buffer is not None:
            self._buffers.give(buffer)
        if full is not None:
            self._submit(full)

    def _submit(self, builder: PackBuilder) -> None:
        # Back-pressure: at most ``workers`` uploads; data packs are also bounded by their
        # buffers (``workers + 1`` in all, the open one included).
        self._slots.acquire()
        try:
            fut = self._pool.submit(self._upload, builder)
        except BaseException:
            self._slots.release()
            if builder.buffer is not None:  # never to be uploaded: a waiting sealer may need it
                self._buffers.give(builder.buffer)
                builder.buffer = None
            raise
        with self._lock:
            self._futures.append(fut)

    def _upload(self, builder: PackBuilder) -> None:
        try:
            if self._error is not None:
                return
            pack_id, parts = builder.finish(self._repo.envelope)
            size = sum(len(p) for p in parts)
            self._repo.store.put_parts(pack_name(pack_id), parts)
            del parts
            entries = builder.entries
            self._repo.index.add_pack(pack_id, entries)
            with self._lock:
                self._unsaved.append((pack_id, entries))
                self._reserved.difference_update(e.blob_id for e in entries)
                self.stats.packs_written += 1
                if not self._unsaved_since:
                    self._unsaved_since = time.monotonic()
                write_index = (
                    len(self._unsaved) >= INDEX_EVERY_PACKS
                    or time.monotonic() - self._unsaved_since >= INDEX_EVERY_S
                )
            if self._on_pack:
                self._on_pack(size)
            if write_index:
                self._write_index()
        except BaseException as exc:
            self._fail(exc)
        finally:
            if builder.buffer is not None:
                # Stored (or failed): nothing refers to the buffer's bytes any more.
                self._buffers.give(builder.buffer, builder.buffered)
                builder.buffer = None
            self._slots.release()

    def _write_index(self) -> None:
        with self._index_lock:
            with self._lock:
                packs, self._unsaved = self._unsaved, []
                self._unsaved_since = 0.0
            if not packs:
                return
            data = encode_index(self._repo.envelope, packs)
            try:
                self._repo.store.put(f"index/{storage_id(data).hex()}", data)
            except BaseException:
                with self._lock:
                    self._unsaved = packs + self._unsaved
                raise
            self.stats.index_files_written += 1

    def _raise_pending(self) -> None:
        if self._error is not None:
            err = self._error
            if isinstance(err, StackvaultError):
                raise err
            raise StackvaultError(f"storing data failed: {err}") from err

    def _wait(self) -> None:
        with self._lock:
            futures, self._futures = self._futures, []
        for fut in futures:
            fut.result()

    def flush(self) -> None:
        """Write open packs and an index naming every stored pack; durable on return."""
        with self._lock:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
        if batch:
            self._submit_batch(batch)
        self._wait_sealed()
        self._raise_pending()
        with self._lock:
            builders = [b for b in self._builders.values() if b.entries]
            self._builders = {}
        for builder in builders:
            self._submit(builder)
        self._wait()
        self._raise_pending()
        self._write_index()

    def close(self, *, commit: bool = True) -> None:
        """Flush (if ``commit``) and stop the upload threads.

        With ``commit=False`` (failure or interruption) open packs are dropped, uploads
        under way finish, and packs already stored are still indexed so a later backup can
        reuse them; errors while doing so are swallowed — the caller is already failing.
        """
        try:
            if commit:
                self.flush()
            else:
                with self._lock:
                    self._batch, self._batch_bytes = [], 0
                self._wait_sealed()
                with self._lock:
                    self._builders = {}
                try:
                    self._wait()
                    self._write_index()
                except Exception:
                    pass
        finally:
            self._seal_pool.shutdown(wait=True, cancel_futures=True)
            self._pool.shutdown(wait=True, cancel_futures=True)
