"""One consistent cut of a whole Compose stack (stack layer): ``stack backup``.

`backup_stack` runs: preflight (any error stops it before anything changes; every source is
probed exactly as its capture will connect - the same port, socket, user and password source,
`stackvault.stack.reach.source_url` - so a capture does not fail for a reason the preflight
could have seen) → quiesce → capture → restart → one snapshot holding every part and the
stack manifest.

- ``strict``: the services marked ``stop: true`` (the writers) are stopped, dependents first,
  through the Engine API: by dependency level (`stop_levels`), the services of one level all
  at once, so the stop costs the slowest service of each level, not the sum of their
  timeouts. Each container is given its own stop timeout where it has one (Compose's
  ``stop_grace_period``, the container's ``StopTimeout``), ``stop_timeout`` otherwise. Then
  every database is dumped (the dumps first: a writer may run again only once every dump is
  taken), then each stopped service's own volumes (in the order the services start again),
  then the data directories and the configuration; each stopped service is started again as
  soon as its own data is read and every stopped service it depends on runs again
  (`stackvault.stack.restarts`), the others once the last byte is read (before the
  repository's index and snapshot are written), and the manifest records per service how long
  it was down and whether it was killed after its timeout (`Downtime`). They are started
  again after a failure, Ctrl-C or SIGTERM too (`stackvault.sources.docker.quiesce.Quiesce`).
  The services whose plan says ``quiesce: pause`` (or named in ``pause``) are frozen instead
  (``docker pause`` at their place among the levels, ``docker unpause`` as soon as their own
  data is read, as a stopped service is started): no stop, no start, down
  for the capture alone; what they wrote stays as after a crash, so only for stores that
  survive one (a vector store or object store with a write-ahead log), never a database
  service (it is dumped through its container, which a frozen container refuses).
- ``online``: nothing stops; each part is consistent on its own (a database dump is one
  snapshot) and the manifest records when each part was captured and the skew between the
  first and the last.

With ``with_images`` the images the services run are stored too (artifact ``images``, kind
``docker-images``), read *before* the writers stop - they do not change - so they add no
downtime; unchanged images deduplicate to nothing new.

The snapshot is tagged ``stack:PROJECT`` and carries the **manifest** (`StackManifest`, stored
as ``Snapshot.stack``, FORMAT.md §8.3): the plan (services with roles, images, digests,
sources, paths, config, secret names, preset facts), the images and their digests as they ran,
server versions from the artifacts, the application schema version where the preset knows it
(Dify: ``alembic_version``), per-artifact sizes and SHA-256 of the dump files, and the timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.progress import NullProgress, Progress
from stackvault.errors import SourceError, UsageError
from stackvault.records.plan import CONSISTENCY, POSTGRES, Plan
from stackvault.records.stack import (
    MANIFEST_FORMAT,
    AppVersions,
    ArtifactSummary,
    Downtime,
    MountDir,
    ServiceDowntime,
    ServiceRecord,
    StackManifest,
    Timings,
    VersionRecord,
)
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.classify import DATABASE_ROLES
from stackvault.stack.compose import Project
from stackvault.stack.hooks import Hooks
from stackvault.stack.preflight import Check, errors, preflight
from stackvault.stack.presets import dify
from stackvault.stack.reach import postgres_query, source_url
from stackvault.stack.restarts import EarlyRestarts, capture_order, cut_data

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from stackvault.records.artifact import ArtifactRecord
    from stackvault.repo.repository import Repository
    from stackvault.sources.contract import Source
    from stackvault.sources.docker.quiesce import StopRecord


class PreflightFailed(SourceError):
    """The stack is not ready for a backup; nothing was changed."""


@dataclass
class StackBackup:
    snapshot: Snapshot
    checks: list[Check]
    manifest: StackManifest
    """As stored, with ``timings.total_s``."""
    problems: list[str] = field(default_factory=list)


def backup_stack(
    repo: Repository,
    plan: Plan,
    client: DockerClient,
    *,
    consistency: str | None = None,
    tags: list[str] | None = None,
    progress: Progress | None = None,
    notice: Callable[[str], None] = lambda _m: None,
    stop_timeout: float = 60.0,
    with_images: bool = False,
    pause: Collection[str] = (),
) -> StackBackup:
    """Back up the stack of ``plan`` (see the module docstring). ``stop_timeout``: for the
    containers without a stop timeout of their own; ``pause``: services (``stop: true``, not
    databases) frozen instead of stopped in a strict cut (`UsageError` for any other), besides
    those whose plan says ``quiesce: pause``. Every source is probed (opened as its capture
    opens it) before anything is stopped: `PreflightFailed` when one does not answer."""
    from stackvault.sources.registry import open_source

    mode = consistency or plan.consistency
    if mode not in CONSISTENCY:
        raise UsageError(f"consistency must be strict or online, not {mode!r}")
    pause = {*pause, *(n for n, s in plan.services.items() if s.stop and s.quiesce == "pause")}
    for name in sorted(pause):
        svc = plan.services.get(name)
        if svc is None or not svc.stop or svc.role in DATABASE_ROLES:
            raise UsageError(
                f"service {name} cannot be paused for the cut: only a service the plan stops "
                "(stop: true) and that is not a database can be",
                hint="a database is dumped through its container, which a paused one refuses",
            )
    started = time.monotonic()
    checks, project = _ready(plan, client, notice)
    paths = _paths(plan)  # those that exist now, before any hook ran
    cut = _Cut(plan, project, client, mode, stop_timeout, notice, set(pause), paths)
    by_name = {s.name: s for s in plan.sources}
    planned = [by_name[n] for n in capture_order(plan.sources, cut.data, cut.start_order)]
    sources = [open_source(source_url(s)) for s in planned]
    alias = {opened.name: s.name for opened, s in zip(sources, planned, strict=True)}
    if with_images:
        images = sorted({svc.image for svc in project.services.values() if svc.image})
        sources.insert(0, open_source("docker-images://?tags=" + ",".join(images)))
    cut.hooks.before()
    try:
        job = _job(repo, plan, paths, tags, sources, progress)
        job.opts.before_cut = cut.stop
        job.opts.cut_at = 1 if with_images else 0
        job.opts.after_capture = cut.finish
        job.opts.captured = lambda name: cut.restarts.captured(alias.get(name, name))
        try:
            result = job.run()
        except BaseException as exc:
            cut.start_again(exc)
            raise
    finally:
        cut.hooks.after()  # the undo after a failure; nothing more after a success
    manifest = cut.manifest
    assert manifest is not None  # after_capture runs whenever the job succeeds
    manifest.timings.total_s = round(time.monotonic() - started, 3)
    result.snapshot.stack = manifest.to_dict()  # as returned (the stored one lacks total_s)
    problems = [f"{p.path}: {p.message}" for p in result.problems if p.incomplete]
    return StackBackup(result.snapshot, checks, manifest, problems)


def _ready(
    plan: Plan, client: DockerClient, notice: Callable[[str], None]
) -> tuple[list[Check], Project]:
    """Preflight, every source probed as its capture will connect: its checks and the
    project as found; `PreflightFailed` naming the first problem when there is one, before
    anything was stopped. Warnings are told."""
    started = time.monotonic()
    checks, found = preflight(plan, client, probe_sources=True)
    notice(f"preflight took {time.monotonic() - started:.2f} s")
    failed = errors(checks)
    if failed or found is None:
        first = failed[0]
        more = f" (and {len(failed) - 1} more problems)" if len(failed) > 1 else ""
        raise PreflightFailed(
            f"preflight: {first.subject} {first.message}{more}; nothing was stopped or saved",
            hint=first.fix or "run stackvault stack preflight for every problem",
        )
    for c in checks:
        if c.status == "warning":
            notice(f"warning: {c.subject}: {c.message}")
    return checks, found


class _Cut:
    """Around the capture: the hooks, stopping the writers (strict) at the cut and starting
    each again as soon as its own data is read, the others once everything is read - or after
    a failure -, the timings, and then the manifest."""

    def __init__(
        self,
        plan: Plan,
        project: Project,
        client: DockerClient,
        mode: str,
        stop_timeout: float,
        notice: Callable[[str], None],
        pause: set[str],
        paths: list[str],
    ) -> None:
        from stackvault.engine.backup import normalise_paths
        from stackvault.sources.docker.engine import get_container
        from stackvault.sources.docker.quiesce import Quiesce

        self.plan, self.project, self.client, self.mode = plan, project, client, mode
        self.notice = notice
        self.levels = stop_levels(plan) if mode == "strict" else []
        self.stopping = [svc for level in self.levels for svc in level]
        self.service_of: dict[str, str] = {}
        """Container name → the service it belongs to, for the stopped ones."""
        containers: list[list[Container]] = []
        paused: list[str] = []
        for level in self.levels:
            containers.append([])
            for svc in level:
                for name in project.services[svc].containers if svc in project.services else []:
                    containers[-1].append(get_container(client, name))
                    self.service_of[name] = svc
                    if svc in pause:
                        paused.append(name)
        self.quiesce = Quiesce(
            client,
            levels=containers,
            timeout=stop_timeout,
            own_timeouts=True,
            pause=paused,
            notice=notice,
        )
        self.start_order = [svc for level in reversed(self.levels) for svc in level]
        walked = normalise_paths(BackupOptions(paths=paths, sources=[])) if paths else []
        self.data = cut_data(plan, project, self.stopping, walked)
        self.restarts = EarlyRestarts(self.data, self._start_services)
        self.hooks = Hooks(plan.hooks, project, client, notice)
        self.times: dict[str, float] = {}
        self.entered = False
        self.manifest: StackManifest | None = None

    def stop(self) -> None:
        """At the cut (`BackupOptions.before_cut`)."""
        if self.stopping:
            levels = "; then ".join(", ".join(level) for level in self.levels)
            self.notice(f"stopping {levels} for the cut (each level at once)")
        self.times["start"] = time.monotonic()
        self.quiesce.__enter__()  # on failure it starts again what it stopped, then raises
        self.entered = True
        self.times["stopped"] = time.monotonic()
        self.restarts.begin()

    def _start_services(self, services: list[str]) -> set[str]:
        """Start ``services`` again now (their own data is read); those that failed."""
        self.notice(f"starting {', '.join(services)} again: their own data is read")
        containers = [c for c, svc in self.service_of.items() if svc in services]
        failed = self.quiesce.start(containers)
        return {self.service_of[f.split(" ", 1)[0]] for f in failed}

    def finish(self, artifacts: list[ArtifactRecord]) -> dict[str, Any]:
        """Everything is read (`BackupOptions.after_capture`): start the writers that do not
        run yet, run the after hooks, and give the manifest to store."""
        self.times["captured"] = time.monotonic()
        interrupted = self.restarts.end()
        self.quiesce.__exit__(None, None, None)  # start the services again now (idempotent)
        if interrupted:
            raise KeyboardInterrupt
        self.times["restarted"] = time.monotonic()
        self.hooks.after()
        self.manifest = _manifest(self, artifacts)
        return self.manifest.to_dict()

    def start_again(self, exc: BaseException) -> None:
        """The backup failed: start the services again, whatever happened."""
        self.restarts.end()
        if self.entered:
            self.quiesce.__exit__(type(exc), exc, exc.__traceback__)


def stop_levels(plan: Plan) -> list[list[str]]:
    """The services a strict cut stops (``stop: true``), grouped by dependency depth, the
    deepest first: a service's depth is one more than the deepest service it depends on (0
    for one that depends on none; a dependency cycle is cut where it closes). A service is
    thus stopped before everything it depends on and started again after it, and no two
    services of one level depend on each other. Services within a level by name."""
    depth: dict[str, int] = {}

    def visit(name: str, path: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        if name in path or name not in plan.services:
            return -1
        found = max(
            (visit(dep, path | {name}) + 1 for dep in plan.services[name].depends_on), default=0
        )
        depth[name] = max(found, 0)
        return depth[name]

    levels: dict[int, list[str]] = {}
    for name in sorted(plan.services):
        if plan.services[name].stop:
            levels.setdefault(visit(name, frozenset()), []).append(name)
    return [levels[d] for d in sorted(levels, reverse=True)]


def _paths(plan: Plan) -> list[str]:
    """The plan's data directories and configuration entries that exist."""
    paths: list[str] = []
    for p in [*(p.path for p in plan.paths), *plan.config]:
        if p not in paths and _exists(p):
            paths.append(p)
    return paths


