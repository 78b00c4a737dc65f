"""`stackvault copy` (cli layer): copy snapshots from another repository (3-2-1 tiers)."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_json_option
from stackvault.cli.render import human_bytes
from stackvault.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Parser, Subparsers
    from stackvault.engine.copyresult import CopyResult, CopyStats, SnapshotCopy
    from stackvault.store.base import Store


def add_from_password_file(parser: Parser) -> None:
    """``--from-password-file``, shared with ``init --copy-chunker-params-from``."""
    parser.add_argument(
        "--from-password-file",
        metavar="FILE",
        help="Read the source repository's password from this file (default: "
        "$STACKVAULT_FROM_PASSWORD_FILE, $STACKVAULT_FROM_PASSWORD, or a prompt).",
    )


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "copy", copy, reads_only=True)
    p.add_argument(
        "snapshots",
        nargs="*",
        metavar="SNAPSHOT",
        help="Source snapshots to copy: id prefixes or 'latest' (default: all).",
    )
    p.add_argument(
        "--from",
        dest="from_location",
        metavar="LOCATION",
        help="The source repository (default: $STACKVAULT_FROM_REPOSITORY).",
    )
    p.add_argument(
        "--to",
        dest="to_location",
        metavar="LOCATION",
        help="The destination repository (default: --repo / $STACKVAULT_REPOSITORY).",
    )
    add_from_password_file(p)
    p.add_argument("--host", metavar="HOST", help="Only source snapshots of this host.")
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="Only source snapshots with this tag (repeatable: all of them).",
    )
    p.add_argument(
        "--path",
        "--snapshot-path",
        dest="snapshot_path",
        action="append",
        default=[],
        metavar="PATH",
        help="Only source snapshots that include this backed-up path (repeatable: all of "
        "them). 'latest' is the newest snapshot these filters match.",
    )
    add_json_option(p)


def _stats_text(s: CopyStats) -> str:
    text = (
        f"{s.blobs_copied} blobs ({human_bytes(s.bytes_copied)}) transferred, "
        f"{s.blobs_present} blobs ({human_bytes(s.bytes_present)}) already present"
    )
    if s.trees_reused:
        text += f", {s.trees_reused} unchanged directories reused"
    return text


def _line(outcome: SnapshotCopy) -> str:
    src = outcome.source
    if outcome.copy is None:
        held = outcome.existing.short_id if outcome.existing is not None else "?"
        return f"snapshot {src.short_id} skipped: the destination already holds it as {held}"
    return (
        f"snapshot {src.short_id} copied as {outcome.copy.short_id}: {_stats_text(outcome.stats)}"
    )


def copy(
    cli: Cli,
    *,
    snapshots: list[str],
    from_location: str | None,
    to_location: str | None,
    from_password_file: str | None,
    host: str | None,
    tag: list[str],
    snapshot_path: list[str],
) -> None:
    """Copy snapshots from another repository into this one (e.g. to an offsite tier).

    Each selected source snapshot that the destination does not hold yet is copied; a copy
    records the snapshot it came from, so running copy again copies only new snapshots. Only
    data the destination lacks is stored. The repositories may have different passwords and
    keys; one made with `init --copy-chunker-params-from SOURCE` shares the source's blob ids,
    which lets copy skip reading blobs the destination already holds.
    """
    from contextlib import ExitStack

    from stackvault.cli.commands.backup import make_progress
    from stackvault.engine.copy import CopyJob, select_snapshots

    source_store, dest_store = _stores(cli, from_location, to_location)
    with ExitStack() as stack:
        stack.callback(source_store.close)
        stack.callback(dest_store.close)
        # Both "no repository" errors come before any password is asked for.
        source_header = cli.read_header(source_store, "source")
        dest_header = cli.read_header(dest_store, "destination")
        source = stack.enter_context(
            cli.open_repo(
                lock="copy (source)",
                store=source_store,
                header=source_header,
                password=lambda: cli.source_password(from_password_file),
                role="source",
                reads_only=True,  # --no-lock and a read-only source: the source only
            )
        )
        dest = stack.enter_context(
            cli.open_repo(lock="copy", store=dest_store, header=dest_header, role="destination")
        )
        selected = select_snapshots(source, snapshots, host=host, tags=tag, paths=snapshot_path)
        progress = make_progress(cli, "copy")

        def report(outcome: SnapshotCopy) -> None:
            if cli.json:
                return
            if cli.interactive:
                progress.notice(_line(outcome))  # above the bar
            else:
                cli.print(_line(outcome))

        job = CopyJob(source, dest, progress=progress)
        try:
            result = job.run(selected, on_snapshot=report)
        finally:
            progress.close()
    _report(cli, result, source_store, dest_store)


def _stores(cli: Cli, from_location: str | None, to_location: str | None) -> tuple[Store, Store]:
    """The source and destination stores (`UsageError` if they are the same). Only the
    destination is written: append-only mode concerns it, not the source."""
    source_store = cli.store(cli.source_location(from_location), append_only=False)
    dest_store = cli.store(to_location or cli.location())
    if source_store.describe() == dest_store.describe():
        source_store.close()
        dest_store.close()
        raise UsageError(
            f"--from and --to both name {dest_store.describe()}",
            hint="copy between two different repositories",
        )
    return source_store, dest_store


def _report(cli: Cli, result: CopyResult, source_store: Store, dest_store: Store) -> None:
    """The totals of a copy: one line, or the --json document."""
    totals = result.totals()
    if cli.json:
        cli.emit_json(
            {
                "source": source_store.describe(),
                "destination": dest_store.describe(),
                "shared_ids": result.shared_ids,
                "selected": len(result.snapshots),
                "copied": len(result.copied),
                "skipped": len(result.skipped),
                "snapshots": [s.to_json() for s in result.snapshots],
                "totals": totals.to_json(),
            }
        )
        return
    if not result.snapshots:
        cli.print("no source snapshot selected: nothing to copy")
        return
    cli.print(
        f"copied {len(result.copied)} snapshot(s), skipped {len(result.skipped)} already in "
        f"the destination; {_stats_text(totals)}; {human_bytes(totals.bytes_stored)} stored"
    )
