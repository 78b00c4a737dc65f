"""End-to-end tests of files a backup must neither drop nor alter: trees deeper than Python's
recursion limit, paths longer than PATH_MAX, sparse files, fifos and device nodes, sockets,
and files deleted while a backup runs.

Real files in ``tmp_path`` (or a short directory of ``/tmp`` where a path length matters), a
real local repository, the real CLI in-process (``cli`` fixture). Trees whose paths are longer
than PATH_MAX are made and compared through directory file descriptors, as no path reaches
them.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import FAST_INIT, PASSWORD, Result, inside

Cli = Callable[..., Result]
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# --- helpers -----------------------------------------------------------------------------------


def make_chain(root: Path, depth: int, name: str, leaf: bytes) -> None:
    """``root/name/name/.../name`` ``depth`` directories deep, holding a file ``leaf.txt``
    (content ``leaf``) at the bottom and a file ``at-<level>`` every 100 levels; made through
    directory fds, so the path may exceed PATH_MAX."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, _DIR)
    try:
        for level in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = child
            if level % 100 == 0:
                _write_at(fd, f"at-{level}", f"level {level}\n".encode())
        _write_at(fd, "leaf.txt", leaf)
    finally:
        os.close(fd)


def _write_at(dir_fd: int, name: str, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def fd_describe(root: Path) -> dict[tuple[str, ...], tuple[Any, ...]]:
    """Relative path (components) → (kind, mode, sha256 / link text / device numbers) of
    everything below ``root``, walked iteratively through directory fds (no path limit)."""
    out: dict[tuple[str, ...], tuple[Any, ...]] = {}
    stack: list[tuple[tuple[str, ...], int]] = [((), os.open(root, _DIR))]
    while stack:
        rel, fd = stack.pop()
        try:
            with os.scandir(fd) as it:
                names = sorted(e.name for e in it)
            for name in names:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                mode = stat.S_IMODE(st.st_mode)
                key = (*rel, name)
                if stat.S_ISDIR(st.st_mode):
                    out[key] = ("dir", mode)
                    stack.append((key, os.open(name, _DIR, dir_fd=fd)))
                elif stat.S_ISLNK(st.st_mode):
                    out[key] = ("symlink", os.readlink(name, dir_fd=fd))
                elif stat.S_ISREG(st.st_mode):
                    out[key] = ("file", mode, _sha_at(fd, name))
                else:
                    kind = stat.S_IFMT(st.st_mode)
                    out[key] = ("special", kind, mode, os.major(st.st_rdev), os.minor(st.st_rdev))
        finally:
            os.close(fd)
    return out


def _sha_at(dir_fd: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        sha = hashlib.sha256()
        while block := os.read(fd, 1 << 20):
            sha.update(block)
        return sha.hexdigest()
    finally:
        os.close(fd)


@contextmanager
def short_tmp() -> Iterator[Path]:
    """A directory with a short path in /tmp (``tmp_path`` is long: deep trees and sockets
    have length limits), removed afterwards even when it is deeper than PATH_MAX."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="sv-"))
    try:
        yield path
    finally:
        _rmtree_deep(path)


def _rmtree_deep(root: Path) -> None:
    """Remove a tree of any depth (shutil.rmtree goes by path and recursion)."""
    top = os.open(root, _DIR)
    stack: list[tuple[int, list[str]]] = [(top, [])]
    names: list[str] = []
    while stack:
        fd, _ = stack[-1]
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        sub = next((n for n, is_dir in entries if is_dir), None)
        for name, is_dir in entries:
            if not is_dir:
                os.unlink(name, dir_fd=fd)
        if sub is not None:
            stack.append((os.open(sub, _DIR, dir_fd=fd), []))
            names.append(sub)
            continue
        os.close(fd)
        stack.pop()
        if stack:
            os.rmdir(names.pop(), dir_fd=stack[-1][0])
    os.rmdir(root)


# --- trees deeper than the recursion limit ---------------------------------------------------


def test_a_tree_2000_levels_deep_is_backed_up_listed_checked_copied_and_restored(
    initialised: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    with short_tmp() as base:
        src = base / "s"
        make_chain(src, 2000, "d", b"at the bottom\n")
        want = fd_describe(src)
        assert len(want) == 2000 + 20 + 1

        res = cli("backup", "--json", src)
        assert res.code == 0, res.err
        assert res.json()["summary"]["files"] == 21
        listed = cli("ls", "--json", "latest")
        assert listed.code == 0, listed.err
        assert len(listed.json()) == len(str(src).split("/")) - 1 + len(want)
        checked = cli("check", "--read-data")
        assert checked.code == 0, checked.err
        leaf = Path(str(src) + "/d" * 2000, "leaf.txt")
        leaf.write_bytes(b"changed at the bottom\n")
        want = fd_describe(src)
        assert cli("backup", src).code == 0
        first, latest = (s["id"] for s in cli("snapshots", "--json").json())
        changes = cli("diff", "--json", first, latest)
        assert changes.code == 0, changes.err
        # The snapshot also holds the folders above the tree (/tmp ...), which anything else
        # on the machine may touch between the two backups: only the tree is compared.
        in_tree = [c for c in changes.json()["changes"] if c["path"].startswith(f"{src}/")]
        assert in_tree == [{"kind": "M", "path": str(leaf)}]

        second = tmp_path / "second"
        assert cli("--repo", second, *FAST_INIT).code == 0
        monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", PASSWORD)
        copied = cli("--repo", second, "copy", "--from", initialised)
        assert copied.code == 0, copied.err
        target = base / "t"
        res = cli("--repo", second, "restore", "latest", "--target", target)
        assert res.code == 0, res.err
        assert fd_describe(inside(target, src)) == want
    assert time.monotonic() - started < 120


# --- paths longer than PATH_MAX ----------------------------------------------------------------


def test_paths_longer_than_path_max_are_backed_up_and_restored(initialised: Path, cli: Cli) -> None:
    name = "n" * 49 + "x"  # 50 characters: 300 levels make a path of ~15,300
    with short_tmp() as base:
        src = base / "s"
        make_chain(src, 300, name, os.urandom(5000))
        want = fd_describe(src)
        leaf = str(src) + f"/{name}" * 300 + "/leaf.txt"
        assert len(leaf) > 15_000

        res = cli("backup", "--json", src)
        assert res.code == 0, res.err
        assert res.json()["complete"] is True
        assert res.json()["summary"]["files"] == 4
        assert leaf in {e["path"] for e in cli("ls", "--json", "latest").json()}
        target = base / "t"
        res = cli("restore", "latest", "--target", target, "--verify")
        assert res.code == 0, res.err
        assert "verified 4 files" in res.out
        assert fd_describe(inside(target, src)) == want


# --- fifos, device nodes and sockets -----------------------------------------------------------

PR_CAPBSET_DROP = 24
CAP_MKNOD = 27


def _drop_mknod_capability() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_MKNOD, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def make_specials(src: Path) -> None:
    src.mkdir(parents=True)
    (src / "plain.txt").write_text("plain")
    os.mkfifo(src / "pipe", 0o640)
    os.mknod(src / "null-like", 0o620 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(src / "disk-like", 0o600 | stat.S_IFBLK, os.makedev(7, 200))
    for name, mode in (("pipe", 0o640), ("null-like", 0o620), ("disk-like", 0o600)):
        os.chmod(src / name, mode)  # not the umask's
    import socket

    cwd = os.getcwd()
    os.chdir(src)  # bound by a short relative name: socket addresses are limited to ~108 bytes
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind("sock")
    finally:
        os.chdir(cwd)


def test_fifos_and_device_nodes_are_backed_up_listed_exported_and_restored(
    initialised: Path, tmp_path: Path, cli: Cli
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test expects to run as root (it makes device nodes)")
    src = tmp_path / "src"
    make_specials(src)
    want = fd_describe(src)
    del want[("sock",)]

    res = cli("backup", "--json", src)
    assert res.code == 0, res.err
    assert res.json()["complete"] is True
    assert f"{src / 'sock'}: skipped socket" in res.err  # said, not silently dropped
    long = cli("ls", "-l", "latest", src).out.splitlines()
    line = {row.rsplit(" ", 1)[-1]: row for row in long}
    assert line[str(src / "pipe")].startswith("prw-r-----")
    assert line[str(src / "null-like")].startswith("crw--w----")
    assert " 1, 3 " in line[str(src / "null-like")]
    assert line[str(src / "disk-like")].startswith("brw-------")
    assert " 7, 200 " in line[str(src / "disk-like")]
    assert str(src / "sock") not in line

    tar_path = tmp_path / "out.tar"
    assert cli("export", "latest", "-o", tar_path, "--path", src).code == 0
    import tarfile

    with tarfile.open(tar_path) as tar:
        members = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers()}
    assert members["pipe"].isfifo()
    assert members["null-like"].ischr()
    assert (members["null-like"].devmajor, members["null-like"].devminor) == (1, 3)
    assert members["disk-like"].isblk()
    assert (members["disk-like"].devmajor, members["disk-like"].devminor) == (7, 200)

    target = tmp_path / "restored"
    res = cli("restore", "latest", "--target", target)
    assert res.code == 0, res.err
    assert fd_describe(inside(target, src)) == want


def test_device_nodes_that_cannot_be_made_are_errors_and_the_rest_is_restored(
    initialised: Path, tmp_path: Path, cli: Cli
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test expects to run as root (it makes device nodes)")
    src = tmp_path / "src"
    make_specials(src)
    assert cli("backup", src).code == 0
    target = tmp_path / "restored"
    from conftest import run_subprocess

    res = run_subprocess(
        "restore", "latest", "--target", str(target), preexec_fn=_drop_mknod_capability
    )
    assert res.code == 1, res.err
    assert "Traceback" not in res.err
    for name in ("null-like", "disk-like"):  # each reported
        assert f"error: cannot restore '{str(src / name).lstrip('/')}'" in res.err
    assert "2 fifo(s) or device node(s) could not be created" in res.err
    restored = inside(target, src)
    assert (restored / "plain.txt").read_text() == "plain"
    assert stat.S_ISFIFO(os.lstat(restored / "pipe").st_mode)  # a fifo needs no privilege
    assert not (restored / "null-like").exists()
