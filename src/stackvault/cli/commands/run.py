"""`stackvault run JOB` (cli layer): one cycle of a job of the configuration file, for cron
and systemd timers; the cycle itself is `stackvault.ops.run`."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_config_option, add_json_option

RUN_TRIGGERS = ("manual", "schedule", "catch-up", "retry")
"""`stackvault.records.run.TRIGGERS` (not imported here: start-up time)."""

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from contextlib import AbstractContextManager, ExitStack

    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers
    from stackvault.config import Config
    from stackvault.config.repository import RepositorySettings
    from stackvault.ops.run import RunReport
    from stackvault.records.run import RunStep
    from stackvault.repo.repository import Repository


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "run", run)
    p.add_argument("job", metavar="JOB", help="The job of the configuration file to run.")
    add_config_option(p)
    p.add_argument(
        "--trigger",
        choices=RUN_TRIGGERS,
        default="manual",
        help="Why the run starts, as its record says (default: manual; a timer passes "
        "schedule; serve passes catch-up and retry too).",
    )
    p.add_argument(
        "--run-id",
        metavar="HEX",
        help="The id its run record gets (32 hex digits; default: a new one). serve passes "
        "the id of the lease it claimed for the run.",
    )
    p.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="After the run (whatever its result), write the job's Prometheus metrics to PATH "
        "atomically, in node_exporter's textfile format (name it JOB.prom in the textfile "
        "directory; one file per job). Counters continue from the file it replaces.",
    )
    add_json_option(p)


def step_line(step: RunStep) -> str:
    """One line for a step: ``copy offsite: ok, snapshot 1a2b3c4d, 2.1 MiB added, 1 copied
    (3.2 s)``, then its error if any."""
    from stackvault.cli.render import human_bytes

    parts: list[str] = [step.result]
    if step.snapshot:
        parts.append(f"snapshot {step.snapshot[:8]}")
    if step.bytes_added is not None:
        parts.append(f"{human_bytes(step.bytes_added)} added")
    d = step.details or {}
    if step.name == "copy" and "copied" in d:
        parts.append(f"{d['copied']} copied, {d['already_there']} already there")
    elif step.name == "forget" and "removed" in d:
        parts.append(f"{d['removed']} removed, {d['kept']} kept")
    elif step.name == "prune" and "bytes_freed" in d:
        parts.append(f"{d['packs_deleted']} pack(s) deleted, {human_bytes(d['bytes_freed'])} freed")
    elif step.name == "check" and "packs_read" in d:
        read = f"read {d['packs_read']} of {d['packs']} packs"
        parts.append(f"{read} ({d['data']})" if d.get("data") else "structure only")
    where = f" {step.repository}" if step.repository else ""
    text = f"{step.name}{where}: {', '.join(parts)} ({step.duration_s:.1f} s)"
    return f"{text}: {step.error}" if step.error else text


def run(
    cli: Cli,
    *,
    job: str,
    config: str | None,
    trigger: str,
    metrics_file: str | None = None,
    run_id: str | None = None,
) -> int:
    """Run one cycle of a configured job: before hook, backup into the primary repository,
    copies, retention (forget and prune), the check when due, after or on_failure hook; a
    run record is written into every repository the run touched.

    Exit status: 0 every step succeeded, 3 partial (the backup was made but a copy,
    retention or check failed; the next run retries the copies), 1 failed (no snapshot),
    130 interrupted.

    With --metrics-file, the job's metrics are written after the run; a file that cannot be
    written is a warning and does not change the exit status. The configuration's ``notify``
    targets and the job's ping URL are told of the run (`stackvault.ops.notify`); a message
    that cannot be delivered is a warning and never changes the exit status either.
    """
    import os
    import re
    from contextlib import ExitStack

    from stackvault.config import load_config
    from stackvault.errors import UsageError
    from stackvault.ops.child import PARENT_ENV, watch_parent
    from stackvault.ops.run import JobRun
    from stackvault.records.run import TRIGGERS

    if run_id is not None and re.fullmatch(r"[0-9a-f]{32}", run_id) is None:
        raise UsageError(f"--run-id takes 32 lowercase hex digits, got {run_id!r}")
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():
        watch_parent(int(parent))  # started by serve: stop cleanly if serve dies
    loaded = load_config(config)
    for warning in loaded.warnings:
        cli.warn(warning)
    effective = loaded.job(job)

    def on_step(step: RunStep) -> None:
        line = step_line(step)
        if step.result in ("failed", "interrupted", "partial") and not cli.json:
            cli.warn(f"error: {line}" if step.result == "failed" else f"warning: {line}")
        else:
            cli.print(line)

    from stackvault.cli.commands.backup import make_progress
    from stackvault.ops.notify import Notifier, previous_runs, warning_log

    notifier = Notifier.from_config(loaded, warning_log(cli.warn))
    tell = bool(loaded.notify.targets)
    with ExitStack() as kept:
        # Kept open: the metrics and the notification's history are read after the run
        # without a second key derivation.
        opener = _KeptOpen(cli, kept) if metrics_file is not None or tell else None
        runner = JobRun(
            effective,
            opener or (lambda settings: _open(cli, settings)),
            trigger=next(t for t in TRIGGERS if t == trigger),
            run_id=run_id,
            notice=cli.notice,
            on_step=on_step,
            progress=lambda label: make_progress(cli, label),
        )
        notifier.run_started(effective)
        report = runner.run()
        try:
            history = previous_runs(effective, opener) if tell and opener is not None else None
            notifier.run_finished(effective, report.record, history)
        except KeyboardInterrupt:
            pass  # a late signal does not change what the run was
        _report(cli, report, notifier.counts().to_json() if tell else None)
        if metrics_file is not None and opener is not None:
            _write_metrics(cli, loaded, opener, report, metrics_file)
    return report.exit_code


class _KeptOpen:
    """An `Opener` that opens each repository once (`_open`) and keeps it open in ``kept``
    until the command ends, so the metrics read after the run cost no second key
    derivation. Each open hands the run a context that does not close the repository."""

    def __init__(self, cli: Cli, kept: ExitStack) -> None:
        self.cli = cli
        self.kept = kept
        self.repos: dict[str, Repository] = {}

    def __call__(self, settings: RepositorySettings) -> AbstractContextManager[Repository]:
        from contextlib import nullcontext

        repo = self.repos.get(settings.name)
        if repo is None:
            repo = self.kept.enter_context(_open(self.cli, settings))
            self.repos[settings.name] = repo
        return nullcontext(repo)


def _write_metrics(
    cli: Cli, loaded: Config, opener: _KeptOpen, report: RunReport, path: str
) -> None:
    """The job's figures read again from its repositories (the new record included), the
    counters carried over from ``path`` plus this run, written to ``path`` atomically."""
    from stackvault.ops.metrics import Metrics

    job = report.record.job
    metrics = Metrics(with_build_info=False)
    metrics.refresh(loaded, opener, jobs=[job])
    metrics.carry_over_from(path)
    metrics.observe_run(job, report)
    try:
        metrics.write_textfile(path)
    except OSError as exc:
        cli.warn(f"warning: the metrics file {path} could not be written: {exc.strerror or exc}")


def _open(cli: Cli, settings: RepositorySettings) -> AbstractContextManager[Repository]:
    """The repository of ``settings``, opened as every command opens one (`Cli.open_repo`),
    with its password from the configuration, no lock and no index (the run locks it per
    step)."""
    return cli.open_repo(
        store=cli.store(settings.location),
        password=settings.password,
        role=f"{settings.name!r}",
        hint=f"check repositories.{settings.name} in the configuration file",
        index=False,
    )


def _report(cli: Cli, report: RunReport, notifications: dict[str, int] | None = None) -> None:
    """The end of the report: hooks that failed, where the record went, the result; or the
    --json document (with ``notifications``: the notifier's counts, when it has targets)."""
    record = report.record
    if cli.json:
        doc = report.to_json()
        if notifications is not None:
            doc["notifications"] = notifications
        cli.emit_json(doc)
    else:
        for hook in report.hooks:
            if hook.ok:
                cli.print(f"hook {hook.kind}: ok ({hook.duration_s:.1f} s)")
            else:
                out = f" ({hook.output})" if hook.output else ""
                cli.warn(f"warning: hook {hook.kind}: {hook.error}{out}")
        if report.recorded_in:
            cli.print(f"run recorded in {', '.join(report.recorded_in)}")
    for name, why in report.not_recorded.items():
        cli.warn(f"warning: the run could not be recorded in {name}: {why}")
    if not cli.json:
        cli.print(f"run {record.id[:8]} of job {record.job}: {record.result}")
