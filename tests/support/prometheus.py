"""A real Prometheus for tests (Debian's ``prometheus`` package, installed by
scripts/install-test-deps.sh): started on a free port of 127.0.0.1 with its storage in a
temporary directory, queried through its HTTP API, stopped at the end.

A missing binary fails the test (never a skip): the suite's dependencies include it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
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
def running_prometheus(workdir: Path, config: str) -> Iterator[Prometheus]:
    """Prometheus with the configuration text ``config`` (written to WORKDIR/prometheus.yml;
    relative rule files are read from WORKDIR), its data in WORKDIR/data, on a free port of
    127.0.0.1; ready when yielded, stopped (SIGTERM, then SIGKILL) after."""
    binary = require_binary("prometheus")
    (workdir / "prometheus.yml").write_text(config)
    port = free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, ConnectionError):
                return False

        prom.wait_for("readiness", ready)
        yield prom
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
