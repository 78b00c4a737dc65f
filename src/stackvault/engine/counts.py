"""What a backup run went through, counted for its snapshot's summary (engine layer)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Counts:
    """What a backup run went through, for its snapshot's summary (thread-safe with
    ``lock``)."""

    files: int = 0
    dirs: int = 0
    bytes: int = 0
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **deltas: int) -> None:
        """Add to counters by name (``files=1, bytes=n``) under the lock."""
        with self.lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def merge(self, other: Counts) -> None:
        """Add ``other``'s counters (a child process's, say) under the lock."""
        self.add(**{f.name: getattr(other, f.name) for f in fields(self) if f.name != "lock"})

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its lock (it crosses a pipe from a backup's child process)."""
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()
