"""End-to-end tests of reading a repository without a lock: the global ``--no-lock``, and the
automatic fallback when the repository is read-only.

The read-only repository is a real read-only bind mount of a repository directory (tests run
as root, and file modes do not stop root); the mount is undone in the fixture's teardown. A
machine where the mount cannot be made fails these tests rather than skipping them.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import FAST_INIT, PASSWORD, Result, assert_one_line_error, describe, inside, make_tree
from stackvault.errors import EXIT_LOCKED, EXIT_USAGE
from stackvault.repo.repository import Repository
from stackvault.store.local import LocalStore
from support.dirsource import register_dir_sources

Cli = Callable[..., Result]
NOTICE = "is read-only"
WITHOUT_LOCK = "so it is read without a lock"


def lock_files(repo: Path) -> list[str]:
    locks = repo / "locks"
    return sorted(os.listdir(locks)) if locks.is_dir() else []


@pytest.fixture(autouse=True)
def _sources(monkeypatch: pytest.MonkeyPatch) -> None:
    register_dir_sources(monkeypatch)  # testdir://, a directory-backed source


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "data", seed=7)


@pytest.fixture
def backed_up(initialised: Path, cli: Cli, data: Path) -> Path:
    """The repository of ``initialised`` with two snapshots of ``data`` (and an artifact)."""
    assert cli("backup", data).code == 0
    (data / "added.txt").write_text("new in the second snapshot\n")
    res = cli("backup", data, "--source", f"testdir://{data}?name=files")
    assert res.code == 0, res.err
    return initialised


@pytest.fixture
def read_only(backed_up: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``backed_up`` seen through a read-only bind mount, which STACKVAULT_REPOSITORY names."""
    mountpoint = tmp_path / "ro"
    mountpoint.mkdir()
    subprocess.run(["mount", "--bind", str(backed_up), str(mountpoint)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mountpoint)], check=True)
        with pytest.raises(OSError) as info:  # really read-only, even for root
            (mountpoint / "locks" / "probe").write_bytes(b"x")
        assert info.value.errno == errno.EROFS
        monkeypatch.setenv("STACKVAULT_REPOSITORY", str(mountpoint))
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


# --- a read-only repository ----------------------------------------------------------------------


