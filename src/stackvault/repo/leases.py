"""Job leases in the repository (repository layer): ``leases/<job>/<slot>-<attempt>``, which
daemon runs which scheduled run of a job (FORMAT.md §15).

Several ``stackvault serve`` processes — one per node of a cluster, or a standby — may run
the same jobs against the same repositories. Each scheduled run of a job (its cron **slot**
and its **attempt**: 1, then 2 for the first retry, ...) is claimed by creating its lease
object with `Store.put_new`: the store makes that atomic (an ``O_EXCL``-style link on a
local file system, a conditional ``If-None-Match: *`` PUT on S3), so of two daemons that
reach the slot at once exactly one creates it and runs the slot; the other is refused. The
claim does not depend on listing, so S3's listing delays cannot break it.

The holder then rewrites its lease (`write_lease`) every few seconds — the **heartbeat** —
and once more at the end with the run's result (``state: done``). A lease is **live** while
its holder runs: its state is ``running`` and it was rewritten within its ``lease_s``,
measured like a lock's (FORMAT.md §9) by the store's clock, or, when the holder is a process
of this very host and PID namespace, while that process exists. A lease that is ``running``
but no longer live belonged to a holder that was killed or lost its host; the next daemon
to claim a run of that job marks it ``abandoned`` (and the ops layer records the run as
failed).

Lease objects hold no data, so they are coordination objects like locks (`is_mutable`): an
append-only store lets a client replace and delete them, and Object Lock never retains them.
They are sealed under the repository's key with their own associated data, `LEASE_AAD`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from stackvault.crypto.envelope import Envelope
from stackvault.errors import IntegrityError, ObjectExists, ObjectNotFound
from stackvault.records.run import format_time, valid_job_name
from stackvault.repo.lock import Holder, process_gone
from stackvault.store.base import Store

LEASES_PREFIX = "leases/"
LEASE_AAD = b"sv1:lease"
LEASE_FORMAT = 1

LeaseState = Literal["running", "done", "abandoned"]
LEASE_STATES: tuple[LeaseState, ...] = ("running", "done", "abandoned")


def lease_name(job: str, slot: datetime, attempt: int) -> str:
    """The object of the lease of ``job``'s run for ``slot`` (a cron time), ``attempt``."""
    if not valid_job_name(job):
        raise ValueError(f"invalid job name {job!r}")
    stamp = slot.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{LEASES_PREFIX}{job}/{stamp}-{attempt}"


