"""The drill of a job without a stack (stack layer): a snapshot of database sources and paths
restored away from production, proved, timed and removed again.

- each **PostgreSQL or MySQL/MariaDB artifact** is loaded into a throwaway server of the
  same family (`stackvault.stack.drill.throwaway`: a temporary cluster or server made with
  this host's own server programs, on 127.0.0.1 at a free port; an artifact captured in a
  container goes into a container of the same image, on the host's loopback at a free
  port, when the Docker engine is reachable) through the ordinary
  artifact restore (`restore_artifact`), and the server is then probed and compared with the
  facts recorded at capture (tables and their row counts of every database): two probes,
  ``loaded`` and ``row counts as recorded`` (skipped when the snapshot recorded no facts);
- **everything else** - the job's paths, and artifacts of other kinds (Redis, SQLite,
  volumes, buckets) - is restored as files into the drill's directory and every restored
  file is read back against its SHA-256 (one probe; a notice says which artifacts were only
  checked as files, not loaded into a server).

Phases: ``leftovers`` (directories of earlier drills whose process is gone), ``read
snapshot`` (every blob of every part in a pack that exists), per database artifact ``server
NAME`` and ``database NAME``, ``files``, then ``kept`` (``--keep``: the servers stay up) and
``cleanup`` (servers stopped, the directory removed). The RTO runs from reading the snapshot
until the last probe. The drill's directory is ``<workdir>/<job>-drill-<time>``; its
servers' data lives there too, unless their user cannot reach it (then in the system's
temporary directory).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

from stackvault.errors import StackvaultError
from stackvault.records.artifact import ArtifactRecord
from stackvault.records.drill import DrillCleanup, DrillProbe, DrillResult
from stackvault.records.plan import MYSQL, POSTGRES
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.drill.cleanup import (
    drill_resources,
    remove_leftover_directories,
    remove_leftovers,
)
from stackvault.stack.drill.containerserver import (
    ContainerServer,
    MySQLContainerServer,
    PostgresContainerServer,
)
from stackvault.stack.drill.labels import (
    LABEL,
    LABEL_DRILL_PROJECT,
    LABEL_OWNER,
    OWNER_FILE,
    owner,
)
from stackvault.stack.drill.phases import PhaseClock, keep_for, run_phases
from stackvault.stack.drill.run import DrillOptions, drill_project_name
from stackvault.stack.drill.snapshots import check_snapshot_data
from stackvault.stack.drill.throwaway import (
    DrillServer,
    MariaDBServer,
    PostgresServer,
    ThrowawayServer,
)

if TYPE_CHECKING:
    from docker import DockerClient

    from stackvault.engine.progress import Progress
    from stackvault.repo.repository import Repository

SERVERS: dict[str, type[ThrowawayServer]] = {POSTGRES: PostgresServer, MYSQL: MariaDBServer}
"""The artifact kinds loaded into a throwaway server, and the server of each."""
CONTAINER_SERVERS: dict[str, type[ContainerServer]] = {
    POSTGRES: PostgresContainerServer,
    MYSQL: MySQLContainerServer,
}
"""The same, for an artifact captured in a container (with an engine to run one)."""


def run_source_drill(
    repo: Repository,
    snapshot: Snapshot,
    options: DrillOptions,
    *,
    client: DockerClient | None = None,
    notice: Callable[[str], None] = lambda _m: None,
    progress: Progress | None = None,
) -> DrillResult:
    """Drill ``snapshot`` of a job without a stack (see the module docstring); like
    `run_drill`, it never raises for what goes wrong in the drill, and the cleanup has run
    whatever happened. With ``client``, a PostgreSQL artifact captured in a container is
    loaded into a container of the same image, and leftovers of earlier drills on the
    engine are removed too."""
    started = options.now()
    result = DrillResult(
        drill_id=options.drill_id,
        job=options.job,
        project="",
        drill_project=drill_project_name(options.job, started),
        snapshot=snapshot.id,
        snapshot_time=snapshot.time,
        started=started,
        ended=started,
        rto_target_s=options.rto_target_s,
        rpo_achieved_s=round((started - snapshot.time).total_seconds(), 3),
    )
    drill = _SourceDrill(repo, snapshot, options, PhaseClock(result), notice, progress)
    drill.client = client
    return run_phases(drill.clock, drill.work, drill.cleanup, options.now)


class _SourceDrill:
    """The phases of one drill of a job without a stack, and what it has made so far."""

    def __init__(
        self,
        repo: Repository,
        snapshot: Snapshot,
        options: DrillOptions,
        clock: PhaseClock,
        notice: Callable[[str], None],
        progress: Progress | None,
    ) -> None:
        from stackvault.engine.progress import NullProgress

        self.repo, self.snapshot, self.options = repo, snapshot, options
        self.clock, self.notice = clock, notice
        self.progress: Progress = progress or NullProgress()
        self.result = clock.result
        self.root = os.path.join(os.path.abspath(options.workdir), self.result.drill_project)
        self.created: list[str] = []
        """Directories the drill made (removed by the cleanup)."""
        self.servers: list[DrillServer] = []
        self.client: DockerClient | None = None

    def tell(self, message: str) -> None:
        self.result.notices.append(message)
        self.notice(message)

    def work(self) -> None:
        self.clock.begin("leftovers", "cleanup")
        keep = self.result.drill_project
        removed = remove_leftover_directories(self.options.workdir, keep=keep)
        if self.client is not None:
            removed.removed += remove_leftovers(self.client, self.options.workdir, keep).removed
        if removed.removed:
            self.tell(f"removed leftovers of earlier drills: {', '.join(removed.removed)}")
        self.clock.begin("read snapshot", "snapshot")
        rto_from = self.clock.at()
        check_snapshot_data(self.repo, self.snapshot)
        os.makedirs(self.options.workdir, exist_ok=True)
        os.mkdir(self.root, 0o711)  # the servers' user passes through to servers/
        self.created.append(self.root)
        os.mkdir(os.path.join(self.root, "files"), 0o700)
        with open(os.path.join(self.root, OWNER_FILE), "w", encoding="utf-8") as owner_file:
            owner_file.write(owner())
        databases = [a for a in self.snapshot.artifacts if a.complete and a.kind in SERVERS]
        for record in databases:
            self.result.probes += self.database(record)
        self.result.probes += self.files({a.path for a in databases})
        self.clock.end()
        self.result.rto_s = round(self.clock.at() - rto_from, 3)
        what = ", ".join(s.describe() for s in self.servers if s.running) or "the restored files"
        keep_for(self.clock, self.options.keep_s, self.tell, what)

    def database(self, record: ArtifactRecord) -> list[DrillProbe]:
        """Load ``record`` into a new throwaway server and compare it with its facts."""
        from stackvault.engine.artifact_restore import restore_artifact

        self.clock.begin(f"server {record.name}", "start")
        loaded = f"database {record.name}: loaded"
        try:
            server = self._server(record)
            self.servers.append(server)
            server.start()
        except StackvaultError as exc:
            self.clock.end("failed")
            return [
                DrillProbe(loaded, "fail", exc.message + (f" ({exc.hint})" if exc.hint else ""))
            ]
        self.clock.begin(f"database {record.name}", "databases")
        done = restore_artifact(
            self.repo,
            self.snapshot,
            record.name,
            server.url(_one_database(record)),
            progress=self.progress,
            notice=self.tell,
        )
        where = f"a throwaway {server.describe()}"
        probes = [DrillProbe(loaded, "pass", f"into {where} in {done.duration_s:.1f} s")]
        facts = f"database {record.name}: row counts as recorded"
        if not done.validated:
            probes.append(DrillProbe(facts, "skipped", "the snapshot recorded no facts to compare"))
        elif done.differences:
            more = f" (and {len(done.differences) - 1} more)" if len(done.differences) > 1 else ""
            probes.append(DrillProbe(facts, "fail", done.differences[0] + more))
        else:
            probes.append(DrillProbe(facts, "pass", f"every table of {where} as recorded"))
        return probes

    def files(self, left_out: set[str]) -> list[DrillProbe]:
        """Restore everything but the database artifacts as files below the drill's
        directory and read every file back against its SHA-256."""
        from stackvault.engine.restore import FileRestoreOptions, RestoreJob
        from stackvault.errors import IntegrityError

        others = [a for a in self.snapshot.artifacts if a.path not in left_out]
        paths = [p for p in self.snapshot.paths if not p.startswith("/.stackvault/")]
        if not others and not paths:
            return []
        self.clock.begin("files", "files")
        for a in others:
            self.tell(f"artifact {a.name} ({a.kind}) is checked as files (SHA-256), not loaded")
        name = "files: every restored file's SHA-256"
        job = RestoreJob(
            self.repo,
            self.snapshot,
            FileRestoreOptions(
                target=os.path.join(self.root, "files"), exclude=sorted(left_out), verify=True
            ),
            progress=self.progress,
        )
        try:
            done = job.run()
        except IntegrityError:
            done = job.result
        if done.failed:
            path, why = done.failed[0]
            more = f" (and {len(done.failed) - 1} more)" if len(done.failed) > 1 else ""
            return [DrillProbe(name, "fail", f"{path}: {why}{more}")]
        if not done.verified:
            return [DrillProbe(name, "skipped", "the snapshot holds no file to check")]
        return [DrillProbe(name, "pass", f"{done.verified} files restored and read back")]

    def _server(self, record: ArtifactRecord) -> DrillServer:
        """A container of the image a database artifact was captured in (with an engine),
        else a server of this host's programs."""
        captured = (record.metadata or {}).get("container")
        if self.client is not None and isinstance(captured, dict):
            image = str(captured.get("image") or captured.get("image_id") or "")
            if image:
                labels = {
                    LABEL: self.options.drill_id,
                    LABEL_DRILL_PROJECT: self.result.drill_project,
                    LABEL_OWNER: owner(),
                }
                name = f"{self.result.drill_project}-{re.sub(r'[^A-Za-z0-9_.-]', '', record.name)}"
                production = captured.get("name")
                return CONTAINER_SERVERS[record.kind](
                    self.client, image, name, labels, str(production) if production else None
                )
        return SERVERS[record.kind](os.path.join(self._server_root(), record.name))

    def _server_root(self) -> str:
        """Where the servers' data goes: the drill's directory when the servers' user can
        reach it, else a new directory in the system's temporary directory."""
        if os.geteuid() != 0 or _reachable(self.root):
            return os.path.join(self.root, "servers")
        made = tempfile.mkdtemp(prefix=f"{self.result.drill_project}-")
        os.chmod(made, 0o711)
        self.created.append(made)
        with open(os.path.join(made, OWNER_FILE), "w", encoding="utf-8") as owner_file:
            owner_file.write(owner())  # read by the next drill's leftovers phase
        return made

    def cleanup(self) -> DrillCleanup:
        done = DrillCleanup()
        for server in self.servers:
            server.stop()
            if server.running:
                done.ok = False
                done.error = f"the throwaway {server.describe()} did not stop"
            elif server.port:
                done.removed.append(f"server {server.describe()}")
        for path in reversed(self.created):
            try:
                shutil.rmtree(path)
                done.removed.append(f"directory {path}")
            except OSError as exc:
                done.ok = False
                done.error = f"directory {path}: {exc.strerror or exc}"
        if self.client is not None and done.ok:
            left = drill_resources(self.client, self.result.drill_project)
            if left:
                done.ok = False
                done.error = f"still there: {', '.join(left)}"
        return done


def _one_database(record: ArtifactRecord) -> str | None:
    """The database a one-database artifact was captured from (it is restored under that
    name, so that its facts compare with that database); None for a server artifact."""
    meta = record.metadata or {}
    names = meta.get("databases")
    if meta.get("mode") == "database" and isinstance(names, list) and len(names) == 1:
        return str(names[0])
    return None


def _reachable(path: str) -> bool:
    """Whether every directory above ``path`` lets other users through (``o+x``)."""
    parent = os.path.dirname(path)
    while True:
        try:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        if parent == os.path.dirname(parent):
            return True
        parent = os.path.dirname(parent)
