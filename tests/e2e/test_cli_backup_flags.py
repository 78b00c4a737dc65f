"""Backup's selection flags through the CLI: gitignore-style excludes with negation,
--iexclude and --iexclude-file, and the flags restic users type daily."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result, assert_one_line_error

Cli = Callable[..., Result]


def listed(cli: Cli, root: Path, snapshot: str = "latest") -> set[str]:
    res = cli("ls", "--json", snapshot, root)
    assert res.code == 0, res.err
    return {e["path"].removeprefix(f"{root}/") for e in res.json() if e["path"] != str(root)}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for rel in ("a.log", "keep.log", "Photo.JPG", "b.txt", "cache/x.bin", "cache/keep.bin"):
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    return src


def test_negation_and_case_insensitive_excludes(
    initialised: Path, tmp_path: Path, tree: Path, cli: Cli
) -> None:
    res = cli(
        "backup",
        tree,
        "--exclude",
        "*.log",
        "--exclude",
        "!keep.log",
        "--exclude",
        f"{tree}/cache/*",
        "--exclude",
        f"!{tree}/cache/keep.bin",
        "--iexclude",
        "*.jpg",
    )
    assert res.code == 0, res.err
    assert listed(cli, tree) == {"keep.log", "b.txt", "cache", "cache/keep.bin"}
    ifile = tmp_path / "iexcludes"
    ifile.write_text("# case does not matter\nB.TXT\n")
    res = cli("backup", tree, "--iexclude-file", ifile, "--exclude", "cache/")
    assert res.code == 0, res.err
    assert listed(cli, tree) == {"a.log", "keep.log", "Photo.JPG"}


def test_a_bad_pattern_fails_before_the_repository_opens(tree: Path, cli: Cli) -> None:
    res = cli("--repo", "/nonexistent/repo", "backup", tree, "--exclude", "[z-a]")
    assert res.code == 2
    assert "exclude pattern '[z-a]' is not valid" in assert_one_line_error(res)


def test_dry_run_says_what_would_be_stored_and_writes_nothing(
    initialised: Path, tree: Path, cli: Cli
) -> None:
    before = sorted(initialised.rglob("*"))
    res = cli("backup", "--dry-run", "--json", tree, "--exclude", "*.log")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["dry_run"] is True
    assert (doc["files"], doc["dirs"]) == (4, 2)  # Photo.JPG, b.txt, cache/x.bin, keep.bin
    assert doc["bytes"] == sum(
        len(n) for n in ("Photo.JPG", "b.txt", "cache/x.bin", "cache/keep.bin")
    )
    assert sorted(initialised.rglob("*")) == before
    text = cli("backup", "-n", tree)
    assert text.code == 0 and "dry run: would back up 6 files, 2 directories" in text.out
    # no repository needed
    alone = cli("--repo", "/nonexistent/repo", "backup", "--dry-run", tree)
    assert alone.code == 0, alone.err


def test_files_from(initialised: Path, tmp_path: Path, tree: Path, cli: Cli) -> None:
    listing = tmp_path / "list"
    listing.write_text(f"# what to save\n{tree}/b.txt\n\n{tree}/cache\n")
    res = cli("backup", "--files-from", listing, "--json")
    assert res.code == 0, res.err
    assert sorted(res.json()["paths"]) == [f"{tree}/b.txt", f"{tree}/cache"]
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    bad = cli("backup", "--files-from", empty)
    assert bad.code == 2 and "lists no path" in assert_one_line_error(bad)
    missing = cli("backup", "--files-from", tmp_path / "nope")
    assert missing.code == 2 and "does not exist" in assert_one_line_error(missing)


def test_exclude_caches_if_present_and_larger_than(
    initialised: Path, tmp_path: Path, cli: Cli
) -> None:
    src = tmp_path / "src"
    for rel, data in (
        ("app/big.bin", b"x" * 5000),
        ("app/small.bin", b"x" * 100),
        ("cache/CACHEDIR.TAG", b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n"),
        ("cache/blob", b"cached"),
        ("fake/CACHEDIR.TAG", b"no signature"),
        ("fake/kept", b"kept"),
        ("build/.nobackup", b""),
        ("build/out.o", b"obj"),
    ):
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    res = cli(
        "backup",
        src,
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-larger-than",
        "4K",
    )
    assert res.code == 0, res.err
    assert listed(cli, src) == {
        "app",
        "app/small.bin",
        "fake",
        "fake/CACHEDIR.TAG",
        "fake/kept",
    }
    plain = cli("backup", src)
    assert plain.code == 0
    assert {"cache/blob", "build/out.o", "app/big.bin"} <= listed(cli, src)
    bad = cli("backup", src, "--exclude-larger-than", "lots")
    assert bad.code == 2 and "'lots' is not a size" in assert_one_line_error(bad)
