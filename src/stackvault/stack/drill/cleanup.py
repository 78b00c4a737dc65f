"""The drill's cleanup (stack layer): removing everything a drill created, by label, name and
directory, and the leftovers of earlier drills (see `stackvault.stack.drill`)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stackvault.records.drill import (
    DrillCleanup,
)
from stackvault.stack.compose import LABEL_PROJECT
from stackvault.stack.drill.labels import (
    DRILL_PROJECT,
    DRILL_VOLUME,
    LABEL,
    LABEL_DRILL_PROJECT,
    LABEL_OWNER,
    OWNER_FILE,
)
from stackvault.stack.restorelabels import alive

if TYPE_CHECKING:
    from docker import DockerClient


@contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored while cleaning up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cleanup_drill(client: DockerClient, project: str, root: str | None) -> DrillCleanup:
    """Remove every container, volume and network of drill project ``project`` and its
    directory ``root``; then list them again: anything left is the cleanup's failure."""
    import docker.errors

    done = DrillCleanup()
    errors: list[str] = []
    for container in _project_containers(client, project):
        try:
            client.api.remove_container(container.id, force=True, v=True)
            done.removed.append(f"container {container.name}")
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            errors.append(f"container {container.name}: {exc}")
    for network in client.networks.list(filters={"label": f"{LABEL_PROJECT}={project}"}):
        try:
            network.remove()
            done.removed.append(f"network {network.name}")
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            errors.append(f"network {network.name}: {exc}")
    for volume in _project_volumes(client, project):
        try:
            volume.remove(force=True)
            done.removed.append(f"volume {volume.name}")
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            errors.append(f"volume {volume.name}: {exc}")
    if root is not None and os.path.lexists(root):
        try:
            shutil.rmtree(root)
            done.removed.append(f"directory {root}")
        except OSError as exc:
            errors.append(f"directory {root}: {exc.strerror or exc}")
    left = [f"container {c.name}" for c in _project_containers(client, project)]
    left += [f"volume {v.name}" for v in _project_volumes(client, project)]
    left += [
        f"network {n.name}"
        for n in client.networks.list(filters={"label": f"{LABEL_PROJECT}={project}"})
    ]
    if root is not None and os.path.lexists(root):
        left.append(f"directory {root}")
    if left and not errors:
        errors.append(f"still there: {', '.join(left)}")
    if errors:
        done.ok = False
        done.error = "; ".join(errors)[:1000]
    return done


@dataclass(frozen=True)
class Listed:
    """A container as the engine lists it (no inspect: one that goes away meanwhile is no
    error)."""

    id: str
    name: str
    labels: dict[str, str]


def containers(client: DockerClient, label: str, *, running: bool = False) -> list[Listed]:
    out = []
    for c in client.api.containers(all=not running, filters={"label": label}):
        names = c.get("Names") or [""]
        out.append(Listed(str(c.get("Id")), str(names[0]).lstrip("/"), c.get("Labels") or {}))
    return out


def _project_containers(client: DockerClient, project: str) -> list[Listed]:
    seen: dict[str, Listed] = {}
    for label in (f"{LABEL_DRILL_PROJECT}={project}", f"{LABEL_PROJECT}={project}"):
        for c in containers(client, label):
            seen[c.id] = c
    return list(seen.values())


def _project_volumes(client: DockerClient, project: str) -> list[Any]:
    seen: dict[str, Any] = {}
    for v in client.volumes.list(filters={"label": f"{LABEL_PROJECT}={project}"}):
        seen[str(v.name)] = v
    for v in client.volumes.list(filters={"name": project + "_"}):
        if str(v.name).startswith(project + "_"):
            seen[str(v.name)] = v
    return list(seen.values())


def remove_leftovers(client: DockerClient, workdir: str, keep: str | None = None) -> DrillCleanup:
    """Remove what earlier drills left on this engine and in ``workdir``: containers with
    the drill label, and the volumes, networks and directories of their drill projects
    (``<project>-drill-<time>``, by Compose label and name); ``keep`` names a drill project
    left alone. A drill still running on this host (its owner label or file names a live
    process of this host other than this one: another job's drill under ``serve``) is left
    alone too."""
    projects: set[str] = set()
    live: set[str] = set()
    for c in containers(client, LABEL):
        name = c.labels.get(LABEL_DRILL_PROJECT) or ""
        if DRILL_PROJECT.match(name):
            projects.add(name)
            if alive(c.labels.get(LABEL_OWNER) or ""):
                live.add(name)
    for v in client.volumes.list(filters={"name": "-drill-"}):
        found = DRILL_VOLUME.match(str(v.name))
        if found:
            projects.add(found.group(1))
    try:
        projects.update(d for d in os.listdir(workdir) if DRILL_PROJECT.match(d))
    except OSError:
        pass
    for project in projects:
        try:
            with open(os.path.join(workdir, project, OWNER_FILE), encoding="utf-8") as f:
                if alive(f.read().strip()):
                    live.add(project)
        except OSError:
            pass
    projects -= live | {keep or ""}
    total = DrillCleanup()
    for project in sorted(projects):
        done = cleanup_drill(client, project, os.path.join(workdir, project))
        total.removed += done.removed
        if not done.ok:
            total.ok = False
            total.error = done.error
    return total


def remove_leftover_directories(workdir: str, keep: str | None = None) -> DrillCleanup:
    """Remove the directories earlier drills left (as `remove_leftovers`, without an
    engine: what a drill of a job without a stack leaves): in ``workdir`` those named
    ``<name>-drill-<time>`` whose owner file names no live process of this host, and in the
    system's temporary directory those named ``<name>-drill-<time>-<suffix>`` (its servers'
    data) whose owner file names none; ``keep`` (a drill project) is left alone."""
    total = DrillCleanup()
    found: list[tuple[str, bool]] = []
    for where, named, needs_owner in (
        (workdir, DRILL_PROJECT.match, False),
        (tempfile.gettempdir(), lambda d: DRILL_PROJECT.match(d.rpartition("-")[0]), True),
    ):
        try:
            found += [
                (os.path.join(where, d), needs_owner)
                for d in sorted(os.listdir(where))
                if named(d) and d != keep and not d.startswith(f"{keep}-")
            ]
        except OSError:
            pass
    for path, needs_owner in found:
        try:
            with open(os.path.join(path, OWNER_FILE), encoding="utf-8") as f:
                if alive(f.read().strip()):
                    continue
        except OSError:
            if needs_owner:
                continue
        try:
            shutil.rmtree(path)
            total.removed.append(f"directory {path}")
        except OSError as exc:
            total.ok = False
            total.error = f"directory {path}: {exc.strerror or exc}"
    return total


def drill_resources(client: DockerClient, project: str | None = None) -> list[str]:
    """What carries the drill label (of ``project``, else of any drill) on the engine:
    ``container NAME``, ``volume NAME``, ``network NAME`` - empty after a clean drill."""
    label = f"{LABEL_DRILL_PROJECT}={project}" if project else LABEL
    out = [f"container {c.name}" for c in containers(client, label)]
    if project:
        out += [f"volume {v.name}" for v in _project_volumes(client, project)]
        out += [
            f"network {n.name}"
            for n in client.networks.list(filters={"label": f"{LABEL_PROJECT}={project}"})
        ]
    else:
        out += [
            f"volume {v.name}"
            for v in client.volumes.list(filters={"name": "-drill-"})
            if DRILL_VOLUME.match(str(v.name))
        ]
    return out
