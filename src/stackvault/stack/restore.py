"""Restoring a whole stack from a stack snapshot (stack layer): ``stack restore``.

To the same host or a new one, under the same or a new project name and directory. The
order is the one that works for Dify and its kind:

1. **checks** - the snapshot is a stack snapshot; the target project has no containers and
   the target directory holds none of the files to restore (nothing is ever overwritten);
   then the images the snapshot holds (``stack backup --with-images``) that this engine
   lacks are loaded, never replacing a tag;
   the **version guard**: every image the snapshot recorded must be on this engine under its
   tag, and an image *older* than the recorded one is refused unless ``force`` (the
   application migrated its schema forward; an older image cannot run it). A newer or
   different image is reported;
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
   restore time (RTO) from the first check to the last validation.

``dry_run`` does step 1 and returns the steps it would take. Everything is read from the
snapshot's manifest (`StackManifest`, with its `Plan`); the report is a `StackRestore`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from stackvault.engine.artifact_restore import restore_artifact
from stackvault.engine.filedata import find_node
from stackvault.engine.progress import NullProgress, Progress
from stackvault.engine.restore import FileRestoreOptions, RestoreJob
from stackvault.errors import PathNotFound, RestoreRefused, SourceError, UsageError
from stackvault.records.plan import MYSQL, POSTGRES, REDIS, ProbePlan, SourcePlan
from stackvault.records.stack import StackManifest, read_manifest
from stackvault.repo.snapshot import Snapshot
from stackvault.stack import presets
from stackvault.stack.classify import DATABASE_ROLES
from stackvault.stack.compose import LABEL_PROJECT, LABEL_SERVICE
from stackvault.stack.composecli import Compose
from stackvault.stack.images import load_images, loadable_images, missing_images, version_guard
from stackvault.stack.presets import dify
from stackvault.stack.presets.restored import RestoredStack
from stackvault.stack.probes import http_probe
from stackvault.stack.reach import source_url
from stackvault.stack.restorereport import StackRestore, Step, Validation

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
    wait: float = 180.0,
    progress: Progress | None = None,
    notice: Callable[[str], None] = lambda _m: None,
    before_step: Callable[[Step], None] | None = None,
) -> StackRestore:
    """Restore the stack of ``snapshot`` (see the module docstring). ``before_step`` is
    called with each step (configuration, directories, database services, ...) just before
    it runs: a caller times the steps or changes what the next one finds (a drill isolates
    the restored project before any of its services is started)."""
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
    started = time.monotonic()
    report = StackRestore(snapshot.id, new_project, new_dir, dry_run)

    def tell(message: str) -> None:
        report.notices.append(message)
        notice(message)

    r = _Restorer(repo, snapshot, client, m, new_project, new_dir)
    r.notice = tell
    r.progress = progress or NullProgress()
    r.wait = wait

    r.check_target()
    missing = missing_images(client, snapshot)
    if missing:
        images = Step("images", f"load {', '.join(missing)} from the snapshot")
        report.steps.append(images)
        if not dry_run:
            t0 = time.monotonic()
            notice(f"{images.name}: {images.detail}")
            report.validation.append(load_images(repo, snapshot, r.progress, tell))
            images.status, images.seconds = "done", round(time.monotonic() - t0, 3)
    version_guard(
        client, m.services, force, loadable_images(snapshot) if dry_run else set(), notice=tell
    )
    steps = r.steps()
    report.steps += [step for step, _run in steps]
    if dry_run:
        return report
    for step, run in steps:
        if before_step is not None:
            before_step(step)
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
    report.rto_s = round(time.monotonic() - started, 3)
    return report


class _Restorer:
    def __init__(
        self,
        repo: Repository,
        snapshot: Snapshot,
        client: DockerClient,
        manifest: StackManifest,
        new_project: str,
        new_dir: str,
    ) -> None:
        self.repo = repo
        self.snapshot = snapshot
        self.client = client
        self.m = manifest
        self.plan = manifest.plan
        self.services = manifest.services
        self.old_project = manifest.project
        self.old_dir = (manifest.directory or "").rstrip("/")
        self.new_project = new_project
        self.new_dir = new_dir.rstrip("/")
        self.notice: Callable[[str], None] = lambda _m: None
        self.progress: Progress = NullProgress()
        self.wait = 180.0
        self._compose: Compose | None = None

    # --- mapping ----------------------------------------------------------------------------

    def map_path(self, path: str) -> str:
        if self.old_dir and (path == self.old_dir or path.startswith(self.old_dir + "/")):
            return self.new_dir + path[len(self.old_dir) :]
        return path

    def map_volume(self, name: str) -> str:
        prefix = f"{self.old_project}_"
        return f"{self.new_project}_{name[len(prefix) :]}" if name.startswith(prefix) else name

    def compose(self) -> Compose:
        if self._compose is None:
            files = [self.map_path(f) for f in self.plan.compose_files]
            self._compose = Compose(self.new_project, self.new_dir, files)
        return self._compose

    def role(self, service: str) -> str:
        found = self.services.get(service)
        return found.role if found is not None else ""

    # --- 1. checks --------------------------------------------------------------------------

    def check_target(self) -> None:
        import docker.errors

        try:
            existing = self.client.containers.list(
                all=True, filters={"label": f"{LABEL_PROJECT}={self.new_project}"}
            )
        except docker.errors.DockerException as exc:
            raise SourceError(f"cannot list the containers of the Docker engine: {exc}") from exc
        if existing:
            raise RestoreRefused(
                f"Compose project {self.new_project} already has {len(existing)} container(s) on "
                "this engine; nothing was changed",
                hint="remove it first (docker compose down, after making sure it holds nothing "
                "you need) or restore under another --project",
            )
        clashes = [
            self.map_path(p)
            for p in self._file_entries()
            if os.path.lexists(self.map_path(p)) and not _empty_dir(self.map_path(p))
        ]
        if clashes:
            raise RestoreRefused(
                f"{clashes[0]} exists already"
                + (f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else "")
                + "; a stack restore never overwrites files, and nothing was changed",
                hint="move them away, or restore into another --directory",
            )
        for name in self._volume_targets().values():
            try:
                self.client.volumes.get(name)
            except docker.errors.NotFound:
                continue
            raise RestoreRefused(
                f"volume {name} exists already; nothing was changed",
                hint=f"remove it (docker volume rm {name}) or restore under another --project",
            )

    # --- what the steps restore -------------------------------------------------------------

    def _file_entries(self) -> list[str]:
        entries: list[str] = []
        for p in [*self.plan.config, *(x.path for x in self.plan.paths)]:
            if p in self.snapshot.paths and p not in entries:
                entries.append(p)
        return entries

    def _config_entries(self) -> list[str]:
        return [p for p in self._file_entries() if p in self.plan.config]

    def _data_entries(self) -> list[str]:
        return [p for p in self._file_entries() if p not in self.plan.config]

    def _volume_targets(self) -> dict[str, str]:
        """Artifact name → target volume for the named volumes of the stack."""
        out: dict[str, str] = {}
        for s in self.plan.sources:
            if s.url.startswith("docker-volume://"):
                out[s.name] = self.map_volume(s.url[len("docker-volume://") :].split("?")[0])
        return out

    def _database_services(self) -> list[str]:
        return [n for n in self.services if self.role(n) in DATABASE_ROLES]

    def _database_sources(self) -> list[SourcePlan]:
        return [s for s in self.plan.sources if self.role(s.service) in DATABASE_ROLES]

    # --- the steps, in their order ----------------------------------------------------------

    def steps(self) -> list[tuple[Step, Run]]:
        """The steps after the checks, in the order they run, each with what it does."""
        dbs = self._database_services()
        config = f"{len(self._config_entries())} entries into {self.new_dir}"
        dirs = f"{len(self.m.mount_dirs)} bind-mount directories with their owners"
        data = (self.map_path(p) for p in self._data_entries())
        others = (n for n in self.services if n not in dbs)
        return [
            (Step("configuration", config), self._configuration),
            (Step("directories", dirs), self._directories),
            (Step("database services", _listed(dbs)), self._start_databases),
            (Step("databases", _listed(s.name for s in self._database_sources())), self._databases),
            (Step("volumes", _listed(self._volume_targets().values())), self._volumes),
            (Step("data directories", _listed(data)), self._data_directories),
            (Step("other services", _listed(others)), self._other_services),
            (Step("validation", f"preset {self.m.preset}: health, facts, files"), self._validation),
        ]

    def _restore_files(self, entries: list[str]) -> int:
        """Restore captured paths to their mapped places (checked against their SHA-256)."""
        if not entries:
            return 0
        groups: dict[str, list[str]] = {}
        for p in entries:
            root = self.old_dir if self.map_path(p) != p else os.path.dirname(p)
            groups.setdefault(root, []).append(p)
        files = 0
        for root, paths in groups.items():
            node = find_node(self.repo, self.snapshot, root)
            if node.type != "dir" or node.subtree is None:
                raise PathNotFound(
                    f"{root} is not a directory in snapshot {self.snapshot.short_id}"
                )
            include = ["/" + os.path.relpath(p, root) for p in paths]
            job = RestoreJob(
                self.repo,
                self.snapshot,
                # check_target made sure every restored path was absent or an empty
                # directory; what exists now are the parents this restore made itself.
                FileRestoreOptions(
                    target=self.map_path(root),
                    include=include,
                    overwrite=True,
                    verify=True,
                    root_tree=node.subtree,
                ),
                progress=self.progress,
            )
            result = job.run()
            files += result.files
            for n in result.notices:
                self.notice(n)
        return files

    def _configuration(self, report: StackRestore) -> None:
        self._restore_files(self._config_entries())

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
        dbs = self._database_services()
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
        raise SourceError(
            f"service {service} of project {self.new_project} did not become ready in "
            f"{self.wait:.0f} s: {last}",
            hint=f"look at its log: docker logs {self._container_of(service)}",
        )

    def _running(self, service: str) -> None:
        container = self.client.containers.get(self._container_of(service))
        state = container.attrs.get("State") or {}
        if not state.get("Running"):
            raise SourceError(f"service {service} is {state.get('Status')}")
        health = (state.get("Health") or {}).get("Status")
        if health not in (None, "healthy"):
            raise SourceError(f"service {service} is {health}")

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
        targets = {s.name: self._target_url(s) for s in self._database_sources()}
        self._restore_sources(list(targets), targets, report)

    def _volumes(self, report: StackRestore) -> None:
        volumes = self._volume_targets()
        targets = {name: f"docker-volume://{vol}" for name, vol in volumes.items()}
        self._restore_sources(list(targets), targets, report)

    def _data_directories(self, report: StackRestore) -> None:
        files = self._restore_files(self._data_entries())
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


ENTRYPOINT_SCRIPT = "docker-entrypoint.sh"
"""The official database images' entrypoint, which ``exec``s the server once it initialised."""


def entrypoint_initialising(client: DockerClient, container: str) -> bool:
    """Whether a process of ``container`` runs ``docker-entrypoint.sh`` (as the program or as
    the script its interpreter runs): the official database images' init phase, before the
    script ``exec``s the real server. Read with the engine's ``top`` (``ps`` on the engine's
    host), so nothing needs to exist inside the container; an engine that cannot list the
    processes gives False (nothing to wait for)."""
    import docker.errors

    try:
        top = client.api.top(container)
    except docker.errors.DockerException:
        return False
    titles = [str(t) for t in top.get("Titles") or []]
    column = next((i for i, t in enumerate(titles) if t in ("CMD", "COMMAND")), None)
    if column is None:
        return False
    for proc in top.get("Processes") or []:
        if len(proc) <= column:
            continue
        words = str(proc[column]).split()[:2]
        if any(os.path.basename(w) == ENTRYPOINT_SCRIPT for w in words):
            return True
    return False


def _listed(names: Iterable[str]) -> str:
    return ", ".join(names) or "none"


def _empty_dir(path: str) -> bool:
    try:
        return os.path.isdir(path) and not os.listdir(path)
    except OSError:
        return False
