"""Helpers of the MySQL/MariaDB source (sources layer): how the client tools are called, the
catalog queries behind the facts, the reading of a dump as it streams past (row counts, the
completion trailer), the edits a load may make, and the translation of the tools' errors.

Used only by `source` and `restore` of this package, which document the behaviour; this module
holds the mechanics. Everything talks to the server through the client tools (``mariadb`` /
``mariadb-dump``, or Oracle's ``mysql`` / ``mysqldump``) run by a `Runner` on this host or
inside a container, never through a driver: one code path serves both places.

Quoting: identifiers with `quote_ident` (backquotes); names sent as values go as
``CONVERT(0x… USING utf8mb4)`` (`name_literal`) and come back ``HEX()``-encoded, so no
``sql_mode`` (``NO_BACKSLASH_ESCAPES``, ``ANSI_QUOTES``) and no odd character can change them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TypedDict

from stackvault.errors import SourceError
from stackvault.sources.dbdump.errortext import search
from stackvault.sources.tools.runner import Completed, Runner, stderr_tail

CLIENT_PACKAGE = "mariadb-client (or mysql-client)"
SYSTEM_DATABASES = ("mysql", "information_schema", "performance_schema", "sys")
TRAILER = b"-- Dump completed"
SANDBOX_PREFIX = b"/*M!999999\\- enable the sandbox mode */"
"""The first line recent mariadb-dump versions write; Oracle's ``mysql`` client rejects it."""

_TABLE_TYPES = "('BASE TABLE', 'SYSTEM VERSIONED')"


def quote_ident(name: str) -> str:
    """``name`` as an identifier: ```name```, backquotes doubled."""
    if "\x00" in name:
        raise SourceError(f"the name {name!r} contains a NUL character")
    return "`" + name.replace("`", "``") + "`"


def name_literal(name: str) -> str:
    """``name`` as a string value that no sql_mode or character can alter."""
    return f"CONVERT(0x{name.encode().hex() or '00'} USING utf8mb4)" if name else "''"


def _unhex(text: str) -> str:
    return bytes.fromhex(text).decode("utf-8", "replace")


# --- where the tools run --------------------------------------------------------------------------


@dataclass
class Endpoint:
    """How to reach one server with the client tools.

    ``args`` are the connection options (``-h``, ``-P``, ``-u``, ``--socket``, …); ``first`` the
    options that must come before all others (``--defaults-extra-file``). ``env`` never holds a
    password: on this host the tools read ``MYSQL_PWD`` or their option files themselves, in a
    container the runner maps the container's own password variable inside it."""

    runner: Runner
    args: list[str]
    address: str
    """For messages, after "MySQL": ``at 127.0.0.1:3306`` or ``in container db``."""
    in_container: bool
    user: str | None = None
    first: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    client: str = "mariadb"
    dump: str = "mariadb-dump"
    dump_version: str = ""
    client_version: str = ""
    password_from: str | None = None
    """In a container: the container variable the password comes from (``file:PATH``: the
    file there)."""

    @property
    def oracle_dump(self) -> bool:
        """The dump tool is Oracle's mysqldump (its options differ from MariaDB's)."""
        return bool(self.dump_version) and "mariadb" not in self.dump_version.lower()

    @property
    def oracle_client(self) -> bool:
        return bool(self.client_version) and "mariadb" not in self.client_version.lower()

    def argv(self, tool: str, *options: str, db: str | None = None) -> list[str]:
        out = [tool, *self.first, *options, *self.args]
        if db is not None:
            out.append(db)
        return out

    def switch_to_tcp(self) -> None:
        """Inside a container whose socket does not answer: TCP on 127.0.0.1."""
        self.args = ["--protocol=tcp", "-h", "127.0.0.1", *self.args]

    def password_hint(self) -> str:
        if self.in_container:
            if self.password_from:
                return (
                    f"the password comes from {self.password_from} in the container; "
                    "check it, or name the matching user in the URL"
                )
            return (
                "the container's environment has no MARIADB_ROOT_PASSWORD / MYSQL_ROOT_PASSWORD "
                "(or MARIADB_PASSWORD / MYSQL_PASSWORD for MARIADB_USER / MYSQL_USER)"
            )
        return (
            "set MYSQL_PWD in stackvault's environment, put the password in ~/.my.cnf "
            "([client] password=…), or name an option file with ?defaults_file=PATH"
        )

    def tool_hint(self) -> str:
        if self.in_container:
            return "use an image that ships the client tools, or capture from this host"
        return f"install {CLIENT_PACKAGE} on this host, or capture through the container"


