"""Helper containers and mount I/O (sources layer): a named volume or a host directory of the
engine's host (a bind mount; `MountSpec`) read, counted, written and emptied through helper
containers, and the containers that use it.

Used by `stackvault.sources.docker.volume` and `stackvault.sources.docker.container`, which
document the behaviour; this module holds the mechanics. A helper (`helper`) is created but
never started, with the mount at `MOUNT` (read-only for a read; a volume ``nocopy``, so that an
image's files never land in it), and is read and written through the engine's archive endpoints
(`tarreader`, `tarwriter`); it is removed when the operation ends, also after a failure or an
interrupt. The one helper that runs is the one that empties mounts (`empty_mounts`: ``rm -rf``
as root). Images are never pulled (`pick_image`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from stackvault.errors import SourceError
from stackvault.sources.contract import ArtifactReader, ArtifactSink
from stackvault.sources.docker.engine import api_error, engine_address
from stackvault.sources.docker.tarreader import TreeResult, count_entries, read_tree
from stackvault.sources.docker.tarwriter import tar_stream, tree_entries

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container
    from docker.models.volumes import Volume
    from docker.types import Mount

MOUNT = "/stackvault-data"
"""Where a helper container mounts the volume or directory it reads or writes."""
ROOT = MOUNT.lstrip("/")
HELPER_LABEL = "io.stackvault.helper"
EMPTY_TIMEOUT = 3600.0
_EMPTY_SCRIPT = """set -u
rc=0
for d in "$@"; do
  rm -rf -- "$d"/..?* "$d"/.[!.]* "$d"/* || rc=1
  if [ -n "$(ls -A -- "$d")" ]; then echo "$d is not empty" >&2; rc=1; fi
done
exit $rc
"""


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


def api_call(what: str, fn: Callable[[], Any]) -> Any:
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
    found = api_call(
        f"listing the containers that use {spec.label}",
        lambda: client.containers.list(all=True, filters=filters),
    )
    out = [c for c in found if any(spec.matches(m) for m in c.attrs.get("Mounts") or [])]
    return sorted(out, key=lambda c: str(c.name))


def status_of(container: Container) -> str:
    return str((container.attrs.get("State") or {}).get("Status") or container.status)


def running(containers: Sequence[Container]) -> list[Container]:
    return [c for c in containers if status_of(c) in ("running", "restarting", "paused")]


def pick_image(client: DockerClient, option: str | None, users: Sequence[Container]) -> str:
    """The image for helper containers: ``option`` (the ``helper-image`` option) if given,
    else the image of one of ``users``, else any image present at the engine; never pulled."""
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
    images = api_call("listing images", lambda: client.images.list())
    if images:
        return str(images[0].id)
    raise SourceError(
        f"there is no image at the Docker engine {engine_address()} to create a helper "
        "container from",
        hint="load any small image there (images are never pulled) or pass helper-image=IMAGE",
    )


@contextmanager
def _helper_container(
    client: DockerClient, what: str, image: str, **create: Any
) -> Iterator[Container]:
    """A helper container made from ``image`` with ``create``'s arguments (no network, our
    label, a fresh name); removed on exit, also after a failure or an interrupt. ``what``
    completes "creating a helper container ..." in an error."""
    import secrets

    name = f"stackvault-helper-{secrets.token_hex(6)}"
    container: Container | None = None
    try:
        container = api_call(
            f"creating a helper container {what}",
            lambda: client.containers.create(
                image, name=name, network_mode="none", labels={HELPER_LABEL: "1"}, **create
            ),
        )
        assert container is not None
        yield container
    finally:
        _remove_helper(client, container.id if container is not None else name)


@contextmanager
def helper(
    client: DockerClient, image: str, spec: MountSpec, *, read_only: bool
) -> Iterator[Container]:
    """A created, never started container with ``spec`` mounted at `MOUNT`; removed on exit
    (also after a failure or an interrupt)."""
    with _helper_container(
        client,
        f"for {spec.label}",
        image,
        entrypoint=["/stackvault-helper-never-started"],
        command=[],
        mounts=[spec.mount(MOUNT, read_only=read_only)],
    ) as container:
        yield container


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
    chunks, _stat = api_call(
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


class Written(TypedDict):
    """What `write_mount` wrote: entries below the root, of which files, and their bytes."""

    entries: int
    files: int
    bytes: int


def write_mount(
    client: DockerClient,
    spec: MountSpec,
    image: str,
    reader: ArtifactReader,
    *,
    prefix: str,
    hardlinks: dict[str, str],
) -> Written:
    """Stream the tree below ``prefix`` of ``reader`` into ``spec`` (through a read-write
    helper); the paths are checked before anything is written. A failure half-way (content
    that does not match its record, the engine refusing the archive) raises `SourceError`
    saying that ``spec`` holds part of the artifact."""
    entries = tree_entries(reader, prefix)
    with helper(client, image, spec, read_only=False) as h:
        body = tar_stream(reader, entries, prefix=prefix, root=ROOT, hardlinks=hardlinks)
        try:
            ok = api_call(f"writing into {spec.label}", lambda: h.put_archive("/", body))
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
    paths = [f"/stackvault-empty/{i}" for i in range(len(specs))]
    mounts = [s.mount(p, read_only=False) for s, p in zip(specs, paths, strict=True)]
    mounts += _tool_mounts(template, specs)
    what = ", ".join(s.label for s in specs)
    with _helper_container(
        client,
        f"to empty {what}",
        image or str(template.attrs.get("Image")),
        entrypoint=["sh", "-c", _EMPTY_SCRIPT, "sh", *paths],
        command=[],
        user="0:0",
        mounts=mounts,
    ) as c:
        api_call(f"starting a helper container to empty {what}", lambda: c.start())
        deadline = time.monotonic() + EMPTY_TIMEOUT
        while True:
            api_call("waiting for the helper container", lambda: c.reload())
            if c.status not in ("created", "running", "restarting"):
                break
            if time.monotonic() > deadline:
                raise SourceError(f"emptying {what} did not end within {EMPTY_TIMEOUT:.0f} s")
            time.sleep(0.1)
        code = int((c.attrs.get("State") or {}).get("ExitCode", -1))
        if code != 0:
            logs = api_call("reading the helper's output", lambda: c.logs(stdout=True, stderr=True))
            tail = bytes(logs).decode("utf-8", "replace").strip().splitlines()[-3:]
            raise SourceError(
                f"emptying {what} failed in a helper container from the image of "
                f"{template.name} (exit code {code}: {' | '.join(tail) or 'no output'})",
                hint="the image needs sh, rm and ls; or empty it by hand, or restore into a "
                "new volume",
            )


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
    api_call(f"removing volume {name} to empty it", lambda: volume.remove())
    api_call(
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
