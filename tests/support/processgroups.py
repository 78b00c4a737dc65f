"""The processes of a process group, for tests that stop a command and check that nothing of
it is left running."""

from __future__ import annotations

import os
import time


def group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies not counted)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def wait_gone(pgid: int, timeout: float = 15) -> None:
    """Wait until no process of group ``pgid`` is left; fail the test if one is."""
    deadline = time.monotonic() + timeout
    while group(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group(pgid) == [], "a process of the command outlived it"
