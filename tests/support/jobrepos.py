"""Repositories as the operations layer opens them, for tests: `opener` (an `Opener` of
`stackvault.ops.session`: the repository of a configuration's settings, with its password
from its reference, closed at the end), `init_fast` (a repository with a cheap key
derivation), `primary_and_copy` (the two repositories a configuration-file test's job uses)
and `open_local`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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


COPY_PASSWORD = "the copy's own password"
"""The password of the ``offsite`` repository of `primary_and_copy` (``$SV_COPY_PW``)."""


def primary_and_copy(tmp_path: Path, password: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tmp_path/primary`` (``password``, named by ``$SV_PRIMARY_PW``) and ``tmp_path/offsite``
    (`COPY_PASSWORD`, ``$SV_COPY_PW``) initialised, and no other password in the environment:
    what a configuration file's ``password_env`` references find."""
    for var in ("STACKVAULT_PASSWORD", "STACKVAULT_PASSWORD_FILE"):
        monkeypatch.delenv(var, raising=False)
    init_fast(tmp_path / "primary", password)
    init_fast(tmp_path / "offsite", COPY_PASSWORD.encode())
    monkeypatch.setenv("SV_PRIMARY_PW", password.decode())
    monkeypatch.setenv("SV_COPY_PW", COPY_PASSWORD)


def open_local(path: Path, password: str) -> Repository:
    """The local repository at ``path``, opened without a lock."""
    return Repository.open(open_store(str(path)), password.encode())
