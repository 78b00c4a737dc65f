"""An in-memory `ArtifactSink` and `ArtifactReader` for testing sources without a repository.

``sink = MemorySink(); meta = source.capture(sink)`` records every entry in ``sink.entries``
(path → `ArtifactEntry`) and file contents in ``sink.data``; ``sink.reader(name, kind, meta)``
gives an `ArtifactReader` over the same content for ``source.restore``. ``MemorySink(previous=
reader)`` makes ``previous``/``reuse`` answer from an earlier capture, as the engine does with
the parent snapshot. ``reads`` counts bytes the sink consumed, so a test can prove that
unchanged data was not read again; ``stop()`` makes it raise `Interrupted` as a stopped backup
does. It keeps the same contract as the engine's real sink: both pass
tests/sources/test_sink_contract.py.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from collections.abc import Iterator
from typing import Any

from stackvault.errors import Interrupted, SourceError
from stackvault.sources.contract import (
    ArtifactEntry,
    ArtifactReader,
    ArtifactSink,
    EntryMeta,
    Readable,
    StoredFile,
)


def _check(path: str) -> str:
    """``path`` if every component is a safe name (not empty, ``.`` or ``..``, no NUL)."""
    if not all(p and p not in (".", "..") and "\0" not in p for p in path.split("/")):
        raise SourceError(f"invalid artifact path {path!r}")
    return path


class MemorySink(ArtifactSink):
    def __init__(self, previous: MemoryReader | None = None) -> None:
        self.entries: dict[str, ArtifactEntry] = {}
        self.data: dict[str, bytes] = {}
        self.notices: list[str] = []
        self.reads = 0
        self._previous = previous
        self._stopped = False

    def _parents(self, path: str) -> None:
        missing: list[str] = []  # the parents to make, deepest first
        parent = posixpath.dirname(path)
        while parent and parent not in self.entries:
            missing.append(parent)
            parent = posixpath.dirname(parent)
        if parent and self.entries[parent].kind != "dir":
            raise SourceError(f"artifact path {path!r} lies below a {self.entries[parent].kind}")
        for directory in reversed(missing):
            self.entries[directory] = ArtifactEntry(directory, "dir", EntryMeta(mode=0o700))

    def _add(self, entry: ArtifactEntry) -> None:
        _check(entry.path)
        if entry.path in self.entries and not (
            entry.kind == "dir" and self.entries[entry.path].kind == "dir"
        ):
            raise SourceError(f"artifact path {entry.path!r} added twice")
        self._parents(entry.path)
        self.entries[entry.path] = entry

    def add_file(self, path: str, stream: Readable, meta: EntryMeta | None = None) -> StoredFile:
        _check(path)
        self.check_interrupted()
        buf = io.BytesIO()
        while True:
            part = stream.read(1 << 20)
            if not part:
                break
            buf.write(part)
        data = buf.getvalue()
        self.reads += len(data)
        sha = hashlib.sha256(data).hexdigest()
        self._add(ArtifactEntry(path, "file", meta or EntryMeta(), len(data), sha))
        self.data[path] = data
        return StoredFile(path, len(data), sha)

    def add_dir(self, path: str, meta: EntryMeta | None = None) -> None:
        self._add(ArtifactEntry(path, "dir", meta or EntryMeta(mode=0o700)))

    def add_symlink(self, path: str, target: str, meta: EntryMeta | None = None) -> None:
        self._add(ArtifactEntry(path, "symlink", meta or EntryMeta(mode=0o777), target=target))

    def add_hardlink(self, path: str, existing: str, meta: EntryMeta | None = None) -> None:
        first = self.entries.get(existing)
        if first is None or first.kind != "file":
            raise SourceError(f"hard link {path!r} to {existing!r}, which is not a stored file")
        self._add(ArtifactEntry(path, "file", meta or first.meta, first.size, first.sha256))
        self.data[path] = self.data[existing]

    def previous(self, path: str) -> ArtifactEntry | None:
        if self._previous is None:
            return None
        entry = self._previous.sink.entries.get(path)
        return entry if entry is not None and entry.kind == "file" else None

    def reuse(
        self, path: str, previous: ArtifactEntry, meta: EntryMeta | None = None
    ) -> StoredFile:
        assert self._previous is not None
        self._add(
            ArtifactEntry(path, "file", meta or previous.meta, previous.size, previous.sha256)
        )
        self.data[path] = self._previous.sink.data[previous.path]
        return StoredFile(path, previous.size, previous.sha256)

    def notice(self, message: str) -> None:
        self.notices.append(message)

    def check_interrupted(self) -> None:
        if self._stopped:
            raise Interrupted("capture interrupted")

    def stop(self) -> None:
        """Stop the capture: `check_interrupted` and `add_file` raise `Interrupted` from now."""
        self._stopped = True

    def reader(self, name: str, kind: str, metadata: dict[str, Any]) -> MemoryReader:
        return MemoryReader(self, name, kind, metadata)


class MemoryReader(ArtifactReader):
    def __init__(self, sink: MemorySink, name: str, kind: str, metadata: dict[str, Any]) -> None:
        self.sink = sink
        self.name = name
        self.kind = kind
        self.metadata = metadata

    def entries(self) -> Iterator[ArtifactEntry]:
        for path in sorted(self.sink.entries, key=lambda p: p.split("/")):
            yield self.sink.entries[path]

    def open(self, path: str) -> Readable:
        if path not in self.sink.data:
            raise SourceError(f"artifact {self.name!r} has no file {path!r}")
        return io.BytesIO(self.sink.data[path])
