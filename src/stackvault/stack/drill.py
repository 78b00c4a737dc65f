"""Restore drills (stack layer): restore a stack snapshot into an isolated copy of the stack,
start it, prove it works, measure how long that took, and remove it again.

**Isolation.** The drill restores into a NEW Compose project, ``<project>-drill-<time>``
(`drill_project_name`), in its own directory ``<workdir>/<drill project>/<name of the
production directory>`` and with its own named volumes (``<drill project>_<volume>``):

- every service of the drill joins the network namespace of one **sandbox** container
  (``network_mode: "container:<sandbox>"``), and the sandbox itself runs with
  ``network_mode: none``: the namespace has nothing but loopback. So services keep
  production's ports (host networking included: a service that listens on
  127.0.0.1:5432 in production listens on 127.0.0.1:5432 of the sandbox, which clashes with
  nothing), nothing is published on the host, and nothing can reach production or the
  outside. Each service name resolves to 127.0.0.1 through the sandbox's ``/etc/hosts``
  (``extra_hosts``), which the services share.
- how it is done: the drill lets `restore_stack` restore the configuration into the drill's
  directory, then - before any container exists - reads the project as Compose resolves it
  (``docker compose config``), checks it and writes the drill's own compose file
  (`DRILL_COMPOSE`), the only one the restore's Compose is given (`_for_drill`: if it were
  ever missing, nothing would start): ``network_mode`` set to the sandbox, ``ports``,
  ``expose``, ``networks``, ``links``, ``hostname``, ``extra_hosts`` and ``dns`` removed,
  ``container_name`` renamed into the drill project, the drill labels added.
- **production is never touched**: the drill refuses (`RestoreRefused`, before any container
  is created) a service with a writable bind mount outside the drill's directory, a mount of
  the Docker socket, ``volumes_from``, ``pid``/``ipc: host``, an external or fixed-name
  volume; `restore_stack` itself refuses a project, volume or file that exists. Production's
  containers, volumes and networks are only ever listed, never changed.
- everything the drill creates carries the label ``io.stackvault.drill=<drill id>`` and
  ``io.stackvault.drill.project=<drill project>`` (the sandbox and every service container);
  volumes and networks are found by the drill project's Compose label and name prefix. The
  next drill removes what an earlier one left behind (`remove_leftovers`) before it starts.

**Phases.** Timed from the drill's start (`stackvault.records.drill.DrillPhase`): removing
leftovers of earlier drills; reading the snapshot (every blob of every part indexed in a
pack that exists - `check_snapshot_data`, so a damaged snapshot fails before anything is
restored, naming the artifact and file - then the manifest, checks, images, version guard);
the restore's steps (configuration, directories, database services, databases, volumes,
data directories, other services until running and healthy, the restore's own validation);
the drill's probes; the cleanup. The RTO runs from reading the snapshot until the probes are
done (leftovers and cleanup not included) and is compared with the job's RTO; the restore
point's age at the start is the RPO achieved.

**Probes** (`DrillProbe`: pass, fail or skipped with its reason; a skipped probe never
counts as a pass): each database and Redis artifact loaded and matching the facts recorded
at capture (row counts, key counts), each volume's files against their SHA-256, the data
directories' files against their SHA-256, every service running and healthy, the Dify
preset's tenant keys, and the plan's HTTP probes sent from inside the drill's network
namespace (``docker exec`` in a container of the drill, with curl, wget, python3 or bash).

**Cleanup.** After the probes (or after ``keep_s`` seconds), every container, volume,
network and the directory the drill created are removed and the engine is listed again: a
leftover is a cleanup failure of its own. SIGINT/SIGTERM (`KeyboardInterrupt`) during a
drill stop it and clean up (signals are ignored while cleaning up).

Entry points: `run_drill`, `pick_drill_snapshot`, `remove_leftovers`, `parse_span`.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stackvault.errors import (
    IntegrityError,
    Interrupted,
    RestoreRefused,
    SnapshotNotFound,
    SourceError,
    StackvaultError,
    UsageError,
)
from stackvault.records.drill import (
    DrillCleanup,
    DrillPhase,
    DrillProbe,
    DrillResult,
    ProbeStatus,
)
from stackvault.records.plan import MYSQL, POSTGRES, REDIS, ProbePlan
from stackvault.records.run import job_tag
from stackvault.records.stack import StackManifest, read_manifest
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.classify import DATABASE_ROLES
from stackvault.stack.compose import LABEL_PROJECT
from stackvault.stack.composecli import Compose
from stackvault.stack.restore import restore_stack
from stackvault.stack.restorereport import StackRestore, Step, Validation

if TYPE_CHECKING:
    from docker import DockerClient

    from stackvault.engine.progress import Progress
    from stackvault.repo.repository import Repository

LABEL = "io.stackvault.drill"
"""Label on everything a drill creates; its value is the drill's id."""
LABEL_DRILL_PROJECT = "io.stackvault.drill.project"
"""Label with the drill's Compose project name."""
LABEL_OWNER = "io.stackvault.drill.owner"
"""Label with ``HOST:PID`` of the process running the drill (see `remove_leftovers`)."""
OWNER_FILE = ".stackvault-drill-owner"
"""In the drill's directory: ``HOST:PID`` of the process running the drill."""
SANDBOX_SUFFIX = "-sandbox"
_DRILL_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]*-drill-\d{8}-\d{6}$")
_DRILL_VOLUME = re.compile(r"^([a-z0-9][a-z0-9_-]*-drill-\d{8}-\d{6})_")
_SANDBOX_LOOP = "trap 'exit 0' TERM INT; while :; do sleep 1; done"
_REMOVED_KEYS = (
    "ports",
    "expose",
    "networks",
    "links",
    "external_links",
    "hostname",
    "domainname",
    "extra_hosts",
    "dns",
    "dns_search",
    "dns_opt",
    "mac_address",
)
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
_FETCH = r"""u="$1"
if command -v curl >/dev/null 2>&1; then
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 --noproxy '*' "$u"; exit 0
elif command -v python3 >/dev/null 2>&1; then
  exec python3 -c 'import sys,urllib.request as r,urllib.error as e
o=r.build_opener(r.ProxyHandler({}))
try: print(o.open(sys.argv[1],timeout=10).status)
except e.HTTPError as x: print(x.code)
except Exception: print(0)' "$u"
elif command -v wget >/dev/null 2>&1; then
  wget -S -O /dev/null -T 10 "$u" 2>&1 | awk '/HTTP\//{c=$2} END{print c+0}'; exit 0
elif command -v bash >/dev/null 2>&1; then
  exec bash -c 'h=${1#http://}; p=${h%%/*}; path=/${h#*/}; [ "$p" = "$h" ] && path=/
  host=${p%%:*}; port=${p##*:}; [ "$port" = "$p" ] && port=80
  exec 3<>/dev/tcp/$host/$port || { echo 0; exit 0; }
  printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$path" "$p" >&3
  read -r _ code _ <&3; echo "${code:-0}"' bash "$u"
fi
echo NOTOOL; exit 127
"""
"""Sends one GET from inside a container (status code on stdout, 0 for no answer)."""


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
        _refuse_shared_paths(m, root, drill_project)
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
        with open(os.path.join(root, OWNER_FILE), "w", encoding="utf-8") as owner:
            owner.write(_owner())
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
            _for_drill(snapshot, m),
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
        result.probes += _restore_probes(restored, snapshot, m)
        result.probes += [
            _http_probe(client, drill_project, p, options.wait) for p in m.plan.probes
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
        with _signals_ignored():
            clock.begin("cleanup", "cleanup")
            result.cleanup = _cleanup(client, drill_project, root if created_root else None)
            clock.end("done" if result.cleanup.ok else "failed")
    result.ended = options.now()
    result.result = result.judge()
    return result


def _refuse_shared_paths(m: StackManifest, root: str, drill_project: str) -> None:
    """Stop before anything is changed when the drill would share a name or path with
    production."""
    if drill_project == m.project:
        raise RestoreRefused(f"the drill project {drill_project} is production's name")
    prod = (m.directory or "").rstrip("/")
    if prod and (
        root == prod or root.startswith(prod + "/") or prod.startswith(root.rstrip("/") + "/")
    ):
        raise RestoreRefused(
            f"the drill directory {root} lies inside production's {prod} (or contains it)",
            hint="pass a --workdir outside the stack's directory",
        )
    if os.path.lexists(root):
        raise RestoreRefused(f"{root} exists already", hint="wait a second and drill again")


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


DRILL_COMPOSE = ".stackvault-drill-compose.yaml"
"""The drill's own compose file, in the drill's project directory (`_Sandbox.isolate`)."""


def _for_drill(snapshot: Snapshot, m: StackManifest) -> Snapshot:
    """``snapshot`` as the drill hands it to `restore_stack` (in memory only): the plan's
    HTTP probes left out (the restore would send them from this host, where they reach
    production; the drill sends them from inside its sandbox), and the compose files
    replaced by the drill's own `DRILL_COMPOSE`, which exists only once `_Sandbox.isolate`
    wrote it: should the restore ever start a service without the drill having isolated
    the project first, Compose finds no file and nothing starts."""
    stack = dict(snapshot.stack or {})
    plan = dict(stack.get("plan") or {})
    plan["probes"] = []
    plan["compose_files"] = [os.path.join((m.directory or "").rstrip("/"), DRILL_COMPOSE)]
    stack["plan"] = plan
    return replace(snapshot, stack=stack)


# --- isolation ---------------------------------------------------------------------------


class _Sandbox:
    """The drill's network namespace and compose file (see the module docstring)."""

    def __init__(self, client: DockerClient, drill_id: str, project: str, root: str) -> None:
        self.client = client
        self.drill_id = drill_id
        self.project = project
        self.root = root
        self.name = project + SANDBOX_SUFFIX
        self.notice: Callable[[str], None] = lambda _m: None

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.drill_id, LABEL_DRILL_PROJECT: self.project, LABEL_OWNER: _owner()}

    def isolate(self, m: StackManifest, directory: str) -> None:
        """Read the restored project as Compose resolves it, refuse what would reach
        production, start the sandbox and write the drill's compose file (`DRILL_COMPOSE`,
        the only one the restore's Compose reads; the restored files stay as they were)."""
        import yaml

        old_dir = (m.directory or "").rstrip("/")
        files = [
            directory + f[len(old_dir) :] if old_dir and f.startswith(old_dir + "/") else f
            for f in m.plan.compose_files
        ]
        outside = [f for f in files if not f.startswith(self.root + "/")]
        if not files or outside:
            raise RestoreRefused(
                "the stack's compose files are not inside its directory"
                + (f" ({outside[0]})" if outside else "")
                + "; a drill cannot use them without touching production's"
            )
        doc = yaml.safe_load(Compose(self.project, directory, files).run("config"))
        if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
            raise SourceError("docker compose config gave no services for the drill")
        for clash in shared_ports(doc["services"]):
            self.notice(clash)
        problems = self.problems(doc)
        if problems:
            raise RestoreRefused(
                f"{problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                + "; the drill stopped before starting anything",
                hint="a drill never shares a path, volume or namespace with production",
            )
        databases = [n for n, s in m.services.items() if s.role in DATABASE_ROLES]
        self.start(doc, databases)
        target = os.path.join(directory, DRILL_COMPOSE)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the environment
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yaml.safe_dump(self.transform(doc), out, sort_keys=False)

    def problems(self, doc: dict[str, Any]) -> list[str]:
        """What in the resolved project would reach production's state."""
        out: list[str] = []
        volumes = doc.get("volumes") or {}
        for vname, v in volumes.items():
            v = v or {}
            if v.get("external"):
                out.append(f"volume {vname} is external (production's)")
            elif v.get("name") and not str(v["name"]).startswith(self.project):
                out.append(f"volume {vname} has the fixed name {v['name']}")
        for name, s in doc["services"].items():
            s = s or {}
            if s.get("volumes_from"):
                out.append(f"service {name} uses volumes_from")
            for key in ("pid", "ipc"):
                if s.get(key) == "host":
                    out.append(f"service {name} uses {key}: host")
            for mount in s.get("volumes") or []:
                kind, source, read_only = _mount(mount)
                if kind != "bind":
                    continue
                if source.endswith("docker.sock"):
                    out.append(f"service {name} mounts the Docker socket {source}")
                elif not read_only and not (
                    source == self.root or source.startswith(self.root + "/")
                ):
                    out.append(f"service {name} mounts {source} writable, outside the drill")
        return out

    def start(self, doc: dict[str, Any], databases: Sequence[str]) -> None:
        """Create and start the sandbox: the image of a database service (else the first
        service) with that service's read-only bind mounts, no network but loopback, each
        service name mapped to 127.0.0.1."""
        import docker.errors

        services: dict[str, Any] = doc["services"]
        chosen = next((n for n in databases if n in services), next(iter(services)))
        spec = services[chosen] or {}
        binds: dict[str, dict[str, str]] = {}
        for mount in spec.get("volumes") or []:
            kind, source, read_only = _mount(mount)
            target = _mount_target(mount)
            if kind == "bind" and read_only and target:
                binds[source] = {"bind": target, "mode": "ro"}
        try:
            container = self.client.containers.run(
                str(spec.get("image") or ""),
                entrypoint=["sh", "-c", _SANDBOX_LOOP],
                name=self.name,
                detach=True,
                network_mode="none",
                extra_hosts={n: "127.0.0.1" for n in host_names(services)},
                labels=self.labels,
                volumes=binds,
                user="0:0",
            )
        except docker.errors.DockerException as exc:
            raise SourceError(f"the drill's sandbox container could not start: {exc}") from exc
        for _ in range(50):
            container.reload()
            if container.status == "running":
                return
            if container.status in ("exited", "dead"):
                break
            time.sleep(0.1)
        raise SourceError(
            f"the drill's sandbox container {self.name} ({spec.get('image')}) did not keep "
            f"running (status {container.status}): its image needs sh"
        )

    def transform(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The drill's compose document: every service in the sandbox's namespace, nothing
        published, names and labels of the drill."""
        out = {k: v for k, v in doc.items() if k != "networks"}
        services: dict[str, Any] = {}
        for name, spec in doc["services"].items():
            s = {k: v for k, v in (spec or {}).items() if k not in _REMOVED_KEYS}
            s["network_mode"] = f"container:{self.name}"
            if "container_name" in s:
                s["container_name"] = f"{self.project}-{name}"
            labels = _labels(s.get("labels"))
            s["labels"] = {**labels, **self.labels}
            services[name] = s
        out["services"] = services
        return out


def shared_ports(services: dict[str, Any]) -> list[str]:
    """Ports that several services declare (``ports`` or ``expose``, the container's side):
    in the drill's one namespace only one of them can listen on it (told as a notice; the
    service that cannot start then fails the drill by name)."""
    users: dict[str, list[str]] = {}
    for name, spec in services.items():
        spec = spec or {}
        for entry in [*(spec.get("ports") or []), *(spec.get("expose") or [])]:
            if isinstance(entry, dict):
                port = str(entry.get("target") or "")
            else:
                port = str(entry).rsplit(":", 1)[-1].split("/")[0]
            if port and name not in users.setdefault(port, []):
                users[port].append(name)
    return [
        f"services {', '.join(names)} all use port {port}: in the drill's one network "
        "namespace only one of them can listen on it"
        for port, names in sorted(users.items())
        if len(names) > 1
    ]


def host_names(services: dict[str, Any]) -> list[str]:
    """Every name the services of a resolved compose document reach each other by: service
    names, container names and network aliases (all mapped to 127.0.0.1 in the sandbox)."""
    names: list[str] = []
    for name, spec in services.items():
        spec = spec or {}
        found = [name, spec.get("container_name")]
        networks = spec.get("networks")
        if isinstance(networks, dict):
            for net in networks.values():
                found += list((net or {}).get("aliases") or [])
        names += [str(n) for n in found if n and str(n) not in names]
    return names


def _labels(value: object) -> dict[str, str]:
    """A service's labels as a mapping (``docker compose config`` may write a list)."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for item in value if isinstance(value, list) else []:
        key, _, val = str(item).partition("=")
        out[key] = val
    return out


def _mount(mount: object) -> tuple[str, str, bool]:
    """(``bind`` | ``volume`` | other, source, read-only) of a service's volume entry as
    ``docker compose config`` writes it (short string or long mapping)."""
    if isinstance(mount, dict):
        kind = str(mount.get("type") or "volume")
        return kind, str(mount.get("source") or ""), bool(mount.get("read_only"))
    parts = str(mount).split(":")
    if len(parts) == 1:
        return "volume", "", False
    source = parts[0]
    read_only = len(parts) > 2 and "ro" in parts[2].split(",")
    kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
    return kind, source, read_only


def _mount_target(mount: object) -> str:
    if isinstance(mount, dict):
        return str(mount.get("target") or "")
    parts = str(mount).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


# --- probes ------------------------------------------------------------------------------


def _restore_probes(
    restored: StackRestore, snapshot: Snapshot, m: StackManifest
) -> list[DrillProbe]:
    """The restore's validation as probes, by what each checked."""
    kinds = {a.name: a for a in snapshot.artifacts}
    probes: list[DrillProbe] = []
    for v in restored.validation:
        probes.append(_as_probe(v, kinds))
    if m.preset == "dify" and not any(v.subject.startswith("dify ") for v in restored.validation):
        probes.append(
            DrillProbe(
                "dify tenant keys",
                "skipped",
                "the plan has no PostgreSQL source or privkeys directory to check",
            )
        )
    return probes


def _as_probe(v: Validation, artifacts: dict[str, Any]) -> DrillProbe:
    status: ProbeStatus = "pass" if v.ok else "fail"
    if v.subject.startswith("artifact "):
        name = v.subject[len("artifact ") :]
        record = artifacts.get(name)
        kind = record.kind if record is not None else ""
        label = {
            POSTGRES: f"database {name}: loaded, accepts connections, row counts as recorded",
            MYSQL: f"database {name}: loaded, accepts connections, row counts as recorded",
            REDIS: f"redis {name}: keys as recorded",
            "docker-volume": f"volume {name}: files as recorded (SHA-256)",
        }.get(kind, f"artifact {name}")
        facts = (record.metadata or {}).get("facts") if record is not None else None
        if v.ok and not facts:
            return DrillProbe(label, "skipped", "the snapshot recorded no facts to compare")
        return DrillProbe(label, status, v.message)
    if v.subject == "dify tenants' private keys" and v.ok and "nothing to check" in v.message:
        return DrillProbe("dify tenant keys", "skipped", v.message)
    if v.subject == "dify tenants' private keys":
        return DrillProbe("dify tenant keys", status, v.message)
    if v.subject == "data directories":
        return DrillProbe("files: data directories (SHA-256)", status, v.message)
    return DrillProbe(v.subject, status, v.message)


def _http_probe(client: DockerClient, project: str, probe: ProbePlan, wait: float) -> DrillProbe:
    """Send the plan's probe from inside the drill's namespace: exec a GET in the probe's
    service container, else in the sandbox, else in any container of the drill, until it
    answers the status or the wait ends."""
    import docker.errors

    name = f"http {probe.url}"
    candidates = _drill_containers(client, project, probe.service)
    deadline = time.monotonic() + wait
    got = "no answer"
    while True:
        tried = False
        for container in candidates:
            try:
                found = client.containers.get(container.id)
                code, out = found.exec_run(["sh", "-c", _FETCH, "sh", probe.url])
            except docker.errors.DockerException:
                continue
            raw = out if isinstance(out, bytes) else b"".join(out or [])
            text = raw.decode("utf-8", "replace").strip()
            if code == 127 or text.endswith("NOTOOL") or not text.isdigit():
                continue
            tried = True
            status = int(text)
            if status == probe.status:
                return DrillProbe(name, "pass", f"answered {status} inside the drill")
            got = f"answered {status}" if status else "no answer"
            break
        if not tried:
            return DrillProbe(
                name,
                "skipped",
                "no container of the drill has sh with curl, python3, wget or bash to send it",
            )
        if time.monotonic() > deadline:
            return DrillProbe(name, "fail", f"{got}, not {probe.status}, within {wait:.0f} s")
        time.sleep(1.0)


def _drill_containers(client: DockerClient, project: str, service: str | None) -> list[_Listed]:
    """The running containers of the drill: the probe's service first, then the sandbox."""
    found = _containers(client, f"{LABEL_DRILL_PROJECT}={project}", running=True)
    sandbox = project + SANDBOX_SUFFIX

    def rank(c: _Listed) -> int:
        if service and c.labels.get("com.docker.compose.service") == service:
            return 0
        return 1 if c.name == sandbox else 2

    return sorted(found, key=rank)


# --- cleanup -----------------------------------------------------------------------------


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored while cleaning up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _cleanup(client: DockerClient, project: str, root: str | None) -> DrillCleanup:
    """Remove every container, volume and network of drill project ``project`` and its
    directory ``root``; then list them again: anything left is the cleanup's failure."""
    import docker.errors

    done = DrillCleanup()
    errors: list[str] = []
    for container in _project_containers(client, project):
        try:
            client.api.remove_container(container.id, force=True, v=True)
            done.removed.append(f"container {container.name}")
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            errors.append(f"container {container.name}: {exc}")
    for network in client.networks.list(filters={"label": f"{LABEL_PROJECT}={project}"}):
        try:
            network.remove()
            done.removed.append(f"network {network.name}")
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            errors.append(f"network {network.name}: {exc}")
    for volume in _project_volumes(client, project):
        try:
            volume.remove(force=True)
            done.removed.append(f"volume {volume.name}")
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            errors.append(f"volume {volume.name}: {exc}")
    if root is not None and os.path.lexists(root):
        try:
            shutil.rmtree(root)
            done.removed.append(f"directory {root}")
        except OSError as exc:
            errors.append(f"directory {root}: {exc.strerror or exc}")
    left = [f"container {c.name}" for c in _project_containers(client, project)]
    left += [f"volume {v.name}" for v in _project_volumes(client, project)]
    left += [
        f"network {n.name}"
        for n in client.networks.list(filters={"label": f"{LABEL_PROJECT}={project}"})
    ]
    if root is not None and os.path.lexists(root):
        left.append(f"directory {root}")
    if left and not errors:
        errors.append(f"still there: {', '.join(left)}")
    if errors:
        done.ok = False
        done.error = "; ".join(errors)[:1000]
    return done


@dataclass(frozen=True)
class _Listed:
    """A container as the engine lists it (no inspect: one that goes away meanwhile is no
    error)."""

    id: str
    name: str
    labels: dict[str, str]


def _containers(client: DockerClient, label: str, *, running: bool = False) -> list[_Listed]:
    out = []
    for c in client.api.containers(all=not running, filters={"label": label}):
        names = c.get("Names") or [""]
        out.append(_Listed(str(c.get("Id")), str(names[0]).lstrip("/"), c.get("Labels") or {}))
    return out


def _project_containers(client: DockerClient, project: str) -> list[_Listed]:
    seen: dict[str, _Listed] = {}
    for label in (f"{LABEL_DRILL_PROJECT}={project}", f"{LABEL_PROJECT}={project}"):
        for c in _containers(client, label):
            seen[c.id] = c
    return list(seen.values())


def _project_volumes(client: DockerClient, project: str) -> list[Any]:
    seen: dict[str, Any] = {}
    for v in client.volumes.list(filters={"label": f"{LABEL_PROJECT}={project}"}):
        seen[str(v.name)] = v
    for v in client.volumes.list(filters={"name": project + "_"}):
        if str(v.name).startswith(project + "_"):
            seen[str(v.name)] = v
    return list(seen.values())


def remove_leftovers(client: DockerClient, workdir: str, keep: str | None = None) -> DrillCleanup:
    """Remove what earlier drills left on this engine and in ``workdir``: containers with
    the drill label, and the volumes, networks and directories of their drill projects
    (``<project>-drill-<time>``, by Compose label and name); ``keep`` names a drill project
    left alone. A drill still running on this host (its owner label or file names a live
    process of this host other than this one: another job's drill under ``serve``) is left
    alone too."""
    projects: set[str] = set()
    live: set[str] = set()
    for c in _containers(client, LABEL):
        name = c.labels.get(LABEL_DRILL_PROJECT) or ""
        if _DRILL_PROJECT.match(name):
            projects.add(name)
            if _live(c.labels.get(LABEL_OWNER) or ""):
                live.add(name)
    for v in client.volumes.list(filters={"name": "-drill-"}):
        found = _DRILL_VOLUME.match(str(v.name))
        if found:
            projects.add(found.group(1))
    try:
        projects.update(d for d in os.listdir(workdir) if _DRILL_PROJECT.match(d))
    except OSError:
        pass
    for project in projects:
        try:
            with open(os.path.join(workdir, project, OWNER_FILE), encoding="utf-8") as f:
                if _live(f.read().strip()):
                    live.add(project)
        except OSError:
            pass
    projects -= live | {keep or ""}
    total = DrillCleanup()
    for project in sorted(projects):
        done = _cleanup(client, project, os.path.join(workdir, project))
        total.removed += done.removed
        if not done.ok:
            total.ok = False
            total.error = done.error
    return total


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _live(owner: str) -> bool:
    """Whether ``HOST:PID`` is a process of this host, other than this one, that exists."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drill_resources(client: DockerClient, project: str | None = None) -> list[str]:
    """What carries the drill label (of ``project``, else of any drill) on the engine:
    ``container NAME``, ``volume NAME``, ``network NAME`` - empty after a clean drill."""
    label = f"{LABEL_DRILL_PROJECT}={project}" if project else LABEL
    out = [f"container {c.name}" for c in _containers(client, label)]
    if project:
        out += [f"volume {v.name}" for v in _project_volumes(client, project)]
        out += [
            f"network {n.name}"
            for n in client.networks.list(filters={"label": f"{LABEL_PROJECT}={project}"})
        ]
    else:
        out += [
            f"volume {v.name}"
            for v in client.volumes.list(filters={"name": "-drill-"})
            if _DRILL_VOLUME.match(str(v.name))
        ]
    return out
