"""Store locations (store layer): turn what the user typed into a `Store`.

Accepted forms:

* a filesystem path (``/srv/backup``, ``./repo``) or ``file:///srv/backup`` → `LocalStore`;
* ``s3://BUCKET[/PREFIX][?option=value&...]`` → `S3Store` (options in `stackvault.store.s3`).

`redact` shows a location safely in messages: credentials embedded in a URL (``user:pass@``)
and query values that may be secret are replaced by ``***``.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from stackvault.errors import UsageError
from stackvault.store.base import Store

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET_KEYS = ("secret", "password", "token", "key", "signature", "credential")


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


def redact(location: str) -> str:
    """``location`` with any embedded credentials and secret-looking query values hidden."""
    if not _SCHEME.match(location):
        return location
    try:
        parts = urlsplit(location)
    except ValueError:
        return "<unparsable location>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        shown = [
            f"{k}={'***' if any(s in k.lower() for s in _SECRET_KEYS) else _redact_value(v)}"
            for k, v in pairs
        ]
        query = "&".join(shown)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _redact_value(value: str) -> str:
    """A query value that is itself a URL (``endpoint=http://u:p@host``) loses its userinfo."""
    return redact(value) if _SCHEME.match(value) else value
