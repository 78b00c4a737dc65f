"""Run records in the repository (repository layer): ``runs/<id>``, the history of the jobs
whose runs touched this repository (FORMAT.md §14).

A record (`stackvault.records.run.RunRecord`) is sealed like a snapshot — an envelope under
the repository's key with its own associated data, `RUN_AAD`, so it cannot be passed off as a
snapshot, a lock or an index — and named by the unkeyed BLAKE3 of its stored bytes, so damage
and renaming are found without the password. It is written with `Store.put_new` (created,
never replaced): an append-only store accepts it, and under Object Lock it gets the retention
every object but ``locks/`` gets.

What the other operations do with them:

* ``check`` reads and authenticates every record; a damaged one is an error (kind ``run``)
  like a damaged snapshot, a record of a newer format a notice. Nothing depends on a record,
  so no repair is called for: the object may be deleted.
* ``copy`` does not copy them: each repository holds its own record of each run that touched
  it (the same run id in each).
* ``prune`` never reads them (they reference no blob) and does not extend their Object Lock
  retention (nothing a snapshot needs).
* `expire_runs` deletes old ones by a `RunKeep` rule; forget and prune may call it. It is the
  only deletion, refused on an append-only store before it deletes anything.

This module does not know `Repository` (which calls it): it works on a store and an envelope.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from stackvault.crypto.envelope import Envelope
from stackvault.errors import (
    IntegrityError,
    ObjectLocked,
    ObjectNotFound,
    UnsupportedFormat,
    UsageError,
)
from stackvault.records.run import RunRecord, UnsupportedRunFormat, valid_job_name
from stackvault.redact import redact
from stackvault.repo.appendonly import refuse_on_append_only_store
from stackvault.repo.pack import storage_id
from stackvault.store.base import Store

RUNS_PREFIX = "runs/"
RUN_AAD = b"sv1:run"
UNKNOWN_DATE = "an unknown date"
"""What `RunExpiry.locked` holds for a record whose retention date the store hides."""


@dataclass(frozen=True)
class StoredRun:
    """A run record as found in the repository: its object name and its content."""

    name: str
    """``runs/<hex storage id>``."""
    record: RunRecord


@dataclass(frozen=True)
class RunKeep:
    """Which run records `expire_runs` keeps: for each job, its `last` newest records (by
    start time) and every record that started less than `within` before now. Everything
    else is deleted. Damaged records and records of a newer format are never deleted by it
    (`check` reports the former)."""

    last: int = 30
    within: timedelta = timedelta(days=90)

    def __post_init__(self) -> None:
        if self.last < 0 or self.within < timedelta(0):
            raise UsageError("run records to keep: counts and ages cannot be negative")


@dataclass(frozen=True)
class RunExpiry:
    """The outcome of `expire_runs`."""

    removed: list[str] = field(default_factory=list)
    """Names of the records deleted (or, in a dry run, that would be)."""
    locked: dict[str, str] = field(default_factory=dict)
    """Name → when its Object Lock retention ends (ISO 8601, seconds, or `UNKNOWN_DATE`):
    records that stay for now; a later expiry removes them."""
    kept: int = 0
    """Readable records the rule keeps."""


def seal_run(envelope: Envelope, record: RunRecord) -> tuple[str, bytes]:
    """The object name and stored bytes of a record. Refuses (`UsageError`) a record that
    could leak a secret or that no reader would accept: a location that still holds
    credentials, an invalid job name."""
    if not valid_job_name(record.job):
        raise UsageError(f"{record.job!r} is not a job name", hint="use letters, digits, . _ -")
    for step in record.steps:
        if step.location is not None and redact(step.location) != step.location:
            raise UsageError(
                f"step {step.name} of run {record.id[:8]} names a location with credentials",
                hint="pass the location through stackvault.redact.redact first",
            )
    plain = json.dumps(record.to_json(), ensure_ascii=True, separators=(",", ":")).encode()
    RunRecord.from_json(json.loads(plain))  # what a reader will refuse is never written
    data = envelope.seal(plain, RUN_AAD)
    return f"{RUNS_PREFIX}{storage_id(data).hex()}", data


def save_run(store: Store, envelope: Envelope, record: RunRecord) -> str:
    """Write a record (create-only: `Store.put_new`); returns its object name. Writing the
    same record twice writes two objects (each seal has its own nonce): readers that count
    runs go by `RunRecord.id`."""
    name, data = seal_run(envelope, record)
    store.put_new(name, data)
    return name


def open_run(envelope: Envelope, name: str, data: bytes) -> RunRecord:
    """The record stored under ``name``. Raises `IntegrityError` for a damaged record (bytes
    that do not match the name, failed authentication, malformed JSON) and `UnsupportedFormat`
    for one of a newer format."""
    short = name.removeprefix(RUNS_PREFIX)[:8]
    if storage_id(data).hex() != name.removeprefix(RUNS_PREFIX):
        raise IntegrityError(f"run record {short} does not match its name (damaged)")
    try:
        plain = envelope.open(data, RUN_AAD)
    except IntegrityError as exc:
        raise IntegrityError(f"run record {short} failed authentication") from exc
    try:
        return RunRecord.from_json(json.loads(plain))
    except UnsupportedRunFormat as exc:
        raise UnsupportedFormat(f"run record {short}: {exc}") from exc
    except ValueError as exc:
        raise IntegrityError(f"run record {short} is malformed: {exc}") from exc


def load_run(store: Store, envelope: Envelope, name: str) -> RunRecord:
    """`open_run` of the object ``name`` (``runs/<id>`` or the bare id)."""
    name = name if name.startswith(RUNS_PREFIX) else RUNS_PREFIX + name
    return open_run(envelope, name, store.get(name))


def run_names(store: Store) -> list[str]:
    """The names of every run record object, sorted."""
    return sorted(info.name for info in store.list(RUNS_PREFIX))


def read_runs(
    store: Store,
    envelope: Envelope,
    *,
    workers: int,
    notice: Callable[[str], None],
    on_error: Callable[[str, IntegrityError], None] | None = None,
    job: str | None = None,
) -> list[StoredRun]:
    """Every readable record (of ``job`` if given), oldest first (start time, then id), read
    on up to ``workers`` threads.

    A damaged record is passed to ``on_error`` if given (`check`), else skipped with a
    warning; a record of a newer format is skipped with a notice. A record that vanishes
    while the listing is read (a concurrent expiry) is left out silently."""

    def fetch(name: str) -> RunRecord | IntegrityError | UnsupportedFormat | None:
        try:
            return load_run(store, envelope, name)
        except ObjectNotFound:
            return None
        except (IntegrityError, UnsupportedFormat) as exc:
            return exc

    names = run_names(store)
    if not names:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(names)))) as pool:
        loaded = list(pool.map(fetch, names))
    out: list[StoredRun] = []
    for name, got in zip(names, loaded, strict=True):
        if got is None:
            continue
        if isinstance(got, RunRecord):
            if job is None or got.job == job:
                out.append(StoredRun(name, got))
        elif isinstance(got, UnsupportedFormat):
            notice(f"notice: skipping {got}")
        elif on_error is not None:
            on_error(name, got)
        else:
            notice(
                f"warning: skipping damaged run record {name.removeprefix(RUNS_PREFIX)[:8]} "
                f"({got}); run `stackvault check`"
            )
    out.sort(key=lambda s: (s.record.started, s.record.id, s.name))
    return out


def runs_to_expire(runs: Iterable[StoredRun], keep: RunKeep, now: datetime) -> list[StoredRun]:
    """The records `keep` does not keep (see `RunKeep`), oldest first."""
    by_job: dict[str, list[StoredRun]] = {}
    for run in runs:
        by_job.setdefault(run.record.job, []).append(run)
    doomed: list[StoredRun] = []
    for runs_of_job in by_job.values():
        newest_first = sorted(
            runs_of_job, key=lambda s: (s.record.started, s.record.id, s.name), reverse=True
        )
        for position, run in enumerate(newest_first):
            if position < keep.last or now - run.record.started < keep.within:
                continue
            doomed.append(run)
    doomed.sort(key=lambda s: (s.record.started, s.record.id, s.name))
    return doomed


def expire_runs(
    store: Store,
    runs: list[StoredRun],
    keep: RunKeep,
    now: datetime,
    *,
    notice: Callable[[str], None],
    dry_run: bool = False,
    command: str = "forget",
) -> RunExpiry:
    """Delete the records of ``runs`` (every readable record: `read_runs` without ``job``)
    that ``keep`` does not keep. Refuses (`AppendOnlyRefused`) on an append-only store before
    deleting anything; a dry run only shows, so it is allowed there (as prune's is). A record
    under Object Lock retention stays, ``notice`` is told until when, and it is listed in
    `RunExpiry.locked`. Needs no exclusive lock: a record written meanwhile is the newest of
    its job, which the rule keeps. ``command`` names the operation for the refusal."""
    if not dry_run:
        refuse_on_append_only_store(store, command, "deletes old run records")
    doomed = runs_to_expire(runs, keep, now)
    result = RunExpiry(kept=len(runs) - len(doomed))
    for run in doomed:
        if dry_run:
            result.removed.append(run.name)
            continue
        try:
            store.delete(run.name)
        except ObjectLocked:
            until = store.retention(run.name)
            when = until.isoformat(timespec="seconds") if until else UNKNOWN_DATE
            result.locked[run.name] = when
            notice(
                f"run record {run.name.removeprefix(RUNS_PREFIX)[:8]} is under Object Lock "
                f"retention until {when}; it stays until then"
            )
            continue
        result.removed.append(run.name)
    return result
