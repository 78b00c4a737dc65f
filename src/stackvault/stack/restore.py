"""Restoring a whole stack from a stack snapshot (stack layer): ``stack restore``.

To the same host or a new one, under the same or a new project name and directory. The
order is the one that works for Dify and its kind:

1. **checks**, before anything is changed (`stackvault.stack.restorecheck`) - the snapshot is
   a stack snapshot; the target project has no containers, the target directory holds none of
   the files to restore nor the plan file (nothing is ever overwritten), none of the volumes
   exists, and every host port the project publishes is free on this host. With ``replace``,
   a half-restored project that an earlier stack restore left is removed first
   (`stackvault.stack.replace`). Then the images the snapshot holds (``stack backup
   --with-images``) that this engine lacks are loaded, never replacing a tag; the **version
   guard**: every image the snapshot recorded must be on this engine under its tag, and an
   image *older* than the recorded one is refused unless ``force`` (the application migrated
   its schema forward; an older image cannot run it). A newer or different image is reported;
2. **configuration** (compose files, ``.env``, config directories) into the directory;
3. the bind-mounted directories the manifest recorded are created with their owner and mode
   (a database's data directory included: its content comes from the dump);
4. **database services only** are created and started (``docker compose up -d --no-deps``),
   then waited for until each answers its own client and no ``docker-entrypoint.sh`` (the
   official images' init phase, with its temporary server) runs in it any more (bounded; the
   message names the service that never answered);
5. **databases** are loaded from their artifacts (every database and the roles; Dify's
   ``dify`` *and* ``dify_plugin``, before the plugin daemon exists) and validated against the
   row counts recorded at capture;
6. **named volumes** (renamed to the new project's prefix) and **data directories**, with
   their ownership and modes, each file checked against its recorded SHA-256;
7. **every other service** is started (``docker compose up -d``), and each must be running
   (and healthy, where it has a health check) within the wait;
8. **validation**: the preset's checks (Dify: every tenant in the database has its
   ``privkeys/<tenant>/private.pem``); the report has each step's time and the measured
   restore time (RTO) from the first check to the last validation;
9. the **plan** of the restored stack (`stackvault.stack.restoreplan`) is written next to the
   restored compose files, so that ``stack backup`` works as it did before.

Everything the restore creates is marked as its own (`stackvault.stack.restorelabels`): its
containers, volumes and networks carry its labels, and its record in the directory - the
report, written when the first thing is created and again at the end, whatever the end -
lists the files and directories it created. A restore that fails part-way raises
`RestoreFailed` with the report: what was done, what failed, which logs to read and how to
clean up (``--replace``).

``dry_run`` does step 1 without changing anything and returns the steps it would take, with
every problem the checks found. Everything is read from the snapshot's manifest
(`StackManifest`, with its `Plan`); the report is a `StackRestore`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stackvault.clock import Clock, SystemClock
from stackvault.engine.artifact_restore import restore_artifact
from stackvault.engine.progress import NullProgress, Progress
from stackvault.errors import (
    EXIT_ERROR,
    Interrupted,
    RestoreFailed,
    RestoreRefused,
    SourceError,
    StackvaultError,
    UsageError,
)
from stackvault.records.plan import MYSQL, POSTGRES, REDIS, ProbePlan, SourcePlan
from stackvault.records.stack import StackManifest, read_manifest
from stackvault.repo.snapshot import Snapshot
from stackvault.stack import presets
from stackvault.stack.compose import LABEL_PROJECT, LABEL_SERVICE, LABEL_VOLUME
from stackvault.stack.composecli import Compose
from stackvault.stack.images import load_images, loadable_images, missing_images, version_guard
from stackvault.stack.presets import dify
from stackvault.stack.presets.restored import RestoredStack
from stackvault.stack.probes import http_probe
from stackvault.stack.reach import source_url
from stackvault.stack.readiness import entrypoint_initialising, not_running
from stackvault.stack.replace import find_replacement, remove_replacement
from stackvault.stack.restorecheck import (
    Resolved,
    published_port_problems,
    resolve_in,
    resolve_project,
    target_problems,
)
from stackvault.stack.restorefailure import (
    cleanup_commands,
    created_paths,
    failed,
    logs_to_read,
)
from stackvault.stack.restorelabels import (
    RECORD_FILE,
    labels_document,
    new_restore_id,
    owner,
    restore_labels,
    write_labels_file,
    write_record,
)
from stackvault.stack.restoreplan import (
    plan_file_path,
    plan_text,
    restored_plan,
    write_plan_file,
)
from stackvault.stack.restorereport import INVALID, OK, RUNNING, StackRestore, Step, Validation
from stackvault.stack.restoretarget import RestoreTarget, restore_files

if TYPE_CHECKING:
    from docker import DockerClient

    from stackvault.repo.repository import Repository

Run = Callable[[StackRestore], None]
"""What a step does; it adds its validation entries to the report."""


def restore_stack(
    repo: Repository,
    snapshot: Snapshot,
    client: DockerClient,
    *,
    project: str | None = None,
    directory: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    replace: bool = False,
    check_ports: bool = True,
    wait: float = 180.0,
    progress: Progress | None = None,
    notice: Callable[[str], None] = lambda _m: None,
    before_step: Callable[[Step], None] | None = None,
    clock: Clock | None = None,
) -> StackRestore:
    """Restore the stack of ``snapshot`` (see the module docstring). ``before_step`` is
    called with each step (configuration, directories, database services, ...) just before
    it runs: a caller times the steps or changes what the next one finds (a drill isolates
    the restored project before any of its services is started). ``replace``: remove first
    what an earlier stack restore of the project left (`stackvault.stack.replace`).
    ``check_ports``: False for a caller that publishes none of the project's ports (a drill's
    sandbox removes them).

    `RestoreRefused` when a check fails (nothing was changed); `RestoreFailed`, with the
    report, when a step fails."""
    m = read_manifest(snapshot)
    if m is None:
        raise UsageError(
            f"snapshot {snapshot.short_id} is not a stack snapshot (it has no stack manifest)",
            hint="stack snapshots are tagged stack:PROJECT; list them with "
            "stackvault snapshots --tag stack:PROJECT",
        )
    old_dir = m.directory or ""
    new_project = project or m.project
    new_dir = os.path.abspath(directory or old_dir)
    if not new_dir or new_dir == "/":
        raise UsageError("the stack has no directory to restore into; pass --directory DIR")
    clock = clock or SystemClock()
    started = clock.monotonic()
    report = StackRestore(snapshot.id, new_project, new_dir, dry_run)

    def tell(message: str) -> None:
        report.notices.append(message)
        notice(message)

    r = _Restorer(repo, snapshot, client, m, new_project, new_dir)
    r.notice = tell
    r.progress = progress or NullProgress()
    r.wait = wait
    _check(r, report, replace=replace, ports=check_ports)
    missing = missing_images(client, snapshot)
    images = Step("images", f"load {', '.join(missing)} from the snapshot") if missing else None
    if dry_run:
        version_guard(client, m.services, force, loadable_images(snapshot), notice=tell)
        report.steps += [s for s in [images] if s is not None]
        report.steps += [step for step, _run in r.steps()]
        return report
    run = _Run(force, before_step, clock, started, notice)
    _execute(r, report, images, run)
    return report


@dataclass(frozen=True)
class _Run:
    """How `_execute` runs the steps: the options it needs and the RTO's start."""

    force: bool
    before_step: Callable[[Step], None] | None
    clock: Clock
    started: float
    notice: Callable[[str], None]


