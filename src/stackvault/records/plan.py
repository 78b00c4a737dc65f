"""The stack plan (records layer): what a stack backup captures, how, and what it stops.

``stack discover`` writes the plan as a commented YAML file for the operator to review and
edit; ``stack preflight`` and ``stack backup`` read it back; every stack snapshot stores it in
its manifest (`stackvault.records.stack`). The models below are its one definition, and their
fields give

- its JSON form, `Plan.to_dict` (the manifest's ``plan``; a plan is always written whole);
- its file: `InFile` says where each field goes and how, and a field's *description* is the
  comment written above it (`stackvault.stack.plan.render_plan` writes the file);
- the checks of a plan file, `plan_from_dict`: every problem at once, each named by its key
  (``services.api.role must be one of ...``), in one `UsageError`. A file's unknown keys are
  ignored, and so are the fields discovery derives (a service's ``reason``, a source's or a
  path's ``note``), which the file shows as comments.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from stackvault.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Mapping

PLAN_VERSION = 1

# The roles of a service (`stackvault.stack.classify` decides them): its role decides how a
# stack backup captures it.
POSTGRES = "postgres"
MYSQL = "mysql"
REDIS = "redis"
VECTOR_STORE = "vector-store"
OBJECT_STORE = "object-store"
APP = "app"
STATELESS = "stateless"
ROLES = (POSTGRES, MYSQL, REDIS, VECTOR_STORE, OBJECT_STORE, APP, STATELESS)
CONSISTENCY = ("strict", "online")
QUIESCE = ("stop", "pause")
"""How a strict cut quiesces a service marked ``stop: true``: ``stop`` (consistent for any
service) or ``pause`` (``docker pause``: frozen, consistent only for stores that survive a
crash; never a database service, which is dumped through its running container)."""
HOOK_PLACES = ("container", "host")
HOOK_MODES = ("essential", "optional")


# --- where a plan field goes in the plan file --------------------------------------------------


@dataclass(frozen=True)
class InFile:
    """How a plan field is written in the plan file. Its description, if any, is the comment
    above its key, line for line.

    Top-level fields are written in the order of `position`, each in its `style`: ``inline``
    (``key: JSON``), ``mapping`` (a record per name), ``records`` (a list of records, one key a
    line), ``flow`` (a list of records, one a line) or ``lines`` (a list of values, one a line);
    ``gap`` puts a blank line before, ``if_any`` leaves an empty one out. A record's fields are
    written in their order, ``number`` giving the format of a number, ``if_any`` leaving an
    empty (null) one out. A field that is not a
    `key` of the file is not read from one either: a name the file's structure gives, or what
    discovery derived, written as the trailing comment of field `comment_of` (``always``: even
    when empty)."""

    position: int = 0
    style: str = "inline"
    gap: bool = False
    if_any: bool = False
    number: str = ""
    key: bool = True
    comment_of: str | None = None
    always: bool = False


def in_file(model: type[BaseModel], name: str) -> InFile:
    """How field ``name`` of ``model`` is written in the plan file."""
    found = [m for m in model.model_fields[name].metadata if isinstance(m, InFile)]
    return found[0] if found else InFile()


def file_fields(model: type[BaseModel]) -> list[tuple[str, InFile]]:
    """The fields of ``model`` in the order of the plan file: the plan's by position, a
    record's as declared."""
    fields = [(name, in_file(model, name)) for name in model.model_fields]
    return sorted(fields, key=lambda f: f[1].position)


# --- kinds of plan fields: each checks a value and says what it must be -----------------------


def _must(what: str) -> PydanticCustomError:
    return PydanticCustomError("plan", "must be " + what)


def _text(value: object) -> str:
    if isinstance(value, str) and value:
        return value
    raise _must("a non-empty string")


def _optional_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _must("a string or null")


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _must("true or false")


def _texts(value: object) -> list[str]:
    value = value or []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _must("a list of strings")


