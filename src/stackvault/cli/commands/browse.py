"""`stackvault snapshots`, `ls`, `diff`, `stats`, `find` (cli layer): looking at what is stored."""

from __future__ import annotations

import stat as stat_mod

from stackvault.cli.parser import add_command, add_json_option, add_snapshot_filters
from stackvault.cli.render import human_bytes, snapshot_json, snapshot_table
from stackvault.errors import IntegrityError, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers
    from stackvault.repo.snapshot import Snapshot


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "snapshots", snapshots, reads_only=True)
    p.add_argument("--host", metavar="HOST", help="Only snapshots of this host.")
    p.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="Only snapshots with this tag."
    )
    p.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="PATH",
        help="Only snapshots that include this path (repeatable: all of them).",
    )
    p.add_argument(
        "--latest",
        type=int,
        metavar="N",
        help="Only the N newest snapshots of each host and set of paths.",
    )
    add_json_option(p)

    p = add_command(subparsers, "ls", ls, reads_only=True)
    p.add_argument("snapshot", metavar="SNAPSHOT", help="Snapshot id prefix or 'latest'.")
    p.add_argument(
        "path",
        nargs="?",
        default="/",
        metavar="PATH",
        help="Directory or file inside the snapshot.",
    )
    p.add_argument("-l", "--long", action="store_true", help="Show mode, owner, size and time.")
    add_snapshot_filters(p)
    add_json_option(p)

    p = add_command(subparsers, "diff", diff, reads_only=True)
    p.add_argument("snapshot1", metavar="SNAPSHOT1", help="The older snapshot.")
    p.add_argument("snapshot2", metavar="SNAPSHOT2", help="The newer snapshot.")
    add_snapshot_filters(p)
    add_json_option(p)

    p = add_command(subparsers, "stats", stats, reads_only=True)
    add_json_option(p)

    p = add_command(subparsers, "find", find_cmd, reads_only=True)
    p.add_argument(
        "patterns",
        nargs="+",
        metavar="PATTERN",
        help="What to look for, in the syntax of exclude patterns: a name (*.sql, "
        "config.yaml) at any depth, or a path (/srv/app/**/*.log); several: any of them.",
    )
    p.add_argument(
        "-i", "--ignore-case", action="store_true", help="Match the patterns whatever the case."
    )
    p.add_argument(
        "-s",
        "--snapshot",
        action="append",
        default=[],
        metavar="ID",
        help="Search only this snapshot (id prefix or 'latest'; repeatable).",
    )
    p.add_argument("--host", metavar="HOST", help="Search only snapshots of this host.")
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="Search only snapshots with this tag (repeatable: all of them).",
    )
    p.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="PATH",
        help="Search only snapshots that include this backed-up path (repeatable: all).",
    )
    add_json_option(p)


def snapshots(
    cli: Cli, *, host: str | None, tag: list[str], path: list[str], latest: int | None
) -> None:
    """List snapshots, oldest first."""
    from stackvault.repo.selection import SnapshotFilter, newest_per_group

    if latest is not None and latest < 1:
        raise UsageError(f"--latest must be 1 or more, not {latest}")
    chosen = SnapshotFilter.of(host, tag, path)
    damaged: list[str] = []
    with cli.open_repo(index=False) as repo:
        snaps = chosen.apply(repo.list_snapshots(on_error=lambda n, _e: damaged.append(n)))
    if latest is not None:
        snaps = newest_per_group(snaps, latest)
    if cli.json:
        cli.emit_json([snapshot_json(s) for s in snaps])
    else:
        cli.print(snapshot_table(snaps, utc=cli.utc))
    if damaged:
        ids = ", ".join(n.removeprefix("snapshots/")[:8] for n in damaged)
        raise IntegrityError(
            f"{len(damaged)} snapshot file(s) are damaged and were not listed: {ids}",
            hint="run `stackvault check`; `stackvault forget ID` removes a damaged snapshot",
        )


def _mode_string(kind: str, mode: int) -> str:
    bits = {
        "dir": stat_mod.S_IFDIR,
        "symlink": stat_mod.S_IFLNK,
        "fifo": stat_mod.S_IFIFO,
        "chardev": stat_mod.S_IFCHR,
        "blockdev": stat_mod.S_IFBLK,
    }.get(kind, stat_mod.S_IFREG)
    return stat_mod.filemode(bits | mode)


