"""A Docker named volume as a source (sources layer):
``docker-volume://NAME[?mode=hot|cold&helper-image=IMG&stop-timeout=S&stop-grace=S]``.

Everything goes through the Engine API (``DOCKER_HOST`` may name a remote engine): the volume
is read and written through a **helper container** (`mounts`) that is created but never
started, with the volume mounted at ``/stackvault-data`` (read-only for a capture; ``nocopy``,
so that an image's files never land in the volume), using the archive endpoints
(`tarreader`, `tarwriter`). The helper is removed when the operation ends, also after a failure
or an interrupt. Its image is ``helper-image`` if given, else the image of a container that
uses the volume, else any image present at the engine; an image is never pulled.

Options:

================  ==========================================================================
``mode``          ``hot`` (default): nothing is stopped; the metadata says
                  ``"consistency": "hot"`` and a notice warns that a live database volume
                  should be captured cold or through its database source. ``cold``: every
                  running container that mounts the volume is stopped for the capture and
                  started again afterwards, whatever happens (`quiesce`); a paused one is
                  refused
``stop-timeout``  seconds a container may take to stop before the engine kills it (default
                  60, like ``docker stop -t``)
``stop-grace``    seconds the engine may take beyond that (default 30); a container not
                  stopped by then aborts the capture, naming it
``helper-image``  the image of the helper container (must be present at the engine)
``name``          the artifact's name (default ``volume-NAME``)
================  ==========================================================================

**Artifact.** ``data/``: the volume's tree. The directory ``data`` itself carries the volume
root's mode, owner and mtime (databases check the ownership of their data directory); below it
every directory, regular file, symlink (target kept as it is, never followed) and hard link with
mode (incl. setuid/setgid/sticky), uid, gid and mtime (whole seconds: the engine's archive
truncates them), and the ``security.capability`` attributes the engine passes. Fifos, sockets
and devices are skipped with a notice and listed in the metadata. Unchanged files are read again
on every capture (the archive stream carries them anyway) and deduplicated by the repository.

**Metadata.** ``facts`` (`archive.TreeFacts`: root mode/owner, file, directory, symlink and
hard-link counts, bytes, per-file SHA-256), ``consistency`` (``hot``/``cold``), ``stopped``
(per container: seconds to stop, seconds down), ``used_by``, the volume's driver, labels and
driver option *names* (values may hold credentials), the helper image, hard links, skipped
entries, timings.

**Restore** into ``docker-volume://NAME``: a missing volume is created (local driver, the
recorded labels). `describe_target` reads the volume's archive to count its entries (at most
1000, then "at least"). A non-empty volume is refused without ``overwrite``; with it, the volume
is emptied first:

- not used by any container (running or not): removed and created again with the same driver,
  driver options and labels, then checked to be empty (a local volume bound to a host
  directory keeps its files, which fails the restore before anything is written);
- used only by stopped containers: a helper made from the image of one of them, with that
  container's other mounts read-only (its shell and tools may live there) and the volume at
  ``/stackvault-empty/0``, runs ``rm -rf`` as root and checks that the volume is empty;
- used by a running container: refused (`RestoreRefused`), for any restore: stop it first.

The artifact's tree is then streamed (`tarwriter.tar_stream`, one buffer) into a helper with the
volume mounted read-write: ownership, modes, mtimes, symlinks and hard links come back as they
were; the engine unpacks inside the container's root, so a symlink pointing outside cannot make
it write elsewhere. Entry paths that are absolute or contain ``..`` refuse the restore before
anything is written. `probe` reads the volume like a capture and hashes it: its facts compare
equal with the recorded ones after a faithful restore.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict
from urllib.parse import unquote, urlsplit

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.contract import (
    ArtifactReader,
    ArtifactRestoreOptions,
    ArtifactSink,
    Source,
)
from stackvault.sources.docker.engine import api_error, connect, engine_address
from stackvault.sources.docker.mounts import (
    MountSpec,
    api_call,
    count_mount,
    describe_count,
    empty_mounts,
    pick_image,
    read_mount,
    recreate_volume,
    running,
    status_of,
    users_of,
    write_mount,
)
from stackvault.sources.docker.quiesce import DEFAULT_GRACE, DEFAULT_TIMEOUT, Quiesce
from stackvault.sources.docker.tarreader import TreeFactsJSON
from stackvault.sources.docker.tarwriter import tree_entries
from stackvault.sources.url import SourceURL

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container
    from docker.models.volumes import Volume

PREFIX = "data"
FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OPTIONS = frozenset({"mode", "helper-image", "stop-timeout", "stop-grace"})


# --- URLs and options ------------------------------------------------------------------------


def url_name(url: SourceURL, what: str) -> str:
    """The volume or container name of ``docker-volume://NAME`` (case kept: the URL's host
    part is case-folded by parsers, so it is taken from the raw URL)."""
    parts = urlsplit(url.raw)
    name = unquote(parts.netloc)
    path = url.path.strip("/")
    if name and path:
        raise UsageError(f"{url.redacted} has a path; write it as {url.scheme}://NAME")
    name = name or path
    if not _NAME.match(name):
        raise UsageError(
            f"{url.redacted} does not name a {what}; write it as {url.scheme}://NAME "
            "(letters, digits, '_', '.', '-')"
        )
    return name


@dataclass(frozen=True)
class StopOptions:
    """The quiesce options shared by the volume and container sources."""

    cold: bool
    timeout: float
    grace: float

    @classmethod
    def from_url(cls, url: SourceURL) -> StopOptions:
        mode = url.query.get("mode", "hot").lower()
        if mode not in ("hot", "cold"):
            raise UsageError(f"option mode={mode!r} of {url.redacted} must be hot or cold")
        return cls(
            cold=mode == "cold",
            timeout=url.number("stop-timeout", DEFAULT_TIMEOUT),
            grace=url.number("stop-grace", DEFAULT_GRACE, minimum=1),
        )


# --- the source -------------------------------------------------------------------------------


class VolumeRestored(TypedDict):
    """What a volume restore did: the volume, whether it was created or emptied first, and
    what was written (`mounts.Written`)."""

    volume: str
    created: bool
    emptied: bool
    entries: int
    files: int
    bytes: int


class VolumeSource(Source):
    """``docker-volume://NAME`` (see the module doc)."""

    kind: ClassVar[str] = "docker-volume"
    schemes: ClassVar[tuple[str, ...]] = ("docker-volume",)
    file_like: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        location: str,
        volume: str,
        stop: StopOptions,
        helper_image: str | None,
    ) -> None:
        super().__init__(name, location)
        self.volume = volume
        self.stop = stop
        self.helper_image = helper_image
        self._client: DockerClient | None = None

    @classmethod
    def from_url(cls, url: SourceURL) -> VolumeSource:
        url.require_options(_OPTIONS)
        volume = url_name(url, "volume")
        return cls(
            url.artifact_name(f"volume-{volume}"),
            url.redacted,
            volume,
            StopOptions.from_url(url),
            url.query.get("helper-image") or None,
        )

    # --- engine -----------------------------------------------------------------------------

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client

    @property
    def spec(self) -> MountSpec:
        return MountSpec("volume", self.volume)

    def _get_volume(self) -> Volume | None:
        import docker.errors

        try:
            return self.client.volumes.get(self.volume)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise api_error(f"looking up volume {self.volume!r}", exc) from exc

    def _require_volume(self) -> Volume:
        volume = self._get_volume()
        if volume is None:
            raise SourceError(
                f"there is no volume {self.volume!r} at the Docker engine {engine_address()}",
                hint="check the name with `docker volume ls`",
            )
        return volume

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    # --- capture ----------------------------------------------------------------------------

    def capture(self, sink: ArtifactSink) -> dict[str, Any]:
        t0 = time.monotonic()
        volume = self._require_volume()
        users = users_of(self.client, self.spec)
        image = pick_image(self.client, self.helper_image, users)
        live = running(users)
        to_stop: list[Container] = []
        if self.stop.cold:
            paused = [c.name for c in live if status_of(c) == "paused"]
            if paused:
                raise SourceError(
                    f"container(s) {', '.join(map(str, paused))} using volume {self.volume} "
                    "are paused; a cold capture needs them stopped",
                    hint="unpause them (`docker unpause`) or stop them first",
                )
            to_stop = live
        elif live:
            names = ", ".join(str(c.name) for c in live)
            sink.notice(
                f"volume {self.volume} is captured hot while {names} use(s) it: a live "
                "database volume should be captured with mode=cold or through its database "
                "source"
            )
        quiesce = Quiesce(
            self.client,
            to_stop,
            timeout=self.stop.timeout,
            grace=self.stop.grace,
            notice=sink.notice,
        )
        with quiesce:
            t1 = time.monotonic()
            result = read_mount(
                self.client, self.spec, image, sink=sink, prefix=PREFIX, notice=sink.notice
            )
            read_s = time.monotonic() - t1
        attrs = volume.attrs
        return {
            "format": FORMAT,
            "facts": result.facts.as_dict(),
            "consistency": "cold" if self.stop.cold else "hot",
            "stopped": quiesce.record(),
            "used_by": [str(c.name) for c in users],
            "volume": {
                "name": self.volume,
                "driver": attrs.get("Driver"),
                "labels": dict(attrs.get("Labels") or {}),
                "driver_options": sorted(dict(attrs.get("Options") or {})),
                "created": attrs.get("CreatedAt"),
            },
            "helper_image": image,
            **result.metadata(),
            "stream_bytes": result.stream_bytes,
            "read_s": round(read_s, 3),
            "duration_s": round(time.monotonic() - t0, 3),
        }

    # --- restore ----------------------------------------------------------------------------

    def describe_target(self) -> str | None:
        volume = self._get_volume()
        if volume is None:
            return None
        users = users_of(self.client, self.spec)
        image = pick_image(self.client, self.helper_image, users)
        count = count_mount(self.client, self.spec, image)
        return describe_count(self.spec, count) if count[0] else None

    def restore(self, reader: ArtifactReader, options: ArtifactRestoreOptions) -> VolumeRestored:
        hardlinks = artifact_hardlinks(reader.metadata)
        tree_entries(reader, PREFIX)  # refuse unsafe paths before touching anything
        volume = self._get_volume()
        users = users_of(self.client, self.spec) if volume is not None else []
        live = running(users)
        if live:
            names = " ".join(str(c.name) for c in live)
            raise RestoreRefused(
                f"volume {self.volume} is used by running container(s) {names}; "
                "nothing was changed",
                hint=f"stop them first (`docker stop {names}`), restore, then start them",
            )
        image = pick_image(self.client, self.helper_image, users)
        created = emptied = False
        if volume is None:
            labels = dict((reader.metadata.get("volume") or {}).get("labels") or {})
            api_call(
                f"creating volume {self.volume}",
                lambda: self.client.volumes.create(name=self.volume, labels=labels or None),
            )
            created = True
        else:
            count = count_mount(self.client, self.spec, image)
            if count[0]:
                if not options.overwrite:
                    raise RestoreRefused(
                        f"{describe_count(self.spec, count)}; nothing was changed",
                        hint="pass --overwrite to replace its content",
                    )
                options.notice(f"emptying volume {self.volume} before the restore")
                if users:
                    empty_mounts(self.client, [self.spec], users[0])
                else:
                    recreate_volume(self.client, volume, image)
                emptied = True
        written = write_mount(
            self.client, self.spec, image, reader, prefix=PREFIX, hardlinks=hardlinks
        )
        return {
            "volume": self.volume,
            "created": created,
            "emptied": emptied,
            "entries": written["entries"],
            "files": written["files"],
            "bytes": written["bytes"],
        }

    def probe(self) -> TreeFactsJSON:
        self._require_volume()
        users = users_of(self.client, self.spec)
        image = pick_image(self.client, self.helper_image, users)
        result = read_mount(self.client, self.spec, image, sink=None, prefix=PREFIX)
        return result.facts.as_dict()


def artifact_hardlinks(metadata: dict[str, Any], key: str = "hardlinks") -> dict[str, str]:
    """The hard links recorded in an artifact's metadata (path → first path), checked."""
    raw = metadata.get(key) or {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items()}
