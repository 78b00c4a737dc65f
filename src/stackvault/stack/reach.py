"""How each database server of a stack is reached in its container (stack layer).

Servers are not always started the way their images' defaults assume. Discovery reads, for
each database service, how its server was actually started and records in the plan how the
capture reaches it (`Reach`: ``port``, ``socket``, ``password_from`` - where the password is
read, by name, never its value - and ``found``, where this was read):

- **PostgreSQL**: the running server's own ``postmaster.pid`` in its data directory (``-D``,
  ``PGDATA``, else the official image's ``/var/lib/postgresql/data``), which names the port
  and the socket directory it listens on; when that cannot be read, its command line
  (``-p N``, ``-k DIR``, ``-c port=N``, ``-c unix_socket_directories=…``, ``--port=N``), then
  ``postgresql.conf`` (and ``postgresql.auto.conf``) in the data directory, then ``PGPORT``;
  the password from ``POSTGRES_PASSWORD`` when the container sets it, else from the file
  ``POSTGRES_PASSWORD_FILE`` names (``file:PATH``: a Docker secret or a mounted file, read in
  the container at each capture).
- **MySQL / MariaDB**: the server's command line (``--port``, ``-P``, ``--socket``, ``-S``),
  then its option files as ``my_print_defaults --mysqld`` reads them, then ``MYSQL_TCP_PORT``
  / ``MYSQL_UNIX_PORT``; the password from the root password variable (or the application
  user's), or the file its ``*_FILE`` variant names.
- **Redis**: its command line (``--port``, ``--requirepass``: ``arg``), then the
  configuration file it was started with (``port``, ``requirepass``: ``file:PATH``), then
  ``REDISCLI_AUTH`` / ``REDIS_PASSWORD`` in the container's environment.

`source_url` turns a source of the plan into the URL a backup, a preflight and a restore open,
with what the plan says (as discovered, or as the operator corrected it) - so all three reach
the server the same way.

Contract: discovery only reads (``cat`` and ``my_print_defaults`` in the container, through
the Engine API); a password found on the way is never kept, returned or printed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

from stackvault.errors import SourceError
from stackvault.records.plan import MYSQL, POSTGRES, REDIS, SourcePlan
from stackvault.sources.docker.cmdline import expand, option, program_args, setting, variable
from stackvault.sources.mysql.source import ROOT_PASSWORDS, password_in
from stackvault.sources.postgres.source import default_password_from
from stackvault.sources.redis.container import SERVERS as REDIS_SERVERS
from stackvault.sources.redis.container import config_path, parse_conf

if TYPE_CHECKING:
    from docker import DockerClient

    from stackvault.stack.compose import Service

_PG_DATA = "/var/lib/postgresql/data"
_PG_PROGRAMS = frozenset({"postgres", "postmaster"})
_MYSQL_PROGRAMS = frozenset({"mysqld", "mariadbd", "mysqld_safe", "mariadbd-safe"})
_CONNECTION_OPTIONS = ("socket", "password_from")


@dataclass(frozen=True)
class Reach:
    """How a database server in a container is reached (the plan's source fields)."""

    port: int | None = None
    socket: str | None = None
    """PostgreSQL: its socket directory; MySQL: its socket file; None: the default."""
    password_from: str | None = None
    """``env:NAME``, ``arg``, ``file:PATH`` or ``none`` (`stackvault.records.plan`)."""
    found: str = ""
    """Where the port and socket were read, for the plan's comment."""


class ContainerView(Protocol):
    """What discovery reads of a running container."""

    @property
    def command(self) -> list[str]:
        """``Entrypoint`` + ``Cmd``."""
        ...

    @property
    def env(self) -> Mapping[str, str]:
        """The container's configured environment (holds secrets: never printed)."""
        ...

    def read(self, path: str) -> str | None:
        """The text of file ``path`` in the container; None when it cannot be read."""
        ...

    def output(self, argv: list[str]) -> str | None:
        """What ``argv`` prints in the container; None when it fails or is not there."""
        ...


class EngineView:
    """A `ContainerView` of a container through the Engine API; reads are ``cat``."""

    def __init__(self, client: DockerClient, name: str) -> None:
        from stackvault.sources.docker.cmdline import command_of
        from stackvault.sources.docker.engine import container_env, get_container
        from stackvault.sources.docker.exec import ContainerRunner

        container = get_container(client, name)
        self.command = command_of(container.attrs)
        self.env: Mapping[str, str] = container_env(container)
        self.running = container.status == "running"
        self._runner = ContainerRunner(client, container)

    def read(self, path: str) -> str | None:
        return self.output(["cat", path])

    def output(self, argv: list[str]) -> str | None:
        if not self.running:
            return None
        try:
            res = self._runner.run(argv, timeout=30)
        except SourceError:
            return None
        return res.text if res.code == 0 else None


def engine_views(client: DockerClient) -> Callable[[Service], ContainerView | None]:
    """The `ContainerView` of a service's first container (None when it cannot be had)."""

    def view(svc: Service) -> ContainerView | None:
        try:
            return EngineView(client, svc.container)
        except SourceError:
            return None

    return view


def reach_of(role: str, view: ContainerView) -> Reach | None:
    """How the server of a service of ``role`` is reached; None for other roles."""
    if role == POSTGRES:
        return postgres_reach(view)
    if role == MYSQL:
        return mysql_reach(view)
    if role == REDIS:
        return redis_reach(view)
    return None


def _number(value: str | None, env: Mapping[str, str]) -> int | None:
    text = expand(value, env).strip() if value else ""
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def _conf_value(text: str, name: str) -> str | None:
    """The last ``name = value`` of a ``postgresql.conf`` (quotes and comments removed)."""
    found: str | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        key, sep, value = line.partition("=")
        if not sep:
            key, _, value = line.partition(" ")
        if key.strip() == name:
            found = value.strip().strip("'\"")
    return found


def postgres_reach(view: ContainerView) -> Reach:
    """PostgreSQL: see the module docstring."""
    env = view.env
    args = program_args(view.command, _PG_PROGRAMS) or []
    data = expand(option(args, "-D") or "", env) or env.get("PGDATA") or _PG_DATA
    password = default_password_from(env)
    pid = view.read(f"{data.rstrip('/')}/postmaster.pid")
    lines = pid.splitlines() if pid else []
    if len(lines) >= 5 and lines[3].strip().isdigit():
        sockets = lines[4].strip() or None
        return Reach(
            int(lines[3]), sockets, password, f"postmaster.pid of the running server in {data}"
        )
    port = _number(option(args, "-p", "--port") or setting(args, "port"), env)
    socket = option(args, "-k") or setting(args, "unix_socket_directories")
    found = "its command line" if port or socket else ""
    if port is None or socket is None:
        for name in ("postgresql.auto.conf", "postgresql.conf"):
            text = view.read(f"{data.rstrip('/')}/{name}") or ""
            if port is None and (value := _conf_value(text, "port")):
                port, found = _number(value, env), found or name
            if socket is None and (value := _conf_value(text, "unix_socket_directories")):
                socket, found = value, found or name
    if port is None and _number(env.get("PGPORT"), env):
        port, found = _number(env.get("PGPORT"), env), found or "PGPORT"
    socket = expand(socket, env).split(",")[0].strip() or None if socket else None
    return Reach(port or 5432, socket, password, found or "the defaults")


def mysql_reach(view: ContainerView) -> Reach:
    """MySQL / MariaDB: see the module docstring."""
    env = view.env
    args = program_args(view.command, _MYSQL_PROGRAMS) or []
    port = _number(option(args, "--port", "-P"), env)
    socket = option(args, "--socket", "-S")
    found = "its command line" if port or socket else ""
    if port is None or socket is None:
        defaults = (view.output(["my_print_defaults", "--mysqld"]) or "").split()
        if port is None and (number := _number(option(defaults, "--port"), env)):
            port, found = number, found or "its option files"
        if socket is None and (text := option(defaults, "--socket")):
            socket, found = text, found or "its option files"
    if port is None and _number(env.get("MYSQL_TCP_PORT"), env):
        port, found = _number(env.get("MYSQL_TCP_PORT"), env), found or "MYSQL_TCP_PORT"
    if socket is None and env.get("MYSQL_UNIX_PORT"):
        socket, found = env["MYSQL_UNIX_PORT"], found or "MYSQL_UNIX_PORT"
    found_in = (
        password_in(env, v) for v in (*ROOT_PASSWORDS, "MARIADB_PASSWORD", "MYSQL_PASSWORD")
    )
    where = next((w for w in found_in if w), None)
    password = "none" if where is None else where if where.startswith("file:") else f"env:{where}"
    socket = expand(socket, env) if socket else None
    return Reach(port or 3306, socket, password, found or "the defaults")


def redis_reach(view: ContainerView) -> Reach:
    """Redis: see the module docstring."""
    env = view.env
    args = program_args(view.command, REDIS_SERVERS) or []
    port = _number(option(args, "--port"), env)
    found = "its command line" if port else ""
    password: str | None = None
    secret = option(args, "--requirepass")
    if secret is not None:
        name = variable(secret)
        password = f"env:{name}" if name and name in env else "arg"
    conf = config_path(args)
    if conf is not None and (port is None or password is None):
        directives = parse_conf(view.read(conf) or "")
        if port is None and (value := _number(directives.get("port"), env)):
            port, found = value, conf
        if password is None and directives.get("requirepass"):
            password = f"file:{conf}"
    if password is None:
        named = next((v for v in ("REDISCLI_AUTH", "REDIS_PASSWORD") if env.get(v)), None)
        password = f"env:{named}" if named else "none"
    return Reach(port or 6379, None, password, found or "the defaults")


def source_url(src: SourcePlan, container: str | None = None, *, restore: bool = False) -> str:
    """The URL of ``src`` with the plan's ``port``, ``socket`` and ``password_from`` in it
    (each overriding the URL's own), in ``container`` when given (a restore's new one).
    ``restore``: the whole server (``/``) and no artifact name, as a restore target."""
    parts = urlsplit(src.url)
    if not parts.scheme.endswith("+docker"):
        return src.url
    user, at, where = parts.netloc.rpartition("@")
    host, _, port = where.partition(":")
    host = container or host
    port = str(src.port) if src.port else port
    query = parse_qsl(parts.query, keep_blank_values=True)
    if restore:
        query = [(k, v) for k, v in query if k in _CONNECTION_OPTIONS]
    own = {"socket": src.socket, "password_from": src.password_from}
    query = [(k, v) for k, v in query if own.get(k) is None]
    query += [(k, v) for k, v in own.items() if v is not None]
    path = parts.path
    if restore:
        path = "" if parts.scheme.startswith("redis") else "/"
    netloc = f"{user}{at}{host}" + (f":{port}" if port else "")
    text = urlencode(query, safe="/:")
    return f"{parts.scheme}://{netloc}{path}" + (f"?{text}" if text else "")


def postgres_query(url: str, db: str, sql: str) -> str | None:
    """``sql``'s output (``psql -At``) in database ``db`` of the PostgreSQL source ``url``
    (`source_url`), connected exactly as its capture connects; None when it fails."""
    from stackvault.sources.postgres.source import PostgresSource
    from stackvault.sources.registry import open_source

    source = open_source(url)
    try:
        if not isinstance(source, PostgresSource):
            return None
        ep = source.endpoint()
        res = ep.runner.run(ep.argv("psql", db, "-X", "-At", "-c", sql), env=ep.env, timeout=60)
    except SourceError:
        return None
    finally:
        source.close()
    return res.text if res.code == 0 else None
