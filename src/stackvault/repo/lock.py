"""Repository locks (repository layer): shared/exclusive, refreshed leases, stale-lock cleanup.

See FORMAT.md §9. A lock is stale when its holder's process is gone on this host, or when it
has not been refreshed within its lease. Stale locks are removed automatically (with a notice),
so an unattended job never stays blocked after a crash.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from stackvault.clock import Clock
from stackvault.crypto.envelope import Envelope
from stackvault.errors import IntegrityError, ObjectNotFound, RepositoryLocked, StoreError
from stackvault.store.base import Store

LOCK_AAD = b"sv1:lock"
DEFAULT_LEASE_S = 1800


def current_username() -> str:
    """The name of the user running this process (its uid when it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


@dataclass(frozen=True)
class LockInfo:
    """What a lock object says about its holder."""

    id: str
    host: str
    pid: int
    username: str
    exclusive: bool
    operation: str
    created: datetime
    refreshed: datetime
    lease_s: int

    def stale_reason(self, now: datetime, this_host: str) -> str | None:
        """Why the lock is stale, or None if its holder may still be alive."""
        if self.host == this_host and not _pid_alive(self.pid):
            return f"process {self.pid} on this host no longer exists"
        if now > self.refreshed + timedelta(seconds=self.lease_s):
            return (
                f"not refreshed since {self.refreshed:%Y-%m-%d %H:%M:%S} (lease {self.lease_s} s)"
            )
        return None

    def describe(self) -> str:
        kind = "exclusively" if self.exclusive else "shared"
        return (
            f"locked {kind} by {self.operation!r} (PID {self.pid} on {self.host}, "
            f"user {self.username}) since {self.created:%Y-%m-%d %H:%M:%S} UTC"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "username": self.username,
            "exclusive": self.exclusive,
            "operation": self.operation,
            "created": self.created.isoformat(),
            "refreshed": self.refreshed.isoformat(),
            "lease_s": self.lease_s,
        }

    @classmethod
    def from_json(cls, lock_id: str, d: dict[str, Any]) -> LockInfo:
        return cls(
            id=lock_id,
            host=str(d["host"]),
            pid=int(d["pid"]),
            username=str(d.get("username", "")),
            exclusive=bool(d["exclusive"]),
            operation=str(d.get("operation", "")),
            created=datetime.fromisoformat(d["created"]),
            refreshed=datetime.fromisoformat(d["refreshed"]),
            lease_s=int(d["lease_s"]),
        )


def list_locks(store: Store, envelope: Envelope, notice: Callable[[str], None]) -> list[LockInfo]:
    """Every readable lock in the repository; unreadable ones are reported and ignored."""
    locks: list[LockInfo] = []
    for info in store.list("locks/"):
        lock_id = info.name.removeprefix("locks/")
        try:
            doc = json.loads(envelope.open(store.get(info.name), LOCK_AAD))
            locks.append(LockInfo.from_json(lock_id, doc))
        except ObjectNotFound:
            continue  # released while we listed
        except (IntegrityError, ValueError, KeyError, TypeError):
            notice(f"ignoring unreadable lock {lock_id[:8]}")
    return locks


class RepositoryLock:
    """A held lock. Use `acquire` (or the context manager); `release` always in the end."""

    def __init__(
        self,
        store: Store,
        envelope: Envelope,
        clock: Clock,
        *,
        exclusive: bool,
        operation: str,
        lease_s: int = DEFAULT_LEASE_S,
        notice: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self._store = store
        self._envelope = envelope
        self._clock = clock
        self.exclusive = exclusive
        self.operation = operation
        self.lease_s = lease_s
        self._notice = notice
        self._host = socket.gethostname()
        self._created = clock.now()
        self._name: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def _conflicts(self, others: list[LockInfo]) -> list[LockInfo]:
        now = self._clock.now()
        live: list[LockInfo] = []
        for lk in others:
            if self._name and lk.id == self._name.removeprefix("locks/"):
                continue
            reason = lk.stale_reason(now, self._host)
            if reason is not None:
                self._store.delete(f"locks/{lk.id}")
                self._notice(f"removed stale lock of PID {lk.pid} on {lk.host}: {reason}")
                continue
            if self.exclusive or lk.exclusive:
                live.append(lk)
        return live

    def _write(self) -> str:
        info = LockInfo(
            id="",
            host=self._host,
            pid=os.getpid(),
            username=current_username(),
            exclusive=self.exclusive,
            operation=self.operation,
            created=self._created,
            refreshed=self._clock.now(),
            lease_s=self.lease_s,
        )
        name = f"locks/{secrets.token_hex(16)}"
        self._store.put(name, self._envelope.seal(json.dumps(info.to_json()).encode(), LOCK_AAD))
        return name

    def acquire(self) -> None:
        """Take the lock or raise `RepositoryLocked` naming the holder."""
        conflicts = self._conflicts(list_locks(self._store, self._envelope, self._notice))
        if not conflicts:
            self._name = self._write()
            # Two processes may have written at the same moment: look again and back off.
            conflicts = self._conflicts(list_locks(self._store, self._envelope, self._notice))
            if conflicts:
                self._store.delete(self._name)
                self._name = None
        if conflicts:
            raise RepositoryLocked(
                f"repository is {conflicts[0].describe()}",
                hint="wait for it to finish, or run `stackvault unlock` if that process is gone",
            )
        self._thread = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
        self._thread.start()

    def _refresh_loop(self) -> None:
        interval = max(1.0, self.lease_s / 3)
        while not self._stop.wait(interval):
            try:
                self.refresh()
            except StoreError as exc:
                self._notice(f"could not refresh the repository lock: {exc}")

    def refresh(self) -> None:
        """Write a fresh lock object and remove the old one."""
        with self._mutex:
            if self._name is None:
                return
            old = self._name
            self._name = self._write()
            self._store.delete(old)

    def release(self) -> None:
        """Stop refreshing and remove the lock. Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._mutex:
            if self._name is not None:
                # A lock that cannot be removed (the store went away) must not hide the
                # outcome of the work it protected: it expires and is cleared as stale.
                try:
                    self._store.delete(self._name)
                except StoreError as exc:
                    self._notice(
                        f"could not remove the repository lock {self._name}: {exc}; it "
                        "expires by itself (or remove it with `stackvault unlock`)"
                    )
                finally:
                    self._name = None

    def __enter__(self) -> RepositoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
