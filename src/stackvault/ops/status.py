"""Is each job's objective met? (ops layer): ``stackvault status``.

Everything is read from the job's repositories — their run records and snapshots — so it
works on any host that has the configuration, without a daemon. `read_job_status` opens each
repository of a job (primary, then copies) through an `Opener`, reads it (`RepositoryView`)
and `judge` decides, purely, from the views, the job's `Objectives` and "now" (the tests give
it synthetic histories).

**Figures**, per repository: the newest complete ``job:NAME`` snapshot and its age against
the RPO; the newest check of that repository and its age against ``check.every``; restore
points created ÷ expected over 7 and 30 days. Per job: the last run (result, duration
against the window), the next scheduled run, and the last restore drill (a run record with
one ``drill`` step, `stackvault.records.drill`): when, its result, its measured RTO against
the RTO. Drill records are not runs of the job: they count in no ratio and are never the
last run. Run records are read from every repository that could
be opened, one per run id (the primary holds every record; a copy those of runs that reached
it).

**Restore points ÷ expected.** A run created a restore point in the primary when its
``backup`` step into it ended ``ok``, in a copy when its ``copy`` step into it did (runs
counted once per run id). Expected: the schedule's ticks in the period, which starts at the
later of now - N days and the job's first recorded run minus its window (a job younger than
the period is not judged on days before it existed). The ratio is capped at 100 %; None
when no tick fell in the period.

**Verdict** (`VERDICTS`, worst first; the job gets the worst any rule gives):

* ``breached``: the primary holds no complete job snapshot, or its newest is older than the
  RPO;
* ``at-risk``: the newest snapshot's age + the time until the next scheduled run + the window
  exceeds the RPO (it will breach before the next run can fix it); or a copy lacks the
  primary's newest job snapshot; or a repository could not be opened or read (its error is
  shown; an unreadable primary is at-risk, not breached: nothing shows its snapshots gone);
* ``at-risk`` too: the last drill's measured RTO exceeds the RTO (a restore would take
  longer than promised);
* ``unverified``: a repository whose newest check is older than ``check.every``, missing, or
  did not end ``ok``; for a job with ``drill.every``, no drill that passed within it (never
  drilled, the last drill failed, or it is too old);
* ``ok``: none of these.

The last run's result and the ratios are figures only: they do not change the verdict.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from stackvault.clock import Clock, SystemClock
from stackvault.config.job import EffectiveJob
from stackvault.config.schedule import Schedule
from stackvault.errors import StackvaultError
from stackvault.ops.history import (
    WINDOWS_DAYS,
    JobHistory,
    backup_runs,
    distinct_runs,
    job_history,
)
from stackvault.ops.session import Opener
from stackvault.records.drill import latest_drill
from stackvault.records.run import RunRecord, format_time, job_tag
from stackvault.repo.snapshot import Snapshot

Verdict = Literal["breached", "at-risk", "unverified", "ok"]
VERDICTS: tuple[Verdict, ...] = ("breached", "at-risk", "unverified", "ok")
"""Worst first: a job's verdict is the first of these any rule gives."""

Role = Literal["primary", "copy"]


@dataclass(frozen=True)
class Objectives:
    """What a job promises: the RPO, the window of a run and the check period (seconds),
    and its schedule."""

    rpo_s: int
    window_s: int
    check_every_s: int
    schedule: Schedule
    rto_s: int | None = None
    drill_every_s: int | None = None
    """How often the job is to be drilled (None: drills are not scheduled)."""

    @classmethod
    def of(cls, job: EffectiveJob) -> Objectives:
        """The objectives of a configured job."""
        every = job.drill.every
        return cls(
            rpo_s=job.rpo.value.seconds,
            window_s=job.window.value.seconds,
            check_every_s=job.check.every.value.seconds,
            schedule=job.schedule.value,
            rto_s=job.rto.value.seconds,
            drill_every_s=every.value.seconds if every is not None else None,
        )


@dataclass(frozen=True)
class RepositoryView:
    """What one repository says of a job, as read (or why it could not be read)."""

    name: str
    role: Role
    location: str
    """Shown without credentials."""
    history: JobHistory | None = None
    """None when the repository could not be opened or read (``error``)."""
    runs: tuple[RunRecord, ...] = ()
    """The job's run records it holds."""
    origins: frozenset[str] = frozenset()
    """`Snapshot.origin` of every complete job snapshot it holds."""
    error: str | None = None


@dataclass(frozen=True)
class SnapshotFigure:
    """The newest complete job snapshot of a repository."""

    id: str
    time: datetime
    age_s: float
    within_rpo: bool


@dataclass(frozen=True)
class CheckFigure:
    """The newest check of a repository (a ``check`` step of a run record)."""

    run_id: str
    started: datetime
    result: str
    age_s: float
    current: bool
    """True if it ended ``ok`` less than ``check.every`` ago."""
    error: str | None


