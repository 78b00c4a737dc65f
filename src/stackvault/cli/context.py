"""Global CLI state (cli layer): where the repository is, how to get the password, how to print."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from stackvault.errors import (
    ConfigError,
    ObjectLocked,
    RepositoryNotFound,
    StoreFull,
    StorePermissionDenied,
    UnsupportedFormat,
    UsageError,
    WrongPassword,
)

# `typing.TYPE_CHECKING` without importing typing: the CLI layer keeps start-up imports to the
# minimum (`stackvault --version` is timed); the repository, store and engine modules are
# imported where they are used, so `--help` and `--version` load none of them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import datetime
    from typing import Any, TextIO

    from stackvault.repo.lock import RepositoryLock
    from stackvault.repo.repository import Repository
    from stackvault.store.base import Store

ENV_REPOSITORY = "STACKVAULT_REPOSITORY"
ENV_PASSWORD = "STACKVAULT_PASSWORD"
ENV_PASSWORD_FILE = "STACKVAULT_PASSWORD_FILE"
ENV_PASSWORD_COMMAND = "STACKVAULT_PASSWORD_COMMAND"
ENV_NEW_PASSWORD = "STACKVAULT_NEW_PASSWORD"
ENV_APPEND_ONLY = "STACKVAULT_APPEND_ONLY"
ENV_FROM_REPOSITORY = "STACKVAULT_FROM_REPOSITORY"
ENV_FROM_PASSWORD = "STACKVAULT_FROM_PASSWORD"
ENV_FROM_PASSWORD_FILE = "STACKVAULT_FROM_PASSWORD_FILE"
ENV_RETRY_LOCK = "STACKVAULT_RETRY_LOCK"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def read_password_file(
    path: str, setting: str = "--password-file / STACKVAULT_PASSWORD_FILE"
) -> bytes:
    """The first line of the password file ``path`` (`stackvault.config.passwords`)."""
    from stackvault.config.passwords import password_from_file

    return password_from_file(path, hint=f"check the path given by {setting}")


def run_password_command(
    command: str, setting: str = "--password-command / STACKVAULT_PASSWORD_COMMAND"
) -> bytes:
    """The first line of what ``command`` (run by ``sh -c``) prints."""
    from stackvault.config.passwords import password_from_command

    return password_from_command(["sh", "-c", command], hint=f"check the command of {setting}")


def env_flag(name: str) -> bool:
    """A yes/no environment variable: 1/true/yes/on or 0/false/no/off (unset = no)."""
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(
        f"{name}={os.environ[name]!r} is neither 1 nor 0", hint=f"set {name}=1 or unset it"
    )


def _env_seconds(name: str) -> float:
    """A duration from the environment (``90``, ``30s``, ``10m``; unset = 0), in seconds."""
    value = os.environ.get(name, "").strip()
    if not value:
        return 0.0
    from stackvault.cli.parser import parse_wait

    try:
        return parse_wait(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}", hint=f"set {name}=10m, or unset it") from None


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


DEFAULT_PROGRESS_INTERVAL = 60.0
"""Seconds between progress lines of a long run without a terminal."""


class Cli:
    """Options every command shares; built from the global options, passed to every command."""

    def __init__(
        self,
        repo_location: str | None = None,
        password_file: str | None = None,
        json: bool = False,
        quiet: bool = False,
        append_only: bool = False,
        no_lock: bool = False,
        progress_interval: float | None = None,
        password_command: str | None = None,
        retry_lock: float | None = None,
        utc: bool = False,
    ) -> None:
        self.repo_location = repo_location
        self.password_file = password_file
        self.password_command = password_command
        self.json = json
        self.quiet = quiet
        self.append_only = append_only or env_flag(ENV_APPEND_ONLY)
        """--append-only / STACKVAULT_APPEND_ONLY: the repository (not a copy's source) is
        opened so that nothing can be deleted or overwritten (locks excepted)."""
        self.no_lock = no_lock
        """--no-lock: commands that only read a repository read it without locking it."""
        self.progress_interval = (
            progress_interval if progress_interval is not None else DEFAULT_PROGRESS_INTERVAL
        )
        """--progress-interval: seconds between progress lines when stderr is not a
        terminal (0: none)."""
        self.utc = utc
        """--utc: times for a person in UTC rather than the local time zone (`time`)."""
        self.retry_lock = retry_lock if retry_lock is not None else _env_seconds(ENV_RETRY_LOCK)
        """--retry-lock / STACKVAULT_RETRY_LOCK: seconds a lock waits for a conflicting one
        (a prune's) to go before the command fails with exit 11 (0: fail at once)."""
        from stackvault.sources.tools.childenv import hide_repository_credentials

        hide_repository_credentials(False)  # until this command opens an S3 repository

    # --- output ---------------------------------------------------------------------------

    @property
    def interactive(self) -> bool:
        return not self.json and not self.quiet and sys.stderr.isatty()

    def notice(self, message: str) -> None:
        """A line on stderr, unless --quiet."""
        if not self.quiet:
            _write(sys.stderr, message)

    def warn(self, message: str) -> None:
        """A line on stderr that needs attention, even with --quiet (a cron job mails it)."""
        attention = message.startswith(("warning:", "error:"))
        _write(sys.stderr, message if attention else f"warning: {message}")

    def print(self, message: str) -> None:
        """A result line on stdout, unless --json or --quiet. Printed verbatim: file names
        are data, never markup, and undecodable bytes are written back as they were."""
        if not self.json and not self.quiet:
            _write(sys.stdout, message)

    def time(self, when: datetime | str, *, seconds: bool = True) -> str:
        """A moment as the command line prints it for a person (`render.human_time`): the
        local time with its zone, or UTC with --utc."""
        from stackvault.cli.render import human_time

        return human_time(when, utc=self.utc, seconds=seconds)

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

    def store(self, location: str | None = None, *, append_only: bool | None = None) -> Store:
        """The store of the repository (or of ``location``), append-only if so configured
        (``append_only`` overrides the global setting, e.g. for a copy's source)."""
        from stackvault.store.open import open_store

        store = open_store(
            location or self.location(),
            append_only=self.append_only if append_only is None else append_only,
        )
        store.set_notice(self.notice)
        if store.capabilities().remote:
            from stackvault.sources.tools.childenv import hide_repository_credentials

            hide_repository_credentials()
        return store

    def refuse_if_append_only(
        self, command: str, action: str, alternative: str | None = None
    ) -> None:
        """Stop a command that would delete or overwrite objects — before it does any work —
        when the repository is opened append-only: "`command` action, which ...; hint"
        (`stackvault.repo.appendonly.refuse_if_append_only`)."""
        if self.append_only:
            from stackvault.repo.appendonly import refuse_if_append_only

            refuse_if_append_only(
                True, command, action, alternative, setting=f"--append-only / {ENV_APPEND_ONLY}"
            )

    def source_location(self, location: str | None) -> str:
        """Where `copy` and `init --copy-chunker-params-from` read from."""
        loc = location or os.environ.get(ENV_FROM_REPOSITORY)
        if not loc:
            raise ConfigError(
                "no source repository given",
                hint=f"pass --from LOCATION or set {ENV_FROM_REPOSITORY}",
            )
        return loc

    def source_password(self, path: str | None) -> bytes:
        """The source repository's password: ``path`` (--from-password-file),
        STACKVAULT_FROM_PASSWORD_FILE, STACKVAULT_FROM_PASSWORD, or a prompt."""
        path = path or os.environ.get(ENV_FROM_PASSWORD_FILE)
        if path:
            return read_password_file(path, f"--from-password-file / {ENV_FROM_PASSWORD_FILE}")
        env = os.environ.get(ENV_FROM_PASSWORD)
        if env is not None:
            return env.encode()
        return self._prompt(
            "source repository password",
            False,
            hint=f"set {ENV_FROM_PASSWORD} or {ENV_FROM_PASSWORD_FILE}, "
            "or pass --from-password-file",
        )

    def password(self, *, confirm: bool = False, prompt: str = "repository password") -> bytes:
        """The password from --password-file or --password-command, else from
        STACKVAULT_PASSWORD_FILE, STACKVAULT_PASSWORD_COMMAND or STACKVAULT_PASSWORD, else a
        prompt. With ``confirm``
        (a password being set), an empty one is refused."""
        if self.password_file and self.password_command:
            raise UsageError("give either --password-file or --password-command, not both")
        if self.password_file:
            return _non_empty(read_password_file(self.password_file), confirm)
        if self.password_command:
            return _non_empty(run_password_command(self.password_command), confirm)
        path = os.environ.get(ENV_PASSWORD_FILE)
        if path:
            return _non_empty(read_password_file(path), confirm)
        command = os.environ.get(ENV_PASSWORD_COMMAND)
        if command:
            return _non_empty(run_password_command(command), confirm)
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

    def _prompt(self, what: str, confirm: bool, hint: str | None = None) -> bytes:
        import getpass

        if not sys.stdin.isatty():
            raise ConfigError(
                f"no {what} given and no terminal to ask for one",
                hint=hint or f"set {ENV_PASSWORD} or {ENV_PASSWORD_FILE}, or pass --password-file",
            )
        first = getpass.getpass(f"Enter {what}: ")
        if confirm and getpass.getpass(f"Enter {what} again: ") != first:
            raise UsageError("the passwords do not match")
        if not first:
            raise UsageError("an empty password is not allowed")
        return first.encode()

    def read_header(
        self, store: Store, role: str | None = None, hint: str | None = None
    ) -> dict[str, Any]:
        """The repository's plaintext config header (`RepositoryNotFound` before any password
        is asked for). ``role`` ("source", "destination") names the repository in errors."""
        from stackvault.repo.config import read_header

        try:
            return read_header(store)
        except (RepositoryNotFound, UnsupportedFormat) as exc:
            if role is None:
                raise
            raise type(exc)(
                f"{role} repository: {exc.message}", hint=hint or _hint(role, exc)
            ) from exc

    @contextmanager
    def open_repo(
        self,
        *,
        lock: str | None = None,
        exclusive: bool = False,
        index: bool = True,
        store: Store | None = None,
        header: dict[str, Any] | None = None,
        password: Callable[[], bytes] | None = None,
        role: str | None = None,
        reads_only: bool = False,
        hint: str | None = None,
    ) -> Iterator[Repository]:
        """Open the repository, optionally lock it and load the index; always unlock.

        By default the repository of --repo with the normal password; `copy` passes the
        ``store`` (closed here in the end), its ``header`` if already read, a ``password``
        source and the ``role`` ("source", "destination") that errors name.

        ``hint`` replaces the hint of those errors for a ``role`` (`run`: the repository's
        entry in the configuration file).

        ``reads_only``: the command only reads this repository. It takes no lock with
        --no-lock, and reads it without one (after a notice) where the lock cannot be
        written because the repository is read-only (a read-only mount, no write permission).
        """
        from stackvault.repo.keys import damaged_key_error, damaged_keys
        from stackvault.repo.repository import Repository

        store = store if store is not None else self.store()

        try:
            if header is None:
                header = self.read_header(store, role, hint)  # "no repository" before a password
            try:
                repo = Repository.open(
                    store, (password or self.password)(), notice=self.notice, header=header
                )
                repo.lock_retry_s = self.retry_lock  # the sessions of a run lock it again
            except WrongPassword as exc:
                # Wrong password, or the key for it is damaged: the key files tell which.
                damaged = damaged_keys(store)
                if damaged:
                    raise damaged_key_error(store, damaged) from exc
                if role is None:
                    raise
                raise WrongPassword(
                    f"wrong password for the {role} repository {store.describe()}: no key of "
                    "it opens with it",
                    hint=hint or _hint(role, exc),
                ) from exc
            if lock is not None and reads_only and self.no_lock:
                lock = None
            held = None
            if lock is not None:
                held = self._acquire(repo, store, lock, exclusive, role, reads_only)
            try:
                if held is not None:
                    repo.lock_time = held.store_time
                if index:
                    repo.load_index()
                yield repo
            finally:
                if held is not None:
                    held.release()
        finally:
            self.close_store(store)

    def _acquire(
        self,
        repo: Repository,
        store: Store,
        operation: str,
        exclusive: bool,
        role: str | None,
        reads_only: bool,
    ) -> RepositoryLock | None:
        """Lock ``repo`` for ``operation``. A command that only reads goes on without a lock
        (None, after a notice) where the repository is read-only, and is told of --no-lock
        where the store is too full to write the lock."""
        held = repo.lock(exclusive=exclusive, operation=operation)
        try:
            held.acquire(retry_s=self.retry_lock)
        except StorePermissionDenied as exc:
            if not reads_only or isinstance(exc, ObjectLocked):
                raise
            which = f"the {role} repository" if role else "the repository"
            self.notice(
                f"notice: {which} {store.describe()} is read-only ({exc.message}), "
                "so it is read without a lock"
            )
            return None
        except StoreFull as exc:
            if not reads_only:
                raise
            raise StoreFull(
                exc.message,
                hint=f"{exc.hint or 'free space'}, or pass --no-lock to read it "
                "without writing a lock",
            ) from exc
        return held

    def close_store(self, store: Store) -> None:
        """Close a store, first saying how many of its requests had to be retried."""
        if store.retries:
            self.notice(
                f"{store.retries} request(s) to {store.describe()} failed at first and were retried"
            )
        store.close()


def preload(*modules: str) -> None:
    """Import ``modules`` on a background thread, so that their import overlaps with the
    password's key derivation (Argon2id releases the GIL); the command's own ``import`` then
    finds them loaded or waits for them. A failure is left for that import to raise."""
    import importlib
    import threading

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except BaseException:
                return

    threading.Thread(target=run, name="preload", daemon=True).start()


def _hint(role: str, exc: Exception) -> str:
    """What to check when the source or destination of a copy cannot be opened."""
    if isinstance(exc, WrongPassword):
        if role == "source":
            return f"check {ENV_FROM_PASSWORD}, {ENV_FROM_PASSWORD_FILE} or --from-password-file"
        return f"check {ENV_PASSWORD}, {ENV_PASSWORD_FILE} or --password-file"
    if isinstance(exc, RepositoryNotFound):
        if role == "source":
            return f"check --from / {ENV_FROM_REPOSITORY}"
        return f"check --to / --repo / {ENV_REPOSITORY}, or create it with `stackvault init`"
    return "use a stackvault release that supports it"
