"""`stackvault find PATTERN` across snapshots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import Result

Cli = Callable[..., Result]


def _backup(cli: Cli, *args: object) -> str:
    res = cli("backup", "--json", *args)
    assert res.code == 0, res.err
    return str(res.json()["id"])


def test_find_across_snapshots(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = tmp_path / "src"
    (src / "db").mkdir(parents=True)
    (src / "db" / "dump.sql").write_text("select 1;\n")
    (src / "notes.txt").write_text("n\n")
    first = _backup(cli, src, "--tag", "one")
    (src / "db" / "dump.sql").unlink()
    (src / "node_modules" / "pkg").mkdir(parents=True)
    (src / "node_modules" / "pkg" / "index.js").write_text("x\n")
    (src / "Other.SQL").write_text("y\n")
    second = _backup(cli, src)

    res = cli("find", "*.sql", "--json")
    assert res.code == 0, res.err
    assert [(f["snapshot"], f["path"]) for f in res.json()] == [(first, f"{src}/db/dump.sql")]
    folded = cli("find", "-i", "*.sql", "--json").json()
    assert {(f["snapshot"], f["path"]) for f in folded} == {
        (first, f"{src}/db/dump.sql"),
        (second, f"{src}/Other.SQL"),
    }
    # a directory is found, not what lies below it
    dirs = cli("find", "node_modules", "--json").json()
    assert [(f["path"], f["type"]) for f in dirs] == [(f"{src}/node_modules", "dir")]
    # scoped to some snapshots
    assert cli("find", "notes.txt", "--tag", "one", "--json").json()[0]["snapshot"] == first
    latest = cli("find", "notes.txt", "--snapshot", "latest", "--json").json()
    assert [f["snapshot"] for f in latest] == [second]
    text = cli("find", "notes.txt")
    assert text.code == 0
    assert f"{src}/notes.txt" in text.out and "2 match(es) in 2 of 2 snapshot(s)" in text.out
    none = cli("find", "nothing-like-this")
    assert none.code == 0 and "no match in 2 snapshot(s)" in none.out
