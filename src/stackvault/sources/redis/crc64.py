"""CRC-64/Jones as Redis computes it, the checksum at the end of an RDB (sources layer)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

_POLY = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9, bit-reflected


def _byte_table() -> tuple[int, ...]:
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _byte_table()
# _PLANES[k][v]: byte k of _TABLE[v], as translate() tables.
_PLANES = tuple(bytes((_TABLE[v] >> (8 * k)) & 0xFF for v in range(256)) for k in range(8))


def _gf2_times(mat: Sequence[int], vec: int) -> int:
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _zeros_operator(nbytes: int) -> tuple[tuple[int, ...], ...]:
    """The linear map "feed ``nbytes`` zero bytes" on a CRC register, as 8 tables of 256 (one
    per register byte), like zlib's ``crc32_combine``."""
    op = [_POLY] + [1 << (n - 1) for n in range(1, 64)]  # one zero bit
    for _ in range(3):  # -> one zero byte
        op = [_gf2_times(op, op[n]) for n in range(64)]
    result = [1 << n for n in range(64)]
    n = nbytes
    while n:
        if n & 1:
            result = [_gf2_times(op, result[i]) for i in range(64)]
        n >>= 1
        if n:
            op = [_gf2_times(op, op[i]) for i in range(64)]
    return tuple(tuple(_gf2_times(result, v << (8 * k)) for v in range(256)) for k in range(8))


def _shift(op: tuple[tuple[int, ...], ...], c: int) -> int:
    return (
        op[0][c & 0xFF]
        ^ op[1][(c >> 8) & 0xFF]
        ^ op[2][(c >> 16) & 0xFF]
        ^ op[3][(c >> 24) & 0xFF]
        ^ op[4][(c >> 32) & 0xFF]
        ^ op[5][(c >> 40) & 0xFF]
        ^ op[6][(c >> 48) & 0xFF]
        ^ op[7][c >> 56]
    )


def _crc_scalar(crc: int, data: bytes) -> int:
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


class Crc64:
    """CRC-64/Jones (reflected, initial value 0, no final XOR; ``crc64(0, "123456789")`` is
    ``0xe9c6d914c4b8d9ca``), the checksum at the end of every RDB file.

    A byte-at-a-time loop in Python manages ~13 MB/s. Here each 4 MiB block is cut into 4096
    lanes of 1 KiB whose CRCs advance side by side: one step handles byte ``i`` of every lane
    with C-speed primitives (a strided slice, big-integer XOR, ``bytes.translate`` through the
    table split into byte planes). The lane CRCs are then folded in order, ``crc(A+B) =
    shift(crc(A), len(B)) ^ crc(B)``, with a precomputed "append zero bytes" operator. Together
    about 100 MB/s, so a 100 MB RDB costs about one second.
    """

    LANE = 1024
    LANES = 4096
    BLOCK = LANE * LANES

    def __init__(self) -> None:
        self.value = 0
        self._pending = bytearray()
        self._lane_op: tuple[tuple[int, ...], ...] | None = None
        self._block_op: tuple[tuple[int, ...], ...] | None = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._pending += data
        if len(self._pending) < self.BLOCK:
            return
        if self._block_op is None:
            self._block_op = _zeros_operator(self.BLOCK)
        whole = len(self._pending) // self.BLOCK * self.BLOCK
        blocks = bytes(self._pending[:whole])
        del self._pending[:whole]
        for off in range(0, whole, self.BLOCK):
            block_crc = self._lanes(blocks[off : off + self.BLOCK], self.LANES)
            self.value = _shift(self._block_op, self.value) ^ block_crc

    def finish(self) -> int:
        """The CRC of everything given (call once)."""
        data = bytes(self._pending)
        self._pending.clear()
        lanes = len(data) // self.LANE
        if lanes >= 16:
            size = lanes * self.LANE
            part = self._lanes(data[:size], lanes)
            self.value = _shift(_zeros_operator(size), self.value) ^ part
            data = data[size:]
        self.value = _crc_scalar(self.value, data)
        return self.value

    def _lanes(self, block: bytes, lanes: int) -> int:
        """The CRC (from 0) of ``block``: ``lanes`` lanes of `LANE` bytes."""
        lane = self.LANE
        frombytes = int.from_bytes
        p0, p1, p2, p3, p4, p5, p6, p7 = _PLANES
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0  # byte k of every lane's register
        for i in range(lane):
            idx = (s0 ^ frombytes(block[i::lane], "little")).to_bytes(lanes, "little")
            s0 = frombytes(idx.translate(p0), "little") ^ s1
            s1 = frombytes(idx.translate(p1), "little") ^ s2
            s2 = frombytes(idx.translate(p2), "little") ^ s3
            s3 = frombytes(idx.translate(p3), "little") ^ s4
            s4 = frombytes(idx.translate(p4), "little") ^ s5
            s5 = frombytes(idx.translate(p5), "little") ^ s6
            s6 = frombytes(idx.translate(p6), "little") ^ s7
            s7 = frombytes(idx.translate(p7), "little")
        registers = bytearray(8 * lanes)
        for k, plane in enumerate((s0, s1, s2, s3, s4, s5, s6, s7)):
            registers[k::8] = plane.to_bytes(lanes, "little")
        if self._lane_op is None:
            self._lane_op = _zeros_operator(lane)
        op = self._lane_op
        crc = 0
        for value in struct.unpack(f"<{lanes}Q", registers):
            crc = _shift(op, crc) ^ value
        return crc
