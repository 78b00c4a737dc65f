"""End-to-end tests through the CLI: init, opening errors, backup and the ways to look at what is
stored (snapshots, ls, dump, diff, stats), incremental runs, deduplication, excludes, tags,
``--stdin-from-command``, unreadable and special files, and ``--json`` output.

Real files in ``tmp_path``, a real local repository, the real CLI (in-process through the ``cli``
fixture, or as a subprocess where stdin, binary stdout, uids or signals matter).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import FAST_INIT, PASSWORD, Result, assert_one_line_error, make_tree, run_subprocess

Cli = Callable[..., Result]
MiB = 1024 * 1024


# --- helpers -----------------------------------------------------------------------------------


def run_bytes(
    *args: object, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``python -m stackvault`` with binary stdout (``run_subprocess`` decodes text)."""
    return subprocess.run(
        [sys.executable, "-m", "stackvault", *(str(a) for a in args)],
        capture_output=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=120,
    )


def make_socket(path: Path) -> None:
    """A UNIX socket file at ``path``, which stays after the socket is closed. Bound from its
    directory: a socket's address is limited to ~108 bytes."""
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(path.name)
    finally:
        os.chdir(cwd)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def backup_json(cli: Cli, *args: object) -> dict[str, Any]:
    res = cli("backup", "--json", *args)
    assert res.code == 0, res.err
    doc: dict[str, Any] = res.json()
    return doc


def snapshots_json(cli: Cli, *args: object) -> list[dict[str, Any]]:
    res = cli("snapshots", "--json", *args)
    assert res.code == 0, res.err
    docs: list[dict[str, Any]] = res.json()
    return docs


def ls_json(cli: Cli, *args: object) -> list[dict[str, Any]]:
    res = cli("ls", "--json", *args)
    assert res.code == 0, res.err
    docs: list[dict[str, Any]] = res.json()
    return docs


def ls_paths(cli: Cli, snapshot: str, root: Path) -> set[str]:
    """The paths at or below ``root`` that ``ls --json`` lists."""
    prefix = str(root)
    return {
        e["path"]
        for e in ls_json(cli, snapshot)
        if e["path"] == prefix or e["path"].startswith(prefix + "/")
    }


