"""The artifact record (records layer): what a snapshot stores about one captured source
(FORMAT.md §8.2).

`ArtifactRecord` is the one definition; `ArtifactRecord.from_json` reads it from a snapshot's
stored JSON (and checks it, once, there) and `ArtifactRecord.to_json` writes it back with the
same keys, in the same order, with the same omissions as the capture wrote them. Keys this
version does not know are kept (`ArtifactRecord.unknown`) and written after the known ones, so
a copy of a newer snapshot loses nothing.

The record is read for every artifact of every snapshot listed (thousands of snapshots): a
plain slotted dataclass with hand-written checks, no validation framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

_KNOWN = frozenset(
    (
        "name",
        "kind",
        "location",
        "path",
        "started",
        "complete",
        "error",
        "files",
        "bytes",
        "reused",
        "metadata",
        "duration_s",
    )
)


@dataclass(slots=True)
class ArtifactRecord:
    """One captured source in a snapshot: a complete capture has `files`, `bytes`, `reused`
    and `metadata`; a failed one has none of them (None), `complete` False and an `error`."""

    name: str
    """Unique within the snapshot; the artifact's tree is at `path`."""
    kind: str
    """The source family that wrote it and can restore it (``postgres``, ``docker-volume``)."""
    location: str
    """The source URL with every secret removed."""
    path: str
    """``/.stackvault/artifacts/<name>``."""
    started: str
    """When the capture started, ISO 8601 as stored."""
    complete: bool
    error: str | None
    """Why the capture failed; None for a complete one."""
    duration_s: float
    files: int | None = None
    bytes: int | None = None
    reused: int | None = None
    """Files taken over from the parent snapshot's artifact without reading them again."""
    metadata: dict[str, Any] | None = None
    """The source's own JSON document (its layout is the source's, README); its ``facts``
    (`facts`) are what a restore is validated against."""
    unknown: dict[str, Any] = field(default_factory=dict)
    """Keys written by a newer version, kept as they are."""

    @property
    def facts(self) -> dict[str, Any] | None:
        """``metadata.facts``, the source's facts document; None when there is none."""
        if self.metadata is None:
            return None
        facts = self.metadata.get("facts")
        return facts if isinstance(facts, dict) else None

    def copy(self) -> ArtifactRecord:
        """An independent copy (the metadata document and unknown keys copied one level
        deep, as `dict` would)."""
        return replace(
            self,
            metadata=dict(self.metadata) if self.metadata is not None else None,
            unknown=dict(self.unknown),
        )

    def to_json(self) -> dict[str, Any]:
        """The stored form: name, kind, location, path, started, complete, error, then files,
        bytes, reused and metadata for a complete capture, then duration_s, then the unknown
        keys."""
        d: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "location": self.location,
            "path": self.path,
            "started": self.started,
            "complete": self.complete,
            "error": self.error,
        }
        if self.files is not None:
            d["files"] = self.files
        if self.bytes is not None:
            d["bytes"] = self.bytes
        if self.reused is not None:
            d["reused"] = self.reused
        if self.metadata is not None:
            d["metadata"] = self.metadata
        d["duration_s"] = self.duration_s
        if self.unknown:
            d.update(self.unknown)
        return d

    @classmethod
    def from_json(cls, value: object) -> ArtifactRecord:
        """The record stored as ``value``; `ValueError` naming what is wrong when it is not
        an artifact record (the snapshot reader turns it into `IntegrityError`)."""
        if type(value) is not dict:
            raise ValueError("an artifact record is not a JSON object")
        get = value.get
        name, kind, location, path, started = (
            get("name"), get("kind"), get("location"), get("path"), get("started")
        )  # fmt: skip
        complete, error, duration = get("complete"), get("error"), get("duration_s")
        files, size, reused, metadata = get("files"), get("bytes"), get("reused"), get("metadata")
        if not (  # the common case in one expression: listing thousands of snapshots reads it
            type(name) is str
            and type(kind) is str
            and type(location) is str
            and type(path) is str
            and type(started) is str
            and type(complete) is bool
            and (error is None or type(error) is str)
            and (type(duration) is float or type(duration) is int)
            and (files is None or type(files) is int)
            and (size is None or type(size) is int)
            and (reused is None or type(reused) is int)
            and (metadata is None or type(metadata) is dict)
        ):
            raise _what_is_wrong(value)
        unknown = (
            {} if value.keys() <= _KNOWN else {k: v for k, v in value.items() if k not in _KNOWN}
        )
        return cls(
            name, kind, location, path, started, complete, error, duration, files, size, reused,
            metadata, unknown,
        )  # fmt: skip


def artifacts_from_json(value: object) -> list[ArtifactRecord]:
    """A snapshot's ``artifacts`` list; `ValueError` when it or a record is malformed."""
    if not isinstance(value, list):
        raise ValueError("artifacts is not a list of records")
    return [ArtifactRecord.from_json(v) for v in value]


def artifacts_to_json(records: list[ArtifactRecord]) -> list[dict[str, Any]]:
    """The stored form of a snapshot's ``artifacts`` list."""
    return [r.to_json() for r in records]


def _what_is_wrong(d: dict[str, Any]) -> ValueError:
    """The error for a record `ArtifactRecord.from_json` refused: its first bad key."""
    name = d.get("name")
    if not isinstance(name, str):
        return ValueError("an artifact record has no name")
    expected: tuple[tuple[str, tuple[type, ...], str], ...] = (
        ("kind", (str,), "a string"),
        ("location", (str,), "a string"),
        ("path", (str,), "a string"),
        ("started", (str,), "a string"),
        ("complete", (bool,), "true or false"),
        ("error", (str, type(None)), "a string or null"),
        ("duration_s", (int, float), "a number"),
        ("files", (int, type(None)), "a whole number"),
        ("bytes", (int, type(None)), "a whole number"),
        ("reused", (int, type(None)), "a whole number"),
        ("metadata", (dict, type(None)), "a JSON object"),
    )
    for key, types, what in expected:
        v = d.get(key)
        if type(v) not in types:
            return ValueError(f"artifact {name!r}: {key} is not {what}")
    return ValueError(f"artifact {name!r} is malformed")
