"""The stack plan: what a stack backup captures, how, and what it stops (stack layer).

`build_plan` turns a discovered `Project` into a `Plan` (`stackvault.records.stack`, its one
definition); a preset (``dify``) refines it. `render_plan` writes it as a commented YAML file
for the operator to review and edit (``stackvault.yaml``), laid out as its fields declare;
`load_plan` reads it back, every invalid field named in one error. The plan is the single input
of ``stack preflight`` and ``stack backup``.

Capture per service role (`stackvault.stack.classify`):

- ``postgres`` / ``mysql``: ``postgres+docker://CONTAINER`` / ``mysql+docker://CONTAINER/`` -
  every database (and roles / accounts) dumped inside the container; its data mounts are not
  copied (a copy of a live data directory is corrupt).
- ``redis``: ``redis+docker://CONTAINER``.

For each of these, how its server is reached in its container (port, socket, where the
password is read) as its server was started (`stackvault.stack.reach`), in the source's
``port``, ``socket`` and ``password_from``.
- ``app``, ``vector-store``, ``object-store``: their writable mounts - a bind-mounted
  directory as a path of the snapshot, a named volume as ``docker-volume://NAME`` - captured
  while the service is stopped in ``strict`` consistency.
- ``stateless``: nothing.

Configuration (compose files, ``.env``, read-only bind mounts under the project directory)
is captured as paths; secrets are listed by *name* only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from stackvault.errors import UsageError
from stackvault.records.plan import (
    APP,
    MYSQL,
    OBJECT_STORE,
    PLAN_VERSION,
    POSTGRES,
    REDIS,
    STATELESS,
    VECTOR_STORE,
    PathPlan,
    Plan,
    ServicePlan,
    SourcePlan,
    file_fields,
    plan_from_dict,
)
from stackvault.stack.classify import DATABASE_ROLES, classify
from stackvault.stack.compose import Project, Service
from stackvault.stack.reach import reach_of

if TYPE_CHECKING:
    from stackvault.stack.reach import ContainerView

_SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|ACCESS_KEY|PRIVATE|CREDENTIAL|_KEY$", re.IGNORECASE
)


def build_plan(
    project: Project,
    preset: str = "generic",
    views: Callable[[Service], ContainerView | None] | None = None,
) -> Plan:
    """The default plan of ``project`` (then refined by the preset's ``refine``). ``views``
    gives a database service's running container, from which how its server is reached is
    read (`stackvault.stack.reach`); without one (or a container) the defaults are assumed
    and the plan says so."""
    services: dict[str, ServicePlan] = {}
    sources: list[SourcePlan] = []
    paths: list[PathPlan] = []
    config: list[str] = []
    directory = project.working_dir
    for svc in project.services.values():
        role, reason = classify(svc)
        services[svc.name] = ServicePlan(
            name=svc.name,
            role=role,
            reason=reason,
            image=svc.image,
            digest=svc.digests[0] if svc.digests else None,
            stop=role in (APP, VECTOR_STORE, OBJECT_STORE),
            depends_on=list(svc.depends_on),
        )
        tool = _tool_source(svc, role)
        if tool is not None:
            view = views(svc) if views is not None else None
            reach = reach_of(role, view) if view is not None else None
            if reach is not None:
                tool.port, tool.socket = reach.port, reach.socket
                tool.password_from, tool.found = reach.password_from, f"read from {reach.found}"
            sources.append(tool)
        if role not in DATABASE_ROLES and role != STATELESS:
            _mounts(svc, directory, sources, paths, config)
        elif role in DATABASE_ROLES:  # its configuration (a redis.conf), not its data
            read_only = [m for m in svc.mounts if m.type == "bind" and m.read_only]
            _mounts(replace(svc, mounts=read_only), directory, sources, paths, config)
    for f in project.config_files:
        if f not in config:
            config.insert(0, f)
    if project.env_file and project.env_file not in config:
        config.insert(0, project.env_file)
    plan = Plan(
        version=PLAN_VERSION,
        project=project.name,
        directory=directory,
        compose_files=list(project.config_files),
        preset=preset,
        consistency="strict",
        services=dict(sorted(services.items())),
        sources=sources,
        paths=sorted(paths, key=lambda p: p.path),
        config=config,
        secrets=sorted(n for n in project.env if _SECRET_NAME.search(n)),
    )
    if project.compose_error:
        plan.warnings.append(
            f"{project.compose_error}; service dependencies are unknown, so services are "
            "stopped and started in name order"
        )
    return plan


def _tool_source(svc: Service, role: str) -> SourcePlan | None:
    """The source that captures a database service with its own tool, inside its container."""
    if role == POSTGRES:
        return SourcePlan(
            name=svc.name,
            url=f"postgres+docker://{svc.container}/?name={svc.name}",
            service=svc.name,
            note="every database and the roles, dumped inside the container",
        )
    if role == MYSQL:
        return SourcePlan(
            name=svc.name,
            url=f"mysql+docker://{svc.container}/?name={svc.name}",
            service=svc.name,
            note="every database and the accounts, dumped inside the container",
        )
    if role == REDIS:
        return SourcePlan(
            name=svc.name,
            url=f"redis+docker://{svc.container}?name={svc.name}",
            service=svc.name,
            note="RDB",
        )
    return None


def _mounts(
    svc: Service,
    directory: str | None,
    sources: list[SourcePlan],
    paths: list[PathPlan],
    config: list[str],
) -> None:
    """What a service that writes files has mounted: a writable directory is a data path, a
    read-only one under the project directory configuration, a named volume a source."""
    for m in svc.mounts:
        if m.type == "bind":
            if m.read_only:
                if directory and _under(m.source, directory) and m.source not in config:
                    config.append(m.source)
                continue
            if not any(p.path == m.source for p in paths):
                paths.append(
                    PathPlan(path=m.source, service=svc.name, note=f"mounted at {m.destination}")
                )
        elif m.type == "volume" and not m.read_only:
            url = f"docker-volume://{m.source}?mode=hot&name=volume-{m.source}"
            if not any(s.url == url for s in sources):
                sources.append(
                    SourcePlan(
                        name=f"volume-{m.source}",
                        url=url,
                        service=svc.name,
                        note=f"named volume mounted at {m.destination}",
                    )
                )


def _under(path: str, directory: str) -> bool:
    path, directory = os.path.normpath(path), os.path.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# --- the plan file ----------------------------------------------------------------------------


def _q(value: Any) -> str:
    """A YAML scalar (JSON is valid YAML: strings are always quoted, so nothing is re-typed)."""
    return json.dumps(value, ensure_ascii=False)


def render_plan(plan: Plan, *, discovered_at: str = "", origin: str = "") -> str:
    """The plan as a commented YAML document: each field where and as its `InFile` says,
    below its description as a comment. The first line says when it was discovered, or
    ``origin`` (``restored from snapshot ...``)."""
    origin = origin or (f"discovered {discovered_at}" if discovered_at else "")
    out: list[str] = [
        f"# stackvault plan for Compose project {plan.project}"
        + (f" ({origin})" if origin else ""),
        "# Review it, edit what is wrong, then: stackvault stack preflight --config FILE",
    ]
    for name, layout in file_fields(Plan):
        value = getattr(plan, name)
        if layout.if_any and not value:
            continue
        if layout.gap:
            out.append("")
        description = Plan.model_fields[name].description
        out += [f"# {line}" for line in (description or "").splitlines()]
        if layout.style == "inline":
            out.append(f"{name}: {_q(value)}")
        else:
            out += [f"{name}:", *_block(value, layout.style)]
    return "\n".join(out) + "\n"


def _block(value: Any, style: str) -> list[str]:
    """The indented lines of a field written as a block."""
    out: list[str] = []
    if style == "mapping":  # a record per name; nothing at all when there is none
        for name, record in value.items():
            out += [f"  {_q(name)}:", *(f"    {line}" for line in _record(record))]
        return out
    for item in value:
        if style == "lines":
            out.append(f"  - {_q(item)}")
        elif style == "flow":
            out.append("  - {" + ", ".join(_record(item)) + "}")
        else:
            first, *rest = _record(item)
            out += [f"  - {first}", *(f"    {line}" for line in rest)]
    return out or ["  []"]


def _record(record: BaseModel) -> list[str]:
    """A record's keys as ``key: value``, each with the comment a derived field gives it."""
    fields = file_fields(type(record))
    comments = {
        layout.comment_of: (getattr(record, name), layout.always)
        for name, layout in fields
        if layout.comment_of
    }
    out: list[str] = []
    for name, layout in fields:
        value = getattr(record, name)
        if not layout.key or (layout.if_any and value in (None, "", [], {})):
            continue
        line = f"{name}: {format(value, layout.number) if layout.number else _q(value)}"
        comment, always = comments.get(name, ("", False))
        out.append(line + (f"  # {comment}" if comment or always else ""))
    return out


PLAN_FILE = "stackvault.yaml"
"""The plan file's name: where ``stack discover -o`` is told to write it, where ``stack
restore`` writes the restored one, and what ``stack backup`` reads in the current directory."""
ENV_STACK_CONFIG = "STACKVAULT_STACK_CONFIG"
WHERE_PLANS_ARE = (
    f"the plan file is --config FILE, else ${ENV_STACK_CONFIG}, else {PLAN_FILE} in the "
    "current directory"
)


def locate_plan(given: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The plan file to read and what named it: ``given`` (``--config``), else
    `ENV_STACK_CONFIG` of ``environ``, else `PLAN_FILE` in the current directory."""
    if given:
        return given, "--config"
    named = environ.get(ENV_STACK_CONFIG)
    if named:
        return named, ENV_STACK_CONFIG
    return PLAN_FILE, f"the current directory {os.getcwd()}"


def find_plan(given: str | None, environ: Mapping[str, str]) -> Plan:
    """The plan of `locate_plan`; `UsageError` naming the three places when there is none."""
    path, source = locate_plan(given, environ)
    return load_plan(path, source)


def load_plan(path: str, source: str | None = None) -> Plan:
    """The plan in file ``path``; `UsageError` naming every invalid field. ``source``: what
    named the file (`locate_plan`), for the message when there is none."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError as exc:
        raise UsageError(
            f"there is no plan file {path}"
            + (f" (from {source}; {WHERE_PLANS_ARE})" if source else ""),
            hint=f"write one with: stackvault stack discover --output {PLAN_FILE}; after a "
            "stack restore it is next to the restored compose files (stack plan SNAPSHOT "
            "prints the one a snapshot holds)",
        ) from exc
    except OSError as exc:
        raise UsageError(f"cannot read the plan file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"the plan file {path} is not valid YAML: {exc}") from exc
    return plan_from_dict(doc, path)
