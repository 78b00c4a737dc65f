"""Real receivers of notifications on 127.0.0.1 for the tests: an HTTP server that records
every request (Apprise's ``json://`` webhook, dead-man pings) and an SMTP server (aiosmtpd)
with a login, receiving Apprise's ``mailto://``. Both run in threads of the test process.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Request:
    """One request the webhook receiver got."""

    method: str
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that answers ``status`` to every GET and POST and keeps
    each request."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._lock:
                    receiver.requests.append(Request(self.command, self.path, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = _record
            do_POST = _record

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def json_url(self, path: str = "/hook") -> str:
        """The Apprise URL of a JSON webhook posting to ``path`` here."""
        return f"json://127.0.0.1:{self.port}{path}"

    def http_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def posted(self) -> list[Any]:
        """The JSON bodies of the POST requests so far."""
        with self._lock:
            return [r.json() for r in self.requests if r.method == "POST"]


def free_port() -> int:
    """A TCP port nobody listens on at this moment (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _MailHandler:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.envelopes.append(envelope)
        self.messages.append(message)
        return "250 OK"


class MailReceiver:
    """An SMTP server (aiosmtpd) on 127.0.0.1 that asks for the login ``user``/``password``
    (without TLS) and keeps each message."""

    def __init__(self, user: str = "mailer", password: str = "Mai1-Pa55word") -> None:
        self.user = user
        self.password = password
        self.handler = _MailHandler()
        self.port = free_port()

        def authenticate(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and data.login == user.encode()
                and data.password == password.encode()
            )
            return AuthResult(success=ok)

        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate,
            auth_require_tls=False,
        )

    def __enter__(self) -> MailReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        return self.handler.messages

    def mailto_url(self, to: str = "ops@example.com", password: str | None = None) -> str:
        """Apprise's URL of this server: plain SMTP with the login, from and to given."""
        secret = self.password if password is None else password
        return (
            f"mailto://{self.user}:{secret}@127.0.0.1:{self.port}"
            f"?smtp=127.0.0.1&mode=insecure&from=stackvault@example.com&to={to}"
        )

    def wait(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """The messages once there are ``count`` (Apprise returns after the server said 250,
        so they are normally there already)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.messages)
