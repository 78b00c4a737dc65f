"""A MySQL or MariaDB server as a source (sources layer): one database or every user database,
captured with ``mariadb-dump`` / ``mysqldump``, restored with the ``mariadb`` / ``mysql`` client.

URLs (``mariadb`` may be written for ``mysql``; the artifact kind is ``mysql`` either way)::

    mysql://[USER@]HOST[:PORT]/DB
    mysql+docker://[USER@]CONTAINER[:PORT]/DB

Without a database (the path empty or ``/``) the URL means every database of the server except
``mysql``, ``information_schema``, ``performance_schema`` and ``sys``, plus - when both the
server and the dump tool are MariaDB - the user accounts and their grants.

=================  ===========================================================================
``name``           the artifact's name; default ``mysql-DB`` (``mysql-all``), in a container
                   ``CONTAINER-DB`` (``CONTAINER-all``)
``owner``          ``keep`` (default) or ``none``: restore views, triggers, routines and events
                   without their ``DEFINER`` (they then belong to the restoring account; also
                   what ``--no-owner`` asks)
``socket``         the server's unix socket on this host, or in the container for
                   ``+docker`` (``--socket``; then used as given, no fallback to TCP)
``password_from``  in a container: ``env:NAME`` (its variable holding the password, instead of
                   the choice below), ``file:PATH`` (a file there holding it) or ``none``
``defaults_file``  an option file the tools read after the usual ones
                   (``--defaults-extra-file``): where a password can live
``timeout``        seconds (default 600) any single query of ours may last
=================  ===========================================================================

**Credentials.** On this host the tools' own: ``MYSQL_PWD``, ``~/.my.cnf`` and the option
files (``defaults_file``); the user from the URL, else the tools' default. No secret is ever
put in an argument list. In a container the tools run *inside* it (through the Engine API)
over its default unix socket (TCP on 127.0.0.1 if the socket does not answer), as ``root``
with ``MARIADB_ROOT_PASSWORD`` / ``MYSQL_ROOT_PASSWORD`` from the container's own environment,
or - when the URL names that user or there is no root password - as ``MARIADB_USER`` /
``MYSQL_USER`` with ``MARIADB_PASSWORD`` / ``MYSQL_PASSWORD``; the value never leaves the
container (``MYSQL_PWD`` is set from it inside).

**Capture of one database**: ``mariadb-dump --single-transaction --quick --routines --triggers
--events --hex-blob --skip-dump-date --no-tablespaces --default-character-set=utf8mb4 DB``
(Oracle's mysqldump also gets ``--set-gtid-purged=OFF``, and ``--column-statistics=0`` against
MariaDB) streams straight into the sink as ``dump.sql``. ``--single-transaction`` reads every
InnoDB table in one consistent snapshot without locking writers (MyISAM and other
non-transactional tables are read as they are at that moment). Without ``--databases`` the
dump holds no ``CREATE DATABASE``/``USE``, so it restores under any name; without the dump
date, two dumps of an unchanged database are byte-identical and the repository stores the
second for free.

As the stream passes, a scanner (`stackvault.sources.mysqlclient.DumpScanner`) counts the rows
of every table in it: the **facts are the dump's own content**, exactly, whatever is written to
the server meanwhile. The capture fails unless the tool exited 0, the dump ends with the tool's
``-- Dump completed`` trailer (a dump cut anywhere lacks it), and the sink stored exactly the
bytes read (size and SHA-256; in a container also as counted inside it).

**Capture of every database**: each database as above into ``databases/NAME.sql`` (each its
own snapshot: consistent per database, not across them), and ``users.sql`` from ``mariadb-dump
--system=users`` (``CREATE USER`` / ``GRANT`` with password hashes) when it can be had; else a
notice says the accounts are not captured.

**Artifact**: the dump(s), ``users.sql``, and ``manifest.json``: ``{"format": 1, "mode":
"database"|"server", "databases": {NAME: {"file", "charset", "collation", "facts"}}, "users":
"users.sql"|null, "dump_tool", "server_version"}``.

**Metadata** returned by `MySQLSource.capture`::

    {"facts": F, "mode": …, "databases": [NAME, ...], "server_version": "10.11.6-MariaDB",
     "server": "MariaDB"|"MySQL", "dump_tool": "mariadb-dump Ver 10.19 …",
     "files": {PATH: {"size", "sha256"}}, "snapshot_consistency": "snapshot"|"per-database",
     "captured_as": "root@localhost", "where": …, "users": [NAME, ...] | None,
     "container": {...} (+docker), "seconds": {"total": s, "databases": {NAME: s}}}

with the **facts** of one database ``{"tables": {NAME: rows}}`` (base tables, system-versioned
ones included; views and sequences are not tables) and of a server ``{"databases": {NAME:
<facts of one database>}}``. `probe` counts the same now (in one consistent snapshot), so
`compare_facts` is empty after a faithful restore.

**Restore**: see `stackvault.sources.mysql.restore`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

from stackvault.errors import SourceError, UsageError
from stackvault.sources.contract import (
    ArtifactReader,
    ArtifactRestoreOptions,
    ArtifactSink,
    EntryMeta,
)
from stackvault.sources.dbdump.source import (
    DatabaseRestoreResult,
    DatabaseSource,
    ServerFacts,
    Tap,
    dump_path,
    url_parts,
)
from stackvault.sources.mysql.restore import MANIFEST, USERS, MySQLRestore
from stackvault.sources.mysql.tools import (
    TRAILER,
    DatabaseFacts,
    DumpScanner,
    Endpoint,
    ServerInfo,
    accounts_in,
    object_count,
    select_tools,
    server_info,
    summarize,
    table_facts,
    translate,
)
from stackvault.sources.tools.host import HostRunner
from stackvault.sources.tools.runner import StreamResult
from stackvault.sources.url import SourceURL

DUMP = "dump.sql"
"""The dump of a one-database artifact."""

_OPTIONS = frozenset({"owner", "socket", "defaults_file", "timeout", "password_from"})
_PASSWORD_FROM = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)|file:/.*|none")
_DOCKER_SCHEMES = ("mysql+docker", "mariadb+docker")


def database_path(db: str) -> str:
    """Where a server artifact keeps the dump of ``db``: ``databases/NAME.sql``."""
    return dump_path(db, "sql")


ROOT_PASSWORDS = ("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD")
"""The official images' variables of the root password (each also as ``NAME_FILE``)."""


