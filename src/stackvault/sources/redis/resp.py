"""RESP2 over a socket: one authenticated connection to a server and its replies (sources layer)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from typing import Any

from stackvault.errors import SourceError

DEFAULT_PORT = 6379
POLL = 0.2
"""Seconds between two looks at a server's state."""

_CONNECT_TIMEOUT = 15.0


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) of the server."""


class Connection:
    """One RESP2 connection to a server on the network, authenticated from the environment."""

    def __init__(self, host: str, port: int, location: str, timeout: float) -> None:
        self.location = location
        self.timeout = timeout
        self._buf = bytearray()
        try:
            self.sock = socket.create_connection(
                (host, port), timeout=min(timeout, _CONNECT_TIMEOUT)
            )
        except TimeoutError as exc:
            raise SourceError(
                f"cannot connect to redis at {host}:{port} (no answer)",
                hint="check the host, the port and any firewall",
            ) from exc
        except OSError as exc:
            raise SourceError(
                f"cannot connect to redis at {host}:{port} ({exc.strerror or exc})",
                hint="check the host and port, and that the server is running",
            ) from exc
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- wire --------------------------------------------------------------------------------

    def send(self, *args: str | bytes) -> None:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        try:
            self.sock.sendall(b"".join(parts))
        except OSError as exc:
            raise self._broken(exc) from exc

    def _broken(self, exc: BaseException | None = None) -> SourceError:
        if isinstance(exc, TimeoutError):
            return SourceError(
                f"redis at {self.location} did not answer within {self.timeout:.0f} s",
                hint="check the server, or raise ?timeout=",
            )
        detail = f" ({exc})" if exc else ""
        return SourceError(
            f"redis at {self.location} closed the connection{detail}",
            hint="check the server's log; it may have restarted or refused this client",
        )

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes: buffered ones first; `SourceError` at EOF or on a timeout."""
        if self._buf:
            data = bytes(self._buf[:n])
            del self._buf[:n]
            return data
        try:
            data = self.sock.recv(n)
        except OSError as exc:
            raise self._broken(exc) from exc
        if not data:
            raise self._broken()
        return data

    def read_line(self) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line.rstrip(b"\r")
            self._buf += self.recv(65536)

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._buf += self.recv(max(65536, n - len(self._buf)))
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def read_reply(self) -> Any:
        line = self.read_line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            raise RedisReplyError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._read_exact(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise SourceError(f"redis at {self.location} sent an unexpected reply {line[:40]!r}")

    def call(self, *args: str | bytes) -> Any:
        """Send one command, return its reply; `SourceError` for an error reply."""
        self.send(*args)
        try:
            return self.read_reply()
        except RedisReplyError as exc:
            raise reply_error(self.location, str(args[0]), str(exc)) from exc

    def info(self, section: str) -> dict[str, str]:
        return parse_info(reply_text(self.call("INFO", section)))

    # -- authentication ----------------------------------------------------------------------

    def authenticate(self, user: str | None) -> None:
        password = os.environ.get("REDISCLI_AUTH") or os.environ.get("REDIS_PASSWORD")
        if password is None and user is None:
            return
        args = ["AUTH", *([user] if user else []), password or ""]
        self.send(*args)
        try:
            self.read_reply()
        except RedisReplyError as exc:
            text = str(exc)
            if "without any password configured" in text:
                return  # the server has no password: nothing to authenticate
            if text.startswith("WRONGPASS") or "invalid password" in text:
                who = f"user {user!r} and the" if user else "the"
                raise SourceError(
                    f"redis at {self.location} refused {who} password from "
                    "REDISCLI_AUTH/REDIS_PASSWORD",
                    hint="check the password (and the user in the URL)",
                ) from exc
            raise reply_error(self.location, "AUTH", text) from exc


def reply_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def parse_info(text: str) -> dict[str, str]:
    """``INFO`` output as a dict (``# Section`` lines and blanks skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            out[key] = value
    return out


def parse_keyspace(text: str) -> dict[str, int]:
    """``{"db0": 12, ...}`` from ``INFO keyspace`` output (databases without keys absent)."""
    out: dict[str, int] = {}
    for key, value in parse_info(text).items():
        if re.fullmatch(r"db[0-9]+", key):
            fields = dict(part.partition("=")[::2] for part in value.split(","))
            out[key] = int(fields.get("keys", "0"))
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][2:])))


def reply_error(location: str, command: str, text: str) -> SourceError:
    """A `SourceError` for an error reply of the server to ``command``."""
    text = text.strip()
    code = text.split(" ", 1)[0]
    if code == "NOAUTH":
        return SourceError(
            f"redis at {location} requires a password",
            hint="set REDISCLI_AUTH or REDIS_PASSWORD (in a container: REDIS_PASSWORD in its "
            "environment)",
        )
    if code == "WRONGPASS":
        return SourceError(
            f"redis at {location} refused the password",
            hint="check REDISCLI_AUTH/REDIS_PASSWORD and the user in the URL",
        )
    if code == "NOPERM":
        return SourceError(
            f"redis at {location} does not allow {command.upper()} for this user ({text})",
            hint="grant the user that command, or use a +docker URL",
        )
    return SourceError(f"redis at {location} answered {command.upper()} with an error: {text}")
