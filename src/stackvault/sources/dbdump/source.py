"""What the database-dump sources share (sources layer): the PostgreSQL and MySQL/MariaDB
sources capture one database or every database of a server, on this host or inside a
container, and restore a one-database artifact anywhere or a server artifact whole or in
part. This module holds that common shape so both behave - and fail - alike:

- `DatabaseSource`: the fields every such source has, the URL parts they are built from
  (`url_parts`), the container lookup, `close`, `expected_facts`, the choice of what a restore
  writes (`restore_plan`) and the refusal to replace data (`refusal`);
- `RestoreTally`: what a restore has done, and what it returns;
- `Tap`: the readable a dump passes through on its way into the sink, showing each piece to
  a watcher (the header check, the row scanner);
- `dump_path`: where a server artifact keeps the dump of one database;
- `read_dump_manifest`: an artifact's manifest, checked to be one this version reads.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    Literal,
    NotRequired,
    Protocol,
    TypedDict,
    TypeVar,
    cast,
)
from urllib.parse import quote

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.contract import ArtifactReader, ArtifactRestoreOptions, Readable, Source
from stackvault.sources.url import SourceURL

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

DATABASES_DIR = "databases"

_CHUNK = 1 << 20
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

PlanEntry = tuple[str, str, dict[str, Any]]
"""(target database, database name in the artifact, its manifest entry)."""


def dump_path(db: str, extension: str) -> str:
    """Where a server artifact keeps the dump of ``db``: ``databases/NAME.EXT``, the name
    percent-quoted unless it is plain."""
    name = db if _PLAIN_NAME.match(db) else quote(db, safe="")
    return f"{DATABASES_DIR}/{name}.{extension}"


F = TypeVar("F")


class ServerFacts(TypedDict, Generic[F]):
    """The facts of a server artifact: each database's own facts (``F``, the family's)."""

    databases: dict[str, F]


class ExtraRestored(TypedDict):
    """What restoring a server artifact's roles (PostgreSQL) or accounts (MySQL) gave: the
    ones left as they are (``skipped_existing_roles`` / ``skipped``), the errors reported."""

    errors: int
    skipped_existing_roles: NotRequired[list[str]]
    skipped: NotRequired[list[str]]


class DatabaseRestoreResult(TypedDict):
    """What a PostgreSQL or MySQL restore returns (`RestoreTally.result`), in this key order;
    ``globals`` (PostgreSQL) or ``users`` (MySQL) is None when they were not restored."""

    databases: list[str]
    bytes: int
    created: list[str]
    replaced: list[str]
    reused: list[str]
    globals: NotRequired[ExtraRestored | None]
    users: NotRequired[ExtraRestored | None]
    owner: Literal["keep", "none"]
    seconds: float


@dataclass
class RestoreTally:
    """What a database restore has done so far, database by database; `result` is what the
    restore returns. Made when the restore starts (`started`, a `time.monotonic` reading)."""

    started: float = field(default_factory=time.monotonic)
    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    bytes: int = 0
    """The dump bytes loaded."""

    def result(
        self,
        plan: Sequence[PlanEntry],
        extra_key: Literal["globals", "users"],
        extra: ExtraRestored | None,
        *,
        no_owner: bool,
    ) -> DatabaseRestoreResult:
        """``{"databases": [TARGET, ...], "bytes": N, "created": [...], "replaced": [...],
        "reused": [...], EXTRA_KEY: extra, "owner": "keep"|"none", "seconds": s}``: the
        databases in the order of ``plan``, ``extra`` what restoring the server artifact's
        roles / accounts gave (None when they were not restored), the seconds since
        `started`."""
        return cast(DatabaseRestoreResult, {  # the key between reused and owner is extra_key's
            "databases": [target for target, _archived, _entry in plan],
            "bytes": self.bytes,
            "created": self.created,
            "replaced": self.replaced,
            "reused": self.reused,
            extra_key: extra,
            "owner": "none" if no_owner else "keep",
            "seconds": round(time.monotonic() - self.started, 3),
        })  # fmt: skip


def read_dump_manifest(reader: ArtifactReader, path: str, what: str) -> dict[str, Any]:
    """The JSON manifest at ``path`` of a dump artifact (format 1), or `SourceError` saying
    the artifact is not ``what`` (``"a PostgreSQL artifact"``), is damaged, or is newer."""
    try:
        manifest = reader.read_json(path)
    except SourceError as exc:
        raise SourceError(f"artifact {reader.name!r} has no {path}; is it {what}?") from exc
    except ValueError as exc:
        raise SourceError(f"the {path} of artifact {reader.name!r} is damaged") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != 1:
        raise SourceError(f"artifact {reader.name!r} has a {path} this version does not understand")
    return manifest


class RestorePlanner(Protocol):
    """What a database restore asks of its source (a `DatabaseSource`): what to write, the
    refusal to replace data, and the URL's ``owner`` and ``timeout`` options."""

    no_owner: bool
    timeout: float

    def restore_plan(
        self, reader: ArtifactReader, manifest: dict[str, Any], options: ArtifactRestoreOptions
    ) -> tuple[list[PlanEntry], bool]: ...

    def refusal(self, reader: ArtifactReader, first: str, busy: int) -> RestoreRefused: ...


class Tap:
    """Passes a dump stream on (to the sink), showing every piece read to ``watch``."""

    def __init__(self, stream: Readable, watch: Callable[[memoryview], None]) -> None:
        self._stream = stream
        self._watch = watch

    def readinto(self, buf: memoryview) -> int:
        n = self._stream.readinto(buf)
        if n:
            self._watch(buf[:n])
        return n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while part := self.read(_CHUNK):
                parts.append(part)
            return b"".join(parts)
        buf = bytearray(n)
        got = self.readinto(memoryview(buf))
        return bytes(buf[:got])


