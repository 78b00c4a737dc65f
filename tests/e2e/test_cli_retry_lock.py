"""`--retry-lock DURATION`: a command that meets another process's exclusive lock (a prune)
waits for it instead of failing at once with exit 11."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import PASSWORD, Result, assert_one_line_error
from stackvault.errors import EXIT_LOCKED
from stackvault.repo.repository import Repository
from stackvault.store.local import LocalStore

Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def _no_retry_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACKVAULT_RETRY_LOCK", raising=False)


def _hold_exclusive(repo: Path, seconds: float) -> threading.Thread:
    """An exclusive lock (as prune takes) held for ``seconds`` on another thread; returns
    once it is held."""
    held = threading.Event()

    def hold() -> None:
        r = Repository.open(LocalStore(repo), PASSWORD.encode())
        with r.lock(exclusive=True, operation="prune"):
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(30)
    return thread


def test_backup_waits_for_a_prune(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data\n")
    holder = _hold_exclusive(initialised, 2.0)
    try:
        now = cli("backup", src)
        assert now.code == EXIT_LOCKED
        assert "locked exclusively by 'prune'" in now.err
        started = time.monotonic()
        waited = cli("backup", src, "--retry-lock", "1m")
        assert waited.code == 0, waited.err
        assert time.monotonic() - started >= 0.5
        assert "waiting up to 60 s for it (--retry-lock)" in waited.err
    finally:
        holder.join()


def test_retry_lock_gives_up_after_the_duration(
    initialised: Path, tmp_path: Path, cli: Cli
) -> None:
    holder = _hold_exclusive(initialised, 4.0)
    try:
        res = cli("--retry-lock", "1s", "check")
        assert res.code == EXIT_LOCKED
        assert "(still, after waiting 1 s)" in res.err
    finally:
        holder.join()
    bad = cli("snapshots", "--retry-lock", "soon")
    assert bad.code == 2
    assert "--retry-lock: 'soon' is not a duration" in assert_one_line_error(bad)


def test_retry_lock_is_the_commands_own_not_the_process_environment(
    initialised: Path, tmp_path: Path, cli: Cli
) -> None:
    """The duration reaches the lock through the command's options: the process environment
    is left as it was, so the next command in the same process fails at once again."""
    import os

    holder = _hold_exclusive(initialised, 3.0)
    try:
        waited = cli("--retry-lock", "1s", "check")
        assert "(still, after waiting 1 s)" in waited.err
        assert "STACKVAULT_RETRY_LOCK" not in os.environ
        at_once = cli("check")
        assert at_once.code == EXIT_LOCKED
        assert "after waiting" not in at_once.err
    finally:
        holder.join()


def test_retry_lock_from_the_environment(
    initialised: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STACKVAULT_RETRY_LOCK is the default of --retry-lock (seconds or 30s/10m/1h); the
    option wins; a value that is no duration is one error line naming the variable."""
    holder = _hold_exclusive(initialised, 4.0)
    try:
        monkeypatch.setenv("STACKVAULT_RETRY_LOCK", "1s")
        res = cli("check")
        assert res.code == EXIT_LOCKED
        assert "waiting up to 1 s for it (--retry-lock)" in res.err
        assert "(still, after waiting 1 s)" in res.err
        none = cli("check", "--retry-lock", "0")
        assert none.code == EXIT_LOCKED
        assert "after waiting" not in none.err
    finally:
        holder.join()
    monkeypatch.setenv("STACKVAULT_RETRY_LOCK", "soon")
    bad = cli("snapshots")
    assert bad.code == 1
    assert "STACKVAULT_RETRY_LOCK: 'soon' is not a duration" in assert_one_line_error(bad)


def test_serve_passes_its_retry_lock_to_the_runs_it_starts() -> None:
    """serve's children are command lines: its --retry-lock goes on them explicitly."""
    from stackvault.cli.commands.serve import _Children

    waits = _Children("/etc/stackvault.yaml", 600.0)
    assert waits.run("db", "schedule", "ab")[-2:] == ["--retry-lock", "600"]
    assert waits.drill("db", "schedule", "ab")[-2:] == ["--retry-lock", "600"]
    assert "--retry-lock" not in _Children("/etc/stackvault.yaml").run("db", "schedule", "ab")