def password_in(env: Mapping[str, str], var: str) -> str | None:
    """Where a container keeps the password of variable ``var``: ``var`` itself when set,
    else ``file:PATH`` for the file ``var_FILE`` names (a Docker secret), else None."""
    if env.get(var):
        return var
    path = env.get(f"{var}_FILE", "")
    return f"file:{path}" if path.startswith("/") else None


class MySQLSource(DatabaseSource):
    """One MySQL/MariaDB database, or every user database of a server; see the module
    docstring."""

    kind = "mysql"
    schemes = ("mysql", "mariadb", "mysql+docker", "mariadb+docker")
    extra_file = USERS
    extra_what = "user accounts"
    extra_key = "users"

    def __init__(
        self,
        *,
        name: str,
        location: str,
        database: str | None,
        host: str | None = None,
        port: int | None = None,
        user: str | None = None,
        container: str | None = None,
        socket: str | None = None,
        defaults_file: str | None = None,
        no_owner: bool = False,
        timeout: float = 600.0,
        password_from: str | None = None,
    ) -> None:
        super().__init__(
            name,
            location,
            database=database,
            host=host,
            port=port,
            user=user,
            container=container,
            no_owner=no_owner,
            timeout=timeout,
        )
        self.socket = socket
        self.defaults_file = defaults_file
        self.password_from = password_from
        self._ep: Endpoint | None = None

    @classmethod
    def from_url(cls, url: SourceURL) -> MySQLSource:
        url.require_options(_OPTIONS)
        parts = url_parts(url)
        defaults_file = url.query.get("defaults_file")
        if defaults_file is not None and not os.access(defaults_file, os.R_OK):
            raise UsageError(
                f"option defaults_file={defaults_file!r} of {url.redacted} names no readable file"
            )
        database = parts.database or "all"
        base = url.scheme.split("+", 1)[0]
        user, port, path, common = parts.user_part, parts.port_part, parts.path, parts.common
        if url.scheme in _DOCKER_SCHEMES:
            if not url.host:
                raise UsageError(
                    f"the source URL {url.redacted} names no container: write "
                    f"{url.scheme}://CONTAINER/DB"
                )
            if defaults_file is not None:
                raise UsageError(
                    f"option defaults_file of {url.redacted} is for this host; in a container "
                    "the tools use its own configuration and environment"
                )
            password_from = url.query.get("password_from")
            if password_from is not None and not _PASSWORD_FROM.fullmatch(password_from):
                raise UsageError(
                    f"option password_from of {url.redacted} must be env:NAME (a variable "
                    "of the container), file:PATH (a file in it) or none"
                )
            return cls(
                name=url.artifact_name(f"{url.host}-{database}"),
                location=f"{url.scheme}://{user}{url.host}{port}{path}",
                container=url.host,
                socket=url.query.get("socket"),
                password_from=password_from,
                **common,
            )
        if "password_from" in url.query:
            raise UsageError(
                f"option password_from of {url.redacted} is for a container; on this host "
                "use a defaults_file or MYSQL_PWD"
            )
        host = f"[{url.host}]" if ":" in url.host else url.host
        return cls(
            name=url.artifact_name(f"{base}-{database}"),
            location=f"{url.scheme}://{user}{host}{port}{path}",
            host=url.host or None,
            socket=url.query.get("socket"),
            defaults_file=defaults_file,
            **common,
        )

    def close(self) -> None:
        super().close()
        self._ep = None

    # --- where the tools run ----------------------------------------------------------------

    def endpoint(self, *, dump: bool = False) -> Endpoint:
        """How the tools reach the server (made once): the client picked, with ``dump`` the dump
        tool too, and in a container the socket or TCP."""
        if self._ep is None:
            self._ep = self._container_endpoint() if self.container else self._host_endpoint()
            select_tools(self._ep, dump=dump)
            if self.container:
                self._choose_connection(self._ep)
        elif dump and not self._ep.dump_version:
            select_tools(self._ep, dump=True)
        return self._ep

    def _host_endpoint(self) -> Endpoint:
        args: list[str] = []
        if self.host:
            args += ["-h", self.host]
        if self.port:
            args += ["-P", str(self.port)]
        if self.socket:
            args.append(f"--socket={self.socket}")
        if self.user:
            args += ["-u", self.user]
        first = [f"--defaults-extra-file={self.defaults_file}"] if self.defaults_file else []
        if self.host:
            address = f"at {self.host}:{self.port or os.environ.get('MYSQL_TCP_PORT') or 3306}"
        else:
            address = f"at {self.socket or 'the local socket'}"
        return Endpoint(
            runner=HostRunner(),
            args=args,
            first=first,
            address=address,
            in_container=False,
            user=self.user,
        )

    def _container_endpoint(self) -> Endpoint:
        from stackvault.sources.docker.engine import image_facts
        from stackvault.sources.docker.exec import ContainerRunner

        container, cenv = self._running_container()
        assert self._client is not None
        root_var = next((v for v in ROOT_PASSWORDS if cenv.get(v) or cenv.get(f"{v}_FILE")), None)
        app_user_var = next((v for v in ("MARIADB_USER", "MYSQL_USER") if cenv.get(v)), None)
        app_user = cenv.get(app_user_var) if app_user_var else None
        user = self.user or ("root" if root_var or not app_user else app_user)
        password_from: str | None = None
        if user == "root" and root_var:
            password_from = password_in(cenv, root_var)
        elif app_user is not None and user == app_user:
            prefix = app_user_var.split("_", 1)[0] if app_user_var else "MYSQL"
            password_from = password_in(cenv, f"{prefix}_PASSWORD")
        if self.password_from is not None:  # as the plan says
            how = self.password_from
            password_from = None if how == "none" else how[4:] if how.startswith("env:") else how
        env_from = {"MYSQL_PWD": password_from} if password_from else None
        runner = ContainerRunner(self._client, container, env_from=env_from)
        args = ["-u", user]
        if self.port:
            args += ["-P", str(self.port)]
        if self.socket:
            args.append(f"--socket={self.socket}")
        self._container_facts = {"name": container.name, **image_facts(container)}
        return Endpoint(
            runner=runner,
            args=args,
            address=f"in container {container.name}",
            in_container=True,
            user=user,
            password_from=password_from,
        )

    def _choose_connection(self, ep: Endpoint) -> None:
        """The container's default socket, or TCP on 127.0.0.1 when only that answers; a
        socket given (``?socket=``) is used as it is."""
        if self.socket:
            if self._container_facts is not None:
                self._container_facts["connection"] = "socket"
            return
        probe = ep.argv(ep.client, "--batch", "--skip-column-names")
        res = ep.runner.run(probe, stdin=b"SELECT 1;", timeout=60)
        socket = True
        if res.code != 0 and ("2002" in res.stderr or "through socket" in res.stderr):
            ep.switch_to_tcp()
            socket = False
        if self._container_facts is not None:
            self._container_facts["connection"] = "socket" if socket else "tcp"

    # --- capture ----------------------------------------------------------------------------

    def capture(self, sink: ArtifactSink) -> dict[str, Any]:
        started = time.monotonic()
        ep = self.endpoint(dump=True)
        info = server_info(ep, self.timeout)
        files: dict[str, dict[str, Any]] = {}
        done: dict[str, dict[str, Any]] = {}
        users: list[str] | None = None
        if self.database is not None:
            if self.database not in info["databases"]:
                raise SourceError(
                    f"database {self.database} does not exist at MySQL {ep.address}",
                    hint="check the name (SHOW DATABASES lists them), or leave it out of the "
                    "URL to capture every database",
                )
            done[self.database] = self._capture_database(ep, sink, info, self.database, DUMP)
            facts: dict[str, Any] = done[self.database]["facts"]
        else:
            users = self._capture_users(ep, sink, info, files)
            for db in info["databases"]:
                sink.check_interrupted()
                done[db] = self._capture_database(ep, sink, info, db, database_path(db))
            facts = {"databases": {db: one["facts"] for db, one in done.items()}}
        for one in done.values():
            files[one["file"]] = {"size": one["size"], "sha256": one["sha256"]}
        mode = "database" if self.database is not None else "server"
        manifest = {
            "format": 1,
            "mode": mode,
            "databases": {
                db: {
                    "file": one["file"],
                    "charset": info["databases"][db]["charset"],
                    "collation": info["databases"][db]["collation"],
                    "facts": one["facts"],
                }
                for db, one in done.items()
            },
            "users": USERS if users is not None else None,
            "dump_tool": ep.dump_version,
            "server_version": info["version"],
        }
        stored = sink.add_json(MANIFEST, manifest, EntryMeta(mode=0o600))
        files[MANIFEST] = {"size": stored.size, "sha256": stored.sha256}
        meta: dict[str, Any] = {
            "facts": facts,
            "mode": mode,
            "databases": list(done),
            "server_version": info["version"],
            "server": "MariaDB" if info["mariadb"] else "MySQL",
            "dump_tool": ep.dump_version,
            "files": files,
            "snapshot_consistency": "snapshot" if self.database is not None else "per-database",
            "captured_as": info["account"],
            "where": ep.runner.where,
            "users": users,
            "seconds": {
                "total": round(time.monotonic() - started, 3),
                "databases": {db: one["seconds"] for db, one in done.items()},
            },
        }
        if self._container_facts is not None:
            meta["container"] = self._container_facts
        return meta

    def _dump_options(self, info: ServerInfo) -> list[str]:
        ep = self.endpoint(dump=True)
        options = [
            "--single-transaction",
            "--quick",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--skip-dump-date",
            "--no-tablespaces",
            "--default-character-set=utf8mb4",
            "--max-allowed-packet=1G",
        ]
        if ep.oracle_dump:
            options.append("--set-gtid-purged=OFF")
            if info["mariadb"]:
                options.append("--column-statistics=0")
        return options

    def _capture_database(
        self, ep: Endpoint, sink: ArtifactSink, info: ServerInfo, db: str, path: str
    ) -> dict[str, Any]:
        t0 = time.monotonic()
        argv = ep.argv(ep.dump, *self._dump_options(info), db=db)
        stream = ep.runner.output(argv, env=ep.env, label=f"{ep.dump} of database {db}")
        scanner = DumpScanner()
        try:
            with stream:
                stored = sink.add_file(path, Tap(stream, scanner.feed), EntryMeta(mode=0o600))
                result = stream.finish()
        except SourceError as exc:
            raise translate(exc, ep, db) from exc
        scanner.finish()
        self._check_dump(ep, db, scanner, stored.size, stored.sha256, result)
        return {
            "facts": {"tables": dict(sorted(scanner.tables.items()))},
            "file": path,
            "size": stored.size,
            "sha256": stored.sha256,
            "seconds": round(time.monotonic() - t0, 3),
        }

    def _check_dump(
        self,
        ep: Endpoint,
        db: str,
        scanner: DumpScanner,
        size: int,
        sha256: str,
        result: StreamResult,
    ) -> None:
        if not scanner.complete():
            raise SourceError(
                f"the dump of database {db} {ep.runner.where} ({size} bytes) does not end with "
                f"the tool's {TRAILER.decode()!r} trailer, so it is incomplete; nothing was "
                "recorded"
            )
        if size != result.size or sha256 != result.sha256:
            raise SourceError(
                f"the dump of database {db} was stored as {size} bytes but {result.size} were "
                "read; nothing was recorded"
            )

    def _capture_users(
        self,
        ep: Endpoint,
        sink: ArtifactSink,
        info: ServerInfo,
        files: dict[str, dict[str, Any]],
    ) -> list[str] | None:
        if ep.oracle_dump or not info["mariadb"]:
            sink.notice(
                f"user accounts {ep.address} are not captured (only mariadb-dump against a "
                "MariaDB server dumps them portably); recreate them by hand after a restore"
            )
            return None
        argv = ep.argv(ep.dump, "--system=users", "--skip-dump-date")
        res = ep.runner.run(argv, env=ep.env, timeout=self.timeout)
        text = res.stdout.decode("utf-8", "replace")
        if res.code != 0 or TRAILER.decode() not in text[-200:]:
            tail = " | ".join(line for line in res.stderr.splitlines()[-3:] if line.strip())
            sink.notice(
                f"user accounts {ep.address} could not be captured "
                f"({tail or 'incomplete output'}); the databases are captured without them"
            )
            return None
        stored = sink.add_bytes(USERS, res.stdout, EntryMeta(mode=0o600))
        files[USERS] = {"size": stored.size, "sha256": stored.sha256}
        return accounts_in(text)

    # --- probe and target -------------------------------------------------------------------

    def probe(self) -> DatabaseFacts | ServerFacts[DatabaseFacts]:
        ep = self.endpoint()
        if self.database is not None:
            return table_facts(ep, self.database, self.timeout)
        info = server_info(ep, self.timeout)
        return {"databases": {db: table_facts(ep, db, self.timeout) for db in info["databases"]}}

    def describe_target(self) -> str | None:
        ep = self.endpoint()
        info = server_info(ep, self.timeout)
        names = [self.database] if self.database is not None else list(info["databases"])
        busy = []
        for db in names:
            if db not in info["databases"]:
                continue
            objects = object_count(ep, db, self.timeout)
            if objects:
                busy.append((db, objects))
        if not busy:
            return None
        if self.database is not None:
            db, objects = busy[0]
            return summarize(db, table_facts(ep, db, self.timeout), objects)
        shown = ", ".join(db for db, _n in busy[:5]) + (", …" if len(busy) > 5 else "")
        return f"the server {ep.address} holds {len(busy)} databases with data: {shown}"

    # --- restore ----------------------------------------------------------------------------

    def restore(
        self, reader: ArtifactReader, options: ArtifactRestoreOptions
    ) -> DatabaseRestoreResult:
        return MySQLRestore(self, self.endpoint, reader, options).run()
