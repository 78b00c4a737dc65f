"""`stackvault verify --spot`: a sample of a snapshot's files compared with the live files.
A file whose content changed while its size and modification time stayed the same is a
mismatch (exit 20) — what an incremental backup cannot see; files changed or removed since
the snapshot are only counted; with --read-data a sampled file whose pack is gone is damaged;
a seed repeats the sample."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from conftest import Result, make_tree
from stackvault.errors import EXIT_INTEGRITY, EXIT_USAGE

Cli = Callable[..., Result]


def backed_up(cli: Cli, tmp_path: Path) -> Path:
    data = make_tree(tmp_path / "data", files=40)
    res = cli("backup", data)
    assert res.code == 0, res.err
    return data


def same_size_same_mtime(path: Path) -> None:
    """Change the content of ``path`` but not its size or modification time."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_silent_change_is_a_mismatch_drift_is_only_counted(
    initialised: Path, cli: Cli, tmp_path: Path
) -> None:
    data = backed_up(cli, tmp_path)
    res = cli("verify", "--spot", "100%", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    files = doc["files"]
    assert files >= 40 and doc["sampled"] == files and doc["counts"]["match"] == files
    assert doc["ok"] is True

    same_size_same_mtime(data / "docs" / "note-3.txt")
    (data / "docs" / "note-4.txt").write_text("changed, with a new time\n")
    (data / "docs" / "note-5.txt").unlink()
    res = cli("verify", "--spot", "100%", "--json")
    assert res.code == EXIT_INTEGRITY, res.err
    doc = res.json()
    assert doc["counts"] == {
        "match": files - 3,
        "mismatch": 1,
        "changed": 1,
        "missing": 1,
        "unreadable": 0,
        "damaged": 0,
    }
    assert [f["path"] for f in doc["failures"]] == [str(data / "docs" / "note-3.txt")]
    assert cli("verify", "--spot", "100%", "--max-mismatches", "1").code == 0

    res = cli("verify", "--spot", "100%")
    assert res.code == EXIT_INTEGRITY
    assert f"mismatch: {data / 'docs' / 'note-3.txt'}" in res.err
    assert "Traceback" not in res.err


def test_a_seed_repeats_the_sample_and_read_data_finds_a_lost_pack(
    initialised: Path, cli: Cli, tmp_path: Path
) -> None:
    backed_up(cli, tmp_path)
    first = cli("verify", "--spot", "10%", "--seed", "7", "--json").json()
    again = cli("verify", "--spot", "10%", "--seed", "7", "--json").json()
    assert first["sampled"] == again["sampled"] == -(-first["files"] // 10)

    res = cli("verify", "--spot", "100%", "--read-data", "--json")
    assert res.code == 0, res.err
    packs = [p for p in (initialised / "data").rglob("*") if p.is_file()]
    largest = max(packs, key=lambda p: p.stat().st_size)  # holds big.bin's 3 MiB
    largest.unlink()
    res = cli("verify", "--spot", "100%", "--read-data", "--json")
    assert res.code == EXIT_INTEGRITY, res.err
    doc = res.json()
    damaged = [f["path"] for f in doc["failures"] if f["outcome"] == "damaged"]
    assert any(p.endswith("/docs/deep/er/big.bin") for p in damaged), doc
    assert doc["counts"]["mismatch"] == 0
    assert "Traceback" not in res.err


def test_a_bad_percentage_is_a_usage_error(initialised: Path, cli: Cli) -> None:
    for bad in ("0", "150%", "lots"):
        res = cli("verify", "--spot", bad)
        assert res.code == EXIT_USAGE, res.err
        assert "--spot takes" in res.err
