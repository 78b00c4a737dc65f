"""The Docker engine connection (sources layer).

Uses the Engine API through the ``docker`` SDK, so ``DOCKER_HOST`` (a remote engine, a socket
elsewhere) is honoured like the ``docker`` CLI does. Errors are translated to `SourceError`
sentences; nothing of a container's environment (which holds passwords) is ever put in one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TypedDict

from stackvault.errors import SourceError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

API_TIMEOUT = 120


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect() -> DockerClient:
    """A client of the engine at ``DOCKER_HOST`` (or the default socket), checked with a ping."""
    try:
        import docker
        import docker.errors
    except ImportError as exc:  # pragma: no cover - a dependency
        raise SourceError("the docker Python package is missing; reinstall stackvault") from exc
    try:
        client = docker.from_env(timeout=API_TIMEOUT)
        client.ping()
    except docker.errors.DockerException as exc:
        raise SourceError(
            f"cannot reach the Docker engine at {engine_address()} ({_short(exc)})",
            hint="check that it runs and that DOCKER_HOST points at it",
        ) from exc
    except Exception as exc:
        raise SourceError(
            f"cannot reach the Docker engine at {engine_address()} ({_short(exc)})",
            hint="check that it runs and that DOCKER_HOST points at it",
        ) from exc
    return client


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def api_error(what: str, exc: BaseException) -> SourceError:
    """A `SourceError` for a failed Engine API call."""
    explanation = getattr(exc, "explanation", None)
    detail = explanation if isinstance(explanation, str) and explanation else _short(exc)
    return SourceError(f"{what} failed at the Docker engine: {detail}")


def get_container(client: DockerClient, name: str) -> Container:
    """The container ``name`` (name or id); `SourceError` if there is none."""
    import docker.errors

    try:
        return client.containers.get(name)
    except docker.errors.NotFound as exc:
        raise SourceError(
            f"there is no container {name!r} at the Docker engine {engine_address()}",
            hint="check the name with `docker ps -a`",
        ) from exc
    except docker.errors.DockerException as exc:
        raise api_error(f"looking up container {name!r}", exc) from exc


def require_running(container: Container) -> None:
    container.reload()
    if container.status != "running":
        raise SourceError(
            f"container {container.name} is {container.status}, not running",
            hint=f"start it (`docker start {container.name}`) and try again",
        )


def container_env(container: Container) -> dict[str, str]:
    """The container's configured environment. Holds secrets: never print it."""
    env: dict[str, str] = {}
    for item in container.attrs.get("Config", {}).get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    return env


class ImageFacts(TypedDict):
    """The image a container runs: its tag as configured, image id and repo digests."""

    image: str
    image_id: str
    repo_digests: list[str]


def image_facts(container: Container) -> ImageFacts:
    """The image a container runs: tag as configured, image id, repo digests."""
    image_id = container.attrs.get("Image", "")
    tag = container.attrs.get("Config", {}).get("Image", "")
    digests: list[str] = []
    try:
        image = container.client.images.get(image_id)  # type: ignore[union-attr]
        digests = list(image.attrs.get("RepoDigests") or [])
    except Exception:  # the image may be gone; the id is still recorded
        pass
    return {"image": tag, "image_id": image_id, "repo_digests": digests}
