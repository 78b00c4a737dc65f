"""Running tools inside a container through the Engine API (sources layer).

`ContainerRunner` implements `stackvault.sources.runner.Runner` with ``docker exec`` sessions
on a raw, hijacked connection. Without a TTY the engine multiplexes stdout and stderr into
frames (an 8-byte header: stream, 0, 0, 0, big-endian length); `_Demux` splits them.

Output streams are wrapped in a small POSIX shell script run in the container, which copies
the command's stdout through ``tee`` into ``sha256sum`` and ``wc -c`` (and, if asked, into a
verifier such as ``pg_restore -f /dev/null``), then writes one marker line to stderr::

    @@stackvault-end rc=0 bytes=123 sha256=ab… verify=0

`finish` compares those figures with what arrived here, so a stream the engine cut short can
never pass as complete. A lost connection to the engine is named as such: the stream ends in
the middle of a frame, or it ends while the command is still running (or the engine then
fails the exec with status 126), or the engine no longer answers.

An output stream given up before its end (`abort`) must stop its producer: closing the
connection is not enough, since the engine may go on draining (or stop reading) the exec's
output, and a ``pg_dump`` left running would hold its snapshot and locks. The script is
started as ``sh -c SCRIPT stackvault-stream-<random>``; `abort` runs a second, detached exec
that finds the process with that name in ``/proc`` and sends SIGTERM (then SIGKILL) to every
process below it, so the script itself still ends and removes its temporary directory.

The container therefore needs ``sh``, ``tee``, ``sha256sum``, ``wc``, ``tr`` and ``mkfifo``
(every Debian, Alpine and BusyBox based image has them).
"""

from __future__ import annotations

import collections
import re
import secrets
import shlex
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stackvault.errors import SourceError
from stackvault.sources.docker.engine import api_error
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

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

_HEADER = struct.Struct(">BxxxL")
_END = re.compile(
    r"^@@stackvault-end rc=(?P<rc>-?\d+) bytes=(?P<bytes>\d+) sha256=(?P<sha>[0-9a-f]{64})"
    r"(?: verify=(?P<verify>-?\d+))?$"
)
_RECV = 256 * 1024
_GRACE = 5.0  # seconds the engine gets to report an exec as ended once its stream has ended


def shell_env_exports(env_from: Mapping[str, str]) -> str:
    """``export A="${B-}"; ...`` for variables taken from the container's own environment,
    or ``export A="$(cat PATH)"`` for a source written ``file:PATH`` (a file in the container,
    such as a Docker secret; its trailing newlines dropped, as the official images'
    ``*_FILE`` variables read it): the values never travel through the API."""
    parts = []
    for name, source in env_from.items():
        if source.startswith("file:"):
            path = source[5:]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or not re.fullmatch(
                r"/[^\x00-\x1f]*", path
            ):
                raise SourceError(f"invalid variable name {name!r} or file path {path!r}")
            parts.append(f'export {name}="$(cat -- {shlex.quote(path)} 2>/dev/null)"')
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name + source.lstrip("$")):
            raise SourceError(f"invalid environment variable name {name!r} or {source!r}")
        parts.append(f'export {name}="${{{source.lstrip("$")}-}}"')
    return "; ".join(parts)


_STREAM_NAME = "stackvault-stream-"
_KILL_BELOW = r"""
tok="stackvault-stream-$1"
all=""
for d in /proc/[0-9]*; do
  [ "${d#/proc/}" = "$$" ] && continue
  case " $(tr '\0' ' ' < "$d/cmdline" 2>/dev/null) " in *" $tok "*) all="$all ${d#/proc/} ";; esac
done
[ -n "$all" ] || exit 0
kids=""
changed=1
while [ "$changed" = 1 ]; do
  changed=0
  for s in /proc/[0-9]*/stat; do
    read -r line < "$s" 2>/dev/null || continue
    pid=${line%% *}
    set -- ${line##*) }
    case "$all" in *" $pid "*) continue;; esac
    case "$all" in *" $2 "*) all="$all $pid "; kids="$kids $pid"; changed=1;; esac
  done
done
[ -n "$kids" ] || exit 0
kill -TERM $kids 2>/dev/null
sleep 3
kill -KILL $kids 2>/dev/null
exit 0
"""
"""Run as ``sh -c _KILL_BELOW sh ID``: signals every process below the one whose arguments hold
``stackvault-stream-ID`` (the output script, which then ends by itself). Every field after the
command name in ``/proc/PID/stat`` is a number or a state letter; the name itself may hold
spaces and parentheses, so the fields are taken after its last ``) ``."""


