"""Policies: the built-in tiers, overrides key by key, extends, derived values, provenance."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stackvault.config import Config, load_config
from stackvault.config.durations import Span, parse_span
from stackvault.config.schedule import STEPS, derive_schedule, parse_schedule
from stackvault.errors import ConfigError, UsageError
from stackvault.policy.duration import Duration
from stackvault.policy.retention import UNLIMITED, RetentionPolicy

REPOS = """\
repositories:
  primary:
    url: /srv/backup
    password_file: /etc/stackvault/password
  offsite:
    url: s3://bucket/stack?region=eu-west-1
    password_env: OFFSITE_PASSWORD
    storage_class: glacier_ir
"""


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "stackvault.yaml"
    path.write_text(REPOS + textwrap.dedent(text))
    return load_config(str(path))


@pytest.mark.parametrize(
    ("tier", "rpo", "rto", "cron", "window"),
    [
        ("tier1", "5min", "30min", "*/2 * * * *", "3min"),
        ("tier2", "2h", "2h", "0 * * * *", "1h"),
        ("tier3", "24h", "8h", "0 */12 * * *", "12h"),
    ],
)
def test_the_built_in_tiers(
    tmp_path: Path, tier: str, rpo: str, rto: str, cron: str, window: str
) -> None:
    config = load(
        tmp_path,
        f"jobs:\n  web: {{paths: [/srv], policy: {tier}, repository: primary}}\n",
    )
    job = config.job("web")
    assert (str(job.rpo.value), job.rpo.source) == (rpo, f"built-in {tier}")
    assert (str(job.rto.value), job.rto.source) == (rto, f"built-in {tier}")
    assert (job.schedule.value.cron, job.schedule.source) == (cron, "derived from rpo")
    assert (str(job.window.value), job.window.source) == (window, "derived from rpo and schedule")
    # the derived schedule and window meet the RPO
    assert job.schedule.value.longest_gap + job.window.value.seconds <= job.rpo.value.seconds
    assert job.retention["primary"].source == f"built-in {tier}, retention.default"
    assert job.check.every.source == f"built-in {tier}"
    assert job.check.read_data_subset.value is not None
    assert config.warnings == ()


def test_a_file_overrides_a_tier_key_by_key_and_a_policy_extends_it(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        policies:
          tier2:
            rto: 1h
            check: {read_data_subset: none}
          nightly:
            extends: tier2
            rpo: 1d
            window: 2h
            retention:
              offsite: {keep-daily: 7, keep-monthly: unlimited}
        jobs:
          web:
            paths: [/srv]
            policy: nightly
            repository: primary
            copies: [offsite]
            schedule: "30 1,13 * * *"
            hooks:
              before: ["docker", "compose", "stop", "worker"]
              on_failure: "echo failed | mail root"
          other:
            paths: [/etc]
            policy: tier2
            repository: primary
        """,
    )
    web = config.job("web")
    assert (str(web.rpo.value), web.rpo.source) == ("1d", "policy nightly")
    assert (str(web.rto.value), web.rto.source) == ("1h", "policy tier2")
    assert (web.schedule.value.cron, web.schedule.source) == ("30 1,13 * * *", "job web")
    assert (str(web.window.value), web.window.source) == ("2h", "policy nightly")
    assert web.retention["primary"].source == "built-in tier2, retention.default"
    assert web.retention["offsite"].source == "policy nightly"
    assert web.retention["offsite"].value.policy() == RetentionPolicy(daily=7, monthly=UNLIMITED)
    assert (web.check.every.source, web.check.read_data_subset.source) == (
        "built-in tier2",
        "policy tier2",
    )
    assert web.check.read_data_subset.value is None
    assert web.hooks.before == ("docker", "compose", "stop", "worker")
    assert web.hooks.on_failure == ("sh", "-c", "echo failed | mail root")
    assert web.hooks.after is None
    assert [r.name for r in web.repositories] == ["primary", "offsite"]
    offsite = web.copies[0]
    assert offsite.storage_class == "GLACIER_IR"
    assert offsite.location == "s3://bucket/stack?region=eu-west-1&storage-class=GLACIER_IR"
    other = config.job("other")
    assert (str(other.rto.value), other.rto.source) == ("1h", "policy tier2")
    assert (str(other.rpo.value), other.rpo.source) == ("2h", "built-in tier2")
    assert config.policies == ("tier1", "tier2", "tier3", "nightly")
    doc = web.to_dict()
    assert doc["rto"] == {"value": "1h", "source": "policy tier2"}
    assert doc["schedule"] == {
        "value": "30 1,13 * * *",
        "source": "job web",
        "longest_gap_seconds": 12 * 3600,
    }


