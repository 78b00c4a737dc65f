"""`stackvault forget` and `prune` (cli layer): retention and space reclamation."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_json_option
from stackvault.cli.render import human_bytes
from stackvault.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta
    from typing import Any

    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers
    from stackvault.cli.prunesummary import PruneSummary
    from stackvault.policy.duration import Duration
    from stackvault.policy.forget import ForgetPlan
    from stackvault.policy.retention import RetentionPolicy
    from stackvault.repo.prune import PrunePlan
    from stackvault.repo.repository import Repository
    from stackvault.repo.selection import SnapshotFilter

# (option, help) of the --keep-N rules and of the --keep-within-* rules
_KEEP_COUNTS = [
    ("--keep-last", "Keep the N newest snapshots."),
    ("--keep-hourly", "Keep the newest of N hours."),
    ("--keep-daily", "Keep the newest of N days."),
    ("--keep-weekly", "Keep the newest of N weeks."),
    ("--keep-monthly", "Keep the newest of N months."),
    ("--keep-yearly", "Keep the newest of N years."),
]
_KEEP_WITHIN = [
    ("--keep-within", "Keep all snapshots within DURATION (e.g. 7d, 2w, 1y2m)."),
    ("--keep-within-hourly", "Keep the newest snapshot of each hour within D."),
    ("--keep-within-daily", "Keep the newest snapshot of each day within D."),
    ("--keep-within-weekly", "Keep the newest snapshot of each week within D."),
    ("--keep-within-monthly", "Keep the newest snapshot of each month within D."),
    ("--keep-within-yearly", "Keep the newest snapshot of each year within D."),
]


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "forget", forget)
    p.add_argument("snapshot_ids", nargs="*", metavar="ID", help="Remove exactly these snapshots.")
    for option, help_ in _KEEP_COUNTS:
        p.add_argument(option, type=int, default=0, metavar="N", help=help_)
    for option, help_ in _KEEP_WITHIN:
        p.add_argument(option, metavar="DURATION", help=help_)
    p.add_argument(
        "--keep-tag",
        action="append",
        default=[],
        metavar="TAGS",
        help="Keep snapshots with these tags (comma = all of them).",
    )
    p.add_argument(
        "--group-by",
        default="host,paths",
        metavar="FIELDS",
        help="Apply the policy to each group of snapshots that share these fields, "
        "comma-separated: host, paths, tags ('' = all snapshots in one group). A stack "
        "snapshot's paths are its stack (its stack:NAME tag), so a plan edit does not start "
        "a new group.",
    )
    p.add_argument(
        "--host", metavar="HOST", help="Apply the policy only to snapshots of this host."
    )
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="Apply the policy only to snapshots with this tag (repeatable: all of them).",
    )
    p.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="PATH",
        help="Apply the policy only to snapshots that include this path (repeatable: all).",
    )
    p.add_argument("-n", "--dry-run", action="store_true", help="Only show the decisions.")
    p.add_argument("--prune", action="store_true", help="Run prune afterwards.")
    _add_safety_margin(p)
    add_json_option(p)

    p = add_command(subparsers, "prune", prune_cmd)
    p.add_argument("-n", "--dry-run", action="store_true", help="Only show what would be done.")
    _add_safety_margin(p)
    add_json_option(p)

    from stackvault.cli.commands import tag

    tag.register(subparsers)  # it removes snapshots too (each changed one, saved anew)


def _add_safety_margin(p: Any) -> None:
    p.add_argument(
        "--safety-margin",
        default="1h",
        metavar="DURATION",
        help="Never delete unused packs younger than this, by the store's clock, so a backup "
        "still writing loses nothing (e.g. 1h, 2d; 0 turns it off; default 1h).",
    )


def _margin(text: str) -> timedelta:
    """``--safety-margin``: hours and days (``0`` for none)."""
    from datetime import timedelta

    from stackvault.policy.duration import parse_duration

    if text.strip() == "0":
        return timedelta(0)
    d = parse_duration(text)
    if d.years or d.months:
        raise UsageError(f"--safety-margin takes hours, days or weeks (e.g. 1h, 2d), got {text!r}")
    return timedelta(days=d.days, hours=d.hours)


def _prune(cli: Cli, repo: Repository, dry_run: bool, margin: timedelta) -> PruneSummary:
    from stackvault.cli.prunesummary import PruneSummary
    from stackvault.repo.prune import execute_prune, plan_prune

    plan = plan_prune(repo, now=repo.lock_time, safety_margin=margin)
    if not dry_run:
        execute_prune(repo, plan, cli.notice)
    runs = repo.expire_runs(dry_run=dry_run, command="prune")  # FORMAT.md §14
    release = plan.next_release
    doc = PruneSummary.of(plan, margin, len(runs.removed))
    if runs.removed and not cli.json:
        verb = "would delete" if dry_run else "deleted"
        cli.print(f"prune: {verb} {len(runs.removed)} expired run record(s)")
    if not cli.json and plan.locked and release is not None:
        first = cli.time(release, seconds=False)
        last = cli.time(max(plan.locked.values()), seconds=False)
        cli.print(
            f"prune: {len(plan.locked)} unused object(s) ({human_bytes(plan.bytes_locked)} of "
            f"packs) are under Object Lock retention: removable from {first} "
            f"(all by {last}) by a later prune"
        )
    _report_safety(cli, plan, dry_run, margin)
    if not cli.json and plan.extend and plan.extend_until is not None:
        verb = "would extend" if dry_run else "extended"
        cli.print(
            f"prune: {verb} the retention of {len(plan.extend)} object(s) the kept snapshots "
            f"need to {cli.time(plan.extend_until, seconds=False)}"
        )
    if not cli.json:
        verb = "would free" if dry_run else "freed"
        cli.print(
            f"prune: {doc.packs_deleted} pack(s) to delete, {doc.packs_repacked} to "
            f"repack; {verb} {human_bytes(plan.bytes_freed)}"
            if dry_run
            else f"prune: deleted {doc.packs_deleted} pack(s), repacked "
            f"{doc.packs_repacked}; {verb} {human_bytes(plan.bytes_freed)}"
        )
    return doc


def _report_safety(cli: Cli, plan: PrunePlan, dry_run: bool, margin: timedelta) -> None:
    """The lines about what prune kept or found beyond the snapshots' needs (warnings on
    stderr also with --json and --quiet)."""
    if plan.young_packs:
        cli.print(
            f"prune: kept {len(plan.young_packs)} unused pack(s) "
            f"({human_bytes(plan.bytes_young)}) younger than the safety margin "
            f"({int(margin.total_seconds())} s): a later prune removes them"
        )
    if plan.unindexed_packs:
        verb = "would delete" if dry_run else "deleted"
        cli.print(
            f"prune: {verb} {len(plan.unindexed_packs)} pack(s) the index did not list "
            f"({human_bytes(plan.bytes_unindexed)}; their headers show no blob any snapshot uses)"
        )
    if plan.reindexed:
        verb = "would index" if dry_run else "indexed"
        cli.print(
            f"prune: {verb} {len(plan.reindexed)} pack(s) again that the index did not list "
            "but snapshots use"
        )
    for name, why in sorted(plan.unreadable_packs.items()):
        cli.warn(
            f"prune: kept {name}: the index does not list it and its header cannot be read "
            f"({why}); run `stackvault repair packs` to salvage its blobs"
        )


def _duration(text: str | None) -> Duration | None:
    from stackvault.policy.duration import parse_duration

    return parse_duration(text) if text else None


def _policy(
    keep_counts: tuple[int, ...], keep_within: tuple[str | None, ...], keep_tag: list[str]
) -> RetentionPolicy:
    """The retention policy of the --keep-* options (counts and durations in option order)."""
    from stackvault.policy.retention import RetentionPolicy

    last, hourly, daily, weekly, monthly, yearly = keep_counts
    within, w_hourly, w_daily, w_weekly, w_monthly, w_yearly = map(_duration, keep_within)
    return RetentionPolicy(
        last=last,
        hourly=hourly,
        daily=daily,
        weekly=weekly,
        monthly=monthly,
        yearly=yearly,
        within=within,
        within_hourly=w_hourly,
        within_daily=w_daily,
        within_weekly=w_weekly,
        within_monthly=w_monthly,
        within_yearly=w_yearly,
        tags=tuple(frozenset(t.split(",")) for t in keep_tag),
    )


def forget(
    cli: Cli,
    *,
    snapshot_ids: list[str],
    keep_last: int,
    keep_hourly: int,
    keep_daily: int,
    keep_weekly: int,
    keep_monthly: int,
    keep_yearly: int,
    keep_within: str | None,
    keep_within_hourly: str | None,
    keep_within_daily: str | None,
    keep_within_weekly: str | None,
    keep_within_monthly: str | None,
    keep_within_yearly: str | None,
    keep_tag: list[str],
    group_by: str,
    host: str | None,
    tag: list[str],
    path: list[str],
    dry_run: bool,
    prune: bool,
    safety_margin: str,
) -> None:
    """Remove snapshots by id or by a retention policy (each decision shown with its reason).

    The policy applies to each group of snapshots separately (--group-by), among the
    snapshots the --host, --tag and --path filters select (default: all); the others are
    neither kept nor removed, and not shown."""
    margin = _margin(safety_margin)
    from stackvault.policy.forget import plan_named, plan_retention
    from stackvault.repo.forget import ForgetResult, forget_snapshots, resolve_snapshot_id
    from stackvault.repo.selection import SnapshotFilter

    chosen = SnapshotFilter.of(host, tag, path)
    if not dry_run:
        _refuse_if_append_only(cli, prune)
    policy = _policy(
        (keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly),
        (
            keep_within,
            keep_within_hourly,
            keep_within_daily,
            keep_within_weekly,
            keep_within_monthly,
            keep_within_yearly,
        ),
        keep_tag,
    )
    _one_way_to_choose(snapshot_ids, policy, chosen)
    groups = tuple(g for g in group_by.split(",") if g)
    exclusive = prune and not dry_run
    with cli.open_repo(lock="forget", exclusive=exclusive, index=prune) as repo:
        snaps = repo.list_snapshots()
        if snapshot_ids:
            plan = plan_named([resolve_snapshot_id(repo, ref, snaps) for ref in snapshot_ids])
        else:
            plan = plan_retention(chosen.apply(snaps), policy, groups, repo.clock.now())
            _print_groups(cli, plan, groups)
        result = ForgetResult() if dry_run else forget_snapshots(repo, plan.remove, cli.notice)
        removed = plan.remove if dry_run else result.removed
        if not cli.json:
            cli.print(removed_line(dry_run, len(removed), result.locked, cli.time))
        pruned = _prune(cli, repo, dry_run, margin) if prune else None
    if cli.json:
        cli.emit_json(
            {
                "decisions": [
                    {"id": d.id, "keep": d.keep, "reasons": list(d.reasons)} for d in plan.decisions
                ],
                "removed": result.removed,
                "locked": result.locked,
                "prune": pruned.to_json() if pruned is not None else None,
            }
        )


def _refuse_if_append_only(cli: Cli, prune: bool) -> None:
    """Stop a forget (with --prune) that would delete, on an append-only repository."""
    cli.refuse_if_append_only(
        "forget",
        "deletes snapshots" + (" and unreferenced data" if prune else ""),
        "add --dry-run to only see the decisions",
    )


def _one_way_to_choose(
    snapshot_ids: list[str], policy: RetentionPolicy, chosen: SnapshotFilter
) -> None:
    """`UsageError` unless the snapshots are named by ids or by a policy (which the filters
    may narrow), not both."""
    if snapshot_ids and not policy.is_empty():
        raise UsageError("give snapshot ids or --keep-* options, not both")
    if snapshot_ids and chosen.narrows:
        raise UsageError(
            "--host, --tag and --path select the snapshots of a --keep-* policy; snapshot "
            "ids name snapshots exactly, give one or the other"
        )


def removed_line(
    dry_run: bool, removed: int, locked: dict[str, str], time: Callable[[str], str]
) -> str:
    """``removed 2 snapshot(s)``, and which stay under Object Lock retention until when
    (``time``: how the command line writes a moment)."""
    line = f"{'would remove' if dry_run else 'removed'} {removed} snapshot(s)"
    if locked:
        stay = ", ".join(f"{snap_id[:8]} until {time(until)}" for snap_id, until in locked.items())
        line += f"; {len(locked)} stay under Object Lock retention ({stay})"
    return line


def _print_groups(cli: Cli, plan: ForgetPlan, fields: tuple[str, ...]) -> None:
    """Each group's heading, then its decisions with their reasons."""
    if cli.json:
        return
    for group in plan.groups:
        parts = [_group_part(field, v) for field, v in zip(fields, group.key, strict=False)]
        cli.print(f"snapshots of {'; '.join(parts) or 'all'}:")
        for d in group.decisions:
            verb = "keep  " if d.keep else "remove"
            cli.print(
                f"  {verb} {d.snapshot.id[:8]} {cli.time(d.snapshot.time)}  {'; '.join(d.reasons)}"
            )


def _group_part(field: str, value: str | tuple[str, ...]) -> str:
    """``host web1``, ``paths /srv/app,/etc``, ``stack dify`` (the paths of a stack snapshot)."""
    from stackvault.policy.retention import STACK_TAG

    if field == "paths" and len(value) == 1 and value[0].startswith(STACK_TAG):
        return f"stack {value[0].removeprefix(STACK_TAG)}"
    return f"{field} {','.join(value) if isinstance(value, tuple) else value}"


def prune_cmd(cli: Cli, *, dry_run: bool, safety_margin: str) -> None:
    """Remove data that no snapshot references and repack half-empty packs."""
    margin = _margin(safety_margin)
    if not dry_run:
        cli.refuse_if_append_only(
            "prune", "deletes packs and index files", "add --dry-run to only see what it would do"
        )
    with cli.open_repo(lock="prune", exclusive=not dry_run) as repo:
        doc = _prune(cli, repo, dry_run, margin)
    if cli.json:
        cli.emit_json(doc.to_json())
