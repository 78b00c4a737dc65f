"""`stackvault check` (cli layer): verify the repository and say what damage affects."""

from __future__ import annotations

import typer

from stackvault.cli.app import JSON_OPTION, app, cli_of
from stackvault.cli.render import human_bytes
from stackvault.errors import EXIT_INTEGRITY, UsageError
from stackvault.repo.check import Checker


def _parse_subset(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError as exc:
        raise UsageError(f"--read-data-subset expects a percentage like 10%, got {text!r}") from exc
    if not 0 < value <= 100:
        raise UsageError("--read-data-subset must be between 0% (exclusive) and 100%")
    return value / 100


@app.command()
def check(
    ctx: typer.Context,
    read_data: bool = typer.Option(
        False, "--read-data", help="Read and authenticate every byte of stored data."
    ),
    read_data_subset: str | None = typer.Option(
        None, "--read-data-subset", help="Read a random N% of the packs (e.g. 10%)."
    ),
    json_: bool = JSON_OPTION,
) -> None:
    """Check the repository for damage; exit 20 and name what is affected if any is found."""
    cli = cli_of(ctx, json_)
    subset = _parse_subset(read_data_subset) if read_data_subset else None
    with cli.open_repo(lock="check", index=False) as repo:
        report = Checker(repo, read_data=read_data, subset=subset).run()
    if cli.json:
        cli.emit_json(
            {
                "ok": report.ok,
                "errors": [e.__dict__ for e in report.errors],
                "notices": report.notices,
                "affected": report.affected,
                "snapshots": report.snapshots,
                "trees": report.trees,
                "packs": report.packs,
                "packs_read": report.packs_read,
                "blobs_read": report.blobs_read,
                "bytes_read": report.bytes_read,
            }
        )
    else:
        for n in report.notices:
            cli.notice(f"notice: {n}")
        for e in report.errors:
            cli.print(f"error: {e.kind} {e.name}: {e.message}")
        for snap_id, paths in report.affected.items():
            shown = ", ".join(paths[:10]) + (
                f" and {len(paths) - 10} more" if len(paths) > 10 else ""
            )
            cli.print(f"snapshot {snap_id[:8]} is damaged: {len(paths)} path(s) affected: {shown}")
        summary = (
            f"checked {report.snapshots} snapshots, {report.trees} trees, {report.packs} packs"
        )
        if report.packs_read:
            summary += (
                f"; read {report.packs_read} packs, {report.blobs_read} blobs "
                f"({human_bytes(report.bytes_read)})"
            )
        cli.print(summary)
        cli.print("no errors were found" if report.ok else f"{len(report.errors)} error(s) found")
    if not report.ok:
        raise typer.Exit(EXIT_INTEGRITY)
