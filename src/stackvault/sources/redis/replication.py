"""Redis replication both ways: the RDB of a SYNC reply, a master serving one (sources layer).

**Capture on a host** (``redis://``): the RDB is pulled over the replication protocol, as a
replica would: ``SYNC`` (after ``REPLCONF capa eof``, so the server picks disk-based or
diskless transfer per its own ``repl-diskless-sync`` setting; diskless waits
``repl-diskless-sync-delay``, 5 s by default). The server forks, and its RDB arrives as
``$LENGTH`` + bytes, or as ``$EOF:MARK`` + bytes + the 40-byte mark; keep-alive newlines before
it are skipped. The payload is streamed into the sink as it arrives and the connection is
closed right after it, before any replication traffic. A disk-based transfer also rewrites the
server's own ``dump.rdb``, as a ``BGSAVE`` would, and a server that had no replica keeps a
replication backlog (``repl-backlog-size``, 1 MB by default) for ``repl-backlog-ttl``.
``SYNC`` needs an unrestricted connection (managed services often disable it); use a
``+docker`` URL there.

**Restore into a server on a host**: the server is made a replica of a tiny master that this
process runs (on the local address of the connection to the server, i.e. 127.0.0.1 for a local
server: the server must be able to connect back to it). It answers the handshake (``PING``,
``AUTH``, ``REPLCONF``), replies to ``PSYNC``/``SYNC`` with ``+FULLRESYNC`` and the RDB, and the
restore waits until ``INFO replication`` shows the link up and the sync done, then sends
``REPLICAOF NO ONE``. The server replaces its whole dataset with the RDB (what it does for any
full resync). The last byte is held back until the artifact's SHA-256 and the RDB checks pass,
so a damaged artifact is never loaded. A server that asks for the RDB again (it could not load
it) fails the restore; an RDB format newer than the server loads is refused beforehand.
Afterwards, if the server has save points (``CONFIG GET save``), a ``BGSAVE`` makes the
restored data durable. Refused for a server that is a replica itself or a cluster node.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import socket
import threading
import time
from collections.abc import Callable

from stackvault.errors import SourceError, StackvaultError
from stackvault.sources.contract import Readable
from stackvault.sources.redis.rdb import CHUNK, RDB, RdbCheck, RdbInfo, held_back
from stackvault.sources.redis.resp import POLL, Connection


class SyncPayload:
    """The RDB that follows a ``SYNC``: ``$LEN`` + bytes, or ``$EOF:MARK`` + bytes + MARK."""

    def __init__(self, conn: Connection, header: bytes) -> None:
        self.conn = conn
        self.received = 0
        self.length: int | None = None
        self.mark = b""
        if header.startswith(b"$EOF:"):
            self.mode = "diskless"
            self.mark = header[5:]
            if len(self.mark) != 40:
                raise SourceError(f"redis at {conn.location} sent a malformed SYNC header")
        else:
            self.mode = "disk"
            try:
                self.length = int(header[1:])
            except ValueError as exc:
                raise SourceError(
                    f"redis at {conn.location} sent a malformed SYNC header {header[:40]!r}"
                ) from exc
        self._ready = b""
        self._held = b""
        self._ended = False

    def _fetch(self) -> None:
        try:
            if self.length is not None:
                left = self.length - self.received
                if left == 0:
                    self._ended = True
                    return
                data = self.conn.recv(min(CHUNK, left))
                self.received += len(data)
                self._ready = data
                return
            data = self._held + self.conn.recv(CHUNK)
        except SourceError as exc:
            of = f" of {self.length}" if self.length is not None else ""
            raise SourceError(
                f"the RDB transfer from redis at {self.conn.location} broke after "
                f"{self.received}{of} bytes ({exc.message}); nothing was recorded",
                hint="check the server's log (it may have been restarted or killed) and run "
                "the backup again",
            ) from exc
        if data.endswith(self.mark):
            self._ready = data[: -len(self.mark)]
            self._held = b""
            self._ended = True
        else:
            self._ready = data[: -len(self.mark)]
            self._held = data[-len(self.mark) :]
        self.received += len(self._ready)

    def readinto(self, buf: memoryview) -> int:
        while not self._ready:
            if self._ended:
                return 0
            self._fetch()
        n = min(len(buf), len(self._ready))
        buf[:n] = self._ready[:n]
        self._ready = self._ready[n:]
        return n


class Master:
    """Listens on ``host``:(free port) and serves the RDB to the replica that connects: the
    handshake, ``+FULLRESYNC``, ``$LEN`` and the bytes (the last one only once ``check``
    passed). Runs in a thread; `error` is set if serving failed, `syncs` counts requests."""

    def __init__(
        self,
        host: str,
        open_rdb: Callable[[], Readable],
        size: int,
        sha256: str,
        location: str,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(4)
        self.listener.settimeout(0.5)
        self.host = host
        self.port: int = self.listener.getsockname()[1]
        self.replid = secrets.token_hex(20)
        self.open_rdb = open_rdb
        self.size = size
        self.sha256 = sha256
        self.location = location
        self.syncs = 0
        self.sent = 0
        self.served = threading.Event()
        self.error: StackvaultError | None = None
        self.rdb_info: RdbInfo | None = None
        """What checking the RDB found, once it was served whole."""
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="redis-restore", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        with contextlib.suppress(OSError):
            self.listener.close()
        self._thread.join(timeout=10)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        reader = sock.makefile("rb")
        try:
            while not self._stop.is_set():
                args = _read_command(reader)
                if args is None:
                    return
                name = args[0].upper() if args else b""
                if name == b"PING":
                    sock.sendall(b"+PONG\r\n")
                elif name == b"REPLCONF" and len(args) > 1 and args[1].upper() == b"ACK":
                    continue  # the replica's offset reports need no answer
                elif name in (b"REPLCONF", b"AUTH"):
                    sock.sendall(b"+OK\r\n")
                elif name in (b"PSYNC", b"SYNC"):
                    self.syncs += 1
                    if name == b"PSYNC":
                        sock.sendall(b"+FULLRESYNC %s 0\r\n" % self.replid.encode())
                    self._send_rdb(sock)
                else:
                    sock.sendall(b"-ERR unknown command\r\n")
        except StackvaultError as exc:
            self.error = exc
        except OSError:
            pass  # the replica went away; the restore notices
        except Exception as exc:
            self.error = SourceError(f"serving the RDB to redis at {self.location} failed: {exc}")
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _send_rdb(self, sock: socket.socket) -> None:
        check = RdbCheck(f"the artifact's {RDB}", restore=True)
        stream = self.open_rdb()
        sock.sendall(b"$%d\r\n" % self.size)
        outcome = f"; redis at {self.location} did not load it"
        for piece in held_back(stream, check, self.size, self.sha256, outcome):
            sock.sendall(piece)  # the last piece only once the whole was checked
            self.sent += len(piece)
        self.rdb_info = check.finish()
        self.served.set()

    def wait_loaded(self, conn: Connection, timeout: float) -> None:
        """Until the replica on ``conn`` has loaded the RDB; `SourceError` if it could not
        or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.error is not None:
                raise self.error
            info = conn.info("replication")
            if (
                self.served.is_set()
                and info.get("master_link_status") == "up"
                and info.get("master_sync_in_progress") == "0"
            ):
                return
            if self.syncs > 1:
                raise SourceError(
                    f"redis at {self.location} could not load the RDB (it asked for it again)",
                    hint="its log says why: often an RDB version newer than the server, or a "
                    "data directory it cannot write",
                )
            if time.monotonic() > deadline:
                detail = (
                    "never connected to this process"
                    if self.syncs == 0
                    else f"received {self.sent} of {self.size} bytes"
                )
                raise SourceError(
                    f"redis at {self.location} did not load the RDB within "
                    f"{timeout:.0f} s ({detail})",
                    hint=f"the server must be able to connect to {self.host}:{self.port}; "
                    "raise ?timeout= for a large dataset",
                )
            time.sleep(POLL / 2)


def _read_command(reader: io.BufferedReader) -> list[bytes] | None:
    """One command of a replica (a RESP array, or an inline line); None at EOF."""
    line = reader.readline()
    if not line:
        return None
    line = line.rstrip(b"\r\n")
    if not line.startswith(b"*"):
        return line.split()
    args = []
    for _ in range(int(line[1:])):
        size = int(reader.readline().rstrip(b"\r\n")[1:])
        args.append(reader.read(size + 2)[:-2])
    return args
