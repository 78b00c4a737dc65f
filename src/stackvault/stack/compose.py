"""What the Docker engine knows about a Compose project (stack layer).

Compose (v1 and v2 alike) labels every container it creates with its project, service,
working directory and compose files. `discover` reads those labels through the Engine API
(so ``DOCKER_HOST`` may point at a remote engine), plus each container's image (tag, id,
digests), mounts, command, health and the *names* of its environment variables, and - from
the working directory, when it is readable here - the compose files (``depends_on``,
``profiles``) and the ``.env`` file.

Contract: nothing here changes anything; secret values are read only into `Project.env`
(the ``.env`` file's values, kept for preset checks such as "``SECRET_KEY`` is the public
default") and never printed or returned in `Project.describe`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackvault.errors import SourceError, UsageError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_WORKDIR = "com.docker.compose.project.working_dir"
LABEL_FILES = "com.docker.compose.project.config_files"
LABEL_ONEOFF = "com.docker.compose.oneoff"
LABEL_NUMBER = "com.docker.compose.container-number"
LABEL_VOLUME = "com.docker.compose.volume"


@dataclass(frozen=True)
class Mount:
    """One mount of a service's container: a host directory (``bind``) or a named volume."""

    type: str
    """``bind``, ``volume`` (or ``tmpfs``, which holds nothing to back up)."""
    source: str
    """The host path of a bind mount, the name of a volume."""
    destination: str
    read_only: bool = False


@dataclass
class Service:
    """One Compose service as it runs now (its first container when scaled)."""

    name: str
    containers: list[str]
    state: str
    """``running``, ``exited``, ``paused``, …"""
    health: str | None
    image: str
    image_id: str
    digests: list[str]
    command: list[str]
    user: str
    mounts: list[Mount]
    env_names: list[str]
    depends_on: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)

    @property
    def container(self) -> str:
        return self.containers[0]

    def env_has(self, *names: str) -> bool:
        return any(n in self.env_names for n in names)


