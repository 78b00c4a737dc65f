"""One restore drill (stack layer): the snapshot picked, its data checked, the restore into the
sandbox, the probes, every phase timed (see `stackvault.stack.drill`)."""

from __future__ import annotations

import os
import random
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from stackvault.errors import (
    IntegrityError,
    Interrupted,
    SnapshotNotFound,
    StackvaultError,
    UsageError,
)
from stackvault.records.drill import (
    DrillPhase,
    DrillProbe,
    DrillResult,
)
from stackvault.records.run import job_tag
from stackvault.records.stack import read_manifest
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.drill.cleanup import cleanup_drill, remove_leftovers, signals_ignored
from stackvault.stack.drill.labels import OWNER_FILE, owner
from stackvault.stack.drill.probes import http_probe_inside, restore_probes
from stackvault.stack.drill.sandbox import _Sandbox, for_drill, refuse_shared_paths
from stackvault.stack.restore import restore_stack
from stackvault.stack.restorereport import Step

if TYPE_CHECKING:
    from docker import DockerClient

    from stackvault.engine.progress import Progress
    from stackvault.repo.repository import Repository

_STEP_GROUPS = {
    "images": "snapshot",
    "configuration": "files",
    "directories": "files",
    "database services": "databases",
    "databases": "databases",
    "volumes": "files",
    "data directories": "files",
    "other services": "start",
    "validation": "probes",
}
"""The restore's steps (`stackvault.stack.restore`) and the drill phase group of each."""


@dataclass
class DrillOptions:
    """What a drill is asked to do (`run_drill`)."""

    job: str
    workdir: str
    """Where the drill's directory is made (``<workdir>/<drill project>``)."""
    rto_target_s: float | None = None
    """The job policy's RTO, in seconds (None: not compared)."""
    wait: float = 180.0
    """How long services and HTTP probes are waited for."""
    keep_s: float = 0.0
    """How long the drilled stack is kept running after the probes, before cleanup."""
    drill_id: str = field(default_factory=lambda: secrets.token_hex(16))
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


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
) -> Snapshot:
    """The snapshot ``spec`` names among the complete stack snapshots of ``job`` (tagged
    ``job:JOB``): ``latest``; ``random-within=DURATION`` (one at random among those not
    older than DURATION, so drills over time cover more than the newest); or a snapshot
    id (prefix) of any stack snapshot. `SnapshotNotFound` says what is missing."""
    tag = job_tag(job)
    stacks = [s for s in snapshots if s.stack]
    mine = sorted((s for s in stacks if tag in s.tags and s.complete), key=lambda s: s.time)
    if spec == "latest" or spec.startswith("random-within="):
        if not mine:
            raise SnapshotNotFound(
                f"the repository has no complete stack snapshot of job {job} (tag {tag})",
                hint=f"run the job first: stackvault run {job}",
            )
        if spec == "latest":
            return mine[-1]
        within = parse_span(spec.split("=", 1)[1], "--snapshot random-within=")
        recent = [s for s in mine if (now - s.time).total_seconds() <= within]
        if not recent:
            raise SnapshotNotFound(
                f"job {job} has no stack snapshot within {spec.split('=', 1)[1]} "
                f"(the newest is from {mine[-1].time:%Y-%m-%d %H:%M} UTC)",
                hint="widen the window or drill --snapshot latest",
            )
        return (rng or random.Random()).choice(recent)
    found = [s for s in stacks if s.id.startswith(spec.lower())] if len(spec) >= 4 else []
    if len(found) != 1:
        what = "matches no stack snapshot" if not found else "matches several snapshots"
        raise SnapshotNotFound(
            f"--snapshot {spec} {what}",
            hint="give latest, random-within=30d or a longer snapshot id "
            f"(list them: stackvault snapshots --tag {tag})",
        )
    return found[0]


# --- the drill ---------------------------------------------------------------------------


