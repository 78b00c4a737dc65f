"""How a restore writes large files (fs layer): around the page cache (``O_DIRECT``) or
through it, chosen by measuring both on the restore's own writes.

Neither is faster everywhere. On a virtual machine whose kernel copies slowly into the page
cache, writing around it was the largest saving of a restore (1.06 GB: 4.4-5.8 s → 2.8-3.4 s);
on one whose disk takes direct writes at ~290 MB/s, the same restore was faster through the
page cache (5.6-5.8 s against 6.3-7.4 s), which defers the disk's work past the end of the
run. So `WriteMode` tries both on the first stages a restore writes, keeps whichever costs less
time per byte, and keeps trying the other now and then (the page cache stops being cheap once
the kernel throttles writers with too much unwritten data). Writing around the page cache is
kept unless the page cache is clearly cheaper: it leaves the cache of everything else on the
host alone, and the data is on the device when each write returns.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

PROBE = 4
"""Writes of each mode measured before the first choice."""
EXPLORE = 32
"""After the choice, one write in this many goes the other way, to keep its figure current."""
MARGIN = 1.15
"""The page cache must be this many times cheaper per byte to be chosen over direct writes."""
WEIGHT = 0.25
"""Weight of each new measurement in a mode's moving average of time per byte."""
RECORD_MIN = 256 * 1024
"""Shorter writes (the ends of files) are not measured: their cost is mostly the call's."""


@dataclass(frozen=True)
class WriteFigures:
    """What `WriteMode` measured: MB/s of each mode (None: not measured) and the choice."""

    direct_mb_s: float | None
    page_cache_mb_s: float | None
    chosen: str | None
    """``"direct"``, ``"page cache"``, or None if no large file was written."""


class _Mode:
    __slots__ = ("cost", "count")

    def __init__(self) -> None:
        self.cost = 0.0  # seconds per byte, moving average
        self.count = 0

    def add(self, cost: float) -> None:
        self.cost = cost if not self.count else self.cost + WEIGHT * (cost - self.cost)
        self.count += 1

    def mb_s(self) -> float | None:
        return round(1e-6 / self.cost, 1) if self.count and self.cost > 0 else None


class WriteMode:
    """Decides, write by write, whether a restore's next stage of a large file goes around the
    page cache; thread-safe. Callers ask `direct`, then `record` what the write took."""

    def __init__(self, *, direct: bool = True) -> None:
        """``direct=False``: always through the page cache (no ``O_DIRECT`` here)."""
        self._lock = threading.Lock()
        self._allowed = direct
        self._direct = _Mode()
        self._cached = _Mode()
        self._asked = 0

    def direct(self) -> bool:
        """Whether the next write should go around the page cache."""
        with self._lock:
            if not self._allowed:
                return False
            self._asked += 1
            if self._direct.count < PROBE or self._cached.count < PROBE:
                return self._direct.count <= self._cached.count  # alternate: both get figures
            best = self._best()
            return not best if self._asked % EXPLORE == 0 else bool(best)

    def _best(self) -> bool | None:
        """The cheaper mode by what was measured (True: direct); None before any figure."""
        d, c = self._direct, self._cached
        if not (d.count or c.count):
            return None
        if not self._allowed or not d.count:
            return False
        if not c.count:
            return True
        return not c.cost * MARGIN < d.cost

    def record(self, direct: bool, nbytes: int, seconds: float) -> None:
        """One write of ``nbytes`` took ``seconds`` (below `RECORD_MIN`: ignored)."""
        if nbytes < RECORD_MIN:
            return
        with self._lock:
            (self._direct if direct else self._cached).add(max(seconds, 1e-9) / nbytes)

    def refuse_direct(self) -> None:
        """This filesystem refuses ``O_DIRECT``: write through the page cache from now on."""
        with self._lock:
            self._allowed = False

    def figures(self) -> WriteFigures:
        """What was measured so far, and which mode the next writes would use."""
        with self._lock:
            best = self._best()
            return WriteFigures(
                direct_mb_s=self._direct.mb_s(),
                page_cache_mb_s=self._cached.mb_s(),
                chosen=None if best is None else ("direct" if best else "page cache"),
            )
