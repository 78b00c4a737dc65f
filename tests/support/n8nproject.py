"""An n8n-shaped Docker Compose project on a test `DockerEngine`, laid out as n8n's own
``n8n-hosting/docker-compose/withPostgresAndWorker``: services ``postgres`` (this host's
PostgreSQL, data in ``volumes/postgres``, database ``n8n``), ``n8n`` and ``n8n-worker`` - both
on the image ``docker.n8n.io/n8nio/n8n`` (the host skeleton image under that name) and both
with the named volume ``n8n_storage`` at ``/home/node/.n8n`` - and no ``N8N_ENCRYPTION_KEY``:
the key exists only in the user folder's ``config`` file, which ``n8n`` writes at its first
start, as n8n does.

The writers write like n8n: the main instance keeps storing credentials encrypted with that
key (``openssl enc -aes-256-cbc -md md5``: n8n's format), both keep writing binary data files
under ``binaryData/`` and then an ``execution_entity`` row naming each (the file first).

`up` runs ``docker-compose up -d`` and waits until credentials are stored; `psql` queries the
``n8n`` database; `encryption_key` reads the key out of the running ``n8n`` container.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from .appproject import (
    HOST_MOUNTS,
    AppProject,
    app_image,
    make_postgres_dir,
    postgres_service,
    yaml_str,
)
from .dbservers import free_port

if TYPE_CHECKING:
    from .dockerd import DockerEngine

N8N_IMAGE = "docker.n8n.io/n8nio/n8n:1.80.0"
FOLDER = "/home/node/.n8n"
MIGRATE = (
    "CREATE TABLE IF NOT EXISTS credentials_entity (id serial PRIMARY KEY, name text NOT NULL, "
    "data text NOT NULL, type text NOT NULL);"
    "CREATE TABLE IF NOT EXISTS execution_entity (id serial PRIMARY KEY, binary_file text);"
    "CREATE TABLE IF NOT EXISTS workflow_entity (id text PRIMARY KEY, name text);"
    "INSERT INTO workflow_entity VALUES ('wf-1', 'Nightly sync') ON CONFLICT DO NOTHING;"
)
"""What n8n's migrations leave, in the tables the preset reads."""
_PSQL = 'psql -X -q -h 127.0.0.1 -p "$DB_POSTGRESDB_PORT" -U postgres -d n8n'
_WRITER = (
    "trap 'exit 0' TERM INT; D=" + FOLDER + "; mkdir -p $D/binaryData; "
    'if [ "$SVC" = n8n ] && [ ! -f $D/config ]; then '
    'printf \'{\\n  "encryptionKey": "%s"\\n}\\n\' '
    "\"$(head -c 24 /dev/urandom | base64 | tr -d '/+=')\" > $D/config.tmp && "
    "mv $D/config.tmp $D/config; fi; "
    "until [ -f $D/config ]; do sleep 0.2; done; "
    'KEY=$(sed -n \'s/.*"encryptionKey": *"\\([^"]*\\)".*/\\1/p\' $D/config); '
    f'until {_PSQL} -c "$MIGRATE" >/dev/null 2>&1; do sleep 0.2; done; '
    "i=0; while true; do i=$((i+1)); "
    'if [ "$SVC" = n8n ] && [ $((i % 4)) = 1 ]; then '
    'c=$(printf \'{"apiKey":"key-%s"}\' $i | '
    'openssl enc -aes-256-cbc -md md5 -pass "pass:$KEY" -base64 -A 2>/dev/null); '
    f'{_PSQL} -c "INSERT INTO credentials_entity (name, data, type) '
    "VALUES ('cred-$i', '$c', 'httpHeaderAuth')\" >/dev/null 2>&1; fi; "
    "f=binaryData/$SVC-$i.bin; head -c 2000 /dev/urandom > $D/$f; "
    f"until {_PSQL} -c \"INSERT INTO execution_entity (binary_file) VALUES ('$f')\" "
    ">/dev/null 2>&1; do sleep 0.2; done; sleep 0.1; done"
)


class N8nLikeProject(AppProject):
    def __init__(self, directory: Path, engine: DockerEngine, *, name: str | None = None) -> None:
        super().__init__(directory, engine, name or f"svn8n{secrets.token_hex(3)}")
        self.db_password = secrets.token_hex(12)
        self.pg_port = free_port()

    def write(self) -> N8nLikeProject:
        d = self.directory
        app_image(self.engine, N8N_IMAGE)
        make_postgres_dir(d, "postgres")
        (d / ".env").write_text(
            f"POSTGRES_PASSWORD={self.db_password}\nPOSTGRES_DB=n8n\n"
            f"PG_PORT={self.pg_port}\nGENERIC_TIMEZONE=Europe/Berlin\n"
        )
        (d / ".env").chmod(0o600)
        (d / "docker-compose.yaml").write_text(self.compose_yaml())
        return self

    def _n8n(self, service: str, command: str) -> str:
        return f"""  {service}:
    image: {N8N_IMAGE}
    network_mode: host
    user: "0:0"
    command: ["sh", "-c", {yaml_str(_WRITER)}]
    environment:
      SVC: {"n8n" if service == "n8n" else "worker"}
      N8N_COMMAND: {command}
      MIGRATE: {yaml_str(MIGRATE)}
      DB_TYPE: postgresdb
      DB_POSTGRESDB_HOST: 127.0.0.1
      DB_POSTGRESDB_PORT: ${{PG_PORT}}
      DB_POSTGRESDB_DATABASE: ${{POSTGRES_DB}}
      DB_POSTGRESDB_USER: postgres
      DB_POSTGRESDB_PASSWORD: ${{POSTGRES_PASSWORD}}
      PGPASSWORD: ${{POSTGRES_PASSWORD}}
      EXECUTIONS_MODE: queue
      GENERIC_TIMEZONE: ${{GENERIC_TIMEZONE}}
    depends_on: [postgres]
    volumes:
{HOST_MOUNTS}      - n8n_storage:{FOLDER}
"""

    def compose_yaml(self) -> str:
        return (
            'version: "2.4"\nservices:\n'
            + postgres_service("postgres", "PG_PORT", "n8n")
            + self._n8n("n8n", "start")
            + self._n8n("n8n-worker", "worker")
            + "volumes:\n  n8n_storage:\n"
        )

    def up(self, credentials: int = 2) -> N8nLikeProject:
        self.compose("up", "-d")
        self.wait_for(
            f"{credentials} stored credentials",
            lambda: int(self.psql("SELECT count(*) FROM credentials_entity") or 0) >= credentials,
        )
        return self

    def psql(self, sql: str) -> str:
        return self.exec(
            "postgres", "psql", "-p", str(self.pg_port), "-U", "postgres", "-At", "-d", "n8n",
            "-c", sql,
        )  # fmt: skip

    def encryption_key(self) -> str:
        key = json.loads(self.exec("n8n", "cat", f"{FOLDER}/config"))["encryptionKey"]
        assert isinstance(key, str)
        return key