def _command(value: object) -> list[str]:
    """A command as an argument list; a string is run by ``sh -c``."""
    if value is None or value == []:
        return []
    if isinstance(value, str) and value.strip():
        return ["sh", "-c", value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise _must("a command: a string or a list of strings")


def _positive(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _must("a positive number")
    return float(value)


def _port(value: object) -> int | None:
    if value is None or (
        isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
    ):
        return value
    raise _must("a port number (1-65535) or null")


PASSWORD_FROM = re.compile(r"env:[A-Za-z_][A-Za-z0-9_]*|arg|file:.+|none")
"""Where a database's password is read at each backup (never the value): ``env:NAME`` (a
variable of the service's container), ``arg`` (the server's own command line, Redis'
``--requirepass``), ``file:PATH`` (a file in the container: for Redis its configuration file's
``requirepass``, for PostgreSQL and MySQL the password itself, as ``*_PASSWORD_FILE`` and
Docker secrets give it) or ``none``."""


def _password_from(value: object) -> str | None:
    if value is None or (isinstance(value, str) and PASSWORD_FROM.fullmatch(value)):
        return value
    raise _must("env:NAME, arg, file:PATH, none or null")


def _version(value: object) -> int:
    if value == PLAN_VERSION:
        return PLAN_VERSION
    raise _must(str(PLAN_VERSION))


def _one_of(choices: tuple[str, ...], what: str, *, text: bool = True) -> PlainValidator:
    """One of ``choices``: a non-empty string, or (not ``text``) any value as text."""

    def check(value: object) -> str:
        chosen = _text(value) if text else str(value)
        if chosen in choices:
            return chosen
        raise _must(what)

    return PlainValidator(check)


def _absolute(value: object) -> str:
    if os.path.isabs(_text(value)):
        return str(value)
    raise _must("absolute")


def _http_url(value: object) -> str:
    if _text(value).startswith(("http://", "https://")):
        return str(value)
    raise _must("an http:// or https:// URL")


def _status(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    raise _must("an HTTP status code")


def _mapping(value: object) -> dict[str, Any]:
    value = value or {}
    if isinstance(value, dict):
        return value
    raise _must("a mapping")


def _records(value: object) -> list[Any]:
    value = value or []
    if isinstance(value, list):
        return value
    raise _must("a list")


def _named(value: object) -> dict[str, Any]:
    """The services mapping, by name (YAML may give a number as a name)."""
    return {str(name): spec for name, spec in _mapping(value).items()}


Text = Annotated[str, PlainValidator(_text)]
OptionalText = Annotated[str | None, PlainValidator(_optional_text)]
Flag = Annotated[bool, PlainValidator(_flag)]
Texts = Annotated[list[str], PlainValidator(_texts)]
Command = Annotated[list[str], PlainValidator(_command)]


class Record(BaseModel):
    """A stored record (the plan's and the manifest's): keys this version does not know are
    kept (and written back after the known ones); an absent or null record reads as an empty
    one, an absent required key as null (so that its check names it). From a plan file, only
    its keys are read (`InFile.key`)."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _as_stored(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, BaseModel):
            return data
        if not data:
            data = {}
        if not isinstance(data, dict):
            return data  # pydantic says: must be a mapping
        if _reading_file(info):
            data = {k: v for k, v in data.items() if k in _file_keys(cls)}
        else:
            data = dict(data)
        for name in _required(cls):
            data.setdefault(name, None)
        return data


@functools.cache
def _file_keys(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(n for n in model.model_fields if in_file(model, n).key)


@functools.cache
def _required(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(n for n, f in model.model_fields.items() if f.is_required())


def _reading_file(info: ValidationInfo) -> bool:
    return bool(isinstance(info.context, dict) and info.context.get("file"))


def _service_ref(label: str = "", by: str = "") -> AfterValidator:
    """A field that names a service: it must be under the plan's ``services``. The error names
    the record as ``LABEL VALUE`` (its field `by`: ``source db``), or by its key."""

    def check(name: str | None, info: ValidationInfo) -> str | None:
        known = info.context.get("services") if isinstance(info.context, dict) else None
        if name is None or known is None or name in known:
            return name
        subject = f"{label} {info.data[by]}" if label and by in info.data else None
        raise PydanticCustomError(
            "plan",
            "names service {service}, which is not under services",
            {"service": repr(name)} | ({"subject": subject} if subject else {"of_record": True}),
        )

    return AfterValidator(check)


# --- the plan ---------------------------------------------------------------------------------


def _no_paused_database(quiesce: str, info: ValidationInfo) -> str:
    """A database service is dumped through its running container: it cannot be paused."""
    if quiesce == "pause" and info.data.get("role") in (POSTGRES, MYSQL, REDIS):
        raise _must("stop for a database service (it is dumped through its container)")
    return quiesce


class ServicePlan(Record):
    """One service of the stack: how it is captured (its role) and whether the cut stops it."""

    name: Annotated[str, Field(exclude=True), InFile(key=False)] = ""
    """The service's name: its key under ``services``."""
    role: Annotated[str, _one_of(ROLES, "one of " + ", ".join(ROLES))]
    reason: Annotated[str, InFile(key=False, comment_of="role", always=True)] = ""
    """Why discovery gave it its role (shown as a comment; not read from a file)."""
    image: Text
    digest: OptionalText = None
    stop: Flag = False
    """Stopped during the cut (``strict`` consistency)."""
    quiesce: Annotated[
        str, _one_of(QUIESCE, "stop or pause", text=False), AfterValidator(_no_paused_database)
    ] = "stop"
    """How the cut quiesces it when ``stop`` is true: ``stop`` or ``pause`` (`QUIESCE`)."""
    depends_on: Texts = []


class SourcePlan(Record):
    """A source captured by its own tool into an artifact of the snapshot. For a database
    service, how its server is reached in its container - as discovery read it from how the
    server was started, or as the operator corrected it - is added to ``url`` at each backup,
    restore and preflight (`stackvault.stack.reach.source_url`)."""

    name: Text
    url: Text
    service: Annotated[Text, _service_ref("source", by="name")]
    note: Annotated[str, InFile(key=False, comment_of="service")] = ""
    port: Annotated[int | None, PlainValidator(_port), InFile(if_any=True)] = None
    """The port the server listens on in its container."""
    socket: Annotated[OptionalText, InFile(if_any=True)] = None
    """PostgreSQL: the directory of its unix socket; MySQL: the socket file (in the
    container)."""
    password_from: Annotated[str | None, PlainValidator(_password_from), InFile(if_any=True)] = None
    """Where the password is read (`PASSWORD_FROM`); null: the source's default."""
    found: Annotated[str, InFile(key=False, comment_of="port")] = ""
    """Where discovery read the port and socket (shown as a comment; not read from a file)."""


class PathPlan(Record):
    """A data directory (bind mount) captured as files."""

    path: Annotated[str, PlainValidator(_absolute)]
    service: Annotated[Text, _service_ref("path", by="path")]
    exclude: Texts = []
    note: Annotated[str, InFile(key=False, comment_of="service")] = ""


def _not_both_empty(after: list[str], info: ValidationInfo) -> list[str]:
    """A hook runs something: checked with ``after`` (so with the hook's other problems)."""
    if not after and info.data.get("before") == []:
        raise PydanticCustomError("plan", "has neither before nor after", {"of_record": True})
    return after


class HookPlan(Record):
    """Commands around the cut for one service: ``before`` runs before anything is stopped or
    read, ``after`` once everything is read and the services run again - and also as the undo
    when the cut fails after ``before`` succeeded. ``essential``: a failing ``before`` aborts
    the backup (every undo runs); ``optional``: a warning, and the backup goes on."""

    service: Annotated[Text, _service_ref()]
    before: Command = []
    after: Annotated[Command, AfterValidator(_not_both_empty), Field(validate_default=True)] = []
    where: Annotated[str, _one_of(HOOK_PLACES, "container or host", text=False)] = "container"
    """``container`` (through the Engine API, in the service's container) or ``host``."""
    timeout: Annotated[float, PlainValidator(_positive), InFile(number="g")] = 60.0
    mode: Annotated[str, _one_of(HOOK_MODES, "essential or optional", text=False)] = "essential"


class ProbePlan(Record):
    """An HTTP check after a restore: ``url`` must answer ``status`` within the wait."""

    url: Annotated[str, PlainValidator(_http_url)]
    status: Annotated[int, PlainValidator(_status)] = 200
    service: Annotated[OptionalText, _service_ref()] = None


def _some_command(value: object) -> list[str]:
    if command := _command(value):
        return command
    raise _must("a command: a string or a list of strings")


class CommandProbePlan(Record):
    """A command a restore drill runs in ``service``'s container (in the drill's network
    namespace), given ``STACKVAULT_PROBE_SERVICE``, ``STACKVAULT_PROBE_HOST`` (127.0.0.1)
    and ``STACKVAULT_PROBE_PORT`` (``port``, else that of the service's database source):
    it passes on exit 0 (`stackvault.stack.drill.commands`)."""

    service: Annotated[Text, _service_ref()]
    command: Annotated[list[str], PlainValidator(_some_command)]
    """A string is run by ``sh -c``; a list is the argument list."""
    port: Annotated[int | None, PlainValidator(_port), InFile(if_any=True)] = None
    timeout: Annotated[float, PlainValidator(_positive), InFile(number="g")] = 60.0


def _unique_names(sources: list[SourcePlan]) -> list[SourcePlan]:
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise PydanticCustomError("plan", "two sources have the same name", {"subject": ""})
    return sources


class Plan(Record):
    """What a stack backup captures, how, and what it stops: the single input of ``stack
    preflight`` and ``stack backup``, stored in the stack manifest."""

    version: Annotated[int, PlainValidator(_version), InFile(0)]
    project: Annotated[Text, InFile(1)]
    directory: Annotated[OptionalText, InFile(2)] = None
    compose_files: Annotated[Texts, InFile(5)] = []
    preset: Annotated[Text, InFile(3)]
    consistency: Annotated[
        str,
        _one_of(CONSISTENCY, "strict or online"),
        InFile(4),
        Field(
            description="strict: the services marked stop: true are stopped for the cut "
            "(the report says for\nhow long); online: nothing stops, each part is consistent "
            "on its own"
        ),
    ]
    services: Annotated[
        dict[str, ServicePlan],
        BeforeValidator(_named),
        InFile(6, "mapping", gap=True),
        Field(
            description="role decides the capture: postgres/mysql/redis by their tools inside "
            "the container,\napp/vector-store/object-store by their mounts, stateless not at all\n"
            "quiesce (for stop: true in a strict cut): stop - stopped, then started again: "
            "consistent for\n  any service; pause - frozen (docker pause) while it is read: "
            "no stop and start, down\n  for the capture time alone, but what it wrote is as "
            "after a crash, so only for stores\n  that survive one (a write-ahead log); "
            "refused for postgres/mysql/redis services"
        ),
    ] = {}
    sources: Annotated[
        list[SourcePlan],
        BeforeValidator(_records),
        AfterValidator(_unique_names),
        InFile(7, "records", gap=True),
        Field(
            description="captured by their own tools, each an artifact of the snapshot; for a "
            "database, how its\nserver is reached in its container: port, socket (PostgreSQL: "
            "its directory; MySQL: the\nfile) and password_from (where the password is read at "
            "each backup, never the value:\nenv:NAME a variable of the container, arg the "
            "server's --requirepass, file:PATH its\nredis.conf, none) - correct them here if "
            "discovery got them wrong"
        ),
    ] = []
    paths: Annotated[
        list[PathPlan],
        BeforeValidator(_records),
        InFile(8, "records", gap=True),
        Field(description="data directories (bind mounts), captured as files"),
    ] = []
    config: Annotated[
        Texts,
        InFile(9, "lines", gap=True),
        Field(description="configuration files and directories, captured as files"),
    ] = []
    secrets: Annotated[
        Texts,
        InFile(10, gap=True),
        Field(
            description="names of the secrets in the configuration (values are never written here)"
        ),
    ] = []
    warnings: Annotated[
        Texts,
        InFile(14, "lines", gap=True, if_any=True),
        Field(description="warnings found while discovering"),
    ] = []
    hooks: Annotated[
        list[HookPlan],
        BeforeValidator(_records),
        InFile(12, "records", gap=True),
        Field(
            description="commands around the cut, e.g. an application's pause/resume "
            "endpoint:\n"
            "  - service: api\n"
            '    before: ["curl", "-fsS", "-X", "POST", "http://127.0.0.1:5001/pause"]\n'
            '    after: ["curl", "-fsS", "-X", "POST", "http://127.0.0.1:5001/resume"]\n'
            "    where: container      # or host\n"
            "    timeout: 60           # seconds\n"
            "    mode: essential       # a failing before aborts the backup; optional: warn"
        ),
    ] = []
    probes: Annotated[
        list[ProbePlan],
        BeforeValidator(_records),
        InFile(13, "flow", gap=True),
        Field(
            description="HTTP checks after a restore, e.g. - {url: "
            "http://127.0.0.1/console/api/setup,\n" + " " * 37 + "status: 200, service: api}"
        ),
    ] = []
    probe_commands: Annotated[
        list[CommandProbePlan],
        BeforeValidator(_records),
        InFile(13, "records", gap=True, if_any=True),
        Field(
            description="commands a restore drill runs inside the drilled stack, passing on "
            "exit 0 (given\nSTACKVAULT_PROBE_HOST, STACKVAULT_PROBE_PORT and "
            "STACKVAULT_PROBE_SERVICE), e.g.\n"
            "  - service: api\n"
            '    command: curl -fsS "http://$STACKVAULT_PROBE_HOST:5001/health"\n'
            "    port: 5001            # optional\n"
            "    timeout: 60           # seconds"
        ),
    ] = []
    facts: Annotated[
        dict[str, Any],
        PlainValidator(_mapping),
        InFile(11, gap=True),
        Field(description="what the preset knows and checks"),
    ] = {}
    """Preset knowledge checked by preflight and after restore (``databases``: names that
    must exist, ``privkeys``: the storage directory holding per-tenant keys, ...)."""

    @model_validator(mode="after")
    def _name_services(self) -> Self:
        for name, service in self.services.items():
            service.name = name
        return self

    def stop_order(self) -> list[str]:
        """Services to stop, dependents before what they depend on."""
        return [s for s in reversed(self.start_order()) if self.services[s].stop]

    def start_order(self) -> list[str]:
        """Every service, each after those it depends on (ties by name)."""
        done: list[str] = []
        seen: set[str] = set()

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in seen or name not in self.services or name in path:
                return
            for dep in sorted(self.services[name].depends_on):
                visit(dep, (*path, name))
            seen.add(name)
            done.append(name)

        for name in sorted(self.services):
            visit(name, ())
        return done

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON: every field, in the order above; ``probe_commands`` only when
        there are some (a plan without them is stored as it was before they existed)."""
        doc = self.model_dump()
        if not doc.get("probe_commands"):
            doc.pop("probe_commands", None)
        return doc


def plan_from_dict(doc: object, where: str = "the plan") -> Plan:
    """The plan in ``doc`` (a plan file's document); `UsageError` naming every invalid field,
    one a line, each as ``WHERE: KEY must be ...``."""
    if not isinstance(doc, dict):
        raise UsageError(f"{where} is not a mapping of fields")
    try:
        return Plan.model_validate(doc, context=plan_context(doc, file=True))
    except ValidationError as exc:
        problems = named_problems(exc, order=lambda key: in_file(Plan, key).position)
        raise UsageError("\n".join(f"{where}: {p}" for p in problems)) from None


def plan_context(doc: Mapping[str, Any], *, file: bool) -> dict[str, Any]:
    """What the checks of a plan need beyond a record: the names under ``services`` (None
    when that is no mapping: its own error says so) and whether a file is read."""
    services = doc.get("services") or {}
    names = {str(n) for n in services} if isinstance(services, dict) else None
    return {"services": names, "file": file}


_BUILTIN = {
    "missing": "is missing",
    "model_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
}


def named_problems(exc: ValidationError, order: Callable[[str], int] | None = None) -> list[str]:
    """Each error as ``KEY must be ...`` (``services.api.role``, ``sources[0].name``); an
    error may name its subject itself (``source db names service ...``)."""
    errors = exc.errors(include_url=False)
    if order is not None:
        errors = sorted(errors, key=lambda e: order(str(e["loc"][0])) if e["loc"] else -1)
    out: list[str] = []
    for e in errors:
        context = e.get("ctx") or {}
        loc = e["loc"][:-1] if context.get("of_record") else e["loc"]
        subject = context.get("subject", _key(loc))
        message = e["msg"] if e["type"] == "plan" else _BUILTIN.get(e["type"], "is invalid")
        out.append(f"{subject} {message}" if subject else message)
    return out


def _key(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key
