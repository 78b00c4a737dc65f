"""`stackvault status [JOB]` (cli layer): is each job's objective met? Read from the job's
repositories (run records and snapshots), so it works on any host, without a daemon; the
figures and the verdict are `stackvault.ops.status`."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_config_option, add_json_option
from stackvault.errors import EXIT_ERROR

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers
    from stackvault.clock import Clock
    from stackvault.config.repository import RepositorySettings
    from stackvault.ops.status import JobStatus, RepositoryStatus
    from stackvault.repo.repository import Repository

EXIT_NOT_OK = EXIT_ERROR
"""Some job's verdict is not ``ok``."""


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "status", status, reads_only=True)
    p.add_argument(
        "job", metavar="JOB", nargs="?", help="Only this job (default: every job of the file)."
    )
    add_config_option(p)
    add_json_option(p)


def clock() -> Clock:
    """The clock `status` judges by: the system's (tests replace this function to fix
    "now")."""
    from stackvault.clock import SystemClock

    return SystemClock()


def status(cli: Cli, *, job: str | None, config: str | None) -> int:
    """Is each job's objective met? One line per job (its verdict: ok, at-risk, breached,
    unverified), then one per repository: the newest job snapshot's age against the RPO, the
    last check's age against check.every, restore points created against the schedule over 7
    and 30 days; the last drill and its measured RTO; the last run against its window. Read
    from the repositories (run records and snapshots): no daemon needed.

    Exit status: 0 every job shown is ok, 1 otherwise (or an error).
    """
    from stackvault.config import load_config
    from stackvault.ops.status import read_job_status, status_json

    loaded = load_config(config, check_files=False)
    for warning in loaded.warnings:
        cli.warn(warning)
    jobs = [loaded.job(job)] if job is not None else list(loaded.jobs.values())
    now = clock()
    statuses = [read_job_status(j, lambda s: _open(cli, s), now) for j in jobs]
    if cli.json:
        cli.emit_json({"jobs": [status_json(s) for s in statuses]})
    else:
        for s in statuses:
            for line in job_lines(s, cli.time):
                cli.print(line)
    return 0 if all(s.ok for s in statuses) else EXIT_NOT_OK


def _open(cli: Cli, settings: RepositorySettings) -> AbstractContextManager[Repository]:
    """The repository of ``settings`` as `run` opens it (its password from the configuration),
    without a lock or index: status only lists snapshots and run records."""
    return cli.open_repo(
        store=cli.store(settings.location),
        password=settings.password,
        role=f"{settings.name!r}",
        hint=f"check repositories.{settings.name} in the configuration file",
        index=False,
        reads_only=True,
    )


def span(seconds: float) -> str:
    """``45s``, ``12min``, ``3.5h``, ``2d4h``."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}min"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f}h"
    days, rest = divmod(int(seconds), 86_400)
    return f"{days}d{rest // 3600}h" if rest >= 3600 else f"{days}d"


def job_lines(s: JobStatus, time: Callable[..., str]) -> list[str]:
    """The table of one job: its line, then an indented line per repository, then the reasons
    for a verdict other than ok (``time``: how the command line writes a moment)."""
    last = s.last_run
    if last is None:
        run = "never run"
    else:
        late = "" if last.within_window else f" over the {span(s.window_s)} window"
        run = (
            f"last run {last.result} {span((s.now - last.started).total_seconds())} ago "
            f"in {span(last.duration_s)}{late}"
        )
    lines = [
        f"{s.job:<16} {s.verdict:<10} rpo {span(s.rpo_s)}, {run}, "
        f"next {time(s.next_run, seconds=False)}"
    ]
    lines += [f"  {_repository_line(r, s)}" for r in s.repositories]
    lines.append(f"  {'drill':<24} {_drill_text(s)}")
    lines += [f"  {verdict}: {reason}" for verdict, reason in s.reasons]
    return lines


def _drill_text(s: JobStatus) -> str:
    """``passed 2d ago, restored in 4min (rto 2.0h), every 7d`` or ``never drilled``."""
    every = f", every {span(s.drill_every_s)}" if s.drill_every_s else ""
    d = s.drill
    if d is None:
        return f"never drilled{every}"
    outcome = "passed" if d.result == "ok" else d.result
    rto = ""
    if d.rto_s is not None:
        target = f" (rto {span(s.rto_s)})" if s.rto_s else ""
        over = ", over the rto" if d.rto_met is False else ""
        rto = f", restored in {span(d.rto_s)}{target}{over}"
    return f"{outcome} {span(d.age_s)} ago{rto}{every}"


def _repository_line(r: RepositoryStatus, s: JobStatus) -> str:
    head = f"{r.name} ({r.role})"
    if r.error is not None:
        return f"{head:<24} cannot be read: {r.error}"
    snap = r.snapshot
    parts = [
        "no snapshot"
        if snap is None
        else f"snapshot {snap.id[:8]} {span(snap.age_s)} old"
        + ("" if snap.within_rpo else " (over rpo)")
    ]
    if r.behind:
        parts.append("behind the primary")
    check = r.check
    if check is None:
        parts.append("never checked")
    else:
        every = span(s.check_every_s)
        parts.append(f"check {check.result} {span(check.age_s)} ago (every {every})")
    for p in r.restore_points:
        ratio = "-" if p.ratio is None else f"{p.ratio:.0%}"
        parts.append(f"{p.days}d {p.created}/{p.expected} {ratio}")
    return f"{head:<24} {', '.join(parts)}"
