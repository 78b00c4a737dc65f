"""The space reserve (repository layer): room to take a lock on a full disk (FORMAT.md §13).

A full disk must not make a repository unmaintainable: `forget` and `prune`, which free space,
first have to write a lock, and a full file system refuses even that. So a local repository
holds ``reserve``, a small object of random bytes that is nobody's data. When an exclusive
lock cannot be written because the store is full, the reserve is deleted (no lock is needed
for that) and the lock taken in its place; a prune that freed space writes it again.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from stackvault.errors import ObjectNotFound, StoreError, StoreFull
from stackvault.repo.access import store_access
from stackvault.store.base import Store

RESERVE_NAME = "reserve"
RESERVE_SIZE = 256 * 1024
"""Enough for a lock object and its temporary file on any common file system (several
blocks), and for the few index and snapshot deletions forget makes; random, so that a
compressing file system cannot shrink it."""


def wants_reserve(store: Store) -> bool:
    """Only stores that can fill up keep one (local file systems; not S3)."""
    return store_access(store).keeps_reserve


def write_reserve(store: Store) -> bool:
    """Write the reserve if the store wants one and it is missing; False if there is no room
    for it now (a later prune tries again)."""
    if not wants_reserve(store) or store.exists(RESERVE_NAME):
        return False
    try:
        store.put(RESERVE_NAME, os.urandom(RESERVE_SIZE))
    except StoreFull:
        return False
    return True


def release_reserve(store: Store, notice: Callable[[str], None]) -> bool:
    """Delete the reserve to make room; True if there was one."""
    try:
        store.stat(RESERVE_NAME)
    except ObjectNotFound:
        return False
    try:
        store.delete(RESERVE_NAME)
    except StoreError:
        return False
    notice(
        f"the store is full: released the repository's space reserve "
        f"({RESERVE_SIZE // 1024} KiB) to take the lock; prune writes it again once it freed "
        "space"
    )
    return True
