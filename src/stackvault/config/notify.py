"""Notifications of the configuration (config layer): the ``notify:`` section resolved.

`NotifySettings` is what the operations layer's notifier reads (`stackvault.ops.notify`):
the targets, each an Apprise URL named by reference (``url_env``, ``url_file`` or
``url_command``, as repository passwords: the URL holds the service's credentials) with the
events it wants; how often a job that keeps failing is recalled (``remind_every``); when the
daily digest is due (``digest``, a cron expression read in UTC). A URL is read only when
the notifier is built (`NotifyTarget.url`), never by ``config check``, and never shown.
``state_dir`` (optional) is where the notifier keeps what it sent (``notify-state.json``),
so that runs whose records could not be written (a repository that is down) are not told
of as new failures each time; without it the run records alone decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stackvault.config.durations import Span, parse_span
from stackvault.config.model import NOTIFY_EVENTS, NotifyEntry, NotifyEvent
from stackvault.config.repository import PasswordRef, secret_ref
from stackvault.config.schedule import Schedule, parse_schedule

DEFAULT_REMIND_EVERY = "6h"
"""How often a job that keeps failing is recalled when ``remind_every`` is left out."""
DEFAULT_DIGEST = "0 8 * * *"
"""When the digest is due when ``digest`` is left out: daily at 08:00 UTC."""
DEFAULT_EVENTS: tuple[NotifyEvent, ...] = tuple(e for e in NOTIFY_EVENTS if e != "digest")
"""The events of a target that does not list its own: all but the digest."""


@dataclass(frozen=True)
class NotifyTarget:
    """``notify.targets.NAME``: the URL's reference and the events sent to it."""

    name: str
    url_ref: PasswordRef
    events: tuple[NotifyEvent, ...] = DEFAULT_EVENTS

    def wants(self, event: str) -> bool:
        """True if ``event`` is one of the target's events."""
        return event in self.events

    def url(self) -> str:
        """The Apprise URL, read now; `ConfigError` naming the reference (never the URL)."""
        raw = self.url_ref.read(subject=f"notify target {self.name}: ", what="URL", key="url")
        return raw.decode("utf-8", "surrogateescape").strip()

    def to_dict(self) -> dict[str, object]:
        """``{"name", "url" (the reference, never the URL), "events"}``."""
        return {"name": self.name, "url": self.url_ref.describe(), "events": list(self.events)}


@dataclass(frozen=True)
class NotifySettings:
    """The ``notify:`` section: no targets when it is left out."""

    targets: tuple[NotifyTarget, ...] = ()
    remind_every: Span = field(default_factory=lambda: parse_span(DEFAULT_REMIND_EVERY))
    digest: Schedule = field(default_factory=lambda: parse_schedule(DEFAULT_DIGEST))
    state_dir: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The section as JSON, URLs only by reference."""
        return {
            "targets": [t.to_dict() for t in self.targets],
            "remind_every": str(self.remind_every),
            "digest": self.digest.cron,
            "state_dir": self.state_dir,
        }


def notify_settings(entry: NotifyEntry | None) -> NotifySettings:
    """The settings of a valid ``notify:`` entry (None: the section is left out)."""
    if entry is None:
        return NotifySettings()
    targets = []
    for name, target in entry.targets.items():
        ref = secret_ref(target.url_file, target.url_env, target.url_command)
        assert ref is not None  # the entry gives exactly one (`NotifyTargetEntry`)
        events = tuple(dict.fromkeys(target.events)) if target.events else DEFAULT_EVENTS
        targets.append(NotifyTarget(name, ref, events))
    defaults = NotifySettings()
    return NotifySettings(
        targets=tuple(targets),
        remind_every=entry.remind_every or defaults.remind_every,
        digest=entry.digest or defaults.digest,
        state_dir=entry.state_dir,
    )
