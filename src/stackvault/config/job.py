"""A job as it will run (config layer): every value resolved, each with where it came from.

`EffectiveJob` is what ``run JOB``, the daemon and ``status`` read; `Sourced` pairs a value
with its provenance: ``built-in tier2``, ``policy nightly``, ``job dify``, ``derived from rpo``
(a schedule), ``derived from rpo and schedule`` (a window).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from stackvault.config.durations import Span
from stackvault.config.model import DataSubset
from stackvault.config.repository import PasswordRef, RepositorySettings
from stackvault.config.schedule import Schedule
from stackvault.policy.duration import parse_duration
from stackvault.policy.retention import UNLIMITED, RetentionPolicy
from stackvault.redact import redact

T = TypeVar("T")


@dataclass(frozen=True)
class Sourced(Generic[T]):
    """A value and where it came from."""

    value: T
    source: str


@dataclass(frozen=True)
class Retention:
    """The keep rules of one repository: ``rules`` as written (``{"keep-daily": "7"}``;
    ``keep-tag``: its tag sets separated by spaces, each set's tags by commas)."""

    rules: dict[str, str]

    def policy(self) -> RetentionPolicy:
        """The rules as `forget` applies them."""
        counts: dict[str, int] = {}
        spans: dict[str, object] = {}
        tags: tuple[frozenset[str], ...] = ()
        for key, text in self.rules.items():
            name = key.removeprefix("keep-").replace("-", "_")
            if name == "tag":
                tags = tuple(frozenset(t.split(",")) for t in text.split())
            elif name.startswith("within"):
                spans[name] = parse_duration(text)
            else:
                counts[name] = UNLIMITED if text == "unlimited" else int(text)
        return RetentionPolicy(**counts, **spans, tags=tags)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CheckSettings:
    """How often the job's repositories are checked, and how much of their data is read
    (None: only the structure, no pack data)."""

    every: Sourced[Span]
    read_data_subset: Sourced[DataSubset | None]


@dataclass(frozen=True)
class DrillSettings:
    """Restore drills of the job (`stackvault drill`): ``every`` None when ``serve`` runs none
    (a drill by hand is always possible); ``snapshot``: ``latest`` or
    ``random-within=DURATION``; ``window``: how long a drill may take (default: the RTO)."""

    every: Sourced[Span] | None
    snapshot: Sourced[str]
    window: Sourced[Span]


@dataclass(frozen=True)
class Hooks:
    """Commands (argv; a string of the file is ``sh -c TEXT``) around a run."""

    before: tuple[str, ...] | None = None
    after: tuple[str, ...] | None = None
    on_failure: tuple[str, ...] | None = None
    source: str = ""


def hook_text(argv: tuple[str, ...]) -> str:
    """A hook as a person reads it: the string of ``sh -c``, else the quoted argv."""
    return argv[2] if argv[:2] == ("sh", "-c") and len(argv) == 3 else shlex.join(argv)


@dataclass(frozen=True)
class EffectiveJob:
    """``jobs.NAME`` with its policy applied. ``retention`` holds every repository of the job
    (primary first); ``stack_plan`` is an absolute path (relative ones are taken from the
    configuration file's directory)."""

    name: str
    policy: str
    repository: RepositorySettings
    copies: tuple[RepositorySettings, ...]
    rpo: Sourced[Span]
    rto: Sourced[Span]
    schedule: Sourced[Schedule]
    window: Sourced[Span]
    retention: dict[str, Sourced[Retention]]
    check: CheckSettings
    drill: DrillSettings
    hooks: Hooks = field(default_factory=Hooks)
    stack_plan: str | None = None
    sources: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    ping: PasswordRef | None = None
    """The dead-man URL (``ping_url_env``, ``ping_url_file``, ``ping_url_command``): pinged
    at the start of each run, on success and on failure (`stackvault.ops.notify`)."""

    def ping_url(self) -> str | None:
        """The dead-man URL, read now (None: the job has none); `ConfigError` naming the
        reference, never the URL."""
        if self.ping is None:
            return None
        raw = self.ping.read(subject=f"job {self.name}: ", what="ping URL", key="ping_url")
        return raw.decode("utf-8", "surrogateescape").strip()

    @property
    def repositories(self) -> tuple[RepositorySettings, ...]:
        """The primary, then the copies."""
        return (self.repository, *self.copies)

    def to_dict(self) -> dict[str, object]:
        """The job as JSON (``config show --json``): values with their ``source``; locations
        redacted; passwords only by reference."""

        def sourced(item: Sourced[T], value: object) -> dict[str, object]:
            return {"value": value, "source": item.source}

        subset = self.check.read_data_subset
        return {
            "job": self.name,
            "policy": self.policy,
            "stack_plan": self.stack_plan,
            "sources": [redact(s) for s in self.sources],
            "paths": list(self.paths),
            "repositories": [
                {
                    "name": r.name,
                    "role": "primary" if r is self.repository else "copy",
                    "location": r.shown,
                    "storage_class": r.storage_class,
                    "password": r.password_ref.describe(),
                }
                for r in self.repositories
            ],
            "rpo": sourced(self.rpo, str(self.rpo.value)),
            "rto": sourced(self.rto, str(self.rto.value)),
            "schedule": {
                **sourced(self.schedule, self.schedule.value.cron),
                "longest_gap_seconds": self.schedule.value.longest_gap,
            },
            "window": sourced(self.window, str(self.window.value)),
            "retention": {
                name: sourced(item, item.value.rules) for name, item in self.retention.items()
            },
            "check": {
                "every": sourced(self.check.every, str(self.check.every.value)),
                "read_data_subset": sourced(
                    subset, subset.value.text if subset.value is not None else None
                ),
            },
            "drill": {
                "every": (
                    sourced(self.drill.every, str(self.drill.every.value))
                    if self.drill.every is not None
                    else None
                ),
                "snapshot": sourced(self.drill.snapshot, self.drill.snapshot.value),
                "window": sourced(self.drill.window, str(self.drill.window.value)),
            },
            "hooks": {
                "before": list(self.hooks.before) if self.hooks.before else None,
                "after": list(self.hooks.after) if self.hooks.after else None,
                "on_failure": list(self.hooks.on_failure) if self.hooks.on_failure else None,
                "source": self.hooks.source or None,
            },
            "ping": self.ping.describe() if self.ping is not None else None,
        }
