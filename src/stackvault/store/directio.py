"""Writes around the page cache (store layer): what `O_DIRECT` needs, for the local store's
pack writes and the restore's file writer."""

from __future__ import annotations

import errno
import fcntl
import os

O_DIRECT: int = getattr(os, "O_DIRECT", 0)
"""0 where the system has no ``O_DIRECT``."""
ALIGN = 4096
"""Alignment of the file offsets, lengths and memory of writes with ``O_DIRECT``."""


def set_direct(fd: int, on: bool) -> bool:
    """Turn ``O_DIRECT`` on or off for the open file ``fd``; whether the flag changed.

    False, changing nothing, if it was already so, if the system has no ``O_DIRECT``, or if
    the filesystem refuses it (EINVAL: an older tmpfs, some FUSE filesystems). Other
    failures raise `OSError`.
    """
    if not O_DIRECT:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if bool(flags & O_DIRECT) == on:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | O_DIRECT if on else flags & ~O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    return True
