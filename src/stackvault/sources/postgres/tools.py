"""Helpers of the PostgreSQL source (sources layer): how the client tools are called, a
``psql`` session, the facts read through it, version checks, and the translation of the tools'
errors into sentences.

Used by `source` and `restore` of this package, which document the behaviour; this module holds
the mechanics, `sql` the SQL text they send. Everything here talks to the server through the
client tools run by a `Runner` (on this host or inside a container), never through a driver: the
same code path serves both.

Database names reach the tools as ``-d "dbname='…'"`` (`dbname_arg`): a bare name containing
``=`` would otherwise be read as a connection string.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from stackvault.errors import SourceError
from stackvault.sources.dbdump.errortext import search
from stackvault.sources.postgres.sql import (
    BEGIN_SNAPSHOT,
    DATABASES_SQL,
    LARGE_OBJECTS_SQL,
    TABLES_SQL,
    session_setup,
)
from stackvault.sources.tools.runner import Runner, Session

APP_NAME = "stackvault"
"""``application_name`` of our psql sessions; pg_dump/pg_restore get ``stackvault-TOOL``."""

CLIENT_PACKAGE = "postgresql-client"
_GRACE = 10.0
"""Seconds a psql answer may come after the server-side limits (``lock_timeout``) that equal
the session's timeout, so that the server's own, clearer error wins the race."""


def dbname_arg(db: str) -> str:
    """A libpq connection string naming only the database ``db``."""
    return "dbname='" + db.replace("\\", "\\\\").replace("'", "\\'") + "'"


def maintenance_db(avoid: str | None = None) -> str:
    """The database to connect to for CREATE/DROP DATABASE (never the one being replaced)."""
    return "template1" if avoid == "postgres" else "postgres"


def major_of(version_num: int) -> int:
    """``150005`` → ``150000``; ``90624`` → ``90600`` (majors before 10 have two parts)."""
    return version_num // 10000 * 10000 if version_num >= 100000 else version_num // 100 * 100


def major_text(version_num: int) -> str:
    """``150005`` → ``"15"``; ``90624`` → ``"9.6"``."""
    if version_num >= 100000:
        return str(version_num // 10000)
    return f"{version_num // 10000}.{version_num // 100 % 100}"


def tool_version_num(text: str) -> int | None:
    """The version of ``pg_dump (PostgreSQL) 15.20 (Debian …)`` as a number (150020)."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if m is None:
        return None
    a, b, c = int(m[1]), int(m[2] or 0), int(m[3] or 0)
    return a * 10000 + b if a >= 10 else a * 10000 + b * 100 + c


# --- where the tools run --------------------------------------------------------------------------


@dataclass
class Endpoint:
    """How to reach one server with the client tools.

    ``args`` are the connection options without the database (``-h``, ``-p``, ``-U``);
    ``env`` the variables added to the tools' environment (never a password: on this host
    libpq reads PGPASSWORD / ~/.pgpass itself, in a container the runner maps
    POSTGRES_PASSWORD inside it)."""

    runner: Runner
    args: list[str]
    env: dict[str, str]
    address: str
    """For messages, after "PostgreSQL": ``at 127.0.0.1:5432`` or ``in container db``."""
    in_container: bool
    container: str | None = None
    user: str | None = None
    socket: bool = False
    """Inside a container: connected over the default unix socket (no ``-h``)."""
    server_version_num: int | None = None
    tools: dict[str, str] = field(default_factory=dict)
    """Tool name → its ``--version`` line, once checked."""

    def argv(self, tool: str, db: str | None, *options: str) -> list[str]:
        out = [tool, *options, *self.args]
        if db is not None:
            out += ["-d", dbname_arg(db)]
        return out

    def tool_env(self, app: str) -> dict[str, str]:
        return {**self.env, "PGAPPNAME": app}

    def switch_to_tcp(self) -> None:
        """In a container whose server has no unix socket where libpq looks: use TCP on
        127.0.0.1 (the password then comes from the container's POSTGRES_PASSWORD)."""
        self.args = ["-h", "127.0.0.1", *self.args]
        self.socket = False

    def password_hint(self) -> str:
        if self.in_container:
            return (
                "check POSTGRES_PASSWORD in the container's environment (or the file "
                "POSTGRES_PASSWORD_FILE names, or the plan's password_from) and the user in the "
                "URL (postgres+docker://USER@CONTAINER/DB)"
            )
        return (
            "set PGPASSWORD, or add a line for this host, port and user to ~/.pgpass "
            "(or the file PGPASSFILE names)"
        )

    def tool_hint(self) -> str:
        if self.in_container:
            return "use an image whose client tools are as new as its server"
        return (
            f"install {CLIENT_PACKAGE} of the server's major version or newer, or capture "
            "through the container (postgres+docker://CONTAINER/DB)"
        )


