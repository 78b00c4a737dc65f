"""S3 failures → the store error tree (store layer).

Transient failures (connection reset or closed, timeout, 5xx, 429 and throttling codes, a
response cut short) become `TransientStoreError`, which `Retrier` retries; permanent ones
become errors that say what to do (a 403 on write names the bucket and the permissions to
check, rejected credentials name the variables, a missing bucket is "no repository").
"""

from __future__ import annotations

from typing import Any

from stackvault.errors import (
    ConfigError,
    ObjectExists,
    ObjectLocked,
    ObjectNotFound,
    RepositoryNotFound,
    StoreError,
    StorePermissionDenied,
    StoreUnreachable,
    TransientStoreError,
)

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


def translate(
    exc: Exception,
    *,
    what: str,
    where: str,
    bucket: str,
    name: str | None = None,
    write: bool = False,
    delete: bool = False,
) -> Exception:
    """The store error for a botocore/urllib3/OS failure of request ``what`` (on object
    ``name``, if any) at ``where``; ``exc`` itself if it is none of those."""
    import botocore.exceptions as bx

    if isinstance(exc, bx.ClientError):
        return _client_error(
            exc, what=what, where=where, bucket=bucket, name=name, write=write, delete=delete
        )
    return _transport_error(exc, what=what, where=where)


def _client_error(
    exc: Any,
    *,
    what: str,
    where: str,
    bucket: str,
    name: str | None,
    write: bool,
    delete: bool,
) -> Exception:
    """`translate` of an error response of the server (a botocore ``ClientError``)."""
    code = error_code(exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    detail = exc.response.get("Error", {}).get("Message") or code
    missing = code in ("NoSuchKey", "NotFound") or (status == 404 and code == "404")
    if missing and name is not None:
        return ObjectNotFound(f"object {name} not found in {where}")
    if code == "NoSuchBucket" or missing:
        return RepositoryNotFound(
            f"bucket {bucket} does not exist at {where}",
            hint="create it with `stackvault init`, or check the bucket name, endpoint and region",
        )
    if (code == "PreconditionFailed" or status == 412) and name is not None:
        return ObjectExists(f"object {name} already exists in {where}")
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


def _transport_error(exc: Exception, *, what: str, where: str) -> Exception:
    """`translate` of a failure without a response: credentials, TLS, connection, timeout,
    a response cut short; ``exc`` itself if it is none of those."""
    import botocore.exceptions as bx
    from botocore.parsers import ResponseParserError

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
        unknown = _unknown_host(exc)
        if unknown is not None:  # a typo in the endpoint: retrying cannot help
            return StoreUnreachable(
                f"the host of the S3 endpoint of {where} is not known ({unknown})",
                hint="check the host name in the endpoint URL",
            )
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


def _unknown_host(exc: BaseException) -> str | None:
    """The resolver's words if ``exc`` (or what it wraps) says the host name does not exist
    (``EAI_NONAME``, ``EAI_NODATA``): a permanent failure. A temporary one (``EAI_AGAIN``, a
    resolver that did not answer) gives None, and stays retried."""
    import socket

    permanent = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
    todo: list[object] = [exc]
    seen: set[int] = set()
    while todo:
        error = todo.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, socket.gaierror):
            return error.strerror if error.errno in permanent else None
        todo += [error.__cause__, error.__context__, *error.args]
        todo += list(getattr(error, "kwargs", {}).values())
    return None


def error_code(exc: Any) -> str:
    """The S3 error code of a botocore ``ClientError`` (e.g. ``NoSuchKey``)."""
    return str(exc.response.get("Error", {}).get("Code", ""))
