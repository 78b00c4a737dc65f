"""`stackvault drill JOB` (cli layer): a restore drill of a job's snapshot - a stack into an
isolated copy of the stack, database sources into throwaway servers, paths into a directory -
probed, timed and removed again; the drill itself is `stackvault.stack.drill`."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_json_option

DEFAULT_WORKDIR = "/var/lib/stackvault/drills"

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from datetime import datetime

    from docker import DockerClient

    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers
    from stackvault.config.job import EffectiveJob
    from stackvault.records.drill import DrillResult
    from stackvault.repo.repository import Repository
    from stackvault.repo.snapshot import Snapshot
    from stackvault.stack.drill import DrillOptions


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "drill", drill)
    p.add_argument("job", metavar="JOB", help="The job of the configuration file.")
    p.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="The configuration file (default: $STACKVAULT_CONFIG, else "
        "/etc/stackvault/stackvault.yaml).",
    )
    p.add_argument(
        "--snapshot",
        default="latest",
        metavar="latest|random-within=DURATION|ID",
        help="The snapshot to drill: the job's newest, one at random among the "
        "job's snapshots of the last DURATION (random-within=30d), or a snapshot id.",
    )
    p.add_argument(
        "--keep",
        metavar="DURATION",
        help="Keep the drilled stack running this long after the probes (30s, 10min, 1h) "
        "before removing it, to look at it (docker ps --filter label=io.stackvault.drill).",
    )
    p.add_argument(
        "--workdir",
        default=DEFAULT_WORKDIR,
        metavar="DIR",
        help="Where the drill's directory is made; it must lie outside the stack's directory.",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="How long services and HTTP probes are waited for.",
    )
    p.add_argument("--html", metavar="FILE", help="Write the report as a self-contained page.")
    p.add_argument(
        "--trigger",
        choices=("manual", "schedule"),
        default="manual",
        help="Why the drill starts, as its record says (serve passes schedule).",
    )
    p.add_argument(
        "--run-id",
        metavar="HEX",
        help="The id its record gets (32 hex digits; default: a new one); also the value of "
        "the io.stackvault.drill label.",
    )
    add_json_option(p)


def drill(
    cli: Cli,
    *,
    job: str,
    config: str | None,
    snapshot: str,
    keep: str | None,
    workdir: str,
    wait: float,
    html: str | None,
    trigger: str = "manual",
    run_id: str | None = None,
) -> int:
    """Restore a job's snapshot away from production, prove it works, measure every phase
    and the RTO against the job's policy, remove everything it created, and record the
    result as a run record (step drill) in the job's primary repository.

    A stack job is restored into an isolated copy of the stack (a new Compose project
    <project>-drill-<time> with its own directory and volumes, every service in a sandbox
    network namespace with nothing but loopback, no port published, the preset's outbound
    settings emptied), started and probed (databases and Redis against the snapshot's facts,
    their connections, files against their SHA-256, services healthy, the plan's HTTP
    probes and probe commands from inside the sandbox, Dify's tenant keys). A job without a
    stack has its PostgreSQL and MySQL artifacts loaded into throwaway servers of this host
    (one captured in a container: into a container of the same image on this host's
    loopback), compared with the snapshot's facts, and everything else restored
    as files into the drill's directory, each read back against its SHA-256.

    Exit status: 0 the drill passed (every probe that ran passed, none failed, cleanup
    complete); 1 it failed (a phase, a probe or the cleanup; also when the Docker engine
    cannot be reached for a stack job, recorded as a failed drill), or an error before it
    started (unknown job, no snapshot); 130 interrupted (SIGINT/SIGTERM: what the drill
    created is removed, and the drill is recorded as interrupted).
    """
    import os
    import re
    import secrets

    from stackvault.errors import UsageError
    from stackvault.ops.child import PARENT_ENV, watch_parent
    from stackvault.stack.drill import DrillOptions, parse_span

    if run_id is not None and re.fullmatch(r"[0-9a-f]{32}", run_id) is None:
        raise UsageError(f"--run-id takes 32 lowercase hex digits, got {run_id!r}")
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():
        watch_parent(int(parent))  # started by serve: stop cleanly if serve dies
    effective = _job(cli, config, job)
    options = DrillOptions(
        drill_id=run_id or secrets.token_hex(16),
        job=job,
        workdir=workdir,
        rto_target_s=float(effective.rto.value.seconds),
        wait=wait,
        keep_s=parse_span(keep, "--keep") if keep else 0.0,
    )
    result = _drill_and_record(cli, effective, snapshot, options, trigger)
    if html is not None:
        from stackvault.stack.drillhtml import render_html

        with open(html, "w", encoding="utf-8") as f:
            f.write(render_html(result))
    _report(cli, result)
    if result.result == "interrupted":
        return 130
    return 0 if result.passed else 1


def _job(cli: Cli, config: str | None, job: str) -> EffectiveJob:
    """The job as the configuration file gives it (its warnings told)."""
    from stackvault.config import load_config

    loaded = load_config(config)
    for warning in loaded.warnings:
        cli.warn(warning)
    return loaded.job(job)


def _drill_and_record(
    cli: Cli, job: EffectiveJob, spec: str, options: DrillOptions, trigger: str
) -> DrillResult:
    """Pick the snapshot in the job's primary repository, drill it (a stack job's through
    the Docker engine: a drill that cannot reach it is recorded as failed, never skipped),
    and save the drill's run record there (a warning when that fails)."""
    import datetime
    import socket

    from stackvault.errors import SourceError, StackvaultError
    from stackvault.repo.repository import PROGRAM
    from stackvault.sources.docker.engine import connect
    from stackvault.stack.drill import pick_drill_snapshot

    settings = job.repository
    client: DockerClient | None = None
    no_engine = ""
    if job.stack_plan is not None or any("+docker://" in s for s in job.sources):
        try:
            client = connect()
        except SourceError as exc:
            no_engine = exc.message
    try:
        with cli.open_repo(
            store=cli.store(settings.location),
            password=settings.password,
            role=f"{settings.name!r}",
            hint=f"check repositories.{settings.name} in the configuration file",
            lock="drill",
        ) as repo:
            now = datetime.datetime.now(datetime.UTC)
            stack = job.stack_plan is not None
            snap = pick_drill_snapshot(repo.list_snapshots(), job.name, spec, now, stack=stack)
            result = _run(cli, repo, snap, client, options, no_engine, now)
            record = result.to_run_record(
                host=socket.gethostname(),
                program=PROGRAM,
                repository=settings.name,
                location=settings.shown,
                trigger="schedule" if trigger == "schedule" else "manual",
            )
            try:
                repo.save_run(record)
            except StackvaultError as exc:
                cli.warn(f"warning: the drill could not be recorded in {settings.name}: {exc}")
    finally:
        if client is not None:
            client.close()
    return result


