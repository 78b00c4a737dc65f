"""The retention policy (policy layer): which snapshots `forget` keeps, and why. Pure logic.

Semantics follow restic's ``forget --keep-*`` (see `apply_policy`). Every decision carries
human-readable reasons so ``forget --dry-run`` can show why each snapshot stays or goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from stackvault.errors import UsageError
from stackvault.policy.duration import Duration

UNLIMITED = -1
"""A count meaning "every period" (restic's ``--keep-daily unlimited``)."""

GROUP_FIELDS = ("host", "paths", "tags")
"""The snapshot fields `group_snapshots` can group by."""

STACK_TAG = "stack:"
"""The tag of a stack snapshot, before its Compose project's name (as `stack backup` writes it
and `repo.selection.STACK_TAG` reads it)."""

GroupKey = tuple[str | tuple[str, ...], ...]
"""One value per ``group_by`` field: ``host`` is a str, ``paths`` and ``tags`` sorted tuples."""

NO_RULE_MATCHES = "matches no keep rule"

_EMPTY_POLICY = "no keep rule given; refusing to forget every snapshot (give --keep-* options)"


@dataclass(frozen=True)
class SnapshotRef:
    """What the policy needs to know of a snapshot. ``time`` must be timezone-aware."""

    id: str
    time: datetime
    host: str
    paths: tuple[str, ...] = ()
    tags: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        _require_aware(self.time, f"time of snapshot {self.id}")


@dataclass(frozen=True)
class RetentionPolicy:
    """The ``--keep-*`` options. Counts are ``>= 0`` or `UNLIMITED` (-1); 0 disables a rule.

    ``within`` keeps every snapshot newer than the duration before the newest snapshot;
    ``within_hourly`` ... ``within_yearly`` keep the newest snapshot of each period inside such a
    window; ``tags`` keeps every snapshot that has all tags of at least one of the sets.
    Invalid values raise `UsageError` (they come from the command line).
    """

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration | None = None
    within_hourly: Duration | None = None
    within_daily: Duration | None = None
    within_weekly: Duration | None = None
    within_monthly: Duration | None = None
    within_yearly: Duration | None = None
    tags: tuple[frozenset[str], ...] = ()

    def __post_init__(self) -> None:
        for name in ("last", *(period.name for period in _PERIODS)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < UNLIMITED:
                raise UsageError(
                    f"--keep-{name} must be a number >= 0 or 'unlimited', got {value!r}"
                )
        for name in ("within", *(f"within_{period.name}" for period in _PERIODS)):
            duration = getattr(self, name)
            # A zero window keeps nothing; taking it silently would make the option a no-op.
            if duration is not None and duration.is_zero():
                raise UsageError(f"--keep-{name.replace('_', '-')} must be longer than zero")
        for tag_set in self.tags:
            # An empty set is matched by every snapshot, so it would keep everything.
            if not tag_set:
                raise UsageError("--keep-tag needs at least one tag")

    def is_empty(self) -> bool:
        """True if no keep rule is given (every count 0, no duration, no tag set)."""
        return (
            all(count == 0 for count in self._counts())
            and all(duration is None for duration in self._durations())
            and not self.tags
        )

    def _counts(self) -> tuple[int, ...]:
        return (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)

    def _durations(self) -> tuple[Duration | None, ...]:
        return (
            self.within,
            self.within_hourly,
            self.within_daily,
            self.within_weekly,
            self.within_monthly,
            self.within_yearly,
        )


@dataclass(frozen=True)
class Decision:
    """Keep or remove one snapshot. ``reasons`` names every rule that keeps it, in rule order
    (last, hourly .. yearly, within, within-hourly .. within-yearly, tags); a removed snapshot
    has the single reason `NO_RULE_MATCHES`."""

    snapshot: SnapshotRef
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class _Period:
    """A calendar period a bucket rule keeps one snapshot of."""

    name: str
    key: Callable[[datetime], tuple[int, ...]]
    label: Callable[[datetime], str]


def _iso_week_key(t: datetime) -> tuple[int, ...]:
    iso = t.isocalendar()
    return (iso.year, iso.week)


def _iso_week_label(t: datetime) -> str:
    iso = t.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


# Periods are computed in each snapshot's own time zone (as restic does with the zone a snapshot
# was recorded in); convert the times beforehand to bucket in another zone.
_PERIODS: tuple[_Period, ...] = (
    _Period("hourly", lambda t: (t.year, t.month, t.day, t.hour), lambda t: f"{t:%Y-%m-%d %H}:00"),
    _Period("daily", lambda t: (t.year, t.month, t.day), lambda t: f"{t:%Y-%m-%d}"),
    _Period("weekly", _iso_week_key, _iso_week_label),
    _Period("monthly", lambda t: (t.year, t.month), lambda t: f"{t:%Y-%m}"),
    _Period("yearly", lambda t: (t.year,), lambda t: f"{t:%Y}"),
)


def _require_aware(t: datetime, what: str) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        # A naive time cannot be ordered against aware ones: a caller's bug, not user input.
        raise ValueError(f"{what} must be timezone-aware, got {t.isoformat()}")


def _newest_first(snapshots: Iterable[SnapshotRef]) -> list[SnapshotRef]:
    # Ties in time are broken by id so the result never depends on the input order. Two stable
    # sorts instead of a negated float timestamp: aware datetimes compare exactly, floats may not.
    by_id = sorted(snapshots, key=lambda s: s.id)
    return sorted(by_id, key=lambda s: s.time, reverse=True)


def _group_value(snapshot: SnapshotRef, name: str) -> str | tuple[str, ...]:
    if name == "host":
        return snapshot.host
    if name == "paths":
        # A stack snapshot's paths follow its plan; its stack is what stays: after a plan
        # edit the new snapshots are in the same group and the old ones expire.
        stacks = sorted(t for t in snapshot.tags if t.startswith(STACK_TAG))
        return tuple(stacks[:1]) if stacks else tuple(sorted(snapshot.paths))
    return tuple(sorted(snapshot.tags))


def group_snapshots(
    snapshots: Iterable[SnapshotRef], group_by: tuple[str, ...] = ("host", "paths")
) -> dict[GroupKey, list[SnapshotRef]]:
    """Split snapshots into the groups a policy is applied to separately.

    The key holds one value per ``group_by`` field, in that order: ``host`` as is, ``paths`` and
    ``tags`` as sorted tuples (so order and duplicates of paths do not split groups). The
    ``paths`` of a stack snapshot (one tagged ``stack:NAME``) are its stack, ``("stack:NAME",)``,
    whatever paths its plan named at the time. An empty
    ``group_by`` gives a single group with key ``()`` (none if there are no snapshots). Groups
    come in key order, each list newest first. Unknown fields raise `UsageError`.
    """
    for name in group_by:
        if name not in GROUP_FIELDS:
            raise UsageError(
                f"cannot group snapshots by {name!r}; expected any of {', '.join(GROUP_FIELDS)}"
            )
    groups: dict[GroupKey, list[SnapshotRef]] = {}
    for snapshot in _newest_first(snapshots):
        key = tuple(_group_value(snapshot, name) for name in group_by)
        groups.setdefault(key, []).append(snapshot)
    return dict(sorted(groups.items(), key=lambda item: item[0]))


def _window_start(anchor: datetime, duration: Duration) -> datetime | None:
    """The instant ``duration`` before ``anchor``, or None if that is before year 1 (no bound)."""
    try:
        return duration.subtract_from(anchor)
    except UsageError:
        return None


def _in_window(t: datetime, start: datetime | None) -> bool:
    # restic keeps a snapshot only if it is strictly after the window start.
    return start is None or t > start


def _keep_newest_per_period(
    ordered: Sequence[SnapshotRef],
    period: _Period,
    count: int,
    reason: Callable[[int, str, bool], str],
    reasons: list[list[str]],
) -> None:
    """Walk ``ordered`` (a newest-first prefix of the group whose ``reasons`` are given; index i
    of both is the same snapshot) and keep the newest snapshot of each period until ``count``
    periods are kept (`UNLIMITED`: all).

    Like restic, the oldest snapshot of the whole group is also kept if the rule still has room
    when it is reached, even though a newer snapshot of its period is kept already: with fewer
    periods than the count asked for, this keeps the longest history.
    ``reason(n, label, oldest)`` words the reason for the n-th keep of this rule.
    """
    oldest_index = len(reasons) - 1
    kept = 0
    previous: tuple[int, ...] | None = None
    for index, snapshot in enumerate(ordered):
        if count != UNLIMITED and kept >= count:
            return
        key = period.key(snapshot.time)
        new_period = key != previous
        if new_period or index == oldest_index:
            kept += 1
            label = period.label(snapshot.time)
            reasons[index].append(reason(kept, label, not new_period))
        previous = key


def apply_policy(
    snapshots: Sequence[SnapshotRef], policy: RetentionPolicy, now: datetime
) -> list[Decision]:
    """Decide, for ONE group of snapshots, which to keep; one `Decision` each, newest first.

    Semantics (restic's ``forget``): snapshots are sorted newest first (ties by id).

    * ``last`` N keeps the N newest snapshots.
    * ``hourly``/``daily``/``weekly``/``monthly``/``yearly`` N: walking newest to oldest, a
      snapshot is kept when its period (hour ``%Y-%m-%d %H``, date, ISO year+week, year+month,
      year) differs from the previous snapshot's, i.e. the newest snapshot of each period, until
      N periods are kept. Periods without snapshots do not count. If the rule still has room when
      the group's oldest snapshot is reached, that one is kept too (restic does the same).
    * ``within`` D keeps every snapshot strictly newer than the *anchor* minus D.
      ``within_hourly`` etc. apply the bucket walk above, without a count, to just those
      snapshots (again including the oldest snapshot if it is inside the window).
    * ``tags`` keeps every snapshot having all tags of at least one of the sets.

    A snapshot is kept if any rule keeps it. The anchor is the newest snapshot that is not after
    ``now`` -- restic measures from the latest snapshot, not from the current time, so that a
    stopped backup schedule does not age every snapshot out; ``now`` only stops a snapshot with
    a clock-skewed future time from becoming the anchor and pushing the window past the real
    snapshots. If every snapshot is in the future, the anchor is ``now``.

    Raises `UsageError` if the policy is empty: that guard refuses to remove every snapshot by
    accident. Raises ValueError if ``now`` is naive.
    """
    _require_aware(now, "now")
    if policy.is_empty():
        raise UsageError(_EMPTY_POLICY)
    ordered = _newest_first(snapshots)
    if not ordered:
        return []
    reasons: list[list[str]] = [[] for _ in ordered]

    if policy.last:
        # `last` is a bucket rule whose every snapshot is its own period.
        n = len(ordered) if policy.last == UNLIMITED else min(policy.last, len(ordered))
        for index in range(n):
            reasons[index].append(f"last snapshot #{index + 1}")

    for period in _PERIODS:
        count: int = getattr(policy, period.name)
        if count:
            _keep_newest_per_period(ordered, period, count, _count_reason(period.name), reasons)

    past = [s for s in ordered if s.time <= now]
    anchor, of = (past[0].time, "the newest snapshot") if past else (now, "now")

    if policy.within is not None:
        start = _window_start(anchor, policy.within)
        for index, snapshot in enumerate(ordered):
            if _in_window(snapshot.time, start):
                reasons[index].append(f"within {policy.within} of {of}")

    for period in _PERIODS:
        duration: Duration | None = getattr(policy, f"within_{period.name}")
        if duration is not None:
            start = _window_start(anchor, duration)
            # The window is a newest-first prefix: every later snapshot is older still.
            inside = [s for s in ordered if _in_window(s.time, start)]
            _keep_newest_per_period(
                inside,
                period,
                UNLIMITED,
                _within_reason(period.name, f"within {duration} of {of}"),
                reasons,
            )

    for index, snapshot in enumerate(ordered):
        for tag_set in policy.tags:
            if tag_set <= snapshot.tags:
                reasons[index].append(f"has tags {{{', '.join(sorted(tag_set))}}}")

    return [
        Decision(snapshot, keep=bool(why), reasons=tuple(why) or (NO_RULE_MATCHES,))
        for snapshot, why in zip(ordered, reasons, strict=True)
    ]


def _count_reason(name: str) -> Callable[[int, str, bool], str]:
    def reason(n: int, label: str, oldest: bool) -> str:
        extra = "; the oldest snapshot, kept as the rule has room left" if oldest else ""
        return f"{name} snapshot #{n} ({label}{extra})"

    return reason


def _within_reason(name: str, window: str) -> Callable[[int, str, bool], str]:
    def reason(n: int, label: str, oldest: bool) -> str:
        extra = "; the oldest snapshot" if oldest else ""
        return f"{name} snapshot {window} ({label}{extra})"

    return reason


def decide(
    snapshots: Iterable[SnapshotRef],
    policy: RetentionPolicy,
    group_by: tuple[str, ...],
    now: datetime,
) -> list[tuple[GroupKey, list[Decision]]]:
    """Group the snapshots (`group_snapshots`) and apply the policy to each group
    (`apply_policy`). Groups in key order. The empty-policy guard fires even with no snapshots,
    so a mistaken command line fails the same way on every repository."""
    if policy.is_empty():
        raise UsageError(_EMPTY_POLICY)
    return [
        (key, apply_policy(group, policy, now))
        for key, group in group_snapshots(snapshots, group_by).items()
    ]
