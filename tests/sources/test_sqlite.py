"""The SQLite source (``sqlite:///ABSOLUTE/PATH``) on real database files: a consistent capture
while a writer thread keeps committing (WAL and rollback-journal mode, copy through memory and
through a temporary file), restore into a new path and over an existing database, probe, and
every failure with its message. Runs in about 10 s.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.contract import ArtifactRestoreOptions, compare_facts
from stackvault.sources.registry import open_source
from stackvault.sources.sqlite import DATABASE, SQLiteSource
from stackvault.sources.url import SourceURL
from support.artifacts import MemoryReader, MemorySink

BATCH = 10


def make_app_db(path: Path, *, journal: str = "wal", users: int = 20_000, seed: int = 3) -> None:
    """A small application database: users, orders (indexed, foreign keys), an audit table
    filled by a trigger, a view, an FTS5 index (a virtual table with shadow tables) and
    ``events`` that the writer thread appends to in batches of `BATCH`."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.executescript(
        """
        PRAGMA user_version = 7;
        PRAGMA application_id = 424242;
        CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT, bio TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT,
                             user_id INTEGER REFERENCES users(id), total REAL, note BLOB);
        CREATE INDEX orders_user ON orders(user_id);
        CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT);
        CREATE TRIGGER orders_audit AFTER INSERT ON orders
            BEGIN INSERT INTO audit(what) VALUES ('order ' || new.id); END;
        CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 500;
        CREATE VIRTUAL TABLE docs USING fts5(title, body);
        CREATE TABLE events (id INTEGER PRIMARY KEY, batch INTEGER, payload TEXT);
        CREATE INDEX events_batch ON events(batch);
        """
    )
    with conn:
        conn.executemany(
            "INSERT INTO users VALUES (?, ?, ?, ?)",
            (
                (i, f"user{i}@example.org", f"User Ñame {i}", "bio " * rng.randint(0, 60))
                for i in range(1, users + 1)
            ),
        )
        conn.executemany(
            "INSERT INTO orders(user_id, total, note) VALUES (?, ?, ?)",
            (
                (rng.randint(1, users), rng.random() * 1000, rng.randbytes(rng.randint(0, 200)))
                for _ in range(users * 2)
            ),
        )
        conn.executemany(
            "INSERT INTO docs VALUES (?, ?)",
            (
                (f"doc {i}", " ".join(rng.choice(["alpha", "beta", "gamma"]) for _ in range(30)))
                for i in range(500)
            ),
        )
    conn.close()


class Writer(threading.Thread):
    """Commits batches of `BATCH` events, one transaction each, until stopped."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.batches = 0
        self.errors: list[BaseException] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            while not self._stop_event.is_set():
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO events(batch, payload) VALUES (?, ?)",
                    [(self.batches, "x" * 300)] * BATCH,
                )
                conn.execute("COMMIT")
                self.batches += 1
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


def capture(source: SQLiteSource) -> tuple[MemorySink, MemoryReader, dict[str, object]]:
    sink = MemorySink()
    meta = source.capture(sink)
    json.dumps(meta)  # JSON-able
    return sink, sink.reader(source.name, source.kind, meta), meta


def sqlite_source(path: Path, **options: str) -> SQLiteSource:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    source = open_source(f"sqlite://{path}" + (f"?{query}" if query else ""))
    assert isinstance(source, SQLiteSource)
    return source


def siblings(directory: Path) -> set[str]:
    """Files in ``directory`` apart from SQLite's own -wal/-shm files."""
    return {p.name for p in directory.iterdir() if not p.name.endswith(("-wal", "-shm"))}


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "app.db"
    path.parent.mkdir()
    make_app_db(path)
    return path


# --- URLs ---------------------------------------------------------------------------------


def test_url_forms() -> None:
    source = open_source("sqlite:///srv/app/data.db?timeout=5&memory=0")
    assert isinstance(source, SQLiteSource)
    assert (source.path, source.name, source.location) == (
        "/srv/app/data.db",
        "sqlite-data",
        "sqlite:///srv/app/data.db",
    )
    assert (source.timeout, source.memory_limit) == (5, 0)
    normalised = open_source("sqlite:////srv//x/../app.db")
    assert isinstance(normalised, SQLiteSource) and normalised.path == "/srv/app.db"
    assert open_source("sqlite:///srv/app.db?name=db1").name == "db1"
    with pytest.raises(UsageError, match="absolute path"):
        open_source("sqlite://relative/app.db")
    with pytest.raises(UsageError, match="absolute path"):
        SQLiteSource.from_url(SourceURL.parse("sqlite://user@/srv/app.db"))
    with pytest.raises(UsageError, match="directory"):
        open_source("sqlite:///srv/app/")
    with pytest.raises(UsageError, match="unknown option"):
        open_source("sqlite:///srv/app.db?compress=1")


