"""A repository of the configuration (config layer): where it is and how its password is got.

The file names the password by reference only: a file (its first line, as
``--password-file``), an environment variable, or a command whose standard output's first line
is the password (run on this host with `child_environment`, so it does not see stackvault's own
secrets). The password is returned, never logged, and no message contains it or the command's
output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from stackvault.config.passwords import (
    describe_command,
    password_from_command,
    password_from_file,
)
from stackvault.errors import ConfigError, UsageError
from stackvault.redact import redact
from stackvault.store.open import scheme_of


def secret_ref(
    file: str | None, env: str | None, command: str | list[str] | None
) -> PasswordRef | None:
    """The reference the file gives by ``*_file``, ``*_env`` or ``*_command`` (a command
    string becomes ``sh -c TEXT``); None when none is given."""
    if file is None and env is None and command is None:
        return None
    argv = (
        ("sh", "-c", command) if isinstance(command, str) else (tuple(command) if command else None)
    )
    return PasswordRef(file=file, env=env, command=argv)


@dataclass(frozen=True)
class PasswordRef:
    """Where a secret the file names by reference comes from (a repository's password, a
    notification URL): exactly one of the three is set."""

    file: str | None = None
    env: str | None = None
    command: tuple[str, ...] | None = None
    """The argv; a command written as one string is ``("sh", "-c", TEXT)``."""

    def describe(self) -> str:
        """``file /etc/stackvault/pw``, ``env PGPASS``, ``command pass show backup``."""
        if self.file is not None:
            return f"file {self.file}"
        if self.env is not None:
            return f"environment variable {self.env}"
        return describe_command(self.command or ())

    def read(self, *, subject: str, what: str = "password", key: str = "password") -> bytes:
        """The secret, read now: a file's first line, an environment variable, or the first
        line a command prints. `ConfigError` starting with ``subject`` (``repository
        offsite: ``), naming the reference and the key that gave it (``{key}_file``,
        ``{key}_env``, ``{key}_command``), never the secret; an empty one is an error too."""
        if self.file is not None:
            hint = f"check {key}_file in the configuration"
            value = password_from_file(self.file, subject=subject, hint=hint, what=what)
        elif self.env is not None:
            found = os.environ.get(self.env)
            if found is None:
                raise ConfigError(
                    f"{subject}the environment variable {self.env} is not set",
                    hint=f"set it, or name another {key}_env in the configuration",
                )
            value = found.encode("utf-8", "surrogateescape")
        else:
            assert self.command is not None
            hint = f"check {key}_command in the configuration"
            value = password_from_command(self.command, subject=subject, hint=hint, what=what)
        if not value:
            raise ConfigError(
                f"{subject}the {what} from {self.describe()} is empty",
                hint=f"put the {what} there, or name another source in the configuration",
            )
        return value


@dataclass(frozen=True)
class RepositorySettings:
    """``repositories.NAME`` resolved: ``url`` as written, ``location`` as the store opens it
    (the URL with ``storage-class`` added for ``storage_class``)."""

    name: str
    url: str
    location: str
    password_ref: PasswordRef
    storage_class: str | None = None

    @property
    def shown(self) -> str:
        """The location for messages, credentials hidden."""
        return redact(self.location)

    def password(self) -> bytes:
        """The password, read now; `ConfigError` naming the reference (never the secret)."""
        return self.password_ref.read(subject=f"repository {self.name}: ")


def location_with_class(url: str, storage_class: str | None) -> str:
    """``url`` with ``storage-class=CLASS`` added to its query (an S3 URL)."""
    if storage_class is None:
        return url
    sep = "&" if urlsplit(url).query else "?"
    return f"{url}{sep}storage-class={storage_class}"


def is_local(url: str) -> bool:
    """True for a directory path or ``file://`` URL."""
    return scheme_of(url) == "file"


def check_location(url: str) -> str | None:
    """What is wrong with the repository URL ``url``, or None (nothing is contacted)."""
    scheme = scheme_of(url)
    if scheme == "file":
        path = url[len("file://") :] if url.startswith("file://") else url
        if not os.path.isabs(path):
            return "must be an absolute path (or file:///path, or s3://bucket/prefix)"
        return None
    if scheme == "s3":
        from stackvault.store.s3options import S3Options

        try:
            S3Options.from_url(url, environ={})
        except UsageError as exc:
            return str(exc)
        return None
    return f"unsupported repository location {redact(url)}: use a directory path or s3://..."
