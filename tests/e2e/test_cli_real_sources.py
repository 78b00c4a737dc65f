"""Real sources through the CLI: a PostgreSQL database (pgbench data) backed up twice (the
second run adds little: the uncompressed dump deduplicates), restored with refusal, safety
snapshot and validation; a real failing source next to a good one gives an incomplete snapshot
(exit 3); SQLite round-trips through ``--to``; a MariaDB database is backed up twice (the
second adds nothing) and restored under another name."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from conftest import Result
from support.dbservers import MariaDBServer, PostgresServer, free_port

Cli = Callable[..., Result]


def test_postgres_backup_twice_dedups_and_restores_with_a_safety_snapshot(
    cli: Cli, initialised: Path, pg_env: PostgresServer, pg_database: str
) -> None:
    pg = pg_env
    pg.pgbench_init(pg_database, scale=5)  # 500 000 accounts
    url = pg.url(pg_database)
    name = f"postgres-{pg_database}"

    res = cli("backup", "--source", url, "--json")
    assert res.code == 0, res.err
    first = res.json()
    [record] = first["artifacts"]
    assert record["name"] == name and record["complete"]
    tables = record["metadata"]["facts"]["tables"]
    assert tables["public.pgbench_accounts"] == 500_000
    dump_size = record["bytes"]
    assert first["summary"]["data_added"] >= dump_size * 0.9

    res = cli("backup", "--source", url, "--json")
    assert res.code == 0, res.err
    second = res.json()
    # An unchanged database: only the dump header (a timestamp) differs, so only the chunk(s)
    # holding it are new (a chunk is up to a few MiB: measured 0.1-3 % of this 50 MB dump).
    assert second["summary"]["data_added"] < dump_size * 0.10, second["summary"]

    pg.psql("DELETE FROM pgbench_accounts WHERE aid > 1000", db=pg_database)
    res = cli("restore", "latest", "--artifact", name, "--to", url)
    assert res.code == 1 and "is not empty" in res.err and "--overwrite" in res.err
    count = pg.psql("SELECT count(*) FROM pgbench_accounts", db=pg_database)
    assert count.strip() == "1000", "a refused restore changed nothing"

    res = cli("restore", "latest", "--artifact", name, "--to", url, "--overwrite", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["validated"] is True and doc["differences"] == []
    count = pg.psql("SELECT count(*) FROM pgbench_accounts", db=pg_database)
    assert count.strip() == "500000"

    # The safety snapshot holds the 1000-row state the restore replaced.
    snaps = {s["id"]: s for s in cli("snapshots", "--json").json()}
    safety = snaps[doc["safety_snapshot"]]
    assert "pre-restore" in safety["tags"]
    [saved] = safety["artifacts"]
    assert saved["metadata"]["facts"]["tables"]["public.pgbench_accounts"] == 1000


def test_a_real_failing_source_next_to_a_good_one_gives_exit_3(
    cli: Cli, initialised: Path, pg_env: PostgresServer, pg_database: str, tmp_path: Path
) -> None:
    pg_env.psql("CREATE TABLE t (a int); INSERT INTO t VALUES (1), (2)", db=pg_database)
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/nothing?name=dead"
    res = cli("backup", "--source", pg_env.url(pg_database), "--source", dead)
    assert res.code == 3, res.err
    assert "FAILED" in res.out and "INCOMPLETE" in res.err
    assert "Traceback" not in res.err
    [snap] = cli("snapshots", "--json").json()
    assert snap["complete"] is False
    [problem] = snap["problems"]
    assert problem["path"] == "artifact:dead" and "connection was refused" in problem["message"]
    good = next(a for a in snap["artifacts"] if a["name"] != "dead")
    assert good["complete"] and good["metadata"]["facts"]["tables"] == {"public.t": 2}

    # Alone, the same failing source saves nothing and exits 1 with one error line.
    res = cli("backup", "--source", dead)
    assert res.code == 1
    assert [line for line in res.err.splitlines() if line.startswith("stackvault: error:")]
    assert len(cli("snapshots", "--json").json()) == 1


def test_sqlite_round_trip_through_the_cli(cli: Cli, initialised: Path, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    con.executemany("INSERT INTO notes (body) VALUES (?)", [(f"n{i}",) for i in range(5000)])
    con.commit()
    con.close()
    assert cli("backup", "--source", f"sqlite://{db}").code == 0
    restored = tmp_path / "restored.db"
    res = cli("restore", "latest", "--artifact", "sqlite-app", "--to", f"sqlite://{restored}")
    assert res.code == 0, res.err
    assert "validated" in res.out
    con = sqlite3.connect(restored)
    assert con.execute("SELECT count(*), max(body) FROM notes").fetchone() == (5000, "n999")
    con.close()


def test_mariadb_backup_twice_adds_nothing_and_restores_under_another_name(
    cli: Cli, initialised: Path, mariadb_env: MariaDBServer, mariadb_database: str
) -> None:
    my = mariadb_env
    my.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(100));"
        "INSERT INTO orders SELECT seq, CONCAT('order ', seq) FROM seq_1_to_100000;",
        db=mariadb_database,
    )
    url = my.url(mariadb_database)
    name = f"mysql-{mariadb_database}"
    res = cli("backup", "--source", url, "--json")
    assert res.code == 0, res.err
    [record] = res.json()["artifacts"]
    assert record["metadata"]["facts"] == {"tables": {"orders": 100_000}}
    res = cli("backup", "--source", url, "--json")
    assert res.code == 0, res.err
    # The dump of an unchanged database is byte-identical (no dump date): nothing new is stored
    # but the snapshot's own tree.
    assert res.json()["summary"]["data_added"] < 4096, res.json()["summary"]

    copy = mariadb_database + "_copy"
    try:
        res = cli("restore", "latest", "--artifact", name, "--to", my.url(copy), "--json")
        assert res.code == 0, res.err
        assert res.json()["validated"] is True
        assert my.sql("SELECT COUNT(*), MAX(note) FROM orders", db=copy) == "100000\torder 99999"
    finally:
        my.sql(f"DROP DATABASE IF EXISTS `{copy}`")
