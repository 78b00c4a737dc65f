"""End-to-end tests of `stackvault copy` and `init --copy-chunker-params-from` through the CLI:
exit codes, `--json`, text output, passwords and locations of the source, filters, Ctrl-C.

Real files in ``tmp_path``, real local repositories with different passwords, the real CLI
(in-process through the ``cli`` fixture; as a subprocess where a prompt would be needed).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    FAST_INIT,
    PASSWORD,
    Result,
    assert_one_line_error,
    describe,
    inside,
    make_tree,
    run_subprocess,
)
from stackvault.engine.copy import CopyJob

Cli = Callable[..., Result]
SOURCE_PASSWORD = "the source's own password"


# --- helpers -----------------------------------------------------------------------------------


def snapshots(cli: Cli, repo: Path) -> list[dict[str, Any]]:
    res = cli("--repo", repo, "snapshots", "--json")
    assert res.code == 0, res.err
    docs: list[dict[str, Any]] = res.json()
    return docs


@pytest.fixture
def source(tmp_path: Path, repo_env: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A source repository (its own password, in STACKVAULT_FROM_PASSWORD) with one backup;
    STACKVAULT_REPOSITORY (``repo_env``) is the initialised destination."""
    src = tmp_path / "source"
    monkeypatch.setenv("STACKVAULT_PASSWORD", SOURCE_PASSWORD)
    assert cli("--repo", src, *FAST_INIT).code == 0
    res = cli("--repo", src, "backup", make_tree(tmp_path / "data", seed=3), "--tag", "nightly")
    assert res.code == 0, res.err
    monkeypatch.setenv("STACKVAULT_PASSWORD", PASSWORD)
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", SOURCE_PASSWORD)
    assert cli(*FAST_INIT).code == 0
    return src