def _output_script(argv: Sequence[str], verify: Sequence[str] | None, prefix: str) -> str:
    cmd = " ".join(shlex.quote(a) for a in argv)
    lines = [
        "set -u",
        prefix,
        'd=$(mktemp -d 2>/dev/null) || { d=/tmp/.stackvault.$$; mkdir -m 700 "$d"; }',
        'mkfifo "$d/s" "$d/c"' + (' "$d/v"' if verify else ""),
        'sha256sum < "$d/s" > "$d/sum" & p1=$!',
        'wc -c < "$d/c" > "$d/len" & p2=$!',
    ]
    tees = '"$d/s" "$d/c"'
    verify_part = ""
    if verify:
        vcmd = " ".join(shlex.quote(a) for a in verify)
        lines.append(f'{{ {vcmd} < "$d/v" > /dev/null; echo $? > "$d/vrc"; }} & p3=$!')
        tees += ' "$d/v"'
        verify_part = " verify=%s"
    lines += [
        f'{{ {cmd}; echo $? > "$d/rc"; }} | tee {tees}',
        "wait $p1 $p2" + (" $p3" if verify else ""),
        'rc=$(cat "$d/rc" 2>/dev/null || echo 255)',
        'n=$(tr -dc 0-9 < "$d/len")',
        's=$(cut -c1-64 < "$d/sum")',
    ]
    args = '"$rc" "$n" "$s"'
    if verify:
        lines.append('vr=$(cat "$d/vrc" 2>/dev/null || echo 255)')
        args += ' "$vr"'
    lines += [
        f"printf '\\n@@stackvault-end rc=%s bytes=%s sha256=%s{verify_part}\\n' {args} >&2",
        'rm -rf "$d"',
    ]
    return "\n".join(line for line in lines if line)


def _reason(exc: BaseException) -> str:
    """The operating system's words at the bottom of a requests/urllib3 error ("Connection
    refused"), else the engine's explanation or the error's first line."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        error = todo.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
        todo += [a for a in error.args if isinstance(a, BaseException)]
        todo += [e for e in (error.__cause__, error.__context__) if e is not None]
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, str) and explanation.strip():
        return explanation.strip().splitlines()[0][:300]
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class _Demux:
    """Reads the multiplexed frames of an exec connection."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.raw: socket.socket = getattr(sock, "_sock", sock)
        self._buf = bytearray()
        self.eof = False

    def _fill(self, need: int) -> bool:
        while len(self._buf) < need:
            chunk = self.raw.recv(_RECV)
            if not chunk:
                self.eof = True
                if self._buf:  # the engine writes whole frames: the connection broke
                    raise ConnectionError("the stream ended in the middle of a frame")
                return False
            self._buf += chunk
        return True

    def frame(self) -> tuple[int, bytes] | None:
        """The next (stream, payload); None at the end of the connection, `ConnectionError`
        if it ends inside a frame."""
        if not self._fill(_HEADER.size):
            return None
        stream, length = _HEADER.unpack_from(self._buf)
        if not self._fill(_HEADER.size + length):
            return None
        payload = bytes(self._buf[_HEADER.size : _HEADER.size + length])
        del self._buf[: _HEADER.size + length]
        return stream, payload

    def send(self, data: bytes | memoryview) -> None:
        self.raw.sendall(data)

    def close_input(self) -> None:
        try:
            self.raw.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.raw.close()
        except OSError:
            pass
        try:
            self.sock.close()
        except Exception:
            pass


