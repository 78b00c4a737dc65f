"""The contract of application sources (sources layer).

A *source* is one thing outside the repository that a backup captures as a named **artifact**:
a PostgreSQL database, a MariaDB database, a Redis server, an SQLite file, a Docker volume, an S3
prefix. Every source is addressed by a URL (`stackvault.sources.url`) and implements `Source`:

- `Source.capture` writes the artifact's files into an `ArtifactSink` (provided by the engine,
  which chunks, deduplicates, encrypts and stores them) and returns the artifact's metadata: a
  JSON-able dict (the source's own document) whose ``"facts"`` entry holds what a restore is
  validated against (row counts, key counts, per-file SHA-256, ...; `Facts`, typed per family
  in its package). It raises `SourceError` when anything is not exactly right
  (a dump tool's non-zero exit, a truncated stream): a partial capture is never returned.
- `Source.describe_target` says what a restore into the source's location would overwrite
  (``None``: nothing, the target is new or empty).
- `Source.restore` loads an artifact, read through an `ArtifactReader`, into the location, and
  says what it did (`RestoreReport`, typed per family).
- `Source.probe` returns the live facts, in the shape of the recorded ``"facts"``, so that
  `compare_facts` can say what differs.

Sources never import the repository: they see only the sink and the reader.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from stackvault.errors import SourceError
from stackvault.sources.url import SourceURL

EntryKind = Literal["file", "dir", "symlink"]


Facts = Mapping[str, object]
"""A source's facts, as stored in its metadata's ``"facts"`` and as `Source.probe` gives them:
JSON objects whose shape each family types in its own package (a `TypedDict`: e.g.
``postgres.tools.DatabaseFacts``, ``dbdump.source.ServerFacts``)."""

RestoreReport = Mapping[str, object]
"""What `Source.restore` did, JSON-able; each family types its own (a `TypedDict`: e.g.
``dbdump.source.DatabaseRestoreResult``)."""


class Readable(Protocol):
    """A byte stream: what a sink consumes and a reader produces."""

    def readinto(self, buf: memoryview) -> int: ...

    def read(self, n: int = -1) -> bytes: ...


@dataclass(frozen=True)
class EntryMeta:
    """Ownership, permissions and times a source gives for one entry of an artifact (and a
    reader of the artifact gets back). Stored as the entry's tree node (`Node`), not as
    read from the filesystem (`FsEntry`); the conversions are in `stackvault.engine.nodes`."""

    mode: int = 0o600
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class StoredFile:
    """A file as the sink stored it: the byte count and SHA-256 of what it really read."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ArtifactEntry:
    """One entry of a stored artifact, as a reader lists it. ``path`` is relative to the
    artifact's root, ``/``-separated, never empty, never absolute, never with ``..``."""

    path: str
    kind: EntryKind
    meta: EntryMeta = field(default_factory=EntryMeta)
    size: int = 0
    sha256: str = ""
    target: str = ""
    """A symlink's target."""

    def xattr(self, name: str) -> bytes | None:
        for key, value in self.meta.xattrs:
            if key == name:
                return value
        return None


class ArtifactSink(ABC):
    """Where a source writes what it captures. Implemented by the engine.

    Paths are relative to the artifact's root and ``/``-separated; parent directories that were
    not added explicitly are created with mode 0700. Adding the same path twice is an error.
    Every method may raise `stackvault.errors.Interrupted` when the run is being stopped.
    """

    @abstractmethod
    def add_file(self, path: str, stream: Readable, meta: EntryMeta | None = None) -> StoredFile:
        """Store ``stream`` until EOF as a regular file. The returned size and SHA-256 are
        those of the bytes stored, for the source to compare with what it expected."""

    def add_bytes(self, path: str, data: bytes, meta: EntryMeta | None = None) -> StoredFile:
        """Store a small in-memory file (a manifest, a globals dump)."""
        import io

        return self.add_file(path, io.BytesIO(data), meta)

    def add_json(self, path: str, value: Any, meta: EntryMeta | None = None) -> StoredFile:
        """Store a JSON document (sorted keys, so identical content deduplicates)."""
        data = json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False).encode()
        return self.add_bytes(path, data + b"\n", meta)

    @abstractmethod
    def add_dir(self, path: str, meta: EntryMeta | None = None) -> None:
        """Record a directory with its own metadata."""

    @abstractmethod
    def add_symlink(self, path: str, target: str, meta: EntryMeta | None = None) -> None:
        """Record a symbolic link (the target is stored as it is, never followed)."""

    @abstractmethod
    def add_hardlink(self, path: str, existing: str, meta: EntryMeta | None = None) -> None:
        """Record ``path`` as a hard link to the file already added at ``existing``."""

    @abstractmethod
    def previous(self, path: str) -> ArtifactEntry | None:
        """The entry at ``path`` in the same-named artifact of the parent snapshot, if that
        entry's data is still fully in the repository; None otherwise."""

    @abstractmethod
    def reuse(
        self, path: str, previous: ArtifactEntry, meta: EntryMeta | None = None
    ) -> StoredFile:
        """Record a file whose content is the same as `previous` without reading it again."""

    @abstractmethod
    def notice(self, message: str) -> None:
        """Tell the user something worth knowing (a retry, a wait); never a secret."""

    @abstractmethod
    def check_interrupted(self) -> None:
        """Raise `Interrupted` if the run is being stopped; call it in long waits."""


