"""Make stored objects look older: what a store reports as their modification time."""

from __future__ import annotations

import os
from datetime import datetime

from stackvault.store.base import Store
from stackvault.store.local import LocalStore
from stackvault.store.memory import MemoryStore


def backdate(store: Store, name: str, when: datetime) -> None:
    """Set the object's modification time in the store to ``when`` (local: the file's mtime,
    as a file written then would have; memory: its recorded write time)."""
    if isinstance(store, LocalStore):
        stamp = when.timestamp()
        os.utime(store.root.joinpath(*name.split("/")), (stamp, stamp))
    elif isinstance(store, MemoryStore):
        store.set_mtime(name, when)
    else:
        raise TypeError(f"cannot backdate objects of {type(store).__name__}")
