"""Pytest fixtures for tests against real database servers and a real Docker engine.

Registered for the whole suite in ``tests/conftest.py`` (``pytest_plugins``). Every server is
started when a test first asks for it and stopped at the end of the session, whatever the
tests did; a missing binary or a server that does not start **fails** (never skips) every
test that uses it, with the reason and the log tail. Only 127.0.0.1 is used, every container
runs with host networking, nothing is pulled.

Session fixtures (shared: tests that need isolation create their own database, table or key
prefix, e.g. with ``pg_database`` / ``mariadb_database``; a test that stops a container must
start it again):

- ``docker_engine`` - a private `DockerEngine` (``.host``, ``.env()``, ``.client()``,
  ``.log_tail()``, ``.directory``);
- ``docker_client`` - a ``docker.DockerClient`` for it;
- ``host_image`` - the tag of `build_host_image`'s image (host ``/usr`` + ``/etc`` mounted);
- ``pg_server`` / ``mariadb_server`` / ``redis_server`` - `PostgresServer`, `MariaDBServer`,
  `RedisServer` on the host (``.port``, ``.password``, ``.env()``, ``.url()``, ``.psql()`` /
  ``.sql()`` / ``.cli()``, ``.log_tail()``);
- ``pg_container`` / ``mariadb_container`` / ``redis_container`` - `PostgresContainer`,
  `MariaDBContainer`, `RedisContainer` in ``docker_engine`` (``.name``, ``.volume``,
  ``.port``, ``.container``, ``.password``, ``.psql()`` / ``.sql()`` / ``.cli()``,
  ``.exec()``, ``.wait_healthy()``, ``.stop()`` / ``.start()``, ``.log_tail()``).

Function fixtures:

- ``docker_env`` - ``DOCKER_HOST`` points at ``docker_engine`` (TLS and context variables
  cleared), so ``docker.from_env()`` and the ``docker`` CLI use it; returns the host string;
- ``pg_env`` / ``mariadb_env`` - the client variables of ``pg_server`` / ``mariadb_server``
  (``PGHOST``... / ``MYSQL_HOST``, ``MYSQL_TCP_PORT``, ``MYSQL_PWD``) set, the caller's other
  ``PG*`` / ``MYSQL*`` variables removed; returns the server;
- ``pg_database`` / ``mariadb_database`` - the name of a fresh database on the host server,
  dropped afterwards (best effort).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import pytest

from .dbcontainers import MariaDBContainer, PostgresContainer, RedisContainer, ServiceContainer
from .dbservers import (
    CommandError,
    LoopbackServer,
    MariaDBServer,
    PostgresServer,
    RedisServer,
    ServerBinaryNotFoundError,
)
from .dockerd import DockerEngine, build_host_image

if TYPE_CHECKING:
    from docker import DockerClient

_S = TypeVar("_S", bound=LoopbackServer)
_C = TypeVar("_C", bound=ServiceContainer)


def _fail(message: str) -> BaseException:
    """pytest's failure outcome (not an error with a traceback, and never a skip)."""
    return pytest.fail.Exception(message, pytrace=False)


def _start_server(make: Callable[[], _S], what: str) -> _S:
    try:
        server = make()
    except ServerBinaryNotFoundError as exc:
        raise _fail(f"cannot run the {what} test server: {exc}") from None
    try:
        server.start()
    except RuntimeError as exc:
        raise _fail(f"the {what} test server did not start: {exc}") from None
    return server


def _start_container(make: Callable[[], _C], what: str) -> _C:
    try:
        service = make()
    except ServerBinaryNotFoundError as exc:
        raise _fail(f"cannot run the {what} test container: {exc}") from None
    try:
        service.start()
    except RuntimeError as exc:
        raise _fail(f"the {what} test container did not start: {exc}") from None
    return service


def unique_db_name(hint: str, prefix: str = "t") -> str:
    """A valid, unique database name (lowercase, at most 40 characters) mentioning ``hint``."""
    slug = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")[:24].strip("_")
    return "_".join(part for part in (prefix, slug, secrets.token_hex(4)) if part)


