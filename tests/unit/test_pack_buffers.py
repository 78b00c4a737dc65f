"""The writer's reusable pack buffers: at most ``count`` exist, ``take`` waits for one to be
given back (the back-pressure of data packs), and the pages past the pack size that a pack's
last blob used are handed back to the kernel when the buffer returns."""

from __future__ import annotations

import threading

from stackvault.repo.writer import _PackBuffers

PAGE = 4096


def test_take_waits_for_a_buffer_to_be_given_back_and_reuses_it() -> None:
    buffers = _PackBuffers(2, 8 * PAGE, 4 * PAGE)
    a, b = buffers.take(), buffers.take()
    assert len(a) == len(b) == 8 * PAGE and a.obj is not b.obj
    got: list[memoryview] = []
    waiter = threading.Thread(target=lambda: got.append(buffers.take()))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not got  # a third buffer is never made
    buffers.give(a)
    waiter.join(5)
    assert not waiter.is_alive() and got[0].obj is a.obj


def test_pages_past_the_pack_size_are_released_when_a_pack_used_them() -> None:
    buffers = _PackBuffers(1, 8 * PAGE, 4 * PAGE)
    buf = buffers.take()
    buf[:] = b"\xff" * len(buf)
    buffers.give(buf, used=6 * PAGE)
    again = buffers.take()
    assert again.obj is buf.obj
    assert bytes(again[: 4 * PAGE]) == b"\xff" * (4 * PAGE)  # the pack part stays resident
    assert bytes(again[4 * PAGE :]) == bytes(4 * PAGE)  # released: reads as fresh zero pages
    buffers.give(again, used=2 * PAGE)  # within the pack size: nothing to release
    assert bytes(buffers.take()[: 2 * PAGE]) == b"\xff" * (2 * PAGE)