def select_tools(ep: Endpoint, *, dump: bool) -> None:
    """Pick ``mariadb``/``mysql`` (and ``mariadb-dump``/``mysqldump``) where ``ep`` runs and
    record their versions; `SourceError` naming the package when they are missing."""
    wanted = [("client", ("mariadb", "mysql"))]
    if dump:
        wanted.append(("dump", ("mariadb-dump", "mysqldump")))
    for attr, names in wanted:
        found = next((n for n in names if ep.runner.has(n)), None)
        if found is None:
            raise SourceError(
                f"neither {names[0]} nor {names[1]} is installed {ep.runner.where}",
                hint=ep.tool_hint(),
            )
        setattr(ep, attr, found)
        res = ep.runner.run([found, "--version"], timeout=60)
        setattr(ep, f"{attr}_version", res.text.strip().splitlines()[0] if res.text else found)


def run_sql(
    ep: Endpoint, sql: str, *, db: str | None = None, timeout: float = 600, force: bool = False
) -> Completed:
    """Run a script with the client in batch mode; `SourceError` (translated) unless it
    exits 0 (with ``force``: the client goes on past errors; the result is returned)."""
    options = ["--batch", "--skip-column-names", "--default-character-set=utf8mb4"]
    if not ep.oracle_client:
        options.append("--connect-timeout=15")
    if force:
        options.append("--force")
    argv = ep.argv(ep.client, *options, db=db)
    res = ep.runner.run(argv, env=ep.env, stdin=sql.encode(), timeout=timeout)
    if res.code != 0 and not force:
        tail = stderr_tail(res.stderr.splitlines()[-12:])
        raise translate(
            SourceError(f"{ep.client} {ep.runner.where} exited with status {res.code}: {tail}"),
            ep,
            db,
        )
    return res


def rows(res: Completed) -> list[list[str]]:
    return [line.split("\t") for line in res.text.splitlines() if line]


class DatabaseCharset(TypedDict):
    """A database's default character set and collation."""

    charset: str
    collation: str


class ServerInfo(TypedDict):
    """A server's version and comment, the connecting account, whether it is MariaDB, and
    its user databases (not the system ones)."""

    version: str
    comment: str
    account: str
    mariadb: bool
    databases: dict[str, DatabaseCharset]


def server_info(ep: Endpoint, timeout: float = 600) -> ServerInfo:
    """Version, the connecting account and the user databases (not the system ones)."""
    system = ", ".join(name_literal(n) for n in SYSTEM_DATABASES)
    sql = (
        "SELECT HEX(VERSION()), HEX(@@version_comment), HEX(CURRENT_USER());\n"
        "SELECT HEX(SCHEMA_NAME), HEX(DEFAULT_CHARACTER_SET_NAME), HEX(DEFAULT_COLLATION_NAME) "
        f"FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({system}) "
        "ORDER BY SCHEMA_NAME;\n"
    )
    out = rows(run_sql(ep, sql, timeout=timeout))
    if not out or len(out[0]) != 3:
        raise SourceError(f"MySQL {ep.address} gave an unexpected answer to a version query")
    version, comment, account = (_unhex(v) for v in out[0])
    databases: dict[str, DatabaseCharset] = {
        _unhex(r[0]): {"charset": _unhex(r[1]), "collation": _unhex(r[2])}
        for r in out[1:]
        if len(r) == 3
    }
    return {
        "version": version,
        "comment": comment,
        "account": account,
        "mariadb": "mariadb" in (version + comment).lower(),
        "databases": databases,
    }


class DatabaseFacts(TypedDict):
    """The facts of one MySQL/MariaDB database: row counts per base table. A server
    artifact's facts are a `ServerFacts` of them."""

    tables: dict[str, int]