def _job(
    repo: Repository,
    plan: Plan,
    paths: list[str],
    tags: list[str] | None,
    sources: list[Source],
    progress: Progress | None,
) -> BackupJob:
    """The backup of ``paths`` (less the plan's excludes) and ``sources``."""
    return BackupJob(
        repo,
        BackupOptions(
            paths=paths,
            excludes=[
                f"{p.path.rstrip('/')}/{e.strip('/')}" for p in plan.paths for e in p.exclude
            ],
            tags=sorted({f"stack:{plan.project}", *(tags or [])}),
            sources=sources,
        ),
        progress=progress or NullProgress(),
    )


def _exists(path: str) -> bool:
    import os

    return os.path.lexists(path)


def _manifest(cut: _Cut, artifacts: list[ArtifactRecord]) -> StackManifest:
    """The manifest of the cut, once everything is read."""
    plan, found, mode, times = cut.plan, cut.project, cut.mode, cut.times
    manifest = StackManifest(
        format=MANIFEST_FORMAT,
        project=plan.project,
        directory=plan.directory,
        preset=plan.preset,
        consistency=mode,
        plan=plan,
        services=_services(plan, found, mode, cut.client),
        versions=_versions(artifacts),
        artifacts={a.name: _artifact_summary(a) for a in artifacts},
        secrets=plan.secrets,
        facts={**plan.facts, **(dify.backup_facts(plan) if plan.preset == "dify" else {})},
        mount_dirs=_mount_dirs(found),
        profiles=sorted({p for svc in found.services.values() for p in svc.profiles}),
        app=_app_versions(plan, found, cut.client),
        images=_images(artifacts),
        timings=Timings(
            stop_s=round(times["stopped"] - times["start"], 3),
            capture_s=round(times["captured"] - times["stopped"], 3),
            start_s=round(times["restarted"] - times["captured"], 3),
        ),
        hooks=cut.hooks.record,
    )
    if mode == "strict":
        stopped = cut.quiesce.record()
        manifest.downtime = Downtime(
            seconds=round(times["restarted"] - times["start"], 3) if stopped else 0.0,
            containers={r["container"]: r.get("downtime_s") for r in stopped},
            services=_service_downtimes(stopped, cut.service_of),
        )
    else:
        starts = [a.started for a in artifacts if a.started]
        manifest.skew_s = round(times["captured"] - times["stopped"], 3)
        manifest.captured_between = [min(starts), max(starts)] if starts else []
    return manifest


