"""`stackvault backup` (cli layer): back up paths or a command's output."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_json_option, size_arg
from stackvault.errors import EXIT_INCOMPLETE, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Parser, Subparsers
    from stackvault.engine.progress import Progress
    from stackvault.fs.walk import WalkRules
    from stackvault.repo.snapshot import Snapshot


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "backup", backup)
    _what_arguments(p)
    _exclude_arguments(p)
    _snapshot_arguments(p)
    add_json_option(p)


def _what_arguments(p: Parser) -> None:
    """What to back up: paths (given or listed in files), a command's output, sources."""
    p.add_argument("paths", nargs="*", metavar="PATH", help="Files and directories to back up.")
    p.add_argument(
        "--files-from",
        action="append",
        default=[],
        metavar="FILE",
        help="Also back up the paths listed in FILE, one per line ('#' comments and blank "
        "lines skipped; '-' reads standard input).",
    )
    p.add_argument(
        "--stdin-from-command",
        metavar="CMD",
        help="Run CMD and back up its standard output as one file; a failing CMD saves nothing.",
    )
    p.add_argument(
        "--stdin-filename",
        default="stdin",
        metavar="NAME",
        help="File name for --stdin-from-command output.",
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="URL",
        help="Capture an application source as an artifact (repeatable): postgres://, "
        "redis://, sqlite:///, docker-volume://, docker-container://, s3://, and "
        "the +docker forms; see README, Sources.",
    )


def _exclude_arguments(p: Parser) -> None:
    """What to leave out of the paths: patterns, marked directories, large files, other
    filesystems."""
    p.add_argument(
        "-e",
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="Exclude paths matching PATTERN (repeatable; syntax above).",
    )
    p.add_argument(
        "--iexclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="Like --exclude, ignoring case.",
    )
    p.add_argument(
        "--exclude-file",
        action="append",
        default=[],
        metavar="FILE",
        help="Read exclude patterns from a file (one per line, # comments).",
    )
    p.add_argument(
        "--iexclude-file",
        action="append",
        default=[],
        metavar="FILE",
        help="Like --exclude-file, ignoring case.",
    )
    p.add_argument(
        "--exclude-caches",
        action="store_true",
        help="Leave out directories that hold a CACHEDIR.TAG with its signature.",
    )
    p.add_argument(
        "--exclude-if-present",
        action="append",
        default=[],
        metavar="NAME[:CONTENT]",
        help="Leave out directories that hold a file NAME (starting with CONTENT, if given); "
        "repeatable.",
    )
    p.add_argument(
        "--exclude-larger-than",
        type=size_arg,
        metavar="SIZE",
        help="Leave out files larger than SIZE (500M, 2G, 4096; binary units).",
    )
    p.add_argument(
        "-x", "--one-file-system", action="store_true", help="Do not cross filesystem boundaries."
    )


def _snapshot_arguments(p: Parser) -> None:
    """The snapshot made: its tags and host, the parent it is compared with, and whether it
    is made at all (--dry-run)."""
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="Add a tag to the snapshot (repeatable).",
    )
    p.add_argument("--host", metavar="HOST", help="Record this host name.")
    p.add_argument(
        "--parent",
        metavar="SNAPSHOT",
        help="Compare against this snapshot instead of the latest.",
    )
    p.add_argument("--force", action="store_true", help="Re-read every file.")
    p.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="Walk the paths as a backup would and say what it would store; write nothing "
        "(the repository is not opened).",
    )


def make_progress(cli: Cli, label: str) -> Progress:
    from stackvault.cli.progress import BarProgress, LineProgress

    if cli.interactive:
        return BarProgress(label)
    return LineProgress(cli.notice, cli.warn, label=label, interval=cli.progress_interval)


