"""The stack manifest (records layer): the ``stack`` record of a snapshot made by ``stack
backup`` (FORMAT.md §8.3).

It holds the plan (`stackvault.records.plan.Plan`), the services as they ran, versions,
per-artifact summaries, timings. `read_manifest` reads it from a snapshot and checks it there,
once (`IntegrityError` naming the key); `StackManifest.to_dict` writes the keys it was built or
read with, in the same order (the omissions are those of the backup: ``downtime`` or
``skew_s``, ``timings.total_s``). Keys this version does not know are kept, at every level, and
written after the known ones.

The snapshot keeps the manifest as the JSON it stored and `read_manifest` parses it when a
stack command needs it: listing, forgetting, pruning and copying thousands of snapshots never
pay for checking a manifest (nor fail on a damaged one), and `copy` keeps it exactly as it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ConfigDict, ValidationError

from stackvault.errors import IntegrityError
from stackvault.records.plan import Plan, Record, named_problems, plan_context

if TYPE_CHECKING:
    from collections.abc import Mapping

MANIFEST_FORMAT = 1


class _Stored(Record):
    """A part of the manifest: values of the types stored, not coerced."""

    model_config = ConfigDict(extra="allow", strict=True)


class ServiceRecord(_Stored):
    """A service as it ran at the cut (``services.NAME``)."""

    role: str
    image: str
    """The tag it ran (the plan's when it had no container)."""
    image_id: str | None
    digests: list[str]
    containers: list[str]
    state: str
    """``running``, ``exited``, ...; ``missing`` when it had no container."""
    stopped: bool
    """Stopped for the cut."""
    depends_on: list[str]
    created: str | None
    """When its image was built (the image's ``Created``), for the restore's version guard."""


class VersionRecord(_Stored):
    """The server and dump tool behind an artifact (``versions.ARTIFACT``)."""

    server_version: str
    dump_tool: str | None


class ArtifactSummary(_Stored):
    """An artifact of the cut (``artifacts.ARTIFACT``): what the snapshot's artifact record
    says, and the SHA-256 of each of its dump files."""

    kind: str
    complete: bool
    bytes: int | None
    files: int | None
    started: str
    duration_s: float
    checksums: dict[str, str | None]


class MountDir(_Stored):
    """Owner and mode of a bind-mounted directory (``mount_dirs.DIR``)."""

    uid: int
    gid: int
    mode: int


class Timings(_Stored):
    """Seconds to stop the writers, to capture, to start them again, and in all (known once
    the snapshot is saved: the stored manifest lacks it)."""

    stop_s: float
    capture_s: float
    start_s: float
    total_s: float | None = None


class ServiceDowntime(_Stored):
    """One service a strict cut stopped or paused (``downtime.services.NAME``): its
    containers, the stop level (0: stopped first; a level's services are stopped together and
    started again together, after the levels stopped after them), how (``mode``), the stop
    timeout it was given (its own ``stop_grace_period`` where it has one), the seconds until
    it was stopped, whether it was killed after that timeout, and the seconds from the stop
    request until it ran again (null: not started again by the backup). With several
    containers: the longest and any."""

    containers: list[str]
    level: int
    mode: str = "stop"
    """``stop``, or ``pause``: frozen (``docker pause``) instead of stopped."""
    timeout_s: float
    stop_s: float | None
    killed: bool
    downtime_s: float | None


class Downtime(_Stored):
    """A strict cut: from the first stop request until every stopped service ran again; per
    container (null: not started again by the backup); and per service (`ServiceDowntime`;
    absent from manifests written before it was recorded)."""

    seconds: float
    containers: dict[str, float | None]
    services: dict[str, ServiceDowntime] | None = None


class HookRun(_Stored):
    """One command of a hook as it ran (``hooks[i]``)."""

    service: str
    phase: str
    """``before`` or ``after``."""
    where: str
    mode: str
    ok: bool
    exit: int | None
    error: str | None
    """Why it failed: the exit status and the last line of its error output."""
    seconds: float
    output: str = ""
    """What it printed (standard output, then error output), its last 64 KiB at most; absent
    in manifests written before it was kept."""


class AppVersions(_Stored):
    """The application's version where its preset knows where to read it (Dify's schema:
    ``alembic_version``, null when it could not be read); nothing for other stacks."""

    alembic_version: str | None = None


class StackManifest(_Stored):
    """The ``stack`` record of a snapshot made by ``stack backup`` (FORMAT.md §8.3).

    Written with the keys it was built or read with (`to_dict`): ``downtime`` for a strict
    cut, ``skew_s`` and ``captured_between`` for an online one, ``timings.total_s`` once known.
    """

    format: int
    project: str
    directory: str | None
    preset: str
    consistency: str
    """``strict`` or ``online``: how the cut was taken (the plan's, or the backup's option)."""
    plan: Plan
    services: dict[str, ServiceRecord]
    versions: dict[str, VersionRecord]
    artifacts: dict[str, ArtifactSummary]
    secrets: list[str]
    """Names only; values exist only inside the captured configuration files."""
    facts: dict[str, Any]
    """The preset's facts, and what the cut decided (``plugins_rebuild``)."""
    mount_dirs: dict[str, MountDir]
    profiles: list[str]
    """The compose profiles of the running services."""
    app: AppVersions
    images: dict[str, str] | None
    """Tag → image id of the images stored with the stack (``--with-images``)."""
    timings: Timings
    downtime: Downtime | None = None
    skew_s: float | None = None
    """An online cut: seconds between the first and the last part captured..."""
    captured_between: list[str] | None = None
    """... and when the first and the last started (empty when none did)."""
    hooks: list[HookRun]

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the keys it was built or read with, in the order above, the plan
        whole (`Plan.to_dict`), then keys this version does not know."""
        out = self.model_dump(exclude_unset=True)
        out["plan"] = self.plan.to_dict()
        return out


class _StackSnapshot(Protocol):
    """What `read_manifest` needs of a snapshot (`stackvault.repo.snapshot.Snapshot`)."""

    @property
    def stack(self) -> Mapping[str, Any] | None: ...

    @property
    def short_id(self) -> str: ...


def read_manifest(snapshot: _StackSnapshot) -> StackManifest | None:
    """The stack manifest of ``snapshot``, None if it has none (not a stack snapshot);
    `IntegrityError` naming every key that is not as ``stack backup`` writes it."""
    data = snapshot.stack
    if not data:
        return None
    plan = data.get("plan")
    context = plan_context(plan, file=False) if isinstance(plan, dict) else {}
    try:
        return StackManifest.model_validate(data, context=context)
    except ValidationError as exc:
        raise IntegrityError(
            f"the stack manifest of snapshot {snapshot.short_id} is malformed: "
            + "; ".join(named_problems(exc)),
            hint="it was not written by stackvault stack backup, or was changed since",
        ) from None
