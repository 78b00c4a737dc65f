"""A bucket's artifact: its manifest, and its entries' records and attributes (sources layer).

**Artifact.** ``manifest.json`` (format 1; per object: key relative to the prefix, artifact
path, size, ETag, content MD5, last-modified, storage class, content type, user metadata, other
headers) and one file per object below ``objects/`` named after its key (`artifact_paths`:
readable, stable, percent-encoded where a key part could not be a file name). Each object
entry carries ``s3.*`` attributes (key, ETag, last-modified, headers, MD5); for an object whose
ETag is not its MD5 (multipart, SSE-KMS) the MD5 is only known once it is read, so it goes into
a zero-byte entry ``md5/PATH`` added after the object. A later capture reuses an entry of the
parent snapshot with the same key, ETag and size without downloading it (`ArtifactSink.reuse`);
if the last-modified time differs, a HEAD re-reads the headers (a copy onto itself changes
them, not the ETag).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from stackvault.errors import SourceError
from stackvault.sources.contract import ArtifactEntry, ArtifactReader, ArtifactSink, EntryMeta
from stackvault.sources.s3bucket.bucket import Listed
from stackvault.sources.s3bucket.headers import MD5, STAMP
from stackvault.sources.s3bucket.keys import md5_path

MANIFEST = "manifest.json"
FORMAT = 1


def object_record(
    rel: str, path: str, obj: Listed, md5: str, headers: dict[str, Any], last_modified: str
) -> dict[str, Any]:
    """One object's manifest entry."""
    return {
        "key": rel,
        "path": path,
        "size": obj.size,
        "etag": obj.etag,
        "md5": md5,
        "last_modified": last_modified,
        "storage_class": obj.storage_class,
        "content_type": headers.get("ContentType", ""),
        "metadata": headers.get("Metadata", {}),
        "headers": headers,
    }


def entry_meta(record: dict[str, Any]) -> EntryMeta:
    moment = datetime.strptime(record["last_modified"], STAMP).replace(tzinfo=UTC)
    attrs = [
        ("s3.key", str(record["key"]).encode()),
        ("s3.etag", str(record["etag"]).encode()),
        ("s3.last-modified", str(record["last_modified"]).encode()),
        ("s3.headers", _json(record["headers"])),
    ]
    if record["md5"]:
        attrs.append(("s3.md5", str(record["md5"]).encode()))
    return EntryMeta(mode=0o600, mtime_ns=int(moment.timestamp()) * 10**9, xattrs=tuple(attrs))


def md5_meta(md5: str) -> EntryMeta:
    return EntryMeta(mode=0o600, xattrs=(("s3.md5", md5.encode()),))


def previous_md5(sink: ArtifactSink, previous: ArtifactEntry, path: str) -> str:
    value = previous.xattr("s3.md5")
    if value is None:
        side = sink.previous(md5_path(path))
        value = side.xattr("s3.md5") if side is not None else None
    text = (value or b"").decode(errors="replace")
    return text if MD5.match(text) else ""


def previous_headers(previous: ArtifactEntry) -> dict[str, Any] | None:
    try:
        value = json.loads(previous.xattr("s3.headers") or b"")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def read_objects(reader: ArtifactReader) -> list[dict[str, Any]]:
    """The manifest's objects, each checked against the artifact's files before anything is
    changed at the target."""
    manifest = reader.read_json(MANIFEST)
    objects = manifest.get("objects") if isinstance(manifest, dict) else None
    names = ("key", "path", "size", "md5", "headers")
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(objects, list)
        or not all(isinstance(o, dict) and all(n in o for n in names) for o in objects)
    ):
        raise SourceError(
            f"the {MANIFEST} of artifact {reader.name!r} is not an S3 manifest of format "
            f"{FORMAT}; was it written by a newer stackvault?"
        )
    files = {e.path: e.size for e in reader.entries() if e.kind == "file"}
    for rec in objects:
        if files.get(rec["path"]) != rec["size"] or not MD5.match(str(rec["md5"])):
            raise SourceError(
                f"artifact {reader.name!r} has no file {rec['path']} of {rec['size']} bytes "
                "with an MD5, as its manifest says; is it damaged?"
            )
    return objects
