"""A restored stack as a preset's checks see it (stack layer).

After ``stack restore`` has started every service, a preset checks what only it knows (n8n:
the encryption key decrypts the stored credentials; Open WebUI: its database and uploads).
`RestoredStack` gives those checks the restored project through the Engine API: each
service's container, a file read out of it (whatever its mount: bind or named volume), its
environment, and the URL of a database source as the restore reached it.

Contract: nothing here changes the project; values read (a file, the environment) are
returned to the check only and never printed.
"""

from __future__ import annotations

import io
import os
import sqlite3
import tarfile
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stackvault.errors import SourceError
from stackvault.records.plan import MYSQL, POSTGRES
from stackvault.stack.compose import LABEL_PROJECT, LABEL_SERVICE

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from stackvault.records.stack import StackManifest

FILE_LIMIT = 256 << 20
"""The most a check reads of one file (an SQLite database of an application's own)."""


class RestoredStack:
    """The project ``project`` on the engine of ``client``, restored from ``manifest``."""

    def __init__(self, client: DockerClient, project: str, manifest: StackManifest) -> None:
        self.client = client
        self.project = project
        self.manifest = manifest

    @property
    def facts(self) -> Mapping[str, Any]:
        """The preset's facts as the backup recorded them."""
        return self.manifest.facts

    def container(self, service: str) -> Container | None:
        """The (first) container of ``service``, None when it has none."""
        import docker.errors

        try:
            found = self.client.containers.list(
                all=True,
                filters={
                    "label": [f"{LABEL_PROJECT}={self.project}", f"{LABEL_SERVICE}={service}"]
                },
            )
        except docker.errors.DockerException:
            return None
        return found[0] if found else None

    def read_file(self, service: str, path: str, limit: int = FILE_LIMIT) -> bytes | None:
        """The bytes of file ``path`` in the container of ``service`` (read through the
        engine's archive API: no program is needed in the container); None when there is no
        such container or regular file, or it is larger than ``limit``."""
        import docker.errors

        container = self.container(service)
        if container is None:
            return None
        try:
            stream, stat = container.get_archive(path)
            if int((stat or {}).get("size", 0)) > limit:
                return None
            data = b"".join(stream)
        except docker.errors.DockerException:
            return None
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = tar.next()
                if member is None or not member.isfile():
                    return None
                f = tar.extractfile(member)
                return f.read() if f is not None else None
        except tarfile.TarError:
            return None

    def exists(self, service: str, path: str) -> bool:
        """Whether ``path`` exists in the container of ``service`` (its archive header is
        read, not its content)."""
        import docker.errors

        container = self.container(service)
        if container is None:
            return False
        try:
            stream, _stat = container.get_archive(path)
        except docker.errors.DockerException:
            return False
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        return True

    def sqlite_rows(self, service: str, path: str, sql: str) -> list[tuple[Any, ...]] | None:
        """The rows of ``sql`` in the SQLite database ``path`` of the container of
        ``service`` (read out with its write-ahead log, if any, into a temporary copy: the
        application's file is never opened); None when it cannot be read or queried."""
        main = self.read_file(service, path)
        if main is None:
            return None
        with tempfile.TemporaryDirectory(prefix="stackvault-check-") as tmp:
            copy = os.path.join(tmp, os.path.basename(path))
            with open(copy, "wb") as f:
                f.write(main)
            wal = self.read_file(service, path + "-wal")
            if wal:
                with open(copy + "-wal", "wb") as f:
                    f.write(wal)
            try:
                conn = sqlite3.connect(copy)
                try:
                    return [tuple(r) for r in conn.execute(sql).fetchall()]
                finally:
                    conn.close()
            except sqlite3.Error:
                return None

    def env(self, service: str) -> Mapping[str, str]:
        """The configured environment of the container of ``service`` (secrets among them:
        for checks only), empty when it has no container."""
        container = self.container(service)
        if container is None:
            return {}
        out: dict[str, str] = {}
        for item in (container.attrs.get("Config") or {}).get("Env") or []:
            name, _, value = str(item).partition("=")
            out[name] = value
        return out

    def postgres_url(self) -> str | None:
        """The URL of the plan's PostgreSQL source in its restored container, connected as the
        backup connected (`stackvault.stack.reach.source_url`); None when there is none."""
        return self._database_url(POSTGRES)

    def _database_url(self, role: str) -> str | None:
        from stackvault.stack.reach import source_url

        plan = self.manifest.plan
        for src in plan.sources:
            svc = plan.services.get(src.service)
            if svc is None or svc.role != role:
                continue
            container = self.container(src.service)
            if container is not None:
                return source_url(src, str(container.name), restore=True)
        return None

    def mysql_rows(self, db: str, sql: str) -> list[list[str]] | None:
        """The rows (tab-separated fields) of ``sql`` in database ``db`` of the plan's
        MySQL/MariaDB source in its restored container, connected as the backup connected;
        None when there is no such source or the query fails."""
        from stackvault.sources.mysql.source import MySQLSource
        from stackvault.sources.mysql.tools import rows, run_sql
        from stackvault.sources.registry import open_source

        url = self._database_url(MYSQL)
        if url is None:
            return None
        source = open_source(url)
        try:
            if not isinstance(source, MySQLSource):
                return None
            return rows(run_sql(source.endpoint(), sql, db=db, timeout=60))
        except SourceError:
            return None
        finally:
            source.close()