class ContainerRunner(Runner):
    """Runs tools in ``container`` (as its configured user unless ``user`` is given).
    ``env_from`` maps variables of the tool to variables of the container's environment
    (``{"PGPASSWORD": "POSTGRES_PASSWORD"}``) or to files in it (``"file:/run/secrets/pw"``):
    they are resolved inside the container."""

    def __init__(
        self,
        client: DockerClient,
        container: Container,
        *,
        user: str = "",
        env_from: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.container = container
        self.user = user
        self.env_from = dict(env_from or {})
        self.where = f"in container {container.name}"

    # --- exec plumbing ----------------------------------------------------------------------

    def _start(
        self, argv: Sequence[str], env: Mapping[str, str] | None, *, stdin: bool
    ) -> tuple[str, _Demux]:
        import docker.errors

        cmd = list(argv)
        if self.env_from:
            script = shell_env_exports(self.env_from) + "; exec " + shlex.join(cmd)
            cmd = ["sh", "-c", script]
        api = self.client.api
        try:
            exec_id = api.exec_create(
                self.container.id,
                cmd,
                stdout=True,
                stderr=True,
                stdin=stdin,
                tty=False,
                user=self.user,
                environment=dict(env) if env else None,
            )["Id"]
            sock = api.exec_start(exec_id, socket=True, tty=False)
        except docker.errors.APIError as exc:
            if "is not running" in str(exc):
                raise SourceError(
                    f"container {self.container.name} is not running",
                    hint=f"start it (`docker start {self.container.name}`) and try again",
                ) from exc
            raise api_error(f"running {argv[0]} in container {self.container.name}", exc) from exc
        return exec_id, _Demux(sock)

    def _exec_info(self, exec_id: str) -> dict[str, Any]:
        try:
            return dict(self.client.api.exec_inspect(exec_id))
        except Exception as exc:  # docker's APIError, requests' ConnectionError, ...
            raise SourceError(
                f"lost the connection to the Docker engine while running a command {self.where} "
                f"({_reason(exc)})",
                hint="check that the engine runs, then run the backup again",
            ) from exc

    def _wait_exec(self, exec_id: str, timeout: float) -> dict[str, Any] | None:
        """The exec's final state; None if it is still running after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            info = self._exec_info(exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return info
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    def _exit_code(self, exec_id: str, timeout: float = 30) -> int:
        info = self._wait_exec(exec_id, timeout)
        if info is None:
            raise SourceError(f"the exec in container {self.container.name} did not end")
        return int(info["ExitCode"])

    def _missing_tool(self, argv: Sequence[str], output: str) -> SourceError | None:
        """The engine's own error when the program does not exist in the container."""
        if "executable file not found" in output or "no such file or directory" in output:
            return SourceError(
                f"{argv[0]} is not available in container {self.container.name}",
                hint="use an image that ships it, or capture from this host with a plain URL",
            )
        return None

    # --- Runner -----------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float = 300,
    ) -> Completed:
        exec_id, demux = self._start(argv, env, stdin=stdin is not None)
        out = bytearray()
        err = bytearray()
        try:
            demux.raw.settimeout(timeout)
            if stdin is not None:
                demux.send(stdin)
                demux.close_input()
            while (frame := demux.frame()) is not None:
                (out if frame[0] == 1 else err).extend(frame[1])
        except TimeoutError as exc:
            raise SourceError(
                f"{argv[0]} {self.where} did not finish within {timeout:.0f} s"
            ) from exc
        except OSError as exc:
            raise SourceError(f"the exec connection to {self.where} broke: {exc}") from exc
        finally:
            demux.close()
        code = self._exit_code(exec_id)
        text = err.decode("utf-8", "replace")
        if code in (126, 127):
            missing = self._missing_tool(argv, text + out.decode("utf-8", "replace"))
            if missing is not None:
                raise missing
        return Completed(code, bytes(out), text)

    def output(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        verify: Sequence[str] | None = None,
        label: str | None = None,
    ) -> OutputStream:
        prefix = shell_env_exports(self.env_from) if self.env_from else ""
        script = _output_script(argv, verify, prefix)
        saved, self.env_from = self.env_from, {}
        stream_id = secrets.token_hex(8)
        try:
            exec_id, demux = self._start(
                ["sh", "-c", script, _STREAM_NAME + stream_id], env, stdin=False
            )
        finally:
            self.env_from = saved
        output = _ContainerOutput(self, exec_id, demux, label or argv[0], verify is not None)
        output.stream_id = stream_id
        return output

    def _stop_below(self, stream_id: str) -> None:
        """Signal every process of an output stream's script below the script itself (see the
        module's docstring), from a detached exec; best effort: if the container or the engine
        is gone, so is the producer, or nothing more can be done from here."""
        api = self.client.api
        try:
            exec_id = api.exec_create(
                self.container.id,
                ["sh", "-c", _KILL_BELOW, "sh", stream_id],
                stdout=False,
                stderr=False,
                user=self.user,
            )["Id"]
            api.exec_start(exec_id, detach=True)
        except Exception:  # docker's APIError, requests' ConnectionError, ...
            return

    def input(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        label: str | None = None,
    ) -> InputStream:
        exec_id, demux = self._start(argv, env, stdin=True)
        return _ContainerInput(self, exec_id, demux, label or argv[0])

    def session(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Session:
        exec_id, demux = self._start(argv, env, stdin=True)
        return _ContainerSession(self, exec_id, demux, argv[0])


class _ContainerOutput(OutputStream):
    def __init__(
        self, runner: ContainerRunner, exec_id: str, demux: _Demux, label: str, verify: bool
    ) -> None:
        super().__init__(label, runner.where)
        self._runner = runner
        self._exec_id = exec_id
        self._demux = demux
        self._verify = verify
        self._pending = b""
        self._stderr_buf = ""
        self._end: re.Match[str] | None = None
        self._done = False
        self.stream_id = ""
        """The random part of the script's name (`ContainerRunner._stop_below`)."""

    def _on_stderr(self, data: bytes) -> None:
        self._stderr_buf += data.decode("utf-8", "replace")
        *lines, self._stderr_buf = self._stderr_buf.split("\n")
        for line in lines:
            m = _END.match(line)
            if m:
                self._end = m
            elif line.strip():
                self._stderr.append(line.rstrip())

    def readinto(self, buf: memoryview) -> int:
        while not self._pending:
            try:
                frame = self._demux.frame()
            except OSError as exc:
                raise self.failure(f"lost its exec connection ({exc})") from exc
            if frame is None:
                return 0
            stream, payload = frame
            if stream == 1:
                self._pending = payload
            else:
                self._on_stderr(payload)
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._count(buf[:n])
        self._pending = self._pending[n:]
        return n

    def finish(self) -> StreamResult:
        if self._done:
            return StreamResult(self.bytes_read, sha256=self._sha.hexdigest())
        self._done = True
        try:
            while (frame := self._demux.frame()) is not None:
                if frame[0] == 1:
                    self._count(frame[1])
                    raise self.failure("produced output that was not read")
                self._on_stderr(frame[1])
        except OSError as exc:
            raise self.failure(f"lost its exec connection ({exc})") from exc
        finally:
            self._demux.close()
        if self._stderr_buf:
            self._on_stderr(b"\n")
        end = self._end
        if end is None:
            raise self._without_record()
        self._runner._exit_code(self._exec_id)
        rc = int(end["rc"])
        if rc == 127:
            raise SourceError(
                f"{self.label} is not available {self.where}",
                hint="use an image that ships it, or capture from this host with a plain URL",
            )
        if rc != 0:
            raise self.failure(describe_exit(rc), "nothing of it was recorded as complete")
        inside_size, inside_sha = int(end["bytes"]), end["sha"]
        if inside_size != self.bytes_read or inside_sha != self._sha.hexdigest():
            raise SourceError(
                f"the stream of {self.label} {self.where} arrived damaged: "
                f"{inside_size} bytes (SHA-256 {inside_sha[:12]}…) inside the container, "
                f"{self.bytes_read} bytes (SHA-256 {self._sha.hexdigest()[:12]}…) received; "
                "nothing of it was recorded as complete",
                hint="run the backup again; if it repeats, check the engine and its connection",
            )
        if self._verify:
            vrc = int(end["verify"] or 255)
            if vrc != 0:
                raise self.failure(
                    f"produced output that failed its completeness check "
                    f"(the verifier {describe_exit(vrc)})"
                )
        return StreamResult(
            self.bytes_read,
            inside_size=inside_size,
            inside_sha256=inside_sha,
            sha256=self._sha.hexdigest(),
        )

    def _without_record(self) -> SourceError:
        """The stream ended without its completion record: the command (or the container)
        died, or the connection to the engine was lost."""
        info = self._runner._wait_exec(self._exec_id, _GRACE)
        # The engine ends an exec stream only once the command has ended, and it fails an
        # exec it had started (a Pid) with status 126 when it can no longer write the stream.
        if info is None or (int(info["ExitCode"]) == 126 and info.get("Pid")):
            return self.failure(
                "lost its exec connection (the stream ended while the command was still running)",
                "nothing of it was recorded as complete",
            )
        return self.failure(
            f"ended without its completion record (exec {describe_exit(int(info['ExitCode']))})",
            "the stream is not trusted",
        )

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._demux.close()
        if self.stream_id:
            self._runner._stop_below(self.stream_id)


class _ContainerInput(InputStream):
    def __init__(self, runner: ContainerRunner, exec_id: str, demux: _Demux, label: str) -> None:
        super().__init__(label, runner.where)
        self._runner = runner
        self._exec_id = exec_id
        self._demux = demux
        self._out: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._err: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while (frame := self._demux.frame()) is not None:
                text = frame[1].decode("utf-8", "replace")
                target = self._out if frame[0] == 1 else self._err
                target.extend(line for line in text.splitlines() if line.strip())
        except OSError:
            pass

    def _failed(self, what: str) -> SourceError:
        return SourceError(
            f"{self.label} {self.where} {what} after reading {self.bytes_written} bytes: "
            f"{stderr_tail(list(self._err))}"
        )

    def write(self, data: bytes | memoryview) -> None:
        try:
            self._demux.send(data)
        except OSError as exc:
            self._reader.join(timeout=10)
            code = self._runner._exit_code(self._exec_id)
            raise self._failed(describe_exit(code)) from exc
        self.bytes_written += len(data)

    def finish(self) -> Completed:
        self._demux.close_input()
        self._reader.join()
        self._demux.close()
        code = self._runner._exit_code(self._exec_id)
        if code != 0:
            raise self._failed(describe_exit(code))
        return Completed(code, "\n".join(self._out).encode(), "\n".join(self._err))

    def abort(self) -> None:
        self._demux.close()


class _ContainerSession(LineSession):
    def __init__(self, runner: ContainerRunner, exec_id: str, demux: _Demux, label: str) -> None:
        super().__init__(label, runner.where)
        self._runner = runner
        self._exec_id = exec_id
        self._demux = demux
        self._err: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._partial = ""  # an output line not yet ended (read on the reader thread only)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while (frame := self._demux.frame()) is not None:
                text = frame[1].decode("utf-8", "replace")
                if frame[0] != 1:
                    self._err.extend(line for line in text.splitlines() if line.strip())
                    continue
                *done, self._partial = (self._partial + text).split("\n")
                self._add_lines(done)
        except OSError:
            pass
        self._end_of_output()

    def send(self, text: str) -> None:
        try:
            self._demux.send(text.encode())
        except OSError as exc:
            raise self._ended() from exc

    def _ended(self) -> SourceError:
        self._reader.join(timeout=5)
        code = self._runner._exit_code(self._exec_id)
        return SourceError(
            f"{self._label} {self._runner.where} {describe_exit(code)}: "
            f"{stderr_tail(list(self._err))}"
        )

    def close(self) -> None:
        self._demux.close_input()
        self._reader.join(timeout=10)
        self._demux.close()
