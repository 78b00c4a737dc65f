"""Snapshots (repository layer): the record of one backup run (FORMAT.md §8)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stackvault.errors import IntegrityError, UnsupportedFormat
from stackvault.records.artifact import ArtifactRecord, artifacts_from_json, artifacts_to_json

SNAPSHOT_AAD = b"sv1:snapshot"
MAX_PROBLEMS = 1000


@dataclass
class Snapshot:
    """A backup: its root tree, where and when it was taken, and whether it is complete."""

    time: datetime
    tree: bytes
    paths: list[str]
    hostname: str
    username: str
    tags: list[str] = field(default_factory=list)
    parent: str | None = None
    program: str = ""
    complete: bool = True
    problems: list[dict[str, str]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    """Records of the sources captured into ``/.stackvault/artifacts/<name>`` (FORMAT.md §8.2):
    name, kind, redacted location, completeness, error, the source's metadata and timings."""
    stack: dict[str, Any] | None = None
    """The stack manifest of a ``stack backup`` (FORMAT.md §8.3) as stored: project, services
    with image digests, versions, consistency, downtime; None for other backups. Kept as the
    stored JSON (listing snapshots never parses it; `copy` keeps it as it is);
    `stackvault.records.stack.read_manifest` reads it as a `StackManifest`."""
    original: str | None = None
    """For a snapshot made by `copy`: the id of the snapshot the backup run first saved (in
    whichever repository), kept through chains of copies. None for an original."""
    id: str = ""
    """Hex storage id; set when loaded or saved, not part of the stored document."""

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def origin(self) -> str:
        """The id that names this backup in every repository it was copied to: `original`
        for a copy, the snapshot's own id otherwise."""
        return self.original or self.id

    def to_json(self) -> dict[str, Any]:
        return (
            {
                "version": 1,
                "time": self.time.isoformat(timespec="microseconds"),
                "tree": self.tree.hex(),
                "paths": self.paths,
                "hostname": self.hostname,
                "username": self.username,
                "tags": self.tags,
                "parent": self.parent,
                "program": self.program,
                "complete": self.complete,
                "problems": self.problems[:MAX_PROBLEMS],
                "summary": self.summary,
                "original": self.original,
            }
            | ({"artifacts": artifacts_to_json(self.artifacts)} if self.artifacts else {})
            | ({"stack": self.stack} if self.stack is not None else {})
        )

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), ensure_ascii=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, snapshot_id: str) -> Snapshot:
        try:
            d = json.loads(data)
        except ValueError as exc:
            raise IntegrityError(f"snapshot {snapshot_id[:8]} is not valid JSON") from exc
        if d.get("version") != 1:
            raise UnsupportedFormat(
                f"snapshot {snapshot_id[:8]} has unsupported version {d.get('version')!r} "
                "(written by a newer version of stackvault?)"
            )
        try:
            return cls(
                time=_aware(datetime.fromisoformat(d["time"])),
                tree=bytes.fromhex(d["tree"]),
                paths=list(d["paths"]),
                hostname=str(d["hostname"]),
                username=str(d.get("username", "")),
                tags=list(d.get("tags", [])),
                parent=d.get("parent"),
                program=str(d.get("program", "")),
                complete=bool(d.get("complete", True)),
                problems=list(d.get("problems", [])),
                summary=dict(d.get("summary", {})),
                original=_optional_id(d.get("original")),
                artifacts=artifacts_from_json(d.get("artifacts", [])),
                stack=_stack(d.get("stack")),
                id=snapshot_id,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"snapshot {snapshot_id[:8]} is malformed") from exc


def _aware(when: datetime) -> datetime:
    """A time without zone (never written by this program, but JSON is easy to edit) is
    taken as UTC, so snapshots stay comparable and sortable."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _stack(value: Any) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise ValueError("stack is not a record")
    return value


def _optional_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("original is not a snapshot id")
    return value
