"""`check --read-data-subset` as a percentage, a slice n/t and a size."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from conftest import Result, assert_one_line_error

Cli = Callable[..., Result]


def _packs(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "data").rglob("*") if p.is_file())


def _repo_with_packs(repo: Path, tmp_path: Path, cli: Cli, count: int = 6) -> list[Path]:
    for i in range(count):  # one backup of random data per pack (--pack-size 1 at init)
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "f").write_bytes(os.urandom(1_200_000))
        res = cli("backup", src)
        assert res.code == 0, res.err
    packs = _packs(repo)
    assert len(packs) >= count
    return packs


def test_slices_read_every_pack_once(repo_env: Path, tmp_path: Path, cli: Cli) -> None:
    init = cli("init", "--kdf-memory", "8", "--kdf-iterations", "1", "--pack-size", "1")
    assert init.code == 0, init.err
    packs = _repo_with_packs(repo_env, tmp_path, cli)
    read = []
    for n in (1, 2, 3):
        res = cli("check", "--read-data-subset", f"{n}/3", "--json")
        assert res.code == 0, res.err
        read.append(res.json()["packs_read"])
    assert sum(read) == len(packs)  # the slices split the packs, none twice
    again = cli("check", "--read-data-subset", "2/3", "--json")
    assert again.json()["packs_read"] == read[1]  # a slice never changes
    # a damaged data pack (the largest: file data, not trees, which every check reads) is
    # found by the slice that holds it only
    victim = max(packs, key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    codes = [cli("check", "--read-data-subset", f"{n}/3").code for n in (1, 2, 3)]
    assert sorted(codes) == [0, 0, 20]


def test_a_size_reads_about_that_much(repo_env: Path, tmp_path: Path, cli: Cli) -> None:
    init = cli("init", "--kdf-memory", "8", "--kdf-iterations", "1", "--pack-size", "1")
    assert init.code == 0, init.err
    packs = _repo_with_packs(repo_env, tmp_path, cli)
    small = cli("check", "--read-data-subset", "1K", "--json")
    assert small.code == 0, small.err
    assert small.json()["packs_read"] == 1
    everything = cli("check", "--read-data-subset", "10G", "--json")
    assert everything.json()["packs_read"] == len(packs)
    pct = cli("check", "--read-data-subset", "50%", "--json")
    assert pct.json()["packs_read"] == (len(packs) + 1) // 2


def test_bad_subsets_are_one_sentence(initialised: Path, cli: Cli) -> None:
    for text, words in (
        ("0/3", "1 <= n <= t"),
        ("4/3", "1 <= n <= t"),
        ("0%", "more than 0%"),
        ("150%", "at most 100%"),
        ("lots", "a percentage (10%), a slice n/t (1/7) or a size (500M)"),
        ("0M", "more than 0"),
    ):
        res = cli("check", "--read-data-subset", text)
        assert res.code == 2, text
        assert words in assert_one_line_error(res)
