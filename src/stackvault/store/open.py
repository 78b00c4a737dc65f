"""Store locations (store layer): turn what the user typed into a `Store`.

Accepted forms:

* a filesystem path (``/srv/backup``, ``./repo``) or ``file:///srv/backup`` → `LocalStore`;
* ``s3://BUCKET[/PREFIX][?option=value&...]`` → `S3Store` (options in `stackvault.store.s3`).

Locations are shown in messages through `stackvault.redact.redact`, which hides credentials.
"""

from __future__ import annotations

import os
import re

from stackvault.errors import UsageError
from stackvault.redact import redact
from stackvault.store.base import Store

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(location: str) -> str:
    """``s3``, ``file`` ... of a URL; ``file`` for a plain path."""
    match = _SCHEME.match(location)
    return match.group(1).lower() if match else "file"


def open_store(location: str, *, append_only: bool = False) -> Store:
    """The store at ``location`` (not contacted yet: errors surface on first use).

    ``append_only`` opens a local directory so that objects can be added but never overwritten
    or deleted (locks excepted; see `LocalStore`). Other schemes raise `UsageError` with it:
    their server, not the client, has to enforce it.
    """
    scheme = scheme_of(location)
    if append_only and scheme != "file":
        raise UsageError(
            f"--append-only / STACKVAULT_APPEND_ONLY applies to local repositories, not to "
            f"{redact(location)}",
            hint="for S3, enforce append-only on the server side: a bucket policy without "
            "s3:DeleteObject for the backup credentials, or Object Lock (`init --object-lock`)",
        )
    if scheme == "file":
        from stackvault.store.local import LocalStore

        path = location[len("file://") :] if location.startswith("file://") else location
        if not path:
            raise UsageError("empty repository path")
        return LocalStore(os.path.abspath(path), append_only=append_only)
    if scheme == "s3":
        from stackvault.store.s3 import S3Store

        return S3Store.from_url(location)
    raise UsageError(
        f"unsupported repository location {redact(location)}",
        hint="use a directory path, file:///path or s3://bucket/prefix",
    )
