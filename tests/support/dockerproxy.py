"""A unix-socket proxy in front of the Docker engine's socket that damages exec streams.

``DockerSocketProxy(engine.socket_path)`` listens on ``/tmp/svp-XXXXXXXX/docker.sock``
(`host` is its ``DOCKER_HOST`` value) and forwards every accepted connection to the engine
socket, one thread per direction. Ordinary API calls (create, inspect, ...) pass untouched.

A connection becomes an *exec stream* when the client sends ``POST /…/exec/<id>/start`` on it
(docker-py reuses keep-alive connections, so every request on a connection is looked at) and
the engine answers ``101`` (or ``200``): the bytes after that response's head are the hijacked,
multiplexed stream (8-byte frame headers, then payload). `arm` sets one `ExecFault` for the
next exec stream; it strikes once ``after`` bytes of that stream have reached the client:

- ``CUT``: close both sides (the client sees the end of the connection, the engine a closed
  peer) - a connection to the engine that drops mid-stream;
- ``TRUNCATE``: deliver nothing more, but keep reading the engine's side until the engine ends
  the stream, then close the client's side - the tail of the stream (and with it the
  completion record) is lost, the command inside ran to its end;
- ``DROP_OUTPUT``: count only stdout payload (stream 1) and, from the first stdout frame that
  starts at or after ``after`` payload bytes, drop stdout frames whole while stderr frames
  still pass, until the engine ends the stream - fewer bytes arrive than were written;
- ``STALL``: deliver nothing more and leave the connection open (until `close`) - an engine
  that stops answering;
- ``ENGINE_DOWN``: close every connection and the listening socket (its file stays: new
  connections are refused) - an engine that dies or restarts mid-stream. For good: the proxy
  does not come back.

`struck` lists the faults that really happened (a stream shorter than ``after`` is never
damaged). `close` (or leaving the ``with`` block) shuts every socket down and joins the
threads.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import tempfile
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

_CHUNK = 64 * 1024
_FRAME = struct.Struct(">BxxxL")
_EXEC_START = re.compile(rb"POST /(?:v[0-9.]+/)?exec/[0-9A-Za-z]+/start HTTP/1\.[01]\r\n")
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


class Fault(Enum):
    CUT = "cut"
    TRUNCATE = "truncate"
    DROP_OUTPUT = "drop-output"
    STALL = "stall"
    ENGINE_DOWN = "engine-down"


@dataclass(frozen=True)
class ExecFault:
    """``kind`` strikes after ``after`` bytes of one exec stream (stdout payload bytes for
    ``DROP_OUTPUT``, raw stream bytes - frame headers included - otherwise). With
    ``whole_frames`` a ``CUT``, ``TRUNCATE`` or ``STALL`` strikes at the first frame boundary
    at or after ``after`` (as when the engine itself goes away: it writes whole frames),
    otherwise at exactly ``after`` bytes, in the middle of a frame as a rule."""

    kind: Fault
    after: int
    whole_frames: bool = False


@dataclass(frozen=True)
class Struck:
    """A fault that happened: ``delivered`` raw stream bytes had reached the client."""

    fault: ExecFault
    delivered: int


class _Connection:
    """One client connection and its engine connection."""

    def __init__(self, client: socket.socket, engine: socket.socket) -> None:
        self.client = client
        self.engine = engine
        self.exec_requested = threading.Event()
        self.closed = threading.Event()

    def shutdown(self) -> None:
        self.closed.set()
        for sock in (self.client, self.engine):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class DockerSocketProxy:
    """See the module docstring."""

    def __init__(self, engine_socket: Path) -> None:
        self.engine_socket = Path(engine_socket)
        self.directory = Path(tempfile.mkdtemp(prefix="svp-", dir="/tmp"))
        self.socket_path = self.directory / "docker.sock"
        self._lock = threading.Lock()
        self._armed: ExecFault | None = None
        self._struck: list[Struck] = []
        self._exec_streams = 0
        self._connections: set[_Connection] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.socket_path))
        self._listener.listen(64)
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="dockerproxy-accept", daemon=True
        )
        self._acceptor.start()

    # -- public API ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        """``unix:///tmp/svp-…/docker.sock`` (a ``DOCKER_HOST`` or ``base_url`` value)."""
        return f"unix://{self.socket_path}"

    def arm(self, fault: ExecFault) -> None:
        """Damage the next exec stream with ``fault`` (replaces a fault not yet used)."""
        with self._lock:
            self._armed = fault

    @property
    def struck(self) -> list[Struck]:
        with self._lock:
            return list(self._struck)

    @property
    def exec_streams(self) -> int:
        """Exec streams seen so far."""
        with self._lock:
            return self._exec_streams

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, shut every connection down and join the threads (idempotent).
        `RuntimeError` if a thread is still alive after ``timeout`` seconds."""
        self._go_down()
        self._acceptor.join(timeout)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        alive = [t.name for t in [self._acceptor, *threads] if t.is_alive()]
        shutil.rmtree(self.directory, ignore_errors=True)
        if alive:
            raise RuntimeError(f"DockerSocketProxy threads still alive after close(): {alive}")

    def __enter__(self) -> DockerSocketProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _go_down(self) -> None:
        """Stop accepting (the socket file stays: connecting is refused) and shut every
        connection down."""
        self._stopping.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.shutdown()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was shut down
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                engine.connect(str(self.engine_socket))
            except OSError:
                engine.close()
                client.close()
                continue
            conn = _Connection(client, engine)
            upstream = threading.Thread(target=self._upstream, args=(conn,), daemon=True)
            downstream = threading.Thread(target=self._downstream, args=(conn,), daemon=True)
            with self._lock:
                if self._stopping.is_set():
                    client.close()
                    engine.close()
                    return
                self._connections.add(conn)
                self._threads.update((upstream, downstream))
            upstream.start()
            downstream.start()

    def _upstream(self, conn: _Connection) -> None:
        """Client → engine, looking for the exec start request."""
        tail = b""  # the end of what came before, for a request line split across reads
        try:
            while data := conn.client.recv(_CHUNK):
                window = tail + data
                if _EXEC_START.search(window):
                    conn.exec_requested.set()  # before the engine can see the request
                tail = window[-256:]
                conn.engine.sendall(data)
            conn.engine.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _downstream(self, conn: _Connection) -> None:
        """Engine → client; an exec stream gets the armed fault."""
        try:
            head = b""
            while True:
                data = conn.engine.recv(_CHUNK)
                if not data:
                    return
                if not conn.exec_requested.is_set():
                    conn.client.sendall(data)
                    continue
                head += data
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    continue
                status = _STATUS.match(head)
                if status is None or status[1] not in (b"101", b"200"):
                    conn.exec_requested.clear()  # an error answer: not a stream
                    conn.client.sendall(head)
                    head = b""
                    continue
                conn.client.sendall(head[: end + 4])
                self._stream(conn, head[end + 4 :])
                return
        except OSError:
            pass
        finally:
            self._close(conn)

    def _stream(self, conn: _Connection, first: bytes) -> None:
        with self._lock:
            self._exec_streams += 1
            fault, self._armed = self._armed, None
        buf = bytearray(first)
        delivered = 0  # raw stream bytes delivered
        payload = 0  # stdout payload bytes delivered
        dropping = False
        while True:
            if not buf:
                data = conn.engine.recv(_CHUNK)
                if not data:
                    return
                buf += data
            if fault is None:
                conn.client.sendall(buf)
                buf.clear()
                continue
            if fault.kind is not Fault.DROP_OUTPUT and not fault.whole_frames:
                take = max(0, fault.after - delivered)
                conn.client.sendall(buf[:take])
                delivered += min(take, len(buf))
                del buf[:take]
                if delivered >= fault.after:
                    break
                continue
            frame = self._next_frame(conn, buf)
            if frame is None:
                return  # the engine ended the stream
            stream, length, raw = frame
            if fault.kind is Fault.DROP_OUTPUT:
                if stream == 1 and not dropping and payload >= fault.after:
                    dropping = True
                    self._record(fault, delivered)
                if stream == 1 and dropping:
                    continue
            elif delivered >= fault.after:
                buf[:0] = raw  # not delivered
                break
            conn.client.sendall(raw)
            delivered += len(raw)
            payload += length if stream == 1 else 0
        self._record(fault, delivered)
        if fault.kind is Fault.TRUNCATE:
            while conn.engine.recv(_CHUNK):
                pass  # let the command inside run to its end; deliver nothing of it
        elif fault.kind is Fault.STALL:
            conn.closed.wait()
        elif fault.kind is Fault.ENGINE_DOWN:
            self._go_down()
        # CUT: return at once; the caller closes both sides

    @staticmethod
    def _next_frame(conn: _Connection, buf: bytearray) -> tuple[int, int, bytes] | None:
        """The next whole frame taken from ``buf`` (read from the engine as needed): stream,
        payload length, the frame's bytes; None when the engine ends the stream first."""
        while True:
            if len(buf) >= _FRAME.size:
                stream, length = _FRAME.unpack_from(buf)
                if len(buf) >= _FRAME.size + length:
                    raw = bytes(buf[: _FRAME.size + length])
                    del buf[: _FRAME.size + length]
                    return stream, length, raw
            data = conn.engine.recv(_CHUNK)
            if not data:
                return None
            buf += data

    def _record(self, fault: ExecFault, delivered: int) -> None:
        with self._lock:
            self._struck.append(Struck(fault, delivered))

    def _close(self, conn: _Connection) -> None:
        conn.shutdown()
        conn.client.close()
        conn.engine.close()
        with self._lock:
            self._connections.discard(conn)
            self._threads.discard(threading.current_thread())
