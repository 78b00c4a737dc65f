"""The log of ``stackvault serve`` (ops layer): one line per event on a stream, as text or
JSON, whole lines from any thread, never a password (URLs in values are redacted)."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import TextIO

from stackvault.clock import Clock, SystemClock
from stackvault.redact import redact


class EventLog:
    """One line per event on ``stream``: ``text`` (``TIME EVENT key=value ...``) or ``json``
    (one object a line: ``time``, ``event``, then the fields)."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None, clock: Clock | None = None):
        if fmt not in ("text", "json"):
            raise ValueError(f"unknown log format {fmt!r}")
        self.fmt = fmt
        self.stream = stream or sys.stderr
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        """Lines come from several threads (relayed child output, lease heartbeats)."""

    def __call__(self, event: str, /, **fields: object) -> None:
        now = stamp(self.clock.now())
        kept = {
            k: _redacted(v) if isinstance(v, str) else v
            for k, v in fields.items()
            if v is not None and v != ""
        }
        if self.fmt == "json":
            line = json.dumps({"time": now, "event": event, **kept}, default=str)
        else:
            parts = [f"{k}={_text_value(v)}" for k, v in kept.items()]
            line = " ".join([now, event, *parts])
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a log that cannot be written never stops the daemon


def stamp(when: datetime) -> str:
    """``2026-01-01T02:00:05Z`` (UTC, whole seconds)."""
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _text_value(value: object) -> str:
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    return json.dumps(text) if (" " in text or '"' in text or not text) else text


def _redacted(text: str) -> str:
    """``text`` with any URL in it redacted (credentials, query secrets)."""
    return " ".join(redact(w) if "://" in w else w for w in text.split(" "))
