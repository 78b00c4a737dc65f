"""`stackvault check` (cli layer): verify the repository and say what damage affects."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_json_option
from stackvault.errors import EXIT_INTEGRITY, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "check", check, reads_only=True)
    p.add_argument(
        "--read-data",
        action="store_true",
        help="Read and authenticate every byte of stored data.",
    )
    p.add_argument(
        "--read-data-subset",
        metavar="N%",
        help="Read a random N% of the packs (e.g. 10%).",
    )
    add_json_option(p)


def _parse_subset(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError as exc:
        raise UsageError(f"--read-data-subset expects a percentage like 10%, got {text!r}") from exc
    if not 0 < value <= 100:
        raise UsageError("--read-data-subset must be between 0% (exclusive) and 100%")
    return value / 100


def check(cli: Cli, *, read_data: bool, read_data_subset: str | None) -> int | None:
    """Check the repository for damage; exit 20 and name what is affected if any is found."""
    from stackvault.cli.render import human_bytes
    from stackvault.repo.check import Checker

    subset = _parse_subset(read_data_subset) if read_data_subset else None
    with cli.open_repo(lock="check", index=False, reads_only=True) as repo:
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
                "damaged_packs": sorted(report.damaged_packs),
                "repairs": report.repairs(),
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
        for step, command in enumerate(report.repairs(), 1):
            cli.print(f"to repair, step {step}: {command}")
    if not report.ok:
        return EXIT_INTEGRITY
    return None