def _execute(r: _Restorer, report: StackRestore, images: Step | None, run: _Run) -> None:
    """Everything after the checks: the restore's record, the images, the version guard,
    every step, the plan file; the report's status at the end. On a failure the report says
    what failed and how to clean up, and is saved, before the error is raised again
    (`RestoreFailed` for a stackvault error)."""
    clock, notice = run.clock, run.notice
    report.restore_id = new_restore_id(clock.now())
    report.owner = owner()
    report.started = clock.now().isoformat()
    report.status = RUNNING
    r.labels = restore_labels(report.restore_id, r.snapshot.id)
    steps = r.steps()
    report.steps += [s for s in [images] if s is not None] + [step for step, _run in steps]
    try:
        if images is not None:
            _run_step(images, lambda rep: rep.validation.append(r.load_images()), report, notice)
        version_guard(r.client, r.m.services, run.force, set(), notice=r.notice)
        r.begin_record(report)
        for step, act in steps:
            if run.before_step is not None:
                run.before_step(step)
            _run_step(step, act, report, notice)
        r.write_plan(report)
        report.rto_s = round(clock.monotonic() - run.started, 3)
        report.status = OK if report.ok else INVALID
        if not report.ok:
            report.exit_code = EXIT_ERROR
            r.explain_failure(report)
    except BaseException as exc:
        failed(report, exc)
        r.explain_failure(report)
        if isinstance(exc, StackvaultError) and not isinstance(exc, Interrupted):
            raise RestoreFailed(
                exc.message, hint=exc.hint, exit_code=exc.exit_code, report=report
            ) from exc
        raise
    finally:
        r.save_record(report)


