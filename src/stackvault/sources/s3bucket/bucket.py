"""One S3 location: requests with retries, failures as sentences, listings (sources layer)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from stackvault.errors import (
    ConfigError,
    ObjectNotFound,
    RepositoryNotFound,
    SourceError,
    StackvaultError,
    StoreError,
)
from stackvault.redact import redact
from stackvault.sources.s3bucket.headers import etag_of, stamp_of
from stackvault.store.s3 import S3Store
from stackvault.store.s3errors import translate
from stackvault.store.s3options import S3Options

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    etag: str
    last_modified: str
    storage_class: str


class NoBucket(SourceError):
    """The bucket does not exist."""


class Bucket:
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
            return NoBucket(
                f"bucket {self.options.bucket} does not exist at {self.server}",
                hint="check the bucket name, the endpoint and the region",
            )
        return SourceError(exc.message, hint=exc.hint)

    def list(self, prefix: str) -> Iterator[Listed]:
        """Every object below ``prefix``, page by page, in key order."""
        kwargs: dict[str, Any] = {"Bucket": self.options.bucket, "Prefix": prefix}

        def page(client: S3Client) -> dict[str, Any]:
            return dict(client.list_objects_v2(**kwargs))

        while True:
            answer = self.call(f"listing of {self.where}", page)
            for item in answer.get("Contents", []):
                yield Listed(
                    key=item["Key"],
                    size=int(item["Size"]),
                    etag=etag_of(item.get("ETag", "")),
                    last_modified=stamp_of(item["LastModified"]),
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