def table_facts(ep: Endpoint, db: str, timeout: float = 600) -> DatabaseFacts:
    """``{"tables": {NAME: rows}}`` of ``db``'s base tables, counted in one consistent
    snapshot (InnoDB; other engines are counted as they are)."""
    sql = (
        "SELECT HEX(TABLE_NAME) FROM information_schema.TABLES "
        f"WHERE TABLE_SCHEMA = {name_literal(db)} AND TABLE_TYPE IN {_TABLE_TYPES} "
        "ORDER BY TABLE_NAME;"
    )
    names = [_unhex(r[0]) for r in rows(run_sql(ep, sql, timeout=timeout))]
    if not names:
        return {"tables": {}}
    counts = [
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ;",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT;",
        *(f"SELECT COUNT(*) FROM {quote_ident(db)}.{quote_ident(n)};" for n in names),
        "COMMIT;",
    ]
    values = [r[0] for r in rows(run_sql(ep, "\n".join(counts), timeout=timeout))]
    if len(values) != len(names) or not all(v.isdigit() for v in values):
        raise SourceError(f"MySQL {ep.address} gave an unexpected answer to the row counts")
    return {"tables": dict(zip(names, (int(v) for v in values), strict=True))}


def object_count(ep: Endpoint, db: str, timeout: float = 600) -> int:
    """Tables, views, sequences, routines, triggers and events in ``db``."""
    lit = name_literal(db)
    sql = (
        f"SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit})"
        f" + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {lit})"
        f" + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {lit});"
    )
    out = rows(run_sql(ep, sql, timeout=timeout))
    return int(out[0][0]) if out and out[0][0].isdigit() else 0