@dataclass
class Project:
    """A Compose project as found on the engine."""

    name: str
    working_dir: str | None
    config_files: list[str]
    services: dict[str, Service]
    env_file: str | None
    env: dict[str, str] = field(repr=False, default_factory=dict)
    """The ``.env`` values (secrets among them): for checks only, never printed."""
    compose_error: str | None = None
    """Why the compose files could not be read (the plan then lacks depends_on/profiles)."""

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary without any secret value."""
        return {
            "project": self.name,
            "working_dir": self.working_dir,
            "config_files": self.config_files,
            "env_file": self.env_file,
            "env_names": sorted(self.env),
            "services": {
                s.name: {
                    "containers": s.containers,
                    "state": s.state,
                    "health": s.health,
                    "image": s.image,
                    "image_id": s.image_id,
                    "digests": s.digests,
                    "mounts": [m.__dict__ for m in s.mounts],
                    "env_names": s.env_names,
                    "depends_on": s.depends_on,
                    "profiles": s.profiles,
                }
                for s in self.services.values()
            },
        }


def list_projects(client: DockerClient) -> dict[str, int]:
    """Compose projects on the engine and how many containers each has."""
    out: dict[str, int] = {}
    for c in _containers(client, None):
        name = c.labels.get(LABEL_PROJECT, "")
        out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items()))


def discover(client: DockerClient, project: str | None = None) -> Project:
    """The project ``project`` (the only one on the engine when None); `UsageError` when it
    has no containers or, without a name, there is not exactly one project."""
    if project is None:
        names = list_projects(client)
        if len(names) != 1:
            listed = ", ".join(names) or "none"
            raise UsageError(
                f"the Docker engine runs {len(names)} Compose projects ({listed}); name one "
                "with --project"
            )
        project = next(iter(names))
    containers = [
        c for c in _containers(client, project) if c.labels.get(LABEL_ONEOFF, "False") != "True"
    ]
    if not containers:
        known = ", ".join(list_projects(client)) or "none"
        raise UsageError(
            f"the Docker engine has no containers of Compose project {project!r} (projects "
            f"found: {known}); start it (docker compose up -d) before discovering it"
        )
    containers.sort(key=lambda c: (c.labels.get(LABEL_SERVICE, ""), _number(c)))
    labels = containers[0].labels
    working_dir = labels.get(LABEL_WORKDIR) or None
    files = [f for f in (labels.get(LABEL_FILES) or "").split(",") if f]
    if working_dir:
        files = [f if os.path.isabs(f) else os.path.join(working_dir, f) for f in files]
    services: dict[str, Service] = {}
    for c in containers:
        name = str(c.labels.get(LABEL_SERVICE) or c.name)
        if name in services:
            services[name].containers.append(str(c.name))
            continue
        services[name] = _service(name, c)
    env_file = None
    env: dict[str, str] = {}
    if working_dir and os.path.isfile(os.path.join(working_dir, ".env")):
        env_file = os.path.join(working_dir, ".env")
        env = read_env_file(env_file)
    found = Project(project, working_dir, files, services, env_file, env)
    found.compose_error = _read_compose(found)
    return found


def _containers(client: DockerClient, project: str | None) -> list[Container]:
    import docker.errors

    label = LABEL_PROJECT if project is None else f"{LABEL_PROJECT}={project}"
    try:
        return list(client.containers.list(all=True, filters={"label": label}))
    except docker.errors.DockerException as exc:
        raise SourceError(
            f"cannot list the containers of the Docker engine: {exc}",
            hint="check that the engine runs and DOCKER_HOST points at it",
        ) from exc


def _number(c: Container) -> int:
    try:
        return int(c.labels.get(LABEL_NUMBER, "1"))
    except ValueError:
        return 1


def _service(name: str, c: Container) -> Service:
    attrs = c.attrs
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    mounts = [
        Mount(
            type=str(m.get("Type", "")),
            source=str(m.get("Source") if m.get("Type") == "bind" else m.get("Name", "")),
            destination=str(m.get("Destination", "")),
            read_only=not m.get("RW", True),
        )
        for m in attrs.get("Mounts") or []
    ]
    mounts.sort(key=lambda m: m.destination)
    from stackvault.sources.docker.engine import image_facts

    image = image_facts(c)
    env_names = sorted(str(e).split("=", 1)[0] for e in config.get("Env") or [])
    command = [str(a) for a in (config.get("Entrypoint") or []) + (config.get("Cmd") or [])]
    return Service(
        name=name,
        containers=[str(c.name)],
        state=str(state.get("Status", "unknown")),
        health=(state.get("Health") or {}).get("Status"),
        image=str(image["image"]),
        image_id=str(image["image_id"]),
        digests=list(image["repo_digests"]),
        command=command,
        user=str(config.get("User") or ""),
        mounts=mounts,
        env_names=env_names,
    )


def read_env_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of a Compose ``.env`` file (comments, blank lines and ``export``
    skipped; surrounding quotes removed)."""
    out: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key.strip()] = value
    return out


def _read_compose(project: Project) -> str | None:
    """Fill ``depends_on`` and ``profiles`` from the compose files; an error message or None."""
    import yaml

    for path in project.config_files:
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
        except yaml.YAMLError as exc:
            return f"{path} is not valid YAML: {exc}"
        services = (doc or {}).get("services") if isinstance(doc, dict) else None
        if not isinstance(services, dict):
            continue
        for name, spec in services.items():
            svc = project.services.get(str(name))
            if svc is None or not isinstance(spec, dict):
                continue
            deps = spec.get("depends_on") or []
            names = list(deps) if isinstance(deps, dict | list) else []
            for dep in names:
                if str(dep) not in svc.depends_on:
                    svc.depends_on.append(str(dep))
            profiles = spec.get("profiles") or []
            if isinstance(profiles, list):
                svc.profiles = [str(p) for p in profiles]
    return None
