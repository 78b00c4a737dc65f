"""Object Lock conformance (store layer tests): the retention part of the `Store` contract
(FORMAT.md §11), kept alike by the in-memory simulation and by `S3Store` on the real S3 server
(SeaweedFS, a bucket with Object Lock enabled), in both retention modes.

The contract: after `configure_retention`, every object put (``locks/`` excepted) reads back
with a retention date ``days`` after the write; `delete` before that date raises
`ObjectLocked` and leaves the object; `set_retention` moves the date later and never earlier;
a store that cannot retain refuses `configure_retention`.

To check a new backend, append a factory to ``LOCK_FACTORIES``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stackvault.errors import ObjectLocked, ObjectNotFound, StoreError
from stackvault.store.base import Retention, Store
from stackvault.store.local import LocalStore
from stackvault.store.memory import MemoryStore
from stackvault.store.s3 import S3Store
from support.s3fixtures import purge_bucket, unique_bucket_name
from support.seaweed import SeaweedServer

DAYS = 1
SLACK = timedelta(seconds=2)
"""S3 keeps retention dates to the second, and the server's clock is not ours."""


def _memory(request: pytest.FixtureRequest) -> Store:
    return MemoryStore(object_lock=True)


def _s3(request: pytest.FixtureRequest) -> Store:
    request.getfixturevalue("s3_env")
    bucket: str = request.getfixturevalue("lock_bucket")
    prefix = f"t-{secrets.token_hex(6)}/repo"
    return S3Store.from_url(f"s3://{bucket}/{prefix}?retries=3&retry-time=10")


LOCK_FACTORIES: list[tuple[str, Callable[[pytest.FixtureRequest], Store]]] = [
    ("memory", _memory),
    ("s3", _s3),
]


@pytest.fixture(scope="module")
def lock_bucket(s3_server: SeaweedServer) -> Iterator[str]:
    """One bucket with Object Lock (hence versioned, no default retention) for the module:
    a new bucket costs ~0.7 s on its first write. Versions under compliance retention stay
    until the server is stopped at the end of the session."""
    name = s3_server.create_bucket(unique_bucket_name("lock-conformance", "tl"), object_lock=True)
    yield name
    purge_bucket(s3_server.client(), name, bypass_governance=True)


