"""PostgreSQL, MariaDB and Redis inside real containers of a test `DockerEngine`.

The containers come from `build_host_image` (a skeleton with the host's ``/usr`` and ``/etc``
bind-mounted read-only), so they run the host's Debian binaries, yet code under test reaches
them only the way it reaches any container: through the Engine API (``docker exec``), with the
credentials in the container's own environment, as the official images have them. Each one:

- runs as the host's service user, numerically (``postgres``, ``mysql``, ``redis``: the engine
  resolves a user *name* in the image before ``/etc`` is mounted);
- keeps its data in a **named volume** mounted at ``/data`` (``nocopy``: a fresh volume would
  otherwise get the image's root-owned ``/data`` copied over the ``chown`` below at every
  mount while it is still empty); a one-shot root container first chowns the volume,
  a one-shot container as the service user initialises it;
- uses host networking and listens on 127.0.0.1 only, on a free port (`port`) - so the port is
  *not* the default one, and the environment tells client tools in the container where to go;
- has a health check (every second) that `wait_healthy` waits for.

Life cycle: `start` creates everything and waits until healthy (`RuntimeError` with the
container log otherwise); after `stop` (a graceful stop: container and volume stay), `start`
starts the same container again. `remove` force-removes the container and the volume; it is
idempotent. Exec helpers (`PostgresContainer.psql`, `MariaDBContainer.sql`,
`RedisContainer.cli`, `ServiceContainer.exec`) raise `CommandError` on failure.

Notes: exec'd processes get the container's environment (``PATH`` with
``/usr/lib/postgresql/15/bin`` first, so ``pg_dump`` is the real binary and not Debian's
``pg_wrapper`` script; ``PGPORT``), no shell profile, and ``HOME`` from the host's passwd entry
(``/var/lib/postgresql``, which does not exist in the container: harmless for the tools used).
``/var/run`` is a link to ``/run`` in the image, as on Debian, so the socket that the host's
``/etc/mysql/my.cnf`` names for every client, ``/run/mysqld/mysqld.sock``, is the server's.
The project's own ``ContainerRunner`` (``sh``, ``mkfifo``, ``tee``, ``sha256sum``, ``mktemp``
in ``/tmp``) works in these containers.

Measured here (2 shared cores): from `start` to healthy about 2 s for PostgreSQL (initdb
~0.8 s) and MariaDB, 1.4 s for Redis - the first health check runs one interval (1 s) after
the start; a `stop` takes ~0.1 s, a restart ~1.2 s.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .dbservers import (
    CommandError,
    find_binary,
    free_port,
    mariadb_init_sql,
    pg_bindir,
    service_user,
)
from .dockerd import CONTAINER_PATH, HOST_IMAGE, TEST_LABEL, run_oneshot, run_service_container
from .servermarks import require_server

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

_SECOND = 1_000_000_000  # the Engine API counts health-check durations in nanoseconds
DATA = "/data"


class _PortClashError(Exception):
    pass


def healthcheck(test: Sequence[str], *, interval: float = 1.0) -> dict[str, Any]:
    """An Engine API health check: ``test`` (``["CMD", ...]`` or ``["CMD-SHELL", "..."]``)
    every ``interval`` seconds, 5 s timeout, unhealthy after 3 failures past a 60 s grace."""
    return {
        "test": list(test),
        "interval": int(interval * _SECOND),
        "timeout": 5 * _SECOND,
        "retries": 3,
        "start_period": 60 * _SECOND,
    }


class ServiceContainer:
    """A server in a container with its data in a named volume (see the module docstring).
    Subclasses say how to initialise the volume and what to run."""

    kind = "service"
    short = "svc"
    service_user = "root"

    def __init__(
        self,
        client: DockerClient,
        image: str = HOST_IMAGE,
        *,
        name: str | None = None,
        volume: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        suffix = secrets.token_hex(4)
        self.client = client
        self.image = image
        self.name = name or f"svt-{self.short}-{suffix}"
        """The container's name."""
        self.volume = volume or f"svt-{self.short}-data-{suffix}"
        """The named volume mounted at ``/data``."""
        self.start_timeout = start_timeout
        uid, gid = service_user(self.service_user)
        self.user = f"{uid}:{gid}"
        """The numeric ``UID:GID`` the server runs as (and execs default to)."""
        self.startup_seconds: float | None = None
        self._port: int | None = None
        self._container: Container | None = None

    # -- information ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The server's TCP port on 127.0.0.1 (host networking)."""
        if self._port is None:
            raise RuntimeError(f"the {self.kind} container has not been started")
        return self._port

    @property
    def container(self) -> Container:
        """The docker-py ``Container``."""
        if self._container is None:
            raise RuntimeError(f"the {self.kind} container has not been started")
        return self._container

    def health(self) -> str:
        """``starting``, ``healthy``, ``unhealthy``, or the state when it is not running."""
        container = self.container
        container.reload()
        state = container.attrs.get("State", {})
        if not state.get("Running"):
            return str(state.get("Status", "unknown"))
        return str((state.get("Health") or {}).get("Status", "none"))

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the container's output (for error messages)."""
        if self._container is None:
            return f"(the {self.kind} container has not been created)"
        try:
            raw = self._container.logs(stdout=True, stderr=True, tail=lines)
        except Exception as exc:
            return f"(no log of {self.name}: {exc})"
        data = raw if isinstance(raw, bytes) else b"".join(raw)
        return data.decode(errors="replace").rstrip("\n")

    # -- exec ----------------------------------------------------------------------------

    def exec(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> str:
        """``docker exec`` ``argv`` (as the container's user unless ``user``, e.g. ``"0:0"``)
        with ``environment`` added to the container's; stdout, or `CommandError` with the exit
        status and stderr."""
        result = self.container.exec_run(
            list(argv),
            user=user or "",
            environment=dict(environment) if environment else None,
            demux=True,
        )
        out: Any
        err: Any
        out, err = result.output if isinstance(result.output, tuple) else (result.output, None)
        stdout = bytes(out or b"").decode(errors="replace")
        if result.exit_code != 0:
            stderr = bytes(err or b"").decode(errors="replace").strip()
            raise CommandError(
                f"{argv[0]} exited with status {result.exit_code} in container {self.name}: "
                f"{(stderr or stdout).strip()[-2000:]}"
            )
        return stdout

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> ServiceContainer:
        """First call: create the volume, initialise it, run the server, wait until healthy.
        After `stop`: start the container again and wait until healthy."""
        require_server(self.kind, f"a {self.kind} container")
        if self._container is not None:
            self._container.start()
            self.wait_healthy()
            return self
        started = time.monotonic()
        import docker.errors

        try:
            self.client.volumes.create(name=self.volume, labels={TEST_LABEL: "1"})
            self._oneshot(["chown", self.user, DATA], user="0:0")
            self._initialise()
            for _attempt in range(3):
                self._port = free_port()
                self._container = run_service_container(
                    self.client,
                    self.image,
                    self.name,
                    self._command(),
                    user=self.user,
                    volumes=self._volumes(),
                    environment=self.environment(),
                    healthcheck=self._healthcheck(),
                    stop_signal=self._stop_signal(),
                )
                try:
                    self.wait_healthy()
                except _PortClashError:
                    self._container.remove(force=True)
                    self._container = None
                    continue
                self.startup_seconds = time.monotonic() - started
                return self
            raise RuntimeError(f"the {self.kind} container could not bind a port in 3 attempts")
        except docker.errors.DockerException as exc:
            tail = self.log_tail()
            self.remove()
            raise RuntimeError(
                f"starting the {self.kind} container failed: {exc}; log tail:\n{tail}"
            ) from exc
        except BaseException:
            self.remove()
            raise

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Poll until the health check passes; `RuntimeError` with the container log when the
        container stops, turns unhealthy or is not healthy within ``timeout`` seconds (default
        ``start_timeout``)."""
        limit = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        container = self.container
        while True:
            container.reload()
            state = container.attrs.get("State", {})
            if not state.get("Running"):
                tail = self.log_tail()
                if "already in use" in tail.lower():
                    raise _PortClashError
                raise RuntimeError(
                    f"the {self.kind} container {self.name} stopped (status "
                    f"{state.get('ExitCode')}) before it was healthy; log tail:\n{tail}"
                )
            health = state.get("Health") or {}
            status = health.get("Status")
            if status == "healthy":
                return
            if status == "unhealthy" or time.monotonic() > deadline:
                probes = [str(p.get("Output", "")).strip() for p in health.get("Log") or []]
                raise RuntimeError(
                    f"the {self.kind} container {self.name} is {status} after {limit:.0f} s "
                    f"(last health-check output: {probes[-1:]}); log tail:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: int = 20) -> None:
        """Stop the server gracefully (its stop signal, SIGKILL after ``timeout`` s); the
        container and the volume stay, `start` starts it again."""
        if self._container is not None:
            self._container.stop(timeout=timeout)

    def remove(self) -> None:
        """Force-remove the container and the volume (idempotent, best effort)."""
        import docker.errors

        container, self._container = self._container, None
        try:
            if container is None:
                container = self.client.containers.get(self.name)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException:
            pass
        try:
            self.client.volumes.get(self.volume).remove(force=True)
        except docker.errors.DockerException:
            pass

    def __enter__(self) -> ServiceContainer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- for subclasses ------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """The service container's environment."""
        return {"PATH": CONTAINER_PATH}

    def _volumes(self) -> dict[str, dict[str, str]]:
        return {self.volume: {"bind": DATA, "mode": "rw,nocopy"}}

    def _oneshot(
        self,
        command: Sequence[str],
        *,
        user: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> str:
        return run_oneshot(
            self.client,
            self.image,
            command,
            user=user or self.user,
            volumes=self._volumes(),
            environment={"PATH": CONTAINER_PATH, **(environment or {})},
        )

    def _initialise(self) -> None:
        """Initialise the (chowned, empty) volume."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _healthcheck(self) -> dict[str, Any]:
        raise NotImplementedError

    def _stop_signal(self) -> str | None:
        return None


class PostgresContainer(ServiceContainer):
    """PostgreSQL 15 as the host's ``postgres`` uid, cluster in ``/data/pg`` (``PGDATA``),
    socket in ``/var/run/postgresql``, TCP on 127.0.0.1:`port`; ``--auth-local=trust
    --auth-host=scram-sha-256``, superuser ``postgres`` with the random `password`.

    Environment (official image conventions plus what finds the server): ``POSTGRES_USER=
    postgres``, ``POSTGRES_PASSWORD``, ``POSTGRES_DB=postgres``, ``PGDATA=/data/pg``,
    ``PGPORT=port`` (so ``psql``/``pg_dump`` in the container need no ``-p``), ``PATH``
    starting with ``/usr/lib/postgresql/15/bin``. Stop signal SIGINT (fast shutdown)."""

    kind = "PostgreSQL"
    short = "pg"
    service_user = "postgres"
    pgdata = f"{DATA}/pg"
    socket_dir = "/var/run/postgresql"

    def __init__(self, client: DockerClient, image: str = HOST_IMAGE, **kw: Any) -> None:
        super().__init__(client, image, **kw)
        self.bindir = pg_bindir()
        self.password = secrets.token_hex(16)
        self.superuser = "postgres"

    def environment(self) -> dict[str, str]:
        env = {
            "POSTGRES_USER": self.superuser,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_DB": "postgres",
            "PGDATA": self.pgdata,
            "PATH": f"{self.bindir}:{CONTAINER_PATH}",
            "LC_ALL": "C",
        }
        if self._port is not None:
            env["PGPORT"] = str(self._port)
        return env

    def psql(self, sql: str, db: str = "postgres") -> str:
        """``sql`` (one or more statements) through ``psql -X -q -A -t -v ON_ERROR_STOP=1`` in
        the container, over the unix socket as ``postgres``; stdout without the final newline
        (rows as ``a|b``)."""
        script = (
            'printf "%s\\n" "$SVT_SQL" | psql -X -q -A -t -v ON_ERROR_STOP=1 '
            '-U "$POSTGRES_USER" -d "$SVT_DB" -f -'
        )
        out = self.exec(["sh", "-c", script], environment={"SVT_SQL": sql, "SVT_DB": db})
        return out.rstrip("\n")

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name``; returns ``name``."""
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def _initialise(self) -> None:
        script = (
            'umask 077; printf "%s\\n" "$POSTGRES_PASSWORD" > /tmp/pwfile && '
            'exec initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile '
            "--auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync"
        )
        self._oneshot(["sh", "-c", script], environment=self.environment())

    def _command(self) -> list[str]:
        return [
            str(self.bindir / "postgres"),
            "-D",
            self.pgdata,
            "-p",
            str(self.port),
            "-k",
            self.socket_dir,
            "-c",
            "listen_addresses=127.0.0.1",
        ]

    def _healthcheck(self) -> dict[str, Any]:
        isready = str(self.bindir / "pg_isready")
        return healthcheck(["CMD", isready, "-q", "-h", "127.0.0.1", "-p", str(self.port)])

    def _stop_signal(self) -> str | None:
        return "SIGINT"


class MariaDBContainer(ServiceContainer):
    """MariaDB as the host's ``mysql`` uid, data in ``/data/db``, socket
    ``/var/run/mysqld/mysqld.sock`` (= ``/run/mysqld/mysqld.sock``, the host's my.cnf default),
    TCP on 127.0.0.1:`port`, ``--no-defaults``, utf8mb4. ``root@localhost`` has the random
    `password`, set from ``MARIADB_ROOT_PASSWORD`` by an ``--init-file`` at every start.

    Environment: ``MARIADB_ROOT_PASSWORD`` and ``MYSQL_ROOT_PASSWORD`` (same value),
    ``MYSQL_TCP_PORT=port``, ``PATH``."""

    kind = "MariaDB"
    short = "mariadb"
    service_user = "mysql"
    datadir = f"{DATA}/db"
    socket = "/var/run/mysqld/mysqld.sock"

    def __init__(self, client: DockerClient, image: str = HOST_IMAGE, **kw: Any) -> None:
        super().__init__(client, image, **kw)
        self.mariadbd = find_binary("mariadbd", "/usr/sbin/mariadbd")
        self.password = secrets.token_hex(16)
        mariadb_init_sql(self.password)  # checks the password is safe in SQL

    def environment(self) -> dict[str, str]:
        env = {
            "MARIADB_ROOT_PASSWORD": self.password,
            "MYSQL_ROOT_PASSWORD": self.password,
            "PATH": CONTAINER_PATH,
        }
        if self._port is not None:
            env["MYSQL_TCP_PORT"] = str(self._port)
        return env

    def sql(self, sql: str, db: str | None = None) -> str:
        """``sql`` through ``mariadb --batch --skip-column-names`` in the container, over the
        socket as root with the password from the container's environment; stdout without
        the final newline (tab-separated rows)."""
        script = (
            'printf "%s\\n" "$SVT_SQL" | MYSQL_PWD="$MARIADB_ROOT_PASSWORD" mariadb '
            f"--no-defaults --socket={self.socket} -uroot --batch --skip-column-names "
            '${SVT_DB:+"$SVT_DB"}'
        )
        env = {"SVT_SQL": sql, "SVT_DB": db or ""}
        return self.exec(["sh", "-c", script], environment=env).rstrip("\n")

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name``; returns ``name``."""
        self.sql(f"CREATE DATABASE `{name}`")
        return name

    def _initialise(self) -> None:
        self._oneshot(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--skip-test-db",
            ]
        )

    def _command(self) -> list[str]:
        script = (
            "umask 077; printf \"ALTER USER root@localhost IDENTIFIED BY '%s';\\n\" "
            '"$MARIADB_ROOT_PASSWORD" > /tmp/init.sql && exec "$0" "$@"'
        )
        return [
            "sh",
            "-c",
            script,
            str(self.mariadbd),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            "--pid-file=/var/run/mysqld/mysqld.pid",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-networking=0",
            "--init-file=/tmp/init.sql",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ]

    def _healthcheck(self) -> dict[str, Any]:
        probe = (
            'MYSQL_PWD="$MARIADB_ROOT_PASSWORD" mariadb --no-defaults --protocol=tcp '
            f"-h127.0.0.1 -P{self.port} -uroot -e 'SELECT 1' >/dev/null"
        )
        return healthcheck(["CMD-SHELL", probe])


class RedisContainer(ServiceContainer):
    """Redis as the host's ``redis`` uid: ``redis-server --port PORT --bind 127.0.0.1 --dir
    /data`` (built-in save points, so ``dump.rdb`` lands in the volume), ``requirepass`` when a
    ``password`` is given (then also ``REDIS_PASSWORD`` and ``REDISCLI_AUTH`` in the
    environment, so ``redis-cli`` in the container authenticates by itself)."""

    kind = "Redis"
    short = "redis"
    service_user = "redis"

    def __init__(
        self,
        client: DockerClient,
        image: str = HOST_IMAGE,
        *,
        password: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(client, image, **kw)
        self.redis_server = find_binary("redis-server")
        self.password = password

    def environment(self) -> dict[str, str]:
        env = {"PATH": CONTAINER_PATH}
        if self.password:
            env.update(REDIS_PASSWORD=self.password, REDISCLI_AUTH=self.password)
        return env

    def cli(self, *args: str) -> str:
        """``redis-cli -e -h 127.0.0.1 -p PORT ARGS...`` in the container; stdout without the
        final newline; an error reply raises `CommandError`."""
        argv = ["redis-cli", "-e", "-h", "127.0.0.1", "-p", str(self.port), *args]
        return self.exec(argv).rstrip("\n")

    def _command(self) -> list[str]:
        argv = [str(self.redis_server), "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", DATA]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def _healthcheck(self) -> dict[str, Any]:
        probe = f'[ "$(redis-cli -h 127.0.0.1 -p {self.port} ping)" = PONG ]'
        return healthcheck(["CMD-SHELL", probe])
