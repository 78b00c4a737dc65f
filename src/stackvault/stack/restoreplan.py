"""The plan of a restored stack (stack layer): the snapshot's plan with the restored project's
name, directory, paths, volumes and containers, written by ``stack restore`` next to the
restored compose files (`PLAN_FILE`), so that ``stack backup`` works right after a disaster
recovery, as it did before it.

The stack's own plan is the one inside the snapshot (the manifest's ``plan``, as the backup
used it: the operator's edits included). `restored_plan` maps it: ``project``, ``directory``,
``compose_files``, every path under the project directory (``paths``, ``config``, the facts'),
each named volume (renamed to the new project's prefix, as the restore does) and each database
source's container (the restored one, else the name Compose gives it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from stackvault.records.plan import Plan, SourcePlan
from stackvault.stack.plan import PLAN_FILE, render_plan
from stackvault.stack.restoretarget import RestoreTarget


def plan_file_path(target: RestoreTarget) -> str:
    """Where the restore writes the plan: next to the first restored compose file (in the
    restored directory when the plan names none)."""
    files = target.compose_files()
    return os.path.join(os.path.dirname(files[0]) if files else target.new_dir, PLAN_FILE)


def restored_plan(target: RestoreTarget, containers: Mapping[str, str]) -> Plan:
    """The plan of the stack as restored (see the module docstring); ``containers``: service →
    its restored container."""
    plan = target.plan
    sources = [_source(s, target, containers.get(s.service)) for s in plan.sources]
    return plan.model_copy(
        update={
            "project": target.new_project,
            "directory": target.new_dir if plan.directory else plan.directory,
            "compose_files": target.compose_files(),
            "sources": sources,
            "paths": [p.model_copy(update={"path": target.map_path(p.path)}) for p in plan.paths],
            "config": [target.map_path(p) for p in plan.config],
            "facts": _mapped(plan.facts, target),
        }
    )


def plan_text(plan: Plan, origin: str) -> str:
    """The plan file's text (`render_plan`), its first line saying where it came from."""
    return render_plan(plan, origin=origin)


def write_plan_file(path: str, text: str) -> None:
    """Write the plan file (replaced atomically: the checks made sure none was there, or the
    restore itself restored it as configuration)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _source(s: SourcePlan, target: RestoreTarget, container: str | None) -> SourcePlan:
    parts = urlsplit(s.url)
    if parts.scheme.endswith("+docker"):
        user, at, where = parts.netloc.rpartition("@")
        host, colon, port = where.partition(":")
        new_host = container or _renamed(host, target)
        url = parts._replace(netloc=f"{user}{at}{new_host}{colon}{port}").geturl()
        return s.model_copy(update={"url": url})
    if parts.scheme != "docker-volume":
        return s
    old, new = parts.netloc, target.map_volume(parts.netloc)
    query = [
        (k, f"volume-{new}" if k == "name" and v == f"volume-{old}" else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    url = parts._replace(netloc=new, query=urlencode(query, safe="/:")).geturl()
    name = f"volume-{new}" if s.name == f"volume-{old}" else s.name
    return s.model_copy(update={"url": url, "name": name})


def _renamed(container: str, target: RestoreTarget) -> str:
    """The name Compose gives the restored container of one named ``container``."""
    for sep in ("_", "-"):
        if container.startswith(target.old_project + sep):
            return target.new_project + container[len(target.old_project) :]
    return container


def _mapped(value: Any, target: RestoreTarget) -> Any:
    """``value`` (the plan's facts) with every path of the project directory and every
    ``volume NAME`` mapped."""
    if isinstance(value, dict):
        return {k: _mapped(v, target) for k, v in value.items()}
    if isinstance(value, list):
        return [_mapped(v, target) for v in value]
    if isinstance(value, str):
        if value.startswith("volume "):
            return "volume " + target.map_volume(value[len("volume ") :])
        return target.map_path(value) if target.in_directory(value) else value
    return value
