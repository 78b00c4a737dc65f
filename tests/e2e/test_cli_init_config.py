"""`stackvault init --config FILE`: every repository of the configuration file is created
with its own password reference (a job's copy sharing its primary's chunking), existing ones
are opened to check their password, and a wrong password is one clear error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result, assert_one_line_error
from stackvault.repo.repository import Repository
from stackvault.store.open import open_store

Cli = Callable[..., Result]
FAST = ("--kdf-memory", "8", "--kdf-iterations", "1")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("STACKVAULT_PASSWORD", raising=False)
    monkeypatch.delenv("STACKVAULT_PASSWORD_FILE", raising=False)
    monkeypatch.delenv("STACKVAULT_REPOSITORY", raising=False)
    monkeypatch.setenv("SV_PRIMARY", "first secret")
    (tmp_path / "offsite.pw").write_text("second secret\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("hello")
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        f"""\
repositories:
  primary: {{url: {tmp_path / "primary"}, password_env: SV_PRIMARY}}
  offsite: {{url: {tmp_path / "offsite"}, password_file: {tmp_path / "offsite.pw"}}}
jobs:
  etc:
    paths: [{tmp_path / "data"}]
    policy: tier3
    repository: primary
    copies: [offsite]
"""
    )
    return path


def open_repo(path: Path, password: str) -> Repository:
    return Repository.open(open_store(str(path)), password.encode())


def test_init_config_creates_each_repository_then_checks_them(
    cli: Cli, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = cli("init", "--config", config, *FAST, "--json")
    assert res.code == 0, res.err
    states = {r["repository"]: r["state"] for r in res.json()["repositories"]}
    assert states == {"primary": "created", "offsite": "created"}

    primary = open_repo(tmp_path / "primary", "first secret")
    offsite = open_repo(tmp_path / "offsite", "second secret")
    assert primary.config.id != offsite.config.id
    assert primary.config.chunker == offsite.config.chunker  # the copy shares its chunking

    res = cli("init", "--config", config, *FAST)
    assert res.code == 0, res.err
    assert "primary: exists, password ok" in res.out and "offsite: exists" in res.out

    res = cli("run", "etc", "--config", config)
    assert res.code == 0, res.err

    monkeypatch.setenv("SV_PRIMARY", "wrong")
    line = assert_one_line_error(cli("init", "--config", config, *FAST))
    assert "'primary'" in line and "password" in line, line


def test_init_config_refuses_options_it_cannot_apply_to_every_repository(
    cli: Cli, config: Path, tmp_path: Path
) -> None:
    res = cli("init", "--config", config, "--object-lock", "governance", "--lock-days", "3")
    assert res.code == 2 and "--config creates plain repositories" in res.err, res.err
    assert not (tmp_path / "primary").exists()
