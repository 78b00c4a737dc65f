"""Content-defined chunks of a stream through one reusable read buffer (chunking layer)."""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator

from stackvault.chunking.cdc import Chunker


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
    """

    def __init__(self, chunker: Chunker) -> None:
        self.chunker = chunker
        self._ahead = chunker.params.max
        # The stream chunker's capacity: each refill moves less than one maximum chunk to
        # the front and reads at least one.
        self._buffer = memoryview(mmap.mmap(-1, 2 * self._ahead, flags=mmap.MAP_PRIVATE))

    def chunks(self, stream: object) -> Iterator[memoryview]:
        """Yield the chunks of ``stream`` (read to EOF) as views into the buffer.

        Each view is valid only until the next one is requested: copy or consume it.
        """
        readinto = _readinto_of(stream)
        buf = self._buffer
        ahead = self._ahead
        start = end = 0
        eof = False
        while True:
            if not eof and end - start < ahead:
                if start:
                    # memoryview assignment uses memmove for overlapping ranges
                    buf[: end - start] = buf[start:end]
                    end -= start
                    start = 0
                while end < len(buf):
                    n = readinto(buf[end:])
                    if not n:
                        eof = True
                        break
                    end += n
            if start == end:
                return
            for chunk in self.chunker.buffer_chunks(buf[start:end]):
                start += len(chunk)
                yield chunk
                if not eof and end - start < ahead:
                    break  # refill before the next cut
