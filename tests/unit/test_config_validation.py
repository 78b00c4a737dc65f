"""The configuration file's checks: every problem at once, each by line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stackvault.config import load_config
from stackvault.errors import EXIT_ERROR, ConfigError

GOOD_REPO = """\
repositories:
  primary:
    url: /srv/backup
    password_file: /etc/stackvault/password
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    """The lines of the ConfigError the file ``text`` raises (after its count line)."""
    path = tmp_path / "stackvault.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.exit_code == EXIT_ERROR
    first, *lines = str(info.value).splitlines()
    assert first == f"{path}: {len(lines)} problem{'s' if len(lines) > 1 else ''}:"
    prefix = f"{path}:"
    assert all(line.startswith(prefix) for line in lines)
    return [line[len(prefix) :] for line in lines]


def job(extra: str = "", policy: str = "tier2") -> str:
    return (
        GOOD_REPO
        + textwrap.dedent(
            f"""\
        jobs:
          web:
            paths: [/srv/www]
            policy: {policy}
            repository: primary
        """
        )
        + textwrap.indent(textwrap.dedent(extra), "    ")
    )


def test_an_unknown_policy_is_named_by_line_and_key_with_the_known_ones(tmp_path: Path) -> None:
    text = (
        GOOD_REPO
        + "policies:\n  nightly:\n    extends: tier3\n"
        + job(policy="tier4")[len(GOOD_REPO) :]
    )
    assert problems(tmp_path, text) == [
        "11: jobs.web.policy: unknown policy 'tier4' (known: tier1, tier2, tier3, nightly)"
    ]


def test_an_inline_password_is_refused_with_the_three_references(tmp_path: Path) -> None:
    text = """\
    repositories:
      primary:
        url: /srv/backup
        password: hunter2
    jobs:
      web: {paths: [/srv], policy: tier3, repository: primary}
    """
    (line,) = problems(tmp_path, text)
    assert line.startswith("4: repositories.primary.password: an inline password is not accepted")
    for reference in ("password_file", "password_env", "password_command"):
        assert reference in line
    assert "hunter2" not in line


@pytest.mark.parametrize(
    ("keys", "given"),
    [
        ("", "none"),
        ("    password_file: /a\n    password_env: PW\n", "password_file and password_env"),
    ],
)
def test_a_repository_needs_exactly_one_password_reference(
    tmp_path: Path, keys: str, given: str
) -> None:
    text = (
        "repositories:\n  primary:\n    url: /srv/backup\n"
        + keys
        + "jobs:\n  web: {paths: [/srv], policy: tier3, repository: primary}\n"
    )
    assert problems(tmp_path, text) == [
        "2: repositories.primary: needs exactly one of password_file, password_env, "
        f"password_command (given: {given})"
    ]


def test_unknown_keys_are_errors_with_a_did_you_mean(tmp_path: Path) -> None:
    text = GOOD_REPO + textwrap.dedent(
        """\
        polices: {}
        jobs:
          web:
            paths: [/srv/www]
            policy: tier2
            repositry: primary
            hooks: {befor: "true"}
            retention:
              primary: {keep-dayly: 3}
        """
    )
    assert problems(tmp_path, text) == [
        "5: polices: unknown key 'polices'; did you mean 'policies'?",
        "7: jobs.web.repository: is required",
        "10: jobs.web.repositry: unknown key 'repositry'; did you mean 'repository'?",
        "11: jobs.web.hooks.befor: unknown key 'befor'; did you mean 'before'?",
        "13: jobs.web.retention.primary.keep-dayly: unknown key 'keep-dayly'; "
        "did you mean 'keep-daily'?",
    ]


