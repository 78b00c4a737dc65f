"""`stackvault serve` (cli layer): the daemon that runs every job of the configuration file
by its schedule; the loop is `stackvault.ops.daemon`, the decisions `stackvault.ops.scheduler`."""

from __future__ import annotations

from stackvault.cli.parser import add_command

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers

DEFAULT_JITTER_S = 30.0


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "serve", serve)
    p.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="The configuration file (default: $STACKVAULT_CONFIG, else "
        "/etc/stackvault/stackvault.yaml).",
    )
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


def serve(cli: Cli, *, config: str | None, log_format: str, jitter: float) -> int:
    """Run every job of the configuration file by its schedule until stopped.

    A job runs as ``stackvault run`` runs it (run records in its repositories), never twice
    at once; a slot missed while the daemon was down runs once (trigger catch-up); a failed
    run is retried with backoff while its RPO allows (trigger retry). The state comes from
    the repositories' run records, so a restart changes nothing. One log line per event on
    stderr. SIGHUP reloads the configuration (an invalid file is logged and the running one
    kept); SIGTERM or SIGINT interrupts the run in progress, which records itself, and exits 0.
    """
    from stackvault.cli.commands.run import _open
    from stackvault.config import load_config
    from stackvault.errors import UsageError
    from stackvault.ops.daemon import Daemon, DaemonOptions, EventLog

    if not 0 <= jitter <= 86_400:
        raise UsageError(f"--jitter takes 0 to 86400 seconds, got {jitter:g}")
    daemon = Daemon(
        lambda: load_config(config),
        lambda settings: _open(cli, settings),
        EventLog(log_format),
        options=DaemonOptions(jitter_s=jitter),
    )
    restore = daemon.install_signals()
    try:
        return daemon.serve()
    finally:
        restore()
