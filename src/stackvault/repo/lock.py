"""Repository locks (repository layer): shared/exclusive, refreshed leases, stale-lock cleanup.

See FORMAT.md §9. A lock is stale when its holder's process is gone, or when it has not been
refreshed within its lease. Both judgements are made so that a wrong "stale" is impossible in
the cases that matter for prune (which deletes data a live backup may be writing):

* A holder is named by host, PID, **boot id** and **PID namespace**. A process is judged gone
  only when the lock was taken under this very kernel boot and PID namespace and that PID no
  longer exists (or is a zombie). A container or ``unshare --pid`` with the host's name, or a
  second machine with the same hostname, differs in one of them: its lock is judged by its
  lease only.
* The lease is measured in the **store's time**: the age of a lock is the difference between
  the store's modification time of our own freshly written lock object and that of the other
  lock object, so the clocks of the hosts involved do not matter. Only a store that reports no
  modification times falls back to the lock's own ``refreshed`` field and the local clock.

Stale locks are removed automatically (with a notice), so an unattended job never stays
blocked after a crash. A lock that meets a live conflicting one is tried again for up to
``retry_s`` seconds (the command line's `--retry-lock`; default 0: fail at once), so a cron
backup that meets a prune waits for it.
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
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from stackvault.clock import Clock
from stackvault.crypto.envelope import Envelope
from stackvault.errors import (
    IntegrityError,
    ObjectNotFound,
    RepositoryLocked,
    StoreError,
    StoreFull,
)
from stackvault.repo.appendonly import refuse_on_append_only_store
from stackvault.store.base import Store

LOCK_AAD = b"sv1:lock"
LOCKS_PREFIX = "locks/"
"""Where lock objects live in the store (FORMAT.md §9)."""
DEFAULT_LEASE_S = 1800
_RETRY_MAX_PAUSE_S = 10.0


def current_username() -> str:
    """The name of the user running this process (its uid when it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, precisely enough to tell hosts and PID namespaces apart.

    ``boot_id`` (the kernel's random id of this boot) differs between machines and between
    boots of one machine; ``pid_ns`` (the identity of the PID namespace, as ``readlink
    /proc/self/ns/pid`` prints it) differs between a host and its containers. Either is empty
    when this system does not tell (no ``/proc``): such a holder is never judged by its PID.
    """

    host: str
    pid: int
    boot_id: str = ""
    pid_ns: str = ""

    @staticmethod
    def current() -> Holder:
        """This process."""
        boot_id, pid_ns = _kernel_identity()
        return Holder(socket.gethostname(), os.getpid(), boot_id, pid_ns)

    def same_pid_space(self, other: Holder) -> bool:
        """True if a PID of ``other`` means the same process here (same kernel boot and PID
        namespace, both known)."""
        return bool(self.boot_id and self.pid_ns) and (
            (self.boot_id, self.pid_ns, self.host) == (other.boot_id, other.pid_ns, other.host)
        )


@cache
def _kernel_identity() -> tuple[str, str]:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot_id = f.read().strip()
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return "", ""
    return boot_id, pid_ns


def process_gone(pid: int) -> bool:
    """True if no process ``pid`` exists in this PID namespace, or it is a zombie (it has
    exited and only waits for its parent to collect its status: it will never refresh or
    release a lock)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    # "pid (comm) S ...": the command may hold spaces and parentheses, the state follows the
    # last ")".
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state in (b"Z", b"X")


@dataclass(frozen=True)
class LockInfo:
    """What a lock object says about its holder (and, from the store, when it was written)."""

    id: str
    host: str
    pid: int
    username: str
    exclusive: bool
    operation: str
    created: datetime
    refreshed: datetime
    lease_s: int
    boot_id: str = ""
    pid_ns: str = ""
    stored: datetime | None = None
    """The store's modification time of the lock object (not part of its content)."""

    @property
    def holder(self) -> Holder:
        return Holder(self.host, self.pid, self.boot_id, self.pid_ns)

    def stale_reason(
        self, store_now: datetime | None, local_now: datetime, me: Holder
    ) -> str | None:
        """Why the lock is stale, or None if its holder may still be alive.

        ``store_now`` is the store's current time (the modification time of an object just
        written) or None when the store does not report times; ``local_now`` is only used
        then."""
        if me.same_pid_space(self.holder) and process_gone(self.pid):
            return f"process {self.pid} on this host no longer exists"
        lease = timedelta(seconds=self.lease_s)
        if store_now is not None and self.stored is not None:
            age = store_now - self.stored
            if age > lease:
                return (
                    f"not refreshed for {int(age.total_seconds())} s by the store's clock "
                    f"(lease {self.lease_s} s)"
                )
            return None
        if local_now > self.refreshed + lease:
            return (
                f"not refreshed since {self.refreshed:%Y-%m-%d %H:%M:%S} UTC "
                f"(lease {self.lease_s} s)"
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
            "boot_id": self.boot_id,
            "pid_ns": self.pid_ns,
            "username": self.username,
            "exclusive": self.exclusive,
            "operation": self.operation,
            "created": self.created.isoformat(),
            "refreshed": self.refreshed.isoformat(),
            "lease_s": self.lease_s,
        }

    @classmethod
    def from_json(cls, lock_id: str, d: dict[str, Any], stored: datetime | None = None) -> LockInfo:
        return cls(
            id=lock_id,
            host=str(d["host"]),
            pid=int(d["pid"]),
            username=str(d.get("username", "")),
            exclusive=bool(d["exclusive"]),
            operation=str(d.get("operation", "")),
            created=_aware(datetime.fromisoformat(d["created"])),
            refreshed=_aware(datetime.fromisoformat(d["refreshed"])),
            lease_s=int(d["lease_s"]),
            boot_id=str(d.get("boot_id", "")),
            pid_ns=str(d.get("pid_ns", "")),
            stored=stored,
        )


def _aware(when: datetime) -> datetime:
    """A time without zone (never written by this program) is taken as UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def store_time(store: Store, envelope: Envelope, clock: Clock) -> datetime | None:
    """The store's current time: the modification time of a short-lived shared lock object
    written for the purpose (None if the store reports no times). For judging other locks
    without taking one (`unlock`)."""
    probe = RepositoryLock(store, envelope, clock, exclusive=False, operation="unlock")
    name = probe._write()
    try:
        return store.stat(name).mtime
    finally:
        store.delete(name)


@dataclass(frozen=True)
class RemovedLock:
    """A lock `remove_locks` removed, and why."""

    id: str
    host: str
    pid: int
    reason: str
    """Why it was judged stale (`LockInfo.stale_reason`), or ``"--remove-all"``."""


REMOVE_ALL = "--remove-all"
REMOVE_ALL_REFUSAL = (
    "unlock --remove-all",
    "removes locks of processes that may still be running",
    "leave out --remove-all to remove only stale locks",
)
"""The command, action and alternative `refuse_if_append_only` names for ``remove_all``."""


def remove_locks(
    store: Store,
    envelope: Envelope,
    clock: Clock,
    notice: Callable[[str], None],
    *,
    remove_all: bool = False,
) -> list[RemovedLock]:
    """Remove the stale locks (FORMAT.md §9), judged against the store's time, or with
    ``remove_all`` every lock, even of processes that may be alive (an administrator's
    prune, say): refused (`AppendOnlyRefused`) on a store opened append-only."""
    if remove_all:
        refuse_on_append_only_store(store, *REMOVE_ALL_REFUSAL)
    removed: list[RemovedLock] = []
    store_now = store_time(store, envelope, clock)
    me = Holder.current()
    for lk in list_locks(store, envelope, notice):
        reason = lk.stale_reason(store_now, clock.now(), me)
        if remove_all or reason is not None:
            store.delete(lock_name(lk.id))
            removed.append(RemovedLock(lk.id, lk.host, lk.pid, reason or REMOVE_ALL))
    return removed


def remove_locks_of(
    store: Store, envelope: Envelope, holder: Holder, notice: Callable[[str], None]
) -> list[RemovedLock]:
    """Remove every lock held by ``holder`` (same host, PID, boot id and PID namespace): for
    a caller that knows that process is gone — a daemon taking over the job of one whose
    lease expired (FORMAT.md §15) — before the locks' own lease says so."""
    removed: list[RemovedLock] = []
    for lk in list_locks(store, envelope, notice):
        if lk.holder == holder:
            store.delete(lock_name(lk.id))
            removed.append(RemovedLock(lk.id, lk.host, lk.pid, "its holder's job lease expired"))
    return removed


def lock_name(lock_id: str) -> str:
    """The store object of the lock ``lock_id``."""
    return f"{LOCKS_PREFIX}{lock_id}"


def list_locks(store: Store, envelope: Envelope, notice: Callable[[str], None]) -> list[LockInfo]:
    """Every readable lock in the repository; unreadable ones are reported and ignored."""
    locks: list[LockInfo] = []
    for info in store.list(LOCKS_PREFIX):
        lock_id = info.name.removeprefix(LOCKS_PREFIX)
        try:
            doc = json.loads(envelope.open(store.get(info.name), LOCK_AAD))
            locks.append(LockInfo.from_json(lock_id, doc, info.mtime))
        except ObjectNotFound:
            continue  # released while we listed
        except (IntegrityError, ValueError, KeyError, TypeError):
            notice(f"ignoring unreadable lock {lock_id[:8]}")
    return locks


class RepositoryLock:
    """A held lock. Use `acquire` (or the context manager); `release` always in the end.

    After `acquire`, `store_time` is the store's clock at the moment the lock was taken (the
    modification time of the lock object, or the local clock where the store reports none):
    prune measures the age of packs against it.
    """

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
        on_full: Callable[[], bool] | None = None,
        retry_s: float = 0.0,
    ) -> None:
        self._store = store
        self.retry_s = retry_s
        """Seconds `acquire` tries again while a conflicting lock is held (0: fail at once)."""
        self._on_full = on_full
        """Called when the store is too full to write the lock; if it made room (True), the
        lock is written again once."""
        self._envelope = envelope
        self._clock = clock
        self.exclusive = exclusive
        self.operation = operation
        self.lease_s = lease_s
        self._notice = notice
        self._me = Holder.current()
        self._created = clock.now()
        self._name: str | None = None
        self.store_time: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def _conflicts(self, others: list[LockInfo], store_now: datetime | None) -> list[LockInfo]:
        live: list[LockInfo] = []
        for lk in others:
            if self._name and lk.id == self._name.removeprefix(LOCKS_PREFIX):
                continue
            reason = lk.stale_reason(store_now, self._clock.now(), self._me)
            if reason is not None:
                self._store.delete(lock_name(lk.id))
                self._notice(f"removed stale lock of PID {lk.pid} on {lk.host}: {reason}")
                continue
            if self.exclusive or lk.exclusive:
                live.append(lk)
        return live

    def _write(self) -> str:
        info = LockInfo(
            id="",
            host=self._me.host,
            pid=self._me.pid,
            boot_id=self._me.boot_id,
            pid_ns=self._me.pid_ns,
            username=current_username(),
            exclusive=self.exclusive,
            operation=self.operation,
            created=self._created,
            refreshed=self._clock.now(),
            lease_s=self.lease_s,
        )
        name = lock_name(secrets.token_hex(16))
        self._store.put(name, self._envelope.seal(json.dumps(info.to_json()).encode(), LOCK_AAD))
        return name

    def acquire(self, retry_s: float | None = None) -> None:
        """Take the lock or raise `RepositoryLocked` naming the holder, after trying again
        for up to ``retry_s`` seconds (default: the lock's own `retry_s`) with pauses of 1 s
        growing to 10 s, and a notice at the first wait.

        The lock is written first and the others are judged after: its modification time in
        the store is the store's "now" against which their leases run, and two processes
        writing at the same moment both see each other (and both back off)."""
        import time

        wait = self.retry_s if retry_s is None else retry_s
        deadline = time.monotonic() + wait
        pause = 1.0
        while True:
            try:
                self._acquire_once()
                return
            except RepositoryLocked as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    if wait > 0:
                        raise RepositoryLocked(
                            f"{exc.message} (still, after waiting {wait:g} s)", hint=exc.hint
                        ) from None
                    raise
                if pause == 1.0:
                    self._notice(f"{exc.message}; waiting up to {wait:g} s for it (--retry-lock)")
                time.sleep(min(pause, left))
                pause = min(pause * 2, _RETRY_MAX_PAUSE_S)

    def _acquire_once(self) -> None:
        try:
            self._name = self._write()
        except StoreFull:
            if self._on_full is None or not self._on_full():
                raise
            self._name = self._write()
        locks = list_locks(self._store, self._envelope, self._notice)
        mine = next((lk for lk in locks if self._name == lock_name(lk.id)), None)
        store_now = mine.stored if mine is not None else None
        conflicts = self._conflicts(locks, store_now)
        if conflicts:
            self._store.delete(self._name)
            self._name = None
            raise RepositoryLocked(
                f"repository is {conflicts[0].describe()}",
                hint="wait for it to finish, or run `stackvault unlock` if that process is gone",
            )
        self.store_time = store_now or self._clock.now()
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
