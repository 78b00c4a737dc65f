"""Checks before a stack backup (stack layer): would it fail, or be incomplete?

`preflight` compares the plan with the running project and tries what the backup will need,
without changing anything:

- the Docker engine answers and the project has containers;
- every service of the plan exists; those captured by their tools run (and are not
  unhealthy); an image that changed since the plan was written is reported;
- each database source's client tools exist in its container and its credentials work (the
  source is probed, all of them at once, opened exactly as the backup opens it - the plan's
  port, socket, user and password source, `stackvault.stack.reach.source_url`: a connection
  and row or key counts); a Redis server can save the file its capture reads (its last save
  succeeded, its directory is writable: `stackvault.sources.redis.savefile`); the preset's
  databases exist (Dify: ``dify`` and ``dify_plugin``) on the source the plan's
  ``facts.databases_source`` names;
- each named volume exists; each data directory is readable; each configuration entry exists;
- the plan's own warnings (a public ``SECRET_KEY``, external storage) are repeated;
- `space_check`: a local repository has room for what the project's recent stack backups
  stored (the CLI adds it, since only it opens the repository).

Each `Check` is ``ok``, ``warning`` or ``error`` with the fix; a backup refuses to start while
an ``error`` remains.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stackvault.errors import StackvaultError
from stackvault.records.plan import MYSQL, POSTGRES, REDIS, Plan, SourcePlan
from stackvault.stack.compose import Project, discover
from stackvault.stack.presets import preflight_problems
from stackvault.stack.reach import source_url

if TYPE_CHECKING:
    from docker import DockerClient

    from stackvault.sources.contract import Source
    from stackvault.sources.redis.savefile import SaveProblem

OK = "ok"
WARNING = "warning"
ERROR = "error"

_TOOLS = {
    POSTGRES: [["pg_dump"], ["psql"], ["pg_restore"], ["pg_dumpall"]],  # pg_dumpall: all of them
    MYSQL: [["mariadb-dump", "mysqldump"], ["mariadb", "mysql"]],
    REDIS: [["redis-cli"]],
}


@dataclass
class Check:
    subject: str
    status: str
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def errors(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == ERROR]


def preflight(
    plan: Plan,
    client: DockerClient,
    *,
    probe_sources: bool = True,
    notice: Callable[[str], None] = lambda _m: None,
) -> tuple[list[Check], Project | None]:
    """Every check (see the module docstring) and the project as found (None if not)."""
    checks: list[Check] = []
    try:
        found = discover(client, plan.project)
    except StackvaultError as exc:
        checks.append(Check("project", ERROR, exc.message, exc.hint or ""))
        return checks, None
    checks.append(
        Check("project", OK, f"{len(found.services)} services of {plan.project} on the engine")
    )
    checks += _service_checks(plan, found)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(plan.sources)))) as pool:
        futures = [
            pool.submit(_source_checks, plan, found, src, probe_sources, client)
            for src in plan.sources
        ]
        for src, future in zip(plan.sources, futures, strict=True):
            checks += future.result()
            notice(f"checked source {src.name}")
    checks += _file_checks(plan)
    for w in plan.warnings:
        checks.append(Check("plan", WARNING, w))
    for problem in preflight_problems(plan):
        checks.append(
            Check(
                f"preset {plan.preset}",
                ERROR,
                problem,
                "capture it again in the plan (stack discover writes it)",
            )
        )
    return checks, found


def _service_checks(plan: Plan, found: Project) -> list[Check]:
    """Every service of the plan runs; those captured by their tools are healthy; an image
    changed since the plan was written is reported."""
    checks: list[Check] = []
    for name, svc in plan.services.items():
        live = found.services.get(name)
        subject = f"service {name}"
        if live is None:
            checks.append(
                Check(
                    subject,
                    ERROR,
                    "has no container",
                    "start the stack (docker compose up -d) or remove the service from the plan",
                )
            )
            continue
        captured = any(s.service == name for s in plan.sources)
        if live.state != "running":
            status = ERROR if captured else (WARNING if svc.stop else OK)
            checks.append(
                Check(
                    subject,
                    status,
                    f"is {live.state}",
                    f"start it: docker start {live.container}" if status != OK else "",
                )
            )
        elif live.health == "unhealthy":
            checks.append(
                Check(subject, ERROR if captured else WARNING, "is running but unhealthy")
            )
        else:
            checks.append(Check(subject, OK, f"running ({live.health or 'no health check'})"))
        if svc.digest and live.digests and svc.digest not in live.digests:
            checks.append(
                Check(
                    subject,
                    WARNING,
                    f"runs another image than the plan recorded ({live.image})",
                    "run stack discover again if the upgrade was intended",
                )
            )
    return checks


def _file_checks(plan: Plan) -> list[Check]:
    """Each data directory is readable; each configuration entry exists."""
    checks: list[Check] = []
    for p in plan.paths:
        if not os.path.isdir(p.path):
            checks.append(
                Check(
                    f"path {p.path}",
                    ERROR,
                    "does not exist here",
                    "run the backup on the stack's host, or fix the path in the plan",
                )
            )
        elif not os.access(p.path, os.R_OK | os.X_OK):
            checks.append(
                Check(f"path {p.path}", ERROR, "is not readable", "run stackvault as root")
            )
        else:
            checks.append(Check(f"path {p.path}", OK, "readable"))
    for c in plan.config:
        if not os.path.exists(c):
            checks.append(Check(f"config {c}", WARNING, "does not exist; it is skipped"))
    return checks


def _source_checks(
    plan: Plan, found: Project, src: SourcePlan, probe: bool, client: DockerClient
) -> list[Check]:
    """A volume exists; a database's client tools are in its container and - ``probe`` -
    the source answers when opened exactly as the backup opens it (`source_url`: the same
    port, socket, user and password), with its facts (rows, keys) counted."""
    name, url, service = src.name, source_url(src), src.service
    subject = f"source {name}"
    role = plan.services[service].role if service in plan.services else ""
    live = found.services.get(service)
    if url.startswith("docker-volume://"):
        volume = url[len("docker-volume://") :].split("?", 1)[0]
        try:
            client.volumes.get(volume)
        except Exception:
            return [Check(subject, ERROR, f"volume {volume} does not exist")]
        return [Check(subject, OK, f"volume {volume} exists")]
    if live is None or live.state != "running" or role not in _TOOLS:
        return []
    from stackvault.sources.docker.engine import get_container
    from stackvault.sources.docker.exec import ContainerRunner

    out: list[Check] = []
    runner = ContainerRunner(client, get_container(client, live.container))
    tools = _TOOLS[role]
    if role == POSTGRES and urlsplit(url).path.strip("/"):  # one database: no pg_dumpall
        tools = [t for t in tools if t != ["pg_dumpall"]]
    missing = [alts[0] for alts in tools if not any(runner.has(t) for t in alts)]
    if missing:
        return [
            Check(
                subject,
                ERROR,
                f"{', '.join(missing)} missing in container {live.container}",
                "use the image's official variant, which ships its client tools",
            )
        ]
    if not probe:
        return [Check(subject, OK, "client tools present")]
    from stackvault.sources.registry import open_source

    how = _how(src)
    try:
        source = open_source(url)
    except StackvaultError as exc:
        return [Check(subject, ERROR, exc.message, exc.hint or "")]
    try:
        facts: Mapping[str, Any] = source.probe()
        saving = _save_problems(source)
    except StackvaultError as exc:
        fix = exc.hint or ""
        fix = f"{fix}; " if fix else ""
        return [
            Check(
                subject,
                ERROR,
                f"{exc.message} ({how})",
                fix + "correct port, socket or password_from of the source in the plan",
            )
        ]
    finally:
        source.close()
    out.append(Check(subject, OK, f"connected ({how}), credentials work; {_counted(facts)}"))
    out += [Check(subject, ERROR, p.message, p.fix) for p in saving]
    wanted = wanted_databases(plan, src, role)
    if wanted is not None:
        have = set((facts.get("databases") or {}).keys())
        for db in wanted:
            if db not in have:
                out.append(
                    Check(
                        subject,
                        ERROR,
                        f"database {db} does not exist on {service}",
                        f"the {plan.preset} preset expects it; check the stack, or remove it "
                        "from facts.databases in the plan",
                    )
                )
    return out


def _save_problems(source: Source) -> list[SaveProblem]:
    """A Redis server's problems with its save file, which its capture needs (`savefile`)."""
    from stackvault.sources.redis.source import RedisSource

    return source.save_problems() if isinstance(source, RedisSource) else []