@dataclass(frozen=True)
class RestorePoints:
    """Restore points created in a repository over ``days`` days against the schedule."""

    days: int
    created: int
    expected: int
    ratio: float | None
    """``min(1, created / expected)``; None when ``expected`` is 0."""


@dataclass(frozen=True)
class LastRun:
    """The newest run of the job (from the run records), against its window."""

    id: str
    result: str
    started: datetime
    duration_s: float
    within_window: bool


@dataclass(frozen=True)
class DrillFigure:
    """The job's newest restore drill."""

    repository: str | None
    """The repository it restored from."""
    run_id: str
    ended: datetime
    result: str
    age_s: float
    rto_s: float | None
    """The measured recovery time (None: the drill did not get that far)."""
    rto_met: bool | None
    snapshot: str | None
    error: str | None


@dataclass(frozen=True)
class RepositoryStatus:
    """The figures of one repository of a job, and what in them is wrong (``problems``, one
    sentence each, the verdict each gives)."""

    name: str
    role: Role
    location: str
    error: str | None
    """Why it could not be opened or read; None when it was."""
    snapshot: SnapshotFigure | None
    behind: bool
    """A copy that lacks the primary's newest job snapshot."""
    check: CheckFigure | None
    restore_points: tuple[RestorePoints, ...]
    problems: tuple[tuple[Verdict, str], ...] = ()


@dataclass(frozen=True)
class JobStatus:
    """A job's verdict, its figures, and the reasons (verdict, one sentence) behind it."""

    job: str
    verdict: Verdict
    now: datetime
    rpo_s: int
    window_s: int
    check_every_s: int
    schedule: str
    next_run: datetime
    last_run: LastRun | None
    repositories: tuple[RepositoryStatus, ...]
    reasons: tuple[tuple[Verdict, str], ...] = field(default=())
    drill: DrillFigure | None = None
    rto_s: int | None = None
    drill_every_s: int | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """The worst of ``verdicts`` by `VERDICTS` (``ok`` for none)."""
    return min(verdicts, key=VERDICTS.index, default="ok")


@functools.lru_cache(maxsize=64)
def count_ticks(schedule: Schedule, start: datetime, end: datetime) -> int:
    """The schedule's runs in ``(start, end]``. A schedule that runs every day alike (day,
    month and weekday fields ``*``) is counted per whole day, the rest tick by tick."""
    if end <= start:
        return 0
    fields = _DAILY_ALIASES.get(schedule.cron, schedule.cron).split()
    days = 0
    if fields[2:] == ["*", "*", "*"]:
        days = int((end - start).total_seconds() // 86_400)
    count = 0
    if days:
        count = days * _ticks_between(schedule, start, start + timedelta(days=1))
        start += timedelta(days=days)
    return count + _ticks_between(schedule, start, end)


_DAILY_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
}


def _ticks_between(schedule: Schedule, start: datetime, end: datetime) -> int:
    count, tick = 0, start
    while (tick := schedule.next_run(tick)) <= end:
        count += 1
    return count


def restore_points(
    runs: Sequence[RunRecord],
    repository: str,
    role: Role,
    objectives: Objectives,
    now: datetime,
    days: int,
) -> RestorePoints:
    """Restore points ``runs`` created in ``repository`` over the last ``days`` days against
    the schedule's ticks (module docstring)."""
    mine = distinct_runs(runs)
    start = now - timedelta(days=days)
    if mine:
        start = max(start, mine[0].started - timedelta(seconds=objectives.window_s))
    step = "backup" if role == "primary" else "copy"
    created = sum(
        1
        for r in mine
        if start < r.started <= now
        and any(s.result == "ok" and s.repository == repository for s in r.steps_named(step))
    )
    expected = count_ticks(objectives.schedule, start, now)
    ratio = min(1.0, created / expected) if expected else None
    return RestorePoints(days, created, expected, ratio)


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


def _snapshot_figure(
    history: JobHistory, objectives: Objectives, now: datetime
) -> SnapshotFigure | None:
    snap = history.last_snapshot
    if snap is None:
        return None
    age = _age(now, snap.time)
    return SnapshotFigure(snap.id, snap.time, age, age <= objectives.rpo_s)


def _check_figure(history: JobHistory, objectives: Objectives, now: datetime) -> CheckFigure | None:
    last = history.last_check
    if last is None:
        return None
    age = _age(now, last.started)
    current = last.result == "ok" and age < objectives.check_every_s
    return CheckFigure(last.run_id, last.started, last.result, age, current, last.error)


