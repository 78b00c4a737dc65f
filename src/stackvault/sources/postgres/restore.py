"""PostgreSQL restore (sources layer): an artifact of `PostgresSource` loaded into a server.

A restore (`PostgresSource.restore`) goes into the URL's server: a one-database artifact goes into
the URL's database (any name), or its own name when the URL names none; a server artifact
restores every database under its own name (globals first), or, when the URL names one
database, only that one (without globals). For each target database:

- it exists and holds user tables or large objects (`describe_target`: "database app holds 4
  tables (120 rows in public.users, …)"): without ``overwrite`` `RestoreRefused`, before
  anything is changed; with it (the engine has taken a safety snapshot) the other sessions on
  it are terminated (``pg_terminate_backend``; said in a notice) and it is dropped
  (``WITH (FORCE)`` from PostgreSQL 13) and created again;
- it exists and holds none: the dump is restored into it as it is (owner, locale and settings
  someone chose for it stay);
- it does not exist: ``CREATE DATABASE … TEMPLATE template0`` with the captured encoding and
  locale, owned by the captured owner if that role exists here and ``owner=keep`` (else by the
  restoring role, with a notice); then the captured comment, connection limit, settings and
  (with ``owner=keep``) privileges are applied - one failing statement (a role missing here)
  is reported as a notice, not fatal. When the CREATE fails and the database exists by then,
  someone created it between the check and the CREATE (a container's start-up creating
  ``POSTGRES_DB`` or running its init scripts while a stack restore began): it is checked
  again and, holding no tables, restored into as an existing empty database (with a notice);
  holding some, the restore fails without touching it.

CREATE/DROP DATABASE run on the ``postgres`` database (``template1`` when the target is
``postgres``). The dump is streamed from the repository in 1 MiB pieces into ``pg_restore
--exit-on-error --no-password -d DB`` (plus ``--no-owner --no-privileges`` for owner=none); its
failure fails the restore with its error, saying that the database is incomplete. Then
``ANALYZE`` gives the planner statistics (pg_restore does not).

Globals: ``globals.sql`` runs through psql *without* ON_ERROR_STOP, after two edits: ``CREATE
ROLE`` of roles that exist already is left out (it could only fail; their ``ALTER ROLE …
WITH`` still sets the captured attributes and password), and so is the ``ALTER ROLE … WITH``
of the role the restore connects as, whose attributes and password stay as they are (else the
restore, and its operator, could lock themselves out). Other errors (a tablespace directory
missing here) are reported as notices; the databases are restored regardless.

Restore returns ``{"databases": [NAME, ...], "bytes": N, "created": [...], "replaced": [...],
"reused": [...], "globals": {"skipped_existing_roles": [...], "errors": N} | None,
"owner": "keep"|"none", "seconds": s}``.
"""

from __future__ import annotations

import time
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
from stackvault.sources.postgres.sql import (
    create_database_sql,
    filter_globals,
    properties_sql,
    quote_ident,
    quote_literal,
)
from stackvault.sources.postgres.tools import (
    DatabaseFacts,
    Endpoint,
    ServerInfo,
    database_facts,
    maintenance_db,
    require_restore_tool,
    require_tools,
    run_script,
    server_info,
    summarize_tables,
    translate,
)

GLOBALS = "globals.sql"
"""Roles and tablespaces of a server artifact (``pg_dumpall --globals-only``)."""
MANIFEST = "manifest.json"


class DatabaseTarget:
    """What a restore finds where a database goes."""

    def __init__(self, name: str, exists: bool, facts: DatabaseFacts | None) -> None:
        self.name = name
        self.exists = exists
        self.facts = facts

    @property
    def holds_data(self) -> bool:
        return self.facts is not None and bool(
            self.facts.get("tables") or self.facts.get("large_objects")
        )


