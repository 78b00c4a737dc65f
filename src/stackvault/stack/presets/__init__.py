"""Presets: what stackvault knows about particular applications (stack layer).

A preset recognises its application in a discovered project (`detect`) and refines the
generic plan (`refine`): the databases that must be there, the files that matter most, the
secrets, the warnings. ``auto`` picks the first preset that recognises the project, in the
order of `PRESETS` (Dify first: its stacks hold other images too), else ``generic`` (the plan as
discovery builds it). Before a backup, `preflight_problems` says what would make it useless
for the preset's application (its key or its data not captured). After a restore,
`restore_checks` runs the preset's own checks (a module's ``restore_checks``, given the
restored stack as a `RestoredStack`).

The presets: ``dify`` (`dify`), ``n8n`` (`n8n`), ``open-webui`` (`openwebui`),
``anythingllm`` (`anythingllm`), ``ragflow`` (`ragflow`); what they share in `common`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from stackvault.errors import UsageError
from stackvault.records.plan import POSTGRES, Plan
from stackvault.stack.compose import Project, Service
from stackvault.stack.plan import build_plan
from stackvault.stack.presets import anythingllm, dify, n8n, openwebui, ragflow
from stackvault.stack.presets.restored import RestoredStack
from stackvault.stack.restorereport import Validation

if TYPE_CHECKING:
    from stackvault.stack.reach import ContainerView

PRESETS = {
    "dify": dify,
    "n8n": n8n,
    "open-webui": openwebui,
    "anythingllm": anythingllm,
    "ragflow": ragflow,
}
NAMES = ("auto", "generic", *PRESETS)


def plan_for(
    project: Project,
    preset: str = "auto",
    views: Callable[[Service], ContainerView | None] | None = None,
) -> Plan:
    """The plan of ``project`` under ``preset`` (``auto``, ``generic`` or a preset name);
    ``views``: see `build_plan`."""
    if preset not in NAMES:
        raise UsageError(f"unknown preset {preset!r}; known: {', '.join(NAMES)}")
    if preset == "auto":
        preset = next((n for n, m in PRESETS.items() if m.detect(project)), "generic")
    plan = build_plan(project, preset, views)
    if preset in PRESETS:
        PRESETS[preset].refine(plan, project)
        name_databases_source(plan, getattr(PRESETS[preset], "DATABASE_ROLE", POSTGRES))
    return plan


def name_databases_source(plan: Plan, role: str) -> None:
    """Record which source holds the databases the preset expects (``facts.databases``): the
    first source of a service of ``role`` (the preset's database server: PostgreSQL unless the
    module says ``DATABASE_ROLE``), as ``facts.databases_source``; preflight checks them there
    and nowhere else, so PostgreSQL and MySQL in one stack do not mix. Nothing when the preset
    expects no databases or the stack has no such server."""
    if "databases" not in plan.facts or "databases_source" in plan.facts:
        return
    held = next(
        (
            s.name
            for s in plan.sources
            if s.service in plan.services and plan.services[s.service].role == role
        ),
        None,
    )
    if held is not None:
        plan.facts["databases_source"] = held


def restore_checks(stack: RestoredStack) -> list[Validation]:
    """The checks of the restored ``stack`` its preset knows (its manifest's ``preset``);
    none for ``generic`` or a preset without its own. Dify's tenant keys are checked by the
    restore itself (`dify.tenant_keys_check`)."""
    module = PRESETS.get(stack.manifest.preset)
    check = getattr(module, "restore_checks", None) if module is not None else None
    if check is None:
        return []
    found: list[Validation] = check(stack)
    return found


def preflight_problems(plan: Plan) -> list[str]:
    """What would make a backup of ``plan`` useless for its preset's application (a module's
    ``preflight_problems``: its key or data no longer captured), each one sentence; none for
    ``generic`` or a preset without the check."""
    module = PRESETS.get(plan.preset)
    check = getattr(module, "preflight_problems", None) if module is not None else None
    if check is None:
        return []
    found: list[str] = check(plan)
    return found
