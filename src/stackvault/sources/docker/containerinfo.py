"""A container as its inspect data shows it (sources layer): the mounts a capture takes (each
with its place in the artifact, ``mounts/KEY/``) and the description recorded as
``container.json``.

Used by `stackvault.sources.docker.container`, which documents the artifact.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stackvault.sources.docker.engine import image_facts
from stackvault.sources.docker.mounts import MountSpec

if TYPE_CHECKING:
    from docker.models.containers import Container

MOUNTS_DIR = "mounts"
FORMAT = 1
_CAPTURED_TYPES = ("volume", "bind")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class MountInfo:
    """One entry of a container's ``Mounts``, with its place in the artifact."""

    type: str
    destination: str
    source: str
    """The volume name for a volume, the host path for a bind mount."""
    rw: bool
    key: str = ""

    @property
    def spec(self) -> MountSpec:
        return MountSpec("volume" if self.type == "volume" else "bind", self.source)

    @property
    def prefix(self) -> str:
        return f"{MOUNTS_DIR}/{self.key}"

    def record(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": self.type,
            "destination": self.destination,
            "name" if self.type == "volume" else "source": self.source,
            "rw": self.rw,
            "mode": raw.get("Mode", ""),
            "driver": raw.get("Driver", ""),
            "artifact_dir": self.prefix if self.key else None,
        }


def _below(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def mount_key(destination: str, taken: set[str]) -> str:
    """A stable artifact directory name for a mount destination (``/var/lib/x`` →
    ``var_lib_x``), unique among ``taken``."""
    key = "_".join(_UNSAFE.sub("-", p) for p in destination.strip("/").split("/") if p)
    key = key.strip(".") or "root"
    key = key[:120]
    candidate, n = key, 1
    while candidate in taken:
        n += 1
        candidate = f"{key}~{n}"
    taken.add(candidate)
    return candidate


def container_mounts(
    attrs: dict[str, Any], exclude: Sequence[str]
) -> tuple[list[MountInfo], list[dict[str, Any]], list[str]]:
    """(the mounts to capture, in destination order, with keys; the records of every mount;
    every mount destination of the container)."""
    raw_mounts = sorted(attrs.get("Mounts") or [], key=lambda m: str(m.get("Destination")))
    taken: set[str] = set()
    selected: list[MountInfo] = []
    records: list[dict[str, Any]] = []
    for raw in raw_mounts:
        mtype = str(raw.get("Type") or "")
        dest = str(raw.get("Destination") or "")
        source = str(raw.get("Name") if mtype == "volume" else raw.get("Source") or "")
        info = MountInfo(mtype, dest, source, bool(raw.get("RW", True)))
        reason = None
        if mtype not in _CAPTURED_TYPES:
            reason = f"{mtype} mounts are not captured"
        elif any(_below(dest, e) for e in exclude):
            reason = "excluded"
        if reason is None:
            info = MountInfo(mtype, dest, source, info.rw, mount_key(dest, taken))
            selected.append(info)
        record = info.record(raw)
        record["captured"] = reason is None
        if reason is not None:
            record["reason"] = reason
        records.append(record)
    destinations = [str(m.get("Destination") or "") for m in raw_mounts]
    return selected, records, destinations


def nested(destination: str, all_destinations: Sequence[str]) -> frozenset[str]:
    """The other mount destinations inside ``destination``, relative to it."""
    top = destination.rstrip("/")
    return frozenset(
        d[len(top) + 1 :].strip("/")
        for d in all_destinations
        if d != destination and d.startswith(top + "/")
    )


def describe_container(container: Container, records: list[dict[str, Any]]) -> dict[str, Any]:
    """``container.json`` (see the module doc): never an environment value."""
    attrs = container.attrs
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    env_names = sorted({str(item).partition("=")[0] for item in config.get("Env") or []})
    return {
        "format": FORMAT,
        "name": str(container.name),
        "id": str(container.id),
        "created": attrs.get("Created"),
        **image_facts(container),
        "config": {
            "cmd": config.get("Cmd"),
            "entrypoint": config.get("Entrypoint"),
            "working_dir": config.get("WorkingDir"),
            "user": config.get("User"),
            "env_names": env_names,
            "labels": dict(config.get("Labels") or {}),
            "exposed_ports": sorted(config.get("ExposedPorts") or {}),
            "healthcheck": config.get("Healthcheck"),
            "stop_signal": config.get("StopSignal"),
            "stop_timeout": config.get("StopTimeout"),
        },
        "host_config": {
            "restart_policy": host.get("RestartPolicy"),
            "port_bindings": host.get("PortBindings"),
            "network_mode": host.get("NetworkMode"),
        },
        "mounts": records,
    }
