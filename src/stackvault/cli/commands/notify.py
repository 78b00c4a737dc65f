"""`stackvault notify test` (cli layer): a test message to every notification target of the
configuration file; the sending is `stackvault.ops.notify`."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_config_option, add_group, add_json_option

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers

EXIT_NOT_DELIVERED = 1
"""Some target did not get the test message (or there is none)."""


def register(subparsers: Subparsers) -> None:
    group = add_group(
        subparsers,
        "notify",
        help="Notifications of the configuration file's notify: section.",
    )
    p = add_command(group, "test", notify_test)
    add_config_option(p)
    add_json_option(p)


def notify_test(cli: Cli, *, config: str | None) -> int:
    """Send a test message to every target of notify: in the configuration file, whatever
    the events it wants, and print one line per target: ok, or why it was not delivered
    (the URL is never shown).

    Exit status: 0 every target got it, 1 otherwise (or when there is no target).
    """
    from stackvault.config import load_config
    from stackvault.ops.notify import Notifier

    loaded = load_config(config, check_files=False)
    for warning in loaded.warnings:
        cli.warn(warning)
    notifier = Notifier.from_config(loaded)
    results = notifier.test()
    labels = {t.name: t.label for t in notifier.targets}
    services = {t.name: t.service for t in notifier.targets}
    if cli.json:
        cli.emit_json(
            {
                "config": loaded.path,
                "ok": bool(results) and all(r.ok for r in results),
                "targets": [
                    {**r.to_json(), "service": services.get(r.target, "")} for r in results
                ],
            }
        )
    else:
        for r in results:
            label = labels.get(r.target, r.target)
            if r.ok:
                cli.print(f"{label}: ok")
            else:
                cli.print(f"{label}: not delivered: {r.error}")
    if not results:
        cli.warn(f"error: {loaded.path} has no notify targets: add them under notify.targets")
        return EXIT_NOT_DELIVERED
    return 0 if all(r.ok for r in results) else EXIT_NOT_DELIVERED
