"""Filesystem walker (sources layer tests): metadata, symlinks, special files, excludes and
one-file-system on real files. Tests run as root, so ownership can be set with chown."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stackvault.errors import SourceError, SourceVanished
from stackvault.fs.entry import FsEntry, KnownFile
from stackvault.fs.exclude import ExcludeMatcher
from stackvault.fs.walk import FileWalker, Problem, will_read

MTIME_NS = 1_600_000_000_123_456_789


class Recorder:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def __call__(self, problem: Problem) -> None:
        self.problems.append(problem)

    def by_path(self) -> dict[str, Problem]:
        return {p.path: p for p in self.problems}


def make_walker(
    patterns: list[str] | None = None, one_file_system: bool = False
) -> tuple[FileWalker, Recorder]:
    rec = Recorder()
    return FileWalker(ExcludeMatcher(patterns or []), one_file_system, rec), rec


def walk(walker: FileWalker, root: Path) -> dict[str, FsEntry]:
    """Every entry below (and including) ``root``, by path, as the engine would visit them."""
    top = walker.stat_root(str(root))
    assert top is not None
    found: dict[str, FsEntry] = {}

    def visit(entry: FsEntry) -> None:
        found[entry.path] = entry
        if entry.kind == "dir":
            for child in walker.scan_dir(entry):
                visit(child)

    visit(top)
    return found


def xattrs_supported(path: Path) -> bool:
    try:
        os.setxattr(path, "user.stackvault-probe", b"1")
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    os.removexattr(path, "user.stackvault-probe")
    return True


def test_file_and_directory_metadata(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    f = src / "sub" / "tool"
    f.write_bytes(b"#!/bin/sh\necho hi\n")
    os.chown(f, 1234, 5678)
    os.chmod(f, 0o4755)  # after chown: chown clears setuid
    os.utime(f, ns=(MTIME_NS, MTIME_NS))
    os.chmod(src / "sub", 0o1777)
    os.chown(src / "sub", 4321, 8765)
    os.utime(src / "sub", ns=(MTIME_NS + 1, MTIME_NS + 1))

    walker, rec = make_walker()
    entries = walk(walker, src)
    tool = entries[str(f)]
    st = os.lstat(f)
    assert tool.name == "tool" and tool.kind == "file"
    assert tool.mode == 0o4755 and stat.S_IMODE(st.st_mode) == 0o4755
    assert (tool.uid, tool.gid) == (1234, 5678)
    assert tool.size == 18
    assert tool.mtime_ns == MTIME_NS
    assert tool.ctime_ns == st.st_ctime_ns
    assert (tool.inode, tool.device, tool.nlink) == (st.st_ino, st.st_dev, 1)
    assert tool.link_target is None

    sub = entries[str(src / "sub")]
    assert sub.kind == "dir" and sub.mode == 0o1777 and sub.size == 0
    assert (sub.uid, sub.gid, sub.mtime_ns) == (4321, 8765, MTIME_NS + 1)
    root = entries[str(src)]
    assert root.name == "src" and root.path == str(src)
    assert rec.problems == []


def test_hard_links_share_inode_and_count(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("same")
    os.link(tmp_path / "a", tmp_path / "b")
    walker, _ = make_walker()
    entries = walk(walker, tmp_path)
    a, b = entries[str(tmp_path / "a")], entries[str(tmp_path / "b")]
    assert a.nlink == b.nlink == 2
    assert (a.inode, a.device) == (b.inode, b.device)


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    target_dir = tmp_path / "elsewhere"
    target_dir.mkdir()
    (target_dir / "secret").write_text("not to be captured")
    src.mkdir()
    (src / "to-dir").symlink_to(target_dir)
    (src / "dangling").symlink_to("does/not/exist")
    os.chown(src / "dangling", 77, 88, follow_symlinks=False)

    walker, rec = make_walker()
    entries = walk(walker, src)
    assert set(entries) == {str(src), str(src / "to-dir"), str(src / "dangling")}
    to_dir = entries[str(src / "to-dir")]
    assert to_dir.kind == "symlink" and to_dir.link_target == str(target_dir)
    assert to_dir.size == len(str(target_dir))
    dangling = entries[str(src / "dangling")]
    assert dangling.kind == "symlink" and dangling.link_target == "does/not/exist"
    assert (dangling.uid, dangling.gid) == (77, 88)
    assert rec.problems == []

    # A top-level path that is a symlink is captured as the symlink itself.
    root = walker.stat_root(str(src / "to-dir"))
    assert root is not None and root.kind == "symlink" and root.name == "to-dir"
    with pytest.raises(SourceError):
        walker.scan_dir(root)


def test_xattrs_are_captured_sorted(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    walker, rec = make_walker()
    if xattrs_supported(f):
        os.setxattr(f, "user.zeta", b"last")
        os.setxattr(f, "user.alpha", b"\x00\xffbinary")
        os.setxattr(tmp_path, "user.dir", b"on a dir")
        entries = walk(walker, tmp_path)
        assert entries[str(f)].xattrs == (("user.alpha", b"\x00\xffbinary"), ("user.zeta", b"last"))
        assert ("user.dir", b"on a dir") in entries[str(tmp_path)].xattrs
    else:
        # The filesystem has no xattrs: the walker must say "none", not fail.
        entries = walk(walker, tmp_path)
        assert entries[str(f)].xattrs == ()
    assert rec.problems == []


def test_xattrs_unsupported_gives_empty_tuple(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_text("x")

    def no_xattrs(*args: Any, **kwargs: Any) -> list[str]:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "listxattr", no_xattrs)
    walker, rec = make_walker()
    entries = walk(walker, tmp_path)
    assert entries[str(tmp_path / "f")].xattrs == ()
    assert rec.problems == []


def test_xattr_read_failure_is_reported_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_text("x")

    def denied(*args: Any, **kwargs: Any) -> list[str]:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "listxattr", denied)
    walker, rec = make_walker()
    entries = walk(walker, tmp_path)
    assert entries[str(tmp_path / "f")].xattrs == ()
    assert rec.by_path()[str(tmp_path / "f")].incomplete


def test_a_fifo_is_kept_and_a_socket_skipped_with_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.mkfifo(tmp_path / "pipe")
    monkeypatch.chdir(tmp_path)  # AF_UNIX paths are limited to 108 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("sock")
        (tmp_path / "regular").write_text("r")
        walker, rec = make_walker()
        entries = walk(walker, tmp_path)
    finally:
        sock.close()
    assert set(entries) == {str(tmp_path), str(tmp_path / "regular"), str(tmp_path / "pipe")}
    assert entries[str(tmp_path / "pipe")].kind == "fifo"
    assert rec.problems == [Problem(str(tmp_path / "sock"), "skipped socket", incomplete=False)]
    assert walker.stat_root(str(tmp_path / "sock")) is None


def test_unreadable_directory_is_reported_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "inside").write_text("x")
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "visible").write_text("y")
    locked_ino = os.lstat(tmp_path / "locked").st_ino
    real_scandir = os.scandir

    def fake_scandir(arg: Any) -> Any:
        # The walker lists an open directory fd; recognise the locked one by its inode.
        ino = os.fstat(arg).st_ino if isinstance(arg, int) else os.lstat(arg).st_ino
        if ino == locked_ino:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_scandir(arg)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    walker, rec = make_walker()
    entries = walk(walker, tmp_path)
    assert str(tmp_path / "locked") in entries  # the directory itself is kept
    assert str(tmp_path / "locked" / "inside") not in entries
    assert str(tmp_path / "open" / "visible") in entries
    problem = rec.by_path()[str(tmp_path / "locked")]
    assert problem.incomplete and "Permission denied" in problem.message


def test_children_sorted_by_bytes_and_undecodable_names_survive(tmp_path: Path) -> None:
    raw_names = [b"b", b"a", b"Z", "é".encode(), b"\xffraw", b"a b", b"_"]
    for raw in raw_names:
        with open(os.path.join(os.fsencode(tmp_path), raw), "wb") as f:
            f.write(raw)
    walker, _ = make_walker()
    root = walker.stat_root(str(tmp_path))
    assert root is not None
    children = walker.scan_dir(root)
    assert [os.fsencode(c.name) for c in children] == sorted(raw_names)
    raw = next(c for c in children if os.fsencode(c.name) == b"\xffraw")
    with walker.open_regular_file(raw) as f:
        assert f.read() == b"\xffraw"


def test_excludes_drop_entries_and_whole_directories(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for rel in ["app.log", "keep.txt", "cache/x", "node/tmp/y", "node/tmpfile/z", "deep/a/tmp/q"]:
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    (src / "file-named-tmp").mkdir()
    (src / "file-named-tmp" / "tmp").write_text("a file, not a directory")
    patterns = ["*.log", f"{src}/cache", f"{src}/**/tmp/", "nothing-matches"]
    walker, rec = make_walker(patterns)
    found = {os.path.relpath(p, src) for p in walk(walker, src)}
    assert found == {
        ".",
        "keep.txt",
        "node",
        "node/tmpfile",
        "node/tmpfile/z",
        "deep",
        "deep/a",
        "file-named-tmp",
        "file-named-tmp/tmp",
    }
    assert rec.problems == []  # excluded entries are silent
    assert walker.stat_root(str(src / "app.log")) is None


def test_entries_vanishing_during_the_scan_are_notices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ghost").write_text("gone soon")
    (tmp_path / "stays").write_text("here")
    real_stat = os.stat

    def vanishing_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if path == "ghost":
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", vanishing_stat)
    walker, rec = make_walker()
    entries = walk(walker, tmp_path)
    assert str(tmp_path / "stays") in entries and str(tmp_path / "ghost") not in entries
    assert rec.problems == [Problem(str(tmp_path / "ghost"), rec.problems[0].message, False)]
    assert "vanished" in rec.problems[0].message


def test_directory_replaced_before_its_scan_is_incomplete(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    walker, rec = make_walker()
    root = walker.stat_root(str(tmp_path))
    assert root is not None
    [d] = walker.scan_dir(root)
    os.rename(tmp_path / "d", tmp_path / "old")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "new").write_text("n")
    assert walker.scan_dir(d) == []
    assert rec.problems[-1].incomplete and "replaced" in rec.problems[-1].message
    # Swapped for a symlink: never listed through it.
    shutil.rmtree(tmp_path / "d")
    (tmp_path / "d").symlink_to(tmp_path / "old")
    assert walker.scan_dir(d) == []
    assert rec.problems[-1].incomplete and "replaced" in rec.problems[-1].message


def test_stat_root_errors(tmp_path: Path) -> None:
    walker, _ = make_walker()
    with pytest.raises(SourceError, match="no such file or directory"):
        walker.stat_root(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="not an absolute path"):
        walker.stat_root("relative/path")
    entry = walker.stat_root(str(tmp_path) + "/")
    assert entry is not None and entry.path == str(tmp_path)
    slash = walker.stat_root("/")
    assert slash is not None and slash.name == "/" and slash.kind == "dir"


# --- open_regular_file -------------------------------------------------------------------


def file_entry(walker: FileWalker, path: Path) -> FsEntry:
    entry = walker.stat_root(str(path))
    assert entry is not None
    return entry


def read_in_directory(walker: FileWalker, entry: FsEntry) -> bytes:
    """`read_small_file` of ``entry`` by its name in its directory (`open_directory`)."""
    directory = file_entry(walker, Path(entry.path).parent)
    dir_fd = walker.open_directory(directory)
    assert dir_fd is not None
    try:
        return walker.read_small_file(entry, 1 << 20, dir_fd)
    finally:
        os.close(dir_fd)


# Every way of reading a file makes the same checks and raises the same errors.
OPENERS = {
    "open_regular_file": lambda w, e: w.open_regular_file(e),
    "read_small_file": lambda w, e: w.read_small_file(e, 1 << 20),
    "read_small_file_in_directory": read_in_directory,
}
opener = pytest.mark.parametrize("read", OPENERS.values(), ids=OPENERS.keys())


def test_open_regular_file_reads_unbuffered(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    (tmp_path / "f").write_bytes(data)
    walker, _ = make_walker()
    with walker.open_regular_file(file_entry(walker, tmp_path / "f")) as f:
        assert isinstance(f, io.FileIO)
        assert f.read() == data


@opener
def test_opening_refuses_a_replaced_file(tmp_path: Path, read: Any) -> None:
    walker, _ = make_walker()
    (tmp_path / "f").write_text("original")
    entry = file_entry(walker, tmp_path / "f")
    (tmp_path / "new").write_text("replacement")
    os.rename(tmp_path / "new", tmp_path / "f")
    with pytest.raises(SourceError, match="replaced during backup"):
        read(walker, entry)


@opener
def test_opening_never_follows_a_symlink(tmp_path: Path, read: Any) -> None:
    walker, _ = make_walker()
    (tmp_path / "f").write_text("original")
    entry = file_entry(walker, tmp_path / "f")
    os.unlink(tmp_path / "f")
    (tmp_path / "secret").write_text("secret")
    (tmp_path / "f").symlink_to(tmp_path / "secret")
    with pytest.raises(SourceError, match=re.escape(str(tmp_path / "f"))):
        read(walker, entry)


@opener
def test_opening_does_not_hang_on_a_fifo(tmp_path: Path, read: Any) -> None:
    walker, _ = make_walker()
    (tmp_path / "f").write_text("original")
    entry = file_entry(walker, tmp_path / "f")
    os.unlink(tmp_path / "f")
    os.mkfifo(tmp_path / "f")
    with pytest.raises(SourceError, match="replaced during backup"):
        read(walker, entry)


@opener
def test_opening_missing_and_non_file(tmp_path: Path, read: Any) -> None:
    walker, _ = make_walker()
    (tmp_path / "f").write_text("x")
    entry = file_entry(walker, tmp_path / "f")
    os.unlink(tmp_path / "f")
    with pytest.raises(SourceVanished, match="vanished during backup"):
        read(walker, entry)
    with pytest.raises(SourceError, match="not a regular file"):
        read(walker, file_entry(walker, tmp_path))


def test_read_small_file_reads_the_whole_file_and_sees_it_grow_or_shrink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walker, _ = make_walker()
    f = tmp_path / "f"
    f.write_bytes(b"0123456789")
    entry = file_entry(walker, f)
    assert walker.read_small_file(entry, 1000) == b"0123456789"
    f.write_bytes(b"0123456789" * 5)  # grew since it was listed
    assert walker.read_small_file(entry, 1000) == b"0123456789" * 5
    assert walker.read_small_file(entry, 20) == b"01234567890123456789"  # stops at the limit
    f.write_bytes(b"0123")  # shrank
    assert walker.read_small_file(entry, 1000) == b"0123"
    f.write_bytes(b"")
    assert walker.read_small_file(entry, 1000) == b""

    # Short reads (a network or FUSE filesystem) are read on to the end.
    data = os.urandom(5000)
    f.write_bytes(data)
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, min(n, 333)))
    assert walker.read_small_file(file_entry(walker, f), 1 << 20) == data


def test_a_file_is_read_by_name_in_the_directory_opened_not_by_its_path(tmp_path: Path) -> None:
    walker, _ = make_walker()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"listed here")
    directory = file_entry(walker, tmp_path / "d")
    entry = file_entry(walker, tmp_path / "d" / "f")
    dir_fd = walker.open_directory(directory)
    assert dir_fd is not None
    try:
        # The directory moves after it was opened: its path no longer leads to the file.
        os.rename(tmp_path / "d", tmp_path / "moved")
        with pytest.raises(SourceVanished):
            walker.read_small_file(entry, 1000)
        assert walker.read_small_file(entry, 1000, dir_fd) == b"listed here"
    finally:
        os.close(dir_fd)


def test_open_directory_refuses_a_replaced_or_missing_directory(tmp_path: Path) -> None:
    walker, _ = make_walker()
    (tmp_path / "d").mkdir()
    directory = file_entry(walker, tmp_path / "d")
    os.rename(tmp_path / "d", tmp_path / "old")
    (tmp_path / "d").mkdir()  # another directory at the same path
    assert walker.open_directory(directory) is None
    os.rmdir(tmp_path / "d")
    assert walker.open_directory(directory) is None
    os.rename(tmp_path / "old", tmp_path / "d")  # the very directory again
    dir_fd = walker.open_directory(directory)
    assert dir_fd is not None
    os.close(dir_fd)


def test_open_regular_file_without_noatime_permission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not getattr(os, "O_NOATIME", 0):
        pytest.skip("no O_NOATIME on this platform")
    (tmp_path / "f").write_text("content")
    walker, _ = make_walker()
    entry = file_entry(walker, tmp_path / "f")
    real_open = os.open
    calls: list[int] = []

    def picky_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        calls.append(flags)
        if flags & os.O_NOATIME:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", picky_open)
    with walker.open_regular_file(entry) as f:
        assert f.read() == b"content"
    assert len(calls) == 2 and calls[0] & os.O_NOATIME and not calls[1] & os.O_NOATIME
    assert all(c & os.O_NOFOLLOW for c in calls)


# --- one file system ---------------------------------------------------------------------


def test_one_file_system_keeps_mount_points_empty(
    tmp_path: Path, tmpfs_below: Callable[[Path], None]
) -> None:
    src = tmp_path / "src"
    tmpfs_below(src / "mnt")
    (src / "mnt" / "on-tmpfs").write_text("other filesystem")
    (src / "local").write_text("same filesystem")

    walker, rec = make_walker(one_file_system=True)
    entries = walk(walker, src)
    assert set(entries) == {str(src), str(src / "local"), str(src / "mnt")}
    assert entries[str(src / "mnt")].kind == "dir"
    problem = rec.by_path()[str(src / "mnt")]
    assert not problem.incomplete and "mount point" in problem.message

    walker, rec = make_walker(one_file_system=False)
    entries = walk(walker, src)
    assert str(src / "mnt" / "on-tmpfs") in entries
    assert rec.problems == []

    # A mount point given as a top-level path is captured in full.
    walker, rec = make_walker(one_file_system=True)
    assert str(src / "mnt" / "on-tmpfs") in walk(walker, src / "mnt")


def test_an_unchanged_file_takes_its_xattrs_from_what_was_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kept").write_text("k")
    (tmp_path / "new").write_text("n")
    (tmp_path / "touched").write_text("t")
    asked: list[str] = []
    real = os.listxattr

    def counting(path: Any, *args: Any, **kwargs: Any) -> list[str]:
        asked.append(os.path.basename(os.fsdecode(path)))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "listxattr", counting)
    recorded = (("user.recorded", b"as the last backup saw it"),)

    def known(name: str) -> KnownFile:
        st = os.lstat(tmp_path / name)
        return KnownFile(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, recorded)

    was = {"kept": known("kept"), "touched": known("touched")}
    time.sleep(0.01)
    os.chmod(tmp_path / "touched", 0o600)  # a new ctime, as setxattr gives
    walker, rec = make_walker()
    top = walker.stat_root(str(tmp_path))
    assert top is not None
    children = {e.name: e for e in walker.scan_dir(top, was)}
    assert children["kept"].xattrs == recorded
    assert "kept" not in asked
    assert children["touched"].xattrs == () and "touched" in asked
    assert children["new"].xattrs == () and "new" in asked
    assert rec.problems == []


def test_will_read_neither_blocks_nor_raises_whatever_the_entry_became(tmp_path: Path) -> None:
    walker, rec = make_walker()
    for name in ("kept", "gone", "fifo"):
        (tmp_path / name).write_bytes(b"listed as a file")
    directory = file_entry(walker, tmp_path)
    entries = {name: file_entry(walker, tmp_path / name) for name in ("kept", "gone", "fifo")}
    os.unlink(tmp_path / "gone")
    os.unlink(tmp_path / "fifo")
    os.mkfifo(tmp_path / "fifo")  # opening it to read would block without O_NONBLOCK
    dir_fd = walker.open_directory(directory)
    assert dir_fd is not None
    try:
        for entry in entries.values():
            will_read(entry.name, dir_fd)
        assert walker.read_small_file(entries["kept"], 1000, dir_fd) == b"listed as a file"
    finally:
        os.close(dir_fd)
    assert rec.problems == []  # a hint reports nothing: the read that follows does