def wanted_databases(plan: Plan, src: SourcePlan, role: str) -> list[str] | None:
    """The databases the preset expects on ``src`` (``facts.databases``): on the source
    ``facts.databases_source`` names (PostgreSQL or MySQL), so that a stack with both checks
    each on its own; in a plan without that name (written before it was recorded), on its
    PostgreSQL sources. None when none are expected there."""
    wanted = plan.facts.get("databases")
    if not isinstance(wanted, list):
        return None
    named = plan.facts.get("databases_source")
    if isinstance(named, str):
        return [str(db) for db in wanted] if named == src.name else None
    return [str(db) for db in wanted] if role == POSTGRES else None


def _how(src: SourcePlan) -> str:
    """How the source is reached, as the plan says (never a password)."""
    parts = [f"port {src.port}" if src.port else "default port"]
    if src.socket:
        parts.append(f"socket {src.socket}")
    parts.append(f"password from {src.password_from or 'the default'}")
    return ", ".join(parts)


def _counted(facts: Mapping[str, Any]) -> str:
    """What the probe counted: tables and rows, or keys."""
    if "keys" in facts:
        keys = facts.get("keys") or {}
        return f"{sum(int(n) for n in keys.values())} keys"
    databases = facts.get("databases")
    if not isinstance(databases, dict):
        databases = {"": facts}
    tables = [t for db in databases.values() for t in (db.get("tables") or {}).values()]
    return f"{len(databases)} databases, {len(tables)} tables, {sum(tables)} rows"


_MIN_FREE = 1 << 30


def space_check(describe: str, free: int, stored: list[int]) -> Check:
    """Room in a local repository for the next stack backup. ``free``: bytes free there;
    ``stored``: what each recent stack backup of the project stored (after deduplication and
    compression). Less free than the most any of them stored is an error (the next backup
    would likely fill the disk half way); less than twice that, or under 1 GiB, a warning."""
    most = max(stored, default=0)
    mib = free >> 20
    if most and free < most:
        return Check(
            "repository",
            ERROR,
            f"{describe} has {mib} MiB free, but recent stack backups stored up to "
            f"{most >> 20} MiB each",
            "free space, prune (stackvault forget --prune) or move the repository",
        )
    if free < max(_MIN_FREE, 2 * most):
        why = f"; recent stack backups stored up to {most >> 20} MiB each" if most else ""
        return Check(
            "repository",
            WARNING,
            f"{describe} opens, but only {mib} MiB are free there{why}",
            "free space or prune before the backup",
        )
    return Check("repository", OK, f"{describe} opens; {free >> 30} GiB free")
