"""The PostgreSQL source against real servers: ``postgres://`` on the shared ``pg_server``
(PostgreSQL 15 on 127.0.0.1, client tools on this host) and ``postgres+docker://`` on the shared
``pg_container`` (tools run inside it, none needed here). Every test makes its own databases
(unique names) and drops them.

Covered: capture → drop → restore → probe equal to the recorded facts (pgbench ``-s 10``, a
million rows, plus bytea/unicode/NULL/odd names/large objects), on the host and in the
container, and across the two; the dump is uncompressed custom format and a second dump of the
unchanged database differs only in its header (so it deduplicates); row counts come from the
dump's own snapshot while a writer inserts; all databases + roles into a fresh cluster and back
into the same server with overwrite; database properties; and every failure with its message.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.contract import (
    ArtifactRestoreOptions,
    EntryMeta,
    Readable,
    StoredFile,
    compare_facts,
)
from stackvault.sources.postgres.source import (
    DUMP,
    GLOBALS,
    MANIFEST,
    PostgresSource,
    database_path,
)
from stackvault.sources.postgres.sql import filter_globals, split_guc_list
from stackvault.sources.postgres.tools import (
    Endpoint,
    dbname_arg,
    tool_version_num,
    translate,
)
from stackvault.sources.registry import open_source
from stackvault.sources.tools.host import HostRunner
from support.artifacts import MemorySink
from support.dbcontainers import PostgresContainer
from support.dbservers import CommandError, PostgresServer, free_port
from support.servicefixtures import unique_db_name

if TYPE_CHECKING:
    from docker import DockerClient

ODD_TABLE = 'public."Odd Table"'
ODD_SQL = r"""
CREATE TABLE public."Odd Table" (id int PRIMARY KEY, data bytea, note text, n numeric);
INSERT INTO public."Odd Table"
  SELECT g,
         CASE WHEN g % 7 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') || '\x00ff00'::bytea END,
         CASE WHEN g % 5 = 0 THEN NULL ELSE 'héllo ☃ Ωμέγα ' || g || E'\n\ttab|pipe' END,
         g / 3.0
  FROM generate_series(1, 5000) g;
CREATE SCHEMA "Other Schema";
CREATE TABLE "Other Schema"."We|ird""name" AS SELECT g AS x FROM generate_series(1, 17) g;
CREATE TABLE public.empty_one (x int);
SELECT lo_from_bytea(0, '\x000102ff'::bytea);
"""
ODD_FACTS = {
    "tables": {ODD_TABLE: 5000, '"Other Schema"."We|ird""name"': 17, "public.empty_one": 0},
    "large_objects": 1,
}
CHECKSUM_SQL = (
    "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM public.\"Odd Table\" t;"
    "SELECT md5(string_agg(encode(lo_get(oid), 'hex'), ',' ORDER BY oid)) "
    "FROM pg_largeobject_metadata"
)


def capture(
    url: str, sink: MemorySink | None = None
) -> tuple[PostgresSource, MemorySink, dict[str, Any]]:
    source = open_source(url)
    assert isinstance(source, PostgresSource)
    sink = sink or MemorySink()
    try:
        meta = source.capture(sink)
    finally:
        source.close()
    return source, sink, meta


def restore(
    url: str,
    sink: MemorySink,
    meta: dict[str, Any],
    *,
    overwrite: bool = False,
    no_owner: bool = False,
    notices: list[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore into ``url``; (its result, the target's live facts)."""
    target = open_source(url)
    notes = notices if notices is not None else []
    try:
        result = target.restore(
            sink.reader("pg", "postgres", meta),
            ArtifactRestoreOptions(overwrite=overwrite, no_owner=no_owner, notice=notes.append),
        )
        return result, target.probe()
    finally:
        target.close()


def fail_message(exc: pytest.ExceptionInfo[BaseException]) -> str:
    return str(exc.value)