class PostgresRestore:
    """One restore of a PostgreSQL artifact: ``source`` plans it, ``endpoint`` gives the
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
        manifest = read_dump_manifest(reader, MANIFEST, "a PostgreSQL artifact")
        plan, with_globals = self.source.restore_plan(reader, manifest, options)
        ep = self.endpoint()
        require_tools(ep, ["psql", "pg_restore"])
        require_restore_tool(ep, str(manifest.get("dump_tool") or ""))
        no_owner = self.source.no_owner or options.no_owner
        info = server_info(ep, self.timeout)
        num = int(info["server_version_num"])
        targets = {
            target: DatabaseTarget(
                target,
                target in info["all"],
                database_facts(ep, target, self.timeout) if target in info["all"] else None,
            )
            for target, _archived, _entry in plan
        }
        busy = [t for t in targets.values() if t.holds_data]
        if busy and not options.overwrite:
            first = busy[0]
            assert first.facts is not None
            what = summarize_tables(first.name, first.facts, ep.address)
            raise self.source.refusal(reader, what, len(busy))
        globals_result = None
        if with_globals:
            globals_result = self._restore_globals(ep, reader, info, options)
            info = server_info(ep, self.timeout)  # the roles the globals created
        roles = set(info["roles"])
        for target, _archived, entry in plan:
            state = targets[target]
            props: dict[str, Any] = entry.get("properties") or {}
            exists = state.exists
            if state.holds_data:
                self._drop(ep, target, num, options)
                tally.replaced.append(target)
                exists = False
            if exists:
                tally.reused.append(target)
                options.notice(
                    f"database {target} {ep.address} exists and holds no tables; the dump is "
                    "restored into it as it is"
                )
            elif self._create(ep, target, props, num, roles, no_owner, info["user"], options):
                if target not in tally.replaced:
                    tally.created.append(target)
            else:
                self._adopt(ep, target, options)
                exists = True
                if target not in tally.replaced:
                    tally.reused.append(target)
            tally.bytes += self._load(ep, reader, str(entry["file"]), target, no_owner)
            if not exists:
                self._apply_properties(ep, target, props, no_owner, options)
            run_script(ep, target, "ANALYZE", timeout=self.timeout)
        return tally.result(plan, "globals", globals_result, no_owner=no_owner)

    def _drop(self, ep: Endpoint, db: str, num: int, options: ArtifactRestoreOptions) -> None:
        maint = maintenance_db(db)
        lit = quote_literal(db)
        others_sql = (
            f"SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = {lit} "
            "AND pid <> pg_catalog.pg_backend_pid()"
        )
        out, _ = run_script(ep, maint, others_sql, timeout=self.timeout)
        others = int(out.strip() or 0)
        if others:
            options.notice(
                f"terminating {others} other connection(s) to database {db} {ep.address} so "
                "that it can be replaced"
            )
        terminate = (
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
            f"WHERE datname = {lit} AND pid <> pg_catalog.pg_backend_pid()"
        )
        drop = f"DROP DATABASE {quote_ident(db)}" + (" WITH (FORCE)" if num >= 130000 else "")
        for attempt in range(10):
            try:
                run_script(ep, maint, f"{terminate};\n{drop}", timeout=self.timeout)
                return
            except SourceError as exc:
                if "being accessed by other users" not in str(exc) or attempt == 9:
                    raise
                time.sleep(0.5)

    def _create(
        self,
        ep: Endpoint,
        db: str,
        props: dict[str, Any],
        num: int,
        roles: set[str],
        no_owner: bool,
        current: str,
        options: ArtifactRestoreOptions,
    ) -> bool:
        """Create ``db``; True, or False when the CREATE failed because someone else created
        it in the meantime (a container's start-up creating ``POSTGRES_DB`` or running its
        init scripts while the restore was checking): the caller then treats it as existing.
        Any other failure raises `SourceError`."""
        owner = props.get("owner")
        if no_owner or not owner:
            owner = None
        elif owner not in roles:
            options.notice(
                f"role {owner}, which owned database {db}, does not exist {ep.address}; the "
                f"database is created owned by {current}"
            )
            owner = None
        sql, notes = create_database_sql(db, props, num, owner)
        for note in notes:
            options.notice(f"database {db}: {note}; it is created with the server's default")
        try:
            run_script(ep, maintenance_db(db), sql, timeout=self.timeout)
            return True
        except SourceError as exc:
            # "already exists" (42P04) is not matched in the text, which the server's
            # lc_messages may translate: the database existing now says the same.
            if self._exists(ep, db):
                return False
            raise SourceError(
                f"cannot create database {db} {ep.address}: {exc.message}",
                hint=exc.hint
                or "create it yourself (e.g. with createdb) and restore again: an empty "
                "database is restored into as it is",
            ) from exc

    def _exists(self, ep: Endpoint, db: str) -> bool:
        """Whether a database named ``db`` exists on the server now."""
        sql = f"SELECT count(*) FROM pg_catalog.pg_database WHERE datname = {quote_literal(db)}"
        out, _ = run_script(ep, maintenance_db(db), sql, timeout=self.timeout)
        return out.strip() not in ("", "0")

    def _adopt(self, ep: Endpoint, db: str, options: ArtifactRestoreOptions) -> None:
        """``db`` appeared while the restore was about to create it: restore into it as into an
        existing empty database, or, when it holds tables already, fail without touching it."""
        facts = database_facts(ep, db, self.timeout)
        target = DatabaseTarget(db, True, facts)
        if target.holds_data:
            raise SourceError(
                f"{summarize_tables(db, facts, ep.address)}: someone else created it while "
                "this restore was about to, and nothing was restored into it",
                hint="find out what created it (the service's start-up?) and restore again, "
                "with --overwrite to replace it",
            )
        options.notice(
            f"database {db} {ep.address} was created by someone else (the service's start-up?) "
            "while this restore was about to create it; it holds no tables, so the dump is "
            "restored into it as it is"
        )

    def _apply_properties(
        self,
        ep: Endpoint,
        db: str,
        props: dict[str, Any],
        no_owner: bool,
        options: ArtifactRestoreOptions,
    ) -> None:
        statements = properties_sql(db, props, privileges=not no_owner)
        if not statements:
            return
        script = ";\n".join(statements) + ";"
        _out, errors = run_script(
            ep, maintenance_db(db), script, timeout=self.timeout, stop_on_error=False
        )
        for line in errors[:5]:
            options.notice(f"database {db}: a property could not be restored: {line.strip()}")
        if len(errors) > 5:
            options.notice(f"database {db}: {len(errors) - 5} more properties failed")

    def _load(
        self, ep: Endpoint, reader: ArtifactReader, path: str, db: str, no_owner: bool
    ) -> int:
        """Stream the dump at ``path`` into pg_restore on ``db``; the bytes sent."""
        argv = ep.argv("pg_restore", db, "--exit-on-error", "--no-password")
        if no_owner:
            argv[1:1] = ["--no-owner", "--no-privileges"]
        stream = ep.runner.input(
            argv, env=ep.tool_env("stackvault-pg_restore"), label=f"pg_restore of database {db}"
        )
        return load_dump(
            reader,
            path,
            stream,
            db=db,
            address=ep.address,
            translate=lambda exc: translate(exc, ep, db),
        )

    def _restore_globals(
        self,
        ep: Endpoint,
        reader: ArtifactReader,
        info: ServerInfo,
        options: ArtifactRestoreOptions,
    ) -> ExtraRestored:
        text = reader.open(GLOBALS).read().decode("utf-8")
        current = str(info["user"])
        script, skipped = filter_globals(text, info["roles"], current)
        _out, errors = run_script(
            ep, maintenance_db(), script, timeout=self.timeout, stop_on_error=False
        )
        if skipped:
            options.notice(
                f"{len(skipped)} role(s) of the artifact exist already {ep.address}; they get "
                f"the captured attributes and passwords, except {current}, the restoring role"
            )
        for line in errors[:5]:
            options.notice(f"roles and tablespaces: {line.strip()}")
        if len(errors) > 5:
            options.notice(f"roles and tablespaces: {len(errors) - 5} more errors")
        return {"skipped_existing_roles": skipped, "errors": len(errors)}