def test_a_changed_rpo_changes_the_derived_schedule(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        policies:
          fast: {extends: tier3, rpo: 30min}
        jobs:
          web: {paths: [/srv], policy: fast, repository: primary}
        """,
    )
    job = config.job("web")
    assert (job.schedule.value.cron, job.schedule.source) == ("*/15 * * * *", "derived from rpo")
    assert str(job.window.value) == "15min"


def test_a_window_that_can_miss_the_rpo_is_a_warning(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        jobs:
          web:
            paths: [/srv]
            policy: tier2
            repository: primary
            window: 90min
        """,
    )
    (warning,) = config.warnings
    assert warning.endswith(
        ":14: jobs.web.window: a run every 1h that may take 90min can leave the newest "
        "restore point older than the rpo 2h"
    )


def test_a_policy_of_its_own_needs_retention_for_each_repository(tmp_path: Path) -> None:
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        REPOS
        + textwrap.dedent(
            """\
            policies:
              mine:
                rpo: 1h
                rto: 1h
                retention:
                  primary: {keep-last: 10}
            jobs:
              web: {paths: [/srv], policy: mine, repository: primary, copies: [offsite]}
            """
        )
    )
    with pytest.raises(
        ConfigError, match=r"jobs\.web\.policy: no retention for repository .offsite."
    ):
        load_config(str(path))


def test_the_config_path_follows_the_option_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stackvault.config import DEFAULT_PATH, config_path

    monkeypatch.delenv("STACKVAULT_CONFIG", raising=False)
    assert config_path(None) == DEFAULT_PATH == "/etc/stackvault/stackvault.yaml"
    monkeypatch.setenv("STACKVAULT_CONFIG", "/srv/sv.yaml")
    assert config_path(None) == "/srv/sv.yaml"
    assert config_path("/x.yaml") == "/x.yaml"


# --- durations and schedules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds", "shown"),
    [
        ("5min", 300, "5min"),
        ("1h30min", 5400, "1h30min"),
        ("2h", 7200, "2h"),
        ("2w", 14 * 86400, "14d"),
        ("1m", 30 * 86400, "1m"),
    ],
)
def test_durations_add_minutes_to_the_policy_notation(text: str, seconds: int, shown: str) -> None:
    span = parse_span(text)
    assert (span.seconds, str(span)) == (seconds, shown)


