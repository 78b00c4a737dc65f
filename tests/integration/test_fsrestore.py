"""Restore target (sources layer tests): exact round trips, hostile paths that must never
escape the target, overwrite rules and concurrent writes, on real files (tests run as root)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from stackvault.errors import IntegrityError, RestoreRefused, StackvaultError
from stackvault.fs import safety as fsdirs
from stackvault.fs import target as fsrestore
from stackvault.fs import writer as fswriter
from stackvault.fs.entry import FsEntry
from stackvault.fs.exclude import ExcludeMatcher
from stackvault.fs.target import RestoreTarget, SmallFile
from stackvault.fs.walk import FileWalker, Problem

MTIME_NS = 1_500_000_000_987_654_321


@pytest.fixture
def area(tmp_path: Path) -> tuple[Path, Path]:
    """A restore target path and a sentinel directory beside it that must stay untouched."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    os.utime(sentinel, ns=(MTIME_NS, MTIME_NS))
    return tmp_path / "target", sentinel


@pytest.fixture
def target(area: tuple[Path, Path]) -> Iterator[RestoreTarget]:
    with RestoreTarget(str(area[0]), overwrite=False) as t:
        yield t


def assert_untouched(sentinel: Path) -> None:
    assert os.listdir(sentinel) == []
    assert os.lstat(sentinel).st_mtime_ns == MTIME_NS
    assert stat.S_IMODE(os.lstat(sentinel).st_mode) == 0o755


def write_file(target: RestoreTarget, rel: list[str], data: bytes, **meta: Any) -> None:
    with target.open_file(rel, len(data)) as w:
        w.pwrite(0, data)
        w.commit(
            meta.get("mode", 0o644), meta.get("uid", 0), meta.get("gid", 0), meta.get("mtime", 0)
        )


def temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".svtmp-" in p.name]


# --- round trips -------------------------------------------------------------------------


def test_files_dirs_symlinks_hardlinks_with_exact_metadata(target: RestoreTarget) -> None:
    root = Path(target.root)
    target.mkdir(["etc"])
    target.mkdir(["etc", "app"])
    with target.open_file(["etc", "app", "tool"], 10_000) as w:
        w.pwrite(0, b"head")
        w.pwrite(9_996, memoryview(b"tail"))
        assert w.commit(0o4750, 1234, 5678, MTIME_NS, atime_ns=MTIME_NS - 5) == []
    target.hardlink(["etc", "tool-link"], ["etc", "app", "tool"])
    assert target.symlink(["etc", "ln"], "../nowhere/at/all", 77, 88, MTIME_NS + 7) == []
    assert target.set_dir_metadata(["etc", "app"], 0o2711, 11, 22, MTIME_NS + 1) == []
    assert target.set_dir_metadata(["etc"], 0o1777, 33, 44, MTIME_NS + 2) == []

    tool = os.lstat(root / "etc/app/tool")
    assert stat.S_IMODE(tool.st_mode) == 0o4750
    assert (tool.st_uid, tool.st_gid, tool.st_size) == (1234, 5678, 10_000)
    assert (tool.st_mtime_ns, tool.st_atime_ns) == (MTIME_NS, MTIME_NS - 5)
    content = (root / "etc/app/tool").read_bytes()
    assert content[:4] == b"head" and content[-4:] == b"tail" and content[4:-4] == bytes(9_992)
    assert tool.st_nlink == 2 and os.lstat(root / "etc/tool-link").st_ino == tool.st_ino
    ln = os.lstat(root / "etc/ln")
    assert stat.S_ISLNK(ln.st_mode) and os.readlink(root / "etc/ln") == "../nowhere/at/all"
    assert (ln.st_uid, ln.st_gid, ln.st_mtime_ns) == (77, 88, MTIME_NS + 7)
    app = os.lstat(root / "etc/app")
    assert (stat.S_IMODE(app.st_mode), app.st_uid, app.st_gid) == (0o2711, 11, 22)
    assert app.st_mtime_ns == MTIME_NS + 1
    etc = os.lstat(root / "etc")
    assert (stat.S_IMODE(etc.st_mode), etc.st_mtime_ns) == (0o1777, MTIME_NS + 2)
    assert temp_files(root) == []