def _service_downtimes(
    stopped: list[StopRecord], service_of: dict[str, str]
) -> dict[str, ServiceDowntime]:
    """Per stopped service, from its containers' records: the longest times, killed if any
    was, downtime null if any container was not started again."""
    out: dict[str, ServiceDowntime] = {}
    for record in stopped:
        name = service_of.get(record["container"], record["container"])
        stop_s = record.get("stop_s")
        down_s = record.get("downtime_s")
        seen = out.get(name)
        if seen is None:
            out[name] = ServiceDowntime(
                containers=[record["container"]],
                level=record["level"],
                mode=record["mode"],
                timeout_s=float(record["timeout_s"]),
                stop_s=stop_s,
                killed=bool(record.get("killed")),
                downtime_s=down_s,
            )
            continue
        seen.containers.append(record["container"])
        seen.timeout_s = max(seen.timeout_s, float(record["timeout_s"]))
        seen.stop_s = None if seen.stop_s is None or stop_s is None else max(seen.stop_s, stop_s)
        seen.killed = seen.killed or bool(record.get("killed"))
        seen.downtime_s = (
            None if seen.downtime_s is None or down_s is None else max(seen.downtime_s, down_s)
        )
    return out


def _services(
    plan: Plan, found: Project, mode: str, client: DockerClient
) -> dict[str, ServiceRecord]:
    """Each service of the plan as it ran (as the plan has it when it had no container)."""
    out: dict[str, ServiceRecord] = {}
    for name, svc in plan.services.items():
        live = found.services.get(name)
        image_id = live.image_id if live else None
        out[name] = ServiceRecord(
            role=svc.role,
            image=live.image if live else svc.image,
            image_id=image_id,
            digests=live.digests if live else ([svc.digest] if svc.digest else []),
            containers=live.containers if live else [],
            state=live.state if live else "missing",
            stopped=mode == "strict" and svc.stop,
            depends_on=svc.depends_on,
            created=_image_created(client, image_id),
        )
    return out


