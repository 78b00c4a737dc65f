"""Repositories as the operations layer opens them, for tests: `opener` (an `Opener` of
`stackvault.ops.session`: the repository of a configuration's settings, with its password
from its reference, closed at the end) and `init_fast` (a repository with a cheap key
derivation)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stackvault.config.repository import RepositorySettings
from stackvault.crypto.kdf import KdfParams
from stackvault.repo.repository import Repository
from stackvault.store.open import open_store

FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)
"""Argon2id at 8 MiB, one pass: a test's repositories open in milliseconds."""


@contextmanager
def opener(settings: RepositorySettings) -> Iterator[Repository]:
    """The repository of ``settings``, opened without a lock and closed at the end."""
    store = open_store(settings.location)
    try:
        yield Repository.open(store, settings.password())
    finally:
        store.close()


def init_fast(path: Path, password: bytes, *, pack_size: int | None = None) -> None:
    """Create the directory ``path`` and a repository in it (`FAST_KDF`; ``pack_size``: the
    repository's own, else the default)."""
    path.mkdir(parents=True, exist_ok=True)
    store = open_store(str(path))
    if pack_size is None:
        Repository.init(store, password, kdf=FAST_KDF).store.close()
    else:
        Repository.init(store, password, kdf=FAST_KDF, pack_size=pack_size).store.close()
