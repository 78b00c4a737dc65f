"""HTTP probes of a restored stack (stack layer): the plan's ``probes`` say what "back"
means for the application, e.g. its setup endpoint answering 200.

`http_probe` requests a URL (GET) until it answers the expected status or the wait runs
out, and returns one validation entry of the restore report.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request

from stackvault.stack.restorereport import Validation


def http_probe(url: str, want: int, wait: float, where: str = "") -> Validation:
    """The validation of ``url`` (subject ``probe URL``): ok once it answers ``want`` within
    ``wait`` seconds (asked every second, 10 s per request); otherwise what it answered last,
    or why it did not, followed by ``where`` (e.g. which logs to read)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    # A proxy cannot reach this host's loopback: ask the service directly.
    loopback = host == "localhost" or host.startswith("127.") or host == "::1"
    opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if loopback else []))
    deadline = time.monotonic() + wait
    got = "no answer"
    while True:
        try:
            with opener.open(url, timeout=10) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
        except (urllib.error.URLError, OSError) as exc:
            status, got = 0, str(getattr(exc, "reason", exc))[:120]
        if status == want:
            return Validation(f"probe {url}", True, f"answered {status}")
        if status:
            got = f"answered {status}"
        if time.monotonic() > deadline:
            return Validation(
                f"probe {url}", False, f"{got}, not {want}, within {wait:.0f} s{where}"
            )
        time.sleep(1.0)