def _restore_walk(
    walker: FileWalker,
    target: RestoreTarget,
    entry: FsEntry,
    rel: list[str],
    seen: dict[tuple[int, int], list[str]],
) -> None:
    """What the engine does, minus the repository: capture ``entry`` and restore it at ``rel``."""
    if entry.kind == "dir":
        target.mkdir(rel)
        for child in walker.scan_dir(entry):
            _restore_walk(walker, target, child, [*rel, child.name], seen)
        target.set_dir_metadata(rel, entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.xattrs)
    elif entry.kind == "symlink":
        assert entry.link_target is not None
        target.symlink(rel, entry.link_target, entry.uid, entry.gid, entry.mtime_ns)
    else:
        key = (entry.device, entry.inode)
        if entry.nlink > 1 and key in seen:
            target.hardlink(rel, seen[key])
            return
        seen[key] = rel
        with walker.open_regular_file(entry) as src, target.open_file(rel, entry.size) as w:
            offset = 0
            while chunk := src.read(4096):
                w.pwrite(offset, chunk)
                offset += len(chunk)
            w.commit(entry.mode, entry.uid, entry.gid, entry.mtime_ns, xattrs=entry.xattrs)


def _snapshot(walker: FileWalker, root: Path) -> dict[str, tuple[Any, ...]]:
    found: dict[str, tuple[Any, ...]] = {}
    inodes: dict[int, str] = {}

    def visit(entry: FsEntry) -> None:
        rel = os.path.relpath(entry.path, root)
        content = b""
        if entry.kind == "file":
            with walker.open_regular_file(entry) as f:
                content = f.read()
        first = inodes.setdefault(entry.inode, rel) if entry.nlink > 1 else None
        found[rel] = (
            entry.kind,
            entry.mode,
            entry.uid,
            entry.gid,
            entry.mtime_ns if rel != "." else None,
            entry.size,
            entry.nlink,
            entry.link_target,
            entry.xattrs,
            content,
            first,
        )
        if entry.kind == "dir":
            for child in walker.scan_dir(entry):
                visit(child)

    top = walker.stat_root(str(root))
    assert top is not None
    visit(top)
    return found


def test_round_trip_through_the_walker(tmp_path: Path, area: tuple[Path, Path]) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "data.bin").write_bytes(os.urandom(50_000))
    (src / "empty").write_bytes(b"")
    (src / os.fsdecode(b"\xffodd name")).write_text("undecodable")
    os.link(src / "empty", src / "a" / "empty-link")
    (src / "a" / "rel-link").symlink_to("b/data.bin")
    (src / "abs-link").symlink_to("/etc/passwd")
    os.chown(src / "a" / "b" / "data.bin", 1000, 1000)
    os.chmod(src / "a" / "b" / "data.bin", 0o6755)
    os.chmod(src / "a", 0o750)
    try:
        os.setxattr(src / "empty", "user.note", b"restored too")
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    for p in [src / "a" / "b" / "data.bin", src / "a" / "b", src / "a", src]:
        os.utime(p, ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)

    problems: list[Problem] = []
    walker = FileWalker(ExcludeMatcher([]), False, problems.append)
    root = walker.stat_root(str(src))
    assert root is not None
    with RestoreTarget(str(area[0]), overwrite=False) as target:
        _restore_walk(walker, target, root, ["restored"], {})
        assert target.notices == []
    assert problems == []
    assert _snapshot(walker, area[0] / "restored") == _snapshot(walker, src)
    assert_untouched(area[1])


