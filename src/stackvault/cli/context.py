"""Global CLI state (cli layer): where the repository is, how to get the password, how to print."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from stackvault.errors import ConfigError, UsageError

# `typing.TYPE_CHECKING` without importing typing: the CLI layer keeps start-up imports to the
# minimum (`stackvault --version` is timed); the repository, store and engine modules are
# imported where they are used, so `--help` and `--version` load none of them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, TextIO

    from stackvault.repo.repository import Repository
    from stackvault.store.base import Store

ENV_REPOSITORY = "STACKVAULT_REPOSITORY"
ENV_PASSWORD = "STACKVAULT_PASSWORD"
ENV_PASSWORD_FILE = "STACKVAULT_PASSWORD_FILE"
ENV_NEW_PASSWORD = "STACKVAULT_NEW_PASSWORD"


def read_password_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the password file {path}: {exc.strerror}",
            hint="check the path given by --password-file / STACKVAULT_PASSWORD_FILE",
        ) from exc
    # Like restic: the first line is the password; a trailing newline is not part of it.
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def _non_empty(password: bytes, setting: bool) -> bytes:
    if setting and not password:
        raise UsageError("an empty password is not allowed; choose a real one")
    return password


def _write(stream: TextIO, message: str) -> None:
    stream.flush()
    data = (message + "\n").encode("utf-8", "surrogateescape")
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:  # a text-only stream (captured output in tests)
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()


class Cli:
    """Options every command shares; built from the global options, passed to every command."""

    def __init__(
        self,
        repo_location: str | None = None,
        password_file: str | None = None,
        json: bool = False,
        quiet: bool = False,
    ) -> None:
        self.repo_location = repo_location
        self.password_file = password_file
        self.json = json
        self.quiet = quiet

    # --- output ---------------------------------------------------------------------------

    @property
    def interactive(self) -> bool:
        return not self.json and not self.quiet and sys.stderr.isatty()

    def notice(self, message: str) -> None:
        """A line on stderr, unless --quiet."""
        if not self.quiet:
            _write(sys.stderr, message)

    def print(self, message: str) -> None:
        """A result line on stdout, unless --json or --quiet. Printed verbatim: file names
        are data, never markup, and undecodable bytes are written back as they were."""
        if not self.json and not self.quiet:
            _write(sys.stdout, message)

    def emit_json(self, doc: Any) -> None:
        import json

        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        sys.stdout.flush()

    # --- repository -----------------------------------------------------------------------

    def location(self) -> str:
        loc = self.repo_location or os.environ.get(ENV_REPOSITORY)
        if not loc:
            raise ConfigError(
                "no repository given", hint=f"pass --repo PATH or set {ENV_REPOSITORY}"
            )
        return loc

    def store(self) -> Store:
        from stackvault.store.open import open_store

        store = open_store(self.location())
        store.set_notice(self.notice)
        return store

    def password(self, *, confirm: bool = False, prompt: str = "repository password") -> bytes:
        """The password from --password-file, the environment or a prompt. With ``confirm``
        (a password being set), an empty one is refused."""
        path = self.password_file or os.environ.get(ENV_PASSWORD_FILE)
        if path:
            return _non_empty(read_password_file(path), confirm)
        env = os.environ.get(ENV_PASSWORD)
        if env is not None:
            return _non_empty(env.encode(), confirm)
        return self._prompt(prompt, confirm)

    def new_password(self, path: str | None) -> bytes:
        if path:
            return _non_empty(read_password_file(path), True)
        env = os.environ.get(ENV_NEW_PASSWORD)
        if env is not None:
            return _non_empty(env.encode(), True)
        return self._prompt("new password", True)

    def _prompt(self, what: str, confirm: bool) -> bytes:
        import getpass

        if not sys.stdin.isatty():
            raise ConfigError(
                f"no {what} given and no terminal to ask for one",
                hint=f"set {ENV_PASSWORD} or {ENV_PASSWORD_FILE}, or pass --password-file",
            )
        first = getpass.getpass(f"Enter {what}: ")
        if confirm and getpass.getpass(f"Enter {what} again: ") != first:
            raise UsageError("the passwords do not match")
        if not first:
            raise UsageError("an empty password is not allowed")
        return first.encode()

    @contextmanager
    def open_repo(
        self, *, lock: str | None = None, exclusive: bool = False, index: bool = True
    ) -> Iterator[Repository]:
        """Open the repository, optionally lock it and load the index; always unlock."""
        from stackvault.repo.config import read_header
        from stackvault.repo.repository import Repository

        store = self.store()

        try:
            header = read_header(store)  # "no repository" before asking for a password
            repo = Repository.open(store, self.password(), notice=self.notice, header=header)
            if lock is None:
                if index:
                    repo.load_index()
                yield repo
                return
            with repo.lock(exclusive=exclusive, operation=lock):
                if index:
                    repo.load_index()
                yield repo
        finally:
            store.close()
