"""An SQLite database file as a source (sources layer): ``sqlite:///ABSOLUTE/PATH``.

The URL names the database file by its absolute path (three slashes: ``sqlite:///srv/app.db``);
``sqlite://relative/path`` is refused, because a relative path would depend on the directory
the backup happens to run in. Options:

===========  ===================================================================================
``name``     the artifact's name (default ``sqlite-STEM``, e.g. ``sqlite-app`` for ``app.db``)
``timeout``  seconds to wait for a lock held by a writer before giving up (default 60)
``memory``   MiB: databases up to this size are copied through memory (default 64; ``0`` copies
             every database through a temporary file)
===========  ===================================================================================

**Capture.** The application may keep writing. The database is copied with SQLite's online
backup API (`sqlite3.Connection.backup`) in *one* step, which reads every page inside one read
transaction: the copy is a consistent snapshot, including what is still in the WAL. A copy in
several steps would restart each time another connection writes, and might never finish. The
backup API needs a destination database, and a database file cannot be streamed consistently
without a snapshot of it, so the copy goes

- into memory (``:memory:`` + `sqlite3.Connection.serialize`) up to ``memory`` MiB: nothing
  touches a disk, at the cost of about three times the database size in RAM for a moment;
- above that, into a temporary file next to the database (same file system, same directory
  permissions, so no copy lands where the data was not already; mode 0600, deleted at once),
  falling back to the system temporary directory with a notice if that directory is not
  writable: one extra sequential write and read of the database.

``VACUUM INTO`` was measured too (96 MB, 400 000 rows: backup 0.08 s into memory or 0.10 s
into a file, ``VACUUM INTO`` 0.21 s) and rejected: it rebuilds every page, so tomorrow's copy
shares far fewer byte runs with today's and deduplicates worse, whereas the backup API copies
pages as they are. Either way the read transaction is short, as the copy goes to memory or a
local file rather than to the repository. In rollback-journal mode that read lock makes writers
wait (up to their busy timeout) for the copy; in WAL mode writers do not wait. The database is
opened read-only; like any reader of a WAL database, this may leave its (empty) ``-wal`` and
``-shm`` files behind when no other connection has it open.

The copy - exactly the bytes stored as ``database.sqlite`` - must pass ``PRAGMA
integrity_check``; a corrupt database fails the capture (`SourceError`) instead of being
stored as if it were a backup. The stored size must equal the copy's page count times its page
size, and the SHA-256 the sink reports must equal the one computed while streaming.

**Facts** (of the copy, i.e. of what is stored): ``tables`` (rows per table; virtual tables are
left out, their shadow tables are counted), ``objects`` (schema objects per type),
``schema_sha256`` (of the sorted schema), ``page_size``, ``journal_mode`` (``wal`` or
``rollback``: the persistent mode in the file header), ``user_version``, ``application_id``,
``integrity`` (``ok``). The SQLite library version, byte count, SHA-256, page count, the kind
of copy and timings are recorded beside the facts (they may differ after a faithful restore).

**Restore** into the URL's path (symbolic links are followed). A non-empty database is only
replaced with ``overwrite``. The file is written to a temporary name in the same directory,
checked (size, SHA-256, SQLite header), fsynced and renamed over the target; stale ``-wal``,
``-shm`` and ``-journal`` files are deleted *before* the rename, because SQLite would otherwise
apply the old database's WAL or hot journal to the restored file. An existing file keeps its
mode and owner; a new one gets the captured mode (and owner, when running as root). Stop the
application first: a process that keeps the old file open goes on writing to it. The artifact
is one plain file, so ``restore --target DIR`` also works (`Source.file_like`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Literal, TypedDict
from urllib.parse import quote

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.contract import (
    ArtifactReader,
    ArtifactRestoreOptions,
    ArtifactSink,
    EntryMeta,
    Readable,
    Source,
)
from stackvault.sources.url import SourceURL
from stackvault.store.durable import fsync_dir

DATABASE = "database.sqlite"
"""The artifact's only file."""

