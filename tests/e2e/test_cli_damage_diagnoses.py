"""Damage is called damage (cli, end to end): a config or key file with one flipped byte is
reported as damaged (exit 20, naming the object), not as "not a repository" (10) or "wrong
password" (12); those stay for a missing config and a password that opens no intact key."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result

Cli = Callable[..., Result]


def _flipped(path: Path, offset: int) -> bytes:
    """Flip (xor 0xFF) one byte of the file; return the original bytes."""
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[offset] ^= 0xFF
    path.write_bytes(bytes(damaged))
    return original


def _one_line(res: Result) -> bool:
    """One error line (a notice about the key it skipped may come before it)."""
    errors = [line for line in res.err.splitlines() if line.startswith("stackvault: error:")]
    return len(errors) == 1 and res.err.rstrip().endswith(errors[0])


def test_every_flipped_byte_of_the_config_is_reported_as_damage(
    cli: Cli, initialised: Path
) -> None:
    config = initialised / "config"
    size = config.stat().st_size
    wrong = []
    for offset in range(size):
        original = _flipped(config, offset)
        res = cli("snapshots")
        config.write_bytes(original)
        if not (res.code == 20 and "config" in res.err and "damaged" in res.err and _one_line(res)):
            wrong.append((offset, res.code, res.err.strip()))
    assert wrong == []
    assert cli("snapshots").code == 0
    # Only a missing config, or another program's file, is "not a repository".
    config.write_bytes(os.urandom(300))
    res = cli("snapshots")
    assert res.code == 10 and "not a stackvault repository" in res.err
    config.unlink()
    assert cli("snapshots").code == 10


def test_flipped_bytes_of_the_only_key_file_are_reported_as_damage(
    cli: Cli, initialised: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (key,) = (initialised / "keys").iterdir()
    size = key.stat().st_size
    wrong = []
    for offset in range(0, size, 3):
        original = _flipped(key, offset)
        res = cli("snapshots")
        key.write_bytes(original)
        if not (res.code == 20 and f"keys/{key.name}" in res.err and _one_line(res)):
            wrong.append((offset, res.code, res.err.strip()))
    assert wrong == []
    # With every key intact, a password that opens none is a wrong password.
    monkeypatch.setenv("STACKVAULT_PASSWORD", "not the password")
    res = cli("snapshots")
    assert res.code == 12 and "wrong password" in res.err


def test_one_damaged_key_does_not_block_another_password(
    cli: Cli, initialised: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = next((initialised / "keys").iterdir())
    monkeypatch.setenv("STACKVAULT_NEW_PASSWORD", "second password")
    assert cli("key", "add").code == 0
    _flipped(first, first.stat().st_size // 2)
    monkeypatch.setenv("STACKVAULT_PASSWORD", "second password")
    assert cli("snapshots").code == 0
    monkeypatch.setenv("STACKVAULT_PASSWORD", "neither password")
    res = cli("snapshots")
    assert res.code == 20 and f"keys/{first.name}" in res.err
