"""Bandwidth limits (store layer): a token bucket shared by every thread of one store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Keeps the average transfer rate at or below ``rate`` bytes per second.

    `take` accounts for a transfer of ``n`` bytes and sleeps as long as needed for the
    average since the bucket was last full to stay within the rate. Bursts up to ``burst``
    bytes (default: one second's worth) pass without waiting. Thread-safe: concurrent
    transfers share the budget.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()

    def take(self, n: int) -> float:
        """Account for ``n`` bytes; return the seconds slept."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


def parse_rate(text: str) -> int:
    """Bytes per second from ``"10M"``, ``"512K"``, ``"1G"`` or a plain number (binary units)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    raw = text.strip().upper().removesuffix("/S").removesuffix("B").removesuffix("I")
    unit = raw[-1:] if raw[-1:] in ("K", "M", "G") else ""
    number = raw[: len(raw) - len(unit)]
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"not a rate: {text!r} (examples: 500K, 10M, 1G)") from None
    if value <= 0:
        raise ValueError(f"a rate must be positive: {text!r}")
    return int(value)