# --- capture, restore, probe --------------------------------------------------------------


@pytest.mark.parametrize(
    ("journal", "memory"),
    [("wal", "64"), ("wal", "0"), ("delete", "64"), ("delete", "0")],
    ids=["wal-memory", "wal-tempfile", "rollback-memory", "rollback-tempfile"],
)
def test_capture_while_writing_is_consistent(tmp_path: Path, journal: str, memory: str) -> None:
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    make_app_db(db, journal=journal)
    before = siblings(db.parent)
    writer = Writer(db)
    writer.start()
    try:
        while writer.batches < 20:  # the writer is really running
            time.sleep(0.01)
        source = sqlite_source(db, memory=memory)
        started = writer.batches
        sink, reader, meta = capture(source)
        during = writer.batches - started  # commits while the capture ran
    finally:
        writer.stop()
    assert not writer.errors, writer.errors
    assert during > 0
    assert meta["copy"] == ("memory" if memory == "64" else "file")
    assert siblings(db.parent) == before  # the temporary copy is gone
    facts = meta["facts"]
    assert isinstance(facts, dict)
    assert facts["integrity"] == "ok"
    assert facts["journal_mode"] == ("wal" if journal == "wal" else "rollback")
    assert facts["user_version"] == 7 and facts["application_id"] == 424242
    assert facts["objects"] == {"index": 3, "table": 11, "trigger": 1, "view": 1}
    tables = facts["tables"]
    assert tables["users"] == 20_000 and tables["orders"] == 40_000 == tables["audit"]
    assert "docs" not in tables and tables["docs_data"] > 0  # FTS5 shadow tables
    assert tables["events"] % BATCH == 0 and tables["events"] < writer.batches * BATCH
    entry = sink.entries[DATABASE]
    assert entry.size == meta["size"] and entry.sha256 == meta["sha256"]
    assert stat.S_IMODE(entry.meta.mode) == stat.S_IMODE(db.stat().st_mode)

    target = sqlite_source(tmp_path / "restored" / "app.db")
    assert target.describe_target() is None
    done = target.restore(reader, ArtifactRestoreOptions())
    assert done["bytes"] == meta["size"] and done["replaced"] is False
    assert compare_facts(facts, target.probe()) == []
    conn = sqlite3.connect(target.path)
    try:
        # every batch the copy holds is complete: it is one transaction-consistent state
        partial = conn.execute(
            "SELECT batch, count(*) FROM events GROUP BY batch HAVING count(*) != ?", (BATCH,)
        ).fetchall()
        assert partial == []
        batches = conn.execute("SELECT count(DISTINCT batch), max(batch) FROM events").fetchone()
        assert batches[0] == batches[1] + 1  # and no batch before the last one is missing
        assert conn.execute("SELECT count(*) FROM docs WHERE docs MATCH 'gamma'").fetchone()[0]
    finally:
        conn.close()


