"""Running tools where the data lives (sources layer): on this host, or inside a container.

Database sources drive the server's own tools (``pg_dump``, ``mariadb-dump``, ``redis-cli``,
``psql``). A `Runner` runs them either as local processes (`HostRunner`) or inside a container
through the Docker Engine API (`stackvault.sources.docker.exec.ContainerRunner`), behind one
interface:

- `Runner.run` — a short command; its output in memory.
- `Runner.output` — a command whose standard output is a long stream (a dump). The returned
  `OutputStream` is read until EOF, then `OutputStream.finish` checks the exit status and, in a
  container, the byte count and SHA-256 computed *inside* the container against what was read
  (exec streams have been seen to truncate silently). A verifier command may read a copy of the
  stream alongside (e.g. ``pg_restore -f /dev/null`` proves a dump complete).
- `Runner.input` — a command fed a long stream on its standard input (a load).
- `Runner.session` — a command kept open to exchange lines with (``psql`` holding a
  transaction whose snapshot ``pg_dump --snapshot`` imports).

Every failure raises `SourceError` naming the tool, where it ran, its exit status and the last
lines of its error output. Secrets are passed in the environment, never in argument lists.
"""

from __future__ import annotations

import collections
import hashlib
import os
import shlex
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from stackvault.errors import SourceError

if TYPE_CHECKING:
    from stackvault.sources.contract import Readable

STDERR_LINES = 12


@dataclass(frozen=True)
class Completed:
    """A finished short command."""

    code: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


@dataclass(frozen=True)
class StreamResult:
    """What a finished output stream's producer reported about itself."""

    size: int
    """Bytes the caller read."""
    inside_size: int | None = None
    """Bytes counted where the command ran (containers), None on this host."""
    inside_sha256: str | None = None
    sha256: str = ""
    """SHA-256 of the bytes the caller read."""


def stderr_tail(lines: Sequence[str]) -> str:
    text = " | ".join(line for line in lines if line.strip())
    return text[-1500:]


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code >= 128 + 1 and code <= 128 + 64:
        try:
            return f"exited with status {code} (signal {signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exited with status {code}"


class OutputStream(ABC):
    """A running command's standard output. Read until EOF, then call `finish` (or use it as
    a context manager: leaving the block normally finishes, leaving on an exception aborts)."""

    def __init__(
        self, label: str, where: str, *, stderr_lines: int = STDERR_LINES, digest: bool = True
    ) -> None:
        self.label = label
        self.where = where
        self.bytes_read = 0
        self._sha = hashlib.sha256()
        self._digest = digest
        """False for a reader that hashes what it reads itself (`StreamResult.sha256` is "")."""
        self._stderr: collections.deque[str] = collections.deque(maxlen=stderr_lines)

    @abstractmethod
    def readinto(self, buf: memoryview) -> int: ...

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts: list[bytes] = []
            while True:
                part = self.read(1 << 20)
                if not part:
                    return b"".join(parts)
                parts.append(part)
        buf = bytearray(n)
        got = self.readinto(memoryview(buf))
        return bytes(buf[:got])

    def _count(self, data: memoryview | bytes) -> None:
        self.bytes_read += len(data)
        if self._digest:
            self._sha.update(data)

    @property
    def sha256(self) -> str:
        """SHA-256 of the bytes read so far ("" if the stream keeps no digest)."""
        return self._sha.hexdigest() if self._digest else ""

    def error_lines(self) -> list[str]:
        """The last lines of the command's error output, as it wrote them."""
        return list(self._stderr)

    @abstractmethod
    def finish(self) -> StreamResult:
        """Wait for the command; `SourceError` unless it exited 0 and (in a container) the
        bytes counted inside equal the bytes read here."""

    @abstractmethod
    def abort(self) -> None:
        """Kill the command (idempotent)."""

    def failure(self, what: str, extra: str = "") -> SourceError:
        """``label where what after N bytes of output[; extra][; its last error output: ...]``."""
        tail = stderr_tail(list(self._stderr))
        message = f"{self.label} {self.where} {what} after {self.bytes_read} bytes of output"
        if extra:
            message += f"; {extra}"
        if tail:
            message += f"; its last error output: {tail}"
        return SourceError(message)

    def __enter__(self) -> OutputStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


