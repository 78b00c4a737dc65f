"""The `Store` contract (store layer): named, immutable-by-convention byte objects.

A store knows nothing of encryption, chunks or snapshots. It holds objects named by
slash-separated relative names such as ``config``, ``keys/<hex>``, ``data/<2 hex>/<hex>``,
``index/<hex>``, ``snapshots/<hex>`` and ``locks/<hex>``. Each name component matches
``[A-Za-z0-9_.-]+``, does not start with a dot, and is never ``..``.

Contract every implementation keeps (checked by ``tests/store/test_conformance.py``):

* ``put`` is atomic: a reader sees either no object or the whole object, never a prefix — even if
  the process dies mid-write. When ``put`` returns, the object is durable (fsync'd or acknowledged
  by the server). Putting an existing name replaces it atomically, unless the store is
  append-only, which raises `ObjectExists`.
* ``put_new`` creates: of several writers of one name, whether concurrent or not, exactly one
  succeeds; the others raise `ObjectExists` and the object stays the winner's. Finding an object
  with exactly the same bytes counts as success (a retried request may meet its own first
  attempt). Atomic and durable like ``put``.
* ``get`` of a missing object raises `ObjectNotFound`; a range beyond the end returns the bytes
  that exist (possibly empty), like a file read.
* ``delete`` of a missing object is not an error (idempotent). A delete need not be durable
  when it returns: a delete lost in a crash leaves a stale lock or unreferenced data, which the
  repository tolerates.
* Every operation validates the name (`validate_name`) and raises `StoreError` for an invalid
  one; a negative offset or length raises `StoreError`. A name that is only a "directory"
  (``data`` when ``data/ab/x`` exists) is not an object: ``get``/``stat`` raise `ObjectNotFound`.
* ``list(prefix)`` yields every object whose name starts with ``prefix``, in no particular order,
  including objects in nested "directories"; it never yields temporary or partial objects.
  A prefix that no valid name can start with (``../``) yields nothing.
* Errors are `StoreError` subclasses: `TransientStoreError` when a retry may help, the others
  (`ObjectNotFound`, `StorePermissionDenied`, `StoreFull`, ...) when it cannot. Messages name the
  object and the store's redacted location, never credentials.
* Implementations are safe to call from several threads at once.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from stackvault.errors import StoreError

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
"""Components of letters, digits, ``_``, ``-`` and ``.`` (not first), joined by ``/``: one
match per call, which every blob read of a restore makes."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid object name, else raise `StoreError`."""
    if _NAME.fullmatch(name) is None:
        raise StoreError(f"invalid object name {name!r}")
    return name


MUTABLE_PREFIXES: tuple[str, ...] = ("locks/", "leases/")
"""Objects under these prefixes coordinate processes (locks, job leases) and hold no data: an
append-only store still lets a client replace and delete them, and Object Lock retention is
never applied to them."""


def is_mutable(name: str) -> bool:
    """True if ``name`` is a coordination object (`MUTABLE_PREFIXES`)."""
    return name.startswith(MUTABLE_PREFIXES)


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows of one object."""

    name: str
    size: int
    mtime: datetime | None = field(default=None, compare=False)
    """When the object was last written, by the store's own clock (a local file system's
    modification time, S3's ``LastModified``), timezone-aware UTC; None where the store does
    not say. Locks and prune judge ages by it, so clocks of the hosts that wrote the objects
    do not matter (FORMAT.md §9)."""


@dataclass(frozen=True)
class Capabilities:
    """What a store can do; the repository adapts its behaviour to it."""

    range_reads: bool = True
    """``get`` with offset/length transfers only the range (not the whole object)."""
    parallelism: int = 4
    """A sensible number of concurrent requests."""
    append_only: bool = False
    """Deletes and overwrites are refused."""
    object_lock: bool = False
    """Objects can carry a retention date before which they cannot be deleted."""
    remote: bool = False
    """Requests cross a network: latency is high, so callers should keep many in flight."""


@dataclass(frozen=True)
class Retention:
    """Object Lock retention applied to every object written (except `MUTABLE_PREFIXES`)."""

    mode: str
    """``governance`` (an account with the bypass permission may still delete) or
    ``compliance`` (nobody can delete before the date, not even the bucket owner)."""
    days: int
    """Each object is retained until this many days after it was written."""


class Store(ABC):
    """Abstract storage backend. See the module docstring for the contract."""

    @abstractmethod
    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` under ``name`` atomically and durably."""

    @abstractmethod
    def put_new(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """Create ``name`` with ``data``; `ObjectExists` if an object of that name exists with
        other bytes. Never replaces anything, even when writers race (see the module doc)."""

    def put_parts(self, name: str, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """`put` of the concatenation of ``parts``; stores may avoid building it in memory."""
        self.put(name, b"".join(parts))

    @abstractmethod
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return ``length`` bytes (all remaining bytes if None) starting at ``offset``."""

    @abstractmethod
    def stat(self, name: str) -> ObjectInfo:
        """Return the object's size; raise `ObjectNotFound` if it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every complete object whose name starts with ``prefix``."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object; no error if it does not exist."""

    def exists(self, name: str) -> bool:
        """True if an object of that name exists."""
        from stackvault.errors import ObjectNotFound

        try:
            self.stat(name)
        except ObjectNotFound:
            return False
        return True

    def capabilities(self) -> Capabilities:
        """What this store can do."""
        return Capabilities()

    @abstractmethod
    def describe(self) -> str:
        """A human-readable location with every credential redacted, for messages."""

    @property
    def retries(self) -> int:
        """Requests retried so far (stores that never retry: 0)."""
        return 0

    def set_notice(self, notice: Callable[[str], None]) -> None:  # noqa: B027 - optional hook
        """Where to report events worth telling the user about (e.g. retried requests)."""

    def ensure_root(self, *, object_lock: bool = False) -> None:
        """Create the container of the objects (directory, bucket) if it is missing; with
        ``object_lock``, one where objects can carry retention (else `StoreError`)."""
        if object_lock:
            raise StoreError(f"{self.describe()} does not support Object Lock retention")

    def configure_retention(self, retention: Retention | None) -> None:
        """Give every object put from now on (except `MUTABLE_PREFIXES`) this retention.

        Stores without Object Lock raise `StoreError` for anything but None.
        """
        if retention is not None:
            raise StoreError(f"{self.describe()} does not support Object Lock retention")

    def retention(self, name: str) -> datetime | None:
        """The date before which the object cannot be deleted, or None (deletable now).

        Raises `ObjectNotFound` if it does not exist.
        """
        self.stat(name)
        return None

    def set_retention(self, name: str, until: datetime) -> None:
        """Extend the object's retention to ``until`` (never shortens it)."""
        raise StoreError(f"{self.describe()} does not support Object Lock retention")

    def cleanup(self) -> int:
        """Remove leftovers of interrupted writes (temporary files); return how many.

        Call only while no writer can be active, i.e. under the repository's exclusive lock.
        Stores whose writes leave nothing behind keep this default.
        """
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections and file handles; the store is unusable afterwards."""
