"""The MySQL/MariaDB source against real servers: ``mysql://`` on the shared ``mariadb_server``
(MariaDB 10.11 on 127.0.0.1, client tools on this host) and ``mysql+docker://`` on the shared
``mariadb_container`` (tools run inside it). Every test makes its own databases and drops them;
the every-database tests use a server of their own.

Covered: the dump scanner's row counts (both dump layouts, any chunking, quotes and
parentheses inside strings, routine bodies), the load filter and the accounts filter without a
server; then capture → restore under another name → probe equal, with odd names and values,
views, triggers, routines, events and sequences; a second dump of an unchanged database is
byte-identical; counts are the dump's own while a writer inserts; refusal, an empty target,
overwrite; ``owner=none``; every database with the user accounts into a fresh server; the
container and across host and container; and each failure with its sentence.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.contract import ArtifactRestoreOptions
from stackvault.sources.mysql.source import DUMP, MANIFEST, USERS, MySQLSource, database_path
from stackvault.sources.mysql.tools import (
    DumpScanner,
    Endpoint,
    LoadFilter,
    accounts_in,
    filter_users,
    translate,
)
from stackvault.sources.registry import open_source
from stackvault.sources.tools.host import HostRunner
from support.artifacts import MemorySink
from support.dbcontainers import MariaDBContainer
from support.dbservers import CommandError, MariaDBServer, free_port
from support.servicefixtures import unique_db_name

ODD_TABLE = "we`ird 'tab"
ODD_SQL = f"""
CREATE TABLE `{ODD_TABLE.replace("`", "``")}` (id INT PRIMARY KEY, s TEXT, b BLOB, n DOUBLE);
INSERT INTO `{ODD_TABLE.replace("`", "``")}`
  SELECT seq,
         CASE WHEN seq % 5 = 0 THEN NULL
              ELSE CONCAT('it''s (', seq, '),(x);\\n', 'héllo ☃ \\\\ "q"') END,
         CASE WHEN seq % 7 = 0 THEN NULL ELSE UNHEX(CONCAT(MD5(seq), '00FF0A0D27')) END,
         seq / 3
  FROM seq_1_to_3000;
