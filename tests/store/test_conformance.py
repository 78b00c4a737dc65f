"""Store conformance suite (store layer tests): every backend keeps the `Store` contract.

To check a new backend, append a factory to ``STORE_FACTORIES``.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stackvault.errors import ObjectExists, ObjectNotFound, StoreError
from stackvault.store.base import Capabilities, ObjectInfo, Store
from stackvault.store.faulty import FaultyStore
from stackvault.store.local import LocalStore
from stackvault.store.memory import MemoryStore
from stackvault.store.s3 import S3Store


def _local(tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    store = LocalStore(tmp_path / "repo")
    store.ensure_root()
    return store


def _memory(tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    return MemoryStore()


def _faulty_memory(tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    return FaultyStore(MemoryStore())


_S3_BUCKETS: dict[tuple[int, bool], str] = {}


def _s3(object_lock: bool) -> Callable[[Path, pytest.FixtureRequest], Store]:
    """A store on the real S3 server (SeaweedFS) started by the test session, below a prefix
    of its own in a bucket shared by the module (a new bucket costs ~0.7 s on first write);
    ``object_lock`` gives a versioned bucket with Object Lock (deletes remove versions)."""

    def make(tmp_path: Path, request: pytest.FixtureRequest) -> Store:
        request.getfixturevalue("s3_env")
        server = request.getfixturevalue("s3_server")
        key = (id(server), object_lock)
        if key not in _S3_BUCKETS:
            name = f"conformance-{'lock' if object_lock else 'plain'}-{secrets.token_hex(4)}"
            _S3_BUCKETS[key] = server.create_bucket(name, object_lock=object_lock)
        prefix = f"t-{secrets.token_hex(6)}/repo"
        return S3Store.from_url(f"s3://{_S3_BUCKETS[key]}/{prefix}?retries=3&retry-time=10")

    return make


STORE_FACTORIES: list[tuple[str, Callable[[Path, pytest.FixtureRequest], Store]]] = [
    ("local", _local),
    ("memory", _memory),
    ("faulty-memory", _faulty_memory),
    ("s3", _s3(object_lock=False)),
    ("s3-versioned", _s3(object_lock=True)),
]

BAD_NAMES = [
    "../x",
    "/abs",
    "a//b",
    ".hidden",
    "",
    "a/",
    "a/../b",
    "data/.tmp-1",
    "x y",
    "a\\b",
    "a\n",
]


@pytest.fixture(
    params=[
        pytest.param(f, id=n, marks=pytest.mark.s3 if n.startswith("s3") else ())
        for n, f in STORE_FACTORIES
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = request.param(tmp_path, request)
    yield s
    s.close()


def _names(infos: Iterator[ObjectInfo]) -> dict[str, int]:
    return {i.name: i.size for i in infos}


# --- put / get ---------------------------------------------------------------------------------


def test_round_trip_of_every_buffer_type(store: Store) -> None:
    store.put("config", b"config bytes")
    store.put("keys/k1", bytearray(b"key file"))
    store.put("data/ab/ab01", memoryview(b"xxpack bytesxx")[2:-2])
    assert store.get("config") == b"config bytes"
    assert store.get("keys/k1") == b"key file"
    assert store.get("data/ab/ab01") == b"pack bytes"
    assert isinstance(store.get("config"), bytes)


def test_empty_object_exists_with_size_zero(store: Store) -> None:
    store.put("locks/empty", b"")
    assert store.get("locks/empty") == b""
    assert store.stat("locks/empty") == ObjectInfo("locks/empty", 0)
    assert _names(store.list("locks/")) == {"locks/empty": 0}


def test_large_object_round_trip(store: Store) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    store.put("data/ff/big", data)
    assert store.stat("data/ff/big").size == len(data)
    assert store.get("data/ff/big") == data


def test_put_copies_the_callers_buffer(store: Store) -> None:
    buf = bytearray(b"original")
    store.put("index/i1", buf)
    buf[:] = b"mutated!"
    assert store.get("index/i1") == b"original"


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, 10, bytes(range(10))),  # start
        (100, 50, bytes(range(100, 150))),  # middle
        (240, None, bytes(range(240, 256))),  # to the end
        (250, 100, bytes(range(250, 256))),  # crosses the end: short read
        (256, 10, b""),  # at the end
        (1000, None, b""),  # past the end
        (10, 0, b""),  # zero length
        (0, None, bytes(range(256))),  # everything
    ],
)
def test_ranged_get(store: Store, offset: int, length: int | None, expected: bytes) -> None:
    store.put("data/00/range", bytes(range(256)))
    assert store.get("data/00/range", offset, length) == expected


def test_negative_range_is_rejected(store: Store) -> None:
    store.put("config", b"abc")
    with pytest.raises(StoreError):
        store.get("config", -1, 2)
    with pytest.raises(StoreError):
        store.get("config", 0, -2)


def test_overwrite_replaces_whole_object(store: Store) -> None:
    store.put("snapshots/s1", b"a much longer first version")
    store.put("snapshots/s1", b"short")
    assert store.get("snapshots/s1") == b"short"
    assert store.stat("snapshots/s1").size == 5
    assert _names(store.list("snapshots/")) == {"snapshots/s1": 5}


# --- missing objects, delete, exists -----------------------------------------------------------


def test_get_and_stat_of_missing_object_raise_object_not_found(store: Store) -> None:
    store.put("data/ab/present", b"x")
    for name in ("data/ab/absent", "data/zz/absent", "nothing", "data", "data/ab"):
        with pytest.raises(ObjectNotFound):
            store.get(name)
        with pytest.raises(ObjectNotFound):
            store.get(name, 0, 0)
        with pytest.raises(ObjectNotFound):
            store.stat(name)
        assert not store.exists(name)


def test_object_not_found_message_names_object(store: Store) -> None:
    with pytest.raises(ObjectNotFound) as info:
        store.get("index/0123abcd")
    assert "index/0123abcd" in str(info.value)


def test_delete_is_idempotent(store: Store) -> None:
    store.put("locks/l1", b"lock")
    store.put("locks/l2", b"other")
    store.delete("locks/l1")
    assert not store.exists("locks/l1")
    with pytest.raises(ObjectNotFound):
        store.get("locks/l1")
    store.delete("locks/l1")
    store.delete("locks/never-existed")
    store.delete("nowhere/at/all")
    assert _names(store.list()) == {"locks/l2": 5}


def test_exists(store: Store) -> None:
    assert not store.exists("keys/k")
    store.put("keys/k", b"k")
    assert store.exists("keys/k")
    assert not store.exists("keys")  # a "directory" is not an object
    store.delete("keys/k")
    assert not store.exists("keys/k")


# --- list --------------------------------------------------------------------------------------

OBJECTS = {
    "config": 6,
    "keys/k1": 2,
    "data/ab/ab01": 100,
    "data/ab/ab02": 0,
    "data/cd/cd01": 7,
    "index/i1": 3,
    "snapshots/abc": 1,
    "snapshots/abd": 2,
    "snapshots/bcd": 3,
    "deep/a/b/c/d": 4,
}


@pytest.fixture
def populated(store: Store) -> Store:
    for name, size in OBJECTS.items():
        store.put(name, b"z" * size)
    return store


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "data/",
        "data",
        "dat",
        "data/a",
        "data/ab/",
        "data/ab/ab01",
        "snapshots/ab",
        "snapshots/",
        "deep/",
        "deep/a/b",
        "config",
        "nope/",
        "nope",
        "../",
        "a//",
    ],
)
def test_list_by_prefix_with_exact_sizes(populated: Store, prefix: str) -> None:
    expected = {n: s for n, s in OBJECTS.items() if n.startswith(prefix)}
    infos = list(populated.list(prefix))
    assert len(infos) == len(expected)  # no duplicates
    assert _names(iter(infos)) == expected
    assert all(isinstance(i, ObjectInfo) for i in infos)


def test_list_of_empty_store_is_empty(store: Store) -> None:
    assert list(store.list()) == []
    assert list(store.list("data/")) == []


def test_list_reflects_deletes(populated: Store) -> None:
    populated.delete("data/ab/ab01")
    assert _names(populated.list("data/")) == {"data/ab/ab02": 0, "data/cd/cd01": 7}


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_rejected_everywhere(store: Store, name: str) -> None:
    for op in (
        lambda: store.put(name, b"x"),
        lambda: store.put_new(name, b"x"),
        lambda: store.get(name),
        lambda: store.stat(name),
        lambda: store.delete(name),
    ):
        with pytest.raises(StoreError, match="invalid object name") as info:
            op()
        assert not isinstance(info.value, ObjectNotFound)
    assert list(store.list()) == []


# --- concurrency -------------------------------------------------------------------------------


def test_concurrent_puts_and_gets_from_eight_threads(store: Store) -> None:
    shared = {f"data/{i:02x}/shared{i}": os.urandom(1000 + i) for i in range(16)}
    for name, data in shared.items():
        store.put(name, data)
    start = threading.Barrier(8)

    def worker(t: int) -> int:
        start.wait()
        mine = {f"data/{t:02x}/t{t}-{i}": os.urandom(500 + 37 * i) for i in range(20)}
        for name, data in mine.items():
            store.put(name, data)
            for other, expected in shared.items():
                assert store.get(other, 10, 100) == expected[10:110]
        for name, data in mine.items():
            assert store.get(name) == data
        return len(mine)

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(worker, range(8))) == 160
    assert len(list(store.list("data/"))) == 160 + 16


def test_concurrent_overwrites_of_one_name_are_never_torn(store: Store) -> None:
    versions = [bytes([v]) * 200_000 for v in range(8)]
    store.put("index/hot", versions[0])
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        start.wait()
        for _ in range(10):
            store.put("index/hot", versions[t])
            assert store.get("index/hot") in versions
            # Temporary or partial objects must never show up, even mid-write.
            assert _names(store.list("index/")) == {"index/hot": 200_000}

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert store.get("index/hot") in versions
    assert _names(store.list("index/")) == {"index/hot": 200_000}


# --- create-only puts --------------------------------------------------------------------------


def test_put_new_creates_once_and_never_replaces(store: Store) -> None:
    store.put_new("config", b"first")
    assert store.get("config") == b"first"
    with pytest.raises(ObjectExists, match="config"):
        store.put_new("config", b"second")
    assert store.get("config") == b"first"
    store.put("data/ab/x", b"plain")
    with pytest.raises(ObjectExists):
        store.put_new("data/ab/x", b"other")
    assert store.get("data/ab/x") == b"plain"
    assert _names(store.list()) == {"config": 5, "data/ab/x": 5}


def test_put_new_of_the_same_bytes_again_succeeds(store: Store) -> None:
    """A retried request that meets its own first attempt is not told the name is taken."""
    store.put_new("keys/k", b"same bytes")
    store.put_new("keys/k", bytearray(b"same bytes"))
    assert store.get("keys/k") == b"same bytes"


def test_concurrent_put_new_of_one_name_has_exactly_one_winner(store: Store) -> None:
    versions = [bytes([v]) * 100_000 for v in range(8)]
    start = threading.Barrier(8)

    def worker(t: int) -> bool:
        start.wait()
        try:
            store.put_new("config", versions[t])
        except ObjectExists:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(worker, range(8)))
    assert won.count(True) == 1
    assert store.get("config") == versions[won.index(True)]
    assert _names(store.list()) == {"config": 100_000}


# --- metadata ----------------------------------------------------------------------------------


def test_capabilities_and_describe(store: Store) -> None:
    caps = store.capabilities()
    assert isinstance(caps, Capabilities)
    assert caps.parallelism >= 1
    assert not caps.append_only
    assert store.describe()


def test_put_parts_stores_the_concatenation(store: Store) -> None:
    parts = [b"head-", b"", bytearray(b"middle-" * 1000), memoryview(b"0123456789")[2:8], b"tail"]
    store.put_parts("data/ab/parts", parts)
    expected = b"".join(bytes(p) for p in parts)
    assert store.get("data/ab/parts") == expected
    assert store.stat("data/ab/parts").size == len(expected)
    assert store.get("data/ab/parts", 5, 7) == expected[5:12]
