"""End-to-end tests of append-only mode (``--append-only`` / ``STACKVAULT_APPEND_ONLY=1``) through
the CLI: backups, check, restore, copy and `key add` work; forget, prune, `key remove`,
`key passwd` and `unlock --remove-all` refuse up front with one clear sentence and exit 1."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FAST_INIT, PASSWORD, Result, assert_one_line_error, describe, inside, make_tree
from stackvault.errors import ObjectExists
from stackvault.store.local import LocalStore

Cli = Callable[..., Result]


def tree_state(repo: Path) -> dict[str, bytes]:
    """Every object file of the repository (locks aside) and its content."""
    out = {}
    for dirpath, _dirs, files in os.walk(repo):
        for name in files:
            path = Path(dirpath) / name
            rel = str(path.relative_to(repo))
            if not rel.startswith("locks/"):
                out[rel] = path.read_bytes()
    return out


def snapshot_ids(cli: Cli, *args: str) -> list[str]:
    res = cli(*args, "snapshots", "--json")
    assert res.code == 0, res.err
    return [s["id"] for s in res.json()]


def test_backup_check_restore_copy_work_append_only(
    initialised: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_tree(tmp_path / "data")
    first = cli("--append-only", "backup", data, "--json")
    assert first.code == 0, first.err
    (data / "docs" / "later.txt").write_text("added later\n")
    monkeypatch.setenv("STACKVAULT_APPEND_ONLY", "1")
    second = cli("backup", data, "--json")
    assert second.code == 0, second.err
    assert second.json()["parent"] == first.json()["id"]
    check = cli("check", "--read-data")
    assert check.code == 0, check.out + check.err
    assert "no errors were found" in check.out
    target = tmp_path / "restored"
    assert cli("restore", "latest", "--target", target, "--verify").code == 0
    assert describe(inside(target, data)) == describe(data)
    assert not any((initialised / "locks").iterdir())  # every lock was released

    # a new repository, a copy into it and a second password, all append-only
    tier2 = tmp_path / "tier2"
    assert cli("--repo", tier2, *FAST_INIT).code == 0
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", PASSWORD)
    res = cli("--repo", tier2, "copy", "--from", initialised, "--json")
    assert res.code == 0, res.err
    assert res.json()["copied"] == 2
    assert cli("--repo", tier2, "check", "--read-data").code == 0
    monkeypatch.setenv("STACKVAULT_NEW_PASSWORD", "another password")
    assert cli("key", "add").code == 0
    assert cli("unlock").code == 0  # stale locks only: the same as every command does


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["forget", "--keep-last", "1"], "`forget` deletes snapshots"),
        (["forget", "ID"], "`forget` deletes snapshots"),
        (["forget", "--keep-last", "1", "--prune"], "deletes snapshots and unreferenced data"),
        (["prune"], "`prune` deletes packs and index files"),
        (["key", "remove", "abcd"], "`key remove` deletes a key file"),
        (["key", "passwd"], "`key passwd` deletes the old key file"),
        (["unlock", "--remove-all"], "`unlock --remove-all` removes locks"),
    ],
)
def test_deleting_commands_refuse_up_front(
    initialised: Path,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    what: str,
) -> None:
    data = make_tree(tmp_path / "data", files=3)
    assert cli("backup", data).code == 0
    (data / "more.txt").write_text("more\n")
    assert cli("backup", data).code == 0
    ids = snapshot_ids(cli)
    args = [ids[0] if a == "ID" else a for a in args]
    before = tree_state(initialised)

    res = cli("--append-only", *args)
    assert res.code == 1
    line = assert_one_line_error(res)
    assert what in line
    assert "append-only" in line and "full access" in line
    assert tree_state(initialised) == before

    # up front: before the repository is even opened (a wrong password does not matter)
    monkeypatch.setenv("STACKVAULT_PASSWORD", "wrong")
    monkeypatch.setenv("STACKVAULT_APPEND_ONLY", "yes")
    res = cli(*args)
    assert res.code == 1
    assert what in assert_one_line_error(res)


def test_dry_runs_are_allowed(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    data = make_tree(tmp_path / "data", files=3)
    for _ in range(2):
        assert cli("backup", data).code == 0
    before = tree_state(initialised)
    res = cli("--append-only", "forget", "--keep-last", "1", "--prune", "--dry-run")
    assert res.code == 0, res.err
    assert "would remove 1 snapshot(s)" in res.out
    assert cli("--append-only", "prune", "--dry-run").code == 0
    assert tree_state(initialised) == before


def test_bad_environment_value_and_remote_locations(
    initialised: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACKVAULT_APPEND_ONLY", "maybe")
    res = cli("snapshots")
    assert res.code == 1
    assert "STACKVAULT_APPEND_ONLY" in assert_one_line_error(res)
    monkeypatch.setenv("STACKVAULT_APPEND_ONLY", "0")
    assert cli("snapshots").code == 0
    monkeypatch.delenv("STACKVAULT_APPEND_ONLY")
    res = cli("--append-only", "--repo", "s3://bucket/prefix", "snapshots")
    assert res.code == 2
    line = assert_one_line_error(res)
    assert "local repositories" in line and "bucket policy" in line


def test_overwriting_a_pack_through_the_store_raises(
    initialised: Path, tmp_path: Path, cli: Cli
) -> None:
    assert cli("--append-only", "backup", make_tree(tmp_path / "data", files=3)).code == 0
    store = LocalStore(initialised, append_only=True)
    pack = next(i.name for i in store.list("data/"))
    original = store.get(pack)
    with pytest.raises(ObjectExists, match="append-only"):
        store.put(pack, b"overwritten")
    assert store.get(pack) == original
    assert cli("check", "--read-data").code == 0