def test_undecodable_names_are_restored_byte_for_byte(target: RestoreTarget) -> None:
    name = os.fsdecode(b"caf\xe9\xff")
    write_file(target, [name], b"x")
    assert os.listdir(os.fsencode(target.root)) == [b"caf\xe9\xff"]


def test_long_names_get_a_valid_temp_name(target: RestoreTarget) -> None:
    name = "n" * 255
    write_file(target, [name], b"long")
    assert (Path(target.root) / name).read_bytes() == b"long"


# --- hostile paths -----------------------------------------------------------------------

HOSTILE = [
    [".."],
    ["..", "sentinel", "x"],
    ["a", "..", "..", "sentinel"],
    ["/etc"],
    ["a/b"],
    [""],
    ["a", ""],
    ["a\0b"],
    ["."],
    ["\udc80\ud800"],  # not representable as bytes
]


@pytest.mark.parametrize("rel", HOSTILE, ids=repr)
def test_hostile_components_are_refused(
    target: RestoreTarget, area: tuple[Path, Path], rel: list[str]
) -> None:
    with pytest.raises(RestoreRefused, match="refusing to restore"):
        target.mkdir(rel)
    with pytest.raises(RestoreRefused):
        target.open_file(rel, 1)
    with pytest.raises(RestoreRefused):
        target.symlink(rel, "/etc", 0, 0, 0)
    with pytest.raises(RestoreRefused):
        target.hardlink(rel, ["x"])
    with pytest.raises(RestoreRefused):
        target.hardlink(["x"], rel)
    with pytest.raises(RestoreRefused):
        target.set_dir_metadata(rel, 0o777, 0, 0, 0)
    assert os.listdir(target.root) == []
    assert_untouched(area[1])


def test_dotdot_message_names_the_path(target: RestoreTarget) -> None:
    with pytest.raises(RestoreRefused) as info:
        target.open_file(["a", "..", "x"], 1)
    assert str(info.value) == (
        "refusing to restore 'a/../x': path component '..' would escape the target"
    )


@pytest.mark.parametrize(
    ("part", "problem"),
    [
        ("", "is empty"),
        (".", "is not a name"),
        ("a/b", "contains '/'"),
        ("a\0b", "contains NUL"),
        ("\ud800", "is not a valid file name"),  # a lone surrogate encodes to no bytes
    ],
)
def test_each_unsafe_component_is_named_in_the_refusal(
    target: RestoreTarget, part: str, problem: str
) -> None:
    with pytest.raises(RestoreRefused, match=f"{problem}$"):
        target.open_file(["ok", part, "x"], 1)
    assert os.listdir(target.root) == []
    # bytes that are not UTF-8 (decoded with surrogateescape) are a valid name
    write_file(target, ["ok", "b\udcff"], b"x")
    assert os.listdir(os.path.join(target.root, "ok").encode()) == [b"b\xff"]


def test_symlink_then_file_below_it_is_refused(
    target: RestoreTarget, area: tuple[Path, Path]
) -> None:
    outside = area[1]
    target.symlink(["a"], str(outside), 0, 0, MTIME_NS)
    with pytest.raises(RestoreRefused, match="symbolic link"):
        target.open_file(["a", "passwd"], 4)
    with pytest.raises(RestoreRefused):
        target.mkdir(["a", "sub"])
    with pytest.raises(RestoreRefused):
        target.symlink(["a", "ln"], "x", 0, 0, 0)
    with pytest.raises(RestoreRefused):
        target.hardlink(["a", "hl"], ["a"])
    with pytest.raises(RestoreRefused):
        target.set_dir_metadata(["a"], 0o777, 1, 1, 0)  # would chmod the outside directory
    with pytest.raises(RestoreRefused):
        target.mkdir(["a"])  # an existing symlink is not replaced without overwrite
    assert_untouched(outside)


