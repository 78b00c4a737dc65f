"""`stackvault serve` (cli layer): the daemon that runs every job of the configuration file
by its schedule; the loop is `stackvault.ops.daemon`, the decisions `stackvault.ops.scheduler`."""

from __future__ import annotations

import sys

from stackvault.cli.parser import add_command, add_config_option

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers
    from stackvault.config.repository import RepositorySettings
    from stackvault.ops.daemon import Daemon
    from stackvault.ops.eventlog import EventLog
    from stackvault.ops.metrics import Metrics, MetricsServer
    from stackvault.repo.repository import Repository

DEFAULT_JITTER_S = 30.0
DEFAULT_LEASE_S = 120
DEFAULT_CONCURRENCY = 2


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "serve", serve)
    add_config_option(p)
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="One line per event on stderr, as text or as one JSON object a line.",
    )
    p.add_argument(
        "--jitter",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_JITTER_S,
        help="Start each job up to this many seconds after its slot (a random offset per "
        "job, at most half its interval), to spread jobs.",
    )
    p.add_argument(
        "--concurrency",
        metavar="N",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="How many runs of different jobs may run at once, each in its own process "
        f"(default {DEFAULT_CONCURRENCY}; a job never runs twice at once).",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="Serve Prometheus metrics on http://HOST:PORT/metrics (and /healthz), e.g. "
        "127.0.0.1:9598; recomputed from the repositories at start, after each run and every "
        "5 minutes. Off by default.",
    )
    p.add_argument(
        "--lease",
        metavar="SECONDS",
        type=int,
        default=DEFAULT_LEASE_S,
        help="Several daemons may serve the same jobs: each run is claimed by a lease in the "
        "job's primary repository, renewed every sixth of this time; a daemon that stops "
        "renewing it for this long is taken for dead and another takes the job over "
        f"(default {DEFAULT_LEASE_S}).",
    )


def serve(
    cli: Cli,
    *,
    config: str | None,
    log_format: str,
    jitter: float,
    lease: int,
    concurrency: int,
    metrics_listen: str | None = None,
) -> int:
    """Run every job of the configuration file by its schedule until stopped.

    A job runs as ``stackvault run`` runs it (run records in its repositories), never twice
    at once; a slot missed while the daemon was down runs once (trigger catch-up); a failed
    run is retried with backoff while its RPO allows (trigger retry). The state comes from
    the repositories' run records, so a restart changes nothing. One log line per event on
    stderr. SIGHUP reloads the configuration (an invalid file is logged and the running one
    kept); SIGTERM or SIGINT interrupts the run in progress, which records itself, and exits 0.
    Up to --concurrency runs of different jobs run at once, each a ``stackvault run`` child
    process. Daemons on several hosts share the work through leases
    (`stackvault.ops.lease`): each scheduled run happens once across them.
    """
    import os

    from stackvault.cli.commands.run import _open
    from stackvault.config import load_config
    from stackvault.config.load import config_path
    from stackvault.errors import UsageError
    from stackvault.ops.child import ChildLauncher
    from stackvault.ops.daemon import Daemon, DaemonOptions
    from stackvault.ops.eventlog import EventLog
    from stackvault.ops.lease import JobLeases, LeaseOptions

    if not 0 <= jitter <= 86_400:
        raise UsageError(f"--jitter takes 0 to 86400 seconds, got {jitter:g}")
    if not 6 <= lease <= 86_400:
        raise UsageError(f"--lease takes 6 to 86400 seconds, got {lease}")
    if not 1 <= concurrency <= 64:
        raise UsageError(f"--concurrency takes 1 to 64, got {concurrency}")
    log = EventLog(log_format)
    path = os.path.abspath(config_path(config))
    children = _Children(path, cli.retry_lock)

    def opener(settings: RepositorySettings) -> AbstractContextManager[Repository]:
        return _open(cli, settings)

    metrics, server = _metrics(metrics_listen, log)
    gate = JobLeases(opener, log, options=LeaseOptions(lease_s=lease, heartbeat_s=lease / 6))
    daemon = Daemon(
        lambda: load_config(path),
        opener,
        log,
        options=DaemonOptions(jitter_s=jitter, concurrency=concurrency),
        launcher=ChildLauncher(children.run, log),
        drill_launcher=ChildLauncher(children.drill, log, report=False),
        gate=gate,
        metrics=metrics,
    )
    gate.on_takeover = lambda job, text: daemon.notify(job, "lease-takeover", text)
    children.daemon = daemon
    restore = daemon.install_signals()
    try:
        return daemon.serve()
    finally:
        restore()
        if server is not None:
            server.stop()


class _Children:
    """The command lines of the daemon's children, with the configuration file ``path`` and
    the daemon's own --retry-lock (seconds; 0: none)."""

    def __init__(self, path: str, retry_lock: float = 0.0) -> None:
        self.path = path
        self.retry_lock = retry_lock
        self.daemon: Daemon | None = None
        """Set once the daemon exists: a drill's snapshot choice is in its configuration."""

    def run(self, job: str, trigger: str, run_id: str) -> list[str]:
        """One cycle: ``stackvault run`` with this file, its --json report on stdout."""
        return [
            *(sys.executable, "-m", "stackvault", "run", job, "--config", self.path),
            *("--trigger", trigger, "--run-id", run_id, "--json"),
            *self._retry(),
        ]

    def _retry(self) -> tuple[str, ...]:
        return ("--retry-lock", f"{self.retry_lock:g}") if self.retry_lock > 0 else ()

    def drill(self, job: str, trigger: str, run_id: str) -> list[str]:
        """One restore drill of ``job``: ``stackvault drill`` with this file and the job's
        ``drill.snapshot``, its --json report on stdout."""
        config = self.daemon.config if self.daemon is not None else None
        settings = config.jobs.get(job) if config is not None else None
        snapshot = settings.drill.snapshot.value if settings is not None else "latest"
        return [
            *(sys.executable, "-m", "stackvault", "drill", job, "--config", self.path),
            *("--snapshot", snapshot, "--trigger", trigger, "--run-id", run_id, "--json"),
            *self._retry(),
        ]


def _metrics(listen: str | None, log: EventLog) -> tuple[Metrics | None, MetricsServer | None]:
    """The daemon's metrics and their HTTP server on ``listen`` (none without it);
    `UsageError` when it cannot listen there."""
    if listen is None:
        return None, None
    from stackvault.errors import UsageError
    from stackvault.ops.metrics import Metrics

    metrics = Metrics()
    try:
        server = metrics.serve_http(listen)
    except OSError as exc:
        raise UsageError(f"cannot listen on {listen} for metrics: {exc.strerror or exc}") from exc
    log("metrics-listening", url=server.url)
    return metrics, server
