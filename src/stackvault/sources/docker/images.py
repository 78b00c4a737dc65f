"""Docker images as a source (sources layer): ``docker-images://?tags=TAG,TAG…``.

So that a stack can be restored on a host without registry access, ``stack backup
--with-images`` stores the images its services run. Each image is streamed from the engine
as ``docker save`` writes it (``GET /images/{name}/get``, by tag so the archive carries the
tag) into ``images/<id>.tar``, one file per image id: the repository's chunking deduplicates
the layers across backups, so an unchanged image costs nothing the next day. Its size and
SHA-256 as stored are checked against what was read.

Restore (``docker-images://``) loads every image whose tag is **missing** on the target engine
(``POST /images/load``, streamed from the repository) and tags it as recorded; a tag that
exists already is left alone and reported (it may be another build: the stack restore's
version guard decides about it). Nothing on the engine is ever replaced.

Facts: ``{"images": {TAG: IMAGE_ID}}``; `probe` gives the same for the URL's tags as the
engine has them now (a missing tag is left out).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypedDict

from stackvault.errors import SourceError, UsageError
from stackvault.sources.contract import (
    ArtifactReader,
    ArtifactRestoreOptions,
    ArtifactSink,
    EntryMeta,
    Source,
)
from stackvault.sources.url import SourceURL

if TYPE_CHECKING:
    from docker import DockerClient

MANIFEST = "images.json"
_CHUNK = 1 << 20


class _Stream:
    """A ``docker save`` response as a readable stream."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readinto(self, buf: memoryview) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buf), len(self._buf))
        buf[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def read(self, n: int = -1) -> bytes:
        out = bytearray(n if n > 0 else _CHUNK)
        got = self.readinto(memoryview(out))
        return bytes(out[:got])


class ImagesFacts(TypedDict):
    """The images an artifact holds (or an engine has): image id by tag."""

    images: dict[str, str]


class ImagesRestored(TypedDict):
    """What loading images did: the tags loaded, and those the engine had already."""

    loaded: list[str]
    present: list[str]


class ImagesSource(Source):
    """The images of the tags in the URL, on the engine at ``DOCKER_HOST``."""

    kind = "docker-images"
    schemes = ("docker-images",)

    def __init__(self, name: str, location: str, tags: list[str]) -> None:
        super().__init__(name, location)
        self.tags = tags
        self._client: DockerClient | None = None

    @classmethod
    def from_url(cls, url: SourceURL) -> ImagesSource:
        url.require_options(frozenset({"tags"}))
        if url.host:
            raise UsageError(
                f"{url.redacted}: write docker-images://?tags=TAG,TAG (the engine is DOCKER_HOST)"
            )
        tags = [t for t in url.query.get("tags", "").split(",") if t]
        location = "docker-images://" + (f"?tags={','.join(tags)}" if tags else "")
        return cls(url.artifact_name("images"), location, tags)

    def client(self) -> DockerClient:
        if self._client is None:
            from stackvault.sources.docker.engine import connect

            self._client = connect()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _image_id(self, tag: str) -> str | None:
        import docker.errors

        try:
            return str(self.client().images.get(tag).id)
        except docker.errors.ImageNotFound:
            return None

    def capture(self, sink: ArtifactSink) -> dict[str, Any]:
        import docker.errors

        from stackvault.sources.docker.engine import api_error

        if not self.tags:
            raise UsageError(f"{self.location} names no image: add ?tags=TAG,TAG")
        by_id: dict[str, list[str]] = {}
        for tag in self.tags:
            image_id = self._image_id(tag)
            if image_id is None:
                raise SourceError(f"image {tag} is not on the Docker engine; nothing was recorded")
            by_id.setdefault(image_id, []).append(tag)
        files: dict[str, Any] = {}
        for image_id, tags in by_id.items():
            path = f"images/{image_id.split(':', 1)[-1]}.tar"
            try:
                chunks = self.client().api.get_image(tags[0], chunk_size=_CHUNK)
                stored = sink.add_file(path, _Stream(iter(chunks)), EntryMeta(mode=0o600))
            except docker.errors.DockerException as exc:
                raise api_error(f"saving image {tags[0]}", exc) from exc
            if stored.size == 0:
                raise SourceError(f"the engine sent nothing for image {tags[0]}")
            files[image_id] = {
                "tags": tags,
                "file": path,
                "size": stored.size,
                "sha256": stored.sha256,
            }
        sink.add_json(MANIFEST, {"format": 1, "images": files}, EntryMeta(mode=0o600))
        return {
            "facts": {"images": {t: i for i, info in files.items() for t in info["tags"]}},
            "images": files,
            "bytes": sum(int(f["size"]) for f in files.values()),
        }

    def probe(self) -> ImagesFacts:
        images = {t: i for t in self.tags if (i := self._image_id(t)) is not None}
        return {"images": images}

    def describe_target(self) -> str | None:
        return None  # loading only adds missing images

    def restore(self, reader: ArtifactReader, options: ArtifactRestoreOptions) -> ImagesRestored:
        import docker.errors

        from stackvault.sources.docker.engine import api_error

        manifest = reader.read_json(MANIFEST)
        images: dict[str, Any] = manifest.get("images") or {}
        loaded: list[str] = []
        present: list[str] = []
        api = self.client().api
        for image_id, info in images.items():
            tags = [str(t) for t in info.get("tags") or []]
            missing = [t for t in tags if self._image_id(t) is None]
            present += [t for t in tags if t not in missing]
            if not missing:
                continue
            stream = reader.open(str(info["file"]))

            def chunks(src: Any = stream) -> Iterator[bytes]:
                while part := src.read(_CHUNK):
                    yield part

            try:
                for _ in api.load_image(chunks(), quiet=True):  # type: ignore[no-untyped-call]
                    pass
                for tag in missing:
                    repo, _, version = tag.rpartition(":")
                    if not repo or "/" in version:
                        repo, version = tag, "latest"
                    api.tag(image_id, repo, version)
            except docker.errors.DockerException as exc:
                raise api_error(f"loading image {missing[0]}", exc) from exc
            if self._image_id(missing[0]) != image_id:
                raise SourceError(f"image {missing[0]} was loaded but has another id")
            loaded += missing
            options.notice(f"loaded image {', '.join(missing)} ({int(info['size']) >> 20} MiB)")
        for tag in present:
            options.notice(f"image {tag} is on the engine already; it was left as it is")
        return {"loaded": loaded, "present": present}
