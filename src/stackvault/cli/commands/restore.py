"""`stackvault restore`, `dump`, `export`, `sha256sums` (cli layer): getting data back out."""

from __future__ import annotations

import os
import sys

from stackvault.cli.commands.backup import make_progress
from stackvault.cli.parser import add_command, add_json_option, add_snapshot_filters
from stackvault.cli.render import human_bytes
from stackvault.errors import IntegrityError, PathNotFound, StackvaultError, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Parser, Subparsers
    from stackvault.engine.restore import RestoreResult
    from stackvault.repo.selection import SnapshotFilter
    from stackvault.repo.snapshot import Snapshot

SNAPSHOT_HELP = "Snapshot id prefix or 'latest'."


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "restore", restore, reads_only=True)
    p.add_argument("snapshot", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    _destination_arguments(p)
    _selection_arguments(p)
    p.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="Say what would be restored; touch nothing (no file data is read).",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="Re-read every restored file and compare its SHA-256.",
    )
    add_snapshot_filters(p)
    add_json_option(p)

    p = add_command(subparsers, "dump", dump, reads_only=True)
    p.add_argument("snapshot", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    p.add_argument("path", metavar="PATH", help="Absolute path of a file inside the snapshot.")
    add_snapshot_filters(p)

    p = add_command(subparsers, "export", export_cmd, reads_only=True)
    p.add_argument("snapshot", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="Tar file to write ('-' = stdout).",
    )
    p.add_argument("--path", default="/", metavar="PATH", help="Export only this subtree.")
    add_snapshot_filters(p, path_option=False)

    p = add_command(subparsers, "sha256sums", sha256sums, reads_only=True)
    p.add_argument("snapshot", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    p.add_argument("--path", default="/", metavar="PATH", help="Only files below this path.")
    add_snapshot_filters(p, path_option=False)


def _destination_arguments(p: Parser) -> None:
    """Where a restore goes: a directory, or one artifact's live target, and what it may
    replace there."""
    p.add_argument("-t", "--target", metavar="DIR", help="Directory to restore into.")
    p.add_argument(
        "--artifact",
        metavar="NAME",
        help="Restore one artifact (a captured source) instead of files: into --to URL, or "
        "its files into --target DIR.",
    )
    p.add_argument(
        "--to",
        metavar="URL",
        help="With --artifact: the live target (postgres://..., docker-volume://..., ...).",
    )
    p.add_argument(
        "--no-owner",
        action="store_true",
        help="With --to: do not restore object ownership (databases).",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="Allow restoring into a non-empty target, replacing files; with --to, a safety "
        "snapshot of the target is taken first.",
    )


def _selection_arguments(p: Parser) -> None:
    """Which paths of the snapshot a restore writes: includes, then excludes."""
    p.add_argument(
        "-i",
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="Restore only paths matching a pattern (repeatable).",
    )
    p.add_argument(
        "-e",
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="Leave out paths matching a pattern, even where --include matches (repeatable; "
        "the syntax of backup --exclude).",
    )
    p.add_argument(
        "--iexclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="Like --exclude, ignoring case.",
    )


def restore(
    cli: Cli,
    *,
    snapshot: str,
    target: str | None,
    include: list[str],
    exclude: list[str],
    iexclude: list[str],
    dry_run: bool,
    verify: bool,
    overwrite: bool,
    artifact: str | None,
    to: str | None,
    no_owner: bool,
    host: str | None,
    tag: list[str],
    snapshot_path: list[str],
) -> int | None:
    """Restore a snapshot into a directory, or one artifact into a live target."""
    from stackvault.engine.restore import FileRestoreOptions, RestoreJob
    from stackvault.repo.selection import SnapshotFilter, pick_snapshot

    chosen = SnapshotFilter.of(host, tag, snapshot_path)
    if to is not None:
        if artifact is None:
            raise UsageError("--to needs --artifact NAME (which captured source to restore)")
        if target is not None or include:
            raise UsageError("give either --to URL or --target DIR, not both")
        if exclude or iexclude or dry_run:
            raise UsageError("--exclude, --iexclude and --dry-run apply to --target DIR restores")
        return restore_to(
            cli, snapshot, artifact, to, overwrite=overwrite, no_owner=no_owner, chosen=chosen
        )
    if target is None:
        raise UsageError("give --target DIR (or --artifact NAME --to URL)")
    if no_owner:
        raise UsageError("--no-owner applies to --to URL restores only")
    from stackvault.fs.exclude import ExcludeMatcher

    ExcludeMatcher(include)  # a bad pattern fails before the repository opens
    ExcludeMatcher(exclude, iexclude)
    with cli.open_repo(lock="restore", reads_only=True) as repo:
        snap = pick_snapshot(repo, snapshot, chosen)
        root_tree = None
        if artifact is not None:
            from stackvault.engine.artifacts import RepoArtifactReader, find_artifact

            root_tree = RepoArtifactReader(repo, snap, find_artifact(snap, artifact)).node.subtree
        progress = make_progress(cli, "restore")
        job = RestoreJob(
            repo,
            snap,
            FileRestoreOptions(
                target=target,
                include=include,
                exclude=exclude,
                iexclude=iexclude,
                overwrite=overwrite,
                verify=verify,
                root_tree=root_tree,
            ),
            progress=progress,
        )
        try:
            r = job.dry_run() if dry_run else job.run()
        finally:
            progress.close()
    if dry_run:
        _report_dry_run(cli, snap, target, r)
    else:
        _report(cli, snap, target, verify, r)
    return None


def _report_dry_run(cli: Cli, snap: Snapshot, target: str, r: RestoreResult) -> None:
    if cli.json:
        cli.emit_json(
            {
                "dry_run": True,
                "snapshot": snap.id,
                "target": os.path.abspath(target),
                "files": r.files,
                "dirs": r.dirs,
                "symlinks": r.symlinks,
                "hardlinks": r.hardlinks,
                "specials": r.specials,
                "bytes": r.bytes,
            }
        )
        return
    cli.print(
        f"dry run: would restore {r.files} files, {r.dirs} directories, {r.symlinks} symlinks, "
        f"{r.hardlinks} hard links"
        + (f", {r.specials} fifos and devices" if r.specials else "")
        + f" ({human_bytes(r.bytes)}) from snapshot {snap.short_id} to {target}; nothing was "
        "written"
    )


def _report(cli: Cli, snap: Snapshot, target: str, verify: bool, r: RestoreResult) -> None:
    """A restore's notices, then its summary (lines, or the --json document)."""
    for n in r.notices:
        cli.notice(f"notice: {n}")
    if cli.json:
        cli.emit_json(
            {
                "snapshot": snap.id,
                "target": os.path.abspath(target),
                "files": r.files,
                "dirs": r.dirs,
                "symlinks": r.symlinks,
                "hardlinks": r.hardlinks,
                "specials": r.specials,
                "bytes": r.bytes,
                "verified": r.verified if verify else None,
                "processes": r.processes,
                "writes": None
                if r.writes is None
                else {
                    "chosen": r.writes.chosen,
                    "direct_mb_s": r.writes.direct_mb_s,
                    "page_cache_mb_s": r.writes.page_cache_mb_s,
                },
            }
        )
    else:
        cli.print(
            f"restored {r.files} files, {r.dirs} directories, {r.symlinks} symlinks, "
            f"{r.hardlinks} hard links"
            + (f", {r.specials} fifos and devices" if r.specials else "")
            + f" ({human_bytes(r.bytes)}) from snapshot {snap.short_id} to {target}"
        )
        if verify:
            cli.print(f"verified {r.verified} files: SHA-256 matches the snapshot")


def restore_to(
    cli: Cli,
    snapshot: str,
    artifact: str,
    to: str,
    *,
    overwrite: bool,
    no_owner: bool,
    chosen: SnapshotFilter,
) -> int | None:
    """``restore SNAPSHOT --artifact NAME --to URL``: load, then validate against the facts
    recorded at capture; differences fail the command (exit 1) after the report."""
    from stackvault.engine.artifact_restore import restore_artifact
    from stackvault.errors import SourceError
    from stackvault.repo.selection import pick_snapshot
    from stackvault.sources.registry import open_source

    if overwrite and cli.no_lock:
        raise UsageError(
            "--no-lock cannot be used with --overwrite --to: the safety snapshot of the "
            "target is written into the repository, which must be locked for it",
            hint="leave out --no-lock",
        )
    open_source(to)  # a malformed URL fails before the repository is opened
    # With --overwrite a safety snapshot is written: the lock of a backup. Without, the
    # repository is only read.
    with cli.open_repo(lock="backup" if overwrite else "restore", reads_only=not overwrite) as repo:
        snap = pick_snapshot(repo, snapshot, chosen)
        progress = make_progress(cli, "restore")
        try:
            r = restore_artifact(
                repo,
                snap,
                artifact,
                to,
                overwrite=overwrite,
                no_owner=no_owner,
                progress=progress,
                notice=cli.notice,
            )
        finally:
            progress.close()
    if cli.json:
        cli.emit_json(
            {
                "snapshot": snap.id,
                "artifact": r.artifact,
                "kind": r.kind,
                "target": r.target,
                "replaced": r.replaced,
                "safety_snapshot": r.safety_snapshot,
                "details": r.details,
                "validated": r.validated,
                "differences": r.differences,
                "duration_s": r.duration_s,
            }
        )
    else:
        cli.print(
            f"restored artifact {r.artifact} ({r.kind}) of snapshot {snap.short_id} into "
            f"{r.target} in {r.duration_s:.2f} s"
        )
        if r.safety_snapshot:
            cli.print(f"what it replaced is in safety snapshot {r.safety_snapshot[:8]}")
        if r.validated and not r.differences:
            cli.print("validated: the target matches what was recorded at capture")
        elif not r.validated:
            cli.print("not validated: the artifact recorded no facts to compare")
    if r.differences:
        for line in r.differences[:50]:
            cli.notice(f"  differs: {line}")
        raise SourceError(
            f"the restored {r.target} differs from what was recorded at capture "
            f"({len(r.differences)} difference(s), listed above)",
            hint="check the target; the safety snapshot (if any) holds what was there before",
        )
    return None


def dump(
    cli: Cli,
    *,
    snapshot: str,
    path: str,
    host: str | None,
    tag: list[str],
    snapshot_path: list[str],
) -> None:
    """Write one file of a snapshot to standard output."""
    from stackvault.engine.filedata import find_node, read_file_blobs
    from stackvault.repo.selection import SnapshotFilter, pick_snapshot

    chosen = SnapshotFilter.of(host, tag, snapshot_path)
    with cli.open_repo(lock="dump", reads_only=True) as repo:
        snap = pick_snapshot(repo, snapshot, chosen)
        node = find_node(repo, snap, path)
        if node.type != "file":
            raise PathNotFound(f"{path} in snapshot {snap.short_id} is a {node.type}, not a file")
        out = sys.stdout.buffer
        for data in read_file_blobs(repo, node):
            out.write(data)
        out.flush()


def export_cmd(
    cli: Cli,
    *,
    snapshot: str,
    output: str,
    path: str,
    host: str | None,
    tag: list[str],
    snapshot_path: list[str],
) -> None:
    """Export a snapshot as a plain tar file that any machine can read."""
    from stackvault.engine.export import export_tar
    from stackvault.repo.selection import SnapshotFilter, pick_snapshot

    chosen = SnapshotFilter.of(host, tag, snapshot_path)
    lost: list[tuple[str, IntegrityError]] = []

    def on_error(directory: str, exc: IntegrityError) -> None:
        lost.append((directory, exc))
        cli.warn(f"{directory}/: its listing is lost ({exc}); exported empty")

    with cli.open_repo(lock="export", reads_only=True) as repo:
        snap = pick_snapshot(repo, snapshot, chosen)
        if output == "-":
            members, size = export_tar(repo, snap, sys.stdout.buffer, path, on_error)
            _lost_listings(lost, "exported")
            return
        if os.path.exists(output):
            raise UsageError(f"{output} exists; refusing to overwrite it")
        tmp = f"{output}.partial"
        try:
            with open(tmp, "wb") as f:
                members, size = export_tar(repo, snap, f, path, on_error)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, output)
        except (StackvaultError, OSError, KeyboardInterrupt):
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    cli.notice(f"exported {members} entries ({human_bytes(size)}) to {output}")
    _lost_listings(lost, "exported")


def _lost_listings(lost: list[tuple[str, IntegrityError]], done: str) -> None:
    """Fail (exit 20) at the end if directories could not be listed; the rest was done."""
    if lost:
        raise IntegrityError(
            f"{len(lost)} director(ies) could not be listed because repository data is "
            f"damaged, first: {lost[0][0]}/ ({lost[0][1]}); everything else was {done}",
            hint="run `stackvault check` to see what is affected and how to repair it",
        )


def sha256sums(
    cli: Cli,
    *,
    snapshot: str,
    path: str,
    host: str | None,
    tag: list[str],
    snapshot_path: list[str],
) -> None:
    """Print SHA256SUMS of a snapshot's files, relative to a restore target.

    After `restore --target DIR`, run `cd DIR && sha256sum -c SHA256SUMS` to prove the restore
    with coreutils alone.
    """
    from stackvault.engine.browse import walk
    from stackvault.repo.selection import SnapshotFilter, pick_snapshot

    chosen = SnapshotFilter.of(host, tag, snapshot_path)
    with cli.open_repo(lock="sha256sums", reads_only=True) as repo:
        snap = pick_snapshot(repo, snapshot, chosen)
        out = sys.stdout.buffer
        for abspath, node in walk(repo, snap, path):
            if node.type != "file":
                continue
            name = os.fsencode(abspath.lstrip("/"))
            if b"\n" in name or b"\\" in name:
                # coreutils' escaped form: a leading backslash, then \\ and \n in the name
                escaped = name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")
                out.write(b"\\" + node.sha256.encode() + b"  " + escaped + b"\n")
            else:
                out.write(node.sha256.encode() + b"  " + name + b"\n")
        out.flush()
