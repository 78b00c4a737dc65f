"""A command's standard output as a byte stream (sources layer): ``--stdin-from-command``.

The command is split as a POSIX shell would split it (no shell is run). Its exit status is
checked when the stream is closed: a non-zero status or a signal raises `SourceError` carrying
the last lines of its standard error, so a failed dump can never look like a good one.
"""

from __future__ import annotations

import collections
import os
import shlex
import signal
import subprocess
import threading
from types import TracebackType

from stackvault.errors import SourceError, UsageError
from stackvault.sources.tools.childenv import child_environment

STDERR_LINES = 10


class CommandStream:
    """Runs a command; `readinto`/`read` return its stdout. Use as a context manager."""

    def __init__(self, command: str) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise UsageError(f"cannot parse the command {command!r}: {exc}") from exc
        if not self.argv:
            raise UsageError("the command to run is empty")
        self.program = self.argv[0]
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.bytes_read = 0

    def __enter__(self) -> CommandStream:
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # Its own process group, so that stopping it stops its children too
                # (a `sh -c "dump | gzip"` must not outlive an interrupted backup).
                start_new_session=True,
                env=child_environment(),  # never stackvault's own passwords
            )
        except FileNotFoundError as exc:
            raise SourceError(
                f"command {self.program!r} not found", hint="check the program name and PATH"
            ) from exc
        except PermissionError as exc:
            raise SourceError(f"command {self.program!r} is not executable") from exc
        self._reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._reader.start()
        return self

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def readinto(self, buf: memoryview) -> int:
        assert self._proc is not None and self._proc.stdout is not None
        n: int = self._proc.stdout.readinto(buf)  # type: ignore[attr-defined]
        self.bytes_read += n
        return n

    def read(self, n: int = -1) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        data = self._proc.stdout.read(n)
        self.bytes_read += len(data)
        return data

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._proc
        if proc is None:
            return
        if exc_type is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.stdout is not None:
            proc.stdout.close()
        code = proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if exc_type is not None:
            return
        if code != 0:
            if code < 0:
                what = f"was killed by signal {signal.Signals(-code).name}"
            else:
                what = f"exited with status {code}"
            tail = " | ".join(self._stderr)
            raise SourceError(
                f"command {self.program!r} {what} after {self.bytes_read} bytes of output; "
                "no snapshot was saved" + (f"; its last error output: {tail}" if tail else "")
            )