def test_pre_existing_symlinks_in_the_target_are_never_followed(
    area: tuple[Path, Path],
) -> None:
    root, outside = area
    root.mkdir()
    (root / "d").symlink_to(outside)
    secret = outside.parent / "secret"
    secret.write_text("keep me")
    (root / "f").symlink_to(secret)
    with RestoreTarget(str(root), overwrite=True) as target:
        with pytest.raises(RestoreRefused, match="symbolic link"):
            target.open_file(["d", "x"], 1)
        with pytest.raises(RestoreRefused):
            target.hardlink(["d", "x"], ["f"])
        # With overwrite, a symlink at a file's own name is replaced, never written through.
        write_file(target, ["f"], b"new content")
        target.mkdir(["d"])  # replaces the symlink with a real directory
        write_file(target, ["d", "x"], b"inside")
    assert secret.read_text() == "keep me"
    assert (root / "f").read_bytes() == b"new content" and not (root / "f").is_symlink()
    assert (root / "d").is_dir() and not (root / "d").is_symlink()
    assert_untouched(outside)


def test_hardlink_to_outside_is_impossible(target: RestoreTarget, area: tuple[Path, Path]) -> None:
    target.symlink(["out"], str(area[1]), 0, 0, 0)
    (area[1].parent / "victim").write_text("v")
    with pytest.raises(RestoreRefused):
        target.hardlink(["x"], ["out", "..", "victim"])
    target.hardlink(["x"], ["out"])  # links the symlink itself, which stays inside
    assert os.readlink(Path(target.root) / "x") == str(area[1])
    assert os.lstat(area[1].parent / "victim").st_nlink == 1


# --- target preparation and overwrite ----------------------------------------------------


def test_prepare_creates_missing_parents(tmp_path: Path) -> None:
    with RestoreTarget(str(tmp_path / "a" / "b" / "c"), overwrite=False) as target:
        write_file(target, ["f"], b"x")
    assert (tmp_path / "a" / "b" / "c" / "f").read_bytes() == b"x"


def test_non_empty_target_is_refused_without_overwrite(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "existing").write_text("e")
    with pytest.raises(RestoreRefused) as info:
        RestoreTarget(str(tmp_path / "t"), overwrite=False).prepare()
    assert str(info.value) == (
        f"target {tmp_path / 't'} is not empty; choose an empty directory or pass --overwrite"
    )
    RestoreTarget(str(tmp_path / "t"), overwrite=True).prepare()


def test_target_that_is_a_symlink_or_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("f")
    with pytest.raises(RestoreRefused, match="symbolic link"):
        RestoreTarget(str(tmp_path / "link") + "/", overwrite=True).prepare()
    with pytest.raises(RestoreRefused, match="not a directory"):
        RestoreTarget(str(tmp_path / "file"), overwrite=True).prepare()
    with pytest.raises(StackvaultError, match=r"cannot use restore target .*Not a directory"):
        RestoreTarget(str(tmp_path / "file" / "below"), overwrite=True).prepare()


def test_existing_file_refused_before_any_data_is_written(target: RestoreTarget) -> None:
    write_file(target, ["f"], b"first")
    with pytest.raises(RestoreRefused, match="already exists"):
        target.open_file(["f"], 6)
    with pytest.raises(RestoreRefused, match="already exists"):
        target.symlink(["f"], "x", 0, 0, 0)
    assert (Path(target.root) / "f").read_bytes() == b"first"
    assert temp_files(Path(target.root)) == []


def test_overwrite_replaces_files_but_never_directories(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "keep").write_text("k")
    (root / "f").write_text("old")
    (root / "g").write_text("old")
    with RestoreTarget(str(root), overwrite=True) as target:
        write_file(target, ["f"], b"new")
        target.symlink(["g"], "f", 0, 0, 0)
        target.mkdir(["dir"])  # existing directory: kept as is
        for attempt in (
            lambda: target.open_file(["dir"], 1),
            lambda: target.symlink(["dir"], "x", 0, 0, 0),
            lambda: target.hardlink(["dir"], ["f"]),
        ):
            with pytest.raises(RestoreRefused, match="directory"):
                attempt()
    assert (root / "f").read_bytes() == b"new"
    assert os.readlink(root / "g") == "f"
    assert (root / "dir" / "keep").read_text() == "k"


