"""`stackvault repair index|packs|snapshots` (cli layer): bring a damaged repository back.

The order for a repository `check` found damaged (it prints the commands): `repair packs`
for packs with damaged blobs, `repair index` for missing packs or index files, then — after
backing up the same data again where it still exists, which heals what it can — `repair
snapshots` for what is lost for good. FORMAT.md §12 describes each procedure.
"""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_group, add_json_option

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Parser, Subparsers


def register(subparsers: Subparsers) -> None:
    group = add_group(
        subparsers, "repair", help="Repair a damaged repository (index, packs, snapshots)."
    )
    p = add_command(group, "index", repair_index)
    p.add_argument(
        "--read-all-packs",
        action="store_true",
        help="Read every pack's header, not only those the intact index files do not describe.",
    )
    _dry_run_and_json(p)
    p = add_command(group, "packs", repair_packs)
    p.add_argument(
        "pack_ids", nargs="+", metavar="PACK", help="Pack ids (prefixes), as `check` names them."
    )
    _dry_run_and_json(p)
    p = add_command(group, "snapshots", repair_snapshots)
    p.add_argument(
        "snapshot_ids", nargs="*", metavar="ID", help="Only these snapshots (default: all)."
    )
    p.add_argument(
        "--forget",
        action="store_true",
        help="Remove each damaged snapshot once its repaired copy is saved.",
    )
    _dry_run_and_json(p)


def _dry_run_and_json(p: Parser) -> None:
    p.add_argument("-n", "--dry-run", action="store_true", help="Only report what would change.")
    add_json_option(p)


def _refuse(cli: Cli, what: str, dry_run: bool) -> None:
    if not dry_run:
        cli.refuse_if_append_only(
            f"repair {what}", "replaces index files", "add --dry-run to only see what it would do"
        )


def repair_index(cli: Cli, *, read_all_packs: bool, dry_run: bool) -> None:
    """Rebuild the index from the packs' headers: packs that exist and can be read are
    indexed, blobs of missing or unreadable packs no longer are (a backup of the same data
    stores them again)."""
    from stackvault.repo.repair import rebuild_index

    _refuse(cli, "index", dry_run)
    with cli.open_repo(lock="repair index", exclusive=not dry_run, index=False) as repo:
        report = rebuild_index(repo, read_all=read_all_packs, dry_run=dry_run)
    if cli.json:
        cli.emit_json({"dry_run": dry_run, **report.__dict__})
        return
    verb = "would index" if dry_run else "indexed"
    cli.print(
        f"repair index: {report.packs} pack(s) stored, {report.headers_read} header(s) read; "
        f"{verb} {report.blobs_indexed} blob(s) in {report.packs_indexed} pack(s)"
    )
    if report.damaged_index:
        cli.print(f"replaced {len(report.damaged_index)} damaged index file(s)")
    if report.missing_packs:
        cli.warn(f"{len(report.missing_packs)} pack(s) the index listed are missing")
    if report.blobs_lost:
        cli.warn(
            f"{report.blobs_lost} blob(s) the index listed are in no readable pack: back up the "
            "same data again to store them anew, then run `stackvault repair snapshots`"
        )
    for name, why in sorted(report.unreadable.items()):
        cli.warn(f"{name}: header unreadable ({why}); not indexed, left in place")
    for name in report.index_kept:
        cli.notice(f"{name} is under Object Lock retention: kept, superseded by the new index")


def repair_packs(cli: Cli, *, pack_ids: list[str], dry_run: bool) -> None:
    """Copy the readable blobs of damaged packs into new packs and remove the damaged ones."""
    from stackvault.repo.repair import resolve_pack_ids, salvage_packs

    _refuse(cli, "packs", dry_run)
    with cli.open_repo(lock="repair packs", exclusive=not dry_run) as repo:
        chosen = resolve_pack_ids(repo, pack_ids)
        report = salvage_packs(repo, chosen, dry_run=dry_run, notice=cli.notice)
    if cli.json:
        cli.emit_json({"dry_run": dry_run, **report.__dict__})
        return
    verb = "would save" if dry_run else "saved"
    cli.print(
        f"repair packs: {verb} {report.blobs_saved} blob(s) from {len(report.packs)} pack(s); "
        f"{len(report.blobs_lost)} blob(s) lost"
    )
    for name in report.packs_kept:
        cli.notice(f"{name} is under Object Lock retention: kept, no longer indexed")


def repair_snapshots(cli: Cli, *, snapshot_ids: list[str], forget: bool, dry_run: bool) -> None:
    """Save a repaired copy (tag `repaired`) of each snapshot that references lost data:
    files keep their readable blobs, unreadable directories are empty."""
    from stackvault.repo.repair import repair_snapshots as repair

    if forget and not dry_run:
        cli.refuse_if_append_only(
            "repair snapshots --forget", "deletes snapshots", "leave out --forget"
        )
    with cli.open_repo(lock="repair snapshots", exclusive=forget and not dry_run) as repo:
        snaps = repo.list_snapshots()
        if snapshot_ids:
            snaps = [repo.find_snapshot(ref, snaps) for ref in snapshot_ids]
        done = repair(repo, snaps, forget=forget, dry_run=dry_run)
    if cli.json:
        cli.emit_json({"dry_run": dry_run, "snapshots": [d.__dict__ for d in done]})
        return
    for d in done:
        shown = ", ".join(d.lost[:5]) + (f" and {len(d.lost) - 5} more" if len(d.lost) > 5 else "")
        if dry_run:
            cli.print(
                f"snapshot {d.snapshot[:8]} would be repaired: {len(d.lost)} path(s) lost: {shown}"
            )
        else:
            gone = ", original removed" if d.forgotten else ""
            cli.print(
                f"snapshot {d.snapshot[:8]} repaired as {str(d.new_id)[:8]}{gone}: "
                f"{len(d.lost)} path(s) lost: {shown}"
            )
    if not done:
        cli.print("no snapshot references lost data")