def _hours(seconds: float) -> str:
    """``2 d 4 h``, ``1 d 1 min``, ``3 h 30 min``, ``0 min`` for a reason's sentence (whole
    minutes, zero parts left out)."""
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (mins, "min")) if n]
    return " ".join(parts) or "0 min"


def _age_problems(
    snap: SnapshotFigure | None, objectives: Objectives, next_run: datetime
) -> list[tuple[Verdict, str]]:
    """The primary's snapshot rules: none or older than the RPO is breached; one that will
    be older than the RPO when the next run must end is at risk."""
    if snap is None:
        return [("breached", "holds no complete snapshot of the job")]
    if not snap.within_rpo:
        return [("breached", f"newest snapshot is {_hours(snap.age_s)} old, over the RPO")]
    reach = (next_run - snap.time).total_seconds() + objectives.window_s
    if reach > objectives.rpo_s:
        return [
            (
                "at-risk",
                f"newest snapshot will be {_hours(reach)} old when the next run must end, "
                "over the RPO",
            )
        ]
    return []


def _check_problems(check: CheckFigure | None) -> list[tuple[Verdict, str]]:
    """A repository without a check that ended ok within its period is unverified."""
    if check is None:
        return [("unverified", "never checked")]
    if check.result != "ok":
        return [("unverified", f"last check ended {check.result}")]
    if not check.current:
        return [("unverified", f"last check is {_hours(check.age_s)} old")]
    return []


def _repository_status(
    view: RepositoryView,
    objectives: Objectives,
    now: datetime,
    next_run: datetime,
    primary_newest: Snapshot | None,
    points: tuple[RestorePoints, ...],
) -> RepositoryStatus:
    """One repository's figures and the problems its rules find."""
    if view.history is None:
        problem: tuple[Verdict, str] = ("at-risk", f"cannot be read: {view.error}")
        return RepositoryStatus(
            view.name, view.role, view.location, view.error, None, False, None, points,
            problems=(problem,),
        )  # fmt: skip
    snap = _snapshot_figure(view.history, objectives, now)
    check = _check_figure(view.history, objectives, now)
    behind = (
        view.role == "copy"
        and primary_newest is not None
        and primary_newest.origin not in view.origins
    )
    problems: list[tuple[Verdict, str]] = []
    if view.role == "primary":
        problems += _age_problems(snap, objectives, next_run)
    if behind:
        assert primary_newest is not None
        problems.append(("at-risk", f"lacks the primary's newest snapshot {primary_newest.id[:8]}"))
    problems += _check_problems(check)
    return RepositoryStatus(
        view.name, view.role, view.location, None, snap, behind, check, points,
        problems=tuple(problems),
    )  # fmt: skip


def _drill_figure(runs: Iterable[RunRecord], now: datetime) -> DrillFigure | None:
    drills = [r for r in runs if r.is_drill]
    drill = latest_drill(drills)
    if drill is None:
        return None
    newest = max(drills, key=lambda r: r.started)
    return DrillFigure(
        newest.steps[0].repository,
        drill.drill_id,
        drill.ended,
        drill.result,
        _age(now, drill.ended),
        drill.rto_s,
        drill.rto_met,
        drill.snapshot,
        drill.summary_error(),
    )


def _drill_problems(drill: DrillFigure | None, objectives: Objectives) -> list[tuple[Verdict, str]]:
    """A measured RTO over the objective is at risk; a job drilled by schedule without a
    passed drill within its period is unverified."""
    problems: list[tuple[Verdict, str]] = []
    if drill is not None and drill.rto_met is False and drill.rto_s is not None:
        problems.append(("at-risk", f"last drill restored in {_hours(drill.rto_s)}, over the RTO"))
    every = objectives.drill_every_s
    if every is None:
        return problems
    if drill is None:
        problems.append(("unverified", "never drilled"))
    elif drill.result != "ok":
        why = f": {drill.error}" if drill.error else ""
        problems.append(("unverified", f"last drill ended {drill.result}{why}"))
    elif drill.age_s >= every:
        problems.append(("unverified", f"last drill is {_hours(drill.age_s)} old"))
    return problems


