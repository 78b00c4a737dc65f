"""Repositories as a run uses them (ops layer): opened once, locked per step.

A run opens each repository of its job once (one key derivation) through an `Opener` the
caller provides (the command line opens it as every command does, with the repository's
password from the configuration), and then works in *sessions*: `locked_session` gives a
fresh `Repository` on the same store and key — an empty in-memory index — holding the step's
lock, with the index loaded under that lock when the step needs it. So each step sees the
repository as it is when its lock is taken (prune plans against an index read under its
exclusive lock, check loads the index itself), and no lock is held between steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from stackvault.clock import Clock
from stackvault.config.repository import RepositorySettings
from stackvault.repo.repository import Repository


class Opener(Protocol):
    """Opens the repository of ``settings`` (password from its reference), without a lock and
    without its index; the store is closed when the context ends. Errors: `RepositoryNotFound`,
    `WrongPassword`, `ConfigError`, store errors — one sentence naming the repository."""

    def __call__(self, settings: RepositorySettings) -> AbstractContextManager[Repository]: ...


def fresh_session(repo: Repository, clock: Clock) -> Repository:
    """A new session of the open ``repo``: same store, configuration and master key (no key
    derivation), an empty index, no lock, the run's ``clock``; its locks wait for a conflicting
    one as long as ``repo``'s do."""
    session = Repository(repo.store, repo.config, repo.master, repo.key_id, clock, repo.notice)
    session.lock_retry_s = repo.lock_retry_s
    return session


@contextmanager
def locked_session(
    repo: Repository, clock: Clock, operation: str, *, exclusive: bool, index: bool
) -> Iterator[Repository]:
    """A `fresh_session` of ``repo`` holding a lock for ``operation`` (``exclusive`` for the
    steps that delete), its ``lock_time`` set, its index loaded after the lock was taken if
    ``index``; the lock is released when the context ends, also on an error or interrupt."""
    session = fresh_session(repo, clock)
    with session.lock(exclusive=exclusive, operation=operation) as held:
        session.lock_time = held.store_time
        if index:
            session.load_index()
        yield session
