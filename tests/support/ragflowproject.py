"""A RAGFlow-shaped Docker Compose project on a test `DockerEngine`, laid out as RAGFlow's
own ``docker/docker-compose.yml`` with ``docker-compose-base.yml``: services ``mysql``
(this host's MariaDB as its ``mysql`` uid, database ``rag_flow``, root password
``MYSQL_ROOT_PASSWORD=${MYSQL_PASSWORD}`` as RAGFlow sets it), ``redis`` (image
``valkey/valkey:8``; this host's ``redis-server`` with ``--requirepass``), ``minio`` (image
``quay.io/minio/minio``, the named volume ``minio_data`` at ``/data``), ``es01`` (image
``elasticsearch:8.11.3``, the named volume ``esdata01`` at `ES_DATA`) and ``ragflow`` (image
``infiniflow/ragflow``; ``./ragflow-logs`` and its ``service_conf.yaml.template`` bind
mounted). The application images are the host skeleton image under those names.

The writers write like RAGFlow: each upload is first stored as a MinIO object
(``/data/<kb_id>/<location>/xl.meta``, a bucket per knowledge base - written by the ``minio``
service's writer, standing in for RAGFlow's S3 requests) and then recorded as a ``document``
row; ``es01`` keeps adding index segments; ``ragflow`` keeps adding ``task`` rows and log lines.

`up` runs ``docker-compose up -d`` and waits until documents are recorded; `sql` queries
``rag_flow``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from .appproject import HOST_MOUNTS, AppProject, app_image, yaml_str
from .dbservers import free_port, service_user
from .dockerd import CONTAINER_PATH, HOST_IMAGE

if TYPE_CHECKING:
    from .dockerd import DockerEngine

RAGFLOW_IMAGE = "infiniflow/ragflow:v0.20.5"
MINIO_IMAGE = "quay.io/minio/minio:RELEASE.2025-06-13T11-33-47Z"
ES_IMAGE = "elasticsearch:8.11.3"
VALKEY_IMAGE = "valkey/valkey:8"
ES_DATA = "/var/lib/elasticsearch"
"""Its ``path.data`` as Debian's package sets it (the image's ``/usr/share/elasticsearch/data``
would lie under the host's read-only ``/usr``)."""
_SQL = (
    'MYSQL_PWD="$MYSQL_PASSWORD" mariadb --no-defaults -h127.0.0.1 -P"$MYSQL_PORT" -uroot rag_flow'
)
MIGRATE = (
    "CREATE TABLE IF NOT EXISTS knowledgebase (id varchar(32) PRIMARY KEY, name varchar(128));"
    "INSERT IGNORE INTO knowledgebase VALUES ('kb0', 'Manuals'), ('kb1', 'Contracts');"
    "CREATE TABLE IF NOT EXISTS document (id varchar(36) PRIMARY KEY, kb_id varchar(32), "
    "name varchar(255), location varchar(255), created bigint);"
    "CREATE TABLE IF NOT EXISTS task (id bigint AUTO_INCREMENT PRIMARY KEY, doc_id varchar(36));"
)
_RAGFLOW = (
    "trap 'exit 0' TERM INT; "
    f'until printf "%s" "$MIGRATE" | {_SQL} 2>/dev/null; do sleep 0.3; done; '
    "i=0; while true; do i=$((i+1)); "
    f'echo "INSERT INTO task (doc_id) SELECT id FROM document ORDER BY RAND() LIMIT 1" | {_SQL} '
    '2>/dev/null; echo "$(date +%s) task $i" >> /ragflow/logs/ragflow_server.log; '
    "sleep 0.2; done"
)
_MINIO = (
    "trap 'exit 0' TERM INT; mkdir -p /data/.minio.sys; "
    f'until echo "SELECT 1 FROM document LIMIT 1" | {_SQL} >/dev/null 2>&1; do sleep 0.3; done; '
    "i=0; while true; do i=$((i+1)); kb=kb$((i % 2)); doc=$(cat /proc/sys/kernel/random/uuid); "
    "loc=manual-$doc.pdf; mkdir -p /data/$kb/$loc; "
    "head -c 3000 /dev/urandom > /data/$kb/$loc/xl.meta; "
    f"until echo \"INSERT INTO document VALUES ('$doc', '$kb', '$loc', '$loc', $i)\" | {_SQL} "
    "2>/dev/null; do sleep 0.2; done; sleep 0.1; done"
)
_ES = (
    "trap 'exit 0' TERM INT; d=" + ES_DATA + "/indices/Xq3k2f9sTuyVb0/0/index; mkdir -p $d; "
    "i=0; while true; do i=$((i+1)); head -c 512 /dev/urandom > $d/_$i.cfs; sleep 0.2; done"
)


