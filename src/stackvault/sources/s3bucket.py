"""An S3 bucket or prefix as a source (sources layer): ``s3://BUCKET[/PREFIX][?option=...]``.

Every object whose key starts with ``PREFIX/`` (the whole bucket without a prefix) is captured,
with its content type, user metadata and other standard headers; a restore puts them back below
the prefix of the target URL, which may name another bucket, prefix or server.

Options (credentials come from boto3's chain - ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``~/.aws`` - and are refused in the URL):

==================  ==========================================================================
``endpoint``        server URL (default: AWS, or ``STACKVAULT_S3_ENDPOINT``)
``region``          region (default: the AWS configuration's, else ``us-east-1``)
``path-style``      ``true`` for path-style addressing (default: true with an endpoint)
``tls-verify``      ``false`` to skip certificate checks; ``ca-bundle``: a CA file to trust
``profile``         AWS profile; ``timeout``, ``retries``, ``retry-time``: as for repositories
``create-bucket``   restore: create the bucket if it is missing (default: refuse)
``delete-extra``    restore: delete the objects below the prefix that the artifact does not
                    hold (default: keep them and report them)
``name``            the artifact's name (default ``s3-BUCKET``)
==================  ==========================================================================

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

**Checks.** A download must yield the announced byte count and, when the ETag is the content
MD5 (single-part, no SSE-KMS/SSE-C), bytes with that MD5. A transient failure mid-object
resumes with a ranged GET pinned to the ETag (``If-Match``); an object replaced while it is read
fails the capture, one replaced or deleted between the listing and its download is captured as
it then is (or left out) with a notice. Uploads send ``Content-MD5``: the server verifies each
object against the MD5 recorded at capture.

**Facts.** ``{"objects": N, "bytes": B, "etags": {key: MD5}}``, keys relative to the prefix.
The value is the content MD5, which is the ETag of a single-part upload; a multipart ETag
(``HASH-N``) depends on the part sizes, so the probe downloads multipart objects to hash them.
A restore uploads objects up to 5 GiB in one request, so their ETag is their MD5 again. The
facts add about (key length + 40) bytes per object to the snapshot record (10 MB for 100 000
keys of 60 characters): split very large buckets into prefixes.

**Restore.** Refused (`RestoreRefused`) without ``overwrite`` when objects exist below the
target prefix. A missing bucket is an error unless ``create-bucket=yes``: a restore should not
choose a bucket's region, policy, versioning or encryption, nor create a bucket for a typo.
Objects are uploaded in key order with their headers and user metadata; objects the artifact
does not hold are kept and reported (a restore overwrites, it does not mirror: what was added
since the backup survives, and the engine's probe then counts them as differences), and deleted
only with ``delete-extra=yes``. Not captured: tags, ACLs, Object Lock settings, old versions,
bucket settings. The storage class is recorded, but objects restore into the bucket's default
class (another server may not know the class).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlencode, urlsplit

from stackvault.errors import (
    ConfigError,
    ObjectNotFound,
    RepositoryNotFound,
    RestoreRefused,
    SourceError,
    StackvaultError,
    StoreError,
    TransientStoreError,
    UsageError,
)
from stackvault.sources.base import (
    ArtifactEntry,
    ArtifactReader,
    ArtifactSink,
    EntryMeta,
    Readable,
    RestoreOptions,
    Source,
)
from stackvault.sources.url import SourceURL
from stackvault.store.open import redact
from stackvault.store.s3 import S3Store
from stackvault.store.s3errors import translate
from stackvault.store.s3options import S3Options

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

T = TypeVar("T")

MANIFEST = "manifest.json"
FORMAT = 1
_S3_OPTIONS = frozenset(
    {"endpoint", "region", "path-style", "tls-verify", "ca-bundle", "profile"}
    | {"timeout", "retries", "retry-time"}
)
_OWN_OPTIONS = frozenset({"create-bucket", "delete-extra"})
_CHUNK = 1 << 20
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_ESCAPE = re.compile(r"[%\\\x00-\x1f\x7f-\x9f]")
_MAX_NAME = 200
_STAMP = "%Y-%m-%dT%H:%M:%SZ"
_HEADERS = (  # response fields that are also put_object arguments (strings)
    "ContentType",
    "CacheControl",
    "ContentDisposition",
    "ContentEncoding",
    "ContentLanguage",
    "WebsiteRedirectLocation",
)


# --- keys and artifact paths -----------------------------------------------------------------


def _name(part: str) -> str:
    """One key part as a file name: never empty, ``.``/``..`` nor longer than 200 bytes.

    Markers are ``%`` and a character that is not a hex digit, so none reads as an escape:
    ``%_`` is an empty part, ``%~HASH`` ends a shortened one, ``%=`` a leaf (see below)."""
    if part == "":
        return "%_"
    if part in (".", ".."):
        return "%2E" * len(part)
    name = _ESCAPE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), part)
    if len(name.encode()) > _MAX_NAME:
        head = name.encode()[:120].decode(errors="ignore")
        head = re.sub(r"%[0-9A-F]?$", "", head)  # never cut inside an escape
        name = f"{head}%~{hashlib.sha256(part.encode()).hexdigest()[:32]}"
    return name


def artifact_paths(keys: Iterable[str]) -> dict[str, str]:
    """The artifact path of each key (relative to the prefix): ``objects/`` and its
    ``/``-separated parts, each with ``%``, ``\\`` and control characters percent-encoded,
    ``.``/``..`` as ``%2E``/``%2E%2E``, an empty part (``a//b``, ``dir/``, ``/a``) as ``%_``,
    a part over 200 bytes cut to 120 bytes plus ``%~`` and 32 hex digits of its SHA-256. A key
    whose path is also the directory of another key (``a`` and ``a/b``) gets ``%=`` appended.
    Injective (up to SHA-256 collisions); `key_from_path` reverses it, the manifest always."""
    paths = {key: "/".join(_name(part) for part in key.split("/")) for key in keys}
    dirs: set[str] = set()
    for path in paths.values():
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return {key: f"objects/{p}%=" if p in dirs else f"objects/{p}" for key, p in paths.items()}


def key_from_path(path: str) -> str | None:
    """The key that `artifact_paths` maps to ``path``; None if a part was shortened (then only
    the manifest knows the key)."""
    parts: list[str] = []
    for name in path.removeprefix("objects/").removesuffix("%=").split("/"):
        if "%~" in name:
            return None
        parts.append("" if name == "%_" else unquote(name, errors="strict"))
    return "/".join(parts)


def _md5_path(path: str) -> str:
    return "md5/" + path.removeprefix("objects/")


# --- talking to the server -------------------------------------------------------------------


@dataclass(frozen=True)
class _Listed:
    key: str
    size: int
    etag: str
    last_modified: str
    storage_class: str


class _NoBucket(SourceError):
    """The bucket does not exist."""


class _Bucket:
    """One S3 location: the client and retrier of an `S3Store` (the store's URL options,
    credentials chain and retry policy), every failure turned into a `SourceError` sentence."""

    def __init__(self, options: S3Options) -> None:
        self.options = options
        self.store = S3Store(options)
        self.where = options.describe()
        self.server = redact(options.endpoint) if options.endpoint else "AWS"

    def call(
        self,
        what: str,
        request: Callable[[S3Client], T],
        *,
        key: str | None = None,
        write: bool = False,
        delete: bool = False,
        vanish_ok: bool = False,
    ) -> T:
        """``request(client)``, transient failures retried; `ObjectNotFound` is raised as it is
        when ``vanish_ok``, every other failure as a `SourceError`."""

        def attempt() -> T:
            try:
                return request(self.store.client)
            except StackvaultError:
                raise
            except Exception as exc:  # every foreign error is translated here
                if _code(exc) == "PreconditionFailed":
                    raise SourceError(
                        f"object {key} of {self.where} was replaced while it was being read",
                        hint="run the capture again",
                    ) from exc
                error = translate(
                    exc,
                    what=what,
                    where=self.where,
                    bucket=self.options.bucket,
                    name=key,
                    write=write,
                    delete=delete,
                )
                if error is exc:
                    raise
                raise error from exc

        try:
            return self.store.retrier.call(what, attempt)
        except ObjectNotFound as exc:
            if vanish_ok:
                raise
            raise SourceError(f"object {key} vanished from {self.where}") from exc
        except (StoreError, ConfigError, RepositoryNotFound) as exc:
            raise self.error(exc) from exc

    def error(self, exc: StackvaultError) -> SourceError:
        if isinstance(exc, RepositoryNotFound):
            return _NoBucket(
                f"bucket {self.options.bucket} does not exist at {self.server}",
                hint="check the bucket name, the endpoint and the region",
            )
        return SourceError(exc.message, hint=exc.hint)

    def list(self, prefix: str) -> Iterator[_Listed]:
        """Every object below ``prefix``, page by page, in key order."""
        kwargs: dict[str, Any] = {"Bucket": self.options.bucket, "Prefix": prefix}

        def page(client: S3Client) -> dict[str, Any]:
            return dict(client.list_objects_v2(**kwargs))

        while True:
            answer = self.call(f"listing of {self.where}", page)
            for item in answer.get("Contents", []):
                yield _Listed(
                    key=item["Key"],
                    size=int(item["Size"]),
                    etag=_etag(item.get("ETag", "")),
                    last_modified=_stamp(item["LastModified"]),
                    storage_class=str(item.get("StorageClass") or "STANDARD"),
                )
            if not answer.get("IsTruncated"):
                return
            token = answer.get("NextContinuationToken")
            if not token:  # never end a listing early without saying so
                raise SourceError(f"the listing of {self.where} broke off without a token")
            kwargs["ContinuationToken"] = token

    def close(self) -> None:
        self.store.close()


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _etag(raw: str) -> str:
    return raw.strip().strip('"').lower()


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_STAMP)


def _is_md5(etag: str, head: dict[str, Any]) -> bool:
    """Whether ``etag`` is the MD5 of the content (not multipart, not SSE-KMS or SSE-C)."""
    sse = str(head.get("ServerSideEncryption") or "")
    kms_or_c = sse.startswith("aws:kms") or bool(head.get("SSECustomerAlgorithm"))
    return bool(_MD5.match(etag)) and not kms_or_c


def _headers(head: dict[str, Any]) -> dict[str, Any]:
    """What a restore puts back: content type, other standard headers, user metadata."""
    out: dict[str, Any] = {name: str(head[name]) for name in _HEADERS if head.get(name)}
    encoding = [e for e in out.pop("ContentEncoding", "").split(",") if e.strip() != "aws-chunked"]
    if any(e.strip() for e in encoding):
        out["ContentEncoding"] = ",".join(encoding)
    expires = head.get("ExpiresString") or head.get("Expires")
    if isinstance(expires, datetime):
        expires = format_datetime(expires.astimezone(UTC), usegmt=True)
    if expires:
        out["Expires"] = str(expires)
    out["Metadata"] = dict(head.get("Metadata") or {})
    return out


class _Download:
    """The body of one object as a `Readable`, checked as it is read.

    `start` sends the first GET, so the headers are known before the sink reads. A transient
    failure in the middle resumes with a ranged GET pinned to the ETag (``If-Match``): bytes the
    sink consumed are never sent twice. At EOF the byte count must equal the size and, when the
    ETag is the content MD5, the MD5 of the bytes must equal it; `SourceError` otherwise.
    """

    def __init__(self, bucket: _Bucket, key: str) -> None:
        self._bucket = bucket
        self.key = key
        self.head: dict[str, Any] = {}
        self.size = 0
        self.etag = ""
        self.received = 0
        self.resumes = 0
        self.md5 = ""
        """The MD5 of what was read; set at EOF."""
        self._hash = hashlib.md5(usedforsecurity=False)
        self._body: StreamingBody | None = None

    def start(self) -> None:
        """Send the first GET; `ObjectNotFound` if the object is gone."""
        bucket = self._bucket.options.bucket

        def get(client: S3Client) -> dict[str, Any]:
            return dict(client.get_object(Bucket=bucket, Key=self.key))

        answer = self._bucket.call(f"download of {self.key}", get, key=self.key, vanish_ok=True)
        self._body = answer.pop("Body")
        answer.pop("ResponseMetadata", None)
        self.head = answer
        self.size = int(answer["ContentLength"])
        self.etag = _etag(str(answer.get("ETag", "")))

    @property
    def etag_is_md5(self) -> bool:
        return _is_md5(self.etag, self.head)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        left = self.size - self.received
        if left <= 0:
            self._finish()
            return b""
        if n == 0:
            return b""
        data = self._bucket.call(
            f"download of {self.key}", lambda c: self._chunk(c, min(n, left)), key=self.key
        )
        self.received += len(data)
        self._hash.update(data)
        return data

    def readinto(self, buf: memoryview) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except Exception:
                pass  # only the connection is lost

    def _chunk(self, client: S3Client, n: int) -> bytes:
        if self._body is None:
            answer = client.get_object(
                Bucket=self._bucket.options.bucket,
                Key=self.key,
                Range=f"bytes={self.received}-",
                IfMatch=f'"{self.etag}"',
            )
            self._body = answer["Body"]
            if not str(answer.get("ContentRange", "")).startswith(f"bytes {self.received}-"):
                self.close()
                raise SourceError(
                    f"{self._bucket.server} ignored a ranged download of {self.key}, so it "
                    "could not be resumed",
                    hint="run the capture again",
                )
            self.resumes += 1
        try:
            data = self._body.read(n)
        except BaseException:
            self.close()
            raise
        if not data:
            self.close()
            raise TransientStoreError(
                f"download of {self.key} from {self._bucket.where} ended at byte "
                f"{self.received} of {self.size}"
            )
        return data

    def _finish(self) -> None:
        if self.md5:
            return
        if self._body is not None:
            try:
                extra = self._body.read(1)  # reach the end, so the connection is reused
            except Exception:
                extra = b""  # all announced bytes arrived and were hashed
            self.close()
            if extra:
                raise SourceError(
                    f"object {self.key} of {self._bucket.where} is longer than its announced "
                    f"{self.size} bytes",
                    hint="run the capture again",
                )
        self.md5 = self._hash.hexdigest()
        if self.etag_is_md5 and self.md5 != self.etag:
            raise SourceError(
                f"object {self.key} of {self._bucket.where} was read with MD5 {self.md5}, but "
                f"its ETag is {self.etag}: the download was damaged",
                hint="run the capture again",
            )


class _ArtifactBody:
    """An artifact file as an upload body that botocore may rewind (over plain HTTP it reads a
    body three times: checksum, payload signature, sending); rewinding opens it again."""

    def __init__(self, reader: ArtifactReader, path: str, size: int) -> None:
        self._reader, self._path, self._size = reader, path, size
        self._stream = reader.open(path)
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        target = (offset, self._pos + offset, self._size + offset)[whence]
        if target < self._pos:
            self._stream, self._pos = self._reader.open(self._path), 0
        while self._pos < target and self.read(min(_CHUNK, target - self._pos)):
            pass
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        left = self._size - self._pos
        want = left if n is None or n < 0 else min(n, left)
        data = _read_exact(self._stream, want)
        if len(data) < want:
            raise SourceError(f"artifact file {self._path} is shorter than its manifest says")
        self._pos += len(data)
        return data


def _read_exact(stream: Readable, n: int) -> bytes:
    parts: list[bytes] = []
    while n > 0:
        part = stream.read(min(n, _CHUNK))
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


# --- the source ------------------------------------------------------------------------------


@dataclass
class _Tally:
    objects: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.objects += 1
        self.bytes += size


@dataclass
class _Capture:
    downloaded: _Tally = field(default_factory=_Tally)
    reused: _Tally = field(default_factory=_Tally)
    headers_refreshed: int = 0
    resumed: int = 0
    changed: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)


class BucketSource(Source):
    """The objects below a prefix of an S3 bucket (see the module doc)."""

    kind = "s3"
    schemes = ("s3",)

    def __init__(
        self,
        options: S3Options,
        *,
        name: str,
        location: str,
        create_bucket: bool = False,
        delete_extra: bool = False,
    ) -> None:
        super().__init__(name, location)
        self.options = options
        self.create_bucket = create_bucket
        self.delete_extra = delete_extra
        self.single_put_limit = 5 << 30
        """Larger objects are restored by multipart upload (S3's limit for one PUT)."""
        self.part_size = 64 << 20
        """Smallest part of a multipart upload (raised to stay within 10 000 parts)."""
        self.memory_limit = 8 << 20
        """Objects up to this size are read into memory for their upload; larger ones are
        streamed from the artifact (opened again for each try)."""
        self._bucket = _Bucket(options)

    @classmethod
    def from_url(cls, url: SourceURL) -> BucketSource:
        url.require_options(_S3_OPTIONS | _OWN_OPTIONS)
        if url.port is not None:
            raise UsageError(
                f"the S3 source URL {url.redacted} gives a port after the bucket name",
                hint="name the server with ?endpoint=http://HOST:PORT",
            )
        query = urlencode([(k, v) for k, v in url.query.items() if k in _S3_OPTIONS])
        netloc = urlsplit(url.raw).netloc  # S3Options refuses user@ with its own message
        options = S3Options.from_url(f"s3://{netloc}" + (f"?{query}" if query else ""))
        prefix = url.path.strip("/")  # S3Options would keep it percent-encoded
        return cls(
            replace(options, prefix=f"{prefix}/" if prefix else ""),
            name=url.artifact_name(f"s3-{options.bucket}"),
            location=url.redacted,
            create_bucket=url.flag("create-bucket"),
            delete_extra=url.flag("delete-extra"),
        )

    @property
    def prefix(self) -> str:
        """Empty, or ending in ``/``."""
        return self.options.prefix

    def close(self) -> None:
        self._bucket.close()

    # --- capture --------------------------------------------------------------------------

    def capture(self, sink: ArtifactSink) -> dict[str, Any]:
        started = time.monotonic()
        retries = self._bucket.store.retries
        self._bucket.store.set_notice(sink.notice)
        listed = list(self._bucket.list(self.prefix))
        paths = artifact_paths(obj.key[len(self.prefix) :] for obj in listed)
        tally = _Capture()
        records: list[dict[str, Any]] = []
        for obj in listed:
            sink.check_interrupted()
            rel = obj.key[len(self.prefix) :]
            record = self._reuse(sink, obj, rel, paths[rel], tally)
            if record is None:
                record = self._download(sink, obj, rel, paths[rel], tally)
            if record is not None:
                records.append(record)
        manifest = {"format": FORMAT, "bucket": self.options.bucket, "prefix": self.prefix}
        sink.add_json(MANIFEST, {**manifest, "objects": records})
        if tally.changed or tally.vanished:
            sink.notice(
                f"{len(tally.changed)} object(s) of {self._bucket.where} were replaced and "
                f"{len(tally.vanished)} deleted after the listing; the artifact holds each "
                "object as it was when it was read"
            )
        return {
            "facts": _facts(records),
            **manifest,
            "endpoint": self._bucket.server,
            "region": self._bucket.store.client.meta.region_name,
            "downloaded": vars(tally.downloaded),
            "reused": vars(tally.reused),
            "headers_refreshed": tally.headers_refreshed,
            "resumed": tally.resumed,
            "changed_during_capture": tally.changed[:100],
            "vanished_during_capture": tally.vanished[:100],
            "retries": self._bucket.store.retries - retries,
            "seconds": round(time.monotonic() - started, 3),
        }

    def _reuse(
        self, sink: ArtifactSink, obj: _Listed, rel: str, path: str, tally: _Capture
    ) -> dict[str, Any] | None:
        """Record ``obj`` from the parent snapshot if it has the same content; None if not."""
        previous = sink.previous(path)
        if previous is None or (previous.size, previous.xattr("s3.key")) != (
            obj.size,
            rel.encode(),
        ):
            return None
        md5, headers = _previous_md5(sink, previous, path), _previous_headers(previous)
        if previous.xattr("s3.etag") != obj.etag.encode() or not md5 or headers is None:
            return None
        if previous.xattr("s3.last-modified") != obj.last_modified.encode():
            bucket = self.options.bucket
            try:
                head: dict[str, Any] = self._bucket.call(
                    f"lookup of {obj.key}",
                    lambda c: dict(c.head_object(Bucket=bucket, Key=obj.key)),
                    key=obj.key,
                    vanish_ok=True,
                )
            except ObjectNotFound:
                return None  # the download says what happened
            tally.headers_refreshed += 1
            if (_etag(str(head.get("ETag", ""))), int(head["ContentLength"])) != (
                obj.etag,
                obj.size,
            ):
                return None
            headers = _headers(head)
        record = {**_record(rel, path, obj, md5, headers, obj.last_modified), "check": "reused"}
        sink.reuse(path, previous, _entry_meta(record))  # now with the MD5 in its attributes
        tally.reused.add(obj.size)
        return record

    def _download(
        self, sink: ArtifactSink, obj: _Listed, rel: str, path: str, tally: _Capture
    ) -> dict[str, Any] | None:
        download = _Download(self._bucket, obj.key)
        try:
            download.start()
        except ObjectNotFound:
            tally.vanished.append(rel)
            return None
        try:
            last_modified = obj.last_modified
            if (download.etag, download.size) != (obj.etag, obj.size):
                tally.changed.append(rel)
                moment = download.head.get("LastModified")
                if isinstance(moment, datetime):
                    last_modified = _stamp(moment)
            current = replace(obj, size=download.size, etag=download.etag)
            headers = _headers(download.head)
            # An MD5 ETag is checked at EOF (a mismatch fails the capture), so it can be
            # recorded before the download; any other MD5 is known only afterwards.
            known = download.etag if download.etag_is_md5 else ""
            record = _record(rel, path, current, known, headers, last_modified)
            stored = sink.add_file(path, download, _entry_meta(record))
        finally:
            download.close()
        if stored.size != download.size or not download.md5:
            raise SourceError(
                f"object {obj.key} of {self._bucket.where}: {stored.size} of {download.size} "
                "bytes were stored"
            )
        if not known:
            sink.add_bytes(_md5_path(path), b"", _md5_meta(download.md5))
        tally.downloaded.add(download.size)
        tally.resumed += download.resumes
        check = "md5=etag" if known else "size"  # what was verified while reading
        return {**record, "md5": download.md5, "check": check}

    # --- restore --------------------------------------------------------------------------

    def describe_target(self) -> str | None:
        existing = self._existing()
        if not existing:
            return None
        size = _human(sum(obj.size for obj in existing.values()))
        return f"s3://{self.options.bucket}/{self.prefix} holds {len(existing)} objects ({size})"

    def restore(self, reader: ArtifactReader, options: RestoreOptions) -> dict[str, Any]:
        started = time.monotonic()
        self._bucket.store.set_notice(options.notice)
        records = _manifest(reader)
        existing = self._existing()
        created = False
        if existing is None:
            if not self.create_bucket:
                raise SourceError(
                    f"bucket {self.options.bucket} does not exist at {self._bucket.server}",
                    hint="create it with the settings it needs (region, policy, versioning, "
                    "encryption), or add create-bucket=yes to the URL",
                )
            try:
                self._bucket.store.ensure_root()
            except (StoreError, ConfigError, RepositoryNotFound) as exc:
                raise self._bucket.error(exc) from exc
            options.notice(f"created bucket {self.options.bucket} with the server's defaults")
            created, existing = True, {}
        if existing and not options.overwrite:
            raise RestoreRefused(
                f"s3://{self.options.bucket}/{self.prefix} holds {len(existing)} objects; "
                "nothing was changed",
                hint="pass --overwrite to replace them",
            )
        done = _Tally()
        for rec in records:
            try:
                self._upload(reader, rec)
            except SourceError as exc:
                raise SourceError(
                    f"the restore into {self._bucket.where} stopped after {done.objects} of "
                    f"{len(records)} objects: {exc.message}",
                    hint=exc.hint,
                ) from exc
            done.add(int(rec["size"]))
        restored = {str(rec["key"]) for rec in records}
        extra = sorted(set(existing) - restored)
        if extra and self.delete_extra:
            self._delete([self.prefix + key for key in extra])
            options.notice(f"deleted {len(extra)} object(s) that the artifact does not hold")
        elif extra:
            options.notice(
                f"kept {len(extra)} object(s) of {self._bucket.where} that the artifact does "
                f"not hold (e.g. {extra[0]}); add delete-extra=yes to the URL to delete them"
            )
        return {
            "objects": done.objects,
            "bytes": done.bytes,
            "bucket": self.options.bucket,
            "prefix": self.prefix,
            "bucket_created": created,
            "replaced": len(set(existing) & restored),
            "extra_kept": 0 if self.delete_extra else len(extra),
            "extra_deleted": len(extra) if self.delete_extra else 0,
            "extra_sample": extra[:20],
            "seconds": round(time.monotonic() - started, 3),
        }

    def _existing(self) -> dict[str, _Listed] | None:
        """The objects below the prefix (by key relative to it); None if there is no bucket."""
        try:
            return {o.key[len(self.prefix) :]: o for o in self._bucket.list(self.prefix)}
        except _NoBucket:
            return None

    def _upload(self, reader: ArtifactReader, rec: dict[str, Any]) -> None:
        key, size, md5 = self.prefix + str(rec["key"]), int(rec["size"]), str(rec["md5"])
        args = _put_args(rec["headers"])
        if size > self.single_put_limit:
            self._multipart(reader, rec, key, args)
            return
        data: bytes | None = None
        if size <= self.memory_limit:
            data = _read_exact(reader.open(rec["path"]), size + 1)
            if len(data) != size or hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
                raise SourceError(
                    f"artifact file {rec['path']} does not have the size and MD5 that its "
                    "manifest records; is the artifact damaged?"
                )
        bucket = self.options.bucket

        def put(client: S3Client) -> dict[str, Any]:
            body: Any = data if data is not None else _ArtifactBody(reader, rec["path"], size)
            answer = client.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentLength=size,
                ContentMD5=_b64(md5),
                **args,
            )
            return dict(answer)

        answer = self._bucket.call(f"upload of {key}", put, key=key, write=True)
        etag = _etag(str(answer.get("ETag", "")))
        if _is_md5(etag, answer) and etag != md5:
            raise SourceError(f"the server stored {key} with ETag {etag}, not the MD5 {md5}")

    def _multipart(
        self, reader: ArtifactReader, rec: dict[str, Any], key: str, args: dict[str, Any]
    ) -> None:
        size, bucket = int(rec["size"]), self.options.bucket
        part_size = max(self.part_size, -(-size // 10_000))
        upload_id = self._bucket.call(
            f"upload of {key}",
            lambda c: c.create_multipart_upload(Bucket=bucket, Key=key, **args)["UploadId"],
            key=key,
            write=True,
        )
        try:
            stream, whole = reader.open(rec["path"]), hashlib.md5(usedforsecurity=False)
            parts: list[CompletedPartTypeDef] = []
            for number in range(1, -(-size // part_size) + 1):
                data = _read_exact(stream, min(part_size, size - (number - 1) * part_size))
                whole.update(data)
                digest = _b64(hashlib.md5(data, usedforsecurity=False).hexdigest())

                def send(c: S3Client, data: bytes = data, n: int = number, d: str = digest) -> str:
                    return c.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=n,
                        Body=data,
                        ContentMD5=d,
                    )["ETag"]

                etag = self._bucket.call(f"upload of {key}", send, key=key, write=True)
                parts.append({"ETag": etag, "PartNumber": number})
            if whole.hexdigest() != rec["md5"] or stream.read(1):
                raise SourceError(
                    f"artifact file {rec['path']} does not have the MD5 that its manifest "
                    "records; is the artifact damaged?"
                )
            self._bucket.call(
                f"upload of {key}",
                lambda c: c.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
                key=key,
                write=True,
            )
        except BaseException:
            try:
                self._bucket.store.client.abort_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id
                )
            except Exception:
                pass  # best effort: the first failure is the one to report
            raise

    def _delete(self, keys: list[str]) -> None:
        bucket = self.options.bucket
        for start in range(0, len(keys), 1000):
            batch: list[ObjectIdentifierTypeDef] = [{"Key": k} for k in keys[start : start + 1000]]

            def drop(c: S3Client, batch: list[ObjectIdentifierTypeDef] = batch) -> dict[str, Any]:
                return dict(
                    c.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
                )

            answer = self._bucket.call(
                f"deletion of objects in {self._bucket.where}", drop, delete=True
            )
            errors = answer.get("Errors") or []
            if errors:
                raise SourceError(
                    f"could not delete {len(errors)} object(s) of {self._bucket.where} "
                    f"(e.g. {errors[0].get('Key')}: {errors[0].get('Code')})",
                    hint="check the key's s3:DeleteObject permission and Object Lock settings",
                )

    # --- probe ----------------------------------------------------------------------------

    def probe(self) -> dict[str, Any]:
        records: list[dict[str, Any]] = []
        for obj in self._bucket.list(self.prefix):
            md5 = obj.etag
            if not _MD5.match(md5):  # a multipart ETag: only the content tells its MD5
                download = _Download(self._bucket, obj.key)
                try:
                    download.start()
                    while download.read(_CHUNK):
                        pass
                finally:
                    download.close()
                md5 = download.md5
            records.append({"key": obj.key[len(self.prefix) :], "size": obj.size, "md5": md5})
        return _facts(records)


# --- records ---------------------------------------------------------------------------------


def _record(
    rel: str, path: str, obj: _Listed, md5: str, headers: dict[str, Any], last_modified: str
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


def _entry_meta(record: dict[str, Any]) -> EntryMeta:
    moment = datetime.strptime(record["last_modified"], _STAMP).replace(tzinfo=UTC)
    attrs = [
        ("s3.key", str(record["key"]).encode()),
        ("s3.etag", str(record["etag"]).encode()),
        ("s3.last-modified", str(record["last_modified"]).encode()),
        ("s3.headers", _json(record["headers"])),
    ]
    if record["md5"]:
        attrs.append(("s3.md5", str(record["md5"]).encode()))
    return EntryMeta(mode=0o600, mtime_ns=int(moment.timestamp()) * 10**9, xattrs=tuple(attrs))


def _md5_meta(md5: str) -> EntryMeta:
    return EntryMeta(mode=0o600, xattrs=(("s3.md5", md5.encode()),))


def _previous_md5(sink: ArtifactSink, previous: ArtifactEntry, path: str) -> str:
    value = previous.xattr("s3.md5")
    if value is None:
        side = sink.previous(_md5_path(path))
        value = side.xattr("s3.md5") if side is not None else None
    text = (value or b"").decode(errors="replace")
    return text if _MD5.match(text) else ""


def _previous_headers(previous: ArtifactEntry) -> dict[str, Any] | None:
    try:
        value = json.loads(previous.xattr("s3.headers") or b"")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _facts(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "objects": len(records),
        "bytes": sum(int(r["size"]) for r in records),
        "etags": {str(r["key"]): r["md5"] for r in records},
    }


def _manifest(reader: ArtifactReader) -> list[dict[str, Any]]:
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
        if files.get(rec["path"]) != rec["size"] or not _MD5.match(str(rec["md5"])):
            raise SourceError(
                f"artifact {reader.name!r} has no file {rec['path']} of {rec['size']} bytes "
                "with an MD5, as its manifest says; is it damaged?"
            )
    return objects


def _put_args(headers: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {name: headers[name] for name in _HEADERS if headers.get(name)}
    args["Metadata"] = dict(headers.get("Metadata") or {})
    if headers.get("Expires"):
        try:
            args["Expires"] = parsedate_to_datetime(str(headers["Expires"]))
        except (TypeError, ValueError):
            pass  # "0" or "-1", common and meaning "expired": nothing worth putting back
    return args


def _b64(md5_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(md5_hex)).decode()


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
