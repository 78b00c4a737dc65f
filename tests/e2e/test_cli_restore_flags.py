"""`restore --exclude/--iexclude` and `restore --dry-run` through the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import Result, assert_one_line_error

Cli = Callable[..., Result]


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for rel in ("a.log", "b.txt", "C.TXT", "cache/x.bin", "cache/keep.bin", "docs/d.md"):
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    return src


def _restored(target: Path, src: Path) -> set[str]:
    root = target / str(src).lstrip("/")
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_restore_exclude_and_iexclude(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = _tree(tmp_path)
    assert cli("backup", src).code == 0
    target = tmp_path / "t"
    res = cli(
        "restore",
        "latest",
        "--target",
        target,
        "--exclude",
        "*.log",
        "--exclude",
        f"{src}/cache/*",
        "--exclude",
        "!keep.bin",
        "--iexclude",
        "c.txt",
    )
    assert res.code == 0, res.err
    assert _restored(target, src) == {"b.txt", "cache/keep.bin", "docs/d.md"}
    # --include and --exclude together: exclude wins
    both = tmp_path / "both"
    res = cli("restore", "latest", "-t", both, "--include", f"{src}/docs", "-e", "*.md")
    assert res.code == 0, res.err
    assert _restored(both, src) == set()
    bad = cli("restore", "latest", "-t", tmp_path / "bad", "--exclude", "[z-a]")
    assert bad.code == 2 and "is not valid" in assert_one_line_error(bad)


def test_restore_dry_run_touches_nothing(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = _tree(tmp_path)
    assert cli("backup", src).code == 0
    target = tmp_path / "t"
    res = cli("restore", "latest", "--target", target, "--dry-run", "--json", "-e", "cache")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["dry_run"] is True and doc["files"] == 4
    assert doc["bytes"] == sum(len(n) for n in ("a.log", "b.txt", "C.TXT", "docs/d.md"))
    assert not target.exists()
    text = cli("restore", "latest", "--target", target, "-n")
    assert text.code == 0 and "dry run: would restore 6 files" in text.out
    assert not target.exists()
    to = cli("restore", "latest", "--artifact", "x", "--to", "sqlite:///x.db", "--dry-run")
    assert to.code == 2 and "apply to --target DIR" in assert_one_line_error(to)
