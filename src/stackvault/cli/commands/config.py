"""`stackvault config init|check|show` (cli layer): the configuration file of scheduled jobs.

The file (``--config FILE``, else ``$STACKVAULT_CONFIG``, else
``/etc/stackvault/stackvault.yaml``) declares repositories, policies and jobs; its checks and
the resolution of each job live in `stackvault.config`.
"""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_config_option, add_group, add_json_option

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Parser, Subparsers
    from stackvault.config import EffectiveJob


def register(subparsers: Subparsers) -> None:
    group = add_group(
        subparsers,
        "config",
        help="Write, check and show the configuration file of scheduled jobs.",
    )
    p = add_command(group, "init", config_init)
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="The file to write.")
    p.add_argument("--job", required=True, metavar="NAME", help="The job's name.")
    p.add_argument(
        "--path",
        dest="paths",
        action="append",
        default=[],
        metavar="P",
        help="A path to back up (repeatable).",
    )
    p.add_argument(
        "--source",
        dest="sources",
        action="append",
        default=[],
        metavar="URL",
        help="An application source, as backup --source (repeatable).",
    )
    p.add_argument("--stack-plan", metavar="FILE", help="The plan written by stack discover.")
    p.add_argument(
        "--repository", required=True, metavar="URL", help="The primary repository (primary)."
    )
    p.add_argument(
        "--copy",
        dest="copies",
        action="append",
        default=[],
        metavar="URL",
        help="A repository the job's snapshots are copied to (copy1, copy2 ...; repeatable).",
    )
    p.add_argument(
        "--password-file",
        dest="repo_password_file",
        metavar="F",
        default="/etc/stackvault/password",
        help="The file holding the repositories' password.",
    )
    p.add_argument("--policy", default="tier3", metavar="NAME", help="tier1, tier2 or tier3.")
    p.add_argument("--schedule", metavar="CRON", help="A cron schedule (default: from the RPO).")
    p.add_argument("--force", action="store_true", help="Replace an existing file.")
    add_json_option(p)

    p = add_command(group, "check", config_check)
    _config_option(p)
    add_json_option(p)

    p = add_command(group, "show", config_show)
    p.add_argument("job", metavar="JOB", help="The job's name.")
    _config_option(p)
    add_json_option(p)


def _config_option(p: Parser) -> None:
    add_config_option(p)


def config_init(
    cli: Cli,
    *,
    output: str,
    job: str,
    paths: list[str],
    sources: list[str],
    stack_plan: str | None,
    repository: str,
    copies: list[str],
    repo_password_file: str,
    policy: str,
    schedule: str | None,
    force: bool,
) -> None:
    """Write a commented starting configuration file with one job. The file is checked before
    it is written (as `config check` would); an existing file is kept unless --force."""
    import os

    from stackvault.config.load import config_from_yaml
    from stackvault.config.render import InitialJob, render_initial
    from stackvault.config.yamlfile import parse_yaml
    from stackvault.errors import ConfigError, UsageError

    if not (paths or sources or stack_plan):
        raise UsageError("the job protects nothing: give --path, --source or --stack-plan")
    if os.path.exists(output) and not force:
        raise UsageError(f"{output} exists; add --force to replace it")
    text = render_initial(
        InitialJob(
            name=job,
            repository=repository,
            copies=tuple(copies),
            paths=tuple(paths),
            sources=tuple(sources),
            stack_plan=stack_plan,
            password_file=os.path.abspath(repo_password_file),
            policy=policy,
            schedule=schedule,
        )
    )
    config = config_from_yaml(parse_yaml(text, output))  # nothing written if it is invalid
    try:
        with open(output, "w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror}") from None
    for warning in config.warnings:
        cli.warn(warning)
    if cli.json:
        cli.emit_json({"written": output, "jobs": list(config.jobs)})
        return
    cli.print(f"wrote {output}; check it with: stackvault config check --config {output}")