class RAGFlowLikeProject(AppProject):
    def __init__(self, directory: Path, engine: DockerEngine, *, name: str | None = None) -> None:
        super().__init__(directory, engine, name or f"svrag{secrets.token_hex(3)}")
        self.mysql_password = secrets.token_hex(12)
        self.minio_password = secrets.token_hex(12)
        self.redis_password = secrets.token_hex(12)
        self.mysql_port = free_port()
        self.redis_port = free_port()

    def write(self) -> RAGFlowLikeProject:
        for image in (RAGFLOW_IMAGE, MINIO_IMAGE, ES_IMAGE, VALKEY_IMAGE):
            app_image(self.engine, image)
        d = self.directory
        for sub, user in (("volumes/mysql", "mysql"), ("volumes/redis", "redis")):
            (d / sub).mkdir(parents=True, exist_ok=True)
            os.chown(d / sub, *service_user(user))
        (d / "ragflow-logs").mkdir(exist_ok=True)
        (d / "service_conf.yaml.template").write_text(
            "ragflow:\n  host: ${RAGFLOW_HOST:-0.0.0.0}\n  http_port: 9380\n"
            "mysql:\n  name: '${MYSQL_DBNAME:-rag_flow}'\n  password: '${MYSQL_PASSWORD}'\n"
        )
        (d / ".env").write_text(
            "DOC_ENGINE=elasticsearch\nSTACK_VERSION=8.11.3\nELASTIC_PASSWORD=infini_rag_flow\n"
            f"MYSQL_PASSWORD={self.mysql_password}\nMYSQL_DBNAME=rag_flow\n"
            f"MYSQL_PORT={self.mysql_port}\nMINIO_USER=rag_flow\n"
            f"MINIO_PASSWORD={self.minio_password}\nREDIS_PORT={self.redis_port}\n"
            f"REDIS_PASSWORD={self.redis_password}\nRAGFLOW_IMAGE={RAGFLOW_IMAGE}\n"
        )
        (d / ".env").chmod(0o600)
        (d / "docker-compose.yaml").write_text(self.compose_yaml())
        return self

    def compose_yaml(self) -> str:
        mysql_uid, mysql_gid = service_user("mysql")
        redis_uid, redis_gid = service_user("redis")
        init = (
            "[ -d /data/db/mysql ] || mariadb-install-db --no-defaults --datadir=/data/db "
            '--skip-test-db >/dev/null; umask 077; printf "ALTER USER root@localhost '
            "IDENTIFIED BY '%s';\\nCREATE DATABASE IF NOT EXISTS rag_flow;\\n\" "
            '"$MYSQL_ROOT_PASSWORD" > /tmp/init.sql && exec "$0" "$@"'
        )
        sql_env = "      MYSQL_PASSWORD: ${MYSQL_PASSWORD}\n      MYSQL_PORT: ${MYSQL_PORT}\n"
        return f"""version: "2.4"
services:
  mysql:
    image: {HOST_IMAGE}
    network_mode: host
    user: "{mysql_uid}:{mysql_gid}"
    environment:
      MYSQL_ROOT_PASSWORD: ${{MYSQL_PASSWORD}}
      TZ: Asia/Shanghai
      PATH: {CONTAINER_PATH}
    command: ["sh", "-c", {yaml_str(init)}, "/usr/sbin/mariadbd", "--no-defaults",
              "--datadir=/data/db", "--socket=/var/run/mysqld/mysqld.sock",
              "--pid-file=/var/run/mysqld/mysqld.pid", "--port=${{MYSQL_PORT}}",
              "--bind-address=127.0.0.1", "--init-file=/tmp/init.sql",
              "--character-set-server=utf8mb4", "--max_connections=1000"]
    volumes:
{HOST_MOUNTS}      - ./volumes/mysql:/data
  redis:
    image: {VALKEY_IMAGE}
    network_mode: host
    user: "{redis_uid}:{redis_gid}"
    command: ["redis-server", "--port", "${{REDIS_PORT}}", "--bind", "127.0.0.1", "--dir",
              "/data", "--requirepass", "${{REDIS_PASSWORD}}", "--maxmemory", "128mb"]
    volumes:
{HOST_MOUNTS}      - ./volumes/redis:/data
  minio:
    image: {MINIO_IMAGE}
    network_mode: host
    user: "0:0"
    command: ["sh", "-c", {yaml_str(_MINIO)}]
    environment:
      MINIO_ROOT_USER: ${{MINIO_USER}}
      MINIO_ROOT_PASSWORD: ${{MINIO_PASSWORD}}
{sql_env}    depends_on: [mysql]
    volumes:
{HOST_MOUNTS}      - minio_data:/data
  es01:
    image: {ES_IMAGE}
    network_mode: host
    user: "0:0"
    command: ["sh", "-c", {yaml_str(_ES)}]
    environment:
      ELASTIC_PASSWORD: ${{ELASTIC_PASSWORD}}
      xpack.security.enabled: "true"
    volumes:
{HOST_MOUNTS}      - esdata01:{ES_DATA}
  ragflow:
    image: ${{RAGFLOW_IMAGE}}
    network_mode: host
    user: "0:0"
    command: ["sh", "-c", {yaml_str(_RAGFLOW)}]
    environment:
      MIGRATE: {yaml_str(MIGRATE)}
{sql_env}      MINIO_PASSWORD: ${{MINIO_PASSWORD}}
      REDIS_PASSWORD: ${{REDIS_PASSWORD}}
      ELASTIC_PASSWORD: ${{ELASTIC_PASSWORD}}
    depends_on: [mysql, minio, es01, redis]
    volumes:
{HOST_MOUNTS}      - ./ragflow-logs:/ragflow/logs
      - ./service_conf.yaml.template:/ragflow/conf/service_conf.yaml.template
volumes:
  minio_data:
  esdata01:
"""

    def up(self, documents: int = 6) -> RAGFlowLikeProject:
        self.compose("up", "-d")
        self.wait_for(
            f"{documents} documents",
            lambda: int(self.sql("SELECT count(*) FROM document") or 0) >= documents,
            timeout=90,
        )
        return self

    def sql(self, sql: str) -> str:
        """``sql``'s output (tab-separated, no column names) in ``rag_flow``."""
        return self.exec(
            "mysql", "sh", "-c",
            'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb --no-defaults '
            "--socket=/var/run/mysqld/mysqld.sock -uroot -N -B rag_flow -e " + _quote(sql),
        )  # fmt: skip


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
