"""Delivering a message to one target (ops layer): one Apprise object per target, a few
tries with a short backoff, the outcome in one sentence without the URL.

A target's URL holds the service's credentials (a Slack token in its path, a mail password
in its userinfo), so it is never shown: a target is named by its name in the configuration
and the service Apprise found for it (``ops-slack (Slack)``), and every error text Apprise
logs is scrubbed of the URL's parts before it is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from stackvault.config.model import NotifyEvent
from stackvault.ops.notify.messages import Message, scrub

if TYPE_CHECKING:
    import apprise

DEFAULT_ATTEMPTS = 3
"""Tries per message and target."""
DEFAULT_BACKOFF_S = 1.0
"""Wait before the second try; doubled before each further one."""


@dataclass(frozen=True)
class DeliveryResult:
    """How one message went to one target: ``ok``, else ``error`` (one sentence, no URL)."""

    target: str
    ok: bool
    error: str | None = None
    attempts: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "ok": self.ok,
            "error": self.error,
            "attempts": self.attempts,
        }


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of ``url`` that may be credentials, as written and unquoted (scrubbed out of
    any text shown): the URL, its user and password, and each path segment and query value
    that looks like a token (no dot, and 12 characters or more, or 4 or more with a digit:
    Slack's first token stands where a host would; host names and plain words such as
    ``hook`` stay readable)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return (url,)
    userinfo = parts.netloc.rpartition("@")[0]
    found: list[str] = [url, *userinfo.split(":")]
    host = parts.netloc.rpartition("@")[2]
    others = [*host.split(":"), *parts.path.split("/")]
    others = [p for p in others if "." not in p and not p.isdigit()]  # not hosts, ports
    others += [pair.partition("=")[2] for pair in parts.query.split("&")]
    found += [p for p in others if len(p) >= 12 or (len(p) >= 4 and _has_digit(p))]
    found = [f for f in found if f]
    return tuple({*found, *(unquote(f) for f in found)})


def _has_digit(text: str) -> bool:
    return any(c.isdigit() for c in text)


class Target:
    """One ``notify.targets`` entry, ready to send: its Apprise object, or why it has none
    (``problem``: the URL could not be read, or Apprise knows no such service)."""

    def __init__(
        self,
        name: str,
        events: tuple[NotifyEvent, ...],
        url: str | None,
        problem: str | None = None,
        *,
        described: str = "",
    ) -> None:
        self.name = name
        self.events = events
        self.problem = problem
        self.secrets: tuple[str, ...] = url_secrets(url) if url else ()
        self.service = ""
        self._apprise: apprise.Apprise | None = None
        if url is not None and problem is None:
            import apprise  # here: `run` and `serve` without targets do not load it

            obj = apprise.Apprise()
            quiet = apprise.LogCapture(level=logging.ERROR)  # type: ignore[no-untyped-call]
            with quiet:  # what Apprise logs of a URL it refuses may hold the URL
                added = obj.add(url)
            if added:
                self._apprise = obj
                self.service = str(getattr(obj[0], "service_name", "") or "")
            else:
                self.problem = (
                    f"the URL from {described or 'its reference'} is not one Apprise can use "
                    "(see https://github.com/caronc/apprise/wiki for the URL of each service)"
                )

    @property
    def label(self) -> str:
        """``ops-slack (Slack)``."""
        return f"{self.name} ({self.service})" if self.service else self.name

    def wants(self, message: Message) -> bool:
        """True if the target asked for one of the message's events."""
        return any(kind in self.events for kind in message.kinds)

    def send(
        self,
        message: Message,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_s: float = DEFAULT_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> DeliveryResult:
        """Send ``message``, up to ``attempts`` times; never raises."""
        if self._apprise is None:
            return DeliveryResult(self.name, False, self.problem or "not usable", 0)
        error = "not delivered"
        for attempt in range(1, max(1, attempts) + 1):
            if attempt > 1:
                sleep(backoff_s * 2 ** (attempt - 2))
            ok, error = self._try(message)
            if ok:
                return DeliveryResult(self.name, True, None, attempt)
        return DeliveryResult(self.name, False, error, max(1, attempts))

    def _try(self, message: Message) -> tuple[bool, str]:
        """One try: (delivered, why not)."""
        assert self._apprise is not None
        import apprise

        capture = apprise.LogCapture(level=logging.WARNING, fmt="%(message)s")  # type: ignore[no-untyped-call]
        with capture as captured:
            try:
                ok = bool(
                    self._apprise.notify(
                        body=message.body,
                        title=message.title,
                        notify_type=message.level,
                        body_format="text",
                    )
                )
                raised = ""
            except Exception as exc:  # a plugin's bug must not reach the backup
                ok, raised = False, f"{type(exc).__name__}: {exc}"
            logged = captured.getvalue() if hasattr(captured, "getvalue") else ""
        if ok:
            return True, ""
        lines = [line.strip() for line in str(logged).splitlines() if line.strip()]
        reason = raised or (lines[-1] if lines else "the service did not accept it")
        return False, scrub(" ".join(reason.split()), self.secrets)[:500]
