"""A Dify-shaped Docker Compose project on a test `DockerEngine`, brought up with the real
``docker-compose`` (1.29, Debian's) from a YAML file - so every container carries the labels
Compose sets, exactly as on an operator's host.

`DifyLikeProject(directory, engine)` writes into ``directory``:

- ``docker-compose.yaml``: services ``db`` (PostgreSQL 15 as the host's ``postgres`` uid, data in
  ``volumes/db/data``, databases ``dify`` and ``dify_plugin`` created at first start), ``redis``
  (``volumes/redis/data``), ``api`` and ``worker`` (writers: they keep adding uploads under
  ``volumes/app/storage/upload_files`` and ``privkeys/<tenant>/private.pem`` files, as root with
  files chowned to 1001), ``plugin_daemon`` (``volumes/plugin_daemon`` with a symlink and
  a ``cwd/``), ``weaviate`` (a named volume ``weaviate_data``), ``web`` (stateless: an HTTP
  server on ``WEB_PORT``), ``nginx`` (its config directory ``nginx/`` mounted read-only);
  every service uses host networking and the host image (host ``/usr`` and ``/etc`` mounted
  read-only);
- ``.env``: ``SECRET_KEY`` (random unless given), ``DB_PASSWORD``, ``STORAGE_TYPE=opendal``,
  ``VECTOR_STORE=weaviate``, ``PG_PORT`` / ``REDIS_PORT`` / ``WEB_PORT`` (free ports on 127.0.0.1).

`up` runs ``docker-compose up -d`` and waits until PostgreSQL answers and both databases exist;
`down` runs ``docker-compose down -v``. `compose(*args)` runs any docker-compose command. Every
command gets ``DOCKER_HOST`` of the engine; nothing is pulled (the image is local).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .dbservers import free_port, pg_bindir, service_user
from .dockerd import CONTAINER_PATH, HOST_IMAGE

if TYPE_CHECKING:
    from .dockerd import DockerEngine

_IDLE = "trap 'exit 0' TERM INT; while :; do sleep 0.2; done"
"""What a stateless service runs: it ends at once on SIGTERM (a bare ``sleep`` as PID 1 would
ignore it and be killed only after the stop timeout)."""
MIGRATE = (
    "CREATE TABLE IF NOT EXISTS upload_files (name text PRIMARY KEY);"
    "CREATE TABLE IF NOT EXISTS tenants (id text PRIMARY KEY);"
    "INSERT INTO tenants VALUES ('tenant-0'), ('tenant-1'), ('tenant-2') ON CONFLICT DO NOTHING;"
    "CREATE TABLE IF NOT EXISTS alembic_version (version_num varchar(32) PRIMARY KEY);"
    "INSERT INTO alembic_version SELECT '4f3a2b1c9d8e' "
    "WHERE NOT EXISTS (SELECT 1 FROM alembic_version);"
)
"""What the api does to the ``dify`` database when it starts (Dify's api migrates it)."""
_WRITER = (
    "trap 'exit 0' TERM INT; "
    'until psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d dify -c "$MIGRATE" '
    ">/dev/null 2>&1; do sleep 0.2; done; i=0; while true; do i=$((i+1)); t=tenant-$((i % 3)); "
    "mkdir -p /app/api/storage/privkeys/$t /app/api/storage/upload_files/$t; "
    "[ -f /app/api/storage/privkeys/$t/private.pem ] || "
    'echo "-----BEGIN KEY $t-----" > /app/api/storage/privkeys/$t/private.pem; '
    "f=upload_files/$t/$SVC-$i.bin; head -c 2000 /dev/urandom > /app/api/storage/$f; "
    "chown -R 1001:1001 /app/api/storage 2>/dev/null; "
    'until psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d dify '
    "-c \"INSERT INTO upload_files VALUES ('$f')\" >/dev/null 2>&1; do sleep 0.2; done; "
    "sleep 0.1; done"
)
"""An app writer: each round saves an upload, then records it in the ``dify`` database (as
Dify does: the file first, then its row; the insert is retried until the database takes it),
so a consistent cut has a row for every file but at most the one being written when the
writer stopped."""


def docker_compose(
    engine: DockerEngine, name: str, directory: Path, *args: str, timeout: float = 300
) -> str:
    """What ``docker-compose -p NAME -f DIRECTORY/docker-compose.yaml ARGS`` prints, run in
    ``directory`` against the test engine; a failure raises with the end of its stderr."""
    exe = shutil.which("docker-compose")
    if exe is None:
        raise RuntimeError("docker-compose is not installed; run scripts/install-test-deps.sh")
    env = {**os.environ, **engine.env(), "COMPOSE_INTERACTIVE_NO_CLI": "1"}
    proc = subprocess.run(
        [exe, "-p", name, "-f", str(directory / "docker-compose.yaml"), *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"docker-compose {' '.join(args)} exited with {proc.returncode}: "
            f"{proc.stderr.strip()[-2000:]}"
        )
    return proc.stdout


class DifyLikeProject:
    def __init__(
        self,
        directory: Path,
        engine: DockerEngine,
        *,
        name: str | None = None,
        secret_key: str | None = None,
        pg_socket: str | None = None,
        redis_password: bool = False,
        redis_conf: bool = False,
    ) -> None:
        """``pg_socket``: PostgreSQL listens on its port (never 5432: host networking) with its
        unix socket in this directory, started as ``postgres -p PORT -k DIR`` without
        ``PGPORT``; ``redis_password``: Redis takes a password on its command line only
        (``--requirepass``, nothing in its environment); ``redis_conf``: a second Redis,
        service ``cache``, reads its port and password from ``redis.conf`` (``./redis-conf``,
        mounted read-only)."""
        self.directory = directory
        self.engine = engine
        self.name = name or f"svdify{secrets.token_hex(3)}"
        self.secret_key = secret_key if secret_key is not None else secrets.token_urlsafe(32)
        self.db_password = secrets.token_hex(12)
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.web_port = free_port()
        self.pg_socket = pg_socket
        self.redis_password = secrets.token_hex(12) if redis_password else None
        self.cache_password = secrets.token_hex(12) if redis_conf else None
        self.cache_port = free_port() if redis_conf else None

    # -- files ---------------------------------------------------------------------------

    def write(self) -> DifyLikeProject:
        d = self.directory
        pg_uid, pg_gid = service_user("postgres")
        redis_uid, redis_gid = service_user("redis")
        for sub in (
            "volumes/db/data",
            "volumes/redis/data",
            "volumes/app/storage",
            "volumes/plugin_daemon/plugin",
            "nginx",
        ):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chown(d / "volumes/db/data", pg_uid, pg_gid)
        os.chown(d / "volumes/redis/data", redis_uid, redis_gid)
        (d / "volumes/plugin_daemon/plugin/manifest.yaml").write_text("name: demo\n")
        venv = d / "volumes/plugin_daemon/cwd/demo/.venv/bin"
        venv.mkdir(parents=True, exist_ok=True)
        (venv / "python").write_text("#!/bin/sh\n")
        link = d / "volumes/plugin_daemon/current"
        if not link.is_symlink():
            link.symlink_to("plugin")
        (d / "nginx/default.conf").write_text("server { listen 8080; }\n")
        if self.cache_port is not None:
            (d / "volumes/cache/data").mkdir(parents=True, exist_ok=True)
            os.chown(d / "volumes/cache/data", redis_uid, redis_gid)
            (d / "redis-conf").mkdir(exist_ok=True)
            (d / "redis-conf/redis.conf").write_text(
                f"# the cache\nport {self.cache_port}\nbind 127.0.0.1\ndir /data\n"
                f'requirepass "{self.cache_password}"\n'
            )
        (d / ".env").write_text(
            f"SECRET_KEY={self.secret_key}\n"
            f"DB_PASSWORD={self.db_password}\n"
            "STORAGE_TYPE=opendal\nOPENDAL_SCHEME=fs\nVECTOR_STORE=weaviate\n"
            f"PG_PORT={self.pg_port}\nREDIS_PORT={self.redis_port}\nWEB_PORT={self.web_port}\n"
        )
        (d / ".env").chmod(0o600)
        (d / "docker-compose.yaml").write_text(self.compose_yaml(pg_uid, pg_gid, redis_uid))
        return self

    def compose_yaml(self, pg_uid: int, pg_gid: int, redis_uid: int) -> str:
        bindir = pg_bindir()
        host = "      - /usr:/usr:ro\n      - /etc:/etc:ro\n"
        common = f"    image: {HOST_IMAGE}\n    network_mode: host\n"
        init_db = (
            '[ -s "$$PGDATA/PG_VERSION" ] || { umask 077; printf "%s\\n" "$$POSTGRES_PASSWORD" '
            '> /tmp/pw && initdb -D "$$PGDATA" -U postgres --pwfile=/tmp/pw --auth-local=trust '
            "--auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync >/dev/null; }; "
            "( for i in $$(seq 1 100); do pg_isready -q && break; sleep 0.2; done; "
            "psql -U postgres -qc 'CREATE DATABASE dify' 2>/dev/null; "
            "psql -U postgres -qc 'CREATE DATABASE dify_plugin' 2>/dev/null ) & "
            'exec postgres -D "$$PGDATA" -p "$$PGPORT" -c listen_addresses=127.0.0.1'
        )
        pg_env = "      PGPORT: ${PG_PORT}\n"
        if self.pg_socket:  # the port and socket directory on the command line only
            sock = self.pg_socket
            init_db = init_db.replace("pg_isready -q", f"pg_isready -q -h {sock} -p $$PG_PORT")
            init_db = init_db.replace("psql -U", f"psql -h {sock} -p $$PG_PORT -U")
            init_db = f"mkdir -p {sock}; " + init_db.replace(
                '-p "$$PGPORT"', f'-p "$$PG_PORT" -k {sock}'
            )
            pg_env = "      PG_PORT: ${PG_PORT}\n"
        redis_args = '"--port", "${REDIS_PORT}", "--bind", "127.0.0.1", "--dir", "/data"'
        if self.redis_password:
            redis_args += f', "--requirepass", "{self.redis_password}"'
        cache = ""
        if self.cache_port is not None:
            cache = f"""  cache:
{common}    user: "{redis_uid}:{redis_uid}"
    command: ["redis-server", "/srv/redis-conf/redis.conf"]
    volumes:
{host}      - ./volumes/cache/data:/data
      - ./redis-conf:/srv/redis-conf:ro
"""
        writer = _WRITER.replace("$", "$$")
        return f"""version: "2.4"
services:
  db:
{common}    user: "{pg_uid}:{pg_gid}"
    environment:
      POSTGRES_USER: postgres
      POSTGRES_PASSWORD: ${{DB_PASSWORD}}
      PGDATA: /data/pg
{pg_env}      PATH: {bindir}:{CONTAINER_PATH}
      LC_ALL: C
    command: ["sh", "-c", {_yaml_str(init_db)}]
    stop_signal: SIGINT
    volumes:
{host}      - ./volumes/db/data:/data
  redis:
{common}    user: "{redis_uid}:{redis_uid}"
    stop_grace_period: 5s
    command: ["redis-server", {redis_args}]
    volumes:
{host}      - ./volumes/redis/data:/data
{cache}  api:
{common}    user: "0:0"
    environment:
      SVC: api
      MIGRATE: {_yaml_str(MIGRATE.replace("$", "$$"))}
      SECRET_KEY: ${{SECRET_KEY}}
      DB_PASSWORD: ${{DB_PASSWORD}}
      PGPASSWORD: ${{DB_PASSWORD}}
      PG_PORT: ${{PG_PORT}}
    command: ["sh", "-c", {_yaml_str(writer)}]
    depends_on: [db, redis]
    volumes:
{host}      - ./volumes/app/storage:/app/api/storage
  worker:
{common}    user: "0:0"
    environment:
      SVC: worker
      MIGRATE: {_yaml_str(MIGRATE.replace("$", "$$"))}
      SECRET_KEY: ${{SECRET_KEY}}
      PGPASSWORD: ${{DB_PASSWORD}}
      PG_PORT: ${{PG_PORT}}
    command: ["sh", "-c", {_yaml_str(writer)}]
    depends_on: [db, redis]
    volumes:
{host}      - ./volumes/app/storage:/app/api/storage
  plugin_daemon:
{common}    user: "0:0"
    command: ["sh", "-c", {_yaml_str(_IDLE)}]
    depends_on: [db]
    volumes:
{host}      - ./volumes/plugin_daemon:/app/storage
  weaviate:
{common}    user: "0:0"
    command: ["sh", "-c", {_yaml_str("echo index > /var/lib/weaviate/index.bin; " + _IDLE)}]
    volumes:
{host}      - weaviate_data:/var/lib/weaviate
  web:
{common}    user: "0:0"
    command: ["python3", "-m", "http.server", "${{WEB_PORT}}", "--bind", "127.0.0.1",
              "--directory", "/usr"]
    depends_on: [api]
    volumes:
{host}
  nginx:
{common}    user: "0:0"
    command: ["sh", "-c", {_yaml_str(_IDLE)}]
    depends_on: [api, web]
    volumes:
{host}      - ./nginx:/srv/nginx-conf:ro
volumes:
  weaviate_data:
"""

    # -- life cycle ----------------------------------------------------------------------

    def compose(self, *args: str, timeout: float = 300) -> str:
        return docker_compose(self.engine, self.name, self.directory, *args, timeout=timeout)

    def up(self) -> DifyLikeProject:
        self.compose("up", "-d")
        self.wait_for_databases()
        return self

    def wait_for_databases(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                out = self.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")
            except RuntimeError as exc:
                last = str(exc)
            else:
                if "dify," in out and "dify_plugin" in out:
                    try:
                        if self.psql("SELECT count(*) FROM alembic_version", db="dify") == "1":
                            return
                    except RuntimeError as exc:
                        last = str(exc)
                last = out
            time.sleep(0.3)
        raise RuntimeError(f"the project's databases did not appear in {timeout:.0f} s: {last}")

    def psql(self, sql: str, db: str = "postgres") -> str:
        where = ["-h", self.pg_socket, "-p", str(self.pg_port)] if self.pg_socket else []
        out = self.compose(
            "exec", "-T", "db", "psql", *where, "-U", "postgres", "-At", "-d", db, "-c", sql
        )
        return out.strip()

    def redis_cli(self, *args: str, service: str = "redis") -> str:
        """``redis-cli`` in the service's container, with its password when it has one."""
        port, password = self.redis_port, self.redis_password
        if service == "cache":
            port, password = self.cache_port or 0, self.cache_password
        auth = ["-e", f"REDISCLI_AUTH={password}"] if password else []
        out = self.compose("exec", "-T", *auth, service, "redis-cli", "-p", str(port), *args)
        return out.strip()

    def container(self, service: str) -> str:
        """The name of the service's (first) container."""
        return f"{self.name}_{service}_1"

    def down(self) -> None:
        """``docker-compose down -v`` (nothing to do once the directory is gone)."""
        if not (self.directory / "docker-compose.yaml").exists():
            return
        try:
            self.compose("down", "-v", "--remove-orphans", timeout=120)
        except RuntimeError:
            pass


def _yaml_str(text: str) -> str:
    import json

    return json.dumps(text)


class Startable(Protocol):
    """A test project the stack tests start: `DifyLikeProject`, `support.appproject.AppProject`."""

    directory: Path

    def write(self) -> Any: ...

    def down(self) -> None: ...


S = TypeVar("S", bound=Startable)


@contextmanager
def started(project: S) -> Iterator[S]:
    """``project`` with its directory created, its files written and its services up; brought
    down at the end (a module fixture's body)."""
    project.directory.mkdir()
    project.write().up()
    try:
        yield project
    finally:
        project.down()
