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
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from stackvault.errors import SourceError
from stackvault.sources.tools.childenv import child_environment

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
        """True if ``program`` can be run here."""
        res = self.run(["sh", "-c", f"command -v {shlex.quote(program)}"], timeout=60)
        return res.code == 0 and bool(res.stdout.strip())


# --- this host ------------------------------------------------------------------------------


def _host_env(env: Mapping[str, str] | None) -> dict[str, str]:
    return child_environment(env)


def _not_found(program: str, where: str) -> SourceError:
    return SourceError(
        f"{program} is not installed {where}",
        hint="install the client tools (e.g. postgresql-client, mariadb-client, redis-tools) "
        "or capture through the container with a +docker URL",
    )


StartError = Callable[[str, OSError], SourceError]
"""What to raise when a program cannot be started: (its name as given, the `OSError`, a
`FileNotFoundError` or `PermissionError`)."""

ExitFailure = Callable[["OutputStream", int], SourceError]
"""What to raise when a stream's command ended with a non-zero status (or a signal)."""


def tool_start_error(program: str, exc: OSError) -> SourceError:
    """A dump tool that cannot be started: not installed here, or not executable."""
    if isinstance(exc, FileNotFoundError):
        return _not_found(program, HostRunner.where)
    return SourceError(f"{program} is not executable")


def tool_exit_failure(stream: OutputStream, code: int) -> SourceError:
    """A dump tool that failed: its exit status, the bytes it gave and its error output."""
    return stream.failure(describe_exit(code), "nothing of it was recorded as complete")


