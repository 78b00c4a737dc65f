"""Secrets never printed (cli, end to end): source and repository URLs that carry a password,
a token or an access key are refused or reported without it, on stdout, stderr and in JSON,
for every source scheme the registry knows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import PASSWORD, Result
from stackvault.sources.registry import schemes
from stackvault.sources.tools.host import HostRunner

Cli = Callable[..., Result]

SECRET = "Sup3rSecretValue"
SECRET_KEYS = [
    "password",
    "PASSWORD",
    "passwd",
    "pwd",
    "sslpassword",
    "secret",
    "token",
    "key",
    "aws_secret_access_key",
    "aws_access_key_id",
    "aws_session_token",
    "access_key",
    "secret_key",
    "session_token",
    "auth",
    "requirepass",
    "api-key",
]


def _shown(res: Result) -> str:
    return res.out + res.err


@pytest.mark.parametrize("scheme", schemes())
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_backup_source_errors_never_show_a_secret_query_value(
    cli: Cli, initialised: Path, scheme: str, as_json: bool
) -> None:
    for key in SECRET_KEYS:
        url = f"{scheme}://backup@db.example:5432/app?name=x&{key}={SECRET}{key}"
        res = cli("backup", *(["--json"] if as_json else []), "--source", url)
        assert res.code == 2, (url, res.err)
        assert SECRET not in _shown(res), (url, _shown(res))
        assert f"{key}=***" in res.err, res.err  # the message still says which option


@pytest.mark.parametrize("scheme", schemes())
def test_credentials_in_a_source_urls_userinfo_are_never_shown(
    cli: Cli, initialised: Path, scheme: str
) -> None:
    for userinfo in ("AKIAIOSFODNN7EXAMPLE:" + SECRET, "backup:" + SECRET, ":" + SECRET):
        res = cli("backup", "--source", f"{scheme}://{userinfo}@host/x")
        assert res.code == 2, res.err
        assert SECRET not in _shown(res) and "AKIAIOSFODNN7EXAMPLE" not in _shown(res)


def test_a_mistyped_source_that_is_no_url_hides_its_query(cli: Cli, initialised: Path) -> None:
    res = cli("backup", "--source", f"db.example/app?password={SECRET}")
    assert res.code == 2 and "is not a URL" in res.err
    assert SECRET not in _shown(res)


def test_restore_to_a_source_url_never_shows_a_secret(cli: Cli, initialised: Path) -> None:
    res = cli("restore", "latest", "--artifact", "x", "--to", f"postgres://u@h/db?token={SECRET}")
    assert res.code != 0 and SECRET not in _shown(res)


REPOSITORY_LOCATIONS = [
    f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@bucket/prefix",
    f"s3://bucket/prefix?aws_secret_access_key={SECRET}",
    f"s3://bucket/prefix?AWS_SESSION_TOKEN={SECRET}",
    f"s3://bucket/prefix?endpoint=http://AKIAIOSFODNN7EXAMPLE:{SECRET}@127.0.0.1:1",
    f"s3://bucket/prefix?region=eu&secret_key={SECRET}",
    f"s3://bucket/prefix?passwd={SECRET}",
    f"s3://bucket/prefix?pwd={SECRET}",
    f"s3://bucket/prefix?auth={SECRET}",
    f"s3://bucket/prefix?requirepass={SECRET}",
]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_repository_urls_with_credentials_are_refused_without_showing_them(
    cli: Cli, as_json: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACKVAULT_PASSWORD", "pw")
    for location in REPOSITORY_LOCATIONS:
        res = cli("-r", location, "snapshots", *(["--json"] if as_json else []))
        assert res.code != 0
        shown = _shown(res)
        assert SECRET not in shown and "AKIAIOSFODNN7EXAMPLE" not in shown, shown


# --- child processes never see stackvault's passwords -------------------------------------------


def test_stdin_from_command_env_does_not_store_the_passwords(
    cli: Cli, initialised: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", "from-" + SECRET)
    monkeypatch.setenv("STACKVAULT_NEW_PASSWORD", "new-" + SECRET)
    monkeypatch.setenv("PGPASSWORD", "tool-credential")  # a child's own credential stays
    res = cli("backup", "--stdin-from-command", "env", "--stdin-filename", "env.txt")
    assert res.code == 0, res.err
    dumped = cli("dump", "latest", "/env.txt")
    assert dumped.code == 0, dumped.err
    assert "PGPASSWORD=tool-credential" in dumped.out and "PATH=" in dumped.out
    assert PASSWORD not in dumped.out and SECRET not in dumped.out
    assert "STACKVAULT_PASSWORD" not in dumped.out and "STACKVAULT_FROM_PASSWORD" not in dumped.out


def test_tools_run_on_this_host_do_not_see_the_passwords(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STACKVAULT_PASSWORD", SECRET)
    monkeypatch.setenv("STACKVAULT_FROM_PASSWORD", SECRET)
    res = HostRunner().run(["env"], env={"PGAPPNAME": "stackvault-test"}, timeout=30)
    assert res.code == 0
    shown = res.stdout.decode()
    assert SECRET not in shown and "PGAPPNAME=stackvault-test" in shown
