"""The configuration file's records (config layer): one pydantic definition per section entry.

Each model is one entry as the file writes it (a repository, a policy, a job); unknown keys
are refused (`extra="forbid"`). A field's checks raise `PydanticCustomError` of type
``config`` whose message is the sentence shown after the key (``must be ...``). Cross-references
(which policy, which repository) are checked later, by `stackvault.config.resolve`.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from stackvault.config.durations import Span, parse_span
from stackvault.config.schedule import Schedule, parse_schedule
from stackvault.errors import UsageError
from stackvault.policy.duration import Duration, parse_duration
from stackvault.policy.retention import UNLIMITED

STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
)
"""The S3 storage classes a repository may name (`stackvault.store.s3options` refuses the
archive classes GLACIER and DEEP_ARCHIVE, whose objects cannot be read without a restore)."""

NotifyEvent = Literal[
    "failure",
    "partial",
    "recovered",
    "rpo-breach",
    "at-risk",
    "check-failure",
    "drill-failure",
    "lease-takeover",
    "digest",
]
"""What a notification target may ask to be told: a run that ``failure`` (made no snapshot)
or was ``partial``; the first success after those (``recovered``); a job whose newest
restore point is older than its RPO (``rpo-breach``) or will be before its next run can end
(``at-risk``); a failed check or drill; another daemon's run of a job taken over
(``lease-takeover``); the daily summary (``digest``)."""
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)

INLINE_URL = (
    "an inline URL is not accepted (notification URLs hold credentials): give {key}_env "
    "(an environment variable), {key}_file (a file holding it) or {key}_command (a command "
    "printing it)"
)


def problem(message: str) -> PydanticCustomError:
    """A field's error: ``message`` is printed after the key, as it is."""
    return PydanticCustomError("config", "{message}", {"message": message})


def _must(message: str) -> str:
    """``expected X`` (a parser's message) as ``must be X``; other messages as they are."""
    return "must be " + message[len("expected ") :] if message.startswith("expected ") else message


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise problem("must be a non-empty string")
    return value