def test_every_value_is_checked_and_all_problems_come_at_once(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        repositories:
          primary:
            url: relative/dir
            password_env: PW
          local:
            url: /srv/other
            password_env: PW
            storage_class: STANDARD_IA
          cold:
            url: s3://bucket/x
            password_env: PW
            storage_class: COLDEST
        policies:
          mine:
            rpo: 0h
            rto: soon
            schedule: "61 * * * *"
            window: 5
            check: {every: 1d, read_data_subset: 3/2}
            retention:
              default: {keep-last: -1, keep-within: 2x}
        jobs:
          web:
            paths: [/srv]
            policy: tier3
            repository: local
            hooks: {before: []}
        """
    )
    assert problems(tmp_path, text) == [
        "3: repositories.primary.url: must be an absolute path (or file:///path, or "
        "s3://bucket/prefix)",
        "8: repositories.local.storage_class: applies to S3 repositories only; remove it for a "
        "local path",
        "12: repositories.cold.storage_class: must be one of STANDARD, STANDARD_IA, ONEZONE_IA, "
        "INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE, REDUCED_REDUNDANCY",
        "15: policies.mine.rpo: a duration must be longer than zero, got '0h'",
        "16: policies.mine.rto: must be a duration like 5min, 2h, 1h30min, 7d, 2w or 1y2m "
        "(m = months, min = minutes), got 'soon'",
        "17: policies.mine.schedule: must be a cron expression of five fields (minute hour day "
        "month weekday), e.g. '*/15 * * * *' or '0 2 * * *', got '61 * * * *'",
        "18: policies.mine.window: must be a duration like 5min, 2h or 7d (as a string)",
        "19: policies.mine.check.read_data_subset: must be a share of the packs like 1/7 or 10% "
        "(at most all), or none",
        "21: policies.mine.retention.default.keep-within: must be a duration like 7d, 2w, 6m or "
        "1y2m (y=years, m=months, w=weeks, d=days, h=hours), got '2x'",
        "21: policies.mine.retention.default.keep-last: must be a whole number >= 0 or 'unlimited'",
        "27: jobs.web.hooks.before: must be a command: a string (run by sh -c) or a list of "
        "arguments",
    ]


def test_cross_references_are_checked(tmp_path: Path) -> None:
    text = GOOD_REPO + textwrap.dedent(
        """\
          offsite:
            url: s3://bucket/stack
            password_env: OFFSITE_PASSWORD
          spare:
            url: /srv/spare
            password_env: SPARE_PASSWORD
        policies:
          nightly:
            extends: tier9
          mine:
            extends: tier3
            retention:
              spare: {keep-last: 3}
              nowhere: {keep-last: 3}
          a: {extends: b}
          b: {extends: a}
        jobs:
          web:
            paths: [/srv/www]
            policy: mine
            repository: primary
            copies: [offsite, primary, offsite, elsewhere]
            retention:
              spare: {keep-last: 1}
        """
    )
    assert problems(tmp_path, text) == [
        "13: policies.nightly.extends: unknown policy 'tier9' (known: tier1, tier2, tier3, "
        "nightly, mine, a, b)",
        "17: policies.mine.retention.spare: no job of policy mine uses repository 'spare'",
        "18: policies.mine.retention.nowhere: unknown repository 'nowhere' (known: primary, "
        "offsite, spare)",
        "19: policies.a.extends: extends itself through a loop",
        "20: policies.b.extends: extends itself through a loop",
        "26: jobs.web.copies[1]: 'primary' is the job's repository; a copy must be another one",
        "26: jobs.web.copies[2]: 'offsite' is listed twice",
        "26: jobs.web.copies[3]: unknown repository 'elsewhere' (known: primary, offsite, spare)",
        "28: jobs.web.retention.spare: repository 'spare' is not one this job uses (primary, "
        "offsite, elsewhere)",
    ]


def test_a_schedule_slower_than_the_rpo_is_an_error(tmp_path: Path) -> None:
    text = job('schedule: "0 2 * * 1-5"\n', policy="tier3")
    assert problems(tmp_path, text) == [
        "10: jobs.web.schedule: '0 2 * * 1-5' leaves up to 3d between runs, more than the rpo "
        "24h: remove it to derive one, or run more often"
    ]


def test_a_policy_without_objectives_is_named(tmp_path: Path) -> None:
    text = GOOD_REPO + "policies:\n  mine:\n    rpo: 1h\n" + job(policy="mine")[len(GOOD_REPO) :]
    assert problems(tmp_path, text) == [
        "6: policies.mine: gives no rto: set rto, or extends: a policy that has one "
        "(tier1, tier2, tier3)"
    ]


def test_a_job_needs_something_to_protect_and_the_file_a_job(tmp_path: Path) -> None:
    text = GOOD_REPO + "jobs:\n  web: {policy: tier2, repository: primary}\n"
    assert problems(tmp_path, text) == [
        "6: jobs.web: protects nothing: give stack_plan, sources or paths"
    ]
    assert problems(tmp_path, GOOD_REPO) == ["1: jobs: defines no job: add one under jobs"]


def test_sources_paths_and_the_stack_plan_are_checked(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text("version: 1\nproject: ''\npreset: generic\n")
    text = job(
        """\
        stack_plan: plan.yaml
        sources: ["nosuch://db", "postgres://db.example/app"]
        """
    ).replace("[/srv/www]", "[srv/www]")
    found = problems(tmp_path, text)
    assert found[0] == "7: jobs.web.paths[0]: 'srv/www' must be an absolute path"
    assert found[1].startswith(f"10: jobs.web.stack_plan: {tmp_path}/plan.yaml: project")
    assert found[2].startswith("11: jobs.web.sources[0]: unknown source scheme 'nosuch'")
    assert len(found) == 3


def test_an_s3_archive_class_is_refused_as_the_url_option_is(tmp_path: Path) -> None:
    text = (
        GOOD_REPO.replace("url: /srv/backup", "url: s3://bucket/x\n    storage_class: deep_archive")
        + job()[len(GOOD_REPO) :]
    )
    (line,) = problems(tmp_path, text)
    assert line.startswith("4: repositories.primary.storage_class: bad value for S3 option")
    assert "DEEP_ARCHIVE objects must be restored by hand" in line
    text = text.replace("url: s3://bucket/x", "url: s3://bucket/x?storage-class=GLACIER_IR")
    text = text.replace("deep_archive", "standard_ia")
    assert problems(tmp_path, text) == [
        "4: repositories.primary.storage_class: is given twice: here and as the URL's "
        "storage-class option; keep one"
    ]


def test_keys_given_twice_and_yaml_errors_are_named_by_line(tmp_path: Path) -> None:
    text = job("policy: tier1\n")
    assert problems(tmp_path, text) == [
        "10: jobs.web.policy: policy is given twice in this mapping"
    ]
    path = tmp_path / "broken.yaml"
    path.write_text("jobs:\n  web: [\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: not valid YAML: "):
        load_config(str(path))


def test_a_missing_file_says_how_to_write_one(tmp_path: Path) -> None:
    missing = tmp_path / "none.yaml"
    with pytest.raises(ConfigError, match="stackvault config init --output"):
        load_config(str(missing))


def test_a_stack_plan_given_as_the_configuration_says_where_it_belongs(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("version: 1\nproject: dify\npreset: dify\nconsistency: strict\n")
    with pytest.raises(ConfigError, match=r"is a stack plan .*name it in a job's stack_plan"):
        load_config(str(path))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("stack_plan", "''", "must be a non-empty string"),
        ("sources", "{a: 1}", "must be a list of non-empty strings"),
        ("copies", "[[x]]", "must be a list of non-empty strings"),
        ("schedule", "'@never'", "must be a cron expression of five fields"),
        ("window", "'-1h'", "must be a duration like 5min"),
        ("check", "{every: 1, read_data_subset: 1/7}", "must be a duration like 5min, 2h or 7d"),
        ("check", "{read_data_subset: 0%}", "must be a share of the packs"),
        ("check", "{often: 1d}", "unknown key 'often' (known: every, read_data_subset)"),
        ("retention", "{primary: {}}", "gives no keep rule"),
        ("retention", "{primary: {keep-tag: [1]}}", "must be a list of non-empty strings"),
        ("hooks", "{after: ''}", "must be a command"),
        ("hooks", "{on_failure: [ls, 2]}", "must be a command"),
        ("hooks", "{on-failure: x}", "did you mean 'on_failure'?"),
        ("hooks", "[x]", "must be a mapping"),
    ],
)
def test_each_job_key_is_checked(tmp_path: Path, key: str, value: str, message: str) -> None:
    (line,) = problems(tmp_path, job(f"{key}: {value}\n"))
    where, _, said = line.partition(": ")
    assert where == "10"
    assert said.startswith(f"jobs.web.{key}")
    assert message in said