def test_duplicate_name_in_a_snapshot_does_not_replace_the_first(target: RestoreTarget) -> None:
    first = target.open_file(["dup"], 5)
    with pytest.raises(RestoreRefused, match="already exists"):
        target.open_file(["dup"], 6)  # refused at once: the name is taken by the first
    first.pwrite(0, b"first")
    first.commit(0o644, 0, 0, 0)
    assert (Path(target.root) / "dup").read_bytes() == b"first"
    assert os.listdir(target.root) == ["dup"]


def test_a_name_taken_by_a_directory_or_symlink_is_refused_without_touching_it(
    target: RestoreTarget, area: tuple[Path, Path]
) -> None:
    root = Path(target.root)
    (root / "dir").mkdir()
    (root / "link").symlink_to(area[1] / "x")
    with pytest.raises(RestoreRefused, match="directory of that name"):
        target.open_file(["dir"], 1)
    with pytest.raises(RestoreRefused, match="already exists"):
        target.open_file(["link"], 1)
    assert sorted(os.listdir(root)) == ["dir", "link"]
    assert_untouched(area[1])


def test_overwrite_writes_beside_the_old_file_until_commit(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "f").write_bytes(b"old")
    with RestoreTarget(str(root), overwrite=True) as target:
        with target.open_file(["f"], 3) as w:
            w.pwrite(0, b"new")
            [tmp] = temp_files(root)
            assert Path(tmp).name.startswith(".f.svtmp-")
            assert stat.S_IMODE(os.lstat(tmp).st_mode) == 0o600
            assert (root / "f").read_bytes() == b"old"  # untouched until commit
            w.commit(0o640, 0, 0, MTIME_NS)
        with target.open_file(["f"], 5) as w:
            w.pwrite(0, b"newer")
            w.abort()  # e.g. its SHA-256 did not match: the old content stays
    assert (root / "f").read_bytes() == b"new"
    assert stat.S_IMODE(os.lstat(root / "f").st_mode) == 0o640
    assert temp_files(root) == []


# --- writers -----------------------------------------------------------------------------


def test_parallel_pwrite_gives_exact_content(target: RestoreTarget) -> None:
    chunk, count = 65_536 + 17, 64
    data = os.urandom(chunk * count)
    with target.open_file(["big"], len(data)) as w:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(
                pool.map(
                    lambda i: w.pwrite(i * chunk, data[i * chunk : (i + 1) * chunk]),
                    reversed(range(count)),
                )
            )
        w.commit(0o600, 0, 0, MTIME_NS)
    assert (Path(target.root) / "big").read_bytes() == data


