"""A real, private Docker engine for tests (Debian's ``dockerd`` from ``docker.io``).

``DockerEngine().start()`` runs its own ``dockerd`` in a short directory
``D = /tmp/svd-XXXXXXXX`` (unix socket paths must stay under ~100 bytes)::

    dockerd --config-file D/daemon.json --iptables=false --ip-masq=false --bridge=none
            --storage-driver=overlay2 --data-root D/root --exec-root D/exec
            --pidfile D/docker.pid -H unix://D/docker.sock

so it shares nothing with a system engine or another test engine: ``D/daemon.json`` is ``{}``
(``/etc/docker/daemon.json`` is not read), no ``docker0`` bridge, no iptables rules, its own
``containerd`` (under ``D/exec``), images and volumes under ``D/root``. It waits for ``/_ping``
(about 0.2-2 s; `RuntimeError` with the log tail after ``start_timeout`` = 60 s). ``stop()``
force-removes every container, stops dockerd (SIGTERM, SIGKILL after 15 s), lazily unmounts
whatever is still mounted below ``D`` (dockerd bind-mounts ``D/root`` onto itself, overlay
layers may linger) and deletes ``D``.

Rules for everything run in it: registries are not reachable, so nothing is ever pulled (the
only image is `build_host_image`'s, made with ``docker import``); every container uses host
networking (`run_service_container`), servers listen on 127.0.0.1 only.

`build_host_image` makes a skeleton root file system whose containers bind-mount the host's
``/usr`` and ``/etc`` read-only (`HOST_BINDS`): the host's own binaries (PostgreSQL 15,
mariadbd, redis-server, sh, tar, sha256sum, ...) then run inside real containers, and users
resolve through the host's ``/etc/passwd``. Give users numerically (``user="101:104"``):
the engine looks a user name up in the image's ``/etc/passwd`` *before* the mounts exist.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .dbservers import ServerProcess, find_binary
from .servermarks import require_server

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

HOST_IMAGE = "stackvault-test/hostbins:1"
TEST_LABEL = "org.stackvault.test"
STOP_GRACE_SECONDS = 15.0
API_TIMEOUT = 120
# The host's /usr and /etc, read-only, in every container made from the host image.
HOST_BINDS: dict[str, dict[str, str]] = {
    "/usr": {"bind": "/usr", "mode": "ro"},
    "/etc": {"bind": "/etc", "mode": "ro"},
}
_IMAGE_MTIME = 1_700_000_000  # fixed, so the same skeleton always gets the same image id
_SKELETON_DIRS: list[tuple[str, int]] = [
    ("usr", 0o755),
    ("etc", 0o755),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("run/postgresql", 0o1777),
    ("run/mysqld", 0o1777),
    ("run/redis", 0o1777),
    ("var", 0o755),
    ("var/lib", 0o755),
    ("var/tmp", 0o1777),
    ("data", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("root", 0o700),
]
# Debian's merged-/usr links; /var/run -> /run as on the host, so /var/run/mysqld is also the
# /run/mysqld/mysqld.sock that the host's /etc/mysql/my.cnf names for every client.
_SKELETON_LINKS: list[tuple[str, str]] = [
    ("bin", "usr/bin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
    ("sbin", "usr/sbin"),
    ("var/run", "../run"),
]
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerEngine:
    """A private ``dockerd`` (see the module docstring). Use as a context manager or call
    `start` / `stop`."""

    def __init__(self, *, start_timeout: float = 60.0, dockerd: Path | None = None) -> None:
        self.start_timeout = start_timeout
        self._dockerd = dockerd
        self.startup_seconds: float | None = None
        """Seconds from spawning dockerd until ``/_ping`` answered."""
        self._directory: Path | None = None
        self._process: ServerProcess | None = None
        self._clients: list[DockerClient] = []

    # -- information ---------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """``D``: data root, exec root, socket and log (deleted by `stop`)."""
        if self._directory is None:
            raise RuntimeError("the Docker engine has not been started")
        return self._directory

    @property
    def socket_path(self) -> Path:
        return self.directory / "docker.sock"

    @property
    def host(self) -> str:
        """``unix:///tmp/svd-.../docker.sock`` (a ``DOCKER_HOST`` value)."""
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.directory / "dockerd.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def env(self) -> dict[str, str]:
        """``{"DOCKER_HOST": host}`` for the docker CLI and ``docker.from_env()``."""
        return {"DOCKER_HOST": self.host}

    def client(self, timeout: int = API_TIMEOUT) -> DockerClient:
        """A new ``docker.DockerClient`` for this engine (closed by `stop`)."""
        import docker

        client = docker.DockerClient(base_url=self.host, timeout=timeout)
        self._clients.append(client)
        return client

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the dockerd log (for error messages)."""
        if self._process is None:
            return "(the Docker engine has not been started)"
        return self._process.log_tail(lines)

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> DockerEngine:
        """Start dockerd and wait for ``/_ping``; `RuntimeError` with the log tail if it exits
        or does not answer within ``start_timeout`` seconds."""
        require_server("docker", "the test Docker engine")
        if self._directory is not None:
            raise RuntimeError("the Docker engine is already running")
        dockerd = self._dockerd or find_binary("dockerd", "/usr/sbin/dockerd")
        d = self._directory = Path(tempfile.mkdtemp(prefix="svd-", dir="/tmp"))
        self._process = ServerProcess("dockerd", d / "dockerd.log")
        atexit.register(self.stop)
        try:
            (d / "daemon.json").write_text("{}\n")
            args = [
                str(dockerd),
                f"--config-file={d / 'daemon.json'}",
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--storage-driver=overlay2",
                f"--data-root={d / 'root'}",
                f"--exec-root={d / 'exec'}",
                f"--pidfile={d / 'docker.pid'}",
                "-H",
                self.host,
            ]
            env = {
                "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": str(d),
                "TMPDIR": str(d),
            }
            started = time.monotonic()
            self._process.start(args, env=env, cwd=d)
            self._wait_until_ready(started + self.start_timeout)
            self.startup_seconds = time.monotonic() - started
            return self
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Force-remove all containers, stop dockerd, unmount what is left below the directory
        and delete it. Idempotent; never raises for a half-started engine."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        directory, self._directory = self._directory, None
        if process is None or directory is None:
            return
        try:
            if process.running:
                self._remove_all_containers(directory)
        finally:
            for client in self._clients:
                try:
                    client.close()
                except Exception:
                    pass
            self._clients.clear()
            try:
                process.stop(grace=STOP_GRACE_SECONDS)
            finally:
                _unmount_below(directory)
                shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> DockerEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------

    def _wait_until_ready(self, deadline: float) -> None:
        process = self._process
        assert process is not None
        last_error = "none yet"
        while True:
            status = process.exit_status()
            if status is not None:
                raise RuntimeError(
                    f"dockerd exited with status {status} before /_ping answered; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                if _ping(self.socket_path) == "OK":
                    return
                last_error = "/_ping did not answer OK"
            except OSError as exc:
                last_error = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"dockerd did not answer /_ping within {self.start_timeout:.0f} s "
                    f"(last error: {last_error}); log tail:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _remove_all_containers(self, directory: Path) -> None:
        import docker
        import docker.errors

        client = docker.DockerClient(base_url=f"unix://{directory / 'docker.sock'}", timeout=60)
        try:
            for container in client.containers.list(all=True):
                try:
                    container.remove(force=True, v=True)
                except docker.errors.APIError:
                    pass
        except docker.errors.DockerException:
            pass
        finally:
            client.close()


def _ping(socket_path: Path) -> str:
    """``GET /_ping`` over the unix socket; the body (``OK``)."""
    import http.client
    import socket

    class _UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2)
            sock.connect(str(socket_path))
            self.sock = sock

    conn = _UnixConnection("localhost", timeout=2)
    try:
        conn.request("GET", "/_ping")
        response = conn.getresponse()
        return response.read().decode(errors="replace").strip()
    finally:
        conn.close()


def _mounts_below(directory: Path) -> list[str]:
    """Mount points at or below ``directory`` (from /proc/self/mounts), deepest first."""
    prefix = str(directory).rstrip("/")
    found: list[str] = []
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 2:
            continue
        # /proc/self/mounts escapes space, tab, newline and backslash as octal.
        point = fields[1].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def _unmount_below(directory: Path) -> None:
    """``umount -l`` everything mounted at or below ``directory`` (best effort)."""
    for _round in range(3):
        points = _mounts_below(directory)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)


# -- images and containers -----------------------------------------------------------------


def _skeleton_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in _SKELETON_DIRS:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, _IMAGE_MTIME
            tar.addfile(info)
        for name, target in _SKELETON_LINKS:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, _IMAGE_MTIME
            info.mode = 0o777
            tar.addfile(info)
    return buf.getvalue()


def build_host_image(client: DockerClient, tag: str = HOST_IMAGE) -> str:
    """Make (``docker import`` of an in-memory tar) the skeleton image ``tag`` unless it is
    there already; return ``tag``. Contents: ``usr etc`` (mount points for `HOST_BINDS`),
    ``tmp var/tmp`` (1777), ``run/{postgresql,mysqld,redis}`` (1777), ``var/lib data proc sys
    dev root``, links ``bin sbin lib lib64`` -> ``usr/...`` and ``var/run`` -> ``../run``; its
    ``PATH`` is Debian's default. Nothing is pulled."""
    import docker.errors

    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    repository, _, version = tag.rpartition(":")
    if not repository or "/" in version:
        repository, version = tag, "latest"
    client.api.import_image_from_data(
        _skeleton_tar(),
        repository=repository,
        tag=version,
        changes=[f"ENV PATH={CONTAINER_PATH}"],
    )
    client.images.get(tag)  # raises if the import did not produce it
    return tag


