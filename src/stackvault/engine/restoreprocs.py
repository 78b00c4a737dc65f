"""What a restore's child processes give back (engine layer).

A restore from a local store hands its small files, in batches, to one child process per
core (`stackvault.engine.forked.ChildProcess`; `Restorer._fork`): restoring a small file is
~100 us of Python (find the blob, authenticate, decompress, hash, check) around five system
calls, which threads of one process cannot spread over the cores. Each file keeps the
restore's promise in the child too: it is checked against the snapshot's SHA-256 before it
gets its mode and times, and one that does not match is removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stackvault.engine.forked import Outcome


@dataclass
class BatchOutcome(Outcome):
    """What a child made of one batch of files."""

    files: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    """Files not restored because repository data is damaged: (path, why)."""
    notices: list[str] = field(default_factory=list)
    """Metadata notices of the target (owner not permitted, xattrs unsupported)."""