@pytest.mark.parametrize("end", ["commit", "abort"])
def test_ending_a_writer_waits_for_the_pwrite_under_way(
    target: RestoreTarget, monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    real, started, release = os.pwrite, threading.Event(), threading.Event()

    def slow(fd: int, data: bytes | memoryview, offset: int) -> int:
        started.set()
        assert release.wait(10)
        return real(fd, data, offset)

    monkeypatch.setattr(fswriter.os, "pwrite", slow)
    w = target.open_file(["f"], 3)
    writing = threading.Thread(target=w.pwrite, args=(0, b"abc"))
    writing.start()
    assert started.wait(10)
    ended = threading.Event()

    def finish() -> None:
        if end == "commit":
            w.commit(0o644, 0, 0, MTIME_NS)
        else:
            w.abort()
        ended.set()

    ending = threading.Thread(target=finish)
    ending.start()
    assert not ended.wait(0.2)  # still waiting for the pwrite
    with pytest.raises(RuntimeError):
        w.pwrite(0, b"x")  # and no new one may start
    release.set()
    writing.join(10)
    ending.join(10)
    assert ended.is_set()
    path = Path(target.root) / "f"
    if end == "commit":
        assert path.read_bytes() == b"abc"
    else:
        assert not path.exists()


def test_large_files_are_sized_before_they_are_written(target: RestoreTarget) -> None:
    big = fsrestore.PRESIZE_MIN
    with target.open_file(["big"], big) as w:
        assert os.lstat(Path(target.root) / "big").st_size == big  # sparse until written
        w.pwrite(big - 3, b"end")
        w.commit(0o600, 0, 0, MTIME_NS)
    data = (Path(target.root) / "big").read_bytes()
    assert data == bytes(big - 3) + b"end"
    with target.open_file(["small"], big - 1) as w:
        assert os.lstat(Path(target.root) / "small").st_size == 0  # sized by its writes
        w.pwrite(0, b"x" * (big - 1))
        w.commit(0o600, 0, 0, MTIME_NS)
    assert os.lstat(Path(target.root) / "small").st_size == big - 1


def test_many_files_from_many_threads(target: RestoreTarget) -> None:
    # More directories than fds are cached, written concurrently: eviction must stay safe.
    n = fsdirs.MAX_CACHED_DIRS + 50

    def restore(i: int) -> None:
        write_file(target, [f"d{i % 300}", f"e{i}", "f"], str(i).encode())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(restore, range(n)))
    for i in range(n):
        assert (Path(target.root) / f"d{i % 300}" / f"e{i}" / "f").read_bytes() == str(i).encode()
    assert len(os.listdir("/proc/self/fd")) < fsdirs.MAX_CACHED_DIRS + 100


def test_abort_removes_the_file(target: RestoreTarget) -> None:
    w = target.open_file(["f"], 10)
    w.pwrite(0, b"partial")
    assert os.listdir(target.root) == ["f"]
    w.abort()
    w.abort()  # idempotent
    with pytest.raises(ValueError), target.open_file(["g"], 3) as w2:
        w2.pwrite(0, b"abc")
        raise ValueError("engine failure mid-file")
    assert os.listdir(target.root) == []
    with pytest.raises(RuntimeError):
        w.pwrite(0, b"x")
    with pytest.raises(RuntimeError):
        w.commit(0o644, 0, 0, 0)
    write_file(target, ["f"], b"again")  # the name of a discarded file is free again
    assert (Path(target.root) / "f").read_bytes() == b"again"


def test_pwrite_beyond_the_recorded_size_is_an_integrity_error(target: RestoreTarget) -> None:
    with target.open_file(["f"], 4) as w:
        with pytest.raises(IntegrityError):
            w.pwrite(2, b"abc")
        with pytest.raises(IntegrityError):
            w.pwrite(-1, b"a")


def test_file_is_private_until_committed(target: RestoreTarget) -> None:
    with target.open_file(["f"], 1) as w:
        path = Path(target.root) / "f"
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        w.pwrite(0, b"x")
        w.commit(0o644, 0, 0, MTIME_NS)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o644
    assert os.lstat(path).st_mtime_ns == MTIME_NS
    assert temp_files(Path(target.root)) == []


def test_close_releases_every_fd(area: tuple[Path, Path]) -> None:
    before = len(os.listdir("/proc/self/fd"))
    target = RestoreTarget(str(area[0]), overwrite=False)
    target.prepare()
    for i in range(20):
        write_file(target, [f"d{i}", "sub", "f"], b"x")
    target.close()
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(RuntimeError):
        target.mkdir(["late"])


# --- metadata notices --------------------------------------------------------------------


