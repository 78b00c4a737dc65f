"""Running tools on this host (sources layer): `HostRunner`, the `Runner` of local processes
(`stackvault.sources.tools.runner` holds the contract), and `HostOutput`, the one way a local
process's output is read as a stream (also `--stdin-from-command`, through
`stackvault.sources.tools.command`).

Every process starts in its own process group with the environment every child gets
(`child_environment`: without stackvault's own secrets); an aborted stream kills the group.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence

from stackvault.errors import SourceError
from stackvault.sources.tools.childenv import child_environment
from stackvault.sources.tools.runner import (
    STDERR_LINES,
    Completed,
    InputStream,
    LineSession,
    OutputStream,
    Runner,
    Session,
    StreamResult,
    describe_exit,
    stderr_tail,
)


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
            for t in self._threads:  # the error output read to its end, for the message
                t.join(timeout=10)
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


class _HostSession(LineSession):
    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        super().__init__(os.path.basename(argv[0]), HostRunner.where)
        self._proc = _spawn(argv, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._err: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._threads = [_drain(self._proc.stderr, self._err)]
        self._threads.append(threading.Thread(target=self._read, daemon=True))
        self._threads[-1].start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            self._add_lines([raw.decode("utf-8", "replace").rstrip("\n")])
        self._end_of_output()

    def send(self, text: str) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(text.encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise self._ended() from exc

    def _ended(self) -> SourceError:
        code = self._proc.wait()
        self._threads[0].join(timeout=10)  # its error output read to the end
        return SourceError(
            f"{self._label} {HostRunner.where} {describe_exit(code)}: "
            f"{stderr_tail(list(self._err))}"
        )

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
