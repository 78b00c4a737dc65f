"""A stack's images at restore time (stack layer): the ones a snapshot holds (``stack backup
--with-images``), loading those this engine lacks, and the version guard.

The guard: every image the manifest recorded must be on this engine under its tag, and an
image *older* than the recorded one is refused unless ``force`` (the application migrated its
schema forward; an older image cannot run it). A newer or different image is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from stackvault.engine.artifact_restore import restore_artifact
from stackvault.engine.progress import Progress
from stackvault.errors import RestoreRefused, SourceError
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.restorereport import Validation

if TYPE_CHECKING:
    from docker import DockerClient

    from stackvault.records.artifact import ArtifactRecord
    from stackvault.records.stack import ServiceRecord
    from stackvault.repo.repository import Repository


def images_record(snapshot: Snapshot) -> ArtifactRecord | None:
    """The snapshot's complete ``docker-images`` artifact record, if it has one."""
    return next(
        (a for a in snapshot.artifacts if a.kind == "docker-images" and a.complete),
        None,
    )


def loadable_images(snapshot: Snapshot) -> set[str]:
    """The image tags the snapshot holds."""
    record = images_record(snapshot)
    return set(((record.metadata if record else None) or {}).get("facts", {}).get("images") or {})


def missing_images(client: DockerClient, snapshot: Snapshot) -> list[str]:
    """The tags the snapshot holds that this engine lacks, sorted (to load before the guard)."""
    import docker.errors

    missing = []
    for tag in sorted(loadable_images(snapshot)):
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            missing.append(tag)
    return missing


def load_images(
    repo: Repository, snapshot: Snapshot, progress: Progress, notice: Callable[[str], None]
) -> Validation:
    """Load the images the snapshot holds (never replacing a tag); the validation entry."""
    record = images_record(snapshot)
    assert record is not None
    tags = sorted(loadable_images(snapshot))
    result = restore_artifact(
        repo,
        snapshot,
        record.name,
        "docker-images://?tags=" + ",".join(tags),
        progress=progress,
        notice=notice,
    )
    return Validation(
        "images",
        not result.differences,
        f"loaded {', '.join(result.details.get('loaded') or []) or 'none'}"
        if not result.differences
        else "; ".join(result.differences[:5]),
    )


def version_guard(
    client: DockerClient,
    services: dict[str, ServiceRecord],
    force: bool,
    loadable: set[str],
    *,
    notice: Callable[[str], None],
) -> None:
    """Check the engine's images against the manifest's ``services`` (see the module
    docstring); ``loadable`` tags count as present. Raises `SourceError` for a missing image,
    `RestoreRefused` for an older one unless ``force``."""
    import docker.errors

    missing: list[str] = []
    older: list[str] = []
    for name, svc in services.items():
        tag = svc.image
        if not tag:
            continue
        try:
            image = client.images.get(tag)
        except docker.errors.ImageNotFound:
            if tag not in loadable:
                missing.append(f"{tag} (service {name})")
            continue
        if svc.image_id and image.id != svc.image_id:
            recorded, local = svc.created or "", str(image.attrs.get("Created"))
            if recorded and local < recorded:
                older.append(
                    f"{tag} of service {name} (built {local[:19]}, the snapshot's {recorded[:19]})"
                )
            else:
                notice(
                    f"service {name}: image {tag} here is not the one recorded "
                    f"({svc.image_id[:19]}); it is newer, and will migrate the data "
                    "forward"
                )
    if missing:
        raise SourceError(
            f"image {missing[0]} is not on this host"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; nothing was changed",
            hint="pull or load the images the snapshot recorded (stackvault snapshots "
            "--json lists their digests), or back up with stack backup --with-images, "
            "then restore again",
        )
    if older and not force:
        raise RestoreRefused(
            f"image {older[0]} is older than the one the data was saved with; its schema "
            "may have moved forward and cannot be run by an older image; nothing was changed",
            hint="use the recorded images (their digests are in the manifest), or pass "
            "--force if you know the versions are compatible",
        )
