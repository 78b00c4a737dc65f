"""Retries of transient store failures (store layer): exponential backoff with full jitter.

A remote store turns each request into a call of `Retrier.call`. A `TransientStoreError`
(connection reset, timeout, HTTP 5xx, throttling, a short read) is retried after a random
delay drawn uniformly from ``[0, min(cap, base * 2**(attempt-1))]`` ("full jitter", which
spreads the retries of many parallel requests instead of synchronising them). Retrying stops
after ``attempts`` tries or once the next wait would pass ``deadline`` seconds since the first
try; the last error is then raised, saying how long it tried. Any other error is raised at
once: permanent failures are never retried.

Every retry is reported through the ``notice`` callback and counted (`Retrier.retries`), so
a run that only succeeded thanks to retries says so.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from stackvault.errors import TransientStoreError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one request."""

    attempts: int = 10
    """Tries in total, the first included (1 = never retry)."""
    base: float = 0.2
    """Upper bound of the first wait, in seconds; it doubles with every retry."""
    cap: float = 15.0
    """Upper bound of any single wait, in seconds."""
    deadline: float = 180.0
    """No retry starts later than this many seconds after the first try."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.cap < 0 or self.deadline < 0:
            raise ValueError(f"invalid retry policy {self}")

    def bound(self, attempt: int) -> float:
        """The longest wait before retry number ``attempt`` (1-based)."""
        return float(min(self.cap, self.base * 2 ** min(attempt - 1, 62)))


class Retrier:
    """Runs requests under a `RetryPolicy`; safe to share between threads."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        notice: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.notice = notice
        self._sleep, self._clock, self._rng = sleep, clock, rng
        self._lock = threading.Lock()
        self._retries = 0
        self._gave_up = 0

    @property
    def retries(self) -> int:
        """Retries made so far (a request that succeeded on its third try counts 2)."""
        with self._lock:
            return self._retries

    @property
    def gave_up(self) -> int:
        """Requests that failed even after retrying."""
        with self._lock:
            return self._gave_up

    def call(self, what: str, request: Callable[[], T]) -> T:
        """``request()``, retried on `TransientStoreError` (whose message names the request
        and is repeated in each retry notice)."""
        start = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return request()
            except TransientStoreError as exc:
                elapsed = self._clock() - start
                delay = self._rng() * self.policy.bound(attempt)
                if attempt >= self.policy.attempts or elapsed + delay > self.policy.deadline:
                    with self._lock:
                        self._gave_up += 1
                    tries = "1 try" if attempt == 1 else f"{attempt} tries"
                    raise TransientStoreError(
                        f"{exc.message} (gave up after {tries} in {elapsed:.1f} s)",
                        hint=exc.hint
                        or "check the network and the server, then run the command again",
                    ) from exc
                with self._lock:
                    self._retries += 1
                if self.notice is not None:
                    self.notice(
                        f"retrying in {delay:.1f} s (attempt {attempt + 1} of "
                        f"{self.policy.attempts}): {exc.message}"
                    )
                self._sleep(delay)
