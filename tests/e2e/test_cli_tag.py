"""`stackvault tag --add/--remove/--set`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FAST_INIT, PASSWORD, Result, assert_one_line_error

Cli = Callable[..., Result]


def _tags(cli: Cli) -> dict[str, list[str]]:
    res = cli("snapshots", "--json")
    assert res.code == 0, res.err
    return {s["id"]: s["tags"] for s in res.json()}


def test_add_remove_set(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x\n")
    first = cli("backup", src, "--tag", "daily", "--json").json()["id"]
    second = cli("backup", src, "--tag", "daily", "--tag", "db", "--json").json()["id"]

    dry = cli("tag", "--add", "keep", first[:8], "--dry-run")
    assert dry.code == 0 and "would change the tags of 1 of 1 snapshot(s)" in dry.out
    assert set(_tags(cli)) == {first, second}

    res = cli("tag", "--add", "keep", "--remove", "daily", first[:8], "--json")
    assert res.code == 0, res.err
    (change,) = res.json()["changed"]
    assert change["old"] == first and change["to"] == ["keep"]
    tags = _tags(cli)
    assert first not in tags and tags[change["new"]] == ["keep"]
    # by filter: every snapshot with tag db
    res = cli("tag", "--set", "weekly", "--set", "db", "--tag", "db")
    assert res.code == 0, res.err
    assert sorted(_tags(cli).values()) == [["db", "weekly"], ["keep"]]
    unchanged = cli("tag", "--add", "db", "--tag", "db")
    assert "changed the tags of 0 of 1 snapshot(s)" in unchanged.out
    assert cli("tag", "--set", "", "--tag", "keep").code == 0
    assert sorted(_tags(cli).values()) == [[], ["db", "weekly"]]
    # the data is still there under the new id
    assert cli("ls", "latest", "--tag", "weekly").code == 0


def test_a_retagged_snapshot_is_not_copied_again(
    initialised: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x\n")
    assert cli("backup", src).code == 0
    dest = tmp_path / "dest"
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", PASSWORD)
    assert cli("--repo", dest, *FAST_INIT).code == 0
    assert cli("copy", "--from", initialised, "--to", dest).code == 0
    assert cli("tag", "--add", "kept", "latest").code == 0
    again = cli("copy", "--from", initialised, "--to", dest, "--json")
    assert again.code == 0, again.err
    assert again.json()["copied"] == 0 and again.json()["skipped"] == 1


def test_usage_errors(initialised: Path, cli: Cli) -> None:
    for args, words in (
        (["tag", "latest"], "nothing to change"),
        (["tag", "--set", "a", "--add", "b"], "not both"),
        (["tag", "--add", "a,b"], "is not a tag"),
    ):
        res = cli(*args)
        assert res.code == 2, args
        assert words in assert_one_line_error(res)
    appendonly = cli("--append-only", "tag", "--add", "x")
    assert appendonly.code == 1 and "tag" in assert_one_line_error(appendonly)