CREATE TABLE empty_one (x INT);
CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(50));
CREATE VIEW v AS SELECT id FROM log;
CREATE TRIGGER tr BEFORE INSERT ON log FOR EACH ROW SET NEW.msg = UPPER(NEW.msg);
CREATE SEQUENCE sq;
CREATE EVENT ev ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM log WHERE id < 0;
DELIMITER ;;
CREATE PROCEDURE p()
BEGIN
CREATE TABLE `made_by_p` (x INT);
INSERT INTO `log` VALUES (1,'from p');
END;;
DELIMITER ;
INSERT INTO log (msg) VALUES ('one'), ('two');
"""
ODD_FACTS = {"tables": {ODD_TABLE: 3000, "empty_one": 0, "log": 2}}
CHECKSUM_SQL = (
    f"SELECT MD5(GROUP_CONCAT(CONCAT_WS('|', id, HEX(s), HEX(b), n) ORDER BY id)) "
    f"FROM `{ODD_TABLE.replace('`', '``')}`;"
    "SELECT GROUP_CONCAT(msg ORDER BY id) FROM log;"
    "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE();"
    "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE();"
    "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE();"
    "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME;"
)


def load_odd(server: MariaDBServer | MariaDBContainer, db: str) -> None:
    # The client's DELIMITER command needs the script fed as a script.
    server.sql(ODD_SQL, db=db)


def capture(
    url: str, sink: MemorySink | None = None
) -> tuple[MySQLSource, MemorySink, dict[str, Any]]:
    source = open_source(url)
    assert isinstance(source, MySQLSource)
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
            sink.reader("my", "mysql", meta),
            ArtifactRestoreOptions(overwrite=overwrite, no_owner=no_owner, notice=notes.append),
        )
        return result, target.probe()
    finally:
        target.close()


def drop(server: MariaDBServer | MariaDBContainer, *names: str) -> None:
    for name in names:
        try:
            server.sql(f"DROP DATABASE IF EXISTS `{name}`")
        except CommandError:
            pass


@pytest.fixture
def host_db(mariadb_env: MariaDBServer, request: pytest.FixtureRequest) -> Iterator[str]:
    name = mariadb_env.create_database(unique_db_name(request.node.name))
    yield name
    drop(mariadb_env, name)


def fake_tool(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def scan(data: bytes, step: int) -> DumpScanner:
    s = DumpScanner()
    for i in range(0, len(data), step):
        s.feed(memoryview(data)[i : i + step])
    s.finish()
    return s


# --- without a server --------------------------------------------------------------------------


def test_url_forms() -> None:
    s = open_source("mysql://app@db.example:3307/shop?timeout=5")
    assert isinstance(s, MySQLSource)
    assert (s.name, s.database, s.host, s.port, s.user, s.timeout) == (
        "mysql-shop",
        "shop",
        "db.example",
        3307,
        "app",
        5.0,
    )
    assert s.location == "mysql://app@db.example:3307/shop"
    m = open_source("mariadb://127.0.0.1/")
    assert isinstance(m, MySQLSource) and m.database is None and m.name == "mariadb-all"
    assert m.kind == "mysql"
    d = open_source("mariadb+docker://My_DB/app?owner=none&name=x1")
    assert isinstance(d, MySQLSource)
    assert (d.container, d.database, d.name, d.no_owner) == ("My_DB", "app", "x1", True)
    assert d.location == "mariadb+docker://My_DB/app"
    with pytest.raises(UsageError, match="contains a password"):
        open_source("mysql://root:secret@127.0.0.1/app")
    with pytest.raises(UsageError, match=r"owner='all' .* must be keep or none"):
        open_source("mysql://127.0.0.1/app?owner=all")
    with pytest.raises(UsageError, match="unknown option"):
        open_source("mysql://127.0.0.1/app?sslmode=require")
    with pytest.raises(UsageError, match="names no container"):
        open_source("mysql+docker:///app")
    with pytest.raises(UsageError, match="is for this host"):
        open_source("mysql+docker://db/app?defaults_file=/etc/hostname")
    inside = open_source("mysql+docker://db:3310/?socket=/run/x.sock&password_from=env:DB_PW")
    assert isinstance(inside, MySQLSource)
    assert (inside.port, inside.socket, inside.password_from) == (3310, "/run/x.sock", "env:DB_PW")
    with pytest.raises(UsageError, match="must be env:NAME"):
        open_source("mysql+docker://db/?password_from=hunter2")
    with pytest.raises(UsageError, match="is for a container"):
        open_source("mysql://127.0.0.1/app?password_from=env:X")
    with pytest.raises(UsageError, match="names no readable file"):
        open_source("mysql://127.0.0.1/app?defaults_file=/nonexistent/my.cnf")
    assert database_path("app") == "databases/app.sql"
    assert database_path("we`ird/x") == "databases/we%60ird%2Fx.sql"


MARIADB_LAYOUT = b"""-- MariaDB dump
/*M!999999\\- enable the sandbox mode */
CREATE TABLE `a``b` (
  `x` int
);
INSERT INTO `a``b` VALUES
(1,'it\\'s (a),(b);'),
(2,NULL),
(3,'\\\\'),
(4,0x28293B);
CREATE TABLE `empty` (
  `x` int
);
DELIMITER ;;
CREATE PROCEDURE p()
BEGIN
CREATE TABLE `ghost` (x INT);
INSERT INTO `ghost` VALUES (1),(2);
END ;;
DELIMITER ;
INSERT INTO `c` VALUES
(5);

-- Dump completed
"""
MYSQL_LAYOUT = (
    b"CREATE TABLE `t` (\n  `x` int\n);\n"
    b"INSERT INTO `t` VALUES (1,'a,(b'),(2,'\\')'),(3,'x');\n"
    b"INSERT INTO `t` VALUES (4,'');\n"
    b"-- Dump completed\n"
)


@pytest.mark.parametrize("step", [1, 2, 7, 64, 1 << 20])
def test_scanner_counts_rows_of_both_layouts_at_any_chunking(step: int) -> None:
    maria = scan(MARIADB_LAYOUT, step)
    assert maria.tables == {"a`b": 4, "empty": 0, "c": 1}
    assert maria.complete()
    mysql = scan(MYSQL_LAYOUT, step)
    assert mysql.tables == {"t": 4} and mysql.complete()


def test_scanner_sees_a_cut_dump() -> None:
    for cut in (1, 10, len(MARIADB_LAYOUT) // 2, len(MARIADB_LAYOUT) - 5):
        assert not scan(MARIADB_LAYOUT[:-cut], 4096).complete(), cut


def test_load_filter_drops_definers_and_the_sandbox_line_never_touching_data() -> None:
    dump = (
        b"/*M!999999\\- enable the sandbox mode */ \n"
        b"/*!50003 CREATE*/ /*!50017 DEFINER=`ap``p`@`%`*/ /*!50003 TRIGGER tr BEFORE */;;\n"
        b"CREATE DEFINER=`root`@`localhost` PROCEDURE `p`()\n"
        b"/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n"
        b"INSERT INTO `t` VALUES\n(1,'DEFINER=`x`@`y`'),\n(2,'a;');\n"
        b"-- Dump completed\n"
    )
    for step in (1, 5, 1 << 20):
        f = LoadFilter(drop_sandbox=True, no_definer=True)
        out = b"".join(f.feed(dump[i : i + step]) for i in range(0, len(dump), step))
        out += f.finish()
        assert out.count(b"DEFINER=") == 1 and b"(1,'DEFINER=`x`@`y`')" in out, out
        assert b"TRIGGER tr" in out and b"PROCEDURE `p`()" in out
        assert not out.startswith(b"/*M!999999") and out.endswith(b"-- Dump completed\n")
    keep = LoadFilter(drop_sandbox=False, no_definer=False)
    assert not keep.active


def test_accounts_filter_keeps_builtins_and_the_restoring_account() -> None:
    users = (
        "CREATE USER `root`@`localhost` IDENTIFIED BY PASSWORD '*AAA';\n"
        "CREATE USER `app`@`%` IDENTIFIED BY PASSWORD '*BBB';\n"
        "CREATE USER `ops`@`%`;\n"
        "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION;\n"
        "GRANT SELECT ON `shop`.* TO `app`@`%`;\n"
        "/*M!100005 SET DEFAULT ROLE NONE FOR 'ops'@'%' */;\n"
        "-- Dump completed\n"
    )
    assert accounts_in(users) == ["root", "app", "ops"]
    script, skipped = filter_users(users, "ops@%")
    assert skipped == ["root", "ops"]
    assert "CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*BBB';" in script
    assert "root" not in script and "ops" not in script
    assert "GRANT SELECT ON `shop`.* TO `app`@`%`;" in script


def test_translations_of_tool_errors() -> None:
    ep = Endpoint(runner=HostRunner(), args=[], address="at 127.0.0.1:3306", in_container=False)
    cases = {
        "ERROR 1045 (28000): Access denied for user 'root'@'localhost' (using password: YES)": (
            "MySQL at 127.0.0.1:3306 rejected the password of user root"
        ),
        "Access denied for user 'app'@'localhost' (using password: NO)": (
            "MySQL at 127.0.0.1:3306 wants a password for user app"
        ),
        "mariadb-dump: Got error: 1049: \"Unknown database 'nope'\" when selecting": (
            "database nope does not exist at MySQL at 127.0.0.1:3306"
        ),
        "ERROR 2005 (HY000): Unknown server host 'nohost' (-2)": (
            "cannot reach MySQL at 127.0.0.1:3306: there is no host nohost"
        ),
        "ERROR 2002 (HY000): Can't connect to local server through socket '/x' (2)": (
            "cannot reach MySQL at 127.0.0.1:3306: nothing answers on the server's unix socket"
        ),
        "ERROR 2013 (HY000): Lost connection to server during query": (
            "the connection to MySQL at 127.0.0.1:3306 was lost mid-way"
        ),
        "ERROR 1153 (08S01): Got a packet bigger than 'max_allowed_packet' bytes": (
            "a row is bigger than MySQL at 127.0.0.1:3306 accepts (max_allowed_packet)"
        ),
    }
    for raw, sentence in cases.items():
        assert translate(SourceError(raw), ep, "db").message.startswith(sentence), raw
    other = SourceError("something else")
    assert translate(other, ep, None) is other


# --- a real server on this host ----------------------------------------------------------------


def test_roundtrip_of_odd_data_under_another_name_and_identical_second_dump(
    mariadb_env: MariaDBServer, host_db: str
) -> None:
    load_odd(mariadb_env, host_db)
    source, sink, meta = capture(mariadb_env.url(host_db))
    assert meta["facts"] == ODD_FACTS
    assert source.probe() == ODD_FACTS
    assert meta["server"] == "MariaDB" and meta["server_version"].startswith("10.")
    assert meta["captured_as"] == "root@localhost" and meta["users"] is None
    assert set(sink.data) == {DUMP, MANIFEST}
    assert meta["files"][DUMP]["size"] == len(sink.data[DUMP])
    assert sink.data[DUMP].rstrip().endswith(b"-- Dump completed")
    assert b"CREATE DATABASE" not in sink.data[DUMP] and b"\nUSE " not in sink.data[DUMP]
    # Unchanged database, second dump: byte for byte the same (deduplicates entirely).
    _s, sink2, meta2 = capture(mariadb_env.url(host_db))
    assert sink2.data[DUMP] == sink.data[DUMP]
    assert meta2["files"][DUMP]["sha256"] == meta["files"][DUMP]["sha256"]

    other = host_db + "_copy"
    try:
        result, live = restore(mariadb_env.url(other), sink, meta)
        assert live == ODD_FACTS
        assert result["created"] == [other] and result["bytes"] == len(sink.data[DUMP])
        assert mariadb_env.sql(CHECKSUM_SQL, db=other) == mariadb_env.sql(CHECKSUM_SQL, db=host_db)
        # The trigger came along and works in the copy.
        mariadb_env.sql("INSERT INTO log (msg) VALUES ('three')", db=other)
        assert mariadb_env.sql("SELECT msg FROM log WHERE id = 3", db=other) == "THREE"
    finally:
        drop(mariadb_env, other)


def test_counts_are_those_of_the_dump_while_a_writer_inserts(
    mariadb_env: MariaDBServer, host_db: str
) -> None:
    mariadb_env.sql(
        "CREATE TABLE busy (id INT AUTO_INCREMENT PRIMARY KEY, pad CHAR(200));"
        "INSERT INTO busy (pad) SELECT REPEAT('x', 200) FROM seq_1_to_200000;",
        db=host_db,
    )
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        while not stop.is_set():
            mariadb_env.sql("INSERT INTO busy (pad) SELECT 'w' FROM seq_1_to_200", db=host_db)
            written[0] += 200

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        _s, sink, meta = capture(mariadb_env.url(host_db))
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    dumped = meta["facts"]["tables"]["busy"]
    live = int(mariadb_env.sql("SELECT COUNT(*) FROM busy", db=host_db))
    print(f"rows in the dump {dumped}, live after the writer stopped {live}, written {written}")
    assert 200000 < dumped < live, "the writer ran before and after the dump's snapshot"
    other = host_db + "_w"
    try:
        _r, facts = restore(mariadb_env.url(other), sink, meta)
        assert facts == meta["facts"]
    finally:
        drop(mariadb_env, other)


def test_restore_refuses_data_loads_into_an_empty_database_and_overwrites(
    mariadb_env: MariaDBServer, host_db: str
) -> None:
    mariadb_env.sql("CREATE TABLE t (id INT); INSERT INTO t VALUES (1),(2),(3);", db=host_db)
    _s, sink, meta = capture(mariadb_env.url(host_db))
    mariadb_env.sql("DELETE FROM t WHERE id > 1", db=host_db)
    with pytest.raises(RestoreRefused) as refused:
        restore(mariadb_env.url(host_db), sink, meta)
    assert str(refused.value).startswith(
        f"database {host_db} at 127.0.0.1:{mariadb_env.port} holds 1 table (1 rows in t); "
        "restoring 'my' would replace it"
    ), str(refused.value)
    assert mariadb_env.sql("SELECT COUNT(*) FROM t", db=host_db) == "1"
    target = open_source(mariadb_env.url(host_db))
    try:
        assert target.describe_target() == f"database {host_db} holds 1 table (1 rows in t)"
    finally:
        target.close()

    result, facts = restore(mariadb_env.url(host_db), sink, meta, overwrite=True)
    assert result["replaced"] == [host_db] and facts == {"tables": {"t": 3}}

    empty = mariadb_env.create_database(host_db + "_e")
    mariadb_env.sql(f"ALTER DATABASE `{empty}` CHARACTER SET latin1")
    notes: list[str] = []
    try:
        result, facts = restore(mariadb_env.url(empty), sink, meta, notices=notes)
        assert result["reused"] == [empty] and facts == {"tables": {"t": 3}}
        assert any("exists and is empty" in n for n in notes), notes
        charset = mariadb_env.sql(
            "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
            f"WHERE SCHEMA_NAME = '{empty}'"
        )
        assert charset == "latin1", "an empty database is loaded into as it is"
    finally:
        drop(mariadb_env, empty)


def test_database_created_by_someone_else_between_check_and_create(
    mariadb_env: MariaDBServer, host_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container's start-up (MYSQL_DATABASE) may create the database after the restore found
    it missing and before its CREATE DATABASE: an empty one is loaded into, one with tables is
    left untouched and the restore fails."""
    import stackvault.sources.mysql.restore as my_restore

    mariadb_env.sql("CREATE TABLE t (id INT); INSERT INTO t VALUES (1),(2),(3);", db=host_db)
    _s, sink, meta = capture(mariadb_env.url(host_db))
    target = unique_db_name("raced")
    original = my_restore.run_sql
    extra_sql: list[str] = []

    def create_first(ep: Any, sql: str, **kw: Any) -> Any:
        if sql.startswith("CREATE DATABASE") and target not in mariadb_env.sql("SHOW DATABASES"):
            mariadb_env.create_database(target)  # the other party wins the race
            for extra in extra_sql:
                mariadb_env.sql(extra, db=target)
        return original(ep, sql, **kw)

    monkeypatch.setattr(my_restore, "run_sql", create_first)
    try:
        notes: list[str] = []
        result, facts = restore(mariadb_env.url(target), sink, meta, notices=notes)
        assert result["reused"] == [target] and result["created"] == []
        assert facts == {"tables": {"t": 3}}
        assert any("was created by someone else" in n for n in notes), notes

        drop(mariadb_env, target)
        extra_sql.append("CREATE TABLE theirs (x INT); INSERT INTO theirs VALUES (7)")
        with pytest.raises(SourceError) as failed:
            restore(mariadb_env.url(target), sink, meta)
        message = str(failed.value)
        assert f"database {target} at 127.0.0.1:{mariadb_env.port} holds 1 table" in message
        assert "someone else created it" in message
        assert mariadb_env.sql("SHOW TABLES", db=target) == "theirs"  # untouched
    finally:
        drop(mariadb_env, target)


def test_owner_none_drops_definers(mariadb_env: MariaDBServer, host_db: str) -> None:
    # (A view whose definer does not exist is stored with its columns qualified by the
    # database's name, so it is restored under the same name here.)
    mariadb_env.sql(
        "CREATE TABLE t (id INT); CREATE DEFINER=`ghost`@`%` VIEW v AS SELECT id FROM t;",
        db=host_db,
    )
    _s, sink, meta = capture(mariadb_env.url(host_db))
    definer = f"SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{host_db}'"
    drop(mariadb_env, host_db)
    restore(mariadb_env.url(host_db), sink, meta)
    assert mariadb_env.sql(definer) == "ghost@%"
    result, _f = restore(mariadb_env.url(host_db) + "?owner=none", sink, meta, overwrite=True)
    assert result["owner"] == "none" and result["replaced"] == [host_db]
    assert mariadb_env.sql(definer) == "root@localhost"


def test_every_database_with_accounts_into_a_fresh_server(
    mariadb_env: MariaDBServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = MariaDBServer().start()
    second = MariaDBServer().start()
    try:
        first.sql("CREATE DATABASE shop; CREATE DATABASE `odd name`;")
        first.sql("CREATE TABLE items (id INT); INSERT INTO items VALUES (1),(2);", db="shop")
        first.sql("CREATE TABLE x (id INT); INSERT INTO x VALUES (7);", db="odd name")
        first.sql(
            "CREATE USER shopper@'%' IDENTIFIED BY 'pw1'; GRANT SELECT ON shop.* TO shopper@'%'"
        )
        for name, value in first.env().items():
            monkeypatch.setenv(name, value)
        _s, sink, meta = capture(f"mysql://root@127.0.0.1:{first.port}/")
        assert meta["mode"] == "server" and meta["snapshot_consistency"] == "per-database"
        assert meta["facts"] == {
            "databases": {"odd name": {"tables": {"x": 1}}, "shop": {"tables": {"items": 2}}}
        }
        assert "shopper" in meta["users"] and USERS in sink.data
        assert set(sink.data) >= {"databases/shop.sql", "databases/odd%20name.sql"}

        for name, value in second.env().items():
            monkeypatch.setenv(name, value)
        notes: list[str] = []
        result, facts = restore(f"mysql://root@127.0.0.1:{second.port}/", sink, meta, notices=notes)
        assert facts == meta["facts"]
        assert sorted(result["created"]) == ["odd name", "shop"]
        assert result["users"]["errors"] == 0 and "root" in result["users"]["skipped"]
        # The account came along with its password and grant; root kept its own password.
        as_shopper = subprocess.run(
            [
                *("mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(second.port)),
                *("-u", "shopper", "-N", "-e", "SELECT COUNT(*) FROM items", "shop"),
            ],
            env={**os.environ, "MYSQL_PWD": "pw1"},
            capture_output=True,
            text=True,
            check=True,
        )
        assert as_shopper.stdout.strip() == "2"
        assert second.sql("SELECT 1") == "1"

        # One database of the server artifact, under its own name, into the first server.
        for name, value in first.env().items():
            monkeypatch.setenv(name, value)
        first.sql("DROP DATABASE shop")
        notes.clear()
        result, facts = restore(
            f"mysql://root@127.0.0.1:{first.port}/shop", sink, meta, notices=notes
        )
        assert result["databases"] == ["shop"] and facts == {"tables": {"items": 2}}
        assert any("user accounts (users.sql) are not restored" in n for n in notes), notes
    finally:
        first.stop()
        second.stop()


# --- in a container ----------------------------------------------------------------------------


def test_container_roundtrip_and_across_host_and_container(
    mariadb_container: MariaDBContainer, mariadb_env: MariaDBServer, docker_env: str
) -> None:
    db = unique_db_name("ctr")
    mariadb_container.create_database(db)
    try:
        load_odd(mariadb_container, db)
        _s, sink, meta = capture(f"mysql+docker://{mariadb_container.name}/{db}")
        assert meta["facts"] == ODD_FACTS
        assert meta["container"]["name"] == mariadb_container.name
        assert meta["container"]["connection"] == "socket"
        assert meta["where"] == f"in container {mariadb_container.name}"
        # Into the host server under another name.
        other = db + "_h"
        try:
            _r, facts = restore(mariadb_env.url(other), sink, meta)
            assert facts == ODD_FACTS
            assert mariadb_env.sql(CHECKSUM_SQL, db=other) == mariadb_container.sql(
                CHECKSUM_SQL, db=db
            )
        finally:
            drop(mariadb_env, other)
        # And back into the container over its data, with overwrite.
        mariadb_container.sql(f"DELETE FROM `{ODD_TABLE.replace('`', '``')}`", db=db)
        _r, facts = restore(
            f"mysql+docker://{mariadb_container.name}/{db}", sink, meta, overwrite=True
        )
        assert facts == ODD_FACTS
    finally:
        drop(mariadb_container, db)


def test_container_reached_as_its_server_was_started(
    mariadb_container: MariaDBContainer, docker_env: str
) -> None:
    """Discovery reads the port and socket from the server's command line (run through
    ``sh -c``); the capture connects with them, and a wrong socket fails without TCP."""
    from stackvault.sources.docker.engine import connect
    from stackvault.stack.reach import EngineView, mysql_reach

    client = connect()
    try:
        reach = mysql_reach(EngineView(client, mariadb_container.name))
    finally:
        client.close()
    assert (reach.port, reach.socket) == (mariadb_container.port, mariadb_container.socket)
    assert reach.password_from == "env:MARIADB_ROOT_PASSWORD"
    assert reach.found == "its command line"
    db = unique_db_name("reach")
    mariadb_container.create_database(db)
    try:
        base = f"mysql+docker://{mariadb_container.name}:{reach.port}/{db}"
        _s, _sink, meta = capture(
            f"{base}?socket={reach.socket}&password_from={reach.password_from}"
        )
        assert meta["container"]["connection"] == "socket"
        with pytest.raises(SourceError):
            open_source(f"{base}?socket=/nonexistent/m.sock").probe()
    finally:
        drop(mariadb_container, db)


# --- failures ----------------------------------------------------------------------------------


def test_wrong_password_missing_database_and_unreachable_server(
    mariadb_env: MariaDBServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SourceError) as failed:
        capture(mariadb_env.url("no_such_db"))
    assert str(failed.value).startswith(
        f"database no_such_db does not exist at MySQL at 127.0.0.1:{mariadb_env.port}"
    )
    monkeypatch.setenv("MYSQL_PWD", "wrong")
    with pytest.raises(SourceError) as failed:
        capture(mariadb_env.url("mysql"))
    assert str(failed.value).startswith(
        f"MySQL at 127.0.0.1:{mariadb_env.port} rejected the password of user root; set MYSQL_PWD"
    ), str(failed.value)
    port = free_port()
    with pytest.raises(SourceError) as failed:
        capture(f"mysql://root@127.0.0.1:{port}/app")
    assert str(failed.value).startswith(
        f"cannot reach MySQL at 127.0.0.1:{port}: the connection was refused"
    ), str(failed.value)


def test_password_from_an_option_file(
    mariadb_env: MariaDBServer, host_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MYSQL_PWD")
    cnf = tmp_path / "my.cnf"
    cnf.write_text(f"[client]\npassword={mariadb_env.password}\n")
    cnf.chmod(0o600)
    mariadb_env.sql("CREATE TABLE t (id INT); INSERT INTO t VALUES (1);", db=host_db)
    _s, _sink, meta = capture(mariadb_env.url(host_db) + f"?defaults_file={cnf}")
    assert meta["facts"] == {"tables": {"t": 1}}


def test_client_tools_missing(
    mariadb_env: MariaDBServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SourceError) as failed:
        capture(mariadb_env.url("mysql"))
    assert str(failed.value) == (
        "neither mariadb nor mysql is installed on this host; install mariadb-client (or "
        "mysql-client) on this host, or capture through the container"
    )


def test_a_dump_cut_short_or_failing_is_never_recorded(
    mariadb_env: MariaDBServer, host_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mariadb_env.sql(
        "CREATE TABLE t (id INT); INSERT INTO t SELECT seq FROM seq_1_to_50000;", db=host_db
    )
    real = shutil.which("mariadb-dump")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    # Exits 0 but stops 100 bytes short: the trailer is missing.
    fake_tool(
        bin_dir,
        "mariadb-dump",
        f'if [ "$1" = --version ]; then exec {real} "$@"; fi\n'
        f'{real} "$@" > {tmp_path}/full.sql || exit 1\n'
        f"head -c -100 {tmp_path}/full.sql\nexit 0\n",
    )
    with pytest.raises(SourceError) as failed:
        capture(mariadb_env.url(host_db))
    assert "does not end with the tool's '-- Dump completed' trailer, so it is incomplete" in str(
        failed.value
    ), str(failed.value)
    # Dies mid-stream with an error of its own: its status and last words are in the error.
    fake_tool(
        bin_dir,
        "mariadb-dump",
        f'if [ "$1" = --version ]; then exec {real} "$@"; fi\n'
        f'{real} "$@" | head -c 300000\n'
        'echo "mariadb-dump: Error 2013: Lost connection to server during query" >&2\nexit 2\n',
    )
    with pytest.raises(SourceError) as failed:
        capture(mariadb_env.url(host_db))
    message = str(failed.value)
    assert message.startswith(
        f"the connection to MySQL at 127.0.0.1:{mariadb_env.port} was lost mid-way"
    ), message
    assert "exited with status 2 after 300000 bytes" in message
    assert "nothing of it was recorded as complete" in message


def test_a_failing_load_says_the_database_is_incomplete(
    mariadb_env: MariaDBServer, host_db: str
) -> None:
    mariadb_env.sql("CREATE TABLE t (id INT); INSERT INTO t VALUES (1);", db=host_db)
    _s, sink, meta = capture(mariadb_env.url(host_db))
    sink.data[DUMP] = sink.data[DUMP].replace(b"INSERT INTO `t` VALUES", b"INSERT INTO `t` VALUEZ")
    other = host_db + "_bad"
    try:
        with pytest.raises(SourceError) as failed:
            restore(mariadb_env.url(other), sink, meta)
        message = str(failed.value)
        assert message.startswith(
            f"restoring database {other} at 127.0.0.1:{mariadb_env.port} failed, so it is "
            "incomplete: mariadb loading database"
        ), message
        assert "ERROR 1064" in message and message.endswith("restore again with --overwrite")
    finally:
        drop(mariadb_env, other)
