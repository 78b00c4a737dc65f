"""`backup --source`, `snapshots` with artifacts, `restore --artifact` (``--target`` and
``--to``) through the CLI, with the directory-backed test source (support/dirsource.py): exit
codes, JSON shapes and messages. The real sources have their own suites in tests/sources/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result, describe, make_tree
from support.dirsource import register_dir_sources

Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def _sources(monkeypatch: pytest.MonkeyPatch) -> None:
    register_dir_sources(monkeypatch)


def test_backup_a_source_list_it_and_restore_its_files(
    cli: Cli, initialised: Path, tmp_path: Path
) -> None:
    data = make_tree(tmp_path / "data")
    res = cli("backup", "--source", f"testdir://{data}?name=app-data")
    assert res.code == 0, res.err
    assert "Artifact app-data (testdir, testdir://" in res.out

    res = cli("snapshots", "--json")
    [snap] = res.json()
    [record] = snap["artifacts"]
    assert record["name"] == "app-data" and record["complete"] is True
    assert record["path"] == "/.stackvault/artifacts/app-data"
    assert record["metadata"]["facts"]["files"]
    assert snap["paths"] == ["/.stackvault/artifacts/app-data"]
    table = cli("snapshots").out
    assert "[app-data]" in table

    out = tmp_path / "out"
    res = cli("restore", "latest", "--artifact", "app-data", "--target", out)
    assert res.code == 0, res.err
    assert describe(out) == describe(data)

    res = cli("ls", "latest", "/.stackvault/artifacts/app-data/docs")
    assert res.code == 0 and "note-0.txt" in res.out


def test_restore_to_a_live_target_refuses_overwrites_with_a_safety_snapshot(
    cli: Cli, initialised: Path, tmp_path: Path
) -> None:
    data = make_tree(tmp_path / "data")
    assert cli("backup", "--source", f"testdir://{data}?name=d").code == 0
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("keep")

    res = cli("restore", "latest", "--artifact", "d", "--to", f"testdir://{target}")
    assert res.code == 1
    assert "is not empty" in res.err and "--overwrite" in res.err
    assert (target / "keep.txt").read_text() == "keep"

    res = cli(
        "restore",
        "latest",
        "--artifact",
        "d",
        "--to",
        f"testdir://{target}",
        "--overwrite",
        "--json",
    )
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["validated"] is True and doc["differences"] == []
    assert doc["replaced"].endswith("holds 1 entries")
    safety = doc["safety_snapshot"]
    snaps = {s["id"]: s for s in cli("snapshots", "--json").json()}
    assert "pre-restore" in snaps[safety]["tags"]
    assert describe(target) == describe(data)


def test_a_failing_source_alone_fails_and_with_others_gives_exit_3(
    cli: Cli, initialised: Path, tmp_path: Path
) -> None:
    data = make_tree(tmp_path / "data")
    res = cli("backup", "--source", f"testdir://{data}?fail-after=2")
    assert res.code == 1
    assert "stackvault: error: simulated failure after 2 files" in res.err
    assert "Traceback" not in res.err
    assert cli("snapshots", "--json").json() == []

    files = make_tree(tmp_path / "files")
    res = cli("backup", "--source", f"testdir://{data}?fail-after=2&name=bad", files)
    assert res.code == 3, res.err
    assert "Artifact bad (testdir" in res.out and "FAILED: simulated failure" in res.out
    assert "INCOMPLETE" in res.err
    [snap] = cli("snapshots", "--json").json()
    assert snap["complete"] is False
    assert snap["problems"] == [
        {"path": "artifact:bad", "message": "simulated failure after 2 files"}
    ]
    res = cli("restore", "latest", "--artifact", "bad", "--target", tmp_path / "o")
    assert res.code == 1 and "incomplete" in res.err


def test_source_url_errors_are_usage_errors_before_anything_runs(
    cli: Cli, initialised: Path
) -> None:
    res = cli("backup", "--source", "postgres://user:secret@127.0.0.1:5432/app")
    assert res.code == 2
    assert "secret" not in res.err and "contains a password" in res.err
    res = cli("backup", "--source", "nosuch://x")
    assert res.code == 2 and "unknown source scheme 'nosuch'" in res.err
    res = cli("backup", "--source", "just-a-name")
    assert res.code == 2 and "is not a URL" in res.err
    res = cli("restore", "latest", "--to", "testdir:///tmp/x")
    assert res.code == 2 and "--to needs --artifact" in res.err
