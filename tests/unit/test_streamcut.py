"""`StreamCutter` cuts every stream exactly where `Chunker.stream_chunks` does - the blob ids
of a file, and so deduplication against older backups, must not depend on which reader cut
it - while reading through one buffer reused for every stream."""

from __future__ import annotations

import hashlib
import io
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from stackvault.chunking.cdc import Chunker, ChunkerParams
from stackvault.chunking.streamcut import DIGEST_BEHIND_MIN, StreamCutter

SMALL = ChunkerParams(min=256, avg=1024, max=4096)


class ShortReads(io.RawIOBase):
    """Returns at most ``step`` bytes per read, like a pipe or a socket."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self._step, len(self._data) - self._pos)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


class ReadOnly:
    """A stream with ``read`` but no ``readinto``."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


def cuts(chunks: object) -> list[bytes]:
    return [bytes(c) for c in chunks]  # type: ignore[attr-defined]


@pytest.mark.parametrize("params", [SMALL, ChunkerParams(min=64, avg=256, max=1024)])
def test_same_cuts_as_the_stream_chunker_at_every_edge(params: ChunkerParams) -> None:
    rng = random.Random(7)
    cutter = StreamCutter(Chunker(params, 99))  # one cutter for every stream, as in a backup
    reference = Chunker(params, 99)
    m = params.max
    sizes = [0, 1, params.min - 1, params.min, params.min + 1, m - 1, m, m + 1, 2 * m - 1]
    sizes += [2 * m, 2 * m + 1, 3 * m + 17, 50 * m + 5]
    for size in sizes:
        # Text with repeats (content-defined cuts) and random bytes (cuts at max) alike.
        data = rng.randbytes(size) if size % 2 else (b"row %d;" * size)[:size]
        want = cuts(reference.stream_chunks(io.BytesIO(data)))
        assert b"".join(want) == data
        assert cuts(cutter.chunks(io.BytesIO(data))) == want, size
        assert cuts(cutter.chunks(ShortReads(data, 1000))) == want, size
        assert cuts(cutter.chunks(ReadOnly(data))) == want, size


def test_default_parameters_on_a_larger_stream() -> None:
    data = random.Random(3).randbytes(3 << 20) + b"\0" * (9 << 20) + b"tail" * 100_000
    reference = cuts(Chunker(ChunkerParams(), 5).stream_chunks(io.BytesIO(data)))
    cutter = StreamCutter(Chunker(ChunkerParams(), 5))
    assert cuts(cutter.chunks(ShortReads(data, 65536))) == reference
    assert cuts(cutter.chunks(io.BytesIO(data))) == reference  # the buffer reused


def test_a_stream_that_cannot_be_read_is_refused() -> None:
    with pytest.raises(TypeError, match="stream must be readable"):
        list(StreamCutter(Chunker(SMALL, 1)).chunks(object()))


def test_digest_behind_the_cut_sees_every_byte_in_order() -> None:
    """With a digest executor, large reads are hashed on it while the stream is cut; the
    digest must still be the SHA-256 of the stream, whatever the read pattern, and the cuts
    the same as without it."""
    rng = random.Random(5)
    params = ChunkerParams()  # 4 MiB reads ahead: each refill is hashed behind the cut
    with ThreadPoolExecutor(max_workers=2) as pool:
        behind = StreamCutter(Chunker(params, 8), pool)
        inline = StreamCutter(Chunker(params, 8))
        for size in (0, 1, DIGEST_BEHIND_MIN - 1, DIGEST_BEHIND_MIN, 9 << 20, (23 << 20) + 7):
            data = rng.randbytes(size // 2) + b"line of text\n" * ((size - size // 2) // 13)
            data += b"\0" * (size - len(data))
            for stream in (io.BytesIO(data), ShortReads(data, 3 << 20), ReadOnly(data)):
                digest = hashlib.sha256()
                got = cuts(behind.chunks(stream, digest))
                assert digest.hexdigest() == hashlib.sha256(data).hexdigest(), size
                assert got == cuts(inline.chunks(io.BytesIO(data))), size


def test_a_cutter_reused_after_an_abandoned_stream_cuts_and_hashes_the_next_one() -> None:
    """A backup that stops reading a file mid-way (it failed, or the run was interrupted)
    reuses the thread's cutter for the next file, with an update of the first still in
    flight."""
    data = random.Random(6).randbytes(20 << 20)
    other = random.Random(7).randbytes(12 << 20)
    with ThreadPoolExecutor(max_workers=1) as pool:
        cutter = StreamCutter(Chunker(ChunkerParams(), 8), pool)
        abandoned = cutter.chunks(io.BytesIO(data), hashlib.sha256())
        next(abandoned)  # one chunk, with the digest of the first read in flight
        digest = hashlib.sha256()
        assert b"".join(cuts(cutter.chunks(io.BytesIO(other), digest))) == other
        assert digest.digest() == hashlib.sha256(other).digest()
        abandoned.close()


def test_a_failing_digest_fails_the_stream() -> None:
    class Broken:
        def update(self, data: memoryview, /) -> None:
            raise OSError("digest failed")

    with ThreadPoolExecutor(max_workers=1) as pool:
        cutter = StreamCutter(Chunker(ChunkerParams(), 8), pool)
        with pytest.raises(OSError, match="digest failed"):
            list(cutter.chunks(io.BytesIO(bytes(10 << 20)), Broken()))
