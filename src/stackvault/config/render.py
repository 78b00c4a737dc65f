"""A starting configuration file (config layer), written by ``config init``.

`render_initial` writes the file text from what ``config init`` was given: one job, its
primary repository (named ``primary``) and copies (``copy1``, ``copy2`` ...), a password file
for all of them, a policy and perhaps a schedule; comments say what each part is and show the
keys left out (hooks, a ping URL, notifications). Values are written as JSON strings, which
YAML reads as they are.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from stackvault.config.repository import is_local

DEFAULT_PASSWORD_FILE = "/etc/stackvault/password"


@dataclass(frozen=True)
class InitialJob:
    """What ``config init`` was given. Paths are made absolute when the file is written."""

    name: str
    repository: str
    copies: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    stack_plan: str | None = None
    password_file: str = DEFAULT_PASSWORD_FILE
    policy: str = "tier3"
    schedule: str | None = None


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _location(url: str) -> str:
    if is_local(url) and not url.startswith("file://"):
        return os.path.abspath(url)
    return url


def render_initial(job: InitialJob) -> str:
    """The file's text (it passes ``config check`` when the stack plan it names is valid)."""
    names = ["primary", *(f"copy{i}" for i in range(1, len(job.copies) + 1))]
    urls = [job.repository, *job.copies]
    out = [
        "# stackvault configuration: repositories, policies and jobs.",
        "#   check it:          stackvault config check --config THIS-FILE",
        "#   what a job does:   stackvault config show JOB --config THIS-FILE",
        "",
        "# Where backups go, by name. The password is given by reference only: password_file",
        "# (its first line), password_env (an environment variable) or password_command (the",
        "# first line a command prints). On S3, storage_class (STANDARD_IA, GLACIER_IR ...)",
        "# sets the class of new packs.",
        "repositories:",
    ]
    for name, url in zip(names, urls, strict=True):
        out += [
            f"  {name}:",
            f"    url: {_q(_location(url))}",
            f"    password_file: {_q(job.password_file)}",
        ]
        if not is_local(url):
            out.append("    # storage_class: STANDARD_IA")
    out += [
        "",
        "# Policies: tier1 (rpo 5min, rto 30min), tier2 (rpo 2h, rto 2h) and tier3 (rpo 24h,",
        "# rto 8h) are built in. Change a tier key by key (policies: {tier3: {rto: 4h}}), or",
        "# define your own on top of one:",
        "# policies:",
        "#   nightly:",
        "#     extends: tier3",
        "#     rpo: 36h                   # a daily run meets it with time to spare",
        '#     schedule: "0 2 * * *"       # cron; left out: derived from the rpo',
        "#     window: 4h                 # a run taking longer counts as late",
        "#     retention:                 # per repository name, or default for all",
        "#       default: {keep-within-daily: 14d, keep-within-weekly: 2m}",
        "#     check: {every: 7d, read_data_subset: 1/28}",
        "",
        "# What to protect, under which policy, into which repositories.",
        "jobs:",
        f"  {job.name}:",
    ]
    if job.stack_plan:
        out.append(f"    stack_plan: {_q(os.path.abspath(job.stack_plan))}")
    out += _list("sources", list(job.sources))
    out += _list("paths", [os.path.abspath(p) for p in job.paths])
    out.append(f"    policy: {_q(job.policy)}")
    if job.schedule:
        out.append(f"    schedule: {_q(job.schedule)}")
    out.append('    repository: "primary"')
    out += _list("copies", names[1:])
    out += [
        "    # hooks:                     # commands: a string (sh -c) or a list of arguments",
        '    #   before: ["systemctl", "stop", "app-worker"]',
        '    #   after: ["systemctl", "start", "app-worker"]',
        "    #   on_failure: \"mail -s 'backup failed' root < /dev/null\"",
        "    # ping_url_env: HC_PING_URL   # a dead-man URL (healthchecks.io): /start, ok, /fail",
        "",
        "# Notifications through Apprise (Slack, Teams, Telegram, e-mail, ntfy, webhooks ...).",
        "# A URL holds credentials, so it is given by reference: url_env, url_file or",
        "# url_command. Events: failure, partial, recovered, rpo-breach, at-risk, check-failure,",
        "# drill-failure, lease-takeover, digest. Test them with: stackvault notify test",
        "# notify:",
        "#   targets:",
        "#     ops: {url_env: STACKVAULT_NOTIFY_URL, events: [failure, partial, recovered]}",
        "#   remind_every: 6h             # a job that keeps failing is recalled this often",
    ]
    return "\n".join(out) + "\n"


def _list(key: str, values: list[str]) -> list[str]:
    if not values:
        return []
    return [f"    {key}:", *(f"      - {_q(v)}" for v in values)]
