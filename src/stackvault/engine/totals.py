"""Progress totals for bars and ETAs (engine layer): the parent snapshot's, or a background
size scan.

Only a backup on a terminal asks for them. The scan walks the same paths with the same
excludes and never follows symlinks. The numbers are estimates for display, never recorded.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Sequence

from stackvault.engine.progress import Progress
from stackvault.fs.exclude import ExcludeMatcher
from stackvault.repo.snapshot import Snapshot


def start_totals(
    paths: Sequence[str], excludes: ExcludeMatcher, progress: Progress, parent: Snapshot | None
) -> SizeScanner | None:
    """Give ``progress`` the expected totals: the parent snapshot's files and bytes if it
    recorded them (then None), else those of a `SizeScanner` started here (returned, for the
    caller to stop). Walking the paths a second time costs ~15 % of a no-change backup."""
    summary = parent.summary if parent is not None else {}
    files, size = summary.get("files"), summary.get("bytes")
    if type(files) is int and type(size) is int:
        progress.set_total(files=files, bytes_=size)
        return None
    scanner = SizeScanner(paths, excludes, progress)
    scanner.start()
    return scanner


class SizeScanner:
    """Counts files and bytes below ``paths`` in a daemon thread, feeding ``progress``."""

    def __init__(self, paths: Sequence[str], excludes: ExcludeMatcher, progress: Progress) -> None:
        self._paths = list(paths)
        self._excludes = excludes
        self._progress = progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="size-scan", daemon=True)
        self.files = 0
        self.bytes = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        stack = list(self._paths)
        reported = 0
        while stack and not self._stop.is_set():
            path = stack.pop()
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):  # lstat: a symlink to a directory is not one
                try:
                    with os.scandir(path) as it:
                        for entry in it:
                            is_dir = entry.is_dir(follow_symlinks=False)
                            if not self._excludes.excluded(entry.path, is_dir):
                                stack.append(entry.path)
                except OSError:
                    continue
            elif stat.S_ISREG(st.st_mode):
                self.files += 1
                self.bytes += st.st_size
            if self.files - reported >= 1000:
                reported = self.files
                self._progress.set_total(files=self.files, bytes_=self.bytes)
        if not self._stop.is_set():
            self._progress.set_total(files=self.files, bytes_=self.bytes)
