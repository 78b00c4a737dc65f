"""When a run is told of (ops/notify/dedup.py, pure) and what a message may show
(ops/notify/messages.py `scrub`, ops/notify/delivery.py `url_secrets`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stackvault.ops.notify.dedup import Decision, Outcome, StateData, decide, remember
from stackvault.ops.notify.delivery import url_secrets
from stackvault.ops.notify.messages import scrub
from stackvault.records.run import RunResult

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
SIX_HOURS = 6 * 3600.0


def outcome(n: int, result: RunResult, minutes: float) -> Outcome:
    started = T0 + timedelta(minutes=minutes)
    return Outcome(f"{n:032x}", result, started, started + timedelta(minutes=5))


def decisions(results: list[tuple[RunResult, float]]) -> list[str | None]:
    """Each run's decision given the ones before it (``kind`` or None)."""
    runs = [outcome(i, r, m) for i, (r, m) in enumerate(results)]
    out: list[str | None] = []
    for i, run in enumerate(runs):
        found = decide(run, runs[:i], SIX_HOURS)
        out.append(found.kind if found else None)
    return out


def test_a_streak_is_told_once_reminded_every_interval_and_its_end_once() -> None:
    assert decisions(
        [
            ("ok", 0),
            ("failed", 60),
            ("failed", 120),
            ("failed", 180),
            ("failed", 60 + 355),  # ends 6 h after the first failure ended, less 5 min
            ("failed", 60 + 365),  # ends 6 h 10 min after it: a reminder
            ("failed", 60 + 600),
            ("failed", 60 + 725),  # 12 h 10 min: the second reminder
            ("ok", 60 + 800),
            ("ok", 60 + 860),
        ]
    ) == [None, "first", None, None, None, "reminder", None, "reminder", "recovered", None]


def test_a_change_of_result_is_news_and_interrupted_runs_do_not_count() -> None:
    assert decisions(
        [
            ("partial", 0),
            ("interrupted", 30),
            ("partial", 60),
            ("failed", 120),
            ("interrupted", 150),
            ("failed", 180),
            ("partial", 240),
            ("ok", 300),
        ]
    ) == ["first", None, None, "first", None, None, "first", "recovered"]


def test_the_decision_names_the_streak() -> None:
    runs = [outcome(i, "failed", 60 * i) for i in range(7)]
    assert decide(runs[6], runs[:6], SIX_HOURS) == Decision("reminder", runs[0].started, 7)
    ok = outcome(9, "ok", 60 * 8)
    # the past may come in any order, twice (records of several repositories), with itself
    assert decide(ok, [*runs[::-1], *runs, ok], SIX_HOURS) == Decision(
        "recovered", runs[0].started, 7
    )
    assert decide(outcome(1, "failed", 0), [], SIX_HOURS) == Decision("first", T0, 1)


def test_the_state_keeps_the_newest_outcomes_and_reads_back() -> None:
    data = StateData()
    for i in range(30):
        remember(data, "dify", outcome(i, "failed", i))
    remember(data, "dify", outcome(29, "ok", 29))  # the same run again: replaced
    kept = data.jobs["dify"].outcomes
    assert len(kept) == 20 and kept[-1].result == "ok" and kept[0].run_id == f"{10:032x}"
    data.digest = T0
    data.jobs["dify"].events["rpo-breach"] = T0
    assert StateData.from_json(data.to_json()) == data


def test_scrub_hides_credentials_in_free_text() -> None:
    secret = "Sup3r-S3cret"
    text = (
        f"pg_dump: error: connection to postgres://backup:{secret}@db:5432/app failed "
        f"(PGPASSWORD={secret}, s3 endpoint http://AKIAIOSFODNN7EXAMPLE:{secret}@minio:9000), "
        f"mysql -u root:{secret}@db; token={secret}&page=2; see /var/log/app.log"
    )
    out = scrub(text)
    assert secret not in out
    assert "postgres://***@db:5432/app" in out
    assert "PGPASSWORD=***" in out
    assert "http://***@minio:9000" in out
    assert "token=***" in out and "page=2" in out
    assert "see /var/log/app.log" in out
    assert scrub("a plain sentence: 3 of 4 packs read") == "a plain sentence: 3 of 4 packs read"
    assert scrub(f"HTTP 401 (Authorization: Bearer {secret}xyz)") == (
        "HTTP 401 (Authorization: Bearer ***)"
    )
    assert scrub("the key abcd1234efgh was refused", ["abcd1234efgh"]) == "the key *** was refused"


def test_the_parts_of_a_target_url_that_may_be_credentials() -> None:
    found = set(url_secrets("slack://T1ABC2/B3DEF4/xoxb1234567890abcdef?footer=no"))
    assert {"T1ABC2", "B3DEF4", "xoxb1234567890abcdef"} <= found
    assert "footer" not in found and "no" not in found and "slack:" not in found
    found = set(url_secrets("mailto://mailer:pw%21x@127.0.0.1:2525/hook?to=ops@example.com"))
    assert {"mailer", "pw%21x", "pw!x", "ops@example.com"} <= found
    assert "hook" not in found and "127.0.0.1" not in found and "2525" not in found