# --- psql -----------------------------------------------------------------------------------------


class Psql:
    """A ``psql -X -q -A -t -w -v ON_ERROR_STOP=1`` session on one database: statements are
    sent one script at a time, each followed by ``\\echo MARKER``; its output is what psql
    printed before the marker. Any SQL error ends psql (ON_ERROR_STOP) and raises the
    translated `SourceError`. ``-w``: never prompt for a password."""

    def __init__(self, ep: Endpoint, db: str, timeout: float) -> None:
        self.ep = ep
        self.db = db
        self.timeout = timeout
        self._marker = f"@@stackvault-{secrets.token_hex(8)}"
        argv = ep.argv("psql", db, "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1")
        self._session: Session | None = ep.runner.session(argv, env=ep.tool_env(APP_NAME))

    def run(self, sql: str, timeout: float | None = None) -> str:
        """Send ``sql`` (one or more statements) and return what it printed."""
        if self._session is None:
            raise SourceError(f"the psql session on database {self.db} is closed")
        text = sql.strip()
        if not text.endswith(";"):
            text += ";"
        try:
            self._session.send(f"{text}\n\\echo {self._marker}\n")
            return self._session.read_until(
                self._marker, (self.timeout if timeout is None else timeout) + _GRACE
            )
        except SourceError as exc:
            self.close()
            raise translate(exc, self.ep, self.db) from exc

    def value(self, sql: str, timeout: float | None = None) -> str:
        return self.run(sql, timeout).strip()

    def json(self, sql: str, timeout: float | None = None) -> Any:
        text = self.run(sql, timeout).strip()
        try:
            return json.loads(text) if text else None
        except ValueError as exc:
            raise SourceError(
                f"psql {self.ep.runner.where} printed something that is not the expected JSON: "
                f"{text[:200]!r}"
            ) from exc

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


def run_script(
    ep: Endpoint,
    db: str,
    sql: str,
    *,
    timeout: float,
    stop_on_error: bool = True,
) -> tuple[str, list[str]]:
    """Run an SQL script through ``psql -f -`` on ``db``; (stdout, error lines). With
    ``stop_on_error`` the first error raises the translated `SourceError`; without it the
    script goes on and the ``ERROR:`` lines are returned (a failed connection still raises)."""
    argv = ep.argv(
        "psql", db, "-X", "-q", "-A", "-t", "-w", "-v", f"ON_ERROR_STOP={int(stop_on_error)}"
    )
    script = "SET standard_conforming_strings = on;\n" + sql.strip() + "\n"
    res = ep.runner.run(
        [*argv, "-f", "-"], env=ep.tool_env(APP_NAME), stdin=script.encode(), timeout=timeout
    )
    errors = [line for line in res.stderr.splitlines() if "ERROR:" in line]
    if res.code != 0:
        tail = " | ".join(line for line in res.stderr.splitlines()[-12:] if line.strip())
        raise translate(
            SourceError(f"psql {ep.runner.where} exited with status {res.code}: {tail}"), ep, db
        )
    return res.text, errors


# --- facts ----------------------------------------------------------------------------------------


class DatabaseFacts(TypedDict):
    """The facts of one PostgreSQL database: exact row counts per ``schema.table`` (user
    tables) and the number of large objects. A server artifact's facts are a
    `ServerFacts` of them."""

    tables: dict[str, int]
    large_objects: int


def table_facts(psql: Psql, check: Callable[[], None] | None = None) -> DatabaseFacts:
    """``{"tables": {"schema.table": rows}, "large_objects": n}``: exact counts, read in the
    session's current transaction (one ``count(*)`` per table, so a long table waits at most
    the session's timeout by itself)."""
    names: list[str] = psql.json(TABLES_SQL) or []
    tables: dict[str, int] = {}
    for name in names:
        if check is not None:
            check()
        tables[name] = int(psql.value(f"SELECT count(*) FROM {name}"))
    return {"tables": tables, "large_objects": int(psql.value(LARGE_OBJECTS_SQL))}


def open_psql(ep: Endpoint, db: str, timeout: float) -> Psql:
    """A psql session on ``db`` with stackvault's session settings (timeouts, search path)."""
    psql = Psql(ep, db, timeout)
    psql.run(session_setup(timeout))
    return psql


def database_facts(
    ep: Endpoint, db: str, timeout: float, check: Callable[[], None] | None = None
) -> DatabaseFacts:
    """The facts of ``db`` now (`table_facts`, in its own consistent snapshot)."""
    psql = open_psql(ep, db, timeout)
    try:
        psql.run(BEGIN_SNAPSHOT)
        facts = table_facts(psql, check)
        psql.run("COMMIT")
        return facts
    finally:
        psql.close()