def _versions(artifacts: list[ArtifactRecord]) -> dict[str, VersionRecord]:
    """The server and dump tool of each artifact whose source reported its server's version."""
    out: dict[str, VersionRecord] = {}
    for a in artifacts:
        meta = a.metadata or {}
        if meta.get("server_version"):
            out[a.name] = VersionRecord(
                server_version=meta["server_version"], dump_tool=meta.get("dump_tool")
            )
    return out


def _artifact_summary(a: ArtifactRecord) -> ArtifactSummary:
    files = (a.metadata or {}).get("files") or {}
    return ArtifactSummary(
        kind=a.kind,
        complete=a.complete,
        bytes=a.bytes,
        files=a.files,
        started=a.started,
        duration_s=a.duration_s,
        checksums={p: info.get("sha256") for p, info in files.items() if isinstance(info, dict)},
    )


def _images(artifacts: list[ArtifactRecord]) -> dict[str, str] | None:
    """Tag → image id of the images stored with the stack (``--with-images``), if they were."""
    return next(
        (
            (a.metadata or {}).get("facts", {}).get("images")
            for a in artifacts
            if a.kind == "docker-images" and a.complete
        ),
        None,
    )


def _image_created(client: DockerClient, image_id: str | None) -> str | None:
    """When the image was built (its ``Created``), for the restore's version guard."""
    if not image_id:
        return None
    try:
        created = client.images.get(image_id).attrs.get("Created")
    except Exception:  # the image may be gone already; the id is still recorded
        return None
    return str(created) if created else None


