"""One module per command (cli layer); each has a ``register(subparsers)`` that adds its
parser(s). Importing them is cheap: every command imports the engine inside its body."""

from __future__ import annotations

from stackvault.cli.commands import (
    backup,
    browse,
    check,
    config,
    copy,
    drill,
    forget,
    init,
    keys,
    notify,
    repair,
    restore,
    run,
    serve,
    stack,
    status,
    verify,
    version,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.parser import Subparsers


def register_all(subparsers: Subparsers) -> None:
    """Add every command, in the order `stackvault -h` lists them."""
    for module in (
        backup,
        browse,
        check,
        config,
        copy,
        drill,
        forget,
        init,
        keys,
        notify,
        repair,
        restore,
        run,
        serve,
        stack,
        status,
        verify,
        version,
    ):
        module.register(subparsers)