@pytest.fixture
def host_db(pg_env: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the host server, with the client environment set; dropped after."""
    name = pg_env.create_database(unique_db_name(request.node.name))
    yield name
    drop_host(pg_env, name)


def drop_host(server: PostgresServer, *names: str) -> None:
    for name in names:
        try:
            server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except CommandError:
            pass


def drop_container(service: PostgresContainer, *names: str) -> None:
    for name in names:
        try:
            service.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except CommandError:
            pass


@pytest.fixture
def no_pg_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH = an empty directory: no psql, pg_dump, pg_restore on this host."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("pg_dump") is None and shutil.which("psql") is None
    return empty


def fake_tool(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


# --- URLs and helpers without a server ---------------------------------------------------------


def test_url_forms() -> None:
    s = open_source("postgres://app@db.example:5433/shop")
    assert isinstance(s, PostgresSource)
    assert (s.name, s.database, s.host, s.port, s.user) == (
        "postgres-shop",
        "shop",
        "db.example",
        5433,
        "app",
    )
    assert s.location == "postgres://app@db.example:5433/shop"
    assert s.timeout == 600 and not s.no_owner
    s = open_source("postgresql://h/?owner=none&timeout=5&sslmode=require&name=nightly")
    assert isinstance(s, PostgresSource)
    assert (s.name, s.database, s.no_owner, s.timeout, s.sslmode) == (
        "nightly",
        None,
        True,
        5,
        "require",
    )
    s = open_source("postgres+docker://My-DB_1/app")
    assert isinstance(s, PostgresSource)
    assert (s.name, s.container, s.database) == ("My-DB_1-app", "My-DB_1", "app")
    s = open_source("postgres+docker://pgc")
    assert isinstance(s, PostgresSource)
    assert (s.name, s.database) == ("pgc-all", None)
    s = open_source("postgres+docker://pgc:5433/?socket=/tmp/pgsock&password_from=env:DB_PW")
    assert isinstance(s, PostgresSource)
    assert (s.port, s.socket, s.password_from) == (5433, "/tmp/pgsock", "env:DB_PW")
    for bad in (
        "postgres+docker://pgc/?socket=tmp",
        "postgres+docker://pgc/?password_from=arg",
        "postgres://h/db?socket=/tmp",
        "postgres://h/db?owner=maybe",
        "postgres://h/db?sslmode=sometimes",
        "postgres://h/db?timeout=0",
        "postgres://h/db?dbname-prefix=x",
        "postgres+docker:///db",
    ):
        with pytest.raises(UsageError):
            open_source(bad)
    with pytest.raises(UsageError, match="contains a password"):
        open_source("postgres://app:secret@h/db")
    assert database_path("app") == "databases/app.pgc"
    assert database_path("a/b c") == "databases/a%2Fb%20c.pgc"


def test_helpers() -> None:
    assert split_guc_list('"$user", public, "My ""Schema"""') == ["$user", "public", 'My "Schema"']
    assert split_guc_list("") == []
    assert split_guc_list('"unterminated') is None
    assert tool_version_num("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)") == 150020
    assert tool_version_num("pg_dump (PostgreSQL) 9.6.24") == 90624
    globals_sql = (
        "CREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER PASSWORD 'x';\n"
        'CREATE ROLE "Odd ""Role""";\nALTER ROLE "Odd ""Role""" WITH LOGIN;\n'
        "CREATE ROLE app;\nALTER ROLE app WITH LOGIN;\n"
    )
    script, skipped = filter_globals(globals_sql, ["postgres", 'Odd "Role"'], "postgres")
    assert skipped == ["postgres", 'Odd "Role"']
    assert script == (
        'ALTER ROLE "Odd ""Role""" WITH LOGIN;\nCREATE ROLE app;\nALTER ROLE app WITH LOGIN;\n'
    )


def test_translations_of_tool_errors() -> None:
    """The sentences for errors that the tests below cannot provoke on loopback (a DNS
    lookup would leave this machine), from the tools' real wording."""
    ep = Endpoint(
        runner=HostRunner(), args=[], env={}, address="at db.example:5432", in_container=False
    )

    def said(stderr: str) -> str:
        return str(
            translate(SourceError(f"psql on this host exited with status 2: {stderr}"), ep, "app")
        )

    assert said(
        'psql: error: could not translate host name "db.example" to address: Name or service '
        "not known"
    ) == (
        "cannot reach PostgreSQL at db.example:5432: there is no host db.example; check the "
        "host name in the URL"
    )
    assert said(
        'FATAL:  no pg_hba.conf entry for host "10.0.0.5", user "app", database "app", no '
        "encryption"
    ).startswith("PostgreSQL at db.example:5432 does not let user app connect from 10.0.0.5")
    assert said("FATAL:  the database system is starting up").startswith(
        "PostgreSQL at db.example:5432 is starting up or shutting down"
    )
    assert said("psql on this host did not answer in time").startswith(
        "PostgreSQL at db.example:5432 did not answer within the timeout while working on "
        "database app; raise the URL's ?timeout="
    )
    unknown = SourceError("something else entirely")
    assert translate(unknown, ep, "app") is unknown


# --- capture and restore on this host -----------------------------------------------------------


def test_pgbench_roundtrip_dedup_and_drop(pg_env: PostgresServer, host_db: str) -> None:
    """A million pgbench rows plus odd data: capture twice (the dumps differ only in the
    header), drop the database, restore it, and every fact and byte of content is back."""
    pg_env.pgbench_init(host_db, scale=10)
    pg_env.psql(ODD_SQL, db=host_db)
    before = pg_env.psql(CHECKSUM_SQL, db=host_db)
    url = pg_env.url(host_db)

    started = time.monotonic()
    _source, sink, meta = capture(url)
    seconds = time.monotonic() - started
    facts = meta["facts"]
    assert facts["tables"]["public.pgbench_accounts"] == 1_000_000
    assert facts["tables"]["public.pgbench_branches"] == 10
    assert {k: facts["tables"][k] for k in ODD_FACTS["tables"]} == ODD_FACTS["tables"]
    assert facts["large_objects"] == 1
    assert meta["mode"] == "database" and meta["databases"] == [host_db]
    assert meta["server_version_num"] // 10000 == 15
    assert meta["dump_tool"].startswith("pg_dump (PostgreSQL) 15")
    assert meta["format"] == "custom" and meta["snapshot_consistency"] == "snapshot"
    assert set(sink.data) == {DUMP, MANIFEST}
    dump = sink.data[DUMP]
    assert meta["files"][DUMP]["size"] == len(dump) > 100_000_000
    assert dump[:5] == b"PGDMP"
    # Uncompressed: the COPY text of the rows is in the archive as it is.
    assert "héllo ☃ Ωμέγα 1\\n\\ttab|pipe".encode() in dump
    # pgbench_accounts rows of branch 1 (pg_dump writes each COPY row as a chunk of its own)
    assert dump.count(b"\t1\t0\t" + b" " * 84 + b"\n") == 100_000
    manifest = sink.reader("pg", "postgres", meta).read_json(MANIFEST)
    assert manifest["databases"][host_db]["facts"] == facts
    assert manifest["databases"][host_db]["properties"]["encoding"] == "UTF8"

    # Unchanged database, second capture: same length, differing only in the header's
    # timestamp, so content-defined chunking stores the second one at almost no cost.
    time.sleep(1.1)
    _source, sink2, meta2 = capture(url)
    dump2 = sink2.data[DUMP]
    assert meta2["facts"] == facts
    assert len(dump2) == len(dump)
    differing = [i for i in range(0, 4096) if dump[i] != dump2[i]]
    assert differing and max(differing) < 64, differing
    assert dump[4096:] == dump2[4096:]
    del sink2, dump2

    drop_host(pg_env, host_db)
    result, live = restore(url, sink, meta)
    assert result["created"] == [host_db] and result["bytes"] == len(dump)
    assert compare_facts(facts, live) == []
    assert pg_env.psql(CHECKSUM_SQL, db=host_db) == before
    print(f"capture of {len(dump) >> 20} MiB took {seconds:.1f} s")


def test_counts_come_from_the_dumps_snapshot(pg_env: PostgresServer, host_db: str) -> None:
    """Rows committed while the capture runs (after the counts, before and while pg_dump
    streams) are neither counted nor dumped: the restored copy has exactly the recorded rows."""
    pg_env.pgbench_init(host_db, scale=1)
    pg_env.psql(
        "CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())", db=host_db
    )
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        while not stop.is_set():
            pg_env.psql(
                "INSERT INTO events DEFAULT VALUES;"
                "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                "VALUES (1, 1, 1, 1, now())",
                db=host_db,
            )
            written[0] += 1

    class InsertingSink(MemorySink):
        def add_file(
            self, path: str, stream: Readable, meta: EntryMeta | None = None
        ) -> StoredFile:
            if path == DUMP:  # the counts are taken; pg_dump is starting
                pg_env.psql("INSERT INTO events SELECT FROM generate_series(1, 500)", db=host_db)
            return super().add_file(path, stream, meta)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while written[0] < 3 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert written[0] >= 3, "the writer does not write"
        _source, sink, meta = capture(pg_env.url(host_db), InsertingSink())
    finally:
        stop.set()
        thread.join(timeout=30)
    assert written[0] > 3  # it went on writing during the capture
    recorded = meta["facts"]["tables"]
    live = int(pg_env.psql("SELECT count(*) FROM events", db=host_db))
    assert live >= recorded["public.events"] + 500
    copy = unique_db_name("snapshot_copy")
    try:
        _result, facts = restore(pg_env.url(copy), sink, meta)
        assert compare_facts(meta["facts"], facts) == []
    finally:
        drop_host(pg_env, copy)


def test_restore_refuses_a_database_with_data_and_overwrites_on_request(
    pg_env: PostgresServer, host_db: str
) -> None:
    pg_env.psql(ODD_SQL, db=host_db)
    _source, sink, meta = capture(pg_env.url(host_db))
    other = pg_env.create_database(unique_db_name("other"))
    try:
        pg_env.psql("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (1), (2)", db=other)
        target = open_source(pg_env.url(other))
        assert (
            target.describe_target() == f"database {other} holds 1 table (2 rows in public.keep_me)"
        )
        with pytest.raises(RestoreRefused) as refused:
            restore(pg_env.url(other), sink, meta)
        assert "pass --overwrite" in fail_message(refused)
        assert f"database {other} at 127.0.0.1:{pg_env.port} holds 1 table" in fail_message(refused)
        assert pg_env.psql("SELECT count(*) FROM keep_me", db=other) == "2"  # untouched

        # Someone stays connected to it: the overwrite terminates that session.
        blocker = threading.Thread(
            target=_ignore,
            args=(lambda: pg_env.psql("SELECT pg_sleep(60)", db=other),),
            daemon=True,
        )
        blocker.start()
        deadline = time.monotonic() + 10
        while (
            pg_env.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{other}'") == "0"
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        notices: list[str] = []
        result, live = restore(pg_env.url(other), sink, meta, overwrite=True, notices=notices)
        blocker.join(timeout=10)
        assert result["replaced"] == [other]
        assert compare_facts(meta["facts"], live) == []
        assert any("terminating 1 other connection" in n for n in notices), notices
        assert pg_env.psql("SELECT to_regclass('public.keep_me') IS NULL", db=other) == "t"
        assert pg_env.psql(CHECKSUM_SQL, db=other) == pg_env.psql(CHECKSUM_SQL, db=host_db)

        # An existing database without tables is restored into as it is (no overwrite needed).
        empty = pg_env.create_database(unique_db_name("empty"))
        try:
            pg_env.psql(f"COMMENT ON DATABASE \"{empty}\" IS 'made by hand'")
            assert open_source(pg_env.url(empty)).describe_target() is None
            result, live = restore(pg_env.url(empty), sink, meta)
            assert result["reused"] == [empty] and compare_facts(meta["facts"], live) == []
            assert (
                pg_env.psql(
                    f"SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                    f"WHERE datname = '{empty}'"
                )
                == "made by hand"
            )
        finally:
            drop_host(pg_env, empty)
    finally:
        drop_host(pg_env, other)


def test_database_created_by_someone_else_between_check_and_create(
    pg_env: PostgresServer, host_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container's start-up (POSTGRES_DB, init scripts) may create the database after the
    restore found it missing and before its CREATE DATABASE: an empty one is restored into,
    one with tables is left untouched and the restore fails."""
    import stackvault.sources.postgres.restore as pg_restore

    pg_env.psql(ODD_SQL, db=host_db)
    _source, sink, meta = capture(pg_env.url(host_db))
    target = unique_db_name("raced")
    original = pg_restore.create_database_sql
    extra_sql: list[str] = []

    def create_first(name: str, *args: Any, **kw: Any) -> Any:
        pg_env.create_database(name)  # the other party wins the race
        for sql in extra_sql:
            pg_env.psql(sql, db=name)
        return original(name, *args, **kw)

    monkeypatch.setattr(pg_restore, "create_database_sql", create_first)
    try:
        notices: list[str] = []
        result, live = restore(pg_env.url(target), sink, meta, notices=notices)
        assert result["reused"] == [target] and result["created"] == []
        assert compare_facts(meta["facts"], live) == []
        assert any("was created by someone else" in n for n in notices), notices
        assert pg_env.psql(CHECKSUM_SQL, db=target) == pg_env.psql(CHECKSUM_SQL, db=host_db)

        drop_host(pg_env, target)
        extra_sql.append("CREATE TABLE theirs (x int); INSERT INTO theirs VALUES (7)")
        with pytest.raises(SourceError) as failed:
            restore(pg_env.url(target), sink, meta)
        assert f"database {target} at 127.0.0.1:{pg_env.port} holds 1 table" in fail_message(failed)
        assert "someone else created it" in fail_message(failed)
        assert pg_env.psql("SELECT count(*) FROM theirs", db=target) == "1"  # untouched
        assert pg_env.psql("SELECT to_regclass('public.\"Odd Table\"') IS NULL", db=target) == "t"
    finally:
        drop_host(pg_env, target)


def _ignore(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:
        pass


def test_database_properties_are_restored(pg_env: PostgresServer, host_db: str) -> None:
    role = f"r_{secrets.token_hex(4)}"
    pg_env.psql(
        f"CREATE ROLE {role} LOGIN; "
        f'ALTER DATABASE "{host_db}" SET search_path = \'$user\', public, "My Schema"; '
        f"ALTER DATABASE \"{host_db}\" SET work_mem = '7MB'; "
        f"ALTER ROLE {role} IN DATABASE \"{host_db}\" SET statement_timeout = '5s'; "
        f"COMMENT ON DATABASE \"{host_db}\" IS 'it''s ours'; "
        f'ALTER DATABASE "{host_db}" CONNECTION LIMIT 40; '
        f'REVOKE ALL ON DATABASE "{host_db}" FROM PUBLIC; '
        f'GRANT CONNECT ON DATABASE "{host_db}" TO {role}; '
        f'ALTER DATABASE "{host_db}" OWNER TO {role}'
    )
    props_sql = (
        "SELECT d.datconnlimit, pg_get_userbyid(d.datdba), shobj_description(d.oid, "
        "'pg_database'), d.datacl::text, (SELECT string_agg(coalesce(s.setrole::regrole::text, "
        "'-') || '=' || s.setconfig::text, ';' ORDER BY s.setrole) FROM pg_db_role_setting s "
        "WHERE s.setdatabase = d.oid) FROM pg_database d WHERE datname = '{}'"
    )
    expected = pg_env.psql(props_sql.format(host_db))
    _source, sink, meta = capture(pg_env.url(host_db))
    copy = unique_db_name("props_copy")
    try:
        restore(pg_env.url(copy), sink, meta)
        assert pg_env.psql(props_sql.format(copy)) == expected.replace(host_db, copy)
        # owner=none: the restoring role owns it, no GRANTs, settings and comment still there.
        drop_host(pg_env, copy)
        restore(pg_env.url(copy) + "?owner=none", sink, meta)
        limit, owner, comment, acl, _settings = pg_env.psql(props_sql.format(copy)).split("|")
        assert (limit, owner, comment, acl) == ("40", "postgres", "it's ours", "")
    finally:
        drop_host(pg_env, copy, host_db)
        pg_env.psql(f"DROP ROLE IF EXISTS {role}")


def test_all_databases_with_roles_into_a_fresh_cluster_and_back(
    pg_env: PostgresServer,
    pg_container: PostgresContainer,
    docker_env: str,
    request: pytest.FixtureRequest,
) -> None:
    role = f"r_{secrets.token_hex(4)}"
    one = pg_env.create_database(unique_db_name("all_one"))
    two = pg_env.create_database(unique_db_name("all_two"))
    try:
        pg_env.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
        pg_env.psql(f'ALTER DATABASE "{two}" OWNER TO {role}')
        pg_env.psql(ODD_SQL, db=one)
        pg_env.psql(
            f"CREATE TABLE owned (x int); ALTER TABLE owned OWNER TO {role}; "
            "INSERT INTO owned SELECT generate_series(1, 300)",
            db=two,
        )
        _source, sink, meta = capture(f"postgres://postgres@127.0.0.1:{pg_env.port}/")
        assert meta["mode"] == "server" and meta["snapshot_consistency"] == "per-database"
        assert {one, two, "postgres"} <= set(meta["databases"])
        assert role in meta["roles"] and meta["role_passwords"] is True
        globals_sql = sink.data[GLOBALS].decode()
        assert f"CREATE ROLE {role};" in globals_sql
        assert database_path(one) in sink.data and database_path(two) in sink.data
        assert meta["facts"]["databases"][one] == ODD_FACTS
        assert meta["facts"]["databases"][two] == {
            "tables": {"public.owned": 300},
            "large_objects": 0,
        }
        assert set(meta["snapshots"]) == set(meta["databases"])

        # Into another cluster (the container), where neither the role nor the databases
        # exist: the role comes back with its password, the databases with their owner.
        try:
            notices: list[str] = []
            result, live = restore(
                f"postgres+docker://{pg_container.name}", sink, meta, notices=notices
            )
            assert {one, two} <= set(result["created"])
            assert result["globals"]["errors"] == 0, notices
            for db in (one, two):
                assert compare_facts(meta["facts"]["databases"][db], live["databases"][db]) == []
            assert (
                pg_container.psql(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{role}'")
                == "t"
            )
            assert (
                pg_container.psql(
                    f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{two}'"
                )
                == role
            )
            assert (
                pg_container.psql(
                    "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'", db=two
                )
                == role
            )
            assert pg_container.psql(CHECKSUM_SQL, db=one) == pg_env.psql(CHECKSUM_SQL, db=one)
            # The container's own superuser kept its password: TCP with it still works.
            pg_container.exec(
                ["sh", "-c", 'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -w -c "SELECT 1"']
            )
        finally:
            drop_container(pg_container, one, two)
            pg_container.psql(f"DROP ROLE IF EXISTS {role}")

        # Back into the same server: refused while the databases hold data, then overwritten.
        with pytest.raises(RestoreRefused):
            restore(f"postgres://postgres@127.0.0.1:{pg_env.port}", sink, meta)
        pg_env.psql("INSERT INTO owned VALUES (0)", db=two)
        result, live = restore(
            f"postgres://postgres@127.0.0.1:{pg_env.port}", sink, meta, overwrite=True
        )
        assert {one, two} <= set(result["replaced"])
        assert role in result["globals"]["skipped_existing_roles"]
        for db in (one, two):
            assert compare_facts(meta["facts"]["databases"][db], live["databases"][db]) == []

        # One database out of the server artifact, under its own name.
        drop_host(pg_env, two)
        notices = []
        result, live = restore(pg_env.url(two), sink, meta, notices=notices)
        assert result["databases"] == [two] and result["globals"] is None
        assert compare_facts(meta["facts"]["databases"][two], live) == []
        with pytest.raises(SourceError, match="holds no database nope"):
            restore(pg_env.url("nope"), sink, meta)
    finally:
        drop_host(pg_env, one, two)
        pg_env.psql(f"DROP ROLE IF EXISTS {role}")


def test_odd_database_names(pg_env: PostgresServer) -> None:
    """Names with quotes, '=', spaces and non-ASCII reach the tools intact (never read as a
    connection string) and are quoted in SQL."""
    name = f"Odd 'db'=x Ω {secrets.token_hex(3)}"
    copy = f'copy "{secrets.token_hex(3)}" \\ back'
    pg_env.psql(f'CREATE DATABASE "{name}"')
    try:
        pg_env.psql(
            "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3)", db=dbname_arg(name)
        )
        url = f"postgres://postgres@127.0.0.1:{pg_env.port}/{quote(name, safe='')}"
        source, sink, meta = capture(url)
        assert source.database == name and meta["databases"] == [name]
        assert meta["facts"] == {"tables": {"public.t": 3}, "large_objects": 0}
        target = f"postgres://postgres@127.0.0.1:{pg_env.port}/{quote(copy, safe='')}"
        result, live = restore(target, sink, meta)
        assert result["created"] == [copy] and compare_facts(meta["facts"], live) == []
    finally:
        drop_host(pg_env, name, copy.replace('"', '""'))


# --- in a container ------------------------------------------------------------------------------


def test_container_roundtrip_without_client_tools_on_this_host(
    pg_container: PostgresContainer, docker_env: str, no_pg_tools: Path
) -> None:
    db = pg_container.create_database(unique_db_name("docker"))
    try:
        pg_container.exec(["pgbench", "-i", "-s", "2", "-q", db])
        pg_container.psql(ODD_SQL, db=db)
        before = pg_container.psql(CHECKSUM_SQL, db=db)
        url = f"postgres+docker://{pg_container.name}/{db}"
        source, sink, meta = capture(url)
        assert source.name == f"{pg_container.name}-{db}"
        assert meta["where"] == f"in container {pg_container.name}"
        assert meta["container"]["name"] == pg_container.name
        assert meta["facts"]["tables"]["public.pgbench_accounts"] == 200_000
        assert sink.data[DUMP][:5] == b"PGDMP"
        assert open_source(url).describe_target() is not None

        drop_container(pg_container, db)
        assert open_source(url).describe_target() is None
        result, live = restore(url, sink, meta)
        assert result["created"] == [db]
        assert compare_facts(meta["facts"], live) == []
        assert pg_container.psql(CHECKSUM_SQL, db=db) == before
    finally:
        drop_container(pg_container, db)


def test_host_capture_restores_into_the_container_under_another_name(
    pg_env: PostgresServer, host_db: str, pg_container: PostgresContainer, docker_env: str
) -> None:
    pg_env.psql(ODD_SQL, db=host_db)
    _source, sink, meta = capture(pg_env.url(host_db))
    other = unique_db_name("renamed")
    try:
        result, live = restore(f"postgres+docker://{pg_container.name}/{other}", sink, meta)
        assert result["databases"] == [other]
        assert compare_facts(meta["facts"], live) == []
        assert pg_container.psql(CHECKSUM_SQL, db=other) == pg_env.psql(CHECKSUM_SQL, db=host_db)
    finally:
        drop_container(pg_container, other)


def test_missing_role_fails_the_restore_unless_owner_none(
    pg_env: PostgresServer, host_db: str, pg_container: PostgresContainer, docker_env: str
) -> None:
    role = f"r_{secrets.token_hex(4)}"
    pg_env.psql(f"CREATE ROLE {role}")
    try:
        pg_env.psql(f"CREATE TABLE t (x int); ALTER TABLE t OWNER TO {role}", db=host_db)
        _source, sink, meta = capture(pg_env.url(host_db))
    finally:
        pg_env.psql(f"DROP OWNED BY {role}; DROP ROLE {role}", db=host_db)
    other = unique_db_name("norole")
    url = f"postgres+docker://{pg_container.name}/{other}"
    try:
        with pytest.raises(SourceError) as failed:
            restore(url, sink, meta)
        message = fail_message(failed)
        assert f"restoring database {other} in container {pg_container.name} failed" in message
        assert f"role {role} does not exist" in message and "owner=none" in message
        drop_container(pg_container, other)
        result, live = restore(url, sink, meta, no_owner=True)
        assert result["owner"] == "none" and compare_facts(meta["facts"], live) == []
    finally:
        drop_container(pg_container, other)


@pytest.mark.postgres  # starts a PostgreSQL container of its own
def test_container_without_a_socket_uses_tcp_with_its_own_password(
    docker_client: DockerClient, host_image: str, docker_env: str
) -> None:
    """A server in a container that only TCP reaches: the tools connect to 127.0.0.1 with
    PGPASSWORD taken from the container's POSTGRES_PASSWORD inside it; a password that no
    longer matches is reported as such (without any password in the message)."""
    service = PostgresContainer(docker_client, host_image)
    service.start()
    try:
        db = service.create_database("tcp_only")
        service.psql("CREATE TABLE t AS SELECT generate_series(1, 10) AS x", db=db)
        service.exec(["sh", "-c", "rm -f /var/run/postgresql/.s.PGSQL.*"], user="0:0")
        with pytest.raises(CommandError):
            service.psql("SELECT 1")  # the socket is gone
        url = f"postgres+docker://{service.name}/{db}"
        _source, sink, meta = capture(url)
        assert meta["container"]["connection"] == "tcp"
        assert meta["facts"] == {"tables": {"public.t": 10}, "large_objects": 0}
        _result, live = restore(f"postgres+docker://{service.name}/copy", sink, meta)
        assert compare_facts(meta["facts"], live) == []

        changed = secrets.token_hex(8)
        service.exec(
            [
                "sh",
                "-c",
                'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -w -c '
                f"\"ALTER ROLE postgres PASSWORD '{changed}'\"",
            ]
        )
        with pytest.raises(SourceError) as failed:
            capture(url)
        message = fail_message(failed)
        assert message.startswith(
            f"PostgreSQL in container {service.name} rejected the password of user postgres; "
            "check POSTGRES_PASSWORD in the container's environment"
        ), message
        assert changed not in message and service.password not in message
    finally:
        service.remove()


def test_container_errors(pg_container: PostgresContainer, docker_env: str) -> None:
    with pytest.raises(
        SourceError, match="database nope_db does not exist at PostgreSQL in container"
    ):
        capture(f"postgres+docker://{pg_container.name}/nope_db")
    with pytest.raises(SourceError, match="there is no container 'no-such-container'"):
        capture("postgres+docker://no-such-container/db")


# --- failures on this host -----------------------------------------------------------------------


def test_wrong_or_missing_password(
    pg_env: PostgresServer, host_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = f"wrong-{secrets.token_hex(6)}"
    monkeypatch.setenv("PGPASSWORD", wrong)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(SourceError) as failed:
        capture(pg_env.url(host_db))
    message = fail_message(failed)
    assert message.startswith(
        f"PostgreSQL at 127.0.0.1:{pg_env.port} rejected the password of user postgres; set "
        "PGPASSWORD"
    ), message
    assert wrong not in message and pg_env.password not in message
    monkeypatch.delenv("PGPASSWORD")
    with pytest.raises(SourceError, match="asks for a password and none was given"):
        capture(pg_env.url(host_db))
    # ~/.pgpass (here PGPASSFILE) is honoured.
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_env.port}:*:postgres:{pg_env.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    _source, _sink, meta = capture(pg_env.url(host_db))
    assert meta["facts"] == {"tables": {}, "large_objects": 0}


def test_unreachable_server_and_missing_database(pg_env: PostgresServer) -> None:
    port = free_port()
    with pytest.raises(SourceError) as failed:
        capture(f"postgres://postgres@127.0.0.1:{port}/app")
    assert fail_message(failed) == (
        f"cannot reach PostgreSQL at 127.0.0.1:{port}: the connection was refused; check the "
        "host and port in the URL and that the server is running"
    )
    with pytest.raises(SourceError) as failed:
        capture(pg_env.url("no_such_db"))
    assert fail_message(failed).startswith(
        f"database no_such_db does not exist at PostgreSQL at 127.0.0.1:{pg_env.port}"
    )
    with pytest.raises(SourceError, match="does not exist"):
        open_source(pg_env.url("no_such_db")).probe()


def test_permission_denied_for_a_table(
    pg_env: PostgresServer, host_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = f"r_{secrets.token_hex(4)}"
    password = secrets.token_hex(8)
    pg_env.psql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        pg_env.psql("CREATE TABLE secret (x int)", db=host_db)
        monkeypatch.setenv("PGPASSWORD", password)
        with pytest.raises(SourceError) as failed:
            capture(f"postgres://{role}@127.0.0.1:{pg_env.port}/{host_db}")
        assert fail_message(failed).startswith(
            f"PostgreSQL at 127.0.0.1:{pg_env.port} denied {role} access to table secret "
            "(permission denied); connect as a superuser"
        ), fail_message(failed)
        assert password not in fail_message(failed)
    finally:
        pg_env.psql(f"DROP OWNED BY {role}; DROP ROLE {role}", db=host_db)


def test_locked_table_times_out(pg_env: PostgresServer, host_db: str) -> None:
    pg_env.psql("CREATE TABLE busy (x int)", db=host_db)
    holder = threading.Thread(
        target=pg_env.psql,
        args=("BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT",),
        kwargs={"db": host_db},
        daemon=True,
    )
    holder.start()
    try:
        while (
            pg_env.psql(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'busy' AND l.mode = 'AccessExclusiveLock' AND l.granted",
                db=host_db,
            )
            == "0"
        ):
            time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(SourceError) as failed:
            capture(pg_env.url(host_db) + "?timeout=1")
        assert time.monotonic() - started < 3.5
        assert fail_message(failed) == (
            f"a table of database {host_db} at 127.0.0.1:{pg_env.port} stayed locked by another "
            "session for longer than the timeout; try again when the lock is released, or "
            "raise ?timeout="
        )
    finally:
        holder.join(timeout=30)


def test_pg_dump_terminated_mid_stream(pg_env: PostgresServer, host_db: str) -> None:
    pg_env.pgbench_init(host_db, scale=2)
    pg_env.psql("CREATE TABLE zzz_last AS SELECT 1 AS x", db=host_db)
    terminated: list[str] = []

    class KillingSink(MemorySink):
        def add_file(
            self, path: str, stream: Readable, meta: EntryMeta | None = None
        ) -> StoredFile:
            class Killer:
                def __init__(self) -> None:
                    self.count = 0

                def readinto(self, buf: memoryview) -> int:
                    n = stream.readinto(buf)
                    self.count += n
                    if self.count > (1 << 20) and not terminated:
                        terminated.append(
                            pg_env.psql(
                                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                f"WHERE application_name = 'stackvault-pg_dump' "
                                f"AND datname = '{host_db}'"
                            )
                        )
                    return n

                def read(self, n: int = -1) -> bytes:
                    buf = bytearray(n if n > 0 else 1 << 20)
                    got = self.readinto(memoryview(buf))
                    return bytes(buf[:got])

            return super().add_file(path, Killer(), meta)

    with pytest.raises(SourceError) as failed:
        capture(pg_env.url(host_db), KillingSink())
    assert terminated == ["1"]
    message = fail_message(failed)
    print(message, "\n", failed.value.__cause__)
    # libpq reports either the server's FATAL or only the closed connection, by timing.
    assert (
        "was terminated by an administrator" in message
        or "closed the connection unexpectedly" in message
    ), message
    assert host_db in message and "nothing of it was recorded" in message


def test_dump_tool_older_than_server(
    pg_env: PostgresServer, host_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "pg_dump", 'echo "pg_dump (PostgreSQL) 14.0"; exit 0\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(SourceError) as failed:
        capture(pg_env.url(host_db))
    assert fail_message(failed) == (
        "pg_dump 14 cannot dump a PostgreSQL 15 server; install postgresql-client-15 or capture "
        "through the container (postgres+docker://CONTAINER/DB)"
    )
    # A pg_dump that passes the version check but then refuses the server itself.
    fake_tool(
        bin_dir,
        "pg_dump",
        'if [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) 16.0"; exit 0; fi\n'
        'echo "pg_dump: error: aborting because of server version mismatch" >&2\n'
        'echo "pg_dump: detail: server version: 17.2; pg_dump version: 16.0" >&2\nexit 1\n',
    )
    with pytest.raises(SourceError) as failed:
        capture(pg_env.url(host_db))
    assert fail_message(failed).startswith("pg_dump 16.0 cannot dump a PostgreSQL 17.2 server")


def test_truncated_dump_fails_the_completeness_check(
    pg_env: PostgresServer, host_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pg_dump that stops early yet exits 0: pg_restore, reading the same stream, notices."""
    pg_env.psql(ODD_SQL, db=host_db)
    real = shutil.which("pg_dump")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(
        bin_dir,
        "pg_dump",
        f'if [ "$1" = --version ]; then exec {real} "$@"; fi\n'
        f'{real} "$@" > {tmp_path}/full.pgc || exit 1\n'
        f"head -c -3 {tmp_path}/full.pgc\nexit 0\n",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(SourceError) as failed:
        capture(pg_env.url(host_db))
    assert "failed its completeness check: pg_restore exited with status 1" in fail_message(
        failed
    ), fail_message(failed)
    assert "end of file" in fail_message(failed)


def test_client_tools_missing_on_this_host(pg_env: PostgresServer, no_pg_tools: Path) -> None:
    with pytest.raises(SourceError) as failed:
        capture(pg_env.url("postgres"))
    assert fail_message(failed) == (
        "psql is not installed on this host; install postgresql-client of the server's major "
        "version or newer, or capture through the container (postgres+docker://CONTAINER/DB)"
    )