def _texts(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise problem("must be a list of non-empty strings")
    return list(value)


def _command(value: object) -> str | list[str]:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise problem("must be a command: a string (run by sh -c) or a list of arguments")


def _span(value: object) -> Span:
    if not isinstance(value, str):
        raise problem("must be a duration like 5min, 2h or 7d (as a string)")
    try:
        return parse_span(value)
    except UsageError as exc:
        raise problem(_must(exc.message)) from None


def _calendar(value: object) -> Duration:
    if not isinstance(value, str):
        raise problem("must be a duration like 2d, 2w, 6m or 1y (as a string)")
    try:
        return parse_duration(value)
    except UsageError as exc:
        raise problem(_must(exc.message)) from None


def _schedule(value: object) -> Schedule:
    if not isinstance(value, str):
        raise problem("must be a cron expression (as a string), e.g. '0 2 * * *'")
    try:
        return parse_schedule(value)
    except UsageError as exc:
        raise problem(_must(exc.message)) from None


def _count(value: object) -> int:
    if value == "unlimited":
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise problem("must be a whole number >= 0 or 'unlimited'")
    return value


def _storage_class(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.upper() not in STORAGE_CLASSES:
        raise problem(f"must be one of {', '.join(STORAGE_CLASSES)}")
    return value.upper()


def _event(value: object) -> NotifyEvent:
    if isinstance(value, str) and value in NOTIFY_EVENTS:
        return value
    if not isinstance(value, str):
        raise problem(f"must be an event name: {', '.join(NOTIFY_EVENTS)}")
    close = difflib.get_close_matches(value, NOTIFY_EVENTS, n=1, cutoff=0.6)
    if close:
        raise problem(f"unknown event {value!r}; did you mean {close[0]!r}?")
    raise problem(f"unknown event {value!r} (known: {', '.join(NOTIFY_EVENTS)})")


def _events(value: object) -> object:
    """The list's shape (its items are checked one by one, each error at its index)."""
    if not isinstance(value, list) or not value:
        raise problem(f"must be a list of events, some of: {', '.join(NOTIFY_EVENTS)}")
    return value


def _directory(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise problem("must be an absolute directory path")
    return value


def _inline(key: str) -> Any:
    """A validator that refuses any value: an inline secret (``url:``, ``ping_url:``)."""

    def refuse(value: object) -> None:
        raise problem(INLINE_URL.format(key=key))

    return PlainValidator(refuse)


_SUBSET = re.compile(r"^\s*(?:(\d+)\s*/\s*(\d+)|(\d+(?:\.\d+)?)\s*%)\s*$")


class DataSubset(BaseModel):
    """How much of the packs a check reads: ``text`` as written (``1/7``, ``10%``) and the
    fraction in (0, 1]."""

    model_config = ConfigDict(frozen=True)
    text: str
    fraction: float

    @property
    def percent(self) -> str:
        """The share as `check --read-data-subset` takes it (``14.2857%``)."""
        return f"{self.fraction * 100:.4g}%"


def _subset(value: object) -> DataSubset | None:
    if value is None or value == "none" or value is False:
        return None
    match = _SUBSET.match(value) if isinstance(value, str) else None
    if match and match[3] is not None:
        fraction = float(match[3]) / 100
    elif match and int(match[2]) > 0:
        fraction = int(match[1]) / int(match[2])
    else:
        fraction = 0.0
    if not 0 < fraction <= 1:
        raise problem("must be a share of the packs like 1/7 or 10% (at most all), or none")
    assert isinstance(value, str)
    return DataSubset(text=value.strip(), fraction=fraction)


Text = Annotated[str, PlainValidator(_text)]
Texts = Annotated[list[str], PlainValidator(_texts)]
Command = Annotated[str | list[str], PlainValidator(_command)]
SpanValue = Annotated[Span, PlainValidator(_span)]
CalendarValue = Annotated[Duration, PlainValidator(_calendar)]
ScheduleValue = Annotated[Schedule, PlainValidator(_schedule)]
Count = Annotated[int, PlainValidator(_count)]
Subset = Annotated[DataSubset | None, PlainValidator(_subset)]


class Entry(BaseModel):
    """A record of the file: unknown keys are errors; a null entry reads as an empty one."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, data: Any) -> Any:
        return {} if data is None else data


def references(entry: BaseModel, key: str, *, required: bool) -> None:
    """Check that ``entry`` gives exactly one (``required``) or at most one of ``{key}_file``,
    ``{key}_env``, ``{key}_command``; a `problem` naming them otherwise."""
    names = [f"{key}_file", f"{key}_env", f"{key}_command"]
    given = [n for n in names if getattr(entry, n) is not None]
    if len(given) > 1 or (required and not given):
        what = "none" if not given else " and ".join(given)
        need = "exactly one" if required else "at most one"
        raise problem(f"needs {need} of {', '.join(names)} (given: {what})")


class RepositoryEntry(Entry):
    """``repositories.NAME``: where, and how to get the password (by reference only)."""

    url: Text
    password_file: Text | None = None
    password_env: Text | None = None
    password_command: Command | None = None
    storage_class: Annotated[str | None, PlainValidator(_storage_class)] = None

    @model_validator(mode="after")
    def _one_password(self) -> RepositoryEntry:
        references(self, "password", required=True)
        return self


class RetentionEntry(Entry):
    """The keep rules of one repository, as `forget`'s ``--keep-*`` options."""

    model_config = ConfigDict(alias_generator=lambda n: n.replace("_", "-"))

    keep_within: CalendarValue | None = None
    keep_within_hourly: CalendarValue | None = None
    keep_within_daily: CalendarValue | None = None
    keep_within_weekly: CalendarValue | None = None
    keep_within_monthly: CalendarValue | None = None
    keep_within_yearly: CalendarValue | None = None
    keep_last: Count | None = None
    keep_hourly: Count | None = None
    keep_daily: Count | None = None
    keep_weekly: Count | None = None
    keep_monthly: Count | None = None
    keep_yearly: Count | None = None
    keep_tag: Texts = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_rule(self) -> RetentionEntry:
        if not self.rules():
            raise problem("gives no keep rule (keep-within, keep-daily ...), so would keep nothing")
        return self

    def rules(self) -> dict[str, str]:
        """The rules given, as ``{"keep-daily": "7", ...}`` in the order above (``keep-tag``:
        its sets separated by spaces)."""
        out: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None or value == []:
                continue
            shown = "unlimited" if value == UNLIMITED else value
            out[field.alias or name] = " ".join(shown) if isinstance(shown, list) else str(shown)
        return out


class CheckEntry(Entry):
    """``check``: how often the repository is verified and how much of its data is read."""

    every: SpanValue | None = None
    read_data_subset: Subset = None


def _drill_snapshot(value: object) -> str:
    if value == "latest":
        return "latest"
    if isinstance(value, str) and value.startswith("random-within="):
        try:
            parse_duration(value.removeprefix("random-within="))
        except UsageError:
            pass
        else:
            return value
    raise problem("must be latest or random-within=DURATION (e.g. random-within=30d)")


DrillSnapshotValue = Annotated[str, PlainValidator(_drill_snapshot)]


class DrillEntry(Entry):
    """``drill``: restore drills of a stack job (`stackvault drill`): how often ``serve``
    runs one, which snapshot it restores, how long one may take."""

    every: SpanValue | None = None
    snapshot: DrillSnapshotValue | None = None
    window: SpanValue | None = None


class HooksEntry(Entry):
    """``hooks``: commands run before, after (on success) and on failure of a job's run."""

    before: Command | None = None
    after: Command | None = None
    on_failure: Command | None = None


class PolicyEntry(Entry):
    """``policies.NAME``: objectives and how they are met; every key may be left to
    ``extends`` (or, for a built-in tier's name, to the built-in tier)."""

    extends: Text | None = None
    rpo: SpanValue | None = None
    rto: SpanValue | None = None
    schedule: ScheduleValue | None = None
    window: SpanValue | None = None
    retention: dict[str, RetentionEntry] | None = None
    check: CheckEntry | None = None
    drill: DrillEntry | None = None


class JobEntry(Entry):
    """``jobs.NAME``: what to protect, under which policy, into which repositories."""

    stack_plan: Text | None = None
    sources: Texts = Field(default_factory=list)
    paths: Texts = Field(default_factory=list)
    policy: Text
    repository: Text
    copies: Texts = Field(default_factory=list)
    hooks: HooksEntry | None = None
    schedule: ScheduleValue | None = None
    window: SpanValue | None = None
    retention: dict[str, RetentionEntry] | None = None
    check: CheckEntry | None = None
    drill: DrillEntry | None = None
    ping_url: Annotated[None, _inline("ping_url")] = None
    ping_url_file: Text | None = None
    ping_url_env: Text | None = None
    ping_url_command: Command | None = None

    @model_validator(mode="after")
    def _one_ping(self) -> JobEntry:
        references(self, "ping_url", required=False)
        return self

    @model_validator(mode="after")
    def _something(self) -> JobEntry:
        if self.stack_plan is None and not self.sources and not self.paths:
            raise problem("protects nothing: give stack_plan, sources or paths")
        return self


Event = Annotated[NotifyEvent, PlainValidator(_event)]
Events = Annotated[list[Event], BeforeValidator(_events)]


class NotifyTargetEntry(Entry):
    """``notify.targets.NAME``: an Apprise URL, by reference only (it holds the service's
    credentials), and the events it is sent (left out: every event but ``digest``)."""

    url: Annotated[None, _inline("url")] = None
    url_file: Text | None = None
    url_env: Text | None = None
    url_command: Command | None = None
    events: Events | None = None

    @model_validator(mode="after")
    def _one_url(self) -> NotifyTargetEntry:
        references(self, "url", required=True)
        return self


class NotifyEntry(Entry):
    """``notify``: where notifications go, how often a job that keeps failing is recalled
    (``remind_every``), when the daily ``digest`` is due (a cron expression), and where this
    host remembers what it sent (``state_dir``, an absolute directory)."""

    targets: dict[str, NotifyTargetEntry] = Field(default_factory=dict)
    remind_every: SpanValue | None = None
    digest: ScheduleValue | None = None
    state_dir: Annotated[str | None, PlainValidator(_directory)] = None
