"""Backend-specific store tests (store layer tests): LocalStore on real disks, MemoryStore
append-only mode and FaultyStore rules. The shared contract is in test_conformance.py."""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from stackvault.errors import (
    ObjectExists,
    ObjectNotFound,
    StoreError,
    StoreFull,
    StorePermissionDenied,
    TransientStoreError,
)
from stackvault.store.base import ObjectInfo
from stackvault.store.faulty import FaultyStore, SimulatedCrash
from stackvault.store.local import LocalStore
from stackvault.store.memory import MemoryStore

IS_ROOT = os.geteuid() == 0


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _run(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore(tmp_path / "repo")
    s.ensure_root()
    return s


@pytest.fixture(scope="session")
def can_mount(tmp_path_factory: pytest.TempPathFactory) -> bool:
    """Whether this process may mount filesystems (root outside a restrictive sandbox)."""
    if not IS_ROOT or shutil.which("mount") is None:
        return False
    probe = tmp_path_factory.mktemp("mount-probe")
    if not _run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)):
        return False
    _run("umount", str(probe))
    return True


# --- atomicity ---------------------------------------------------------------------------------

_CRASHING_PUT = """
import os, sys
from stackvault.store.local import LocalStore
store = LocalStore(sys.argv[1])
os.fsync = lambda fd: os._exit(9)  # die after the data is written, before the rename
store.put("data/ab/crashed", b"x" * 100_000)
"""


def test_process_dying_mid_put_leaves_no_visible_object(store: LocalStore) -> None:
    store.put("data/ab/sibling", b"sibling")  # the directory exists, so the child dies in put
    child = subprocess.run([sys.executable, "-c", _CRASHING_PUT, str(store.root)], check=False)
    assert child.returncode == 9

    leftovers = _temp_files(store.root)
    assert len(leftovers) == 1
    assert leftovers[0].parent == store.root / "data" / "ab"
    assert leftovers[0].stat().st_size == 100_000  # the data was written, just never renamed
    assert not store.exists("data/ab/crashed")
    with pytest.raises(ObjectNotFound):
        store.get("data/ab/crashed")
    assert list(store.list()) == [ObjectInfo("data/ab/sibling", 7)]

    store.put("data/ab/crashed", b"second try")
    assert store.get("data/ab/crashed") == b"second try"
    assert {i.name for i in store.list("data/ab/")} == {"data/ab/sibling", "data/ab/crashed"}


def test_leftover_temp_files_are_never_listed(store: LocalStore) -> None:
    store.put("config", b"c")
    store.put("data/ab/p1", b"pack")
    (store.root / ".tmp-0123abcd").write_bytes(b"partial config")
    (store.root / "data" / "ab" / ".tmp-deadbeef").write_bytes(b"partial pack")
    (store.root / "data" / ".tmp-dir").mkdir()
    (store.root / "data" / ".tmp-dir" / "inside").write_bytes(b"partial")

    assert {i.name: i.size for i in store.list()} == {"config": 1, "data/ab/p1": 4}
    assert [i.name for i in store.list("data/ab/")] == ["data/ab/p1"]
    store.put("data/ab/p2", b"more")
    assert store.get("data/ab/p2") == b"more"


def test_failed_put_removes_its_temp_file(store: LocalStore) -> None:
    (store.root / "data" / "ab" / "taken").mkdir(parents=True)  # rename onto a directory fails
    with pytest.raises(StoreError, match="data/ab/taken") as info:
        store.put("data/ab/taken", b"payload")
    assert isinstance(info.value.__cause__, OSError)
    assert _temp_files(store.root) == []


def test_os_limit_errors_become_store_errors(store: LocalStore) -> None:
    too_long = "a" * 300  # a valid name the filesystem cannot hold
    with pytest.raises(StoreError) as info:
        store.put(too_long, b"x")
    assert type(info.value) is StoreError
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENAMETOOLONG
    assert _temp_files(store.root) == []


# --- layout, modes, root -----------------------------------------------------------------------


def test_objects_are_plain_files_at_their_names(store: LocalStore) -> None:
    store.put("data/ab/abcdef", b"pack bytes")
    assert (store.root / "data" / "ab" / "abcdef").read_bytes() == b"pack bytes"


def test_files_are_0600_and_directories_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = LocalStore(tmp_path / "new" / "repo")
        store.ensure_root()
        store.put("data/ab/abcdef", b"x")
        store.put("config", b"y")
    finally:
        os.umask(old)
    assert mode(store.root) == 0o700
    assert mode(store.root / "data") == 0o700
    assert mode(store.root / "data" / "ab") == 0o700
    assert mode(store.root / "data" / "ab" / "abcdef") == 0o600
    assert mode(store.root / "config") == 0o600


