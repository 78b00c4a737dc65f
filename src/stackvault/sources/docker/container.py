"""A Docker container's data as a source (sources layer):
``docker-container://NAME[?mode=hot|cold&exclude=/A,/B&stop-timeout=S&stop-grace=S&helper-image=IMG]``.

Captures every named volume and bind mount of the container (``Mounts`` of its inspect data,
types ``volume`` and ``bind``; tmpfs and others are listed as not captured), plus a description
of the container. Each mount is read through a helper container (created from the container's
image, never started) that mounts the volume, or the bind mount's host directory, read-only:
one way for volumes and bind mounts, for running and stopped containers, local or remote
engines. (Not through the container's own archive endpoint: the engine keeps a container
locked while its archive is read, so ``docker inspect``, ``exec``, health checks and ``stop``
of the application would hang for the whole capture.) A mount nested inside another is
captured on its own and left out of the outer one, with its mount point.

Options: ``mode``, ``stop-timeout``, ``stop-grace``, ``helper-image`` as for
`stackvault.sources.docker.volume` (``cold`` stops this container during the capture and
starts it again afterwards, whatever happens); ``exclude``: comma-separated mount destinations
not to capture (with what lies below them), e.g. ``exclude=/usr,/etc`` for read-only system
directories bind-mounted into the container; ``name`` (default ``container-NAME``).

**Artifact.**

- ``container.json``: name, id, image (as configured), image id, repo digests, the config —
  cmd, entrypoint, working dir, user, labels, exposed ports, healthcheck, stop signal and
  timeout — and host config (restart policy, port bindings, network mode), and the mounts
  (type, volume name or host path, destination, read-write, where in the artifact). The
  environment is recorded by **variable names only**: values often are passwords, and even a
  hash of a short password can be reversed by guessing. (Cmd, entrypoint, labels and the
  healthcheck are recorded as they are: do not put secrets there.)
- ``mounts/KEY/``: each captured mount's tree as `stackvault.sources.docker.volume` stores a
  volume (``KEY`` is the destination with ``/`` as ``_``, e.g. ``var_lib_postgresql_data``;
  its directory carries the mount root's owner and mode).

**Facts.** ``{"mounts": {DESTINATION: tree facts}}`` (`archive.TreeFacts`).

**Restore** into ``docker-container://NAME``. If the container exists, each recorded mount goes
back into the container's mount at the same destination (whatever volume or host directory it is
now; a destination the container no longer mounts fails the restore before anything is
written); if it does not exist, into the recorded volume names (created when missing) and host
paths, and a notice says that the container itself is not recreated. Writing goes through
helper containers (a bind mount is reached by mounting its host path — a path on the engine's
host — into the helper), so read-only mounts are restored too. A running container is stopped
for the restore and started again afterwards (with the guarantees of `quiesce`); a target that
another running container uses refuses the restore. Non-empty targets are refused without
``overwrite``; with it they are emptied first, by ``rm -rf`` in a helper made from the
container's image with its other mounts, read-only (so its shell is there). Without the
container, a volume nobody uses is removed and created again instead, and a non-empty bind
mount is refused (empty it by hand). `probe` reads the mounts like a capture.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.contract import ArtifactReader, ArtifactRestoreOptions, ArtifactSink, Source
from stackvault.sources.docker.containerinfo import (
    FORMAT,
    MountInfo,
    container_mounts,
    describe_container,
    nested,
)
from stackvault.sources.docker.engine import api_error, connect, get_container
from stackvault.sources.docker.mounts import (
    MountSpec,
    count_mount,
    describe_count,
    empty_mounts,
    pick_image,
    read_mount,
    recreate_volume,
    running,
    users_of,
    write_mount,
)
from stackvault.sources.docker.quiesce import Quiesce, StopRecord
from stackvault.sources.docker.tarreader import TreeFactsJSON, TreeResult
from stackvault.sources.docker.tarwriter import tree_entries
from stackvault.sources.docker.volume import StopOptions, url_name
from stackvault.sources.url import SourceURL

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

CONTAINER_JSON = "container.json"
_OPTIONS = frozenset({"mode", "exclude", "helper-image", "stop-timeout", "stop-grace"})


@dataclass
class _Target:
    """Where one recorded mount is restored."""

    destination: str
    prefix: str
    spec: MountSpec
    hardlinks: dict[str, str]


class ContainerFacts(TypedDict):
    """A container's facts: the tree facts of each captured mount, by destination."""

    mounts: dict[str, TreeFactsJSON]


