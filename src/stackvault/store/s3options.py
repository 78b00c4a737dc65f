"""S3 locations (store layer): ``s3://BUCKET[/PREFIX][?option=value&...]`` → `S3Options`.

Objects live at ``PREFIX/NAME``.

==================  ==========================================================================
option              meaning
==================  ==========================================================================
``endpoint``        server URL, e.g. ``http://127.0.0.1:8333`` (default: AWS, or the
                    ``STACKVAULT_S3_ENDPOINT`` environment variable)
``region``          region name (default: from the AWS configuration, else ``us-east-1``)
``path-style``      ``true`` for path-style addressing (default: true with a custom endpoint)
``storage-class``   storage class of new packs (``STANDARD_IA``, ``GLACIER_IR`` ...; metadata
                    stays in the bucket's default class so every command can read it)
``tls-verify``      ``false`` to skip certificate verification (not recommended)
``ca-bundle``       file with the CA certificates to trust
``profile``         AWS profile name (credentials and region from ``~/.aws``)
``connections``     concurrent connections (default 16)
``timeout``         seconds to wait for a connection or a response (default 30)
``retries``         tries per request, the first included (default 10)
``retry-time``      give up retrying a request after this many seconds (default 180)
``limit-upload``    average upload rate, e.g. ``10M`` (bytes per second, binary units)
``limit-download``  average download rate
==================  ==========================================================================

Credentials are never accepted in the URL (`S3Options.from_url` refuses ``user:pass@``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from stackvault.errors import UsageError
from stackvault.redact import redact
from stackvault.store.ratelimit import parse_rate
from stackvault.store.retry import RetryPolicy
from stackvault.urloptions import positive_float, positive_int, query_pairs, yes_no

ENV_ENDPOINT = "STACKVAULT_S3_ENDPOINT"
DEFAULT_CONNECTIONS = 16
DEFAULT_TIMEOUT = 30.0
_ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


def _existing_file(value: str) -> str:
    if not os.path.isfile(value):
        raise ValueError(f"no such file: {value}")
    return value


def _storage_class(value: str) -> str:
    upper = value.upper()
    if upper in _ARCHIVE_CLASSES:
        raise ValueError(
            f"{upper} objects must be restored by hand (hours) before they can be read, "
            "so check and restore could not read the packs; use GLACIER_IR, STANDARD_IA "
            "or ONEZONE_IA for a cold tier"
        )
    return upper


def _endpoint(value: str) -> str:
    ep = urlsplit(value)
    if ep.scheme not in ("http", "https") or not ep.hostname:
        raise ValueError("not an http(s) URL")
    return value


_PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    # option: (key in the parsed settings, converter raising ValueError)
    "endpoint": ("endpoint", _endpoint),
    "region": ("region", str),
    "path-style": ("path_style", yes_no),
    "storage-class": ("storage_class", _storage_class),
    "tls-verify": ("tls_verify", yes_no),
    "ca-bundle": ("ca_bundle", _existing_file),
    "profile": ("profile", str),
    "connections": ("connections", positive_int),
    "timeout": ("timeout", positive_float),
    "retries": ("attempts", positive_int),
    "retry-time": ("deadline", positive_float),
    "limit-upload": ("limit_upload", parse_rate),
    "limit-download": ("limit_download", parse_rate),
}


@dataclass(frozen=True)
class S3Options:
    """Everything an `S3Store` is configured with (parsed from the location URL)."""

    bucket: str
    prefix: str = ""
    """Empty, or ending in ``/``."""
    endpoint: str | None = None
    region: str | None = None
    path_style: bool | None = None
    storage_class: str | None = None
    verify: bool | str = True
    """False (no certificate checks), True (system CAs) or a CA bundle file."""
    profile: str | None = None
    connections: int = DEFAULT_CONNECTIONS
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limit_upload: int | None = None
    limit_download: int | None = None

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str] | None = None) -> S3Options:
        """Parse ``s3://BUCKET/PREFIX?...``; raise `UsageError` naming what is wrong."""
        env = os.environ if environ is None else environ
        shown = redact(url)
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise UsageError(f"cannot parse the S3 location {shown}: {exc}") from exc
        if parts.scheme.lower() != "s3":
            raise UsageError(f"not an S3 location: {shown}")
        if "@" in parts.netloc:
            raise UsageError(
                f"the S3 location {shown} contains credentials",
                hint="remove them from the URL and set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) instead",
            )
        if not parts.netloc:
            raise UsageError(f"the S3 location {shown} names no bucket (s3://BUCKET/PREFIX)")
        pairs = query_pairs(parts.query)
        if env.get(ENV_ENDPOINT) and all(k != "endpoint" for k, _ in pairs):
            pairs.insert(0, ("endpoint", env[ENV_ENDPOINT]))
        settings: dict[str, Any] = {}
        for key, value in pairs:
            if key not in _PARSERS:
                raise UsageError(
                    f"unknown S3 option {key!r} in {shown}",
                    hint=f"known options: {', '.join(_PARSERS)}",
                )
            name, convert = _PARSERS[key]
            try:
                settings[name] = convert(value)
            except ValueError as exc:
                if key == "endpoint":
                    raise UsageError(
                        f"bad S3 endpoint {redact(value)}",
                        hint="give a URL such as http://127.0.0.1:8333 or https://s3.example.com",
                    ) from exc
                raise UsageError(f"bad value for S3 option {key!r} in {shown}: {exc}") from exc
        retry = {k: settings.pop(k) for k in ("attempts", "deadline") if k in settings}
        tls_verify = settings.pop("tls_verify", True)
        bundle = settings.pop("ca_bundle", None)
        prefix = parts.path.strip("/")
        return cls(
            bucket=parts.netloc,
            prefix=prefix + "/" if prefix else "",
            verify=(bundle or True) if tls_verify else False,
            retry=replace(RetryPolicy(), **retry),
            **settings,
        )

    def describe(self) -> str:
        """The location for messages: bucket, prefix and endpoint, credentials hidden."""
        where = f"s3://{self.bucket}/{self.prefix.rstrip('/')}".rstrip("/")
        return f"{where} at {redact(self.endpoint)}" if self.endpoint else where
