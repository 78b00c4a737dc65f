"""`latest` scoped by --host, --tag and --path (restore, ls, dump, export, sha256sums, diff,
copy): the newest snapshot the filters match, and one sentence naming them when none does."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FAST_INIT, PASSWORD, Result, assert_one_line_error, run_subprocess

Cli = Callable[..., Result]


def _backup(cli: Cli, *args: object) -> str:
    res = cli("backup", "--json", *args)
    assert res.code == 0, res.err
    return str(res.json()["id"])


@pytest.fixture
def three(initialised: Path, tmp_path: Path, cli: Cli) -> dict[str, object]:
    """app (tag app), then etc (tag etc, host other), then a stdin dump: 'latest' of all is
    the dump."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "a.txt").write_text("app file\n")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "e.txt").write_text("etc file\n")
    ids = {
        "app": _backup(cli, app, "--tag", "app"),
        "etc": _backup(cli, etc, "--tag", "etc", "--host", "other"),
        "dump": _backup(cli, "--stdin-from-command", "echo dumped", "--stdin-filename", "d.sql"),
    }
    return {"app": app, "etc": etc, "ids": ids}


def test_restore_latest_of_a_path_is_not_the_newest_snapshot(
    three: dict[str, object], tmp_path: Path, cli: Cli
) -> None:
    app = three["app"]
    assert isinstance(app, Path)
    target = tmp_path / "t1"
    res = cli("restore", "latest", "--target", target, "--path", f"{app}/")
    assert res.code == 0, res.err
    assert (target / str(app).lstrip("/") / "a.txt").read_text() == "app file\n"
    assert not list(target.rglob("d.sql"))
    # unscoped, latest is the stdin dump
    plain = tmp_path / "t2"
    assert cli("restore", "latest", "--target", plain).code == 0
    assert list(plain.rglob("d.sql")) and not list(plain.rglob("a.txt"))


def test_ls_dump_and_sha256sums_take_the_filters(three: dict[str, object], cli: Cli) -> None:
    app, etc = three["app"], three["etc"]
    ls = cli("ls", "latest", "--tag", "app", "--json")
    assert ls.code == 0, ls.err
    assert f"{app}/a.txt" in {e["path"] for e in ls.json()}
    ls_host = cli("ls", "--host", "other", "latest")
    assert ls_host.code == 0 and f"{etc}/e.txt" in ls_host.out
    dumped = run_subprocess("dump", "latest", f"{etc}/e.txt", "--host", "other")
    assert dumped.code == 0, dumped.err
    assert dumped.out == "etc file\n"
    sums = cli("sha256sums", "latest", "--tag", "app", "--snapshot-path", str(app))
    assert sums.code == 0 and "a.txt" in sums.out and "d.sql" not in sums.out


def test_export_keeps_its_path_option_for_the_subtree(
    three: dict[str, object], tmp_path: Path, cli: Cli
) -> None:
    app = three["app"]
    out = tmp_path / "app.tar"
    res = cli("export", "latest", "--output", out, "--snapshot-path", app, "--path", app)
    assert res.code == 0, res.err
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert any(n.endswith("a.txt") for n in names) and not any("d.sql" in n for n in names)


def test_diff_resolves_latest_within_the_filters(three: dict[str, object], cli: Cli) -> None:
    ids = three["ids"]
    assert isinstance(ids, dict)
    res = cli("diff", ids["app"], "latest", "--tag", "app", "--json")
    assert res.code == 0, res.err
    assert res.json()["to"] == ids["app"] and res.json()["changes"] == []


def test_latest_matching_nothing_names_the_filters(three: dict[str, object], cli: Cli) -> None:
    res = cli("restore", "latest", "--target", "/nowhere", "--host", "web9", "--tag", "nightly")
    line = assert_one_line_error(res)
    assert res.code == 1
    assert "'latest' matches nothing" in line
    assert "of host web9 with tag nightly" in line
    # an id prefix is exact: the filters do not hide it
    ids = three["ids"]
    assert isinstance(ids, dict)
    ok = cli("ls", ids["dump"][:8], "--tag", "app")
    assert ok.code == 0 and "d.sql" in ok.out


def test_copy_takes_path_and_names_the_filters(
    three: dict[str, object],
    initialised: Path,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = three["app"]
    ids = three["ids"]
    assert isinstance(ids, dict)
    dest = tmp_path / "dest"
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", PASSWORD)
    assert cli("--repo", dest, *FAST_INIT).code == 0
    source = str(initialised)
    res = cli("copy", "--from", source, "--to", dest, "latest", "--path", app, "--json")
    assert res.code == 0, res.err
    assert [s["source_id"] for s in res.json()["snapshots"]] == [ids["app"]]
    none = cli("copy", "--from", source, "--to", dest, "latest", "--path", "/no/such")
    assert "no snapshot including /no/such exists" in assert_one_line_error(none)
