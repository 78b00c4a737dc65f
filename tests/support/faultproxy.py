"""A TCP proxy on 127.0.0.1 that resets or stalls a fraction of the connections through it.

``FaultProxy(("127.0.0.1", port), reset_rate=0.3, seed=1)`` listens on a free port of
127.0.0.1 (`endpoint`) and forwards every accepted connection to the target. For each
connection, in the order they are accepted, a seeded `random.Random` decides one of:

- pass-through;
- **reset**: forward a random number of bytes - counted over both directions together, drawn
  from ``[0, fault_window)`` (default 256 KiB) so that it lands in a request body as well as in
  a response body, not always on the first byte - then close both sides with an RST
  (``SO_LINGER`` on, timeout 0);
- **stall**: forward a random number of bytes (drawn the same way), then stop forwarding for
  ``stall_seconds`` and close both sides.

HTTP keep-alive connections carry many requests, and a client that got one good connection
would otherwise never see a fault again (boto3 made 100 requests of 300 KiB over a single
connection in a trial). So, unless ``redraw=False``, a connection that has carried
``fault_window`` bytes without a fault gets a fresh decision for its next ``fault_window`` bytes:
the rates then hold per 256 KiB of traffic as well as per connection. A fault whose offset lies
beyond the traffic a connection ever carries does not happen (`resets` and `stalls` count the
faults that really happened).

``reset_first=N`` resets the first N connections before their first byte, whatever the draws
(which start after them): a test whose traffic is too small for the random plan to be sure to
strike still sees a fault.

`cut` makes every connection fail at once (existing ones are reset within ~50 ms, new ones are
accepted and reset immediately) until `heal`. `close` (or leaving the ``with`` block) stops
every thread within about a second: all sockets are non-blocking and every loop waits in
``poll`` with a short timeout and checks the stop flag. Decisions are reproducible for a
given seed as long as connections are opened and served one at a time.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

_POLL_SECONDS = 0.05
_CHUNK = 64 * 1024
_RST_LINGER = struct.pack("ii", 1, 0)


class Action(Enum):
    """What the proxy does with one connection."""

    PASS = "pass"
    RESET = "reset"
    STALL = "stall"


@dataclass(frozen=True)
class Plan:
    """The fate of one connection: the action and the byte offset at which it strikes."""

    action: Action
    offset: int = 0


class _Aborted(Exception):
    """The proxy was cut or closed while a connection was being served."""


def _ready(socks: list[socket.socket], *, write: bool = False) -> list[socket.socket]:
    """The sockets of ``socks`` that can be read (written) within `_POLL_SECONDS`. ``poll``
    rather than ``select``: it does not fail on descriptors above 1023."""
    poller = select.poll()
    mask = select.POLLOUT if write else select.POLLIN
    by_fd = {sock.fileno(): sock for sock in socks}
    for fd in by_fd:
        poller.register(fd, mask)
    return [by_fd[fd] for fd, _events in poller.poll(_POLL_SECONDS * 1000)]


def _rst_close(sock: socket.socket) -> None:
    """Close ``sock`` with an RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """A threaded TCP proxy that injects connection resets and stalls (see the module doc)."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        reset_rate: float = 0.0,
        stall_rate: float = 0.0,
        stall_seconds: float = 5.0,
        seed: int = 0,
        fault_window: int = 256 * 1024,
        redraw: bool = True,
        connect_timeout: float = 5.0,
        reset_first: int = 0,
    ) -> None:
        if not (0.0 <= reset_rate <= 1.0 and 0.0 <= stall_rate <= 1.0):
            raise ValueError("reset_rate and stall_rate must be between 0 and 1")
        if reset_rate + stall_rate > 1.0:
            raise ValueError("reset_rate + stall_rate must not exceed 1")
        if fault_window < 1 or stall_seconds < 0:
            raise ValueError("fault_window must be >= 1 and stall_seconds >= 0")
        self.target = target
        self.reset_rate = reset_rate
        self.stall_rate = stall_rate
        self.stall_seconds = stall_seconds
        self.fault_window = fault_window
        self.redraw = redraw
        self.connect_timeout = connect_timeout
        self._forced = reset_first
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cut = threading.Event()
        self._connections = 0
        self._resets = 0
        self._stalls = 0
        self._cut_resets = 0
        self._threads: set[threading.Thread] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port: int = int(self._listener.getsockname()[1])
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-{self.port}-accept", daemon=True
        )
        self._acceptor.start()

    # -- public API ----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return self._connections

    @property
    def resets(self) -> int:
        """Connections reset by the random plan (not by `cut`)."""
        with self._lock:
            return self._resets

    @property
    def stalls(self) -> int:
        """Connections that were stalled."""
        with self._lock:
            return self._stalls

    @property
    def cut_resets(self) -> int:
        """Connections reset because the proxy was `cut`."""
        with self._lock:
            return self._cut_resets

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def stats(self) -> dict[str, int]:
        """All counters at once (consistent with each other)."""
        with self._lock:
            return {
                "connections": self._connections,
                "resets": self._resets,
                "stalls": self._stalls,
                "cut_resets": self._cut_resets,
            }

    def cut(self) -> None:
        """Fail every connection: reset the open ones (within ~50 ms) and every new one."""
        self._cut.set()

    def heal(self) -> None:
        """Undo `cut`: new connections are served (with their random plan) again."""
        self._cut.clear()

    @contextmanager
    def cut_off(self) -> Iterator[None]:
        """``with proxy.cut_off(): ...`` - `cut` for the duration of the block."""
        self.cut()
        try:
            yield
        finally:
            self.heal()

    def close(self, timeout: float = 1.0) -> None:
        """Stop accepting, drop every connection and join all threads (idempotent).
        Raise `RuntimeError` if a thread is still alive after ``timeout`` seconds."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        self._acceptor.join(timeout)  # no new connection threads once it has returned
        for thread in self._snapshot_threads():
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in [self._acceptor, *self._snapshot_threads()] if t.is_alive()]
        if alive:
            raise RuntimeError(f"FaultProxy threads still alive after close(): {alive}")

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.endpoint} -> {self.target[0]}:{self.target[1]} {self.stats()}>"

    # -- internals -----------------------------------------------------------------------

    def _snapshot_threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    def _plan(self) -> Plan:
        """The next connection's fate; called under the lock, in accept order."""
        if self._forced > 0:
            self._forced -= 1
            return Plan(Action.RESET, 0)
        draw = self._rng.random()
        if draw < self.reset_rate:
            return Plan(Action.RESET, self._rng.randrange(self.fault_window))
        if draw < self.reset_rate + self.stall_rate:
            return Plan(Action.STALL, self._rng.randrange(self.fault_window))
        return Plan(Action.PASS)

    def _accept_loop(self) -> None:
        try:
            while not self._stop.is_set():
                if not _ready([self._listener]):
                    continue
                try:
                    client, _addr = self._listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # e.g. out of file descriptors: try again shortly
                    time.sleep(_POLL_SECONDS)
                    continue
                client.setblocking(False)
                if self._cut.is_set():
                    with self._lock:
                        self._connections += 1
                        self._cut_resets += 1
                    _rst_close(client)
                    continue
                with self._lock:
                    self._connections += 1
                    number = self._connections
                    plan = self._plan()
                    thread = threading.Thread(
                        target=self._serve,
                        args=(client, plan),
                        name=f"faultproxy-{self.port}-conn{number}",
                        daemon=True,
                    )
                    self._threads.add(thread)
                thread.start()
        finally:
            self._listener.close()

    def _serve(self, client: socket.socket, plan: Plan) -> None:
        upstream: socket.socket | None = None
        try:
            try:
                upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
            except OSError:
                _rst_close(client)  # the target is down: the client sees a reset
                return
            upstream.setblocking(False)
            self._pump(client, upstream, plan)
        except _Aborted:
            if self._cut.is_set() and not self._stop.is_set():
                with self._lock:
                    self._cut_resets += 1
            _rst_close(client)
            if upstream is not None:
                _rst_close(upstream)
        except OSError:
            pass  # one side went away (reset, broken pipe): close the other one
        finally:
            client.close()
            if upstream is not None:
                upstream.close()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _check(self) -> None:
        if self._stop.is_set() or self._cut.is_set():
            raise _Aborted

    def _pump(self, client: socket.socket, upstream: socket.socket, first: Plan) -> None:
        """Forward both ways until either side closes, executing the plans on the way."""
        peer = {client: upstream, upstream: client}
        forwarded = 0  # bytes delivered, both directions together
        plan, strike = first, self._strike_at(first, 0)
        window_end = self.fault_window
        while True:
            self._check()
            if strike == forwarded:
                self._strike(client, upstream, plan)
                return
            for source in _ready([client, upstream]):
                try:
                    data = source.recv(_CHUNK)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:  # orderly close by one side: close the other one too
                    return
                view = memoryview(data)
                while view:
                    if strike == forwarded:
                        break  # the rest of the chunk is never delivered
                    if strike < 0 and self.redraw and forwarded >= window_end:
                        with self._lock:  # a fresh decision for the next window
                            plan = self._plan()
                        strike = self._strike_at(plan, forwarded)
                        window_end = forwarded + self.fault_window
                        continue
                    limit = len(view)
                    if strike > forwarded:
                        limit = min(limit, strike - forwarded)
                    elif self.redraw:
                        limit = min(limit, window_end - forwarded)
                    self._send_all(peer[source], view[:limit])
                    forwarded += limit
                    view = view[limit:]
                if strike == forwarded:
                    break

    @staticmethod
    def _strike_at(plan: Plan, base: int) -> int:
        """The absolute byte offset at which ``plan`` strikes, or -1 for a pass-through."""
        return -1 if plan.action is Action.PASS else base + plan.offset

    def _strike(self, client: socket.socket, upstream: socket.socket, plan: Plan) -> None:
        if plan.action is Action.RESET:
            with self._lock:
                self._resets += 1
            _rst_close(client)
            _rst_close(upstream)
            return
        with self._lock:
            self._stalls += 1
        deadline = time.monotonic() + self.stall_seconds
        while time.monotonic() < deadline:
            self._check()
            time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        client.close()
        upstream.close()

    def _send_all(self, sock: socket.socket, view: memoryview) -> None:
        while view:
            self._check()
            if not _ready([sock], write=True):
                continue
            try:
                sent = sock.send(view)
            except (BlockingIOError, InterruptedError):
                continue
            view = view[sent:]
