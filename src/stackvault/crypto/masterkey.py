"""The repository master key (crypto layer): encryption key, id key, chunker seed (FORMAT §2)."""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field

import blake3

from stackvault.crypto.envelope import Envelope
from stackvault.errors import UnsupportedFormat

CHUNKER_SEED_BITS = 63  # the chunker takes a signed 64-bit seed


@dataclass(frozen=True)
class MasterKey:
    """Secret material of one repository. Never logged, never written unwrapped."""

    enc: bytes = field(repr=False)
    id_key: bytes = field(repr=False)
    chunker_seed: int = field(repr=False)

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random master key from the OS CSPRNG."""
        return cls(os.urandom(32), os.urandom(32), secrets.randbits(CHUNKER_SEED_BITS))

    def sharing_ids(self) -> MasterKey:
        """A new master key with a fresh random encryption key and this key's id key and
        chunker seed: a repository created with it cuts and names blobs exactly like this
        one (``init --copy-chunker-params-from``; FORMAT.md §2 explains what that reveals)."""
        return MasterKey(os.urandom(32), self.id_key, self.chunker_seed)

    def envelope(self) -> Envelope:
        """An `Envelope` sealing and opening under this key's encryption key."""
        return Envelope(self.enc)

    def blob_id(self, data: bytes | bytearray | memoryview) -> bytes:
        """The keyed BLAKE3-256 id of a blob's plaintext (32 bytes)."""
        return blake3.blake3(data, key=self.id_key).digest()

    def to_bytes(self) -> bytes:
        """Serialise for wrapping inside a key file (the result is secret)."""
        doc = {
            "enc": base64.b64encode(self.enc).decode(),
            "id": base64.b64encode(self.id_key).decode(),
            "chunker_seed": self.chunker_seed,
        }
        return json.dumps(doc).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> MasterKey:
        try:
            doc = json.loads(data)
            key = cls(
                base64.b64decode(doc["enc"]),
                base64.b64decode(doc["id"]),
                int(doc["chunker_seed"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UnsupportedFormat("the master key inside the key file is malformed") from exc
        if len(key.enc) != 32 or len(key.id_key) != 32:
            raise UnsupportedFormat("the master key inside the key file has the wrong size")
        return key
