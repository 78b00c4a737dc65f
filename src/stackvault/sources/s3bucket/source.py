"""`BucketSource`: the objects below a prefix of an S3 bucket as a source (sources layer).

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
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import urlencode, urlsplit

from stackvault.errors import (
    ConfigError,
    ObjectNotFound,
    RepositoryNotFound,
    RestoreRefused,
    SourceError,
    StoreError,
    UsageError,
)
from stackvault.sources.contract import ArtifactReader, ArtifactRestoreOptions, ArtifactSink, Source
from stackvault.sources.s3bucket.bucket import Bucket, Listed, NoBucket
from stackvault.sources.s3bucket.headers import MD5, etag_of, headers_of, is_md5, put_args, stamp_of
from stackvault.sources.s3bucket.keys import artifact_paths, md5_path
from stackvault.sources.s3bucket.manifest import (
    FORMAT,
    MANIFEST,
    entry_meta,
    md5_meta,
    object_record,
    previous_headers,
    previous_md5,
    read_objects,
)
from stackvault.sources.s3bucket.transfer import CHUNK, ArtifactBody, Download, read_exact
from stackvault.sources.url import SourceURL
from stackvault.store.s3options import S3Options

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

_S3_OPTIONS = frozenset(
    {"endpoint", "region", "path-style", "tls-verify", "ca-bundle", "profile"}
    | {"timeout", "retries", "retry-time"}
)
_OWN_OPTIONS = frozenset({"create-bucket", "delete-extra"})


class BucketFacts(TypedDict):
    """The facts of a bucket prefix: object count, bytes, and each object's MD5 by key
    (relative to the prefix)."""

    objects: int
    bytes: int
    etags: dict[str, str]


class BucketRestored(TypedDict):
    """What a bucket restore did: objects and bytes uploaded, where, whether the bucket was
    created, how many objects were replaced, and the objects the artifact does not hold
    (kept or deleted, a few named)."""

    objects: int
    bytes: int
    bucket: str
    prefix: str
    bucket_created: bool
    replaced: int
    extra_kept: int
    extra_deleted: int
    extra_sample: list[str]
    seconds: float


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
    """The objects below a prefix of an S3 bucket (see the package doc)."""

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
        self._bucket = Bucket(options)

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
        self, sink: ArtifactSink, obj: Listed, rel: str, path: str, tally: _Capture
    ) -> dict[str, Any] | None:
        """Record ``obj`` from the parent snapshot if it has the same content; None if not."""
        previous = sink.previous(path)
        if previous is None or (previous.size, previous.xattr("s3.key")) != (
            obj.size,
            rel.encode(),
        ):
            return None
        md5, headers = previous_md5(sink, previous, path), previous_headers(previous)
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
            if (etag_of(str(head.get("ETag", ""))), int(head["ContentLength"])) != (
                obj.etag,
                obj.size,
            ):
                return None
            headers = headers_of(head)
        record = {
            **object_record(rel, path, obj, md5, headers, obj.last_modified),
            "check": "reused",
        }
        sink.reuse(path, previous, entry_meta(record))  # now with the MD5 in its attributes
        tally.reused.add(obj.size)
        return record

    def _download(
        self, sink: ArtifactSink, obj: Listed, rel: str, path: str, tally: _Capture
    ) -> dict[str, Any] | None:
        download = Download(self._bucket, obj.key)
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
                    last_modified = stamp_of(moment)
            current = replace(obj, size=download.size, etag=download.etag)
            headers = headers_of(download.head)
            # An MD5 ETag is checked at EOF (a mismatch fails the capture), so it can be
            # recorded before the download; any other MD5 is known only afterwards.
            known = download.etag if download.etag_is_md5 else ""
            record = object_record(rel, path, current, known, headers, last_modified)
            stored = sink.add_file(path, download, entry_meta(record))
        finally:
            download.close()
        if stored.size != download.size or not download.md5:
            raise SourceError(
                f"object {obj.key} of {self._bucket.where}: {stored.size} of {download.size} "
                "bytes were stored"
            )
        if not known:
            sink.add_bytes(md5_path(path), b"", md5_meta(download.md5))
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

    def restore(self, reader: ArtifactReader, options: ArtifactRestoreOptions) -> BucketRestored:
        started = time.monotonic()
        self._bucket.store.set_notice(options.notice)
        records = read_objects(reader)
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

    def _existing(self) -> dict[str, Listed] | None:
        """The objects below the prefix (by key relative to it); None if there is no bucket."""
        try:
            return {o.key[len(self.prefix) :]: o for o in self._bucket.list(self.prefix)}
        except NoBucket:
            return None

    def _upload(self, reader: ArtifactReader, rec: dict[str, Any]) -> None:
        key, size, md5 = self.prefix + str(rec["key"]), int(rec["size"]), str(rec["md5"])
        args = put_args(rec["headers"])
        if size > self.single_put_limit:
            self._multipart(reader, rec, key, args)
            return
        data: bytes | None = None
        if size <= self.memory_limit:
            data = read_exact(reader.open(rec["path"]), size + 1)
            if len(data) != size or hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
                raise SourceError(
                    f"artifact file {rec['path']} does not have the size and MD5 that its "
                    "manifest records; is the artifact damaged?"
                )
        bucket = self.options.bucket

        def put(client: S3Client) -> dict[str, Any]:
            body: Any = data if data is not None else ArtifactBody(reader, rec["path"], size)
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
        etag = etag_of(str(answer.get("ETag", "")))
        if is_md5(etag, answer) and etag != md5:
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
                data = read_exact(stream, min(part_size, size - (number - 1) * part_size))
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

    def probe(self) -> BucketFacts:
        records: list[dict[str, Any]] = []
        for obj in self._bucket.list(self.prefix):
            md5 = obj.etag
            if not MD5.match(md5):  # a multipart ETag: only the content tells its MD5
                download = Download(self._bucket, obj.key)
                try:
                    download.start()
                    while download.read(CHUNK):
                        pass
                finally:
                    download.close()
                md5 = download.md5
            records.append({"key": obj.key[len(self.prefix) :], "size": obj.size, "md5": md5})
        return _facts(records)


def _facts(records: list[dict[str, Any]]) -> BucketFacts:
    return {
        "objects": len(records),
        "bytes": sum(int(r["size"]) for r in records),
        "etags": {str(r["key"]): r["md5"] for r in records},
    }


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
