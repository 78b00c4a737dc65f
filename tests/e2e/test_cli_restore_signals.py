"""`stackvault restore` of many small files, stopped while its child processes restore them:
Ctrl-C (SIGINT to the process group), SIGTERM to the restore alone or to its process group,
and SIGKILL. Afterwards no
process of the restore is left, and no file looks restored that is not: every file present
with the snapshot's mode and mtime holds the snapshot's content."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.repo.repository import Repository
from stackvault.store.local import LocalStore
from support.processgroups import group, wait_gone

PASSWORD = "restore signals"
FILES = 20_000
MTIME_NS = 1_650_000_000_000_000_000


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A local repository with one snapshot of `FILES` small files, and their tree."""
    base = tmp_path_factory.mktemp("signals")
    data = base / "data"
    for i in range(FILES):
        sub = data / f"t{i % 20:02d}"
        if i < 20:
            sub.mkdir(parents=True)
        path = sub / f"{i:05d}.json"
        path.write_bytes(b'{"n": %d, "pad": "%s"}\n' % (i, b"x" * (i % 3000)))
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    store = LocalStore(base / "repo")
    store.ensure_root()
    Repository.init(store, PASSWORD.encode(), kdf=KdfParams(memory_kib=8 * 1024, iterations=1))
    repo = Repository.open(store, PASSWORD.encode())
    repo.load_index()
    BackupJob(repo, BackupOptions(paths=[str(data)], workers=2)).run()
    return base / "repo", data


def _start_restore(repo: Path, target: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stackvault", "restore", "latest", "--target", str(target)],
        env={**os.environ, "STACKVAULT_REPOSITORY": str(repo), "STACKVAULT_PASSWORD": PASSWORD},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )


def _restoring(target: Path, proc: subprocess.Popen[str]) -> None:
    """Wait until files are being restored, and the restore's children run."""
    first = target / "t00"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if len(os.listdir(first)) >= 50:
                break
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    assert proc.poll() is None, "the restore finished before it could be stopped"
    assert len(group(proc.pid)) >= 3, "the restore runs no child processes"


def _no_false_file(restored: Path, data: Path, *, killed: bool) -> int:
    """Check every restored file; the number that are whole. A file is whole when it has the
    snapshot's content, mode and mtime; with ``killed``, a file may also be unfinished, but
    then it must not have the snapshot's mtime (it does not look restored)."""
    whole = 0
    for sub in sorted(restored.iterdir()):
        for path in sub.iterdir():
            st = path.lstat()
            source = data / sub.name / path.name
            looks_done = st.st_mtime_ns == MTIME_NS and stat.S_IMODE(st.st_mode) == stat.S_IMODE(
                source.stat().st_mode
            )
            if killed and not looks_done:
                continue
            assert looks_done, f"{path} was left unfinished"
            assert path.read_bytes() == source.read_bytes(), f"{path} looks restored but is not"
            whole += 1
    assert not [p for p in restored.rglob("*") if ".svtmp-" in p.name]
    return whole


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigterm-group"])
def test_an_interrupted_restore_leaves_only_whole_files(
    backed_up: tuple[Path, Path], tmp_path: Path, how: str
) -> None:
    repo, data = backed_up
    target = tmp_path / "target"
    proc = _start_restore(repo, target)
    try:
        _restoring(target / data.relative_to(data.anchor), proc)
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
    whole = _no_false_file(target / data.relative_to(data.anchor), data, killed=False)
    assert 0 < whole < FILES


def test_a_killed_restore_leaves_no_process_and_nothing_passed_off_as_restored(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, data = backed_up
    target = tmp_path / "target"
    proc = _start_restore(repo, target)
    try:
        _restoring(target / data.relative_to(data.anchor), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        wait_gone(proc.pid)
    finally:
        if group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    whole = _no_false_file(target / data.relative_to(data.anchor), data, killed=True)
    assert 0 < whole < FILES