@pytest.mark.parametrize("text", ["0min", "0h", "5", "5mins", "min", "30min1h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_span(text)


@pytest.mark.parametrize(
    ("rpo", "cron"),
    [
        (Span(None, 1), "* * * * *"),
        (Span(None, 5), "*/2 * * * *"),
        (Span(None, 20), "*/10 * * * *"),
        (Span(Duration(hours=1)), "*/30 * * * *"),
        (Span(Duration(hours=5)), "0 */2 * * *"),
        (Span(Duration(days=1)), "0 */12 * * *"),
        (Span(Duration(days=7)), "0 2 * * *"),
    ],
)
def test_the_derived_schedule_is_the_largest_step_within_half_the_rpo(rpo: Span, cron: str) -> None:
    schedule = derive_schedule(rpo)
    assert schedule.cron == cron
    assert parse_schedule(cron).longest_gap == schedule.longest_gap
    assert schedule.longest_gap <= max(rpo.seconds // 2, STEPS[0][0])


def test_schedules_are_checked_by_croniter_and_measured() -> None:
    assert parse_schedule("0 2 * * 1-5").longest_gap == 3 * 86400
    assert parse_schedule("@hourly").longest_gap == 3600
    for bad in ("61 * * * *", "* * * *", "0 0 * * * *", "every day"):
        with pytest.raises(UsageError, match="five fields"):
            parse_schedule(bad)


def test_the_next_run_of_a_schedule() -> None:
    from datetime import UTC, datetime

    schedule = parse_schedule("30 1,13 * * *")
    assert schedule.next_run(datetime(2026, 12, 6, 1, 30, tzinfo=UTC)) == datetime(
        2026, 12, 6, 13, 30, tzinfo=UTC
    )
    with pytest.raises(ValueError):
        schedule.next_run(datetime(2026, 12, 6))


def test_retention_rules_become_the_forget_policy(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        jobs:
          web:
            paths: [/srv]
            policy: tier3
            repository: primary
            retention:
              primary:
                keep-within: 2w
                keep-within-hourly: 2d
                keep-last: 3
                keep-yearly: unlimited
                keep-tag: ["keep,forever", "release"]
        """,
    )
    retention = config.job("web").retention["primary"]
    assert retention.source == "job web"
    assert retention.value.rules == {
        "keep-within": "14d",
        "keep-within-hourly": "2d",
        "keep-last": "3",
        "keep-yearly": "unlimited",
        "keep-tag": "keep,forever release",
    }
    assert retention.value.policy() == RetentionPolicy(
        last=3,
        yearly=UNLIMITED,
        within=Duration(days=14),
        within_hourly=Duration(days=2),
        tags=(frozenset({"keep", "forever"}), frozenset({"release"})),
    )


def test_drills_come_from_the_policy_or_the_job_and_need_a_stack(tmp_path: Path) -> None:
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        REPOS
        + textwrap.dedent(
            """\
            policies:
              drilled: {extends: tier2, drill: {every: 7d, snapshot: random-within=30d}}
            jobs:
              dify: {stack_plan: plan.yaml, policy: drilled, repository: primary}
              quick:
                stack_plan: plan.yaml
                policy: tier2
                repository: primary
                drill: {every: 1d, window: 45min}
              web: {paths: [/srv], policy: tier3, repository: primary}
            """
        )
    )
    config = load_config(str(path), check_files=False)
    dify = config.job("dify").drill
    assert dify.every is not None and (str(dify.every.value), dify.every.source) == (
        "7d",
        "policy drilled",
    )
    assert (dify.snapshot.value, dify.snapshot.source) == ("random-within=30d", "policy drilled")
    assert (str(dify.window.value), dify.window.source) == ("2h", "the rto (built-in tier2)")
    quick = config.job("quick").drill
    assert (quick.snapshot.value, quick.snapshot.source) == ("latest", "default")
    assert (str(quick.window.value), quick.window.source) == ("45min", "job quick")
    assert config.job("web").drill.every is None  # no tier schedules drills
    assert config.job("dify").to_dict()["drill"] == {
        "every": {"value": "7d", "source": "policy drilled"},
        "snapshot": {"value": "random-within=30d", "source": "policy drilled"},
        "window": {"value": "2h", "source": "the rto (built-in tier2)"},
    }


def test_drills_of_database_and_path_jobs_are_scheduled(tmp_path: Path) -> None:
    path = tmp_path / "stackvault.yaml"
    path.write_text(
        REPOS
        + "jobs:\n"
        + "  db: {sources: ['postgres://u@127.0.0.1/app', 'mysql://127.0.0.1/shop'], "
        + "policy: tier3, repository: primary, drill: {every: 7d}}\n"
        + "  web: {paths: [/srv], policy: tier3, repository: primary, drill: {every: 1d}}\n"
    )
    config = load_config(str(path), check_files=False)
    for name, every in (("db", "7d"), ("web", "1d")):
        drill = config.job(name).drill
        assert drill.every is not None and str(drill.every.value) == every


@pytest.mark.parametrize(
    ("job", "wanted"),
    [
        (
            "cache: {sources: ['redis://127.0.0.1:6379'], policy: tier3, repository: primary, "
            "drill: {every: 7d}}",
            "jobs.cache.drill: drill.every (job cache) asks for restore drills, which restore "
            "a stack, or PostgreSQL and MySQL sources and paths, not redis://127.0.0.1:6379: "
            "give this job a stack_plan, or leave drills out",
        ),
        (
            "dify: {stack_plan: p.yaml, policy: tier3, repository: primary, "
            "drill: {snapshot: oldest}}",
            "jobs.dify.drill.snapshot: must be latest or random-within=DURATION",
        ),
    ],
)
def test_drill_mistakes_are_named(tmp_path: Path, job: str, wanted: str) -> None:
    path = tmp_path / "stackvault.yaml"
    path.write_text(REPOS + "jobs:\n  " + job + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), check_files=False)
    assert wanted in str(caught.value), str(caught.value)
