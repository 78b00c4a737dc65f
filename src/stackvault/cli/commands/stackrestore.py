"""`stackvault stack restore` and `stackvault stack plan` (cli layer): a whole stack back from
a stack snapshot, and the plan a stack snapshot holds (registered by `stack`)."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_json_option, add_snapshot_filters

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers
    from stackvault.repo.repository import Repository
    from stackvault.repo.snapshot import Snapshot
    from stackvault.stack.restorereport import StackRestore


def register(stack: Subparsers) -> None:
    p = add_command(stack, "restore", stack_restore)
    p.add_argument(
        "snapshot",
        metavar="SNAPSHOT",
        help="A stack snapshot (id prefix or latest: the newest of the project given by "
        "--project or a stack:NAME tag, or of the only project there is).",
    )
    p.add_argument(
        "--project", metavar="NAME", help="Restore as this Compose project (default: its own)."
    )
    p.add_argument(
        "--directory",
        metavar="DIR",
        help="Restore the project directory here (default: where it was).",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="Check (the project, files, volumes, published ports) and print the steps; "
        "change nothing. Exit 1 naming every problem that would refuse the restore.",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="First remove what an earlier stack restore of the project left half-restored "
        "(its labelled containers, volumes and networks, the files its record lists); a "
        "project it did not create, or a restore that completed, is refused.",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="Restore even into images older than those the data was saved with.",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="How long each service may take to become ready.",
    )
    p.add_argument(
        "--report",
        metavar="FILE",
        help="Also write the restore report (steps, timings, validation, RTO; what failed, "
        "the logs to read, how to clean up) there as JSON, whatever the outcome.",
    )
    add_snapshot_filters(p)  # 'latest' is also scoped to one project: pick_stack_snapshot
    add_json_option(p)

    p = add_command(stack, "plan", stack_plan, reads_only=True)
    p.add_argument(
        "snapshot",
        metavar="SNAPSHOT",
        help="A stack snapshot (id prefix or latest: the newest of the project given by "
        "--project or a stack:NAME tag, or of the only project there is).",
    )
    p.add_argument(
        "--project", metavar="NAME", help="'latest': the newest stack snapshot of this project."
    )
    add_snapshot_filters(p)
    add_json_option(p)


def stack_restore(
    cli: Cli,
    *,
    snapshot: str,
    project: str | None,
    directory: str | None,
    dry_run: bool,
    replace: bool,
    force: bool,
    wait: float,
    report: str | None,
    host: str | None,
    tag: list[str],
    snapshot_path: list[str],
) -> int:
    """Restore a whole stack from a stack snapshot, to this host or a new one, under its own
    or a new project name and directory: configuration, database services, databases, volumes
    and data directories, then the other services; validated, with the measured restore time;
    the plan written next to the restored compose files. Never overwrites: the target project
    must not exist, its files and volumes must not be there, its published ports must be free.
    A restore that fails says what failed, which logs to read and how to clean up."""
    from stackvault.cli.commands.backup import make_progress
    from stackvault.errors import RestoreFailed
    from stackvault.repo.selection import SnapshotFilter, pick_stack_snapshot
    from stackvault.sources.docker.engine import connect
    from stackvault.stack.restore import restore_stack
    from stackvault.stack.restorereport import StackRestore

    client = connect()
    try:
        with cli.open_repo(lock="stack restore") as repo:
            chosen = SnapshotFilter.of(host, tag, snapshot_path)
            snap = pick_stack_snapshot(repo, snapshot, chosen, project)
            try:
                done = restore_stack(
                    repo,
                    snap,
                    client,
                    project=project,
                    directory=directory,
                    dry_run=dry_run,
                    force=force,
                    replace=replace,
                    wait=wait,
                    progress=make_progress(cli, "stack restore"),
                    notice=cli.notice,
                )
            except RestoreFailed as exc:
                if isinstance(exc.report, StackRestore):
                    _show(cli, exc.report, snap.short_id, report)
                    raise _pointing(exc, exc.report) from exc
                raise
    finally:
        client.close()
    _show(cli, done, snap.short_id, report)
    return 0 if done.ok else 1


def _show(cli: Cli, done: StackRestore, snapshot: str, report: str | None) -> None:
    """The report: as JSON (also into ``report``), or its lines."""
    if report is not None:
        import json

        with open(report, "w", encoding="utf-8") as f:
            json.dump(done.to_dict(), f, indent=2)
            f.write("\n")
    if cli.json:
        cli.emit_json(done.to_dict())
        return
    for removed in done.replaced:
        cli.print(f"replace: {removed}")
    for step in done.steps:
        took = f" ({step.seconds:.1f} s)" if step.seconds is not None else ""
        cli.print(f"{step.status:8} {step.name}: {step.detail}{took}")
    for v in done.validation:
        cli.print(f"{'ok  ' if v.ok else 'FAIL'}  {v.subject}: {v.message}")
    for p in done.problems:
        cli.print(f"problem: {p.message}" + (f" -> {p.hint}" if p.hint else ""))
    if done.dry_run:
        verdict = (
            f"{len(done.problems)} problem(s): the restore would be refused"
            if done.problems
            else "it would go ahead"
        )
        where = f"project {done.project} in {done.directory}"
        cli.print(f"dry run: {where}: {verdict}; nothing changed")
        return
    if done.error is not None:
        cli.print(
            f"stack restore of project {done.project} FAILED"
            + (f" at step {done.failed_step}" if done.failed_step else "")
            + " (the error is below)"
        )
    else:
        cli.print(
            f"restored project {done.project} in {done.directory} from snapshot {snapshot} in "
            f"{done.rto_s or 0:.1f} s" + ("" if done.ok else "; VALIDATION FAILED")
        )
    for hint in done.logs:
        cli.print(f"logs of service {hint.service} ({hint.why}): {' | '.join(hint.commands)}")
    if done.plan_file:
        cli.print(f"plan: {done.plan_file} (stack backup --config {done.plan_file})")
    if done.record:
        cli.print(f"report: {done.record}")
    for i, line in enumerate(done.cleanup):
        cli.print(("to clean up: " if i == 0 else "         or: ") + line)


def _pointing(exc: Exception, done: StackRestore) -> Exception:
    """``exc`` (a `RestoreFailed`) with a hint that points at the report and ``--replace``."""
    from stackvault.errors import RestoreFailed

    assert isinstance(exc, RestoreFailed)
    more = []
    if exc.hint:
        more.append(exc.hint)
    if done.record:
        more.append(
            f"the report is {done.record}; remove the half-restored project with --replace "
            "(stack restore again) or as it says"
        )
    failed = f"stack restore failed at step {done.failed_step}: " if done.failed_step else ""
    return RestoreFailed(
        failed + exc.message, hint="; ".join(more) or None, exit_code=exc.exit_code, report=done
    )


def stack_plan(
    cli: Cli,
    *,
    snapshot: str,
    project: str | None,
    host: str | None,
    tag: list[str],
    snapshot_path: list[str],
) -> None:
    """Print the plan a stack snapshot holds (as stack backup used it): YAML to review or to
    save as the plan file, or JSON with --json."""
    with cli.open_repo(index=False) as repo:
        snap = _stack_snapshot(repo, snapshot, project, host, tag, snapshot_path)
    from stackvault.records.stack import read_manifest
    from stackvault.stack.plan import render_plan

    m = read_manifest(snap)
    assert m is not None  # _stack_snapshot made sure
    if cli.json:
        cli.emit_json({"snapshot": snap.id, "project": m.project, "plan": m.plan.to_dict()})
        return
    when = f"{snap.time:%Y-%m-%d %H:%M} UTC"
    text = render_plan(m.plan, origin=f"stored in snapshot {snap.short_id} of {when}")
    cli.print(text.rstrip("\n"))


def _stack_snapshot(
    repo: Repository,
    ref: str,
    project: str | None,
    host: str | None,
    tag: list[str],
    paths: list[str],
) -> Snapshot:
    from stackvault.errors import UsageError
    from stackvault.records.stack import read_manifest
    from stackvault.repo.selection import SnapshotFilter, pick_stack_snapshot

    snap = pick_stack_snapshot(repo, ref, SnapshotFilter.of(host, tag, paths), project)
    if read_manifest(snap) is None:
        raise UsageError(
            f"snapshot {snap.short_id} is not a stack snapshot (it has no stack manifest)",
            hint="stack snapshots are tagged stack:PROJECT; list them with "
            "stackvault snapshots --tag stack:PROJECT",
        )
    return snap