class HostRunner(Runner):
    """Runs tools as child processes of this one."""

    where = "on this host"

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float = 300,
    ) -> Completed:
        try:
            proc = subprocess.run(
                list(argv),
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                env=_host_env(env),
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise _not_found(argv[0], self.where) from exc
        except subprocess.TimeoutExpired as exc:
            raise SourceError(
                f"{os.path.basename(argv[0])} {self.where} did not finish within {timeout:.0f} s"
            ) from exc
        return Completed(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))

    def output(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        verify: Sequence[str] | None = None,
        label: str | None = None,
    ) -> OutputStream:
        return HostOutput(argv, _host_env(env), verify, label or os.path.basename(argv[0]))

    def input(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        label: str | None = None,
    ) -> InputStream:
        return _HostInput(argv, _host_env(env), label or os.path.basename(argv[0]))

    def session(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Session:
        return _HostSession(argv, _host_env(env))

    def has(self, program: str) -> bool:
        import shutil

        return shutil.which(program) is not None


def _spawn(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    stdin: int | None,
    stdout: int | None,
    start_error: StartError = tool_start_error,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, its error output on a pipe; ``start_error``
    says what is raised if it cannot be started."""
    try:
        return subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            # Its own process group: stopping it stops what it started.
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise start_error(argv[0], exc) from exc


def _drain(pipe: object, sink: collections.deque[str]) -> threading.Thread:
    def run() -> None:
        for line in pipe:  # type: ignore[attr-defined]
            sink.append(line.decode("utf-8", "replace").rstrip())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process and its process group (what it started), then reap it. Until it is
    reaped its PID, and with it the group id, cannot be reused, so the group is killed even
    if the process itself has just exited (a pipeline's last members may still run)."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


class HostOutput(OutputStream):
    """A local process's standard output, read as a stream (`HostRunner.output`, and
    `stackvault.sources.tools.command.CommandStream`). The process starts at once, in its own
    process group, with nothing on its standard input; its error output is collected on a
    thread. ``start_error`` and ``exit_failure`` word the errors for a caller that names the
    process otherwise (defaults: a dump tool's); ``stderr_lines`` lines of error output are
    kept; ``digest=False`` for a reader that hashes the bytes itself."""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        verify: Sequence[str] | None,
        label: str,
        *,
        where: str = HostRunner.where,
        start_error: StartError = tool_start_error,
        exit_failure: ExitFailure = tool_exit_failure,
        stderr_lines: int = STDERR_LINES,
        digest: bool = True,
    ) -> None:
        super().__init__(label, where, stderr_lines=stderr_lines, digest=digest)
        self._exit_failure = exit_failure
        self._proc = _spawn(
            argv, env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_error=start_error
        )
        self._threads = [_drain(self._proc.stderr, self._stderr)]
        self._verify: subprocess.Popen[bytes] | None = None
        self._verify_name = os.path.basename(verify[0]) if verify else ""
        self._verify_err: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._verify_broken = False
        if verify:
            self._verify = _spawn(verify, env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            self._threads.append(_drain(self._verify.stderr, self._verify_err))
        self._done = False

    def readinto(self, buf: memoryview) -> int:
        assert self._proc.stdout is not None
        n: int = self._proc.stdout.readinto(buf)  # type: ignore[attr-defined]
        if n:
            view = buf[:n]
            self._count(view)
            if self._verify is not None and not self._verify_broken:
                assert self._verify.stdin is not None
                try:
                    self._verify.stdin.write(view)
                except (BrokenPipeError, OSError):
                    self._verify_broken = True  # finish() reports the verifier's own error
        return n

    def finish(self) -> StreamResult:
        if self._done:
            return StreamResult(self.bytes_read, sha256=self.sha256)
        self._done = True
        assert self._proc.stdout is not None
        rest = self._proc.stdout.read()
        if rest:
            self._count(rest)
            raise self.failure("produced output that was not read")
        self._proc.stdout.close()
        code = self._proc.wait()
        verify_code = 0
        if self._verify is not None:
            assert self._verify.stdin is not None
            try:
                self._verify.stdin.close()
            except OSError:
                pass
            verify_code = self._verify.wait()
        for t in self._threads:
            t.join(timeout=10)
        if code != 0:
            raise self._exit_failure(self, code)
        if verify_code != 0:
            assert self._verify is not None
            tail = stderr_tail(list(self._verify_err))
            raise SourceError(
                f"the output of {self.label} ({self.bytes_read} bytes) failed its completeness "
                f"check: {self._verify_name} "
                f"{describe_exit(verify_code)}" + (f": {tail}" if tail else "")
            )
        return StreamResult(self.bytes_read, sha256=self.sha256)

    def abort(self) -> None:
        self._done = True
        _kill(self._proc)
        if self._verify is not None:
            _kill(self._verify)


class _HostInput(InputStream):
    def __init__(self, argv: Sequence[str], env: dict[str, str], label: str) -> None:
        super().__init__(label, HostRunner.where)
        self._proc = _spawn(argv, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._out: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._err: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._threads = [_drain(self._proc.stdout, self._out), _drain(self._proc.stderr, self._err)]

    def write(self, data: bytes | memoryview) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
        except (BrokenPipeError, OSError) as exc:
            code = self._proc.wait()
            raise SourceError(
                f"{self.label} {self.where} {describe_exit(code)} after reading "
                f"{self.bytes_written} bytes: {stderr_tail(list(self._err))}"
            ) from exc
        self.bytes_written += len(data)

    def finish(self) -> Completed:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        code = self._proc.wait()
        for t in self._threads:
            t.join(timeout=10)
        if code != 0:
            raise SourceError(
                f"{self.label} {self.where} {describe_exit(code)} after reading "
                f"{self.bytes_written} bytes: {stderr_tail(list(self._err))}"
            )
        return Completed(code, "\n".join(self._out).encode(), "\n".join(self._err))

    def abort(self) -> None:
        _kill(self._proc)


class _HostSession(Session):
    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self._label = os.path.basename(argv[0])
        self._proc = _spawn(argv, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._err: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._threads = [_drain(self._proc.stderr, self._err)]
        self._lines: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._eof = False
        self._threads.append(threading.Thread(target=self._read, daemon=True))
        self._threads[-1].start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            with self._cond:
                self._lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def send(self, text: str) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(text.encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise self._ended() from exc

    def _ended(self) -> SourceError:
        code = self._proc.wait()
        time.sleep(0.05)
        return SourceError(
            f"{self._label} {HostRunner.where} {describe_exit(code)}: "
            f"{stderr_tail(list(self._err))}"
        )

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
                    raise SourceError(f"{self._label} {HostRunner.where} did not answer in time")
                self._cond.wait(left)
        raise self._ended()

    def close(self) -> None:
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _kill(self._proc)