def run_service_container(
    client: DockerClient,
    image: str,
    name: str,
    command: Sequence[str],
    *,
    user: str,
    volumes: Mapping[str, Mapping[str, str]] | None = None,
    environment: Mapping[str, str] | None = None,
    healthcheck: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    stop_signal: str | None = None,
    host_binds: bool = True,
) -> Container:
    """Create and start a detached container ``name`` from ``image`` running ``command`` as
    ``user`` (numeric ``"UID:GID"``) with **host networking** (always: no bridge networks
    exist in a test engine). ``volumes`` is docker-py's mapping (``{"vol": {"bind": "/data",
    "mode": "rw,nocopy"}}``) and is added to `HOST_BINDS` unless ``host_binds`` is false.
    ``healthcheck`` is the Engine API's (``test``, ``interval`` ns, ...). The label
    `TEST_LABEL` is always set. Never pulls: a missing image is an error."""
    binds: dict[str, dict[str, str]] = dict(HOST_BINDS) if host_binds else {}
    binds.update({k: dict(v) for k, v in (volumes or {}).items()})
    return client.containers.run(
        image,
        list(command),
        name=name,
        user=user,
        detach=True,
        network_mode="host",
        volumes=binds,
        environment=dict(environment or {}),
        healthcheck=dict(healthcheck) if healthcheck else None,
        labels={TEST_LABEL: "1", **(labels or {})},
        stop_signal=stop_signal,
    )


