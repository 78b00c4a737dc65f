"""Password-based key derivation (crypto layer): Argon2id, parameters stored with each key file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from stackvault.errors import UnsupportedFormat, UsageError

MAX_KDF_MEMORY_MIB = 4096
"""The most Argon2id memory a key file may ask for (more is refused as damage or tampering)."""
MAX_KDF_ITERATIONS = 1000


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost parameters. The defaults take ~0.06 s and 32 MiB on a 2-core server
    (above OWASP's 19 MiB x 2 minimum); memory is kept moderate because it adds to every
    command's peak memory, time because every command pays it at start-up."""

    memory_kib: int = 32 * 1024
    iterations: int = 3
    lanes: int = 2

    def __post_init__(self) -> None:
        if self.memory_kib < 8 * self.lanes or self.iterations < 1 or self.lanes < 1:
            raise UsageError(
                f"invalid key derivation parameters {self}; memory must be at least 8 KiB per lane"
            )

    def to_json(self) -> dict[str, int]:
        return {"memory_kib": self.memory_kib, "iterations": self.iterations, "lanes": self.lanes}

    @classmethod
    def from_json(cls, data: Any) -> KdfParams:
        try:
            params = cls(int(data["memory_kib"]), int(data["iterations"]), int(data["lanes"]))
        except (KeyError, TypeError, ValueError, UsageError) as exc:
            raise UnsupportedFormat("key file has invalid key derivation parameters") from exc
        # A tampered key file must not make us allocate unbounded memory or spin for hours.
        if (
            params.memory_kib > MAX_KDF_MEMORY_MIB * 1024
            or params.iterations > MAX_KDF_ITERATIONS
            or params.lanes > 64
        ):
            raise UnsupportedFormat("key file asks for unreasonable key derivation costs")
        return params


def derive_key(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    """Derive a 32-byte wrapping key from ``password``. Deterministic for the same inputs."""
    kdf = Argon2id(
        salt=salt,
        length=32,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return kdf.derive(password)