def _mount_dirs(found: Project) -> dict[str, MountDir]:
    """Owner and mode of every bind-mounted directory of the project (databases' data
    directories included, whose content is dumped instead of copied), so that a restore on a
    new host creates them as the services expect before starting them."""
    import os
    import stat

    out: dict[str, MountDir] = {}
    for svc in found.services.values():
        for m in svc.mounts:
            if m.type != "bind" or m.source in out:
                continue
            try:
                st = os.stat(m.source)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                out[m.source] = MountDir(
                    uid=st.st_uid, gid=st.st_gid, mode=stat.S_IMODE(st.st_mode)
                )
    return dict(sorted(out.items()))


def _app_versions(plan: Plan, found: Project, client: DockerClient) -> AppVersions:
    """The application's schema version where the preset knows where to read it."""
    if plan.preset != "dify":
        return AppVersions()
    pg = next((s for s in plan.services.values() if s.role == POSTGRES), None)
    live = found.services.get(pg.name) if pg else None
    src = next((s for s in plan.sources if pg and s.service == pg.name), None)
    if live is None or src is None:
        return AppVersions()
    out = postgres_query(
        source_url(src, live.container), "dify", "SELECT version_num FROM alembic_version"
    )
    return AppVersions(alembic_version=(out or "").strip() or None)
