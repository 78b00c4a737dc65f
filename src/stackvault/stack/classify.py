"""What each service of a Compose project is, for the plan (stack layer).

A service's role decides how it is captured: a database server by its dump tool inside its
container (its data directory is then *not* copied: a live copy would be corrupt), a service
that writes files by its mounts, a stateless one not at all. The evidence, strongest first: the
image's repository name, the program its command runs, the environment variable names the
official images use. Every decision carries its reason, shown in the plan for review.
"""

from __future__ import annotations

import os
import re

from stackvault.records.plan import (
    APP,
    MYSQL,
    OBJECT_STORE,
    POSTGRES,
    REDIS,
    STATELESS,
    VECTOR_STORE,
)
from stackvault.stack.compose import Service

DATABASE_ROLES = (POSTGRES, MYSQL, REDIS)
"""Captured by their own tools; never stopped for the cut, never copied as files."""

_IMAGES: tuple[tuple[str, str], ...] = (
    (r"postgres|pgvector|postgis|timescale", POSTGRES),
    (r"mysql|mariadb|percona", MYSQL),
    (r"redis|valkey|keydb", REDIS),
    (r"weaviate|qdrant|milvus|chroma|elasticsearch|opensearch|myscale|couchbase", VECTOR_STORE),
    (r"minio|seaweedfs", OBJECT_STORE),
)
_PROGRAMS = {
    "postgres": POSTGRES,
    "mysqld": MYSQL,
    "mariadbd": MYSQL,
    "redis-server": REDIS,
    "weaviate": VECTOR_STORE,
    "qdrant": VECTOR_STORE,
    "minio": OBJECT_STORE,
}
_ENV = (
    (
        ("POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE", "POSTGRES_USER", "POSTGRES_DB", "PGDATA"),
        POSTGRES,
    ),
    (
        (
            "MARIADB_ROOT_PASSWORD",
            "MYSQL_ROOT_PASSWORD",
            "MARIADB_ROOT_PASSWORD_FILE",
            "MYSQL_ROOT_PASSWORD_FILE",
            "MARIADB_DATABASE",
        ),
        MYSQL,
    ),
)


def image_repository(image: str) -> str:
    """``docker.io/library/postgres:15-alpine@sha256:…`` → ``postgres``;
    ``langgenius/dify-api:1.9`` → ``langgenius/dify-api``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts[0] == "library" and len(parts) > 1:
        parts = parts[1:]
    return "/".join(parts)


def classify(service: Service) -> tuple[str, str]:
    """(role, reason) of ``service``."""
    repo = image_repository(service.image)
    for pattern, role in _IMAGES:
        if re.search(pattern, repo.rsplit("/", 1)[-1]):
            return role, f"image {repo}"
    for arg in service.command[:3]:
        program = os.path.basename(arg)
        if program in _PROGRAMS:
            return _PROGRAMS[program], f"runs {program}"
    for names, role in _ENV:
        if service.env_has(*names):
            hit = next(n for n in names if n in service.env_names)
            return role, f"environment has {hit}"
    writable = [m for m in service.mounts if m.type in ("bind", "volume") and not m.read_only]
    if writable:
        return APP, f"writes to {len(writable)} mount(s)"
    return STATELESS, "no writable mounts"
