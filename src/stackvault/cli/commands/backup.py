"""`stackvault backup` (cli layer): back up paths or a command's output."""

from __future__ import annotations

import typer

from stackvault.cli.app import JSON_OPTION, app, cli_of
from stackvault.cli.context import Cli
from stackvault.cli.progress import BarProgress, LineProgress
from stackvault.cli.render import human_bytes, snapshot_json
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.progress import Progress
from stackvault.errors import EXIT_INCOMPLETE, UsageError
from stackvault.sources.exclude import load_exclude_file


def make_progress(cli: Cli, label: str) -> Progress:
    if cli.interactive:
        return BarProgress(cli.err, label)
    return LineProgress(cli.notice)


@app.command()
def backup(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(None, help="Files and directories to back up."),
    exclude: list[str] = typer.Option([], "--exclude", "-e", help="Exclude a pattern."),
    exclude_file: list[str] = typer.Option(
        [], "--exclude-file", help="Read exclude patterns from a file (one per line)."
    ),
    one_file_system: bool = typer.Option(
        False, "--one-file-system", "-x", help="Do not cross filesystem boundaries."
    ),
    tag: list[str] = typer.Option([], "--tag", help="Add a tag to the snapshot (repeatable)."),
    host: str | None = typer.Option(None, "--host", help="Record this host name."),
    parent: str | None = typer.Option(
        None, "--parent", help="Compare against this snapshot instead of the latest."
    ),
    force: bool = typer.Option(False, "--force", help="Re-read every file."),
    stdin_from_command: str | None = typer.Option(
        None,
        "--stdin-from-command",
        help="Run CMD and back up its standard output as one file; a failing CMD saves nothing.",
    ),
    stdin_filename: str = typer.Option(
        "stdin", "--stdin-filename", help="File name for --stdin-from-command output."
    ),
    json_: bool = JSON_OPTION,
) -> None:
    """Back up files and directories (or a command's output) into a new snapshot."""
    cli = cli_of(ctx, json_)
    if stdin_from_command and paths:
        raise UsageError("give either paths or --stdin-from-command, not both")
    if not stdin_from_command and not paths:
        raise UsageError("nothing to back up: give paths or --stdin-from-command")
    patterns = list(exclude)
    for f in exclude_file:
        patterns.extend(load_exclude_file(f))
    opts = BackupOptions(
        paths=list(paths or []),
        excludes=patterns,
        one_file_system=one_file_system,
        tags=tag,
        host=host,
        parent=parent,
        force=force,
        stdin_command=stdin_from_command,
        stdin_filename=stdin_filename,
        scan_totals=cli.interactive,
    )
    with cli.open_repo(lock="backup") as repo:
        progress = make_progress(cli, "backup")
        job = BackupJob(repo, opts, progress=progress)
        try:
            result = job.run()
        finally:
            progress.close()
    snap = result.snapshot
    s = snap.summary
    if cli.json:
        cli.emit_json(snapshot_json(snap))
    else:
        cli.print(
            f"Files: {s['files_new']} new, {s['files_changed']} changed, "
            f"{s['files_unmodified']} unmodified; {s['dirs']} directories"
        )
        cli.print(
            f"Added to the repository: {human_bytes(s['data_added'])} "
            f"({human_bytes(s['data_added_stored'])} stored)"
        )
        cli.print(
            f"Processed {s['files']} files, {human_bytes(s['bytes'])} in {s['duration_s']:.2f} s"
        )
        cli.print(f"snapshot {snap.short_id} saved")
    if not snap.complete:
        cli.notice(
            f"warning: snapshot {snap.short_id} is INCOMPLETE: {s['problems']} item(s) could "
            "not be read (listed above and in `snapshots --json`)"
        )
        raise typer.Exit(EXIT_INCOMPLETE)