def test_root_is_never_created_implicitly(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "missing")
    assert not store.exists_root()
    assert list(store.list()) == []
    with pytest.raises(ObjectNotFound):
        store.get("config")
    with pytest.raises(StoreError, match="does not exist") as info:
        store.put("data/ab/x", b"x")
    assert not isinstance(info.value, ObjectNotFound)
    assert str(tmp_path / "missing") in str(info.value)
    assert not (tmp_path / "missing").exists()

    store.ensure_root()
    store.ensure_root()  # idempotent
    assert store.exists_root()
    store.put("data/ab/x", b"x")
    assert store.get("data/ab/x") == b"x"


def test_describe_is_the_absolute_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert LocalStore("repo").describe() == str(tmp_path / "repo")


def test_invalid_names_never_touch_files_outside_root(store: LocalStore) -> None:
    for name in ("../escaped", "data/../../escaped", "/tmp/escaped"):
        with pytest.raises(StoreError):
            store.put(name, b"x")
    assert not (store.root.parent / "escaped").exists()
    assert list(store.list("../")) == []


# --- read-only repository ----------------------------------------------------------------------


@dataclass
class ReadOnly:
    store: LocalStore
    technique: str


@pytest.fixture
def read_only(
    store: LocalStore, can_mount: bool, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ReadOnly]:
    """The populated repository made unwritable by the most real means this machine allows."""
    store.put("data/ab/existing", b"old")
    dirs = [store.root, store.root / "data", store.root / "data" / "ab"]
    if not IS_ROOT:
        for d in dirs:
            d.chmod(0o500)
        yield ReadOnly(store, "chmod")
        for d in dirs:
            d.chmod(0o700)
        return
    view = store.root.parent / "ro-view"
    view.mkdir()
    if (
        can_mount
        and _run("mount", "--bind", str(store.root), str(view))
        and _run("mount", "-o", "remount,bind,ro", str(view))
    ):
        yield ReadOnly(LocalStore(view), "read-only bind mount")
        _run("umount", str(view))
        return
    _run("umount", str(view))
    if shutil.which("chattr") and all(_run("chattr", "+i", str(d)) for d in dirs):
        yield ReadOnly(store, "chattr +i")
        for d in dirs:
            _run("chattr", "-i", str(d))
        return
    for d in dirs:
        _run("chattr", "-i", str(d))

    # Root without mount or chattr: nothing real stops writes, so inject the kernel's answer.
    def refuse(src: str | Path, dst: str | Path) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(src))

    monkeypatch.setattr(os, "replace", refuse)
    yield ReadOnly(store, "injected EACCES")


def test_read_only_repository_raises_permission_denied(read_only: ReadOnly) -> None:
    store = read_only.store
    with pytest.raises(StorePermissionDenied) as info:
        store.put("data/ab/new", b"new")
    message = str(info.value)
    assert str(store.root) in message, read_only.technique
    assert "check the permissions" in message
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    assert _temp_files(store.root) == []
    # Reading still works: restore and check must not need write access.
    assert store.get("data/ab/existing") == b"old"
    assert [i.name for i in store.list()] == ["data/ab/existing"]
    if read_only.technique != "injected EACCES":
        with pytest.raises(StorePermissionDenied):
            store.delete("data/ab/existing")
        assert store.exists("data/ab/existing")


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (errno.EACCES, StorePermissionDenied),
        (errno.EPERM, StorePermissionDenied),
        (errno.EROFS, StorePermissionDenied),
        (errno.ENOSPC, StoreFull),
        (errno.EDQUOT, StoreFull),
        (errno.EIO, StoreError),
    ],
)
def test_every_os_error_is_translated(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, code: int, error_class: type[StoreError]
) -> None:
    # Not every errno can be provoked for real, so the kernel's answer to the rename is injected.
    def fail(src: str | Path, dst: str | Path) -> None:
        raise OSError(code, os.strerror(code), str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StoreError) as info:
        store.put("index/abc", b"secret payload")
    assert type(info.value) is error_class
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == code
    assert "index/abc" in str(info.value)
    assert "secret payload" not in str(info.value)
    assert _temp_files(store.root) == []


# --- disk full ---------------------------------------------------------------------------------


@dataclass
class Full:
    store: LocalStore
    technique: str


