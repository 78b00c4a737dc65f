"""`stackvault forget` and `prune` (cli layer): retention and space reclamation."""

from __future__ import annotations

import typer

from stackvault.cli.app import JSON_OPTION, app, cli_of
from stackvault.cli.context import Cli
from stackvault.cli.render import human_bytes
from stackvault.errors import SnapshotNotFound, UsageError
from stackvault.policy.duration import Duration, parse_duration
from stackvault.policy.retention import RetentionPolicy, SnapshotRef, decide
from stackvault.repo.prune import execute_prune, plan_prune
from stackvault.repo.repository import Repository
from stackvault.repo.snapshot import Snapshot


def _prune(cli: Cli, repo: Repository, dry_run: bool) -> dict[str, int]:
    plan = plan_prune(repo)
    doc = {
        "packs_deleted": len(plan.delete_packs) + len(plan.unindexed_packs),
        "packs_repacked": len(plan.repack_packs),
        "bytes_freed": plan.bytes_freed,
        "bytes_repacked": plan.bytes_repacked,
    }
    if not dry_run:
        execute_prune(repo, plan, cli.notice)
    if not cli.json:
        verb = "would free" if dry_run else "freed"
        cli.print(
            f"prune: {doc['packs_deleted']} pack(s) to delete, {doc['packs_repacked']} to "
            f"repack; {verb} {human_bytes(plan.bytes_freed)}"
            if dry_run
            else f"prune: deleted {doc['packs_deleted']} pack(s), repacked "
            f"{doc['packs_repacked']}; {verb} {human_bytes(plan.bytes_freed)}"
        )
    return doc


def _duration(text: str | None) -> Duration | None:
    return parse_duration(text) if text else None


def _resolve(repo: Repository, ref: str, snaps: list[Snapshot]) -> str:
    """A snapshot id from a reference; a damaged (unreadable) snapshot is found by the id in
    its file name, so it can be forgotten."""
    try:
        return repo.find_snapshot(ref, snaps).id
    except SnapshotNotFound:
        names = [n.removeprefix("snapshots/") for n in repo.snapshot_names()]
        matches = [n for n in names if ref and n.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise


@app.command()
def forget(
    ctx: typer.Context,
    snapshot_ids: list[str] = typer.Argument(None, help="Remove exactly these snapshots."),
    keep_last: int = typer.Option(0, "--keep-last", help="Keep the N newest snapshots."),
    keep_hourly: int = typer.Option(0, "--keep-hourly", help="Keep the newest of N hours."),
    keep_daily: int = typer.Option(0, "--keep-daily", help="Keep the newest of N days."),
    keep_weekly: int = typer.Option(0, "--keep-weekly", help="Keep the newest of N weeks."),
    keep_monthly: int = typer.Option(0, "--keep-monthly", help="Keep the newest of N months."),
    keep_yearly: int = typer.Option(0, "--keep-yearly", help="Keep the newest of N years."),
    keep_within: str | None = typer.Option(
        None, "--keep-within", help="Keep all snapshots within DURATION (e.g. 7d, 2w, 1y2m)."
    ),
    keep_within_hourly: str | None = typer.Option(
        None, "--keep-within-hourly", help="Keep the newest snapshot of each hour within D."
    ),
    keep_within_daily: str | None = typer.Option(
        None, "--keep-within-daily", help="Keep the newest snapshot of each day within D."
    ),
    keep_within_weekly: str | None = typer.Option(
        None, "--keep-within-weekly", help="Keep the newest snapshot of each week within D."
    ),
    keep_within_monthly: str | None = typer.Option(
        None, "--keep-within-monthly", help="Keep the newest snapshot of each month within D."
    ),
    keep_within_yearly: str | None = typer.Option(
        None, "--keep-within-yearly", help="Keep the newest snapshot of each year within D."
    ),
    keep_tag: list[str] = typer.Option(
        [], "--keep-tag", help="Keep snapshots with these tags (comma = all of them)."
    ),
    group_by: str = typer.Option(
        "host,paths", "--group-by", help="Apply the policy per group of host,paths,tags."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only show the decisions."),
    prune: bool = typer.Option(False, "--prune", help="Run prune afterwards."),
    json_: bool = JSON_OPTION,
) -> None:
    """Remove snapshots by id or by a retention policy (each decision shown with its reason)."""
    cli = cli_of(ctx, json_)
    policy = RetentionPolicy(
        last=keep_last,
        hourly=keep_hourly,
        daily=keep_daily,
        weekly=keep_weekly,
        monthly=keep_monthly,
        yearly=keep_yearly,
        within=_duration(keep_within),
        within_hourly=_duration(keep_within_hourly),
        within_daily=_duration(keep_within_daily),
        within_weekly=_duration(keep_within_weekly),
        within_monthly=_duration(keep_within_monthly),
        within_yearly=_duration(keep_within_yearly),
        tags=tuple(frozenset(t.split(",")) for t in keep_tag),
    )
    if snapshot_ids and not policy.is_empty():
        raise UsageError("give snapshot ids or --keep-* options, not both")
    groups = tuple(g for g in group_by.split(",") if g)
    exclusive = prune and not dry_run
    with cli.open_repo(lock="forget", exclusive=exclusive, index=prune) as repo:
        snaps = repo.list_snapshots()
        out: list[dict[str, object]] = []
        remove: list[str] = []
        if snapshot_ids:
            for ref in snapshot_ids:
                snap_id = _resolve(repo, ref, snaps)
                remove.append(snap_id)
                out.append({"id": snap_id, "keep": False, "reasons": ["named on the command line"]})
        else:
            refs = [
                SnapshotRef(s.id, s.time, s.hostname, tuple(s.paths), frozenset(s.tags))
                for s in snaps
            ]
            for key, decisions in decide(refs, policy, groups, repo.clock.now()):
                if not cli.json:
                    parts = [
                        f"{field} {','.join(v) if isinstance(v, tuple) else v}"
                        for field, v in zip(groups, key, strict=False)
                    ]
                    cli.print(f"snapshots of {'; '.join(parts) or 'all'}:")
                for d in decisions:
                    if not d.keep:
                        remove.append(d.snapshot.id)
                    out.append({"id": d.snapshot.id, "keep": d.keep, "reasons": list(d.reasons)})
                    if not cli.json:
                        verb = "keep  " if d.keep else "remove"
                        cli.print(
                            f"  {verb} {d.snapshot.id[:8]} {d.snapshot.time:%Y-%m-%d %H:%M:%S}  "
                            f"{'; '.join(d.reasons)}"
                        )
        if not dry_run:
            for snap_id in remove:
                repo.remove_snapshot(snap_id)
        if not cli.json:
            verb = "would remove" if dry_run else "removed"
            cli.print(f"{verb} {len(remove)} snapshot(s)")
        pruned = _prune(cli, repo, dry_run) if prune else None
    if cli.json:
        cli.emit_json({"decisions": out, "removed": [] if dry_run else remove, "prune": pruned})


@app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only show what would be done."),
    json_: bool = JSON_OPTION,
) -> None:
    """Remove data that no snapshot references and repack half-empty packs."""
    cli = cli_of(ctx, json_)
    with cli.open_repo(lock="prune", exclusive=not dry_run) as repo:
        doc = _prune(cli, repo, dry_run)
    if cli.json:
        cli.emit_json(doc)
