"""The drill's sandbox (stack layer): the labels of everything a drill creates, the checks that
keep it off production's paths and names, and the compose file that puts every service in one
loopback-only network namespace (see `stackvault.stack.drill`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from stackvault.errors import (
    RestoreRefused,
    SourceError,
)
from stackvault.records.stack import StackManifest
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.classify import DATABASE_ROLES
from stackvault.stack.composecli import Compose
from stackvault.stack.drill.labels import (
    LABEL,
    LABEL_DRILL_PROJECT,
    LABEL_OWNER,
    SANDBOX_SUFFIX,
    owner,
)
from stackvault.stack.drill.outbound import blank_outbound, outbound_patterns

if TYPE_CHECKING:
    from docker import DockerClient


_SANDBOX_LOOP = "trap 'exit 0' TERM INT; while :; do sleep 1; done"
_REMOVED_KEYS = (
    "ports",
    "expose",
    "networks",
    "links",
    "external_links",
    "hostname",
    "domainname",
    "extra_hosts",
    "dns",
    "dns_search",
    "dns_opt",
    "mac_address",
)


def refuse_shared_paths(m: StackManifest, root: str, drill_project: str) -> None:
    """Stop before anything is changed when the drill would share a name or path with
    production."""
    if drill_project == m.project:
        raise RestoreRefused(f"the drill project {drill_project} is production's name")
    prod = (m.directory or "").rstrip("/")
    if prod and (
        root == prod or root.startswith(prod + "/") or prod.startswith(root.rstrip("/") + "/")
    ):
        raise RestoreRefused(
            f"the drill directory {root} lies inside production's {prod} (or contains it)",
            hint="pass a --workdir outside the stack's directory",
        )
    if os.path.lexists(root):
        raise RestoreRefused(f"{root} exists already", hint="wait a second and drill again")


DRILL_COMPOSE = ".stackvault-drill-compose.yaml"
"""The drill's own compose file, in the drill's project directory (`_Sandbox.isolate`)."""


def for_drill(snapshot: Snapshot, m: StackManifest) -> Snapshot:
    """``snapshot`` as the drill hands it to `restore_stack` (in memory only): the plan's
    HTTP probes left out (the restore would send them from this host, where they reach
    production; the drill sends them from inside its sandbox), and the compose files
    replaced by the drill's own `DRILL_COMPOSE`, which exists only once `_Sandbox.isolate`
    wrote it: should the restore ever start a service without the drill having isolated
    the project first, Compose finds no file and nothing starts."""
    stack = dict(snapshot.stack or {})
    plan = dict(stack.get("plan") or {})
    plan["probes"] = []
    plan["compose_files"] = [os.path.join((m.directory or "").rstrip("/"), DRILL_COMPOSE)]
    stack["plan"] = plan
    return replace(snapshot, stack=stack)


# --- isolation ---------------------------------------------------------------------------


class _Sandbox:
    """The drill's network namespace and compose file (see the module docstring)."""

    def __init__(self, client: DockerClient, drill_id: str, project: str, root: str) -> None:
        self.client = client
        self.drill_id = drill_id
        self.project = project
        self.root = root
        self.name = project + SANDBOX_SUFFIX
        self.notice: Callable[[str], None] = lambda _m: None
        self.blanked: list[str] = []
        """The outbound settings `isolate` emptied (``SERVICE: NAME``)."""

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.drill_id, LABEL_DRILL_PROJECT: self.project, LABEL_OWNER: owner()}

    def isolate(self, m: StackManifest, directory: str) -> None:
        """Read the restored project as Compose resolves it, refuse what would reach
        production, start the sandbox and write the drill's compose file (`DRILL_COMPOSE`,
        the only one the restore's Compose reads; the restored files stay as they were), with
        the preset's outbound settings emptied (`blank_outbound`)."""
        import yaml

        old_dir = (m.directory or "").rstrip("/")
        files = [
            directory + f[len(old_dir) :] if old_dir and f.startswith(old_dir + "/") else f
            for f in m.plan.compose_files
        ]
        outside = [f for f in files if not f.startswith(self.root + "/")]
        if not files or outside:
            raise RestoreRefused(
                "the stack's compose files are not inside its directory"
                + (f" ({outside[0]})" if outside else "")
                + "; a drill cannot use them without touching production's"
            )
        doc = yaml.safe_load(Compose(self.project, directory, files).run("config"))
        if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
            raise SourceError("docker compose config gave no services for the drill")
        for clash in shared_ports(doc["services"]):
            self.notice(clash)
        problems = self.problems(doc)
        if problems:
            raise RestoreRefused(
                f"{problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                + "; the drill stopped before starting anything",
                hint="a drill never shares a path, volume or namespace with production",
            )
        self.blanked = blank_outbound(doc["services"], outbound_patterns(m.preset))
        if self.blanked:
            self.notice(f"outbound settings emptied: {', '.join(self.blanked)}")
        databases = [n for n, s in m.services.items() if s.role in DATABASE_ROLES]
        self.start(doc, databases)
        target = os.path.join(directory, DRILL_COMPOSE)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the environment
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yaml.safe_dump(self.transform(doc), out, sort_keys=False)

    def problems(self, doc: dict[str, Any]) -> list[str]:
        """What in the resolved project would reach production's state."""
        out: list[str] = []
        volumes = doc.get("volumes") or {}
        for vname, v in volumes.items():
            v = v or {}
            if v.get("external"):
                out.append(f"volume {vname} is external (production's)")
            elif v.get("name") and not str(v["name"]).startswith(self.project):
                out.append(f"volume {vname} has the fixed name {v['name']}")
        for name, s in doc["services"].items():
            s = s or {}
            if s.get("volumes_from"):
                out.append(f"service {name} uses volumes_from")
            for key in ("pid", "ipc"):
                if s.get(key) == "host":
                    out.append(f"service {name} uses {key}: host")
            for mount in s.get("volumes") or []:
                kind, source, read_only = _mount(mount)
                if kind != "bind":
                    continue
                if source.endswith("docker.sock"):
                    out.append(f"service {name} mounts the Docker socket {source}")
                elif not read_only and not (
                    source == self.root or source.startswith(self.root + "/")
                ):
                    out.append(f"service {name} mounts {source} writable, outside the drill")
        return out

    def start(self, doc: dict[str, Any], databases: Sequence[str]) -> None:
        """Create and start the sandbox: the image of a database service (else the first
        service) with that service's read-only bind mounts, no network but loopback, each
        service name mapped to 127.0.0.1."""
        import docker.errors

        services: dict[str, Any] = doc["services"]
        chosen = next((n for n in databases if n in services), next(iter(services)))
        spec = services[chosen] or {}
        binds: dict[str, dict[str, str]] = {}
        for mount in spec.get("volumes") or []:
            kind, source, read_only = _mount(mount)
            target = _mount_target(mount)
            if kind == "bind" and read_only and target:
                binds[source] = {"bind": target, "mode": "ro"}
        try:
            container = self.client.containers.run(
                str(spec.get("image") or ""),
                entrypoint=["sh", "-c", _SANDBOX_LOOP],
                name=self.name,
                detach=True,
                network_mode="none",
                extra_hosts={n: "127.0.0.1" for n in host_names(services)},
                labels=self.labels,
                volumes=binds,
                user="0:0",
            )
        except docker.errors.DockerException as exc:
            raise SourceError(f"the drill's sandbox container could not start: {exc}") from exc
        for _ in range(50):
            container.reload()
            if container.status == "running":
                return
            if container.status in ("exited", "dead"):
                break
            time.sleep(0.1)
        raise SourceError(
            f"the drill's sandbox container {self.name} ({spec.get('image')}) did not keep "
            f"running (status {container.status}): its image needs sh"
        )

    def transform(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The drill's compose document: every service in the sandbox's namespace, nothing
        published, names and labels of the drill."""
        out = {k: v for k, v in doc.items() if k != "networks"}
        services: dict[str, Any] = {}
        for name, spec in doc["services"].items():
            s = {k: v for k, v in (spec or {}).items() if k not in _REMOVED_KEYS}
            s["network_mode"] = f"container:{self.name}"
            if "container_name" in s:
                s["container_name"] = f"{self.project}-{name}"
            labels = _labels(s.get("labels"))
            s["labels"] = {**labels, **self.labels}
            services[name] = s
        out["services"] = services
        return out


def shared_ports(services: dict[str, Any]) -> list[str]:
    """Ports that several services declare (``ports`` or ``expose``, the container's side):
    in the drill's one namespace only one of them can listen on it (told as a notice; the
    service that cannot start then fails the drill by name)."""
    users: dict[str, list[str]] = {}
    for name, spec in services.items():
        spec = spec or {}
        for entry in [*(spec.get("ports") or []), *(spec.get("expose") or [])]:
            if isinstance(entry, dict):
                port = str(entry.get("target") or "")
            else:
                port = str(entry).rsplit(":", 1)[-1].split("/")[0]
            if port and name not in users.setdefault(port, []):
                users[port].append(name)
    return [
        f"services {', '.join(names)} all use port {port}: in the drill's one network "
        "namespace only one of them can listen on it"
        for port, names in sorted(users.items())
        if len(names) > 1
    ]


def host_names(services: dict[str, Any]) -> list[str]:
    """Every name the services of a resolved compose document reach each other by: service
    names, container names and network aliases (all mapped to 127.0.0.1 in the sandbox)."""
    names: list[str] = []
    for name, spec in services.items():
        spec = spec or {}
        found = [name, spec.get("container_name")]
        networks = spec.get("networks")
        if isinstance(networks, dict):
            for net in networks.values():
                found += list((net or {}).get("aliases") or [])
        names += [str(n) for n in found if n and str(n) not in names]
    return names


def _labels(value: object) -> dict[str, str]:
    """A service's labels as a mapping (``docker compose config`` may write a list)."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for item in value if isinstance(value, list) else []:
        key, _, val = str(item).partition("=")
        out[key] = val
    return out


def _mount(mount: object) -> tuple[str, str, bool]:
    """(``bind`` | ``volume`` | other, source, read-only) of a service's volume entry as
    ``docker compose config`` writes it (short string or long mapping)."""
    if isinstance(mount, dict):
        kind = str(mount.get("type") or "volume")
        return kind, str(mount.get("source") or ""), bool(mount.get("read_only"))
    parts = str(mount).split(":")
    if len(parts) == 1:
        return "volume", "", False
    source = parts[0]
    read_only = len(parts) > 2 and "ro" in parts[2].split(",")
    kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
    return kind, source, read_only


def _mount_target(mount: object) -> str:
    if isinstance(mount, dict):
        return str(mount.get("target") or "")
    parts = str(mount).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


# --- probes ------------------------------------------------------------------------------