def tree_paths(root: Path) -> set[str]:
    """Every path at or below ``root`` on disk (what a full backup of it must list)."""
    out = {str(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.add(os.path.join(dirpath, name))
    return out


def count_files(root: Path) -> int:
    """Regular files below ``root`` (every name of a hard-linked file counts)."""
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        n += sum(1 for f in files if stat.S_ISREG(os.lstat(os.path.join(dirpath, f)).st_mode))
    return n


def repo_size(repo: Path) -> int:
    """Bytes of every object file in the repository (the store ignores dot files)."""
    total = 0
    for dirpath, _dirs, files in os.walk(repo):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files if f[0] != ".")
    return total


def ancestor_state(path: Path) -> list[tuple[int, int, int]]:
    """Metadata of the directories above ``path`` that trees record (mtime, ctime, nlink)."""
    out = []
    for p in path.parents:
        st = os.lstat(p)
        out.append((st.st_mtime_ns, st.st_ctime_ns, st.st_nlink))
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- 1. init -----------------------------------------------------------------------------------


def test_init_creates_a_repository_and_refuses_a_second_one(repo_env: Path, cli: Cli) -> None:
    res = cli(*FAST_INIT)
    assert res.code == 0, res.err
    header = json.loads((repo_env / "config").read_text())
    assert header["repository"] == "stackvault"
    assert header["version"] == 1
    assert header["id"][:8] in res.out
    assert len(os.listdir(repo_env / "keys")) == 1
    config_before = (repo_env / "config").read_bytes()

    again = cli(*FAST_INIT)
    assert again.code == 1
    line = assert_one_line_error(again)
    assert "already exists" in line
    assert str(repo_env) in line
    # the existing repository is untouched and still opens
    assert (repo_env / "config").read_bytes() == config_before
    assert len(os.listdir(repo_env / "keys")) == 1
    assert cli("snapshots", "--json").code == 0


def test_init_json_prints_the_repository_id(tmp_path: Path, repo_env: Path, cli: Cli) -> None:
    other = tmp_path / "elsewhere" / "repo2"
    res = cli("--repo", other, "--json", *FAST_INIT)
    assert res.code == 0, res.err
    doc = res.json()
    header = json.loads((other / "config").read_text())
    assert doc["id"] == header["id"]
    assert len(doc["id"]) == 32 and int(doc["id"], 16) >= 0
    assert doc["location"] == str(other)
    # --json after the command name works as well
    third = tmp_path / "repo3"
    res3 = cli("--repo", third, *FAST_INIT, "--json")
    assert res3.code == 0, res3.err
    assert res3.json()["id"] == json.loads((third / "config").read_text())["id"]
    assert res3.json()["id"] != doc["id"]


# --- 2. opening: missing repository, passwords, format version --------------------------------


def test_global_options_after_the_command(tmp_path: Path, repo_env: Path, cli: Cli) -> None:
    """`init --repo X`, `snapshots -r X --quiet`: restic's habit; after the command a global
    option wins over the same one before it, and each command's help lists them."""
    other = tmp_path / "after" / "repo"
    res = cli(*FAST_INIT, "--repo", other, "--json")
    assert res.code == 0, res.err
    assert res.json()["id"] == json.loads((other / "config").read_text())["id"]
    listed = cli("snapshots", "-r", other, "--quiet")
    assert (listed.code, listed.out) == (0, "")
    assert cli("--repo", tmp_path / "nowhere", "snapshots", "-r", other, "--json").json() == []
    assert cli("--json", "snapshots", "-r", other).json() == []  # before stands too
    missing = cli("snapshots", "--repo", tmp_path / "nowhere")
    assert missing.code == 10 and "nowhere" in assert_one_line_error(missing)
    help_text = cli("init", "-h").out
    assert "Global options" in help_text
    assert all(flag in help_text for flag in ("--repo", "--password-file", "--quiet", "--json"))


def test_quiet_still_says_what_went_wrong(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    """--quiet hides progress and results, never trouble: cron mails only when there is
    output, so an incomplete snapshot must print its reason and its warning."""
    data = make_tree(tmp_path / "data", files=2)
    res = cli("-q", "backup", data, "--source", f"sqlite://{tmp_path}/missing.db")
    assert res.code == 3, res.err
    assert res.out == ""
    assert "error: artifact:" in res.err and "missing.db" in res.err
    assert "is INCOMPLETE" in res.err


def test_progress_lines_without_a_terminal(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    data = make_tree(tmp_path / "data", files=20)
    res = cli("backup", data, "--progress-interval", "0.000001")
    assert res.code == 0, res.err
    assert any(line.startswith("backup: ") and " files, " in line for line in res.err.splitlines())
    quiet = cli("backup", data, "--force", "--progress-interval", "0.000001", "-q")
    assert (quiet.code, quiet.err) == (0, "")
    none = cli("backup", data, "--force", "--progress-interval", "0")
    assert not any(line.startswith("backup: ") for line in none.err.splitlines())
    bad = cli("backup", data, "--progress-interval", "-1")
    assert bad.code == 2 and "not a number of seconds" in assert_one_line_error(bad)


def test_version_names_the_format_and_the_libraries(cli: Cli) -> None:
    from importlib.metadata import version

    from stackvault import __version__

    res = cli("version")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[:2] == [f"stackvault {__version__}", "repository format 1"]
    assert f"pyfastcdc {version('pyfastcdc')}" in lines
    doc = cli("version", "--json").json()
    assert doc["repository_format"] == 1 and doc["version"] == __version__
    assert doc["libraries"]["cryptography"] == version("cryptography")


def test_missing_repository_exits_10(repo_env: Path, cli: Cli) -> None:
    res = cli("snapshots")
    assert res.code == 10
    line = assert_one_line_error(res)
    assert "no stackvault repository" in line
    assert str(repo_env) in line
    assert not repo_env.exists()  # looking did not create anything


def test_wrong_password_exits_12(
    initialised: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD + "x")
    res = cli("snapshots")
    assert res.code == 12
    assert "wrong password" in assert_one_line_error(res)
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    assert cli("snapshots").code == 0


def test_password_command(
    initialised: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    keeper = tmp_path / "keeper"
    keeper.write_text(PASSWORD + "\nsecond line is not the password\n")
    assert cli("snapshots", "--password-command", f"cat {keeper}").code == 0
    monkeypatch.setenv("STACKVAULT_PASSWORD_COMMAND", f"cat {keeper}")
    assert cli("snapshots").code == 0
    wrong = cli("snapshots", "--password-command", "echo nope")  # the flag wins
    assert wrong.code == 12
    failing = cli("snapshots", "--password-command", "echo sec''ret-output; exit 3")
    line = assert_one_line_error(failing)
    assert failing.code == 1 and "exited with status 3" in line
    assert "secret-output" not in failing.err + failing.out
    both = cli("snapshots", "--password-command", "true", "-p", str(keeper))
    assert both.code == 2 and "not both" in assert_one_line_error(both)


def test_no_password_and_no_terminal(initialised: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    monkeypatch.delenv("STACKVAULT_PASSWORD_FILE", raising=False)
    res = run_subprocess("snapshots", stdin=subprocess.DEVNULL, timeout=60)
    assert res.code == 1, res.err
    line = assert_one_line_error(res)
    assert "STACKVAULT_PASSWORD" in line
    assert res.out == ""


def test_password_file_first_line_only(
    initialised: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    assert cli("--password-file", pw, "snapshots").code == 0
    pw.write_text(PASSWORD + "\nsecond line is not part of it\n")
    assert cli("--password-file", pw, "snapshots").code == 0
    pw.write_text(PASSWORD)  # no newline at all
    assert cli("-p", pw, "snapshots").code == 0
    # the file's content is really used: a wrong first line fails
    pw.write_text("not-the-password\n" + PASSWORD + "\n")
    res = cli("--password-file", pw, "snapshots")
    assert res.code == 12
    # and so is the environment variable
    pw.write_text(PASSWORD + "\n")
    monkeypatch.setenv("STACKVAULT_PASSWORD_FILE", str(pw))
    assert cli("snapshots").code == 0
    # a missing file is a one-line error naming it
    res = cli("--password-file", tmp_path / "missing", "snapshots")
    assert res.code == 1
    assert str(tmp_path / "missing") in assert_one_line_error(res)


def test_unsupported_format_version(initialised: Path, cli: Cli) -> None:
    cfg = initialised / "config"
    doc = json.loads(cfg.read_text())
    doc["version"] = 99
    cfg.write_text(json.dumps(doc))
    res = cli("snapshots")
    assert res.code != 0
    assert res.code not in (10, 12)
    line = assert_one_line_error(res)
    assert "format version" in line
    assert "99" in line


def test_unsupported_format_version_is_reported_before_asking_for_a_password(
    initialised: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = initialised / "config"
    doc = json.loads(cfg.read_text())
    doc["version"] = 99
    cfg.write_text(json.dumps(doc))
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    res = run_subprocess("snapshots", stdin=subprocess.DEVNULL, timeout=60)
    assert res.code != 0
    line = assert_one_line_error(res)
    assert "format version 99" in line
    assert "PASSWORD" not in line


# --- 3. backup, snapshots, ls, dump, diff, stats ------------------------------------------------


def test_backup_and_snapshots_json(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = make_tree(tmp_path / "src", files=8)
    doc = backup_json(cli, src)
    assert len(doc["id"]) == 64
    assert doc["short_id"] == doc["id"][:8]
    assert doc["paths"] == [str(src)]
    assert doc["tags"] == []
    assert doc["hostname"] == socket.gethostname()
    assert doc["complete"] is True
    assert doc["problems"] == []
    s = doc["summary"]
    n_files = count_files(src)
    assert n_files == 8 + 3
    assert s["files"] == n_files
    assert s["files_new"] == n_files
    assert s["files_unmodified"] == 0 and s["files_changed"] == 0
    n_dirs = 1 + sum(
        1 for p, dirs, _f in os.walk(src) for d in dirs if not os.path.islink(os.path.join(p, d))
    )
    assert n_dirs == 5
    assert s["dirs"] == n_dirs
    data_bytes = sum(
        os.path.getsize(os.path.join(p, f))
        for p, _d, files in os.walk(src)
        for f in files
        if os.path.isfile(os.path.join(p, f)) and not os.path.islink(os.path.join(p, f))
    )
    assert s["bytes"] == data_bytes
    assert s["data_added"] >= 3 * MiB  # the random big.bin cannot be deduplicated away

    listed = snapshots_json(cli)
    assert [x["id"] for x in listed] == [doc["id"]]
    for key in ("id", "short_id", "paths", "tags", "hostname", "complete", "summary"):
        assert listed[0][key] == doc[key]

    table = cli("snapshots")
    assert table.code == 0
    assert doc["short_id"] in table.out
    assert str(src) in table.out
    assert "1 snapshot(s)" in table.out


def test_ls_plain_long_json_and_subpath(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = make_tree(tmp_path / "src", files=4)
    assert cli("backup", src).code == 0

    res = cli("ls", "latest")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    under = {p for p in lines if p == str(src) or p.startswith(str(src) + "/")}
    assert under == tree_paths(src)
    # the ancestors of the backed-up path are listed, in order, before it
    assert lines[: len(src.parents) - 1] == [str(p) for p in reversed(src.parents) if str(p) != "/"]

    long = cli("ls", "-l", "latest")
    assert long.code == 0
    by_path = {line.split(" ", 1)[1].split()[-1]: line for line in long.out.splitlines()}
    note1 = next(line for line in long.out.splitlines() if line.endswith("/note-1.txt"))
    assert note1.startswith("-rw-r----- ")
    size1 = (src / "docs" / "note-1.txt").stat().st_size
    assert f" {size1} " in note1
    link_line = next(line for line in long.out.splitlines() if "/link-to-docs" in line)
    assert link_line.startswith("lrwxrwxrwx")
    assert link_line.endswith(f"{src}/link-to-docs -> docs")
    assert any(line.startswith("drwx") for line in by_path.values())

    entries = {e["path"]: e for e in ls_json(cli, "latest")}
    f = entries[f"{src}/docs/note-0.txt"]
    st = os.lstat(src / "docs" / "note-0.txt")
    assert f["type"] == "file"
    assert f["size"] == st.st_size
    assert f["mode"] == stat.S_IMODE(st.st_mode)
    assert f["mtime_ns"] == st.st_mtime_ns
    assert f["uid"] == st.st_uid and f["gid"] == st.st_gid
    assert f["sha256"] == sha256(src / "docs" / "note-0.txt")
    assert entries[f"{src}/docs/note-1.txt"]["mode"] == 0o640
    assert entries[f"{src}/link-to-docs"]["type"] == "symlink"
    assert entries[f"{src}/link-to-docs"]["target"] == "docs"
    assert entries[f"{src}/empty"]["type"] == "dir"
    assert entries[f"{src}/zero.bin"]["size"] == 0
    assert entries[f"{src}/zero.bin"]["sha256"] == hashlib.sha256(b"").hexdigest()

    sub = cli("ls", "latest", f"{src}/docs/deep")
    assert sub.code == 0, sub.err
    assert sub.out.splitlines() == [
        f"{src}/docs/deep",
        f"{src}/docs/deep/er",
        f"{src}/docs/deep/er/big.bin",
    ]
    one = cli("ls", "latest", f"{src}/docs/note-2.txt")
    assert one.out.splitlines() == [f"{src}/docs/note-2.txt"]
    missing = cli("ls", "latest", f"{src}/no/such/dir")
    assert missing.code == 1
    assert "not in snapshot" in assert_one_line_error(missing)


def test_names_are_printed_verbatim(initialised: Path, tmp_path: Path) -> None:
    """Names are data: `ls`, `ls -l`, `diff` and backup notices print them byte for byte, with no
    emoji codes (``:smile:``), markup (``[bold]``) or other rewriting."""
    src = tmp_path / "src"
    src.mkdir()
    base = os.fsencode(src) + b"/"
    names = [b"a:smile:b", b"[bold]x", b"sp ace", b"bad\xff\xfe"]
    for name in names:
        with open(base + name, "wb") as f:
            f.write(b"x")
    assert run_subprocess("backup", src, timeout=60).code == 0
    make_socket(src / "pipe:fire:")  # skipped, with a notice naming it
    with open(base + b"new:rocket:", "wb") as f:
        f.write(b"y")
    second = run_bytes("backup", src)
    assert second.returncode == 0, second.stderr

    wrong: list[str] = []
    listing = run_bytes("ls", "latest", src)
    assert listing.returncode == 0, listing.stderr
    for name in [*names, b"new:rocket:"]:
        if base + name not in listing.stdout.split(b"\n"):
            wrong.append(f"ls lost {name!r}")
    long = run_bytes("ls", "-l", "latest", src)
    if not any(line.endswith(base + b"a:smile:b") for line in long.stdout.split(b"\n")):
        wrong.append("ls -l lost b'a:smile:b'")
    ids = [s["id"] for s in json.loads(run_bytes("snapshots", "--json").stdout)]
    diff = run_bytes("diff", *ids)
    if b"+    " + base + b"new:rocket:" not in diff.stdout.split(b"\n"):
        wrong.append("diff lost b'new:rocket:'")
    if base + b"pipe:fire:: skipped socket" not in second.stderr:
        wrong.append("the backup notice lost b'pipe:fire:'")
    assert wrong == []


def test_dump_gives_the_exact_bytes(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = make_tree(tmp_path / "src", files=3)
    weird = src / "with space.bin"
    weird.write_bytes(bytes(range(256)) * 1000)
    assert cli("backup", src).code == 0
    for path in (src / "docs" / "deep" / "er" / "big.bin", weird, src / "zero.bin"):
        res = run_bytes("dump", "latest", path)
        assert res.returncode == 0, res.stderr
        assert res.stdout == path.read_bytes()
    not_a_file = cli("dump", "latest", src / "docs")
    assert not_a_file.code != 0
    assert "not a file" in assert_one_line_error(not_a_file)
    missing = cli("dump", "latest", src / "nope")
    assert missing.code != 0
    assert "not in snapshot" in assert_one_line_error(missing)


def test_snapshots_filtered_by_path_and_latest_per_group(
    initialised: Path, tmp_path: Path, cli: Cli
) -> None:
    app = make_tree(tmp_path / "app", files=2)
    etc = make_tree(tmp_path / "etc", files=2)
    made = []
    for args in ([app], [etc], [app], [app, etc], [app]):
        res = cli("backup", "--json", *args)
        assert res.code == 0, res.err
        made.append(res.json()["id"])

    def listed(*args: object) -> list[str]:
        res = cli("snapshots", "--json", *args)
        assert res.code == 0, res.err
        return [s["id"] for s in res.json()]

    assert listed("--path", f"{app}/") == [made[0], made[2], made[3], made[4]]
    assert listed("--path", app, "--path", etc) == [made[3]]
    assert listed("--latest", "1") == [made[1], made[3], made[4]]
    assert listed("--latest", "2", "--path", app) == [made[2], made[3], made[4]]
    bad = cli("snapshots", "--latest", "0")
    assert bad.code == 2 and "--latest" in assert_one_line_error(bad)


def test_diff_between_two_snapshots(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = make_tree(tmp_path / "src", files=6)
    first = backup_json(cli, src)["id"]
    docs = src / "docs"
    (docs / "new.txt").write_text("brand new\n")
    (docs / "newdir").mkdir()
    (docs / "newdir" / "inner.txt").write_text("inner\n")
    (docs / "note-2.txt").unlink()
    (docs / "note-3.txt").write_text("changed content\n")
    os.chmod(docs / "note-4.txt", 0o600)
    (src / "link-to-docs").unlink()
    (src / "link-to-docs").write_text("now a file\n")
    shutil.rmtree(docs / "deep")
    second = backup_json(cli, src)["id"]

    res = cli("diff", "--json", first[:10], second[:10])
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["from"] == first and doc["to"] == second
    mine = {(c["kind"], c["path"]) for c in doc["changes"] if c["path"].startswith(str(src))}
    assert mine == {
        ("+", f"{docs}/new.txt"),
        ("+", f"{docs}/newdir"),
        ("+", f"{docs}/newdir/inner.txt"),
        ("-", f"{docs}/note-2.txt"),
        ("-", f"{docs}/deep"),
        ("-", f"{docs}/deep/er"),
        ("-", f"{docs}/deep/er/big.bin"),
        ("M", f"{docs}/note-3.txt"),
        ("U", f"{docs}/note-4.txt"),
        ("T", f"{src}/link-to-docs"),
        ("U", str(docs)),  # its mtime changed
        ("U", str(src)),  # its mtime changed
    }
    # outside the backed-up tree only directory metadata can differ
    assert all(c["kind"] == "U" for c in doc["changes"] if not c["path"].startswith(str(src)))
    assert doc["added"] == 3 and doc["removed"] == 4 and doc["modified"] == 1
    assert doc["type_changed"] == 1
    assert doc["metadata"] == sum(1 for c in doc["changes"] if c["kind"] == "U")

    plain = cli("diff", first[:8], second[:8])
    assert plain.code == 0
    assert f"-    {docs}/note-2.txt" in plain.out.splitlines()
    assert f"M    {docs}/note-3.txt" in plain.out.splitlines()
    assert f"T    {src}/link-to-docs" in plain.out.splitlines()
    assert f"-    {docs}/deep/er/big.bin" in plain.out.splitlines()
    assert "3 added, 4 removed, 1 modified" in plain.out

    same = cli("diff", "--json", second, second)
    assert same.code == 0
    assert same.json()["changes"] == []


def test_stats_after_two_identical_backups(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = make_tree(tmp_path / "src", files=5)
    a = backup_json(cli, src)
    b = backup_json(cli, src)
    res = cli("stats", "--json")
    assert res.code == 0, res.err
    st = res.json()
    assert st["snapshots"] == 2
    assert st["total_restore_size"] == a["summary"]["bytes"] + b["summary"]["bytes"]
    assert st["total_restore_size"] == 2 * a["summary"]["bytes"]
    assert st["dedup_ratio"] == round(st["total_restore_size"] / st["unique_data_size"], 3)
    assert st["dedup_ratio"] > 1.5
    # the unique data is what the first backup added (plus the second's few new trees, if any)
    assert st["unique_data_size"] == a["summary"]["data_added"] + b["summary"]["data_added"]
    assert st["compression_ratio"] == round(st["unique_data_size"] / st["stored_blob_size"], 3)
    assert st["packs"] >= 1
    assert st["stored_blob_size"] < st["repository_size"]
    on_disk = repo_size(initialised)
    # stats lists the store while holding its own lock: allow for that one small object
    assert on_disk <= st["repository_size"] <= on_disk + 4096


def test_backup_paths_are_normalised(
    initialised: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", files=2)
    monkeypatch.chdir(tmp_path)
    assert backup_json(cli, "src/")["paths"] == [str(src)]
    # a path inside another one is covered by it
    assert backup_json(cli, "src/docs", "./src")["paths"] == [str(src)]
    two = backup_json(cli, "src/docs", "src/empty")
    assert two["paths"] == [str(src / "docs"), str(src / "empty")]
    listed = ls_paths(cli, "latest", src)
    assert str(src / "zero.bin") not in listed
    assert str(src / "docs" / "note-0.txt") in listed and str(src / "empty") in listed
    # a symlink given as the path is stored as a symlink, not followed
    link = backup_json(cli, "src/link-to-docs")
    assert link["summary"]["files"] == 0
    entries = {e["path"]: e for e in ls_json(cli, link["id"])}
    assert entries[str(src / "link-to-docs")]["type"] == "symlink"
    assert not any(p.startswith(str(src / "link-to-docs") + "/") for p in entries)
    missing = cli("backup", "src/nope")
    assert missing.code == 1
    assert "no such file or directory" in assert_one_line_error(missing)
    assert len(snapshots_json(cli)) == 4


# --- 4. incremental -----------------------------------------------------------------------------


def test_incremental_backups(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = make_tree(tmp_path / "src", files=10)
    n = count_files(src)
    before = ancestor_state(src)
    first = backup_json(cli, src)
    second = backup_json(cli, src)
    unchanged_ancestors = ancestor_state(src) == before
    s = second["summary"]
    assert second["parent"] == first["id"]
    assert s["files"] == n
    assert s["files_unmodified"] == n
    assert s["files_new"] == 0 and s["files_changed"] == 0
    assert s["bytes"] == first["summary"]["bytes"]
    if unchanged_ancestors:
        assert s["data_added"] == 0
        assert s["data_blobs_added"] == 0
    else:  # something else touched /tmp meanwhile: only trees above the backed-up path changed
        assert s["data_blobs_added"] <= len(src.parents)
        assert s["data_added"] < 64 * 1024

    (src / "docs" / "note-5.txt").write_text("a different text\n" * 3)
    third = backup_json(cli, src)
    s = third["summary"]
    assert third["parent"] == second["id"]
    assert s["files_changed"] == 1
    assert s["files_unmodified"] == n - 1
    assert s["files_new"] == 0
    assert 0 < s["data_added"] < 64 * 1024

    (src / "docs" / "added.txt").write_text("added\n")
    before = ancestor_state(src)  # from here the trees above src must stay the same
    fourth = backup_json(cli, src)
    assert fourth["summary"]["files_new"] == 1
    assert fourth["summary"]["files_unmodified"] == n

    explicit = backup_json(cli, "--parent", first["id"][:8], src)
    assert explicit["parent"] == first["id"]
    # compared with the first snapshot: note-5 changed, added.txt is new, the rest unmodified
    assert explicit["summary"]["files_changed"] == 1
    assert explicit["summary"]["files_new"] == 1
    assert explicit["summary"]["files_unmodified"] == n - 1

    forced = backup_json(cli, "--force", src)
    s = forced["summary"]
    assert s["files"] == n + 1
    assert s["files_unmodified"] == 0
    assert s["files_new"] + s["files_changed"] == n + 1
    assert s["bytes"] == fourth["summary"]["bytes"]
    if ancestor_state(src) == before:
        assert s["data_added"] == 0  # everything it re-read was already stored
    else:
        assert s["data_added"] < 64 * 1024


# --- 5. deduplication ---------------------------------------------------------------------------


def test_identical_files_are_stored_once(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    payload = random.Random(5).randbytes(3 * MiB)
    a, b = tmp_path / "src" / "a", tmp_path / "src" / "b"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    (a / "one.bin").write_bytes(payload)
    (b / "copy-with-another-name.bin").write_bytes(payload)

    empty = repo_size(initialised)
    first = backup_json(cli, a)
    after_first = repo_size(initialised)
    assert after_first - empty > 3 * MiB  # random data does not compress
    second = backup_json(cli, b)
    after_second = repo_size(initialised)
    assert second["summary"]["bytes"] == 3 * MiB
    assert second["summary"]["data_added"] < 64 * 1024
    assert after_second - after_first < 64 * 1024
    assert first["summary"]["data_added"] >= 3 * MiB

    # both directories in one run: one copy stored
    both = backup_json(cli, "--force", a, b)
    assert both["summary"]["bytes"] == 6 * MiB
    assert both["summary"]["data_added"] < 64 * 1024
    st = cli("stats", "--json").json()
    assert st["unique_data_size"] < 3 * MiB + 64 * 1024
    for path in (a / "one.bin", b / "copy-with-another-name.bin"):
        out = run_bytes("dump", "latest", path)
        assert out.returncode == 0
        assert out.stdout == payload


# --- 6. excludes --------------------------------------------------------------------------------


@pytest.fixture
def exclude_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for rel in (
        "a.txt",
        "b.log",
        "keep.bin",
        "sub/c.txt",
        "sub/d.bin",
        "sub/deeper/e.bin",
        "cache/f.bin",
        "other/sub/g.bin",
        "other/cache",  # a file named like the excluded directory
    ):
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    return src


def test_exclude_pattern(initialised: Path, exclude_tree: Path, cli: Cli) -> None:
    src = exclude_tree
    assert cli("backup", "--exclude", "*.txt", src).code == 0
    got = ls_paths(cli, "latest", src)
    assert not any(p.endswith(".txt") for p in got)
    assert got == {p for p in tree_paths(src) if not p.endswith(".txt")}


def test_exclude_anchored(initialised: Path, exclude_tree: Path, cli: Cli) -> None:
    src = exclude_tree
    assert cli("backup", "--exclude", f"{src}/sub/**", src).code == 0
    got = ls_paths(cli, "latest", src)
    assert not any(p.startswith(f"{src}/sub/") for p in got)
    # anchored: the same name elsewhere is kept
    assert f"{src}/other/sub/g.bin" in got
    assert got - {f"{src}/sub"} == {
        p for p in tree_paths(src) if p != f"{src}/sub" and not p.startswith(f"{src}/sub/")
    }


def test_exclude_file(initialised: Path, tmp_path: Path, exclude_tree: Path, cli: Cli) -> None:
    src = exclude_tree
    ef = tmp_path / "excludes"
    ef.write_text("# comment line\n\n  *.log  \ncache/\n")
    assert cli("backup", "--exclude-file", ef, src).code == 0
    got = ls_paths(cli, "latest", src)
    expected = tree_paths(src) - {f"{src}/b.log", f"{src}/cache", f"{src}/cache/f.bin"}
    assert got == expected  # other/cache is a file: "cache/" only matches directories
    missing = cli("backup", "--exclude-file", tmp_path / "nope", src)
    assert missing.code == 2
    assert "does not exist" in assert_one_line_error(missing)


# --- 7. tags and hosts ---------------------------------------------------------------------------


def test_tags_and_host(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    one = backup_json(cli, "--tag", "nightly", "--tag", "db", "--host", "alpha", src)
    two = backup_json(cli, "--tag", "weekly", "--host", "beta", src)
    three = backup_json(cli, src)
    assert one["tags"] == ["db", "nightly"] and one["hostname"] == "alpha"
    assert two["tags"] == ["weekly"] and two["hostname"] == "beta"
    assert three["tags"] == [] and three["hostname"] == socket.gethostname()
    # the parent is looked up per host: beta's first backup has none
    assert two["parent"] is None

    def ids(*args: str) -> list[str]:
        return [s["id"] for s in snapshots_json(cli, *args)]

    assert ids() == [one["id"], two["id"], three["id"]]
    assert ids("--tag", "nightly") == [one["id"]]
    assert ids("--tag", "nightly", "--tag", "db") == [one["id"]]
    assert ids("--tag", "nightly", "--tag", "weekly") == []
    assert ids("--tag", "weekly") == [two["id"]]
    assert ids("--tag", "nope") == []
    assert ids("--host", "beta") == [two["id"]]
    assert ids("--host", "alpha", "--tag", "db") == [one["id"]]
    table = cli("snapshots", "--tag", "weekly")
    assert two["short_id"] in table.out and one["short_id"] not in table.out


# --- 8. --stdin-from-command ---------------------------------------------------------------------


def test_stdin_from_command(initialised: Path, cli: Cli) -> None:
    doc = backup_json(cli, "--stdin-from-command", "sh -c 'printf hello; printf world'")
    assert doc["paths"] == ["/stdin"]
    assert doc["complete"] is True
    assert doc["summary"]["files"] == 1
    assert doc["summary"]["bytes"] == 10
    out = run_bytes("dump", "latest", "/stdin")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"helloworld"
    entries = ls_json(cli, "latest")
    assert [(e["path"], e["type"], e["size"]) for e in entries] == [("/stdin", "file", 10)]
    assert entries[0]["sha256"] == hashlib.sha256(b"helloworld").hexdigest()

    named = backup_json(
        cli, "--stdin-from-command", "printf 'a b\\n'", "--stdin-filename", "db.dump"
    )
    assert named["paths"] == ["/db.dump"]
    out = run_bytes("dump", named["id"], "/db.dump")
    assert out.stdout == b"a b\n"
    both = cli("backup", "--stdin-from-command", "true", initialised)
    assert both.code == 2
    assert_one_line_error(both)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("sh -c 'printf partial-output; echo first >&2; echo the-last-words >&2; exit 3'",
         ["status 3", "the-last-words"]),
        ("sh -c 'printf some-output; kill -9 $$'", ["signal", "SIGKILL"]),
        ("no-such-program-for-stackvault --flag", ["no-such-program-for-stackvault", "not found"]),
    ],
    ids=["exit-3", "sigkill", "missing-program"],
)  # fmt: skip
def test_failing_command_saves_no_snapshot(
    initialised: Path, cli: Cli, command: str, expected: list[str]
) -> None:
    assert cli("backup", "--stdin-from-command", "printf ok").code == 0
    before = snapshots_json(cli)
    assert len(before) == 1
    res = cli("backup", "--stdin-from-command", command)
    assert res.code == 1, res.err
    assert "Traceback" not in res.err
    for text in expected:
        assert text in res.err
    after = snapshots_json(cli)
    assert [s["id"] for s in after] == [s["id"] for s in before]
    assert cli("check").code == 0


# --- 9. unreadable files ------------------------------------------------------------------------
#
# Tests run as root, for whom permission bits do not block reads. The backup subprocess therefore
# runs as root *without* CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (dropped from the bounding set
# before exec), so a root-owned file of mode 000 is really unreadable to it, while everything else
# (owned by root, owner bits set) stays readable. (Switching to an unprivileged uid is not
# possible here: the interpreter lives below /root, which other uids cannot reach.)

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def _drop_dac_capabilities() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unreadable_file_gives_an_incomplete_snapshot(
    initialised: Path, tmp_path: Path, cli: Cli
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test expects to run as root (it drops root's DAC capabilities)")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "closed").mkdir()
    (src / "closed" / "hidden.txt").write_text("hidden")
    (src / "ok.txt").write_text("readable")
    (src / "sub" / "also-ok.txt").write_text("readable too")
    secret = src / "sub" / "secret.txt"
    secret.write_text("root only")
    os.chmod(secret, 0o000)
    os.chmod(src / "closed", 0o000)
    # without the capabilities the file really cannot be read (not a root-only illusion)
    probe = subprocess.run(
        ["cat", str(secret)], preexec_fn=_drop_dac_capabilities, capture_output=True, check=False
    )
    assert probe.returncode != 0
    assert b"Permission denied" in probe.stderr

    res = run_subprocess("backup", src, preexec_fn=_drop_dac_capabilities, timeout=120)
    assert res.code == 3, res.err
    assert "INCOMPLETE" in res.err
    assert str(secret) in res.err
    assert "Traceback" not in res.err

    snaps = snapshots_json(cli)
    assert len(snaps) == 1
    snap = snaps[0]
    assert snap["complete"] is False
    problem_paths = {p["path"] for p in snap["problems"]}
    assert problem_paths == {str(secret), str(src / "closed")}
    assert all(p["message"] for p in snap["problems"])
    assert snap["summary"]["problems"] == 2
    got = ls_paths(cli, "latest", src)
    assert got == {
        str(src),
        str(src / "ok.txt"),
        str(src / "sub"),
        str(src / "sub" / "also-ok.txt"),
        str(src / "closed"),  # the directory entry itself, without its unreadable content
    }
    out = run_bytes("dump", "latest", src / "sub" / "also-ok.txt")
    assert out.stdout == b"readable too"
    table = cli("snapshots")
    assert "INCOMPLETE" in table.out


# --- 10. special files --------------------------------------------------------------------------


def test_a_socket_is_skipped_with_a_notice_and_a_fifo_is_kept(initialised: Path, cli: Cli) -> None:
    # a short path: UNIX socket addresses are limited to ~108 bytes
    src = Path(tempfile.mkdtemp(prefix="sv-"))
    try:
        (src / "regular.txt").write_text("data")
        os.mkfifo(src / "fifo")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(src / "sock"))
            assert stat.S_ISSOCK(os.lstat(src / "sock").st_mode)
            res = cli("backup", "--json", src)
        finally:
            sock.close()
        assert res.code == 0, res.err
        doc = res.json()
        assert doc["complete"] is True
        assert doc["problems"] == []
        assert doc["summary"]["files"] == 1
        assert ls_paths(cli, "latest", src) == {
            str(src),
            str(src / "regular.txt"),
            str(src / "fifo"),
        }
        assert f"{src / 'sock'}: skipped socket" in res.err  # said, not silently dropped
    finally:
        shutil.rmtree(src, ignore_errors=True)


# --- 16. --json on stdout only, and --quiet ------------------------------------------------------


def test_json_goes_to_stdout_only(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = make_tree(tmp_path / "src", files=3)
    make_socket(src / "sock")  # a notice on stderr during backup
    r1 = run_subprocess("--json", "backup", src, timeout=120)
    assert r1.code == 0, r1.err
    first = json.loads(r1.out)["id"]
    assert "skipped socket" in r1.err
    (src / "zero.bin").write_text("now with content")
    r2 = run_subprocess("backup", "--json", src, timeout=120)
    second = json.loads(r2.out)["id"]
    commands: list[tuple[str, ...]] = [
        ("snapshots",),
        ("ls", "latest"),
        ("ls", "latest", str(src / "docs")),
        ("diff", first, second),
        ("check",),
        ("check", "--read-data"),
        ("stats",),
        ("forget", "--keep-last", "1", "--dry-run"),
        ("key", "list"),
        ("unlock",),
    ]
    for args in commands:
        for res in (run_subprocess(*args, "--json", timeout=120), cli("--json", *args)):
            assert res.code == 0, (args, res.err)
            doc = json.loads(res.out)  # the whole of stdout is one JSON document
            assert isinstance(doc, dict | list), args
            assert "{" not in res.err, (args, res.err)
    diff = json.loads(run_subprocess("diff", "--json", first, second).out)
    assert {"kind": "M", "path": str(src / "zero.bin")} in diff["changes"]
    check = json.loads(run_subprocess("check", "--json").out)
    assert check["ok"] is True and check["errors"] == []


def test_quiet_prints_only_errors(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    make_socket(src / "sock")  # a notice, which --quiet does not print
    res = cli("--quiet", "backup", src)
    assert res.code == 0, res.err
    assert res.out == ""
    assert res.err == ""
    assert len(snapshots_json(cli)) == 1
    bad = cli("--quiet", "ls", "latest", src / "nope")
    assert bad.code == 1
    assert_one_line_error(bad)
