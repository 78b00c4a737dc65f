"""Throwaway database servers in containers (stack layer): for the drill of a job whose
PostgreSQL or MySQL/MariaDB artifact was captured in a container, a server in a container of
that same image on this host's loopback at a free port (see `stackvault.stack.drill.source`);
the contract is `stackvault.stack.drill.throwaway.DrillServer`'s."""

from __future__ import annotations

import contextlib
import re
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING
from urllib.parse import quote

from stackvault.errors import SourceError
from stackvault.stack.drill.throwaway import START_TIMEOUT_S, free_port

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container


class ContainerServer(ABC):
    """A throwaway server in a container of the image the artifact was captured from (its own
    server programs, as the image's ``PATH`` finds them), on this host's network at a free
    port of 127.0.0.1, data in the container's own writable layer, labelled as the drill's;
    the restore runs the image's own tools inside it. The production container, when it
    still exists, lends its user, ``PATH`` and read-only bind mounts (an image that brings
    its server programs through them), never anything it writes."""

    family: str
    user: str
    """The user the server runs as unless the production container names one."""
    version_pattern: str
    """Finds the version in the log (the script prints the server's ``--version``)."""

    @abstractmethod
    def script(self) -> str:
        """The container's ``sh -c`` script: make the data, then ``exec`` the server."""

    @abstractmethod
    def ready(self) -> list[str]:
        """A command in the container that exits 0 once the server takes clients."""

    @abstractmethod
    def url(self, database: str | None = None) -> str:
        """The restore target, in the container, as its superuser."""

    def __init__(
        self,
        client: DockerClient,
        image: str,
        name: str,
        labels: dict[str, str],
        production: str | None = None,
    ) -> None:
        self.client, self.image, self.name, self.labels = client, image, name, labels
        self.production = production
        self.port = 0
        self.version = ""
        self._container: Container | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def describe(self) -> str:
        return f"{self.family} {self.version} container of {self.image} on {self.address}"

    def start(self) -> None:
        """Create and start the container; return once the server answers."""
        import docker.errors

        user, env = self.user, {"LC_ALL": "C"}
        binds: dict[str, dict[str, str]] = {}
        if self.production is not None:
            user, env, binds = self._lent(self.production, user, env)
        self.port = free_port()
        try:
            self._container = self.client.containers.run(
                self.image,
                entrypoint=["sh", "-c", "set -e; mkdir -p /tmp/stackvault-drill; " + self.script()],
                name=self.name,
                detach=True,
                network_mode="host",
                user=user,
                environment=env,
                volumes=binds,
                labels=self.labels,
            )
        except docker.errors.DockerException as exc:
            raise SourceError(
                f"the throwaway {self.family} container of {self.image} did not start: {exc}"
            ) from exc
        self._wait()

    def _lent(
        self, production: str, user: str, env: dict[str, str]
    ) -> tuple[str, dict[str, str], dict[str, dict[str, str]]]:
        """What the production container lends: its user, ``PATH``, read-only binds."""
        import docker.errors

        try:
            attrs = self.client.containers.get(production).attrs
        except docker.errors.DockerException:
            return user, env, {}
        config = attrs.get("Config") or {}
        for item in config.get("Env") or []:
            key, _, value = str(item).partition("=")
            if key == "PATH":
                env["PATH"] = value
        binds = {
            str(m["Source"]): {"bind": str(m["Destination"]), "mode": "ro"}
            for m in attrs.get("Mounts") or []
            if m.get("Type") == "bind" and not m.get("RW")
        }
        return str(config.get("User") or user), env, binds

    def _wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self._container is not None
        while time.monotonic() < deadline:
            self._container.reload()
            if self._container.status in ("exited", "dead"):
                raise SourceError(
                    f"the throwaway {self.family} container of {self.image} exited: "
                    + self.log_tail()
                )
            code, _out = self._container.exec_run(self.ready())
            if code == 0:
                found = re.search(self.version_pattern, self.log_tail(2000))
                self.version = found.group(1) if found else ""
                return
            time.sleep(0.3)
        raise SourceError(
            f"the throwaway {self.family} container of {self.image} did not answer within "
            f"{START_TIMEOUT_S:.0f} s: {self.log_tail()}"
        )

    def log_tail(self, size: int = 400) -> str:
        if self._container is None:
            return "no log"
        try:
            text = self._container.logs().decode("utf-8", "replace")
        except Exception:  # the engine's errors: the log is only for the message
            return "no log"
        return " / ".join(text[-size:].strip().splitlines()) or "no output"

    @property
    def running(self) -> bool:
        if self._container is None:
            return False
        try:
            self._container.reload()
        except Exception:  # gone: not running
            return False
        return self._container.status == "running"

    def stop(self) -> None:
        """Remove the container (and its data) at once; never raises."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)


class PostgresContainerServer(ContainerServer):
    """A PostgreSQL cluster (``initdb`` with trust authentication; socket in ``/tmp``)."""

    family = "PostgreSQL"
    user = "postgres"
    version_pattern = r"\(PostgreSQL\) (\S+)"

    def script(self) -> str:
        return (
            "D=/tmp/stackvault-drill/data; postgres --version; initdb -D $D -U postgres "
            "--auth=trust -E UTF8 --locale=C --no-sync >/dev/null; "
            f"exec postgres -D $D -p {self.port} -k /tmp -c listen_addresses=127.0.0.1"
        )

    def ready(self) -> list[str]:
        return ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]

    def url(self, database: str | None = None) -> str:
        path = quote(database or "", safe="")
        return (
            f"postgres+docker://postgres@{self.name}:{self.port}/{path}"
            "?socket=/tmp&password_from=none"
        )


class MySQLContainerServer(ContainerServer):
    """A MariaDB server (``mariadb-install-db``, ``root@localhost`` without a password: only
    this host's loopback reaches it) or, in an image of Oracle's MySQL, ``mysqld
    --initialize-insecure``; ``--no-defaults``, socket in the container's ``/tmp``."""

    family = "MySQL"
    user = "mysql"
    version_pattern = r"Ver (\S+)"
    SOCKET = "/tmp/stackvault-drill/mysqld.sock"

    def script(self) -> str:
        common = (
            f"--datadir=$D --socket={self.SOCKET} --port={self.port} "
            "--bind-address=127.0.0.1 --skip-networking=0 --tmpdir=/tmp"
        )
        return (
            "D=/tmp/stackvault-drill/data; "
            "if command -v mariadbd >/dev/null 2>&1; then "
            "mariadbd --version; mariadb-install-db --no-defaults --datadir=$D --skip-test-db "
            "--auth-root-authentication-method=normal >/dev/null; "
            f"exec mariadbd --no-defaults {common}; fi; "
            "mysqld --version; mysqld --no-defaults --initialize-insecure --datadir=$D "
            f">/dev/null 2>&1; exec mysqld --no-defaults {common}"
        )

    def ready(self) -> list[str]:
        admin = "A=mariadb-admin; command -v $A >/dev/null 2>&1 || A=mysqladmin; "
        return ["sh", "-c", f"{admin}exec $A --no-defaults --socket={self.SOCKET} -uroot ping"]

    def url(self, database: str | None = None) -> str:
        path = quote(database or "", safe="")
        return (
            f"mysql+docker://root@{self.name}:{self.port}/{path}"
            f"?socket={self.SOCKET}&password_from=none"
        )
