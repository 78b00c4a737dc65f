"""Which source class opens which URL scheme (sources layer).

Modules are imported only when their scheme is used, so a plain file backup never loads the
Docker SDK or a database adapter.
"""

from __future__ import annotations

import importlib

from stackvault.errors import SourceError, UsageError
from stackvault.redact import redact
from stackvault.sources.contract import Source
from stackvault.sources.url import SourceURL

_SCHEMES: dict[str, str] = {
    "postgres": "stackvault.sources.postgres.source:PostgresSource",
    "postgresql": "stackvault.sources.postgres.source:PostgresSource",
    "postgres+docker": "stackvault.sources.postgres.source:PostgresSource",
    "mysql": "stackvault.sources.mysql.source:MySQLSource",
    "mariadb": "stackvault.sources.mysql.source:MySQLSource",
    "mysql+docker": "stackvault.sources.mysql.source:MySQLSource",
    "mariadb+docker": "stackvault.sources.mysql.source:MySQLSource",
    "redis": "stackvault.sources.redis:RedisSource",
    "redis+docker": "stackvault.sources.redis:RedisSource",
    "sqlite": "stackvault.sources.sqlite:SQLiteSource",
    "docker-volume": "stackvault.sources.docker.volume:VolumeSource",
    "docker-container": "stackvault.sources.docker.container:ContainerSource",
    "docker-images": "stackvault.sources.docker.images:ImagesSource",
    "s3": "stackvault.sources.s3bucket:BucketSource",
}


def schemes() -> list[str]:
    return sorted(_SCHEMES)


def source_class(scheme: str) -> type[Source]:
    target = _SCHEMES.get(scheme)
    if target is None:
        raise UsageError(f"unknown source scheme {scheme!r}; known: {', '.join(schemes())}")
    module, _, name = target.partition(":")
    try:
        cls: type[Source] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SourceError(
            f"the {scheme}:// source cannot be loaded ({exc})",
            hint="reinstall stackvault with its dependencies",
        ) from exc
    return cls


def open_source(url: str) -> Source:
    """The `Source` that ``url`` names (parsed, validated; nothing is contacted yet)."""
    if "://" not in url:
        raise UsageError(
            f"source {redact(url)!r} is not a URL; known schemes: {', '.join(schemes())}"
        )
    parsed = SourceURL.parse(url)  # a password in the URL is refused before anything else
    return source_class(parsed.scheme).from_url(parsed)
