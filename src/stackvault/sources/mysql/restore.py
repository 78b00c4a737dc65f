"""MySQL/MariaDB restore (sources layer): an artifact of `MySQLSource` loaded into a server.

A restore (`MySQLSource.restore`) goes into the URL's server: a one-database artifact goes into
the URL's database (any name) or its own; a server artifact restores every database (accounts
first) or, when the URL names one, only that one. For each target database:

- it exists and holds tables, views, routines or events: without ``overwrite``
  `RestoreRefused` before anything changes; with it (the engine has taken a safety snapshot)
  it is dropped and created again;
- it exists and is empty: the dump is loaded into it as it is;
- it does not exist: ``CREATE DATABASE`` with the captured character set and collation (the
  server's default, with a notice, when it does not know them). When the CREATE fails and the
  database exists by then, someone created it between the check and the CREATE (a container's
  start-up creating ``MYSQL_DATABASE`` while a stack restore began): it is checked again and,
  empty, loaded into as an existing empty database (with a notice); holding objects, the
  restore fails without touching it.

The dump streams from the repository in 1 MiB pieces into ``mariadb --default-character-set=
utf8mb4 --max-allowed-packet=1G DB``; its failure fails the restore with its error, saying
the database is incomplete. Accounts: ``users.sql`` runs with ``--force`` after leaving out the
built-in accounts (``root``, ``mariadb.sys``, ``mysql``, …) and the restoring one, whose
passwords and grants stay as they are, and making each ``CREATE USER`` ``IF NOT EXISTS``;
errors are reported as notices.

Restore returns ``{"databases": [...], "bytes": N, "created": [...], "replaced": [...],
"reused": [...], "users": {"skipped": [...], "errors": N} | None, "owner": "keep"|"none",
"seconds": s}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from stackvault.errors import SourceError
from stackvault.sources.contract import ArtifactReader, ArtifactRestoreOptions
from stackvault.sources.dbdump.load import load_dump
from stackvault.sources.dbdump.source import (
    DatabaseRestoreResult,
    ExtraRestored,
    RestorePlanner,
    RestoreTally,
    read_dump_manifest,
)
from stackvault.sources.mysql.tools import (
    Endpoint,
    LoadFilter,
    ServerInfo,
    filter_users,
    name_literal,
    object_count,
    quote_ident,
    rows,
    run_sql,
    server_info,
    summarize,
    table_facts,
    translate,
)

USERS = "users.sql"
"""The user accounts of a server artifact (``mariadb-dump --system=users``)."""
MANIFEST = "manifest.json"


class MySQLRestore:
    """One restore of a MySQL/MariaDB artifact: ``source`` plans it, ``endpoint`` gives the
    server's endpoint (asked once the plan is made); create, then call `run` once."""

    def __init__(
        self,
        source: RestorePlanner,
        endpoint: Callable[[], Endpoint],
        reader: ArtifactReader,
        options: ArtifactRestoreOptions,
    ) -> None:
        self.source = source
        self.endpoint = endpoint
        self.reader = reader
        self.options = options
        self.timeout = source.timeout

    def run(self) -> DatabaseRestoreResult:
        reader, options = self.reader, self.options
        tally = RestoreTally()
        manifest = read_dump_manifest(reader, MANIFEST, "a MySQL artifact")
        plan, with_users = self.source.restore_plan(reader, manifest, options)
        ep = self.endpoint()
        no_owner = self.source.no_owner or options.no_owner
        info = server_info(ep, self.timeout)
        objects = {
            target: object_count(ep, target, self.timeout) if target in info["databases"] else 0
            for target, _archived, _entry in plan
        }
        busy = [t for t, n in objects.items() if n]
        if busy and not options.overwrite:
            first = busy[0]
            what = summarize(
                first, table_facts(ep, first, self.timeout), objects[first], ep.address
            )
            raise self.source.refusal(reader, what, len(busy))
        users_result = None
        if with_users:
            users_result = self._restore_users(ep, reader, info, options)
        for target, _archived, entry in plan:
            if target in busy:
                run_sql(ep, f"DROP DATABASE {quote_ident(target)};", timeout=self.timeout)
                if not self._create(ep, target, entry, options):
                    self._adopt(ep, target, options)
                tally.replaced.append(target)
            elif target in info["databases"]:
                tally.reused.append(target)
                options.notice(
                    f"database {target} {ep.address} exists and is empty; the dump is loaded "
                    "into it as it is"
                )
            elif self._create(ep, target, entry, options):
                tally.created.append(target)
            else:
                self._adopt(ep, target, options)
                tally.reused.append(target)
            tally.bytes += self._load(ep, reader, str(entry["file"]), target, no_owner)
        return tally.result(plan, "users", users_result, no_owner=no_owner)

    def _create(
        self, ep: Endpoint, db: str, entry: dict[str, Any], options: ArtifactRestoreOptions
    ) -> bool:
        """Create ``db``; True, or False when a CREATE failed because someone else created it
        in the meantime (a container's start-up creating ``MYSQL_DATABASE`` /
        ``MARIADB_DATABASE`` while the restore was checking): the caller then treats it as
        existing. Any other failure raises `SourceError`."""
        charset = str(entry.get("charset") or "")
        collation = str(entry.get("collation") or "")
        name = quote_ident(db)
        attempts = []
        if charset and collation:
            attempts.append(f"CREATE DATABASE {name} CHARACTER SET {charset} COLLATE {collation};")
        if charset:
            attempts.append(f"CREATE DATABASE {name} CHARACTER SET {charset};")
        attempts.append(f"CREATE DATABASE {name};")
        for i, sql in enumerate(attempts):
            if not re.fullmatch(r"CREATE DATABASE `(?:[^`]|``)+`[ A-Za-z0-9_]*;", sql):
                continue  # a damaged manifest's charset never reaches the server
            try:
                run_sql(ep, sql, timeout=self.timeout)
            except SourceError as exc:
                # "database exists" (1007) is not matched in the text, which lc_messages may
                # translate: the database existing now says the same.
                if self._exists(ep, db):
                    return False
                if i == len(attempts) - 1:
                    raise SourceError(
                        f"cannot create database {db} {ep.address}: {exc.message}",
                        hint=exc.hint
                        or "create it yourself and restore again: an empty "
                        "database is loaded into as it is",
                    ) from exc
                continue
            if i:
                options.notice(
                    f"database {db}: this server does not know the captured character set "
                    f"{charset} / collation {collation}; it is created with a default"
                )
            return True
        raise SourceError(f"cannot create database {db} {ep.address}: no statement was valid")

    def _exists(self, ep: Endpoint, db: str) -> bool:
        """Whether a database named ``db`` exists on the server now."""
        sql = (
            "SELECT COUNT(*) FROM information_schema.SCHEMATA "
            f"WHERE SCHEMA_NAME = {name_literal(db)};"
        )
        out = rows(run_sql(ep, sql, timeout=self.timeout))
        return bool(out) and out[0][0] not in ("", "0")

    def _adopt(self, ep: Endpoint, db: str, options: ArtifactRestoreOptions) -> None:
        """``db`` appeared while the restore was about to create it: load into it as into an
        existing empty database, or, when it holds objects already, fail without touching it."""
        objects = object_count(ep, db, self.timeout)
        if objects:
            what = summarize(db, table_facts(ep, db, self.timeout), objects, ep.address)
            raise SourceError(
                f"{what}: someone else created it while this restore was about to, and "
                "nothing was loaded into it",
                hint="find out what created it (the service's start-up?) and restore again, "
                "with --overwrite to replace it",
            )
        options.notice(
            f"database {db} {ep.address} was created by someone else (the service's start-up?) "
            "while this restore was about to create it; it is empty, so the dump is loaded "
            "into it as it is"
        )

    def _load(
        self, ep: Endpoint, reader: ArtifactReader, path: str, db: str, no_owner: bool
    ) -> int:
        """Stream the dump at ``path`` into the client on ``db``; the bytes read."""
        argv = ep.argv(
            ep.client, "--default-character-set=utf8mb4", "--max-allowed-packet=1G", db=db
        )
        edit = LoadFilter(drop_sandbox=ep.oracle_client, no_definer=no_owner)
        stream = ep.runner.input(argv, env=ep.env, label=f"{ep.client} loading database {db}")
        return load_dump(
            reader,
            path,
            stream,
            db=db,
            address=ep.address,
            translate=lambda exc: translate(exc, ep, db),
            edit=edit.feed if edit.active else None,
            finish=edit.finish if edit.active else None,
        )

    def _restore_users(
        self,
        ep: Endpoint,
        reader: ArtifactReader,
        info: ServerInfo,
        options: ArtifactRestoreOptions,
    ) -> ExtraRestored:
        text = reader.open(USERS).read().decode("utf-8", "replace")
        script, skipped = filter_users(text, str(info["account"]))
        res = run_sql(ep, script, timeout=self.timeout, force=True)
        errors = [line for line in res.stderr.splitlines() if line.startswith("ERROR")]
        if skipped:
            options.notice(
                f"user accounts {', '.join(skipped)} are left as they are {ep.address} "
                "(built-in or the restoring account)"
            )
        for line in errors[:5]:
            options.notice(f"user accounts: {line.strip()}")
        if len(errors) > 5:
            options.notice(f"user accounts: {len(errors) - 5} more errors")
        return {"skipped": skipped, "errors": len(errors)}
