"""Unit tests for the retention policy (`stackvault.policy.retention`), policy layer.

Expected keeps are worked out by hand in each test from the calendar (which snapshot is the last
of its day/week/month), not by re-running the algorithm.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from stackvault.errors import EXIT_USAGE, UsageError
from stackvault.policy.duration import Duration, parse_duration
from stackvault.policy.retention import (
    NO_RULE_MATCHES,
    UNLIMITED,
    Decision,
    RetentionPolicy,
    SnapshotRef,
    apply_policy,
    decide,
    group_snapshots,
)

FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
"""A `now` after every test snapshot, for tests where `now` plays no part."""


def snap(
    when: datetime,
    *,
    host: str = "web1",
    paths: tuple[str, ...] = ("/srv",),
    tags: Iterable[str] = (),
    id: str | None = None,
) -> SnapshotRef:
    return SnapshotRef(
        id=id or f"{host}-{when:%Y%m%dT%H%M}",
        time=when,
        host=host,
        paths=paths,
        tags=frozenset(tags),
    )


def series(start: datetime, step: timedelta, count: int, **kwargs: object) -> list[SnapshotRef]:
    return [snap(start + i * step, **kwargs) for i in range(count)]  # type: ignore[arg-type]


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def kept_times(decisions: Sequence[Decision]) -> list[datetime]:
    return [d.snapshot.time for d in decisions if d.keep]


def reasons_at(decisions: Sequence[Decision], when: datetime) -> tuple[str, ...]:
    (decision,) = [d for d in decisions if d.snapshot.time == when]
    return decision.reasons


def every_6h_for_60_days() -> list[SnapshotRef]:
    # 2026-01-01 00:00 .. 2026-03-01 18:00 UTC: 240 snapshots, 4 a day at 00, 06, 12, 18.
    return series(at(2026, 1, 1), timedelta(hours=6), 60 * 4)


# --- the empty-policy guard and validation ---------------------------------------------------


def test_empty_policy_is_refused() -> None:
    with pytest.raises(UsageError) as info:
        apply_policy(every_6h_for_60_days(), RetentionPolicy(), FAR_FUTURE)
    assert str(info.value) == (
        "no keep rule given; refusing to forget every snapshot (give --keep-* options)"
    )
    assert info.value.exit_code == EXIT_USAGE


def test_empty_policy_is_refused_even_without_snapshots() -> None:
    with pytest.raises(UsageError, match="no keep rule given"):
        apply_policy([], RetentionPolicy(), FAR_FUTURE)
    with pytest.raises(UsageError, match="no keep rule given"):
        decide([], RetentionPolicy(), ("host",), FAR_FUTURE)


@pytest.mark.parametrize(
    "policy",
    [
        RetentionPolicy(last=1),
        RetentionPolicy(hourly=UNLIMITED),
        RetentionPolicy(yearly=2),
        RetentionPolicy(within=Duration(hours=1)),
        RetentionPolicy(within_weekly=Duration(days=1)),
        RetentionPolicy(tags=(frozenset({"prod"}),)),
    ],
)
def test_any_single_rule_makes_the_policy_non_empty(policy: RetentionPolicy) -> None:
    assert not policy.is_empty()


def test_is_empty() -> None:
    assert RetentionPolicy().is_empty()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"daily": -2}, "--keep-daily must be a number >= 0 or 'unlimited', got -2"),
        ({"last": -5}, "--keep-last must be"),
        ({"within": Duration()}, "--keep-within must be longer than zero"),
        ({"within_monthly": Duration()}, "--keep-within-monthly must be longer than zero"),
        ({"tags": (frozenset({"a"}), frozenset())}, "--keep-tag needs at least one tag"),
    ],
)
def test_invalid_policy_values_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as info:
        RetentionPolicy(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SnapshotRef(id="a", time=datetime(2026, 1, 1), host="h", paths=(), tags=frozenset())
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        apply_policy([snap(at(2026, 1, 1))], RetentionPolicy(last=1), datetime(2026, 1, 2))


# --- general shape of the result -------------------------------------------------------------


def test_no_snapshots_gives_no_decisions() -> None:
    assert apply_policy([], RetentionPolicy(last=3), FAR_FUTURE) == []


def test_one_decision_per_snapshot_newest_first_whatever_the_input_order() -> None:
    snapshots = every_6h_for_60_days()
    shuffled = list(snapshots)
    random.Random(7).shuffle(shuffled)
    decisions = apply_policy(shuffled, RetentionPolicy(daily=7), FAR_FUTURE)
    assert [d.snapshot for d in decisions] == snapshots[::-1]
    assert decisions == apply_policy(snapshots, RetentionPolicy(daily=7), FAR_FUTURE)


def test_equal_times_are_ordered_by_id() -> None:
    when = at(2026, 1, 1)
    snapshots = [snap(when, id=name) for name in ("c", "a", "b")]
    decisions = apply_policy(snapshots, RetentionPolicy(last=1), FAR_FUTURE)
    assert [d.snapshot.id for d in decisions] == ["a", "b", "c"]
    assert [d.keep for d in decisions] == [True, False, False]


def test_removed_snapshots_say_no_rule_matches() -> None:
    decisions = apply_policy(every_6h_for_60_days(), RetentionPolicy(last=1), FAR_FUTURE)
    assert decisions[0].keep
    for decision in decisions[1:]:
        assert not decision.keep
        assert decision.reasons == (NO_RULE_MATCHES,) == ("matches no keep rule",)


# --- last ------------------------------------------------------------------------------------


def test_keep_last_keeps_the_n_newest() -> None:
    decisions = apply_policy(every_6h_for_60_days(), RetentionPolicy(last=3), FAR_FUTURE)
    assert kept_times(decisions) == [at(2026, 3, 1, 18), at(2026, 3, 1, 12), at(2026, 3, 1, 6)]
    assert [d.reasons for d in decisions[:3]] == [
        ("last snapshot #1",),
        ("last snapshot #2",),
        ("last snapshot #3",),
    ]


@pytest.mark.parametrize("count", [UNLIMITED, 5, 100])
def test_keep_last_beyond_the_count_of_snapshots_keeps_all(count: int) -> None:
    snapshots = series(at(2026, 1, 1), timedelta(days=1), 5)
    decisions = apply_policy(snapshots, RetentionPolicy(last=count), FAR_FUTURE)
    assert all(d.keep for d in decisions)
    assert decisions[-1].reasons == ("last snapshot #5",)


# --- hourly / daily --------------------------------------------------------------------------


def test_keep_daily_keeps_the_last_snapshot_of_each_of_the_newest_days() -> None:
    decisions = apply_policy(every_6h_for_60_days(), RetentionPolicy(daily=7), FAR_FUTURE)
    # The newest day is 2026-03-01; the seven newest days are Feb 23 .. Mar 1 (Feb has 28 days),
    # and the last snapshot of each of them is the one at 18:00.
    expected_days = [date(2026, 3, 1)] + [date(2026, 2, d) for d in range(28, 22, -1)]
    assert kept_times(decisions) == [at(d.year, d.month, d.day, 18) for d in expected_days]
    assert reasons_at(decisions, at(2026, 3, 1, 18)) == ("daily snapshot #1 (2026-03-01)",)
    assert reasons_at(decisions, at(2026, 2, 26, 18)) == ("daily snapshot #4 (2026-02-26)",)
    assert reasons_at(decisions, at(2026, 2, 23, 18)) == ("daily snapshot #7 (2026-02-23)",)
    assert reasons_at(decisions, at(2026, 2, 23, 12)) == (NO_RULE_MATCHES,)


def test_keep_daily_skips_days_without_snapshots() -> None:
    # Irregular: several snapshots on some days, none on others.
    times = [
        at(2026, 4, 10, 23, 59),
        at(2026, 4, 10, 0, 0),
        at(2026, 4, 7, 15),
        at(2026, 4, 7, 9),
        at(2026, 4, 1, 12),
        at(2026, 3, 31, 23),
        at(2026, 3, 31, 1),
    ]
    decisions = apply_policy([snap(t) for t in times], RetentionPolicy(daily=3), FAR_FUTURE)
    # The three newest days *with snapshots* are Apr 10, Apr 7 and Apr 1.
    assert kept_times(decisions) == [
        at(2026, 4, 10, 23, 59),
        at(2026, 4, 7, 15),
        at(2026, 4, 1, 12),
    ]


def test_keep_hourly() -> None:
    # Every 20 minutes from 09:00 to 13:40: three snapshots in each of the hours 09 .. 13.
    snapshots = series(at(2026, 6, 1, 9), timedelta(minutes=20), 15)
    decisions = apply_policy(snapshots, RetentionPolicy(hourly=3), FAR_FUTURE)
    assert kept_times(decisions) == [
        at(2026, 6, 1, 13, 40),
        at(2026, 6, 1, 12, 40),
        at(2026, 6, 1, 11, 40),
    ]
    assert reasons_at(decisions, at(2026, 6, 1, 12, 40)) == (
        "hourly snapshot #2 (2026-06-01 12:00)",
    )


def test_a_rule_with_room_left_also_keeps_the_oldest_snapshot() -> None:
    # restic: "If there are not enough snapshots to keep one for each duration related
    # --keep-{within-,}* option, the oldest snapshot in the group is kept additionally."
    snapshots = series(at(2026, 1, 1), timedelta(hours=6), 3 * 4)  # Jan 1 .. Jan 3, 4 a day
    decisions = apply_policy(snapshots, RetentionPolicy(daily=10), FAR_FUTURE)
    assert kept_times(decisions) == [
        at(2026, 1, 3, 18),
        at(2026, 1, 2, 18),
        at(2026, 1, 1, 18),
        at(2026, 1, 1, 0),  # the oldest, although Jan 1 already has a kept snapshot
    ]
    assert reasons_at(decisions, at(2026, 1, 1, 0)) == (
        "daily snapshot #4 (2026-01-01; the oldest snapshot, kept as the rule has room left)",
    )


def test_the_oldest_snapshot_is_not_kept_once_the_count_is_used_up() -> None:
    snapshots = series(at(2026, 1, 1), timedelta(hours=6), 3 * 4)
    decisions = apply_policy(snapshots, RetentionPolicy(daily=3), FAR_FUTURE)
    assert kept_times(decisions) == [at(2026, 1, 3, 18), at(2026, 1, 2, 18), at(2026, 1, 1, 18)]


def test_daily_periods_are_taken_in_each_snapshots_own_time_zone() -> None:
    new_york = timezone(timedelta(hours=-5))
    # Both are on 2026-01-02 in UTC (04:30 and 06:00), but on two different local days.
    late = datetime(2026, 1, 1, 23, 30, tzinfo=new_york)
    early = datetime(2026, 1, 2, 1, 0, tzinfo=new_york)
    decisions = apply_policy([snap(late), snap(early)], RetentionPolicy(daily=2), FAR_FUTURE)
    assert [d.reasons for d in decisions] == [
        ("daily snapshot #1 (2026-01-02)",),
        ("daily snapshot #2 (2026-01-01)",),
    ]


# --- weekly / monthly / yearly ---------------------------------------------------------------


def daily_noon_dec20_to_jan10() -> list[SnapshotRef]:
    return series(at(2025, 12, 20, 12), timedelta(days=1), 22)  # last: 2026-01-10 12:00


def test_keep_weekly_uses_iso_weeks_across_the_year_boundary() -> None:
    decisions = apply_policy(daily_noon_dec20_to_jan10(), RetentionPolicy(weekly=3), FAR_FUTURE)
    # ISO weeks: Mon 2025-12-29 .. Sun 2026-01-04 is week 1 of 2026, so Dec 31 2025 is not the
    # last of its week; Jan 4 is. Before it: 2025-W52 (Dec 22 .. Dec 28); after: 2026-W02.
    assert kept_times(decisions) == [at(2026, 1, 10, 12), at(2026, 1, 4, 12), at(2025, 12, 28, 12)]
    assert [d.reasons for d in decisions if d.keep] == [
        ("weekly snapshot #1 (2026-W02)",),
        ("weekly snapshot #2 (2026-W01)",),
        ("weekly snapshot #3 (2025-W52)",),
    ]


def test_keep_yearly_splits_at_new_year_unlike_iso_weeks() -> None:
    decisions = apply_policy(daily_noon_dec20_to_jan10(), RetentionPolicy(yearly=2), FAR_FUTURE)
    assert kept_times(decisions) == [at(2026, 1, 10, 12), at(2025, 12, 31, 12)]
    assert reasons_at(decisions, at(2025, 12, 31, 12)) == ("yearly snapshot #2 (2025)",)


def test_keep_monthly_unlimited_keeps_every_months_last_and_the_oldest() -> None:
    # On the 1st and the 15th of each month, January .. June 2026.
    times = [at(2026, m, d, 3) for m in range(1, 7) for d in (1, 15)]
    decisions = apply_policy(
        [snap(t) for t in times], RetentionPolicy(monthly=UNLIMITED), FAR_FUTURE
    )
    # The 15th is the last of each month. An unlimited rule always has room left, so the oldest
    # snapshot (Jan 1) is kept too, as restic does.
    assert kept_times(decisions) == [at(2026, m, 15, 3) for m in range(6, 0, -1)] + [
        at(2026, 1, 1, 3)
    ]
    assert reasons_at(decisions, at(2026, 3, 15, 3)) == ("monthly snapshot #4 (2026-03)",)


def test_keep_monthly_counts_only_months_with_snapshots() -> None:
    times = [at(2026, 5, 20), at(2026, 5, 2), at(2026, 2, 27), at(2026, 2, 3), at(2026, 1, 9)]
    decisions = apply_policy([snap(t) for t in times], RetentionPolicy(monthly=2), FAR_FUTURE)
    assert kept_times(decisions) == [at(2026, 5, 20), at(2026, 2, 27)]


# --- combined rules --------------------------------------------------------------------------


def test_combined_rules_keep_the_union_and_name_every_rule() -> None:
    # Daily at 02:00 from Thu 2026-01-01 to Tue 2026-02-10.
    snapshots = series(at(2026, 1, 1, 2), timedelta(days=1), 41)
    assert snapshots[-1].time == at(2026, 2, 10, 2)
    policy = RetentionPolicy(last=2, daily=5, weekly=2, monthly=2)
    decisions = apply_policy(snapshots, policy, FAR_FUTURE)
    # last 2: Feb 10, 9. daily 5: Feb 10 .. 6. weekly 2: Feb 10 (2026-W07, Mon Feb 9 ..) and
    # Sun Feb 8 (last of W06). monthly 2: Feb 10 and Jan 31.
    assert [(d.snapshot.time, d.reasons) for d in decisions if d.keep] == [
        (
            at(2026, 2, 10, 2),
            (
                "last snapshot #1",
                "daily snapshot #1 (2026-02-10)",
                "weekly snapshot #1 (2026-W07)",
                "monthly snapshot #1 (2026-02)",
            ),
        ),
        (at(2026, 2, 9, 2), ("last snapshot #2", "daily snapshot #2 (2026-02-09)")),
        (at(2026, 2, 8, 2), ("daily snapshot #3 (2026-02-08)", "weekly snapshot #2 (2026-W06)")),
        (at(2026, 2, 7, 2), ("daily snapshot #4 (2026-02-07)",)),
        (at(2026, 2, 6, 2), ("daily snapshot #5 (2026-02-06)",)),
        (at(2026, 1, 31, 2), ("monthly snapshot #2 (2026-01)",)),
    ]
    assert sum(not d.keep for d in decisions) == 41 - 6


# --- within ----------------------------------------------------------------------------------


def daily_noon_jan1_to_jan20() -> list[SnapshotRef]:
    return series(at(2026, 1, 1, 12), timedelta(days=1), 20)


def test_keep_within_is_measured_from_the_newest_snapshot_not_from_now() -> None:
    # Backups stopped on Jan 20; forget runs months later. Measured from now, nothing would be
    # within 7 days; measured from the newest snapshot, the last week is kept.
    now = at(2026, 6, 1)
    decisions = apply_policy(
        daily_noon_jan1_to_jan20(), RetentionPolicy(within=Duration(days=7)), now
    )
    # Newest: Jan 20 12:00, so the window starts Jan 13 12:00 and keeps what is strictly newer.
    assert kept_times(decisions) == [at(2026, 1, d, 12) for d in range(20, 13, -1)]
    assert reasons_at(decisions, at(2026, 1, 14, 12)) == ("within 7d of the newest snapshot",)
    assert reasons_at(decisions, at(2026, 1, 13, 12)) == (NO_RULE_MATCHES,)  # exactly 7d: out


def test_keep_within_months_uses_calendar_months() -> None:
    times = [
        at(2026, 3, 31),
        at(2026, 3, 1),
        at(2026, 2, 28, 0, 1),
        at(2026, 2, 28),
        at(2026, 2, 27),
    ]
    decisions = apply_policy(
        [snap(t) for t in times], RetentionPolicy(within=parse_duration("1m")), FAR_FUTURE
    )
    # Mar 31 - 1m = Feb 28 00:00 (clamped); strictly newer than that is kept.
    assert kept_times(decisions) == times[:3]


def test_a_snapshot_from_the_future_does_not_anchor_the_window() -> None:
    # A host with a clock a year fast made one snapshot. Anchored on it, "within 7d" would drop
    # every real snapshot; the anchor is the newest snapshot not after `now` (as in restic).
    skewed = snap(at(2027, 1, 20, 12), id="skewed")
    now = at(2026, 1, 21)
    decisions = apply_policy(
        [*daily_noon_jan1_to_jan20(), skewed], RetentionPolicy(within=Duration(days=7)), now
    )
    assert kept_times(decisions) == [at(2027, 1, 20, 12)] + [
        at(2026, 1, d, 12) for d in range(20, 13, -1)
    ]


def test_when_every_snapshot_is_in_the_future_the_window_is_measured_from_now() -> None:
    decisions = apply_policy(
        daily_noon_jan1_to_jan20(), RetentionPolicy(within=Duration(days=7)), at(2025, 12, 1)
    )
    assert all(d.keep for d in decisions)
    assert decisions[0].reasons == ("within 7d of now",)


def test_keep_within_daily_keeps_the_last_of_each_day_inside_the_window() -> None:
    snapshots = series(at(2026, 1, 1), timedelta(hours=6), 10 * 4)  # Jan 1 00:00 .. Jan 10 18:00
    decisions = apply_policy(snapshots, RetentionPolicy(within_daily=Duration(days=3)), FAR_FUTURE)
    # Window: strictly after Jan 7 18:00, i.e. Jan 8 00:00 .. Jan 10 18:00: days Jan 8, 9, 10.
    assert kept_times(decisions) == [at(2026, 1, 10, 18), at(2026, 1, 9, 18), at(2026, 1, 8, 18)]
    assert reasons_at(decisions, at(2026, 1, 9, 18)) == (
        "daily snapshot within 3d of the newest snapshot (2026-01-09)",
    )


def test_keep_within_daily_keeps_the_oldest_when_the_window_covers_the_group() -> None:
    snapshots = series(at(2026, 1, 1), timedelta(hours=6), 2 * 4)  # Jan 1 and Jan 2
    decisions = apply_policy(snapshots, RetentionPolicy(within_daily=Duration(years=1)), FAR_FUTURE)
    assert kept_times(decisions) == [at(2026, 1, 2, 18), at(2026, 1, 1, 18), at(2026, 1, 1, 0)]
    assert decisions[-1].reasons == (
        "daily snapshot within 1y of the newest snapshot (2026-01-01; the oldest snapshot)",
    )


def test_keep_within_weekly_and_monthly() -> None:
    snapshots = daily_noon_dec20_to_jan10()  # newest: Sat 2026-01-10 12:00
    policy = RetentionPolicy(within_weekly=Duration(days=14), within_monthly=Duration(days=14))
    decisions = apply_policy(snapshots, policy, FAR_FUTURE)
    # Window: strictly after Sat 2025-12-27 12:00, so Dec 28 .. Jan 10. Weeks: W02 -> Jan 10,
    # W01 -> Jan 4, W52 -> Dec 28. Months: 2026-01 -> Jan 10, 2025-12 -> Dec 31.
    assert [(d.snapshot.time, d.reasons) for d in decisions if d.keep] == [
        (
            at(2026, 1, 10, 12),
            (
                "weekly snapshot within 14d of the newest snapshot (2026-W02)",
                "monthly snapshot within 14d of the newest snapshot (2026-01)",
            ),
        ),
        (at(2026, 1, 4, 12), ("weekly snapshot within 14d of the newest snapshot (2026-W01)",)),
        (at(2025, 12, 31, 12), ("monthly snapshot within 14d of the newest snapshot (2025-12)",)),
        (at(2025, 12, 28, 12), ("weekly snapshot within 14d of the newest snapshot (2025-W52)",)),
    ]


def test_a_window_reaching_before_year_one_covers_everything() -> None:
    snapshots = daily_noon_jan1_to_jan20()
    decisions = apply_policy(snapshots, RetentionPolicy(within=Duration(years=5000)), FAR_FUTURE)
    assert all(d.keep for d in decisions)


# --- tags ------------------------------------------------------------------------------------


def test_keep_tag_needs_all_tags_of_one_set() -> None:
    base = at(2026, 1, 1)
    snapshots = [
        snap(base + timedelta(hours=5), tags={"prod"}),
        snap(base + timedelta(hours=4), tags={"a"}),
        snap(base + timedelta(hours=3), tags={"a", "b", "c"}),
        snap(base + timedelta(hours=2), tags={"b"}),
        snap(base + timedelta(hours=1), tags={"prod", "a", "b"}),
        snap(base, tags=()),
    ]
    policy = RetentionPolicy(tags=(frozenset({"prod"}), frozenset({"b", "a"})))
    decisions = apply_policy(snapshots, policy, FAR_FUTURE)
    assert [d.reasons for d in decisions] == [
        ("has tags {prod}",),
        (NO_RULE_MATCHES,),
        ("has tags {a, b}",),
        (NO_RULE_MATCHES,),
        ("has tags {prod}", "has tags {a, b}"),
        (NO_RULE_MATCHES,),
    ]


def test_tags_combine_with_bucket_rules() -> None:
    snapshots = series(at(2026, 1, 1), timedelta(days=1), 10)
    tagged = snap(at(2026, 1, 3, 5), tags={"before-upgrade"})
    decisions = apply_policy(
        [*snapshots, tagged],
        RetentionPolicy(daily=2, tags=(frozenset({"before-upgrade"}),)),
        FAR_FUTURE,
    )
    assert kept_times(decisions) == [at(2026, 1, 10), at(2026, 1, 9), at(2026, 1, 3, 5)]


# --- grouping --------------------------------------------------------------------------------


def test_group_by_host_and_paths_is_the_default() -> None:
    a1 = snap(at(2026, 1, 1), host="a", paths=("/x", "/y"))
    a2 = snap(at(2026, 1, 2), host="a", paths=("/y", "/x"))  # same paths, other order
    a3 = snap(at(2026, 1, 3), host="a", paths=("/x",))
    b1 = snap(at(2026, 1, 4), host="b", paths=("/x",))
    groups = group_snapshots([a1, b1, a3, a2])
    assert groups == {
        ("a", ("/x",)): [a3],
        ("a", ("/x", "/y")): [a2, a1],
        ("b", ("/x",)): [b1],
    }
    assert list(groups) == sorted(groups)


def test_group_by_tags_and_by_nothing() -> None:
    s1 = snap(at(2026, 1, 1), host="a", tags={"z", "y"})
    s2 = snap(at(2026, 1, 2), host="b", tags={"y", "z"})
    s3 = snap(at(2026, 1, 3), host="a")
    assert group_snapshots([s1, s2, s3], ("tags",)) == {((),): [s3], (("y", "z"),): [s2, s1]}
    assert group_snapshots([s1, s2, s3], ()) == {(): [s3, s2, s1]}
    assert group_snapshots([], ()) == {}


def test_unknown_group_field_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot group snapshots by 'hostname'"):
        group_snapshots([], ("hostname",))


def test_decide_applies_the_policy_to_each_host_separately() -> None:
    web = series(at(2026, 1, 1), timedelta(days=1), 5, host="web")  # Jan 1 .. Jan 5
    db = series(at(2026, 3, 1), timedelta(days=1), 3, host="db")  # Mar 1 .. Mar 3
    result = decide(
        [*web, *db], RetentionPolicy(last=2, within=Duration(days=1)), ("host",), FAR_FUTURE
    )
    assert [key for key, _ in result] == [("db",), ("web",)]
    by_host = dict(result)
    # Each group keeps its own two newest; "within" is measured from the group's own newest.
    assert kept_times(by_host[("db",)]) == [at(2026, 3, 3), at(2026, 3, 2)]
    assert kept_times(by_host[("web",)]) == [at(2026, 1, 5), at(2026, 1, 4)]
    assert by_host[("web",)][0].reasons == ("last snapshot #1", "within 1d of the newest snapshot")
    assert by_host[("web",)][1].reasons == ("last snapshot #2",)  # exactly 1d older: outside


# --- invariants over seeded random series ----------------------------------------------------


def random_series(rng: random.Random) -> list[SnapshotRef]:
    # Irregular: gaps from minutes to weeks, over up to a few years.
    when = at(2024, 1, 1)
    out = []
    for i in range(rng.randint(1, 150)):
        when += timedelta(
            minutes=rng.choice([1, 17, 60, 6 * 60, 24 * 60, 3 * 24 * 60, 30 * 24 * 60])
        )
        out.append(snap(when, id=f"s{i:03d}", tags=rng.sample(["a", "b", "c"], rng.randint(0, 2))))
    return out


def random_policy(rng: random.Random) -> RetentionPolicy:
    def count() -> int:
        return rng.choice([0, 0, 0, 1, 2, 3, 7, UNLIMITED])

    def window() -> Duration | None:
        return rng.choice(
            [None, None, None, Duration(days=3), Duration(months=2), Duration(hours=5)]
        )

    policy = RetentionPolicy(
        last=count(),
        hourly=count(),
        daily=count(),
        weekly=count(),
        monthly=count(),
        yearly=count(),
        within=window(),
        within_daily=window(),
        within_weekly=window(),
        tags=rng.choice([(), (frozenset({"a"}),), (frozenset({"a", "b"}), frozenset({"c"}))]),
    )
    return policy if not policy.is_empty() else RetentionPolicy(last=1)


@pytest.mark.parametrize("seed", range(60))
def test_invariants(seed: int) -> None:
    rng = random.Random(seed)
    snapshots = random_series(rng)
    policy = random_policy(rng)
    decisions = apply_policy(snapshots, policy, FAR_FUTURE)
    kept = {d.snapshot.id for d in decisions if d.keep}

    # Every snapshot has exactly one decision, and kept ones have a real reason.
    assert sorted(d.snapshot.id for d in decisions) == sorted(s.id for s in snapshots)
    for d in decisions:
        assert d.reasons and (d.keep == (d.reasons != (NO_RULE_MATCHES,)))

    # The newest snapshot is always kept by any count or window rule.
    if policy.last or policy.daily or policy.within is not None:
        assert decisions[0].keep
    # last N keeps the N newest.
    newest = [d.snapshot.id for d in decisions]
    n = len(newest) if policy.last == UNLIMITED else policy.last
    assert set(newest[:n]) <= kept
    # A daily rule keeps at most one snapshot per day, plus possibly the oldest.
    daily_days = [
        d.snapshot.time.date()
        for d in decisions
        if any(r.startswith("daily snapshot #") for r in d.reasons)
    ]
    assert len(daily_days) - len(set(daily_days)) <= 1

    # Idempotent: forgetting again with the same policy removes nothing more.
    kept_snapshots = [d.snapshot for d in decisions if d.keep]
    again = apply_policy(kept_snapshots, policy, FAR_FUTURE)
    assert all(d.keep for d in again)


@pytest.mark.parametrize("seed", range(20))
def test_a_larger_count_never_keeps_less(seed: int) -> None:
    rng = random.Random(1000 + seed)
    snapshots = random_series(rng)
    for name in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        previous: set[str] = set()
        for count in range(1, 12):
            decisions = apply_policy(snapshots, RetentionPolicy(**{name: count}), FAR_FUTURE)  # type: ignore[arg-type]
            kept = {d.snapshot.id for d in decisions if d.keep}
            assert previous <= kept, (name, count)
            previous = kept


def test_a_stack_snapshot_is_grouped_by_its_stack_not_its_paths() -> None:
    old = snap(at(2026, 1, 1), host="a", paths=("/srv/dify",), tags={"stack:dify", "x"})
    new = snap(at(2026, 1, 2), host="a", paths=("/srv/dify", "/data"), tags={"stack:dify"})
    other = snap(at(2026, 1, 3), host="a", paths=("/srv/dify",))
    assert group_snapshots([old, new, other]) == {
        ("a", ("/srv/dify",)): [other],
        ("a", ("stack:dify",)): [new, old],
    }
