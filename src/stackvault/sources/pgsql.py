"""Helpers of the PostgreSQL source (sources layer): how the client tools are called, a
``psql`` session, the catalog queries behind the facts, version checks, the translation of the
tools' errors into sentences, and the SQL that recreates a database and its properties.

Used only by `stackvault.sources.postgres`, which documents the behaviour; this module holds
the mechanics. Everything here talks to the server through the client tools run by a `Runner`
(on this host or inside a container), never through a driver: the same code path serves both.

Quoting: identifiers are quoted with `quote_ident` (or by the server's ``format('%I')``),
literals with `quote_literal`, which assumes ``standard_conforming_strings = on`` (every script
and session sets it). Database names reach the tools as ``-d "dbname='…'"`` (`dbname_arg`):
a bare name containing ``=`` would otherwise be read as a connection string.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stackvault.errors import SourceError
from stackvault.sources.runner import Runner, Session

APP_NAME = "stackvault"
"""``application_name`` of our psql sessions; pg_dump/pg_restore get ``stackvault-TOOL``."""

CLIENT_PACKAGE = "postgresql-client"
_GRACE = 10.0
"""Seconds a psql answer may come after the server-side limits (``lock_timeout``) that equal
the session's timeout, so that the server's own, clearer error wins the race."""

# Settings whose value pg_dump splits and quotes element by element (variable_is_guc_list_quote).
_GUC_LIST_QUOTE = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier (always double-quoted)."""
    if "\x00" in name:
        raise SourceError(f"the name {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as an SQL string literal (``standard_conforming_strings = on``)."""
    if "\x00" in text:
        raise SourceError("a value to quote contains a NUL character")
    return "'" + text.replace("'", "''") + "'"


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
                "check POSTGRES_PASSWORD in the container's environment and the user in the "
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


# --- catalog queries ------------------------------------------------------------------------------

SESSION_SETUP = (
    "SET standard_conforming_strings = on; SET search_path = pg_catalog; "
    "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; "
    "SET row_security = off; SET lock_timeout = {lock_ms}"
)
"""Run first in every session. ``row_security = off``, as pg_dump does: a table whose rows a
policy would hide fails the count instead of being counted short."""

BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"

TABLES_SQL = """
SELECT coalesce(json_agg(format('%I.%I', n.nspname, c.relname) ORDER BY n.nspname, c.relname),
                '[]')
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                  WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    AND e.objid = c.oid AND e.deptype = 'e')
"""
"""User tables as ``schema.table`` (quoted where needed): ordinary tables and partitions, not
temporary tables, system catalogs or tables that belong to an extension."""

LARGE_OBJECTS_SQL = "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata"

SERVER_SQL = """
SELECT json_build_object(
  'server_version_num', current_setting('server_version_num')::int,
  'server_version', current_setting('server_version'),
  'version', version(),
  'user', current_user,
  'database', to_jsonb(d) - 'datacl',
  'owner', pg_get_userbyid(d.datdba),
  'encoding', pg_encoding_to_char(d.encoding),
  'comment', shobj_description(d.oid, 'pg_database'),
  'acl', CASE WHEN d.datacl IS NULL THEN NULL ELSE (
      SELECT coalesce(json_agg(json_build_array(
               CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
               a.privilege_type, a.is_grantable) ORDER BY a.grantee, a.privilege_type), '[]')
      FROM aclexplode(d.datacl) a) END,
  'settings', (SELECT coalesce(json_agg(json_build_array(
                   CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END,
                   s.setconfig) ORDER BY s.setrole), '[]')
               FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)
) FROM pg_database d WHERE d.datname = current_database()
"""

DATABASES_SQL = """
SELECT json_build_object(
  'server_version_num', current_setting('server_version_num')::int,
  'user', current_user,
  'databases', (SELECT coalesce(json_agg(datname ORDER BY datname), '[]') FROM pg_database
                WHERE NOT datistemplate AND datallowconn),
  'unconnectable', (SELECT coalesce(json_agg(datname ORDER BY datname), '[]') FROM pg_database
                    WHERE NOT datistemplate AND NOT datallowconn),
  'all', (SELECT coalesce(json_agg(datname ORDER BY datname), '[]') FROM pg_database),
  'roles', (SELECT coalesce(json_agg(rolname ORDER BY rolname), '[]') FROM pg_roles))
"""
"""The server: version, connecting role, databases (``databases``: what a server capture
covers; ``all``: every name, templates included) and roles."""


def database_properties(server: Mapping[str, Any]) -> dict[str, Any]:
    """What `create_database_sql` and `properties_sql` need, from a `SERVER_SQL` answer."""
    row: Mapping[str, Any] = server.get("database") or {}
    provider = row.get("datlocprovider")
    locale = row.get("datlocale") or row.get("daticulocale")
    return {
        "encoding": server.get("encoding"),
        "collate": row.get("datcollate"),
        "ctype": row.get("datctype"),
        "locale_provider": provider,
        "locale": locale,
        "icu_rules": row.get("daticurules"),
        "connection_limit": row.get("datconnlimit", -1),
        "owner": server.get("owner"),
        "comment": server.get("comment"),
        "acl": server.get("acl"),
        "settings": server.get("settings") or [],
    }


def table_facts(psql: Psql, check: Callable[[], None] | None = None) -> dict[str, Any]:
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


def session_setup(timeout: float) -> str:
    return SESSION_SETUP.format(lock_ms=max(1, int(timeout * 1000)))


def summarize_tables(db: str, facts: Mapping[str, Any], where: str = "") -> str:
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


# --- recreating a database ------------------------------------------------------------------------


def create_database_sql(
    name: str, props: Mapping[str, Any], server_num: int, owner: str | None
) -> tuple[str, list[str]]:
    """``CREATE DATABASE`` with the captured encoding and locale (from ``template0``), owned by
    ``owner`` when given; and notes about what the target server could not take."""
    notes: list[str] = []
    parts = [f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0"]
    if props.get("encoding"):
        parts.append(f"ENCODING {quote_literal(props['encoding'])}")
    provider = props.get("locale_provider")
    locale = props.get("locale")
    if provider == "i" and locale:
        if server_num >= 150000:
            parts += ["LOCALE_PROVIDER icu", f"ICU_LOCALE {quote_literal(locale)}"]
            if props.get("icu_rules") and server_num >= 160000:
                parts.append(f"ICU_RULES {quote_literal(props['icu_rules'])}")
        else:
            notes.append(f"the ICU locale {locale} cannot be used before PostgreSQL 15")
    elif provider == "b" and locale:
        if server_num >= 170000:
            parts += ["LOCALE_PROVIDER builtin", f"BUILTIN_LOCALE {quote_literal(locale)}"]
        else:
            notes.append(f"the builtin locale {locale} cannot be used before PostgreSQL 17")
    elif provider == "c" and server_num >= 150000:
        parts.append("LOCALE_PROVIDER libc")
    if props.get("collate"):
        parts.append(f"LC_COLLATE {quote_literal(props['collate'])}")
    if props.get("ctype"):
        parts.append(f"LC_CTYPE {quote_literal(props['ctype'])}")
    if owner:
        parts.append(f"OWNER {quote_ident(owner)}")
    return " ".join(parts), notes


def split_guc_list(value: str) -> list[str] | None:
    """A list setting's stored text (``"$user", public``) as its elements, as pg_dump's
    SplitGUCList reads it; None if it cannot be parsed."""
    out: list[str] = []
    i, n = 0, len(value)
    while i < n and value[i].isspace():
        i += 1
    if i == n:
        return out
    while True:
        if i < n and value[i] == '"':
            j = i + 1
            buf: list[str] = []
            while True:
                if j >= n:
                    return None
                if value[j] == '"':
                    if j + 1 < n and value[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(value[j])
                j += 1
            out.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and value[j] != "," and not value[j].isspace():
                j += 1
            if j == i:
                return None
            out.append(value[i:j])
            i = j
        while i < n and value[i].isspace():
            i += 1
        if i == n:
            return out
        if value[i] != ",":
            return None
        i += 1
        while i < n and value[i].isspace():
            i += 1


def setting_sql(item: str) -> str | None:
    """``SET name TO value`` for one stored ``name=value`` item; None if unparsable."""
    name, sep, value = item.partition("=")
    if not sep or not name:
        return None
    if name.lower() in _GUC_LIST_QUOTE:
        elements = split_guc_list(value)
        if elements is None:
            return None
        rendered = ", ".join(quote_literal(e) for e in elements) or "''"
    else:
        rendered = quote_literal(value)
    return f"SET {quote_ident(name)} TO {rendered}"


def properties_sql(name: str, props: Mapping[str, Any], *, privileges: bool) -> list[str]:
    """Statements that give a new database ``name`` the captured comment, connection limit,
    settings (``ALTER DATABASE … SET``, ``ALTER ROLE … IN DATABASE … SET``) and, with
    ``privileges``, its GRANTs."""
    db = quote_ident(name)
    out: list[str] = []
    if props.get("comment"):
        out.append(f"COMMENT ON DATABASE {db} IS {quote_literal(props['comment'])}")
    limit = props.get("connection_limit")
    if isinstance(limit, int) and limit != -1:
        out.append(f"ALTER DATABASE {db} CONNECTION LIMIT {limit}")
    for role, items in props.get("settings") or []:
        for item in items or []:
            clause = setting_sql(str(item))
            if clause is None:
                continue
            if role is None:
                out.append(f"ALTER DATABASE {db} {clause}")
            else:
                out.append(f"ALTER ROLE {quote_ident(role)} IN DATABASE {db} {clause}")
    acl = props.get("acl")
    if privileges and acl is not None:
        out.append(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
        for grantee, privilege, grantable in acl:
            if privilege not in ("CREATE", "CONNECT", "TEMPORARY"):
                continue
            who = "PUBLIC" if grantee is None else quote_ident(grantee)
            option = " WITH GRANT OPTION" if grantable else ""
            out.append(f"GRANT {privilege} ON DATABASE {db} TO {who}{option}")
    return out


# --- globals (roles, tablespaces) -----------------------------------------------------------------

_IDENT = r'("(?:[^"]|"")+"|[^\s;"]+)'
_CREATE_ROLE = re.compile(rf"^CREATE ROLE {_IDENT};\s*$")
_ALTER_ROLE_WITH = re.compile(rf"^ALTER ROLE {_IDENT} WITH ")


def parse_ident(token: str) -> str:
    if token.startswith('"') and token.endswith('"') and len(token) >= 2:
        return token[1:-1].replace('""', '"')
    return token


def roles_in_globals(text: str) -> list[str]:
    """The roles a ``pg_dumpall --globals-only`` script creates."""
    out = []
    for line in text.splitlines():
        m = _CREATE_ROLE.match(line)
        if m:
            out.append(parse_ident(m[1]))
    return out


def filter_globals(text: str, existing: Iterable[str], current: str) -> tuple[str, list[str]]:
    """``text`` without ``CREATE ROLE`` of roles that exist already (they would only fail)
    and without the ``ALTER ROLE … WITH`` of ``current``, the role the restore connects as
    (its attributes and password stay as they are, so the restore and its operator keep
    access). Returns the script and the roles whose CREATE was left out."""
    have = set(existing)
    kept: list[str] = []
    skipped: list[str] = []
    for line in text.splitlines(keepends=True):
        m = _CREATE_ROLE.match(line)
        if m and parse_ident(m[1]) in have:
            skipped.append(parse_ident(m[1]))
            continue
        m = _ALTER_ROLE_WITH.match(line)
        if m and parse_ident(m[1]) == current:
            continue
        kept.append(line)
    return "".join(kept), skipped


GLOBALS_TRAILER = "PostgreSQL database cluster dump complete"


# --- errors ---------------------------------------------------------------------------------------


def _first(pattern: str, text: str) -> re.Match[str] | None:
    return re.search(pattern, text, flags=re.IGNORECASE | re.MULTILINE)


def translate(exc: SourceError, ep: Endpoint, db: str | None) -> SourceError:
    """A clear sentence for the errors the client tools report most (else ``exc`` itself).
    The tools never print passwords; nothing of the environment is added here."""
    text = str(exc)
    where = f"PostgreSQL {ep.address}"
    if m := _first(r'password authentication failed for user "([^"]*)"', text):
        return SourceError(f"{where} rejected the password of user {m[1]}", hint=ep.password_hint())
    if _first(r"no password supplied|password is required", text):
        return SourceError(
            f"{where} asks for a password and none was given", hint=ep.password_hint()
        )
    if m := _first(r'(?:peer|ident) authentication failed for user "([^"]*)"', text):
        return SourceError(
            f"{where} refused user {m[1]} (peer authentication: the operating-system user "
            "does not match)",
            hint="connect over TCP (-h) or name the matching user in the URL",
        )
    if m := _first(r'no pg_hba\.conf entry for host "([^"]*)", user "([^"]*)"', text):
        return SourceError(
            f"{where} does not let user {m[2]} connect from {m[1]} (no pg_hba.conf entry)",
            hint="allow it in pg_hba.conf, or check sslmode",
        )
    if m := _first(r'could not translate host name "([^"]*)"', text):
        return SourceError(
            f"cannot reach PostgreSQL {ep.address}: there is no host {m[1]}",
            hint="check the host name in the URL",
        )
    if _first(r"connection refused", text):
        return SourceError(
            f"cannot reach PostgreSQL {ep.address}: the connection was refused",
            hint="check the host and port in the URL and that the server is running",
        )
    if _first(r"timeout expired|could not connect to server: connection timed out", text):
        return SourceError(
            f"cannot reach PostgreSQL {ep.address}: the connection timed out",
            hint="check the host, port and firewalls (PGCONNECT_TIMEOUT sets the wait)",
        )
    if _first(r"the database system is (starting up|shutting down|in recovery mode)", text):
        return SourceError(f"{where} is starting up or shutting down", hint="try again later")
    if m := _first(r'database "([^"]*)" does not exist', text):
        return SourceError(
            f"database {m[1]} does not exist at PostgreSQL {ep.address}",
            hint="check the name (psql -l lists them), or leave it out of the URL to "
            "capture every database",
        )
    if m := _first(r'role "([^"]*)" does not exist', text):
        return SourceError(
            f"role {m[1]} does not exist at PostgreSQL {ep.address}",
            hint="name an existing user in the URL (postgres://USER@HOST/DB), or, restoring "
            "objects owned by it, create it first or restore with owner=none (--no-owner)",
        )
    if m := _first(r"server version: ([0-9][^;\s]*);\s*(pg_\w+) version: ([0-9][^\s]*)", text):
        return SourceError(
            f"{m[2]} {m[3]} cannot dump a PostgreSQL {m[1]} server",
            hint=ep.tool_hint(),
        )
    if m := _first(r"unsupported version \(([0-9.]+)\) in file header", text):
        return SourceError(
            f"pg_restore {ep.runner.where} is too old for this archive (format {m[1]})",
            hint=ep.tool_hint(),
        )
    if m := _first(
        r"permission denied for (table|relation|schema|sequence|large object|"
        r"database|function) ([^|\n]+?)\s*(?:\||$)",
        text,
    ):
        user = ep.user or "the connecting user"
        return SourceError(
            f"{where} denied {user} access to {m[1]} {m[2]} (permission denied)",
            hint="connect as a superuser, the owner, or a member of pg_read_all_data",
        )
    if m := _first(
        r'query would be affected by row-level security policy for table "([^"]*)"', text
    ):
        return SourceError(
            f"{where} hides rows of table {m[1]} from this user by a row-level security policy",
            hint="connect as a superuser, the table owner or a role with BYPASSRLS",
        )
    if _first(r"canceling statement due to lock timeout|could not obtain lock on", text):
        return SourceError(
            f"a table of database {db} {ep.address} stayed locked by another session for "
            "longer than the timeout",
            hint="try again when the lock is released, or raise ?timeout=",
        )
    if _first(r"did not answer in time|did not finish within", text):
        return SourceError(
            f"{where} did not answer within the timeout while working on database {db}",
            hint="raise the URL's ?timeout= (seconds, default 600), or look for a lock or a "
            "very slow statement on the server",
        )
    if _first(r"terminating connection due to administrator command", text):
        return SourceError(
            f"the connection to {where} was terminated by an administrator "
            f"(pg_terminate_backend or a shutdown) while working on database {db}; "
            "nothing of it was recorded",
            hint="run it again",
        )
    if _first(r"server closed the connection unexpectedly", text):
        return SourceError(
            f"{where} closed the connection unexpectedly while working on database {db}; "
            "nothing of it was recorded",
            hint="check the server log and run it again",
        )
    return exc


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