def test_xattrs_are_restored_or_a_notice_says_why(target: RestoreTarget) -> None:
    with target.open_file(["f"], 0) as w:
        notices = w.commit(0o444, 0, 0, 0, xattrs=[("user.a", b"1"), ("user.b", b"\x00")])
    path = Path(target.root) / "f"
    if notices:
        assert "not supported" in notices[0] and target.notices == notices
    else:
        assert os.getxattr(path, "user.a") == b"1" and os.getxattr(path, "user.b") == b"\x00"
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o444


def test_unsupported_xattrs_are_a_notice(
    target: RestoreTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", unsupported)
    target.mkdir(["d"])
    notices = target.set_dir_metadata(["d"], 0o755, 0, 0, MTIME_NS, [("user.x", b"1")])
    assert len(notices) == 1 and "'d': extended attributes not supported" in notices[0]
    assert os.lstat(Path(target.root) / "d").st_mtime_ns == MTIME_NS


def test_owner_is_kept_when_not_restoring_owners(area: tuple[Path, Path]) -> None:
    with RestoreTarget(str(area[0]), overwrite=False, restore_owner=False) as target:
        write_file(target, ["f"], b"x", uid=1234, gid=5678)
    st = os.lstat(area[0] / "f")
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())


def test_write_files_gives_each_file_its_exact_mode_owner_and_time_whatever_the_umask(
    area: tuple[Path, Path],
) -> None:
    """Files created with their final mode are read back and corrected: a umask that takes
    bits away, special bits, an owner other than the creator's, xattrs."""
    if os.geteuid() != 0:
        pytest.fail("this test expects to run as root (it restores other owners)")
    modes = [0o644, 0o666, 0o400, 0o000, 0o755, 0o4755, 0o2750, 0o1777, 0o600]
    files = [
        SmallFile(
            f"m{i}",
            b"x" * i,
            mode,
            1234 if i % 2 else 0,
            5678 if i % 3 else 0,
            MTIME_NS + i,
            [("user.n", b"%d" % i)] if i == 8 else (),
        )
        for i, mode in enumerate(modes)
    ]
    old = os.umask(0o077)
    try:
        with RestoreTarget(str(area[0]), overwrite=False) as target:
            notices = target.write_files(["d"], files)
    finally:
        os.umask(old)
    xattrs_here = not any("not supported" in n for n in notices)
    assert notices == [] or not xattrs_here, notices
    for f in files:
        st = os.lstat(area[0] / "d" / f.name)
        assert stat.S_IMODE(st.st_mode) == f.mode, f
        assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (f.uid, f.gid, f.mtime_ns), f
        assert (area[0] / "d" / f.name).read_bytes() == f.data
    if xattrs_here:
        assert os.getxattr(area[0] / "d" / "m8", "user.n") == b"8"