@pytest.fixture
def full_disk(tmp_path: Path, can_mount: bool, monkeypatch: pytest.MonkeyPatch) -> Iterator[Full]:
    """A repository on a 1 MiB filesystem, or, where mounting is not allowed, one whose writes
    past 1 MiB in total fail with ENOSPC after writing what fits."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    if can_mount and _run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)):
        store = LocalStore(mountpoint / "repo")
        store.ensure_root()
        yield Full(store, "tmpfs")
        _run("umount", str(mountpoint))
        return
    store = LocalStore(mountpoint / "repo")
    store.ensure_root()
    real_write = os.write
    room = [1024 * 1024]

    def write(fd: int, data: bytes | memoryview) -> int:
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, data[: room[0]])
        room[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)
    yield Full(store, "injected ENOSPC")


def test_disk_full_raises_store_full_and_leaves_nothing_behind(full_disk: Full) -> None:
    store = full_disk.store
    store.put("index/i1", b"previous version")
    with pytest.raises(StoreFull) as info:
        store.put("data/ab/big", b"s" * (2 * 1024 * 1024))
    message = str(info.value)
    assert str(store.root) in message, full_disk.technique
    assert "data/ab/big" in message
    assert "free space or move the repository" in message
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert _temp_files(store.root) == []
    assert not store.exists("data/ab/big")

    if full_disk.technique == "tmpfs":
        # An overwrite that does not fit keeps the old version whole.
        with pytest.raises(StoreFull):
            store.put("index/i1", b"n" * (2 * 1024 * 1024))
        assert store.get("index/i1") == b"previous version"
        # The failed writes' space was given back.
        store.put("data/ab/fits", b"f" * 100_000)
        assert store.stat("data/ab/fits").size == 100_000
    assert [i.name for i in store.list("index/")] == ["index/i1"]


# --- direct writes of pack buffers ------------------------------------------------------------


def _pack_buffer(size: int) -> memoryview:
    """A page-aligned, writable buffer like the writer's pack buffers, filled with noise."""
    view = memoryview(mmap.mmap(-1, size + 4096))
    view[:size] = os.urandom(size)
    return view[:size]


