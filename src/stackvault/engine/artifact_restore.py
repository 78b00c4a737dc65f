"""Restoring one artifact into a live target (engine layer): ``restore --artifact N --to URL``.

Order, each step before the next:

1. the artifact's record and tree are found, and the target URL opened as a source of the
   same kind (a PostgreSQL artifact goes into PostgreSQL, in a container or not);
2. the target is asked what a restore would replace (`Source.describe_target`); if anything,
   the restore is refused unless ``overwrite``, and with ``overwrite`` a **safety snapshot** of
   the target is taken first (a normal backup of the target URL, tagged ``pre-restore``), so a
   mistaken restore can itself be undone;
3. the source loads the artifact;
4. the target is probed and its facts compared with those recorded at capture: the result
   lists every difference (row counts, key counts, file hashes), and the caller decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stackvault.engine.artifacts import RepoArtifactReader, find_artifact
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.progress import Progress
from stackvault.errors import RestoreRefused, UsageError
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot
from stackvault.sources.contract import ArtifactRestoreOptions, Source, compare_facts
from stackvault.sources.registry import open_source

SAFETY_TAG = "pre-restore"


@dataclass
class ArtifactRestoreResult:
    artifact: str
    kind: str
    target: str
    """The target's redacted location."""
    replaced: str | None = None
    """What the target held before (None: it was empty or new)."""
    safety_snapshot: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    """What the target's source reports it did (its family's restore report)."""
    differences: list[str] = field(default_factory=list)
    validated: bool = False
    """True if recorded facts existed and were compared."""
    duration_s: float = 0.0


def _same_kind(artifact_kind: str, target: Source) -> bool:
    return artifact_kind == target.kind


def restore_artifact(
    repo: Repository,
    snapshot: Snapshot,
    name: str,
    target_url: str,
    *,
    overwrite: bool = False,
    no_owner: bool = False,
    progress: Progress,
    notice: Callable[[str], None],
) -> ArtifactRestoreResult:
    """Restore artifact ``name`` of ``snapshot`` into ``target_url`` (see the module doc)."""
    t0 = repo.clock.monotonic()
    record = find_artifact(snapshot, name)
    reader = RepoArtifactReader(repo, snapshot, record)
    target = open_source(target_url)
    try:
        if not _same_kind(reader.kind, target):
            raise UsageError(
                f"artifact {name!r} is a {reader.kind} artifact; it cannot be restored into "
                f"{target.location}, which is {target.kind}"
            )
        result = ArtifactRestoreResult(name, reader.kind, target.location)
        result.replaced = target.describe_target()
        if result.replaced is not None:
            if not overwrite:
                raise RestoreRefused(
                    f"{target.location} is not empty ({result.replaced}); nothing was changed",
                    hint="pass --overwrite to replace it (a safety snapshot of what is there "
                    "is taken first)",
                )
            notice(f"taking a safety snapshot of {target.location} before replacing it")
            safety = BackupJob(
                repo,
                BackupOptions(
                    sources=[open_source(target_url)],
                    tags=[SAFETY_TAG, f"restore-of:{snapshot.short_id}"],
                ),
                progress=progress,
            ).run()
            result.safety_snapshot = safety.snapshot.id
            notice(
                f"safety snapshot {safety.snapshot.short_id} holds what {target.location} held; "
                f"undo with: stackvault restore {safety.snapshot.short_id} --artifact "
                f"{safety.snapshot.artifacts[0].name} --to URL --overwrite"
            )
        result.details = target.restore(
            reader, ArtifactRestoreOptions(overwrite=overwrite, no_owner=no_owner, notice=notice)
        )
        recorded = record.facts
        if recorded is not None:
            expected = target.expected_facts(recorded)
            result.differences = compare_facts(expected, target.probe())
            result.validated = True
        result.duration_s = round(repo.clock.monotonic() - t0, 3)
        return result
    finally:
        target.close()