class ArtifactReader(ABC):
    """A stored artifact, for restore. Implemented by the engine."""

    name: str
    kind: str
    metadata: dict[str, Any]

    @abstractmethod
    def entries(self) -> Iterator[ArtifactEntry]:
        """Every entry, depth first, each directory before what it holds."""

    @abstractmethod
    def open(self, path: str) -> Readable:
        """The content of the file at ``path``. Every block is authenticated as it is read;
        a damaged repository raises `IntegrityError` from `read`/`readinto`."""

    def entry(self, path: str) -> ArtifactEntry:
        """The entry at ``path``; `SourceError` if the artifact has none."""
        for e in self.entries():
            if e.path == path:
                return e
        raise SourceError(f"artifact {self.name!r} has no {path!r}; is it the right artifact?")

    def read_json(self, path: str) -> Any:
        """A small JSON file of the artifact."""
        stream = self.open(path)
        return json.loads(stream.read())


@dataclass(frozen=True)
class ArtifactRestoreOptions:
    """How a restore may treat what it finds at the target."""

    overwrite: bool = False
    """Replace existing data (a safety snapshot of it is taken first by the engine)."""
    no_owner: bool = False
    """Do not restore object ownership (databases): objects belong to the restoring role."""
    notice: Callable[[str], None] = field(default=lambda _m: None)


class Source(ABC):
    """One capturable, restorable, probe-able thing. Subclasses set `kind` and `schemes`."""

    kind: ClassVar[str]
    """The artifact kind this source produces and restores (``postgres``, ``mysql``, ...)."""
    schemes: ClassVar[tuple[str, ...]]
    """The URL schemes that open this source."""
    file_like: ClassVar[bool] = False
    """Its artifact is a plain file tree that ``restore --target DIR`` puts back as it is."""

    @classmethod
    @abstractmethod
    def from_url(cls, url: SourceURL) -> Source:
        """The source a parsed URL names; `UsageError` for options it does not know."""

    def __init__(self, name: str, location: str) -> None:
        self.name = name
        """The artifact's name in the snapshot (from ``?name=`` or derived from the URL)."""
        self.location = location
        """The URL with every secret removed: safe for messages and the snapshot record."""

    @abstractmethod
    def capture(self, sink: ArtifactSink) -> dict[str, Any]:
        """Capture into ``sink``; return the artifact's metadata (with a ``"facts"`` dict)."""

    def describe_target(self) -> str | None:
        """What a restore to this location would replace, in a few words; None if nothing."""
        raise SourceError(f"{self.location} cannot be a restore target")

    def restore(self, reader: ArtifactReader, options: ArtifactRestoreOptions) -> RestoreReport:
        """Load ``reader``'s artifact into this location; return what was done."""
        raise SourceError(f"{self.location} cannot be a restore target")

    def probe(self) -> Facts:
        """The live facts, comparable with a capture's ``"facts"``."""
        raise SourceError(f"{self.location} cannot be probed")

    def expected_facts(self, recorded: Facts) -> Facts:
        """The part of an artifact's recorded facts that `probe` of this target should equal
        after a restore (e.g. one database of an every-database artifact)."""
        return recorded

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (called once, also after a failure)."""


def compare_facts(
    recorded: Mapping[str, Any], live: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """Human-readable differences between recorded and live facts, e.g.
    ``"tables.public.users: 120 recorded, 119 now"``; empty when they agree. Keys present on
    only one side are reported too."""
    out: list[str] = []
    for key in sorted(set(recorded) | set(live)):
        where = f"{prefix}{key}"
        if key not in live:
            out.append(f"{where}: recorded, missing now")
            continue
        if key not in recorded:
            out.append(f"{where}: not recorded, present now")
            continue
        a, b = recorded[key], live[key]
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(compare_facts(a, b, where + "."))
        elif a != b:
            out.append(f"{where}: {_short(a)} recorded, {_short(b)} now")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