def source_snapshots(cli: Cli, src: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    with monkeypatch.context() as m:
        m.setenv("STACKVAULT_PASSWORD", SOURCE_PASSWORD)
        res = cli("--repo", src, "snapshots", "--json")
    assert res.code == 0, res.err
    docs: list[Any] = res.json()
    return docs


# --- copying -----------------------------------------------------------------------------------


def test_copy_json_then_nothing_the_second_time(
    source: Path, repo_env: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    (src_snap,) = source_snapshots(cli, source, monkeypatch)

    res = cli("copy", "--from", source, "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["source"] == str(source)
    assert doc["destination"] == str(repo_env)
    assert doc["shared_ids"] is False
    assert (doc["selected"], doc["copied"], doc["skipped"]) == (1, 1, 0)
    (entry,) = doc["snapshots"]
    assert entry["source_id"] == src_snap["id"]
    assert entry["status"] == "copied"
    assert entry["blobs_copied"] > 0 and entry["bytes_copied"] > 0
    assert entry["blobs_present"] == 0
    assert doc["totals"]["blobs_copied"] == entry["blobs_copied"]

    (dst_snap,) = snapshots(cli, repo_env)
    assert dst_snap["id"] == entry["id"]
    assert dst_snap["original"] == src_snap["id"]
    assert dst_snap["tags"] == ["nightly"] and dst_snap["paths"] == src_snap["paths"]
    assert dst_snap["tree"] != src_snap["tree"]

    again = cli("copy", "--from", source, "--json")
    assert again.code == 0, again.err
    doc2 = again.json()
    assert (doc2["copied"], doc2["skipped"]) == (0, 1)
    assert doc2["snapshots"][0]["existing_id"] == dst_snap["id"]
    assert doc2["totals"]["blobs_copied"] == 0
    assert len(snapshots(cli, repo_env)) == 1

    target = tmp_path / "restored"
    assert cli("restore", "latest", "--target", target).code == 0
    data = tmp_path / "data"
    assert describe(inside(target, data)) == describe(data)
    check = cli("check", "--read-data")
    assert check.code == 0, check.out + check.err
    assert "no errors were found" in check.out


def test_copy_text_output_and_locations_from_the_environment(
    source: Path, repo_env: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    (src_snap,) = source_snapshots(cli, source, monkeypatch)
    other = tmp_path / "other"
    assert cli("--repo", other, *FAST_INIT).code == 0
    monkeypatch.setenv("STACKVAULT_FROM_REPOSITORY", str(source))

    res = cli("copy", "--to", other)  # --to instead of --repo; --from from the environment
    assert res.code == 0, res.err
    lines = res.out.strip().splitlines()
    assert lines[0].startswith(f"snapshot {src_snap['id'][:8]} copied as ")
    assert "transferred" in lines[0]
    assert lines[-1].startswith("copied 1 snapshot(s), skipped 0")
    assert len(snapshots(cli, other)) == 1
    assert snapshots(cli, repo_env) == []  # the default destination was not touched

    res = cli("copy", "--to", other)
    assert res.code == 0, res.err
    assert "skipped: the destination already holds it as" in res.out

    res = cli("--quiet", "copy", "--to", other)
    assert res.code == 0 and res.out == ""


def test_copy_password_file_and_filters(
    source: Path, repo_env: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        m.setenv("STACKVAULT_PASSWORD", SOURCE_PASSWORD)
        data = tmp_path / "data"
        for args in (["--host", "db1"], ["--host", "db2", "--tag", "weekly"]):
            assert cli("--repo", source, "backup", data, *args).code == 0
    all_src = source_snapshots(cli, source, monkeypatch)
    monkeypatch.delenv("STACKVAULT_FROM_PASSWORD")
    pw_file = tmp_path / "source-password"
    pw_file.write_text(SOURCE_PASSWORD + "\n")

    res = cli("copy", "--from", source, "--from-password-file", pw_file, "--host", "db2", "--json")
    assert res.code == 0, res.err
    assert [s["source_id"] for s in res.json()["snapshots"]] == [all_src[2]["id"]]
    first_copied = res.json()["totals"]["blobs_copied"]
    assert first_copied > 0

    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD_FILE", str(pw_file))
    res = cli("copy", "--from", source, "--tag", "nightly", "latest", "--json")
    assert res.code == 0, res.err
    assert [s["source_id"] for s in res.json()["snapshots"]] == [all_src[0]["id"]]
    # the same files: only the trees of directories whose metadata changed in between
    assert res.json()["totals"]["blobs_present"] > 0
    assert res.json()["totals"]["blobs_copied"] < first_copied

    res = cli("copy", "--from", source, all_src[1]["id"][:10], "--json")
    assert [s["source_id"] for s in res.json()["snapshots"]] == [all_src[1]["id"]]
    assert {s["original"] for s in snapshots(cli, repo_env)} == {s["id"] for s in all_src}

    res = cli("copy", "--from", source, "--host", "nobody", "--json")
    assert res.code == 0 and res.json()["selected"] == 0
    res = cli("copy", "--from", source, "--host", "nobody")
    assert res.code == 0 and "nothing to copy" in res.out
    res = cli("copy", "--from", source, "ffff0000")
    assert res.code == 1
    assert "no snapshot matches" in assert_one_line_error(res)


# --- errors ------------------------------------------------------------------------------------


def test_wrong_source_password_exits_12_naming_the_source(
    source: Path, repo_env: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", PASSWORD)  # the destination's
    res = cli("copy", "--from", source)
    assert res.code == 12
    line = assert_one_line_error(res)
    assert f"wrong password for the source repository {source}" in line
    assert "STACKVAULT_FROM_PASSWORD" in line
    assert snapshots(cli, repo_env) == []
    assert not any((source / "locks").iterdir())

    # the destination's wrong password names the destination
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", SOURCE_PASSWORD)
    monkeypatch.setenv("STACKVAULT_PASSWORD", "nope")
    res = cli("copy", "--from", source)
    assert res.code == 12
    assert f"wrong password for the destination repository {repo_env}" in (
        assert_one_line_error(res)
    )
    assert not any((source / "locks").iterdir())  # the source lock was released


def test_missing_source_or_destination_exits_10(
    source: Path, repo_env: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-repo"
    res = cli("copy", "--from", missing)
    assert res.code == 10
    line = assert_one_line_error(res)
    assert "source repository" in line and str(missing) in line and "--from" in line
    assert not missing.exists()

    res = cli("copy", "--from", source, "--to", missing)
    assert res.code == 10
    line = assert_one_line_error(res)
    assert "destination repository" in line and str(missing) in line

    # Both are checked before any password is needed: no prompt, no password error.
    monkeypatch.delenv("STACKVAULT_FROM_PASSWORD")
    monkeypatch.delenv("STACKVAULT_PASSWORD")
    res = run_subprocess("copy", "--from", str(missing), stdin=subprocess.DEVNULL, timeout=60)
    assert res.code == 10, res.err


def test_source_password_is_asked_for_or_explained(
    source: Path, repo_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STACKVAULT_FROM_PASSWORD")
    res = run_subprocess("copy", "--from", str(source), stdin=subprocess.DEVNULL, timeout=60)
    assert res.code == 1
    line = assert_one_line_error(res)
    assert "no source repository password given" in line
    assert "STACKVAULT_FROM_PASSWORD" in line


def test_usage_errors(source: Path, repo_env: Path, cli: Cli) -> None:
    res = cli("copy")
    assert res.code == 1
    assert "no source repository given" in assert_one_line_error(res)
    res = cli("copy", "--from", repo_env)
    assert res.code == 2
    assert "both name" in assert_one_line_error(res)
    res = cli("copy", "--from", source, "--bogus")
    assert res.code == 2


def test_ctrl_c_exits_130_and_records_nothing(
    source: Path, repo_env: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    transfer = CopyJob._transfer

    def interrupted(self: CopyJob, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise KeyboardInterrupt  # its slot is freed by the job's wrapper
        return transfer(self, *args)

    monkeypatch.setattr(CopyJob, "_transfer", interrupted)
    res = cli("copy", "--from", source)
    assert res.code == 130
    line = assert_one_line_error(res)
    assert "copy interrupted" in line and "was not saved" in line
    assert snapshots(cli, repo_env) == []
    assert not any((repo_env / "locks").iterdir())
    assert not any((source / "locks").iterdir())
    check = cli("check")
    assert check.code == 0, check.out + check.err

    monkeypatch.setattr(CopyJob, "_transfer", transfer)
    res = cli("copy", "--from", source, "--json")
    assert res.code == 0 and res.json()["copied"] == 1


# --- init --copy-chunker-params-from -------------------------------------------------------------


def test_init_with_chunker_params_of_the_source(
    source: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    tier2 = tmp_path / "tier2"
    monkeypatch.setenv("STACKVAULT_PASSWORD", "tier 2 password")
    res = cli("--repo", tier2, *FAST_INIT, "--copy-chunker-params-from", source, "--json")
    assert res.code == 0, res.err
    doc = res.json()
    source_id = json.loads((source / "config").read_text())["id"]
    assert doc["chunker_params_from"] == source_id
    assert doc["id"] != source_id

    res = cli("--repo", tier2, "copy", "--from", source, "--json")
    assert res.code == 0, res.err
    assert res.json()["shared_ids"] is True
    (src_snap,) = source_snapshots(cli, source, monkeypatch)
    (copied,) = snapshots(cli, tier2)
    assert copied["tree"] == src_snap["tree"]  # same ids in both
    check = cli("--repo", tier2, "check", "--read-data")
    assert check.code == 0, check.out + check.err

    text = cli("--repo", tmp_path / "tier3", *FAST_INIT, "--copy-chunker-params-from", source)
    assert text.code == 0, text.err
    assert "shares blob ids and chunking" in text.out


def test_init_with_chunker_params_errors(
    source: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = tmp_path / "new"
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", "wrong")
    res = cli("--repo", new, *FAST_INIT, "--copy-chunker-params-from", source)
    assert res.code == 12
    assert f"source repository {source}" in assert_one_line_error(res)
    assert not new.exists()  # nothing created

    res = cli("--repo", new, *FAST_INIT, "--copy-chunker-params-from", tmp_path / "nothing")
    assert res.code == 10
    assert "source repository" in assert_one_line_error(res)
    assert not new.exists()

    res = cli("--repo", new, *FAST_INIT, "--from-password-file", tmp_path / "x")
    assert res.code == 2
