"""The verdict rules of `stackvault status` (ops/status.py) on synthetic histories, no
repositories: breached, at-risk (the RPO will be exceeded before the next run can end; a
copy behind the primary; a repository that cannot be read), unverified, ok, their
precedence, and restore points created against the schedule's ticks."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from stackvault.config.schedule import parse_schedule
from stackvault.ops.history import job_history
from stackvault.ops.status import (
    Objectives,
    RepositoryView,
    Role,
    count_ticks,
    judge,
    restore_points,
    status_json,
    worst,
)
from stackvault.records.drill import DrillResult
from stackvault.records.run import RunRecord, RunStep, StepResult, job_tag
from stackvault.repo.snapshot import Snapshot

NOW = datetime(2026, 6, 30, 13, 0, tzinfo=UTC)  # next 12-hour tick: 2026-07-01 00:00
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
JOB = "etc"
OBJECTIVES = Objectives(
    rpo_s=24 * 3600,
    window_s=3600,
    check_every_s=7 * 86400,
    schedule=parse_schedule("0 */12 * * *"),
)


def run(
    started: datetime,
    *,
    backup: StepResult = "ok",
    copy: StepResult | None = "ok",
    check: StepResult | None = None,
    run_id: str | None = None,
) -> RunRecord:
    steps = [RunStep("backup", backup, started, 60.0, "primary")]
    if copy is not None:
        steps.append(RunStep("copy", copy, started + timedelta(minutes=1), 30.0, "offsite"))
    if check is not None:
        for repo in ("primary", "offsite"):
            steps.append(RunStep("check", check, started + timedelta(minutes=2), 10.0, repo))
    ok = backup == "ok" and copy in ("ok", None) and check in ("ok", None)
    return RunRecord(
        id=run_id or secrets.token_hex(16),
        job=JOB,
        host="h",
        started=started,
        ended=started + timedelta(minutes=5),
        result="ok" if ok else "partial" if backup == "ok" else "failed",
        trigger="schedule",
        program="stackvault 0.1.0",
        steps=steps,
    )


def snap(when: datetime, *, original: str | None = None) -> Snapshot:
    return Snapshot(
        time=when,
        tree=bytes(32),
        paths=["/etc"],
        hostname="h",
        username="u",
        tags=[job_tag(JOB)],
        original=original,
        id=secrets.token_hex(32),
    )


def view(name: str, role: Role, runs: list[RunRecord], snaps: list[Snapshot]) -> RepositoryView:
    return RepositoryView(
        name,
        role,
        f"/srv/{name}",
        job_history(JOB, runs, snaps, NOW, repository=name),
        tuple(runs),
        frozenset(s.origin for s in snaps),
    )


def healthy(
    snap_age: timedelta = 2 * HOUR, check_age: timedelta = 2 * DAY
) -> tuple[list[RunRecord], list[Snapshot], list[Snapshot]]:
    """A primary and a copy holding the same newest snapshot, both checked ``check_age`` ago."""
    runs = [run(NOW - check_age, check="ok"), run(NOW - snap_age)]
    primary = [snap(NOW - check_age), snap(NOW - snap_age)]
    offsite = [snap(s.time, original=s.id) for s in primary]
    return runs, primary, offsite


def judged(
    runs: list[RunRecord], primary: list[Snapshot], offsite: list[Snapshot] | None
) -> tuple[str, list[tuple[str, str]]]:
    views = [view("primary", "primary", runs, primary)]
    if offsite is not None:
        views.append(view("offsite", "copy", runs, offsite))
    status = judge(JOB, OBJECTIVES, views, NOW)
    return status.verdict, list(status.reasons)


def test_ok_when_fresh_copied_and_checked() -> None:
    verdict, reasons = judged(*healthy())
    assert (verdict, reasons) == ("ok", [])


def test_breached_when_the_newest_snapshot_is_older_than_the_rpo() -> None:
    runs, primary, offsite = healthy(snap_age=25 * HOUR, check_age=30 * HOUR)
    verdict, reasons = judged(runs, primary, offsite)
    assert verdict == "breached"
    assert ("breached", "primary: newest snapshot is 1 d 1 h old, over the RPO") in reasons


def test_breached_without_any_snapshot() -> None:
    verdict, reasons = judged([], [], None)
    assert verdict == "breached"
    assert reasons == [
        ("breached", "primary: holds no complete snapshot of the job"),
        ("unverified", "primary: never checked"),
    ]


def test_at_risk_when_the_rpo_is_exceeded_before_the_next_run_can_end() -> None:
    # 12 h old at 13:00; the next run is at 00:00 and may take 1 h: 12 h + 11 h + 1 h = 24 h
    # is still within the RPO; 12 h 1 min old is not.
    runs, primary, offsite = healthy(snap_age=12 * HOUR)
    assert judged(runs, primary, offsite)[0] == "ok"
    runs, primary, offsite = healthy(snap_age=12 * HOUR + timedelta(minutes=1))
    verdict, reasons = judged(runs, primary, offsite)
    assert verdict == "at-risk"
    assert reasons == [
        (
            "at-risk",
            "primary: newest snapshot will be 1 d 1 min old when the next run must end, "
            "over the RPO",
        )
    ]


def test_at_risk_when_a_copy_lacks_the_primarys_newest_snapshot() -> None:
    runs, primary, offsite = healthy()
    verdict, reasons = judged(runs, primary, offsite[:1])
    assert verdict == "at-risk"
    assert reasons == [
        ("at-risk", f"offsite: lacks the primary's newest snapshot {primary[-1].id[:8]}")
    ]


def test_at_risk_when_a_repository_cannot_be_read() -> None:
    runs, primary, _ = healthy()
    views = [
        view("primary", "primary", runs, primary),
        RepositoryView("offsite", "copy", "/srv/offsite", error="wrong password for 'offsite'"),
    ]
    status = judge(JOB, OBJECTIVES, views, NOW)
    assert status.verdict == "at-risk"
    assert status.reasons == (("at-risk", "offsite: cannot be read: wrong password for 'offsite'"),)
    assert status.repositories[1].error == "wrong password for 'offsite'"
    # An unreadable primary: at-risk, not breached (nothing shows the snapshots are gone).
    views[0] = RepositoryView("primary", "primary", "/srv/primary", error="unreachable")
    assert judge(JOB, OBJECTIVES, views, NOW).verdict == "at-risk"


def test_unverified_when_no_check_is_within_its_period_or_the_last_one_failed() -> None:
    runs, primary, offsite = healthy(check_age=8 * DAY)
    verdict, reasons = judged(runs, primary, offsite)
    assert verdict == "unverified"
    assert [r for _, r in reasons] == [
        "primary: last check is 7 d 23 h 58 min old",
        "offsite: last check is 7 d 23 h 58 min old",
    ]
    runs = [run(NOW - 2 * HOUR, check="failed")]
    verdict, reasons = judged(runs, primary, offsite)
    assert verdict == "unverified"
    assert ("unverified", "primary: last check ended failed") in reasons
    verdict, reasons = judged([run(NOW - 2 * HOUR)], primary, offsite)
    assert ("unverified", "offsite: never checked") in reasons


def test_precedence_breached_over_at_risk_over_unverified_over_ok() -> None:
    assert worst(["ok", "unverified", "at-risk", "breached"]) == "breached"
    assert worst(["unverified", "at-risk", "ok"]) == "at-risk"
    assert worst(["ok", "unverified"]) == "unverified"
    assert worst([]) == "ok"
    # at-risk (behind) and unverified (never checked) together: at-risk.
    runs, primary, offsite = healthy()
    runs = [r for r in runs if not r.steps_named("check")]
    verdict, reasons = judged(runs, primary, offsite[:1])
    assert verdict == "at-risk"
    assert {v for v, _ in reasons} == {"at-risk", "unverified"}


def drill(ended: datetime, *, result: str = "ok", rto_s: float = 600.0) -> RunRecord:
    """The record of a restore drill of the job (one ``drill`` step)."""
    started = ended - timedelta(seconds=rto_s + 60)
    return DrillResult(
        drill_id=secrets.token_hex(16),
        job=JOB,
        project="etc",
        drill_project="etc-drill",
        snapshot=secrets.token_hex(32),
        snapshot_time=started - HOUR,
        started=started,
        ended=ended,
        result=result,  # type: ignore[arg-type]
        error=None if result == "ok" else "probe db failed",
        rto_s=rto_s,
        rto_target_s=7200.0,
    ).to_run_record(host="h", program="stackvault 0.1.0", repository="primary", location="/r")


def test_never_drilled_is_a_figure_until_drills_are_scheduled() -> None:
    runs, primary, offsite = healthy()
    views = [view("primary", "primary", runs, primary), view("offsite", "copy", runs, offsite)]
    status = judge(JOB, OBJECTIVES, views, NOW)
    assert status.drill is None and status.verdict == "ok"
    doc = status_json(status)
    assert doc["drill"] is None and doc["drill_every_s"] is None
    scheduled = replace(OBJECTIVES, rto_s=7200, drill_every_s=7 * 86400)
    status = judge(JOB, scheduled, views, NOW)
    assert status.verdict == "unverified"
    assert ("unverified", "drill: never drilled") in status.reasons


def test_a_drill_is_judged_by_its_result_age_and_rto() -> None:
    runs, primary, offsite = healthy()
    scheduled = replace(OBJECTIVES, rto_s=7200, drill_every_s=7 * 86400)

    def judged_with(record: RunRecord) -> tuple[str, list[tuple[str, str]]]:
        views = [
            view("primary", "primary", [*runs, record], primary),
            view("offsite", "copy", runs, offsite),
        ]
        status = judge(JOB, scheduled, views, NOW)
        drills = [(v, t) for v, t in status.reasons if t.startswith("drill:")]
        return status.verdict, drills

    fresh = drill(NOW - DAY)
    assert judged_with(fresh) == ("ok", [])
    views = [
        view("primary", "primary", [*runs, fresh], primary),
        view("offsite", "copy", runs, offsite),
    ]
    status = judge(JOB, scheduled, views, NOW)
    assert status.drill is not None and status.drill.rto_s == 600.0 and status.drill.rto_met
    # a drill record is not a run of the job: the last run and the ratios ignore it
    assert status.last_run is not None and status.last_run.id == runs[-1].id
    assert status_json(status)["drill"]["result"] == "ok"  # type: ignore[index]
    assert judged_with(drill(NOW - 8 * DAY)) == (
        "unverified",
        [("unverified", "drill: last drill is 8 d old")],
    )
    assert judged_with(drill(NOW - DAY, result="failed")) == (
        "unverified",
        [("unverified", "drill: last drill ended failed: probe db failed")],
    )
    assert judged_with(drill(NOW - DAY, rto_s=3 * 3600)) == (
        "at-risk",
        [("at-risk", "drill: last drill restored in 3 h, over the RTO")],
    )


def test_count_ticks_of_a_schedule() -> None:
    twelve = parse_schedule("0 */12 * * *")
    assert count_ticks(twelve, NOW - 7 * DAY, NOW) == 14
    assert count_ticks(twelve, NOW, NOW) == 0
    # (start, end]: a tick at the start is not counted, one at the end is.
    midnight = datetime(2026, 6, 30, tzinfo=UTC)
    assert count_ticks(twelve, midnight, midnight + DAY) == 2
    assert count_ticks(parse_schedule("*/2 * * * *"), NOW - 30 * DAY, NOW) == 30 * 720
    weekdays = parse_schedule("0 2 * * 1-5")
    assert count_ticks(weekdays, midnight - 7 * DAY, midnight) == 5


def test_restore_points_against_the_schedule() -> None:
    # Daily runs at the 12:00 tick for 10 days (the job's first run ten days ago), the one of
    # 3 days ago failed and the copy of 2 days ago failed; a run recorded twice (a record in
    # each repository) counts once.
    runs = []
    for days in range(10, 0, -1):
        at = datetime(2026, 6, 30, 12, 0, tzinfo=UTC) - days * DAY
        runs.append(
            run(
                at,
                backup="failed" if days == 3 else "ok",
                copy=None if days == 3 else "failed" if days == 2 else "ok",
            )
        )
    runs.append(runs[-1])
    daily = Objectives(24 * 3600, 3600, 86400, parse_schedule("0 12 * * *"))
    week = restore_points(runs, "primary", "primary", daily, NOW, 7)
    # Ticks in (NOW - 7 d, NOW]: 06-24 12:00 … 06-30 12:00 = 7; runs in it: 06-24 … 06-29 = 6,
    # one failed.
    assert (week.created, week.expected) == (5, 7)
    assert week.ratio == 5 / 7
    month = restore_points(runs, "primary", "primary", daily, NOW, 30)
    # The period starts at the first run minus the window: 06-20 11:00; ticks 06-20 … 06-30.
    assert (month.created, month.expected) == (9, 11)
    copy = restore_points(runs, "offsite", "copy", daily, NOW, 30)
    assert copy.created == 8
    # More runs than ticks (manual runs): capped at 100 %.
    extra = [*runs, run(NOW - HOUR), run(NOW - 2 * HOUR), run(NOW - 3 * HOUR)]
    assert restore_points(extra, "primary", "primary", daily, NOW, 1).ratio == 1.0
    # No tick in the period yet (a job first run at 12:30, ticks at midnight): no ratio.
    nightly = Objectives(24 * 3600, 3600, 86400, parse_schedule("0 0 * * *"))
    young = [run(NOW - timedelta(minutes=30))]
    fresh = restore_points(young, "primary", "primary", nightly, NOW, 7)
    assert (fresh.created, fresh.expected, fresh.ratio) == (1, 0, None)
