"""The metrics endpoint of ``serve --metrics-listen`` (ops layer): a small threaded HTTP
server answering ``GET /metrics`` (the registry in the exposition format, written by
prometheus-client's `generate_latest`) and ``GET /healthz`` (``200 ok``).

It runs on its own threads and only reads the registry (the collector takes the metrics'
lock), so a scrape never waits for a run and a run never waits for a scrape longer than it
takes to copy the figures.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stackvault.errors import UsageError

DEFAULT_LISTEN = "127.0.0.1:9598"


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (every interface) → (host, port); port 0
    asks for a free port. `UsageError` otherwise."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(
            f"metrics address {listen!r} is not HOST:PORT",
            hint=f"e.g. {DEFAULT_LISTEN}, [::1]:9598, or :9598 for every interface",
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = generate_latest(self.server.registry)
            except Exception as exc:  # a collector's bug must not end the endpoint
                self._send(500, f"error collecting metrics: {type(exc).__name__}\n".encode())
                return
            self._send(200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        else:
            self._send(404, b"not found: try /metrics or /healthz\n")

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """No access log: the daemon's stderr is its event log."""


class MetricsServer:
    """The endpoint, serving ``registry`` on ``listen`` from a background thread until
    `stop`. Raises `UsageError` for a malformed address and `OSError` when it cannot bind
    (the caller names the option)."""

    def __init__(self, registry: CollectorRegistry, listen: str = DEFAULT_LISTEN) -> None:
        host, port = parse_listen(listen)
        server_class = type(
            "_BoundServer",
            (_Server,),
            {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET},
        )
        self._server: _Server = server_class((host, port), _Handler)
        self._server.registry = registry
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stackvault-metrics", daemon=True
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when ``listen`` asked for port 0)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and close the socket; returns once the serving thread ended."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