# -- Docker ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd (own data root, socket, containerd; no bridge, no iptables), stopped
    at session end with every container in it. Fails when dockerd is missing or won't start."""
    engine = DockerEngine()
    try:
        engine.start()
    except ServerBinaryNotFoundError as exc:
        raise _fail(f"cannot run the test Docker engine: {exc}") from None
    except RuntimeError as exc:
        raise _fail(f"the test Docker engine did not start: {exc}") from None
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def docker_client(docker_engine: DockerEngine) -> DockerClient:
    """A ``docker.DockerClient`` for ``docker_engine`` (closed when the engine stops)."""
    return docker_engine.client()


@pytest.fixture(scope="session")
def host_image(docker_client: DockerClient) -> str:
    """The tag of the skeleton image whose containers run the host's binaries."""
    return build_host_image(docker_client)


@pytest.fixture
def docker_env(docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch) -> str:
    """``DOCKER_HOST`` = the test engine (``DOCKER_TLS_VERIFY``, ``DOCKER_CERT_PATH`` and
    ``DOCKER_CONTEXT`` removed) for the duration of the test; returns its value."""
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    return docker_engine.host


# -- servers on the host ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """PostgreSQL 15 on 127.0.0.1 (superuser ``postgres`` / ``.password``)."""
    server = _start_server(PostgresServer, "PostgreSQL")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """MariaDB on 127.0.0.1 (``root`` / ``.password``)."""
    server = _start_server(MariaDBServer, "MariaDB")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Redis on 127.0.0.1, no password, no automatic snapshots."""
    server = _start_server(RedisServer, "Redis")
    try:
        yield server
    finally:
        server.stop()


def _clear_client_env(monkeypatch: pytest.MonkeyPatch, prefixes: tuple[str, ...]) -> None:
    for name in list(os.environ):
        if name.startswith(prefixes):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pg_env(pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> PostgresServer:
    """``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD`` of ``pg_server`` (other ``PG*``
    variables removed) for the duration of the test; returns the server."""
    _clear_client_env(monkeypatch, ("PG",))
    for name, value in pg_server.env().items():
        monkeypatch.setenv(name, value)
    return pg_server


@pytest.fixture
def mariadb_env(mariadb_server: MariaDBServer, monkeypatch: pytest.MonkeyPatch) -> MariaDBServer:
    """``MYSQL_HOST``, ``MYSQL_TCP_PORT``, ``MYSQL_PWD`` of ``mariadb_server`` (other
    ``MYSQL*`` / ``MARIADB*`` variables removed) for the duration of the test; returns it."""
    _clear_client_env(monkeypatch, ("MYSQL", "MARIADB"))
    for name, value in mariadb_server.env().items():
        monkeypatch.setenv(name, value)
    return mariadb_server


@pytest.fixture
def pg_database(pg_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on ``pg_server``; dropped (``WITH (FORCE)``) afterwards."""
    name = pg_server.create_database(unique_db_name(request.node.name))
    yield name
    try:
        pg_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except CommandError:
        pass


@pytest.fixture
def mariadb_database(
    mariadb_server: MariaDBServer, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh database on ``mariadb_server``; dropped afterwards."""
    name = mariadb_server.create_database(unique_db_name(request.node.name))
    yield name
    try:
        mariadb_server.sql(f"DROP DATABASE IF EXISTS `{name}`")
    except CommandError:
        pass


# -- servers in containers --------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_container(docker_client: DockerClient, host_image: str) -> Iterator[PostgresContainer]:
    """PostgreSQL 15 in a container (``POSTGRES_*`` environment, volume at ``/data``)."""
    service = _start_container(lambda: PostgresContainer(docker_client, host_image), "PostgreSQL")
    try:
        yield service
    finally:
        service.remove()


@pytest.fixture(scope="session")
def mariadb_container(docker_client: DockerClient, host_image: str) -> Iterator[MariaDBContainer]:
    """MariaDB in a container (``MARIADB_ROOT_PASSWORD`` environment, volume at ``/data``)."""
    service = _start_container(lambda: MariaDBContainer(docker_client, host_image), "MariaDB")
    try:
        yield service
    finally:
        service.remove()


@pytest.fixture(scope="session")
def redis_container(docker_client: DockerClient, host_image: str) -> Iterator[RedisContainer]:
    """Redis in a container (no password, volume at ``/data``)."""
    service = _start_container(lambda: RedisContainer(docker_client, host_image), "Redis")
    try:
        yield service
    finally:
        service.remove()
