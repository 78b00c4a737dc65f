"""Fault-injecting store wrapper (store layer): makes another store fail on demand.

A public testing aid, not used by stackvault itself: kept in the package (not under
``tests/``) so that code built on `stackvault.repo.repository.Repository` can be tested the way
stackvault tests itself — a server that times out, loses an acknowledgement, returns a
damaged byte, or a process that dies between two writes — without a real server. Wrap any
`Store` (usually a `stackvault.store.memory.MemoryStore`).

Usage::

    store = FaultyStore(MemoryStore())
    store.fail_put(lambda n: n.startswith("data/"), TransientStoreError("timeout"), times=2)
    store.corrupt_get(lambda n: n.startswith("index/"), flip_offset=-1)
    store.crash_after_puts(10)            # the 11th put raises SimulatedCrash and stores nothing
    ...
    assert store.calls["put"] == 11

Rules are checked in the order they were added; the first live rule whose predicate matches the
object name (the prefix, for ``list``) fires. Everything is thread-safe; predicates run under the
wrapper's lock, so they must be quick and must not call the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stackvault.store.base import Capabilities, ObjectInfo, Store

Predicate = Callable[[str], bool]
OPERATIONS = ("put", "get", "stat", "list", "delete")


class SimulatedCrash(BaseException):
    """The default "process died" signal of `FaultyStore.crash_after_puts`.

    A `BaseException`, like KeyboardInterrupt, so ``except Exception`` handlers in the code under
    test cannot swallow it and carry on as a dead process never would.
    """


@dataclass
class _Rule:
    predicate: Predicate
    error: BaseException | None = None
    remaining: int | None = None
    after: bool = False
    flip_offset: int = 0


_Rules = list[_Rule]  # an alias because `FaultyStore.list` shadows the builtin in the class


class FaultyStore(Store):
    """Wraps ``inner`` and injects failures, corruption and crashes that tests register."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self._lock = threading.Lock()
        self._failures: dict[str, _Rules] = {op: [] for op in OPERATIONS}
        self._corruptions: _Rules = []
        self._crash_after: int | None = None
        self._crash_factory: Callable[[], BaseException] = SimulatedCrash
        self._puts_started = 0

    # --- registering faults -----------------------------------------------------------------

    def fail_put(
        self,
        predicate: Predicate,
        error: BaseException,
        times: int | None = None,
        *,
        after: bool = False,
    ) -> None:
        """Raise ``error`` on matching puts (``times`` times, or forever if None).

        With ``after=True`` the object is stored first and the error raised afterwards, like a
        server whose acknowledgement is lost.
        """
        self._add_failure("put", predicate, error, times, after)

    def fail_get(
        self, predicate: Predicate, error: BaseException, times: int | None = None
    ) -> None:
        """Raise ``error`` on matching gets."""
        self._add_failure("get", predicate, error, times, False)

    def fail_delete(
        self,
        predicate: Predicate,
        error: BaseException,
        times: int | None = None,
        *,
        after: bool = False,
    ) -> None:
        """Raise ``error`` on matching deletes (after deleting, if ``after``)."""
        self._add_failure("delete", predicate, error, times, after)

    def corrupt_get(self, predicate: Predicate, flip_offset: int, times: int | None = None) -> None:
        """Flip (xor 0xFF) the byte at ``flip_offset`` of matching objects as ``get`` returns them.

        The offset is relative to the object, negative counts from its end, and a ranged get
        that does not cover it returns clean bytes — like a bad sector in the stored object.
        """
        with self._lock:
            self._corruptions.append(_Rule(predicate, remaining=times, flip_offset=flip_offset))

    def crash_after_puts(
        self, n: int, exc_factory: Callable[[], BaseException] = SimulatedCrash
    ) -> None:
        """After ``n`` more successful puts, each put raises ``exc_factory()``, storing nothing."""
        with self._lock:
            self._crash_after = self._puts_started + n
            self._crash_factory = exc_factory

    def clear(self) -> None:
        """Remove every rule and crash point (call counters are kept)."""
        with self._lock:
            for rules in self._failures.values():
                rules.clear()
            self._corruptions.clear()
            self._crash_after = None

    # --- Store ------------------------------------------------------------------------------

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self._put(name, lambda: self.inner.put(name, data))

    def _put(self, name: str, write: Callable[[], None]) -> None:
        with self._lock:
            self.calls["put"] += 1
            if self._crash_after is not None and self._puts_started >= self._crash_after:
                raise self._crash_factory()
            # Reserve the slot now so concurrent puts cannot overshoot the crash point.
            self._puts_started += 1
        try:
            after = self._check("put", name)
            write()
        except BaseException:
            with self._lock:
                self._puts_started -= 1
            raise
        _raise(after)

    def put_new(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """Counted, failed and crashed like `put` (its rules apply), then `put_new` inside."""
        self._put(name, lambda: self.inner.put_new(name, data))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._enter("get", name)
        data = self.inner.get(name, offset, length)
        flip = self._take(self._corruptions, name)
        if flip is None:
            return data
        at = flip.flip_offset
        if at < 0:
            at += self.inner.stat(name).size
        at -= offset
        if not 0 <= at < len(data):
            return data
        damaged = bytearray(data)
        damaged[at] ^= 0xFF
        return bytes(damaged)

    def stat(self, name: str) -> ObjectInfo:
        self._enter("stat", name)
        return self.inner.stat(name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._enter("list", prefix)
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        after = self._enter("delete", name)
        self.inner.delete(name)
        _raise(after)

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def describe(self) -> str:
        return f"faulty:{self.inner.describe()}"

    def close(self) -> None:
        self.inner.close()

    # --- helpers ----------------------------------------------------------------------------

    def _add_failure(
        self, op: str, predicate: Predicate, error: BaseException, times: int | None, after: bool
    ) -> None:
        with self._lock:
            self._failures[op].append(_Rule(predicate, error, times, after))

    def _enter(self, op: str, key: str) -> _Rule | None:
        """Count the call, then do `_check`."""
        with self._lock:
            self.calls[op] += 1
        return self._check(op, key)

    def _check(self, op: str, key: str) -> _Rule | None:
        """Raise a matching rule's error now, or return it if it fires after the operation."""
        rule = self._take(self._failures[op], key)
        if rule is not None and rule.after:
            return rule
        _raise(rule)
        return None

    def _take(self, rules: _Rules, key: str) -> _Rule | None:
        """The first live matching rule, with one use consumed."""
        with self._lock:
            for rule in rules:
                if rule.remaining != 0 and rule.predicate(key):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None


def _raise(rule: _Rule | None) -> None:
    if rule is not None and rule.error is not None:
        # Reset the traceback so an error object raised many times doesn't grow a chain of them.
        raise rule.error.with_traceback(None)
