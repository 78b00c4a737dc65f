"""Durability on a local file system (store layer): what makes a rename or a new name
survive a crash, for the local store and for anything below it that writes files in place
(the SQLite source's restore)."""

from __future__ import annotations

import os


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush directory ``path`` to disk, so that names created, renamed or removed in it are
    durable. Raises `OSError` (the caller translates it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
