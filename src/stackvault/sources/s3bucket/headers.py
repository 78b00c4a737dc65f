"""What a capture keeps of an object's ETag, time and headers (sources layer)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

MD5 = re.compile(r"^[0-9a-f]{32}$")
STAMP = "%Y-%m-%dT%H:%M:%SZ"
HEADERS = (  # response fields that are also put_object arguments (strings)
    "ContentType",
    "CacheControl",
    "ContentDisposition",
    "ContentEncoding",
    "ContentLanguage",
    "WebsiteRedirectLocation",
)


def etag_of(raw: str) -> str:
    return raw.strip().strip('"').lower()


def stamp_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(STAMP)


def is_md5(etag: str, head: dict[str, Any]) -> bool:
    """Whether ``etag`` is the MD5 of the content (not multipart, not SSE-KMS or SSE-C)."""
    sse = str(head.get("ServerSideEncryption") or "")
    kms_or_c = sse.startswith("aws:kms") or bool(head.get("SSECustomerAlgorithm"))
    return bool(MD5.match(etag)) and not kms_or_c


def headers_of(head: dict[str, Any]) -> dict[str, Any]:
    """What a restore puts back: content type, other standard headers, user metadata."""
    out: dict[str, Any] = {name: str(head[name]) for name in HEADERS if head.get(name)}
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


def put_args(headers: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {name: headers[name] for name in HEADERS if headers.get(name)}
    args["Metadata"] = dict(headers.get("Metadata") or {})
    if headers.get("Expires"):
        try:
            args["Expires"] = parsedate_to_datetime(str(headers["Expires"]))
        except (TypeError, ValueError):
            pass  # "0" or "-1", common and meaning "expired": nothing worth putting back
    return args
