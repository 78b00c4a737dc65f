"""A PostgreSQL server as a source (sources layer): one database or all of them, captured with
``pg_dump`` in its custom format, restored with ``pg_restore``.

URLs::

    postgres://[USER@]HOST[:PORT]/DB        (postgresql://… is the same)
    postgres+docker://[USER@]CONTAINER[:PORT]/DB

Without a database (the path empty or ``/``) the URL means *every* database of the server
(templates and databases that refuse connections left out) plus the roles and tablespaces.

===========  ==================================================================================
``name``     the artifact's name; default ``postgres-DB`` (``postgres-all``), in a container
             ``CONTAINER-DB`` (``CONTAINER-all``)
``owner``    ``keep`` (default) or ``none``: restore without object ownership and privileges
             (``pg_restore --no-owner --no-privileges``; also what ``--no-owner`` asks)
``sslmode``  libpq's ``sslmode`` (``disable`` … ``verify-full``), passed as ``PGSSLMODE``
``timeout``  seconds (default 600) that any single wait may last: a statement of ours (a row
             count, CREATE/DROP DATABASE, ANALYZE) and the wait of pg_dump for a table lock
             (``--lock-wait-timeout``). A dump itself takes as long as it takes.
``socket``   in a container: the directory of the server's unix socket there (``-h DIR``)
``password_from``
             in a container: ``env:NAME`` (its variable holding the password; default
             ``POSTGRES_PASSWORD`` when set), ``file:PATH`` (a file there holding it, such as
             a Docker secret; default the file ``POSTGRES_PASSWORD_FILE`` names) or ``none``
===========  ==================================================================================

**Credentials.** On this host: libpq's own environment and files - ``PGPASSWORD``,
``PGPASSFILE`` / ``~/.pgpass``, ``PGSSLMODE``, ``PGSSLROOTCERT``… - and the user from the URL,
else ``PGUSER``, else the login name; the tools never prompt (``-w``/``--no-password``), and
no secret is ever put in an argument list. In a container the tools run *inside* it (through
the Engine API, `ContainerRunner`) as the container's user, connect as ``POSTGRES_USER`` (or
the URL's user; default ``postgres``) over the default unix socket, and, if the server asks,
with ``PGPASSWORD`` set to the container's own ``POSTGRES_PASSWORD`` (or the content of the
file ``POSTGRES_PASSWORD_FILE`` names: a Docker secret, a mounted file) inside the container (the
value never leaves it). If the socket is missing there, ``pg_isready`` decides to use TCP on
127.0.0.1 instead. A container needs no client tools on this host. How a server that was
started otherwise is reached is said by the URL: its port (``CONTAINER:PORT``), ``?socket=DIR``
(the directory of its unix socket in the container, used as given: no fallback to TCP) and
``?password_from=env:NAME`` (the container's variable holding the password) or ``none``.

**Capture of one database.** One code path for both places:

1. a ``psql`` session opens ``BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY`` and exports
   its snapshot (``pg_export_snapshot()``); it reads the server version, the database's
   properties and, *in that same transaction*, the exact number of rows of every user table
   (``SELECT count(*)`` per table, ``row_security = off`` as pg_dump sets it) and of large
   objects;
2. the versions are checked: a ``pg_dump`` of an older major version than the server refuses
   to dump it, so this is said before it runs ("pg_dump 15 cannot dump a PostgreSQL 16
   server; install postgresql-client-16 or capture through the container …"); pg_dump's own
   "server version mismatch" is translated the same way;
3. ``pg_dump --format=custom --compress=0 --snapshot=ID --create --no-password`` streams
   straight into the sink as ``dump.pgc`` (or ``databases/DB.pgc``) - uncompressed, so that
   the repository's chunking deduplicates it across days (two dumps of an unchanged database
   differ only in the header's timestamp) and compresses it itself. ``--create`` records the
   database's own properties in the archive for anyone restoring it by hand with
   ``pg_restore --create``; restores here ignore that entry (see below);
4. **completeness**: the stream is fed at the same time to ``pg_restore -f /dev/null`` where
   pg_dump runs (the runner's ``verify``). pg_restore reads an archive from a pipe strictly
   in order and must reach the end of every data block (each ends with a zero-length chunk):
   a 20 MB archive cut at every point tried - in the header, the table of contents, a data
   block, or only its last byte - made it fail ("could not read from input file: end of
   file"), and so does a test here with a pg_dump that exits 0 three bytes short. The capture
   fails unless pg_dump and the verifier both exit 0, the stream starts with the custom
   format's header (``PGDMP``, format 1) and the sink stored exactly the bytes read (size and
   SHA-256; in a container also as counted inside it);
5. only then is the exporting transaction committed and the session closed: it stays open
   while pg_dump runs, so the snapshot pg_dump imported stays valid, and its table locks keep
   a ``TRUNCATE`` (not MVCC-safe) from slipping in between the counts and the dump.

The row counts therefore describe exactly the data in the dump, whatever is written meanwhile.

**Capture of every database**: ``pg_dumpall --globals-only`` (roles with their password
hashes, memberships, tablespaces) into ``globals.sql`` (checked to end with pg_dumpall's
"dump complete" trailer; a role that may not read ``pg_authid`` gets ``--no-role-passwords``
and a notice), then each database as above into ``databases/NAME.pgc`` (NAME percent-encoded
when it is not plain ``[A-Za-z0-9_.-]``). **Each database is self-consistent (its own
snapshot), not one cut across databases**: PostgreSQL has no snapshot spanning databases.

**Artifact**: the dump file(s), ``globals.sql`` for a server, and ``manifest.json``: ``{"format":
1, "mode": "database"|"server", "databases": {NAME: {"file", "properties", "facts"}}, "globals",
"dump_tool", "server_version_num"}``; the properties are the database's encoding, locale
(provider, collate, ctype, ICU/builtin locale), owner, comment, connection limit, settings
(``ALTER DATABASE/ROLE … SET``) and privileges.

**Metadata** returned by `PostgresSource.capture`::

    {"facts": F, "mode": "database"|"server", "databases": [NAME, ...],
     "server_version": "15.5", "server_version_num": 150005, "server": "PostgreSQL 15.5 on …",
     "dump_tool": "pg_dump (PostgreSQL) 15.5 …", "format": "custom", "compression": "none",
     "files": {PATH: {"size": N, "sha256": HEX}},
     "snapshot_consistency": "snapshot" (one database) | "per-database",
     "snapshots": {NAME: SNAPSHOT_ID}, "captured_as": ROLE, "where": "on this host"|…,
     "roles": [...], "role_passwords": bool            (server captures)
     "container": {"name", "image", "image_id", "repo_digests",
                   "connection": "socket"|"tcp"}                   (+docker)
     "seconds": {"total": s, "databases": {NAME: {"count": s, "dump": s}}}}

with the **facts** of one database ``{"tables": {"schema.table": rows}, "large_objects": n}``
(names as ``format('%I.%I')`` writes them: ``public.users``, ``public."Odd Name"``; user
tables only: ordinary tables and partitions, not temporary tables, catalogs or tables of
extensions), and of a server ``{"databases": {NAME: <facts of one database>}}``. `probe`
returns the same shape, counted now, so `compare_facts` is empty after a faithful restore.
The facts of a one-database artifact carry no database name: it may be restored under another.

**Restore**: see `stackvault.sources.postgres.restore`.

Errors are translated into sentences (`stackvault.sources.pgsql.translate`): a wrong or missing
password, a refused connection, an unknown host, a missing database or role, permission denied
for a table, a lock timeout, a terminated backend, a dump tool older than the server, and a
client tool not installed on this host (naming ``postgresql-client``).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

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
from stackvault.sources.postgres.restore import GLOBALS, MANIFEST, DatabaseTarget, PostgresRestore
from stackvault.sources.postgres.sql import (
    BEGIN_SNAPSHOT,
    GLOBALS_TRAILER,
    SERVER_SQL,
    database_properties,
    roles_in_globals,
)
from stackvault.sources.postgres.tools import (
    DatabaseFacts,
    Endpoint,
    database_facts,
    open_psql,
    require_dump_tool,
    require_tools,
    server_info,
    summarize_tables,
    table_facts,
    translate,
)
from stackvault.sources.tools.host import HostRunner
from stackvault.sources.tools.runner import StreamResult
from stackvault.sources.url import SourceURL

DUMP = "dump.pgc"
"""The dump of a one-database artifact."""

_OPTIONS = frozenset({"owner", "sslmode", "timeout", "socket", "password_from"})
_PASSWORD_FROM = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)|file:/.*|none")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_MAGIC = b"PGDMP"
_FORMAT_CUSTOM = 1  # the archive header's format byte (archCustom)


def default_password_from(env: Mapping[str, str]) -> str:
    """Where the official image's container keeps the password: ``POSTGRES_PASSWORD``, else
    the file ``POSTGRES_PASSWORD_FILE`` names (``file:PATH``), else nowhere (``none``)."""
    if "POSTGRES_PASSWORD" in env:
        return "env:POSTGRES_PASSWORD"
    if env.get("POSTGRES_PASSWORD_FILE", "").startswith("/"):
        return f"file:{env['POSTGRES_PASSWORD_FILE']}"
    return "none"


def database_path(db: str) -> str:
    """Where a server artifact keeps the dump of ``db``: ``databases/NAME.pgc``."""
    return dump_path(db, "pgc")


class PostgresSource(DatabaseSource):
    """One PostgreSQL database, or every database of a server; see the module docstring."""

    kind = "postgres"
    schemes = ("postgres", "postgresql", "postgres+docker")
    extra_file = GLOBALS
    extra_what = "roles"
    extra_key = "globals"

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
        sslmode: str | None = None,
        no_owner: bool = False,
        timeout: float = 600.0,
        socket: str | None = None,
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
        self.sslmode = sslmode
        self.socket = socket
        self.password_from = password_from
        self._ep: Endpoint | None = None

    @classmethod
    def from_url(cls, url: SourceURL) -> PostgresSource:
        url.require_options(_OPTIONS)
        parts = url_parts(url)
        sslmode = url.query.get("sslmode")
        if sslmode is not None and sslmode not in _SSLMODES:
            raise UsageError(
                f"option sslmode={sslmode!r} of {url.redacted} must be one of "
                f"{', '.join(_SSLMODES)}"
            )
        database = parts.database or "all"
        user, port, path = parts.user_part, parts.port_part, parts.path
        common = parts.common
        socket, password_from = url.query.get("socket"), url.query.get("password_from")
        if url.scheme == "postgres+docker":
            container = _original_host(url)
            if not container:
                raise UsageError(
                    f"the source URL {url.redacted} names no container: write "
                    "postgres+docker://CONTAINER/DB"
                )
            if socket is not None and not socket.startswith("/"):
                raise UsageError(
                    f"option socket of {url.redacted} must be the absolute directory of the "
                    "server's unix socket in the container"
                )
            if password_from is not None and not _PASSWORD_FROM.fullmatch(password_from):
                raise UsageError(
                    f"option password_from of {url.redacted} must be env:NAME (a variable "
                    "of the container), file:PATH (a file in it) or none"
                )
            return cls(
                name=url.artifact_name(f"{container}-{database}"),
                location=f"postgres+docker://{user}{container}{port}{path}",
                container=container,
                sslmode=sslmode,
                socket=socket,
                password_from=password_from,
                **common,
            )
        if socket is not None or password_from is not None:
            raise UsageError(
                f"options socket and password_from of {url.redacted} are for a container; on "
                "this host write the socket directory as the host (postgres://%2Frun%2Fpg/DB) "
                "and use PGPASSWORD or ~/.pgpass"
            )
        host = f"[{url.host}]" if ":" in url.host else url.host
        return cls(
            name=url.artifact_name(f"postgres-{database}"),
            location=f"postgres://{user}{host}{port}{path}",
            host=url.host or None,
            sslmode=sslmode,
            **common,
        )

    def close(self) -> None:
        super().close()
        self._ep = None

    # --- where the tools run ----------------------------------------------------------------

    def endpoint(self) -> Endpoint:
        if self._ep is None:
            self._ep = self._container_endpoint() if self.container else self._host_endpoint()
        return self._ep

    def _host_endpoint(self) -> Endpoint:
        args: list[str] = []
        if self.host:
            args += ["-h", self.host]
        if self.port:
            args += ["-p", str(self.port)]
        if self.user:
            args += ["-U", self.user]
        env: dict[str, str] = {}
        if self.sslmode:
            env["PGSSLMODE"] = self.sslmode
        if "PGCONNECT_TIMEOUT" not in os.environ:
            env["PGCONNECT_TIMEOUT"] = "15"
        host = self.host or os.environ.get("PGHOST") or "the local socket"
        port = self.port or os.environ.get("PGPORT") or 5432
        user = self.user or os.environ.get("PGUSER")
        if user is None:
            with contextlib.suppress(Exception):
                import getpass

                user = getpass.getuser()
        return Endpoint(
            runner=HostRunner(),
            args=args,
            env=env,
            address=f"at {host}:{port}" if not host.startswith("/") else f"at {host}",
            in_container=False,
            user=user,
        )

    def _container_endpoint(self) -> Endpoint:
        from stackvault.sources.docker.engine import image_facts
        from stackvault.sources.docker.exec import ContainerRunner

        container, cenv = self._running_container()
        assert self._client is not None
        user = self.user or cenv.get("POSTGRES_USER") or "postgres"
        how = self.password_from or default_password_from(cenv)
        env_from = None
        if how.startswith("env:"):
            env_from = {"PGPASSWORD": how[4:]}
        elif how.startswith("file:"):
            env_from = {"PGPASSWORD": how}
        runner = ContainerRunner(self._client, container, env_from=env_from)
        args = ["-U", user]
        if self.socket:
            args += ["-h", self.socket]
        if self.port:
            args += ["-p", str(self.port)]
        env = {"PGCONNECT_TIMEOUT": "15"}
        if self.sslmode:
            env["PGSSLMODE"] = self.sslmode
        ep = Endpoint(
            runner=runner,
            args=args,
            env=env,
            address=f"in container {container.name}",
            in_container=True,
            container=container.name,
            user=user,
            socket=True,
        )
        # The default unix socket, or TCP on 127.0.0.1 if only that answers; a socket
        # directory given is used as it is (a wrong one fails, naming it).
        # (pg_isready: 0 accepting, 1 rejecting e.g. starting up, 2 no answer.)
        if not self.socket:
            with contextlib.suppress(SourceError):  # no pg_isready: stay with the socket
                ready = runner.run(["pg_isready", "-q", *args], env=env, timeout=60)
                if ready.code == 2:
                    tcp_args = ["pg_isready", "-q", "-h", "127.0.0.1", *args]
                    if runner.run(tcp_args, env=env, timeout=60).code in (0, 1):
                        ep.switch_to_tcp()
        self._container_facts = {
            "name": container.name,
            **image_facts(container),
            "connection": "socket" if ep.socket else "tcp",
        }
        return ep

    # --- capture ----------------------------------------------------------------------------

    def capture(self, sink: ArtifactSink) -> dict[str, Any]:
        started = time.monotonic()
        ep = self.endpoint()
        tools = ["psql", "pg_dump", "pg_restore"]
        require_tools(ep, tools if self.database is not None else [*tools, "pg_dumpall"])
        done: dict[str, dict[str, Any]] = {}
        files: dict[str, dict[str, Any]] = {}
        extra: dict[str, Any] = {}
        if self.database is not None:
            done[self.database] = self._capture_database(ep, sink, self.database, DUMP)
            facts: dict[str, Any] = done[self.database]["facts"]
        else:
            info = server_info(ep, self.timeout)
            for db in info["unconnectable"]:
                sink.notice(
                    f"database {db} {ep.address} does not accept connections "
                    "(datallowconn = false) and is not captured"
                )
            extra = self._capture_globals(ep, sink, int(info["server_version_num"]))
            files[GLOBALS] = extra.pop("file")
            for db in info["databases"]:
                sink.check_interrupted()
                done[db] = self._capture_database(ep, sink, db, database_path(db))
            facts = {"databases": {db: one["facts"] for db, one in done.items()}}
        for one in done.values():
            files[one["file"]] = {"size": one["size"], "sha256": one["sha256"]}
        globals_tool = extra.pop("dump_tool_globals", "")
        first = next(iter(done.values()), None)
        server = first["server"] if first else {}
        dump_tool = first["dump_tool"] if first else globals_tool
        mode = "database" if self.database is not None else "server"
        manifest = {
            "format": 1,
            "mode": mode,
            "databases": {
                db: {"file": one["file"], "properties": one["properties"], "facts": one["facts"]}
                for db, one in done.items()
            },
            "globals": GLOBALS if self.database is None else None,
            "dump_tool": dump_tool,
            "server_version_num": server.get("server_version_num", ep.server_version_num),
        }
        stored = sink.add_json(MANIFEST, manifest, EntryMeta(mode=0o600))
        files[MANIFEST] = {"size": stored.size, "sha256": stored.sha256}
        meta: dict[str, Any] = {
            "facts": facts,
            "mode": mode,
            "databases": list(done),
            "server_version": server.get("server_version"),
            "server_version_num": server.get("server_version_num", ep.server_version_num),
            "server": server.get("version"),
            "dump_tool": dump_tool,
            "format": "custom",
            "compression": "none",
            "files": files,
            "snapshot_consistency": "snapshot" if self.database is not None else "per-database",
            "snapshots": {db: one["snapshot"] for db, one in done.items()},
            "captured_as": server.get("user") or extra.get("user"),
            "where": ep.runner.where,
            **extra,
            "seconds": {
                "total": round(time.monotonic() - started, 3),
                "databases": {db: one["seconds"] for db, one in done.items()},
            },
        }
        if self._container_facts is not None:
            meta["container"] = self._container_facts
        return meta

    def _capture_database(
        self, ep: Endpoint, sink: ArtifactSink, db: str, path: str
    ) -> dict[str, Any]:
        """Counts and dump of ``db`` in one snapshot; see the module docstring."""
        t0 = time.monotonic()
        psql = open_psql(ep, db, self.timeout)
        try:
            psql.run(BEGIN_SNAPSHOT)
            snapshot = psql.value("SELECT pg_catalog.pg_export_snapshot()")
            server: dict[str, Any] = psql.json(SERVER_SQL)
            num = int(server["server_version_num"])
            ep.server_version_num = num
            dump_tool = require_dump_tool(ep, "pg_dump", num)
            facts = table_facts(psql, sink.check_interrupted)
            t1 = time.monotonic()
            argv = ep.argv(
                "pg_dump",
                db,
                "--format=custom",
                "--compress=0",
                f"--snapshot={snapshot}",
                "--create",
                "--no-password",
                f"--lock-wait-timeout={max(1, int(self.timeout * 1000))}",
            )
            stream = ep.runner.output(
                argv,
                env=ep.tool_env("stackvault-pg_dump"),
                verify=["pg_restore", "-f", "/dev/null"],
                label=f"pg_dump of database {db}",
            )
            head = bytearray()

            def keep_head(piece: memoryview) -> None:
                if len(head) < 16:
                    head.extend(piece[: 16 - len(head)])

            tap = Tap(stream, keep_head)
            try:
                with stream:
                    stored = sink.add_file(path, tap, EntryMeta(mode=0o600))
                    result = stream.finish()
            except SourceError as exc:
                raise translate(exc, ep, db) from exc
            self._check_dump(db, path, bytes(head), stored.size, stored.sha256, result)
            t2 = time.monotonic()
            psql.run("COMMIT")
        finally:
            psql.close()
        return {
            "facts": facts,
            "file": path,
            "size": stored.size,
            "sha256": stored.sha256,
            "snapshot": snapshot,
            "server": {
                k: server[k] for k in ("server_version_num", "server_version", "version", "user")
            },
            "properties": database_properties(server),
            "dump_tool": dump_tool,
            "seconds": {"count": round(t1 - t0, 3), "dump": round(t2 - t1, 3)},
        }

    def _check_dump(
        self, db: str, path: str, head: bytes, size: int, sha256: str, result: StreamResult
    ) -> None:
        if len(head) < 11 or head[:5] != _MAGIC or head[10] != _FORMAT_CUSTOM:
            raise SourceError(
                f"the dump of database {db} is not a pg_dump custom-format archive "
                f"(it starts with {head[:11]!r}); nothing was recorded"
            )
        if size != result.size or sha256 != result.sha256:
            raise SourceError(
                f"the dump of database {db} was stored as {size} bytes but {result.size} were "
                f"read ({path}); nothing was recorded",
                hint="run the backup again",
            )

    def _capture_globals(self, ep: Endpoint, sink: ArtifactSink, server_num: int) -> dict[str, Any]:
        tool = require_dump_tool(ep, "pg_dumpall", server_num)
        argv = ep.argv("pg_dumpall", None, "--globals-only", "--no-password")
        env = ep.tool_env("stackvault-pg_dumpall")
        res = ep.runner.run(argv, env=env, timeout=self.timeout)
        passwords = True
        if res.code != 0 and "pg_authid" in res.stderr and "permission denied" in res.stderr:
            sink.notice(
                f"the capturing role may not read role passwords (pg_authid) {ep.address}; "
                "roles are captured without their passwords"
            )
            res = ep.runner.run([*argv, "--no-role-passwords"], env=env, timeout=self.timeout)
            passwords = False
        if res.code != 0:
            tail = " | ".join(line for line in res.stderr.splitlines()[-12:] if line.strip())
            raise translate(
                SourceError(
                    f"pg_dumpall --globals-only {ep.runner.where} exited with status "
                    f"{res.code}: {tail}"
                ),
                ep,
                None,
            )
        text = res.stdout.decode("utf-8", "replace")
        if GLOBALS_TRAILER not in text[-400:]:
            raise SourceError(
                f"the output of pg_dumpall --globals-only {ep.runner.where} is incomplete "
                "(no completion trailer); nothing was recorded"
            )
        stored = sink.add_bytes(GLOBALS, res.stdout, EntryMeta(mode=0o600))
        if stored.size != len(res.stdout):
            raise SourceError(f"{GLOBALS} was stored incompletely; nothing was recorded")
        return {
            "file": {"size": stored.size, "sha256": stored.sha256},
            "roles": roles_in_globals(text),
            "role_passwords": passwords,
            "dump_tool_globals": tool,
        }

    # --- probe and target -------------------------------------------------------------------

    def probe(self) -> DatabaseFacts | ServerFacts[DatabaseFacts]:
        ep = self.endpoint()
        require_tools(ep, ["psql"])
        if self.database is not None:
            return database_facts(ep, self.database, self.timeout)
        info = server_info(ep, self.timeout)
        return {"databases": {db: database_facts(ep, db, self.timeout) for db in info["databases"]}}

    def describe_target(self) -> str | None:
        ep = self.endpoint()
        require_tools(ep, ["psql"])
        info = server_info(ep, self.timeout)
        if self.database is not None:
            if self.database not in info["all"]:
                return None
            facts = database_facts(ep, self.database, self.timeout)
            target = DatabaseTarget(self.database, True, facts)
            return summarize_tables(self.database, facts) if target.holds_data else None
        busy = []
        for db in info["databases"]:
            facts = database_facts(ep, db, self.timeout)
            if DatabaseTarget(db, True, facts).holds_data:
                busy.append(f"{db} ({len(facts['tables'])} tables)")
        if not busy:
            return None
        shown = ", ".join(busy[:5]) + (", …" if len(busy) > 5 else "")
        return f"the server {ep.address} holds {len(busy)} databases with data: {shown}"

    # --- restore ----------------------------------------------------------------------------

    def restore(
        self, reader: ArtifactReader, options: ArtifactRestoreOptions
    ) -> DatabaseRestoreResult:
        return PostgresRestore(self, self.endpoint, reader, options).run()


def _original_host(url: SourceURL) -> str:
    """The host part as written (a container name keeps its case; SourceURL lowercases)."""
    netloc = urlsplit(url.raw).netloc
    host = netloc.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.split(":", 1)[0]
