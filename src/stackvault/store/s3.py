"""S3-compatible object store (store layer): AWS S3, MinIO, SeaweedFS, Ceph RGW, Garage ...

Location and options: `stackvault.store.s3options`.

Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``~/.aws/credentials``, instance roles); they are never accepted in the URL
and never appear in a message.

Failures are translated into the store error tree: transient ones (connection reset, timeout,
5xx, throttling, a short read) are retried by a `Retrier`; permanent ones explain themselves
(e.g. a 403 on write says that the key cannot write to the bucket). On buckets with Object
Lock, objects can carry a retention date (`configure_retention`) and `delete` removes every
version of a name, so that nothing deleted lingers as a hidden old version.
"""

from __future__ import annotations

import builtins
import io
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from stackvault.errors import (
    ConfigError,
    ObjectExists,
    ObjectNotFound,
    RepositoryNotFound,
    StoreError,
    StorePermissionDenied,
    TransientStoreError,
    UsageError,
)
from stackvault.store.base import (
    Capabilities,
    ObjectInfo,
    Retention,
    Store,
    is_mutable,
    validate_name,
)
from stackvault.store.ratelimit import RateLimiter
from stackvault.store.retry import Retrier
from stackvault.store.s3errors import error_code, translate
from stackvault.store.s3options import S3Options

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectLockRetentionTypeDef

_RETENTION_MODES = {"governance": "GOVERNANCE", "compliance": "COMPLIANCE"}
T = TypeVar("T")