class ServerInfo(TypedDict):
    """A server's answer to `DATABASES_SQL`: version, connecting role, databases (those a
    server capture covers, those refusing connections, every name) and roles."""

    server_version_num: int
    user: str
    databases: list[str]
    unconnectable: list[str]
    all: list[str]
    roles: list[str]


def server_info(ep: Endpoint, timeout: float) -> ServerInfo:
    """Server version, connecting role, databases (connectable, not templates) and roles;
    records the version in ``ep``."""
    try:
        psql = open_psql(ep, "postgres", timeout)
    except SourceError as exc:
        if "database postgres does not exist" not in str(exc):
            raise
        psql = open_psql(ep, "template1", timeout)
    try:
        info: ServerInfo = psql.json(DATABASES_SQL)
    finally:
        psql.close()
    ep.server_version_num = int(info["server_version_num"])
    return info


def summarize_tables(db: str, facts: DatabaseFacts, where: str = "") -> str:
    """``database app [WHERE] holds 4 tables (120 rows in public.users, 88 in public.orders,
    …)``."""
    tables: Mapping[str, int] = facts.get("tables", {})
    los = int(facts.get("large_objects", 0))
    parts: list[str] = []
    top = sorted(tables.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    for i, (name, rows) in enumerate(top):
        parts.append(f"{rows} rows in {name}" if i == 0 else f"{rows} in {name}")
    if len(tables) > len(top):
        parts.append("…")
    plural = "s" if len(tables) != 1 else ""
    text = f"database {db}{' ' + where if where else ''} holds {len(tables)} table{plural}"
    if parts:
        text += f" ({', '.join(parts)})"
    if los:
        text += f" and {los} large object{'s' if los != 1 else ''}"
    return text


# --- errors ---------------------------------------------------------------------------------------


def translate(exc: SourceError, ep: Endpoint, db: str | None) -> SourceError:
    """A clear sentence for the errors the client tools report most (else ``exc`` itself).
    The tools never print passwords; nothing of the environment is added here."""
    text = str(exc)
    return _connection_error(text, ep) or _work_error(text, ep, db) or exc


def _connection_error(text: str, ep: Endpoint) -> SourceError | None:
    """Reaching and entering the server: host, port, authentication, start-up."""
    where = f"PostgreSQL {ep.address}"
    if m := search(r'password authentication failed for user "([^"]*)"', text):
        return SourceError(f"{where} rejected the password of user {m[1]}", hint=ep.password_hint())
    if search(r"no password supplied|password is required", text):
        return SourceError(
            f"{where} asks for a password and none was given", hint=ep.password_hint()
        )
    if m := search(r'(?:peer|ident) authentication failed for user "([^"]*)"', text):
        return SourceError(
            f"{where} refused user {m[1]} (peer authentication: the operating-system user "
            "does not match)",
            hint="connect over TCP (-h) or name the matching user in the URL",
        )
    if m := search(r'no pg_hba\.conf entry for host "([^"]*)", user "([^"]*)"', text):
        return SourceError(
            f"{where} does not let user {m[2]} connect from {m[1]} (no pg_hba.conf entry)",
            hint="allow it in pg_hba.conf, or check sslmode",
        )
    if m := search(r'could not translate host name "([^"]*)"', text):
        return SourceError(
            f"cannot reach PostgreSQL {ep.address}: there is no host {m[1]}",
            hint="check the host name in the URL",
        )
    if search(r"connection refused", text):
        return SourceError(
            f"cannot reach PostgreSQL {ep.address}: the connection was refused",
            hint="check the host and port in the URL and that the server is running",
        )
    if search(r"timeout expired|could not connect to server: connection timed out", text):
        return SourceError(
            f"cannot reach PostgreSQL {ep.address}: the connection timed out",
            hint="check the host, port and firewalls (PGCONNECT_TIMEOUT sets the wait)",
        )
    if search(r"the database system is (starting up|shutting down|in recovery mode)", text):
        return SourceError(f"{where} is starting up or shutting down", hint="try again later")
    return None


def _work_error(text: str, ep: Endpoint, db: str | None) -> SourceError | None:
    """Dumping and restoring: missing objects, tool versions, privileges, locks, timeouts,
    lost connections."""
    where = f"PostgreSQL {ep.address}"
    if m := search(r'database "([^"]*)" does not exist', text):
        return SourceError(
            f"database {m[1]} does not exist at PostgreSQL {ep.address}",
            hint="check the name (psql -l lists them), or leave it out of the URL to "
            "capture every database",
        )
    if m := search(r'role "([^"]*)" does not exist', text):
        return SourceError(
            f"role {m[1]} does not exist at PostgreSQL {ep.address}",
            hint="name an existing user in the URL (postgres://USER@HOST/DB), or, restoring "
            "objects owned by it, create it first or restore with owner=none (--no-owner)",
        )
    if m := search(r"server version: ([0-9][^;\s]*);\s*(pg_\w+) version: ([0-9][^\s]*)", text):
        return SourceError(
            f"{m[2]} {m[3]} cannot dump a PostgreSQL {m[1]} server",
            hint=ep.tool_hint(),
        )
    if m := search(r"unsupported version \(([0-9.]+)\) in file header", text):
        return SourceError(
            f"pg_restore {ep.runner.where} is too old for this archive (format {m[1]})",
            hint=ep.tool_hint(),
        )
    if m := search(
        r"permission denied for (table|relation|schema|sequence|large object|"
        r"database|function) ([^|\n]+?)\s*(?:\||$)",
        text,
    ):
        user = ep.user or "the connecting user"
        return SourceError(
            f"{where} denied {user} access to {m[1]} {m[2]} (permission denied)",
            hint="connect as a superuser, the owner, or a member of pg_read_all_data",
        )
    if m := search(
        r'query would be affected by row-level security policy for table "([^"]*)"', text
    ):
        return SourceError(
            f"{where} hides rows of table {m[1]} from this user by a row-level security policy",
            hint="connect as a superuser, the table owner or a role with BYPASSRLS",
        )
    if search(r"canceling statement due to lock timeout|could not obtain lock on", text):
        return SourceError(
            f"a table of database {db} {ep.address} stayed locked by another session for "
            "longer than the timeout",
            hint="try again when the lock is released, or raise ?timeout=",
        )
    if search(r"did not answer in time|did not finish within", text):
        return SourceError(
            f"{where} did not answer within the timeout while working on database {db}",
            hint="raise the URL's ?timeout= (seconds, default 600), or look for a lock or a "
            "very slow statement on the server",
        )
    if search(r"terminating connection due to administrator command", text):
        return SourceError(
            f"the connection to {where} was terminated by an administrator "
            f"(pg_terminate_backend or a shutdown) while working on database {db}; "
            "nothing of it was recorded",
            hint="run it again",
        )
    if search(r"server closed the connection unexpectedly", text):
        return SourceError(
            f"{where} closed the connection unexpectedly while working on database {db}; "
            "nothing of it was recorded",
            hint="check the server log and run it again",
        )
    return None


def require_tools(ep: Endpoint, tools: Sequence[str]) -> None:
    """On this host: `SourceError` naming the package for the first tool that is missing."""
    if ep.in_container:
        return
    for tool in tools:
        if not ep.runner.has(tool):
            raise SourceError(f"{tool} is not installed on this host", hint=ep.tool_hint())


def tool_version(ep: Endpoint, tool: str) -> tuple[str, int]:
    """``TOOL --version`` where the tools run: (its first line, its version as a number).
    The connection options are passed along, so Debian's pg_wrapper picks the same version
    as for the real call. Cached per endpoint."""
    if tool not in ep.tools:
        res = ep.runner.run([tool, "--version", *ep.args], env=ep.env, timeout=60)
        if res.code in (126, 127) and not ep.in_container:
            raise SourceError(f"{tool} is not installed on this host", hint=ep.tool_hint())
        if res.code != 0:
            raise SourceError(
                f"{tool} --version {ep.runner.where} exited with status {res.code}: "
                f"{res.stderr.strip()[-300:]}"
            )
        text = res.text.strip()
        ep.tools[tool] = text.splitlines()[0] if text else ""
    line = ep.tools[tool]
    num = tool_version_num(line)
    if num is None:
        raise SourceError(f"cannot tell the version of {tool} {ep.runner.where} from {line!r}")
    return line, num


def require_dump_tool(ep: Endpoint, tool: str, server_num: int) -> str:
    """`SourceError` when ``tool`` (pg_dump, pg_dumpall) is of an older major version than the
    server, which it refuses to dump; else its version line."""
    line, num = tool_version(ep, tool)
    if major_of(num) < major_of(server_num):
        server_major = major_text(server_num)
        hint = (
            ep.tool_hint()
            if ep.in_container
            else f"install {CLIENT_PACKAGE}-{server_major} or capture through the container "
            "(postgres+docker://CONTAINER/DB)"
        )
        raise SourceError(
            f"{tool} {major_text(num)} cannot dump a PostgreSQL {server_major} server", hint=hint
        )
    return line


def require_restore_tool(ep: Endpoint, dump_tool: str) -> str:
    """`SourceError` when pg_restore is older than the pg_dump that wrote the archive (it
    could not read it); else its version line."""
    line, num = tool_version(ep, "pg_restore")
    made = tool_version_num(dump_tool)
    if made is not None and major_of(num) < major_of(made):
        raise SourceError(
            f"pg_restore {major_text(num)} {ep.runner.where} cannot read an archive written by "
            f"pg_dump {major_text(made)}",
            hint=f"install {CLIENT_PACKAGE}-{major_text(made)} or newer"
            if not ep.in_container
            else "restore through a container whose client tools are as new",
        )
    return line