class MountRestored(TypedDict):
    """One mount of a container restore: where, into what, whether it was created or emptied
    first, and what was written (`mounts.Written`)."""

    destination: str
    target: str
    created: bool
    emptied: bool
    entries: int
    files: int
    bytes: int


class ContainerRestored(TypedDict):
    """What a container restore did, mount by mount, and the containers it stopped."""

    container: str
    container_exists: bool
    mounts: list[MountRestored]
    stopped: list[StopRecord]


class ContainerSource(Source):
    """``docker-container://NAME`` (see the module doc)."""

    kind: ClassVar[str] = "docker-container"
    schemes: ClassVar[tuple[str, ...]] = ("docker-container",)
    file_like: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        location: str,
        container: str,
        stop: StopOptions,
        exclude: Sequence[str],
        helper_image: str | None,
    ) -> None:
        super().__init__(name, location)
        self.container_name = container
        self.stop = stop
        self.exclude = list(exclude)
        self.helper_image = helper_image
        self._client: DockerClient | None = None
        self._restored: list[_Target] | None = None

    @classmethod
    def from_url(cls, url: SourceURL) -> ContainerSource:
        url.require_options(_OPTIONS)
        container = url_name(url, "container")
        exclude = [p.strip() for p in url.query.get("exclude", "").split(",") if p.strip()]
        for path in exclude:
            if not path.startswith("/"):
                raise UsageError(
                    f"option exclude of {url.redacted} lists {path!r}; give mount destinations "
                    "as absolute paths, e.g. exclude=/usr,/etc"
                )
        return cls(
            url.artifact_name(f"container-{container}"),
            url.redacted,
            container,
            StopOptions.from_url(url),
            exclude,
            url.query.get("helper-image") or None,
        )

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def _find(self) -> Container | None:
        import docker.errors

        try:
            return self.client.containers.get(self.container_name)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise api_error(f"looking up container {self.container_name!r}", exc) from exc

    def _read(
        self,
        image: str,
        mount: MountInfo,
        destinations: Sequence[str],
        sink: ArtifactSink | None,
    ) -> TreeResult:
        return read_mount(
            self.client,
            mount.spec,
            image,
            sink=sink,
            prefix=mount.prefix,
            notice=sink.notice if sink is not None else None,
            exclude=nested(mount.destination, destinations),
            what=f"mount {mount.destination} of container {self.container_name}",
        )

    # --- capture ----------------------------------------------------------------------------

    def capture(self, sink: ArtifactSink) -> dict[str, Any]:
        t0 = time.monotonic()
        container = get_container(self.client, self.container_name)
        mounts, records, destinations = container_mounts(container.attrs, self.exclude)
        for record in records:
            if not record["captured"]:
                sink.notice(
                    f"mount {record['destination']} of container {container.name} is not "
                    f"captured ({record['reason']})"
                )
        if not mounts:
            sink.notice(f"container {container.name} has no volume or bind mount to capture")
        to_stop: list[Container] = []
        if self.stop.cold:
            if container.status == "paused":
                raise SourceError(
                    f"container {container.name} is paused; a cold capture needs it stopped",
                    hint="unpause it (`docker unpause`) or stop it first",
                )
            if container.status in ("running", "restarting"):
                to_stop = [container]
        elif container.status in ("running", "restarting", "paused"):
            sink.notice(
                f"container {container.name} is captured hot (it keeps running): a live "
                "database should be captured with mode=cold or through its database source"
            )
        quiesce = Quiesce(
            self.client,
            to_stop,
            timeout=self.stop.timeout,
            grace=self.stop.grace,
            notice=sink.notice,
        )
        image = pick_image(self.client, self.helper_image, [container])
        facts: dict[str, TreeFactsJSON] = {}
        per_mount: list[dict[str, Any]] = []
        with quiesce:
            for mount in mounts:
                result = self._read(image, mount, destinations, sink)
                facts[mount.destination] = result.facts.as_dict()
                per_mount.append(
                    {"destination": mount.destination, "key": mount.key, **result.metadata()}
                )
        described = describe_container(container, records)
        sink.add_json(CONTAINER_JSON, described)
        return {
            "format": FORMAT,
            "facts": {"mounts": facts},
            "consistency": "cold" if self.stop.cold else "hot",
            "stopped": quiesce.record(),
            "container": {
                "name": described["name"],
                "id": described["id"][:12],
                "image": described["image"],
                "image_id": described["image_id"],
            },
            "mounts": per_mount,
            "duration_s": round(time.monotonic() - t0, 3),
        }

    # --- restore ----------------------------------------------------------------------------

    def _targets(self, reader: ArtifactReader, container: Container | None) -> list[_Target]:
        described = reader.read_json(CONTAINER_JSON)
        recorded = [m for m in described.get("mounts") or [] if m.get("captured")]
        hardlinks = {
            str(m.get("destination")): dict(m.get("hardlinks") or {})
            for m in reader.metadata.get("mounts") or []
        }
        live: dict[str, MountInfo] = {}
        if container is not None:
            live = {m.destination: m for m in container_mounts(container.attrs, [])[0]}
        targets: list[_Target] = []
        missing: list[str] = []
        for m in recorded:
            dest = str(m["destination"])
            prefix = str(m["artifact_dir"])
            if container is not None:
                now = live.get(dest)
                if now is None:
                    missing.append(dest)
                    continue
                spec = now.spec
            elif m.get("type") == "volume":
                spec = MountSpec("volume", str(m["name"]))
            else:
                spec = MountSpec("bind", str(m["source"]))
            targets.append(_Target(dest, prefix, spec, hardlinks.get(dest, {})))
        if missing:
            raise SourceError(
                f"container {self.container_name} has no mount at {', '.join(missing)}, which "
                "the artifact holds; nothing was restored",
                hint="recreate the container with its mounts (e.g. `docker compose up "
                "--no-start`) and restore again",
            )
        return targets

    def describe_target(self) -> str | None:
        container = self._find()
        if container is None:
            return None
        mounts, _records, destinations = container_mounts(container.attrs, self.exclude)
        image = pick_image(self.client, self.helper_image, [container])
        held = []
        for mount in mounts:
            inner = nested(mount.destination, destinations)
            count = count_mount(self.client, mount.spec, image, exclude=inner)
            if count[0]:
                held.append(f"{mount.destination}: {describe_count(mount.spec, count)}")
        return f"container {container.name}: {'; '.join(held)}" if held else None

    def restore(self, reader: ArtifactReader, options: ArtifactRestoreOptions) -> ContainerRestored:
        container = self._find()
        if container is None:
            options.notice(
                f"container {self.container_name} does not exist: its volumes and bind mounts "
                "are restored by their recorded names; the container itself is not recreated"
            )
        targets = self._targets(reader, container)
        for target in targets:
            tree_entries(reader, target.prefix)  # unsafe paths refuse before anything is written
        users = self._other_users(targets, container)
        image = pick_image(
            self.client,
            self.helper_image,
            [container] if container is not None else [u for us in users.values() for u in us],
        )
        full = self._holding_data(targets, container, image, options)
        if full and container is None:
            for target in full:
                if target.spec.kind == "bind" or users[target.destination]:
                    raise RestoreRefused(
                        f"{target.spec.label} is not empty and container "
                        f"{self.container_name} does not exist to empty it with; nothing was "
                        "changed",
                        hint="empty it by hand, or recreate the container first",
                    )
        to_stop = [container] if container is not None and running([container]) else []
        quiesce = Quiesce(
            self.client,
            to_stop,
            timeout=self.stop.timeout,
            grace=self.stop.grace,
            notice=options.notice,
            action="restore",
        )
        with quiesce:
            if full:
                self._empty(full, container, image, options)
            done = [
                self._write(reader, target, image, emptied=target in full) for target in targets
            ]
        self._restored = targets
        return {
            "container": self.container_name,
            "container_exists": container is not None,
            "mounts": done,
            "stopped": quiesce.record(),
        }

    def _other_users(
        self, targets: list[_Target], container: Container | None
    ) -> dict[str, list[Container]]:
        """Per target destination, the other containers using its volume or directory;
        `RestoreRefused` if one of them is running."""
        users: dict[str, list[Container]] = {}
        for target in targets:
            others = [
                c
                for c in users_of(self.client, target.spec)
                if container is None or c.id != container.id
            ]
            busy = running(others)
            if busy:
                names = " ".join(str(c.name) for c in busy)
                raise RestoreRefused(
                    f"{target.spec.label} (mount {target.destination}) is also used by running "
                    f"container(s) {names}; nothing was changed",
                    hint=f"stop them first (`docker stop {names}`)",
                )
            users[target.destination] = others
        return users

    def _holding_data(
        self,
        targets: list[_Target],
        container: Container | None,
        image: str,
        options: ArtifactRestoreOptions,
    ) -> list[_Target]:
        """The targets that hold data now; `RestoreRefused` for the first without
        ``overwrite``."""
        full: list[_Target] = []
        destinations = [t.destination for t in targets]
        if container is not None:
            destinations = container_mounts(container.attrs, [])[2]
        for target in targets:
            if target.spec.kind == "volume" and self._volume(target.spec.source) is None:
                continue
            inner = nested(target.destination, destinations)
            count = count_mount(self.client, target.spec, image, exclude=inner)
            if count[0]:
                full.append(target)
                if not options.overwrite:
                    raise RestoreRefused(
                        f"{describe_count(target.spec, count)} (mount {target.destination} of "
                        f"container {self.container_name}); nothing was changed",
                        hint="pass --overwrite to replace it",
                    )
        return full

    def _empty(
        self,
        full: list[_Target],
        container: Container | None,
        image: str,
        options: ArtifactRestoreOptions,
    ) -> None:
        """Empty the targets that hold data: through the container's mounts, or (no
        container) by recreating each volume."""
        options.notice("emptying " + ", ".join(t.spec.label for t in full) + " before the restore")
        if container is not None:
            empty_mounts(self.client, [t.spec for t in full], container)
        else:
            for target in full:
                volume = self._volume(target.spec.source)
                assert volume is not None
                recreate_volume(self.client, volume, image)

    def _write(
        self, reader: ArtifactReader, target: _Target, image: str, *, emptied: bool
    ) -> MountRestored:
        """Write one target's tree (creating its volume if it is missing); its entry of the
        restore's ``mounts``."""
        created = False
        if target.spec.kind == "volume" and self._volume(target.spec.source) is None:
            self._create_volume(target.spec.source)
            created = True
        written = write_mount(
            self.client,
            target.spec,
            image,
            reader,
            prefix=target.prefix,
            hardlinks=target.hardlinks,
        )
        return {
            "destination": target.destination,
            "target": target.spec.label,
            "created": created,
            "emptied": emptied,
            "entries": written["entries"],
            "files": written["files"],
            "bytes": written["bytes"],
        }

    def _volume(self, name: str) -> Any:
        import docker.errors

        try:
            return self.client.volumes.get(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise api_error(f"looking up volume {name!r}", exc) from exc

    def _create_volume(self, name: str) -> None:
        import docker.errors

        try:
            self.client.volumes.create(name=name)
        except docker.errors.DockerException as exc:
            raise api_error(f"creating volume {name!r}", exc) from exc

    # --- probe ------------------------------------------------------------------------------

    def probe(self) -> ContainerFacts:
        container = self._find()
        facts: dict[str, TreeFactsJSON] = {}
        if container is not None:
            mounts, _records, destinations = container_mounts(container.attrs, self.exclude)
            image = pick_image(self.client, self.helper_image, [container])
            for mount in mounts:
                result = self._read(image, mount, destinations, None)
                facts[mount.destination] = result.facts.as_dict()
            return {"mounts": facts}
        if self._restored is None:
            get_container(self.client, self.container_name)  # raises: no such container
            raise SourceError(f"container {self.container_name} cannot be probed")
        image = pick_image(self.client, self.helper_image, [])
        destinations = [t.destination for t in self._restored]
        for target in self._restored:
            result = read_mount(
                self.client,
                target.spec,
                image,
                sink=None,
                prefix=target.prefix,
                exclude=nested(target.destination, destinations),
            )
            facts[target.destination] = result.facts.as_dict()
        return {"mounts": facts}
