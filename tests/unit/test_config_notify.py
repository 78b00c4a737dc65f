"""The ``notify:`` section and a job's ping URL in the configuration file: what they resolve
to, that URLs are taken by reference only and read when asked, and every mistake named by
key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackvault.config import load_config
from stackvault.config.notify import DEFAULT_EVENTS
from stackvault.config.render import InitialJob, render_initial
from stackvault.errors import ConfigError

HEAD = """\
repositories:
  primary: {url: /srv/backup, password_env: PW}
jobs:
  dify:
    paths: [/etc]
    policy: tier2
    repository: primary
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "stackvault.yaml"
    path.write_text(HEAD + text)
    return str(path)


def problems(path: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, check_files=False)
    return str(caught.value).splitlines()[1:]


def test_the_section_and_the_ping_url_resolve(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "    ping_url_env: HC_DIFY\n"
        "notify:\n"
        "  targets:\n"
        "    ops-slack: {url_env: SLACK_URL, events: [failure, partial, recovered, rpo-breach]}\n"
        "    mail: {url_file: /etc/stackvault/mail-url, events: [failure, recovered, digest]}\n"
        "    all:\n"
        "      url_command: pass show apprise/ntfy\n"
        "  remind_every: 12h\n"
        '  digest: "30 7 * * *"\n'
        "  state_dir: /var/lib/stackvault\n",
    )
    config = load_config(path, check_files=False)
    assert config.notify.to_dict() == {
        "targets": [
            {
                "name": "ops-slack",
                "url": "environment variable SLACK_URL",
                "events": ["failure", "partial", "recovered", "rpo-breach"],
            },
            {
                "name": "mail",
                "url": "file /etc/stackvault/mail-url",
                "events": ["failure", "recovered", "digest"],
            },
            {
                "name": "all",
                "url": "command pass show apprise/ntfy",
                "events": list(DEFAULT_EVENTS),
            },
        ],
        "remind_every": "12h",
        "digest": "30 7 * * *",
        "state_dir": "/var/lib/stackvault",
    }
    assert "digest" not in DEFAULT_EVENTS and "failure" in DEFAULT_EVENTS
    assert config.notify.remind_every.seconds == 12 * 3600
    job = config.job("dify")
    assert job.ping is not None and job.ping.env == "HC_DIFY"
    assert job.to_dict()["ping"] == "environment variable HC_DIFY"


def test_left_out_there_are_no_targets_and_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), check_files=False)
    assert config.notify.targets == ()
    assert str(config.notify.remind_every) == "6h"
    assert config.notify.digest.cron == "0 8 * * *"
    assert config.notify.state_dir is None
    assert config.job("dify").ping is None
    assert config.job("dify").ping_url() is None


def test_urls_are_read_when_asked_from_env_file_or_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "url").write_text("mailto://u:pw@mail.example\nignored\n")
    path = write(
        tmp_path,
        "    ping_url_command: [printf, 'https://hc-ping.com/abc\\n']\n"
        "notify:\n"
        "  targets:\n"
        "    env: {url_env: STACKVAULT_TEST_URL}\n"
        f"    file: {{url_file: {tmp_path / 'url'}}}\n"
        f"    missing: {{url_file: {tmp_path / 'nothing'}}}\n"
        "    failing: {url_command: 'exit 3'}\n",
    )
    config = load_config(path, check_files=False)  # nothing is read by loading
    env, file, missing, failing = config.notify.targets
    monkeypatch.setenv("STACKVAULT_TEST_URL", "json://127.0.0.1:9/x")
    assert env.url() == "json://127.0.0.1:9/x"
    assert file.url() == "mailto://u:pw@mail.example"
    assert config.job("dify").ping_url() == "https://hc-ping.com/abc"
    with pytest.raises(ConfigError) as caught:
        missing.url()
    assert str(caught.value) == (
        f"notify target missing: cannot read the URL file {tmp_path / 'nothing'}: No such file "
        "or directory; check url_file in the configuration"
    )
    with pytest.raises(ConfigError) as caught:
        failing.url()
    assert str(caught.value) == (
        "notify target failing: the URL command exit 3 exited with status 3; run it by hand "
        "to see why"
    )
    monkeypatch.setenv("STACKVAULT_TEST_URL", "")
    with pytest.raises(ConfigError) as caught:
        env.url()
    assert str(caught.value) == (
        "notify target env: the URL from environment variable STACKVAULT_TEST_URL is empty; "
        "put the URL there, or name another source in the configuration"
    )


