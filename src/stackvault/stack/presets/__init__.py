"""Presets: what stackvault knows about particular applications (stack layer).

A preset recognises its application in a discovered project (`detect`) and refines the
generic plan (`refine`): the databases that must be there, the files that matter most, the
secrets, the warnings. ``auto`` picks the first preset that recognises the project, else
``generic`` (the plan as discovery builds it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from stackvault.errors import UsageError
from stackvault.records.plan import Plan
from stackvault.stack.compose import Project, Service
from stackvault.stack.plan import build_plan
from stackvault.stack.presets import dify

if TYPE_CHECKING:
    from stackvault.stack.reach import ContainerView

PRESETS = {"dify": dify}
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
    return plan
