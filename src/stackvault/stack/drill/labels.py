"""The names a drill gives what it creates (stack layer): its labels, its owner file, and the
patterns of its project and volume names (see `stackvault.stack.drill`)."""

from __future__ import annotations

import os
import re
import socket

LABEL = "io.stackvault.drill"
"""Label on everything a drill creates; its value is the drill's id."""
LABEL_DRILL_PROJECT = "io.stackvault.drill.project"
"""Label with the drill's Compose project name."""
LABEL_OWNER = "io.stackvault.drill.owner"
"""Label with ``HOST:PID`` of the process running the drill (see `remove_leftovers`)."""
OWNER_FILE = ".stackvault-drill-owner"
"""In the drill's directory: ``HOST:PID`` of the process running the drill."""
SANDBOX_SUFFIX = "-sandbox"
DRILL_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]*-drill-\d{8}-\d{6}$")
DRILL_VOLUME = re.compile(r"^([a-z0-9][a-z0-9_-]*-drill-\d{8}-\d{6})_")


def owner() -> str:
    """``HOST:PID`` of this process: who runs a drill (`LABEL_OWNER`, `OWNER_FILE`)."""
    return f"{socket.gethostname()}:{os.getpid()}"
