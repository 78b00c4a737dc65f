"""A real Prometheus and Alertmanager for tests (Debian's ``prometheus`` and
``prometheus-alertmanager`` packages, installed by scripts/install-test-deps.sh): each started
on a free port of 127.0.0.1 with its storage in a temporary directory, stopped at the end;
Prometheus queried through its HTTP API; a webhook receiver that keeps what Alertmanager
posts.

A missing binary fails the test (never a skip): the suite's dependencies include it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def require_binary(name: str) -> str:
    """The path of the program ``name``; fails the test when it is not installed."""
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed: run scripts/install-test-deps.sh as root"
    return path


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (free when asked)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Prometheus:
    """A running Prometheus at `url`."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/PATH`` with ``params``; the decoded JSON (also of an error answer,
        whose HTTP status is then in ``_status``)."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                doc: Any = json.loads(r.read())
                doc["_status"] = r.status
                return doc
        except urllib.error.HTTPError as exc:
            doc = json.loads(exc.read())
            doc["_status"] = exc.code
            return doc

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now: ``[{"metric": {...}, "value": [t, "v"]}]``."""
        doc = self.api("query", query=expr)
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def wait_for(self, what: str, probe: Callable[[], Any], timeout_s: float = 20.0) -> Any:
        """Call ``probe`` every 0.25 s until it returns something true; fail after
        ``timeout_s`` naming ``what`` (with the tail of Prometheus's log)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = probe()
            if got:
                return got
            if time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise AssertionError(f"Prometheus: no {what} after {timeout_s} s; log:\n{tail}")
            time.sleep(0.25)


@contextmanager
def _process(argv: list[str], workdir: Path, log: Path, ready_url: str) -> Iterator[None]:
    """Run ``argv`` in ``workdir`` (output to ``log``) until ``ready_url`` answers 200;
    SIGTERM (then SIGKILL) at the end."""
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            tail = log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, f"{argv[0]} not ready after 20 s:\n{tail}"
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_prometheus(workdir: Path, config: str) -> Iterator[Prometheus]:
    """Prometheus with the configuration text ``config`` (written to WORKDIR/prometheus.yml;
    relative rule files are read from WORKDIR), its data in WORKDIR/data, on a free port of
    127.0.0.1; ready when yielded, stopped (SIGTERM, then SIGKILL) after."""
    binary = require_binary("prometheus")
    (workdir / "prometheus.yml").write_text(config)
    port = free_port()
    argv = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{port}"
    log = workdir / "prometheus.log"
    with _process(argv, workdir, log, f"{url}/-/ready"):
        yield Prometheus(url, log)


@contextmanager
def running_alertmanager(workdir: Path, webhook_url: str) -> Iterator[str]:
    """Alertmanager on a free port of 127.0.0.1 (no cluster), sending every alert at once
    (no group wait) to ``webhook_url``; yields ``HOST:PORT`` for Prometheus's
    ``alerting.alertmanagers``."""
    binary = require_binary("prometheus-alertmanager")
    config = {
        "route": {
            "receiver": "test",
            "group_by": ["alertname", "job"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "test", "webhook_configs": [{"url": webhook_url}]}],
    }
    path = workdir / "alertmanager.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    argv = [
        binary,
        f"--config.file={path}",
        f"--storage.path={workdir / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    log = workdir / "alertmanager.log"
    with _process(argv, workdir, log, f"http://127.0.0.1:{port}/-/ready"):
        yield f"127.0.0.1:{port}"


class Webhook:
    """What was posted to the receiver: each body's JSON, in order (Alertmanager's webhook
    payload: ``{"status": ..., "alerts": [{"status", "labels", "annotations", ...}]}``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every post so far."""
        with self.lock:
            return [a for post in self.posts for a in post.get("alerts", [])]


@contextmanager
def webhook_receiver() -> Iterator[Webhook]:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it (answering 200)."""
    hook: Webhook

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with hook.lock:
                hook.posts.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook = Webhook(f"http://127.0.0.1:{server.server_address[1]}/alerts")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
