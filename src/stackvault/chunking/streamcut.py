"""Content-defined chunks of a stream through one reusable read buffer (chunking layer)."""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Protocol

from stackvault.chunking.cdc import Chunker

DIGEST_BEHIND_MIN = 1 << 20
"""Reads at least this large are hashed on the digest executor while the stream is cut."""


class Digest(Protocol):
    """What `StreamCutter.chunks` feeds the bytes it reads: a `hashlib` object."""

    def update(self, data: memoryview, /) -> None: ...


def _readinto_of(stream: object) -> Callable[[memoryview], int]:
    readinto = getattr(stream, "readinto", None)
    if callable(readinto):
        return readinto  # type: ignore[no-any-return]
    read = getattr(stream, "read", None)
    if not callable(read):
        raise TypeError("stream must be readable")

    def readinto_by_read(view: memoryview) -> int:
        data = read(len(view))
        view[: len(data)] = data
        return len(data)

    return readinto_by_read


class StreamCutter:
    """Cuts streams exactly where `Chunker.stream_chunks` would, reading them into one buffer
    that is reused for every stream. Not thread-safe: one per thread.

    Why not `Chunker.stream_chunks`: it allocates a fresh buffer of twice the maximum chunk
    size (8 MiB by default) for every stream. Buffers of that size freed and reallocated
    per file, between the chunk copies made from them, fragment malloc's per-thread arenas,
    whose free space stays resident. This buffer is an anonymous mapping made once, outside
    the arenas, whose pages are touched only as far as data was read into them.

    Same cut points: like the stream chunker, it refills whenever fewer than the maximum
    chunk size of bytes are buffered ahead of the next cut (until end of stream), and a cut
    looks at most that far ahead, so every cut sees the same bytes.

    Digest behind the cut: given a ``digest`` executor, each large read is hashed there
    (hashlib releases the GIL) while this thread cuts and hashes the chunks of the read
    before it; a whole-file SHA-256 is then off the critical path of a large file. The
    digest sees the bytes in stream order: at most one update is in flight, and it finishes
    before its bytes are moved or overwritten.
    """

    def __init__(self, chunker: Chunker, digest: Executor | None = None) -> None:
        self.chunker = chunker
        self._digest_pool = digest
        self._pending: Future[None] | None = None
        self._ahead = chunker.params.max
        # The stream chunker's capacity: each refill moves less than one maximum chunk to
        # the front and reads at least one.
        self._buffer = memoryview(mmap.mmap(-1, 2 * self._ahead, flags=mmap.MAP_PRIVATE))

    def chunks(self, stream: object, digest: Digest | None = None) -> Iterator[memoryview]:
        """Yield the chunks of ``stream`` (read to EOF) as views into the buffer, and feed
        every byte read to ``digest`` if given; it is complete once the iterator is
        exhausted. If the iteration stops early, the digest is incomplete.

        Each view is valid only until the next one is requested: copy or consume it.
        """
        self._settle()  # an earlier stream abandoned with its last update in flight
        readinto = _readinto_of(stream)
        buf = self._buffer
        ahead = self._ahead
        start = end = 0
        eof = False
        try:
            while True:
                if not eof and end - start < ahead:
                    self._settle()  # the digest is done with the bytes about to move
                    if start:
                        # memoryview assignment uses memmove for overlapping ranges
                        buf[: end - start] = buf[start:end]
                        end -= start
                        start = 0
                    read_from = end
                    while end < len(buf):
                        n = readinto(buf[end:])
                        if not n:
                            eof = True
                            break
                        end += n
                    if digest is not None and end > read_from:
                        self._feed(digest, buf[read_from:end])
                if start == end:
                    return
                for chunk in self.chunker.buffer_chunks(buf[start:end]):
                    start += len(chunk)
                    yield chunk
                    if not eof and end - start < ahead:
                        break  # refill before the next cut
        finally:
            self._settle()

    def _feed(self, digest: Digest, data: memoryview) -> None:
        if self._digest_pool is None or len(data) < DIGEST_BEHIND_MIN:
            digest.update(data)
        else:
            self._pending = self._digest_pool.submit(digest.update, data)

    def _settle(self) -> None:
        """Wait for the update in flight, if any (re-raising its failure)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()
