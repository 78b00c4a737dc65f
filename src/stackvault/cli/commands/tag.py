"""`stackvault tag` (cli layer): change the tags of snapshots. Registered by `forget`'s
module (it removes snapshots too: each changed one is saved anew and the old one removed)."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_json_option
from stackvault.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "tag", tag_cmd)
    p.add_argument(
        "snapshot_ids",
        nargs="*",
        metavar="ID",
        help="The snapshots to change (id prefixes or 'latest'; default: every snapshot the "
        "filters select).",
    )
    p.add_argument(
        "--add", action="append", default=[], metavar="TAG", help="Add this tag (repeatable)."
    )
    p.add_argument(
        "--remove",
        action="append",
        default=[],
        metavar="TAG",
        help="Remove this tag (repeatable).",
    )
    p.add_argument(
        "--set",
        dest="set_tags",
        action="append",
        metavar="TAG",
        help="Replace all tags with these (repeatable; --set '' removes every tag).",
    )
    p.add_argument("--host", metavar="HOST", help="Only snapshots of this host.")
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="Only snapshots with this tag (repeatable: all of them).",
    )
    p.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="PATH",
        help="Only snapshots that include this path (repeatable: all of them).",
    )
    p.add_argument("-n", "--dry-run", action="store_true", help="Only show what would change.")
    add_json_option(p)


def tag_cmd(
    cli: Cli,
    *,
    snapshot_ids: list[str],
    add: list[str],
    remove: list[str],
    set_tags: list[str] | None,
    host: str | None,
    tag: list[str],
    path: list[str],
    dry_run: bool,
) -> None:
    """Add, remove or set the tags of snapshots.

    A snapshot is immutable: each changed one is saved anew (with its new id; a copy of it
    elsewhere is still recognised as the same backup) and the old one removed. A stack
    snapshot keeps its stack:NAME tag unless it is named in --remove or --set leaves it out."""
    from stackvault.repo.selection import SnapshotFilter, pick_snapshot

    if set_tags is not None and (add or remove):
        raise UsageError("give --set, or --add/--remove, not both")
    if set_tags is None and not add and not remove:
        raise UsageError("nothing to change: give --add TAG, --remove TAG or --set TAG")
    new_set = None if set_tags is None else sorted({t for t in set_tags if t})
    bad = [t for t in [*add, *(new_set or [])] if not t or "," in t or t != t.strip()]
    if bad:
        raise UsageError(f"{bad[0]!r} is not a tag (no commas, no surrounding spaces)")
    chosen = SnapshotFilter.of(host, tag, path)
    if not dry_run:
        cli.refuse_if_append_only("tag", "removes each snapshot it saves anew")
    changed: list[tuple[str, str | None, list[str], list[str]]] = []  # old, new, from, to
    with cli.open_repo(lock="tag", index=False) as repo:
        snaps = repo.list_snapshots()
        if snapshot_ids:
            ids = {pick_snapshot(repo, ref, chosen, snaps).id for ref in snapshot_ids}
            targets = [s for s in snaps if s.id in ids]
        else:
            targets = chosen.apply(snaps)
        for snap in targets:
            tags = set(snap.tags) if new_set is None else set(new_set)
            tags = (tags | set(add)) - set(remove)
            if sorted(tags) == sorted(snap.tags):
                continue
            until = repo.store.retention(f"snapshots/{snap.id}")
            if until is not None and not dry_run:
                raise UsageError(
                    f"snapshot {snap.short_id} is under Object Lock retention until "
                    f"{cli.time(until, seconds=False)}: it cannot be replaced, so its tags "
                    "cannot change"
                )
            old_id, old_tags = snap.id, list(snap.tags)
            if not dry_run:
                snap.original = snap.origin
                snap.tags = sorted(tags)
                snap.id = ""
                repo.save_snapshot(snap)
                repo.remove_snapshot(old_id)
            changed.append((old_id, None if dry_run else snap.id, old_tags, sorted(tags)))
    if cli.json:
        cli.emit_json(
            {
                "dry_run": dry_run,
                "changed": [
                    {"old": old, "new": new, "from": before, "to": after}
                    for old, new, before, after in changed
                ],
            }
        )
        return
    for old, new, before, after in changed:
        arrow = f" -> {new[:8]}" if new else ""
        cli.print(
            f"snapshot {old[:8]}{arrow}: tags {','.join(before) or '-'} -> {','.join(after) or '-'}"
        )
    verb = "would change" if dry_run else "changed"
    cli.print(f"{verb} the tags of {len(changed)} of {len(targets)} snapshot(s)")