class S3Store(Store):
    """Objects in an S3 bucket below a prefix; see `Store` for the contract.

    Thread-safe: one boto3 client (itself thread-safe) with a pool of ``connections``
    connections is shared by every thread. Nothing is contacted until the first request.
    """

    def __init__(self, options: S3Options, *, client: S3Client | None = None) -> None:
        self.options = options
        self.retrier = Retrier(options.retry)
        self._client = client
        self._client_lock = threading.Lock()
        self._up = RateLimiter(options.limit_upload) if options.limit_upload else None
        self._down = RateLimiter(options.limit_download) if options.limit_download else None
        # (versioned, Object Lock enabled — None if the key may not ask)
        self._bucket_state: tuple[bool, bool | None] | None = None
        self._retention: Retention | None = None

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        return cls(S3Options.from_url(url))

    # --- set-up -----------------------------------------------------------------------------

    @property
    def client(self) -> S3Client:
        """The boto3 client, created on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> S3Client:
        import boto3
        import botocore.config
        import botocore.exceptions

        opts = self.options
        try:
            session = boto3.session.Session(profile_name=opts.profile)
        except botocore.exceptions.ProfileNotFound as exc:
            raise ConfigError(
                f"AWS profile {opts.profile!r} not found",
                hint="check the profile= option and ~/.aws/config",
            ) from exc
        path_style = opts.path_style if opts.path_style is not None else bool(opts.endpoint)
        config = botocore.config.Config(
            region_name=opts.region or session.region_name or "us-east-1",
            max_pool_connections=opts.connections,
            connect_timeout=opts.timeout,
            read_timeout=opts.timeout,
            # Retries are ours (logged, counted, full jitter): botocore tries once.
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path" if path_style else "auto"},
            tcp_keepalive=True,
        )
        return session.client("s3", endpoint_url=opts.endpoint, config=config, verify=opts.verify)

    def set_notice(self, notice: Callable[[str], None]) -> None:
        self.retrier.notice = notice

    @property
    def retries(self) -> int:
        return self.retrier.retries

    def capabilities(self) -> Capabilities:
        locked = bool(self._bucket_state[1]) if self._bucket_state is not None else False
        return Capabilities(
            range_reads=True,
            parallelism=self.options.connections,
            append_only=False,
            object_lock=locked,
            remote=True,
        )

    def describe(self) -> str:
        return self.options.describe()

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def ensure_root(self, *, object_lock: bool = False) -> None:
        """Create the bucket if it does not exist (with Object Lock enabled if asked)."""
        bucket = self.options.bucket
        try:
            self._request("check bucket", lambda: self.client.head_bucket(Bucket=bucket))
            exists = True
        except RepositoryNotFound:
            exists = False
        if exists:
            if object_lock and self.probe_object_lock() is False:
                raise StoreError(
                    f"bucket {bucket} exists but has no Object Lock",
                    hint="Object Lock can only be enabled when a bucket is created: use a new "
                    "bucket, or enable it in the bucket's settings if the server allows that",
                )
            return
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if object_lock:
            kwargs["ObjectLockEnabledForBucket"] = True
        region = self.client.meta.region_name
        if region and region != "us-east-1" and not self.options.endpoint:
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self._request("create bucket", lambda: self.client.create_bucket(**kwargs), write=True)
        self._bucket_state = None

    # --- the Store contract -----------------------------------------------------------------

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.put_parts(name, [data])

    def put_parts(self, name: str, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        self._upload(name, parts)

    def put_new(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """A conditional PUT (``If-None-Match: *``): the server refuses it with 412 if the
        key exists, atomically (AWS since 2024, MinIO, SeaweedFS, Ceph RGW)."""
        try:
            self._upload(name, [data], {"IfNoneMatch": "*"})
        except ObjectExists:
            try:
                if self.get(name) == bytes(data):
                    return  # a retry met its own first attempt
            except ObjectNotFound:
                pass
            raise

    def _upload(
        self,
        name: str,
        parts: Sequence[bytes | bytearray | memoryview],
        extra: dict[str, Any] | None = None,
    ) -> None:
        validate_name(name)
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        payload = bytes(body) if not isinstance(body, bytes) else body
        kwargs: dict[str, Any] = {"Bucket": self.options.bucket, "Key": self._key(name)}
        if self.options.storage_class and name.startswith("data/"):
            # Only packs go to the colder class: config, keys, index and snapshots are small,
            # read by every command, and must stay instantly readable.
            kwargs["StorageClass"] = self.options.storage_class
        until = self._retain_until(name)
        if until is not None and self._retention is not None:
            kwargs["ObjectLockMode"] = _RETENTION_MODES[self._retention.mode]
            kwargs["ObjectLockRetainUntilDate"] = until
        kwargs.update(extra or {})

        def request() -> None:
            if self._up is not None:
                self._up.take(len(payload))
            self.client.put_object(Body=io.BytesIO(payload), **kwargs)

        self._request(f"upload of {name}", request, name=name, write=True)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        validate_name(name)
        if offset < 0 or (length is not None and length < 0):
            raise StoreError(f"invalid range offset={offset} length={length} for {name}")
        if length == 0:
            self.stat(name)
            return b""
        kwargs: dict[str, Any] = {"Bucket": self.options.bucket, "Key": self._key(name)}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"

        def request() -> bytes:
            import botocore.exceptions

            try:
                resp = self.client.get_object(**kwargs)
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) == "InvalidRange":  # the range starts past the end
                    return b""
                raise
            expected = resp.get("ContentLength")
            data = resp["Body"].read()
            if expected is not None and len(data) != expected:
                raise TransientStoreError(
                    f"short read of {name} from {self.describe()}: {len(data)} of {expected} bytes"
                )
            if self._down is not None:
                self._down.take(len(data))
            return data

        return self._request(f"download of {name}", request, name=name)

    def stat(self, name: str) -> ObjectInfo:
        validate_name(name)
        head = self._head(name)
        return ObjectInfo(name, int(head["ContentLength"]), head.get("LastModified"))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        root = self.options.prefix
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.options.bucket, "Prefix": root + prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._request(
                f"listing of {prefix or 'all objects'}",
                lambda kw=kwargs: self.client.list_objects_v2(**kw),  # type: ignore[misc]
            )
            for item in page.get("Contents", []):
                name = item["Key"][len(root) :]
                try:
                    validate_name(name)
                except StoreError:
                    continue  # not ours (a foreign object below the prefix)
                yield ObjectInfo(name, int(item["Size"]), item.get("LastModified"))
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                return

    def delete(self, name: str) -> None:
        validate_name(name)
        key = self._key(name)
        bucket = self.options.bucket
        versioned, _locked = self._state()
        if not versioned:
            self._request(
                f"deletion of {name}",
                lambda: self.client.delete_object(Bucket=bucket, Key=key),
                name=name,
                delete=True,
            )
            return
        # A versioned bucket keeps a deleted object as an old version: remove every version
        # (and delete marker) of this exact key so the space is really freed.
        for version_id in self._versions(key):
            self._request(
                f"deletion of {name}",
                lambda v=version_id: self.client.delete_object(  # type: ignore[misc]
                    Bucket=bucket, Key=key, VersionId=v
                ),
                name=name,
                delete=True,
            )

    def _versions(self, key: str) -> builtins.list[str]:
        found: builtins.list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.options.bucket, "Prefix": key}
        while True:
            page = self._request(
                f"listing versions of {key}",
                lambda kw=dict(kwargs): self.client.list_object_versions(**kw),  # type: ignore[misc]
            )
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if item["Key"] == key and item.get("VersionId"):
                    found.append(item["VersionId"])
            if not page.get("IsTruncated"):
                return found
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")

    # --- Object Lock --------------------------------------------------------------------------

    def probe_object_lock(self) -> bool | None:
        """True if the bucket has Object Lock enabled, None if the key may not ask."""
        self._bucket_state = None
        return self._state()[1]

    def configure_retention(self, retention: Retention | None) -> None:
        """Objects put from now on (except `MUTABLE_PREFIXES`) get ``retention``; None: none."""
        if retention is not None:
            if retention.mode not in _RETENTION_MODES:
                raise UsageError(f"unknown Object Lock mode {retention.mode!r}")
            # Unknown (a key without s3:GetBucketObjectLockConfiguration): go ahead; a put
            # with retention fails loudly if the bucket cannot take it.
            if self.probe_object_lock() is False:
                raise StoreError(
                    f"the repository asks for Object Lock but bucket {self.options.bucket} "
                    "does not have it enabled",
                    hint="use a bucket created with Object Lock",
                )
        self._retention = retention

    def retention(self, name: str) -> datetime | None:
        validate_name(name)
        head = self._head(name)
        until = head.get("ObjectLockRetainUntilDate")
        return until.astimezone(UTC) if until is not None else None

    def set_retention(self, name: str, until: datetime) -> None:
        validate_name(name)
        if self._retention is None:
            raise StoreError(f"no Object Lock retention configured for {self.describe()}")
        retention = cast(
            "ObjectLockRetentionTypeDef",
            {"Mode": _RETENTION_MODES[self._retention.mode], "RetainUntilDate": until},
        )
        self._request(
            f"retention update of {name}",
            lambda: self.client.put_object_retention(
                Bucket=self.options.bucket, Key=self._key(name), Retention=retention
            ),
            name=name,
            write=True,
        )

    def _retain_until(self, name: str) -> datetime | None:
        if self._retention is None or is_mutable(name):
            return None
        return datetime.now(UTC) + timedelta(days=self._retention.days)

    def _state(self) -> tuple[bool, bool | None]:
        if self._bucket_state is None:
            import botocore.exceptions

            bucket = self.options.bucket

            def versioning() -> bool:
                resp = self.client.get_bucket_versioning(Bucket=bucket)
                return resp.get("Status") == "Enabled"

            def lock() -> bool:
                try:
                    resp = self.client.get_object_lock_configuration(Bucket=bucket)
                except botocore.exceptions.ClientError as exc:
                    if error_code(exc) in (
                        "ObjectLockConfigurationNotFoundError",
                        "ObjectLockConfigurationNotFound",
                        "NoSuchObjectLockConfiguration",
                    ):
                        return False
                    raise
                conf = resp.get("ObjectLockConfiguration", {})
                return conf.get("ObjectLockEnabled") == "Enabled"

            try:
                versioned = self._request("bucket versioning query", versioning)
            except StorePermissionDenied:
                versioned = False  # a key without that permission: plain deletes
            locked: bool | None
            try:
                locked = self._request("bucket Object Lock query", lock)
            except StorePermissionDenied:
                locked = None
            self._bucket_state = (versioned or bool(locked), locked)
        return self._bucket_state

    # --- plumbing ---------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return self.options.prefix + name

    def _head(self, name: str) -> dict[str, Any]:
        key = self._key(name)
        return dict(
            self._request(
                f"lookup of {name}",
                lambda: self.client.head_object(Bucket=self.options.bucket, Key=key),
                name=name,
            )
        )

    def _request(
        self,
        what: str,
        request: Callable[[], T],
        *,
        name: str | None = None,
        write: bool = False,
        delete: bool = False,
    ) -> T:
        def translated() -> T:
            try:
                return request()
            except StoreError:
                raise
            except Exception as exc:  # every foreign error is translated here
                error = translate(
                    exc,
                    what=what,
                    where=self.describe(),
                    bucket=self.options.bucket,
                    name=name,
                    write=write,
                    delete=delete,
                )
                if error is exc:
                    raise
                raise error from exc

        return self.retrier.call(what, translated)
