"""What a backup run went through, counted for its snapshot's summary (engine layer)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


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