def _run(
    cli: Cli,
    repo: Repository,
    snap: Snapshot,
    client: DockerClient | None,
    options: DrillOptions,
    no_engine: str,
    now: datetime,
) -> DrillResult:
    """The drill of ``snap``: of a stack (``client`` given, else ``no_engine`` says why it
    could not run) or of a job without one (``snap`` not a stack snapshot; ``client``, when
    given, runs a container of the image a database was captured in)."""
    from stackvault.cli.commands.backup import make_progress
    from stackvault.records.drill import DrillResult
    from stackvault.stack.drill import run_drill, run_source_drill

    if snap.stack and client is None:
        result = DrillResult.not_run(options.job, snap.id, snap.time, no_engine, now)
        result.drill_id = options.drill_id
        return result
    cli.notice(f"drilling snapshot {snap.short_id} of job {options.job}")
    progress = make_progress(cli, "drill")
    if not snap.stack:
        if no_engine:
            cli.notice(f"no container of the captured image for the drill: {no_engine}")
        return run_source_drill(
            repo, snap, options, client=client, notice=cli.notice, progress=progress
        )
    assert client is not None
    return run_drill(repo, snap, client, options, notice=cli.notice, progress=progress)


def _report(cli: Cli, result: DrillResult) -> None:
    if cli.json:
        cli.emit_json(result.to_json())
        return
    for phase in result.phases:
        mark = "FAIL " if phase.status == "failed" else ""
        cli.print(f"{mark}{phase.name:18} {phase.start_s:8.1f} s  +{phase.seconds:.1f} s")
    for probe in result.probes:
        cli.print(f"{probe.status:8} {probe.name}: {probe.message}")
    if result.blanked:
        cli.print(f"outbound settings emptied: {', '.join(result.blanked)}")
    if not result.cleanup.ok:
        cli.warn(f"error: cleanup: {result.cleanup.error}")
    rto = f"{result.rto_s:.1f} s" if result.rto_s is not None else "not reached"
    target = (
        f" (target {result.rto_target_s:.0f} s: {'met' if result.rto_met else 'MISSED'})"
        if result.rto_target_s is not None and result.rto_s is not None
        else ""
    )
    verdict = "passed" if result.passed else result.result
    line = f"drill {result.drill_id[:8]} of job {result.job}: {verdict}, RTO {rto}{target}"
    if result.passed:
        cli.print(line)
    else:
        cli.warn(f"{line}: {result.summary_error()}")
