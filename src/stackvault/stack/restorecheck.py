"""The checks of ``stack restore`` before anything is changed (stack layer): the target
project has no containers, none of the files and volumes it restores exists (nor the plan file
it writes), and every host port the project publishes is free on this host.

The ports are read from the project as ``docker compose config`` resolves it from the
snapshot's own compose files and ``.env``, restored for it into a temporary directory
(`resolve_project`); the same resolved project names the services, volumes and networks that
the restore labels (`stackvault.stack.restorelabels`). A dry run reports every problem; a
restore refuses on the first (naming how many more there are).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stackvault.errors import SourceError, StackvaultError
from stackvault.stack.compose import LABEL_PROJECT
from stackvault.stack.composecli import Compose
from stackvault.stack.portcheck import port_problems, published_ports
from stackvault.stack.restoreplan import plan_file_path
from stackvault.stack.restorereport import Problem
from stackvault.stack.restoretarget import RestoreTarget, restore_files

if TYPE_CHECKING:
    from docker import DockerClient

    from stackvault.repo.repository import Repository
    from stackvault.stack.replace import Replacement


@dataclass
class Resolved:
    """The restored project as ``docker compose config`` resolves it, and the ``version`` of
    its first compose file (None: it has none)."""

    doc: dict[str, Any]
    version: object


def target_problems(
    client: DockerClient, target: RestoreTarget, replacing: Replacement | None = None
) -> list[Problem]:
    """What exists already of what the restore creates; ``replacing``: what ``--replace``
    removes first (of a dry run: it would), which is no problem."""
    import docker.errors

    out: list[Problem] = []
    project = target.new_project
    try:
        existing = client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={project}"})
    except docker.errors.DockerException as exc:
        raise SourceError(f"cannot list the containers of the Docker engine: {exc}") from exc
    existing = [c for c in existing if replacing is None or c.id not in replacing.containers]
    if existing:
        out.append(
            Problem(
                f"Compose project {project} already has {len(existing)} container(s) on this "
                "engine",
                "remove it first (docker compose down, after making sure it holds nothing you "
                "need), restore under another --project, or, if an earlier stack restore left "
                "it half-restored, pass --replace",
            )
        )
    mapped = [target.map_path(p) for p in target.file_entries()]
    mapped.append(plan_file_path(target))
    clashes = [
        p
        for p in mapped
        if os.path.lexists(p)
        and not _empty_dir(p)
        and not (replacing is not None and replacing.covers(p))
    ]
    if clashes:
        out.append(
            Problem(
                f"{clashes[0]} exists already"
                + (f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else "")
                + "; a stack restore never overwrites files",
                "move them away, or restore into another --directory",
            )
        )
    for name in target.volume_targets().values():
        if replacing is not None and name in replacing.volumes:
            continue
        try:
            client.volumes.get(name)
        except docker.errors.NotFound:
            continue
        out.append(
            Problem(
                f"volume {name} exists already",
                f"remove it (docker volume rm {name}) or restore under another --project",
            )
        )
    return out


def resolve_project(
    repo: Repository, target: RestoreTarget, notice: Callable[[str], None]
) -> Resolved | None:
    """The project as ``docker compose config`` resolves it from the snapshot's configuration,
    restored into a temporary directory; None (with a notice why) when the snapshot does not
    hold every compose file or Compose cannot read them there."""
    files = target.plan.compose_files
    held = target.config_entries()
    missing = [
        f
        for f in files
        if not target.in_directory(f)
        or not any(f == e or f.startswith(e.rstrip("/") + "/") for e in held)
    ]
    if not files or missing:
        notice(
            "published ports not checked: "
            + (
                f"the snapshot does not hold {missing[0]}"
                if missing
                else "the plan has no compose files"
            )
        )
        return None
    with tempfile.TemporaryDirectory(prefix="stackvault-restore-") as tmp:
        try:
            restore_files(repo, target, held, into=tmp)
            resolved = resolve_in(target, tmp, [tmp + f[len(target.old_dir) :] for f in files])
        except StackvaultError as exc:
            notice(f"published ports not checked: {exc.message}")
            return None
    return resolved


def resolve_in(target: RestoreTarget, directory: str, files: list[str]) -> Resolved:
    """The project of compose ``files`` in ``directory`` as ``docker compose config`` resolves
    it under the restored project's name; `SourceError` when Compose cannot."""
    doc = _yaml(Compose(target.new_project, directory, files).run("config"))
    if not isinstance(doc.get("services"), dict):
        raise SourceError(f"docker compose config of {files[0]} gave no services")
    return Resolved(doc, _yaml(_read(files[0])).get("version"))


def published_port_problems(
    client: DockerClient, resolved: Resolved, notice: Callable[[str], None]
) -> list[Problem]:
    """The host ports of ``resolved`` that this host cannot give (see `portcheck`)."""
    host = urlsplit(str(getattr(client.api, "base_url", ""))).hostname or ""
    if host not in ("localhost", "localnpipe", "127.0.0.1", "::1"):
        notice(f"published ports not checked: the Docker engine is not on this host ({host})")
        return []
    profiles = frozenset(p for p in os.environ.get("COMPOSE_PROFILES", "").split(",") if p)
    return port_problems(published_ports(resolved.doc["services"], profiles))


def _yaml(text: str) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SourceError(f"the compose file is not valid YAML: {exc}") from exc
    return doc if isinstance(doc, dict) else {}


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from exc


def _empty_dir(path: str) -> bool:
    try:
        return os.path.isdir(path) and not os.listdir(path)
    except OSError:
        return False
