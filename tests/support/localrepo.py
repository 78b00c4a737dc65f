"""A new local repository, opened with its index loaded, made with a key derivation cheap
enough for tests (the format is the same; only the KDF's cost parameters differ)."""

from __future__ import annotations

from pathlib import Path

from stackvault.crypto.kdf import KdfParams
from stackvault.repo.repository import Repository
from stackvault.store.local import LocalStore

FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)


def new_local_repo(path: Path, password: bytes) -> Repository:
    """Initialise a repository at ``path`` and open it, index loaded."""
    store = LocalStore(path)
    store.ensure_root()
    Repository.init(store, password, kdf=FAST_KDF)
    repo = Repository.open(store, password)
    repo.load_index()
    return repo