def ls(
    cli: Cli,
    *,
    snapshot: str,
    path: str,
    long: bool,
    host: str | None,
    tag: list[str],
    snapshot_path: list[str],
) -> None:
    """List the files of a snapshot."""
    from datetime import UTC, datetime

    from stackvault.engine.browse import walk
    from stackvault.repo.selection import SnapshotFilter, pick_snapshot

    lost: list[tuple[str, IntegrityError]] = []

    def on_error(directory: str, exc: IntegrityError) -> None:
        lost.append((directory, exc))
        cli.warn(f"{directory}/: its listing is lost ({exc})")

    with cli.open_repo() as repo:
        snap = pick_snapshot(repo, snapshot, SnapshotFilter.of(host, tag, snapshot_path))
        entries = list(walk(repo, snap, path, on_error=on_error))
    if cli.json:
        cli.emit_json(
            [
                {
                    "path": p,
                    "type": n.type,
                    "mode": n.mode,
                    "uid": n.uid,
                    "gid": n.gid,
                    "size": n.size,
                    "mtime_ns": n.mtime_ns,
                    "sha256": n.sha256 or None,
                    "target": n.target,
                    **({"major": n.major, "minor": n.minor} if n.major or n.minor else {}),
                }
                for p, n in entries
            ]
        )
    for p, n in entries if not cli.json else ():
        if long:
            when = cli.time(datetime.fromtimestamp(n.mtime_ns / 1e9, UTC))
            link = f" -> {n.target}" if n.type == "symlink" else ""
            size = f"{n.major}, {n.minor}" if n.type in ("chardev", "blockdev") else n.size
            cli.print(
                f"{_mode_string(n.type, n.mode)} {n.uid:>5} {n.gid:>5} {size:>12} {when} {p}{link}"
            )
        else:
            cli.print(p)
    if lost:
        raise IntegrityError(
            f"{len(lost)} director(ies) could not be listed because repository data is "
            f"damaged, first: {lost[0][0]}/ ({lost[0][1]}); everything else was listed",
            hint="run `stackvault check` to see what is affected and how to repair it",
        )


def diff(
    cli: Cli,
    *,
    snapshot1: str,
    snapshot2: str,
    host: str | None,
    tag: list[str],
    snapshot_path: list[str],
) -> None:
    """Show what changed between two snapshots (+ added, - removed, M modified, U metadata,
    T type)."""
    from stackvault.engine.browse import diff as diff_snapshots
    from stackvault.repo.selection import SnapshotFilter, pick_snapshot

    chosen = SnapshotFilter.of(host, tag, snapshot_path)
    with cli.open_repo() as repo:
        snaps = repo.list_snapshots()
        a = pick_snapshot(repo, snapshot1, chosen, snaps)
        b = pick_snapshot(repo, snapshot2, chosen, snaps)
        changes = list(diff_snapshots(repo, a, b))
    counts = {k: sum(1 for c in changes if c.kind == k) for k in "+-MUT"}
    if cli.json:
        cli.emit_json(
            {
                "from": a.id,
                "to": b.id,
                "changes": [{"kind": c.kind, "path": c.path} for c in changes],
                "added": counts["+"],
                "removed": counts["-"],
                "modified": counts["M"],
                "metadata": counts["U"],
                "type_changed": counts["T"],
            }
        )
        return
    for c in changes:
        cli.print(f"{c.kind}    {c.path}")
    cli.print(
        f"{counts['+']} added, {counts['-']} removed, {counts['M']} modified, "
        f"{counts['U']} metadata changed, {counts['T']} type changed"
    )