def _check(r: _Restorer, report: StackRestore, *, replace: bool, ports: bool) -> None:
    """Step 1's checks of the target (see `stackvault.stack.restorecheck`); with ``replace``
    the earlier restore is removed first (a dry run lists what it would remove)."""
    replacing = find_replacement(r.client, r.new_project, r.new_dir) if replace else None
    if replacing is not None and report.dry_run:
        report.replaced = [f"would remove {x}" for x in replacing.describe()]
    elif replacing is not None:
        report.replaced = remove_replacement(r.client, replacing)
        for removed in report.replaced:
            r.notice(f"replace: removed {removed}")
        replacing = None
    report.problems = target_problems(r.client, r, replacing)
    r.resolved = resolve_project(r.repo, r, r.notice) if ports else None
    if r.resolved is not None:
        report.problems += published_port_problems(r.client, r.resolved, r.notice)
    if report.problems and not report.dry_run:
        first, more = report.problems[0], len(report.problems) - 1
        raise RestoreRefused(
            first.message
            + (f" (and {more} more problem(s): stack restore --dry-run lists them)" if more else "")
            + "; nothing was changed"
            + (" but what --replace removed" if report.replaced else ""),
            hint=first.hint or None,
        )


def _run_step(step: Step, run: Run, report: StackRestore, notice: Callable[[str], None]) -> None:
    t0 = time.monotonic()
    notice(f"{step.name}: {step.detail}")
    step.status = "running"
    try:
        run(report)
    except BaseException:
        step.status = "failed"
        step.seconds = round(time.monotonic() - t0, 3)
        raise
    step.status = "done"
    step.seconds = round(time.monotonic() - t0, 3)