class _Clock:
    """Phases, timed from the drill's start."""

    def __init__(self, result: DrillResult) -> None:
        self.t0 = time.monotonic()
        self.result = result
        self.current: DrillPhase | None = None

    def at(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def begin(self, name: str, group: str) -> None:
        self.end()
        self.current = DrillPhase(name, group, self.at(), self.at())
        self.result.phases.append(self.current)

    def end(self, status: str = "done") -> None:
        if self.current is not None:
            self.current.end_s = self.at()
            if status == "failed":
                self.current.status = "failed"
            self.current = None


def run_drill(
    repo: Repository,
    snapshot: Snapshot,
    client: DockerClient,
    options: DrillOptions,
    *,
    notice: Callable[[str], None] = lambda _m: None,
    progress: Progress | None = None,
) -> DrillResult:
    """Drill ``snapshot`` (see the module docstring) and return its result; never raises
    for what goes wrong in the drill (the result's ``error`` says it, in one sentence), but
    `UsageError` for a snapshot that is not a stack snapshot. The result's ``result`` is
    ``ok``, ``failed`` or ``interrupted`` (SIGINT/SIGTERM); the cleanup has run either
    way."""
    m = read_manifest(snapshot)
    if m is None:
        raise UsageError(
            f"snapshot {snapshot.short_id} is not a stack snapshot (it has no stack manifest)",
            hint="drill a snapshot made by stackvault run of a stack job, or stack backup",
        )
    started = options.now()
    drill_project = drill_project_name(m.project, started)
    root = os.path.join(os.path.abspath(options.workdir), drill_project)
    directory = os.path.join(root, os.path.basename((m.directory or "").rstrip("/")) or "stack")
    result = DrillResult(
        drill_id=options.drill_id,
        job=options.job,
        project=m.project,
        drill_project=drill_project,
        snapshot=snapshot.id,
        snapshot_time=snapshot.time,
        started=started,
        ended=started,
        rto_target_s=options.rto_target_s,
        rpo_achieved_s=round((started - snapshot.time).total_seconds(), 3),
    )
    clock = _Clock(result)

    def tell(message: str) -> None:
        result.notices.append(message)
        notice(message)

    created_root = False
    rto_from = 0.0
    try:
        clock.begin("leftovers", "cleanup")
        refuse_shared_paths(m, root, drill_project)
        removed = remove_leftovers(client, options.workdir, keep=drill_project)
        if removed.removed:
            tell(f"removed leftovers of earlier drills: {', '.join(removed.removed)}")
        if not removed.ok:
            tell(f"leftovers of earlier drills could not all be removed: {removed.error}")
        clock.begin("read snapshot", "snapshot")
        rto_from = clock.at()  # what a real restore takes starts here
        check_snapshot_data(repo, snapshot)
        os.makedirs(options.workdir, exist_ok=True)
        os.mkdir(root, 0o700)
        created_root = True
        with open(os.path.join(root, OWNER_FILE), "w", encoding="utf-8") as owner_file:
            owner_file.write(owner())
        sandbox = _Sandbox(client, options.drill_id, drill_project, root)
        sandbox.notice = tell

        def on_notice(message: str) -> None:
            if any(message.startswith(f"{step}: ") for step in _STEP_GROUPS):
                notice(message)  # a step starts: its phase says it
            else:
                tell(message)

        def before_step(step: Step) -> None:
            if step.name == "database services":
                # the configuration is restored and nothing runs yet: isolate it now
                clock.begin("isolate", "start")
                sandbox.isolate(m, directory)
            clock.begin(step.name, _STEP_GROUPS.get(step.name, "start"))

        restored = restore_stack(
            repo,
            for_drill(snapshot, m),
            client,
            project=drill_project,
            directory=directory,
            wait=options.wait,
            progress=progress,
            notice=on_notice,
            before_step=before_step,
        )
        clock.end()
        healthy = clock.at()
        result.phases.append(DrillPhase("first healthy", "healthy", healthy, healthy))
        clock.begin("probes", "probes")
        result.probes += restore_probes(restored, snapshot, m)
        result.probes += [
            http_probe_inside(client, drill_project, p, options.wait) for p in m.plan.probes
        ]
        if not m.plan.probes:
            result.probes.append(
                DrillProbe("http", "skipped", "the plan has no HTTP probes (add probes:)")
            )
        clock.end()
        result.rto_s = round(clock.at() - rto_from, 3)
        if options.keep_s > 0:
            tell(f"keeping project {drill_project} for {options.keep_s:.0f} s")
            clock.begin("kept", "cleanup")
            time.sleep(options.keep_s)
            clock.end()
    except (KeyboardInterrupt, Interrupted):
        clock.end("failed")
        result.result = "interrupted"
    except StackvaultError as exc:
        failed = clock.current.name if clock.current is not None else "drill"
        clock.end("failed")
        result.error = f"{failed}: {exc.message}"
        if exc.hint:
            result.error += f" ({exc.hint})"
    except Exception as exc:  # the engine's or Compose's own errors: reported, cleaned up
        failed = clock.current.name if clock.current is not None else "drill"
        clock.end("failed")
        result.error = f"{failed}: {type(exc).__name__}: {exc}"[:500]
    finally:
        with signals_ignored():
            clock.begin("cleanup", "cleanup")
            result.cleanup = cleanup_drill(client, drill_project, root if created_root else None)
            clock.end("done" if result.cleanup.ok else "failed")
    result.ended = options.now()
    result.result = result.judge()
    return result


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
