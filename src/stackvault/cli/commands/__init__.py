"""One module per command (cli layer); importing this package registers them all."""

from stackvault.cli.commands import (  # noqa: F401
    backup,
    browse,
    check,
    forget,
    init,
    keys,
    restore,
)
