"""A command's standard output as a byte stream (sources layer): ``--stdin-from-command``.

The command is split as a POSIX shell would split it (no shell is run) and run on this host
as `stackvault.sources.tools.host.HostOutput` runs a dump tool: its own process group (an
interrupted backup stops a ``sh -c "dump | gzip"`` whole), nothing on its standard input, an
environment without stackvault's own secrets. Its exit status is checked when the stream is
closed: a non-zero status or a signal raises `SourceError` carrying the last lines of its
standard error, so a failed dump can never look like a good one.
"""

from __future__ import annotations

import shlex
import signal
from types import TracebackType

from stackvault.errors import SourceError, UsageError
from stackvault.sources.tools.childenv import child_environment
from stackvault.sources.tools.host import HostOutput
from stackvault.sources.tools.runner import OutputStream

STDERR_LINES = 10


class CommandStream:
    """Runs a command; `readinto`/`read` return its stdout. Use as a context manager: the
    command starts on entry; leaving the block normally checks how it ended, leaving on an
    exception kills it."""

    def __init__(self, command: str) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise UsageError(f"cannot parse the command {command!r}: {exc}") from exc
        if not self.argv:
            raise UsageError("the command to run is empty")
        self.program = self.argv[0]
        self._out: HostOutput | None = None

    @property
    def bytes_read(self) -> int:
        return self._out.bytes_read if self._out is not None else 0

    def __enter__(self) -> CommandStream:
        self._out = HostOutput(
            self.argv,
            child_environment(),  # never stackvault's own passwords
            None,
            f"command {self.program!r}",
            where="",
            start_error=_start_error,
            exit_failure=_exit_failure,
            stderr_lines=STDERR_LINES,
            digest=False,  # the backup hashes what it reads
        )
        return self

    def readinto(self, buf: memoryview) -> int:
        assert self._out is not None
        return self._out.readinto(buf)

    def read(self, n: int = -1) -> bytes:
        assert self._out is not None
        return self._out.read(n)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._out is None:
            return
        if exc_type is not None:
            self._out.abort()
            return
        self._out.finish()


def _start_error(program: str, exc: OSError) -> SourceError:
    if isinstance(exc, FileNotFoundError):
        return SourceError(f"command {program!r} not found", hint="check the program name and PATH")
    return SourceError(f"command {program!r} is not executable")


def _exit_failure(stream: OutputStream, code: int) -> SourceError:
    if code < 0:
        what = f"was killed by signal {signal.Signals(-code).name}"
    else:
        what = f"exited with status {code}"
    tail = " | ".join(stream.error_lines())
    return SourceError(
        f"{stream.label} {what} after {stream.bytes_read} bytes of output; "
        "no snapshot was saved" + (f"; its last error output: {tail}" if tail else "")
    )
