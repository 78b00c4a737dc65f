"""`stackvault config init|check|show` (cli, end to end): files, output, JSON, exit codes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result
from stackvault.errors import EXIT_ERROR, EXIT_USAGE

Cli = Callable[..., Result]

PLAN = "version: 1\nproject: dify\npreset: generic\nconsistency: strict\n"


@pytest.fixture
def written(tmp_path: Path, cli: Cli) -> Path:
    """A file written by `config init` for a stack plan, a primary and one copy."""
    (tmp_path / "plan.yaml").write_text(PLAN)
    out = tmp_path / "stackvault.yaml"
    res = cli(
        "config", "init", "--output", out, "--job", "dify",
        "--stack-plan", tmp_path / "plan.yaml",
        "--repository", tmp_path / "repo",
        "--copy", "s3://bucket/dify?endpoint=http://127.0.0.1:8333",
        "--password-file", tmp_path / "pw",
        "--policy", "tier2",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert res.out == f"wrote {out}; check it with: stackvault config check --config {out}\n"
    return out


def test_init_writes_a_file_that_check_accepts(written: Path, cli: Cli) -> None:
    res = cli("config", "check", "--config", written)
    assert res.code == 0, res.err
    assert res.out == (
        "dify: policy tier2 (rpo 2h, rto 2h), schedule '0 * * * *', into primary + copy1\n"
    )
    assert res.err == f"{written}: 1 job(s), no problems\n"
    res = cli("config", "check", "--config", written, "--json")
    assert res.code == 0, res.err
    assert res.json() == {
        "config": str(written),
        "ok": True,
        "warnings": [],
        "jobs": [
            {
                "job": "dify",
                "policy": "tier2",
                "rpo": "2h",
                "rto": "2h",
                "schedule": "0 * * * *",
                "window": "1h",
                "repository": "primary",
                "copies": ["copy1"],
            }
        ],
    }


def test_init_refuses_to_overwrite_without_force(written: Path, cli: Cli) -> None:
    before = written.read_text()
    args = ("config", "init", "-o", written, "--job", "x", "--path", "/etc", "--repository", "/r")
    res = cli(*args)
    assert res.code == EXIT_USAGE
    assert res.err == f"stackvault: error: {written} exists; add --force to replace it\n"
    assert written.read_text() == before
    res = cli(*args, "--force")
    assert res.code == 0, res.err
    assert "  x:\n" in written.read_text()


def test_init_writes_nothing_that_would_not_pass(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "stackvault.yaml"
    res = cli(
        "config", "init", "-o", out, "--job", "x", "--path", "/etc", "--repository", "/r",
        "--policy", "tier1", "--schedule", "0 2 * * *",
    )  # fmt: skip
    assert res.code == EXIT_ERROR
    assert f"{out}:1 problem" not in res.err
    assert "jobs.x.schedule: '0 2 * * *' leaves up to 1d between runs, more than the rpo 5min" in (
        res.err
    )
    assert not out.exists()
    res = cli("config", "init", "-o", out, "--job", "x", "--repository", "/r")
    assert res.code == EXIT_USAGE
    assert "give --path, --source or --stack-plan" in res.err


def test_check_lists_every_problem_with_exit_1(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        "repositories:\n"
        "  primary: {url: /srv/b, password: secret}\n"
        "jobs:\n"
        "  dify: {paths: [/srv], policy: tier4, repository: primary}\n"
        "  web: {paths: [/srv], policy: tier1, repository: primry}\n"
    )
    res = cli("config", "check", "--config", path)
    assert res.code == EXIT_ERROR
    assert res.out == ""
    assert res.err.splitlines() == [
        f"stackvault: error: {path}: 3 problems:",
        f"{path}:2: repositories.primary.password: an inline password is not accepted: give "
        "password_file (a file holding it), password_env (an environment variable) or "
        "password_command (a command printing it)",
        f"{path}:4: jobs.dify.policy: unknown policy 'tier4' (known: tier1, tier2, tier3)",
        f"{path}:5: jobs.web.repository: unknown repository 'primry' (known: primary)",
    ]


def test_the_config_file_comes_from_the_environment(
    written: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STACKVAULT_CONFIG", str(written))
    assert cli("config", "check").code == 0
    monkeypatch.setenv("STACKVAULT_CONFIG", str(tmp_path / "none.yaml"))
    res = cli("config", "show", "dify")
    assert res.code == EXIT_ERROR
    assert res.err == (
        f"stackvault: error: there is no configuration file {tmp_path / 'none.yaml'}; write one "
        f"with: stackvault config init --output {tmp_path / 'none.yaml'}\n"
    )


def test_show_gives_each_value_and_where_it_came_from(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        "repositories:\n"
        "  primary: {url: /srv/b, password_env: PRIMARY_PASSWORD}\n"
        "  offsite: {url: 's3://bucket/x', password_command: 'pass show x', "
        "storage_class: STANDARD_IA}\n"
        "policies:\n"
        "  nightly:\n"
        "    extends: tier3\n"
        "    rto: 4h\n"
        "    retention: {offsite: {keep-daily: 7}}\n"
        "jobs:\n"
        "  dify:\n"
        "    paths: [/srv/dify]\n"
        "    policy: nightly\n"
        "    repository: primary\n"
        "    copies: [offsite]\n"
        "    window: 6h\n"
        "    hooks: {before: [docker, compose, stop, worker]}\n"
        "    ping_url_env: HC_DIFY\n"
    )
    res = cli("config", "show", "dify", "--config", path)
    assert res.code == 0, res.err
    assert res.out.splitlines() == [
        "job dify (policy nightly)",
        "  path               /srv/dify",
        "  repository         primary: /srv/b (password: environment variable PRIMARY_PASSWORD)",
        "  copy               offsite: s3://bucket/x?storage-class=STANDARD_IA "
        "(password: command pass show x)",
        "  rpo                24h  (built-in tier3)",
        "  rto                4h  (policy nightly)",
        "  schedule           0 */12 * * *  (derived from rpo)",
        "  window             6h  (job dify)",
        "  retention primary  keep-within-daily 14d, keep-within-weekly 2m, keep-within-monthly "
        "1y, keep-within-yearly 3y  (built-in tier3, retention.default)",
        "  retention offsite  keep-daily 7  (policy nightly)",
        "  check every        7d  (built-in tier3)",
        "  check reads        1/28 of the data  (built-in tier3)",
        "  hook before        docker compose stop worker  (job dify)",
        "  ping url           environment variable HC_DIFY  (job dify)",
    ]
    res = cli("config", "show", "dify", "--config", path, "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["rto"] == {"value": "4h", "source": "policy nightly"}
    assert doc["window"] == {"value": "6h", "source": "job dify"}
    assert doc["schedule"]["source"] == "derived from rpo"
    assert doc["retention"]["offsite"] == {"value": {"keep-daily": "7"}, "source": "policy nightly"}
    assert [r["name"] for r in doc["repositories"]] == ["primary", "offsite"]
    assert doc["hooks"]["before"] == ["docker", "compose", "stop", "worker"]

    res = cli("config", "show", "web", "--config", path)
    assert res.code == EXIT_ERROR
    assert res.err == (
        f"stackvault: error: there is no job 'web' in {path} (jobs: dify); see them with: "
        "stackvault config check\n"
    )


def test_warnings_go_to_stderr_and_check_still_passes(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "stackvault.yaml"
    res = cli(
        "config", "init", "-o", out, "--job", "files", "--path", "/etc", "--repository", "/r",
        "--schedule", "0 2 * * *", "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert res.json() == {"written": str(out), "jobs": ["files"]}
    warning = (
        f"warning: {out}:33: jobs.files.schedule: '0 2 * * *' runs only as often as the rpo "
        "24h: the time a run takes makes the newest restore point older than the rpo\n"
    )
    assert res.err == warning
    res = cli("config", "check", "-c", out)
    assert res.code == 0
    assert res.err == warning + f"{out}: 1 job(s), no problems\n"