@pytest.fixture(
    params=[
        pytest.param((n, f, m), id=f"{n}-{m}", marks=pytest.mark.s3 if n == "s3" else ())
        for n, f in LOCK_FACTORIES
        for m in ("governance", "compliance")
    ],
)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A store with Object Lock whose puts carry ``DAYS`` of retention in one mode."""
    _name, factory, mode = request.param
    s: Store = factory(request)
    s.configure_retention(Retention(mode, DAYS))
    yield s
    s.close()


def _written_between(store: Store, name: str, before: datetime, after: datetime) -> datetime:
    until = store.retention(name)
    assert until is not None, f"{name} carries no retention"
    assert until.tzinfo is not None
    lower = before + timedelta(days=DAYS) - SLACK
    upper = after + timedelta(days=DAYS) + SLACK
    assert lower <= until <= upper, (name, until)
    return until


def test_every_object_but_locks_reads_back_its_retention(store: Store) -> None:
    assert store.capabilities().object_lock
    names = ["config", "keys/k1", "data/ab/ab01", "index/i1", "snapshots/s1"]
    before = datetime.now(UTC)
    for name in names:
        store.put(name, b"retained " + name.encode())
    store.put_parts("data/cd/cd01", [b"parts ", b"too"])
    after = datetime.now(UTC)
    for name in [*names, "data/cd/cd01"]:
        _written_between(store, name, before, after)
    store.put("locks/l1", b"lock")
    assert store.retention("locks/l1") is None


def test_delete_before_the_retention_date_is_refused_and_keeps_the_object(store: Store) -> None:
    store.put("data/ab/pack", b"pack bytes")
    with pytest.raises(ObjectLocked) as refused:
        store.delete("data/ab/pack")
    assert "data/ab/pack" in str(refused.value)
    assert store.get("data/ab/pack") == b"pack bytes"
    assert [i.name for i in store.list("data/")] == ["data/ab/pack"]


def test_an_overwritten_object_stays_retained(store: Store) -> None:
    """An overwrite must not be a way around the lock (S3 keeps the old version, retained)."""
    store.put("snapshots/s1", b"first")
    store.put("snapshots/s1", b"second")
    with pytest.raises(ObjectLocked):
        store.delete("snapshots/s1")
    assert store.exists("snapshots/s1")


def test_locks_stay_deletable(store: Store) -> None:
    store.put("locks/l1", b"lock")
    store.delete("locks/l1")
    assert not store.exists("locks/l1")
    with pytest.raises(ObjectNotFound):
        store.get("locks/l1")
    assert list(store.list("locks/")) == []


def test_set_retention_extends(store: Store) -> None:
    store.put("index/i1", b"index")
    first = _written_between(store, "index/i1", datetime.now(UTC) - SLACK, datetime.now(UTC))
    later = (first + timedelta(days=3)).replace(microsecond=0)
    store.set_retention("index/i1", later)
    assert store.retention("index/i1") == later
    with pytest.raises(ObjectLocked):
        store.delete("index/i1")
    assert store.get("index/i1") == b"index"


def test_set_retention_never_shortens(store: Store) -> None:
    """An earlier date leaves the retention as it was. The in-memory store ignores it; S3
    refuses the request (403), which reaches the caller as a `StoreError`."""
    store.put("config", b"config")
    later = (datetime.now(UTC) + timedelta(days=DAYS + 2)).replace(microsecond=0)
    store.set_retention("config", later)
    for earlier in (later - timedelta(days=1), datetime.now(UTC) + timedelta(hours=1)):
        try:
            store.set_retention("config", earlier.replace(microsecond=0))
        except StoreError:
            pass
        assert store.retention("config") == later
    with pytest.raises(ObjectLocked):
        store.delete("config")


def test_set_retention_of_a_missing_object_raises_store_error(store: Store) -> None:
    with pytest.raises(StoreError):
        store.set_retention("data/ab/absent", datetime.now(UTC) + timedelta(days=2))
    with pytest.raises(ObjectNotFound):
        store.retention("data/ab/absent")


@pytest.mark.parametrize(
    "factory",
    [pytest.param(f, id=n, marks=pytest.mark.s3 if n == "s3" else ()) for n, f in LOCK_FACTORIES],
)
def test_without_configured_retention_objects_are_deletable(
    factory: Callable[[pytest.FixtureRequest], Store], request: pytest.FixtureRequest
) -> None:
    """Object Lock on the bucket alone retains nothing (no default retention): a repository
    without ``object_lock`` in its config deletes normally there."""
    store = factory(request)
    store.configure_retention(None)
    store.put("data/ab/free", b"free")
    assert store.retention("data/ab/free") is None
    store.delete("data/ab/free")
    assert not store.exists("data/ab/free")
    store.close()


def _plain_s3(tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    request.getfixturevalue("s3_env")
    server: SeaweedServer = request.getfixturevalue("s3_server")
    bucket = server.create_bucket(unique_bucket_name("lock-refusal"))
    return S3Store.from_url(f"s3://{bucket}/repo?retries=3&retry-time=10")


def _local(tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    store = LocalStore(tmp_path / "repo")
    store.ensure_root()
    return store


def _plain_memory(tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    return MemoryStore()


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(_local, id="local"),
        pytest.param(_plain_memory, id="memory"),
        pytest.param(_plain_s3, id="s3-plain-bucket", marks=pytest.mark.s3),
    ],
)
def test_a_store_that_cannot_retain_refuses_retention(
    factory: Callable[[Path, pytest.FixtureRequest], Store],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    store = factory(tmp_path, request)
    assert not store.capabilities().object_lock
    with pytest.raises(StoreError, match="Object Lock"):
        store.configure_retention(Retention("compliance", DAYS))
    store.configure_retention(None)
    store.put("config", b"c")
    assert store.retention("config") is None
    store.delete("config")
    store.close()