def judge(
    job: str,
    objectives: Objectives,
    views: Sequence[RepositoryView],
    now: datetime,
) -> JobStatus:
    """The status of ``job`` from its repositories' ``views`` (primary first) as of ``now``
    (module docstring: figures, verdict)."""
    every_record = [r for v in views for r in v.runs]
    all_runs = distinct_runs(backup_runs(every_record))
    next_run = objectives.schedule.next_run(now)
    primary = views[0]
    primary_newest = primary.history.last_snapshot if primary.history is not None else None
    statuses = [
        _repository_status(
            view,
            objectives,
            now,
            next_run,
            primary_newest,
            tuple(
                restore_points(all_runs, view.name, view.role, objectives, now, d)
                for d in WINDOWS_DAYS
            ),
        )
        for view in views
    ]
    last = all_runs[-1] if all_runs else None
    last_run = (
        LastRun(
            last.id,
            last.result,
            last.started,
            last.duration_s,
            last.duration_s <= objectives.window_s,
        )
        if last is not None
        else None
    )
    drill = _drill_figure(every_record, now)
    reasons = tuple(
        (verdict, f"{s.name}: {text}") for s in statuses for verdict, text in s.problems
    ) + tuple((verdict, f"drill: {text}") for verdict, text in _drill_problems(drill, objectives))
    return JobStatus(
        job=job,
        verdict=worst(v for v, _ in reasons),
        now=now,
        rpo_s=objectives.rpo_s,
        window_s=objectives.window_s,
        check_every_s=objectives.check_every_s,
        schedule=objectives.schedule.cron,
        next_run=next_run,
        last_run=last_run,
        repositories=tuple(statuses),
        reasons=reasons,
        drill=drill,
        rto_s=objectives.rto_s,
        drill_every_s=objectives.drill_every_s,
    )


def read_view(opener: Opener, job: EffectiveJob, index: int, now: datetime) -> RepositoryView:
    """The view of the job's repository number ``index`` (0: the primary); a repository that
    cannot be opened or read gives a view with its error (one sentence)."""
    settings = job.repositories[index]
    role: Role = "primary" if index == 0 else "copy"
    try:
        with opener(settings) as repo:
            runs = tuple(repo.list_runs(job=job.name))
            snapshots = repo.list_snapshots()
    except StackvaultError as exc:
        return RepositoryView(settings.name, role, settings.shown, error=str(exc))
    tag = job_tag(job.name)
    origins = frozenset(s.origin for s in snapshots if s.complete and tag in s.tags)
    history = job_history(job.name, runs, snapshots, now, repository=settings.name)
    return RepositoryView(settings.name, role, settings.shown, history, runs, origins)


def read_job_status(job: EffectiveJob, opener: Opener, clock: Clock | None = None) -> JobStatus:
    """The status of ``job``: each of its repositories read through ``opener``, judged as of
    ``clock`` (default: the system's)."""
    now = (clock or SystemClock()).now()
    views = [read_view(opener, job, i, now) for i in range(len(job.repositories))]
    return judge(job.name, Objectives.of(job), views, now)


def _time(when: datetime | None) -> str | None:
    return format_time(when) if when is not None else None


def status_json(status: JobStatus) -> dict[str, object]:
    """The ``--json`` form of a job's status: every figure, times in ISO 8601 UTC, durations
    in seconds; ``drill`` is null when the job was never drilled."""
    last = status.last_run
    return {
        "job": status.job,
        "verdict": status.verdict,
        "now": _time(status.now),
        "rpo_s": status.rpo_s,
        "window_s": status.window_s,
        "check_every_s": status.check_every_s,
        "schedule": status.schedule,
        "next_run": _time(status.next_run),
        "last_run": None
        if last is None
        else {
            "id": last.id,
            "result": last.result,
            "started": _time(last.started),
            "duration_s": last.duration_s,
            "within_window": last.within_window,
        },
        "rto_s": status.rto_s,
        "drill_every_s": status.drill_every_s,
        "drill": _drill_json(status.drill),
        "reasons": [{"verdict": v, "reason": text} for v, text in status.reasons],
        "repositories": [_repository_json(r) for r in status.repositories],
    }


def _repository_json(r: RepositoryStatus) -> dict[str, object]:
    snap, check = r.snapshot, r.check
    return {
        "name": r.name,
        "role": r.role,
        "location": r.location,
        "error": r.error,
        "snapshot": None
        if snap is None
        else {
            "id": snap.id,
            "time": _time(snap.time),
            "age_s": snap.age_s,
            "within_rpo": snap.within_rpo,
        },
        "behind": r.behind,
        "check": None
        if check is None
        else {
            "run_id": check.run_id,
            "started": _time(check.started),
            "result": check.result,
            "age_s": check.age_s,
            "current": check.current,
            "error": check.error,
        },
        "restore_points": {
            f"{p.days}d": {"created": p.created, "expected": p.expected, "ratio": p.ratio}
            for p in r.restore_points
        },
        "problems": [{"verdict": v, "reason": text} for v, text in r.problems],
    }


def _drill_json(d: DrillFigure | None) -> dict[str, object] | None:
    if d is None:
        return None
    return {
        "repository": d.repository,
        "run_id": d.run_id,
        "ended": _time(d.ended),
        "result": d.result,
        "age_s": d.age_s,
        "rto_s": d.rto_s,
        "rto_met": d.rto_met,
        "snapshot": d.snapshot,
        "error": d.error,
    }