def run_oneshot(
    client: DockerClient,
    image: str,
    command: Sequence[str],
    *,
    user: str,
    volumes: Mapping[str, Mapping[str, str]] | None = None,
    environment: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> str:
    """Run ``command`` to completion in a throw-away container (host networking, `HOST_BINDS`
    plus ``volumes``); return its output (stdout and stderr), or `RuntimeError` with it when it
    exits non-zero or runs longer than ``timeout``. The container is removed either way."""
    binds: dict[str, dict[str, str]] = dict(HOST_BINDS)
    binds.update({k: dict(v) for k, v in (volumes or {}).items()})
    container = client.containers.create(
        image,
        list(command),
        user=user,
        network_mode="host",
        volumes=binds,
        environment=dict(environment or {}),
        labels={TEST_LABEL: "1"},
    )
    try:
        container.start()
        try:
            status = int(container.wait(timeout=timeout)["StatusCode"])
        except Exception as exc:  # requests' ReadTimeout and friends
            raise RuntimeError(f"{command[0]} did not finish within {timeout:.0f} s") from exc
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        if status != 0:
            raise RuntimeError(
                f"{' '.join(command)[:200]} exited with status {status} in a container as "
                f"{user}; output:\n{output[-4000:]}"
            )
        return output
    finally:
        container.remove(force=True)
