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


@dataclass(frozen=True)
class PasswordRef:
    """Where a repository's password comes from: exactly one of the three is set."""

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
        ref = self.password_ref
        if ref.file is not None:
            return _non_empty(
                self.name,
                ref,
                password_from_file(
                    ref.file,
                    subject=f"repository {self.name}: ",
                    hint="check password_file in the configuration",
                ),
            )
        if ref.env is not None:
            value = os.environ.get(ref.env)
            if value is None:
                raise ConfigError(
                    f"repository {self.name}: the environment variable {ref.env} is not set",
                    hint="set it, or name another password_env in the configuration",
                )
            return _non_empty(self.name, ref, value.encode("utf-8", "surrogateescape"))
        assert ref.command is not None
        return _non_empty(
            self.name,
            ref,
            password_from_command(
                ref.command,
                subject=f"repository {self.name}: ",
                hint="check password_command in the configuration",
            ),
        )


def location_with_class(url: str, storage_class: str | None) -> str:
    """``url`` with ``storage-class=CLASS`` added to its query (an S3 URL)."""
    if storage_class is None:
        return url
    sep = "&" if urlsplit(url).query else "?"
    return f"{url}{sep}storage-class={storage_class}"


def is_local(url: str) -> bool:
    """True for a directory path or ``file://`` URL."""
    return scheme_of(url) == "file"


def _non_empty(name: str, ref: PasswordRef, password: bytes) -> bytes:
    if not password:
        raise ConfigError(
            f"repository {name}: the password from {ref.describe()} is empty",
            hint="put the password there, or name another source in the configuration",
        )
    return password


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
