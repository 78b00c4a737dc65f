"""`stackvault check` (cli layer): verify the repository and say what damage affects."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_json_option
from stackvault.errors import EXIT_INTEGRITY, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable

    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers
    from stackvault.repo.check import CheckReport
    from stackvault.repo.repository import Repository


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "check", check, reads_only=True)
    p.add_argument(
        "--read-data",
        action="store_true",
        help="Read and authenticate every byte of stored data.",
    )
    p.add_argument(
        "--read-data-subset",
        metavar="SUBSET",
        help="Read some of the packs: a random N% (10%), slice n of t (1/7: the packs "
        "split by id into t slices that never change; run 1/7 to 7/7 to read each once), or "
        "random packs up to a size (500M, 2G).",
    )
    add_json_option(p)


_SUBSET_FORMS = "a percentage (10%), a slice n/t (1/7) or a size (500M)"


def _parse_subset(text: str) -> float | tuple[int, int] | int:
    """``10%`` → 0.1; ``2/7`` → (2, 7); ``500M`` → bytes. `UsageError` otherwise."""
    import re

    from stackvault.cli.parser import parse_size

    text = text.strip()
    if text.endswith("%"):
        try:
            value = float(text[:-1])
        except ValueError:
            value = -1.0
        if not 0 < value <= 100:
            raise UsageError(
                f"--read-data-subset {text!r}: the percentage must be more than 0% and at most 100%"
            )
        return value / 100
    fraction = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if fraction is not None:
        n, t = int(fraction[1]), int(fraction[2])
        if not 1 <= n <= t:
            raise UsageError(f"--read-data-subset {text}: n/t needs 1 <= n <= t (e.g. 1/7)")
        return n, t
    try:
        size = parse_size(text)
    except ValueError:
        raise UsageError(f"--read-data-subset expects {_SUBSET_FORMS}, got {text!r}") from None
    if size <= 0:
        raise UsageError(f"--read-data-subset {text!r}: the size must be more than 0")
    return size


def _packs_up_to(repo: Repository, size: int) -> Callable[[bytes], bool]:
    """A random choice of stored packs whose sizes add up to ``size`` (the last one may go
    beyond it), as a rule on pack ids."""
    import random

    from stackvault.repo.pack import PACKS_PREFIX

    stored = list(repo.store.list(PACKS_PREFIX))
    random.shuffle(stored)
    chosen: set[str] = set()
    total = 0
    for info in stored:
        if total >= size:
            break
        chosen.add(info.name.rsplit("/", 1)[-1])
        total += info.size
    return lambda pack_id: pack_id.hex() in chosen


def check(cli: Cli, *, read_data: bool, read_data_subset: str | None) -> int | None:
    """Check the repository for damage; exit 20 and name what is affected if any is found."""
    from stackvault.cli.render import human_bytes
    from stackvault.ops.checkdue import DataSlices
    from stackvault.repo.check import Checker

    subset = _parse_subset(read_data_subset) if read_data_subset else None
    with cli.open_repo(lock="check", index=False, reads_only=True) as repo:
        if isinstance(subset, tuple):  # slice n of t, as a job's rotation reads them
            picks = DataSlices((subset[0] - 1,), subset[1], 0).holds
            checker = Checker(repo, packs=picks)
        elif isinstance(subset, int):
            checker = Checker(repo, packs=_packs_up_to(repo, subset))
        else:
            checker = Checker(repo, read_data=read_data, subset=subset)
        report = checker.run()
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
                "pack_users": report.pack_users,
                "repairs": report.repairs(),
            }
        )
    else:
        for n in report.notices:
            cli.notice(f"notice: {n}")
        for e in report.errors:
            cli.print(f"error: {e.kind} {e.name}: {e.message}")
        for line in _pack_user_lines(report):
            cli.print(line)
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


def _pack_user_lines(report: CheckReport) -> list[str]:
    """``pack 5868842dbbe4e8c3 (damaged) is used by 2 snapshot(s): 46cb9997, 27c23f4c; their
    data still reads ...`` for each damaged pack whose blobs the index still lists."""
    lines = []
    for name, ids in report.pack_users.items():
        shown = ", ".join(i[:8] for i in ids[:10]) + (
            f" and {len(ids) - 10} more" if len(ids) > 10 else ""
        )
        lost = sum(1 for i in ids if i in report.affected)
        state = (
            f"{lost} of them can no longer restore everything (below)"
            if lost
            else "their data still reads through the index, so repairing the pack keeps them whole"
        )
        lines.append(
            f"pack {name.rsplit('/', 1)[-1][:16]} (damaged) is used by {len(ids)} "
            f"snapshot(s): {shown}; {state}"
        )
    return lines
