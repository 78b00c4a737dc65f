"""A Docker named volume as a source (sources layer):
``docker-volume://NAME[?mode=hot|cold&helper-image=IMG&stop-timeout=S&stop-grace=S]``.

Everything goes through the Engine API (``DOCKER_HOST`` may name a remote engine): the volume
is read and written through a **helper container** that is created but never started, with
the volume mounted at ``/stackvault-data`` (read-only for a capture; ``nocopy``, so that an
image's files never land in the volume), using the archive endpoints (`archive`). The helper
is removed when the operation ends, also after a failure or an interrupt. Its image is
``helper-image`` if given, else the image of a container that uses the volume, else any image
present at the engine; an image is never pulled.

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

The artifact's tree is then streamed (`archive.tar_stream`, one buffer) into a helper with the
volume mounted read-write: ownership, modes, mtimes, symlinks and hard links come back as they
were; the engine unpacks inside the container's root, so a symlink pointing outside cannot make
it write elsewhere. Entry paths that are absolute or contain ``..`` refuse the restore before
anything is written. `probe` reads the volume like a capture and hashes it: its facts compare
equal with the recorded ones after a faithful restore.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from stackvault.errors import RestoreRefused, SourceError, UsageError
from stackvault.sources.base import (
    ArtifactReader,
    ArtifactSink,
    RestoreOptions,
    Source,
)
from stackvault.sources.docker.archive import (
    TreeResult,
    count_entries,
    read_tree,
    tar_stream,
    tree_entries,
)
from stackvault.sources.docker.engine import api_error, connect, engine_address
from stackvault.sources.docker.quiesce import DEFAULT_GRACE, DEFAULT_TIMEOUT, Quiesce
from stackvault.sources.url import SourceURL

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container
    from docker.models.volumes import Volume
    from docker.types import Mount

MOUNT = "/stackvault-data"
"""Where a helper container mounts the volume or directory it reads or writes."""
ROOT = MOUNT.lstrip("/")
PREFIX = "data"
FORMAT = 1
HELPER_LABEL = "io.stackvault.helper"
EMPTY_TIMEOUT = 3600.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OPTIONS = frozenset({"mode", "helper-image", "stop-timeout", "stop-grace"})
_EMPTY_SCRIPT = """set -u
rc=0
for d in "$@"; do
  rm -rf -- "$d"/..?* "$d"/.[!.]* "$d"/* || rc=1
  if [ -n "$(ls -A -- "$d")" ]; then echo "$d is not empty" >&2; rc=1; fi
done
exit $rc
"""


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


# --- mounts and helper containers -----------------------------------------------------------


@dataclass(frozen=True)
class MountSpec:
    """A volume (``source`` = its name) or a host directory of the engine's host (a bind
    mount, ``source`` = its path) to read or write through a helper container."""

    kind: Literal["volume", "bind"]
    source: str

    @property
    def label(self) -> str:
        return f"volume {self.source}" if self.kind == "volume" else f"bind mount {self.source}"

    def mount(self, target: str, *, read_only: bool) -> Mount:
        from docker.types import Mount

        if self.kind == "volume":
            return Mount(target, self.source, type="volume", read_only=read_only, no_copy=True)
        return Mount(target, self.source, type="bind", read_only=read_only)

    def matches(self, mount: dict[str, Any]) -> bool:
        """True if ``mount`` (an entry of a container's ``Mounts``) is this volume or dir."""
        if self.kind == "volume":
            return mount.get("Type") == "volume" and mount.get("Name") == self.source
        return mount.get("Type") == "bind" and mount.get("Source") == self.source


def _call(what: str, fn: Callable[[], Any]) -> Any:
    """Run an Engine API call; `SourceError` (via `api_error`) for any failure of it."""
    import docker.errors
    import requests.exceptions

    try:
        return fn()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise api_error(what, exc) from exc


def users_of(client: DockerClient, spec: MountSpec) -> list[Container]:
    """The containers (in any state) that mount ``spec``, by name."""
    filters: dict[str, str | list[str] | bool] | None = (
        {"volume": spec.source} if spec.kind == "volume" else None
    )
    found = _call(
        f"listing the containers that use {spec.label}",
        lambda: client.containers.list(all=True, filters=filters),
    )
    out = [c for c in found if any(spec.matches(m) for m in c.attrs.get("Mounts") or [])]
    return sorted(out, key=lambda c: str(c.name))


def _status(container: Container) -> str:
    return str((container.attrs.get("State") or {}).get("Status") or container.status)


def running(containers: Sequence[Container]) -> list[Container]:
    return [c for c in containers if _status(c) in ("running", "restarting", "paused")]


def pick_image(client: DockerClient, option: str | None, users: Sequence[Container]) -> str:
    """The image for helper containers (see the module doc); never pulled."""
    import docker.errors

    if option:
        try:
            return str(client.images.get(option).id)
        except docker.errors.ImageNotFound as exc:
            raise SourceError(
                f"the helper image {option!r} is not present at the Docker engine "
                f"{engine_address()}",
                hint="images are never pulled: load or build it there, or leave out helper-image",
            ) from exc
        except docker.errors.DockerException as exc:
            raise api_error(f"looking up image {option!r}", exc) from exc
    for user in users:
        image_id = user.attrs.get("Image")
        if image_id:
            return str(image_id)
    images = _call("listing images", lambda: client.images.list())
    if images:
        return str(images[0].id)
    raise SourceError(
        f"there is no image at the Docker engine {engine_address()} to create a helper "
        "container from",
        hint="load any small image there (images are never pulled) or pass helper-image=IMAGE",
    )


@contextmanager
def helper(
    client: DockerClient, image: str, spec: MountSpec, *, read_only: bool
) -> Iterator[Container]:
    """A created, never started container with ``spec`` mounted at `MOUNT`; removed on exit
    (also after a failure or an interrupt)."""
    import secrets

    name = f"stackvault-helper-{secrets.token_hex(6)}"
    container: Container | None = None
    try:
        container = _call(
            f"creating a helper container for {spec.label}",
            lambda: client.containers.create(
                image,
                entrypoint=["/stackvault-helper-never-started"],
                command=[],
                name=name,
                mounts=[spec.mount(MOUNT, read_only=read_only)],
                network_mode="none",
                labels={HELPER_LABEL: "1"},
            ),
        )
        assert container is not None
        yield container
    finally:
        _remove_helper(client, container.id if container is not None else name)


def _remove_helper(client: DockerClient, ref: str | None) -> None:
    import docker.errors

    if ref is None:
        return
    try:
        client.api.remove_container(ref, force=True, v=False)
    except docker.errors.NotFound:
        pass
    except Exception:  # never hide the real outcome behind a cleanup failure
        pass


def _archive(container: Container, path: str, what: str) -> Iterator[bytes]:
    chunks, _stat = _call(
        f"reading the archive of {what}", lambda: container.get_archive(path, chunk_size=1 << 20)
    )
    return iter(chunks)


def read_mount(
    client: DockerClient,
    spec: MountSpec,
    image: str,
    *,
    sink: ArtifactSink | None,
    prefix: str,
    notice: Callable[[str], None] | None = None,
    exclude: frozenset[str] = frozenset(),
    what: str | None = None,
) -> TreeResult:
    """Read ``spec``'s tree through a read-only helper into ``sink`` below ``prefix`` (hash
    only without a sink), leaving out the relative paths in ``exclude``.

    Always through a helper, never through the archive endpoint of a container that uses the
    volume: the engine keeps a container locked while its archive is read, so ``docker
    inspect``, ``exec`` and ``stop`` of the application would hang for the whole capture."""
    what = what or spec.label
    with helper(client, image, spec, read_only=True) as h:
        chunks = _archive(h, MOUNT, what)
        try:
            return read_tree(
                chunks, what=what, sink=sink, prefix=prefix, notice=notice, exclude=exclude
            )
        finally:
            _close(chunks)


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            pass


def count_mount(
    client: DockerClient, spec: MountSpec, image: str, *, exclude: frozenset[str] = frozenset()
) -> tuple[int, bool]:
    """How many entries ``spec`` holds apart from ``exclude`` (relative paths: the mount
    points of nested mounts); at most 1000 are counted, then ``(1000, True)``."""
    with helper(client, image, spec, read_only=True) as h:
        chunks = _archive(h, MOUNT, spec.label)
        try:
            return count_entries(chunks, what=spec.label, exclude=exclude)
        finally:
            _close(chunks)


def describe_count(spec: MountSpec, count: tuple[int, bool]) -> str:
    n, capped = count
    return f"{spec.label} holds {'at least ' if capped else ''}{n} entries"


def write_mount(
    client: DockerClient,
    spec: MountSpec,
    image: str,
    reader: ArtifactReader,
    *,
    prefix: str,
    hardlinks: dict[str, str],
) -> dict[str, int]:
    """Stream the tree below ``prefix`` of ``reader`` into ``spec`` (through a read-write
    helper); the paths are checked before anything is written. A failure half-way (content
    that does not match its record, the engine refusing the archive) raises `SourceError`
    saying that ``spec`` holds part of the artifact."""
    entries = tree_entries(reader, prefix)
    with helper(client, image, spec, read_only=False) as h:
        body = tar_stream(reader, entries, prefix=prefix, root=ROOT, hardlinks=hardlinks)
        try:
            ok = _call(f"writing into {spec.label}", lambda: h.put_archive("/", body))
        except SourceError as exc:
            raise SourceError(
                f"{exc.message}; {spec.label} now holds part of the artifact",
                hint=exc.hint or "restore again with --overwrite",
            ) from exc
        if not ok:
            raise SourceError(f"the Docker engine did not unpack the archive into {spec.label}")
    files = [e for e in entries if e.kind == "file"]
    return {
        "entries": len(entries) - 1,
        "files": len(files),
        "bytes": sum(e.size for e in files),
    }


# --- emptying ---------------------------------------------------------------------------------


def empty_mounts(
    client: DockerClient,
    specs: Sequence[MountSpec],
    template: Container,
    *,
    image: str | None = None,
) -> None:
    """Delete everything in ``specs`` by running ``rm -rf`` as root in a helper started from
    ``template``'s image (or ``image``) with each spec at ``/stackvault-empty/N`` and
    `template`'s other mounts (its tools may live there) — except those at or below a
    destination where ``template`` mounts one of ``specs``: a nested mount point would be busy;
    `SourceError` unless it exits 0 and they are empty."""
    import secrets

    paths = [f"/stackvault-empty/{i}" for i in range(len(specs))]
    mounts = [s.mount(p, read_only=False) for s, p in zip(specs, paths, strict=True)]
    mounts += _tool_mounts(template, specs)
    what = ", ".join(s.label for s in specs)
    name = f"stackvault-helper-{secrets.token_hex(6)}"
    container: Container | None = None
    try:
        container = _call(
            f"creating a helper container to empty {what}",
            lambda: client.containers.create(
                image or str(template.attrs.get("Image")),
                entrypoint=["sh", "-c", _EMPTY_SCRIPT, "sh", *paths],
                command=[],
                name=name,
                user="0:0",
                mounts=mounts,
                network_mode="none",
                labels={HELPER_LABEL: "1"},
            ),
        )
        assert container is not None
        c = container
        _call(f"starting a helper container to empty {what}", lambda: c.start())
        deadline = time.monotonic() + EMPTY_TIMEOUT
        while True:
            _call("waiting for the helper container", lambda: c.reload())
            if c.status not in ("created", "running", "restarting"):
                break
            if time.monotonic() > deadline:
                raise SourceError(f"emptying {what} did not end within {EMPTY_TIMEOUT:.0f} s")
            time.sleep(0.1)
        code = int((c.attrs.get("State") or {}).get("ExitCode", -1))
        if code != 0:
            logs = _call("reading the helper's output", lambda: c.logs(stdout=True, stderr=True))
            tail = bytes(logs).decode("utf-8", "replace").strip().splitlines()[-3:]
            raise SourceError(
                f"emptying {what} failed in a helper container from the image of "
                f"{template.name} (exit code {code}: {' | '.join(tail) or 'no output'})",
                hint="the image needs sh, rm and ls; or empty it by hand, or restore into a "
                "new volume",
            )
    finally:
        _remove_helper(client, container.id if container is not None else name)


def _tool_mounts(template: Container, specs: Sequence[MountSpec]) -> list[Mount]:
    """``template``'s volume and bind mounts, read-only, minus ``specs`` and what lies at or
    below their destinations."""
    raw = [m for m in template.attrs.get("Mounts") or [] if m.get("Type") in ("volume", "bind")]
    busy = [str(m.get("Destination")) for m in raw if any(s.matches(m) for s in specs)]
    out: list[Mount] = []
    for m in raw:
        dest = str(m.get("Destination"))
        if any(dest == b or dest.startswith(b.rstrip("/") + "/") for b in busy):
            continue
        kind: Literal["volume", "bind"] = "volume" if m.get("Type") == "volume" else "bind"
        source = str(m.get("Name") if kind == "volume" else m.get("Source"))
        out.append(MountSpec(kind, source).mount(dest, read_only=True))
    return out


def recreate_volume(client: DockerClient, volume: Volume, image: str) -> None:
    """Remove ``volume`` and create it again with its driver, options and labels; then check
    that it is empty (`SourceError` otherwise, e.g. a local volume bound to a host dir)."""
    attrs = volume.attrs
    name = str(attrs.get("Name") or volume.name)
    driver = str(attrs.get("Driver") or "local")
    options = dict(attrs.get("Options") or {})
    labels = dict(attrs.get("Labels") or {})
    _call(f"removing volume {name} to empty it", lambda: volume.remove())
    _call(
        f"creating volume {name} again",
        lambda: client.volumes.create(
            name=name, driver=driver, driver_opts=options or None, labels=labels or None
        ),
    )
    spec = MountSpec("volume", name)
    count = count_mount(client, spec, image)
    if count[0]:
        raise SourceError(
            f"volume {name} was removed and created again but still holds files "
            f"({describe_count(spec, count)}; its driver keeps them elsewhere)",
            hint="empty its storage by hand, or restore into a new volume",
        )


# --- the source -------------------------------------------------------------------------------


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
            paused = [c.name for c in live if _status(c) == "paused"]
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

    def restore(self, reader: ArtifactReader, options: RestoreOptions) -> dict[str, Any]:
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
            _call(
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
        return {"volume": self.volume, "created": created, "emptied": emptied, **written}

    def probe(self) -> dict[str, Any]:
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
