"""Object bodies: a checked, resumable download; an artifact file to upload (sources layer).

**Checks.** A download must yield the announced byte count and, when the ETag is the content
MD5 (single-part, no SSE-KMS/SSE-C), bytes with that MD5. A transient failure mid-object
resumes with a ranged GET pinned to the ETag (``If-Match``); an object replaced while it is read
fails the capture, one replaced or deleted between the listing and its download is captured as
it then is (or left out) with a notice. Uploads send ``Content-MD5``: the server verifies each
object against the MD5 recorded at capture.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from stackvault.errors import SourceError, TransientStoreError
from stackvault.sources.contract import ArtifactReader, Readable
from stackvault.sources.s3bucket.bucket import Bucket
from stackvault.sources.s3bucket.headers import etag_of, is_md5

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client

CHUNK = 1 << 20
"""Bytes per read of an object body or an artifact file."""


class Download:
    """The body of one object as a `Readable`, checked as it is read.

    `start` sends the first GET, so the headers are known before the sink reads. A transient
    failure in the middle resumes with a ranged GET pinned to the ETag (``If-Match``): bytes the
    sink consumed are never sent twice. At EOF the byte count must equal the size and, when the
    ETag is the content MD5, the MD5 of the bytes must equal it; `SourceError` otherwise.
    """

    def __init__(self, bucket: Bucket, key: str) -> None:
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
        self.etag = etag_of(str(answer.get("ETag", "")))

    @property
    def etag_is_md5(self) -> bool:
        return is_md5(self.etag, self.head)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
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


class ArtifactBody:
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
        while self._pos < target and self.read(min(CHUNK, target - self._pos)):
            pass
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        left = self._size - self._pos
        want = left if n is None or n < 0 else min(n, left)
        data = read_exact(self._stream, want)
        if len(data) < want:
            raise SourceError(f"artifact file {self._path} is shorter than its manifest says")
        self._pos += len(data)
        return data


def read_exact(stream: Readable, n: int) -> bytes:
    parts: list[bytes] = []
    while n > 0:
        part = stream.read(min(n, CHUNK))
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)
