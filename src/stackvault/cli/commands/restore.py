"""`stackvault restore`, `dump`, `export`, `sha256sums` (cli layer): getting data back out."""

from __future__ import annotations

import os
import sys

import typer

from stackvault.cli.app import JSON_OPTION, app, cli_of
from stackvault.cli.commands.backup import make_progress
from stackvault.cli.render import human_bytes
from stackvault.engine.browse import walk
from stackvault.engine.export import export_tar
from stackvault.engine.restore import RestoreJob, RestoreOptions, find_node, read_file_blobs
from stackvault.errors import PathNotFound, StackvaultError, UsageError


@app.command()
def restore(
    ctx: typer.Context,
    snapshot: str = typer.Argument(..., help="Snapshot id prefix or 'latest'."),
    target: str = typer.Option(..., "--target", "-t", help="Directory to restore into."),
    include: list[str] = typer.Option(
        [], "--include", "-i", help="Restore only paths matching a pattern (repeatable)."
    ),
    verify: bool = typer.Option(
        False, "--verify", help="Re-read every restored file and compare its SHA-256."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Allow restoring into a non-empty target, replacing files."
    ),
    json_: bool = JSON_OPTION,
) -> None:
    """Restore a snapshot into a directory."""
    cli = cli_of(ctx, json_)
    with cli.open_repo(lock="restore") as repo:
        snap = repo.find_snapshot(snapshot)
        progress = make_progress(cli, "restore")
        job = RestoreJob(
            repo,
            snap,
            RestoreOptions(target=target, include=include, overwrite=overwrite, verify=verify),
            progress=progress,
        )
        try:
            r = job.run()
        finally:
            progress.close()
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
                "bytes": r.bytes,
                "verified": r.verified if verify else None,
            }
        )
    else:
        cli.print(
            f"restored {r.files} files, {r.dirs} directories, {r.symlinks} symlinks, "
            f"{r.hardlinks} hard links ({human_bytes(r.bytes)}) from snapshot {snap.short_id} "
            f"to {target}"
        )
        if verify:
            cli.print(f"verified {r.verified} files: SHA-256 matches the snapshot")


@app.command()
def dump(
    ctx: typer.Context,
    snapshot: str = typer.Argument(..., help="Snapshot id prefix or 'latest'."),
    path: str = typer.Argument(..., help="Absolute path of a file inside the snapshot."),
) -> None:
    """Write one file of a snapshot to standard output."""
    cli = cli_of(ctx)
    with cli.open_repo(lock="dump") as repo:
        snap = repo.find_snapshot(snapshot)
        node = find_node(repo, snap, path)
        if node.type != "file":
            raise PathNotFound(f"{path} in snapshot {snap.short_id} is a {node.type}, not a file")
        out = sys.stdout.buffer
        for data in read_file_blobs(repo, node):
            out.write(data)
        out.flush()


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    snapshot: str = typer.Argument(..., help="Snapshot id prefix or 'latest'."),
    output: str = typer.Option(..., "--output", "-o", help="Tar file to write ('-' = stdout)."),
    path: str = typer.Option("/", "--path", help="Export only this subtree."),
) -> None:
    """Export a snapshot as a plain tar file that any machine can read."""
    cli = cli_of(ctx)
    with cli.open_repo(lock="export") as repo:
        snap = repo.find_snapshot(snapshot)
        if output == "-":
            members, size = export_tar(repo, snap, sys.stdout.buffer, path)
            return
        if os.path.exists(output):
            raise UsageError(f"{output} exists; refusing to overwrite it")
        tmp = f"{output}.partial"
        try:
            with open(tmp, "wb") as f:
                members, size = export_tar(repo, snap, f, path)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, output)
        except (StackvaultError, OSError, KeyboardInterrupt):
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    cli.notice(f"exported {members} entries ({human_bytes(size)}) to {output}")


@app.command()
def sha256sums(
    ctx: typer.Context,
    snapshot: str = typer.Argument(..., help="Snapshot id prefix or 'latest'."),
    path: str = typer.Option("/", "--path", help="Only files below this path."),
) -> None:
    """Print SHA256SUMS of a snapshot's files, relative to a restore target.

    After `restore --target DIR`, run `cd DIR && sha256sum -c SHA256SUMS` to prove the restore
    with coreutils alone.
    """
    cli = cli_of(ctx)
    with cli.open_repo(lock="sha256sums") as repo:
        snap = repo.find_snapshot(snapshot)
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
