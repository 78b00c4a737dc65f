"""One restore drill of a stack snapshot (stack layer): leftovers removed, the snapshot's data
checked, the restore into the sandbox, the probes, every phase timed, the cleanup (see
`stackvault.stack.drill`)."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from stackvault.errors import UsageError
from stackvault.records.drill import DrillCleanup, DrillProbe, DrillResult
from stackvault.records.stack import StackManifest, read_manifest
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.drill.cleanup import cleanup_drill, remove_leftovers
from stackvault.stack.drill.commands import command_probe
from stackvault.stack.drill.connections import connection_probes
from stackvault.stack.drill.labels import OWNER_FILE, owner
from stackvault.stack.drill.phases import STEP_GROUPS, PhaseClock, keep_for, run_phases
from stackvault.stack.drill.probes import http_probe_inside, restore_probes
from stackvault.stack.drill.sandbox import _Sandbox, for_drill, refuse_shared_paths
from stackvault.stack.drill.snapshots import check_snapshot_data
from stackvault.stack.restore import restore_stack
from stackvault.stack.restorereport import StackRestore, Step

if TYPE_CHECKING:
    from docker import DockerClient

    from stackvault.engine.progress import Progress
    from stackvault.repo.repository import Repository


@dataclass
class DrillOptions:
    """What a drill is asked to do (`run_drill`, `run_source_drill`)."""

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


def run_drill(
    repo: Repository,
    snapshot: Snapshot,
    client: DockerClient,
    options: DrillOptions,
    *,
    notice: Callable[[str], None] = lambda _m: None,
    progress: Progress | None = None,
) -> DrillResult:
    """Drill ``snapshot`` (see the package docstring) and return its result; never raises
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
    result = DrillResult(
        drill_id=options.drill_id,
        job=options.job,
        project=m.project,
        drill_project=drill_project_name(m.project, started),
        snapshot=snapshot.id,
        snapshot_time=snapshot.time,
        started=started,
        ended=started,
        rto_target_s=options.rto_target_s,
        rpo_achieved_s=round((started - snapshot.time).total_seconds(), 3),
    )
    drill = _StackDrill(repo, snapshot, m, client, options, PhaseClock(result), notice)
    drill.progress = progress
    return run_phases(drill.clock, drill.work, drill.cleanup, options.now)


class _StackDrill:
    """The phases of one stack drill, and what it has made so far (for its cleanup)."""

    def __init__(
        self,
        repo: Repository,
        snapshot: Snapshot,
        m: StackManifest,
        client: DockerClient,
        options: DrillOptions,
        clock: PhaseClock,
        notice: Callable[[str], None],
    ) -> None:
        self.repo, self.snapshot, self.m, self.client = repo, snapshot, m, client
        self.options, self.clock, self.notice = options, clock, notice
        self.result = clock.result
        self.project = self.result.drill_project
        self.root = os.path.join(os.path.abspath(options.workdir), self.project)
        base = os.path.basename((m.directory or "").rstrip("/")) or "stack"
        self.directory = os.path.join(self.root, base)
        self.created_root = False
        self.progress: Progress | None = None

    def tell(self, message: str) -> None:
        """A notice that the report keeps too."""
        self.result.notices.append(message)
        self.notice(message)

    def work(self) -> None:
        """Every phase up to the probes (and ``--keep``); the RTO from reading the snapshot
        until the probes are done."""
        self.clock.begin("leftovers", "cleanup")
        refuse_shared_paths(self.m, self.root, self.project)
        removed = remove_leftovers(self.client, self.options.workdir, keep=self.project)
        if removed.removed:
            self.tell(f"removed leftovers of earlier drills: {', '.join(removed.removed)}")
        if not removed.ok:
            self.tell(f"leftovers of earlier drills could not all be removed: {removed.error}")
        self.clock.begin("read snapshot", "snapshot")
        rto_from = self.clock.at()  # what a real restore takes starts here
        check_snapshot_data(self.repo, self.snapshot)
        self.make_root()
        restored = self.restore()
        self.clock.end()
        self.clock.mark("first healthy", "healthy")
        self.clock.begin("probes", "probes")
        self.result.probes += self.probes(restored)
        self.clock.end()
        self.result.rto_s = round(self.clock.at() - rto_from, 3)
        keep_for(self.clock, self.options.keep_s, self.tell, f"project {self.project}")

    def make_root(self) -> None:
        """The drill's own directory, with its owner file (`remove_leftovers` reads it)."""
        os.makedirs(self.options.workdir, exist_ok=True)
        os.mkdir(self.root, 0o700)
        self.created_root = True
        with open(os.path.join(self.root, OWNER_FILE), "w", encoding="utf-8") as owner_file:
            owner_file.write(owner())

    def restore(self) -> StackRestore:
        """`restore_stack` into the drill's project, isolated before its first container;
        each of its steps a phase."""
        sandbox = _Sandbox(self.client, self.options.drill_id, self.project, self.root)
        sandbox.notice = self.tell

        def on_notice(message: str) -> None:
            if any(message.startswith(f"{step}: ") for step in STEP_GROUPS):
                self.notice(message)  # a step starts: its phase says it
            else:
                self.tell(message)

        def before_step(step: Step) -> None:
            if step.name == "database services":
                # the configuration is restored and nothing runs yet: isolate it now
                self.clock.begin("isolate", "start")
                sandbox.isolate(self.m, self.directory)
                self.result.blanked = list(sandbox.blanked)
            self.clock.begin(step.name, STEP_GROUPS.get(step.name, "start"))

        return restore_stack(
            self.repo,
            for_drill(self.snapshot, self.m),
            self.client,
            project=self.project,
            directory=self.directory,
            check_ports=False,  # the drill's compose file publishes nothing
            wait=self.options.wait,
            progress=self.progress,
            notice=on_notice,
            before_step=before_step,
        )

    def probes(self, restored: StackRestore) -> list[DrillProbe]:
        """The restore's validations, the databases' connections, the plan's HTTP probes
        and probe commands, all from inside the drill."""
        plan = self.m.plan
        probes = restore_probes(restored, self.snapshot, self.m)
        probes += connection_probes(self.client, self.project, self.m)
        probes += [
            http_probe_inside(self.client, self.project, p, self.options.wait) for p in plan.probes
        ]
        if not plan.probes:
            probes.append(
                DrillProbe("http", "skipped", "the plan has no HTTP probes (add probes:)")
            )
        probes += [command_probe(self.client, self.project, plan, p) for p in plan.probe_commands]
        return probes

    def cleanup(self) -> DrillCleanup:
        return cleanup_drill(self.client, self.project, self.root if self.created_root else None)