class SourceArgs(TypedDict):
    """The constructor arguments of a `DatabaseSource` that every database URL gives."""

    database: str | None
    port: int | None
    user: str | None
    no_owner: bool
    timeout: float


@dataclass(frozen=True)
class UrlParts:
    """What every database URL holds, already checked."""

    database: str | None
    """None: every database of the server."""
    user_part: str
    """``USER@`` (quoted) or empty, for the redacted location."""
    port_part: str
    """``:PORT`` or empty."""
    path: str
    """``/DB`` (quoted) or ``/``."""
    common: SourceArgs
    """The constructor arguments every `DatabaseSource` takes from the URL."""


def url_parts(url: SourceURL) -> UrlParts:
    """The database, user, port and the ``owner`` and ``timeout`` options of ``url``;
    `UsageError` for a bad option value."""
    timeout = url.number("timeout", 600.0, minimum=1)
    owner = url.query.get("owner", "keep")
    if owner not in ("keep", "none"):
        raise UsageError(f"option owner={owner!r} of {url.redacted} must be keep or none")
    database = url.path[1:] if url.path.startswith("/") else url.path
    return UrlParts(
        database=database or None,
        user_part=f"{quote(url.user, safe='')}@" if url.user else "",
        port_part=f":{url.port}" if url.port else "",
        path=f"/{quote(database, safe='')}" if database else "/",
        common={
            "database": database or None,
            "port": url.port,
            "user": url.user,
            "no_owner": owner == "none",
            "timeout": timeout,
        },
    )


class DatabaseSource(Source):
    """A database server's databases, dumped by its own tools on this host or in a container.

    Subclasses set `extra_file` and `extra_what` (what a server artifact holds besides the
    databases: PostgreSQL's roles, MySQL's user accounts) and implement capture, probe,
    describe_target and restore with `restore_plan` and `refusal`."""

    extra_file: ClassVar[str]
    """The server artifact's file of roles / accounts (``globals.sql``, ``users.sql``)."""
    extra_what: ClassVar[str]
    """What that file holds, for notices (``roles``, ``user accounts``)."""
    extra_key: ClassVar[str]
    """The server manifest's field naming `extra_file` (``globals``, ``users``)."""

    def __init__(
        self,
        name: str,
        location: str,
        *,
        database: str | None,
        host: str | None,
        port: int | None,
        user: str | None,
        container: str | None,
        no_owner: bool,
        timeout: float,
    ) -> None:
        super().__init__(name, location)
        self.database = database
        """None: every database of the server."""
        self.host = host
        self.port = port
        self.user = user
        self.container = container
        self.no_owner = no_owner
        self.timeout = timeout
        self._client: DockerClient | None = None
        self._container_facts: dict[str, Any] | None = None

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _running_container(self) -> tuple[Container, dict[str, str]]:
        """The source's container, running, and its environment (which holds secrets: use
        the names only); connects to the engine once."""
        from stackvault.sources.docker.engine import (
            connect,
            container_env,
            get_container,
            require_running,
        )

        assert self.container is not None
        if self._client is None:
            self._client = connect()
        container = get_container(self._client, self.container)
        require_running(container)
        return container, container_env(container)

    def expected_facts(self, recorded: Mapping[str, object]) -> Mapping[str, object]:
        """An every-database artifact restored into a URL that names one database is
        compared on that database only."""
        databases = recorded.get("databases")
        if self.database is not None and isinstance(databases, dict):
            one = databases.get(self.database)
            return one if isinstance(one, dict) else {}
        return recorded

    def restore_plan(
        self, reader: ArtifactReader, manifest: dict[str, Any], options: ArtifactRestoreOptions
    ) -> tuple[list[PlanEntry], bool]:
        """What a restore of ``manifest`` into this URL writes, and whether the server
        artifact's `extra_file` is restored too: a one-database artifact goes into the URL's
        database or its own; a server artifact restores every database (and the extra file),
        or only the one the URL names."""
        entries: dict[str, dict[str, Any]] = manifest.get("databases") or {}
        if manifest.get("mode") == "database":
            if len(entries) != 1:
                raise SourceError(f"the manifest of artifact {reader.name!r} is damaged")
            archived, entry = next(iter(entries.items()))
            return [(self.database or archived, archived, entry)], False
        with_extra = bool(manifest.get(self.extra_key))
        if self.database is not None:
            if self.database not in entries:
                have = ", ".join(sorted(entries)) or "none"
                raise SourceError(
                    f"artifact {reader.name!r} holds no database {self.database} "
                    f"(it holds: {have})",
                    hint="name one of them in the URL, or none to restore them all",
                )
            if with_extra:
                options.notice(
                    f"restoring only database {self.database} of the server artifact "
                    f"{reader.name!r}; its {self.extra_what} ({self.extra_file}) are not "
                    "restored"
                )
            return [(self.database, self.database, entries[self.database])], False
        return [(db, db, entry) for db, entry in entries.items()], with_extra

    def refusal(self, reader: ArtifactReader, first: str, busy: int) -> RestoreRefused:
        """The error of a restore without ``overwrite`` whose ``busy`` target databases hold
        data; ``first`` says what the first of them holds."""
        more = f" (and {busy - 1} more databases hold data)" if busy > 1 else ""
        return RestoreRefused(
            f"{first}{more}; restoring {reader.name!r} would replace it",
            hint="pass --overwrite to replace it (a safety snapshot of it is taken first)",
        )