MAGIC = b"SQLite format 3\x00"
_OPTIONS = frozenset({"timeout", "memory"})
_CHUNK = 1 << 20
_MIB = 1 << 20
_SIDECARS = ("-wal", "-shm", "-journal")
# Return codes of sqlite3_backup_step that the progress callback sees.
_BUSY, _LOCKED = 5, 6


class SQLiteFacts(TypedDict):
    """The facts of an SQLite database: rows per table, schema objects by type and a digest
    of the schema, page size, journal mode, the user version and application id, and the
    integrity check's verdict (always ``ok``: a damaged database is refused)."""

    tables: dict[str, int]
    objects: dict[str, int]
    schema_sha256: str
    page_size: int
    journal_mode: Literal["wal", "rollback"]
    user_version: int
    application_id: int
    integrity: Literal["ok"]


class SQLiteRestored(TypedDict):
    """What an SQLite restore did: the file written, its size and SHA-256, whether it
    replaced one, and the stale ``-wal``/``-shm``/``-journal`` files it removed."""

    path: str
    bytes: int
    sha256: str
    replaced: bool
    removed: list[str]


class _BackupTimeout(Exception):
    """Raised from the backup's progress callback to abort it."""


class SQLiteSource(Source):
    """One SQLite database file; see the module docstring for the contract."""

    kind = "sqlite"
    schemes = ("sqlite",)
    file_like = True

    def __init__(
        self,
        path: str,
        *,
        name: str,
        timeout: float = 60.0,
        memory_limit: int = 64 * _MIB,
    ) -> None:
        super().__init__(name, f"sqlite://{path}")
        self.path = path
        self.timeout = timeout
        self.memory_limit = memory_limit

    @classmethod
    def from_url(cls, url: SourceURL) -> SQLiteSource:
        url.require_options(_OPTIONS)
        if url.host or url.user or url.port is not None or not url.path.startswith("/"):
            raise UsageError(
                f"the SQLite URL {url.redacted} does not name an absolute path; write it as "
                "sqlite:///ABSOLUTE/PATH (three slashes), e.g. sqlite:///srv/app/data.db"
            )
        if url.path.endswith("/"):
            raise UsageError(f"the SQLite URL {url.redacted} names a directory, not a file")
        path = os.path.normpath(re.sub(r"^/+", "/", url.path))
        stem = os.path.splitext(os.path.basename(path))[0] or "db"
        return cls(
            path,
            name=url.artifact_name(f"sqlite-{stem}"),
            timeout=url.number("timeout", 60.0),
            memory_limit=int(url.number("memory", 64) * _MIB),
        )

    # --- capture ----------------------------------------------------------------------------

    def capture(self, sink: ArtifactSink) -> dict[str, Any]:
        started = time.monotonic()
        st = self._stat_source()
        temp_path: str | None = None
        try:
            src = self._connect(self.path, read_only=True)
            try:
                page_size, page_count = _page_figures(src, self.location, self.timeout)
                if page_size * page_count > self.memory_limit:
                    temp_path = self._temp_copy_path(sink)
                data, facts, size = self._copy(src, temp_path, sink)
            finally:
                src.close()
            copied = time.monotonic()
            meta = EntryMeta(
                mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns
            )
            with contextlib.ExitStack() as stack:
                if data is not None:
                    hashing = _Hashing(io.BytesIO(data))
                else:
                    assert temp_path is not None
                    hashing = _Hashing(stack.enter_context(open(temp_path, "rb")))
                stored = sink.add_file(DATABASE, hashing, meta)
            del data
        finally:
            if temp_path is not None:
                _remove_with_sidecars(temp_path)
        if stored.size != size or hashing.size != size or stored.sha256 != hashing.hexdigest():
            raise SourceError(
                f"the copy of {self.location} was stored incompletely ({stored.size} of "
                f"{size} bytes, or with another SHA-256 than was read); nothing was recorded",
                hint="run the backup again",
            )
        done = time.monotonic()
        return {
            "facts": facts,
            "path": self.path,
            "sqlite_version": sqlite3.sqlite_version,
            "size": stored.size,
            "sha256": stored.sha256,
            "pages": size // facts["page_size"],
            "copy": "memory" if temp_path is None else "file",
            "seconds": {"copy": round(copied - started, 3), "store": round(done - copied, 3)},
        }

    def _copy(
        self, src: sqlite3.Connection, temp_path: str | None, sink: ArtifactSink
    ) -> tuple[bytes | None, SQLiteFacts, int]:
        """Back ``src`` up into memory (``temp_path`` None: returns the bytes) or into
        ``temp_path``; check the copy and return (bytes, facts, size)."""
        try:
            if temp_path is None:
                dst = sqlite3.connect(":memory:", isolation_level=None)
            else:
                dst = sqlite3.connect(temp_path, isolation_level=None)
                dst.execute("PRAGMA journal_mode=OFF")
                dst.execute("PRAGMA synchronous=OFF")
            try:
                self._backup(src, dst, sink)
                size = _pragma_int(dst, "page_count") * _pragma_int(dst, "page_size")
                if temp_path is None:
                    data: bytes | None = dst.serialize()
                    assert data is not None
                    header = data[:100]
                else:
                    data = None
                    with open(temp_path, "rb") as f:
                        header = f.read(100)
                facts = _facts(dst, header, self.location, copy=True)
            finally:
                dst.close()
        except sqlite3.Error as exc:
            raise _db_error(self.location, "copying", exc, self.timeout) from exc
        return data, facts, size

    def _stat_source(self) -> os.stat_result:
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:
            raise SourceError(
                f"there is no SQLite database at {self.path}",
                hint="check the path in the source URL (sqlite:///ABSOLUTE/PATH)",
            ) from exc
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{self.path} is not a regular file, so not an SQLite database")
        return st

    def _connect(self, path: str, *, read_only: bool) -> sqlite3.Connection:
        mode = "ro" if read_only else "rw"
        uri = f"file:{quote(path)}?mode={mode}"
        try:
            return sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise _db_error(f"sqlite://{path}", "opening", exc) from exc

    def _backup(self, src: sqlite3.Connection, dst: sqlite3.Connection, sink: ArtifactSink) -> None:
        deadline = time.monotonic() + self.timeout

        def progress(status: int, remaining: int, total: int) -> None:
            sink.check_interrupted()
            if status in (_BUSY, _LOCKED) and time.monotonic() > deadline:
                raise _BackupTimeout

        try:
            # pages=-1: every page in one step, i.e. in one read transaction (see the docstring)
            src.backup(dst, pages=-1, progress=progress, sleep=0.1)
        except _BackupTimeout as exc:
            raise _locked(self.location, self.timeout) from exc

    def _temp_copy_path(self, sink: ArtifactSink) -> str:
        """A new, empty, mode-0600 file for the copy: next to the database if possible."""
        base = os.path.basename(self.path)
        name = f".{base}.stackvault-{secrets.token_hex(6)}.tmp"
        for directory in (os.path.dirname(self.path), tempfile.gettempdir()):
            path = os.path.join(directory, name)
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                if directory == tempfile.gettempdir():
                    raise SourceError(
                        f"cannot create a temporary copy of {self.location} ({exc.strerror})",
                        hint="make its directory or TMPDIR writable, or raise ?memory=",
                    ) from exc
                sink.notice(
                    f"the directory of {self.path} is not writable ({exc.strerror}); the "
                    f"consistent copy of the database goes through {tempfile.gettempdir()}"
                )
                continue
            return path
        raise AssertionError("unreachable")

    # --- probe and target -------------------------------------------------------------------

    def probe(self) -> SQLiteFacts:
        self._stat_source()
        conn = self._connect(self.path, read_only=True)
        try:
            conn.execute("BEGIN")
            try:
                return _facts(conn, _file_header(self.path), self.location, copy=False)
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise _db_error(self.location, "reading", exc, self.timeout) from exc
        finally:
            conn.close()

    def describe_target(self) -> str | None:
        target = os.path.realpath(self.path)
        try:
            st = os.stat(target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SourceError(f"cannot inspect {target}: {exc.strerror}") from exc
        if stat.S_ISDIR(st.st_mode):
            raise SourceError(
                f"{target} is a directory; the SQLite URL must name the database file itself"
            )
        if st.st_size == 0:
            return None
        try:
            conn = self._connect(target, read_only=True)
            try:
                tables = _table_counts(conn)
                objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            finally:
                conn.close()
        except (sqlite3.Error, SourceError):
            return f"{target} is a {st.st_size}-byte file that is not a readable SQLite database"
        if not objects:
            return None
        rows = sum(tables.values())
        return (
            f"SQLite database {target} has {_plural(len(tables), 'table')} with "
            f"{_plural(rows, 'row')}"
        )

    # --- restore ----------------------------------------------------------------------------

    def restore(self, reader: ArtifactReader, options: ArtifactRestoreOptions) -> SQLiteRestored:
        entry = reader.entry(DATABASE)
        if entry.kind != "file":
            raise SourceError(f"{DATABASE!r} of artifact {reader.name!r} is not a file")
        target = os.path.realpath(self.path)
        existing = self.describe_target()
        if existing is not None and not options.overwrite:
            raise RestoreRefused(
                f"{existing}; restoring {reader.name!r} there would replace it",
                hint="pass --overwrite to replace it (a safety snapshot is taken first) "
                "or restore to another path",
            )
        directory = os.path.dirname(target)
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            options.notice(f"created the directory {directory}")
        try:
            old = os.stat(target)
        except FileNotFoundError:
            old = None
        temp = os.path.join(
            directory, f".{os.path.basename(target)}.stackvault-{secrets.token_hex(6)}.tmp"
        )
        renamed = False
        try:
            size, sha256 = _write_file(temp, reader.open(DATABASE))
            if size != entry.size or (entry.sha256 and sha256 != entry.sha256):
                raise SourceError(
                    f"the restored copy of {reader.name!r} has {size} bytes (SHA-256 "
                    f"{sha256[:12]}…) but the artifact recorded {entry.size} bytes (SHA-256 "
                    f"{entry.sha256[:12]}…); {target} was left as it was",
                    hint="run `stackvault check` on the repository",
                )
            with open(temp, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise SourceError(
                        f"{DATABASE!r} of artifact {reader.name!r} is not an SQLite database; "
                        f"{target} was left as it was"
                    )
            _set_owner(temp, old, entry.meta)
            removed = [p for p in (target + s for s in _SIDECARS) if _remove(p)]
            os.replace(temp, target)
            renamed = True
            fsync_dir(directory)
        except OSError as exc:
            raise SourceError(f"restoring {target} failed: {exc.strerror or exc}") from exc
        finally:
            if not renamed:
                _remove(temp)
        if removed:
            options.notice(f"removed stale {', '.join(removed)} of the replaced database")
        return {
            "path": target,
            "bytes": size,
            "sha256": sha256,
            "replaced": old is not None,
            "removed": removed,
        }


# --- helpers ------------------------------------------------------------------------------


class _Hashing:
    """A pass-through `Readable` that counts and hashes what the sink reads."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self._sha = hashlib.sha256()
        self.size = 0

    def readinto(self, buf: memoryview) -> int:
        n = self._stream.readinto(buf)
        self._sha.update(buf[:n])
        self.size += n
        return n

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._sha.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def _locked(location: str, timeout: float) -> SourceError:
    return SourceError(
        f"{location} stayed locked by a writer for {timeout:.0f} s",
        hint="try again when the application is less busy, or raise ?timeout=",
    )


def _db_error(
    location: str, doing: str, exc: sqlite3.Error, timeout: float | None = None
) -> SourceError:
    text = str(exc)
    if "database is locked" in text and timeout is not None:
        return _locked(location, timeout)
    if "not a database" in text or "malformed" in text:
        return SourceError(
            f"{location} is not a valid SQLite database ({text})",
            hint="check the path; if it is the right file, it is damaged: restore it from an "
            "earlier snapshot or try the sqlite3 .recover command",
        )
    if "unable to open" in text:
        return SourceError(
            f"cannot open {location} ({text})",
            hint="check that the file and its directory are readable by this user",
        )
    return SourceError(f"{doing} {location} failed: {text}")


def _page_figures(conn: sqlite3.Connection, location: str, timeout: float) -> tuple[int, int]:
    try:
        return _pragma_int(conn, "page_size"), _pragma_int(conn, "page_count")
    except sqlite3.Error as exc:
        raise _db_error(location, "reading", exc, timeout) from exc


def _pragma_int(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def _file_header(path: str) -> bytes:
    """The first 100 bytes of a database file (its header)."""
    with open(path, "rb") as f:
        return f.read(100)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
    ).fetchall()
    counts: dict[str, int] = {}
    for name, sql in rows:
        if (sql or "").lstrip().upper().startswith("CREATE VIRTUAL"):
            continue  # counting needs the module; its shadow tables are counted instead
        counts[name] = int(conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0])
    return counts


def _facts(conn: sqlite3.Connection, header: bytes, location: str, *, copy: bool) -> SQLiteFacts:
    """The facts of the database ``conn`` reads (inside one transaction for a live one);
    `SourceError` unless ``PRAGMA integrity_check`` says ``ok``."""
    problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)").fetchall()]
    if problems != ["ok"]:
        what = "a consistent copy of it" if copy else "it"
        raise SourceError(
            f"{location} is damaged: PRAGMA integrity_check of {what} reports "
            f"{'; '.join(problems[:5])[:600]}",
            hint="restore it from an earlier snapshot or repair it (sqlite3 .recover); "
            "nothing was recorded",
        )
    schema = conn.execute(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name"
    ).fetchall()
    objects: dict[str, int] = {}
    for row in schema:
        objects[row[0]] = objects.get(row[0], 0) + 1
    digest = hashlib.sha256(json.dumps([list(r) for r in schema]).encode()).hexdigest()
    return {
        "tables": _table_counts(conn),
        "objects": objects,
        "schema_sha256": digest,
        "page_size": _pragma_int(conn, "page_size"),
        "journal_mode": "wal" if header[18:20] == b"\x02\x02" else "rollback",
        "user_version": _pragma_int(conn, "user_version"),
        "application_id": _pragma_int(conn, "application_id"),
        "integrity": "ok",
    }


def _chunks(stream: Readable) -> Iterator[bytes]:
    while True:
        data = stream.read(_CHUNK)
        if not data:
            return
        yield data


def _write_file(path: str, stream: Readable) -> tuple[int, str]:
    """Write ``stream`` to the new file ``path`` (mode 0600) and fsync it."""
    sha = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        for data in _chunks(stream):
            f.write(data)
            sha.update(data)
            size += len(data)
        f.flush()
        os.fsync(f.fileno())
    return size, sha.hexdigest()


def _set_owner(path: str, old: os.stat_result | None, meta: EntryMeta) -> None:
    """The replaced file's mode and owner, or the captured ones for a new file (the owner
    only as root; an owner that cannot be set is left as it is)."""
    if old is not None:
        mode, uid, gid = stat.S_IMODE(old.st_mode), old.st_uid, old.st_gid
    else:
        mode, uid, gid = meta.mode or 0o600, meta.uid, meta.gid
        if os.geteuid() != 0:
            uid, gid = -1, -1
    os.chmod(path, mode)
    if (uid, gid) != (-1, -1) and (uid, gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(PermissionError):
            os.chown(path, uid, gid)


def _remove(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _remove_with_sidecars(path: str) -> None:
    for p in (path, *(path + s for s in _SIDECARS)):
        with contextlib.suppress(OSError):
            _remove(p)
