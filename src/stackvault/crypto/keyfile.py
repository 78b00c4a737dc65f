"""Key files (crypto layer): the master key wrapped under a password-derived key (FORMAT.md §3)."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stackvault.crypto.envelope import Envelope
from stackvault.crypto.kdf import KdfParams, derive_key
from stackvault.crypto.masterkey import MasterKey
from stackvault.errors import IntegrityError, UnsupportedFormat, WrongPassword

KEY_AAD = b"sv1:key"
KEYFILE_VERSION = 1


@dataclass(frozen=True)
class KeyFileInfo:
    """The plaintext facts of a key file (no secrets)."""

    created: str
    host: str
    username: str
    kdf: KdfParams


def wrap_master_key(
    master: MasterKey,
    password: bytes,
    *,
    params: KdfParams,
    created: datetime,
    host: str,
    username: str,
) -> bytes:
    """Return the bytes of a new key file that opens ``master`` with ``password``."""
    salt = os.urandom(16)
    wrapping = Envelope(derive_key(password, salt, params))
    doc = {
        "version": KEYFILE_VERSION,
        "kdf": "argon2id",
        "kdf_params": params.to_json(),
        "salt": base64.b64encode(salt).decode(),
        "created": created.isoformat(),
        "host": host,
        "username": username,
        "data": base64.b64encode(wrapping.seal(master.to_bytes(), KEY_AAD)).decode(),
    }
    return json.dumps(doc, indent=1).encode()


def _parse(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise UnsupportedFormat("a key file is not valid JSON (damaged repository?)") from exc
    if not isinstance(doc, dict) or doc.get("version") != KEYFILE_VERSION:
        raise UnsupportedFormat("a key file has an unsupported version")
    if doc.get("kdf") != "argon2id":
        raise UnsupportedFormat(f"a key file uses an unsupported KDF {doc.get('kdf')!r}")
    return doc


def read_key_info(data: bytes) -> KeyFileInfo:
    """The plaintext facts of a key file, without the password."""
    doc = _parse(data)
    return KeyFileInfo(
        created=str(doc.get("created", "")),
        host=str(doc.get("host", "")),
        username=str(doc.get("username", "")),
        kdf=KdfParams.from_json(doc.get("kdf_params")),
    )


def unwrap_master_key(data: bytes, password: bytes) -> MasterKey:
    """Open a key file; raise `WrongPassword` if ``password`` does not open it."""
    doc = _parse(data)
    params = KdfParams.from_json(doc.get("kdf_params"))
    try:
        salt = base64.b64decode(doc["salt"], validate=True)
        sealed = base64.b64decode(doc["data"], validate=True)
    except (KeyError, ValueError, TypeError) as exc:
        raise UnsupportedFormat("a key file is malformed") from exc
    if len(salt) < 8:
        raise UnsupportedFormat("a key file has a salt that is too short")
    try:
        plain = Envelope(derive_key(password, salt, params)).open(sealed, KEY_AAD)
    except IntegrityError as exc:
        raise WrongPassword("wrong password") from exc
    return MasterKey.from_bytes(plain)
