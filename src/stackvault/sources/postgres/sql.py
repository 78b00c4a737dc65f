"""The SQL text of the PostgreSQL source (sources layer): quoting, the catalog queries behind
the facts and a database's properties, the statements that recreate a database with its
properties, and the edits of a ``pg_dumpall --globals-only`` script before it is replayed.

Text only: nothing here talks to a server (`tools` of this package runs the tools;
`source` and `restore` document the behaviour).

Quoting: identifiers are quoted with `quote_ident` (or by the server's ``format('%I')``),
literals with `quote_literal`, which assumes ``standard_conforming_strings = on`` (every script
and session sets it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from stackvault.errors import SourceError


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


def session_setup(timeout: float) -> str:
    return SESSION_SETUP.format(lock_ms=max(1, int(timeout * 1000)))


# --- recreating a database ------------------------------------------------------------------------

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
