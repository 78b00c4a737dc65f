"""`stackvault verify --spot PERCENT` (cli layer): compare a random sample of a snapshot's
files with the live files; the comparison is `stackvault.engine.spot`."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_json_option, add_snapshot_filters

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "verify", verify, reads_only=True)
    p.add_argument(
        "snapshot",
        nargs="?",
        default="latest",
        metavar="SNAPSHOT",
        help="The snapshot to compare with the live files (default: latest; see the filters).",
    )
    p.add_argument(
        "--spot",
        required=True,
        metavar="PERCENT",
        help="How much of the snapshot's files to compare, e.g. 5%% (at least one file).",
    )
    p.add_argument(
        "--read-data",
        action="store_true",
        help="Also read each sampled file back from the repository and verify it.",
    )
    p.add_argument(
        "--max-mismatches",
        type=int,
        default=0,
        metavar="N",
        help="How many mismatching files are tolerated before the exit status is 20 "
        "(default 0). Files changed or removed since the snapshot never count.",
    )
    p.add_argument("--seed", type=int, metavar="N", help="Draw the same sample again.")
    add_snapshot_filters(p)
    add_json_option(p)


def verify(
    cli: Cli,
    *,
    snapshot: str,
    spot: str,
    read_data: bool,
    max_mismatches: int,
    seed: int | None,
    host: str | None,
    tag: list[str],
    snapshot_path: list[str],
) -> int:
    """Compare a random sample of a snapshot's files with the live files they were backed up
    from. A file whose size and modification time are those of the snapshot must have its
    content (SHA-256); a mismatch means the snapshot holds other bytes than the file has
    without the file looking changed — the change an incremental backup cannot see, or data
    the backup did not store. Files changed or gone since the snapshot are expected and only
    counted.

    Exit status: 0 no more than --max-mismatches mismatches and nothing damaged; 20 more, or
    (with --read-data) a sampled file's data in the repository is damaged.
    """
    import random

    from stackvault.engine.spot import spot_check
    from stackvault.errors import EXIT_INTEGRITY, UsageError
    from stackvault.repo.selection import SnapshotFilter, pick_snapshot

    fraction = _percent(spot)
    if max_mismatches < 0:
        raise UsageError("--max-mismatches cannot be negative")
    chosen = SnapshotFilter.of(host, tag, snapshot_path)
    with cli.open_repo(lock="verify", reads_only=True) as repo:
        snap = pick_snapshot(repo, snapshot, chosen)
        report = spot_check(repo, snap, fraction, rng=random.Random(seed), read_data=read_data)
    mismatches = report.count("mismatch")
    damaged = report.count("damaged")
    failed = mismatches > max_mismatches or damaged > 0
    if cli.json:
        cli.emit_json({**report.to_json(), "ok": not failed})
    else:
        counts = ", ".join(
            f"{report.count(o)} {o}"
            for o in ("match", "mismatch", "changed", "missing", "unreadable", "damaged")
            if report.count(o)
        )
        cli.print(
            f"snapshot {snap.short_id}: compared {len(report.sampled)} of {report.files} "
            f"files with the live files: {counts or 'nothing to compare'}"
        )
        for f in report.sampled:
            if f.outcome in ("mismatch", "damaged", "unreadable"):
                cli.warn(f"{f.outcome}: {f.path}: {f.detail}")
        if failed:
            cli.warn(
                "error: the snapshot does not hold what the live files hold although they look "
                "unchanged; run `stackvault backup --force` (it re-reads every file) and check "
                "the disk"
                if mismatches > max_mismatches
                else "error: sampled data is damaged in the repository; run `stackvault check "
                "--read-data` and `stackvault repair`"
            )
    return EXIT_INTEGRITY if failed else 0


def _percent(text: str) -> float:
    """``5%`` or ``5`` → 0.05; `UsageError` outside (0, 100]."""
    from stackvault.errors import UsageError

    raw = text.strip().removesuffix("%")
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"--spot takes a percentage such as 5%, got {text!r}") from None
    if not 0 < value <= 100:
        raise UsageError(f"--spot takes more than 0% and at most 100%, got {text!r}")
    return value / 100
