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