def test_every_mistake_is_named_by_key_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "    ping_url: https://hc-ping.com/abc\n"  # line 8
        "notify:\n"
        "  targets:\n"
        "    ops-slack:\n"
        "      url: slack://T1/B2/C3\n"  # 12
        "    mail:\n"
        "      url_file: /etc/stackvault/mail-url\n"
        "      events:\n"
        "        - failure\n"
        "        - failur\n"  # 17
        "        - sometimes\n"  # 18
        "    two: {url_env: A, url_file: B}\n"  # 19
        "    none: {events: [digest]}\n"  # 20
        "    scalar: {url_env: A, events: failure}\n"  # 21
        "  remind: 6h\n"  # 22
        "  remind_every: 0h\n"  # 23
        '  digest: "every day"\n'  # 24
        "notifi: {}\n",  # 25
    )
    events = "failure, partial, recovered, rpo-breach, at-risk, check-failure, drill-failure"
    events += ", lease-takeover, digest"
    assert problems(path) == [
        f"{path}:8: jobs.dify.ping_url: an inline URL is not accepted (notification URLs hold "
        "credentials): give ping_url_env (an environment variable), ping_url_file (a file "
        "holding it) or ping_url_command (a command printing it)",
        f"{path}:12: notify.targets.ops-slack.url: an inline URL is not accepted (notification "
        "URLs hold credentials): give url_env (an environment variable), url_file (a file "
        "holding it) or url_command (a command printing it)",
        f"{path}:17: notify.targets.mail.events[1]: unknown event 'failur'; did you mean "
        "'failure'?",
        f"{path}:18: notify.targets.mail.events[2]: unknown event 'sometimes' (known: {events})",
        f"{path}:19: notify.targets.two: needs exactly one of url_file, url_env, url_command "
        "(given: url_file and url_env)",
        f"{path}:20: notify.targets.none: needs exactly one of url_file, url_env, url_command "
        "(given: none)",
        f"{path}:21: notify.targets.scalar.events: must be a list of events, some of: {events}",
        f"{path}:22: notify.remind: unknown key 'remind'; did you mean 'remind_every'?",
        f"{path}:23: notify.remind_every: a duration must be longer than zero, got '0h'",
        f"{path}:24: notify.digest: must be a cron expression of five fields (minute hour "
        "day month weekday), e.g. '*/15 * * * *' or '0 2 * * *', got 'every day'",
        f"{path}:25: notifi: unknown key 'notifi'; did you mean 'notify'?",
    ]


def test_two_ping_references_and_a_section_that_is_no_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "    ping_url_env: A\n    ping_url_file: /b\nnotify: [x]\n")
    assert problems(path) == [
        f"{path}:4: jobs.dify: needs at most one of ping_url_file, ping_url_env, "
        "ping_url_command (given: ping_url_file and ping_url_env)",
        f"{path}:10: notify: must be a mapping",
    ]


def test_the_commented_example_of_config_init_is_valid_once_uncommented(tmp_path: Path) -> None:
    text = render_initial(InitialJob(name="etc", repository="/srv/backup", paths=("/etc",)))
    lines = text.splitlines()
    start = lines.index("# notify:")
    example = [line[2:] for line in lines[start:] if line.startswith("# ") or line == "#"]
    ping = next(line for line in lines if "# ping_url_env:" in line)
    lines[lines.index(ping)] = ping.replace("# ", "", 1)
    path = tmp_path / "stackvault.yaml"
    path.write_text("\n".join(lines[:start] + example) + "\n")
    config = load_config(str(path), check_files=False)
    assert [t.name for t in config.notify.targets] == ["ops"]
    assert config.notify.targets[0].events == ("failure", "partial", "recovered")
    assert config.job("etc").ping is not None


def test_the_state_directory_is_absolute(tmp_path: Path) -> None:
    path = write(tmp_path, "notify:\n  state_dir: var/lib/stackvault\n")
    assert problems(path) == [f"{path}:9: notify.state_dir: must be an absolute directory path"]
