"""Progress reporting (engine layer): events pipelines emit; the CLI decides how to show them."""

from __future__ import annotations

import threading
from typing import Protocol

NEEDS_ATTENTION = ("error:", "warning:")
"""The prefixes of the notices that are trouble, not information."""


class Progress(Protocol):
    """Receives progress events from any thread. Implementations must be thread-safe and cheap."""

    def set_total(self, *, files: int | None = None, bytes_: int | None = None) -> None:
        """Totals for the ETA, when known (may be called repeatedly as a scan proceeds)."""
        ...

    def advance(self, *, files: int = 0, bytes_: int = 0) -> None:
        """Work done since the last call."""
        ...

    def notice(self, message: str) -> None:
        """A line for the user (a skipped file, a removed stale lock, ...). A line that needs
        attention starts with ``error:`` or ``warning:`` (`NEEDS_ATTENTION`): the CLI shows
        it even with --quiet."""
        ...

    def close(self) -> None:
        """The pipeline is done; stop drawing."""
        ...


class NullProgress:
    """Counts events and shows nothing: the default for tests and non-interactive runs."""

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0
        self.notices: list[str] = []
        self._lock = threading.Lock()

    def set_total(self, *, files: int | None = None, bytes_: int | None = None) -> None:
        pass

    def advance(self, *, files: int = 0, bytes_: int = 0) -> None:
        with self._lock:
            self.files += files
            self.bytes += bytes_

    def notice(self, message: str) -> None:
        with self._lock:
            self.notices.append(message)

    def close(self) -> None:
        pass
