"""The stack plan: what a stack backup captures, how, and what it stops (stack layer).

`build_plan` turns a discovered `Project` into a `Plan`; a preset (``dify``) refines it.
`render_plan` writes it as a commented YAML file for the operator to review and edit
(``stackvault.yaml``); `load_plan` reads it back, validating every field with a message that
names it. The plan is the single input of ``stack preflight`` and ``stack backup``.

Capture per service role (`stackvault.stack.classify`):

- ``postgres`` / ``mysql``: ``postgres+docker://CONTAINER`` / ``mysql+docker://CONTAINER/`` -
  every database (and roles / accounts) dumped inside the container; its data mounts are not
  copied (a copy of a live data directory is corrupt).
- ``redis``: ``redis+docker://CONTAINER[:PORT]``.
- ``app``, ``vector-store``, ``object-store``: their writable mounts - a bind-mounted
  directory as a path of the snapshot, a named volume as ``docker-volume://NAME`` - captured
  while the service is stopped in ``strict`` consistency.
- ``stateless``: nothing.

Configuration (compose files, ``.env``, read-only bind mounts under the project directory)
is captured as paths; secrets are listed by *name* only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from stackvault.errors import UsageError
from stackvault.stack.classify import (
    APP,
    DATABASE_ROLES,
    MYSQL,
    OBJECT_STORE,
    POSTGRES,
    REDIS,
    STATELESS,
    VECTOR_STORE,
    classify,
)
from stackvault.stack.compose import Project

PLAN_VERSION = 1
CONSISTENCY = ("strict", "online")
ROLES = (POSTGRES, MYSQL, REDIS, VECTOR_STORE, OBJECT_STORE, APP, STATELESS)
_SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|ACCESS_KEY|PRIVATE|CREDENTIAL|_KEY$", re.IGNORECASE
)


@dataclass
class ServicePlan:
    name: str
    role: str
    reason: str
    image: str
    digest: str | None
    stop: bool
    """Stopped during the cut (``strict`` consistency)."""
    depends_on: list[str] = field(default_factory=list)


@dataclass
class SourcePlan:
    name: str
    url: str
    service: str
    note: str = ""


@dataclass
class PathPlan:
    path: str
    service: str
    exclude: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class HookPlan:
    """Commands around the cut for one service: ``before`` runs before anything is stopped or
    read, ``after`` once everything is read and the services run again - and also as the undo
    when the cut fails after ``before`` succeeded. ``essential``: a failing ``before`` aborts
    the backup (every undo runs); ``optional``: a warning, and the backup goes on."""

    service: str
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    where: str = "container"
    """``container`` (through the Engine API, in the service's container) or ``host``."""
    timeout: float = 60.0
    mode: str = "essential"


@dataclass
class ProbePlan:
    """An HTTP check after a restore: ``url`` must answer ``status`` within the wait."""

    url: str
    status: int = 200
    service: str | None = None


@dataclass
class Plan:
    project: str
    directory: str | None
    compose_files: list[str]
    preset: str
    consistency: str
    services: dict[str, ServicePlan]
    sources: list[SourcePlan]
    paths: list[PathPlan]
    config: list[str]
    secrets: list[str]
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    """Preset knowledge checked by preflight and after restore (``databases``: names that
    must exist, ``privkeys``: the storage directory holding per-tenant keys, …)."""
    hooks: list[HookPlan] = field(default_factory=list)
    probes: list[ProbePlan] = field(default_factory=list)

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
        return {
            "version": PLAN_VERSION,
            "project": self.project,
            "directory": self.directory,
            "compose_files": self.compose_files,
            "preset": self.preset,
            "consistency": self.consistency,
            "services": {
                s.name: {
                    "role": s.role,
                    "reason": s.reason,
                    "image": s.image,
                    "digest": s.digest,
                    "stop": s.stop,
                    "depends_on": s.depends_on,
                }
                for s in self.services.values()
            },
            "sources": [s.__dict__ for s in self.sources],
            "paths": [p.__dict__ for p in self.paths],
            "config": self.config,
            "secrets": self.secrets,
            "warnings": self.warnings,
            "hooks": [h.__dict__ for h in self.hooks],
            "probes": [p.__dict__ for p in self.probes],
            "facts": self.facts,
        }


def build_plan(project: Project, preset: str = "generic") -> Plan:
    """The default plan of ``project`` (then refined by the preset's ``refine``)."""
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
        if role == POSTGRES:
            sources.append(
                SourcePlan(
                    svc.name,
                    f"postgres+docker://{svc.container}/?name={svc.name}",
                    svc.name,
                    "every database and the roles, dumped inside the container",
                )
            )
        elif role == MYSQL:
            sources.append(
                SourcePlan(
                    svc.name,
                    f"mysql+docker://{svc.container}/?name={svc.name}",
                    svc.name,
                    "every database and the accounts, dumped inside the container",
                )
            )
        elif role == REDIS:
            port = _redis_port(svc.command)
            where = f"{svc.container}:{port}" if port else svc.container
            sources.append(
                SourcePlan(svc.name, f"redis+docker://{where}?name={svc.name}", svc.name, "RDB")
            )
        if role in DATABASE_ROLES or role == STATELESS:
            continue
        for m in svc.mounts:
            if m.type == "bind":
                if m.read_only:
                    if directory and _under(m.source, directory) and m.source not in config:
                        config.append(m.source)
                    continue
                if any(p.path == m.source for p in paths):
                    continue
                paths.append(PathPlan(m.source, svc.name, note=f"mounted at {m.destination}"))
            elif m.type == "volume" and not m.read_only:
                url = f"docker-volume://{m.source}?mode=hot&name=volume-{m.source}"
                if not any(s.url == url for s in sources):
                    sources.append(
                        SourcePlan(
                            f"volume-{m.source}",
                            url,
                            svc.name,
                            f"named volume mounted at {m.destination}",
                        )
                    )
    for f in project.config_files:
        if f not in config:
            config.insert(0, f)
    if project.env_file and project.env_file not in config:
        config.insert(0, project.env_file)
    secrets = sorted(n for n in project.env if _SECRET_NAME.search(n))
    plan = Plan(
        project=project.name,
        directory=directory,
        compose_files=list(project.config_files),
        preset=preset,
        consistency="strict",
        services=dict(sorted(services.items())),
        sources=sources,
        paths=sorted(paths, key=lambda p: p.path),
        config=config,
        secrets=secrets,
    )
    if project.compose_error:
        plan.warnings.append(
            f"{project.compose_error}; service dependencies are unknown, so services are "
            "stopped and started in name order"
        )
    return plan


def _redis_port(command: list[str]) -> int | None:
    for i, arg in enumerate(command):
        if arg == "--port" and i + 1 < len(command) and command[i + 1].isdigit():
            return int(command[i + 1])
    return None


def _under(path: str, directory: str) -> bool:
    path, directory = os.path.normpath(path), os.path.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# --- the plan file ----------------------------------------------------------------------------


def _q(value: Any) -> str:
    """A YAML scalar (JSON is valid YAML: strings are always quoted, so nothing is re-typed)."""
    import json

    return json.dumps(value, ensure_ascii=False)


def render_plan(plan: Plan, *, discovered_at: str = "") -> str:
    """The plan as a commented YAML document."""
    out: list[str] = [
        f"# stackvault plan for Compose project {plan.project}"
        + (f" (discovered {discovered_at})" if discovered_at else ""),
        "# Review it, edit what is wrong, then: stackvault stack preflight --config FILE",
        f"version: {PLAN_VERSION}",
        f"project: {_q(plan.project)}",
        f"directory: {_q(plan.directory)}",
        f"preset: {_q(plan.preset)}",
        "# strict: the services marked stop: true are stopped for the cut (the report says for",
        "# how long); online: nothing stops, each part is consistent on its own",
        f"consistency: {_q(plan.consistency)}",
        f"compose_files: {_q(plan.compose_files)}",
        "",
        "# role decides the capture: postgres/mysql/redis by their tools inside the container,",
        "# app/vector-store/object-store by their mounts, stateless not at all",
        "services:",
    ]
    for s in plan.services.values():
        out += [
            f"  {_q(s.name)}:",
            f"    role: {_q(s.role)}  # {s.reason}",
            f"    image: {_q(s.image)}",
            f"    digest: {_q(s.digest)}",
            f"    stop: {'true' if s.stop else 'false'}",
            f"    depends_on: {_q(s.depends_on)}",
        ]
    out += ["", "# captured by their own tools, each an artifact of the snapshot", "sources:"]
    out += [
        line
        for s in plan.sources
        for line in (
            f"  - name: {_q(s.name)}",
            f"    url: {_q(s.url)}",
            f"    service: {_q(s.service)}" + (f"  # {s.note}" if s.note else ""),
        )
    ] or ["  []"]
    out += ["", "# data directories (bind mounts), captured as files", "paths:"]
    for p in plan.paths:
        out += [
            f"  - path: {_q(p.path)}",
            f"    service: {_q(p.service)}" + (f"  # {p.note}" if p.note else ""),
            f"    exclude: {_q(p.exclude)}",
        ]
    if not plan.paths:
        out.append("  []")
    out += ["", "# configuration files and directories, captured as files", "config:"]
    out += [f"  - {_q(c)}" for c in plan.config] or ["  []"]
    out += [
        "",
        "# names of the secrets in the configuration (values are never written here)",
        f"secrets: {_q(plan.secrets)}",
    ]
    out += ["", "# what the preset knows and checks", f"facts: {_q(plan.facts)}"]
    out += [
        "",
        "# commands around the cut, e.g. an application's pause/resume endpoint:",
        "#   - service: api",
        '#     before: ["curl", "-fsS", "-X", "POST", "http://127.0.0.1:5001/pause"]',
        '#     after: ["curl", "-fsS", "-X", "POST", "http://127.0.0.1:5001/resume"]',
        "#     where: container      # or host",
        "#     timeout: 60           # seconds",
        "#     mode: essential       # a failing before aborts the backup; optional: warn",
        "hooks:",
    ]
    for h in plan.hooks:
        out += [
            f"  - service: {_q(h.service)}",
            f"    before: {_q(h.before)}",
            f"    after: {_q(h.after)}",
            f"    where: {_q(h.where)}",
            f"    timeout: {h.timeout:g}",
            f"    mode: {_q(h.mode)}",
        ]
    if not plan.hooks:
        out.append("  []")
    out += [
        "",
        "# HTTP checks after a restore, e.g. - {url: http://127.0.0.1/console/api/setup,",
        "#                                      status: 200, service: api}",
        "probes:",
    ]
    out += [
        f"  - {{url: {_q(p.url)}, status: {p.status}, service: {_q(p.service)}}}"
        for p in plan.probes
    ] or ["  []"]
    if plan.warnings:
        out += ["", "# warnings found while discovering"]
        out.append("warnings:")
        out += [f"  - {_q(w)}" for w in plan.warnings]
    return "\n".join(out) + "\n"


def load_plan(path: str) -> Plan:
    """The plan in file ``path``; `UsageError` naming the field for anything invalid."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError as exc:
        raise UsageError(
            f"there is no plan file {path}",
            hint="write one with: stackvault stack discover --output " + path,
        ) from exc
    except OSError as exc:
        raise UsageError(f"cannot read the plan file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"the plan file {path} is not valid YAML: {exc}") from exc
    return plan_from_dict(doc, path)


def plan_from_dict(doc: Any, where: str = "the plan") -> Plan:
    r = _Reader(where)
    if not isinstance(doc, dict):
        raise UsageError(f"{where} is not a mapping of fields")
    if doc.get("version") != PLAN_VERSION:
        raise UsageError(f"{where}: version must be {PLAN_VERSION}")
    consistency = r.text(doc, "consistency")
    if consistency not in CONSISTENCY:
        raise UsageError(f"{where}: consistency must be strict or online")
    services: dict[str, ServicePlan] = {}
    for name, spec in r.mapping(doc, "services").items():
        key = f"services.{name}"
        spec = r.mapping({key: spec}, key)
        role = r.text(spec, "role", key)
        if role not in ROLES:
            raise UsageError(f"{where}: {key}.role must be one of {', '.join(ROLES)}")
        services[str(name)] = ServicePlan(
            name=str(name),
            role=role,
            reason="",
            image=r.text(spec, "image", key),
            digest=r.optional_text(spec, "digest", key),
            stop=r.boolean(spec, "stop", key),
            depends_on=r.texts(spec, "depends_on", key),
        )
    sources = []
    for i, spec in enumerate(r.items(doc, "sources")):
        key = f"sources[{i}]"
        spec = r.mapping({key: spec}, key)
        sources.append(
            SourcePlan(
                r.text(spec, "name", key), r.text(spec, "url", key), r.text(spec, "service", key)
            )
        )
    paths = []
    for i, spec in enumerate(r.items(doc, "paths")):
        key = f"paths[{i}]"
        spec = r.mapping({key: spec}, key)
        p = r.text(spec, "path", key)
        if not os.path.isabs(p):
            raise UsageError(f"{where}: {key}.path must be absolute")
        paths.append(PathPlan(p, r.text(spec, "service", key), r.texts(spec, "exclude", key)))
    for what, service in [(f"source {s.name}", s.service) for s in sources] + [
        (f"path {p.path}", p.service) for p in paths
    ]:
        if service not in services:
            raise UsageError(
                f"{where}: {what} names service {service!r}, which is not under services"
            )
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise UsageError(f"{where}: two sources have the same name")
    facts = doc.get("facts") or {}
    if not isinstance(facts, dict):
        raise UsageError(f"{where}: facts must be a mapping")
    hooks = []
    for i, spec in enumerate(r.items(doc, "hooks")):
        key = f"hooks[{i}]"
        spec = r.mapping({key: spec}, key)
        hook = HookPlan(
            service=r.text(spec, "service", key),
            before=r.command(spec, "before", key),
            after=r.command(spec, "after", key),
            where=str(spec.get("where", "container")),
            timeout=r.number(spec, "timeout", key, 60.0),
            mode=str(spec.get("mode", "essential")),
        )
        if hook.where not in ("container", "host"):
            raise UsageError(f"{where}: {key}.where must be container or host")
        if hook.mode not in ("essential", "optional"):
            raise UsageError(f"{where}: {key}.mode must be essential or optional")
        if hook.service not in services:
            raise UsageError(
                f"{where}: {key} names service {hook.service!r}, which is not under services"
            )
        if not hook.before and not hook.after:
            raise UsageError(f"{where}: {key} has neither before nor after")
        hooks.append(hook)
    probes = []
    for i, spec in enumerate(r.items(doc, "probes")):
        key = f"probes[{i}]"
        spec = r.mapping({key: spec}, key)
        url = r.text(spec, "url", key)
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"{where}: {key}.url must be an http:// or https:// URL")
        status = spec.get("status", 200)
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise UsageError(f"{where}: {key}.status must be an HTTP status code")
        probe_service = r.optional_text(spec, "service", key)
        if probe_service is not None and probe_service not in services:
            raise UsageError(
                f"{where}: {key} names service {probe_service!r}, which is not under services"
            )
        probes.append(ProbePlan(url, status, probe_service))
    return Plan(
        project=r.text(doc, "project"),
        directory=r.optional_text(doc, "directory"),
        compose_files=r.texts(doc, "compose_files"),
        preset=r.text(doc, "preset"),
        consistency=consistency,
        services=services,
        sources=sources,
        paths=paths,
        config=[c for c in r.texts(doc, "config")],
        secrets=r.texts(doc, "secrets"),
        warnings=r.texts(doc, "warnings"),
        facts=facts,
        hooks=hooks,
        probes=probes,
    )


class _Reader:
    def __init__(self, where: str) -> None:
        self.where = where

    def _fail(self, field_name: str, what: str) -> UsageError:
        return UsageError(f"{self.where}: {field_name} must be {what}")

    def _name(self, key: str, parent: str) -> str:
        return f"{parent}.{key}" if parent else key

    def text(self, doc: dict[str, Any], key: str, parent: str = "") -> str:
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            raise self._fail(self._name(key, parent), "a non-empty string")
        return value

    def optional_text(self, doc: dict[str, Any], key: str, parent: str = "") -> str | None:
        value = doc.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._fail(self._name(key, parent), "a string or null")
        return value

    def boolean(self, doc: dict[str, Any], key: str, parent: str = "") -> bool:
        value = doc.get(key, False)
        if not isinstance(value, bool):
            raise self._fail(self._name(key, parent), "true or false")
        return value

    def texts(self, doc: dict[str, Any], key: str, parent: str = "") -> list[str]:
        value = doc.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(self._name(key, parent), "a list of strings")
        return list(value)

    def items(self, doc: dict[str, Any], key: str) -> list[Any]:
        value = doc.get(key) or []
        if not isinstance(value, list):
            raise self._fail(key, "a list")
        return value

    def command(self, doc: dict[str, Any], key: str, parent: str = "") -> list[str]:
        """A command as an argument list; a string is run by ``sh -c``."""
        value = doc.get(key)
        if value is None or value == []:
            return []
        if isinstance(value, str) and value.strip():
            return ["sh", "-c", value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
        raise self._fail(self._name(key, parent), "a command: a string or a list of strings")

    def number(self, doc: dict[str, Any], key: str, parent: str, default: float) -> float:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self._fail(self._name(key, parent), "a positive number")
        return float(value)

    def mapping(self, doc: dict[str, Any], key: str, parent: str = "") -> dict[str, Any]:
        value = doc.get(key) or {}
        if not isinstance(value, dict):
            raise self._fail(self._name(key, parent), "a mapping")
        return value
