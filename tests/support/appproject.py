"""What the Compose test stacks of the application presets share (`n8nproject`, ...): a
project on a test `DockerEngine` brought up with the real ``docker-compose`` (1.29) from a
YAML file, every service on host networking (127.0.0.1 only) with the host's ``/usr`` and
``/etc`` mounted read-only into the skeleton image - tagged with the application's own image
name where the preset recognises it by that (`app_image`) - and a PostgreSQL service as the
Dify test stack runs its own (`postgres_service`).

`compose(*args)` runs any docker-compose command with the engine's ``DOCKER_HOST``; `down`
runs ``docker-compose down -v``; nothing is pulled.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .composeproject import docker_compose
from .dbservers import pg_bindir, service_user
from .dockerd import CONTAINER_PATH, HOST_IMAGE, build_host_image

if TYPE_CHECKING:
    from .dockerd import DockerEngine

IDLE = "trap 'exit 0' TERM INT; while :; do sleep 0.2; done"
"""A stateless service: it ends at once on SIGTERM."""
HOST_MOUNTS = "      - /usr:/usr:ro\n      - /etc:/etc:ro\n"


def yaml_str(text: str) -> str:
    """``text`` as a YAML scalar (a JSON string), ``$`` escaped for Compose."""
    return json.dumps(text.replace("$", "$$"))


def app_image(engine: DockerEngine, tag: str) -> str:
    """The skeleton host image under the application's own name ``tag`` (made unless there)."""
    return build_host_image(engine.client(), tag)


def postgres_service(name: str, port_var: str, database: str) -> str:
    """A Compose service ``name``: PostgreSQL of this host as its ``postgres`` uid, data in
    ``./volumes/NAME`` (``initdb`` at first start), listening on 127.0.0.1 at ``${PORT_VAR}``,
    database ``database`` created at first start, password ``${POSTGRES_PASSWORD}``."""
    uid, gid = service_user("postgres")
    init_db = (
        '[ -s "$PGDATA/PG_VERSION" ] || { umask 077; printf "%s\\n" "$POSTGRES_PASSWORD" '
        '> /tmp/pw && initdb -D "$PGDATA" -U postgres --pwfile=/tmp/pw --auth-local=trust '
        "--auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync >/dev/null; }; "
        "( for i in $(seq 1 100); do pg_isready -q && break; sleep 0.2; done; "
        f"psql -U postgres -qc 'CREATE DATABASE {database}' 2>/dev/null ) & "
        'exec postgres -D "$PGDATA" -c listen_addresses=127.0.0.1'
    )
    return f"""  {name}:
    image: {HOST_IMAGE}
    network_mode: host
    user: "{uid}:{gid}"
    environment:
      POSTGRES_USER: postgres
      POSTGRES_PASSWORD: ${{POSTGRES_PASSWORD}}
      POSTGRES_DB: {database}
      PGDATA: /data/pg
      PGPORT: ${{{port_var}}}
      PATH: {pg_bindir()}:{CONTAINER_PATH}
      LC_ALL: C
    command: ["sh", "-c", {yaml_str(init_db)}]
    stop_signal: SIGINT
    volumes:
{HOST_MOUNTS}      - ./volumes/{name}:/data
"""


def make_postgres_dir(directory: Path, name: str) -> None:
    """``volumes/NAME`` owned by this host's ``postgres`` user."""
    uid, gid = service_user("postgres")
    path = directory / "volumes" / name
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)


class AppProject:
    """A Compose project ``name`` in ``directory`` (its ``docker-compose.yaml``)."""

    def __init__(self, directory: Path, engine: DockerEngine, name: str) -> None:
        self.directory = directory
        self.engine = engine
        self.name = name

    def compose(self, *args: str, timeout: float = 300) -> str:
        return docker_compose(self.engine, self.name, self.directory, *args, timeout=timeout)

    def exec(self, service: str, *argv: str) -> str:
        """What ``argv`` prints in the service's container (stripped)."""
        return self.compose("exec", "-T", service, *argv).strip()

    def wait_for(self, what: str, probe: object, timeout: float = 60) -> None:
        """Until ``probe()`` is true (a RuntimeError counts as false); else RuntimeError."""
        assert callable(probe)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                if probe():
                    return
            except RuntimeError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise RuntimeError(f"{what} did not happen in {timeout:.0f} s: {last}")

    def container(self, service: str) -> str:
        return f"{self.name}_{service}_1"

    def down(self) -> None:
        """``docker-compose down -v`` (nothing to do once the directory is gone)."""
        if not (self.directory / "docker-compose.yaml").exists():
            return
        try:
            self.compose("down", "-v", "--remove-orphans", timeout=120)
        except RuntimeError:
            pass
