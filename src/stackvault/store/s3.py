"""S3-compatible object store (store layer): AWS S3, MinIO, SeaweedFS, Ceph RGW, Garage ...

Location: ``s3://BUCKET[/PREFIX][?option=value&...]``. Objects live at ``PREFIX/NAME``.

==================  ==========================================================================
option              meaning
==================  ==========================================================================
``endpoint``        server URL, e.g. ``http://127.0.0.1:8333`` (default: AWS, or the
                    ``STACKVAULT_S3_ENDPOINT`` environment variable)
``region``          region name (default: from the AWS configuration, else ``us-east-1``)
``path-style``      ``true`` for path-style addressing (default: true with a custom endpoint)
``storage-class``   storage class of new packs (``STANDARD_IA``, ``GLACIER_IR`` ...; metadata
                    stays in the bucket's default class so every command can read it)
``tls-verify``      ``false`` to skip certificate verification (not recommended)
``ca-bundle``       file with the CA certificates to trust
``profile``         AWS profile name (credentials and region from ``~/.aws``)
``connections``     concurrent connections (default 16)
``timeout``         seconds to wait for a connection or a response (default 30)
``retries``         tries per request, the first included (default 10)
``retry-time``      give up retrying a request after this many seconds (default 180)
``limit-upload``    average upload rate, e.g. ``10M`` (bytes per second, binary units)
``limit-download``  average download rate
==================  ==========================================================================

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
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

from stackvault.errors import (
    ConfigError,
    ObjectLocked,
    ObjectNotFound,
    RepositoryNotFound,
    StoreError,
    StorePermissionDenied,
    StoreUnreachable,
    TransientStoreError,
    UsageError,
)
from stackvault.store.base import Capabilities, ObjectInfo, Retention, Store, validate_name
from stackvault.store.open import redact
from stackvault.store.ratelimit import RateLimiter, parse_rate
from stackvault.store.retry import Retrier, RetryPolicy

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectLockRetentionTypeDef

ENV_ENDPOINT = "STACKVAULT_S3_ENDPOINT"
DEFAULT_CONNECTIONS = 16
DEFAULT_TIMEOUT = 30.0
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequests",
        "OperationAborted",
        "IncompleteBody",
    }
)
_BAD_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)
_RETENTION_MODES = {"governance": "GOVERNANCE", "compliance": "COMPLIANCE"}
T = TypeVar("T")


@dataclass(frozen=True)
class S3Options:
    """Everything an `S3Store` is configured with (parsed from the location URL)."""

    bucket: str
    prefix: str = ""
    """Empty, or ending in ``/``."""
    endpoint: str | None = None
    region: str | None = None
    path_style: bool | None = None
    storage_class: str | None = None
    verify: bool | str = True
    profile: str | None = None
    connections: int = DEFAULT_CONNECTIONS
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limit_upload: int | None = None
    limit_download: int | None = None

    @classmethod
    def from_url(cls, url: str, environ: dict[str, str] | None = None) -> S3Options:
        """Parse ``s3://BUCKET/PREFIX?...``; raise `UsageError` naming what is wrong."""
        env = os.environ if environ is None else environ
        shown = redact(url)
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise UsageError(f"cannot parse the S3 location {shown}: {exc}") from exc
        if parts.scheme.lower() != "s3":
            raise UsageError(f"not an S3 location: {shown}")
        if "@" in parts.netloc:
            raise UsageError(
                f"the S3 location {shown} contains credentials",
                hint="remove them from the URL and set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) instead",
            )
        bucket = parts.netloc
        if not bucket:
            raise UsageError(f"the S3 location {shown} names no bucket (s3://BUCKET/PREFIX)")
        prefix = parts.path.strip("/")
        opts: dict[str, Any] = {"bucket": bucket, "prefix": prefix + "/" if prefix else ""}
        retry: dict[str, Any] = {}
        endpoint = env.get(ENV_ENDPOINT) or None
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            try:
                if key == "endpoint":
                    endpoint = value
                elif key == "region":
                    opts["region"] = value
                elif key == "path-style":
                    opts["path_style"] = _flag(value)
                elif key == "storage-class":
                    opts["storage_class"] = _storage_class(value)
                elif key == "tls-verify":
                    opts["verify"] = opts.get("verify", True) if _flag(value) else False
                elif key == "ca-bundle":
                    if not os.path.isfile(value):
                        raise ValueError(f"no such file: {value}")
                    opts["verify"] = value
                elif key == "profile":
                    opts["profile"] = value
                elif key == "connections":
                    opts["connections"] = _positive_int(value)
                elif key == "timeout":
                    opts["timeout"] = _positive_float(value)
                elif key == "retries":
                    retry["attempts"] = _positive_int(value)
                elif key == "retry-time":
                    retry["deadline"] = _positive_float(value)
                elif key == "limit-upload":
                    opts["limit_upload"] = parse_rate(value)
                elif key == "limit-download":
                    opts["limit_download"] = parse_rate(value)
                else:
                    raise UsageError(
                        f"unknown S3 option {key!r} in {shown}",
                        hint="known options: endpoint, region, path-style, storage-class, "
                        "tls-verify, ca-bundle, profile, connections, timeout, retries, "
                        "retry-time, limit-upload, limit-download",
                    )
            except ValueError as exc:
                raise UsageError(f"bad value for S3 option {key!r} in {shown}: {exc}") from exc
        if endpoint:
            ep = urlsplit(endpoint)
            if ep.scheme not in ("http", "https") or not ep.hostname:
                raise UsageError(
                    f"bad S3 endpoint {redact(endpoint)}",
                    hint="give a URL such as http://127.0.0.1:8333 or https://s3.example.com",
                )
            opts["endpoint"] = endpoint
        if retry:
            opts["retry"] = replace(RetryPolicy(), **retry)
        return cls(**opts)

    def describe(self) -> str:
        """The location for messages: bucket, prefix and endpoint, credentials hidden."""
        where = f"s3://{self.bucket}/{self.prefix.rstrip('/')}".rstrip("/")
        return f"{where} at {redact(self.endpoint)}" if self.endpoint else where


_ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


def _storage_class(value: str) -> str:
    upper = value.upper()
    if upper in _ARCHIVE_CLASSES:
        raise ValueError(
            f"{upper} objects must be restored by hand (hours) before they can be read, "
            "so check and restore could not read the packs; use GLACIER_IR, STANDARD_IA "
            "or ONEZONE_IA for a cold tier"
        )
    return upper


def _flag(value: str) -> bool:
    low = value.lower()
    if low in _TRUE or low == "":
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be positive, got {value}")
    return number


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
                if _code(exc) == "InvalidRange":  # the range starts past the end
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
        return ObjectInfo(name, int(head["ContentLength"]))

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
                yield ObjectInfo(name, int(item["Size"]))
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
        """Objects put from now on (except ``locks/``) get ``retention``; None: none."""
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
        if self._retention is None or name.startswith("locks/"):
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
                    if _code(exc) in (
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
                error = self._translate(exc, what, name, write, delete)
                if error is exc:
                    raise
                raise error from exc

        return self.retrier.call(what, translated)

    def _translate(
        self, exc: Exception, what: str, name: str | None, write: bool, delete: bool
    ) -> Exception:
        import botocore.exceptions as bx
        from botocore.parsers import ResponseParserError

        where = self.describe()
        bucket = self.options.bucket
        if isinstance(exc, bx.ClientError):
            code = _code(exc)
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            detail = exc.response.get("Error", {}).get("Message") or code
            missing = code in ("NoSuchKey", "NotFound") or (status == 404 and code == "404")
            if missing and name is not None:
                return ObjectNotFound(f"object {name} not found in {where}")
            if code == "NoSuchBucket" or missing:
                return RepositoryNotFound(
                    f"bucket {bucket} does not exist at {where}",
                    hint="create it with `stackvault init`, or check the bucket name, "
                    "endpoint and region",
                )
            if code in _BAD_CREDENTIALS:
                return StorePermissionDenied(
                    f"the S3 server at {where} rejected the credentials ({code})",
                    hint="check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile)",
                )
            if code == "AccessDenied" or status == 403:
                if delete:
                    return ObjectLocked(
                        f"cannot delete {name} in {where}: access denied ({detail})",
                        hint="the object may be under Object Lock retention, or the key may "
                        "lack s3:DeleteObject",
                    )
                if write:
                    return StorePermissionDenied(
                        f"the access key cannot write to bucket {bucket} ({what} denied)",
                        hint="check the bucket policy and the key's permissions",
                    )
                return StorePermissionDenied(
                    f"the access key cannot read from bucket {bucket} ({what} denied)",
                    hint="check the bucket policy and the key's permissions",
                )
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                return TransientStoreError(f"{what} failed at {where}: {code} ({detail})")
            if code == "InvalidObjectState":
                return StoreError(
                    f"{name} in {where} is archived and must be restored before reading",
                    hint="restore the object from the archive tier (see the README on cold "
                    "tiers), then run the command again",
                )
            return StoreError(f"{what} failed at {where}: {code} ({detail})")
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return ConfigError(
                f"no usable S3 credentials for {where}",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            )
        if isinstance(exc, bx.SSLError):
            return StoreUnreachable(
                f"TLS verification failed for {where}",
                hint="pass ?ca-bundle=FILE with the server's CA, or fix the certificate",
            )
        if isinstance(exc, bx.EndpointConnectionError):
            return TransientStoreError(
                f"cannot connect to the S3 endpoint of {where}",
                hint="check the endpoint URL and that the server is running and reachable",
            )
        if isinstance(exc, bx.ConnectTimeoutError | bx.ReadTimeoutError):
            return TransientStoreError(f"{what} timed out at {where}")
        if isinstance(
            exc,
            # HTTPClientError covers ConnectionClosedError and ResponseStreamingError (a reset
            # while the body is read, which botocore itself never retries).
            bx.ConnectionError
            | bx.HTTPClientError
            | bx.IncompleteReadError
            | ResponseParserError  # a response cut short can be unparsable
            | OSError,
        ):
            return TransientStoreError(
                f"{what} failed at {where}: connection lost ({type(exc).__name__})"
            )
        if isinstance(exc, bx.BotoCoreError):
            return StoreError(f"{what} failed at {where}: {exc}")
        name_of = type(exc).__name__
        if "ProtocolError" in name_of or "IncompleteRead" in name_of:  # urllib3 / http.client
            return TransientStoreError(f"{what} failed at {where}: connection lost ({exc})")
        return exc


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