def _check_what(paths: list[str], stdin_from_command: str | None, source: list[str]) -> None:
    """`UsageError` unless there is something to back up, from paths or a command, not both."""
    if stdin_from_command and paths:
        raise UsageError("give either paths or --stdin-from-command, not both")
    if not stdin_from_command and not paths and not source:
        raise UsageError("nothing to back up: give paths, --source URL or --stdin-from-command")


def _patterns(exclude: list[str], exclude_files: list[str]) -> list[str]:
    """The --exclude patterns, then those of each --exclude-file in order (the same for the
    --iexclude ones)."""
    from stackvault.fs.exclude import load_exclude_file

    patterns = list(exclude)
    for f in exclude_files:
        patterns.extend(load_exclude_file(f))
    return patterns


def _files_from(files: list[str]) -> list[str]:
    """The paths listed in each --files-from file (``-``: standard input), in order."""
    import sys

    paths: list[str] = []
    for name in files:
        try:
            if name == "-":
                text = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
            else:
                with open(name, "rb") as f:
                    text = f.read().decode("utf-8", "surrogateescape")
        except FileNotFoundError as exc:
            raise UsageError(f"--files-from file {name} does not exist") from exc
        except OSError as exc:
            raise UsageError(f"cannot read --files-from file {name}: {exc.strerror}") from exc
        listed = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not listed:
            raise UsageError(f"--files-from file {name} lists no path")
        paths.extend(listed)
    return paths


def _dry_run(
    cli: Cli,
    paths: list[str],
    patterns: list[str],
    ipatterns: list[str],
    rules: WalkRules,
    one_file_system: bool,
) -> int | None:
    """``backup --dry-run``: the walk of a backup, counted; nothing written."""
    from stackvault.cli.render import human_bytes
    from stackvault.engine.backup import BackupOptions
    from stackvault.engine.dryrun import dry_run
    from stackvault.fs.walk import Problem

    def problem(p: Problem) -> None:
        cli.warn(f"{'error' if p.incomplete else 'notice'}: {p.path}: {p.message}")

    opts = BackupOptions(
        paths=paths,
        excludes=patterns,
        iexcludes=ipatterns,
        rules=rules,
        one_file_system=one_file_system,
    )
    r = dry_run(opts, problem)
    if cli.json:
        cli.emit_json(r.to_json())
    else:
        cli.print(
            f"dry run: would back up {r.files} files, {r.dirs} directories, {r.symlinks} "
            f"symlinks"
            + (f", {r.others} fifos and devices" if r.others else "")
            + f" ({human_bytes(r.bytes)}); nothing was written"
        )
    return EXIT_INCOMPLETE if any(p.incomplete for p in r.problems) else None


