"""The interpreter's garbage collector during a restore (engine layer).

A restore keeps many young objects alive for a while: the nodes of the files handed out and
not yet written, and, reading pack by pack, a window of up to 16,384 waiting files
(`stackvault.engine.packrestore`). With the interpreter's default first threshold (a
collection every 700 net allocations) these survive two young collections, reach the oldest
generation, and each full collection then walks all of them again: restoring 200,000 files
pack by pack, the process spent 3.5-4.1 of its ~43 CPU-s in 39 full collections. With a
first threshold of 20,000 most of them are freed before any collection sees them: 3 full
collections, 0.9-1.0 CPU-s in all, and the restore 37-45 s instead of 46-47 s.

Only the frequency changes: cyclic garbage is still collected, at most ``FIRST`` allocations
later (a few MB at worst). The setting is the process's, so it is raised while at least one
`fewer_collections` block runs and put back when the last one ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

FIRST = 20_000
"""The collector's first threshold while a restore runs (the interpreter's default: 700)."""

_lock = threading.Lock()
_active = 0
_saved = gc.get_threshold()
"""The thresholds to put back when the last block ends (read as the first one starts)."""


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the block with the first threshold at least `FIRST`; the previous thresholds are
    back once no such block runs (blocks may nest and run on several threads)."""
    global _active, _saved
    with _lock:
        if _active == 0:
            _saved = gc.get_threshold()
            first, *rest = _saved
            gc.set_threshold(max(first, FIRST), *rest)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                gc.set_threshold(*_saved)
