"""What the application presets share (stack layer): finding an application's services by
image, where they keep their data, and recording it in the plan.

Contract: nothing here reads a secret's value; secret *names* only are added to a plan.
"""

from __future__ import annotations

from collections.abc import Iterable

from stackvault.records.plan import Plan
from stackvault.stack.classify import image_repository
from stackvault.stack.compose import Mount, Project, Service


def image_matches(service: Service, repositories: Iterable[str]) -> bool:
    """Whether ``service`` runs one of ``repositories`` (``n8nio/n8n``), with or without its
    registry (``docker.n8n.io/n8nio/n8n:1.80`` matches ``n8nio/n8n``) and tag."""
    repo = image_repository(service.image)
    return any(repo == r or repo.endswith("/" + r) for r in repositories)


def services_running(project: Project, repositories: Iterable[str]) -> list[Service]:
    """The services of ``project`` whose image is one of ``repositories``, by name."""
    wanted = tuple(repositories)
    return sorted(
        (s for s in project.services.values() if image_matches(s, wanted)), key=lambda s: s.name
    )


def data_mount(service: Service, destinations: Iterable[str]) -> Mount | None:
    """The writable bind mount or named volume of ``service`` at one of ``destinations``
    (the first that matches, in their order), else None."""
    for dest in destinations:
        for m in service.mounts:
            if (
                m.type in ("bind", "volume")
                and not m.read_only
                and m.destination.rstrip("/") == dest.rstrip("/")
            ):
                return m
    return None


def describe_mount(mount: Mount) -> str:
    """``/srv/n8n/data`` or ``volume n8n_data``: how the plan captures it."""
    return mount.source if mount.type == "bind" else f"volume {mount.source}"


def note_capture(plan: Plan, mount: Mount, note: str) -> None:
    """Set ``note`` on the plan entry that captures ``mount`` (its path or its volume
    source)."""
    if mount.type == "bind":
        for p in plan.paths:
            if p.path == mount.source:
                p.note = note
        return
    for s in plan.sources:
        if s.url.startswith(f"docker-volume://{mount.source}?") or s.url == (
            f"docker-volume://{mount.source}"
        ):
            s.note = note


def add_secret_names(plan: Plan, project: Project, names: Iterable[str]) -> None:
    """Add to the plan's secret names those of ``names`` that the ``.env`` file or a service's
    environment defines (names only; the list stays sorted)."""
    defined = set(project.env)
    for s in project.services.values():
        defined.update(s.env_names)
    plan.secrets = sorted(set(plan.secrets) | (set(names) & defined))


def stop_for_cut(plan: Plan, services: Iterable[Service], why: str) -> None:
    """Mark ``services`` ``stop: true`` (stopped for a strict cut), saying ``why`` in the
    reason of those the generic plan did not stop."""
    for svc in services:
        sp = plan.services.get(svc.name)
        if sp is not None and not sp.stop:
            sp.stop = True
            sp.reason = f"{sp.reason}; stopped for the cut: {why}"


def capture_kept(plan: Plan, capture: object) -> bool:
    """Whether the plan still captures ``capture`` (as `describe_mount` wrote it into the
    preset's facts at discovery: a path, or ``volume NAME``) - the operator may have removed
    it while editing the plan."""
    if not isinstance(capture, str) or not capture:
        return False
    if capture.startswith("volume "):
        name = capture[len("volume ") :]
        return any(
            s.url == f"docker-volume://{name}" or s.url.startswith(f"docker-volume://{name}?")
            for s in plan.sources
        )
    return any(p.path == capture for p in plan.paths)