def stats(cli: Cli) -> None:
    """Show repository size, deduplication and compression figures."""
    with cli.open_repo(lock="stats", reads_only=True) as repo:
        snaps = repo.list_snapshots()
        restore_size = sum(int(s.summary.get("bytes", 0)) for s in snaps)
        blobs = list(repo.index.items())
        raw = sum(e.raw_length for _b, e in blobs)
        stored_blobs = sum(e.length for _b, e in blobs)
        store_bytes = sum(i.size for i in repo.store.list(""))
        packs = len(repo.index.pack_ids())
    doc = {
        "snapshots": len(snaps),
        "total_restore_size": restore_size,
        "unique_blobs": len(blobs),
        "unique_data_size": raw,
        "stored_blob_size": stored_blobs,
        "repository_size": store_bytes,
        "packs": packs,
        "dedup_ratio": round(restore_size / raw, 3) if raw else None,
        "compression_ratio": round(raw / stored_blobs, 3) if stored_blobs else None,
    }
    if cli.json:
        cli.emit_json(doc)
        return
    cli.print(f"Snapshots:            {len(snaps)}")
    cli.print(f"Total restore size:   {human_bytes(restore_size)}")
    cli.print(f"Unique data:          {human_bytes(raw)} in {len(blobs)} blobs")
    cli.print(f"Stored (compressed):  {human_bytes(stored_blobs)} in {packs} packs")
    cli.print(f"Repository on disk:   {human_bytes(store_bytes)}")
    if doc["dedup_ratio"]:
        cli.print(f"Deduplication ratio:  {doc['dedup_ratio']}x")
    if doc["compression_ratio"]:
        cli.print(f"Compression ratio:    {doc['compression_ratio']}x")


def find_cmd(
    cli: Cli,
    *,
    patterns: list[str],
    ignore_case: bool,
    snapshot: list[str],
    host: str | None,
    tag: list[str],
    path: list[str],
) -> None:
    """Find files and directories by name or path across snapshots.

    A directory that matches is listed, not what lies below it. Prints each snapshot that
    holds a match with its matches (type, size, modification time, path), oldest snapshot
    first; exit 0 whether or not anything matched, 20 if a directory could not be read."""
    from datetime import UTC, datetime

    from stackvault.cli.render import human_bytes
    from stackvault.engine.find import find
    from stackvault.fs.exclude import ExcludeMatcher
    from stackvault.repo.selection import SnapshotFilter, pick_snapshot

    matcher = ExcludeMatcher([] if ignore_case else patterns, patterns if ignore_case else [])
    chosen = SnapshotFilter.of(host, tag, path)
    lost: list[str] = []

    def on_error(snap: Snapshot, directory: str, exc: IntegrityError) -> None:
        lost.append(f"{snap.short_id}:{directory}/")
        cli.warn(f"snapshot {snap.short_id}: {directory}/: its listing is lost ({exc})")

    found = []
    with cli.open_repo() as repo:
        snaps = repo.list_snapshots()
        if snapshot:
            ids = {pick_snapshot(repo, ref, chosen, snaps).id for ref in snapshot}
            searched = [s for s in snaps if s.id in ids]
        else:
            searched = chosen.apply(snaps)
        found = list(find(repo, searched, matcher, on_error))
    if cli.json:
        cli.emit_json(
            [
                {
                    "snapshot": f.snapshot.id,
                    "path": f.path,
                    "type": f.node.type,
                    "size": f.node.size,
                    "mtime_ns": f.node.mtime_ns,
                }
                for f in found
            ]
        )
    else:
        current = None
        for f in found:
            if f.snapshot is not current:
                current = f.snapshot
                cli.print(
                    f"snapshot {current.short_id} of {cli.time(current.time)} "
                    f"({current.hostname}, {' '.join(current.paths)}):"
                )
            when = cli.time(datetime.fromtimestamp(f.node.mtime_ns / 1e9, UTC))
            size = human_bytes(f.node.size) if f.node.type == "file" else "-"
            cli.print(f"  {f.node.type:8} {size:>12}  {when}  {f.path}")
        holding = len({f.snapshot.id for f in found})
        cli.print(
            f"{len(found)} match(es) in {holding} of {len(searched)} snapshot(s)"
            if found
            else f"no match in {len(searched)} snapshot(s)"
        )
    if lost:
        raise IntegrityError(
            f"{len(lost)} director(ies) could not be searched because repository data is "
            f"damaged, first: {lost[0]}; everything else was searched",
            hint="run `stackvault check` to see what is affected and how to repair it",
        )
