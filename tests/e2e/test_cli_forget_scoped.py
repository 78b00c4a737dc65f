"""`forget` scoped by --host, --tag, --path, and stack snapshots grouped by their stack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import Result, assert_one_line_error, make_tree

Cli = Callable[..., Result]


def _backup(cli: Cli, *args: object) -> str:
    res = cli("backup", "--json", *args)
    assert res.code == 0, res.err
    return str(res.json()["id"])


def _removed(res: Result) -> set[str]:
    assert res.code == 0, res.err
    return {d["id"] for d in res.json()["decisions"] if not d["keep"]}


def test_stack_snapshots_are_one_group_across_a_plan_edit(
    initialised: Path, tmp_path: Path, cli: Cli
) -> None:
    a = make_tree(tmp_path / "a", files=2)
    b = make_tree(tmp_path / "b", files=2)
    before = _backup(cli, a, "--tag", "stack:dify")
    after = _backup(cli, a, b, "--tag", "stack:dify")  # the plan now names one more path
    plain_a = _backup(cli, a)
    res = cli("forget", "--keep-last", "1", "--dry-run", "--json")
    assert _removed(res) == {before}  # the plain snapshot of a is its own group
    text = cli("forget", "--keep-last", "1", "--dry-run")
    assert "snapshots of host" in text.out and "; stack dify:" in text.out
    assert after[:8] in text.out and plain_a[:8] in text.out
    # grouped by paths and tags as before when asked: three groups, nothing removed
    assert _removed(cli("forget", "--keep-last", "1", "-n", "--json", "--group-by", "tags")) == {
        before
    }
    assert _removed(cli("forget", "--keep-last", "1", "-n", "--json", "--group-by", "")) == {
        before,
        after,
    }


def test_forget_filters_limit_the_policy(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    a = make_tree(tmp_path / "a", files=2)
    b = make_tree(tmp_path / "b", files=2)
    a1 = _backup(cli, a, "--tag", "nightly")
    b1 = _backup(cli, b, "--host", "other")
    a2 = _backup(cli, a, "--tag", "nightly")
    b2 = _backup(cli, b, "--host", "other")
    assert _removed(cli("forget", "--keep-last", "1", "-n", "--json", "--tag", "nightly")) == {a1}
    assert _removed(cli("forget", "--keep-last", "1", "-n", "--json", "--host", "other")) == {b1}
    assert _removed(cli("forget", "--keep-last", "1", "-n", "--json", "--path", f"{b}/")) == {b1}
    only = cli("forget", "--keep-last", "1", "--json", "--host", "other")
    assert only.code == 0, only.err
    left = {s["id"] for s in cli("snapshots", "--json").json()}
    assert left == {a1, a2, b2}
    both = cli("forget", a1[:8], "--tag", "nightly")
    assert both.code == 2 and "give one or the other" in assert_one_line_error(both)
