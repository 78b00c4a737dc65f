"""End-to-end tests through the CLI: forget and prune, key management and locks.

Real files in ``tmp_path``, a real local repository, the real CLI (in-process, or as a
subprocess that is killed with SIGKILL to leave a stale lock behind).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import PASSWORD, Result, make_tree
from stackvault.records.run import RunRecord, RunStep
from stackvault.repo.repository import Repository
from stackvault.store.local import LocalStore

Cli = Callable[..., Result]
MiB = 1024 * 1024


# --- helpers -----------------------------------------------------------------------------------


def snapshot_ids(cli: Cli) -> list[str]:
    res = cli("snapshots", "--json")
    assert res.code == 0, res.err
    return [s["id"] for s in res.json()]


def backup_id(cli: Cli, *args: object) -> str:
    res = cli("backup", "--json", *args)
    assert res.code == 0, res.err
    snap_id: str = res.json()["id"]
    return snap_id


def repo_size(repo: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(repo):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files if f[0] != ".")
    return total


def locks_in(repo: Path) -> list[str]:
    """Lock objects (the store's dot-named temp files are not objects)."""
    d = repo / "locks"
    return sorted(n for n in os.listdir(d) if not n.startswith(".")) if d.is_dir() else []


def six_snapshots(cli: Cli, src: Path) -> list[str]:
    ids = []
    for i in range(6):
        (src / "counter.txt").write_text(f"run {i}\n")
        ids.append(backup_id(cli, src))
    assert snapshot_ids(cli) == ids  # oldest first
    return ids


@pytest.fixture
def small_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    return src


# --- 13. forget and prune ------------------------------------------------------------------------


def test_forget_keep_last_dry_run_then_for_real(
    initialised: Path, small_src: Path, cli: Cli
) -> None:
    ids = six_snapshots(cli, small_src)

    dry = cli("forget", "--keep-last", "2", "--dry-run")
    assert dry.code == 0, dry.err
    assert snapshot_ids(cli) == ids  # nothing removed
    lines = dry.out.splitlines()
    keep = [line for line in lines if line.strip().startswith("keep")]
    remove = [line for line in lines if line.strip().startswith("remove")]
    assert len(keep) == 2 and len(remove) == 4
    assert any(ids[-1][:8] in line and "last snapshot #1" in line for line in keep)
    assert any(ids[-2][:8] in line and "last snapshot #2" in line for line in keep)
    for old in ids[:4]:
        assert any(old[:8] in line and "matches no keep rule" in line for line in remove)
    assert "would remove 4 snapshot(s)" in dry.out

    real = cli("forget", "--keep-last", "2")
    assert real.code == 0, real.err
    assert "removed 4 snapshot(s)" in real.out
    assert snapshot_ids(cli) == ids[-2:]
    assert cli("check").code == 0


def test_forget_json_decisions(initialised: Path, small_src: Path, cli: Cli) -> None:
    ids = six_snapshots(cli, small_src)
    dry = cli("forget", "--json", "--keep-last", "3", "--dry-run")
    assert dry.code == 0, dry.err
    doc = dry.json()
    assert doc["removed"] == []
    assert doc["prune"] is None
    decisions = {d["id"]: d for d in doc["decisions"]}
    assert set(decisions) == set(ids)
    assert [i for i in ids if decisions[i]["keep"]] == ids[-3:]
    for n, i in enumerate(reversed(ids[-3:]), start=1):
        assert decisions[i]["reasons"] == [f"last snapshot #{n}"]
    for i in ids[:3]:
        assert decisions[i]["reasons"] == ["matches no keep rule"]
    assert snapshot_ids(cli) == ids

    real = cli("forget", "--keep-last", "3", "--json")
    assert real.code == 0
    assert sorted(real.json()["removed"]) == sorted(ids[:3])
    assert snapshot_ids(cli) == ids[-3:]


def test_forget_by_id_and_refusals(initialised: Path, small_src: Path, cli: Cli) -> None:
    ids = six_snapshots(cli, small_src)
    res = cli("forget", ids[2][:8])
    assert res.code == 0, res.err
    assert snapshot_ids(cli) == ids[:2] + ids[3:]

    res = cli("forget", "--json", ids[0], ids[5][:12])
    assert res.code == 0, res.err
    assert sorted(res.json()["removed"]) == sorted([ids[0], ids[5]])
    assert [d["reasons"] for d in res.json()["decisions"]] == [["named on the command line"]] * 2
    remaining = [ids[1], ids[3], ids[4]]
    assert snapshot_ids(cli) == remaining

    nothing = cli("forget")
    assert nothing.code != 0
    assert "Traceback" not in nothing.err
    assert "keep" in nothing.err
    assert snapshot_ids(cli) == remaining

    both = cli("forget", "--keep-last", "1", ids[1])
    assert both.code == 2
    assert snapshot_ids(cli) == remaining

    unknown = cli("forget", "abcdef0123")
    assert unknown.code != 0
    assert "no snapshot matches" in unknown.err
    assert snapshot_ids(cli) == remaining


def test_forget_prune_frees_space_and_keeps_the_rest_intact(
    initialised: Path, tmp_path: Path, cli: Cli
) -> None:
    rnd = random.Random(13)
    src = tmp_path / "src"
    src.mkdir()
    (src / "common.bin").write_bytes(rnd.randbytes(1 * MiB))
    (src / "old-only.bin").write_bytes(rnd.randbytes(2 * MiB))
    first = backup_id(cli, src)
    (src / "old-only.bin").unlink()
    (src / "new-only.bin").write_bytes(rnd.randbytes(MiB // 2))
    (src / "text.txt").write_text("kept\n" * 1000)
    second = backup_id(cli, src)
    expected = {p.name: p.read_bytes() for p in src.iterdir()}

    before = repo_size(initialised)
    res = cli("forget", "--keep-last", "1", "--prune", "--safety-margin", "0")
    assert res.code == 0, res.err
    assert "removed 1 snapshot(s)" in res.out
    assert "prune:" in res.out
    after = repo_size(initialised)
    assert snapshot_ids(cli) == [second]
    assert before - after > int(1.8 * MiB), (before, after)  # old-only.bin's 2 MiB are gone
    assert first not in cli("snapshots").out

    check = cli("check", "--read-data")
    assert check.code == 0, check.out + check.err
    assert "no errors were found" in check.out
    check_json = cli("check", "--read-data", "--json").json()
    assert check_json["ok"] is True and check_json["errors"] == []
    assert check_json["snapshots"] == 1
    assert check_json["blobs_read"] > 0

    target = tmp_path / "restored"
    res = cli("restore", "latest", "--target", target, "--verify")
    assert res.code == 0, res.err
    got = target / str(src).lstrip("/")
    assert {p.name: p.read_bytes() for p in got.iterdir()} == expected

    # nothing left to prune
    again = cli("prune", "--json", "--safety-margin", "0")
    assert again.code == 0, again.err
    assert again.json()["packs_deleted"] == 0
    assert again.json()["bytes_freed"] == 0


def test_prune_dry_run_changes_nothing(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = make_tree(tmp_path / "src", files=3)
    backup_id(cli, src)
    (src / "docs" / "deep" / "er" / "big.bin").write_bytes(random.Random(2).randbytes(MiB))
    backup_id(cli, src)
    assert cli("forget", "--keep-last", "1").code == 0
    files_before = sorted(str(p) for p in initialised.rglob("*") if p.is_file())
    dry = cli("prune", "--dry-run", "--json", "--safety-margin", "0")
    assert dry.code == 0, dry.err
    plan = dry.json()
    assert plan["bytes_freed"] >= 3 * MiB - 64 * 1024  # the old big.bin is unreferenced
    assert sorted(str(p) for p in initialised.rglob("*") if p.is_file()) == files_before
    real = cli("prune", "--json", "--safety-margin", "0")
    assert real.code == 0, real.err
    assert real.json()["bytes_freed"] == plan["bytes_freed"]
    assert cli("check", "--read-data").code == 0


# --- 14. key management --------------------------------------------------------------------------


def keys_json(cli: Cli) -> list[dict[str, Any]]:
    res = cli("key", "list", "--json")
    assert res.code == 0, res.err
    keys: list[dict[str, Any]] = res.json()
    return keys


def test_key_add_list_remove(initialised: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    second = "a second, different password"
    monkeypatch.setenv("STACKVAULT_NEW_PASSWORD", second)
    res = cli("key", "add")
    assert res.code == 0, res.err
    assert "added key" in res.out
    monkeypatch.delenv("STACKVAULT_NEW_PASSWORD")

    keys = keys_json(cli)
    assert len(keys) == 2
    assert sorted(os.listdir(initialised / "keys")) == sorted(k["id"] for k in keys)
    current = [k for k in keys if k["current"]]
    assert len(current) == 1
    first_id = current[0]["id"]
    other_id = next(k["id"] for k in keys if not k["current"])
    assert other_id[:8] in res.out

    monkeypatch.setenv("STACKVAULT_PASSWORD", second)
    assert cli("snapshots").code == 0
    as_second = keys_json(cli)
    assert [k["id"] for k in as_second if k["current"]] == [other_id]

    # the key in use cannot be removed
    refused = cli("key", "remove", other_id[:10])
    assert refused.code != 0
    assert "Traceback" not in refused.err
    assert "in use" in refused.err or "opened the repository" in refused.err
    assert len(keys_json(cli)) == 2

    # removing the other one works, and its password stops working
    removed = cli("key", "remove", first_id[:10])
    assert removed.code == 0, removed.err
    assert os.listdir(initialised / "keys") == [other_id]
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    assert cli("snapshots").code == 12
    monkeypatch.setenv("STACKVAULT_PASSWORD", second)
    keys = keys_json(cli)
    assert [(k["id"], k["current"]) for k in keys] == [(other_id, True)]

    ambiguous = cli("key", "remove", "")
    assert ambiguous.code != 0
    assert len(keys_json(cli)) == 1


def test_key_passwd(
    initialised: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_pw = tmp_path / "new-password"
    new_pw.write_text("the new password\nignored second line\n")
    res = cli("key", "passwd", "--new-password-file", new_pw)
    assert res.code == 0, res.err
    assert "password changed" in res.out
    old = cli("snapshots")
    assert old.code == 12
    assert "wrong password" in old.err
    monkeypatch.setenv("STACKVAULT_PASSWORD", "the new password")
    assert cli("snapshots").code == 0
    keys = keys_json(cli)
    assert len(keys) == 1 and keys[0]["current"] is True

    monkeypatch.setenv("STACKVAULT_NEW_PASSWORD", "third")
    assert cli("key", "passwd").code == 0
    assert cli("snapshots").code == 12
    monkeypatch.setenv("STACKVAULT_PASSWORD", "third")
    assert cli("snapshots").code == 0
    assert len(os.listdir(initialised / "keys")) == 1


# --- 15. locks -----------------------------------------------------------------------------------

BLOCKING_COMMAND = "sh -c 'head -c 1000000 /dev/urandom; exec sleep 60'"


def start_blocked_backup(stderr: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """A backup in its own session that holds a lock and waits on its command."""
    return subprocess.Popen(
        [sys.executable, "-m", "stackvault", "backup", "--stdin-from-command", BLOCKING_COMMAND],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )


def wait_for_lock(repo: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = locks_in(repo)
        if found:
            return found[0]
        assert proc.poll() is None, "the backup ended before taking its lock"
        time.sleep(0.05)
    raise AssertionError("the backup did not take a lock in time")


def kill_hard(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the backup and the command it runs (its own process group), then reap it."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_unlock_with_no_locks(initialised: Path, cli: Cli) -> None:
    res = cli("unlock")
    assert res.code == 0, res.err
    assert "0 lock(s) removed" in res.out
    res = cli("unlock", "--json")
    assert res.json() == {"removed": []}


def test_stale_lock_of_a_killed_backup(initialised: Path, cli: Cli) -> None:
    proc = start_blocked_backup()
    try:
        lock = wait_for_lock(initialised, proc)
        # while it lives, the lock is honoured: an exclusive operation must wait (exit 11)
        busy = cli("prune")
        assert busy.code == 11, busy.err
        assert str(proc.pid) in busy.err
        assert "backup" in busy.err
        assert cli("unlock").out.strip().endswith("0 lock(s) removed")
        assert locks_in(initialised) == [lock]
    finally:
        kill_hard(proc)
    assert proc.returncode == -signal.SIGKILL
    assert locks_in(initialised) == [lock]  # left behind by the dead process
    assert snapshot_ids(cli) == []  # a killed backup saved nothing

    # the next command that locks clears it by itself, with a notice
    res = cli("check")
    assert res.code == 0, res.out + res.err
    assert "stale lock" in res.err
    assert str(proc.pid) in res.err
    assert locks_in(initialised) == []

    # the same through `unlock`, which reports what it removed
    proc2 = start_blocked_backup()
    try:
        wait_for_lock(initialised, proc2)
    finally:
        kill_hard(proc2)
    res = cli("unlock", "--json")
    assert res.code == 0, res.err
    removed = res.json()["removed"]
    assert len(removed) == 1
    assert removed[0]["pid"] == proc2.pid
    assert "no longer exists" in removed[0]["reason"]
    assert locks_in(initialised) == []

    # and the repository works normally afterwards
    assert cli("backup", "--stdin-from-command", "printf done").code == 0
    assert len(snapshot_ids(cli)) == 1
    assert cli("check", "--read-data").code == 0
    out = subprocess.run(
        [sys.executable, "-m", "stackvault", "dump", "latest", "/stdin"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert out.stdout == b"done"
    assert hashlib.sha256(out.stdout).hexdigest() == hashlib.sha256(b"done").hexdigest()


def test_sigterm_interrupts_a_backup_cleanly(initialised: Path, cli: Cli) -> None:
    proc = start_blocked_backup(stderr=subprocess.PIPE)
    try:
        wait_for_lock(initialised, proc)
        time.sleep(0.3)  # let it read the command's first megabyte
        proc.send_signal(signal.SIGTERM)  # the stackvault process only, not its group
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            kill_hard(proc)
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the command, should it have survived
            except ProcessLookupError:
                pass
    assert proc.returncode == 130, err
    assert b"interrupted" in err
    assert b"Traceback" not in err
    assert locks_in(initialised) == []  # released on the way out, not left stale
    assert snapshot_ids(cli) == []
    assert cli("check").code == 0


# --- damage is found and named ------------------------------------------------------------------


def test_damaged_pack_is_reported_with_exit_20(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(random.Random(3).randbytes(2 * MiB))
    (src / "small.txt").write_text("small and safe\n")
    snap = backup_id(cli, src)
    assert cli("check", "--read-data").code == 0
    packs = sorted(initialised.glob("data/*/*"), key=lambda p: p.stat().st_size)
    biggest = packs[-1]
    assert biggest.stat().st_size > 2 * MiB  # the data pack holding big.bin
    raw = bytearray(biggest.read_bytes())
    raw[4096] ^= 0x01
    biggest.write_bytes(bytes(raw))

    res = cli("check", "--read-data", "--json")
    assert res.code == 20
    doc = res.json()
    assert doc["ok"] is False
    assert doc["errors"]
    assert doc["affected"] == {snap: [str(src / "big.bin")]}
    plain = cli("check", "--read-data")
    assert plain.code == 20
    assert f"snapshot {snap[:8]} is damaged: 1 path(s) affected: {src / 'big.bin'}" in plain.out

    target = tmp_path / "restored"
    res = cli("restore", "latest", "--target", target)
    assert res.code == 20
    assert "big.bin" in res.err
    got = target / str(src).lstrip("/")
    assert (got / "small.txt").read_text() == "small and safe\n"  # the rest is restored
    assert not (got / "big.bin").exists()  # a damaged file is never left looking good
    assert [p.name for p in got.iterdir() if p.name.startswith(".")] == []  # no temp files

    dump = subprocess.run(
        [sys.executable, "-m", "stackvault", "dump", "latest", str(src / "big.bin")],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert dump.returncode == 20


def test_prune_expires_run_records_by_their_rule(initialised: Path, cli: Cli) -> None:
    """FORMAT.md §14: prune keeps each job's newest 30 records and all younger than 90 days."""
    repo = Repository.open(LocalStore(initialised), PASSWORD.encode())
    now = datetime.now(UTC)
    for i in range(34):  # 4 beyond the newest 30, all older than 90 days
        started = now - timedelta(days=200 + i)
        repo.save_run(
            RunRecord(
                id=f"{i:032x}",
                job="nightly",
                host="db1",
                started=started,
                ended=started + timedelta(minutes=1),
                result="ok",
                trigger="schedule",
                program="stackvault test",
                steps=[RunStep(name="backup", result="ok", started=started, duration_s=60.0)],
            )
        )
    dry = cli("prune", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert dry.json()["run_records_removed"] == 4
    assert len(repo.list_runs(job="nightly")) == 34
    res = cli("prune")
    assert res.code == 0, res.err
    assert "deleted 4 expired run record(s)" in res.out
    kept = repo.list_runs(job="nightly")
    assert sorted(r.id for r in kept) == [f"{i:032x}" for i in range(30)]
