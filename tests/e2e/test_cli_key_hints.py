"""`key add` / `key passwd` without a new password and without a terminal name the
new-password options, not the repository password's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result, assert_one_line_error

Cli = Callable[..., Result]


@pytest.mark.parametrize("command", ["add", "passwd"])
def test_no_new_password_names_the_right_variables(
    initialised: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.delenv("STACKVAULT_NEW_PASSWORD", raising=False)
    res = cli("key", command)  # pytest's stdin is no terminal
    line = assert_one_line_error(res)
    assert "no new password given and no terminal" in line
    assert "STACKVAULT_NEW_PASSWORD" in line and "--new-password-file" in line
    assert "STACKVAULT_PASSWORD " not in line and "STACKVAULT_PASSWORD_FILE" not in line
    monkeypatch.setenv("STACKVAULT_NEW_PASSWORD", "another good password")
    ok = cli("key", command)
    assert ok.code == 0, ok.err
