"""Damage is called damage (cli, end to end): a config or key file with one flipped byte is
reported as damaged (exit 20, naming the object), not as "not a repository" (10) or "wrong
password" (12); those stay for a missing config and a password that opens no intact key. A
pack with a damaged header is named with the snapshots that use it and the repair to run."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import PASSWORD, Result
from stackvault.engine.browse import walk
from stackvault.repo.pack import pack_name
from stackvault.repo.repository import Repository
from stackvault.store.local import LocalStore

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


def _pack_of(repo_path: Path, source: Path, name: str) -> Path:
    """The file of the pack that holds the (single) data blob of ``source/name``."""
    repo = Repository.open(LocalStore(repo_path), PASSWORD.encode())
    repo.load_index()
    snap = next(s for s in repo.list_snapshots() if s.paths == [str(source)])
    (node,) = (n for p, n in walk(repo, snap) if p == str(source / name))
    entry = repo.index.get(node.content[0])
    assert entry is not None
    return repo_path / pack_name(entry.pack_id)


def test_a_damaged_pack_header_names_the_snapshots_that_use_it(
    cli: Cli, initialised: Path, tmp_path: Path
) -> None:
    """The index still lists the pack's blobs, so every snapshot that uses one is named, and
    the next step is the repair that keeps them whole; after it the check is clean and each
    of them restores."""
    shared = os.urandom(300_000)
    ids = []
    for name in ("first", "second", "other"):
        src = tmp_path / name
        src.mkdir()
        (src / "data.bin").write_bytes(shared if name != "other" else os.urandom(300_000))
        res = cli("backup", src, "--json")
        assert res.code == 0, res.err
        ids.append(res.json()["id"])
    pack = _pack_of(initialised, tmp_path / "first", "data.bin")
    data = bytearray(pack.read_bytes())
    header_length = int.from_bytes(data[-4:], "little")
    data[len(data) - 4 - header_length + header_length // 2] ^= 0xFF
    pack.write_bytes(bytes(data))

    res = cli("check", "--read-data")
    assert res.code == 20
    short = pack.name[:16]
    assert "pack header is damaged" in res.out
    line = next(ln for ln in res.out.splitlines() if ln.startswith(f"pack {short} (damaged)"))
    assert f"is used by 2 snapshot(s): {ids[0][:8]}, {ids[1][:8]};" in line
    assert "data still reads" in line
    assert f"to repair, step 1: stackvault repair packs {short}" in res.out
    doc = cli("check", "--read-data", "--json").json()
    assert doc["pack_users"] == {f"data/{pack.parent.name}/{pack.name}": ids[:2]}

    assert cli("repair", "packs", short).code == 0
    after = cli("check", "--read-data")
    assert after.code == 0, after.out
    for snap_id, name in zip(ids[:2], ("first", "second"), strict=True):
        target = tmp_path / f"restored-{name}"
        assert cli("restore", snap_id, "--target", target).code == 0
        assert (target / str(tmp_path / name).lstrip("/") / "data.bin").read_bytes() == shared
