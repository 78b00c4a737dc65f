"""The AEAD envelope (crypto layer): ``nonce | AES-256-GCM ciphertext | tag`` (FORMAT.md §7)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stackvault.errors import IntegrityError

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE


class Envelope:
    """Seals and opens envelopes under one 32-byte key. Safe to share between threads.

    ``open`` raises `IntegrityError` when the data was altered, truncated, sealed under another
    key or with other associated data; it never returns unauthenticated bytes.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("envelope key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes | bytearray | memoryview, aad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext``, binding it to ``aad``."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def seal_many(
        self, plaintexts: Sequence[bytes | bytearray | memoryview], aads: Sequence[bytes]
    ) -> list[bytes]:
        """`seal` of each of ``plaintexts`` with the associated data at the same place in
        ``aads``; their nonces are drawn from the system's random source in one call."""
        if len(plaintexts) != len(aads):
            raise ValueError("one associated data per plaintext")
        nonces = os.urandom(NONCE_SIZE * len(plaintexts))
        encrypt = self._aead.encrypt
        out: list[bytes] = []
        for i, (plaintext, aad) in enumerate(zip(plaintexts, aads, strict=True)):
            nonce = nonces[i * NONCE_SIZE : (i + 1) * NONCE_SIZE]
            out.append(nonce + encrypt(nonce, plaintext, aad))
        return out

    def open(self, data: bytes | bytearray | memoryview, aad: bytes) -> bytes:
        """Authenticate and decrypt an envelope made by `seal` with the same ``aad``."""
        if len(data) < OVERHEAD:
            raise IntegrityError("encrypted object is truncated")
        view = memoryview(data)
        try:
            return self._aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
        except InvalidTag as exc:
            raise IntegrityError("encrypted object failed authentication") from exc