class _OpenSpy:
    """Records whether os.open was asked for O_DIRECT; optionally refuses it with EINVAL."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, refuse: bool = False) -> None:
        self.direct_opens = 0
        real_open = os.open

        def spy(path: object, flags: int, *args: object, **kwargs: object) -> int:
            if flags & os.O_DIRECT:
                self.direct_opens += 1
                if refuse:
                    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", spy)


def test_a_large_aligned_first_part_is_written_direct(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _OpenSpy(monkeypatch)
    for size in (3 * 1024 * 1024 + 123, 2 * 1024 * 1024):  # unaligned and aligned lengths
        head = _pack_buffer(size)
        store.put_parts(f"data/ab/p{size}", [head, b"header", b"\x00\x01"])
        assert store.get(f"data/ab/p{size}") == bytes(head) + b"header\x00\x01"
    assert spy.direct_opens == 2
    store.put_parts("data/ab/small", [_pack_buffer(64 * 1024), b"h"])  # below the minimum
    store.put_parts("data/ab/bytes", [b"b" * (2 * 1024 * 1024)])  # read-only: alignment unknown
    assert spy.direct_opens == 2
    assert _temp_files(store.root) == []


def test_a_filesystem_refusing_o_direct_gets_normal_writes(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _OpenSpy(monkeypatch, refuse=True)
    head = _pack_buffer(2 * 1024 * 1024 + 7)
    store.put_parts("data/ab/p1", [head, b"tail"])
    store.put_parts("data/ab/p2", [head, b"tail"])
    assert store.get("data/ab/p1") == store.get("data/ab/p2") == bytes(head) + b"tail"
    assert spy.direct_opens == 1  # not asked again once refused


def test_disk_full_during_a_direct_write(
    tmp_path: Path, can_mount: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if can_mount:
        mountpoint = tmp_path / "small"
        mountpoint.mkdir()
        assert _run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint))
        cleanup = lambda: _run("umount", str(mountpoint))  # noqa: E731
    else:  # inject ENOSPC into the direct write instead
        mountpoint = tmp_path
        real_pwrite = os.pwrite

        def pwrite(fd: int, data: memoryview, offset: int) -> int:
            if offset >= 1024 * 1024:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_pwrite(fd, data[: 1024 * 1024 - offset], offset)

        monkeypatch.setattr(os, "pwrite", pwrite)
        cleanup = lambda: True  # noqa: E731
    try:
        store = LocalStore(mountpoint / "repo")
        store.ensure_root()
        spy = _OpenSpy(monkeypatch)
        with pytest.raises(StoreFull):
            store.put_parts("data/ab/big", [_pack_buffer(2 * 1024 * 1024), b"h"])
        assert spy.direct_opens == 1
        assert _temp_files(store.root) == []
        assert not store.exists("data/ab/big")
    finally:
        cleanup()


# --- MemoryStore, append-only ------------------------------------------------------------------


def test_append_only_memory_store_refuses_overwrite_and_delete() -> None:
    store = MemoryStore(append_only=True)
    assert store.capabilities().append_only
    store.put("snapshots/s1", b"first")
    with pytest.raises(ObjectExists, match="snapshots/s1"):
        store.put("snapshots/s1", b"second")
    assert store.get("snapshots/s1") == b"first"
    with pytest.raises(StorePermissionDenied, match="append-only"):
        store.delete("snapshots/s1")
    with pytest.raises(StorePermissionDenied):
        store.delete("snapshots/never-existed")
    assert store.exists("snapshots/s1")
    store.put("snapshots/s2", b"new names are fine")
    assert {i.name for i in store.list("snapshots/")} == {"snapshots/s1", "snapshots/s2"}


def test_memory_store_is_not_append_only_by_default() -> None:
    store = MemoryStore()
    assert not store.capabilities().append_only
    assert store.describe().startswith("memory:")
    assert store.describe() != MemoryStore().describe()


# --- FaultyStore rules -------------------------------------------------------------------------


def _is_data(name: str) -> bool:
    return name.startswith("data/")


def test_fail_put_a_limited_number_of_times() -> None:
    store = FaultyStore(MemoryStore())
    store.fail_put(_is_data, TransientStoreError("timeout"), times=2)
    for _ in range(2):
        with pytest.raises(TransientStoreError):
            store.put("data/ab/p", b"p")
        assert not store.exists("data/ab/p")
    store.put("config", b"unaffected")
    store.put("data/ab/p", b"p")
    assert store.inner.get("data/ab/p") == b"p"
    assert store.calls["put"] == 4


def test_fail_put_after_storing_models_a_lost_acknowledgement() -> None:
    store = FaultyStore(MemoryStore())
    store.fail_put(_is_data, TransientStoreError("reset"), times=1, after=True)
    with pytest.raises(TransientStoreError):
        store.put("data/ab/p", b"stored anyway")
    assert store.get("data/ab/p") == b"stored anyway"


@pytest.mark.parametrize("op", ["get", "delete"])
def test_fail_other_operations(op: str) -> None:
    store = FaultyStore(MemoryStore())
    store.put("data/ab/p", b"p")
    register: Callable[..., None] = getattr(store, f"fail_{op}")
    register(_is_data, StoreError("broken"))
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: store.get("data/ab/p"),
        "delete": lambda: store.delete("data/ab/p"),
    }
    for _ in range(3):  # times=None: forever
        with pytest.raises(StoreError, match="broken"):
            calls[op]()
    assert store.calls[op] == 3
    store.clear()
    calls[op]()


def test_corrupt_get_flips_one_byte_of_the_stored_object() -> None:
    store = FaultyStore(MemoryStore())
    data = bytes(range(100))
    store.put("index/i", data)
    store.corrupt_get(lambda n: n == "index/i", flip_offset=-1)
    damaged = store.get("index/i")
    assert damaged[:-1] == data[:-1]
    assert damaged[-1] == data[-1] ^ 0xFF
    assert store.get("index/i", 90, 10)[-1] == data[-1] ^ 0xFF
    assert store.get("index/i", 0, 50) == data[:50]  # range does not cover the bad byte
    assert store.inner.get("index/i") == data


def test_crash_after_puts_stops_every_later_put() -> None:
    store = FaultyStore(MemoryStore())
    store.crash_after_puts(3)
    for i in range(3):
        store.put(f"data/ab/{i}", b"x")
    for _ in range(2):
        with pytest.raises(SimulatedCrash):
            try:
                store.put("data/ab/late", b"x")
            except Exception:  # a dead process cannot be caught like an error
                pytest.fail("SimulatedCrash must not be an Exception")
    assert not store.exists("data/ab/late")
    assert len(list(store.list())) == 3


def test_crash_point_is_exact_under_concurrency() -> None:
    store = FaultyStore(MemoryStore())
    store.crash_after_puts(50, exc_factory=lambda: StoreError("crashed"))
    start = threading.Barrier(8)

    def worker(t: int) -> int:
        start.wait()
        stored = 0
        for i in range(20):
            try:
                store.put(f"data/{t:02x}/{i}", b"x")
                stored += 1
            except StoreError:
                pass
        return stored

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(worker, range(8))) == 50
    assert len(list(store.list())) == 50
    assert store.calls["put"] == 160
