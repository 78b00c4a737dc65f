"""Reading the database tools' error output (sources layer): `search`, the one way the
PostgreSQL and MySQL sources find a known error in what a tool printed, to say it in a clear
sentence."""

from __future__ import annotations

import re


def search(pattern: str, text: str) -> re.Match[str] | None:
    """The first match of ``pattern`` in ``text``: case-insensitive, with ``^`` and ``$``
    matching at every line's start and end (tools print one message per line)."""
    return re.search(pattern, text, flags=re.IGNORECASE | re.MULTILINE)