class InputStream(ABC):
    """A running command fed on its standard input. `write` the data, then `finish`."""

    def __init__(self, label: str, where: str) -> None:
        self.label = label
        self.where = where
        self.bytes_written = 0

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None:
        """Send data; `SourceError` if the command has already failed."""

    @abstractmethod
    def finish(self) -> Completed:
        """Close its input and wait; `SourceError` unless it exited 0."""

    @abstractmethod
    def abort(self) -> None: ...


def pump(
    source: Readable,
    stream: InputStream,
    edit: Callable[[memoryview], bytes] | None = None,
    finish: Callable[[], bytes] | None = None,
) -> int:
    """Copy ``source`` into ``stream`` in 1 MiB pieces (through ``edit``, then what ``finish``
    returns) and finish the stream; the bytes read from ``source``. The stream is aborted if
    anything fails."""
    read = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    try:
        while n := source.readinto(view):
            read += n
            stream.write(edit(view[:n]) if edit is not None else view[:n])
        if finish is not None:
            stream.write(finish())
        stream.finish()
    except BaseException:
        stream.abort()
        raise
    return read


class Session(ABC):
    """A command kept running to exchange text with (e.g. ``psql``)."""

    @abstractmethod
    def send(self, text: str) -> None: ...

    @abstractmethod
    def read_until(self, marker: str, timeout: float) -> str:
        """Output up to and without the line ``marker``; `SourceError` if the command ends or
        the time runs out first."""

    @abstractmethod
    def close(self) -> None:
        """End the command (closing its input first, then killing it if it lingers)."""


class LineSession(Session):
    """A session whose output lines arrive on a reader thread of the implementation
    (`_add_lines`, then `_end_of_output`); `read_until` waits for them. The implementation
    says what went wrong once the command has ended (`_ended`)."""

    def __init__(self, label: str, where: str) -> None:
        self._label = label
        self._where = where
        self._lines: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._eof = False

    def _add_lines(self, lines: Iterable[str]) -> None:
        with self._cond:
            self._lines.extend(lines)
            self._cond.notify_all()

    def _end_of_output(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @abstractmethod
    def _ended(self) -> SourceError:
        """The error to raise once the command has ended (its exit status, its stderr)."""

    def read_until(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        out: list[str] = []
        with self._cond:
            while True:
                while self._lines:
                    line = self._lines.popleft()
                    if line == marker:
                        return "\n".join(out)
                    out.append(line)
                if self._eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceError(f"{self._label} {self._where} did not answer in time")
                self._cond.wait(left)
        raise self._ended()


class Runner(ABC):
    """Where tools run. ``where`` reads naturally after a tool name: ``"on this host"``,
    ``"in container db"``."""

    where: str

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float = 300,
    ) -> Completed:
        """Run to completion (any exit status); `SourceError` only if it cannot start or
        outlives ``timeout``."""

    def check(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float = 300,
        what: str | None = None,
    ) -> Completed:
        """`run`, and `SourceError` (with the error output) unless it exited 0."""
        res = self.run(argv, env=env, stdin=stdin, timeout=timeout)
        if res.code != 0:
            label = what or os.path.basename(argv[0])
            tail = stderr_tail(res.stderr.splitlines()[-STDERR_LINES:])
            raise SourceError(
                f"{label} {self.where} {describe_exit(res.code)}" + (f": {tail}" if tail else "")
            )
        return res

    @abstractmethod
    def output(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        verify: Sequence[str] | None = None,
        label: str | None = None,
    ) -> OutputStream:
        """Start a command whose stdout is the stream. ``verify``, if given, is a command run
        where this one runs that reads a copy of the stream on its stdin and must exit 0."""

    @abstractmethod
    def input(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        label: str | None = None,
    ) -> InputStream: ...

    @abstractmethod
    def session(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Session: ...

    def has(self, program: str) -> bool:
        """True if ``program`` can be run here. Decided by the exit status of ``command -v``
        alone: the Docker engine now and then loses the output of a short exec (moby#27289),
        and an empty stdout must not read as a missing program."""
        res = self.run(["sh", "-c", f"command -v {shlex.quote(program)} >/dev/null"], timeout=60)
        return res.code == 0


# --- this host ------------------------------------------------------------------------------