def test_restore_refused_then_overwrite_removes_stale_wal(tmp_path: Path, app_db: Path) -> None:
    _sink, reader, meta = capture(sqlite_source(app_db))
    target_path = tmp_path / "other" / "app.db"
    target_path.parent.mkdir()
    # the database being replaced: WAL mode, with commits still in its WAL
    conn = sqlite3.connect(target_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    conn.executemany("INSERT INTO users(email) VALUES (?)", [("old@x",)] * 50)
    stale_wal = (target_path.parent / "app.db-wal").read_bytes()
    conn.close()
    (target_path.parent / "app.db-wal").write_bytes(stale_wal)
    os.chmod(target_path, 0o640)
    target = sqlite_source(target_path)
    assert target.describe_target() == (f"SQLite database {target_path} has 1 table with 50 rows")
    with pytest.raises(RestoreRefused, match=r"has 1 table with 50 rows.*--overwrite"):
        target.restore(reader, ArtifactRestoreOptions())
    assert sqlite3.connect(target_path).execute("SELECT count(*) FROM users").fetchone() == (50,)

    notices: list[str] = []
    done = target.restore(reader, ArtifactRestoreOptions(overwrite=True, notice=notices.append))
    assert done["replaced"] is True
    assert f"{target_path}-wal" in done["removed"]
    assert any("stale" in n for n in notices)
    assert stat.S_IMODE(target_path.stat().st_mode) == 0o640  # the replaced file's mode
    assert compare_facts(meta["facts"], target.probe()) == []  # type: ignore[arg-type]
    assert not [p for p in target_path.parent.iterdir() if "stackvault" in p.name]


def test_restore_into_new_directory_and_generic_target(tmp_path: Path, app_db: Path) -> None:
    os.chmod(app_db, 0o604)
    sink, reader, meta = capture(sqlite_source(app_db))
    assert SQLiteSource.file_like and list(sink.entries) == [DATABASE]
    target = sqlite_source(tmp_path / "a" / "b" / "restored.db")
    notices: list[str] = []
    target.restore(reader, ArtifactRestoreOptions(notice=notices.append))
    assert notices and "created the directory" in notices[0]
    assert stat.S_IMODE(Path(target.path).stat().st_mode) == 0o604  # the captured mode
    assert compare_facts(meta["facts"], target.probe()) == []  # type: ignore[arg-type]


def test_restore_follows_a_symlink(tmp_path: Path, app_db: Path) -> None:
    _sink, reader, _meta = capture(sqlite_source(app_db))
    real = tmp_path / "real.db"
    link = tmp_path / "link.db"
    link.symlink_to(real)
    sqlite_source(link).restore(reader, ArtifactRestoreOptions())
    assert link.is_symlink() and real.stat().st_size > 0


def test_describe_target(tmp_path: Path) -> None:
    assert sqlite_source(tmp_path / "missing.db").describe_target() is None
    (tmp_path / "empty.db").write_bytes(b"")
    assert sqlite_source(tmp_path / "empty.db").describe_target() is None
    sqlite3.connect(tmp_path / "noschema.db").execute("PRAGMA user_version=1").close()
    assert sqlite_source(tmp_path / "noschema.db").describe_target() is None
    (tmp_path / "notes.txt").write_bytes(b"not a database at all\n" * 100)
    assert sqlite_source(tmp_path / "notes.txt").describe_target() == (
        f"{tmp_path}/notes.txt is a 2200-byte file that is not a readable SQLite database"
    )
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(SourceError, match="is a directory"):
        sqlite_source(tmp_path / "dir.db").describe_target()


# --- failures -----------------------------------------------------------------------------


def test_missing_database(tmp_path: Path) -> None:
    source = sqlite_source(tmp_path / "nope.db")
    with pytest.raises(SourceError, match=r"there is no SQLite database at .*nope\.db"):
        source.capture(MemorySink())
    with pytest.raises(SourceError, match="there is no SQLite database"):
        source.probe()


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(SourceError, match="is not a valid SQLite database"):
        sqlite_source(path).capture(MemorySink())


@pytest.mark.parametrize("memory", ["64", "0"])
def test_corrupt_database_fails_the_capture(tmp_path: Path, app_db: Path, memory: str) -> None:
    conn = sqlite3.connect(app_db)
    conn.execute("PRAGMA journal_mode=DELETE")  # everything in the main file
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='orders_user'").fetchone()
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(app_db, "r+b") as f:  # scribble over the index's root page, past its header
        f.seek((root[0] - 1) * page_size + 200)
        f.write(b"\xff" * 600)
    sink = MemorySink()
    with pytest.raises(SourceError, match="is damaged: PRAGMA integrity_check of a consistent"):
        sqlite_source(app_db, memory=memory).capture(sink)
    assert DATABASE not in sink.entries
    assert siblings(app_db.parent) == {"app.db"}
    with pytest.raises(SourceError, match="is damaged"):
        sqlite_source(app_db).probe()


def test_writer_holding_the_lock_times_out(app_db: Path) -> None:
    conn = sqlite3.connect(app_db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("BEGIN EXCLUSIVE")  # a rollback-journal writer that does not let go
    try:
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"stayed locked by a writer for 1 s.*\?timeout="):
            sqlite_source(app_db, timeout="1").capture(MemorySink())
        assert time.monotonic() - started < 10
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_damaged_artifact_leaves_the_target_alone(tmp_path: Path, app_db: Path) -> None:
    sink, reader, _meta = capture(sqlite_source(app_db))
    data = bytearray(sink.data[DATABASE])
    data[5000] ^= 1
    sink.data[DATABASE] = bytes(data)
    target_path = tmp_path / "keep.db"
    make_app_db(target_path, users=10)
    original = target_path.read_bytes()
    with pytest.raises(SourceError, match=r"SHA-256.*was left as it was"):
        sqlite_source(target_path).restore(reader, ArtifactRestoreOptions(overwrite=True))
    assert target_path.read_bytes() == original
    assert not [p for p in tmp_path.iterdir() if "stackvault" in p.name]
