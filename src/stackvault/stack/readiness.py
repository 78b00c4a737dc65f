"""Whether a restored service is ready (stack layer): running, healthy where it has a health
check, and - for a database - past its image's init phase (`entrypoint_initialising`).

The official PostgreSQL, MySQL and MariaDB images initialise a new data directory with a
temporary server that listens on the usual socket, stop it and only then ``exec`` the real
server; ``stack restore`` waits until that is over before it loads a database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docker import DockerClient


def not_running(state: Mapping[str, Any]) -> str:
    """What keeps a container of engine state ``state`` (``State`` of its inspection) from
    counting as ready: ``exited``, ``unhealthy``, ``starting``, ...; empty when it runs and,
    where it has a health check, is healthy."""
    if not state.get("Running"):
        return str(state.get("Status"))
    health = (state.get("Health") or {}).get("Status")
    return "" if health in (None, "healthy") else str(health)


ENTRYPOINT_SCRIPT = "docker-entrypoint.sh"
"""The official database images' entrypoint, which ``exec``s the server once it initialised."""


def entrypoint_initialising(client: DockerClient, container: str) -> bool:
    """Whether a process of ``container`` runs ``docker-entrypoint.sh`` (as the program or as
    the script its interpreter runs): the official database images' init phase, before the
    script ``exec``s the real server. Read with the engine's ``top`` (``ps`` on the engine's
    host), so nothing needs to exist inside the container; an engine that cannot list the
    processes gives False (nothing to wait for)."""
    import docker.errors

    try:
        top = client.api.top(container)
    except docker.errors.DockerException:
        return False
    titles = [str(t) for t in top.get("Titles") or []]
    column = next((i for i, t in enumerate(titles) if t in ("CMD", "COMMAND")), None)
    if column is None:
        return False
    for proc in top.get("Processes") or []:
        if len(proc) <= column:
            continue
        words = str(proc[column]).split()[:2]
        if any(os.path.basename(w) == ENTRYPOINT_SCRIPT for w in words):
            return True
    return False
