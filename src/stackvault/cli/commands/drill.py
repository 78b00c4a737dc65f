"""`stackvault drill JOB` (cli layer): a restore drill of a stack job's snapshot into an
isolated copy of the stack, probed, timed and removed again; the drill itself is
`stackvault.stack.drill`."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_json_option

DEFAULT_WORKDIR = "/var/lib/stackvault/drills"

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from docker import DockerClient

    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers
    from stackvault.records.drill import DrillResult


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "drill", drill)
    p.add_argument("job", metavar="JOB", help="The stack job of the configuration file.")
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
    """Restore a stack job's snapshot into an isolated copy of the stack (a new Compose
    project <project>-drill-<time> with its own directory and volumes, every service in a
    sandbox network namespace with nothing but loopback, no port published), start it,
    probe it (databases and Redis against the snapshot's facts, files against their
    SHA-256, services healthy, the plan's HTTP probes from inside the sandbox, Dify's tenant
    keys), measure every phase and the RTO against the job's policy, remove everything it
    created, and record the result as a run record (step drill) in the job's primary
    repository.

    Exit status: 0 the drill passed (every probe that ran passed, none failed, cleanup
    complete); 1 it failed (a phase, a probe or the cleanup; also when the Docker engine
    cannot be reached, recorded as a failed drill), or an error before it started (unknown
    job, no snapshot); 130 interrupted (SIGINT/SIGTERM: the drill's containers, volumes,
    networks and directory are removed, and the drill is recorded as interrupted).
    """
    import os
    import re
    import secrets
    import socket

    from stackvault.cli.commands.backup import make_progress
    from stackvault.config import load_config
    from stackvault.errors import SourceError, StackvaultError, UsageError
    from stackvault.ops.child import PARENT_ENV, watch_parent
    from stackvault.records.drill import DrillResult
    from stackvault.repo.repository import PROGRAM
    from stackvault.sources.docker.engine import connect
    from stackvault.stack.drill import DrillOptions, parse_span, pick_drill_snapshot, run_drill

    if run_id is not None and re.fullmatch(r"[0-9a-f]{32}", run_id) is None:
        raise UsageError(f"--run-id takes 32 lowercase hex digits, got {run_id!r}")
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():
        watch_parent(int(parent))  # started by serve: stop cleanly if serve dies
    loaded = load_config(config)
    for warning in loaded.warnings:
        cli.warn(warning)
    effective = loaded.job(job)
    if effective.stack_plan is None:
        raise UsageError(
            f"job {job} protects no Compose stack (it has no stack_plan); a drill restores a stack",
            hint="drill a job whose configuration names a stack_plan",
        )
    keep_s = parse_span(keep, "--keep") if keep else 0.0
    drill_id = run_id or secrets.token_hex(16)
    settings = effective.repository
    try:
        client: DockerClient | None = connect()
    except SourceError as exc:  # recorded: a drill that could not run is no silent skip
        client, no_engine = None, exc.message
    try:
        with cli.open_repo(
            store=cli.store(settings.location),
            password=settings.password,
            role=f"{settings.name!r}",
            hint=f"check repositories.{settings.name} in the configuration file",
            lock="drill",
        ) as repo:
            import datetime

            now = datetime.datetime.now(datetime.UTC)
            snap = pick_drill_snapshot(repo.list_snapshots(), job, snapshot, now)
            if client is None:
                result = DrillResult.not_run(job, snap.id, snap.time, no_engine, now)
                result.drill_id = drill_id
            else:
                cli.notice(f"drilling snapshot {snap.short_id} of job {job}")
                result = run_drill(
                    repo,
                    snap,
                    client,
                    DrillOptions(
                        drill_id=drill_id,
                        job=job,
                        workdir=workdir,
                        rto_target_s=float(effective.rto.value.seconds),
                        wait=wait,
                        keep_s=keep_s,
                    ),
                    notice=cli.notice,
                    progress=make_progress(cli, "drill"),
                )
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
    if html is not None:
        from stackvault.stack.drillhtml import render_html

        with open(html, "w", encoding="utf-8") as f:
            f.write(render_html(result))
    _report(cli, result)
    if result.result == "interrupted":
        return 130
    return 0 if result.passed else 1


def _report(cli: Cli, result: DrillResult) -> None:
    if cli.json:
        cli.emit_json(result.to_json())
        return
    for phase in result.phases:
        mark = "FAIL " if phase.status == "failed" else ""
        cli.print(f"{mark}{phase.name:18} {phase.start_s:8.1f} s  +{phase.seconds:.1f} s")
    for probe in result.probes:
        cli.print(f"{probe.status:8} {probe.name}: {probe.message}")
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