def test_a_read_only_repository_is_read_without_a_lock_after_a_notice_and_not_written(
    read_only: Path, cli: Cli, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # key add gets a new password, so that it goes as far as the lock it cannot write
    monkeypatch.setenv("STACKVAULT_NEW_PASSWORD", "another password")
    # These never lock: nothing to say.
    res = cli("snapshots", "--json")
    assert res.code == 0 and res.err == "", res.err
    first, second = (s["id"] for s in res.json())
    res = cli("ls", "latest")
    assert res.code == 0 and res.err == "", res.err
    assert str(data / "added.txt") in res.out.splitlines()
    res = cli("diff", first, second)
    assert res.code == 0 and res.err == "", res.err
    assert f"+    {data / 'added.txt'}" in res.out.splitlines()

    # Each command that locks says once that it reads without a lock, and works.
    target = tmp_path / "restored"
    for args in (
        ["restore", "latest", "--target", target, "--verify"],
        ["dump", "latest", data / "added.txt"],
        ["check", "--read-data"],
        ["sha256sums", "latest"],
        ["export", "latest", "--output", tmp_path / "out.tar"],
        ["stats"],
    ):
        res = cli(*args)
        assert res.code == 0, (args, res.err)
        assert "Traceback" not in res.err
        notices = [line for line in res.err.splitlines() if NOTICE in line]
        assert len(notices) == 1, (args, res.err)
        assert WITHOUT_LOCK in notices[0] and str(read_only) in notices[0]
        assert "read-only file system" in notices[0]
    assert describe(inside(target, data)) == describe(data)
    assert cli("dump", "latest", data / "added.txt").out == "new in the second snapshot\n"

    # An artifact restored into a live target only reads the repository too.
    live = tmp_path / "live"
    res = cli("restore", "latest", "--artifact", "files", "--to", f"testdir://{live}")
    assert res.code == 0, res.err
    assert sum(NOTICE in line for line in res.err.splitlines()) == 1
    assert describe(live) == describe(data)

    # --quiet silences the notice, not the result.
    res = cli("--quiet", "check")
    assert res.code == 0 and res.err == ""

    assert lock_files(read_only) == []

    # Commands that write fail as before: one line naming the read-only file system.
    for args in (["backup", data], ["forget", "--keep-last", "1"], ["prune"], ["key", "add"]):
        line = assert_one_line_error(cli(*args))
        assert "read-only file system" in line and "locks" in line, (args, line)
        assert NOTICE not in line
    # An artifact restore with --overwrite writes a safety snapshot: it needs the lock.
    line = assert_one_line_error(
        cli("restore", "latest", "--artifact", "files", "--to", f"testdir://{data}", "--overwrite")
    )
    assert "read-only file system" in line


def test_copy_from_a_read_only_repository_locks_only_the_destination(
    read_only: Path, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "dest"
    assert cli("--repo", dest, *FAST_INIT).code == 0
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", PASSWORD)
    res = cli("copy", "--from", read_only, "--to", dest)
    assert res.code == 0, res.err
    notices = [line for line in res.err.splitlines() if NOTICE in line]
    assert len(notices) == 1 and "source repository" in notices[0], res.err
    assert "copied 2 snapshot(s)" in res.out
    assert len(cli("--repo", dest, "snapshots", "--json").json()) == 2
    assert lock_files(dest) == []

    # Copying *into* the read-only repository fails as any write does.
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", PASSWORD)
    line = assert_one_line_error(cli("copy", "--from", dest, "--to", read_only))
    assert "read-only file system" in line


# --- --no-lock on a writable repository ----------------------------------------------------------


@pytest.fixture
def held_exclusively(backed_up: Path) -> Iterator[Path]:
    """``backed_up`` while this process holds an exclusive lock on it (as prune would)."""
    repo = Repository.open(LocalStore(backed_up), PASSWORD.encode())
    with repo.lock(exclusive=True, operation="prune"):
        yield backed_up


def test_no_lock_reads_while_another_process_holds_an_exclusive_lock(
    held_exclusively: Path, cli: Cli, data: Path, tmp_path: Path
) -> None:
    (held,) = lock_files(held_exclusively)

    res = cli("restore", "latest", "--target", tmp_path / "locked")
    assert res.code == EXIT_LOCKED, res.err
    assert "locked exclusively by 'prune'" in res.err

    target = tmp_path / "restored"
    res = cli("--no-lock", "restore", "latest", "--target", target, "--verify")
    assert res.code == 0, res.err
    assert NOTICE not in res.err
    assert describe(inside(target, data)) == describe(data)
    for args in (
        ["dump", "latest", data / "added.txt"],
        ["check", "--read-data"],
        ["sha256sums", "latest"],
        ["export", "latest", "--output", tmp_path / "out.tar"],
        ["stats"],
        ["snapshots"],
        ["ls", "latest"],
        ["key", "list"],
    ):
        res = cli("--no-lock", *args)
        assert res.code == 0, (args, res.err)
    live = tmp_path / "live"
    res = cli("--no-lock", "restore", "latest", "--artifact", "files", "--to", f"testdir://{live}")
    assert res.code == 0, res.err
    assert describe(live) == describe(data)

    # No lock object was written (or left): only the one held.
    assert lock_files(held_exclusively) == [held]


def test_no_lock_with_copy_applies_to_the_source_only(
    held_exclusively: Path, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "dest"
    assert cli("--repo", dest, *FAST_INIT).code == 0
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", PASSWORD)

    res = cli("copy", "--from", held_exclusively, "--to", dest)
    assert res.code == EXIT_LOCKED, res.err
    res = cli("--no-lock", "copy", "--from", held_exclusively, "--to", dest)
    assert res.code == 0, res.err
    assert "copied 2 snapshot(s)" in res.out

    # The destination is written: it is locked even with --no-lock.
    other = Repository.open(LocalStore(dest), PASSWORD.encode())
    with other.lock(exclusive=True, operation="prune"):
        res = cli("--no-lock", "copy", "--from", held_exclusively, "--to", dest)
        assert res.code == EXIT_LOCKED, res.err
        assert "locked exclusively by 'prune'" in res.err


def test_writing_commands_refuse_no_lock(backed_up: Path, cli: Cli, data: Path) -> None:
    before = cli("snapshots", "--json").json()
    for args, name in (
        (["backup", data], "backup"),
        (["forget", "--keep-last", "1", "--prune"], "forget"),
        (["prune"], "prune"),
        (["unlock"], "unlock"),
        (["key", "add"], "key add"),
        (["repair", "index"], "repair index"),
        (["init"], "init"),
    ):
        res = cli("--no-lock", *args)
        assert res.code == EXIT_USAGE, (args, res.err)
        line = assert_one_line_error(res)
        assert f"`{name}` writes to it and must lock it" in line, line
        assert "--no-lock is only for commands that only read the repository" in line
    res = cli(
        "--no-lock",
        "restore",
        "latest",
        "--artifact",
        "files",
        "--to",
        f"testdir://{data}",
        "--overwrite",
    )
    assert res.code == EXIT_USAGE
    assert "--no-lock cannot be used with --overwrite --to" in assert_one_line_error(res)
    assert cli("snapshots", "--json").json() == before
    assert lock_files(backed_up) == []


def test_no_lock_help_states_the_risk(cli: Cli) -> None:
    res = cli("--help")
    assert res.code == 0
    text = " ".join(res.out.split())
    assert "--no-lock" in text
    assert "a prune running meanwhile may delete data while it is read" in text
    assert "never give wrong bytes" in text


def test_a_full_repository_disk_is_read_with_no_lock(
    backed_up: Path, cli: Cli, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No space for a lock object: a read-only command says how to read anyway."""
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(full)], check=True)
    try:
        shutil.copytree(backed_up, full / "repo")
        with open(full / "filler", "wb") as f, pytest.raises(OSError) as info:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        assert info.value.errno == errno.ENOSPC
        monkeypatch.setenv("STACKVAULT_REPOSITORY", str(full / "repo"))

        target = tmp_path / "restored"
        line = assert_one_line_error(cli("restore", "latest", "--target", target))
        assert "no space left" in line and "or pass --no-lock to read it" in line, line
        line = assert_one_line_error(cli("backup", data))
        assert "no space left" in line and "--no-lock" not in line, line

        res = cli("--no-lock", "restore", "latest", "--target", target, "--verify")
        assert res.code == 0, res.err
        assert describe(inside(target, data)) == describe(data)
    finally:
        subprocess.run(["umount", str(full)], check=True)