def summarize(db: str, facts: DatabaseFacts, objects: int, where: str = "") -> str:
    """``database app [WHERE] holds 4 tables (120 rows in users, 88 in orders, …)``."""
    tables: dict[str, int] = facts.get("tables", {})
    top = sorted(tables.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    parts = [f"{r} rows in {n}" if i == 0 else f"{r} in {n}" for i, (n, r) in enumerate(top)]
    if len(tables) > len(top):
        parts.append("…")
    plural = "s" if len(tables) != 1 else ""
    text = f"database {db}{' ' + where if where else ''} holds {len(tables)} table{plural}"
    if parts:
        text += f" ({', '.join(parts)})"
    others = objects - len(tables)
    if others > 0:
        text += f" and {others} other object{'s' if others != 1 else ''}"
    return text


# --- reading a dump as it streams ---------------------------------------------------------------

_STRING = re.compile(rb"'(?:[^'\\]++|\\.)*+'", re.DOTALL)
_START = re.compile(rb"^(?:(INSERT INTO `)|(CREATE TABLE `)|(DELIMITER ))", re.MULTILINE)
_END_ROUTINES = re.compile(rb"^DELIMITER ;\r?$", re.MULTILINE)
_INSERT_START = re.compile(rb"^INSERT INTO ", re.MULTILINE)
_STATEMENT_END = b";\n"


def _ident_at(data: bytes, start: int) -> tuple[str, int] | None:
    """The backquoted name whose opening quote ends at ``start``; (name, index after it)."""
    i = start
    out = bytearray()
    while True:
        j = data.find(b"`", i)
        if j < 0:
            return None
        out += data[i:j]
        if data[j + 1 : j + 2] == b"`":
            out += b"`"
            i = j + 2
            continue
        return out.decode("utf-8", "replace"), j + 1


def _tuples(region: bytes) -> int:
    """Rows in a piece of a VALUES list: its opening parentheses outside quoted strings."""
    if b"'" in region:
        region = _STRING.sub(b"", region)
    return region.count(b"(")


class DumpScanner:
    """Reads a mysqldump/mariadb-dump stream as it passes (`feed`) and counts the rows of
    every table it holds.

    Each ``CREATE TABLE `t``` at the start of a line (outside ``DELIMITER ;;`` blocks, where
    routine bodies live) names a table; each ``INSERT INTO `t` VALUES`` statement adds its
    tuples, counted as the opening parentheses left once every quoted string is taken out. That
    is exact for a dump: it escapes newlines and quotes inside strings, writes binary values as
    hex, and nothing else in a VALUES list has parentheses. Because no string holds a raw
    newline, a statement ends at the first ``;`` that ends a line, so the rows are counted with
    a few C-speed passes over whole blocks, not line by line (MariaDB writes one row per line,
    MySQL one statement per line; both are read alike).

    The counts therefore describe exactly the data in the dump, whatever was written to the
    server meanwhile. `tail` keeps the last bytes for the completion trailer check."""

    def __init__(self) -> None:
        self.tables: dict[str, int] = {}
        self.head = b""
        self.tail = b""
        self._carry = b""
        self._insert: str | None = None
        self._routine = False

    def feed(self, data: bytes | memoryview) -> None:
        chunk = bytes(data)
        if len(self.head) < 64:
            self.head += chunk[: 64 - len(self.head)]
        self.tail = (self.tail + chunk)[-256:]
        block = self._carry + chunk
        cut = block.rfind(b"\n") + 1
        self._carry = block[cut:]
        if cut:
            self._scan(block[:cut] if cut < len(block) else block)

    def finish(self) -> None:
        if self._carry:
            self._scan(self._carry + b"\n")
            self._carry = b""

    def _scan(self, block: bytes) -> None:
        """Whole lines only (``block`` ends with a newline)."""
        pos, n = 0, len(block)
        while pos < n:
            if self._insert is not None:
                end = block.find(_STATEMENT_END, pos)
                stop = n if end < 0 else end + len(_STATEMENT_END)
                self.tables[self._insert] += _tuples(block[pos:stop])
                if end >= 0:
                    self._insert = None
                pos = stop
                continue
            if self._routine:
                m = _END_ROUTINES.search(block, pos)
                if m is None:
                    return
                self._routine = False
                pos = m.end()
                continue
            m = _START.search(block, pos)
            if m is None:
                return
            line_end = block.find(b"\n", m.start())
            line_end = n if line_end < 0 else line_end
            if m.group(3):  # DELIMITER
                self._routine = block[m.start() : line_end].strip() != b"DELIMITER ;"
                pos = line_end + 1
                continue
            got = _ident_at(block, m.end())
            if got is None or got[1] > line_end:
                pos = line_end + 1
                continue
            name, after = got
            self.tables.setdefault(name, 0)
            if m.group(2):  # CREATE TABLE
                pos = line_end + 1
                continue
            values = block.find(b"VALUES", after, line_end)
            self._insert = name
            pos = values + len(b"VALUES") if values >= 0 else line_end + 1

    def complete(self) -> bool:
        """The dump's last line is the tool's completion trailer, newline included."""
        if not self.tail.endswith(b"\n"):
            return False
        return self.tail[:-1].rsplit(b"\n", 1)[-1].startswith(TRAILER)


_DEFINER = re.compile(
    rb"(?:/\*!500(?:17|13) )?DEFINER=(?:`(?:[^`]|``)*`|'[^']*'|[\w.%-]+)@"
    rb"(?:`(?:[^`]|``)*`|'[^']*'|[\w.%-]+)(?: SQL SECURITY DEFINER)?(?:\s?\*/)?"
)


class LoadFilter:
    """Edits a dump on its way into the client: drops the sandbox line for a client that does
    not know it (Oracle's) and, with ``no_definer``, the ``DEFINER=…`` clauses of views,
    triggers, routines and events (they then belong to the restoring account). Data
    (``INSERT`` statements) passes untouched and unexamined."""

    def __init__(self, *, drop_sandbox: bool, no_definer: bool) -> None:
        self.drop_sandbox = drop_sandbox
        self.no_definer = no_definer
        self._carry = b""
        self._first = True
        self._insert = False

    @property
    def active(self) -> bool:
        return self.drop_sandbox or self.no_definer

    def feed(self, data: bytes | memoryview) -> bytes:
        block = self._carry + bytes(data)
        cut = block.rfind(b"\n") + 1
        self._carry = block[cut:]
        return self._edit(block[:cut]) if cut else b""

    def finish(self) -> bytes:
        rest, self._carry = self._carry, b""
        return self._edit(rest) if rest else b""

    def _edit(self, block: bytes) -> bytes:
        if self._first:
            self._first = False
            if self.drop_sandbox and block.startswith(SANDBOX_PREFIX):
                block = (
                    b"-- (sandbox-mode line removed for this client)"
                    + block[block.find(b"\n") if b"\n" in block else len(block) :]
                )
        out: list[bytes] = []
        pos, n = 0, len(block)
        while pos < n:
            if self._insert:
                end = block.find(_STATEMENT_END, pos)
                stop = n if end < 0 else end + len(_STATEMENT_END)
                out.append(block[pos:stop])
                self._insert = end < 0
                pos = stop
                continue
            m = _INSERT_START.search(block, pos)
            stop = n if m is None else m.start()
            schema = block[pos:stop]
            if self.no_definer and b"DEFINER=" in schema:
                schema = _DEFINER.sub(b"", schema)
            out.append(schema)
            if m is None:
                break
            self._insert = True
            pos = stop
        return b"".join(out)


# --- user accounts (server artifacts, MariaDB) ---------------------------------------------


_ACCOUNT = re.compile(
    r"""(?:`((?:[^`]|``)*)`|'((?:[^']|'')*)')@(?:`(?:[^`]|``)*`|'(?:[^']|'')*')"""
)
BUILTIN_ACCOUNTS = (
    "root",
    "mariadb.sys",
    "mysql",
    "mysql.sys",
    "mysql.session",
    "mysql.infoschema",
)


def accounts_in(text: str) -> list[str]:
    """The user names of ``CREATE USER`` statements in a ``--system=users`` dump."""
    names: list[str] = []
    for line in text.splitlines():
        if line.startswith("CREATE USER"):
            m = _ACCOUNT.search(line)
            if m:
                name = (m[1] or "").replace("``", "`") if m[1] is not None else m[2]
                if name not in names:
                    names.append(name)
    return names


def filter_users(text: str, current: str) -> tuple[str, list[str]]:
    """The users script minus every statement about a built-in account or the restoring
    one (``current``: ``user@host``), whose password and grants must stay as they are; each
    ``CREATE USER`` made ``IF NOT EXISTS``. Returns (script, left-out account names)."""
    keep_out = set(BUILTIN_ACCOUNTS) | {current.rsplit("@", 1)[0]}
    lines: list[str] = []
    skipped: list[str] = []
    for line in text.splitlines():
        m = _ACCOUNT.search(line)
        if m:
            name = (m[1] or "").replace("``", "`") if m[1] is not None else m[2] or ""
            if name in keep_out:
                if name not in skipped:
                    skipped.append(name)
                continue
        if line.startswith("CREATE USER ") and not line.startswith("CREATE USER IF NOT EXISTS"):
            line = "CREATE USER IF NOT EXISTS " + line[len("CREATE USER ") :]
        lines.append(line)
    return "\n".join(lines) + "\n", skipped


# --- errors -----------------------------------------------------------------------------------


def translate(exc: SourceError, ep: Endpoint, db: str | None) -> SourceError:
    """A clear sentence for the errors the client tools report most (else ``exc``)."""
    text = str(exc)
    where = f"MySQL {ep.address}"
    if m := search(r"Access denied for user '([^']*)'@'[^']*' \(using password: (YES|NO)\)", text):
        said = "rejected the password of" if m[2].upper() == "YES" else "wants a password for"
        return SourceError(f"{where} {said} user {m[1]}", hint=ep.password_hint())
    if m := search(r"Access denied for user '([^']*)'@'[^']*' to database '([^']*)'", text):
        return SourceError(
            f"{where} does not let user {m[1]} use database {m[2]}",
            hint="grant it the privileges, or connect as an account that has them",
        )
    if m := search(r"Unknown database '([^']*)'", text):
        return SourceError(
            f"database {m[1]} does not exist at {where}",
            hint="check the name (SHOW DATABASES lists them), or leave it out of the URL to "
            "capture every database",
        )
    if m := search(r"Unknown (?:MySQL )?server host '([^']*)'", text):
        return SourceError(
            f"cannot reach {where}: there is no host {m[1]}", hint="check the host in the URL"
        )
    if search(r"Can't connect to (?:local )?(?:MySQL )?server through socket", text):
        return SourceError(
            f"cannot reach {where}: nothing answers on the server's unix socket",
            hint="check that the server is running, or name a host and port in the URL",
        )
    if search(r"Can't connect to (?:MySQL )?server on", text):
        return SourceError(
            f"cannot reach {where}: the connection was refused or timed out",
            hint="check the host and port in the URL and that the server is running",
        )
    if search(r"Lost connection to (?:MySQL )?server|server has gone away", text):
        return SourceError(
            f"the connection to {where} was lost mid-way: {_brief(text)}",
            hint="check the server's log (a restart, max_allowed_packet, wait_timeout)",
        )
    if search(r"max_allowed_packet|packet bigger than", text):
        return SourceError(
            f"a row is bigger than {where} accepts (max_allowed_packet)",
            hint="raise max_allowed_packet on the server (e.g. to 1G) and try again",
        )
    if m := search(r"Access denied; you need \(at least one of\) the ([A-Z ,_]+) privilege", text):
        return SourceError(
            f"{where} denied the connecting account the {m[1].strip()} privilege",
            hint="grant it, or connect as an account that has it",
        )
    return exc


def _brief(text: str) -> str:
    return text if len(text) <= 300 else text[-300:]
