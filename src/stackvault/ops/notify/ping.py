"""Dead-man pings (ops layer): healthchecks.io-style URLs a job calls as it runs, so that an
outside service notices a daemon (or a timer) that stopped running it.

``<url>/start`` when a run starts, ``<url>`` when it ends ok, ``<url>/fail`` with the
error as body when it failed or was partial (an interrupted run sends nothing: the service
sees a start without an end). A ping has a short timeout and two tries; a failed one is
reported in one sentence that never holds the URL (its path is the check's secret).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from stackvault import __version__

PingKind = Literal["start", "success", "fail"]

PING_TIMEOUT_S = 10.0
PING_ATTEMPTS = 2
MAX_BODY = 10_000
"""Bytes of the error sent with ``/fail`` (healthchecks.io keeps 10 KB by default)."""


def ping_address(url: str, kind: PingKind) -> str:
    """``url`` with ``/start`` or ``/fail`` added to its path (before any query)."""
    if kind == "success":
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + kind))


def send_ping(
    url: str,
    kind: PingKind,
    body: str = "",
    *,
    timeout_s: float = PING_TIMEOUT_S,
    attempts: int = PING_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Ping ``url`` (a POST with ``body`` for ``fail``, a GET otherwise); None when the
    service answered 2xx, else why not (one sentence, without the URL)."""
    if urlsplit(url).scheme not in ("http", "https"):
        return "the ping URL is not an http:// or https:// URL"
    data = body.encode("utf-8", "replace")[:MAX_BODY] if kind == "fail" else None
    error = "not sent"
    for attempt in range(max(1, attempts)):
        if attempt:
            sleep(1.0)
        request = urllib.request.Request(
            ping_address(url, kind),
            data=data,
            method="POST" if data is not None else "GET",
            headers={"User-Agent": f"stackvault/{__version__}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read(1024)
                return None
        except urllib.error.HTTPError as exc:
            error = f"the ping service answered HTTP {exc.code} {exc.reason}"
            if exc.code < 500:
                return error
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = getattr(reason, "strerror", None) or str(reason)
            error = f"the ping service cannot be reached: {text}"
        except (OSError, ValueError) as exc:
            error = f"the ping failed: {getattr(exc, 'strerror', None) or exc}"
    return error