class _Restorer(RestoreTarget):
    def __init__(
        self,
        repo: Repository,
        snapshot: Snapshot,
        client: DockerClient,
        manifest: StackManifest,
        new_project: str,
        new_dir: str,
    ) -> None:
        super().__init__(snapshot, manifest, new_project, new_dir)
        self.repo = repo
        self.client = client
        self.notice: Callable[[str], None] = lambda _m: None
        self.progress: Progress = NullProgress()
        self.wait = 180.0
        self.labels: dict[str, str] = {}
        """`restore_labels` of this restore (none for a dry run)."""
        self.resolved: Resolved | None = None
        """The project as the checks resolved it (None: they could not)."""
        self.unready: dict[str, str] = {}
        """Services that never became ready, and what they were last."""
        self.record: str | None = None
        self._compose: Compose | None = None

    def compose(self) -> Compose:
        """Compose for the restored project, with the labels of this restore (`LABELS_FILE`,
        written at the first use: the files are restored by then)."""
        if self._compose is None:
            files = self.compose_files()
            if self.labels and files:
                resolved = self.resolved or resolve_in(self, self.new_dir, files)
                doc = labels_document(resolved.doc, resolved.version, self.labels)
                files = [*files, write_labels_file(self.new_dir, doc)]
            self._compose = Compose(self.new_project, self.new_dir, files)
        return self._compose

    # --- the record and what a failure says --------------------------------------------------

    def begin_record(self, report: StackRestore) -> None:
        """Before the first file is written: the record, with what this restore creates."""
        report.created = created_paths(self)
        os.makedirs(self.new_dir, exist_ok=True)
        self.record = report.record = os.path.join(self.new_dir, RECORD_FILE)
        self.save_record(report)

    def save_record(self, report: StackRestore) -> None:
        if self.record is None:
            return
        try:
            write_record(self.new_dir, report.to_dict())
        except OSError as exc:
            self.notice(f"the restore's record {self.record} was not written: {exc.strerror}")

    def explain_failure(self, report: StackRestore) -> None:
        """The logs to read and (once something was created) how to clean up."""
        report.logs = logs_to_read(self.client, self.new_project, self.unready, self._shown)
        if self.record is not None:
            report.cleanup = cleanup_commands(self, self._shown, self.record)

    def _shown(self, *args: str) -> str:
        try:
            compose = self._compose or Compose(self.new_project, self.new_dir, self.compose_files())
            return compose.shown(*args)
        except SourceError:
            return f"docker compose -p {self.new_project} {' '.join(args)}"

    def write_plan(self, report: StackRestore) -> None:
        """Step 9: the plan of the restored stack, next to its compose files."""
        containers: dict[str, str] = {}
        for s in self.plan.sources:
            if "+docker://" not in s.url:
                continue
            try:
                containers[s.service] = self._container_of(s.service)
            except SourceError:
                pass  # no container: the plan names the one Compose will give it
        when = f"{self.snapshot.time:%Y-%m-%d %H:%M} UTC"
        origin = f"restored from snapshot {self.snapshot.short_id} of {when}"
        path = plan_file_path(self)
        try:
            write_plan_file(path, plan_text(restored_plan(self, containers), origin))
        except OSError as exc:
            self.notice(f"the plan was not written to {path}: {exc.strerror}")
            return
        report.plan_file = path

    def load_images(self) -> Validation:
        return load_images(self.repo, self.snapshot, self.progress, self.notice)

    # --- the steps, in their order ----------------------------------------------------------

    def steps(self) -> list[tuple[Step, Run]]:
        """The steps after the checks, in the order they run, each with what it does."""
        dbs = self.database_services()
        config = f"{len(self.config_entries())} entries into {self.new_dir}"
        dirs = f"{len(self.m.mount_dirs)} bind-mount directories with their owners"
        data = (self.map_path(p) for p in self.data_entries())
        others = (n for n in self.services if n not in dbs)
        return [
            (Step("configuration", config), self._configuration),
            (Step("directories", dirs), self._directories),
            (Step("database services", _listed(dbs)), self._start_databases),
            (Step("databases", _listed(s.name for s in self.database_sources())), self._databases),
            (Step("volumes", _listed(self.volume_targets().values())), self._volumes),
            (Step("data directories", _listed(data)), self._data_directories),
            (Step("other services", _listed(others)), self._other_services),
            (Step("validation", f"preset {self.m.preset}: health, facts, files"), self._validation),
        ]

    def _restore_files(self, entries: list[str]) -> int:
        return restore_files(self.repo, self, entries, progress=self.progress, notice=self.notice)

    def _configuration(self, report: StackRestore) -> None:
        self._restore_files(self.config_entries())

    def _directories(self, report: StackRestore) -> None:
        for path, meta in self.m.mount_dirs.items():
            target = self.map_path(path)
            if os.path.isdir(target):
                continue
            os.makedirs(target, exist_ok=True)
            try:
                os.chown(target, meta.uid, meta.gid)
                os.chmod(target, meta.mode)
            except OSError as exc:
                self.notice(f"{target}: owner/mode not restored ({exc.strerror})")

    def _start_databases(self, report: StackRestore) -> None:
        dbs = self.database_services()
        if not dbs:
            return
        self.compose().up(dbs)
        for name in dbs:
            self._wait_ready(name)

    def _container_of(self, service: str) -> str:
        found = self.client.containers.list(
            all=True,
            filters={
                "label": [f"{LABEL_PROJECT}={self.new_project}", f"{LABEL_SERVICE}={service}"]
            },
        )
        if not found:
            raise SourceError(f"service {service} of project {self.new_project} has no container")
        return str(found[0].name)

    def _target_url(self, source: SourcePlan) -> str:
        service = source.service
        if self.role(service) in (POSTGRES, MYSQL, REDIS):
            # reached as the plan says the backup reached it (port, socket, password)
            return source_url(source, self._container_of(service), restore=True)
        raise SourceError(f"source {source.name} of service {service} is not a database")

    def _wait_ready(self, service: str) -> None:
        """Until the database service answers its own client and its image's entrypoint has
        finished initialising it (bounded by the wait).

        The official PostgreSQL, MySQL and MariaDB images initialise a new data directory
        with a temporary server that listens on the usual socket (``POSTGRES_DB`` /
        ``MYSQL_DATABASE``, the init scripts), stop it and only then ``exec`` the real
        server: answering once is not enough, the restore would race the init (and lose its
        connections when the temporary server stops). So the service is ready only when no
        ``docker-entrypoint.sh`` runs in its container any more. An entrypoint still there at
        the end of the wait (one that never ``exec``s its server) is told and not waited for
        longer: the restore then goes on with the server that answers."""
        from stackvault.sources.registry import open_source

        source = next((s for s in self.plan.sources if s.service == service), None)
        deadline = time.monotonic() + self.wait
        last = ""
        answered = False
        while time.monotonic() < deadline:
            try:
                if source is None:
                    self._running(service)
                    return
                target = open_source(self._target_url(source))
                try:
                    target.describe_target()
                finally:
                    target.close()
                answered = True
                if not entrypoint_initialising(self.client, self._container_of(service)):
                    return
                last = "its entrypoint is still initialising it"
            except SourceError as exc:
                answered = False
                last = exc.message
            time.sleep(1.0)
        if answered:
            self.notice(
                f"service {service}: docker-entrypoint.sh still runs in its container after "
                f"{self.wait:.0f} s although the server answers; going on"
            )
            return
        self.unready[service] = f"not ready in {self.wait:.0f} s: {last}"
        raise SourceError(
            f"service {service} of project {self.new_project} did not become ready in "
            f"{self.wait:.0f} s: {last}",
            hint=f"look at its log: docker logs {self._container_of(service)}",
        )

    def _running(self, service: str) -> None:
        container = self.client.containers.get(self._container_of(service))
        problem = not_running(container.attrs.get("State") or {})
        if problem:
            raise SourceError(f"service {service} is {problem}")

    def _restore_sources(
        self, names: list[str], targets: dict[str, str], report: StackRestore
    ) -> None:
        for name in names:
            record = next((a for a in self.snapshot.artifacts if a.name == name), None)
            if record is None or not record.complete:
                report.validation.append(
                    Validation(
                        f"artifact {name}", False, "the snapshot holds no complete capture of it"
                    )
                )
                continue
            result = restore_artifact(
                self.repo,
                self.snapshot,
                name,
                targets[name],
                progress=self.progress,
                notice=self.notice,
            )
            report.validation.append(
                Validation(
                    f"artifact {name}",
                    not result.differences,
                    "matches what was recorded"
                    if not result.differences
                    else "; ".join(result.differences[:5]),
                )
            )

    def _databases(self, report: StackRestore) -> None:
        targets = {s.name: self._target_url(s) for s in self.database_sources()}
        self._restore_sources(list(targets), targets, report)

    def _volumes(self, report: StackRestore) -> None:
        volumes = self.volume_targets()
        for volume in volumes.values():
            self._create_volume(volume)
        targets = {name: f"docker-volume://{vol}" for name, vol in volumes.items()}
        self._restore_sources(list(targets), targets, report)

    def _create_volume(self, name: str) -> None:
        """Create volume ``name`` with this restore's labels, and Compose's (so that Compose
        takes it as the project's), unless Compose created it already."""
        import docker.errors

        try:
            self.client.volumes.get(name)
            return
        except docker.errors.NotFound:
            pass
        labels = {LABEL_PROJECT: self.new_project, **self.labels}
        if name.startswith(f"{self.new_project}_"):
            labels[LABEL_VOLUME] = name[len(self.new_project) + 1 :]
        try:
            self.client.volumes.create(name=name, labels=labels)
        except docker.errors.DockerException as exc:
            raise SourceError(f"cannot create volume {name}: {exc}") from exc

    def _data_directories(self, report: StackRestore) -> None:
        files = self._restore_files(self.data_entries())
        report.validation.append(
            Validation(
                "data directories",
                True,
                f"{files} files restored, each checked against its recorded SHA-256",
            )
        )

    def _other_services(self, report: StackRestore) -> None:
        self.compose().up()
        deadline = time.monotonic() + self.wait
        # Services that were not running at backup time (one-shot jobs) are not waited for.
        running = [n for n, s in self.services.items() if s.state == "running"]
        pending = running
        while pending and time.monotonic() < deadline:
            still = []
            for name in pending:
                try:
                    self._running(name)
                except SourceError:
                    still.append(name)
            pending = still
            if pending:
                time.sleep(1.0)
        late = f"not running/healthy after {self.wait:.0f} s"
        self.unready.update({name: late for name in pending})
        for name in running:
            report.validation.append(
                Validation(
                    f"service {name}", name not in pending, late if name in pending else "running"
                )
            )

    def _validation(self, report: StackRestore) -> None:
        for probe in self.plan.probes:
            report.validation.append(self._probe(probe))
        if self.m.preset == "dify":
            report.validation += self._dify_checks()
        else:
            restored = RestoredStack(self.client, self.new_project, self.m)
            report.validation += presets.restore_checks(restored)
        if self.m.facts.get("plugins_rebuild"):
            self.notice(
                "the plugins' virtual environments (plugin_daemon cwd/) were not backed up: "
                "the plugin daemon rebuilds them, which takes a while after the first start"
            )

    def _probe(self, probe: ProbePlan) -> Validation:
        where = ""
        if probe.service:
            try:
                where = f" (look at docker logs {self._container_of(probe.service)})"
            except SourceError:
                where = f" (service {probe.service} has no container)"
        return http_probe(probe.url, probe.status, self.wait, where)

    def _dify_checks(self) -> list[Validation]:
        pg = next((n for n in self.services if self.role(n) == POSTGRES), None)
        privkeys = self.m.facts.get("privkeys")
        if pg is None or not privkeys:
            return []
        source = next((s for s in self.plan.sources if s.service == pg), None)
        if source is None:
            return []
        keys_dir = self.map_path(str(privkeys))
        url = source_url(source, self._container_of(pg), restore=True)
        return [dify.tenant_keys_check(url, keys_dir)]


def _listed(names: Iterable[str]) -> str:
    return ", ".join(names) or "none"