@dataclass(frozen=True)
class Lease:
    """What a lease object says, and (not part of its content) its name and the store's
    modification time of it."""

    job: str
    slot: datetime
    attempt: int
    run_id: str
    """The id the run record of this run carries (`RunRecord.id`)."""
    trigger: str
    holder: Holder
    acquired: datetime
    refreshed: datetime
    lease_s: int
    """How long the lease stays live without a heartbeat."""
    state: LeaseState = "running"
    result: str | None = None
    """The run's result once ``done`` (None: the run was not started, e.g. it backed off)."""
    note: str = ""
    """Why it ended as it did (who took it over, why it backed off)."""
    name: str = ""
    stored: datetime | None = None

    @property
    def object_name(self) -> str:
        return self.name or lease_name(self.job, self.slot, self.attempt)

    def describe_holder(self) -> str:
        return f"PID {self.holder.pid} on {self.holder.host}"

    def dead_reason(
        self, store_now: datetime | None, local_now: datetime, me: Holder
    ) -> str | None:
        """Why this ``running`` lease's holder is judged gone, or None while it may be alive
        (the rules of `stackvault.repo.lock.LockInfo.stale_reason`)."""
        if me.same_pid_space(self.holder) and process_gone(self.holder.pid):
            return f"process {self.holder.pid} on this host no longer exists"
        lease = timedelta(seconds=self.lease_s)
        if store_now is not None and self.stored is not None:
            age = store_now - self.stored
            if age > lease:
                return (
                    f"no heartbeat for {int(age.total_seconds())} s by the store's clock "
                    f"(lease {self.lease_s} s)"
                )
            return None
        if local_now > self.refreshed + lease:
            return f"no heartbeat since {format_time(self.refreshed)} (lease {self.lease_s} s)"
        return None

    def to_json(self) -> dict[str, object]:
        return {
            "format": LEASE_FORMAT,
            "job": self.job,
            "slot": format_time(self.slot),
            "attempt": self.attempt,
            "run_id": self.run_id,
            "trigger": self.trigger,
            "host": self.holder.host,
            "pid": self.holder.pid,
            "boot_id": self.holder.boot_id,
            "pid_ns": self.holder.pid_ns,
            "acquired": format_time(self.acquired),
            "refreshed": format_time(self.refreshed),
            "lease_s": self.lease_s,
            "state": self.state,
            "result": self.result,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, doc: object, name: str, stored: datetime | None) -> Lease:
        """Parse a lease object's content; `ValueError` (or `KeyError`/`TypeError`) if it
        is not one."""
        if not isinstance(doc, dict):
            raise ValueError("a lease is a JSON object")
        state = str(doc["state"])
        if state not in LEASE_STATES:
            raise ValueError(f"unknown lease state {state!r}")
        result = doc.get("result")
        return cls(
            job=str(doc["job"]),
            slot=_time(doc["slot"]),
            attempt=int(doc["attempt"]),
            run_id=str(doc["run_id"]),
            trigger=str(doc["trigger"]),
            holder=Holder(
                str(doc["host"]),
                int(doc["pid"]),
                str(doc.get("boot_id", "")),
                str(doc.get("pid_ns", "")),
            ),
            acquired=_time(doc["acquired"]),
            refreshed=_time(doc["refreshed"]),
            lease_s=int(doc["lease_s"]),
            state=state,  # checked against LEASE_STATES above
            result=None if result is None else str(result),
            note=str(doc.get("note", "")),
            name=name,
            stored=stored,
        )


def _time(value: object) -> datetime:
    when = datetime.fromisoformat(str(value))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _seal(envelope: Envelope, lease: Lease) -> bytes:
    return envelope.seal(json.dumps(lease.to_json(), sort_keys=True).encode(), LEASE_AAD)


def claim_lease(store: Store, envelope: Envelope, lease: Lease) -> Lease | None:
    """Create ``lease``'s object; returns it with its name and store time, or None if the
    object exists already (another process claimed this run first)."""
    name = lease.object_name
    try:
        store.put_new(name, _seal(envelope, lease))
    except ObjectExists:
        return None
    return replace(lease, name=name, stored=_mtime(store, name))


def write_lease(store: Store, envelope: Envelope, lease: Lease) -> Lease:
    """Replace ``lease``'s object (a heartbeat, or its final state); returns it with its new
    store time."""
    name = lease.object_name
    store.put(name, _seal(envelope, lease))
    return replace(lease, name=name, stored=_mtime(store, name))


def _mtime(store: Store, name: str) -> datetime | None:
    try:
        return store.stat(name).mtime
    except ObjectNotFound:
        return None


def read_lease(store: Store, envelope: Envelope, name: str) -> Lease | None:
    """The lease ``name``, or None if it is gone. `IntegrityError` if it is damaged."""
    try:
        info = store.stat(name)
        data = store.get(name)
    except ObjectNotFound:
        return None
    try:
        return Lease.from_json(json.loads(envelope.open(data, LEASE_AAD)), name, info.mtime)
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"lease {name} is not readable: {exc}") from exc


def job_leases(
    store: Store, envelope: Envelope, job: str, notice: Callable[[str], None]
) -> list[Lease]:
    """Every readable lease of ``job``, oldest slot first; unreadable ones are reported and
    ignored (they coordinate nothing)."""
    found: list[Lease] = []
    for info in store.list(f"{LEASES_PREFIX}{job}/"):
        try:
            lease = read_lease(store, envelope, info.name)
        except IntegrityError as exc:
            notice(f"ignoring {exc}")
            continue
        if lease is not None:
            found.append(lease)
    found.sort(key=lambda lease: (lease.slot, lease.attempt))
    return found


def delete_lease(store: Store, name: str) -> None:
    """Delete a lease object (gone already is fine)."""
    try:
        store.delete(name)
    except ObjectNotFound:
        pass