def config_check(cli: Cli, *, config: str | None) -> None:
    """Check the configuration file: every problem is listed at once, each with its line and
    key (exit 1). On success, one line per job."""
    from stackvault.config import load_config

    loaded = load_config(config)
    for warning in loaded.warnings:
        cli.warn(warning)
    if cli.json:
        cli.emit_json(
            {
                "config": loaded.path,
                "ok": True,
                "warnings": list(loaded.warnings),
                "jobs": [_summary_json(job) for job in loaded.jobs.values()],
            }
        )
        return
    for job in loaded.jobs.values():
        cli.print(_summary(job))
    cli.notice(f"{loaded.path}: {len(loaded.jobs)} job(s), no problems")


def _summary(job: EffectiveJob) -> str:
    copies = "".join(f" + {c.name}" for c in job.copies)
    return (
        f"{job.name}: policy {job.policy} (rpo {job.rpo.value}, rto {job.rto.value}), "
        f"schedule '{job.schedule.value.cron}', into {job.repository.name}{copies}"
    )


def _summary_json(job: EffectiveJob) -> dict[str, object]:
    return {
        "job": job.name,
        "policy": job.policy,
        "rpo": str(job.rpo.value),
        "rto": str(job.rto.value),
        "schedule": job.schedule.value.cron,
        "window": str(job.window.value),
        "repository": job.repository.name,
        "copies": [c.name for c in job.copies],
    }


def config_show(cli: Cli, *, job: str, config: str | None) -> None:
    """Show a job's effective settings and where each came from (a built-in tier, a policy,
    the job, or derived)."""
    from stackvault.config import load_config

    effective = load_config(config).job(job)
    if cli.json:
        cli.emit_json(effective.to_dict())
        return
    for line in _show_lines(effective):
        cli.print(line)


def _show_lines(job: EffectiveJob) -> list[str]:
    from stackvault.config.job import hook_text
    from stackvault.redact import redact

    rows: list[tuple[str, str, str]] = []
    if job.stack_plan:
        rows.append(("stack plan", job.stack_plan, ""))
    rows += [("source", redact(s), "") for s in job.sources]
    rows += [("path", p, "") for p in job.paths]
    for repo in job.repositories:
        role = "repository" if repo is job.repository else "copy"
        rows.append(
            (role, f"{repo.name}: {repo.shown} (password: {repo.password_ref.describe()})", "")
        )
    rows += [
        ("rpo", str(job.rpo.value), job.rpo.source),
        ("rto", str(job.rto.value), job.rto.source),
        ("schedule", job.schedule.value.cron, job.schedule.source),
        ("window", str(job.window.value), job.window.source),
    ]
    for name, item in job.retention.items():
        rules = ", ".join(f"{k} {v}" for k, v in item.value.rules.items())
        rows.append((f"retention {name}", rules, item.source))
    subset = job.check.read_data_subset
    rows += [
        ("check every", str(job.check.every.value), job.check.every.source),
        (
            "check reads",
            f"{subset.value.text} of the data" if subset.value else "no data (structure only)",
            subset.source,
        ),
    ]
    drill = job.drill
    if drill.every is not None:
        rows += [
            ("drill every", str(drill.every.value), drill.every.source),
            ("drill snapshot", drill.snapshot.value, drill.snapshot.source),
            ("drill window", str(drill.window.value), drill.window.source),
        ]
    for when in ("before", "after", "on_failure"):
        argv = getattr(job.hooks, when)
        if argv:
            rows.append((f"hook {when}", hook_text(argv), job.hooks.source))
    if job.ping is not None:
        rows.append(("ping url", job.ping.describe(), f"job {job.name}"))
    lines = [f"job {job.name} (policy {job.policy})"]
    for key, value, source in rows:
        lines.append(f"  {key:<18} {value}" + (f"  ({source})" if source else ""))
    return lines