def backup(
    cli: Cli,
    *,
    paths: list[str],
    exclude: list[str],
    exclude_file: list[str],
    iexclude: list[str],
    iexclude_file: list[str],
    exclude_caches: bool,
    exclude_if_present: list[str],
    exclude_larger_than: int | None,
    files_from: list[str],
    dry_run: bool,
    one_file_system: bool,
    tag: list[str],
    host: str | None,
    parent: str | None,
    force: bool,
    stdin_from_command: str | None,
    stdin_filename: str,
    source: list[str],
) -> int | None:
    """Back up files and directories, a command's output, or application sources into a new
    snapshot.

    Exclude patterns (gitignore style, matched against absolute paths): '*' and '?' never
    match '/', '[a-z]' and '[!a-z]' are classes, '**' matches any number of directories;
    a pattern without '/' (*.log, node_modules) matches a name at any depth, one starting
    with '/' the path from the root, one with '/' elsewhere (.git/objects) at any depth; a
    trailing '/' (cache/) matches directories only; excluding a directory excludes all in
    it. '!PATTERN' re-includes what an earlier pattern excluded (the last match decides),
    but not below an excluded directory: exclude /srv/cache/* then !/srv/cache/keep.
    '\\' escapes the next character (\\!important, \\*)."""
    from stackvault.cli.context import preload

    paths = list(paths) + _files_from(files_from)
    _check_what(paths, stdin_from_command, source)
    preload("stackvault.engine.backup")  # imported while the repository opens
    from stackvault.sources.registry import open_source

    sources = [open_source(url) for url in source]  # URL errors before the repository opens
    patterns = _patterns(exclude, exclude_file)
    ipatterns = _patterns(iexclude, iexclude_file)
    rules = _walk_rules(
        patterns, ipatterns, exclude_caches, exclude_if_present, exclude_larger_than
    )
    if dry_run:
        if stdin_from_command or sources:
            raise UsageError("--dry-run applies to paths only, not --stdin-from-command/--source")
        return _dry_run(cli, paths, patterns, ipatterns, rules, one_file_system)
    with cli.open_repo(lock="backup") as repo:
        from stackvault.engine.backup import BackupJob, BackupOptions

        opts = BackupOptions(
            paths=list(paths or []),
            excludes=patterns,
            iexcludes=ipatterns,
            rules=rules,
            one_file_system=one_file_system,
            tags=tag,
            host=host,
            parent=parent,
            force=force,
            stdin_command=stdin_from_command,
            stdin_filename=stdin_filename,
            scan_totals=cli.interactive,
            sources=sources,
        )
        progress = make_progress(cli, "backup")
        job = BackupJob(repo, opts, progress=progress)
        try:
            result = job.run()
        finally:
            progress.close()
    return _report(cli, result.snapshot, files=bool(paths or stdin_from_command))


def _walk_rules(
    patterns: list[str],
    ipatterns: list[str],
    exclude_caches: bool,
    exclude_if_present: list[str],
    exclude_larger_than: int | None,
) -> WalkRules:
    """The walk's rules of what to leave out; `UsageError` for a bad pattern or marker
    name, before the repository opens."""
    from stackvault.fs.exclude import ExcludeMatcher
    from stackvault.fs.walk import WalkRules

    ExcludeMatcher(patterns, ipatterns)  # a bad pattern fails here
    if any(not m.partition(":")[0] or "/" in m.partition(":")[0] for m in exclude_if_present):
        raise UsageError("--exclude-if-present takes a file name (NAME or NAME:CONTENT)")
    return WalkRules(tuple(exclude_if_present), exclude_caches, exclude_larger_than)


def _report(cli: Cli, snap: Snapshot, *, files: bool) -> int | None:
    """The snapshot as JSON, or its summary (`_print_summary`); then a warning and exit 3 if
    it is incomplete."""
    from stackvault.cli.render import snapshot_json

    if cli.json:
        cli.emit_json(snapshot_json(snap))
    else:
        _print_summary(cli, snap, files=files)
    if not snap.complete:
        cli.warn(
            f"warning: snapshot {snap.short_id} is INCOMPLETE: {snap.summary['problems']} "
            "item(s) could not be read or captured (listed above and in `snapshots --json`)"
        )
        return EXIT_INCOMPLETE
    return None


def _print_summary(cli: Cli, snap: Snapshot, *, files: bool) -> None:
    """The artifacts, then (``files``: paths or a command were backed up) the files, what
    was added, what was processed and the snapshot's id."""
    from stackvault.cli.render import artifact_line, human_bytes

    s = snap.summary
    for record in snap.artifacts:
        cli.print(artifact_line(record))
    if files:
        cli.print(
            f"Files: {s['files_new']} new, {s['files_changed']} changed, "
            f"{s['files_unmodified']} unmodified; {s['dirs']} directories"
        )
    cli.print(
        f"Added to the repository: {human_bytes(s['data_added'])} "
        f"({human_bytes(s['data_added_stored'])} stored)"
    )
    what = f"{s['files']} files"
    if snap.artifacts:
        what += f" and {len(snap.artifacts)} artifact(s)"
    cli.print(f"Processed {what}, {human_bytes(s['bytes'])} in {s['duration_s']:.2f} s")
    cli.print(f"snapshot {snap.short_id} saved")
