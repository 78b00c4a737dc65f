"""The snapshot a drill restores (stack layer): picked among a job's snapshots, and its data
checked before anything is restored (see `stackvault.stack.drill`)."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from stackvault.errors import IntegrityError, SnapshotNotFound, StackvaultError, UsageError
from stackvault.records.run import job_tag
from stackvault.repo.snapshot import Snapshot

if TYPE_CHECKING:
    from stackvault.repo.repository import Repository


def drill_project_name(project: str, when: datetime) -> str:
    """``<project>-drill-<YYYYmmdd-HHMMSS>`` (UTC), a valid Compose project name."""
    base = re.sub(r"[^a-z0-9_-]", "", project.lower()) or "stack"
    return f"{base}-drill-{when.astimezone(UTC):%Y%m%d-%H%M%S}"


_SPAN = re.compile(r"(\d+)(s|min|h|d|w)")
_SPAN_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_span(text: str, what: str) -> float:
    """Seconds of a duration such as ``30s``, ``10min``, ``2h``, ``30d``, ``1h30min``;
    `UsageError` naming ``what`` otherwise."""
    pos, total = 0, 0
    for m in _SPAN.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _SPAN_SECONDS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise UsageError(f"{what} takes a duration such as 30s, 10min, 2h or 30d, not {text!r}")
    return float(total)


def pick_drill_snapshot(
    snapshots: Sequence[Snapshot],
    job: str,
    spec: str,
    now: datetime,
    rng: random.Random | None = None,
    *,
    stack: bool = True,
) -> Snapshot:
    """The snapshot ``spec`` names among the complete snapshots of ``job`` (tagged
    ``job:JOB``) - stack snapshots, or with ``stack`` false the others: ``latest``;
    ``random-within=DURATION`` (one at random among those not older than DURATION, so drills
    over time cover more than the newest); or a snapshot id (prefix) of any snapshot of that
    sort. `SnapshotNotFound` says what is missing."""
    tag = job_tag(job)
    sort = "stack snapshot" if stack else "snapshot"
    kind = [s for s in snapshots if bool(s.stack) == stack]
    mine = sorted((s for s in kind if tag in s.tags and s.complete), key=lambda s: s.time)
    if spec == "latest" or spec.startswith("random-within="):
        if not mine:
            raise SnapshotNotFound(
                f"the repository has no complete {sort} of job {job} (tag {tag})",
                hint=f"run the job first: stackvault run {job}",
            )
        if spec == "latest":
            return mine[-1]
        within = parse_span(spec.split("=", 1)[1], "--snapshot random-within=")
        recent = [s for s in mine if (now - s.time).total_seconds() <= within]
        if not recent:
            raise SnapshotNotFound(
                f"job {job} has no {sort} within {spec.split('=', 1)[1]} "
                f"(the newest is from {mine[-1].time:%Y-%m-%d %H:%M} UTC)",
                hint="widen the window or drill --snapshot latest",
            )
        return (rng or random.Random()).choice(recent)
    found = [s for s in kind if s.id.startswith(spec.lower())] if len(spec) >= 4 else []
    if len(found) != 1:
        what = f"matches no {sort}" if not found else "matches several snapshots"
        raise SnapshotNotFound(
            f"--snapshot {spec} {what}",
            hint="give latest, random-within=30d or a longer snapshot id "
            f"(list them: stackvault snapshots --tag {tag})",
        )
    return found[0]


def check_snapshot_data(repo: Repository, snapshot: Snapshot) -> None:
    """Before anything is restored: every blob of every part of ``snapshot`` (each
    artifact, each captured path) is listed by the index in a pack the store holds (one
    listing of ``data/``). `IntegrityError` names the first part and file that lacks
    data ("artifact db: file dump.pgc needs pack 8d85d3a7348c, which is missing"), and how
    many files lack data in all."""
    from stackvault.engine.filedata import find_node
    from stackvault.repo.pack import PACKS_PREFIX, pack_name

    stored = {info.name for info in repo.store.list(PACKS_PREFIX)}
    artifacts = {a.path: f"artifact {a.name}" for a in snapshot.artifacts if a.complete}
    parts = dict(artifacts)
    for path in snapshot.paths:
        if path not in parts and not path.startswith("/.stackvault/"):
            parts[path] = f"path {path}"
    first: str | None = None
    damaged = 0
    for path, label in parts.items():
        try:
            top = find_node(repo, snapshot, path)
        except StackvaultError as exc:
            raise IntegrityError(f"{label}: {exc.message}") from None
        pending = [("", top)]
        while pending:
            where, node = pending.pop()
            if node.type == "dir" and node.subtree is not None:
                pending += [(f"{where}/{n.name}", n) for n in repo.load_tree(node.subtree)]
                continue
            for blob in node.content:
                entry = repo.index.get(blob)
                why = (
                    "is in no pack the index lists"
                    if entry is None
                    else (
                        None
                        if pack_name(entry.pack_id) in stored
                        else f"needs pack {entry.pack_id.hex()[:12]}, which is missing"
                    )
                )
                if why is not None:
                    damaged += 1
                    if first is None:
                        first = f"{label}: file {where.lstrip('/') or path} {why}"
                    break
    if first is not None:
        more = f" ({damaged} files lack data in all)" if damaged > 1 else ""
        raise IntegrityError(
            f"{first}{more}; nothing was restored",
            hint="run stackvault check --read-data, and drill another snapshot",
        )
