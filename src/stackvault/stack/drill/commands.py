"""The plan's probe commands in a drill (stack layer): each run inside the drill's network
namespace - in its service's container, else the sandbox - given the service's address, and
passing on exit 0 (see `stackvault.stack.drill` and `stackvault.records.plan.CommandProbePlan`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from stackvault.records.drill import DrillProbe
from stackvault.records.plan import CommandProbePlan, Plan
from stackvault.stack.drill.probes import drill_containers

if TYPE_CHECKING:
    from docker import DockerClient

HOST_ENV = "STACKVAULT_PROBE_HOST"
PORT_ENV = "STACKVAULT_PROBE_PORT"
SERVICE_ENV = "STACKVAULT_PROBE_SERVICE"
TAIL = 400
"""How much of a failed command's output the report keeps (its end)."""
_TIMED = 'if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 "$0" "$@"; fi; exec "$@"'
"""Runs the command under ``timeout`` where the container has it (argv: seconds, command)."""


def command_probe(
    client: DockerClient, project: str, plan: Plan, probe: CommandProbePlan
) -> DrillProbe:
    """Run ``probe`` in the drill ``project`` (see the module docstring): pass on exit 0;
    fail on any other exit, a timeout (exit 124) or no container to run it in, with the tail
    of its output."""
    import docker.errors

    name = f"command {probe.service}: {_shown(probe.command)}"
    candidates = drill_containers(client, project, probe.service)
    if not candidates:
        return DrillProbe(name, "fail", "the drill has no running container to run it in")
    env = {
        HOST_ENV: "127.0.0.1",
        PORT_ENV: str(probe.port or _service_port(plan, probe.service) or ""),
        SERVICE_ENV: probe.service,
    }
    seconds = str(max(1, math.ceil(probe.timeout)))
    where = candidates[0]
    try:
        code, out = client.containers.get(where.id).exec_run(
            ["sh", "-c", _TIMED, seconds, *probe.command], environment=env
        )
    except docker.errors.DockerException as exc:
        return DrillProbe(name, "fail", f"could not run it in {where.name}: {exc}"[:TAIL])
    raw = out if isinstance(out, bytes) else b"".join(out or [])
    text = raw.decode("utf-8", "replace").strip()
    tail = " / ".join(text[-TAIL:].splitlines())
    if code == 0:
        return DrillProbe(name, "pass", f"exited 0 in {where.name}")
    if code == 124:
        return DrillProbe(name, "fail", f"timed out after {seconds} s in {where.name}: {tail}")
    return DrillProbe(name, "fail", f"exited {code} in {where.name}: {tail or 'no output'}")


def _service_port(plan: Plan, service: str) -> int | None:
    """The port of the service's database source, as the plan says the backup reached it."""
    return next((s.port for s in plan.sources if s.service == service and s.port), None)


def _shown(command: list[str]) -> str:
    """A command as a person reads it (the string of ``sh -c``), cut to 80 characters."""
    text = command[2] if command[:2] == ["sh", "-c"] and len(command) == 3 else " ".join(command)
    return text if len(text) <= 80 else text[:77] + "..."
