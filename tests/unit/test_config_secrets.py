"""Repository passwords: by reference only, read when asked, never in a message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stackvault.config import PasswordRef, RepositorySettings, load_config
from stackvault.errors import ConfigError

SECRET = "correct horse battery staple"


def repo(**ref: object) -> RepositorySettings:
    return RepositorySettings("primary", "/srv/b", "/srv/b", PasswordRef(**ref))  # type: ignore[arg-type]


def test_a_password_file_gives_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(SECRET.encode() + b"\r\nsecond line\n")
    assert repo(file=str(path)).password() == SECRET.encode()


def test_a_password_variable_is_read_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFSITE_PASSWORD", SECRET)
    assert repo(env="OFFSITE_PASSWORD").password() == SECRET.encode()
    monkeypatch.delenv("OFFSITE_PASSWORD")
    with pytest.raises(ConfigError, match="OFFSITE_PASSWORD is not set"):
        repo(env="OFFSITE_PASSWORD").password()


def test_a_password_command_runs_without_stackvaults_own_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STACKVAULT_PASSWORD", "not for children")
    monkeypatch.setenv("SOURCE_OF_SECRET", SECRET)
    command = ("sh", "-c", 'printf "%s|%s\\nrest" "$SOURCE_OF_SECRET" "$STACKVAULT_PASSWORD"')
    assert repo(command=command).password() == f"{SECRET}|".encode()


def test_failures_name_the_reference_never_the_secret(tmp_path: Path) -> None:
    failing = ("sh", "-c", f"echo '{SECRET}'; echo '{SECRET}' >&2; exit 3")
    with pytest.raises(ConfigError) as info:
        repo(command=failing).password()
    assert "exited with status 3" in str(info.value)
    assert SECRET not in str(info.value).replace(f"echo '{SECRET}'", "")
    with pytest.raises(ConfigError, match="is empty"):
        repo(command=("true",)).password()
    with pytest.raises(ConfigError, match="cannot read the password file"):
        repo(file=str(tmp_path / "none")).password()
    with pytest.raises(ConfigError, match="cannot be started"):
        repo(command=(str(tmp_path / "no-such-tool"),)).password()


def test_the_file_keeps_references_and_shows_them_not_the_password(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(SECRET + "\n")
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            repositories:
              primary: {{url: /srv/b, password_file: {pw}}}
              offsite: {{url: /srv/c, password_command: "pass show backup/offsite"}}
              third: {{url: /srv/d, password_command: [cat, {pw}]}}
            jobs:
              web: {{paths: [/srv], policy: tier3, repository: primary, copies: [offsite, third]}}
            """
        )
    )
    job = load_config(str(path)).job("web")
    refs = [r["password"] for r in job.to_dict()["repositories"]]  # type: ignore[index, union-attr]
    assert refs == [f"file {pw}", "command pass show backup/offsite", f"command cat {pw}"]
    assert SECRET not in str(job.to_dict())
    assert job.copies[0].password_ref.command == ("sh", "-c", "pass show backup/offsite")
    assert job.copies[1].password() == SECRET.encode()
