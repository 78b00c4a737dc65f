"""The repository config object (repository layer): format version and parameters (FORMAT.md §4)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from stackvault.chunking.cdc import ChunkerParams
from stackvault.crypto.envelope import Envelope
from stackvault.errors import (
    IntegrityError,
    ObjectNotFound,
    RepositoryNotFound,
    UnsupportedFormat,
)
from stackvault.store.base import Retention, Store

FORMAT_VERSION = 1
CONFIG_NAME = "config"
DEFAULT_PACK_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class RepoConfig:
    """Parameters fixed when the repository is created."""

    id: str
    created: str
    chunker: ChunkerParams
    pack_size: int = DEFAULT_PACK_SIZE
    compression: str = "zstd"
    version: int = FORMAT_VERSION
    object_lock: Retention | None = None
    """Every object but locks is written with this Object Lock retention (FORMAT.md §4)."""

    def _aad(self) -> bytes:
        return b"sv1:config:" + self.id.encode()

    def encode(self, envelope: Envelope) -> bytes:
        body = {
            "version": self.version,
            "id": self.id,
            "created": self.created,
            "chunker": self.chunker.to_json(),
            "pack_size": self.pack_size,
            "compression": self.compression,
        }
        if self.object_lock is not None:
            body["object_lock"] = {"mode": self.object_lock.mode, "days": self.object_lock.days}
        doc = {
            "repository": "stackvault",
            "version": self.version,
            "id": self.id,
            "body": base64.b64encode(
                envelope.seal(json.dumps(body).encode(), self._aad())
            ).decode(),
        }
        return json.dumps(doc, indent=1).encode()


def read_header(store: Store) -> dict[str, Any]:
    """Read the plaintext config header.

    `RepositoryNotFound` if there is no config, or a file of another program under that name;
    `IntegrityError` if it is a stackvault config that is damaged (unparsable, fields missing);
    `UnsupportedFormat` for a format version this program does not read."""
    try:
        raw = store.get(CONFIG_NAME)
    except ObjectNotFound as exc:
        raise RepositoryNotFound(
            f"there is no stackvault repository at {store.describe()}",
            hint="check --repo / STACKVAULT_REPOSITORY, or create one with `stackvault init`",
        ) from exc
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("repository") != "stackvault":
        if any(marker in raw for marker in _MARKERS):
            raise _damaged(store, "it is not the JSON document a config is")
        raise RepositoryNotFound(
            f"{store.describe()} holds something that is not a stackvault repository",
            hint="point --repo at a stackvault repository",
        )
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _damaged(store, "its format version is missing")
    if version != FORMAT_VERSION:
        raise UnsupportedFormat(
            f"the repository at {store.describe()} uses format version {version!r}, but this "
            f"stackvault reads only version {FORMAT_VERSION}",
            hint="use a stackvault release that supports it",
        )
    if not isinstance(doc.get("id"), str) or not isinstance(doc.get("body"), str):
        raise _damaged(store, "its id or body is missing")
    return doc


_MARKERS = (b'"repository"', b"stackvault", b'"body"')
"""Parts of every config: one byte flipped in a config leaves some of them, while another
program's file (a restic repository's ``config``, say) has none."""


def _damaged(store: Store, why: str) -> IntegrityError:
    return IntegrityError(
        f"the repository config (object `config` at {store.describe()}) is damaged: {why}",
        hint="restore it from a copy of the repository (`stackvault check` reports what else "
        "is damaged)",
    )


def decode_config(header: dict[str, Any], envelope: Envelope) -> RepoConfig:
    """Open the encrypted body and check it agrees with the header."""
    repo_id = str(header.get("id", ""))
    try:
        sealed = base64.b64decode(header["body"])
    except (KeyError, ValueError) as exc:
        raise IntegrityError(
            "the repository config (object `config`) is damaged: its body is not base64"
        ) from exc
    try:
        body = json.loads(envelope.open(sealed, b"sv1:config:" + repo_id.encode()))
    except IntegrityError as exc:
        raise IntegrityError(
            "the repository config (object `config`) is damaged: it failed authentication"
        ) from exc
    if body.get("id") != repo_id or body.get("version") != header.get("version"):
        raise IntegrityError(
            "the repository config (object `config`) is damaged: its header does not match "
            "its encrypted body"
        )
    return RepoConfig(
        id=repo_id,
        created=str(body.get("created", "")),
        chunker=ChunkerParams.from_json(body["chunker"]),
        pack_size=int(body["pack_size"]),
        compression=str(body.get("compression", "zstd")),
        object_lock=_retention(body.get("object_lock")),
    )


def _retention(doc: Any) -> Retention | None:
    if doc is None:
        return None
    try:
        mode, days = str(doc["mode"]), int(doc["days"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError("the repository config has a malformed object_lock entry") from exc
    if mode not in ("governance", "compliance") or days < 1:
        raise UnsupportedFormat(f"the repository config asks for Object Lock {mode}/{days}d")
    return Retention(mode, days)