def test_write_files_sets_the_group_a_setgid_directory_would_give_instead(
    area: tuple[Path, Path],
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test expects to run as root (it restores other owners)")
    with RestoreTarget(str(area[0]), overwrite=False) as target:
        shared = area[0] / "shared"
        shared.mkdir()
        os.chown(shared, 0, 5678)
        os.chmod(shared, 0o2775)
        target.write_files(["shared"], [SmallFile("f", b"x", 0o644, 0, 0, MTIME_NS)])
    st = os.lstat(area[0] / "shared" / "f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644)


def test_write_files_stops_at_a_taken_name_and_keeps_the_files_before_it(
    target: RestoreTarget,
) -> None:
    write_file(target, ["d", "b"], b"old")
    files = [SmallFile(n, n.encode(), 0o644, 0, 0, MTIME_NS) for n in ("a", "b", "c")]
    with pytest.raises(RestoreRefused, match="'d/b': it already exists"):
        target.write_files(["d"], files)
    root = Path(target.root)
    assert sorted(os.listdir(root / "d")) == ["a", "b"]
    assert (root / "d" / "a").read_bytes() == b"a" and (root / "d" / "b").read_bytes() == b"old"


def test_chown_refusal_is_a_notice_for_root_and_silent_otherwise(
    area: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", refuse)
    with RestoreTarget(str(area[0]), overwrite=False, restore_owner=True) as target:
        target.is_root_user = True
        write_file(target, ["as-root"], b"x", uid=1)
        assert len(target.notices) == 1 and "cannot restore owner" in target.notices[0]
        target.is_root_user = False
        write_file(target, ["not-root"], b"x", uid=1)
        assert len(target.notices) == 1
    assert (area[0] / "not-root").read_bytes() == b"x"


def test_restore_is_thread_safe_for_directory_creation(target: RestoreTarget) -> None:
    barrier = threading.Barrier(8)

    def make(i: int) -> None:
        barrier.wait()
        target.mkdir(["shared"])
        write_file(target, ["shared", "deep", f"f{i}"], b"x")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(make, range(8)))
    assert sorted(os.listdir(Path(target.root) / "shared" / "deep")) == [f"f{i}" for i in range(8)]


def test_trees_deeper_than_the_recursion_limit(target: RestoreTarget) -> None:
    rel = ["d"] * 1100  # beyond Python's default recursion limit of 1000
    fds_before = len(os.listdir("/proc/self/fd"))
    write_file(target, [*rel, "leaf"], b"deep")
    assert len(os.listdir("/proc/self/fd")) <= fds_before + fsdirs.MAX_CACHED_DIRS + 1
    fd = os.open(target.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in rel:  # walk down by fd: the path is too long for a single open()
            fd, parent = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(parent)
        with open(os.open("leaf", os.O_RDONLY, dir_fd=fd), "rb") as f:
            assert f.read() == b"deep"
    finally:
        os.close(fd)
        # pytest's recursive tmp_path cleanup cannot remove a tree this deep; GNU rm can.
        subprocess.run(["rm", "-rf", "d"], cwd=target.root, check=True)


# --- write_files: small files in one go --------------------------------------------------------


def one_file(target: RestoreTarget, rel: list[str], data: bytes, mode: int) -> list[str]:
    return target.write_files(rel[:-1], [SmallFile(rel[-1], data, mode, 0, 0, MTIME_NS, ())])


def test_write_files_creates_the_file_whole_with_its_metadata(target: RestoreTarget) -> None:
    one_file(target, ["d", "small.json"], b'{"a": 1}', 0o640)
    one_file(target, ["d", "empty"], b"", 0o600)
    path = Path(target.root) / "d" / "small.json"
    assert path.read_bytes() == b'{"a": 1}'
    st = path.lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o640, MTIME_NS)
    assert (Path(target.root) / "d" / "empty").read_bytes() == b""


def test_write_files_never_replaces_without_overwrite(target: RestoreTarget) -> None:
    one_file(target, ["f"], b"first", 0o644)
    with pytest.raises(RestoreRefused):
        one_file(target, ["f"], b"second", 0o644)
    assert (Path(target.root) / "f").read_bytes() == b"first"


def test_write_files_with_overwrite_replaces_a_file_through_a_temp_name(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "dir").mkdir(parents=True)
    (root / "f").write_bytes(b"old")
    with RestoreTarget(str(root), overwrite=True) as t:
        one_file(t, ["f"], b"new", 0o600)
        with pytest.raises(RestoreRefused):
            one_file(t, ["dir"], b"not over a directory", 0o600)
    assert (root / "f").read_bytes() == b"new"
    assert (root / "dir").is_dir()
    assert temp_files(root) == []


def test_write_files_that_fails_leaves_nothing(
    target: RestoreTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> list[str]:
        raise StackvaultError("metadata refused")

    monkeypatch.setattr(target, "apply_metadata", refuse)
    with pytest.raises(StackvaultError, match="metadata refused"):
        one_file(target, ["d", "f"], b"data", 0o644)
    assert os.listdir(Path(target.root) / "d") == []
