"""`stackvault backup` of many small files, stopped while its child processes walk them
(`stackvault.engine.walkprocs`): Ctrl-C (SIGINT to the process group), SIGTERM to the backup
alone or to its process group, and SIGKILL. Afterwards no process of the backup is left, no
snapshot was saved, and the repository checks clean; the next backup completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackvault.crypto.kdf import KdfParams
from stackvault.repo.repository import Repository
from stackvault.store.local import LocalStore
from support.processgroups import group, wait_gone

PASSWORD = "backup signals"
FILES = 20_000


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`FILES` small files in 40 folders."""
    root = tmp_path_factory.mktemp("backup-signals") / "data"
    for i in range(FILES):
        sub = root / f"t{i % 40:02d}"
        if i < 40:
            sub.mkdir(parents=True)
        (sub / f"{i:05d}.json").write_bytes(b'{"n": %d, "pad": "%s"}\n' % (i, b"y" * (i % 3000)))
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    store = LocalStore(tmp_path / "repo")
    store.ensure_root()
    Repository.init(store, PASSWORD.encode(), kdf=KdfParams(memory_kib=8 * 1024, iterations=1))
    return tmp_path / "repo"


def _env(repo: Path) -> dict[str, str]:
    return {**os.environ, "STACKVAULT_REPOSITORY": str(repo), "STACKVAULT_PASSWORD": PASSWORD}


def _start_backup(repo: Path, data: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stackvault", "backup", str(data)],
        env=_env(repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )


def _walking(repo: Path, proc: subprocess.Popen[str]) -> None:
    """Wait until the backup's children run and its first pack is written."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(group(proc.pid)) >= 3 and any((repo / "data").rglob("*")):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the backup finished before it could be stopped"
    assert len(group(proc.pid)) >= 3, "the backup runs no child processes"


def _cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stackvault", *args],
        env=_env(repo),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _nothing_saved_and_sound(repo: Path, data: Path) -> None:
    snapshots = repo / "snapshots"
    assert not snapshots.exists() or list(snapshots.iterdir()) == []
    check = _cli(repo, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    again = _cli(repo, "backup", str(data), "--json")
    assert again.returncode == 0, again.stderr
    snapshot = json.loads(again.stdout)
    assert snapshot["complete"] and snapshot["summary"]["files"] == FILES


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigterm-group"])
def test_an_interrupted_backup_saves_nothing_and_leaves_no_process(
    data: Path, repo: Path, how: str
) -> None:
    proc = _start_backup(repo, data)
    try:
        _walking(repo, proc)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "sigterm-group":  # as a service manager stops a service
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("stackvault: error: ")
    assert "interrupted" in err and "Traceback" not in err
    wait_gone(proc.pid)
    _nothing_saved_and_sound(repo, data)


def test_a_killed_backup_leaves_no_process_and_no_snapshot(data: Path, repo: Path) -> None:
    proc = _start_backup(repo, data)
    try:
        _walking(repo, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        wait_gone(proc.pid)
    finally:
        if group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    _nothing_saved_and_sound(repo, data)
